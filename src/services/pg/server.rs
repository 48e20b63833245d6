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
