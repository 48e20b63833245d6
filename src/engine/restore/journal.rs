//! The restore journal: each restore writes its steps to the state database
//! before taking them, so a restore killed anywhere (SIGKILL between the two
//! halves of the swap included) leaves a record that the next `drctl
//! restore` or `drctl status` reads to finish or roll back: connections
//! re-opened, a half-restored database dropped, the temp file removed, the
//! lease released. A failed restore is cleaned up through the same path.
//!
//! What to do is decided by [`plan`] (pure, unit-tested) from the journal
//! entry and which databases exist; [`recover`] only applies it.

use crate::base::error::{Error, Result};
use crate::config::{JobConfig, Kind, LoadedConfig};
use crate::services::pg::{quote_ident, quote_literal, SqlSession};
use crate::services::state::State;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// Where a restore is. Written before the step is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the backup; no database touched yet.
    Fetching,
    /// pg_restore fills `restoring` (the original is untouched and open).
    Restoring,
    /// The original refuses new connections; the renames are next.
    Closed,
    /// The renames committed; the safety copy may still refuse connections.
    Swapped,
    /// Finished; the target holds the backup.
    Done,
    /// Undone by recovery after a failure or a kill.
    RolledBack,
    /// Failed before touching anything (nothing to undo).
    Failed,
}

impl Step {
    /// The step as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Fetching => "fetching",
            Step::Restoring => "restoring",
            Step::Closed => "closed",
            Step::Swapped => "swapped",
            Step::Done => "done",
            Step::RolledBack => "rolled_back",
            Step::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Step {
        match s {
            "fetching" => Step::Fetching,
            "restoring" => Step::Restoring,
            "closed" => Step::Closed,
            "swapped" => Step::Swapped,
            "done" => Step::Done,
            "rolled_back" => Step::RolledBack,
            _ => Step::Failed,
        }
    }
}

/// What a journal row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A backup restored.
    Restore,
    /// `drctl restore --undo`: a safety copy swapped back.
    Undo,
}

impl Action {
    fn parse(s: &str) -> Action {
        if s == "undo" {
            Action::Undo
        } else {
            Action::Restore
        }
    }

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Restore => "restore",
            Action::Undo => "undo",
        }
    }
}

/// Who started a restore: an operator's are real restores (the DR
/// report's "real restores"), a drill's are rehearsals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `drctl restore` (or `--undo`).
    Operator,
    /// A restore drill.
    Drill,
}

impl Origin {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Operator => "operator",
            Origin::Drill => "drill",
        }
    }
}

/// One timed phase of a restore (hooks, fetch, restore, swap, health, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// `before_hooks`, `fetch`, `restore`, `swap`, `after_hooks`, `health`.
    pub phase: String,
    /// Wall time.
    pub seconds: f64,
    /// It did what it had to.
    pub ok: bool,
}

impl Phase {
    /// A phase that took `seconds`.
    pub fn new(phase: &str, seconds: f64, ok: bool) -> Phase {
        Phase {
            phase: phase.into(),
            seconds,
            ok,
        }
    }
}

/// One journal row.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Row id.
    pub id: i64,
    /// A restore or an undo.
    pub action: Action,
    /// The job.
    pub job: String,
    /// The backup restored (for an undo: the safety copy swapped back).
    pub backup_id: String,
    /// Its repository.
    pub repository: String,
    /// The target, without a password.
    pub target: String,
    /// The restore's lease key (released by recovery).
    pub lease: Option<String>,
    /// The temporary dump file (removed by recovery).
    pub temp_file: Option<String>,
    /// The job's own database being replaced (`None` for `--to`).
    pub database: Option<String>,
    /// The database pg_restore fills (`<db>_restoring_<ts>`, or the `--to` target).
    pub restoring: Option<String>,
    /// Whether this restore created `restoring` (only then may recovery drop it).
    pub created: bool,
    /// Where the replaced database goes (`<db>_pre_restore_<ts>`).
    pub safety: Option<String>,
    /// The last step reached.
    pub step: Step,
    /// A point-in-time restore's data directory (new or empty when it
    /// began: everything in it is the restore's own).
    pub datadir: Option<String>,
    /// Its tablespace directories (likewise).
    pub spaces: Vec<String>,
    /// Its `before` hooks had started (the application may be stopped)
    /// and its `after` hooks had not run yet.
    pub app_stopped: bool,
    /// Containers it stopped and had not started again.
    pub containers: Vec<String>,
}

impl Entry {
    /// "restore of backup B of J", "undo of the last restore of J (back to C)".
    pub fn what(&self) -> String {
        if let Some(dd) = &self.datadir {
            return format!(
                "point-in-time restore of {} (base backup {}) into {dd}",
                self.job, self.backup_id
            );
        }
        match self.action {
            Action::Restore => format!("restore of backup {} of {}", self.backup_id, self.job),
            Action::Undo => format!(
                "undo of the last restore of {} (back to {})",
                self.job, self.backup_id
            ),
        }
    }
}

/// One repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// `ALTER DATABASE .. ALLOW_CONNECTIONS true`
    Reopen(String),
    /// `DROP DATABASE .. WITH (FORCE)`: only ever a database drctl created.
    Drop(String),
}

/// What recovering `e` takes, given which databases exist now; the step it
/// ends in and a sentence for the operator.
pub fn plan(e: &Entry, exists: &dyn Fn(&str) -> bool) -> (Vec<Fix>, Step, String) {
    let mut fixes = Vec::new();
    let keep_open = |fixes: &mut Vec<Fix>, name: &Option<String>| {
        if let Some(n) = name.as_ref().filter(|n| exists(n)) {
            fixes.push(Fix::Reopen(n.clone()));
        }
    };
    let drop_restoring = |fixes: &mut Vec<Fix>| {
        if let Some(r) = e.restoring.as_ref().filter(|r| e.created && exists(r)) {
            fixes.push(Fix::Drop(r.clone()));
        }
    };
    let what = e.what();
    if e.datadir.is_some() {
        // The directories were new or empty when it began: what is in them
        // is its own, a base backup and WAL half way through recovery at
        // most, never a cluster anyone ran.
        return match e.step {
            s @ (Step::Done | Step::RolledBack | Step::Failed) => (fixes, s, String::new()),
            _ => (
                fixes,
                Step::RolledBack,
                format!(
                    "{what} stopped before it finished; rolled back: its server (if running) stopped, and what it wrote there removed (drctl's own files only: {} empty when it began)",
                    if e.spaces.is_empty() { "the directory was" } else { "the directories were" }
                ),
            ),
        };
    }
    match e.step {
        Step::Fetching => (
            fixes,
            Step::RolledBack,
            format!("{what} stopped while fetching; nothing had been changed"),
        ),
        Step::Restoring => {
            drop_restoring(&mut fixes);
            let left = match (&e.database, e.created) {
                (Some(db), _) => format!("{db} was never touched"),
                (None, true) => format!("{} was created by it and is dropped", e.target),
                (None, false) => format!(
                    "{} may hold part of the restore: empty it before restoring into it again",
                    e.target
                ),
            };
            (
                fixes,
                Step::RolledBack,
                format!("{what} stopped during pg_restore; rolled back: {left}"),
            )
        }
        Step::Closed if !e.safety.as_deref().is_some_and(exists) => {
            keep_open(&mut fixes, &e.database);
            drop_restoring(&mut fixes);
            (
                fixes,
                Step::RolledBack,
                format!(
                    "{what} stopped before its swap; rolled back: {} accepts connections again, unchanged",
                    e.database.as_deref().unwrap_or("?")
                ),
            )
        }
        // The renames are one transaction: once the safety copy exists the
        // swap happened, whether or not the journal got to say so.
        Step::Swapped | Step::Closed => {
            keep_open(&mut fixes, &e.safety);
            keep_open(&mut fixes, &e.database);
            (
                fixes,
                Step::Done,
                format!(
                    "{what} stopped after its swap; finished: connections re-opened, {} holds the restored data, the replaced one is {}",
                    e.database.as_deref().unwrap_or("?"),
                    e.safety.as_deref().unwrap_or("?")
                ),
            )
        }
        s @ (Step::Done | Step::RolledBack | Step::Failed) => (fixes, s, String::new()),
    }
}

/// What a new journal row says about its restore.
pub struct Start<'a> {
    /// The job.
    pub job: &'a str,
    /// The backup (for an undo: the safety copy).
    pub backup_id: &'a str,
    /// The repository read from (`-` for an undo).
    pub repository: &'a str,
    /// The target, without a password (the per-target lock's key).
    pub target: &'a str,
    /// The lease recovery releases.
    pub lease: Option<&'a str>,
    /// A restore or an undo.
    pub action: Action,
    /// An operator's or a drill's.
    pub origin: Origin,
}

/// A journal row for one running restore.
pub struct Journal {
    state: State,
    /// The row's id.
    pub id: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Journal {
    /// Journal a restore before it starts (before its `before` hooks).
    pub async fn begin(state: &State, s: &Start<'_>) -> Result<Journal> {
        let r = sqlx::query(
            "INSERT INTO restore_journal (job, backup_id, repository, target, lease, action, origin, step, pid, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'fetching', ?, ?, ?)",
        )
        .bind(s.job)
        .bind(s.backup_id)
        .bind(s.repository)
        .bind(s.target)
        .bind(s.lease)
        .bind(s.action.as_str())
        .bind(s.origin.as_str())
        .bind(i64::from(std::process::id()))
        .bind(now_ms())
        .bind(now_ms())
        .execute(state.pool())
        .await
        .map_err(|e| state.err(e))?;
        Ok(Journal {
            state: state.clone(),
            id: r.last_insert_rowid(),
        })
    }

    /// The restore failed before touching anything (a `before` hook, a
    /// refusal): nothing to undo, only the note to keep.
    pub async fn failed(&self, note: &str) -> Result<()> {
        sqlx::query(
            "UPDATE restore_journal SET step = 'failed', note = ?, updated_at = ? WHERE id = ?",
        )
        .bind(note)
        .bind(now_ms())
        .bind(self.id)
        .execute(self.state.pool())
        .await
        .map_err(|e| self.state.err(e))?;
        Ok(())
    }

    /// The restore's measured phases, its total time and how its `verify`
    /// checks ended (`None`: it had none), written when it ends.
    pub async fn record(
        &self,
        phases: &[Phase],
        total_seconds: f64,
        health: Option<bool>,
    ) -> Result<()> {
        let phases = serde_json::to_string(phases)
            .map_err(|e| Error::Other(format!("encoding the restore's phases: {e}")))?;
        sqlx::query("UPDATE restore_journal SET phases = ?, total_ms = ?, health = ? WHERE id = ?")
            .bind(phases)
            .bind((total_seconds * 1000.0).round() as i64)
            .bind(health.map(|ok| if ok { "passed" } else { "failed" }))
            .bind(self.id)
            .execute(self.state.pool())
            .await
            .map_err(|e| self.state.err(e))?;
        Ok(())
    }

    /// Record the temporary dump file, so recovery removes it.
    pub async fn temp_file(&self, path: &std::path::Path) -> Result<()> {
        self.set("temp_file", &path.display().to_string()).await
    }

    /// Names the restore is about to use; written before they exist.
    pub async fn names(
        &self,
        database: Option<&str>,
        restoring: &str,
        created: bool,
        safety: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE restore_journal SET database = ?, restoring = ?, created = ?, safety = ?, updated_at = ? WHERE id = ?")
            .bind(database)
            .bind(restoring)
            .bind(created)
            .bind(safety)
            .bind(now_ms())
            .bind(self.id)
            .execute(self.state.pool())
            .await
            .map_err(|e| self.state.err(e))?;
        Ok(())
    }

    /// A point-in-time restore's directories, written before it creates
    /// or fills them.
    pub async fn directories(
        &self,
        datadir: &std::path::Path,
        spaces: &[std::path::PathBuf],
    ) -> Result<()> {
        let spaces: Vec<String> = spaces.iter().map(|p| p.display().to_string()).collect();
        let spaces = serde_json::to_string(&spaces)
            .map_err(|e| Error::Other(format!("encoding the restore's directories: {e}")))?;
        self.set("spaces", &spaces).await?;
        self.set("datadir", &datadir.display().to_string()).await
    }

    /// The `before` hooks are about to run (or, `false`, the application
    /// was brought back).
    pub async fn app_stopped(&self, stopped: bool) -> Result<()> {
        self.set("app_stopped", if stopped { "1" } else { "0" })
            .await?;
        if !stopped {
            self.containers(&[]).await?;
        }
        Ok(())
    }

    /// Containers this restore stopped.
    pub async fn containers(&self, names: &[String]) -> Result<()> {
        let json = serde_json::to_string(names)
            .map_err(|e| Error::Other(format!("encoding the stopped containers: {e}")))?;
        self.set("containers", &json).await
    }

    /// The live database's write counters right after the swap (what an
    /// undo's plan measures the writes since from).
    pub async fn writes(&self, json: &str) -> Result<()> {
        self.set("writes", json).await
    }

    /// A point-in-time restore fell back from a damaged base backup to
    /// `backup_id`, read under `lease`.
    pub async fn rebase(&self, backup_id: &str, lease: &str) -> Result<()> {
        self.set("backup_id", backup_id).await?;
        self.set("lease", lease).await
    }

    /// drctl created `restoring` itself (so recovery may drop it).
    pub async fn created(&self) -> Result<()> {
        self.set("created", "1").await
    }

    /// Record that the restore reached `step`.
    pub async fn step(&self, step: Step) -> Result<()> {
        self.set("step", step.as_str()).await
    }

    async fn set(&self, column: &'static str, value: &str) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE restore_journal SET {column} = ?, updated_at = ? WHERE id = ?"
        ))
        .bind(value)
        .bind(now_ms())
        .bind(self.id)
        .execute(self.state.pool())
        .await
        .map_err(|e| self.state.err(e))?;
        Ok(())
    }
}

fn entry_of(r: &sqlx::sqlite::SqliteRow) -> Entry {
    Entry {
        id: r.get("id"),
        action: Action::parse(&r.get::<String, _>("action")),
        job: r.get("job"),
        backup_id: r.get("backup_id"),
        repository: r.get("repository"),
        target: r.get("target"),
        lease: r.get("lease"),
        temp_file: r.get("temp_file"),
        database: r.get("database"),
        restoring: r.get("restoring"),
        created: r.get::<bool, _>("created"),
        safety: r.get("safety"),
        step: Step::parse(r.get::<String, _>("step").as_str()),
        datadir: r.get("datadir"),
        spaces: r
            .get::<Option<String>, _>("spaces")
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        app_stopped: r.get::<bool, _>("app_stopped"),
        containers: r
            .get::<Option<String>, _>("containers")
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
    }
}

/// Finish or roll back every journaled restore that is not running any
/// more (its per-target lock is free). Returns one sentence per restore.
pub async fn recover(cfg: &LoadedConfig, state: &State) -> Vec<String> {
    let rows = match sqlx::query(
        "SELECT * FROM restore_journal WHERE step NOT IN ('done', 'rolled_back', 'failed') ORDER BY id",
    )
    .fetch_all(state.pool())
    .await
    {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot read the restore journal: {}", state.err(e))],
    };
    let mut out = Vec::new();
    for row in rows {
        let e = entry_of(&row);
        let lock = match crate::services::lock::HostLock::try_acquire_keyed(
            &cfg.config.state_dir,
            ".restore",
            &e.target,
        ) {
            Ok(Ok(l)) => l,
            Ok(Err(_)) => continue, // still running
            Err(err) => {
                out.push(format!("restore journal {}: {err}", e.id));
                continue;
            }
        };
        match settle(cfg, state, &e, None).await {
            Ok(note) => out.push(note),
            Err(err) => out.push(format!(
                "an interrupted restore of {} into {} could not be cleaned up yet: {err}",
                e.job, e.target
            )),
        }
        drop(lock);
    }
    out
}

/// Apply [`plan`] to one entry (its restore is not running, or is this
/// process's own failed one). `failure`: the error that ended it here.
pub async fn settle(
    cfg: &LoadedConfig,
    state: &State,
    e: &Entry,
    failure: Option<&str>,
) -> Result<String> {
    let needs_db = e.restoring.is_some() || e.database.is_some();
    let mut conn = if needs_db { admin(cfg, e).await? } else { None };
    let mut existing = Vec::new();
    if let Some(c) = conn.as_mut() {
        // A statement of the dead restore may still be running on the server
        // (a CREATE DATABASE completes after its client is gone): stop it
        // and wait, so what exists is what stays.
        if let Some(r) = &e.restoring {
            settle_statements(c, r).await?;
        }
        let names: Vec<String> = [&e.database, &e.restoring, &e.safety]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|n| quote_literal(n)).collect();
            existing = c
                .rows(&format!(
                    "SELECT datname::text FROM pg_database WHERE datname IN ({})",
                    list.join(", ")
                ))
                .await?
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
        }
    }
    let (fixes, end, mut note) = plan(e, &|n| existing.iter().any(|x| x == n));
    if needs_db && conn.is_none() {
        note.push_str(&format!(
            " (not connected to {}: check and clean it up by hand)",
            e.target
        ));
    }
    if let Some(c) = conn.as_mut() {
        for f in &fixes {
            let sql = match f {
                Fix::Reopen(n) => {
                    format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", quote_ident(n))
                }
                Fix::Drop(n) => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(n)),
            };
            c.execute(&sql).await?;
        }
    }
    if let Some(dd) = &e.datadir {
        if !matches!(e.step, Step::Done | Step::RolledBack | Step::Failed) || failure.is_some() {
            super::pitr::abandon(
                std::path::Path::new(dd),
                &e.spaces
                    .iter()
                    .map(std::path::PathBuf::from)
                    .collect::<Vec<_>>(),
            )
            .await;
        }
    }
    remove_leftovers(cfg, e).await;
    let (end, mut note) = match failure {
        Some(why) => (
            Step::Failed,
            format!("{} failed: {why}; cleaned up", e.what()),
        ),
        None => (end, note),
    };
    if failure.is_none() && (e.app_stopped || !e.containers.is_empty()) {
        note.push_str(&super::bring_back_after_kill(cfg, state, e).await);
    }
    sqlx::query("UPDATE restore_journal SET step = ?, note = ?, updated_at = ? WHERE id = ?")
        .bind(end.as_str())
        .bind(&note)
        .bind(now_ms())
        .bind(e.id)
        .execute(state.pool())
        .await
        .map_err(|err| state.err(err))?;
    if failure.is_none() {
        tracing::warn!("{note}");
    }
    Ok(note)
}

/// A restore's temporary file and lease, whatever became of it.
async fn remove_leftovers(cfg: &LoadedConfig, e: &Entry) {
    if let Some(t) = &e.temp_file {
        match std::fs::remove_file(t) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(file = %t, error = %err, "cannot remove a restore's temporary file");
            }
        }
    }
    if let Some(l) = &e.lease {
        if let Ok(rc) = cfg.repository(&e.repository) {
            match crate::services::repository::Repository::open(&e.repository, rc).await {
                Ok(repo) => {
                    if let Err(err) = repo.release(l).await {
                        tracing::warn!(lease = %l, error = %err, "cannot release a restore's lease; it expires by itself");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open the repository to release a lease");
                }
            }
        }
    }
}

/// Terminate active statements that mention `name` (other than ours) and
/// wait until they are gone (at most 30 s).
async fn settle_statements(c: &mut SqlSession, name: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Not our own statement (it names `name` too): `query` of ours is
        // this very text, so it is told apart by pid.
        let left: i64 = c
            .scalar(&format!(
                "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND state <> 'idle' AND position({} in query) > 0",
                quote_literal(name)
            ))
            .await?
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if left == 0 || std::time::Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A connection to the target's server with the job's own credentials, when
/// the target is the job's server (always, for the job's own database).
async fn admin(cfg: &LoadedConfig, e: &Entry) -> Result<Option<SqlSession>> {
    let Ok((
        _,
        JobConfig {
            kind: Kind::Postgres(job),
            ..
        },
    )) = cfg.job(&e.job)
    else {
        return Ok(None);
    };
    let t = crate::services::pg::job_target(job)?;
    let server = |d: &str| d.rsplit_once('/').map(|(s, _)| s.to_owned());
    if server(&t.display()) != server(&e.target) {
        return Ok(None);
    }
    let tools = crate::services::pg::PgTools::for_job(job).await?;
    Ok(Some(
        SqlSession::open(&tools, &t.with_database(&job.maintenance_db)).await?,
    ))
}

/// A finished restore, for metrics: the newest per job and outcome.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The job restored.
    pub job: String,
    /// `done`, `failed` or `rolled_back`.
    pub outcome: String,
    /// When it started and ended, unix ms.
    pub started_ms: i64,
    /// When it ended (its last journal step), unix ms.
    pub ended_ms: i64,
}

/// The newest finished restore of each job and outcome (CLI and drills).
pub async fn finished(state: &State) -> Result<Vec<Finished>> {
    let rows = sqlx::query(
        "SELECT job, step, started_at, updated_at FROM restore_journal r
         WHERE step IN ('done', 'failed', 'rolled_back')
           AND id = (SELECT max(id) FROM restore_journal s WHERE s.job = r.job AND s.step = r.step)
         ORDER BY job, step",
    )
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    Ok(rows
        .iter()
        .map(|r| Finished {
            job: r.get("job"),
            outcome: r.get("step"),
            started_ms: r.get("started_at"),
            ended_ms: r.get("updated_at"),
        })
        .collect())
}

/// A restore as `drctl logs`, `drctl status` and the DR report show it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreRecord {
    /// A restore or an undo.
    pub action: Action,
    /// `operator` or `drill`.
    pub origin: String,
    /// The job.
    pub job: String,
    /// The backup restored (an undo: the safety copy swapped back).
    pub backup_id: String,
    /// Where it went (no password).
    pub target: String,
    /// `done`, `failed`, `rolled_back`, or the step a running (or killed,
    /// not yet recovered) restore is at.
    pub outcome: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its measured RTO, once it ended.
    pub total_seconds: Option<f64>,
    /// Its timed phases.
    pub phases: Vec<Phase>,
    /// `passed` or `failed`: its `verify` checks (absent without any).
    pub health: Option<String>,
    /// What went wrong, or what recovery did.
    pub note: Option<String>,
}

/// The newest `n` restores (of `job`, or of every job), newest first;
/// `origin` keeps only an operator's or a drill's.
pub async fn recent(
    state: &State,
    job: Option<&str>,
    origin: Option<Origin>,
    n: i64,
) -> Result<Vec<RestoreRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM restore_journal WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR origin = ?2)
         ORDER BY id DESC LIMIT ?3",
    )
    .bind(job)
    .bind(origin.map(Origin::as_str))
    .bind(n)
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    let mut out = Vec::new();
    for r in &rows {
        let phases = match r.get::<Option<String>, _>("phases") {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| Error::unreadable("a restore's phases", e))?,
            None => Vec::new(),
        };
        let started: i64 = r.get("started_at");
        out.push(RestoreRecord {
            action: entry_of(r).action,
            origin: r.get("origin"),
            job: r.get("job"),
            backup_id: r.get("backup_id"),
            target: r.get("target"),
            outcome: r.get("step"),
            started_at: chrono::DateTime::from_timestamp_millis(started)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            total_seconds: r
                .get::<Option<i64>, _>("total_ms")
                .map(|ms| ms as f64 / 1000.0),
            phases,
            health: r.get("health"),
            note: r.get("note"),
        });
    }
    Ok(out)
}

impl RestoreRecord {
    /// "fetch 2.0s, restore 8.1s, swap 0.1s" (empty without phases).
    pub fn describe_phases(&self) -> String {
        self.phases
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1}s{}",
                    p.phase,
                    p.seconds,
                    if p.ok { "" } else { " (failed)" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A restore or undo of a job's own database that ended, as an undo
/// weighs it.
#[derive(Debug, Clone)]
pub struct Past {
    /// A restore or an undo.
    pub action: Action,
    /// `Done`, `RolledBack` or `Failed`.
    pub step: Step,
    /// The backup restored (an undo: the copy swapped back).
    pub backup_id: String,
    /// Where the database it replaced went (none when there was none).
    pub safety: Option<String>,
    /// When it ended.
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// The live database's write counters right after it (JSON).
    pub writes: Option<String>,
}

/// The restores and undos of `job` over its own database `db` that ended,
/// newest first (the last 50).
pub async fn history(state: &State, job: &str, db: &str) -> Result<Vec<Past>> {
    let rows = sqlx::query(
        "SELECT action, step, backup_id, safety, updated_at, writes FROM restore_journal
         WHERE job = ? AND database = ? AND datadir IS NULL AND step IN ('done', 'rolled_back', 'failed')
         ORDER BY id DESC LIMIT 50",
    )
    .bind(job)
    .bind(db)
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    Ok(rows
        .iter()
        .map(|r| Past {
            action: Action::parse(&r.get::<String, _>("action")),
            step: Step::parse(r.get::<String, _>("step").as_str()),
            backup_id: r.get("backup_id"),
            safety: r.get("safety"),
            ended_at: chrono::DateTime::from_timestamp_millis(r.get("updated_at"))
                .unwrap_or_default(),
            writes: r.get("writes"),
        })
        .collect())
}

/// This process's own entry, for cleaning up after its failure.
pub async fn entry(state: &State, id: i64) -> Result<Entry> {
    let row = sqlx::query("SELECT * FROM restore_journal WHERE id = ?")
        .bind(id)
        .fetch_one(state.pool())
        .await
        .map_err(|e| state.err(e))?;
    Ok(entry_of(&row))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(step: Step) -> Entry {
        Entry {
            id: 1,
            action: Action::Restore,
            job: "appdb".into(),
            backup_id: "b".into(),
            repository: "local".into(),
            target: "postgres://u@h:5432/app".into(),
            lease: None,
            temp_file: None,
            database: Some("app".into()),
            restoring: Some("app_restoring_1".into()),
            created: true,
            safety: Some("app_pre_restore_1".into()),
            step,
            datadir: None,
            spaces: Vec::new(),
            app_stopped: false,
            containers: Vec::new(),
        }
    }

    #[test]
    fn a_killed_point_in_time_restore_is_rolled_back_and_a_finished_one_left_alone() {
        let mut e = own(Step::Restoring);
        e.database = None;
        e.restoring = None;
        e.safety = None;
        e.datadir = Some("/srv/restored".into());
        let (f, end, note) = plan(&e, &|_| false);
        assert!(f.is_empty());
        assert_eq!(end, Step::RolledBack);
        assert!(
            note.contains("into /srv/restored stopped before it finished"),
            "{note}"
        );
        assert!(note.contains("drctl's own files only"), "{note}");
        e.step = Step::Done;
        assert_eq!(plan(&e, &|_| false).1, Step::Done);
    }

    #[test]
    fn a_swap_cut_before_the_renames_rolls_back_and_after_them_finishes() {
        let before = |n: &str| n == "app" || n == "app_restoring_1";
        let (f, end, _) = plan(&own(Step::Closed), &before);
        assert_eq!(end, Step::RolledBack);
        assert_eq!(
            f,
            vec![
                Fix::Reopen("app".into()),
                Fix::Drop("app_restoring_1".into())
            ]
        );
        let after = |n: &str| n == "app" || n == "app_pre_restore_1";
        for step in [Step::Closed, Step::Swapped] {
            let (f, end, _) = plan(&own(step), &after);
            assert_eq!(end, Step::Done);
            assert_eq!(
                f,
                vec![
                    Fix::Reopen("app_pre_restore_1".into()),
                    Fix::Reopen("app".into())
                ]
            );
        }
    }

    #[test]
    fn only_what_drctl_created_is_ever_dropped() {
        let all = |_: &str| true;
        let (f, _, _) = plan(&own(Step::Restoring), &all);
        assert_eq!(f, vec![Fix::Drop("app_restoring_1".into())]);
        let mut to = own(Step::Restoring);
        to.database = None;
        to.restoring = Some("target".into());
        to.created = false;
        let (f, end, note) = plan(&to, &all);
        assert!(f.is_empty());
        assert_eq!(end, Step::RolledBack);
        assert!(note.contains("empty it"), "{note}");
        let (f, end, _) = plan(&own(Step::Fetching), &all);
        assert!(f.is_empty());
        assert_eq!(end, Step::RolledBack);
    }
}
