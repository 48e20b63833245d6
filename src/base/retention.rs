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

/// `retention = { ... }`: grandfather-father-son counts. The newest
/// backup is always kept, whatever they say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest N backups.
    #[serde(default)]
    pub keep_last: u32,
    /// Keep the newest backup of each of the last N hours.
    #[serde(default)]
    pub hourly: u32,
    /// ... of each of the last N days (in the job's time zone).
    #[serde(default)]
    pub daily: u32,
    /// ... of each of the last N ISO weeks.
    #[serde(default)]
    pub weekly: u32,
    /// ... of each of the last N months.
    #[serde(default)]
    pub monthly: u32,
    /// ... of each of the last N years.
    #[serde(default)]
    pub yearly: u32,
}

impl Policy {
    /// Keeps nothing beyond the newest (a config error: it would delete
    /// every other backup).
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

/// A committed backup as retention sees it, with what is known about it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The backup's id.
    pub id: String,
    /// When it started (the time GFS buckets it by).
    pub at: DateTime<Utc>,
    /// Its host's clock ran ahead of the store's: its time cannot be trusted.
    pub skewed: bool,
    /// When the store says it was committed (its real age, for a skewed one).
    pub stored_at: Option<DateTime<Utc>>,
    /// The last verification found it damaged.
    pub damaged: bool,
    /// A deep verification or a drill proved it restorable (and nothing
    /// found it damaged since).
    pub proven: bool,
    /// The backup the run applying retention has just committed: kept
    /// whatever its id says (a host whose clock runs behind gives it an id
    /// older than others').
    pub just_made: bool,
    /// Pinned by its operator (`drctl run --keep-for`) and the pin has not
    /// run out: kept, and outside the policy's slots.
    pub pinned: bool,
}

/// The whole retention decision: which backups stay, and why.
///
/// - A backup with an untrustworthy time (`skewed`) or known `damaged`
///   fills no policy slot, so it cannot push out real, good backups. A
///   skewed one is kept while the store's clock puts it inside the kept
///   span; a damaged one goes, unless it is the newest (always kept).
/// - The newest backup proven restorable is kept on top of the policy's
///   picks ("last verified"): retention never leaves only unproven copies.
/// - A pinned backup is kept until its pin runs out and fills no slot
///   either: a pre-migration backup kept for 30 days does not push the
///   nightly ones out of their daily slots.
/// - Without a policy everything is kept.
pub fn decide(backups: &[Candidate], policy: Option<&Policy>, tz: Tz) -> BTreeMap<String, Reasons> {
    let mut kept: BTreeMap<String, Reasons> = BTreeMap::new();
    let Some(policy) = policy else {
        for b in backups {
            kept.entry(b.id.clone())
                .or_default()
                .push("no retention policy");
        }
        return kept;
    };
    let slots: Vec<(String, DateTime<Utc>)> = backups
        .iter()
        .filter(|b| !b.skewed && !b.damaged && !b.pinned)
        .map(|b| (b.id.clone(), b.at))
        .collect();
    for (id, reasons) in keep(&slots, policy, tz) {
        kept.insert(id.to_owned(), reasons);
    }
    // A skewed backup is kept while the store's time puts it inside the
    // span the policy keeps (its data may be the newest there is), and
    // goes once real backups older than it are let go.
    let oldest_kept = slots
        .iter()
        .filter(|(id, _)| kept.contains_key(id))
        .map(|(_, at)| *at)
        .min();
    for b in backups.iter().filter(|b| b.skewed) {
        let inside = match (b.stored_at, oldest_kept) {
            (Some(stored), Some(oldest)) => stored >= oldest,
            _ => true,
        };
        if inside {
            kept.entry(b.id.clone())
                .or_default()
                .push("clock skew: not counted");
        }
    }
    for b in backups.iter().filter(|b| b.pinned) {
        kept.entry(b.id.clone()).or_default().push("pinned");
    }
    for b in backups.iter().filter(|b| b.just_made) {
        kept.entry(b.id.clone()).or_default().push("just made");
    }
    let newest_proven = backups
        .iter()
        .filter(|b| b.proven && !b.damaged && !b.skewed)
        .max_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
    if let Some(b) = newest_proven {
        kept.entry(b.id.clone()).or_default().push("last verified");
    }
    // The newest backup stays whatever is known about it: "damaged" may be
    // one bad artifact of several, and deleting cannot be undone.
    if let Some(b) = backups
        .iter()
        .filter(|b| !b.skewed)
        .max_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)))
    {
        let r = kept.entry(b.id.clone()).or_default();
        if r.is_empty() {
            r.push("newest, though damaged");
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, t: &str) -> Candidate {
        Candidate {
            id: id.into(),
            at: at(t),
            skewed: false,
            stored_at: Some(at(t)),
            damaged: false,
            proven: false,
            just_made: false,
            pinned: false,
        }
    }

    #[test]
    fn a_pinned_backup_is_kept_outside_the_slots_until_its_pin_runs_out() {
        // Nightly backups, and a pre-migration one at noon on the 20th.
        let mut b = vec![
            cand("n19", "2026-11-19T02:00:00Z"),
            cand("n20", "2026-11-20T02:00:00Z"),
            cand("pre-migration", "2026-11-20T12:00:00Z"),
            cand("n21", "2026-11-21T02:00:00Z"),
            cand("n22", "2026-11-22T02:00:00Z"),
        ];
        b[2].pinned = true;
        let daily = Policy {
            daily: 3,
            ..Policy::default()
        };
        let k = decide(&b, Some(&daily), Tz::UTC);
        // The 20th's daily slot goes to its nightly backup, not to the
        // pinned one (newer that day): the pin takes no slot.
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["n20", "n21", "n22", "pre-migration"]
        );
        assert_eq!(k["pre-migration"], vec!["pinned"]);
        assert_eq!(k["n20"], vec!["daily"]);
        // keep_last = 1: the pinned one stays beside the newest.
        let last = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let k = decide(&b, Some(&last), Tz::UTC);
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["n22", "pre-migration"]
        );
        // Once the pin has run out (the caller no longer marks it), it is
        // an ordinary backup again and goes.
        b[2].pinned = false;
        let k = decide(&b, Some(&last), Tz::UTC);
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["n22"]
        );
        // The newest backup being pinned changes nothing about "newest".
        b[4].pinned = true;
        let k = decide(&b, Some(&last), Tz::UTC);
        assert_eq!(k["n22"], vec!["pinned"]);
        assert!(
            k.contains_key("n21"),
            "the newest unpinned one fills keep_last"
        );
    }

    #[test]
    fn a_backup_from_the_future_neither_fills_a_slot_nor_pushes_out_real_ones() {
        // Written at 01:00 by a host whose clock said 05:00.
        let mut b = vec![
            cand("real1", "2026-11-20T02:00:00Z"),
            cand("future", "2026-11-21T05:00:00Z"),
            cand("real2", "2026-11-21T02:00:00Z"),
        ];
        b[1].skewed = true;
        b[1].stored_at = Some(at("2026-11-21T01:00:00Z"));
        let p = Policy {
            keep_last: 2,
            ..Policy::default()
        };
        let k = decide(&b, Some(&p), Tz::UTC);
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["future", "real1", "real2"]
        );
        assert_eq!(k["future"], vec!["clock skew: not counted"]);
        // A run whose clock is behind: its own backup sorts oldest but stays.
        let mut behind = b.clone();
        behind.push(cand("behind", "2026-11-01T00:00:00Z"));
        behind[3].just_made = true;
        let k = decide(&behind, Some(&p), Tz::UTC);
        assert_eq!(k["behind"], vec!["just made"]);
        // Once real backups older than it go, it goes too.
        b.push(cand("real3", "2026-11-22T02:00:00Z"));
        let k = decide(&b, Some(&p), Tz::UTC);
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["real2", "real3"]
        );
    }

    #[test]
    fn damaged_backups_fill_no_slot_and_the_last_verified_one_stays() {
        let mut b = vec![
            cand("good_old", "2026-11-18T02:00:00Z"),
            cand("proven", "2026-11-19T02:00:00Z"),
            cand("ok", "2026-11-20T02:00:00Z"),
            cand("bad1", "2026-11-21T02:00:00Z"),
            cand("bad2", "2026-11-22T02:00:00Z"),
        ];
        b[1].proven = true;
        b[3].damaged = true;
        b[4].damaged = true;
        let p = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let k = decide(&b, Some(&p), Tz::UTC);
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["bad2", "ok", "proven"]
        );
        assert_eq!(k["proven"], vec!["last verified"]);
        assert_eq!(k["ok"], vec!["last", "newest"]);
        assert_eq!(k["bad2"], vec!["newest, though damaged"]);
        // All damaged: the newest stays anyway.
        for c in &mut b {
            c.damaged = true;
        }
        let k = decide(&b, Some(&p), Tz::UTC);
        assert_eq!(
            k.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["bad2"]
        );
        // No policy: everything stays.
        assert_eq!(decide(&b, None, Tz::UTC).len(), 5);
    }

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
