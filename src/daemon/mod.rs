//! `drctl daemon`: runs every scheduled job on its cron schedule.
//!
//! Life cycle: load config → close stale runs → register jobs with
//! tokio-cron-scheduler → catch up missed runs (after waiting for each
//! database, each job on its own) → READY → serve signals:
//! SIGHUP reloads a validated config (an invalid one is logged and the old
//! one stays), SIGTERM/SIGINT stop new runs, wait up to `grace_period` for
//! running ones, then cancel them (children killed, runs recorded as
//! interrupted, no manifest).
//!
//! A tick that finds its job still running records a skip; the host lock
//! (`lock.rs`) keeps `drctl run` and the daemon apart.

mod copies;
mod exposition;
mod fleet;
mod http;
mod internal;
mod marker;
mod notify;
mod preflight;
mod trim;
mod wal_stream;

use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
use crate::base::schedule::Schedule;
use crate::config::LoadedConfig;
use crate::services::state::State;
use chrono::Utc;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Shared by the scheduler's callbacks and the signal loop.
struct Daemon {
    config: RwLock<Arc<LoadedConfig>>,
    state: State,
    running: Mutex<HashSet<String>>,
    /// Set once shutdown starts: no new runs.
    stopping: CancellationToken,
    /// Cancelled when the grace period is over: running jobs stop.
    hard_stop: CancellationToken,
    tasks: TaskTracker,
    /// When the scheduler last fired each job (liveness: see `overdue`).
    ticks: Mutex<BTreeMap<String, chrono::DateTime<Utc>>>,
    started: chrono::DateTime<Utc>,
    /// Failures the state database may never have got (see `internal`).
    internal: internal::Internal,
    /// Each streaming job's receiver and slot, for `/metrics`.
    streams: Mutex<BTreeMap<String, wal_stream::Health>>,
}

impl Daemon {
    fn saw_tick(&self, name: &str) {
        if let Ok(mut t) = self.ticks.lock() {
            t.insert(name.to_owned(), Utc::now());
        }
    }

    /// The newest tick of any job.
    fn last_tick(&self) -> Option<chrono::DateTime<Utc>> {
        self.ticks
            .lock()
            .ok()
            .and_then(|t| t.values().max().copied())
    }

    /// Scheduled jobs whose due tick has not come, and how late it is.
    fn overdue(&self) -> Vec<(String, chrono::TimeDelta)> {
        let now = Utc::now();
        let ticks = self.ticks.lock().map(|t| t.clone()).unwrap_or_default();
        scheduled(&self.config())
            .into_iter()
            .filter_map(|(name, s)| {
                let since = ticks
                    .get(&name)
                    .copied()
                    .unwrap_or(self.started)
                    .max(self.started);
                crate::base::schedule::overdue(
                    s.next_after(since),
                    now,
                    chrono::TimeDelta::minutes(1),
                )
                .map(|late| (name, late))
            })
            .collect()
    }

    fn config(&self) -> Arc<LoadedConfig> {
        self.config
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    /// A tick: start the job unless it is running or we are stopping.
    async fn tick(self: &Arc<Self>, name: String, trigger: &'static str) {
        if trigger == "schedule" {
            crate::base::faults::point("scheduler.tick").await;
            self.saw_tick(&name);
        }
        if self.stopping.is_cancelled() {
            return;
        }
        let cfg = self.config();
        let Ok((_, job)) = cfg.job(&name) else { return };
        let kind = job.kind();
        let inserted = self
            .running
            .lock()
            .is_ok_and(|mut r| r.insert(name.clone()));
        if !inserted {
            let reason = "skipped: the previous run is still going";
            tracing::warn!(job = %name, "{reason}");
            if let Err(e) = self
                .state
                .record_skipped(&name, kind, trigger, reason)
                .await
            {
                tracing::error!(error = %e, "cannot record a skipped run");
                self.internal.note(
                    "record_skipped",
                    None,
                    format!("{name}: cannot record a skipped run: {e}"),
                    Utc::now(),
                );
            }
            return;
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            // The scheduled occurrence this tick stands for (cluster claims key on it).
            let at = match trigger {
                "schedule" => scheduled(&me.config())
                    .get(&name)
                    .and_then(|s| s.previous_at_or_before(Utc::now())),
                _ => None,
            };
            me.run_with_retries(&name, trigger, at).await;
            if let Ok(mut r) = me.running.lock() {
                r.remove(&name);
            }
        });
    }

    async fn run_with_retries(
        &self,
        name: &str,
        trigger: &'static str,
        at: Option<chrono::DateTime<Utc>>,
    ) {
        let cfg = self.config();
        let Ok((_, job)) = cfg.job(name) else { return };
        let sched = job.scheduling();
        if let (Some(j), "schedule") = (sched.jitter, trigger) {
            let delay = Duration::from_millis(rand::random_range(0..=j.as_millis().max(1) as u64));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stopping.cancelled() => return,
            }
        }
        let attempts = crate::engine::runner::Attempts {
            retries: sched.retries,
            retry_delay: sched.retry_delay,
            stopping: self.stopping.clone(),
            mark: crate::base::manifest::Mark::default(),
        };
        let _ = crate::engine::runner::run_alerted(
            &cfg,
            &self.state,
            name,
            trigger,
            Progress::new(),
            &self.hard_stop,
            at,
            &attempts,
            &self.internal,
        )
        .await;
    }

    /// A drill's tick: run it unless it is running or we are stopping.
    fn drill_tick(self: &Arc<Self>, name: String) {
        if self.stopping.is_cancelled() {
            return;
        }
        let key = format!("drill:{name}");
        let inserted = self.running.lock().is_ok_and(|mut r| r.insert(key.clone()));
        if !inserted {
            tracing::warn!(drill = %name, "skipped: the previous drill is still running");
            return;
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            let cfg = me.config();
            let opts = crate::engine::drill::Options {
                id: None,
                keep: false,
                trigger: "schedule".into(),
                cancel: me.hard_stop.child_token(),
                progress: Progress::new(),
            };
            match crate::engine::drill::run(&cfg, &me.state, &name, opts).await {
                Ok(r) => tracing::info!(drill = %name, outcome = %r.outcome, seconds = r.total_seconds.unwrap_or(0.0), "drill finished"),
                Err(e) => tracing::error!(drill = %name, error = %e, "drill could not run"),
            }
            if let Ok(mut r) = me.running.lock() {
                r.remove(&key);
            }
        });
    }

    /// Build report `name` and queue it to its channels (the alert worker delivers).
    async fn report_tick(&self, name: &str) {
        if self.stopping.is_cancelled() {
            return;
        }
        let cfg = self.config();
        let Some(r) = cfg.config.reports.get(name) else {
            return;
        };
        let built = match crate::engine::report::build(&cfg, &self.state, r.since).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(report = name, error = %e, "cannot build the report");
                return;
            }
        };
        let queued = crate::services::alerts::Alerter::new(&cfg, &self.state)
            .report(
                name,
                &r.channels,
                built.headline(),
                crate::engine::report::markdown(&built),
                crate::engine::report::html(&built),
            )
            .await;
        match queued {
            Ok(()) => tracing::info!(report = name, "report queued"),
            Err(e) => tracing::error!(report = name, error = %e, "cannot queue the report"),
        }
    }

    /// "3 jobs, next: appdb at 02:00:00 UTC"
    fn status_line(&self) -> String {
        let cfg = self.config();
        let now = Utc::now();
        let next = scheduled(&cfg)
            .into_iter()
            .filter_map(|(name, s)| s.next_after(now).map(|t| (t, name)))
            .min();
        let n = cfg.config.jobs.len();
        match next {
            Some((t, name)) => format!(
                "{n} jobs, next: {name} at {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => format!("{n} jobs, none scheduled"),
        }
    }
}

/// Jobs with a schedule, parsed.
fn scheduled(cfg: &LoadedConfig) -> BTreeMap<String, Schedule> {
    cfg.config
        .jobs
        .iter()
        .filter_map(|(name, job)| {
            let s = job.scheduling().schedule()?.ok()?;
            Some((name.clone(), s))
        })
        .collect()
}

/// Each scheduled job's current UTC offset in seconds.
fn utc_offsets(cfg: &LoadedConfig, now: chrono::DateTime<Utc>) -> BTreeMap<String, i32> {
    use chrono::Offset;
    scheduled(cfg)
        .into_iter()
        .map(|(name, s)| {
            (
                name,
                now.with_timezone(&s.tz).offset().fix().local_minus_utc(),
            )
        })
        .collect()
}

async fn register(sched: &JobScheduler, d: &Arc<Daemon>, cfg: &LoadedConfig) -> Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for (name, s) in scheduled(cfg) {
        // Liveness counts from when a job was first scheduled (a job added
        // by SIGHUP is not "late" for the hours before it existed).
        if let Ok(mut t) = d.ticks.lock() {
            t.entry(name.clone()).or_insert_with(Utc::now);
        }
        let daemon = d.clone();
        let job_name = name.clone();
        let job = Job::new_async_tz(s.expr.as_str(), s.tz, move |_id, _lock| {
            let daemon = daemon.clone();
            let name = job_name.clone();
            Box::pin(async move { daemon.tick(name, "schedule").await })
        })
        .map_err(|source| Error::Scheduler {
            context: format!("scheduling job {name}"),
            source,
        })?;
        ids.push(sched.add(job).await.map_err(|source| Error::Scheduler {
            context: format!("scheduling job {name}"),
            source,
        })?);
    }
    Ok(ids)
}

async fn register_drills(
    sched: &JobScheduler,
    d: &Arc<Daemon>,
    cfg: &LoadedConfig,
) -> Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for (name, drill) in &cfg.config.drills {
        let Some(expr) = &drill.schedule else {
            continue;
        };
        let s = Schedule::of(expr, drill.timezone.as_ref())?;
        let daemon = d.clone();
        let drill_name = name.clone();
        let job = Job::new_async_tz(s.expr.as_str(), s.tz, move |_id, _lock| {
            let daemon = daemon.clone();
            let name = drill_name.clone();
            Box::pin(async move { daemon.drill_tick(name) })
        })
        .map_err(|source| Error::Scheduler {
            context: format!("scheduling drill {name}"),
            source,
        })?;
        ids.push(sched.add(job).await.map_err(|source| Error::Scheduler {
            context: format!("scheduling drill {name}"),
            source,
        })?);
    }
    for (name, r) in &cfg.config.reports {
        let s = Schedule::of(&r.schedule, r.timezone.as_ref())?;
        let daemon = d.clone();
        let report_name = name.clone();
        let job = Job::new_async_tz(s.expr.as_str(), s.tz, move |_id, _lock| {
            let daemon = daemon.clone();
            let name = report_name.clone();
            Box::pin(async move { daemon.report_tick(&name).await })
        })
        .map_err(|source| Error::Scheduler {
            context: format!("scheduling report {name}"),
            source,
        })?;
        ids.push(sched.add(job).await.map_err(|source| Error::Scheduler {
            context: format!("scheduling report {name}"),
            source,
        })?);
    }
    Ok(ids)
}

/// At start: for each job whose last success predates its previous
/// scheduled time, wait for its database (up to `startup_wait`) and run it
/// once now. Each job waits on its own; none blocks another.
async fn catch_up(d: &Arc<Daemon>) {
    let cfg = d.config();
    let now = Utc::now();
    for (name, s) in scheduled(&cfg) {
        let Ok((job_name, job)) = cfg.job(&name) else {
            continue;
        };
        if !job.scheduling().catch_up {
            continue;
        }
        let mut last = d.state.last_success(&name).await.ok().flatten();
        // The repository is the truth: a backup made elsewhere counts too.
        if let Some(repo_name) = job.repository() {
            if let Ok(rc) = cfg.repository(repo_name) {
                if let Ok(repo) = crate::services::repository::Repository::open(repo_name, rc).await
                {
                    if let Ok(latest) = repo.latest(&job_name).await {
                        last = last.max(Some(latest.id.timestamp()));
                    }
                }
            }
        }
        if !s.missed(last, now) {
            continue;
        }
        tracing::info!(job = %name, last_success = ?last, "missed a scheduled run; catching up now");
        let daemon = d.clone();
        let wait = match &job.kind {
            crate::config::Kind::Postgres(p) => Some((p.clone(), p.startup_wait)),
            _ => None,
        };
        d.tasks.spawn(async move {
            if let Some((p, limit)) = wait {
                if !wait_for_database(&p, limit, &daemon.stopping).await {
                    return;
                }
            }
            daemon.tick(name, "catch_up").await;
        });
    }
}

/// Try to connect with backoff (0.5 s doubling to 8 s) until `limit`.
async fn wait_for_database(
    job: &crate::config::PostgresJob,
    limit: Duration,
    stop: &CancellationToken,
) -> bool {
    let Ok(target) = crate::services::pg::job_target(job) else {
        return true;
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(500);
    loop {
        // Where the job's tools are: a container's server is reached through it.
        let reached = async {
            let tools = crate::services::pg::PgTools::for_job(job).await?;
            crate::services::pg::SqlSession::open(&tools, &target)
                .await?
                .close()
                .await
        };
        match reached.await {
            Ok(()) => return true,
            Err(e) if tokio::time::Instant::now() + delay > deadline => {
                tracing::error!(database = %target.display(), waited = ?limit, error = %e, "database unreachable; the job will run on its next tick");
                return false;
            }
            Err(e) => {
                tracing::info!(database = %target.display(), error = %e, "waiting for the database");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(8));
    }
}

/// Run the daemon until SIGTERM/SIGINT.
/// Load the config and insist every `*_env`/`*_file` reference resolves: a
/// daemon that starts (or reloads) without a secret fails every run later,
/// far from the change that caused it.
fn load_resolved(path: Option<&std::path::Path>) -> Result<LoadedConfig> {
    let cfg = LoadedConfig::load(path)?;
    match cfg.unresolved_refs().into_iter().next() {
        Some(e) => Err(e),
        None => Ok(cfg),
    }
}

/// Stop: no new runs, running jobs get `grace` then are cancelled, the
/// workers end, the stop notice is queued and, bounded, delivered.
async fn shut_down(
    d: &Arc<Daemon>,
    mut sched: JobScheduler,
    workers: [tokio::task::JoinHandle<()>; 7],
    grace: Duration,
) {
    let running: Vec<String> = d
        .running
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default();
    tracing::info!(
        ?running,
        ?grace,
        "stopping: no new runs; waiting for running jobs"
    );
    notify::stopping(&format!(
        "stopping, waiting for {} running job(s)",
        running.len()
    ));
    d.stopping.cancel();
    let _ = sched.shutdown().await;
    d.tasks.close();
    let cancelled = tokio::time::timeout(grace, d.tasks.wait()).await.is_err();
    if cancelled {
        tracing::warn!(?grace, "grace period over; cancelling running jobs");
        d.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), d.tasks.wait()).await;
    }
    for w in workers {
        let _ = w.await;
    }
    let cfg = d.config();
    let (severity, summary) = stop_notice(&running, cancelled, grace);
    let alerter = crate::services::alerts::Alerter::new(&cfg, &d.state);
    if let Err(e) = alerter.notice("daemon_stopped", severity, summary).await {
        tracing::error!(error = %e, "cannot queue the stop notice");
    }
    // Last delivery pass, bounded: what is left waits in the outbox for the next start.
    let flush = Duration::from_secs(10);
    match tokio::time::timeout(
        flush,
        crate::services::alerts::deliver_due(
            &cfg,
            &d.state,
            Some(tokio::time::Instant::now() + flush),
        ),
    )
    .await
    {
        Ok(Err(e)) => tracing::error!(error = %e, "delivering alerts"),
        Err(_) => tracing::warn!("alert delivery still busy at exit; the outbox keeps the rest"),
        Ok(Ok(_)) => {}
    }
}

/// Drop `old` schedules and register every job and drill of `cfg` again.
async fn reschedule(
    sched: &JobScheduler,
    d: &Arc<Daemon>,
    cfg: &LoadedConfig,
    old: Vec<Uuid>,
) -> Result<Vec<Uuid>> {
    for id in old {
        let _ = sched.remove(&id).await;
    }
    let mut ids = register(sched, d, cfg).await?;
    ids.extend(register_drills(sched, d, cfg).await?);
    Ok(ids)
}

/// Serve the endpoint until the daemon stops. A port that is taken (another
/// exporter, a second daemon) is logged and retried with backoff while the
/// scheduler runs: backups matter more than their metrics, and exiting
/// would only make systemd restart the daemon every 10 s forever.
fn serve_http(d: &Arc<Daemon>, addr: std::net::SocketAddr) {
    let d = d.clone();
    tokio::spawn(async move {
        let mut attempt = 0u32;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    let wait = bind_retry_wait(attempt);
                    tracing::error!(
                        %addr,
                        error = %e,
                        retry_in = %humantime::format_duration(wait),
                        "cannot serve /metrics, /health and /status on [http] listen; \
                         jobs keep running on schedule"
                    );
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = d.stopping.cancelled() => return,
                    }
                }
            }
        };
        if attempt > 0 {
            tracing::warn!(%addr, attempts = attempt + 1, "the HTTP endpoint is bound at last");
        }
        tracing::info!(%addr, "serving /metrics, /health and /status");
        let app = http::router(d.clone());
        http::serve(listener, app, d.stopping.clone()).await;
    });
}

/// 5 s, 10 s, 20 s ... up to 5 min between attempts to bind the endpoint.
fn bind_retry_wait(attempt: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << attempt.min(6)).min(300))
}

/// What the stop notice says: news only when jobs were still running.
fn stop_notice(
    running: &[String],
    cancelled: bool,
    grace: Duration,
) -> (crate::services::alerts::Severity, String) {
    use crate::services::alerts::Severity;
    match (running.is_empty(), cancelled) {
        (true, _) => (Severity::Info, "drctl daemon stopped".to_string()),
        (false, false) => (
            Severity::Warning,
            format!(
                "drctl daemon stopped with jobs still running ({}); they finished within the grace period",
                running.join(", ")
            ),
        ),
        (false, true) => (
            Severity::Warning,
            format!(
                "drctl daemon stopped with jobs still running ({}); cancelled after the {} grace period, their runs are recorded as interrupted",
                running.join(", "),
                humantime::format_duration(grace)
            ),
        ),
    }
}

/// Run the daemon until SIGTERM/SIGINT: schedule every job, serve the
/// endpoint, deliver alerts, evaluate RPO; SIGHUP reloads the config.
pub async fn run(config_path: Option<PathBuf>) -> Result<()> {
    let cfg = Arc::new(load_resolved(config_path.as_deref())?);
    for (key, message) in cfg.warnings() {
        tracing::warn!(key, "{message}");
    }
    let state = State::open(&cfg.config.state_dir).await?;
    let d = Arc::new(Daemon {
        config: RwLock::new(cfg.clone()),
        state,
        running: Mutex::new(HashSet::new()),
        stopping: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
        ticks: Mutex::new(BTreeMap::new()),
        started: Utc::now(),
        internal: internal::Internal::default(),
        streams: Mutex::new(BTreeMap::new()),
    });
    let sched_err = |source: tokio_cron_scheduler::JobSchedulerError| Error::Scheduler {
        context: "scheduler".into(),
        source,
    };
    let sched = JobScheduler::new().await.map_err(sched_err)?;
    let mut ids = reschedule(&sched, &d, &cfg, Vec::new()).await?;
    let mut offsets = utc_offsets(&cfg, Utc::now());
    if cfg.config.http.enabled {
        serve_http(&d, cfg.config.http.listen);
    }
    sched.start().await.map_err(sched_err)?;
    let workers = spawn_workers(&d);
    catch_up(&d).await;

    let io = |e| Error::io("installing signal handlers", e);
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let status = d.status_line();
    tracing::info!(%status, "daemon started");
    announce_start(&cfg, &d.state, &status).await;
    {
        let d = d.clone();
        let cfg = cfg.clone();
        d.tasks.clone().spawn(async move {
            // Restores killed while no daemon ran (a point-in-time one may
            // have left a server or half a cluster): settled and reported.
            for note in crate::engine::restore::journal::recover(&cfg, &d.state).await {
                tracing::warn!("{note}");
            }
            for note in crate::engine::drill::sweep_stale(&cfg).await {
                tracing::warn!("{note}");
            }
            preflight::check_jobs(&cfg, &d.state, Duration::from_secs(30)).await;
        });
    }
    notify::ready(&status);
    let mut heartbeat =
        tokio::time::interval(notify::watchdog_interval().unwrap_or(Duration::from_secs(30)));

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify::reloading();
                match load_resolved(config_path.as_deref()) {
                    Ok(new) => {
                        let new = Arc::new(new);
                        if let Ok(mut c) = d.config.write() {
                            *c = new.clone();
                        }
                        ids = reschedule(&sched, &d, &new, ids).await?;
                        offsets = utc_offsets(&new, Utc::now());
                        tracing::info!(jobs = new.config.jobs.len(), "configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "configuration reload failed; keeping the running configuration"),
                }
                notify::ready(&d.status_line());
            }
            _ = heartbeat.tick() => {
                // The watchdog is fed only while the scheduler keeps firing:
                // a scheduler that stopped gets the daemon restarted.
                let late = d.overdue();
                if late.is_empty() {
                    notify::watchdog();
                } else {
                    tracing::error!(?late, "scheduled ticks are overdue; not feeding the systemd watchdog");
                }
                // tokio-cron-scheduler fixes a job's UTC offset when the job
                // is created; re-register when a zone's offset changes (DST),
                // so "02:00 Europe/Berlin" stays 02:00 local all year.
                let cfg = d.config();
                let now_offsets = utc_offsets(&cfg, Utc::now());
                if now_offsets != offsets {
                    tracing::info!("a time zone changed its UTC offset; rescheduling");
                    ids = reschedule(&sched, &d, &cfg, ids).await?;
                    offsets = now_offsets;
                }
                notify::status(&d.status_line());
            }
        }
    }

    shut_down(&d, sched, workers, cfg.config.daemon.grace_period).await;
    tracing::info!("daemon stopped");
    Ok(())
}

/// The daemon's background workers: alerts, RPO (and WAL chains), the
/// fleet status, copies, WAL streaming, PITR markers, the code-page trim.
fn spawn_workers(d: &Arc<Daemon>) -> [tokio::task::JoinHandle<()>; 7] {
    [
        tokio::spawn(alert_worker(d.clone())),
        tokio::spawn(rpo_worker(d.clone())),
        tokio::spawn(fleet::worker(d.clone())),
        tokio::spawn(copies::worker(d.clone())),
        tokio::spawn(wal_stream::worker(d.clone())),
        tokio::spawn(marker::worker(d.clone())),
        tokio::spawn(trim::worker(d.stopping.clone())),
    ]
}

/// The `daemon_started` notice (info: a restart loop shows in the channels).
async fn announce_start(cfg: &LoadedConfig, state: &State, status: &str) {
    if let Err(e) = crate::services::alerts::Alerter::new(cfg, state)
        .notice(
            "daemon_started",
            crate::services::alerts::Severity::Info,
            format!("drctl daemon started ({status})"),
        )
        .await
    {
        tracing::error!(error = %e, "cannot queue the start notice");
    }
}

/// Evaluates each job's RPO every `rpo::interval(target)` (a tenth of the
/// target, between 100 ms and a minute), from the repository.
async fn rpo_worker(d: Arc<Daemon>) {
    let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let cfg = d.config();
        let targets = crate::engine::rpo::targets(&cfg);
        let physical = crate::engine::wal::physical_jobs(&cfg);
        due.retain(|k, _| {
            targets.iter().any(|t| &t.key() == k)
                || k.strip_prefix("wal:")
                    .is_some_and(|j| physical.iter().any(|p| p == j))
        });
        let now = tokio::time::Instant::now();
        for t in &targets {
            let next = due.entry(t.key()).or_insert(now);
            if *next > now {
                continue;
            }
            *next = now + crate::engine::rpo::interval(t.target);
            let eval = crate::engine::rpo::evaluate_in(&cfg, &d.state, &t.job, &t.repository);
            tokio::select! {
                r = eval => if let Err(e) = r {
                    tracing::warn!(job = %t.job, repository = %t.repository, error = %e, "RPO evaluation failed");
                },
                () = d.stopping.cancelled() => return,
            }
        }
        for job in crate::engine::wal::physical_jobs(&cfg) {
            let next = due.entry(format!("wal:{job}")).or_insert(now);
            if *next > now {
                continue;
            }
            *next = now + WAL_CHAIN_EVERY;
            tokio::select! {
                () = wal_chain(&cfg, &d.state, &job) => {},
                () = d.stopping.cancelled() => return,
            }
        }
        let wake = due
            .values()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1))
            .min(tokio::time::Instant::now() + Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = d.stopping.cancelled() => return,
        }
    }
}

/// How often the daemon looks for gaps in each physical job's WAL chain.
const WAL_CHAIN_EVERY: Duration = Duration::from_secs(30);

/// Look at a physical job's WAL chain and raise or clear `wal_gap:JOB`
/// and `wal_timelines_diverged:JOB`.
async fn wal_chain(cfg: &crate::config::LoadedConfig, state: &State, job: &str) {
    let checked = async {
        let (name, jc, _) = crate::engine::wal::physical_job(cfg, Some(job))?;
        let repo_name = jc.backup_repository(job)?;
        let repo =
            crate::services::repository::Repository::open(repo_name, cfg.repository(repo_name)?)
                .await?;
        let mut c =
            crate::engine::wal::check(cfg, &repo, &name, crate::engine::wal::Depth::Chain, None)
                .await?;
        if c.ok() {
            // The listing cannot see a damaged object that `verify` found:
            // before resolving, read those files again as verify did.
            let key = format!("wal_gap:{job}");
            let named: Vec<String> = crate::services::alerts::active(state)
                .await?
                .into_iter()
                .filter(|a| a.key == key && a.state.active())
                .filter_map(|a| a.detail)
                .flat_map(|d| crate::engine::wal::damaged_in(&d))
                .collect();
            if !named.is_empty() {
                c.damaged = crate::engine::wal::recheck(cfg, &repo, &name, &named).await?;
            }
        }
        Ok::<_, Error>(c)
    }
    .await;
    match checked {
        Ok(c) => {
            tracing::debug!(
                job,
                gaps = c.gaps.len(),
                damaged = c.damaged.len(),
                diverged = c.diverged.len(),
                "WAL chain checked"
            );
            crate::engine::wal::alert_gaps(cfg, state, &c).await;
        }
        Err(e) => tracing::warn!(job, error = %e, "cannot check the WAL chain"),
    }
}

/// How often the alert worker looks at conditions and the outbox.
const ALERT_TICK: Duration = Duration::from_secs(5);

/// Every five seconds, and whenever this process queues a notification:
/// promote and repeat conditions, then deliver due outbox
/// rows. Stops at shutdown (the stop path does one last bounded pass).
/// A failure kept because the state database refused its alert.
fn deferred(error: &str) -> crate::services::alerts::Finished {
    crate::services::alerts::Finished::Failed {
        error: error.to_owned(),
        already_alerted: false,
    }
}

async fn alert_worker(d: Arc<Daemon>) {
    let mut housekeeping = tokio::time::Instant::now()
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or_else(tokio::time::Instant::now);
    let mut first = true;
    loop {
        // Sleep until the next retry is due, at most ALERT_TICK.
        let wait = if std::mem::take(&mut first) {
            Duration::ZERO
        } else {
            match crate::services::alerts::next_due(&d.state).await {
                Ok(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(ALERT_TICK),
                _ => ALERT_TICK,
            }
            .max(Duration::from_millis(50))
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Queued by this daemon: deliver now. Rows queued by `drctl run`
            // in another process wait for the next poll at most.
            () = crate::services::alerts::queued() => {}
            () = d.stopping.cancelled() => return,
        }
        let cfg = d.config();
        let alerter = crate::services::alerts::Alerter::new(&cfg, &d.state);
        for mut f in d.internal.take_deferred() {
            if alerter.job_finished(&f.job, &deferred(&f.error)).await {
                continue;
            }
            // Still refused: after a while, straight to the channels.
            if f.direct_due(Utc::now()) {
                let c = crate::services::alerts::Condition::job_failed(&f.job, &f.error);
                f.sent_directly = alerter.send_direct(&c).await > 0;
                if f.sent_directly {
                    tracing::warn!(job = %f.job, "job_failed delivered straight to the channels: the state database refuses to queue it");
                }
            }
            d.internal.keep(f);
        }
        if let Err(e) = alerter.sweep().await {
            tracing::error!(error = %e, "evaluating alerts");
        }
        if housekeeping.elapsed() >= Duration::from_secs(3600) {
            housekeeping = tokio::time::Instant::now();
            if let Err(e) = alerter.forget_finished().await {
                tracing::warn!(error = %e, "forgetting old outbox rows");
            }
            let before = Utc::now()
                - chrono::Duration::from_std(cfg.config.history)
                    .unwrap_or_else(|_| chrono::Duration::days(90));
            match d.state.prune_history(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "pruned history older than `history`"),
                Err(e) => tracing::warn!(error = %e, "pruning old history"),
            }
        }
        match crate::services::alerts::has_pending(&d.state).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => tracing::error!(error = %e, "reading the outbox"),
        }
        let pass = crate::services::alerts::deliver_due(&cfg, &d.state, None);
        tokio::select! {
            r = pass => if let Err(e) = r {
                tracing::error!(error = %e, "delivering alerts");
            },
            () = d.stopping.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_the_endpoint_backs_off_to_five_minutes() {
        let waits: Vec<u64> = (0..9).map(|a| bind_retry_wait(a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn the_stop_notice_is_news_only_when_jobs_were_running() {
        use crate::services::alerts::Severity;
        let grace = Duration::from_secs(90);
        assert_eq!(stop_notice(&[], false, grace).0, Severity::Info);
        assert_eq!(stop_notice(&[], true, grace).0, Severity::Info);
        let running = ["appdb".to_owned()];
        let (sev, text) = stop_notice(&running, false, grace);
        assert_eq!(sev, Severity::Warning);
        assert!(
            text.contains("appdb") && text.contains("finished within"),
            "{text}"
        );
        let (_, text) = stop_notice(&running, true, grace);
        assert!(
            text.contains("1m 30s grace period") && text.contains("interrupted"),
            "{text}"
        );
    }

    #[test]
    fn offsets_change_across_dst_so_jobs_get_rescheduled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[repositories.r]\ntype = \"local\"\npath = \"/tmp/r\"\n[jobs.a]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"r\"\nschedule = \"0 0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[jobs.b]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"r\"\nschedule = \"0 0 2 * * *\"\n",
        )
        .unwrap();
        let cfg = LoadedConfig::load(Some(&p)).unwrap();
        let winter = utc_offsets(&cfg, "2026-03-29T00:59:00Z".parse().unwrap());
        let summer = utc_offsets(&cfg, "2026-03-29T01:01:00Z".parse().unwrap());
        assert_eq!(winter["a"], 3600);
        assert_eq!(summer["a"], 7200);
        assert_eq!(winter["b"], summer["b"]);
    }
}
