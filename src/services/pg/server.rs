//! Running PostgreSQL's server tools (initdb, pg_ctl, pg_controldata) for
//! clusters drctl starts itself: drills' throwaway clusters and
//! point-in-time restores. As root they run as `postgres` (the server
//! refuses root).

use super::PgTools;
use crate::base::error::{Error, Result};

/// `tool` from `tools`' directory, as the `postgres` user when we are root,
/// with drctl's environment restricted.
pub fn server_tool(tools: &PgTools, tool: &str) -> tokio::process::Command {
    let path = tools.path(tool);
    let mut c = if nix::unistd::geteuid().is_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        tokio::process::Command::new(path)
    };
    crate::base::child_env::restrict(&mut c);
    c.env("LC_ALL", "C");
    c
}

/// Run `c` to its end: its stdout on success, [`Error::Tool`] with its
/// stderr otherwise.
pub async fn run(mut c: tokio::process::Command, what: &str) -> Result<String> {
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(what.to_owned(), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Tool {
            tool: what.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Hand `path` (recursively) to the `postgres` user when we are root, so
/// the server may use it; a no-op otherwise.
pub fn give_to_postgres(path: &std::path::Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let pg = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or_else(|| Error::Other("running a cluster as root needs a postgres user".into()))?;
    let chown = |p: &std::path::Path| {
        nix::unistd::chown(p, Some(pg.uid), Some(pg.gid))
            .map_err(|e| Error::io(format!("chown {}", p.display()), std::io::Error::from(e)))
    };
    chown(path)?;
    for e in walkdir::WalkDir::new(path).min_depth(1) {
        let e = e.map_err(|e| {
            Error::io(
                format!("walking {}", path.display()),
                std::io::Error::other(e),
            )
        })?;
        chown(e.path())?;
    }
    Ok(())
}

/// A PostgreSQL server drctl runs for a moment (a point-in-time restore's
/// recovery): its postmaster is drctl's own child, in a process group of
/// its own, as `postgres` when drctl is root. It dies with drctl: the
/// kernel sends it SIGKILL if drctl is killed (`PR_SET_PDEATHSIG`, set
/// after the switch to `postgres`, which would clear it), and dropping it
/// (drctl stopping on a signal, a failure, a dropped future) stops it the
/// way `pg_ctl stop -m immediate` does. A detached `pg_ctl start` would
/// outlive a killed drctl, promoted, with drctl's recovery settings in it.
pub struct ServerChild {
    child: tokio::process::Child,
    pid: i32,
}

impl ServerChild {
    /// Start `postgres -D dd OPTIONS`, its output into `log`.
    pub fn start(
        tools: &PgTools,
        dd: &std::path::Path,
        log: &std::path::Path,
        options: &[String],
    ) -> Result<ServerChild> {
        let mut c = tokio::process::Command::new(tools.path("postgres"));
        crate::base::child_env::restrict(&mut c);
        c.env("LC_ALL", "C");
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| {
                    Error::Other("running a cluster as root needs a postgres user".into())
                })?;
            // Root's supplementary groups are dropped by the standard
            // library when it switches to another uid.
            c.uid(pg.uid.as_raw()).gid(pg.gid.as_raw());
            c.env("HOME", &pg.dir).env("USER", "postgres");
        }
        let out = std::fs::File::create(log)
            .map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        if nix::unistd::geteuid().is_root() {
            give_to_postgres(log)?;
        }
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        c.arg("-D")
            .arg(dd)
            .args(options)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            c.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = c
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", tools.path("postgres").display()), e))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Error::Other("the server exited at once".into()))?;
        Ok(ServerChild { child, pid })
    }

    /// Wait until the server accepts connections (its `postmaster.pid`
    /// says `ready`, as `pg_ctl start -w` waits), at most `limit`; an
    /// error with the end of `log` when it exits or does not get there.
    pub async fn ready(
        &mut self,
        dd: &std::path::Path,
        log: &std::path::Path,
        limit: std::time::Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let tail = || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        };
        loop {
            if ready_in(&std::fs::read_to_string(dd.join("postmaster.pid")).unwrap_or_default()) {
                return Ok(());
            }
            if self.exited() {
                return Err(Error::Tool {
                    tool: "postgres".into(),
                    status: "exited before accepting connections".into(),
                    stderr: tail(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Tool {
                    tool: "postgres".into(),
                    status: format!("not ready within {}s", limit.as_secs()),
                    stderr: tail(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Stop it at once (`-m immediate`), waiting at most 10 s, then SIGKILL.
    pub async fn quit(mut self) {
        signal(self.pid, nix::sys::signal::Signal::SIGQUIT);
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await;
        if !matches!(waited, Ok(Ok(_))) {
            signal(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
    }

    /// Whether the postmaster has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop it cleanly (`-m fast`: a shutdown checkpoint, so the directory
    /// starts without crash recovery), waiting at most `limit`; then
    /// immediately.
    pub async fn stop(mut self, limit: std::time::Duration) -> Result<()> {
        signal(self.pid, nix::sys::signal::Signal::SIGINT);
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(Error::Other(format!(
                "the recovery server stopped with {s} instead of shutting down cleanly"
            ))),
            Ok(Err(e)) => Err(Error::io("waiting for the recovery server", e)),
            Err(_) => Err(Error::Other(format!(
                "the recovery server did not shut down within {}s; stopped immediately",
                limit.as_secs()
            ))),
        }
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        // Immediate shutdown (SIGQUIT), as `pg_ctl stop -m immediate`;
        // SIGKILL if it has not gone within 10 s.
        signal(self.pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        signal(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.start_kill();
    }
}

/// SIGKILL every `postgres` process whose working directory is `dd` (a
/// dead postmaster's children, still replaying or writing), and wait (10 s
/// at most) until they are gone. How many there were.
pub async fn stop_strays(dd: &std::path::Path) -> usize {
    let Ok(dd) = std::fs::canonicalize(dd) else {
        return 0;
    };
    let strays = || -> Vec<i32> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
                // The postmaster's children retitle themselves
                // ("postgres: startup recovering ..."); their command name
                // stays `postgres`.
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                let postgres = comm.trim() == "postgres";
                (postgres && cwd == dd && pid > 1).then_some(pid)
            })
            .collect()
    };
    let found = strays();
    for pid in &found {
        signal(*pid, nix::sys::signal::Signal::SIGKILL);
    }
    for _ in 0..100 {
        if strays().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    found.len()
}

/// Whether a `postmaster.pid`'s text says the server accepts connections
/// (its eighth line, the postmaster status, is `ready`) (pure).
pub fn ready_in(pid_file: &str) -> bool {
    pid_file.lines().nth(7).is_some_and(|l| l.trim() == "ready")
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Stop a postmaster left running in `dd` by a killed drctl (its
/// `postmaster.pid` names a live postgres process): immediately, as
/// `pg_ctl stop -m immediate`, waiting at most 30 s. Whether one was.
pub async fn stop_leftover(dd: &std::path::Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dd.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    else {
        return false;
    };
    // Only a postgres whose data directory is this one: a stale pid file's
    // number may belong to anything by now.
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"postgres"))
            && std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| std::fs::canonicalize(dd).is_ok_and(|d| d == cwd))
    });
    if !ours {
        return false;
    }
    signal(pid, nix::sys::signal::Signal::SIGQUIT);
    for _ in 0..300 {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_is_ready_when_its_pid_file_says_so() {
        let starting = "123\n/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  1 2\nstarting\n";
        assert!(!super::ready_in(starting));
        assert!(super::ready_in(&starting.replace("starting", "ready   ")));
        assert!(!super::ready_in(""));
        assert!(!super::ready_in("123\n"));
    }
}
