//! Where a drill restores: a fresh database on a server, or a throwaway
//! local cluster. Both are always removed, and leftovers of a drill that
//! died are found and removed by the next one.

use crate::base::error::{Error, Result};
use crate::config::{DrillTarget, PostgresJob};
use crate::services::pg::quote_ident;
use crate::services::pg::{PgTarget, PgTools};
use std::path::{Path, PathBuf};

/// Scratch databases are named `drctl_drill_<job>_<YYYYmmddHHMMSS>`.
pub fn prefix(job: &str) -> String {
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("drctl_drill_{clean}_")
}

/// A place to restore into.
pub enum Scratch {
    Server {
        /// The server's URL (its own database is the maintenance one).
        server: url::Url,
        admin: PgTarget,
        database: String,
    },
    Cluster {
        dir: PathBuf,
        tools: PgTools,
        port: u16,
        database: String,
    },
}

impl Scratch {
    /// The `postgres://` URL restore writes to (with the password, if any).
    pub fn url(&self) -> String {
        match self {
            Scratch::Server {
                server, database, ..
            } => {
                let mut u = server.clone();
                u.set_path(&format!("/{database}"));
                u.to_string()
            }
            Scratch::Cluster { port, database, .. } => {
                format!("postgres://postgres@127.0.0.1:{port}/{database}")
            }
        }
    }

    pub fn display(&self) -> String {
        match self {
            Scratch::Server {
                admin, database, ..
            } => admin.with_database(database).display(),
            Scratch::Cluster {
                dir,
                port,
                database,
                ..
            } => format!(
                "ephemeral cluster {} (127.0.0.1:{port}) database {database}",
                dir.display()
            ),
        }
    }

    pub fn target(&self) -> Result<PgTarget> {
        PgTarget::parse(&self.url())
    }

    /// Drop the database (server) or stop and delete the cluster.
    pub async fn remove(&self) -> Result<()> {
        match self {
            Scratch::Server {
                admin, database, ..
            } => drop_database(admin, database).await,
            Scratch::Cluster { dir, tools, .. } => remove_cluster(tools, dir).await,
        }
    }
}

async fn drop_database(admin: &PgTarget, database: &str) -> Result<()> {
    let mut conn = admin.connect().await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(database)
    ))
    .execute(&mut conn)
    .await
    .map_err(|e| Error::pg(format!("dropping the scratch database {database}"), e))?;
    Ok(())
}

/// Prepare the scratch place for a drill of `job`; returns it and what
/// leftovers of earlier drills were removed.
pub async fn prepare(
    target: &DrillTarget,
    job: &str,
    pg_job: &PostgresJob,
    state_dir: &Path,
) -> Result<(Scratch, Vec<String>)> {
    let database = format!(
        "{}{}",
        prefix(job),
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    if target.ephemeral {
        let tools = PgTools::locate(pg_job.pg_bindir.as_deref());
        let root = state_dir.join("drills");
        let swept = sweep_clusters(&tools, &root, job).await;
        let dir = root.join(&database);
        let port = start_cluster(&tools, &dir).await?;
        return Ok((
            Scratch::Cluster {
                dir,
                tools,
                port,
                database,
            },
            swept,
        ));
    }
    let url_text = crate::config::resolve_secret(
        target.server_url.as_deref(),
        target.server_url_env.as_deref(),
        target.server_url_file.as_deref(),
        "drill target server_url",
    )?;
    crate::base::secret::register_url_password(url_text.expose());
    let admin = PgTarget::parse(url_text.expose())?;
    let server = url::Url::parse(url_text.expose())
        .map_err(|e| Error::Other(format!("drill target server_url: {e}")))?;
    let swept = sweep_databases(&admin, job).await?;
    Ok((
        Scratch::Server {
            server,
            admin,
            database,
        },
        swept,
    ))
}

/// Drop scratch databases of `job` that no session uses (a drill that died).
async fn sweep_databases(admin: &PgTarget, job: &str) -> Result<Vec<String>> {
    let mut conn = admin.connect().await?;
    let pattern = format!("{}%", prefix(job).replace('_', "\\_"));
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database d WHERE datname LIKE $1 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .bind(&pattern)
    .fetch_all(&mut conn)
    .await
    .map_err(|e| Error::pg("listing leftover drill databases", e))?;
    for n in &names {
        tracing::warn!(database = %n, "removing a scratch database a failed drill left behind");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(n)
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| Error::pg(format!("dropping leftover {n}"), e))?;
    }
    Ok(names)
}

/// Run a PostgreSQL server tool as the `postgres` user when we are root
/// (initdb refuses root), as ourselves otherwise.
fn server_tool(tools: &PgTools, tool: &str) -> tokio::process::Command {
    let path = tools.path(tool);
    let mut c = if nix::unistd::geteuid().is_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        tokio::process::Command::new(path)
    };
    crate::base::child_env::restrict(&mut c);
    c
}

async fn run(mut c: tokio::process::Command, what: &str) -> Result<()> {
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(what.to_owned(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool: what.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

async fn start_cluster(tools: &PgTools, dir: &Path) -> Result<u16> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    if nix::unistd::geteuid().is_root() {
        let pg = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::Other("an ephemeral drill cluster run as root needs a postgres user".into())
            })?;
        for d in [dir.parent().unwrap_or(dir), dir] {
            let _ = nix::unistd::chown(d, Some(pg.uid), Some(pg.gid));
        }
    }
    let data = dir.join("data");
    let mut init = server_tool(tools, "initdb");
    init.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
    run(init, "initdb").await?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("finding a free port", e))?;
        l.local_addr()
            .map_err(|e| Error::io("finding a free port", e))?
            .port()
    };
    let opts = format!(
        "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        dir.display()
    );
    let mut start = server_tool(tools, "pg_ctl");
    start
        .args(["start", "-w", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-o", &opts]);
    run(start, "pg_ctl start").await?;
    Ok(port)
}

async fn remove_cluster(tools: &PgTools, dir: &Path) -> Result<()> {
    let data = dir.join("data");
    if data.join("postmaster.pid").exists() {
        let mut stop = server_tool(tools, "pg_ctl");
        stop.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data);
        if let Err(e) = run(stop, "pg_ctl stop").await {
            tracing::warn!(error = %e, "stopping the drill cluster");
        }
    }
    tokio::fs::remove_dir_all(dir)
        .await
        .map_err(|e| Error::io(format!("removing {}", dir.display()), e))
}

/// Stop and delete clusters of `job` that earlier drills left behind.
async fn sweep_clusters(tools: &PgTools, root: &Path, job: &str) -> Vec<String> {
    let mut swept = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return swept;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix(job)) {
            tracing::warn!(cluster = %e.path().display(), "removing a drill cluster a failed drill left behind");
            if remove_cluster(tools, &e.path()).await.is_ok() {
                swept.push(name);
            }
        }
    }
    swept
}
