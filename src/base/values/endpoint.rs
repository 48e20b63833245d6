//! A TLS endpoint to read a certificate from (`cert_expiry` jobs).

/// `host:port`, `[v6]:port`, or `sni@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name sent in the TLS handshake (SNI).
    pub sni: String,
    /// Where to connect.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parse `host:port` or `name@host:port`.
    pub fn parse(s: &str) -> std::result::Result<Endpoint, String> {
        let bad = || format!("expected \"host:port\" or \"name@host:port\", got {s:?}");
        let (sni, addr) = match s.split_once('@') {
            Some((n, a)) => (Some(n), a),
            None => (None, s),
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || sni == Some("") {
            return Err(bad());
        }
        Ok(Endpoint {
            sni: sni.unwrap_or(host).to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

impl super::FromConfig for Endpoint {
    fn from_config(text: &str) -> Result<Self, String> {
        Endpoint::parse(text)
    }
}
