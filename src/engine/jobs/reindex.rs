//! The `reindex` kind: R1's monthly `REINDEX DATABASE`, without its
//! exclusive locks: `REINDEX INDEX CONCURRENTLY` on the btree indexes whose
//! estimated bloat is above `bloat_ratio` (or listed ones, or all).
//!
//! The estimate compares an index's pages with the pages its rows need at
//! its fillfactor, from `pg_stats` widths (the approach of the widely used
//! ioguix btree-bloat query, simplified: leaf tuples only). Expression
//! columns have no statistics, so those indexes are never guessed at.
//!
//! An interrupted concurrent reindex leaves an invalid `<name>_ccnew`
//! (or `_ccold`) index that costs writes forever; those are dropped
//! (`DROP INDEX CONCURRENTLY`) before and after the run. Other invalid
//! indexes (a failed `CREATE INDEX CONCURRENTLY`) are reported, not touched.

use crate::base::error::{Error, Result};
use crate::config::ReindexJob;
use crate::engine::jobs::vacuum::qualified;
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
use crate::services::pg::Session;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

const ESTIMATE: &str = r#"
WITH idx AS (
  SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
         n.nspname, t.relname AS tblname, i.indrelid, i.indkey::int2[] AS keys,
         c.relpages::bigint AS relpages, greatest(c.reltuples, 0)::float8 AS reltuples,
         c.relpages::bigint * current_setting('block_size')::bigint AS bytes,
         coalesce(substring(array_to_string(c.reloptions, ' ') from 'fillfactor=([0-9]+)')::int, 90) AS fillfactor,
         current_setting('block_size')::int AS bs
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_am a ON a.oid = c.relam
   WHERE a.amname = 'btree' AND i.indisvalid AND c.relpages > 0
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
), widths AS (
  SELECT idx.oid, sum(s.avg_width)::float8 AS width, bool_and(s.avg_width IS NOT NULL) AS known
    FROM idx
    CROSS JOIN LATERAL unnest(idx.keys) AS k(attnum)
    LEFT JOIN pg_attribute att ON att.attrelid = idx.indrelid AND att.attnum = k.attnum AND k.attnum > 0
    LEFT JOIN pg_stats s ON s.schemaname = idx.nspname AND s.tablename = idx.tblname AND s.attname = att.attname
   GROUP BY idx.oid
)
SELECT idx.name, idx.bytes, idx.relpages,
       CASE WHEN w.known THEN
         ceil(idx.reltuples * (ceil((8 + w.width) / 8.0) * 8 + 4)
              / ((idx.bs - 24 - 16) * idx.fillfactor / 100.0))::bigint + 1
       END AS expected_pages
  FROM idx JOIN widths w ON w.oid = idx.oid
 ORDER BY idx.bytes DESC
"#;

const INVALID: &str = "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, c.relname,
        c.relpages::bigint * current_setting('block_size')::bigint AS bytes
   FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

#[derive(Debug, Serialize)]
struct IndexRun {
    index: String,
    why: String,
    bytes_before: i64,
    bytes_after: Option<i64>,
    seconds: f64,
    result: String,
}

#[derive(Debug, Serialize)]
struct Dropped {
    index: String,
    bytes: i64,
    result: String,
}

/// Is `relname` what an interrupted REINDEX CONCURRENTLY leaves behind?
pub fn is_reindex_leftover(relname: &str) -> bool {
    ["_ccnew", "_ccold"].iter().any(|suffix| {
        relname.rfind(suffix).is_some_and(|at| {
            relname[at + suffix.len()..]
                .chars()
                .all(|c| c.is_ascii_digit())
        })
    })
}

/// Drop `_ccnew`/`_ccold` leftovers; report other invalid indexes.
async fn sweep_invalid(
    s: &mut Session,
    job: &ReindexJob,
    dropped: &mut Vec<Dropped>,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let rows = sqlx::query(INVALID)
        .fetch_all(&mut s.conn)
        .await
        .map_err(|e| Error::pg("listing invalid indexes", e))?;
    for r in rows {
        let name: String = r
            .try_get("name")
            .map_err(|e| Error::pg("listing invalid indexes", e))?;
        let relname: String = r
            .try_get("relname")
            .map_err(|e| Error::pg("listing invalid indexes", e))?;
        let bytes: i64 = r.try_get("bytes").unwrap_or(0);
        // The second sweep of a run sees what the first already reported.
        if findings.iter().any(|f| f.subject == name) {
            continue;
        }
        if !is_reindex_leftover(&relname) {
            findings.push(Finding::new(
                name.as_str(),
                Level::Warning,
                "invalid index (a failed CREATE INDEX CONCURRENTLY?): it slows writes and serves no query; drop and recreate it",
            ));
            continue;
        }
        if !job.drop_invalid || dropped.iter().any(|d| d.index == name) {
            continue;
        }
        let result = match s
            .exec(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await
        {
            Ok(()) => "dropped".to_owned(),
            Err(f) => {
                let m = f.describe(job.session.lock_timeout, job.session.statement_timeout);
                findings.push(Finding::new(
                    name.as_str(),
                    Level::Warning,
                    format!("invalid leftover of an interrupted REINDEX CONCURRENTLY could not be dropped: {m}"),
                ));
                m
            }
        };
        dropped.push(Dropped {
            index: name,
            bytes,
            result,
        });
    }
    Ok(())
}

async fn size_of(s: &mut Session, name: &str) -> Option<i64> {
    // From the catalog: pg_relation_size() would wait behind lock holders.
    sqlx::query_scalar(
        "SELECT c.relpages::bigint * current_setting('block_size')::bigint FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
        .bind(name)
        .fetch_optional(&mut s.conn)
        .await
        .ok()
        .flatten()
}

/// Why an index of `bytes` and `pages` (about `expected` needed) is rebuilt,
/// or None: every index with `all`, else one at least `min_size` whose
/// estimated bloat reaches `bloat_ratio` (no estimate: left alone).
fn why_reindex(job: &ReindexJob, bytes: i64, pages: i64, expected: Option<i64>) -> Option<String> {
    if job.all {
        return Some("all indexes".into());
    }
    let expected = expected?;
    if (bytes as u64) < job.min_size.as_u64() || pages <= 0 {
        return None;
    }
    let bloat = 1.0 - (expected as f64 / pages as f64).min(1.0);
    (bloat >= job.bloat_ratio).then(|| {
        format!(
            "estimated bloat {:.0}% ({pages} pages, about {expected} needed)",
            bloat * 100.0
        )
    })
}

/// The indexes to rebuild, each with its size and why: the listed ones
/// (a missing one is a finding), or those whose estimated bloat passes
/// `why_reindex`. Reads catalogs and statistics only.
async fn choose(
    s: &mut Session,
    job: &ReindexJob,
    findings: &mut Vec<Finding>,
) -> Result<Vec<(String, i64, String)>> {
    let mut chosen: Vec<(String, i64, String)> = Vec::new();
    if let Some(list) = &job.indexes {
        for i in list {
            let name = qualified(i);
            match size_of(s, &name).await {
                Some(b) => chosen.push((name, b, "listed".into())),
                None => findings.push(Finding::new(
                    i.as_str(),
                    Level::Warning,
                    "no such index (listed in `indexes`)",
                )),
            }
        }
    } else {
        let rows = sqlx::query(ESTIMATE)
            .fetch_all(&mut s.conn)
            .await
            .map_err(|e| Error::pg("estimating index bloat", e))?;
        for r in rows {
            let name: String = r
                .try_get("name")
                .map_err(|e| Error::pg("estimating index bloat", e))?;
            let bytes: i64 = r.try_get("bytes").unwrap_or(0);
            let pages: i64 = r.try_get("relpages").unwrap_or(0);
            let expected: Option<i64> = r.try_get("expected_pages").unwrap_or(None);
            if let Some(why) = why_reindex(job, bytes, pages, expected) {
                chosen.push((name, bytes, why));
            }
        }
    }
    Ok(chosen)
}

/// Rebuild the chosen indexes concurrently, within the window.
pub async fn run(ctx: &CheckCtx<'_>, job: &ReindexJob) -> Result<Report> {
    let mut s = Session::open(
        job.session
            .spec(&job.connection, ctx.common.timezone.as_ref()),
        "drctl reindex",
    )
    .await?;
    let mut report = Report::new(ctx.job, "reindex");
    let mut dropped = Vec::new();
    sweep_invalid(&mut s, job, &mut dropped, &mut report.findings).await?;

    let chosen = choose(&mut s, job, &mut report.findings).await?;

    let mut runs = Vec::new();
    let mut not_started = Vec::new();
    let mut freed: i64 = 0;
    for (name, before, why) in chosen {
        if ctx.cancel.is_cancelled() {
            break;
        }
        if !s.window_open() {
            not_started.push(name);
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = s.exec(&format!("REINDEX INDEX CONCURRENTLY {name}")).await;
        let seconds = started.elapsed().as_secs_f64();
        let (after, result) = match outcome {
            Ok(()) => {
                let after = size_of(&mut s, &name).await;
                if let Some(a) = after {
                    freed += (before - a).max(0);
                }
                (after, "ok".to_owned())
            }
            Err(f) => {
                let m = f.describe(job.session.lock_timeout, job.session.statement_timeout);
                report
                    .findings
                    .push(Finding::new(name.as_str(), Level::Warning, m.clone()));
                (None, m)
            }
        };
        runs.push(IndexRun {
            index: name,
            why,
            bytes_before: before,
            bytes_after: after,
            seconds,
            result,
        });
    }
    // A reindex that failed above (lock_timeout while waiting for old
    // transactions) leaves its _ccnew behind: clean it now, not next month.
    if runs.iter().any(|r| r.result != "ok") {
        sweep_invalid(&mut s, job, &mut dropped, &mut report.findings).await?;
    }
    let target = s.target.display();
    s.close().await;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted(format!(
            "reindex job {} cancelled",
            ctx.job
        )));
    }
    let done = runs.iter().filter(|r| r.result == "ok").count();
    let leftovers = dropped.iter().filter(|d| d.result == "dropped").count();
    report.summary = format!(
        "{done} of {} indexes rebuilt on {target}, {} freed, {leftovers} invalid leftovers dropped{}",
        runs.len(),
        bytesize::ByteSize(freed.max(0) as u64),
        if not_started.is_empty() {
            String::new()
        } else {
            format!(", {} left for the next window", not_started.len())
        }
    );
    report.bytes = Some(freed.max(0) as u64);
    report.samples.push(Sample::counter(
        "drctl_reindex_bytes_freed",
        &[("job", ctx.job)],
        freed.max(0) as f64,
    ));
    report.details = json!({
        "database": target,
        "indexes": runs,
        "invalid_dropped": dropped,
        "outside_window": not_started,
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::why_reindex;

    #[test]
    fn which_indexes_are_rebuilt() {
        let job = |extra: &str| -> crate::config::ReindexJob {
            toml::from_str(&format!("url = \"postgres://app@127.0.0.1/app\"\n{extra}")).unwrap()
        };
        let j = job("min_size = \"1MiB\"\nbloat_ratio = 0.3");
        let mib = 1 << 20;
        // (bytes, pages, expected) -> rebuilt
        let cases = [
            (10 * mib, 1000, Some(500), true),   // 50 % bloat
            (10 * mib, 1000, Some(700), true),   // exactly 30 %
            (10 * mib, 1000, Some(800), false),  // 20 %
            (mib / 2, 1000, Some(100), false),   // bloated but small
            (10 * mib, 1000, None, false),       // no estimate
            (10 * mib, 0, Some(0), false),       // empty
            (10 * mib, 1000, Some(5000), false), // estimate above size
        ];
        for (bytes, pages, expected, want) in cases {
            assert_eq!(
                why_reindex(&j, bytes, pages, expected).is_some(),
                want,
                "{bytes} {pages} {expected:?}"
            );
        }
        assert_eq!(
            why_reindex(&job("all = true"), 1, 0, None).as_deref(),
            Some("all indexes")
        );
    }

    #[test]
    fn leftover_names() {
        for yes in ["orders_pkey_ccnew", "orders_pkey_ccnew1", "i_ccold12"] {
            assert!(super::is_reindex_leftover(yes), "{yes}");
        }
        for no in ["orders_pkey", "ccnew_table_idx", "x_ccnewer"] {
            assert!(!super::is_reindex_leftover(no), "{no}");
        }
    }
}
