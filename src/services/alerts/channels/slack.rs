//! Slack incoming webhooks: a readable message (severity, host, job, what
//! happened, the error, what to do next).

use super::{http, Channel, SendError};
use crate::base::secret::Secret;
use crate::config::SlackChannel;
use crate::services::alerts::Notification;

pub(super) struct Slack {
    url: Secret,
    client: reqwest::Client,
}

impl Slack {
    pub fn new(c: &SlackChannel) -> Result<Self, String> {
        let url = super::secret(c.webhook_url_source())?.ok_or("no webhook_url configured")?;
        Ok(Slack {
            url,
            client: http::client(c.timeout)?,
        })
    }
}

#[async_trait::async_trait]
impl Channel for Slack {
    async fn send(&self, n: &Notification) -> Result<String, SendError> {
        let body =
            serde_json::to_vec(&n.slack_json()).map_err(|e| SendError::Permanent(e.to_string()))?;
        http::send(
            self.client
                .post(self.url.expose())
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }
}
