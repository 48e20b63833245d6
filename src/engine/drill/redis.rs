//! A drill of a `redis` job: the snapshot is restored into a scratch
//! directory (`restore::run`, as an operator's restore), a throwaway
//! `redis-server` on a free loopback port loads it, and the key count of
//! every database must equal the manifest's (`INFO keyspace` taken with
//! the snapshot). The server and the directory are always removed.

use super::checks::CheckResult;
use super::{DrillRecord, Options, Phase, PhaseResult};
use crate::base::error::{Error, Result};
use crate::config::LoadedConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The throwaway server and its directory.
pub struct Scratch {
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Scratch {
    /// Where it lives, for the record.
    pub fn display(&self) -> String {
        self.dir.display().to_string()
    }

    /// Stop the server and remove the directory.
    pub async fn remove(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.dir.display()), e)),
        }
    }
}

/// Key counts per database: the manifest's against the restored server's,
/// one check each (pure, unit-tested).
pub fn compare(
    expected: &std::collections::BTreeMap<String, u64>,
    got: &std::collections::BTreeMap<String, u64>,
) -> Vec<CheckResult> {
    let mut dbs: Vec<&String> = expected.keys().chain(got.keys()).collect();
    dbs.sort();
    dbs.dedup();
    dbs.into_iter()
        .map(|db| {
            let want = expected.get(db).copied().unwrap_or(0);
            let have = got.get(db).copied().unwrap_or(0);
            CheckResult {
                kind: "keys".into(),
                name: db.clone(),
                expected: format!("= {want}"),
                got: Some(have.to_string()),
                ok: want == have,
            }
        })
        .collect()
}

/// The phases of a Redis drill (see the module documentation).
pub async fn phases(
    cfg: &LoadedConfig,
    name: &str,
    d: &crate::config::DrillConfig,
    opts: &Options,
    rec: &mut DrillRecord,
    scratch_out: &mut Option<Scratch>,
) -> PhaseResult {
    let at = |phase: &'static str| move |e: Error| (phase, e);
    let dir = cfg
        .config
        .state_dir
        .join("tmp")
        .join(format!("drill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    crate::base::private_fs::dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
        .map_err(at("fetch"))?;
    *scratch_out = Some(Scratch {
        dir: dir.clone(),
        child: None,
    });
    rec.target = Some(dir.display().to_string());
    let req = crate::engine::restore::RestoreRequest {
        to: Some(dir.display().to_string()),
        ..super::request(d, opts)
    };
    opts.progress.set_phase("fetch", 0);
    let m = super::pick(cfg, &req, rec).await.map_err(at("fetch"))?;
    let req = crate::engine::restore::RestoreRequest {
        id: Some(m.id.to_string()),
        ..req
    };
    let report = crate::engine::restore::run(cfg, &req, opts.progress.clone())
        .await
        .map_err(at("fetch"))?;
    rec.repository = Some(report.repository.clone());
    for (phase, seconds) in [
        ("fetch", report.fetch_seconds),
        ("restore", report.restore_seconds),
    ] {
        rec.phases.push(Phase {
            name: phase.into(),
            seconds,
        });
    }
    let Some(source) = m.redis.as_ref() else {
        return Err((
            "verify",
            Error::Integrity {
                artifact: m.id.to_string(),
                message: "the manifest records no Redis source".into(),
            },
        ));
    };
    opts.progress.set_phase("verify", 0);
    let t = Instant::now();
    let port = free_port().map_err(at("verify"))?;
    let child = start_server(&dir, port).map_err(at("verify"))?;
    if let Some(s) = scratch_out.as_mut() {
        s.child = Some(child);
    }
    let got = crate::engine::restore::cancellable(
        &opts.cancel,
        "verifying the drill",
        loaded_keyspace(port, d.check_timeout),
    )
    .await;
    rec.phases.push(Phase {
        name: "verify".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    let got = got.map_err(at("verify"))?;
    rec.checks = compare(&source.keyspace, &got);
    match super::failed_checks(&rec.checks) {
        Some(e) => Err(("verify", e)),
        None => Ok(()),
    }
}

/// A throwaway `redis-server` on `port` loading `dir/dump.rdb`, saving
/// nothing, killed when dropped.
fn start_server(dir: &std::path::Path, port: u16) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--dbfilename",
        crate::engine::restore::redis::DUMP,
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true);
    // No secret of drctl's reaches the child.
    crate::base::child_env::restrict(&mut cmd);
    cmd.spawn()
        .map_err(|e| {
            Error::io(
                "starting a throwaway redis-server (the drill needs the redis-server binary: apt install redis-server)",
                e,
            )
        })
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port for the throwaway redis-server", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port for the throwaway redis-server", e))
}

/// `INFO keyspace` of the throwaway server once it has loaded the file
/// (until then data commands answer LOADING, or it is not listening yet).
async fn loaded_keyspace(
    port: u16,
    limit: Duration,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = async {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
            let mut con = client.get_multiplexed_async_connection().await?;
            // INFO is served while the file is loading (and has been seen
            // to say `loading:0` then); DBSIZE answers LOADING until the
            // load is done, so it goes first.
            redis::cmd("DBSIZE").query_async::<u64>(&mut con).await?;
            redis::cmd("INFO")
                .arg("keyspace")
                .query_async::<String>(&mut con)
                .await
        };
        let last = match attempt.await {
            Ok(info) => return Ok(crate::engine::jobs::redis::keyspace(&info)),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "the throwaway redis-server did not load the snapshot within {}: {last}",
                humantime::format_duration(limit)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_counts_must_match_per_database() {
        let want: std::collections::BTreeMap<String, u64> =
            [("db0".into(), 10), ("db2".into(), 3)].into();
        let got: std::collections::BTreeMap<String, u64> =
            [("db0".into(), 10), ("db1".into(), 1)].into();
        let c = compare(&want, &got);
        let by = |db: &str| c.iter().find(|r| r.name == db).unwrap();
        assert!(by("db0").ok);
        assert!(!by("db1").ok, "a database the backup did not have");
        assert!(!by("db2").ok, "a database that went missing");
        assert_eq!(by("db2").got.as_deref(), Some("0"));
        assert!(compare(&want, &want).iter().all(|r| r.ok));
    }
}
