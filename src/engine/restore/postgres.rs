//! Restoring a PostgreSQL backup.
//!
//! `--to URL`: into that database, created if missing, refused if it holds
//! anything. Otherwise into the job's own database, safely: restore into a
//! new database, then swap names so the old one stays as
//! `<name>_pre_restore_<timestamp>`. A failed pg_restore drops the new
//! database and leaves the original untouched.

use super::{base_plan, cancellable, fetch, free_space, Plan, Report, Resolved, RestoreRequest};
use crate::base::error::{Error, Result};
use crate::base::manifest::Artifact;
use crate::base::progress::Progress;
use crate::config::PostgresJob;
use crate::services::pg::{job_target, quote_ident, quote_literal};
use crate::services::pg::{PgTarget, PgTools, SqlSession};
use crate::services::repository::Repository;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

fn destination(job: &PostgresJob, req: &RestoreRequest) -> Result<(PgTarget, bool)> {
    if let Some(db) = &req.to_job_server {
        return Ok((job_target(job)?.with_database(db), false));
    }
    match &req.to {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            crate::base::secret::register_url_password(url);
            let target = PgTarget::parse(url).map_err(|e| Error::Usage(format!("--to: {e}")))?;
            Ok((target, false))
        }
        Some(_) => Err(Error::Usage(
            "--to for a PostgreSQL backup must be a postgres:// URL".into(),
        )),
        None => Ok((job_target(job)?, true)),
    }
}

/// `<base><suffix>`, with `base` shortened so the whole fits in 63 bytes.
fn side_name(base: &str, suffix: &str) -> String {
    let mut b = base.to_owned();
    while b.len() + suffix.len() > MAX_NAME {
        b.pop();
    }
    format!("{b}{suffix}")
}

/// Refuse (exit 4) a restore that would replace the job's own database
/// without consent: checked again before any hook runs.
pub fn consent(job: &PostgresJob, req: &RestoreRequest) -> Result<()> {
    let (dest, replaces) = destination(job, req)?;
    if replaces && !req.confirmed {
        return Err(Error::Refused(format!(
            "restoring into the job's own database {} replaces it (the current one is kept as a safety copy); confirm, or pass --yes",
            dest.display()
        )));
    }
    Ok(())
}

/// What identifies the restore's target, for the per-target lock.
pub fn target_key(job: &PostgresJob, req: &RestoreRequest) -> Result<String> {
    Ok(destination(job, req)?.0.display())
}

/// What restoring a postgres backup would do.
pub fn plan(r: &Resolved<'_>, job: &PostgresJob, req: &RestoreRequest) -> Result<Plan> {
    let (dest, replaces) = destination(job, req)?;
    let mut steps = vec![
        "fetch database.dump and globals.sql, verify size and SHA-256 of each before touching the target".to_string(),
        "create missing roles from the globals dump".to_string(),
    ];
    if replaces {
        steps.push(format!(
            "create a new database and pg_restore into it (--jobs {})",
            req.jobs.max(1)
        ));
        steps.push(format!(
            "swap: rename {db} to {db}_pre_restore_<timestamp> (kept as a safety copy), rename the new database to {db}",
            db = dest.database
        ));
    } else {
        steps.push(format!(
            "create {} if missing (refuse if it is not empty)",
            dest.database
        ));
        steps.push(format!("pg_restore into it (--jobs {})", req.jobs.max(1)));
    }
    Ok(base_plan(r, dest.display(), replaces, steps))
}

/// Restore a postgres backup: fetch and verify, roles, a new database,
/// then (when replacing) swap names so the old database is kept aside.
pub async fn run(
    r: &Resolved<'_>,
    job: &PostgresJob,
    req: &RestoreRequest,
    tmp_dir: &Path,
    progress: Arc<Progress>,
    journal: &super::journal::Journal,
) -> Result<Report> {
    consent(job, req)?;
    let (dest, replaces) = destination(job, req)?;
    let tools = tools_for(job, replaces || req.to_job_server.is_some()).await?;
    let (m, dump) = (&r.manifest, dump_artifact(&r.manifest)?);
    let mut report = Report {
        backup_id: m.id.to_string(),
        target: dest.display(),
        ..Default::default()
    };

    // 1. The globals, and where the dump goes; the server's refusals.
    let t0 = Instant::now();
    let mut fetched = prepare_fetch(r, dump, tmp_dir, journal).await?;
    let admin = dest.with_database(&job.maintenance_db);
    let mut conn = SqlSession::open(&tools, &admin).await?;
    refuse_older_server(m, &mut conn).await?;
    if replaces && !req.force_source {
        refuse_another_source(r, &mut conn, &dest.database).await?;
    }
    let exists = database_exists(&mut conn, &dest.database).await?;
    // Loading while fetching only into a database this restore creates
    // (dropped again if the fetch then fails its checksum), on this host.
    let pipelined = !fetched.streamed && tools.container().is_none() && (replaces || !exists);
    if !pipelined {
        // Fetch and verify everything before the target sees a byte.
        fetch_dump(r, dump, req, tmp_dir, &progress, &mut fetched).await?;
        report.fetch_seconds = t0.elapsed().as_secs_f64();
        report.decode_seconds = progress.decode_seconds();
    }
    let (globals, dump_file, streamed) = (&fetched.globals, &fetched.dump_file, fetched.streamed);
    report.bytes_fetched =
        dump.stored_bytes + m.artifact("pg_globals_sql").map_or(0, |g| g.stored_bytes);

    // 2. Roles, then the database.
    let t1 = Instant::now();
    if let Some(sql) = globals {
        restore_roles(&tools, &admin, &mut conn, sql, &mut report).await?;
    }
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let (into, safety) = open_target(
        &tools,
        &mut conn,
        &dest,
        (replaces, exists),
        &stamp,
        m.source.as_ref(),
        journal,
    )
    .await?;
    let created_db = !exists || replaces;

    let into_target = dest.with_database(&into);
    let restored = if pipelined {
        let (restored, fetch_seconds) =
            load_while_fetching(r, dump, req, &tools, &into_target, dump_file, &progress, t0).await;
        report.fetch_seconds = fetch_seconds;
        report.decode_seconds = progress.decode_seconds();
        restored
    } else {
        progress.set_phase("restore", dump.raw_bytes);
        let restore = pg_restore(
            &tools,
            &into_target,
            req.jobs.max(1),
            if streamed { None } else { Some(dump_file) },
            r,
            dump,
            &progress,
        );
        cancellable(&req.cancel, &format!("restore into {into}"), restore).await
    };
    if let Err(e) = restored {
        if created_db {
            drop_database(&mut conn, &into).await;
        }
        return Err(e);
    }

    // Database-level properties (ACLs such as REVOKE CONNECT, ALTER
    // DATABASE .. SET, the comment) live in the dump's DATABASE entries,
    // which pg_restore applies only with --create: apply them to the new
    // database before it takes the real name.
    if let Some(src) = m.source.as_ref() {
        if streamed {
            report.warnings.push(NOT_REAPPLIED.into());
        } else if let Err(e) =
            apply_database_properties(&tools, &admin, dump_file, &src.database, &into).await
        {
            if created_db {
                drop_database(&mut conn, &into).await;
            }
            return Err(e);
        }
    }

    // 3. Swap names so the old database is kept aside.
    report.restore_seconds = t1.elapsed().as_secs_f64();
    if replaces {
        let t2 = Instant::now();
        report.safety_copy =
            swap(&mut conn, &dest.database, &into, exists, &safety, journal).await?;
        report.safety_copies_dropped = drop_old_safety_copies(
            &mut conn,
            &dest.database,
            job.safety_copy_keep,
            report.safety_copy.as_deref(),
        )
        .await;
        report.swap_seconds = t2.elapsed().as_secs_f64();
    }
    Ok(report)
}

/// The backup's pg_dump archive; a postgres manifest without one is damaged.
fn dump_artifact(m: &crate::base::manifest::Manifest) -> Result<&Artifact> {
    m.artifact("pg_dump_custom")
        .ok_or_else(|| Error::Integrity {
            artifact: m.id.to_string(),
            message: "manifest lists no pg_dump artifact".into(),
        })
}

/// Why a streamed restore lacks the database's own GRANTs, settings and comment.
const NOT_REAPPLIED: &str = "database-level properties (GRANT/REVOKE on the database, ALTER DATABASE .. SET, its comment) were not re-applied: the dump was streamed (no room for a temporary copy)";

/// A backup fetched and verified, ready for pg_restore.
struct Fetched {
    globals: Option<Vec<u8>>,
    /// The decompressed dump (absent when `streamed`); removed on drop.
    dump_file: PathBuf,
    /// No room for a temporary copy: verified, to be streamed again.
    streamed: bool,
    /// Bytes the temporary copy needs, and bytes free for it.
    needed: u64,
    free: u64,
    _cleanup: RemoveOnDrop,
}

/// Fetch the globals into memory and choose the dump's temporary file in
/// `tmp_dir` (journaled, removed on drop); with no room for the file, the
/// dump is to be verified, then streamed.
async fn prepare_fetch(
    r: &Resolved<'_>,
    dump: &Artifact,
    tmp_dir: &Path,
    journal: &super::journal::Journal,
) -> Result<Fetched> {
    let m = &r.manifest;
    let globals = match m.artifact("pg_globals_sql") {
        Some(g) => {
            Some(fetch::to_memory(&r.repo, &r.job, &m.id, g, 64 * 1024 * 1024, &r.keys).await?)
        }
        None => None,
    };
    // Unique per restore: two restores of one backup (a drill and an
    // incident, two --to targets) must not share a temporary file.
    let dump_file = tmp_dir.join(format!(
        ".drctl-restore-{}-{}-{}-{:08x}.dump",
        r.job,
        m.id,
        std::process::id(),
        rand::random::<u32>()
    ));
    journal.temp_file(&dump_file).await?;
    let needed = dump.raw_bytes + dump.raw_bytes / 20 + 64 * 1024 * 1024;
    let free = free_space(tmp_dir)?;
    Ok(Fetched {
        globals,
        _cleanup: RemoveOnDrop(dump_file.clone()),
        dump_file,
        streamed: free < needed,
        needed,
        free,
    })
}

/// Fetch the dump into its temporary file, checked against the manifest
/// (or, with no room for it, verify it only).
async fn fetch_dump(
    r: &Resolved<'_>,
    dump: &Artifact,
    req: &RestoreRequest,
    tmp_dir: &Path,
    progress: &Arc<Progress>,
    f: &mut Fetched,
) -> Result<()> {
    let m = &r.manifest;
    progress.set_phase("fetch", dump.stored_bytes);
    let (needed, free) = (f.needed, f.free);
    let fetch = async {
        if f.streamed {
            if req.jobs > 1 {
                return Err(Error::Other(format!(
                    "parallel restore needs {needed} bytes free in {} for the decompressed dump, {free} are free: free space, pass --tmp-dir elsewhere, or use --jobs 1 to stream",
                    tmp_dir.display()
                )));
            }
            tracing::info!(
                needed,
                free,
                "not enough room for a temporary dump; verifying first, then streaming"
            );
            fetch::verify_only(&r.repo, &r.job, &m.id, dump, Some(progress.clone())).await
        } else {
            fetch::to_file(
                &r.repo,
                &r.job,
                &m.id,
                dump,
                &f.dump_file,
                Some(progress.clone()),
                &r.keys,
            )
            .await
            .map(|_| ())
        }
    };
    cancellable(&req.cancel, "fetching the backup", fetch).await
}

/// The database the restore goes into (the side database of a restore
/// over the job's own, else the target, which must then be empty unless
/// created here) and the name a replaced database will be kept under;
/// journaled, and created when it does not exist yet.
async fn open_target(
    tools: &PgTools,
    conn: &mut SqlSession,
    dest: &PgTarget,
    (replaces, exists): (bool, bool),
    stamp: &str,
    source: Option<&crate::base::manifest::PostgresSource>,
    journal: &super::journal::Journal,
) -> Result<(String, String)> {
    let into = if replaces {
        side_name(&dest.database, &format!("_restoring_{stamp}"))
    } else {
        if exists {
            ensure_empty(tools, dest).await?;
        }
        dest.database.clone()
    };
    let safety = safety_name(conn, &dest.database, stamp).await?;
    // `<db>_restoring_<stamp>` is ours from the start; a `--to` target only
    // once our CREATE DATABASE succeeded (recovery never drops a database
    // someone else created).
    journal
        .names(
            replaces.then_some(dest.database.as_str()),
            &into,
            replaces,
            (replaces && exists).then_some(safety.as_str()),
        )
        .await?;
    journal.step(super::journal::Step::Restoring).await?;
    if !exists || replaces {
        create_database(conn, &into, source).await?;
        if !replaces {
            journal.created().await?;
        }
    }
    Ok((into, safety))
}

/// Load the dump into `into` while it is fetched: from a local repository
/// by `cursors::restore` (each loader reads the stored file, `dump_file`
/// holds the table of contents), else by `pipelined::restore` (fetched
/// into `dump_file`). The restore's result and the end of the fetch's
/// verification (seconds since `t0`).
#[allow(clippy::too_many_arguments)]
async fn load_while_fetching(
    r: &Resolved<'_>,
    dump: &Artifact,
    req: &RestoreRequest,
    tools: &PgTools,
    into: &PgTarget,
    dump_file: &Path,
    progress: &Arc<Progress>,
    t0: Instant,
) -> (Result<()>, f64) {
    progress.set_phase("fetch", dump.stored_bytes);
    let fetch_end = std::sync::Mutex::new(None);
    let fetched = || {
        if let Ok(mut end) = fetch_end.lock() {
            *end = Some(t0.elapsed().as_secs_f64());
        }
    };
    let what = format!("restore into {}", into.database);
    let src = local_source(r, dump, progress);
    let first = match &src {
        Some(src) => super::cursors::open(src, dump_file).await,
        None => None,
    };
    let restored = if let (Some(src), Some(first)) = (&src, first) {
        let verify = async {
            let m = &r.manifest;
            let verified =
                fetch::verify_only(&r.repo, &r.job, &m.id, dump, Some(progress.clone())).await;
            fetched();
            verified
        };
        let restore = super::cursors::restore(tools, into, req.jobs, src, first, dump_file, verify);
        cancellable(&req.cancel, &what, restore).await
    } else {
        let (tx, rx) = tokio::sync::watch::channel(super::pipelined::Unpacking::default());
        let path = dump_file.to_path_buf();
        let fetch = async {
            let unpacked = fetch::to_blocking_reader(
                &r.repo,
                &r.job,
                &r.manifest.id,
                dump,
                &r.keys,
                Some(progress.clone()),
                move |reader| super::pipelined::unpack(reader, &path, &tx),
            )
            .await;
            fetched();
            match unpacked? {
                // A damaged object explains whatever the unpacking met.
                (Err(e @ Error::Integrity { .. }), _) | (_, Err(e)) | (Err(e), Ok(())) => Err(e),
                (Ok(_), Ok(())) => Ok(()),
            }
        };
        let restore = super::pipelined::restore(tools, into, req.jobs, dump_file, fetch, rx);
        cancellable(&req.cancel, &what, restore).await
    };
    let secs = fetch_end
        .lock()
        .ok()
        .and_then(|e| *e)
        .unwrap_or_else(|| t0.elapsed().as_secs_f64());
    (restored, secs)
}

/// The dump as a file of a local repository, for a restore whose loaders
/// each read it (`None` for a remote or rate-limited repository).
fn local_source<'a>(
    r: &'a Resolved<'_>,
    dump: &'a Artifact,
    progress: &Arc<Progress>,
) -> Option<super::cursors::Source<'a>> {
    let key = Repository::artifact_key(&r.job, &r.manifest.id, &dump.name);
    let object = r.repo.local_object(&key)?;
    let sizes = r
        .manifest
        .tables
        .iter()
        .filter_map(|t| {
            Some((
                (t.schema.clone(), t.name.clone()),
                u64::try_from(t.bytes).ok()?,
            ))
        })
        .collect();
    Some(super::cursors::Source {
        object,
        artifact: dump,
        keys: &r.keys,
        sizes,
        progress: progress.clone(),
    })
}

/// Create the roles of the backup's globals that the server lacks, noting
/// which were expected and which were created.
async fn restore_roles(
    tools: &PgTools,
    admin: &PgTarget,
    conn: &mut SqlSession,
    sql: &[u8],
    report: &mut Report,
) -> Result<()> {
    let text = String::from_utf8_lossy(sql);
    report.roles_expected = text.lines().filter_map(role_of).collect();
    report.roles_expected.sort();
    report.roles_expected.dedup();
    let (created, warnings) = create_missing_roles(tools, admin, conn, &text).await?;
    report.roles_created = created;
    report.warnings.extend(warnings);
    Ok(())
}

/// `<db>_pre_restore_<stamp>`, or with `_2`, `_3`, ... when taken: two
/// restores within one second (a second try) must not collide on the
/// safety copy's name, or the swap would fail at its very end.
pub(super) async fn safety_name(conn: &mut SqlSession, db: &str, stamp: &str) -> Result<String> {
    let mut name = side_name(db, &format!("_pre_restore_{stamp}"));
    let mut n = 1;
    while database_exists(conn, &name).await? {
        n += 1;
        name = side_name(db, &format!("_pre_restore_{stamp}_{n}"));
    }
    Ok(name)
}

/// When the safety copy `name` of `db` was made, and its same-second
/// number (1 for the first), if `name` is one (as `side_name` made it, so a
/// long name's base may be cut); `None` for any other database (pure).
pub fn safety_stamp(db: &str, name: &str) -> Option<(chrono::NaiveDateTime, u32)> {
    let (_, suffix) = name.rsplit_once("_pre_restore_")?;
    let stamp = suffix.get(..14)?;
    let n = match &suffix[14..] {
        "" => 1,
        rest => rest.strip_prefix('_')?.parse::<u32>().ok()?,
    };
    if side_name(db, &format!("_pre_restore_{suffix}")) != name {
        return None;
    }
    let at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").ok()?;
    Some((at, n))
}

/// The safety copies of `db` among `names`, oldest first (pure).
pub fn safety_copies(db: &str, names: &[String]) -> Vec<(String, chrono::NaiveDateTime)> {
    let mut out: Vec<(String, chrono::NaiveDateTime, u32)> = names
        .iter()
        .filter_map(|n| safety_stamp(db, n).map(|(at, k)| (n.clone(), at, k)))
        .collect();
    out.sort_by_key(|a| (a.1, a.2));
    out.into_iter().map(|(n, at, _)| (n, at)).collect()
}

/// The safety copies of `db` among `names` that are older than `keep` at
/// `now`; the one this restore just made (`fresh`) never (pure).
pub fn expired_safety_copies(
    db: &str,
    names: &[String],
    now: chrono::NaiveDateTime,
    keep: Duration,
    fresh: Option<&str>,
) -> Vec<String> {
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return Vec::new();
    };
    let mut out: Vec<String> = safety_copies(db, names)
        .into_iter()
        .filter(|(n, at)| Some(n.as_str()) != fresh && now - *at > keep)
        .map(|(n, _)| n)
        .collect();
    out.sort();
    out
}

/// Every database on the server whose name holds `_pre_restore_`.
pub(crate) async fn side_databases(conn: &mut SqlSession) -> Result<Vec<String>> {
    Ok(conn
        .rows(
            "SELECT datname::text FROM pg_database WHERE position('_pre_restore_' in datname) > 0",
        )
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// Drop `db`'s safety copies older than `keep` (after a successful
/// restore: the new safety copy is the one that matters now). A copy that
/// cannot be dropped (someone is connected to it) is kept and logged.
async fn drop_old_safety_copies(
    conn: &mut SqlSession,
    db: &str,
    keep: Option<Duration>,
    fresh: Option<&str>,
) -> Vec<String> {
    let Some(keep) = keep else {
        return Vec::new();
    };
    let names = match side_databases(conn).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list safety copies; none dropped");
            return Vec::new();
        }
    };
    let now = chrono::Utc::now().naive_utc();
    let mut dropped = Vec::new();
    for name in expired_safety_copies(db, &names, now, keep, fresh) {
        match conn
            .execute(&format!("DROP DATABASE {}", quote_ident(&name)))
            .await
        {
            Ok(_) => {
                tracing::info!(database = %name, "dropped a safety copy older than safety_copy_keep");
                dropped.push(name);
            }
            Err(e) => {
                tracing::warn!(database = %name, error = %e, "cannot drop an old safety copy; kept");
            }
        }
    }
    dropped
}

/// The major version in a `server_version` text ("16.4 (Debian ...)",
/// "17devel", "9.6.24": 9).
pub fn major_of(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A dump of PostgreSQL N does not restore into an older server (pg_restore
/// fails part-way, on syntax or catalogs the old server lacks): refused
/// before anything is touched, naming both versions.
async fn refuse_older_server(
    m: &crate::base::manifest::Manifest,
    conn: &mut SqlSession,
) -> Result<()> {
    let Some(source) = m.source.as_ref().and_then(|s| major_of(&s.server_version)) else {
        return Ok(());
    };
    let num = crate::services::pg::server_version_num(conn).await?;
    let target = (num / 10000) as u32;
    if target < source {
        return Err(Error::Refused(format!(
            "backup {} is of PostgreSQL {source} and the target server runs PostgreSQL {target}: a dump does not restore into an older server; restore into PostgreSQL {source} or newer (nothing was touched)",
            m.id
        )));
    }
    Ok(())
}

/// Replacing the job's own database with a backup of *another* source is
/// what two hosts sharing a job name look like: refuse (before anything is
/// touched) when the server being restored into has backups of its own in
/// this job and the chosen one is not among them. A new server (a real
/// disaster recovery) has none, so it is never refused.
async fn refuse_another_source(
    r: &Resolved<'_>,
    conn: &mut SqlSession,
    database: &str,
) -> Result<()> {
    let Some((b_sys, b_db)) = r.manifest.source_identity() else {
        return Ok(());
    };
    let Some(live) = crate::services::pg::system_identifier(conn).await else {
        return Ok(());
    };
    if b_sys == live && b_db == database {
        return Ok(());
    }
    for b in r.repo.list_backups(&r.job).await?.iter().rev().take(20) {
        if b.id == r.manifest.id {
            continue;
        }
        let Ok(m) = r.repo.read_manifest(&r.job, &b.id).await else {
            continue;
        };
        if m.source_identity() == Some((live.as_str(), database)) {
            return Err(Error::Refused(format!(
                "backup {} is of database {b_db} on server {b_sys} (host {}), but {database} here (server {live}) has backups of its own in job {} (e.g. {}): two hosts share this job name. Nothing was changed; pass --force-source to restore it anyway",
                r.manifest.id, r.manifest.host, r.job, b.id
            )));
        }
    }
    Ok(())
}

/// Best effort: drop a database this restore created and did not finish
/// (the journal's cleanup repeats it when it can reach the server).
async fn drop_database(conn: &mut SqlSession, name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    if let Err(e) = conn.execute(&sql).await {
        tracing::warn!(database = name, error = %e, "cannot drop the unfinished database");
    }
}

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) async fn database_exists(conn: &mut SqlSession, name: &str) -> Result<bool> {
    let n = conn
        .scalar(&format!(
            "SELECT count(*)::text FROM pg_database WHERE datname = {}",
            quote_literal(name)
        ))
        .await?;
    Ok(n.as_deref().is_some_and(|n| n != "0"))
}

/// The job's tools for a restore: where its server is (its container) for
/// its own server; this host's for a `--to` target reached from here.
async fn tools_for(job: &PostgresJob, replaces: bool) -> Result<PgTools> {
    if replaces {
        PgTools::for_job(job).await
    } else {
        Ok(PgTools::host_for(job))
    }
}

/// A `--to` database that exists must hold no user objects.
async fn ensure_empty(tools: &PgTools, dest: &PgTarget) -> Result<()> {
    let mut c = SqlSession::open(tools, dest).await?;
    let n: i64 = c.scalar(
        "SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
    )
    .await?
    .and_then(|n| n.parse().ok())
    .unwrap_or(0);
    let _ = c.close().await;
    if n > 0 {
        return Err(Error::Refused(format!(
            "target database {} is not empty ({n} relations); restore into a new or empty database",
            dest.display()
        )));
    }
    Ok(())
}

async fn create_database(
    conn: &mut SqlSession,
    name: &str,
    src: Option<&crate::base::manifest::PostgresSource>,
) -> Result<()> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    if let Some(s) = src {
        let owner_exists = conn
            .scalar(&format!(
                "SELECT count(*)::text FROM pg_roles WHERE rolname = {}",
                quote_literal(&s.owner)
            ))
            .await?;
        if owner_exists.as_deref().is_some_and(|n| n != "0") {
            sql.push_str(&format!(" OWNER {}", quote_ident(&s.owner)));
        }
        let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
        sql.push_str(&format!(
            " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            lit(&s.encoding),
            lit(&s.collate),
            lit(&s.ctype)
        ));
    }
    conn.execute_coded(&sql).await.map_err(|(code, e)| {
        // Two restores racing to create one target (from two hosts): the
        // loser is refused in words, not with pg_database's index error.
        if code.is_some_and(|c| c == "23505" || c == "42P04") {
            Error::Refused(format!(
                "database {name} was created by someone else meanwhile (another restore?); nothing was restored"
            ))
        } else {
            e
        }
    })?;
    Ok(())
}

async fn pg_restore(
    tools: &PgTools,
    into: &PgTarget,
    jobs: usize,
    file: Option<&Path>,
    r: &Resolved<'_>,
    dump: &crate::base::manifest::Artifact,
    progress: &Arc<Progress>,
) -> Result<()> {
    let (env, _passfile) = tools.env_for(into)?;
    let mut args = super::pipelined::restore_args(into);
    if let (Some(f), Some(c)) = (file, tools.container()) {
        return pg_restore_in_container(tools, c, &args, &env, jobs, f).await;
    }
    if let Some(f) = file {
        args.push(format!("--jobs={jobs}"));
        args.push(f.display().to_string());
        tools
            .spawn("pg_restore", &args, &env, false, false)
            .await?
            .finish()
            .await?;
    } else {
        // Second pass of a streamed restore: the artifact was verified
        // moments ago, but the store may have changed since, so what
        // feeds pg_restore is hashed again and a mismatch fails the
        // restore (the new database is then dropped, never swapped in).
        let mut child = tools.spawn("pg_restore", &args, &env, true, false).await?;
        let stdin = child
            .take_stdin()
            .ok_or_else(|| Error::Other("pg_restore stdin".into()))?;
        let fed = fetch::to_writer(
            &r.repo,
            &r.job,
            &r.manifest.id,
            dump,
            stdin,
            Some(progress.clone()),
            &r.keys,
        )
        .await;
        let finished = child.finish().await;
        match (fed, finished) {
            (Err(e @ Error::Integrity { .. }), _) => return Err(e),
            // pg_restore stopped reading: its own error says why.
            (Err(_), Err(tool)) => return Err(tool),
            (Err(e), Ok(_)) => return Err(e),
            (Ok(_), finished) => {
                finished?;
            }
        }
    }
    Ok(())
}

/// pg_restore inside the server's container, from the verified dump on
/// this host: `--jobs 1` streams it into pg_restore's stdin; `--jobs N`
/// copies it into a private temporary directory of the container (the
/// archive API) for a parallel restore and removes it after.
async fn pg_restore_in_container(
    tools: &PgTools,
    c: &crate::services::pg::Container,
    args: &[String],
    env: &[(String, String)],
    jobs: usize,
    file: &Path,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut args = args.to_vec();
    if jobs > 1 {
        let copy =
            crate::services::docker::copy_into(&c.docker, &c.name, file, "backup.dump").await?;
        args.push(format!("--jobs={jobs}"));
        args.push(copy.clone());
        let restored = match tools.spawn("pg_restore", &args, env, false, false).await {
            Ok(child) => child.finish().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Some((dir, _)) = copy.rsplit_once('/') {
            crate::services::docker::remove_dir(&c.docker, &c.name, dir).await;
        }
        return restored;
    }
    let mut child = tools.spawn("pg_restore", &args, env, true, false).await?;
    let mut stdin = child
        .take_stdin()
        .ok_or_else(|| Error::Other("pg_restore stdin".into()))?;
    let fed = async {
        let mut f = tokio::fs::File::open(file).await?;
        tokio::io::copy(&mut f, &mut stdin).await?;
        stdin.shutdown().await
    }
    .await;
    match (fed, child.finish().await) {
        // pg_restore stopped reading: its own error says why.
        (_, Err(tool)) => Err(tool),
        (Err(e), Ok(_)) => Err(Error::io("streaming the dump into pg_restore", e)),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

/// The SQL of the dump's database-level entries (DATABASE PROPERTIES, and
/// ACL / COMMENT / SECURITY LABEL on the database), rewritten from the
/// source database's name to `into`, applied with psql.
async fn apply_database_properties(
    tools: &PgTools,
    admin: &PgTarget,
    dump: &Path,
    source_db: &str,
    into: &str,
) -> Result<()> {
    let mut args = vec![
        "--create".to_string(),
        "--schema-only".into(),
        "--file=-".into(),
        dump.display().to_string(),
    ];
    // In a container the archive is read there (its pg_restore reads what
    // its pg_dump wrote), fed through stdin.
    let in_container = tools.container().is_some();
    if in_container {
        args.pop();
    }
    let mut child = tools
        .spawn("pg_restore", &args, &[], in_container, true)
        .await?;
    if in_container {
        if let Some(mut stdin) = child.take_stdin() {
            let path = dump.to_path_buf();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Ok(mut f) = tokio::fs::File::open(&path).await {
                    let _ = tokio::io::copy(&mut f, &mut stdin).await;
                }
                let _ = stdin.shutdown().await;
            });
        }
    }
    let mut out = child
        .take_stdout()
        .ok_or_else(|| Error::Other("pg_restore stdout".into()))?;
    let mut text = String::new();
    use tokio::io::AsyncReadExt;
    let read = out.read_to_string(&mut text).await;
    child.finish().await?;
    read.map_err(|e| Error::io("reading pg_restore's schema output", e))?;
    let sql = retarget(&database_entries(&text), source_db, into);
    if sql.trim().is_empty() {
        return Ok(());
    }
    psql_script(tools, admin, &sql, true, "database properties").await?;
    Ok(())
}

/// From pg_restore's text output, the statements of the entries that
/// belong to the database itself. Entries start with a header comment
/// `-- Name: N; Type: T; Schema: S; Owner: O`.
fn database_entries(script: &str) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in script.lines() {
        if let Some(h) = line.strip_prefix("-- Name: ") {
            let ty = h
                .split("; ")
                .find_map(|p| p.strip_prefix("Type: "))
                .unwrap_or("");
            keep = ty == "DATABASE PROPERTIES"
                || (matches!(ty, "ACL" | "COMMENT" | "SECURITY LABEL")
                    && h.starts_with("DATABASE "));
            continue;
        }
        // psql meta-commands (`\connect`, `\restrict`/`\unrestrict` of
        // newer pg_dump) are pg_restore's framing, not the entry's SQL.
        if keep && !line.starts_with('\\') && !line.starts_with("--") && !line.trim().is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `DATABASE <source>` (as pg_dump quotes it) becomes `DATABASE <into>`.
fn retarget(sql: &str, source: &str, into: &str) -> String {
    let plain = source
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !source.starts_with(|c: char| c.is_ascii_digit());
    let to = format!("DATABASE {}", quote_ident(into));
    let mut s = sql.replace(&format!("DATABASE {}", quote_ident(source)), &to);
    if plain {
        for end in [" ", ";", "\n"] {
            s = s.replace(&format!("DATABASE {source}{end}"), &format!("{to}{end}"));
        }
    }
    s
}

/// Run the globals dump minus every statement about a role that already
/// exists: restoring must not reset an existing role's password or flags.
async fn create_missing_roles(
    tools: &PgTools,
    admin: &PgTarget,
    conn: &mut SqlSession,
    sql: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let existing: Vec<String> = conn
        .rows("SELECT rolname::text FROM pg_roles")
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    let (filtered, created) = filter_globals(sql, &existing);
    if created.is_empty() {
        return Ok((created, Vec::new()));
    }
    let stderr = psql_script(tools, admin, &filtered, false, "roles").await?;
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(|l| format!("globals: {l}"))
        .collect();
    Ok((created, warnings))
}

/// Run `sql` through psql against `admin` (password in a passfile, never
/// argv); returns psql's stderr. `stop_on_error`: ON_ERROR_STOP.
async fn psql_script(
    tools: &PgTools,
    admin: &PgTarget,
    sql: &str,
    stop_on_error: bool,
    what: &str,
) -> Result<String> {
    let (env, _passfile) = tools.env_for(admin)?;
    let args = vec![
        "-X".to_string(),
        "-q".into(),
        "--no-password".into(),
        "-v".into(),
        format!("ON_ERROR_STOP={}", u8::from(stop_on_error)),
    ];
    let mut child = tools.spawn("psql", &args, &env, true, false).await?;
    if let Some(mut stdin) = child.take_stdin() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(sql.as_bytes())
            .await
            .map_err(|e| Error::io(format!("sending {what} to psql"), e))?;
        // An exec's stdin ends on shutdown, not on drop.
        let _ = stdin.shutdown().await;
    }
    child.finish().await
}

/// The role a `CREATE ROLE`/`ALTER ROLE` line is about.
fn role_of(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))?;
    if let Some(q) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        Some(rest.split([' ', ';']).next()?.to_owned())
    }
}

/// Keep statements about roles that do not exist yet, plus memberships;
/// drop tablespaces (their paths belong to the old host).
fn filter_globals(sql: &str, existing: &[String]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut created = Vec::new();
    for line in sql.lines() {
        if let Some(role) = role_of(line) {
            if existing.contains(&role) {
                continue;
            }
            if line.starts_with("CREATE ROLE ") {
                created.push(role);
            }
        } else if line.starts_with("CREATE TABLESPACE ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, created)
}

/// Terminate every session of the closed database `name`, for up to 30 s;
/// past that it is reopened and the restore fails (the restored copy stays
/// in `restored`).
async fn disconnect_all(conn: &mut SqlSession, name: &str, restored: &str) -> Result<()> {
    let q = quote_ident;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = conn
            .scalar(&format!(
                "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                quote_literal(name)
            ))
            .await?;
        if left.as_deref().is_none_or(|n| n == "0") {
            break;
        }
        if Instant::now() > deadline {
            let _ = conn
                .execute(&format!(
                    "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                    q(name)
                ))
                .await;
            return Err(Error::Other(format!(
                "sessions keep connecting to {name}; the restored copy is in {restored}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub(super) async fn swap(
    conn: &mut SqlSession,
    name: &str,
    restored: &str,
    existed: bool,
    safety: &str,
    journal: &super::journal::Journal,
) -> Result<Option<String>> {
    use super::journal::Step;
    let q = quote_ident;
    if !existed {
        conn.execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            q(restored),
            q(name)
        ))
        .await?;
        super::undo::remember_writes(conn, name, journal).await;
        return Ok(None);
    }
    // Journaled first: a kill from here on is finished or rolled back by
    // the next `drctl restore` / `drctl status`, never left closed.
    journal.step(Step::Closed).await?;
    conn.execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        q(name)
    ))
    .await?;
    crate::base::faults::point("restore.swap.closed").await;
    disconnect_all(conn, name, restored).await?;
    let renamed = async {
        conn.execute("BEGIN").await?;
        conn.execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            q(name),
            q(safety)
        ))
        .await?;
        conn.execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            q(restored),
            q(name)
        ))
        .await?;
        conn.execute("COMMIT").await
    }
    .await;
    if let Err(e) = renamed {
        let _ = conn.execute("ROLLBACK").await;
        let _ = conn
            .execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                q(name)
            ))
            .await;
        return Err(Error::Other(format!(
            "swapping {restored} into place failed ({e}); the restored copy is in {restored}"
        )));
    }
    journal.step(Step::Swapped).await?;
    crate::base::faults::point("restore.swap.renamed").await;
    conn.execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        q(safety)
    ))
    .await?;
    super::undo::remember_writes(conn, name, journal).await;
    Ok(Some(safety.to_owned()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_this_databases_safety_copies_older_than_keep_expire() {
        let now = chrono::NaiveDateTime::parse_from_str("20261201120000", "%Y%m%d%H%M%S").unwrap();
        let week = Duration::from_secs(7 * 24 * 3600);
        let names: Vec<String> = [
            "app_pre_restore_20261101000000",   // a month old: expires
            "app_pre_restore_20261101000000_2", // its same-second twin
            "app_pre_restore_20261130000000",   // a day old: kept
            "app2_pre_restore_20261101000000",  // another database's
            "app_pre_restore_2026110100",       // not a stamp
            "app_pre_restore_20261101000000_x", // not ours
            "app",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            super::expired_safety_copies("app", &names, now, week, None),
            vec![
                "app_pre_restore_20261101000000",
                "app_pre_restore_20261101000000_2"
            ]
        );
        // The copy this restore just made never goes, whatever its stamp.
        assert_eq!(
            super::expired_safety_copies(
                "app",
                &names,
                now,
                week,
                Some("app_pre_restore_20261101000000")
            ),
            vec!["app_pre_restore_20261101000000_2"]
        );
        // A name cut to 63 bytes is still recognised as the long one's.
        let long = "l".repeat(60);
        let cut = super::side_name(&long, "_pre_restore_20261101000000");
        assert_eq!(
            super::expired_safety_copies(&long, std::slice::from_ref(&cut), now, week, None),
            vec![cut]
        );
    }

    #[test]
    fn server_majors_from_version_texts() {
        assert_eq!(super::major_of("16.4 (Debian 16.4-1.pgdg120+2)"), Some(16));
        assert_eq!(super::major_of("17devel"), Some(17));
        assert_eq!(super::major_of("9.6.24"), Some(9));
        assert_eq!(super::major_of("unknown"), None);
    }

    use super::*;

    #[test]
    fn globals_filter_keeps_only_missing_roles() {
        let sql = "SET client_encoding = 'UTF8';\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\nCREATE ROLE \"odd \"\"name\";\nALTER ROLE \"odd \"\"name\" WITH LOGIN;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN PASSWORD 'x';\nGRANT app TO \"odd \"\"name\" GRANTED BY postgres;\nCREATE TABLESPACE t OWNER app LOCATION '/x';\n";
        let (out, created) = filter_globals(sql, &["postgres".into()]);
        assert_eq!(created, vec!["odd \"name".to_string(), "app".to_string()]);
        assert!(!out.contains("ROLE postgres"));
        assert!(out.contains("ALTER ROLE app WITH LOGIN"));
        assert!(out.contains("GRANT app TO"));
        assert!(!out.contains("TABLESPACE"));
    }

    #[test]
    fn database_properties_are_picked_from_the_script_and_retargeted() {
        let script = "--\n-- Name: app; Type: DATABASE; Schema: -; Owner: postgres\n--\n\nCREATE DATABASE app WITH TEMPLATE = template0;\n\n\\connect app\n\n--\n-- Name: DATABASE app; Type: COMMENT; Schema: -; Owner: postgres\n--\n\nCOMMENT ON DATABASE app IS 'the app';\n\n--\n-- Name: app; Type: DATABASE PROPERTIES; Schema: -; Owner: postgres\n--\n\nALTER DATABASE app SET work_mem TO '8MB';\n\n\\connect app\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: postgres\n--\n\nCREATE TABLE public.t (i int);\n\n--\n-- Name: DATABASE app; Type: ACL; Schema: -; Owner: postgres\n--\n\nREVOKE CONNECT,TEMPORARY ON DATABASE app FROM PUBLIC;\n";
        let got = retarget(&database_entries(script), "app", "app_restoring_1");
        assert_eq!(
            got,
            "COMMENT ON DATABASE \"app_restoring_1\" IS 'the app';\nALTER DATABASE \"app_restoring_1\" SET work_mem TO '8MB';\nREVOKE CONNECT,TEMPORARY ON DATABASE \"app_restoring_1\" FROM PUBLIC;\n"
        );
        assert_eq!(
            retarget("ALTER DATABASE \"My Db\" SET x TO 1;\n", "My Db", "n"),
            "ALTER DATABASE \"n\" SET x TO 1;\n"
        );
    }

    #[test]
    fn side_names_fit_postgres_limit() {
        let n = side_name(&"x".repeat(80), "_pre_restore_20261122020000");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_pre_restore_20261122020000"));
    }
}
