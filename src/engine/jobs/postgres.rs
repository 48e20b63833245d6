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
use crate::services::pg::{spawn_tool, PgTarget, PgTools};
use sqlx::{Connection, Row};

pub use crate::services::pg::{job_target as target, quote_ident, system_identifier};

/// What the manifest records about the server and the database.
const SERVER_FACTS: &str = "SELECT current_setting('server_version_num')::int AS num, current_setting('server_version') AS ver,
        pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS enc,
        d.datcollate::text AS coll, d.datctype::text AS ctype, pg_database_size(d.oid) AS size
 FROM pg_database d WHERE d.datname = current_database()";

/// A read-only REPEATABLE READ transaction and its exported snapshot:
/// pg_dump dumps that snapshot, and the row counts are read in it, so the
/// manifest's counts are exactly the dump's.
async fn export_snapshot(
    conn: &mut sqlx::PgConnection,
) -> Result<(sqlx::Transaction<'_, sqlx::Postgres>, String)> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| Error::pg("starting the snapshot transaction", e))?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::pg("setting REPEATABLE READ", e))?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| Error::pg("exporting a snapshot", e))?;
    Ok((tx, snapshot))
}

/// Dump the job's database (and the globals) in one exported snapshot,
/// with row counts read in that snapshot.
pub async fn backup(ctx: &BackupCtx<'_>, job: &PostgresJob) -> Result<BackupOutput> {
    let target = target(job)?;
    let tools = PgTools::locate(job.pg_bindir.as_deref());
    let mut conn = target.connect().await?;
    let row = sqlx::query(SERVER_FACTS)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::pg("reading server facts", e))?;
    let server_num: i32 = row.get("num");
    let system_identifier = system_identifier(&mut conn).await;
    let db_size: i64 = row.get("size");
    let dump_version = tools.check_against_server("pg_dump", server_num).await?;
    let passfile = target.passfile()?;
    let env = target.child_env(passfile.as_ref());
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
    let (mut tx, snapshot) = export_snapshot(&mut conn).await?;

    let args = vec![
        "--format=custom".into(),
        "--compress=0".into(),
        format!("--snapshot={snapshot}"),
        "--no-password".into(),
    ];
    let child = spawn_tool(&tools.path("pg_dump"), &args, &env, false, true)?;
    let (stdout, waiter) = child.into_checked_stdout()?;
    // A pg_dump that stops early but exits 0 (a wrapper, a full pipe
    // buffer lost, a bug) must be a failed run, not a committed backup.
    let (stdout, copy) = crate::base::stream::tee(stdout, 8);
    let checker = crate::services::pg::archive::spawn_check(&tools, copy)?;
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
        count_rows(&mut tx, job.count_rows_max_table_size.as_u64() as i64),
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
    tx.commit()
        .await
        .map_err(|e| Error::pg("closing the snapshot transaction", e))?;
    artifacts.push(dump);

    let source = PostgresSource {
        engine: "postgresql".into(),
        server_version: row.get("ver"),
        database: target.database.clone(),
        owner: row.get("owner"),
        encoding: row.get("enc"),
        collate: row.get("coll"),
        ctype: row.get("ctype"),
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
    })
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
        let child = spawn_tool(&tools.path("pg_dumpall"), &args, env, false, true)?;
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
        if stored.is_err() {
            return first_cause(stored, dumped).map(|a| (a, mode.into(), String::new()));
        }
        match dumped {
            Ok(text) => return Ok((stored?, mode.into(), text)),
            Err(Error::Tool { stderr, .. })
                if mode == "full" && stderr.contains("permission denied") =>
            {
                tracing::info!(
                    "pg_dumpall cannot read role passwords; retrying with --no-role-passwords"
                );
                last_err = Some(stderr);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Other(format!(
        "pg_dumpall failed: {}",
        last_err.unwrap_or_default()
    )))
}

/// Exact row counts in the exporting transaction's snapshot. Tables above
/// `max_bytes` are listed without a count rather than scanned.
async fn count_rows(conn: &mut sqlx::PgConnection, max_bytes: i64) -> Result<Vec<TableCount>> {
    // Counting competes with pg_dump for the same cores; parallel workers
    // would only add contention (and their start-up) to a scan we overlap anyway.
    sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::pg("preparing row counts", e))?;
    let tables = sqlx::query(
        "SELECT n.nspname AS schema, c.relname AS name, pg_total_relation_size(c.oid) AS bytes
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
           AND NOT c.relispartition
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::pg("listing tables", e))?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let schema: String = t.get("schema");
        let name: String = t.get("name");
        let bytes: i64 = t.get("bytes");
        let rows = if bytes <= max_bytes {
            let q = format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(&schema),
                quote_ident(&name)
            );
            // A savepoint keeps the snapshot alive if one table cannot be read.
            sqlx::query("SAVEPOINT drctl_count")
                .execute(&mut *conn)
                .await
                .map_err(|e| Error::pg("counting rows", e))?;
            match sqlx::query_scalar::<_, i64>(&q).fetch_one(&mut *conn).await {
                Ok(n) => {
                    sqlx::query("RELEASE SAVEPOINT drctl_count")
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| Error::pg("counting rows", e))?;
                    Some(n)
                }
                Err(e) => {
                    tracing::warn!(table = %format!("{schema}.{name}"), error = %e, "cannot count rows");
                    sqlx::query("ROLLBACK TO SAVEPOINT drctl_count")
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| Error::pg("counting rows", e))?;
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
