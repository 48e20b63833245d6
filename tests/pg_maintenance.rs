//! PostgreSQL maintenance jobs against a real cluster: vacuum (dead tuples,
//! lock timeouts, windows) and reindex (bloat, invalid `_ccnew` leftovers).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------- vacuum

/// A psql session kept open (holding a lock or a snapshot) until dropped;
/// its backend is terminated then (a backend in pg_sleep does not notice
/// its client is gone, and an idle one would wait for psql's stdin).
struct Session {
    child: std::process::Child,
    db: String,
    name: String,
}

impl Session {
    fn open(db: &str, sql: &str) -> Session {
        use std::io::Write;
        let name = unique("holder");
        let mut c = Command::new(pg_bin("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &pg().url(db)])
            .env("PGAPPNAME", &name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(c.stdin.as_mut().unwrap(), "{sql}").unwrap();
        Session {
            child: c,
            db: db.to_owned(),
            name,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        pg().psql(
            &self.db,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
                self.name
            ),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn vacuum_lowers_dead_tuples_and_gives_up_on_a_locked_table_after_lock_timeout() {
    let pg = pg();
    let db = pg.create_db("vac");
    for t in ["busy", "locked"] {
        pg.psql(
            &db,
            &format!(
                "CREATE TABLE {t} (id int, pad text) WITH (autovacuum_enabled = false);
                 INSERT INTO {t} SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g;
                 DELETE FROM {t} WHERE id % 4 <> 0;"
            ),
        );
    }
    // A clean table that needs nothing.
    pg.psql(
        &db,
        "CREATE TABLE clean (id int); INSERT INTO clean VALUES (1);",
    );
    pg.psql(&db, "VACUUM ANALYZE clean");
    wait_until(
        Duration::from_secs(20),
        "dead tuples in the statistics",
        || dead_tuples(pg, &db, "busy") >= 15000 && dead_tuples(pg, &db, "locked") >= 15000,
    );
    // The holder sits idle in its transaction rather than in pg_sleep: a
    // running statement keeps a snapshot whose xmin may predate the DELETE
    // (when another test's transaction was open at that moment), and that
    // would keep VACUUM from removing busy's dead tuples too.
    let holder = Session::open(&db, "BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE;");
    wait_until(Duration::from_secs(20), "the lock to be held", || {
        pg.psql(&db, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'locked' AND l.mode = 'AccessExclusiveLock' AND l.granted") == "1"
    });
    let mut w = World::new(
        "[jobs.vacuum-appdb]\ntype = \"vacuum\"\nurl_env = \"APP_DATABASE_URL\"\nlock_timeout = \"1s\"\nschedule = \"0 0 3 1 * *\"\n",
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));

    let started = std::time::Instant::now();
    let (code, v, stderr) = run_json(&w, "vacuum-appdb");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited behind the lock"
    );
    assert_eq!(code, 7, "a skipped table is a warning: {stderr}");
    assert!(
        stderr.contains("locked") && stderr.contains("lock_timeout"),
        "{stderr}"
    );
    // The vacuuming session flushes its statistics a moment after it ends.
    wait_until(Duration::from_secs(10), "busy to be vacuumed", || {
        dead_tuples(pg, &db, "busy") < 100
    });
    assert!(
        dead_tuples(pg, &db, "locked") >= 15000,
        "locked was left alone"
    );
    let tables = v["details"]["tables"].as_array().unwrap();
    let names: Vec<&str> = tables
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("clean")),
        "clean needs nothing: {names:?}"
    );
    let busy = tables.iter().find(|t| t["table"] == "public.busy").unwrap();
    assert!(busy["dead_before"].as_i64().unwrap() >= 15000, "{busy}");
    assert!(busy["dead_after"].as_i64().unwrap() < 100, "{busy}");
    assert!(busy["bytes_before"].as_i64().unwrap() > 0, "{busy}");
    assert!(
        busy["statement"]
            .as_str()
            .unwrap()
            .starts_with("VACUUM (ANALYZE)"),
        "{busy}"
    );
    assert!(v["details"]["dead_tuples_removed"].as_i64().unwrap() >= 15000);
    assert_eq!(finding(&v, "locked")["level"], "warning");
    assert!(active_alerts(&w).contains(&"vacuum:vacuum-appdb:public.locked".to_string()));

    // The lock goes away: the next run vacuums it and the alert resolves.
    drop(holder);
    let (code, _, stderr) = run_json(&w, "vacuum-appdb");
    assert_eq!(code, 0, "{stderr}");
    assert!(dead_tuples(pg, &db, "locked") < 100);
    assert!(active_alerts(&w).is_empty());
}

#[test]
fn vacuum_outside_its_window_starts_nothing() {
    let pg = pg();
    let db = pg.create_db("vacwin");
    pg.psql(
        &db,
        "CREATE TABLE t (id int) WITH (autovacuum_enabled = false);
         INSERT INTO t SELECT generate_series(1, 5000); DELETE FROM t;",
    );
    wait_until(Duration::from_secs(20), "dead tuples", || {
        dead_tuples(pg, &db, "t") >= 5000
    });
    // A one-minute window twelve hours from now.
    let now = chrono::Utc::now() + chrono::Duration::hours(12);
    let end = now + chrono::Duration::minutes(1);
    let mut w = World::new(&format!(
        "[jobs.vac]\ntype = \"vacuum\"\nurl_env = \"APP_DATABASE_URL\"\nwindow = \"{}-{}\"\n",
        now.format("%H:%M"),
        end.format("%H:%M")
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let (code, v, stderr) = run_json(&w, "vac");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["details"]["outside_window"][0], "public.t", "{v:#}");
    assert!(dead_tuples(pg, &db, "t") >= 5000);
}

// ---------------------------------------------------------------- reindex

fn index_bytes(pg: &Pg, db: &str, index: &str) -> i64 {
    pg.psql(db, &format!("SELECT pg_relation_size('{index}')"))
        .parse()
        .unwrap()
}

#[test]
fn reindex_shrinks_a_bloated_index_and_cleans_an_invalid_ccnew_leftover() {
    let pg = pg();
    let db = pg.create_db("reidx");
    pg.psql(
        &db,
        "CREATE TABLE r (id int, tag text) WITH (autovacuum_enabled = false);
         INSERT INTO r SELECT g, 't' || (g % 7) FROM generate_series(1, 200000) g;
         CREATE INDEX r_id ON r (id);
         CREATE INDEX r_tag ON r (tag);
         CREATE TABLE fresh (id int PRIMARY KEY);
         INSERT INTO fresh SELECT generate_series(1, 50000);
         DELETE FROM r WHERE id % 10 <> 0;",
    );
    pg.psql(&db, "VACUUM ANALYZE r");
    pg.psql(&db, "ANALYZE fresh");
    // An interrupted REINDEX CONCURRENTLY: it waits for an older snapshot,
    // its lock_timeout fires and r_tag_ccnew stays behind, invalid.
    let snapshot = Session::open(
        &db,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM fresh; SELECT pg_sleep(600);",
    );
    wait_until(Duration::from_secs(20), "the snapshot holder", || {
        pg.psql(&db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()") == "1"
    });
    let out = Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url(&db),
            "-c",
            "SET lock_timeout = '500ms'",
            "-c",
            "REINDEX INDEX CONCURRENTLY r_tag",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    drop(snapshot);
    assert_eq!(
        pg.psql(&db, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid"),
        "r_tag_ccnew"
    );
    // An invalid index that is not a reindex leftover: reported, not dropped.
    let out = Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url(&db),
            "-c",
            "CREATE UNIQUE INDEX CONCURRENTLY r_tag_unique ON r (tag)",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "duplicates make it fail");

    let before = index_bytes(pg, &db, "r_id");
    let fresh_before = index_bytes(pg, &db, "fresh_pkey");
    let mut w = World::new(
        "[jobs.reindex-appdb]\ntype = \"reindex\"\nurl_env = \"APP_DATABASE_URL\"\nmin_size = \"64KiB\"\nschedule = \"0 30 3 1 * *\"\n",
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let (code, v, stderr) = run_json(&w, "reindex-appdb");
    assert_eq!(code, 7, "the invalid unique index is a warning: {stderr}");
    assert!(stderr.contains("r_tag_unique"), "{stderr}");

    let after = index_bytes(pg, &db, "r_id");
    assert!(after * 3 < before, "r_id {before} -> {after} bytes: {v:#}");
    assert_eq!(
        index_bytes(pg, &db, "fresh_pkey"),
        fresh_before,
        "a dense index is left alone"
    );
    let rebuilt: Vec<&str> = v["details"]["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_str().unwrap())
        .collect();
    assert!(rebuilt.contains(&"public.r_id"), "{rebuilt:?}");
    assert!(!rebuilt.contains(&"public.fresh_pkey"), "{rebuilt:?}");
    let r_id = &v["details"]["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["index"] == "public.r_id")
        .unwrap()
        .clone();
    assert!(r_id["bytes_after"].as_i64().unwrap() < r_id["bytes_before"].as_i64().unwrap());
    assert_eq!(
        v["details"]["invalid_dropped"][0]["index"], "public.r_tag_ccnew",
        "{v:#}"
    );
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(c.relname, ',') FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid"),
        "r_tag_unique",
        "the leftover is gone, the other invalid index stays"
    );
    // The table still answers through the rebuilt index.
    assert_eq!(
        pg.psql(
            &db,
            "SET enable_seqscan = off; SELECT count(*) FROM r WHERE id BETWEEN 1 AND 1000"
        ),
        "100"
    );
}

#[test]
fn a_reindex_stopped_by_lock_timeout_reports_its_leftover_and_the_next_run_cleans_up() {
    let pg = pg();
    let db = pg.create_db("reidxfail");
    pg.psql(
        &db,
        "CREATE TABLE r (id int) WITH (autovacuum_enabled = false);
         INSERT INTO r SELECT generate_series(1, 200000);
         CREATE INDEX r_id ON r (id);
         DELETE FROM r WHERE id % 10 <> 0;",
    );
    pg.psql(&db, "VACUUM ANALYZE r");
    // An old snapshot REINDEX CONCURRENTLY must wait for, past lock_timeout.
    let snapshot = Session::open(
        &db,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM r; SELECT pg_sleep(600);",
    );
    wait_until(Duration::from_secs(20), "the snapshot holder", || {
        pg.psql(&db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()") == "1"
    });
    let before = index_bytes(pg, &db, "r_id");
    let mut w = World::new(
        "[jobs.reindex]\ntype = \"reindex\"\nurl_env = \"APP_DATABASE_URL\"\nmin_size = \"64KiB\"\nlock_timeout = \"500ms\"\n",
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let (code, v, stderr) = run_json(&w, "reindex");
    drop(snapshot);
    assert_eq!(code, 7, "{stderr}");
    assert!(
        stderr.contains("public.r_id") && stderr.contains("lock_timeout"),
        "{stderr}"
    );
    // The blocker still reads r, so dropping the leftover must wait too: it
    // is tried, reported, and left for the next run.
    let leftover = &v["details"]["invalid_dropped"][0];
    assert_eq!(leftover["index"], "public.r_id_ccnew", "{v:#}");
    assert!(
        leftover["result"]
            .as_str()
            .unwrap()
            .contains("lock_timeout"),
        "{leftover}"
    );
    assert_eq!(finding(&v, "r_id_ccnew")["level"], "warning");
    assert_eq!(
        index_bytes(pg, &db, "r_id"),
        before,
        "the original index is intact"
    );

    // Blocker gone: the next run drops the leftover and rebuilds the index.
    let (code, v, stderr) = run_json(&w, "reindex");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        v["details"]["invalid_dropped"][0]["result"], "dropped",
        "{v:#}"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        "0"
    );
    assert!(index_bytes(pg, &db, "r_id") * 3 < before);
    assert!(active_alerts(&w).is_empty(), "resolved");
}
