//! age encryption as stream stages (the `age` crate, X25519 recipients), so
//! an artifact is `zstd | age -r ...` and `age -d -i key | zstd -d` reads it.
//!
//! age's streaming API writes into an `AsyncWrite`; the pipelines read. A
//! task bridges the two through an in-memory pipe, and the reader is
//! `Guarded`: its EOF is reported only after the task said it succeeded, so
//! a failed source or a wrong key can never look like a short, complete file.

use super::{guarded, BoxRead};
use age::x25519::{Identity, Recipient};
use futures::AsyncWriteExt as _;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio_util::compat::{
    FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt,
};

const PIPE: usize = 1 << 20;

/// A short, stable name for a recipient, recorded in manifests:
/// `age1:` and the first 16 hex digits of SHA-256 of the recipient string.
pub fn fingerprint(r: &Recipient) -> String {
    let h = Sha256::digest(r.to_string().as_bytes());
    format!("age1:{}", &hex::encode(h)[..16])
}

/// Parse `age1...` recipients.
pub fn parse_recipients(list: &[String]) -> Result<Vec<Recipient>, String> {
    list.iter()
        .map(|s| {
            s.trim().parse::<Recipient>().map_err(|e| {
                format!("{s:?} is not an age X25519 recipient (expected age1...): {e}")
            })
        })
        .collect()
}

/// Read `AGE-SECRET-KEY-1...` lines from an identity file (as `age-keygen`
/// writes it; comments and blank lines are skipped).
pub fn read_identities(path: &std::path::Path) -> Result<Vec<Identity>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading identity file {}: {e}", path.display()))?;
    let ids: Vec<Identity> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<Identity>().map_err(|_| {
                format!(
                    "identity file {} holds a line that is not an age X25519 identity (expected AGE-SECRET-KEY-1...)",
                    path.display()
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(format!(
            "identity file {} holds no identity (expected AGE-SECRET-KEY-1... lines, as age-keygen writes)",
            path.display()
        ));
    }
    Ok(ids)
}

/// Encrypt `inner` to every recipient.
pub fn encrypt(inner: BoxRead, recipients: Arc<Vec<Recipient>>) -> BoxRead {
    let (w, r) = tokio::io::duplex(PIPE);
    let (reader, verdict) = guarded(r);
    tokio::spawn(async move {
        let result = async {
            let enc = age::Encryptor::with_recipients(
                recipients.iter().map(|r| r as &dyn age::Recipient),
            )
            .map_err(|e| format!("age: {e}"))?;
            let mut out = enc
                .wrap_async_output(w.compat_write())
                .await
                .map_err(|e| format!("age: writing the header: {e}"))?;
            futures::io::copy(&mut inner.compat(), &mut out)
                .await
                .map_err(|e| e.to_string())?;
            out.close().await.map_err(|e| format!("age: {e}"))
        }
        .await;
        let _ = verdict.send(result);
    });
    Box::pin(reader)
}

/// Decrypt `inner` with the first identity that opens it.
pub fn decrypt<R>(inner: R, identities: Arc<Vec<Identity>>) -> BoxRead
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (w, r) = tokio::io::duplex(PIPE);
    let (reader, verdict) = guarded(r);
    tokio::spawn(async move {
        let result = async {
            let buffered = tokio::io::BufReader::with_capacity(256 * 1024, inner).compat();
            let d = age::Decryptor::new_async_buffered(buffered)
                .await
                .map_err(|e| format!("age: {e}"))?;
            let plain = d
                .decrypt_async(identities.iter().map(|i| i as &dyn age::Identity))
                .map_err(|e| format!("age: {e}"))?;
            let mut out = w;
            tokio::io::copy(&mut plain.compat(), &mut out)
                .await
                .map_err(|e| format!("age: {e}"))?;
            tokio::io::AsyncWriteExt::shutdown(&mut out)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let _ = verdict.send(result);
    });
    Box::pin(reader)
}

/// [`decrypt`] for a reader on a blocking thread (a restore's unpack leg).
pub fn decrypt_blocking<R>(
    inner: R,
    identities: &[Identity],
) -> std::io::Result<super::codec::BlockingRead>
where
    R: std::io::BufRead + Send + 'static,
{
    let age = |e: age::DecryptError| std::io::Error::other(format!("age: {e}"));
    let plain = age::Decryptor::new_buffered(inner)
        .map_err(age)?
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(age)?;
    Ok(Box::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn round_trip_and_a_wrong_key_fails_loudly() {
        let key = Identity::generate();
        let other = Identity::generate();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut sealed = Vec::new();
        encrypt(
            Box::pin(std::io::Cursor::new(data.clone())),
            Arc::new(vec![key.to_public(), other.to_public()]),
        )
        .read_to_end(&mut sealed)
        .await
        .unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let mut back = Vec::new();
        decrypt(std::io::Cursor::new(sealed.clone()), Arc::new(vec![other]))
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, data);
        let mut back = Vec::new();
        std::io::Read::read_to_end(
            &mut decrypt_blocking(
                std::io::Cursor::new(sealed.clone()),
                std::slice::from_ref(&key),
            )
            .unwrap(),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, data);
        let stranger = Identity::generate();
        let refused = decrypt_blocking(
            std::io::Cursor::new(sealed.clone()),
            std::slice::from_ref(&stranger),
        );
        assert!(refused.is_err_and(|e| e.to_string().starts_with("age: ")));
        let err = decrypt(
            std::io::Cursor::new(sealed.clone()),
            Arc::new(vec![stranger]),
        )
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
        assert!(err.to_string().contains("age"), "{err}");
        // A truncated file is an error, never a short plaintext.
        let cut = sealed[..sealed.len() - 100].to_vec();
        assert!(decrypt(
            std::io::Cursor::new(cut.clone()),
            Arc::new(vec![key.clone()])
        )
        .read_to_end(&mut Vec::new())
        .await
        .is_err());
        assert!(std::io::Read::read_to_end(
            &mut decrypt_blocking(std::io::Cursor::new(cut), &[key]).unwrap(),
            &mut Vec::new()
        )
        .is_err());
    }

    #[tokio::test]
    async fn a_failing_source_fails_the_encrypted_stream() {
        let (failing, verdict) = guarded(std::io::Cursor::new(vec![1u8; 1000]));
        verdict.send(Err("pg_dump exited 1".into())).unwrap();
        let mut out = Vec::new();
        let err = encrypt(
            Box::pin(failing),
            Arc::new(vec![Identity::generate().to_public()]),
        )
        .read_to_end(&mut out)
        .await
        .unwrap_err();
        assert!(err.to_string().contains("pg_dump exited 1"), "{err}");
    }
}
