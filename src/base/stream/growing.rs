//! A file another process is still writing, read as a stream to its end,
//! its disk space given back as it is read.
//!
//! pg_basebackup writes a cluster with tablespaces only into a directory, one
//! tar after the other. Following each tar while it is written lets the
//! backup store it at the same time, and punching out what was read
//! (`FALLOC_FL_PUNCH_HOLE`) keeps the scratch directory near empty instead
//! of as large as the cluster. Where the file system cannot punch holes the
//! file keeps its blocks until it is removed, which is only slower to free.

use bytes::Bytes;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncRead;

/// How long to wait for more bytes at the end of a file not yet finished.
const POLL: Duration = Duration::from_millis(20);
const CHUNK: usize = 1 << 20;

/// Read `path` from its start until `finished()` says the writer is done
/// with it and everything it wrote has been read. `finished` is asked only
/// at the end of what is there, and one more read follows its yes, so bytes
/// written just before the writer closed the file are not lost.
pub fn follow(
    path: PathBuf,
    finished: impl Fn() -> bool + Send + 'static,
) -> impl AsyncRead + Send + Unpin + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = pump(&path, &finished, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let chunks =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    tokio_util::io::StreamReader::new(Box::pin(chunks))
}

fn pump(
    path: &std::path::Path,
    finished: &dyn Fn() -> bool,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    // Written by this user's child: open for writing too, which punching
    // holes needs (nothing is ever written through it).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut at: u64 = 0;
    let mut punch = true;
    let mut last_call = false;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            if last_call {
                return Ok(());
            }
            if finished() {
                last_call = true;
            } else {
                std::thread::sleep(POLL);
            }
            continue;
        }
        last_call = false;
        if tx
            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .is_err()
        {
            // The reader went away (the backup failed): stop quietly.
            return Ok(());
        }
        if punch {
            punch = release(&file, at, n as u64);
        }
        at += n as u64;
    }
}

/// Give the blocks of `[at, at + len)` back to the file system, keeping the
/// size; false when it cannot (then it is not asked again).
fn release(file: &std::fs::File, at: u64, len: u64) -> bool {
    use nix::fcntl::{fallocate, FallocateFlags};
    let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
        return false;
    };
    match fallocate(
        file.as_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        at,
        len,
    ) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "cannot punch holes in the scratch file; its space is freed when it is removed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_is_read_while_written_to_its_last_byte_and_its_space_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.tar");
        let mut w = std::fs::File::create(&path).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let mut r = follow(path.clone(), move || flag.load(Ordering::SeqCst));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..40u8 {
                    w.write_all(&[i; 100_000]).unwrap();
                    w.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
                // The last bytes land just before the writer says it is done.
                w.write_all(b"end").unwrap();
                drop(w);
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), 40 * 100_000 + 3);
        assert!(got.ends_with(b"end"));
        assert!(got[..100_000].iter().all(|b| *b == 0) && got[3_900_000] == 39);
        // The size stays, the blocks read are gone (where the file system
        // punches holes: ext4, xfs, btrfs, tmpfs).
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 4_000_003);
        use std::os::unix::fs::MetadataExt;
        if can_punch(dir.path()) {
            assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
        } else {
            eprintln!("this file system punches no holes: space release not checked");
        }
    }

    fn can_punch(dir: &std::path::Path) -> bool {
        let p = dir.join("probe");
        std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        release(&f, 0, 1 << 20)
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error() {
        let mut r = follow(PathBuf::from("/nonexistent/x.tar"), || true);
        let mut got = Vec::new();
        assert!(r.read_to_end(&mut got).await.is_err());
    }
}
