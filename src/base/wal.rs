//! PostgreSQL's write-ahead log as drctl stores it: LSNs, segment and
//! timeline-history file names, the record committed beside each stored
//! file, and the pure decisions over a listing (which segments a recovery
//! needs, where the chain has a gap, which segments retention may drop).
//!
//! Names follow PostgreSQL's own (`000000010000000A000000FF`,
//! `00000002.history`, `...0003.00000028.backup`), so a person can hand the
//! decompressed objects to any `restore_command`.

use crate::base::values::Compression;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Bumped on incompatible changes of [`WalRecord`].
pub const FORMAT: u32 = 1;

/// PostgreSQL's default `wal_segment_size` (16 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// A position in the WAL, written `X/Y` (hex) as PostgreSQL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `16/B374D848`, or `None`.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return None;
        }
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }

    /// The segment number this position falls in.
    pub fn segno(self, segment_bytes: u64) -> u64 {
        self.0 / segment_bytes.max(1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an LSN: {s:?}")))
    }
}

/// One WAL segment: its timeline and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The timeline.
    pub tli: u32,
    /// The segment number (LSN / segment size).
    pub segno: u64,
}

fn per_xlogid(segment_bytes: u64) -> u64 {
    0x1_0000_0000 / segment_bytes.max(1)
}

impl Segment {
    /// PostgreSQL's file name: `TTTTTTTTXXXXXXXXYYYYYYYY`.
    pub fn name(self, segment_bytes: u64) -> String {
        let per = per_xlogid(segment_bytes);
        format!(
            "{:08X}{:08X}{:08X}",
            self.tli,
            self.segno / per,
            self.segno % per
        )
    }

    /// The segment a 24-hex-digit name stands for.
    pub fn parse(name: &str, segment_bytes: u64) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
        let per = per_xlogid(segment_bytes);
        (seg < per).then_some(Segment {
            tli,
            segno: log * per + seg,
        })
    }

    /// The first position of the segment.
    pub fn start(self, segment_bytes: u64) -> Lsn {
        Lsn(self.segno * segment_bytes)
    }
}

/// What a file PostgreSQL hands to `archive_command` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalName {
    /// `000000010000000000000003`
    Segment,
    /// `000000010000000000000003.partial`: the unfinished newest segment
    /// (`pg_receivewal`, or the last segment of a timeline that ended).
    Partial,
    /// `00000002.history`: how a timeline branched off its parent.
    History(u32),
    /// `000000010000000000000003.00000028.backup`: a base backup's history file.
    BackupHistory,
}

/// Classify a file name: only PostgreSQL's own WAL names are accepted (they
/// become object keys and restore paths).
pub fn classify(name: &str) -> Option<WalName> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(name, 24) {
        return Some(WalName::Segment);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24).then_some(WalName::Partial);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8)
            .then(|| u32::from_str_radix(tli, 16).ok().map(WalName::History))
            .flatten();
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (hex(seg, 24) && hex(off, 8)).then_some(WalName::BackupHistory);
    }
    None
}

/// The record committed beside a stored WAL file (`<name>.json`), written
/// last as a backup's manifest is: a WAL file without one is not stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// The file's PostgreSQL name.
    pub name: String,
    /// The object holding its bytes, in the same directory
    /// (`<name>.<nonce>.zst[.age]`: two hosts pushing the same file at once
    /// never overwrite each other's object).
    pub object: String,
    /// Bytes of the file itself.
    pub raw_bytes: u64,
    /// SHA-256 of the file itself: pushing the same name again is a no-op
    /// when it matches, and refused when it does not.
    pub raw_sha256: String,
    /// Bytes of the stored object.
    pub stored_bytes: u64,
    /// SHA-256 of the stored object.
    pub sha256: String,
    /// How it is compressed.
    pub compression: Compression,
    /// age recipients' fingerprints when encrypted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_recipients: Vec<String>,
    /// The host that stored it.
    pub host: String,
    /// When it was stored (the WAL in it is at most this old).
    pub stored_at: DateTime<Utc>,
}

impl WalRecord {
    /// The object name a record may point at: the file's own name, a nonce,
    /// then the suffixes drctl writes; anything else (`../x`) is refused.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "WAL record format {} is not supported (expected {FORMAT})",
                self.format
            ));
        }
        if classify(&self.name).is_none() {
            return Err(format!("{:?} is not a WAL file name", self.name));
        }
        let suffix = format!(
            "{}{}",
            self.compression.suffix(),
            if self.encryption_recipients.is_empty() {
                ""
            } else {
                ".age"
            }
        );
        let nonce = self
            .object
            .strip_prefix(&format!("{}.", self.name))
            .and_then(|r| r.strip_suffix(&suffix));
        match nonce {
            Some(n) if n.len() == 8 && n.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
            _ => Err(format!(
                "object {:?} is not the name drctl writes for {}",
                self.object, self.name
            )),
        }
    }
}

/// A timeline's history: the switch points of its ancestors, oldest first
/// (`(parent timeline, where the child branched off)`).
pub fn parse_history(text: &str) -> Vec<(u32, Lsn)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = Lsn::parse(f.next()?)?;
            Some((tli, lsn))
        })
        .collect()
}

/// The timelines a recovery onto `target` walks, with the position each
/// begins at: `[(1, 0/0), (2, 0/3000160), ...]`, from `target`'s history
/// (empty for timeline 1).
pub fn timeline_path(target: u32, history: &[(u32, Lsn)]) -> Vec<(u32, Lsn)> {
    let mut path = Vec::new();
    let mut begin = Lsn(0);
    for (tli, end) in history {
        path.push((*tli, begin));
        begin = *end;
    }
    path.push((target, begin));
    path
}

/// The file names a recovery from `start` to the end of segment `last`
/// (a segment number) asks for along `path`: for each segment, the newest
/// timeline that had begun by then (as PostgreSQL picks them).
pub fn needed(start: Lsn, last: u64, path: &[(u32, Lsn)], segment_bytes: u64) -> Vec<String> {
    let first = start.segno(segment_bytes);
    (first..=last)
        .filter_map(|segno| {
            let tli = path
                .iter()
                .rev()
                .find(|(_, begin)| begin.segno(segment_bytes) <= segno)?
                .0;
            Some(Segment { tli, segno }.name(segment_bytes))
        })
        .collect()
}

/// The runs of `wanted` missing from `stored`, each as its first and last
/// name: a restore across one is refused naming it.
pub fn gaps(wanted: &[String], stored: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut open = false;
    for name in wanted {
        if stored(name) {
            open = false;
        } else if open {
            if let Some(last) = out.last_mut() {
                last.1.clone_from(name);
            }
        } else {
            out.push((name.clone(), name.clone()));
            open = true;
        }
    }
    out
}

/// `A` or `A..B`, for messages.
pub fn describe_gap((a, b): &(String, String)) -> String {
    if a == b {
        a.clone()
    } else {
        format!("{a}..{b}")
    }
}

/// Segments of one timeline stored, by number, with their records.
pub type Chain = BTreeMap<Segment, WalRecord>;

/// The segments between the oldest and the newest stored one of each
/// timeline that are missing (the continuity `verify` and the daemon check),
/// as gaps of names. A timeline's history says where it starts, so the
/// segments of its parent past the switch point are not expected.
pub fn chain_gaps(segments: &[Segment], segment_bytes: u64) -> Vec<(String, String)> {
    let mut by_tli: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for s in segments {
        by_tli.entry(s.tli).or_default().push(s.segno);
    }
    let mut out = Vec::new();
    for (tli, mut nos) in by_tli {
        nos.sort_unstable();
        nos.dedup();
        for w in nos.windows(2) {
            if w[1] > w[0] + 1 {
                let a = Segment {
                    tli,
                    segno: w[0] + 1,
                };
                let b = Segment {
                    tli,
                    segno: w[1] - 1,
                };
                out.push((a.name(segment_bytes), b.name(segment_bytes)));
            }
        }
    }
    out
}

/// The gaps a recovery from a base backup starting at `from` on timeline
/// `tli` would meet: missing runs between stored segments at or after it
/// (per timeline), and a missing run between `from` and the first segment
/// of `tli` stored after it.
pub fn continuity(
    segments: &[Segment],
    from: Lsn,
    tli: u32,
    segment_bytes: u64,
) -> Vec<(String, String)> {
    let first = from.segno(segment_bytes);
    let after: Vec<Segment> = segments
        .iter()
        .filter(|s| s.segno >= first)
        .copied()
        .collect();
    let mut out = Vec::new();
    if let Some(min) = after.iter().filter(|s| s.tli == tli).map(|s| s.segno).min() {
        if min > first {
            out.push((
                Segment { tli, segno: first }.name(segment_bytes),
                Segment {
                    tli,
                    segno: min - 1,
                }
                .name(segment_bytes),
            ));
        }
    }
    out.extend(chain_gaps(&after, segment_bytes));
    out
}

/// Which stored segment files retention may delete: those wholly before
/// `oldest_start`, the start of the oldest base backup kept (on any
/// timeline: a timeline's segments below that position belong to backups
/// already gone). History files are always kept (they are tiny, and a
/// restore onto a later timeline reads every one).
pub fn prunable(names: &[String], oldest_start: Lsn, segment_bytes: u64) -> Vec<String> {
    let keep_from = oldest_start.segno(segment_bytes);
    names
        .iter()
        .filter(|n| {
            let seg = match classify(n) {
                Some(WalName::Segment) => Segment::parse(n, segment_bytes),
                Some(WalName::Partial) => n
                    .strip_suffix(".partial")
                    .and_then(|s| Segment::parse(s, segment_bytes)),
                Some(WalName::BackupHistory) => {
                    Segment::parse(n.get(..24).unwrap_or(""), segment_bytes)
                }
                _ => None,
            };
            seg.is_some_and(|s| s.segno < keep_from)
        })
        .cloned()
        .collect()
}

/// Timelines that kept receiving WAL together after one branched off
/// the other (pure): a restored copy archiving into the job while the
/// primary still does, or two servers promoted from one. Read from the
/// listing alone (names and store times: no history file is decrypted):
/// a child timeline `C` begins at its lowest stored segment; its parent
/// is the highest lower timeline holding a segment at or before that;
/// they diverged when the parent stored a segment from the branch's on
/// (it holds WAL past the branch point) once the child's first file
/// (history or segment) was stored (the same second counts: stores list
/// times to the second, and a restore takes longer), and the child
/// holds a segment. A branch made by restoring to an earlier point leaves
/// the parent's later segments stored before the child existed: not
/// flagged. One line each, naming both timelines' newest segments.
pub fn diverged(
    segments: &[(Segment, DateTime<Utc>)],
    histories: &BTreeMap<u32, DateTime<Utc>>,
    segment_bytes: u64,
) -> Vec<String> {
    let mut tlis: Vec<u32> = segments.iter().map(|(s, _)| s.tli).collect();
    tlis.sort_unstable();
    tlis.dedup();
    let newest = |tli: u32| {
        segments
            .iter()
            .filter(|(s, _)| s.tli == tli)
            .max_by_key(|(s, _)| s.segno)
            .map(|(s, _)| s.name(segment_bytes))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for &child in &tlis {
        let own: Vec<&(Segment, DateTime<Utc>)> =
            segments.iter().filter(|(s, _)| s.tli == child).collect();
        let Some(first) = own.iter().map(|(s, _)| s.segno).min() else {
            continue;
        };
        let born = own
            .iter()
            .map(|(_, t)| *t)
            .chain(histories.get(&child).copied())
            .min();
        let parent = segments
            .iter()
            .filter(|(s, _)| s.tli < child && s.segno <= first)
            .map(|(s, _)| s.tli)
            .max();
        let (Some(parent), Some(born)) = (parent, born) else {
            continue;
        };
        if segments
            .iter()
            .any(|(s, t)| s.tli == parent && s.segno >= first && *t >= born)
        {
            out.push(format!(
                "timeline {parent} kept receiving WAL after timeline {child} branched off it (in segment {}): {parent}'s newest is {}, {child}'s newest is {}; two servers archive into this job",
                Segment { tli: parent, segno: first }.name(segment_bytes),
                newest(parent),
                newest(child)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = DEFAULT_SEGMENT_BYTES;

    #[test]
    fn lsns_and_segment_names_are_postgresqls() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        for bad in ["", "1", "/1", "1/", "x/1", "123456789/0"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
        let s = Segment {
            tli: 1,
            segno: l.segno(MB16),
        };
        assert_eq!(s.name(MB16), "0000000100000016000000B3");
        assert_eq!(Segment::parse("0000000100000016000000B3", MB16), Some(s));
        // 1 GiB segments: four per xlogid.
        assert_eq!(Segment::parse("000000010000000000000004", 1 << 30), None);
        assert_eq!(
            Segment { tli: 2, segno: 5 }.name(1 << 30),
            "000000020000000100000001"
        );
    }

    #[test]
    fn only_postgresql_wal_names_are_accepted() {
        assert_eq!(classify("000000010000000000000003"), Some(WalName::Segment));
        assert_eq!(
            classify("000000010000000000000003.partial"),
            Some(WalName::Partial)
        );
        assert_eq!(classify("0000000A.history"), Some(WalName::History(10)));
        assert_eq!(
            classify("000000010000000000000003.00000028.backup"),
            Some(WalName::BackupHistory)
        );
        for bad in [
            "../000000010000000000000003",
            "00000001000000000000003",
            "archive_status",
            "0000000G.history",
            "x.backup",
        ] {
            assert_eq!(classify(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_points_only_at_its_own_object() {
        let mut r = WalRecord {
            format: FORMAT,
            name: "000000010000000000000003".into(),
            object: "000000010000000000000003.0a1b2c3d.zst".into(),
            raw_bytes: 1,
            raw_sha256: "00".into(),
            stored_bytes: 1,
            sha256: "00".into(),
            compression: Compression::Zstd,
            encryption_recipients: vec![],
            host: "h".into(),
            stored_at: Utc::now(),
        };
        assert_eq!(r.check(), Ok(()));
        r.object = "000000010000000000000003.0a1b2c3d.zst.age".into();
        assert!(r.check().is_err());
        r.encryption_recipients = vec!["fp".into()];
        assert_eq!(r.check(), Ok(()));
        for bad in [
            "../../x",
            "000000010000000000000004.0a1b2c3d.zst.age",
            "000000010000000000000003.0a1b/../.zst.age",
        ] {
            r.object = bad.into();
            assert!(r.check().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_recovery_walks_the_timelines_as_postgresql_does() {
        let hist = parse_history("1\t0/3000160\tno recovery target specified\n\n");
        assert_eq!(hist, vec![(1, Lsn(0x3000160))]);
        let path = timeline_path(2, &hist);
        assert_eq!(path, vec![(1, Lsn(0)), (2, Lsn(0x3000160))]);
        // From segment 1 to 5: 1 and 2 on timeline 1, from 3 (the switch
        // point's segment) on timeline 2.
        let n = needed(Lsn(0x1000028), 5, &path, MB16);
        assert_eq!(
            n,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000020000000000000003",
                "000000020000000000000004",
                "000000020000000000000005",
            ]
        );
    }

    #[test]
    fn gaps_are_runs_of_missing_names() {
        let wanted: Vec<String> = (1..=8)
            .map(|i| Segment { tli: 1, segno: i }.name(MB16))
            .collect();
        let missing = [
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000007",
        ];
        let g = gaps(&wanted, &|n| !missing.contains(&n));
        assert_eq!(
            g.iter().map(describe_gap).collect::<Vec<_>>(),
            [
                "000000010000000000000003..000000010000000000000004",
                "000000010000000000000007"
            ]
        );
        let segs: Vec<Segment> = [1, 2, 5, 6, 9]
            .iter()
            .map(|&segno| Segment { tli: 1, segno })
            .chain([Segment { tli: 2, segno: 9 }, Segment { tli: 2, segno: 10 }])
            .collect();
        assert_eq!(
            chain_gaps(&segs, MB16),
            [
                (
                    "000000010000000000000003".to_string(),
                    "000000010000000000000004".to_string()
                ),
                (
                    "000000010000000000000007".to_string(),
                    "000000010000000000000008".to_string()
                ),
            ]
        );
    }

    #[test]
    fn continuity_starts_at_the_oldest_base_backup() {
        let segs: Vec<Segment> = [1, 2, 5, 6, 7, 9]
            .iter()
            .map(|&segno| Segment { tli: 1, segno })
            .collect();
        // Segments before the base backup's start do not matter.
        let g = continuity(&segs, Lsn(5 * MB16 + 0x28), 1, MB16);
        assert_eq!(
            g.iter().map(describe_gap).collect::<Vec<_>>(),
            ["000000010000000000000008"]
        );
        // Its own start segment missing is a gap too.
        let g = continuity(&segs, Lsn(4 * MB16 + 0x28), 1, MB16);
        assert_eq!(
            g.iter().map(describe_gap).collect::<Vec<_>>(),
            ["000000010000000000000004", "000000010000000000000008"]
        );
    }

    #[test]
    fn retention_drops_only_segments_wholly_below_the_oldest_kept_start() {
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000020000000000000004",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        // The oldest kept backup starts inside segment 3.
        let p = prunable(&names, Lsn(0x3000028), MB16);
        assert_eq!(
            p,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup"
            ]
        );
    }

    #[test]
    fn timelines_that_both_grow_after_a_branch_are_flagged_and_a_rewind_is_not() {
        let at = |m: i64| DateTime::from_timestamp(1_800_000_000 + m * 60, 0).unwrap();
        let seg = |tli: u32, segno: u64, m: i64| (Segment { tli, segno }, at(m));
        // A rewind: timeline 1 ran to segment 9, the restore branched in
        // segment 5 later, and only timeline 2 grew since.
        let rewind = vec![
            seg(1, 3, 0),
            seg(1, 4, 1),
            seg(1, 5, 2),
            seg(1, 9, 3),
            seg(2, 5, 10),
            seg(2, 6, 11),
        ];
        let h = BTreeMap::from([(2, at(9))]);
        assert!(diverged(&rewind, &h, MB16).is_empty());
        // A restored copy archiving while the primary goes on.
        let mut both = rewind.clone();
        both.push(seg(1, 10, 12));
        // The parent's segment holding the branch point, stored after the
        // child was born: the primary went on writing it.
        let mut same = vec![seg(1, 3, 0), seg(1, 4, 1), seg(2, 5, 10)];
        assert!(diverged(&same, &h, MB16).is_empty());
        same.push(seg(1, 5, 12));
        assert_eq!(diverged(&same, &h, MB16).len(), 1);
        let d = diverged(&both, &h, MB16);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].contains("timeline 1 kept receiving WAL after timeline 2"),
            "{d:?}"
        );
        assert!(d[0].contains("00000001000000000000000A"), "{d:?}");
        // The history alone stored, no segment of the child yet: not yet.
        let only_history = vec![seg(1, 3, 0), seg(1, 5, 2), seg(1, 9, 12)];
        assert!(diverged(&only_history, &h, MB16).is_empty());
    }
}
