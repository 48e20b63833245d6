//! `[jobs.NAME]`: one variant per job kind, tagged by `type`.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobConfig {
    Postgres(PostgresJob),
    Files(FilesJob),
    Verify(VerifyJob),
    Vacuum(super::maintenance::VacuumJob),
    Reindex(super::maintenance::ReindexJob),
    PruneFiles(super::maintenance::PruneFilesJob),
    PruneImages(super::maintenance::PruneImagesJob),
    Disk(super::maintenance::DiskJob),
    CertExpiry(super::maintenance::CertExpiryJob),
    Health(super::maintenance::HealthJob),
}

/// Declares a job kind's config struct with the keys every kind shares
/// (schedule, time zone, jitter, retries, catch-up, lock, alert routes).
/// serde's `flatten` cannot be combined with `deny_unknown_fields`, so the
/// shared keys are spliced in here rather than nested.
macro_rules! job_kind {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub schedule: Option<String>,
            /// IANA time zone the schedule is read in (default UTC).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub timezone: Option<String>,
            /// Random delay up to this long before each scheduled run (spreads a fleet).
            #[serde(
                default,
                with = "humantime_serde",
                skip_serializing_if = "Option::is_none"
            )]
            pub jitter: Option<Duration>,
            /// Further attempts after a failed run, with exponential backoff.
            #[serde(default)]
            pub retries: u32,
            /// First retry delay; doubles per attempt, at most 1h.
            #[serde(default = "default_retry_delay", with = "humantime_serde")]
            pub retry_delay: Duration,
            /// Run once at daemon start when the last success predates the previous
            /// scheduled time (default: true for backups).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub catch_up: Option<bool>,
            /// `host` (default) or `cluster`: one run per tick across every host
            /// sharing `[coordination]`.
            #[serde(default)]
            pub lock: LockScope,
            /// This job's alert routes and timing (`[jobs.NAME.alerts]`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub alerts: Option<super::alerts::JobAlerts>,
            $($body)*
        }
    };
}

pub(crate) use job_kind;

/// A backup kind: `job_kind!` plus the keys every backup kind shares
/// (repository, compression, encryption, RPO, retention).
macro_rules! backup_kind {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        job_kind! {
            $(#[$meta])*
            pub struct $name {
                /// Encrypt this job's backups (overrides the repository's `encryption`).
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub encryption: Option<super::Encryption>,
                /// Recovery point objective: the newest committed backup must never
                /// be older than this (`drctl rpo`, alerts, metrics).
                #[serde(
                    default,
                    with = "humantime_serde",
                    skip_serializing_if = "Option::is_none"
                )]
                pub rpo: Option<Duration>,
                /// Grandfather-father-son retention, applied after each backup and by `drctl prune`.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub retention: Option<crate::retention::Policy>,
                pub repository: String,
                #[serde(default)]
                pub compression: Compression,
                /// zstd 1..=19 (default 1), gzip 1..=9 (default 6).
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub compression_level: Option<i32>,
                $($body)*
            }
        }
    };
}

pub use crate::values::Compression;

backup_kind! {
    pub struct PostgresJob {
        /// Connection URL inline. Prefer `url_env`/`url_file`: an inline password is a secret in a file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub url_env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub url_file: Option<PathBuf>,
        /// zstd worker threads (default: half the cores, 1 to 4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub compression_threads: Option<u32>,
        /// Directory holding `pg_dump`, `pg_dumpall`, `pg_restore`, `psql`
        /// (default: the newest /usr/lib/postgresql/*/bin, else `$PATH`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pg_bindir: Option<PathBuf>,
        /// Tables up to this size get an exact row count in the dump's snapshot;
        /// larger ones are listed with no count (and the manifest says so).
        #[serde(default = "default_count_rows_max")]
        pub count_rows_max_table_size: ByteSize,
        /// Also dump roles and tablespaces (`pg_dumpall --globals-only`).
        #[serde(default = "yes")]
        pub globals: bool,
        /// How long the daemon waits for this database at start before
        /// declaring it unreachable (R3's "wait up to 60 s for the database").
        #[serde(default = "default_startup_wait", with = "humantime_serde")]
        pub startup_wait: Duration,
        /// Database used for CREATE/ALTER DATABASE during restores.
        #[serde(default = "default_maintenance_db")]
        pub maintenance_db: String,
    }
}

pub(crate) fn default_retry_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_startup_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_count_rows_max() -> ByteSize {
    ByteSize::gib(4)
}
fn yes() -> bool {
    true
}
fn default_maintenance_db() -> String {
    "postgres".into()
}

job_kind! {
    /// `type = "verify"`: re-read other jobs' backups and check them
    /// against their manifests (`drctl verify` on a schedule).
    pub struct VerifyJob {
        /// Backup jobs to verify (default: every job with a repository).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub jobs: Option<Vec<String>>,
        /// `latest` (default): the newest backup of each job; `all`: every one.
        #[serde(default)]
        pub scope: VerifyScope,
        /// Also decrypt, decompress and read the archive (pg_restore reads every data block).
        #[serde(default)]
        pub deep: bool,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyScope {
    #[default]
    Latest,
    All,
}

/// A path to back up: a plain string, or `{ path = "...", optional = true }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathEntry {
    Plain(PathBuf),
    Detailed {
        path: PathBuf,
        #[serde(default)]
        optional: bool,
    },
}

impl PathEntry {
    pub fn path(&self) -> &PathBuf {
        match self {
            PathEntry::Plain(p) | PathEntry::Detailed { path: p, .. } => p,
        }
    }
    pub fn optional(&self) -> bool {
        matches!(self, PathEntry::Detailed { optional: true, .. })
    }
}

backup_kind! {
    pub struct FilesJob {
        pub paths: Vec<PathEntry>,
    }
}

/// The scheduling settings every job kind shares.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling<'a> {
    pub schedule: Option<&'a str>,
    pub timezone: Option<&'a str>,
    pub jitter: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub catch_up: bool,
    pub lock: LockScope,
    pub alerts: Option<&'a super::alerts::JobAlerts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockScope {
    #[default]
    Host,
    Cluster,
}

impl JobConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            JobConfig::Postgres(_) => "postgres",
            JobConfig::Files(_) => "files",
            JobConfig::Verify(_) => "verify",
            JobConfig::Vacuum(_) => "vacuum",
            JobConfig::Reindex(_) => "reindex",
            JobConfig::PruneFiles(_) => "prune_files",
            JobConfig::PruneImages(_) => "prune_images",
            JobConfig::Disk(_) => "disk",
            JobConfig::CertExpiry(_) => "cert_expiry",
            JobConfig::Health(_) => "health",
        }
    }

    /// Backups are the kinds that write to a repository.
    pub fn is_backup(&self) -> bool {
        matches!(self, JobConfig::Postgres(_) | JobConfig::Files(_))
    }

    /// The repository a backup job writes to (None for kinds that store nothing).
    pub fn repository(&self) -> Option<&str> {
        match self {
            JobConfig::Postgres(j) => Some(&j.repository),
            JobConfig::Files(j) => Some(&j.repository),
            _ => None,
        }
    }

    /// The job's own `encryption`, if it sets one.
    pub fn own_encryption(&self) -> Option<&super::Encryption> {
        match self {
            JobConfig::Postgres(j) => j.encryption.as_ref(),
            JobConfig::Files(j) => j.encryption.as_ref(),
            _ => None,
        }
    }

    /// The job's retention policy, if it sets one (backup kinds only).
    pub fn retention(&self) -> Option<&crate::retention::Policy> {
        match self {
            JobConfig::Postgres(j) => j.retention.as_ref(),
            JobConfig::Files(j) => j.retention.as_ref(),
            _ => None,
        }
    }

    /// The job's RPO target, if it sets one (backup kinds only).
    pub fn rpo(&self) -> Option<Duration> {
        match self {
            JobConfig::Postgres(j) => j.rpo,
            JobConfig::Files(j) => j.rpo,
            _ => None,
        }
        .filter(|d| !d.is_zero())
    }

    /// When and how the daemon runs this job.
    pub fn scheduling(&self) -> Scheduling<'_> {
        macro_rules! of {
            ($j:expr, $backup:expr) => {
                Scheduling {
                    schedule: $j.schedule.as_deref(),
                    timezone: $j.timezone.as_deref(),
                    jitter: $j.jitter,
                    retries: $j.retries,
                    retry_delay: $j.retry_delay,
                    catch_up: $j.catch_up.unwrap_or($backup),
                    lock: $j.lock,
                    alerts: $j.alerts.as_ref(),
                }
            };
        }
        match self {
            JobConfig::Postgres(j) => of!(j, true),
            JobConfig::Files(j) => of!(j, true),
            JobConfig::Verify(j) => of!(j, false),
            JobConfig::Vacuum(j) => of!(j, false),
            JobConfig::Reindex(j) => of!(j, false),
            JobConfig::PruneFiles(j) => of!(j, false),
            JobConfig::PruneImages(j) => of!(j, false),
            JobConfig::Disk(j) => of!(j, false),
            JobConfig::CertExpiry(j) => of!(j, false),
            JobConfig::Health(j) => of!(j, false),
        }
    }

    pub fn schedule(&self) -> Option<&str> {
        self.scheduling().schedule
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let own = |r: Result<(), (&'static str, String)>| r.map_err(|(k, m)| (k.to_owned(), m));
        match self {
            JobConfig::Vacuum(j) => j.validate(),
            JobConfig::Reindex(j) => j.validate(),
            JobConfig::PruneFiles(j) => j.validate(),
            JobConfig::PruneImages(j) => j.validate(),
            JobConfig::Disk(j) => j.validate(),
            JobConfig::CertExpiry(j) => j.validate(),
            JobConfig::Health(j) => j.validate(),
            _ => Ok(()),
        }?;
        own(self.validate_common())
    }

    fn validate_common(&self) -> Result<(), (&'static str, String)> {
        if let Some(e) = self.own_encryption() {
            e.validate()?;
        }
        let s = self.scheduling();
        if let Some(expr) = s.schedule {
            let parsed = crate::schedule::Schedule::parse(expr, s.timezone)?;
            // "0 0 2 30 2 *" (Feb 30) parses and never fires.
            if parsed.next_after(chrono::Utc::now()).is_none() {
                return Err((
                    "schedule",
                    format!("{expr:?} never fires (no such date); a job that never runs backs up nothing"),
                ));
            }
        } else if s.timezone.is_some() {
            crate::schedule::parse_timezone(s.timezone).map_err(|m| ("timezone", m))?;
        }
        if let Some(r) = self.retention() {
            if r.is_empty() {
                return Err((
                    "retention",
                    "keeps nothing but the newest backup: set keep_last, hourly, daily, weekly, monthly or yearly to at least 1 (or remove retention to keep every backup)".into(),
                ));
            }
        }
        match self {
            JobConfig::Postgres(j) => {
                one_url_source(&j.url, &j.url_env, &j.url_file).map_err(|m| ("url", m))?;
                if j.startup_wait > MAX_STARTUP_WAIT {
                    return Err((
                        "startup_wait",
                        "expected at most 7 days (how long a missed run waits for its database at start)".into(),
                    ));
                }
                if let Some(u) = &j.url {
                    if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                        return Err(("url", "expected a postgres:// URL".into()));
                    }
                    let query_password = url::Url::parse(u)
                        .is_ok_and(|p| p.query_pairs().any(|(k, _)| k == "password"));
                    if query_password {
                        return Err((
                            "url",
                            "put the password in the userinfo (postgres://user:password@host/db) or use url_env/url_file, not in the query".into(),
                        ));
                    }
                }
                check_level(j.compression, j.compression_level)?;
                if j.compression_threads == Some(0) {
                    return Err(("compression_threads", "expected at least 1".into()));
                }
            }
            JobConfig::Files(j) => {
                if j.paths.is_empty() {
                    return Err(("paths", "expected at least one path".into()));
                }
                for p in &j.paths {
                    if !p.path().is_absolute() {
                        return Err((
                            "paths",
                            format!("expected absolute paths, got {:?}", p.path()),
                        ));
                    }
                }
                check_level(j.compression, j.compression_level)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The longest `startup_wait` accepted; beyond it the wait is a typo (and
/// `now + wait` would leave the clock's range).
const MAX_STARTUP_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

fn check_level(c: Compression, level: Option<i32>) -> Result<(), (&'static str, String)> {
    let Some(l) = level else { return Ok(()) };
    let ok = match c {
        Compression::Zstd => (1..=19).contains(&l),
        Compression::Gzip => (1..=9).contains(&l),
        Compression::None => false,
    };
    if ok {
        Ok(())
    } else {
        Err((
            "compression_level",
            format!("expected 1..=19 for zstd or 1..=9 for gzip (none takes no level), got {l}"),
        ))
    }
}

/// A URL comes from exactly one of `url`, `url_env`, `url_file`.
pub(crate) fn one_url_source(
    url: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<(), String> {
    match [url.is_some(), env.is_some(), file.is_some()]
        .iter()
        .filter(|b| **b)
        .count()
    {
        1 => Ok(()),
        _ => Err("expected exactly one of `url`, `url_env`, `url_file`".into()),
    }
}
