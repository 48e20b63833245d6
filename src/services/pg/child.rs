//! Child processes (pg_dump, pg_restore, psql) whose failure cannot be missed.
//!
//! [`ExitChecked`] wraps a child's stdout so that a non-zero exit becomes a
//! read error at end of stream (see `stream::guarded`). stderr is kept (the
//! last 64 KiB) for the error message.

use crate::base::error::{Error, Result};
use crate::base::stream::{guarded, Guarded};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};
use tokio_util::task::AbortOnDropHandle;

const STDERR_KEEP: usize = 64 * 1024;

/// A running PostgreSQL client tool, killed on drop.
pub struct ToolChild {
    /// The tool's name, for messages.
    pub tool: String,
    /// The process.
    pub child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// Spawn `program args` with `env`; stdout piped when `pipe_stdout`, stdin piped when `pipe_stdin`.
/// The child is killed if the handle is dropped (cancellation, SIGTERM).
pub fn spawn_tool(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    pipe_stdin: bool,
    pipe_stdout: bool,
) -> Result<ToolChild> {
    let tool = program
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("tool")
        .to_owned();
    let mut cmd = Command::new(program);
    crate::base::child_env::restrict(&mut cmd);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // kill_on_drop needs drctl alive to run; if drctl is SIGKILLed the
    // kernel sends the child SIGKILL instead (a pg_restore that outlived
    // drctl finished databases nothing would ever remove).
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    // The libpq passfile is an unlinked file named as /dev/fd/N (see
    // `pg::target::PassFile`): this child, and only it, inherits N.
    let passfd = env
        .iter()
        .find(|(k, _)| k == "PGPASSFILE")
        .and_then(|(_, v)| v.strip_prefix("/dev/fd/"))
        .and_then(|n| n.parse::<i32>().ok());
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            if let Some(fd) = passfd {
                use nix::fcntl::{fcntl, FcntlArg, FdFlag};
                // SAFETY: the parent keeps the file open until the child is
                // gone (the PassFile outlives every spawn that names it).
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
    // 1 MiB pipes instead of 64 KiB: pg_dump blocks less, pg_restore reads
    // more per call, and we wake up 16x less often on a multi-GB stream.
    // Best effort (the limit is /proc/sys/fs/pipe-max-size).
    {
        use nix::fcntl::{fcntl, FcntlArg};
        use std::os::fd::AsFd;
        if let Some(out) = child.stdout.as_ref() {
            let _ = fcntl(out.as_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
        }
        if let Some(input) = child.stdin.as_ref() {
            let _ = fcntl(input.as_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
        }
    }
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stderr_task = child.stderr.take().map(|mut se| {
        let buf = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = se.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut b) = buf.lock() {
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > STDERR_KEEP * 2 {
                        let cut = b.len() - STDERR_KEEP;
                        b.drain(..cut);
                    }
                }
            }
        })
    });
    Ok(ToolChild {
        tool,
        child,
        stderr,
        stderr_task,
    })
}

impl ToolChild {
    /// Everything the child wrote to stderr (the tail), secrets scrubbed.
    pub async fn stderr_text(&mut self) -> String {
        if let Some(t) = self.stderr_task.take() {
            let _ = t.await;
        }
        let b = self.stderr.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&b);
        let tail: String = if text.len() > STDERR_KEEP {
            text[text.len() - STDERR_KEEP..].to_owned()
        } else {
            text.into_owned()
        };
        crate::base::secret::redact(tail.trim())
    }

    /// Wait for exit; a non-zero status becomes [`Error::Tool`] with stderr.
    pub async fn finish(mut self) -> Result<String> {
        let status = self.child.wait().await;
        self.conclude(status).await
    }

    async fn conclude(&mut self, status: std::io::Result<ExitStatus>) -> Result<String> {
        let status = status.map_err(|e| Error::io(format!("waiting for {}", self.tool), e))?;
        let stderr = self.stderr_text().await;
        if status.success() {
            Ok(stderr)
        } else {
            Err(Error::Tool {
                tool: self.tool.clone(),
                status: describe(status),
                stderr,
            })
        }
    }

    /// Split into stdout, as a reader that fails if the child exits
    /// non-zero, and a waiter that reports the outcome (stderr on success,
    /// [`Error::Tool`] otherwise). Dropping the waiter kills the child.
    pub fn into_checked_stdout(
        mut self,
    ) -> Result<(ExitChecked, AbortOnDropHandle<Result<String>>)> {
        let out = self
            .child
            .stdout
            .take()
            .ok_or_else(|| Error::Other(format!("{}: stdout not captured", self.tool)))?;
        let (reader, tx) = guarded(out);
        let waiter = tokio::spawn(async move {
            let status = self.child.wait().await;
            let _ = tx.send(match &status {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("{} failed ({})", self.tool, describe(*s))),
                Err(e) => Err(format!("{}: {e}", self.tool)),
            });
            self.conclude(status).await
        });
        Ok((reader, AbortOnDropHandle::new(waiter)))
    }
}

pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

/// stdout of a child; end of stream is reported only after a zero exit.
pub type ExitChecked = Guarded<ChildStdout>;
