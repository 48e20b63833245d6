//! `postgres_physical`: a base backup of a whole cluster with PostgreSQL's
//! own `pg_basebackup`, for point-in-time recovery with the archived WAL.
//!
//! `pg_basebackup -D - -Ft -X fetch` writes one tar to stdout (the data
//! directory, the WAL from the backup's start to its end, and the
//! `backup_manifest` pg_verifybackup reads); it streams through the usual
//! compress → encrypt → hash → upload pipeline as `base.tar.zst[.age]`, so
//! `zstd -d | tar -x` gives a data directory back without drctl. The start
//! and end positions and the timeline go into drctl's manifest: a
//! point-in-time restore picks the base backup and the WAL range from them.
//!
//! A cluster with tablespaces outside its data directory is the exception:
//! pg_basebackup writes one tar per tablespace and only into a directory,
//! so it writes into a scratch directory (`STATE_DIR/tmp`) and each tar,
//! `OID.tar` and then `base.tar`, is stored the same way while it is being
//! written (followed to its end, its blocks released as they are read:
//! the scratch space stays near empty), with pg_basebackup's
//! `backup_manifest` last. The tablespaces' OIDs, names and locations go
//! into drctl's manifest.

use super::{BackupCtx, BackupOutput, Packing};
use crate::base::error::{Error, Result};
use crate::base::manifest::{Artifact, PhysicalSource, PhysicalTablespace, TABLESPACE_TAR};
use crate::base::wal::Lsn;
use crate::config::{PhysicalJob, WalMode};
use crate::services::pg::{PgTarget, PgTools, SqlSession};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The job's server, from `url`, `url_env` or `url_file`.
pub fn target(job: &PhysicalJob) -> Result<PgTarget> {
    let url = job.connection.resolve("the PostgreSQL URL")?;
    PgTarget::parse(url.expose())
}

/// What the cluster says about itself before a base backup.
pub struct Cluster {
    /// `server_version_num`.
    pub num: i32,
    /// `server_version`.
    pub version: String,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: String,
    /// `wal_segment_size` in bytes.
    pub segment_bytes: u64,
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// Tablespaces besides `pg_default` and `pg_global`.
    pub tablespaces: Vec<Tablespace>,
    /// The server's clock when this was read.
    pub now: DateTime<Utc>,
}

/// A tablespace outside the data directory, as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Tablespace {
    /// Its OID.
    pub oid: u32,
    /// `spcname`.
    pub name: String,
    /// `pg_tablespace_location`.
    pub location: String,
}

/// The cluster's tablespaces from the JSON array the query returns (pure;
/// JSON so that any name or path survives the trip).
fn parse_tablespaces(json: &str) -> Result<Vec<Tablespace>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json)
        .map_err(|e| Error::Other(format!("unexpected list of tablespaces ({e}): {json}")))
}

/// Read [`Cluster`] over a normal connection.
pub async fn cluster(tools: &PgTools, target: &PgTarget) -> Result<Cluster> {
    let mut s = SqlSession::open(tools, target).await?;
    let row = s
        .rows(
            "SELECT current_setting('server_version_num'), current_setting('server_version'),
                    (SELECT system_identifier::text FROM pg_control_system()),
                    (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
                    current_setting('archive_mode'), current_setting('archive_command'),
                    (SELECT json_agg(json_build_object('oid', oid::bigint, 'name', spcname, 'location', pg_tablespace_location(oid)) ORDER BY oid)::text
                       FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')),
                    extract(epoch FROM clock_timestamp())::text",
        )
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let _ = s.close().await;
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let num = col(0)
        .parse()
        .map_err(|_| Error::Other(format!("unexpected server_version_num {:?}", col(0))))?;
    if col(2).is_empty() {
        return Err(Error::Other(format!(
            "{} may not read pg_control_system() (a physical job's user needs the REPLICATION attribute and pg_monitor or superuser)",
            target.user
        )));
    }
    Ok(Cluster {
        num,
        version: col(1),
        system_identifier: col(2),
        segment_bytes: col(3)
            .parse()
            .unwrap_or(crate::base::wal::DEFAULT_SEGMENT_BYTES),
        archive_mode: col(4),
        archive_command: col(5),
        tablespaces: parse_tablespaces(&col(6))?,
        now: parse_epoch(&col(7))?,
    })
}

/// The server's clock, read after a backup: the moment its stop record
/// is known to be written by.
pub async fn server_now(tools: &PgTools, target: &PgTarget) -> Result<DateTime<Utc>> {
    let mut s = SqlSession::open(tools, target).await?;
    let v = s
        .scalar("SELECT extract(epoch FROM clock_timestamp())::text")
        .await;
    let _ = s.close().await;
    parse_epoch(&v?.unwrap_or_default())
}

/// `extract(epoch ...)::text` (seconds since 1970, with a fraction).
fn parse_epoch(text: &str) -> Result<DateTime<Utc>> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .and_then(|s| DateTime::from_timestamp_micros((s * 1e6).round() as i64))
        .ok_or_else(|| Error::Other(format!("unexpected server time {text:?}")))
}

/// Why the cluster's WAL does not reach the repository the way `wal` says,
/// if it does not (pure: the settings decide).
pub fn archiving_problem(wal: WalMode, c: &Cluster) -> Option<String> {
    match wal {
        WalMode::ArchiveCommand if c.archive_mode == "off" => Some(
            "archive_mode is off: set archive_mode = on and archive_command = 'drctl wal push --job JOB %p' (a restart is needed), or a base backup cannot be rolled forward".into(),
        ),
        WalMode::ArchiveCommand if !c.archive_command.contains("wal push") => Some(format!(
            "archive_command does not mention `drctl wal push` (it is {:?}): unless it runs it, the WAL does not reach the repository",
            crate::base::secret::redact(&c.archive_command)
        )),
        _ => None,
    }
}

/// `write-ahead log start point: 0/2000028 on timeline 1` and `write-ahead
/// log end point: 0/2000100` of `pg_basebackup -v` (run with LC_ALL=C).
pub fn parse_points(stderr: &str) -> Option<(Lsn, u32, Lsn)> {
    let mut start = None;
    let mut end = None;
    for l in stderr.lines() {
        if let Some(rest) = l.split("write-ahead log start point: ").nth(1) {
            let mut f = rest.split_whitespace();
            let lsn = Lsn::parse(f.next()?)?;
            let tli = f.nth(2)?.parse().ok()?;
            start = Some((lsn, tli));
        }
        if let Some(rest) = l.split("write-ahead log end point: ").nth(1) {
            end = Lsn::parse(rest.split_whitespace().next()?);
        }
    }
    let (s, tli) = start?;
    Some((s, tli, end?))
}

/// Take a base backup of the job's cluster into the repository.
pub async fn backup(ctx: &BackupCtx<'_>, job: &PhysicalJob) -> Result<BackupOutput> {
    let target = target(job)?;
    let tools = PgTools::locate(job.pg_bindir.as_deref());
    let c = cluster(&tools, &target).await?;
    match archiving_problem(job.wal, &c) {
        Some(why) if c.archive_mode == "off" => return Err(Error::Other(why)),
        // A wrapper script may well run drctl: said, not refused.
        Some(why) => tracing::warn!(job = %ctx.job, "{why}"),
        None => {}
    }
    let version = tools.check_against_server("pg_basebackup", c.num).await?;
    let (mut env, _passfile) = tools.env_for(&target)?;
    env.push(("LC_ALL".into(), "C".into()));
    let args: Vec<String> = vec![
        "-Ft".into(),
        "-X".into(),
        "fetch".into(),
        "-v".into(),
        format!("--checkpoint={}", job.checkpoint),
        format!("--label=drctl {}", ctx.id),
        "--no-password".into(),
    ];
    let packing = Packing {
        compression: job.storage.compression,
        level: job.storage.compression_level,
        threads: job
            .compression_threads
            .unwrap_or_else(Packing::default_threads),
    };
    let taken = if c.tablespaces.is_empty() {
        streamed(ctx, &tools, args, &env, packing).await?
    } else {
        through_directory(ctx, &tools, args, &env, packing, &c.tablespaces).await?
    };
    let (start_lsn, timeline, stop_lsn) = parse_points(&taken.stderr).ok_or_else(|| {
        Error::Other(format!(
            "pg_basebackup did not report its start and end points: {}",
            taken.stderr.lines().last().unwrap_or("no output")
        ))
    })?;
    // The stop record is written by now on the server's clock: what a
    // recovery target time is compared with. Without it the backup could
    // only be placed by this host's clock, which may be off; a run that
    // cannot read it fails rather than record a guess.
    let stopped = server_now(&tools, &target).await.map_err(|e| {
        Error::Other(format!(
            "the base backup was taken but the server's clock could not be read after it ({e}); without it a restore to a time could pick this backup for a moment it does not reach"
        ))
    })?;
    tracing::info!(job = %ctx.job, start = %start_lsn, stop = %stop_lsn, timeline, tablespaces = taken.tablespaces.len(), server_stopped_at = %stopped, "base backup taken");
    Ok(BackupOutput {
        physical: Some(PhysicalSource {
            engine: "postgresql".into(),
            server_version: c.version,
            server_version_num: c.num,
            system_identifier: c.system_identifier,
            timeline,
            start_lsn,
            stop_lsn,
            wal_segment_bytes: c.segment_bytes,
            tool_version: version.text,
            wal_method: "fetch".into(),
            tablespaces: taken.tablespaces,
            server_started_at: Some(c.now),
            server_stopped_at: Some(stopped),
        }),
        artifacts: taken.artifacts,
        output: taken.stderr,
        ..Default::default()
    })
}

/// What pg_basebackup produced, stored.
struct Taken {
    artifacts: Vec<Artifact>,
    tablespaces: Vec<PhysicalTablespace>,
    stderr: String,
}

/// The usual case: one tar on pg_basebackup's stdout, streamed into the
/// repository as it comes.
async fn streamed(
    ctx: &BackupCtx<'_>,
    tools: &PgTools,
    mut args: Vec<String>,
    env: &[(String, String)],
    packing: Packing,
) -> Result<Taken> {
    args.splice(0..0, ["-D".to_owned(), "-".to_owned()]);
    let child = tools
        .spawn("pg_basebackup", &args, env, false, true)
        .await?;
    let (stdout, waiter) = child.into_checked_stdout()?;
    ctx.progress.set_phase("base backup", 0);
    let stored = ctx
        .store("base.tar", "pg_basebackup_tar", stdout, packing, None, true)
        .await;
    let tool = waiter
        .await
        .map_err(|e| Error::task("pg_basebackup waiter", e))?;
    match (stored, tool) {
        (Ok(a), Ok(stderr)) => Ok(Taken {
            artifacts: vec![a],
            tablespaces: Vec::new(),
            stderr,
        }),
        (_, Err(t)) => Err(t),
        (Err(s), Ok(_)) => Err(s),
    }
}

/// A cluster with tablespaces: pg_basebackup writes `base.tar`, one
/// `OID.tar` per tablespace and `backup_manifest` into a scratch directory,
/// one after the other. Each tar is stored while pg_basebackup writes it
/// (followed to its end, its blocks released as they are read), so the
/// scratch directory holds little more than the manifest. The directory
/// goes away with this function, whatever happens; an error stops
/// pg_basebackup.
async fn through_directory(
    ctx: &BackupCtx<'_>,
    tools: &PgTools,
    mut args: Vec<String>,
    env: &[(String, String)],
    packing: Packing,
    known: &[Tablespace],
) -> Result<Taken> {
    if tools.container().is_some() {
        return Err(Error::Other(
            "the cluster has tablespaces, which pg_basebackup writes only into a directory, and a container's directory is not this host's: run the job with the host's pg_basebackup".into(),
        ));
    }
    let dir = scratch_for(ctx)?;
    let out = dir.path().join("backup");
    args.splice(0..0, ["-D".to_owned(), out.display().to_string()]);
    let child = tools
        .spawn("pg_basebackup", &args, env, false, false)
        .await?;
    let exited = Arc::new(AtomicBool::new(false));
    let waiter = {
        let exited = exited.clone();
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let r = child.finish().await;
            exited.store(true, Ordering::SeqCst);
            r
        }))
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut artifacts = Vec::with_capacity(known.len() + 2);
    let mut tablespaces = Vec::with_capacity(known.len());
    while let Some(file) = next_tar(&out, &seen, &exited).await {
        seen.insert(file.clone());
        let oid = file
            .strip_suffix(".tar")
            .and_then(|o| o.parse::<u32>().ok());
        let content = match oid {
            _ if file == "base.tar" => "pg_basebackup_tar",
            Some(_) => TABLESPACE_TAR,
            None => {
                return Err(Error::Other(format!(
                    "pg_basebackup wrote {file}, which a base backup of drctl's does not hold"
                )))
            }
        };
        // This tar is whole once pg_basebackup moved on: to another tar,
        // to its manifest, or out.
        let finished = {
            let (out, before, exited) = (out.clone(), seen.clone(), exited.clone());
            move || {
                exited.load(Ordering::SeqCst)
                    || out.join("backup_manifest").exists()
                    || tars(&out).iter().any(|t| !before.contains(t))
            }
        };
        ctx.progress.set_phase(
            &format!("base backup: {file} (the cluster has tablespaces)"),
            0,
        );
        let followed = crate::base::stream::growing::follow(out.join(&file), finished);
        let a = ctx
            .store(&file, content, followed, packing, None, true)
            .await?;
        let _ = std::fs::remove_file(out.join(&file));
        if let Some(oid) = oid {
            // One created between the query and the backup is not in
            // `known`: its files are kept all the same, and a restore asks
            // where they go.
            let t = known.iter().find(|t| t.oid == oid);
            tablespaces.push(PhysicalTablespace {
                oid,
                name: t.map_or_else(|| oid.to_string(), |t| t.name.clone()),
                location: t.map(|t| t.location.clone()).unwrap_or_default(),
                artifact: a.name.clone(),
            });
        }
        artifacts.push(a);
    }
    let stderr = waiter
        .await
        .map_err(|e| Error::task("pg_basebackup waiter", e))??;
    if !seen.contains("base.tar") {
        return Err(Error::Other(format!(
            "pg_basebackup exited without writing base.tar: {}",
            stderr.lines().last().unwrap_or("no output")
        )));
    }
    artifacts.push(store_file(ctx, &out, "backup_manifest", "pg_backup_manifest", packing).await?);
    tablespaces.sort_by_key(|t| t.oid);
    Ok(Taken {
        artifacts,
        tablespaces,
        stderr,
    })
}

/// A private directory in the scratch space for this run; what a killed
/// run of this job left there is removed first (the job's host lock, held
/// by the runner, means no other run of it is writing there).
fn scratch_for(ctx: &BackupCtx<'_>) -> Result<tempfile::TempDir> {
    crate::base::private_fs::dir_all(&ctx.scratch)
        .map_err(|e| Error::io(format!("creating {}", ctx.scratch.display()), e))?;
    let prefix = format!("basebackup+{}+", ctx.job);
    for e in std::fs::read_dir(&ctx.scratch)
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::info!(path = %e.path().display(), "removing what a killed base backup left");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&ctx.scratch)
        .map_err(|e| {
            Error::io(
                format!("creating a directory in {}", ctx.scratch.display()),
                e,
            )
        })
}

/// The `.tar` files in `dir`.
fn tars(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tar"))
        .collect()
}

/// The next tar pg_basebackup started (the oldest not yet `seen`), or none
/// once it exited without another.
async fn next_tar(
    dir: &Path,
    seen: &std::collections::BTreeSet<String>,
    exited: &AtomicBool,
) -> Option<String> {
    loop {
        // Read before listing: a tool that exited wrote all it will.
        let done = exited.load(Ordering::SeqCst);
        let oldest = tars(dir)
            .into_iter()
            .filter(|t| !seen.contains(t))
            .filter_map(|t| {
                let at = std::fs::metadata(dir.join(&t)).ok()?.modified().ok()?;
                Some((at, t))
            })
            .min();
        if let Some((_, t)) = oldest {
            return Some(t);
        }
        if done {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Store one file of the scratch directory, whole, then remove it.
async fn store_file(
    ctx: &BackupCtx<'_>,
    dir: &Path,
    name: &str,
    content: &str,
    packing: Packing,
) -> Result<Artifact> {
    let path = dir.join(name);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        Error::io(
            format!("opening {} (written by pg_basebackup)", path.display()),
            e,
        )
    })?;
    let size = file.metadata().await.ok().map(|m| m.len());
    let a = ctx.store(name, content, file, packing, size, false).await?;
    let _ = tokio::fs::remove_file(&path).await;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_end_points_come_from_pg_basebackup_v() {
        let err = "pg_basebackup: initiating base backup, waiting for checkpoint to complete
pg_basebackup: checkpoint completed
pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1
pg_basebackup: write-ahead log end point: 0/2000100
pg_basebackup: syncing data to disk ...
pg_basebackup: base backup completed";
        assert_eq!(parse_points(err), Some((Lsn(0x2000028), 1, Lsn(0x2000100))));
        assert_eq!(parse_points("pg_basebackup: base backup completed"), None);
    }

    #[test]
    fn a_cluster_that_does_not_archive_to_drctl_is_named() {
        let mut c = Cluster {
            num: 150000,
            version: "15".into(),
            system_identifier: "1".into(),
            segment_bytes: 16 << 20,
            archive_mode: "off".into(),
            archive_command: String::new(),
            tablespaces: Vec::new(),
            now: DateTime::UNIX_EPOCH,
        };
        assert!(archiving_problem(WalMode::ArchiveCommand, &c)
            .unwrap()
            .contains("archive_mode is off"));
        c.archive_mode = "on".into();
        c.archive_command = "cp %p /mnt/%f".into();
        assert!(archiving_problem(WalMode::ArchiveCommand, &c)
            .unwrap()
            .contains("drctl wal push"));
        c.archive_command = "/usr/bin/drctl wal push --job db %p".into();
        assert_eq!(archiving_problem(WalMode::ArchiveCommand, &c), None);
    }

    #[test]
    fn tablespaces_are_read_from_json_whatever_their_names() {
        assert_eq!(parse_tablespaces("").unwrap(), vec![]);
        let t = parse_tablespaces(
            r#"[{"oid": 16384, "name": "odd name\nwith a line", "location": "/srv/a b"}]"#,
        )
        .unwrap();
        assert_eq!(
            t,
            vec![Tablespace {
                oid: 16384,
                name: "odd name\nwith a line".into(),
                location: "/srv/a b".into()
            }]
        );
        assert!(parse_tablespaces("[{}]")
            .unwrap_err()
            .to_string()
            .contains("unexpected list of tablespaces"));
    }
}
