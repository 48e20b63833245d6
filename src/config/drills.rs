//! `[drills.NAME]`: timed restore drills (in the main file or in
//! `drills_dir/*.toml`, holding only `[drills.*]`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The backup job whose newest committed backup is restored.
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<SqlCheck>,
    /// Longest a check query may run.
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub check_timeout: Duration,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url_file: Option<PathBuf>,
    #[serde(default)]
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    pub sql: String,
    /// `>= 1`, `> 0`, `= 42`, `!= 0`, `< 5`, `<= 5`, or a value compared as text.
    pub expect: String,
}

impl DrillConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let t = &self.target;
        let sources = [
            t.server_url.is_some(),
            t.server_url_env.is_some(),
            t.server_url_file.is_some(),
            t.ephemeral,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources != 1 {
            return Err((
                "target",
                "expected exactly one of server_url_env, server_url, server_url_file, or ephemeral = true".into(),
            ));
        }
        if let Some(expr) = &self.schedule {
            crate::schedule::Schedule::parse(expr, self.timezone.as_deref())?;
        }
        if self.jobs == 0 {
            return Err(("jobs", "expected at least 1".into()));
        }
        for c in &self.checks {
            crate::values::Expect::parse(&c.expect).map_err(|m| ("checks.expect", m))?;
        }
        Ok(())
    }
}

/// `[reports.NAME]`: the DR drill report on a schedule, to alert channels
/// (email: HTML with a text alternative; Slack: a summary; webhook: JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSchedule {
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub channels: Vec<String>,
    /// The window the report covers.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub since: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
