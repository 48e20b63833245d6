//! `drctl restore (--latest | --id ID | --label LABEL) [--job JOB] [--to TARGET] ...`
//! and `drctl restore --undo [--job JOB] [--copy NAME]`.

use super::progress::Bar;
use drctl::base::progress::Progress;
use drctl::config::LoadedConfig;
use drctl::engine::restore::{self, Plan, RestoreRequest};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["latest", "id", "label", "undo", "at", "lsn"]))]
pub struct Args {
    /// Restore the newest committed backup
    #[arg(long)]
    latest: bool,
    /// Restore this backup id
    #[arg(long)]
    id: Option<String>,
    /// Restore the newest backup with this label (`drctl run --label`)
    #[arg(long)]
    label: Option<String>,
    /// postgres_physical jobs: recover to this moment (RFC 3339, or
    /// "2026-12-01 03:14:00" in UTC): the newest base backup before it plus
    /// the archived WAL up to it
    #[arg(long, value_parser = parse_at, requires = "to_datadir")]
    at: Option<chrono::DateTime<chrono::Utc>>,
    /// postgres_physical jobs: recover to this WAL position (16/B374D848)
    #[arg(long, value_parser = parse_lsn, requires = "to_datadir")]
    lsn: Option<drctl::base::wal::Lsn>,
    /// postgres_physical jobs: the data directory to restore into (new or
    /// empty); with --latest, recovery runs to the end of the archived WAL
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "to_env", "undo", "id", "label"])]
    to_datadir: Option<PathBuf>,
    /// postgres_physical jobs with tablespaces: restore the tablespace
    /// OLD (its name, OID or old location) into NEWDIR instead of its old
    /// location (repeatable; pg_basebackup's --tablespace-mapping)
    #[arg(long, value_name = "OLD=NEWDIR", value_parser = restore::pitr::parse_tablespace_mapping, requires = "to_datadir")]
    tablespace_map: Vec<(String, PathBuf)>,
    /// postgres_physical jobs: recover along this timeline [default: the
    /// one the job's server archives now, i.e. whose WAL was stored last;
    /// never a restored copy's that stopped archiving]
    #[arg(long, value_name = "N", requires = "to_datadir")]
    timeline: Option<u32>,
    /// postgres_physical jobs: leave the restored directory archiving as
    /// the backed-up server did [default: archive_mode = 'off' is written
    /// into its postgresql.auto.conf, so that a copy started as-is never
    /// archives into the job]
    #[arg(long, requires = "to_datadir")]
    keep_archiving: bool,
    /// postgres_physical jobs: start from this base backup (an older one
    /// when the newest is damaged) [default: the newest that reaches the
    /// target]
    #[arg(long, value_name = "ID", requires = "to_datadir")]
    base: Option<String>,
    /// Undo the last restore of the job's own database: swap its newest
    /// safety copy (<db>_pre_restore_<ts>) back; the replaced database
    /// becomes a safety copy in its turn
    #[arg(long, conflicts_with_all = ["to", "to_env"])]
    undo: bool,
    /// With --undo: swap back this safety copy instead of the newest
    #[arg(long, requires = "undo", value_name = "NAME")]
    copy: Option<String>,
    /// The job whose backups to restore (optional with a single backup job)
    #[arg(long)]
    job: Option<String>,
    /// Target: a postgres:// URL (created if missing, must be empty), or a directory for files backups.
    /// Without it, the job's own database is replaced and the old one kept as a safety copy.
    #[arg(long, conflicts_with = "to_env")]
    to: Option<String>,
    /// Read the target from this environment variable instead (a URL with a
    /// password stays out of argv and `ps`); or give a URL without password
    /// and set PGPASSWORD or PGPASSFILE
    #[arg(long, value_name = "VAR")]
    to_env: Option<String>,
    /// Parallel pg_restore workers (pg_restore -j); `--jobs N` is the
    /// older spelling, still accepted
    #[arg(
        long = "parallel",
        short = 'j',
        alias = "jobs",
        value_name = "N",
        default_value_t = 1
    )]
    jobs: usize,
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,
    /// Scratch directory for the decompressed dump [default: STATE_DIR/tmp]
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// age identity file (AGE-SECRET-KEY-1...) for an encrypted backup
    /// [default: $DRCTL_AGE_IDENTITY_FILE, else encryption.identity_file]
    #[arg(long, short = 'i')]
    identity: Option<PathBuf>,
    /// Files backups: keep setuid, setgid and sticky bits (dropped by default)
    #[arg(long)]
    preserve_modes: bool,
    /// Replace the job's own database even with a backup taken from another
    /// server or database (refused by default: two hosts sharing a job name)
    #[arg(long)]
    force_source: bool,
    /// Skip the job's [jobs.X.restore] before/after hooks
    #[arg(long)]
    no_hooks: bool,
    /// Read only this repository (the job's own or one of its copies)
    /// [default: the newest backup in any of them, falling back to the
    /// next one holding it when a copy is damaged or unreachable]
    #[arg(long, conflicts_with = "undo")]
    repository: Option<String>,
    #[arg(long)]
    json: bool,
}

fn print_plan(p: &Plan) {
    if p.repository == "-" {
        eprintln!("undo plan");
        eprintln!(
            "  safety copy {} (job {}, made {})",
            p.backup_id,
            p.job,
            super::when(&p.backup_finished_at)
        );
        eprintln!("  target      {}", p.target);
        for n in &p.notes {
            eprintln!("  note        {n}");
        }
        for (i, s) in p.steps.iter().enumerate() {
            eprintln!("  {}. {s}", i + 1);
        }
        return;
    }
    eprintln!("restore plan");
    eprintln!(
        "  backup     {} (job {}, {} from {})",
        p.backup_id,
        p.job,
        super::when(&p.backup_finished_at),
        p.backup_host
    );
    eprintln!("  repository {}", p.repository);
    eprintln!(
        "  size       {} stored, {} raw",
        super::human_bytes(p.stored_bytes),
        super::human_bytes(p.raw_bytes)
    );
    eprintln!("  target     {}", p.target);
    for n in &p.notes {
        eprintln!("  note       {n}");
    }
    for (i, s) in p.steps.iter().enumerate() {
        eprintln!("  {}. {s}", i + 1);
    }
}

/// RFC 3339, or `2026-12-01 03:14:00` (UTC).
fn parse_at(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    // As psql prints a timestamptz: `2026-12-01 03:14:00+00`.
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&chrono::Utc));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "{s}: expected a time such as 2026-12-01T03:14:00Z (RFC 3339) or \"2026-12-01 03:14:00\" (UTC)"
    ))
}

fn parse_lsn(s: &str) -> Result<drctl::base::wal::Lsn, String> {
    drctl::base::wal::Lsn::parse(s)
        .ok_or_else(|| format!("{s}: expected an LSN such as 16/B374D848"))
}

/// A point-in-time restore of a postgres_physical job.
async fn exec_pitr(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    use restore::pitr::{PitrRequest, Target};
    let Some(datadir) = a.to_datadir else {
        return Err(drctl::Error::Usage(
            "a postgres_physical job restores into a data directory: give --to-datadir DIR".into(),
        )
        .into());
    };
    let target = match (a.at, a.lsn) {
        (Some(t), _) => Target::Time(t),
        (None, Some(l)) => Target::Lsn(l),
        (None, None) => Target::Latest,
    };
    let req = PitrRequest {
        job: a.job,
        target,
        datadir,
        dry_run: a.dry_run,
        identity: a.identity,
        parallel: a.jobs.max(4),
        tablespace_map: a.tablespace_map,
        tablespaces_under: None,
        timeline: a.timeline,
        repository: a.repository.clone(),
        base: a.base.clone(),
        keep_archiving: a.keep_archiving,
    };
    let mut plan = restore::pitr::plan(cfg, &req).await?;
    if plan.estimate.is_none() {
        // A fresh host has no drill of its own: the fleet's, from the
        // repository.
        plan.estimate =
            drctl::engine::fleet::published_estimate(cfg, &plan.job, plan.work_bytes).await;
    }
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print_pitr_plan(&plan);
            eprintln!("dry run: nothing changed");
        }
        return Ok(());
    }
    if !a.json {
        print_pitr_plan(&plan);
    }
    let state = drctl::services::state::State::open(&cfg.config.state_dir).await?;
    let token = super::cancel_on_signals();
    // On SIGINT/SIGTERM the restore's future is dropped first (its
    // recovery server, a child, stops at once; the directory lock goes),
    // then the journal's recovery empties what it wrote.
    let outcome = tokio::select! {
        r = restore::pitr::run(cfg, &state, &req, restore::journal::Origin::Operator) => Some(r),
        () = token.cancelled() => None,
    };
    super::deliver_now(cfg, &state).await;
    let Some(report) = outcome else {
        let notes = restore::journal::recover(cfg, &state).await;
        for n in &notes {
            eprintln!("drctl: {n}");
        }
        return Err(drctl::Error::Interrupted(format!(
            "the point-in-time restore into {} was interrupted; nothing of it is left",
            req.datadir.display()
        ))
        .into());
    };
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for l in &report.recovery {
        eprintln!("  postgres: {l}");
    }
    for f in &report.fallbacks {
        eprintln!("drctl: warning: {f}");
    }
    eprintln!(
        "restored job {} to {} into {} in {:.1}s (base backup {:.1}s, WAL {:.1}s, recovery {:.1}s); timeline {}",
        report.plan.job,
        report.plan.target,
        report.plan.datadir,
        report.total_seconds,
        report.base_seconds,
        report.wal_seconds,
        report.recovery_seconds,
        report.timeline.map_or_else(|| "?".into(), |t| t.to_string())
    );
    eprintln!("the data directory is a stopped, promoted cluster: start it with its service (or pg_ctl start -D DIR)");
    if a.keep_archiving {
        eprintln!(
            "it archives as the backed-up server did (--keep-archiving): started, it stores timeline {} into job {}",
            report.timeline.map_or_else(|| "?".into(), |t| t.to_string()),
            report.plan.job
        );
    } else {
        eprintln!(
            "it does not archive: archive_mode = 'off' is written at the end of its postgresql.auto.conf, so it never mixes a second timeline into job {}'s archive; to make it the new primary, delete those lines and restart it (README: \"Promoting a restored copy\")",
            report.plan.job
        );
    }
    Ok(())
}

fn print_pitr_plan(p: &restore::pitr::PitrPlan) {
    eprintln!("point-in-time restore plan");
    for n in &p.passed_over {
        eprintln!("  note: {n}");
    }
    eprintln!(
        "  base backup {} (job {}, finished {}), start {} on timeline {}",
        p.backup_id,
        p.job,
        super::when(&p.backup_finished_at.to_rfc3339()),
        p.start_lsn,
        p.timeline
    );
    eprintln!("  repository  {}", p.repository);
    eprintln!(
        "  target      {} (timeline {})",
        p.target, p.target_timeline
    );
    if let Some((a, b)) = &p.wal_range {
        eprintln!(
            "  WAL         {} files, {a}..{b}, {} stored",
            p.wal_files,
            super::human_bytes(p.wal_stored_bytes)
        );
    }
    eprintln!(
        "  base size   {} stored",
        super::human_bytes(p.base_stored_bytes)
    );
    if let Some((a, b)) = &p.window {
        eprintln!(
            "  window      {} .. {}",
            super::when(&a.to_rfc3339()),
            super::when(&b.to_rfc3339())
        );
    }
    eprintln!("  data dir    {}", p.datadir);
    for t in &p.tablespaces {
        eprintln!(
            "  tablespace  {} (OID {}): {} -> {}",
            t.name, t.oid, t.location, t.directory
        );
    }
    match &p.estimate {
        Some(e) => eprintln!(
            "  estimate    about {} to the promotion ({} of work, the median rate of {} past drill{} of this job, {})",
            humantime::format_duration(std::time::Duration::from_secs(e.seconds.ceil() as u64)),
            super::human_bytes(p.work_bytes),
            e.drills,
            if e.drills == 1 { "" } else { "s" },
            e.from
        ),
        None => eprintln!(
            "  estimate    none: no drill of this job has restored on this host, and no host published one in the repository ({} of work)",
            super::human_bytes(p.work_bytes)
        ),
    }
    for (i, s) in p.steps.iter().enumerate() {
        eprintln!("  {}. {s}", i + 1);
    }
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let physical = a.to_datadir.is_some()
        || a.at.is_some()
        || a.lsn.is_some()
        || drctl::engine::wal::physical_job(cfg, a.job.as_deref()).is_ok_and(|_| {
            a.job.is_some()
                || cfg
                    .config
                    .jobs
                    .values()
                    .filter(|j| j.backup_repository("").is_ok())
                    .count()
                    == 1
        });
    if physical {
        return exec_pitr(cfg, a).await;
    }
    let to = match &a.to_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            _ => {
                return Err(drctl::Error::Usage(format!(
                    "--to-env {var}: the variable is not set (expected the target URL there)"
                ))
                .into())
            }
        },
        None => a.to,
    };
    let label = super::label_arg(a.label.as_deref())?;
    let mut req = RestoreRequest {
        job: a.job,
        id: a.id,
        label,
        to,
        to_job_server: None,
        jobs: a.jobs.max(1),
        dry_run: a.dry_run,
        confirmed: a.yes,
        tmp_dir: a.tmp_dir,
        cancel: super::cancel_on_signals(),
        identity: a.identity,
        preserve_modes: a.preserve_modes,
        force_source: a.force_source,
        hooks: !a.no_hooks,
        announce: true,
        origin: restore::journal::Origin::Operator,
        repository: a.repository,
    };
    // A restore killed half-way is finished or rolled back first, and says so.
    let state = drctl::services::state::State::open(&cfg.config.state_dir).await?;
    for note in drctl::engine::restore::journal::recover(cfg, &state).await {
        eprintln!("drctl: {note}");
    }
    let plan = if a.undo {
        restore::undo::plan(cfg, &req, a.copy.as_deref()).await?
    } else {
        restore::plan(cfg, &req).await?
    };
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print_plan(&plan);
            eprintln!("dry run: nothing changed");
        }
        return Ok(());
    }
    if !a.json {
        print_plan(&plan);
    }
    if plan.replaces_existing && !req.confirmed && std::io::stdin().is_terminal() {
        eprint!(
            "replace {} with this backup (the current database is kept as a safety copy)? [y/N] ",
            plan.target
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        req.confirmed = matches!(answer.trim(), "y" | "Y" | "yes");
    }
    let progress = Progress::new();
    let bar = Bar::start(progress.clone());
    let result = if a.undo {
        restore::undo::run(cfg, &req, a.copy.as_deref()).await
    } else {
        restore::run(cfg, &req, progress).await
    };
    bar.finish();
    // The restore's notices (started, finished or failed) go out now.
    super::deliver_now(cfg, &state).await;
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report, a.undo);
    Ok(())
}

/// What the restore (or undo) did, for a person.
fn print_report(report: &restore::Report, undo: bool) {
    if undo {
        eprintln!(
            "swapped {} back into {} in {:.1}s",
            report.backup_id, report.target, report.total_seconds
        );
        if let Some(s) = &report.safety_copy {
            eprintln!("the database it replaced is kept as {s} (undo again to swap it back)");
        }
        return;
    }
    eprintln!(
        "restored {} from {} into {} in {:.1}s (fetch+verify {:.1}s, restore {:.1}s, {} fetched)",
        report.backup_id,
        report.repository,
        report.target,
        report.total_seconds,
        report.fetch_seconds,
        report.restore_seconds,
        super::human_bytes(report.bytes_fetched)
    );
    if let Some(s) = &report.safety_copy {
        eprintln!("the previous database is kept as {s}: `drctl restore --undo` swaps it back; drop it once you are satisfied");
    }
    if !report.roles_created.is_empty() {
        eprintln!("roles created: {}", report.roles_created.join(", "));
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn at_takes_rfc3339_psql_and_plain_utc_times() {
        let want = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:14:00Z").unwrap();
        for s in [
            "2026-12-01T03:14:00Z",
            "2026-12-01T04:14:00+01:00",
            "2026-12-01 03:14:00+00",
            "2026-12-01 04:14:00.000+01",
            "2026-12-01 03:14:00",
        ] {
            assert_eq!(super::parse_at(s).unwrap(), want, "{s}");
        }
        assert!(super::parse_at("yesterday").is_err());
    }
}
