//! RPO compliance: is the newest committed backup of each job younger than
//! its target, and how much of a window was it?
//!
//! The repository is the truth (a backup made on another host, or by hand,
//! counts). Each evaluation lists it, reads the manifests of backups it has
//! not seen, and *replays* what happened since the last evaluation: a
//! violation starts exactly at `newest backup start + target`, compliance
//! returns exactly when a backup is committed (its `finished_at`) young
//! enough. So the transitions in SQLite are exact whether the daemon looked
//! every 100 ms or was down for a day, and compliance over a window is a sum
//! over them. Times come from the store's clock where it gives one (the
//! manifest's `LastModified`/mtime), so a host clock that is off shifts
//! nothing: see [`Point::on_store_clock`].

use crate::base::error::{Error, Result};
use crate::config::LoadedConfig;
use crate::services::alerts::{Alerter, Condition, Severity};
use crate::services::repository::Repository;
use crate::services::state::State;
use chrono::{DateTime, Duration as Span, Utc};
use serde::Serialize;
use sqlx::Row;
use std::time::Duration;

/// A committed backup as RPO sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When its data was taken (the dump's snapshot is at the start).
    pub started: DateTime<Utc>,
    /// When it became restorable (manifest committed).
    pub finished: DateTime<Utc>,
}

impl Point {
    /// A backup's point on the store's clock where the store gives one.
    /// Its manifest's times come from the writing host's clock, which may be
    /// off (ahead by less than the skew tolerance, or behind by any amount)
    /// and still count: it became restorable when the store says the
    /// manifest landed, and its data was taken the run's own duration (a
    /// difference, which a constant offset does not change) before that.
    pub fn on_store_clock(
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        committed_at: Option<DateTime<Utc>>,
    ) -> Point {
        let Some(committed) = committed_at else {
            return Point { started, finished };
        };
        let took = (finished - started).max(Span::zero());
        Point {
            started: committed - took,
            finished: committed,
        }
    }
}

/// A change of RPO status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// When it changed.
    pub at: DateTime<Utc>,
    /// The status from then on.
    pub compliant: bool,
}

/// Replay from a known status at `from` (with `newest` the start of the
/// newest backup then) through backups committed after `from`, up to `now`.
/// Returns the transitions and the newest start at `now`.
pub fn replay(
    mut compliant: bool,
    from: DateTime<Utc>,
    mut newest: Option<DateTime<Utc>>,
    later: &[Point],
    now: DateTime<Utc>,
    target: Span,
) -> (Vec<Transition>, Option<DateTime<Utc>>) {
    let mut out = Vec::new();
    let mut points: Vec<Point> = later.to_vec();
    points.sort_by_key(|p| p.finished);
    // If compliant, did the newest backup outlive the target before `until`?
    let expiry = |compliant: bool, newest: Option<DateTime<Utc>>, until: DateTime<Utc>| {
        if !compliant {
            return None;
        }
        match newest.map(|n| n + target) {
            Some(e) if e < until => Some(e.max(from)),
            Some(_) => None,
            None => Some(from),
        }
    };
    for p in points {
        let at = p.finished.max(from);
        if let Some(e) = expiry(compliant, newest, at) {
            out.push(Transition {
                at: e,
                compliant: false,
            });
            compliant = false;
        }
        newest = Some(newest.map_or(p.started, |n| n.max(p.started)));
        if !compliant && newest.is_some_and(|n| at - n <= target) {
            out.push(Transition {
                at,
                compliant: true,
            });
            compliant = true;
        }
    }
    if let Some(e) = expiry(compliant, newest, now) {
        out.push(Transition {
            at: e,
            compliant: false,
        });
    }
    (out, newest)
}

/// One job's RPO, now.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The job.
    pub job: String,
    /// The repository whose backups were measured (the job's own, or a copy).
    pub repository: String,
    /// Its RPO.
    pub target_seconds: f64,
    /// Whether the newest usable backup is younger than the RPO.
    pub compliant: bool,
    /// The current status holds since.
    pub since: DateTime<Utc>,
    /// The newest backup counted.
    pub newest_backup: Option<String>,
    /// Age of the newest backup's data (None: there is no backup).
    pub age_seconds: Option<f64>,
}

fn secs(d: Span) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn span(d: Duration) -> Span {
    Span::from_std(d).unwrap_or_else(|_| Span::days(365 * 100))
}

/// How often the daemon evaluates a job: a tenth of its target, at least
/// every minute, at most ten times a second.
pub fn interval(target: Duration) -> Duration {
    (target / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// One RPO series: a job's backups in one of its repositories.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The job.
    pub job: String,
    /// The repository (the job's own, or one of its copies).
    pub repository: String,
    /// The RPO there (`rpo`, or `rpo_copies` for a copy).
    pub target: Duration,
    /// Whether it is the job's own repository.
    pub own: bool,
}

impl Target {
    /// The series' key in the state database and its alert's subject:
    /// `JOB` in the job's own repository (as before copies existed),
    /// `JOB@REPO` in a copy (job names cannot hold `@`).
    pub fn key(&self) -> String {
        series_key(&self.job, &self.repository, self.own)
    }
}

fn series_key(job: &str, repository: &str, own: bool) -> String {
    if own {
        job.to_owned()
    } else {
        format!("{job}@{repository}")
    }
}

/// A series key's job and, for a copy, its repository.
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('@') {
        Some((job, repo)) => (job, Some(repo)),
        None => (key, None),
    }
}

/// Every RPO series: each job with an `rpo`, in its own repository and in
/// each of its copies.
pub fn targets(cfg: &LoadedConfig) -> Vec<Target> {
    let mut out = Vec::new();
    for (name, j) in &cfg.config.jobs {
        for repo in j.repositories() {
            if let Some(target) = j.rpo_in(repo) {
                out.push(Target {
                    job: name.clone(),
                    repository: repo.to_owned(),
                    target,
                    own: j.repository() == Some(repo),
                });
            }
        }
    }
    out
}

struct Saved {
    target_ms: i64,
    compliant: bool,
    since: DateTime<Utc>,
    checked_at: DateTime<Utc>,
    newest_id: Option<String>,
    newest_started: Option<DateTime<Utc>>,
}

async fn load<'e, E>(state: &State, conn: E, job: &str) -> Result<Option<Saved>>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let r = sqlx::query("SELECT * FROM rpo_state WHERE job = ?")
        .bind(job)
        .fetch_optional(conn)
        .await
        .map_err(|e| state.err(e))?;
    Ok(r.map(|r| Saved {
        target_ms: r.get("target_ms"),
        compliant: r.get::<i64, _>("compliant") != 0,
        since: crate::services::state::from_ms(r.get("since")),
        checked_at: crate::services::state::from_ms(r.get("checked_at")),
        newest_id: r.get("newest_id"),
        newest_started: r
            .get::<Option<i64>, _>("newest_started_at")
            .map(crate::services::state::from_ms),
    }))
}

/// Evaluate `job` against its own repository now: record exact
/// transitions, raise or clear `rpo_violated:JOB`, and return the status.
pub async fn evaluate(cfg: &LoadedConfig, state: &State, job: &str) -> Result<Status> {
    let (_, jc) = cfg.job(job)?;
    let repo_name = jc.backup_repository(job)?;
    evaluate_in(cfg, state, job, repo_name).await
}

/// Evaluate every RPO series of `job` (its own repository and its copies),
/// logging what cannot be evaluated.
pub async fn evaluate_all(cfg: &LoadedConfig, state: &State, job: &str) {
    for t in targets(cfg).into_iter().filter(|t| t.job == job) {
        if let Err(e) = evaluate_in(cfg, state, job, &t.repository).await {
            tracing::warn!(job, repository = %t.repository, error = %e, "RPO evaluation failed");
        }
    }
}

/// Evaluate `job`'s backups in `repo_name` (its own repository or a copy):
/// the series `JOB` or `JOB@REPO` (see [`Target::key`]), alerting
/// `rpo_violated:JOB` or `rpo_violated:JOB:REPO`.
pub async fn evaluate_in(
    cfg: &LoadedConfig,
    state: &State,
    job: &str,
    repo_name: &str,
) -> Result<Status> {
    let (job_name, jc) = cfg.job(job)?;
    let own = jc.backup_repository(job)? == repo_name;
    if !jc.repositories().contains(&repo_name) {
        return Err(Error::Usage(format!(
            "job {job} stores no backups in repository {repo_name}"
        )));
    }
    let target = jc
        .rpo_in(repo_name)
        .ok_or_else(|| Error::Other(format!("job {job} has no rpo")))?;
    let key = series_key(job, repo_name, own);
    let series = key.as_str();
    let target_span = span(target);
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let now = Utc::now();
    let seen = load(state, state.pool(), series).await?;
    let target_ms = target.as_millis() as i64;
    let known = seen.as_ref().and_then(|s| s.newest_id.clone());
    let physical = own && matches!(jc.kind, crate::config::Kind::PostgresPhysical(_));
    let (points, mut newest_id) = if physical {
        wal_points(&repo, &job_name, known).await?
    } else {
        backup_points(&repo, &job_name, known).await?
    };

    // Nothing new and nothing due: answer without a write (the daemon asks
    // every target/10; a write per ask would fsync for nothing).
    if let Some(sv) = seen
        .as_ref()
        .filter(|sv| sv.target_ms == target_ms && points.is_empty())
    {
        let (t, _) = replay(
            sv.compliant,
            sv.checked_at,
            sv.newest_started,
            &[],
            now,
            target_span,
        );
        if t.is_empty() {
            return Ok(Status {
                job: job.to_owned(),
                repository: repo_name.to_owned(),
                target_seconds: target.as_secs_f64(),
                compliant: sv.compliant,
                since: sv.since,
                newest_backup: sv.newest_id.clone(),
                age_seconds: sv.newest_started.map(|n| secs(now - n)),
            });
        }
    }
    let mut tx = state
        .pool()
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| state.err(e))?;
    // Re-read inside the transaction: another process may have evaluated
    // since. Replaying points it already counted changes nothing.
    let saved = load(state, &mut *tx, series).await?;
    let now = saved.as_ref().map_or(now, |s| now.max(s.checked_at));
    if let Some(theirs) = saved.as_ref().and_then(|s| s.newest_id.clone()) {
        if newest_id.as_ref().is_none_or(|ours| &theirs > ours) {
            newest_id = Some(theirs);
        }
    }
    let (transitions, newest_started, compliant, since) =
        advance(saved.as_ref(), &points, now, target_span);
    if saved.as_ref().is_some_and(|s| s.target_ms != target_ms) {
        tracing::info!(job, repository = repo_name, ?target, "RPO target changed");
    }
    let ev = Evaluated {
        job: series,
        target_ms,
        now,
        newest_id: newest_id.as_deref(),
        newest_started,
        first: saved.is_none(),
    };
    let (compliant, since) = record(state, &mut tx, &ev, &transitions, (compliant, since)).await?;
    tx.commit().await.map_err(|e| state.err(e))?;

    let status = Status {
        job: job.to_owned(),
        repository: repo_name.to_owned(),
        target_seconds: target.as_secs_f64(),
        compliant,
        since,
        newest_backup: newest_id,
        age_seconds: newest_started.map(|n| secs(now - n)),
    };
    alert(cfg, state, &status, target, own).await;
    Ok(status)
}

/// What one evaluation leaves in the state database besides transitions.
struct Evaluated<'a> {
    job: &'a str,
    target_ms: i64,
    now: DateTime<Utc>,
    newest_id: Option<&'a str>,
    newest_started: Option<DateTime<Utc>>,
    /// The job's first evaluation (its transition opens the history).
    first: bool,
}

/// Append `transitions` and save the state they lead to from `status`
/// (compliant, since); returns that state.
async fn record(
    state: &State,
    tx: &mut sqlx::SqliteConnection,
    ev: &Evaluated<'_>,
    transitions: &[Transition],
    status: (bool, DateTime<Utc>),
) -> Result<(bool, DateTime<Utc>)> {
    let (mut compliant, mut since) = status;
    for t in transitions {
        sqlx::query("INSERT INTO rpo_transitions (job, at, compliant, target_ms, first) VALUES (?, ?, ?, ?, ?)")
            .bind(ev.job)
            .bind(crate::services::state::ms(t.at))
            .bind(t.compliant)
            .bind(ev.target_ms)
            .bind(ev.first)
            .execute(&mut *tx)
            .await
            .map_err(|e| state.err(e))?;
        compliant = t.compliant;
        since = t.at;
    }
    sqlx::query(
        "INSERT OR REPLACE INTO rpo_state (job, target_ms, compliant, since, checked_at, newest_id, newest_started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(ev.job)
    .bind(ev.target_ms)
    .bind(compliant)
    .bind(crate::services::state::ms(since))
    .bind(crate::services::state::ms(ev.now))
    .bind(ev.newest_id)
    .bind(ev.newest_started.map(crate::services::state::ms))
    .execute(&mut *tx)
    .await
    .map_err(|e| state.err(e))?;
    Ok((compliant, since))
}

/// The RPO points of a job's backups committed after `known` (the newest
/// id counted before), and the newest id now.
async fn backup_points(
    repo: &Repository,
    job_name: &crate::base::ids::JobName,
    known: Option<String>,
) -> Result<(Vec<Point>, Option<String>)> {
    // A backup whose host's clock ran ahead claims a freshness it does not
    // have: it never counts (see `BackupRef::clock_skew`).
    let listed: Vec<_> = repo
        .list_backups(job_name)
        .await?
        .into_iter()
        .filter(|b| b.clock_skew().is_none())
        .collect();
    // Manifests of the backups not seen yet (the newest 50 at most: older
    // ones cannot change the status any more).
    let unseen: Vec<_> = listed
        .iter()
        .filter(|b| known.as_deref().is_none_or(|k| b.id.as_str() > k))
        .rev()
        .take(50)
        .collect();
    Ok(read_points(repo, job_name, &unseen, known).await)
}

/// A physical job's RPO points: each WAL file stored after `known` (the
/// greatest name counted before) is a point at the store's time of its
/// record. The RPO of point-in-time recovery is the age of the last WAL
/// byte in the repository, not of the last base backup.
async fn wal_points(
    repo: &Repository,
    job_name: &crate::base::ids::JobName,
    known: Option<String>,
) -> Result<(Vec<Point>, Option<String>)> {
    let archive = crate::engine::wal::list(repo, job_name).await?;
    let mut newest = known.clone();
    let points = archive
        .files
        .iter()
        // A `.partial` is stored again under the same name as the
        // unfinished segment grows (`wal = "stream"`): it always counts.
        .filter(|(n, _)| known.as_deref().is_none_or(|k| n.as_str() > k) || n.ends_with(".partial"))
        .filter_map(|(n, o)| {
            if newest.as_deref().is_none_or(|k| n.as_str() > k) {
                newest = Some(n.clone());
            }
            let at = o.modified?;
            Some(Point {
                started: at,
                finished: at,
            })
        })
        .collect();
    Ok((points, newest))
}

/// RPO points of `backups` from their manifests, and the newest id read
/// (starting from `known`). An unreadable manifest is skipped and logged.
async fn read_points(
    repo: &Repository,
    job_name: &crate::base::ids::JobName,
    backups: &[&crate::services::repository::BackupRef],
    known: Option<String>,
) -> (Vec<Point>, Option<String>) {
    let mut points = Vec::new();
    let mut newest_id = known;
    for b in backups {
        match repo.read_manifest(job_name, &b.id).await {
            Ok(m) => {
                points.push(Point::on_store_clock(
                    m.started_at,
                    m.finished_at,
                    b.committed_at,
                ));
                if newest_id.as_deref().is_none_or(|k| b.id.as_str() > k) {
                    newest_id = Some(b.id.to_string());
                }
            }
            Err(e) => {
                tracing::warn!(job = %job_name, backup = %b.id, error = %e, "unreadable manifest; not counted for RPO");
            }
        }
    }
    (points, newest_id)
}

/// The transitions since the saved state, the newest backup start, and the
/// status before them (compliant, since). Without a saved state tracking
/// starts now, with the status as it is.
fn advance(
    saved: Option<&Saved>,
    points: &[Point],
    now: DateTime<Utc>,
    target: Span,
) -> (Vec<Transition>, Option<DateTime<Utc>>, bool, DateTime<Utc>) {
    match saved {
        None => {
            let newest = points.iter().map(|p| p.started).max();
            let ok = newest.is_some_and(|n| now - n <= target);
            (
                vec![Transition {
                    at: now,
                    compliant: ok,
                }],
                newest,
                ok,
                now,
            )
        }
        Some(s) => {
            let (t, n) = replay(
                s.compliant,
                s.checked_at,
                s.newest_started,
                points,
                now,
                target,
            );
            (t, n, s.compliant, s.since)
        }
    }
}

async fn alert(cfg: &LoadedConfig, state: &State, s: &Status, target: Duration, own: bool) {
    let alerter = Alerter::new(cfg, state);
    // The job's own repository keeps the key it always had.
    let (subject, what) = if own {
        (s.job.clone(), s.job.clone())
    } else {
        (
            format!("{}:{}", s.job, s.repository),
            format!("{} in repository {}", s.job, s.repository),
        )
    };
    let key = format!("rpo_violated:{subject}");
    let r = if s.compliant {
        alerter
            .clear(&key, format!("RPO of {what} met again"))
            .await
    } else {
        let age = match s.age_seconds {
            Some(a) => format!(
                "the newest backup ({}) is {} old",
                s.newest_backup.as_deref().unwrap_or("-"),
                humantime::format_duration(Duration::from_secs(a.max(0.0) as u64))
            ),
            None => "there is no committed backup at all".into(),
        };
        let mut c = Condition::new(
            "rpo_violated",
            &subject,
            Severity::Critical,
            format!("RPO of {what} violated"),
        );
        c.job = Some(s.job.clone());
        c.detail = Some(format!(
            "{age}; the target is {}. Violated since {}.",
            humantime::format_duration(target),
            s.since.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        let physical = cfg
            .job(&s.job)
            .is_ok_and(|(_, j)| matches!(j.kind, crate::config::Kind::PostgresPhysical(_)));
        c.hint = Some(if own && physical {
            format!(
                "No WAL has reached the repository for that long: look for `drctl wal push` errors in the PostgreSQL server log (archive_command), check `archive_timeout` (an idle database ships nothing without it), and `drctl wal list --job {0}`.",
                s.job
            )
        } else if own {
            format!(
                "Check why backups stopped: `drctl status` and `drctl logs {0}` on the host that runs it (is the daemon up? is the job failing?). `drctl run {0}` takes one now.",
                s.job
            )
        } else {
            format!(
                "The copies in {1} lag behind: look for a copy_failed:{0}:{1} alert and its error (`drctl alerts`), then `drctl copy --job {0} --to {1}`.",
                s.job, s.repository
            )
        });
        alerter.raise(c).await
    };
    if let Err(e) = r {
        tracing::error!(job = %s.job, error = %e, "cannot record the RPO alert");
    }
}

/// Compliance of one job over a window, from the recorded transitions.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The job.
    pub job: String,
    /// Start of the window.
    pub from: DateTime<Utc>,
    /// End of the window.
    pub to: DateTime<Utc>,
    /// Seconds of the window with a known status (tracking may start later).
    pub tracked_seconds: f64,
    /// Seconds of it the job was compliant.
    pub compliant_seconds: f64,
    /// compliant / tracked (1.0 when nothing is tracked yet).
    pub compliance: f64,
    /// Violations that started in the window.
    pub violations: usize,
    /// The longest violation in the window, plus the target: the oldest the
    /// newest backup got (None when it never exceeded the target).
    pub worst_gap_seconds: Option<f64>,
}

/// Compliance of `job` between `from` and `to`, replayed from its
/// recorded transitions.
pub async fn window(
    state: &State,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Window> {
    let rows = sqlx::query(
        "SELECT at, compliant, target_ms FROM rpo_transitions WHERE job = ? ORDER BY at, id",
    )
    .bind(job)
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    let ts: Vec<(DateTime<Utc>, bool, i64)> = rows
        .iter()
        .map(|r| {
            (
                crate::services::state::from_ms(r.get("at")),
                r.get::<i64, _>("compliant") != 0,
                r.get("target_ms"),
            )
        })
        .collect();
    Ok(summarize(job, &ts, from, to))
}

/// Pure: sum up transitions over [from, to].
pub fn summarize(
    job: &str,
    ts: &[(DateTime<Utc>, bool, i64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Window {
    let mut tracked = 0.0;
    let mut ok = 0.0;
    let mut violations = 0;
    let mut worst: Option<f64> = None;
    for (i, (at, compliant, target_ms)) in ts.iter().enumerate() {
        let end = ts.get(i + 1).map_or(to, |n| n.0).min(to);
        let start = (*at).max(from);
        if end <= start {
            continue;
        }
        let d = secs(end - start);
        tracked += d;
        if *compliant {
            ok += d;
        } else {
            violations += 1;
            // The whole violation, even the part before the window.
            let full = secs(end - *at) + *target_ms as f64 / 1000.0;
            worst = Some(worst.map_or(full, |w: f64| w.max(full)));
        }
    }
    Window {
        job: job.to_owned(),
        from,
        to,
        tracked_seconds: tracked,
        compliant_seconds: ok,
        compliance: if tracked > 0.0 { ok / tracked } else { 1.0 },
        violations,
        worst_gap_seconds: worst,
    }
}

/// Every recorded transition of `job`, oldest first (reports, tests).
pub async fn transitions(state: &State, job: &str) -> Result<Vec<Transition>> {
    let rows =
        sqlx::query("SELECT at, compliant FROM rpo_transitions WHERE job = ? ORDER BY at, id")
            .bind(job)
            .fetch_all(state.pool())
            .await
            .map_err(|e| state.err(e))?;
    Ok(rows
        .iter()
        .map(|r| Transition {
            at: crate::services::state::from_ms(r.get("at")),
            compliant: r.get::<i64, _>("compliant") != 0,
        })
        .collect())
}

/// Current status rows for metrics (no repository access).
pub async fn saved(state: &State) -> Result<Vec<(String, f64, bool, Option<f64>)>> {
    let rows = sqlx::query("SELECT job, target_ms, compliant, newest_started_at FROM rpo_state")
        .fetch_all(state.pool())
        .await
        .map_err(|e| state.err(e))?;
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(|r| {
            let newest: Option<i64> = r.get("newest_started_at");
            (
                r.get::<String, _>("job"),
                r.get::<i64, _>("target_ms") as f64 / 1000.0,
                r.get::<i64, _>("compliant") != 0,
                newest.map(|n| secs(now - crate::services::state::from_ms(n))),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn p(start: i64, finish: i64) -> Point {
        Point {
            started: t(start),
            finished: t(finish),
        }
    }

    #[test]
    fn the_store_clock_decides_when_a_backup_was_taken_and_landed() {
        // No store time: the manifest's own.
        assert_eq!(Point::on_store_clock(t(0), t(30), None), p(0, 30));
        // A host 5 minutes ahead or 2 hours behind: the store's commit,
        // the run's duration before it.
        assert_eq!(Point::on_store_clock(t(300), t(330), Some(t(31))), p(1, 31));
        assert_eq!(
            Point::on_store_clock(t(-7200), t(-7170), Some(t(31))),
            p(1, 31)
        );
        // A clock that jumped back mid-run has no negative duration.
        assert_eq!(Point::on_store_clock(t(10), t(5), Some(t(6))), p(6, 6));
    }

    #[test]
    fn a_violation_starts_at_newest_plus_target_and_ends_at_the_next_commit() {
        let (tr, newest) = replay(
            true,
            t(0),
            Some(t(-10)),
            &[p(100, 130)],
            t(150),
            Span::seconds(60),
        );
        assert_eq!(
            tr,
            vec![
                Transition {
                    at: t(50),
                    compliant: false
                },
                Transition {
                    at: t(130),
                    compliant: true
                },
            ]
        );
        assert_eq!(newest, Some(t(100)));
    }

    #[test]
    fn several_episodes_while_nobody_looked_are_all_recorded() {
        let (tr, _) = replay(
            true,
            t(0),
            Some(t(0)),
            &[p(100, 110), p(300, 305)],
            t(400),
            Span::seconds(60),
        );
        let at: Vec<(i64, bool)> = tr
            .iter()
            .map(|x| (x.at.timestamp() - 1_800_000_000, x.compliant))
            .collect();
        assert_eq!(
            at,
            vec![
                (60, false),
                (110, true),
                (160, false),
                (305, true),
                (360, false)
            ]
        );
    }

    #[test]
    fn a_backup_too_old_on_arrival_does_not_restore_compliance() {
        // Started at 10, committed at 200: 190 s old on arrival, target 60.
        let (tr, _) = replay(
            false,
            t(100),
            Some(t(0)),
            &[p(10, 200)],
            t(210),
            Span::seconds(60),
        );
        assert!(tr.is_empty());
    }

    #[test]
    fn no_backup_at_all_is_a_violation() {
        let (tr, n) = replay(true, t(0), None, &[], t(10), Span::seconds(60));
        assert_eq!(
            tr,
            vec![Transition {
                at: t(0),
                compliant: false
            }]
        );
        assert_eq!(n, None);
    }

    #[test]
    fn window_sums_compliant_time_and_the_worst_gap() {
        let ts = vec![
            (t(0), true, 60_000),
            (t(60), false, 60_000),
            (t(90), true, 60_000),
            (t(200), false, 60_000),
            (t(250), true, 60_000),
        ];
        let w = summarize("j", &ts, t(0), t(300));
        assert_eq!(w.tracked_seconds, 300.0);
        assert_eq!(w.compliant_seconds, 300.0 - 30.0 - 50.0);
        assert_eq!(w.violations, 2);
        assert_eq!(w.worst_gap_seconds, Some(110.0));
        // A window starting mid-violation counts only its part, but the gap whole.
        let w = summarize("j", &ts, t(220), t(300));
        assert_eq!(w.compliant_seconds, 50.0);
        assert_eq!(w.tracked_seconds, 80.0);
        assert_eq!(w.worst_gap_seconds, Some(110.0));
        // Before tracking began nothing is counted.
        let w = summarize("j", &ts, t(-1000), t(60));
        assert_eq!(w.tracked_seconds, 60.0);
        assert_eq!(w.compliance, 1.0);
    }
}
