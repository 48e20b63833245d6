//! `type = "postgres_physical"`: a whole cluster, as PostgreSQL's own tools
//! copy it (`pg_basebackup` for base backups, `archive_command = 'drctl wal
//! push %p'` for the WAL), for point-in-time recovery.

use super::jobs::{one_url_source, KindSpec, Problems, Storage};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How the WAL reaches the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WalMode {
    /// The server's `archive_command = 'drctl wal push %p'` stores each
    /// finished segment (set `archive_timeout` to bound the RPO of an idle
    /// database).
    #[default]
    ArchiveCommand,
    /// The daemon runs `pg_receivewal` on a replication slot
    /// (`drctl_<job>`), storing each finished segment and, every
    /// `wal_flush`, the unfinished one.
    Stream,
}

/// `type = "postgres_physical"`: base backups of a cluster plus its
/// archived WAL, restorable to any moment in between.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicalJob {
    /// Repository, compression, encryption, retention and RPO (the RPO is
    /// measured from the newest WAL stored, not the newest base backup).
    #[serde(flatten)]
    pub storage: Storage,
    /// The server, as a user with the REPLICATION attribute: `url`,
    /// `url_env` or `url_file` (the database part is ignored).
    #[serde(flatten)]
    pub connection: super::UrlSource,
    /// How the WAL is archived: `archive_command` (default) or `stream`.
    #[serde(default)]
    pub wal: WalMode,
    /// With `wal = "stream"`: how often the unfinished segment is stored.
    #[serde(default = "default_wal_flush", with = "humantime_serde")]
    pub wal_flush: Duration,
    /// With `wal = "stream"`: the WAL the replication slot may hold back
    /// on the server (while the receiver is down or behind) before
    /// `wal_slot_retained` is raised (default 1GiB).
    #[serde(default = "default_slot_max_retained")]
    pub wal_slot_max_retained: bytesize::ByteSize,
    /// Directory holding `pg_basebackup`, `pg_ctl`, `postgres` (default:
    /// the newest /usr/lib/postgresql/*/bin, else `$PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bindir: Option<PathBuf>,
    /// `fast` (default: the backup starts at once) or `spread` (the
    /// checkpoint is spread over `checkpoint_completion_target`).
    #[serde(default = "default_checkpoint")]
    pub checkpoint: String,
    /// zstd worker threads (default: half the cores, 1 to 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_threads: Option<u32>,
    /// The daemon writes one row a minute into `drctl_marker` (created if
    /// missing) in `marker_database`: a point-in-time drill proves that
    /// its restore stopped exactly at its target.
    #[serde(default)]
    pub marker: bool,
    /// The database of the marker table (default `postgres`).
    #[serde(default = "default_marker_database")]
    pub marker_database: String,
    /// How often a marker row is written (default 1m).
    #[serde(default = "default_marker_interval", with = "humantime_serde")]
    pub marker_interval: Duration,
}

fn default_marker_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_marker_database() -> String {
    "postgres".into()
}

fn default_slot_max_retained() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(1)
}

fn default_wal_flush() -> Duration {
    Duration::from_secs(30)
}

fn default_checkpoint() -> String {
    "fast".into()
}

impl KindSpec for PhysicalJob {
    fn keys() -> Vec<&'static str> {
        let mut k = super::introspect::fields::<Storage>();
        k.extend(super::introspect::fields::<super::UrlSource>());
        k.extend([
            "wal",
            "wal_flush",
            "wal_slot_max_retained",
            "pg_bindir",
            "checkpoint",
            "compression_threads",
            "marker",
            "marker_database",
            "marker_interval",
        ]);
        k
    }

    fn storage(&self) -> Option<&Storage> {
        Some(&self.storage)
    }

    fn validate(&self, p: &mut Problems) {
        self.storage.validate(p);
        let c = &self.connection;
        if let Err(m) = one_url_source(&c.url, &c.url_env, &c.url_file) {
            p.push(("url".into(), m));
        }
        if self.wal_flush < Duration::from_secs(1) {
            p.push(("wal_flush".into(), "expected at least 1s".into()));
        }
        if !matches!(self.checkpoint.as_str(), "fast" | "spread") {
            p.push((
                "checkpoint".into(),
                "expected \"fast\" or \"spread\"".into(),
            ));
        }
        if self.marker_interval < Duration::from_secs(1) {
            p.push(("marker_interval".into(), "expected at least 1s".into()));
        }
        if self.compression_threads == Some(0) {
            p.push(("compression_threads".into(), "expected at least 1".into()));
        }
    }
}
