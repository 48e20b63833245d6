//! A config value that is text in the TOML and a typed value everywhere
//! else: parsed once, when the file is read.
//!
//! Parsing inside serde would make a bad value a serde error, and inside an
//! internally tagged enum (every job kind is one) serde reports the table,
//! not the key, and only the first problem. So deserializing keeps the text
//! *and* the parse's outcome; the validators report every failed parse with
//! its full key and the parser's own message (what was expected), and the
//! engine reads the typed value through [`Parsed::get`] without parsing
//! again. `config check` and `--json` show the text as written.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A type a config string parses into.
pub trait FromConfig: Sized {
    /// The value, or what was expected instead (never echoing a secret).
    fn from_config(text: &str) -> Result<Self, String>;
}

/// The text of a config value and what it parsed into.
#[derive(Clone)]
pub struct Parsed<T> {
    text: String,
    value: Result<T, String>,
}

impl<T: FromConfig> Parsed<T> {
    /// Parse `text` now; a failure is kept for the validators to report.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let value = T::from_config(&text);
        Parsed { text, value }
    }
}

impl<T> Parsed<T> {
    /// The value as written in the config.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The typed value. Loading a config validates every `Parsed`, so the
    /// engine only meets an error for a config it built without loading.
    pub fn get(&self) -> crate::Result<&T> {
        self.value
            .as_ref()
            .map_err(|why| crate::Error::Usage(format!("{:?}: {why}", self.text)))
    }

    /// Why the text does not parse, for the validators.
    pub fn problem(&self) -> Option<&str> {
        self.value.as_ref().err().map(String::as_str)
    }
}

impl<T> std::fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl<T> PartialEq for Parsed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<T> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T: FromConfig> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Parsed::new)
    }
}

impl FromConfig for chrono_tz::Tz {
    fn from_config(text: &str) -> Result<Self, String> {
        text.parse::<chrono_tz::Tz>().map_err(|_| {
            format!("unknown time zone {text:?} (expected an IANA name like \"Europe/Berlin\" or \"UTC\")")
        })
    }
}

/// The zone of an optional `timezone` key: UTC when absent.
pub fn zone(tz: Option<&Parsed<chrono_tz::Tz>>) -> crate::Result<chrono_tz::Tz> {
    tz.map_or(Ok(chrono_tz::Tz::UTC), |t| t.get().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_round_trips_and_the_value_is_parsed_once() {
        let p: Parsed<chrono_tz::Tz> = serde_json::from_str("\"Europe/Berlin\"").unwrap();
        assert_eq!(p.text(), "Europe/Berlin");
        assert_eq!(*p.get().unwrap(), chrono_tz::Tz::Europe__Berlin);
        assert!(p.problem().is_none());
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"Europe/Berlin\"");
        assert_eq!(format!("{p:?}"), "\"Europe/Berlin\"");
    }

    #[test]
    fn a_bad_value_deserializes_and_says_what_was_expected() {
        let p: Parsed<chrono_tz::Tz> = serde_json::from_str("\"Mars/Olympus\"").unwrap();
        let why = p.problem().unwrap();
        assert!(why.contains("expected an IANA name"), "{why}");
        let e = p.get().unwrap_err();
        assert_eq!(e.exit(), crate::base::error::Exit::Usage);
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        assert_eq!(zone(None).unwrap(), chrono_tz::Tz::UTC);
        assert!(zone(Some(&p)).is_err());
    }
}
