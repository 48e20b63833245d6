//! The `drills` table: every drill run with its phases and checks.

use super::checks::CheckResult;
use super::{DrillRecord, Phase};
use crate::base::error::Result;
use crate::services::state::State;
use sqlx::Row;

pub(super) async fn start(state: &State, drill: &str, job: &str, trigger: &str) -> Result<i64> {
    let r = sqlx::query(
        "INSERT INTO drills (drill, job, host, trigger, started_at, outcome) VALUES (?, ?, ?, ?, ?, 'running')",
    )
    .bind(drill)
    .bind(job)
    .bind(crate::base::host::name())
    .bind(trigger)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    Ok(r.last_insert_rowid())
}

pub(super) async fn finish(state: &State, id: i64, r: &DrillRecord) -> Result<()> {
    sqlx::query(
        "UPDATE drills SET finished_at = ?, outcome = ?, failed_phase = ?, error = ?, backup_id = ?, backup_age_seconds = ?, target = ?, phases = ?, total_seconds = ?, rto_seconds = ?, checks = ?, work_bytes = ? WHERE id = ?",
    )
    .bind(&r.finished_at)
    .bind(r.outcome)
    .bind(&r.failed_phase)
    .bind(r.error.as_deref().map(crate::base::secret::redact))
    .bind(&r.backup_id)
    .bind(r.backup_age_seconds)
    .bind(&r.target)
    .bind(serde_json::to_string(&r.phases).unwrap_or_else(|_| "[]".into()))
    .bind(r.total_seconds)
    .bind(r.rto_seconds)
    .bind(serde_json::to_string(&r.checks).unwrap_or_else(|_| "[]".into()))
    .bind(r.work_bytes.and_then(|b| i64::try_from(b).ok()))
    .bind(id)
    .execute(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    Ok(())
}

/// A row of `drills`; an outcome drctl does not know is an error, not a
/// guess.
fn record(r: &sqlx::sqlite::SqliteRow) -> Result<DrillRecord> {
    let phases: String = r.get("phases");
    let checks: String = r.get("checks");
    let outcome = r.try_get("outcome").map_err(|e| {
        crate::Error::unreadable(
            format!("drill run {}: unreadable outcome", r.get::<i64, _>("id")),
            e,
        )
    })?;
    Ok(DrillRecord {
        id: r.get("id"),
        drill: r.get("drill"),
        job: r.get("job"),
        host: r.get("host"),
        trigger: r.get("trigger"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        outcome,
        failed_phase: r.get("failed_phase"),
        error: r.get("error"),
        backup_id: r.get("backup_id"),
        backup_age_seconds: r.get("backup_age_seconds"),
        target: r.get("target"),
        phases: serde_json::from_str::<Vec<Phase>>(&phases).unwrap_or_default(),
        total_seconds: r.get("total_seconds"),
        rto_seconds: r.get("rto_seconds"),
        checks: serde_json::from_str::<Vec<CheckResult>>(&checks).unwrap_or_default(),
        swept: Vec::new(),
        repository: None,
        work_bytes: r
            .get::<Option<i64>, _>("work_bytes")
            .and_then(|b| u64::try_from(b).ok()),
    })
}

/// Drill runs, newest first; `since` is an RFC 3339 lower bound.
pub async fn list(
    state: &State,
    drill: Option<&str>,
    since: Option<&str>,
    limit: i64,
) -> Result<Vec<DrillRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM drills WHERE (?1 IS NULL OR drill = ?1) AND (?2 IS NULL OR started_at >= ?2) ORDER BY id DESC LIMIT ?3",
    )
    .bind(drill)
    .bind(since)
    .bind(limit)
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    rows.iter().map(record).collect()
}

/// The newest finished runs of drills of `job` that passed or only missed
/// their RTO (both restored everything), newest first.
pub async fn restored_for_job(state: &State, job: &str, limit: i64) -> Result<Vec<DrillRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM drills WHERE job = ?1 AND outcome IN ('passed', 'over_rto') ORDER BY id DESC LIMIT ?2",
    )
    .bind(job)
    .bind(limit)
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    rows.iter().map(record).collect()
}
