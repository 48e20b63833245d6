//! Running a job by name, as both `drctl run` and the daemon do: take the
//! host lock, run the kind, and record a skip when another run holds it.

use crate::config::LoadedConfig;
use crate::error::Result;
use crate::lock::HostLock;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::state::State;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub enum Outcome {
    /// A backup was committed.
    Committed(Box<Manifest>),
    /// Another run of the job holds the host lock; recorded as skipped.
    Skipped(String),
}

pub async fn run_job(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    trigger: &str,
    progress: Arc<Progress>,
    cancel: CancellationToken,
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
    // Holding the lock, any run of this job still marked running here is stale.
    let stale = state.close_stale_runs(name).await?;
    if stale > 0 {
        tracing::warn!(
            job = name,
            stale,
            "closed runs left open by a process that died"
        );
    }
    let m = crate::backup::run(cfg, state, name, trigger, progress, cancel).await?;
    Ok(Outcome::Committed(Box::new(m)))
}
