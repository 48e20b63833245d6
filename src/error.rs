//! Core error type. Each variant maps to a documented process exit code
//! (see README "Exit codes"), so scripts can tell "your config is wrong"
//! from "the backup is corrupt" from "the database refused".

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem: names the file, the key and what was expected.
    #[error("config error in {file}: key `{key}`: {message}")]
    Config {
        file: String,
        key: String,
        message: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("repository {repository}: {message}")]
    Repository { repository: String, message: String },

    /// A stored artifact does not match its manifest: never restore from it.
    #[error("integrity check failed for {artifact}: {message}")]
    Integrity { artifact: String, message: String },

    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },

    #[error("{0}")]
    ToolVersion(String),

    #[error("PostgreSQL: {context}: {message}")]
    Postgres { context: String, message: String },

    /// The restore target is not in a state we may write to without consent.
    #[error("refused: {0}")]
    Refused(String),

    #[error("not found: {0}")]
    NotFound(String),

    #[error("state database {path}: {message}")]
    State { path: PathBuf, message: String },

    /// The backup is encrypted and no identity that opens it was given.
    #[error("encryption: {0}")]
    Key(String),

    #[error("interrupted: {0}")]
    Interrupted(String),

    /// The command line asks for something malformed or ambiguous (a bad
    /// `--id`, `--to`, `--tmp-dir`, a missing `--job`): exit 2, like a
    /// config error, so scripts tell "you called me wrong" from "it failed".
    #[error("usage: {0}")]
    Usage(String),

    #[error("{0}")]
    Other(String),
}

/// Every exit code drctl uses: the one table. The README's "Exit codes"
/// table is checked against it by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The operation failed (database, tool, repository, I/O).
    Failed,
    /// Configuration or usage error; an encrypted backup without its key.
    Usage,
    /// An artifact does not match its manifest; a manifest cannot be read.
    Integrity,
    /// Refused without consent or against a safety rule.
    Refused,
    NotFound,
    /// The job is already running on this host.
    Skipped,
    /// A maintenance or check job found a warning.
    Warning,
    /// A check job found something critical.
    Critical,
    Interrupted,
}

impl Exit {
    pub const ALL: [Exit; 10] = [
        Exit::Success,
        Exit::Failed,
        Exit::Usage,
        Exit::Integrity,
        Exit::Refused,
        Exit::NotFound,
        Exit::Skipped,
        Exit::Warning,
        Exit::Critical,
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
            _ => Exit::Failed,
        }
    }

    /// The process exit code for this error (see [`Exit`]).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.exit().code())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn pg(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Postgres {
            context: context.into(),
            message: crate::secret::redact(&err.to_string()),
        }
    }

    pub fn repo(repository: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Repository {
            repository: repository.into(),
            message: crate::secret::redact(&message.to_string()),
        }
    }
}

/// Attach a human context to I/O results: `file.read(..).ctx("reading manifest")?`.
pub trait IoContext<T> {
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
