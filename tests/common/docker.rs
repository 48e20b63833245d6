//! A private Docker engine for tests (Debian's docker.io) on a socket in a
//! scratch directory, and images built offline: no registry is reachable,
//! so an image is assembled here, from bytes (`load`) or from this host's
//! own binaries and the libraries they link (`import_host_binaries`).

use super::{scratch_dir, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A private Docker engine (Debian's docker.io) on a socket in a scratch
/// directory, stopped on drop.
pub struct Dockerd {
    child: std::process::Child,
    pub socket: PathBuf,
}

/// One engine per test binary (two private engines side by side trip over
/// each other), stopped at exit.
pub fn shared() -> &'static Dockerd {
    static SHARED: std::sync::OnceLock<Dockerd> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let d = Dockerd::start();
        super::stop_at_exit(d.child.id());
        d
    })
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = scratch_dir("drctl-docker-");
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let dockerd = if Path::new("/usr/sbin/dockerd").exists() {
            "/usr/sbin/dockerd"
        } else {
            "dockerd"
        };
        let child = Command::new(dockerd)
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--shutdown-timeout", "2"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (apt-get install docker.io)");
        let d = Dockerd { child, socket };
        wait_until(Duration::from_secs(60), "dockerd to answer", || {
            d.docker(&["version"]).status.success()
        });
        d
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        // Debian's client, matching the engine's API version.
        let client = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        Command::new(client)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// `docker load` an image built here: one layer with `content` (and
    /// the static docker-init as /init when `runnable`), created at `created`.
    pub fn load(&self, tags: &[&str], created: &str, content: &[u8], runnable: bool) {
        use sha2::Digest;
        let mut layer = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(0);
            h.set_cksum();
            layer.append_data(&mut h, name, data).unwrap();
        };
        add("content", content, 0o644);
        if runnable {
            add(
                "init",
                &std::fs::read("/usr/bin/docker-init").expect("docker-init from docker.io"),
                0o755,
            );
        }
        let layer = layer.into_inner().unwrap();
        let diff_id = hex::encode(sha2::Sha256::digest(&layer));
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": { "Entrypoint": ["/init", "--"] },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
            "history": [{ "created": created }],
        })
        .to_string();
        let config_id = hex::encode(sha2::Sha256::digest(config.as_bytes()));
        let manifest = serde_json::json!([{
            "Config": format!("{config_id}.json"),
            "RepoTags": if tags.is_empty() { Value::Null } else { serde_json::json!(tags) },
            "Layers": [format!("{diff_id}/layer.tar")],
        }])
        .to_string();
        let mut archive = tar::Builder::new(Vec::new());
        for (name, data) in [
            (format!("{config_id}.json"), config.as_bytes().to_vec()),
            (format!("{diff_id}/layer.tar"), layer),
            ("manifest.json".to_owned(), manifest.into_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            archive.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let path = scratch_dir("drctl-image-").join("image.tar");
        std::fs::write(&path, archive.into_inner().unwrap()).unwrap();
        let out = self.docker(&["load", "-i", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker import` an image holding `binaries` of this host (each at its
    /// own path) and every shared library they link (from `ldd`), plus
    /// `files` (path, content, mode): enough to run host tools such as
    /// `sh` and `sleep` in a container with no registry.
    pub fn import_host_binaries(&self, tag: &str, binaries: &[&str], files: &[(&str, &[u8], u32)]) {
        let mut fs = Rootfs::default();
        fs.binaries(binaries);
        fs.dir("tmp", 0o1777, 0);
        for (p, data, mode) in files {
            fs.file(p, data, *mode);
        }
        self.import(tag, fs);
    }

    /// `docker import` a root filesystem.
    pub fn import(&self, tag: &str, fs: Rootfs) {
        let tarball = scratch_dir("drctl-rootfs-").join("rootfs.tar");
        std::fs::write(&tarball, fs.finish()).unwrap();
        let out = self.docker(&["import", tarball.to_str().unwrap(), tag]);
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An image running this host's PostgreSQL (server and client tools,
    /// the newest major installed) as uid 999, from its own binaries:
    /// `initdb` then `postgres` on the Unix socket only.
    pub fn import_host_postgres(&self, tag: &str) -> u32 {
        let major = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .expect("PostgreSQL installed under /usr/lib/postgresql");
        let bin = format!("/usr/lib/postgresql/{major}/bin");
        let mut fs = Rootfs::default();
        let tools = [
            "postgres",
            "initdb",
            "pg_ctl",
            "pg_dump",
            "pg_dumpall",
            "pg_restore",
            "psql",
        ];
        let paths: Vec<String> = tools.iter().map(|t| format!("{bin}/{t}")).collect();
        let mut all: Vec<&str> = paths.iter().map(String::as_str).collect();
        all.extend([
            "/bin/sh",
            "/bin/sleep",
            "/bin/cat",
            "/bin/rm",
            "/bin/ls",
            "/bin/mktemp",
        ]);
        fs.binaries(&all);
        fs.tree(&format!("/usr/lib/postgresql/{major}/lib"), |p| {
            let s = p.to_string_lossy();
            s.contains("/bitcode") || s.contains("llvmjit")
        });
        fs.tree(&format!("/usr/share/postgresql/{major}"), |_| false);
        fs.tree("/usr/share/zoneinfo", |_| false);
        fs.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n", 0o644);
        fs.file("etc/group", b"root:x:0:\npostgres:x:999:\n", 0o644);
        fs.dir("var/run/postgresql", 0o775, 999);
        fs.dir("var/lib/postgresql", 0o700, 999);
        fs.dir("tmp", 0o1777, 0);
        self.import(tag, fs);
        major
    }

    /// `docker` that must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker inspect -f FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name])
    }

    /// `repo:tag` of every image, `<none>` for dangling ones, sorted.
    pub fn images(&self) -> Vec<String> {
        let out = self.docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.CreatedAt}}",
        ]);
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| match l.split_once(' ') {
                Some(("<none>:<none>", created)) => format!("<none> {}", &created[..4]),
                Some((tag, _)) => tag.to_owned(),
                None => l.to_owned(),
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root filesystem assembled from this host's files, as a tar.
#[derive(Default)]
pub struct Rootfs {
    entries: Vec<(String, Vec<u8>, u32, u64, tar::EntryType)>,
    seen: std::collections::HashSet<String>,
}

impl Rootfs {
    /// Each binary at its own path and the libraries `ldd` says it links.
    pub fn binaries(&mut self, binaries: &[&str]) {
        for b in binaries {
            self.host_file(b, 0o755);
            self.libraries_of(b);
        }
    }

    fn libraries_of(&mut self, path: &str) {
        let out = Command::new("ldd").arg(path).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let lib = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                self.host_file(lib, 0o755);
            }
        }
    }

    /// Every file under `dir` (links followed) but those `skip` names;
    /// shared objects with their libraries.
    pub fn tree(&mut self, dir: &str, skip: impl Fn(&Path) -> bool) {
        for e in walkdir::WalkDir::new(dir)
            .follow_links(true)
            .into_iter()
            .flatten()
        {
            if !e.file_type().is_file() || skip(e.path()) {
                continue;
            }
            let p = e.path().to_string_lossy().into_owned();
            self.host_file(&p, 0o644);
            if p.ends_with(".so") {
                self.libraries_of(&p);
            }
        }
    }

    fn host_file(&mut self, path: &str, mode: u32) {
        if self.seen.insert(path.to_owned()) {
            let data = std::fs::read(path).unwrap();
            self.entries
                .push((path.to_owned(), data, mode, 0, tar::EntryType::Regular));
        }
    }

    /// A file with these bytes.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.entries.push((
            path.to_owned(),
            data.to_vec(),
            mode,
            0,
            tar::EntryType::Regular,
        ));
    }

    /// A directory owned by `uid` (and the group of the same number).
    pub fn dir(&mut self, path: &str, mode: u32, uid: u64) {
        self.entries.push((
            path.to_owned(),
            Vec::new(),
            mode,
            uid,
            tar::EntryType::Directory,
        ));
    }

    fn finish(self) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (path, data, mode, uid, kind) in self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(0);
            h.set_cksum();
            t.append_data(&mut h, path.trim_start_matches('/'), data.as_slice())
                .unwrap();
        }
        t.into_inner().unwrap()
    }
}
