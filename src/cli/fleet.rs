//! `drctl fleet [--repository NAME] [--stale 15m] [--json]`: every host
//! that publishes its status into the repositories (`_hosts/<host>.json`),
//! newest per host, with how long ago the store last saw it. Exit 8 when a
//! host is stale or reports an RPO violation, 7 when a host reports a
//! failing job or drill: usable from cron or a monitoring check on a host
//! that has no Prometheus.

use drctl::base::error::Exit;
use drctl::config::LoadedConfig;
use drctl::engine::fleet::HostView;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Only this repository [default: every repository this host's jobs use]
    #[arg(long)]
    repository: Option<String>,
    /// A host not seen for longer is stale [default: `fleet_stale`, else 15m]
    #[arg(long, value_parser = humantime::parse_duration)]
    stale: Option<Duration>,
    #[arg(long)]
    json: bool,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let repos = match &a.repository {
        Some(r) => {
            cfg.repository(r)?;
            vec![r.clone()]
        }
        None => drctl::engine::fleet::repositories(cfg),
    };
    if repos.is_empty() {
        anyhow::bail!("no repository is configured (expected a [repositories.NAME] table)");
    }
    let stale = a
        .stale
        .or(cfg.config.fleet_stale)
        .unwrap_or(Duration::from_secs(15 * 60));
    let hosts = drctl::engine::fleet::gather(cfg, &repos, stale).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hosts)?);
    } else {
        print_table(&hosts);
        if hosts.is_empty() {
            eprintln!(
                "no host has published its status into {} yet (a daemon publishes within `fleet_publish`, 1 min)",
                repos.join(", ")
            );
        }
    }
    verdict(&hosts)
}

fn print_table(hosts: &[HostView]) {
    let mut t = super::table::new(&[
        "HOST", "STATE", "SEEN", "VERSION", "JOBS", "FAILING", "RPO", "DRILLS", "ALERTS",
    ]);
    for h in hosts {
        let s = &h.status;
        let failing: Vec<&str> = s
            .jobs
            .iter()
            .filter(|j| j.last_outcome.as_deref() == Some("failed"))
            .map(|j| j.job.as_str())
            .collect();
        let with_rpo = s.jobs.iter().filter(|j| j.rpo.is_some()).count();
        let violated = s
            .jobs
            .iter()
            .filter(|j| j.rpo.as_ref().is_some_and(|r| !r.compliant))
            .count();
        let drills_ok = s
            .drills
            .iter()
            .filter(|d| matches!(d.last_outcome.as_deref(), Some("passed" | "over_rto")))
            .count();
        let firing: i64 = s.alerts_firing.values().sum();
        t.add_row(vec![
            h.host.clone(),
            h.state.to_uppercase(),
            format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(h.age_seconds.unsigned_abs()))
            ),
            s.version.clone(),
            s.jobs.len().to_string(),
            if failing.is_empty() {
                "-".into()
            } else {
                failing.join(",")
            },
            if with_rpo == 0 {
                "-".into()
            } else {
                format!("{}/{with_rpo} ok", with_rpo - violated)
            },
            if s.drills.is_empty() {
                "-".into()
            } else {
                format!("{drills_ok}/{} passed", s.drills.len())
            },
            firing.to_string(),
        ]);
    }
    println!("{}", super::table::render(&t));
}

/// 8 for a stale host or an RPO violation, 7 for a failing job or drill.
fn verdict(hosts: &[HostView]) -> anyhow::Result<()> {
    let named = |state: &str| -> Vec<&str> {
        hosts
            .iter()
            .filter(|h| h.state == state)
            .map(|h| h.host.as_str())
            .collect()
    };
    let (stale, violated, failing) = (named("stale"), named("rpo_violated"), named("failing"));
    let mut what = Vec::new();
    if !stale.is_empty() {
        what.push(format!("stale: {}", stale.join(", ")));
    }
    if !violated.is_empty() {
        what.push(format!("RPO violated: {}", violated.join(", ")));
    }
    if !failing.is_empty() {
        what.push(format!("failing: {}", failing.join(", ")));
    }
    if what.is_empty() {
        return Ok(());
    }
    let exit = if stale.is_empty() && violated.is_empty() {
        Exit::Warning
    } else {
        Exit::Critical
    };
    Err(super::run::Problem {
        exit,
        message: what.join("; "),
    }
    .into())
}
