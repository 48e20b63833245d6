//! Job kinds, one file each. A backup kind streams its artifacts into the
//! repository and reports what it measured; `backup.rs` turns that into a
//! manifest and commits it.

pub mod cert_expiry;
pub mod disk;
pub mod files;
pub mod health;
pub mod postgres;
pub mod postgres_physical;
pub mod prune_files;
pub mod prune_images;
pub mod redis;
pub mod reindex;
pub mod vacuum;
pub mod verify;

use crate::base::error::Result;
use crate::base::ids::{BackupId, JobName};
use crate::base::manifest::{Artifact, PostgresSource, TableCount};
use crate::base::progress::Progress;
use crate::base::stream::{encoder, BoxRead, Measure};
use crate::config::Compression;
use crate::services::repository::Repository;
use std::sync::Arc;

/// What a maintenance or check kind gets to work with.
pub struct CheckCtx<'a> {
    /// The configuration.
    pub cfg: &'a crate::config::LoadedConfig,
    /// Where runs, streaks and metrics are kept.
    pub state: &'a crate::services::state::State,
    /// The job's name.
    pub job: &'a str,
    /// The job's shared keys (its time zone reads maintenance windows).
    pub common: &'a crate::config::Common,
    /// Cancelled on shutdown: a kind stops at its next safe point.
    pub cancel: tokio_util::sync::CancellationToken,
}

/// Run a maintenance or check kind (`check_run::run` records and alerts).
pub async fn run_check(
    ctx: &CheckCtx<'_>,
    kind: &crate::config::Kind,
) -> Result<crate::services::checks::Report> {
    use crate::config::Kind;
    match kind {
        Kind::Vacuum(j) => vacuum::run(ctx, j).await,
        Kind::Reindex(j) => reindex::run(ctx, j).await,
        Kind::PruneFiles(j) => prune_files::run(ctx, j).await,
        Kind::PruneImages(j) => prune_images::run(ctx, j).await,
        Kind::Disk(j) => disk::run(ctx, j).await,
        Kind::CertExpiry(j) => cert_expiry::run(ctx, j).await,
        Kind::Health(j) => health::run(ctx, j).await,
        other => Err(crate::Error::WrongKind {
            job: ctx.job.to_string(),
            kind: other.name(),
            expected: "expected a maintenance or check job",
        }),
    }
}

/// What a backup kind gets to work with.
pub struct BackupCtx<'a> {
    /// The job's name.
    pub job: &'a JobName,
    /// The backup being written.
    pub id: &'a BackupId,
    /// Where it is written.
    pub repo: &'a Repository,
    /// Counters for the CLI's progress bar.
    pub progress: Arc<Progress>,
    /// Encrypt every artifact to these recipients.
    pub seal: Option<Seal>,
    /// Where a job that cannot stream may write temporary files
    /// (`STATE_DIR/tmp`): a cluster with tablespaces, which
    /// pg_basebackup writes only to a directory.
    pub scratch: std::path::PathBuf,
}

/// The recipients a backup is encrypted to, parsed once per run.
#[derive(Clone)]
pub struct Seal {
    recipients: Arc<Vec<age::x25519::Recipient>>,
    fingerprints: Vec<String>,
}

impl Seal {
    /// Parse the recipients of `e`, or say which one is not an age key.
    pub fn new(e: &crate::config::Encryption) -> std::result::Result<Self, String> {
        let recipients = crate::base::stream::crypt::parse_recipients(&e.recipients)?;
        let fingerprints = recipients
            .iter()
            .map(crate::base::stream::crypt::fingerprint)
            .collect();
        Ok(Seal {
            recipients: Arc::new(recipients),
            fingerprints,
        })
    }
}

/// What a backup kind produced; the manifest is built from this.
#[derive(Default)]
pub struct BackupOutput {
    /// What was dumped, for a database backup.
    pub source: Option<PostgresSource>,
    /// What was snapshotted, for a Redis backup.
    pub redis: Option<crate::base::manifest::RedisSource>,
    /// The cluster and WAL range, for a physical base backup.
    pub physical: Option<crate::base::manifest::PhysicalSource>,
    /// Every stored artifact, measured.
    pub artifacts: Vec<Artifact>,
    /// Row counts read in the dump's snapshot.
    pub tables: Vec<TableCount>,
    /// What child processes printed (stderr), for the run record.
    pub output: String,
}

/// `source` compressed, then encrypted to `seal`, measured (bytes and
/// SHA-256 of what is stored): the one packing pipeline of backups and WAL.
pub fn pack<R>(
    source: R,
    packing: Packing,
    seal: Option<&Seal>,
) -> (BoxRead, crate::base::stream::Measured)
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    let packed = encoder(source, packing.compression, packing.level, packing.threads);
    let sealed = match seal {
        Some(s) => crate::base::stream::crypt::encrypt(packed, s.recipients.clone()),
        None => packed,
    };
    let (stored, stored_m) = Measure::new(sealed);
    (Box::pin(stored), stored_m)
}

impl Seal {
    /// The recipients' fingerprints, as manifests record them.
    pub fn fingerprints(&self) -> &[String] {
        &self.fingerprints
    }
}

/// Compression settings of one artifact.
#[derive(Clone, Copy)]
pub struct Packing {
    /// The codec.
    pub compression: Compression,
    /// Its level (None: the codec's default for backups).
    pub level: Option<i32>,
    /// zstd worker threads.
    pub threads: u32,
}

impl Packing {
    /// Half the cores (pg_dump and the server need the rest), 1 to 4.
    pub fn default_threads() -> u32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        (cores / 2).clamp(1, 4)
    }
}

impl BackupCtx<'_> {
    /// Stream `source` through measure -> compress -> measure(hash) into the
    /// repository as `<base><suffix>` and describe what was stored.
    pub async fn store<R>(
        &self,
        base: &str,
        content: &str,
        source: R,
        packing: Packing,
        size_hint: Option<u64>,
        show_progress: bool,
    ) -> Result<Artifact>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let name =
            crate::base::manifest::artifact_name(base, packing.compression, self.seal.is_some());
        let (raw, raw_m) = Measure::count_only(source);
        let raw = if show_progress {
            raw.with_progress(self.progress.clone())
        } else {
            raw
        };
        let (boxed, stored_m) = pack(raw, packing, self.seal.as_ref());
        let n = self
            .repo
            .put_artifact(self.job, self.id, &name, boxed, size_hint)
            .await?;
        debug_assert_eq!(n, stored_m.bytes());
        Ok(Artifact {
            name,
            content: content.into(),
            raw_bytes: raw_m.bytes(),
            stored_bytes: stored_m.bytes(),
            sha256: stored_m.sha256(),
            compression: packing.compression,
            encryption_recipients: self
                .seal
                .as_ref()
                .map(|s| s.fingerprints.clone())
                .unwrap_or_default(),
        })
    }
}
