//! Fetching an artifact for restore: the stored bytes are hashed while they
//! are decompressed into a local file, and the file is used only if size and
//! SHA-256 match the manifest. A corrupt object never reaches pg_restore.
//!
//! The hashing side keeps reading even if the decoder gives up early, so a
//! damaged artifact is reported as what it is (a checksum mismatch) rather
//! than as a confusing decompression error.

use crate::base::error::{Error, Result};
use crate::base::ids::{BackupId, JobName};
use crate::base::manifest::Artifact;
use crate::base::progress::Progress;
use crate::base::stream::{blocking_decoder, decoder};
use crate::services::keys::{unseal, unseal_blocking, Keys};
use crate::services::repository::Repository;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Check `got` against the manifest's size and digest.
fn verify(artifact: &Artifact, key: &str, size: u64, sha: &str) -> Result<()> {
    if size != artifact.stored_bytes {
        return Err(Error::Integrity {
            artifact: key.into(),
            message: format!(
                "size is {size} bytes, manifest says {}",
                artifact.stored_bytes
            ),
        });
    }
    if sha != artifact.sha256 {
        return Err(Error::Integrity {
            artifact: key.into(),
            message: format!("SHA-256 is {sha}, manifest says {}", artifact.sha256),
        });
    }
    Ok(())
}

/// Stream the stored artifact, hashing it; chunks go to `sink` while it takes them.
async fn read_hashed(
    repo: &Repository,
    key: &str,
    artifact: &Artifact,
    sink: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    progress: Option<Arc<Progress>>,
) -> Result<()> {
    let key = key.to_owned();
    let mut reader = repo.get_key(&key).await.map_err(|e| match e {
        // The manifest names it, so a missing object is damage.
        Error::NotFound(_) => Error::Integrity {
            artifact: key.clone(),
            message: "listed in the manifest but missing from the repository".into(),
        },
        other => other,
    })?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut sink = Some(sink);
    loop {
        let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
        let n = reader
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::repo(&repo.name, format!("reading {key}: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf);
        if let Some(p) = &progress {
            p.add(n as u64);
        }
        if let Some(s) = &sink {
            if s.send(Ok(buf.freeze())).await.is_err() {
                sink = None; // the consumer gave up; keep hashing to say why
            }
        }
    }
    verify(artifact, &key, size, &hex::encode(hasher.finalize()))
}

fn channel_reader(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl tokio::io::AsyncRead + Send + Unpin + 'static {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    tokio_util::io::StreamReader::new(Box::pin(stream))
}

/// Decompress `artifact` into `dest`, verified. On any error `dest` is removed.
#[allow(clippy::too_many_arguments)]
pub async fn to_file(
    repo: &Repository,
    job: &JobName,
    id: &BackupId,
    artifact: &Artifact,
    dest: &Path,
    progress: Option<Arc<Progress>>,
    keys: &Keys,
) -> Result<u64> {
    let f = tokio::fs::File::create(dest)
        .await
        .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    crate::base::faults::point("restore.fetch.file").await;
    // 2 MiB: tokio's largest single file write (each is a blocking hand-off).
    let w = tokio::io::BufWriter::with_capacity(2 << 20, f);
    let result = to_writer(repo, job, id, artifact, w, progress, keys).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

/// Decrypt and decompress `artifact` into `w` while hashing what is read;
/// the result is an error if the stored bytes do not match the manifest, or
/// if they do but cannot be decoded or written (then `w` has partial data).
pub async fn to_writer<W>(
    repo: &Repository,
    job: &JobName,
    id: &BackupId,
    artifact: &Artifact,
    w: W,
    progress: Option<Arc<Progress>>,
    keys: &Keys,
) -> Result<u64>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let key = Repository::artifact_key(job, id, &artifact.name);
    key_to_writer(repo, &key, artifact, w, progress, keys).await
}

/// [`to_writer`] for the object at `key` described by `artifact` (a stored
/// WAL file, whose record reads as an artifact).
pub async fn key_to_writer<W>(
    repo: &Repository,
    key: &str,
    artifact: &Artifact,
    w: W,
    progress: Option<Arc<Progress>>,
    keys: &Keys,
) -> Result<u64>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut decoded = Timed {
        inner: decoder(
            unseal(channel_reader(rx), artifact, keys),
            artifact.compression,
        ),
        progress: progress.clone(),
    };
    let write_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut w = WriteSide {
        inner: w,
        failed: write_failed.clone(),
    };
    let write = async {
        // 1 MiB reads from the decoder (tokio::io::copy asks for 8 KiB at a
        // time: 130k trips through the decoder per GB).
        let n = tokio::io::copy_buf(
            &mut tokio::io::BufReader::with_capacity(1 << 20, &mut decoded),
            &mut w,
        )
        .await?;
        w.flush().await?;
        w.shutdown().await?;
        drop(decoded); // close the channel so the reader drains on its own
        Ok::<u64, std::io::Error>(n)
    };
    let (read, written) = tokio::join!(read_hashed(repo, key, artifact, tx, progress), write);
    match (read, written) {
        (Err(e), _) => Err(e),
        // Our side failed (a full --tmp-dir, a consumer that exited): the
        // backup is fine, so this is not an integrity failure.
        (Ok(()), Err(e)) if write_failed.load(std::sync::atomic::Ordering::SeqCst) => Err(
            Error::io(format!("writing the decoded {}", artifact.name), e),
        ),
        (Ok(()), Err(e)) => Err(Error::Integrity {
            artifact: artifact.name.clone(),
            message: format!(
                "checksum matches but the content cannot be decrypted, decompressed or written: {e}"
            ),
        }),
        (Ok(()), Ok(n)) => Ok(n),
    }
}

/// Decode `artifact` into `consume`, which reads it as a plain `Read` on a
/// blocking thread (a tar walk or unpack) while the stored bytes are
/// hashed on their way: one pass over the object. The decryption and
/// decompression run on that thread too, with blocking I/O, as `zstd -d |
/// tar x` would: one hand-off per stored chunk, not several per decoded
/// buffer. A consumer that stops early does not cut the hashing short (the
/// rest is decoded and discarded), so a damaged object is still reported
/// as what it is. Returns the fetch's result (decoded size, or the
/// integrity error, which explains whatever the consumer met) and the
/// consumer's.
pub async fn to_blocking_reader<T, F>(
    repo: &Repository,
    job: &JobName,
    id: &BackupId,
    artifact: &Artifact,
    keys: &Keys,
    progress: Option<Arc<Progress>>,
    consume: F,
) -> Result<(Result<u64>, T)>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn std::io::Read) -> T + Send + 'static,
{
    let key = Repository::artifact_key(job, id, &artifact.name);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (sealed, keys_for_thread) = (artifact.clone(), keys.clone());
    let timing = progress.clone();
    let consumer = tokio::task::spawn_blocking(move || {
        let mut decoded = Decoding::open(rx, &sealed, &keys_for_thread, timing);
        let consumed = consume(&mut std::io::BufReader::with_capacity(
            1 << 20,
            &mut decoded,
        ));
        (decoded.finish(), consumed)
    });
    let read = read_hashed(repo, &key, artifact, tx, progress).await;
    let (decoded, consumed) = consumer
        .await
        .map_err(|e| Error::task(format!("reading {}", artifact.name), e))?;
    let fetched = read.and_then(|()| {
        decoded.map_err(|e| Error::Integrity {
            artifact: artifact.name.clone(),
            message: format!(
                "checksum matches but the content cannot be decrypted or decompressed: {e}"
            ),
        })
    });
    Ok((fetched, consumed))
}

/// The decoded content of a stored object at `path` (a local
/// repository's file), read on a blocking thread: decrypted and
/// decompressed, not checked (the caller verifies the stored bytes on
/// their own, see [`verify_only`]).
pub fn open_blocking(
    path: &Path,
    artifact: &Artifact,
    keys: &Keys,
) -> std::io::Result<crate::base::stream::BlockingRead> {
    let f = std::fs::File::open(path)?;
    let plain = unseal_blocking(
        std::io::BufReader::with_capacity(1 << 20, f),
        artifact,
        keys,
    )?;
    blocking_decoder(plain, artifact.compression)
}

/// The stored chunks as the hashing side hands them over, read on a
/// blocking thread. Time spent waiting for them is counted apart, so the
/// decode time reported excludes the download.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
    waited: Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let have = std::io::BufRead::fill_buf(self)?;
            let n = have.len().min(buf.len());
            buf[..n].copy_from_slice(&have[..n]);
            n
        };
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl std::io::BufRead for Chunks {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunk.is_empty() {
            let t = std::time::Instant::now();
            let next = self.rx.blocking_recv();
            self.waited.fetch_add(
                t.elapsed().as_nanos() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            match next {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(e),
                None => break, // the end, or the hashing side gave up (it says why)
            }
        }
        Ok(&self.chunk)
    }
    fn consume(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.chunk, n);
    }
}

/// The decoding end on the consumer's thread: the first decode error is
/// kept (the consumer only sees an I/O error), and the decoded bytes counted.
struct Decoding {
    inner: std::result::Result<crate::base::stream::BlockingRead, String>,
    bytes: u64,
    progress: Option<Arc<Progress>>,
    waited: Arc<std::sync::atomic::AtomicU64>,
}

impl Decoding {
    fn open(
        rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        artifact: &Artifact,
        keys: &Keys,
        progress: Option<Arc<Progress>>,
    ) -> Self {
        let waited = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let chunks = Chunks {
            rx,
            chunk: Bytes::new(),
            waited: waited.clone(),
        };
        let inner = unseal_blocking(chunks, artifact, keys)
            .and_then(|plain| blocking_decoder(plain, artifact.compression))
            .map_err(|e| e.to_string());
        Self {
            inner,
            bytes: 0,
            progress,
            waited,
        }
    }

    /// Decode what the consumer left, to the end: the decoded size, or why
    /// the content does not decode.
    fn finish(mut self) -> std::result::Result<u64, String> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|e| e.to_string())?;
        self.inner.map(|_| self.bytes)
    }
}

impl std::io::Read for Decoding {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let inner = match &mut self.inner {
            Ok(r) => r,
            Err(e) => return Err(std::io::Error::other(e.clone())),
        };
        let (t, waited) = (
            std::time::Instant::now(),
            self.waited.load(std::sync::atomic::Ordering::Relaxed),
        );
        let r = inner.read(buf);
        if let Some(p) = &self.progress {
            let waiting = self.waited.load(std::sync::atomic::Ordering::Relaxed) - waited;
            p.add_decode_time(
                t.elapsed()
                    .saturating_sub(std::time::Duration::from_nanos(waiting)),
            );
        }
        match r {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.inner = Err(e.to_string());
                Err(e)
            }
        }
    }
}

/// A writer into a consumer that may stop reading early (`pg_restore
/// --list` exits after the table of contents): once it is gone the rest is
/// discarded, so the whole artifact is still decoded and hashed.
pub struct Lenient<W>(pub Option<W>);

fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Lenient<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let Some(w) = self.0.as_mut() else {
            return std::task::Poll::Ready(Ok(buf.len()));
        };
        match std::pin::Pin::new(w).poll_write(cx, buf) {
            std::task::Poll::Ready(Err(e)) if gone(&e) => {
                self.0 = None;
                std::task::Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let Some(w) = self.0.as_mut() else {
            return std::task::Poll::Ready(Ok(()));
        };
        match std::pin::Pin::new(w).poll_flush(cx) {
            std::task::Poll::Ready(Err(e)) if gone(&e) => {
                self.0 = None;
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let Some(w) = self.0.as_mut() else {
            return std::task::Poll::Ready(Ok(()));
        };
        let r = match std::pin::Pin::new(w).poll_shutdown(cx) {
            std::task::Poll::Ready(Err(e)) if gone(&e) => std::task::Poll::Ready(Ok(())),
            other => other,
        };
        if r.is_ready() {
            self.0 = None; // close stdin: the consumer sees EOF
        }
        r
    }
}

/// Remembers whether an error came from the destination (disk full, a
/// consumer gone) rather than from decoding, which `copy` cannot tell.
struct WriteSide<W> {
    inner: W,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl<W> WriteSide<W> {
    fn note<T>(
        &self,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        if let std::task::Poll::Ready(Err(_)) = &r {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteSide<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(r)
    }
}

/// Adds the time spent inside the decode stages (decrypt, decompress) to
/// the progress counters. Waiting for the network returns `Pending` at once,
/// so this is close to the CPU time of decoding.
struct Timed {
    inner: crate::base::stream::BoxRead,
    progress: Option<Arc<Progress>>,
}

impl tokio::io::AsyncRead for Timed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let t = std::time::Instant::now();
        let r = self.inner.as_mut().poll_read(cx, buf);
        if let Some(p) = &self.progress {
            p.add_decode_time(t.elapsed());
        }
        r
    }
}

/// Read and verify `artifact` without keeping it (the first pass of a
/// streamed restore when there is no room for a temporary file).
pub async fn verify_only(
    repo: &Repository,
    job: &JobName,
    id: &BackupId,
    artifact: &Artifact,
    progress: Option<Arc<Progress>>,
) -> Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let key = Repository::artifact_key(job, id, &artifact.name);
    read_hashed(repo, &key, artifact, tx, progress).await
}

/// Decompress `artifact` into memory (small artifacts: globals), verified.
pub async fn to_memory(
    repo: &Repository,
    job: &JobName,
    id: &BackupId,
    artifact: &Artifact,
    limit: u64,
    keys: &Keys,
) -> Result<Vec<u8>> {
    if artifact.raw_bytes > limit {
        return Err(Error::Other(format!(
            "{} is {} bytes, more than the {limit} expected",
            artifact.name, artifact.raw_bytes
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let key = Repository::artifact_key(job, id, &artifact.name);
    let mut decoded = decoder(
        unseal(channel_reader(rx), artifact, keys),
        artifact.compression,
    );
    let read_all = async {
        let mut v = Vec::new();
        let r = (&mut decoded).take(limit + 1).read_to_end(&mut v).await;
        drop(decoded);
        r.map(|_| v)
    };
    let (read, data) = tokio::join!(read_hashed(repo, &key, artifact, tx, None), read_all);
    read?;
    data.map_err(|e| Error::Integrity {
        artifact: artifact.name.clone(),
        message: format!("cannot decompress: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::stream::{crypt, encoder};
    use crate::base::values::Compression;
    use tokio::io::AsyncReadExt;

    /// `plain` stored as an artifact (compressed with `c`, encrypted when
    /// `keys` has an identity), with its manifest entry.
    async fn stored(
        repo: &Repository,
        plain: &[u8],
        c: Compression,
        keys: &Keys,
    ) -> (JobName, BackupId, Artifact) {
        let mut packed = encoder(std::io::Cursor::new(plain.to_vec()), c, None, 1);
        if let Some(ids) = keys {
            let to = Arc::new(ids.iter().map(age::x25519::Identity::to_public).collect());
            packed = crypt::encrypt(packed, to);
        }
        let mut bytes = Vec::new();
        packed.read_to_end(&mut bytes).await.unwrap();
        let (job, id) = (
            JobName::parse("appdb").unwrap(),
            BackupId::new(chrono::Utc::now(), "h"),
        );
        let name = "database.dump.zst";
        repo.put_artifact(
            &job,
            &id,
            name,
            Box::pin(std::io::Cursor::new(bytes.clone())),
            None,
        )
        .await
        .unwrap();
        let artifact = Artifact {
            name: name.into(),
            content: "pg_dump_custom".into(),
            raw_bytes: plain.len() as u64,
            stored_bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            compression: c,
            encryption_recipients: if keys.is_some() {
                vec!["k".into()]
            } else {
                vec![]
            },
        };
        (job, id, artifact)
    }

    fn sample() -> Vec<u8> {
        (0..3_000_000u32)
            .map(|i| (i % 241) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    #[tokio::test]
    async fn the_blocking_reader_decodes_every_format_and_hashes_to_the_end() {
        let plain = sample();
        let key = Arc::new(vec![age::x25519::Identity::generate()]);
        for (c, keys) in [
            (Compression::Zstd, None),
            (Compression::Gzip, None),
            (Compression::None, None),
            (Compression::Zstd, Some(key.clone())),
        ] {
            let (repo, _) = Repository::in_memory();
            let (job, id, a) = stored(&repo, &plain, c, &keys).await;
            let progress = Progress::new();
            let (fetched, got) =
                to_blocking_reader(&repo, &job, &id, &a, &keys, Some(progress.clone()), |r| {
                    let mut v = Vec::new();
                    r.read_to_end(&mut v).map(|_| v)
                })
                .await
                .unwrap();
            assert_eq!(fetched.unwrap(), plain.len() as u64, "{c:?}");
            assert_eq!(got.unwrap(), plain, "{c:?}");
            // A consumer that stops early (pg_restore --list) still gets
            // the whole object decoded and checked.
            let (fetched, ()) = to_blocking_reader(&repo, &job, &id, &a, &keys, None, |r| {
                let _ = r.read(&mut [0u8; 10]);
            })
            .await
            .unwrap();
            assert_eq!(fetched.unwrap(), plain.len() as u64, "{c:?}");
        }
    }

    #[tokio::test]
    async fn damage_is_named_for_what_it_is_whatever_the_consumer_met() {
        let plain = sample();
        let (repo, mem) = Repository::in_memory();
        let (job, id, a) = stored(&repo, &plain, Compression::Zstd, &None).await;
        let key = Repository::artifact_key(&job, &id, &a.name);
        let read_all = |r: &mut dyn std::io::Read| r.read_to_end(&mut Vec::new()).map(|_| ());

        // A flipped byte: the checksum says so, not the decoder.
        let mut bytes = mem.get_bytes(&key);
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        mem.tamper(&key, bytes.clone());
        let (fetched, consumed) = to_blocking_reader(&repo, &job, &id, &a, &None, None, read_all)
            .await
            .unwrap();
        let e = fetched.unwrap_err().to_string();
        assert!(e.contains("SHA-256 is"), "{e}");
        assert!(consumed.is_err());

        // Bytes that match their (recorded) checksum but do not decode.
        let mut damaged = a.clone();
        damaged.sha256 = hex::encode(Sha256::digest(&bytes));
        let (fetched, _) = to_blocking_reader(&repo, &job, &id, &damaged, &None, None, read_all)
            .await
            .unwrap();
        let e = fetched.unwrap_err().to_string();
        assert!(e.contains("cannot be decrypted or decompressed"), "{e}");

        // A missing object is damage too.
        mem.remove(&key);
        let (fetched, _) = to_blocking_reader(&repo, &job, &id, &a, &None, None, read_all)
            .await
            .unwrap();
        let e = fetched.unwrap_err().to_string();
        assert!(e.contains("missing from the repository"), "{e}");
    }
}
