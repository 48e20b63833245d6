//! A PostgreSQL connection target parsed from a URL. The password never goes
//! into argv or a child's environment: children get a `PGPASSFILE` that is
//! an unlinked 0600 file named `/dev/fd/N` (inherited by that child only),
//! so no path ever holds it and a SIGKILL cannot leave it behind.

use crate::base::error::{Error, Result};
use crate::base::secret::Secret;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use std::io::Write;

/// A PostgreSQL server and database to connect to, parsed from a URL;
/// the password never leaves it except into sqlx or a passfile.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host name, address, or socket directory.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Role to connect as.
    pub user: String,
    /// Database name.
    pub database: String,
    password: Option<Secret>,
    /// Other libpq parameters from the query string (sslmode, ...).
    params: Vec<(String, String)>,
}

/// A libpq password file without a name: gone with its last descriptor.
pub struct PassFile {
    /// Held open: the file exists only as long as this descriptor.
    _open: std::fs::File,
    path: std::path::PathBuf,
}

impl PassFile {
    /// `/dev/fd/N`: `pg::spawn_tool` lets the child inherit N.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn escape_pgpass(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

impl PgTarget {
    /// Parse a `postgres://` URL (query parameters such as `sslmode` kept).
    pub fn parse(url_text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Other(format!("invalid PostgreSQL URL ({why}); expected postgres://user[:password]@host[:port]/database"))
        };
        // `postgres://user:pw@/db?host=/run/postgresql` (libpq's form for a
        // Unix socket) has an empty host, which a URL parser refuses.
        let socket_form = url_text.contains("@/");
        let text = if socket_form {
            std::borrow::Cow::Owned(url_text.replacen("@/", "@localhost/", 1))
        } else {
            std::borrow::Cow::Borrowed(url_text)
        };
        let u = url::Url::parse(&text).map_err(|_| bad("not a URL"))?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            return Err(bad("scheme must be postgres://"));
        }
        let decode = percent_decode;
        // The URL's userinfo first; else PGPASSWORD, as libpq would (and it
        // reaches children through the passfile, never their environment).
        let password = u.password().map(|p| Secret::new(decode(p))).or_else(|| {
            std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new)
        });
        let mut params = Vec::new();
        let mut host = if socket_form {
            "/var/run/postgresql".to_owned()
        } else {
            u.host_str().map(str::to_owned).unwrap_or_default()
        };
        let mut port = u.port().unwrap_or(5432);
        let mut user = decode(u.username());
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "host" => host = v.into_owned(),
                "port" => port = v.parse().map_err(|_| bad("port"))?,
                "user" => user = v.into_owned(),
                "password" => return Err(bad("put the password in the userinfo, not the query")),
                _ => params.push((k.into_owned(), v.into_owned())),
            }
        }
        if host.is_empty() {
            host = "localhost".into();
        }
        let database = decode(u.path().trim_start_matches('/'));
        if database.is_empty() {
            return Err(bad("no database name"));
        }
        if user.is_empty() {
            user = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
        }
        Ok(PgTarget {
            host,
            port,
            user,
            database,
            password,
            params,
        })
    }

    /// `user` on `database` over the default Unix socket directory: how
    /// tools inside a PostgreSQL container reach their own server.
    pub fn local_socket(user: &str, database: &str) -> Self {
        PgTarget {
            host: "/var/run/postgresql".into(),
            port: 5432,
            user: user.to_owned(),
            database: database.to_owned(),
            password: None,
            params: Vec::new(),
        }
    }

    /// The environment a tool run inside a container gets (the exec's own,
    /// never argv): libpq's variables, the password as `PGPASSWORD` (there
    /// is no descriptor to hand a passfile through).
    pub fn container_env(&self) -> Vec<(String, String)> {
        let mut env = self.child_env(None);
        env.retain(|(k, _)| k != "PGPASSFILE");
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".into(), p.expose().to_owned()));
        }
        env
    }

    /// The same server, another database.
    pub fn with_database(&self, db: &str) -> Self {
        PgTarget {
            database: db.to_owned(),
            ..self.clone()
        }
    }

    /// A URL for messages: no password.
    pub fn display(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// sqlx options for this target, password included.
    pub fn connect_options(&self) -> PgConnectOptions {
        let base = match &self.password {
            Some(_) => PgConnectOptions::new_without_pgpass(),
            // No password given: libpq's passfile (PGPASSFILE, ~/.pgpass),
            // looked up for this very target, as the children will.
            None => self
                .passfile_lookup_url()
                .and_then(|u| u.as_str().parse().ok())
                .unwrap_or_else(PgConnectOptions::new_without_pgpass),
        };
        let mut o = base
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            .application_name("drctl")
            // Counting rows of a large table is slow by design; not a warning.
            .log_slow_statements(log::LevelFilter::Debug, std::time::Duration::from_secs(60));
        if let Some(p) = &self.password {
            o = o.password(p.expose());
        }
        for (k, v) in &self.params {
            if k == "sslmode" {
                if let Ok(mode) = v.parse() {
                    o = o.ssl_mode(mode);
                }
            }
            if k == "sslrootcert" {
                o = o.ssl_root_cert(v.as_str());
            }
        }
        o
    }

    /// This target as a password-less URL, for sqlx's passfile lookup (None
    /// for a Unix socket directory, which a URL host cannot hold).
    fn passfile_lookup_url(&self) -> Option<url::Url> {
        let mut u = url::Url::parse("postgres://localhost/").ok()?;
        u.set_host(Some(&self.host)).ok()?;
        u.set_port(Some(self.port)).ok()?;
        u.set_username(&self.user).ok()?;
        u.path_segments_mut().ok()?.push(&self.database);
        Some(u)
    }

    /// Connect with sqlx.
    pub async fn connect(&self) -> Result<sqlx::PgConnection> {
        self.connect_options()
            .connect()
            .await
            .map_err(|e| Error::pg(format!("connecting to {}", self.display()), e))
    }

    /// Write a passfile for children (None when there is no password).
    pub fn passfile(&self) -> Result<Option<PassFile>> {
        let Some(p) = &self.password else {
            return Ok(None);
        };
        // O_TMPFILE where the file system has it: never linked anywhere.
        let mut file =
            tempfile::tempfile().map_err(|e| Error::io("creating a libpq password file", e))?;
        // libpq refuses a passfile readable by group or others.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("creating a libpq password file", e))?;
        writeln!(file, "*:*:*:*:{}", escape_pgpass(p.expose()))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io("writing a libpq password file", e))?;
        use std::os::fd::AsRawFd;
        let path = std::path::PathBuf::from(format!("/dev/fd/{}", file.as_raw_fd()));
        Ok(Some(PassFile { _open: file, path }))
    }

    /// libpq environment for a child process: everything but the password.
    pub fn child_env(&self, passfile: Option<&PassFile>) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGHOST".to_owned(), self.host.clone()),
            ("PGPORT".to_owned(), self.port.to_string()),
            ("PGUSER".to_owned(), self.user.clone()),
            ("PGDATABASE".to_owned(), self.database.clone()),
            ("PGAPPNAME".to_owned(), "drctl".to_owned()),
            ("PGCONNECT_TIMEOUT".to_owned(), "30".to_owned()),
        ];
        if let Some(pf) = passfile {
            env.push(("PGPASSFILE".into(), pf.path().display().to_string()));
        } else if let Ok(own) = std::env::var("PGPASSFILE") {
            // The operator's own passfile (no password anywhere else).
            env.push(("PGPASSFILE".into(), own));
        }
        for (k, v) in &self.params {
            let var = match k.as_str() {
                "sslmode" => "PGSSLMODE",
                "sslrootcert" => "PGSSLROOTCERT",
                "sslcert" => "PGSSLCERT",
                "sslkey" => "PGSSLKEY",
                "options" => "PGOPTIONS",
                "connect_timeout" => "PGCONNECT_TIMEOUT",
                _ => continue,
            };
            env.push((var.into(), v.clone()));
        }
        env
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_keeps_password_out_of_display_and_env() {
        let t = PgTarget::parse("postgres://app:p%40ss%3Aw@db.example:6543/appdb?sslmode=require")
            .unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.user.as_str(),
                t.database.as_str()
            ),
            ("db.example", 6543, "app", "appdb")
        );
        assert!(!t.display().contains("p@ss"));
        let pf = t.passfile().unwrap().unwrap();
        let env = t.child_env(Some(&pf));
        assert!(env.iter().all(|(_, v)| !v.contains("p@ss")));
        assert!(env.contains(&("PGSSLMODE".into(), "require".into())));
        let body = std::fs::read_to_string(pf.path()).unwrap();
        assert_eq!(body, "*:*:*:*:p@ss\\:w\n");
        assert!(format!("{t:?}").contains("***"));
    }
}
