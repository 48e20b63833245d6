//! `drctl alerts`: firing conditions and the outbox; `alerts test` sends a
//! test message through each channel; `alerts deliver` flushes the outbox now.

use drctl::config::{ChannelConfig, LoadedConfig};
use drctl::services::alerts::{self, channels, Event, Notification, Severity};
use drctl::services::state::State;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<AlertsCommand>,
    /// Print JSON
    #[arg(long, global = true)]
    json: bool,
    /// How many outbox rows to list
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: i64,
}

#[derive(clap::Subcommand)]
enum AlertsCommand {
    /// Send a test message through each channel (or one) and print the answer
    Test {
        /// Only this channel
        #[arg(long)]
        channel: Option<String>,
    },
    /// Deliver due outbox rows now (the daemon does this every 5 s)
    Deliver,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    match a.command {
        Some(AlertsCommand::Test { channel }) => test(cfg, channel, a.json).await,
        Some(AlertsCommand::Deliver) => {
            let state = State::open(&cfg.config.state_dir).await?;
            let r = alerts::deliver_due(cfg, &state, None).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.busy {
                println!("another process (the daemon) is delivering; nothing done");
            } else {
                println!(
                    "delivered {}, waiting to retry {}, given up {}",
                    r.delivered, r.retrying, r.given_up
                );
            }
            Ok(())
        }
        None => list(cfg, a.json, a.limit).await,
    }
}

async fn list(cfg: &LoadedConfig, json: bool, limit: i64) -> anyhow::Result<()> {
    let state = State::open(&cfg.config.state_dir).await?;
    let active = alerts::active(&state).await?;
    let outbox = alerts::outbox(&state, limit).await?;
    if json {
        let v = serde_json::json!({ "alerts": active, "outbox": outbox });
        println!(
            "{}",
            drctl::base::secret::redact(&serde_json::to_string_pretty(&v)?)
        );
        return Ok(());
    }
    let t = |d: &chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%d %H:%M:%S").to_string();
    if active.is_empty() {
        println!("No firing alerts.");
    } else {
        let mut tb =
            super::table::new(&["STATE", "SEVERITY", "KEY", "SINCE (UTC)", "SENT", "SUMMARY"]);
        super::table::right(&mut tb, &[4]);
        for a in &active {
            tb.add_row(vec![
                a.state.to_string(),
                a.severity.as_str().to_owned(),
                a.key.clone(),
                t(&a.started_at),
                a.notifications.to_string(),
                a.summary.clone(),
            ]);
        }
        println!("{}", super::table::render(&tb));
    }
    println!();
    if outbox.is_empty() {
        println!("Outbox is empty.");
        return Ok(());
    }
    let mut tb = super::table::new(&[
        "ID",
        "CHANNEL",
        "EVENT",
        "KEY",
        "STATE",
        "ATTEMPTS",
        "NEXT/DONE (UTC)",
        "LAST ERROR",
    ]);
    super::table::right(&mut tb, &[0, 5]);
    for d in &outbox {
        let when = d
            .delivered_at
            .or(d.next_attempt_at)
            .map_or_else(|| "-".into(), |x| t(&x));
        tb.add_row(vec![
            d.id.to_string(),
            d.channel.clone(),
            d.event.clone(),
            d.alert_key.clone(),
            d.state.to_string(),
            d.attempts.to_string(),
            when,
            drctl::base::secret::redact(d.last_error.as_deref().unwrap_or("")),
        ]);
    }
    println!("{}", super::table::render(&tb));
    Ok(())
}

pub async fn test(cfg: &LoadedConfig, only: Option<String>, json: bool) -> anyhow::Result<()> {
    let all = &cfg.config.alerts.channels;
    if let Some(name) = &only {
        if !all.contains_key(name) {
            return Err(drctl::Error::Config {
                file: cfg.file_of("alerts"),
                key: format!("alerts.channels.{name}"),
                message: format!(
                    "no such channel (expected one of: {})",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
            .into());
        }
    }
    let host = drctl::base::host::name();
    let mut results = Vec::new();
    for (name, ch) in all {
        if only.as_ref().is_some_and(|o| o != name) {
            continue;
        }
        if let ChannelConfig::Ping(_) = ch {
            // A test ping would mark the job's check as run; say so instead
            // (skipped, not failed: nothing is wrong with the channel).
            let why =
                "not tested: a test ping would tell the monitor a job ran (run a job to ping)";
            if !json {
                println!("{name:<12} {:<8} skipped: {why}", ch.kind());
            }
            results.push(serde_json::json!({
                "channel": name,
                "type": ch.kind(),
                "delivered": false,
                "skipped": true,
                "answer": null,
                "error": null,
                "note": why,
            }));
            continue;
        }
        let outcome = {
            let n = Notification {
                id: uuid::Uuid::new_v4().to_string(),
                event: Event::Test,
                key: format!("test:{name}"),
                kind: "test".into(),
                severity: Severity::Info,
                host: host.clone(),
                job: None,
                summary: format!("test message through channel {name}"),
                detail: Some(format!(
                    "Sent by `drctl alerts test` on {host}. If you read this, channel {name} ({}) works.",
                    ch.kind()
                )),
                hint: None,
                since: None,
                at: chrono::Utc::now(),
                count: 1,
                html: None,
            };
            match channels::build(name, ch) {
                Ok(c) => c.send(&n).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        };
        let outcome = outcome.map_err(|e| drctl::base::secret::redact(&e));
        if !json {
            match &outcome {
                Ok(r) => println!("{name:<12} {:<8} delivered: {r}", ch.kind()),
                Err(e) => println!("{name:<12} {:<8} FAILED: {e}", ch.kind()),
            }
        }
        results.push(serde_json::json!({
            "channel": name,
            "type": ch.kind(),
            "delivered": outcome.is_ok(),
            "skipped": false,
            "answer": outcome.as_ref().ok(),
            "error": outcome.as_ref().err(),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    if results.is_empty() {
        anyhow::bail!("no alert channels are configured (expected [alerts.channels.NAME])");
    }
    let failed = results
        .iter()
        .filter(|r| r["delivered"] == false && r["skipped"] == false)
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} channel(s) failed", results.len());
    }
    Ok(())
}
