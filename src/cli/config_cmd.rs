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
