//! What went wrong inside the daemon itself, kept in memory: a run that
//! failed before it could be recorded (no descriptors, a full disk, a
//! locked state database) must still be counted, exported and visible in
//! `/health`, because the state database that normally carries it is the
//! very thing that may be failing.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// How long an internal error keeps `/health` red after it last happened.
pub const HEALTH_WINDOW: TimeDelta = TimeDelta::minutes(10);

/// A failure whose alert the state database refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferred {
    pub job: String,
    pub error: String,
    pub since: DateTime<Utc>,
    /// Already delivered straight to the channels (see `DIRECT_AFTER`).
    pub sent_directly: bool,
}

/// How long a refused alert waits for the state database before it goes
/// straight to the channels, bypassing the outbox.
pub const DIRECT_AFTER: TimeDelta = TimeDelta::seconds(15);

impl Deferred {
    /// Due for direct delivery at `now`.
    pub fn direct_due(&self, now: DateTime<Utc>) -> bool {
        !self.sent_directly && now - self.since >= DIRECT_AFTER
    }
}

#[derive(Default)]
pub struct Internal {
    inner: Mutex<Inner>,
}

#[derive(Default, Clone)]
struct Inner {
    /// Final failures of scheduled runs the state database never got.
    unrecorded: BTreeMap<String, u64>,
    /// Every internal error by kind (`run_not_recorded`, `record_skipped`, ...).
    errors: BTreeMap<&'static str, u64>,
    last: Option<(DateTime<Utc>, String)>,
    /// Failures whose alert could not be queued, raised again by the alert
    /// worker until the state database takes them.
    deferred: Vec<Deferred>,
}

impl Internal {
    /// Count an internal error; `job` when a run of it went unrecorded.
    pub fn note(&self, kind: &'static str, job: Option<&str>, message: String, at: DateTime<Utc>) {
        let mut i = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        *i.errors.entry(kind).or_default() += 1;
        if let Some(job) = job {
            *i.unrecorded.entry(job.to_owned()).or_default() += 1;
        }
        i.last = Some((at, message));
    }

    fn snapshot(&self) -> Inner {
        match self.inner.lock() {
            Ok(i) => i.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Keep a failure whose alert could not be queued. A job that keeps
    /// failing keeps its first refusal's time (and whether
    /// it went out directly) with the newest error.
    pub fn defer_alert(&self, job: &str, error: String) {
        let mut i = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        match i.deferred.iter_mut().find(|d| d.job == job) {
            Some(d) => d.error = error,
            None => i.deferred.push(Deferred {
                job: job.to_owned(),
                error,
                since: Utc::now(),
                sent_directly: false,
            }),
        }
    }

    /// Keep (again) a deferred failure; one per job is enough: it says the
    /// job fails.
    pub fn keep(&self, d: Deferred) {
        let mut i = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        i.deferred.retain(|k| k.job != d.job);
        i.deferred.push(d);
    }

    /// The failures waiting for their alert (emptied; keep what fails).
    pub fn take_deferred(&self) -> Vec<Deferred> {
        let mut i = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        std::mem::take(&mut i.deferred)
    }

    /// The deferred failure of `job`, if any (kept until it is raised).
    pub fn deferred_error(&self, job: &str) -> Option<String> {
        let i = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        i.deferred
            .iter()
            .find(|d| d.job == job)
            .map(|d| d.error.clone())
    }

    /// Failed runs of `job` that only memory knows of.
    pub fn unrecorded(&self, job: &str) -> u64 {
        self.snapshot().unrecorded.get(job).copied().unwrap_or(0)
    }

    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        self.snapshot().errors
    }

    /// The last internal error, if it is recent enough to keep `/health` red.
    pub fn recent(&self, now: DateTime<Utc>) -> Option<String> {
        recent(self.snapshot().last.as_ref(), now)
    }
}

impl crate::engine::runner::Keeper for Internal {
    fn unrecorded(&self, job: &str, error: &str) {
        tracing::error!(
            job,
            "the failed run could not be recorded; counted in memory"
        );
        self.note(
            "run_not_recorded",
            Some(job),
            format!("{job}: a run failed and could not be recorded: {error}"),
            Utc::now(),
        );
    }

    fn alert_refused(&self, job: &str, error: String) {
        self.defer_alert(job, error);
    }

    fn refused(&self, job: &str) -> Option<String> {
        self.deferred_error(job)
    }

    fn refused_raised(&self, job: &str) {
        let mut i = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        i.deferred.retain(|d| d.job != job);
    }
}

fn recent(last: Option<&(DateTime<Utc>, String)>, now: DateTime<Utc>) -> Option<String> {
    let (at, message) = last?;
    (now - *at <= HEALTH_WINDOW).then(|| format!("{message} ({}s ago)", (now - *at).num_seconds()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn counts_by_kind_and_job_and_stays_red_for_the_window() {
        let i = Internal::default();
        assert_eq!(i.recent(t(0)), None);
        i.note(
            "run_not_recorded",
            Some("appdb"),
            "appdb: EMFILE".into(),
            t(0),
        );
        i.note("record_skipped", None, "locked".into(), t(1));
        assert_eq!(i.unrecorded("appdb"), 1);
        assert_eq!(i.unrecorded("other"), 0);
        assert_eq!(i.errors().get("run_not_recorded"), Some(&1));
        assert_eq!(i.errors().get("record_skipped"), Some(&1));
        assert_eq!(i.recent(t(61)).as_deref(), Some("locked (60s ago)"));
        assert_eq!(i.recent(t(1) + HEALTH_WINDOW + TimeDelta::seconds(1)), None);
    }

    #[test]
    fn one_deferred_alert_per_job_until_taken() {
        let i = Internal::default();
        i.defer_alert("appdb", "disk full".into());
        i.defer_alert("appdb", "still full".into());
        i.defer_alert("web", "x".into());
        let taken = i.take_deferred();
        let pairs: Vec<(&str, &str)> = taken
            .iter()
            .map(|d| (d.job.as_str(), d.error.as_str()))
            .collect();
        assert_eq!(pairs, vec![("appdb", "still full"), ("web", "x")]);
        assert!(i.take_deferred().is_empty());
        // A job failing again keeps its first refusal's time.
        assert!(taken[0].since <= taken[1].since);
        let d = Deferred {
            job: "appdb".into(),
            error: "full".into(),
            since: t(0),
            sent_directly: false,
        };
        assert!(!d.direct_due(t(14)));
        assert!(d.direct_due(t(15)));
        let sent = Deferred {
            sent_directly: true,
            ..d
        };
        assert!(!sent.direct_due(t(100)));
    }
}
