//! Finding the PostgreSQL client tools and checking their versions.
//! pg_dump refuses to dump a newer server; we say so before starting, with
//! the package to install, instead of after a failed half-dump.

use crate::base::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where the PostgreSQL client tools are found: a directory on this host
/// (or `$PATH`), or the server's own container.
#[derive(Debug, Clone)]
pub struct PgTools {
    bindir: Option<PathBuf>,
    container: Option<Container>,
    /// The job's `nice` / `io_priority` for tools started on this host.
    priority: crate::base::child_env::Priority,
}

/// A tool's environment and the passfile it names (held while it runs).
pub type ToolEnv = (Vec<(String, String)>, Option<super::PassFile>);

/// The container a job's server runs in, as the Engine API reaches it.
#[derive(Debug, Clone)]
pub struct Container {
    /// The engine.
    pub docker: bollard::Docker,
    /// The container's name.
    pub name: String,
}

/// A client tool's version, as it reports it.
#[derive(Debug, Clone)]
pub struct ToolVersion {
    /// Major version (16 for 16.4): what must be at least the server's.
    pub major: u32,
    /// The whole `--version` line, for the manifest.
    pub text: String,
}

impl PgTools {
    /// `configured` wins; else the newest `/usr/lib/postgresql/*/bin`
    /// (Debian installs several side by side); else `$PATH`.
    pub fn locate(configured: Option<&Path>) -> Self {
        if let Some(d) = configured {
            return PgTools {
                bindir: Some(d.to_path_buf()),
                container: None,
                priority: crate::base::child_env::Priority::default(),
            };
        }
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(std::result::Result::ok)
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("pg_dump").is_file().then_some((v, bin))
            })
            .max_by_key(|(v, _)| *v)
            .map(|(_, p)| p);
        PgTools {
            bindir: newest,
            container: None,
            priority: crate::base::child_env::Priority::default(),
        }
    }

    /// The job's tools: in its container (`container`, or the one running
    /// container of its `compose` service), else on this host.
    pub async fn for_job(job: &crate::config::PostgresJob) -> Result<Self> {
        if !job.in_container() {
            return Ok(Self::host_for(job));
        }
        let docker = crate::services::docker::connect(
            job.docker_socket.as_deref(),
            std::time::Duration::from_secs(120),
        )?;
        let name = match (&job.container, &job.compose) {
            (Some(c), _) => c.clone(),
            (None, Some(c)) => {
                crate::services::docker::running_service_container(&docker, &c.project, &c.service)
                    .await?
            }
            (None, None) => unreachable!("in_container"),
        };
        Ok(PgTools {
            bindir: None,
            container: Some(Container { docker, name }),
            priority: crate::base::child_env::Priority::default(),
        })
    }

    /// The job's tools on this host (its `pg_bindir`, else the newest
    /// installed), at its `nice` and `io_priority`.
    pub fn host_for(job: &crate::config::PostgresJob) -> Self {
        Self::locate(job.pg_bindir.as_deref()).with_priority(job)
    }

    /// These tools at the job's `nice` and `io_priority` (host tools only:
    /// the config refuses them for a job in a container).
    pub fn with_priority(mut self, job: &crate::config::PostgresJob) -> Self {
        self.priority = crate::base::child_env::Priority {
            nice: job.nice,
            io: job.io_priority,
        };
        self
    }

    /// The container the tools run in, if any.
    pub fn container(&self) -> Option<&Container> {
        self.container.as_ref()
    }

    /// The environment `tool`s get to reach `target`: on the host libpq's
    /// variables and a passfile (held by the returned value while the tool
    /// runs); in a container the exec's own environment.
    pub fn env_for(&self, target: &super::PgTarget) -> Result<ToolEnv> {
        if self.container.is_some() {
            return Ok((target.container_env(), None));
        }
        let passfile = target.passfile()?;
        let env = target.child_env(passfile.as_ref());
        Ok((env, passfile))
    }

    /// Start `tool args` where the tools are.
    pub async fn spawn(
        &self,
        tool: &str,
        args: &[String],
        env: &[(String, String)],
        pipe_stdin: bool,
        pipe_stdout: bool,
    ) -> Result<super::ToolChild> {
        match &self.container {
            Some(c) => {
                super::child::spawn_in_container(
                    &c.docker,
                    &c.name,
                    tool,
                    args,
                    env,
                    pipe_stdin,
                    pipe_stdout,
                )
                .await
            }
            None => super::child::spawn_tool_at(
                &self.path(tool),
                args,
                env,
                (pipe_stdin, pipe_stdout),
                self.priority,
            ),
        }
    }

    /// The path of `tool` in the chosen directory (or the bare name: `$PATH`).
    pub fn path(&self, tool: &str) -> PathBuf {
        match &self.bindir {
            Some(d) => d.join(tool),
            None => PathBuf::from(tool),
        }
    }

    /// Ask `tool --version`.
    pub async fn version(&self, tool: &str) -> Result<ToolVersion> {
        if let Some(c) = &self.container {
            let mut child = self
                .spawn(tool, &["--version".into()], &[], false, true)
                .await?;
            let mut text = String::new();
            if let Some(mut out) = child.take_stdout() {
                use tokio::io::AsyncReadExt;
                let _ = out.read_to_string(&mut text).await;
            }
            child.finish().await.map_err(|e| {
                Error::ToolVersion(format!("cannot run {tool} in container {}: {e}", c.name))
            })?;
            let text = text.trim().to_owned();
            let major = parse_major(&text).ok_or_else(|| {
                Error::ToolVersion(format!("cannot read the version of {tool} from {text:?}"))
            })?;
            return Ok(ToolVersion { major, text });
        }
        let mut cmd = tokio::process::Command::new(self.path(tool));
        crate::base::child_env::restrict(&mut cmd);
        let out = cmd
            .arg("--version")
            .output()
            .await
            .map_err(|e| Error::ToolVersion(format!("cannot run {}: {e} (install the PostgreSQL client tools, e.g. postgresql-client, or set pg_bindir)", self.path(tool).display())))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let major = parse_major(&text).ok_or_else(|| {
            Error::ToolVersion(format!("cannot read the version of {tool} from {text:?}"))
        })?;
        Ok(ToolVersion { major, text })
    }

    /// Refuse early when the local `tool` is older than the server.
    pub async fn check_against_server(
        &self,
        tool: &str,
        server_version_num: i32,
    ) -> Result<ToolVersion> {
        let v = self.version(tool).await?;
        let server_major = (server_version_num / 10000) as u32;
        if v.major < server_major {
            return Err(Error::ToolVersion(format!(
                "{tool} {} cannot dump PostgreSQL {server_major} (server is newer than the client): install postgresql-client-{server_major} or set pg_bindir to its bin directory",
                v.major
            )));
        }
        Ok(v)
    }
}

/// "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> 15
fn parse_major(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1).unwrap_or(text);
    after
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_versions() {
        assert_eq!(
            super::parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(super::parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(super::parse_major("pg_restore (PostgreSQL) 17devel"), None);
    }
}
