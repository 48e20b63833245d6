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
mod s3;

pub use local::LocalBackend;
pub use s3::S3Backend;

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};
use crate::ids::{BackupId, JobName};
use crate::manifest::{self, Manifest};
use async_trait::async_trait;
use std::pin::Pin;
use tokio::io::AsyncRead;

pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;

/// One stored object as a listing sees it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Last modification, when the store reports it.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A multipart upload that was started and never completed or aborted.
#[derive(Debug, Clone)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
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
    async fn get(&self, key: &str) -> Result<BoxRead>;
    /// Every object below `prefix` (recursive), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Incomplete multipart uploads below `prefix`; `None` if the store
    /// cannot list them (a local directory has none).
    async fn incomplete_uploads(&self, _prefix: &str) -> Result<Option<Vec<Upload>>> {
        Ok(None)
    }
    async fn abort_upload(&self, _upload: &Upload) -> Result<()> {
        Ok(())
    }
}

/// Directory inside a backup holding its leases (see [`Repository::lease`]).
pub const LEASES: &str = "leases";

/// A named repository with the backup protocol on top of its backend.
pub struct Repository {
    pub name: String,
    backend: Box<dyn Backend>,
}

/// A committed backup as found in a listing.
#[derive(Debug, Clone)]
pub struct BackupRef {
    pub job: JobName,
    pub id: BackupId,
}

impl Repository {
    pub async fn open(name: &str, cfg: &RepositoryConfig) -> Result<Self> {
        let backend: Box<dyn Backend> = match cfg {
            RepositoryConfig::Local(l) => Box::new(LocalBackend::new(name, &l.path)),
            RepositoryConfig::S3(s) => Box::new(S3Backend::connect(name, s).await?),
        };
        Ok(Repository {
            name: name.to_owned(),
            backend,
        })
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn artifact_key(job: &JobName, id: &BackupId, name: &str) -> String {
        format!("{job}/{id}/{name}")
    }

    fn manifest_key(job: &JobName, id: &BackupId) -> String {
        Self::artifact_key(job, id, manifest::FILE_NAME)
    }

    pub async fn put_artifact(
        &self,
        job: &JobName,
        id: &BackupId,
        name: &str,
        reader: BoxRead,
        size_hint: Option<u64>,
    ) -> Result<u64> {
        self.backend
            .put_stream(&Self::artifact_key(job, id, name), reader, size_hint)
            .await
    }

    /// The commit point of a backup. Fails if a manifest is already there.
    pub async fn commit(&self, m: &Manifest) -> Result<()> {
        self.backend
            .put_if_absent(&Self::manifest_key(&m.job, &m.id), m.to_json())
            .await
    }

    /// Committed backups of `job`, oldest first, from one listing.
    pub async fn list_backups(&self, job: &JobName) -> Result<Vec<BackupRef>> {
        let prefix = format!("{job}/");
        let mut ids: Vec<BackupId> = self
            .backend
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&prefix)?;
                let (id, file) = rest.split_once('/')?;
                (file == manifest::FILE_NAME).then(|| BackupId::parse(id).ok())?
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .map(|id| BackupRef {
                job: job.clone(),
                id,
            })
            .collect())
    }

    /// The newest committed backup of `job`.
    pub async fn latest(&self, job: &JobName) -> Result<BackupRef> {
        self.list_backups(job).await?.pop().ok_or_else(|| {
            Error::NotFound(format!(
                "no committed backup of job {job} in repository {} ({})",
                self.name,
                self.location()
            ))
        })
    }

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
        self.backend.get(&Self::artifact_key(job, id, name)).await
    }

    /// Every object of one backup (manifest included), for tests and pruning.
    pub async fn objects_of(&self, job: &JobName, id: &BackupId) -> Result<Vec<ObjectInfo>> {
        self.backend.list(&format!("{job}/{id}/")).await
    }

    /// Every object under `job/` (all backups, partial or committed).
    pub async fn objects_of_job(&self, job: &JobName) -> Result<Vec<ObjectInfo>> {
        self.backend.list(&format!("{job}/")).await
    }

    /// Mark a backup as in use (a restore or drill reads it) so prune on any
    /// host leaves it alone. Release with [`Repository::release`]; a lease
    /// left by a dead process stops counting after a day.
    pub async fn lease(&self, job: &JobName, id: &BackupId, purpose: &str) -> Result<String> {
        let key = format!(
            "{job}/{id}/{LEASES}/{}-{}-{:08x}.json",
            crate::backup::host_name()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>(),
            std::process::id(),
            rand::random::<u32>()
        );
        let body = serde_json::json!({
            "purpose": purpose,
            "host": crate::backup::host_name(),
            "pid": std::process::id(),
            "at": chrono::Utc::now(),
        });
        self.backend
            .put_if_absent(&key, body.to_string().into_bytes())
            .await?;
        Ok(key)
    }

    pub async fn release(&self, lease: &str) -> Result<()> {
        self.backend.delete(lease).await
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}
