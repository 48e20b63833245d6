//! `[repositories.NAME]`: where backups are stored.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[repositories.NAME]`, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RepositoryConfig {
    /// A directory on this host (or a mounted filesystem).
    Local(LocalRepository),
    /// An S3 bucket (AWS or any S3-protocol server).
    S3(S3Repository),
}

/// `type = "local"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRepository {
    /// The directory holding the repository (created if missing).
    pub path: PathBuf,
    /// Encrypt the backups of every job using this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::Encryption>,
    /// How long a lease (a restore, drill or backup at work) protects its
    /// backup from prune on every host without being renewed; holders renew
    /// it every quarter of this. Every host sharing the repository must
    /// agree on it. Default 24h.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ttl: Option<std::time::Duration>,
    /// Bytes per second at most to and from this repository (`"20MiB/s"`),
    /// all of this process's uploads and downloads together: a backup at
    /// 2 AM leaves the uplink to replication and the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::base::values::Parsed<crate::base::values::ByteRate>>,
}

/// `type = "s3"`. Credentials come from the AWS chain (environment,
/// profile, instance role), never from this file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Repository {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket (several repositories can share one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The bucket's region (default: the AWS chain's, else us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A non-AWS endpoint (MinIO, Garage, Ceph...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing, which most non-AWS servers need.
    #[serde(default)]
    pub path_style: bool,
    /// Multipart part size; raised automatically when the source is large
    /// enough to hit S3's 10,000-part limit. At least 5 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<ByteSize>,
    /// Parts uploaded at once. Memory is about `part_size * (concurrency + 1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_concurrency: Option<usize>,
    /// Encrypt the backups of every job using this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::Encryption>,
    /// e.g. `STANDARD_IA`, `GLACIER_IR` (default: the bucket's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms` (with `kms_key_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
    /// KMS key for `server_side_encryption = "aws:kms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Object Lock retention on every object written (the bucket must have
    /// Object Lock enabled): nobody holding these credentials can delete a
    /// backup younger than `days` (compliance mode: not even the root user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
    /// See [`LocalRepository::lease_ttl`].
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ttl: Option<std::time::Duration>,
    /// See [`LocalRepository::rate_limit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::base::values::Parsed<crate::base::values::ByteRate>>,
}

/// S3 Object Lock retention applied to every object of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// Governance or compliance.
    pub mode: LockMode,
    /// Days each object stays locked (prune waits until then).
    pub days: u32,
}

/// Object Lock modes, as S3 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with a special permission may still delete.
    Governance,
    /// Nobody may delete before the date, not even the root account.
    Compliance,
}

impl RepositoryConfig {
    /// How long an unrenewed lease protects a backup (default 24h).
    pub fn lease_ttl(&self) -> std::time::Duration {
        let set = match self {
            RepositoryConfig::Local(l) => l.lease_ttl,
            RepositoryConfig::S3(s) => s.lease_ttl,
        };
        set.unwrap_or(std::time::Duration::from_secs(24 * 3600))
            .max(std::time::Duration::from_secs(1))
    }

    /// The configured `rate_limit`, parsed.
    pub fn rate_limit(
        &self,
    ) -> Option<&crate::base::values::Parsed<crate::base::values::ByteRate>> {
        match self {
            RepositoryConfig::Local(l) => l.rate_limit.as_ref(),
            RepositoryConfig::S3(s) => s.rate_limit.as_ref(),
        }
    }

    /// `local` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self {
            RepositoryConfig::Local(_) => "local",
            RepositoryConfig::S3(_) => "s3",
        }
    }

    /// Encryption every job writing here gets unless it sets its own.
    pub fn encryption(&self) -> Option<&super::Encryption> {
        match self {
            RepositoryConfig::Local(l) => l.encryption.as_ref(),
            RepositoryConfig::S3(s) => s.encryption.as_ref(),
        }
    }

    /// Object Lock periods above a century are a typo, and their arithmetic
    /// (now + days) would leave chrono's range.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(e) = self.encryption() {
            e.validate()?;
        }
        if let Some(why) = self.rate_limit().and_then(|r| r.problem()) {
            return Err(("rate_limit", why.to_owned()));
        }
        match self {
            RepositoryConfig::Local(l) => {
                if l.path.as_os_str().is_empty() {
                    return Err(("path", "expected a directory path".into()));
                }
            }
            RepositoryConfig::S3(s) => {
                match (s.sse.as_deref(), &s.kms_key_id) {
                    (None | Some("AES256"), None) | (Some("aws:kms"), _) => {}
                    (None | Some("AES256"), Some(_)) => {
                        return Err(("kms_key_id", "kms_key_id needs sse = \"aws:kms\"".into()))
                    }
                    (Some(other), _) => {
                        return Err((
                            "sse",
                            format!("expected \"AES256\" or \"aws:kms\", got {other:?}"),
                        ))
                    }
                }
                if s.object_lock
                    .as_ref()
                    .is_some_and(|l| !(1..=MAX_LOCK_DAYS).contains(&l.days))
                {
                    return Err((
                        "object_lock.days",
                        format!("expected 1 to {MAX_LOCK_DAYS} days"),
                    ));
                }
                if s.bucket.is_empty() {
                    return Err(("bucket", "expected a bucket name".into()));
                }
                if let Some(p) = &s.prefix {
                    if p.split('/').any(|c| c == ".." || c == ".") {
                        return Err((
                            "prefix",
                            "expected a key prefix without '.' or '..' components".into(),
                        ));
                    }
                }
                if let Some(ps) = s.part_size {
                    if ps.as_u64() < 5 * 1024 * 1024 || ps.as_u64() > 5 * 1024 * 1024 * 1024 {
                        return Err((
                            "part_size",
                            "expected a size between 5MiB and 5GiB (S3 limits)".into(),
                        ));
                    }
                }
                if s.upload_concurrency == Some(0) {
                    return Err(("upload_concurrency", "expected at least 1".into()));
                }
                if let Some(e) = &s.endpoint {
                    let web = url::Url::parse(e).is_ok_and(|u| {
                        (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some()
                    });
                    if !web {
                        return Err((
                            "endpoint",
                            format!("expected a URL like http://127.0.0.1:9000, got {e:?}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The longest Object Lock period accepted (100 years).
pub const MAX_LOCK_DAYS: u32 = 36_500;
