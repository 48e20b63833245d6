//! Child processes (pg_dump, pg_restore, psql) whose failure cannot be missed.
//!
//! [`ExitChecked`] wraps a child's stdout so that a non-zero exit becomes a
//! read error at end of stream (see `stream::guarded`). stderr is kept (the
//! last 64 KiB) for the error message.

use crate::base::error::{Error, Result};
use crate::base::stream::{guarded, Guarded};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::process::{Child, Command};
use tokio_util::task::AbortOnDropHandle;

/// The most of a tool's stderr kept for its error message.
pub const STDERR_KEEP: usize = 64 * 1024;

/// A running PostgreSQL client tool, on the host or in a container (the
/// Engine API's exec), killed on drop.
pub struct ToolChild {
    /// The tool's name, for messages.
    pub tool: String,
    proc: Proc,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

enum Proc {
    Host(Child),
    Container(crate::services::docker::Exec),
}

/// A child's stdin: the host pipe or the exec's attached stream. Shut it
/// down (`AsyncWriteExt::shutdown`) to send end of input: an exec's stdin
/// is closed by that, not by dropping it.
pub type ToolStdin = Pin<Box<dyn AsyncWrite + Send>>;

/// A child's stdout.
pub type ToolStdout = Pin<Box<dyn AsyncRead + Send>>;

/// Bytes a pipe reader hands on at a time.
const BATCH: usize = 1 << 20;

/// A host child's stdout read by a blocking thread in 1 MiB batches.
///
/// Why: a dump tool writes its pipe in 4 KiB pieces. Read through the
/// runtime, every piece is a readiness wake-up, a read and a hand-off
/// between worker threads: on pg_dump of 0.8 GB, 114k reads cost 230k futex
/// and 120k epoll calls, as much system time as the dump itself on two
/// cores. A plain blocking read loop, as `pg_dump | zstd` does, and one
/// hand-off per batch keep the rest of the pipeline out of the way. The
/// pipe is also widened to 1 MiB so the tool blocks less often.
fn batched_stdout(out: tokio::process::ChildStdout) -> ToolStdout {
    // Failing here fails the stream rather than making it look empty (a
    // non-blocking fd would make the loop below spin on EAGAIN).
    let mut file = match out.into_owned_fd().and_then(blocking_pipe) {
        Ok(f) => f,
        Err(e) => {
            return Box::pin(tokio_util::io::StreamReader::new(futures::stream::iter([
                Err::<bytes::Bytes, _>(e),
            ])))
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; BATCH];
            let mut filled = 0;
            let mut end = false;
            while filled < BATCH {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            buf.truncate(filled);
            // The reader went away: closing the pipe stops the tool.
            if filled > 0 && tx.blocking_send(Ok(buf.into())).is_err() {
                return;
            }
            if end {
                return;
            }
        }
    });
    Box::pin(tokio_util::io::StreamReader::new(futures::stream::poll_fn(
        move |cx| rx.poll_recv(cx),
    )))
}

/// A pipe end taken out of the runtime: blocking again, and widened to
/// 1 MiB (best effort: a smaller pipe only means more, smaller calls).
fn blocking_pipe(fd: std::os::fd::OwnedFd) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map(OFlag::from_bits_truncate)?;
    fcntl(&fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    let _ = fcntl(&fd, FcntlArg::F_SETPIPE_SZ(BATCH as i32));
    Ok(std::fs::File::from(fd))
}

/// How a tool ended: success, and a description (`exit code 1`).
struct Ended {
    success: bool,
    status: String,
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
    spawn_tool_at(
        program,
        args,
        env,
        (pipe_stdin, pipe_stdout),
        crate::base::child_env::Priority::default(),
    )
}

/// [`spawn_tool`] at a CPU and I/O priority (a job's `nice` and
/// `io_priority`), set in the child between fork and exec.
pub fn spawn_tool_at(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    (pipe_stdin, pipe_stdout): (bool, bool),
    priority: crate::base::child_env::Priority,
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
    // A pg_restore list is passed the same way (`--use-list=/dev/fd/N`).
    let inherit: Vec<i32> = env
        .iter()
        .filter(|(k, _)| k == "PGPASSFILE")
        .map(|(_, v)| v.as_str())
        .chain(args.iter().filter_map(|a| a.strip_prefix("--use-list=")))
        .filter_map(|v| v.strip_prefix("/dev/fd/"))
        .filter_map(|n| n.parse::<i32>().ok())
        .collect();
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            for fd in &inherit {
                use nix::fcntl::{fcntl, FcntlArg, FdFlag};
                // SAFETY: the parent keeps the file open until the child is
                // gone (the PassFile or list outlives every spawn naming it).
                let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
            }
            priority.apply_to_self()
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
        proc: Proc::Host(child),
        stderr,
        stderr_task,
    })
}

/// Start `tool args` in `container` through the Engine API's exec, with
/// `env` in the exec's environment (never in argv): the container's own
/// client tools, so their version always matches the server's.
pub async fn spawn_in_container(
    docker: &bollard::Docker,
    container: &str,
    tool: &str,
    args: &[String],
    env: &[(String, String)],
    pipe_stdin: bool,
    pipe_stdout: bool,
) -> Result<ToolChild> {
    let mut argv = vec![tool.to_owned()];
    argv.extend(args.iter().cloned());
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let exec = crate::services::docker::exec(
        docker,
        container,
        &argv,
        env,
        (pipe_stdin, pipe_stdout),
        stderr.clone(),
        STDERR_KEEP,
    )
    .await?;
    Ok(ToolChild {
        tool: tool.to_owned(),
        proc: Proc::Container(exec),
        stderr,
        stderr_task: None,
    })
}

impl ToolChild {
    /// The child's stdin, if it was piped (once).
    pub fn take_stdin(&mut self) -> Option<ToolStdin> {
        match &mut self.proc {
            Proc::Host(c) => c.stdin.take().map(|s| Box::pin(s) as ToolStdin),
            Proc::Container(e) => e.stdin.take(),
        }
    }

    /// A host child's stdin as a blocking pipe for a writer on its own
    /// thread (once; `None` for a container's stream or if not piped).
    ///
    /// Why: written through the runtime, a pipe that a reader drains 4 KiB
    /// at a time turns writable again after every read, and each time is a
    /// readiness event, a task wake-up and a thread hand-off (95k futex
    /// calls feeding 0.8 GB to pg_restore). A blocking writer sleeps in the
    /// kernel instead, and can splice a file into the pipe.
    pub fn take_blocking_stdin(&mut self) -> Option<std::io::Result<std::fs::File>> {
        match &mut self.proc {
            Proc::Host(c) => c
                .stdin
                .take()
                .map(|s| s.into_owned_fd().and_then(blocking_pipe)),
            Proc::Container(_) => None,
        }
    }

    /// The child's stdout, if it was piped (once).
    pub fn take_stdout(&mut self) -> Option<ToolStdout> {
        match &mut self.proc {
            Proc::Host(c) => c.stdout.take().map(batched_stdout),
            Proc::Container(e) => e.stdout.take().map(|s| Box::pin(s) as ToolStdout),
        }
    }

    async fn wait(&mut self) -> Result<Ended> {
        match &mut self.proc {
            Proc::Host(c) => {
                let status = c
                    .wait()
                    .await
                    .map_err(|e| Error::io(format!("waiting for {}", self.tool), e))?;
                Ok(Ended {
                    success: status.success(),
                    status: describe(status),
                })
            }
            Proc::Container(e) => {
                let code = e.wait().await?;
                Ok(Ended {
                    success: code == Some(0),
                    status: code.map_or_else(
                        || "no exit code from the Docker engine".into(),
                        |c| format!("exit code {c}"),
                    ),
                })
            }
        }
    }

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
        let ended = self.wait().await;
        self.conclude(ended).await
    }

    async fn conclude(&mut self, ended: Result<Ended>) -> Result<String> {
        let ended = ended?;
        let stderr = self.stderr_text().await;
        if ended.success {
            Ok(stderr)
        } else {
            Err(Error::Tool {
                tool: self.tool.clone(),
                status: ended.status,
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
            .take_stdout()
            .ok_or_else(|| Error::Other(format!("{}: stdout not captured", self.tool)))?;
        let (reader, tx) = guarded(out);
        let waiter = tokio::spawn(async move {
            let ended = self.wait().await;
            let _ = tx.send(match &ended {
                Ok(e) if e.success => Ok(()),
                Ok(e) => Err(format!("{} failed ({})", self.tool, e.status)),
                Err(e) => Err(format!("{}: {e}", self.tool)),
            });
            self.conclude(ended).await
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
pub type ExitChecked = Guarded<ToolStdout>;
