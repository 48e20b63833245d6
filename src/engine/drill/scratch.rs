//! Where a drill restores: a fresh database on a server, or a throwaway
//! local cluster. Both are always removed, and leftovers of a drill that
//! died are found and removed by the next one.

use crate::base::error::{Error, Result};
use crate::config::{DrillTarget, PostgresJob};
use crate::services::pg::{quote_ident, quote_literal};
use crate::services::pg::{PgTarget, PgTools, SqlSession};
use std::path::{Path, PathBuf};

/// Scratch databases are named `drctl_drill_<job>_<YYYYmmddHHMMSS>`.
pub fn prefix(job: &str) -> String {
    let clean = crate::base::ids::pg_name_part(job, 30);
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
    /// A database on the job's own server, through the job's tools (its
    /// container's, for a container job).
    JobServer {
        tools: PgTools,
        admin: PgTarget,
        database: String,
    },
}

impl Scratch {
    /// What the drill's restore writes to: a `postgres://` URL (with the
    /// password, if any) as `to`, or a database of the job's own server.
    pub fn restore_target(&self) -> (Option<String>, Option<String>) {
        match self {
            Scratch::JobServer { database, .. } => (None, Some(database.clone())),
            _ => (Some(self.url()), None),
        }
    }

    /// The tools that reach the scratch database.
    pub fn tools(&self) -> PgTools {
        match self {
            Scratch::Cluster { tools, .. } | Scratch::JobServer { tools, .. } => tools.clone(),
            Scratch::Server { .. } => PgTools::locate(None),
        }
    }

    /// The `postgres://` URL restore writes to (with the password, if any).
    pub fn url(&self) -> String {
        match self {
            Scratch::JobServer {
                admin, database, ..
            } => admin.with_database(database).display(),
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
            Scratch::JobServer {
                tools,
                admin,
                database,
            } => match tools.container() {
                Some(c) => format!(
                    "{} in container {} (the job's own server)",
                    admin.with_database(database).display(),
                    c.name
                ),
                None => format!(
                    "{} (the job's own server)",
                    admin.with_database(database).display()
                ),
            },
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
        match self {
            Scratch::JobServer {
                admin, database, ..
            } => Ok(admin.with_database(database)),
            _ => PgTarget::parse(&self.url()),
        }
    }

    /// Drop the database (server) or stop and delete the cluster.
    pub async fn remove(&self) -> Result<()> {
        match self {
            Scratch::Server {
                admin, database, ..
            } => drop_database(&PgTools::locate(None), admin, database).await,
            Scratch::JobServer {
                tools,
                admin,
                database,
            } => drop_database(tools, admin, database).await,
            Scratch::Cluster { dir, tools, .. } => remove_cluster(tools, dir).await,
        }
    }
}

async fn drop_database(tools: &PgTools, admin: &PgTarget, database: &str) -> Result<()> {
    let mut conn = SqlSession::open(tools, admin).await?;
    conn.execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(database)
    ))
    .await?;
    let _ = conn.close().await;
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
    if target.job_server {
        let tools = PgTools::for_job(pg_job).await?;
        let admin = crate::services::pg::job_target(pg_job)?.with_database(&pg_job.maintenance_db);
        let swept = sweep_databases(&tools, &admin, job).await?;
        return Ok((
            Scratch::JobServer {
                tools,
                admin,
                database,
            },
            swept,
        ));
    }
    if target.ephemeral {
        let tools = PgTools::host_for(pg_job);
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
    let swept = sweep_databases(&PgTools::locate(None), &admin, job).await?;
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
async fn sweep_databases(tools: &PgTools, admin: &PgTarget, job: &str) -> Result<Vec<String>> {
    let mut conn = SqlSession::open(tools, admin).await?;
    let pattern = format!("{}%", prefix(job).replace('_', "\\_"));
    let names: Vec<String> = conn
        .rows(&format!(
            "SELECT datname::text FROM pg_database d WHERE datname LIKE {} AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            quote_literal(&pattern)
        ))
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    for n in &names {
        tracing::warn!(database = %n, "removing a scratch database a failed drill left behind");
        conn.execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(n)
        ))
        .await?;
    }
    let _ = conn.close().await;
    Ok(names)
}

use crate::services::pg::server::{run, server_tool};

/// As root, give a drill's directory (`STATE/drills/NAME`) and its parent
/// to the `postgres` user, and let it pass through the state directory
/// (0711: never list or read it); a no-op otherwise.
pub(super) fn hand_to_postgres(dir: &Path) -> Result<()> {
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
        // The state directory (`STATE/drills/NAME`) is 0700: postgres may
        // pass through it (0711), never list or read it.
        if let Some(state) = dir.parent().and_then(Path::parent) {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(state) {
                let mode = m.permissions().mode() & 0o7777;
                let _ =
                    std::fs::set_permissions(state, std::fs::Permissions::from_mode(mode | 0o011));
            }
        }
    }
    Ok(())
}

async fn start_cluster(tools: &PgTools, dir: &Path) -> Result<u16> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    hand_to_postgres(dir)?;
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

pub(super) async fn remove_cluster(tools: &PgTools, dir: &Path) -> Result<()> {
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
