//! The manifest: the versioned JSON document that makes a backup exist.
//! It is written last; data without one is not a backup.

use crate::base::ids::{BackupId, JobName, Label};
use crate::base::values::Compression;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; readers refuse formats they do not know.
pub const FORMAT: u32 = 1;
/// The manifest's object name inside the backup's directory.
pub const FILE_NAME: &str = "manifest.json";

/// What a committed backup holds and how to check it; the README shows
/// how to read it without drctl.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The manifest format ([`FORMAT`]).
    pub format: u32,
    /// The backup's id (its directory name).
    pub id: BackupId,
    /// The job that made it.
    pub job: JobName,
    /// Job kind: `postgres` or `files`.
    pub kind: String,
    /// The host that made it.
    pub host: String,
    /// When the run started (the dump's data is at most this old).
    pub started_at: DateTime<Utc>,
    /// When the artifacts were all stored.
    pub finished_at: DateTime<Utc>,
    /// The drctl that wrote it.
    pub drctl_version: String,
    /// What was dumped, for a database backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PostgresSource>,
    /// What was snapshotted, for a Redis backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSource>,
    /// The cluster and WAL range, for a physical (`pg_basebackup`) backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalSource>,
    /// The stored files, each with sizes and a checksum.
    pub artifacts: Vec<Artifact>,
    /// Row counts taken in the dump's snapshot, for drills to prove completeness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableCount>,
    /// The operator's label (`drctl run --label`), to restore it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// Pinned (`drctl run --keep-for`): retention keeps it until then,
    /// outside the policy's slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_until: Option<DateTime<Utc>>,
}

/// An operator's mark on one backup: a label to find it by and a pin that
/// keeps it from retention until a time.
#[derive(Debug, Clone, Default)]
pub struct Mark {
    /// `--label`.
    pub label: Option<crate::base::ids::Label>,
    /// `--keep-for`: pinned until the backup's start plus this.
    pub keep_for: Option<std::time::Duration>,
}

impl Mark {
    /// The longest pin: beyond it `--keep-for` is a typo.
    pub const MAX_KEEP_FOR: std::time::Duration =
        std::time::Duration::from_secs(100 * 366 * 24 * 3600);

    /// A mark, or what is wrong with it (a pin of more than 100 years).
    pub fn new(
        label: Option<crate::base::ids::Label>,
        keep_for: Option<std::time::Duration>,
    ) -> crate::Result<Self> {
        if keep_for.is_some_and(|d| d.is_zero() || d > Self::MAX_KEEP_FOR) {
            return Err(crate::Error::Usage(
                "--keep-for: expected a duration between 1s and 100 years (e.g. 30d)".into(),
            ));
        }
        Ok(Mark { label, keep_for })
    }

    /// Whether the run marks its backup at all.
    pub fn is_set(&self) -> bool {
        self.label.is_some() || self.keep_for.is_some()
    }

    /// Until when a backup started at `started` is pinned.
    pub fn keep_until(&self, started: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let d = chrono::Duration::from_std(self.keep_for?).ok()?;
        started.checked_add_signed(d)
    }
}

/// The database a postgres backup is of, as it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostgresSource {
    /// Always `postgresql`.
    pub engine: String,
    /// The server's `server_version`.
    pub server_version: String,
    /// The database's name.
    pub database: String,
    /// Owner, encoding and locale of the source database, so a restore
    /// recreates it the same way.
    pub owner: String,
    /// Its encoding.
    pub encoding: String,
    /// Its LC_COLLATE.
    pub collate: String,
    /// Its LC_CTYPE.
    pub ctype: String,
    /// The tool that dumped it (`pg_dump`).
    pub dump_tool: String,
    /// That tool's `--version` line.
    pub dump_tool_version: String,
    /// The exported snapshot the dump and the row counts were read in.
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

/// The Redis server a `redis` backup is of, as it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RedisSource {
    /// Always `redis`.
    pub engine: String,
    /// The server's `redis_version`.
    pub server_version: String,
    /// The RDB format version of the snapshot (`REDIS0011`: 11).
    pub rdb_version: u32,
    /// How the snapshot was taken (`replication-sync`).
    pub method: String,
    /// Keys per database (`db0` ...) from `INFO keyspace` right after the
    /// snapshot was taken: a drill compares the restored server with it.
    pub keyspace: std::collections::BTreeMap<String, u64>,
}

/// The cluster a physical base backup is of, and the WAL it needs: a
/// restore replays from `start_lsn` and is consistent once past `stop_lsn`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhysicalSource {
    /// Always `postgresql`.
    pub engine: String,
    /// The server's `server_version`.
    pub server_version: String,
    /// `server_version_num`: a base backup restores only into the same
    /// major version.
    pub server_version_num: i32,
    /// `pg_control_system().system_identifier`: WAL of another cluster
    /// never replays onto it.
    pub system_identifier: String,
    /// The timeline the backup was taken on.
    pub timeline: u32,
    /// Where replay starts (`START WAL LOCATION` of its `backup_label`).
    pub start_lsn: crate::base::wal::Lsn,
    /// Where the backup becomes consistent.
    pub stop_lsn: crate::base::wal::Lsn,
    /// The cluster's `wal_segment_size`.
    pub wal_segment_bytes: u64,
    /// `pg_basebackup --version`.
    pub tool_version: String,
    /// `fetch`: the WAL from start to stop is inside the tar too, so the
    /// backup restores on its own even without the archive.
    pub wal_method: String,
    /// Tablespaces outside the data directory, each stored as its own tar
    /// (pg_basebackup's `OID.tar`), with the cluster's `backup_manifest`
    /// beside them; none for most clusters, whose `base.tar` holds all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<PhysicalTablespace>,
    /// The server's clock just before the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_started_at: Option<DateTime<Utc>>,
    /// The server's clock once pg_basebackup had ended: the backup's stop
    /// record was written before it, so a recovery from this backup can
    /// stop at any time at or after it. The backing-up host's clock
    /// (`finished_at`) may be off by any amount; this one is the clock
    /// the commit timestamps recovery compares with are taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_stopped_at: Option<DateTime<Utc>>,
}

impl PhysicalSource {
    /// The earliest time a recovery from this backup can stop at: the
    /// server's clock after the backup, else (manifests written before
    /// drctl recorded it) the backing-up host's `finished_at`.
    pub fn consistent_at(&self, finished_at: DateTime<Utc>) -> DateTime<Utc> {
        self.server_stopped_at.unwrap_or(finished_at)
    }
}

/// A tablespace of a base backup: where it lived and which artifact holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhysicalTablespace {
    /// Its OID: the name of its link under `pg_tblspc/` and of its tar.
    pub oid: u32,
    /// `pg_tablespace.spcname`.
    pub name: String,
    /// Its directory on the backed-up host (`pg_tablespace_location`).
    pub location: String,
    /// The artifact holding its files (`OID.tar...`).
    pub artifact: String,
}

/// One stored file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// File name inside the backup, e.g. `database.dump.zst`.
    pub name: String,
    /// What the artifact holds: `pg_dump_custom`, `pg_globals_sql`, `tar`.
    pub content: String,
    /// Bytes before compression and encryption.
    pub raw_bytes: u64,
    /// Bytes in the repository.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// How it was compressed.
    pub compression: Compression,
    /// age recipients' fingerprints when encrypted (empty: not encrypted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_recipients: Vec<String>,
}

/// A table's size and row count when the dump was taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableCount {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `None` when the table was above `count_rows_max_table_size`.
    pub rows: Option<i64>,
    /// Its size on disk (`pg_table_size`).
    pub bytes: i64,
}

impl Manifest {
    /// The manifest as stored: pretty JSON and a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Read a manifest stored at `key`: its format must be known and its
    /// artifact names drctl's own, or it is an integrity error.
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
        let suffixes =
            |a: &Artifact| artifact_name("", a.compression, !a.encryption_recipients.is_empty());
        for a in &self.artifacts {
            if a.content == TABLESPACE_TAR {
                // One per tablespace, named by its OID: `16384.tar.zst`.
                let oid = a
                    .name
                    .strip_suffix(&suffixes(a))
                    .and_then(|n| n.strip_suffix(".tar"))
                    .filter(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
                if oid.is_none() || !seen.insert(a.name.as_str()) {
                    return Err(format!(
                        "artifact name {:?} is not a tablespace's OID.tar drctl writes, or is listed twice",
                        a.name
                    ));
                }
                continue;
            }
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
        for t in self.physical.iter().flat_map(|p| &p.tablespaces) {
            if !self
                .artifacts
                .iter()
                .any(|a| a.content == TABLESPACE_TAR && a.name == t.artifact)
            {
                return Err(format!(
                    "tablespace {} names {:?}, which is not one of the backup's tablespace tars",
                    t.name, t.artifact
                ));
            }
        }
        Ok(())
    }

    /// Bytes of all artifacts in the repository.
    pub fn stored_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_bytes).sum()
    }
    /// Bytes of all artifacts before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.raw_bytes).sum()
    }
    /// Which source the backup is of (see [`PostgresSource::identity`]).
    pub fn source_identity(&self) -> Option<(&str, &str)> {
        self.source.as_ref()?.identity()
    }
    /// The artifact holding `content`.
    pub fn artifact(&self, content: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.content == content)
    }

    /// Each tablespace of a base backup with the artifact holding it (a
    /// parsed manifest has one for each: [`Manifest::parse`] checks).
    pub fn tablespace_tars(&self) -> impl Iterator<Item = (&PhysicalTablespace, &Artifact)> {
        self.physical
            .iter()
            .flat_map(|p| &p.tablespaces)
            .filter_map(|t| {
                let a = self.artifacts.iter().find(|a| a.name == t.artifact)?;
                Some((t, a))
            })
    }
}

/// The content of a tablespace's tar in a base backup: the one content
/// that may appear more than once, each named `OID.tar...`.
pub const TABLESPACE_TAR: &str = "pg_basebackup_tablespace_tar";

/// The base name of the artifact holding `content`, or `None` for a content
/// drctl does not write (or, for [`TABLESPACE_TAR`], names per tablespace).
pub fn artifact_base(content: &str) -> Option<&'static str> {
    match content {
        "pg_backup_manifest" => Some("backup_manifest"),
        "pg_dump_custom" => Some("database.dump"),
        "pg_globals_sql" => Some("globals.sql"),
        "tar" => Some("files.tar"),
        "redis_rdb" => Some("dump.rdb"),
        "pg_basebackup_tar" => Some("base.tar"),
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
            id: crate::base::ids::BackupId::parse("20261122T020000.123Z-h-abcd").unwrap(),
            job: JobName::parse("appdb").unwrap(),
            kind: "postgres".into(),
            host: "h".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            drctl_version: "x".into(),
            source: None,
            redis: None,
            physical: None,
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
            label: None,
            keep_until: None,
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

    #[test]
    fn tablespace_tars_are_named_by_their_oid_and_listed_once() {
        assert!(Manifest::parse(&sample("16384.tar.zst", TABLESPACE_TAR), "k").is_ok());
        assert!(Manifest::parse(&sample("backup_manifest.zst", "pg_backup_manifest"), "k").is_ok());
        for name in [
            "../16384.tar.zst",
            "16384.tar",
            ".tar.zst",
            "1a.tar.zst",
            "16384.zst",
        ] {
            let e = Manifest::parse(&sample(name, TABLESPACE_TAR), "k").unwrap_err();
            assert_eq!(e.exit_code(), 3, "{name}: {e}");
        }
        let mut m: Manifest =
            serde_json::from_slice(&sample("16384.tar.zst", TABLESPACE_TAR)).unwrap();
        let mut again = m.artifacts[0].clone();
        m.artifacts.push(again.clone());
        assert!(Manifest::parse(&m.to_json(), "k").is_err(), "listed twice");
        again.name = "16385.tar.zst".into();
        m.artifacts[1] = again;
        assert!(Manifest::parse(&m.to_json(), "k").is_ok());
        // A tablespace must name one of them.
        m.physical = Some(PhysicalSource {
            engine: "postgresql".into(),
            server_version: "16".into(),
            server_version_num: 160000,
            system_identifier: "1".into(),
            timeline: 1,
            start_lsn: crate::base::wal::Lsn(0),
            stop_lsn: crate::base::wal::Lsn(0),
            wal_segment_bytes: 16 << 20,
            tool_version: "x".into(),
            wal_method: "fetch".into(),
            tablespaces: vec![PhysicalTablespace {
                oid: 16386,
                name: "t".into(),
                location: "/t".into(),
                artifact: "16386.tar.zst".into(),
            }],
            server_started_at: None,
            server_stopped_at: None,
        });
        let e = Manifest::parse(&m.to_json(), "k").unwrap_err();
        assert!(
            e.to_string()
                .contains("not one of the backup's tablespace tars"),
            "{e}"
        );
    }
}
