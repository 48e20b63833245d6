//! Secrets: resolved from the environment, a file or a systemd credential,
//! wrapped so that `Debug`/`Display` never print them, and registered so that
//! any error message that still carries one (e.g. echoed by a server) is
//! scrubbed before it reaches a log, the terminal or `--json` output.

use std::sync::{Mutex, OnceLock};

/// A secret string. Formatting it prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value and register it for redaction.
    pub fn new(value: String) -> Self {
        register(&value);
        Secret(value)
    }

    /// The clear value, for the one place that must hand it on (libpq passfile, SDK).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

fn registry() -> &'static Mutex<Vec<String>> {
    static REGISTRY: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a value that must never be printed. Very short values are not
/// registered: scrubbing "a" out of every message would destroy the message.
pub fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    if !reg.iter().any(|v| v == value) {
        reg.push(value.to_owned());
        // Percent-encoded forms appear in URLs echoed back by libraries.
        let encoded = url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
        if encoded != value {
            reg.push(encoded);
        }
    }
}

/// Replace every registered secret in `text` with `***`.
pub fn redact(text: &str) -> String {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_owned();
    for s in reg.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// Register the password of a `scheme://user:password@host` URL, if any.
pub fn register_url_password(url_text: &str) {
    if let Ok(u) = url::Url::parse(url_text) {
        if let Some(p) = u.password() {
            register(p);
            register(&percent_encoding::percent_decode_str(p).decode_utf8_lossy());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format_and_are_scrubbed() {
        let s = Secret::new("hunter2-very-secret".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(
            redact("auth failed for hunter2-very-secret at host"),
            "auth failed for *** at host"
        );
    }
}
