//! Restoring a `files` backup into a directory. The whole archive is
//! checked first ([`check_entry`]: no absolute path, no `..`, no link out
//! of the target, no device or FIFO), so a bad entry refuses the restore
//! with nothing extracted; then `tar`'s `unpack_in` (which also refuses
//! writes through symlinked parents) extracts it, setuid/setgid bits
//! dropped unless `--preserve-modes`.

use super::{base_plan, Plan, Report, Resolved, RestoreRequest};
use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
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

/// What identifies the restore's target, for the per-target lock.
pub fn target_key(req: &RestoreRequest) -> Result<String> {
    let dir = target_dir(req)?;
    Ok(std::path::absolute(&dir)
        .unwrap_or(dir)
        .display()
        .to_string())
}

/// What restoring a files backup would do.
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

/// Refuse (exit 4) to write into a non-empty directory without consent.
pub fn consent(req: &RestoreRequest) -> Result<()> {
    let dir = target_dir(req)?;
    let non_empty = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !req.confirmed {
        return Err(Error::Refused(format!(
            "{} is not empty; files there may be overwritten (use --yes to allow)",
            dir.display()
        )));
    }
    Ok(())
}

/// Restore a files backup into an empty (or new) directory, checking the
/// whole archive before the first entry is written.
pub async fn run(
    r: &Resolved<'_>,
    req: &RestoreRequest,
    tmp_dir: &Path,
    progress: Arc<Progress>,
) -> Result<Report> {
    consent(req)?;
    let dir = target_dir(req)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let artifact = r.manifest.artifact("tar").ok_or_else(|| Error::Integrity {
        artifact: r.manifest.id.to_string(),
        message: "manifest lists no tar artifact".into(),
    })?;
    let tmp = tmp_dir.join(format!(
        ".drctl-restore-{}-{}-{}-{:08x}.tar",
        r.job,
        r.manifest.id,
        std::process::id(),
        rand::random::<u32>()
    ));
    let fetch_seconds =
        super::fetch_to_temp(r, req, artifact, &tmp, &progress, "fetching the archive").await?;
    let t1 = std::time::Instant::now();
    let tmp2 = tmp.clone();
    let dir2 = dir.clone();
    let preserve = req.preserve_modes;
    let extracted = tokio::task::spawn_blocking(move || extract(&tmp2, &dir2, preserve)).await;
    let _ = std::fs::remove_file(&tmp);
    extracted.map_err(|e| Error::task("extracting", e))??;
    Ok(Report {
        backup_id: r.manifest.id.to_string(),
        target: dir.display().to_string(),
        bytes_fetched: artifact.stored_bytes,
        fetch_seconds,
        restore_seconds: t1.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

pub use crate::base::tar_entry::check_entry;

/// Every entry of the archive through [`check_entry`]: the first problem,
/// and the number of entries. Used before extraction and by `verify --deep`.
pub fn check_archive<R: std::io::Read>(
    reader: R,
) -> std::io::Result<std::result::Result<usize, String>> {
    let mut a = tar::Archive::new(reader);
    let mut n = 0usize;
    for e in a.entries()? {
        let mut e = e?;
        let path = e.path()?.into_owned();
        let link = e.link_name()?.map(std::borrow::Cow::into_owned);
        if let Err(why) = check_entry(&path, e.header().entry_type(), link.as_deref()) {
            return Ok(Err(why));
        }
        std::io::copy(&mut e, &mut std::io::sink())?;
        n += 1;
    }
    Ok(Ok(n))
}

/// Unpack a tar stream into the empty directory `dir` in one pass, every
/// entry through [`check_entry`] before it is written (modes kept,
/// setuid/setgid/sticky bits dropped). For a target that was empty: an
/// entry refused half-way leaves what came before it, which the caller
/// removes; a target with data in it goes through the two-pass extraction.
pub fn unpack_checked(reader: impl std::io::Read, dir: &Path, artifact: &str) -> Result<()> {
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_mask(0o7000);
    let read_err = |e| Error::io(format!("reading {artifact}"), e);
    for entry in a.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = entry.path().map_err(read_err)?.into_owned();
        let link = entry
            .link_name()
            .map_err(read_err)?
            .map(std::borrow::Cow::into_owned);
        if let Err(why) = check_entry(&path, entry.header().entry_type(), link.as_deref()) {
            return Err(Error::Integrity {
                artifact: artifact.into(),
                message: format!("holds an entry that cannot be restored safely: {why}"),
            });
        }
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Integrity {
                    artifact: artifact.into(),
                    message: format!("{} would land outside {}", path.display(), dir.display()),
                })
            }
            Err(e) => {
                return Err(Error::io(
                    format!("extracting {} from {artifact}", path.display()),
                    e,
                ))
            }
        }
    }
    // The rest of the stream (tar's zero blocks), so the writing side is
    // not cut short and gets to report the object's checksum.
    let mut rest = a.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(read_err)?;
    Ok(())
}

/// What a base backup of a cluster with tablespaces stores beside its
/// `base.tar`: each tablespace's tar unpacked into the directory `dir_of`
/// gives it (created if missing; none: left out), and pg_basebackup's
/// `backup_manifest` into `dd`, where the streamed case has it too (so
/// pg_verifybackup finds it). Shared by the restore and `verify --deep`.
pub async fn unpack_beside_base(
    repo: &crate::services::repository::Repository,
    job: &crate::base::ids::JobName,
    m: &crate::base::manifest::Manifest,
    keys: &crate::services::keys::Keys,
    dd: &Path,
    dir_of: impl Fn(&crate::base::manifest::PhysicalTablespace) -> Option<PathBuf>,
) -> Result<()> {
    for (t, a) in m.tablespace_tars() {
        let Some(dir) = dir_of(t) else { continue };
        crate::base::private_fs::dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        stream_tar(repo, job, m, a, &dir, keys).await?;
    }
    if let Some(a) = m.artifact("pg_backup_manifest") {
        let file = tokio::fs::File::create(dd.join("backup_manifest"))
            .await
            .map_err(|e| Error::io("creating backup_manifest", e))?;
        super::fetch::to_writer(repo, job, &m.id, a, file, None, keys).await?;
    }
    Ok(())
}

/// Fetch a tar of the base backup and unpack it into `dir` in one pass: the
/// stored bytes are hashed as they arrive, each entry is checked before it
/// is written (nothing outside `dir`, no device), and the result stands
/// only if the whole object matched its manifest. One read of the stored
/// object and one write of the cluster, where a temporary file would be
/// three passes.
pub async fn stream_tar(
    repo: &crate::services::repository::Repository,
    job: &crate::base::ids::JobName,
    m: &crate::base::manifest::Manifest,
    artifact: &crate::base::manifest::Artifact,
    dir: &Path,
    keys: &crate::services::keys::Keys,
) -> Result<()> {
    let (into, name) = (dir.to_path_buf(), artifact.name.clone());
    let (fetched, unpacked) =
        super::fetch::to_blocking_reader(repo, job, &m.id, artifact, keys, None, move |r| {
            unpack_checked(r, &into, &name)
        })
        .await?;
    match (fetched, unpacked) {
        // A damaged object explains whatever the unpacking met.
        (Err(e @ Error::Integrity { .. }), _) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Ok(())) => Ok(()),
    }
}

fn extract(archive: &Path, dir: &Path, preserve_modes: bool) -> Result<()> {
    let open = || {
        std::fs::File::open(archive)
            .map_err(|e| Error::io(format!("opening {}", archive.display()), e))
    };
    // Pass 1: refuse the whole restore before the first byte is written.
    match check_archive(std::io::BufReader::new(open()?)) {
        Ok(Ok(_)) => {}
        Ok(Err(why)) => {
            return Err(Error::Refused(format!(
                "the archive holds an entry that cannot be restored safely, so nothing was extracted: {why}"
            )))
        }
        Err(e) => return Err(Error::io("reading the archive", e)),
    }
    let mut a = tar::Archive::new(open()?);
    a.set_preserve_permissions(true);
    if !preserve_modes {
        // setuid, setgid and sticky bits only with --preserve-modes.
        a.set_mask(0o7000);
    }
    a.set_overwrite(true);
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
            Ok(false) => {
                return Err(Error::Refused(format!(
                    "{path:?} would land outside {}; extraction stopped",
                    dir.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("extracting {path}"), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType as T;

    #[test]
    fn entries_that_leave_the_target_or_are_not_files_are_refused() {
        let ok = |p: &str, k, l: Option<&str>| check_entry(Path::new(p), k, l.map(Path::new));
        assert!(ok("etc/app/conf", T::Regular, None).is_ok());
        assert!(ok("./a/b", T::Directory, None).is_ok());
        assert!(ok("a/b/link", T::Symlink, Some("../c")).is_ok());
        assert!(ok("a/hard", T::Link, Some("a/b/file")).is_ok());
        for (p, k, l) in [
            ("../x", T::Regular, None),
            ("a/../../x", T::Regular, None),
            ("/etc/passwd", T::Regular, None),
            ("a/link", T::Symlink, Some("../../etc")),
            ("link", T::Symlink, Some("/etc")),
            ("a/hard", T::Link, Some("../outside")),
            ("dev/sda", T::Block, None),
            ("dev/tty", T::Char, None),
            ("run/fifo", T::Fifo, None),
        ] {
            assert!(ok(p, k, l).is_err(), "{p} {k:?} {l:?}");
        }
    }
}
