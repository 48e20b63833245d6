//! Alerts that are never lost.
//!
//! A condition (job failed, RPO violated, drill failed, a check over its
//! threshold) is *raised* while it holds and *cleared* when it stops. Its
//! state lives in SQLite under one key per condition, so it notifies once,
//! repeats every `repeat_interval` while it holds, and sends one resolve.
//! Every notification is written to the outbox (`store.rs`) before anything
//! is sent; `deliver.rs` sends due rows per channel in order, with
//! exponential backoff until `max_age`, from the daemon or from `drctl run`.
//!
//! Alerting never fails a run: errors here are logged, not returned to jobs.

pub mod channels;
mod deliver;
mod message;
mod store;

pub use deliver::{deliver_due, DeliveryReport};
pub use message::Notification;
pub use store::{AlertRow, AlertState, AlertStats, DeliveryRow, DeliveryState};

use crate::base::error::Result;
use crate::config::LoadedConfig;
use crate::services::state::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
/// How urgent an alert is; routes pick channels by it.
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Severity {
    /// For the record (daemon started, a drill passed).
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a notification says about its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The condition started to hold (after `for`).
    Firing,
    /// Still holding, `repeat_interval` after the last notification.
    Repeat,
    /// It stopped holding.
    Resolved,
    /// A one-off notice with no condition (daemon started or stopped).
    Notice,
    /// `drctl alerts test`.
    Test,
    /// A dead man's switch ping: the job started.
    PingStart,
    /// A dead man's switch ping: the job succeeded.
    PingSuccess,
    /// A dead man's switch ping: the job failed.
    PingFail,
}

impl Event {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Firing => "firing",
            Event::Repeat => "repeat",
            Event::Resolved => "resolved",
            Event::Notice => "notice",
            Event::Test => "test",
            Event::PingStart => "ping_start",
            Event::PingSuccess => "ping_success",
            Event::PingFail => "ping_fail",
        }
    }
}

/// A condition that holds now.
#[derive(Debug, Clone)]
pub struct Condition {
    /// One key per condition: `kind:subject`.
    pub key: String,
    /// What went wrong, as a stable word.
    pub kind: String,
    /// How urgent.
    pub severity: Severity,
    /// The job concerned, if any.
    pub job: Option<String>,
    /// One line for people.
    pub summary: String,
    /// The error or measurement, already free of secrets.
    pub detail: Option<String>,
    /// What the person reading this should do next.
    pub hint: Option<String>,
}

impl Condition {
    /// A condition `kind:subject` that holds now.
    pub fn new(kind: &str, subject: &str, severity: Severity, summary: String) -> Self {
        Condition {
            key: format!("{kind}:{subject}"),
            kind: kind.to_owned(),
            severity,
            job: None,
            summary,
            detail: None,
            hint: None,
        }
    }

    /// The last run of `job` failed.
    pub fn job_failed(job: &str, error: &str) -> Self {
        let mut c = Condition::new(
            "job_failed",
            job,
            Severity::Critical,
            format!("job {job} failed"),
        );
        c.job = Some(job.to_owned());
        c.detail = Some(crate::base::secret::redact(error));
        c.hint = Some(format!(
            "Read `drctl logs {job}` on this host for the error and the tools' output; fix the cause, then `drctl run {job}` to take a good run now. Earlier backups stay listed by `drctl backups {job}`."
        ));
        c
    }

    /// The key of a job's "could not run" condition.
    pub fn job_failed_key(job: &str) -> String {
        format!("job_failed:{job}")
    }
}

/// Raises, clears and announces, writing every notification to the outbox.
pub struct Alerter<'a> {
    cfg: &'a LoadedConfig,
    state: &'a State,
    host: String,
}

/// The timing that applies to one condition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub for_: Duration,
    pub repeat: Duration,
}

impl<'a> Alerter<'a> {
    /// An alerter over the config's routes and the state's outbox.
    pub fn new(cfg: &'a LoadedConfig, state: &'a State) -> Self {
        Alerter {
            cfg,
            state,
            host: crate::base::host::name(),
        }
    }

    fn job_alerts(&self, job: Option<&str>) -> Option<&'a crate::config::JobAlerts> {
        let job = job?;
        self.cfg.config.jobs.get(job)?.scheduling().alerts
    }

    /// The channels a severity goes to, the job's own route first.
    pub fn route(&self, severity: Severity, job: Option<&str>) -> Vec<String> {
        let global = &self.cfg.config.alerts.routes;
        let own = self.job_alerts(job);
        let pick = |own: Option<&Vec<String>>, global: &Vec<String>| {
            own.cloned().unwrap_or_else(|| global.clone())
        };
        match severity {
            Severity::Critical => pick(own.and_then(|a| a.critical.as_ref()), &global.critical),
            Severity::Warning => pick(own.and_then(|a| a.warning.as_ref()), &global.warning),
            Severity::Info => pick(own.and_then(|a| a.info.as_ref()), &global.info),
        }
    }

    fn timing(&self, job: Option<&str>) -> Timing {
        let a = &self.cfg.config.alerts;
        let own = self.job_alerts(job);
        Timing {
            for_: own.and_then(|o| o.for_).unwrap_or(a.for_),
            repeat: own
                .and_then(|o| o.repeat_interval)
                .unwrap_or(a.repeat_interval),
        }
    }

    fn expiry(&self, channel: &str) -> Duration {
        match self.cfg.config.alerts.channels.get(channel) {
            Some(crate::config::ChannelConfig::Ping(p)) => p.max_age,
            _ => self.cfg.config.alerts.max_age,
        }
    }

    /// The condition holds now: notify if it is new (after `for`), or repeat
    /// if the last notification is older than `repeat_interval`.
    pub async fn raise(&self, c: Condition) -> Result<()> {
        let timing = self.timing(c.job.as_deref());
        let channels = self.route(c.severity, c.job.as_deref());
        store::raise(self.state, &self.ctx(), &c, timing, &channels, Utc::now()).await?;
        Ok(())
    }

    /// Deliver `c` now, straight to its routed channels, without the
    /// outbox: the path left when the state database refuses to queue (full,
    /// locked). At-least-once: once the database takes the condition again,
    /// it notifies through the outbox as usual. Returns how many channels
    /// took it.
    pub async fn send_direct(&self, c: &Condition) -> usize {
        let mut n = self.notification(
            Event::Firing,
            &c.key,
            &c.kind,
            c.severity,
            c.job.as_deref(),
            c.summary.clone(),
        );
        n.detail = c.detail.clone();
        n.hint = c.hint.clone();
        let mut sent = 0;
        for name in self.route(c.severity, c.job.as_deref()) {
            let Some(cfg) = self.cfg.config.alerts.channels.get(&name) else {
                continue;
            };
            if matches!(cfg, crate::config::ChannelConfig::Ping(_)) {
                continue;
            }
            let outcome = match channels::build(&name, cfg) {
                Ok(ch) => ch.send(&n).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(_) => sent += 1,
                Err(e) => {
                    tracing::error!(channel = %name, error = %crate::base::secret::redact(&e), "direct delivery failed");
                }
            }
        }
        sent
    }

    fn ctx(&self) -> store::Ctx<'_> {
        store::Ctx {
            host: &self.host,
            max_age: self.cfg.config.alerts.max_age,
        }
    }

    /// The condition no longer holds: one resolve if it had notified.
    pub async fn clear(&self, key: &str, summary: String) -> Result<()> {
        store::clear(self.state, &self.ctx(), key, &summary, Utc::now()).await?;
        Ok(())
    }

    /// Promote pending conditions whose `for` has passed and repeat firing
    /// ones that are due; the daemon calls it every 5 s.
    pub async fn sweep(&self) -> Result<()> {
        store::sweep(self.state, &self.ctx(), Utc::now()).await?;
        Ok(())
    }

    /// Drop finished outbox rows older than 30 days (the daemon, hourly:
    /// a write transaction every second would fsync for nothing).
    pub async fn forget_finished(&self) -> Result<u64> {
        store::forget_finished(self.state, KEEP_FINISHED, Utc::now()).await
    }

    /// A one-off notice (no condition, no resolve).
    pub async fn notice(&self, kind: &str, severity: Severity, summary: String) -> Result<()> {
        let channels = self.route(severity, None);
        let n = self.notification(
            Event::Notice,
            &format!("{kind}:{}", self.host),
            kind,
            severity,
            None,
            summary,
        );
        for ch in channels {
            store::enqueue(self.state, &ch, &n, self.expiry(&ch)).await?;
        }
        Ok(())
    }

    /// Announce something that happened to `job` (a restore started or
    /// ended): routed by severity through the job's own routes.
    pub async fn job_notice(
        &self,
        kind: &str,
        job: &str,
        severity: Severity,
        summary: String,
    ) -> Result<()> {
        let channels = self.route(severity, Some(job));
        let n = self.notification(
            Event::Notice,
            &format!("{kind}:{job}"),
            kind,
            severity,
            Some(job),
            summary,
        );
        for ch in channels {
            store::enqueue(self.state, &ch, &n, self.expiry(&ch)).await?;
        }
        Ok(())
    }

    fn notification(
        &self,
        event: Event,
        key: &str,
        kind: &str,
        severity: Severity,
        job: Option<&str>,
        summary: String,
    ) -> Notification {
        Notification {
            id: uuid::Uuid::new_v4().to_string(),
            event,
            key: key.to_owned(),
            kind: kind.to_owned(),
            severity,
            host: self.host.clone(),
            job: job.map(str::to_owned),
            summary,
            detail: None,
            hint: None,
            since: None,
            at: Utc::now(),
            count: 1,
            html: None,
        }
    }

    /// Queue a report to `channels` (not routed by severity).
    pub async fn report(
        &self,
        name: &str,
        channels: &[String],
        headline: String,
        markdown: String,
        html: String,
    ) -> Result<()> {
        let mut n = self.notification(
            Event::Notice,
            &format!("report:{name}"),
            "report",
            Severity::Info,
            None,
            headline,
        );
        n.detail = Some(markdown);
        n.html = Some(html);
        for ch in channels {
            store::enqueue(self.state, ch, &n, self.expiry(ch)).await?;
        }
        Ok(())
    }

    /// Ping channels that follow `job`.
    fn ping_channels(&self, job: &str) -> Vec<String> {
        self.cfg
            .config
            .alerts
            .channels
            .iter()
            .filter_map(|(name, c)| match c {
                crate::config::ChannelConfig::Ping(p)
                    if p.jobs.as_ref().is_none_or(|j| j.iter().any(|x| x == job)) =>
                {
                    Some(name.clone())
                }
                _ => None,
            })
            .collect()
    }

    async fn ping(&self, job: &str, event: Event, detail: Option<String>) -> Result<()> {
        for ch in self.ping_channels(job) {
            let mut n = self.notification(
                event,
                &format!("ping:{job}"),
                "ping",
                Severity::Info,
                Some(job),
                format!("{job} {}", event.as_str()),
            );
            n.detail = detail.clone();
            store::enqueue(self.state, &ch, &n, self.expiry(&ch)).await?;
        }
        Ok(())
    }

    /// A run of `job` starts (once per tick, not per retry).
    pub async fn job_started(&self, job: &str) {
        if let Err(e) = self.ping(job, Event::PingStart, None).await {
            tracing::error!(job, error = %e, "cannot queue the start ping");
        }
    }

    /// A run of `job` ended for good (after retries): ping, and raise or
    /// clear its failure condition. Returns false when that could not be
    /// queued (the state database failing): the daemon keeps such a failure
    /// and raises it again later.
    pub async fn job_finished(&self, job: &str, finished: &Finished) -> bool {
        let r = match finished {
            Finished::Succeeded { critical } => {
                // A check run that ended critical pings /fail: the dead man's
                // switch shows what the alert says. Its findings alert on their own.
                let ping = match critical {
                    Some(problems) => {
                        self.ping(job, Event::PingFail, Some(problems.clone()))
                            .await
                    }
                    None => self.ping(job, Event::PingSuccess, None).await,
                };
                let clear = self
                    .clear(
                        &Condition::job_failed_key(job),
                        format!("job {job} recovered"),
                    )
                    .await;
                ping.and(clear)
            }
            Finished::Quiet => Ok(()),
            Finished::Failed {
                error,
                already_alerted,
            } => {
                let err = crate::base::secret::redact(error);
                let ping = self.ping(job, Event::PingFail, Some(err.clone())).await;
                let raise = if *already_alerted {
                    Ok(())
                } else {
                    self.raise(Condition::job_failed(job, &err)).await
                };
                ping.and(raise)
            }
        };
        if let Err(e) = &r {
            tracing::error!(job, error = %e, "cannot queue the alert");
        }
        r.is_ok()
    }
}

/// How a run ended, as alerting sees it. A neutral type: the engine turns
/// its outcome into this, so alerts know nothing of job kinds or the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The run did its work; a check run may have found `critical` problems
    /// (they alert on their own; the dead man's switch gets /fail).
    Succeeded {
        /// Critical findings of a check run, as one line.
        critical: Option<String>,
    },
    /// Skipped or interrupted: nothing changes.
    Quiet,
    /// The run failed. `already_alerted`: what it found raised its own
    /// conditions (a verify run's `backup_damaged`): one page, not two.
    Failed {
        /// The run's error, redacted.
        error: String,
        /// What the run found already raised its own alert.
        already_alerted: bool,
    },
}

/// Delivered, failed and expired outbox rows are kept this long for `drctl alerts`.
const KEEP_FINISHED: Duration = Duration::from_secs(30 * 24 * 3600);

/// Resolves when this process queues a notification (see `store::QUEUED`).
pub async fn queued() {
    store::QUEUED.notified().await;
}

/// When the earliest undelivered row is due (None: nothing is waiting).
pub async fn next_due(state: &State) -> Result<Option<DateTime<Utc>>> {
    store::next_due(state).await
}

/// Is anything waiting in the outbox? (A cheap check before a delivery pass.)
pub async fn has_pending(state: &State) -> Result<bool> {
    store::has_pending(state).await
}

/// Counts for `/metrics`.
pub async fn stats(state: &State) -> Result<AlertStats> {
    store::stats(state).await
}

/// Firing and pending conditions, newest first.
pub async fn active(state: &State) -> Result<Vec<AlertRow>> {
    store::active(state).await
}

/// The outbox, newest first.
pub async fn outbox(state: &State, limit: i64) -> Result<Vec<DeliveryRow>> {
    store::deliveries(state, limit).await
}
