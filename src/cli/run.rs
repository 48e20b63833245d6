//! `drctl run JOB`

use super::progress::Bar;
use drctl::config::LoadedConfig;
use drctl::progress::Progress;
use drctl::state::State;

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
    let result = drctl::backup::run(
        cfg,
        &state,
        &a.job,
        "cli",
        progress,
        super::cancel_on_signals(),
    )
    .await;
    bar.finish();
    let m = result?;
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
