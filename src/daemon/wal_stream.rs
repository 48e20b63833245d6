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
    loop {
        let wanted = stream_jobs(&d.config());
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

/// Keep `pg_receivewal` running for `job`, with backoff between attempts.
async fn supervise(d: Arc<Daemon>, job: String) {
    let mut delay = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        match stream_once(&d, &job).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "WAL streaming stopped; starting pg_receivewal again in {}", humantime::format_duration(delay));
            }
        }
        if started.elapsed() > MAX_BACKOFF {
            delay = Duration::from_secs(1);
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
    };
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
    loop {
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

fn spool_names(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slot_names_are_what_postgresql_takes() {
        assert_eq!(super::slot_name("AppDB-pitr.1"), "drctl_appdb_pitr_1");
        assert_eq!(super::slot_name(&"x".repeat(100)).len(), 63);
    }
}
