//! Restoring a `redis` backup: its `dump.rdb` is written into `--to DIR`,
//! the directory a Redis server loads it from at start (`dir` and
//! `dbfilename` in redis.conf). It is fetched and verified (SHA-256 of the
//! stored bytes) into a temporary file in that directory, checked as an RDB
//! file (magic, version, CRC-64), then renamed over `dump.rdb` in one step;
//! an existing `dump.rdb` needs `--yes` and is kept as
//! `dump.rdb.pre_restore_<timestamp>`. Redis must be stopped while the file
//! is replaced (a running server overwrites it at its next save): the job's
//! `[jobs.X.restore]` hooks stop and start it (`containers` for Docker).

use super::{base_plan, Plan, Report, Resolved, RestoreRequest};
use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name Redis loads by default.
pub const DUMP: &str = "dump.rdb";

fn target_dir(req: &RestoreRequest) -> Result<PathBuf> {
    match &req.to {
        Some(d) if !d.contains("://") => Ok(PathBuf::from(d)),
        _ => Err(Error::Usage(
            "a redis backup restores into a directory (the server's `dir`): pass --to DIR".into(),
        )),
    }
}

/// What identifies the restore's target, for the per-target lock.
pub fn target_key(req: &RestoreRequest) -> Result<String> {
    let dir = target_dir(req)?;
    Ok(std::path::absolute(&dir)
        .unwrap_or(dir)
        .join(DUMP)
        .display()
        .to_string())
}

/// What restoring a redis backup would do.
pub fn plan(r: &Resolved<'_>, req: &RestoreRequest) -> Result<Plan> {
    let dir = target_dir(req)?;
    let dump = dir.join(DUMP);
    let mut steps = vec![
        "fetch the snapshot, verify size and SHA-256, decode it into a temporary file next to the target".into(),
        "check it is a whole RDB file (magic, version, CRC-64)".into(),
    ];
    if dump.exists() {
        steps.push(format!(
            "keep the existing {} as {DUMP}.pre_restore_<timestamp>",
            dump.display()
        ));
    }
    steps.push(format!(
        "rename it to {} (start Redis with dir {} to load it)",
        dump.display(),
        dir.display()
    ));
    Ok(base_plan(
        r,
        dump.display().to_string(),
        dump.exists(),
        steps,
    ))
}

/// Refuse (exit 4) to replace an existing `dump.rdb` without `--yes`.
pub fn consent(req: &RestoreRequest) -> Result<()> {
    let dump = target_dir(req)?.join(DUMP);
    if dump.exists() && !req.confirmed {
        return Err(Error::Refused(format!(
            "{} exists; replacing it needs --yes (it is kept as {DUMP}.pre_restore_<timestamp>), and Redis must be stopped first",
            dump.display()
        )));
    }
    Ok(())
}

/// Restore the snapshot into `DIR/dump.rdb`.
pub async fn run(
    r: &Resolved<'_>,
    req: &RestoreRequest,
    progress: Arc<Progress>,
) -> Result<Report> {
    consent(req)?;
    let dir = target_dir(req)?;
    crate::base::private_fs::dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let artifact = r
        .manifest
        .artifact("redis_rdb")
        .ok_or_else(|| Error::Integrity {
            artifact: r.manifest.id.to_string(),
            message: "manifest lists no RDB artifact".into(),
        })?;
    let tmp = dir.join(format!(
        ".{DUMP}.drctl-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let fetch_seconds =
        super::fetch_to_temp(r, req, artifact, &tmp, &progress, "fetching the snapshot").await?;
    let t1 = std::time::Instant::now();
    let (tmp2, dir2, name) = (tmp.clone(), dir.clone(), artifact.name.clone());
    let placed = tokio::task::spawn_blocking(move || place(&tmp2, &dir2, &name)).await;
    let placed = match placed {
        Ok(r) => r,
        Err(e) => Err(Error::task("placing dump.rdb", e)),
    };
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let kept = placed?;
    let mut warnings = Vec::new();
    if let Some(k) = &kept {
        warnings.push(format!("the previous {DUMP} is kept as {}", k.display()));
    }
    Ok(Report {
        backup_id: r.manifest.id.to_string(),
        target: dir.join(DUMP).display().to_string(),
        bytes_fetched: artifact.stored_bytes,
        fetch_seconds,
        restore_seconds: t1.elapsed().as_secs_f64(),
        warnings,
        ..Default::default()
    })
}

/// Check the fetched file as an RDB, keep an existing `dump.rdb`, and
/// rename the new one into place (fsynced, so a crash leaves the old or
/// the new file, never half of one). Returns where the old one went.
fn place(tmp: &Path, dir: &Path, artifact: &str) -> Result<Option<PathBuf>> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(tmp).map_err(|e| Error::io("reading the fetched snapshot", e))?;
    let mut c = crate::base::rdb::Checker::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading the fetched snapshot", e))?;
        if n == 0 {
            break;
        }
        c.update(&buf[..n]);
    }
    c.finish().map_err(|m| Error::Integrity {
        artifact: artifact.to_owned(),
        message: format!("not a whole RDB file: {m}"),
    })?;
    f.sync_all()
        .map_err(|e| Error::io("syncing the fetched snapshot", e))?;
    let dump = dir.join(DUMP);
    let kept = if dump.exists() {
        let k = dir.join(format!(
            "{DUMP}.pre_restore_{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        std::fs::rename(&dump, &k)
            .map_err(|e| Error::io(format!("keeping {} as {}", dump.display(), k.display()), e))?;
        Some(k)
    } else {
        None
    };
    std::fs::rename(tmp, &dump)
        .map_err(|e| Error::io(format!("renaming the snapshot to {}", dump.display()), e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(kept)
}
