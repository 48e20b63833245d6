//! PostgreSQL plumbing shared by backup, restore and (later) maintenance:
//! connection targets without secrets in argv, client tool discovery and
//! version checks, and child processes whose exit status is part of the stream.

pub mod archive;
mod child;
mod maintenance;
mod target;
mod tools;

pub use child::{spawn_tool, ExitChecked, ToolChild};
pub use maintenance::{maintenance_failure, Failure, Session};
pub use target::{PassFile, PgTarget};
pub use tools::{PgTools, ToolVersion};

use crate::base::error::Result;
use crate::config::PostgresJob;

/// Resolve the job's connection URL from `url`, `url_env` or `url_file`.
pub fn job_target(job: &PostgresJob) -> Result<PgTarget> {
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
    let mut conn = target.connect().await?;
    let num: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| crate::base::error::Error::pg("reading the server's version", e))?;
    let tools = PgTools::locate(job.pg_bindir.as_deref());
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

/// The cluster's system identifier, if this user may read it (superusers
/// and members of pg_read_all_stats/pg_monitor usually can).
pub async fn system_identifier(conn: &mut sqlx::PgConnection) -> Option<String> {
    sqlx::query_scalar::<_, String>("SELECT system_identifier::text FROM pg_control_system()")
        .fetch_one(conn)
        .await
        .ok()
}

/// Quote an identifier for SQL: `"a""b"`.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
