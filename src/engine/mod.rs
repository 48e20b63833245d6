//! The engine: what drctl does. One file per job kind (`jobs/`), the
//! backup commit protocol, restores, verification, retention pruning, RPO
//! compliance, restore drills and their reports, status, and `runner`, the
//! one way a job is run (record, retries, alerts, metrics) for the CLI, the
//! daemon and drills alike. Uses every layer below; the daemon and the CLI
//! sit above it.

pub mod backup;
pub mod check_run;
pub mod copy;
pub mod doctor;
pub mod drill;
pub mod fleet;
pub mod jobs;
pub mod prune;
pub mod report;
pub mod restore;
pub mod rpo;
pub mod runner;
pub mod status;
pub mod verify;
pub mod wal;
