//! Where a secret comes from: inline (`password`), an environment variable
//! (`password_env`) or a file (`password_file`, relative to
//! `$CREDENTIALS_DIRECTORY`). Every section with a secret keeps its three
//! keys under their own names (the TOML users write is unchanged) and hands
//! them to one [`SecretSource`], so they are validated, resolved and
//! reported one way. The inline value is a [`Secret`] from the moment it is
//! read: its `Debug`, `Display` and `Serialize` mask it, so masking follows
//! the type, not a guess from the key's name.

use crate::base::secret::Secret;
use std::path::Path;

/// The three keys of one secret, borrowed from the section that holds them.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// The key names: inline, `_env`, `_file`.
    pub keys: [&'static str; 3],
    /// The value inline.
    pub inline: Option<&'a Secret>,
    /// The environment variable holding it.
    pub env: Option<&'a str>,
    /// The file holding it.
    pub file: Option<&'a Path>,
}

impl SecretSource<'_> {
    /// How many of the three keys are set.
    fn set(&self) -> usize {
        usize::from(self.inline.is_some())
            + usize::from(self.env.is_some())
            + usize::from(self.file.is_some())
    }

    fn one_of(&self) -> String {
        let [a, b, c] = self.keys;
        format!("expected exactly one of `{a}`, `{b}`, `{c}`")
    }

    /// Exactly one key is set (a secret the section cannot do without).
    pub fn require(&self) -> Result<(), String> {
        if self.set() == 1 {
            Ok(())
        } else {
            Err(self.one_of())
        }
    }

    /// At most one key is set (an optional secret).
    pub fn at_most_one(&self) -> Result<(), String> {
        if self.set() <= 1 {
            Ok(())
        } else {
            Err(self.one_of())
        }
    }

    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        self.set() > 0
    }

    /// The value, read now (a variable or file may change between runs: a
    /// rotated credential is picked up without a reload); `None` when no
    /// key is set.
    pub fn resolve(&self) -> crate::Result<Option<Secret>> {
        if let Some(s) = self.inline {
            return Ok(Some(s.clone()));
        }
        if !self.is_set() {
            return Ok(None);
        }
        super::resolve_secret(None, self.env, self.file, self.keys[0]).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source<'a>(inline: Option<&'a Secret>, env: Option<&'a str>) -> SecretSource<'a> {
        SecretSource {
            keys: ["password", "password_env", "password_file"],
            inline,
            env,
            file: None,
        }
    }

    #[test]
    fn exactly_one_or_at_most_one_and_the_message_names_the_keys() {
        let s = Secret::new("pw-9c1f7e".into());
        assert!(source(None, None).require().is_err());
        assert!(source(None, None).at_most_one().is_ok());
        assert!(source(Some(&s), None).require().is_ok());
        let both = source(Some(&s), Some("SMTP_PASSWORD"));
        let why = both.at_most_one().unwrap_err();
        assert_eq!(
            why,
            "expected exactly one of `password`, `password_env`, `password_file`"
        );
    }

    #[test]
    fn an_inline_secret_never_prints_and_serializes_masked() {
        let s: Secret =
            serde_json::from_str("\"https://hooks.slack.com/services/T0/B0/Xyz77\"").unwrap();
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"https://hooks.slack.com/***\""
        );
        let plain: Secret = serde_json::from_str("\"hunter22-whsec\"").unwrap();
        assert_eq!(serde_json::to_string(&plain).unwrap(), "\"***\"");
        // Read from the config, it is registered: errors quoting it are scrubbed.
        assert!(!crate::base::secret::redact("bad key hunter22-whsec").contains("hunter22"));
        let resolved = source(Some(&plain), None).resolve().unwrap().unwrap();
        assert_eq!(resolved.expose(), "hunter22-whsec");
        assert!(source(None, None).resolve().unwrap().is_none());
    }
}
