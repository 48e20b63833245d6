//! Maintenance and check jobs against real components: PostgreSQL (vacuum,
//! reindex, health), a generated file tree (prune_files), certificates made
//! here with rcgen served by a real rustls server (cert_expiry), HTTP, TCP,
//! Redis and command probes (health), the real root mount (disk), and the
//! daemon's /metrics for what `drctl run` recorded.

mod common;

use common::receivers::{serve_on_loopback, HttpReceiver};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

fn run_json(w: &World, job: &str) -> (i32, Value, String) {
    let r = w.drctl(&["run", job, "--json"]);
    let v = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    (r.code, v, r.stderr)
}

/// `drctl config check` on `body` must fail with exit 2; its stderr.
fn config_error(body: &str) -> String {
    let r = World::new(body).drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    r.stderr
}

fn finding<'a>(v: &'a Value, subject_part: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"].as_str().unwrap().contains(subject_part))
        .unwrap_or_else(|| panic!("no finding about {subject_part} in {v:#}"))
}

fn active_alerts(w: &World) -> Vec<String> {
    let r = w.drctl(&["alerts", "--json"]);
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------- vacuum

/// A psql session kept open (holding a lock or a snapshot) until dropped;
/// its backend is terminated then (a backend in pg_sleep does not notice
/// its client is gone).
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

fn dead_tuples(pg: &Pg, db: &str, table: &str) -> i64 {
    pg.psql(
        db,
        &format!("SELECT pg_stat_clear_snapshot(); SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = '{table}'"),
    )
    .lines()
    .last()
    .unwrap()
    .trim()
    .parse()
    .unwrap()
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
    let holder = Session::open(
        &db,
        "BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
    );
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
    assert!(dead_tuples(pg, &db, "busy") < 100, "busy was vacuumed");
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

// ---------------------------------------------------------------- prune_files

fn file_at(path: &Path, bytes: usize, days_old: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![b'x'; bytes]).unwrap();
    let t = SystemTime::now() - Duration::from_secs_f64(days_old * 86400.0);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn names_under(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn prune_files_keeps_the_right_files_and_never_leaves_its_root() {
    let dir = scratch_dir("drctl-prune-");
    let logs = dir.join("logs");
    let outside = dir.join("outside");
    for (name, days) in [
        ("app/a.log", 40.0),
        ("app/b.log", 35.0),
        ("app/c.log", 31.0),
        ("app/d.log", 20.0),
        ("app/e.log", 1.0),
    ] {
        file_at(&logs.join(name), 100, days);
    }
    // keep_last = 2 keeps both old files of web/ (the newest two of their directory).
    file_at(&logs.join("web/old1.log"), 100, 90.0);
    file_at(&logs.join("web/old2.log"), 100, 80.0);
    file_at(&logs.join("web/old3.log"), 100, 70.0);
    file_at(&logs.join("app/keep.txt"), 100, 100.0); // not matched by the glob
    file_at(&outside.join("secret.log"), 100, 400.0);
    file_at(&outside.join("deep/other.log"), 100, 400.0);
    std::os::unix::fs::symlink(&outside, logs.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.log"), logs.join("app/link.log")).unwrap();

    let w = World::new(&format!(
        "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"{}/**/*.log\"]\nolder_than = \"30d\"\nkeep_last = 2\nschedule = \"0 0 4 * * *\"\n[jobs.logs-dry]\ntype = \"prune_files\"\npaths = [\"{}/**/*.log\"]\nolder_than = \"30d\"\nkeep_last = 2\ndry_run = true\n",
        logs.display(),
        logs.display()
    ));
    let before = names_under(&logs);
    let (code, v, stderr) = run_json(&w, "logs-dry");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names_under(&logs), before, "dry_run changes nothing");
    assert_eq!(
        v["details"]["deleted"].as_array().unwrap().len(),
        4,
        "{v:#}"
    );

    let (code, v, stderr) = run_json(&w, "logs");
    assert_eq!(code, 0, "{stderr}");
    // An independent statement of what must remain.
    assert_eq!(
        names_under(&logs),
        vec![
            "app/d.log",
            "app/e.log",
            "app/keep.txt",
            "app/link.log",
            "escape",
            "web/old2.log",
            "web/old3.log"
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    );
    assert!(outside.join("secret.log").exists() && outside.join("deep/other.log").exists());
    assert!(std::fs::symlink_metadata(logs.join("escape"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(v["details"]["bytes_freed"], 400);
    assert_eq!(v["bytes"], 400);
    let deleted: Vec<&str> = v["details"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        deleted
            .iter()
            .all(|p| p.starts_with(logs.to_str().unwrap())),
        "{deleted:?}"
    );
}

#[test]
fn prune_files_size_cap_compression_and_files_open_for_writing() {
    let dir = scratch_dir("drctl-prune2-");
    let logs = dir.join("logs");
    for (i, days) in [10.0, 9.0, 8.0, 7.0, 6.0, 0.5].iter().enumerate() {
        file_at(&logs.join(format!("s{i}.log")), 1000, *days);
    }
    // The oldest file is still being written by a process (this test).
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("s0.log"))
        .unwrap();
    let w = World::new(&format!(
        "[jobs.cap]\ntype = \"prune_files\"\npaths = [\"{}/*.log\"]\nmax_total_size = \"2500B\"\nkeep_last = 1\n",
        logs.display()
    ));
    let (code, v, stderr) = run_json(&w, "cap");
    // 6000 bytes against a 2500 cap, oldest first: s0 is open (skipped),
    // then s1..s4 go (6000 -> 2000); s5 is kept by keep_last anyway.
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names_under(&logs), vec!["s0.log", "s5.log"]);
    assert_eq!(
        v["details"]["skipped_open"][0],
        logs.join("s0.log").display().to_string(),
        "{v:#}"
    );
    drop(writer);

    // Compression: older than 1 day is gzipped in place (mtime kept), the
    // newest stays as it is; the .gz keeps counting for age limits.
    let logs2 = dir.join("logs2");
    file_at(&logs2.join("old.log"), 5000, 3.0);
    file_at(&logs2.join("new.log"), 5000, 0.1);
    let mtime = std::fs::metadata(logs2.join("old.log"))
        .unwrap()
        .modified()
        .unwrap();
    let w = World::new(&format!(
        "[jobs.gz]\ntype = \"prune_files\"\npaths = [\"{0}/*.log\"]\ncompress_older_than = \"1d\"\n[jobs.age]\ntype = \"prune_files\"\npaths = [\"{0}/*.log\"]\nolder_than = \"2d\"\n",
        logs2.display()
    ));
    let (code, v, stderr) = run_json(&w, "gz");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names_under(&logs2), vec!["new.log", "old.log.gz"]);
    let gz = logs2.join("old.log.gz");
    assert_eq!(std::fs::metadata(&gz).unwrap().modified().unwrap(), mtime);
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(out.stdout, vec![b'x'; 5000]);
    assert!(
        v["details"]["bytes_freed"].as_u64().unwrap() > 4000,
        "{v:#}"
    );
    let (code, _, stderr) = run_json(&w, "age");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        names_under(&logs2),
        vec!["new.log"],
        "the .gz is pruned by age too"
    );
}

#[test]
fn prune_files_config_errors_name_the_key() {
    let e = config_error(
        "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"logs/*.log\"]\nolder_than = \"30d\"\n",
    );
    assert!(
        e.contains("jobs.logs.paths") && e.contains("absolute"),
        "{e}"
    );
    let e = config_error(
        "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"/*/x.log\"]\nolder_than = \"30d\"\n",
    );
    assert!(e.contains("whole filesystem"), "{e}");
}

// ---------------------------------------------------------------- cert_expiry

struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn cert(name: &str, days_left: i64) -> TestCert {
    let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    p.not_after = time::OffsetDateTime::now_utc()
        + time::Duration::days(days_left)
        + time::Duration::hours(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let c = p.self_signed(&key).unwrap();
    TestCert {
        cert_pem: c.pem(),
        key_pem: key.serialize_pem(),
        der: c.der().clone(),
        key_der: key.serialize_der(),
    }
}

/// A TLS server on loopback presenting `c`; answers every handshake.
fn tls_server(c: &TestCert) -> u16 {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![c.der.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve_on_loopback(move |l| async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let a = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = a.accept(s).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

#[test]
fn cert_expiry_from_files_and_a_tls_endpoint_grades_3_20_and_90_days() {
    let dir = scratch_dir("drctl-certs-");
    let ssl = dir.join("ssl");
    std::fs::create_dir_all(&ssl).unwrap();
    let (c3, c20, c90) = (
        cert("three.test", 3),
        cert("twenty.test", 20),
        cert("ninety.test", 90),
    );
    // A chain file: leaf + "intermediate", and the key in the same file.
    std::fs::write(
        ssl.join("chain.pem"),
        format!("{}{}{}", c90.cert_pem, c3.cert_pem, c90.key_pem),
    )
    .unwrap();
    std::fs::write(ssl.join("twenty.pem"), &c20.cert_pem).unwrap();
    std::fs::write(ssl.join("ninety.pem"), &c90.cert_pem).unwrap();
    std::fs::write(
        ssl.join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let p3 = tls_server(&c3);
    let p20 = tls_server(&c20);
    let p90 = tls_server(&c90);
    let closed = free_port();
    let w = World::new(&format!(
        "[jobs.certs]\ntype = \"cert_expiry\"\nfiles = [\"{ssl}/*.pem\"]\nendpoints = [\"three.test@127.0.0.1:{p3}\", \"127.0.0.1:{p20}\", \"ninety.test@127.0.0.1:{p90}\", \"127.0.0.1:{closed}\"]\nwarn = \"30d\"\ncritical = \"7d\"\ntimeout = \"3s\"\nschedule = \"0 0 9 * * *\"\n[jobs.ok]\ntype = \"cert_expiry\"\nfiles = [\"{ssl}/ninety.pem\"]\nendpoints = [\"127.0.0.1:{p90}\"]\n[jobs.warn]\ntype = \"cert_expiry\"\nfiles = [\"{ssl}/twenty.pem\"]\nendpoints = [\"127.0.0.1:{p20}\"]\n",
        ssl = ssl.display()
    ));
    let (code, v, stderr) = run_json(&w, "certs");
    assert_eq!(code, 8, "{stderr}");
    let level = |source: &str, cn: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                let s = f["subject"].as_str().unwrap();
                s.contains(source) && s.contains(cn)
            })
            .unwrap_or_else(|| panic!("no {source} {cn} in {v:#}"))["level"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let chain = ssl.join("chain.pem").display().to_string();
    assert_eq!(level(&chain, "ninety.test"), "ok");
    assert_eq!(
        level(&chain, "three.test"),
        "critical",
        "an expiring cert inside a chain counts"
    );
    assert_eq!(
        level(&ssl.join("twenty.pem").display().to_string(), "twenty.test"),
        "warning"
    );
    assert_eq!(level(&format!("127.0.0.1:{p3}"), "three.test"), "critical");
    assert_eq!(level(&format!("127.0.0.1:{p20}"), "twenty.test"), "warning");
    assert_eq!(level(&format!("127.0.0.1:{p90}"), "ninety.test"), "ok");
    let broken = finding(&v, "broken.pem");
    assert_eq!(broken["level"], "critical");
    assert!(
        broken["message"].as_str().unwrap().contains("invalid PEM"),
        "{broken}"
    );
    let down = finding(&v, &format!("127.0.0.1:{closed}"));
    assert_eq!(down["level"], "critical");
    assert!(
        down["message"].as_str().unwrap().contains("cannot connect"),
        "{down}"
    );
    let twenty = v["details"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"] == format!("127.0.0.1:{p20}"))
        .unwrap();
    assert_eq!(twenty["subject"], "CN=twenty.test");
    assert_eq!(twenty["sans"][0], "twenty.test");
    let days = twenty["seconds_left"].as_i64().unwrap() / 86400;
    assert_eq!(days, 20, "{twenty}");
    assert!(
        stderr.contains("three.test") && stderr.contains("critical"),
        "exit names what is wrong: {stderr}"
    );

    let (code, _, stderr) = run_json(&w, "ok");
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_json(&w, "warn");
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("twenty.test"), "{stderr}");
}

// ---------------------------------------------------------------- health

#[test]
fn health_checks_flip_only_after_their_thresholds_and_alert_once_with_a_resolve() {
    let api = HttpReceiver::start();
    let hooks = HttpReceiver::start();
    api.set_body(r#"{"status":"ok","db":{"up":true}}"#);
    let mut w = World::new(&format!(
        "[alerts.channels.hooks]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\n[alerts.routes]\ncritical = [\"hooks\"]\n[jobs.api-health]\ntype = \"health\"\nschedule = \"0 */5 * * * *\"\n[[jobs.api-health.checks]]\ntype = \"http\"\nname = \"api\"\nurl = \"{}\"\nexpect_status = 200\njson_pointer = \"/db/up\"\njson_equals = true\nretries = 1\nretry_delay = \"100ms\"\nfailure_threshold = 2\nsuccess_threshold = 2\n",
        hooks.url("/hook"),
        api.url("/health")
    ));
    w.set_env("HOOK_SECRET", "s3cr3t-hook");
    let run = |w: &World| run_json(w, "api-health");

    // A blip the retry absorbs.
    api.queue_statuses(&[503]);
    let (code, v, e) = run(&w);
    assert_eq!(code, 0, "{e}");
    assert_eq!(v["details"]["checks"][0]["attempts"], 2);
    // One failed run (both attempts): failing, not down yet.
    api.queue_statuses(&[503, 503]);
    let (code, v, e) = run(&w);
    assert_eq!(code, 0, "one failed run is below failure_threshold: {e}");
    assert_eq!(v["details"]["checks"][0]["up"], true);
    assert!(active_alerts(&w).is_empty());
    // The second failed run in a row: down.
    api.queue_statuses(&[503, 503]);
    let (code, v, e) = run(&w);
    assert_eq!(code, 8, "{e}");
    assert!(
        e.contains("api") && e.contains("503"),
        "names what is wrong: {e}"
    );
    assert_eq!(v["details"]["checks"][0]["up"], false);
    assert_eq!(
        active_alerts(&w),
        vec!["health_down:api-health:api".to_owned()]
    );
    // Passing once: still down (success_threshold = 2).
    let (code, _, e) = run(&w);
    assert_eq!(code, 8, "{e}");
    // A wrong JSON value fails the check like a bad status.
    api.set_body(r#"{"status":"ok","db":{"up":false}}"#);
    let (code, v, _) = run(&w);
    assert_eq!(code, 8);
    assert!(
        v["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("/db/up is false"),
        "{v:#}"
    );
    api.set_body(r#"{"status":"ok","db":{"up":true}}"#);
    let (code, _, _) = run(&w);
    assert_eq!(code, 8, "one pass after a failure restarts the streak");
    let (code, v, e) = run(&w);
    assert_eq!(code, 0, "{e}");
    assert_eq!(v["details"]["checks"][0]["up"], true);
    assert!(active_alerts(&w).is_empty());

    let events: Vec<String> = hooks
        .requests("/hook")
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, vec!["firing", "resolved"], "one alert, one resolve");
    let firing = hooks.requests("/hook")[0].json();
    assert_eq!(firing["kind"], "health_down");
    assert_eq!(firing["severity"], "critical");
}

/// redis-server on a free loopback port, killed on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        wait_until(Duration::from_secs(20), "redis to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn health_probes_tcp_postgres_redis_and_command_against_real_servers() {
    let pg = pg();
    let redis = Redis::start();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let dead = free_port();
    let mut w = World::new(&format!(
        "[jobs.deps]\ntype = \"health\"\n\
         [[jobs.deps.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:{tcp_port}\"\nfailure_threshold = 1\n\
         [[jobs.deps.checks]]\ntype = \"postgres\"\nname = \"db\"\nurl_env = \"APP_DATABASE_URL\"\nfailure_threshold = 1\n\
         [[jobs.deps.checks]]\ntype = \"redis\"\nname = \"cache\"\nurl = \"redis://127.0.0.1:{}\"\nfailure_threshold = 1\n\
         [[jobs.deps.checks]]\ntype = \"command\"\nname = \"script\"\ncommand = [\"sh\", \"-c\", \"test ! -e {{dir}}/broken || {{ echo boom >&2; exit 3; }}\"]\nfailure_threshold = 1\n\
         [jobs.down]\ntype = \"health\"\n\
         [[jobs.down.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:{dead}\"\nfailure_threshold = 1\n\
         [[jobs.down.checks]]\ntype = \"http\"\nurl = \"http://ops:hunter-pw@127.0.0.1:{dead}/health\"\nfailure_threshold = 1\n\
         [[jobs.down.checks]]\ntype = \"postgres\"\nname = \"db\"\nurl = \"postgres://postgres:wrong@127.0.0.1:{dead}/postgres\"\nfailure_threshold = 1\ntimeout = \"3s\"\n",
        redis.port
    ));
    w.set_env("APP_DATABASE_URL", &pg.url("postgres"));
    let (code, v, e) = run_json(&w, "deps");
    assert_eq!(code, 0, "{e}\n{v:#}");
    assert!(finding(&v, "cache")["message"]
        .as_str()
        .unwrap()
        .contains("PONG"));
    assert!(finding(&v, "db")["message"]
        .as_str()
        .unwrap()
        .contains("SELECT 1"));

    drop(redis);
    drop(tcp);
    std::fs::write(w.dir.join("broken"), "").unwrap();
    let (code, v, e) = run_json(&w, "deps");
    assert_eq!(code, 8, "{e}");
    assert_eq!(finding(&v, "cache")["level"], "critical");
    assert_eq!(
        finding(&v, &format!("tcp:127.0.0.1:{tcp_port}"))["level"],
        "critical"
    );
    assert_eq!(finding(&v, "db")["level"], "ok");
    let script = finding(&v, "script");
    assert!(
        script["message"].as_str().unwrap().contains("exited 3")
            && script["message"].as_str().unwrap().contains("boom"),
        "{script}"
    );

    let (code, v, e) = run_json(&w, "down");
    assert_eq!(code, 8, "{e}");
    assert!(finding(&v, "db")["message"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1"));
    assert!(
        !v.to_string().contains("wrong"),
        "the password stays out: {v}"
    );
    assert!(!e.contains(":wrong@"), "{e}");
}

#[test]
fn health_config_errors_name_the_check_and_key() {
    let e = config_error(
        "[jobs.h]\ntype = \"health\"\n[[jobs.h.checks]]\ntype = \"tcp\"\naddress = \"localhost\"\n",
    );
    assert!(
        e.contains("jobs.h.checks[0].address") && e.contains("host:port"),
        "{e}"
    );
    let e = config_error(
        "[jobs.h]\ntype = \"health\"\n[[jobs.h.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\nexpect_status = 200\n",
    );
    assert!(
        e.contains("checks[0].expect_status") && e.contains("not a key of tcp checks"),
        "{e}"
    );
}

// ---------------------------------------------------------------- disk

/// Used percent of `/` as df prints it (an independent measurement).
fn df_percent(path: &str) -> f64 {
    let out = Command::new("df")
        .args(["--output=pcent", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}

#[test]
fn disk_thresholds_on_the_real_root_mount() {
    let used = df_percent("/");
    assert!(
        (5.0..=95.0).contains(&used),
        "the test needs / between 5% and 95% used, it is {used}%"
    );
    let w = World::new(&format!(
        "[jobs.disk]\ntype = \"disk\"\nmounts = [\"/\", \"/nonexistent-mount\"]\nwarn = 80\ncritical = 90\nschedule = \"0 */10 * * * *\"\n\
         [jobs.fine]\ntype = \"disk\"\nmounts = [\"/\"]\nwarn = {}\ncritical = {}\n\
         [jobs.warn]\ntype = \"disk\"\nmounts = [\"/\"]\nwarn = {}\ncritical = {}\n\
         [jobs.crit]\ntype = \"disk\"\nmounts = [\"/\"]\nwarn = {}\ncritical = {}\n",
        used + 3.0,
        used + 4.0,
        used - 3.0,
        used + 4.0,
        used - 4.0,
        used - 3.0,
    ));
    let (code, v, e) = run_json(&w, "fine");
    assert_eq!(code, 0, "{e}");
    let ratio = v["details"]["mounts"][0]["used_ratio"].as_f64().unwrap();
    // df rounds its percentage up.
    assert!(
        (ratio * 100.0 - used).abs() <= 1.5,
        "drctl {ratio} vs df {used}%"
    );
    let (code, _, e) = run_json(&w, "warn");
    assert_eq!(code, 7, "{e}");
    assert!(e.contains("warning: /:"), "{e}");
    let (code, _, e) = run_json(&w, "crit");
    assert_eq!(code, 8, "{e}");
    let (_, v, _) = run_json(&w, "disk");
    let missing = finding(&v, "/nonexistent-mount");
    assert_eq!(missing["level"], "critical");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("cannot read usage"),
        "{missing}"
    );
}

// ---------------------------------------------------------------- metrics

#[test]
fn runs_outside_the_daemon_feed_metrics_status_and_logs() {
    let dir = scratch_dir("drctl-metrics-");
    let ssl = dir.join("ssl");
    std::fs::create_dir_all(&ssl).unwrap();
    std::fs::write(ssl.join("c.pem"), cert("metrics.test", 20).cert_pem).unwrap();
    file_at(&dir.join("logs/old.log"), 1234, 40.0);
    let api = HttpReceiver::start();
    let pg = pg();
    let db = pg.create_db("metrics");
    pg.psql(
        &db,
        "CREATE TABLE t (id int) WITH (autovacuum_enabled = false);
         INSERT INTO t SELECT generate_series(1, 4000); DELETE FROM t;",
    );
    wait_until(Duration::from_secs(20), "dead tuples", || {
        dead_tuples(pg, &db, "t") >= 4000
    });
    let port = free_port();
    let w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n\
         [jobs.disk]\ntype = \"disk\"\nmounts = [\"/\"]\nwarn = 99\ncritical = 100\n\
         [jobs.certs]\ntype = \"cert_expiry\"\nfiles = [\"{d}/ssl/*.pem\"]\n\
         [jobs.api-health]\ntype = \"health\"\n[[jobs.api-health.checks]]\ntype = \"http\"\nname = \"api\"\nurl = \"{}\"\n\
         [jobs.logs]\ntype = \"prune_files\"\npaths = [\"{d}/logs/*.log\"]\nolder_than = \"30d\"\n\
         [jobs.vacuum]\ntype = \"vacuum\"\nurl = \"{}\"\n",
        api.url("/health"),
        pg.url(&db),
        d = dir.display()
    ));
    for job in ["disk", "api-health", "logs", "vacuum"] {
        let (code, _, e) = run_json(&w, job);
        assert_eq!(code, 0, "{job}: {e}");
    }
    let (code, _, _) = run_json(&w, "certs");
    assert_eq!(code, 7);

    let status = w.drctl(&["status"]);
    status.ok();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("certs") && l.contains("warning")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("warning: ") && status.stdout.contains("metrics.test"),
        "{}",
        status.stdout
    );
    let logs = w.drctl(&["logs", "logs", "--json"]);
    let runs: Value = serde_json::from_str(&logs.stdout).unwrap();
    assert_eq!(runs[0]["result"], "ok");
    assert_eq!(runs[0]["bytes"], 1234);

    let _d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "the metrics endpoint", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    let line = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .rsplit_once(' ')
            .unwrap()
            .1
            .parse::<f64>()
            .unwrap()
    };
    let secs = line("drctl_cert_expiry_seconds{subject=\"CN=metrics.test\"");
    assert!((secs / 86400.0 - 20.0).abs() < 0.1, "{secs}");
    assert_eq!(
        line("drctl_health_up{job=\"api-health\",check=\"api\"}"),
        1.0
    );
    let ratio = line("drctl_disk_used_ratio{mount=\"/\"}");
    assert!((ratio * 100.0 - df_percent("/")).abs() <= 1.5);
    assert_eq!(line("drctl_prune_bytes_freed_total{job=\"logs\"}"), 1234.0);
    assert_eq!(line("drctl_check_result{job=\"certs\"}"), 1.0);
    assert!(
        line("drctl_vacuum_dead_tuples_removed_total{job=\"vacuum\"}") >= 3000.0,
        "{body}"
    );
}

// ---------------------------------------------------------------- the issue's config

#[test]
fn the_documented_maintenance_config_loads_as_written() {
    let issue = r#"
[jobs.vacuum-appdb]
type = "vacuum"
url_env = "APP_DATABASE_URL"
schedule = "0 0 3 1 * *"

[jobs.reindex-appdb]
type = "reindex"
url_env = "APP_DATABASE_URL"
schedule = "0 30 3 1 * *"

[jobs.logs]
type = "prune_files"
paths = ["/opt/app/logs/**/*.log"]
older_than = "30d"
keep_last = 2
schedule = "0 0 4 * * *"

[jobs.images]
type = "prune_images"
until = "168h"
keep_last = 3
schedule = "0 0 5 * * SUN"

[jobs.disk]
type = "disk"
mounts = ["/", "/var/lib/postgresql"]
warn = 80
critical = 90
schedule = "0 */10 * * * *"

[jobs.certs]
type = "cert_expiry"
files = ["/opt/app/ssl/*.pem"]
endpoints = ["example.com:443"]
warn = "30d"
critical = "7d"
schedule = "0 0 9 * * *"

[jobs.api-health]
type = "health"
schedule = "0 */5 * * * *"
[[jobs.api-health.checks]]
type = "http"
url = "http://127.0.0.1:8080/health"
expect_status = 200
retries = 3
retry_delay = "5s"
"#;
    let mut w = World::new(issue);
    // `config check` resolves every url_env the config names.
    w.set_env("APP_DATABASE_URL", "postgres://app@127.0.0.1:5432/app");
    let r = w.drctl(&["config", "check"]);
    r.ok();
    let s = w.drctl(&["status", "--json"]);
    s.ok();
    let v: Value = serde_json::from_str(&s.stdout).unwrap();
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    for k in [
        "vacuum",
        "reindex",
        "prune_files",
        "prune_images",
        "disk",
        "cert_expiry",
        "health",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // The repo's schedules/ examples load too.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let mut w = World::new(&format!(
        "schedules_dir = \"{}\"\n[repositories.offsite]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo2\"\n",
        examples.display()
    ));
    w.set_env("APP_DATABASE_URL", "postgres://app@127.0.0.1:5432/app");
    let r = w.drctl(&["config", "check"]);
    r.ok();
}

// ---------------------------------------------------------------- prune_images

/// A private Docker engine (Debian's docker.io) on a socket in a scratch
/// directory, stopped on drop.
struct Dockerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = scratch_dir("drctl-docker-");
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let dockerd = if Path::new("/usr/sbin/dockerd").exists() {
            "/usr/sbin/dockerd"
        } else {
            "dockerd"
        };
        let child = Command::new(dockerd)
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (apt-get install docker.io)");
        let d = Dockerd { child, socket };
        wait_until(Duration::from_secs(60), "dockerd to answer", || {
            d.docker(&["version"]).status.success()
        });
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        // Debian's client, matching the engine's API version.
        let client = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        Command::new(client)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// `docker load` an image built here: one layer with `content` (and
    /// the static docker-init as /init when `runnable`), created at `created`.
    fn load(&self, tags: &[&str], created: &str, content: &[u8], runnable: bool) {
        use sha2::Digest;
        let mut layer = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(0);
            h.set_cksum();
            layer.append_data(&mut h, name, data).unwrap();
        };
        add("content", content, 0o644);
        if runnable {
            add(
                "init",
                &std::fs::read("/usr/bin/docker-init").expect("docker-init from docker.io"),
                0o755,
            );
        }
        let layer = layer.into_inner().unwrap();
        let diff_id = hex::encode(sha2::Sha256::digest(&layer));
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": { "Entrypoint": ["/init", "--"] },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
            "history": [{ "created": created }],
        })
        .to_string();
        let config_id = hex::encode(sha2::Sha256::digest(config.as_bytes()));
        let manifest = serde_json::json!([{
            "Config": format!("{config_id}.json"),
            "RepoTags": if tags.is_empty() { Value::Null } else { serde_json::json!(tags) },
            "Layers": [format!("{diff_id}/layer.tar")],
        }])
        .to_string();
        let mut archive = tar::Builder::new(Vec::new());
        for (name, data) in [
            (format!("{config_id}.json"), config.as_bytes().to_vec()),
            (format!("{diff_id}/layer.tar"), layer),
            ("manifest.json".to_owned(), manifest.into_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            archive.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let path = scratch_dir("drctl-image-").join("image.tar");
        std::fs::write(&path, archive.into_inner().unwrap()).unwrap();
        let out = self.docker(&["load", "-i", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `repo:tag` of every image, `<none>` for dangling ones, sorted.
    fn images(&self) -> Vec<String> {
        let out = self.docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.CreatedAt}}",
        ]);
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| match l.split_once(' ') {
                Some(("<none>:<none>", created)) => format!("<none> {}", &created[..4]),
                Some((tag, _)) => tag.to_owned(),
                None => l.to_owned(),
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prune_images_against_a_real_docker_engine_keeps_used_new_and_newest_tags() {
    let d = Dockerd::start();
    let now = chrono::Utc::now();
    let fresh = (now - chrono::Duration::hours(1)).to_rfc3339();
    let old = |m: u32| format!("2020-{m:02}-01T00:00:00Z");
    // 64 KiB of distinct content per image, so each has its own layer.
    let content = |seed: &str| seed.repeat(65536 / seed.len()).into_bytes();
    for (i, m) in [1, 2, 3, 4].iter().enumerate() {
        d.load(
            &[&format!("app:{}", i + 1)],
            &old(*m),
            &content(&format!("app{i}-")),
            false,
        );
    }
    d.load(&["app:5"], &fresh, &content("app5-"), false);
    for (i, m) in [1, 2, 3, 4].iter().enumerate() {
        d.load(
            &[&format!("svc:{}", i + 1)],
            &old(*m),
            &content(&format!("svc{i}-")),
            i == 0,
        );
    }
    d.load(&[], &old(5), &content("dangling-old-"), false);
    d.load(&[], &fresh, &content("dangling-new-"), false);
    // svc:1 is outside keep_last but a container (run, exited) uses it.
    let out = d.docker(&[
        "run",
        "--network",
        "none",
        "--name",
        "uses-svc1",
        "svc:1",
        "/init",
        "--version",
    ]);
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = d.images();
    assert_eq!(before.len(), 11, "{before:?}");

    let w = World::new(&format!(
        "[jobs.images]\ntype = \"prune_images\"\nsocket = \"{0}\"\nuntil = \"168h\"\nkeep_last = 3\nschedule = \"0 0 5 * * SUN\"\n\
         [jobs.images-dry]\ntype = \"prune_images\"\nsocket = \"{0}\"\nuntil = \"168h\"\nkeep_last = 3\ndry_run = true\n",
        d.socket.display()
    ));
    let (code, v, e) = run_json(&w, "images-dry");
    assert_eq!(code, 0, "{e}");
    assert_eq!(d.images(), before, "dry_run removes nothing");
    assert_eq!(
        v["details"]["removed"].as_array().unwrap().len(),
        3,
        "{v:#}"
    );

    let (code, v, e) = run_json(&w, "images");
    assert_eq!(code, 0, "{e}\n{v:#}");
    assert_eq!(
        d.images(),
        vec![
            "<none> 2026",
            "app:3",
            "app:4",
            "app:5",
            "svc:1",
            "svc:2",
            "svc:3",
            "svc:4"
        ]
        .into_iter()
        .map(|s| s.replace("2026", &now.format("%Y").to_string()))
        .collect::<Vec<_>>(),
        "app:1, app:2 (old, unused, beyond keep_last) and the old dangling image go"
    );
    let reclaimed = v["details"]["bytes_reclaimed"].as_u64().unwrap();
    assert!(reclaimed >= 3 * 65_000, "reclaimed {reclaimed}");
    assert!(
        reclaimed < 10 * 65536,
        "only the removed layers count: {reclaimed}"
    );
    let kept = v["details"]["kept"].as_array().unwrap();
    assert!(
        kept.iter()
            .any(|k| k["reference"] == "svc:1" && k["reason"] == "used by a container"),
        "{kept:?}"
    );

    // The engine gone: the run fails (job_failed), it does not pass quietly.
    drop(d);
    let r = w.drctl(&["run", "images"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Docker engine"), "{}", r.stderr);
}

// ---------------------------------------------------------------- under the daemon

#[test]
fn the_daemon_runs_check_jobs_on_schedule_and_alerts_firing_then_resolved() {
    let hooks = HttpReceiver::start();
    let port = free_port();
    let http = free_port();
    let mut w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [alerts.channels.hooks]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\n[alerts.routes]\ncritical = [\"hooks\"]\n\
         [jobs.tcp-health]\ntype = \"health\"\nschedule = \"* * * * * *\"\n\
         [[jobs.tcp-health.checks]]\ntype = \"tcp\"\nname = \"svc\"\naddress = \"127.0.0.1:{port}\"\nfailure_threshold = 2\ntimeout = \"1s\"\n",
        hooks.url("/hook")
    ));
    w.set_env("HOOK_SECRET", "daemon-hook-secret");
    let d = Daemon::start(&w);
    let events = || -> Vec<String> {
        hooks
            .requests("/hook")
            .iter()
            .map(|r| r.json()["event"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until(Duration::from_secs(30), "the down alert", || {
        !events().is_empty()
    });
    assert_eq!(events(), vec!["firing"], "{}", d.log());
    let (_, body) = http_get(http, "/metrics");
    assert!(
        body.contains("drctl_health_up{job=\"tcp-health\",check=\"svc\"} 0"),
        "{body}"
    );

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_until(Duration::from_secs(30), "the resolve", || {
        events().len() == 2
    });
    assert_eq!(events(), vec!["firing", "resolved"]);
    let (_, body) = http_get(http, "/metrics");
    assert!(
        body.contains("drctl_health_up{job=\"tcp-health\",check=\"svc\"} 1"),
        "{body}"
    );
    drop(listener);
    let runs = w.drctl(&["logs", "tcp-health", "--json", "-n", "100"]);
    let v: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert!(v.as_array().unwrap().len() >= 3, "one run per tick");
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["trigger"] == "schedule"));
}

#[test]
fn sigterm_interrupts_a_check_run_kills_its_probe_and_records_it() {
    let w = World::new(
        "[jobs.slow]\ntype = \"health\"\n[[jobs.slow.checks]]\ntype = \"command\"\nname = \"slow\"\ncommand = [\"sh\", \"-c\", \"sleep 3; touch {dir}/finished\"]\ntimeout = \"60s\"\n",
    );
    let mut child = w
        .command(&["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the run to start", || {
        let r = w.drctl(&["logs", "slow", "--json"]);
        r.stdout.contains("\"running\"")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !w.dir.join("finished").exists(),
        "the probe was killed with the run"
    );
    let r = w.drctl(&["logs", "slow", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["status"], "interrupted", "{v:#}");
}
