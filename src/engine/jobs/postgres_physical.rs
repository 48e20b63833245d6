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

use super::{BackupCtx, BackupOutput, Packing};
use crate::base::error::{Error, Result};
use crate::base::manifest::PhysicalSource;
use crate::base::wal::Lsn;
use crate::config::{PhysicalJob, WalMode};
use crate::services::pg::{PgTarget, PgTools, SqlSession};

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
    /// Tablespaces besides `pg_default` and `pg_global`, as `name at location`.
    pub tablespaces: Vec<String>,
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
                    (SELECT string_agg(spcname || ' at ' || pg_tablespace_location(oid), E'\n' ORDER BY spcname)
                       FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
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
        tablespaces: col(6)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    })
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
    if !c.tablespaces.is_empty() {
        // pg_basebackup streams a single tablespace to stdout; refused
        // before it starts, with what to do instead.
        return Err(Error::Other(format!(
            "the cluster has tablespaces outside its data directory ({}): a postgres_physical job backs up clusters without extra tablespaces; back their databases up with a postgres (logical) job",
            c.tablespaces.join(", ")
        )));
    }
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
        "-D".into(),
        "-".into(),
        "-Ft".into(),
        "-X".into(),
        "fetch".into(),
        "-v".into(),
        format!("--checkpoint={}", job.checkpoint),
        format!("--label=drctl {}", ctx.id),
        "--no-password".into(),
    ];
    let child = tools
        .spawn("pg_basebackup", &args, &env, false, true)
        .await?;
    let (stdout, waiter) = child.into_checked_stdout()?;
    let packing = Packing {
        compression: job.storage.compression,
        level: job.storage.compression_level,
        threads: job
            .compression_threads
            .unwrap_or_else(Packing::default_threads),
    };
    ctx.progress.set_phase("base backup", 0);
    let stored = ctx
        .store("base.tar", "pg_basebackup_tar", stdout, packing, None, true)
        .await;
    let tool = waiter
        .await
        .map_err(|e| Error::task("pg_basebackup waiter", e))?;
    let (artifact, stderr) = match (stored, tool) {
        (Ok(a), Ok(text)) => (a, text),
        (_, Err(t)) => return Err(t),
        (Err(s), Ok(_)) => return Err(s),
    };
    let (start_lsn, timeline, stop_lsn) = parse_points(&stderr).ok_or_else(|| {
        Error::Other(format!(
            "pg_basebackup did not report its start and end points: {}",
            stderr.lines().last().unwrap_or("no output")
        ))
    })?;
    tracing::info!(job = %ctx.job, start = %start_lsn, stop = %stop_lsn, timeline, "base backup taken");
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
        }),
        artifacts: vec![artifact],
        output: stderr,
        ..Default::default()
    })
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
}
