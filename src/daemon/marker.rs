//! `marker = true` on a `postgres_physical` job: the daemon writes one row
//! every `marker_interval` into `drctl_marker` (created if missing) in the
//! job's `marker_database`. The rows travel in the WAL like any data, so a
//! point-in-time drill can prove that its restore stopped exactly at its
//! target: the newest row at or before it is recent, and none is after.

use super::Daemon;
use crate::base::error::Result;
use crate::config::{Kind, PhysicalJob};
use crate::services::pg::{quote_literal, PgTools, SqlSession};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Rows older than this are deleted as new ones are written.
const KEEP_DAYS: u32 = 400;

pub(super) async fn worker(d: Arc<Daemon>) {
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let cfg = d.config();
        let now = Instant::now();
        for (name, j) in &cfg.config.jobs {
            let Kind::PostgresPhysical(p) = &j.kind else {
                continue;
            };
            if !p.marker {
                continue;
            }
            let next = due.entry(name.clone()).or_insert(now);
            if *next > now {
                continue;
            }
            *next = now + p.marker_interval;
            if let Err(e) = write(p).await {
                tracing::warn!(job = %name, error = %e, "cannot write the drctl_marker row");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = d.stopping.cancelled() => return,
        }
    }
}

async fn write(job: &PhysicalJob) -> Result<()> {
    let target =
        crate::engine::jobs::postgres_physical::target(job)?.with_database(&job.marker_database);
    let tools = PgTools::locate(job.pg_bindir.as_deref());
    let mut s = SqlSession::open(&tools, &target).await?;
    s.execute(
        "CREATE TABLE IF NOT EXISTS drctl_marker (at timestamptz PRIMARY KEY, host text NOT NULL)",
    )
    .await?;
    s.execute(&format!(
        "INSERT INTO drctl_marker (at, host) VALUES (clock_timestamp(), {}) ON CONFLICT DO NOTHING",
        quote_literal(&crate::base::host::name())
    ))
    .await?;
    s.execute(&format!(
        "DELETE FROM drctl_marker WHERE at < now() - interval '{KEEP_DAYS} days'"
    ))
    .await?;
    s.close().await
}
