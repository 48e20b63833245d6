//! Email through SMTP (lettre): STARTTLS (required, never silently plain),
//! implicit TLS, or plain for a relay on the same host; optional AUTH.

use super::{Channel, SendError};
use crate::base::secret::Secret;
use crate::config::{EmailChannel, SmtpSecurity};
use crate::services::alerts::Notification;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub(super) struct Email {
    cfg: EmailChannel,
    password: Option<Secret>,
    ca: Option<Vec<u8>>,
}

impl Email {
    pub fn new(c: &EmailChannel) -> Result<Self, String> {
        let password = super::secret(c.password_source())?;
        let ca = match &c.ca_file {
            Some(p) => Some(
                std::fs::read(p).map_err(|e| format!("ca_file: reading {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Email {
            cfg: c.clone(),
            password,
            ca,
        })
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let c = &self.cfg;
        let tls = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(c.host.clone());
            if let Some(pem) = &self.ca {
                let cert = Certificate::from_pem(pem).map_err(|e| format!("ca_file: {e}"))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| format!("TLS setup: {e}"))
        };
        let tls = match c.security {
            SmtpSecurity::Starttls => Tls::Required(tls()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls()?),
            SmtpSecurity::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.as_str())
            .port(self.port())
            .tls(tls)
            .timeout(Some(c.timeout));
        if let (Some(user), Some(pw)) = (&c.username, &self.password) {
            b = b.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
        }
        Ok(b.build())
    }

    fn port(&self) -> u16 {
        self.cfg.port.unwrap_or(match self.cfg.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }

    pub(super) fn message(&self, n: &Notification) -> Result<Message, String> {
        let addr = |a: &str| {
            a.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("{a:?}: {e}"))
        };
        let mut m = Message::builder()
            .from(addr(&self.cfg.from)?)
            .subject(n.subject())
            // One Message-ID per notification, the same on every retry of
            // its outbox row: deliveries are at-least-once, and mail systems
            // drop duplicates by it.
            .message_id(Some(message_id(n)));
        for to in &self.cfg.to {
            m = m.to(addr(to)?);
        }
        match &n.html {
            Some(html) => m
                .multipart(lettre::message::MultiPart::alternative_plain_html(
                    n.text(),
                    html.clone(),
                ))
                .map_err(|e| e.to_string()),
            None => m
                .header(ContentType::TEXT_PLAIN)
                .body(n.text())
                .map_err(|e| e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl Channel for Email {
    async fn send(&self, n: &Notification) -> Result<String, SendError> {
        let msg = self.message(n).map_err(SendError::Permanent)?;
        let transport = self.transport().map_err(SendError::Transient)?;
        match transport.send(msg).await {
            Ok(resp) => Ok(format!(
                "SMTP {} {}",
                resp.code(),
                resp.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) => {
                let msg = crate::base::error::chain(&e);
                let msg = format!("{}:{}: {msg}", self.cfg.host, self.port());
                // A 5xx about this message will not change; an authentication
                // failure (53x) will once the password is fixed: keep it.
                let auth = e.status().is_some_and(|c| c.to_string().starts_with("53"));
                if e.is_permanent() && !auth {
                    Err(SendError::Permanent(msg))
                } else {
                    Err(SendError::Transient(msg))
                }
            }
        }
    }
}

/// `<notification id@host>`, the host reduced to what a Message-ID allows.
fn message_id(n: &Notification) -> String {
    let host: String = n
        .host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    let host = if host.is_empty() {
        "drctl".into()
    } else {
        host
    };
    format!("<{}@{host}>", n.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::alerts::{Event, Severity};

    #[test]
    fn every_retry_of_a_notification_carries_one_message_id() {
        let cfg: EmailChannel = toml::from_str(
            "host = \"127.0.0.1\"\nfrom = \"drctl@example.test\"\nto = [\"ops@example.test\"]\n",
        )
        .unwrap();
        let mail = Email::new(&cfg).unwrap();
        let n = Notification {
            id: "0b7e2c1a-1111-2222-3333-444455556666".into(),
            event: Event::Firing,
            key: "job_failed:appdb".into(),
            kind: "job_failed".into(),
            severity: Severity::Critical,
            host: "db 1/prod".into(),
            job: Some("appdb".into()),
            summary: "appdb failed".into(),
            detail: None,
            hint: None,
            since: None,
            at: chrono::Utc::now(),
            count: 1,
            html: None,
        };
        let header = |m: &Message| {
            String::from_utf8_lossy(&m.formatted())
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .unwrap()
                .to_owned()
        };
        let first = header(&mail.message(&n).unwrap());
        let retry = header(&mail.message(&n).unwrap());
        assert_eq!(first, retry);
        assert!(
            first.contains("<0b7e2c1a-1111-2222-3333-444455556666@db1prod>"),
            "{first}"
        );
    }
}
