//! drctl: backups, maintenance and disaster-recovery drills for PostgreSQL hosts.
//!
//! The library holds the whole engine; `src/main.rs` and `src/cli/` only parse
//! arguments, call into it and render results. Nothing in here writes to the
//! terminal except through the [`base::progress::Progress`] counters the CLI polls.

// The folders are the layers, bottom first (ARCHITECTURE.md, "Layers";
// `tests/layers.rs` keeps every import pointing down).
#[macro_use]
pub mod base;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod services;

pub use base::error::{Error, Result};

/// The commit this binary was built from (`build.rs`), "unknown" outside git.
pub const COMMIT: &str = env!("DRCTL_COMMIT");

/// `drctl --version`: the package version and the commit.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DRCTL_COMMIT"), ")");

/// The version recorded in every manifest, so a restore can say which drctl wrote a backup.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
