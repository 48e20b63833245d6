//! Where notifications go: one file per channel kind behind [`Channel`].
//! A channel is built from config when a delivery is due, so secrets are
//! read fresh (a rotated SMTP password needs no restart) and never stored.

mod email;
mod http;
mod pagerduty;
mod ping;
mod slack;
mod webhook;

pub use webhook::signature;

use super::Notification;
use crate::config::ChannelConfig;

/// Why a send did not succeed.
#[derive(Debug)]
pub enum SendError {
    /// Try again later (connection refused, timeout, 5xx, 429, SMTP 4xx).
    Transient(String),
    /// The receiver rejected this message for good (4xx, SMTP 5xx).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient(m) => write!(f, "{m}"),
            SendError::Permanent(m) => write!(f, "rejected: {m}"),
        }
    }
}

/// A way to reach people. One file per kind; the outbox calls `send` and
/// retries what fails, so an implementation sends once and reports honestly.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Send one notification; on success, what the receiver answered.
    async fn send(&self, n: &Notification) -> Result<String, SendError>;
}

/// Build channel `name` from its config. Errors (a missing secret, an
/// unreadable CA file) name the channel and the key.
pub fn build(name: &str, cfg: &ChannelConfig) -> Result<Box<dyn Channel>, String> {
    let r: Result<Box<dyn Channel>, String> = match cfg {
        ChannelConfig::Email(c) => email::Email::new(c).map(|c| Box::new(c) as _),
        ChannelConfig::Slack(c) => slack::Slack::new(c).map(|c| Box::new(c) as _),
        ChannelConfig::Webhook(c) => webhook::Webhook::new(c).map(|c| Box::new(c) as _),
        ChannelConfig::Ping(c) => ping::Ping::new(c).map(|c| Box::new(c) as _),
        ChannelConfig::PagerDuty(c) => pagerduty::PagerDuty::new(c).map(|c| Box::new(c) as _),
    };
    r.map_err(|e| format!("channel {name} ({}): {e}", cfg.kind()))
}

fn secret(
    source: crate::config::SecretSource<'_>,
) -> Result<Option<crate::base::secret::Secret>, String> {
    source.resolve().map_err(|e| e.to_string())
}
