//! Check jobs against real components: certificates made here with rcgen
//! served by a real rustls server (cert_expiry), HTTP, TCP, Redis and
//! command probes (health), the real root mount (disk), the daemon's
//! /metrics for what `drctl run` recorded, and check jobs under the daemon.

mod common;

use common::receivers::{serve_on_loopback, HttpReceiver};
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

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

#[test]
fn health_probes_tcp_postgres_redis_and_command_against_real_servers() {
    let pg = pg();
    let redis = Redis::start(&[]);
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
    let not_after = line("drctl_cert_not_after_timestamp_seconds{subject=\"CN=metrics.test\"");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        ((not_after - now) / 86400.0 - 20.0).abs() < 0.1,
        "{not_after}"
    );
    assert_eq!(
        line("drctl_health_up{job_name=\"api-health\",check=\"api\"}"),
        1.0
    );
    let ratio = line("drctl_disk_used_ratio{mount=\"/\"}");
    assert!((ratio * 100.0 - df_percent("/")).abs() <= 1.5);
    assert_eq!(
        line("drctl_prune_bytes_freed_total{job_name=\"logs\"}"),
        1234.0
    );
    assert_eq!(line("drctl_check_result{job_name=\"certs\"}"), 1.0);
    assert!(
        line("drctl_vacuum_dead_tuples_removed_total{job_name=\"vacuum\"}") >= 3000.0,
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
    w.set_env("CACHE_REDIS_URL", "redis://127.0.0.1:6379");
    w.set_env(
        "SKILLREGISTRY_DATABASE_URL",
        "postgres://app@127.0.0.1:5432/skillregistry",
    );
    w.set_env(
        "SKILLREGISTRY_REPLICATION_URL",
        "postgres://drctl_backup@127.0.0.1:5432/postgres",
    );
    let r = w.drctl(&["config", "check"]);
    r.ok();
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
        body.contains("drctl_health_up{job_name=\"tcp-health\",check=\"svc\"} 0"),
        "{body}"
    );

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_until(Duration::from_secs(30), "the resolve", || {
        events().len() == 2
    });
    assert_eq!(events(), vec!["firing", "resolved"]);
    let (_, body) = http_get(http, "/metrics");
    assert!(
        body.contains("drctl_health_up{job_name=\"tcp-health\",check=\"svc\"} 1"),
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
