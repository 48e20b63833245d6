//! 3-2-1 copies against real components: a local repository and the
//! in-process S3 server, moto as a second S3 implementation, the drctl
//! binary killed mid-copy, a store that refuses connections until it comes
//! back, a damaged source artifact.
// Each test is one end-to-end scenario told in order.
#![allow(clippy::too_many_lines)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn backups(w: &World, job: &str) -> Vec<serde_json::Value> {
    let r = w.drctl(&["backups", job, "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

fn ids_in(w: &World, job: &str, repo: &str) -> Vec<String> {
    backups(w, job)
        .iter()
        .filter(|b| {
            b["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == repo)
        })
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

fn run_id(w: &World, job: &str) -> String {
    let r = w.drctl(&["run", job]);
    r.ok();
    r.stdout.trim().to_owned()
}

fn random_file(dir: &Path, name: &str, len: usize) {
    use std::io::Read;
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A loopback port in front of the in-process S3 server that passes
/// traffic while `up` holds and resets every connection otherwise.
fn switchable_s3(up: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    fault_proxy(
        s3().endpoint.trim_start_matches("http://").to_owned(),
        move |_| {
            if up.load(std::sync::atomic::Ordering::SeqCst) {
                Fault::Pass
            } else {
                Fault::Cut
            }
        },
    )
}

fn manifest_at(repo: &Path, job: &str, id: &str) -> PathBuf {
    repo.join(job).join(id).join("manifest.json")
}

/// A PostgreSQL job writing to a local repository with a copy on S3: the
/// copy holds the same bytes (same checksums, no key needed), each
/// repository applies its own retention, `backups` says where each backup
/// is, `verify` checks both and `--repository` picks one.
#[tokio::test(flavor = "multi_thread")]
async fn every_backup_lands_in_both_repositories_each_with_its_own_retention() {
    let pg = pg();
    let db = pg.create_db("copy_src");
    pg.seed(&db, &unique("copy_owner"), 300);
    let bucket = s3().create_bucket().await;
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"db1\"\nendpoint = \"{}\"\npath_style = true\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\ncopies = [\"offsite\"]\n\
         retention = {{ keep_last = 3 }}\n\
         [jobs.appdb.copy_retention.offsite]\nkeep_last = 2\n",
        s3().endpoint
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(run_id(&w, "appdb"));
        std::thread::sleep(Duration::from_millis(1100));
    }
    // Local keeps 3, offsite 2, each by its own policy.
    assert_eq!(ids_in(&w, "appdb", "local"), ids[1..].to_vec());
    assert_eq!(ids_in(&w, "appdb", "offsite"), ids[2..].to_vec());
    let rows = backups(&w, "appdb");
    let newest = rows.iter().find(|b| b["id"] == ids[3].as_str()).unwrap();
    assert_eq!(
        newest["repositories"],
        serde_json::json!(["local", "offsite"])
    );
    let text = w.drctl(&["backups", "appdb"]);
    assert!(text.ok().stdout.contains("WHERE"), "{}", text.stdout);
    assert!(text.stdout.contains("local,offsite"), "{}", text.stdout);

    // The copy is the same backup, byte for byte: the same manifest.
    let local = std::fs::read(manifest_at(&w.repo_dir(), "appdb", &ids[3])).unwrap();
    let remote = s3()
        .get(&bucket, &format!("db1/appdb/{}/manifest.json", ids[3]))
        .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&local).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&remote).unwrap()
    );

    // verify reads both repositories; --repository only one.
    let v = w.drctl(&["verify", "--job", "appdb", "--all", "--json"]);
    v.ok();
    let s: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    let checked: Vec<(String, String)> = s["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["ok"], true, "{b}");
            (
                b["repository"].as_str().unwrap().to_owned(),
                b["backup_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(checked.len(), 5, "{checked:?}");
    let v = w.drctl(&[
        "verify",
        "--job",
        "appdb",
        "--repository",
        "offsite",
        "--deep",
        "--json",
    ]);
    v.ok();
    let s: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    let only: Vec<&serde_json::Value> = s["backups"].as_array().unwrap().iter().collect();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["repository"], "offsite");
    assert_eq!(only[0]["backup_id"], ids[3].as_str());

    // prune works per repository: a dry run of the copy names it.
    let p = w.drctl(&[
        "prune",
        "--job",
        "appdb",
        "--repository",
        "offsite",
        "--json",
    ]);
    p.ok();
    let reports: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(reports.as_array().unwrap().len(), 1);
    assert_eq!(reports[0]["repository"], "offsite");
    assert_eq!(reports[0]["kept"].as_array().unwrap().len(), 2);
    let p = w.drctl(&["prune", "--job", "appdb", "--repository", "nowhere"]);
    assert_eq!(p.code, 2, "{}", p.all());

    // A restore from the copy alone gives the same database.
    let before = pg.fingerprint(&db);
    let target = unique("copy_restored");
    let mut only_offsite = World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"db1\"\nendpoint = \"{}\"\npath_style = true\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\n",
        s3().endpoint
    ));
    only_offsite.set_env("APP_DATABASE_URL", &pg.url(&db));
    only_offsite
        .drctl(&["restore", "--latest", "--to", &pg.url(&target)])
        .ok();
    assert_eq!(pg.fingerprint(&target), before);
}

/// `drctl copy` backfills a repository added later, from one S3 server
/// (the in-process one) into another (moto, a second S3 implementation),
/// copies only what its retention keeps, honours `--since`, and a second
/// run copies nothing.
#[tokio::test(flavor = "multi_thread")]
async fn copy_backfills_a_new_repository_and_a_second_run_copies_nothing() {
    let primary = s3().create_bucket().await;
    let moto = Moto::start();
    moto.client()
        .await
        .create_bucket()
        .bucket("cold")
        .send()
        .await
        .unwrap();
    let src = scratch_dir("drctl-copy-src-");
    random_file(&src, "a.bin", 200_000);
    let base = format!(
        "[repositories.hot]\ntype = \"s3\"\nbucket = \"{primary}\"\nendpoint = \"{}\"\npath_style = true\n\
         [repositories.cold]\ntype = \"s3\"\nbucket = \"cold\"\nendpoint = \"{}\"\npath_style = true\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"hot\"\n",
        s3().endpoint,
        moto.endpoint,
        src.display()
    );
    let w = World::new(&base);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(run_id(&w, "etc"));
        std::thread::sleep(Duration::from_millis(1100));
    }
    // No copies configured: drctl copy says so (exit 2).
    let r = w.drctl(&["copy"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no job has copies"), "{}", r.stderr);

    // The new repository is added; --since takes only the newest two.
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap()
            + "copies = [\"cold\"]\n[jobs.etc.copy_retention.cold]\nkeep_last = 3\n",
    )
    .unwrap();
    // 20261202T101112.345Z-host-... -> 2026-12-02T10:11:12Z
    let i = &ids[2];
    let since = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &i[0..4],
        &i[4..6],
        &i[6..8],
        &i[9..11],
        &i[11..13],
        &i[13..15]
    );
    let r = w.drctl(&["copy", "--since", &since, "--json"]);
    r.ok();
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep[0]["copied"].as_array().unwrap().len(), 2, "{rep:#}");
    assert_eq!(rep[0]["too_old"], 2);
    assert_eq!(ids_in(&w, "etc", "cold"), ids[2..].to_vec());

    // Without --since: only what keep_last = 3 keeps (one more).
    let r = w.drctl(&["copy", "--job", "etc", "--to", "cold", "--json"]);
    r.ok();
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep[0]["copied"].as_array().unwrap().len(), 1, "{rep:#}");
    assert_eq!(rep[0]["present"], 2);
    assert_eq!(rep[0]["not_kept"], 1);
    assert_eq!(ids_in(&w, "etc", "cold"), ids[1..].to_vec());

    // Again: nothing to do.
    let r = w.drctl(&["copy"]);
    r.ok();
    assert!(
        r.stdout.contains("copied 0 (0 B), already there 3"),
        "{}",
        r.stdout
    );
    // The copies verify in their own repository.
    w.drctl(&["verify", "--job", "etc", "--repository", "cold", "--all"])
        .ok();
}

/// A copy killed with SIGKILL mid-stream leaves no manifest in the copy
/// repository (nothing lists it there); the daemon completes it at start.
#[test]
fn a_copy_killed_mid_stream_leaves_no_manifest_and_the_daemon_completes_it() {
    let src = scratch_dir("drctl-kill-src-");
    random_file(&src, "big.bin", 3 << 20);
    let copy_dir = scratch_dir("drctl-kill-copy-");
    let config = |limit: &str| {
        format!(
            "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
             [repositories.second]\ntype = \"local\"\npath = \"{}\"\n{limit}\n\
             [jobs.big]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\ncompression = \"none\"\n\
             copies = [\"second\"]\nretry_delay = \"1s\"\n",
            copy_dir.display(),
            src.display()
        )
    };
    let w = World::new(&config("rate_limit = \"256KiB/s\""));
    // The run commits in the local repository at full speed, then copies
    // at 256 KiB/s (12 s for 3 MiB): killed half-way.
    let mut child = w
        .command(&["run", "big"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let committed = || {
        std::fs::read_dir(w.repo_dir().join("big"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| manifest_at(&w.repo_dir(), "big", id).exists())
    };
    wait_until(Duration::from_secs(60), "the backup to commit", || {
        committed().is_some()
    });
    let id = committed().unwrap();
    let partial = copy_dir.join("big").join(&id);
    wait_until(Duration::from_secs(30), "the copy to start", || {
        std::fs::read_dir(&partial).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("files.tar"))
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !manifest_at(&copy_dir, "big", &id).exists(),
        "a killed copy must not commit"
    );
    assert_eq!(ids_in(&w, "big", "second"), Vec::<String>::new());
    assert_eq!(ids_in(&w, "big", "local"), vec![id.clone()]);

    // The daemon (no limit now) completes the copy at start.
    std::fs::write(
        &w.config,
        format!(
            "state_dir = \"{}/state\"\n{}",
            w.dir.display(),
            config("").replace("{dir}", &w.dir.display().to_string())
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&w);
    wait_until(Duration::from_secs(60), "the daemon to copy", || {
        manifest_at(&copy_dir, "big", &id).exists()
    });
    d.signal(libc::SIGTERM);
    d.wait(Duration::from_secs(30));
    assert_eq!(ids_in(&w, "big", "second"), vec![id.clone()]);
    w.drctl(&["verify", "--job", "big", "--repository", "second", "--deep"])
        .ok();

    // The killed copy's temporary and its lease are debris inside the
    // committed copy; once its lease has expired (2 s here), prune removes
    // both and nothing else.
    let debris = |what: &str| -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(&partial)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(&partial)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .filter(|n| n.contains(what))
            .collect();
        v.sort();
        v
    };
    assert_eq!(debris(".partial-").len(), 1, "{:?}", debris(""));
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        text.replace(
            "[repositories.second]\n",
            "[repositories.second]\nlease_ttl = \"2s\"\n",
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let r = w.drctl(&["prune", "--job", "big", "--repository", "second"]);
    r.ok();
    assert_eq!(debris(".partial-"), Vec::<String>::new(), "{}", r.all());
    assert_eq!(debris("lease"), Vec::<String>::new(), "{}", r.all());
    assert_eq!(ids_in(&w, "big", "second"), vec![id]);
    w.drctl(&["verify", "--job", "big", "--repository", "second", "--deep"])
        .ok();
}

/// An unreachable copy repository: the backup still succeeds (it is
/// committed in the job's repository), `copy_failed:JOB:REPO` fires, and
/// the daemon retries with backoff until the store is back, then resolves
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_copy_pages_and_the_daemon_retries_until_the_store_is_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let bucket = s3().create_bucket().await;
    let up = Arc::new(AtomicBool::new(false));
    let port = switchable_s3(up.clone());
    let src = scratch_dir("drctl-retry-src-");
    random_file(&src, "a.bin", 10_000);
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"http://127.0.0.1:{port}\"\npath_style = true\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\ncopies = [\"offsite\"]\nretry_delay = \"1s\"\n",
        src.display()
    ));
    let id = run_id(&w, "etc");
    assert!(
        active_alerts(&w).contains(&"copy_failed:etc:offsite".to_owned()),
        "{:?}",
        active_alerts(&w)
    );
    // drctl copy fails too, naming the repository (exit 1).
    let r = w.drctl(&["copy", "--job", "etc"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("etc local -> offsite"), "{}", r.stdout);

    let mut d = Daemon::start(&w);
    std::thread::sleep(Duration::from_secs(3));
    up.store(true, Ordering::SeqCst);
    let listed = || {
        let r = w.drctl(&["backups", "etc", "--json"]);
        r.code == 0 && r.stdout.contains("\"offsite\"")
    };
    wait_until(Duration::from_secs(60), "the retried copy", listed);
    wait_until(Duration::from_secs(30), "copy_failed to resolve", || {
        !active_alerts(&w).contains(&"copy_failed:etc:offsite".to_owned())
    });
    d.signal(libc::SIGTERM);
    d.wait(Duration::from_secs(30));
    assert!(d.log().contains("copy will be retried"), "{}", d.log());
    assert_eq!(ids_in(&w, "etc", "offsite"), vec![id]);
}

/// A source artifact with a flipped byte is never copied: the copy fails
/// its checksum on the way, the copy repository gets nothing, exit 3.
#[test]
fn a_damaged_source_is_not_copied() {
    let src = scratch_dir("drctl-damaged-src-");
    random_file(&src, "a.bin", 100_000);
    let copy_dir = scratch_dir("drctl-damaged-copy-");
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.second]\ntype = \"local\"\npath = \"{}\"\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n",
        copy_dir.display(),
        src.display()
    ));
    let id = run_id(&w, "etc");
    w.corrupt_artifact("etc", &id, "files.tar");
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap() + "copies = [\"second\"]\n",
    )
    .unwrap();
    let r = w.drctl(&["copy", "--json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("sha256 mismatch"), "{}", r.stdout);
    let dir = copy_dir.join("etc").join(&id);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the copy repository: {left:?}");
}

#[test]
fn copy_settings_are_checked_with_the_full_key() {
    let base = "[repositories.local]\ntype = \"local\"\npath = \"/tmp/r\"\n\
                [jobs.etc]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"local\"\n";
    let e = config_error(&format!("{base}copies = [\"offsite\"]\n"));
    assert!(
        e.contains("jobs.etc.copies") && e.contains("no repository named \"offsite\""),
        "{e}"
    );
    let e = config_error(&format!("{base}copies = [\"local\"]\n"));
    assert!(
        e.contains("jobs.etc.copies") && e.contains("the job's own repository"),
        "{e}"
    );
    let e = config_error(&format!(
        "{base}[jobs.etc.copy_retention.cold]\nkeep_last = 2\n"
    ));
    assert!(
        e.contains("jobs.etc.copy_retention.cold") && e.contains("not in copies"),
        "{e}"
    );
    let e = config_error(&format!("{base}rpo_copies = \"26h\"\n"));
    assert!(e.contains("jobs.etc.rpo_copies"), "{e}");
}

/// RPO per repository: the copy has a target of its own (`rpo_copies`),
/// is measured from the copy repository, pages on its own key and carries
/// a `repository` label in the metrics.
#[test]
fn a_lagging_copy_violates_its_own_rpo() {
    let src = scratch_dir("drctl-rpo-src-");
    random_file(&src, "a.bin", 10_000);
    let copy_dir = scratch_dir("drctl-rpo-copy-");
    let http = free_port();
    let w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.second]\ntype = \"local\"\npath = \"{}\"\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\ncopies = [\"second\"]\n\
         rpo = \"1h\"\nrpo_copies = \"3s\"\n",
        copy_dir.display(),
        src.display()
    ));
    run_id(&w, "etc");
    let rows = |w: &World| -> (i32, Vec<serde_json::Value>) {
        let r = w.drctl(&["rpo", "--json"]);
        (r.code, serde_json::from_str(&r.stdout).unwrap())
    };
    let (code, now) = rows(&w);
    assert_eq!(code, 0, "{now:?}");
    assert_eq!(now.len(), 2);
    std::thread::sleep(Duration::from_secs(4));
    let (code, late) = rows(&w);
    assert_eq!(code, 8, "{late:?}");
    let by_repo = |repo: &str| late.iter().find(|r| r["repository"] == repo).unwrap();
    assert_eq!(by_repo("local")["compliant"], true);
    assert_eq!(by_repo("second")["compliant"], false);
    assert_eq!(by_repo("second")["target_seconds"], 3.0);
    let alerts = active_alerts(&w);
    assert!(
        alerts.contains(&"rpo_violated:etc:second".to_owned()),
        "{alerts:?}"
    );
    assert!(
        !alerts.contains(&"rpo_violated:etc".to_owned()),
        "{alerts:?}"
    );
    let check = w.drctl(&["rpo", "--check"]);
    assert_eq!(check.code, 8);
    assert!(
        check.stdout.contains("etc in second: RPO violated"),
        "{}",
        check.stdout
    );

    let mut d = Daemon::start(&w);
    wait_for_endpoint(http);
    wait_until(
        Duration::from_secs(30),
        "per-repository RPO metrics",
        || {
            let (_, body) = http_get(http, "/metrics");
            body.contains("drctl_rpo_compliant{job_name=\"etc\",repository=\"second\"} 0")
                && body.contains("drctl_rpo_compliant{job_name=\"etc\",repository=\"local\"} 1")
        },
    );
    d.signal(libc::SIGTERM);
    d.wait(Duration::from_secs(30));

    // A fresh backup, copied at once: the copy complies again.
    run_id(&w, "etc");
    let (code, again) = rows(&w);
    assert_eq!(code, 0, "{again:?}");
    assert!(!active_alerts(&w).contains(&"rpo_violated:etc:second".to_owned()));
}

/// A PostgreSQL job in a local repository with a copy in a second local
/// repository; `url` is the database's, `extra` more job keys.
fn pg_two_repos(db: &str, second: &Path, extra: &str) -> World {
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.second]\ntype = \"local\"\npath = \"{}\"\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\ncopies = [\"second\"]\n{extra}",
        second.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg().url(db));
    w
}

/// A flipped byte in the primary's dump: `restore --latest` restores the
/// same backup from the copy, says so, and raises `backup_damaged` for the
/// damaged one; pinned with `--repository`, it fails (exit 3) instead.
#[test]
fn a_damaged_primary_falls_back_to_the_copy() {
    let pg = pg();
    let db = pg.create_db("fb_src");
    pg.seed(&db, &unique("fb_owner"), 200);
    let before = pg.fingerprint(&db);
    let second = scratch_dir("drctl-fb-second-");
    let w = pg_two_repos(&db, &second, "");
    let id = run_id(&w, "appdb");
    assert!(manifest_at(&second, "appdb", &id).exists());
    w.corrupt_artifact("appdb", &id, "database.dump");

    let pinned = unique("fb_pinned");
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--repository",
        "local",
        "--to",
        &pg.url(&pinned),
    ]);
    assert_eq!(r.code, 3, "{}", r.all());

    let target = unique("fb_dst");
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&target), "--json"]);
    r.ok();
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep["backup_id"], id.as_str());
    assert_eq!(rep["repository"], "second");
    let warned = rep["warnings"].to_string();
    assert!(
        warned.contains("in repository local could not be restored")
            && warned.contains("restored from repository second instead"),
        "{warned}"
    );
    assert_eq!(pg.fingerprint(&target), before);
    let alerts = active_alerts(&w);
    assert!(
        alerts.contains(&"backup_damaged:appdb:latest".to_owned()),
        "{alerts:?}"
    );
}

/// The primary unreachable (an S3 endpoint that resets every connection):
/// `restore --latest` restores from the copy and names the repository it
/// passed over.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_primary_falls_back_to_the_copy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let pg = pg();
    let db = pg.create_db("un_src");
    pg.seed(&db, &unique("un_owner"), 100);
    let before = pg.fingerprint(&db);
    let bucket = s3().create_bucket().await;
    let up = Arc::new(AtomicBool::new(true));
    let port = switchable_s3(up.clone());
    let second = scratch_dir("drctl-un-second-");
    let mut w = World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"http://127.0.0.1:{port}\"\npath_style = true\n\
         [repositories.second]\ntype = \"local\"\npath = \"{}\"\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\ncopies = [\"second\"]\n",
        second.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let id = tokio::task::spawn_blocking({
        let mut c = w.command(&["run", "appdb"]);
        move || Run::from(c.output().unwrap())
    })
    .await
    .unwrap();
    let id = id.ok().stdout.trim().to_owned();
    up.store(false, Ordering::SeqCst);
    let target = unique("un_dst");
    let r = tokio::task::spawn_blocking({
        let mut c = w.command(&["restore", "--latest", "--to", &pg.url(&target)]);
        move || Run::from(c.output().unwrap())
    })
    .await
    .unwrap();
    r.ok();
    assert!(
        r.stderr.contains("repository offsite passed over"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("restored {id} from second")),
        "{}",
        r.stderr
    );
    assert_eq!(pg.fingerprint(&target), before);
}

/// A drill pinned to the copy repository restores from it, so the offsite
/// copy is proven restorable, not only the local one.
#[test]
fn a_drill_restores_from_the_copy_repository_it_names() {
    let pg = pg();
    let db = pg.create_db("dr_src");
    pg.seed(&db, &unique("dr_owner"), 100);
    let second = scratch_dir("drctl-dr-second-");
    let mut w = pg_two_repos(
        &db,
        &second,
        "[drills.offsite]\njob = \"appdb\"\nrepository = \"second\"\ntarget = { server_url_env = \"DRILL_PG_URL\" }\n\
         [[drills.offsite.checks]]\nsql = \"SELECT count(*) FROM public.customer\"\nexpect = \">= 1\"\n",
    );
    w.set_env("DRILL_PG_URL", &pg.url("postgres"));
    let id = run_id(&w, "appdb");
    // Damage the local copy: a drill of the copy does not care.
    w.corrupt_artifact("appdb", &id, "database.dump");
    let r = w.drctl(&["drill", "run", "offsite", "--json"]);
    r.ok();
    let rec: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rec["outcome"], "passed", "{rec:#}");
    assert_eq!(rec["backup_id"], id.as_str());
    // A drill naming a repository the job does not use is a config error.
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap().replace(
            "repository = \"second\"\ntarget",
            "repository = \"nowhere\"\ntarget",
        ),
    )
    .unwrap();
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("drills.offsite.repository"),
        "{}",
        r.stderr
    );
}
