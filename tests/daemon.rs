//! `drctl daemon` with real schedules, real signals and the real binary.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn files_job(name: &str, schedule: &str, src: &std::path::Path) -> String {
    format!(
        "[jobs.{name}]\ntype = \"files\"\npaths = [\"{}\"]\nschedule = \"{schedule}\"\nrepository = \"local\"\n",
        src.display()
    )
}

/// A local repository, and the HTTP endpoint on a free loopback port.
fn local_repo() -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n",
        free_port()
    )
}

/// A world with one files job on `schedule` (a scratch file to archive).
fn files_world(job: &str, schedule: &str) -> World {
    let src = scratch_dir("drctl-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    World::new(&format!(
        "{}{}",
        local_repo(),
        files_job(job, schedule, &src)
    ))
}

fn status(w: &World) -> Vec<serde_json::Value> {
    serde_json::from_str(&w.drctl(&["status", "--json"]).ok().stdout).unwrap()
}

fn runs(w: &World, job: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&w.drctl(&["logs", job, "-n", "1000", "--json"]).ok().stdout).unwrap()
}

/// Runs straight from the state database (the CLI would refuse a broken config).
fn db_succeeded(w: &World, job: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { w.state().await.runs(Some(job), 1000).await.unwrap() })
        .iter()
        .filter(|r| r.status == "succeeded")
        .count()
}

/// Wait until the daemon on `port` exports a run it could not record.
fn wait_unrecorded_counted(port: u16) {
    wait_until(
        Duration::from_secs(30),
        "unrecorded failures counted",
        || {
            http_get(port, "/metrics")
                .1
                .contains("drctl_internal_errors_total{kind=\"run_not_recorded\"}")
        },
    );
}

fn count(runs: &[serde_json::Value], status: &str) -> usize {
    runs.iter().filter(|r| r["status"] == status).count()
}

#[test]
fn metrics_health_and_status_are_served_and_the_exposition_parses() {
    let w = files_world("tick", "* * * * * *");
    let port = http_port(&w);
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(20), "two runs", || {
        count(&runs(&w, "tick"), "succeeded") >= 2
    });
    assert_eq!(http_get(port, "/health"), (200, "ok\n".into()));
    let (code, body) = http_get(port, "/status");
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st[0]["job"], "tick");
    assert!(st[0]["next_run"].is_string());

    // Prometheus's own Accept header gets OpenMetrics (curl gets the
    // classic text format: tests/monitoring.rs lints that with promtool).
    let (code, body) = http_get_with(
        port,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    );
    assert_eq!(code, 200);
    assert!(body.ends_with("# EOF\n"), "{body}");
    let exposition = body;
    // An independent, strict parser: the Python client's OpenMetrics parser.
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nfor f in p(sys.stdin.read()):\n    for s in f.samples:\n        print(s.name, dict(s.labels), s.value)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    parsed
        .stdin
        .as_ref()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = parsed.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exposition rejected: {}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = String::from_utf8_lossy(&out.stdout);
    let succeeded = samples
        .lines()
        .find(|l| l.starts_with("drctl_job_runs_total") && l.contains("'outcome': 'succeeded'"))
        .unwrap_or_else(|| panic!("{samples}"));
    let n: f64 = succeeded.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 2.0, "{succeeded}");
    for name in [
        "drctl_job_last_success_timestamp_seconds",
        "drctl_backup_size_bytes",
        "drctl_job_duration_seconds",
        "drctl_scheduler_up",
        "drctl_scheduler_last_tick_timestamp_seconds",
    ] {
        assert!(samples.contains(name), "{name} missing: {samples}");
    }
    // The job is `job_name`: a `job` label would clash with Prometheus's own.
    assert!(succeeded.contains("'job_name': 'tick'"), "{succeeded}");
    assert!(!samples.contains("'job':"), "{samples}");
    let build = samples
        .lines()
        .find(|l| l.starts_with("drctl_build_info "))
        .unwrap_or_else(|| panic!("{samples}"));
    assert!(
        build.contains(&format!("'version': '{}'", env!("CARGO_PKG_VERSION")))
            && build.contains("'commit': '")
            && build.ends_with(" 1"),
        "{build}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

#[test]
fn a_scheduler_that_stops_firing_turns_health_red_a_minute_after_a_missed_tick() {
    let mut w = files_world("tick", "* * * * * *");
    // Every scheduled tick hangs before it is counted: the scheduler is
    // dead while the process, its HTTP endpoint and its signals live on.
    w.set_env("DRCTL_FAULT_PAUSE", "scheduler.tick");
    let port = http_port(&w);
    let d = Daemon::start(&w);
    wait_for_endpoint(port);
    let started = Instant::now();
    assert_eq!(http_get(port, "/health").0, 200, "green at first");
    wait_until(Duration::from_secs(120), "/health turns red", || {
        http_get(port, "/health").0 == 503
    });
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "not before the minute's grace"
    );
    let (_, body) = http_get(port, "/health");
    assert!(body.contains("scheduler overdue: tick"), "{body}");
    let (_, metrics) = http_get(port, "/metrics");
    assert!(
        metrics.contains("drctl_scheduler_overdue_jobs 1"),
        "{metrics}"
    );
    d.signal(libc::SIGKILL);
}

#[test]
fn a_non_loopback_http_listen_is_refused() {
    let w = World::new("[http]\nlisten = \"0.0.0.0:9187\"\n");
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("http.listen") && r.stderr.contains("loopback"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_one_second_job_fires_repeatedly_and_shows_in_status() {
    let w = files_world("tick", "* * * * * *");
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(20), "three successful runs", || {
        count(&runs(&w, "tick"), "succeeded") >= 3
    });
    let st = status(&w);
    assert_eq!(st[0]["job"], "tick");
    assert_eq!(st[0]["schedule"], "* * * * * *");
    assert!(st[0]["next_run"].is_string());
    let listed = w
        .drctl(&["backups", "tick", "--json"])
        .ok()
        .stdout
        .matches("\"id\"")
        .count();
    assert!(listed >= 3, "each run committed a backup: {listed}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

/// A taken `[http] listen` port (another exporter) does not stop the
/// backups: the daemon logs it, keeps scheduling, and binds once it is free.
#[test]
fn a_taken_metrics_port_is_retried_while_jobs_keep_running() {
    let w = files_world("tick", "* * * * * *");
    let port = http_port(&w);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(20), "two successful runs", || {
        count(&runs(&w, "tick"), "succeeded") >= 2
    });
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("cannot serve /metrics") && log.contains(&port.to_string()),
        "{log}"
    );
    drop(squatter);
    wait_until(
        Duration::from_secs(30),
        "the endpoint bound at last",
        || http_get_opt(port, "/metrics").is_some_and(|(code, _)| code == 200),
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

#[test]
fn a_slow_job_is_never_overlapped_and_drctl_run_is_locked_out() {
    let pg = pg();
    let db = pg.create_db("slow");
    let bin = tool_wrappers(&[("pg_dump", "if [ \"$1\" = \"--version\" ]; then exec \"$REAL\" --version; fi\nsleep 3\nexec \"$REAL\" \"$@\"")]);
    let mut w = World::new(&format!(
        "{}[jobs.slow]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nschedule = \"* * * * * *\"\nrepository = \"local\"\npg_bindir = \"{}\"\nglobals = false\n",
        local_repo(),
        bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "a skipped tick", || {
        count(&runs(&w, "slow"), "skipped") >= 2
    });
    // While the daemon's run holds the host lock, a manual run is refused.
    wait_until(Duration::from_secs(10), "a running run", || {
        count(&runs(&w, "slow"), "running") == 1
    });
    let r = w.drctl(&["run", "slow"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stderr.contains("already running"), "{}", r.stderr);
    wait_until(Duration::from_secs(30), "a success", || {
        count(&runs(&w, "slow"), "succeeded") >= 1
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log());
    // No two runs of the job overlapped in time.
    let mut spans: Vec<(String, String)> = runs(&w, "slow")
        .iter()
        .filter(|r| r["status"] != "skipped")
        .map(|r| {
            (
                r["started_at"].as_str().unwrap().to_owned(),
                r["finished_at"].as_str().unwrap_or("9").to_owned(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlap: {pair:?}");
    }
}

#[test]
fn a_missed_backup_is_caught_up_at_start() {
    // 02:00 daily: whatever the time now, the previous 02:00 has no success.
    let w = files_world("nightly", "0 0 2 * * *");
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(20), "the catch-up run", || {
        count(&runs(&w, "nightly"), "succeeded") == 1
    });
    assert_eq!(runs(&w, "nightly")[0]["trigger"], "catch_up");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    // Restarted right after, nothing is missed any more: no second run.
    let mut d = Daemon::start(&w);
    std::thread::sleep(Duration::from_secs(2));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    assert_eq!(count(&runs(&w, "nightly"), "succeeded"), 1);
}

fn slow_backup_world(sleep_secs: u32, grace: &str) -> (World, std::path::PathBuf) {
    let pg = pg();
    let db = pg.create_db("grace");
    let marker = scratch_dir("drctl-marker-").join("started");
    let bin = tool_wrappers(&[(
        "pg_dump",
        &format!("if [ \"$1\" = \"--version\" ]; then exec \"$REAL\" --version; fi\ntouch {}\nsleep {sleep_secs}\nexec \"$REAL\" \"$@\"", marker.display()),
    )]);
    let mut w = World::new(&format!(
        "[daemon]\ngrace_period = \"{grace}\"\n{}[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nschedule = \"0 0 2 * * *\"\nrepository = \"local\"\npg_bindir = \"{}\"\n",
        local_repo(),
        bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    (w, marker)
}

#[test]
fn sigterm_lets_a_running_backup_finish_within_the_grace_period() {
    let (w, marker) = slow_backup_world(3, "60s");
    let mut d = Daemon::start(&w); // catch-up starts the backup at once
    wait_until(Duration::from_secs(30), "the backup to start", || {
        marker.exists()
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
    let r = runs(&w, "appdb");
    assert_eq!(r[0]["status"], "succeeded", "{r:?}");
    assert_eq!(
        w.drctl(&["backups", "appdb", "--json"])
            .ok()
            .stdout
            .matches("\"id\"")
            .count(),
        1
    );
}

#[test]
fn sigterm_cancels_a_backup_that_outlives_the_grace_period_and_says_so() {
    let (w, marker) = slow_backup_world(60, "1s");
    // Notices go to a real HTTP receiver: started (info), stopped (warning).
    let hook = common::receivers::HttpReceiver::start();
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&format!(
        "[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\nwarning = [\"hook\"]\ninfo = [\"hook\"]\n",
        hook.url("/notices")
    ));
    std::fs::write(&w.config, text).unwrap();
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "the backup to start", || {
        marker.exists()
    });
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log());
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stopped soon after the grace period"
    );
    let r = runs(&w, "appdb");
    assert_eq!(r[0]["status"], "interrupted", "{r:?}");
    assert_eq!(
        w.drctl(&["backups", "appdb", "--json"]).ok().stdout.trim(),
        "[]"
    );
    // Delivered before the process exited: no daemon is left to retry.
    let notices: Vec<serde_json::Value> = hook
        .requests("/notices")
        .iter()
        .map(common::receivers::Request::json)
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert_eq!(notices[0]["kind"], "daemon_started");
    assert_eq!(notices[0]["severity"], "info");
    assert_eq!(notices[1]["kind"], "daemon_stopped");
    assert_eq!(notices[1]["severity"], "warning");
    let summary = notices[1]["summary"].as_str().unwrap();
    assert!(
        summary.contains("jobs still running (appdb)") && summary.contains("cancelled"),
        "{summary}"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let w = files_world("tick", "* * * * * *");
    let good = std::fs::read_to_string(&w.config).unwrap();
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(20), "a first run", || {
        count(&runs(&w, "tick"), "succeeded") >= 1
    });
    std::fs::write(&w.config, good.replace("schedule = ", "shedule = ")).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(10),
        "the reload error in the log",
        || d.log().contains("configuration reload failed"),
    );
    let log = d.log();
    assert!(
        log.contains(w.config.to_str().unwrap()) && log.contains("shedule"),
        "names file and key: {log}"
    );
    let before = db_succeeded(&w, "tick");
    wait_until(
        Duration::from_secs(20),
        "runs to continue on the old config",
        || db_succeeded(&w, "tick") >= before + 2,
    );

    // A valid change is picked up: the job is renamed, the old one stops.
    std::fs::write(&w.config, good.replace("[jobs.tick]", "[jobs.tock]")).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(20), "the renamed job to run", || {
        db_succeeded(&w, "tock") >= 1
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

#[test]
fn systemd_is_told_ready_and_the_status() {
    let mut w = files_world("nightly", "0 0 2 * * *");
    let sock_path = w.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    w.set_env("NOTIFY_SOCKET", sock_path.to_str().unwrap());
    w.set_env("WATCHDOG_USEC", "1000000"); // WatchdogSec=1s: pings every half second
    let mut d = Daemon::start(&w);
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains("STATUS=1 jobs, next: nightly at "), "{msg}");
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let n = sock.recv(&mut buf).expect("WATCHDOG=1 pings");
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pings at half the watchdog interval"
    );
    d.signal(libc::SIGTERM);
    // Heartbeats (STATUS, WATCHDOG) may come first; STOPPING must follow.
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING=1 before the timeout");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
}

#[test]
fn the_shipped_systemd_units_verify_cleanly_and_drctl_service_is_hardened() {
    let dir = scratch_dir("drctl-units-");
    let systemd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    // Templates are verified as an instance; ExecStart must exist, so point it at the test binary.
    for (src, dst) in [
        ("drctl.service", "drctl.service"),
        ("drctl-run@.service", "drctl-run@appdb.service"),
        ("drctl-run@.timer", "drctl-run@appdb.timer"),
    ] {
        let text = std::fs::read_to_string(systemd.join(src)).unwrap();
        std::fs::write(
            dir.join(dst),
            text.replace("/usr/bin/drctl", env!("CARGO_BIN_EXE_drctl")),
        )
        .unwrap();
    }
    // The units' `Documentation=man:drctl(1)` must resolve: the pages
    // `drctl man` writes (what the package installs) are on MANPATH.
    let man = scratch_dir("drctl-man-");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["man", "--out-dir"])
        .arg(man.join("man1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(man.join("man1/drctl.1").is_file() && man.join("man1/drctl-restore.1").is_file());
    for unit in [
        "drctl.service",
        "drctl-run@appdb.service",
        "drctl-run@appdb.timer",
    ] {
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=yes"])
            .arg(dir.join(unit))
            .env("MANPATH", &man)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 even for unknown keys; any message is a finding.
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{unit}: {err}"
        );
    }
    for unit in ["drctl.service", "drctl-run@.service"] {
        let text = std::fs::read_to_string(systemd.join(unit)).unwrap();
        for line in [
            "LimitNOFILE=65536",
            "UMask=0077",
            "Nice=10",
            "IOSchedulingClass=best-effort",
            "OOMScoreAdjust=500",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{unit}: {line}");
        }
    }
    let daemon = std::fs::read_to_string(systemd.join("drctl.service")).unwrap();
    assert!(daemon.contains("\nRestartPreventExitStatus=2\n"));
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(dir.join("drctl.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0: {}",
        text.lines().last().unwrap_or("")
    );
}

#[test]
fn two_daemons_with_a_cluster_lock_run_each_tick_once_between_them() {
    let pg = pg();
    let coord = pg.create_db("coord");
    let src = scratch_dir("drctl-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let repo = scratch_dir("drctl-shared-repo-");
    let host = |_: u32| {
        let mut w = World::new(&format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n[coordination]\nurl_env = \"COORD_URL\"\n[repositories.local]\ntype = \"local\"\npath = \"{}\"\n{}lock = \"cluster\"\ncatch_up = false\n",
            free_port(),
            repo.display(),
            files_job("shared", "* * * * * *", &src)
        ));
        w.set_env("COORD_URL", &pg.url(&coord));
        w
    };
    let (a, b) = (host(1), host(2));
    let mut da = Daemon::start(&a);
    let mut db = Daemon::start(&b);
    let total =
        || count(&runs(&a, "shared"), "succeeded") + count(&runs(&b, "shared"), "succeeded");
    wait_until(
        Duration::from_secs(30),
        "six runs between the hosts",
        || total() >= 6,
    );
    da.signal(libc::SIGTERM);
    db.signal(libc::SIGTERM);
    assert_eq!(da.wait(Duration::from_secs(20)), Some(0), "{}", da.log());
    assert_eq!(db.wait(Duration::from_secs(20)), Some(0), "{}", db.log());

    // Every claimed tick was run exactly once, by one host: as many
    // successful runs between the hosts as claims in the coordination database.
    let all: Vec<serde_json::Value> = runs(&a, "shared")
        .into_iter()
        .chain(runs(&b, "shared"))
        .collect();
    let succeeded = count(&all, "succeeded");
    let claims: usize = pg
        .psql(
            &coord,
            "SELECT count(*) FROM drctl_tick_claims WHERE job = 'shared'",
        )
        .parse()
        .unwrap();
    assert_eq!(succeeded, claims, "runs and claimed ticks differ: {all:?}");
    assert_eq!(count(&all, "failed") + count(&all, "interrupted"), 0);
    let skips: Vec<&str> = all
        .iter()
        .filter(|r| r["status"] == "skipped")
        .filter_map(|r| r["error"].as_str())
        .collect();
    assert!(!skips.is_empty(), "the losing host records skips");
    assert!(
        skips.iter().all(|s| s.contains("drctl:")),
        "skips name the holder: {skips:?}"
    );
    // The committed backups are one per tick too.
    let listed = a
        .drctl(&["backups", "shared", "--json"])
        .ok()
        .stdout
        .matches("\"id\"")
        .count();
    assert_eq!(listed, claims);
}

#[test]
fn a_cluster_lock_without_coordination_is_a_config_error() {
    let src = scratch_dir("drctl-src-");
    let w = World::new(&format!(
        "{}{}lock = \"cluster\"\n",
        local_repo(),
        files_job("x", "* * * * * *", &src)
    ));
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("jobs.x.lock") && r.stderr.contains("[coordination]"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_failed_run_is_retried_with_backoff() {
    let src = scratch_dir("drctl-src-");
    let late = src.join("late.conf"); // appears only after the first attempt failed
    let w = World::new(&format!(
        "{}[jobs.flaky]\ntype = \"files\"\npaths = [\"{}\"]\nschedule = \"0 0 2 * * *\"\nrepository = \"local\"\nretries = 2\nretry_delay = \"1s\"\n",
        local_repo(),
        late.display()
    ));
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(20), "the first attempt to fail", || {
        count(&runs(&w, "flaky"), "failed") == 1
    });
    std::fs::write(&late, "now here\n").unwrap();
    wait_until(Duration::from_secs(20), "the retry to succeed", || {
        count(&runs(&w, "flaky"), "succeeded") == 1
    });
    assert!(d.log().contains("retrying"), "{}", d.log());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    assert_eq!(count(&runs(&w, "flaky"), "failed"), 1);
}

#[test]
fn an_unreachable_database_is_waited_for_without_blocking_other_jobs() {
    let src = scratch_dir("drctl-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let mut w = World::new(&format!(
        "{}{}[jobs.downdb]\ntype = \"postgres\"\nurl_env = \"DOWN_URL\"\nschedule = \"0 0 2 * * *\"\nrepository = \"local\"\nstartup_wait = \"10s\"\n",
        local_repo(),
        files_job("configs", "0 0 2 * * *", &src)
    ));
    w.set_env(
        "DOWN_URL",
        &format!(
            "postgres://u:pw-not-logged-1234@127.0.0.1:{}/x",
            free_port()
        ),
    );
    let started = Instant::now();
    let mut d = Daemon::start(&w);
    // The files job catches up at once, while the database job is still waiting.
    wait_until(Duration::from_secs(10), "the other job's catch-up", || {
        count(&runs(&w, "configs"), "succeeded") == 1
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not blocked by the wait"
    );
    wait_until(Duration::from_secs(15), "the wait to give up", || {
        d.log().contains("database unreachable")
    });
    let log = d.log();
    assert!(log.contains("waiting for the database"), "{log}");
    assert!(!log.contains("pw-not-logged-1234"), "{log}");
    assert!(
        runs(&w, "downdb").is_empty(),
        "no run started against a database that never came"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
}

/// Raise this process's open-file limit to its hard limit (the attack below
/// needs more than a default 1024 of its own).
fn raise_nofile() {
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

#[test]
fn idle_connections_from_any_local_user_cannot_starve_the_scheduler() {
    use std::os::unix::process::CommandExt;
    raise_nofile();
    let w = files_world("tick", "* * * * * *");
    let port = http_port(&w);
    let log = w.dir.join("daemon-nofile.log");
    let mut cmd = w.command(&["daemon"]);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    // The descriptor limit of a unit without LimitNOFILE.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), "a first run", || {
        count(&runs(&w, "tick"), "succeeded") >= 1
    });
    let before = runs(&w, "tick").len();

    // 1,100 connections that never send a byte, held for 15 s (once the
    // daemon's slots and the kernel's accept queue are full, further ones
    // only wait: give the attempts 5 s in all).
    let mut held = Vec::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tried = Instant::now();
    for _ in 0..1100 {
        if tried.elapsed() > Duration::from_secs(5) {
            break;
        }
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
            held.push(s);
        }
    }
    assert!(held.len() > 100, "only {} connections opened", held.len());
    let opened = held.len();
    std::thread::sleep(Duration::from_secs(15));
    let during = runs(&w, "tick");
    drop(held);

    // Every tick of the window ran and was recorded: one a second.
    let new = &during[..during.len() - before];
    assert!(
        new.len() >= 12,
        "{} runs recorded in 15 s with {opened} idle connections open:\n{}",
        new.len(),
        daemon_log()
    );
    assert_eq!(count(new, "failed"), 0, "{new:?}");
    assert!(
        !daemon_log().contains("Too many open files"),
        "{}",
        daemon_log()
    );
    // And the endpoint serves again at once.
    assert_eq!(http_get(port, "/health").0, 200);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

#[test]
fn a_run_that_fails_before_it_can_be_recorded_is_still_counted_and_turns_health_red() {
    let w = files_world("tick", "* * * * * *");
    // Where the host locks live is a file: every run fails before its run
    // row is written (as with no descriptors left).
    std::fs::create_dir_all(w.dir.join("state")).unwrap();
    std::fs::write(w.dir.join("state/locks"), "not a directory").unwrap();
    let port = http_port(&w);
    let mut d = Daemon::start(&w);
    wait_for_endpoint(port);
    wait_unrecorded_counted(port);
    assert!(runs(&w, "tick").is_empty(), "nothing reached the database");
    let (_, metrics) = http_get(port, "/metrics");
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("drctl_job_runs_total{job_name=\"tick\",outcome=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "{metrics}");
    let (code, body) = http_get(port, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("internal error: tick: a run failed and could not be recorded"),
        "{body}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

#[test]
fn runs_failing_on_a_full_state_disk_are_counted_and_still_alerted() {
    use common::receivers::HttpReceiver;
    assert!(
        unsafe { libc::geteuid() } == 0,
        "mounts a tmpfs: run as root (CI does)"
    );
    let hook = HttpReceiver::start();
    let src = scratch_dir("drctl-full-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let w = World::new(&format!(
        "{}{}[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\ncritical = [\"hook\"]\n",
        local_repo(),
        files_job("tick", "* * * * * *", &src),
        hook.url("/alerts")
    ));
    // The state directory on a small file system of its own.
    let state = w.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(state.clone());
    let port = http_port(&w);
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "a first run", || {
        count(&runs(&w, "tick"), "succeeded") >= 1
    });
    // Fill it: runs can no longer be recorded, nor (mostly) their alerts
    // queued: SQLite may squeeze a row into its WAL; what it refuses is
    // kept and, after 15 s, sent straight to the channel. Either way the
    // alert comes out while the disk is full.
    let filler = state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
    }
    wait_unrecorded_counted(port);
    assert_eq!(http_get(port, "/health").0, 503);
    let failed_posts = || {
        hook.requests("/alerts")
            .iter()
            .filter(|r| r.text().contains("job_failed:tick"))
            .count()
    };
    wait_until(Duration::from_secs(60), "the job_failed alert", || {
        failed_posts() >= 1
    });
    // Room again: the outbox takes what was kept, then the next run
    // resolves it.
    let before = failed_posts();
    std::fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the alert after the disk has room",
        || failed_posts() > before,
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

#[test]
fn a_daemon_with_client_tools_older_than_the_server_alerts_at_start() {
    let pg = pg();
    let db = pg.create_db("preflight");
    let bin = tool_wrappers(&[(
        "pg_dump",
        r#"if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; fi
exec "$REAL" "$@""#,
    )]);
    let mut w = World::new(&format!(
        "[http]\nenabled = false\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\nschedule = \"0 0 2 * * *\"\ncatch_up = false\npg_bindir = \"{}\"\n",
        bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "job_misconfigured raised", || {
        active_alerts(&w).contains(&"job_misconfigured:appdb".to_owned())
    });
    let r = w.drctl(&["alerts", "--json"]);
    assert!(
        r.stdout.contains("pg_dump 9 cannot dump PostgreSQL"),
        "{}",
        r.stdout
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());

    // Fixed (pg_bindir removed): the next start resolves it.
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        text.replace(&format!("pg_bindir = \"{}\"\n", bin.display()), ""),
    )
    .unwrap();
    let mut d = Daemon::start(&w);
    wait_until(
        Duration::from_secs(30),
        "job_misconfigured resolved",
        || !active_alerts(&w).contains(&"job_misconfigured:appdb".to_owned()),
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

#[test]
fn real_restores_are_exported_as_metrics() {
    let w = files_world("cfgs", "0 0 2 * * *");
    w.drctl(&["run", "cfgs"]).ok();
    let out = scratch_dir("drctl-metrics-restore-");
    w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "cfgs",
        "--to",
        out.to_str().unwrap(),
        "--yes",
    ])
    .ok();
    let port = http_port(&w);
    let mut d = Daemon::start(&w);
    wait_for_endpoint(port);
    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    let line = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let secs = line("drctl_restore_duration_seconds{job_name=\"cfgs\"}");
    assert!((0.0..60.0).contains(&secs), "{secs}");
    let at = line("drctl_restore_last_timestamp_seconds{job_name=\"cfgs\",outcome=\"done\"}");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 120.0..=now + 5.0).contains(&at), "{at} vs {now}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}

/// The idle daemon gives back the code pages only startup needed: a few
/// seconds after start it drops its mappings of the binary's read-only
/// segments, and the kernel's count of its resident code falls; it goes on
/// working (the pages come back from the page cache as they run).
#[test]
fn the_idle_daemon_gives_back_the_code_pages_startup_touched() {
    let w = files_world("nightly", "0 0 3 * * *");
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "the first trim", || {
        d.log().contains("dropped the mappings")
    });
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("dropped the mappings"))
        .unwrap();
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
            .parse()
            .unwrap()
    };
    let (before, after) = (field("resident_before"), field("resident_after"));
    assert!(
        before > 1 << 20,
        "startup touched over a MiB of code: {line}"
    );
    assert!(after * 2 < before, "{line}");
    // From outside: the binary's read-only mappings hold less than before.
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_drctl")).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", d.child.id())).unwrap();
    let mut now = 0u64;
    let mut ours = false;
    for l in smaps.lines() {
        let head: Vec<&str> = l.split_whitespace().collect();
        if head.len() >= 5 && head[0].contains('-') && head[1].len() == 4 {
            ours =
                head.len() == 6 && std::path::Path::new(head[5]) == exe && !head[1].contains('w');
        } else if ours && l.starts_with("Rss:") {
            now += head[1].parse::<u64>().unwrap() * 1024;
        }
    }
    assert!(
        now < before,
        "now {now} bytes resident, {before} before the trim"
    );
    // Still working: a clean stop runs code the trim unmapped.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", d.log());
}
