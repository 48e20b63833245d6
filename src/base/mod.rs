//! The bottom layer: values and rules every other layer uses and that use
//! nothing above them. Errors and exit codes, secrets and their redaction,
//! host identity, backup ids, the manifest format, retention rules, cron
//! schedules, the byte streams (compression, encryption, hashing), and the
//! values parsed from the config. Nothing here reads the config, the state
//! database or a repository.

#[macro_use]
mod names;

pub mod child_env;
pub mod custom_archive;
pub mod error;
pub mod faults;
pub mod host;
pub mod ids;
pub mod manifest;
pub mod private_fs;
pub mod progress;
pub mod rdb;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod stream;
pub mod tar_entry;
pub mod values;
pub mod wal;
