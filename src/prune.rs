//! Pruning a job's backups: the retention policy (`retention.rs`) decides
//! what stays; this applies it safely and sweeps orphans.
//!
//! - The newest backup is never deleted, nor one with a live lease (a
//!   restore or drill reading it, on any host), nor one still under the
//!   repository's Object Lock retention.
//! - The manifest goes first, then the data: an interrupted prune leaves
//!   data without a manifest (invisible, swept later), never a listed backup
//!   that cannot be restored.
//! - Orphans: a backup directory without a manifest whose newest object is
//!   older than `orphan_age` (a killed run's leftovers), and incomplete S3
//!   multipart uploads older than that.

use crate::config::{LoadedConfig, RepositoryConfig};
use crate::error::{Error, Result};
use crate::ids::BackupId;
use crate::repository::{ObjectInfo, Repository, LEASES};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// Unreferenced data younger than this is a backup still being written.
    pub orphan_age: Duration,
    /// What verifications and drills found, by backup id (see
    /// `State::verdicts`): damaged backups fill no slot, the newest proven
    /// one is kept.
    pub verdicts: std::collections::HashMap<String, crate::state::Verdict>,
    /// The backup the calling run has just committed (never deleted by it).
    pub just_made: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            orphan_age: Duration::from_secs(24 * 3600),
            verdicts: Default::default(),
            just_made: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub id: String,
    pub reasons: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub id: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub job: String,
    pub dry_run: bool,
    pub kept: Vec<Kept>,
    /// Backups deleted (or, with `dry_run`, that would be).
    pub deleted: Vec<String>,
    /// Backups the policy lets go that are protected (lease, object lock).
    pub skipped: Vec<Skipped>,
    /// Objects of backups that never got a manifest.
    pub orphans: Vec<String>,
    pub uploads_aborted: Vec<String>,
    pub bytes_freed: u64,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Dir {
    objects: Vec<ObjectInfo>,
    leases: Vec<ObjectInfo>,
    manifest: bool,
}

/// Prune `job` (a backup job) by its `retention` (no policy: orphans only).
pub async fn job(cfg: &LoadedConfig, name: &str, opts: &Options) -> Result<Report> {
    let (job_name, jc) = cfg.job(name)?;
    let repo_name = jc
        .repository()
        .ok_or_else(|| Error::Other(format!("job {name} stores no backups to prune")))?;
    let repo_cfg = cfg.repository(repo_name)?;
    let repo = Repository::open(repo_name, repo_cfg).await?;
    let tz = crate::schedule::parse_timezone(jc.scheduling().timezone).map_err(Error::Other)?;
    let now = Utc::now();
    let mut report = Report {
        job: name.to_owned(),
        dry_run: opts.dry_run,
        ..Report::default()
    };

    let prefix = format!("{job_name}/");
    let mut dirs: BTreeMap<BackupId, Dir> = BTreeMap::new();
    for o in repo.objects_of_job(&job_name).await? {
        let Some(rest) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((id, file)) = rest.split_once('/') else {
            continue;
        };
        let Ok(id) = BackupId::parse(id) else {
            continue;
        };
        let d = dirs.entry(id).or_default();
        if file == crate::manifest::FILE_NAME {
            d.manifest = true;
        }
        if file.starts_with(&format!("{LEASES}/")) {
            d.leases.push(o);
        } else {
            d.objects.push(o);
        }
    }
    // A lease not renewed within the TTL is a dead process's.
    let ttl = repo.lease_ttl();
    let live_lease = |d: &Dir, now: DateTime<Utc>| -> Option<ObjectInfo> {
        d.leases
            .iter()
            .find(|l| {
                l.modified
                    .is_none_or(|m| (now - m).to_std().unwrap_or_default() < ttl)
            })
            .cloned()
    };
    let lock_until = |id: &BackupId| -> Option<DateTime<Utc>> {
        match repo_cfg {
            RepositoryConfig::S3(s) => s.object_lock.as_ref().map(|l| {
                // Retention runs from the upload; a day's margin covers long backups.
                id.timestamp() + chrono::Duration::days(i64::from(l.days) + 1)
            }),
            _ => None,
        }
    };

    // Retention over committed backups.
    let candidates: Vec<crate::retention::Candidate> = dirs
        .iter()
        .filter(|(_, d)| d.manifest)
        .map(|(id, d)| {
            let committed_at = d
                .objects
                .iter()
                .find(|o| o.key.ends_with(&format!("/{}", crate::manifest::FILE_NAME)))
                .and_then(|o| o.modified);
            let known = opts.verdicts.get(id.as_str()).copied().unwrap_or_default();
            crate::retention::Candidate {
                id: id.to_string(),
                at: id.timestamp(),
                skewed: crate::repository::skew(id.timestamp(), committed_at).is_some(),
                stored_at: committed_at,
                damaged: known.damaged,
                proven: known.proven,
                just_made: opts.just_made.as_deref() == Some(id.as_str()),
            }
        })
        .collect();
    // Nothing is deleted while the newest backup's manifest is unreadable:
    // that is what a commit that went wrong looks like (a full disk, a
    // store that lost the object), and deleting older backups then could
    // delete the last good one.
    let mut sane = candidates.iter().rev().filter(|c| !c.skewed);
    let newest_two: Vec<_> = sane.by_ref().take(2).collect();
    let mut identities = Vec::new();
    for (i, c) in newest_two.iter().enumerate() {
        let Ok(id) = BackupId::parse(&c.id) else {
            continue;
        };
        match repo.read_manifest(&job_name, &id).await {
            Ok(m) => identities.push(
                m.source_identity()
                    .map(|(s, d)| (s.to_owned(), d.to_owned())),
            ),
            Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) if i == 0 => {
                return Err(Error::Integrity {
                    artifact: format!("{job_name}/{id}"),
                    message: format!(
                        "the newest backup's manifest is unreadable ({e}); retention deletes nothing until it is dealt with: check the storage, then remove that backup's directory or run a new backup"
                    ),
                })
            }
            Err(Error::Integrity { .. } | Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // Two sources writing under one job name: each side's policy would
    // delete the other's backups.
    if let [Some(a), Some(b)] = identities.as_slice() {
        if a != b {
            return Err(Error::Refused(format!(
                "job collision: the two newest backups of {job_name} are of different sources (database {} on server {}, database {} on server {}); retention deletes nothing until one host uses another job name",
                a.1, a.0, b.1, b.0
            )));
        }
    }
    let keep = crate::retention::decide(&candidates, jc.retention(), tz);
    for (id, reasons) in &keep {
        report.kept.push(Kept {
            id: id.clone(),
            reasons: reasons.clone(),
        });
    }
    let doomed: Vec<BackupId> = dirs
        .iter()
        .filter(|(id, d)| d.manifest && !keep.contains_key(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    for id in doomed {
        let Some(d) = dirs.get(&id) else { continue };
        if let Some(l) = live_lease(d, now) {
            report.skipped.push(Skipped {
                id: id.to_string(),
                why: format!(
                    "in use by a restore, drill or backup in progress (lease {})",
                    l.key
                ),
            });
            continue;
        }
        if let Some(until) = lock_until(&id).filter(|u| *u > now) {
            report.skipped.push(Skipped {
                id: id.to_string(),
                why: format!(
                    "object lock retains it until about {}",
                    until.format("%Y-%m-%d %H:%M UTC")
                ),
            });
            continue;
        }
        let bytes: u64 = d.objects.iter().map(|o| o.size).sum();
        if !opts.dry_run {
            let manifest = format!("{prefix}{id}/{}", crate::manifest::FILE_NAME);
            if let Err(e) = repo.backend().delete(&manifest).await {
                report
                    .errors
                    .push(format!("{id}: deleting the manifest: {e}"));
                continue;
            }
            for o in d
                .objects
                .iter()
                .chain(&d.leases)
                .filter(|o| o.key != manifest)
            {
                if let Err(e) = repo.backend().delete(&o.key).await {
                    report.errors.push(format!(
                        "{id}: deleting {} (left as an orphan for the next prune): {e}",
                        o.key
                    ));
                }
            }
        }
        tracing::info!(job = name, backup = %id, dry_run = opts.dry_run, "pruned");
        report.deleted.push(id.to_string());
        report.bytes_freed += bytes;
    }

    // Expired leases of kept backups: a process that died holding one (a
    // killed restore, a backup killed after its commit) left it; it no
    // longer protects anything, so it goes like any orphaned object.
    for (id, d) in dirs.iter().filter(|(_, d)| d.manifest) {
        if report.deleted.contains(&id.to_string()) {
            continue;
        }
        for l in d.leases.iter().filter(|l| {
            l.modified
                .is_some_and(|m| (now - m).to_std().unwrap_or_default() >= ttl)
        }) {
            if !opts.dry_run {
                if let Err(e) = repo.backend().delete(&l.key).await {
                    report.errors.push(format!("expired lease {}: {e}", l.key));
                    continue;
                }
            }
            report.orphans.push(l.key.clone());
        }
    }

    // Orphans: data that never got (or lost) its manifest.
    for (id, d) in dirs.iter().filter(|(_, d)| !d.manifest) {
        let newest = d
            .objects
            .iter()
            .chain(&d.leases)
            .filter_map(|o| o.modified)
            .max();
        let old = newest.is_some_and(|m| (now - m).to_std().unwrap_or_default() >= opts.orphan_age);
        if !old || live_lease(d, now).is_some() {
            continue;
        }
        for o in d.objects.iter().chain(&d.leases) {
            if !opts.dry_run {
                if let Err(e) = repo.backend().delete(&o.key).await {
                    report.errors.push(format!("orphan {}: {e}", o.key));
                    continue;
                }
            }
            report.bytes_freed += o.size;
            report.orphans.push(o.key.clone());
        }
        tracing::info!(job = name, backup = %id, dry_run = opts.dry_run, "swept orphaned objects");
    }
    match repo.backend().incomplete_uploads(&prefix).await {
        Ok(Some(uploads)) => {
            for u in uploads {
                let old = u
                    .initiated
                    .is_some_and(|t| (now - t).to_std().unwrap_or_default() >= opts.orphan_age);
                // A backup still being written holds a lease on its directory.
                let leased = u
                    .key
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(id, _)| BackupId::parse(id).ok())
                    .and_then(|id| dirs.get(&id))
                    .is_some_and(|d| live_lease(d, now).is_some());
                if !old || leased {
                    continue;
                }
                if !opts.dry_run {
                    if let Err(e) = repo.backend().abort_upload(&u).await {
                        report.errors.push(format!("upload of {}: {e}", u.key));
                        continue;
                    }
                }
                report.uploads_aborted.push(u.key);
            }
        }
        Ok(None) if matches!(repo_cfg, RepositoryConfig::S3(_)) => report.notes.push(
            "the store does not list incomplete multipart uploads (ListMultipartUploads); set a bucket lifecycle rule AbortIncompleteMultipartUpload instead".into(),
        ),
        Ok(None) => {}
        Err(e) => report.errors.push(e.to_string()),
    }
    Ok(report)
}
