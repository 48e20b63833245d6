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
