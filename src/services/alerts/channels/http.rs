//! The HTTP POST the Slack, webhook and ping channels share.

use super::SendError;
use std::time::Duration;

pub(super) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("drctl/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Send and classify: 2xx delivered; 400, 413, 415 and 422 (the receiver
/// refuses this payload) rejected for good; anything else, including 401,
/// 403 and 404 (a credential or URL an operator can fix while the row
/// waits), connection errors and timeouts, retried until `max_age`.
pub(super) async fn send(req: reqwest::RequestBuilder) -> Result<String, SendError> {
    let resp = req.send().await.map_err(|e| {
        // reqwest's Display hides the cause ("error sending request"); keep
        // the chain, without the URL: reqwest prints it normalised
        // (`LOCALHOST` lower-cased, `:443` dropped), a form the secret
        // registry would not recognise, and Slack and ping URLs are tokens.
        let msg = crate::base::error::chain(&e.without_url());
        SendError::Transient(msg)
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    let said = format!(
        "HTTP {}{}",
        status.as_u16(),
        if body.is_empty() {
            String::new()
        } else {
            format!(" {body}")
        }
    );
    if status.is_success() {
        Ok(said)
    } else if matches!(status.as_u16(), 400 | 413 | 415 | 422) {
        Err(SendError::Permanent(said))
    } else {
        Err(SendError::Transient(said))
    }
}
