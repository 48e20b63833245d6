//! Core error type. Each variant maps to a documented process exit code
//! (see README "Exit codes"), so scripts can tell "your config is wrong"
//! from "the backup is corrupt" from "the database refused".
//!
//! The rules every error follows:
//! - It says what was being done (`context`) and what went wrong, in words
//!   an operator can act on; an I/O error keeps its `std::io::Error` as the
//!   source, and [`chain`] prints a whole cause chain once.
//! - It never holds a secret: messages from libraries that may quote a URL
//!   or a query pass through `secret::redact` ([`Error::pg`],
//!   [`Error::repo`]); config errors name keys, never values.
//! - Its variant decides the exit code ([`Error::exit`]); callers never
//!   pick a code themselves.
//! - It keeps its cause: an error from a library or the OS travels as the
//!   variant's `#[source]` with a `context` saying what was being done,
//!   never flattened into a string. The one exception is text that may
//!   quote a secret (a database URL in a driver message, a presigned URL in
//!   an S3 error): [`Error::Postgres`] and [`Error::Repository`] keep it
//!   redacted as text, because a source's own `Display` would bypass the
//!   redaction when [`chain`] prints it.
//! - [`Error::Other`] is for failures drctl itself detects and explains
//!   (checks that failed, a sessions storm): a message with no underlying
//!   cause to keep.
//! - `thiserror` here in the core, `anyhow` only at the edges (the CLI).

use std::path::PathBuf;

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A cause of any type, for variants whose sources differ by call site.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong, by what the operator should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem: names the file, the key and what was expected.
    #[error("config error in {file}: key `{key}`: {message}")]
    Config {
        /// The file that sets the key (or the main file).
        file: String,
        /// The full dotted key (`jobs.appdb.retention.daily`).
        key: String,
        /// What was expected, never the value found.
        message: String,
    },

    /// A file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (`writing /var/lib/drctl/state.db`).
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The repository (local directory or S3 bucket) failed or refused.
    #[error("repository {repository}: {message}")]
    Repository {
        /// The repository's name in the config.
        repository: String,
        /// What failed, redacted.
        message: String,
    },

    /// A stored artifact does not match its manifest: never restore from it.
    #[error("integrity check failed for {artifact}: {message}")]
    Integrity {
        /// The artifact (or backup) concerned.
        artifact: String,
        /// How it differs from what its manifest promises.
        message: String,
    },

    /// A child tool (pg_dump, pg_restore, psql, ...) exited badly.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The tool's name.
        tool: String,
        /// Its exit status or the signal that killed it.
        status: String,
        /// The tail of what it printed.
        stderr: String,
    },

    /// A client tool is older than the server it would talk to.
    #[error("{0}")]
    ToolVersion(String),

    /// The PostgreSQL server refused or failed a statement or connection.
    #[error("PostgreSQL: {context}: {message}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The server's (or driver's) message, redacted.
        message: String,
    },

    /// The restore target is not in a state we may write to without consent.
    #[error("refused: {0}")]
    Refused(String),

    /// A backup, job or drill that does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// The local state database failed.
    #[error("state database {}: {context}{sep}{source}", path.display(), sep = if context.is_empty() { "" } else { ": " })]
    State {
        /// The database file.
        path: PathBuf,
        /// What was being done, when more than a query (`migrating`).
        context: String,
        /// What failed.
        #[source]
        source: BoxError,
    },

    /// A row of the state database holds a value drctl cannot read back
    /// (written by a newer drctl, or edited by hand).
    #[error("{what}: {source}")]
    Unreadable {
        /// The row and column (`alert backup_failed:db: unreadable state`).
        what: String,
        /// The decoder's error.
        #[source]
        source: BoxError,
    },

    /// A background task of this run panicked or was cancelled.
    #[error("{context}: {source}")]
    Task {
        /// Which task (`pg_dump waiter`, `archive check`).
        context: String,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },

    /// The daemon's scheduler refused a schedule or failed.
    #[error("{context}: {source}")]
    Scheduler {
        /// What was being scheduled.
        context: String,
        /// The scheduler's error.
        #[source]
        source: tokio_cron_scheduler::JobSchedulerError,
    },

    /// The Docker engine could not be reached or refused a request.
    #[error("{context}: {source}")]
    Docker {
        /// What was asked of it.
        context: String,
        /// The engine client's error.
        #[source]
        source: bollard::errors::Error,
    },

    /// A job asked to do what its kind does not (verify a health check,
    /// restore a vacuum job): a mistake in the call or the config.
    #[error("job {job} is a {kind} job: {expected}")]
    WrongKind {
        /// The job named.
        job: String,
        /// Its `type`.
        kind: &'static str,
        /// What the operation needs (`expected a backup job`).
        expected: &'static str,
    },

    /// The backup is encrypted and no identity that opens it was given.
    #[error("encryption: {0}")]
    Key(String),

    /// Stopped by a signal or a cancellation before it finished.
    #[error("interrupted: {0}")]
    Interrupted(String),

    /// The command line asks for something malformed or ambiguous (a bad
    /// `--id`, `--to`, `--tmp-dir`, a missing `--job`): exit 2, like a
    /// config error, so scripts tell "you called me wrong" from "it failed".
    #[error("usage: {0}")]
    Usage(String),

    /// The data was restored, but the service did not come back: an
    /// `after` hook or a `verify` check failed (exit 9).
    #[error("{0}")]
    Unhealthy(String),

    /// Anything else that failed the operation (exit 1).
    #[error("{0}")]
    Other(String),
}

/// Every exit code drctl uses: the one table. The README's "Exit codes"
/// table is checked against it by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It worked.
    Success,
    /// The operation failed (database, tool, repository, I/O).
    Failed,
    /// Configuration or usage error; an encrypted backup without its key.
    Usage,
    /// An artifact does not match its manifest; a manifest cannot be read.
    Integrity,
    /// Refused without consent or against a safety rule.
    Refused,
    /// No such backup, job or drill.
    NotFound,
    /// The job is already running on this host.
    Skipped,
    /// A maintenance or check job found a warning.
    Warning,
    /// A check job found something critical.
    Critical,
    /// A restore put the data back but the service did not come back (an
    /// `after` hook or a `verify` check failed).
    Unhealthy,
    /// Stopped by SIGINT or SIGTERM (128 + 2, as shells report it).
    Interrupted,
}

impl Exit {
    /// Every exit, in code order (the README's table lists exactly these).
    pub const ALL: [Exit; 11] = [
        Exit::Success,
        Exit::Failed,
        Exit::Usage,
        Exit::Integrity,
        Exit::Refused,
        Exit::NotFound,
        Exit::Skipped,
        Exit::Warning,
        Exit::Critical,
        Exit::Unhealthy,
        Exit::Interrupted,
    ];

    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Integrity => 3,
            Exit::Refused => 4,
            Exit::NotFound => 5,
            Exit::Skipped => 6,
            Exit::Warning => 7,
            Exit::Critical => 8,
            Exit::Unhealthy => 9,
            Exit::Interrupted => 130,
        }
    }
}

impl Error {
    /// What this error exits with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config { .. } | Error::Key(_) | Error::Usage(_) => Exit::Usage,
            Error::Integrity { .. } => Exit::Integrity,
            Error::Refused(_) => Exit::Refused,
            Error::NotFound(_) => Exit::NotFound,
            Error::Interrupted(_) => Exit::Interrupted,
            Error::Unhealthy(_) => Exit::Unhealthy,
            _ => Exit::Failed,
        }
    }

    /// The process exit code for this error (see [`Exit`]).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.exit().code())
    }

    /// An I/O error while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A background task that ended without its result.
    pub fn task(context: impl Into<String>, source: tokio::task::JoinError) -> Self {
        Error::Task {
            context: context.into(),
            source,
        }
    }

    /// A value read back from the state database that does not decode.
    pub fn unreadable(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unreadable {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A PostgreSQL error while doing `context`, its text redacted.
    pub fn pg(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Postgres {
            context: context.into(),
            message: crate::base::secret::redact(&err.to_string()),
        }
    }

    /// A failure of repository `repository`, its text redacted.
    pub fn repo(repository: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Repository {
            repository: repository.into(),
            message: crate::base::secret::redact(&message.to_string()),
        }
    }
}

/// Attach a human context to I/O results: `file.read(..).ctx("reading manifest")?`.
pub trait IoContext<T> {
    /// The error, if any, as an [`Error::Io`] saying what was being done.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

/// An error and its sources as one line, skipping a source whose text the
/// message already holds (many libraries repeat their cause in Display).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}
