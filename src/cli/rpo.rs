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
    #[serde(skip)]
    own: bool,
}

impl Row {
    /// `appdb`, or `appdb in offsite` for a copy repository.
    fn name(&self) -> String {
        if self.own {
            self.status.job.clone()
        } else {
            format!("{} in {}", self.status.job, self.status.repository)
        }
    }
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let state = State::open(&cfg.config.state_dir).await?;
    let mut targets = drctl::engine::rpo::targets(cfg);
    if let Some(j) = &a.job {
        cfg.job(j)?;
        targets.retain(|t| &t.job == j);
        if targets.is_empty() {
            anyhow::bail!(drctl::Error::Config {
                file: cfg.file_of(&format!("jobs.{j}")),
                key: format!("jobs.{j}.rpo"),
                message: "the job has no rpo (expected e.g. rpo = \"1h\")".into(),
            });
        }
    }
    if targets.is_empty() {
        anyhow::bail!("no job sets an rpo (expected e.g. rpo = \"1h\" on a backup job)");
    }
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::from_std(a.since)?;
    let mut rows = Vec::new();
    let copies = targets.iter().any(|t| !t.own);
    for t in &targets {
        let status = drctl::engine::rpo::evaluate_in(cfg, &state, &t.job, &t.repository).await?;
        let window = drctl::engine::rpo::window(&state, &t.key(), from, now).await?;
        rows.push(Row {
            status,
            window,
            own: t.own,
        });
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
        let names: Vec<String> = violated.iter().map(|r| r.name()).collect();
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
                r.name(),
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
    print_table(&rows, copies);
    eprintln!(
        "compliance over the last {} (tracked time only)",
        humantime::format_duration(a.since)
    );
    verdict()
}

/// The human table: one row per job and repository.
fn print_table(rows: &[Row], copies: bool) {
    let d = |s: f64| {
        humantime::format_duration(std::time::Duration::from_secs(s.max(0.0) as u64)).to_string()
    };
    // A REPOSITORY column once a job has copies (each is measured alone).
    let mut head = vec!["JOB"];
    if copies {
        head.push("REPOSITORY");
    }
    head.extend([
        "TARGET",
        "AGE",
        "STATUS",
        "COMPLIANCE",
        "WORST GAP",
        "NEWEST",
    ]);
    let mut t = super::table::new(&head);
    let shift = usize::from(copies);
    super::table::right(&mut t, &[1 + shift, 2 + shift, 4 + shift, 5 + shift]);
    for r in rows {
        let mut cells = vec![r.status.job.clone()];
        if copies {
            cells.push(r.status.repository.clone());
        }
        cells.extend([
            d(r.status.target_seconds),
            r.status.age_seconds.map_or_else(|| "no backup".into(), d),
            if r.status.compliant { "ok" } else { "VIOLATED" }.to_owned(),
            format!("{:.2}%", r.window.compliance * 100.0),
            r.window.worst_gap_seconds.map_or_else(|| "-".into(), d),
            r.status.newest_backup.clone().unwrap_or_else(|| "-".into()),
        ]);
        t.add_row(cells);
    }
    println!("{}", super::table::render(&t));
}
