//! Restores, from the repository alone: pick the backup (latest or by id),
//! fetch and verify every artifact before the target is touched, then hand
//! off to the kind: `postgres.rs` (roles, database, pg_restore, swap) or
//! `files.rs` (safe extraction).

pub mod containers;
pub mod cursors;
pub mod fetch;
pub mod files;
pub mod health;
pub mod hooks;
pub mod journal;
pub mod pipelined;
pub mod pitr;
pub mod postgres;
pub mod redis;
pub mod undo;

use crate::base::error::{Error, Result};
use crate::base::ids::{BackupId, JobName};
use crate::base::manifest::Manifest;
use crate::base::progress::Progress;
use crate::config::{JobConfig, Kind, LoadedConfig};
use crate::services::repository::Repository;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Job name; may be omitted when the config has exactly one backup job.
    pub job: Option<String>,
    /// A specific backup; `None` means the latest.
    pub id: Option<String>,
    /// The newest backup with this label (`drctl run --label`), instead of
    /// the newest of all.
    pub label: Option<crate::base::ids::Label>,
    /// `postgres://...` for a database, a directory for files backups.
    pub to: Option<String>,
    /// Instead of `to`: this database on the job's own server, reached as
    /// the job reaches it (in its container, for a container job): where a
    /// `job_server` drill restores.
    pub to_job_server: Option<String>,
    /// Parallel pg_restore jobs (1 streams without a temporary file).
    pub jobs: usize,
    /// Print the plan; touch nothing.
    pub dry_run: bool,
    /// The operator agreed to replace the job's own database (or overwrite files).
    pub confirmed: bool,
    /// Scratch space for the decompressed dump.
    pub tmp_dir: Option<PathBuf>,
    /// Cancelling stops the restore; a database it created is dropped.
    pub cancel: CancellationToken,
    /// age identity file for encrypted backups (else env, else config).
    pub identity: Option<PathBuf>,
    /// Files restores: keep setuid/setgid/sticky bits (dropped by default).
    pub preserve_modes: bool,
    /// Replace the job's own database even with a backup of another source.
    pub force_source: bool,
    /// Run the job's `[jobs.X.restore]` hooks (off: `--no-hooks`, drills).
    pub hooks: bool,
    /// Announce the restore on the alert channels (`restore_started`,
    /// `restore_finished`, `restore_failed`; off for drills).
    pub announce: bool,
    /// An operator's restore or a drill's (journaled; the DR report's
    /// "real restores" are the operators').
    pub origin: journal::Origin,
    /// Read only this repository (`--repository`, a drill's
    /// `repository`): no fallback to another. Default: the job's own
    /// repository and its copies, the newest backup in any of them, and the
    /// next one holding the same backup when a copy is damaged or gone.
    pub repository: Option<String>,
}

/// What a restore will do, printed by `--dry-run` and before confirmation.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The job.
    pub job: String,
    /// Its kind.
    pub kind: String,
    /// The repository read from.
    pub repository: String,
    /// The backup restored.
    pub backup_id: String,
    /// When that backup finished.
    pub backup_finished_at: String,
    /// The host that made it.
    pub backup_host: String,
    /// Bytes to fetch.
    pub stored_bytes: u64,
    /// Bytes once decompressed.
    pub raw_bytes: u64,
    /// Where it goes (no password).
    pub target: String,
    /// The target is the job's own database and will be swapped (needs consent).
    pub replaces_existing: bool,
    /// What will happen, in order.
    pub steps: Vec<String>,
    /// Repositories passed over while choosing the backup, and why (an
    /// unreachable one, a damaged manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// An undo's: the restore it takes back and the writes since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undoes: Option<undo::Undoes>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// The backup restored.
    pub backup_id: String,
    /// The repository it was read from.
    pub repository: String,
    /// Where it went (no password).
    pub target: String,
    /// Where the replaced database now lives (`<name>_pre_restore_<ts>`).
    pub safety_copy: Option<String>,
    /// Bytes read from the repository.
    pub bytes_fetched: u64,
    /// Wall time of fetching and verifying.
    pub fetch_seconds: f64,
    /// Decrypting and decompressing, inside (overlapping) the fetch.
    pub decode_seconds: f64,
    /// Wall time of roles and pg_restore (or extraction).
    pub restore_seconds: f64,
    /// Wall time of the swap of the job's own database (0 without one).
    pub swap_seconds: f64,
    /// Wall time of the whole restore: the measured RTO.
    pub total_seconds: f64,
    /// Roles the server lacked and the restore created.
    pub roles_created: Vec<String>,
    /// Every role the globals dump names (drills check they exist).
    pub roles_expected: Vec<String>,
    /// Things done differently than asked (and why).
    pub warnings: Vec<String>,
    /// The `[jobs.X.restore]` hooks that ran, in order.
    pub hooks: Vec<hooks::HookRun>,
    /// The `verify` checks run after the `after` hooks.
    pub verify: Vec<health::VerifyRun>,
    /// Each phase's wall time (hooks, fetch, restore, swap, health): the
    /// restore's RTO, broken down.
    pub phases: Vec<journal::Phase>,
    /// Safety copies older than the job's `safety_copy_keep`, dropped after
    /// this restore succeeded.
    pub safety_copies_dropped: Vec<String>,
}

/// The job, repository and manifest a request resolves to.
pub struct Resolved<'a> {
    /// The job.
    pub job: JobName,
    /// Its config.
    pub config: &'a JobConfig,
    /// Its repository, open.
    pub repo: Repository,
    /// The chosen backup's manifest, read and checked.
    pub manifest: Manifest,
    /// Identities for encrypted artifacts, checked against the manifest.
    pub keys: crate::services::keys::Keys,
    /// Repositories passed over, and why.
    pub notes: Vec<String>,
}

/// The repositories a request may read, in the order they are tried: the
/// pinned one, or the job's own and then its copies.
fn sources<'c>(config: &'c JobConfig, name: &str, req: &'c RestoreRequest) -> Result<Vec<&'c str>> {
    let all = config.repositories();
    config.backup_repository(name)?;
    match &req.repository {
        Some(r) if all.contains(&r.as_str()) => Ok(vec![r.as_str()]),
        Some(r) => Err(Error::Usage(format!(
            "--repository {r}: job {name} stores no backups there (its repositories: {})",
            all.join(", ")
        ))),
        None => Ok(all),
    }
}

/// Find the job, the repository and the backup a request means (the
/// newest usable one unless an id is given), without touching the target.
/// With copies, every repository of the job is looked at: the newest
/// backup in any of them wins (the job's own repository on a tie), and a
/// repository that cannot be read is passed over with a note; with an id,
/// the first repository holding it.
pub async fn resolve<'a>(cfg: &'a LoadedConfig, req: &RestoreRequest) -> Result<Resolved<'a>> {
    let name = job_name(cfg, req)?;
    let (job, config) = cfg.job(&name)?;
    let id = match &req.id {
        Some(id) => Some(BackupId::parse(id).map_err(|e| Error::Usage(format!("--id: {e}")))?),
        None => None,
    };
    let sources = sources(config, &name, req)?;
    let mut notes = Vec::new();
    let mut best: Option<(Repository, Manifest)> = None;
    let mut first_err: Option<Error> = None;
    for repo_name in &sources {
        let found = async {
            let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
            let m = if let Some(id) = &id {
                repo.read_manifest(&job, id).await?
            } else if let Some(label) = &req.label {
                repo.latest_labelled(&job, label).await?
            } else {
                let latest = repo.latest_usable(&job).await?;
                for s in &latest.skipped {
                    tracing::warn!(job = %job, repository = %repo_name, "passing over a newer backup: {s}");
                }
                latest.manifest
            };
            Ok::<_, Error>((repo, m))
        }
        .await;
        match found {
            Ok((repo, m)) => {
                let newer = best.as_ref().is_none_or(|(_, b)| m.id > b.id);
                if newer {
                    best = Some((repo, m));
                }
                if id.is_some() {
                    break;
                }
            }
            Err(e) => {
                if sources.len() > 1 && !matches!(e, Error::NotFound(_)) {
                    notes.push(format!(
                        "repository {repo_name} passed over: {}",
                        crate::base::secret::redact(&e.to_string())
                    ));
                }
                // The first error that is not "nothing there" says most.
                let replace = first_err.as_ref().is_none_or(|f| {
                    matches!(f, Error::NotFound(_)) && !matches!(e, Error::NotFound(_))
                });
                if replace {
                    first_err = Some(e);
                }
            }
        }
    }
    let Some((repo, manifest)) = best else {
        return Err(first_err
            .unwrap_or_else(|| Error::NotFound(format!("no committed backup of job {name}"))));
    };
    for n in &notes {
        tracing::warn!(job = %job, "{n}");
    }
    let keys =
        crate::services::keys::for_manifest(cfg, config, &manifest, req.identity.as_deref())?;
    Ok(Resolved {
        job,
        config,
        repo,
        manifest,
        keys,
        notes,
    })
}

/// `--job`, or the only backup job when there is one.
fn job_name(cfg: &LoadedConfig, req: &RestoreRequest) -> Result<String> {
    if let Some(j) = &req.job {
        return Ok(j.clone());
    }
    let backups: Vec<&String> = cfg
        .config
        .jobs
        .iter()
        .filter(|(_, j)| j.repository().is_some())
        .map(|(n, _)| n)
        .collect();
    match backups.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(Error::Usage(format!(
            "more than one backup job is configured; name one with --job ({})",
            backups
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Describe what `req` would do without changing anything.
pub async fn plan(cfg: &LoadedConfig, req: &RestoreRequest) -> Result<Plan> {
    let r = resolve(cfg, req).await?;
    let mut plan = match &r.config.kind {
        Kind::Postgres(j) => postgres::plan(&r, j, req)?,
        Kind::Files(_) => files::plan(&r, req)?,
        Kind::Redis(_) => redis::plan(&r, req)?,
        other => return Err(not_restorable(&r.job, other)),
    };
    if let Some(h) = hooks_for(r.config, req) {
        wrap_steps(&mut plan.steps, h);
    }
    plan.notes = r.notes;
    Ok(plan)
}

/// Put the hooks and `verify` checks around a plan's steps.
fn wrap_steps(steps: &mut Vec<String>, h: &crate::config::RestoreHooks) {
    let before = h.before.iter().map(|a| hooks::describe("before", a));
    let after = h
        .after
        .iter()
        .map(|a| hooks::describe("after", a) + " (also if the restore fails)");
    let verify = h.verify.iter().map(|j| {
        format!(
            "verify: health check {j} until it passes (at most {} in all; exit 9 if it does not)",
            humantime::format_duration(h.verify_timeout)
        )
    });
    let (stop, start) = containers::describe(h);
    *steps = before
        .chain(stop)
        .chain(std::mem::take(steps))
        .chain(start)
        .chain(after)
        .chain(verify)
        .collect();
}

/// The job's restore hooks, unless the request skips them.
fn hooks_for<'a>(
    config: &'a JobConfig,
    req: &RestoreRequest,
) -> Option<&'a crate::config::RestoreHooks> {
    req.hooks
        .then(|| config.storage().and_then(|s| s.restore.as_ref()))
        .flatten()
}

/// Perform the restore. Refuses (exit 4) where consent is needed and not
/// given; exits 9 when the data went in but the service did not come back.
///
/// Falls back to a good copy: when the backup's artifacts fail their
/// checksum or its repository fails while they are read, and no
/// `repository` was pinned, the same backup is restored from the next
/// repository of the job that holds it; the damaged copy raises
/// `backup_damaged` and the report says what happened.
pub async fn run(
    cfg: &LoadedConfig,
    req: &RestoreRequest,
    progress: Arc<Progress>,
) -> Result<Report> {
    let r = resolve(cfg, req).await?;
    let (job, id, first_repo) = (r.job.clone(), r.manifest.id.clone(), r.repo.name.clone());
    let pinned = req.repository.is_some();
    let mut tried = vec![first_repo];
    let mut notes = r.notes.clone();
    let mut result = run_resolved(cfg, req, r, progress.clone()).await;
    while let Err(e) = &result {
        if pinned || !matches!(e, Error::Integrity { .. } | Error::Repository { .. }) {
            break;
        }
        let failed = tried.last().cloned().unwrap_or_default();
        let why = crate::base::secret::redact(&e.to_string());
        if matches!(e, Error::Integrity { .. }) {
            damaged(
                cfg,
                &job,
                &failed,
                &id,
                &why,
                "The restore fell back to another repository.",
            )
            .await;
        }
        let Some(next) = next_holding(cfg, &job, &id, &tried).await else {
            break;
        };
        let note = format!(
            "backup {id} in repository {failed} could not be restored ({why}); restored from repository {next} instead"
        );
        tracing::warn!(job = %job, "{note}");
        notes.push(note);
        tried.push(next.clone());
        let again = RestoreRequest {
            id: Some(id.to_string()),
            label: None,
            repository: Some(next),
            ..req.clone()
        };
        result = match resolve(cfg, &again).await {
            Ok(r) => run_resolved(cfg, &again, r, progress.clone()).await,
            Err(e) => Err(e),
        };
    }
    result.map(|mut rep| {
        let mut all = notes;
        all.append(&mut rep.warnings);
        rep.warnings = all;
        rep
    })
}

/// The next repository of `job` (not in `tried`) whose manifest of `id`
/// reads: where a restore falls back to.
async fn next_holding(
    cfg: &LoadedConfig,
    job: &JobName,
    id: &BackupId,
    tried: &[String],
) -> Option<String> {
    let (_, config) = cfg.job(job.as_str()).ok()?;
    for name in config.repositories() {
        if tried.iter().any(|t| t == name) {
            continue;
        }
        let Ok(rc) = cfg.repository(name) else {
            continue;
        };
        let Ok(repo) = Repository::open(name, rc).await else {
            continue;
        };
        if repo.read_manifest(job, id).await.is_ok() {
            return Some(name.to_owned());
        }
    }
    None
}

/// A copy that failed its checksum during a restore: recorded as damaged
/// (retention stops counting it) and `backup_damaged` raised for it;
/// `instead` says what the restore did about it.
pub(crate) async fn damaged(
    cfg: &LoadedConfig,
    job: &JobName,
    repo: &str,
    id: &BackupId,
    why: &str,
    instead: &str,
) {
    use crate::services::alerts::{Alerter, Condition, Severity};
    let Ok(state) = crate::services::state::State::open(&cfg.config.state_dir).await else {
        return;
    };
    if let Err(e) = state
        .record_verdict(repo, job.as_str(), id.as_str(), false, false)
        .await
    {
        tracing::warn!(error = %e, "cannot record the damaged backup");
    }
    let subject = crate::engine::verify::damaged_subject(cfg, job.as_str(), repo, "latest");
    let mut c = Condition::new(
        "backup_damaged",
        &subject,
        Severity::Critical,
        format!("backup {id} of {job} in repository {repo} failed its checksum (or an object is missing) during a restore"),
    );
    c.job = Some(job.to_string());
    c.detail = Some(why.to_owned());
    c.hint = Some(format!(
        "{instead} Look at the storage of {repo} (disk errors, lifecycle rules, who can write there) and run `drctl verify --job {job} --repository {repo} --all`."
    ));
    if let Err(e) = Alerter::new(cfg, &state).raise(c).await {
        tracing::warn!(error = %e, "cannot record the backup_damaged alert");
    }
}

/// [`run`] for one resolved backup in one repository.
async fn run_resolved(
    cfg: &LoadedConfig,
    req: &RestoreRequest,
    r: Resolved<'_>,
    progress: Arc<Progress>,
) -> Result<Report> {
    let started = std::time::Instant::now();
    let tmp_dir = scratch_dir(cfg, req)?;
    // Finish or roll back restores that were killed before this one starts.
    let state = crate::services::state::State::open(&cfg.config.state_dir).await?;
    for note in journal::recover(cfg, &state).await {
        tracing::warn!("{note}");
    }
    // One restore per target on this host: a second one into the same
    // database or directory is refused before it touches anything.
    let target = match &r.config.kind {
        Kind::Postgres(j) => postgres::target_key(j, req)?,
        Kind::Files(_) => files::target_key(req)?,
        Kind::Redis(_) => redis::target_key(req)?,
        other => return Err(not_restorable(&r.job, other)),
    };
    let _target_lock = lock_target(cfg, &target)?;
    // Keep prune (on any host) away from the backup while it is read. A
    // restore that cannot protect its backup does not start.
    let lease = r
        .repo
        .lease(&r.job, &r.manifest.id, "restore")
        .await
        .map_err(|e| {
            Error::repo(
                &r.repo.name,
                format!("cannot lease backup {} before reading it (a concurrent prune could remove it), so the restore does not start: {e}", r.manifest.id),
            )
        })?;
    let journal = journal::Journal::begin(
        &state,
        &journal::Start {
            job: r.job.as_str(),
            backup_id: r.manifest.id.as_str(),
            repository: &r.repo.name,
            target: &target,
            lease: Some(&lease.key),
            action: journal::Action::Restore,
            origin: req.origin,
        },
    )
    .await?;
    let procedure = Procedure {
        cfg,
        state: &state,
        job: &r.job,
        hooks: hooks_for(r.config, req),
        req,
        journal: &journal,
        started,
    };
    let work = async {
        let mut rep = journaled(cfg, &state, &r, req, &tmp_dir, progress, &journal).await?;
        rep.phases = vec![
            journal::Phase::new("fetch", rep.fetch_seconds, true),
            journal::Phase::new("restore", rep.restore_seconds, true),
        ];
        if rep.swap_seconds > 0.0 {
            rep.phases
                .push(journal::Phase::new("swap", rep.swap_seconds, true));
        }
        Ok(rep)
    };
    let consent = || match &r.config.kind {
        Kind::Postgres(j) => postgres::consent(j, req),
        Kind::Files(_) => files::consent(req),
        Kind::Redis(_) => redis::consent(req),
        _ => Ok(()),
    };
    let what = format!("restore of {} (backup {})", r.job, r.manifest.id);
    let result = procedure.around(work, consent, &what).await;
    release(lease).await;
    result.map(|mut rep| {
        rep.repository.clone_from(&r.repo.name);
        rep
    })
}

/// One restore per target on this host.
fn lock_target(cfg: &LoadedConfig, target: &str) -> Result<crate::services::lock::HostLock> {
    crate::services::lock::HostLock::try_acquire_keyed(&cfg.config.state_dir, ".restore", target)?
        .map_err(|holder| {
            Error::Refused(format!(
                "another restore into {target} is running ({holder}); wait for it or pick another target"
            ))
        })
}

/// The runbook around a restore or an undo: consent, the `before` hooks,
/// the announcement, the work, the `after` hooks, the `verify` checks, and
/// the record of it all (phases, total time, health) in the journal.
pub(crate) struct Procedure<'a> {
    pub(crate) cfg: &'a LoadedConfig,
    pub(crate) state: &'a crate::services::state::State,
    pub(crate) job: &'a JobName,
    pub(crate) hooks: Option<&'a crate::config::RestoreHooks>,
    pub(crate) req: &'a RestoreRequest,
    pub(crate) journal: &'a journal::Journal,
    pub(crate) started: std::time::Instant,
}

impl Procedure<'_> {
    /// Run `work` inside the procedure. `consent` is checked before any
    /// hook (a restore refused for want of `--yes` stops nothing).
    /// `work` fills its report's own phases; a failed one counts as one
    /// failed `restore` phase.
    pub(crate) async fn around(
        &self,
        work: impl std::future::Future<Output = Result<Report>>,
        consent: impl FnOnce() -> Result<()>,
        what: &str,
    ) -> Result<Report> {
        let mut phases = Vec::new();
        let mut ran = Vec::new();
        // The runbook's "stop the app": only once nothing can refuse the
        // restore for want of consent, and before the target is touched.
        let before = match self.hooks {
            Some(h) => match consent() {
                Ok(()) => stop_the_application(h, self.journal, &mut phases, &mut ran).await,
                Err(e) => Err(e),
            },
            None => Ok(None),
        };
        let stopped = match before {
            Ok(s) => s,
            Err(e) => {
                let note = crate::base::secret::redact(&e.to_string());
                if let Err(err) = self.journal.failed(&note).await {
                    tracing::warn!(error = %err, "cannot journal the refused restore");
                }
                self.record(&phases, None).await;
                return Err(e);
            }
        };
        if stopped.is_some() || self.hooks.is_some_and(|h| !h.before.is_empty()) {
            crate::base::faults::point("restore.app.stopped").await;
        }
        let alerter = crate::services::alerts::Alerter::new(self.cfg, self.state);
        if self.req.announce {
            announce(
                &alerter,
                self.job,
                "restore_started",
                format!("{what} started"),
            )
            .await;
        }
        let t = std::time::Instant::now();
        let result = work.await;
        match &result {
            Ok(rep) => phases.extend(rep.phases.iter().cloned()),
            Err(_) => phases.push(journal::Phase::new(
                "restore",
                t.elapsed().as_secs_f64(),
                false,
            )),
        }
        // The runbook's "start the app", whether the restore worked or not.
        if let Some(h) = self.hooks {
            bring_back(h, stopped.as_ref(), &mut phases, &mut ran).await;
            self.brought_back().await;
        }
        // The runbook's "curl -sf .../health", once the data went in.
        let mut checks = Vec::new();
        if let (Ok(_), Some(h)) = (&result, self.hooks.filter(|h| !h.verify.is_empty())) {
            let t = std::time::Instant::now();
            checks = health::verify(self.cfg, &h.verify, h.verify_timeout, &self.req.cancel).await;
            let ok = health::failure(&checks).is_none();
            phases.push(journal::Phase::new("health", t.elapsed().as_secs_f64(), ok));
        }
        let healthy = (!checks.is_empty()).then(|| health::failure(&checks).is_none());
        let seconds = self.started.elapsed().as_secs_f64();
        let result = result.and_then(|mut report| {
            report.hooks = ran;
            report.verify = checks;
            report.phases.clone_from(&phases);
            report.total_seconds = seconds;
            let why = hooks::failure(&report.hooks).or_else(|| health::failure(&report.verify));
            match why {
                Some(why) => Err(Error::Unhealthy(format!(
                    "restored {} into {}, but {why}",
                    report.backup_id, report.target
                ))),
                None => Ok(report),
            }
        });
        self.record(&phases, healthy).await;
        if self.req.announce {
            let (kind, summary) = ended(what, &result, seconds);
            announce(&alerter, self.job, kind, summary).await;
        }
        result
    }

    /// The application is back: a later recovery of this entry must not
    /// run the `after` hooks again.
    async fn brought_back(&self) {
        if let Err(e) = self.journal.app_stopped(false).await {
            tracing::warn!(error = %e, "cannot journal that the application is back");
        }
    }

    async fn record(&self, phases: &[journal::Phase], healthy: Option<bool>) {
        let total = self.started.elapsed().as_secs_f64();
        if let Err(e) = self.journal.record(phases, total, healthy).await {
            tracing::warn!(error = %e, "cannot record the restore's phases");
        }
    }
}

/// `--tmp-dir` (which must exist: a missing one is a typo), else
/// `state_dir/tmp` (created).
fn scratch_dir(cfg: &LoadedConfig, req: &RestoreRequest) -> Result<std::path::PathBuf> {
    if let Some(dir) = req.tmp_dir.as_ref().filter(|d| !d.is_dir()) {
        return Err(Error::Usage(format!(
            "--tmp-dir {} is not an existing directory",
            dir.display()
        )));
    }
    let tmp_dir = req
        .tmp_dir
        .clone()
        .unwrap_or_else(|| cfg.config.state_dir.join("tmp"));
    std::fs::create_dir_all(&tmp_dir)
        .map_err(|e| Error::io(format!("creating {}", tmp_dir.display()), e))?;
    Ok(tmp_dir)
}

/// The `before` hooks, then the `stop` containers. When either fails,
/// what was stopped is started again, the `after` hooks run, and the
/// restore does not start.
async fn stop_the_application(
    h: &crate::config::RestoreHooks,
    journal: &journal::Journal,
    phases: &mut Vec<journal::Phase>,
    ran: &mut Vec<hooks::HookRun>,
) -> Result<Option<containers::Stopped>> {
    let mut why = None;
    let mut stopped = None;
    // Journaled first: a restore killed from here on leaves the
    // application stopped, and whoever finds it brings it back.
    if !h.before.is_empty() || !h.stop.is_empty() {
        journal.app_stopped(true).await?;
    }
    if !h.before.is_empty() {
        let t = std::time::Instant::now();
        let runs = hooks::before(h).await;
        why = hooks::failure(&runs);
        phases.push(journal::Phase::new(
            "before_hooks",
            t.elapsed().as_secs_f64(),
            why.is_none(),
        ));
        ran.extend(runs);
    }
    if why.is_none() && !h.stop.is_empty() {
        let t = std::time::Instant::now();
        let (runs, s) = containers::stop(h).await;
        why = hooks::failure(&runs);
        phases.push(journal::Phase::new(
            "stop_containers",
            t.elapsed().as_secs_f64(),
            why.is_none(),
        ));
        ran.extend(runs);
        if let Some(s) = &s {
            journal.containers(s.names()).await?;
        }
        stopped = s;
    }
    let Some(why) = why else {
        return Ok(stopped);
    };
    let start = ran.len();
    bring_back(h, stopped.as_ref(), phases, ran).await;
    if let Err(e) = journal.app_stopped(false).await {
        tracing::warn!(error = %e, "cannot journal that the application is back");
    }
    let mut msg = format!("{why}; nothing was restored");
    if let Some(a) = hooks::failure(&ran[start..]) {
        msg.push_str(&format!("; then {a}"));
    }
    Err(Error::Other(msg))
}

/// Start what `stop` stopped, then the `after` hooks: after a restore,
/// whether it worked or not, and after an aborted start.
async fn bring_back(
    h: &crate::config::RestoreHooks,
    stopped: Option<&containers::Stopped>,
    phases: &mut Vec<journal::Phase>,
    ran: &mut Vec<hooks::HookRun>,
) {
    if let Some(s) = stopped {
        let t = std::time::Instant::now();
        let runs = containers::start(s, h).await;
        let ok = hooks::failure(&runs).is_none();
        phases.push(journal::Phase::new(
            "start_containers",
            t.elapsed().as_secs_f64(),
            ok,
        ));
        ran.extend(runs);
    }
    if !h.after.is_empty() {
        let t = std::time::Instant::now();
        let runs = hooks::after(h).await;
        let ok = hooks::failure(&runs).is_none();
        phases.push(journal::Phase::new(
            "after_hooks",
            t.elapsed().as_secs_f64(),
            ok,
        ));
        ran.extend(runs);
    }
}

/// A killed restore had stopped the application (its `before` hooks or
/// container stops ran, its `after` hooks never did): start its containers
/// and run its `after` hooks now, announce `restore_failed`, and say what
/// happened (appended to the recovery's note).
pub(crate) async fn bring_back_after_kill(
    cfg: &LoadedConfig,
    state: &crate::services::state::State,
    e: &journal::Entry,
) -> String {
    let hooks = cfg
        .job(&e.job)
        .ok()
        .and_then(|(_, jc)| jc.storage().and_then(|s| s.restore.as_ref()));
    let mut runs = Vec::new();
    let note = match hooks {
        Some(h) => {
            if !e.containers.is_empty() {
                runs.extend(containers::start_named(&e.containers, h).await);
            }
            runs.extend(hooks::after(h).await);
            match hooks::failure(&runs) {
                None => format!(
                    "; it had stopped the application: {} ran again now",
                    describe_bring_back(e, h)
                ),
                Some(why) => format!(
                    "; it had stopped the application, and bringing it back failed: {why}"
                ),
            }
        }
        None => "; it had stopped the application, but the job has no restore hooks configured now: start it by hand".into(),
    };
    if let Ok(job) = JobName::parse(&e.job) {
        let alerter = crate::services::alerts::Alerter::new(cfg, state);
        announce(
            &alerter,
            &job,
            "restore_failed",
            format!("{} was killed{note}", e.what()),
        )
        .await;
    }
    note
}

fn describe_bring_back(e: &journal::Entry, h: &crate::config::RestoreHooks) -> String {
    let mut parts = Vec::new();
    if !e.containers.is_empty() {
        parts.push(format!("containers {} started", e.containers.join(", ")));
    }
    if !h.after.is_empty() {
        parts.push(format!("{} after hook(s)", h.after.len()));
    }
    if parts.is_empty() {
        "nothing to run".into()
    } else {
        parts.join(" and ")
    }
}

/// Restore under the journal (begun before the target is touched): marked
/// done at the end, or settled at once (the repairs a later recovery would
/// make) when the restore failed.
async fn journaled(
    cfg: &LoadedConfig,
    state: &crate::services::state::State,
    r: &Resolved<'_>,
    req: &RestoreRequest,
    tmp_dir: &std::path::Path,
    progress: Arc<Progress>,
    journal: &journal::Journal,
) -> Result<Report> {
    let result = match &r.config.kind {
        Kind::Postgres(j) => postgres::run(r, j, req, tmp_dir, progress, journal).await,
        Kind::Files(_) => files::run(r, req, tmp_dir, progress).await,
        Kind::Redis(_) => redis::run(r, req, progress).await,
        other => Err(not_restorable(&r.job, other)),
    };
    settle_outcome(cfg, state, journal, &result).await?;
    result
}

/// Mark the journal done, or clean up at once after a failure.
pub(crate) async fn settle_outcome<T>(
    cfg: &LoadedConfig,
    state: &crate::services::state::State,
    journal: &journal::Journal,
    result: &Result<T>,
) -> Result<()> {
    match result {
        Ok(_) => journal.step(journal::Step::Done).await?,
        Err(e) => {
            let cleaned = match journal::entry(state, journal.id).await {
                Ok(entry) => {
                    let why = crate::base::secret::redact(&e.to_string());
                    journal::settle(cfg, state, &entry, Some(&why)).await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = cleaned {
                tracing::error!(error = %err, "cleaning up after the failed restore; `drctl status` retries");
            }
        }
    }
    Ok(())
}

/// The notice that ends a restore's announcement: its kind and summary.
fn ended(what: &str, result: &Result<Report>, seconds: f64) -> (&'static str, String) {
    match result {
        Ok(rep) => (
            "restore_finished",
            format!("{what} finished into {} in {seconds:.1}s", rep.target),
        ),
        Err(e) => (
            "restore_failed",
            format!(
                "{what} failed: {}",
                crate::base::secret::redact(&e.to_string())
            ),
        ),
    }
}

/// In an incident the team wants to know a restore is running and how it
/// ended: an info notice, routed like any other (a failure to queue it
/// never stops the restore).
pub(crate) async fn announce(
    alerter: &crate::services::alerts::Alerter<'_>,
    job: &JobName,
    kind: &str,
    summary: String,
) {
    let severity = crate::services::alerts::Severity::Info;
    if let Err(e) = alerter
        .job_notice(kind, job.as_str(), severity, summary)
        .await
    {
        tracing::warn!(error = %e, "cannot queue the restore's notice");
    }
}

async fn release(lease: crate::services::repository::HeldLease) {
    let key = lease.key.clone();
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, lease = %key, "cannot release the lease; it expires after the repository's lease_ttl");
    }
}

fn not_restorable(job: &JobName, kind: &Kind) -> Error {
    Error::WrongKind {
        job: job.to_string(),
        kind: kind.name(),
        expected: crate::config::BACKUP_KINDS,
    }
}

pub(crate) fn base_plan(
    r: &Resolved<'_>,
    target: String,
    replaces_existing: bool,
    steps: Vec<String>,
) -> Plan {
    Plan {
        job: r.job.to_string(),
        kind: r.manifest.kind.clone(),
        repository: r.repo.location(),
        backup_id: r.manifest.id.to_string(),
        backup_finished_at: r.manifest.finished_at.to_rfc3339(),
        backup_host: r.manifest.host.clone(),
        stored_bytes: r.manifest.stored_bytes(),
        raw_bytes: r.manifest.raw_bytes(),
        target,
        replaces_existing,
        steps,
        notes: Vec::new(),
        undoes: None,
    }
}

/// Fetch `artifact` of the resolved backup into the temporary file `tmp`
/// (verified, decrypted, decompressed), stoppable by the request's cancel;
/// the file is removed when it fails. Returns the seconds it took.
pub(crate) async fn fetch_to_temp(
    r: &Resolved<'_>,
    req: &RestoreRequest,
    artifact: &crate::base::manifest::Artifact,
    tmp: &std::path::Path,
    progress: &Arc<Progress>,
    what: &str,
) -> Result<f64> {
    progress.set_phase("fetch", artifact.stored_bytes);
    let t0 = std::time::Instant::now();
    let fetch = fetch::to_file(
        &r.repo,
        &r.job,
        &r.manifest.id,
        artifact,
        tmp,
        Some(progress.clone()),
        &r.keys,
    );
    if let Err(e) = cancellable(&req.cancel, what, fetch).await {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Run `work` unless `cancel` fires first (then `Interrupted`). Each kind
/// wraps its phases with this so it can clean up what it created.
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    what: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Interrupted(format!("{what} cancelled"))),
    }
}

/// Free bytes on the filesystem holding `dir`.
pub(crate) fn free_space(dir: &std::path::Path) -> Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io(format!("statvfs {}", dir.display()), e.into()))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}
