//! `drctl status` and `drctl logs JOB`: read local state, so they answer
//! whether or not the daemon runs.

use drctl::config::LoadedConfig;
use drctl::services::state::{RunRecord, State};

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    job: String,
    /// How many runs
    #[arg(short = 'n', default_value_t = 20)]
    n: i64,
    #[arg(long)]
    json: bool,
}

fn duration(r: &RunRecord) -> String {
    drctl::engine::status::run_seconds(r).map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
}

pub async fn status(cfg: &LoadedConfig, a: StatusArgs) -> anyhow::Result<()> {
    let state = State::open(&cfg.config.state_dir).await?;
    // A restore killed half-way explains itself here (and is finished or
    // rolled back) before anything else is shown.
    for note in drctl::engine::restore::journal::recover(cfg, &state).await {
        eprintln!("drctl: {note}");
    }
    for note in drctl::engine::drill::sweep_stale(cfg).await {
        eprintln!("drctl: {note}");
    }
    let mut rows = drctl::engine::status::jobs(cfg, &state, chrono::Utc::now()).await?;
    for r in &mut rows {
        if let Ok((
            _,
            drctl::config::JobConfig {
                kind: drctl::config::Kind::Postgres(pg),
                ..
            },
        )) = cfg.job(&r.job)
        {
            match drctl::engine::status::safety_copies(pg).await {
                Ok(c) => r.safety_copies = Some(c),
                Err(e) => r.safety_copies_error = Some(e.to_string()),
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<9} {:<16} {:<26} {:<12} {:>8} {:<26}",
        "JOB", "KIND", "SCHEDULE", "LAST RUN", "OUTCOME", "DURATION", "NEXT RUN"
    );
    for r in rows {
        let (last, outcome, dur) = match &r.last_run {
            // A check's verdict says more than "succeeded".
            Some(run) => (
                super::when(&run.started_at),
                match (&run.result, run.status) {
                    (Some(v), drctl::services::state::RunStatus::Succeeded) => v.clone(),
                    _ => run.status.to_string(),
                },
                duration(run),
            ),
            None => ("never".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<14} {:<9} {:<16} {:<26} {:<12} {:>8} {:<26}",
            r.job,
            r.kind,
            r.schedule.as_deref().unwrap_or("-"),
            last,
            outcome,
            dur,
            r.next_run.as_deref().unwrap_or("-")
        );
        for p in problems(r.last_run.as_ref()) {
            println!("    {p}");
        }
        if let Some(rr) = &r.last_restore {
            println!("    last {}", describe_restore(rr));
        }
        for c in r.safety_copies.iter().flatten() {
            println!(
                "    safety copy {} (made {}, {}, {})",
                c.database,
                c.made_at,
                super::human_bytes(u64::try_from(c.bytes).unwrap_or(0)),
                c.expires_at.as_ref().map_or_else(
                    || "kept until dropped by hand, or `drctl restore --undo`".into(),
                    |t| format!("dropped by the first restore after {t}")
                )
            );
        }
        if let Some(e) = &r.safety_copies_error {
            println!("    safety copies: cannot list them: {e}");
        }
    }
    Ok(())
}

/// "restore 2026-12-02T01:00:00Z done in 12.3s (operator, backup B; fetch 2.0s, ...; health passed)".
fn describe_restore(r: &drctl::engine::restore::journal::RestoreRecord) -> String {
    let mut s = format!(
        "{} {} {}",
        match r.action {
            drctl::engine::restore::journal::Action::Restore => "restore",
            drctl::engine::restore::journal::Action::Undo => "undo",
        },
        super::when(&r.started_at),
        r.outcome
    );
    if let Some(t) = r.total_seconds {
        s.push_str(&format!(" in {t:.1}s"));
    }
    s.push_str(&format!(" into {}", r.target));
    s.push_str(&format!(
        " ({}, {} {}",
        r.origin,
        if r.action == drctl::engine::restore::journal::Action::Undo {
            "copy"
        } else {
            "backup"
        },
        r.backup_id
    ));
    let phases = r.describe_phases();
    if !phases.is_empty() {
        s.push_str(&format!("; {phases}"));
    }
    if let Some(h) = &r.health {
        s.push_str(&format!("; health {h}"));
    }
    s.push(')');
    if let Some(n) = r.note.as_deref().filter(|n| !n.is_empty()) {
        s.push_str(&format!(": {n}"));
    }
    s
}

pub async fn logs(cfg: &LoadedConfig, a: LogsArgs) -> anyhow::Result<()> {
    cfg.job(&a.job)?;
    let state = State::open(&cfg.config.state_dir).await?;
    let runs = state.runs(Some(&a.job), a.n).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    let restores = drctl::engine::restore::journal::recent(&state, Some(&a.job), None, a.n).await?;
    if runs.is_empty() {
        println!("no runs of {} recorded on this host", a.job);
    }
    for r in runs.iter().rev() {
        println!(
            "{} {:<11} {:>8} {:<9} {}",
            super::when(&r.started_at),
            r.status,
            duration(r),
            r.trigger,
            r.backup_id.as_deref().unwrap_or("")
        );
        for text in [&r.error, &r.output].into_iter().flatten() {
            for line in text.lines() {
                println!("    {line}");
            }
        }
    }
    // Restores are not runs of the job, but an incident's log needs them.
    if !restores.is_empty() {
        println!("restores (newest last):");
    }
    for r in restores.iter().rev() {
        println!("  {}", describe_restore(r));
    }
    Ok(())
}

/// "critical: /: 93% used ..." for each finding of a check run that is not ok.
fn problems(run: Option<&RunRecord>) -> Vec<String> {
    let Some(findings) = run
        .and_then(|r| r.details.as_ref())
        .and_then(|d| d.get("findings"))
        .and_then(|f| f.as_array())
    else {
        return Vec::new();
    };
    findings
        .iter()
        .filter(|f| f["level"] != "ok")
        .map(|f| {
            format!(
                "{}: {}: {}",
                f["level"].as_str().unwrap_or("?"),
                f["subject"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}
