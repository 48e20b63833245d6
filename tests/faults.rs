//! Faults that cost other tools' users their data, each reproduced against
//! real components (PostgreSQL, the local repository on a small tmpfs, the
//! drctl binary under libfaketime), and the invariants checked after each:
//! no run reports success without a committed, readable manifest; nothing
//! listed fails a data-reading verification; the newest good backup
//! survives; a refused or failed restore leaves its target as it was.
//!
//! This is the short form; `bench/faults.sh` runs the long one.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::tmpfs::Tmpfs;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn local_world(extra_job: &str) -> World {
    World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n{extra_job}\n"
    ))
}

fn world_on(repo: &Path, extra_job: &str) -> World {
    World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{}\"\n\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n{extra_job}\n",
        repo.display()
    ))
}

fn backups(w: &World) -> Vec<serde_json::Value> {
    let r = w.drctl(&["backups", "appdb", "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

fn listed_ids(w: &World) -> Vec<String> {
    backups(w)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Add lines to the end of the world's config (inside its last table).
fn append(w: &World, text: &str) {
    let mut c = std::fs::read_to_string(&w.config).unwrap();
    c.push('\n');
    c.push_str(text);
    std::fs::write(&w.config, c).unwrap();
}

fn manifest_path(repo: &Path, id: &str) -> PathBuf {
    repo.join("appdb").join(id).join("manifest.json")
}

fn read_manifest(repo: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(manifest_path(repo, id)).unwrap()).unwrap()
}

fn write_manifest(repo: &Path, id: &str, m: &serde_json::Value) {
    std::fs::write(
        manifest_path(repo, id),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

/// Make a manifest's artifact entry describe `stored` (as a bug or an
/// attacker that also rewrote the checksum would): shallow checks pass.
fn record(a: &mut serde_json::Value, stored: &[u8], raw_len: usize) {
    a["sha256"] = sha256_hex(stored).into();
    a["stored_bytes"] = stored.len().into();
    a["raw_bytes"] = raw_len.into();
}

/// The raw (decompressed) size of a backup's dump, from its manifest.
fn dump_raw_bytes(repo: &Path, id: &str) -> u64 {
    read_manifest(repo, id)["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["content"] == "pg_dump_custom")
        .unwrap()["raw_bytes"]
        .as_u64()
        .unwrap()
}

/// Temporary dumps a restore left in `dir`.
fn restore_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".drctl-restore-"))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn zstd(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("zstd")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn a_dump_cut_short_that_exits_zero_is_a_failed_run_and_deep_verify_reads_to_the_data() {
    let pg = pg();
    let src = pg.create_db("trunc");
    pg.seed(&src, &unique("trunc_owner"), 2000);
    // A pg_dump that loses its last 30 % and still exits 0.
    let bin = tool_wrappers(&[(
        "pg_dump",
        r#"t=$(mktemp); "$REAL" "$@" > "$t" || exit $?; n=$(stat -c %s "$t"); head -c $((n * 70 / 100)) "$t"; rm -f "$t"; exit 0"#,
    )]);
    let mut w = local_world(&format!("pg_bindir = \"{}\"", bin.display()));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let r = w.drctl(&["run", "appdb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("incomplete"), "{}", r.stderr);
    // Where the archive stops, read from its own structure (pg_dump 12 to
    // 15) or by pg_restore (other versions).
    assert!(
        r.stderr.contains("it ends inside the data of public.")
            || r.stderr.contains("pg_restore cannot read it"),
        "{}",
        r.stderr
    );
    assert!(listed_ids(&w).is_empty(), "nothing committed");
    let runs = w.drctl(&["logs", "appdb", "--json"]).ok().stdout.clone();
    assert!(runs.contains("failed"), "{runs}");

    // A truncated archive that an older drctl committed: the checksum
    // matches, `pg_restore --list` would read its table of contents, and
    // only reading the data finds the hole.
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let repo = w.repo_dir();
    let dump = repo.join("appdb").join(&id).join("database.dump.zst");
    let raw = zstd(&["-d", "-c"], &std::fs::read(&dump).unwrap());
    let cut = &raw[..raw.len() * 70 / 100];
    let stored = zstd(&["-1", "-c"], cut);
    std::fs::write(&dump, &stored).unwrap();
    let mut m = read_manifest(&repo, &id);
    for a in m["artifacts"].as_array_mut().unwrap() {
        if a["name"] == "database.dump.zst" {
            record(a, &stored, cut.len());
        }
    }
    write_manifest(&repo, &id, &m);
    let out = std::process::Command::new(pg_bin("pg_restore"))
        .arg("--list")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let _ = c.stdin.take().unwrap().write_all(cut);
            c.wait()
        })
        .unwrap();
    assert!(out.success(), "the premise: --list reads a cut archive");
    w.drctl(&["verify"]).ok();
    let r = w.drctl(&["verify", "--deep"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("cannot read the archive"), "{}", r.stdout);
}

#[test]
fn a_full_disk_never_commits_an_empty_manifest_and_never_costs_the_good_backup() {
    let pg = pg();
    let src = pg.create_db("full");
    pg.seed(&src, &unique("full_owner"), 300);
    // Measure what one backup needs, in pages.
    let probe = Tmpfs::mount(4 << 20);
    let mut w = world_on(
        &probe.path.join("repo"),
        "[jobs.appdb.retention]\nkeep_last = 1",
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let before = probe.free();
    w.drctl(&["run", "appdb"]).ok();
    let pages = (before - probe.free()) / 4096;
    assert!((3..200).contains(&pages), "{pages} pages");
    drop(probe);

    let mut failed = 0;
    let mut committed = 0;
    // From "nothing fits" to "everything but the manifest fits" and beyond.
    for free_pages in 0..=pages + 1 {
        let fs = Tmpfs::mount(4 << 20);
        let mut w = world_on(
            &fs.path.join("repo"),
            "[jobs.appdb.retention]\nkeep_last = 1",
        );
        w.set_env("APP_DATABASE_URL", &pg.url(&src));
        let good = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
        fs.fill_leaving(free_pages * 4096);
        let r = w.drctl(&["run", "appdb"]);
        let listed = listed_ids(&w);
        if r.code == 0 {
            committed += 1;
            let new = r.stdout.trim();
            assert_eq!(
                listed,
                vec![new.to_owned()],
                "free {free_pages}: {}",
                r.all()
            );
        } else {
            failed += 1;
            assert_eq!(listed, vec![good.clone()], "free {free_pages}: {}", r.all());
            let st = w.drctl(&["logs", "appdb", "--json"]).ok().stdout.clone();
            let runs: Vec<serde_json::Value> = serde_json::from_str(&st).unwrap();
            assert_eq!(runs[0]["status"], "failed", "{st}");
        }
        let v = w.drctl(&["verify", "--all", "--deep"]);
        assert_eq!(v.code, 0, "free {free_pages}: {}", v.all());
    }
    assert!(
        failed > 0 && committed > 0,
        "failed {failed}, committed {committed}"
    );
}

#[test]
fn one_unreadable_manifest_blinds_nothing_and_stops_retention() {
    let pg = pg();
    let src = pg.create_db("blind");
    pg.seed(&src, &unique("blind_owner"), 100);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let old = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let at_old = pg.fingerprint(&src);
    pg.psql(&src, "INSERT INTO public.customer VALUES (100001, 'newer')");
    let new = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let repo = w.repo_dir();
    std::fs::write(manifest_path(&repo, &new), b"{\"format\": 1, \"id\"").unwrap();
    let b = backups(&w);
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[1]["status"], "unreadable");
    assert_eq!(b[0]["status"], "ok");

    let r = w.drctl(&["verify", "--all", "--json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let oks: Vec<bool> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(oks, vec![true, false], "{v}");

    // restore --latest falls back to the newest readable backup, and says so.
    let target = unique("blind_dst");
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&target)]);
    r.ok();
    assert!(r.stderr.contains("passing over"), "{}", r.stderr);
    assert_eq!(pg.fingerprint(&target), at_old);

    // Retention deletes nothing while the newest manifest is unreadable.
    append(&w, "[jobs.appdb.retention]\nkeep_last = 1\n");
    let r = w.drctl(&["prune"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("deletes nothing"), "{}", r.stderr);
    assert!(manifest_path(&repo, &old).exists());
    // A new good backup ends that: then the damaged one goes by the policy.
    let newest = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    assert_eq!(listed_ids(&w), vec![newest]);
}

#[test]
fn a_clock_running_ahead_once_costs_no_real_backup_and_never_becomes_latest() {
    let pg = pg();
    let src = pg.create_db("skew");
    pg.seed(&src, &unique("skew_owner"), 50);
    let mut w = local_world("[jobs.appdb.retention]\nkeep_last = 3");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let mark = |n: i32| {
        pg.psql(&src, &format!("DELETE FROM public.\"Odd Name\"; INSERT INTO public.\"Odd Name\" VALUES ({n}, '{{}}')"));
    };
    mark(1);
    w.drctl(&["run", "appdb"]).ok();
    // One run on another host whose clock is 3 hours ahead.
    mark(2);
    let ahead = skewed_run(&w, "skewhost", "+3h", &["run", "appdb"]);
    ahead.ok();
    let skewed = ahead.stdout.trim().to_owned();
    mark(3);
    let real3 = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    mark(4);
    let real4 = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();

    let listed = backups(&w);
    let ids: Vec<&str> = listed.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&real3.as_str()) && ids.contains(&real4.as_str()),
        "{listed:?}"
    );
    let sk = listed.iter().find(|b| b["id"] == skewed.as_str()).unwrap();
    assert_eq!(sk["status"], "clock_skew", "{sk}");
    // The newest real data is what --latest restores.
    let target = unique("skew_dst");
    w.drctl(&["restore", "--latest", "--to", &pg.url(&target)])
        .ok();
    assert_eq!(pg.psql(&target, "SELECT k FROM public.\"Odd Name\""), "4");
    let alerts = w.drctl(&["alerts", "--json"]).ok().stdout.clone();
    assert!(alerts.contains("clock_skew:skewhost"), "{alerts}");
    let text = w.drctl(&["backups", "appdb"]).ok().stdout.clone();
    assert!(text.contains("clock_skew"), "{text}");
    // It filled no slot: the three real ones are all kept. Once real
    // backups older than it (by the store's clock) are let go, it goes too.
    mark(5);
    w.drctl(&["run", "appdb"]).ok();
    let ids = listed_ids(&w);
    assert!(!ids.contains(&skewed) && ids.contains(&real3), "{ids:?}");

    // keep_last = 1 and a run under the skewed clock: the real backup made
    // right after is never deleted by it.
    let mut w1 = local_world("[jobs.appdb.retention]\nkeep_last = 1");
    w1.set_env("APP_DATABASE_URL", &pg.url(&src));
    skewed_run(&w1, "skewhost", "+30d", &["run", "appdb"]).ok();
    let real = w1.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    assert!(listed_ids(&w1).contains(&real));
    // A host 30 days behind: its run's retention never deletes the backup
    // that run just made (its id sorts before the others'), and it says why.
    let behind = skewed_run(&w1, "behindhost", "-30d", &["run", "appdb"]);
    behind.ok();
    let behind_id = behind.stdout.trim().to_owned();
    assert!(listed_ids(&w1).contains(&behind_id), "{}", behind.all());
    let alerts = w1.drctl(&["alerts", "--json"]).ok().stdout.clone();
    assert!(alerts.contains("clock_skew:behindhost"), "{alerts}");
    let target = unique("skew_dst1");
    w1.drctl(&["restore", "--latest", "--to", &pg.url(&target)])
        .ok();
    assert_eq!(pg.psql(&target, "SELECT k FROM public.\"Odd Name\""), "5");
}

#[test]
fn rpo_age_comes_from_the_store_clock_not_the_writing_host() {
    let pg = pg();
    let src = pg.create_db("rpoclock");
    pg.seed(&src, &unique("rpoclock_owner"), 10);
    let mut w = local_world("rpo = \"1h\"");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let age = |w: &World| {
        let r = w.drctl(&["rpo", "--json"]);
        assert!(r.code == 0 || r.code == 8, "{}", r.all());
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        (
            v[0]["compliant"].as_bool().unwrap(),
            v[0]["age_seconds"].as_f64().unwrap(),
        )
    };
    // A host two hours behind just made a backup: fresh, by the store.
    skewed_run(&w, "behindhost", "-2h", &["run", "appdb"]).ok();
    let (ok, secs) = age(&w);
    assert!(ok && (0.0..120.0).contains(&secs), "{ok} {secs}");
    // A host 5 minutes ahead (within the skew tolerance, so it counts):
    // its backup is not 5 minutes younger than now.
    let w2 = {
        let mut w2 = local_world("rpo = \"1h\"");
        w2.set_env("APP_DATABASE_URL", &pg.url(&src));
        w2
    };
    skewed_run(&w2, "aheadhost", "+5m", &["run", "appdb"]).ok();
    let (ok, secs) = age(&w2);
    assert!(ok && (0.0..120.0).contains(&secs), "{ok} {secs}");
}

/// `drctl args` as another host (its own UTS namespace and host name) whose
/// clock is shifted by `offset` (libfaketime): one of two hosts sharing a
/// repository, with a wrong clock. Root only, as CI runs.
fn skewed_run(w: &World, host: &str, offset: &str, args: &[&str]) -> Run {
    let mut prefix = as_host(host);
    prefix.extend(["faketime", "-f", offset]);
    Run::from(w.command_via(&prefix, args).output().unwrap())
}

#[test]
fn artifact_names_that_leave_the_backup_are_refused_before_anything_is_read() {
    let pg = pg();
    let src = pg.create_db("names");
    pg.seed(&src, &unique("names_owner"), 20);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let repo = w.repo_dir();
    // A "globals" file outside the repository that would create a role.
    let evil_role = unique("evil");
    let outside = scratch_dir("drctl-outside-");
    let sql = format!("CREATE ROLE {evil_role};\n");
    let stored = zstd(&["-1", "-c"], sql.as_bytes());
    std::fs::write(outside.join("evil.sql.zst"), &stored).unwrap();
    let rel = format!("../../../..{}/evil.sql.zst", outside.display());
    let mut m = read_manifest(&repo, &id);
    for a in m["artifacts"].as_array_mut().unwrap() {
        if a["content"] == "pg_globals_sql" {
            a["name"] = rel.clone().into();
            record(a, &stored, sql.len());
        }
    }
    write_manifest(&repo, &id, &m);
    let r = w.drctl(&["verify"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.all().contains("not the name drctl writes"), "{}", r.all());
    assert!(!r.all().contains(&sha256_hex(&stored)), "{}", r.all());
    let target = unique("names_dst");
    let r = w.drctl(&["restore", "--id", &id, "--to", &pg.url(&target)]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(!pg.db_exists(&target));
    assert_eq!(
        pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{evil_role}'")
        ),
        "0"
    );
}

#[test]
fn concurrent_restores_get_their_own_files_and_one_target_takes_one_restore() {
    let pg = pg();
    let src = pg.create_db("conc");
    pg.seed(&src, &unique("conc_owner"), 3000);
    let before = pg.fingerprint(&src);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.drctl(&["run", "appdb"]).ok();
    let (a, b) = (unique("conc_a"), unique("conc_b"));
    let spawn = |t: &str| {
        w.command(&["restore", "--latest", "--to", &pg.url(t), "--jobs", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    Run::from(ca.wait_with_output().unwrap()).ok();
    Run::from(cb.wait_with_output().unwrap()).ok();
    assert_eq!(pg.fingerprint(&a), before);
    assert_eq!(pg.fingerprint(&b), before);

    // The same target twice at once: one restores, the other is refused.
    let c = unique("conc_c");
    let (c1, c2) = (spawn(&c), spawn(&c));
    let r1 = Run::from(c1.wait_with_output().unwrap());
    let r2 = Run::from(c2.wait_with_output().unwrap());
    let mut codes = [r1.code, r2.code];
    codes.sort();
    assert_eq!(codes, [0, 4], "{}\n{}", r1.all(), r2.all());
    assert_eq!(pg.fingerprint(&c), before);
    let tmp = w.dir.join("state").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_dump_replaced_between_the_two_passes_of_a_streamed_restore_fails_it() {
    let pg = pg();
    let src = pg.create_db("swapdump");
    let owner = unique("swapdump_owner");
    pg.seed(&src, &owner, 200);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let first = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    pg.psql(&src, "DELETE FROM billing.payment");
    let second = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let repo = w.repo_dir();
    let victim = repo.join("appdb").join(&first).join("database.dump.zst");
    let other = repo.join("appdb").join(&second).join("database.dump.zst");
    // The owner role is missing, so psql runs (to create it) between the
    // verify pass and the streaming pass: the wrapper replaces the dump then.
    pg.psql(&src, &format!("REASSIGN OWNED BY {owner} TO postgres"));
    pg.psql(
        "postgres",
        &format!("DROP OWNED BY {owner}; DROP ROLE {owner}"),
    );
    let bin = tool_wrappers(&[(
        "psql",
        &format!(
            "cp '{}' '{}.new' && mv '{}.new' '{}'; exec \"$REAL\" \"$@\"",
            other.display(),
            victim.display(),
            victim.display(),
            victim.display()
        ),
    )]);
    append(&w, &format!("pg_bindir = \"{}\"\n", bin.display()));
    // A scratch directory too small for the dump: verify, then stream.
    let small = Tmpfs::mount(1 << 20);
    let target = unique("swapdump_dst");
    let r = w.drctl(&[
        "restore",
        "--id",
        &first,
        "--to",
        &pg.url(&target),
        "--jobs",
        "1",
        "--tmp-dir",
        small.path.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("SHA-256"), "{}", r.stderr);
    assert!(!pg.db_exists(&target), "the new database is dropped");
}

#[test]
fn exits_say_what_happened() {
    let pg = pg();
    let src = pg.create_db("exits");
    pg.seed(&src, &unique("exits_owner"), 20);
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n[jobs.other]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n[jobs.files]\ntype = \"files\"\npaths = [\"{dir}/data\"]\nrepository = \"local\"\n",
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();

    // verify without --job verifies what exists and names the jobs without backups.
    let r = w.drctl(&["verify"]);
    r.ok();
    assert!(r.stdout.contains("ok   appdb/"), "{}", r.stdout);
    assert!(
        r.stdout.contains("other: no committed backup yet"),
        "{}",
        r.stdout
    );
    assert_eq!(w.drctl(&["verify", "--job", "other"]).code, 5);

    // A listed backup missing an artifact is damage (3), not "not found".
    std::fs::remove_file(
        w.repo_dir()
            .join("appdb")
            .join(&id)
            .join("database.dump.zst"),
    )
    .unwrap();
    let target = unique("exits_dst");
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--to",
        &pg.url(&target),
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(!pg.db_exists(&target));

    // A full scratch directory is a local problem (1), not a damaged backup (3).
    let data = w.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let noise: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("big.bin"), &noise).unwrap();
    w.drctl(&["run", "files"]).ok();
    let small = Tmpfs::mount(1 << 20);
    let out = scratch_dir("drctl-files-out-");
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "files",
        "--to",
        out.join("x").to_str().unwrap(),
        "--tmp-dir",
        small.path.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("No space left"), "{}", r.stderr);
    assert!(!r.stderr.contains("integrity"), "{}", r.stderr);

    // A reader that closed our stdout ends the program quietly.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = w
        .command(&["backups"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn pg_restore_dies_with_a_killed_drctl() {
    let pg = pg();
    let src = pg.create_db("orphan");
    pg.seed(&src, &unique("orphan_owner"), 50);
    // A pg_restore that takes its time, so drctl can be killed under it.
    let bin = tool_wrappers(&[("pg_restore", "sleep 30; exec \"$REAL\" \"$@\"")]);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.drctl(&["run", "appdb"]).ok();
    append(&w, &format!("pg_bindir = \"{}\"\n", bin.display()));
    let target = unique("orphan_dst");
    let mut child = w
        .command(&["restore", "--latest", "--to", &pg.url(&target)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Without PR_SET_PDEATHSIG the wrapper would sleep on, then run the
    // real pg_restore into a database nothing removes.
    wait_until(Duration::from_secs(20), "pg_restore started", || {
        children_of(pid).iter().any(|c| comm(*c) == "pg_restore")
    });
    let kids: Vec<u32> = children_of(pid);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = child.wait();
    wait_until(Duration::from_secs(10), "children gone", || {
        kids.iter()
            .all(|k| !Path::new(&format!("/proc/{k}")).exists() || comm(*k).is_empty())
    });
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn comm(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) is gone for our purposes.
    if stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) {
        return String::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Run drctl until it reaches fault point `point`, then SIGKILL it.
fn kill_at(w: &World, point: &str, args: &[&str]) {
    paused_at(w, point, args).kill();
}

fn allows_connections(db: &str) -> String {
    pg().psql(
        "postgres",
        &format!("SELECT datallowconn FROM pg_database WHERE datname = '{db}'"),
    )
}

fn leases_left(w: &World) -> usize {
    walkdir::WalkDir::new(w.repo_dir())
        .into_iter()
        .flatten()
        .filter(|e| {
            e.path().components().any(|c| c.as_os_str() == "leases") && e.file_type().is_file()
        })
        .count()
}

#[test]
fn a_kill_at_either_half_of_the_swap_is_rolled_back_or_finished_by_the_next_command() {
    let pg = pg();
    let db = pg.create_db("swapkill");
    pg.seed(&db, &unique("swapkill_owner"), 200);
    let at_backup = pg.fingerprint(&db);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();
    pg.psql(&db, "DELETE FROM billing.payment");
    let changed = pg.fingerprint(&db);
    let restore = ["restore", "--latest", "--job", "appdb", "--yes"];

    // Killed after the database was closed to connections, before the renames.
    kill_at(&w, "restore.swap.closed", &restore);
    assert_eq!(
        allows_connections(&db),
        "f",
        "the premise: killed while closed"
    );
    let st = w.drctl(&["status"]);
    st.ok();
    assert!(st.stderr.contains("rolled back"), "{}", st.stderr);
    assert_eq!(allows_connections(&db), "t");
    assert_eq!(pg.fingerprint(&db), changed, "unchanged");
    assert_eq!(
        pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{db}_restoring_%'")
        ),
        "0"
    );
    assert_eq!(leases_left(&w), 0);
    let tmp: Vec<_> = std::fs::read_dir(w.dir.join("state/tmp"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{tmp:?}");
    // Nothing more to do the second time.
    let st = w.drctl(&["status"]);
    assert!(!st.stderr.contains("rolled back"), "{}", st.stderr);

    // Killed after the renames, before the safety copy was re-opened: the
    // next restore command finishes it before starting its own work.
    std::thread::sleep(Duration::from_millis(1100)); // a new name stamp
    kill_at(&w, "restore.swap.renamed", &restore);
    let safety = pg.psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE datname LIKE '{db}_pre_restore_%'"),
    );
    assert!(!safety.is_empty());
    assert_eq!(
        allows_connections(&safety),
        "f",
        "the premise: the safety copy is still closed"
    );
    let r = w.drctl(&["restore", "--latest", "--job", "appdb", "--dry-run"]);
    r.ok();
    assert!(r.stderr.contains("finished"), "{}", r.stderr);
    assert_eq!(allows_connections(&safety), "t");
    assert_eq!(allows_connections(&db), "t");
    assert_eq!(pg.fingerprint(&db), at_backup);
    assert_eq!(pg.fingerprint(&safety), changed);
    assert_eq!(leases_left(&w), 0);
}

#[test]
fn an_undo_killed_at_either_half_of_its_swap_is_explained_and_settled() {
    let pg = pg();
    let db = pg.create_db("undokill");
    pg.seed(&db, &unique("undokill_owner"), 50);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();
    let at_backup = pg.fingerprint(&db);
    pg.psql(&db, "DELETE FROM billing.payment");
    let changed = pg.fingerprint(&db);
    w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"])
        .ok();
    let copies = || {
        pg.psql(
            "postgres",
            &format!("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE '{db}_pre_restore_%'"),
        )
    };
    let undo = ["restore", "--undo", "--job", "appdb", "--yes"];

    // Killed after the renames: the next command finishes the undo.
    std::thread::sleep(Duration::from_millis(1100)); // a new name stamp
    kill_at(&w, "restore.swap.renamed", &undo);
    let st = w.drctl(&["status"]);
    st.ok();
    assert!(
        st.stderr.contains("undo of the last restore of appdb") && st.stderr.contains("finished"),
        "{}",
        st.stderr
    );
    assert_eq!(pg.fingerprint(&db), changed);
    let after_first = copies();
    assert!(!after_first.contains(','), "one copy: {after_first}");
    assert_eq!(allows_connections(&after_first), "t");
    assert_eq!(pg.fingerprint(&after_first), at_backup);

    // Killed before the renames: rolled back, nothing lost, the copy kept.
    std::thread::sleep(Duration::from_millis(1100));
    kill_at(&w, "restore.swap.closed", &undo);
    assert_eq!(
        allows_connections(&db),
        "f",
        "the premise: killed while closed"
    );
    let r = w.drctl(&["restore", "--undo", "--job", "appdb", "--dry-run"]);
    r.ok();
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(allows_connections(&db), "t");
    assert_eq!(pg.fingerprint(&db), changed);
    assert_eq!(copies(), after_first);
    assert_eq!(pg.fingerprint(&after_first), at_backup);

    // And the undo then goes through.
    w.drctl(&undo).ok();
    assert_eq!(pg.fingerprint(&db), at_backup);
}

#[test]
fn database_acls_settings_and_comment_survive_a_restore() {
    let pg = pg();
    let db = pg.create_db("props");
    pg.seed(&db, &unique("props_owner"), 20);
    let outsider = unique("props_outsider");
    pg.psql("postgres", &format!("CREATE ROLE {outsider} LOGIN"));
    pg.psql(
        "postgres",
        &format!(
            "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC; ALTER DATABASE {db} SET work_mem = '7MB'; COMMENT ON DATABASE {db} IS 'payments, PCI scope'"
        ),
    );
    let props = |d: &str| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT has_database_privilege('{outsider}', '{d}', 'CONNECT')::text || ' ' || coalesce((SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s JOIN pg_database x ON x.oid = s.setdatabase WHERE x.datname = '{d}' AND s.setrole = 0), '-') || ' ' || coalesce(shobj_description((SELECT oid FROM pg_database WHERE datname = '{d}'), 'pg_database'), '-')"
            ),
        )
    };
    let expected = "false work_mem=7MB payments, PCI scope";
    assert_eq!(props(&db), expected);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.drctl(&["run", "appdb"]).ok();

    let target = unique("props_dst");
    w.drctl(&["restore", "--latest", "--to", &pg.url(&target)])
        .ok();
    assert_eq!(props(&target), expected);
    // Into the job's own database (the swap path) too.
    pg.psql(
        "postgres",
        &format!("COMMENT ON DATABASE {db} IS 'changed'; GRANT CONNECT ON DATABASE {db} TO PUBLIC"),
    );
    w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"])
        .ok();
    assert_eq!(props(&db), expected);
}

#[tokio::test]
async fn a_store_that_ignores_object_lock_fails_the_run_before_the_commit() {
    let bucket = s3().create_bucket().await;
    let src = scratch_dir("drctl-lock-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    // The in-process S3 server accepts the Object Lock headers and applies
    // nothing, as some S3-compatible stores do.
    let w = World::new(&format!(
        "[repositories.vault]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath_style = true\nobject_lock = {{ mode = \"compliance\", days = 7 }}\n[jobs.hist]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"vault\"\n",
        s3().endpoint,
        src.display()
    ));
    let r = w.drctl(&["run", "hist"]);
    assert_eq!(r.code, 1, "{}", r.all());
    if s3().root.is_some() {
        assert!(r.stderr.contains("did not apply it"), "{}", r.stderr);
    }
    let listed = w.drctl(&["backups", "hist", "--json"]);
    assert_eq!(listed.ok().stdout.trim(), "[]");
}

#[test]
fn two_hosts_giving_different_databases_one_job_name_are_caught_before_damage() {
    let pg = pg();
    let (db_a, db_b) = (pg.create_db("coll_a"), pg.create_db("coll_b"));
    pg.seed(&db_a, &unique("coll_owner_a"), 30);
    pg.seed(&db_b, &unique("coll_owner_b"), 60);
    let repo = scratch_dir("drctl-shared-repo-");
    let mut a = world_on(&repo, "[jobs.appdb.retention]\nkeep_last = 1");
    a.set_env("APP_DATABASE_URL", &pg.url(&db_a));
    let mut b = world_on(&repo, "[jobs.appdb.retention]\nkeep_last = 1");
    b.set_env("APP_DATABASE_URL", &pg.url(&db_b));
    let a_id = a.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let at_a = pg.fingerprint(&db_a);
    // Host B's run commits, but its retention refuses to delete host A's backup.
    let b_id = b.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    assert!(
        manifest_path(&repo, &a_id).exists(),
        "A's backup survives B's retention"
    );
    let alerts = b.drctl(&["alerts", "--json"]).ok().stdout.clone();
    assert!(alerts.contains("job_collision:appdb"), "{alerts}");
    let r = a.drctl(&["prune"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("job collision"), "{}", r.stderr);

    // Host A's incident restore would pick B's backup: refused, A untouched.
    let r = a.drctl(&["restore", "--latest", "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains(&b_id) && r.stderr.contains("--force-source"),
        "{}",
        r.stderr
    );
    assert_eq!(pg.fingerprint(&db_a), at_a);
    // A's own backup restores as usual.
    pg.psql(&db_a, "DELETE FROM billing.payment");
    a.drctl(&["restore", "--id", &a_id, "--job", "appdb", "--yes"])
        .ok();
    assert_eq!(pg.fingerprint(&db_a), at_a);
}

/// Rounds of the random fault run: a short form in the suite, the long one
/// from `bench/faults.sh` (`DRCTL_FAULT_ROUNDS`).
fn rounds() -> u64 {
    std::env::var("DRCTL_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// xorshift: reproducible randomness from a seed printed with the results.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default, Debug)]
struct Tally {
    kills: u64,
    store_faults: u64,
    completed: u64,
    false_successes: u64,
    lost_good: u64,
    touched_on_refusal: u64,
    leftovers: u64,
    unreachable: u64,
    unverifiable_listed: u64,
}

/// Leftovers after a rerun and a sweep: half-restored databases, temp
/// files, leases, partial objects.
fn leftovers(w: &World, db: &str) -> Vec<String> {
    let pg = pg();
    let mut out: Vec<String> = pg
        .psql("postgres", &format!("SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE '{db}_restoring_%' OR datname LIKE 'chaos_to_%' OR datname LIKE 'drctl_drill_%'"))
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Ok(d) = std::fs::read_dir(w.dir.join("state/tmp")) {
        out.extend(d.flatten().map(|e| e.path().display().to_string()));
    }
    for e in walkdir::WalkDir::new(w.repo_dir()).into_iter().flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if e.file_type().is_file()
            && (name.contains(".partial-") || p.components().any(|c| c.as_os_str() == "leases"))
        {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn random_kills_and_store_faults_never_make_a_false_restorable() {
    let pg = pg();
    let db = pg.create_db("chaos");
    pg.seed(&db, &unique("chaos_owner"), 20_000);
    let original = pg.fingerprint(&db);
    let bystander = pg.create_db("chaos_by");
    pg.seed(&bystander, &unique("chaos_by_owner"), 10);
    let by_print = pg.fingerprint(&bystander);
    let seed = std::env::var("DRCTL_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2654435761 + 1);
    let mut rng = Rng(seed | 1);
    let mut t = Tally::default();

    // Kills at random points of backup, restore (swap included), prune,
    // verify and a refused restore, on a local repository.
    let mut w = local_world("retention = { keep_last = 2 }");
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config)
            .unwrap()
            .replace("path = \"", "lease_ttl = \"2s\"\npath = \""),
    )
    .unwrap();
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.set_env("DRILL_PG_URL", &pg.url("postgres"));
    append(
        &w,
        "[drills.chaos]\njob = \"appdb\"\ntarget = { server_url_env = \"DRILL_PG_URL\" }\n",
    );
    let mut good: Vec<String> = vec![w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned()];
    let kill_rounds = rounds() * 2;
    let mut took = [Duration::from_millis(600); 8];
    for round in 0..kill_rounds {
        let to = format!("chaos_to_{round}");
        let (args, refused_target): (Vec<String>, bool) = match round % 7 {
            0 | 1 => (vec!["run".into(), "appdb".into()], false),
            6 => (
                vec!["verify".into(), "--all".into(), "--deep".into()],
                false,
            ),
            2 => (
                vec![
                    "restore".into(),
                    "--latest".into(),
                    "--job".into(),
                    "appdb".into(),
                    "--yes".into(),
                    "--jobs".into(),
                    "2".into(),
                ],
                false,
            ),
            3 => (
                vec![
                    "restore".into(),
                    "--latest".into(),
                    "--to".into(),
                    pg.url(&to),
                ],
                false,
            ),
            4 => (
                vec!["prune".into(), "--orphan-age".into(), "1s".into()],
                false,
            ),
            _ => (
                vec![
                    "restore".into(),
                    "--latest".into(),
                    "--to".into(),
                    pg.url(&bystander),
                ],
                true,
            ),
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = w
            .command(&argv)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kill within the operation's own duration (as last measured), so
        // nearly every round lands inside it, wherever that is.
        let op = round % 8;
        let delay = Duration::from_millis(rng.below(took[op as usize].as_millis() as u64));
        let start = std::time::Instant::now();
        let mut killed = false;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if start.elapsed() >= delay {
                child.kill().unwrap();
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = Run::from(child.wait_with_output().unwrap());
        if killed {
            t.kills += 1;
        } else {
            t.completed += 1;
            took[op as usize] = start.elapsed();
        }
        // Recovery: the next command finishes or rolls back what was cut.
        w.drctl(&["status"]).ok();
        let listed = listed_ids(&w);
        if !killed && argv[0] == "run" && r.code == 0 {
            let id = r.stdout.trim().to_owned();
            if !listed.contains(&id) {
                t.false_successes += 1;
            }
            good.push(id);
        }
        if let Some(newest_good) = good.iter().rev().find(|g| listed.contains(g)).cloned() {
            if Some(&newest_good) != good.last() {
                t.lost_good += 1;
            }
        } else {
            t.lost_good += 1;
        }
        if refused_target && pg.fingerprint(&bystander) != by_print {
            t.touched_on_refusal += 1;
        }
        let reachable = pg.psql(
            "postgres",
            &format!("SELECT datallowconn FROM pg_database WHERE datname = '{db}'"),
        ) == "t"
            && pg.fingerprint(&db) == original;
        if !reachable {
            t.unreachable += 1;
        }
        // Safety copies accept connections, then go (they pile up otherwise).
        for copy in pg
            .psql("postgres", &format!("SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE '{db}_pre_restore_%'"))
            .split(',')
            .filter(|s| !s.is_empty())
        {
            if pg.psql("postgres", &format!("SELECT datallowconn FROM pg_database WHERE datname = '{copy}'")) != "t" {
                t.unreachable += 1;
            }
            pg.psql("postgres", &format!("DROP DATABASE \"{copy}\" WITH (FORCE)"));
        }
        let to_exists = pg.db_exists(&to);
        if to_exists {
            if pg.fingerprint(&to) != original && !killed {
                t.false_successes += 1;
            }
            pg.psql("postgres", &format!("DROP DATABASE \"{to}\" WITH (FORCE)"));
        }
        // Leases of killed runs expire (lease_ttl 2s), then a sweep clears all.
        std::thread::sleep(Duration::from_millis(2100));
        w.drctl(&["prune", "--orphan-age", "0s"]).ok();
        let left = leftovers(&w, &db);
        if !left.is_empty() {
            eprintln!("round {round} ({argv:?}, killed {killed}): leftovers {left:?}");
            t.leftovers += left.len() as u64;
        }
        if w.drctl(&["verify", "--all", "--deep"]).code != 0 {
            t.unverifiable_listed += 1;
        }
    }

    // Store faults: an S3 endpoint that resets connections mid-request and
    // answers 503 SlowDown in storms.
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let rate = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(AtomicU64::new(0));
    let (r2, f2) = (rate.clone(), faults.clone());
    let dice = std::sync::Mutex::new(Rng(seed.rotate_left(17) | 1));
    let target = s3().endpoint.trim_start_matches("http://").to_owned();
    let port = fault_proxy(target, move |chunk| {
        let per_mille = r2.load(Ordering::SeqCst);
        let roll = dice.lock().unwrap().below(1000);
        if roll >= per_mille {
            return Fault::Pass;
        }
        f2.fetch_add(1, Ordering::SeqCst);
        // A request's first chunk may get a 503 SlowDown; any chunk a reset.
        let starts_request = [&b"GET "[..], b"PUT ", b"POST ", b"HEAD ", b"DELETE "]
            .iter()
            .any(|m| chunk.starts_with(m));
        if starts_request && roll.is_multiple_of(2) {
            Fault::SlowDown
        } else {
            Fault::Cut
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bucket = rt.block_on(s3().create_bucket());
    let mut ws = World::new(&format!(
        "[repositories.flaky]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{port}\"\npath_style = true\npart_size = \"5MiB\"\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"flaky\"\n[jobs.appdb.retention]\nkeep_last = 3\n"
    ));
    ws.set_env("APP_DATABASE_URL", &pg.url(&db));
    for round in 0..rounds() * 4 {
        rate.store(20 + rng.below(200), Ordering::SeqCst);
        let before = faults.load(Ordering::SeqCst);
        let r = if round % 2 == 0 {
            ws.drctl(&["run", "appdb"])
        } else {
            let to = format!("chaos_to_s3_{round}");
            let r = ws.drctl(&["restore", "--latest", "--to", &pg.url(&to)]);
            if pg.db_exists(&to) {
                if r.code != 0 || pg.fingerprint(&to) != original {
                    t.false_successes += u64::from(r.code == 0);
                    t.leftovers += u64::from(r.code != 0);
                }
                pg.psql("postgres", &format!("DROP DATABASE \"{to}\" WITH (FORCE)"));
            }
            r
        };
        rate.store(0, Ordering::SeqCst);
        t.store_faults += faults.load(Ordering::SeqCst) - before;
        if round % 2 == 0 && r.code == 0 && !listed_ids(&ws).contains(&r.stdout.trim().to_owned()) {
            t.false_successes += 1;
        }
        if ws.drctl(&["verify", "--all", "--deep"]).code != 0 {
            t.unverifiable_listed += 1;
        }
    }

    eprintln!(
        "faults (seed {seed}): {} kill points, {} store faults, {} runs completed\n\
         | false successes | lost good backups | touched on refusal | leftovers | unreachable | listed failing verify |\n\
         | {} | {} | {} | {} | {} | {} |",
        t.kills, t.store_faults, t.completed, t.false_successes, t.lost_good, t.touched_on_refusal, t.leftovers, t.unreachable, t.unverifiable_listed
    );
    assert_eq!(
        (
            t.false_successes,
            t.lost_good,
            t.touched_on_refusal,
            t.leftovers,
            t.unreachable,
            t.unverifiable_listed
        ),
        (0, 0, 0, 0, 0, 0),
        "seed {seed}: {t:?}"
    );
    assert!(t.kills + t.completed == kill_rounds);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_backup_survives_a_concurrent_orphan_sweep_and_its_commit_rechecks_what_it_wrote() {
    let pg = pg();
    let src = pg.create_db("slow");
    pg.seed(&src, &unique("slow_owner"), 100);
    // pg_dump waits 6 s (a lock wait) after the globals are stored.
    let bin = tool_wrappers(&[(
        "pg_dump",
        "case \"$*\" in *--version*) exec \"$REAL\" \"$@\";; esac; sleep 6; exec \"$REAL\" \"$@\"",
    )]);
    let bucket = s3().create_bucket().await;
    let mut w = World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath_style = true\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\npg_bindir = \"{}\"\n",
        s3().endpoint,
        bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let spawn = || {
        w.command(&["run", "appdb"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A prune with a 2-second orphan age on another host, mid-backup.
    let child = spawn();
    std::thread::sleep(Duration::from_secs(4));
    let p = w.drctl(&["prune", "--orphan-age", "2s", "--json"]);
    p.ok();
    let report: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(
        report[0]["orphans"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    let r = Run::from(child.wait_with_output().unwrap());
    r.ok();
    let first = r.stdout.trim().to_owned();
    w.drctl(&["verify", "--deep"]).ok();

    // Someone deletes an artifact of the running backup anyway: the commit
    // checks every artifact it names and fails instead of listing a hole.
    let child = spawn();
    std::thread::sleep(Duration::from_secs(3));
    let client = s3().client().await;
    let objects = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("appdb/")
        .send()
        .await
        .unwrap();
    let victim = objects
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .find(|k| k.ends_with("globals.sql.zst") && !k.contains(&first))
        .expect("the running backup's globals")
        .to_owned();
    client
        .delete_object()
        .bucket(&bucket)
        .key(&victim)
        .send()
        .await
        .unwrap();
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("vanished before the commit"),
        "{}",
        r.stderr
    );
    assert_eq!(listed_ids(&w), vec![first]);
}

#[test]
fn a_restore_longer_than_the_lease_ttl_keeps_its_backup_and_one_without_a_lease_never_starts() {
    let pg = pg();
    let src = pg.create_db("longres");
    pg.seed(&src, &unique("longres_owner"), 100);
    let before = pg.fingerprint(&src);
    let mut w = local_world("retention = { keep_last = 1 }");
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config)
            .unwrap()
            .replace("path = \"", "lease_ttl = \"2s\"\npath = \""),
    )
    .unwrap();
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let old = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    // A pg_restore that runs three lease TTLs.
    let marker = scratch_dir("drctl-longres-").join("started");
    let bin = tool_wrappers(&[(
        "pg_restore",
        &format!("touch {}; sleep 6; exec \"$REAL\" \"$@\"", marker.display()),
    )]);
    append(&w, &format!("pg_bindir = \"{}\"\n", bin.display()));
    let target = unique("longres_dst");
    let child = w
        .command(&["restore", "--id", &old, "--to", &pg.url(&target)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_path(&marker, Duration::from_secs(20));
    // Another backup, whose retention (keep_last = 1) would take the old one.
    w.drctl(&["run", "appdb"]).ok();
    std::thread::sleep(Duration::from_secs(3));
    let p = w.drctl(&["prune", "--json"]);
    p.ok();
    assert!(p.stdout.contains("in use by a restore"), "{}", p.stdout);
    assert!(listed_ids(&w).contains(&old));
    Run::from(child.wait_with_output().unwrap()).ok();
    assert_eq!(pg.fingerprint(&target), before);
    // Released at the end: now the policy applies.
    w.drctl(&["prune"]).ok();
    assert!(!listed_ids(&w).contains(&old));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_cannot_lease_its_backup_does_not_start() {
    let pg = pg();
    let src = pg.create_db("nolease");
    pg.seed(&src, &unique("nolease_owner"), 20);
    let bucket = s3().create_bucket().await;
    let body = |endpoint: &str| {
        format!(
            "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\npath_style = true\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\n"
        )
    };
    let mut w = World::new(&body(&s3().endpoint));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    w.drctl(&["run", "appdb"]).ok();
    // A store that refuses every lease write (a policy, a full quota).
    let target = s3().endpoint.trim_start_matches("http://").to_owned();
    let port = proxy(target, |chunk| {
        !(chunk.starts_with(b"PUT ") && chunk.windows(8).any(|w| w == b"/leases/"))
    });
    let mut r = World::new(&body(&format!("http://127.0.0.1:{port}")));
    r.set_env("APP_DATABASE_URL", &pg.url(&src));
    let dst = unique("nolease_dst");
    let out = r.drctl(&["restore", "--latest", "--to", &pg.url(&dst)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("cannot lease"), "{}", out.stderr);
    assert!(!pg.db_exists(&dst));
}

#[test]
fn files_restores_refuse_unsafe_archives_before_writing_and_drop_setuid_bits() {
    use std::os::unix::fs::PermissionsExt;
    let src = scratch_dir("drctl-files-src-");
    std::fs::write(src.join("app.conf"), "x=1\n").unwrap();
    std::fs::write(src.join("tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("app.conf", src.join("current")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("outside")).unwrap();
    let fifo = src.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.configs]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n",
        src.display()
    ));
    // What a restore would refuse never enters the archive, and the run says so.
    let r = w.drctl(&["run", "configs"]);
    r.ok();
    let id = r.stdout.trim().to_owned();
    assert!(
        r.stderr.contains("pipe") && r.stderr.contains("outside"),
        "{}",
        r.stderr
    );
    w.drctl(&["verify", "--deep"]).ok();

    let rel = src.strip_prefix("/").unwrap();
    let out = scratch_dir("drctl-files-dst-").join("a");
    w.drctl(&["restore", "--latest", "--to", out.to_str().unwrap()])
        .ok();
    let tool = std::fs::metadata(out.join(rel).join("tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o755, "setuid dropped");
    assert_eq!(
        std::fs::read_link(out.join(rel).join("current")).unwrap(),
        Path::new("app.conf")
    );
    assert!(
        !out.join(rel).join("pipe").exists()
            && std::fs::symlink_metadata(out.join(rel).join("outside")).is_err()
    );
    let kept = scratch_dir("drctl-files-dst-").join("b");
    w.drctl(&[
        "restore",
        "--latest",
        "--to",
        kept.to_str().unwrap(),
        "--preserve-modes",
    ])
    .ok();
    let tool = std::fs::metadata(kept.join(rel).join("tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);

    // An archive with a `..` entry after a harmless one (tampered, or written
    // by a bug): refused whole, nothing extracted; verify --deep says so.
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        for name in ["ok/first.txt", "zz/../../evil.txt"] {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(3);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, &b"hi\n"[..]).unwrap();
        }
        b.finish().unwrap();
    }
    let stored = zstd(&["-1", "-c"], &raw);
    let repo = w.repo_dir();
    let dir = repo.join("configs").join(&id);
    std::fs::write(dir.join("files.tar.zst"), &stored).unwrap();
    let mpath = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    record(&mut m["artifacts"][0], &stored, raw.len());
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let bad = scratch_dir("drctl-files-dst-").join("c");
    let r = w.drctl(&["restore", "--latest", "--to", bad.to_str().unwrap()]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains(".."), "{}", r.stderr);
    assert!(!bad.join("ok").exists(), "nothing extracted");
    assert!(!bad.parent().unwrap().join("evil.txt").exists());
    let v = w.drctl(&["verify", "--deep"]);
    assert_eq!(v.code, 3, "{}", v.all());
    assert!(v.stdout.contains("a restore would refuse"), "{}", v.stdout);
}

#[test]
fn retention_keeps_the_last_good_backup_when_the_newest_ones_are_known_damaged() {
    let pg = pg();
    let src = pg.create_db("dmg");
    pg.seed(&src, &unique("dmg_owner"), 50);
    let before = pg.fingerprint(&src);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let good = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let bad: Vec<String> = (0..3)
        .map(|_| w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned())
        .collect();
    // Bit rot in the three newest dumps, found by a full verification.
    for id in &bad {
        let p = w
            .repo_dir()
            .join("appdb")
            .join(id)
            .join("database.dump.zst");
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&p, &bytes).unwrap();
    }
    assert_eq!(w.drctl(&["verify", "--all"]).code, 3);
    append(&w, "retention = { keep_last = 1 }\n");
    let r = w.drctl(&["prune", "--json"]);
    r.ok();
    let ids = listed_ids(&w);
    assert!(
        ids.contains(&good),
        "the last good backup stays: {ids:?}\n{}",
        r.stdout
    );
    assert!(ids.contains(&bad[2]), "the newest stays too: {ids:?}");
    assert!(!ids.contains(&bad[0]) && !ids.contains(&bad[1]), "{ids:?}");
    // And it restores.
    let target = unique("dmg_dst");
    w.drctl(&["restore", "--id", &good, "--to", &pg.url(&target)])
        .ok();
    assert_eq!(pg.fingerprint(&target), before);
}

#[test]
fn a_scratch_directory_that_fills_up_mid_fetch_is_a_local_failure_that_leaves_nothing() {
    let pg = pg();
    let src = pg.create_db("scratchfull");
    pg.seed(&src, &unique("scratchfull_owner"), 50);
    pg.psql(&src, "CREATE TABLE bulk AS SELECT i, repeat(md5(i::text), 8) AS t FROM generate_series(1, 100000) i");
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let raw = dump_raw_bytes(&w.repo_dir(), &id);
    // Room for the free-space check to pass; then something else takes it
    // the moment the temporary dump appears (another process, a log burst).
    let needed = raw + raw / 20 + 64 * 1024 * 1024;
    let fs = Tmpfs::mount(needed + (8 << 20));
    fs.fill_leaving((needed + (1 << 20)) / 4096 * 4096);
    let dir = fs.path.clone();
    let filler = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let started = std::fs::read_dir(&dir).is_ok_and(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".drctl-restore-")
                })
            });
            if started {
                use std::io::Write;
                let mut f = std::fs::File::create(dir.join("burst")).unwrap();
                let chunk = vec![1u8; 1 << 20];
                while f.write_all(&chunk).is_ok() {}
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    });
    // An existing empty target: the dump is fetched whole into the scratch
    // directory before it is touched (into a new database from a local
    // repository, loaders read the repository itself and the scratch
    // directory holds only the table of contents).
    let target = pg.create_db("scratchfull_dst");
    // drctl waits 2 s after creating its temporary dump: the filler's window.
    let r = Run::from(
        w.command(&[
            "restore",
            "--latest",
            "--to",
            &pg.url(&target),
            "--jobs",
            "2",
            "--tmp-dir",
            fs.path.to_str().unwrap(),
        ])
        .env("DRCTL_FAULT_PAUSE", "restore.fetch.file:2000")
        .output()
        .unwrap(),
    );
    assert!(
        filler.join().unwrap(),
        "the restore never created its temporary dump"
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("No space left"), "{}", r.stderr);
    assert!(!r.stderr.contains("integrity"), "{}", r.stderr);
    assert_eq!(
        pg.psql(
            &target,
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ),
        "0",
        "nothing restored"
    );
    let left = restore_leftovers(&fs.path);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_scratch_directory_of_any_size_restores_or_refuses_before_touching_the_target() {
    let pg = pg();
    let src = pg.create_db("scratchsweep");
    pg.seed(&src, &unique("scratchsweep_owner"), 50);
    let want = pg.fingerprint(&src);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let raw = dump_raw_bytes(&w.repo_dir(), &id);
    // What a temporary dump needs (the dump, 5 %, 64 MiB of headroom), in
    // pages: sizes from "nothing fits" through "one page short" to "fits".
    let needed = (raw + raw / 20 + (64 << 20)).div_ceil(4096);
    let fs = Tmpfs::mount((needed + 64) * 4096);
    for free in [0, 1, needed / 2, needed - 1, needed + 1] {
        for jobs in ["1", "2"] {
            let _ = std::fs::remove_file(fs.path.join("filler"));
            fs.fill_leaving(free * 4096);
            let target = unique("scratchsweep_dst");
            let r = w.drctl(&[
                "restore",
                "--id",
                &id,
                "--to",
                &pg.url(&target),
                "--jobs",
                jobs,
                "--tmp-dir",
                fs.path.to_str().unwrap(),
            ]);
            let what = format!("free {free} pages, --jobs {jobs}: {}", r.all());
            if free > needed || jobs == "1" {
                // Room for the file, or streamed (verified first, then read
                // again and checked while restoring).
                assert_eq!(r.code, 0, "{what}");
                assert_eq!(pg.fingerprint(&target), want, "{what}");
            } else {
                assert_eq!(r.code, 1, "{what}");
                assert!(r.stderr.contains("bytes free"), "{what}");
                assert!(!pg.db_exists(&target), "{what}");
            }
            let left = restore_leftovers(&fs.path);
            assert!(left.is_empty(), "{what}: {left:?}");
        }
    }
}

#[tokio::test]
async fn a_multipart_upload_completed_without_a_part_is_never_committed() {
    if s3().root.is_none() {
        return; // an external endpoint loses no parts on request
    }
    let client = s3().client().await;
    let bucket = unique(LOSSY_BUCKET).replace('_', "-");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    // 12 MiB that zstd cannot shrink: three parts, of which the store drops
    // the last at completion and answers 200.
    let src = scratch_dir("drctl-parts-src-");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..12 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(src.join("small.conf"), "x=1\n").unwrap();
    let w = World::new(&format!(
        "[repositories.vault]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath_style = true\npart_size = \"5MiB\"\n[jobs.hist]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"vault\"\nretention = {{ keep_last = 1 }}\n",
        s3().endpoint,
        src.display()
    ));
    // One part only: nothing to lose.
    let good = w.drctl(&["run", "hist"]).ok().stdout.trim().to_owned();

    std::fs::write(src.join("blob.bin"), &noise).unwrap();
    let r = w.drctl(&["run", "hist"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("files.tar.zst") && r.stderr.contains("the store reports"),
        "{}",
        r.stderr
    );
    // Nothing listed but the good backup, which retention kept and which
    // still reads to its end; no manifest names the short object.
    let listed = w.drctl(&["backups", "hist", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed.ok().stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], good.as_str());
    w.drctl(&["verify", "--deep"]).ok();
    let objects = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let manifests: Vec<_> = objects
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| k.ends_with("manifest.json"))
        .collect();
    assert_eq!(manifests, vec![format!("hist/{good}/manifest.json")]);
}

/// An undo takes back the last restore that completed, never an earlier
/// one: after a restore that was rolled back (killed while the database
/// was closed) it is refused and touches nothing, unless `--copy` names a
/// copy; its plan names the restore it undoes, when it completed and the
/// writes since (from pg_stat_database).
#[test]
fn undo_after_a_rolled_back_restore_is_refused_and_the_plan_counts_the_writes_since() {
    let pg = pg();
    let db = pg.create_db("undoroll");
    pg.seed(&db, &unique("undoroll_owner"), 50);
    let mut w = local_world("");
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    let backup = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    pg.psql(&db, "DELETE FROM billing.payment");
    w.drctl(&["restore", "--latest", "--job", "appdb", "--yes"])
        .ok();
    // The application writes after the restore: 7 rows in 2 transactions.
    pg.psql(&db, "CREATE TABLE since_restore (x int)");
    pg.psql(
        &db,
        "INSERT INTO since_restore SELECT generate_series(1, 7)",
    );
    std::thread::sleep(Duration::from_millis(1200)); // statistics flushed
    let r = w.drctl(&["restore", "--undo", "--job", "appdb", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    let undoes = &plan["undoes"];
    assert_eq!(
        undoes["what"],
        format!("restore of backup {backup}").as_str(),
        "{plan}"
    );
    assert_eq!(undoes["copy"], plan["backup_id"], "{plan}");
    let since = &undoes["writes_since"];
    assert!(since["inserted"].as_i64().unwrap() >= 7, "{plan}");
    assert!(since["transactions"].as_i64().unwrap() >= 2, "{plan}");
    let r = w.drctl(&["restore", "--undo", "--job", "appdb", "--dry-run"]);
    assert!(r.ok().stderr.contains("row(s) inserted"), "{}", r.stderr);
    let copy = plan["backup_id"].as_str().unwrap().to_owned();

    // A second restore, killed while the database is closed, is rolled back.
    std::thread::sleep(Duration::from_millis(1100)); // a new name stamp
    kill_at(
        &w,
        "restore.swap.closed",
        &["restore", "--latest", "--job", "appdb", "--yes"],
    );
    w.drctl(&["status"]).ok();
    let live = pg.fingerprint(&db);
    let r = w.drctl(&["restore", "--undo", "--job", "appdb", "--yes"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert!(r.stderr.contains("--copy"), "{}", r.stderr);
    assert_eq!(pg.fingerprint(&db), live, "a refused undo touches nothing");
    // Named, it goes through: the operator chose to lose the writes since.
    w.drctl(&[
        "restore", "--undo", "--job", "appdb", "--yes", "--copy", &copy,
    ])
    .ok();
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM billing.payment"),
        "0",
        "the copy from before the first restore is live"
    );
}
