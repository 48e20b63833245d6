//! The daemon's side of the fleet view (`engine::fleet`): publish this
//! host's status into each repository its jobs use, and, with
//! `fleet_stale`, raise `host_stale:HOST` for every other host that stopped
//! publishing (cleared when it publishes again). Failures are logged and
//! retried at the next period: the fleet view never stops a backup.

use super::Daemon;
use crate::engine::fleet::{self, HostStatus};
use crate::services::alerts::{Alerter, Condition, Severity};
use crate::services::repository::Repository;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn worker(d: Arc<Daemon>) {
    // What each repository last got, and when.
    let mut last: BTreeMap<String, (HostStatus, DateTime<Utc>)> = BTreeMap::new();
    loop {
        let cfg = d.config();
        let period = cfg.config.fleet_publish;
        if !period.is_zero() {
            for name in fleet::repositories(&cfg) {
                publish(&d, &name, period, &mut last).await;
            }
            if let Some(stale) = cfg.config.fleet_stale {
                watch(&d, stale).await;
            }
        }
        let wait = if period.is_zero() {
            Duration::from_secs(60)
        } else {
            period
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = d.stopping.cancelled() => return,
        }
    }
}

async fn publish(
    d: &Daemon,
    name: &str,
    period: Duration,
    last: &mut BTreeMap<String, (HostStatus, DateTime<Utc>)>,
) {
    let cfg = d.config();
    let now = Utc::now();
    let status = match fleet::build(&cfg, &d.state, name, d.started, now).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(repository = %name, error = %e, "cannot gather this host's fleet status");
            return;
        }
    };
    let prev = last.get(name).map(|(s, at)| (s, *at));
    if !fleet::should_publish(prev, &status, now, period, fleet::heartbeat(period)) {
        return;
    }
    // Another daemon publishing under this host name (a cloned machine, a
    // copied config) would be overwritten every period, and each would
    // hide the other's failures: refuse, and say so loudly.
    let stale_after = cfg
        .config
        .fleet_stale
        .unwrap_or_else(|| 3 * fleet::heartbeat(period));
    let written = async {
        let repo = Repository::open(name, cfg.repository(name)?).await?;
        let theirs = fleet::read_one(&repo, &status.host).await?;
        if let Some(why) = fleet::conflict(
            &status,
            theirs.as_ref().map(|(s, at)| (s, *at)),
            Utc::now(),
            stale_after,
        ) {
            return Ok(Some(why));
        }
        fleet::publish(&repo, &status).await.map(|()| None)
    };
    let alerter = Alerter::new(&cfg, &d.state);
    let key = format!("host_name_conflict:{}", status.host);
    match written.await {
        Ok(None) => {
            last.insert(name.to_owned(), (status, now));
            if let Err(e) = alerter
                .clear(
                    &key,
                    "this daemon alone publishes under its host name again".into(),
                )
                .await
            {
                tracing::warn!(error = %e, "cannot record the host_name_conflict alert");
            }
        }
        Ok(Some(why)) => {
            tracing::error!(repository = %name, "{why}");
            let mut c = Condition::new(
                "host_name_conflict",
                &status.host,
                Severity::Critical,
                format!(
                    "two drctl daemons publish as host {} in repository {name}",
                    status.host
                ),
            );
            c.detail = Some(why);
            c.hint = Some(format!(
                "This daemon does not overwrite the other's status, so `drctl fleet` and host_stale stay truthful. Give one of the machines its own host name (hostnamectl set-hostname), or stop the daemon that should not run; a machine reinstalled on purpose takes over once the old status is older than {}s.",
                stale_after.as_secs()
            ));
            if let Err(e) = alerter.raise(c).await {
                tracing::warn!(error = %e, "cannot record the host_name_conflict alert");
            }
        }
        Err(e) => {
            tracing::warn!(repository = %name, error = %e, "cannot publish this host's fleet status");
        }
    }
}

/// Raise or clear `host_stale:HOST` for every other host in the
/// repositories.
async fn watch(d: &Daemon, stale_after: Duration) {
    let cfg = d.config();
    let hosts = match fleet::gather(&cfg, &fleet::repositories(&cfg), stale_after).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the fleet's status");
            return;
        }
    };
    let me = crate::base::host::name();
    let alerter = Alerter::new(&cfg, &d.state);
    for h in hosts.iter().filter(|h| h.host != me) {
        let key = format!("host_stale:{}", h.host);
        let r = if h.stale {
            let mut c = Condition::new(
                "host_stale",
                &h.host,
                Severity::Critical,
                format!("host {} stopped publishing its status", h.host),
            );
            c.detail = Some(format!(
                "last seen {} ({} ago) in repository {}, running drctl {}",
                h.seen_at.format("%Y-%m-%d %H:%M:%S UTC"),
                humantime::format_duration(Duration::from_secs(h.age_seconds.unsigned_abs())),
                h.repository,
                h.status.version
            ));
            c.hint = Some(format!(
                "Is drctl's daemon running on {0}? `systemctl status drctl` there. A host retired on purpose: remove {1} from the repository.",
                h.host,
                fleet::key(&h.host)
            ));
            alerter.raise(c).await
        } else {
            alerter
                .clear(&key, format!("host {} publishes its status again", h.host))
                .await
        };
        if let Err(e) = r {
            tracing::error!(host = %h.host, error = %e, "cannot record the host_stale alert");
        }
    }
}
