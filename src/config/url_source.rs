//! `url` / `url_env` / `url_file`: where a connection URL comes from. One
//! type for the three keys, flattened into every section that connects to
//! PostgreSQL, so they are validated and resolved one way, and a URL that
//! may hold a password never reaches a log through `Debug`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A connection URL: inline, from an environment variable, or from a file
/// (relative to `$CREDENTIALS_DIRECTORY`). Exactly one is set (validated).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlSource {
    /// The URL inline. Prefer `url_env`/`url_file`: an inline password is a
    /// secret in a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL from this environment variable (the usual way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The URL from this file (relative to `$CREDENTIALS_DIRECTORY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
}

impl std::fmt::Debug for UrlSource {
    /// Names where the URL comes from; an inline one is shown without its
    /// password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = self
            .url
            .as_deref()
            .map(|u| match crate::base::secret::mask_url(u) {
                Some(masked) => masked,
                // Nothing to mask in a URL that parses with a host; anything
                // else may be a secret in the wrong shape.
                None if url::Url::parse(u).is_ok_and(|p| p.host_str().is_some()) => u.to_owned(),
                None => "***".into(),
            });
        f.debug_struct("UrlSource")
            .field("url", &masked)
            .field("url_env", &self.url_env)
            .field("url_file", &self.url_file)
            .finish()
    }
}

impl UrlSource {
    /// Exactly one of the three keys is set, and an inline URL is a
    /// `postgres://` one with its password (if any) where libpq reads it.
    pub(crate) fn validate(&self) -> Result<(), String> {
        super::jobs::one_url_source(&self.url, &self.url_env, &self.url_file)?;
        if let Some(u) = &self.url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err("expected a postgres:// URL".into());
            }
            let query_password =
                url::Url::parse(u).is_ok_and(|p| p.query_pairs().any(|(k, _)| k == "password"));
            if query_password {
                return Err("put the password in the userinfo (postgres://user:password@host/db) or use url_env/url_file, not in the query".into());
            }
        }
        Ok(())
    }

    /// The URL, read now (an environment variable or file may change
    /// between runs; a rotated password is picked up without a reload).
    pub fn resolve(&self, what: &str) -> crate::Result<crate::base::secret::Secret> {
        super::resolve_secret_as(
            self.url.as_deref(),
            self.url_env.as_deref(),
            self.url_file.as_deref(),
            what,
            crate::base::secret::Secret::url,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::UrlSource;

    #[test]
    fn debug_never_shows_an_inline_password() {
        let s = UrlSource {
            url: Some("postgres://app:S3cret@db/app".into()),
            ..Default::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("S3cret"), "{shown}");
        assert!(shown.contains("db/app"), "{shown}");
    }

    #[test]
    fn exactly_one_source_and_a_postgres_url() {
        let none = UrlSource::default();
        assert!(none.validate().is_err());
        let two = UrlSource {
            url: Some("postgres://h/db".into()),
            url_env: Some("X".into()),
            url_file: None,
        };
        assert!(two.validate().is_err());
        let http = UrlSource {
            url: Some("http://h/db".into()),
            ..Default::default()
        };
        assert!(http.validate().is_err());
        let query = UrlSource {
            url: Some("postgres://u@h/db?password=x".into()),
            ..Default::default()
        };
        assert!(query.validate().is_err());
        let env = UrlSource {
            url_env: Some("DATABASE_URL".into()),
            ..Default::default()
        };
        assert!(env.validate().is_ok());
    }
}
