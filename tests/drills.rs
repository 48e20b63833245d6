//! Restore drills end to end: a real cluster (the shared test server as the
//! drill's scratch server, or an ephemeral one the drill starts itself), the
//! real binary, real signals, a real HTTP receiver for alerts.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::receivers::{self, HttpReceiver};
use common::*;
use std::time::Duration;

struct Drill {
    w: World,
    /// The backup job's name: unique per test, so scratch databases (named
    /// after it) of tests running at once never meet.
    job: String,
    owner: String,
    hook: HttpReceiver,
}

impl Drill {
    fn scratch_dbs(&self) -> Vec<String> {
        pg().psql(
            "postgres",
            &format!(
                "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'drctl\\_drill\\_{}\\_%'",
                self.job
            ),
        )
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
    }
}

/// A seeded database, a backup job (unique name) and a drill `weekly` whose
/// extra keys are `drill_extra`; alerts go to a webhook.
fn drill_world(drill_extra: &str, pg_bindir: Option<&std::path::Path>) -> Drill {
    let pg = pg();
    let src = pg.create_db("drl_src");
    let owner = unique("drl_owner");
    pg.seed(&src, &owner, 150);
    let hook = HttpReceiver::start();
    let bindir = pg_bindir
        .map(|p| format!("pg_bindir = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let job = unique("app");
    let mut w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.{job}]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n{bindir}[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\ncritical = [\"hook\"]\nwarning = [\"hook\"]\n[drills.weekly]\njob = \"{job}\"\n{drill_extra}",
        free_port(),
        hook.url("/alerts"),
        drill_extra = drill_extra.replace("{job}", &job)
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.set_env("DRILL_PG_URL", &pg.url("postgres"));
    Drill {
        w,
        job,
        owner,
        hook,
    }
}

const SERVER: &str = "target = { server_url_env = \"DRILL_PG_URL\" }\n";

fn run_drill(w: &World, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["drill", "run", "weekly", "--json"];
    all.extend_from_slice(args);
    let r = w.drctl(&all);
    let v = serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null);
    (r, v)
}

#[test]
fn a_drill_passes_on_a_good_backup_with_exact_row_counts_roles_and_checks() {
    let d = drill_world(
        &format!("{SERVER}rto = \"10m\"\njobs = 2\n[[drills.weekly.checks]]\nsql = \"SELECT count(*) FROM billing.payment WHERE result = 'paid'\"\nexpect = \">= 1\"\n[[drills.weekly.checks]]\nsql = \"SELECT name FROM public.customer WHERE id = 7\"\nexpect = \"customer 7\"\n"),
        None,
    );
    let backup = d.w.drctl(&["run", &d.job]).ok().stdout.trim().to_owned();
    // A scratch database a crashed drill left behind is removed first.
    let leftover = format!("drctl_drill_{}_20200101000000", d.job);
    pg().psql("postgres", &format!("CREATE DATABASE {leftover}"));
    let (r, v) = run_drill(&d.w, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["outcome"], "passed", "{v}");
    assert_eq!(v["backup_id"], backup.as_str());
    assert_eq!(v["swept"], serde_json::json!([leftover]));
    let phases: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "fetch",
            "decrypt_decompress",
            "restore",
            "verify",
            "cleanup"
        ]
    );
    // Decoding took time, whichever way the restore read the backup.
    let decode = v["phases"][1]["seconds"].as_f64().unwrap();
    assert!(decode > 0.0, "{v}");
    let checks = v["checks"].as_array().unwrap();
    let payment = checks
        .iter()
        .find(|c| c["name"] == "billing.payment")
        .unwrap();
    assert_eq!(
        (
            payment["kind"].as_str(),
            payment["expected"].as_str(),
            payment["ok"].as_bool()
        ),
        (Some("rows"), Some("300"), Some(true))
    );
    assert!(
        checks
            .iter()
            .any(|c| c["kind"] == "role" && c["name"] == d.owner.as_str() && c["ok"] == true),
        "{v}"
    );
    assert_eq!(
        checks
            .iter()
            .filter(|c| c["kind"] == "sql" && c["ok"] == true)
            .count(),
        2,
        "{v}"
    );
    assert!(v["total_seconds"].as_f64().unwrap() < 600.0);
    assert!(
        d.scratch_dbs().is_empty(),
        "scratch databases left: {:?}",
        d.scratch_dbs()
    );
    assert!(v["target"]
        .as_str()
        .unwrap()
        .contains(&format!("drctl_drill_{}_", d.job)));
    assert!(!v.to_string().contains(PG_PASSWORD));

    // --id picks the backup; --keep leaves the scratch database for a look,
    // and the next drill sweeps it.
    let (r, v) = run_drill(&d.w, &["--id", &backup, "--keep"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["backup_id"], backup.as_str());
    let kept = d.scratch_dbs();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let (_, v) = run_drill(&d.w, &[]);
    assert_eq!(v["swept"], serde_json::json!(kept));
    assert!(d.scratch_dbs().is_empty());

    let r = d.w.drctl(&["drill", "list", "--json"]);
    r.ok();
    let l: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(l["runs"][0]["outcome"], "passed");
    assert!(
        d.hook.requests("/alerts").is_empty(),
        "a passing drill is quiet"
    );
}

#[test]
fn a_failing_sql_check_fails_the_drill_in_verify_alerts_and_drops_the_scratch_database() {
    let d = drill_world(
        &format!("{SERVER}[[drills.weekly.checks]]\nsql = \"SELECT count(*) FROM billing.payment\"\nexpect = \"= 0\"\n"),
        None,
    );
    d.w.drctl(&["run", &d.job]).ok();
    let (r, v) = run_drill(&d.w, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["failed_phase"], "verify");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("expected = 0, got 300"),
        "{v}"
    );
    assert!(d.scratch_dbs().is_empty());
    let alerts = d.hook.requests("/alerts");
    assert_eq!(alerts.len(), 1);
    let a = alerts[0].json();
    assert_eq!(a["key"], "drill_failed:weekly");
    assert_eq!(a["severity"], "critical");
    assert!(
        a["summary"].as_str().unwrap().contains("verify phase"),
        "{a}"
    );
}

#[test]
fn a_corrupted_artifact_fails_the_drill_in_fetch_and_leaves_nothing_behind() {
    let d = drill_world(SERVER, None);
    let id = d.w.drctl(&["run", &d.job]).ok().stdout.trim().to_owned();
    let p =
        d.w.repo_dir()
            .join(&d.job)
            .join(&id)
            .join("database.dump.zst");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    std::fs::write(&p, bytes).unwrap();
    let (r, v) = run_drill(&d.w, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(v["failed_phase"], "fetch", "{v}");
    assert!(v["error"].as_str().unwrap().contains("SHA-256"), "{v}");
    assert!(d.scratch_dbs().is_empty());
    assert!(
        !std::fs::read_dir(d.w.dir.join("state").join("tmp")).is_ok_and(|mut e| e.next().is_some())
    );
}

#[test]
fn an_rto_shorter_than_the_restore_marks_the_drill_over_rto_and_warns() {
    let d = drill_world(&format!("{SERVER}rto = \"1ms\"\n"), None);
    // No row counts at backup time: the drill still checks every table exists.
    let text = std::fs::read_to_string(&d.w.config).unwrap().replacen(
        "repository = \"local\"\n",
        "repository = \"local\"\ncount_rows_max_table_size = \"0B\"\n",
        1,
    );
    std::fs::write(&d.w.config, text).unwrap();
    d.w.drctl(&["run", &d.job]).ok();
    let (r, v) = run_drill(&d.w, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["outcome"], "over_rto");
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["kind"] != "rows"), "{v}");
    let tables: Vec<&serde_json::Value> = checks.iter().filter(|c| c["kind"] == "table").collect();
    assert_eq!(tables.len(), 3, "{v}");
    assert!(tables.iter().all(|c| c["ok"] == true));
    assert_eq!(v["rto_seconds"], 0.001);
    let alerts = d.hook.requests("/alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].json()["key"], "drill_over_rto:weekly");
    assert_eq!(alerts[0].json()["severity"], "warning");
}

#[test]
fn sigterm_mid_restore_still_drops_the_scratch_database() {
    let marker = scratch_dir("drctl-drill-marker-").join("restoring");
    let bin = tool_wrappers(&[(
        "pg_restore",
        &format!(
            "touch {}\nsleep 30\nexec \"$REAL\" \"$@\"",
            marker.display()
        ),
    )]);
    let d = drill_world(SERVER, Some(&bin));
    d.w.drctl(&["run", &d.job]).ok();
    let mut child = d.w.command(&["drill", "run", "weekly"]).spawn().unwrap();
    wait_for_path(&marker, Duration::from_secs(30));
    assert_eq!(
        d.scratch_dbs().len(),
        1,
        "the scratch database exists mid-restore"
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(d.scratch_dbs().is_empty(), "left: {:?}", d.scratch_dbs());
    let l: serde_json::Value =
        serde_json::from_str(&d.w.drctl(&["drill", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(l["runs"][0]["outcome"], "interrupted");
}

#[test]
fn an_ephemeral_cluster_drill_passes_and_removes_its_cluster() {
    let d = drill_world("target = { ephemeral = true }\n", None);
    d.w.drctl(&["run", &d.job]).ok();
    let (r, v) = run_drill(&d.w, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["outcome"], "passed", "{v}");
    assert!(v["target"]
        .as_str()
        .unwrap()
        .starts_with("ephemeral cluster"));
    let drills = d.w.dir.join("state").join("drills");
    let left: Vec<_> = std::fs::read_dir(&drills)
        .map(|e| e.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn drill_config_errors_name_the_key() {
    let d = drill_world(
        "target = { server_url_env = \"X\", ephemeral = true }\n",
        None,
    );
    let r = d.w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("drills.weekly.target"), "{}", r.stderr);
    let r = d.w.drctl(&["drill", "run", "nope"]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn the_daemon_runs_a_scheduled_drill_and_exports_its_metrics() {
    let d = drill_world(
        &format!("{SERVER}schedule = \"*/2 * * * * *\"\nrto = \"10m\"\n"),
        None,
    );
    d.w.drctl(&["run", &d.job]).ok();
    let mut daemon = Daemon::start(&d.w);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = d.w.drctl(&["drill", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        if v["runs"].as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r["outcome"] == "passed" && r["trigger"] == "schedule")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled drill passed: {}\n{}",
            r.all(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, metrics) = http_get(http_port(&d.w), "/metrics");
    assert_eq!(code, 200);
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("drctl_drill_rto_target_seconds{drill=\"weekly\"}"),
        600.0
    );
    let last = value("drctl_drill_last_success_timestamp_seconds{drill=\"weekly\"}");
    assert!((chrono::Utc::now().timestamp() as f64 - last).abs() < 120.0);
    assert!(value("drctl_drill_duration_seconds{drill=\"weekly\",phase=\"restore\"}") > 0.0);
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(d.scratch_dbs().is_empty(), "{:?}", d.scratch_dbs());
}

/// Pixels of a PNG within a small distance of `rgb`.
fn count_color(png_path: &std::path::Path, rgb: (u8, u8, u8)) -> usize {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| {
            (i32::from(p[0]) - i32::from(rgb.0)).abs() < 12
                && (i32::from(p[1]) - i32::from(rgb.1)).abs() < 12
                && (i32::from(p[2]) - i32::from(rgb.2)).abs() < 12
        })
        .count()
}

#[test]
fn the_report_shows_drills_rto_and_rpo_in_every_format_and_renders_in_chromium() {
    let d = drill_world(
        &format!("{SERVER}rto = \"10m\"\n[drills.strict]\njob = \"{{job}}\"\n{SERVER}[[drills.strict.checks]]\nsql = \"SELECT 1\"\nexpect = \"= 2\"\n"),
        None,
    );
    let mut text = std::fs::read_to_string(&d.w.config).unwrap();
    text = text.replacen(
        "repository = \"local\"\n",
        "repository = \"local\"\nrpo = \"1h\"\n",
        1,
    );
    std::fs::write(&d.w.config, text).unwrap();
    d.w.drctl(&["run", &d.job]).ok();
    for _ in 0..2 {
        let (r, v) = run_drill(&d.w, &[]);
        assert_eq!(r.code, 0, "{v}");
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(d.w.drctl(&["drill", "run", "strict"]).code, 1);

    let r =
        d.w.drctl(&["drill", "report", "--format", "json", "--since", "1d"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let weekly = v["drills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["drill"] == "weekly")
        .unwrap();
    assert_eq!(
        (weekly["runs"].as_u64(), weekly["passed"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(weekly["rto_seconds"], 600.0);
    let strict = v["drills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["drill"] == "strict")
        .unwrap();
    assert_eq!(strict["failed"], 1);
    assert_eq!(strict["latest"]["failed_phase"], "verify");
    let job = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["job"] == d.job.as_str())
        .unwrap();
    assert_eq!(job["rpo_seconds"], 3600.0);
    assert_eq!(job["rpo"]["compliance"], 1.0, "{job}");
    assert_eq!(job["drills_passed"], 2);

    let md = d.w.drctl(&["drill", "report", "--since", "1d"]);
    md.ok();
    assert!(
        md.stdout.contains("| weekly |") && md.stdout.contains("FAILING: strict"),
        "{}",
        md.stdout
    );

    let html_path = d.w.dir.join("report.html");
    d.w.drctl(&[
        "drill",
        "report",
        "--format",
        "html",
        "--since",
        "1d",
        "-o",
        html_path.to_str().unwrap(),
    ])
    .ok();
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<svg") && html.contains("<table id=\"runs\""));
    assert!(
        !html.contains("<script")
            && !html.contains("<link")
            && !html.contains("src=")
            && !html.contains("href=")
            && !html.contains("url("),
        "self-contained"
    );
    assert!(!html.contains(PG_PASSWORD));

    // Rendered by a real browser: the chart's line and RTO line and the
    // tables' header shading are on the screenshot.
    let shot = d.w.dir.join("report.png");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,2000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html_path.display()))
        .output()
        .expect("chromium (Debian package chromium; .ci/run installs it)");
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = count_color(&shot, (0x1f, 0x77, 0xb4));
    let rto = count_color(&shot, (0xd6, 0x27, 0x28));
    let header = count_color(&shot, (0xf3, 0xf3, 0xf3));
    let passed = count_color(&shot, (0x2c, 0xa0, 0x2c));
    assert!(line > 300, "chart line pixels: {line}");
    assert!(rto > 300, "RTO line pixels: {rto}");
    assert!(header > 5000, "table header pixels: {header}");
    assert!(passed > 100, "passed markers and badges: {passed}");
}

#[test]
fn the_weekly_report_arrives_by_email_as_html_with_a_text_alternative() {
    let mut smtp = receivers::SmtpServer::prepare("drctl", "smtp-report-pw-5521");
    smtp.start();
    let d = drill_world(&format!("{SERVER}rto = \"10m\"\n"), None);
    let mut text = std::fs::read_to_string(&d.w.config).unwrap();
    text.push_str(&smtp.channel_toml("mail", "SMTP_PASSWORD"));
    text.push_str(&format!(
        "[alerts.channels.ops]\ntype = \"slack\"\nwebhook_url = \"{}\"\n[reports.weekly]\nschedule = \"*/2 * * * * *\"\nchannels = [\"mail\", \"hook\", \"ops\"]\nsince = \"7d\"\n",
        d.hook.url("/slack")
    ));
    std::fs::write(&d.w.config, text).unwrap();
    let mut w = d.w;
    w.set_env("SMTP_PASSWORD", "smtp-report-pw-5521");
    w.drctl(&["run", &d.job]).ok();
    let (r, _) = run_drill(&w, &[]);
    r.ok();
    let mut daemon = Daemon::start(&w);
    wait_until(Duration::from_secs(60), "the report email", || {
        !smtp.mails().is_empty()
    });
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(Duration::from_secs(60)), Some(0));
    let m = &smtp.mails()[0];
    let subject = m.header("Subject").unwrap();
    assert!(
        subject.contains("[drctl REPORT]") && subject.contains("all passing"),
        "{subject}"
    );
    assert!(
        m.header("Content-Type")
            .unwrap()
            .contains("multipart/alternative"),
        "{:?}",
        m.header("Content-Type")
    );
    let body = m.body();
    assert!(
        body.contains("Content-Type: text/plain") && body.contains("# DR drill report"),
        "{body}"
    );
    assert!(
        body.contains("Content-Type: text/html") && body.contains("<svg"),
        "{body}"
    );
    // The webhook gets the same report as JSON with the HTML inside.
    let posts = d.hook.requests("/alerts");
    assert!(posts.iter().any(|p| p.json()["kind"] == "report"
        && p.json()["html"]
            .as_str()
            .is_some_and(|h| h.contains("<svg"))));
}
