//! Trustworthy backups: encryption at rest (age), with the real binary, a
//! real PostgreSQL cluster and the `age` CLI as the independent decryptor.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A fresh age key pair: (identity file path, recipient).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join(format!("{name}.key"));
    std::fs::write(
        &path,
        format!(
            "# created: by the test\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    (path, id.to_public().to_string())
}

/// A local repository and one files job `job` (extra keys `extra`) over a
/// scratch directory holding `a.conf`; returns the world and the directory.
fn files_world(job: &str, extra: &str) -> (World, PathBuf) {
    let src = scratch_dir("drctl-files-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.{job}]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n{extra}",
        src.display()
    ));
    (w, src)
}

fn manifest(w: &World, job: &str, id: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(w.repo_dir().join(job).join(id).join("manifest.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn an_encrypted_backup_restores_with_the_right_key_names_a_wrong_one_and_opens_with_the_age_cli() {
    let pg = pg();
    let src = pg.create_db("enc_src");
    let owner = unique("enc_owner");
    pg.seed(&src, &owner, 300);
    let before = pg.fingerprint(&src);
    let keys = scratch_dir("drctl-keys-");
    let (office_key, office) = keypair(&keys, "office");
    let (vault_key, vault) = keypair(&keys, "vault");
    let (stranger_key, _) = keypair(&keys, "stranger");

    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\nencryption = {{ recipients = [\"{office}\", \"{vault}\"] }}\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n"
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let r = w.drctl(&["run", "appdb"]);
    r.ok();
    let id = r.stdout.trim().to_owned();

    let m = manifest(&w, "appdb", &id);
    let dir = w.repo_dir().join("appdb").join(&id);
    let mut fps = Vec::new();
    for a in m["artifacts"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        assert!(name.ends_with(".zst.age"), "{name}");
        let recips: Vec<String> = a["encryption_recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(recips.len(), 2);
        fps = recips;
        let stored = std::fs::read(dir.join(name)).unwrap();
        assert!(
            stored.starts_with(b"age-encryption.org/v1\n"),
            "{name} is an age file"
        );
        // No plaintext: the seeded rows do not appear in the stored bytes.
        assert!(!String::from_utf8_lossy(&stored).contains("billing"));
    }
    for fp in &fps {
        assert!(fp.starts_with("age1:") && fp.len() == 21, "{fp}");
    }

    // No key: a clear error naming what is expected, nothing created.
    let target = unique("enc_dst");
    let r = w.drctl(&["restore", "--latest", "--to", &pg.url(&target)]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--identity") && r.stderr.contains(&fps[0]),
        "{}",
        r.stderr
    );
    assert!(!pg.db_exists(&target));

    // A wrong key: named, with the fingerprints it has and the ones expected.
    let r = w.drctl(&[
        "restore",
        "--latest",
        "--to",
        &pg.url(&target),
        "--identity",
        stranger_key.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("not one of them"), "{}", r.stderr);
    assert!(
        r.stderr.contains(stranger_key.to_str().unwrap()),
        "{}",
        r.stderr
    );
    assert!(!pg.db_exists(&target));

    // The right key (either recipient), by flag or by environment.
    w.drctl(&[
        "restore",
        "--latest",
        "--to",
        &pg.url(&target),
        "--jobs",
        "2",
        "--identity",
        vault_key.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(pg.fingerprint(&target), before);
    let target2 = unique("enc_dst");
    w.set_env("DRCTL_AGE_IDENTITY_FILE", office_key.to_str().unwrap());
    w.drctl(&["restore", "--latest", "--to", &pg.url(&target2)])
        .ok();
    assert_eq!(pg.fingerprint(&target2), before);

    // Shallow verification needs no key; deep needs one, and says so.
    w.set_env("DRCTL_AGE_IDENTITY_FILE", "");
    w.drctl(&["verify"]).ok();
    let r = w.drctl(&["verify", "--deep"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--identity"), "{}", r.stderr);
    let r = w.drctl(&[
        "verify",
        "--deep",
        "--identity",
        vault_key.to_str().unwrap(),
    ]);
    r.ok();
    assert!(
        r.stdout.contains("pg_restore read every data block"),
        "{}",
        r.stdout
    );

    // Without drctl: age -d | zstd -d | pg_restore --list.
    let plain = scratch_dir("drctl-plain-").join("database.dump");
    let sh = format!(
        "age -d -i {} {} | zstd -d -q -o {}",
        office_key.display(),
        dir.join("database.dump.zst.age").display(),
        plain.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &sh])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = std::process::Command::new(pg_bin("pg_restore"))
        .arg("--list")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE DATA billing payment"));
}

#[test]
fn encryption_config_errors_name_the_key() {
    let w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\nencryption = { recipients = [\"age1notakey\"] }\n[jobs.a]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"local\"\n",
    );
    let r = w.drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("repositories.local.encryption.recipients")
            && r.stderr.contains("age1notakey")
            && r.stderr.contains("expected age1..."),
        "{}",
        r.stderr
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify_json(w: &World, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let r = w.drctl(&all);
    let v = serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null);
    (r.code, v, r.stderr)
}

#[test]
fn verify_catches_a_flipped_byte_a_truncated_object_and_an_undecodable_archive() {
    let pg = pg();
    let src = pg.create_db("ver_src");
    pg.seed(&src, &unique("ver_owner"), 200);
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n[jobs.check]\ntype = \"verify\"\njobs = [\"appdb\"]\nscope = \"all\"\ndeep = true\n",
    );
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let old = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    let new = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();

    let (code, v, _) = verify_json(&w, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        v["backups"].as_array().unwrap().len(),
        1,
        "latest only by default"
    );
    assert_eq!(v["backups"][0]["backup_id"], new.as_str());
    let (code, v, _) = verify_json(&w, &["--all", "--deep"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    let dump = v["backups"][0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "database.dump.zst")
        .unwrap()
        .clone();
    assert!(
        dump["detail"]
            .as_str()
            .unwrap()
            .contains("pg_restore read every data block"),
        "{dump}"
    );
    let r = w.drctl(&["run", "check"]);
    r.ok();
    assert!(r.stdout.contains("ok   appdb/"), "{}", r.stdout);

    // A flipped byte in the older backup: --all fails (exit 3), latest passes.
    let dir = |id: &str| w.repo_dir().join("appdb").join(id);
    let p = dir(&old).join("database.dump.zst");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    let (code, v, stderr) = verify_json(&w, &["--all"]);
    assert_eq!(code, 3, "{stderr}");
    let bad: Vec<&serde_json::Value> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["backup_id"], old.as_str());
    let detail = bad[0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ok"] == false)
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("SHA-256"), "{detail}");
    assert!(stderr.contains(&old), "{stderr}");
    assert_eq!(verify_json(&w, &[]).0, 0, "the newest backup is intact");

    // The verify job fails the same way; the damage is one alert, not a job failure.
    let r = w.drctl(&["run", "check"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let alerts: serde_json::Value =
        serde_json::from_str(&w.drctl(&["alerts", "--json"]).ok().stdout).unwrap();
    let keys: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["backup_damaged:appdb:all"], "{alerts}");

    // A truncated object in the newest backup.
    let g = dir(&new).join("globals.sql.zst");
    let bytes = std::fs::read(&g).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() - 7]).unwrap();
    let (code, v, _) = verify_json(&w, &[]);
    assert_eq!(code, 3);
    let detail = v["backups"][0]["artifacts"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("size is"), "{detail}");

    // Garbage whose checksum was recorded (a bug upstream): only --deep sees it.
    let d = dir(&new).join("database.dump.zst");
    let garbage = zstd_frame_of(b"this is not a pg_dump archive at all\n");
    std::fs::write(&d, &garbage).unwrap();
    std::fs::write(&g, &bytes).unwrap();
    let mpath = dir(&new).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for a in m["artifacts"].as_array_mut().unwrap() {
        if a["name"] == "database.dump.zst" {
            a["sha256"] = sha256_hex(&garbage).into();
            a["stored_bytes"] = garbage.len().into();
            a["raw_bytes"] = 37.into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert_eq!(
        verify_json(&w, &[]).0,
        0,
        "shallow: size and checksum match"
    );
    let (code, v, _) = verify_json(&w, &["--deep"]);
    assert_eq!(code, 3, "{v}");
    let detail = v["backups"][0]["artifacts"][1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("pg_restore cannot read the archive"),
        "{detail}"
    );
}

/// A zstd frame holding `data`, made with the zstd CLI.
fn zstd_frame_of(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("zstd")
        .args(["-q", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn deep_verification_walks_a_files_backup_entry_by_entry() {
    let (w, src) = files_world("configs", "compression = \"gzip\"\n");
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}.conf")), format!("value={i}\n")).unwrap();
    }
    w.drctl(&["run", "configs"]).ok();
    let (code, v, stderr) = verify_json(&w, &["--deep", "--job", "configs"]);
    assert_eq!(code, 0, "{stderr}");
    let detail = v["backups"][0]["artifacts"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("6 tar entries"), "{detail}");
    let r = w.drctl(&["verify", "--job", "nope"]);
    assert_eq!(r.code, 2, "{}", r.all());
    // An artifact that vanished from a listed backup is damage (exit 3).
    let id = v["backups"][0]["backup_id"].as_str().unwrap().to_owned();
    let name = v["backups"][0]["artifacts"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(w.repo_dir().join("configs").join(&id).join(&name)).unwrap();
    let (code, v, _) = verify_json(&w, &["--job", "configs"]);
    assert_eq!(code, 3, "{v}");
    assert!(
        v["backups"][0]["artifacts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("missing from the repository"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rpo_of_two_seconds_goes_violated_then_compliant_with_exact_transitions_metrics_and_one_alert(
) {
    use common::receivers::HttpReceiver;
    let hook = HttpReceiver::start();
    let src = scratch_dir("drctl-rpo-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.nightly]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\nrpo = \"2s\"\n[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\ncritical = [\"hook\"]\n",
        free_port(),
        src.display(),
        hook.url("/rpo")
    ));
    let first = w.drctl(&["run", "nightly"]).ok().stdout.trim().to_owned();
    let mut d = Daemon::start(&w);
    wait_until(
        std::time::Duration::from_secs(20),
        "the violation alert",
        || !hook.requests("/rpo").is_empty(),
    );
    let (code, metrics) = http_get(http_port(&w), "/metrics");
    assert_eq!(code, 200);
    let line = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{job=\"nightly\"}}")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(line("drctl_rpo_target_seconds"), 2.0);
    assert_eq!(line("drctl_rpo_compliant"), 0.0);
    assert!(line("drctl_rpo_age_seconds") >= 2.0);

    let second = w.drctl(&["run", "nightly"]).ok().stdout.trim().to_owned();
    wait_until(std::time::Duration::from_secs(20), "the resolve", || {
        hook.requests("/rpo").len() >= 2
    });
    let r = w.drctl(&["rpo", "--json", "--since", "1h"]);
    r.ok();
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["job"], "nightly");
    assert_eq!(rows[0]["compliant"], true, "{rows}");
    assert_eq!(rows[0]["newest_backup"], second.as_str());
    assert_eq!(rows[0]["window"]["violations"], 1);
    let share = rows[0]["window"]["compliance"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{share}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(std::time::Duration::from_secs(30)), Some(0));

    // The transitions are the exact times, computed from the manifests on
    // the store's clock: restorable when the manifest landed (its mtime in
    // a local repository), taken the run's duration before that.
    let m1 = manifest(&w, "nightly", &first);
    let t = |v: &serde_json::Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let landed = |id: &str| -> chrono::DateTime<chrono::Utc> {
        std::fs::metadata(w.repo_dir().join("nightly").join(id).join("manifest.json"))
            .unwrap()
            .modified()
            .unwrap()
            .into()
    };
    let took = |m: &serde_json::Value| t(&m["finished_at"]) - t(&m["started_at"]);
    let state = w.state().await;
    let tr = drctl::rpo::transitions(&state, "nightly").await.unwrap();
    assert_eq!(tr.len(), 3, "{tr:?}");
    assert!(tr[0].compliant);
    assert!(!tr[1].compliant);
    let violated_at = landed(&first) - took(&m1) + chrono::Duration::seconds(2);
    assert_eq!(tr[1].at.timestamp_millis(), violated_at.timestamp_millis());
    assert!(tr[2].compliant);
    assert_eq!(
        tr[2].at.timestamp_millis(),
        landed(&second).timestamp_millis()
    );

    // One alert, one resolve.
    let posts: Vec<serde_json::Value> = hook.requests("/rpo").iter().map(|r| r.json()).collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0]["event"], "firing");
    assert_eq!(posts[0]["key"], "rpo_violated:nightly");
    assert!(
        posts[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the target is 2s"),
        "{}",
        posts[0]
    );
    assert_eq!(posts[1]["event"], "resolved");

    // Without the daemon, `drctl rpo` still answers from the repository.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = w.drctl(&["rpo", "--json"]);
    r.ok();
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["compliant"], false, "{rows}");
    assert!(rows[0]["age_seconds"].as_f64().unwrap() >= 2.0);
    let table = w.drctl(&["rpo"]);
    table.ok();
    assert!(table.stdout.contains("VIOLATED"), "{}", table.stdout);
}

/// Clone a real backup of `job` into `n` synthetic ones at the given times
/// (manifest and data, ids from the times), in a local repository.
fn synthesize(
    w: &World,
    job: &str,
    real_id: &str,
    times: &[chrono::DateTime<chrono::Utc>],
) -> Vec<String> {
    let base = w.repo_dir().join(job);
    let m = manifest(w, job, real_id);
    let mut ids = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let id = format!("{}-synth-{:08x}", t.format("%Y%m%dT%H%M%S%.3fZ"), i);
        let dir = base.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let mut mm = m.clone();
        mm["id"] = id.clone().into();
        mm["started_at"] = t.to_rfc3339().into();
        mm["finished_at"] = (*t + chrono::Duration::seconds(30)).to_rfc3339().into();
        for a in m["artifacts"].as_array().unwrap() {
            let name = a["name"].as_str().unwrap();
            std::fs::copy(base.join(real_id).join(name), dir.join(name)).unwrap();
        }
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(&mm).unwrap(),
        )
        .unwrap();
        ids.push(id);
    }
    ids
}

/// GFS computed the other way round: group by a formatted period, take the
/// newest of each group, keep the N most recent groups.
fn expected_gfs(
    all: &[(String, chrono::DateTime<chrono::Utc>)],
    tz: chrono_tz::Tz,
) -> std::collections::BTreeSet<String> {
    let mut keep = std::collections::BTreeSet::new();
    let mut by_time = all.to_vec();
    by_time.sort_by_key(|b| std::cmp::Reverse(b.1));
    for (id, _) in by_time.iter().take(3) {
        keep.insert(id.clone());
    }
    for (fmt, n) in [
        ("%Y-%m-%d %H", 24),
        ("%Y-%m-%d", 7),
        ("%G-W%V", 4),
        ("%Y-%m", 12),
        ("%Y", 2),
    ] {
        let mut groups: std::collections::BTreeMap<
            String,
            (chrono::DateTime<chrono::Utc>, String),
        > = Default::default();
        for (id, t) in all {
            let k = t.with_timezone(&tz).format(fmt).to_string();
            let e = groups.entry(k).or_insert((*t, id.clone()));
            if *t > e.0 {
                *e = (*t, id.clone());
            }
        }
        let mut reps: Vec<(chrono::DateTime<chrono::Utc>, String)> = groups.into_values().collect();
        reps.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, id) in reps.into_iter().take(n) {
            keep.insert(id);
        }
    }
    keep.insert(by_time[0].0.clone());
    keep
}

fn committed_dirs(w: &World, job: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(w.repo_dir().join(job))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn retention_on_400_backups_keeps_exactly_the_gfs_set_in_the_jobs_time_zone() {
    let (w, _src) = files_world(
        "hist",
        "timezone = \"Europe/Berlin\"\nretention = { keep_last = 3, hourly = 24, daily = 7, weekly = 4, monthly = 12, yearly = 2 }\n",
    );
    let real = w.drctl(&["run", "hist"]).ok().stdout.trim().to_owned();
    // 399 backups over ~2 years, with irregular gaps (10 min to ~3 days):
    // several per hour, missed days, DST changes in Berlin.
    let mut t = chrono::Utc::now() - chrono::Duration::days(760);
    let mut times = Vec::new();
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for _ in 0..399 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let gap_min = 10 + (x % 4300) as i64 * (if x % 5 == 0 { 1 } else { 0 }) + (x % 40) as i64;
        t += chrono::Duration::minutes(gap_min.max(10));
        times.push(t);
    }
    // The last stretch is dense (hourly rules matter), all before the real backup.
    let last = *times.last().unwrap();
    let shift = (chrono::Utc::now() - chrono::Duration::minutes(5)) - last;
    let times: Vec<_> = times
        .into_iter()
        .map(|t| t + shift.min(chrono::Duration::days(400)))
        .collect();
    let synth = synthesize(&w, "hist", &real, &times);
    let mut all: Vec<(String, chrono::DateTime<chrono::Utc>)> = synth
        .iter()
        .map(|id| {
            let ts = chrono::NaiveDateTime::parse_from_str(&id[..20], "%Y%m%dT%H%M%S%.3fZ")
                .unwrap()
                .and_utc();
            (id.clone(), ts)
        })
        .collect();
    let real_ts = chrono::NaiveDateTime::parse_from_str(&real[..20], "%Y%m%dT%H%M%S%.3fZ")
        .unwrap()
        .and_utc();
    all.push((real.clone(), real_ts));
    assert_eq!(all.len(), 400);
    let expected = expected_gfs(&all, chrono_tz::Europe::Berlin);
    assert!(expected.contains(&real));
    assert!(
        expected.len() > 20 && expected.len() < 80,
        "{}",
        expected.len()
    );

    let r = w.drctl(&["prune", "--job", "hist", "--dry-run", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept: std::collections::BTreeSet<String> = v[0]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, expected);
    assert_eq!(
        v[0]["deleted"].as_array().unwrap().len(),
        400 - expected.len()
    );
    assert_eq!(
        committed_dirs(&w, "hist").len(),
        400,
        "dry run deletes nothing"
    );

    w.drctl(&["prune", "--job", "hist"]).ok();
    assert_eq!(committed_dirs(&w, "hist"), expected);
    let dirs = std::fs::read_dir(w.repo_dir().join("hist"))
        .unwrap()
        .count();
    assert_eq!(dirs, expected.len(), "deleted backups leave no directories");
    // A second prune changes nothing; the newest restores.
    let r = w.drctl(&["prune", "--job", "hist", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v[0]["deleted"].as_array().unwrap().is_empty());
    let out = scratch_dir("drctl-ret-out-");
    w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "hist",
        "--to",
        out.to_str().unwrap(),
        "--yes",
    ])
    .ok();
}

#[tokio::test]
async fn an_interrupted_prune_leaves_nothing_listed_that_cannot_restore_and_orphans_are_swept_later(
) {
    // S3 through a proxy that cuts every DELETE of a data object: the
    // manifest goes, the data delete fails (as a flaky store would).
    let bucket = s3().create_bucket().await;
    let target = s3().endpoint.trim_start_matches("http://").to_owned();
    let port = proxy(target, |chunk| {
        let text = String::from_utf8_lossy(chunk);
        !text.starts_with("DELETE ") || text.lines().next().unwrap_or("").contains("manifest.json")
    });
    let src = scratch_dir("drctl-prn-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let repo = |endpoint: &str| {
        format!(
            "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\npath_style = true\n[jobs.hist]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"offsite\"\n",
            src.display()
        )
    };
    let direct = World::new(&repo(&s3().endpoint));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(direct.drctl(&["run", "hist"]).ok().stdout.trim().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let flaky = World::new(&format!(
        "{}retention = {{ keep_last = 1 }}\n",
        repo(&format!("http://127.0.0.1:{port}"))
    ));
    let mut flaky = flaky;
    flaky.env = direct.env.clone();
    let r = flaky.drctl(&["prune", "--job", "hist"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("left as an orphan"), "{}", r.stdout);

    // Only the newest is listed, and everything listed verifies and restores.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&direct.drctl(&["backups", "hist", "--json"]).ok().stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], ids[2].as_str());
    direct.drctl(&["verify", "--all", "--deep"]).ok();
    // The data of the two pruned backups is still there, without manifests.
    let client = s3().client().await;
    let keys: Vec<String> = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    for id in &ids[..2] {
        assert!(keys.iter().any(|k| k.contains(id.as_str())), "{keys:?}");
        assert!(!keys
            .iter()
            .any(|k| k.contains(id.as_str()) && k.ends_with("manifest.json")));
    }
    // A day later (here: --orphan-age 0s) a prune with a working store sweeps them.
    let r = direct.drctl(&["prune", "--job", "hist", "--orphan-age", "0s", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["orphans"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v[0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("ListMultipartUploads"),
        "{v}"
    );
    let left = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(left
        .contents()
        .iter()
        .all(|o| o.key().unwrap_or("").contains(ids[2].as_str())));
}

#[test]
fn prune_leaves_a_leased_backup_alone_until_the_lease_expires_and_restores_release_theirs() {
    let (w, _src) = files_world("hist", "");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.drctl(&["run", "hist"]).ok().stdout.trim().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // A restore takes a lease and gives it back.
    let out = scratch_dir("drctl-lease-out-");
    w.drctl(&[
        "restore",
        "--id",
        &ids[0],
        "--job",
        "hist",
        "--to",
        out.to_str().unwrap(),
        "--yes",
    ])
    .ok();
    assert!(!w
        .repo_dir()
        .join("hist")
        .join(&ids[0])
        .join("leases")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    // A restore on another host holds the oldest backup right now.
    let leases = w.repo_dir().join("hist").join(&ids[0]).join("leases");
    std::fs::create_dir_all(&leases).unwrap();
    let lease = leases.join("otherhost-4242-0000beef.json");
    std::fs::write(&lease, "{\"purpose\":\"restore\"}").unwrap();
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str("retention = { keep_last = 1 }\n");
    std::fs::write(&w.config, text).unwrap();
    let r = w.drctl(&["prune", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["deleted"], serde_json::json!([ids[1]]));
    assert_eq!(v[0]["skipped"][0]["id"], ids[0].as_str());
    assert!(
        v[0]["skipped"][0]["why"]
            .as_str()
            .unwrap()
            .contains("lease"),
        "{v}"
    );
    // A lease a day old belongs to a dead process: it stops protecting.
    let st = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&lease)
        .status()
        .unwrap();
    assert!(st.success());
    let r = w.drctl(&["prune", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["deleted"], serde_json::json!([ids[0]]));
    assert_eq!(
        committed_dirs(&w, "hist").into_iter().collect::<Vec<_>>(),
        vec![ids[2].clone()]
    );
    assert!(!w.repo_dir().join("hist").join(&ids[0]).exists());
}

#[tokio::test]
async fn s3_storage_class_encryption_and_object_lock_are_applied_and_prune_respects_the_lock() {
    let moto = Moto::start();
    let client = moto.client().await;
    let bucket = unique("locked").replace('_', "-");
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let src = scratch_dir("drctl-lock-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let w = World::new(&format!(
        "[repositories.vault]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"db1\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath_style = true\nstorage_class = \"STANDARD_IA\"\nsse = \"AES256\"\nobject_lock = {{ mode = \"governance\", days = 1 }}\n[jobs.hist]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"vault\"\nretention = {{ keep_last = 1 }}\n",
        moto.endpoint,
        src.display()
    ));
    let first = w.drctl(&["run", "hist"]).ok().stdout.trim().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = w.drctl(&["run", "hist"]).ok().stdout.trim().to_owned();

    for key in [
        format!("db1/hist/{first}/manifest.json"),
        format!("db1/hist/{first}/files.tar.zst"),
    ] {
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.storage_class().map(|c| c.as_str()),
            Some("STANDARD_IA"),
            "{key}"
        );
        assert_eq!(
            head.server_side_encryption().map(|e| e.as_str()),
            Some("AES256"),
            "{key}"
        );
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = head.object_lock_retain_until_date().unwrap().secs();
        let in_a_day = chrono::Utc::now().timestamp() + 86_400;
        assert!(
            (until - in_a_day).abs() < 120,
            "{key}: retain until {until}"
        );
    }

    // keep_last = 1, but the older backup is still locked: kept, and said why.
    let r = w.drctl(&["prune", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v[0]["deleted"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v[0]["skipped"][0]["id"], first.as_str());
    assert!(
        v[0]["skipped"][0]["why"]
            .as_str()
            .unwrap()
            .contains("object lock"),
        "{v}"
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&w.drctl(&["backups", "hist", "--json"]).ok().stdout).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["id"], second.as_str());

    // And the store itself refuses to destroy a locked version (ransomware with our keys).
    let versions = client
        .list_object_versions()
        .bucket(&bucket)
        .prefix(format!("db1/hist/{first}/manifest.json"))
        .send()
        .await
        .unwrap();
    let vid = versions.versions()[0].version_id().unwrap().to_owned();
    let del = client
        .delete_object()
        .bucket(&bucket)
        .key(format!("db1/hist/{first}/manifest.json"))
        .version_id(vid)
        .send()
        .await;
    assert!(del.is_err(), "a locked version must not be deletable");

    // A multipart upload a killed run left incomplete is aborted by the sweep.
    let stale = format!(
        "db1/hist/{}-deadhost-00000001/database.dump.zst",
        "20260101T000000Z"
    );
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&stale)
        .send()
        .await
        .unwrap();
    let r = w.drctl(&["prune", "--orphan-age", "0s", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v[0]["uploads_aborted"],
        serde_json::json!([stale.trim_start_matches("db1/")]),
        "{v}"
    );
    let left = client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(left.uploads().is_empty());
}
