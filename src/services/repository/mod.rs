//! Repositories: where backups live. A small [`Backend`] trait stores and
//! reads objects by key (one file per backend: `local.rs`, `s3.rs`);
//! [`Repository`] adds the backup-level protocol on top of it:
//!
//! ```text
//! <prefix>/<job>/<backup-id>/<artifact>...   written first, size checked
//! <prefix>/<job>/<backup-id>/manifest.json   written last, create-if-absent
//! ```
//!
//! A backup exists only when its manifest exists, so listings look only for
//! manifests and an interrupted run can never become "latest".

mod local;
#[cfg(test)]
pub mod memory;
mod s3;

pub use local::LocalBackend;
pub use s3::S3Backend;

use crate::base::error::{Error, Result};
use crate::base::ids::{BackupId, JobName};
use crate::base::manifest::{self, Manifest};
use crate::config::RepositoryConfig;
use async_trait::async_trait;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// A boxed reader of an object's bytes.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;

/// One stored object as a listing sees it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The key relative to the repository root.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// Last modification, when the store reports it.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A multipart upload that was started and never completed or aborted.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The object's key.
    pub key: String,
    /// The store's id for the upload.
    pub upload_id: String,
    /// When it started (None: the store does not say).
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// Object storage, by key relative to the repository root.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `file:///var/backups/drctl` or `s3://bucket/prefix`, for messages.
    fn location(&self) -> String;
    /// Store `reader` under `key` whole or not at all; returns bytes stored.
    /// `size_hint` (a guess of the final size) lets S3 pick a part size.
    async fn put_stream(&self, key: &str, reader: BoxRead, size_hint: Option<u64>) -> Result<u64>;
    /// Store small `bytes` under `key` only if nothing is there yet.
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<()>;
    /// Replace the small, mutable object `key` (a host's fleet status)
    /// whole or not at all. Unlike backup objects it takes no Object Lock
    /// retention and no storage class: rewritten every few minutes, it must
    /// stay readable at once and must not pile up locked versions.
    async fn put_replace(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let n = bytes.len() as u64;
        self.put_stream(key, Box::pin(std::io::Cursor::new(bytes)), Some(n))
            .await
            .map(|_| ())
    }
    /// The object's bytes.
    async fn get(&self, key: &str) -> Result<BoxRead>;
    /// Where the object is on this host's filesystem, for a store that
    /// keeps objects there: reading it again is then as cheap as keeping a
    /// copy. `None` for a remote store.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
    /// Every object below `prefix` (recursive), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Remove an object (absent is fine).
    async fn delete(&self, key: &str) -> Result<()>;
    /// Incomplete multipart uploads below `prefix`; `None` if the store
    /// cannot list them (a local directory has none).
    async fn incomplete_uploads(&self, _prefix: &str) -> Result<Option<Vec<Upload>>> {
        Ok(None)
    }
    /// Abort an incomplete multipart upload (its parts cost money).
    async fn abort_upload(&self, _upload: &Upload) -> Result<()> {
        Ok(())
    }
    /// Read back the retention the store applied to `key` and fail if it is
    /// not the configured Object Lock (some S3-compatible stores accept the
    /// headers and ignore them). Nothing to check without Object Lock.
    async fn check_lock(&self, _key: &str) -> Result<()> {
        Ok(())
    }
}

/// Directory inside a backup holding its leases (see [`Repository::lease`]).
pub const LEASES: &str = "leases";

/// A named repository with the backup protocol on top of its backend.
pub struct Repository {
    /// Its name in the config.
    pub name: String,
    backend: std::sync::Arc<dyn Backend>,
    lease_ttl: std::time::Duration,
    /// `rate_limit`: shared by every `Repository` of the same name in this
    /// process (see [`limiter`]).
    limiter: Option<async_speed_limit::Limiter>,
}

/// The one limiter of repository `name` at `rate` in this process, so that
/// the daemon's concurrent jobs writing to one repository share its
/// `rate_limit` instead of each getting all of it. A token bucket on the
/// byte stream (async-speed-limit): the delay follows every read in
/// proportion to its bytes, so the limit holds for any part size and the
/// stream never waits on a timer between parts.
fn limiter(name: &str, rate: u64) -> async_speed_limit::Limiter {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static ALL: OnceLock<Mutex<HashMap<(String, u64), async_speed_limit::Limiter>>> =
        OnceLock::new();
    let all = ALL.get_or_init(|| Mutex::new(HashMap::new()));
    let make = || async_speed_limit::Limiter::new(rate as f64);
    match all.lock() {
        Ok(mut m) => m
            .entry((name.to_owned(), rate))
            .or_insert_with(make)
            .clone(),
        // A poisoned map: a limiter of this stream's own still limits.
        Err(_) => make(),
    }
}

/// A lease that renews itself (every quarter of the TTL, by rewriting its
/// object so the store's timestamp moves) until released or dropped. A
/// dropped lease stops renewing and expires after the TTL: a killed process
/// protects its backup a little too long, never too short.
pub struct HeldLease {
    /// The lease object's key.
    pub key: String,
    backend: std::sync::Arc<dyn Backend>,
    _renew: tokio_util::task::AbortOnDropHandle<()>,
}

impl HeldLease {
    /// Stop renewing and remove the lease.
    pub async fn release(self) -> Result<()> {
        self.backend.delete(&self.key).await
    }
}

/// A committed backup as found in a listing.
#[derive(Debug, Clone)]
pub struct BackupRef {
    /// The job.
    pub job: JobName,
    /// The backup.
    pub id: BackupId,
    /// When the store says the manifest was written (S3 `LastModified`,
    /// file mtime): a time the writing host's clock cannot fake.
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// How far a backup's own start time may run ahead of the store's commit
/// time before its writer's clock is taken to be wrong.
pub const SKEW_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl BackupRef {
    /// How far ahead of the store's clock the writing host's clock ran, when
    /// it ran ahead by more than [`SKEW_TOLERANCE`]. Such a backup claims to
    /// be newer than it is: it is never "latest", never counts for RPO and
    /// never fills a retention slot (or it would push out real, newer ones).
    pub fn clock_skew(&self) -> Option<chrono::TimeDelta> {
        skew(self.id.timestamp(), self.committed_at)
    }
}

/// The pure rule behind [`BackupRef::clock_skew`].
pub fn skew(
    started: chrono::DateTime<chrono::Utc>,
    committed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<chrono::TimeDelta> {
    let ahead = started - committed_at?;
    (ahead > SKEW_TOLERANCE).then_some(ahead)
}

/// The newest usable backup and what was passed over to find it.
pub struct Latest {
    /// The newest usable backup.
    pub backup: BackupRef,
    /// Its manifest, read and checked.
    pub manifest: Manifest,
    /// One line per newer backup that was skipped, and why.
    pub skipped: Vec<String>,
}

impl Repository {
    /// Open repository `name` (an S3 one checks credentials and the bucket).
    pub async fn open(name: &str, cfg: &RepositoryConfig) -> Result<Self> {
        let backend: std::sync::Arc<dyn Backend> = match cfg {
            RepositoryConfig::Local(l) => std::sync::Arc::new(LocalBackend::new(name, &l.path)),
            RepositoryConfig::S3(s) => std::sync::Arc::new(S3Backend::connect(name, s).await?),
        };
        let limiter = match cfg.rate_limit() {
            Some(r) => Some(limiter(name, r.get()?.0)),
            None => None,
        };
        Ok(Repository {
            name: name.to_owned(),
            backend,
            lease_ttl: cfg.lease_ttl(),
            limiter,
        })
    }

    /// `file:///...` or `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The key of artifact `name` of a backup: `{job}/{id}/{name}`.
    pub fn artifact_key(job: &JobName, id: &BackupId, name: &str) -> String {
        format!("{job}/{id}/{name}")
    }

    fn manifest_key(job: &JobName, id: &BackupId) -> String {
        Self::artifact_key(job, id, manifest::FILE_NAME)
    }

    /// Stream an artifact into the repository; returns the bytes stored.
    pub async fn put_artifact(
        &self,
        job: &JobName,
        id: &BackupId,
        name: &str,
        reader: BoxRead,
        size_hint: Option<u64>,
    ) -> Result<u64> {
        self.backend
            .put_stream(
                &Self::artifact_key(job, id, name),
                self.limited(reader),
                size_hint,
            )
            .await
    }

    /// The commit point of a backup. Fails if a manifest is already there.
    ///
    /// It cannot lie: every artifact the manifest names must be in the store
    /// with its recorded size right before the manifest is written (an
    /// orphan sweep elsewhere, or a store that lost an object, fails the run
    /// instead of committing a hole), and the manifest is read back and
    /// compared after writing (a store that accepted a truncated or empty
    /// object fails the run, and that manifest is removed again).
    pub async fn commit(&self, m: &Manifest) -> Result<()> {
        let present = self.objects_of(&m.job, &m.id).await?;
        for a in &m.artifacts {
            let key = Self::artifact_key(&m.job, &m.id, &a.name);
            match present.iter().find(|o| o.key == key) {
                Some(o) if o.size == a.stored_bytes => {}
                Some(o) => {
                    return Err(Error::repo(
                        &self.name,
                        format!(
                            "{key} holds {} bytes, {} were written; not committing",
                            o.size, a.stored_bytes
                        ),
                    ))
                }
                None => {
                    return Err(Error::repo(
                        &self.name,
                        format!("{key} vanished before the commit (deleted by someone else?); not committing"),
                    ))
                }
            }
        }
        // A store that silently ignores Object Lock must fail the run before
        // the backup counts, not be found out when someone deletes it.
        if let Some(a) = m.artifacts.first() {
            self.backend
                .check_lock(&Self::artifact_key(&m.job, &m.id, &a.name))
                .await?;
        }
        let key = Self::manifest_key(&m.job, &m.id);
        self.backend.put_if_absent(&key, m.to_json()).await?;
        let mut last = None;
        for attempt in 0..3 {
            match self.read_manifest(&m.job, &m.id).await {
                Ok(back) if &back == m => return Ok(()),
                Ok(_) => {
                    last = Some(Error::repo(
                        &self.name,
                        format!("{key} reads back different from what was written"),
                    ));
                    break;
                }
                Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) => {
                    last = Some(Error::repo(
                        &self.name,
                        format!("{key} does not read back: {e}"),
                    ));
                    break;
                }
                Err(e) => {
                    // Transport trouble: the manifest may well be fine, so
                    // it stays (discard_partial leaves a committed backup).
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                    continue;
                }
            }
        }
        let e = last.unwrap_or_else(|| Error::repo(&self.name, format!("{key}: read back failed")));
        if matches!(&e, Error::Repository { message, .. } if message.contains("read back")) {
            if let Err(d) = self.backend.delete(&key).await {
                tracing::error!(key = %key, error = %d, "cannot remove a manifest that does not read back; prune and restore will report it as unreadable");
            }
        }
        Err(e)
    }

    /// Committed backups of `job`, oldest first, from one listing.
    pub async fn list_backups(&self, job: &JobName) -> Result<Vec<BackupRef>> {
        let prefix = format!("{job}/");
        let mut refs: Vec<BackupRef> = self
            .backend
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&prefix)?;
                let (id, file) = rest.split_once('/')?;
                let id = (file == manifest::FILE_NAME).then(|| BackupId::parse(id).ok())??;
                Some(BackupRef {
                    job: job.clone(),
                    id,
                    committed_at: o.modified,
                })
            })
            .collect();
        refs.sort_by(|a, b| a.id.cmp(&b.id));
        refs.dedup_by(|a, b| a.id == b.id);
        Ok(refs)
    }

    fn none_committed(&self, job: &JobName) -> Error {
        Error::NotFound(format!(
            "no committed backup of job {job} in repository {} ({})",
            self.name,
            self.location()
        ))
    }

    /// The newest committed backup of `job` whose writer's clock was sane
    /// (see [`BackupRef::clock_skew`]), without reading its manifest.
    pub async fn latest(&self, job: &JobName) -> Result<BackupRef> {
        self.list_backups(job)
            .await?
            .into_iter()
            .rev()
            .find(|b| b.clock_skew().is_none())
            .ok_or_else(|| self.none_committed(job))
    }

    /// The newest backup of `job` that can actually be used: written by a
    /// host whose clock was sane, with a manifest that reads and parses.
    /// Newer ones that fail either test are passed over (and named), so one
    /// damaged manifest or one host with a wrong clock cannot hide the good
    /// backups behind it.
    pub async fn latest_usable(&self, job: &JobName) -> Result<Latest> {
        let mut skipped = Vec::new();
        for b in self.list_backups(job).await?.into_iter().rev() {
            if let Some(ahead) = b.clock_skew() {
                skipped.push(format!(
                    "{}: its host's clock ran {} ahead of the store's; not used as latest",
                    b.id,
                    humantime::format_duration(ahead.to_std().unwrap_or_default())
                ));
                continue;
            }
            match self.read_manifest(job, &b.id).await {
                Ok(manifest) => {
                    return Ok(Latest {
                        backup: b,
                        manifest,
                        skipped,
                    })
                }
                Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) => {
                    skipped.push(format!("{}: {e}", b.id));
                }
                Err(e) => return Err(e),
            }
        }
        let e = self.none_committed(job);
        Err(if skipped.is_empty() {
            e
        } else {
            Error::NotFound(format!("{e}; passed over: {}", skipped.join("; ")))
        })
    }

    /// The newest backup of `job` labelled `label` whose manifest reads
    /// (and whose writer's clock was sane); damaged ones are passed over
    /// with a warning, as for the latest.
    pub async fn latest_labelled(
        &self,
        job: &JobName,
        label: &crate::base::ids::Label,
    ) -> Result<Manifest> {
        for b in self.list_backups(job).await?.into_iter().rev() {
            if b.clock_skew().is_some() {
                continue;
            }
            match self.read_manifest(job, &b.id).await {
                Ok(m) if m.label.as_ref() == Some(label) => return Ok(m),
                Ok(_) => {}
                Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) => {
                    tracing::warn!(job = %job, "passing over backup {}: {e}", b.id);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::NotFound(format!(
            "no committed backup of job {job} labelled {label} in repository {} ({})",
            self.name,
            self.location()
        )))
    }

    /// Read and check a backup's manifest.
    pub async fn read_manifest(&self, job: &JobName, id: &BackupId) -> Result<Manifest> {
        let key = Self::manifest_key(job, id);
        let mut r = self.backend.get(&key).await.map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!(
                "backup {id} of job {job} (no manifest in {})",
                self.location()
            )),
            other => other,
        })?;
        let mut buf = Vec::new();
        use tokio::io::AsyncReadExt;
        (&mut r)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::repo(&self.name, format!("reading {key}: {e}")))?;
        let m = Manifest::parse(&buf, &key)?;
        if &m.id != id || &m.job != job {
            return Err(Error::Integrity {
                artifact: key,
                message: format!("manifest describes {}/{}, not {job}/{id}", m.job, m.id),
            });
        }
        Ok(m)
    }

    /// A reader over a stored artifact's bytes (callers verify them).
    pub async fn get_artifact(&self, job: &JobName, id: &BackupId, name: &str) -> Result<BoxRead> {
        self.get_key(&Self::artifact_key(job, id, name)).await
    }

    /// The file holding `key` when the repository is a directory on this
    /// host without a rate limit (a limit applies to every read, so reads
    /// must then go through [`Repository::get_key`]).
    pub fn local_object(&self, key: &str) -> Option<std::path::PathBuf> {
        self.limiter
            .is_none()
            .then(|| self.backend.local_path(key))
            .flatten()
    }

    /// A reader over any object drctl wrote (WAL), at the rate limit.
    pub async fn get_key(&self, key: &str) -> Result<BoxRead> {
        let r = self.backend.get(key).await?;
        Ok(self.limited(r))
    }

    /// Stream an object drctl names itself (WAL) into the store, at the
    /// rate limit; returns the bytes stored.
    pub async fn put_key(&self, key: &str, reader: BoxRead, size_hint: Option<u64>) -> Result<u64> {
        self.backend
            .put_stream(key, self.limited(reader), size_hint)
            .await
    }

    /// `reader` at most at the repository's `rate_limit`.
    fn limited(&self, reader: BoxRead) -> BoxRead {
        match &self.limiter {
            Some(l) => Box::pin(l.clone().limit(reader)),
            None => reader,
        }
    }

    /// Every object of one backup (manifest included), for tests and pruning.
    pub async fn objects_of(&self, job: &JobName, id: &BackupId) -> Result<Vec<ObjectInfo>> {
        self.backend.list(&format!("{job}/{id}/")).await
    }

    /// Every object under `job/` (all backups, partial or committed).
    pub async fn objects_of_job(&self, job: &JobName) -> Result<Vec<ObjectInfo>> {
        self.backend.list(&format!("{job}/")).await
    }

    /// Mark a backup as in use (a restore or drill reads it, or a backup is
    /// still being written) so prune on any host leaves it alone, orphan and
    /// incomplete-upload sweeps included. The lease is renewed while held;
    /// failing to write it at first is an error (work that cannot protect
    /// its backup does not start).
    pub async fn lease(&self, job: &JobName, id: &BackupId, purpose: &str) -> Result<HeldLease> {
        let host = crate::base::host::name();
        let key = format!(
            "{job}/{id}/{LEASES}/{}-{}-{:08x}.json",
            host.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>(),
            std::process::id(),
            rand::random::<u32>()
        );
        let purpose = purpose.to_owned();
        let body = move || {
            serde_json::json!({
                "purpose": purpose,
                "host": host,
                "pid": std::process::id(),
                "at": chrono::Utc::now(),
            })
            .to_string()
            .into_bytes()
        };
        self.backend.put_if_absent(&key, body()).await?;
        let (backend, k, every) = (self.backend.clone(), key.clone(), self.lease_ttl / 4);
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let bytes = body();
                let n = bytes.len() as u64;
                let reader: BoxRead = Box::pin(std::io::Cursor::new(bytes));
                if let Err(e) = backend.put_stream(&k, reader, Some(n)).await {
                    tracing::warn!(lease = %k, error = %e, "cannot renew a lease; retrying at the next interval");
                }
            }
        });
        Ok(HeldLease {
            key,
            backend: self.backend.clone(),
            _renew: tokio_util::task::AbortOnDropHandle::new(renew),
        })
    }

    /// Delete a lease by key (a dead process's, found in the restore journal).
    pub async fn release(&self, lease: &str) -> Result<()> {
        self.backend.delete(lease).await
    }

    /// How long a lease lives without renewal.
    pub fn lease_ttl(&self) -> std::time::Duration {
        self.lease_ttl
    }

    /// The store underneath, for operations outside the protocol (prune's
    /// deletes, the orphan sweep).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}

#[cfg(test)]
impl Repository {
    /// A repository in memory, for unit tests of what reads and writes it.
    pub fn in_memory() -> (Repository, std::sync::Arc<memory::MemoryBackend>) {
        let mem = std::sync::Arc::new(memory::MemoryBackend::default());
        let repo = Repository {
            name: "mem".into(),
            backend: mem.clone(),
            lease_ttl: std::time::Duration::from_secs(3600),
            limiter: None,
        };
        (repo, mem)
    }
}

#[cfg(test)]
mod protocol {
    use super::memory::MemoryBackend;
    use super::*;
    use crate::base::manifest::Artifact;
    use crate::base::values::Compression;
    use std::sync::Arc;

    fn repo() -> (Repository, Arc<MemoryBackend>) {
        Repository::in_memory()
    }

    fn job() -> JobName {
        JobName::parse("appdb").unwrap()
    }

    /// A backup at `ms` past a fixed instant: its dump stored, manifest not.
    async fn store(repo: &Repository, ms: i64) -> Manifest {
        // In the past by the store's clock (ids ahead of it are skewed).
        let at =
            chrono::Utc::now() - chrono::TimeDelta::hours(1) + chrono::TimeDelta::milliseconds(ms);
        let id = BackupId::new(at, "h");
        let bytes = format!("dump of {id}").into_bytes();
        let n = repo
            .put_artifact(
                &job(),
                &id,
                "database.dump.zst",
                Box::pin(std::io::Cursor::new(bytes.clone())),
                None,
            )
            .await
            .unwrap();
        Manifest {
            format: manifest::FORMAT,
            id,
            job: job(),
            kind: "postgres".into(),
            host: "h".into(),
            started_at: at,
            finished_at: at,
            drctl_version: "test".into(),
            source: None,
            redis: None,
            physical: None,
            artifacts: vec![Artifact {
                name: "database.dump.zst".into(),
                content: "pg_dump_custom".into(),
                raw_bytes: n,
                stored_bytes: n,
                sha256: "00".into(),
                compression: Compression::Zstd,
                encryption_recipients: vec![],
            }],
            tables: vec![],
            label: None,
            keep_until: None,
        }
    }

    #[tokio::test]
    async fn a_commit_lists_the_backup_and_latest_is_the_newest() {
        let (repo, _) = repo();
        let a = store(&repo, 0).await;
        let b = store(&repo, 1000).await;
        repo.commit(&a).await.unwrap();
        repo.commit(&b).await.unwrap();
        let listed: Vec<BackupId> = repo
            .list_backups(&job())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, vec![a.id.clone(), b.id.clone()]);
        assert_eq!(repo.latest(&job()).await.unwrap().id, b.id);
        // A second commit of the same backup never overwrites it.
        assert!(repo.commit(&b).await.is_err());
    }

    #[tokio::test]
    async fn a_commit_refuses_a_missing_or_short_artifact_and_writes_no_manifest() {
        let (repo, mem) = repo();
        let m = store(&repo, 0).await;
        let key = Repository::artifact_key(&m.job, &m.id, "database.dump.zst");
        mem.tamper(&key, b"short".to_vec());
        let e = repo.commit(&m).await.unwrap_err().to_string();
        assert!(e.contains("bytes"), "{e}");
        mem.remove(&key);
        let e = repo.commit(&m).await.unwrap_err().to_string();
        assert!(e.contains("vanished"), "{e}");
        assert!(repo.list_backups(&job()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_store_failing_at_any_step_of_the_commit_never_lists_a_backup_that_does_not_read() {
        // The commit's calls: list (artifacts), put_if_absent (manifest),
        // get (read back). Fail each in turn.
        let mut refused = 0;
        for (op, n) in [("list", 1), ("put_if_absent", 1), ("get", 1), ("get", 2)] {
            let (repo, mem) = repo();
            let m = store(&repo, 0).await;
            mem.fail_nth(op, n);
            let committed = repo.commit(&m).await;
            let listed = repo.list_backups(&job()).await.unwrap();
            if committed.is_ok() {
                // Transport trouble on read back: retried, then it reads.
                assert_eq!(listed.len(), 1, "{op} #{n}");
            } else {
                refused += 1;
                for b in &listed {
                    assert!(
                        repo.read_manifest(&job(), &b.id).await.is_ok(),
                        "{op} #{n}: listed but unreadable"
                    );
                }
            }
        }
        assert!(
            refused >= 2,
            "the listing and the manifest write must fail the commit"
        );
    }

    #[tokio::test]
    async fn latest_usable_passes_over_an_unreadable_manifest() {
        let (repo, mem) = repo();
        let a = store(&repo, 0).await;
        let b = store(&repo, 1000).await;
        repo.commit(&a).await.unwrap();
        repo.commit(&b).await.unwrap();
        mem.tamper(
            &Repository::manifest_key(&b.job, &b.id),
            b"{ not json".to_vec(),
        );
        let l = repo.latest_usable(&job()).await.unwrap();
        assert_eq!(l.manifest.id, a.id);
        assert_eq!(l.skipped.len(), 1);
        assert!(l.skipped[0].starts_with(b.id.as_str()), "{:?}", l.skipped);
    }

    #[tokio::test]
    async fn a_lease_is_an_object_in_the_backup_and_release_removes_it() {
        let (repo, mem) = repo();
        let m = store(&repo, 0).await;
        repo.commit(&m).await.unwrap();
        let lease = repo.lease(&job(), &m.id, "restore").await.unwrap();
        assert!(lease.key.starts_with(&format!("appdb/{}/{LEASES}/", m.id)));
        assert!(mem.keys().contains(&lease.key));
        lease.release().await.unwrap();
        assert!(mem.keys().iter().all(|k| !k.contains(LEASES)));
        // A lease that cannot be written fails: the work does not start.
        mem.fail_nth("put_if_absent", 1);
        assert!(repo.lease(&job(), &m.id, "restore").await.is_err());
    }
}
