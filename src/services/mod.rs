//! Storage and services: what the engine reads and writes through. The
//! local state database, host locks and cluster coordination, the backup
//! repositories (local directory, S3, in-memory for tests), the PostgreSQL
//! client tools and connections, encryption keys, the durable alert outbox
//! and its channels, and what a check run reports. Uses `base` and
//! `config`; knows no job kind's engine.

pub mod alerts;
pub mod checks;
pub mod coordination;
pub mod docker;
pub mod keys;
pub mod lock;
pub mod pg;
pub mod repository;
pub mod state;
