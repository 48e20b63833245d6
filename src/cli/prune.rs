//! `drctl prune [--job JOB]... [--repository REPO] [--dry-run] [--orphan-age 1d] [--json]`

use drctl::config::LoadedConfig;
use drctl::engine::prune::{self, Options};

#[derive(clap::Args)]
pub struct Args {
    /// Only this job (repeatable) [default: every backup job]
    #[arg(long)]
    job: Vec<String>,
    /// Only this repository (a job's own or one of its copies) [default: each with its own retention]
    #[arg(long)]
    repository: Option<String>,
    /// Show what would be deleted; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Data without a manifest older than this is an orphan and removed
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    orphan_age: std::time::Duration,
    #[arg(long)]
    json: bool,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let only = (!a.job.is_empty()).then_some(a.job.as_slice());
    let jobs = drctl::engine::verify::backup_jobs(cfg, only)?;
    let state = drctl::services::state::State::open(&cfg.config.state_dir).await?;
    let mut reports = Vec::new();
    // One broken repository stops pruning for its jobs only.
    let mut failed: Vec<(String, drctl::Error)> = Vec::new();
    let mut targets = Vec::new();
    for j in &jobs {
        for repo in cfg.job(j)?.1.repositories() {
            if a.repository.as_deref().is_none_or(|r| r == repo) {
                targets.push((j, repo));
            }
        }
    }
    if let (Some(r), true) = (&a.repository, targets.is_empty()) {
        return Err(drctl::Error::Usage(format!(
            "--repository {r}: none of the jobs ({}) stores backups there",
            jobs.join(", ")
        ))
        .into());
    }
    for (j, repo) in &targets {
        let report = async {
            let opts = Options {
                dry_run: a.dry_run,
                orphan_age: a.orphan_age,
                verdicts: state.verdicts(repo, j).await?,
                just_made: None,
            };
            prune::job_in(cfg, j, repo, &opts).await
        };
        match report.await {
            Ok(r) => reports.push(r),
            Err(e) if targets.len() == 1 => return Err(e.into()),
            Err(e) => failed.push((format!("{j} (in {repo})"), e)),
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print_report(cfg, r);
        }
    }
    for (j, e) in &failed {
        eprintln!(
            "drctl: error: {j}: not pruned: {}",
            drctl::base::secret::redact(&e.to_string())
        );
    }
    // The first job that could not be pruned decides the exit code (a
    // refusal stays 4, an unreadable newest manifest 3).
    if let Some((_, e)) = failed.into_iter().next() {
        return Err(e.into());
    }
    let errors: usize = reports.iter().map(|r| r.errors.len()).sum();
    if errors > 0 {
        anyhow::bail!("prune finished with {errors} error(s); see above");
    }
    Ok(())
}

/// One job's prune, for a person.
fn print_report(cfg: &LoadedConfig, r: &drctl::engine::prune::Report) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    // The job's own repository keeps the short form scripts know.
    let own = cfg.job(&r.job).ok().and_then(|(_, j)| j.repository()) == Some(&r.repository);
    let what = if own {
        r.job.clone()
    } else {
        format!("{} in {}", r.job, r.repository)
    };
    println!(
        "{what}: kept {}, {verb} {} ({}), skipped {}, orphans {}, uploads aborted {}",
        r.kept.len(),
        r.deleted.len(),
        super::human_bytes(r.bytes_freed),
        r.skipped.len(),
        r.orphans.len(),
        r.uploads_aborted.len()
    );
    for id in &r.deleted {
        println!("  {verb} {id}");
    }
    for s in &r.skipped {
        println!("  kept {} ({})", s.id, s.why);
    }
    for o in &r.orphans {
        println!("  orphan {o}");
    }
    if let Some(w) = &r.wal {
        println!(
            "  WAL: {} file(s) before {} {}",
            w.files,
            w.keep_from.as_deref().unwrap_or("-"),
            if r.dry_run {
                "would be deleted"
            } else {
                "deleted"
            }
        );
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    for e in &r.errors {
        println!("  ERROR {e}");
    }
}
