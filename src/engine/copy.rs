//! Copies (3-2-1): a committed backup streamed from a job's repository
//! into each of its `copies`, byte for byte. The stored bytes are already
//! compressed, encrypted and checksummed, so a copy needs no key and no
//! second dump: each artifact passes a [`Checked`] reader on its way (its
//! length and SHA-256 must match the manifest, or the upload fails and the
//! store discards it) and the manifest is committed last, with the same
//! protocol as a fresh backup (sizes checked, Object Lock read back, the
//! manifest read back). A copy killed half-way leaves no manifest: the
//! copy repository does not list it, and the next sync copies it again.
//!
//! Which backups to copy is [`plan`], a pure function: the source's
//! backups missing from the destination that the destination's own
//! retention would keep. Without that, a backfill into a repository that
//! keeps 12 monthly backups would copy every daily one back after each
//! prune had removed it.

use crate::base::error::{Error, Result};
use crate::base::ids::BackupId;
use crate::base::manifest::Manifest;
use crate::base::retention::{Candidate, Policy};
use crate::base::stream::Checked;
use crate::config::LoadedConfig;
use crate::services::lock::HostLock;
use crate::services::repository::Repository;
use crate::services::state::State;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::BTreeSet;

/// One backup of the source as [`plan`] sees it.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its id.
    pub id: BackupId,
    /// Its writer's clock ran ahead of the store's: never copied (it is
    /// never latest and fills no slot where it is either).
    pub skewed: bool,
    /// Pinned (`drctl run --keep-for`) and the pin has not run out: the
    /// destination keeps it whatever its policy, so it is copied.
    pub pinned: bool,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// To copy, newest first (the newest matters most for the RPO).
    pub copy: Vec<BackupId>,
    /// Already in the destination.
    pub present: Vec<BackupId>,
    /// Missing, but the destination's retention would delete them at once.
    pub not_kept: Vec<BackupId>,
    /// Missing, older than `--since`.
    pub too_old: Vec<BackupId>,
}

/// Which backups of `source` to copy into a repository holding `present`,
/// whose retention is `policy` (in time zone `tz`); only those started at
/// or after `since` when given.
pub fn plan(
    source: &[Source],
    present: &BTreeSet<BackupId>,
    policy: Option<&Policy>,
    tz: Tz,
    since: Option<DateTime<Utc>>,
) -> Plan {
    let mut out = Plan::default();
    let mut missing = Vec::new();
    for s in source.iter().filter(|s| !s.skewed) {
        if present.contains(&s.id) {
            out.present.push(s.id.clone());
        } else if since.is_some_and(|t| s.id.timestamp() < t) {
            out.too_old.push(s.id.clone());
        } else {
            missing.push(s);
        }
    }
    // Retention as the destination will apply it right after the copy:
    // over what it holds plus everything that would arrive.
    let candidate = |id: &BackupId, pinned: bool| Candidate {
        id: id.to_string(),
        at: id.timestamp(),
        skewed: false,
        stored_at: None,
        damaged: false,
        proven: false,
        just_made: false,
        pinned,
    };
    let all: Vec<Candidate> = present
        .iter()
        .map(|id| candidate(id, false))
        .chain(missing.iter().map(|s| candidate(&s.id, s.pinned)))
        .collect();
    let keep = crate::base::retention::decide(&all, policy, tz);
    for s in missing.into_iter().rev() {
        if keep.contains_key(s.id.as_str()) {
            out.copy.push(s.id.clone());
        } else {
            out.not_kept.push(s.id.clone());
        }
    }
    out
}

/// How copying one backup ended.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    /// The backup.
    pub id: String,
    /// Bytes streamed (0 when it was there already).
    pub bytes: u64,
}

/// What a sync of one job into one copy repository did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// The job.
    pub job: String,
    /// The repository copied from.
    pub from: String,
    /// The repository copied to.
    pub to: String,
    /// Backups copied now.
    pub copied: Vec<Copied>,
    /// Backups already there.
    pub present: usize,
    /// Backups the destination's retention would not keep (not copied).
    pub not_kept: usize,
    /// Backups older than `--since` (not copied).
    pub too_old: usize,
    /// Backups that could not be copied, each with why.
    pub failed: Vec<(String, String)>,
    /// Source backups that are damaged (their manifest or an artifact
    /// fails its checksum): nothing of them was stored.
    pub damaged: Vec<String>,
    /// A physical job's WAL files copied now.
    pub wal_files: usize,
    /// Their stored bytes.
    pub wal_bytes: u64,
}

impl Report {
    /// One line per failure, for the alert and the exit status.
    pub fn problems(&self) -> Option<String> {
        (!self.failed.is_empty()).then(|| {
            self.failed
                .iter()
                .map(|(id, e)| format!("{id}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Copy backup `m` from `from` into `to` (see the module documentation).
/// Returns the bytes streamed; 0 when `to` holds the same backup already.
/// A different manifest under the same id in `to` is refused.
pub async fn one(from: &Repository, to: &Repository, m: &Manifest) -> Result<u64> {
    match to.read_manifest(&m.job, &m.id).await {
        Ok(there) if &there == m => return Ok(0),
        Ok(_) => {
            return Err(Error::Refused(format!(
                "repository {} holds a different backup {} of {}; not overwriting it",
                to.name, m.id, m.job
            )))
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    // Announce the copy in the destination first, as a backup does: an
    // orphan or multipart sweep there leaves a leased directory alone.
    let lease = to.lease(&m.job, &m.id, "copy in progress").await?;
    let result = async {
        let mut bytes = 0;
        for a in &m.artifacts {
            let src = from.get_artifact(&m.job, &m.id, &a.name).await?;
            let (checked, mismatch) = Checked::new(src, a.stored_bytes, &a.sha256);
            let put = to
                .put_artifact(
                    &m.job,
                    &m.id,
                    &a.name,
                    Box::pin(checked),
                    Some(a.stored_bytes),
                )
                .await;
            match (put, mismatch.found()) {
                (_, Some(what)) => {
                    return Err(Error::Integrity {
                        artifact: format!(
                            "{}/{}/{} in repository {}",
                            m.job, m.id, a.name, from.name
                        ),
                        message: what,
                    })
                }
                (Ok(n), None) => bytes += n,
                (Err(e), None) => return Err(e),
            }
        }
        to.commit(m).await?;
        Ok(bytes)
    }
    .await;
    if result.is_err() {
        crate::engine::backup::discard_partial(to, &m.job, &m.id).await;
    }
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "cannot remove the copy's lease; it expires by itself");
    }
    result
}

/// Copy what [`plan`] picks of job `job` from its repository into `to`.
/// Every backup is tried; failures are in the report (with the error of
/// the first unreachable store returned instead, when nothing could even
/// be listed).
pub async fn sync(
    cfg: &LoadedConfig,
    state: &State,
    job: &str,
    to: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Report> {
    let (job_name, jc) = cfg.job(job)?;
    let from_name = jc.backup_repository(job)?;
    if to == from_name {
        return Err(Error::Usage(format!(
            "repository {to} is job {job}'s own repository; copies go to another one"
        )));
    }
    let from = Repository::open(from_name, cfg.repository(from_name)?).await?;
    let dest = Repository::open(to, cfg.repository(to)?).await?;
    let tz = jc.scheduling().zone()?;
    let mut report = Report {
        job: job.to_owned(),
        from: from_name.to_owned(),
        to: to.to_owned(),
        ..Report::default()
    };
    let present: BTreeSet<BackupId> = dest
        .list_backups(&job_name)
        .await?
        .into_iter()
        .map(|b| b.id)
        .collect();
    let listed = from.list_backups(&job_name).await?;
    // Manifests are read only for what is missing: pins decide the plan,
    // and the manifest is what gets copied.
    let mut manifests = std::collections::BTreeMap::new();
    let mut sources = Vec::new();
    for b in &listed {
        let skewed = b.clock_skew().is_some();
        let mut pinned = false;
        if !skewed && !present.contains(&b.id) && since.is_none_or(|t| b.id.timestamp() >= t) {
            match from.read_manifest(&job_name, &b.id).await {
                Ok(m) => {
                    pinned = m.keep_until.is_some_and(|t| t > Utc::now());
                    manifests.insert(b.id.clone(), m);
                }
                Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) => {
                    report.damaged.push(b.id.to_string());
                    report.failed.push((b.id.to_string(), e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        sources.push(Source {
            id: b.id.clone(),
            skewed,
            pinned,
        });
    }
    let p = plan(&sources, &present, jc.retention_in(to), tz, since);
    report.present = p.present.len();
    report.not_kept = p.not_kept.len();
    report.too_old = p.too_old.len();
    // A physical job's base backups are only restorable with their WAL:
    // it goes first (listed after the backups, so it holds every listed
    // backup's own range), and a base backup whose range did not arrive
    // is not committed in the copy.
    let wal = match &jc.kind {
        crate::config::Kind::PostgresPhysical(_) => {
            copy_wal(
                &from,
                &dest,
                &job_name,
                &present,
                &p.copy,
                &manifests,
                &mut report,
            )
            .await?
        }
        _ => None,
    };
    for id in &p.copy {
        let Some(m) = manifests.get(id) else { continue };
        if let Some(why) = without_its_wal(wal.as_ref(), m, to) {
            report.failed.push((id.to_string(), why));
            continue;
        }
        match one(&from, &dest, m).await {
            Ok(bytes) => {
                if let Err(e) = state.cache_backup(to, m).await {
                    tracing::warn!(error = %e, "could not cache the copy in local state");
                }
                tracing::info!(job, backup = %id, repository = to, bytes, "backup copied");
                report.copied.push(Copied {
                    id: id.to_string(),
                    bytes,
                });
            }
            Err(e) => {
                let text = crate::base::secret::redact(&e.to_string());
                tracing::error!(job, backup = %id, repository = to, error = %text, "copy failed");
                if matches!(e, Error::Integrity { .. }) {
                    report.damaged.push(id.to_string());
                }
                report.failed.push((id.to_string(), text));
            }
        }
    }
    Ok(report)
}

/// Why base backup `m` must not be committed in copy `to` yet: the WAL
/// of its own range is not there (listing `wal`; `None` for a logical
/// job).
fn without_its_wal(
    wal: Option<&crate::engine::wal::Archive>,
    m: &Manifest,
    to: &str,
) -> Option<String> {
    let missing = crate::engine::wal::base_range_missing(wal?, m.physical.as_ref()?);
    (!missing.is_empty()).then(|| {
        format!(
            "not copied: the WAL that makes it consistent is not in repository {to} ({}); the next sync retries",
            missing.join(", ")
        )
    })
}

/// Copy a physical job's WAL into `dest`: what a recovery from the oldest
/// base backup the copy will hold (`present` and `copying`) can need.
/// Returns the copy's WAL listing afterwards (`None`: nothing to copy it
/// for, the copy holds no base backup and gets none).
async fn copy_wal(
    from: &Repository,
    dest: &Repository,
    job: &crate::base::ids::JobName,
    present: &BTreeSet<BackupId>,
    copying: &[BackupId],
    manifests: &std::collections::BTreeMap<BackupId, Manifest>,
    report: &mut Report,
) -> Result<Option<crate::engine::wal::Archive>> {
    let mut starts: Vec<(crate::base::wal::Lsn, u64)> = copying
        .iter()
        .filter_map(|id| manifests.get(id)?.physical.as_ref())
        .map(|p| (p.start_lsn, p.wal_segment_bytes))
        .collect();
    // The oldest base backup already there (by id; one manifest read).
    if let Some(oldest) = present.iter().next() {
        match dest.read_manifest(job, oldest).await {
            Ok(m) => starts.extend(m.physical.map(|p| (p.start_lsn, p.wal_segment_bytes))),
            Err(e) => {
                tracing::warn!(backup = %oldest, error = %e, "cannot read the copy's oldest base backup; copying the WAL the new ones need");
            }
        }
    }
    let Some(keep_from) = starts.into_iter().min() else {
        return Ok(None);
    };
    let copied = crate::engine::wal::copy_missing(from, dest, job, keep_from).await?;
    if copied.files > 0 {
        tracing::info!(job = %job, repository = %dest.name, files = copied.files, bytes = copied.bytes, "WAL copied");
    }
    for e in &copied.errors {
        report.failed.push(("(wal)".into(), e.clone()));
    }
    report.wal_files = copied.files;
    report.wal_bytes = copied.bytes;
    crate::engine::wal::list(dest, job).await.map(Some)
}

/// This host's copy lock of `job`: one sync of a job at a time, so two
/// processes never stream the same backup into one repository (the second
/// one's cleanup would remove the first one's objects). With `wait`, wait
/// for the holder (a run's copy step must not skip the backup it just
/// made); without, `None` when another process holds it.
pub async fn lock(cfg: &LoadedConfig, job: &str, wait: bool) -> Result<Option<HostLock>> {
    let name = format!("copy-{job}");
    let mut said = false;
    loop {
        match HostLock::try_acquire(&cfg.config.state_dir, &name)? {
            Ok(l) => return Ok(Some(l)),
            Err(_) if !wait => return Ok(None),
            Err(holder) => {
                // Once, not every second: an offsite copy can take hours.
                if !said {
                    tracing::info!(job, %holder, "waiting for another copy of this job to finish");
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The alert key of a failing copy of `job` into `repo`.
pub fn alert_key(job: &str, repo: &str) -> String {
    format!("copy_failed:{job}:{repo}")
}

/// Sync `job` into every repository of its `copies` (or only `only`),
/// apply each copy repository's retention after copying, and raise or
/// resolve `copy_failed:JOB:REPO`. The reports, one per repository; a
/// repository that could not even be listed is a report with one failure.
pub async fn sync_all(
    cfg: &LoadedConfig,
    state: &State,
    job: &str,
    only: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Report>> {
    let (_, jc) = cfg.job(job)?;
    let targets: Vec<String> = match only {
        Some(r) => vec![r.to_owned()],
        None => jc.copies().to_vec(),
    };
    let mut out = Vec::new();
    for to in targets {
        let report = match sync(cfg, state, job, &to, since).await {
            Ok(r) => r,
            Err(e @ (Error::Usage(_) | Error::Config { .. } | Error::WrongKind { .. })) => {
                return Err(e)
            }
            Err(e) => Report {
                job: job.to_owned(),
                from: jc.repository().unwrap_or_default().to_owned(),
                to: to.clone(),
                failed: vec![(
                    "(listing)".into(),
                    crate::base::secret::redact(&e.to_string()),
                )],
                ..Report::default()
            },
        };
        if !report.copied.is_empty() && jc.retention_in(&to).is_some() {
            let opts = crate::engine::prune::Options {
                verdicts: state.verdicts(&to, job).await.unwrap_or_default(),
                ..crate::engine::prune::Options::default()
            };
            match crate::engine::prune::job_in(cfg, job, &to, &opts).await {
                Ok(r) => {
                    for e in &r.errors {
                        tracing::warn!(job, repository = %to, error = %e, "prune");
                    }
                }
                Err(e) => {
                    tracing::warn!(job, repository = %to, error = %e, "retention in the copy repository failed");
                }
            }
        }
        alert(cfg, state, &report).await;
        out.push(report);
    }
    Ok(out)
}

/// Raise `copy_failed:JOB:REPO` for a sync that failed, resolve it for
/// one that did not.
async fn alert(cfg: &LoadedConfig, state: &State, r: &Report) {
    use crate::services::alerts::{Alerter, Condition, Severity};
    let alerter = Alerter::new(cfg, state);
    let res = match r.problems() {
        Some(problems) => {
            let mut c = Condition::new(
                "copy_failed",
                &format!("{}:{}", r.job, r.to),
                Severity::Critical,
                format!(
                    "copying backups of {} from {} to {} failed",
                    r.job, r.from, r.to
                ),
            );
            c.job = Some(r.job.clone());
            c.detail = Some(problems);
            c.hint = Some(format!(
                "The backups are safe in {} but exist in one place only. The daemon retries with backoff; fix the repository {} (credentials, network, space) or run `drctl copy --job {} --to {}` by hand.",
                r.from, r.to, r.job, r.to
            ));
            alerter.raise(c).await
        }
        None => {
            alerter
                .clear(
                    &alert_key(&r.job, &r.to),
                    format!("backups of {} are copied to {} again", r.job, r.to),
                )
                .await
        }
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot record the copy alert");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(day: u32, hour: u32) -> BackupId {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 11, day)
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap()
            .and_utc();
        BackupId::new(t, "db1")
    }

    fn src(ids: &[BackupId]) -> Vec<Source> {
        ids.iter()
            .map(|i| Source {
                id: i.clone(),
                skewed: false,
                pinned: false,
            })
            .collect()
    }

    #[test]
    fn copies_what_is_missing_newest_first() {
        let ids = [id(1, 2), id(2, 2), id(3, 2)];
        let present: BTreeSet<_> = [ids[0].clone()].into();
        let p = plan(&src(&ids), &present, None, Tz::UTC, None);
        assert_eq!(p.copy, vec![ids[2].clone(), ids[1].clone()]);
        assert_eq!(p.present, vec![ids[0].clone()]);
        // Everything there: nothing to do (a second sync is a no-op).
        let all: BTreeSet<_> = ids.iter().cloned().collect();
        let p = plan(&src(&ids), &all, None, Tz::UTC, None);
        assert!(p.copy.is_empty());
        assert_eq!(p.present.len(), 3);
    }

    #[test]
    fn a_backfill_copies_only_what_the_destination_keeps() {
        // 40 nightly backups; offsite keeps 2 monthly: the newest of
        // November and of October, nothing else.
        let mut ids = Vec::new();
        for d in 1..=30 {
            ids.push(id(d, 2));
        }
        let oct = BackupId::new(
            chrono::NaiveDate::from_ymd_opt(2026, 10, 31)
                .unwrap()
                .and_hms_opt(2, 0, 0)
                .unwrap()
                .and_utc(),
            "db1",
        );
        ids.insert(0, oct.clone());
        let policy = Policy {
            monthly: 2,
            ..Policy::default()
        };
        let p = plan(&src(&ids), &BTreeSet::new(), Some(&policy), Tz::UTC, None);
        assert_eq!(p.copy, vec![ids[30].clone(), oct]);
        assert_eq!(p.not_kept.len(), 29);
        // After those two are there, the next nightly backup is the new
        // newest (copied); the old newest stays as November's slot holder
        // only until then.
        let present: BTreeSet<_> = p.copy.iter().cloned().collect();
        let mut next = ids.clone();
        let late = id(30, 23);
        next.push(late.clone());
        let p = plan(&src(&next), &present, Some(&policy), Tz::UTC, None);
        assert_eq!(p.copy, vec![late]);
    }

    #[test]
    fn pinned_backups_are_copied_and_skewed_ones_never() {
        let ids = [id(1, 2), id(2, 2), id(3, 2)];
        let mut s = src(&ids);
        s[0].pinned = true;
        s[2].skewed = true;
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let p = plan(&s, &BTreeSet::new(), Some(&policy), Tz::UTC, None);
        assert_eq!(p.copy, vec![ids[1].clone(), ids[0].clone()]);
    }

    #[test]
    fn since_limits_the_backfill() {
        let ids = [id(1, 2), id(2, 2), id(3, 2)];
        let p = plan(
            &src(&ids),
            &BTreeSet::new(),
            None,
            Tz::UTC,
            Some(ids[1].timestamp()),
        );
        assert_eq!(p.copy, vec![ids[2].clone(), ids[1].clone()]);
        assert_eq!(p.too_old, vec![ids[0].clone()]);
    }
}
