//! What each job did and will do, from local state and the schedule: the
//! data behind `drctl status`, the daemon's `/status` and `/metrics`.

use crate::base::error::Result;
use crate::base::values::Parsed;
use crate::config::LoadedConfig;
use crate::engine::restore::journal::RestoreRecord;
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
    /// Seconds between the schedule's current and next occurrence (the
    /// period "no success in two periods" is measured in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_period_seconds: Option<f64>,
    /// All-time run counts on this host by outcome.
    pub runs: BTreeMap<String, i64>,
    /// The newest restore (or undo) of this job on this host, an
    /// operator's or a drill's, with its phases and measured RTO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<RestoreRecord>,
    /// The job's safety copies on its server (`drctl status` looks them
    /// up; the daemon's `/status` does not connect to databases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_copies: Option<Vec<SafetyCopy>>,
    /// Why the safety copies could not be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_copies_error: Option<String>,
}

/// A database a restore replaced and kept (`<db>_pre_restore_<ts>`).
#[derive(Debug, Clone, Serialize)]
pub struct SafetyCopy {
    /// Its name.
    pub database: String,
    /// When the restore that made it ran (RFC 3339).
    pub made_at: String,
    /// Its size on the server.
    pub bytes: i64,
    /// When the next restore drops it (`safety_copy_keep`); never without.
    pub expires_at: Option<String>,
}

/// The safety copies of a postgres job's database, oldest first (each a
/// full copy of the database: a disk that fills with them is an incident).
pub async fn safety_copies(job: &crate::config::PostgresJob) -> Result<Vec<SafetyCopy>> {
    use crate::engine::restore::postgres;
    let target = crate::services::pg::job_target(job)?;
    let admin = target.with_database(&job.maintenance_db);
    let open = async {
        let tools = crate::services::pg::PgTools::for_job(job).await?;
        crate::services::pg::SqlSession::open(&tools, &admin).await
    };
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), open)
        .await
        .map_err(|_| {
            crate::Error::Other(format!("no answer from {} within 10s", target.display()))
        })??;
    let names = postgres::side_databases(&mut conn).await?;
    let mut out = Vec::new();
    for (name, made) in postgres::safety_copies(&target.database, &names) {
        let bytes: i64 = conn
            .scalar(&format!(
                "SELECT pg_database_size({})::text",
                crate::services::pg::quote_literal(&name)
            ))
            .await?
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        let made = made.and_utc();
        out.push(SafetyCopy {
            database: name,
            made_at: made.to_rfc3339(),
            bytes,
            expires_at: job
                .safety_copy_keep
                .and_then(|k| chrono::Duration::from_std(k).ok())
                .map(|k| (made + k).to_rfc3339()),
        });
    }
    Ok(out)
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
                .as_ref()
                .and_then(|p| p.next_after(now))
                .map(|t| t.to_rfc3339()),
            schedule_period_seconds: parsed
                .as_ref()
                .and_then(|p| p.period_at(now))
                .map(|d| d.num_milliseconds() as f64 / 1000.0),
            runs: state.run_counts(name).await?,
            last_restore: if job.is_backup() {
                crate::engine::restore::journal::recent(state, Some(name), None, 1)
                    .await?
                    .into_iter()
                    .next()
            } else {
                None
            },
            safety_copies: None,
            safety_copies_error: None,
        });
    }
    Ok(out)
}
