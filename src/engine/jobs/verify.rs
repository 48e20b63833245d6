//! The `verify` job kind: `drctl verify` on a schedule, recorded as a run.

use crate::base::error::{Error, Result};
use crate::config::{LoadedConfig, VerifyJob, VerifyScope};
use crate::engine::verify::{self, Options, Summary};
use crate::services::state::{RunStatus, State};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// Verify the backups the job names; damage raises `backup_damaged` per
/// job and fails the run.
pub async fn run(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    trigger: &str,
    job: &VerifyJob,
    cancel: CancellationToken,
) -> Result<Summary> {
    let host = crate::base::host::name();
    let run = state
        .start_run(name, "verify", &host, trigger, Utc::now())
        .await?;
    let opts = Options {
        all: job.scope == VerifyScope::All,
        deep: job.deep,
        identity: None,
        repository: None,
    };
    let work = async {
        let jobs = verify::backup_jobs(cfg, job.jobs.as_deref())?;
        let summary = verify::run(cfg, &jobs, &opts).await?;
        verify::report(cfg, state, &summary, opts.all).await;
        Ok::<Summary, Error>(summary)
    };
    let result = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Interrupted(format!("verify job {name} cancelled"))),
    };
    let (status, bytes, error) = match &result {
        Ok(s) => match s.error() {
            Some(e) => (RunStatus::Failed, Some(s.bytes_read), Some(e.to_string())),
            None => (RunStatus::Succeeded, Some(s.bytes_read), None),
        },
        Err(Error::Interrupted(m)) => (RunStatus::Interrupted, None, Some(m.clone())),
        Err(e) => (RunStatus::Failed, None, Some(e.to_string())),
    };
    state
        .finish_run(run, status, bytes, None, error.as_deref())
        .await?;
    let summary = result?;
    if let Some(e) = summary.error() {
        Err(e)
    } else {
        tracing::info!(
            job = name,
            backups = summary.backups.len(),
            bytes = summary.bytes_read,
            "verification passed"
        );
        Ok(summary)
    }
}
