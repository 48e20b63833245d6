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
        std::fs::create_dir_all(state_dir)
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
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("opening {}", lock_path.display()), e.into()))?;
        let guard = tokio::task::spawn_blocking(move || {
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
        })
        .await
        .map_err(|e| err("taking the open lock".into(), e.into()))?
        .map_err(|e| err(format!("locking {}", lock_path.display()), e.into()))?;
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
        let migrated = MIGRATOR.run(&pool).await;
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

    /// Run counts of `job` by outcome.
    pub async fn run_counts(&self, job: &str) -> Result<std::collections::BTreeMap<String, i64>> {
        let rows =
            sqlx::query("SELECT status, count(*) AS n FROM runs WHERE job = ? GROUP BY status")
                .bind(job)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Stored bytes of the last successful backup of `job`.
    pub async fn last_backup_bytes(&self, job: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT bytes FROM runs WHERE job = ? AND status = 'succeeded' ORDER BY id DESC LIMIT 1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await
            .map(|v: Option<Option<i64>>| v.flatten())
            .map_err(|e| self.err(e))
    }

    /// Most recent runs first; `job` filters.
    pub async fn runs(&self, job: Option<&str>, limit: i64) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT id, job, kind, host, trigger, started_at, finished_at, status, bytes, backup_id, error, output, result, details
             FROM runs WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2",
        )
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
