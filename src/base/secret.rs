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

    /// Wrap a URL whose secret parts are its password and credential
    /// query values: only those are registered for redaction, so logs and
    /// errors still say which server (`connecting to db:5432/app`) instead
    /// of masking the whole address. A value that is not a URL is
    /// registered whole.
    pub fn url(value: String) -> Self {
        match url::Url::parse(&value) {
            Ok(u) => {
                register_url_password(&value);
                for (k, v) in u.query_pairs() {
                    if secret_param(&k) {
                        register(&v);
                    }
                }
            }
            Err(_) => register(&value),
        }
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

/// A secret in a config file (`password = "..."`): read as the string it
/// is, registered for redaction the moment it is read, and written back
/// (`config check`, `--json`) masked, whatever the key is called. A URL
/// keeps its scheme and host (`https://hooks.slack.com/***`): enough to
/// tell which service, nothing to use.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let shown = url::Url::parse(&self.0)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!("{}://{h}/***", u.scheme())))
            .unwrap_or_else(|| "***".into());
        s.serialize_str(&shown)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
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
    let mut reg = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    let reg = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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

/// Query parameters that carry credentials in the URLs operators paste
/// (`?token=`, presigned `X-Amz-Signature=`, `?password=`, API keys).
fn secret_param(name: &str) -> bool {
    const EXACT: [&str; 5] = ["sig", "pass", "pwd", "auth", "apikey"];
    const PART: [&str; 6] = [
        "password",
        "passwd",
        "token",
        "secret",
        "signature",
        "credential",
    ];
    let n = name.to_ascii_lowercase();
    EXACT.contains(&n.as_str()) || n.ends_with("key") || PART.iter().any(|p| n.contains(p))
}

/// `text` with a URL's password and secret query values replaced by `***`
/// (None when `text` is not a URL or holds neither): for showing a
/// configured URL in `config check`, `/status` and the state database.
pub fn mask_url(text: &str) -> Option<String> {
    let mut u = url::Url::parse(text).ok()?;
    u.host_str()?;
    let mut changed = false;
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
        changed = true;
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.iter().any(|(k, _)| secret_param(k)) {
        let masked: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                if secret_param(&k) {
                    (k, "***".to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(masked);
        changed = true;
    }
    changed.then(|| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_secret_query_values() {
        assert_eq!(
            mask_url("postgres://app:pw@db/app?sslmode=require&password=x").as_deref(),
            Some("postgres://app:***@db/app?sslmode=require&password=***")
        );
        assert_eq!(
            mask_url("https://api.example/health?token=abc&verbose=1").as_deref(),
            Some("https://api.example/health?token=***&verbose=1")
        );
        assert_eq!(
            mask_url("https://s3.example/b/k?X-Amz-Signature=f00&api_key=1").as_deref(),
            Some("https://s3.example/b/k?X-Amz-Signature=***&api_key=***")
        );
        assert_eq!(mask_url("https://api.example/health?verbose=1"), None);
        assert_eq!(mask_url("not a url"), None);
        assert_eq!(mask_url("/var/lib/drctl"), None);
    }

    #[test]
    fn a_url_secret_hides_its_password_not_its_host() {
        let s = Secret::url("postgres://app:pw-7e1d9c@db.example:5433/app".into());
        assert_eq!(
            redact("connecting to postgres://app:pw-7e1d9c@db.example:5433/app"),
            "connecting to postgres://app:***@db.example:5433/app"
        );
        let _ = Secret::url("postgres://app@db-nopw.example/app".into());
        assert_eq!(
            redact("connecting to db-nopw.example/app"),
            "connecting to db-nopw.example/app"
        );
        let _ = Secret::url("not-a-url-secret-value".into());
        assert_eq!(redact("x not-a-url-secret-value"), "x ***");
        assert_eq!(format!("{s}"), "***");
    }

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
