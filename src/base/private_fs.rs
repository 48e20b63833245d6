//! Files and directories only their owner can read, whatever the umask.
//!
//! A dump holds every row, the globals file role password hashes, the state
//! database every run's errors: under a umask of 022 (the default outside
//! systemd) they would be world-readable. Modes are set explicitly after
//! creation, because the umask can only take bits away from a mode.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// `mkdir -p` whose every new directory is 0700. A directory that already
/// exists keeps its mode: the operator chose it.
pub fn dir_all(dir: &Path) -> std::io::Result<()> {
    dir_all_mode(dir, 0o700)
}

/// `mkdir -p` under a shared repository root (setgid, group rwx): every
/// new directory is 2770, so it keeps the root's group and both users of
/// a packaged install (the daemon's and PostgreSQL's, sharing that group)
/// can add and remove files in it. Existing directories keep their mode.
pub fn shared_dir_all(dir: &Path) -> std::io::Result<()> {
    dir_all_mode(dir, 0o2770)
}

fn dir_all_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        dir_all_mode(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `root` is a shared repository root: setgid and group rwx, as
/// `install -d -m 2770 -g GROUP` makes it (the operator's choice).
pub fn is_shared_root(root: &Path) -> bool {
    std::fs::metadata(root).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o2070 == 0o2070)
}

/// Open (creating it 0600 if missing) a file for reading and writing; an
/// existing file keeps its mode and content.
pub fn open_rw(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    Ok(f)
}

/// Create an empty file 0600 unless one exists; an existing file is not
/// even opened (see `State::open`: a stray descriptor of a SQLite file
/// drops the process's locks on it when closed).
pub fn create_if_missing(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create a new file, 0600 (fails if it exists).
pub async fn create_new(path: &Path) -> std::io::Result<tokio::fs::File> {
    create_new_mode(path, 0o600).await
}

/// Create a new file with `mode` (0600, or 0640 in a shared repository:
/// the group reads it, nobody else) whatever the umask (fails if it exists).
pub async fn create_new_mode(path: &Path, mode: u32) -> std::io::Result<tokio::fs::File> {
    let f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .await?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .await?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn modes_hold_under_a_permissive_umask() {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        dir_all(&d).unwrap();
        for p in [t.path().join("a"), t.path().join("a/b"), d.clone()] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().mode() & 0o777,
                0o700,
                "{p:?}"
            );
        }
        let f = d.join("x");
        drop(create_new(&f).await.unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        assert!(create_new(&f).await.is_err(), "create_new never overwrites");
        let g = d.join("y");
        drop(open_rw(&g).unwrap());
        assert_eq!(std::fs::metadata(&g).unwrap().mode() & 0o777, 0o600);
        nix::sys::stat::umask(old);
    }

    #[tokio::test]
    async fn a_shared_root_is_setgid_and_group_writable_and_its_tree_stays_so() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(
            !is_shared_root(&root),
            "group rwx without setgid is not shared"
        );
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o2750)).unwrap();
        assert!(
            !is_shared_root(&root),
            "a group that cannot write is not shared"
        );
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o2770)).unwrap();
        assert!(is_shared_root(&root));
        assert!(!is_shared_root(&t.path().join("missing")));
        let d = root.join("job/wal");
        shared_dir_all(&d).unwrap();
        for p in [root.join("job"), d.clone()] {
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o2770);
        }
        let f = d.join("x");
        drop(create_new_mode(&f, 0o640).await.unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
    }
}
