//! `drctl config check`

use drctl::config::{render_masked, LoadedConfig};
use std::path::Path;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it resolved, secrets masked
    Check,
}

pub fn exec(path: Option<&Path>, c: ConfigCommand) -> anyhow::Result<()> {
    match c {
        ConfigCommand::Check => {
            let cfg = LoadedConfig::load(path)?;
            let refs = cfg.unresolved_refs();
            if !refs.is_empty() {
                if other_user_than_service(&cfg) {
                    // The service's environment (EnvironmentFile=,
                    // credentials) is not ours: say so, do not fail.
                    for e in &refs {
                        eprintln!("drctl: warning: {e} (checked as another user than the service's: its environment may hold it)");
                    }
                } else {
                    for e in refs.iter().skip(1) {
                        eprintln!("drctl: error: {e}");
                    }
                    return Err(refs.into_iter().next().map_or_else(
                        || anyhow::anyhow!("unresolved references"),
                        anyhow::Error::from,
                    ));
                }
            }
            println!("{}", render_masked(&cfg).trim_end());
            eprintln!(
                "config ok: {} repositories, {} jobs",
                cfg.config.repositories.len(),
                cfg.config.jobs.len()
            );
            Ok(())
        }
    }
}

/// Whether we run as another user than the one owning the state directory
/// (the service's user, once it has run): then the service's environment
/// and credentials are not visible here.
fn other_user_than_service(cfg: &LoadedConfig) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&cfg.config.state_dir)
        .is_ok_and(|m| m.uid() != nix::unistd::geteuid().as_raw())
}
