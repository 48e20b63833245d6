//! drctl: backups, maintenance and disaster-recovery drills for PostgreSQL hosts.
//!
//! The library holds the whole engine; `src/main.rs` and `src/cli/` only parse
//! arguments, call into it and render results. Nothing in here writes to the
//! terminal except through the [`progress::Progress`] counters the CLI polls.

#[macro_use]
mod names;

pub mod alerts;
pub mod backup;
pub mod check_run;
pub mod checks;
pub mod child_env;
pub mod config;
pub mod coordination;
pub mod daemon;
pub mod drill;
pub mod error;
pub mod faults;
pub mod host;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod pg;
pub mod progress;
pub mod prune;
pub mod report;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod rpo;
pub mod runner;
pub mod schedule;
pub mod secret;
pub mod state;
pub mod status;
pub mod stream;
pub mod tar_entry;
pub mod values;
pub mod verify;

pub use error::{Error, Result};

/// The version recorded in every manifest, so a restore can say which drctl wrote a backup.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
