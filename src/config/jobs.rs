//! `[jobs.NAME]`: the keys every kind shares ([`Common`]), then the kind's
//! own keys, tagged by `type`. The kinds are registered once, in `kinds!`:
//! everything the config layer has to know of every kind (the `type`
//! names, validation, which kinds store backups, the key lists of error
//! messages) is generated from that one list and [`KindSpec`], which each
//! kind implements next to its keys. The engine dispatches a kind's run in
//! `jobs::run_check` (one arm per maintenance or check kind) or
//! `backup::run` (backup kinds).

use crate::base::schedule::{CronExpr, Schedule};
use crate::base::values::Parsed;
use bytesize::ByteSize;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A key and what is wrong with it; the caller prefixes `jobs.NAME.`.
pub(crate) type KeyError = (String, String);

/// Every problem of one table, in the order its checks ran. A failed
/// check does not stop the others, so one `config check` lists all that
/// is wrong with a file instead of one per edit.
#[derive(Debug, Default)]
pub struct Problems(Vec<KeyError>);

impl Problems {
    /// The problems, in order.
    pub(crate) fn into_inner(self) -> Vec<KeyError> {
        self.0
    }

    /// Record a problem.
    pub(crate) fn push(&mut self, (key, message): KeyError) {
        self.0.push((key, message));
    }

    /// Record the outcome of one check (a problem if it failed).
    pub(crate) fn check<K: Into<String>>(&mut self, r: Result<(), (K, String)>) {
        if let Err((key, message)) = r {
            self.0.push((key.into(), message));
        }
    }
}

/// One `[jobs.NAME]` table. serde's `flatten` cannot be combined with
/// `deny_unknown_fields` on this struct, but it does not have to be: the
/// shared keys are taken by [`Common`] first, and every key left over must
/// belong to the kind, whose struct denies the rest (the error then names
/// the key: see `config::figment_error`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobConfig {
    /// The keys every kind shares.
    #[serde(flatten)]
    pub common: Common,
    /// The kind and its own keys.
    #[serde(flatten)]
    pub kind: Kind,
}

/// The keys every job kind shares: when it runs, how it retries, whom it
/// alerts. The daemon, `drctl run` and `drctl status` read only these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Common {
    /// When the daemon runs the job (cron with seconds or without);
    /// without one the job runs only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Parsed<CronExpr>>,
    /// IANA time zone the schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Parsed<Tz>>,
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
}

/// What every kind says about itself. Implemented next to each kind's keys;
/// the defaults fit a kind that stores nothing and checks nothing extra.
pub trait KindSpec {
    /// The keys this kind takes besides [`Common`]'s, for "unknown key"
    /// messages. The default reads them from the kind's serde derive; a kind
    /// that flattens a shared block lists its own (a unit test checks them).
    fn keys() -> Vec<&'static str>
    where
        Self: Sized + for<'de> Deserialize<'de>,
    {
        super::introspect::fields::<Self>()
    }
    /// Checks serde cannot express (ranges, exclusive keys, globs): every
    /// problem goes into `p`.
    fn validate(&self, p: &mut Problems) {
        let _ = p;
    }
    /// The repository keys of a kind that writes backups.
    fn storage(&self) -> Option<&Storage> {
        None
    }
}

/// Registers the job kinds: `Variant(Type) = "type name"`. Adding a kind is
/// one line here plus its config struct; every match over all kinds in the
/// config layer is generated from this list.
macro_rules! kinds {
    ($($(#[$m:meta])* $variant:ident($ty:ty) = $name:literal;)*) => {
        /// The kind-specific part of a job, tagged by `type`. Kinds differ
        /// in size (a postgres job carries its container settings); a
        /// config is loaded once, so no variant is boxed.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "type")]
        #[allow(clippy::large_enum_variant)]
        pub enum Kind {
            $(
                $(#[$m])*
                #[doc = concat!("`type = \"", $name, "\"`.")]
                #[serde(rename = $name)]
                $variant($ty),
            )*
        }

        impl Kind {
            /// Every `type` value, in registration order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The `type` value as written in the config.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Kind::$variant(_) => $name,)*
                }
            }

            fn spec(&self) -> &dyn KindSpec {
                match self {
                    $(Kind::$variant(j) => j,)*
                }
            }

            /// The keys a kind takes besides the shared ones (None: no such kind).
            pub fn keys_of(name: &str) -> Option<Vec<&'static str>> {
                match name {
                    $($name => Some(<$ty as KindSpec>::keys()),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    Postgres(PostgresJob) = "postgres";
    Files(FilesJob) = "files";
    Redis(RedisJob) = "redis";
    PostgresPhysical(super::physical::PhysicalJob) = "postgres_physical";
    Verify(VerifyJob) = "verify";
    Vacuum(super::maintenance::VacuumJob) = "vacuum";
    Reindex(super::maintenance::ReindexJob) = "reindex";
    PruneFiles(super::maintenance::PruneFilesJob) = "prune_files";
    PruneImages(super::maintenance::PruneImagesJob) = "prune_images";
    Disk(super::maintenance::DiskJob) = "disk";
    CertExpiry(super::maintenance::CertExpiryJob) = "cert_expiry";
    Health(super::maintenance::HealthJob) = "health";
}

/// `[jobs.X.restore]`: the runbook's procedure around a restore ("stop the
/// app, restore, start it"). Commands are argv lists run without a shell.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreHooks {
    /// Run in order before the target is touched; one that fails (or runs
    /// out of time) aborts the restore with the target untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<Vec<String>>,
    /// Run in order after the restore, also when it failed (the application
    /// comes back on the untouched old database); each runs even if an
    /// earlier one failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Vec<String>>,
    /// Longest each command may run (default 5m); then it is killed and
    /// counts as failed.
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `health` jobs run after the `after` hooks: the restore counts as
    /// done only once each passes (R4's `curl -sf .../health`). Retried
    /// until they pass or `verify_timeout` ends; then the restore exits 9
    /// (data restored, service not back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<String>,
    /// How long the `verify` checks get to pass (default 2m): an
    /// application takes a while to start.
    #[serde(default = "default_verify_timeout", with = "humantime_serde")]
    pub verify_timeout: Duration,
    /// Containers stopped (through the Docker Engine API) after the
    /// `before` hooks and started again before the `after` hooks, also
    /// when the restore fails; a container with a healthcheck must report
    /// `healthy` within `timeout`. A container name, or a Compose service
    /// as `{ project = "catalogizer", service = "api" }` (all its
    /// containers, found by Compose's labels). Only those running are
    /// stopped, and only those are started again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<ContainerRef>,
    /// The Docker Engine socket for `stop` (default: `$DOCKER_HOST`, else
    /// /var/run/docker.sock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_socket: Option<PathBuf>,
}

/// A container a restore stops: by name, or a Compose service's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ContainerRef {
    /// `"catalogizer-api-1"`
    Name(String),
    /// `{ project = "catalogizer", service = "api" }`
    Compose {
        /// The Compose project (`com.docker.compose.project`).
        project: String,
        /// The service (`com.docker.compose.service`).
        service: String,
    },
}

impl std::fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerRef::Name(n) => write!(f, "container {n}"),
            ContainerRef::Compose { project, service } => {
                write!(f, "compose service {service} of project {project}")
            }
        }
    }
}

/// By hand rather than `untagged`, so that a wrong entry is told what an
/// entry may be instead of "data did not match any variant".
impl<'de> Deserialize<'de> for ContainerRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "a container name, or { project = \"...\", service = \"...\" } for a Compose service";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ContainerRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ContainerRef, E> {
                Ok(ContainerRef::Name(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ContainerRef, A::Error> {
                let (mut project, mut service) = (None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "project" => project = Some(map.next_value::<String>()?),
                        "service" => service = Some(map.next_value::<String>()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(
                                other,
                                &["project", "service"],
                            ))
                        }
                    }
                }
                match (project, service) {
                    (Some(project), Some(service)) => {
                        Ok(ContainerRef::Compose { project, service })
                    }
                    _ => Err(serde::de::Error::custom(format!(
                        "expected {EXPECTED}: both keys are needed"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_verify_timeout() -> Duration {
    Duration::from_secs(120)
}

impl RestoreHooks {
    fn validate(&self, p: &mut Problems) {
        for (key, list) in [
            ("restore.before", &self.before),
            ("restore.after", &self.after),
        ] {
            for (i, argv) in list.iter().enumerate() {
                if argv.first().is_none_or(|c| c.trim().is_empty()) {
                    p.push((
                        format!("{key}[{i}]"),
                        "expected a command as an argv list, e.g. [\"systemctl\", \"stop\", \"app\"]".into(),
                    ));
                }
            }
        }
        for (i, c) in self.stop.iter().enumerate() {
            let empty = match c {
                ContainerRef::Name(n) => n.trim().is_empty(),
                ContainerRef::Compose { project, service } => {
                    project.trim().is_empty() || service.trim().is_empty()
                }
            };
            if empty {
                p.push((
                    format!("restore.stop[{i}]"),
                    "expected a container name, or { project = \"...\", service = \"...\" } with both set".into(),
                ));
            }
        }
        for (key, d) in [
            ("restore.timeout", self.timeout),
            ("restore.verify_timeout", self.verify_timeout),
        ] {
            if d.is_zero() {
                p.push((key.into(), "expected a duration above 0".into()));
            }
        }
    }
}

/// The keys every backup kind shares: where backups go, how they are
/// packed, how long they are kept, how fresh they must be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storage {
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
    /// Recovery time objective: how long a real restore of this job may
    /// take (the DR report's "real restores" are measured against it; a
    /// drill's own `rto` stands in when the job has none).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub rto: Option<Duration>,
    /// Grandfather-father-son retention, applied after each backup and by `drctl prune`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::base::retention::Policy>,
    /// `[jobs.X.restore]`: what a restore of this job runs around itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreHooks>,
    /// The repository (`[repositories.NAME]`) backups go to.
    pub repository: String,
    /// Repositories every committed backup is copied to, byte for byte
    /// (3-2-1: a second medium, an offsite bucket). A copy is a backup of
    /// its own there, with its own retention and Object Lock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<String>,
    /// `[jobs.X.copy_retention.REPO]`: the retention of one copy
    /// repository (e.g. 12 monthly offsite); without one a copy keeps
    /// `retention`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copy_retention: BTreeMap<String, crate::base::retention::Policy>,
    /// RPO of the copies (default: `rpo`): a copy older than this is a
    /// violation of its own repository.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub rpo_copies: Option<Duration>,
    /// How artifacts are compressed (default zstd).
    #[serde(default)]
    pub compression: Compression,
    /// zstd 1..=19 (default 1), gzip 1..=9 (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
}

impl Storage {
    pub(super) fn validate(&self, p: &mut Problems) {
        if let Some(h) = &self.restore {
            h.validate(p);
        }
        if let Some(e) = &self.encryption {
            p.check(e.validate());
        }
        if self
            .retention
            .as_ref()
            .is_some_and(crate::base::retention::Policy::is_empty)
        {
            p.push((
                "retention".into(),
                "keeps nothing but the newest backup: set keep_last, hourly, daily, weekly, monthly or yearly to at least 1 (or remove retention to keep every backup)".into(),
            ));
        }
        p.check(check_level(self.compression, self.compression_level));
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.copies {
            if c == &self.repository {
                p.push((
                    "copies".into(),
                    format!("{c:?} is the job's own repository (expected other repositories to copy its backups to)"),
                ));
            } else if !seen.insert(c) {
                p.push(("copies".into(), format!("{c:?} is listed twice")));
            }
        }
        for (repo, policy) in &self.copy_retention {
            if !self.copies.contains(repo) {
                p.push((
                    format!("copy_retention.{repo}"),
                    format!(
                        "{repo:?} is not in copies (expected one of: {})",
                        if self.copies.is_empty() {
                            "none listed".into()
                        } else {
                            self.copies.join(", ")
                        }
                    ),
                ));
            } else if policy.is_empty() {
                p.push((
                    format!("copy_retention.{repo}"),
                    "keeps nothing but the newest copy: set keep_last, hourly, daily, weekly, monthly or yearly to at least 1".into(),
                ));
            }
        }
        if self.rpo_copies.is_some() && self.copies.is_empty() {
            p.push((
                "rpo_copies".into(),
                "the job has no copies (expected copies = [\"REPO\", ...] with it)".into(),
            ));
        }
    }
}

pub use crate::base::values::Compression;

/// `type = "postgres"`: `pg_dump -Fc` of one database (and the globals).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresJob {
    /// Repository, compression, encryption, retention and RPO.
    #[serde(flatten)]
    pub storage: Storage,
    /// The database: `url`, `url_env` or `url_file`.
    #[serde(flatten)]
    pub connection: super::UrlSource,
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
    /// Safety copies (`<db>_pre_restore_<ts>`, each a full copy of the
    /// database) older than this are dropped after the next restore of the
    /// job's own database; without it they are kept until dropped by hand.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub safety_copy_keep: Option<Duration>,
    /// PostgreSQL runs in this Docker container: pg_dump, pg_dumpall, psql
    /// and pg_restore run inside it through the Engine API's exec, so their
    /// version is the server's and no port needs publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Or in the container of this Compose service (found by Compose's
    /// labels; exactly one must be running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeService>,
    /// The Docker Engine socket for `container`/`compose` (default:
    /// `$DOCKER_HOST`, else /var/run/docker.sock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_socket: Option<PathBuf>,
    /// In a container, without a URL: the role the tools connect as
    /// (default `postgres`, over the container's Unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// In a container, without a URL: the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// CPU niceness of pg_dump and pg_restore on this host (0 to 19;
    /// default: drctl's own, 10 under the shipped units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// I/O scheduling class of pg_dump and pg_restore on this host:
    /// `"idle"` (only when nobody else wants the disk) or `"best-effort"`
    /// (default: drctl's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_priority: Option<crate::base::child_env::IoPriority>,
}

/// `compose = { project = "catalogizer", service = "postgres" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    /// The Compose project (`com.docker.compose.project`).
    pub project: String,
    /// The service (`com.docker.compose.service`).
    pub service: String,
}

impl PostgresJob {
    /// The tools run in a container (`container` or `compose`).
    pub fn in_container(&self) -> bool {
        self.container.is_some() || self.compose.is_some()
    }

    fn validate_place(&self, p: &mut Problems) {
        let has_url = self.connection.url.is_some()
            || self.connection.url_env.is_some()
            || self.connection.url_file.is_some();
        if self.container.is_some() && self.compose.is_some() {
            p.push((
                "compose".into(),
                "expected either container or compose, not both".into(),
            ));
        }
        if self
            .container
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            p.push(("container".into(), "expected a container name".into()));
        }
        if let Some(c) = &self.compose {
            if c.project.trim().is_empty() || c.service.trim().is_empty() {
                p.push((
                    "compose".into(),
                    "expected { project = \"...\", service = \"...\" } with both set".into(),
                ));
            }
        }
        if !self.in_container() {
            for (key, set) in [
                ("user", self.user.is_some()),
                ("database", self.database.is_some()),
                ("docker_socket", self.docker_socket.is_some()),
            ] {
                if set {
                    p.push((key.into(), "only with container or compose (a host job names its server with url, url_env or url_file)".into()));
                }
            }
            p.check(self.connection.validate().map_err(|m| ("url", m)));
        } else if has_url {
            if self.database.is_some() || self.user.is_some() {
                p.push((
                    "database".into(),
                    "expected either url/url_env/url_file or user and database, not both".into(),
                ));
            }
            p.check(self.connection.validate().map_err(|m| ("url", m)));
        } else if self.database.as_deref().is_none_or(|d| d.trim().is_empty()) {
            p.push(("database".into(), "expected the database to back up (or url, url_env, url_file; in a container the host part is read inside it, e.g. postgres://app@/app?host=/var/run/postgresql)".into()));
        }
    }
}

impl KindSpec for PostgresJob {
    fn keys() -> Vec<&'static str> {
        let mut k = super::introspect::fields::<Storage>();
        k.extend(super::introspect::fields::<super::UrlSource>());
        k.extend([
            "compression_threads",
            "pg_bindir",
            "count_rows_max_table_size",
            "globals",
            "startup_wait",
            "maintenance_db",
            "safety_copy_keep",
            "container",
            "compose",
            "docker_socket",
            "user",
            "database",
            "nice",
            "io_priority",
        ]);
        k
    }

    fn storage(&self) -> Option<&Storage> {
        Some(&self.storage)
    }

    fn validate(&self, p: &mut Problems) {
        self.storage.validate(p);
        self.validate_place(p);
        if self.startup_wait > MAX_STARTUP_WAIT {
            p.push((
                "startup_wait".into(),
                "expected at most 7 days (how long a missed run waits for its database at start)"
                    .into(),
            ));
        }
        if self.compression_threads == Some(0) {
            p.push(("compression_threads".into(), "expected at least 1".into()));
        }
        if self.nice.is_some_and(|n| !(0..=19).contains(&n)) {
            p.push((
                "nice".into(),
                "expected 0 to 19 (a lower priority than drctl's; raising it needs CAP_SYS_NICE, which the service does not have)".into(),
            ));
        }
        if self.in_container() && (self.nice.is_some() || self.io_priority.is_some()) {
            p.push((
                "nice".into(),
                "nice and io_priority apply to tools drctl starts on this host; in a container the exec'd tools run under the container's own limits (set them on the container)".into(),
            ));
        }
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

/// `type = "verify"`: re-read other jobs' backups and check them
/// against their manifests (`drctl verify` on a schedule).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl KindSpec for VerifyJob {}

/// Which backups a verify job reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyScope {
    /// The newest backup of each job.
    #[default]
    Latest,
    /// Every committed backup.
    All,
}

/// A path to back up: a plain string, or `{ path = "...", optional = true }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathEntry {
    /// A path that must exist.
    Plain(PathBuf),
    /// A path with options.
    Detailed {
        /// The path.
        path: PathBuf,
        /// Skipped (and named in the run's output) when it does not exist.
        #[serde(default)]
        optional: bool,
    },
}

impl PathEntry {
    /// The path to back up.
    pub fn path(&self) -> &PathBuf {
        match self {
            PathEntry::Plain(p) | PathEntry::Detailed { path: p, .. } => p,
        }
    }
    /// Whether a missing path is skipped rather than a failed run.
    pub fn optional(&self) -> bool {
        matches!(self, PathEntry::Detailed { optional: true, .. })
    }
}

/// `type = "files"`: a tar of paths (R0's `tar czf uploads.tar.gz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesJob {
    /// Repository, compression, encryption, retention and RPO.
    #[serde(flatten)]
    pub storage: Storage,
    /// Absolute paths (files or directories) in the tar.
    pub paths: Vec<PathEntry>,
}

impl KindSpec for FilesJob {
    fn keys() -> Vec<&'static str> {
        let mut k = super::introspect::fields::<Storage>();
        k.push("paths");
        k
    }

    fn storage(&self) -> Option<&Storage> {
        Some(&self.storage)
    }

    fn validate(&self, p: &mut Problems) {
        self.storage.validate(p);
        if self.paths.is_empty() {
            p.push(("paths".into(), "expected at least one path".into()));
        }
        if let Some(e) = self.paths.iter().find(|e| !e.path().is_absolute()) {
            p.push((
                "paths".into(),
                format!("expected absolute paths, got {:?}", e.path()),
            ));
        }
    }
}

/// What an operation on backups tells a job of another kind.
pub const BACKUP_KINDS: &str =
    "it stores no backups (expected a postgres, postgres_physical, files or redis job)";

/// The scheduling settings every job kind shares.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling<'a> {
    /// Cron expression, if scheduled.
    pub schedule: Option<&'a Parsed<CronExpr>>,
    /// Zone of the expression.
    pub timezone: Option<&'a Parsed<Tz>>,
    /// Random delay before each scheduled run.
    pub jitter: Option<Duration>,
    /// Further attempts after a failure.
    pub retries: u32,
    /// First retry delay (doubles per attempt).
    pub retry_delay: Duration,
    /// Run at daemon start when a scheduled run was missed.
    pub catch_up: bool,
    /// Per host or per cluster.
    pub lock: LockScope,
    /// The job's own alert routes, if any.
    pub alerts: Option<&'a super::alerts::JobAlerts>,
}

impl Scheduling<'_> {
    /// The schedule in its zone, if the job has one: built from values
    /// parsed with the config, never from text.
    pub fn schedule(&self) -> Option<crate::Result<Schedule>> {
        self.schedule.map(|s| Schedule::of(s, self.timezone))
    }

    /// The zone the job's times are read in (UTC unless `timezone` says).
    pub fn zone(&self) -> crate::Result<Tz> {
        crate::base::values::zone(self.timezone)
    }
}

/// How many hosts may run a tick of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockScope {
    /// Each host runs its own (the default).
    #[default]
    Host,
    /// One host of those sharing `[coordination]` runs each tick.
    Cluster,
}

impl JobConfig {
    /// The `type` value as written in the config.
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// Backups are the kinds that write to a repository.
    pub fn is_backup(&self) -> bool {
        self.storage().is_some()
    }

    /// The repository keys of a backup job (None for kinds that store nothing).
    pub fn storage(&self) -> Option<&Storage> {
        self.kind.spec().storage()
    }

    /// The repository a backup job writes to (None for kinds that store nothing).
    pub fn repository(&self) -> Option<&str> {
        self.storage().map(|s| s.repository.as_str())
    }

    /// The repository of a job an operation needs backups of, or the
    /// error saying this job (`name`) stores none.
    pub fn backup_repository(&self, name: &str) -> crate::Result<&str> {
        self.repository().ok_or_else(|| crate::Error::WrongKind {
            job: name.to_owned(),
            kind: self.kind(),
            expected: BACKUP_KINDS,
        })
    }

    /// The job's own `encryption`, if it sets one.
    pub fn own_encryption(&self) -> Option<&super::Encryption> {
        self.storage().and_then(|s| s.encryption.as_ref())
    }

    /// The job's retention policy, if it sets one (backup kinds only).
    pub fn retention(&self) -> Option<&crate::base::retention::Policy> {
        self.storage().and_then(|s| s.retention.as_ref())
    }

    /// The repositories a backup job's copies go to (`copies`).
    pub fn copies(&self) -> &[String] {
        self.storage().map_or(&[], |s| s.copies.as_slice())
    }

    /// Every repository holding this job's backups: its own first, then
    /// its copies (empty for kinds that store nothing).
    pub fn repositories(&self) -> Vec<&str> {
        self.repository()
            .into_iter()
            .chain(self.copies().iter().map(String::as_str))
            .collect()
    }

    /// The retention that applies in repository `repo`: a copy's
    /// `copy_retention` if set, else the job's `retention`.
    pub fn retention_in(&self, repo: &str) -> Option<&crate::base::retention::Policy> {
        let s = self.storage()?;
        if s.repository != repo {
            if let Some(p) = s.copy_retention.get(repo) {
                return Some(p);
            }
        }
        s.retention.as_ref()
    }

    /// The RPO that applies in repository `repo`: `rpo_copies` for a copy
    /// if set, else `rpo`.
    pub fn rpo_in(&self, repo: &str) -> Option<Duration> {
        let s = self.storage()?;
        let d = if s.repository != repo {
            s.rpo_copies.or(s.rpo)
        } else {
            s.rpo
        };
        d.filter(|d| !d.is_zero())
    }

    /// The job's RPO target, if it sets one (backup kinds only).
    pub fn rpo(&self) -> Option<Duration> {
        self.storage().and_then(|s| s.rpo).filter(|d| !d.is_zero())
    }

    /// When and how the daemon runs this job.
    pub fn scheduling(&self) -> Scheduling<'_> {
        let c = &self.common;
        Scheduling {
            schedule: c.schedule.as_ref(),
            timezone: c.timezone.as_ref(),
            jitter: c.jitter,
            retries: c.retries,
            retry_delay: c.retry_delay,
            catch_up: c.catch_up.unwrap_or(self.is_backup()),
            lock: c.lock,
            alerts: c.alerts.as_ref(),
        }
    }

    /// The cron expression as written, if the job is scheduled.
    pub fn schedule(&self) -> Option<&str> {
        self.common.schedule.as_ref().map(Parsed::text)
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        self.kind.spec().validate(p);
        self.common.validate(p);
    }
}

impl Common {
    fn validate(&self, p: &mut Problems) {
        if let Some(why) = self.schedule.as_ref().and_then(Parsed::problem) {
            p.push(("schedule".into(), why.to_owned()));
        }
        if let Some(why) = self.timezone.as_ref().and_then(Parsed::problem) {
            p.push(("timezone".into(), why.to_owned()));
        }
        if let Some(expr) = &self.schedule {
            // "0 0 2 30 2 *" (Feb 30) parses and never fires.
            let never = Schedule::of(expr, self.timezone.as_ref())
                .is_ok_and(|s| s.next_after(chrono::Utc::now()).is_none());
            if never {
                p.push((
                    "schedule".into(),
                    format!(
                        "{:?} never fires (no such date); a job that never runs backs up nothing",
                        expr.text()
                    ),
                ));
            }
        }
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

/// `type = "redis"`: an RDB snapshot of a Redis server, fetched over the
/// network the way `redis-cli --rdb` does (see `engine::jobs::redis`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisJob {
    /// Repository, compression, encryption, retention and RPO.
    #[serde(flatten)]
    pub storage: Storage,
    /// The server: `redis://[user:password@]host:port` from `url`,
    /// `url_env` or `url_file` (the password is the AUTH/ACL one).
    #[serde(flatten)]
    pub connection: super::UrlSource,
    /// Longest the server may stay silent while it prepares or sends the
    /// snapshot (a fork of a large dataset takes a while) before the run
    /// fails (default 5m).
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_redis_timeout() -> Duration {
    Duration::from_secs(300)
}

impl KindSpec for RedisJob {
    fn keys() -> Vec<&'static str> {
        let mut k = super::introspect::fields::<Storage>();
        k.extend(super::introspect::fields::<super::UrlSource>());
        k.push("timeout");
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
        if let Some(u) = &c.url {
            if !u.starts_with("redis://") {
                p.push((
                    "url".into(),
                    "expected a redis:// URL (redis://[user:password@]host:port)".into(),
                ));
            }
        }
        if self.timeout.is_zero() {
            p.push(("timeout".into(), "expected a duration above 0".into()));
        }
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
