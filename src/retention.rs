//! Which backups a grandfather-father-son policy keeps (restic's and
//! borg's `forget` semantics): walking from the newest, `keep_last` keeps the
//! N newest; each period rule keeps the newest backup of each of its N most
//! recent periods that have a backup (hours, days, ISO weeks, months, years,
//! in the job's time zone). A backup is kept if any rule keeps it, and the
//! newest backup is always kept.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Why a backup is kept: `last`, `hourly`, `daily`, ... (several may apply).
pub type Reasons = Vec<&'static str>;

/// Decide for `backups` (id, time; any order). Returns the kept ids with
/// their reasons; everything else may go.
pub fn keep<'a>(
    backups: &'a [(String, DateTime<Utc>)],
    p: &Policy,
    tz: Tz,
) -> BTreeMap<&'a str, Reasons> {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut kept: BTreeMap<&str, Reasons> = BTreeMap::new();
    for (id, _) in sorted.iter().take(p.keep_last as usize) {
        kept.entry(id.as_str()).or_default().push("last");
    }
    type Period = fn(DateTime<Tz>) -> (i32, u32, u32, u32);
    let rules: [(&'static str, u32, Period); 5] = [
        ("hourly", p.hourly, |t| {
            (t.year(), t.month(), t.day(), t.hour())
        }),
        ("daily", p.daily, |t| (t.year(), t.month(), t.day(), 0)),
        ("weekly", p.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        ("monthly", p.monthly, |t| (t.year(), t.month(), 0, 0)),
        ("yearly", p.yearly, |t| (t.year(), 0, 0, 0)),
    ];
    for (name, n, period) in rules {
        if n == 0 {
            continue;
        }
        let mut seen = HashSet::new();
        for (id, at) in &sorted {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(period(at.with_timezone(&tz))) {
                kept.entry(id.as_str()).or_default().push(name);
            }
        }
    }
    if let Some((id, _)) = sorted.first() {
        kept.entry(id.as_str()).or_default().push("newest");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_last_the_newest_n() {
        let b: Vec<(String, DateTime<Utc>)> = [
            "2026-11-20T01:00:00Z",
            "2026-11-20T23:00:00Z",
            "2026-11-21T02:00:00Z",
            "2026-11-22T02:00:00Z",
            "2026-11-22T14:00:00Z",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("b{i}"), at(t)))
        .collect();
        let p = Policy {
            keep_last: 1,
            daily: 2,
            ..Policy::default()
        };
        let k = keep(&b, &p, Tz::UTC);
        let ids: Vec<&str> = k.keys().copied().collect();
        assert_eq!(ids, vec!["b2", "b4"]);
        assert_eq!(k["b4"], vec!["last", "daily", "newest"]);
        // In Tokyo, 2026-11-20T23:00Z is already the 21st, so the 20th's
        // newest backup is b0 there and b1 in UTC.
        let three = Policy {
            daily: 3,
            ..Policy::default()
        };
        let utc: Vec<&str> = keep(&b, &three, Tz::UTC).keys().copied().collect();
        assert_eq!(utc, vec!["b1", "b2", "b4"]);
        let tokyo: Vec<&str> = keep(&b, &three, "Asia/Tokyo".parse().unwrap())
            .keys()
            .copied()
            .collect();
        assert_eq!(tokyo, vec!["b0", "b2", "b4"]);
    }

    #[test]
    fn an_empty_policy_still_keeps_the_newest() {
        let b = vec![
            ("a".to_string(), at("2026-01-01T00:00:00Z")),
            ("b".to_string(), at("2026-01-02T00:00:00Z")),
        ];
        let k = keep(&b, &Policy::default(), Tz::UTC);
        assert_eq!(k.keys().copied().collect::<Vec<_>>(), vec!["b"]);
    }
}
