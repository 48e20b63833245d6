//! `drctl verify` and the `verify` job kind: prove that stored backups are
//! intact without restoring them.
//!
//! Shallow: every artifact is read back and its size and SHA-256 compared
//! with the manifest (no key needed: the hash is of the stored bytes).
//! Deep: also decrypted and decompressed to the end, PostgreSQL dumps fed to
//! `pg_restore -f /dev/null` (which reads every data block, so a dump cut
//! short fails), tar archives walked entry by entry.

use crate::base::error::{Error, Result};
use crate::base::ids::JobName;
use crate::base::manifest::{Artifact, Manifest};
use crate::config::{JobConfig, Kind, LoadedConfig};
use crate::engine::restore::fetch;
use crate::services::repository::Repository;
use serde::Serialize;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What `drctl verify` checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Every committed backup instead of the newest.
    pub all: bool,
    /// Also decrypt, decompress and read each archive.
    pub deep: bool,
    /// age identity for deep verification of encrypted backups.
    pub identity: Option<PathBuf>,
    /// Only this repository (`--repository`); default: the job's own and
    /// each of its copies.
    pub repository: Option<String>,
}

/// One artifact's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactCheck {
    /// Its name in the manifest.
    pub name: String,
    /// Its size in the repository.
    pub stored_bytes: u64,
    /// Whether it passed.
    pub ok: bool,
    /// What was checked, or what is wrong.
    pub detail: String,
}

/// One backup's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct BackupCheck {
    /// Its job.
    pub job: String,
    /// The repository it was read from.
    pub repository: String,
    /// Its id.
    pub backup_id: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// Whether every artifact passed.
    pub ok: bool,
    /// An artifact does not match its manifest (as opposed to "could not check").
    pub integrity_failure: bool,
    /// Each artifact's verdict.
    pub artifacts: Vec<ArtifactCheck>,
}

/// What one verification of several backups found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// Each backup's verdict.
    pub backups: Vec<BackupCheck>,
    /// Bytes read from the repository.
    pub bytes_read: u64,
    /// Jobs that have no committed backup yet (nothing to verify).
    pub without_backups: Vec<String>,
    /// Read through to the data (decoded, archive read to its end).
    pub deep: bool,
    /// The WAL archives of physical jobs: continuity and each file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wal: Vec<crate::engine::wal::WalCheck>,
    /// Jobs that could not be verified at all (repository unreachable,
    /// listing failed), with why: the others were still verified.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<(String, String)>,
}

impl Summary {
    /// The backups that failed.
    pub fn failed(&self) -> impl Iterator<Item = &BackupCheck> {
        self.backups.iter().filter(|b| !b.ok)
    }
    /// Whether every backup passed.
    pub fn ok(&self) -> bool {
        self.failed().next().is_none()
            && self.unreachable.is_empty()
            && self.wal.iter().all(crate::engine::wal::WalCheck::ok)
    }
    /// One line per failed artifact, for errors and alerts.
    pub fn problems(&self) -> String {
        self.failed()
            .flat_map(|b| {
                b.artifacts
                    .iter()
                    .filter(|a| !a.ok)
                    .map(move |a| format!("{}/{}/{}: {}", b.job, b.backup_id, a.name, a.detail))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
    /// The error `drctl verify` exits with when something failed.
    pub fn error(&self) -> Option<Error> {
        if let Some(w) = self.wal.iter().find(|w| !w.ok()) {
            let mut lines: Vec<String> = w.gaps.iter().map(|g| format!("missing: {g}")).collect();
            lines.extend(w.damaged.iter().cloned());
            return Some(Error::Integrity {
                artifact: format!("{}/wal", w.job),
                message: format!(
                    "the WAL archive of {} is not whole:\n{}",
                    w.job,
                    lines.join("\n")
                ),
            });
        }
        let bad: Vec<&BackupCheck> = self.failed().collect();
        let Some(first) = bad.first() else {
            let lines: Vec<String> = self
                .unreachable
                .iter()
                .map(|(j, e)| format!("{j}: {e}"))
                .collect();
            return (!lines.is_empty()).then(|| {
                Error::Other(format!(
                    "{} job(s) could not be verified (the others were):\n{}",
                    lines.len(),
                    lines.join("\n")
                ))
            });
        };
        let message = format!(
            "{} of {} backup(s) failed verification:\n{}",
            bad.len(),
            self.backups.len(),
            self.problems()
        );
        Some(if bad.iter().any(|b| b.integrity_failure) {
            Error::Integrity {
                artifact: format!("{}/{}", first.job, first.backup_id),
                message,
            }
        } else {
            Error::Other(message)
        })
    }
}

/// Raise `backup_damaged:JOB:SCOPE` for each job with a failed backup and
/// clear it for each job whose backups all passed. The scope (`latest` or
/// `all`) is part of the key, so a passing check of the newest backup does
/// not resolve what a full check found in an older one.
pub async fn report(
    cfg: &LoadedConfig,
    state: &crate::services::state::State,
    s: &Summary,
    all: bool,
) {
    use crate::services::alerts::{Alerter, Condition, Severity};
    let scope = if all { "all" } else { "latest" };
    // Retention reads these: damaged backups fill no slot, the newest
    // proven one is kept. Only integrity failures count as damage (an
    // unreachable store says nothing about the backup).
    for b in &s.backups {
        if !b.ok && !b.integrity_failure {
            continue;
        }
        if let Err(e) = state
            .record_verdict(&b.repository, &b.job, &b.backup_id, b.ok, s.deep)
            .await
        {
            tracing::warn!(job = %b.job, backup = %b.backup_id, error = %e, "cannot record the verification");
        }
    }
    // The job's own archive is what `wal_gap` and the daemon's chain
    // check watch; a copy's gaps fail the verification (and its report).
    for w in &s.wal {
        let own = cfg
            .job(&w.job)
            .is_ok_and(|(_, jc)| jc.repository() == Some(w.repository.as_str()));
        if own {
            crate::engine::wal::alert_gaps(cfg, state, w).await;
        }
    }
    let alerter = Alerter::new(cfg, state);
    let mut checked: Vec<(&str, &str)> = s
        .backups
        .iter()
        .map(|b| (b.job.as_str(), b.repository.as_str()))
        .collect();
    checked.dedup();
    for (job, repo) in checked {
        let bad: Vec<&BackupCheck> = s
            .backups
            .iter()
            .filter(|b| b.job == job && b.repository == repo && !b.ok)
            .collect();
        let subject = damaged_subject(cfg, job, repo, scope);
        let r = if bad.is_empty() {
            alerter
                .clear(
                    &format!("backup_damaged:{subject}"),
                    format!("backups of {job} verify again ({scope})"),
                )
                .await
        } else {
            let mut c = Condition::new(
                "backup_damaged",
                &subject,
                Severity::Critical,
                format!("{} backup(s) of {job} failed verification", bad.len()),
            );
            c.job = Some(job.to_owned());
            c.detail = Some(
                bad.iter()
                    .flat_map(|b| {
                        b.artifacts
                            .iter()
                            .filter(|a| !a.ok)
                            .map(move |a| format!("{}/{}: {}", b.backup_id, a.name, a.detail))
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            c.hint = Some(format!(
                "Do not restore from the backups named above. Take a fresh backup now (`drctl run {job}`), look at the storage (disk errors, bucket lifecycle rules, who can delete objects), and run `drctl verify --job {job} --all` to find every damaged backup."
            ));
            alerter.raise(c).await
        };
        if let Err(e) = r {
            tracing::error!(job, error = %e, "cannot record the verification alert");
        }
    }
}

/// The subject of `backup_damaged` for `job`'s backups in `repo`:
/// `JOB:SCOPE` in the job's own repository, `JOB:REPO:SCOPE` in a copy.
pub fn damaged_subject(cfg: &LoadedConfig, job: &str, repo: &str, scope: &str) -> String {
    let own = cfg
        .job(job)
        .ok()
        .and_then(|(_, j)| j.repository())
        .is_none_or(|r| r == repo);
    if own {
        format!("{job}:{scope}")
    } else {
        format!("{job}:{repo}:{scope}")
    }
}

/// Backup jobs to verify: the named ones, or every job with a repository.
pub fn backup_jobs(cfg: &LoadedConfig, only: Option<&[String]>) -> Result<Vec<String>> {
    match only {
        Some(list) => {
            for j in list {
                let (_, job) = cfg.job(j)?;
                job.backup_repository(j)?;
            }
            Ok(list.to_vec())
        }
        None => Ok(cfg
            .config
            .jobs
            .iter()
            .filter(|(_, j)| j.repository().is_some())
            .map(|(n, _)| n.clone())
            .collect()),
    }
}

/// Verify the newest (or every) committed backup of each job in `jobs`.
///
/// What cannot be read is a finding, not a reason to stop: an unreadable
/// manifest is a damaged backup (and the rest are still checked), a job
/// with no backup yet is listed in [`Summary::without_backups`].
pub async fn run(cfg: &LoadedConfig, jobs: &[String], opts: &Options) -> Result<Summary> {
    let mut summary = Summary {
        deep: opts.deep,
        ..Summary::default()
    };
    let mut targets = Vec::new();
    for name in jobs {
        let (_, jc) = cfg.job(name)?;
        jc.backup_repository(name)?;
        let repos = jc.repositories();
        match &opts.repository {
            Some(r) if repos.contains(&r.as_str()) => targets.push((name, r.clone())),
            Some(_) => {}
            None => targets.extend(repos.into_iter().map(|r| (name, r.to_owned()))),
        }
    }
    if let (Some(r), true) = (&opts.repository, targets.is_empty()) {
        return Err(Error::Usage(format!(
            "--repository {r}: none of the jobs ({}) stores backups there",
            jobs.join(", ")
        )));
    }
    for (name, repo) in &targets {
        if let Err(e) = job(cfg, name, repo, opts, &mut summary).await {
            // One broken repository is an error for its jobs only: the
            // others are still verified, and the summary fails.
            if targets.len() == 1 {
                return Err(e);
            }
            let what = if cfg.job(name).ok().and_then(|(_, j)| j.repository()) == Some(repo) {
                (*name).clone()
            } else {
                format!("{name} (in {repo})")
            };
            summary
                .unreachable
                .push((what, crate::base::secret::redact(&e.to_string())));
        }
    }
    Ok(summary)
}

async fn job(
    cfg: &LoadedConfig,
    name: &str,
    repo_name: &str,
    opts: &Options,
    summary: &mut Summary,
) -> Result<()> {
    let (job_name, job) = cfg.job(name)?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let listed = repo.list_backups(&job_name).await?;
    let refs: Vec<_> = if opts.all {
        listed
    } else {
        // The newest one `restore --latest` would pick, plus every newer
        // one it would pass over (those are what needs reporting).
        let cut = listed
            .iter()
            .rposition(|b| b.clock_skew().is_none())
            .unwrap_or(0);
        listed.into_iter().skip(cut).collect()
    };
    if refs.is_empty() {
        summary
            .without_backups
            .push(if job.repository() == Some(repo_name) {
                name.to_owned()
            } else {
                format!("{name} (in {repo_name})")
            });
        return Ok(());
    }
    for b in refs {
        let m = match repo.read_manifest(&job_name, &b.id).await {
            Ok(m) => m,
            Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) => {
                summary.backups.push(BackupCheck {
                    job: name.to_owned(),
                    repository: repo_name.to_owned(),
                    backup_id: b.id.to_string(),
                    finished_at: String::new(),
                    ok: false,
                    integrity_failure: true,
                    artifacts: vec![ArtifactCheck {
                        name: crate::base::manifest::FILE_NAME.into(),
                        stored_bytes: 0,
                        ok: false,
                        detail: crate::base::secret::redact(&e.to_string()),
                    }],
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let keys = if opts.deep {
            crate::services::keys::for_manifest(cfg, job, &m, opts.identity.as_deref())?
        } else {
            None
        };
        let scratch = cfg.config.state_dir.join("tmp");
        let check = backup(&repo, &job_name, job, &m, opts.deep, &keys, &scratch).await;
        summary.bytes_read += check.artifacts.iter().map(|a| a.stored_bytes).sum::<u64>();
        summary.backups.push(check);
    }
    // Copies too: a copy's base backups restore only with its own WAL.
    if matches!(job.kind, crate::config::Kind::PostgresPhysical(_)) {
        summary.wal.push(
            crate::engine::wal::check(
                cfg,
                &repo,
                &job_name,
                if opts.deep {
                    crate::engine::wal::Depth::Deep
                } else {
                    crate::engine::wal::Depth::Records
                },
                opts.identity.as_deref(),
            )
            .await?,
        );
    }
    Ok(())
}

async fn backup(
    repo: &Repository,
    job_name: &JobName,
    job: &JobConfig,
    m: &Manifest,
    deep: bool,
    keys: &crate::services::keys::Keys,
    scratch: &std::path::Path,
) -> BackupCheck {
    let mut artifacts = Vec::new();
    let mut integrity_failure = false;
    for a in &m.artifacts {
        let r = if deep {
            deep_check(repo, job_name, job, m, a, keys, scratch).await
        } else {
            fetch::verify_only(repo, job_name, &m.id, a, None)
                .await
                .map(|()| format!("{} bytes, SHA-256 matches", a.stored_bytes))
        };
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => {
                // A listed backup whose object is gone (NotFound from either
                // backend) is damaged, not unreachable.
                integrity_failure |= matches!(e, Error::Integrity { .. } | Error::NotFound(_));
                (false, crate::base::secret::redact(&e.to_string()))
            }
        };
        artifacts.push(ArtifactCheck {
            name: a.name.clone(),
            stored_bytes: a.stored_bytes,
            ok,
            detail,
        });
    }
    BackupCheck {
        job: job_name.to_string(),
        repository: repo.name.clone(),
        backup_id: m.id.to_string(),
        finished_at: m.finished_at.to_rfc3339(),
        ok: artifacts.iter().all(|a| a.ok),
        integrity_failure,
        artifacts,
    }
}

async fn deep_check(
    repo: &Repository,
    job_name: &JobName,
    job: &JobConfig,
    m: &Manifest,
    a: &Artifact,
    keys: &crate::services::keys::Keys,
    scratch: &std::path::Path,
) -> Result<String> {
    match a.content.as_str() {
        "pg_dump_custom" => {
            // The job's own tools: in its container when it has one (they
            // read what its server's pg_dump wrote); the host's when that
            // container is not there.
            let tools = match &job.kind {
                Kind::Postgres(p) => match crate::services::pg::PgTools::for_job(p).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "verifying with the host's pg_restore");
                        crate::services::pg::PgTools::host_for(p)
                    }
                },
                _ => crate::services::pg::PgTools::locate(None),
            };
            // `--list` would stop after the table of contents, which a
            // custom archive written to a pipe carries first: a dump cut
            // short still lists. Restoring to /dev/null reads every data
            // block to its end, so a truncated or malformed archive fails.
            let mut child = tools
                .spawn(
                    "pg_restore",
                    &crate::services::pg::archive::check_args(),
                    &[],
                    true,
                    false,
                )
                .await?;
            let stdin = child.take_stdin();
            let raw = fetch::to_writer(repo, job_name, &m.id, a, fetch::Lenient(stdin), None, keys)
                .await?;
            child.finish().await.map_err(|e| Error::Integrity {
                artifact: a.name.clone(),
                message: format!("pg_restore cannot read the archive to its end: {e}"),
            })?;
            if raw != a.raw_bytes {
                return Err(size_mismatch(a, raw));
            }
            Ok(format!(
                "SHA-256 matches; decoded {raw} bytes; pg_restore read every data block"
            ))
        }
        "pg_basebackup_tar" => deep_check_base(repo, job_name, job, m, a, keys, scratch).await,
        "tar" | crate::base::manifest::TABLESPACE_TAR => {
            // The same checks a restore applies before extracting, so an
            // archive that verifies is one that restores.
            let (raw, walked) =
                fetch::to_blocking_reader(repo, job_name, &m.id, a, keys, None, |r| {
                    crate::engine::restore::files::check_archive(r)
                })
                .await?;
            let raw = raw?;
            let entries = walked
                .map_err(|e| Error::Integrity {
                    artifact: a.name.clone(),
                    message: format!("not a readable tar archive: {e}"),
                })?
                .map_err(|why| Error::Integrity {
                    artifact: a.name.clone(),
                    message: format!("a restore would refuse this archive: {why}"),
                })?;
            if raw != a.raw_bytes {
                return Err(size_mismatch(a, raw));
            }
            Ok(format!(
                "SHA-256 matches; decoded {raw} bytes; {entries} tar entries"
            ))
        }
        "redis_rdb" => {
            let mut check = RdbSink::default();
            let raw = fetch::to_writer(repo, job_name, &m.id, a, &mut check, None, keys).await?;
            if raw != a.raw_bytes {
                return Err(size_mismatch(a, raw));
            }
            let s = check.0.finish().map_err(|m| Error::Integrity {
                artifact: a.name.clone(),
                message: format!("not a whole RDB file: {m}"),
            })?;
            Ok(format!(
                "SHA-256 matches; decoded {raw} bytes; RDB version {}, {}",
                s.version,
                if s.checksummed {
                    "CRC-64 matches"
                } else {
                    "written without a checksum (rdbchecksum no)"
                }
            ))
        }
        _ => {
            let raw =
                fetch::to_writer(repo, job_name, &m.id, a, tokio::io::sink(), None, keys).await?;
            if raw != a.raw_bytes {
                return Err(size_mismatch(a, raw));
            }
            Ok(format!("SHA-256 matches; decoded {raw} bytes"))
        }
    }
}

/// A base backup read through to what PostgreSQL would accept: unpacked
/// into a scratch directory with the checks a restore applies, then
/// `pg_verifybackup` against the backup's own `backup_manifest` (every
/// file's size and checksum, and the WAL from start to end parsed by
/// pg_waldump). PostgreSQL's tool, not a second implementation of its
/// manifest; without it on this host the walk alone, and the detail says so.
/// The scratch directory (as large as the cluster) is removed at once.
async fn deep_check_base(
    repo: &Repository,
    job_name: &JobName,
    job: &JobConfig,
    m: &Manifest,
    a: &Artifact,
    keys: &crate::services::keys::Keys,
    scratch: &std::path::Path,
) -> Result<String> {
    crate::base::private_fs::dir_all(scratch)
        .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
    let dir = tempfile::Builder::new()
        .prefix("verify-base-")
        .tempdir_in(scratch)
        .map_err(|e| Error::io(format!("creating a directory in {}", scratch.display()), e))?;
    let (into, name) = (dir.path().to_path_buf(), a.name.clone());
    let (raw, unpacked) =
        fetch::to_blocking_reader(repo, job_name, &m.id, a, keys, None, move |r| {
            crate::engine::restore::files::unpack_checked(r, &into, &name)
        })
        .await?;
    // A damaged object explains whatever the unpacking met.
    let raw = raw?;
    unpacked?;
    if raw != a.raw_bytes {
        return Err(size_mismatch(a, raw));
    }
    // A cluster with tablespaces: each tar where the backup_manifest has
    // its files (`pg_tblspc/OID/...`), and the manifest itself.
    let tblspc = dir.path().join("pg_tblspc");
    crate::engine::restore::files::unpack_beside_base(repo, job_name, m, keys, dir.path(), |t| {
        Some(tblspc.join(t.oid.to_string()))
    })
    .await?;
    let bindir = match &job.kind {
        Kind::PostgresPhysical(p) => p.pg_bindir.as_deref(),
        _ => None,
    };
    let tools = crate::services::pg::PgTools::locate(bindir);
    let tool = tools.path("pg_verifybackup");
    if !tool.exists() {
        return Ok(format!(
            "SHA-256 matches; decoded {raw} bytes; unpacked; pg_verifybackup not found ({}): the files were not checked against backup_manifest",
            tool.display()
        ));
    }
    let mut c = tokio::process::Command::new(&tool);
    crate::base::child_env::restrict(&mut c);
    c.env("LC_ALL", "C").arg(dir.path());
    let checked = crate::services::pg::server::run(c, "pg_verifybackup").await;
    drop(dir);
    match checked {
        Ok(out) => Ok(format!(
            "SHA-256 matches; decoded {raw} bytes; pg_verifybackup: {}",
            out.trim()
        )),
        Err(Error::Tool { stderr, .. }) => Err(Error::Integrity {
            artifact: a.name.clone(),
            message: format!("pg_verifybackup rejects the base backup: {stderr}"),
        }),
        Err(e) => Err(e),
    }
}

/// A writer that checks what it is given as an RDB file (`base::rdb`).
#[derive(Default)]
struct RdbSink(crate::base::rdb::Checker);

impl tokio::io::AsyncWrite for RdbSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.update(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn size_mismatch(a: &Artifact, raw: u64) -> Error {
    Error::Integrity {
        artifact: a.name.clone(),
        message: format!(
            "decodes to {raw} bytes, manifest says {} before compression",
            a.raw_bytes
        ),
    }
}
