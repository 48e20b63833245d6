//! Running a backup job end to end: record the run, let the job kind stream
//! its artifacts, then build the manifest from what the stages measured and
//! commit it. Any failure before the commit leaves no manifest, so the
//! attempt is never listed; its partial objects are removed best-effort.

use crate::base::error::{Error, Result};
use crate::base::ids::BackupId;
use crate::base::manifest::{self, Manifest};
use crate::base::progress::Progress;
use crate::config::{Kind, LoadedConfig};
use crate::engine::jobs::{self, BackupCtx};
use crate::services::repository::Repository;
use crate::services::state::{RunStatus, State};
use chrono::Utc;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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
    mark: &crate::base::manifest::Mark,
) -> Result<Manifest> {
    let (job_name, job) = cfg.job(name)?;
    let repo_name = job.backup_repository(name)?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let host = crate::base::host::name();
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
    // Announce the backup in the repository before its first byte: an
    // orphan or multipart sweep on any host leaves a leased directory alone,
    // however long pg_dump takes (the lease renews itself).
    let lease = repo.lease(&job_name, &id, "backup in progress").await;
    let lease = match lease {
        Ok(l) => l,
        Err(e) => {
            let text = crate::base::secret::redact(&e.to_string());
            state
                .finish_run(run_id, RunStatus::Failed, None, None, Some(&text))
                .await?;
            return Err(e);
        }
    };
    let ctx = BackupCtx {
        job: &job_name,
        id: &id,
        repo: &repo,
        progress,
        seal,
        scratch: cfg.config.state_dir.join("tmp"),
    };
    let work = async {
        match &job.kind {
            Kind::Postgres(j) => jobs::postgres::backup(&ctx, j).await,
            Kind::Files(j) => jobs::files::backup(&ctx, j).await,
            Kind::Redis(j) => jobs::redis::backup(&ctx, j).await,
            Kind::PostgresPhysical(j) => jobs::postgres_physical::backup(&ctx, j).await,
            other => Err(Error::WrongKind {
                job: name.to_owned(),
                kind: other.name(),
                expected: crate::config::BACKUP_KINDS,
            }),
        }
    };
    let produced = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Interrupted(format!("backup of {name} cancelled before its manifest was written"))),
    };
    let committed = match produced {
        Ok(out) => {
            record_output(state, run_id, name, &out.output).await;
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
                redis: out.redis,
                physical: out.physical,
                artifacts: out.artifacts,
                tables: out.tables,
                label: mark.label.clone(),
                keep_until: mark.keep_until(started),
            };
            repo.commit(&m).await.map(|_| m)
        }
        Err(e) => Err(e),
    };
    // The commit (or the failure) ends the lease; a committed backup needs
    // none, and a failed one's objects are removed below.
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "cannot remove the backup's lease; it expires by itself");
    }
    let attempt = Attempt {
        repo: &repo,
        repo_name,
        run_id,
        job: &job_name,
        id: &id,
    };
    conclude(cfg, state, &attempt, committed).await
}

/// One backup attempt, between its start and its record.
struct Attempt<'a> {
    repo: &'a Repository,
    repo_name: &'a str,
    run_id: i64,
    job: &'a crate::base::ids::JobName,
    id: &'a BackupId,
}

/// Record how the attempt ended: a committed backup is a success (cached,
/// then retention and RPO run); anything else is a failure or an
/// interruption whose partial objects are removed.
async fn conclude(
    cfg: &LoadedConfig,
    state: &State,
    a: &Attempt<'_>,
    committed: Result<Manifest>,
) -> Result<Manifest> {
    let (name, id, run_id, repo) = (a.job.as_str(), a.id, a.run_id, a.repo);
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
            if let Err(e) = state.cache_backup(a.repo_name, &m).await {
                tracing::warn!(error = %e, "could not cache the backup in local state");
            }
            tracing::info!(job = name, backup = %id, bytes = m.stored_bytes(), "backup committed");
            after_commit(cfg, state, repo, &m).await;
            Ok(m)
        }
        Err(e) => {
            let text = crate::base::secret::redact(&e.to_string());
            tracing::error!(job = name, backup = %id, error = %text, "backup failed; no manifest written");
            discard_partial(repo, a.job, id).await;
            state
                .finish_run(run_id, RunStatus::ended_by(&e), None, None, Some(&text))
                .await?;
            Err(e)
        }
    }
}

/// Log what the job's child processes printed and keep it with the run.
async fn record_output(state: &State, run_id: i64, name: &str, output: &str) {
    let output = crate::base::secret::redact(output.trim());
    if output.is_empty() {
        return;
    }
    for line in output.lines() {
        tracing::info!(job = name, "{line}");
    }
    if let Err(e) = state.set_run_output(run_id, &output).await {
        tracing::warn!(error = %e, "could not record the run's output");
    }
}

/// Remove what a failed attempt stored. Safe: it has no manifest, so nothing
/// lists it; a failure here only leaves an orphan for prune to sweep.
pub(crate) async fn discard_partial(
    repo: &Repository,
    job: &crate::base::ids::JobName,
    id: &BackupId,
) {
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

/// After a commit: compare this host's clock with the store's (the time it
/// gave the manifest) and raise `clock_skew:HOST` for every host whose
/// newest backup of this job claims a start ahead of the store's clock
/// (such backups are never latest, never count for RPO or fill a retention
/// slot); a host whose newest backup is sane has its condition resolved.
async fn after_commit(cfg: &LoadedConfig, state: &State, repo: &Repository, m: &Manifest) {
    let refs = match repo.list_backups(&m.job).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list backups to compare clocks and sources");
            return;
        }
    };
    check_clocks(cfg, state, m, &refs).await;
    check_source(cfg, state, repo, m, &refs).await;
}

/// Two hosts that give different databases the same job name share one
/// prefix: each one's retention deletes the other's backups and `restore
/// --latest` picks whichever ran last. Compare this backup's source with
/// the previous one's and raise (or resolve) `job_collision:JOB`.
async fn check_source(
    cfg: &LoadedConfig,
    state: &State,
    repo: &Repository,
    m: &Manifest,
    refs: &[crate::services::repository::BackupRef],
) {
    let Some(mine) = m.source_identity() else {
        return;
    };
    let Some(prev) = refs.iter().rev().find(|b| b.id < m.id) else {
        return;
    };
    let Ok(pm) = repo.read_manifest(&m.job, &prev.id).await else {
        return;
    };
    let alerter = crate::services::alerts::Alerter::new(cfg, state);
    let key = format!("job_collision:{}", m.job);
    let r = match pm.source_identity() {
        Some(theirs) if theirs != mine => {
            let mut c = crate::services::alerts::Condition::new(
                "job_collision",
                m.job.as_str(),
                crate::services::alerts::Severity::Critical,
                format!(
                    "backups of job {} come from two sources: database {} on server {} (host {}) and database {} on server {} (host {})",
                    m.job, mine.1, mine.0, m.host, theirs.1, theirs.0, pm.host
                ),
            );
            c.job = Some(m.job.to_string());
            c.hint = Some(format!(
                "Give the job a different name on one of the hosts (or its own prefix). Until the two newest backups of {} come from one source, prune deletes nothing and a restore into a database refuses a backup of another one without --force-source.",
                m.job
            ));
            alerter.raise(c).await
        }
        _ => {
            alerter
                .clear(
                    &key,
                    format!("backups of {} come from one source again", m.job),
                )
                .await
        }
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot record the job-collision alert");
    }
}

async fn check_clocks(
    cfg: &LoadedConfig,
    state: &State,
    m: &Manifest,
    refs: &[crate::services::repository::BackupRef],
) {
    let alerter = crate::services::alerts::Alerter::new(cfg, state);
    let mut own_off = false;
    if let Some(at) = refs
        .iter()
        .find(|b| b.id == m.id)
        .and_then(|b| b.committed_at)
    {
        let off = (m.finished_at - at).abs();
        if off > crate::services::repository::SKEW_TOLERANCE {
            own_off = true;
            // This host's own clock is off (ahead or behind) by more than
            // the tolerance: say so where it pages, not only in a log.
            let mut c = crate::services::alerts::Condition::new(
                "clock_skew",
                m.id.host(),
                crate::services::alerts::Severity::Warning,
                format!(
                    "this host's clock and the repository's differ by {}s (backup {} of {})",
                    off.num_seconds(),
                    m.id,
                    m.job
                ),
            );
            c.job = Some(m.job.to_string());
            c.hint = Some("Fix the clock (chrony or systemd-timesyncd). Backups from a clock that runs ahead are never used as latest; one that runs behind sorts its backups before others'.".into());
            if let Err(e) = alerter.raise(c).await {
                tracing::warn!(error = %e, "cannot record the clock-skew alert");
            }
        }
        if off > chrono::TimeDelta::minutes(1) {
            tracing::warn!(
                job = %m.job,
                store_time = %at,
                host_time = %m.finished_at,
                "this host's clock and the repository's differ by {}s; check NTP",
                off.num_seconds()
            );
        }
    }
    let mut newest: std::collections::BTreeMap<&str, &crate::services::repository::BackupRef> =
        Default::default();
    for b in refs {
        let e = newest.entry(b.id.host()).or_insert(b);
        if b.committed_at > e.committed_at {
            *e = b;
        }
    }
    for (host, b) in newest {
        let key = format!("clock_skew:{host}");
        let r = match b.clock_skew() {
            Some(ahead) => {
                let mut c = crate::services::alerts::Condition::new(
                    "clock_skew",
                    host,
                    crate::services::alerts::Severity::Warning,
                    format!(
                        "backup {} of {} claims a start {} ahead of the repository's clock",
                        b.id,
                        m.job,
                        humantime::format_duration(ahead.to_std().unwrap_or_default())
                    ),
                );
                c.job = Some(m.job.to_string());
                c.hint = Some(format!(
                    "Fix the clock on {host} (chrony or systemd-timesyncd). Until then its backups are not used as latest, not counted for RPO and fill no retention slot."
                ));
                alerter.raise(c).await
            }
            None if own_off && host == m.id.host() => Ok(()),
            None => {
                alerter
                    .clear(
                        &key,
                        format!("{host}'s newest backup of {} has a sane time", m.job),
                    )
                    .await
            }
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record the clock-skew alert");
        }
    }
}
