//! Finding the age identity that opens an encrypted backup: `--identity`,
//! else `$DRCTL_AGE_IDENTITY_FILE`, else the job's then the repository's
//! `encryption.identity_file`. The manifest records recipient fingerprints,
//! so a wrong key is named before a byte is fetched.

use crate::base::error::{Error, Result};
use crate::base::manifest::Manifest;
use crate::base::stream::crypt;
use crate::config::{JobConfig, LoadedConfig, IDENTITY_ENV};
use age::x25519::Identity;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Identities that open a backup's artifacts (`None`: nothing is encrypted).
pub type Keys = Option<Arc<Vec<Identity>>>;

/// Where the identity comes from, and how that was decided (for messages).
fn identity_path(
    cfg: &LoadedConfig,
    job: &JobConfig,
    given: Option<&Path>,
) -> Option<(PathBuf, String)> {
    if let Some(p) = given {
        return Some((p.to_path_buf(), "--identity".into()));
    }
    if let Some(p) = std::env::var_os(IDENTITY_ENV).filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(p), format!("${IDENTITY_ENV}")));
    }
    let own = job.own_encryption().and_then(|e| e.identity_file.clone());
    let repo = job
        .repository()
        .and_then(|r| cfg.config.repositories.get(r))
        .and_then(|r| r.encryption())
        .and_then(|e| e.identity_file.clone());
    own.map(|p| (p, "the job's encryption.identity_file".to_string()))
        .or_else(|| repo.map(|p| (p, "the repository's encryption.identity_file".to_string())))
}

/// The keys for `m`, checked against the fingerprints it records.
pub fn for_manifest(
    cfg: &LoadedConfig,
    job: &JobConfig,
    m: &Manifest,
    given: Option<&Path>,
) -> Result<Keys> {
    let wanted: Vec<&str> = m
        .artifacts
        .iter()
        .flat_map(|a| a.encryption_recipients.iter().map(String::as_str))
        .collect();
    for_recipients(cfg, job, &format!("backup {}", m.id), wanted, given)
}

/// The keys that open what `what` (a backup, a WAL file) was encrypted to:
/// `wanted` fingerprints; a missing or wrong identity is named before a
/// byte is fetched.
pub fn for_recipients(
    cfg: &LoadedConfig,
    job: &JobConfig,
    what: &str,
    mut wanted: Vec<&str>,
    given: Option<&Path>,
) -> Result<Keys> {
    if wanted.is_empty() {
        return Ok(None);
    }
    wanted.sort_unstable();
    wanted.dedup();
    let Some((path, from)) = identity_path(cfg, job, given) else {
        return Err(Error::Key(format!(
            "{what} is encrypted to {}; no identity given (expected --identity FILE, ${IDENTITY_ENV}, or encryption.identity_file in the config, holding the AGE-SECRET-KEY-1... of one of those recipients)",
            wanted.join(", ")
        )));
    };
    let ids =
        crypt::read_identities(&path).map_err(|e| Error::Key(format!("{e} (from {from})")))?;
    let have: Vec<String> = ids
        .iter()
        .map(|i| crypt::fingerprint(&i.to_public()))
        .collect();
    if !have.iter().any(|h| wanted.contains(&h.as_str())) {
        return Err(Error::Key(format!(
            "{what} is encrypted to {}, but the identity file {} (from {from}) holds {}: not one of them (expected the identity of one of the recipients)",
            wanted.join(", "),
            path.display(),
            have.join(", ")
        )));
    }
    Ok(Some(Arc::new(ids)))
}

/// [`unseal`] for a reader on a blocking thread; buffered for the
/// decompressor that follows.
pub fn unseal_blocking<R>(
    reader: R,
    artifact: &crate::base::manifest::Artifact,
    keys: &Keys,
) -> std::io::Result<Box<dyn std::io::BufRead + Send>>
where
    R: std::io::BufRead + Send + 'static,
{
    match keys {
        Some(k) if !artifact.encryption_recipients.is_empty() => Ok(Box::new(
            std::io::BufReader::with_capacity(256 * 1024, crypt::decrypt_blocking(reader, k)?),
        )),
        _ => Ok(Box::new(reader)),
    }
}

/// Undo encryption if the artifact is encrypted.
pub fn unseal<R>(
    reader: R,
    artifact: &crate::base::manifest::Artifact,
    keys: &Keys,
) -> crate::base::stream::BoxRead
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    match keys {
        Some(k) if !artifact.encryption_recipients.is_empty() => crypt::decrypt(reader, k.clone()),
        _ => Box::pin(reader),
    }
}
