//! Point-in-time recovery with a real cluster archiving through `drctl wal
//! push` (archive_command) into the loopback S3 server, encrypted: base
//! backups with pg_basebackup, restores to a time and to the end of the
//! archive into fresh data directories started by the test, a deleted WAL
//! segment refusing the restore by name, and the archive_command contract
//! (idempotent, refusing different content, a SIGKILLed push retried).
// One scenario told in order: each step depends on the archive the earlier
// ones built.
#![allow(clippy::too_many_lines)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program args`, as `postgres` when we are root.
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A cluster of the test's own, archiving with `archive_command`.
struct Cluster {
    data: PathBuf,
    port: u16,
}

impl Cluster {
    fn init(dir: &Path) -> PathBuf {
        let data = dir.join("data");
        let pw = dir.join("pw");
        std::fs::write(&pw, PG_PASSWORD).unwrap();
        if is_root() {
            assert!(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .unwrap()
                .success());
        }
        let out = as_pg(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "--pwfile"])
            .arg(&pw)
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        data
    }

    fn start(data: &Path, port: u16, extra: &str) -> Cluster {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c full_page_writes=on {extra}",
            data.display()
        );
        let log = data.join("test-server.log");
        let out = as_pg(&pg_bin("pg_ctl"))
            .args(["start", "-w", "-t", "120", "-D"])
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Cluster {
            data: data.to_owned(),
            port,
        }
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    fn psql(&self, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Row count and md5 of the sorted rows of the written table.
    fn fingerprint(&self) -> String {
        self.psql("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM ledger x")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_pg(&pg_bin("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .output();
    }
}

/// A fresh age key pair: (identity file path, recipient).
fn keypair(dir: &Path) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join("pitr.key");
    std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (path, id.to_public().to_string())
}

/// Names of the job's committed WAL files in the bucket.
async fn stored_wal(bucket: &str) -> Vec<String> {
    s3().keys(bucket, "db/wal/")
        .await
        .iter()
        .filter_map(|k| k.strip_prefix("db/wal/")?.strip_suffix(".json"))
        .map(str::to_owned)
        .collect()
}

/// Wait until the segment the cluster is writing now is archived: switch
/// to a new one and wait for the old one's record.
async fn archive_now(c: &Cluster, bucket: &str) {
    let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql("SELECT pg_switch_wal()");
    wait_stored(bucket, &seg, &|| {
        format!(
            "server log: {}",
            std::fs::read_to_string(c.data.join("test-server.log")).unwrap_or_default()
        )
    })
    .await;
}

/// Wait (30 s at most) until WAL file `seg` has its record in the bucket;
/// `context` explains a timeout (a server's or a daemon's log).
async fn wait_stored(bucket: &str, seg: &str, context: &dyn Fn() -> String) {
    for _ in 0..300 {
        if stored_wal(bucket).await.iter().any(|n| n == seg) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{seg} was not stored; {}", context());
}

/// `drctl restore --job db ARGS --to-datadir DIR`.
fn restore_db(w: &World, args: &[&str], dir: &Path) -> Run {
    let mut all = vec![
        "restore",
        "--job",
        "db",
        "--to-datadir",
        dir.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    w.drctl(&all)
}

/// Start a restored data directory on a free port and read its fingerprint.
fn fingerprint_of(data: &Path) -> (String, String) {
    let c = Cluster::start(data, free_port(), "-c archive_mode=off");
    let fp = c.fingerprint();
    let ro = c.psql("SELECT pg_is_in_recovery()");
    (fp, ro)
}

/// A world with one encrypted S3 repository and a physical job `db`
/// (`extra` keys added), and a cluster archiving into it.
struct Setup {
    root: PathBuf,
    bucket: String,
    identity: PathBuf,
    w: World,
    c: Cluster,
    /// The `-c` options that make a server archive into the job.
    archive_command: String,
}

async fn setup(extra: &str) -> Setup {
    let root = scratch_dir("drctl-pitr-");
    let bucket = s3().create_bucket().await;
    let keys = scratch_dir("drctl-pitr-keys-");
    let (identity, recipient) = keypair(&keys);
    let mut w = World::new(&format!(
        "fleet_publish = \"1s\"\nfleet_stale = \"8s\"\n[repositories.s3]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\nencryption = {{ recipients = [\"{recipient}\"] }}\n\
         [jobs.db]\ntype = \"postgres_physical\"\nurl_env = \"PHYS_URL\"\nrepository = \"s3\"\n{extra}",
        s3().endpoint
    ));
    // archive_command runs as the server's user with the server's
    // environment: a script gives it the test's S3 credentials.
    let script = w.dir.join("archive.sh");
    let mut env_lines = String::new();
    for (k, v) in &w.env {
        env_lines.push_str(&format!("export {k}='{v}'\n"));
    }
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{env_lines}exec {} -c {} wal push --job db \"$1\"\n",
            env!("CARGO_BIN_EXE_drctl"),
            w.config.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let archive_command = format!(
        "-c wal_level=replica -c archive_mode=on -c archive_command='{} %p'",
        script.display()
    );
    let data = Cluster::init(&root);
    let c = Cluster::start(&data, free_port(), &archive_command);
    w.set_env("PHYS_URL", &c.url());
    w.set_env("DRCTL_AGE_IDENTITY_FILE", identity.to_str().unwrap());
    Setup {
        root,
        bucket,
        identity,
        w,
        c,
        archive_command,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_restores_to_a_moment_and_to_the_end_of_its_archive_and_a_gap_is_refused_by_name()
{
    let Setup {
        root, bucket, w, c, ..
    } = setup("rpo = \"1h\"\n").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp(), note text)");
    c.psql("INSERT INTO ledger (id, note) SELECT g, 'before the base backup' FROM generate_series(1, 1000) g");

    // A base backup: pg_basebackup's tar, encrypted, with its positions.
    let r = w.drctl(&["run", "db"]);
    r.ok();
    let id = r.stdout.trim().to_owned();
    let m: serde_json::Value =
        serde_json::from_str(&w.drctl(&["backups", "db", "--json"]).ok().stdout).unwrap();
    let listed = m.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{m}");
    assert_eq!(listed[0]["id"], id.as_str());

    // Writes at known times: T1 between batch A and batch B, T2 between B and C.
    c.psql("INSERT INTO ledger (id, note) SELECT g, 'batch A' FROM generate_series(1001, 2000) g");
    archive_now(&c, &bucket).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t1 = chrono::Utc::now();
    let f1 = c.fingerprint();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.psql("INSERT INTO ledger (id, note) SELECT g, 'batch B' FROM generate_series(2001, 3000) g");
    c.psql("UPDATE ledger SET note = 'changed in B' WHERE id <= 100");
    archive_now(&c, &bucket).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t2 = chrono::Utc::now();
    let f2 = c.fingerprint();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.psql("DELETE FROM ledger WHERE id % 3 = 0");
    c.psql("INSERT INTO ledger (id, note) SELECT g, 'batch C' FROM generate_series(3001, 3500) g");
    archive_now(&c, &bucket).await;
    let f_end = c.fingerprint();
    assert!(f1 != f2 && f2 != f_end);

    // The RPO is the age of the newest WAL stored, not of the base backup.
    let r = w.drctl(&["rpo", "--json"]);
    r.ok();
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["compliant"], true, "{row}");
    assert!(row["age_seconds"].as_f64().unwrap() < 30.0, "{row}");
    assert_eq!(
        row["newest_backup"].as_str().unwrap().len(),
        24,
        "a WAL segment: {row}"
    );

    // verify: the base backup's tar walked, the WAL chain whole, each file
    // decoded.
    let r = w.drctl(&["verify", "--job", "db", "--deep"]);
    r.ok();
    assert!(r.stdout.contains("ok   db WAL in s3"), "{}", r.stdout);

    // The plan, without touching anything.
    let d1 = root.join("restored-t1");
    let at = t1.to_rfc3339();
    let r = restore_db(&w, &["--at", &at, "--dry-run", "--json"], &d1);
    r.ok();
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["backup_id"], id.as_str(), "{plan}");
    assert!(plan["wal_files"].as_u64().unwrap() >= 2, "{plan}");
    assert!(!d1.exists(), "a dry run creates nothing");
    // The WAL's stored size is its objects', not their records'.
    let (first, last) = (
        plan["wal_range"][0].as_str().unwrap(),
        plan["wal_range"][1].as_str().unwrap(),
    );
    let listed = s3()
        .client()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("db/wal/")
        .send()
        .await
        .unwrap();
    let objects: u64 = listed
        .contents()
        .iter()
        .filter_map(|o| {
            let name = o.key()?.strip_prefix("db/wal/")?;
            let seg = name.get(..24)?;
            let ours = name.len() > 25
                && !name.ends_with(".json")
                && !name.contains("partial")
                && !name.contains("backup")
                && (first..=last).contains(&seg);
            ours.then(|| o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
        })
        .sum();
    assert_eq!(
        plan["wal_stored_bytes"].as_u64().unwrap(),
        objects,
        "{plan}"
    );

    // To T1: exactly the state at T1.
    let r = restore_db(&w, &["--at", &at], &d1);
    r.ok();
    assert!(!d1.join("drctl_wal").exists() && !d1.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(d1.join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto.contains("drctl point-in-time restore") && !auto.contains("drctl_wal"),
        "recovery settings removed: {auto}"
    );
    assert!(
        auto.trim_end().ends_with("archive_mode = 'off'"),
        "the copy does not archive into the job: {auto}"
    );
    let (fp, in_recovery) = fingerprint_of(&d1);
    assert_eq!(fp, f1, "the state at T1: {}", r.stderr);
    assert_eq!(in_recovery, "f", "promoted");

    // To T2 with the other spelling of a time.
    let d2 = root.join("restored-t2");
    let at2 = t2.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    restore_db(&w, &["--at", &at2], &d2).ok();
    assert_eq!(fingerprint_of(&d2).0, f2);

    // --latest: the end of the archive, which is the final state.
    let d3 = root.join("restored-latest");
    restore_db(&w, &["--latest"], &d3).ok();
    assert_eq!(fingerprint_of(&d3).0, f_end);

    // A non-empty data directory is refused, untouched.
    let r = restore_db(&w, &["--latest"], &d3);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);

    // A flipped byte in the stored base backup: the streamed restore stops
    // on it (exit 3) and leaves the directory as empty as it found it.
    let base_key = s3()
        .keys(&bucket, &format!("db/{id}/"))
        .await
        .into_iter()
        .find(|k| k.contains("base.tar"))
        .unwrap();
    let original = s3().get(&bucket, &base_key).await;
    let put = |bytes: Vec<u8>| s3().put(&bucket, &base_key, bytes);
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    put(flipped).await;
    let d_bad = root.join("restored-corrupt");
    std::fs::create_dir_all(&d_bad).unwrap();
    let r = restore_db(&w, &["--at", &at], &d_bad);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("base.tar"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(&d_bad).unwrap().count(),
        0,
        "a failed restore leaves the directory empty"
    );
    assert!(
        active_alerts(&w)
            .iter()
            .any(|k| k.starts_with("backup_damaged:")),
        "the damaged base backup is alerted"
    );
    put(original).await;
    // Recorded as damaged, it is passed over until a check passes again.
    let r = restore_db(&w, &["--latest", "--dry-run"], &d_bad);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("recorded as damaged"), "{}", r.stderr);
    w.drctl(&["verify", "--job", "db"]).ok();

    // A target past the archive is refused before anything is written.
    let d4 = root.join("restored-future");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let r = restore_db(&w, &["--at", &future], &d4);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("after the end of the archived WAL"),
        "{}",
        r.stderr
    );
    assert!(!d4.exists());

    // The archive_command contract: the same file again is a no-op; other
    // content under a stored name is refused (exit 3), nothing overwritten.
    let stored = stored_wal(&bucket).await;
    let seg = stored
        .iter()
        .filter(|n| n.len() == 24)
        .max()
        .unwrap()
        .clone();
    let spot = scratch_dir("drctl-pitr-push-");
    let copy = spot.join(&seg);
    w.drctl(&["wal", "fetch", "--job", "db", &seg, copy.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), 16 << 20);
    w.drctl(&["wal", "push", "--job", "db", copy.to_str().unwrap()])
        .ok();
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    let r = w.drctl(&["wal", "push", "--job", "db", copy.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("different content"), "{}", r.stderr);
    let again = spot.join("again");
    std::fs::create_dir_all(&again).unwrap();
    w.drctl(&[
        "wal",
        "fetch",
        "--job",
        "db",
        &seg,
        again.join(&seg).to_str().unwrap(),
    ])
    .ok();
    assert_ne!(
        std::fs::read(again.join(&seg)).unwrap(),
        bytes,
        "the stored file is the original"
    );
    // A file that is not stored: exit 5, nothing written.
    let r = w.drctl(&[
        "wal",
        "fetch",
        "--job",
        "db",
        "0000000100000000000000FE",
        spot.join("x").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(!spot.join("x").exists());
    // A name that is not a WAL file: a usage error.
    let r = w.drctl(&["wal", "push", "--job", "db", "/etc/passwd"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    // A segment deleted from the repository: restores across it are refused
    // naming it, `wal list` shows the gap, and one before it still works.
    let segs: Vec<String> = {
        let mut s: Vec<String> = stored_wal(&bucket)
            .await
            .into_iter()
            .filter(|n| n.len() == 24)
            .collect();
        s.sort();
        s
    };
    // The segment holding batch B's records: archived after T1, before T2.
    let victim = segs[segs.len() - 2].clone();
    s3().client()
        .await
        .delete_object()
        .bucket(&bucket)
        .key(format!("db/wal/{victim}.json"))
        .send()
        .await
        .unwrap();
    let d5 = root.join("restored-gap");
    let r = restore_db(&w, &["--latest"], &d5);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("WAL gap: {victim}")),
        "{}",
        r.stderr
    );
    assert!(!d5.exists(), "refused before anything was written");
    let r = w.drctl(&["wal", "list", "--job", "db", "--json"]);
    r.ok();
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list["gaps"], serde_json::json!([victim]), "{list}");
    // The daemon sees the gap at once (critical wal_gap:db) ...
    {
        let _d = Daemon::start(&w);
        wait_until(
            Duration::from_secs(30),
            "the daemon's wal_gap alert",
            || active_alerts(&w).contains(&"wal_gap:db".to_string()),
        );
    }
    // ... and verify fails on it (exit 3).
    let r = w.drctl(&["verify", "--job", "db"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("FAIL missing {victim}")),
        "{}",
        r.stdout
    );
    assert!(active_alerts(&w).contains(&"wal_gap:db".to_string()));

    // A push SIGKILLed between its upload and its record stores nothing;
    // PostgreSQL's retry stores the file once.
    let name = "000000010000000000000001.00000028.backup";
    let file = spot.join(name);
    std::fs::write(&file, b"START WAL LOCATION: 0/1000028\n").unwrap();
    paused_at(
        &w,
        "wal.push.uploaded",
        &["wal", "push", "--job", "db", file.to_str().unwrap()],
    )
    .kill();
    assert!(
        !stored_wal(&bucket).await.contains(&name.to_string()),
        "no record, not stored"
    );
    w.drctl(&["wal", "push", "--job", "db", file.to_str().unwrap()])
        .ok();
    w.drctl(&["wal", "push", "--job", "db", file.to_str().unwrap()])
        .ok();
    let records = stored_wal(&bucket)
        .await
        .iter()
        .filter(|n| n.as_str() == name)
        .count();
    assert_eq!(records, 1);
    let back = spot.join("back.backup");
    w.drctl(&["wal", "fetch", "--job", "db", name, back.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&file).unwrap());
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_wal_only_below_the_oldest_kept_base_backup_and_restores_follow_a_new_timeline(
) {
    let Setup {
        root,
        bucket,
        w,
        c,
        archive_command,
        ..
    } = setup("retention = { keep_last = 2 }\n").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'first' FROM generate_series(1, 500) g");
    w.drctl(&["run", "db"]).ok();
    c.psql("INSERT INTO ledger SELECT g, 'between' FROM generate_series(501, 1000) g");
    archive_now(&c, &bucket).await;
    let before_second = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.psql("SELECT pg_switch_wal()");
    let second = w.drctl(&["run", "db"]);
    second.ok();
    let second_id = second.stdout.trim().to_owned();
    let m = {
        let c3 = s3().client().await;
        let o = c3
            .get_object()
            .bucket(&bucket)
            .key(format!("db/{second_id}/manifest.json"))
            .send()
            .await
            .unwrap();
        let b = o.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()
    };
    let start_seg = {
        let lsn = m["physical"]["start_lsn"].as_str().unwrap();
        let (hi, lo) = lsn.split_once('/').unwrap();
        let l = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
        format!("00000001{:08X}{:08X}", (l >> 24) >> 8, (l >> 24) & 0xFF)
    };
    c.psql("INSERT INTO ledger SELECT g, 'after' FROM generate_series(1001, 1500) g");
    archive_now(&c, &bucket).await;
    // Retention runs after each backup: with two kept, nothing went yet.
    // Keep one from now on.
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, text.replace("keep_last = 2", "keep_last = 1")).unwrap();
    let below: Vec<String> = stored_wal(&bucket)
        .await
        .into_iter()
        .filter(|n| !n.ends_with(".history") && n[..24] < *start_seg.as_str())
        .collect();
    assert!(
        !below.is_empty(),
        "WAL older than the second base backup is stored: {start_seg} {:?}",
        stored_wal(&bucket).await
    );

    // Dry run: the plan, nothing deleted.
    let r = w.drctl(&["prune", "--job", "db", "--dry-run"]);
    r.ok();
    assert!(
        r.stdout
            .contains(&format!("WAL: {} file(s) before", below.len())),
        "{}",
        r.stdout
    );
    assert_eq!(
        stored_wal(&bucket)
            .await
            .iter()
            .filter(|n| below.contains(n))
            .count(),
        below.len()
    );
    let r = w.drctl(&["prune", "--job", "db"]);
    r.ok();
    let left = stored_wal(&bucket).await;
    assert!(left.iter().all(|n| !below.contains(n)), "{left:?}");
    assert!(
        left.contains(&start_seg),
        "the kept base backup's WAL stays: {left:?}"
    );
    // No object of a pruned file is left behind.
    let objects: Vec<String> = s3()
        .client()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("db/wal/")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    for b in &below {
        assert!(
            !objects
                .iter()
                .any(|k| k.starts_with(&format!("db/wal/{b}."))),
            "{b}: {objects:?}"
        );
    }
    // Before the oldest base backup kept: refused by name.
    let d0 = root.join("too-early");
    let r = restore_db(&w, &["--at", &before_second.to_rfc3339()], &d0);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("before the oldest base backup"),
        "{}",
        r.stderr
    );

    // Restore the end of the archive, stop the old cluster, and run the
    // restored one as the new primary, archiving into the same job: a new
    // timeline.
    let d1 = root.join("new-primary");
    restore_db(&w, &["--latest"], &d1).ok();
    drop(c);
    let p = Cluster::start(&d1, free_port(), &archive_command);
    assert_eq!(p.psql("SELECT count(*) FROM ledger"), "1500");
    p.psql("INSERT INTO ledger SELECT g, 'on the new timeline' FROM generate_series(1501, 1700) g");
    archive_now(&p, &bucket).await;
    assert!(stored_wal(&bucket)
        .await
        .contains(&"00000002.history".to_string()));
    let f = p.fingerprint();
    drop(p);

    // A restore now follows timeline 2 to its end.
    let d2 = root.join("on-timeline-2");
    let r = restore_db(&w, &["--latest", "--json"], &d2);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["plan"]["target_timeline"], 2, "{report}");
    assert_eq!(
        report["timeline"], 3,
        "promoted onto a timeline of its own: {report}"
    );
    assert_eq!(fingerprint_of(&d2).0, f);
}

/// The README's "Point-in-time recovery by hand", run as written (the
/// bucket, key and time substituted): `aws`, `age`, `zstd`, `tar` and
/// PostgreSQL's recovery, no drctl.
#[tokio::test(flavor = "multi_thread")]
async fn a_point_in_time_is_recovered_with_standard_tools_only() {
    let Setup {
        root,
        bucket,
        identity,
        w,
        c,
        ..
    } = setup("").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    let id = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    c.psql("INSERT INTO ledger SELECT g, 'before the target' FROM generate_series(301, 600) g");
    archive_now(&c, &bucket).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = chrono::Utc::now();
    let want = c.fingerprint();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.psql("DELETE FROM ledger WHERE id > 100");
    archive_now(&c, &bucket).await;
    drop(c);

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("Point-in-time recovery by hand")
        .nth(1)
        .expect("the README's section");
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its shell block");
    assert!(
        script.trim_end().ends_with("pg_ctl start -D restored"),
        "{script}"
    );
    let script = script
        .replace(
            "s3://acme-backups/db1/appdb-pitr",
            &format!("s3://{bucket}/db"),
        )
        .replace("~/drctl-vault.key", identity.to_str().unwrap())
        .replace(
            "2026-12-01 03:14:00+00",
            &at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        )
        .replace("pg_ctl start -D restored", "");
    let work = root.join("by-hand");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c"])
        .arg(format!(
            "aws() {{ command aws --endpoint-url {} --region us-east-1 \"$@\"; }}\nID={id}\n{script}",
            s3().endpoint
        ))
        .current_dir(&work)
        .envs(w.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let restored = work.join("restored");
    if is_root() {
        assert!(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&restored)
            .status()
            .unwrap()
            .success());
    }
    let r = Cluster::start(&restored, free_port(), "-c archive_mode=off");
    wait_until(Duration::from_secs(60), "the recovery to promote", || {
        r.psql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(r.fingerprint(), want);
}

/// `wal = "stream"`: the daemon runs pg_receivewal on a slot; finished
/// segments and, every `wal_flush`, the unfinished one reach the
/// repository; a write that never filled a segment is restored; a killed
/// pg_receivewal is started again and the chain has no gap.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_wal_restores_the_last_write_of_an_unfinished_segment_and_survives_a_killed_receiver(
) {
    let Setup {
        root, bucket, w, c, ..
    } = setup(
        "wal = \"stream\"\nwal_flush = \"1s\"\nrpo = \"1m\"\n\
         [repositories.disk]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.db-local]\ntype = \"postgres_physical\"\nurl_env = \"PHYS_URL\"\nrepository = \"disk\"\nwal = \"stream\"\nwal_flush = \"1s\"\n",
    )
    .await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    let d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "the replication slots", || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('drctl_db', 'drctl_db_local') AND active")
            == "2"
    });
    w.drctl(&["run", "db"]).ok();
    // The same cluster streamed into a local repository too.
    w.drctl(&["run", "db-local"]).ok();
    c.psql("INSERT INTO ledger SELECT g, 'finished segment' FROM generate_series(301, 600) g");
    let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql("SELECT pg_switch_wal()");
    wait_stored(&bucket, &seg, &|| d.log()).await;

    // A write that fills no segment: only the .partial carries it.
    c.psql("INSERT INTO ledger SELECT g, 'unfinished segment' FROM generate_series(601, 650) g");
    let current = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let written = chrono::Utc::now();
    let f = c.fingerprint();
    let partial = format!("{current}.partial");
    let mut stored_after = false;
    for _ in 0..100 {
        let client = s3().client().await;
        if let Ok(o) = client
            .head_object()
            .bucket(&bucket)
            .key(format!("db/wal/{partial}.json"))
            .send()
            .await
        {
            let t = o.last_modified().unwrap().secs();
            if t > written.timestamp() {
                stored_after = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stored_after,
        "{partial} stored after the write: {}",
        d.log()
    );
    let r = w.drctl(&["rpo", "--json"]);
    r.ok();
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(rows[0]["age_seconds"].as_f64().unwrap() < 10.0, "{rows}");
    let d1 = root.join("from-the-partial");
    restore_db(&w, &["--latest"], &d1).ok();
    assert_eq!(
        fingerprint_of(&d1).0,
        f,
        "the unfinished segment's write is restored"
    );

    // pg_receivewal killed: started again, nothing missed.
    let pid = c.psql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'drctl_db'");
    assert!(Command::new("pkill")
        .args(["-9", "-x", "pg_receivewal"])
        .status()
        .unwrap()
        .success());
    wait_until(
        Duration::from_secs(30),
        "pg_receivewal to stream again",
        || {
            let p = c.psql("SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = 'drctl_db'");
            p != "0" && p != pid
        },
    );
    c.psql("INSERT INTO ledger SELECT g, 'after the restart' FROM generate_series(651, 900) g");
    let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql("SELECT pg_switch_wal()");
    let f2 = c.fingerprint();
    wait_stored(&bucket, &seg, &|| d.log()).await;
    let local = w.dir.join(format!("repo/db-local/wal/{seg}.json"));
    wait_until(
        Duration::from_secs(30),
        "the local job's copy of it",
        || local.exists(),
    );
    let r = w.drctl(&["wal", "list", "--job", "db", "--json"]);
    r.ok();
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list["gaps"], serde_json::json!([]), "{list}");
    drop(d);
    let d2 = root.join("after-the-restart");
    restore_db(&w, &["--latest"], &d2).ok();
    assert_eq!(fingerprint_of(&d2).0, f2);
    let d3 = root.join("from-the-local-repository");
    w.drctl(&[
        "restore",
        "--job",
        "db-local",
        "--latest",
        "--to-datadir",
        d3.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(fingerprint_of(&d3).0, f2);
}

/// A point-in-time drill: a random point inside the window, restored into
/// a throwaway data directory, proven by the daemon's marker rows (the
/// newest at or before the target is recent, none after) and SQL checks,
/// recorded and removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_pitr_drill_restores_a_random_point_and_proves_it_with_the_marker_rows() {
    let Setup { bucket, w, c, .. } = setup(
        "marker = true\nmarker_interval = \"2s\"\n\
         [drills.pitr-weekly]\njob = \"db\"\nat = \"random\"\nrto = \"10m\"\n\
         [[drills.pitr-weekly.checks]]\nsql = \"SELECT count(*) FROM ledger\"\nexpect = \">= 300\"\n",
    )
    .await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    let d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "the first marker rows", || {
        c.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'drctl_marker'") == "1"
            && c.psql("SELECT count(*) FROM drctl_marker")
                .parse::<i64>()
                .unwrap_or(0)
                >= 2
    });
    w.drctl(&["run", "db"]).ok();
    for i in 0..4 {
        c.psql(&format!(
            "INSERT INTO ledger SELECT g, 'round {i}' FROM generate_series({}, {}) g",
            1000 + i * 100,
            1099 + i * 100
        ));
        archive_now(&c, &bucket).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    archive_now(&c, &bucket).await;
    // Before any drill a dry run has no estimate; it says so.
    let scratch = scratch_dir("drctl-pitr-plan-").join("data");
    let plan_of = || {
        let r = restore_db(&w, &["--latest", "--dry-run", "--json"], &scratch);
        let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
        plan
    };
    let plan = plan_of();
    assert!(plan["estimate"].is_null(), "{plan}");
    assert!(plan["work_bytes"].as_u64().unwrap() > 16 << 20, "{plan}");
    let r = restore_db(&w, &["--latest", "--dry-run"], &scratch);
    assert!(r.ok().stderr.contains("estimate    none"), "{}", r.stderr);

    // A drill killed while its recovery server runs, or while its
    // verification server runs: the server dies with it, and the next
    // `drctl status` sweeps what it left, saying so.
    let drills = w.dir.join("state").join("drills");
    for point in ["pitr.recovery.promoted", "pitr.drill.verifying"] {
        let drill = paused_at(&w, point, &["drill", "run", "pitr-weekly"]);
        let dir = std::fs::read_dir(&drills)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let pid: i32 = std::fs::read_to_string(dir.join("data").join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(pid));
        drill.kill();
        wait_until(
            Duration::from_secs(15),
            "the killed drill's server to die",
            || !alive(pid),
        );
        let st = w.drctl(&["status"]);
        assert!(
            st.ok()
                .stderr
                .contains("point-in-time drill pitr-weekly that was killed"),
            "{point}: {}",
            st.stderr
        );
        assert_eq!(
            std::fs::read_dir(&drills).map_or(0, Iterator::count),
            0,
            "{point}: swept by status"
        );
    }
    let r = w.drctl(&["drill", "run", "pitr-weekly", "--json"]);
    r.ok();
    let rec: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rec["outcome"], "passed", "{rec}");
    assert!(
        rec["swept"].as_array().is_none_or(Vec::is_empty),
        "nothing left for the drill itself: {rec}"
    );
    let checks = rec["checks"].as_array().unwrap();
    let marker = checks
        .iter()
        .find(|c| c["kind"] == "marker")
        .expect("a marker check");
    assert_eq!(marker["ok"], true, "{rec}");
    assert!(
        checks.iter().any(|c| c["kind"] == "sql" && c["ok"] == true),
        "{rec}"
    );
    assert!(
        rec["target"].as_str().unwrap().contains("recovered to"),
        "{rec}"
    );
    // The throwaway directory is gone, and the killed run's too.
    let left: Vec<_> = std::fs::read_dir(&drills)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // The drill's rate now estimates a restore: its seconds per byte of
    // work (fetch and restore phases over the bytes it processed), times
    // this restore's work.
    assert!(rec["work_bytes"].as_u64().unwrap() > 0, "{rec}");
    let plan = plan_of();
    assert_eq!(plan["estimate"]["drills"], 1, "{plan}");
    let phase = |name: &str| {
        rec["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["seconds"]
            .as_f64()
            .unwrap()
    };
    let rate = (phase("fetch") + phase("restore")) / rec["work_bytes"].as_f64().unwrap();
    let want = rate * plan["work_bytes"].as_f64().unwrap();
    let got = plan["estimate"]["seconds"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-6 * want.max(1.0), "{got} vs {want}");
    let r = restore_db(&w, &["--latest", "--dry-run"], &scratch);
    assert!(
        r.ok().stderr.contains("past drill of this job, this host"),
        "{}",
        r.stderr
    );

    // A fresh host (its own empty state) in an incident: no drill of its
    // own, so the estimate comes from the drills the daemon published into
    // the repository with its status.
    let published = || async {
        let mut restores = 0;
        for key in s3().keys(&bucket, "_hosts/").await {
            let body = s3().get(&bucket, &key).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            restores += v["drills"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["restores"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
        }
        restores
    };
    for _ in 0..100 {
        if published().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        published().await,
        1,
        "the daemon publishes the drill's restore"
    );
    let text = std::fs::read_to_string(&w.config).unwrap();
    let body: Vec<&str> = text.lines().skip(1).collect();
    let mut fresh = World::new(&body.join("\n"));
    for (k, v) in &w.env {
        fresh.set_env(k, v);
    }
    let r = restore_db(&fresh, &["--latest", "--dry-run", "--json"], &scratch);
    let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(plan["estimate"]["drills"], 1, "{plan}");
    assert!(
        plan["estimate"]["from"]
            .as_str()
            .unwrap()
            .starts_with("drills published by "),
        "{plan}"
    );
    let got = plan["estimate"]["seconds"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-6 * want.max(1.0), "{got} vs {want}");
    drop(d);
}

/// `verify --deep` unpacks each base backup and runs PostgreSQL's own
/// `pg_verifybackup` on it; a base backup whose stored object matches its
/// checksum but whose files do not match pg_basebackup's `backup_manifest`
/// (what a bug upstream of drctl's hashing would leave) is failed by it.
#[tokio::test(flavor = "multi_thread")]
async fn verify_deep_runs_pg_verifybackup_and_fails_a_base_backup_postgresql_would_reject() {
    let root = scratch_dir("drctl-pitr-verify-");
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.db]\ntype = \"postgres_physical\"\nurl_env = \"PHYS_URL\"\nrepository = \"local\"\n",
    );
    let data = Cluster::init(&root);
    let c = Cluster::start(
        &data,
        free_port(),
        "-c wal_level=replica -c archive_mode=on -c archive_command=/bin/true",
    );
    w.set_env("PHYS_URL", &c.url());
    let id = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    let v = w.drctl(&["verify", "--job", "db", "--deep"]);
    v.ok();
    assert!(
        v.stdout
            .contains("pg_verifybackup: backup successfully verified"),
        "{}",
        v.stdout
    );
    assert_eq!(
        std::fs::read_dir(w.dir.join("state").join("tmp"))
            .unwrap()
            .count(),
        0,
        "the scratch copy is removed"
    );

    // Rewrite the stored base backup with one byte of PG_VERSION changed,
    // and the manifest's size and SHA-256 to match the new object.
    let dir = w.repo_dir().join("db").join(&id);
    let obj = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("base.tar"))
        .unwrap();
    let out = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(&obj)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut tar_bytes = out.stdout;
    let at = {
        let mut a = tar::Archive::new(std::io::Cursor::new(&tar_bytes));
        a.entries()
            .unwrap()
            .flatten()
            .find(|e| e.path().unwrap().to_string_lossy() == "PG_VERSION")
            .unwrap()
            .raw_file_position() as usize
    };
    tar_bytes[at] = if tar_bytes[at] == b'9' { b'8' } else { b'9' };
    let mut z = Command::new("zstd")
        .args(["-q", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = z.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &tar_bytes));
    let stored = z.wait_with_output().unwrap().stdout;
    feeder.join().unwrap().unwrap();
    std::fs::write(&obj, &stored).unwrap();
    let mpath = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    for a in m["artifacts"].as_array_mut().unwrap() {
        if a["name"].as_str().unwrap().contains("base.tar") {
            a["stored_bytes"] = stored.len().into();
            a["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored)).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    // The checksum alone passes; pg_verifybackup does not.
    w.drctl(&["verify", "--job", "db"]).ok();
    let v = w.drctl(&["verify", "--job", "db", "--deep"]);
    assert_eq!(v.code, 3, "{}", v.all());
    assert!(
        v.stdout.contains("pg_verifybackup rejects") && v.stdout.contains("PG_VERSION"),
        "{}",
        v.stdout
    );

    drop(c);
}

/// A cluster with a tablespace outside its data directory: pg_basebackup
/// writes one tar per tablespace, each stored beside `base.tar` with the
/// cluster's `backup_manifest`; `verify --deep` assembles them for
/// pg_verifybackup; a restore refuses to write into the tablespace's old
/// directory (the live cluster's) and, with `--tablespace-map`, restores
/// the tablespace elsewhere, WAL written into it after the backup
/// included; a drill puts it inside its throwaway directory.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_a_tablespace_is_backed_up_verified_and_restored_with_it_moved() {
    let Setup {
        root, bucket, w, c, ..
    } = setup(
        "[drills.spaced]\njob = \"db\"\nat = \"latest\"\n\
         [[drills.spaced.checks]]\nsql = \"SELECT count(*) FROM spaced\"\nexpect = \">= 600\"\n",
    )
    .await;
    let ts = root.join("ts");
    std::fs::create_dir_all(&ts).unwrap();
    if is_root() {
        assert!(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&ts)
            .status()
            .unwrap()
            .success());
    }
    c.psql(&format!(
        "CREATE TABLESPACE extra LOCATION '{}'",
        ts.display()
    ));
    c.psql("CREATE TABLE spaced (id int PRIMARY KEY, v text) TABLESPACE extra");
    c.psql("INSERT INTO spaced SELECT g, md5(g::text) FROM generate_series(1, 500) g");
    let oid = c.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'");
    let tmp = w.dir.join("state").join("tmp");
    // pg_basebackup writes a cluster with tablespaces into the scratch
    // directory: with no room there the run fails as pg_basebackup says,
    // commits nothing and leaves nothing.
    {
        let small = common::tmpfs::Tmpfs::mount(1 << 20);
        small.fill_leaving(0);
        std::fs::create_dir_all(w.dir.join("state")).unwrap();
        std::os::unix::fs::symlink(&small.path, &tmp).unwrap();
        let r = w.drctl(&["run", "db"]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("No space left"), "{}", r.stderr);
        assert_eq!(
            std::fs::read_dir(&small.path).unwrap().count(),
            1,
            "only the filler is left"
        );
        std::fs::remove_file(&tmp).unwrap();
        let listed = w.drctl(&["backups", "db", "--json"]);
        let listed: serde_json::Value = serde_json::from_str(&listed.ok().stdout).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    }
    // pg_basebackup killed half-way through a tar (a job of its own, whose
    // pg_bindir holds a wrapper): the tar followed so far ends, the run
    // fails naming the signal, nothing is committed or left behind.
    {
        let bin = scratch_dir("drctl-bin-");
        for e in std::fs::read_dir(pg_bindir()).unwrap().flatten() {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).unwrap();
        }
        let wrapper = bin.join("pg_basebackup");
        std::fs::remove_file(&wrapper).unwrap();
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/bash
REAL={}
case \"$1\" in --version) exec \"$REAL\" \"$@\";; esac
\
                 \"$REAL\" \"$@\" & pid=$!
\
                 for i in $(seq 200); do [ -n \"$(find \"$2\" -name '*.tar' -size +64k 2>/dev/null)\" ] && break; sleep 0.01; done
\
                 kill -9 $pid; wait $pid\n",
                pg_bin("pg_basebackup").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut text = std::fs::read_to_string(&w.config).unwrap();
        text.push_str(&format!(
            "[jobs.killed]\ntype = \"postgres_physical\"\nurl_env = \"PHYS_URL\"\nrepository = \"s3\"\npg_bindir = \"{}\"\n",
            bin.display()
        ));
        std::fs::write(&w.config, text).unwrap();
        let r = w.drctl(&["run", "killed"]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains("pg_basebackup failed (exit code 137)"),
            "{}",
            r.stderr
        );
        let listed = w.drctl(&["backups", "killed", "--json"]);
        let listed: serde_json::Value = serde_json::from_str(&listed.ok().stdout).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
        assert_eq!(std::fs::read_dir(&tmp).map_or(0, Iterator::count), 0);
    }
    // What a killed run of this job left in the scratch directory: the
    // next run removes it.
    let stale = tmp.join("basebackup+db+killed");
    std::fs::create_dir_all(stale.join("backup")).unwrap();
    std::fs::write(stale.join("backup").join("base.tar"), b"half").unwrap();

    let id = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    let objects: Vec<String> = s3()
        .keys(&bucket, &format!("db/{id}/"))
        .await
        .iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_owned))
        .collect();
    for want in [
        "base.tar.zst.age",
        &format!("{oid}.tar.zst.age"),
        "backup_manifest.zst.age",
    ] {
        assert!(objects.iter().any(|o| o == want), "{want} in {objects:?}");
    }
    assert_eq!(
        std::fs::read_dir(&tmp).map_or(0, Iterator::count),
        0,
        "the scratch directory pg_basebackup wrote into is gone, and the killed run's"
    );
    // Written after the backup, into the tablespace: replayed from the WAL.
    c.psql("INSERT INTO spaced SELECT g, md5(g::text) FROM generate_series(501, 600) g");
    archive_now(&c, &bucket).await;

    let v = w.drctl(&["verify", "--job", "db", "--deep"]);
    v.ok();
    assert!(
        v.stdout
            .contains("pg_verifybackup: backup successfully verified"),
        "{}",
        v.stdout
    );

    // Into the old location (still the live cluster's): refused before
    // anything is written, naming the way out.
    let refused_dir = root.join("refused");
    let r = restore_db(&w, &["--latest", "--dry-run"], &refused_dir);
    assert_eq!(
        r.code,
        4,
        "a dry run refuses what the restore would: {}",
        r.all()
    );
    assert!(r.stderr.contains("--tablespace-map"), "{}", r.stderr);
    let r = restore_db(&w, &["--latest"], &refused_dir);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("tablespace extra") && r.stderr.contains("--tablespace-map"),
        "{}",
        r.stderr
    );
    assert!(!refused_dir.exists(), "a refused restore writes nothing");
    let r = restore_db(
        &w,
        &["--latest", "--tablespace-map", "nosuch=/x"],
        &refused_dir,
    );
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("no tablespace of that name"),
        "{}",
        r.stderr
    );

    let moved = root.join("ts-restored");
    let data = root.join("restored");
    let map = format!("extra={}", moved.display());
    let plan = restore_db(
        &w,
        &["--latest", "--dry-run", "--tablespace-map", &map],
        &data,
    );
    assert!(
        plan.ok().stderr.contains(&format!(
            "tablespace  extra (OID {oid}): {} -> {}",
            ts.display(),
            moved.display()
        )),
        "{}",
        plan.stderr
    );
    restore_db(&w, &["--latest", "--tablespace-map", &map], &data).ok();
    let r = Cluster::start(&data, free_port(), "-c archive_mode=off");
    assert_eq!(r.psql("SELECT count(*) FROM spaced"), "600");
    assert_eq!(
        r.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'extra'"),
        moved.display().to_string()
    );
    assert_eq!(
        r.psql("SELECT count(*) FROM spaced WHERE v <> md5(id::text)"),
        "0"
    );
    drop(r);
    // The original tablespace is untouched.
    assert_eq!(c.psql("SELECT count(*) FROM spaced"), "600");

    // A drill restores into its throwaway directory, the tablespace too.
    let d = w.drctl(&["drill", "run", "spaced", "--json"]);
    d.ok();
    let rec: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(rec["outcome"], "passed", "{rec}");
    let drills = w.dir.join("state").join("drills");
    let left: Vec<_> = std::fs::read_dir(&drills)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A flipped byte in the stored tablespace tar: exit 3 naming it, and
    // neither the data directory nor the tablespace's keeps anything.
    let key = format!("db/{id}/{oid}.tar.zst.age");
    let mut bytes = s3().get(&bucket, &key).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    s3().put(&bucket, &key, bytes).await;
    let (bad_data, bad_ts) = (root.join("bad"), root.join("bad-ts"));
    let r = restore_db(
        &w,
        &[
            "--latest",
            "--tablespace-map",
            &format!("{oid}={}", bad_ts.display()),
        ],
        &bad_data,
    );
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains(&format!("{oid}.tar")), "{}", r.stderr);
    for d in [&bad_data, &bad_ts] {
        assert_eq!(
            std::fs::read_dir(d).map_or(0, Iterator::count),
            0,
            "{} is left empty",
            d.display()
        );
    }
}

/// The base backup is placed by the server's clock, never the backing-up
/// host's: one taken on a host a minute ahead serves a target right after
/// it, and one taken on a host a minute behind (its `finished_at` before
/// the target) is not picked for a target it does not reach, so no row
/// committed after the target comes back.
#[tokio::test(flavor = "multi_thread")]
async fn base_backups_are_chosen_by_the_servers_clock_whatever_the_backing_up_hosts_says() {
    let Setup {
        root, bucket, w, c, ..
    } = setup("").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    let ahead = Run::from(
        w.command_via(&["faketime", "-f", "+1m"], &["run", "db"])
            .output()
            .unwrap(),
    );
    ahead.ok();
    let ahead_id = ahead.stdout.trim().to_owned();
    let m = manifest_of(&bucket, &ahead_id).await;
    let server_stop =
        chrono::DateTime::parse_from_rfc3339(m["physical"]["server_stopped_at"].as_str().unwrap())
            .unwrap();
    let host_finish =
        chrono::DateTime::parse_from_rfc3339(m["finished_at"].as_str().unwrap()).unwrap();
    assert!(
        (host_finish - server_stop).num_seconds() >= 50,
        "the host's clock ran ahead of the server's: {m}"
    );

    c.psql("INSERT INTO ledger SELECT g, 'before the target' FROM generate_series(301, 600) g");
    archive_now(&c, &bucket).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = chrono::Utc::now();
    let want = c.fingerprint();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.psql("INSERT INTO ledger SELECT g, 'after the target' FROM generate_series(601, 900) g");
    c.psql("DELETE FROM ledger WHERE id <= 100");
    archive_now(&c, &bucket).await;
    let behind = Run::from(
        w.command_via(&["faketime", "-f", "-1m"], &["run", "db"])
            .output()
            .unwrap(),
    );
    behind.ok();
    let behind_id = behind.stdout.trim().to_owned();
    let m = manifest_of(&bucket, &behind_id).await;
    let host_finish =
        chrono::DateTime::parse_from_rfc3339(m["finished_at"].as_str().unwrap()).unwrap();
    assert!(
        host_finish < t,
        "the second backup's host says it ended before the target: {m}"
    );
    c.psql("INSERT INTO ledger SELECT g, 'later' FROM generate_series(901, 950) g");
    archive_now(&c, &bucket).await;

    let d = root.join("at-t");
    let r = restore_db(&w, &["--at", &t.to_rfc3339(), "--json"], &d);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["plan"]["backup_id"], ahead_id.as_str(), "{report}");
    assert_eq!(
        fingerprint_of(&d).0,
        want,
        "exactly the rows committed by the target"
    );
    // After the second backup's end on the server's clock, it is the one.
    let d = root.join("latest");
    let r = restore_db(&w, &["--latest", "--dry-run", "--json"], &d);
    r.ok();
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["backup_id"], behind_id.as_str(), "{plan}");
    // --base picks an older one (the newest damaged, say); an unknown one,
    // or a repository that is not the job's, is refused by name.
    let r = restore_db(
        &w,
        &["--latest", "--base", &ahead_id, "--dry-run", "--json"],
        &d,
    );
    let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(plan["backup_id"], ahead_id.as_str(), "{plan}");
    let r = restore_db(
        &w,
        &[
            "--latest",
            "--base",
            "20200101T000000Z-x-00000000",
            "--dry-run",
        ],
        &d,
    );
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("no such base backup"), "{}", r.stderr);
    let r = restore_db(
        &w,
        &["--latest", "--repository", "elsewhere", "--dry-run"],
        &d,
    );
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr
            .contains("repository elsewhere is not one of job db's"),
        "{}",
        r.stderr
    );
}

/// A backup's manifest as stored (the bucket is not encrypted at that level).
async fn manifest_of(bucket: &str, id: &str) -> serde_json::Value {
    serde_json::from_slice(&s3().get(bucket, &format!("db/{id}/manifest.json")).await).unwrap()
}

/// A restored copy started as-is does not archive into the job; one
/// restored with --keep-archiving does, beside the primary that goes on:
/// `wal list`, `verify` and the daemon warn that the timelines diverged,
/// `--latest` still restores the primary's data, and `--timeline 2` the
/// copy's.
#[tokio::test(flavor = "multi_thread")]
async fn a_restored_copy_does_not_archive_unless_asked_and_restores_follow_the_primarys_timeline() {
    let Setup {
        root, bucket, w, c, ..
    } = setup("").await;
    // The cluster's own configuration archives into the job, as a
    // packaged server's would: a restored directory carries it.
    let script = w.dir.join("archive.sh");
    c.psql("ALTER SYSTEM SET wal_level = 'replica'");
    c.psql("ALTER SYSTEM SET archive_mode = 'on'");
    c.psql(&format!(
        "ALTER SYSTEM SET archive_command = '{} %p'",
        script.display()
    ));
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 1000) g");
    w.drctl(&["run", "db"]).ok();
    c.psql("INSERT INTO ledger SELECT g, 'archived' FROM generate_series(1001, 2000) g");
    archive_now(&c, &bucket).await;
    let on_timeline = |tli: &str, names: &[String]| names.iter().any(|n| n.starts_with(tli));

    // Restored by default and started as-is: archive_mode is off, it
    // stores nothing.
    let d1 = root.join("plain-copy");
    let r = restore_db(&w, &["--latest"], &d1);
    r.ok();
    assert!(
        r.stderr.contains("it does not archive"),
        "the closing message says so: {}",
        r.stderr
    );
    let copy = Cluster::start(&d1, free_port(), "");
    assert_eq!(copy.psql("SHOW archive_mode"), "off");
    copy.psql("INSERT INTO ledger SELECT g, 'plain copy' FROM generate_series(5001, 5100) g");
    copy.psql("SELECT pg_switch_wal()");
    drop(copy);
    let names = stored_wal(&bucket).await;
    assert!(!on_timeline("00000002", &names), "{names:?}");

    // --keep-archiving: started as-is, it archives timeline 2.
    let d2 = root.join("archiving-copy");
    let r = restore_db(&w, &["--latest", "--keep-archiving"], &d2);
    r.ok();
    let copy = Cluster::start(&d2, free_port(), "");
    assert_eq!(copy.psql("SHOW archive_mode"), "on");
    copy.psql("INSERT INTO ledger SELECT g, 'copy' FROM generate_series(6001, 6300) g");
    archive_now(&copy, &bucket).await;
    let copy_fp = copy.fingerprint();
    drop(copy);
    let names = stored_wal(&bucket).await;
    assert!(names.contains(&"00000002.history".to_string()), "{names:?}");

    // The primary goes on (a second later: the store's times are seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.psql("INSERT INTO ledger SELECT g, 'primary' FROM generate_series(2001, 3000) g");
    archive_now(&c, &bucket).await;
    let primary_fp = c.fingerprint();
    assert_ne!(primary_fp, copy_fp);

    let r = w.drctl(&["wal", "list", "--job", "db"]);
    r.ok();
    assert!(r.stdout.contains("wal_timelines_diverged"), "{}", r.stdout);
    let r = w.drctl(&["verify", "--job", "db"]);
    r.ok();
    assert!(
        r.stdout.contains("WARN wal_timelines_diverged"),
        "{}",
        r.stdout
    );
    {
        let _d = Daemon::start(&w);
        wait_until(
            Duration::from_secs(30),
            "the daemon's wal_timelines_diverged alert",
            || active_alerts(&w).contains(&"wal_timelines_diverged:db".to_string()),
        );
    }

    // --latest: the primary's timeline, whatever the copy's number.
    let d3 = root.join("latest");
    let r = restore_db(&w, &["--latest", "--json"], &d3);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["plan"]["target_timeline"], 1, "{report}");
    assert_eq!(report["archiving_off"], true, "{report}");
    assert_ne!(
        report["timeline"], 2,
        "promoted past every timeline in the archive: {report}"
    );
    assert_eq!(fingerprint_of(&d3).0, primary_fp);
    // --timeline 2: the copy's.
    let d4 = root.join("copy-timeline");
    let r = restore_db(&w, &["--latest", "--timeline", "2", "--json"], &d4);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["plan"]["target_timeline"], 2, "{report}");
    assert_eq!(fingerprint_of(&d4).0, copy_fp);
    // A timeline the archive does not hold: refused by number.
    let r = restore_db(&w, &["--latest", "--timeline", "9"], &root.join("nine"));
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("timeline 9 is not in the archive"),
        "{}",
        r.stderr
    );
    drop(c);
}

/// A WAL object deleted behind its record (the record still listed) is a
/// gap the daemon's own check sees and keeps firing, `wal list` names, and
/// a dry run refuses; a segment damaged in place (same size), which only
/// decoding finds, keeps the `wal_gap` that `verify --deep` raised through
/// the daemon's checks.
#[tokio::test(flavor = "multi_thread")]
async fn a_wal_object_missing_or_damaged_behind_its_record_keeps_wal_gap_and_refuses_the_dry_run() {
    let Setup {
        root, bucket, w, c, ..
    } = setup("").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    w.drctl(&["run", "db"]).ok();
    for i in 1..=3 {
        c.psql(&format!(
            "INSERT INTO ledger SELECT g, 'batch' FROM generate_series({}, {}) g",
            i * 1000,
            i * 1000 + 99
        ));
        archive_now(&c, &bucket).await;
    }
    let mut segs: Vec<String> = stored_wal(&bucket)
        .await
        .into_iter()
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();

    // Damaged in place: verify --deep finds it and raises wal_gap; the
    // daemon's listing cannot see it, and must not resolve it.
    let damaged = segs[segs.len() - 3].clone();
    let key = wal_objects(&bucket, &damaged).await.remove(0);
    let mut bytes = s3().get(&bucket, &key).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    s3().put(&bucket, &key, bytes).await;
    let r = w.drctl(&["verify", "--job", "db", "--deep"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("FAIL {damaged}")),
        "{}",
        r.stdout
    );
    assert!(active_alerts(&w).contains(&"wal_gap:db".to_string()));
    {
        let d = Daemon::start(&w);
        wait_until(Duration::from_secs(30), "the daemon's WAL check", || {
            d.log().contains("WAL chain checked")
        });
        assert!(
            active_alerts(&w).contains(&"wal_gap:db".to_string()),
            "{}",
            d.log()
        );
    }

    // Deleted behind its record.
    let victim = segs[segs.len() - 2].clone();
    for k in wal_objects(&bucket, &victim).await {
        s3().client()
            .await
            .delete_object()
            .bucket(&bucket)
            .key(&k)
            .send()
            .await
            .unwrap();
    }
    assert!(
        stored_wal(&bucket).await.contains(&victim),
        "the record stays"
    );
    let r = w.drctl(&["wal", "list", "--job", "db", "--json"]);
    r.ok();
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        list["missing_objects"][0]
            .as_str()
            .unwrap()
            .starts_with(&victim),
        "{list}"
    );
    let d = root.join("dry");
    let r = restore_db(&w, &["--latest", "--dry-run"], &d);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("WAL gap: {victim}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("no object in the repository"),
        "{}",
        r.stderr
    );
    assert!(!d.exists());
    // A fresh state: only the daemon's own check can raise it.
    let fresh = w.dir.join("state");
    std::fs::remove_dir_all(&fresh).unwrap();
    {
        let _d = Daemon::start(&w);
        wait_until(
            Duration::from_secs(30),
            "the daemon's wal_gap alert for an object missing behind its record",
            || active_alerts(&w).contains(&"wal_gap:db".to_string()),
        );
    }
    drop(c);
}

/// The stored objects (not the record) of WAL file `name`.
async fn wal_objects(bucket: &str, name: &str) -> Vec<String> {
    s3().keys(bucket, &format!("db/wal/{name}."))
        .await
        .into_iter()
        .filter(|k| !k.ends_with(".json"))
        .collect()
}

/// Whether process `pid` is alive (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A point-in-time restore stopped while its server runs, promoted, with
/// drctl's recovery settings in the directory: SIGTERM stops the server
/// and empties the directory at once (exit 130); after SIGKILL the server
/// dies with drctl, and the next `drctl status` reports the killed restore
/// and empties the directory. Either way the directory then restores.
#[tokio::test(flavor = "multi_thread")]
async fn a_point_in_time_restore_killed_during_recovery_leaves_no_server_and_nothing_behind() {
    let Setup {
        root, bucket, w, c, ..
    } = setup("").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 500) g");
    w.drctl(&["run", "db"]).ok();
    c.psql("INSERT INTO ledger SELECT g, 'after' FROM generate_series(501, 900) g");
    archive_now(&c, &bucket).await;
    let want = c.fingerprint();
    for (sig, name) in [(libc::SIGTERM, "term"), (libc::SIGKILL, "kill")] {
        let d = root.join(name);
        let mut restore = paused_at(
            &w,
            "pitr.recovery.promoted",
            &[
                "restore",
                "--job",
                "db",
                "--latest",
                "--to-datadir",
                d.to_str().unwrap(),
            ],
        );
        let pid: i32 = std::fs::read_to_string(d.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(pid), "the recovery server runs");
        assert!(std::fs::read_to_string(d.join("postgresql.auto.conf"))
            .unwrap()
            .contains("drctl_wal"));
        unsafe {
            libc::kill(restore.child.id() as i32, sig);
        }
        let status = restore.child.wait().unwrap();
        let rest = restore.stderr();
        wait_until(
            Duration::from_secs(15),
            "the recovery server to stop",
            || !alive(pid),
        );
        if sig == libc::SIGTERM {
            assert_eq!(status.code(), Some(130), "{rest}");
        } else {
            // Killed: the directory holds the half-done cluster until the
            // next command finds it.
            assert!(d.join("PG_VERSION").exists());
            let r = w.drctl(&["status"]);
            r.ok();
            assert!(
                r.stderr.contains("point-in-time restore of db")
                    && r.stderr.contains("drctl's own files only"),
                "{}",
                r.stderr
            );
        }
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{name}: {left:?} ({rest})");
        restore_db(&w, &["--latest"], &d).ok();
        assert_eq!(fingerprint_of(&d).0, want);
    }
    // Every one of them is a record: `logs` lists the interrupted ones
    // and the finished ones, into their directories.
    let r = w.drctl(&["logs", "db"]);
    r.ok();
    let restores = r
        .stdout
        .split("restores (newest last):")
        .nth(1)
        .unwrap_or("");
    for name in ["term", "kill"] {
        let dir = root.join(name).display().to_string();
        let rows: Vec<&str> = restores.lines().filter(|l| l.contains(&dir)).collect();
        assert_eq!(rows.len(), 2, "{}", r.stdout);
        assert!(
            rows[0].contains("rolled_back") && rows[1].contains("done"),
            "{rows:?}"
        );
    }
    drop(c);
}

/// The newest base backup damaged (one byte of its base.tar flipped): a
/// restore falls back to the older intact one and its WAL, restores the
/// primary's data, raises `backup_damaged` and records the verdict, so
/// that the next plan passes the damaged one over by itself; `--base`
/// naming the damaged one fails and leaves the directory empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_base_backup_falls_back_to_an_older_one_whose_wal_reaches_the_target() {
    let Setup {
        root, bucket, w, c, ..
    } = setup("").await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'first' FROM generate_series(1, 300) g");
    let older = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    c.psql("INSERT INTO ledger SELECT g, 'second' FROM generate_series(301, 600) g");
    archive_now(&c, &bucket).await;
    let newer = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    c.psql("INSERT INTO ledger SELECT g, 'after' FROM generate_series(601, 900) g");
    c.psql("DELETE FROM ledger WHERE id <= 50");
    archive_now(&c, &bucket).await;
    let want = c.fingerprint();

    let key = s3()
        .keys(&bucket, &format!("db/{newer}/"))
        .await
        .into_iter()
        .find(|k| k.contains("base.tar"))
        .unwrap();
    let mut bytes = s3().get(&bucket, &key).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    s3().put(&bucket, &key, bytes).await;

    let d = root.join("fallback");
    let r = restore_db(&w, &["--latest", "--json"], &d);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["plan"]["backup_id"], older.as_str(), "{report}");
    let fallback = report["fallbacks"][0].as_str().unwrap();
    assert!(
        fallback.contains(&newer) && fallback.contains(&older),
        "{fallback}"
    );
    assert_eq!(
        fingerprint_of(&d).0,
        want,
        "the primary's rows, from the older base"
    );
    assert!(
        active_alerts(&w)
            .iter()
            .any(|k| k.starts_with("backup_damaged:")),
        "{:?}",
        active_alerts(&w)
    );
    // The verdict is kept: the next plan passes it over and says so.
    let d2 = root.join("again");
    let r = restore_db(&w, &["--latest", "--dry-run", "--json"], &d2);
    let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(plan["backup_id"], older.as_str(), "{plan}");
    assert!(
        plan["passed_over"][0].as_str().unwrap().contains(&newer),
        "{plan}"
    );
    // Named explicitly, it is tried, fails, and nothing stays behind.
    let r = restore_db(&w, &["--latest", "--base", &newer], &d2);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("integrity"), "{}", r.stderr);
    assert!(
        !d2.exists() || std::fs::read_dir(&d2).unwrap().next().is_none(),
        "the directory is left empty"
    );
    drop(c);
}

/// A copy of a physical job carries its WAL: `--repository cold` restores
/// the primary's latest rows from the copy alone; the copy's retention
/// prunes its WAL below its own oldest base backup; a WAL object missing
/// from the copy fails `verify` of the copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_physical_job_carries_its_wal_and_restores_alone() {
    let Setup {
        root, bucket, w, c, ..
    } = setup(
        "copies = [\"cold\"]\n[jobs.db.copy_retention.cold]\nkeep_last = 1\n\
         [repositories.cold]\ntype = \"local\"\npath = \"{dir}/cold\"\n",
    )
    .await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    let first = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    c.psql("INSERT INTO ledger SELECT g, 'later' FROM generate_series(301, 600) g");
    c.psql("DELETE FROM ledger WHERE id <= 20");
    archive_now(&c, &bucket).await;
    let want = c.fingerprint();
    let r = w.drctl(&["copy", "--job", "db", "--to", "cold", "--json"]);
    let rep: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert!(rep[0]["wal_files"].as_u64().unwrap() >= 1, "{rep:#}");
    let cold = w.dir.join("cold/db");
    assert!(cold.join(&first).join("manifest.json").exists());

    let d = root.join("from-cold");
    let r = restore_db(&w, &["--latest", "--repository", "cold", "--json"], &d);
    let report: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert!(
        report["plan"]["repository"]
            .as_str()
            .unwrap()
            .starts_with("cold"),
        "{report}"
    );
    assert_eq!(
        fingerprint_of(&d).0,
        want,
        "the primary's rows, from the copy"
    );

    // A second base backup: the copy keeps one, and its WAL from there on.
    c.psql("INSERT INTO ledger SELECT g, 'third' FROM generate_series(601, 700) g");
    archive_now(&c, &bucket).await;
    let second = w.drctl(&["run", "db"]).ok().stdout.trim().to_owned();
    w.drctl(&["copy", "--job", "db", "--to", "cold"]).ok();
    assert!(
        !cold.join(&first).exists(),
        "the copy's retention keeps one"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cold.join(&second).join("manifest.json")).unwrap())
            .unwrap();
    let start = m["physical"]["start_lsn"].as_str().unwrap().to_owned();
    let (hi, lo) = start.split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    let start_seg = format!("00000001{:08X}{:08X}", lsn >> 32, (lsn >> 24) & 0xFF);
    let segs: Vec<String> = std::fs::read_dir(cold.join("wal"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let n = n.strip_suffix(".json")?.to_owned();
            (n.len() == 24).then_some(n)
        })
        .collect();
    assert!(!segs.is_empty());
    assert!(
        segs.iter().all(|s| *s >= start_seg),
        "WAL below {start_seg} pruned from the copy: {segs:?}"
    );
    w.drctl(&["verify", "--job", "db", "--repository", "cold"])
        .ok();
    // A WAL object missing from the copy: the copy does not verify.
    let victim = segs.iter().max().unwrap();
    for e in std::fs::read_dir(cold.join("wal")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!("{victim}.")) && !n.ends_with(".json") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let r = w.drctl(&["verify", "--job", "db", "--repository", "cold"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains(victim.as_str()), "{}", r.all());
    drop(c);
}

/// `wal = "stream"` heals itself: a `.partial` cut short in the spool (the
/// disk filled) is moved aside at the next start instead of stopping
/// pg_receivewal for good, and the writes made meanwhile come from the
/// slot; the slot's backlog raises `wal_slot_retained` and is exported; a
/// receiver that keeps failing raises `wal_stream_down`.
#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_partial_heals_and_a_stream_that_cannot_start_or_a_slot_that_holds_back_alerts()
{
    let port = free_port();
    // A bindir whose pg_receivewal always fails, for a second job.
    let bad = scratch_dir("drctl-badbin-");
    for e in std::fs::read_dir(pg_bindir()).unwrap().flatten() {
        if e.file_name() != "pg_receivewal" {
            std::os::unix::fs::symlink(e.path(), bad.join(e.file_name())).unwrap();
        }
    }
    let script = bad.join("pg_receivewal");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'pg_receivewal: error: could not connect to the server' >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let Setup {
        root, bucket, w, c, ..
    } = setup(&format!(
        "wal = \"stream\"\nwal_flush = \"1s\"\nwal_slot_max_retained = \"1MiB\"\n\
         [repositories.disk]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [jobs.broken]\ntype = \"postgres_physical\"\nurl_env = \"PHYS_URL\"\nrepository = \"disk\"\nwal = \"stream\"\npg_bindir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n",
        bad.display()
    ))
    .await;
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 300) g");
    let spool = w.dir.join("state/wal/db");
    {
        let d = Daemon::start(&w);
        wait_until(Duration::from_secs(30), "the replication slot", || {
            c.psql(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'drctl_db' AND active",
            ) == "1"
        });
        w.drctl(&["run", "db"]).ok();
        c.psql("INSERT INTO ledger SELECT g, 'streamed' FROM generate_series(301, 400) g");
        wait_until(Duration::from_secs(30), "a .partial in the spool", || {
            std::fs::read_dir(&spool).is_ok_and(|mut r| {
                r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".partial")))
            })
        });
        // The failing receiver of the second job pages after 3 starts.
        wait_until(Duration::from_secs(40), "wal_stream_down:broken", || {
            active_alerts(&w).contains(&"wal_stream_down:broken".to_string())
        });
        let (_, text) = http_get(port, "/metrics");
        assert!(
            text.contains("drctl_wal_stream_up{job_name=\"broken\"} 0"),
            "{text}"
        );
        drop(d);
    }
    // The receiver died with the daemon (its connection is gone).
    wait_until(Duration::from_secs(30), "the slot to be released", || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'drctl_db' AND active")
            == "0"
    });
    // The spool's disk filled: the unfinished segment is cut in half.
    let partial = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".partial"))
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 8 << 20);
    // Writes while the receiver is down: only the slot holds them.
    c.psql("INSERT INTO ledger SELECT g, 'while down' FROM generate_series(401, 700) g");
    let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql("SELECT pg_switch_wal()");
    let want = c.fingerprint();

    let d = Daemon::start(&w);
    wait_until(Duration::from_secs(30), "wal_slot_retained:db", || {
        active_alerts(&w).contains(&"wal_slot_retained:db".to_string())
    });
    wait_stored(&bucket, &seg, &|| d.log()).await;
    let aside = w.dir.join("state/wal/db.aside");
    assert_eq!(
        std::fs::read_dir(&aside).map_or(0, Iterator::count),
        1,
        "the truncated file is kept aside: {}",
        d.log()
    );
    let (_, text) = http_get(port, "/metrics");
    assert!(
        text.contains("drctl_wal_slot_retained_bytes{job_name=\"db\"}"),
        "{text}"
    );
    drop(d);
    let dir = root.join("after-the-heal");
    restore_db(&w, &["--latest"], &dir).ok();
    assert_eq!(
        fingerprint_of(&dir).0,
        want,
        "the writes made while it was down"
    );
}

/// The PITR fault run's counters (`bench/faults.sh --pitr` prints them).
#[derive(Default, Debug)]
struct PitrTally {
    kills: u64,
    object_faults: u64,
    restores_checked: u64,
    refused: u64,
    false_successes: u64,
    wrong_data: u64,
    running: u64,
    leftovers: u64,
}

/// Postgres processes other than `keep`'s whose working directory lies
/// under `root`: clusters a killed restore or drill left running.
fn clusters_running_under(root: &Path, keep: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let is_pg = cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"postgres"));
        if is_pg
            && cwd.starts_with(root)
            && !cwd.starts_with(keep)
            && alive(pid.parse().unwrap_or(0))
        {
            out.push(format!("{pid} in {}", cwd.display()));
        }
    }
    out
}

/// Whether `dir` is absent or empty.
fn empty_or_gone(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// Random kills (base backup under a clock ±60 s off, the archive_command's
/// `wal push`, a point-in-time restore, a drill) and object faults (a WAL
/// or base object flipped or deleted, then restores to the latest point
/// and to a random earlier moment): no restore succeeds with other rows
/// than the target's, no cluster stays running, nothing stays in a target
/// directory or under `state_dir/drills` once `drctl status` ran.
/// `DRCTL_FAULT_ROUNDS` (default 1; `bench/faults.sh --pitr` runs 25: five
/// kills and four object faults a round) and `DRCTL_FAULT_SEED`.
#[tokio::test(flavor = "multi_thread")]
async fn pitr_random_kills_and_object_faults_never_restore_wrong_data() {
    let rounds: u64 = std::env::var("DRCTL_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("DRCTL_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2_654_435_761 + 1);
    let mut rng = seed | 1;
    let mut below = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let Setup {
        root, bucket, w, c, ..
    } = setup("[drills.chaos]\njob = \"db\"\nat = \"latest\"\n").await;
    let mut t = PitrTally::default();
    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'base' FROM generate_series(1, 200) g");
    w.drctl(&["run", "db"]).ok();
    let mut moments: Vec<(chrono::DateTime<chrono::Utc>, String)> = Vec::new();
    let mut took = [Duration::from_millis(1500); 4];
    let check_left = |t: &mut PitrTally, what: &str, dirs: &[&Path]| {
        let running = clusters_running_under(&root, &c.data);
        if !running.is_empty() {
            eprintln!("{what}: clusters left running {running:?}");
            t.running += running.len() as u64;
        }
        for d in dirs {
            if !empty_or_gone(d) {
                let names: Vec<String> = walkdir::WalkDir::new(d)
                    .min_depth(1)
                    .max_depth(3)
                    .into_iter()
                    .flatten()
                    .take(8)
                    .map(|e| e.path().display().to_string())
                    .collect();
                eprintln!("{what}: {} not empty: {names:?}", d.display());
                t.leftovers += 1;
            }
        }
    };
    let drills = w.dir.join("state/drills");
    // This world's pushes only (other tests archive into jobs named db too).
    let own_push = format!("{} wal push --job db", w.config.display());
    for round in 0..rounds {
        // New rows, archived, and a moment between two commits.
        c.psql(&format!(
            "INSERT INTO ledger SELECT g, 'round {round}' FROM generate_series({}, {}) g",
            1000 * (round + 1),
            1000 * (round + 1) + 99
        ));
        archive_now(&c, &bucket).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        moments.push((chrono::Utc::now(), c.fingerprint()));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let latest = c.fingerprint();

        // Kills at random points of each operation (the push twice).
        for op in [0usize, 1, 2, 3, 1] {
            let k = op;
            let target = root.join(format!("kill-{round}-{k}"));
            let (program, args): (Vec<&str>, Vec<String>) = match op {
                0 => (
                    match below(3) {
                        0 => vec!["faketime", "-f", "+1m"],
                        1 => vec!["faketime", "-f", "-1m"],
                        _ => vec![],
                    },
                    vec!["run".into(), "db".into()],
                ),
                2 => (
                    vec![],
                    vec![
                        "restore".into(),
                        "--job".into(),
                        "db".into(),
                        "--latest".into(),
                        "--to-datadir".into(),
                        target.display().to_string(),
                    ],
                ),
                3 => (vec![], vec!["drill".into(), "run".into(), "chaos".into()]),
                _ => (vec![], Vec::new()),
            };
            let delay = Duration::from_millis(below(took[op].as_millis() as u64));
            if op == 1 {
                // The archive_command's `wal push`, killed mid-store: the
                // server retries it; the file is stored once, whole.
                c.psql("INSERT INTO ledger SELECT g, 'pushed' FROM generate_series(1, 1) g ON CONFLICT DO NOTHING");
                let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
                c.psql("SELECT pg_switch_wal()");
                let found = std::time::Instant::now() + Duration::from_secs(1);
                while std::time::Instant::now() < found
                    && !Command::new("pgrep")
                        .args(["-f", &own_push])
                        .stdout(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(below(40)));
                let killed = Command::new("pkill")
                    .args(["-9", "-f", &own_push])
                    .status()
                    .is_ok_and(|s| s.success());
                if killed {
                    t.kills += 1;
                }
                // PostgreSQL's archiver sleeps a minute after three failed
                // tries; a new segment wakes it (it retries the old first).
                for _ in 0..30 {
                    if stored_wal(&bucket).await.contains(&seg) {
                        break;
                    }
                    c.psql("SELECT pg_switch_wal() FROM (SELECT txid_current()) x");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                wait_stored(&bucket, &seg, &|| "a killed wal push retried".into()).await;
                continue;
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut child = w
                .command_via(&program, &argv)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            let mut killed = false;
            while child.try_wait().unwrap().is_none() {
                if start.elapsed() >= delay {
                    let _ = child.kill();
                    killed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let status = child.wait().unwrap();
            if killed {
                t.kills += 1;
            } else {
                took[op] = start.elapsed();
            }
            w.drctl(&["status"]).ok();
            // Killed after it finished (its journal says done): the
            // directory holds the restored cluster, which must be right.
            let done = w.job_status("db")["last_restore"].clone();
            let finished = op == 2
                && !empty_or_gone(&target)
                && done["outcome"] == "done"
                && done["target"] == target.display().to_string().as_str();
            if finished {
                t.restores_checked += 1;
                if fingerprint_of(&target).0 != latest {
                    t.wrong_data += 1;
                }
                let _ = std::fs::remove_dir_all(&target);
                continue;
            }
            check_left(
                &mut t,
                &format!("round {round} kill {op}"),
                &[&target, &drills],
            );
            if op == 2 && !killed && status.success() {
                t.restores_checked += 1;
                if fingerprint_of(&target).0 != latest {
                    t.wrong_data += 1;
                }
            }
            let _ = std::fs::remove_dir_all(&target);
        }

        // Object faults: two WAL objects, two base backup objects, each
        // followed by a restore to the latest point or to a random moment.
        for (n, kind) in ["wal", "base", "wal", "base"].into_iter().enumerate() {
            let keys: Vec<String> = s3()
                .keys(&bucket, "db/")
                .await
                .into_iter()
                .filter(|k| {
                    !k.ends_with(".json") && !k.contains("/leases/") && !k.contains("_hosts")
                })
                .filter(|k| (kind == "wal") == k.starts_with("db/wal/"))
                .filter(|k| kind == "wal" || k.contains("base.tar"))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let key = keys[below(keys.len() as u64) as usize].clone();
            let original = s3().get(&bucket, &key).await;
            let delete = below(2) == 0;
            if delete {
                s3().client()
                    .await
                    .delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
            } else {
                let mut bytes = original.clone();
                let at = below(bytes.len() as u64) as usize;
                bytes[at] ^= 0x5a;
                s3().put(&bucket, &key, bytes).await;
            }
            t.object_faults += 1;
            let pick = below(moments.len() as u64) as usize;
            let at = moments[pick].0.to_rfc3339();
            let (args, want) = if n < 2 {
                (vec!["--latest"], latest.clone())
            } else {
                (vec!["--at", at.as_str()], moments[pick].1.clone())
            };
            {
                let d = root.join(format!("fault-{round}-{n}"));
                let r = restore_db(&w, &args, &d);
                if r.code == 0 {
                    t.restores_checked += 1;
                    if fingerprint_of(&d).0 != want {
                        eprintln!(
                            "round {round}: {kind} fault in {key}: {args:?} restored other rows"
                        );
                        t.wrong_data += 1;
                    }
                } else {
                    t.refused += 1;
                    check_left(&mut t, &format!("round {round} {kind} fault"), &[&d]);
                }
                let _ = std::fs::remove_dir_all(&d);
            }
            s3().put(&bucket, &key, original).await;
            // The repaired repository verifies again (clears the verdicts).
            w.drctl(&["verify", "--job", "db", "--all"]);
        }
        // A run that said it succeeded lists its backup.
        let r = w.drctl(&["run", "db"]);
        let id = r.stdout.trim().to_owned();
        let listed = w.drctl(&["backups", "db", "--json"]).stdout;
        if r.code == 0 && !listed.contains(&id) {
            t.false_successes += 1;
        }
    }
    eprintln!(
        "pitr faults (seed {seed}): {} kill points, {} object faults, {} restores checked, {} refused\n\
         | false successes | wrong data | clusters left running | leftovers |\n\
         | {} | {} | {} | {} |",
        t.kills, t.object_faults, t.restores_checked, t.refused, t.false_successes, t.wrong_data, t.running, t.leftovers
    );
    assert_eq!(
        (t.false_successes, t.wrong_data, t.running, t.leftovers),
        (0, 0, 0, 0),
        "seed {seed}: {t:?}"
    );
    assert!(t.restores_checked > 0, "{t:?}");
    drop(c);
}

/// One config, two users, as the package installs them: the daemon's
/// commands as one user (uid 65534 here), PostgreSQL's `archive_command`
/// as `postgres`, sharing a group, and a local repository whose root is
/// setgid and group-writable (`install -d -m 2770 -g GROUP`). Each writes
/// what the other reads and removes: WAL pushed by postgres is verified
/// and pruned by the service user, into directories the service user
/// created; nobody else may read any of it.
#[tokio::test(flavor = "multi_thread")]
async fn one_config_serves_the_daemon_user_and_postgres_through_a_shared_repository() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let pg_gid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let root = scratch_dir("drctl-two-users-");
    let repo = root.join("repo");
    std::fs::create_dir(&repo).unwrap();
    assert!(Command::new("chown")
        .arg(format!("65534:{pg_gid}"))
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let body = format!(
        "[repositories.shared]\ntype = \"local\"\npath = \"{}\"\n\
         [jobs.db]\ntype = \"postgres_physical\"\nurl_env = \"PHYS_URL\"\nrepository = \"shared\"\nretention = {{ keep_last = 1 }}\n",
        repo.display()
    );
    let mut w = World::new(&body);
    let state = w.dir.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(Command::new("chown")
        .arg("65534")
        .arg(&state)
        .status()
        .unwrap()
        .success());
    let script = w.dir.join("archive.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} -c {} wal push --job db \"$1\"\n",
            env!("CARGO_BIN_EXE_drctl"),
            w.config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = Cluster::init(&root);
    let c = Cluster::start(
        &data,
        free_port(),
        &format!(
            "-c wal_level=replica -c archive_mode=on -c archive_command='{} %p'",
            script.display()
        ),
    );
    w.set_env("PHYS_URL", &c.url());
    let regid = format!("--regid={pg_gid}");
    let service = [
        "setpriv",
        "--reuid=65534",
        regid.as_str(),
        "--clear-groups",
        "--",
    ];
    let as_service = |args: &[&str]| Run::from(w.command_via(&service, args).output().unwrap());
    let wal_dir = repo.join("db/wal");
    let stored = |seg: &str| wal_dir.join(format!("{seg}.json")).exists();
    let switch = || {
        let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        c.psql("SELECT pg_switch_wal()");
        seg
    };

    c.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text)");
    c.psql("INSERT INTO ledger SELECT g, 'first' FROM generate_series(1, 300) g");
    let first = as_service(&["run", "db"]);
    first.ok();
    c.psql("INSERT INTO ledger SELECT g, 'archived' FROM generate_series(301, 600) g");
    let seg = switch();
    wait_until(
        Duration::from_secs(30),
        "postgres's push into the shared repository",
        || stored(&seg),
    );
    // Pushed by postgres into a directory the service user made: group
    // readable, nobody else.
    let meta = std::fs::metadata(wal_dir.join(format!("{seg}.json"))).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640, "{:o}", meta.mode());
    let dir_meta = std::fs::metadata(&wal_dir).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o2770, "{:o}", dir_meta.mode());
    assert_eq!(dir_meta.gid().to_string(), pg_gid);
    as_service(&["verify", "--job", "db"]).ok();
    // Another host (root, its own state) restores from it.
    let mut elsewhere = World::new(&body);
    elsewhere.set_env("PHYS_URL", &c.url());
    let want = c.fingerprint();
    let d = root.join("restored");
    restore_db(&elsewhere, &["--latest"], &d).ok();
    assert_eq!(fingerprint_of(&d).0, want);

    // A second base backup; the service user prunes the first and the
    // WAL postgres pushed below the new one.
    let old_segs = std::fs::read_dir(&wal_dir).unwrap().count();
    as_service(&["run", "db"]).ok();
    let seg = switch();
    wait_until(Duration::from_secs(30), "the next push", || stored(&seg));
    let r = as_service(&["prune", "--json"]);
    r.ok();
    assert!(
        !repo.join("db").join(first.stdout.trim()).exists(),
        "{}",
        r.stdout
    );
    assert!(
        std::fs::read_dir(&wal_dir).unwrap().count() < old_segs + 4,
        "WAL below the kept base backup pruned by the service user: {}",
        r.stdout
    );
    // The cluster's first segment, pushed by postgres before either base
    // backup, was removed by the service user.
    assert!(!stored("000000010000000000000001"), "{}", r.stdout);
    drop(c);
}
