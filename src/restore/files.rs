//! Restoring a `files` backup into a directory. Entries are extracted with
//! `tar`'s `unpack_in`, which refuses absolute paths, `..` and writes
//! through symlinked parents, so nothing lands outside the directory.

use super::{base_plan, fetch, Plan, Report, Resolved, RestoreRequest};
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn target_dir(req: &RestoreRequest) -> Result<PathBuf> {
    match &req.to {
        Some(d) if !d.starts_with("postgres") => Ok(PathBuf::from(d)),
        _ => Err(Error::Other(
            "a files backup restores into a directory: pass --to DIR".into(),
        )),
    }
}

pub fn plan(r: &Resolved<'_>, req: &RestoreRequest) -> Result<Plan> {
    let dir = target_dir(req)?;
    Ok(base_plan(
        r,
        dir.display().to_string(),
        false,
        vec![
            "fetch the archive and verify size and SHA-256".into(),
            format!("extract into {} (never outside it)", dir.display()),
        ],
    ))
}

pub async fn run(
    r: &Resolved<'_>,
    req: &RestoreRequest,
    tmp_dir: &Path,
    progress: Arc<Progress>,
) -> Result<Report> {
    let dir = target_dir(req)?;
    if dir.exists() {
        let non_empty = std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if non_empty && !req.confirmed {
            return Err(Error::Refused(format!(
                "{} is not empty; files there may be overwritten (use --yes to allow)",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let artifact = r.manifest.artifact("tar").ok_or_else(|| Error::Integrity {
        artifact: r.manifest.id.to_string(),
        message: "manifest lists no tar artifact".into(),
    })?;
    let tmp = tmp_dir.join(format!("{}-{}.tar", r.job, r.manifest.id));
    progress.set_phase("fetch", artifact.stored_bytes);
    let t0 = std::time::Instant::now();
    let fetch = fetch::to_file(
        &r.repo,
        &r.job,
        &r.manifest.id,
        artifact,
        &tmp,
        Some(progress.clone()),
        &r.keys,
    );
    if let Err(e) = super::cancellable(&req.cancel, "fetching the archive", fetch).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let fetch_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let tmp2 = tmp.clone();
    let dir2 = dir.clone();
    let extracted = tokio::task::spawn_blocking(move || extract(&tmp2, &dir2)).await;
    let _ = std::fs::remove_file(&tmp);
    let warnings = extracted.map_err(|e| Error::Other(format!("extracting: {e}")))??;
    Ok(Report {
        backup_id: r.manifest.id.to_string(),
        target: dir.display().to_string(),
        bytes_fetched: artifact.stored_bytes,
        fetch_seconds,
        restore_seconds: t1.elapsed().as_secs_f64(),
        warnings,
        ..Default::default()
    })
}

fn extract(archive: &Path, dir: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(archive)
        .map_err(|e| Error::io(format!("opening {}", archive.display()), e))?;
    let mut a = tar::Archive::new(f);
    a.set_preserve_permissions(true);
    a.set_overwrite(true);
    let mut warnings = Vec::new();
    for entry in a
        .entries()
        .map_err(|e| Error::io("reading the archive", e))?
    {
        let mut entry = entry.map_err(|e| Error::io("reading the archive", e))?;
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => warnings.push(format!(
                "skipped {path:?}: it would land outside {}",
                dir.display()
            )),
            Err(e) => return Err(Error::io(format!("extracting {path}"), e)),
        }
    }
    Ok(warnings)
}
