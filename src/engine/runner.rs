//! Running a job by name, as both `drctl run` and the daemon do: take the
//! host lock, run the kind, and record a skip when another run holds it.

use crate::base::error::Result;
use crate::base::manifest::Manifest;
use crate::base::progress::Progress;
use crate::config::{LoadedConfig, LockScope};
use crate::services::coordination::ClusterLock;
use crate::services::lock::HostLock;
use crate::services::state::State;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a job run produced, by kind.
#[derive(Debug)]
pub enum Outcome {
    /// A backup was committed.
    Committed(Box<Manifest>),
    /// A check job (verify) ran and passed.
    Checked(Box<crate::engine::verify::Summary>),
    /// A maintenance or check kind ran; its verdict may be warning or critical.
    Report(Box<crate::services::checks::Report>),
    /// Another run of the job holds the host lock; recorded as skipped.
    Skipped(String),
}

/// How [`run_alerted`] retries a failed run.
pub struct Attempts {
    /// Further attempts after a failure (the job's `retries`; 0 for `drctl run`).
    pub retries: u32,
    /// The first wait; it doubles, up to an hour.
    pub retry_delay: std::time::Duration,
    /// Stop waiting between attempts when this is cancelled (shutdown).
    pub stopping: CancellationToken,
    /// What a backup made by these attempts is marked with (`drctl run
    /// --label --keep-for`); scheduled runs mark nothing.
    pub mark: crate::base::manifest::Mark,
}

/// What a long-running caller (the daemon) keeps when the state database
/// cannot: a failure it never recorded, an alert it refused. `drctl run`
/// keeps nothing (its exit status says it all).
pub trait Keeper: Send + Sync {
    /// A final failure that never reached the state database.
    fn unrecorded(&self, _job: &str, _error: &str) {}
    /// A failure whose alert could not be queued.
    fn alert_refused(&self, _job: &str, _error: String) {}
    /// A failure of `job` kept earlier, to raise before this outcome.
    fn refused(&self, _job: &str) -> Option<String> {
        None
    }
    /// That failure has been queued at last.
    fn refused_raised(&self, _job: &str) {}
}

/// Keeps nothing.
pub struct NoKeeper;
impl Keeper for NoKeeper {}

/// Run a job as both `drctl run` and the daemon do: the start ping, the
/// attempts (with backoff), and the final outcome's alerts; a failure is
/// checked against the run records, and what the state database did not
/// take goes to `keeper`.
#[allow(clippy::too_many_arguments)]
pub async fn run_alerted(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    trigger: &str,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
    tick: Option<DateTime<Utc>>,
    attempts: &Attempts,
    keeper: &dyn Keeper,
) -> Result<Outcome> {
    let alerter = crate::services::alerts::Alerter::new(cfg, state);
    alerter.job_started(name).await;
    let began = Utc::now();
    let mut delay = attempts.retry_delay;
    let mut attempt = 0;
    let result = loop {
        let result = run_job(
            cfg,
            state,
            name,
            trigger,
            progress.clone(),
            cancel.child_token(),
            // Only the first attempt claims the tick; retries run under the claim it won.
            if attempt == 0 { tick } else { None },
            &attempts.mark,
        )
        .await;
        match &result {
            Err(e) if attempt < attempts.retries && !matches!(e, crate::Error::Interrupted(_)) => {
                tracing::warn!(job = name, attempt = attempt + 1, retry_in = ?delay, error = %crate::base::secret::redact(&e.to_string()), "run failed; retrying");
                let stopped = tokio::select! {
                    () = tokio::time::sleep(delay) => false,
                    () = attempts.stopping.cancelled() => true,
                };
                if !stopped {
                    delay = (delay * 2).min(std::time::Duration::from_secs(3600));
                    attempt += 1;
                    continue;
                }
            }
            Err(crate::Error::Interrupted(_)) => {}
            Err(e) => {
                let text = crate::base::secret::redact(&e.to_string());
                tracing::error!(job = name, error = %text, "run failed");
                let newest = state.runs(Some(name), 1).await;
                let recorded = newest.is_ok_and(|runs| {
                    recorded_since(runs.first().map(|r| r.started_at.as_str()), began)
                });
                if !recorded {
                    keeper.unrecorded(name, &text);
                }
            }
            Ok(o) if trigger != "cli" => {
                tracing::info!(job = name, outcome = o.describe(), "run finished");
            }
            Ok(_) => {}
        }
        break result;
    };
    // A failure whose alert the state database refused earlier is raised
    // first, so that this outcome (a recovery) follows it.
    if let Some(error) = keeper.refused(name) {
        let kept = crate::services::alerts::Finished::Failed {
            error,
            already_alerted: false,
        };
        if alerter.job_finished(name, &kept).await {
            keeper.refused_raised(name);
        }
    }
    // Only the final outcome alerts: a failure a retry fixed is no news.
    if !alerter
        .job_finished(name, &finished(cfg, name, &result))
        .await
    {
        if let Err(e) = &result {
            keeper.alert_refused(name, crate::base::secret::redact(&e.to_string()));
        }
    }
    result
}

/// Whether the newest recorded run (its start, RFC 3339) belongs to an
/// attempt sequence that began at `since`: if not, the failure that just
/// happened never reached the state database.
pub fn recorded_since(newest_started: Option<&str>, since: DateTime<Utc>) -> bool {
    newest_started
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.with_timezone(&Utc) >= since - chrono::TimeDelta::seconds(1))
}

impl Outcome {
    /// A few words for logs.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Committed(m) => format!("committed {}", m.id),
            Outcome::Checked(s) => format!("{} backups checked", s.backups.len()),
            Outcome::Report(r) => format!("finished {}", r.level().as_str()),
            Outcome::Skipped(why) => why.clone(),
        }
    }
}

/// `result` as alerting sees it (see [`crate::services::alerts::Finished`]).
pub fn finished(
    cfg: &LoadedConfig,
    job: &str,
    result: &Result<Outcome>,
) -> crate::services::alerts::Finished {
    use crate::services::alerts::Finished;
    match result {
        Ok(Outcome::Report(r)) if r.level() == crate::services::checks::Level::Critical => {
            Finished::Succeeded {
                critical: Some(r.describe_problems()),
            }
        }
        Ok(Outcome::Committed(_) | Outcome::Checked(_) | Outcome::Report(_)) => {
            Finished::Succeeded { critical: None }
        }
        Ok(Outcome::Skipped(_)) | Err(crate::Error::Interrupted(_)) => Finished::Quiet,
        Err(e) => Finished::Failed {
            error: e.to_string(),
            // A verify job that found damage raised backup_damaged for each
            // job concerned.
            already_alerted: matches!(e, crate::Error::Integrity { .. })
                && cfg
                    .config
                    .jobs
                    .get(job)
                    .is_some_and(|j| matches!(j.kind, crate::config::Kind::Verify(_))),
        },
    }
}

/// Run job `name` once: backup, check or verify, recorded as a run.
#[allow(clippy::too_many_arguments)]
pub async fn run_job(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    trigger: &str,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    tick: Option<DateTime<Utc>>,
    mark: &crate::base::manifest::Mark,
) -> Result<Outcome> {
    let (_, job) = cfg.job(name)?;
    let _lock = match HostLock::try_acquire(&cfg.config.state_dir, name)? {
        Ok(lock) => lock,
        Err(holder) => {
            let reason = format!("skipped: job {name} is already running ({holder})");
            state
                .record_skipped(name, job.kind(), trigger, &reason)
                .await?;
            tracing::warn!(job = name, "{reason}");
            return Ok(Outcome::Skipped(reason));
        }
    };
    let _cluster = if job.scheduling().lock == LockScope::Cluster {
        let coord = cfg.config.coordination.as_ref().ok_or_else(|| {
            crate::Error::Other(format!(
                "job {name} has lock = \"cluster\" but there is no [coordination] section"
            ))
        })?;
        match ClusterLock::try_acquire(coord, name, tick).await? {
            Ok(lock) => Some(lock),
            Err(holder) => {
                let reason = format!("skipped: {holder}");
                state
                    .record_skipped(name, job.kind(), trigger, &reason)
                    .await?;
                tracing::info!(job = name, "{reason}");
                return Ok(Outcome::Skipped(reason));
            }
        }
    } else {
        None
    };
    // Holding the lock, any run of this job still marked running here is stale.
    let stale = state.close_stale_runs(name).await?;
    if stale > 0 {
        tracing::warn!(
            job = name,
            stale,
            "closed runs left open by a process that died"
        );
    }
    match &job.kind {
        crate::config::Kind::Verify(v) => {
            let s = crate::engine::jobs::verify::run(cfg, state, name, trigger, v, cancel).await?;
            Ok(Outcome::Checked(Box::new(s)))
        }
        _ if !job.is_backup() => {
            let r = crate::engine::check_run::run(cfg, state, name, trigger, job, cancel).await?;
            Ok(Outcome::Report(Box::new(r)))
        }
        _ => {
            let m = crate::engine::backup::run(cfg, state, name, trigger, progress, cancel, mark)
                .await?;
            // Retention runs after each committed backup; a prune problem
            // is logged, never a failed backup.
            if job.retention().is_some() {
                let opts = crate::engine::prune::Options {
                    verdicts: match job.repository() {
                        Some(repo) => state.verdicts(repo, name).await.unwrap_or_default(),
                        None => Default::default(),
                    },
                    just_made: Some(m.id.to_string()),
                    ..crate::engine::prune::Options::default()
                };
                match crate::engine::prune::job(cfg, name, &opts).await {
                    Ok(r) => {
                        for e in &r.errors {
                            tracing::warn!(job = name, error = %e, "prune");
                        }
                        if !r.deleted.is_empty() || !r.orphans.is_empty() {
                            tracing::info!(
                                job = name,
                                deleted = r.deleted.len(),
                                orphans = r.orphans.len(),
                                bytes = r.bytes_freed,
                                "retention applied"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(job = name, error = %e, "retention failed"),
                }
            }
            // Copies follow the commit; a failed copy raises copy_failed
            // (the daemon retries it), never a failed backup.
            if !job.copies().is_empty() {
                copy_after(cfg, state, name).await;
            }
            // A new backup may end an RPO violation: say so now, not at the next check.
            crate::engine::rpo::evaluate_all(cfg, state, name).await;
            Ok(Outcome::Committed(Box::new(m)))
        }
    }
}

/// Copy a job's new backup (and whatever else its copies lack) into
/// each copy repository, logging what failed.
async fn copy_after(cfg: &LoadedConfig, state: &State, name: &str) {
    let _lock = match crate::engine::copy::lock(cfg, name, true).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(job = name, error = %e, "cannot take the copy lock; the daemon copies later");
            return;
        }
    };
    match crate::engine::copy::sync_all(cfg, state, name, None, None).await {
        Ok(reports) => {
            for r in reports {
                if let Some(p) = r.problems() {
                    tracing::error!(job = name, repository = %r.to, problems = %p, "copy failed; the backup exists in {} only until a retry succeeds", r.from);
                }
            }
        }
        Err(e) => tracing::error!(job = name, error = %e, "copying the backup failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::alerts::Finished;
    use crate::Error;

    #[test]
    fn a_run_counts_as_recorded_only_when_it_started_with_the_attempts() {
        let since = DateTime::parse_from_rfc3339("2027-01-15T08:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(recorded_since(Some("2027-01-15T08:00:05.200Z"), since));
        assert!(!recorded_since(Some("2027-01-15T07:59:00Z"), since));
        assert!(!recorded_since(None, since));
        assert!(!recorded_since(Some("garbage"), since));
    }

    #[test]
    fn outcomes_become_what_alerting_needs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drctl.toml");
        std::fs::write(
            &path,
            "[repositories.local]\ntype = \"local\"\npath = \"/tmp/r\"\n\
             [jobs.files]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"local\"\n\
             [jobs.check]\ntype = \"verify\"\n",
        )
        .unwrap();
        let cfg = LoadedConfig::load(Some(&path)).unwrap();
        let damage = || Error::Integrity {
            artifact: "files/x".into(),
            message: "sha256 mismatch".into(),
        };
        let cases: Vec<(&str, Result<Outcome>, Finished)> = vec![
            (
                "files",
                Ok(Outcome::Skipped("busy".into())),
                Finished::Quiet,
            ),
            (
                "files",
                Err(Error::Interrupted("SIGTERM".into())),
                Finished::Quiet,
            ),
            (
                "files",
                Err(Error::Other("disk full".into())),
                Finished::Failed {
                    error: "disk full".into(),
                    already_alerted: false,
                },
            ),
            // A verify run's damage raised backup_damaged already.
            (
                "check",
                Err(damage()),
                Finished::Failed {
                    error: damage().to_string(),
                    already_alerted: true,
                },
            ),
            // The same error from a backup job pages as a failure.
            (
                "files",
                Err(damage()),
                Finished::Failed {
                    error: damage().to_string(),
                    already_alerted: false,
                },
            ),
            (
                "check",
                Ok(Outcome::Checked(Box::default())),
                Finished::Succeeded { critical: None },
            ),
        ];
        for (job, result, want) in cases {
            assert_eq!(finished(&cfg, job, &result), want, "{job}: {result:?}");
        }
    }
}
