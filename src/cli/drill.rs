//! `drctl drill run NAME [--id ID] [--keep]`, `drctl drill list`

use super::progress::Bar;
use drctl::base::progress::Progress;
use drctl::config::LoadedConfig;
use drctl::engine::drill::{self, DrillRecord, Options};
use drctl::services::state::State;

#[derive(clap::Subcommand)]
pub enum DrillCommand {
    /// Restore the newest backup (or --id) into a scratch database, verify it, time it
    Run {
        name: String,
        /// This backup instead of the newest
        #[arg(long)]
        id: Option<String>,
        /// Keep the scratch database (after a passing drill) for inspection
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// The DR drill report: drills, RTO against target, RPO compliance, runs, a chart
    Report {
        /// The window
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        #[arg(long, value_enum, default_value_t = Format::Md)]
        format: Format,
        /// Write here instead of stdout
        #[arg(short = 'o', long)]
        output: Option<std::path::PathBuf>,
        /// Add every host publishing into this host's repositories (`drctl fleet`) and their drills
        #[arg(long)]
        fleet: bool,
    },
    /// Configured drills and their recent runs
    List {
        #[arg(short = 'n', default_value_t = 20)]
        n: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Html,
    Md,
    Json,
}

/// A failed drill (exit 1; over-RTO is exit 0 with a warning).
#[derive(Debug, thiserror::Error)]
#[error("drill {0} {1}")]
pub struct DrillFailed(String, String);

pub async fn exec(cfg: &LoadedConfig, cmd: DrillCommand) -> anyhow::Result<()> {
    let state = State::open(&cfg.config.state_dir).await?;
    match cmd {
        DrillCommand::Run {
            name,
            id,
            keep,
            json,
        } => run(cfg, &state, name, id, keep, json).await,
        DrillCommand::Report {
            since,
            format,
            output,
            fleet,
        } => report(cfg, &state, since, format, output, fleet).await,
        DrillCommand::List { n, json } => list(cfg, &state, n, json).await,
    }
}

/// `drctl drill run`: exit 0 when the backup restored and checked (over
/// its RTO included), 9 when the drill failed.
async fn run(
    cfg: &LoadedConfig,
    state: &State,
    name: String,
    id: Option<String>,
    keep: bool,
    json: bool,
) -> anyhow::Result<()> {
    // A malformed --id is the caller's mistake (exit 2), not a
    // failed drill to record and alert.
    if let Some(id) = &id {
        drctl::base::ids::BackupId::parse(id)
            .map_err(|e| drctl::Error::Usage(format!("--id: {e}")))?;
    }
    let progress = Progress::new();
    let bar = Bar::start(progress.clone());
    let rec = drill::run(
        cfg,
        state,
        &name,
        Options {
            id,
            keep,
            trigger: "cli".into(),
            cancel: super::cancel_on_signals(),
            progress,
        },
    )
    .await;
    bar.finish();
    let rec = rec?;
    let _ = drctl::services::alerts::deliver_due(
        cfg,
        state,
        Some(tokio::time::Instant::now() + std::time::Duration::from_secs(20)),
    )
    .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&rec)?);
    } else {
        print(&rec);
    }
    match rec.outcome {
        o if o.restored() => Ok(()),
        drctl::engine::drill::DrillOutcome::Interrupted => {
            Err(drctl::Error::Interrupted(format!("drill {name}")).into())
        }
        other => Err(DrillFailed(
            name,
            format!(
                "{other} in the {} phase: {}",
                rec.failed_phase.as_deref().unwrap_or("?"),
                rec.error.as_deref().unwrap_or("")
            ),
        )
        .into()),
    }
}

async fn report(
    cfg: &LoadedConfig,
    state: &State,
    since: std::time::Duration,
    format: Format,
    output: Option<std::path::PathBuf>,
    fleet: bool,
) -> anyhow::Result<()> {
    let mut r = drctl::engine::report::build(cfg, state, since).await?;
    if fleet {
        let stale = cfg
            .config
            .fleet_stale
            .unwrap_or(std::time::Duration::from_secs(15 * 60));
        r.fleet =
            drctl::engine::fleet::gather(cfg, &drctl::engine::fleet::repositories(cfg), stale)
                .await?;
    }
    let text = match format {
        Format::Html => drctl::engine::report::html(&r),
        Format::Md => drctl::engine::report::markdown(&r),
        Format::Json => drctl::engine::report::json(&r),
    };
    match output {
        Some(p) => {
            std::fs::write(&p, text)
                .map_err(|e| drctl::Error::io(format!("writing {}", p.display()), e))?;
            eprintln!("report written to {} ({})", p.display(), r.headline());
        }
        None => println!("{text}"),
    }
    Ok(())
}

async fn list(cfg: &LoadedConfig, state: &State, n: i64, json: bool) -> anyhow::Result<()> {
    let runs = drill::list(state, None, None, n).await?;
    if json {
        let v = serde_json::json!({
            "drills": cfg.config.drills,
            "runs": runs,
        });
        println!(
            "{}",
            drctl::base::secret::redact(&serde_json::to_string_pretty(&v)?)
        );
        return Ok(());
    }
    let mut t = super::table::new(&["DRILL", "JOB", "SCHEDULE", "RTO", "LAST"]);
    super::table::right(&mut t, &[3]);
    for (name, d) in &cfg.config.drills {
        let last = runs
            .iter()
            .find(|r| &r.drill == name)
            .map_or("never", |r| r.outcome.as_str());
        t.add_row(vec![
            name.clone(),
            d.job.clone(),
            d.schedule
                .as_ref()
                .map_or("-", drctl::base::values::Parsed::text)
                .to_owned(),
            d.rto
                .map_or_else(|| "-".into(), |r| humantime::format_duration(r).to_string()),
            last.to_owned(),
        ]);
    }
    println!("{}", super::table::render(&t));
    if runs.is_empty() {
        return Ok(());
    }
    println!();
    let mut t = super::table::new(&["ID", "DRILL", "STARTED", "OUTCOME", "TOTAL", "BACKUP"]);
    super::table::right(&mut t, &[0, 4]);
    for r in &runs {
        t.add_row(vec![
            r.id.to_string(),
            r.drill.clone(),
            super::when(&r.started_at),
            r.outcome.to_string(),
            r.total_seconds
                .map_or_else(|| "-".into(), |t| format!("{t:.1}s")),
            r.backup_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{}", super::table::render(&t));
    Ok(())
}

fn print(r: &DrillRecord) {
    println!(
        "drill {} ({}): {}",
        r.drill,
        r.job,
        r.outcome.as_str().to_uppercase()
    );
    println!(
        "  backup   {} ({:.0}s old)",
        r.backup_id.as_deref().unwrap_or("-"),
        r.backup_age_seconds.unwrap_or(0.0)
    );
    println!("  target   {}", r.target.as_deref().unwrap_or("-"));
    for p in &r.phases {
        println!("  {:<20} {:>8.2}s", p.name, p.seconds);
    }
    println!(
        "  {:<20} {:>8.2}s{}",
        "total",
        r.total_seconds.unwrap_or(0.0),
        r.rto_seconds
            .map(|t| format!(" (RTO {t:.0}s)"))
            .unwrap_or_default()
    );
    let bad = r.checks.iter().filter(|c| !c.ok).count();
    println!("  checks   {} passed, {} failed", r.checks.len() - bad, bad);
    for c in r.checks.iter().filter(|c| !c.ok) {
        println!(
            "    FAIL {} {}: expected {}, got {}",
            c.kind,
            c.name,
            c.expected,
            c.got.as_deref().unwrap_or("nothing")
        );
    }
    if let Some(e) = &r.error {
        println!("  error    {e}");
    }
    for s in &r.swept {
        println!("  removed leftover {s}");
    }
}
