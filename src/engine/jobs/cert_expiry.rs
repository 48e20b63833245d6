//! The `cert_expiry` kind: R4's weekly `openssl x509 -enddate`, for PEM
//! files (every certificate of a chain: an expiring intermediate breaks
//! clients too) and for live TLS endpoints through rustls.
//!
//! Endpoints are read with a verifier that accepts any chain: the point is
//! to report an expired or soon-expiring certificate with its dates, which a
//! validating handshake would turn into a bare "certificate expired" error.
//! Handshake signatures are still checked, so the peer holds the key.

use crate::base::error::Result;
use crate::config::CertExpiryJob;
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub use crate::base::values::Endpoint;

/// What one certificate says.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// The file or endpoint the certificate came from.
    pub source: String,
    /// Position in the file or the chain the server sent (0: leaf).
    pub position: usize,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// DNS names and addresses it is valid for.
    pub sans: Vec<String>,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity: what the job grades.
    pub not_after: DateTime<Utc>,
}

fn describe(source: &str, position: usize, der: &[u8]) -> std::result::Result<CertInfo, String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let ts = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
    let sans = match c.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
                    16 => <[u8; 16]>::try_from(*b)
                        .map(|a| std::net::Ipv6Addr::from(a).to_string())
                        .unwrap_or_default(),
                    _ => String::new(),
                },
                other => other.to_string(),
            })
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertInfo {
        source: source.to_owned(),
        position,
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        sans,
        not_before: ts(c.validity().not_before.timestamp()),
        not_after: ts(c.validity().not_after.timestamp()),
    })
}

/// Every certificate in a PEM file, in order.
pub fn read_file(path: &std::path::Path) -> std::result::Result<Vec<CertInfo>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let source = path.display().to_string();
    let mut out = Vec::new();
    for (i, pem) in x509_parser::pem::Pem::iter_from_buffer(&bytes).enumerate() {
        let pem = pem.map_err(|e| format!("{source}: invalid PEM block {}: {e}", i + 1))?;
        if pem.label != "CERTIFICATE" {
            continue; // a key or parameters in the same file
        }
        out.push(
            describe(&source, out.len(), &pem.contents)
                .map_err(|e| format!("{source}: certificate {} does not parse: {e}", i + 1))?,
        );
    }
    if out.is_empty() {
        return Err(format!("{source} holds no PEM certificate"));
    }
    Ok(out)
}

#[derive(Debug)]
struct AcceptAnyChain(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain `e` presents, leaf first.
pub async fn read_endpoint(
    e: &Endpoint,
    timeout: Duration,
) -> std::result::Result<Vec<CertInfo>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyChain(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(e.sni.clone())
        .map_err(|err| format!("{:?} is not a valid server name: {err}", e.sni))?;
    let source = format!("{}:{}", e.host, e.port);
    let work = async {
        let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| format!("cannot connect to {source}: {err}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS handshake with {source} failed: {err}"))?;
        let chain: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        Ok::<_, String>(chain)
    };
    let chain = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no TLS handshake with {source} within {timeout:?}"))??;
    if chain.is_empty() {
        return Err(format!("{source} sent no certificate"));
    }
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| describe(&source, i, der))
        .collect()
}

/// Check every certificate of the job's files and endpoints.
pub async fn run(ctx: &CheckCtx<'_>, job: &CertExpiryJob) -> Result<Report> {
    let mut report = Report::new(ctx.job, "cert_expiry");
    let mut certs = from_files(&job.files, &mut report).await?;
    for spec in &job.endpoints {
        match read_endpoint(spec.get()?, job.timeout).await {
            Ok(c) => certs.extend(c),
            Err(err) => report
                .findings
                .push(Finding::new(spec.text(), Level::Critical, err)),
        }
    }
    let now = Utc::now();
    let mut soonest: Option<(i64, String)> = None;
    let mut details = Vec::new();
    for c in &certs {
        let left = c.not_after - now;
        let secs = left.num_seconds();
        let days = secs as f64 / 86400.0;
        let level = grade(secs, job.warn, job.critical);
        let when = if secs < 0 {
            format!(
                "expired {:.0} days ago ({})",
                -days,
                c.not_after.format("%Y-%m-%d %H:%M UTC")
            )
        } else {
            format!(
                "expires in {days:.0} days ({})",
                c.not_after.format("%Y-%m-%d %H:%M UTC")
            )
        };
        let sans = if c.sans.is_empty() {
            String::new()
        } else {
            format!(", SANs {}", c.sans.join(" "))
        };
        let message = format!("{when}; issuer {}{sans}", c.issuer);
        let subject = format!("{} {}", c.source, c.subject);
        report.samples.push(Sample::gauge(
            "drctl_cert_expiry_seconds",
            &[("subject", &c.subject), ("source", &c.source)],
            secs as f64,
        ));
        report.samples.push(Sample::gauge(
            "drctl_cert_not_after_timestamp_seconds",
            &[("subject", &c.subject), ("source", &c.source)],
            c.not_after.timestamp() as f64,
        ));
        if soonest.as_ref().is_none_or(|(s, _)| secs < *s) {
            soonest = Some((secs, format!("{subject} {when}")));
        }
        let mut d = serde_json::to_value(c).unwrap_or_default();
        if let Some(o) = d.as_object_mut() {
            o.insert("seconds_left".into(), secs.into());
            o.insert("result".into(), level.as_str().into());
        }
        details.push(d);
        report.findings.push(Finding::new(subject, level, message));
    }
    let problems = report.problems().len();
    report.summary = format!(
        "{} certificates checked, {problems} need attention{}",
        certs.len(),
        soonest
            .map(|(_, s)| format!("; soonest: {s}"))
            .unwrap_or_default()
    );
    report.details = json!({ "certificates": details });
    Ok(report)
}

/// The certificates of every file matching `patterns`; a bad glob, a
/// pattern matching nothing or an unreadable file is a finding.
async fn from_files(patterns: &[String], report: &mut Report) -> Result<Vec<CertInfo>> {
    let mut certs = Vec::new();
    for pattern in patterns {
        let paths: Vec<_> = match glob::glob(pattern) {
            Ok(p) => p
                .filter_map(std::result::Result::ok)
                .filter(|p| p.is_file())
                .collect(),
            Err(e) => {
                report.findings.push(Finding::new(
                    pattern.as_str(),
                    Level::Critical,
                    format!("invalid glob: {e}"),
                ));
                continue;
            }
        };
        if paths.is_empty() {
            report.findings.push(Finding::new(
                pattern.as_str(),
                Level::Warning,
                "no file matches (certificate moved or deleted?)",
            ));
        }
        for p in paths {
            let shown = p.display().to_string();
            match tokio::task::spawn_blocking(move || read_file(&p))
                .await
                .map_err(|e| crate::Error::task(format!("reading {shown}"), e))?
            {
                Ok(c) => certs.extend(c),
                Err(e) => report
                    .findings
                    .push(Finding::new(shown, Level::Critical, e)),
            }
        }
    }
    Ok(certs)
}

/// How urgent `secs` left is: at or under `critical` (expired included),
/// at or under `warn`, or fine.
fn grade(secs: i64, warn: std::time::Duration, critical: std::time::Duration) -> Level {
    if secs <= critical.as_secs() as i64 {
        Level::Critical
    } else if secs <= warn.as_secs() as i64 {
        Level::Warning
    } else {
        Level::Ok
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grade_is_inclusive_at_each_threshold_and_expired_is_critical() {
        use super::{grade, Level};
        let (w, c) = (
            std::time::Duration::from_secs(30 * 86400),
            std::time::Duration::from_secs(7 * 86400),
        );
        assert_eq!(grade(-1, w, c), Level::Critical);
        assert_eq!(grade(7 * 86400, w, c), Level::Critical);
        assert_eq!(grade(7 * 86400 + 1, w, c), Level::Warning);
        assert_eq!(grade(30 * 86400, w, c), Level::Warning);
        assert_eq!(grade(30 * 86400 + 1, w, c), Level::Ok);
    }

    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("example.com:443").unwrap();
        assert_eq!(
            (e.sni.as_str(), e.host.as_str(), e.port),
            ("example.com", "example.com", 443)
        );
        let e = Endpoint::parse("api.example.com@10.0.0.5:8443").unwrap();
        assert_eq!(
            (e.sni.as_str(), e.host.as_str(), e.port),
            ("api.example.com", "10.0.0.5", 8443)
        );
        let e = Endpoint::parse("[::1]:443").unwrap();
        assert_eq!(e.host, "::1");
        for bad in ["example.com", "example.com:https", ":443", "@h:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
