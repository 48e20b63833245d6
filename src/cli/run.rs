//! `drctl run JOB`

use super::progress::Bar;
use drctl::base::progress::Progress;
use drctl::config::LoadedConfig;
use drctl::engine::runner::Outcome;
use drctl::services::state::State;

/// `drctl run` found the job already running (exit code 6).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Skipped(pub String);

/// A check job's verdict was warning (exit 7) or critical (exit 8).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    pub exit: drctl::base::error::Exit,
    pub message: String,
}

#[derive(clap::Args)]
pub struct Args {
    /// The job to run
    job: String,
    /// Print the manifest as JSON instead of a summary
    #[arg(long)]
    json: bool,
    /// Label the backup (e.g. pre-migration), to restore it with `restore --label`
    #[arg(long)]
    label: Option<String>,
    /// Pin the backup: retention keeps it this long (e.g. 30d), outside its slots
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_for: Option<std::time::Duration>,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let (_, job) = cfg.job(&a.job)?;
    if (a.label.is_some() || a.keep_for.is_some()) && !job.is_backup() {
        return Err(drctl::Error::Usage(format!(
            "--label and --keep-for mark backups; {} is a {} job",
            a.job,
            job.kind()
        ))
        .into());
    }
    let label = super::label_arg(a.label.as_deref())?;
    let mark = drctl::base::manifest::Mark::new(label, a.keep_for)?;
    let state = State::open(&cfg.config.state_dir).await?;
    let progress = Progress::new();
    let bar = Bar::start(progress.clone());
    // One attempt: retries are the scheduler's (a failed `drctl run` says
    // so at once, in its exit status).
    let once = drctl::engine::runner::Attempts {
        retries: 0,
        retry_delay: std::time::Duration::ZERO,
        stopping: tokio_util::sync::CancellationToken::new(),
        mark,
    };
    let result = drctl::engine::runner::run_alerted(
        cfg,
        &state,
        &a.job,
        "cli",
        progress,
        &super::cancel_on_signals(),
        None,
        &once,
        &drctl::engine::runner::NoKeeper,
    )
    .await;
    bar.finish();
    super::deliver_now(cfg, &state).await;
    let m = match result? {
        Outcome::Committed(m) => m,
        Outcome::Checked(s) => return super::verify::print(&s, a.json),
        Outcome::Report(r) => return print_report(&r, a.json),
        Outcome::Skipped(reason) => return Err(Skipped(reason).into()),
    };
    if a.json {
        println!("{}", String::from_utf8_lossy(&m.to_json()).trim_end());
    } else {
        let secs = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
        eprintln!(
            "backup of {} committed: {} stored ({} raw) in {:.1}s",
            m.job,
            super::human_bytes(m.stored_bytes()),
            super::human_bytes(m.raw_bytes()),
            secs
        );
        println!("{}", m.id);
    }
    Ok(())
}

/// Print a maintenance or check run; warning and critical verdicts become
/// exit 7 and 8 with what is wrong in the message.
fn print_report(r: &drctl::services::checks::Report, json: bool) -> anyhow::Result<()> {
    use drctl::services::checks::Level;
    if json {
        println!("{}", serde_json::to_string_pretty(&r.json())?);
    } else {
        for f in &r.findings {
            println!("{:<8} {}: {}", f.level.as_str(), f.subject, f.message);
        }
        eprintln!("{} ({}): {}", r.job, r.kind, r.summary);
    }
    let exit = match r.level() {
        Level::Ok => return Ok(()),
        Level::Warning => drctl::base::error::Exit::Warning,
        Level::Critical => drctl::base::error::Exit::Critical,
    };
    Err(Problem {
        exit,
        message: format!("job {}: {}", r.job, r.describe_problems()),
    }
    .into())
}
