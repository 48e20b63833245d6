//! The spine, end to end with real components: PostgreSQL clusters, an
//! S3-protocol server, the drctl binary. Each scenario reads as what an
//! operator would see.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::receivers::HttpReceiver;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

fn local_world(db_url_env: &str, extra_job: &str) -> World {
    World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"{db_url_env}\"\nrepository = \"local\"\n{extra_job}\n"
    ))
}

fn s3_world(bucket: &str, extra_job: &str) -> World {
    World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"db1\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath_style = true\npart_size = \"5MiB\"\n\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\n{extra_job}\n",
        s3().endpoint
    ))
}

fn backups_json(w: &World) -> Vec<serde_json::Value> {
    let r = w.drctl(&["backups", "appdb", "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn local_round_trip_recreates_data_roles_and_ownership_in_a_fresh_place() {
    let pg = pg();
    let src = pg.create_db("rt_src");
    let owner = unique("rt_owner");
    pg.seed(&src, &owner, 500);
    let before = pg.fingerprint(&src);

    let mut w = local_world("APP_DATABASE_URL", "");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let r = w.drctl(&["run", "appdb"]);
    r.ok();
    let id = r.stdout.trim().to_owned();
    assert!(
        id.len() > 20 && id.starts_with("20"),
        "backup id printed: {id:?}"
    );

    // The manifest describes the backup, with row counts from the snapshot.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.repo_dir().join("appdb").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["source"]["owner"], "postgres");
    let tables = manifest["tables"].as_array().unwrap();
    let payment = tables.iter().find(|t| t["name"] == "payment").unwrap();
    assert_eq!(payment["rows"], 1000);
    let names: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["globals.sql.zst", "database.dump.zst"]);

    // Simulate a fresh cluster: the database and its owning role are gone.
    pg.psql("postgres", &format!("DROP DATABASE {src}"));
    pg.psql("postgres", &format!("DROP ROLE {owner}"));

    let target = unique("rt_dst");
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--to",
        &pg.url(&target),
        "--jobs",
        "2",
    ]);
    r.ok();
    assert!(
        r.stderr.contains("roles created: ") && r.stderr.contains(&owner),
        "{}",
        r.stderr
    );
    assert_eq!(pg.fingerprint(&target), before);
    assert_eq!(
        pg.psql(
            "postgres",
            &format!("SELECT rolcanlogin FROM pg_roles WHERE rolname = '{owner}'")
        ),
        "t"
    );
    assert_eq!(
        pg.psql(
            &target,
            "SELECT schema_owner FROM information_schema.schemata WHERE schema_name = 'billing'"
        ),
        owner
    );

    // A second restore into the same (now non-empty) database is refused.
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&target)]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
}

#[tokio::test]
async fn s3_round_trip_with_multipart_upload_and_streamed_restore() {
    let pg = pg();
    let src = pg.create_db("s3_src");
    pg.seed(&src, &unique("s3_owner"), 200);
    // ~12 MiB of incompressible bytes so the dump needs several 5 MiB parts.
    pg.psql(&src, "CREATE TABLE blob AS SELECT i, decode(string_agg(md5(i::text || '-' || j::text), ''), 'hex') AS b FROM generate_series(1, 1500) i, generate_series(1, 512) j GROUP BY i");
    let before = pg.fingerprint(&src);
    let bucket = s3().create_bucket().await;
    let mut w = s3_world(&bucket, "compression = \"gzip\"");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();

    let objects = s3()
        .client()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("db1/appdb/")
        .send()
        .await
        .unwrap();
    let keys: Vec<(String, i64)> = objects
        .contents()
        .iter()
        .map(|o| (o.key().unwrap().to_owned(), o.size().unwrap()))
        .collect();
    let dump = keys
        .iter()
        .find(|(k, _)| k.ends_with("database.dump.gz"))
        .expect("dump object");
    assert!(dump.1 > 10 * 1024 * 1024, "multipart-sized dump: {keys:?}");
    assert!(keys
        .iter()
        .any(|(k, _)| k == &format!("db1/appdb/{id}/manifest.json")));

    let listed = backups_json(&w);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    // A new host: fresh state dir, same config.
    std::fs::remove_dir_all(w.dir.join("state")).unwrap();
    let target = unique("s3_dst");
    w.drctl(&["restore", "--latest", "--to", &pg.url(&target)])
        .ok();
    assert_eq!(pg.fingerprint(&target), before);
}

#[test]
fn restore_into_the_jobs_own_database_swaps_and_keeps_a_safety_copy() {
    let pg = pg();
    let db = pg.create_db("swap");
    pg.seed(&db, &unique("swap_owner"), 100);
    let at_backup = pg.fingerprint(&db);
    let mut w = local_world("APP_DATABASE_URL", "");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();

    // The incident: someone deletes data.
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    let damaged = pg.fingerprint(&db);

    // Without consent (no TTY, no --yes) nothing happens.
    let r = w.drctl(&["restore", "--latest", "--job", "appdb"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(pg.fingerprint(&db), damaged);

    // --dry-run prints the plan and changes nothing.
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--dry-run",
        "--json",
    ]);
    r.ok();
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["replaces_existing"], true);
    assert_eq!(pg.fingerprint(&db), damaged);

    // A session holding the database open does not block the swap.
    let mut holder = std::process::Command::new(pg_bin("psql"))
        .args(["-X", "-d", &pg.url(&db), "-c", "SELECT pg_sleep(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes", "--json"]);
    r.ok();
    let _ = holder.kill();
    let _ = holder.wait();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let safety = report["safety_copy"].as_str().unwrap().to_owned();
    assert!(
        safety.starts_with(&format!("{db}_pre_restore_")),
        "{safety}"
    );
    assert_eq!(pg.fingerprint(&db), at_backup);
    assert_eq!(pg.fingerprint(&safety), damaged);
}

#[test]
fn pg_dump_failing_mid_stream_leaves_no_manifest_and_records_a_failed_run() {
    let pg = pg();
    let db = pg.create_db("fail");
    pg.seed(&db, &unique("fail_owner"), 2000);
    let bin = tool_wrappers(&[(
        "pg_dump",
        r#"if [ "$1" = "--version" ]; then exec "$REAL" --version; fi
"$REAL" "$@" | head -c 20000
echo "pg_dump: error: simulated crash mid-stream" >&2
exit 1"#,
    )]);
    let mut w = local_world(
        "APP_DATABASE_URL",
        &format!("pg_bindir = \"{}\"", bin.display()),
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let r = w.drctl(&["run", "appdb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("simulated crash mid-stream"),
        "pg_dump's stderr is in the error: {}",
        r.stderr
    );
    assert!(backups_json(&w).is_empty());
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&unique("never"))]);
    assert_eq!(r.code, 5, "{}", r.all());

    // No data was left behind either, and the run is on record as failed.
    let leftovers: Vec<_> = walk(&w.repo_dir());
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runs = rt.block_on(async { w.state().await.runs(Some("appdb"), 10).await.unwrap() });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "failed");
    assert!(runs[0]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("simulated crash"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn sigkill_mid_upload_never_becomes_latest() {
    let pg = pg();
    let db = pg.create_db("kill");
    pg.seed(&db, &unique("kill_owner"), 100);
    pg.psql(&db, "CREATE TABLE blob AS SELECT i, decode(string_agg(md5(i::text || '-' || j::text), ''), 'hex') AS b FROM generate_series(1, 1000) i, generate_series(1, 512) j GROUP BY i");
    let marker_dir = scratch_dir("drctl-marker-");
    let marker = marker_dir.join("dumped");
    let bin = tool_wrappers(&[(
        "pg_dump",
        &format!(
            r#"if [ "$1" = "--version" ]; then exec "$REAL" --version; fi
"$REAL" "$@"
touch {}
sleep 120"#,
            marker.display()
        ),
    )]);
    let bucket = s3().create_bucket().await;
    for kind in ["s3", "local"] {
        let _ = std::fs::remove_file(&marker);
        let extra = format!("pg_bindir = \"{}\"", bin.display());
        let mut w = if kind == "s3" {
            s3_world(&bucket, &extra)
        } else {
            local_world("APP_DATABASE_URL", &extra)
        };
        w.set_env("APP_DATABASE_URL", &pg.url(&db));
        let mut child = w.command(&["run", "appdb"]).spawn().unwrap();
        wait_for_path(&marker, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            backups_json(&w).is_empty(),
            "{kind}: a killed run is not a backup"
        );
        let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&unique("never"))]);
        assert_eq!(r.code, 5, "{kind}: {}", r.all());
        // The killed run's pg_dump wrapper is still sleeping; stop it.
        let _ = std::process::Command::new("pkill")
            .args(["-f", &bin.display().to_string()])
            .status();
    }
}

#[tokio::test]
async fn a_flipped_byte_is_refused_before_the_target_is_touched() {
    let pg = pg();
    let db = pg.create_db("flip");
    pg.seed(&db, &unique("flip_owner"), 300);
    let mut w = local_world("APP_DATABASE_URL", "");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let path = w
        .repo_dir()
        .join("appdb")
        .join(&id)
        .join("database.dump.zst");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let target = unique("flip_dst");
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&target)]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains("SHA-256") && r.stderr.contains("database.dump.zst"),
        "{}",
        r.stderr
    );
    assert!(!pg.db_exists(&target), "the target must not be created");

    // Same on S3: the store serves a changed object (bit rot, tampering).
    let bucket = s3().create_bucket().await;
    let mut w = s3_world(&bucket, "");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let client = s3().client().await;
    let key = format!("db1/appdb/{id}/database.dump.zst");
    let obj = client
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let mut bytes = obj.body.collect().await.unwrap().into_bytes().to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x80;
    client
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&target)]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("SHA-256"), "{}", r.stderr);
    assert!(!pg.db_exists(&target));
}

#[test]
fn files_backup_round_trips_and_missing_paths_fail_unless_optional() {
    let src = scratch_dir("drctl-files-");
    std::fs::write(src.join(".env"), "APP_KEY=abc\n").unwrap();
    std::fs::create_dir(src.join("conf.d")).unwrap();
    std::fs::write(src.join("conf.d/app.conf"), "listen 8080\n").unwrap();
    std::fs::write(src.join("docker-compose.yml"), "services: {}\n").unwrap();
    let job = |paths: &str| {
        format!("[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\n[jobs.configs]\ntype = \"files\"\npaths = [{paths}]\nrepository = \"local\"\n")
    };
    let s = src.display();
    let w = World::new(&job(&format!(
        "\"{s}/.env\", \"{s}/docker-compose.yml\", \"{s}/conf.d\", {{ path = \"{s}/absent.yml\", optional = true }}"
    )));
    w.drctl(&["run", "configs"]).ok();
    let out = w.dir.join("restored");
    w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "configs",
        "--to",
        out.to_str().unwrap(),
    ])
    .ok();
    let rel = src.strip_prefix("/").unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join(rel).join(".env")).unwrap(),
        "APP_KEY=abc\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join(rel).join("conf.d/app.conf")).unwrap(),
        "listen 8080\n"
    );

    let w = World::new(&job(&format!("\"{s}/.env\", \"{s}/missing.yml\"")));
    let r = w.drctl(&["run", "configs"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("missing.yml") && r.stderr.contains("optional"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_errors_exit_2_naming_file_key_and_expectation() {
    let cases = [
        (
            "[repositories.local]\ntype = \"local\"\npath = \"/tmp/x\"\ncolour = \"blue\"\n",
            "colour",
        ),
        (
            "[repositories.local]\ntype = \"local\"\npath = 42\n",
            "path",
        ),
        (
            "[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"X\"\nrepository = \"nowhere\"\n",
            "jobs.appdb.repository",
        ),
    ];
    for (body, needle) in cases {
        let w = World::new(body);
        let r = w.drctl(&["config", "check"]);
        assert_eq!(r.code, 2, "{body}: {}", r.all());
        assert!(
            r.stderr.contains(w.config.to_str().unwrap()),
            "names the file: {}",
            r.stderr
        );
        assert!(r.stderr.contains(needle), "names the key: {}", r.stderr);
        assert!(
            r.stderr.contains("expected"),
            "says what was expected: {}",
            r.stderr
        );
    }
    let w = World::new("[repositories.local]\ntype = \"local\"\npath = \"/tmp/x\"\n");
    let r = w.drctl(&["run", "nosuchjob"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("jobs.nosuchjob"), "{}", r.stderr);
    let r = w.drctl(&["-c", "/nonexistent/drctl.toml", "config", "check"]);
    assert_eq!(r.code, 2);
}

#[tokio::test]
async fn the_database_password_never_appears_in_output_logs_or_state() {
    let pg = pg();
    let db = pg.create_db("leak");
    pg.seed(&db, &unique("leak_owner"), 50);
    let mut w = local_world("APP_DATABASE_URL", "");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let mut seen = String::new();
    seen += &w.drctl(&["run", "appdb"]).ok().all();
    seen += &w.drctl(&["run", "appdb", "--json"]).ok().all();
    seen += &w.drctl(&["config", "check"]).ok().all();
    seen += &w
        .drctl(&[
            "restore",
            "--latest",
            "--to",
            &pg.url(&unique("leak_dst")),
            "--json",
        ])
        .ok()
        .all();
    seen += &w
        .drctl(&["restore", "--latest", "--dry-run", "--json", "--yes"])
        .ok()
        .all();

    // Failures: wrong database, wrong password (the server echoes neither).
    w.set_env("APP_DATABASE_URL", &pg.url("no_such_db"));
    let r = w.drctl(&["run", "appdb"]);
    assert_ne!(r.code, 0);
    seen += &r.all();
    let mut bad = url::Url::parse(&pg.url(&db)).unwrap();
    bad.set_password(Some("Wrong-Pass-Value-99")).unwrap();
    w.set_env("APP_DATABASE_URL", bad.as_str());
    let r = w.drctl(&["run", "appdb"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("password authentication failed"),
        "{}",
        r.stderr
    );
    seen += &r.all();

    // An inline URL in the config is masked by `config check`.
    let w2 = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.appdb]\ntype = \"postgres\"\nurl = \"{}\"\nrepository = \"local\"\n",
        pg.url(&db)
    ));
    seen += &w2.drctl(&["config", "check"]).ok().all();
    seen += &w2.drctl(&["run", "appdb"]).ok().all();

    for secret in [PG_PASSWORD, "Wrong-Pass-Value-99"] {
        assert!(!seen.contains(secret), "secret leaked in output:\n{seen}");
    }
    let runs = w.state().await.runs(None, 100).await.unwrap();
    let dump = format!("{runs:?}");
    assert!(
        !dump.contains(PG_PASSWORD) && !dump.contains("Wrong-Pass-Value-99"),
        "{dump}"
    );
    // And nothing in the repository either.
    for f in walk(&w.repo_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PG_PASSWORD),
            "{}",
            f.display()
        );
    }
}

#[test]
fn an_older_pg_dump_than_the_server_is_a_clear_error() {
    let pg = pg();
    let db = pg.create_db("old");
    let bin = tool_wrappers(&[(
        "pg_dump",
        r#"if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; fi
exec "$REAL" "$@""#,
    )]);
    let mut w = local_world(
        "APP_DATABASE_URL",
        &format!("pg_bindir = \"{}\"", bin.display()),
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let r = w.drctl(&["run", "appdb"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("pg_dump 9 cannot dump PostgreSQL")
            && r.stderr.contains("postgresql-client-"),
        "{}",
        r.stderr
    );
    assert!(backups_json(&w).is_empty());
    // The pre-flight names it before any run: per job, with the fix.
    let r = w.drctl(&["config", "check", "--connect"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("jobs.appdb: pg_dump 9 cannot dump PostgreSQL")
            && r.stderr.contains("set pg_bindir"),
        "{}",
        r.stderr
    );
    // With tools as new as the server it says so and exits 0.
    let mut ok = local_world("APP_DATABASE_URL", "");
    ok.set_env("APP_DATABASE_URL", &pg.url(&db));
    let r = ok.drctl(&["config", "check", "--connect"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("jobs.appdb: PostgreSQL"))
        .unwrap_or_default();
    assert!(
        line.contains("pg_dump") && line.contains("pg_dumpall") && line.ends_with(": ok"),
        "{}",
        r.stderr
    );
    // Without --connect nothing connects (a config check on a build host).
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[tokio::test]
async fn an_unreachable_s3_store_fails_the_run_clearly() {
    let pg = pg();
    let db = pg.create_db("s3down");
    let port = free_port();
    let mut w = World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:{port}\"\npath_style = true\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\n"
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let r = w.drctl(&["run", "appdb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("repository offsite"), "{}", r.stderr);
    let runs = w.state().await.runs(Some("appdb"), 5).await.unwrap();
    assert_eq!(runs[0].status, "failed");
}

#[tokio::test]
async fn sigterm_mid_dump_stops_cleanly_and_records_an_interrupted_run() {
    let pg = pg();
    let db = pg.create_db("term");
    pg.seed(&db, &unique("term_owner"), 100);
    let marker_dir = scratch_dir("drctl-marker-");
    let marker = marker_dir.join("dumped");
    let bin = tool_wrappers(&[(
        "pg_dump",
        &format!(
            "if [ \"$1\" = \"--version\" ]; then exec \"$REAL\" --version; fi\n\"$REAL\" \"$@\"\necho $$ > {}.tmp && mv {}.tmp {}\nexec sleep 120",
            marker.display(),
            marker.display(),
            marker.display()
        ),
    )]);
    let mut w = local_world(
        "APP_DATABASE_URL",
        &format!("pg_bindir = \"{}\"", bin.display()),
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let child = w
        .command(&["run", "appdb"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_path(&marker, Duration::from_secs(60));
    let started = std::time::Instant::now();
    nix_kill(child.id(), libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(backups_json(&w).is_empty());
    assert!(walk(&w.repo_dir()).is_empty(), "partial objects removed");
    let runs = w.state().await.runs(Some("appdb"), 5).await.unwrap();
    assert_eq!(runs[0].status, "interrupted", "{:?}", runs[0].error);
    // The dump process (the wrapper, exec'd into `sleep` under the same pid)
    // was killed with the run.
    let dump_pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while unsafe { libc::kill(dump_pid, 0) } == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_dump (pid {dump_pid}) still running after drctl stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nix_kill(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

#[test]
fn environment_overrides_apply_and_bad_ones_are_named() {
    let mut w = local_world("APP_DATABASE_URL", "");
    // `config check` resolves url_env: the variable must be there.
    w.set_env("APP_DATABASE_URL", &pg().url("postgres"));
    w.set_env("DRCTL_JOBS__APPDB__COMPRESSION", "gzip");
    let r = w.drctl(&["config", "check"]);
    r.ok();
    assert!(r.stdout.contains("compression = \"gzip\""), "{}", r.stdout);
    w.set_env("DRCTL_JOBS__APPDB__COMPRESSION", "lz4");
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("lz4") && r.stderr.contains("DRCTL_JOBS__APPDB__COMPRESSION"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn an_s3_store_dying_mid_upload_fails_the_run_with_the_stores_error() {
    let pg = pg();
    let db = pg.create_db("s3cut");
    pg.psql(&db, "CREATE TABLE blob AS SELECT i, decode(string_agg(md5(i::text || '-' || j::text), ''), 'hex') AS b FROM generate_series(1, 1500) i, generate_series(1, 512) j GROUP BY i");
    let bucket = s3().create_bucket().await;
    let upstream = s3().endpoint.trim_start_matches("http://").to_owned();
    let port = cutting_proxy(upstream, 7 * 1024 * 1024);
    let body = |endpoint: &str| {
        format!(
            "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\npath_style = true\npart_size = \"5MiB\"\nupload_concurrency = 1\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\ncompression = \"none\"\n"
        )
    };
    let mut w = World::new(&body(&format!("http://127.0.0.1:{port}")));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let r = w.drctl(&["run", "appdb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let last = r.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("repository offsite") && last.contains("database.dump"),
        "the store's failure is the reported cause: {last}"
    );
    let runs = w.state().await.runs(Some("appdb"), 5).await.unwrap();
    assert_eq!(runs[0].status, "failed");

    // Seen directly, the bucket holds no backup and no complete dump object.
    let direct = World::new(&body(&s3().endpoint));
    assert!(
        direct
            .drctl(&["backups", "appdb", "--json"])
            .ok()
            .stdout
            .trim()
            == "[]"
    );
    let objects = s3()
        .client()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        objects
            .contents()
            .iter()
            .all(|o| !o.key().unwrap_or("").ends_with("database.dump")
                && !o.key().unwrap_or("").ends_with("manifest.json")),
        "{:?}",
        objects.contents()
    );
}

#[test]
fn child_output_is_kept_with_the_run_and_scrubbed_of_secrets() {
    let pg = pg();
    let db = pg.create_db("chatty");
    // A tool that talks on stderr, even (badly) echoing the password it was given.
    let bin = tool_wrappers(&[(
        "pg_dump",
        r#"if [ "$1" = "--version" ]; then exec "$REAL" --version; fi
echo "pg_dump: warning: this server is chatty; secret was $(cut -d: -f5 "$PGPASSFILE")" >&2
exec "$REAL" "$@""#,
    )]);
    let mut w = local_world(
        "APP_DATABASE_URL",
        &format!("pg_bindir = \"{}\"", bin.display()),
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let r = w.drctl(&["run", "appdb"]);
    r.ok();
    assert!(
        r.stderr.contains("this server is chatty; secret was ***"),
        "logged with tracing: {}",
        r.stderr
    );
    let logs = w.drctl(&["logs", "appdb", "--json"]);
    logs.ok();
    let runs: Vec<serde_json::Value> = serde_json::from_str(&logs.stdout).unwrap();
    let output = runs[0]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("this server is chatty; secret was ***"),
        "{output}"
    );
    let text = w.drctl(&["logs", "appdb"]).ok().stdout.clone();
    assert!(text.contains("chatty"), "{text}");
    assert!(!format!("{}{}{}", r.all(), logs.stdout, text).contains(PG_PASSWORD));
}

#[test]
fn restore_hooks_stop_and_start_the_application_around_the_restore() {
    let pg = pg();
    let db = pg.create_db("hooks");
    pg.seed(&db, &unique("hooks_owner"), 50);
    let at_backup = pg.fingerprint(&db);
    let hooks = "[jobs.appdb.restore]\nbefore = [[\"sh\", \"-c\", \"echo stop >> {dir}/app.log; env > {dir}/hook.env\"]]\nafter = [[\"sh\", \"-c\", \"echo start >> {dir}/app.log\"]]\ntimeout = \"30s\"\n";
    let mut w = local_world("APP_DATABASE_URL", hooks);
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let log = w.dir.join("app.log");
    let app_log = || std::fs::read_to_string(&log).unwrap_or_default();
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    let damaged = pg.fingerprint(&db);

    // The plan shows the hooks around the steps; a refused restore (no
    // --yes) stops nothing.
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--dry-run",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(steps[0].starts_with("before hook: sh -c"), "{steps:?}");
    assert!(
        steps.last().unwrap().starts_with("after hook: sh -c"),
        "{steps:?}"
    );
    let r = w.drctl(&["restore", "--latest", "--job", "appdb"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(app_log(), "");

    // Stop, restore, start; the report carries what each hook did.
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(app_log(), "stop\nstart\n");
    assert_eq!(pg.fingerprint(&db), at_backup);
    let ran = report["hooks"].as_array().unwrap();
    assert_eq!(ran.len(), 2, "{report}");
    assert!(
        ran.iter()
            .all(|h| h["ok"] == true && h["status"] == "exit 0"),
        "{report}"
    );
    // Hooks get the allow-listed environment, never drctl's secrets.
    let env = std::fs::read_to_string(w.dir.join("hook.env")).unwrap();
    assert!(
        !env.contains("APP_DATABASE_URL") && !env.contains("AWS_SECRET"),
        "{env}"
    );

    // --no-hooks skips them.
    std::fs::remove_file(&log).unwrap();
    w.drctl(&[
        "restore",
        "--id",
        &id,
        "--job",
        "appdb",
        "--yes",
        "--no-hooks",
    ])
    .ok();
    assert_eq!(app_log(), "");

    // A failing `before` aborts with the target untouched, and the `after`
    // hooks bring the application back.
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        text.replace("echo stop >> ", "echo stop >> {dir}/app.log; exit 9; echo ")
            .replace("{dir}", &w.dir.display().to_string()),
    )
    .unwrap();
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("before hook")
            && r.stderr.contains("exit 9")
            && r.stderr.contains("nothing was restored"),
        "{}",
        r.stderr
    );
    assert_eq!(pg.fingerprint(&db), damaged);
    assert_eq!(app_log(), "stop\nstart\n");

    // A restore that fails (a corrupted artifact) still starts the
    // application again, on the untouched database.
    std::fs::write(
        &w.config,
        text.replace("{dir}", &w.dir.display().to_string()),
    )
    .unwrap();
    std::fs::remove_file(&log).unwrap();
    w.corrupt_artifact("appdb", &id, "database.dump");
    let r = w.drctl(&["restore", "--id", &id, "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(app_log(), "stop\nstart\n");
    assert_eq!(pg.fingerprint(&db), damaged);
}

#[test]
fn a_restore_into_a_server_older_than_the_dumps_source_is_refused_untouched() {
    let pg = pg();
    let db = pg.create_db("older");
    pg.seed(&db, &unique("older_owner"), 20);
    let mut w = local_world("APP_DATABASE_URL", "");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    // The backup claims a source newer than this server: as if taken on
    // PostgreSQL 99 and restored during an incident on an old host.
    let path = w.repo_dir().join("appdb").join(&id).join("manifest.json");
    let mut m = manifest(&w, "appdb", &id);
    m["source"]["server_version"] = "99.1 (Debian 99.1-1)".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    pg.psql(&db, "DELETE FROM billing.payment");
    let damaged = pg.fingerprint(&db);

    let fresh = unique("older_fresh");
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--to",
        &pg.url(&fresh),
        "--yes",
    ]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("PostgreSQL 99") && r.stderr.contains("older server"),
        "{}",
        r.stderr
    );
    assert!(!pg.db_exists(&fresh), "a refused restore creates nothing");
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(pg.fingerprint(&db), damaged);
}

#[test]
fn safety_copies_older_than_safety_copy_keep_are_dropped_after_a_restore() {
    let pg = pg();
    let db = pg.create_db("keep");
    pg.seed(&db, &unique("keep_owner"), 20);
    let mut w = local_world("APP_DATABASE_URL", "safety_copy_keep = \"7d\"");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();
    // Two earlier incidents left safety copies: one a month old, one from yesterday.
    let old = format!("{db}_pre_restore_20200101000000");
    let recent = format!(
        "{db}_pre_restore_{}",
        (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y%m%d%H%M%S")
    );
    for name in [&old, &recent] {
        pg.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(
        report["safety_copies_dropped"],
        serde_json::json!([old.clone()]),
        "{report}"
    );
    assert!(!pg.db_exists(&old));
    assert!(pg.db_exists(&recent), "younger than safety_copy_keep");
    let fresh = report["safety_copy"].as_str().unwrap();
    assert!(pg.db_exists(fresh), "the copy this restore made stays");
}

#[test]
fn undo_swaps_the_safety_copy_back_and_can_itself_be_undone() {
    let pg = pg();
    let db = pg.create_db("undo");
    pg.seed(&db, &unique("undo_owner"), 50);
    let mut w = local_world("APP_DATABASE_URL", "rto = \"1h\"\n");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let undo = ["restore", "--undo", "--job", "appdb", "--yes"];

    // Nothing restored yet: nothing to undo.
    let r = w.drctl(&undo);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("no safety copy"), "{}", r.stderr);

    w.drctl(&["run", "appdb"]).ok();
    let at_backup = pg.fingerprint(&db);
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    let before_restore = pg.fingerprint(&db);
    w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"])
        .ok();
    assert_eq!(pg.fingerprint(&db), at_backup);

    // Without consent nothing is touched; the plan names the copy.
    let r = w.drctl(&["restore", "--undo", "--job", "appdb"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(pg.fingerprint(&db), at_backup);
    let r = w.drctl(&["restore", "--undo", "--job", "appdb", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    let copy = plan["backup_id"].as_str().unwrap().to_owned();
    assert!(copy.starts_with(&format!("{db}_pre_restore_")), "{plan}");
    assert_eq!(pg.fingerprint(&copy), before_restore);
    let r = w.drctl(&[
        "restore", "--undo", "--job", "appdb", "--yes", "--copy", "nope",
    ]);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains(&copy), "{}", r.stderr);

    // The undo puts the replaced data back, and keeps what it replaced.
    let r = w.drctl(&undo);
    r.ok();
    assert_eq!(pg.fingerprint(&db), before_restore);
    assert!(r.stderr.contains("kept as"), "{}", r.stderr);
    let appdb = w.job_status("appdb");
    let copies = appdb["safety_copies"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{appdb}");
    let kept = copies[0]["database"].as_str().unwrap();
    assert_eq!(pg.fingerprint(kept), at_backup);
    assert!(copies[0]["bytes"].as_i64().unwrap() > 0, "{appdb}");
    let last = &appdb["last_restore"];
    assert_eq!(last["action"], "undo", "{appdb}");
    assert_eq!(last["outcome"], "done", "{appdb}");
    assert_eq!(last["phases"][0]["phase"], "swap", "{appdb}");
    let text = w.drctl(&["status"]).ok().stdout.clone();
    assert!(
        text.contains(&format!("safety copy {kept}")) && text.contains("last undo"),
        "{text}"
    );

    // An undo can be undone.
    w.drctl(&undo).ok();
    assert_eq!(pg.fingerprint(&db), at_backup);

    // The job's log and the DR report carry the restore and both undos,
    // measured against the job's RTO.
    let logs = w.drctl(&["logs", "appdb"]).ok().stdout.clone();
    assert!(logs.contains("restores (newest last):"), "{logs}");
    assert_eq!(logs.matches("  undo ").count(), 2, "{logs}");
    assert_eq!(logs.matches("  restore ").count(), 1, "{logs}");
    let md = w
        .drctl(&["drill", "report", "--since", "1d"])
        .ok()
        .stdout
        .clone();
    assert!(md.contains("## Real restores"), "{md}");
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.contains("| appdb |") && l.contains("| done |"))
        .collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(rows.iter().all(|l| l.ends_with("| 1h | within |")), "{md}");
}

#[test]
fn a_restore_verified_by_a_health_check_waits_for_the_service_and_exits_9_when_it_stays_down() {
    let pg = pg();
    let db = pg.create_db("verify_health");
    pg.seed(&db, &unique("verify_owner"), 30);
    let api = HttpReceiver::start();
    let health = format!(
        "[jobs.appdb.restore]\nverify = [\"api\"]\nverify_timeout = \"20s\"\n\n[jobs.api]\ntype = \"health\"\n[[jobs.api.checks]]\ntype = \"http\"\nurl = \"{}\"\nretries = 0\ntimeout = \"2s\"\n",
        api.url("/health")
    );
    let mut w = local_world("APP_DATABASE_URL", &health);
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();
    let at_backup = pg.fingerprint(&db);
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");

    // The application answers 503 twice while it starts, then 200.
    api.queue_statuses(&[503, 503]);
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(pg.fingerprint(&db), at_backup);
    assert_eq!(report["verify"][0]["job"], "api", "{report}");
    assert_eq!(report["verify"][0]["ok"], true, "{report}");
    assert_eq!(report["verify"][0]["attempts"], 3, "{report}");
    assert_eq!(api.requests("/health").len(), 3);
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["fetch", "restore", "swap", "health"], "{report}");

    // It stays down: the data is restored, the exit status says the
    // service did not come back.
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, text.replace("\"20s\"", "\"3s\"")).unwrap();
    api.queue_statuses(&[503; 50]);
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 9, "{}", r.all());
    assert!(
        r.stderr.contains("verify check api still failing") && r.stderr.contains("503"),
        "{}",
        r.stderr
    );
    assert_eq!(pg.fingerprint(&db), at_backup, "the data went in");
    let appdb = w.job_status("appdb");
    assert_eq!(appdb["last_restore"]["health"], "failed", "{appdb}");

    // A health job named in verify must be a health job.
    std::fs::write(
        &w.config,
        text.replace("verify = [\"api\"]", "verify = [\"appdb\"]"),
    )
    .unwrap();
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("jobs.appdb.restore.verify[0]")
            && r.stderr.contains("expected a health job"),
        "{}",
        r.stderr
    );
}

/// `rate_limit` on the loopback S3 server: a 6 MiB incompressible backup
/// at 2 MiB/s takes at least the time the limit allows, up and down, and
/// the restored bytes are the original ones. (Lower bounds only: a loaded
/// machine can make a run slower, never faster than its limit.)
#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_holds_uploads_and_downloads_to_the_configured_rate() {
    let bucket = s3().create_bucket().await;
    let src = scratch_dir("drctl-rate-src-");
    let mut bytes = vec![0u8; 6 << 20];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut bytes)
            .unwrap();
    }
    std::fs::write(src.join("blob.bin"), &bytes).unwrap();
    let w = World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\npart_size = \"5MiB\"\nrate_limit = \"2MiB/s\"\n\
         [jobs.blob]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"offsite\"\ncompression = \"none\"\n",
        s3().endpoint,
        src.display()
    ));
    let limit = 2.0 * 1024.0 * 1024.0;
    let started = std::time::Instant::now();
    let run = tokio::task::spawn_blocking({
        let mut c = w.command(&["run", "blob"]);
        move || Run::from(c.output().unwrap())
    })
    .await
    .unwrap();
    run.ok();
    let up = started.elapsed().as_secs_f64();
    let stored = bytes.len() as f64;
    assert!(
        stored / up <= limit * 1.1,
        "uploaded {stored} B in {up:.2} s: {:.2} MiB/s over the 2 MiB/s limit",
        stored / up / 1048576.0
    );

    let out = scratch_dir("drctl-rate-out-").join("a");
    let started = std::time::Instant::now();
    let restored = tokio::task::spawn_blocking({
        let mut c = w.command(&[
            "restore",
            "--job",
            "blob",
            "--latest",
            "--to",
            out.to_str().unwrap(),
        ]);
        move || Run::from(c.output().unwrap())
    })
    .await
    .unwrap();
    restored.ok();
    let down = started.elapsed().as_secs_f64();
    assert!(
        stored / down <= limit * 1.1,
        "downloaded {stored} B in {down:.2} s: over the limit"
    );
    let back = std::fs::read(out.join(src.strip_prefix("/").unwrap()).join("blob.bin")).unwrap();
    assert!(back == bytes, "restored bytes differ");
}

/// `nice` and `io_priority`: pg_dump and pg_restore run at them (read by
/// the tools themselves from /proc and ionice), drctl itself does not.
#[test]
fn pg_dump_and_pg_restore_run_at_the_jobs_nice_and_io_priority() {
    let pg = pg();
    let db = pg.create_db("prio");
    pg.seed(&db, &unique("prio_owner"), 50);
    let seen = scratch_dir("drctl-prio-");
    let record = |tool: &str| {
        format!(
            "[ \"$1\" = --version ] || echo \"{tool} $(awk '{{print $19}}' /proc/$$/stat) $(ionice -p $$)\" >> {}/seen\nexec \"$REAL\" \"$@\"",
            seen.display()
        )
    };
    let (dump, restore) = (record("pg_dump"), record("pg_restore"));
    let bin = tool_wrappers(&[("pg_dump", &dump), ("pg_restore", &restore)]);
    let mut w = local_world(
        "APP_DATABASE_URL",
        &format!(
            "pg_bindir = \"{}\"\nnice = 15\nio_priority = \"idle\"",
            bin.display()
        ),
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();
    let target = pg.create_db("prio_to");
    w.drctl(&["restore", "--latest", "--to", &pg.url(&target), "--yes"])
        .ok();
    let lines = std::fs::read_to_string(seen.join("seen")).unwrap();
    let dumps: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("pg_dump "))
        .collect();
    let restores: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("pg_restore "))
        .collect();
    assert!(!dumps.is_empty() && !restores.is_empty(), "{lines}");
    for l in dumps.iter().chain(&restores) {
        assert!(l.ends_with(" 15 idle"), "{l}\n{lines}");
    }
    assert_eq!(pg.fingerprint(&db), pg.fingerprint(&target));
    // Out of range: refused with the key named.
    let msg = config_error(
        "[repositories.l]\ntype = \"local\"\npath = \"/tmp/x\"\n[jobs.a]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\nrepository = \"l\"\nnice = -5\n",
    );
    assert!(
        msg.contains("jobs.a.nice") && msg.contains("0 to 19"),
        "{msg}"
    );
}

#[test]
fn row_counts_come_from_the_archive_and_match_count_star_for_partitions_inheritance_and_odd_rows() {
    let pg = pg();
    let src = pg.create_db("rows_src");
    pg.psql(
        &src,
        r#"CREATE TABLE plain (v text);
           INSERT INTO plain VALUES (E'two\nlines'), ('\.'), (E'back\\slash'), (E'\\.\n\n'), ('');
           CREATE TABLE empty (v int);
           CREATE SCHEMA "Sales";
           CREATE TABLE "Sales"."Big Orders" (at date, n int) PARTITION BY RANGE (at);
           CREATE TABLE "Sales"."Big Orders 2025" PARTITION OF "Sales"."Big Orders" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
           CREATE TABLE "Sales"."Big Orders 2026" PARTITION OF "Sales"."Big Orders" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
           INSERT INTO "Sales"."Big Orders" SELECT DATE '2025-03-01' + g, g FROM generate_series(1, 400) g;
           CREATE TABLE parent (n int);
           CREATE TABLE kid () INHERITS (parent);
           INSERT INTO parent SELECT generate_series(1, 2);
           INSERT INTO kid SELECT generate_series(1, 5);
           CREATE TABLE "odd, name.dot" (n int);
           INSERT INTO "odd, name.dot" VALUES (1), (2);
           CREATE UNLOGGED TABLE scratch (n int);
           INSERT INTO scratch VALUES (1);
           SELECT lo_from_bytea(0, E'a large\nobject\n'::bytea);"#,
    );
    let mut w = local_world("APP_DATABASE_URL", "globals = false");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let manifest = manifest(&w, "appdb", &id);
    let listed: Vec<(String, String, i64)> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["schema"].as_str().unwrap().to_owned(),
                t["name"].as_str().unwrap().to_owned(),
                t["rows"].as_i64().expect("every table has a count"),
            )
        })
        .collect();
    let names: Vec<&str> = listed.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Big Orders",
            "empty",
            "kid",
            "odd, name.dot",
            "parent",
            "plain",
            "scratch"
        ],
        "partitions are counted in their table, not listed"
    );
    for (schema, name, rows) in &listed {
        let sql = format!("SELECT count(*) FROM \"{schema}\".\"{name}\"");
        assert_eq!(pg.psql(&src, &sql), rows.to_string(), "{schema}.{name}");
    }
    let rows = |n: &str| listed.iter().find(|t| t.1 == n).unwrap().2;
    assert_eq!(
        (
            rows("plain"),
            rows("Big Orders"),
            rows("parent"),
            rows("kid")
        ),
        (5, 400, 7, 5)
    );

    // The same counts hold in a restored copy.
    let target = unique("rows_dst");
    w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--to",
        &pg.url(&target),
        "--jobs",
        "2",
    ])
    .ok();
    for (schema, name, rows) in &listed {
        let sql = format!("SELECT count(*) FROM \"{schema}\".\"{name}\"");
        assert_eq!(pg.psql(&target, &sql), rows.to_string(), "{schema}.{name}");
    }
}

/// A pg_restore wrapper for restores into `tmp`: each call logs the size
/// of the temporary dump file when it starts, its list's entries and its
/// arguments (`SIZE [ID,ID,] ARGS`); data loads fail while `fail` exists.
struct LoggedRestores {
    bin: PathBuf,
    log: PathBuf,
    fail: PathBuf,
    tmp: PathBuf,
}

fn logged_restores(prefix: &str) -> LoggedRestores {
    let dir = scratch_dir(prefix);
    let (log, fail, tmp) = (
        dir.join("pg_restore.log"),
        dir.join("fail"),
        dir.join("tmp"),
    );
    std::fs::create_dir_all(&tmp).unwrap();
    let bin = tool_wrappers(&[(
        "pg_restore",
        &format!(
            r#"if [ "$1" = "--version" ]; then exec "$REAL" --version; fi
f=$(ls {tmp}/.drctl-restore-*.dump 2>/dev/null | head -n 1)
list=$(for a in "$@"; do case "$a" in --use-list=*) tr '\n' ',' < "${{a#--use-list=}}";; esac; done)
echo "$(if [ -n "$f" ]; then stat -c %s "$f"; else echo 0; fi) [$list] $*" >> {log}
case "$*" in *--section=data*) if [ -e {fail} ]; then echo "pg_restore: error: simulated load failure" >&2; exit 1; fi;; esac
exec "$REAL" "$@""#,
            log = log.display(),
            fail = fail.display(),
            tmp = tmp.display()
        ),
    )]);
    LoggedRestores {
        bin,
        log,
        fail,
        tmp,
    }
}

impl LoggedRestores {
    /// `drctl restore --latest --jobs 2` into `target`, through `tmp`.
    fn restore(&self, w: &World, pg: &Pg, target: &str) -> Run {
        let tmp = self.tmp.display().to_string();
        w.drctl(&[
            "restore",
            "--latest",
            "--to",
            &pg.url(target),
            "--jobs",
            "2",
            "--tmp-dir",
            &tmp,
        ])
    }

    /// With a failing load: the restore fails naming it, the half-loaded
    /// database is dropped and no temporary file stays.
    fn a_failed_load_leaves_nothing(&self, w: &World, pg: &Pg, prefix: &str) {
        std::fs::write(&self.fail, "").unwrap();
        let target = unique(prefix);
        let r = self.restore(w, pg, &target);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("simulated load failure"), "{}", r.stderr);
        assert!(
            !pg.db_exists(&target),
            "the half-loaded database is dropped"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&self.tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_file(&self.fail).unwrap();
    }
}

#[test]
fn a_restore_loads_tables_while_the_dump_is_still_arriving_and_a_failed_load_leaves_nothing() {
    let pg = pg();
    let src = pg.create_db("pipe_src");
    pg.psql(
        &src,
        "CREATE TABLE a (id int PRIMARY KEY, body text);
         INSERT INTO a SELECT g, md5(g::text) || md5((g * 3)::text) FROM generate_series(1, 30000) g;
         CREATE TABLE b (id int REFERENCES a, body text);
         INSERT INTO b SELECT * FROM a;
         CREATE INDEX b_body ON b (body);
         CREATE SEQUENCE s; SELECT setval('s', 42);",
    );
    let logged = logged_restores("drctl-pipe-");
    // A slow download (1 MiB/s) leaves time to load while fetching.
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\nrate_limit = \"1MiB/s\"\n\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\nglobals = false\npg_bindir = \"{}\"\n",
        logged.bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.drctl(&["run", "appdb"]).ok();

    let target = unique("pipe_dst");
    logged.restore(&w, pg, &target).ok();
    let calls = std::fs::read_to_string(&logged.log).unwrap();
    let size_at = |what: &str| -> Vec<u64> {
        calls
            .lines()
            .filter(|l| l.contains(what))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    // The last pass, after the verified fetch, sees the whole file.
    let whole = size_at("--section=post-data --jobs=2");
    assert_eq!(whole.len(), 1, "{calls}");
    // Table a's primary key is built while b's data still arrives.
    let early: Vec<u64> = calls
        .lines()
        .filter(|l| l.contains("--section=post-data") && !l.contains("--jobs"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(early.first().is_some_and(|s| *s < whole[0]), "{calls}");
    // Loaders of a block read the archive from their stdin (no file
    // argument): both tables started loading before the dump was whole.
    let streamed: Vec<u64> = calls
        .lines()
        .filter(|l| l.contains("--section=data") && !l.contains(".drctl-restore-"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(streamed.len(), 2, "a loader per table block: {calls}");
    assert!(streamed.iter().all(|s| *s < whole[0]), "{calls}");
    assert!(size_at("--section=pre-data")[0] < whole[0], "{calls}");
    for (sql, want) in [
        ("SELECT count(*) FROM a", "30000"),
        ("SELECT count(*) FROM b", "30000"),
        ("SELECT last_value FROM s", "42"),
        (
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'b_body'",
            "1",
        ),
        (
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
            "1",
        ),
    ] {
        assert_eq!(pg.psql(&target, sql), want, "{sql}");
    }

    // A load that fails: the new database is dropped, no temporary file stays.
    logged.a_failed_load_leaves_nothing(&w, pg, "pipe_fail");
}

#[test]
fn from_a_local_repository_each_loader_reads_the_archive_itself_largest_table_first() {
    let pg = pg();
    let src = pg.create_db("cursor_src");
    pg.psql(
        &src,
        "CREATE TABLE a_small (id int PRIMARY KEY, v text);
         INSERT INTO a_small SELECT g, g::text FROM generate_series(1, 100) g;
         CREATE TABLE b_small (id int PRIMARY KEY REFERENCES a_small, v text);
         INSERT INTO b_small SELECT g, g::text FROM generate_series(1, 100) g;
         CREATE TABLE m_mid (id int PRIMARY KEY, body text);
         INSERT INTO m_mid SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CREATE TABLE z_big (id int PRIMARY KEY, body text);
         INSERT INTO z_big SELECT g, md5(g::text) || md5((g * 3)::text) FROM generate_series(1, 60000) g;
         CREATE INDEX z_big_body ON z_big (body);
         CREATE SEQUENCE s; SELECT setval('s', 42);
         ANALYZE;",
    );
    let logged = logged_restores("drctl-cursor-");
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\nglobals = false\npg_bindir = \"{}\"\n",
        logged.bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.drctl(&["run", "appdb"]).ok();
    let object = std::fs::read_dir(w.repo_dir().join("appdb"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("database.dump.zst"))
        .find(|p| p.exists())
        .unwrap();
    let ids = |name: &str| -> String {
        // The archive's id of a table's data, from pg_restore's listing.
        let dump = logged.tmp.with_file_name("plain.dump");
        let zst = std::process::Command::new("zstd")
            .args(["-q", "-d", "-f", "-o"])
            .arg(&dump)
            .arg(&object)
            .status()
            .unwrap();
        assert!(zst.success());
        let listing = std::process::Command::new(pg_bin("pg_restore"))
            .arg("-l")
            .arg(&dump)
            .output()
            .unwrap();
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find(|l| l.contains(&format!("TABLE DATA public {name} ")))
            .and_then(|l| l.split(';').next())
            .unwrap()
            .to_string()
    };
    let (big, small_a, small_b) = (ids("z_big"), ids("a_small"), ids("b_small"));

    let target = unique("cursor_dst");
    logged.restore(&w, pg, &target).ok();
    let calls = std::fs::read_to_string(&logged.log).unwrap();
    let loaders: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("--section=data") && !l.contains(".drctl-restore-"))
        .collect();
    // Only the table of contents is written to disk, whatever the data.
    let raw: u64 = calls
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(raw > 0 && raw < 64 * 1024, "{calls}");
    // Three loaders (the big table first; the mid one; the small ones
    // together), each fed on its stdin.
    assert_eq!(loaders.len(), 3, "{calls}");
    assert!(
        loaders[..2].iter().any(|l| l.contains(&format!("[{big},"))),
        "{calls}"
    );
    assert!(
        loaders
            .iter()
            .any(|l| l.contains(&format!("[{small_a},{small_b},"))),
        "{calls}"
    );
    for (sql, want) in [
        ("SELECT count(*) FROM a_small", "100"),
        ("SELECT count(*) FROM b_small", "100"),
        ("SELECT count(*) FROM m_mid", "20000"),
        ("SELECT count(*) FROM z_big", "60000"),
        ("SELECT sum(length(body)) FROM z_big", "3840000"),
        ("SELECT last_value FROM s", "42"),
        (
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'z_big_body'",
            "1",
        ),
        (
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
            "1",
        ),
    ] {
        assert_eq!(pg.psql(&target, sql), want, "{sql}");
    }

    // A stored object with a flipped byte: the checksum's verdict, and
    // the new database is gone again.
    let good = std::fs::read(&object).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() * 2 / 3;
    bad[mid] ^= 0x55;
    std::fs::write(&object, &bad).unwrap();
    let target = unique("cursor_bad");
    let r = logged.restore(&w, pg, &target);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("SHA-256"), "{}", r.stderr);
    assert!(!pg.db_exists(&target), "the database is dropped");
    std::fs::write(&object, &good).unwrap();

    // A loader that fails: named, the database dropped, nothing left over.
    logged.a_failed_load_leaves_nothing(&w, pg, "cursor_fail");
}

/// A restore SIGKILLed after its `before` hooks stopped the application:
/// the next `drctl status` finds it, runs the `after` hooks (the
/// application comes back, on the untouched database), says so, and a
/// second `status` does not run them again.
#[test]
fn a_restore_killed_after_its_before_hooks_brings_the_application_back_at_the_next_status() {
    let pg = pg();
    let db = pg.create_db("hookkill");
    pg.seed(&db, &unique("hookkill_owner"), 20);
    let hooks = "[jobs.appdb.restore]\nbefore = [[\"sh\", \"-c\", \"echo stop >> {dir}/app.log\"]]\nafter = [[\"sh\", \"-c\", \"echo start >> {dir}/app.log\"]]\ntimeout = \"30s\"\n";
    let mut w = local_world("APP_DATABASE_URL", hooks);
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();
    let untouched = pg.fingerprint(&db);
    let log = w.dir.join("app.log");
    let app_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let restore = paused_at(
        &w,
        "restore.app.stopped",
        &["restore", "--latest", "--job", "appdb", "--yes"],
    );
    assert_eq!(app_log(), "stop\n");
    restore.kill();
    let r = w.drctl(&["status"]);
    r.ok();
    assert!(
        r.stderr.contains("it had stopped the application") && r.stderr.contains("after hook"),
        "{}",
        r.stderr
    );
    assert_eq!(app_log(), "stop\nstart\n");
    assert_eq!(pg.fingerprint(&db), untouched);
    w.drctl(&["status"]).ok();
    assert_eq!(app_log(), "stop\nstart\n", "brought back once");
    // A restore that ends by itself brings it back itself, once.
    w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"])
        .ok();
    w.drctl(&["status"]).ok();
    assert_eq!(app_log(), "stop\nstart\nstop\nstart\n");
}
