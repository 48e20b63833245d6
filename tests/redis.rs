//! Redis backups against a real redis-server: a few hundred thousand keys
//! of every common type, snapshotted while a writer runs, restored into a
//! throwaway server, compared; damage caught by `verify --deep`; an ACL
//! user from `url_env`; a restore that would replace a `dump.rdb` refused
//! without `--yes`.
// One end-to-end scenario told in order.
#![allow(clippy::too_many_lines)]

mod common;

use common::*;
use std::time::Duration;

const STRINGS: u64 = 200_000;
const EACH: u64 = 20_000;
const HOT: u64 = 1_000;

fn connect(port: u16, auth: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{auth}127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Strings, hashes, lists, sets and sorted sets, plus `HOT` keys a writer
/// keeps overwriting (so the key count holds still while values change).
fn populate(con: &mut redis::Connection) {
    let mut i = 0;
    while i < STRINGS {
        let mut p = redis::pipe();
        for k in i..(i + 10_000).min(STRINGS) {
            p.cmd("SET")
                .arg(format!("s:{k}"))
                .arg(format!("value {k}"))
                .ignore();
        }
        p.query::<()>(con).unwrap();
        i += 10_000;
    }
    let mut i = 0;
    while i < EACH {
        let mut p = redis::pipe();
        for k in i..(i + 5_000).min(EACH) {
            p.cmd("HSET")
                .arg(format!("h:{k}"))
                .arg("name")
                .arg(format!("n{k}"))
                .arg("n")
                .arg(k)
                .ignore();
            p.cmd("RPUSH")
                .arg(format!("l:{k}"))
                .arg("a")
                .arg(k)
                .arg("c")
                .ignore();
            p.cmd("SADD").arg(format!("t:{k}")).arg("x").arg(k).ignore();
            p.cmd("ZADD")
                .arg(format!("z:{k}"))
                .arg(1)
                .arg("one")
                .arg(k)
                .arg("k")
                .ignore();
        }
        p.query::<()>(con).unwrap();
        i += 5_000;
    }
    let mut p = redis::pipe();
    for k in 0..HOT {
        p.cmd("SET").arg(format!("hot:{k}")).arg(0).ignore();
    }
    p.query::<()>(con).unwrap();
}

fn sample(con: &mut redis::Connection) -> Vec<String> {
    let mut out = Vec::new();
    for k in [0, 7, 12_345, 19_999] {
        let h: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("h:{k}"))
            .query(con)
            .unwrap();
        let l: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("l:{k}"))
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap();
        let mut t: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("t:{k}"))
            .query(con)
            .unwrap();
        t.sort();
        let z: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("z:{k}"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(con)
            .unwrap();
        out.push(format!("{h:?} {l:?} {t:?} {z:?}"));
    }
    for k in [0, 1, 99_999, 199_999] {
        let s: String = redis::cmd("GET").arg(format!("s:{k}")).query(con).unwrap();
        out.push(s);
    }
    out
}

#[test]
fn a_redis_snapshot_taken_under_writes_restores_into_a_throwaway_server() {
    let source = Redis::start(&["--requirepass", "masterpw"]);
    let mut con = connect(source.port, ":masterpw@");
    // The backup's own ACL user: only what a snapshot needs.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("backup")
        .arg("on")
        .arg(">backup-secret-pw")
        .arg("+sync")
        .arg("+replconf")
        .arg("+info")
        .arg("+ping")
        .query::<()>(&mut con)
        .unwrap();
    populate(&mut con);
    let total = STRINGS + 4 * EACH + HOT;
    let expected = sample(&mut con);

    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.cache]\ntype = \"redis\"\nurl_env = \"CACHE_REDIS_URL\"\nrepository = \"local\"\n",
    );
    w.set_env(
        "CACHE_REDIS_URL",
        &format!("redis://backup:backup-secret-pw@127.0.0.1:{}", source.port),
    );
    // A writer overwriting the hot keys all through the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let port = source.port;
        std::thread::spawn(move || {
            let mut con = connect(port, ":masterpw@");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                redis::cmd("SET")
                    .arg(format!("hot:{}", n % HOT))
                    .arg(n)
                    .query::<()>(&mut con)
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let r = w.drctl(&["run", "cache"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.join().unwrap();
    r.ok();
    assert!(writes > 0);
    let id = r.stdout.trim().to_owned();
    assert!(
        !r.stderr.contains("backup-secret-pw"),
        "the password leaked: {}",
        r.stderr
    );
    let m = manifest(&w, "cache", &id);
    assert_eq!(m["kind"], "redis");
    assert_eq!(m["redis"]["keyspace"]["db0"], total);
    assert!(m["redis"]["server_version"]
        .as_str()
        .unwrap()
        .starts_with('7'));
    assert!(m["redis"]["rdb_version"].as_u64().unwrap() >= 9);
    assert_eq!(m["artifacts"][0]["name"], "dump.rdb.zst");

    // verify --deep reads the RDB through to its CRC-64.
    let v = w.drctl(&["verify", "--job", "cache", "--deep"]);
    v.ok();
    assert!(v.stdout.contains("CRC-64 matches"), "{}", v.stdout);

    // Restore into a directory a throwaway server loads.
    let dir = scratch_dir("drctl-redis-restore-");
    w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "cache",
        "--to",
        dir.to_str().unwrap(),
    ])
    .ok();
    assert!(dir.join("dump.rdb").exists());
    let restored = Redis::start(&["--dir", dir.to_str().unwrap(), "--dbfilename", "dump.rdb"]);
    let mut rcon = connect(restored.port, "");
    // `INFO persistence` can say `loading:0` before the load has begun, so
    // wait for a data command to stop answering LOADING instead.
    let mut size = 0u64;
    wait_until(
        Duration::from_secs(30),
        "the RDB to load",
        || match redis::cmd("DBSIZE").query::<u64>(&mut rcon) {
            Ok(n) => {
                size = n;
                true
            }
            Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError => false,
            Err(e) => panic!("DBSIZE on the restored server: {e}"),
        },
    );
    assert_eq!(size, total);
    assert_eq!(sample(&mut rcon), expected);
    drop(restored);

    // A second restore into the same directory would replace dump.rdb:
    // refused without --yes, the file untouched; with --yes the old one
    // is kept.
    let before = std::fs::read(dir.join("dump.rdb")).unwrap();
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "cache",
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(std::fs::read(dir.join("dump.rdb")).unwrap(), before);
    w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "cache",
        "--to",
        dir.to_str().unwrap(),
        "--yes",
    ])
    .ok();
    let kept = std::fs::read_dir(&dir).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("dump.rdb.pre_restore_")
    });
    assert!(kept, "the replaced dump.rdb is kept");

    // A flipped byte in the stored snapshot: verify --deep fails (exit 3).
    w.corrupt_artifact("cache", &id, "dump.rdb");
    let v = w.drctl(&["verify", "--job", "cache", "--deep"]);
    assert_eq!(v.code, 3, "{}", v.all());
}

/// A wrong password, a server that is not there: the run fails with a
/// clear message and leaves no backup.
#[test]
fn a_refused_or_missing_redis_fails_the_run_without_a_backup() {
    let source = Redis::start(&["--requirepass", "right"]);
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.cache]\ntype = \"redis\"\nurl_env = \"CACHE_REDIS_URL\"\nrepository = \"local\"\ntimeout = \"5s\"\n",
    );
    w.set_env(
        "CACHE_REDIS_URL",
        &format!("redis://:wrong-pw@127.0.0.1:{}", source.port),
    );
    let r = w.drctl(&["run", "cache"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!r.stderr.contains("wrong-pw"), "{}", r.stderr);
    w.set_env(
        "CACHE_REDIS_URL",
        &format!("redis://127.0.0.1:{}", free_port()),
    );
    let r = w.drctl(&["run", "cache"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let listed = w.drctl(&["backups", "cache", "--json"]);
    assert_eq!(listed.ok().stdout.trim(), "[]");
}

/// A drill of a redis job: the snapshot restored into scratch, loaded by a
/// throwaway redis-server, key counts compared with the manifest, all of
/// it removed after; a snapshot whose key count does not match fails.
#[test]
fn a_redis_drill_loads_the_snapshot_into_a_throwaway_server() {
    let source = Redis::start(&[]);
    let mut con = connect(source.port, "");
    let mut p = redis::pipe();
    for k in 0..5_000 {
        p.cmd("SET").arg(format!("k:{k}")).arg(k).ignore();
    }
    p.cmd("SELECT").arg(2).ignore();
    for k in 0..30 {
        p.cmd("HSET").arg(format!("h:{k}")).arg("f").arg(k).ignore();
    }
    p.query::<()>(&mut con).unwrap();
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.cache]\ntype = \"redis\"\nurl_env = \"CACHE_REDIS_URL\"\nrepository = \"local\"\n\
         [drills.cache-nightly]\njob = \"cache\"\nrto = \"5m\"\n",
    );
    w.set_env(
        "CACHE_REDIS_URL",
        &format!("redis://127.0.0.1:{}", source.port),
    );
    let id = w.drctl(&["run", "cache"]).ok().stdout.trim().to_owned();
    let r = w.drctl(&["drill", "run", "cache-nightly", "--json"]);
    r.ok();
    let rec: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rec["outcome"], "passed", "{rec:#}");
    assert_eq!(rec["backup_id"], id.as_str());
    let checks = rec["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(checks
        .iter()
        .any(|c| c["name"] == "db0" && c["got"] == "5000"));
    assert!(checks
        .iter()
        .any(|c| c["name"] == "db2" && c["got"] == "30"));
    let scratch = w.dir.join("state").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("drill-")),
        "scratch left behind: {left:?}"
    );

    // A manifest whose key count the snapshot does not have: the drill fails
    // its verify phase, naming the database.
    let path = w.repo_dir().join("cache").join(&id).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["redis"]["keyspace"]["db0"] = 5001.into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let r = w.drctl(&["drill", "run", "cache-nightly", "--json"]);
    let rec: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rec["outcome"], "failed", "{rec:#}");
    assert_eq!(rec["failed_phase"], "verify");
    assert!(rec["error"].as_str().unwrap().contains("db0"), "{rec:#}");
}

/// Keys `k:0..n` with value `v`.
fn write_keys(con: &mut redis::Connection, n: u32, v: &str) {
    let mut p = redis::pipe();
    for k in 0..n {
        p.cmd("SET").arg(format!("k:{k}")).arg(v).ignore();
    }
    p.query::<()>(con).unwrap();
}

/// A server with `appendonly yes` loads its AOF and ignores `dump.rdb`:
/// a restore into its directory is refused without --yes, then writes the
/// snapshot as the AOF's base too (the old AOF kept, said so), and the
/// restarted server holds the backup's keys, not the later ones.
#[test]
fn a_restore_into_an_appendonly_servers_directory_comes_back_through_its_aof() {
    let dir = scratch_dir("drctl-redis-aof-");
    let d = dir.to_str().unwrap();
    let source = Redis::start(&["--dir", d, "--appendonly", "yes"]);
    let mut con = connect(source.port, "");
    write_keys(&mut con, 500, "in the backup");
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.cache]\ntype = \"redis\"\nurl_env = \"CACHE_REDIS_URL\"\nrepository = \"local\"\n",
    );
    w.set_env(
        "CACHE_REDIS_URL",
        &format!("redis://127.0.0.1:{}", source.port),
    );
    w.drctl(&["run", "cache"]).ok();
    write_keys(&mut con, 800, "after the backup");
    redis::cmd("BGREWRITEAOF").query::<()>(&mut con).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(con);
    drop(source);
    assert!(dir.join("appendonlydir").exists());

    let restore = |yes: bool| {
        let mut args = vec!["restore", "--latest", "--job", "cache", "--to", d];
        if yes {
            args.push("--yes");
        }
        w.drctl(&args)
    };
    let r = restore(false);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("append-only file"), "{}", r.stderr);
    let r = restore(true);
    r.ok();
    assert!(r.all().contains("appendonly yes"), "{}", r.all());
    let kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("appendonlydir.pre_restore_"))
        .collect();
    assert_eq!(kept.len(), 1, "the old AOF is kept");

    let restored = Redis::start(&["--dir", d, "--appendonly", "yes"]);
    let mut rcon = connect(restored.port, "");
    let size: u64 = redis::cmd("DBSIZE").query(&mut rcon).unwrap();
    assert_eq!(size, 500, "the backup's keys, not the 800 written after");
    let v: String = redis::cmd("GET").arg("k:7").query(&mut rcon).unwrap();
    assert_eq!(v, "in the backup");
}
