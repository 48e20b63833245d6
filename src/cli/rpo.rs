//! `drctl rpo [--since 30d] [--json]`: evaluates every job with an `rpo`
//! against its repository now (so it is right without the daemon), then
//! sums compliance over the window from the recorded transitions. Exit 8
//! when any job's RPO is violated now, so a cron line or a monitoring
//! check can act on it; `--check` prints only the violations.

use drctl::config::LoadedConfig;
use drctl::services::state::State;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// The window compliance is computed over
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    since: std::time::Duration,
    /// Only this job
    #[arg(long)]
    job: Option<String>,
    #[arg(long)]
    json: bool,
    /// For monitoring: print only violations (nothing when all comply);
    /// the exit code (8 on a violation) is the answer
    #[arg(long)]
    check: bool,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    status: drctl::engine::rpo::Status,
    window: drctl::engine::rpo::Window,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let state = State::open(&cfg.config.state_dir).await?;
    let mut jobs = drctl::engine::rpo::jobs(cfg);
    if let Some(j) = &a.job {
        let (_, jc) = cfg.job(j)?;
        if jc.rpo().is_none() {
            anyhow::bail!(drctl::Error::Config {
                file: cfg.file_of(&format!("jobs.{j}")),
                key: format!("jobs.{j}.rpo"),
                message: "the job has no rpo (expected e.g. rpo = \"1h\")".into(),
            });
        }
        jobs.retain(|(n, _)| n == j);
    }
    if jobs.is_empty() {
        anyhow::bail!("no job sets an rpo (expected e.g. rpo = \"1h\" on a backup job)");
    }
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::from_std(a.since)?;
    let mut rows = Vec::new();
    for (job, _) in jobs {
        let status = drctl::engine::rpo::evaluate(cfg, &state, &job).await?;
        let window = drctl::engine::rpo::window(&state, &job, from, now).await?;
        rows.push(Row { status, window });
    }
    let _ = drctl::services::alerts::deliver_due(
        cfg,
        &state,
        Some(tokio::time::Instant::now() + std::time::Duration::from_secs(20)),
    )
    .await;
    let violated: Vec<&Row> = rows.iter().filter(|r| !r.status.compliant).collect();
    let verdict = || -> anyhow::Result<()> {
        if violated.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = violated.iter().map(|r| r.status.job.clone()).collect();
        Err(super::run::Problem {
            exit: drctl::base::error::Exit::Critical,
            message: format!("RPO violated: {}", names.join(", ")),
        }
        .into())
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return verdict();
    }
    if a.check {
        for r in &violated {
            println!(
                "{}: RPO violated: newest backup {}, target {}",
                r.status.job,
                r.status.age_seconds.map_or_else(
                    || "none".into(),
                    |s| format!(
                        "{} old",
                        humantime::format_duration(std::time::Duration::from_secs(
                            s.max(0.0) as u64
                        ))
                    )
                ),
                humantime::format_duration(std::time::Duration::from_secs(
                    r.status.target_seconds.max(0.0) as u64
                )),
            );
        }
        return verdict();
    }
    let d = |s: f64| {
        humantime::format_duration(std::time::Duration::from_secs(s.max(0.0) as u64)).to_string()
    };
    let mut t = super::table::new(&[
        "JOB",
        "TARGET",
        "AGE",
        "STATUS",
        "COMPLIANCE",
        "WORST GAP",
        "NEWEST",
    ]);
    super::table::right(&mut t, &[1, 2, 4, 5]);
    for r in &rows {
        t.add_row(vec![
            r.status.job.clone(),
            d(r.status.target_seconds),
            r.status.age_seconds.map_or_else(|| "no backup".into(), d),
            if r.status.compliant { "ok" } else { "VIOLATED" }.to_owned(),
            format!("{:.2}%", r.window.compliance * 100.0),
            r.window.worst_gap_seconds.map_or_else(|| "-".into(), d),
            r.status.newest_backup.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{}", super::table::render(&t));
    eprintln!(
        "compliance over the last {} (tracked time only)",
        humantime::format_duration(a.since)
    );
    verdict()
}
