//! A repository in an S3 bucket (AWS or any S3-compatible store).
//!
//! Large artifacts go up as multipart uploads with a bounded number of parts
//! in flight (memory is about `part_size * (concurrency + 1)`), and every
//! failure path aborts the upload so no half-object is left billed and
//! invisible. The manifest is put with `If-None-Match: *`.

use super::{Backend, BoxRead, ObjectInfo, Upload};
use crate::base::error::{Error, Result};
use crate::config::S3Repository;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

const MIB: u64 = 1024 * 1024;
const DEFAULT_PART: u64 = 8 * MIB;
const MAX_PARTS: u64 = 10_000;

/// A repository in an S3 bucket (AWS or any S3-protocol server).
pub struct S3Backend {
    name: String,
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
    concurrency: usize,
    storage_class: Option<String>,
    sse: Option<String>,
    kms_key_id: Option<String>,
    lock: Option<crate::config::ObjectLock>,
}

/// Storage class, server-side encryption and Object Lock retention, on any
/// request builder that writes an object (PutObject, CreateMultipartUpload).
macro_rules! write_options {
    ($b:expr, $s:expr) => {{
        let mut b = $b;
        if let Some(c) = &$s.storage_class {
            b = b.storage_class(aws_sdk_s3::types::StorageClass::from(c.as_str()));
        }
        if let Some(e) = &$s.sse {
            b = b.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::from(e.as_str()));
        }
        if let Some(k) = &$s.kms_key_id {
            b = b.ssekms_key_id(k);
        }
        if let Some(l) = &$s.lock {
            let until = chrono::Utc::now() + chrono::Duration::days(i64::from(l.days));
            b = b
                .object_lock_mode(match l.mode {
                    crate::config::LockMode::Governance => {
                        aws_sdk_s3::types::ObjectLockMode::Governance
                    }
                    crate::config::LockMode::Compliance => {
                        aws_sdk_s3::types::ObjectLockMode::Compliance
                    }
                })
                .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                    until.timestamp(),
                ));
        }
        b
    }};
}

/// An SDK error as one line an operator can act on: the causes' messages
/// (`service error: NoSuchBucket: The specified bucket does not exist`), not
/// the SDK's debug dump of the raw response, and a hint for the common ones.
fn err_text<E: std::error::Error>(e: E) -> String {
    let text = crate::base::error::chain(&e);
    if let Some(sentence) = no_credentials(&text) {
        return sentence;
    }
    match hint(&text) {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

/// The SDK's "no credentials found in chain" (a line per provider, with
/// a misleading "dispatch failure" in front) as one sentence: which sources
/// were tried and how to provide one.
fn no_credentials(text: &str) -> Option<String> {
    if !text.contains("no credentials found in chain")
        && !text.contains("credential provider was not enabled")
    {
        return None;
    }
    let tried: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|name| match name {
            "Environment" => "the environment (AWS_ACCESS_KEY_ID)".to_owned(),
            "Profile" => "the shared config (~/.aws, AWS_PROFILE)".to_owned(),
            "WebIdentityToken" => "a web identity token".to_owned(),
            "EcsContainer" => "the ECS container endpoint".to_owned(),
            "Ec2InstanceMetadata" => "the EC2 instance metadata (IMDS)".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let tried = if tried.is_empty() {
        String::new()
    } else {
        format!(" (tried {})", tried.join(", "))
    };
    Some(format!(
        "no AWS credentials found{tried}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         (under systemd in /etc/drctl/drctl.env), a profile, or an instance role"
    ))
}

/// What to check for the errors operators meet while setting up a bucket.
fn hint(text: &str) -> Option<&'static str> {
    const HINTS: [(&[&str], &str); 6] = [
        (
            &["InvalidAccessKeyId", "SignatureDoesNotMatch"],
            "check the access key and secret (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile or the instance role)",
        ),
        (
            &["AccessDenied", "Forbidden"],
            "the credentials work but may not do this: check the bucket policy and the IAM permissions (s3:GetObject, PutObject, ListBucket, DeleteObject)",
        ),
        (
            &["NoSuchBucket"],
            "the bucket does not exist: check `bucket`, `region` and `endpoint`",
        ),
        (
            &["PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"],
            "the bucket is in another region: set `region` to the bucket's",
        ),
        (
            &["dispatch failure", "Connection refused", "dns error", "tcp connect"],
            "cannot reach the store: check `endpoint`, DNS and the network",
        ),
        (
            &["timed out", "TimeoutError"],
            "the store did not answer in time: check the network, or the store's load",
        ),
    ];
    HINTS
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| text.contains(n)))
        .map(|(_, h)| *h)
}

impl S3Backend {
    /// Connect to the bucket with the default AWS credential chain; the
    /// endpoint, region and addressing come from the config.
    pub async fn connect(name: &str, cfg: &S3Repository) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
        if shared.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e);
        }
        let client = Client::from_conf(b.build());
        Ok(S3Backend {
            name: name.to_owned(),
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg
                .prefix
                .clone()
                .unwrap_or_default()
                .trim_matches('/')
                .to_owned(),
            part_size: cfg.part_size.map_or(DEFAULT_PART, |s| s.as_u64()),
            concurrency: cfg.upload_concurrency.unwrap_or(2),
            storage_class: cfg.storage_class.clone(),
            sse: cfg.sse.clone(),
            kms_key_id: cfg.kms_key_id.clone(),
            lock: cfg.object_lock.clone(),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    /// A bucket key relative to the repository prefix (None: outside it).
    fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::repo(&self.name, format!("{what}: {e}"))
    }

    /// Part size for an object of about `hint` bytes: the configured size,
    /// raised so the object fits in S3's 10,000 parts with room to spare.
    fn part_size_for(&self, hint: Option<u64>) -> u64 {
        let needed = hint.map_or(0, |h| (h + h / 4) / (MAX_PARTS - 1000) + 1);
        self.part_size.max(needed.div_ceil(MIB) * MIB)
    }

    async fn read_part(reader: &mut BoxRead, size: usize) -> std::io::Result<bytes::Bytes> {
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let n = (&mut *reader)
                .take((size - buf.len()) as u64)
                .read_buf(&mut buf)
                .await?;
            if n == 0 {
                break;
            }
        }
        Ok(buf.freeze())
    }

    async fn multipart(
        &self,
        key: &str,
        upload_id: &str,
        first: bytes::Bytes,
        mut reader: BoxRead,
        part_size: usize,
    ) -> Result<u64> {
        let mut tasks: JoinSet<Result<(i32, String)>> = JoinSet::new();
        let mut parts: Vec<(i32, String)> = Vec::new();
        let mut number = 0i32;
        let mut total = 0u64;
        let mut next = Some(first);
        while let Some(chunk) = next.take() {
            number += 1;
            if number as u64 > MAX_PARTS {
                return Err(self.err(key, "object exceeds 10,000 parts; raise part_size"));
            }
            total += chunk.len() as u64;
            while tasks.len() >= self.concurrency {
                if let Some(done) = tasks.join_next().await {
                    parts.push(done.map_err(|e| self.err(key, e))??);
                }
            }
            let client = self.client.clone();
            let (bucket, k, id) = (self.bucket.clone(), key.to_owned(), upload_id.to_owned());
            let name = self.name.clone();
            tasks.spawn(async move {
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(&k)
                    .upload_id(id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| {
                        Error::repo(
                            &name,
                            format!("uploading part {number} of {k}: {}", err_text(e)),
                        )
                    })?;
                let etag = out.e_tag().unwrap_or_default().to_owned();
                Ok((number, etag))
            });
            let chunk = Self::read_part(&mut reader, part_size)
                .await
                .map_err(|e| Error::repo(&self.name, format!("reading source for {key}: {e}")))?;
            if !chunk.is_empty() {
                next = Some(chunk);
            }
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(done.map_err(|e| self.err(key, e))??);
        }
        parts.sort_by_key(|p| p.0);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .into_iter()
                    .map(|(n, etag)| CompletedPart::builder().part_number(n).e_tag(etag).build())
                    .collect(),
            ))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| self.err(&format!("completing upload of {key}"), err_text(e)))?;
        Ok(total)
    }

    /// Size as the store reports it, to check an upload landed whole.
    async fn head_size(&self, key: &str) -> Result<u64> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(&format!("checking {key}"), err_text(e)))?;
        Ok(out.content_length().unwrap_or(-1).max(0) as u64)
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put_stream(
        &self,
        key: &str,
        mut reader: BoxRead,
        size_hint: Option<u64>,
    ) -> Result<u64> {
        let key = self.full_key(key);
        let part_size = self.part_size_for(size_hint) as usize;
        let first = Self::read_part(&mut reader, part_size)
            .await
            .map_err(|e| Error::repo(&self.name, format!("reading source for {key}: {e}")))?;
        let written = if first.len() < part_size {
            let n = first.len() as u64;
            write_options!(self.client.put_object(), self)
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| self.err(&format!("uploading {key}"), err_text(e)))?;
            n
        } else {
            let created = write_options!(self.client.create_multipart_upload(), self)
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.err(&format!("starting upload of {key}"), err_text(e)))?;
            let upload_id = created
                .upload_id()
                .ok_or_else(|| self.err(&key, "no upload id in CreateMultipartUpload response"))?
                .to_owned();
            match self
                .multipart(&key, &upload_id, first, reader, part_size)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    let aborted = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&key)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                    if let Err(a) = aborted {
                        tracing::warn!(key, error = %err_text(a), "could not abort multipart upload; prune will sweep it");
                    }
                    return Err(e);
                }
            }
        };
        let stored = self.head_size(&key).await?;
        if stored != written {
            return Err(self.err(
                &key,
                format!("uploaded {written} bytes but the store reports {stored}"),
            ));
        }
        Ok(written)
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.full_key(key);
        match write_options!(self.client.put_object(), self)
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(412) {
                    Err(self.err(&key, "already exists; refusing to overwrite"))
                } else {
                    Err(self.err(&format!("writing {key}"), err_text(e)))
                }
            }
        }
    }

    async fn put_replace(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.full_key(key);
        let mut b = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(bytes));
        // Encryption as configured; no storage class, no Object Lock.
        if let Some(e) = &self.sse {
            b = b.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::from(e.as_str()));
        }
        if let Some(k) = &self.kms_key_id {
            b = b.ssekms_key_id(k);
        }
        b.send()
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("writing {key}"), err_text(e)))
    }

    async fn get(&self, key: &str) -> Result<BoxRead> {
        let full = self.full_key(key);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Box::pin(out.body.into_async_read())),
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key)
                {
                    Err(Error::NotFound(format!("{key} in {}", self.location())))
                } else {
                    Err(self.err(&format!("reading {full}"), err_text(e)))
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.full_key(prefix);
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(&format!("listing {full}"), err_text(e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if let Some(rel) = self.relative(k) {
                        out.push(ObjectInfo {
                            key: rel.to_owned(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            modified: o
                                .last_modified()
                                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn incomplete_uploads(&self, prefix: &str) -> Result<Option<Vec<Upload>>> {
        let full = self.full_key(prefix);
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let code = e.as_service_error().and_then(|s| {
                        aws_sdk_s3::error::ProvideErrorMetadata::code(s).map(str::to_owned)
                    });
                    if code.as_deref() == Some("NotImplemented") {
                        return Ok(None);
                    }
                    return Err(self.err(
                        &format!("listing incomplete uploads under {full}"),
                        err_text(e),
                    ));
                }
            };
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(Upload {
                        key: self.relative(k).unwrap_or(k).to_owned(),
                        upload_id: id.to_owned(),
                        initiated: u
                            .initiated()
                            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                    });
                }
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_owned);
                id_marker = page.next_upload_id_marker().map(str::to_owned);
                if key_marker.is_none() && id_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(Some(out))
    }

    async fn abort_upload(&self, u: &Upload) -> Result<()> {
        let full = self.full_key(&u.key);
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&u.upload_id)
            .send()
            .await
            .map_err(|e| self.err(&format!("aborting the upload of {full}"), err_text(e)))?;
        Ok(())
    }

    async fn check_lock(&self, key: &str) -> Result<()> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        let full = self.full_key(key);
        let ignored = |why: String| {
            Error::repo(
                &self.name,
                format!(
                    "object_lock is configured but the store did not apply it to {full} ({why}); backups here are deletable. Use a bucket with Object Lock enabled on a store that enforces it, or remove object_lock"
                ),
            )
        };
        // HEAD carries the applied retention (x-amz-object-lock-*) on every
        // store that implements Object Lock; GetObjectRetention is rarer.
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| ignored(format!("reading it back failed: {}", err_text(e))))?;
        let want = match lock.mode {
            crate::config::LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
            crate::config::LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
        };
        match out.object_lock_mode() {
            None => return Err(ignored("it carries no Object Lock mode".into())),
            Some(m) if *m != want => {
                return Err(ignored(format!("its Object Lock mode is {}", m.as_str())))
            }
            Some(_) => {}
        }
        let min = chrono::Utc::now() + chrono::Duration::days(i64::from(lock.days))
            - chrono::Duration::days(1);
        let until = out
            .object_lock_retain_until_date()
            .map_or(0, aws_sdk_s3::primitives::DateTime::secs);
        if until < min.timestamp() {
            return Err(ignored(format!(
                "it is retained only until {}",
                chrono::DateTime::from_timestamp(until, 0)
                    .map_or_else(|| "never".into(), |t| t.to_rfc3339())
            )));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err(&format!("deleting {full}"), err_text(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_are_one_sentence() {
        let sdk = "dispatch failure: other: the credential provider was not enabled: no credentials found in chain. Attempted:
  Environment: the credential provider was not enabled: environment variable not set
  Profile: the credential provider was not enabled
  WebIdentityToken: the credential provider was not enabled: $AWS_WEB_IDENTITY_TOKEN_FILE was not set
  EcsContainer: the credential provider was not enabled: ECS provider not configured
  Ec2InstanceMetadata: the credential provider was not enabled: IMDS disabled";
        let s = no_credentials(sdk).unwrap();
        assert!(!s.contains('\n') && s.len() < 400, "{s}");
        assert!(s.starts_with("no AWS credentials found (tried the environment (AWS_ACCESS_KEY_ID), the shared config"), "{s}");
        assert!(
            s.contains("the EC2 instance metadata (IMDS)") && s.contains("/etc/drctl/drctl.env"),
            "{s}"
        );
        assert_eq!(no_credentials("service error: NoSuchBucket"), None);
    }

    #[test]
    fn common_store_errors_get_a_hint_and_others_none() {
        assert!(
            hint("service error: NoSuchBucket: The specified bucket does not exist")
                .is_some_and(|h| h.contains("`bucket`"))
        );
        assert!(
            hint("dispatch failure: io error: Connection refused (os error 111)")
                .is_some_and(|h| h.contains("endpoint"))
        );
        assert!(hint("service error: AccessDenied: Access Denied")
            .is_some_and(|h| h.contains("policy")));
        assert_eq!(
            hint("service error: SlowDown: Please reduce your request rate."),
            None
        );
    }
}
