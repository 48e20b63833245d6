//! `[jobs.X.restore]` hooks: the commands a runbook runs around a restore
//! (stop the application, start it again), as argv lists without a shell.
//!
//! `before` hooks run in order once the restore has every consent it needs
//! and before the target is touched; the first that fails stops the rest
//! and the restore. `after` hooks all run, in order, whether the restore
//! succeeded or not: after a failed restore the application comes back on
//! the untouched old database. Each runs under the job's `timeout` with the
//! allow-listed environment children get (never drctl's secrets); what it
//! printed is kept (its tail, scrubbed of secrets) in the restore's report.

use crate::config::RestoreHooks;
use serde::Serialize;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The most of a hook's output kept in the report.
const OUTPUT_TAIL: usize = 4096;

/// One hook's run, for the report and the log.
#[derive(Debug, Clone, Serialize)]
pub struct HookRun {
    /// `before` or `after`.
    pub phase: &'static str,
    /// The command as configured.
    pub argv: Vec<String>,
    /// It exited 0 within its time.
    pub ok: bool,
    /// How it ended: `exit 0`, `exit 3`, `killed after 5m`, `cannot start: ...`.
    pub status: String,
    /// The tail of its stdout and stderr, redacted.
    pub output: String,
    /// Wall time.
    pub seconds: f64,
}

/// The `before` hooks, in order, stopping at the first that fails.
pub async fn before(hooks: &RestoreHooks) -> Vec<HookRun> {
    let mut out = Vec::new();
    for argv in &hooks.before {
        let r = run_one("before", argv, hooks.timeout).await;
        let ok = r.ok;
        out.push(r);
        if !ok {
            break;
        }
    }
    out
}

/// Every `after` hook, in order, whatever the ones before did.
pub async fn after(hooks: &RestoreHooks) -> Vec<HookRun> {
    let mut out = Vec::new();
    for argv in &hooks.after {
        out.push(run_one("after", argv, hooks.timeout).await);
    }
    out
}

/// `phase: argv` for plans and messages.
pub fn describe(phase: &str, argv: &[String]) -> String {
    format!("{phase} hook: {}", shell_words(argv))
}

/// The first failure among `runs`, as a sentence.
pub fn failure(runs: &[HookRun]) -> Option<String> {
    runs.iter().find(|r| !r.ok).map(|r| {
        let mut s = format!("{} failed ({})", describe(r.phase, &r.argv), r.status);
        if !r.output.trim().is_empty() {
            s.push_str(&format!(": {}", r.output.trim()));
        }
        s
    })
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run_one(phase: &'static str, argv: &[String], timeout: Duration) -> HookRun {
    let started = Instant::now();
    let (ok, status, output) = match execute(argv, timeout).await {
        Ok((code, output)) => (code == Some(0), exit_text(code), output),
        Err(e) => (false, e, String::new()),
    };
    let run = HookRun {
        phase,
        argv: argv.to_vec(),
        ok,
        status,
        output: crate::base::secret::redact(&output),
        seconds: started.elapsed().as_secs_f64(),
    };
    if run.ok {
        tracing::info!(hook = %describe(phase, argv), seconds = run.seconds, "restore hook done");
    } else {
        tracing::warn!(hook = %describe(phase, argv), status = %run.status, "restore hook failed");
    }
    run
}

fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}"))
}

/// Run `argv`, its output merged, killed at `timeout` (or when drctl dies).
async fn execute(argv: &[String], timeout: Duration) -> Result<(Option<i32>, String), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::base::child_env::restrict(&mut cmd);
    // The hook dies with drctl (SIGKILL from the kernel if drctl is
    // killed); its own children are in its process group, killed with it
    // when it times out or the restore is interrupted.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let mut group = Group(child.id().and_then(|p| i32::try_from(p).ok()));
    let ended = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if matches!(ended, Ok(Ok(_))) {
        // Ended by itself: what it started in the background (an
        // application started with `&`) is meant to stay.
        group.0 = None;
    }
    match ended {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.code(), tail(&text)))
        }
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => Err(format!(
            "killed after {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// A hook's process group, killed whole when dropped (a timeout, an
/// interrupted restore) unless the hook ended by itself.
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_TAIL {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(before: &[&[&str]], after: &[&[&str]], timeout: Duration) -> RestoreHooks {
        let v = |l: &[&[&str]]| -> Vec<Vec<String>> {
            l.iter()
                .map(|a| a.iter().map(|s| (*s).to_owned()).collect())
                .collect()
        };
        RestoreHooks {
            before: v(before),
            after: v(after),
            timeout,
            ..RestoreHooks::default()
        }
    }

    #[tokio::test]
    async fn before_stops_at_the_first_failure_and_after_runs_every_hook() {
        let h = hooks(
            &[&["true"], &["sh", "-c", "echo stopping; exit 3"], &["true"]],
            &[&["false"], &["sh", "-c", "echo started"]],
            Duration::from_secs(10),
        );
        let b = before(&h).await;
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].ok && !b[1].ok);
        assert_eq!(b[1].status, "exit 3");
        let why = failure(&b).unwrap();
        assert!(
            why.contains("before hook: sh -c 'echo stopping; exit 3' failed (exit 3): stopping"),
            "{why}"
        );
        let a = after(&h).await;
        assert_eq!(a.len(), 2);
        assert!(!a[0].ok && a[1].ok);
        assert_eq!(a[1].output.trim(), "started");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_at_its_timeout_and_a_missing_one_fails() {
        let h = hooks(
            &[&["sleep", "30"]],
            &[&["/nonexistent/drctl-hook"]],
            Duration::from_millis(300),
        );
        let t = Instant::now();
        let b = before(&h).await;
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(!b[0].ok && b[0].status.starts_with("killed after"), "{b:?}");
        let a = after(&h).await;
        assert!(!a[0].ok && a[0].status.starts_with("cannot start"), "{a:?}");
    }

    #[test]
    fn long_output_keeps_its_tail() {
        let t = tail(&"é".repeat(5000));
        assert!(t.starts_with("...") && t.len() <= OUTPUT_TAIL + 4);
    }
}
