//! The `vacuum` kind: R1's monthly `VACUUM ANALYZE`, on the tables that need
//! it. Tables are chosen from `pg_stat_user_tables` the way autovacuum
//! would (dead tuples above a share of the table, rows modified since the
//! last analyze, transaction-ID age near wraparound), or listed, or all.
//! Each statement runs under `lock_timeout`/`statement_timeout`; a table
//! whose lock is held elsewhere is skipped and reported, the rest go on.
//! No new table starts outside `window`. Choosing reads only catalogs and
//! statistics (no locks); each table's exact size (`pg_table_size`, which
//! takes a lock) is read right before its VACUUM, under the same
//! `lock_timeout`, so a locked table is skipped at that point.

use crate::base::error::{Error, Result};
use crate::config::VacuumJob;
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
use crate::services::pg::quote_ident;
use crate::services::pg::{Failure, Session};
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

/// One table's statistics.
#[derive(Debug, Clone, Serialize)]
struct TableStats {
    name: String,
    dead: i64,
    live: i64,
    modified: i64,
    xid_age: i64,
    bytes: i64,
}

/// What happened to one table.
#[derive(Debug, Serialize)]
struct TableRun {
    table: String,
    why: String,
    statement: String,
    dead_before: i64,
    dead_after: Option<i64>,
    bytes_before: i64,
    bytes_after: Option<i64>,
    seconds: f64,
    result: String,
}

/// Statistics of user tables; `size` is `pg_table_size(c.oid)` (exact,
/// locks) or an estimate from `relpages` (no lock).
fn stats_sql(size: &str) -> String {
    format!(
        "SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname) AS name,
            s.n_dead_tup AS dead, s.n_live_tup AS live, s.n_mod_since_analyze AS modified,
            age(c.relfrozenxid)::bigint AS xid_age, {size} AS bytes, c.reltuples::float8 AS reltuples
       FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    )
}
const EXACT: &str = "pg_table_size(c.oid)";
const CATALOG: &str = "c.relpages::bigint * current_setting('block_size')::bigint";

fn stats_of(r: &sqlx::postgres::PgRow) -> std::result::Result<TableStats, sqlx::Error> {
    Ok(TableStats {
        name: r.try_get("name")?,
        dead: r.try_get("dead")?,
        live: r.try_get("live")?,
        modified: r.try_get("modified")?,
        xid_age: r.try_get("xid_age")?,
        bytes: r.try_get("bytes")?,
    })
}

/// One table's current statistics (None: it no longer exists).
async fn stats(
    s: &mut Session,
    name: &str,
    size: &str,
) -> std::result::Result<Option<TableStats>, Failure> {
    let classify = |e: sqlx::Error| crate::services::pg::maintenance_failure(&e);
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut s.conn)
        .await
        .map_err(classify)?;
    let row = sqlx::query(&format!(
        "{} WHERE s.relid = to_regclass($1)",
        stats_sql(size)
    ))
    .bind(name)
    .fetch_optional(&mut s.conn)
    .await
    .map_err(classify)?;
    row.as_ref().map(stats_of).transpose().map_err(classify)
}

/// `schema.table` or `table` (in `public`) -> a quoted name.
pub fn qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, rel)) => format!("{}.{}", quote_ident(schema), quote_ident(rel)),
        None => format!("public.{}", quote_ident(name)),
    }
}

/// The tables to process, most dead tuples first, each with its reason.
/// Why a table needs work (empty: it does not), from its statistics alone.
fn reasons(st: &TableStats, reltuples: f64, job: &VacuumJob) -> Vec<String> {
    let total = (st.live + st.dead).max(1) as f64;
    let mut why = Vec::new();
    if job.all {
        why.push("all tables".to_owned());
    }
    if st.dead >= job.min_dead_tuples as i64 && st.dead as f64 / total >= job.dead_ratio {
        why.push(format!(
            "{} dead tuples ({:.0}%)",
            st.dead,
            100.0 * st.dead as f64 / total
        ));
    }
    if job.analyze
        && st.modified >= job.min_dead_tuples as i64
        && st.modified as f64 >= job.analyze_ratio * reltuples.max(0.0)
    {
        why.push(format!(
            "{} rows modified since the last analyze",
            st.modified
        ));
    }
    if st.xid_age >= job.freeze_age {
        why.push(format!("relfrozenxid age {}", st.xid_age));
    }
    why
}

/// The statement for a chosen table: a table that only needs fresh
/// statistics gets ANALYZE, not VACUUM.
fn statement(job: &VacuumJob, why: &str, table: &str) -> String {
    let needs_vacuum = job.all
        || job.tables.is_some()
        || why.contains("dead tuples")
        || why.contains("relfrozenxid");
    if !needs_vacuum {
        return format!("ANALYZE {table}");
    }
    let mut opts = Vec::new();
    if job.full {
        opts.push("FULL");
    }
    if job.analyze {
        opts.push("ANALYZE");
    }
    if opts.is_empty() {
        format!("VACUUM {table}")
    } else {
        format!("VACUUM ({}) {table}", opts.join(", "))
    }
}

async fn choose(
    s: &mut Session,
    job: &VacuumJob,
) -> Result<(Vec<(TableStats, String)>, Vec<Finding>)> {
    let mut missing = Vec::new();
    if let Some(list) = &job.tables {
        let mut out = Vec::new();
        for t in list {
            let found = stats(s, &qualified(t), CATALOG)
                .await
                .map_err(|f| Error::pg(format!("reading statistics of {t}"), format!("{f:?}")))?;
            match found {
                Some(st) => out.push((st, "listed".to_owned())),
                None => missing.push(Finding::new(
                    t.as_str(),
                    Level::Warning,
                    "no such table (listed in `tables`)",
                )),
            }
        }
        return Ok((out, missing));
    }
    let rows = sqlx::query(&format!(
        "{} ORDER BY s.n_dead_tup DESC, 1",
        stats_sql(CATALOG)
    ))
    .fetch_all(&mut s.conn)
    .await
    .map_err(|e| Error::pg("reading pg_stat_user_tables", e))?;
    let mut out = Vec::new();
    for r in &rows {
        let st = stats_of(r).map_err(|e| Error::pg("reading pg_stat_user_tables", e))?;
        let reltuples: f64 = r.try_get("reltuples").unwrap_or(0.0);
        let why = reasons(&st, reltuples, job);
        if !why.is_empty() {
            out.push((st, why.join(", ")));
        }
    }
    Ok((out, missing))
}

/// VACUUM (or ANALYZE) one chosen table and measure it before and after;
/// None when it vanished since it was chosen. A lock or statement timeout
/// is a warning finding and a run with that result, never an error.
async fn vacuum_one(
    s: &mut Session,
    job: &VacuumJob,
    chosen: &TableStats,
    why: String,
    report: &mut Report,
) -> Option<TableRun> {
    // Fresh numbers and the exact size; a table locked elsewhere stops here.
    let before = match stats(s, &chosen.name, EXACT).await {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(f) => {
            let msg = f.describe(job.session.lock_timeout, job.session.statement_timeout);
            report.findings.push(Finding::new(
                chosen.name.as_str(),
                Level::Warning,
                msg.clone(),
            ));
            return Some(TableRun {
                table: chosen.name.clone(),
                why,
                statement: String::new(),
                dead_before: chosen.dead,
                dead_after: None,
                bytes_before: chosen.bytes,
                bytes_after: None,
                seconds: 0.0,
                result: msg,
            });
        }
    };
    let statement = statement(job, &why, &before.name);
    let started = std::time::Instant::now();
    let outcome = s.exec(&statement).await;
    let seconds = started.elapsed().as_secs_f64();
    let after = match &outcome {
        Ok(()) => stats(s, &before.name, EXACT).await.ok().flatten(),
        Err(_) => None,
    };
    let result = match &outcome {
        Ok(()) => "ok".to_owned(),
        Err(f) => {
            let msg = f.describe(job.session.lock_timeout, job.session.statement_timeout);
            report.findings.push(Finding::new(
                before.name.as_str(),
                Level::Warning,
                msg.clone(),
            ));
            msg
        }
    };
    if let Some(a) = &after {
        report.findings.push(Finding::new(
            before.name.as_str(),
            Level::Ok,
            format!("{statement}: dead tuples {} -> {}", before.dead, a.dead),
        ));
    }
    Some(TableRun {
        table: before.name.clone(),
        why,
        statement,
        dead_before: before.dead,
        dead_after: after.as_ref().map(|a| a.dead),
        bytes_before: before.bytes,
        bytes_after: after.as_ref().map(|a| a.bytes),
        seconds,
        result,
    })
}

/// Vacuum the chosen tables, within the window.
pub async fn run(ctx: &CheckCtx<'_>, job: &VacuumJob) -> Result<Report> {
    let mut s = Session::open(
        job.session
            .spec(&job.connection, ctx.common.timezone.as_ref()),
        "drctl vacuum",
    )
    .await?;
    let mut report = Report::new(ctx.job, "vacuum");
    let (tables, missing) = choose(&mut s, job).await?;
    report.findings.extend(missing);
    let mut runs = Vec::new();
    let mut removed: i64 = 0;
    let mut not_started = Vec::new();
    for (chosen, why) in tables {
        if ctx.cancel.is_cancelled() {
            break;
        }
        if !s.window_open() {
            not_started.push(chosen.name.clone());
            continue;
        }
        if let Some(run) = vacuum_one(&mut s, job, &chosen, why, &mut report).await {
            if let Some(after) = run.dead_after {
                removed += (run.dead_before - after).max(0);
            }
            runs.push(run);
        }
    }
    let target = s.target.display();
    s.close().await;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted(format!(
            "vacuum job {} cancelled",
            ctx.job
        )));
    }
    let done = runs.iter().filter(|r| r.result == "ok").count();
    let skipped = runs.len() - done;
    report.summary = format!(
        "{done} tables vacuumed or analyzed on {target}, {removed} dead tuples removed{}{}",
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        },
        if not_started.is_empty() {
            String::new()
        } else {
            format!(", {} left for the next window", not_started.len())
        }
    );
    report.samples.push(Sample::counter(
        "drctl_vacuum_dead_tuples_removed",
        &[("job", ctx.job)],
        removed as f64,
    ));
    report.details = json!({
        "database": target,
        "tables": runs,
        "dead_tuples_removed": removed,
        "outside_window": not_started,
    });
    Ok(report)
}

#[cfg(test)]
mod choice {
    use super::*;

    fn job(extra: &str) -> VacuumJob {
        toml::from_str(&format!("url = \"postgres://app@127.0.0.1/app\"\n{extra}")).unwrap()
    }
    fn st(dead: i64, live: i64, modified: i64, xid_age: i64) -> TableStats {
        TableStats {
            name: "public.t".into(),
            dead,
            live,
            modified,
            xid_age,
            bytes: 0,
        }
    }

    #[test]
    fn which_tables_need_work_and_what_statement_they_get() {
        let j = job("");
        // (stats, reltuples) -> the reasons' first words
        let cases: [(TableStats, f64, Vec<&str>); 6] = [
            (st(0, 100_000, 0, 0), 100_000.0, vec![]),
            // Enough dead tuples and a high enough share.
            (st(20_000, 80_000, 0, 0), 80_000.0, vec!["20000"]),
            // Many dead tuples, but under 10 % of the table.
            (st(5_000, 1_000_000, 0, 0), 1_000_000.0, vec![]),
            // A high share of very few tuples (under min_dead_tuples).
            (st(50, 50, 0, 0), 50.0, vec![]),
            // Only stale statistics.
            (st(0, 100_000, 20_000, 0), 100_000.0, vec!["20000"]),
            // Wraparound protection, whatever the rest says.
            (st(0, 10, 0, 200_000_000), 10.0, vec!["relfrozenxid"]),
        ];
        for (stats, reltuples, want) in cases {
            let got = reasons(&stats, reltuples, &j);
            let first: Vec<&str> = got
                .iter()
                .map(|r| r.split(' ').next().unwrap_or(""))
                .collect();
            assert_eq!(first, want, "{stats:?}");
        }
        assert_eq!(
            statement(&j, "20000 rows modified since the last analyze", "public.t"),
            "ANALYZE public.t"
        );
        assert_eq!(
            statement(&j, "20000 dead tuples (20%)", "public.t"),
            "VACUUM (ANALYZE) public.t"
        );
        assert_eq!(
            statement(&job("full = true"), "relfrozenxid age 1", "t"),
            "VACUUM (FULL, ANALYZE) t"
        );
        assert_eq!(
            statement(&job("analyze = false\nall = true"), "all tables", "t"),
            "VACUUM t"
        );
    }
}
