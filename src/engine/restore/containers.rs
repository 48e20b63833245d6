//! `[jobs.X.restore] stop`: the runbook's `docker compose stop api` ...
//! `start api`, through the Docker Engine API. Every entry is resolved
//! first (a container name, or a Compose service's containers by label):
//! one that does not exist fails the restore before anything is stopped.
//! Only running containers are stopped, and exactly those are started
//! again, whatever happened in between (a restore that fails brings the
//! application back on the untouched old database). A started container
//! with a healthcheck must report `healthy` within the hooks' `timeout`.

use super::hooks::HookRun;
use crate::base::error::{Error, Result};
use crate::config::{ContainerRef, RestoreHooks};
use crate::services::docker;
use std::time::Instant;

/// Containers this restore stopped, to start again.
pub struct Stopped {
    docker: bollard::Docker,
    names: Vec<String>,
}

/// The container names `refs` mean now, in order, each once.
async fn resolve(d: &bollard::Docker, refs: &[ContainerRef]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in refs {
        let names = match r {
            ContainerRef::Name(n) => {
                docker::state(d, n).await?;
                vec![n.clone()]
            }
            ContainerRef::Compose { project, service } => {
                let found = docker::compose_containers(d, project, service).await?;
                if found.is_empty() {
                    return Err(Error::NotFound(format!(
                        "no container of {r} (none labelled {}={project}, {}={service})",
                        docker::PROJECT_LABEL,
                        docker::SERVICE_LABEL
                    )));
                }
                found
            }
        };
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

fn run(phase: &'static str, verb: &str, name: &str, t: Instant, r: Result<String>) -> HookRun {
    let (ok, status) = match r {
        Ok(s) => (true, s),
        Err(e) => (false, crate::base::secret::redact(&e.to_string())),
    };
    HookRun {
        phase,
        argv: vec!["docker".into(), verb.into(), name.into()],
        ok,
        status,
        output: String::new(),
        seconds: t.elapsed().as_secs_f64(),
    }
}

impl Stopped {
    /// The containers stopped, in the order they were.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Start `names` again (a killed restore's, found in its journal).
pub async fn start_named(names: &[String], h: &RestoreHooks) -> Vec<HookRun> {
    let t = Instant::now();
    match docker::connect(h.docker_socket.as_deref(), h.timeout) {
        Ok(docker) => {
            start(
                &Stopped {
                    docker,
                    names: names.to_vec(),
                },
                h,
            )
            .await
        }
        Err(e) => vec![run("start", "start", "-", t, Err(e))],
    }
}

/// Resolve and stop the running ones. On a failure, what was stopped is
/// in the returned [`Stopped`] (to start again) and the runs say why.
pub async fn stop(h: &RestoreHooks) -> (Vec<HookRun>, Option<Stopped>) {
    let t = Instant::now();
    let d = match docker::connect(h.docker_socket.as_deref(), h.timeout) {
        Ok(d) => d,
        Err(e) => return (vec![run("stop", "stop", "-", t, Err(e))], None),
    };
    let names = match resolve(&d, &h.stop).await {
        Ok(n) => n,
        Err(e) => return (vec![run("stop", "stop", "-", t, Err(e))], None),
    };
    let mut runs = Vec::new();
    let mut stopped = Stopped {
        docker: d,
        names: Vec::new(),
    };
    for n in names {
        let t = Instant::now();
        let result = match docker::state(&stopped.docker, &n).await {
            Ok(s) if !s.running => Ok("not running; left as it is".to_owned()),
            Ok(_) => match docker::stop(&stopped.docker, &n).await {
                Ok(()) => {
                    stopped.names.push(n.clone());
                    Ok("stopped".to_owned())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let failed = result.is_err();
        runs.push(run("stop", "stop", &n, t, result));
        if failed {
            break;
        }
    }
    (runs, Some(stopped))
}

/// Start every container `stopped` holds, in the reverse order, waiting
/// for `healthy` where there is a healthcheck.
pub async fn start(stopped: &Stopped, h: &RestoreHooks) -> Vec<HookRun> {
    let mut runs = Vec::new();
    for n in stopped.names.iter().rev() {
        let t = Instant::now();
        let r = docker::start(&stopped.docker, n, h.timeout).await;
        runs.push(run("start", "start", n, t, r));
    }
    runs
}

/// Plan lines for `stop` entries.
pub fn describe(h: &RestoreHooks) -> (Vec<String>, Vec<String>) {
    let stop = h
        .stop
        .iter()
        .map(|r| format!("stop {r} (if running)"))
        .collect();
    let start = h
        .stop
        .iter()
        .rev()
        .map(|r| format!("start {r} again and wait for healthy (also if the restore fails)"))
        .collect();
    (stop, start)
}
