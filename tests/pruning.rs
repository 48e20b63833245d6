//! Pruning jobs against real components: prune_files on a generated file
//! tree, prune_images against a private Docker engine.

mod common;

use common::docker::Dockerd;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------- prune_files

fn names_under(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn prune_files_keeps_the_right_files_and_never_leaves_its_root() {
    let dir = scratch_dir("drctl-prune-");
    let logs = dir.join("logs");
    let outside = dir.join("outside");
    for (name, days) in [
        ("app/a.log", 40.0),
        ("app/b.log", 35.0),
        ("app/c.log", 31.0),
        ("app/d.log", 20.0),
        ("app/e.log", 1.0),
    ] {
        file_at(&logs.join(name), 100, days);
    }
    // keep_last = 2 keeps both old files of web/ (the newest two of their directory).
    file_at(&logs.join("web/old1.log"), 100, 90.0);
    file_at(&logs.join("web/old2.log"), 100, 80.0);
    file_at(&logs.join("web/old3.log"), 100, 70.0);
    file_at(&logs.join("app/keep.txt"), 100, 100.0); // not matched by the glob
    file_at(&outside.join("secret.log"), 100, 400.0);
    file_at(&outside.join("deep/other.log"), 100, 400.0);
    std::os::unix::fs::symlink(&outside, logs.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.log"), logs.join("app/link.log")).unwrap();

    let w = World::new(&format!(
        "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"{}/**/*.log\"]\nolder_than = \"30d\"\nkeep_last = 2\nschedule = \"0 0 4 * * *\"\n[jobs.logs-dry]\ntype = \"prune_files\"\npaths = [\"{}/**/*.log\"]\nolder_than = \"30d\"\nkeep_last = 2\ndry_run = true\n",
        logs.display(),
        logs.display()
    ));
    let before = names_under(&logs);
    let (code, v, stderr) = run_json(&w, "logs-dry");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names_under(&logs), before, "dry_run changes nothing");
    assert_eq!(
        v["details"]["deleted"].as_array().unwrap().len(),
        4,
        "{v:#}"
    );

    let (code, v, stderr) = run_json(&w, "logs");
    assert_eq!(code, 0, "{stderr}");
    // An independent statement of what must remain.
    assert_eq!(
        names_under(&logs),
        vec![
            "app/d.log",
            "app/e.log",
            "app/keep.txt",
            "app/link.log",
            "escape",
            "web/old2.log",
            "web/old3.log"
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    );
    assert!(outside.join("secret.log").exists() && outside.join("deep/other.log").exists());
    assert!(std::fs::symlink_metadata(logs.join("escape"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(v["details"]["bytes_freed"], 400);
    assert_eq!(v["bytes"], 400);
    let deleted: Vec<&str> = v["details"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        deleted
            .iter()
            .all(|p| p.starts_with(logs.to_str().unwrap())),
        "{deleted:?}"
    );
}

#[test]
fn prune_files_size_cap_compression_and_files_open_for_writing() {
    let dir = scratch_dir("drctl-prune2-");
    let logs = dir.join("logs");
    for (i, days) in [10.0, 9.0, 8.0, 7.0, 6.0, 0.5].iter().enumerate() {
        file_at(&logs.join(format!("s{i}.log")), 1000, *days);
    }
    // The oldest file is still being written by a process (this test).
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("s0.log"))
        .unwrap();
    let w = World::new(&format!(
        "[jobs.cap]\ntype = \"prune_files\"\npaths = [\"{}/*.log\"]\nmax_total_size = \"2500B\"\nkeep_last = 1\n",
        logs.display()
    ));
    let (code, v, stderr) = run_json(&w, "cap");
    // 6000 bytes against a 2500 cap, oldest first: s0 is open (skipped),
    // then s1..s4 go (6000 -> 2000); s5 is kept by keep_last anyway.
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names_under(&logs), vec!["s0.log", "s5.log"]);
    assert_eq!(
        v["details"]["skipped_open"][0],
        logs.join("s0.log").display().to_string(),
        "{v:#}"
    );
    drop(writer);

    // Compression: older than 1 day is gzipped in place (mtime kept), the
    // newest stays as it is; the .gz keeps counting for age limits.
    let logs2 = dir.join("logs2");
    file_at(&logs2.join("old.log"), 5000, 3.0);
    file_at(&logs2.join("new.log"), 5000, 0.1);
    let mtime = std::fs::metadata(logs2.join("old.log"))
        .unwrap()
        .modified()
        .unwrap();
    let w = World::new(&format!(
        "[jobs.gz]\ntype = \"prune_files\"\npaths = [\"{0}/*.log\"]\ncompress_older_than = \"1d\"\n[jobs.age]\ntype = \"prune_files\"\npaths = [\"{0}/*.log\"]\nolder_than = \"2d\"\n",
        logs2.display()
    ));
    let (code, v, stderr) = run_json(&w, "gz");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names_under(&logs2), vec!["new.log", "old.log.gz"]);
    let gz = logs2.join("old.log.gz");
    assert_eq!(std::fs::metadata(&gz).unwrap().modified().unwrap(), mtime);
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(out.stdout, vec![b'x'; 5000]);
    assert!(
        v["details"]["bytes_freed"].as_u64().unwrap() > 4000,
        "{v:#}"
    );
    let (code, _, stderr) = run_json(&w, "age");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        names_under(&logs2),
        vec!["new.log"],
        "the .gz is pruned by age too"
    );
}

#[test]
fn prune_files_config_errors_name_the_key() {
    let e = config_error(
        "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"logs/*.log\"]\nolder_than = \"30d\"\n",
    );
    assert!(
        e.contains("jobs.logs.paths") && e.contains("absolute"),
        "{e}"
    );
    let e = config_error(
        "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"/*/x.log\"]\nolder_than = \"30d\"\n",
    );
    assert!(e.contains("whole filesystem"), "{e}");
}

// ---------------------------------------------------------------- prune_images

#[test]
fn prune_images_against_a_real_docker_engine_keeps_used_new_and_newest_tags() {
    let d = Dockerd::start();
    let now = chrono::Utc::now();
    let fresh = (now - chrono::Duration::hours(1)).to_rfc3339();
    let old = |m: u32| format!("2020-{m:02}-01T00:00:00Z");
    // 64 KiB of distinct content per image, so each has its own layer.
    let content = |seed: &str| seed.repeat(65536 / seed.len()).into_bytes();
    for (i, m) in [1, 2, 3, 4].iter().enumerate() {
        d.load(
            &[&format!("app:{}", i + 1)],
            &old(*m),
            &content(&format!("app{i}-")),
            false,
        );
    }
    d.load(&["app:5"], &fresh, &content("app5-"), false);
    for (i, m) in [1, 2, 3, 4].iter().enumerate() {
        d.load(
            &[&format!("svc:{}", i + 1)],
            &old(*m),
            &content(&format!("svc{i}-")),
            i == 0,
        );
    }
    d.load(&[], &old(5), &content("dangling-old-"), false);
    d.load(&[], &fresh, &content("dangling-new-"), false);
    // svc:1 is outside keep_last but a container (run, exited) uses it.
    let out = d.docker(&[
        "run",
        "--network",
        "none",
        "--name",
        "uses-svc1",
        "svc:1",
        "/init",
        "--version",
    ]);
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = d.images();
    assert_eq!(before.len(), 11, "{before:?}");

    let w = World::new(&format!(
        "[jobs.images]\ntype = \"prune_images\"\nsocket = \"{0}\"\nuntil = \"168h\"\nkeep_last = 3\nschedule = \"0 0 5 * * SUN\"\n\
         [jobs.images-dry]\ntype = \"prune_images\"\nsocket = \"{0}\"\nuntil = \"168h\"\nkeep_last = 3\ndry_run = true\n",
        d.socket.display()
    ));
    let (code, v, e) = run_json(&w, "images-dry");
    assert_eq!(code, 0, "{e}");
    assert_eq!(d.images(), before, "dry_run removes nothing");
    assert_eq!(
        v["details"]["removed"].as_array().unwrap().len(),
        3,
        "{v:#}"
    );

    let (code, v, e) = run_json(&w, "images");
    assert_eq!(code, 0, "{e}\n{v:#}");
    assert_eq!(
        d.images(),
        vec![
            "<none> 2026",
            "app:3",
            "app:4",
            "app:5",
            "svc:1",
            "svc:2",
            "svc:3",
            "svc:4"
        ]
        .into_iter()
        .map(|s| s.replace("2026", &now.format("%Y").to_string()))
        .collect::<Vec<_>>(),
        "app:1, app:2 (old, unused, beyond keep_last) and the old dangling image go"
    );
    let reclaimed = v["details"]["bytes_reclaimed"].as_u64().unwrap();
    assert!(reclaimed >= 3 * 65_000, "reclaimed {reclaimed}");
    assert!(
        reclaimed < 10 * 65536,
        "only the removed layers count: {reclaimed}"
    );
    let kept = v["details"]["kept"].as_array().unwrap();
    assert!(
        kept.iter()
            .any(|k| k["reference"] == "svc:1" && k["reason"] == "used by a container"),
        "{kept:?}"
    );

    // The engine gone: the run fails (job_failed), it does not pass quietly.
    drop(d);
    let r = w.drctl(&["run", "images"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Docker engine"), "{}", r.stderr);
}
