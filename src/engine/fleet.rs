//! The fleet view. Every daemon publishes a small status object into each
//! repository its jobs use (`_hosts/<host>.json`: version, jobs and their
//! last outcomes, RPO state, drills, firing alerts; never a secret), and
//! `drctl fleet` reads them back from any host. A team without Prometheus
//! sees twenty hosts in one command, and a host that stopped publishing (its
//! daemon down, its machine gone) is shown stale and, with `fleet_stale`,
//! alerted on by the hosts that are still alive.
//!
//! Staleness is measured on the store's clock (the object's modification
//! time), not the publisher's: a host whose clock is off cannot look fresh.
//! Objects are written when their content changed or every [`heartbeat`]
//! (five `fleet_publish` periods), and never more often than `fleet_publish`
//! (1 min): an idle fleet of 20 hosts costs the bucket under 6,000 small
//! PUTs a day.

use crate::base::error::Result;
use crate::config::LoadedConfig;
use crate::engine::drill::{DrillOutcome, DrillRecord};
use crate::engine::status::JobStatus;
use crate::services::repository::Repository;
use crate::services::state::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the status objects live in a repository.
pub const PREFIX: &str = "_hosts/";
/// The object format; a reader skips what it does not know.
pub const FORMAT: u32 = 1;
pub use crate::config::fleet_heartbeat as heartbeat;
/// Drill counts in the status cover this window.
const DRILL_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// One host as it describes itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostStatus {
    /// [`FORMAT`].
    pub format: u32,
    /// The host's name (as in backup ids).
    pub host: String,
    /// drctl's version on the host.
    pub version: String,
    /// The commit it was built from.
    pub commit: String,
    /// When its daemon started.
    pub daemon_started: DateTime<Utc>,
    /// When this object was written, on the host's clock (staleness uses
    /// the store's).
    pub published_at: DateTime<Utc>,
    /// The jobs that use this repository, and the host's repository-less
    /// jobs (checks, maintenance).
    pub jobs: Vec<JobState>,
    /// The drills of those jobs.
    pub drills: Vec<DrillState>,
    /// Conditions firing on the host, by severity.
    pub alerts_firing: BTreeMap<String, i64>,
    /// The publishing daemon's installation (`base::host::instance_id`):
    /// another one under the same host name is a conflict, not an update.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// Its machine, hashed (`base::host::machine_tag`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine: String,
}

/// One job in a host's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    /// The job.
    pub job: String,
    /// Its kind.
    pub kind: String,
    /// Its cron schedule.
    #[serde(default)]
    pub schedule: Option<String>,
    /// How its last finished run ended (`succeeded`, `failed`, ...).
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// When that run finished.
    #[serde(default)]
    pub last_run_at: Option<String>,
    /// When it last succeeded.
    #[serde(default)]
    pub last_success: Option<String>,
    /// When it runs next.
    #[serde(default)]
    pub next_run: Option<String>,
    /// The RPO, for backup jobs with one.
    #[serde(default)]
    pub rpo: Option<RpoState>,
}

/// A job's RPO as the host last evaluated it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpoState {
    /// The target.
    pub target_seconds: f64,
    /// Age of the newest backup when evaluated.
    pub age_seconds: Option<f64>,
    /// Within the target.
    pub compliant: bool,
}

/// One drill in a host's status: its last run and the last 30 days.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillState {
    /// The drill.
    pub drill: String,
    /// The job it restores.
    pub job: String,
    /// Its RTO target.
    #[serde(default)]
    pub rto_seconds: Option<f64>,
    /// How its last finished run ended (`passed`, `over_rto`, `failed`, ...).
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// When that run finished.
    #[serde(default)]
    pub last_finished_at: Option<String>,
    /// Its measured restore time.
    #[serde(default)]
    pub last_total_seconds: Option<f64>,
    /// The backup it restored.
    #[serde(default)]
    pub last_backup_id: Option<String>,
    /// Finished runs in the last 30 days.
    pub runs_30d: usize,
    /// Of which passed in time.
    pub passed_30d: usize,
    /// Of which restored but over the RTO.
    pub over_rto_30d: usize,
    /// Of which failed.
    pub failed_30d: usize,
    /// The newest restores it made (up to five, passed or over the RTO,
    /// that recorded their work): a restore's `--dry-run` on any host
    /// estimates its time from them when that host has no drill of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<RestoreRate>,
}

/// One restore a drill made: its fetch and restore seconds over the bytes
/// it processed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RestoreRate {
    /// Fetch and restore phases, seconds.
    pub seconds: f64,
    /// Bytes processed (a point-in-time drill's base backup and WAL).
    pub work_bytes: u64,
}

/// A host as `drctl fleet` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    /// The host.
    pub host: String,
    /// The repository its newest status was read from.
    pub repository: String,
    /// When the store last saw it publish.
    pub seen_at: DateTime<Utc>,
    /// Seconds since then.
    pub age_seconds: i64,
    /// No status within the staleness limit.
    pub stale: bool,
    /// `ok`, `stale`, `failing` (a job's last run failed or a drill failed)
    /// or `rpo_violated`.
    pub state: &'static str,
    /// What it said.
    pub status: HostStatus,
}

/// Whether a host's status needs writing now (pure): never more often than
/// `min_interval`; then when its content changed, or `heartbeat` after the
/// last write.
pub fn should_publish(
    last: Option<(&HostStatus, DateTime<Utc>)>,
    next: &HostStatus,
    now: DateTime<Utc>,
    min_interval: Duration,
    heartbeat: Duration,
) -> bool {
    let Some((prev, at)) = last else { return true };
    let elapsed = (now - at).to_std().unwrap_or_default();
    if elapsed < min_interval {
        return false;
    }
    !same_content(prev, next) || elapsed >= heartbeat
}

/// Equal but for the publication time.
fn same_content(a: &HostStatus, b: &HostStatus) -> bool {
    let mut b = b.clone();
    b.published_at = a.published_at;
    *a == b
}

/// The fleet from the status objects found (`(repository, status, store
/// modification time)`), one row per host (its newest object), sorted by
/// host (pure).
pub fn view(
    found: Vec<(String, HostStatus, DateTime<Utc>)>,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Vec<HostView> {
    let mut newest: BTreeMap<String, (String, HostStatus, DateTime<Utc>)> = BTreeMap::new();
    for (repo, s, at) in found {
        match newest.get(&s.host) {
            Some((_, _, t)) if *t >= at => {}
            _ => {
                newest.insert(s.host.clone(), (repo, s, at));
            }
        }
    }
    newest
        .into_values()
        .map(|(repository, status, seen_at)| {
            let age = (now - seen_at).num_seconds().max(0);
            let stale = u64::try_from(age).unwrap_or(0) > stale_after.as_secs();
            HostView {
                host: status.host.clone(),
                repository,
                seen_at,
                age_seconds: age,
                stale,
                state: host_state(&status, stale),
                status,
            }
        })
        .collect()
}

/// The worst thing a host reports (pure).
fn host_state(s: &HostStatus, stale: bool) -> &'static str {
    if stale {
        "stale"
    } else if s
        .jobs
        .iter()
        .any(|j| j.rpo.as_ref().is_some_and(|r| !r.compliant))
    {
        "rpo_violated"
    } else if s
        .jobs
        .iter()
        .any(|j| j.last_outcome.as_deref() == Some("failed"))
        || s.drills
            .iter()
            .any(|d| d.last_outcome.as_deref() == Some("failed"))
    {
        "failing"
    } else {
        "ok"
    }
}

/// What this host says to `repository` (the jobs that use it and the
/// host's repository-less ones).
pub async fn build(
    cfg: &LoadedConfig,
    state: &State,
    repository: &str,
    daemon_started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<HostStatus> {
    let mine = |job: &str| {
        cfg.config
            .jobs
            .get(job)
            .is_some_and(|j| j.repository().is_none_or(|r| r == repository))
    };
    let rpo: BTreeMap<String, RpoState> = crate::engine::rpo::saved(state)
        .await?
        .into_iter()
        .map(|(job, target, compliant, age)| {
            (
                job,
                RpoState {
                    target_seconds: target,
                    age_seconds: age,
                    compliant,
                },
            )
        })
        .collect();
    let jobs = crate::engine::status::jobs(cfg, state, now)
        .await?
        .into_iter()
        .filter(|j| mine(&j.job))
        .map(|j| job_state(j, &rpo))
        .collect();
    let since = (now - DRILL_WINDOW).to_rfc3339();
    let records = crate::engine::drill::list(state, None, Some(&since), 10_000).await?;
    let drills = cfg
        .config
        .drills
        .iter()
        .filter(|(_, d)| mine(&d.job))
        .map(|(name, d)| {
            drill_state(
                name,
                &d.job,
                d.rto.map(|r| r.as_secs_f64()),
                records.iter().filter(|r| &r.drill == name),
            )
        })
        .collect();
    let alerts_firing = crate::services::alerts::stats(state)
        .await?
        .firing
        .into_iter()
        .collect();
    Ok(HostStatus {
        format: FORMAT,
        host: crate::base::host::name(),
        version: env!("CARGO_PKG_VERSION").into(),
        commit: crate::COMMIT.into(),
        daemon_started,
        published_at: now,
        jobs,
        drills,
        alerts_firing,
        instance: crate::base::host::instance_id(&cfg.config.state_dir).unwrap_or_default(),
        machine: crate::base::host::machine_tag(),
    })
}

/// Why publishing `ours` over `theirs` (the object under the same key,
/// with its store time) would overwrite another daemon's status (pure):
/// it names another installation or machine and was written within
/// `stale_after`. A status of ours, one from before drctl recorded
/// installations, or one silent for longer than `stale_after` (the host was
/// reinstalled, its old daemon is gone) is not a conflict.
pub fn conflict(
    ours: &HostStatus,
    theirs: Option<(&HostStatus, DateTime<Utc>)>,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Option<String> {
    let (t, at) = theirs?;
    let other = (!t.instance.is_empty() && t.instance != ours.instance)
        || (!t.machine.is_empty() && !ours.machine.is_empty() && t.machine != ours.machine);
    let age = (now - at).to_std().unwrap_or_default();
    // Everything of theirs came from the repository: printable and short
    // before it reaches a log line, an alert or a terminal.
    let shown = |s: &str| -> String {
        let s: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
        if s.is_empty() {
            "?".into()
        } else {
            s
        }
    };
    (other && age < stale_after).then(|| {
        format!(
            "another drctl daemon publishes as host {} (installation {}, machine {}, daemon started {}, written {}s ago); this one is installation {}, machine {}",
            shown(&t.host),
            shown(&t.instance),
            shown(&t.machine),
            t.daemon_started.format("%Y-%m-%d %H:%M:%S UTC"),
            age.as_secs(),
            ours.instance,
            if ours.machine.is_empty() { "?" } else { &ours.machine },
        )
    })
}

fn job_state(j: JobStatus, rpo: &BTreeMap<String, RpoState>) -> JobState {
    let last = j.last_run.filter(|r| r.finished_at.is_some());
    JobState {
        rpo: rpo.get(&j.job).cloned(),
        job: j.job,
        kind: j.kind,
        schedule: j.schedule,
        last_outcome: last.as_ref().map(|r| r.status.to_string()),
        last_run_at: last.and_then(|r| r.finished_at),
        last_success: j.last_success,
        next_run: j.next_run,
    }
}

/// A drill's state from its records in the window, newest first (pure).
fn drill_state<'a>(
    name: &str,
    job: &str,
    rto_seconds: Option<f64>,
    records: impl Iterator<Item = &'a DrillRecord>,
) -> DrillState {
    let finished: Vec<&DrillRecord> = records.filter(|r| r.finished_at.is_some()).collect();
    let count = |o: DrillOutcome| finished.iter().filter(|r| r.outcome == o).count();
    let last = finished.first();
    DrillState {
        drill: name.to_owned(),
        job: job.to_owned(),
        rto_seconds,
        last_outcome: last.map(|r| r.outcome.to_string()),
        last_finished_at: last.and_then(|r| r.finished_at.clone()),
        last_total_seconds: last.and_then(|r| r.total_seconds),
        last_backup_id: last.and_then(|r| r.backup_id.clone()),
        runs_30d: finished.len(),
        passed_30d: count(DrillOutcome::Passed),
        over_rto_30d: count(DrillOutcome::OverRto),
        failed_30d: count(DrillOutcome::Failed),
        restores: finished
            .iter()
            .filter(|r| matches!(r.outcome, DrillOutcome::Passed | DrillOutcome::OverRto))
            .filter_map(|r| {
                Some(RestoreRate {
                    seconds: r.phase("fetch")? + r.phase("restore")?,
                    work_bytes: r.work_bytes?,
                })
            })
            .take(5)
            .collect(),
    }
}

/// The restores the hosts' drills of `job` made, as published, and the
/// hosts they ran on (pure).
pub fn published_restores(statuses: &[HostStatus], job: &str) -> (Vec<(f64, u64)>, Vec<String>) {
    let mut past = Vec::new();
    let mut hosts = Vec::new();
    for s in statuses {
        let before = past.len();
        past.extend(
            s.drills
                .iter()
                .filter(|d| d.job == job)
                .flat_map(|d| &d.restores)
                .map(|r| (r.seconds, r.work_bytes)),
        );
        if past.len() > before {
            hosts.push(s.host.clone());
        }
    }
    (past, hosts)
}

/// A restore's estimate from the drills other hosts published into the
/// job's repository: what a fresh host in an incident has. None when the
/// repository holds no such drill or cannot be read (a dry run never fails
/// for want of an estimate).
pub async fn published_estimate(
    cfg: &LoadedConfig,
    job: &str,
    work: u64,
) -> Option<crate::engine::restore::pitr::Estimate> {
    let (_, jc) = cfg.job(job).ok()?;
    let name = jc.backup_repository(job).ok()?;
    let repo = Repository::open(name, cfg.repository(name).ok()?)
        .await
        .ok()?;
    let statuses: Vec<HostStatus> = read(&repo)
        .await
        .map_err(|e| tracing::debug!(error = %e, "no published drills: cannot read host statuses"))
        .ok()?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let (past, hosts) = published_restores(&statuses, job);
    let mut e = crate::engine::restore::pitr::estimate(&past, work)?;
    e.from = format!("drills published by {}", hosts.join(", "));
    Some(e)
}

/// The object key of `host`'s status.
pub fn key(host: &str) -> String {
    // Host names are DNS labels in practice; anything else is made safe
    // for an object key and a file name.
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{PREFIX}{safe}.json")
}

/// Write `status` into `repo` (replacing the host's previous one).
pub async fn publish(repo: &Repository, status: &HostStatus) -> Result<()> {
    let body = serde_json::to_vec_pretty(status)
        .map_err(|e| crate::Error::Other(format!("encoding the host status: {e}")))?;
    repo.backend().put_replace(&key(&status.host), body).await
}

/// Every host status in `repo`, with the store's modification time; an
/// object that does not parse (another format, a damaged write) is logged
/// and left out.
pub async fn read(repo: &Repository) -> Result<Vec<(HostStatus, DateTime<Utc>)>> {
    let mut out = Vec::new();
    for o in repo.backend().list(PREFIX).await? {
        if !o.key.ends_with(".json") {
            continue;
        }
        out.extend(fetch_status(repo, &o).await);
    }
    Ok(out)
}

/// One status object, parsed, with the store's time (the publisher's own
/// clock when the store gives none); `None`, logged, when it does not read.
async fn fetch_status(
    repo: &Repository,
    o: &crate::services::repository::ObjectInfo,
) -> Option<(HostStatus, DateTime<Utc>)> {
    use tokio::io::AsyncReadExt;
    let mut body = Vec::new();
    let read = async {
        let r = repo.backend().get(&o.key).await?;
        r.take(1 << 20)
            .read_to_end(&mut body)
            .await
            .map_err(|e| crate::Error::io("reading a host status", e))?;
        Ok::<_, crate::Error>(())
    };
    if let Err(e) = read.await {
        tracing::warn!(key = %o.key, error = %e, "cannot read a host status");
        return None;
    }
    match serde_json::from_slice::<HostStatus>(&body) {
        Ok(s) if s.format <= FORMAT => {
            let at = o.modified.unwrap_or(s.published_at);
            Some((s, at))
        }
        Ok(s) => {
            tracing::warn!(key = %o.key, format = s.format, "host status of a newer format, skipped");
            None
        }
        Err(e) => {
            tracing::warn!(key = %o.key, error = %e, "host status does not parse, skipped");
            None
        }
    }
}

/// The status object under `host`'s key, with its store time, if any.
pub async fn read_one(
    repo: &Repository,
    host: &str,
) -> Result<Option<(HostStatus, DateTime<Utc>)>> {
    let k = key(host);
    let Some(o) = repo
        .backend()
        .list(&k)
        .await?
        .into_iter()
        .find(|o| o.key == k)
    else {
        return Ok(None);
    };
    Ok(fetch_status(repo, &o).await)
}

/// The fleet across `repositories` (by name), newest status per host.
pub async fn gather(
    cfg: &LoadedConfig,
    repositories: &[String],
    stale_after: Duration,
) -> Result<Vec<HostView>> {
    let mut found = Vec::new();
    for name in repositories {
        let repo = Repository::open(name, cfg.repository(name)?).await?;
        for (s, at) in read(&repo).await? {
            found.push((name.clone(), s, at));
        }
    }
    Ok(view(found, Utc::now(), stale_after))
}

/// The repositories this host's jobs use (where it publishes and, by
/// default, where `drctl fleet` looks); all configured ones if no job
/// names one.
pub fn repositories(cfg: &LoadedConfig) -> Vec<String> {
    let mut used: Vec<String> = cfg
        .config
        .jobs
        .values()
        .filter_map(|j| j.repository().map(str::to_owned))
        .collect();
    used.sort();
    used.dedup();
    if used.is_empty() {
        used = cfg.config.repositories.keys().cloned().collect();
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn status(host: &str, published: &str) -> HostStatus {
        HostStatus {
            format: FORMAT,
            host: host.into(),
            version: "0.1.0".into(),
            commit: "abc".into(),
            daemon_started: at("2026-12-01T00:00:00Z"),
            published_at: at(published),
            jobs: vec![JobState {
                job: "appdb".into(),
                kind: "postgres".into(),
                schedule: None,
                last_outcome: Some("succeeded".into()),
                last_run_at: None,
                last_success: None,
                next_run: None,
                rpo: Some(RpoState {
                    target_seconds: 3600.0,
                    age_seconds: Some(60.0),
                    compliant: true,
                }),
            }],
            drills: vec![],
            alerts_firing: BTreeMap::new(),
            instance: "aaaa".into(),
            machine: "m1".into(),
        }
    }

    #[test]
    fn another_installation_under_our_name_is_a_conflict_until_it_falls_silent() {
        let ours = status("db1", "2026-12-02T10:00:00Z");
        let now = at("2026-12-02T10:00:30Z");
        let stale = Duration::from_secs(300);
        // Our own object, or none: publish.
        assert_eq!(conflict(&ours, None, now, stale), None);
        assert_eq!(
            conflict(&ours, Some((&ours, at("2026-12-02T10:00:00Z"))), now, stale),
            None
        );
        // Another installation (or machine), fresh: refuse, naming it.
        let mut theirs = ours.clone();
        theirs.instance = "bbbb".into();
        let why = conflict(
            &ours,
            Some((&theirs, at("2026-12-02T10:00:20Z"))),
            now,
            stale,
        )
        .unwrap();
        assert!(
            why.contains("installation bbbb") && why.contains("this one is installation aaaa"),
            "{why}"
        );
        let mut cloned = ours.clone();
        cloned.machine = "m2".into();
        assert!(conflict(
            &ours,
            Some((&cloned, at("2026-12-02T10:00:20Z"))),
            now,
            stale
        )
        .is_some());
        // Silent for longer than the staleness bound: the old one is gone.
        assert_eq!(
            conflict(
                &ours,
                Some((&theirs, at("2026-12-02T09:50:00Z"))),
                now,
                stale
            ),
            None
        );
        // A hostile object's strings reach the alert printable and short.
        let mut hostile = theirs.clone();
        hostile.instance = format!("\u{1b}]0;pwned\u{7}{}", "x".repeat(10_000));
        let why = conflict(
            &ours,
            Some((&hostile, at("2026-12-02T10:00:20Z"))),
            now,
            stale,
        )
        .unwrap();
        assert!(
            !why.chars().any(char::is_control) && why.len() < 1000,
            "{why}"
        );
        // Written before drctl recorded installations: taken over.
        let mut old = theirs.clone();
        old.instance = String::new();
        old.machine = String::new();
        assert_eq!(
            conflict(&ours, Some((&old, at("2026-12-02T10:00:20Z"))), now, stale),
            None
        );
    }

    #[test]
    fn publishing_is_rate_limited_and_skips_unchanged_content_until_the_heartbeat() {
        let min = Duration::from_secs(60);
        let beat = heartbeat(min);
        let first = status("db1", "2026-12-02T10:00:00Z");
        let t0 = at("2026-12-02T10:00:00Z");
        assert!(should_publish(None, &first, t0, min, beat));
        // Changed, but within the minute: wait.
        let mut changed = status("db1", "2026-12-02T10:00:30Z");
        changed.jobs[0].last_outcome = Some("failed".into());
        assert!(!should_publish(
            Some((&first, t0)),
            &changed,
            at("2026-12-02T10:00:30Z"),
            min,
            beat
        ));
        assert!(should_publish(
            Some((&first, t0)),
            &changed,
            at("2026-12-02T10:01:00Z"),
            min,
            beat
        ));
        // Unchanged (only the time moved): not until the heartbeat.
        let same = status("db1", "2026-12-02T10:03:00Z");
        assert!(!should_publish(
            Some((&first, t0)),
            &same,
            at("2026-12-02T10:03:00Z"),
            min,
            beat
        ));
        assert!(should_publish(
            Some((&first, t0)),
            &same,
            at("2026-12-02T10:05:00Z"),
            min,
            beat
        ));
    }

    #[test]
    fn the_view_keeps_each_hosts_newest_status_and_judges_staleness_on_the_store_clock() {
        let now = at("2026-12-02T10:30:00Z");
        let stale = Duration::from_secs(15 * 60);
        // db1's own clock says "just now", but the store last saw it 20
        // minutes ago: stale.
        let mut rows = view(
            vec![
                (
                    "local".into(),
                    status("db1", "2026-12-02T10:29:59Z"),
                    at("2026-12-02T10:10:00Z"),
                ),
                (
                    "offsite".into(),
                    status("db2", "2026-12-02T10:20:00Z"),
                    at("2026-12-02T10:20:00Z"),
                ),
                (
                    "local".into(),
                    status("db2", "2026-12-02T10:29:00Z"),
                    at("2026-12-02T10:29:00Z"),
                ),
            ],
            now,
            stale,
        )
        .into_iter();
        let db1 = rows.next().unwrap();
        assert_eq!(
            (db1.host.as_str(), db1.stale, db1.state),
            ("db1", true, "stale")
        );
        assert_eq!(db1.age_seconds, 20 * 60);
        let db2 = rows.next().unwrap();
        assert_eq!(
            (db2.host.as_str(), db2.stale, db2.state),
            ("db2", false, "ok")
        );
        assert_eq!(db2.repository, "local");
        assert_eq!(db2.age_seconds, 60);
        assert!(rows.next().is_none());
    }

    #[test]
    fn a_host_shows_its_worst_state() {
        let mut s = status("db1", "2026-12-02T10:00:00Z");
        assert_eq!(host_state(&s, false), "ok");
        s.drills.push(DrillState {
            drill: "weekly".into(),
            job: "appdb".into(),
            rto_seconds: None,
            last_outcome: Some("failed".into()),
            last_finished_at: None,
            last_total_seconds: None,
            last_backup_id: None,
            runs_30d: 1,
            passed_30d: 0,
            over_rto_30d: 0,
            failed_30d: 1,
            restores: vec![],
        });
        assert_eq!(host_state(&s, false), "failing");
        s.jobs[0].rpo.as_mut().unwrap().compliant = false;
        assert_eq!(host_state(&s, false), "rpo_violated");
        assert_eq!(host_state(&s, true), "stale");
    }

    fn drill_run(outcome: DrillOutcome, finished: Option<&str>, total: f64) -> DrillRecord {
        DrillRecord {
            id: 1,
            drill: "weekly".into(),
            job: "appdb".into(),
            host: "db1".into(),
            trigger: "schedule".into(),
            started_at: "2026-12-01T03:00:00Z".into(),
            finished_at: finished.map(str::to_owned),
            outcome,
            failed_phase: None,
            error: Some("password=hunter2 in an error text".into()),
            backup_id: Some("20261201T020000Z-db1".into()),
            backup_age_seconds: None,
            target: None,
            phases: vec![],
            total_seconds: Some(total),
            rto_seconds: None,
            checks: vec![],
            swept: vec![],
            repository: None,
            work_bytes: None,
        }
    }

    #[test]
    fn a_drills_state_is_its_last_finished_run_and_the_windows_counts() {
        // Newest first, as the store lists them; the running one is skipped.
        let runs = [
            drill_run(DrillOutcome::Running, None, 0.0),
            drill_run(DrillOutcome::OverRto, Some("2026-12-01T03:20:00Z"), 1200.0),
            drill_run(DrillOutcome::Failed, Some("2026-11-24T03:01:00Z"), 60.0),
            drill_run(DrillOutcome::Passed, Some("2026-11-17T03:05:00Z"), 300.0),
        ];
        let d = drill_state("weekly", "appdb", Some(600.0), runs.iter());
        assert_eq!(d.last_outcome.as_deref(), Some("over_rto"));
        assert_eq!(d.last_finished_at.as_deref(), Some("2026-12-01T03:20:00Z"));
        assert_eq!(d.last_total_seconds, Some(1200.0));
        assert_eq!(
            (d.runs_30d, d.passed_30d, d.over_rto_30d, d.failed_30d),
            (3, 1, 1, 1)
        );
        // Error texts never travel into the status object.
        assert!(!serde_json::to_string(&d).unwrap().contains("hunter2"));
    }

    #[test]
    fn a_drills_restores_travel_with_the_status_and_estimate_on_any_host() {
        let with_work = |outcome, seconds: f64, work: Option<u64>| {
            let mut r = drill_run(outcome, Some("2026-12-01T03:20:00Z"), seconds);
            r.phases = ["fetch", "restore", "verify"]
                .iter()
                .map(|n| crate::engine::drill::Phase {
                    name: (*n).into(),
                    seconds: seconds / 3.0,
                })
                .collect();
            r.work_bytes = work;
            r
        };
        let runs = [
            with_work(DrillOutcome::Passed, 30.0, Some(1000)),
            // A failed drill's time is not a restore's; one without its
            // work cannot give a rate.
            with_work(DrillOutcome::Failed, 3.0, Some(1000)),
            with_work(DrillOutcome::OverRto, 60.0, None),
            with_work(DrillOutcome::OverRto, 90.0, Some(2000)),
        ];
        let d = drill_state("weekly", "appdb", None, runs.iter());
        assert_eq!(
            d.restores,
            [
                RestoreRate {
                    seconds: 20.0,
                    work_bytes: 1000
                },
                RestoreRate {
                    seconds: 60.0,
                    work_bytes: 2000
                }
            ]
        );
        let status = |host: &str, drills: Vec<DrillState>| HostStatus {
            drills,
            ..status(host, "2026-12-02T10:00:00Z")
        };
        let other = drill_state("other", "billing", None, runs.iter());
        let statuses = [
            status("db1", vec![d.clone(), other]),
            status("db2", vec![]),
            status("db3", vec![d]),
        ];
        let (past, hosts) = published_restores(&statuses, "appdb");
        assert_eq!(past.len(), 4);
        assert_eq!(hosts, ["db1", "db3"]);
        let e = crate::engine::restore::pitr::estimate(&past, 3000).unwrap();
        assert!((e.seconds - 75.0).abs() < 1e-9, "{e:?}");
        assert_eq!(published_restores(&statuses, "nosuch"), (vec![], vec![]));
    }

    #[test]
    fn host_names_become_safe_keys() {
        assert_eq!(key("db1.example.com"), "_hosts/db1.example.com.json");
        assert_eq!(key("../../etc"), "_hosts/.._.._etc.json");
    }
}
