//! Delivering the outbox: per channel, oldest first, each row until it is
//! delivered, rejected for good, or older than `max_age`. A channel that
//! fails stops its queue until the row's next attempt (exponential backoff),
//! so a resolve never overtakes its firing. One process delivers at a time
//! (a flock next to the state), so the daemon and `drctl run` never send a
//! row twice.

use super::channels::{self, SendError};
use super::store::{self, Attempt, DeliveryState};
use crate::base::error::Result;
use crate::config::LoadedConfig;
use crate::services::state::State;
use chrono::Utc;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// What one pass over the outbox did (for `drctl alerts flush` and logs).
#[derive(Debug, Default, Clone, Serialize)]
pub struct DeliveryReport {
    /// Messages a channel accepted.
    pub delivered: usize,
    /// Messages that failed and wait for their next attempt.
    pub retrying: usize,
    /// Messages refused for good or past `max_age`: an alert of their own.
    pub given_up: usize,
    /// Another process holds the delivery lock and delivers instead.
    pub busy: bool,
}

/// The delay before attempt `attempts + 1`.
pub(crate) fn backoff(initial: Duration, max: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 20) as u32;
    initial.saturating_mul(factor).min(max)
}

/// Send every due row; stop starting new sends after `deadline`.
pub async fn deliver_due(
    cfg: &LoadedConfig,
    state: &State,
    deadline: Option<Instant>,
) -> Result<DeliveryReport> {
    let mut report = DeliveryReport::default();
    let _lock = if let Ok(l) =
        crate::services::lock::HostLock::try_acquire(&cfg.config.state_dir, ".alerts-delivery")?
    {
        l
    } else {
        report.busy = true;
        return Ok(report);
    };
    let alerts = &cfg.config.alerts;
    for channel in store::pending_channels(state).await? {
        let mut built: Option<Box<dyn channels::Channel>> = None;
        for row in store::pending_of(state, &channel).await? {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(report);
            }
            let now = Utc::now();
            if row.expires_at <= now {
                tracing::error!(channel = %channel, alert = %row.alert_key, event = %row.event, attempts = row.attempts, last_error = ?row.last_error, "alert not delivered within max_age; giving up");
                let why = format!(
                    "expired after {} attempts; last error: {}",
                    row.attempts,
                    row.last_error.as_deref().unwrap_or("none")
                );
                store::record(state, row.id, &Attempt::GiveUp(DeliveryState::Expired, why)).await?;
                report.given_up += 1;
                continue;
            }
            if row.next_attempt_at.is_some_and(|t| t > now) {
                break;
            }
            let retry_at = |attempts: i64| {
                now + chrono::Duration::from_std(backoff(
                    alerts.retry_initial,
                    alerts.retry_max,
                    attempts,
                ))
                .unwrap_or_else(|_| chrono::Duration::seconds(60))
            };
            let Some(ch_cfg) = alerts.channels.get(&channel) else {
                let why = format!("channel {channel} is no longer in [alerts.channels]");
                tracing::error!(alert = %row.alert_key, "{why}; dropping the delivery");
                store::record(state, row.id, &Attempt::GiveUp(DeliveryState::Failed, why)).await?;
                report.given_up += 1;
                continue;
            };
            if built.is_none() {
                match channels::build(&channel, ch_cfg) {
                    Ok(c) => built = Some(c),
                    Err(why) => {
                        tracing::error!(error = %why, "cannot build the alert channel; will retry");
                        store::record(state, row.id, &Attempt::Retry(why, retry_at(row.attempts)))
                            .await?;
                        report.retrying += 1;
                        break;
                    }
                }
            }
            let Some(ch) = built.as_ref() else { break };
            match ch.send(&row.notification).await {
                Ok(receipt) => {
                    tracing::info!(channel = %channel, alert = %row.alert_key, event = %row.event, "alert delivered");
                    store::record(state, row.id, &Attempt::Delivered(receipt)).await?;
                    report.delivered += 1;
                }
                Err(SendError::Transient(why)) => {
                    let next = retry_at(row.attempts);
                    tracing::warn!(channel = %channel, alert = %row.alert_key, error = %crate::base::secret::redact(&why), next_attempt = %next, "alert delivery failed; will retry");
                    store::record(state, row.id, &Attempt::Retry(why, next)).await?;
                    report.retrying += 1;
                    break;
                }
                Err(SendError::Permanent(why)) => {
                    tracing::error!(channel = %channel, alert = %row.alert_key, error = %crate::base::secret::redact(&why), "alert rejected by the receiver; not retrying");
                    store::record(state, row.id, &Attempt::GiveUp(DeliveryState::Failed, why))
                        .await?;
                    report.given_up += 1;
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(10), s(300), 0), s(10));
        assert_eq!(backoff(s(10), s(300), 1), s(20));
        assert_eq!(backoff(s(10), s(300), 4), s(160));
        assert_eq!(backoff(s(10), s(300), 5), s(300));
        assert_eq!(backoff(s(10), s(300), 400), s(300));
    }
}
