//! `drctl doctor`: one command an operator runs after install and during an
//! incident. Each finding is a line (`ok`, `warn` or `fail`) with the fix.
//!
//! It probes for real (connects to each database, writes, reads back and
//! removes an object in each repository) but changes nothing else: no
//! message is sent unless asked (`--send-test`, in the CLI), no backup is
//! read beyond its manifest.
//!
//! The verdicts are pure functions (`skew_level`, `space_level`,
//! `state_dir_level`) with unit tests; `run` gathers the facts.

use crate::base::ids::JobName;
use crate::config::LoadedConfig;
use crate::services::repository::Repository;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but probably not as meant.
    Warn,
    /// Broken: a backup, restore or alert would fail.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked: `config`, `state`, `database`, `repository`,
    /// `alerts`, `scratch`, `systemd`.
    pub check: String,
    /// Which one (a job, a repository, a path).
    pub subject: String,
    /// The verdict.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: &str, subject: &str, level: Level, detail: String) -> Self {
        Finding {
            check: check.into(),
            subject: subject.into(),
            level,
            detail,
            fix: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The store's clock against ours: a host clock minutes off reorders
/// backups (ids carry the writer's clock) and skews RPO ages.
pub fn skew_level(skew: Duration) -> Level {
    if skew > Duration::from_secs(600) {
        Level::Fail
    } else if skew > Duration::from_secs(60) {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// Room to restore the newest backup: its raw size must fit in the scratch
/// space (a restore stages the dump there before pg_restore reads it),
/// with a tenth to spare.
pub fn space_level(free: u64, needed: u64) -> Level {
    if free < needed {
        Level::Fail
    } else if free < needed + needed / 10 {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// The state directory: owned by the user drctl runs as, and private.
pub fn state_dir_level(owner: u32, me: u32, mode: u32) -> (Level, Option<String>) {
    if owner != me {
        return (
            Level::Fail,
            Some("run drctl as the directory's owner (sudo -u drctl drctl ...)".into()),
        );
    }
    if mode & 0o077 != 0 {
        return (
            Level::Warn,
            Some(format!(
                "chmod 700 the directory (it is {mode:o}: run history and errors are readable by others)"
            )),
        );
    }
    (Level::Ok, None)
}

/// Every finding, in a stable order: config, state, databases,
/// repositories, scratch space, alerts, systemd.
pub async fn run(cfg: &LoadedConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    config(cfg, &mut out);
    state_dir(&cfg.config.state_dir, &mut out);
    for (name, job) in &cfg.config.jobs {
        if let crate::config::Kind::Postgres(pg) = &job.kind {
            out.push(match crate::services::pg::preflight(pg).await {
                Ok(p) => {
                    let tools: Vec<String> =
                        p.tools.iter().map(|(t, v)| format!("{t} {v}")).collect();
                    Finding::new(
                        "database",
                        name,
                        Level::Ok,
                        format!(
                            "PostgreSQL {} reachable; {}",
                            p.server_major,
                            tools.join(", ")
                        ),
                    )
                }
                Err(e) => Finding::new("database", name, Level::Fail, e.to_string()).fix(
                    "check the URL, the password (drctl.env) and pg_hba.conf; for a client older than the server install postgresql-client-N, set pg_bindir, or use container =",
                ),
            });
        }
    }
    for name in cfg.config.repositories.keys() {
        repository(cfg, name, &mut out).await;
    }
    scratch(cfg, &mut out).await;
    alerts(cfg, &mut out);
    systemd(&mut out).await;
    out
}

fn config(cfg: &LoadedConfig, out: &mut Vec<Finding>) {
    let file = cfg.main_file();
    out.push(Finding::new(
        "config",
        &file,
        Level::Ok,
        format!(
            "valid: {} jobs, {} repositories, {} alert channels",
            cfg.config.jobs.len(),
            cfg.config.repositories.len(),
            cfg.config.alerts.channels.len()
        ),
    ));
    if cfg.files.is_empty() {
        out.push(
            Finding::new(
                "config",
                &file,
                Level::Warn,
                "no config file: the embedded defaults are in use".into(),
            )
            .fix("write /etc/drctl/drctl.toml (the package installs an example)"),
        );
    }
    for e in cfg.unresolved_refs() {
        out.push(
            Finding::new("config", &file, Level::Fail, e.to_string())
                .fix("set the variable in /etc/drctl/drctl.env (the units read it) or fix the *_file path"),
        );
    }
}

fn state_dir(dir: &Path, out: &mut Vec<Finding>) {
    use std::os::unix::fs::MetadataExt;
    let subject = dir.display().to_string();
    match std::fs::metadata(dir) {
        Ok(m) => {
            let me = nix::unistd::geteuid().as_raw();
            let (level, fix) = state_dir_level(m.uid(), me, m.mode() & 0o777);
            let mut f = Finding::new(
                "state",
                &subject,
                level,
                format!("owner uid {}, mode {:o}", m.uid(), m.mode() & 0o777),
            );
            f.fix = fix;
            out.push(f);
        }
        Err(e) => out.push(
            Finding::new(
                "state",
                &subject,
                Level::Warn,
                format!("not there yet: {e}"),
            )
            .fix(
                "the first run creates it; under the package it is /var/lib/drctl, owned by drctl",
            ),
        ),
    }
}

/// Write, read back, list and remove a probe object: proves the
/// credentials, the permissions and (through the listing's time) the
/// store's clock; with Object Lock, that the store really applied it.
async fn repository(cfg: &LoadedConfig, name: &str, out: &mut Vec<Finding>) {
    let Ok(rc) = cfg.repository(name) else { return };
    let repo = match Repository::open(name, rc).await {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::new("repository", name, Level::Fail, e.to_string()));
            return;
        }
    };
    let key = format!(
        "_doctor/{}-{:08x}.probe",
        crate::base::host::name(),
        rand::random::<u32>()
    );
    let body = format!("drctl doctor probe {}", chrono::Utc::now().to_rfc3339()).into_bytes();
    let backend = repo.backend();
    if let Err(e) = backend.put_if_absent(&key, body.clone()).await {
        out.push(
            Finding::new("repository", name, Level::Fail, format!("cannot write: {e}"))
                .fix("check the credentials and the write permission (s3:PutObject, or the directory's owner)"),
        );
        return;
    }
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut r = backend.get(&key).await?;
        let mut got = Vec::new();
        r.read_to_end(&mut got)
            .await
            .map_err(|e| crate::Error::io("reading the probe", e))?;
        Ok::<_, crate::Error>(got)
    }
    .await;
    let listed = backend.list("_doctor/").await;
    let locked = matches!(rc, crate::config::RepositoryConfig::S3(s) if s.object_lock.is_some());
    let lock = if locked {
        Some(backend.check_lock(&key).await)
    } else {
        None
    };
    // A locked probe cannot be deleted before its retention ends: it stays
    // (a few bytes) and prune's orphan sweep removes it later.
    let _ = backend.delete(&key).await;
    match read {
        Ok(got) if got == body => out.push(Finding::new(
            "repository",
            name,
            Level::Ok,
            format!("{}: wrote, read back and removed a probe", repo.location()),
        )),
        Ok(_) => out.push(Finding::new(
            "repository",
            name,
            Level::Fail,
            "the probe read back different bytes".into(),
        )),
        Err(e) => out.push(
            Finding::new(
                "repository",
                name,
                Level::Fail,
                format!("cannot read back: {e}"),
            )
            .fix("check the read permission (s3:GetObject)"),
        ),
    }
    if let Some(modified) = listed
        .ok()
        .and_then(|l| l.into_iter().find(|o| o.key.ends_with(&key)))
        .and_then(|o| o.modified)
    {
        out.push(clock(name, modified));
    }
    match lock {
        Some(Ok(())) => out.push(Finding::new(
            "object_lock",
            name,
            Level::Ok,
            "the store applied the configured retention to the probe".into(),
        )),
        Some(Err(e)) => out.push(
            Finding::new("object_lock", name, Level::Fail, e.to_string()).fix(
                "enable Object Lock on the bucket (at creation) or use a store that honours it",
            ),
        ),
        None => {}
    }
}

/// The store's time for the probe against ours.
fn clock(name: &str, modified: chrono::DateTime<chrono::Utc>) -> Finding {
    let skew = (chrono::Utc::now() - modified)
        .abs()
        .to_std()
        .unwrap_or_default();
    let level = skew_level(skew);
    let f = Finding::new(
        "clock",
        name,
        level,
        format!(
            "this host's clock and the store's differ by {}",
            humantime::format_duration(Duration::from_secs(skew.as_secs()))
        ),
    );
    if level == Level::Ok {
        f
    } else {
        f.fix("synchronise the host clock (systemd-timesyncd, chrony): backup ids and RPO ages depend on it")
    }
}

/// Room under the restore scratch directory for the newest backup of each
/// job (its raw size, from its manifest).
async fn scratch(cfg: &LoadedConfig, out: &mut Vec<Finding>) {
    let dir = &cfg.config.state_dir;
    let probe = std::iter::successors(Some(dir.as_path()), |p| p.parent()).find(|p| p.exists());
    let Some(free) = probe
        .and_then(|p| nix::sys::statvfs::statvfs(p).ok())
        .map(|s| s.blocks_available() * s.fragment_size())
    else {
        return;
    };
    for (name, job) in &cfg.config.jobs {
        let Some(repo_name) = job.repository() else {
            continue;
        };
        let (Ok(rc), Ok(jn)) = (cfg.repository(repo_name), JobName::parse(name)) else {
            continue;
        };
        let Ok(repo) = Repository::open(repo_name, rc).await else {
            continue;
        };
        let Ok(newest) = repo.latest(&jn).await else {
            continue;
        };
        let Ok(m) = repo.read_manifest(&jn, &newest.id).await else {
            continue;
        };
        let needed: u64 = m.artifacts.iter().map(|a| a.raw_bytes).sum();
        let level = space_level(free, needed);
        let mut f = Finding::new(
            "scratch",
            name,
            level,
            format!(
                "newest backup {} needs {} raw; {} free under {}",
                m.id,
                bytesize::ByteSize(needed).display().iec(),
                bytesize::ByteSize(free).display().iec(),
                dir.display()
            ),
        );
        if level != Level::Ok {
            f = f.fix("free space there, or restore with --tmp-dir on a larger file system");
        }
        out.push(f);
    }
}

fn alerts(cfg: &LoadedConfig, out: &mut Vec<Finding>) {
    let warnings = cfg.warnings();
    if warnings.is_empty() {
        let names: Vec<&str> = cfg
            .config
            .alerts
            .channels
            .keys()
            .map(String::as_str)
            .collect();
        out.push(Finding::new(
            "alerts",
            "channels",
            Level::Ok,
            format!(
                "{} configured (nothing sent: --send-test sends a test message)",
                names.join(", ")
            ),
        ));
    }
    for (key, message) in warnings {
        out.push(Finding::new("alerts", &key, Level::Warn, message));
    }
}

async fn systemd(out: &mut Vec<Finding>) {
    if !Path::new("/run/systemd/system").is_dir() {
        out.push(Finding::new(
            "systemd",
            "drctl.service",
            Level::Warn,
            "systemd is not running on this host: nothing schedules the jobs unless `drctl daemon` runs another way".into(),
        ));
        return;
    }
    let state = |verb: &'static str| async move {
        tokio::process::Command::new("systemctl")
            .args([verb, "drctl.service"])
            .output()
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let (active, enabled) = (state("is-active").await, state("is-enabled").await);
    let level = if active == "active" && enabled == "enabled" {
        Level::Ok
    } else {
        Level::Fail
    };
    let mut f = Finding::new(
        "systemd",
        "drctl.service",
        level,
        format!("{active}, {enabled}"),
    );
    if level != Level::Ok {
        f = f.fix("systemctl enable --now drctl");
    }
    out.push(f);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(skew_level(Duration::from_secs(5)), Level::Ok);
        assert_eq!(skew_level(Duration::from_secs(120)), Level::Warn);
        assert_eq!(skew_level(Duration::from_secs(900)), Level::Fail);
        assert_eq!(space_level(100, 200), Level::Fail);
        assert_eq!(space_level(105, 100), Level::Warn);
        assert_eq!(space_level(1000, 100), Level::Ok);
        assert_eq!(state_dir_level(998, 998, 0o700).0, Level::Ok);
        assert_eq!(state_dir_level(998, 998, 0o755).0, Level::Warn);
        let (l, fix) = state_dir_level(998, 0, 0o700);
        assert_eq!(l, Level::Fail);
        assert!(fix.unwrap().contains("sudo -u drctl"));
    }
}
