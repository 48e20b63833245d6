//! The manifest: the versioned JSON document that makes a backup exist.
//! It is written last; data without one is not a backup.

use crate::ids::{BackupId, JobName};
use crate::values::Compression;
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
    /// The server's `pg_control_system().system_identifier` (unique per
    /// cluster, shared by its physical replicas): with `database`, which
    /// source the backup is of (when the user may read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
}

impl PostgresSource {
    /// `(system identifier, database)`, when the system identifier is known.
    pub fn identity(&self) -> Option<(&str, &str)> {
        Some((self.system_identifier.as_deref()?, self.database.as_str()))
    }
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
        m.check_artifact_names()
            .map_err(|message| crate::Error::Integrity {
                artifact: key.into(),
                message,
            })?;
        Ok(m)
    }

    /// Every artifact name must be exactly the one drctl writes for its
    /// content, compression and encryption: a manifest is read from a store
    /// others may write to, and its names become object keys and paths, so
    /// `../../etc/x` (or any name not of our making) is refused outright.
    fn check_artifact_names(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for a in &self.artifacts {
            let Some(base) = artifact_base(&a.content) else {
                return Err(format!("unknown artifact content {:?}", a.content));
            };
            let expected = artifact_name(base, a.compression, !a.encryption_recipients.is_empty());
            if a.name != expected {
                return Err(format!(
                    "artifact name {:?} is not the name drctl writes for {} (expected {expected:?})",
                    a.name, a.content
                ));
            }
            if !seen.insert(a.content.as_str()) {
                return Err(format!("artifact {} is listed twice", a.content));
            }
        }
        Ok(())
    }

    pub fn stored_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_bytes).sum()
    }
    pub fn raw_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.raw_bytes).sum()
    }
    /// Which source the backup is of (see [`PostgresSource::identity`]).
    pub fn source_identity(&self) -> Option<(&str, &str)> {
        self.source.as_ref()?.identity()
    }
    pub fn artifact(&self, content: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.content == content)
    }
}

/// The base name of the artifact holding `content`, or `None` for a content
/// drctl does not write.
pub fn artifact_base(content: &str) -> Option<&'static str> {
    match content {
        "pg_dump_custom" => Some("database.dump"),
        "pg_globals_sql" => Some("globals.sql"),
        "tar" => Some("files.tar"),
        _ => None,
    }
}

/// `database.dump.zst.age`: base, then compression suffix, then `.age`.
pub fn artifact_name(base: &str, compression: Compression, encrypted: bool) -> String {
    format!(
        "{base}{}{}",
        compression.suffix(),
        if encrypted { ".age" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, content: &str) -> Vec<u8> {
        let m = Manifest {
            format: FORMAT,
            id: crate::ids::BackupId::parse("20261122T020000.123Z-h-abcd").unwrap(),
            job: JobName::parse("appdb").unwrap(),
            kind: "postgres".into(),
            host: "h".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            drctl_version: "x".into(),
            source: None,
            artifacts: vec![Artifact {
                name: name.into(),
                content: content.into(),
                raw_bytes: 1,
                stored_bytes: 1,
                sha256: "00".into(),
                compression: Compression::Zstd,
                encryption_recipients: vec![],
            }],
            tables: vec![],
        };
        m.to_json()
    }

    #[test]
    fn artifact_names_are_the_ones_drctl_writes() {
        assert!(Manifest::parse(&sample("database.dump.zst", "pg_dump_custom"), "k").is_ok());
        for (name, content) in [
            ("../../../etc/passwd", "pg_globals_sql"),
            ("/etc/passwd", "pg_globals_sql"),
            ("globals.sql", "pg_globals_sql"),
            ("database.dump.zst", "pg_globals_sql"),
            ("x/../globals.sql.zst", "pg_globals_sql"),
            ("globals.sql.zst", "shell_script"),
        ] {
            let e = Manifest::parse(&sample(name, content), "k").unwrap_err();
            assert_eq!(e.exit_code(), 3, "{name}: {e}");
        }
    }
}
