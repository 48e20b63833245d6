//! A drill of a `postgres_physical` job: a point-in-time restore
//! (`restore::pitr`, as an operator's) into a throwaway data directory
//! under `state_dir/drills/`, to a point chosen by the drill's `at`
//! (`random`: anywhere inside the window the archive can restore, as AWS
//! Backup's restore testing does; `latest`; or a time). The restored
//! cluster is started on a free loopback port and proven: with the job's
//! `marker = true`, the newest `drctl_marker` row at or before the target
//! is less than two minutes older than it and none is after it (the
//! recovery stopped where it was asked to); then the drill's SQL checks.
//! The server and the directory are always removed.

use super::checks::CheckResult;
use super::{DrillRecord, Options, Phase, PhaseResult};
use crate::base::error::{Error, Result};
use crate::config::LoadedConfig;
use crate::engine::restore::pitr::{self, PitrRequest, Target};
use crate::services::pg::server::ServerChild;
use crate::services::pg::{PgTarget, PgTools, SqlSession};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Instant;

/// The throwaway cluster and its directory.
pub struct Scratch {
    dir: PathBuf,
    /// Its server: drctl's child, which dies with it (never a detached
    /// `pg_ctl start`, which would outlive a killed drill).
    server: Option<crate::services::pg::server::ServerChild>,
}

impl Scratch {
    /// Where it lives, for the record.
    pub fn display(&self) -> String {
        self.dir.display().to_string()
    }

    /// Stop the server (if started) and remove the directory.
    pub async fn remove(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.quit().await;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.dir.display()), e)),
        }
    }
}

/// The point a drill restores to (pure): `random` is `from + u × (to −
/// from)` for `u` in [0, 1); `latest` the end of the archive; anything else
/// a time.
pub fn target(at: &str, (from, to): (DateTime<Utc>, DateTime<Utc>), u: f64) -> Result<Target> {
    match at {
        "latest" => Ok(Target::Latest),
        "random" => {
            let span = (to - from).num_milliseconds().max(0) as f64;
            Ok(Target::Time(
                from + chrono::TimeDelta::milliseconds((span * u.clamp(0.0, 1.0)) as i64),
            ))
        }
        other => chrono::DateTime::parse_from_rfc3339(other)
            .map(|t| Target::Time(t.with_timezone(&Utc)))
            .map_err(|_| {
                Error::Other(format!(
                    "drill at = {other:?}: expected \"random\", \"latest\" or an RFC 3339 time"
                ))
            }),
    }
}

/// The marker check (pure): the newest row at or before the target is at
/// most `slack` (two marker intervals) older than it, and no row is after it.
pub fn marker_check(
    t: DateTime<Utc>,
    last_before: Option<DateTime<Utc>>,
    after: i64,
    slack: chrono::TimeDelta,
) -> CheckResult {
    let ok = after == 0 && last_before.is_some_and(|l| t - l <= slack);
    CheckResult {
        kind: "marker".into(),
        name: "drctl_marker".into(),
        expected: format!(
            "the newest row at or before {} at most {}s older, none after",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            slack.num_seconds()
        ),
        got: Some(format!(
            "newest before: {}, after: {after}",
            last_before.map_or_else(
                || "none".to_owned(),
                |l| l.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        )),
        ok,
    }
}

/// Whether `dir_name` is a directory of a run of drill `name`:
/// `prefix(name)` and a 14-digit timestamp, exactly (pure: another drill
/// whose name merely starts the same never matches).
pub fn is_own_dir(dir_name: &str, name: &str) -> bool {
    dir_name
        .strip_prefix(&super::scratch::prefix(name))
        .is_some_and(|ts| ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit()))
}

/// Stop and remove what earlier runs of this drill left under
/// `state_dir/drills/` (a killed drill's cluster and its server); the
/// drill's lock is held, so none of them is running.
async fn sweep_own(tools: &PgTools, root: &std::path::Path, name: &str) -> Vec<String> {
    let mut swept = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return swept;
    };
    for e in entries.flatten() {
        let dir_name = e.file_name().to_string_lossy().into_owned();
        if !is_own_dir(&dir_name, name) || e.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        tracing::warn!(cluster = %e.path().display(), "removing a point-in-time drill's cluster a killed drill left behind");
        match super::scratch::remove_cluster(tools, &e.path()).await {
            Ok(()) => swept.push(dir_name),
            Err(err) => tracing::warn!(error = %err, "cannot remove an old drill cluster"),
        }
    }
    swept
}

/// Sweep what killed point-in-time drills left (their clusters under
/// `state_dir/drills/`), for every configured drill of a physical job
/// that is not running now (its lock is free): the daemon's start and
/// `drctl status` do it, not only that drill's next run. One note each.
pub async fn sweep_stale(cfg: &LoadedConfig) -> Vec<String> {
    let root = cfg.config.state_dir.join("drills");
    if !root.is_dir() {
        return Vec::new();
    }
    let mut notes = Vec::new();
    for (name, d) in &cfg.config.drills {
        let Ok((_, _, job)) = crate::engine::wal::physical_job(cfg, Some(&d.job)) else {
            continue;
        };
        let Ok(Ok(_lock)) = crate::services::lock::HostLock::try_acquire(
            &cfg.config.state_dir,
            &format!(".drill-{name}"),
        ) else {
            continue;
        };
        let tools = PgTools::locate(job.pg_bindir.as_deref());
        for dir in sweep_own(&tools, &root, name).await {
            notes.push(format!(
                "removed {} under {}: the cluster of a point-in-time drill {name} that was killed",
                dir,
                root.display()
            ));
        }
    }
    notes
}

/// This run's directory under `state_dir/drills/`, once what earlier
/// runs left there is swept (noted in the record).
async fn fresh_dir(
    cfg: &LoadedConfig,
    tools: &PgTools,
    name: &str,
    rec: &mut DrillRecord,
) -> PathBuf {
    let root = cfg.config.state_dir.join("drills");
    rec.swept = sweep_own(tools, &root, name).await;
    root.join(format!(
        "{}{}",
        super::scratch::prefix(name),
        Utc::now().format("%Y%m%d%H%M%S")
    ))
}

/// The drill's restore, journaled as a drill's.
async fn journaled_restore(cfg: &LoadedConfig, req: &PitrRequest) -> Result<pitr::PitrReport> {
    let state = crate::services::state::State::open(&cfg.config.state_dir).await?;
    pitr::run(
        cfg,
        &state,
        req,
        crate::engine::restore::journal::Origin::Drill,
    )
    .await
}

pub(super) async fn phases(
    cfg: &LoadedConfig,
    name: &str,
    d: &crate::config::DrillConfig,
    opts: &Options,
    rec: &mut DrillRecord,
    scratch_out: &mut Option<Scratch>,
) -> PhaseResult {
    let at = |phase: &'static str| move |e: Error| (phase, e);
    let (_, _, job) = crate::engine::wal::physical_job(cfg, Some(&d.job)).map_err(at("fetch"))?;
    let tools = PgTools::locate(job.pg_bindir.as_deref());
    let dir = fresh_dir(cfg, &tools, name, rec).await;
    crate::base::private_fs::dir_all(&dir)
        .map_err(|e| at("fetch")(Error::io(format!("creating {}", dir.display()), e)))?;
    super::scratch::hand_to_postgres(&dir).map_err(at("fetch"))?;
    *scratch_out = Some(Scratch {
        dir: dir.clone(),
        server: None,
    });
    rec.target = Some(dir.display().to_string());
    let data = dir.join("data");
    let mut req = PitrRequest {
        job: Some(d.job.clone()),
        target: Target::Latest,
        datadir: data.clone(),
        dry_run: true,
        identity: None,
        parallel: 4,
        tablespace_map: Vec::new(),
        tablespaces_under: Some(dir.join("tablespaces")),
        timeline: None,
        repository: d.repository.clone(),
        base: None,
        keep_archiving: false,
    };
    opts.progress.set_phase("fetch", 0);
    let window = pitr::plan(cfg, &req)
        .await
        .map_err(at("fetch"))?
        .window
        .ok_or_else(|| {
            at("fetch")(Error::NotFound(format!(
                "job {} has nothing to restore to",
                d.job
            )))
        })?;
    req.target = target(
        d.at.as_deref().unwrap_or("random"),
        window,
        rand::random::<f64>(),
    )
    .map_err(at("fetch"))?;
    req.dry_run = false;
    let plan = pitr::plan(cfg, &req).await.map_err(at("fetch"))?;
    rec.backup_id = Some(plan.backup_id.clone());
    rec.work_bytes = Some(plan.work_bytes);
    rec.target = Some(format!("{} (recovered to {})", dir.display(), plan.target));
    rec.backup_age_seconds = Some(match req.target {
        Target::Time(t) => (Utc::now() - t).num_milliseconds() as f64 / 1000.0,
        _ => (Utc::now() - window.1).num_milliseconds() as f64 / 1000.0,
    });
    let report = journaled_restore(cfg, &req).await.map_err(at("restore"))?;
    rec.phases.push(Phase {
        name: "fetch".into(),
        seconds: report.base_seconds + report.wal_seconds,
    });
    rec.phases.push(Phase {
        name: "restore".into(),
        seconds: report.recovery_seconds,
    });

    opts.progress.set_phase("verify", 0);
    let t = Instant::now();
    let port = free_port().map_err(at("verify"))?;
    let options: Vec<String> = [
        "listen_addresses=127.0.0.1".to_owned(),
        format!("port={port}"),
        format!("unix_socket_directories={}", dir.display()),
        "archive_mode=off".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-c".to_owned(), o])
    .collect();
    let log = dir.join("server.log");
    let mut server = ServerChild::start(&tools, &data, &log, &options).map_err(at("verify"))?;
    let ready = server
        .ready(&data, &log, std::time::Duration::from_secs(600))
        .await;
    if let Some(s) = scratch_out.as_mut() {
        s.server = Some(server);
    }
    ready.map_err(at("verify"))?;
    crate::base::faults::point("pitr.drill.verifying").await;
    // A recovery that ran out of archive before the target proves only
    // that nothing after the target came back.
    let marked = match req.target {
        Target::Time(t) if report.reached_target => Some((t, true)),
        Target::Time(t) => Some((t, false)),
        _ => None,
    };
    let result = checks(d, job, marked, port, &mut rec.checks).await;
    rec.phases.push(Phase {
        name: "verify".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    result.map_err(at("verify"))?;
    super::failed_checks(&rec.checks).map_or(Ok(()), |e| Err(("verify", e)))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("finding a free port", e))?
        .port())
}

/// The marker check (with `marker = true` and a time target) and the
/// drill's SQL checks, in `database` (default: the job's `marker_database`).
async fn checks(
    d: &crate::config::DrillConfig,
    job: &crate::config::PhysicalJob,
    marked: Option<(DateTime<Utc>, bool)>,
    port: u16,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let source = crate::engine::jobs::postgres_physical::target(job)?;
    let db = d.database.as_deref().unwrap_or(&job.marker_database);
    // The restored cluster has the source's roles and passwords.
    let mut scratch: PgTarget = source.with_database(db);
    "127.0.0.1".clone_into(&mut scratch.host);
    scratch.port = port;
    let tools = PgTools::locate(job.pg_bindir.as_deref());
    let mut conn = SqlSession::open(&tools, &scratch).await?;
    if let (true, Some((t, reached))) = (job.marker, marked) {
        let ts = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let row = conn
            .rows(&format!(
                "SELECT (SELECT max(at) FROM drctl_marker WHERE at <= '{ts}')::text, (SELECT count(*) FROM drctl_marker WHERE at > '{ts}')::text"
            ))
            .await;
        match row {
            Ok(rows) => {
                let r = rows.into_iter().next().unwrap_or_default();
                let last = r
                    .first()
                    .cloned()
                    .flatten()
                    .and_then(|s| {
                        DateTime::parse_from_str(&format!("{s}00"), "%Y-%m-%d %H:%M:%S%.f%z").ok()
                    })
                    .map(|t| t.with_timezone(&Utc));
                let after = r
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                let slack = if reached {
                    chrono::TimeDelta::from_std(job.marker_interval * 2)
                        .unwrap_or(chrono::TimeDelta::MAX)
                } else {
                    chrono::TimeDelta::MAX
                };
                out.push(marker_check(t, last, after, slack));
            }
            Err(e) => out.push(CheckResult {
                kind: "marker".into(),
                name: "drctl_marker".into(),
                expected: "a drctl_marker table (marker = true on the job, the daemon running)"
                    .into(),
                got: Some(crate::base::secret::redact(&e.to_string())),
                ok: false,
            }),
        }
    }
    for c in &d.checks {
        let expect = c.expect.get()?;
        let got = super::sql_check(&mut conn, &c.sql, d.check_timeout).await;
        out.push(super::checks::judged(c, expect, got));
    }
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_sweeps_only_its_own_directories() {
        let own = format!("{}20261207120000", super::super::scratch::prefix("pitr"));
        assert!(is_own_dir(&own, "pitr"));
        let other = format!("{}20261207120000", super::super::scratch::prefix("pitr_b"));
        assert!(!is_own_dir(&other, "pitr"), "{other}");
        assert!(!is_own_dir(&format!("{own}x"), "pitr"));
        assert!(!is_own_dir("data", "pitr"));
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_random_target_lies_inside_the_window() {
        let w = (at(0), at(3600));
        assert_eq!(target("random", w, 0.0).unwrap(), Target::Time(at(0)));
        assert_eq!(target("random", w, 0.5).unwrap(), Target::Time(at(1800)));
        assert_eq!(target("latest", w, 0.5).unwrap(), Target::Latest);
        assert_eq!(
            target("2027-01-15T08:10:00Z", w, 0.5).unwrap(),
            Target::Time(at(600))
        );
        assert!(target("yesterday", w, 0.5).is_err());
    }

    #[test]
    fn the_marker_proves_where_recovery_stopped() {
        let slack = chrono::TimeDelta::seconds(120);
        assert!(marker_check(at(100), Some(at(60)), 0, slack).ok);
        assert!(
            !marker_check(at(100), Some(at(60)), 1, slack).ok,
            "a row after the target"
        );
        assert!(
            !marker_check(at(1000), Some(at(60)), 0, slack).ok,
            "stopped too early"
        );
        assert!(!marker_check(at(100), None, 0, slack).ok);
    }
}
