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
