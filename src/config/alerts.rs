//! `[alerts]`: channels (where a message can go), routes (which severity
//! goes where) and the outbox's timing.

use super::SecretSource;
use crate::base::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[alerts]`: channels, routes and the timing of notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Which channels each severity goes to.
    #[serde(default)]
    pub routes: Routes,
    /// A firing condition is notified again after this long.
    #[serde(default = "default_repeat", with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// A condition must hold this long before it notifies (Alertmanager's
    /// `for`): a failure that recovers sooner sends nothing.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// A delivery still failing after this long is given up (and logged).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// First retry delay of a failed delivery; doubles up to `retry_max`.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between delivery attempts.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            channels: BTreeMap::new(),
            routes: Routes::default(),
            repeat_interval: default_repeat(),
            for_: Duration::ZERO,
            max_age: default_max_age(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }
}

fn default_repeat() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}

/// Channel names per severity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    /// Channels for critical alerts.
    #[serde(default)]
    pub critical: Vec<String>,
    /// Channels for warnings.
    #[serde(default)]
    pub warning: Vec<String>,
    /// Channels for info notices.
    #[serde(default)]
    pub info: Vec<String>,
}

/// `[jobs.NAME.alerts]`: a job's own routes and timing; a severity it does
/// not list uses `[alerts.routes]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobAlerts {
    /// This job's channels for critical alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<Vec<String>>,
    /// This job's channels for warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Vec<String>>,
    /// This job's channels for info notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Vec<String>>,
    #[serde(
        default,
        rename = "for",
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    /// How long a condition holds before it notifies (`for`).
    pub for_: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    /// How often a firing condition repeats.
    pub repeat_interval: Option<Duration>,
}

/// `[alerts.channels.NAME]`, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// Email through an SMTP server.
    Email(EmailChannel),
    /// A Slack incoming webhook.
    Slack(SlackChannel),
    /// JSON POSTs, optionally HMAC-signed.
    Webhook(WebhookChannel),
    /// Dead man's switch pings.
    Ping(PingChannel),
    /// PagerDuty Events API v2.
    #[serde(rename = "pagerduty")]
    PagerDuty(PagerDutyChannel),
}

impl ChannelConfig {
    /// The `type` value as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Ping(_) => "ping",
            ChannelConfig::PagerDuty(_) => "pagerduty",
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS; refuses a server without it.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only for a relay on the same host.
    None,
}

/// `type = "email"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// SMTP server host name.
    pub host: String,
    /// Default: 587 for starttls, 465 for tls, 25 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// STARTTLS (default), TLS or none.
    #[serde(default = "default_security")]
    pub security: SmtpSecurity,
    /// SMTP AUTH user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SMTP password inline (prefer `password_env`/`password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The password from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The password from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Sender address.
    pub from: String,
    /// Recipient addresses.
    pub to: Vec<String>,
    /// Extra CA certificate (PEM) trusted for this server, for an internal CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Connect and send limit.
    #[serde(default = "default_smtp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `type = "slack"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackChannel {
    /// The incoming-webhook URL is a credential: prefer `_env`/`_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Secret>,
    /// The webhook URL from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_env: Option<String>,
    /// The webhook URL from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_file: Option<PathBuf>,
    /// Request limit.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `type = "webhook"`: each notification POSTed as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key; without one the posts are unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The HMAC key from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The HMAC key from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Request limit.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Dead-man's-switch pings (healthchecks.io style): `URL/start` when a run
/// starts, `URL` when it succeeds, `URL/fail` when it fails. `{job}` in the
/// URL is replaced by the job name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingChannel {
    /// Ping URL inline (the URL is the credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// The ping URL from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The ping URL from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// Jobs that ping (default: every job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<String>>,
    /// A ping older than this is dropped: a late "start" misleads more than a missing one.
    #[serde(default = "default_ping_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Request limit.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `type = "pagerduty"`: PagerDuty's Events API v2. A firing condition
/// triggers an incident keyed by the condition (`dedup_key`), its repeats
/// update it, its resolve resolves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyChannel {
    /// The integration's routing key inline (prefer `_env`/`_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<Secret>,
    /// The routing key from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_env: Option<String>,
    /// The routing key from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_file: Option<PathBuf>,
    /// The Events API endpoint (the EU service region has its own).
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    /// Request limit.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

fn default_ping_max_age() -> Duration {
    Duration::from_secs(3600)
}

impl ChannelConfig {
    /// What is wrong with this channel's keys, as (field, message); `jobs`
    /// are the configured job names (a ping may name only those).
    fn errors(&self, jobs: &[&str]) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        let mut check = |field: &'static str, r: Result<(), String>| {
            if let Err(m) = r {
                errors.push((field, m));
            }
        };
        match self {
            ChannelConfig::Email(e) => {
                if e.host.trim().is_empty() {
                    check("host", Err("expected the SMTP server's host name".into()));
                }
                check("to", non_empty(&e.to, "at least one recipient address"));
                for (field, a) in
                    std::iter::once(("from", &e.from)).chain(e.to.iter().map(|t| ("to", t)))
                {
                    check(
                        field,
                        a.parse::<lettre::Address>()
                            .map(|_| ())
                            .map_err(|err| format!("{a:?} is not an email address ({err})")),
                    );
                }
                let pw = e.password_source();
                check("password", pw.at_most_one());
                if pw.is_set() && e.username.is_none() {
                    check(
                        "username",
                        Err("a password needs a username (expected username = \"...\")".into()),
                    );
                }
            }
            ChannelConfig::Slack(s) => {
                check("webhook_url", s.webhook_url_source().require());
                if let Some(u) = &s.webhook_url {
                    check("webhook_url", http_url(u.expose()));
                }
            }
            ChannelConfig::Webhook(w) => {
                check("url", http_url(&w.url));
                check("secret", w.secret_source().at_most_one());
            }
            ChannelConfig::PagerDuty(p) => {
                check("routing_key", p.routing_key_source().require());
                check("url", http_url(&p.url));
            }
            ChannelConfig::Ping(p) => {
                check("url", p.url_source().require());
                if let Some(u) = &p.url {
                    check("url", http_url(&u.expose().replace("{job}", "job")));
                }
                for j in p.jobs.iter().flatten() {
                    if !jobs.contains(&j.as_str()) {
                        check("jobs", Err(format!("no job named {j:?}")));
                    }
                }
            }
        }
        errors
    }
}

impl AlertsConfig {
    /// Problems as (key under `alerts.`, message).
    pub(crate) fn validate(&self, jobs: &[&str]) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (name, ch) in &self.channels {
            let key = format!("alerts.channels.{name}");
            if let Err(m) = crate::base::ids::JobName::parse(name) {
                errors.push((key.clone(), m));
            }
            for (field, m) in ch.errors(jobs) {
                errors.push((format!("{key}.{field}"), m));
            }
        }
        for (sev, list) in [
            ("critical", &self.routes.critical),
            ("warning", &self.routes.warning),
            ("info", &self.routes.info),
        ] {
            if let Err(m) = self.check_route(list) {
                errors.push((format!("alerts.routes.{sev}"), m));
            }
        }
        if self.retry_initial.is_zero() {
            errors.push((
                "alerts.retry_initial".into(),
                "expected a positive duration".into(),
            ));
        }
        if self.repeat_interval.is_zero() {
            errors.push((
                "alerts.repeat_interval".into(),
                "expected a positive duration".into(),
            ));
        }
        // An outbox row older than max_age expires unsent: at or below the
        // first retry delay, a delivery that fails once is never retried
        // (and "0s" expires every alert before its first attempt).
        if self.max_age <= self.retry_initial {
            errors.push((
                "alerts.max_age".into(),
                format!(
                    "expected more than retry_initial ({}): alerts older than max_age expire unsent, got {}",
                    humantime::format_duration(self.retry_initial),
                    humantime::format_duration(self.max_age)
                ),
            ));
        }
        if self.retry_max < Duration::from_secs(1) || self.retry_max < self.retry_initial {
            errors.push((
                "alerts.retry_max".into(),
                "expected at least 1s and at least retry_initial (the backoff between delivery attempts)".into(),
            ));
        }
        errors
    }

    /// Every name is an alert channel (pings are not routed: they follow runs).
    pub(crate) fn check_route(&self, list: &[String]) -> Result<(), String> {
        for name in list {
            match self.channels.get(name) {
                None => {
                    let known: Vec<&str> = self
                        .channels
                        .iter()
                        .filter(|(_, c)| !matches!(c, ChannelConfig::Ping(_)))
                        .map(|(n, _)| n.as_str())
                        .collect();
                    return Err(format!(
                        "no channel named {name:?} (expected one of: {})",
                        if known.is_empty() {
                            "none defined under [alerts.channels]".into()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
                Some(ChannelConfig::Ping(_)) => {
                    return Err(format!(
                        "{name:?} is a ping channel: pings follow every run of their jobs and take no alerts (expected an email, slack, webhook or pagerduty channel)"
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn non_empty(v: &[String], what: &str) -> Result<(), String> {
    if v.is_empty() {
        Err(format!("expected {what}"))
    } else {
        Ok(())
    }
}

/// The value is not echoed: webhook and Slack URLs carry their tokens.
fn http_url(u: &str) -> Result<(), String> {
    match url::Url::parse(u) {
        Ok(p) if (p.scheme() == "http" || p.scheme() == "https") && p.host_str().is_some() => {
            Ok(())
        }
        Ok(p) => Err(format!(
            "expected an http:// or https:// URL with a host, got a {}: URL (value not shown)",
            p.scheme()
        )),
        Err(e) => Err(format!(
            "expected an http:// or https:// URL, got something that is not a URL ({e}; value not shown)"
        )),
    }
}

impl EmailChannel {
    /// `password` / `password_env` / `password_file`.
    pub fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            keys: ["password", "password_env", "password_file"],
            inline: self.password.as_ref(),
            env: self.password_env.as_deref(),
            file: self.password_file.as_deref(),
        }
    }
}

impl SlackChannel {
    /// `webhook_url` / `webhook_url_env` / `webhook_url_file`.
    pub fn webhook_url_source(&self) -> SecretSource<'_> {
        SecretSource {
            keys: ["webhook_url", "webhook_url_env", "webhook_url_file"],
            inline: self.webhook_url.as_ref(),
            env: self.webhook_url_env.as_deref(),
            file: self.webhook_url_file.as_deref(),
        }
    }
}

impl WebhookChannel {
    /// `secret` / `secret_env` / `secret_file` (the HMAC key).
    pub fn secret_source(&self) -> SecretSource<'_> {
        SecretSource {
            keys: ["secret", "secret_env", "secret_file"],
            inline: self.secret.as_ref(),
            env: self.secret_env.as_deref(),
            file: self.secret_file.as_deref(),
        }
    }
}

impl PagerDutyChannel {
    /// `routing_key` / `routing_key_env` / `routing_key_file`.
    pub fn routing_key_source(&self) -> SecretSource<'_> {
        SecretSource {
            keys: ["routing_key", "routing_key_env", "routing_key_file"],
            inline: self.routing_key.as_ref(),
            env: self.routing_key_env.as_deref(),
            file: self.routing_key_file.as_deref(),
        }
    }
}

impl PingChannel {
    /// `url` / `url_env` / `url_file`.
    pub fn url_source(&self) -> SecretSource<'_> {
        SecretSource {
            keys: ["url", "url_env", "url_file"],
            inline: self.url.as_ref(),
            env: self.url_env.as_deref(),
            file: self.url_file.as_deref(),
        }
    }
}
