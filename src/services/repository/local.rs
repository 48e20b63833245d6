//! A repository in a local (or mounted) directory.
//!
//! Writes go to a hidden temporary file, are fsynced, renamed into place and
//! the directory fsynced, so a crash leaves either nothing or a whole file;
//! the manifest is linked into place, which fails if one already exists.
//!
//! Dumps hold every row and the globals file holds role password hashes, so
//! whatever the process umask, objects are created 0600 and the
//! directories drctl creates 0700: only the service user reads a backup.
//!
//! A shared root (setgid and group rwx: `install -d -m 2770 -g drctl`) is
//! the operator saying two users write here, the daemon's and PostgreSQL's
//! `archive_command` (both in that group): directories are then created
//! 2770 (they keep the group) and objects 0640, so each user reads, adds
//! and removes what the other wrote; others still get nothing.

use super::{Backend, BoxRead, ObjectInfo};
use crate::base::error::{Error, Result};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Bytes per write of a stored object: tokio's largest single file write.
const WRITE_CHUNK: usize = 2 << 20;

/// A repository in a local directory: writes to a temporary name, fsync,
/// then rename, so a key either exists whole or not at all.
pub struct LocalBackend {
    name: String,
    root: PathBuf,
    /// The root is shared with a group (see the module documentation).
    shared: bool,
}

impl LocalBackend {
    /// The backend of repository `name` rooted at `root`.
    pub fn new(name: &str, root: &Path) -> Self {
        LocalBackend {
            name: name.to_owned(),
            root: root.to_path_buf(),
            shared: crate::base::private_fs::is_shared_root(root),
        }
    }

    /// The mode of a new object.
    fn file_mode(&self) -> u32 {
        if self.shared {
            0o640
        } else {
            0o600
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, what: String, e: std::io::Error) -> Error {
        Error::repo(&self.name, format!("{what}: {e}"))
    }

    fn temp_path(final_path: &Path) -> PathBuf {
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        final_path.with_file_name(format!(".{name}.partial-{:08x}", rand::random::<u32>()))
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        let d = tokio::fs::File::open(dir)
            .await
            .map_err(|e| self.err(format!("opening {}", dir.display()), e))?;
        d.sync_all()
            .await
            .map_err(|e| self.err(format!("fsync {}", dir.display()), e))
    }

    async fn prepare_dir(&self, path: &Path) -> Result<PathBuf> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let d = dir.clone();
        let shared = self.shared;
        tokio::task::spawn_blocking(move || {
            if shared {
                crate::base::private_fs::shared_dir_all(&d)
            } else {
                crate::base::private_fs::dir_all(&d)
            }
        })
        .await
        .map_err(|e| Error::repo(&self.name, e))?
        .map_err(|e| self.err(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }

    async fn put_stream(
        &self,
        key: &str,
        mut reader: BoxRead,
        _size_hint: Option<u64>,
    ) -> Result<u64> {
        let path = self.path(key);
        let dir = self.prepare_dir(&path).await?;
        let tmp = Self::temp_path(&path);
        // Removes the temporary file if this future is dropped (cancelled) mid-write.
        let guard = TempGuard(Some(tmp.clone()));
        let result: Result<u64> = async {
            let f = crate::base::private_fs::create_new_mode(&tmp, self.file_mode())
                .await
                .map_err(|e| self.err(format!("creating {}", tmp.display()), e))?;
            // Every write to a tokio file is a hand-off to a blocking thread:
            // the compressor's output arrives in pieces of a few KiB, so it
            // is gathered into 2 MiB writes (tokio's largest) first.
            let mut w = tokio::io::BufWriter::with_capacity(WRITE_CHUNK, f);
            let n = tokio::io::copy_buf(
                &mut tokio::io::BufReader::with_capacity(1 << 20, &mut reader),
                &mut w,
            )
            .await
            .map_err(|e| self.err(format!("writing {}", path.display()), e))?;
            w.flush()
                .await
                .map_err(|e| self.err(format!("writing {}", path.display()), e))?;
            let f = w.into_inner();
            f.sync_all()
                .await
                .map_err(|e| self.err(format!("fsync {}", path.display()), e))?;
            let on_disk = f
                .metadata()
                .await
                .map_err(|e| self.err(format!("stat {}", tmp.display()), e))?
                .len();
            if on_disk != n {
                return Err(Error::repo(
                    &self.name,
                    format!("{key}: wrote {n} bytes but {on_disk} are on disk"),
                ));
            }
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| self.err(format!("renaming into {}", path.display()), e))?;
                guard.disarm();
                self.sync_dir(&dir).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(key);
        let dir = self.prepare_dir(&path).await?;
        let tmp = Self::temp_path(&path);
        let mut f = crate::base::private_fs::create_new_mode(&tmp, self.file_mode())
            .await
            .map_err(|e| self.err(format!("creating {}", tmp.display()), e))?;
        // tokio's File buffers: without flush() a failed write (ENOSPC)
        // stays inside it and an empty file would be linked into place.
        let written = async {
            f.write_all(&bytes).await?;
            f.flush().await?;
            f.sync_all().await?;
            let on_disk = f.metadata().await?.len();
            if on_disk != bytes.len() as u64 {
                return Err(std::io::Error::other(format!(
                    "wrote {} bytes but {on_disk} are on disk",
                    bytes.len()
                )));
            }
            Ok(())
        }
        .await;
        drop(f);
        let linked = match written {
            Ok(()) => tokio::fs::hard_link(&tmp, &path).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => self.sync_dir(&dir).await,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::repo(
                &self.name,
                format!("{key} already exists; refusing to overwrite"),
            )),
            Err(e) => Err(self.err(format!("writing {}", path.display()), e)),
        }
    }

    async fn get(&self, key: &str) -> Result<BoxRead> {
        let path = self.path(key);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("{} in {}", key, self.location())))
            }
            Err(e) => Err(self.err(format!("opening {}", path.display()), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        // A prefix is a string, as in S3: `job/wal/0001.` lists the
        // objects whose keys start so, from the directory that holds them.
        let (start, only) = if prefix.is_empty() || prefix.ends_with('/') {
            (self.path(prefix), None)
        } else {
            let p = self.path(prefix);
            (
                p.parent().map_or_else(|| root.clone(), Path::to_path_buf),
                Some(prefix.to_owned()),
            )
        };
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(Error::repo(
                            &name,
                            format!("listing {}: {e}", dir.display()),
                        ))
                    }
                };
                for entry in entries {
                    let entry = entry.map_err(|e| {
                        Error::repo(&name, format!("listing {}: {e}", dir.display()))
                    })?;
                    let ft = entry.file_type().map_err(|e| Error::repo(&name, e))?;
                    let p = entry.path();
                    if ft.is_dir() {
                        stack.push(p);
                    } else if ft.is_file() {
                        // Partial files (`.NAME.partial-*`) are listed too:
                        // a killed writer leaves them, and prune sweeps them.
                        let meta = entry.metadata().ok();
                        if let Ok(rel) = p.strip_prefix(&root) {
                            out.push(ObjectInfo {
                                key: rel.to_string_lossy().into_owned(),
                                size: meta.as_ref().map_or(0, std::fs::Metadata::len),
                                modified: meta
                                    .and_then(|m| m.modified().ok())
                                    .map(chrono::DateTime::<chrono::Utc>::from),
                            });
                        }
                    }
                }
            }
            if let Some(p) = only {
                out.retain(|o| o.key.starts_with(&p));
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::repo(&self.name, e))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                // Tidy directories left empty, up to the repository root
                // (remove_dir fails harmlessly on a non-empty one).
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| d.starts_with(&self.root) && *d != self.root) {
                    if tokio::fs::remove_dir(d).await.is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(format!("deleting {key}"), e)),
        }
    }
}

struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefix_is_a_string_as_in_s3() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new("t", dir.path());
        for k in [
            "j/wal/0001.aa.zst",
            "j/wal/0001.json",
            "j/wal/0002.json",
            "j/x/y",
        ] {
            b.put_if_absent(k, b"x".to_vec()).await.unwrap();
        }
        let keys = |v: Vec<ObjectInfo>| {
            let mut k: Vec<String> = v.into_iter().map(|o| o.key).collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(b.list("j/wal/0001.").await.unwrap()),
            ["j/wal/0001.aa.zst", "j/wal/0001.json"]
        );
        assert_eq!(
            keys(b.list("j/wal/0001.aa.zst").await.unwrap()),
            ["j/wal/0001.aa.zst"]
        );
        assert_eq!(keys(b.list("j/wal/").await.unwrap()).len(), 3);
        assert!(b.list("j/nothing/").await.unwrap().is_empty());
        assert_eq!(keys(b.list("j/").await.unwrap()).len(), 4);
    }
}
