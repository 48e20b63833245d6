//! Alerts end to end: the real binary, a real SMTP server (STARTTLS + AUTH)
//! and a real HTTP receiver for Slack, webhooks and pings, all on loopback.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::receivers::{HttpReceiver, SmtpServer};
use common::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const SMTP_PASSWORD: &str = "smtp-Pa55word-9931";
const WEBHOOK_SECRET: &str = "whsec-7f3a9c1e55d0";

/// A files job whose source directory the test removes (fail) or recreates (succeed).
struct Source(std::path::PathBuf);

impl Source {
    fn new() -> Source {
        let dir = scratch_dir("drctl-alert-src-");
        let s = Source(dir);
        s.fix();
        s
    }
    fn break_it(&self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
    fn fix(&self) {
        std::fs::create_dir_all(&self.0).unwrap();
        std::fs::write(self.0.join("app.conf"), "x=1\n").unwrap();
    }
    fn job(&self, name: &str, extra: &str) -> String {
        format!(
            "[jobs.{name}]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n{extra}",
            self.0.display()
        )
    }
}

fn repo() -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n",
        free_port()
    )
}

fn slack_toml(name: &str) -> String {
    format!("[alerts.channels.{name}]\ntype = \"slack\"\nwebhook_url_env = \"SLACK_WEBHOOK_URL\"\n")
}

/// One job of `src` whose critical alerts go to Slack (the receiver's
/// `/slack`), with `alerts` as the `[alerts]` keys.
fn slack_world(
    http: &HttpReceiver,
    src: &Source,
    job: &str,
    job_extra: &str,
    alerts: &str,
) -> World {
    let mut w = World::new(&format!(
        "{}{}{}[alerts]\n{alerts}[alerts.routes]\ncritical = [\"ops\"]\n",
        repo(),
        src.job(job, job_extra),
        slack_toml("ops"),
    ));
    w.set_env("SLACK_WEBHOOK_URL", &http.url("/slack"));
    w
}

fn webhook_toml(name: &str, http: &HttpReceiver) -> String {
    format!(
        "[alerts.channels.{name}]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"WEBHOOK_SECRET\"\n",
        http.url("/hook")
    )
}

fn alerts_json(w: &World) -> serde_json::Value {
    let r = w.drctl(&["alerts", "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

/// HMAC-SHA256 written out from RFC 2104 on top of plain SHA-256, so the
/// check does not share code with drctl's `hmac` crate.
/// The newest outbox row of `event` (`firing`, `resolved`, ...).
fn outbox_row(w: &World, event: &str) -> serde_json::Value {
    alerts_json(w)["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == event)
        .cloned()
        .unwrap_or_else(|| panic!("no {event} row in the outbox"))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_hmac_reference_matches_rfc_4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        drctl::services::alerts::channels::signature(b"Jefe", 1700000000, b"{}"),
        format!("sha256={}", hmac_sha256(b"Jefe", b"1700000000.{}"))
    );
}

fn assert_no_secrets(what: &str, text: &str) {
    for s in [SMTP_PASSWORD, WEBHOOK_SECRET] {
        assert!(!text.contains(s), "{what} leaks a secret:\n{text}");
    }
}

#[test]
fn a_failure_reaches_email_slack_and_a_signed_webhook_once_and_recovery_resolves_once() {
    let mut smtp = SmtpServer::prepare("drctl", SMTP_PASSWORD);
    smtp.start();
    let http = HttpReceiver::start();
    let src = Source::new();
    let mut w = World::new(&format!(
        "{}{}{}{}{}[alerts.routes]\ncritical = [\"mail\", \"ops\", \"hooks\"]\nwarning = [\"ops\"]\n",
        repo(),
        src.job("nightly", ""),
        smtp.channel_toml("mail", "SMTP_PASSWORD"),
        slack_toml("ops"),
        webhook_toml("hooks", &http),
    ));
    w.set_env("SMTP_PASSWORD", SMTP_PASSWORD);
    w.set_env("SLACK_WEBHOOK_URL", &http.url("/slack"));
    w.set_env("WEBHOOK_SECRET", WEBHOOK_SECRET);
    let host = drctl::base::host::name();

    src.break_it();
    let run = w.drctl(&["run", "nightly"]);
    assert_ne!(run.code, 0, "the job should fail: {}", run.all());
    assert_no_secrets("drctl run", &run.all());

    // Email: real SMTP with STARTTLS and AUTH PLAIN.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    assert_eq!(m.user.as_deref(), Some("drctl"));
    assert_eq!(m.from, "drctl@example.com");
    assert_eq!(m.to, vec!["oncall@example.com", "dba@example.com"]);
    assert_eq!(m.header("From").as_deref(), Some("drctl@example.com"));
    assert!(m.header("To").unwrap().contains("oncall@example.com"));
    let subject = m.header("Subject").unwrap();
    assert!(subject.contains("[drctl CRITICAL]"), "{subject}");
    assert!(subject.contains("job nightly failed"), "{subject}");
    assert!(subject.contains(&host), "{subject}");
    assert!(m.header("Message-ID").is_some());
    assert!(m.header("Date").is_some());
    let body = m.body();
    assert!(body.contains("What happened:"), "{body}");
    assert!(
        body.contains(&src.0.display().to_string()),
        "the error names the path: {body}"
    );
    assert!(body.contains("drctl logs nightly"), "{body}");
    assert!(body.contains("key:     job_failed:nightly"), "{body}");

    // Slack: one readable message.
    let slack = http.requests("/slack");
    assert_eq!(slack.len(), 1);
    let j = slack[0].json();
    let text = j["text"].as_str().unwrap();
    assert!(
        text.contains("CRITICAL") && text.contains("nightly") && text.contains(&host),
        "{text}"
    );
    let block = j["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        block.contains("*Error:*") && block.contains("*Next:*"),
        "{block}"
    );
    assert!(block.contains("`nightly`"), "{block}");

    // Webhook: JSON signed over "timestamp.body", checked independently.
    let hooks = http.requests("/hook");
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    let ts = &h.headers["x-drctl-timestamp"];
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {ts}");
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&h.body);
    assert_eq!(
        h.headers["x-drctl-signature"],
        format!("sha256={}", hmac_sha256(WEBHOOK_SECRET.as_bytes(), &signed))
    );
    let j = h.json();
    assert_eq!(j["event"], "firing");
    assert_eq!(j["key"], "job_failed:nightly");
    assert_eq!(j["severity"], "critical");
    assert_eq!(j["job"], "nightly");
    assert_eq!(j["host"], host.as_str());
    assert_eq!(h.headers["x-drctl-delivery"], j["id"].as_str().unwrap());

    // A second failure of the same condition sends nothing new.
    let again = w.drctl(&["run", "nightly"]);
    assert_ne!(again.code, 0);
    assert_eq!(smtp.mails().len(), 1);
    assert_eq!(http.requests("/slack").len(), 1);
    assert_eq!(http.requests("/hook").len(), 1);

    let a = alerts_json(&w);
    assert_no_secrets("alerts --json", &a.to_string());
    assert_eq!(a["alerts"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["alerts"][0]["state"], "firing");
    assert_eq!(a["alerts"][0]["notifications"], 1);
    let outbox = a["outbox"].as_array().unwrap();
    assert_eq!(outbox.len(), 3, "{a}");
    for d in outbox {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }
    let table = w.drctl(&["alerts"]);
    table.ok();
    assert!(
        table.stdout.contains("job_failed:nightly"),
        "{}",
        table.stdout
    );
    assert_no_secrets("alerts", &table.all());

    // Recovery: exactly one resolve per channel, then silence.
    src.fix();
    w.drctl(&["run", "nightly"]).ok();
    w.drctl(&["run", "nightly"]).ok();
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    let subject = mails[1].header("Subject").unwrap();
    assert!(
        subject.contains("[drctl RESOLVED]") && subject.contains("recovered"),
        "{subject}"
    );
    let slack = http.requests("/slack");
    assert_eq!(slack.len(), 2);
    assert!(slack[1].json()["text"]
        .as_str()
        .unwrap()
        .contains("RESOLVED"));
    let hooks = http.requests("/hook");
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].json()["event"], "resolved");
    assert_eq!(hooks[1].json()["key"], "job_failed:nightly");
    let a = alerts_json(&w);
    assert!(a["alerts"].as_array().unwrap().is_empty(), "{a}");

    let logs = w.drctl(&["logs", "nightly", "--json"]);
    assert_no_secrets("logs", &logs.all());
}

#[test]
fn a_condition_failing_three_times_notifies_once_repeats_after_the_interval_and_resolves_once() {
    let http = HttpReceiver::start();
    let src = Source::new();
    let w = slack_world(&http, &src, "nightly", "", "repeat_interval = \"3s\"\n");
    src.break_it();
    let first = Instant::now();
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    assert_eq!(
        http.requests("/slack").len(),
        1,
        "the second failure is deduplicated"
    );
    let wait = Duration::from_millis(3300).saturating_sub(first.elapsed());
    std::thread::sleep(wait);
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    let slack = http.requests("/slack");
    assert_eq!(slack.len(), 2, "one repeat after repeat_interval");
    let repeat = slack[1].json()["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(repeat.contains("still failing"), "{repeat}");
    src.fix();
    w.drctl(&["run", "nightly"]).ok();
    let slack = http.requests("/slack");
    assert_eq!(slack.len(), 3);
    assert!(slack[2].json()["text"]
        .as_str()
        .unwrap()
        .contains("RESOLVED"));
    let a = alerts_json(&w);
    let events: Vec<&str> = a["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["firing", "repeat", "resolved"]);
}

#[test]
fn for_damps_a_failure_that_recovers_in_time_and_a_job_route_overrides_the_default() {
    let http = HttpReceiver::start();
    let src = Source::new();
    let other = Source::new();
    let mut w = World::new(&format!(
        "{}{}{}{}{}[alerts.channels.dbteam]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\ncritical = [\"ops\"]\n",
        repo(),
        src.job("flappy", "[jobs.flappy.alerts]\nfor = \"1h\"\n"),
        other.job("routed", "[jobs.routed.alerts]\ncritical = [\"dbteam\"]\n"),
        slack_toml("ops"),
        "",
        http.url("/dbteam"),
    ));
    w.set_env("SLACK_WEBHOOK_URL", &http.url("/slack"));
    src.break_it();
    assert_ne!(w.drctl(&["run", "flappy"]).code, 0);
    let a = alerts_json(&w);
    assert_eq!(a["alerts"][0]["state"], "pending", "{a}");
    src.fix();
    w.drctl(&["run", "flappy"]).ok();
    assert!(
        http.requests("/slack").is_empty(),
        "a failure shorter than `for` stays quiet"
    );
    assert!(alerts_json(&w)["alerts"].as_array().unwrap().is_empty());

    other.break_it();
    assert_ne!(w.drctl(&["run", "routed"]).code, 0);
    assert!(
        http.requests("/slack").is_empty(),
        "the job's route replaces the default"
    );
    let posts = http.requests("/dbteam");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].json()["key"], "job_failed:routed");
    assert!(
        !posts[0].headers.contains_key("x-drctl-signature"),
        "no secret, no signature"
    );
}

#[test]
fn pings_follow_each_run_start_success_and_fail() {
    let http = HttpReceiver::start();
    let src = Source::new();
    let w = World::new(&format!(
        "{}{}[alerts.channels.hc]\ntype = \"ping\"\nurl = \"{}\"\n",
        repo(),
        src.job("nightly", ""),
        http.url("/ping/{job}")
    ));
    w.drctl(&["run", "nightly"]).ok();
    let start = http.requests("/ping/nightly/start");
    let ok = http.requests("/ping/nightly");
    assert_eq!((start.len(), ok.len()), (1, 1));
    src.break_it();
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    assert_eq!(http.requests("/ping/nightly/start").len(), 2);
    let fail = http.requests("/ping/nightly/fail");
    assert_eq!(fail.len(), 1);
    assert!(
        fail[0].text().contains(&src.0.display().to_string()),
        "{}",
        fail[0].text()
    );
    assert_eq!(http.requests("/ping/nightly").len(), 1);
}

#[test]
fn smtp_and_slack_down_during_the_failure_still_deliver_later_also_across_a_daemon_restart() {
    let mut smtp = SmtpServer::prepare("drctl", SMTP_PASSWORD);
    let http = HttpReceiver::start();
    // Slack answers 503 three times, then recovers.
    http.queue_statuses(&[503, 503, 503]);
    let src = Source::new();
    src.break_it();
    let mut w = World::new(&format!(
        "{}{}{}{}[alerts]\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n[alerts.routes]\ncritical = [\"mail\", \"ops\"]\n",
        repo(),
        src.job("nightly", "schedule = \"*/2 * * * * *\"\n"),
        smtp.channel_toml("mail", "SMTP_PASSWORD"),
        slack_toml("ops"),
    ));
    w.set_env("SMTP_PASSWORD", SMTP_PASSWORD);
    w.set_env("SLACK_WEBHOOK_URL", &http.url("/slack"));

    let mut d = Daemon::start(&w);
    // The failure is queued for both; the mail keeps failing (connection refused).
    wait_until(Duration::from_secs(30), "mail delivery attempts", || {
        let a = alerts_json(&w);
        a["outbox"].as_array().unwrap().iter().any(|r| {
            r["channel"] == "mail"
                && r["state"] == "pending"
                && r["attempts"].as_i64().unwrap() >= 3
        })
    });
    wait_until(
        Duration::from_secs(30),
        "slack delivered after 503s",
        || http.requests("/slack").len() == 4,
    );
    let a = alerts_json(&w);
    let slack_row = a["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "ops")
        .unwrap()
        .clone();
    assert_eq!(slack_row["state"], "delivered");
    assert_eq!(slack_row["attempts"], 4, "{slack_row}");
    let mail_row = a["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "mail")
        .unwrap()
        .clone();
    assert!(
        mail_row["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", smtp.port)),
        "{mail_row}"
    );
    assert_no_secrets("alerts --json", &a.to_string());

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
    assert_no_secrets("daemon log", &d.log());
    assert!(smtp.mails().is_empty());

    // SMTP comes back while the daemon is down; the restarted daemon delivers.
    smtp.start();
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "the queued mail", || {
        !smtp.mails().is_empty()
    });
    // The job still fails every tick: the condition stays one alert.
    std::thread::sleep(Duration::from_secs(3));
    let (code, metrics) = http_get(http_port(&w), "/metrics");
    assert_eq!(code, 200);
    for line in [
        "drctl_alerts_firing{severity=\"critical\"} 1",
        "drctl_alert_deliveries{channel=\"mail\",state=\"delivered\"} 1",
        "drctl_alert_deliveries{channel=\"ops\",state=\"delivered\"} 1",
        "drctl_alert_oldest_pending_seconds 0.0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0]
        .header("Subject")
        .unwrap()
        .contains("job nightly failed"));
    assert_eq!(http.requests("/slack").len(), 4);
    let a = alerts_json(&w);
    let mail_row = a["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "mail")
        .unwrap()
        .clone();
    assert_eq!(mail_row["state"], "delivered", "{mail_row}");
    assert!(mail_row["attempts"].as_i64().unwrap() >= 4, "{mail_row}");
    assert_no_secrets("daemon log", &d.log());
}

#[test]
fn alerts_test_reports_each_channel_and_names_a_missing_one() {
    let mut smtp = SmtpServer::prepare("drctl", SMTP_PASSWORD);
    smtp.start();
    let http = HttpReceiver::start();
    let mut w = World::new(&format!(
        "{}{}{}{}",
        repo(),
        smtp.channel_toml("mail", "SMTP_PASSWORD"),
        slack_toml("ops"),
        webhook_toml("hooks", &http),
    ));
    w.set_env("SMTP_PASSWORD", SMTP_PASSWORD);
    w.set_env("SLACK_WEBHOOK_URL", &http.url("/slack"));
    w.set_env("WEBHOOK_SECRET", WEBHOOK_SECRET);
    http.queue_statuses(&[500]); // the webhook (sent after ops) is down
    let r = w.drctl(&["alerts", "test"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("mail") && r.stdout.contains("delivered: SMTP 250"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("FAILED: HTTP 500"), "{}", r.stdout);
    assert!(
        r.stderr.contains("1 of 3 channel(s) failed"),
        "{}",
        r.stderr
    );
    assert_no_secrets("alerts test", &r.all());
    assert_eq!(smtp.mails().len(), 1);
    assert!(smtp.mails()[0]
        .header("Subject")
        .unwrap()
        .contains("[drctl TEST]"));

    let r = w.drctl(&["alerts", "test", "--channel", "hooks", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["delivered"], true);
    assert_eq!(
        http.requests("/hook").last().unwrap().json()["event"],
        "test"
    );

    let r = w.drctl(&["alerts", "test", "--channel", "pager"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("alerts.channels.pager") && r.stderr.contains("hooks, mail, ops"),
        "{}",
        r.stderr
    );

    // A wrong SMTP password is a clear failure that does not print the password.
    w.set_env("SMTP_PASSWORD", "wrong-password-1234");
    let r = w.drctl(&["alerts", "test", "--channel", "mail"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("535"), "{}", r.stdout);
    assert!(!r.all().contains("wrong-password-1234"), "{}", r.all());
}

#[test]
fn a_rejected_message_does_not_block_the_next_and_an_undeliverable_one_expires_at_max_age() {
    let http = HttpReceiver::start();
    let src = Source::new();
    let w = slack_world(
        &http,
        &src,
        "nightly",
        "",
        "max_age = \"1s\"\nretry_initial = \"100ms\"\n",
    );

    // Slack refuses the payload (400): given up at once, not retried...
    http.queue_statuses(&[400]);
    src.break_it();
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    let firing = outbox_row(&w, "firing");
    assert_eq!(firing["state"], "failed", "{firing}");
    assert_eq!(firing["attempts"], 1);
    assert!(
        firing["last_error"].as_str().unwrap().contains("HTTP 400"),
        "{firing}"
    );
    // ...and the resolve behind it still goes out.
    src.fix();
    w.drctl(&["run", "nightly"]).ok();
    assert_eq!(outbox_row(&w, "resolved")["state"], "delivered");
    assert_eq!(http.requests("/slack").len(), 2);

    // Slack down for longer than max_age: the row expires, saying why.
    http.queue_statuses(&[503; 50]);
    src.break_it();
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    std::thread::sleep(Duration::from_millis(1300));
    let r = w.drctl(&["alerts", "deliver"]);
    r.ok();
    assert!(r.stdout.contains("given up 1"), "{}", r.stdout);
    let rows: Vec<serde_json::Value> = alerts_json(&w)["outbox"].as_array().unwrap().clone();
    let newest = &rows[0];
    assert_eq!(newest["event"], "firing");
    assert_eq!(newest["state"], "expired", "{newest}");
    let err = newest["last_error"].as_str().unwrap();
    assert!(
        err.contains("expired after 1 attempts") && err.contains("HTTP 503"),
        "{err}"
    );
}

#[test]
fn a_job_failing_tick_after_tick_under_the_daemon_alerts_once_repeats_once_and_resolves_once() {
    let http = HttpReceiver::start();
    let src = Source::new();
    src.break_it();
    let w = slack_world(
        &http,
        &src,
        "ticker",
        "schedule = \"* * * * * *\"\n",
        // Long enough that three one-second ticks fit well inside it.
        "repeat_interval = \"8s\"\n",
    );
    let failed = |w: &World| {
        let r = w.drctl(&["logs", "ticker", "-n", "100", "--json"]);
        let v: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap_or_default();
        v.iter().filter(|r| r["status"] == "failed").count()
    };
    let mut d = Daemon::start(&w);
    // Delivery follows the recorded failure by a moment: wait for both.
    wait_until(
        Duration::from_secs(30),
        "three failed ticks and the alert",
        || failed(&w) >= 3 && !http.requests("/slack").is_empty(),
    );
    assert_eq!(
        http.requests("/slack").len(),
        1,
        "three failures, one alert: {:?}",
        http.requests("/slack")
            .iter()
            .map(common::receivers::Request::text)
            .collect::<Vec<_>>()
    );
    wait_until(Duration::from_secs(30), "the repeat", || {
        http.requests("/slack").len() >= 2
    });
    src.fix();
    wait_until(Duration::from_secs(30), "the resolve", || {
        http.requests("/slack").len() >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log());
    let posts = http.requests("/slack");
    assert_eq!(posts.len(), 3, "firing, repeat, resolve and nothing else");
    let gap = posts[1].at - posts[0].at;
    assert!(
        gap >= Duration::from_millis(6900),
        "repeat after the interval, got {gap:?}"
    );
    let texts: Vec<String> = posts
        .iter()
        .map(|p| {
            p.json()["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(texts[0].contains("started failing"), "{}", texts[0]);
    assert!(texts[1].contains("still failing"), "{}", texts[1]);
    assert!(texts[2].contains("RESOLVED"), "{}", texts[2]);
    assert!(failed(&w) >= 4);
}

#[test]
fn a_restore_is_announced_when_it_starts_and_when_it_ends() {
    let http = HttpReceiver::start();
    let src = Source::new();
    let w = World::new(&format!(
        "{}{}[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\ninfo = [\"hook\"]\n",
        repo(),
        src.job("cfgs", ""),
        http.url("/notices")
    ));
    let id = w.drctl(&["run", "cfgs"]).ok().stdout.trim().to_owned();
    let out = scratch_dir("drctl-announce-");
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
    let kinds = |http: &HttpReceiver| -> Vec<(String, String)> {
        http.requests("/notices")
            .iter()
            .map(common::receivers::Request::json)
            .map(|n| {
                (
                    n["kind"].as_str().unwrap_or_default().to_owned(),
                    n["summary"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .filter(|(k, _)| k.starts_with("restore_"))
            .collect()
    };
    let seen = kinds(&http);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "restore_started");
    assert!(
        seen[0]
            .1
            .contains(&format!("restore of cfgs (backup {id}) started")),
        "{seen:?}"
    );
    assert_eq!(seen[1].0, "restore_finished");
    assert!(seen[1].1.contains("finished into"), "{seen:?}");

    // A restore that fails (a corrupted artifact) says so too.
    w.corrupt_artifact("cfgs", &id, "files.tar");
    let out2 = scratch_dir("drctl-announce-");
    let r = w.drctl(&[
        "restore",
        "--id",
        &id,
        "--job",
        "cfgs",
        "--to",
        out2.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    let seen = kinds(&http);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[3].0, "restore_failed");
    assert!(seen[3].1.contains("integrity"), "{seen:?}");
}

/// PagerDuty's Events API v2 played by the HTTP receiver: one incident per
/// condition (`dedup_key` = the condition key), trigger then resolve; 429
/// and 5xx retried until 202; a 400 given up at once without blocking what
/// follows; the routing key in no output.
#[test]
fn pagerduty_gets_one_incident_per_condition_retried_on_429_and_5xx_and_a_400_does_not_block() {
    const ROUTING_KEY: &str = "pd-routing-key-R0ut1ng-5511aa";
    let http = HttpReceiver::start();
    let src = Source::new();
    let mut w = World::new(&format!(
        "{}{}[alerts]\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n\
         [alerts.channels.pd]\ntype = \"pagerduty\"\nrouting_key_env = \"PD_ROUTING_KEY\"\nurl = \"{}\"\n\
         [alerts.routes]\ncritical = [\"pd\"]\n",
        repo(),
        src.job("nightly", ""),
        http.url("/v2/enqueue")
    ));
    w.set_env("PD_ROUTING_KEY", ROUTING_KEY);
    let events = || http.requests("/v2/enqueue");
    let deliver_until = |n: usize, what: &str| {
        wait_until(Duration::from_secs(30), what, || {
            w.drctl(&["alerts", "deliver"]);
            events().len() >= n
        });
    };

    // Rate-limited, then down, then accepted: three tries of one trigger.
    http.queue_statuses(&[429, 503, 202]);
    src.break_it();
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    deliver_until(3, "the trigger accepted");
    let sent = events();
    let trigger = sent[2].json();
    for r in &sent {
        assert_eq!(r.json(), trigger, "a retry sends the same event");
    }
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "job_failed:nightly");
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["component"], "nightly");
    assert_eq!(trigger["payload"]["class"], "job_failed");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("job nightly failed on "),
        "{trigger}"
    );
    assert!(trigger["payload"]["source"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(outbox_row(&w, "firing")["state"], "delivered");
    assert_eq!(outbox_row(&w, "firing")["attempts"], 3);

    // Recovery resolves the same incident.
    src.fix();
    w.drctl(&["run", "nightly"]).ok();
    deliver_until(4, "the resolve");
    let resolve = events()[3].json();
    assert_eq!(
        resolve,
        serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "job_failed:nightly"})
    );

    // PagerDuty refuses an event (400): given up at once, and the resolve
    // behind it still goes out.
    http.queue_statuses(&[400]);
    src.break_it();
    assert_ne!(w.drctl(&["run", "nightly"]).code, 0);
    deliver_until(5, "the refused trigger");
    src.fix();
    w.drctl(&["run", "nightly"]).ok();
    deliver_until(6, "the next resolve");
    let outbox = alerts_json(&w)["outbox"].as_array().unwrap().clone();
    let refused = outbox
        .iter()
        .find(|r| r["event"] == "firing" && r["state"] == "failed")
        .unwrap_or_else(|| panic!("{outbox:?}"));
    assert_eq!(refused["attempts"], 1, "{refused}");
    assert!(refused["last_error"].as_str().unwrap().contains("HTTP 400"));
    assert_eq!(outbox[0]["event"], "resolved");
    assert_eq!(outbox[0]["state"], "delivered", "{outbox:?}");

    // `alerts test` opens and closes an event of its own.
    let before = events().len();
    w.drctl(&["alerts", "test"]).ok();
    let test: Vec<serde_json::Value> = events()[before..]
        .iter()
        .map(common::receivers::Request::json)
        .collect();
    assert_eq!(test.len(), 2, "{test:?}");
    assert_eq!(test[0]["event_action"], "trigger");
    assert_eq!(test[1]["event_action"], "resolve");
    assert_eq!(test[0]["dedup_key"], test[1]["dedup_key"]);
    assert_ne!(test[0]["dedup_key"], "job_failed:nightly");

    // The routing key is in no output, JSON or log.
    for args in [
        &["alerts", "--json"][..],
        &["alerts"][..],
        &["config", "check"][..],
        &["logs", "nightly"][..],
    ] {
        let r = w.drctl(args);
        assert!(
            !r.all().contains(ROUTING_KEY),
            "{args:?} leaks the routing key:\n{}",
            r.all()
        );
    }
}
