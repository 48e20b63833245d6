//! What a notification carries, and how each channel words it: a subject
//! and plain text for email, mrkdwn for Slack, the JSON itself for webhooks.

use super::{Event, Severity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One message about one condition, as stored in the outbox and as posted
/// to webhooks. Holds no secrets: details are redacted before they get here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification: a receiver can drop duplicates by it.
    pub id: String,
    /// Firing, repeat, resolved or a one-off notice.
    pub event: Event,
    /// The condition's key (`job_failed:appdb`): the same for its firing,
    /// repeats and resolve.
    pub key: String,
    /// What went wrong, as a stable word (`job_failed`, `rpo_violated`, ...).
    pub kind: String,
    /// How urgent; routes pick channels by it.
    pub severity: Severity,
    /// The host that raised it.
    pub host: String,
    /// The job concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// One line for a subject or a chat message.
    pub summary: String,
    /// The whole story (an error's text, a finding list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// When the condition started to hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// When this notification was made.
    pub at: DateTime<Utc>,
    /// 1 for the first notification of a condition, 2 for the first repeat...
    pub count: i64,
    /// An HTML version (reports): email sends it with the text as alternative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl Notification {
    /// `CRITICAL`, `RESOLVED`, `TEST`...
    pub fn label(&self) -> String {
        if self.kind == "report" {
            return "REPORT".into();
        }
        match self.event {
            Event::Resolved => "RESOLVED".into(),
            Event::Test => "TEST".into(),
            _ => self.severity.as_str().to_ascii_uppercase(),
        }
    }

    /// An email subject: `[drctl] FIRING critical job_failed:appdb on db1`.
    pub fn subject(&self) -> String {
        let repeat = if self.event == Event::Repeat {
            " (still failing)"
        } else {
            ""
        };
        format!(
            "[drctl {}] {}{repeat} on {}",
            self.label(),
            self.summary,
            self.host
        )
    }

    /// The plain-text body (email, and the Slack fallback).
    pub fn text(&self) -> String {
        if self.kind == "report" {
            return format!("{}\n", self.detail.as_deref().unwrap_or(""));
        }
        let mut out = format!("{}: {}\n\n", self.label(), self.summary);
        let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<9}{v}\n"));
        line("host:", &self.host);
        if let Some(j) = &self.job {
            line("job:", j);
        }
        line("event:", self.event_text());
        if let Some(s) = self.since {
            line("since:", &s.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        }
        line("at:", &self.at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        line("key:", &self.key);
        if let Some(d) = &self.detail {
            out.push_str(&format!("\nWhat happened:\n{}\n", indent(d)));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("\nWhat to do next:\n{}\n", indent(h)));
        }
        out.push_str("\n-- \ndrctl: `drctl alerts` lists firing alerts and deliveries.\n");
        out
    }

    fn event_text(&self) -> &'static str {
        match self.event {
            Event::Firing => "started failing",
            Event::Repeat => "still failing",
            Event::Resolved => "resolved",
            Event::Notice => "notice",
            Event::Test => "test message",
            Event::PingStart | Event::PingSuccess | Event::PingFail => "ping",
        }
    }

    /// Slack incoming-webhook payload: a fallback `text` and one mrkdwn block.
    pub fn slack_json(&self) -> serde_json::Value {
        if self.kind == "report" {
            // The drills table of the Markdown report, as a code block.
            let md = self.detail.as_deref().unwrap_or("");
            let drills = md
                .split("## Drills")
                .nth(1)
                .and_then(|rest| rest.split("\n## ").next())
                .unwrap_or("")
                .trim();
            let body = format!(
                ":bar_chart: *DR drill report* on `{}`: {}\n```{}```",
                esc(&self.host),
                esc(&self.summary),
                esc(&clip(drills, 2800))
            );
            return serde_json::json!({
                "text": format!("DR drill report on {}: {}", self.host, self.summary),
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}}]
            });
        }
        let icon = match (self.event, self.severity) {
            (Event::Resolved, _) => ":white_check_mark:",
            (Event::Test, _) => ":wave:",
            (_, Severity::Critical) => ":rotating_light:",
            (_, Severity::Warning) => ":warning:",
            (_, Severity::Info) => ":information_source:",
        };
        let title = format!(
            "{icon} *{}* {} on `{}`",
            self.label(),
            esc(&self.summary),
            esc(&self.host)
        );
        let mut body = title.clone();
        if let Some(j) = &self.job {
            body.push_str(&format!("\n*Job:* `{}`", esc(j)));
        }
        body.push_str(&format!("\n*Event:* {}", self.event_text()));
        if let Some(s) = self.since {
            body.push_str(&format!("\n*Since:* {}", s.format("%Y-%m-%d %H:%M:%S UTC")));
        }
        if let Some(d) = &self.detail {
            body.push_str(&format!("\n*Error:*\n```{}```", esc(&clip(d, 2500))));
        }
        if let Some(h) = &self.hint {
            body.push_str(&format!("\n*Next:* {}", esc(h)));
        }
        serde_json::json!({
            "text": format!("[{}] {} on {}", self.label(), self.summary, self.host),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": body}}
            ]
        })
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Slack's mrkdwn escapes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
