//! One SQL session, wherever the server is: a direct connection (sqlx)
//! when drctl reaches it over the network, or a `psql` running inside the
//! server's container (the Engine API's exec) when no port is published.
//! Both take the same statements and give rows of text, so the code that
//! reads server facts, exports a snapshot and counts rows is written once.
//!
//! The psql side is a line protocol: each statement is followed by
//! `\echo <marker> :ERROR :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE`, so its
//! rows (unaligned, fields split by U+001F, NULL shown as U+001E) are the
//! lines before the marker, and the marker line says whether it failed
//! (psql 11 or newer). Statements here return single-line values (names
//! are hex-encoded by the callers that need them).

use super::{PgTarget, PgTools, ToolChild, ToolStdin};
use crate::base::error::{Error, Result};
use sqlx::Row;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const FIELD: char = '\u{1f}';
const NULL: &str = "\u{1e}";

/// A SQL session on the job's server.
pub enum SqlSession {
    /// sqlx over the network or a host socket.
    Direct(sqlx::PgConnection),
    /// `psql` inside the server's container.
    Psql(Box<Psql>),
}

/// A psql process speaking the line protocol above.
pub struct Psql {
    child: ToolChild,
    stdin: ToolStdin,
    lines: tokio::io::Lines<BufReader<super::child::ToolStdout>>,
    n: u64,
}

/// A row of text values (`None` for NULL).
pub type TextRow = Vec<Option<String>>;

impl SqlSession {
    /// Open a session to `target` where `tools` run.
    pub async fn open(tools: &PgTools, target: &PgTarget) -> Result<SqlSession> {
        if tools.container().is_none() {
            return Ok(SqlSession::Direct(target.connect().await?));
        }
        let (env, _) = tools.env_for(target)?;
        let args = [
            "-X",
            "-q",
            "-A",
            "-t",
            "--no-password",
            "-F",
            "\u{1f}",
            "-P",
            "null=\u{1e}",
            "-v",
            "ON_ERROR_STOP=0",
        ]
        .map(String::from);
        let mut child = tools.spawn("psql", &args, &env, true, true).await?;
        let stdin = child
            .take_stdin()
            .ok_or_else(|| Error::Other("psql: stdin not attached".into()))?;
        let stdout = child
            .take_stdout()
            .ok_or_else(|| Error::Other("psql: stdout not captured".into()))?;
        let mut p = Psql {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            n: 0,
        };
        // Fails here (with psql's stderr) when it cannot connect.
        p.rows("SELECT 1").await?;
        Ok(SqlSession::Psql(Box::new(p)))
    }

    /// Run one statement that returns text columns.
    pub async fn rows(&mut self, sql: &str) -> Result<Vec<TextRow>> {
        match self {
            SqlSession::Direct(c) => {
                let rows = sqlx::query(sql)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(|e| Error::pg(short(sql), e))?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                r.try_get::<Option<String>, _>(i)
                                    .map_err(|e| Error::pg(short(sql), e))
                            })
                            .collect()
                    })
                    .collect()
            }
            SqlSession::Psql(p) => p.rows(sql).await,
        }
    }

    /// Run one statement, ignoring what it returns.
    pub async fn execute(&mut self, sql: &str) -> Result<()> {
        match self {
            SqlSession::Direct(c) => sqlx::query(sql)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .map_err(|e| Error::pg(short(sql), e)),
            SqlSession::Psql(p) => p.rows(sql).await.map(|_| ()),
        }
    }

    /// Run one statement; on failure its SQLSTATE (when known) beside the
    /// error, for callers that tell one failure from another.
    pub async fn execute_coded(
        &mut self,
        sql: &str,
    ) -> std::result::Result<(), (Option<String>, Error)> {
        match self {
            SqlSession::Direct(c) => {
                sqlx::query(sql)
                    .execute(&mut *c)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let code = e
                            .as_database_error()
                            .and_then(sqlx::error::DatabaseError::code)
                            .map(std::borrow::Cow::into_owned);
                        (code, Error::pg(short(sql), e))
                    })
            }
            SqlSession::Psql(p) => p.rows(sql).await.map(|_| ()).map_err(|e| {
                let code = match &e {
                    Error::Postgres { message, .. } => message
                        .split_whitespace()
                        .next()
                        .filter(|c| c.len() == 5)
                        .map(str::to_owned),
                    _ => None,
                };
                (code, e)
            }),
        }
    }

    /// The first column of the first row.
    pub async fn scalar(&mut self, sql: &str) -> Result<Option<String>> {
        Ok(self
            .rows(sql)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten())
    }

    /// End the session (psql told to quit and waited for).
    pub async fn close(self) -> Result<()> {
        match self {
            SqlSession::Direct(c) => {
                use sqlx::Connection;
                c.close()
                    .await
                    .map_err(|e| Error::pg("closing the session", e))
            }
            SqlSession::Psql(mut p) => {
                let _ = p.stdin.write_all(b"\\q\n").await;
                let _ = p.stdin.shutdown().await;
                p.child.finish().await.map(|_| ())
            }
        }
    }
}

fn short(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.len() > 80 {
        let cut = one
            .char_indices()
            .map(|(i, _)| i)
            .take_while(|i| *i <= 80)
            .last()
            .unwrap_or(0);
        format!("{}...", &one[..cut])
    } else {
        one
    }
}

impl Psql {
    async fn rows(&mut self, sql: &str) -> Result<Vec<TextRow>> {
        self.n += 1;
        let marker = format!("__drctl_{}_{}", std::process::id(), self.n);
        let script = format!(
            "{};\n\\echo {marker} :ERROR :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n",
            sql.trim().trim_end_matches(';')
        );
        if let Err(e) = self.stdin.write_all(script.as_bytes()).await {
            return Err(self
                .died(&format!("sending a statement to psql: {e}"))
                .await);
        }
        let _ = self.stdin.flush().await;
        let mut rows = Vec::new();
        loop {
            let line = match self.lines.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => return Err(self.died("psql ended").await),
                Err(e) => return Err(self.died(&format!("reading psql: {e}")).await),
            };
            if let Some(rest) = line.strip_prefix(&marker) {
                return match verdict(rest) {
                    None => Ok(rows),
                    Some(why) => Err(Error::Postgres {
                        context: short(sql),
                        message: crate::base::secret::redact(&why),
                    }),
                };
            }
            if line.is_empty() {
                continue;
            }
            rows.push(
                line.split(FIELD)
                    .map(|f| (f != NULL).then(|| f.to_owned()))
                    .collect(),
            );
        }
    }

    async fn died(&mut self, what: &str) -> Error {
        let stderr = self.child.stderr_text().await;
        Error::Postgres {
            context: format!("psql in the container: {what}"),
            message: stderr,
        }
    }
}

/// The marker line's rest: `None` when the statement succeeded, else the
/// error (`true 42P01 relation "x" does not exist`) (pure).
fn verdict(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let (flag, why) = rest.split_once(' ').unwrap_or((rest, ""));
    (flag == "true").then(|| why.trim().to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_marker_line_says_whether_the_statement_failed() {
        assert_eq!(
            super::verdict(" false :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE"),
            None
        );
        assert_eq!(super::verdict(" false 00000 "), None);
        assert_eq!(
            super::verdict(" true 42P01 relation \"x\" does not exist").as_deref(),
            Some("42P01 relation \"x\" does not exist")
        );
    }
}
