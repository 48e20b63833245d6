//! Local state in SQLite (sqlx, migrations embedded): run history and a cache
//! of the backup catalog. Never needed for a restore: the repository is the
//! truth, this is history.

use crate::base::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The last `max` bytes of `text` (fewer, to start on a character): what a
/// tool printed last is what explains its failure.
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Refuse to work in a state directory that belongs to another user: a
/// `drctl run` as root would leave root-owned files (the database's WAL,
/// lock files, repository objects) that the service user then cannot open,
/// and every later scheduled run would fail. The error names the command
/// to use instead.
pub fn refuse_foreign_owner(state_dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(state_dir) else {
        return Ok(()); // created below, by this user
    };
    let me = nix::unistd::geteuid().as_raw();
    match owner_refusal(
        state_dir,
        meta.uid(),
        me,
        &std::env::args().collect::<Vec<_>>(),
    ) {
        Some(message) => Err(Error::Usage(message)),
        None => Ok(()),
    }
}

/// The refusal for a state directory owned by `owner` when running as
/// `me`, or None when they are the same user.
fn owner_refusal(state_dir: &Path, owner: u32, me: u32, argv: &[String]) -> Option<String> {
    if owner == me {
        return None;
    }
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("#{uid}"), |u| u.name)
    };
    let owner_name = name(owner);
    let command: Vec<String> = argv
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 {
                "drctl".to_owned()
            } else {
                a.clone()
            };
            let a = crate::base::secret::mask_url(&a).unwrap_or(a);
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect();
    Some(format!(
        "the state directory {} belongs to user {owner_name} and this command runs as {}: \
         files it created there would lock the service out of its own state. \
         Run it as the owner: sudo -u {owner_name} {}",
        state_dir.display(),
        name(me),
        command.join(" ")
    ))
}

/// Migrations run unless a newer drctl already ran (a version above every
/// one this binary knows is applied): then the file is used as it is, so a
/// downgrade after running a newer binary once keeps working. That is safe
/// because migrations are additive only (new tables, new columns with
/// defaults; never a drop, rename or type change), which the
/// `migrations_are_additive` test checks on every file.
async fn migrate(pool: &SqlitePool) -> std::result::Result<(), sqlx::migrate::MigrateError> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .ok()
            .flatten();
    if let Some(v) = applied.filter(|v| *v > known) {
        tracing::info!(
            applied = v,
            known,
            "the state file was migrated by a newer drctl; using it as it is"
        );
        return Ok(());
    }
    MIGRATOR.run(pool).await
}

/// The time codec of the tables that store Unix milliseconds (alerts, the
/// outbox, RPO): one place, so every module reads and writes them alike.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// See [`ms`]; an out-of-range value reads as the epoch, never a panic.
pub fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(v).unwrap_or_default()
}

/// The local state database (SQLite, WAL): runs, alerts and their
/// outbox, RPO history, drills, metrics. Only this host reads it; the
/// repository alone is enough to restore.
#[derive(Clone)]
pub struct State {
    pool: SqlitePool,
    path: PathBuf,
}

/// How a run ended: a closed set, stored by name (`sqlx::Type`; a row
/// with a status drctl does not know is an error when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished (or killed: `status` says so).
    Running,
    /// Did its work.
    Succeeded,
    /// Failed; its error says why.
    Failed,
    /// Stopped by a signal or shutdown.
    Interrupted,
    /// Not run: the job was already running.
    Skipped,
}

impl RunStatus {
    /// How a run that ended with `e` is recorded: stopped by a signal or a
    /// shutdown is not a failure (no alert, no retry).
    pub fn ended_by(e: &Error) -> Self {
        match e {
            Error::Interrupted(_) => RunStatus::Interrupted,
            _ => RunStatus::Failed,
        }
    }
}

names!(RunStatus {
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Interrupted => "interrupted",
    Skipped => "skipped",
});

/// `status == "failed"` reads as the stored name does.
impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One run of a job as `drctl status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: i64,
    /// The job.
    pub job: String,
    /// Its kind.
    pub kind: String,
    /// The host that ran it.
    pub host: String,
    /// `schedule`, `catch_up`, `retry` or `cli`.
    pub trigger: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// How it ended.
    pub status: RunStatus,
    /// Bytes stored or processed.
    pub bytes: Option<i64>,
    /// The backup it committed.
    pub backup_id: Option<String>,
    /// Its error, redacted.
    pub error: Option<String>,
    /// What child processes printed (bounded).
    pub output: Option<String>,
    /// Maintenance and check kinds: `ok`, `warning` or `critical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Maintenance and check kinds: what the run found, per subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// What is known about one backup from verifications and drills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// A verification found it damaged.
    pub damaged: bool,
    /// A drill restored and checked it.
    pub proven: bool,
}

impl State {
    /// Open (creating if needed) `state_dir/state.db` and run migrations.
    pub async fn open(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join("state.db");
        let err = |context: String, source: crate::base::error::BoxError| Error::State {
            path: path.clone(),
            context,
            source,
        };
        refuse_foreign_owner(state_dir)?;
        crate::base::private_fs::dir_all(state_dir)
            .map_err(|e| err(format!("creating {}", state_dir.display()), e.into()))?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| err(String::new(), e.into()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        // Several processes (daemon, `drctl status`, `drctl run`) may open the
        // file at once, and sqlx does not lock SQLite migrations: serialise
        // creation and migration with a lock file.
        let lock_path = state_dir.join("state.db.open-lock");
        let lock_file = crate::base::private_fs::open_rw(&lock_path)
            .map_err(|e| err(format!("opening {}", lock_path.display()), e.into()))?;
        let guard = tokio::task::spawn_blocking(move || {
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
        })
        .await
        .map_err(|e| err("taking the open lock".into(), e.into()))?
        .map_err(|e| err(format!("locking {}", lock_path.display()), e.into()))?;
        // Created 0600 before SQLite opens it: its WAL and shared-memory
        // files take the database file's mode. Only when it does not exist:
        // closing any descriptor of an open SQLite file drops every POSIX
        // lock this process holds on it (the daemon's own connections),
        // which corrupts concurrent access.
        crate::base::private_fs::create_if_missing(&path)
            .map_err(|e| err(format!("creating {}", path.display()), e.into()))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A COMMIT that failed (a full disk) leaves its connection inside
            // the transaction; back in the pool it would refuse every later
            // BEGIN ("non-zero transaction depth") long after the disk has
            // room again. Such a connection is closed (rolling back) instead.
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(opts)
            .await
            .map_err(|e| err(String::new(), e.into()))?;
        let migrated = migrate(&pool).await;
        drop(guard);
        migrated.map_err(|e| err("migrating".into(), e.into()))?;
        Ok(State { pool, path })
    }

    /// For modules keeping their own tables in the same file (alerts).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> Error {
        Error::State {
            path: self.path.clone(),
            context: String::new(),
            source: e.into(),
        }
    }

    /// Record that `job` started; the returned id finishes it.
    pub async fn start_run(
        &self,
        job: &str,
        kind: &str,
        host: &str,
        trigger: &str,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO runs (job, kind, host, trigger, started_at, status) VALUES (?, ?, ?, ?, ?, 'running')",
        )
        .bind(job)
        .bind(kind)
        .bind(host)
        .bind(trigger)
        .bind(at.to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.last_insert_rowid())
    }

    /// Record how run `id` ended.
    pub async fn finish_run(
        &self,
        run: i64,
        status: RunStatus,
        bytes: Option<u64>,
        backup_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE runs SET finished_at = ?, status = ?, bytes = ?, backup_id = ?, error = ? WHERE id = ?")
            .bind(Utc::now().to_rfc3339())
            .bind(status.as_str())
            .bind(bytes.map(|b| b as i64))
            .bind(backup_id)
            .bind(error.map(crate::base::secret::redact))
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remember a committed backup of `repository` (for status and RPO
    /// without a listing).
    pub async fn cache_backup(
        &self,
        repository: &str,
        m: &crate::base::manifest::Manifest,
    ) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO backups (repository, job, backup_id, finished_at, stored_bytes, manifest) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(repository)
            .bind(m.job.as_str())
            .bind(m.id.as_str())
            .bind(m.finished_at.to_rfc3339())
            .bind(m.stored_bytes() as i64)
            .bind(String::from_utf8_lossy(&m.to_json()).into_owned())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Record what a verification (or a drill) found about one backup.
    /// `proven`: it was read through to the data (deep check, drill) and
    /// passed. A failure marks it damaged until a later check passes.
    pub async fn record_verdict(
        &self,
        repository: &str,
        job: &str,
        backup_id: &str,
        ok: bool,
        proven: bool,
    ) -> Result<()> {
        let now = Utc::now().timestamp_millis();
        sqlx::query(
            "INSERT INTO verdicts (repository, job, backup_id, damaged, proven_at, checked_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (repository, job, backup_id) DO UPDATE SET
               damaged = excluded.damaged,
               proven_at = CASE WHEN excluded.damaged = 1 THEN NULL ELSE coalesce(excluded.proven_at, verdicts.proven_at) END,
               checked_at = excluded.checked_at",
        )
        .bind(repository)
        .bind(job)
        .bind(backup_id)
        .bind(!ok)
        .bind((ok && proven).then_some(now))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every recorded verdict of `job` in `repository`, by backup id.
    pub async fn verdicts(
        &self,
        repository: &str,
        job: &str,
    ) -> Result<std::collections::HashMap<String, Verdict>> {
        let rows = sqlx::query(
            "SELECT backup_id, damaged, proven_at FROM verdicts WHERE repository = ? AND job = ?",
        )
        .bind(repository)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    Verdict {
                        damaged: r.get::<bool, _>(1),
                        proven: r.get::<Option<i64>, _>(2).is_some(),
                    },
                )
            })
            .collect())
    }

    /// A maintenance or check run's verdict and findings (JSON).
    pub async fn set_run_result(
        &self,
        run: i64,
        result: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("UPDATE runs SET result = ?, details = ? WHERE id = ?")
            .bind(result)
            .bind(crate::base::secret::redact(&details.to_string()))
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Keep what child processes printed, bounded to the last 16 KiB.
    pub async fn set_run_output(&self, run: i64, output: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET output = ? WHERE id = ?")
            .bind(crate::base::secret::redact(tail(output, 16 * 1024)))
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A tick that did not run (overlap, lock held elsewhere).
    pub async fn record_skipped(
        &self,
        job: &str,
        kind: &str,
        trigger: &str,
        reason: &str,
    ) -> Result<()> {
        let now = Utc::now().to_rfc3339();
        sqlx::query(
            "INSERT INTO runs (job, kind, host, trigger, started_at, finished_at, status, error) VALUES (?, ?, ?, ?, ?, ?, 'skipped', ?)",
        )
        .bind(job)
        .bind(kind)
        .bind(crate::base::host::name())
        .bind(trigger)
        .bind(&now)
        .bind(&now)
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs of `job` on this host still marked running: a process that
    /// died without recording its end. The caller holds the job's lock.
    pub async fn close_stale_runs(&self, job: &str) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at = ?, error = 'the process ended without recording this run (crash, kill -9 or power loss)'
             WHERE job = ? AND host = ? AND status = 'running'",
        )
        .bind(Utc::now().to_rfc3339())
        .bind(job)
        .bind(crate::base::host::name())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected())
    }

    /// When `job` last succeeded on this host, if ever.
    pub async fn last_success(&self, job: &str) -> Result<Option<DateTime<Utc>>> {
        let v: Option<String> = sqlx::query_scalar(
            "SELECT max(finished_at) FROM runs WHERE job = ? AND status = 'succeeded'",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(v.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Run counts of `job` by outcome, since the state file began (pruned
    /// runs included): `run_totals`, kept by triggers, plus the running ones.
    pub async fn run_counts(&self, job: &str) -> Result<std::collections::BTreeMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT status, n FROM run_totals WHERE job = ?
             UNION ALL
             SELECT 'running', count(*) FROM runs WHERE job = ? AND status = 'running'",
        )
        .bind(job)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Forget history older than `before`: finished runs (but the newest of
    /// each outcome per job, which `status` and the alerts read) and RPO
    /// transitions (but the last one before `before` per
    /// job, which a compliance window starting there needs). Counters do not
    /// move: `run_totals` keeps the counts. Returns the rows deleted.
    pub async fn prune_history(&self, before: DateTime<Utc>) -> Result<u64> {
        let cut_text = before.to_rfc3339();
        let cut_ms = before.timestamp_millis();
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let runs = sqlx::query(
            "DELETE FROM runs WHERE status != 'running' AND finished_at < ?
               AND id NOT IN (SELECT max(id) FROM runs GROUP BY job, status)",
        )
        .bind(&cut_text)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        let transitions = sqlx::query(
            "DELETE FROM rpo_transitions WHERE at < ? AND id NOT IN
               (SELECT max(id) FROM rpo_transitions WHERE at < ? GROUP BY job)",
        )
        .bind(cut_ms)
        .bind(cut_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(runs + transitions)
    }

    /// Stored bytes of the last successful backup of `job`.
    pub async fn last_backup_bytes(&self, job: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT bytes FROM runs WHERE job = ? AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await
            .map(|v: Option<Option<i64>>| v.flatten())
            .map_err(|e| self.err(e))
    }

    /// Most recent runs first; `job` filters.
    pub async fn runs(&self, job: Option<&str>, limit: i64) -> Result<Vec<RunRecord>> {
        // One job: walk its (job, started_at) index from the end, so the
        // cost does not grow with the history (/metrics reads this per job).
        let sql = if job.is_some() {
            "SELECT id, job, kind, host, trigger, started_at, finished_at, status, bytes, backup_id, error, output, result, details
             FROM runs WHERE job = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2"
        } else {
            "SELECT id, job, kind, host, trigger, started_at, finished_at, status, bytes, backup_id, error, output, result, details
             FROM runs WHERE ?1 IS NULL ORDER BY id DESC LIMIT ?2"
        };
        let rows = sqlx::query(sql)
            .bind(job)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| {
                Ok(RunRecord {
                    id: r.try_get("id")?,
                    job: r.try_get("job")?,
                    kind: r.try_get("kind")?,
                    host: r.try_get("host")?,
                    trigger: r.try_get("trigger")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    status: r.try_get("status")?,
                    bytes: r.try_get("bytes")?,
                    backup_id: r.try_get("backup_id")?,
                    error: r.try_get("error")?,
                    output: r.try_get("output")?,
                    result: r.try_get("result")?,
                    details: r
                        .try_get::<Option<String>, _>("details")?
                        .and_then(|d| serde_json::from_str(&d).ok()),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Open a state file that a newer binary migrated (a version this one
    /// does not know is recorded as applied): it still opens and works.
    #[tokio::test]
    async fn a_newer_binarys_state_file_still_opens() {
        let t = tempfile::tempdir().unwrap();
        let s = State::open(t.path()).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99990101, 'from the future', 1, x'00', 1)",
        )
        .execute(s.pool())
        .await
        .unwrap();
        sqlx::query("CREATE TABLE future_things (x INTEGER)")
            .execute(s.pool())
            .await
            .unwrap();
        s.pool().close().await;
        let s = State::open(t.path())
            .await
            .expect("opens after a downgrade");
        let id = s
            .start_run("j", "backup", "h", "test", Utc::now())
            .await
            .unwrap();
        assert!(id > 0);
    }

    #[tokio::test]
    async fn the_state_file_is_private_under_any_umask() {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state");
        let s = State::open(&dir).await.unwrap();
        s.start_run("j", "backup", "h", "test", Utc::now())
            .await
            .unwrap();
        nix::sys::stat::umask(old);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for f in ["state.db", "state.db-wal", "state.db.open-lock"] {
            let m = std::fs::metadata(dir.join(f)).unwrap().mode() & 0o777;
            assert_eq!(m, 0o600, "{f}");
        }
    }

    #[test]
    fn another_users_state_directory_is_refused_with_the_command_to_use() {
        let dir = Path::new("/var/lib/drctl");
        assert_eq!(owner_refusal(dir, 0, 0, &[]), None);
        let argv = [
            "/usr/bin/drctl",
            "run",
            "appdb",
            "--label",
            "before it's done",
        ]
        .map(String::from);
        let m = owner_refusal(dir, 0, 4242, &argv).unwrap();
        assert!(m.contains("/var/lib/drctl belongs to user root"), "{m}");
        assert!(m.contains("runs as #4242"), "{m}");
        assert!(
            m.ends_with("sudo -u root drctl run appdb --label 'before it'\\''s done'"),
            "{m}"
        );
    }

    /// Pruned history leaves the counters and each job's newest run of
    /// every outcome; a run that finishes after is counted on top.
    #[tokio::test]
    async fn pruning_history_keeps_counts_and_the_newest_runs() {
        let t = tempfile::tempdir().unwrap();
        let s = State::open(t.path()).await.unwrap();
        let old = Utc::now() - chrono::Duration::days(200);
        for i in 0..5 {
            let id = s
                .start_run(
                    "hc",
                    "health",
                    "h",
                    "schedule",
                    old + chrono::Duration::minutes(i),
                )
                .await
                .unwrap();
            sqlx::query("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?")
                .bind(if i == 4 { "failed" } else { "succeeded" })
                .bind((old + chrono::Duration::minutes(i)).to_rfc3339())
                .bind(id)
                .execute(s.pool())
                .await
                .unwrap();
        }
        s.record_skipped("hc", "health", "schedule", "busy")
            .await
            .unwrap();
        let before = s.run_counts("hc").await.unwrap();
        assert_eq!(before.get("succeeded"), Some(&4), "{before:?}");
        assert_eq!(before.get("failed"), Some(&1));
        let n = s
            .prune_history(Utc::now() - chrono::Duration::days(90))
            .await
            .unwrap();
        assert_eq!(
            n, 3,
            "the three older successes go, the newest of each outcome stays"
        );
        assert_eq!(
            s.run_counts("hc").await.unwrap(),
            before,
            "counters never go down"
        );
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE job = 'hc'")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(left, 3, "newest success, the failure, the skip");
        assert!(s.last_success("hc").await.unwrap().is_some());
        let id = s
            .start_run("hc", "health", "h", "schedule", Utc::now())
            .await
            .unwrap();
        assert_eq!(s.run_counts("hc").await.unwrap().get("running"), Some(&1));
        s.finish_run(id, RunStatus::Succeeded, None, None, None)
            .await
            .unwrap();
        assert_eq!(s.run_counts("hc").await.unwrap().get("succeeded"), Some(&5));
    }

    /// Migrations only add: an older binary keeps working on a newer file.
    #[test]
    fn migrations_are_additive() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap().to_uppercase();
            for line in text.lines() {
                let code = line.split("--").next().unwrap_or("");
                for bad in ["DROP ", "RENAME ", "ALTER COLUMN", "DELETE FROM"] {
                    assert!(
                        !code.contains(bad),
                        "{}: `{bad}` in a migration breaks an older binary: {line}",
                        p.display()
                    );
                }
            }
        }
    }
}
