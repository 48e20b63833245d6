//! PostgreSQL plumbing shared by backup, restore and (later) maintenance:
//! connection targets without secrets in argv, client tool discovery and
//! version checks, and child processes whose exit status is part of the stream.

pub mod archive;
mod child;
mod maintenance;
pub mod server;
mod session;
mod target;
mod tools;

pub use child::{spawn_tool, ExitChecked, ToolChild, ToolStdin, ToolStdout};
pub use maintenance::{maintenance_failure, Failure, Session};
pub use session::{SqlSession, TextRow};
pub use target::{PassFile, PgTarget};
pub use tools::{Container, PgTools, ToolVersion};

use crate::base::error::Result;
use crate::config::PostgresJob;

/// Resolve the job's connection URL from `url`, `url_env` or `url_file`.
/// In a container without a URL: `user` (default postgres) on `database`
/// over the container's own Unix socket.
pub fn job_target(job: &PostgresJob) -> Result<PgTarget> {
    if let (true, Some(db)) = (job.in_container(), job.database.as_deref()) {
        return Ok(PgTarget::local_socket(
            job.user.as_deref().unwrap_or("postgres"),
            db,
        ));
    }
    let url = job.connection.resolve("database URL")?;
    PgTarget::parse(url.expose())
}

/// What the version pre-flight found for a job: the server's major
/// version and each client tool drctl would run against it, with its own.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// The server's major version.
    pub server_major: u32,
    /// `(tool, its major version)`, each at least the server's.
    pub tools: Vec<(&'static str, u32)>,
}

/// Connect as the job does and check that the client tools its backups
/// run (pg_dump, and pg_dumpall with `globals`) are at least as new as the
/// server: the failure a 2 AM run would meet, named now with its fix.
pub async fn preflight(job: &PostgresJob) -> Result<Preflight> {
    let target = job_target(job)?;
    let tools = PgTools::for_job(job).await?;
    let mut session = SqlSession::open(&tools, &target).await?;
    let num = server_version_num(&mut session).await?;
    let _ = session.close().await;
    let mut checked = Vec::new();
    for tool in ["pg_dump", "pg_dumpall"] {
        if tool == "pg_dumpall" && !job.globals {
            continue;
        }
        let v = tools.check_against_server(tool, num).await?;
        checked.push((tool, v.major));
    }
    Ok(Preflight {
        server_major: (num / 10000) as u32,
        tools: checked,
    })
}

/// The server's `server_version_num` (160004 for 16.4).
pub async fn server_version_num(s: &mut SqlSession) -> Result<i32> {
    let text = s
        .scalar("SELECT current_setting('server_version_num')")
        .await?
        .unwrap_or_default();
    text.parse().map_err(|_| {
        crate::base::error::Error::Other(format!(
            "the server reported server_version_num {text:?}, not a number"
        ))
    })
}

/// The cluster's system identifier, if this user may read it (superusers
/// and members of pg_read_all_stats/pg_monitor usually can).
pub async fn system_identifier(s: &mut SqlSession) -> Option<String> {
    s.scalar("SELECT system_identifier::text FROM pg_control_system()")
        .await
        .ok()
        .flatten()
}

/// Quote a string literal for SQL: `'it''s'` (standard_conforming_strings,
/// the default since PostgreSQL 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quote an identifier for SQL: `"a""b"`.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
