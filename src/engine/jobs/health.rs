//! The `health` kind: R4's `health_check.sh` (curl with 3 tries, 5 s apart)
//! and R1's API/DB/S3 checks, as probes of type http, tcp, postgres (`SELECT
//! 1`, like pg_isready), redis (`PING`) and command (exit code).
//!
//! Within a run a probe is retried `retries` times; across runs a check
//! flips to down only after `failure_threshold` failed runs in a row, and
//! back up after `success_threshold` passing ones (as Gatus does), so one
//! blip pages nobody. The streaks live in SQLite (`health_state`), so runs
//! from the daemon and from `drctl run` count alike.

use crate::base::error::{Error, Result};
use crate::config::{resolve_secret, Down, HealthCheck, HealthJob, HttpProbe, Probe, UrlSource};
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
use crate::services::state::State;
use serde_json::json;
use sqlx::Row;
use std::time::Instant;

/// One probe attempt: Ok(what it saw) or Err(why it failed).
async fn probe(c: &HealthCheck) -> std::result::Result<String, String> {
    let resolve = |u: &UrlSource| {
        resolve_secret(
            u.url.as_deref(),
            u.url_env.as_deref(),
            u.url_file.as_deref(),
            "health check URL",
        )
        // Errors quote URLs (reqwest, redis): scrub the password part too.
        .inspect(|u| crate::base::secret::register_url_password(u.expose()))
        .map_err(|e| e.to_string())
    };
    let work = async {
        match &c.probe {
            Probe::Http(h) => http(c, h, resolve(&h.url)?.expose()).await,
            Probe::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(|_| format!("{address} accepts connections"))
                .map_err(|e| format!("cannot connect to {address}: {e}")),
            Probe::Postgres { url } => {
                let target = crate::services::pg::PgTarget::parse(resolve(url)?.expose())
                    .map_err(|e| e.to_string())?;
                let mut conn = target.connect().await.map_err(|e| e.to_string())?;
                let one: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| crate::base::secret::redact(&e.to_string()))?;
                use sqlx::Connection;
                let _ = conn.close().await;
                Ok(format!("SELECT 1 returned {one} on {}", target.display()))
            }
            Probe::Redis { url } => {
                let u = resolve(url)?;
                let client = redis::Client::open(u.expose())
                    .map_err(|e| crate::base::secret::redact(&e.to_string()))?;
                let mut con = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| crate::base::secret::redact(&e.to_string()))?;
                let pong: String = redis::cmd("PING")
                    .query_async(&mut con)
                    .await
                    .map_err(|e| crate::base::secret::redact(&e.to_string()))?;
                if pong == "PONG" {
                    Ok("PING answered PONG".into())
                } else {
                    Err(format!("PING answered {pong:?}"))
                }
            }
            Probe::Command { argv, expect_exit } => command(argv, *expect_exit).await,
        }
    };
    match tokio::time::timeout(c.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(c.timeout)
        )),
    }
}

async fn http(c: &HealthCheck, h: &HttpProbe, url: &str) -> std::result::Result<String, String> {
    let shown = crate::config::strip_userinfo(url);
    let client = reqwest::Client::builder()
        .timeout(c.timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| e.to_string())?;
    let method = match &h.method {
        Some(m) => m.get().map_err(|e| e.to_string())?.0.clone(),
        None => reqwest::Method::GET,
    };
    let mut req = client.request(method.clone(), url);
    for (k, v) in &h.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| {
        // Without reqwest's copy of the URL: it holds the unmasked query.
        crate::base::secret::redact(&format!(
            "{method} {shown}: {}",
            crate::base::error::chain(&e.without_url())
        ))
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let status_ok = match h.expect_status {
        Some(s) => status.as_u16() == s,
        None => status.is_success(),
    };
    let excerpt = || {
        let b: String = body.chars().take(200).collect();
        crate::base::secret::redact(b.trim())
    };
    if !status_ok {
        return Err(format!(
            "{method} {shown} answered {status} (expected {}): {}",
            h.expect_status
                .map_or_else(|| "2xx".into(), |s| s.to_string()),
            excerpt()
        ));
    }
    if let Some(needle) = &h.body_contains {
        if !body.contains(needle.as_str()) {
            return Err(format!(
                "{method} {shown} answered {status} without {needle:?} in the body: {}",
                excerpt()
            ));
        }
    }
    if let (Some(ptr), Some(want)) = (&h.json_pointer, &h.json_equals) {
        let doc: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            format!(
                "{method} {shown}: the body is not JSON ({e}): {}",
                excerpt()
            )
        })?;
        let want = serde_json::to_value(want).unwrap_or_default();
        match doc.pointer(ptr) {
            Some(v) if *v == want => {}
            Some(v) => return Err(format!("{method} {shown}: {ptr} is {v}, expected {want}")),
            None => {
                return Err(format!(
                    "{method} {shown}: the body has no {ptr}: {}",
                    excerpt()
                ))
            }
        }
    }
    Ok(format!("{method} {shown} answered {status}"))
}

async fn command(argv: &[String], expect_exit: i32) -> std::result::Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(prog);
    crate::base::child_env::restrict(&mut cmd);
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let code = out.status.code();
    let tail = |b: &[u8]| {
        crate::base::secret::redact(crate::services::state::tail(
            String::from_utf8_lossy(b).trim(),
            300,
        ))
    };
    if code == Some(expect_exit) {
        Ok(format!("{} exited {}", argv.join(" "), expect_exit))
    } else {
        let mut msg = match code {
            Some(n) => format!("{} exited {n} (expected {})", argv.join(" "), expect_exit),
            None => format!("{} was killed by a signal", argv.join(" ")),
        };
        let err = tail(&out.stderr);
        let err = if err.is_empty() {
            tail(&out.stdout)
        } else {
            err
        };
        if !err.is_empty() {
            msg.push_str(&format!(": {err}"));
        }
        Err(msg)
    }
}

/// A check's result in one run, after its retries.
struct Attempted {
    passed: bool,
    attempts: u32,
    message: String,
    seconds: f64,
}

async fn attempt(c: &HealthCheck, cancel: &tokio_util::sync::CancellationToken) -> Attempted {
    let started = Instant::now();
    let mut last = String::new();
    for i in 0..=c.retries {
        match probe(c).await {
            Ok(m) => {
                return Attempted {
                    passed: true,
                    attempts: i + 1,
                    message: m,
                    seconds: started.elapsed().as_secs_f64(),
                }
            }
            Err(e) => last = e,
        }
        if i < c.retries {
            tokio::select! {
                () = tokio::time::sleep(c.retry_delay) => {}
                () = cancel.cancelled() => break,
            }
        }
    }
    Attempted {
        passed: false,
        attempts: c.retries + 1,
        message: last,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A check's state between runs.
#[derive(Debug, Clone)]
struct Streak {
    up: bool,
    failures: i64,
    successes: i64,
    changed_at: i64,
}

impl Streak {
    /// Count one run's result; the check flips only once its streak reaches
    /// the threshold of the other side (Gatus-style), and `changed_at`
    /// moves only when it flips.
    fn advance(&mut self, passed: bool, success_threshold: u32, failure_threshold: u32, now: i64) {
        if passed {
            self.successes += 1;
            self.failures = 0;
            if !self.up && self.successes >= i64::from(success_threshold) {
                self.up = true;
                self.changed_at = now;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.up && self.failures >= i64::from(failure_threshold) {
                self.up = false;
                self.changed_at = now;
            }
        }
    }
}

async fn load(state: &State, job: &str, check: &str) -> Result<Option<Streak>> {
    let row = sqlx::query(
        "SELECT up, failures, successes, changed_at FROM health_state WHERE job = ? AND check_name = ?",
    )
    .bind(job)
    .bind(check)
    .fetch_optional(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    row.map(|r| {
        Ok(Streak {
            up: r.try_get::<i64, _>("up")? != 0,
            failures: r.try_get("failures")?,
            successes: r.try_get("successes")?,
            changed_at: r.try_get("changed_at")?,
        })
    })
    .transpose()
    .map_err(|e: sqlx::Error| state.err(e))
}

async fn save(state: &State, job: &str, check: &str, s: &Streak, err: Option<&str>) -> Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO health_state (job, check_name, up, failures, successes, changed_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job)
    .bind(check)
    .bind(s.up)
    .bind(s.failures)
    .bind(s.successes)
    .bind(s.changed_at)
    .bind(err)
    .execute(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    Ok(())
}

/// Probe every check of the job (in parallel) with no streak: whether each
/// passes right now, as a restore's `verify` needs. `Err` names the first
/// that failed.
pub async fn probe_now(
    job: &HealthJob,
    cancel: &tokio_util::sync::CancellationToken,
) -> std::result::Result<String, String> {
    let results = futures::future::join_all(job.checks.iter().map(|c| attempt(c, cancel))).await;
    for (c, r) in job.checks.iter().zip(&results) {
        if !r.passed {
            return Err(format!("{}: {}", c.display_name(), r.message));
        }
    }
    Ok(format!("{} of {} checks up", results.len(), results.len()))
}

/// Probe every check of the job (in parallel) and grade it against its
/// streak.
pub async fn run(ctx: &CheckCtx<'_>, job: &HealthJob) -> Result<Report> {
    let results =
        futures::future::join_all(job.checks.iter().map(|c| attempt(c, &ctx.cancel))).await;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted(format!(
            "health job {} cancelled",
            ctx.job
        )));
    }
    let mut report = Report::new(ctx.job, "health");
    let now = chrono::Utc::now().timestamp_millis();
    let mut details = Vec::new();
    let mut down = 0;
    for (c, r) in job.checks.iter().zip(results) {
        let name = c.display_name();
        let mut s = load(ctx.state, ctx.job, &name).await?.unwrap_or(Streak {
            up: true,
            failures: 0,
            successes: 0,
            changed_at: now,
        });
        s.advance(r.passed, c.success_threshold, c.failure_threshold, now);
        save(
            ctx.state,
            ctx.job,
            &name,
            &s,
            (!r.passed).then_some(r.message.as_str()),
        )
        .await?;
        let since = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(s.changed_at)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%S UTC");
        let (level, message) = match (s.up, r.passed) {
            (true, true) => (
                Level::Ok,
                format!(
                    "up: {} ({} attempt(s), {:.2}s)",
                    r.message, r.attempts, r.seconds
                ),
            ),
            (true, false) => (
                Level::Ok,
                format!(
                    "failing, {} of {} failed runs before it counts as down: {}",
                    s.failures, c.failure_threshold, r.message
                ),
            ),
            (false, passed) => {
                down += 1;
                let level = match c.severity.get()? {
                    Down::Warning => Level::Warning,
                    Down::Critical => Level::Critical,
                };
                let now_msg = if passed {
                    format!(
                        "passing again, {} of {} passing runs before it counts as up",
                        s.successes, c.success_threshold
                    )
                } else {
                    format!("{} after {} attempt(s)", r.message, r.attempts)
                };
                (level, format!("down since {since}: {now_msg}"))
            }
        };
        report.samples.push(Sample::gauge(
            "drctl_health_up",
            &[("job", ctx.job), ("check", &name)],
            if s.up { 1.0 } else { 0.0 },
        ));
        details.push(json!({
            "check": name,
            "up": s.up,
            "passed": r.passed,
            "attempts": r.attempts,
            "seconds": r.seconds,
            "consecutive_failures": s.failures,
            "consecutive_successes": s.successes,
            "message": message,
        }));
        report.findings.push(Finding::new(name, level, message));
    }
    report.summary = format!(
        "{} of {} checks up",
        job.checks.len() - down,
        job.checks.len()
    );
    report.details = json!({ "checks": details });
    Ok(report)
}

#[cfg(test)]
mod streak_tests {
    use super::Streak;

    fn up() -> Streak {
        Streak {
            up: true,
            failures: 0,
            successes: 0,
            changed_at: 0,
        }
    }

    #[test]
    fn flips_down_at_the_failure_threshold_and_up_at_the_success_threshold() {
        let mut s = up();
        s.advance(false, 2, 3, 1);
        s.advance(false, 2, 3, 2);
        assert!(s.up && s.changed_at == 0, "two of three failures: still up");
        s.advance(false, 2, 3, 3);
        assert!(!s.up && s.changed_at == 3);
        s.advance(true, 2, 3, 4);
        assert!(!s.up, "one of two passes: still down");
        s.advance(true, 2, 3, 5);
        assert!(s.up && s.changed_at == 5);
    }

    #[test]
    fn a_pass_resets_the_failure_streak_and_flapping_never_flips() {
        let mut s = up();
        for t in 0..10 {
            s.advance(t % 2 == 0, 2, 2, t);
        }
        assert!(s.up && s.changed_at == 0);
        assert_eq!((s.failures, s.successes), (1, 0));
    }

    #[test]
    fn a_threshold_of_one_flips_on_the_first_result() {
        let mut s = up();
        s.advance(false, 1, 1, 7);
        assert!(!s.up && s.changed_at == 7);
        s.advance(true, 1, 1, 8);
        assert!(s.up && s.changed_at == 8);
    }
}
