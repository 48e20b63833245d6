//! Running a backup job end to end: record the run, let the job kind stream
//! its artifacts, then build the manifest from what the stages measured and
//! commit it. Any failure before the commit leaves no manifest, so the
//! attempt is never listed; its partial objects are removed best-effort.

use crate::config::{JobConfig, LoadedConfig};
use crate::error::{Error, Result};
use crate::ids::BackupId;
use crate::jobs::{self, BackupCtx};
use crate::manifest::{self, Manifest};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::state::{RunStatus, State};
use chrono::Utc;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// This host's name as recorded in ids and manifests.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Run backup job `name` now. Returns the committed manifest.
///
/// Cancelling `cancel` stops the run: child processes are killed, partial
/// objects removed, and the run is recorded as interrupted with no manifest.
pub async fn run(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    trigger: &str,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    let (job_name, job) = cfg.job(name)?;
    let repo_name = job.repository().ok_or_else(|| {
        Error::Other(format!(
            "job {name} is a {} job and stores no backup",
            job.kind()
        ))
    })?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let host = host_name();
    let started = Utc::now();
    let id = BackupId::new(started, &host);
    let run_id = state
        .start_run(name, job.kind(), &host, trigger, started)
        .await?;
    tracing::info!(job = name, backup = %id, repository = %repo.location(), "backup started");

    let seal = match cfg.encryption_of(job) {
        Some(e) => Some(jobs::Seal::new(e).map_err(|m| Error::Config {
            file: cfg.file_of(&format!("jobs.{name}")),
            key: "encryption.recipients".into(),
            message: m,
        })?),
        None => None,
    };
    let ctx = BackupCtx {
        job: &job_name,
        id: &id,
        repo: &repo,
        progress,
        seal,
    };
    let work = async {
        match job {
            JobConfig::Postgres(j) => jobs::postgres::backup(&ctx, j).await,
            JobConfig::Files(j) => jobs::files::backup(&ctx, j).await,
            other => Err(Error::Other(format!(
                "job {name} is a {} job, not a backup",
                other.kind()
            ))),
        }
    };
    let produced = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Interrupted(format!("backup of {name} cancelled before its manifest was written"))),
    };
    let committed = match produced {
        Ok(out) => {
            let output = crate::secret::redact(out.output.trim());
            if !output.is_empty() {
                for line in output.lines() {
                    tracing::info!(job = name, "{line}");
                }
                if let Err(e) = state.set_run_output(run_id, &output).await {
                    tracing::warn!(error = %e, "could not record the run's output");
                }
            }
            let m = Manifest {
                format: manifest::FORMAT,
                id: id.clone(),
                job: job_name.clone(),
                kind: job.kind().into(),
                host: host.clone(),
                started_at: started,
                finished_at: Utc::now(),
                drctl_version: crate::VERSION.into(),
                source: out.source,
                artifacts: out.artifacts,
                tables: out.tables,
            };
            repo.commit(&m).await.map(|_| m)
        }
        Err(e) => Err(e),
    };
    match committed {
        Ok(m) => {
            state
                .finish_run(
                    run_id,
                    RunStatus::Succeeded,
                    Some(m.stored_bytes()),
                    Some(id.as_str()),
                    None,
                )
                .await?;
            if let Err(e) = state.cache_backup(repo_name, &m).await {
                tracing::warn!(error = %e, "could not cache the backup in local state");
            }
            tracing::info!(job = name, backup = %id, bytes = m.stored_bytes(), "backup committed");
            Ok(m)
        }
        Err(e) => {
            let text = crate::secret::redact(&e.to_string());
            tracing::error!(job = name, backup = %id, error = %text, "backup failed; no manifest written");
            discard_partial(&repo, &job_name, &id).await;
            let status = match e {
                Error::Interrupted(_) => RunStatus::Interrupted,
                _ => RunStatus::Failed,
            };
            state
                .finish_run(run_id, status, None, None, Some(&text))
                .await?;
            Err(e)
        }
    }
}

/// Remove what a failed attempt stored. Safe: it has no manifest, so nothing
/// lists it; a failure here only leaves an orphan for prune to sweep.
async fn discard_partial(repo: &Repository, job: &crate::ids::JobName, id: &BackupId) {
    match repo.objects_of(job, id).await {
        Ok(objs) if objs.iter().any(|o| o.key.ends_with(manifest::FILE_NAME)) => {
            // The commit may have landed even though its response was lost:
            // then this is a real backup and must not be touched.
            tracing::warn!(backup = %id, "a manifest exists for the failed attempt; leaving it in place");
        }
        Ok(objs) => {
            for o in objs {
                if let Err(e) = repo.backend().delete(&o.key).await {
                    tracing::warn!(key = %o.key, error = %e, "could not remove a partial object");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list partial objects"),
    }
}
