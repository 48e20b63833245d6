//! `drctl run JOB`

use super::progress::Bar;
use drctl::config::LoadedConfig;
use drctl::progress::Progress;
use drctl::runner::Outcome;
use drctl::state::State;

/// `drctl run` found the job already running (exit code 6).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Skipped(pub String);

#[derive(clap::Args)]
pub struct Args {
    /// The job to run
    job: String,
    /// Print the manifest as JSON instead of a summary
    #[arg(long)]
    json: bool,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let state = State::open(&cfg.config.state_dir).await?;
    let progress = Progress::new();
    let bar = Bar::start(progress.clone());
    let result = drctl::runner::run_job(
        cfg,
        &state,
        &a.job,
        "cli",
        progress,
        super::cancel_on_signals(),
        None,
    )
    .await;
    bar.finish();
    let m = match result? {
        Outcome::Committed(m) => m,
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
