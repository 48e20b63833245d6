//! `drctl verify [--job JOB]... [--repository REPO] [--latest | --all] [--deep] [--json]`

use drctl::config::LoadedConfig;
use drctl::engine::verify::{self, Options, Summary};
use drctl::services::state::State;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("scope").args(["latest", "all"]))]
pub struct Args {
    /// Only this backup job (repeatable) [default: every backup job]
    #[arg(long)]
    job: Vec<String>,
    /// The newest backup of each job (the default)
    #[arg(long)]
    latest: bool,
    /// Every committed backup
    #[arg(long)]
    all: bool,
    /// Also decrypt, decompress and read the archive (pg_restore reads every data block; tar entries checked)
    #[arg(long)]
    deep: bool,
    /// age identity file for --deep on encrypted backups
    #[arg(long, short = 'i')]
    identity: Option<PathBuf>,
    /// Only this repository (the job's own or one of its copies) [default: all of them]
    #[arg(long)]
    repository: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let only = (!a.job.is_empty()).then_some(a.job.as_slice());
    let jobs = verify::backup_jobs(cfg, only)?;
    let opts = Options {
        all: a.all,
        deep: a.deep,
        identity: a.identity,
        repository: a.repository,
    };
    let summary = verify::run(cfg, &jobs, &opts).await?;
    let state = State::open(&cfg.config.state_dir).await?;
    verify::report(cfg, &state, &summary, opts.all).await;
    print(&summary, a.json)?;
    super::deliver_now(cfg, &state).await;
    match summary.error() {
        Some(e) => Err(e.into()),
        // A job named on the command line that has nothing to verify is an
        // answer the caller asked for; without --job it is only reported.
        None if only.is_some() && !summary.without_backups.is_empty() => {
            Err(drctl::Error::NotFound(format!(
                "no committed backup of {} to verify",
                summary.without_backups.join(", ")
            ))
            .into())
        }
        None => Ok(()),
    }
}

/// Text or JSON; shared with `drctl run` of a verify job.
pub fn print(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            drctl::base::secret::redact(&serde_json::to_string_pretty(s)?)
        );
        return Ok(());
    }
    for b in &s.backups {
        println!(
            "{} {}/{} ({}) in {}",
            if b.ok { "ok  " } else { "FAIL" },
            b.job,
            b.backup_id,
            b.finished_at,
            b.repository
        );
        for a in &b.artifacts {
            println!(
                "       {} {:<28} {}",
                if a.ok { "ok  " } else { "FAIL" },
                a.name,
                a.detail
            );
        }
    }
    for w in &s.wal {
        println!(
            "{} {} WAL in {}: {} file(s) from {} to {}{}",
            if w.ok() { "ok  " } else { "FAIL" },
            w.job,
            w.repository,
            w.files,
            w.from.as_deref().unwrap_or("-"),
            w.newest.as_deref().unwrap_or("-"),
            if w.deep { ", each decoded" } else { "" }
        );
        for g in &w.gaps {
            println!("       FAIL missing {g}");
        }
        for d in &w.damaged {
            println!("       FAIL {d}");
        }
        for d in &w.diverged {
            println!("       WARN wal_timelines_diverged: {d}");
        }
    }
    for j in &s.without_backups {
        println!("none {j}: no committed backup yet");
    }
    for (j, e) in &s.unreachable {
        println!("FAIL {j}: cannot verify: {e}");
    }
    let bad = s.failed().count();
    eprintln!(
        "{} backup(s) verified, {} failed, {} read",
        s.backups.len(),
        bad,
        super::human_bytes(s.bytes_read)
    );
    Ok(())
}
