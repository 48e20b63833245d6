//! A reader that must end as a manifest says: its EOF is reported only when
//! the bytes that passed have the expected length and SHA-256. A copy
//! streamed through it into another repository fails its upload (the store
//! discards it) instead of storing a damaged object under a good manifest.

use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// What went wrong, readable after the stream failed (the upload's own
/// error wraps the io error and loses its kind).
#[derive(Debug, Clone, Default)]
pub struct Mismatch(Arc<Mutex<Option<String>>>);

impl Mismatch {
    /// The mismatch found, if the stream ended wrong.
    pub fn found(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    fn set(&self, m: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(m.to_owned());
        }
    }
}

/// See the module documentation.
pub struct Checked<R> {
    inner: R,
    want_bytes: u64,
    want_sha256: String,
    seen: u64,
    hash: Sha256,
    mismatch: Mismatch,
}

impl<R> Checked<R> {
    /// Expect exactly `bytes` bytes hashing to `sha256` (hex).
    pub fn new(inner: R, bytes: u64, sha256: &str) -> (Self, Mismatch) {
        let mismatch = Mismatch::default();
        (
            Checked {
                inner,
                want_bytes: bytes,
                want_sha256: sha256.to_ascii_lowercase(),
                seen: 0,
                hash: Sha256::new(),
                mismatch: mismatch.clone(),
            },
            mismatch,
        )
    }

    fn fail(&self, m: String) -> Poll<std::io::Result<()>> {
        self.mismatch.set(&m);
        Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, m)))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Checked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let new = &buf.filled()[before..];
        if new.is_empty() {
            if this.seen != this.want_bytes {
                let m = format!(
                    "{} bytes read where the manifest records {}",
                    this.seen, this.want_bytes
                );
                return this.fail(m);
            }
            let got = hex::encode(this.hash.clone().finalize());
            if got != this.want_sha256 {
                let m = format!(
                    "sha256 mismatch: read {got}, the manifest records {}",
                    this.want_sha256
                );
                return this.fail(m);
            }
            return Poll::Ready(Ok(()));
        }
        this.seen += new.len() as u64;
        this.hash.update(new);
        if this.seen > this.want_bytes {
            let m = format!(
                "more than the {} bytes the manifest records",
                this.want_bytes
            );
            // A read that fails hands out no bytes.
            buf.set_filled(before);
            return this.fail(m);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const HELLO: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    async fn read(bytes: &'static [u8], n: u64, sha: &str) -> (std::io::Result<usize>, Mismatch) {
        let (mut c, m) = Checked::new(bytes, n, sha);
        let mut v = Vec::new();
        (c.read_to_end(&mut v).await, m)
    }

    #[tokio::test]
    async fn ends_only_when_length_and_hash_match() {
        let (r, m) = read(b"hello world", 11, HELLO).await;
        assert_eq!(r.unwrap(), 11);
        assert!(m.found().is_none());

        let (r, m) = read(b"hello worle", 11, HELLO).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        assert!(m.found().unwrap().contains("sha256 mismatch"));

        let (r, m) = read(b"hello", 11, HELLO).await;
        assert!(r.is_err());
        assert!(m
            .found()
            .unwrap()
            .contains("5 bytes read where the manifest records 11"));

        let (r, m) = read(b"hello world!", 11, HELLO).await;
        assert!(r.is_err());
        assert!(m.found().unwrap().contains("more than the 11 bytes"));
    }
}
