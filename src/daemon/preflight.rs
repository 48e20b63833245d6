//! At daemon start: the version pre-flight of every postgres job, so a
//! host whose client tools are older than its server raises
//! `job_misconfigured:JOB` now, not a failed backup at 2 AM.

use crate::base::error::Error;
use crate::config::{Kind, LoadedConfig};
use crate::services::alerts::{Alerter, Condition, Severity};
use crate::services::state::State;
use std::time::Duration;

/// What one job's pre-flight means for its `job_misconfigured` alert.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The tools cannot serve the server: raise, with why.
    Misconfigured(String),
    /// Checked and fine: resolve an earlier alert.
    Fine,
    /// Not known (the server is down, the URL unset): the job's own runs
    /// will say; nothing to raise or resolve here.
    Unknown,
}

/// Decide from the pre-flight's outcome (pure).
pub(super) fn verdict(outcome: &Result<crate::services::pg::Preflight, Error>) -> Verdict {
    match outcome {
        Ok(_) => Verdict::Fine,
        Err(Error::ToolVersion(why)) => Verdict::Misconfigured(why.clone()),
        Err(_) => Verdict::Unknown,
    }
}

/// Check every postgres job (each bounded by `limit`) and raise or clear
/// its `job_misconfigured` alert.
pub(super) async fn check_jobs(cfg: &LoadedConfig, state: &State, limit: Duration) {
    let alerter = Alerter::new(cfg, state);
    for (name, job) in &cfg.config.jobs {
        let Kind::Postgres(pg) = &job.kind else {
            continue;
        };
        let outcome = match tokio::time::timeout(limit, crate::services::pg::preflight(pg)).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let key = format!("job_misconfigured:{name}");
        let done = match verdict(&outcome) {
            Verdict::Misconfigured(why) => {
                tracing::error!(job = %name, "{why}");
                let mut c = Condition::new(
                    "job_misconfigured",
                    name,
                    Severity::Critical,
                    format!("job {name} cannot back up with this host's client tools"),
                );
                c.job = Some(name.clone());
                c.detail = Some(crate::base::secret::redact(&why));
                c.hint = Some(format!(
                    "Install the client tools the message names (or set pg_bindir), then `drctl config check --connect` and `drctl run {name}`."
                ));
                alerter.raise(c).await
            }
            Verdict::Fine => {
                alerter
                    .clear(&key, format!("job {name}: client tools match the server"))
                    .await
            }
            Verdict::Unknown => Ok(()),
        };
        if let Err(e) = done {
            tracing::error!(job = %name, error = %e, "cannot record the version pre-flight's alert");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_version_mismatch_raises_and_only_a_clean_check_resolves() {
        let fine = Ok(crate::services::pg::Preflight {
            server_major: 16,
            tools: vec![("pg_dump", 16)],
        });
        assert_eq!(verdict(&fine), Verdict::Fine);
        let old = Err(Error::ToolVersion(
            "pg_dump 15 cannot dump PostgreSQL 16".into(),
        ));
        assert_eq!(
            verdict(&old),
            Verdict::Misconfigured("pg_dump 15 cannot dump PostgreSQL 16".into())
        );
        let down = Err(Error::pg("connecting", "connection refused"));
        assert_eq!(verdict(&down), Verdict::Unknown);
    }
}
