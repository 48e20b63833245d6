//! The daemon's HTTP endpoint (loopback by default): `/metrics` in the
//! Prometheus text format, `/health`, and `/status` as JSON. Metrics are
//! derived from the state database at scrape time, so runs made by
//! `drctl run` outside the daemon count too and nothing is lost on restart
//! except what Prometheus already expects counters to lose.

use super::exposition;
use super::Daemon;
use crate::config::LoadedConfig;
use crate::engine::status::JobStatus;
use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connections served at once. Beyond it, new ones wait in the kernel's
/// accept queue and cost the daemon no descriptor: however many connections
/// a local user opens, the scheduler keeps the descriptors its runs need.
const MAX_CONNECTIONS: usize = 64;
/// A client gets this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (keep-alive included): a scraper reconnects,
/// a client that trickles or idles gives its slot back.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Request headers beyond this are refused (431); the routes take no body.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Serve `app` on `listener` until `stop`, with the limits above. axum's
/// `serve` has neither timeouts nor a connection limit: 1,100 idle
/// connections used to exhaust the daemon's descriptors and fail every
/// scheduled run.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            () = stop.cancelled() => return,
        };
        let Ok(slot) = slot else { return };
        let sock = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let sock = match sock {
            Ok((sock, _)) => sock,
            Err(e) => {
                // EMFILE and friends: back off rather than spin; the
                // connection stays queued in the kernel meanwhile.
                tracing::warn!(error = %e, "HTTP endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES);
            let conn = http.serve_connection(TokioIo::new(sock), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The job is `job_name`, not `job`: Prometheus gives every scraped series
/// its own `job` label (the scrape job), and a clashing one is renamed
/// `exported_job`, breaking every query written against the docs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    job_name: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/status", get(status))
        .with_state(d)
}

async fn statuses(d: &Daemon) -> Result<Vec<JobStatus>, Response> {
    crate::engine::status::jobs(&d.config(), &d.state, chrono::Utc::now())
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn health(AxState(d): AxState<Arc<Daemon>>) -> Response {
    if d.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    let late = d.overdue();
    if !late.is_empty() {
        let list: Vec<String> = late
            .iter()
            .map(|(job, l)| format!("{job} ({}s late)", l.num_seconds()))
            .collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scheduler overdue: {}\n", list.join(", ")),
        )
            .into_response();
    }
    if let Some(e) = d.internal.recent(chrono::Utc::now()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("internal error: {e}\n"),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn status(AxState(d): AxState<Arc<Daemon>>) -> Response {
    match statuses(&d).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

/// `wal = "stream"` jobs: the receiver's state and the slot's backlog.
fn register_streams(reg: &mut Registry, d: &Daemon) {
    let streams = d.streams.lock().map(|s| s.clone()).unwrap_or_default();
    if streams.is_empty() {
        return;
    }
    let up = Family::<JobLabels, Gauge>::default();
    let retained = Family::<JobLabels, Gauge>::default();
    for (job, h) in &streams {
        let l = JobLabels {
            job_name: job.clone(),
        };
        up.get_or_create(&l).set(i64::from(h.up));
        if let Some(b) = h.retained_bytes {
            retained
                .get_or_create(&l)
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "drctl_wal_stream_up",
        "1 while the job's pg_receivewal has run for 30s without failing",
        up,
    );
    reg.register(
        "drctl_wal_slot_retained_bytes",
        "WAL the job's replication slot holds back on the server",
        retained,
    );
}

// The exposition is written top to bottom, one metric family after the
// other; split, the families would only move apart.
#[allow(clippy::too_many_lines)]
async fn metrics(AxState(d): AxState<Arc<Daemon>>, headers: axum::http::HeaderMap) -> Response {
    let jobs = match statuses(&d).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let running = d.running.lock().map(|r| r.clone()).unwrap_or_default();
    let mut reg = Registry::default();
    let runs = Family::<OutcomeLabels, Counter>::default();
    let duration = Family::<JobLabels, FloatGauge>::default();
    let last_success = Family::<JobLabels, FloatGauge>::default();
    let size = Family::<JobLabels, Gauge>::default();
    let is_running = Family::<JobLabels, Gauge>::default();
    let next = Family::<JobLabels, FloatGauge>::default();
    let period = Family::<JobLabels, FloatGauge>::default();
    let last_failed = Family::<JobLabels, Gauge>::default();
    for j in &jobs {
        let l = JobLabels {
            job_name: j.job.clone(),
        };
        for outcome in ["succeeded", "failed", "interrupted", "skipped"] {
            let mut n = j.runs.get(outcome).copied().unwrap_or(0).max(0) as u64;
            if outcome == "failed" {
                n += d.internal.unrecorded(&j.job);
            }
            runs.get_or_create(&OutcomeLabels {
                job_name: j.job.clone(),
                outcome: outcome.into(),
            })
            .inc_by(n);
        }
        if let Some(s) = j.last_run_seconds {
            duration.get_or_create(&l).set(s);
        }
        if let Some(t) = j
            .last_success
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            last_success
                .get_or_create(&l)
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(b) = j.last_backup_bytes {
            size.get_or_create(&l).set(b);
        }
        if let Some(t) = j
            .next_run
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            next.get_or_create(&l).set(t.timestamp() as f64);
        }
        if let Some(p) = j.schedule_period_seconds {
            period.get_or_create(&l).set(p);
        }
        if let Some(r) = j.last_run.as_ref().filter(|r| r.finished_at.is_some()) {
            last_failed
                .get_or_create(&l)
                .set(i64::from(r.status == "failed"));
        }
        is_running
            .get_or_create(&l)
            .set(i64::from(running.contains(&j.job)));
    }
    reg.register("drctl_job_runs", "Runs on this host by outcome", runs);
    let internal = Family::<KindLabels, Counter>::default();
    for (kind, n) in d.internal.errors() {
        internal
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc_by(n);
    }
    reg.register(
        "drctl_internal_errors",
        "Errors inside the daemon itself (a run that could not be recorded, ...), counted in memory",
        internal,
    );
    if let Some(t) = d.last_tick() {
        let g = FloatGauge::default();
        g.set(t.timestamp_millis() as f64 / 1000.0);
        reg.register(
            "drctl_scheduler_last_tick_timestamp_seconds",
            "When the scheduler last fired a job (it stops moving if the scheduler dies)",
            g,
        );
    }
    let overdue = Gauge::<i64>::default();
    overdue.set(d.overdue().len() as i64);
    reg.register(
        "drctl_scheduler_overdue_jobs",
        "Scheduled jobs whose due tick is more than a minute late",
        overdue,
    );
    reg.register(
        "drctl_job_duration_seconds",
        "Duration of the job's last run",
        duration,
    );
    reg.register(
        "drctl_job_last_success_timestamp_seconds",
        "When the job last succeeded (Unix time)",
        last_success,
    );
    reg.register(
        "drctl_backup_size_bytes",
        "Stored size of the job's last committed backup",
        size,
    );
    reg.register(
        "drctl_job_running",
        "1 while a run of the job is in progress",
        is_running,
    );
    reg.register(
        "drctl_job_next_run_timestamp_seconds",
        "Next scheduled run (Unix time)",
        next,
    );
    reg.register(
        "drctl_job_schedule_period_seconds",
        "Seconds between the schedule's current and next occurrence: alert when the last success is older than two of them",
        period,
    );
    reg.register(
        "drctl_job_last_run_failed",
        "1 if the job's last finished run failed, 0 if it succeeded, was skipped or interrupted",
        last_failed,
    );
    match crate::engine::drill::list(&d.state, None, None, 1000).await {
        Ok(runs) => register_drills(&mut reg, &d.config(), runs),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    match crate::engine::restore::journal::finished(&d.state).await {
        Ok(rows) => register_restores(&mut reg, &rows),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    match crate::engine::rpo::saved(&d.state).await {
        Ok(rows) => register_rpo(&mut reg, &d.config(), rows),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    match crate::services::checks::metrics::all(&d.state).await {
        Ok(rows) => register_checks(&mut reg, &d.config(), rows),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    match crate::services::alerts::stats(&d.state).await {
        Ok(a) => register_alerts(&mut reg, a),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: crate::COMMIT.into(),
        })
        .set(1);
    reg.register(
        "drctl_build_info",
        "Always 1; the labels say which drctl runs (a fleet upgrade in one query)",
        build,
    );
    register_streams(&mut reg, &d);
    let up = Gauge::<i64>::default();
    up.set(1);
    reg.register("drctl_scheduler_up", "1 while the scheduler runs", up);
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &reg) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], body).into_response()
    } else {
        let text = exposition::to_text_format(&body);
        ([(header::CONTENT_TYPE, exposition::TEXT)], text).into_response()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: String,
    state: String,
}

type Labels = Vec<(String, String)>;

/// A stored check sample's labels as exposed: `job` becomes `job_name`
/// (see [`JobLabels`]).
fn exposed(labels: &Labels) -> Labels {
    labels
        .iter()
        .map(|(k, v)| {
            let k = if k == "job" { "job_name" } else { k.as_str() };
            (k.to_owned(), v.clone())
        })
        .collect()
}

/// Values maintenance and check runs stored (`checks::metrics`), for jobs
/// still in the config.
fn register_checks(
    reg: &mut Registry,
    cfg: &crate::config::LoadedConfig,
    rows: Vec<crate::services::checks::metrics::Stored>,
) {
    for (name, help, counter) in crate::services::checks::metrics::HELP {
        let mine = rows
            .iter()
            .filter(|r| r.name == *name && cfg.config.jobs.contains_key(&r.job));
        if *counter {
            let fam = Family::<Labels, Counter<f64, AtomicU64>>::default();
            for r in mine {
                fam.get_or_create(&exposed(&r.labels)).inc_by(r.value);
            }
            reg.register(*name, *help, fam);
        } else {
            let fam = Family::<Labels, FloatGauge>::default();
            for r in mine {
                fam.get_or_create(&exposed(&r.labels)).set(r.value);
            }
            reg.register(*name, *help, fam);
        }
    }
}

fn register_alerts(reg: &mut Registry, a: crate::services::alerts::AlertStats) {
    let firing = Family::<SeverityLabels, Gauge>::default();
    for sev in ["critical", "warning", "info"] {
        let n = a
            .firing
            .iter()
            .find(|(s, _)| s == sev)
            .map_or(0, |(_, n)| *n);
        firing
            .get_or_create(&SeverityLabels {
                severity: sev.into(),
            })
            .set(n);
    }
    reg.register(
        "drctl_alerts_firing",
        "Conditions currently firing, by severity",
        firing,
    );
    let deliveries = Family::<DeliveryLabels, Gauge>::default();
    for (channel, state, n) in a.deliveries {
        deliveries
            .get_or_create(&DeliveryLabels { channel, state })
            .set(n);
    }
    reg.register(
        "drctl_alert_deliveries",
        "Outbox rows by channel and state (pending, delivered, failed, expired)",
        deliveries,
    );
    let oldest = FloatGauge::default();
    oldest.set(a.oldest_pending.map_or(0.0, |t| {
        (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
    }));
    reg.register(
        "drctl_alert_oldest_pending_seconds",
        "Age of the oldest undelivered alert (0 when the outbox is drained); alert on this from outside",
        oldest,
    );
}

/// RPO series are per job and repository: `repository` is the job's own
/// or one of its copies ("the offsite copy is 3 days old" is a series of
/// its own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpoLabels {
    job_name: String,
    repository: String,
}

fn register_rpo(
    reg: &mut Registry,
    cfg: &LoadedConfig,
    rows: Vec<(String, f64, bool, Option<f64>)>,
) {
    let target = Family::<RpoLabels, FloatGauge>::default();
    let age = Family::<RpoLabels, FloatGauge>::default();
    let compliant = Family::<RpoLabels, Gauge>::default();
    for (key, t, ok, a) in rows {
        let (job, copy) = crate::engine::rpo::split_key(&key);
        let repository = match copy {
            Some(r) => r.to_owned(),
            None => cfg
                .config
                .jobs
                .get(job)
                .and_then(|j| j.repository())
                .unwrap_or_default()
                .to_owned(),
        };
        let l = RpoLabels {
            job_name: job.to_owned(),
            repository,
        };
        target.get_or_create(&l).set(t);
        if let Some(a) = a {
            age.get_or_create(&l).set(a);
        }
        compliant.get_or_create(&l).set(i64::from(ok));
    }
    reg.register("drctl_rpo_target_seconds", "The job's RPO target", target);
    reg.register(
        "drctl_rpo_age_seconds",
        "Age of the newest committed backup's data (any host's), at scrape time",
        age,
    );
    reg.register(
        "drctl_rpo_compliant",
        "1 while the newest backup is younger than the RPO target (as of the last evaluation)",
        compliant,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabels {
    drill: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillPhaseLabels {
    drill: String,
    phase: String,
}

/// From the restore journal: each job's last restore (its duration, the
/// measured RTO of a real restore) and when each outcome last happened.
fn register_restores(reg: &mut Registry, rows: &[crate::engine::restore::journal::Finished]) {
    let last = Family::<OutcomeLabels, FloatGauge>::default();
    let duration = Family::<JobLabels, FloatGauge>::default();
    let mut newest: std::collections::BTreeMap<&str, &crate::engine::restore::journal::Finished> =
        std::collections::BTreeMap::new();
    for r in rows {
        last.get_or_create(&OutcomeLabels {
            job_name: r.job.clone(),
            outcome: r.outcome.clone(),
        })
        .set(r.ended_ms as f64 / 1000.0);
        let e = newest.entry(r.job.as_str()).or_insert(r);
        if r.ended_ms > e.ended_ms {
            *e = r;
        }
    }
    for (job, r) in newest {
        duration
            .get_or_create(&JobLabels {
                job_name: job.to_owned(),
            })
            .set((r.ended_ms - r.started_ms).max(0) as f64 / 1000.0);
    }
    reg.register(
        "drctl_restore_last_timestamp_seconds",
        "When a restore of the job (CLI or drill) last ended with this outcome (done, failed, rolled_back), Unix time",
        last,
    );
    reg.register(
        "drctl_restore_duration_seconds",
        "Duration of the job's last restore (CLI or drill): the measured RTO",
        duration,
    );
}

/// From the drill records (newest first): the last success, the last
/// finished run's phase durations, and the configured RTO.
fn register_drills(
    reg: &mut Registry,
    cfg: &crate::config::LoadedConfig,
    runs: Vec<crate::engine::drill::DrillRecord>,
) {
    let success = Family::<DrillLabels, FloatGauge>::default();
    let duration = Family::<DrillPhaseLabels, FloatGauge>::default();
    let rto = Family::<DrillLabels, FloatGauge>::default();
    let failed = Family::<DrillLabels, Gauge>::default();
    for (name, d) in &cfg.config.drills {
        let l = DrillLabels {
            drill: name.clone(),
        };
        if let Some(r) = d.rto {
            rto.get_or_create(&l).set(r.as_secs_f64());
        }
        let mine = runs.iter().filter(|r| &r.drill == name);
        if let Some(ok) = mine
            .clone()
            .find(|r| r.outcome.restored())
            .and_then(|r| r.finished_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            success
                .get_or_create(&l)
                .set(ok.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(last) = mine.clone().find(|r| r.finished_at.is_some()) {
            failed.get_or_create(&l).set(i64::from(
                last.outcome == crate::engine::drill::DrillOutcome::Failed,
            ));
            for p in &last.phases {
                duration
                    .get_or_create(&DrillPhaseLabels {
                        drill: name.clone(),
                        phase: p.name.clone(),
                    })
                    .set(p.seconds);
            }
            if let Some(t) = last.total_seconds {
                duration
                    .get_or_create(&DrillPhaseLabels {
                        drill: name.clone(),
                        phase: "total".into(),
                    })
                    .set(t);
            }
        }
    }
    reg.register(
        "drctl_drill_last_success_timestamp_seconds",
        "When the drill last passed (restored and verified; over-RTO counts), Unix time",
        success,
    );
    reg.register(
        "drctl_drill_duration_seconds",
        "Phase durations of the drill's last run (fetch includes decrypt_decompress, which streams inside it)",
        duration,
    );
    reg.register(
        "drctl_drill_rto_target_seconds",
        "The drill's RTO target",
        rto,
    );
    reg.register(
        "drctl_drill_last_run_failed",
        "1 if the drill's last finished run failed (a phase failed), 0 if it restored (in time or over RTO)",
        failed,
    );
}
