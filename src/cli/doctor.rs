//! `drctl doctor [--send-test] [--json]`: every finding of
//! `engine::doctor`, one line each with its fix. Exit 0 when all are ok,
//! 7 with a warning, 8 with a failure, so monitoring can run it.

use drctl::config::LoadedConfig;
use drctl::engine::doctor::Level;

#[derive(clap::Args)]
pub struct Args {
    /// Also send a test message through every alert channel
    #[arg(long)]
    send_test: bool,
    #[arg(long)]
    json: bool,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let findings = drctl::engine::doctor::run(cfg).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for f in &findings {
            let level = match f.level {
                Level::Ok => "ok",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{level:<5} {:<12} {:<20} {}", f.check, f.subject, f.detail);
            if let Some(fix) = &f.fix {
                println!("{:<39}fix: {fix}", "");
            }
        }
    }
    if a.send_test {
        super::alerts::test(cfg, None, a.json).await?;
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    let exit = match worst {
        Level::Ok => return Ok(()),
        Level::Warn => drctl::base::error::Exit::Warning,
        Level::Fail => drctl::base::error::Exit::Critical,
    };
    let n = findings.iter().filter(|f| f.level == worst).count();
    Err(super::run::Problem {
        exit,
        message: format!(
            "doctor: {n} {}",
            if worst == Level::Fail {
                "failure(s)"
            } else {
                "warning(s)"
            }
        ),
    }
    .into())
}
