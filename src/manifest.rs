//! The manifest: the versioned JSON document that makes a backup exist.
//! It is written last; data without one is not a backup.

use crate::config::Compression;
use crate::ids::{BackupId, JobName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; readers refuse formats they do not know.
pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: BackupId,
    pub job: JobName,
    /// Job kind: `postgres` or `files`.
    pub kind: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub drctl_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PostgresSource>,
    pub artifacts: Vec<Artifact>,
    /// Row counts taken in the dump's snapshot, for drills to prove completeness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostgresSource {
    pub engine: String,
    pub server_version: String,
    pub database: String,
    /// Owner, encoding and locale of the source database, so a restore
    /// recreates it the same way.
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub dump_tool: String,
    pub dump_tool_version: String,
    pub snapshot: String,
    /// `full` or `no-role-passwords` (when the user may not read pg_authid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// File name inside the backup, e.g. `database.dump.zst`.
    pub name: String,
    /// What the artifact holds: `pg_dump_custom`, `pg_globals_sql`, `tar`.
    pub content: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    pub compression: Compression,
    /// age recipients' fingerprints when encrypted (empty: not encrypted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_recipients: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    /// `None` when the table was above `count_rows_max_table_size`.
    pub rows: Option<i64>,
    pub bytes: i64,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn parse(bytes: &[u8], key: &str) -> crate::Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| crate::Error::Integrity {
            artifact: key.into(),
            message: format!("unreadable manifest: {e}"),
        })?;
        if m.format != FORMAT {
            return Err(crate::Error::Integrity {
                artifact: key.into(),
                message: format!(
                    "manifest format {} is not supported by drctl {} (expected {FORMAT})",
                    m.format,
                    crate::VERSION
                ),
            });
        }
        Ok(m)
    }

    pub fn stored_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_bytes).sum()
    }
    pub fn raw_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.raw_bytes).sum()
    }
    pub fn artifact(&self, content: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.content == content)
    }
}
