//! Timed restore drills: restore the newest backup of a job into a scratch
//! database (on a server, or a throwaway local cluster), prove it complete
//! (row counts from the backup's own snapshot, roles, SQL checks), time
//! every phase against the RTO, record it, alert, and always clean up.

pub mod checks;
mod pitr;
pub use pitr::sweep_stale;
mod redis;
mod scratch;
mod store;

pub use store::{list, restored_for_job};

use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
use crate::config::{Kind, LoadedConfig};
use crate::services::alerts::{Alerter, Condition, Severity};
use crate::services::pg::quote_ident;
use crate::services::state::State;
use checks::CheckResult;
use serde::{Deserialize, Serialize};

use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long one phase of a drill took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    /// `fetch`, `decrypt_decompress`, `restore`, `verify` or `cleanup`.
    pub name: String,
    /// Its wall time.
    pub seconds: f64,
}

/// How a drill ended: a closed set, stored by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum DrillOutcome {
    /// Still in progress (or killed before it could say).
    Running,
    /// Restored, every check passed, within the RTO.
    Passed,
    /// Restored and verified, but slower than its RTO.
    OverRto,
    /// A phase failed (see `failed_phase`).
    Failed,
    /// Stopped by a signal or shutdown.
    Interrupted,
}

impl DrillOutcome {
    /// The backup was restored and verified (in time or not).
    pub fn restored(self) -> bool {
        matches!(self, DrillOutcome::Passed | DrillOutcome::OverRto)
    }
}

names!(DrillOutcome {
    Running => "running",
    Passed => "passed",
    OverRto => "over_rto",
    Failed => "failed",
    Interrupted => "interrupted",
});

/// One drill run, as stored and reported.
#[derive(Debug, Clone, Serialize)]
pub struct DrillRecord {
    /// Run id.
    pub id: i64,
    /// The drill's name.
    pub drill: String,
    /// The job whose backup it restored.
    pub job: String,
    /// The host that ran it.
    pub host: String,
    /// What started it.
    pub trigger: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// How it ended.
    pub outcome: DrillOutcome,
    /// The phase that failed.
    pub failed_phase: Option<String>,
    /// Why, redacted.
    pub error: Option<String>,
    /// The backup restored.
    pub backup_id: Option<String>,
    /// How old that backup's data was when the drill started.
    pub backup_age_seconds: Option<f64>,
    /// Where it was restored (no password).
    pub target: Option<String>,
    /// fetch (download + verify, streaming through the decoders),
    /// decrypt_decompress (inside fetch), restore, verify, cleanup.
    pub phases: Vec<Phase>,
    /// Wall time of the whole drill: the measured RTO.
    pub total_seconds: Option<f64>,
    /// The drill's RTO target.
    pub rto_seconds: Option<f64>,
    /// Every table and SQL check, with what was expected and found.
    pub checks: Vec<CheckResult>,
    /// Leftovers of earlier drills removed first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub swept: Vec<String>,
    /// The repository the backup was restored from (this run only; not
    /// kept in the state database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Bytes the restore processed (a point-in-time drill: the base
    /// backup's raw size and the WAL replayed): with the fetch and restore
    /// phases, the rate a later restore's estimate is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_bytes: Option<u64>,
}

impl DrillRecord {
    /// Seconds of phase `name`, if it ran.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.seconds)
    }
}

/// How to run a drill.
pub struct Options {
    /// A specific backup instead of the newest.
    pub id: Option<String>,
    /// Leave the scratch database in place for inspection.
    pub keep: bool,
    /// What started it (`schedule`, `cli`).
    pub trigger: String,
    /// Cancelled on shutdown or Ctrl-C: cleanup still runs.
    pub cancel: CancellationToken,
    /// Counters for the CLI's progress bar.
    pub progress: Arc<Progress>,
}

/// Run drill `name`. Errors only when the drill cannot even start (unknown
/// name, state unwritable); a drill that fails is an `Ok` record with
/// outcome `failed`.
pub async fn run(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    opts: Options,
) -> Result<DrillRecord> {
    let d = cfg.config.drills.get(name).ok_or_else(|| Error::Config {
        file: cfg.file_of("drills"),
        key: format!("drills.{name}"),
        message: format!(
            "no such drill (expected one of: {})",
            cfg.config
                .drills
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let (_, job) = cfg.job(&d.job)?;
    if !matches!(
        job.kind,
        Kind::Postgres(_) | Kind::Redis(_) | Kind::PostgresPhysical(_)
    ) {
        return Err(Error::WrongKind {
            job: d.job.clone(),
            kind: job.kind(),
            expected: "drills restore postgres, postgres_physical or redis jobs",
        });
    }
    // One run of a drill at a time on this host (daemon and CLI alike).
    let _lock = crate::services::lock::HostLock::try_acquire(
        &cfg.config.state_dir,
        &format!(".drill-{name}"),
    )?
    .map_err(|holder| Error::Other(format!("drill {name} is already running ({holder})")))?;
    let started = Instant::now();
    let id = store::start(state, name, &d.job, &opts.trigger).await?;
    let mut rec = DrillRecord {
        id,
        drill: name.to_owned(),
        job: d.job.clone(),
        host: crate::base::host::name(),
        trigger: opts.trigger.clone(),
        started_at: chrono::Utc::now().to_rfc3339(),
        finished_at: None,
        outcome: DrillOutcome::Running,
        failed_phase: None,
        error: None,
        backup_id: None,
        backup_age_seconds: None,
        target: None,
        phases: Vec::new(),
        total_seconds: None,
        rto_seconds: d.rto.map(|r| r.as_secs_f64()),
        checks: Vec::new(),
        swept: Vec::new(),
        repository: None,
        work_bytes: None,
    };
    let mut scratch = None;
    let mut redis_scratch = None;
    let mut pitr_scratch = None;
    let result = match &job.kind {
        Kind::Postgres(pg_job) => phases(cfg, d, pg_job, &opts, &mut rec, &mut scratch).await,
        Kind::PostgresPhysical(_) => {
            pitr::phases(cfg, name, d, &opts, &mut rec, &mut pitr_scratch).await
        }
        _ => redis::phases(cfg, name, d, &opts, &mut rec, &mut redis_scratch).await,
    };

    // Cleanup always runs: after success, failure or cancellation.
    opts.progress.set_phase("cleanup", 0);
    let t = Instant::now();
    let keep = opts.keep && result.is_ok();
    let cleanup_err = clean(&mut scratch, keep)
        .await
        .or(clean(&mut redis_scratch, keep).await)
        .or(clean(&mut pitr_scratch, keep).await);
    rec.phases.push(Phase {
        name: "cleanup".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    let total = started.elapsed().as_secs_f64();
    rec.total_seconds = Some(total);
    rec.finished_at = Some(chrono::Utc::now().to_rfc3339());
    let (outcome, failed_phase, error) = judge(result, cleanup_err, total, d.rto);
    rec.outcome = outcome;
    rec.failed_phase = failed_phase.map(String::from);
    rec.error = error.map(|e| crate::base::secret::redact(&e));
    store::finish(state, id, &rec).await?;
    // A drill that restored and checked the backup proves it restorable:
    // retention keeps the newest such backup.
    if rec.outcome.restored() {
        let repo = rec.repository.as_deref().or(job.repository());
        if let (Some(repo), Some(backup)) = (repo, rec.backup_id.as_deref()) {
            if let Err(e) = state.record_verdict(repo, &d.job, backup, true, true).await {
                tracing::warn!(error = %e, "cannot record the drill's verdict");
            }
        }
    }
    alert(cfg, state, &rec).await;
    Ok(rec)
}

type PhaseResult = std::result::Result<(), (&'static str, Error)>;

/// Where a drill restored: removed after it, whatever happened.
trait Throwaway {
    /// Where it is, for messages.
    fn display(&self) -> String;
    /// Remove it (stop what runs there).
    async fn remove(&mut self) -> Result<()>;
}

impl Throwaway for scratch::Scratch {
    fn display(&self) -> String {
        scratch::Scratch::display(self)
    }
    async fn remove(&mut self) -> Result<()> {
        scratch::Scratch::remove(self).await
    }
}

impl Throwaway for redis::Scratch {
    fn display(&self) -> String {
        redis::Scratch::display(self)
    }
    async fn remove(&mut self) -> Result<()> {
        redis::Scratch::remove(self).await
    }
}

impl Throwaway for pitr::Scratch {
    fn display(&self) -> String {
        pitr::Scratch::display(self)
    }
    async fn remove(&mut self) -> Result<()> {
        pitr::Scratch::remove(self).await
    }
}

/// Remove the drill's scratch place unless it is kept (`--keep` after a
/// drill that passed); the error, if removing failed.
async fn clean<S: Throwaway>(s: &mut Option<S>, keep: bool) -> Option<String> {
    let s = s.as_mut()?;
    if keep {
        tracing::info!(scratch = %s.display(), "kept for inspection (--keep)");
        return None;
    }
    s.remove().await.err().map(|e| e.to_string())
}

/// The restore request of a drill, without its target: the job's backups
/// (or the drill's `repository`), into scratch, the application untouched
/// (no hooks, no announcement), journaled as a drill's.
fn request(
    d: &crate::config::DrillConfig,
    opts: &Options,
) -> crate::engine::restore::RestoreRequest {
    crate::engine::restore::RestoreRequest {
        job: Some(d.job.clone()),
        id: opts.id.clone(),
        label: None,
        to: None,
        to_job_server: None,
        jobs: d.jobs,
        dry_run: false,
        confirmed: true,
        tmp_dir: None,
        cancel: opts.cancel.clone(),
        identity: None,
        preserve_modes: false,
        force_source: false,
        hooks: false,
        announce: false,
        origin: crate::engine::restore::journal::Origin::Drill,
        repository: d.repository.clone(),
    }
}

/// Which backup the drill restores, and how old its data is (recorded).
async fn pick(
    cfg: &LoadedConfig,
    req: &crate::engine::restore::RestoreRequest,
    rec: &mut DrillRecord,
) -> Result<crate::base::manifest::Manifest> {
    let resolved = crate::engine::restore::resolve(cfg, req).await?;
    let m = resolved.manifest.clone();
    rec.backup_id = Some(m.id.to_string());
    rec.backup_age_seconds =
        Some((chrono::Utc::now() - m.started_at).num_milliseconds() as f64 / 1000.0);
    Ok(m)
}

/// A drill's outcome, failed phase and error: the first failing phase
/// decides (cancelled is `interrupted`); then a failed cleanup; a drill
/// that passed every phase is `over_rto` when it took longer than its RTO.
fn judge(
    result: PhaseResult,
    cleanup_err: Option<String>,
    total_seconds: f64,
    rto: Option<std::time::Duration>,
) -> (DrillOutcome, Option<&'static str>, Option<String>) {
    match (result, cleanup_err) {
        (Err((phase, e)), _) => {
            let outcome = if matches!(e, Error::Interrupted(_)) {
                DrillOutcome::Interrupted
            } else {
                DrillOutcome::Failed
            };
            (outcome, Some(phase), Some(e.to_string()))
        }
        (Ok(()), Some(e)) => (DrillOutcome::Failed, Some("cleanup"), Some(e)),
        (Ok(()), None) => match rto {
            Some(rto) if total_seconds > rto.as_secs_f64() => (DrillOutcome::OverRto, None, None),
            _ => (DrillOutcome::Passed, None, None),
        },
    }
}

async fn phases(
    cfg: &LoadedConfig,
    d: &crate::config::DrillConfig,
    pg_job: &crate::config::PostgresJob,
    opts: &Options,
    rec: &mut DrillRecord,
    scratch_out: &mut Option<scratch::Scratch>,
) -> PhaseResult {
    let at = |phase: &'static str| move |e: Error| (phase, e);
    let req0 = request(d, opts);
    opts.progress.set_phase("fetch", 0);
    let m = pick(cfg, &req0, rec).await.map_err(at("fetch"))?;

    let (scratch, swept) = scratch::prepare(&d.target, &d.job, pg_job, &cfg.config.state_dir)
        .await
        .map_err(at("fetch"))?;
    rec.swept = swept;
    rec.target = Some(scratch.display());
    let (to, to_job_server) = scratch.restore_target();
    let target = scratch.target().map_err(at("restore"))?;
    let tools = scratch.tools();
    *scratch_out = Some(scratch);

    let req = crate::engine::restore::RestoreRequest {
        id: Some(m.id.to_string()),
        to,
        to_job_server,
        dry_run: false,
        ..req0
    };
    let restored = crate::engine::restore::run(cfg, &req, opts.progress.clone()).await;
    let report = match restored {
        Ok(r) => {
            rec.repository = Some(r.repository.clone());
            r
        }
        Err(e) => {
            // The restore's own phase marker says where it stopped.
            let phase = if opts.progress.phase() == "restore" {
                "restore"
            } else {
                "fetch"
            };
            return Err((phase, e));
        }
    };
    for (name, seconds) in [
        ("fetch", report.fetch_seconds),
        ("decrypt_decompress", report.decode_seconds),
        ("restore", report.restore_seconds),
    ] {
        rec.phases.push(Phase {
            name: name.into(),
            seconds,
        });
    }

    opts.progress.set_phase("verify", 0);
    let t = Instant::now();
    let verified = crate::engine::restore::cancellable(
        &opts.cancel,
        "verifying the drill",
        verify(
            &tools,
            &target,
            &m,
            &report.roles_expected,
            d,
            &mut rec.checks,
        ),
    )
    .await;
    rec.phases.push(Phase {
        name: "verify".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    verified.map_err(at("verify"))?;
    match failed_checks(&rec.checks) {
        Some(e) => Err(("verify", e)),
        None => Ok(()),
    }
}

/// The drill's verdict on its checks: None when all passed, else one
/// error naming each failed check with what was expected and found.
fn failed_checks(checks: &[CheckResult]) -> Option<Error> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{} {}: expected {}, got {}",
                c.kind,
                c.name,
                c.expected,
                c.got.as_deref().unwrap_or("nothing")
            )
        })
        .collect();
    (!failed.is_empty()).then(|| {
        Error::Other(format!(
            "{} check(s) failed: {}",
            failed.len(),
            failed.join("; ")
        ))
    })
}

async fn verify(
    tools: &crate::services::pg::PgTools,
    target: &crate::services::pg::PgTarget,
    m: &crate::base::manifest::Manifest,
    roles: &[String],
    d: &crate::config::DrillConfig,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    use crate::services::pg::quote_literal;
    let mut conn = crate::services::pg::SqlSession::open(tools, target).await?;
    for t in &m.tables {
        let Some(expected) = t.rows else {
            // Above count_rows_max_table_size at backup time: no count to
            // compare, but the table must be there.
            let name = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name));
            let exists = conn
                .scalar(&format!(
                    "SELECT (to_regclass({}) IS NOT NULL)::text",
                    quote_literal(&name)
                ))
                .await?
                .as_deref()
                == Some("true");
            out.push(CheckResult {
                kind: "table".into(),
                name: format!("{}.{}", t.schema, t.name),
                expected: "exists (no row count recorded)".into(),
                got: Some(if exists { "exists" } else { "missing table" }.into()),
                ok: exists,
            });
            continue;
        };
        let sql = format!(
            "SELECT count(*)::text FROM {}.{}",
            quote_ident(&t.schema),
            quote_ident(&t.name)
        );
        let got: Option<i64> = conn
            .scalar(&sql)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.parse().ok());
        out.push(CheckResult {
            kind: "rows".into(),
            name: format!("{}.{}", t.schema, t.name),
            expected: expected.to_string(),
            got: Some(got.map_or_else(|| "missing table".into(), |g| g.to_string())),
            ok: got == Some(expected),
        });
    }
    if !roles.is_empty() {
        let list: Vec<String> = roles.iter().map(|r| quote_literal(r)).collect();
        let present: Vec<String> = conn
            .rows(&format!(
                "SELECT rolname::text FROM pg_roles WHERE rolname IN ({})",
                list.join(", ")
            ))
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        for r in roles {
            let ok = present.contains(r);
            out.push(CheckResult {
                kind: "role".into(),
                name: r.clone(),
                expected: "exists".into(),
                got: Some(if ok { "exists" } else { "missing" }.into()),
                ok,
            });
        }
    }
    for c in &d.checks {
        let expect = c.expect.get()?;
        let got = sql_check(&mut conn, &c.sql, d.check_timeout).await;
        out.push(checks::judged(c, expect, got));
    }
    let _ = conn.close().await;
    Ok(())
}

/// The first column of the first row, as text, in a read-only transaction.
async fn sql_check(
    conn: &mut crate::services::pg::SqlSession,
    sql: &str,
    timeout: std::time::Duration,
) -> std::result::Result<Option<String>, String> {
    conn.execute("BEGIN READ ONLY")
        .await
        .map_err(|e| e.to_string())?;
    let wrapped = format!(
        "SELECT (t.c)::text FROM ({}) AS t(c) LIMIT 1",
        sql.trim().trim_end_matches(';')
    );
    let got = async {
        conn.execute(&format!(
            "SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ))
        .await?;
        conn.scalar(&wrapped).await
    }
    .await;
    let _ = conn.execute("ROLLBACK").await;
    got.map_err(|e| e.to_string())
}

async fn alert(cfg: &LoadedConfig, state: &State, r: &DrillRecord) {
    let alerter = Alerter::new(cfg, state);
    let failed_key = format!("drill_failed:{}", r.drill);
    let rto_key = format!("drill_over_rto:{}", r.drill);
    let res = match r.outcome {
        DrillOutcome::Failed => {
            let mut c = Condition::new(
                "drill_failed",
                &r.drill,
                Severity::Critical,
                format!(
                    "restore drill {} failed in the {} phase",
                    r.drill,
                    r.failed_phase.as_deref().unwrap_or("?")
                ),
            );
            c.job = Some(r.job.clone());
            c.detail = r.error.clone();
            c.hint = Some(format!(
                "The newest backup of {} did not restore and verify cleanly: treat it as unusable until a drill passes. `drctl drill list` shows the run; `drctl drill run {} --keep` keeps the scratch database to inspect; `drctl verify --job {} --deep` checks the stored artifacts.",
                r.job, r.drill, r.job
            ));
            alerter.raise(c).await
        }
        DrillOutcome::Passed | DrillOutcome::OverRto => {
            let cleared = alerter
                .clear(
                    &failed_key,
                    format!("restore drill {} passes again", r.drill),
                )
                .await;
            let rto = if r.outcome == DrillOutcome::OverRto {
                let mut c = Condition::new(
                    "drill_over_rto",
                    &r.drill,
                    Severity::Warning,
                    format!("restore drill {} took longer than its RTO", r.drill),
                );
                c.job = Some(r.job.clone());
                c.detail = Some(format!(
                    "took {:.1}s, RTO is {:.1}s ({})",
                    r.total_seconds.unwrap_or(0.0),
                    r.rto_seconds.unwrap_or(0.0),
                    r.phases
                        .iter()
                        .map(|p| format!("{} {:.1}s", p.name, p.seconds))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                c.hint = Some("Restores are slower than the runbook promises: raise `jobs` (parallel pg_restore), restore nearer the repository, or revise the RTO.".into());
                alerter.raise(c).await
            } else {
                alerter
                    .clear(
                        &rto_key,
                        format!("restore drill {} is within its RTO again", r.drill),
                    )
                    .await
            };
            cleared.and(rto)
        }
        _ => Ok(()),
    };
    if let Err(e) = res {
        tracing::error!(drill = %r.drill, error = %e, "cannot record the drill alert");
    }
}

#[cfg(test)]
mod judge_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_failing_phase_decides_then_cleanup_then_the_rto() {
        let rto = Some(Duration::from_secs(10));
        let failed = judge(
            Err(("restore", Error::Other("x".into()))),
            Some("rm".into()),
            1.0,
            rto,
        );
        assert_eq!(
            (failed.0, failed.1),
            (DrillOutcome::Failed, Some("restore"))
        );
        let cancelled = judge(
            Err(("fetch", Error::Interrupted("sigterm".into()))),
            None,
            1.0,
            rto,
        );
        assert_eq!(cancelled.0, DrillOutcome::Interrupted);
        let cleanup = judge(Ok(()), Some("cannot drop".into()), 1.0, rto);
        assert_eq!(
            cleanup,
            (
                DrillOutcome::Failed,
                Some("cleanup"),
                Some("cannot drop".into())
            )
        );
        assert_eq!(
            judge(Ok(()), None, 10.0, rto).0,
            DrillOutcome::Passed,
            "at the RTO is within it"
        );
        assert_eq!(judge(Ok(()), None, 10.5, rto).0, DrillOutcome::OverRto);
        assert_eq!(
            judge(Ok(()), None, 1e9, None).0,
            DrillOutcome::Passed,
            "no RTO, no limit"
        );
    }
}
