//! `[drills.NAME]`: timed restore drills (in the main file or in
//! `drills_dir/*.toml`, holding only `[drills.*]`).

use crate::base::schedule::CronExpr;
use crate::base::values::{Expect, Parsed};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[drills.NAME]`: restore a job's backup somewhere harmless, check it,
/// time it against the RTO, and clean up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The backup job whose newest committed backup is restored.
    pub job: String,
    /// When the daemon runs it (cron); without one it runs on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Parsed<CronExpr>>,
    /// IANA time zone of the schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Parsed<Tz>>,
    /// Where the backup is restored (postgres jobs; a redis drill takes
    /// none: it starts a throwaway redis-server).
    #[serde(default)]
    pub target: DrillTarget,
    /// Recovery time objective: a drill slower than this is marked over-RTO.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub rto: Option<Duration>,
    /// Parallel pg_restore jobs.
    #[serde(default = "one")]
    pub jobs: usize,
    /// SQL whose answers must meet expectations after the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<SqlCheck>,
    /// Longest a check query may run.
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub check_timeout: Duration,
    /// A drill of a `postgres_physical` job: the point restored to,
    /// `random` (default: anywhere inside the window the archive can
    /// restore), `latest`, or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A drill of a `postgres_physical` job: the database its SQL checks
    /// run in (default: the job's `marker_database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Restore from this repository only (one of the job's `copies`, so
    /// the offsite copy is proven restorable, not only the local one).
    /// Default: the newest backup in any of the job's repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

fn one() -> usize {
    1
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Where the scratch database lives: a server (a fresh database is created
/// there and dropped after), or a throwaway local cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillTarget {
    /// A server to restore into (a scratch database is created there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// `server_url` from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url_env: Option<String>,
    /// `server_url` from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url_file: Option<PathBuf>,
    /// A throwaway cluster made with initdb for each drill, on this host.
    #[serde(default)]
    pub ephemeral: bool,
    /// A scratch database on the job's own server, reached as the job
    /// reaches it: for a job in a container, inside it (its tools, no
    /// port), the one place such a job's backups are sure to restore.
    #[serde(default)]
    pub job_server: bool,
}

/// One SQL check of a drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// A query returning one value.
    pub sql: String,
    /// `>= 1`, `> 0`, `= 42`, `!= 0`, `< 5`, `<= 5`, or a value compared as text.
    pub expect: Parsed<Expect>,
}

/// What kind of job a drill restores, for its validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrilledKind {
    /// A logical backup into a scratch database.
    Postgres,
    /// An RDB into a throwaway redis-server.
    Redis,
    /// A point-in-time restore into a throwaway data directory.
    Physical,
}

impl DrillConfig {
    /// Checks that depend on the kind of job drilled.
    pub(crate) fn validate(&self, p: &mut super::Problems, kind: DrilledKind) {
        let redis = kind == DrilledKind::Redis;
        let t = &self.target;
        let sources = [
            t.server_url.is_some(),
            t.server_url_env.is_some(),
            t.server_url_file.is_some(),
            t.ephemeral,
            t.job_server,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if redis {
            if sources != 0 {
                p.push((
                    "target".into(),
                    "a drill of a redis job takes no target (it starts a throwaway redis-server on a free loopback port)".into(),
                ));
            }
            if !self.checks.is_empty() {
                p.push((
                    "checks".into(),
                    "a drill of a redis job runs no SQL checks (it compares key counts with the backup's manifest)".into(),
                ));
            }
        } else if kind == DrilledKind::Physical {
            if sources != 0 {
                p.push((
                    "target".into(),
                    "a drill of a postgres_physical job takes no target (it recovers into a throwaway data directory under state_dir)".into(),
                ));
            }
        } else if sources != 1 {
            p.push((
                "target".into(),
                "expected exactly one of server_url_env, server_url, server_url_file, ephemeral = true, or job_server = true".into(),
            ));
        }
        if kind != DrilledKind::Physical && (self.at.is_some() || self.database.is_some()) {
            p.push((
                if self.at.is_some() { "at" } else { "database" }.into(),
                "only a drill of a postgres_physical job takes it".into(),
            ));
        }
        if let Some(at) = self.at.as_deref() {
            if !matches!(at, "random" | "latest")
                && chrono::DateTime::parse_from_rfc3339(at).is_err()
            {
                p.push((
                    "at".into(),
                    "expected \"random\", \"latest\" or an RFC 3339 time (2026-12-01T03:14:00Z)"
                        .into(),
                ));
            }
        }
        p.check(schedule_problem(
            self.schedule.as_ref(),
            self.timezone.as_ref(),
        ));
        if self.jobs == 0 {
            p.push(("jobs".into(), "expected at least 1".into()));
        }
        for c in &self.checks {
            if let Some(why) = c.expect.problem() {
                p.push(("checks.expect".into(), why.to_owned()));
            }
        }
    }
}

/// `[reports.NAME]`: the DR drill report on a schedule, to alert channels
/// (email: HTML with a text alternative; Slack: a summary; webhook: JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSchedule {
    /// When the report is sent (cron, in `timezone`).
    pub schedule: Parsed<CronExpr>,
    /// IANA time zone of the schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Parsed<Tz>>,
    /// Alert channels the report goes to.
    pub channels: Vec<String>,
    /// The window the report covers.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub since: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// The first of a `schedule` / `timezone` pair that did not parse, with
/// the parser's message.
pub(crate) fn schedule_problem(
    schedule: Option<&Parsed<CronExpr>>,
    timezone: Option<&Parsed<Tz>>,
) -> Result<(), (&'static str, String)> {
    if let Some(why) = schedule.and_then(Parsed::problem) {
        return Err(("schedule", why.to_owned()));
    }
    if let Some(why) = timezone.and_then(Parsed::problem) {
        return Err(("timezone", why.to_owned()));
    }
    Ok(())
}
