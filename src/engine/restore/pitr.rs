//! Point-in-time recovery of a `postgres_physical` job into a data
//! directory: the newest base backup before the target, the archived WAL
//! from its start to the target, PostgreSQL's own recovery.
//!
//! Everything is decided before anything is written (`choose`, pure): the
//! base backup, the timeline path, the WAL files the recovery will ask for,
//! and whether each is stored; a target outside the archive or a gap in
//! the WAL refuses the restore naming what is missing. Then the base tar is
//! streamed into the empty data directory (hashed as it arrives, each entry
//! checked before it is written; on any failure the directory is emptied
//! again) while the WAL is fetched beside it into `DATADIR/drctl_wal/`
//! (verified, decrypted, several at once), and the server is started with `recovery.signal`, a
//! `restore_command` that copies from there, and the target; drctl waits
//! for the promotion (`pg_controldata`: in production), stops the server
//! cleanly and removes what it added. The directory is then an ordinary
//! cluster on a new timeline, ready for its service to start.

use crate::base::error::{Error, Result};
use crate::base::ids::JobName;
use crate::base::manifest::{Manifest, PhysicalTablespace};
use crate::base::wal::{self, Lsn, Segment, WalName};
use crate::config::LoadedConfig;
use crate::engine::wal as archive;
use crate::services::pg::server::{self, give_to_postgres, server_tool};
use crate::services::pg::PgTools;
use crate::services::repository::Repository;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    /// Transactions committed at or before this time.
    Time(DateTime<Utc>),
    /// This WAL position.
    Lsn(Lsn),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => f.write_str("the end of the archived WAL"),
            Target::Time(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            Target::Lsn(l) => write!(f, "LSN {l}"),
        }
    }
}

/// A point-in-time restore, as asked.
#[derive(Debug, Clone)]
pub struct PitrRequest {
    /// The job (optional with one physical job).
    pub job: Option<String>,
    /// Where recovery stops.
    pub target: Target,
    /// The data directory to create (missing or empty).
    pub datadir: PathBuf,
    /// Print the plan; touch nothing.
    pub dry_run: bool,
    /// age identity file for encrypted backups and WAL.
    pub identity: Option<PathBuf>,
    /// WAL files fetched at once.
    pub parallel: usize,
    /// `--tablespace-map NAME=DIR`: where a tablespace of the base backup
    /// goes (named by its name, OID or old location) instead of its old
    /// location.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// Put every tablespace the map does not name under this directory
    /// (`DIR/OID`): a drill's throwaway cluster never touches the host's
    /// own tablespace directories.
    pub tablespaces_under: Option<PathBuf>,
    /// `--timeline N`: recover along this timeline instead of the one the
    /// job's server archives now ([`pick_timeline`]).
    pub timeline: Option<u32>,
    /// `--repository`: read this repository (the job's own or one of its
    /// copies) instead of the job's own.
    pub repository: Option<String>,
    /// `--base ID`: start from this base backup (refused when it cannot
    /// reach the target) instead of the newest that can.
    pub base: Option<String>,
    /// `--keep-archiving`: leave the restored directory's archiving as the
    /// backed-up server had it. By default `archive_mode = 'off'` is
    /// written, so that a copy started as-is never archives a second
    /// timeline into the job.
    pub keep_archiving: bool,
}

/// Parse `--tablespace-map OLD=NEW` (pure).
pub fn parse_tablespace_mapping(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => {
            Ok((old.to_owned(), PathBuf::from(new)))
        }
        _ => Err(format!(
            "{s}: expected OLD=NEWDIR (OLD: the tablespace's name, OID or old location)"
        )),
    }
}

/// Where each tablespace of a base backup goes (pure): the directory a
/// `--tablespace-map` entry gives it (naming it by name, OID or old
/// location), else `under/OID` when a throwaway cluster is restored, else
/// its old location. Refused: a map entry that names no tablespace, a
/// tablespace with no known location and no entry, a relative or
/// unwritable path (`tablespace_map` holds one absolute path per line), and
/// two tablespaces in one directory.
pub fn place_tablespaces(
    spaces: &[PhysicalTablespace],
    map: &[(String, PathBuf)],
    under: Option<&Path>,
) -> std::result::Result<Vec<(PhysicalTablespace, PathBuf)>, String> {
    let names = || {
        spaces
            .iter()
            .map(|t| format!("{} (OID {}, at {})", t.name, t.oid, t.location))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let matches = |t: &PhysicalTablespace, key: &str| {
        key == t.name || key == t.oid.to_string() || (!t.location.is_empty() && key == t.location)
    };
    for (key, _) in map {
        if !spaces.iter().any(|t| matches(t, key)) {
            return Err(format!(
                "--tablespace-map {key}=...: the base backup has no tablespace of that name, OID or location ({})",
                if spaces.is_empty() { "it has none".to_owned() } else { format!("it has {}", names()) }
            ));
        }
    }
    let mut placed: Vec<(PhysicalTablespace, PathBuf)> = Vec::with_capacity(spaces.len());
    for t in spaces {
        let dir = match map.iter().rev().find(|(k, _)| matches(t, k)) {
            Some((_, d)) => d.clone(),
            None => match under {
                Some(u) => u.join(t.oid.to_string()),
                None if t.location.is_empty() => {
                    return Err(format!(
                    "tablespace {} (OID {}) has no recorded location: give --tablespace-map {}=DIR",
                    t.name, t.oid, t.oid
                ))
                }
                None => PathBuf::from(&t.location),
            },
        };
        let text = dir.to_string_lossy();
        if !dir.is_absolute() || text.contains(['\n', '\r', '\\']) {
            return Err(format!(
                "tablespace {}: {} is not an absolute path PostgreSQL's tablespace_map can hold",
                t.name,
                dir.display()
            ));
        }
        if let Some((other, _)) = placed.iter().find(|(_, d)| *d == dir) {
            return Err(format!(
                "tablespaces {} and {} would both go to {}: map one of them elsewhere",
                other.name,
                t.name,
                dir.display()
            ));
        }
        placed.push((t.clone(), dir));
    }
    Ok(placed)
}

/// PostgreSQL's `tablespace_map` for the placed tablespaces (pure): one
/// `OID PATH` line each; the server links `pg_tblspc/OID` to PATH when
/// it starts from the backup.
pub fn tablespace_map_file(placed: &[(PhysicalTablespace, PathBuf)]) -> String {
    placed
        .iter()
        .map(|(t, d)| format!("{} {}\n", t.oid, d.display()))
        .collect()
}

/// What a point-in-time restore will do (`--dry-run` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    /// The job.
    pub job: String,
    /// The repository read.
    pub repository: String,
    /// The base backup.
    pub backup_id: String,
    /// When it finished on the server's clock (the earliest time it can
    /// be recovered to).
    pub backup_finished_at: DateTime<Utc>,
    /// Where its replay starts.
    pub start_lsn: String,
    /// Its timeline.
    pub timeline: u32,
    /// The target, as text.
    pub target: String,
    /// The timeline recovery ends on.
    pub target_timeline: u32,
    /// WAL files to fetch (segments and histories).
    pub wal_files: usize,
    /// Their stored size.
    pub wal_stored_bytes: u64,
    /// The first and last segment.
    pub wal_range: Option<(String, String)>,
    /// The base backup's stored size.
    pub base_stored_bytes: u64,
    /// Where it goes.
    pub datadir: String,
    /// Where each tablespace goes: name, OID, old location, new directory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<PlacedTablespace>,
    /// The span the archive can restore to: the oldest base backup's end to
    /// the newest WAL stored.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The steps, in order.
    pub steps: Vec<String>,
    /// Bytes the restore processes: the base backup's raw size and the
    /// WAL files it replays.
    pub work_bytes: u64,
    /// How long it should take, from past drills of this job on this host.
    pub estimate: Option<Estimate>,
    /// Base backups left out because they are recorded as damaged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<String>,
}

/// A tablespace of the plan and the directory it is restored into.
#[derive(Debug, Clone, Serialize)]
pub struct PlacedTablespace {
    /// Its name.
    pub name: String,
    /// Its OID.
    pub oid: u32,
    /// Where it was.
    pub location: String,
    /// Where it goes.
    pub directory: String,
}

/// A restore's expected duration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Seconds, fetch to promotion.
    pub seconds: f64,
    /// The drills it was made from.
    pub drills: usize,
    /// Whose drills: `this host`, or the hosts that published theirs into
    /// the repository.
    pub from: String,
}

/// The expected duration of a restore of `work` bytes, from past restores
/// given as (seconds, bytes) (pure): the median of their seconds per byte,
/// times `work`. The median, so that one drill slowed by a busy host does
/// not move the estimate; none without a past restore that did any work.
pub fn estimate(past: &[(f64, u64)], work: u64) -> Option<Estimate> {
    let mut rates: Vec<f64> = past
        .iter()
        .filter(|(s, b)| *b > 0 && s.is_finite() && *s > 0.0)
        .map(|(s, b)| s / *b as f64)
        .collect();
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    let median = if n % 2 == 1 {
        rates[n / 2]
    } else {
        (rates[n / 2 - 1] + rates[n / 2]) / 2.0
    };
    Some(Estimate {
        seconds: median * work as f64,
        drills: n,
        from: "this host".into(),
    })
}

/// [`estimate`] from the newest drills of `job` recorded on this host
/// (their fetch and restore phases: what a restore does); none when the
/// state cannot be read (another user's, or a fresh host): a dry run never
/// fails for want of an estimate.
async fn estimate_from_drills(cfg: &LoadedConfig, job: &str, work: u64) -> Option<Estimate> {
    let state = crate::services::state::State::open(&cfg.config.state_dir)
        .await
        .map_err(|e| tracing::debug!(error = %e, "no restore estimate: cannot read the state"))
        .ok()?;
    let runs = crate::engine::drill::restored_for_job(&state, job, 5)
        .await
        .map_err(|e| tracing::debug!(error = %e, "no restore estimate: cannot read past drills"))
        .ok()?;
    let past: Vec<(f64, u64)> = runs
        .iter()
        .filter_map(|r| {
            let seconds = r.phase("fetch")? + r.phase("restore")?;
            Some((seconds, r.work_bytes?))
        })
        .collect();
    estimate(&past, work)
}

/// How a point-in-time restore went.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    /// What was planned.
    pub plan: PitrPlan,
    /// PostgreSQL's own words on where recovery stopped.
    pub recovery: Vec<String>,
    /// Recovery stopped at the target (false: the archive ended before
    /// its first record past the target, so the end of the archive, which
    /// is the state at the target as far as the archive knows, was restored).
    pub reached_target: bool,
    /// The timeline the restored cluster is on.
    pub timeline: Option<u32>,
    /// `archive_mode = 'off'` was written into the restored directory
    /// (false with `--keep-archiving`).
    pub archiving_off: bool,
    /// Seconds fetching and extracting the base backup.
    pub base_seconds: f64,
    /// Seconds fetching WAL.
    pub wal_seconds: f64,
    /// Seconds of PostgreSQL's recovery until promoted.
    pub recovery_seconds: f64,
    /// The whole restore.
    pub total_seconds: f64,
    /// Damaged base backups passed over, each with what was used instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// A base backup that can serve as the start of a recovery.
#[derive(Debug, Clone)]
pub struct Base {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its physical facts.
    pub physical: crate::base::manifest::PhysicalSource,
}

/// The pure choice: base backup, timeline path, WAL names needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Index into the bases given.
    pub base: usize,
    /// The timeline recovery ends on.
    pub target_timeline: u32,
    /// WAL segment file names, in replay order.
    pub segments: Vec<String>,
    /// For a time target: the stored segments after those, up to the first
    /// missing one. A segment's store time bounds its records from above
    /// only (archiving can lag), so the first record past the target may
    /// lie further on: when recovery ends before the target, these are
    /// fetched a few at a time and recovery resumes.
    pub more: Vec<String>,
}

/// Stored segment facts the choice reads: name → store time.
pub type Stored<'a> = &'a std::collections::BTreeMap<String, DateTime<Utc>>;

/// The timeline a recovery ends on when none is asked for (pure): of the
/// timelines some stored base backup lies on the history of, the one whose
/// own files (segments and history) were stored last (on a tie, the newest
/// base backup's, then the higher).
/// That is the timeline the job's server is archiving now: a copy restored
/// from the job that archived a few files into it and stopped, or still
/// runs beside the primary, is not followed (PostgreSQL's `latest` would
/// follow the highest number). Timeline 1 when nothing is stored.
pub fn pick_timeline(
    bases: &[Base],
    stored: Stored<'_>,
    histories: &std::collections::BTreeMap<u32, Vec<(u32, Lsn)>>,
    bytes: u64,
) -> u32 {
    let mut last: std::collections::BTreeMap<u32, DateTime<Utc>> = Default::default();
    for (n, t) in stored {
        let tli = match wal::classify(n) {
            Some(WalName::History(tli)) => tli,
            Some(WalName::Segment) => match Segment::parse(n, bytes) {
                Some(s) => s.tli,
                None => continue,
            },
            Some(WalName::Partial) => match n
                .strip_suffix(".partial")
                .and_then(|n| Segment::parse(n, bytes))
            {
                Some(s) => s.tli,
                None => continue,
            },
            _ => continue,
        };
        let e = last.entry(tli).or_insert(*t);
        *e = (*e).max(*t);
    }
    for b in bases {
        last.entry(b.physical.timeline)
            .or_insert(DateTime::<Utc>::MIN_UTC);
    }
    last.into_iter()
        .filter(|(tli, _)| {
            let path = path_of(*tli, histories);
            bases
                .iter()
                .any(|b| lies_on(&path, b.physical.timeline, b.physical.stop_lsn))
        })
        // Stores list times to the second: on a tie, the timeline the
        // newest base backup (taken from the job's server) is on.
        .max_by_key(|(tli, t)| {
            (
                *t,
                bases.last().map(|b| b.physical.timeline) == Some(*tli),
                *tli,
            )
        })
        .map_or(1, |(tli, _)| tli)
}

/// The timelines a recovery onto `tli` walks, from its stored history.
fn path_of(
    tli: u32,
    histories: &std::collections::BTreeMap<u32, Vec<(u32, Lsn)>>,
) -> Vec<(u32, Lsn)> {
    wal::timeline_path(tli, histories.get(&tli).map_or(&[][..], Vec::as_slice))
}

/// Whether a base backup on timeline `tli`, consistent at `stop`, can
/// start a recovery along `path`: its timeline is on it, and it became
/// consistent before the path left that timeline.
fn lies_on(path: &[(u32, Lsn)], tli: u32, stop: Lsn) -> bool {
    path.iter()
        .enumerate()
        .any(|(i, (t, _))| *t == tli && path.get(i + 1).is_none_or(|(_, next)| stop <= *next))
}

/// `--timeline N` if the archive holds it, else [`pick_timeline`]'s.
fn timeline_asked(
    bases: &[Base],
    stored: Stored<'_>,
    histories: &std::collections::BTreeMap<u32, Vec<(u32, Lsn)>>,
    timeline: Option<u32>,
    bytes: u64,
) -> std::result::Result<u32, String> {
    Ok(match timeline {
        Some(n) => {
            let known = histories.contains_key(&n)
                || bases.iter().any(|b| b.physical.timeline == n)
                || stored.keys().any(|f| {
                    wal::classify(f) == Some(WalName::Segment)
                        && Segment::parse(f, bytes).is_some_and(|s| s.tli == n)
                });
            if !known {
                let mut all: Vec<u32> = histories.keys().copied().collect();
                all.extend(bases.iter().map(|b| b.physical.timeline));
                all.sort_unstable();
                all.dedup();
                return Err(format!(
                    "timeline {n} is not in the archive (no history file, segment or base backup of it); the archive holds timeline(s) {}",
                    all.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ));
            }
            n
        }
        None => pick_timeline(bases, stored, histories, bytes),
    })
}

/// Of the `usable` base backups (indices, oldest first, at least one),
/// the newest that ended before `target`.
fn base_for(
    bases: &[Base],
    usable: &[usize],
    target: Target,
) -> std::result::Result<usize, String> {
    let first = usable.first().copied().unwrap_or(0);
    Ok(match target {
        Target::Latest => *usable.last().unwrap_or(&first),
        Target::Time(t) => usable
            .iter()
            .rev()
            .copied()
            .find(|&i| bases[i].physical.consistent_at(bases[i].manifest.finished_at) <= t)
            .ok_or_else(|| {
                let b = &bases[first];
                format!(
                    "{} is before the oldest base backup's end ({} on the server's clock, backup {}): nothing can be restored to it",
                    Target::Time(t),
                    b.physical
                        .consistent_at(b.manifest.finished_at)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    b.manifest.id
                )
            })?,
        Target::Lsn(l) => usable
            .iter()
            .rev()
            .copied()
            .find(|&i| bases[i].physical.stop_lsn <= l)
            .ok_or_else(|| {
                let b = &bases[first];
                format!(
                    "LSN {l} is before the oldest base backup's end ({}, backup {})",
                    b.physical.stop_lsn, b.manifest.id
                )
            })?,
    })
}

/// Choose the base backup and the WAL a recovery to `target` needs, or say
/// why it cannot be done (pure: bases sorted oldest first, the stored
/// files with their store times, the timeline histories read; `timeline`:
/// the one asked for, else [`pick_timeline`]'s). Only base backups on the
/// chosen timeline's history count: one taken on another branch cannot
/// reach it.
pub fn choose(
    bases: &[Base],
    stored: Stored<'_>,
    histories: &std::collections::BTreeMap<u32, Vec<(u32, Lsn)>>,
    target: Target,
    timeline: Option<u32>,
) -> std::result::Result<Choice, String> {
    let Some(newest) = bases.last() else {
        return Err("no base backup of this job is stored (run the job first)".into());
    };
    let bytes = newest.physical.wal_segment_bytes;
    let target_timeline = timeline_asked(bases, stored, histories, timeline, bytes)?;
    let full_path = path_of(target_timeline, histories);
    let usable: Vec<usize> = (0..bases.len())
        .filter(|&i| {
            lies_on(
                &full_path,
                bases[i].physical.timeline,
                bases[i].physical.stop_lsn,
            )
        })
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "no stored base backup lies on timeline {target_timeline}'s history (the base backups are on timeline(s) {}): take one on it, or choose another with --timeline",
            bases.iter().map(|b| b.physical.timeline.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let idx = base_for(bases, &usable, target)?;
    let base = &bases[idx];
    let p = &base.physical;
    let path: Vec<(u32, Lsn)> = full_path
        .into_iter()
        .filter(|(t, _)| *t >= p.timeline)
        .collect();
    // The newest segment on the path that is stored (a .partial counts).
    let on_path = |s: &Segment| {
        path.iter()
            .rev()
            .find(|(_, begin)| begin.segno(bytes) <= s.segno)
            .is_some_and(|(t, _)| *t == s.tli)
    };
    let mut stored_segs: Vec<(Segment, DateTime<Utc>)> = stored
        .iter()
        .filter_map(|(n, t)| {
            let seg = match wal::classify(n)? {
                WalName::Segment => Segment::parse(n, bytes)?,
                WalName::Partial => Segment::parse(n.strip_suffix(".partial")?, bytes)?,
                _ => return None,
            };
            Some((seg, *t))
        })
        .filter(|(s, _)| on_path(s) && s.segno >= p.start_lsn.segno(bytes))
        .collect();
    stored_segs.sort_by_key(|(s, _)| s.segno);
    if stored_segs.is_empty() {
        return Err(format!(
            "no WAL is stored from the base backup {} on (is archive_command running `drctl wal push`?)",
            base.manifest.id
        ));
    }
    let last = last_segment(target, &stored_segs, bytes)?;
    let last = last.max(p.stop_lsn.segno(bytes));
    let segments = wal::needed(p.start_lsn, last, &path, bytes);
    let has = |n: &str| stored.contains_key(n) || stored.contains_key(&format!("{n}.partial"));
    let gaps = wal::gaps(&segments, &has);
    if !gaps.is_empty() {
        return Err(format!(
            "WAL gap: {} missing from the repository; a recovery from backup {} to {} needs {} (restore to an earlier point, or from a newer base backup)",
            gaps.iter().map(wal::describe_gap).collect::<Vec<_>>().join(", "),
            base.manifest.id,
            target,
            if gaps.len() == 1 { "it" } else { "them" }
        ));
    }
    let more = match target {
        Target::Time(_) => stored_segs
            .last()
            .map(|(s, _)| wal::needed(p.start_lsn, s.segno, &path, bytes))
            .unwrap_or_default()
            .into_iter()
            .skip(segments.len())
            .take_while(|n| has(n))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Choice {
        base: idx,
        target_timeline,
        segments,
        more,
    })
}

/// The last segment a recovery to `target` replays, from the stored
/// segments on its path (sorted, with their store times), or why the
/// target is past the archive.
fn last_segment(
    target: Target,
    stored_segs: &[(Segment, DateTime<Utc>)],
    bytes: u64,
) -> std::result::Result<u64, String> {
    let Some((last_stored, newest_time)) = stored_segs.last().copied() else {
        return Err("no WAL is stored".into());
    };
    Ok(match target {
        Target::Latest => last_stored.segno,
        Target::Lsn(l) => {
            if l.segno(bytes) > last_stored.segno {
                return Err(format!(
                    "LSN {l} is past the end of the archived WAL (the newest segment stored is {})",
                    last_stored.name(bytes)
                ));
            }
            l.segno(bytes)
        }
        Target::Time(t) => {
            if t > newest_time {
                return Err(format!(
                    "{} is after the end of the archived WAL (the newest file was stored at {}): restore --latest, or wait for the next segment",
                    Target::Time(t),
                    newest_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            // The first segment stored at or after the target holds the
            // first record past it (or the target lies in it).
            stored_segs
                .iter()
                .find(|(_, at)| *at >= t)
                .map_or(last_stored.segno, |(s, _)| s.segno)
        }
    })
}

/// Everything a restore reads from the repository, once.
struct Gathered {
    job: JobName,
    repo: Repository,
    repo_name: String,
    bases: Vec<Base>,
    archive: archive::Archive,
    histories: std::collections::BTreeMap<u32, Vec<(u32, Lsn)>>,
    /// Base backups left out because they are recorded as damaged.
    passed_over: Vec<String>,
}

async fn gather(cfg: &LoadedConfig, req: &PitrRequest) -> Result<Gathered> {
    let (job, jc, _) = archive::physical_job(cfg, req.job.as_deref())?;
    let repo_name = match &req.repository {
        Some(r) if jc.repositories().contains(&r.as_str()) => r.clone(),
        Some(r) => {
            return Err(Error::Refused(format!(
                "repository {r} is not one of job {job}'s (its repository and copies: {})",
                jc.repositories().join(", ")
            )))
        }
        None => jc.backup_repository(job.as_str())?.to_owned(),
    };
    let repo = Repository::open(&repo_name, cfg.repository(&repo_name)?).await?;
    let mut bases = Vec::new();
    for b in repo.list_backups(&job).await? {
        match repo.read_manifest(&job, &b.id).await {
            Ok(m) => {
                if let Some(p) = m.physical.clone() {
                    bases.push(Base {
                        manifest: m,
                        physical: p,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(backup = %b.id, error = %e, "skipping a base backup whose manifest does not read");
            }
        }
    }
    // By position, then the server's clock: never by the backing-up host's
    // clock, which may be off by any amount.
    bases.sort_by_key(|b| {
        (
            b.physical.stop_lsn,
            b.physical.consistent_at(b.manifest.finished_at),
        )
    });
    let mut passed_over = Vec::new();
    if req.base.is_none() {
        passed_over = without_damaged(cfg, &repo_name, &job, &mut bases).await;
    }
    if let Some(id) = &req.base {
        bases.retain(|b| b.manifest.id.as_str() == id);
        if bases.is_empty() {
            return Err(Error::Refused(format!(
                "--base {id}: no such base backup of job {job} in repository {repo_name} (`drctl backups {job}` lists them)"
            )));
        }
    }
    let archive = archive::list(&repo, &job).await?;
    let mut histories = std::collections::BTreeMap::new();
    let keys_cfg = jc;
    for name in archive.files.keys() {
        if let Some(WalName::History(tli)) = wal::classify(name) {
            let text =
                read_small(cfg, keys_cfg, &repo, &job, name, req.identity.as_deref()).await?;
            histories.insert(tli, wal::parse_history(&text));
        }
    }
    Ok(Gathered {
        job,
        repo,
        repo_name,
        bases,
        archive,
        histories,
        passed_over,
    })
}

/// Drop the base backups a verification, drill or earlier restore found
/// damaged (the state's verdicts; `--base` still picks one), saying which.
async fn without_damaged(
    cfg: &LoadedConfig,
    repo_name: &str,
    job: &JobName,
    bases: &mut Vec<Base>,
) -> Vec<String> {
    let Ok(state) = crate::services::state::State::open(&cfg.config.state_dir).await else {
        return Vec::new();
    };
    let Ok(verdicts) = state.verdicts(repo_name, job.as_str()).await else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    bases.retain(|b| {
        let bad = verdicts
            .get(b.manifest.id.as_str())
            .is_some_and(|v| v.damaged);
        if bad {
            notes.push(format!(
                "base backup {} is recorded as damaged (a verification or restore failed on it): passed over (--base {} tries it anyway)",
                b.manifest.id, b.manifest.id
            ));
        }
        !bad
    });
    notes
}

/// A small stored WAL file (a timeline history) as text.
async fn read_small(
    cfg: &LoadedConfig,
    jc: &crate::config::JobConfig,
    repo: &Repository,
    job: &JobName,
    name: &str,
    identity: Option<&Path>,
) -> Result<String> {
    let rec = archive::read_record(repo, job, name).await?;
    let keys = crate::services::keys::for_recipients(
        cfg,
        jc,
        &format!("WAL file {name}"),
        rec.encryption_recipients
            .iter()
            .map(String::as_str)
            .collect(),
        identity,
    )?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let dest = dir.path().join(name);
    archive::fetch(repo, job, &rec, &dest, &keys).await?;
    std::fs::read_to_string(&dest).map_err(|e| Error::io(format!("reading {name}"), e))
}

/// The committed files a recovery can fetch, with their store times: a
/// record whose object is missing from the listing does not count (a
/// restore would fail on it halfway, and a dry run must say so first).
fn stored_times(a: &archive::Archive) -> std::collections::BTreeMap<String, DateTime<Utc>> {
    a.files
        .iter()
        .filter(|(n, _)| a.stored.contains_key(*n))
        .filter_map(|(n, o)| Some((n.clone(), o.modified?)))
        .collect()
}

/// A refusal, naming the files whose record is stored but whose object is
/// not: the likely cause of a gap, and what to look for in the bucket.
fn with_missing_objects(why: String, a: &archive::Archive) -> String {
    let missing: Vec<&str> = a
        .files
        .keys()
        .filter(|n| !a.stored.contains_key(*n))
        .map(String::as_str)
        .collect();
    match missing.as_slice() {
        [] => why,
        [one] => format!("{why}; {one} has its record but no object in the repository"),
        many => format!(
            "{why}; {} files have their record but no object in the repository ({} .. {})",
            many.len(),
            many[0],
            many[many.len() - 1]
        ),
    }
}

/// Plan a point-in-time restore (what `--dry-run` prints), or refuse it.
pub async fn plan(cfg: &LoadedConfig, req: &PitrRequest) -> Result<PitrPlan> {
    let g = gather(cfg, req).await?;
    let (mut p, _) = make_plan(&g, req)?;
    // What the restore itself would refuse, a dry run refuses too.
    check_datadir(&req.datadir)?;
    for t in &p.tablespaces {
        check_tablespace_dir(t)?;
    }
    p.estimate = estimate_from_drills(cfg, g.job.as_str(), p.work_bytes).await;
    Ok(p)
}

fn make_plan(g: &Gathered, req: &PitrRequest) -> Result<(PitrPlan, Choice)> {
    let times = stored_times(&g.archive);
    let c = choose(&g.bases, &times, &g.histories, req.target, req.timeline).map_err(|e| {
        if g.bases.is_empty() && !g.passed_over.is_empty() {
            return Error::Refused(format!(
                "every base backup of job {} is recorded as damaged: {}; `drctl verify --job {}` checks them again (a passing check clears the mark)",
                g.job,
                g.passed_over.join("; "),
                g.job
            ));
        }
        let mut why = with_missing_objects(e, &g.archive);
        for n in &g.passed_over {
            why.push_str("; ");
            why.push_str(n);
        }
        Error::Refused(why)
    })?;
    let base = &g.bases[c.base];
    let wal_stored_bytes = c
        .segments
        .iter()
        .map(|n| g.archive.stored_bytes(&stored_name(&g.archive, n)))
        .sum();
    let window = match (g.bases.first(), g.archive.newest()) {
        (Some(b), Some(w)) => Some((b.physical.consistent_at(b.manifest.finished_at), w)),
        _ => None,
    };
    let target_text = req.target.to_string();
    let dd = req.datadir.display().to_string();
    let placed = place_tablespaces(
        &base.physical.tablespaces,
        &req.tablespace_map,
        req.tablespaces_under.as_deref(),
    )
    .map_err(Error::Refused)?;
    let mut steps = vec![format!(
        "fetch base backup {} (verified) and extract it into {dd}",
        base.manifest.id
    )];
    steps.extend(placed.iter().map(|(t, d)| {
        format!(
            "extract tablespace {} (OID {}, was {}) into {}",
            t.name,
            t.oid,
            t.location,
            d.display()
        )
    }));
    steps.extend([
        format!("fetch {} WAL files (verified) into {dd}/drctl_wal", c.segments.len()),
        format!("start PostgreSQL in recovery to {target_text} on timeline {}, promote", c.target_timeline),
        "stop it cleanly and remove drctl's recovery settings: the directory is ready for its service".into(),
    ]);
    let plan = PitrPlan {
        job: g.job.to_string(),
        repository: format!("{} ({})", g.repo_name, g.repo.location()),
        backup_id: base.manifest.id.to_string(),
        backup_finished_at: base.physical.consistent_at(base.manifest.finished_at),
        start_lsn: base.physical.start_lsn.to_string(),
        timeline: base.physical.timeline,
        target: target_text.clone(),
        target_timeline: c.target_timeline,
        wal_files: c.segments.len(),
        wal_stored_bytes,
        wal_range: c
            .segments
            .first()
            .zip(c.segments.last())
            .map(|(a, b)| (a.clone(), b.clone())),
        base_stored_bytes: base.manifest.stored_bytes(),
        datadir: dd.clone(),
        tablespaces: placed
            .iter()
            .map(|(t, d)| PlacedTablespace {
                name: t.name.clone(),
                oid: t.oid,
                location: t.location.clone(),
                directory: d.display().to_string(),
            })
            .collect(),
        window,
        steps,
        work_bytes: base.manifest.raw_bytes()
            + c.segments.len() as u64 * base.physical.wal_segment_bytes,
        estimate: None,
        passed_over: g.passed_over.clone(),
    };
    Ok((plan, c))
}

/// Refuse a data directory that holds anything (a restore never writes
/// over a cluster).
fn check_datadir(dir: &Path) -> Result<()> {
    check_empty(dir, || {
        format!(
            "{} is not empty: a point-in-time restore writes only into a new or empty data directory",
            dir.display()
        )
    })
}

/// Refuse a tablespace directory that holds anything: on the backed-up
/// host it is the live cluster's own.
fn check_tablespace_dir(t: &PlacedTablespace) -> Result<()> {
    check_empty(Path::new(&t.directory), || {
        format!(
            "tablespace {}'s directory {} is not empty (on the host the backup is of, it is the running cluster's): give --tablespace-map {}=NEWDIR",
            t.name, t.directory, t.name
        )
    })
}

fn check_empty(dir: &Path, why: impl Fn() -> String) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(Error::Refused(why()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("reading {}", dir.display()), e)),
    }
}

/// The block drctl appends to `postgresql.auto.conf` for the recovery,
/// removed again once the server is promoted.
const BEGIN: &str = "# drctl point-in-time restore: begin (removed after promotion)";
const END: &str = "# drctl point-in-time restore: end";

/// The recovery settings for `target` on `timeline` (pure). The timeline
/// is always a number: `latest` would follow whichever timeline has the
/// highest number in the archive, a restored copy's as readily as the
/// primary's.
pub fn recovery_settings(target: Target, with_target: bool, timeline: u32) -> String {
    let mut s = format!(
        "{BEGIN}\nrestore_command = 'cp \"drctl_wal/%f\" \"%p\"'\nrecovery_target_timeline = '{timeline}'\narchive_mode = 'off'\n"
    );
    if with_target {
        match target {
            Target::Latest => {}
            Target::Time(t) => {
                s.push_str(&format!(
                    "recovery_target_time = '{}'\nrecovery_target_action = 'promote'\n",
                    t.format("%Y-%m-%d %H:%M:%S%.6f+00")
                ));
            }
            Target::Lsn(l) => {
                s.push_str(&format!(
                    "recovery_target_lsn = '{l}'\nrecovery_target_action = 'promote'\n"
                ));
            }
        }
    }
    s.push_str(END);
    s.push('\n');
    s
}

/// What a restored directory keeps in `postgresql.auto.conf` unless
/// `--keep-archiving` is given (pure): its `postgresql.conf` still names
/// the job in `archive_command`, and a copy started as-is would archive a
/// second timeline into the backed-up server's archive. Settings given
/// with `-c` or `ALTER SYSTEM` later override it; removing the lines
/// makes the copy archive as the original did (how to promote a copy to
/// be the primary is in the README).
pub fn archiving_off(job: &str) -> String {
    format!(
        "# drctl restore: this copy does not archive into job {job} (it would mix a second timeline into the primary's archive).\n# To make it the new primary, delete these lines (or run ALTER SYSTEM RESET archive_mode) and restart it.\narchive_mode = 'off'\n"
    )
}

/// `text` without drctl's block (pure).
pub fn without_block(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for l in text.lines() {
        if l == BEGIN {
            inside = true;
            continue;
        }
        if l == END {
            inside = false;
            continue;
        }
        if !inside {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Restore the job's cluster to `req.target` into `req.datadir`.
///
/// Journaled (`origin`: an operator's restore or a drill's) like a
/// logical restore; restores killed earlier are settled first.
pub async fn run(
    cfg: &LoadedConfig,
    state: &crate::services::state::State,
    req: &PitrRequest,
    origin: super::journal::Origin,
) -> Result<PitrReport> {
    let t0 = std::time::Instant::now();
    for note in super::journal::recover(cfg, state).await {
        tracing::warn!("{note}");
    }
    check_datadir(&req.datadir)?;
    let mut g = gather(cfg, req).await?;
    let (mut plan, mut choice) = make_plan(&g, req)?;
    for t in &plan.tablespaces {
        check_tablespace_dir(t)?;
    }
    // One restore per directory on this host, and a journal entry before
    // anything is written: a restore killed anywhere is found by the next
    // `drctl restore`, `status` or daemon start, its server stopped and
    // its directories emptied ([`abandon`]).
    let target = req.datadir.display().to_string();
    let _lock = lock_target(cfg, &target)?;
    let journal = super::journal::Journal::begin(
        state,
        &super::journal::Start {
            job: g.job.as_str(),
            backup_id: &plan.backup_id,
            repository: &g.repo_name,
            target: &target,
            lease: None,
            action: super::journal::Action::Restore,
            origin,
        },
    )
    .await?;
    // An operator's restore is announced (an incident's channel hears it
    // start and end); a drill's is not.
    let alerter = crate::services::alerts::Alerter::new(cfg, state);
    let what = format!("point-in-time restore of {} to {}", g.job, plan.target);
    let announced = origin == super::journal::Origin::Operator;
    if announced {
        super::announce(
            &alerter,
            &g.job,
            "restore_started",
            format!(
                "{what} started into {target} (base backup {})",
                plan.backup_id
            ),
        )
        .await;
    }
    let mut spaces: Vec<PathBuf> = Vec::new();
    let mut fallbacks = Vec::new();
    let result = loop {
        spaces.extend(
            plan.tablespaces
                .iter()
                .map(|t| PathBuf::from(&t.directory))
                .filter(|d| !spaces.contains(d))
                .collect::<Vec<_>>(),
        );
        journal.directories(&req.datadir, &spaces).await?;
        journal.step(super::journal::Step::Restoring).await?;
        match attempt(cfg, &g, req, &plan, &choice, &journal).await {
            Ok(Outcome::Restored(r)) => break Ok(*r),
            Ok(Outcome::BaseDamaged(e)) => {
                match fall_back(cfg, &mut g, req, &plan, &choice, &e).await {
                    Ok((p, c, note)) => {
                        fallbacks.push(note);
                        (plan, choice) = (p, c);
                    }
                    Err(e) => break Err(e),
                }
            }
            Err(e) => break Err(e),
        }
    };
    if announced {
        let (kind, summary) = ended(&what, &target, &result, t0.elapsed().as_secs_f64());
        super::announce(&alerter, &g.job, kind, summary).await;
    }
    match result {
        Ok(mut report) => {
            report.total_seconds = t0.elapsed().as_secs_f64();
            report.fallbacks = fallbacks;
            let phases = [
                super::journal::Phase::new(
                    "fetch",
                    report.base_seconds.max(report.wal_seconds),
                    true,
                ),
                super::journal::Phase::new("recovery", report.recovery_seconds, true),
            ];
            if let Err(e) = journal.record(&phases, report.total_seconds, None).await {
                tracing::warn!(error = %e, "cannot record the restore's phases");
            }
            journal.step(super::journal::Step::Done).await?;
            Ok(report)
        }
        Err(e) => {
            clean_after(cfg, state, journal.id, &e, &req.datadir, &spaces).await;
            Err(e)
        }
    }
}

/// The plan's base backup is damaged (`e`): record it and raise
/// `backup_damaged`, then plan again without it; the new plan and the
/// note that says so, or the restore's final error.
async fn fall_back(
    cfg: &LoadedConfig,
    g: &mut Gathered,
    req: &PitrRequest,
    plan: &PitrPlan,
    choice: &Choice,
    e: &Error,
) -> Result<(PitrPlan, Choice, String)> {
    let id = g.bases[choice.base].manifest.id.clone();
    let why = crate::base::secret::redact(&e.to_string());
    g.bases.remove(choice.base);
    let next = match &req.base {
        Some(_) => Err("--base names it, so there is no fallback".to_owned()),
        None => make_plan(g, req)
            .map_err(|e| e.to_string())
            .and_then(|(p, c)| {
                match p
                    .tablespaces
                    .iter()
                    .find_map(|t| check_tablespace_dir(t).err())
                {
                    Some(e) => Err(e.to_string()),
                    None => Ok((p, c)),
                }
            }),
    };
    let instead = match &next {
        Ok((p, _)) => format!(
            "The point-in-time restore fell back to the older base backup {}.",
            p.backup_id
        ),
        Err(_) => "No other base backup could reach the target; the restore failed.".to_owned(),
    };
    super::damaged(cfg, &g.job, &g.repo_name, &id, &why, &instead).await;
    match next {
        Ok((p, c)) => {
            let note = format!(
                "base backup {id} could not be read ({why}); restored from the older base backup {} and its WAL instead",
                p.backup_id
            );
            tracing::warn!(job = %g.job, "{note}");
            Ok((p, c, note))
        }
        Err(n) => Err(Error::Integrity {
            artifact: format!("base backup {id}"),
            message: format!("{why}; no fallback to {}: {n}", plan.target),
        }),
    }
}

/// The host lock that keeps a second restore out of `target`.
fn lock_target(cfg: &LoadedConfig, target: &str) -> Result<crate::services::lock::HostLock> {
    crate::services::lock::HostLock::try_acquire_keyed(&cfg.config.state_dir, ".restore", target)?
        .map_err(|_| {
            Error::Refused(format!(
                "another restore into {target} is running on this host"
            ))
        })
}

/// How one attempt at a base backup ended.
enum Outcome {
    /// The cluster is restored.
    Restored(Box<PitrReport>),
    /// The base backup's objects are damaged or missing (its directories
    /// were emptied again): an older one may still reach the target.
    BaseDamaged(Error),
}

/// Restore from the plan's base backup, held under a lease while it is read.
async fn attempt(
    cfg: &LoadedConfig,
    g: &Gathered,
    req: &PitrRequest,
    plan: &PitrPlan,
    choice: &Choice,
    journal: &super::journal::Journal,
) -> Result<Outcome> {
    let (_, jc, job) = archive::physical_job(cfg, req.job.as_deref())?;
    let base = &g.bases[choice.base];
    let tools = PgTools::locate(job.pg_bindir.as_deref());
    same_major(&tools, base).await?;
    let keys =
        crate::services::keys::for_manifest(cfg, jc, &base.manifest, req.identity.as_deref())?;
    let lease = g
        .repo
        .lease(&g.job, &base.manifest.id, "point-in-time restore")
        .await?;
    journal
        .rebase(base.manifest.id.as_str(), &lease.key)
        .await?;
    let result = restore_into(cfg, g, req, plan, choice, base, &tools, &keys).await;
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "cannot remove the restore's lease; it expires by itself");
    }
    result
}

/// Refuse a base backup of another major version than this host's server.
async fn same_major(tools: &PgTools, base: &Base) -> Result<()> {
    let version = tools.version("postgres").await?;
    if i64::from(version.major) != i64::from(base.physical.server_version_num / 10000) {
        return Err(Error::Refused(format!(
            "the base backup is of PostgreSQL {} and this host's server is {} ({}): a physical backup restores only into the same major version (set pg_bindir)",
            base.physical.server_version,
            version.major,
            tools.path("postgres").display()
        )));
    }
    Ok(())
}

/// The notice that ends an operator's restore: its kind and summary.
fn ended(
    what: &str,
    target: &str,
    result: &Result<PitrReport>,
    seconds: f64,
) -> (&'static str, String) {
    match result {
        Ok(_) => (
            "restore_finished",
            format!("{what} finished into {target} in {seconds:.1}s"),
        ),
        Err(e) => (
            "restore_failed",
            format!(
                "{what} failed: {}",
                crate::base::secret::redact(&e.to_string())
            ),
        ),
    }
}

/// Nothing of a failed restore's half-done cluster stays: its server is
/// stopped (a child of this process) and the directories, empty when it
/// began, are emptied again; the journal says why.
async fn clean_after(
    cfg: &LoadedConfig,
    state: &crate::services::state::State,
    journal_id: i64,
    e: &Error,
    datadir: &Path,
    spaces: &[PathBuf],
) {
    let why = crate::base::secret::redact(&e.to_string());
    match super::journal::entry(state, journal_id).await {
        Ok(entry) => {
            if let Err(err) = super::journal::settle(cfg, state, &entry, Some(&why)).await {
                tracing::error!(error = %err, "cleaning up after the failed restore; `drctl status` retries");
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "reading the restore's journal");
            abandon(datadir, spaces).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn restore_into(
    cfg: &LoadedConfig,
    g: &Gathered,
    req: &PitrRequest,
    plan: &PitrPlan,
    choice: &Choice,
    base: &Base,
    tools: &PgTools,
    keys: &crate::services::keys::Keys,
) -> Result<Outcome> {
    let dd = &req.datadir;
    let spaces: Vec<(PhysicalTablespace, PathBuf)> = base
        .physical
        .tablespaces
        .iter()
        .filter_map(|p| {
            let t = plan.tablespaces.iter().find(|t| t.oid == p.oid)?;
            Some((p.clone(), PathBuf::from(&t.directory)))
        })
        .collect();
    for dir in std::iter::once(dd).chain(spaces.iter().map(|(_, d)| d)) {
        create_for_postgres(dir)?;
    }
    // 1 and 2 at once: the base backup streamed into the directory while
    // the WAL files are fetched beside it (they are independent, and the
    // base is bound by the disk while the WAL is bound by the network).
    let artifact = base
        .manifest
        .artifact("pg_basebackup_tar")
        .ok_or_else(|| Error::Integrity {
            artifact: base.manifest.id.to_string(),
            message: "the manifest lists no base.tar".into(),
        })?;
    let spool = dd.join("drctl_wal");
    crate::base::private_fs::dir_all(&spool)
        .map_err(|e| Error::io(format!("creating {}", spool.display()), e))?;
    let mut names: Vec<(String, String)> = choice
        .segments
        .iter()
        .map(|n| (stored_name(&g.archive, n), n.clone()))
        .collect();
    // Every stored history, not only those on the path: the timeline is
    // written as a number, so the others are never followed, but at the
    // promotion PostgreSQL probes `N+1.history`, `N+2.history`... for a
    // free number, and one a copy already archived must be seen as taken.
    names.extend(
        g.archive
            .files
            .keys()
            .filter(|n| matches!(wal::classify(n), Some(WalName::History(_))))
            .map(|n| (n.clone(), n.clone())),
    );
    let base_part = async {
        let t = std::time::Instant::now();
        let r = unpack_cluster(g, base, artifact, dd, &spaces, keys).await;
        (r, t.elapsed().as_secs_f64())
    };
    let wal_part = async {
        let t = std::time::Instant::now();
        let r = fetch_all(cfg, g, req, &names, &spool).await;
        (r, t.elapsed().as_secs_f64())
    };
    let ((based, base_seconds), (walled, wal_seconds)) = tokio::join!(base_part, wal_part);
    if based.is_err() || walled.is_err() {
        // Nothing of the cluster may stay behind: the directories were
        // empty (or absent), and a partial base backup must never be started.
        for d in std::iter::once(dd).chain(spaces.iter().map(|(_, d)| d)) {
            empty_dir(d);
        }
    }
    if let Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) = based {
        return Ok(Outcome::BaseDamaged(e));
    }
    based.and(walled)?;

    // 3. Recovery.
    let t3 = std::time::Instant::now();
    let auto = dd.join("postgresql.auto.conf");
    let original = std::fs::read_to_string(&auto).unwrap_or_default();
    let original = without_block(&original);
    write_settings(&auto, &original, req.target, true, choice.target_timeline)?;
    std::fs::write(dd.join("recovery.signal"), b"")
        .map_err(|e| Error::io("writing recovery.signal", e))?;
    // A postmaster.pid from the source never comes with pg_basebackup, but
    // a stale one would keep the server from starting.
    let _ = std::fs::remove_file(dd.join("postmaster.pid"));
    give_to_postgres(dd)?;
    for (_, d) in &spaces {
        give_to_postgres(d)?;
    }
    let (lines, reached_target) =
        recover_to_target(cfg, g, req, choice, tools, (&auto, &original)).await?;
    let recovery_seconds = t3.elapsed().as_secs_f64();
    let kept = if req.keep_archiving {
        original.clone()
    } else {
        format!("{original}{}", archiving_off(g.job.as_str()))
    };
    std::fs::write(&auto, kept.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", auto.display()), e))?;
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_file(dd.join("recovery.signal"));
    let timeline = controldata(tools, dd)
        .await
        .ok()
        .and_then(|c| field(&c, "Latest checkpoint's TimeLineID")?.parse().ok());
    if let Some(tli) = timeline {
        mark_history_for_archiving(dd, tli)?;
    }
    Ok(Outcome::Restored(Box::new(PitrReport {
        plan: plan.clone(),
        recovery: lines,
        reached_target,
        timeline,
        archiving_off: !req.keep_archiving,
        base_seconds,
        wal_seconds,
        recovery_seconds,
        total_seconds: 0.0,
        fallbacks: Vec::new(),
    })))
}

/// Create `dir` (0700: PostgreSQL refuses a data directory others may
/// read) and hand the directories this creates on the way to the server,
/// which must reach it.
fn create_for_postgres(dir: &Path) -> Result<()> {
    let created = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    crate::base::private_fs::dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    match created {
        Some(top) => give_to_postgres(&top),
        None => Ok(()),
    }
}

/// Run PostgreSQL's recovery to the target; when it ends before the
/// target (archiving lagged, so the first record past it lies further on),
/// fetch the next stored segments and resume; when the whole archive
/// replayed without passing the target, recover to its end, which is the
/// state at the target.
async fn recover_to_target(
    cfg: &LoadedConfig,
    g: &Gathered,
    req: &PitrRequest,
    choice: &Choice,
    tools: &PgTools,
    (auto, original): (&Path, &str),
) -> Result<(Vec<String>, bool)> {
    let dd = &req.datadir;
    let spool = dd.join("drctl_wal");
    let log = dd.join("drctl_recovery.log");
    let mut recovery = recover(tools, dd, &log).await;
    let mut more = choice.more.iter();
    while ended_early(&recovery) {
        let batch: Vec<(String, String)> = more
            .by_ref()
            .take(4)
            .map(|n| (stored_name(&g.archive, n), n.clone()))
            .collect();
        if batch.is_empty() {
            break;
        }
        tracing::info!(
            files = batch.len(),
            "recovery has not reached the target yet; fetching the next WAL files"
        );
        fetch_all(cfg, g, req, &batch, &spool).await?;
        std::fs::write(dd.join("recovery.signal"), b"")
            .map_err(|e| Error::io("writing recovery.signal", e))?;
        give_to_postgres(&spool)?;
        recovery = recover(tools, dd, &log).await;
    }
    if ended_early(&recovery) {
        // The whole archive replayed and no record past the target: the
        // end of the archive is the state at the target. Recover to it
        // without the target.
        tracing::warn!("the target lies after the last archived transaction; recovering to the end of the archive, which is the state at the target");
        write_settings(auto, original, req.target, false, choice.target_timeline)?;
        give_to_postgres(dd)?;
        return recover(tools, dd, &log).await.map(|l| (l, false));
    }
    recovery.map(|l| (l, true))
}

/// The promotion wrote the new timeline's history file while archiving
/// was off (drctl's recovery run never archives), so PostgreSQL did not
/// mark it: mark it `.ready`, so that whenever this cluster runs with
/// `archive_command` again it archives the history first, and restores
/// from the repository can follow the new timeline.
fn mark_history_for_archiving(dd: &Path, tli: u32) -> Result<()> {
    let name = format!("{tli:08X}.history");
    let status = dd.join("pg_wal").join("archive_status");
    if !dd.join("pg_wal").join(&name).exists() || status.join(format!("{name}.done")).exists() {
        return Ok(());
    }
    let ready = status.join(format!("{name}.ready"));
    std::fs::write(&ready, b"")
        .map_err(|e| Error::io(format!("writing {}", ready.display()), e))?;
    give_to_postgres(&ready)
}

/// The stored name of segment `n`: itself, or its `.partial`.
fn stored_name(a: &archive::Archive, n: &str) -> String {
    if a.has(n) {
        n.to_owned()
    } else {
        format!("{n}.partial")
    }
}

/// Whether recovery stopped at the end of the WAL it had, before the target.
fn ended_early(r: &Result<Vec<String>>) -> bool {
    matches!(r, Err(Error::Other(m)) if m.contains("recovery ended before configured recovery target was reached"))
}

fn write_settings(
    auto: &Path,
    original: &str,
    target: Target,
    with_target: bool,
    timeline: u32,
) -> Result<()> {
    let text = format!(
        "{original}{}",
        recovery_settings(target, with_target, timeline)
    );
    std::fs::write(auto, text).map_err(|e| Error::io(format!("writing {}", auto.display()), e))
}

async fn fetch_all(
    cfg: &LoadedConfig,
    g: &Gathered,
    req: &PitrRequest,
    names: &[(String, String)],
    spool: &Path,
) -> Result<()> {
    let (_, jc, _) = archive::physical_job(cfg, req.job.as_deref())?;
    let mut recs = Vec::new();
    for (stored, as_name) in names {
        recs.push((
            archive::read_record(&g.repo, &g.job, stored).await?,
            as_name,
        ));
    }
    let wanted: Vec<&str> = recs
        .iter()
        .flat_map(|(r, _)| r.encryption_recipients.iter().map(String::as_str))
        .collect();
    let keys =
        crate::services::keys::for_recipients(cfg, jc, "the WAL", wanted, req.identity.as_deref())?;
    // A few at a time; a batch of plain futures (no closure over
    // borrowed data) keeps the restore future Send for the daemon's drills.
    for batch in recs.chunks(req.parallel.max(1)) {
        let mut fetches = Vec::with_capacity(batch.len());
        for (r, as_name) in batch {
            fetches.push(archive::fetch(
                &g.repo,
                &g.job,
                r,
                spool.join(as_name.as_str()),
                &keys,
            ));
        }
        for r in futures::future::join_all(fetches).await {
            r?;
        }
    }
    Ok(())
}

/// Start the server on `dd` (no TCP, no socket: nobody connects during
/// recovery) and wait until it is promoted, then stop it cleanly. Returns
/// PostgreSQL's lines about where recovery stopped.
async fn recover(tools: &PgTools, dd: &Path, log: &Path) -> Result<Vec<String>> {
    let _ = std::fs::remove_file(log);
    // Nobody connects during recovery, but the server needs one socket: a
    // Unix socket in a private directory (short: socket paths are limited
    // to 107 bytes), no TCP.
    let sockets = tempfile::Builder::new()
        .prefix("drctl-pitr-")
        .tempdir()
        .map_err(|e| Error::io("creating a socket directory", e))?;
    give_to_postgres(sockets.path())?;
    let opts: Vec<String> = [
        "listen_addresses=".to_owned(),
        format!("unix_socket_directories={}", sockets.path().display()),
        "archive_mode=off".to_owned(),
        "logging_collector=off".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-c".to_owned(), o])
    .collect();
    let mut server = server::ServerChild::start(tools, dd, log, &opts)?;
    let signal = dd.join("recovery.signal");
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let running = !server.exited();
        if running && !signal.exists() {
            // PostgreSQL removes recovery.signal when archive recovery
            // ends; promoted once pg_control says so.
            let state = controldata(tools, dd)
                .await
                .ok()
                .and_then(|c| field(&c, "Database cluster state").map(str::to_owned))
                .unwrap_or_default();
            if state == "in production" {
                break;
            }
        }
        if !running {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let fatal: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("FATAL") || l.contains("PANIC"))
                .collect();
            return Err(Error::Other(format!(
                "PostgreSQL stopped during recovery: {}",
                if fatal.is_empty() {
                    text.lines().last().unwrap_or("no log").to_owned()
                } else {
                    fatal.join("; ")
                }
            )));
        }
    }
    // Promoted, still running with drctl's recovery settings in its
    // directory: the moment a kill here must not leave behind.
    crate::base::faults::point("pitr.recovery.promoted").await;
    server.stop(std::time::Duration::from_secs(300)).await?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| {
            l.contains("recovery stopping")
                || l.contains("last completed transaction")
                || l.contains("selected new timeline")
                || l.contains("archive recovery complete")
                || l.contains("consistent recovery state")
        })
        .map(|l| l.split_once("LOG:").map_or(l, |(_, m)| m).trim().to_owned())
        .collect())
}

async fn controldata(tools: &PgTools, dd: &Path) -> Result<String> {
    let mut c = server_tool(tools, "pg_controldata");
    c.arg("-D").arg(dd);
    server::run(c, "pg_controldata").await
}

/// `Name:   value` of `pg_controldata`'s output.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// The base tar into `dd`, each tablespace's tar into its directory, and
/// a `tablespace_map` naming those directories, which PostgreSQL reads
/// when it starts from the backup (it links `pg_tblspc/OID` to each).
async fn unpack_cluster(
    g: &Gathered,
    base: &Base,
    artifact: &crate::base::manifest::Artifact,
    dd: &Path,
    spaces: &[(PhysicalTablespace, PathBuf)],
    keys: &crate::services::keys::Keys,
) -> Result<()> {
    super::files::stream_tar(&g.repo, &g.job, &base.manifest, artifact, dd, keys).await?;
    if spaces.is_empty() {
        return Ok(());
    }
    super::files::unpack_beside_base(&g.repo, &g.job, &base.manifest, keys, dd, |t| {
        spaces
            .iter()
            .find(|(p, _)| p.oid == t.oid)
            .map(|(_, d)| d.clone())
    })
    .await?;
    let map = dd.join("tablespace_map");
    std::fs::write(&map, tablespace_map_file(spaces))
        .map_err(|e| Error::io(format!("writing {}", map.display()), e))
}

/// Undo what a point-in-time restore wrote into its directories, which
/// were new or empty when it began (so all in them is its own): stop a
/// server a killed drctl left running there, and the server processes
/// that outlived their postmaster (they still write into the directory
/// until they notice it died), then empty them. Used on a failure, on
/// SIGINT/SIGTERM, and by the journal's recovery of a killed restore.
pub async fn abandon(datadir: &Path, spaces: &[PathBuf]) {
    if server::stop_leftover(datadir).await {
        tracing::warn!(datadir = %datadir.display(), "stopped the recovery server a killed restore left running");
    }
    let stray = server::stop_strays(datadir).await;
    if stray > 0 {
        tracing::warn!(datadir = %datadir.display(), processes = stray, "stopped server processes a killed recovery left behind");
    }
    empty_dir(datadir);
    for d in spaces {
        empty_dir(d);
    }
}

/// Remove everything inside `dd` (the directory itself stays: it may be a
/// mount point).
fn empty_dir(dd: &Path) {
    let Ok(entries) = std::fs::read_dir(dd) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let r = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(err) = r {
            tracing::warn!(path = %p.display(), error = %err, "cannot remove what the failed restore wrote");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::manifest::PhysicalSource;
    use std::collections::BTreeMap;

    const MB16: u64 = wal::DEFAULT_SEGMENT_BYTES;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + min * 60, 0).unwrap()
    }

    fn base(finished_min: i64, start_seg: u64, tli: u32) -> Base {
        let m = Manifest {
            format: 1,
            id: crate::base::ids::BackupId::new(at(finished_min - 1), "h"),
            job: JobName::parse("db").unwrap(),
            kind: "postgres_physical".into(),
            host: "h".into(),
            started_at: at(finished_min - 1),
            finished_at: at(finished_min),
            drctl_version: "x".into(),
            source: None,
            redis: None,
            physical: None,
            artifacts: vec![],
            tables: vec![],
            label: None,
            keep_until: None,
        };
        Base {
            manifest: m,
            physical: PhysicalSource {
                engine: "postgresql".into(),
                server_version: "15".into(),
                server_version_num: 150000,
                system_identifier: "1".into(),
                timeline: tli,
                start_lsn: Lsn(start_seg * MB16 + 0x28),
                stop_lsn: Lsn(start_seg * MB16 + 0x100),
                wal_segment_bytes: MB16,
                tool_version: "x".into(),
                wal_method: "fetch".into(),
                tablespaces: Vec::new(),
                server_started_at: None,
                server_stopped_at: None,
            },
        }
    }

    fn seg(tli: u32, n: u64) -> String {
        Segment { tli, segno: n }.name(MB16)
    }

    fn stored(list: &[(String, i64)]) -> BTreeMap<String, DateTime<Utc>> {
        list.iter().map(|(n, m)| (n.clone(), at(*m))).collect()
    }

    #[test]
    fn the_newest_base_before_the_target_and_the_wal_up_to_the_first_segment_past_it() {
        let bases = [base(10, 2, 1), base(20, 5, 1)];
        let s = stored(
            &(2..=9)
                .map(|i| (seg(1, i), 5 + i as i64 * 3))
                .collect::<Vec<_>>(),
        );
        // Segment i is stored at minute 5 + 3i: 2→11, 3→14, 4→17, 5→20, 6→23.
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(15)), None).unwrap();
        assert_eq!(c.base, 0);
        assert_eq!(c.segments, [seg(1, 2), seg(1, 3), seg(1, 4)]);
        // Archiving can lag: the rest of the chain is there to fetch if
        // recovery ends before the target.
        assert_eq!(c.more, (5..=9).map(|i| seg(1, i)).collect::<Vec<_>>());
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(22)), None).unwrap();
        assert_eq!(c.base, 1);
        assert_eq!(c.segments, [seg(1, 5), seg(1, 6)]);
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Latest, None).unwrap();
        assert_eq!(c.segments.last(), Some(&seg(1, 9)));
        let c = choose(
            &bases,
            &s,
            &BTreeMap::new(),
            Target::Lsn(Lsn(7 * MB16 + 5)),
            None,
        )
        .unwrap();
        assert_eq!(c.segments, [seg(1, 5), seg(1, 6), seg(1, 7)]);
    }

    #[test]
    fn targets_outside_the_archive_and_gaps_are_refused_by_name() {
        let bases = [base(10, 2, 1)];
        let mut s = stored(
            &(2..=6)
                .map(|i| (seg(1, i), 5 + i as i64 * 3))
                .collect::<Vec<_>>(),
        );
        let e = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(5)), None).unwrap_err();
        assert!(e.contains("before the oldest base backup"), "{e}");
        let e = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(60)), None).unwrap_err();
        assert!(e.contains("after the end of the archived WAL"), "{e}");
        let e = choose(
            &bases,
            &s,
            &BTreeMap::new(),
            Target::Lsn(Lsn(9 * MB16)),
            None,
        )
        .unwrap_err();
        assert!(e.contains("past the end"), "{e}");
        s.remove(&seg(1, 4));
        let e = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(20)), None).unwrap_err();
        assert!(e.contains(&format!("WAL gap: {}", seg(1, 4))), "{e}");
        // Before the gap is fine.
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(13)), None).unwrap();
        assert!(
            c.more.is_empty(),
            "the chain stops at the gap: {:?}",
            c.more
        );
        // The newest segment stored only as .partial counts.
        let mut s = stored(&[(seg(1, 2), 11), (format!("{}.partial", seg(1, 3)), 14)]);
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Latest, None).unwrap();
        assert_eq!(c.segments, [seg(1, 2), seg(1, 3)]);
        s.clear();
        assert!(choose(&bases, &s, &BTreeMap::new(), Target::Latest, None)
            .unwrap_err()
            .contains("no WAL is stored"));
        assert!(choose(&[], &s, &BTreeMap::new(), Target::Latest, None)
            .unwrap_err()
            .contains("no base backup"));
    }

    #[test]
    fn a_later_timeline_branching_after_the_backup_is_followed() {
        let bases = [base(10, 2, 1)];
        // Timeline 2 branched off 1 inside segment 4.
        let mut h = BTreeMap::new();
        h.insert(2, vec![(1, Lsn(4 * MB16 + 0x500))]);
        let s = stored(&[
            (seg(1, 2), 11),
            (seg(1, 3), 12),
            (seg(1, 4), 13),
            (seg(2, 4), 14),
            (seg(2, 5), 15),
            ("00000002.history".into(), 14),
        ]);
        let c = choose(&bases, &s, &h, Target::Latest, None).unwrap();
        assert_eq!(c.target_timeline, 2);
        assert_eq!(c.segments, [seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5)]);
    }

    #[test]
    fn the_timeline_still_archiving_is_followed_and_another_is_chosen_by_number() {
        // Base backups on timeline 1 before and after a copy restored from
        // the first branched into timeline 2 (inside segment 4); the copy
        // archived segments 4 and 5, the primary went on to segment 8.
        let bases = [base(10, 2, 1), base(30, 6, 1)];
        let mut h = BTreeMap::new();
        h.insert(2, vec![(1, Lsn(4 * MB16 + 0x500))]);
        let s = stored(&[
            (seg(1, 2), 11),
            (seg(1, 3), 12),
            (seg(1, 4), 13),
            (seg(1, 5), 20),
            (seg(1, 6), 31),
            (seg(1, 7), 32),
            (seg(1, 8), 40),
            ("00000002.history".into(), 21),
            (seg(2, 4), 22),
            (seg(2, 5), 23),
        ]);
        assert_eq!(pick_timeline(&bases, &s, &h, MB16), 1);
        let c = choose(&bases, &s, &h, Target::Latest, None).unwrap();
        assert_eq!((c.base, c.target_timeline), (1, 1));
        assert_eq!(c.segments.last(), Some(&seg(1, 8)));
        // A time on timeline 2: only the base before the branch reaches it.
        let c = choose(&bases, &s, &h, Target::Latest, Some(2)).unwrap();
        assert_eq!((c.base, c.target_timeline), (0, 2));
        assert_eq!(c.segments, [seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5)]);
        let e = choose(&bases, &s, &h, Target::Latest, Some(7)).unwrap_err();
        assert!(e.contains("timeline 7 is not in the archive"), "{e}");
        // Once the copy archives more than the primary, it is the one
        // followed (a new primary after a failover).
        let mut s2 = s.clone();
        s2.insert(seg(2, 6), at(50));
        assert_eq!(pick_timeline(&bases, &s2, &h, MB16), 2);
        // Timeline 2 branched before the second base: only the first lies
        // on it.
        let only_new = [base(30, 6, 1)];
        let e = choose(&only_new, &s2, &h, Target::Latest, Some(2)).unwrap_err();
        assert!(
            e.contains("no stored base backup lies on timeline 2"),
            "{e}"
        );
    }

    #[test]
    fn a_base_backup_is_placed_by_the_servers_clock_not_the_hosts() {
        // The backing-up host ran 5 minutes behind: its finished_at says
        // 25, the server's clock said 30 when the backup ended.
        let mut late = base(25, 6, 1);
        late.physical.server_stopped_at = Some(at(30));
        let bases = [base(10, 2, 1), late];
        let s = stored(
            &(2..=8)
                .map(|n| (seg(1, n), 10 + n as i64 * 4))
                .collect::<Vec<_>>(),
        );
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(27)), None).unwrap();
        assert_eq!(c.base, 0, "the second backup ended after 27 on the server");
        let c = choose(&bases, &s, &BTreeMap::new(), Target::Time(at(31)), None).unwrap();
        assert_eq!(c.base, 1);
        // A host ahead: finished_at 20, server 12; a target of 15 is
        // reachable from it.
        let mut ahead = base(20, 2, 1);
        ahead.physical.server_stopped_at = Some(at(12));
        let c = choose(&[ahead], &s, &BTreeMap::new(), Target::Time(at(15)), None).unwrap();
        assert_eq!(c.base, 0);
    }

    #[test]
    fn the_estimate_is_the_median_rate_of_past_restores_times_the_work() {
        assert_eq!(estimate(&[], 1000), None);
        assert_eq!(
            estimate(&[(0.0, 100), (5.0, 0)], 1000),
            None,
            "no work done"
        );
        // 1 s/100 B, 2 s/100 B, 10 s/100 B (a slow outlier): median 2 s/100 B.
        let e = estimate(&[(1.0, 100), (10.0, 100), (2.0, 100)], 1000).unwrap();
        assert_eq!(e.drills, 3);
        assert!((e.seconds - 20.0).abs() < 1e-9, "{e:?}");
        // An even count takes the mean of the middle two.
        let e = estimate(&[(1.0, 100), (3.0, 100)], 100).unwrap();
        assert!((e.seconds - 2.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn recovery_settings_are_one_block_removed_whole() {
        let t = Target::Time(DateTime::from_timestamp(1_800_000_000, 5_000_000).unwrap());
        let s = recovery_settings(t, true, 3);
        assert!(s.contains("recovery_target_timeline = '3'"), "{s}");
        assert!(
            s.contains("recovery_target_time = '2027-01-15 08:00:00.005000+00'"),
            "{s}"
        );
        assert!(s.contains("restore_command = 'cp \"drctl_wal/%f\" \"%p\"'"));
        assert!(!recovery_settings(t, false, 1).contains("recovery_target_time ="));
        let conf = format!("# by ALTER SYSTEM\nwork_mem = '8MB'\n{s}");
        assert_eq!(
            without_block(&conf),
            "# by ALTER SYSTEM\nwork_mem = '8MB'\n"
        );
        assert!(recovery_settings(Target::Lsn(Lsn(0x3000060)), true, 1)
            .contains("recovery_target_lsn = '0/3000060'"));
    }

    fn space(oid: u32, name: &str, location: &str) -> PhysicalTablespace {
        PhysicalTablespace {
            oid,
            name: name.into(),
            location: location.into(),
            artifact: format!("{oid}.tar.zst"),
        }
    }

    #[test]
    fn tablespaces_go_where_the_map_says_else_under_a_throwaway_directory_else_home() {
        let spaces = [
            space(16384, "fast", "/ssd/pg"),
            space(16385, "cold", "/hdd/pg"),
        ];
        let dirs = |r: Vec<(PhysicalTablespace, PathBuf)>| -> Vec<String> {
            r.into_iter()
                .map(|(_, d)| d.display().to_string())
                .collect()
        };
        // Nothing said: where they were.
        assert_eq!(
            dirs(place_tablespaces(&spaces, &[], None).unwrap()),
            ["/ssd/pg", "/hdd/pg"]
        );
        // By name, OID or old location; the last entry for one wins.
        for key in ["fast", "16384", "/ssd/pg"] {
            let map = [(key.to_owned(), PathBuf::from("/new/fast"))];
            assert_eq!(
                dirs(place_tablespaces(&spaces, &map, None).unwrap()),
                ["/new/fast", "/hdd/pg"]
            );
        }
        let map = [
            ("cold".to_owned(), PathBuf::from("/a")),
            ("16385".to_owned(), PathBuf::from("/b")),
        ];
        assert_eq!(
            dirs(place_tablespaces(&spaces, &map, None).unwrap()),
            ["/ssd/pg", "/b"]
        );
        // A throwaway cluster: everything not mapped under its directory.
        let map = [("cold".to_owned(), PathBuf::from("/b"))];
        assert_eq!(
            dirs(place_tablespaces(&spaces, &map, Some(Path::new("/drill/ts"))).unwrap()),
            ["/drill/ts/16384", "/b"]
        );
        // Refused, each naming what is wrong.
        let err = |map: &[(String, PathBuf)], spaces: &[PhysicalTablespace]| {
            place_tablespaces(spaces, map, None).unwrap_err()
        };
        let m = err(&[("warm".into(), "/x".into())], &spaces);
        assert!(
            m.contains("warm") && m.contains("fast (OID 16384, at /ssd/pg)"),
            "{m}"
        );
        assert!(err(&[("warm".into(), "/x".into())], &[]).contains("it has none"));
        assert!(err(&[("fast".into(), "rel/dir".into())], &spaces).contains("not an absolute path"));
        assert!(err(&[("fast".into(), "/a\nb".into())], &spaces).contains("not an absolute path"));
        let m = err(&[("fast".into(), "/hdd/pg".into())], &spaces);
        assert!(m.contains("fast and cold") || m.contains("cold"), "{m}");
        assert!(m.contains("would both go to /hdd/pg"), "{m}");
        let m = err(&[], &[space(16390, "16390", "")]);
        assert!(
            m.contains("no recorded location") && m.contains("--tablespace-map 16390=DIR"),
            "{m}"
        );
        // The file PostgreSQL reads.
        let placed = place_tablespaces(&spaces, &[], None).unwrap();
        assert_eq!(
            tablespace_map_file(&placed),
            "16384 /ssd/pg\n16385 /hdd/pg\n"
        );
    }

    #[test]
    fn a_tablespace_mapping_is_old_equals_new() {
        assert_eq!(
            parse_tablespace_mapping("fast=/srv/x=y").unwrap(),
            ("fast".to_owned(), PathBuf::from("/srv/x=y"))
        );
        for bad in ["fast", "=/x", "fast="] {
            assert!(parse_tablespace_mapping(bad)
                .unwrap_err()
                .contains("OLD=NEWDIR"));
        }
    }
}
