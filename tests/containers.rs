//! Restore procedures with containers, against a private Docker engine
//! (Debian's docker.io, `--network none`, images built offline from this
//! host's binaries) and the real PostgreSQL cluster of this test binary.
// Each test is one end-to-end scenario told in order.
#![allow(clippy::too_many_lines)]

mod common;

use common::docker::Dockerd;
use common::*;
use std::time::Duration;

/// An "application" container: healthy one second after it starts (its
/// healthcheck looks for /tmp/ready), stopped quickly (`--init`).
fn run_app(d: &Dockerd, name: &str, labels: &[&str], running: bool) {
    run_app_of(d, "tools:1", name, labels, running);
}

fn run_app_of(d: &Dockerd, image: &str, name: &str, labels: &[&str], running: bool) {
    let mut args = vec![
        if running { "run" } else { "create" },
        "--name",
        name,
        "--network",
        "none",
        "--init",
        "--stop-timeout",
        "2",
        "--health-cmd",
        "test -f /tmp/ready",
        "--health-interval",
        "1s",
        "--health-start-period",
        "0s",
    ];
    if running {
        args.push("-d");
    }
    for l in labels {
        args.extend(["--label", l]);
    }
    args.extend([
        image,
        "/bin/sh",
        "-c",
        "rm -f /tmp/ready; sleep 1; touch /tmp/ready; exec sleep 100000",
    ]);
    d.ok(&args);
}

fn started_at(d: &Dockerd, name: &str) -> String {
    d.inspect(name, "{{.State.StartedAt}}")
}

fn health(d: &Dockerd, name: &str) -> String {
    d.inspect(name, "{{.State.Running}} {{.State.Health.Status}}")
}

#[test]
fn a_restore_stops_the_application_containers_and_starts_them_again_healthy() {
    let d = common::docker::shared();
    d.import_host_binaries(
        "tools:1",
        &["/bin/sh", "/bin/sleep", "/bin/touch", "/bin/rm"],
        &[],
    );
    let api = [
        "com.docker.compose.project=shop",
        "com.docker.compose.service=api",
    ];
    run_app(d, "shop-api-1", &api, true);
    run_app(d, "shop-api-2", &api, false); // a replica that is not running
    run_app(d, "worker-1", &[], true);
    wait_until(
        Duration::from_secs(30),
        "the application to be healthy",
        || health(d, "shop-api-1") == "true healthy" && health(d, "worker-1") == "true healthy",
    );

    let pg = pg();
    let db = pg.create_db("containers");
    pg.seed(&db, &unique("containers_owner"), 40);
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n\n\
         [jobs.appdb.restore]\nstop = [{{ project = \"shop\", service = \"api\" }}, \"worker-1\"]\n\
         docker_socket = \"{}\"\ntimeout = \"30s\"\n",
        d.socket.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let at_backup = pg.fingerprint(&db);
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    let damaged = pg.fingerprint(&db);

    // The plan names what will be stopped and started.
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--dry-run"]);
    r.ok();
    assert!(
        r.stderr
            .contains("stop compose service api of project shop")
            && r.stderr.contains("start container worker-1 again"),
        "{}",
        r.stderr
    );
    let api_started = started_at(d, "shop-api-1");
    let worker_started = started_at(d, "worker-1");

    // Stop, restore, start (waiting for healthy); the stopped replica is
    // left alone.
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(pg.fingerprint(&db), at_backup);
    let ran: Vec<String> = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["argv"].as_array().unwrap()[1..]
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" "),
                h["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            "stop shop-api-1 stopped",
            "stop shop-api-2 not running; left as it is",
            "stop worker-1 stopped",
            "start worker-1 healthy",
            "start shop-api-1 healthy",
        ],
        "{report}"
    );
    assert_eq!(health(d, "shop-api-1"), "true healthy");
    assert_eq!(health(d, "worker-1"), "true healthy");
    assert_ne!(started_at(d, "shop-api-1"), api_started, "restarted");
    assert_ne!(started_at(d, "worker-1"), worker_started, "restarted");
    assert_eq!(d.inspect("shop-api-2", "{{.State.Running}}"), "false");
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "stop_containers",
            "fetch",
            "restore",
            "swap",
            "start_containers"
        ],
        "{report}"
    );

    // A restore that fails (a corrupted artifact) still starts them again,
    // on the untouched database.
    pg.psql(&db, "DELETE FROM billing.payment WHERE result = 'paid'");
    w.corrupt_artifact("appdb", &id, "database.dump");
    let api_started = started_at(d, "shop-api-1");
    let r = w.drctl(&["restore", "--id", &id, "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(pg.fingerprint(&db), damaged);
    assert_ne!(
        started_at(d, "shop-api-1"),
        api_started,
        "stopped and started"
    );
    assert_eq!(health(d, "shop-api-1"), "true healthy");
    assert_eq!(health(d, "worker-1"), "true healthy");

    // A container that does not exist stops the restore before anything is
    // stopped or restored.
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        text.replace("\"worker-1\"]", "\"worker-1\", \"gone-1\"]"),
    )
    .unwrap();
    let api_started = started_at(d, "shop-api-1");
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("gone-1") && r.stderr.contains("nothing was restored"),
        "{}",
        r.stderr
    );
    assert_eq!(started_at(d, "shop-api-1"), api_started, "never stopped");
    assert_eq!(pg.fingerprint(&db), damaged);

    // A wrong entry is a config error naming the key.
    std::fs::write(
        &w.config,
        text.replace("service = \"api\" }", "svc = \"api\" }"),
    )
    .unwrap();
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("jobs.appdb.restore.stop") && r.stderr.contains("svc"),
        "{}",
        r.stderr
    );
}

const PG_SECRET: &str = "c0ntainer-Secret-77";

/// PostgreSQL in a container on `--network none` (no port anywhere),
/// labelled as Compose's service `postgres` of project `catalog`, with
/// password authentication on its Unix socket.
fn run_postgres(d: &Dockerd, major: u32) {
    let script =
        "printf '%s\\n' \"$POSTGRES_PASSWORD\" > /tmp/pw && \
         initdb -D /var/lib/postgresql/data -U postgres --auth-local=scram-sha-256 --auth-host=scram-sha-256 --pwfile=/tmp/pw --no-locale -E UTF8 >/dev/null && \
         rm /tmp/pw && exec postgres -D /var/lib/postgresql/data -c listen_addresses= -c jit=off -c unix_socket_directories=/var/run/postgresql";
    let path = format!("PATH=/usr/lib/postgresql/{major}/bin:/bin");
    let password = format!("POSTGRES_PASSWORD={PG_SECRET}");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "catalog-postgres-1",
        "--network",
        "none",
        "--user",
        "999:999",
        "--label",
        "com.docker.compose.project=catalog",
        "--label",
        "com.docker.compose.service=postgres",
        "-e",
        &path,
        "-e",
        "TZ=UTC",
        "-e",
        &password,
        "pg:host",
        "/bin/sh",
        "-c",
        script,
    ]);
    wait_until(
        Duration::from_secs(60),
        "PostgreSQL in its container",
        || {
            d.docker(&[
                "exec",
                "-e",
                &format!("PGPASSWORD={PG_SECRET}"),
                "catalog-postgres-1",
                "psql",
                "-h",
                "/var/run/postgresql",
                "-U",
                "postgres",
                "-c",
                "SELECT 1",
            ])
            .status
            .success()
        },
    );
}

/// psql as the superuser inside the container; its output, trimmed.
fn cpsql(d: &Dockerd, db: &str, sql: &str) -> String {
    d.ok(&[
        "exec",
        "-e",
        &format!("PGPASSWORD={PG_SECRET}"),
        "catalog-postgres-1",
        "psql",
        "-h",
        "/var/run/postgresql",
        "-U",
        "postgres",
        "-d",
        db,
        "-v",
        "ON_ERROR_STOP=1",
        "-X",
        "-A",
        "-t",
        "-c",
        sql,
    ])
}

fn fingerprint(d: &Dockerd, db: &str) -> String {
    cpsql(
        d,
        db,
        "SELECT count(*) || ':' || md5(coalesce(string_agg(o::text, ',' ORDER BY id), '')) FROM shop.orders o",
    )
}

#[test]
fn a_postgres_job_in_a_compose_container_backs_up_through_exec_with_no_port_and_no_host_tools() {
    let d = common::docker::shared();
    let major = d.import_host_postgres("pg:host");
    run_postgres(d, major);
    cpsql(
        d,
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{PG_SECRET}'"),
    );
    cpsql(d, "postgres", "CREATE DATABASE catalog OWNER app");
    cpsql(
        d,
        "catalog",
        "CREATE SCHEMA shop AUTHORIZATION app; \
         CREATE TABLE shop.orders (id int PRIMARY KEY, item text, qty int); \
         INSERT INTO shop.orders SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 20000) g; \
         ALTER TABLE shop.orders OWNER TO app; \
         CREATE TABLE shop.\"odd\nname\" (v text); INSERT INTO shop.\"odd\nname\" VALUES ('x'); \
         ALTER TABLE shop.\"odd\nname\" OWNER TO app; \
         CREATE TABLE public.vault (secret text); INSERT INTO public.vault VALUES ('k'); \
         ALTER TABLE public.vault OWNER TO app; REVOKE SELECT ON public.vault FROM app;",
    );
    let at_backup = fingerprint(d, "catalog");
    // R4's application: an `api` service of the same Compose project, and
    // its health endpoint.
    d.import_host_binaries(
        "apptools:1",
        &["/bin/sh", "/bin/sleep", "/bin/touch", "/bin/rm"],
        &[],
    );
    let api = [
        "com.docker.compose.project=catalog",
        "com.docker.compose.service=api",
    ];
    run_app_of(d, "apptools:1", "catalog-api-1", &api, true);
    let endpoint = common::receivers::HttpReceiver::start();

    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\n\
         [jobs.catalog]\ntype = \"postgres\"\nurl_env = \"CATALOG_URL\"\nrepository = \"local\"\n\
         compose = {{ project = \"catalog\", service = \"postgres\" }}\n\
         docker_socket = \"{0}\"\n\
         pg_bindir = \"/nonexistent/no-host-tools\"\n\n\
         [jobs.catalog.restore]\nstop = [{{ project = \"catalog\", service = \"api\" }}]\n\
         docker_socket = \"{0}\"\ntimeout = \"30s\"\nverify = [\"api-health\"]\nverify_timeout = \"20s\"\n\n\
         [jobs.api-health]\ntype = \"health\"\n[[jobs.api-health.checks]]\ntype = \"http\"\nurl = \"{1}\"\nretries = 0\n\n\
         [drills.catalog]\njob = \"catalog\"\njobs = 2\ntarget = {{ job_server = true }}\n\
         [[drills.catalog.checks]]\nsql = \"SELECT count(*) FROM shop.orders WHERE qty = 3\"\nexpect = \">= 1\"\n",
        d.socket.display(),
        endpoint.url("/health")
    ));
    // The host part is read inside the container: its own Unix socket.
    w.set_env(
        "CATALOG_URL",
        &format!("postgres://app:{PG_SECRET}@/catalog?host=/var/run/postgresql"),
    );

    // A table the role may not read: pg_dump fails inside the container,
    // the run fails with its stderr, and nothing is committed.
    let r = w.drctl(&["run", "catalog"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("pg_dump") && r.stderr.contains("permission denied"),
        "{}",
        r.stderr
    );
    assert!(w
        .drctl(&["backups", "catalog", "--json"])
        .ok()
        .stdout
        .contains("[]"));

    // Readable: the backup goes through exec, with the password only in the
    // exec's environment (never in any process's argv).
    cpsql(d, "catalog", "GRANT SELECT ON public.vault TO app");
    let mut child = w
        .command(&["run", "catalog"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = 0;
    while child.try_wait().unwrap().is_none() {
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                assert!(!cmd.contains(PG_SECRET), "the password in argv: {cmd}");
                if cmd.contains("pg_dump") || cmd.contains("psql") {
                    seen += 1;
                }
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(PG_SECRET), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let _ = seen; // how many tool processes the scan caught (timing-dependent)

    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.repo_dir().join("catalog").join(&id).join("manifest.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        m["source"]["server_version"]
            .as_str()
            .unwrap()
            .starts_with(&major.to_string()),
        "{m}"
    );
    assert!(
        m["source"]["dump_tool_version"]
            .as_str()
            .unwrap()
            .contains("pg_dump"),
        "{m}"
    );
    let count = |schema: &str, name: &str| {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["schema"] == schema && t["name"] == name)
            .map(|t| t["rows"].clone())
    };
    assert_eq!(
        count("shop", "orders"),
        Some(serde_json::json!(20000)),
        "{m}"
    );
    assert_eq!(
        count("shop", "odd\nname"),
        Some(serde_json::json!(1)),
        "{m}"
    );
    assert_eq!(count("public", "vault"), Some(serde_json::json!(1)), "{m}");
    assert_eq!(fingerprint(d, "catalog"), at_backup);

    // Whatever verifies it reads every data block.
    w.drctl(&["verify", "--job", "catalog", "--deep"]).ok();

    // A drill restores into a scratch database of the same server, through
    // the container, checks every row count, and removes it.
    let r = w.drctl(&["drill", "run", "catalog", "--json"]);
    let drill: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(drill["outcome"], "passed", "{drill}");
    assert!(
        drill["target"]
            .as_str()
            .unwrap()
            .contains("in container catalog-postgres-1"),
        "{drill}"
    );
    let rows_checked = drill["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "rows" && c["ok"] == true)
        .count();
    assert_eq!(rows_checked, 3, "{drill}");
    assert_eq!(
        cpsql(
            d,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'drctl_drill_%'"
        ),
        "0"
    );

    // Restores into the job's own database run inside the container too:
    // in parallel from a copy in the container, then streamed.
    let tmp_before = d.ok(&["exec", "catalog-postgres-1", "ls", "/tmp"]);
    for jobs in ["2", "1"] {
        cpsql(d, "catalog", "DELETE FROM shop.orders WHERE id % 3 = 0");
        assert_ne!(fingerprint(d, "catalog"), at_backup);
        let api_started = started_at(d, "catalog-api-1");
        let r = w.drctl(&[
            "restore", "--latest", "--job", "catalog", "--yes", "--jobs", jobs,
        ]);
        r.ok();
        // stop api -> restore -> start api (healthy) -> health endpoint
        assert_ne!(started_at(d, "catalog-api-1"), api_started, "--jobs {jobs}");
        assert_eq!(health(d, "catalog-api-1"), "true healthy");
        assert_eq!(fingerprint(d, "catalog"), at_backup, "--jobs {jobs}");
        assert!(!r.all().contains(PG_SECRET));
    }
    assert_eq!(
        d.ok(&["exec", "catalog-postgres-1", "ls", "/tmp"]),
        tmp_before,
        "the parallel restore's copy is removed"
    );
    // Its safety copies are listed (through the container) and one is
    // swapped back by an undo.
    let catalog = w.job_status("catalog");
    let copies = catalog["safety_copies"].as_array().unwrap().clone();
    assert_eq!(copies.len(), 2, "{catalog}");
    w.drctl(&["restore", "--undo", "--job", "catalog", "--yes"])
        .ok();
    assert_ne!(
        fingerprint(d, "catalog"),
        at_backup,
        "the damaged data is back"
    );
    assert_eq!(
        cpsql(d, "catalog", "SELECT count(*) FROM shop.orders"),
        (20000 - 20000 / 3).to_string()
    );
    assert!(!endpoint.requests("/health").is_empty());

    // And it is all reported: the drill and the real restores with their
    // phases, the health check among them.
    let md = w
        .drctl(&["drill", "report", "--since", "1d"])
        .ok()
        .stdout
        .clone();
    let restores: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("| catalog | restore | done |"))
        .collect();
    assert_eq!(restores.len(), 2, "{md}");
    assert!(
        restores.iter().all(|l| l.contains("stop_containers")
            && l.contains("health")
            && l.contains("| passed |")),
        "{md}"
    );
    assert!(md.contains("| catalog | catalog | passed"), "{md}");
}
