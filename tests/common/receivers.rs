//! Real receivers for alert tests, on loopback:
//! - an HTTP server (axum) that records every request and answers with the
//!   statuses a test queues (default 200), standing in for Slack, webhook
//!   endpoints and healthchecks.io;
//! - an SMTP server (mailin-embedded) with STARTTLS (a self-signed cert made
//!   with the openssl CLI) and AUTH PLAIN, collecting whole messages. It can
//!   be started late on a port chosen earlier, to play "SMTP was down".

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Bind a free loopback port and run `serve` on its listener in a thread
/// with its own runtime (tests are synchronous); returns the port.
pub fn serve_on_loopback<F, Fut>(serve: F) -> u16
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            async move { serve(tokio::net::TcpListener::from_std(listener).unwrap()).await },
        );
    });
    port
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct HttpState {
    requests: Vec<Request>,
    statuses: VecDeque<u16>,
    /// Body of 200 answers (default "ok").
    body: Option<String>,
}

pub struct HttpReceiver {
    pub port: u16,
    state: Arc<Mutex<HttpState>>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        let state = Arc::new(Mutex::new(HttpState::default()));
        let st = state.clone();
        let port = serve_on_loopback(move |listener| async move {
            let app = axum::Router::new().fallback(
                move |method: axum::http::Method,
                      uri: axum::http::Uri,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let st = st.clone();
                    async move {
                        let mut s = st.lock().unwrap();
                        s.requests.push(Request {
                            method: method.to_string(),
                            path: uri.path().to_owned(),
                            headers: headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect(),
                            body: body.to_vec(),
                            at: std::time::Instant::now(),
                        });
                        let code = s.statuses.pop_front().unwrap_or(200);
                        let body = match (&s.body, code) {
                            (Some(b), 200) => b.clone(),
                            (None, 200) => "ok".to_owned(),
                            _ => "unavailable".to_owned(),
                        };
                        (axum::http::StatusCode::from_u16(code).unwrap(), body)
                    }
                },
            );
            axum::serve(listener, app).await.unwrap();
        });
        HttpReceiver { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next requests with these statuses, then 200 again.
    pub fn queue_statuses(&self, codes: &[u16]) {
        self.state.lock().unwrap().statuses.extend(codes);
    }

    /// Answer 200s with this body from now on.
    pub fn set_body(&self, body: &str) {
        self.state.lock().unwrap().body = Some(body.to_owned());
    }

    /// Every request so far to `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// The AUTH PLAIN user that sent it.
    pub user: Option<String>,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.data.split_once("\r\n\r\n")?;
        // Unfold continuation lines first.
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // quoted-printable soft breaks, as lettre may encode long lines.
        body.replace("=\r\n", "").replace("=3D", "=")
    }
}

#[derive(Clone)]
struct Handler {
    user: String,
    password: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    authed: Option<String>,
    current: Option<Mail>,
}

impl mailin_embedded::Handler for Handler {
    fn auth_plain(
        &mut self,
        _authz: &str,
        user: &str,
        password: &str,
    ) -> mailin_embedded::Response {
        if user == self.user && password == self.password {
            self.authed = Some(user.to_owned());
            mailin_embedded::response::AUTH_OK
        } else {
            mailin_embedded::response::INVALID_CREDENTIALS
        }
    }
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> mailin_embedded::Response {
        if self.authed.is_none() {
            return mailin_embedded::response::AUTHENTICATION_REQUIRED;
        }
        mailin_embedded::response::OK
    }
    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current = Some(Mail {
            from: from.to_owned(),
            to: to.to_vec(),
            data: String::new(),
            user: self.authed.clone(),
        });
        mailin_embedded::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(m) = self.current.as_mut() {
            m.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }
    fn data_end(&mut self) -> mailin_embedded::Response {
        if let Some(m) = self.current.take() {
            self.mails.lock().unwrap().push(m);
        }
        mailin_embedded::response::OK
    }
}

pub struct SmtpServer {
    pub port: u16,
    /// The server's self-signed certificate: drctl's `ca_file`.
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    key_file: PathBuf,
    started: bool,
}

impl SmtpServer {
    /// Pick a port and make a certificate, but do not listen yet.
    pub fn prepare(user: &str, password: &str) -> SmtpServer {
        let dir = super::scratch_dir("drctl-smtp-");
        let ca_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-keyout")
            .arg(&key_file)
            .arg("-out")
            .arg(&ca_file)
            .output()
            .expect("openssl CLI (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmtpServer {
            port: super::free_port(),
            ca_file,
            user: user.to_owned(),
            password: password.to_owned(),
            mails: Arc::new(Mutex::new(Vec::new())),
            key_file,
            started: false,
        }
    }

    pub fn start(&mut self) {
        assert!(!self.started);
        self.started = true;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let handler = Handler {
            user: self.user.clone(),
            password: self.password.clone(),
            mails: self.mails.clone(),
            authed: None,
            current: None,
        };
        let mut server = mailin_embedded::Server::new(handler);
        server
            .with_name("drctl-test-smtp")
            .with_ssl(mailin_embedded::SslConfig::SelfSigned {
                cert_path: self.ca_file.display().to_string(),
                key_path: self.key_file.display().to_string(),
            })
            .unwrap()
            .with_auth(mailin_embedded::AuthMechanism::Plain)
            .with_addr(("127.0.0.1", self.port))
            .unwrap();
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        // Listening once a connection succeeds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "SMTP server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// The `[alerts.channels.NAME]` table for this server.
    pub fn channel_toml(&self, name: &str, password_env: &str) -> String {
        format!(
            "[alerts.channels.{name}]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{}\"\npassword_env = \"{password_env}\"\nfrom = \"drctl@example.com\"\nto = [\"oncall@example.com\", \"dba@example.com\"]\nca_file = \"{}\"\ntimeout = \"5s\"\n",
            self.port,
            self.user,
            self.ca_file.display()
        )
    }
}
