//! A connection for maintenance statements (VACUUM, REINDEX): every
//! statement runs under the job's `lock_timeout` and `statement_timeout`, so
//! a long-held lock makes drctl give up on one table instead of queueing
//! behind it and blocking the application's queries queued behind drctl.

use super::PgTarget;
use crate::base::error::Result;
use crate::base::values::Window;
use crate::config::SessionSpec;
use chrono_tz::Tz;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use std::time::Duration;

/// A connection for maintenance statements, with the job's timeouts and
/// window applied.
pub struct Session {
    /// The connection.
    pub conn: PgConnection,
    /// Where it points (for messages; no password).
    pub target: PgTarget,
    window: Option<(Window, Tz)>,
}

/// Why one maintenance statement did not complete.
#[derive(Debug, Clone)]
pub enum Failure {
    /// `lock_timeout` passed waiting for a lock (SQLSTATE 55P03).
    LockTimeout,
    /// `statement_timeout` (or a cancel) ended it (SQLSTATE 57014).
    Timeout,
    /// Any other error, as the server said it.
    Other(String),
}

impl Failure {
    /// A finding's text: which timeout ended the statement.
    pub fn describe(&self, lock_timeout: Duration, statement_timeout: Duration) -> String {
        match self {
            Failure::LockTimeout => format!(
                "skipped: no lock within lock_timeout {} (another session holds a conflicting lock)",
                humantime::format_duration(lock_timeout)
            ),
            Failure::Timeout => format!(
                "stopped by statement_timeout {}",
                humantime::format_duration(statement_timeout)
            ),
            Failure::Other(m) => m.clone(),
        }
    }
}

impl Session {
    /// Connect with `lock_timeout` and `statement_timeout` set for the session.
    pub async fn open(spec: SessionSpec<'_>, application: &str) -> Result<Session> {
        let url = spec.connection.resolve("database URL")?;
        let target = PgTarget::parse(url.expose())?;
        let mut conn = target
            .connect_options()
            .application_name(application)
            .connect()
            .await
            .map_err(|e| crate::Error::pg(format!("connecting to {}", target.display()), e))?;
        let set = format!(
            "SET lock_timeout = {}; SET statement_timeout = {}",
            spec.lock_timeout.as_millis().max(1),
            spec.statement_timeout.as_millis()
        );
        conn.execute(sqlx::raw_sql(&set))
            .await
            .map_err(|e| crate::Error::pg("setting lock_timeout and statement_timeout", e))?;
        let window = match spec.window {
            Some(w) => Some((*w.get()?, crate::base::values::zone(spec.timezone)?)),
            None => None,
        };
        Ok(Session {
            conn,
            target,
            window,
        })
    }

    /// May a new table or index be started now?
    pub fn window_open(&self) -> bool {
        match &self.window {
            None => true,
            Some((w, tz)) => w.contains(chrono::Utc::now().with_timezone(tz).time()),
        }
    }

    /// Run one statement with the simple protocol (VACUUM refuses to run
    /// in a transaction block).
    pub async fn exec(&mut self, sql: &str) -> std::result::Result<(), Failure> {
        match self.conn.execute(sqlx::raw_sql(sql)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(maintenance_failure(&e)),
        }
    }

    /// Close the connection politely (errors are irrelevant by then).
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// Classify a statement's error by SQLSTATE.
pub fn maintenance_failure(e: &sqlx::Error) -> Failure {
    if let Some(db) = e.as_database_error() {
        match db.code().as_deref() {
            Some("55P03") => return Failure::LockTimeout,
            Some("57014") => return Failure::Timeout,
            _ => {}
        }
    }
    Failure::Other(crate::base::secret::redact(&e.to_string()))
}
