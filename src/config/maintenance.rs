//! Config of the maintenance and check kinds: vacuum, reindex, prune_files,
//! prune_images, disk, cert_expiry, health. Thresholds default to what the
//! seed runbooks and PostgreSQL's own autovacuum use.

use super::jobs::{one_url_source, KeyError, KindSpec, Problems};
use crate::base::values::{Parsed, Window};
use bytesize::ByteSize;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn err(key: impl Into<String>, msg: impl Into<String>) -> KeyError {
    (key.into(), msg.into())
}

fn d(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
fn default_lock_timeout() -> Duration {
    d(5)
}
fn default_statement_timeout() -> Duration {
    d(3600)
}
fn yes() -> bool {
    true
}

/// The keys the PostgreSQL maintenance kinds share: the connection, the
/// timeouts every statement runs under, and the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// A statement waiting longer than this for a lock gives up on its object.
    #[serde(default = "default_lock_timeout", with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// A statement running longer than this is cancelled.
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `"01:00-05:00"` in the job's time zone: nothing new starts outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Parsed<Window>>,
}

impl Session {
    /// How `pg::Session` connects to `connection` for a job whose schedule
    /// is read in `timezone`.
    pub fn spec<'a>(
        &'a self,
        connection: &'a super::UrlSource,
        timezone: Option<&'a Parsed<Tz>>,
    ) -> SessionSpec<'a> {
        SessionSpec {
            connection,
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
            window: self.window.as_ref(),
            timezone,
        }
    }

    fn validate(&self, p: &mut Problems) {
        p.check(window(&self.window));
    }
}

/// Connection and limits of a PostgreSQL maintenance job.
#[derive(Debug, Clone, Copy)]
pub struct SessionSpec<'a> {
    /// Where the URL comes from.
    pub connection: &'a super::UrlSource,
    /// Lock wait limit per statement.
    pub lock_timeout: Duration,
    /// Run time limit per statement.
    pub statement_timeout: Duration,
    /// When new work may start.
    pub window: Option<&'a Parsed<Window>>,
    /// The zone the window is read in.
    pub timezone: Option<&'a Parsed<Tz>>,
}

/// `type = "vacuum"`: `VACUUM (ANALYZE)` on the tables that need it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumJob {
    /// The database: `url`, `url_env` or `url_file`.
    #[serde(flatten)]
    pub connection: super::UrlSource,
    /// Timeouts and window.
    #[serde(flatten)]
    pub session: Session,
    /// Only these tables (`schema.table` or `table` in `public`), each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Every table of the database, whatever its statistics say.
    #[serde(default)]
    pub all: bool,
    /// `VACUUM FULL` (rewrites and locks each table exclusively).
    #[serde(default)]
    pub full: bool,
    /// Also ANALYZE (plain VACUUM otherwise).
    #[serde(default = "yes")]
    pub analyze: bool,
    /// A table needs vacuum with at least this many dead tuples...
    #[serde(default = "default_min_dead")]
    pub min_dead_tuples: u64,
    /// ...making up at least this share of its tuples.
    #[serde(default = "default_ratio")]
    pub dead_ratio: f64,
    /// Or rows modified since the last analyze above this share of its rows.
    #[serde(default = "default_ratio")]
    pub analyze_ratio: f64,
    /// Or its relfrozenxid older than this many transactions (wraparound).
    #[serde(default = "default_freeze_age")]
    pub freeze_age: i64,
}

fn default_min_dead() -> u64 {
    1000
}
fn default_ratio() -> f64 {
    0.1
}
fn default_freeze_age() -> i64 {
    150_000_000
}

/// `type = "reindex"`: `REINDEX INDEX CONCURRENTLY` for bloated indexes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexJob {
    /// The database: `url`, `url_env` or `url_file`.
    #[serde(flatten)]
    pub connection: super::UrlSource,
    /// Timeouts and window.
    #[serde(flatten)]
    pub session: Session,
    /// Only these indexes (`schema.index` or `index` in `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<Vec<String>>,
    /// Every index of the database.
    #[serde(default)]
    pub all: bool,
    /// Reindex when the estimated bloat exceeds this share of the index.
    #[serde(default = "default_bloat")]
    pub bloat_ratio: f64,
    /// Smaller indexes are never worth it.
    #[serde(default = "default_min_index")]
    pub min_size: ByteSize,
    /// Drop invalid `_ccnew` leftovers of an interrupted concurrent reindex.
    #[serde(default = "yes")]
    pub drop_invalid: bool,
}

fn default_bloat() -> f64 {
    0.3
}
fn default_min_index() -> ByteSize {
    ByteSize::mib(1)
}

/// `type = "prune_files"`: `find -mtime +30 -delete` with guard rails.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneFilesJob {
    /// Globs (`**` included); each one's literal prefix is a root no
    /// deletion leaves.
    pub paths: Vec<String>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    /// Files last modified longer ago than this are deleted.
    pub older_than: Option<Duration>,
    /// The newest N matching files of each directory are always kept.
    #[serde(default)]
    pub keep_last: usize,
    /// Delete oldest first until the matching files fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_size: Option<ByteSize>,
    /// gzip files older than this in place (logrotate's `compress`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub compress_older_than: Option<Duration>,
    /// Report what would be deleted; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Skip files another process holds open for writing (default). When
    /// drctl cannot see other processes' open files (not root, no
    /// CAP_SYS_PTRACE, or /proc mounted `hidepid`), the run refuses to
    /// delete instead; `false` says to delete without looking.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub check_open_files: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
fn is_true(b: &bool) -> bool {
    *b
}

/// `type = "prune_images"`: `docker image prune` with keep_last per repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneImagesJob {
    /// Docker Engine socket (default: `$DOCKER_HOST`, else /var/run/docker.sock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Only images created longer ago than this are removed.
    #[serde(default = "default_until", with = "humantime_serde")]
    pub until: Duration,
    /// The newest N tags of each repository are kept, used or not.
    #[serde(default)]
    pub keep_last: usize,
    /// Remove dangling (untagged) images.
    #[serde(default = "yes")]
    pub dangling: bool,
    /// Remove tagged images no container uses.
    #[serde(default = "yes")]
    pub unused: bool,
    /// Report what would be removed; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Limit on each call to the Docker engine.
    #[serde(default = "default_docker_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_until() -> Duration {
    d(168 * 3600)
}
fn default_docker_timeout() -> Duration {
    d(120)
}

/// `type = "disk"`: `df` against thresholds, space and inodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskJob {
    /// Mount points (or any path on the filesystem) to check.
    pub mounts: Vec<PathBuf>,
    /// Percent used at which the mount is a warning.
    #[serde(default = "default_disk_warn")]
    pub warn: f64,
    /// Percent used at which the mount is critical.
    #[serde(default = "default_disk_critical")]
    pub critical: f64,
    /// Inode thresholds (default: the same as space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_warn: Option<f64>,
    /// Inode percent at which the mount is critical (default: `critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_critical: Option<f64>,
}

fn default_disk_warn() -> f64 {
    80.0
}
fn default_disk_critical() -> f64 {
    90.0
}

/// `type = "cert_expiry"`: `openssl x509 -enddate` for files and endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertExpiryJob {
    /// PEM files or globs; every certificate of a chain is checked.
    #[serde(default)]
    pub files: Vec<String>,
    /// `host:port` (SNI = host), or `name@host:port` to send another SNI.
    #[serde(default)]
    pub endpoints: Vec<Parsed<crate::base::values::Endpoint>>,
    /// Time left at which a certificate is a warning (default 30 days).
    #[serde(default = "default_warn_days", with = "humantime_serde")]
    pub warn: Duration,
    /// Time left at which it is critical (default 7 days).
    #[serde(default = "default_critical_days", with = "humantime_serde")]
    pub critical: Duration,
    /// Connect and handshake timeout per endpoint.
    #[serde(default = "default_tls_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_warn_days() -> Duration {
    d(30 * 86400)
}
fn default_critical_days() -> Duration {
    d(7 * 86400)
}
fn default_tls_timeout() -> Duration {
    d(10)
}

/// `type = "health"`: checks with retries and Gatus-style thresholds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthJob {
    /// The checks (`[[jobs.NAME.checks]]`), probed in parallel.
    pub checks: Vec<HealthCheck>,
}

/// What a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeType {
    /// An HTTP(S) request with status, body and JSON expectations.
    Http,
    /// A TCP connect.
    Tcp,
    /// A PostgreSQL connection and `SELECT 1`.
    Postgres,
    /// A Redis PING.
    Redis,
    /// A command's exit status.
    Command,
}

impl ProbeType {
    /// The `type` value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Http => "http",
            ProbeType::Tcp => "tcp",
            ProbeType::Postgres => "postgres",
            ProbeType::Redis => "redis",
            ProbeType::Command => "command",
        }
    }
}

/// One health check. A flat struct (serde's `flatten` cannot be combined
/// with `deny_unknown_fields`); `validate` rejects keys of another type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Its `type`.
    #[serde(rename = "type")]
    pub probe: ProbeType,
    /// Names the check in alerts and metrics (default: its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Further attempts within one run after a failed one.
    #[serde(default)]
    pub retries: u32,
    /// Wait between attempts within one run.
    #[serde(default = "default_probe_delay", with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Per attempt.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed runs before the check is down (and alerts).
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Consecutive passing runs before a down check is up again.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// `critical` (default) or `warning` while down.
    #[serde(default = "default_severity")]
    pub severity: Parsed<Down>,
    // http, postgres, redis
    /// URL of an http, postgres or redis check (prefer `url_env`/`url_file`
    /// when it holds a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The URL from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    // http
    /// HTTP method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Default: any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// Text the HTTP body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// RFC 6901 pointer into a JSON body, e.g. `/status`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_pointer: Option<String>,
    /// ...and the value it must equal (`"ok"`, `true`, `3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_equals: Option<toml::Value>,
    /// Extra HTTP request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    // tcp
    /// `host:port` of a tcp check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    // command
    /// argv, no shell: `["pg_isready", "-q"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The exit status a command check expects (default 0).
    #[serde(default)]
    pub expect_exit: i32,
}

fn default_probe_delay() -> Duration {
    d(5)
}
fn default_probe_timeout() -> Duration {
    d(10)
}
fn default_failure_threshold() -> u32 {
    2
}
fn one() -> u32 {
    1
}
fn default_severity() -> Parsed<Down> {
    Parsed::new("critical")
}

/// How bad a health check being down is (`severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// Page now (the default).
    Critical,
    /// Attention soon.
    Warning,
}

impl crate::base::values::FromConfig for Down {
    fn from_config(text: &str) -> Result<Self, String> {
        match text {
            "critical" => Ok(Down::Critical),
            "warning" => Ok(Down::Warning),
            _ => Err("expected \"critical\" or \"warning\"".into()),
        }
    }
}

impl HealthCheck {
    /// The check's name: `name`, else its target without secrets.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let target = match self.probe {
            ProbeType::Tcp => self.address.clone(),
            ProbeType::Command => self.command.as_ref().map(|c| c.join(" ")),
            _ => self
                .url
                .as_deref()
                .map(strip_userinfo)
                .or_else(|| self.url_env.as_ref().map(|e| format!("${e}")))
                .or_else(|| self.url_file.as_ref().map(|f| f.display().to_string())),
        };
        format!("{}:{}", self.probe.as_str(), target.unwrap_or_default())
    }

    /// The keys that say what is probed (`url`, `address`, `command`):
    /// exactly those of the check's type.
    fn validate_target(&self, key: &str, p: &mut Problems) {
        let has_url = self.url.is_some() || self.url_env.is_some() || self.url_file.is_some();
        let not_for = |k: &str| {
            err(
                format!("{key}.{k}"),
                format!("not a key of {} checks", self.probe.as_str()),
            )
        };
        match self.probe {
            ProbeType::Http | ProbeType::Postgres | ProbeType::Redis => {
                p.check(
                    one_url_source(&self.url, &self.url_env, &self.url_file)
                        .map_err(|m| err(format!("{key}.url"), m)),
                );
                if let Some(u) = &self.url {
                    let schemes: &[&str] = match self.probe {
                        ProbeType::Http => &["http://", "https://"],
                        ProbeType::Postgres => &["postgres://", "postgresql://"],
                        _ => &["redis://", "rediss://"],
                    };
                    if !schemes.iter().any(|s| u.starts_with(s)) {
                        p.push(err(
                            format!("{key}.url"),
                            format!("expected a URL starting with {}", schemes.join(" or ")),
                        ));
                    }
                }
            }
            ProbeType::Tcp => {
                let a = self.address.as_deref().unwrap_or("");
                if a.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    p.push(err(
                        format!("{key}.address"),
                        "expected host:port, e.g. \"127.0.0.1:6379\"",
                    ));
                }
                if has_url {
                    p.push(not_for("url"));
                }
            }
            ProbeType::Command => {
                if self.command.as_ref().is_none_or(std::vec::Vec::is_empty) {
                    p.push(err(
                        format!("{key}.command"),
                        "expected a non-empty argv list, e.g. [\"pg_isready\", \"-q\"]",
                    ));
                }
                if has_url {
                    p.push(not_for("url"));
                }
            }
        }
    }

    fn validate(&self, key: &str, p: &mut Problems) {
        let http_only = [
            ("method", self.method.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("body_contains", self.body_contains.is_some()),
            ("json_pointer", self.json_pointer.is_some()),
            ("json_equals", self.json_equals.is_some()),
            ("headers", !self.headers.is_empty()),
        ];
        let not_for = |k: &str| {
            err(
                format!("{key}.{k}"),
                format!("not a key of {} checks", self.probe.as_str()),
            )
        };
        if self.probe != ProbeType::Http {
            for (k, _) in http_only.iter().filter(|(_, set)| *set) {
                p.push(not_for(k));
            }
        }
        if self.probe != ProbeType::Tcp && self.address.is_some() {
            p.push(not_for("address"));
        }
        if self.probe != ProbeType::Command && self.command.is_some() {
            p.push(not_for("command"));
        }
        self.validate_target(key, p);
        if let Some(ptr) = &self.json_pointer {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                p.push(err(
                    format!("{key}.json_pointer"),
                    "expected an RFC 6901 pointer starting with '/', e.g. \"/status\"",
                ));
            }
            if self.json_equals.is_none() {
                p.push(err(
                    format!("{key}.json_equals"),
                    "expected the value json_pointer must equal",
                ));
            }
        }
        if let Some(m) = &self.method {
            if reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                p.push(err(format!("{key}.method"), "expected an HTTP method"));
            }
        }
        if self.failure_threshold == 0 || self.success_threshold == 0 {
            p.push(err(
                format!("{key}.failure_threshold"),
                "thresholds must be at least 1",
            ));
        }
        if let Some(why) = self.severity.problem() {
            p.push(err(format!("{key}.severity"), why));
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://host/db` for names and logs.
pub fn strip_userinfo(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) => {
            let _ = p.set_password(None);
            let _ = p.set_username("");
            // `?token=...` is a credential too: it must not reach /status,
            // `status --json` or the state database with the check's name.
            let shown = p.to_string();
            crate::base::secret::mask_url(&shown).unwrap_or(shown)
        }
        Err(_) => crate::base::secret::redact(u),
    }
}

fn ratio(key: &str, v: f64) -> Result<(), KeyError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(err(
            key,
            format!("expected a share between 0 and 1, got {v}"),
        ))
    }
}

fn percent(key: &str, v: f64) -> Result<(), KeyError> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(err(key, format!("expected a percentage 0..=100, got {v}")))
    }
}

fn window(w: &Option<Parsed<Window>>) -> Result<(), KeyError> {
    match w.as_ref().and_then(Parsed::problem) {
        Some(why) => Err(err("window", why)),
        None => Ok(()),
    }
}

impl KindSpec for VacuumJob {
    fn validate(&self, p: &mut Problems) {
        p.check(self.connection.validate().map_err(|m| err("url", m)));
        self.session.validate(p);
        p.check(ratio("dead_ratio", self.dead_ratio));
        p.check(ratio("analyze_ratio", self.analyze_ratio));
        if self.all && self.tables.is_some() {
            p.push(err(
                "all",
                "expected either `all = true` or `tables`, not both",
            ));
        }
    }

    fn keys() -> Vec<&'static str> {
        let mut k = super::introspect::fields::<super::UrlSource>();
        k.extend(super::introspect::fields::<Session>());
        k.extend([
            "tables",
            "all",
            "full",
            "analyze",
            "min_dead_tuples",
            "dead_ratio",
            "analyze_ratio",
            "freeze_age",
        ]);
        k
    }
}

impl KindSpec for ReindexJob {
    fn validate(&self, p: &mut Problems) {
        p.check(self.connection.validate().map_err(|m| err("url", m)));
        self.session.validate(p);
        p.check(ratio("bloat_ratio", self.bloat_ratio));
        if self.all && self.indexes.is_some() {
            p.push(err(
                "all",
                "expected either `all = true` or `indexes`, not both",
            ));
        }
    }

    fn keys() -> Vec<&'static str> {
        let mut k = super::introspect::fields::<super::UrlSource>();
        k.extend(super::introspect::fields::<Session>());
        k.extend(["indexes", "all", "bloat_ratio", "min_size", "drop_invalid"]);
        k
    }
}

impl KindSpec for PruneFilesJob {
    fn validate(&self, problems: &mut Problems) {
        if self.paths.is_empty() {
            problems.push(err("paths", "expected at least one glob"));
        }
        for p in &self.paths {
            if !p.starts_with('/') {
                problems.push(err("paths", format!("expected absolute globs, got {p:?}")));
                continue;
            }
            if p.split('/').any(|c| c == "..") {
                problems.push(err("paths", format!("`..` is not allowed in {p:?}")));
                continue;
            }
            if let Err(e) = glob::Pattern::new(p) {
                problems.push(err("paths", format!("{p:?}: {e}")));
            } else if crate::base::values::root_of(p) == std::path::Path::new("/") {
                problems.push(err(
                    "paths",
                    format!(
                        "{p:?} would walk the whole filesystem: start it with a literal directory"
                    ),
                ));
            }
        }
        if self.older_than.is_none()
            && self.max_total_size.is_none()
            && self.compress_older_than.is_none()
        {
            problems.push(err(
                "older_than",
                "expected at least one of older_than, max_total_size, compress_older_than",
            ));
        }
    }
}

impl KindSpec for DiskJob {
    fn validate(&self, p: &mut Problems) {
        if self.mounts.is_empty() {
            p.push(err("mounts", "expected at least one mount point"));
        }
        if let Some(m) = self.mounts.iter().find(|m| !m.is_absolute()) {
            p.push(err("mounts", format!("expected absolute paths, got {m:?}")));
        }
        p.check(percent("warn", self.warn));
        p.check(percent("critical", self.critical));
        if self.warn > self.critical {
            p.push(err("warn", "expected warn <= critical"));
        }
        for (k, v) in [
            ("inodes_warn", self.inodes_warn),
            ("inodes_critical", self.inodes_critical),
        ] {
            if let Some(v) = v {
                p.check(percent(k, v));
            }
        }
    }
}

impl KindSpec for CertExpiryJob {
    fn validate(&self, p: &mut Problems) {
        if self.files.is_empty() && self.endpoints.is_empty() {
            p.push(err("files", "expected `files` or `endpoints` (or both)"));
        }
        for f in &self.files {
            if let Err(e) = glob::Pattern::new(f) {
                p.push(err("files", format!("{f:?}: {e}")));
            }
        }
        for e in &self.endpoints {
            if let Some(why) = e.problem() {
                p.push(err("endpoints", why));
            }
        }
        if self.critical > self.warn {
            p.push(err(
                "critical",
                "expected critical <= warn (both are time left)",
            ));
        }
    }
}

impl KindSpec for HealthJob {
    fn validate(&self, p: &mut Problems) {
        if self.checks.is_empty() {
            p.push(err("checks", "expected at least one [[jobs.NAME.checks]]"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.checks.iter().enumerate() {
            c.validate(&format!("checks[{i}]"), p);
            if !names.insert(c.display_name()) {
                p.push(err(
                    format!("checks[{i}].name"),
                    format!(
                        "two checks are named {:?}; give each a distinct `name`",
                        c.display_name()
                    ),
                ));
            }
        }
    }
}

impl KindSpec for PruneImagesJob {
    fn validate(&self, p: &mut Problems) {
        if !self.dangling && !self.unused {
            p.push(err(
                "dangling",
                "with dangling = false and unused = false nothing is pruned",
            ));
        }
    }
}
