//! `postgres`: a consistent logical backup of one database.
//!
//! One REPEATABLE READ transaction exports a snapshot; `pg_dump
//! --snapshot=<id> -Fc -Z0` streams the database in that snapshot while the
//! same transaction counts rows per table, so the manifest's row counts
//! describe exactly the data in the dump. We compress ourselves (zstd, many
//! threads) instead of pg_dump's single-threaded zlib. Roles and tablespaces
//! come from `pg_dumpall --globals-only`.

use super::{BackupCtx, BackupOutput, Packing};
use crate::base::custom_archive;
use crate::base::error::{Error, Result};
use crate::base::manifest::{PostgresSource, TableCount};
use crate::config::PostgresJob;
use crate::services::pg::{PgTarget, PgTools, SqlSession};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    let hint = Some((db_size.max(0) as u64) / 2);
    // A pg_dump that stops early but exits 0 (a wrapper, a full pipe
    // buffer lost, a bug) must be a failed run, not a committed backup:
    // the archive is proven whole while it streams, in-process for the
    // versions drctl reads (with the rows counted from it), else by
    // `pg_restore -f /dev/null` on a copy of the stream.
    let max_count = job.count_rows_max_table_size.as_u64() as i64;
    let dump = Dump {
        ctx,
        packing,
        hint,
        max_count,
    };
    let (stored, dumped, tables) = if custom_archive::supports_pg_dump(dump_version.major) {
        dump.walked(stdout, waiter, &mut session).await?
    } else {
        let tools = check_tools(&tools, job, server_num).await;
        dump.checked(stdout, waiter, &mut session, &tools).await?
    };
    // pg_dump's own verdict (with its stderr) explains a failed upload best.
    let mut output = globals_output;
    if let Ok(text) = &dumped {
        output.push_str(text);
    }
    let dump = first_cause(stored, dumped)?;
    let tables = tables?;
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

/// The database dump's way into the repository.
struct Dump<'a, 'b> {
    ctx: &'a BackupCtx<'b>,
    packing: Packing,
    hint: Option<u64>,
    max_count: i64,
}

/// What storing the dump came to: the artifact, pg_dump's verdict (its
/// output), and the tables with their rows (empty when either failed).
type Dumped = (
    Result<crate::base::manifest::Artifact>,
    Result<String>,
    Result<Vec<TableCount>>,
);

type Waiter = tokio_util::task::AbortOnDropHandle<Result<String>>;

impl Dump<'_, '_> {
    /// Store the dump while walking its archive in-process: whole or
    /// not, and the rows of each table as the archive holds them.
    async fn walked(
        &self,
        stdout: crate::services::pg::ExitChecked,
        waiter: Waiter,
        session: &mut SqlSession,
    ) -> Result<Dumped> {
        let walker = Arc::new(Mutex::new(custom_archive::Walker::new()));
        let feed = walker.clone();
        let stdout = tokio_util::io::InspectReader::new(stdout, move |bytes: &[u8]| {
            if let Ok(mut w) = feed.lock() {
                // The first error sticks in the walker; read on to the end.
                let _ = w.feed(bytes);
            }
        });
        let (stored, list) = tokio::join!(self.store(stdout), table_list(session));
        let dumped = waiter.await.map_err(|e| Error::task("pg_dump waiter", e))?;
        let walked = Arc::try_unwrap(walker)
            .ok()
            .and_then(|m| m.into_inner().ok())
            .ok_or_else(|| Error::Other("the archive walker is still in use".into()))?
            .finish();
        let tables = match (&stored, &dumped, walked) {
            (Ok(_), Ok(_), Ok(summary)) => {
                counted_tables(session, list?, &summary.table_rows(), self.max_count).await
            }
            (Ok(_), Ok(_), Err(e)) => Err(archive_error(e)),
            // The store's or pg_dump's own error explains it better.
            _ => Ok(Vec::new()),
        };
        Ok((stored, dumped, tables))
    }

    /// Store the dump while `pg_restore -f /dev/null` reads a copy (archive
    /// versions the walker does not read), counting rows with `count(*)`.
    async fn checked(
        &self,
        stdout: crate::services::pg::ExitChecked,
        waiter: Waiter,
        session: &mut SqlSession,
        check_tools: &PgTools,
    ) -> Result<Dumped> {
        let (stdout, copy) = crate::base::stream::tee(stdout, 8);
        let checker = crate::services::pg::archive::spawn_check(check_tools, copy).await?;
        let (stored, counts) =
            tokio::join!(self.store(stdout), count_rows(session, self.max_count));
        let dumped = waiter.await.map_err(|e| Error::task("pg_dump waiter", e))?;
        let checked = checker
            .await
            .map_err(|e| Error::task("archive check", e))
            .and_then(|r| r);
        let tables = match (&stored, &dumped) {
            (Ok(_), Ok(_)) => checked.and(counts),
            _ => Ok(Vec::new()),
        };
        Ok((stored, dumped, tables))
    }

    async fn store<R>(&self, stdout: R) -> Result<crate::base::manifest::Artifact>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        self.ctx
            .store(
                "database.dump",
                "pg_dump_custom",
                stdout,
                self.packing,
                self.hint,
                true,
            )
            .await
    }
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

/// How an archive that is not whole fails the run (the same words as the
/// `pg_restore` check's: the archive is incomplete).
fn archive_error(e: custom_archive::ArchiveError) -> Error {
    Error::Tool {
        tool: "pg_dump".into(),
        status: "its archive is incomplete".into(),
        stderr: e.to_string(),
    }
}

/// A table the manifest lists, with the tables whose rows its `count(*)`
/// sees: itself and every inheritance child or partition below it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    schema: String,
    name: String,
    bytes: i64,
    /// (schema, name, relkind) of itself and its descendants.
    members: Vec<(String, String, char)>,
}

/// The tables the manifest lists (ordinary and partitioned, not
/// partitions), read in the dump's snapshot.
async fn table_list(s: &mut SqlSession) -> Result<Vec<Listed>> {
    // Names hex-encoded: any character survives psql's line protocol and
    // the separators of the member list.
    let rows = s
        .rows(
            "WITH RECURSIVE listed AS (
               SELECT c.oid, n.nspname, c.relname, pg_total_relation_size(c.oid) AS bytes
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                 AND NOT c.relispartition
             ), tree(root, member) AS (
               SELECT oid, oid FROM listed
               UNION SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.member
             )
             SELECT encode(convert_to(l.nspname::text, 'UTF8'), 'hex'),
                    encode(convert_to(l.relname::text, 'UTF8'), 'hex'), l.bytes::text,
                    string_agg(encode(convert_to(mn.nspname::text, 'UTF8'), 'hex') || '.' ||
                               encode(convert_to(m.relname::text, 'UTF8'), 'hex') || '.' || m.relkind::text, ',')
             FROM listed l JOIN tree t ON t.root = l.oid
               JOIN pg_class m ON m.oid = t.member JOIN pg_namespace mn ON mn.oid = m.relnamespace
             GROUP BY l.nspname, l.relname, l.bytes
             ORDER BY l.nspname, l.relname",
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let members = text(3)
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| {
                    let mut parts = m.split('.');
                    let schema = unhex(parts.next().unwrap_or_default())?;
                    let name = unhex(parts.next().unwrap_or_default())?;
                    let kind = parts.next().and_then(|k| k.chars().next()).unwrap_or('?');
                    Ok((schema, name, kind))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Listed {
                schema: unhex(&text(0))?,
                name: unhex(&text(1))?,
                bytes: text(2).parse().unwrap_or(0),
                members,
            })
        })
        .collect()
}

fn unhex(h: &str) -> Result<String> {
    hex::decode(h)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Error::Other(format!("a table name that does not decode: {h}")))
}

/// A listed table's rows as the archive holds them: the sum over itself
/// and its descendants, when every one of them with storage has a COPY
/// block in the archive; `None` when one has not (a foreign table, an
/// extension's table pg_dump leaves out), which is then counted by SQL.
fn rows_from_archive(t: &Listed, rows: &HashMap<(String, String), u64>) -> Option<u64> {
    t.members
        .iter()
        .try_fold(0u64, |sum, (schema, name, kind)| match kind {
            'p' => Some(sum),
            'r' => rows.get(&(schema.clone(), name.clone())).map(|n| sum + n),
            _ => None,
        })
}

/// The manifest's tables: counted from the archive where it holds them,
/// else by `count(*)` in the dump's snapshot; tables above `max_bytes`
/// without a count.
async fn counted_tables(
    s: &mut SqlSession,
    list: Vec<Listed>,
    rows: &HashMap<(String, String), u64>,
    max_bytes: i64,
) -> Result<Vec<TableCount>> {
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let rows = if t.bytes > max_bytes {
            None
        } else if let Some(n) = rows_from_archive(&t, rows) {
            Some(i64::try_from(n).unwrap_or(i64::MAX))
        } else {
            count_one(s, &t.schema, &t.name).await?
        };
        out.push(TableCount {
            schema: t.schema,
            name: t.name,
            rows,
            bytes: t.bytes,
        });
    }
    Ok(out)
}

/// `count(*)` of one table in the snapshot; `None` (with a warning) when
/// it cannot be read.
async fn count_one(s: &mut SqlSession, schema: &str, name: &str) -> Result<Option<i64>> {
    let q = format!(
        "SELECT count(*)::text FROM {}.{}",
        quote_ident(schema),
        quote_ident(name)
    );
    // A savepoint keeps the snapshot alive if one table cannot be read.
    s.execute("SAVEPOINT drctl_count").await?;
    match s.scalar(&q).await {
        Ok(n) => {
            s.execute("RELEASE SAVEPOINT drctl_count").await?;
            Ok(n.and_then(|n| n.parse().ok()))
        }
        Err(e) => {
            tracing::warn!(table = %format!("{schema}.{name}"), error = %e, "cannot count rows");
            s.execute("ROLLBACK TO SAVEPOINT drctl_count").await?;
            Ok(None)
        }
    }
}

/// Exact row counts in the exporting transaction's snapshot. Tables above
/// `max_bytes` are listed without a count rather than scanned.
async fn count_rows(s: &mut SqlSession, max_bytes: i64) -> Result<Vec<TableCount>> {
    // Counting competes with pg_dump for the same cores; parallel workers
    // would only add contention (and their start-up) to a scan we overlap anyway.
    s.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        .await?;
    let list = table_list(s).await?;
    counted_tables(s, list, &HashMap::new(), max_bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(members: &[(&str, char)]) -> Listed {
        Listed {
            schema: "public".into(),
            name: members[0].0.into(),
            bytes: 0,
            members: members
                .iter()
                .map(|(n, k)| ("public".to_string(), n.to_string(), *k))
                .collect(),
        }
    }

    #[test]
    fn a_tables_rows_sum_its_own_and_its_descendants_blocks() {
        let rows: HashMap<(String, String), u64> =
            [("t", 3), ("t_2025", 5), ("t_2026", 7), ("child", 2)]
                .into_iter()
                .map(|(n, r)| (("public".to_string(), n.to_string()), r))
                .collect();
        // A plain table.
        assert_eq!(rows_from_archive(&listed(&[("t", 'r')]), &rows), Some(3));
        // A partitioned table: no rows of its own, the partitions' summed.
        let parted = listed(&[("p", 'p'), ("t_2025", 'r'), ("t_2026", 'r')]);
        assert_eq!(rows_from_archive(&parted, &rows), Some(12));
        // Inheritance: count(*) on the parent sees the child's rows too.
        assert_eq!(
            rows_from_archive(&listed(&[("t", 'r'), ("child", 'r')]), &rows),
            Some(5)
        );
        // A member without a block (not dumped) or a foreign one: SQL counts.
        assert_eq!(
            rows_from_archive(&listed(&[("t", 'r'), ("gone", 'r')]), &rows),
            None
        );
        assert_eq!(
            rows_from_archive(&listed(&[("t", 'r'), ("remote", 'f')]), &rows),
            None
        );
        // A partitioned table without partitions holds nothing.
        assert_eq!(rows_from_archive(&listed(&[("p", 'p')]), &rows), Some(0));
    }
}
