//! Validated names. Object keys and paths are only ever built from these, so a
//! hostile job name or backup id cannot escape the repository prefix.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// `name` in the letters a PostgreSQL object name may hold unquoted
/// (lower-case ASCII letters, digits, `_`), other characters as `_`, at
/// most `max` of them: the job's part of a slot or scratch database name.
pub fn pg_name_part(name: &str, max: usize) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// A job name as used in the config and in repository keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

impl JobName {
    /// A job name that is safe as a path and key component (no `/`, no
    /// leading dot, at most 128 ASCII characters), or why not.
    pub fn parse(s: &str) -> Result<Self, String> {
        if valid_component(s) {
            Ok(JobName(s.to_owned()))
        } else {
            Err(format!(
                "invalid job name {s:?}: use letters, digits, '.', '_' and '-' (at most 128, not starting with '.')"
            ))
        }
    }
    /// The name as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        JobName::parse(&s)
    }
}
impl From<JobName> for String {
    fn from(j: JobName) -> String {
        j.0
    }
}
impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An operator's label on a backup (`drctl run JOB --label pre-migration`):
/// something to find it by in an incident, so short and plain (at most 64
/// letters, digits, `.`, `_`, `-`, starting with a letter or digit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// A valid label, or what a label may hold.
    pub fn parse(s: &str) -> Result<Self, String> {
        let first_ok = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if first_ok && s.len() <= 64 && valid_component(s) {
            Ok(Label(s.to_owned()))
        } else {
            Err(format!(
                "invalid label {s:?}: expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. \"pre-migration\")"
            ))
        }
    }

    /// The label as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Label::parse(&s)
    }
}
impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0
    }
}
impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `20261122T020000.123Z-<host>-<random>`: sorts by start time (to the
/// millisecond) as a plain string, so the greatest id in one listing is the
/// latest backup, also when two runs start within the same second. Ids from
/// before milliseconds were added (`20261122T020000Z-...`) still parse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

const TS_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
/// Accepts both the millisecond form and the older whole-second form.
const TS_PARSE: &str = "%Y%m%dT%H%M%S%.fZ";

impl BackupId {
    /// The id of a backup starting `at` on `host`: sorts by time, so the
    /// newest is the largest and listing order is age order.
    pub fn new(at: DateTime<Utc>, host: &str) -> Self {
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect();
        let host = if host.is_empty() { "host".into() } else { host };
        let suffix: u32 = rand::random();
        BackupId(format!("{}-{}-{:08x}", at.format(TS_FORMAT), host, suffix))
    }

    /// An id read from a repository key or the command line, or why it is
    /// not one (a key that is not an id is never treated as a backup).
    pub fn parse(s: &str) -> Result<Self, String> {
        if !valid_component(s) || s.len() < 17 {
            return Err(format!("invalid backup id {s:?}"));
        }
        Self::parse_timestamp(s).ok_or_else(|| {
            format!(
                "invalid backup id {s:?}: it must start with a UTC timestamp like 20261122T020000.000Z"
            )
        })?;
        Ok(BackupId(s.to_owned()))
    }

    /// The time encoded in the id (the backup's start).
    pub fn timestamp(&self) -> DateTime<Utc> {
        Self::parse_timestamp(&self.0).unwrap_or_default()
    }

    fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
        let end = s.find('Z')? + 1;
        NaiveDateTime::parse_from_str(&s[..end], TS_PARSE)
            .ok()
            .map(|n| n.and_utc())
    }

    /// The (sanitised) host name the id was made on.
    pub fn host(&self) -> &str {
        let rest = self.0.split_once('-').map_or("", |(_, r)| r);
        rest.rsplit_once('-').map_or(rest, |(h, _)| h)
    }
    /// The id as stored in repository keys.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BackupId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BackupId::parse(&s)
    }
}
impl From<BackupId> for String {
    fn from(b: BackupId) -> String {
        b.0
    }
}
impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn labels_are_short_plain_words() {
        for ok in ["pre-migration", "v2.3_rollback", "a", &"x".repeat(64)] {
            assert!(Label::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "with space",
            "a/b",
            "ü",
            &"x".repeat(65),
            "x\n",
        ] {
            let why = Label::parse(bad).unwrap_err();
            assert!(why.contains("expected 1 to 64"), "{bad:?}: {why}");
        }
    }

    use super::*;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let a = BackupId::new("2026-11-22T02:00:00Z".parse().unwrap(), "db1.example.com");
        let b = BackupId::new("2026-11-22T02:00:01Z".parse().unwrap(), "a");
        assert!(a < b);
        assert_eq!(BackupId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.timestamp().to_rfc3339(), "2026-11-22T02:00:00+00:00");
        assert!(a
            .as_str()
            .starts_with("20261122T020000.000Z-db1-example-com-"));
    }

    #[test]
    fn runs_within_one_second_order_by_milliseconds() {
        // The suffix is random: only the milliseconds may decide the order.
        for _ in 0..50 {
            let a = BackupId::new("2026-11-22T02:00:00.120Z".parse().unwrap(), "h");
            let b = BackupId::new("2026-11-22T02:00:00.870Z".parse().unwrap(), "h");
            assert!(a < b, "{a} {b}");
        }
        let b = BackupId::new("2026-11-22T02:00:00.870Z".parse().unwrap(), "h");
        assert_eq!(b.timestamp().timestamp_millis() % 1000, 870);
    }

    #[test]
    fn whole_second_ids_from_older_versions_still_parse() {
        let old = BackupId::parse("20261122T020000Z-db1-1a2b3c4d").unwrap();
        assert_eq!(old.timestamp().to_rfc3339(), "2026-11-22T02:00:00+00:00");
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "x y", "a\\b"] {
            assert!(JobName::parse(bad).is_err(), "{bad}");
        }
        assert!(BackupId::parse("../../etc").is_err());
        assert!(BackupId::parse("notatimestamp-xx").is_err());
    }
}
