//! `drctl config check`

use drctl::config::{render_masked, LoadedConfig};
use std::path::Path;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it resolved, secrets masked
    Check {
        /// Also connect to each postgres job's server and check that the
        /// client tools drctl would run are at least as new as the server
        #[arg(long)]
        connect: bool,
        /// Check the embedded defaults when no config file exists (without
        /// it, a missing /etc/drctl/drctl.toml is exit 2: a fresh install
        /// that was never configured backs nothing up)
        #[arg(long)]
        allow_defaults: bool,
    },
}

pub async fn exec(path: Option<&Path>, c: ConfigCommand) -> anyhow::Result<()> {
    match c {
        ConfigCommand::Check {
            connect,
            allow_defaults,
        } => {
            let cfg = LoadedConfig::load(path)?;
            if cfg.files.is_empty() && !allow_defaults {
                return Err(drctl::Error::Config {
                    file: drctl::config::DEFAULT_CONFIG_PATH.into(),
                    key: "-".into(),
                    message: "no config file: expected /etc/drctl/drctl.toml, --config FILE or \
                              DRCTL_CONFIG (--allow-defaults checks the embedded defaults)"
                        .into(),
                }
                .into());
            }
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
            for (key, message) in cfg.warnings() {
                eprintln!("drctl: warning: {key}: {message}");
            }
            eprintln!(
                "config ok: {} repositories, {} jobs",
                cfg.config.repositories.len(),
                cfg.config.jobs.len()
            );
            if connect {
                preflight_all(&cfg).await?;
            }
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

/// `--connect`: each postgres job's server against its client tools, one
/// line per job; every job is checked, then the first failure is the exit
/// status.
async fn preflight_all(cfg: &LoadedConfig) -> anyhow::Result<()> {
    let mut first = None;
    for (name, job) in &cfg.config.jobs {
        let drctl::config::Kind::Postgres(pg) = &job.kind else {
            continue;
        };
        match drctl::services::pg::preflight(pg).await {
            Ok(p) => {
                let tools: Vec<String> = p.tools.iter().map(|(t, v)| format!("{t} {v}")).collect();
                eprintln!(
                    "jobs.{name}: PostgreSQL {}, {}: ok",
                    p.server_major,
                    tools.join(", ")
                );
            }
            Err(e) => {
                eprintln!(
                    "jobs.{name}: {}",
                    drctl::base::secret::redact(&e.to_string())
                );
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
