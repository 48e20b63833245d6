//! `files`: a tar of listed paths (R1's `tar czf config-backup.tar.gz .env
//! docker-compose.yml`), compressed and stored like any artifact.
//! Paths are stored relative to `/`, so `tar -xf` into any directory works.

use super::{BackupCtx, BackupOutput, Packing};
use crate::base::error::{Error, IoContext, Result};
use crate::base::stream::guarded;
use crate::config::FilesJob;
use tokio_util::io::SyncIoBridge;

/// Tar the job's paths into one artifact (a missing optional path is
/// skipped and named; a missing required one fails the run).
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
        let _ = verdict.send(
            result
                .as_ref()
                .map(|_| ())
                .map_err(std::string::ToString::to_string),
        );
        result
    });
    let packing = Packing {
        compression: job.storage.compression,
        level: job.storage.compression_level,
        threads: 1,
    };
    let stored = ctx
        .store("files.tar", "tar", reader, packing, None, true)
        .await;
    let produced = producer.await.map_err(|e| Error::task("tar writer", e))?;
    let skipped = produced?;
    let output: String = skipped.iter().map(|s| format!("skipped {s}\n")).collect();
    for s in &skipped {
        tracing::warn!("not in the archive: {s}");
    }
    Ok(BackupOutput {
        artifacts: vec![stored?],
        output,
        ..Default::default()
    })
}

/// The archive holds only what a restore accepts (`restore::files::
/// check_entry`): directories, regular files and links that stay inside
/// the tree. Anything else (a FIFO, a socket, a device, a symlink to an
/// absolute path or out of the tree) is left out and named in the run's
/// output, so every committed backup restores as a whole.
fn write_tar<W: std::io::Write>(w: W, paths: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let mut skipped = Vec::new();
    for p in paths {
        for entry in walkdir::WalkDir::new(p)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry
                .map_err(std::io::Error::from)
                .ctx(|| format!("reading {}", p.display()))?;
            let path = entry.path();
            let name = path.strip_prefix("/").unwrap_or(path);
            let ft = entry.file_type();
            let (kind, link) = if ft.is_dir() {
                (tar::EntryType::Directory, None)
            } else if ft.is_file() {
                (tar::EntryType::Regular, None)
            } else if ft.is_symlink() {
                let target = std::fs::read_link(path)
                    .ctx(|| format!("reading the link {}", path.display()))?;
                (tar::EntryType::Symlink, Some(target))
            } else {
                skipped.push(format!(
                    "{} (not a file, directory or link)",
                    path.display()
                ));
                continue;
            };
            if let Err(why) = crate::base::tar_entry::check_entry(name, kind, link.as_deref()) {
                skipped.push(format!("{} ({why})", path.display()));
                continue;
            }
            let r = if ft.is_dir() {
                b.append_dir(name, path)
            } else {
                b.append_path_with_name(path, name)
            };
            r.ctx(|| format!("adding {} to the archive", path.display()))?;
        }
    }
    let mut w = b.into_inner().ctx(|| "finishing the archive".into())?;
    w.flush().ctx(|| "finishing the archive".into())?;
    Ok(skipped)
}
