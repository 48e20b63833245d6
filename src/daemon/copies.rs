//! The daemon's side of copies (`engine::copy`): a run copies its new
//! backup itself; this worker makes up for what failed. At start it syncs
//! every copy repository of every job (a daemon killed mid-copy left a
//! backup without its copy); afterwards it retries each `(job, repository)`
//! with an open `copy_failed` alert, with backoff from the job's
//! `retry_delay`, doubling up to an hour. A physical job's copies are
//! synced every [`WAL_EVERY`] besides, so their WAL follows the primary's
//! archive between base backups. A copy already being made by a run (the
//! copy lock) is left to it.

use super::Daemon;
use crate::engine::copy;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest wait between two retries of one copy.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often open alerts are looked at when nothing is due.
const POLL: Duration = Duration::from_secs(15);
/// How often a physical job's new WAL goes to its copies (between base
/// backups, which copy it too): a copy restores to within this of the
/// primary's archive.
const WAL_EVERY: Duration = Duration::from_secs(60);

/// When to retry one copy, and the wait after the next failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Backoff {
    pub(super) next: Instant,
    pub(super) delay: Duration,
}

/// The pure backoff rule: the first failure waits `first`; each further
/// one doubles the wait, up to [`MAX_BACKOFF`].
pub(super) fn after_failure(prev: Option<Backoff>, first: Duration, now: Instant) -> Backoff {
    let delay = match prev {
        Some(b) => (b.delay * 2).min(MAX_BACKOFF),
        None => first.clamp(Duration::from_secs(1), MAX_BACKOFF),
    };
    Backoff {
        next: now + delay,
        delay,
    }
}

pub(super) async fn worker(d: Arc<Daemon>) {
    let mut backoff: BTreeMap<(String, String), Backoff> = BTreeMap::new();
    let mut wal_synced: BTreeMap<(String, String), Instant> = BTreeMap::new();
    let mut first = true;
    loop {
        let cfg = d.config();
        let open: BTreeSet<String> = match crate::services::alerts::active(&d.state).await {
            Ok(rows) => rows
                .into_iter()
                .filter(|r| r.kind == "copy_failed")
                .map(|r| r.key)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read open alerts to retry copies");
                BTreeSet::new()
            }
        };
        let now = Instant::now();
        for (job, jc) in &cfg.config.jobs {
            for repo in jc.copies() {
                if d.stopping.is_cancelled() {
                    return;
                }
                let k = (job.clone(), repo.clone());
                let wal_due = matches!(jc.kind, crate::config::Kind::PostgresPhysical(_))
                    && !backoff.contains_key(&k)
                    && wal_synced
                        .get(&k)
                        .is_none_or(|t| now.duration_since(*t) >= WAL_EVERY);
                let due = first
                    || wal_due
                    || (open.contains(&copy::alert_key(job, repo))
                        && backoff.get(&k).is_none_or(|b| b.next <= now));
                if !due {
                    continue;
                }
                let Ok(Some(_lock)) = copy::lock(&cfg, job, false).await else {
                    continue;
                };
                wal_synced.insert(k.clone(), Instant::now());
                let ok = match copy::sync_all(&cfg, &d.state, job, Some(repo), None).await {
                    Ok(reports) => reports.iter().all(|r| r.problems().is_none()),
                    Err(e) => {
                        tracing::warn!(job = %job, repository = %repo, error = %e, "copy retry failed");
                        false
                    }
                };
                if ok {
                    backoff.remove(&k);
                } else {
                    let b = after_failure(
                        backoff.get(&k).copied(),
                        jc.common.retry_delay,
                        Instant::now(),
                    );
                    tracing::info!(job = %job, repository = %repo, retry_in = ?b.delay, "copy will be retried");
                    backoff.insert(k, b);
                }
            }
        }
        first = false;
        let wait = backoff
            .values()
            .map(|b| b.next.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(POLL)
            .clamp(Duration::from_millis(200), POLL);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = d.stopping.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_retry_delay_up_to_an_hour() {
        let now = Instant::now();
        let b = after_failure(None, Duration::from_secs(30), now);
        assert_eq!(b.delay, Duration::from_secs(30));
        assert_eq!(b.next, now + Duration::from_secs(30));
        let b = after_failure(Some(b), Duration::from_secs(30), now);
        assert_eq!(b.delay, Duration::from_secs(60));
        let mut b = b;
        for _ in 0..20 {
            b = after_failure(Some(b), Duration::from_secs(30), now);
        }
        assert_eq!(b.delay, MAX_BACKOFF);
        // A zero retry_delay still waits a second: no busy loop.
        assert_eq!(
            after_failure(None, Duration::ZERO, now).delay,
            Duration::from_secs(1)
        );
    }
}
