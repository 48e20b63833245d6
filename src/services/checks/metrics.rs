//! Metric values produced by maintenance and check runs, kept in SQLite so
//! that runs made by `drctl run` count and a daemon restart loses nothing;
//! the daemon's `/metrics` reads them at scrape time.

use super::Sample;
use crate::base::error::Result;
use crate::services::state::State;
use sqlx::Row;

/// Every metric a check kind may produce: name, help, counter.
pub const HELP: &[(&str, &str, bool)] = &[
    (
        "drctl_cert_expiry_seconds",
        "Seconds until the certificate expires (negative: expired), as of the last check run",
        false,
    ),
    (
        "drctl_cert_not_after_timestamp_seconds",
        "When the certificate expires (Unix time): alert on `... - time() < 14 * 86400`, exact between check runs",
        false,
    ),
    (
        "drctl_health_up",
        "1 if the health check is up (after its thresholds), 0 if down",
        false,
    ),
    (
        "drctl_disk_used_ratio",
        "Used share of the mount's space, as df counts it",
        false,
    ),
    (
        "drctl_disk_inodes_used_ratio",
        "Used share of the mount's inodes",
        false,
    ),
    (
        "drctl_vacuum_dead_tuples_removed",
        "Dead tuples removed by vacuum jobs",
        true,
    ),
    (
        "drctl_reindex_bytes_freed",
        "Index bytes freed by reindex jobs",
        true,
    ),
    (
        "drctl_prune_bytes_freed",
        "Bytes freed by prune_files and prune_images jobs",
        true,
    ),
    (
        "drctl_check_result",
        "Verdict of the job's last run: 0 ok, 1 warning, 2 critical",
        false,
    ),
];

/// One stored value.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Metric family name (`drctl_...`).
    pub name: String,
    /// The job that measured it (a metric of a job removed from the config
    /// is not exported).
    pub job: String,
    /// Labels besides `job`.
    pub labels: Vec<(String, String)>,
    /// The sample; for a counter, the total so far.
    pub value: f64,
    /// A counter (summed across runs) rather than a gauge (last value).
    pub counter: bool,
}

/// Replace `job`'s gauges with this run's and add its counters.
pub async fn record(state: &State, job: &str, samples: &[Sample]) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut tx = state.pool().begin().await.map_err(|e| state.err(e))?;
    sqlx::query("DELETE FROM metric_values WHERE job = ? AND counter = 0")
        .bind(job)
        .execute(&mut *tx)
        .await
        .map_err(|e| state.err(e))?;
    for s in samples {
        let labels = serde_json::to_string(&s.labels).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO metric_values (name, labels, job, counter, value, updated_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name, labels) DO UPDATE SET
               value = CASE WHEN excluded.counter = 1 THEN metric_values.value + excluded.value ELSE excluded.value END,
               job = excluded.job, counter = excluded.counter, updated_at = excluded.updated_at",
        )
        .bind(s.name)
        .bind(labels)
        .bind(job)
        .bind(s.counter)
        .bind(s.value)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| state.err(e))?;
    }
    tx.commit().await.map_err(|e| state.err(e))
}

/// Every stored value, for `/metrics`.
pub async fn all(state: &State) -> Result<Vec<Stored>> {
    let rows =
        sqlx::query("SELECT name, job, labels, value, counter FROM metric_values ORDER BY name")
            .fetch_all(state.pool())
            .await
            .map_err(|e| state.err(e))?;
    rows.into_iter()
        .map(|r| {
            let labels: String = r.try_get("labels")?;
            Ok(Stored {
                name: r.try_get("name")?,
                job: r.try_get("job")?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                value: r.try_get("value")?,
                counter: r.try_get("counter")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| state.err(e))
}
