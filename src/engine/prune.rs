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

use crate::base::error::{Error, Result};
use crate::base::ids::BackupId;
use crate::config::{LoadedConfig, RepositoryConfig};
use crate::services::repository::{ObjectInfo, Repository, Upload, LEASES};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How to prune.
#[derive(Debug, Clone)]
pub struct Options {
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Unreferenced data younger than this is a backup still being written.
    pub orphan_age: Duration,
    /// What verifications and drills found, by backup id (see
    /// `State::verdicts`): damaged backups fill no slot, the newest proven
    /// one is kept.
    pub verdicts: std::collections::HashMap<String, crate::services::state::Verdict>,
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

/// A backup retention keeps.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// Its id.
    pub id: String,
    /// Why (`newest`, `daily`, `proven`, ...).
    pub reasons: Vec<&'static str>,
}

/// A backup the policy lets go that is protected.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its id.
    pub id: String,
    /// What protects it (a live lease, Object Lock).
    pub why: String,
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// The job.
    pub job: String,
    /// The repository pruned.
    pub repository: String,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Backups kept, each with why.
    pub kept: Vec<Kept>,
    /// Backups deleted (or, with `dry_run`, that would be).
    pub deleted: Vec<String>,
    /// Backups the policy lets go that are protected (lease, object lock).
    pub skipped: Vec<Skipped>,
    /// Objects of backups that never got a manifest.
    pub orphans: Vec<String>,
    /// Multipart uploads of dead processes, aborted.
    pub uploads_aborted: Vec<String>,
    /// Bytes deleted.
    pub bytes_freed: u64,
    /// Things worth knowing that are not errors.
    pub notes: Vec<String>,
    /// Deletions that failed (the next prune retries them).
    pub errors: Vec<String>,
    /// A physical job's WAL below its oldest kept base backup, deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<crate::engine::wal::WalPruned>,
}

/// One backup directory of a listing: its objects, its leases, and whether
/// its manifest is among them.
#[derive(Debug, Default, Clone)]
pub struct Dir {
    /// Its data objects.
    pub objects: Vec<ObjectInfo>,
    /// Its lease objects.
    pub leases: Vec<ObjectInfo>,
    /// Whether its manifest exists (then it is a backup).
    pub manifest: bool,
}

/// A job's listing grouped by backup id (`{job}/{id}/...`; anything else
/// under the prefix is not drctl's and is left alone).
pub fn group(objects: Vec<ObjectInfo>, prefix: &str) -> BTreeMap<BackupId, Dir> {
    let mut dirs: BTreeMap<BackupId, Dir> = BTreeMap::new();
    for o in objects {
        let Some((id, file)) = o.key.strip_prefix(prefix).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let Ok(id) = BackupId::parse(id) else {
            continue;
        };
        let d = dirs.entry(id).or_default();
        if file == crate::base::manifest::FILE_NAME {
            d.manifest = true;
        }
        if file.starts_with(&format!("{LEASES}/")) {
            d.leases.push(o);
        } else {
            d.objects.push(o);
        }
    }
    dirs
}

/// The clock and limits a plan is made against.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The time the plan is made at.
    pub now: DateTime<Utc>,
    /// A lease older than this is a dead process's.
    pub lease_ttl: Duration,
    /// The repository's Object Lock period, if any.
    pub lock_days: Option<u32>,
    /// Unreferenced data younger than this may be a backup still being written.
    pub orphan_age: Duration,
}

impl Rules {
    fn older(&self, t: DateTime<Utc>, than: Duration) -> bool {
        (self.now - t).to_std().unwrap_or_default() >= than
    }

    /// A lease renewed within the TTL (or without a time: kept, to be safe).
    fn live_lease<'a>(&self, d: &'a Dir) -> Option<&'a ObjectInfo> {
        d.leases
            .iter()
            .find(|l| l.modified.is_none_or(|m| !self.older(m, self.lease_ttl)))
    }

    /// Until when Object Lock retains a backup (from its upload; a day's
    /// margin covers long backups).
    fn locked_until(&self, id: &BackupId) -> Option<DateTime<Utc>> {
        self.lock_days
            .map(|days| id.timestamp() + chrono::Duration::days(i64::from(days) + 1))
            .filter(|u| *u > self.now)
    }
}

/// A backup the plan deletes: its manifest first, then the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Doomed {
    /// The backup.
    pub id: BackupId,
    /// Its manifest's key: deleted first, so it stops being listed at once.
    pub manifest: String,
    /// The rest of its objects.
    pub rest: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
}

/// What a prune does, decided from the listing alone (pure): `apply` runs
/// it, `--dry-run` reports it.
#[derive(Debug, Default)]
pub struct Plan {
    /// Backups kept, each with why.
    pub kept: Vec<Kept>,
    /// Backups the policy lets go that something protects.
    pub skipped: Vec<Skipped>,
    /// Backups to delete, oldest first.
    pub delete: Vec<Doomed>,
    /// Expired leases of kept backups (a process died holding them).
    pub expired_leases: Vec<String>,
    /// Directories without a manifest, old enough and unleased.
    pub orphans: Vec<(BackupId, Vec<ObjectInfo>)>,
    /// Temporary objects a killed writer left inside a committed backup
    /// (a copy killed and redone): no live lease on the directory, so no
    /// writer of them is left.
    pub debris: Vec<ObjectInfo>,
    /// Incomplete multipart uploads old enough and unleased.
    pub aborts: Vec<Upload>,
}

/// A committed backup retention lets go: deleted, unless a live lease or
/// Object Lock protects it (then skipped, saying why).
fn doom(
    id: &BackupId,
    d: &Dir,
    prefix: &str,
    rules: &Rules,
) -> std::result::Result<Doomed, Skipped> {
    if let Some(l) = rules.live_lease(d) {
        return Err(Skipped {
            id: id.to_string(),
            why: format!(
                "in use by a restore, drill or backup in progress (lease {})",
                l.key
            ),
        });
    }
    if let Some(until) = rules.locked_until(id) {
        return Err(Skipped {
            id: id.to_string(),
            why: format!(
                "object lock retains it until about {}",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
        });
    }
    let manifest = format!("{prefix}{id}/{}", crate::base::manifest::FILE_NAME);
    Ok(Doomed {
        id: id.clone(),
        rest: d
            .objects
            .iter()
            .chain(&d.leases)
            .map(|o| o.key.clone())
            .filter(|k| *k != manifest)
            .collect(),
        manifest,
        bytes: d.objects.iter().map(|o| o.size).sum(),
    })
}

/// Whether an object name is a writer's temporary (`.NAME.partial-XXXXXXXX`,
/// what the local store writes before its rename): never an artifact.
pub fn is_temporary(file: &str) -> bool {
    file.starts_with('.') && file.contains(".partial-")
}

/// Decide a prune: `keep` is the retention decision over the committed
/// backups; everything else committed goes unless a live lease or Object
/// Lock protects it.
pub fn plan(
    dirs: &BTreeMap<BackupId, Dir>,
    keep: &BTreeMap<String, crate::base::retention::Reasons>,
    prefix: &str,
    uploads: &[Upload],
    rules: &Rules,
) -> Plan {
    let mut p = Plan {
        kept: keep
            .iter()
            .map(|(id, reasons)| Kept {
                id: id.clone(),
                reasons: reasons.clone(),
            })
            .collect(),
        ..Plan::default()
    };
    for (id, d) in dirs
        .iter()
        .filter(|(id, d)| d.manifest && !keep.contains_key(id.as_str()))
    {
        match doom(id, d, prefix, rules) {
            Ok(d) => p.delete.push(d),
            Err(s) => p.skipped.push(s),
        }
    }
    let doomed: Vec<&BackupId> = p.delete.iter().map(|d| &d.id).collect();
    // Expired leases of kept backups: a process that died holding one (a
    // killed restore, a backup killed after its commit) left it; it no
    // longer protects anything, so it goes like any orphaned object.
    for (_, d) in dirs
        .iter()
        .filter(|(id, d)| d.manifest && !doomed.contains(id))
    {
        p.expired_leases.extend(
            d.leases
                .iter()
                .filter(|l| l.modified.is_some_and(|m| rules.older(m, rules.lease_ttl)))
                .map(|l| l.key.clone()),
        );
    }
    for (_, d) in dirs
        .iter()
        .filter(|(id, d)| d.manifest && !doomed.contains(id) && rules.live_lease(d).is_none())
    {
        p.debris.extend(
            d.objects
                .iter()
                .filter(|o| is_temporary(o.key.rsplit('/').next().unwrap_or("")))
                .cloned(),
        );
    }
    // Orphans: data that never got (or lost) its manifest.
    for (id, d) in dirs.iter().filter(|(_, d)| !d.manifest) {
        let newest = d
            .objects
            .iter()
            .chain(&d.leases)
            .filter_map(|o| o.modified)
            .max();
        if newest.is_some_and(|m| rules.older(m, rules.orphan_age)) && rules.live_lease(d).is_none()
        {
            p.orphans.push((
                id.clone(),
                d.objects.iter().chain(&d.leases).cloned().collect(),
            ));
        }
    }
    for u in uploads {
        let old = u
            .initiated
            .is_some_and(|t| rules.older(t, rules.orphan_age));
        // A backup still being written holds a lease on its directory.
        let leased = u
            .key
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(id, _)| BackupId::parse(id).ok())
            .and_then(|id| dirs.get(&id))
            .is_some_and(|d| rules.live_lease(d).is_some());
        if old && !leased {
            p.aborts.push(u.clone());
        }
    }
    p
}

/// Prune `job` (a backup job) in its own repository by its `retention`
/// (no policy: orphans only).
pub async fn job(cfg: &LoadedConfig, name: &str, opts: &Options) -> Result<Report> {
    let (_, jc) = cfg.job(name)?;
    let repo_name = jc.backup_repository(name)?;
    job_in(cfg, name, repo_name, opts).await
}

/// Prune `job` in `repo_name` (its own repository or one of its copies)
/// by the retention that applies there (see `JobConfig::retention_in`).
pub async fn job_in(
    cfg: &LoadedConfig,
    name: &str,
    repo_name: &str,
    opts: &Options,
) -> Result<Report> {
    let (job_name, jc) = cfg.job(name)?;
    jc.backup_repository(name)?;
    let repo_cfg = cfg.repository(repo_name)?;
    let policy = jc.retention_in(repo_name);
    let repo = Repository::open(repo_name, repo_cfg).await?;
    let tz = jc.scheduling().zone()?;
    let prefix = format!("{job_name}/");
    let dirs = group(repo.objects_of_job(&job_name).await?, &prefix);
    let pins = match policy {
        Some(_) => pinned(&repo, &job_name, &dirs, Utc::now()).await?,
        None => BTreeSet::new(),
    };
    let candidates = candidates(&dirs, opts, &pins);
    refuse_unsafe(&repo, &job_name, &candidates).await?;
    let keep = crate::base::retention::decide(&candidates, policy, tz);
    let mut report = Report {
        job: name.to_owned(),
        repository: repo_name.to_owned(),
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let uploads = match repo.backend().incomplete_uploads(&prefix).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            if matches!(repo_cfg, RepositoryConfig::S3(_)) {
                report.notes.push(
                    "the store does not list incomplete multipart uploads (ListMultipartUploads); set a bucket lifecycle rule AbortIncompleteMultipartUpload instead".into(),
                );
            }
            Vec::new()
        }
        Err(e) => {
            report.errors.push(e.to_string());
            Vec::new()
        }
    };
    let rules = Rules {
        now: Utc::now(),
        lease_ttl: repo.lease_ttl(),
        lock_days: match repo_cfg {
            RepositoryConfig::S3(s) => s.object_lock.as_ref().map(|l| l.days),
            _ => None,
        },
        orphan_age: opts.orphan_age,
    };
    let plan = plan(&dirs, &keep, &prefix, &uploads, &rules);
    apply(&repo, name, plan, opts.dry_run, &mut report).await;
    // In the job's repository and in each copy alike: a copy's WAL is
    // pruned below its own oldest kept base backup.
    if matches!(jc.kind, crate::config::Kind::PostgresPhysical(_)) {
        // The backups left: those kept and those protected.
        let left: Vec<BackupId> = dirs
            .iter()
            .filter(|(id, d)| d.manifest && !report.deleted.iter().any(|x| x == id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        match crate::engine::wal::prune(&repo, &job_name, &left, opts.dry_run).await {
            Ok(w) => {
                report.bytes_freed += w.bytes;
                report.errors.extend(w.errors.iter().cloned());
                report.wal = Some(w);
            }
            Err(e) => report.errors.push(format!("WAL: {e}")),
        }
    }
    Ok(report)
}

/// The committed backups as retention sees them.
/// The committed backups whose pin (`drctl run --keep-for`) has not run
/// out at `now`, from their manifests (the pin's only record). A manifest
/// that cannot be fetched stops the prune: whether it pins its backup is
/// unknown. One that is damaged pins nothing (it is not restorable).
async fn pinned(
    repo: &Repository,
    job: &crate::base::ids::JobName,
    dirs: &BTreeMap<BackupId, Dir>,
    now: DateTime<Utc>,
) -> Result<BTreeSet<BackupId>> {
    let mut out = BTreeSet::new();
    for id in dirs.iter().filter(|(_, d)| d.manifest).map(|(id, _)| id) {
        match repo.read_manifest(job, id).await {
            Ok(m) if m.keep_until.is_some_and(|t| t > now) => {
                out.insert(id.clone());
            }
            Ok(_) | Err(Error::Integrity { .. } | Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn candidates(
    dirs: &BTreeMap<BackupId, Dir>,
    opts: &Options,
    pins: &BTreeSet<BackupId>,
) -> Vec<crate::base::retention::Candidate> {
    dirs.iter()
        .filter(|(_, d)| d.manifest)
        .map(|(id, d)| {
            let committed_at = d
                .objects
                .iter()
                .find(|o| {
                    o.key
                        .ends_with(&format!("/{}", crate::base::manifest::FILE_NAME))
                })
                .and_then(|o| o.modified);
            let known = opts.verdicts.get(id.as_str()).copied().unwrap_or_default();
            crate::base::retention::Candidate {
                id: id.to_string(),
                at: id.timestamp(),
                skewed: crate::services::repository::skew(id.timestamp(), committed_at).is_some(),
                stored_at: committed_at,
                damaged: known.damaged,
                proven: known.proven,
                just_made: opts.just_made.as_deref() == Some(id.as_str()),
                pinned: pins.contains(id),
            }
        })
        .collect()
}

/// Refuse to delete anything while the newest backup's manifest is
/// unreadable (what a commit that went wrong looks like: a full disk, a
/// store that lost the object; deleting older backups then could delete the
/// last good one) or while the two newest come from different sources (two
/// hosts under one job name: each side's policy would delete the other's).
async fn refuse_unsafe(
    repo: &Repository,
    job_name: &crate::base::ids::JobName,
    candidates: &[crate::base::retention::Candidate],
) -> Result<()> {
    let newest_two: Vec<_> = candidates
        .iter()
        .rev()
        .filter(|c| !c.skewed)
        .take(2)
        .collect();
    let mut identities = Vec::new();
    for (i, c) in newest_two.iter().enumerate() {
        let Ok(id) = BackupId::parse(&c.id) else {
            continue;
        };
        match repo.read_manifest(job_name, &id).await {
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
    if let [Some(a), Some(b)] = identities.as_slice() {
        if a != b {
            return Err(Error::Refused(format!(
                "job collision: the two newest backups of {job_name} are of different sources (database {} on server {}, database {} on server {}); retention deletes nothing until one host uses another job name",
                a.1, a.0, b.1, b.0
            )));
        }
    }
    Ok(())
}

/// Carry out `plan` (with `dry_run`, only report it). A delete that fails
/// is an error in the report and leaves the rest of that backup for the
/// next prune; the manifest goes first, so a listed backup is never
/// missing its data.
async fn apply(repo: &Repository, name: &str, plan: Plan, dry_run: bool, report: &mut Report) {
    let store = repo.backend();
    report.kept = plan.kept;
    report.skipped = plan.skipped;
    for d in plan.delete {
        if !dry_run {
            if let Err(e) = store.delete(&d.manifest).await {
                report
                    .errors
                    .push(format!("{}: deleting the manifest: {e}", d.id));
                continue;
            }
            for key in &d.rest {
                if let Err(e) = store.delete(key).await {
                    report.errors.push(format!(
                        "{}: deleting {key} (left as an orphan for the next prune): {e}",
                        d.id
                    ));
                }
            }
        }
        tracing::info!(job = name, backup = %d.id, dry_run, "pruned");
        report.deleted.push(d.id.to_string());
        report.bytes_freed += d.bytes;
    }
    for key in plan.expired_leases {
        if !dry_run {
            if let Err(e) = store.delete(&key).await {
                report.errors.push(format!("expired lease {key}: {e}"));
                continue;
            }
        }
        report.orphans.push(key);
    }
    for o in plan.debris {
        if !dry_run {
            if let Err(e) = store.delete(&o.key).await {
                report.errors.push(format!("leftover {}: {e}", o.key));
                continue;
            }
        }
        report.bytes_freed += o.size;
        report.orphans.push(o.key);
    }
    for (id, objects) in plan.orphans {
        for o in objects {
            if !dry_run {
                if let Err(e) = store.delete(&o.key).await {
                    report.errors.push(format!("orphan {}: {e}", o.key));
                    continue;
                }
            }
            report.bytes_freed += o.size;
            report.orphans.push(o.key);
        }
        tracing::info!(job = name, backup = %id, dry_run, "swept orphaned objects");
    }
    for u in plan.aborts {
        if !dry_run {
            if let Err(e) = store.abort_upload(&u).await {
                report.errors.push(format!("upload of {}: {e}", u.key));
                continue;
            }
        }
        report.uploads_aborted.push(u.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn id(s: i64) -> BackupId {
        BackupId::parse(&format!(
            "{}-h-0000000{}",
            t(s).format("%Y%m%dT%H%M%S%.3fZ"),
            s.rem_euclid(10)
        ))
        .unwrap()
    }
    fn obj(key: String, size: u64, at: i64) -> ObjectInfo {
        ObjectInfo {
            key,
            size,
            modified: Some(t(at)),
        }
    }
    /// A backup directory made at `at`: manifest (or not), one dump, leases
    /// written at the given times.
    fn dir(b: &BackupId, at: i64, manifest: bool, leases: &[i64]) -> Vec<ObjectInfo> {
        let mut v = vec![obj(format!("app/{b}/database.dump.zst"), 100, at)];
        if manifest {
            v.push(obj(format!("app/{b}/manifest.json"), 1, at));
        }
        for (n, l) in leases.iter().enumerate() {
            v.push(obj(format!("app/{b}/{LEASES}/lease-{n}.json"), 1, *l));
        }
        v
    }
    fn rules(now: i64, lock_days: Option<u32>) -> Rules {
        Rules {
            now: t(now),
            lease_ttl: Duration::from_secs(DAY as u64),
            lock_days,
            orphan_age: Duration::from_secs(DAY as u64),
        }
    }
    fn keep(ids: &[&BackupId]) -> BTreeMap<String, crate::base::retention::Reasons> {
        ids.iter().map(|i| (i.to_string(), vec!["last"])).collect()
    }

    #[test]
    fn what_goes_what_stays_and_why() {
        let (old, leased, locked, kept) = (id(0), id(10), id(20 * DAY), id(30 * DAY));
        let now = 31 * DAY;
        let mut objects = Vec::new();
        objects.extend(dir(&old, 0, true, &[]));
        // A restore reading it renewed its lease an hour ago.
        objects.extend(dir(&leased, 10, true, &[now - 3600]));
        objects.extend(dir(&locked, 20 * DAY, true, &[]));
        // Kept, with a lease a dead process left 3 days ago.
        objects.extend(dir(&kept, 30 * DAY, true, &[now - 3 * DAY]));
        let dirs = group(objects, "app/");
        let p = plan(&dirs, &keep(&[&kept]), "app/", &[], &rules(now, Some(30)));
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].id, old);
        assert_eq!(p.delete[0].manifest, format!("app/{old}/manifest.json"));
        assert_eq!(
            p.delete[0].rest,
            vec![format!("app/{old}/database.dump.zst")]
        );
        assert_eq!(p.delete[0].bytes, 101);
        let why: Vec<(&str, &str)> = p
            .skipped
            .iter()
            .map(|s| (s.id.as_str(), s.why.split(' ').next().unwrap_or("")))
            .collect();
        assert_eq!(
            why,
            vec![(leased.as_str(), "in"), (locked.as_str(), "object")]
        );
        assert_eq!(
            p.expired_leases,
            vec![format!("app/{kept}/{LEASES}/lease-0.json")]
        );
        assert_eq!(p.kept.len(), 1);
    }

    #[test]
    fn a_killed_writers_temporary_inside_a_committed_backup_goes_once_no_lease_is_live() {
        let (a, b) = (id(DAY), id(2 * DAY));
        let now = 3 * DAY;
        let mut objects = Vec::new();
        // A copy killed and redone: its temporary stays beside the
        // committed artifacts; the dead copy's lease has expired.
        objects.extend(dir(&a, DAY, true, &[DAY]));
        objects.push(obj(
            format!("app/{a}/.database.dump.zst.partial-0badc0de"),
            8 << 20,
            DAY,
        ));
        // Another, still leased by a copy in progress: left alone.
        objects.extend(dir(&b, 2 * DAY, true, &[now - 60]));
        objects.push(obj(
            format!("app/{b}/.database.dump.zst.partial-00c0ffee"),
            1,
            now - 30,
        ));
        let dirs = group(objects, "app/");
        let p = plan(&dirs, &keep(&[&a, &b]), "app/", &[], &rules(now, None));
        let keys: Vec<&str> = p.debris.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![format!("app/{a}/.database.dump.zst.partial-0badc0de")]
        );
        assert_eq!(
            p.expired_leases,
            vec![format!("app/{a}/{LEASES}/lease-0.json")]
        );
        assert!(!is_temporary("database.dump.zst") && !is_temporary("manifest.json"));
    }

    #[test]
    fn orphans_and_uploads_go_only_when_old_and_unleased() {
        let (young, old, leased) = (id(5 * DAY), id(DAY), id(2 * DAY));
        let now = 5 * DAY + 3600;
        let mut objects = Vec::new();
        objects.extend(dir(&young, 5 * DAY, false, &[]));
        objects.extend(dir(&old, DAY, false, &[]));
        // A slow backup: its data is old, its lease fresh.
        objects.extend(dir(&leased, 2 * DAY, false, &[now - 60]));
        let dirs = group(objects, "app/");
        let upload = |b: &BackupId, at: i64| Upload {
            key: format!("app/{b}/database.dump.zst"),
            upload_id: "u".into(),
            initiated: Some(t(at)),
        };
        let uploads = [
            upload(&old, DAY),
            upload(&leased, 2 * DAY),
            upload(&young, 5 * DAY),
        ];
        let p = plan(&dirs, &BTreeMap::new(), "app/", &uploads, &rules(now, None));
        let orphans: Vec<&BackupId> = p.orphans.iter().map(|(i, _)| i).collect();
        assert_eq!(orphans, vec![&old]);
        assert_eq!(p.orphans[0].1.len(), 1);
        let aborted: Vec<&str> = p.aborts.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(
            aborted,
            vec![format!("app/{old}/database.dump.zst").as_str()]
        );
        assert!(p.delete.is_empty() && p.skipped.is_empty());
    }

    #[test]
    fn a_listing_groups_by_backup_and_ignores_what_is_not_drctls() {
        let b = id(0);
        let mut objects = dir(&b, 0, true, &[7]);
        objects.push(obj("app/not-an-id/x".into(), 1, 0));
        objects.push(obj("app/README".into(), 1, 0));
        let dirs = group(objects, "app/");
        assert_eq!(dirs.len(), 1);
        let d = &dirs[&b];
        assert!(d.manifest);
        assert_eq!((d.objects.len(), d.leases.len()), (2, 1));
    }
}
