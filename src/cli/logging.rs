//! Where log lines go and how they look.
//!
//! Three outputs, every one through `secret::redact` (a registered secret
//! that reaches a log line by any path, a server echoing a password in its
//! error, is masked there too):
//! - text on stderr, coloured only when stderr is a terminal;
//! - JSON lines on stderr (`--log-format json`, `DRCTL_LOG_FORMAT=json`);
//! - the journal, when systemd connected stderr to it (`JOURNAL_STREAM`
//!   names stderr's device and inode): each event is one datagram of the
//!   journal's native protocol with `PRIORITY` (so `journalctl -p err`
//!   finds failures) and the event's fields as journal fields (`JOB=`,
//!   `BACKUP_ID=`, so `journalctl JOB=appdb` finds one job's lines).
//!
//! The journal writer is ours rather than tracing-journald's layer because
//! that layer writes to the socket itself, past the redaction every other
//! output goes through.

use std::io::IsTerminal;
use std::os::unix::net::UnixDatagram;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal)
    Text,
    /// One JSON object per line
    Json,
    /// The systemd journal's native protocol (the default under systemd)
    Journal,
}

/// The journal's socket, as systemd documents it.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Libraries that log whole requests at debug level (the Docker engine
/// client logs an exec's environment, a password included; HTTP and SMTP
/// clients log headers): capped at info whatever `DRCTL_LOG` says.
const CHATTY: [&str; 6] = ["bollard", "hyper", "hyper_util", "reqwest", "lettre", "h2"];

/// The filter: `DRCTL_LOG` when set, else by `-v`/`-q`: dependencies at
/// warn unless asked, drctl's own lines at info.
pub fn filter_spec(verbose: u8, quiet: bool) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,drctl=info",
        (false, 1) => "warn,drctl=debug",
        (false, 2) => "debug",
        (false, _) => "trace",
    }
}

/// Whether systemd connected our stderr to the journal: `JOURNAL_STREAM`
/// is "DEV:INODE" of that stream (a child whose stderr was redirected
/// elsewhere inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_matches(&v, meta.dev(), meta.ino())
}

fn journal_stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        .is_some_and(|(d, i)| d == dev && i == ino)
}

/// Install the subscriber. `format`: `--log-format`/`DRCTL_LOG_FORMAT`;
/// without it the journal under systemd, else text.
pub fn init(format: Option<LogFormat>, verbose: u8, quiet: bool) {
    let mut filter = EnvFilter::try_from_env("DRCTL_LOG")
        .unwrap_or_else(|_| EnvFilter::new(filter_spec(verbose, quiet)));
    for krate in CHATTY {
        if let Ok(d) = format!("{krate}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let format = format.unwrap_or(if stderr_is_journal() {
        LogFormat::Journal
    } else {
        LogFormat::Text
    });
    let journal = match format {
        LogFormat::Journal => UnixDatagram::unbound()
            .and_then(|s| s.connect(JOURNAL_SOCKET).map(|()| s))
            .ok(),
        _ => None,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match (format, journal) {
        (LogFormat::Json, _) => builder
            .json()
            .with_current_span(false)
            .with_writer(|| RedactingStderr)
            .try_init(),
        (LogFormat::Journal, Some(sock)) => {
            let sock = std::sync::Arc::new(sock);
            builder
                .event_format(JournalFormat)
                .with_writer(move || JournalWriter {
                    sock: sock.clone(),
                    buf: Vec::new(),
                })
                .try_init()
        }
        // Text, or no journal socket after all: plain lines on stderr.
        _ => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_writer(|| RedactingStderr)
            .try_init(),
    };
}

/// stderr through `secret::redact`.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(drctl::base::secret::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One event as journal fields, one `KEY=value` per line (values with a
/// newline are escaped by [`field_line`]); [`JournalWriter`] sends it.
struct JournalFormat;

/// The journal's priority for a tracing level (syslog's numbers).
pub fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 5,
        tracing::Level::DEBUG => 6,
        tracing::Level::TRACE => 7,
    }
}

/// A tracing field's name as a journal field: upper case, `[A-Z0-9_]`,
/// not starting with `_` (reserved for the journal's trusted fields);
/// `backup` becomes `BACKUP_ID`, the name operators search for.
pub fn journal_name(field: &str) -> String {
    if field == "backup" {
        return "BACKUP_ID".into();
    }
    let name: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('_');
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("F_{name}")
    } else {
        name.to_owned()
    }
}

/// `KEY=value\n`, the value's newlines as the two characters `\n` (the
/// native protocol's binary form for multi-line values is not text).
fn field_line(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    out.push_str(&value.replace('\n', "\\n"));
    out.push('\n');
}

struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.rest
                .push((journal_name(field.name()), value.to_owned()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            // Debug of a string is quoted: the journal wants the text.
            let text = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .map_or(text.clone(), str::to_owned);
            self.rest.push((journal_name(field.name()), text));
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields {
            message: String::new(),
            rest: Vec::new(),
        };
        event.record(&mut f);
        let mut out = String::new();
        let mut message = f.message;
        for (k, v) in &f.rest {
            message.push_str(&format!(" {}={v}", k.to_ascii_lowercase()));
        }
        field_line(&mut out, "MESSAGE", &message);
        field_line(
            &mut out,
            "PRIORITY",
            &priority(*event.metadata().level()).to_string(),
        );
        field_line(&mut out, "SYSLOG_IDENTIFIER", "drctl");
        for (k, v) in &f.rest {
            field_line(&mut out, k, v);
        }
        writer.write_str(&out)
    }
}

/// Collects one formatted event and sends it as one datagram when dropped
/// (tracing's fmt layer makes one writer per event), redacted.
struct JournalWriter {
    sock: std::sync::Arc<UnixDatagram>,
    buf: Vec<u8>,
}

impl std::io::Write for JournalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = drctl::base::secret::redact(&String::from_utf8_lossy(&self.buf));
        // A datagram over the socket's limit (a huge child stderr) is cut:
        // the journal keeps the head rather than nothing.
        let bytes = text.as_bytes();
        let bytes = &bytes[..bytes.len().min(200 * 1024)];
        if self.sock.send(bytes).is_err() {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_names_and_priorities() {
        assert_eq!(journal_name("job"), "JOB");
        assert_eq!(journal_name("backup"), "BACKUP_ID");
        assert_eq!(journal_name("retry_in"), "RETRY_IN");
        assert_eq!(journal_name("_hidden.x"), "HIDDEN_X");
        assert_eq!(journal_name("1st"), "F_1ST");
        assert_eq!(priority(tracing::Level::ERROR), 3);
        assert_eq!(priority(tracing::Level::INFO), 5);
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 99));
        assert!(!journal_stream_matches("garbage", 8, 1234));
    }

    #[test]
    fn verbosity_keeps_dependencies_quiet() {
        assert_eq!(filter_spec(0, false), "warn,drctl=info");
        assert_eq!(filter_spec(1, false), "warn,drctl=debug");
        assert_eq!(filter_spec(0, true), "error");
    }

    #[test]
    fn multi_line_values_stay_one_field() {
        let mut s = String::new();
        field_line(&mut s, "MESSAGE", "a\nb");
        assert_eq!(s, "MESSAGE=a\\nb\n");
    }
}
