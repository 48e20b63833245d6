//! The `prune_files` kind: R4's `find logs -name "*.log" -mtime +30 -delete`
//! and logrotate's `compress`, with the guard rails a cron line lacks.
//!
//! Each glob's literal prefix is its root; the tree under it is walked
//! without following symlinks, and only regular files are touched, so no
//! deletion ever leaves the root. The newest `keep_last` matching files of
//! each directory are never deleted or compressed; files another process
//! holds open for writing (a log being written) are skipped. A compressed
//! file (`x.log.gz`) still belongs to the glob that matched `x.log`, so age
//! and size limits keep applying to it.

use crate::base::error::{Error, Result};
use crate::config::PruneFilesJob;
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use crate::base::values::root_of;

#[derive(Debug, Clone, Serialize)]
struct Candidate {
    path: PathBuf,
    bytes: u64,
    #[serde(skip)]
    modified: SystemTime,
}

#[derive(Debug, Default, Serialize)]
struct Outcome {
    deleted: Vec<Action>,
    compressed: Vec<Action>,
    skipped_open: Vec<PathBuf>,
    errors: Vec<String>,
    kept: usize,
    matched: usize,
    matched_bytes: u64,
    remaining_bytes: u64,
    bytes_freed: u64,
    dry_run: bool,
}

#[derive(Debug, Serialize)]
struct Action {
    path: PathBuf,
    bytes: u64,
    /// Compressed size (compress actions).
    #[serde(skip_serializing_if = "Option::is_none")]
    to_bytes: Option<u64>,
    reason: String,
}

/// Regular files under the glob's root that it matches (or whose `.gz` it would).
fn matches(pattern: &str) -> std::result::Result<Vec<Candidate>, String> {
    let pat = glob::Pattern::new(pattern).map_err(|e| format!("{pattern:?}: {e}"))?;
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let root = root_of(pattern);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(&root).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot read part of the tree");
                continue;
            }
        };
        // Only regular files: a symlink is neither followed nor deleted.
        if !entry.file_type().is_file() {
            continue;
        }
        let p = entry.path();
        let base = p
            .to_str()
            .map(|s| s.strip_suffix(".gz").unwrap_or(s).to_owned());
        let hit = pat.matches_path_with(p, opts)
            || base.is_some_and(|b| pat.matches_path_with(Path::new(&b), opts));
        if !hit {
            continue;
        }
        let md = match entry.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        out.push(Candidate {
            path: p.to_path_buf(),
            bytes: md.len(),
            modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(out)
}

/// Paths some process holds open for writing (as `lsof`/`fuser` see them),
/// or why that cannot be known: a process whose descriptors this one may
/// not read, or a /proc that hides other users' processes, would make
/// every file look unused, and deleting a log another process is still
/// writing loses what it writes next.
fn open_for_writing(
    candidates: &BTreeMap<PathBuf, Candidate>,
) -> std::result::Result<HashSet<PathBuf>, String> {
    let mut open = HashSet::new();
    if candidates.is_empty() {
        return Ok(open); // no /proc walk when nothing matched
    }
    let hidepid = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .ok()
        .and_then(|mi| {
            mi.into_iter()
                .find(|m| m.mount_point == Path::new("/proc") && m.fs_type == "proc")
                .and_then(|m| m.super_options.get("hidepid").cloned().flatten())
        });
    let euid = nix::unistd::geteuid().as_raw();
    let procs = procfs::process::all_processes()
        .map_err(|e| format!("cannot list processes in /proc: {e}"))?;
    let me = std::process::id() as i32;
    let mut unreadable: Vec<(i32, u32)> = Vec::new();
    for p in procs.flatten() {
        if p.pid == me {
            continue;
        }
        let fds = match p.fd() {
            Ok(f) => f,
            Err(procfs::ProcError::PermissionDenied(_)) => {
                unreadable.push((p.pid, p.uid().unwrap_or(u32::MAX)));
                continue;
            }
            Err(_) => continue, // exited meanwhile
        };
        for fd in fds.flatten() {
            // The fd link's owner-write bit is set when it was opened for writing.
            if fd.mode & 0o200 == 0 {
                continue;
            }
            if let procfs::process::FDTarget::Path(path) = fd.target {
                if candidates.contains_key(&path) {
                    open.insert(path);
                }
            }
        }
    }
    open_files_blind(hidepid.as_deref(), euid, &unreadable).map_or(Ok(open), Err)
}

/// Why the open-file check would be blind, if it would: pure, so each case
/// is unit-tested without changing users.
fn open_files_blind(hidepid: Option<&str>, euid: u32, unreadable: &[(i32, u32)]) -> Option<String> {
    const FIX: &str = "run drctl as root or grant it CAP_SYS_PTRACE \
        (AmbientCapabilities=CAP_SYS_PTRACE in the unit), or set check_open_files = false \
        to delete without looking";
    let hidden = hidepid.is_some_and(|v| !matches!(v, "0" | "off"));
    if hidden && euid != 0 {
        return Some(format!(
            "refusing to delete: /proc is mounted with hidepid={} (ProtectProc=), so the files \
             other users' processes hold open cannot be seen; set ProtectProc=default, {FIX}",
            hidepid.unwrap_or_default()
        ));
    }
    if let Some((pid, uid)) = unreadable.first() {
        return Some(format!(
            "refusing to delete: cannot read the open files of {} process(es) of other users \
             (pid {pid}, uid {uid}, and others); reading /proc/PID/fd of another user's process \
             needs the CAP_SYS_PTRACE capability: {FIX}",
            unreadable.len()
        ));
    }
    None
}

fn gzip_in_place(path: &Path) -> std::result::Result<u64, String> {
    let target = PathBuf::from(format!("{}.gz", path.display()));
    if target.exists() {
        return Err(format!("{} already exists", target.display()));
    }
    let tmp = PathBuf::from(format!("{}.gz.drctl-tmp", path.display()));
    let md = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let result = (|| {
        let mut src = std::fs::File::open(path)?;
        let out = std::fs::File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut src, &mut enc)?;
        let out = enc.finish()?;
        out.set_modified(md.modified()?)?;
        out.set_permissions(md.permissions())?;
        out.sync_all()?;
        let size = out.metadata()?.len();
        drop(out);
        std::fs::rename(&tmp, &target)?;
        std::fs::remove_file(path)?;
        Ok::<u64, std::io::Error>(size)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("compressing {}: {e}", path.display())
    })
}

/// What a prune_files run does, decided from the matched files alone.
#[derive(Debug, Default, PartialEq)]
struct FilesPlan {
    /// Files protected by keep_last.
    kept: usize,
    /// Deleted, with why.
    delete: BTreeMap<PathBuf, String>,
    /// Compressed in place, with why.
    compress: Vec<(PathBuf, String)>,
    /// Left alone because a process has them open for writing.
    skipped_open: Vec<PathBuf>,
}

/// Decide (pure): the newest `keep_last` of each directory stay, and so do
/// files open for writing; then `older_than`, then `max_total_size` (oldest
/// first), then `compress_older_than` for what is left.
fn plan_files(
    all: &BTreeMap<PathBuf, Candidate>,
    open: &HashSet<PathBuf>,
    job: &PruneFilesJob,
    now: SystemTime,
) -> FilesPlan {
    // keep_last: the newest N of each directory.
    let mut by_dir: BTreeMap<PathBuf, Vec<&Candidate>> = BTreeMap::new();
    for c in all.values() {
        by_dir
            .entry(c.path.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(c);
    }
    let mut protected: HashSet<PathBuf> = HashSet::new();
    for files in by_dir.values_mut() {
        files.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.path.cmp(&a.path)));
        protected.extend(files.iter().take(job.keep_last).map(|c| c.path.clone()));
    }
    let age = |c: &Candidate| now.duration_since(c.modified).unwrap_or(Duration::ZERO);
    let mut doomed: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut skipped_open: HashSet<PathBuf> = HashSet::new();
    let deletable = |c: &Candidate, skipped: &mut HashSet<PathBuf>| {
        if protected.contains(&c.path) {
            return false;
        }
        if open.contains(&c.path) {
            skipped.insert(c.path.clone());
            return false;
        }
        true
    };
    if let Some(limit) = job.older_than {
        for c in all.values() {
            if age(c) > limit && deletable(c, &mut skipped_open) {
                doomed.insert(
                    c.path.clone(),
                    format!("older than {}", humantime::format_duration(limit)),
                );
            }
        }
    }
    if let Some(cap) = job.max_total_size {
        let mut rest: Vec<&Candidate> = all
            .values()
            .filter(|c| !doomed.contains_key(&c.path))
            .collect();
        let mut total: u64 = rest.iter().map(|c| c.bytes).sum();
        rest.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
        for c in rest {
            if total <= cap.as_u64() {
                break;
            }
            if deletable(c, &mut skipped_open) {
                doomed.insert(c.path.clone(), format!("over max_total_size {cap}"));
                total -= c.bytes;
            }
        }
    }
    let mut compress = Vec::new();
    if let Some(limit) = job.compress_older_than {
        for c in all.values() {
            let compressed = c.path.extension().is_some_and(|e| e == "gz");
            if compressed || doomed.contains_key(&c.path) || age(c) <= limit {
                continue;
            }
            if deletable(c, &mut skipped_open) {
                compress.push((
                    c.path.clone(),
                    format!("older than {}", humantime::format_duration(limit)),
                ));
            }
        }
    }
    let mut skipped_open: Vec<PathBuf> = skipped_open.into_iter().collect();
    skipped_open.sort();
    FilesPlan {
        kept: protected.len(),
        delete: doomed,
        compress,
        skipped_open,
    }
}

fn prune(job: &PruneFilesJob, now: SystemTime) -> std::result::Result<Outcome, String> {
    let mut all: BTreeMap<PathBuf, Candidate> = BTreeMap::new();
    for p in &job.paths {
        for c in matches(p)? {
            all.insert(c.path.clone(), c);
        }
    }
    let mut out = Outcome {
        dry_run: job.dry_run,
        matched: all.len(),
        matched_bytes: all.values().map(|c| c.bytes).sum(),
        ..Outcome::default()
    };
    let open = if job.check_open_files {
        open_for_writing(&all)?
    } else {
        HashSet::new()
    };
    let plan = plan_files(&all, &open, job, now);
    out.kept = plan.kept;
    for (path, reason) in plan.delete {
        let bytes = all[&path].bytes;
        if !job.dry_run {
            // Still the regular file we listed (not swapped for a symlink since).
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => {}
                _ => continue,
            }
            if let Err(e) = std::fs::remove_file(&path) {
                out.errors
                    .push(format!("cannot delete {}: {e}", path.display()));
                continue;
            }
        }
        out.bytes_freed += bytes;
        out.deleted.push(Action {
            path,
            bytes,
            to_bytes: None,
            reason,
        });
    }
    for (path, reason) in plan.compress {
        let bytes = all[&path].bytes;
        if job.dry_run {
            out.compressed.push(Action {
                path,
                bytes,
                to_bytes: None,
                reason,
            });
            continue;
        }
        match gzip_in_place(&path) {
            Ok(size) => {
                out.bytes_freed += bytes.saturating_sub(size);
                out.compressed.push(Action {
                    path,
                    bytes,
                    to_bytes: Some(size),
                    reason,
                });
            }
            Err(e) => out.errors.push(e),
        }
    }
    out.skipped_open = plan.skipped_open;
    out.remaining_bytes = out.matched_bytes.saturating_sub(out.bytes_freed);
    Ok(out)
}

/// Delete (or compress) the files the job's rules select.
pub async fn run(ctx: &CheckCtx<'_>, job: &PruneFilesJob) -> Result<Report> {
    let j = job.clone();
    let out = tokio::task::spawn_blocking(move || prune(&j, SystemTime::now()))
        .await
        .map_err(|e| Error::task("walking the trees to prune", e))?
        .map_err(Error::Other)?;
    let mut report = Report::new(ctx.job, "prune_files");
    let verb = if job.dry_run { "would free" } else { "freed" };
    report.summary = format!(
        "{} of {} matching files deleted, {} compressed, {verb} {}; {} kept by keep_last, {} skipped (open for writing)",
        out.deleted.len(),
        out.matched,
        out.compressed.len(),
        bytesize::ByteSize(out.bytes_freed),
        out.kept,
        out.skipped_open.len(),
    );
    if !out.errors.is_empty() {
        report.findings.push(Finding::new(
            "errors",
            Level::Warning,
            format!(
                "{} files could not be pruned: {}",
                out.errors.len(),
                out.errors.first().map_or("", String::as_str)
            ),
        ));
    }
    if let Some(cap) = job.max_total_size {
        if out.remaining_bytes > cap.as_u64() && !job.dry_run {
            report.findings.push(Finding::new(
                "max_total_size",
                Level::Warning,
                format!(
                    "matching files still take {} (max_total_size {cap}): the rest is kept by keep_last or open",
                    bytesize::ByteSize(out.remaining_bytes)
                ),
            ));
        }
    }
    if !job.dry_run {
        report.bytes = Some(out.bytes_freed);
        report.samples.push(Sample::counter(
            "drctl_prune_bytes_freed",
            &[("job", ctx.job)],
            out.bytes_freed as f64,
        ));
    }
    report.details = json!(out);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * DAY)
    }
    fn files(spec: &[(&str, u64, u64)]) -> BTreeMap<PathBuf, Candidate> {
        spec.iter()
            .map(|(p, bytes, age_days)| {
                (
                    PathBuf::from(p),
                    Candidate {
                        path: PathBuf::from(p),
                        bytes: *bytes,
                        modified: now() - Duration::from_secs(age_days * DAY),
                    },
                )
            })
            .collect()
    }
    fn job(extra: &str) -> PruneFilesJob {
        toml::from_str(&format!("paths = [\"/var/log/app/*.log\"]\n{extra}")).unwrap()
    }
    #[test]
    fn a_blind_open_file_check_refuses_and_names_the_permission() {
        assert_eq!(open_files_blind(None, 0, &[]), None);
        assert_eq!(open_files_blind(None, 998, &[]), None);
        assert_eq!(open_files_blind(Some("0"), 998, &[]), None);
        // root sees through hidepid
        assert_eq!(open_files_blind(Some("invisible"), 0, &[]), None);
        let m = open_files_blind(Some("invisible"), 998, &[]).unwrap();
        assert!(
            m.contains("hidepid=invisible") && m.contains("ProtectProc="),
            "{m}"
        );
        let m = open_files_blind(None, 998, &[(1, 0), (77, 105)]).unwrap();
        assert!(
            m.contains("CAP_SYS_PTRACE") && m.contains("2 process(es)"),
            "{m}"
        );
        assert!(m.contains("check_open_files = false"), "{m}");
    }

    #[test]
    fn check_open_files_defaults_on() {
        assert!(job("").check_open_files);
        assert!(!job("check_open_files = false").check_open_files);
    }

    fn deleted(p: &FilesPlan) -> Vec<&str> {
        p.delete.keys().map(|k| k.to_str().unwrap()).collect()
    }

    #[test]
    fn older_than_spares_the_newest_of_each_directory_and_open_files() {
        let all = files(&[
            ("/l/a/1.log", 10, 40),
            ("/l/a/2.log", 10, 35),
            ("/l/a/3.log", 10, 31),
            ("/l/b/1.log", 10, 90),
            ("/l/a/open.log", 10, 60),
        ]);
        let open: HashSet<PathBuf> = [PathBuf::from("/l/a/open.log")].into();
        let p = plan_files(
            &all,
            &open,
            &job("older_than = \"30d\"\nkeep_last = 1"),
            now(),
        );
        // /l/a/3.log and /l/b/1.log are their directories' newest.
        assert_eq!(deleted(&p), vec!["/l/a/1.log", "/l/a/2.log"]);
        assert_eq!(p.skipped_open, vec![PathBuf::from("/l/a/open.log")]);
        assert_eq!(p.kept, 2);
    }

    #[test]
    fn max_total_size_deletes_oldest_first_until_under_the_cap() {
        let all = files(&[
            ("/l/1.log", 400, 5),
            ("/l/2.log", 400, 4),
            ("/l/3.log", 400, 3),
            ("/l/4.log", 400, 2),
        ]);
        let p = plan_files(
            &all,
            &HashSet::new(),
            &job("max_total_size = \"1000B\""),
            now(),
        );
        assert_eq!(deleted(&p), vec!["/l/1.log", "/l/2.log"]);
        assert!(p
            .delete
            .values()
            .all(|why| why.starts_with("over max_total_size")));
    }

    #[test]
    fn compression_takes_old_uncompressed_files_left_over() {
        let all = files(&[
            ("/l/old.log", 10, 20),
            ("/l/done.log.gz", 10, 20),
            ("/l/recent.log", 10, 1),
            ("/l/ancient.log", 10, 100),
        ]);
        let p = plan_files(
            &all,
            &HashSet::new(),
            &job("older_than = \"90d\"\ncompress_older_than = \"7d\""),
            now(),
        );
        assert_eq!(deleted(&p), vec!["/l/ancient.log"]);
        let compressed: Vec<&Path> = p.compress.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(compressed, vec![Path::new("/l/old.log")]);
    }

    #[test]
    fn roots_are_the_literal_prefix() {
        assert_eq!(
            root_of("/opt/app/logs/**/*.log"),
            Path::new("/opt/app/logs")
        );
        assert_eq!(root_of("/var/log/app-*.log"), Path::new("/var/log"));
        assert_eq!(root_of("/var/log/app.log"), Path::new("/var/log"));
        assert_eq!(root_of("/*/x"), Path::new("/"));
    }
}
