//! The Docker Engine API (bollard): the one place drctl connects to it, and
//! the container operations a restore procedure needs (find a Compose
//! service's containers by their labels, stop, start, wait for healthy).
//! Image pruning uses the same connection.

use crate::base::error::{Error, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{ListContainersOptions, StopContainerOptions};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Connect to `socket` (default: `$DOCKER_HOST`, else the local socket),
/// each request bounded by `timeout`.
pub fn connect(socket: Option<&Path>, timeout: Duration) -> Result<Docker> {
    let secs = timeout.as_secs().max(1);
    let d = match socket {
        Some(p) => {
            Docker::connect_with_unix(&p.display().to_string(), secs, bollard::API_DEFAULT_VERSION)
        }
        None => {
            Docker::connect_with_local_defaults().map(|d| d.with_timeout(Duration::from_secs(secs)))
        }
    };
    d.map_err(|source| Error::Docker {
        context: "cannot reach the Docker engine".into(),
        source,
    })
}

/// An engine error while doing `what`.
pub fn err(what: &str) -> impl Fn(bollard::errors::Error) -> Error + '_ {
    move |source| Error::Docker {
        context: format!("Docker engine: {what}"),
        source,
    }
}

/// The label Compose puts on a container's project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label Compose puts on a container's service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

/// The names of the containers of Compose service `service` in `project`
/// (every replica; stopped ones included), sorted.
pub async fn compose_containers(d: &Docker, project: &str, service: &str) -> Result<Vec<String>> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{PROJECT_LABEL}={project}"),
            format!("{SERVICE_LABEL}={service}"),
        ],
    )]);
    let list = d
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(err("listing containers"))?;
    let mut names: Vec<String> = list
        .iter()
        .filter_map(|c| c.names.as_ref()?.first().cloned())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The one running container of a Compose service (a database has one;
/// zero or several is an error naming them).
pub async fn running_service_container(d: &Docker, project: &str, service: &str) -> Result<String> {
    let mut running = Vec::new();
    let all = compose_containers(d, project, service).await?;
    for n in &all {
        if state(d, n).await?.running {
            running.push(n.clone());
        }
    }
    match running.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NotFound(format!(
            "no running container of compose service {service} of project {project} ({})",
            if all.is_empty() {
                format!("none labelled {PROJECT_LABEL}={project}, {SERVICE_LABEL}={service}")
            } else {
                format!("stopped: {}", all.join(", "))
            }
        ))),
        many => Err(Error::Other(format!(
            "compose service {service} of project {project} has {} running containers ({}); name one with container =",
            many.len(),
            many.join(", ")
        ))),
    }
}

/// What the engine says of a container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// It is running.
    pub running: bool,
    /// Its healthcheck's status (`starting`, `healthy`, `unhealthy`), if it has one.
    pub health: Option<String>,
}

/// The state of container `name` (a `NotFound` when there is none).
pub async fn state(d: &Docker, name: &str) -> Result<ContainerState> {
    let c = match d
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(c) => c,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Err(Error::NotFound(format!("no container named {name:?}"))),
        Err(e) => return Err(err("inspecting a container")(e)),
    };
    let s = c.state.unwrap_or_default();
    let health = s
        .health
        .and_then(|h| h.status)
        .map(|h| h.to_string())
        .filter(|h| !h.is_empty() && h != "none");
    Ok(ContainerState {
        running: s.running.unwrap_or(false),
        health,
    })
}

/// Stop container `name` (its own stop timeout, then SIGKILL, as `docker stop`).
pub async fn stop(d: &Docker, name: &str) -> Result<()> {
    d.stop_container(name, None::<StopContainerOptions>)
        .await
        .map_err(err("stopping a container"))
}

/// Start container `name` and, when it has a healthcheck, wait until it
/// reports `healthy` (an error if it turns `unhealthy` or `wait` ends).
pub async fn start(d: &Docker, name: &str, wait: Duration) -> Result<String> {
    d.start_container(
        name,
        None::<bollard::query_parameters::StartContainerOptions>,
    )
    .await
    .map_err(err("starting a container"))?;
    let deadline = Instant::now() + wait;
    loop {
        let s = state(d, name).await?;
        match s.health.as_deref() {
            None if s.running => return Ok("running".into()),
            Some("healthy") => return Ok("healthy".into()),
            Some("unhealthy") => {
                return Err(Error::Other(format!(
                    "container {name} started but is unhealthy"
                )))
            }
            _ if Instant::now() >= deadline => {
                return Err(Error::Other(format!(
                    "container {name} is not healthy after {} (health: {}, running: {})",
                    humantime::format_duration(wait),
                    s.health.as_deref().unwrap_or("none"),
                    s.running
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A process started in a container through the Engine API's exec: its
/// stdin (when attached), its stdout as a pipe, its stderr appended to a
/// shared buffer (the tail kept), and its exit code once it ended.
pub struct Exec {
    /// Attached stdin: shut it down to close the process's stdin.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// stdout, when asked for (else it is drained and dropped).
    pub stdout: Option<tokio::io::DuplexStream>,
    docker: Docker,
    id: String,
    pid: Option<i64>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

/// Start `argv` in `container` with `env` (the exec's own environment,
/// never argv). `pipes`: (attach stdin, keep stdout).
pub async fn exec(
    d: &Docker,
    container: &str,
    argv: &[String],
    env: &[(String, String)],
    pipes: (bool, bool),
    stderr: Arc<Mutex<Vec<u8>>>,
    keep: usize,
) -> Result<Exec> {
    let (want_stdin, want_stdout) = pipes;
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created = d
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdin: Some(want_stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                env: Some(env),
                cmd: Some(argv.to_vec()),
                ..Default::default()
            },
        )
        .await
        .map_err(err(&format!(
            "creating an exec of {} in container {container}",
            argv[0]
        )))?;
    let started = d
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(1 << 20),
            }),
        )
        .await
        .map_err(err(&format!(
            "starting {} in container {container}",
            argv[0]
        )))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(Error::Other(format!(
            "the Docker engine started {} in container {container} detached",
            argv[0]
        )));
    };
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let pump = tokio::spawn(async move {
        let mut out = want_stdout;
        while let Some(frame) = output.next().await {
            match frame {
                Ok(LogOutput::StdOut { message }) if out => {
                    if writer.write_all(&message).await.is_err() {
                        out = false; // the reader is gone; drain the rest
                    }
                }
                Ok(LogOutput::StdErr { message }) => {
                    if let Ok(mut b) = stderr.lock() {
                        b.extend_from_slice(&message);
                        if b.len() > keep * 2 {
                            let cut = b.len() - keep;
                            b.drain(..cut);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Ok(mut b) = stderr.lock() {
                        b.extend_from_slice(format!("\n(the exec's stream broke: {e})").as_bytes());
                    }
                    break;
                }
            }
        }
        let _ = writer.shutdown().await;
    });
    let pid = d
        .inspect_exec(&created.id)
        .await
        .ok()
        .and_then(|i| i.pid)
        .filter(|p| *p > 0);
    Ok(Exec {
        stdin: want_stdin.then_some(input),
        stdout: want_stdout.then_some(reader),
        docker: d.clone(),
        id: created.id,
        pid,
        pump: Some(pump),
    })
}

impl Exec {
    /// Wait until the output is drained and the process ended: its exit
    /// code (`None` if the engine does not say).
    pub async fn wait(&mut self) -> Result<Option<i64>> {
        self.stdin = None;
        if let Some(p) = self.pump.take() {
            p.await
                .map_err(|e| Error::task("reading an exec's output", e))?;
        }
        // The stream ends as the process does; the engine may take a
        // moment to record its exit code.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let i = self
                .docker
                .inspect_exec(&self.id)
                .await
                .map_err(err("inspecting an exec"))?;
            if i.running != Some(true) || Instant::now() > deadline {
                self.pid = None;
                return Ok(i.exit_code);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Exec {
    /// The Engine API cannot kill an exec: its process is killed by pid
    /// where drctl may (root, or the same user), and otherwise ends on the
    /// closed stdin and the broken stdout of the dropped connection.
    fn drop(&mut self) {
        if let Some(p) = self.pump.take() {
            p.abort();
        }
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Run `argv` in `container` and return its stdout (trimmed); a non-zero
/// exit is an error with its stderr.
pub async fn output(d: &Docker, container: &str, argv: &[&str]) -> Result<String> {
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut e = exec(
        d,
        container,
        &argv,
        &[],
        (false, true),
        stderr.clone(),
        16 * 1024,
    )
    .await?;
    let mut out = String::new();
    if let Some(mut s) = e.stdout.take() {
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_string(&mut out).await;
    }
    let code = e.wait().await?;
    if code == Some(0) {
        return Ok(out.trim().to_owned());
    }
    let text = stderr
        .lock()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Err(Error::Other(format!(
        "{} in container {container} failed ({}): {}",
        argv.join(" "),
        code.map_or_else(|| "no exit code".into(), |c| format!("exit code {c}")),
        crate::base::secret::redact(text.trim())
    )))
}

/// Copy the host file `src` into a new private directory of `container`
/// (`mktemp -d` as the container's user, so only it and root can read
/// it), streamed through the archive API: the path it has there. Remove
/// the directory with [`remove_dir`] when done.
pub async fn copy_into(d: &Docker, container: &str, src: &Path, name: &str) -> Result<String> {
    let dir = output(d, container, &["mktemp", "-d"]).await?;
    let len = tokio::fs::metadata(src)
        .await
        .map_err(|e| Error::io(format!("reading {}", src.display()), e))?
        .len();
    let mut h = tar::Header::new_gnu();
    h.set_path(name)
        .map_err(|e| Error::io("naming the copy", e))?;
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    let file = tokio::fs::File::open(src)
        .await
        .map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
    let pad = (512 - (len % 512)) % 512;
    let head = futures::stream::iter([Ok(bytes::Bytes::copy_from_slice(h.as_bytes()))]);
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let tail = futures::stream::iter([Ok(bytes::Bytes::from(vec![0u8; pad as usize + 1024]))]);
    let stream = head.chain(body).chain(tail);
    let uploaded = d
        .upload_to_container(
            container,
            Some(bollard::query_parameters::UploadToContainerOptions {
                path: dir.clone(),
                ..Default::default()
            }),
            bollard::body_try_stream(stream),
        )
        .await
        .map_err(err(&format!(
            "copying {} into container {container}",
            src.display()
        )));
    if let Err(e) = uploaded {
        remove_dir(d, container, &dir).await;
        return Err(e);
    }
    Ok(format!("{dir}/{name}"))
}

/// Best effort: remove a directory [`copy_into`] made.
pub async fn remove_dir(d: &Docker, container: &str, dir: &str) {
    if let Err(e) = output(d, container, &["rm", "-rf", dir]).await {
        tracing::warn!(error = %e, dir, "cannot remove a copy in the container");
    }
}
