//! Running a maintenance or check kind as a recorded run: the run record,
//! one alert condition per subject that is not ok, and metric samples.

use crate::base::error::{Error, Result};
use crate::config::{JobConfig, LoadedConfig};
use crate::engine::jobs::CheckCtx;
use crate::services::alerts::{Alerter, Condition, Severity};
use crate::services::checks::{alert_kind, Level, Report, Sample};
use crate::services::state::{RunStatus, State};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// Run maintenance or check job `name` as a recorded run; its findings
/// raise or resolve one alert each.
pub async fn run(
    cfg: &LoadedConfig,
    state: &State,
    name: &str,
    trigger: &str,
    job: &JobConfig,
    cancel: CancellationToken,
) -> Result<Report> {
    let host = crate::base::host::name();
    let run = state
        .start_run(name, job.kind(), &host, trigger, Utc::now())
        .await?;
    let ctx = CheckCtx {
        cfg,
        state,
        job: name,
        common: &job.common,
        cancel: cancel.clone(),
    };
    let work = crate::engine::jobs::run_check(&ctx, &job.kind);
    let result = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Interrupted(format!("job {name} cancelled"))),
    };
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            state
                .finish_run(
                    run,
                    RunStatus::ended_by(&e),
                    None,
                    None,
                    Some(&e.to_string()),
                )
                .await?;
            return Err(e);
        }
    };
    let level = report.level();
    report.samples.push(Sample::gauge(
        "drctl_check_result",
        &[("job", name)],
        match level {
            Level::Ok => 0.0,
            Level::Warning => 1.0,
            Level::Critical => 2.0,
        },
    ));
    state
        .set_run_result(run, level.as_str(), &report.json())
        .await?;
    state
        .finish_run(run, RunStatus::Succeeded, report.bytes, None, None)
        .await?;
    if let Err(e) = crate::services::checks::metrics::record(state, name, &report.samples).await {
        tracing::error!(job = name, error = %e, "cannot store the run's metrics");
    }
    if let Err(e) = alert(cfg, state, &report).await {
        tracing::error!(job = name, error = %e, "cannot queue the run's alerts");
    }
    match level {
        Level::Ok => tracing::info!(job = name, "{}", report.summary),
        _ => {
            tracing::warn!(job = name, result = level.as_str(), problems = %report.describe_problems(), "{}", report.summary);
        }
    }
    Ok(report)
}

/// Raise a condition per finding that is not ok; resolve this job's
/// conditions whose subject is ok again or no longer checked.
async fn alert(cfg: &LoadedConfig, state: &State, report: &Report) -> Result<()> {
    let alerter = Alerter::new(cfg, state);
    let kind = alert_kind(report.kind);
    let prefix = format!("{kind}:{}:", report.job);
    let mut raised = std::collections::HashSet::new();
    for f in report.problems() {
        let severity = match f.level {
            Level::Critical => Severity::Critical,
            _ => Severity::Warning,
        };
        let mut c = Condition::new(
            kind,
            &format!("{}:{}", report.job, f.subject),
            severity,
            format!("{}: {}", f.subject, f.message),
        );
        c.job = Some(report.job.clone());
        c.detail = Some(report.summary.clone());
        c.hint = Some(hint(report.kind, &report.job));
        raised.insert(c.key.clone());
        alerter.raise(c).await?;
    }
    for a in crate::services::alerts::active(state).await? {
        if a.key.starts_with(&prefix) && !raised.contains(&a.key) {
            let subject = &a.key[prefix.len()..];
            alerter
                .clear(&a.key, format!("{}: {subject} is ok again", report.job))
                .await?;
        }
    }
    Ok(())
}

fn hint(kind: &str, job: &str) -> String {
    match kind {
        "disk" => format!("Free space or inodes on that mount (old logs: a prune_files job; unused images: prune_images; PostgreSQL WAL: check replication slots and archiving) or grow the volume. `drctl run {job}` checks again."),
        "cert_expiry" => format!("Renew the certificate (e.g. `certbot renew`), install it and reload the service that serves it; `drctl run {job}` checks again. `drctl logs {job}` lists subject, issuer and SANs."),
        "health" => format!("The check failed on consecutive runs past its failure_threshold; `drctl logs {job}` shows each attempt's error. Check the service and its dependencies; the alert resolves after success_threshold passing runs."),
        _ => format!("`drctl logs {job}` lists what the run did per subject and why it stopped."),
    }
}
