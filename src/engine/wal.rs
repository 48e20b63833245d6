//! The WAL archive of a physical job in its repository: `drctl wal push`
//! (PostgreSQL's `archive_command`), `drctl wal fetch` (a
//! `restore_command`), the listing restores and verification read.
//!
//! Each file is two objects under `{job}/wal/`: its bytes, compressed and
//! optionally encrypted like any artifact (`<name>.<nonce>.zst[.age]`), and
//! then its record (`<name>.json`, [`WalRecord`]) written if absent, read
//! back and compared: the commit point, as a manifest is for a backup. The
//! nonce keeps two pushers of the same file (a retry racing a slow first
//! attempt, two hosts) from overwriting each other's bytes; the loser's
//! object is removed, and an orphan left by a SIGKILL is harmless (no
//! record names it).

use crate::base::error::{Error, Result};
use crate::base::ids::JobName;
use crate::base::manifest::Artifact;
use crate::base::wal::{classify, WalName, WalRecord, FORMAT};
use crate::engine::jobs::{pack, Packing, Seal};
use crate::services::keys::Keys;
use crate::services::repository::{ObjectInfo, Repository};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// `{job}/wal/`.
pub fn prefix(job: &JobName) -> String {
    format!("{job}/wal/")
}

fn record_key(job: &JobName, name: &str) -> String {
    format!("{}{name}.json", prefix(job))
}

fn object_key(job: &JobName, object: &str) -> String {
    format!("{}{object}", prefix(job))
}

/// A WAL file name as given to `wal push`/`wal fetch`: PostgreSQL's own,
/// or a usage error.
pub fn check_name(name: &str) -> Result<WalName> {
    classify(name).ok_or_else(|| {
        Error::Usage(format!(
            "{name:?} is not a WAL file name (expected a segment like 000000010000000000000003, a .partial, a .history or a .backup file)"
        ))
    })
}

/// What a push did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Stored now.
    Stored(WalRecord),
    /// Already stored with the same content: nothing to do (PostgreSQL
    /// retries an archive_command whose exit it did not see).
    AlreadyStored,
}

/// Size and SHA-256 of a local file, read once.
async fn digest(path: &Path) -> Result<(u64, String)> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let got = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if got == 0 {
            break;
        }
        n += got as u64;
        h.update(&buf[..got]);
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Store the WAL file at `path` as the job's (idempotent: the same content
/// again is [`Pushed::AlreadyStored`]; different content under a stored
/// name is refused, as PostgreSQL's documentation asks of an
/// `archive_command`).
pub async fn push(
    repo: &Repository,
    job: &JobName,
    path: &Path,
    packing: Packing,
    seal: Option<&Seal>,
) -> Result<Pushed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    check_name(&name)?;
    let (raw_bytes, raw_sha256) = digest(path).await?;
    if let Some(done) = already(repo, job, &name, raw_bytes, &raw_sha256).await? {
        return Ok(done);
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let (record, raw_m) = upload(
        (repo, job),
        &name,
        file,
        (raw_bytes, raw_sha256.clone()),
        packing,
        seal,
    )
    .await?;
    let key = object_key(job, &record.object);
    crate::base::faults::point("wal.push.uploaded").await;
    if raw_m.bytes() != raw_bytes || raw_m.sha256() != raw_sha256 {
        let _ = repo.backend().delete(&key).await;
        return Err(Error::Other(format!(
            "{} changed while it was being stored; not storing it",
            path.display()
        )));
    }
    match commit(repo, job, &record).await {
        Ok(()) => Ok(Pushed::Stored(record)),
        Err(e) => {
            // Someone else committed the name meanwhile: theirs stands.
            let _ = repo.backend().delete(&key).await;
            match already(repo, job, &name, record.raw_bytes, &record.raw_sha256).await {
                Ok(Some(done)) => Ok(done),
                _ => Err(e),
            }
        }
    }
}

/// Store the bytes of WAL file `name` (`raw`: their size and SHA-256 as
/// measured before) packed as a new object under a fresh nonce. Returns the
/// record that commits it and what was read of `source` (a file that
/// changed meanwhile reads differently).
async fn upload<R>(
    (repo, job): (&Repository, &JobName),
    name: &str,
    source: R,
    (raw_bytes, raw_sha256): (u64, String),
    packing: Packing,
    seal: Option<&Seal>,
) -> Result<(WalRecord, crate::base::stream::Measured)>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    let nonce = format!("{:08x}", rand::random::<u32>());
    let object = format!(
        "{name}.{nonce}{}{}",
        packing.compression.suffix(),
        if seal.is_some() { ".age" } else { "" }
    );
    let (raw, raw_m) = crate::base::stream::Measure::new(source);
    let (stream, stored_m) = pack(raw, packing, seal);
    repo.put_key(&object_key(job, &object), stream, Some(raw_bytes))
        .await?;
    let record = WalRecord {
        format: FORMAT,
        name: name.to_owned(),
        object,
        raw_bytes,
        raw_sha256,
        stored_bytes: stored_m.bytes(),
        sha256: stored_m.sha256(),
        compression: packing.compression,
        encryption_recipients: seal.map(|s| s.fingerprints().to_vec()).unwrap_or_default(),
        host: crate::base::host::name(),
        stored_at: chrono::Utc::now(),
    };
    Ok((record, raw_m))
}

/// A record as stored: pretty JSON and a final newline.
fn record_json(r: &WalRecord) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(r).unwrap_or_default();
    json.push(b'\n');
    json
}

/// `Some(AlreadyStored)` when `name` is stored with this content, an error
/// when it is stored with other content, `None` when it is not stored.
async fn already(
    repo: &Repository,
    job: &JobName,
    name: &str,
    raw_bytes: u64,
    raw_sha256: &str,
) -> Result<Option<Pushed>> {
    match read_record(repo, job, name).await {
        Ok(r) if r.raw_sha256 == raw_sha256 && r.raw_bytes == raw_bytes => {
            Ok(Some(Pushed::AlreadyStored))
        }
        Ok(r) => Err(Error::Integrity {
            artifact: record_key(job, name),
            message: format!(
                "{name} is already stored with different content ({} bytes, SHA-256 {}; this one {raw_bytes} bytes, {raw_sha256}); refusing to overwrite it (two clusters archiving into one job?)",
                r.raw_bytes, r.raw_sha256
            ),
        }),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The commit point of one WAL file: its object must be there with its
/// size, the record is written if absent and must read back the same.
async fn commit(repo: &Repository, job: &JobName, r: &WalRecord) -> Result<()> {
    let key = object_key(job, &r.object);
    let listed = repo.backend().list(&key).await?;
    match listed.iter().find(|o| o.key == key) {
        Some(o) if o.size == r.stored_bytes => {}
        _ => {
            return Err(Error::repo(
                &repo.name,
                format!(
                    "{key} is not in the store with its {} bytes; not committing",
                    r.stored_bytes
                ),
            ))
        }
    }
    repo.backend()
        .put_if_absent(&record_key(job, &r.name), record_json(r))
        .await?;
    let back = read_record(repo, job, &r.name).await?;
    if &back != r {
        return Err(Error::repo(
            &repo.name,
            format!(
                "{} reads back different from what was written",
                record_key(job, &r.name)
            ),
        ));
    }
    Ok(())
}

/// The stored record of WAL file `name` (checked: it may only name its own
/// object).
pub async fn read_record(repo: &Repository, job: &JobName, name: &str) -> Result<WalRecord> {
    let key = record_key(job, name);
    let mut r = repo.get_key(&key).await?;
    let mut bytes = Vec::new();
    (&mut r)
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Error::repo(&repo.name, format!("reading {key}: {e}")))?;
    let rec: WalRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Integrity {
        artifact: key.clone(),
        message: format!("unreadable WAL record: {e}"),
    })?;
    rec.check().map_err(|message| Error::Integrity {
        artifact: key.clone(),
        message,
    })?;
    if rec.name != name {
        return Err(Error::Integrity {
            artifact: key,
            message: format!("the record is of {:?}", rec.name),
        });
    }
    Ok(rec)
}

/// A stored WAL file as an [`Artifact`], for the verified fetch path.
pub fn as_artifact(r: &WalRecord) -> Artifact {
    Artifact {
        name: r.object.clone(),
        content: "wal".into(),
        raw_bytes: r.raw_bytes,
        stored_bytes: r.stored_bytes,
        sha256: r.sha256.clone(),
        compression: r.compression,
        encryption_recipients: r.encryption_recipients.clone(),
    }
}

/// Fetch WAL file `name` into `dest`: verified against its record (stored
/// size and SHA-256, then the file's own size and SHA-256), written to a
/// temporary name beside `dest`, fsynced, renamed: PostgreSQL never reads a
/// half-written segment.
pub async fn fetch(
    repo: &Repository,
    job: &JobName,
    record: &WalRecord,
    dest: impl AsRef<Path>,
    keys: &Keys,
) -> Result<()> {
    let dest = dest.as_ref();
    let tmp = dest.with_file_name(format!(
        ".{}.drctl-{:08x}",
        record.name,
        rand::random::<u32>()
    ));
    let result = fetch_into(repo, job, record, &tmp, keys).await;
    match result {
        Ok(()) => tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| Error::io(format!("renaming into {}", dest.display()), e)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

async fn fetch_into(
    repo: &Repository,
    job: &JobName,
    record: &WalRecord,
    tmp: &Path,
    keys: &Keys,
) -> Result<()> {
    let f = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let w = tokio::io::BufWriter::with_capacity(1 << 20, f);
    crate::engine::restore::fetch::key_to_writer(
        repo,
        &object_key(job, &record.object),
        &as_artifact(record),
        w,
        None,
        keys,
    )
    .await?;
    let (n, sha) = digest(tmp).await?;
    if n != record.raw_bytes || sha != record.raw_sha256 {
        return Err(Error::Integrity {
            artifact: object_key(job, &record.object),
            message: format!(
                "decodes to {n} bytes with SHA-256 {sha}; the record says {} bytes, {}",
                record.raw_bytes, record.raw_sha256
            ),
        });
    }
    let f =
        std::fs::File::open(tmp).map_err(|e| Error::io(format!("opening {}", tmp.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
    Ok(())
}

/// What is stored of a job's WAL: each committed file by name, with the
/// store's time of its record.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Committed files (record present), by PostgreSQL name: the record's
    /// listing (its store time is the file's).
    pub files: BTreeMap<String, ObjectInfo>,
    /// Bytes of each file's stored objects (the compressed, maybe
    /// encrypted WAL; not the record), by PostgreSQL name.
    pub stored: BTreeMap<String, u64>,
}

impl Archive {
    /// Whether `name` is stored.
    pub fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// The bytes `name` takes in the repository (0 when its objects were
    /// not listed).
    pub fn stored_bytes(&self, name: &str) -> u64 {
        self.stored.get(name).copied().unwrap_or(0)
    }

    /// The newest store time of any committed file: the RPO's point.
    pub fn newest(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.files.values().filter_map(|o| o.modified).max()
    }

    /// Timelines that kept receiving WAL together after a branch
    /// ([`crate::base::wal::diverged`] over this listing).
    pub fn diverged(&self, segment_bytes: u64) -> Vec<String> {
        let segs: Vec<_> = self
            .files
            .iter()
            .filter_map(|(n, o)| {
                let n = n.strip_suffix(".partial").unwrap_or(n);
                Some((
                    crate::base::wal::Segment::parse(n, segment_bytes)?,
                    o.modified?,
                ))
            })
            .collect();
        let histories = self
            .files
            .iter()
            .filter_map(|(n, o)| match classify(n) {
                Some(WalName::History(tli)) => Some((tli, o.modified?)),
                _ => None,
            })
            .collect();
        crate::base::wal::diverged(&segs, &histories, segment_bytes)
    }

    /// Committed files whose object is not in the listing, among `names`.
    pub fn without_object<'a>(&self, names: impl Iterator<Item = &'a String>) -> Vec<String> {
        names
            .filter(|n| !self.stored.contains_key(*n))
            .map(|n| format!("{n}: named by its record but missing from the repository"))
            .collect()
    }

    /// The stored segments (not history, partial or backup files).
    pub fn segments(&self, segment_bytes: u64) -> Vec<crate::base::wal::Segment> {
        self.files
            .keys()
            .filter(|n| classify(n) == Some(WalName::Segment))
            .filter_map(|n| crate::base::wal::Segment::parse(n, segment_bytes))
            .collect()
    }
}

/// List the job's committed WAL files (one listing; records only).
pub async fn list(repo: &Repository, job: &JobName) -> Result<Archive> {
    let prefix = prefix(job);
    let mut files = BTreeMap::new();
    let mut stored = BTreeMap::new();
    for o in repo.backend().list(&prefix).await? {
        let Some(rest) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        match rest.strip_suffix(".json") {
            Some(name) if classify(name).is_some() => {
                files.insert(name.to_owned(), o);
            }
            Some(_) => {}
            None => {
                if let Some(name) = file_of_object(rest) {
                    *stored.entry(name.to_owned()).or_insert(0) += o.size;
                }
            }
        }
    }
    Ok(Archive { files, stored })
}

/// The WAL file an object (a name under `{job}/wal/`) holds the bytes of
/// (pure): `<name>.<8 hex><suffix>`, as [`object_of`] says.
fn file_of_object(object: &str) -> Option<&str> {
    let body = [".zst.age", ".gz.age", ".zst", ".gz", ".age"]
        .iter()
        .find_map(|s| object.strip_suffix(s))
        .unwrap_or(object);
    let name = body.get(..body.len().checked_sub(9)?)?;
    object_of(name, object).then_some(name)
}

/// The physical job `name` names, or the only one when no name is given.
pub fn physical_job<'a>(
    cfg: &'a crate::config::LoadedConfig,
    name: Option<&str>,
) -> Result<(
    JobName,
    &'a crate::config::JobConfig,
    &'a crate::config::PhysicalJob,
)> {
    let pick = |n: &str, j: &'a crate::config::JobConfig| match &j.kind {
        crate::config::Kind::PostgresPhysical(p) => Some((n.to_owned(), j, p)),
        _ => None,
    };
    let (n, j, p) = if let Some(n) = name {
        let (_, j) = cfg.job(n)?;
        pick(n, j).ok_or_else(|| Error::WrongKind {
            job: n.to_owned(),
            kind: j.kind.name(),
            expected: "expected a postgres_physical job (WAL belongs to one)",
        })?
    } else {
        let mut all: Vec<_> = cfg
            .config
            .jobs
            .iter()
            .filter_map(|(n, j)| pick(n, j))
            .collect();
        match all.len() {
            1 => all.remove(0),
            0 => {
                return Err(Error::Usage(
                    "no postgres_physical job in the config (add one, or give --job)".into(),
                ))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "several postgres_physical jobs ({}): give --job",
                    all.iter()
                        .map(|(n, ..)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    };
    Ok((JobName::parse(&n).map_err(Error::Other)?, j, p))
}

/// The names of every physical job.
pub fn physical_jobs(cfg: &crate::config::LoadedConfig) -> Vec<String> {
    cfg.config
        .jobs
        .iter()
        .filter(|(_, j)| matches!(j.kind, crate::config::Kind::PostgresPhysical(_)))
        .map(|(n, _)| n.clone())
        .collect()
}

/// `drctl wal push [--job JOB] PATH`: store one file PostgreSQL archives.
pub async fn push_file(
    cfg: &crate::config::LoadedConfig,
    job: Option<&str>,
    path: &Path,
) -> Result<Pushed> {
    let (name, jc, p) = physical_job(cfg, job)?;
    let repo_name = jc.backup_repository(name.as_str())?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let seal = match cfg.encryption_of(jc) {
        Some(e) => Some(Seal::new(e).map_err(|m| Error::Config {
            file: cfg.file_of(&format!("jobs.{name}")),
            key: "encryption.recipients".into(),
            message: m,
        })?),
        None => None,
    };
    let packing = Packing {
        compression: p.storage.compression,
        level: p.storage.compression_level,
        threads: 1,
    };
    push(&repo, &name, path, packing, seal.as_ref()).await
}

/// `drctl wal fetch [--job JOB] NAME DEST`: one file for PostgreSQL's
/// `restore_command`. A segment stored only as the unfinished newest
/// (`.partial`) is served as that. `Error::NotFound` when not stored (the
/// answer PostgreSQL expects for a file past the end of the archive).
pub async fn fetch_file(
    cfg: &crate::config::LoadedConfig,
    job: Option<&str>,
    name: &str,
    dest: &Path,
    identity: Option<&Path>,
) -> Result<()> {
    let kind = check_name(name)?;
    let (job_name, jc, _) = physical_job(cfg, job)?;
    let repo_name = jc.backup_repository(job_name.as_str())?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let record = match read_record(&repo, &job_name, name).await {
        Err(Error::NotFound(_)) if kind == WalName::Segment => {
            read_record(&repo, &job_name, &format!("{name}.partial")).await?
        }
        other => other?,
    };
    let keys = crate::services::keys::for_recipients(
        cfg,
        jc,
        &format!("WAL file {name}"),
        record
            .encryption_recipients
            .iter()
            .map(String::as_str)
            .collect(),
        identity,
    )?;
    fetch(&repo, &job_name, &record, dest, &keys).await
}

/// What `drctl wal list` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The job.
    pub job: String,
    /// Where its WAL is.
    pub repository: String,
    /// Committed files of every kind.
    pub files: usize,
    /// Committed segments.
    pub segments: usize,
    /// The oldest segment.
    pub first: Option<String>,
    /// The newest segment.
    pub last: Option<String>,
    /// When the newest file was stored (the store's clock).
    pub newest_stored_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Missing runs between stored segments (`A..B`).
    pub gaps: Vec<String>,
    /// Committed files whose object is missing from the listing.
    pub missing_objects: Vec<String>,
    /// Timelines that both kept receiving WAL after a branch (two servers
    /// archiving into the job: a restored copy left archiving).
    pub diverged: Vec<String>,
}

/// The job's WAL archive at a glance, with its gaps.
pub async fn summary(cfg: &crate::config::LoadedConfig, job: Option<&str>) -> Result<Summary> {
    let (name, jc, _) = physical_job(cfg, job)?;
    let repo_name = jc.backup_repository(name.as_str())?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    let archive = list(&repo, &name).await?;
    let bytes = segment_bytes(&repo, &name).await;
    let mut segs = archive.segments(bytes);
    segs.sort();
    let gaps = crate::base::wal::chain_gaps(&segs, bytes)
        .iter()
        .map(crate::base::wal::describe_gap)
        .collect();
    Ok(Summary {
        job: name.to_string(),
        repository: format!("{repo_name} ({})", repo.location()),
        files: archive.files.len(),
        segments: segs.len(),
        first: segs.first().map(|s| s.name(bytes)),
        last: segs.last().map(|s| s.name(bytes)),
        newest_stored_at: archive.newest(),
        gaps,
        missing_objects: archive.without_object(archive.files.keys()),
        diverged: archive.diverged(bytes),
    })
}

/// The job's `wal_segment_size`, from its newest readable base backup
/// (16 MiB, PostgreSQL's default, without one).
pub async fn segment_bytes(repo: &Repository, job: &JobName) -> u64 {
    if let Ok(latest) = repo.latest_usable(job).await {
        if let Some(p) = latest.manifest.physical {
            return p.wal_segment_bytes;
        }
    }
    crate::base::wal::DEFAULT_SEGMENT_BYTES
}

/// What `verify` found of a physical job's WAL archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalCheck {
    /// The job.
    pub job: String,
    /// Its repository.
    pub repository: String,
    /// Where the chain must start: the oldest base backup's start.
    pub from: Option<String>,
    /// Files checked (at or after `from`, and every history file).
    pub files: usize,
    /// The newest segment stored.
    pub newest: Option<String>,
    /// Missing runs (`A..B`) a recovery from the oldest base backup would meet.
    pub gaps: Vec<String>,
    /// Files whose record or object is wrong (`name: why`).
    pub damaged: Vec<String>,
    /// Timelines that both kept receiving WAL after a branch: a warning,
    /// not a failure (`wal_timelines_diverged`).
    pub diverged: Vec<String>,
    /// Decoded to the end and checked against the file's own SHA-256.
    pub deep: bool,
}

impl WalCheck {
    /// Whether the chain is whole and every file checked passed.
    pub fn ok(&self) -> bool {
        self.gaps.is_empty() && self.damaged.is_empty()
    }
}

/// How far [`check`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The listing only: gaps in the chain, and files whose record is
    /// listed without an object (the daemon, every 30 s).
    Chain,
    /// Each file's record, and its object's size in the listing (`verify`).
    Records,
    /// Each file fetched, decoded, checked against its SHA-256 (`verify --deep`).
    Deep,
}

/// Check the job's WAL archive: continuity from the oldest base backup's
/// start to the newest segment, and, by `depth`, each file from there on.
pub async fn check(
    cfg: &crate::config::LoadedConfig,
    repo: &Repository,
    job: &JobName,
    depth: Depth,
    identity: Option<&Path>,
) -> Result<WalCheck> {
    let deep = depth == Depth::Deep;
    physical_job(cfg, Some(job.as_str()))?;
    let mut oldest = None;
    for b in repo.list_backups(job).await? {
        if let Ok(m) = repo.read_manifest(job, &b.id).await {
            if let Some(p) = m.physical {
                oldest = Some(p);
                break;
            }
        }
    }
    let bytes = oldest
        .as_ref()
        .map_or(crate::base::wal::DEFAULT_SEGMENT_BYTES, |p| {
            p.wal_segment_bytes
        });
    let archive = list(repo, job).await?;
    let mut segs = archive.segments(bytes);
    segs.sort_by_key(|s| (s.segno, s.tli));
    let gaps = match &oldest {
        Some(p) => crate::base::wal::continuity(&segs, p.start_lsn, p.timeline, bytes),
        None => crate::base::wal::chain_gaps(&segs, bytes),
    };
    let from_segno = oldest.as_ref().map_or(0, |p| p.start_lsn.segno(bytes));
    let objects: BTreeMap<String, u64> = if depth == Depth::Chain {
        BTreeMap::new()
    } else {
        repo.backend()
            .list(&prefix(job))
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect()
    };
    let wanted: Vec<&String> = archive
        .files
        .keys()
        .filter(|_| depth != Depth::Chain)
        .filter(|n| match classify(n) {
            Some(WalName::History(_)) => true,
            _ => crate::base::wal::Segment::parse(n.get(..24).unwrap_or(""), bytes)
                .is_some_and(|s| s.segno >= from_segno),
        })
        .collect();
    let tmp = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let mut damaged = Vec::new();
    if depth == Depth::Chain {
        // What the listing alone shows of the files the other depths read:
        // an object deleted behind its record.
        damaged = archive.without_object(archive.files.keys().filter(|n| {
            match classify(n) {
                Some(WalName::History(_)) => true,
                _ => crate::base::wal::Segment::parse(n.get(..24).unwrap_or(""), bytes)
                    .is_some_and(|s| s.segno >= from_segno),
            }
        }));
    }
    for name in &wanted {
        let verdict = check_file(
            cfg,
            (repo, job),
            name,
            &objects,
            deep.then_some(tmp.path()),
            identity,
        )
        .await;
        if let Err(e) = verdict {
            if !matches!(e, Error::Integrity { .. } | Error::NotFound(_)) {
                // The store or the key, not the file: say so as a whole.
                return Err(e);
            }
            damaged.push(format!(
                "{name}: {}",
                crate::base::secret::redact(&e.to_string())
            ));
        }
    }
    Ok(WalCheck {
        job: job.to_string(),
        repository: repo.name.clone(),
        from: oldest.map(|p| p.start_lsn.to_string()),
        files: wanted.len(),
        newest: segs.iter().max_by_key(|s| s.segno).map(|s| s.name(bytes)),
        gaps: gaps.iter().map(crate::base::wal::describe_gap).collect(),
        damaged,
        diverged: archive.diverged(bytes),
        deep,
    })
}

/// Which of `names` (files an earlier, deeper check found damaged) still
/// are, read again the way `verify` reads them: record, object of the
/// recorded size, then decoded to its SHA-256. The daemon's own check
/// sees the listing only, so before it resolves a `wal_gap` that named
/// damaged files it asks this; a file it cannot decode (no key on this
/// host) stays damaged until `verify --deep` passes. Files no longer
/// committed (pruned) are gone, not damaged.
pub async fn recheck(
    cfg: &crate::config::LoadedConfig,
    repo: &Repository,
    job: &JobName,
    names: &[String],
) -> Result<Vec<String>> {
    let archive = list(repo, job).await?;
    let objects: BTreeMap<String, u64> = repo
        .backend()
        .list(&prefix(job))
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let tmp = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let mut damaged = Vec::new();
    for name in names.iter().filter(|n| archive.has(n)) {
        match check_file(cfg, (repo, job), name, &objects, Some(tmp.path()), None).await {
            Ok(()) => {}
            Err(e @ (Error::Integrity { .. } | Error::NotFound(_))) => damaged.push(format!(
                "{name}: {}",
                crate::base::secret::redact(&e.to_string())
            )),
            Err(e) => damaged.push(format!(
                "{name}: found damaged before and not decodable here ({}); `drctl verify --job {job} --deep` with the key clears it",
                crate::base::secret::redact(&e.to_string())
            )),
        }
    }
    Ok(damaged)
}

/// The WAL files an alert's detail names as damaged (`NAME: why` lines;
/// `missing: A..B` gaps are the listing's to judge).
pub fn damaged_in(detail: &str) -> Vec<String> {
    detail
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(n, _)| n))
        .filter(|n| classify(n).is_some())
        .map(str::to_owned)
        .collect()
}

/// One stored WAL file: its record reads, its object is listed with the
/// recorded size, and (`deep_into`: fetched there and removed) it decodes to
/// the file's own size and SHA-256.
async fn check_file(
    cfg: &crate::config::LoadedConfig,
    (repo, job): (&Repository, &JobName),
    name: &str,
    objects: &BTreeMap<String, u64>,
    deep_into: Option<&Path>,
    identity: Option<&Path>,
) -> Result<()> {
    let r = read_record(repo, job, name).await?;
    let key = object_key(job, &r.object);
    match objects.get(&key) {
        Some(&n) if n == r.stored_bytes => {}
        Some(&n) => {
            return Err(Error::Integrity {
                artifact: key,
                message: format!("{n} bytes stored, the record says {}", r.stored_bytes),
            })
        }
        None => {
            return Err(Error::Integrity {
                artifact: key,
                message: "named by its record but missing from the repository".into(),
            })
        }
    }
    if let Some(dir) = deep_into {
        let keys = crate::services::keys::for_recipients(
            cfg,
            physical_job(cfg, Some(job.as_str()))?.1,
            &format!("WAL file {name}"),
            r.encryption_recipients.iter().map(String::as_str).collect(),
            identity,
        )?;
        let dest = dir.join(name);
        fetch(repo, job, &r, &dest, &keys).await?;
        let _ = tokio::fs::remove_file(&dest).await;
    }
    Ok(())
}

/// Raise `wal_gap:JOB` (critical) while the job's WAL chain has a gap or a
/// damaged file, clear it once whole: a gap makes every point after it
/// unrestorable from the base backups before it.
pub async fn alert_gaps(
    cfg: &crate::config::LoadedConfig,
    state: &crate::services::state::State,
    c: &WalCheck,
) {
    use crate::services::alerts::{Alerter, Condition, Severity};
    let alerter = Alerter::new(cfg, state);
    let key = format!("wal_gap:{}", c.job);
    let r = if c.ok() {
        alerter
            .clear(&key, format!("the WAL chain of {} is whole again", c.job))
            .await
    } else {
        let mut cond = Condition::new(
            "wal_gap",
            &c.job,
            Severity::Critical,
            format!(
                "the WAL archive of {} has {} gap(s) and {} damaged file(s)",
                c.job,
                c.gaps.len(),
                c.damaged.len()
            ),
        );
        cond.job = Some(c.job.clone());
        let mut lines: Vec<String> = c.gaps.iter().map(|g| format!("missing: {g}")).collect();
        lines.extend(c.damaged.iter().cloned());
        cond.detail = Some(lines.join("\n"));
        cond.hint = Some(format!(
            "A point-in-time restore cannot cross a gap: restores to a point after it need a base backup taken after it. Take one now (`drctl run {0}`), then find why segments went missing (the server log's archive_command errors, bucket lifecycle rules, who can delete objects); `drctl wal list --job {0}` shows the chain.",
            c.job
        ));
        alerter.raise(cond).await
    };
    if let Err(e) = r {
        tracing::error!(job = %c.job, error = %e, "cannot record the WAL alert");
    }
    let key = format!("wal_timelines_diverged:{}", c.job);
    let r = if c.diverged.is_empty() {
        alerter
            .clear(
                &key,
                format!("one timeline of {} receives WAL again", c.job),
            )
            .await
    } else {
        let mut cond = Condition::new(
            "wal_timelines_diverged",
            &c.job,
            Severity::Warning,
            format!(
                "two servers archive into job {}: timelines diverged after a branch",
                c.job
            ),
        );
        cond.job = Some(c.job.clone());
        cond.detail = Some(c.diverged.join("\n"));
        cond.hint = Some(format!(
            "A restored copy (or a second promoted server) archives into the job beside the primary. Stop the one that is not the primary, or set archive_mode = off on it; restores follow the timeline stored last unless given --timeline N (`drctl wal list --job {}` shows both).",
            c.job
        ));
        alerter.raise(cond).await
    };
    if let Err(e) = r {
        tracing::error!(job = %c.job, error = %e, "cannot record the WAL alert");
    }
}

/// Whether `object` (a name under `{job}/wal/`) holds the bytes of WAL
/// file `name`: `<name>.<8 hex>` and a suffix drctl writes, so another
/// file's objects (`<name>.partial...`, `<name>.00000028.backup...`) never
/// match.
fn object_of(name: &str, object: &str) -> bool {
    let Some(rest) = object.strip_prefix(name).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    let (nonce, suffix) = rest.split_at(rest.len().min(8));
    nonce.len() == 8
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
        && ["", ".zst", ".gz", ".age", ".zst.age", ".gz.age"].contains(&suffix)
}

/// What pruning a job's WAL did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalPruned {
    /// Where the WAL still needed starts: the oldest kept base backup's start.
    pub keep_from: Option<String>,
    /// Files deleted (records and their objects).
    pub files: usize,
    /// Bytes deleted.
    pub bytes: u64,
    /// Deletions that failed (the next prune retries them).
    pub errors: Vec<String>,
}

/// Delete the WAL no kept base backup needs: every segment (and `.partial`,
/// `.backup`) wholly before the oldest start among `kept` (`wal::prunable`;
/// history files stay). Without a readable kept base backup nothing is
/// deleted. Each file's record goes first, then its objects (a file without
/// a record is not stored, so a prune cut short never leaves a record
/// naming nothing).
pub async fn prune(
    repo: &Repository,
    job: &JobName,
    kept: &[crate::base::ids::BackupId],
    dry_run: bool,
) -> Result<WalPruned> {
    let mut oldest: Option<(crate::base::wal::Lsn, u64)> = None;
    for id in kept {
        let m = repo.read_manifest(job, id).await?;
        if let Some(p) = m.physical {
            if oldest.is_none_or(|(l, _)| p.start_lsn < l) {
                oldest = Some((p.start_lsn, p.wal_segment_bytes));
            }
        }
    }
    let Some((from, bytes)) = oldest else {
        return Ok(WalPruned::default());
    };
    let listed = repo.backend().list(&prefix(job)).await?;
    let archive = list(repo, job).await?;
    let names: Vec<String> = archive.files.keys().cloned().collect();
    let mut out = WalPruned {
        keep_from: Some(from.to_string()),
        ..WalPruned::default()
    };
    for name in crate::base::wal::prunable(&names, from, bytes) {
        let objects: Vec<&ObjectInfo> = listed
            .iter()
            .filter(|o| {
                o.key
                    .strip_prefix(&prefix(job))
                    .is_some_and(|k| object_of(&name, k))
            })
            .collect();
        out.files += 1;
        out.bytes += objects.iter().map(|o| o.size).sum::<u64>();
        if dry_run {
            continue;
        }
        if let Err(e) = repo.backend().delete(&record_key(job, &name)).await {
            out.errors.push(format!("{name}: deleting its record: {e}"));
            continue;
        }
        for o in objects {
            if let Err(e) = repo.backend().delete(&o.key).await {
                out.errors
                    .push(format!("{}: {e} (left as an orphan)", o.key));
            }
        }
    }
    Ok(out)
}

/// What copying a job's WAL into a copy repository did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalCopied {
    /// Files copied now (object, then record).
    pub files: usize,
    /// Their stored bytes.
    pub bytes: u64,
    /// Files that could not be copied, each with why (the next sync
    /// retries them).
    pub errors: Vec<String>,
}

/// Copy the job's committed WAL files that `to` lacks from `from`, byte
/// for byte (no key needed: the objects stay sealed), each object checked
/// against its record on the way and committed in `to` the way a push
/// commits it (object, then record, read back). Only what a recovery from
/// a base backup starting at `keep_from` or later can need: files
/// [`crate::base::wal::prunable`] below it are left out, histories always
/// go. A file whose record in `to` is there but whose object is not is
/// copied again (its record stays; the object is what was missing).
pub async fn copy_missing(
    from: &Repository,
    to: &Repository,
    job: &JobName,
    (keep_from, segment_bytes): (crate::base::wal::Lsn, u64),
) -> Result<WalCopied> {
    let source = list(from, job).await?;
    let dest = list(to, job).await?;
    let names: Vec<String> = source.files.keys().cloned().collect();
    let old: std::collections::BTreeSet<String> =
        crate::base::wal::prunable(&names, keep_from, segment_bytes)
            .into_iter()
            .collect();
    let mut out = WalCopied::default();
    for name in names.iter().filter(|n| !old.contains(*n)) {
        if dest.has(name) && dest.stored.contains_key(name) {
            continue;
        }
        match copy_file(from, to, job, name).await {
            Ok(bytes) => {
                out.files += 1;
                out.bytes += bytes;
            }
            Err(e) => out.errors.push(format!(
                "WAL {name}: {}",
                crate::base::secret::redact(&e.to_string())
            )),
        }
    }
    Ok(out)
}

/// One WAL file from `from` into `to`: its object streamed through a
/// [`crate::base::stream::Checked`] reader (size and SHA-256 of the
/// record), then the record committed. Returns the bytes stored.
async fn copy_file(from: &Repository, to: &Repository, job: &JobName, name: &str) -> Result<u64> {
    let record = read_record(from, job, name).await?;
    let key = object_key(job, &record.object);
    let src = from.get_key(&key).await?;
    let (checked, mismatch) =
        crate::base::stream::Checked::new(src, record.stored_bytes, &record.sha256);
    let put = to
        .put_key(&key, Box::pin(checked), Some(record.stored_bytes))
        .await;
    if let Some(what) = mismatch.found() {
        let _ = to.backend().delete(&key).await;
        return Err(Error::Integrity {
            artifact: format!("{key} in repository {}", from.name),
            message: what,
        });
    }
    let bytes = put?;
    match read_record(to, job, name).await {
        // The record is there (its object went missing): the object is back.
        Ok(there) if there == record => Ok(bytes),
        Ok(_) => Err(Error::Integrity {
            artifact: record_key(job, name),
            message: format!(
                "repository {} holds another record of {name}; not overwriting it",
                to.name
            ),
        }),
        Err(Error::NotFound(_)) => commit(to, job, &record).await.map(|()| bytes),
        Err(e) => Err(e),
    }
}

/// The WAL files of `base`'s own range (its start to its stop segment, on
/// its timeline) that `a` lacks (a record and an object each): without
/// them the base backup cannot become consistent.
pub fn base_range_missing(a: &Archive, p: &crate::base::manifest::PhysicalSource) -> Vec<String> {
    let bytes = p.wal_segment_bytes;
    crate::base::wal::needed(
        p.start_lsn,
        p.stop_lsn.segno(bytes),
        &[(p.timeline, crate::base::wal::Lsn(0))],
        bytes,
    )
    .into_iter()
    .filter(|n| !(a.has(n) && a.stored.contains_key(n)))
    .collect()
}

/// What the streaming uploader does with the files `pg_receivewal` left
/// in its spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolAction {
    /// A finished segment or a timeline history: store it, then remove it.
    Push(String),
    /// The unfinished segment: store it again, replacing the last copy.
    PushPartial(String),
}

/// The actions for a spool listing (pure): finished files oldest first,
/// then, when `partial_due`, the unfinished one. Anything else (a
/// temporary file of pg_receivewal's) is left alone.
pub fn spool_actions(names: &[String], partial_due: bool) -> Vec<SpoolAction> {
    let mut done: Vec<&String> = names
        .iter()
        .filter(|n| matches!(classify(n), Some(WalName::Segment | WalName::History(_))))
        .collect();
    // Histories first: a restore that sees a new timeline's segment can
    // then always read where it branched.
    done.sort_by_key(|n| (!n.ends_with(".history"), n.as_str()));
    let mut out: Vec<SpoolAction> = done
        .into_iter()
        .map(|n| SpoolAction::Push(n.clone()))
        .collect();
    if partial_due {
        if let Some(p) = names
            .iter()
            .filter(|n| classify(n) == Some(WalName::Partial))
            .max()
        {
            out.push(SpoolAction::PushPartial(p.clone()));
        }
    }
    out
}

/// Store the unfinished newest segment (`X.partial`) again, as it is now:
/// a new object, the record replaced, the previous object removed. The
/// file is read once into memory (a segment is 16 MiB by default) because
/// pg_receivewal keeps writing it: what is stored is one consistent read,
/// and a record torn at its end is where PostgreSQL's recovery stops.
pub async fn push_partial(
    repo: &Repository,
    job: &JobName,
    path: &Path,
    packing: Packing,
    seal: Option<&Seal>,
) -> Result<WalRecord> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if check_name(&name)? != WalName::Partial {
        return Err(Error::Usage(format!("{name} is not a .partial segment")));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let raw_sha256 = hex::encode(Sha256::digest(&bytes));
    let previous = match read_record(repo, job, &name).await {
        Ok(r) if r.raw_sha256 == raw_sha256 => return Ok(r),
        Ok(r) => Some(r),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let raw_bytes = bytes.len() as u64;
    let (record, _) = upload(
        (repo, job),
        &name,
        std::io::Cursor::new(bytes),
        (raw_bytes, raw_sha256),
        packing,
        seal,
    )
    .await?;
    let json = record_json(&record);
    repo.backend()
        .put_replace(&record_key(job, &name), json)
        .await?;
    if read_record(repo, job, &name).await? != record {
        return Err(Error::repo(
            &repo.name,
            format!(
                "{} reads back different from what was written",
                record_key(job, &name)
            ),
        ));
    }
    if let Some(old) = previous {
        let _ = repo.backend().delete(&object_key(job, &old.object)).await;
    }
    Ok(record)
}

/// Remove a stored file: its record first, then its objects (a file is
/// not stored without its record). Removing what is not there is fine.
pub async fn forget(repo: &Repository, job: &JobName, name: &str) -> Result<()> {
    let listed = repo.backend().list(&prefix(job)).await?;
    match repo.backend().delete(&record_key(job, name)).await {
        Ok(()) | Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    for o in listed.iter().filter(|o| {
        o.key
            .strip_prefix(&prefix(job))
            .is_some_and(|k| object_of(name, k))
    }) {
        repo.backend().delete(&o.key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SpoolAction::{Push, PushPartial};

    #[test]
    fn the_spool_is_stored_histories_first_then_segments_in_order_then_the_unfinished_one() {
        let names: Vec<String> = [
            "000000020000000000000005.partial",
            "000000020000000000000004",
            "00000002.history",
            "000000010000000000000003",
            ".000000020000000000000006.tmp",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            super::spool_actions(&names, true),
            [
                Push("00000002.history".into()),
                Push("000000010000000000000003".into()),
                Push("000000020000000000000004".into()),
                PushPartial("000000020000000000000005.partial".into()),
            ]
        );
        assert_eq!(super::spool_actions(&names, false).len(), 3);
    }

    #[test]
    fn a_files_objects_are_its_own_only() {
        let n = "000000010000000000000003";
        assert!(super::object_of(
            n,
            "000000010000000000000003.0a1b2c3d.zst.age"
        ));
        assert!(super::object_of(n, "000000010000000000000003.0a1b2c3d"));
        for other in [
            "000000010000000000000003.json",
            "000000010000000000000003.partial.0a1b2c3d.zst",
            "000000010000000000000003.00000028.backup.0a1b2c3d.zst",
            "000000010000000000000003.00000028.backup.json",
            "0000000100000000000000030.0a1b2c3d.zst",
            "000000010000000000000003.0a1b2c3d.zst.json",
        ] {
            assert!(!super::object_of(n, other), "{other}");
        }
    }

    #[test]
    fn an_object_names_the_file_it_holds() {
        for (object, file) in [
            (
                "000000010000000000000003.0a1b2c3d.zst.age",
                Some("000000010000000000000003"),
            ),
            (
                "000000010000000000000003.0a1b2c3d",
                Some("000000010000000000000003"),
            ),
            (
                "000000010000000000000003.partial.0a1b2c3d.zst",
                Some("000000010000000000000003.partial"),
            ),
            (
                "000000010000000000000003.00000028.backup.0a1b2c3d.gz",
                Some("000000010000000000000003.00000028.backup"),
            ),
            ("00000002.history.0a1b2c3d.zst", Some("00000002.history")),
            ("000000010000000000000003.json", None),
            ("000000010000000000000003.zz1b2c3d.zst", None),
            ("0a1b2c3d.zst", None),
            ("", None),
        ] {
            assert_eq!(super::file_of_object(object), file, "{object}");
        }
    }
}
