//! Dead-man's-switch pings in the healthchecks.io style: `URL/start` when a
//! run starts, `URL` on success, `URL/fail` (with the error as body) on failure.
//! The service alerts when pings stop, which covers a host that died.

use super::{http, Channel, SendError};
use crate::base::secret::Secret;
use crate::config::PingChannel;
use crate::services::alerts::{Event, Notification};

pub(super) struct Ping {
    url: Secret,
    client: reqwest::Client,
}

impl Ping {
    pub fn new(c: &PingChannel) -> Result<Self, String> {
        let url = super::secret(c.url_source())?.ok_or("no url configured")?;
        Ok(Ping {
            url,
            client: http::client(c.timeout)?,
        })
    }
}

#[async_trait::async_trait]
impl Channel for Ping {
    async fn send(&self, n: &Notification) -> Result<String, SendError> {
        let job = n.job.as_deref().unwrap_or("drctl");
        let base = self.url.expose().replace("{job}", job);
        let base = base.trim_end_matches('/');
        let (url, body) = match n.event {
            Event::PingStart => (format!("{base}/start"), String::new()),
            Event::PingFail => (format!("{base}/fail"), n.detail.clone().unwrap_or_default()),
            Event::PingSuccess => (base.to_owned(), String::new()),
            other => {
                return Err(SendError::Permanent(format!(
                    "a ping channel sends run pings, not {} notifications",
                    other.as_str()
                )))
            }
        };
        // The URL may embed the check's key: it is registered as a secret.
        crate::base::secret::register(&url);
        http::send(self.client.post(url).body(body)).await
    }
}
