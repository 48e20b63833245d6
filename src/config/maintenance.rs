//! Config of the maintenance and check kinds: vacuum, reindex, prune_files,
//! prune_images, disk, cert_expiry, health. Thresholds default to what the
//! seed runbooks and PostgreSQL's own autovacuum use.

use super::jobs::{one_url_source, KeyError, KindSpec, Problems};
use super::UrlSource;
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

/// A health check as written: every key of every type in one flat table,
/// because serde's `flatten` cannot be combined with `deny_unknown_fields`
/// (which names an unknown key with its path). It becomes a
/// [`HealthCheck`] at once; keys of another type travel along for
/// `validate` to name.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
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

/// One health check: the keys every check has, and what its `type`
/// probes ([`Probe`], one variant per type with only its own keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "RawHealthCheck", into = "RawHealthCheck")]
pub struct HealthCheck {
    /// Names the check in alerts and metrics (default: its target).
    pub name: Option<String>,
    /// Further attempts within one run after a failed one.
    pub retries: u32,
    /// Wait between attempts within one run.
    pub retry_delay: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Consecutive failed runs before the check is down (and alerts).
    pub failure_threshold: u32,
    /// Consecutive passing runs before a down check is up again.
    pub success_threshold: u32,
    /// `critical` (default) or `warning` while down.
    pub severity: Parsed<Down>,
    /// What is probed.
    pub probe: Probe,
    /// Keys that belong to another type, as written (for `validate`).
    stray: Vec<&'static str>,
}

/// What a health check probes, by its `type`.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An HTTP(S) request with status, body and JSON expectations.
    Http(HttpProbe),
    /// A TCP connect to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A PostgreSQL connection and `SELECT 1`.
    Postgres {
        /// The server's URL.
        url: UrlSource,
    },
    /// A Redis PING.
    Redis {
        /// The server's URL.
        url: UrlSource,
    },
    /// A command's exit status.
    Command {
        /// argv, no shell.
        argv: Vec<String>,
        /// The exit status it must end with.
        expect_exit: i32,
    },
}

/// An HTTP check's request and expectations.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// The URL (it may hold a token: `Debug` masks it).
    pub url: UrlSource,
    /// The method (GET when not set).
    pub method: Option<Parsed<HttpMethod>>,
    /// The status expected (any 2xx when not set).
    pub expect_status: Option<u16>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    /// RFC 6901 pointer into a JSON body...
    pub json_pointer: Option<String>,
    /// ...and the value it must equal.
    pub json_equals: Option<toml::Value>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
}

/// An HTTP method, parsed when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMethod(pub reqwest::Method);

impl crate::base::values::FromConfig for HttpMethod {
    fn from_config(text: &str) -> Result<Self, String> {
        reqwest::Method::from_bytes(text.to_ascii_uppercase().as_bytes())
            .map(HttpMethod)
            .map_err(|_| "expected an HTTP method".into())
    }
}

impl Probe {
    /// The check's `type`.
    pub fn kind(&self) -> ProbeType {
        match self {
            Probe::Http(_) => ProbeType::Http,
            Probe::Tcp { .. } => ProbeType::Tcp,
            Probe::Postgres { .. } => ProbeType::Postgres,
            Probe::Redis { .. } => ProbeType::Redis,
            Probe::Command { .. } => ProbeType::Command,
        }
    }

    /// Where the URL comes from, for the types that have one.
    pub fn url(&self) -> Option<&UrlSource> {
        match self {
            Probe::Http(h) => Some(&h.url),
            Probe::Postgres { url } | Probe::Redis { url } => Some(url),
            Probe::Tcp { .. } | Probe::Command { .. } => None,
        }
    }
}

impl From<RawHealthCheck> for HealthCheck {
    fn from(r: RawHealthCheck) -> Self {
        let kind = r.probe;
        let url = UrlSource {
            url: r.url,
            url_env: r.url_env,
            url_file: r.url_file,
        };
        let has_url = url.url.is_some() || url.url_env.is_some() || url.url_file.is_some();
        // Keys of another type, in the order the documentation lists them.
        let mut stray = Vec::new();
        let http = [
            ("method", r.method.is_some()),
            ("expect_status", r.expect_status.is_some()),
            ("body_contains", r.body_contains.is_some()),
            ("json_pointer", r.json_pointer.is_some()),
            ("json_equals", r.json_equals.is_some()),
            ("headers", !r.headers.is_empty()),
        ];
        if kind != ProbeType::Http {
            stray.extend(http.iter().filter(|(_, set)| *set).map(|(k, _)| *k));
        }
        if kind != ProbeType::Tcp && r.address.is_some() {
            stray.push("address");
        }
        if kind != ProbeType::Command && r.command.is_some() {
            stray.push("command");
        }
        if matches!(kind, ProbeType::Tcp | ProbeType::Command) && has_url {
            stray.push("url");
        }
        let probe = match kind {
            ProbeType::Http => Probe::Http(HttpProbe {
                url,
                method: r.method.map(Parsed::new),
                expect_status: r.expect_status,
                body_contains: r.body_contains,
                json_pointer: r.json_pointer,
                json_equals: r.json_equals,
                headers: r.headers,
            }),
            ProbeType::Tcp => Probe::Tcp {
                address: r.address.unwrap_or_default(),
            },
            ProbeType::Postgres => Probe::Postgres { url },
            ProbeType::Redis => Probe::Redis { url },
            ProbeType::Command => Probe::Command {
                argv: r.command.unwrap_or_default(),
                expect_exit: r.expect_exit,
            },
        };
        HealthCheck {
            name: r.name,
            retries: r.retries,
            retry_delay: r.retry_delay,
            timeout: r.timeout,
            failure_threshold: r.failure_threshold,
            success_threshold: r.success_threshold,
            severity: r.severity,
            probe,
            stray,
        }
    }
}

impl From<HealthCheck> for RawHealthCheck {
    fn from(c: HealthCheck) -> Self {
        let mut r = RawHealthCheck {
            probe: c.probe.kind(),
            name: c.name,
            retries: c.retries,
            retry_delay: c.retry_delay,
            timeout: c.timeout,
            failure_threshold: c.failure_threshold,
            success_threshold: c.success_threshold,
            severity: c.severity,
            url: None,
            url_env: None,
            url_file: None,
            method: None,
            expect_status: None,
            body_contains: None,
            json_pointer: None,
            json_equals: None,
            headers: BTreeMap::new(),
            address: None,
            command: None,
            expect_exit: 0,
        };
        let set_url = |r: &mut RawHealthCheck, u: UrlSource| {
            r.url = u.url;
            r.url_env = u.url_env;
            r.url_file = u.url_file;
        };
        match c.probe {
            Probe::Http(h) => {
                set_url(&mut r, h.url);
                r.method = h.method.map(|m| m.text().to_owned());
                r.expect_status = h.expect_status;
                r.body_contains = h.body_contains;
                r.json_pointer = h.json_pointer;
                r.json_equals = h.json_equals;
                r.headers = h.headers;
            }
            Probe::Tcp { address } => r.address = Some(address),
            Probe::Postgres { url } | Probe::Redis { url } => set_url(&mut r, url),
            Probe::Command { argv, expect_exit } => {
                r.command = Some(argv);
                r.expect_exit = expect_exit;
            }
        }
        r
    }
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
        let target = match &self.probe {
            Probe::Tcp { address } => Some(address.clone()),
            Probe::Command { argv, .. } => Some(argv.join(" ")),
            other => other.url().and_then(|u| {
                u.url
                    .as_deref()
                    .map(strip_userinfo)
                    .or_else(|| u.url_env.as_ref().map(|e| format!("${e}")))
                    .or_else(|| u.url_file.as_ref().map(|f| f.display().to_string()))
            }),
        };
        format!(
            "{}:{}",
            self.probe.kind().as_str(),
            target.unwrap_or_default()
        )
    }

    /// The keys that say what is probed (`url`, `address`, `command`).
    fn validate_target(&self, key: &str, p: &mut Problems) {
        match &self.probe {
            Probe::Http(HttpProbe { url, .. }) | Probe::Postgres { url } | Probe::Redis { url } => {
                p.check(
                    one_url_source(&url.url, &url.url_env, &url.url_file)
                        .map_err(|m| err(format!("{key}.url"), m)),
                );
                if let Some(u) = &url.url {
                    let schemes: &[&str] = match self.probe.kind() {
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
            Probe::Tcp { address } => {
                if address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    p.push(err(
                        format!("{key}.address"),
                        "expected host:port, e.g. \"127.0.0.1:6379\"",
                    ));
                }
            }
            Probe::Command { argv, .. } => {
                if argv.is_empty() {
                    p.push(err(
                        format!("{key}.command"),
                        "expected a non-empty argv list, e.g. [\"pg_isready\", \"-q\"]",
                    ));
                }
            }
        }
    }

    fn validate(&self, key: &str, p: &mut Problems) {
        for k in &self.stray {
            p.push(err(
                format!("{key}.{k}"),
                format!("not a key of {} checks", self.probe.kind().as_str()),
            ));
        }
        self.validate_target(key, p);
        if let Probe::Http(h) = &self.probe {
            if let Some(ptr) = &h.json_pointer {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    p.push(err(
                        format!("{key}.json_pointer"),
                        "expected an RFC 6901 pointer starting with '/', e.g. \"/status\"",
                    ));
                }
                if h.json_equals.is_none() {
                    p.push(err(
                        format!("{key}.json_equals"),
                        "expected the value json_pointer must equal",
                    ));
                }
            }
            if let Some(why) = h.method.as_ref().and_then(Parsed::problem) {
                p.push(err(format!("{key}.method"), why));
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
