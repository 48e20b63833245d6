//! `postgres`: a consistent logical backup of one database.
//!
//! One REPEATABLE READ transaction exports a snapshot; `pg_dump
//! --snapshot=<id> -Fc -Z0` streams the database in that snapshot while the
//! same transaction counts rows per table, so the manifest's row counts
//! describe exactly the data in the dump. We compress ourselves (zstd, many
//! threads) instead of pg_dump's single-threaded zlib. Roles and tablespaces
//! come from `pg_dumpall --globals-only`.

use super::{BackupCtx, BackupOutput, Packing};
use crate::base::error::{Error, Result};
use crate::base::manifest::{PostgresSource, TableCount};
use crate::config::PostgresJob;
use crate::services::pg::{PgTarget, PgTools, SqlSession};

pub use crate::services::pg::{job_target as target, quote_ident, system_identifier};

/// What the manifest records about the server and the database (text
/// columns: a direct connection and a psql in a container read them alike).
const SERVER_FACTS: &str =
    "SELECT current_setting('server_version_num'), current_setting('server_version'),
        pg_get_userbyid(d.datdba)::text, pg_encoding_to_char(d.encoding)::text,
        d.datcollate::text, d.datctype::text, pg_database_size(d.oid)::text
 FROM pg_database d WHERE d.datname = current_database()";

/// The server and database as [`SERVER_FACTS`] reads them.
struct Facts {
    num: i32,
    version: String,
    owner: String,
    encoding: String,
    collate: String,
    ctype: String,
    size: i64,
}

async fn facts(s: &mut SqlSession) -> Result<Facts> {
    let row = s.rows(SERVER_FACTS).await?.into_iter().next();
    let col = |i: usize| {
        row.as_ref()
            .and_then(|r| r.get(i).cloned().flatten())
            .unwrap_or_default()
    };
    let num = col(0)
        .parse()
        .map_err(|_| Error::Other(format!("unexpected server_version_num {:?}", col(0))))?;
    Ok(Facts {
        num,
        version: col(1),
        owner: col(2),
        encoding: col(3),
        collate: col(4),
        ctype: col(5),
        size: col(6).parse().unwrap_or(0),
    })
}

/// A read-only REPEATABLE READ transaction and its exported snapshot:
/// pg_dump dumps that snapshot, and the row counts are read in it, so the
/// manifest's counts are exactly the dump's.
async fn export_snapshot(s: &mut SqlSession) -> Result<String> {
    s.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    s.scalar("SELECT pg_export_snapshot()")
        .await?
        .ok_or_else(|| Error::Other("pg_export_snapshot() returned nothing".into()))
}

/// Dump the job's database (and the globals) in one exported snapshot,
/// with row counts read in that snapshot. In a container (`container =`,
/// `compose =`) the tools and the SQL run inside it.
pub async fn backup(ctx: &BackupCtx<'_>, job: &PostgresJob) -> Result<BackupOutput> {
    let target = target(job)?;
    let tools = PgTools::for_job(job).await?;
    let mut session = SqlSession::open(&tools, &target).await?;
    let facts = facts(&mut session).await?;
    let server_num = facts.num;
    let system_identifier = system_identifier(&mut session).await;
    let db_size = facts.size;
    let dump_version = tools.check_against_server("pg_dump", server_num).await?;
    let (env, _passfile) = tools.env_for(&target)?;
    let packing = Packing {
        compression: job.storage.compression,
        level: job.storage.compression_level,
        threads: job
            .compression_threads
            .unwrap_or_else(Packing::default_threads),
    };

    let mut artifacts = Vec::new();
    let mut globals_mode = None;
    let mut globals_output = String::new();
    if job.globals {
        tools.check_against_server("pg_dumpall", server_num).await?;
        let (artifact, mode, text) = dump_globals(ctx, &tools, &target, &env, packing).await?;
        artifacts.push(artifact);
        globals_mode = Some(mode);
        globals_output = text;
    }

    ctx.progress.set_phase("dump", db_size.max(0) as u64);
    let snapshot = export_snapshot(&mut session).await?;

    let args = vec![
        "--format=custom".into(),
        "--compress=0".into(),
        format!("--snapshot={snapshot}"),
        "--no-password".into(),
    ];
    let child = tools.spawn("pg_dump", &args, &env, false, true).await?;
    let (stdout, waiter) = child.into_checked_stdout()?;
    // A pg_dump that stops early but exits 0 (a wrapper, a full pipe
    // buffer lost, a bug) must be a failed run, not a committed backup.
    let (stdout, copy) = crate::base::stream::tee(stdout, 8);
    let checker = crate::services::pg::archive::spawn_check(
        &check_tools(&tools, job, server_num).await,
        copy,
    )
    .await?;
    let hint = Some((db_size.max(0) as u64) / 2);
    let (stored, counts) = tokio::join!(
        ctx.store(
            "database.dump",
            "pg_dump_custom",
            stdout,
            packing,
            hint,
            true
        ),
        count_rows(&mut session, job.count_rows_max_table_size.as_u64() as i64),
    );
    // pg_dump's own verdict (with its stderr) explains a failed upload best.
    let dumped = waiter.await.map_err(|e| Error::task("pg_dump waiter", e))?;
    let mut output = globals_output;
    if let Ok(text) = &dumped {
        output.push_str(text);
    }
    let dump = first_cause(stored, dumped)?;
    checker
        .await
        .map_err(|e| Error::task("archive check", e))??;
    let tables = counts?;
    session.execute("COMMIT").await?;
    if let Err(e) = session.close().await {
        tracing::debug!(error = %e, "closing the snapshot session");
    }
    artifacts.push(dump);

    let source = PostgresSource {
        engine: "postgresql".into(),
        server_version: facts.version,
        database: target.database.clone(),
        owner: facts.owner,
        encoding: facts.encoding,
        collate: facts.collate,
        ctype: facts.ctype,
        dump_tool: "pg_dump".into(),
        dump_tool_version: dump_version.text,
        snapshot,
        globals: globals_mode,
        system_identifier,
    };
    Ok(BackupOutput {
        source: Some(source),
        artifacts,
        tables,
        output,
        ..Default::default()
    })
}

/// Where the archive check's `pg_restore` runs. For a job in a container,
/// on this host when it has a pg_restore at least as new as the server
/// (the dump then crosses the Engine API once, not twice: the exec's
/// stdio is the slow part of the container path); else in the container.
async fn check_tools(tools: &PgTools, job: &PostgresJob, server_num: i32) -> PgTools {
    if tools.container().is_none() {
        return tools.clone();
    }
    let host = PgTools::host_for(job);
    match host.version("pg_restore").await {
        Ok(v) if i64::from(v.major) >= i64::from(server_num / 10000) => host,
        _ => tools.clone(),
    }
}

/// Of an upload and the tool that fed it, report what went wrong first.
/// When the tool failed, the upload fails with it (its stream is guarded),
/// and the tool's stderr is the explanation. When the upload failed first
/// (S3 down, disk full), the tool then dies of a broken pipe: a consequence,
/// so the upload's error is the one to show.
fn first_cause<T>(stored: Result<T>, tool: Result<String>) -> Result<T> {
    match (stored, tool) {
        (Ok(v), Ok(_)) => Ok(v),
        (Ok(_), Err(t)) => Err(t),
        (Err(s), Ok(_)) => Err(s),
        (Err(s), Err(t)) => {
            let tool_name = match &t {
                Error::Tool { tool, .. } => tool.clone(),
                _ => String::new(),
            };
            if !tool_name.is_empty() && s.to_string().contains(&format!("{tool_name} failed (")) {
                Err(t)
            } else {
                Err(s)
            }
        }
    }
}

/// `pg_dumpall --globals-only`, falling back to `--no-role-passwords` when
/// the user may not read pg_authid (managed services, non-superusers).
async fn dump_globals(
    ctx: &BackupCtx<'_>,
    tools: &PgTools,
    target: &PgTarget,
    env: &[(String, String)],
    packing: Packing,
) -> Result<(crate::base::manifest::Artifact, String, String)> {
    let mut last_err = None;
    for (mode, extra) in [
        ("full", None),
        ("no-role-passwords", Some("--no-role-passwords")),
    ] {
        let mut args = vec![
            "--globals-only".to_string(),
            "--no-password".into(),
            format!("--database={}", target.database),
        ];
        args.extend(extra.map(String::from));
        let child = tools.spawn("pg_dumpall", &args, env, false, true).await?;
        let (stdout, waiter) = child.into_checked_stdout()?;
        let stored = ctx
            .store(
                "globals.sql",
                "pg_globals_sql",
                stdout,
                Packing {
                    threads: 1,
                    ..packing
                },
                None,
                false,
            )
            .await;
        let dumped = waiter
            .await
            .map_err(|e| Error::task("pg_dumpall waiter", e))?;
        // Refused role passwords (a non-superuser, a managed service): the
        // stream failed with the tool, and the second mode is tried.
        if let Err(Error::Tool { stderr, .. }) = &dumped {
            if mode == "full" && stderr.contains("permission denied") {
                tracing::info!(
                    "pg_dumpall cannot read role passwords; retrying with --no-role-passwords"
                );
                last_err = Some(stderr.clone());
                continue;
            }
        }
        if stored.is_err() {
            return first_cause(stored, dumped).map(|a| (a, mode.into(), String::new()));
        }
        return Ok((stored?, mode.into(), dumped?));
    }
    Err(Error::Other(format!(
        "pg_dumpall failed: {}",
        last_err.unwrap_or_default()
    )))
}

/// Exact row counts in the exporting transaction's snapshot. Tables above
/// `max_bytes` are listed without a count rather than scanned.
async fn count_rows(s: &mut SqlSession, max_bytes: i64) -> Result<Vec<TableCount>> {
    // Counting competes with pg_dump for the same cores; parallel workers
    // would only add contention (and their start-up) to a scan we overlap anyway.
    s.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        .await?;
    // Names hex-encoded: any character survives psql's line protocol.
    let tables = s
        .rows(
            "SELECT encode(convert_to(n.nspname::text, 'UTF8'), 'hex'), encode(convert_to(c.relname::text, 'UTF8'), 'hex'),
                    pg_total_relation_size(c.oid)::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
           AND NOT c.relispartition
         ORDER BY n.nspname, c.relname",
        )
        .await?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let text = |i: usize| t.get(i).cloned().flatten().unwrap_or_default();
        let unhex = |h: String| {
            hex::decode(&h)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::Other(format!("a table name that does not decode: {h}")))
        };
        let (schema, name) = (unhex(text(0))?, unhex(text(1))?);
        let bytes: i64 = text(2).parse().unwrap_or(0);
        let rows = if bytes <= max_bytes {
            let q = format!(
                "SELECT count(*)::text FROM {}.{}",
                quote_ident(&schema),
                quote_ident(&name)
            );
            // A savepoint keeps the snapshot alive if one table cannot be read.
            s.execute("SAVEPOINT drctl_count").await?;
            match s.scalar(&q).await {
                Ok(n) => {
                    s.execute("RELEASE SAVEPOINT drctl_count").await?;
                    n.and_then(|n| n.parse().ok())
                }
                Err(e) => {
                    tracing::warn!(table = %format!("{schema}.{name}"), error = %e, "cannot count rows");
                    s.execute("ROLLBACK TO SAVEPOINT drctl_count").await?;
                    None
                }
            }
        } else {
            None
        };
        out.push(TableCount {
            schema,
            name,
            rows,
            bytes,
        });
    }
    Ok(out)
}
