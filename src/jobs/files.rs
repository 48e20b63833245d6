//! `files`: a tar of listed paths (R1's `tar czf config-backup.tar.gz .env
//! docker-compose.yml`), compressed and stored like any artifact.
//! Paths are stored relative to `/`, so `tar -xf` into any directory works.

use super::{BackupCtx, BackupOutput, Packing};
use crate::config::FilesJob;
use crate::error::{Error, Result};
use crate::stream::guarded;
use tokio_util::io::SyncIoBridge;

pub async fn backup(ctx: &BackupCtx<'_>, job: &FilesJob) -> Result<BackupOutput> {
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for entry in &job.paths {
        match std::fs::symlink_metadata(entry.path()) {
            Ok(_) => present.push(entry.path().clone()),
            Err(_) if entry.optional() => {
                tracing::info!(path = %entry.path().display(), "optional path missing, skipped");
            }
            Err(e) => missing.push(format!("{}: {e}", entry.path().display())),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Other(format!(
            "files to back up are missing (mark them optional = true if that is expected): {}",
            missing.join("; ")
        )));
    }
    let (reader, writer) = tokio::io::duplex(256 * 1024);
    let (reader, verdict) = guarded(reader);
    let producer = tokio::task::spawn_blocking(move || {
        let result = write_tar(SyncIoBridge::new(writer), &present);
        let _ = verdict.send(result.as_ref().map(|_| ()).map_err(|e| e.clone()));
        result
    });
    let packing = Packing {
        compression: job.compression,
        level: job.compression_level,
        threads: 1,
    };
    let stored = ctx
        .store("files.tar", "tar", reader, packing, None, true)
        .await;
    let produced = producer
        .await
        .map_err(|e| Error::Other(format!("tar writer: {e}")))?;
    produced.map_err(Error::Other)?;
    Ok(BackupOutput {
        artifacts: vec![stored?],
        ..Default::default()
    })
}

fn write_tar<W: std::io::Write>(w: W, paths: &[std::path::PathBuf]) -> Result<(), String> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    for p in paths {
        let name = p.strip_prefix("/").unwrap_or(p);
        let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let r = if meta.is_dir() {
            b.append_dir_all(name, p)
        } else {
            b.append_path_with_name(p, name)
        };
        r.map_err(|e| format!("adding {} to the archive: {e}", p.display()))?;
    }
    let mut w = b
        .into_inner()
        .map_err(|e| format!("finishing the archive: {e}"))?;
    w.flush().map_err(|e| format!("finishing the archive: {e}"))
}
