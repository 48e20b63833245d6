//! Configuration: one TOML file, job files from `schedules_dir`, and
//! `DRCTL_...` environment overrides, merged with figment.
//!
//! Every error names the file, the key and what was expected, and all of
//! them are collected before anything runs (as `vector validate` does), so an
//! operator fixes a config in one pass rather than one error per attempt.

mod alerts;
mod drills;
mod encryption;
mod introspect;
mod jobs;
mod maintenance;
mod physical;
mod render;
mod repositories;
mod secret_source;
mod url_source;

pub use alerts::{
    AlertsConfig, ChannelConfig, EmailChannel, JobAlerts, PagerDutyChannel, PingChannel, Routes,
    SlackChannel, SmtpSecurity, WebhookChannel,
};
pub use drills::{DrillConfig, DrillTarget, ReportSchedule, SqlCheck};
pub use encryption::{Encryption, IDENTITY_ENV};
pub use jobs::{
    Common, Compression, ContainerRef, FilesJob, JobConfig, Kind, KindSpec, LockScope, PathEntry,
    PostgresJob, Problems, RedisJob, RestoreHooks, Scheduling, Storage, VerifyJob, VerifyScope,
    BACKUP_KINDS,
};
pub use maintenance::strip_userinfo;
pub use maintenance::{
    CertExpiryJob, DiskJob, Down, HealthCheck, HealthJob, HttpMethod, HttpProbe, Probe, ProbeType,
    PruneFilesJob, PruneImagesJob, RawHealthCheck, ReindexJob, Session, SessionSpec, VacuumJob,
};
pub use physical::{PhysicalJob, WalMode};
pub use render::render_masked;
pub use repositories::{LocalRepository, LockMode, ObjectLock, RepositoryConfig, S3Repository};
pub use secret_source::SecretSource;
pub use url_source::UrlSource;

use crate::base::error::{Error, Result};
use crate::base::ids::JobName;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where `drctl` looks when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/drctl/drctl.toml";

/// The configuration used when no file exists at all: a local repository and
/// SQLite state under `./drctl-data`, and one job `db` backing up `$DATABASE_URL`.
pub const EMBEDDED_DEFAULTS: &str = r#"
state_dir = "drctl-data"

[repositories.local]
type = "local"
path = "drctl-data/repository"

[jobs.db]
type = "postgres"
url_env = "DATABASE_URL"
schedule = "0 0 2 * * *"
repository = "local"
"#;

/// Top-level keys that `DRCTL_...` variables may override. Other `DRCTL_`
/// variables (`DRCTL_CONFIG`, `DRCTL_LOG`, test settings) are not config.
const ENV_KEYS: &[&str] = &[
    "state_dir",
    "schedules_dir",
    "history",
    "fleet_publish",
    "fleet_stale",
    "repositories",
    "jobs",
    "daemon",
    "alerts",
    "drills",
    "reports",
];

/// The whole configuration: the main file, job and drill files, and
/// `DRCTL_*` overrides merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SQLite state, locks and restore scratch space.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Optional directory of `*.toml` files holding more `[jobs.*]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules_dir: Option<PathBuf>,
    /// How long run history, finished alert deliveries and RPO transitions
    /// are kept in the state database (the daemon prunes hourly); counters
    /// and each job's newest run of every outcome are kept regardless.
    #[serde(default = "default_history", with = "humantime_serde")]
    pub history: std::time::Duration,
    /// How often the daemon may write its status (`_hosts/<host>.json`)
    /// into its repositories for `drctl fleet`: at most this often when
    /// something changed, every five of it otherwise. `"0s"` turns it off.
    #[serde(default = "default_fleet_publish", with = "humantime_serde")]
    pub fleet_publish: std::time::Duration,
    /// Alert (`host_stale:HOST`) when another host's status is older than
    /// this: its daemon or machine is down. Unset: no such alert.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub fleet_stale: Option<std::time::Duration>,
    /// Where backups are stored (`[repositories.NAME]`).
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// What runs (`[jobs.NAME]`).
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    /// The daemon's own settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The daemon's endpoint.
    #[serde(default)]
    pub http: HttpConfig,
    /// A PostgreSQL database shared by hosts for `lock = "cluster"` jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationConfig>,
    /// Channels, routes and timing of alerts.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Optional directory of `*.toml` files holding more `[drills.*]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills_dir: Option<PathBuf>,
    /// Restore drills (`[drills.NAME]`).
    #[serde(default)]
    pub drills: BTreeMap<String, DrillConfig>,
    /// Periodic DR reports (`[reports.NAME]`).
    #[serde(default)]
    pub reports: BTreeMap<String, ReportSchedule>,
}

/// `[coordination]`: a PostgreSQL database the hosts of a cluster share
/// for `lock = "cluster"` jobs (advisory locks and tick claims).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// The shared database: `url`, `url_env` or `url_file`.
    #[serde(flatten)]
    pub connection: UrlSource,
}

/// `[http]`: the daemon's /metrics, /health and /status endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the endpoint at all.
    #[serde(default = "yes_http")]
    pub enabled: bool,
    /// Loopback only: the endpoint has no authentication.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: default_listen(),
        }
    }
}

fn yes_http() -> bool {
    true
}

/// Not 9187 (postgres_exporter's, often on the same host): the Prometheus
/// project's default-port list has 9100-9999 fully allocated, so drctl
/// takes a port above that block.
pub const DEFAULT_HTTP_PORT: u16 = 10108;

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))
}

/// `[daemon]`: how the scheduler starts and stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// On SIGTERM, how long running jobs may take before they are cancelled.
    /// Keep systemd's `TimeoutStopSec` above it.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace_period: std::time::Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            grace_period: default_grace(),
        }
    }
}

fn default_grace() -> std::time::Duration {
    std::time::Duration::from_secs(90)
}

/// An unchanged fleet status is still rewritten this often (five
/// `fleet_publish` periods), so that staleness means "the daemon stopped",
/// not "nothing happened".
pub fn fleet_heartbeat(publish: std::time::Duration) -> std::time::Duration {
    publish.saturating_mul(5)
}

fn default_fleet_publish() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn default_history() -> std::time::Duration {
    std::time::Duration::from_secs(90 * 86400)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/drctl")
}

/// A loaded, validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged, validated configuration.
    pub config: Config,
    /// The files read, main file first; empty for the embedded defaults.
    pub files: Vec<PathBuf>,
    figment: Figment,
}

impl LoadedConfig {
    /// Load from `path`, or from [`DEFAULT_CONFIG_PATH`], or else the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (main, files) = match path {
            Some(p) => {
                if !p.is_file() {
                    return Err(Error::Config {
                        file: p.display().to_string(),
                        key: "-".into(),
                        message: "file not found (expected a readable TOML file)".into(),
                    });
                }
                (Figment::from(Toml::file_exact(p)), vec![p.to_path_buf()])
            }
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => (
                Figment::from(Toml::file_exact(DEFAULT_CONFIG_PATH)),
                vec![PathBuf::from(DEFAULT_CONFIG_PATH)],
            ),
            None => (Figment::from(Toml::string(EMBEDDED_DEFAULTS)), Vec::new()),
        };
        let mut loaded = LoadedConfig {
            config: Config {
                state_dir: default_state_dir(),
                schedules_dir: None,
                history: default_history(),
                fleet_publish: default_fleet_publish(),
                fleet_stale: None,
                repositories: BTreeMap::new(),
                jobs: BTreeMap::new(),
                daemon: DaemonConfig::default(),
                http: HttpConfig::default(),
                coordination: None,
                alerts: AlertsConfig::default(),
                drills_dir: None,
                drills: BTreeMap::new(),
                reports: BTreeMap::new(),
            },
            files,
            figment: main,
        };
        loaded.merge_job_files()?;
        loaded.figment = loaded
            .figment
            .clone()
            .merge(Env::prefixed("DRCTL_").split("__").filter(|k| {
                ENV_KEYS
                    .iter()
                    .any(|top| k.as_str().to_ascii_lowercase().starts_with(top))
            }));
        loaded.config = loaded.figment.extract::<Config>().map_err(|e| {
            let root = loaded.figment.extract::<figment::value::Dict>().ok();
            figment_error(e, loaded.main_file(), root.as_ref())
        })?;
        loaded.validate()?;
        Ok(loaded)
    }

    pub(crate) fn main_file(&self) -> String {
        self.files
            .first()
            .map_or_else(|| "<embedded defaults>".into(), |p| p.display().to_string())
    }

    /// What is valid but probably not meant, as (full key, explanation):
    /// alerts that would reach nobody. `config check` prints them and the
    /// daemon logs them at start; neither fails on them.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let a = &self.config.alerts;
        let mut out = Vec::new();
        if self.config.jobs.is_empty() {
            return out;
        }
        if a.channels.is_empty() {
            out.push((
                "alerts.channels".to_owned(),
                "no channel is configured: failed backups and RPO violations are recorded \
                 (drctl status, drctl alerts) but nobody is told; expected e.g. \
                 [alerts.channels.ops] type = \"email\" and [alerts.routes] critical = [\"ops\"]"
                    .to_owned(),
            ));
            return out;
        }
        for (sev, list, what) in [
            (
                "critical",
                &a.routes.critical,
                "failed backups and RPO violations",
            ),
            (
                "warning",
                &a.routes.warning,
                "warnings (a disk filling, a certificate expiring)",
            ),
        ] {
            if list.is_empty() {
                out.push((
                    format!("alerts.routes.{sev}"),
                    format!(
                        "empty, so {what} reach no channel although channels are configured; \
                         expected e.g. {sev} = [\"{}\"]",
                        a.channels.keys().next().map_or("ops", String::as_str)
                    ),
                ));
            }
        }
        out
    }

    /// Every `*_env` variable that is unset and every `*_file` that cannot
    /// be read, as config errors naming file and key. Checked by `config
    /// check`, at daemon start and on reload, not by every command: an
    /// operator's shell need not hold the service's secrets to list backups.
    pub fn unresolved_refs(&self) -> Vec<Error> {
        let mut out = Vec::new();
        let Ok(root) = self.figment.extract::<figment::value::Dict>() else {
            return out;
        };
        let mut refs = Vec::new();
        collect_refs(&root, "", &mut refs);
        let merged = self.figment.find_value("").ok();
        for (key, value) in refs {
            let problem = if key.ends_with("_env") {
                resolve_secret(None, Some(&value), None, "").err().map(|_| {
                    format!("environment variable {value} is not set (expected the value there)")
                })
            } else {
                resolve_secret(None, None, Some(Path::new(&value)), "")
                    .err()
                    .map(|e| {
                        format!(
                            "cannot read {value}: {}",
                            e.to_string().trim_start_matches(": ")
                        )
                    })
            };
            if let Some(message) = problem {
                out.push(Error::Config {
                    file: self.file_in(merged.as_ref(), &key),
                    key,
                    message,
                });
            }
        }
        out
    }

    /// The file that supplied `key`, for error messages.
    pub fn file_of(&self, key: &str) -> String {
        self.file_in(self.figment.find_value("").ok().as_ref(), key)
    }

    /// [`Self::file_of`] against a merged `root` computed once: figment
    /// merges every provider again for each lookup, which made a config
    /// with thousands of errors take minutes (quadratic). A key that is not
    /// in the config (an expected but missing field) takes its table's file.
    fn file_in(&self, root: Option<&figment::value::Value>, key: &str) -> String {
        let mut k = key;
        while let Some(root) = root {
            let source = root
                .find_ref(k)
                .and_then(|v| self.figment.get_metadata(v.tag()))
                .and_then(|m| m.source.as_ref());
            if let Some(s) = source {
                return match s {
                    figment::Source::File(p) => p.display().to_string(),
                    other => other.to_string(),
                };
            }
            match k.rfind('.') {
                Some(i) => k = &k[..i],
                None => break,
            }
        }
        self.main_file()
    }

    fn merge_job_files(&mut self) -> Result<()> {
        self.merge_dir("schedules_dir", "DRCTL_SCHEDULES_DIR", "jobs")?;
        self.merge_dir("drills_dir", "DRCTL_DRILLS_DIR", "drills")
    }

    /// Unset, `schedules_dir` is `schedules/` and `drills_dir` `drills/`
    /// next to the main config file (`/etc/drctl/schedules`), when that
    /// directory exists: a package drops job files there.
    fn default_dir(&self, section: &str) -> Option<PathBuf> {
        let name = if section == "jobs" {
            "schedules"
        } else {
            "drills"
        };
        let dir = self.files.first()?.parent()?.join(name);
        dir.is_dir().then_some(dir)
    }

    /// Merge `dir_key/*.toml` (sorted), each holding only `[section.*]`
    /// tables; a name defined twice is an error naming both files.
    fn merge_dir(&mut self, dir_key: &str, dir_env: &str, section: &str) -> Result<()> {
        let dir: Option<PathBuf> = self
            .figment
            .extract_inner(dir_key)
            .ok()
            .or_else(|| std::env::var_os(dir_env).map(PathBuf::from))
            .or_else(|| self.default_dir(section));
        let Some(dir) = dir else { return Ok(()) };
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::Config {
            file: self.file_of(dir_key),
            key: dir_key.into(),
            message: format!("cannot read directory {}: {e}", dir.display()),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        let mut defined: BTreeMap<String, String> = self
            .figment
            .extract_inner::<BTreeMap<String, toml::Value>>(section)
            .unwrap_or_default()
            .into_keys()
            .map(|k| (k, self.main_file()))
            .collect();
        for f in files {
            let one = Figment::from(Toml::file_exact(&f));
            let table: BTreeMap<String, toml::Value> = one
                .extract()
                .map_err(|e| figment_error(e, f.display().to_string(), None))?;
            if let Some(other) = table.keys().find(|k| *k != section) {
                return Err(Error::Config {
                    file: f.display().to_string(),
                    key: other.clone(),
                    message: format!(
                        "unknown key (expected only [{section}.NAME] tables in {dir_key} files)"
                    ),
                });
            }
            let names: Vec<String> = table
                .get(section)
                .and_then(|v| v.as_table())
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for name in names {
                if let Some(prev) = defined.insert(name.clone(), f.display().to_string()) {
                    return Err(Error::Config {
                        file: f.display().to_string(),
                        key: format!("{section}.{name}"),
                        message: format!(
                            "{} already defined in {prev} (expected each once)",
                            section.trim_end_matches('s')
                        ),
                    });
                }
            }
            self.figment = self.figment.clone().merge(one);
            self.files.push(f);
        }
        Ok(())
    }

    /// Every semantic error of the merged config (all of them, not the
    /// first), as one error naming the first's file and key.
    fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        let http = &self.config.http;
        if http.enabled && !http.listen.ip().is_loopback() {
            errors.push((
                "http.listen".to_string(),
                format!(
                    "{} is not a loopback address; the endpoint has no authentication (expected 127.0.0.1:PORT or [::1]:PORT, behind a reverse proxy for remote scrapes)",
                    http.listen
                ),
            ));
        }
        if self.config.history < std::time::Duration::from_secs(86400) {
            errors.push((
                "history".to_string(),
                "shorter than a day (expected e.g. \"90d\"; RPO windows and DR reports read this history)"
                    .to_string(),
            ));
        }
        let publish = self.config.fleet_publish;
        // Each period reads the state database and, with fleet_stale, the
        // repositories: a sub-second period would be a busy loop.
        if !publish.is_zero() && publish < std::time::Duration::from_secs(1) {
            errors.push((
                "fleet_publish".to_string(),
                "expected \"0s\" (off) or at least 1s (e.g. \"1m\")".to_string(),
            ));
        }
        if let Some(stale) = self.config.fleet_stale {
            if publish.is_zero() {
                errors.push((
                    "fleet_stale".to_string(),
                    "set while fleet_publish = \"0s\" turns publishing off (expected fleet_publish = \"1m\" or no fleet_stale)".to_string(),
                ));
            } else if stale <= fleet_heartbeat(publish) + publish {
                errors.push((
                    "fleet_stale".to_string(),
                    format!(
                        "{} is not longer than an idle host's longest silence ({}: five fleet_publish periods and one more); expected e.g. \"15m\"",
                        humantime::format_duration(stale),
                        humantime::format_duration(fleet_heartbeat(publish) + publish)
                    ),
                ));
            }
        }
        for (name, repo) in &self.config.repositories {
            let key = format!("repositories.{name}");
            if let Err(msg) = JobName::parse(name) {
                errors.push((key.clone(), msg));
            }
            if let Err((field, msg)) = repo.validate() {
                errors.push((format!("{key}.{field}"), msg));
            }
        }
        if let Some(c) = &self.config.coordination {
            if let Err(m) = c.connection.validate() {
                errors.push(("coordination.url".into(), m));
            }
        }
        let job_names: Vec<&str> = self.config.jobs.keys().map(String::as_str).collect();
        errors.extend(self.config.alerts.validate(&job_names));
        for (name, job) in &self.config.jobs {
            errors.extend(self.job_errors(name, job));
        }
        for (name, d) in &self.config.drills {
            errors.extend(self.drill_errors(name, d));
        }
        for (name, r) in &self.config.reports {
            errors.extend(self.report_errors(name, r));
        }
        self.one_error(errors)
    }

    /// `repository` and `copies` of `[jobs.NAME]` (`key`) that name no
    /// `[repositories.NAME]`.
    fn repository_errors(&self, key: &str, job: &JobConfig) -> Vec<(String, String)> {
        let known: Vec<&str> = self
            .config
            .repositories
            .keys()
            .map(String::as_str)
            .collect();
        let expected = if known.is_empty() {
            "none defined".into()
        } else {
            known.join(", ")
        };
        let named = job
            .repository()
            .map(|r| ("repository", r))
            .into_iter()
            .chain(job.copies().iter().map(|c| ("copies", c.as_str())));
        named
            .filter(|(_, r)| !self.config.repositories.contains_key(*r))
            .map(|(k, r)| {
                (
                    format!("{key}.{k}"),
                    format!("no repository named {r:?} (expected one of: {expected})"),
                )
            })
            .collect()
    }

    /// What is wrong with `[jobs.NAME]`, including references to other
    /// sections (repository, channels, coordination, verified jobs).
    fn job_errors(&self, name: &str, job: &JobConfig) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let key = format!("jobs.{name}");
        if let Some(a) = job.scheduling().alerts {
            for (sev, list) in [
                ("critical", &a.critical),
                ("warning", &a.warning),
                ("info", &a.info),
            ] {
                if let Some(list) = list {
                    if let Err(m) = self.config.alerts.check_route(list) {
                        errors.push((format!("{key}.alerts.{sev}"), m));
                    }
                }
            }
        }
        if let Err(msg) = JobName::parse(name) {
            errors.push((key.clone(), msg));
        }
        errors.extend(self.repository_errors(&key, job));
        if job.scheduling().lock == LockScope::Cluster && self.config.coordination.is_none() {
            errors.push((
                format!("{key}.lock"),
                "lock = \"cluster\" needs a [coordination] section with url_env (or url, url_file) naming a PostgreSQL database shared by the hosts".into(),
            ));
        }
        if let Kind::Verify(v) = &job.kind {
            for j in v.jobs.iter().flatten() {
                match self.config.jobs.get(j) {
                    Some(t) if t.repository().is_some() => {}
                    Some(t) => errors.push((
                        format!("{key}.jobs"),
                        format!(
                            "{j:?} is a {} job and stores no backups (expected a backup job)",
                            t.kind()
                        ),
                    )),
                    None => errors.push((format!("{key}.jobs"), format!("no job named {j:?}"))),
                }
            }
        }
        let verify = job
            .storage()
            .and_then(|s| s.restore.as_ref())
            .map_or(&[][..], |h| h.verify.as_slice());
        for (i, j) in verify.iter().enumerate() {
            let found = self.config.jobs.get(j);
            if !matches!(
                found,
                Some(JobConfig {
                    kind: Kind::Health(_),
                    ..
                })
            ) {
                errors.push((
                    format!("{key}.restore.verify[{i}]"),
                    match found {
                        Some(t) => format!("{j:?} is a {} job (expected a health job)", t.kind()),
                        None => format!("no job named {j:?} (expected a health job)"),
                    },
                ));
            }
        }
        let mut problems = Problems::default();
        job.validate(&mut problems);
        for (field, msg) in problems.into_inner() {
            errors.push((format!("{key}.{field}"), msg));
        }
        errors
    }

    fn drill_errors(&self, name: &str, d: &DrillConfig) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let key = format!("drills.{name}");
        if let Err(msg) = JobName::parse(name) {
            errors.push((key.clone(), msg));
        }
        match self.config.jobs.get(&d.job) {
            Some(
                j @ JobConfig {
                    kind: Kind::Postgres(_) | Kind::Redis(_) | Kind::PostgresPhysical(_),
                    ..
                },
            ) => {
                if let Some(r) = &d.repository {
                    if !j.repositories().contains(&r.as_str()) {
                        errors.push((
                            format!("{key}.repository"),
                            format!(
                                "job {:?} stores no backups in {r:?} (expected one of: {})",
                                d.job,
                                j.repositories().join(", ")
                            ),
                        ));
                    }
                }
            }
            Some(other) => errors.push((
                format!("{key}.job"),
                format!(
                    "{:?} is a {} job (expected a postgres, postgres_physical or redis backup job)",
                    d.job,
                    other.kind()
                ),
            )),
            None => errors.push((format!("{key}.job"), format!("no job named {:?}", d.job))),
        }
        let mut problems = Problems::default();
        let kind = match self.config.jobs.get(&d.job).map(|j| &j.kind) {
            Some(Kind::Redis(_)) => drills::DrilledKind::Redis,
            Some(Kind::PostgresPhysical(_)) => drills::DrilledKind::Physical,
            _ => drills::DrilledKind::Postgres,
        };
        d.validate(&mut problems, kind);
        for (field, msg) in problems.into_inner() {
            errors.push((format!("{key}.{field}"), msg));
        }
        errors
    }

    fn report_errors(&self, name: &str, r: &ReportSchedule) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let key = format!("reports.{name}");
        if let Err((field, msg)) = drills::schedule_problem(Some(&r.schedule), r.timezone.as_ref())
        {
            errors.push((format!("{key}.{field}"), msg));
        }
        if r.channels.is_empty() {
            errors.push((
                format!("{key}.channels"),
                "expected at least one channel".into(),
            ));
        }
        if let Err(m) = self.config.alerts.check_route(&r.channels) {
            errors.push((format!("{key}.channels"), m));
        }
        errors
    }

    /// `(key, message)` pairs as one config error (the first names its
    /// file and key; the others follow as "also:" lines).
    fn one_error(&self, errors: Vec<(String, String)>) -> Result<()> {
        if errors.is_empty() {
            return Ok(());
        }
        let root = self.figment.find_value("").ok();
        let mut it = errors.into_iter().map(|(key, message)| {
            let file = self.file_in(root.as_ref(), &key);
            Error::Config { file, key, message }
        });
        let first = it.next().expect("errors is not empty");
        let rest: Vec<String> = it.map(|e| e.to_string()).collect();
        if rest.is_empty() {
            Err(first)
        } else if let Error::Config { file, key, message } = first {
            Err(Error::Config {
                file,
                key,
                message: format!("{message}\n  also: {}", rest.join("\n  also: ")),
            })
        } else {
            Err(first)
        }
    }

    /// The named job, or a not-found error listing the jobs there are.
    pub fn job(&self, name: &str) -> Result<(JobName, &JobConfig)> {
        match self.config.jobs.get(name) {
            Some(j) => Ok((JobName::parse(name).map_err(Error::Other)?, j)),
            None => Err(Error::Config {
                file: self.main_file(),
                key: format!("jobs.{name}"),
                message: format!(
                    "no such job (expected one of: {})",
                    self.config
                        .jobs
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// The encryption that applies to a job's new backups: its own, else its repository's.
    pub fn encryption_of<'a>(&'a self, job: &'a JobConfig) -> Option<&'a Encryption> {
        job.own_encryption().or_else(|| {
            job.repository()
                .and_then(|r| self.config.repositories.get(r))
                .and_then(|r| r.encryption())
        })
    }

    /// The repository a job writes to.
    pub fn repository(&self, name: &str) -> Result<&RepositoryConfig> {
        self.config
            .repositories
            .get(name)
            .ok_or_else(|| Error::Config {
                file: self.main_file(),
                key: format!("repositories.{name}"),
                message: "no such repository".into(),
            })
    }
}

/// Turn figment's error (which may hold several) into one config error that
/// names the file and key of the first and lists the rest.
fn figment_error(
    err: figment::Error,
    fallback_file: String,
    root: Option<&figment::value::Dict>,
) -> Error {
    let mut parts = Vec::new();
    for e in err {
        let file = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map_or_else(
                || fallback_file.clone(),
                |s| match s {
                    figment::Source::File(p) => p.display().to_string(),
                    other => other.to_string(),
                },
            );
        let mut key = if e.path.is_empty() {
            "-".to_string()
        } else {
            e.path.join(".")
        };
        if let Some(field) = root.and_then(|r| field_of(r, &e.path, &e.kind)) {
            key = format!("{key}.{field}");
        }
        let mut message = match root.and_then(|r| unknown_job_key(r, &e.path, &e.kind)) {
            Some(m) => m,
            None => crate::base::secret::redact(&scrub(&e.kind.to_string())),
        };
        // Values from DRCTL_* variables are merged into the file's tables; say
        // which variables touch this key so the operator looks there too.
        let vars: Vec<String> = env_overrides()
            .into_iter()
            .filter(|(_, k)| k.starts_with(&key) || key.starts_with(k.as_str()))
            .map(|(var, _)| var)
            .collect();
        if !vars.is_empty() {
            message.push_str(&format!(
                " (set or overridden by environment: {})",
                vars.join(", ")
            ));
        }
        parts.push((file, key, message));
    }
    let (file, key, mut message) = parts.first().cloned().unwrap_or((
        fallback_file,
        "-".into(),
        "invalid configuration".into(),
    ));
    for (f, k, m) in parts.iter().skip(1) {
        message.push_str(&format!("\n  also: {f}: key `{k}`: {m}"));
    }
    Error::Config { file, key, message }
}

/// The field an error inside `path` is about, when serde could not say:
/// inside internally tagged enums (every job kind is one) it reports the
/// table (`jobs.appdb: expected u32`), not the field. Found by the value it
/// complains about, when exactly one field of the table holds it.
fn field_of(
    root: &figment::value::Dict,
    path: &[String],
    kind: &figment::error::Kind,
) -> Option<String> {
    use figment::error::Kind;
    use figment::value::Value;
    let (first, rest) = path.split_first()?;
    let mut table = match root.get(first)? {
        Value::Dict(_, d) => d,
        _ => return None,
    };
    for p in rest {
        table = match table.get(p)? {
            Value::Dict(_, d) => d,
            _ => return None,
        };
    }
    match kind {
        Kind::UnknownField(..) | Kind::Message(_) => {
            let f = unknown_field(kind)?;
            if table.contains_key(f) {
                return Some(f.to_owned());
            }
            // Inside a flattened kind serde loses the path: find the key
            // in the sub-tables (`restore.stop[0].svc`).
            let mut hits = Vec::new();
            nested_key(table, f, "", &mut hits);
            match hits.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        }
        Kind::UnknownVariant(v, _) => {
            let mut hits = Vec::new();
            holding(
                table,
                &figment::error::Actual::Str(v.clone()),
                "",
                &mut hits,
            );
            match hits.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        }
        Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _) => {
            let mut hits = Vec::new();
            holding(table, actual, "", &mut hits);
            match hits.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The unknown key of an error inside `[jobs.NAME]`: serde names it as
/// `UnknownField` (listing the kind's own keys only) or, for a kind that
/// flattens a shared block, as a bare message.
fn unknown_field(kind: &figment::error::Kind) -> Option<&str> {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(f, _) => Some(f),
        Kind::Message(m) => m
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(f, _)| f),
        _ => None,
    }
}

/// Dotted paths (arrays as `[i]`) of every `key` in a sub-table under `table`.
fn nested_key(table: &figment::value::Dict, key: &str, prefix: &str, out: &mut Vec<String>) {
    use figment::value::Value;
    fn walk(v: &Value, key: &str, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Dict(_, d) => {
                if d.contains_key(key) {
                    out.push(format!("{at}.{key}"));
                }
                for (k, v) in d {
                    walk(v, key, &format!("{at}.{k}"), out);
                }
            }
            Value::Array(_, a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, key, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    for (k, v) in table {
        let at = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        walk(v, key, &at, out);
    }
}

/// "unknown key" inside a job, with every key its kind takes: the kind's
/// own and those all kinds share (serde alone lists only one of the two).
fn unknown_job_key(
    root: &figment::value::Dict,
    path: &[String],
    kind: &figment::error::Kind,
) -> Option<String> {
    let [jobs, name] = path else { return None };
    let field = unknown_field(kind)?;
    let table = match root.get(jobs.as_str())? {
        figment::value::Value::Dict(_, d) => match d.get(name.as_str())? {
            figment::value::Value::Dict(_, t) => t,
            _ => return None,
        },
        _ => return None,
    };
    if !table.contains_key(field) {
        return None; // a sub-table's key: serde's own message says what it takes
    }
    let ty = table.get("type")?.as_str()?;
    let own = jobs::Kind::keys_of(ty)?;
    let shared = introspect::fields::<Common>();
    Some(format!(
        "unknown key `{field}` for a {ty} job: expected one of `{}`, or a key every job takes: `{}`",
        own.join("`, `"),
        shared.join("`, `")
    ))
}

/// Dotted paths under `table` whose value is `actual` (sub-tables included:
/// `retention = { keep_last = -2 }`).
fn holding(
    table: &figment::value::Dict,
    actual: &figment::error::Actual,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if v.to_actual() == *actual {
            out.push(key.clone());
        }
        if let figment::value::Value::Dict(_, d) = v {
            holding(d, actual, &key, out);
        }
    }
}

/// What a config error may say: the position and the key, never a value.
/// The TOML parser quotes the offending line (`password = "S3cret" x`) and
/// serde the offending value (`found string "S3cret"`): a secret in the
/// wrong place is still a secret, and this message reaches stderr and, on
/// SIGHUP, the journal. Long messages are cut (a 10 MB value stays home).
fn scrub(message: &str) -> String {
    const TYPES: [&str; 7] = [
        "string ",
        "signed int ",
        "unsigned int ",
        "float ",
        "char ",
        "bytes ",
        "map key ",
    ];
    // The parser's source snippet: "  |", "6 | password = ...", "  |   ^".
    let snippet = |l: &str| {
        let t = l.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut text = message
        .lines()
        .filter(|l| !snippet(l) && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    for t in TYPES {
        let mut from = 0;
        while let Some(at) = text[from..].find(t).map(|i| i + from) {
            let value_at = at + t.len();
            let Some(quote) = text[value_at..]
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '`')
            else {
                from = value_at;
                continue;
            };
            // The value runs to its closing quote before ", expected", or
            // to the last quote.
            let tail = &text[value_at + 1..];
            let end = tail
                .find(&format!("{quote}, expected"))
                .or_else(|| tail.rfind(quote))
                .map_or(text.len(), |e| value_at + 1 + e + 1);
            text.replace_range(value_at..end, "(value not shown)");
            from = value_at;
        }
    }
    const MAX: usize = 600;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// `DRCTL_*` variables that override config keys, with the key each sets.
fn env_overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(var, _)| {
            let key = var
                .strip_prefix("DRCTL_")?
                .to_ascii_lowercase()
                .replace("__", ".");
            ENV_KEYS
                .iter()
                .any(|top| key.starts_with(top))
                .then_some((var, key))
        })
        .collect()
}

/// `(key, value)` of every string `*_env` / `*_file` setting under `dict`.
fn collect_refs(dict: &figment::value::Dict, prefix: &str, out: &mut Vec<(String, String)>) {
    use figment::value::Value;
    for (k, v) in dict {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Dict(_, d) => collect_refs(d, &key, out),
            Value::Array(_, items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Dict(_, d) = item {
                        collect_refs(d, &format!("{key}.{i}"), out);
                    }
                }
            }
            // An age identity is needed by restores only, and a backup host
            // should not hold one: its absence is no error here.
            Value::String(_, _) if k == "identity_file" => {}
            Value::String(_, s) if k.ends_with("_env") || k.ends_with("_file") => {
                out.push((key, s.clone()));
            }
            _ => {}
        }
    }
}

/// Read a secret named by a `*_env` / `*_file` pair or an inline value.
/// Relative `*_file` paths resolve against `$CREDENTIALS_DIRECTORY` when
/// systemd provides one (`LoadCredential=`).
pub fn resolve_secret(
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> Result<crate::base::secret::Secret> {
    resolve_secret_as(inline, env, file, what, crate::base::secret::Secret::new)
}

/// [`resolve_secret`] wrapping the value with `wrap` (a URL registers
/// only its password for redaction).
pub fn resolve_secret_as(
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
    wrap: fn(String) -> crate::base::secret::Secret,
) -> Result<crate::base::secret::Secret> {
    if let Some(v) = inline {
        return Ok(wrap(v.to_owned()));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(wrap(v.trim().to_owned())),
            _ => Err(Error::Other(format!(
                "{what}: environment variable {var} is not set (expected the value there)"
            ))),
        };
    }
    if let Some(path) = file {
        let path = match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if path.is_relative() => Path::new(&dir).join(path),
            _ => path.to_path_buf(),
        };
        let v = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("{what}: reading {}", path.display()), e))?;
        return Ok(wrap(v.trim().to_owned()));
    }
    Err(Error::Other(format!("{what}: no value configured")))
}

#[cfg(test)]
mod tests;
