//! PagerDuty's Events API v2. A condition is one incident: `trigger` when
//! it fires (and on each repeat, which PagerDuty folds into the open
//! incident), `resolve` when it clears, both with the condition's key as
//! `dedup_key`, so an incident opened by one host and resolved by another
//! (the same job moved) is still one incident. One-off notices and `drctl
//! alerts test` trigger and at once resolve an event of their own: they
//! show in the service's log without leaving an incident open. Reports are
//! not sent (PagerDuty takes incidents, not documents).
//!
//! 202 is delivered; 429 and 5xx are retried by the outbox; 400 (a payload
//! PagerDuty refuses) is rejected for good so it never blocks the queue
//! (`http::send` classifies).

use super::{http, Channel, SendError};
use crate::base::secret::Secret;
use crate::config::PagerDutyChannel;
use crate::services::alerts::{Event, Notification, Severity};
use serde_json::{json, Value};

pub(super) struct PagerDuty {
    routing_key: Secret,
    url: String,
    client: reqwest::Client,
}

impl PagerDuty {
    pub fn new(c: &PagerDutyChannel) -> Result<Self, String> {
        let routing_key =
            super::secret(c.routing_key_source())?.ok_or("no routing_key configured")?;
        Ok(PagerDuty {
            routing_key,
            url: c.url.clone(),
            client: http::client(c.timeout)?,
        })
    }
}

/// PagerDuty's limits: a summary of 1,024 characters, a dedup key of 255.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The Events API requests for a notification, in order (pure): none, one
/// trigger or resolve, or a trigger and its resolve for a one-off event.
pub fn events(n: &Notification, routing_key: &str) -> Vec<Value> {
    if n.kind == "report" {
        return Vec::new();
    }
    let trigger = |dedup_key: &str| {
        let severity = match n.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let mut details = json!({
            "event": n.event.as_str(),
            "kind": n.kind,
            "host": n.host,
            "count": n.count,
            "notification_id": n.id,
        });
        for (k, v) in [
            ("job", n.job.as_deref()),
            ("detail", n.detail.as_deref()),
            ("hint", n.hint.as_deref()),
        ] {
            if let Some(v) = v {
                details[k] = json!(v);
            }
        }
        if let Some(s) = n.since {
            details["since"] = json!(s.to_rfc3339());
        }
        let mut payload = json!({
            "summary": clip(&format!("{} on {}", n.summary, n.host), 1024),
            "source": n.host,
            "severity": severity,
            "timestamp": n.at.to_rfc3339(),
            "class": n.kind,
            "custom_details": details,
        });
        if let Some(j) = &n.job {
            payload["component"] = json!(j);
        }
        json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": clip(dedup_key, 255),
            "payload": payload,
            "client": "drctl",
        })
    };
    let resolve = |dedup_key: &str| {
        json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": clip(dedup_key, 255),
        })
    };
    match n.event {
        Event::Firing | Event::Repeat => vec![trigger(&n.key)],
        Event::Resolved => vec![resolve(&n.key)],
        Event::Notice | Event::Test => {
            let own = format!("{}:{}", n.key, n.id);
            vec![trigger(&own), resolve(&own)]
        }
        Event::PingStart | Event::PingSuccess | Event::PingFail => Vec::new(),
    }
}

#[async_trait::async_trait]
impl Channel for PagerDuty {
    async fn send(&self, n: &Notification) -> Result<String, SendError> {
        let requests = events(n, self.routing_key.expose());
        if requests.is_empty() {
            return Ok("not sent: PagerDuty takes incidents, not reports or pings".into());
        }
        let mut said = Vec::new();
        for body in requests {
            let body =
                serde_json::to_vec(&body).map_err(|e| SendError::Permanent(e.to_string()))?;
            said.push(
                http::send(
                    self.client
                        .post(&self.url)
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await?,
            );
        }
        Ok(said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(event: Event, severity: Severity) -> Notification {
        Notification {
            id: "n-1".into(),
            event,
            key: "job_failed:appdb".into(),
            kind: "job_failed".into(),
            severity,
            host: "db1".into(),
            job: Some("appdb".into()),
            summary: "job appdb failed".into(),
            detail: Some("pg_dump: connection refused".into()),
            hint: Some("check the server".into()),
            since: None,
            at: "2026-12-02T02:00:00Z".parse().unwrap(),
            count: 1,
            html: None,
        }
    }

    #[test]
    fn a_condition_is_one_incident_keyed_by_the_condition() {
        let fire = events(&notification(Event::Firing, Severity::Critical), "rk");
        assert_eq!(fire.len(), 1);
        let e = &fire[0];
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["dedup_key"], "job_failed:appdb");
        assert_eq!(e["routing_key"], "rk");
        assert_eq!(e["payload"]["severity"], "critical");
        assert_eq!(e["payload"]["source"], "db1");
        assert_eq!(e["payload"]["component"], "appdb");
        assert_eq!(e["payload"]["summary"], "job appdb failed on db1");
        assert_eq!(
            e["payload"]["custom_details"]["detail"],
            "pg_dump: connection refused"
        );
        let repeat = events(&notification(Event::Repeat, Severity::Warning), "rk");
        assert_eq!(repeat[0]["dedup_key"], "job_failed:appdb");
        assert_eq!(repeat[0]["payload"]["severity"], "warning");
        let resolve = events(&notification(Event::Resolved, Severity::Critical), "rk");
        assert_eq!(
            resolve,
            vec![
                json!({"routing_key": "rk", "event_action": "resolve", "dedup_key": "job_failed:appdb"})
            ]
        );
    }

    #[test]
    fn one_off_events_trigger_and_resolve_their_own_incident() {
        let t = events(&notification(Event::Test, Severity::Info), "rk");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["event_action"], "trigger");
        assert_eq!(t[1]["event_action"], "resolve");
        assert_eq!(t[0]["dedup_key"], "job_failed:appdb:n-1");
        assert_eq!(t[0]["dedup_key"], t[1]["dedup_key"]);
        assert_eq!(t[0]["payload"]["severity"], "info");
        let mut report = notification(Event::Notice, Severity::Info);
        report.kind = "report".into();
        assert!(events(&report, "rk").is_empty());
    }

    #[test]
    fn long_texts_fit_pagerdutys_limits() {
        let mut n = notification(Event::Firing, Severity::Critical);
        n.summary = "x".repeat(5000);
        n.key = "k".repeat(400);
        let e = &events(&n, "rk")[0];
        assert_eq!(
            e["payload"]["summary"].as_str().unwrap().chars().count(),
            1024
        );
        assert_eq!(e["dedup_key"].as_str().unwrap().chars().count(), 255);
    }
}
