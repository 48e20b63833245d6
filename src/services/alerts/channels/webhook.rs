//! Generic webhooks: the notification as JSON, signed so the receiver can
//! tell it came from us and is fresh. The signature is HMAC-SHA256 over
//! `"{timestamp}.{body}"` with the shared secret, sent as
//! `X-Drctl-Signature: sha256=<hex>` next to `X-Drctl-Timestamp` (Unix
//! seconds); a receiver recomputes it and rejects old timestamps.

use super::{http, Channel, SendError};
use crate::base::secret::Secret;
use crate::config::WebhookChannel;
use crate::services::alerts::Notification;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(super) struct Webhook {
    url: String,
    secret: Option<Secret>,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(c: &WebhookChannel) -> Result<Self, String> {
        Ok(Webhook {
            url: c.url.clone(),
            secret: super::secret(c.secret_source())?,
            client: http::client(c.timeout)?,
        })
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "{timestamp}.{body}").
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl Channel for Webhook {
    async fn send(&self, n: &Notification) -> Result<String, SendError> {
        let body = serde_json::to_vec(n).map_err(|e| SendError::Permanent(e.to_string()))?;
        let ts = chrono::Utc::now().timestamp();
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-drctl-timestamp", ts.to_string())
            .header("x-drctl-delivery", n.id.as_str())
            .header("x-drctl-event", n.event.as_str());
        if let Some(s) = &self.secret {
            req = req.header(
                "x-drctl-signature",
                signature(s.expose().as_bytes(), ts, &body),
            );
        }
        http::send(req.body(body)).await
    }
}
