//! Restoring a `redis` backup: its `dump.rdb` is written into `--to DIR`,
//! the directory a Redis server loads it from at start (`dir` and
//! `dbfilename` in redis.conf). It is fetched and verified (SHA-256 of the
//! stored bytes) into a temporary file in that directory, checked as an RDB
//! file (magic, version, CRC-64), then renamed over `dump.rdb` in one step;
//! an existing `dump.rdb` needs `--yes` and is kept as
//! `dump.rdb.pre_restore_<timestamp>`. Redis must be stopped while the file
//! is replaced (a running server overwrites it at its next save): the job's
//! `[jobs.X.restore]` hooks stop and start it (`containers` for Docker).
//!
//! A server with `appendonly yes` loads its append-only file at start and
//! ignores `dump.rdb` (Redis 7 even starts empty when it finds no AOF).
//! So when the directory holds an AOF, or the job's server says it runs
//! with `appendonly yes` from this directory, the snapshot is also written
//! as the AOF's base (Redis 7: `appendonlydir/<name>.1.base.rdb` and a
//! manifest naming it alone; older: the one AOF file, which may be an RDB),
//! the old AOF kept beside it ([`aof_layout`] decides, pure).

use super::{base_plan, Plan, Report, Resolved, RestoreRequest};
use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name Redis loads by default.
pub const DUMP: &str = "dump.rdb";

fn target_dir(req: &RestoreRequest) -> Result<PathBuf> {
    match &req.to {
        Some(d) if !d.contains("://") => Ok(PathBuf::from(d)),
        _ => Err(Error::Usage(
            "a redis backup restores into a directory (the server's `dir`): pass --to DIR".into(),
        )),
    }
}

/// How the server that loads the target directory persists, as far as
/// drctl can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aof {
    /// No append-only file: Redis loads `dump.rdb`.
    None,
    /// Redis 7's multi-part AOF: `DIR/<dirname>/<filename>.manifest`.
    MultiPart {
        /// `appenddirname`.
        dirname: String,
        /// `appendfilename`.
        filename: String,
    },
    /// One append-only file (Redis 6 and older): `DIR/<filename>`.
    Single {
        /// `appendfilename`.
        filename: String,
    },
}

/// What the job's server said about its persistence (`CONFIG GET`), when
/// it answered and its `dir` is the target directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAof {
    /// `appendonly yes`.
    pub appendonly: bool,
    /// `appenddirname` (Redis 7 and newer only).
    pub dirname: Option<String>,
    /// `appendfilename`.
    pub filename: String,
}

/// The AOF the restore must write as well (pure): the server's word when
/// it gave one (`appendonly no`: none, whatever files lie there), else the
/// layout found in the directory (`in_dir`, from [`aof_in`]).
pub fn aof_layout(in_dir: &Aof, server: Option<&ServerAof>) -> Aof {
    match server {
        Some(s) if !s.appendonly => Aof::None,
        Some(s) => match (in_dir, &s.dirname) {
            (Aof::None, Some(d)) => Aof::MultiPart {
                dirname: d.clone(),
                filename: s.filename.clone(),
            },
            (Aof::None, None) => Aof::Single {
                filename: s.filename.clone(),
            },
            (found, _) => found.clone(),
        },
        None => in_dir.clone(),
    }
}

/// The AOF a directory holds: a subdirectory with a `*.manifest` (Redis 7),
/// else an `*.aof` file; names only, no link followed.
pub fn aof_in(dir: &Path) -> Aof {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Aof::None;
    };
    let mut single = None;
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".pre_restore_") {
            continue;
        }
        if t.is_dir() {
            let manifest = std::fs::read_dir(e.path()).ok().and_then(|d| {
                d.flatten()
                    .map(|f| f.file_name().to_string_lossy().into_owned())
                    .find_map(|f| f.strip_suffix(".manifest").map(str::to_owned))
            });
            if let Some(filename) = manifest {
                return Aof::MultiPart {
                    dirname: name,
                    filename,
                };
            }
        } else if t.is_file() && name.ends_with(".aof") {
            single = Some(name);
        }
    }
    single.map_or(Aof::None, |filename| Aof::Single { filename })
}

/// Ask the job's server how it persists (`CONFIG GET`), if it answers
/// within a few seconds and loads from `dir`; `None` otherwise (stopped by
/// a `before` hook, another host, an ACL without `+config`).
async fn ask_server(r: &Resolved<'_>, dir: &Path) -> Option<ServerAof> {
    let crate::config::Kind::Redis(job) = &r.config.kind else {
        return None;
    };
    let url = job.connection.resolve("the Redis URL").ok()?;
    let client = redis::Client::open(url.expose()).ok()?;
    let asked = async {
        let con = client.get_multiplexed_async_connection().await.ok()?;
        let get = |key: &'static str| {
            let mut con = con.clone();
            async move {
                let v: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(key)
                    .query_async(&mut con)
                    .await
                    .ok()?;
                v.get(1).cloned()
            }
        };
        let served = get("dir").await?;
        let same = std::fs::canonicalize(&served).ok()? == std::fs::canonicalize(dir).ok()?;
        if !same {
            return None;
        }
        let appendonly = get("appendonly").await? == "yes";
        let filename = get("appendfilename")
            .await
            .unwrap_or_else(|| "appendonly.aof".into());
        let dirname = get("appenddirname").await;
        // The server names files drctl writes: one plain name each, or
        // its answer is not used (a hostile server could name ../../etc).
        if !plain_name(&filename) || dirname.as_deref().is_some_and(|d| !plain_name(d)) {
            tracing::warn!("the Redis server named its AOF files oddly; its answer is not used");
            return None;
        }
        Some(ServerAof {
            appendonly,
            dirname,
            filename,
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), asked)
        .await
        .ok()
        .flatten()
}

/// One path component drctl may create inside the target directory
/// (pure): not empty, no separator, not `.` or `..`, printable, short.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// What identifies the restore's target, for the per-target lock.
pub fn target_key(req: &RestoreRequest) -> Result<String> {
    let dir = target_dir(req)?;
    Ok(std::path::absolute(&dir)
        .unwrap_or(dir)
        .join(DUMP)
        .display()
        .to_string())
}

/// What restoring a redis backup would do.
pub fn plan(r: &Resolved<'_>, req: &RestoreRequest) -> Result<Plan> {
    let dir = target_dir(req)?;
    let dump = dir.join(DUMP);
    let mut steps = vec![
        "fetch the snapshot, verify size and SHA-256, decode it into a temporary file next to the target".into(),
        "check it is a whole RDB file (magic, version, CRC-64)".into(),
    ];
    if dump.exists() {
        steps.push(format!(
            "keep the existing {} as {DUMP}.pre_restore_<timestamp>",
            dump.display()
        ));
    }
    match aof_in(&dir) {
        Aof::None => steps.push("if the server runs with appendonly yes from this directory (asked when it answers), also write the snapshot as its AOF's base".into()),
        found => steps.push(format!(
            "the directory holds an append-only file ({}), which Redis loads instead of {DUMP}: write the snapshot as its base too, keeping the old one as *.pre_restore_<timestamp>",
            describe(&found)
        )),
    }
    steps.push(format!(
        "rename it to {} (start Redis with dir {} to load it)",
        dump.display(),
        dir.display()
    ));
    Ok(base_plan(
        r,
        dump.display().to_string(),
        dump.exists(),
        steps,
    ))
}

/// Refuse (exit 4) to replace an existing `dump.rdb` without `--yes`.
pub fn consent(req: &RestoreRequest) -> Result<()> {
    let dir = target_dir(req)?;
    let dump = dir.join(DUMP);
    if dump.exists() && !req.confirmed {
        return Err(Error::Refused(format!(
            "{} exists; replacing it needs --yes (it is kept as {DUMP}.pre_restore_<timestamp>), and Redis must be stopped first",
            dump.display()
        )));
    }
    let aof = aof_in(&dir);
    if aof != Aof::None && !req.confirmed {
        return Err(Error::Refused(format!(
            "{} holds an append-only file ({}), which Redis loads instead of {DUMP}: the restore writes the snapshot as its base too and keeps the old one; that needs --yes, and Redis must be stopped first",
            dir.display(),
            describe(&aof)
        )));
    }
    Ok(())
}

fn describe(a: &Aof) -> String {
    match a {
        Aof::None => "none".into(),
        Aof::MultiPart { dirname, filename } => format!("{dirname}/{filename}.manifest"),
        Aof::Single { filename } => filename.clone(),
    }
}

/// Write the placed `dump.rdb` as the AOF's base too, keeping the old AOF
/// as `*.pre_restore_<ts>`; owned like the directory, so a server running
/// as another user can append to it. Returns what was written and kept.
fn write_aof(dir: &Path, aof: &Aof) -> Result<Vec<String>> {
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let io = |what: String| move |e: std::io::Error| Error::io(what, e);
    let owner = std::fs::metadata(dir).ok();
    let own = |p: &Path| {
        if let (Some(m), true) = (&owner, nix::unistd::geteuid().is_root()) {
            use std::os::unix::fs::MetadataExt;
            let _ = nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(m.uid())),
                Some(nix::unistd::Gid::from_raw(m.gid())),
            );
        }
    };
    let copy = |to: &Path| -> Result<()> {
        let tmp = to.with_extension("drctl-tmp");
        std::fs::copy(dir.join(DUMP), &tmp).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("syncing {}", tmp.display())))?;
        own(&tmp);
        std::fs::rename(&tmp, to).map_err(io(format!("renaming to {}", to.display())))
    };
    let mut notes = Vec::new();
    match aof {
        Aof::None => {}
        Aof::Single { filename } => {
            let f = dir.join(filename);
            if f.exists() {
                let kept = dir.join(format!("{filename}.pre_restore_{ts}"));
                std::fs::rename(&f, &kept).map_err(io(format!("keeping {}", f.display())))?;
                notes.push(format!(
                    "the previous {filename} is kept as {}",
                    kept.display()
                ));
            }
            copy(&f)?;
            notes.push(format!(
                "appendonly yes: Redis loads {} rather than {DUMP}; the snapshot was written there too (an AOF may be an RDB)",
                f.display()
            ));
        }
        Aof::MultiPart { dirname, filename } => {
            let d = dir.join(dirname);
            if d.exists() {
                let kept = dir.join(format!("{dirname}.pre_restore_{ts}"));
                std::fs::rename(&d, &kept).map_err(io(format!("keeping {}", d.display())))?;
                notes.push(format!(
                    "the previous {dirname} is kept as {}",
                    kept.display()
                ));
            }
            std::fs::create_dir(&d).map_err(io(format!("creating {}", d.display())))?;
            own(&d);
            let base = format!("{filename}.1.base.rdb");
            copy(&d.join(&base))?;
            let manifest = d.join(format!("{filename}.manifest"));
            let tmp = d.join(format!(".{filename}.manifest.drctl-tmp"));
            std::fs::write(&tmp, format!("file {base} seq 1 type b\n"))
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .map_err(io(format!("writing {}", tmp.display())))?;
            own(&tmp);
            std::fs::rename(&tmp, &manifest)
                .map_err(io(format!("renaming to {}", manifest.display())))?;
            if let Ok(f) = std::fs::File::open(&d) {
                let _ = f.sync_all();
            }
            notes.push(format!(
                "appendonly yes: Redis loads its AOF rather than {DUMP}; the snapshot was written as its base ({}/{base}, named alone by {})",
                d.display(),
                manifest.display()
            ));
        }
    }
    Ok(notes)
}

/// Restore the snapshot into `DIR/dump.rdb`.
pub async fn run(
    r: &Resolved<'_>,
    req: &RestoreRequest,
    progress: Arc<Progress>,
) -> Result<Report> {
    consent(req)?;
    let dir = target_dir(req)?;
    crate::base::private_fs::dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let artifact = r
        .manifest
        .artifact("redis_rdb")
        .ok_or_else(|| Error::Integrity {
            artifact: r.manifest.id.to_string(),
            message: "manifest lists no RDB artifact".into(),
        })?;
    let tmp = dir.join(format!(
        ".{DUMP}.drctl-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let fetch_seconds =
        super::fetch_to_temp(r, req, artifact, &tmp, &progress, "fetching the snapshot").await?;
    let t1 = std::time::Instant::now();
    let (tmp2, dir2, name) = (tmp.clone(), dir.clone(), artifact.name.clone());
    let placed = tokio::task::spawn_blocking(move || place(&tmp2, &dir2, &name)).await;
    let placed = match placed {
        Ok(r) => r,
        Err(e) => Err(Error::task("placing dump.rdb", e)),
    };
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let kept = placed?;
    let mut warnings = Vec::new();
    if let Some(k) = &kept {
        warnings.push(format!("the previous {DUMP} is kept as {}", k.display()));
    }
    let server = ask_server(r, &dir).await;
    let aof = aof_layout(&aof_in(&dir), server.as_ref());
    warnings.extend(write_aof(&dir, &aof)?);
    if aof == Aof::None && server.is_none() {
        warnings.push(format!(
            "the job's server did not say how it persists (stopped, or another host) and {} holds no append-only file: if the server runs with appendonly yes it would start empty; start it once with appendonly no (it loads {DUMP}), then CONFIG SET appendonly yes (it writes its AOF from the loaded data)",
            dir.display()
        ));
    }
    Ok(Report {
        backup_id: r.manifest.id.to_string(),
        target: dir.join(DUMP).display().to_string(),
        bytes_fetched: artifact.stored_bytes,
        fetch_seconds,
        restore_seconds: t1.elapsed().as_secs_f64(),
        warnings,
        ..Default::default()
    })
}

/// Check the fetched file as an RDB, keep an existing `dump.rdb`, and
/// rename the new one into place (fsynced, so a crash leaves the old or
/// the new file, never half of one). Returns where the old one went.
fn place(tmp: &Path, dir: &Path, artifact: &str) -> Result<Option<PathBuf>> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(tmp).map_err(|e| Error::io("reading the fetched snapshot", e))?;
    let mut c = crate::base::rdb::Checker::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading the fetched snapshot", e))?;
        if n == 0 {
            break;
        }
        c.update(&buf[..n]);
    }
    c.finish().map_err(|m| Error::Integrity {
        artifact: artifact.to_owned(),
        message: format!("not a whole RDB file: {m}"),
    })?;
    f.sync_all()
        .map_err(|e| Error::io("syncing the fetched snapshot", e))?;
    let dump = dir.join(DUMP);
    let kept = if dump.exists() {
        let k = dir.join(format!(
            "{DUMP}.pre_restore_{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        std::fs::rename(&dump, &k)
            .map_err(|e| Error::io(format!("keeping {} as {}", dump.display(), k.display()), e))?;
        Some(k)
    } else {
        None
    };
    std::fs::rename(tmp, &dump)
        .map_err(|e| Error::io(format!("renaming the snapshot to {}", dump.display()), e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(appendonly: bool, dirname: Option<&str>) -> ServerAof {
        ServerAof {
            appendonly,
            dirname: dirname.map(str::to_owned),
            filename: "appendonly.aof".into(),
        }
    }

    #[test]
    fn the_servers_word_decides_else_the_files_in_the_directory() {
        let multi = Aof::MultiPart {
            dirname: "appendonlydir".into(),
            filename: "appendonly.aof".into(),
        };
        let single = Aof::Single {
            filename: "appendonly.aof".into(),
        };
        // appendonly no: Redis ignores any AOF lying there.
        assert_eq!(
            aof_layout(&multi, Some(&server(false, Some("appendonlydir")))),
            Aof::None
        );
        // appendonly yes and nothing yet: Redis 7 would start empty.
        assert_eq!(
            aof_layout(&Aof::None, Some(&server(true, Some("appendonlydir")))),
            multi
        );
        assert_eq!(aof_layout(&Aof::None, Some(&server(true, None))), single);
        // The files found win over the defaults.
        let custom = Aof::MultiPart {
            dirname: "aof".into(),
            filename: "x.aof".into(),
        };
        assert_eq!(
            aof_layout(&custom, Some(&server(true, Some("appendonlydir")))),
            custom
        );
        // No answer: the directory tells.
        assert_eq!(aof_layout(&single, None), single);
        assert_eq!(aof_layout(&Aof::None, None), Aof::None);
    }

    #[test]
    fn a_servers_file_names_are_used_only_when_plain() {
        assert!(plain_name("appendonly.aof") && plain_name("appendonlydir"));
        let long = "a".repeat(256);
        for hostile in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "x\u{1b}[2J",
            long.as_str(),
        ] {
            assert!(!plain_name(hostile), "{hostile:?}");
        }
    }

    #[test]
    fn an_aof_is_found_by_its_manifest_or_its_name_and_kept_ones_are_not() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(aof_in(d.path()), Aof::None);
        std::fs::write(d.path().join("appendonly.aof"), b"").unwrap();
        assert_eq!(
            aof_in(d.path()),
            Aof::Single {
                filename: "appendonly.aof".into()
            }
        );
        let m = d.path().join("appendonlydir");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("appendonly.aof.manifest"), b"").unwrap();
        assert_eq!(
            aof_in(d.path()),
            Aof::MultiPart {
                dirname: "appendonlydir".into(),
                filename: "appendonly.aof".into()
            }
        );
        std::fs::rename(&m, d.path().join("appendonlydir.pre_restore_1")).unwrap();
        std::fs::remove_file(d.path().join("appendonly.aof")).unwrap();
        assert_eq!(aof_in(d.path()), Aof::None, "kept copies are not the AOF");
    }
}
