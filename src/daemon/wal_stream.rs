//! `wal = "stream"`: the daemon runs PostgreSQL's own `pg_receivewal` on a
//! replication slot for each such physical job, and stores what it writes:
//! each finished segment (and timeline history) as `drctl wal push` would,
//! then removes it from the spool; the unfinished segment (`.partial`)
//! every `wal_flush`, replaced in place, so an idle database still has an
//! RPO of seconds. `pg_receivewal` runs with `--no-loop`: when it exits
//! (the server restarted, the connection dropped, it was killed) the
//! supervisor stores what it left and starts it again with backoff; the
//! slot keeps the server from recycling WAL meanwhile, so nothing is
//! missed.
//!
//! It heals itself and says when it cannot: a `.partial` cut short (the
//! spool's disk filled while pg_receivewal padded a new segment) makes
//! every later pg_receivewal refuse to start, so it is never stored and is
//! moved aside (`wal/<job>.aside/`) before each start; the slot still holds
//! that segment on the server, and pg_receivewal fetches it again.
//! `wal_stream_down:JOB` is raised after [`DOWN_AFTER`] failed starts in a
//! row and resolved once a receiver has run for [`UP_AFTER`];
//! `wal_slot_retained:JOB` when the slot holds back more than the job's
//! `wal_slot_max_retained` on the server (checked every [`SLOT_EVERY`],
//! receiver up or not). Both are exported as metrics.

use super::Daemon;
use crate::base::error::{Error, Result};
use crate::engine::jobs::{Packing, Seal};
use crate::engine::wal;
use crate::services::pg::PgTools;
use crate::services::repository::Repository;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest wait before `pg_receivewal` is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the spool is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Failed starts in a row before `wal_stream_down` is raised.
const DOWN_AFTER: u32 = 3;
/// How long a receiver must run before it counts as up again.
const UP_AFTER: Duration = Duration::from_secs(30);
/// How often each streaming job's slot is measured.
const SLOT_EVERY: Duration = Duration::from_secs(30);
/// Truncated files kept aside per job (older ones are removed).
const ASIDE_KEEP: usize = 3;

/// A streaming job's receiver and slot as `/metrics` shows them.
#[derive(Debug, Clone, Default)]
pub(super) struct Health {
    /// A receiver has run for [`UP_AFTER`] and not failed since.
    pub(super) up: bool,
    /// The WAL the slot holds back on the server (bytes), when measured.
    pub(super) retained_bytes: Option<u64>,
}

/// The `.partial` files of a spool listing (name, size) whose size is
/// neither a whole segment nor 0 (pg_receivewal pads a segment to its full
/// size before writing it; one cut short was never finished and makes it
/// refuse to start) (pure).
pub fn truncated(files: &[(String, u64)], segment_bytes: u64) -> Vec<String> {
    files
        .iter()
        .filter(|(n, size)| n.ends_with(".partial") && *size != 0 && *size != segment_bytes)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Move the spool's truncated `.partial` files into `aside` (keeping the
/// newest [`ASIDE_KEEP`]); returns what was moved.
fn heal(spool: &Path, aside: &Path, segment_bytes: u64) -> Result<Vec<String>> {
    let files: Vec<(String, u64)> = std::fs::read_dir(spool)
        .map_err(|e| Error::io(format!("reading {}", spool.display()), e))?
        .filter_map(|e| {
            let e = e.ok()?;
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some((e.file_name().into_string().ok()?, meta.len()))
        })
        .collect();
    let bad = truncated(&files, segment_bytes);
    if bad.is_empty() {
        return Ok(bad);
    }
    crate::base::private_fs::dir_all(aside)
        .map_err(|e| Error::io(format!("creating {}", aside.display()), e))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    for n in &bad {
        let to = aside.join(format!("{n}.{stamp}"));
        std::fs::rename(spool.join(n), &to)
            .map_err(|e| Error::io(format!("moving {n} to {}", to.display()), e))?;
    }
    let mut kept: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(aside)
        .map_err(|e| Error::io(format!("reading {}", aside.display()), e))?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.metadata().ok()?.modified().ok()?, e.path()))
        })
        .collect();
    kept.sort();
    let extra = kept.len().saturating_sub(ASIDE_KEEP);
    for (_, old) in kept.into_iter().take(extra) {
        let _ = std::fs::remove_file(old);
    }
    Ok(bad)
}

/// The jobs that stream their WAL.
fn stream_jobs(cfg: &crate::config::LoadedConfig) -> Vec<String> {
    cfg.config
        .jobs
        .iter()
        .filter(|(_, j)| {
            matches!(&j.kind, crate::config::Kind::PostgresPhysical(p) if p.wal == crate::config::WalMode::Stream)
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// The replication slot of a job: `drctl_` and the job's name in the
/// letters a slot name may hold (lower case, digits, `_`), at most 63.
pub fn slot_name(job: &str) -> String {
    let clean = crate::base::ids::pg_name_part(job, 63);
    format!("drctl_{clean}").chars().take(63).collect()
}

/// One supervisor per streaming job, started and stopped as the
/// configuration says (a reload may add or remove one).
pub(super) async fn worker(d: Arc<Daemon>) {
    let mut running: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut measured: Option<tokio::time::Instant> = None;
    loop {
        let wanted = stream_jobs(&d.config());
        if measured.is_none_or(|t| t.elapsed() >= SLOT_EVERY) {
            measured = Some(tokio::time::Instant::now());
            for job in &wanted {
                check_slot(&d, job).await;
            }
        }
        if let Ok(mut h) = d.streams.lock() {
            h.retain(|job, _| wanted.contains(job));
        }
        running.retain(|job, h| {
            if wanted.contains(job) {
                !h.is_finished()
            } else {
                h.abort();
                false
            }
        });
        for job in wanted {
            running
                .entry(job.clone())
                .or_insert_with(|| tokio::spawn(supervise(d.clone(), job)));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = d.stopping.cancelled() => break,
        }
    }
    // Each supervisor stores what its pg_receivewal left, then ends.
    for (_, h) in running {
        let _ = h.await;
    }
}

/// Keep `pg_receivewal` running for `job`, with backoff between attempts;
/// [`DOWN_AFTER`] failed starts in a row raise `wal_stream_down`.
async fn supervise(d: Arc<Daemon>, job: String) {
    let mut delay = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let err = match stream_once(&d, &job).await {
            Ok(()) => return,
            Err(e) => e,
        };
        tracing::warn!(job = %job, error = %err, "WAL streaming stopped; starting pg_receivewal again in {}", humantime::format_duration(delay));
        set_health(&d, &job, |h| h.up = false);
        if started.elapsed() > MAX_BACKOFF {
            delay = Duration::from_secs(1);
        }
        failures = if started.elapsed() >= UP_AFTER {
            1
        } else {
            failures + 1
        };
        if failures == DOWN_AFTER {
            stream_down(&d, &job, Some(&err)).await;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = d.stopping.cancelled() => return,
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// What the uploader of one job works with.
struct Uploader {
    repo: Repository,
    job: crate::base::ids::JobName,
    spool: PathBuf,
    packing: Packing,
    seal: Option<Seal>,
    /// The `.partial` stored last, if any (removed once its segment is).
    partial: Option<String>,
    /// The server's WAL segment size: a `.partial` of another size is
    /// cut short and never stored.
    segment_bytes: u64,
}

/// One run of `pg_receivewal`, to its exit (an error) or the daemon's stop
/// (`Ok`), storing what it writes.
async fn stream_once(d: &Daemon, job: &str) -> Result<()> {
    let cfg = d.config();
    let (name, jc, p) = wal::physical_job(&cfg, Some(job))?;
    let target = crate::engine::jobs::postgres_physical::target(p)?;
    let tools = PgTools::locate(p.pg_bindir.as_deref());
    let spool = cfg.config.state_dir.join("wal").join(job);
    crate::base::private_fs::dir_all(&spool)
        .map_err(|e| Error::io(format!("creating {}", spool.display()), e))?;
    let repo_name = jc.backup_repository(job)?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let seal = match cfg.encryption_of(jc) {
        Some(e) => Some(Seal::new(e).map_err(Error::Other)?),
        None => None,
    };
    let mut up = Uploader {
        repo,
        job: name,
        spool: spool.clone(),
        packing: Packing {
            compression: p.storage.compression,
            level: p.storage.compression_level,
            threads: 1,
        },
        seal,
        partial: None,
        segment_bytes: 0,
    };
    up.segment_bytes = wal::segment_bytes(&up.repo, &up.job).await;
    // A segment cut short (a full disk) would stop pg_receivewal for good:
    // aside with it; the slot sends that segment again.
    let aside = cfg
        .config
        .state_dir
        .join("wal")
        .join(format!("{job}.aside"));
    for n in heal(&spool, &aside, up.segment_bytes)? {
        tracing::warn!(job, file = %n, aside = %aside.display(), "moved a truncated WAL file out of the spool (the disk filled?); pg_receivewal fetches the segment again from the slot");
    }
    // What an earlier run left (the daemon stopped, pg_receivewal died).
    up.pass(true).await;

    let (env, _passfile) = tools.env_for(&target)?;
    let slot = slot_name(job);
    let create: Vec<String> = vec![
        "--create-slot".into(),
        "--if-not-exists".into(),
        format!("--slot={slot}"),
        "--no-password".into(),
    ];
    tools
        .spawn("pg_receivewal", &create, &env, false, false)
        .await?
        .finish()
        .await?;
    let args: Vec<String> = vec![
        "-D".into(),
        spool.display().to_string(),
        format!("--slot={slot}"),
        "--no-loop".into(),
        "--synchronous".into(),
        "--no-password".into(),
    ];
    let child = tools
        .spawn("pg_receivewal", &args, &env, false, false)
        .await?;
    tracing::info!(job, slot, spool = %spool.display(), "streaming WAL with pg_receivewal");
    // Boxed so the stop path can drop it (killing pg_receivewal) before
    // the last pass.
    let mut exited = Box::pin(child.finish());
    let mut tick = tokio::time::interval(TICK);
    let mut flushed = tokio::time::Instant::now();
    let began = tokio::time::Instant::now();
    let mut up_said = false;
    loop {
        if !up_said && began.elapsed() >= UP_AFTER {
            up_said = true;
            set_health(d, job, |h| h.up = true);
            stream_down(d, job, None).await;
        }
        tokio::select! {
            r = &mut exited => {
                up.pass(true).await;
                return Err(match r {
                    Ok(_) => Error::Other("pg_receivewal exited".into()),
                    Err(e) => e,
                });
            }
            _ = tick.tick() => {
                let due = flushed.elapsed() >= p.wal_flush;
                up.pass(due).await;
                if due {
                    flushed = tokio::time::Instant::now();
                }
            }
            () = d.stopping.cancelled() => {
                // Dropping the future kills pg_receivewal; then store
                // everything it wrote.
                drop(exited);
                if tokio::time::timeout(Duration::from_secs(30), up.pass(true)).await.is_err() {
                    tracing::warn!(job, "stopping with WAL still in the spool; the next start stores it");
                }
                return Ok(());
            }
        }
    }
}

impl Uploader {
    /// Store every finished file of the spool (oldest first, each removed
    /// once stored) and, when `partial_due`, the unfinished one.
    async fn pass(&mut self, partial_due: bool) {
        let names = match spool_names(&self.spool) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(job = %self.job, error = %e, "cannot read the WAL spool");
                return;
            }
        };
        for action in wal::spool_actions(&names, partial_due) {
            let r = match &action {
                wal::SpoolAction::Push(n) => self.finished(n).await,
                wal::SpoolAction::PushPartial(n) => self.unfinished(n).await,
            };
            if let Err(e) = r {
                tracing::error!(job = %self.job, error = %e, "cannot store streamed WAL; retrying");
                return;
            }
        }
    }

    async fn finished(&mut self, n: &str) -> Result<()> {
        let path = self.spool.join(n);
        wal::push(
            &self.repo,
            &self.job,
            &path,
            self.packing,
            self.seal.as_ref(),
        )
        .await?;
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        // The unfinished copy of this segment is superseded (stored by
        // this run, or by one before a restart).
        let partial = format!("{n}.partial");
        if self.partial.as_deref() == Some(partial.as_str())
            || wal::read_record(&self.repo, &self.job, &partial)
                .await
                .is_ok()
        {
            wal::forget(&self.repo, &self.job, &partial).await?;
            self.partial = None;
        }
        Ok(())
    }

    async fn unfinished(&mut self, n: &str) -> Result<()> {
        let path = self.spool.join(n);
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if !truncated(&[(n.to_owned(), size)], self.segment_bytes).is_empty() {
            // Never replace a good stored copy with one cut short; the
            // next start moves it aside.
            tracing::warn!(job = %self.job, file = n, size, "not storing a WAL file cut short");
            return Ok(());
        }
        if let Some(old) = self.partial.clone().filter(|o| o != n) {
            // pg_receivewal moved on without our seeing the finished file
            // (it was stored by a pass already): the old copy is stale.
            wal::forget(&self.repo, &self.job, &old).await?;
        }
        wal::push_partial(
            &self.repo,
            &self.job,
            &path,
            self.packing,
            self.seal.as_ref(),
        )
        .await?;
        self.partial = Some(n.to_owned());
        Ok(())
    }
}

fn set_health(d: &Daemon, job: &str, f: impl FnOnce(&mut Health)) {
    if let Ok(mut h) = d.streams.lock() {
        f(h.entry(job.to_owned()).or_default());
    }
}

/// Raise `wal_stream_down:JOB` (with the last error) or resolve it (`None`).
async fn stream_down(d: &Daemon, job: &str, err: Option<&Error>) {
    use crate::services::alerts::{Alerter, Condition, Severity};
    let cfg = d.config();
    let alerter = Alerter::new(&cfg, &d.state);
    let r = match err {
        None => {
            alerter
                .clear(
                    &format!("wal_stream_down:{job}"),
                    format!("WAL of {job} streams again"),
                )
                .await
        }
        Some(e) => {
            let mut c = Condition::new(
                "wal_stream_down",
                job,
                Severity::Critical,
                format!("pg_receivewal for {job} failed {DOWN_AFTER} times in a row: no WAL is being stored"),
            );
            c.job = Some(job.to_owned());
            c.detail = Some(crate::base::secret::redact(&e.to_string()));
            c.hint = Some(format!(
                "The slot {} keeps the server's WAL meanwhile, so nothing is lost yet, but the server's pg_wal grows. Look at the daemon's log (`journalctl -u drctl`), the server's (replication connections, max_wal_senders) and the spool's disk ({}).",
                slot_name(job),
                cfg.config.state_dir.join("wal").join(job).display()
            ));
            alerter.raise(c).await
        }
    };
    if let Err(e) = r {
        tracing::error!(job, error = %e, "cannot record the wal_stream_down alert");
    }
}

/// Measure the WAL `job`'s slot holds back on the server; raise or resolve
/// `wal_slot_retained:JOB` against the job's `wal_slot_max_retained`.
async fn check_slot(d: &Daemon, job: &str) {
    use crate::services::alerts::{Alerter, Condition, Severity};
    let cfg = d.config();
    let Ok((_, _, p)) = wal::physical_job(&cfg, Some(job)) else {
        return;
    };
    let retained = match slot_retained(p, &slot_name(job)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(job, error = %e, "cannot measure the replication slot");
            return;
        }
    };
    set_health(d, job, |h| h.retained_bytes = retained);
    let Some(bytes) = retained else { return };
    let max = p.wal_slot_max_retained.as_u64();
    let alerter = Alerter::new(&cfg, &d.state);
    let key = format!("wal_slot_retained:{job}");
    let r = if slot_over(bytes, max) {
        let mut c = Condition::new(
            "wal_slot_retained",
            job,
            Severity::Warning,
            format!(
                "the replication slot {} holds back {} of WAL on the server (more than wal_slot_max_retained = {})",
                slot_name(job),
                bytesize::ByteSize::b(bytes),
                p.wal_slot_max_retained
            ),
        );
        c.job = Some(job.to_owned());
        c.hint = Some(format!(
            "The receiver is down or behind, and the server keeps every WAL file the slot has not confirmed, toward its own disk limit. Fix the receiver (see wal_stream_down), or, if this job is gone for good, drop the slot: SELECT pg_drop_replication_slot('{}');",
            slot_name(job)
        ));
        alerter.raise(c).await
    } else {
        alerter
            .clear(
                &key,
                format!(
                    "the slot of {job} holds back {} again",
                    bytesize::ByteSize::b(bytes)
                ),
            )
            .await
    };
    if let Err(e) = r {
        tracing::error!(job, error = %e, "cannot record the wal_slot_retained alert");
    }
}

/// Whether a slot holding back `bytes` is over `max` (pure).
pub fn slot_over(bytes: u64, max: u64) -> bool {
    bytes > max
}

/// The bytes between the server's current WAL position and the slot's
/// `restart_lsn` (`None`: no such slot yet).
async fn slot_retained(p: &crate::config::PhysicalJob, slot: &str) -> Result<Option<u64>> {
    let target = crate::engine::jobs::postgres_physical::target(p)?;
    let tools = PgTools::locate(p.pg_bindir.as_deref());
    let mut conn = crate::services::pg::SqlSession::open(&tools, &target).await?;
    let v = conn
        .scalar(&format!(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint::text FROM pg_replication_slots WHERE slot_name = {}",
            crate::services::pg::quote_literal(slot)
        ))
        .await;
    let _ = conn.close().await;
    Ok(v?
        .and_then(|t| t.parse::<i64>().ok())
        .map(|n| n.max(0) as u64))
}

fn spool_names(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_partial_cut_short_is_truncated() {
        let seg = 16 << 20;
        let files: Vec<(String, u64)> = [
            ("000000010000000000000003.partial", 8 << 20),
            ("000000010000000000000004.partial", seg),
            ("000000010000000000000005.partial", 0),
            ("000000010000000000000002", 8 << 20),
            ("000000010000000000000006.partial.tmp", 1),
        ]
        .iter()
        .map(|(n, s)| ((*n).to_owned(), *s))
        .collect();
        assert_eq!(
            super::truncated(&files, seg),
            vec!["000000010000000000000003.partial".to_owned()]
        );
        assert!(super::slot_over(2 << 30, 1 << 30));
        assert!(!super::slot_over(1 << 30, 1 << 30));
    }

    #[test]
    fn slot_names_are_what_postgresql_takes() {
        assert_eq!(super::slot_name("AppDB-pitr.1"), "drctl_appdb_pitr_1");
        assert_eq!(super::slot_name(&"x".repeat(100)).len(), 63);
    }
}
