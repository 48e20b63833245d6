//! What each job did and will do, from local state and the schedule: the
//! data behind `drctl status`, the daemon's `/status` and `/metrics`.

use crate::base::error::Result;
use crate::base::values::Parsed;
use crate::config::LoadedConfig;
use crate::services::state::{RunRecord, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// One job as `drctl status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// Its kind.
    pub kind: String,
    /// Its cron schedule, if any.
    pub schedule: Option<String>,
    /// The zone the schedule is read in.
    pub timezone: String,
    /// The newest run.
    pub last_run: Option<RunRecord>,
    /// How long it took.
    pub last_run_seconds: Option<f64>,
    /// When it last succeeded.
    pub last_success: Option<String>,
    /// Stored bytes of the last committed backup.
    pub last_backup_bytes: Option<i64>,
    /// When it runs next (None: no schedule).
    pub next_run: Option<String>,
    /// All-time run counts on this host by outcome.
    pub runs: BTreeMap<String, i64>,
}

/// Seconds between a run's start and end, if it ended.
pub fn run_seconds(r: &RunRecord) -> Option<f64> {
    let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok();
    let (a, b) = (parse(&r.started_at)?, parse(r.finished_at.as_deref()?)?);
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// Every configured job's status at `now`.
pub async fn jobs(cfg: &LoadedConfig, state: &State, now: DateTime<Utc>) -> Result<Vec<JobStatus>> {
    let mut out = Vec::new();
    for (name, job) in &cfg.config.jobs {
        let s = job.scheduling();
        let parsed = s.schedule().and_then(Result::ok);
        let last_run = state.runs(Some(name), 1).await?.into_iter().next();
        out.push(JobStatus {
            job: name.clone(),
            kind: job.kind().into(),
            schedule: s.schedule.map(|e| e.text().to_owned()),
            timezone: s.timezone.map_or("UTC", Parsed::text).into(),
            last_run_seconds: last_run.as_ref().and_then(run_seconds),
            last_run,
            last_success: state.last_success(name).await?.map(|t| t.to_rfc3339()),
            last_backup_bytes: state.last_backup_bytes(name).await?,
            next_run: parsed
                .and_then(|p| p.next_after(now))
                .map(|t| t.to_rfc3339()),
            runs: state.run_counts(name).await?,
        });
    }
    Ok(out)
}
