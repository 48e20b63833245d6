//! Monitoring as code, against real tools: the shipped alert rules through
//! `promtool`'s own unit tests, the exposition through `promtool check
//! metrics`, and every query of the shipped Grafana dashboard and every
//! rule against a real Prometheus scraping a real daemon whose state holds
//! real runs (a PostgreSQL backup and its drill, certificate, disk and
//! health checks).
// One end-to-end scenario told in order.
#![allow(clippy::too_many_lines)]

mod common;

use common::receivers::HttpReceiver;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package `prometheus`) is installed")
}

#[test]
fn the_shipped_rules_load_and_pass_their_unit_tests() {
    let dir = contrib("prometheus");
    let check = promtool(&["check", "rules", "drctl.rules.yml"], &dir);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = promtool(&["test", "rules", "drctl.rules.test.yml"], &dir);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(test.status.success() && out.contains("SUCCESS"), "{out}");
}

/// The unit tests can fail: a rule that no longer fires on a failing job
/// is caught by them.
#[test]
fn the_rule_unit_tests_catch_a_broken_rule() {
    let dir = scratch_dir("drctl-rules-");
    let rules = std::fs::read_to_string(contrib("prometheus/drctl.rules.yml")).unwrap();
    let broken = rules.replace(
        "expr: drctl_job_last_run_failed == 1",
        "expr: drctl_job_last_run_failed == 2",
    );
    assert_ne!(broken, rules);
    std::fs::write(dir.join("drctl.rules.yml"), broken).unwrap();
    std::fs::copy(
        contrib("prometheus/drctl.rules.test.yml"),
        dir.join("drctl.rules.test.yml"),
    )
    .unwrap();
    let test = promtool(&["test", "rules", "drctl.rules.test.yml"], &dir);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(!test.status.success(), "{out}");
    assert!(out.contains("DrctlJobFailing"), "{out}");
}

/// A real Prometheus on loopback, stopped on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    /// Scrapes `target` every second as scrape job `drctl` and evaluates
    /// the shipped rules every second.
    fn start(target: u16) -> Prometheus {
        let dir = scratch_dir("drctl-prometheus-");
        let rules = dir.join("drctl.rules.yml");
        std::fs::copy(contrib("prometheus/drctl.rules.yml"), &rules).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: drctl\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("prometheus (Debian package `prometheus`) is installed");
        stop_at_exit(child.id());
        Prometheus { child, port }
    }

    /// GET as HTTP/1.0, so that Prometheus answers without chunked
    /// encoding: (status, body), or None while nothing listens.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let code = raw.split_whitespace().nth(1)?.parse().ok()?;
        let (_, body) = raw.split_once("\r\n\r\n")?;
        Some((code, body.to_owned()))
    }

    /// An instant query's `data.result`.
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let (code, body) = self
            .get(&format!("/api/v1/query?query={}", encode(promql)))
            .ok_or("Prometheus is not listening yet")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {code}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("HTTP {code}: {body}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The dashboard's queries with Grafana's variables as "All" gives them.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(contrib("grafana/drctl.json")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".+")
                .replace("$__rate_interval", "1m");
            out.push((p["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(METRIC, LABEL): the metric must have series.
            let metric = q
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap()
                .to_owned();
            out.push((format!("variable {}", v["name"]), metric));
        }
    }
    assert!(out.len() >= 20, "{out:?}");
    out
}

#[test]
fn a_real_prometheus_scrapes_a_real_daemon_and_every_dashboard_query_returns_series() {
    let pg = pg();
    let src = pg.create_db("mon_src");
    pg.seed(&src, &unique("mon_owner"), 50);
    let ssl = scratch_dir("drctl-mon-ssl-");
    let mut p = rcgen::CertificateParams::new(vec!["shop.test".to_owned()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "shop.test");
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(40);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(ssl.join("shop.pem"), p.self_signed(&key).unwrap().pem()).unwrap();
    let api = HttpReceiver::start();
    let job = unique("app");
    let mut w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n\
         [repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [jobs.{job}]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\nschedule = \"0 0 2 * * *\"\nrpo = \"26h\"\n\
         [jobs.certs]\ntype = \"cert_expiry\"\nfiles = [\"{ssl}/*.pem\"]\nschedule = \"0 0 9 * * *\"\n\
         [jobs.disk]\ntype = \"disk\"\nmounts = [\"/\"]\nschedule = \"0 */10 * * * *\"\n\
         [jobs.api]\ntype = \"health\"\nschedule = \"0 * * * * *\"\n[[jobs.api.checks]]\ntype = \"http\"\nname = \"api\"\nurl = \"{api}\"\nretries = 0\n\
         [drills.weekly]\njob = \"{job}\"\ntarget = {{ server_url_env = \"DRILL_PG_URL\" }}\nrto = \"10m\"\n",
        port = free_port(),
        ssl = ssl.display(),
        api = api.url("/health"),
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.set_env("DRILL_PG_URL", &pg.url("postgres"));
    for j in [job.as_str(), "certs", "api"] {
        w.drctl(&["run", j]).ok();
    }
    // This machine's real disk: a warning (7) or critical (8) verdict is
    // still a recorded run with its samples.
    let disk = w.drctl(&["run", "disk"]);
    assert!([0, 7, 8].contains(&disk.code), "{}", disk.all());
    w.drctl(&["drill", "run", "weekly"]).ok();

    let port = http_port(&w);
    let _d = Daemon::start(&w);
    wait_for_endpoint(port);

    // The classic text format (what curl gets) passes promtool's linter:
    // every counter documented under its `_total` name, no naming issue.
    let (code, text) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(!text.contains("# EOF"), "{text}");
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        lint.stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let lint = lint.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(
        lint.status.success() && said.trim().is_empty(),
        "{said}\n{text}"
    );

    let prom = Prometheus::start(port);
    wait_until(Duration::from_secs(60), "three scrapes of drctl", || {
        prom.query("count_over_time(up{job=\"drctl\"}[1m]) >= 3")
            .is_ok_and(|r| !r.is_empty())
    });
    // Prometheus asked for OpenMetrics and ingested it: the build info
    // arrived with its labels, the counters under their `_total` names.
    let build = prom.query("drctl_build_info").unwrap();
    assert_eq!(
        build[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );
    let runs = prom
        .query(&format!(
            "drctl_job_runs_total{{job_name=\"{job}\",outcome=\"succeeded\"}}"
        ))
        .unwrap();
    assert_eq!(runs[0]["value"][1], "1", "{runs:?}");

    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        match prom.query(&expr) {
            Ok(r) if !r.is_empty() => {}
            Ok(_) => empty.push(format!("{title}: {expr} returned no series")),
            Err(e) => empty.push(format!("{title}: {expr}: {e}")),
        }
    }
    assert!(empty.is_empty(), "{}", empty.join("\n"));

    // Every shipped rule evaluates cleanly against the real series.
    wait_until(Duration::from_secs(20), "rules evaluated", || {
        let body = prom.get("/api/v1/rules").unwrap_or_default().1;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["groups"][0]["rules"].as_array().is_some_and(|r| {
            r.iter()
                .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z")
        })
    });
    let (_, body) = prom.get("/api/v1/rules").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rules = v["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 16, "{body}");
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    // Nothing is wrong here, so nothing the rules watch fires (the
    // certificate has 40 days, the API answers, the backup is fresh); the
    // disk rules watch this machine's real disk, which the test cannot set.
    let firing: Vec<&serde_json::Value> = rules
        .iter()
        .filter(|r| r["state"] == "firing" || r["state"] == "pending")
        .filter(|r| !r["name"].as_str().unwrap_or("").starts_with("DrctlDisk"))
        .collect();
    assert!(firing.is_empty(), "{firing:?}");
}
