//! Cluster locks: for `lock = "cluster"` jobs, hosts sharing a
//! `[coordination]` PostgreSQL database agree on who runs.
//!
//! Two mechanisms, both in that database:
//! - a session-level advisory lock, keyed by the job name, held for the
//!   whole run, so runs never overlap across hosts;
//! - a claim row per scheduled tick (`drctl_tick_claims`), inserted with
//!   `ON CONFLICT DO NOTHING`, so a short run finished by one host before
//!   another host's tick arrives is still not repeated: exactly one host
//!   runs each tick. (Hosts' clocks must agree to within a tick: NTP.)
//!
//! The holder is identified by `application_name` (`drctl:<host>:<pid>`),
//! so the hosts that lose can record who has it.

use crate::base::error::{Error, Result};
use crate::config::CoordinationConfig;
use crate::services::pg::PgTarget;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions, Connection};

/// Holds the advisory lock until dropped (the connection closes).
pub struct ClusterLock {
    _conn: sqlx::PgConnection,
}

fn lock_key(job: &str) -> i64 {
    let d = Sha256::digest(format!("drctl:job:{job}").as_bytes());
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn me() -> String {
    format!("drctl:{}:{}", crate::base::host::name(), std::process::id())
}

impl ClusterLock {
    /// Take the job's cluster lock (and claim `tick`, when given), or say who holds it.
    pub async fn try_acquire(
        c: &CoordinationConfig,
        job: &str,
        tick: Option<DateTime<Utc>>,
    ) -> Result<std::result::Result<ClusterLock, String>> {
        let url = c.connection.resolve("coordination database URL")?;
        let target = PgTarget::parse(url.expose())?;
        let mut conn = target
            .connect_options()
            .application_name(&me())
            .connect()
            .await
            .map_err(|e| {
                Error::pg(
                    format!(
                        "connecting to the coordination database {}",
                        target.display()
                    ),
                    e,
                )
            })?;
        let key = lock_key(job);
        // The holder may release between our failed try and the look-up of
        // who it was: then simply try again (the tick claim still decides).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| Error::pg("taking the cluster lock", e))?;
            if got {
                break;
            }
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
                   AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1 LIMIT 1",
            )
            .bind(key)
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| Error::pg("finding the cluster lock holder", e))?;
            match holder {
                Some(h) => return Ok(Err(format!("held by {h}"))),
                None if attempt >= 5 => {
                    return Ok(Err("held by another host (it kept changing hands)".into()))
                }
                None => continue,
            }
        }
        if let Some(tick) = tick {
            if let Some(h) = claim_tick(&mut conn, job, tick).await? {
                return Ok(Err(format!(
                    "tick {} already run by {h}",
                    tick.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
        }
        Ok(Ok(ClusterLock { _conn: conn }))
    }
}

/// Claim `tick` of `job` for this host; the holder of an earlier claim
/// when another host ran it already (a tick runs once per cluster even
/// when the lock changed hands in between).
async fn claim_tick(
    conn: &mut sqlx::PgConnection,
    job: &str,
    tick: DateTime<Utc>,
) -> Result<Option<String>> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| Error::pg("claiming the tick", e))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS drctl_tick_claims (job text NOT NULL, tick timestamptz NOT NULL, holder text NOT NULL,
           claimed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, tick))",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| Error::pg("preparing tick claims", e))?;
    let won = sqlx::query("INSERT INTO drctl_tick_claims (job, tick, holder) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(job)
        .bind(tick)
        .bind(me())
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::pg("claiming the tick", e))?
        .rows_affected()
        == 1;
    let holder: Option<String> = if won {
        None
    } else {
        sqlx::query_scalar("SELECT holder FROM drctl_tick_claims WHERE job = $1 AND tick = $2")
            .bind(job)
            .bind(tick)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| Error::pg("reading the tick claim", e))?
    };
    // Old claims are history nobody needs.
    sqlx::query(
        "DELETE FROM drctl_tick_claims WHERE job = $1 AND tick < now() - interval '7 days'",
    )
    .bind(job)
    .execute(&mut *tx)
    .await
    .map_err(|e| Error::pg("pruning tick claims", e))?;
    tx.commit()
        .await
        .map_err(|e| Error::pg("claiming the tick", e))?;
    Ok(holder)
}
