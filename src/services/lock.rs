//! Host locks: one file per job under `state_dir/locks`, held with flock(2)
//! for the whole run, so `drctl run JOB` and the daemon never run the same
//! job at once on a host. The kernel drops the lock when the process dies,
//! so a crash never leaves a stale lock behind.

use crate::base::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// An exclusive lock on a file in the state directory, held while this
/// value lives (the kernel releases it if the process dies).
pub struct HostLock {
    _file: Flock<std::fs::File>,
}

impl HostLock {
    /// A lock named after any string (a restore target URL or directory),
    /// hashed into a file name.
    pub fn try_acquire_keyed(
        state_dir: &Path,
        prefix: &str,
        key: &str,
    ) -> Result<std::result::Result<HostLock, String>> {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        Self::try_acquire(state_dir, &format!("{prefix}-{}", &h[..16]))
    }

    /// Take the lock for `job`, or return who holds it.
    pub fn try_acquire(
        state_dir: &Path,
        job: &str,
    ) -> Result<std::result::Result<HostLock, String>> {
        crate::services::state::refuse_foreign_owner(state_dir)?;
        let dir = state_dir.join("locks");
        crate::base::private_fs::dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!("{job}.lock"));
        let file = open_lock_file(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let me = format!(
                    "pid {} on {}",
                    std::process::id(),
                    crate::base::host::name()
                );
                let _ = locked.set_len(0);
                let _ = locked.rewind();
                let _ = locked.write_all(me.as_bytes());
                let _ = locked.flush();
                Ok(Ok(HostLock { _file: locked }))
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Ok(Err(if holder.is_empty() {
                    "another process".into()
                } else {
                    holder
                }))
            }
            Err((_, e)) => Err(Error::io(format!("locking {}", path.display()), e.into())),
        }
    }
}

/// The lock file, read-write (so the holder can write who it is), or
/// read-only when it belongs to another user: flock(2) needs only an open
/// descriptor, so a lock file left by a run as another user never stops
/// the service user from taking the lock.
fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    match crate::base::private_fs::open_rw(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e)),
        Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
    }
}
