//! `[jobs.X.restore] verify`: after the data is back and the `after` hooks
//! started the application, the named `health` jobs prove the *service*
//! came back (R4's `curl -sf http://localhost:8080/health`). An application
//! takes a while to start, so each check is retried, with a growing pause,
//! until it passes or `verify_timeout` (shared by all of them) runs out.
//!
//! The checks run unrecorded and without the job's failure streak (a
//! restore's verification is not a scheduled run of the health job: it
//! neither moves its streak nor raises its alerts, and one failed probe is
//! a failure, not "1 of 2 before down"); their outcome is the restore's:
//! in its report, its journal row and its exit status.

use crate::config::{JobConfig, Kind, LoadedConfig};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One `verify` check after a restore.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRun {
    /// The health job.
    pub job: String,
    /// It passed before the deadline.
    pub ok: bool,
    /// How many times it ran.
    pub attempts: u32,
    /// Wall time until it passed or gave up.
    pub seconds: f64,
    /// The last attempt's summary (what was wrong, when it failed).
    pub summary: String,
}

/// The pause before attempt `attempt + 1` (1 s, 2 s, 4 s, then 5 s), cut
/// to what is `left` of the deadline; `None` once nothing is left (pure).
pub fn next_wait(attempt: u32, left: Duration) -> Option<Duration> {
    if left.is_zero() {
        return None;
    }
    let wait =
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(3)).min(Duration::from_secs(5));
    Some(wait.min(left))
}

/// Run each of `names` until it passes or the shared `timeout` ends.
pub async fn verify(
    cfg: &LoadedConfig,
    names: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Vec<VerifyRun> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    for name in names {
        out.push(one(cfg, name, deadline, cancel).await);
    }
    out
}

async fn one(
    cfg: &LoadedConfig,
    name: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) -> VerifyRun {
    let started = Instant::now();
    let mut run = VerifyRun {
        job: name.to_owned(),
        ok: false,
        attempts: 0,
        seconds: 0.0,
        summary: String::new(),
    };
    let Some(JobConfig {
        kind: Kind::Health(job),
        ..
    }) = cfg.config.jobs.get(name)
    else {
        // Config validation refuses this; kept as a failure, never a pass.
        run.summary = format!("{name} is not a health job");
        return run;
    };
    loop {
        run.attempts += 1;
        match crate::engine::jobs::health::probe_now(job, cancel).await {
            Ok(summary) => {
                run.ok = true;
                run.summary = summary;
            }
            Err(why) => run.summary = why,
        }
        run.seconds = started.elapsed().as_secs_f64();
        if run.ok || cancel.is_cancelled() {
            return run;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(wait) = next_wait(run.attempts, left) else {
            return run;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return run,
        }
    }
}

/// The first failed check, as a sentence.
pub fn failure(runs: &[VerifyRun]) -> Option<String> {
    runs.iter().find(|r| !r.ok).map(|r| {
        format!(
            "verify check {} still failing after {} attempts ({:.0}s): {}",
            r.job, r.attempts, r.seconds, r.summary
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_five_seconds_and_never_pass_the_deadline() {
        let plenty = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=6)
            .map(|a| next_wait(a, plenty).unwrap().as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5, 5]);
        assert_eq!(
            next_wait(3, Duration::from_millis(300)),
            Some(Duration::from_millis(300))
        );
        assert_eq!(next_wait(1, Duration::ZERO), None);
    }
}
