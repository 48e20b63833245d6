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
    assert!(r.stdout.contains("pg_restore --list reads"), "{}", r.stdout);

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
            .contains("pg_restore --list reads"),
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
    assert!(detail.contains("pg_restore --list rejects"), "{detail}");
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
    let src = scratch_dir("drctl-ver-files-");
    for i in 0..5 {
        std::fs::write(src.join(format!("f{i}.conf")), format!("value={i}\n")).unwrap();
    }
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.configs]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\ncompression = \"gzip\"\n",
        src.display()
    ));
    w.drctl(&["run", "configs"]).ok();
    let (code, v, stderr) = verify_json(&w, &["--deep", "--job", "configs"]);
    assert_eq!(code, 0, "{stderr}");
    let detail = v["backups"][0]["artifacts"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("6 tar entries"), "{detail}");
    let r = w.drctl(&["verify", "--job", "nope"]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rpo_of_two_seconds_goes_violated_then_compliant_with_exact_transitions_metrics_and_one_alert() {
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
    wait_until(std::time::Duration::from_secs(20), "the violation alert", || {
        !hook.requests("/rpo").is_empty()
    });
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

    // The transitions are the exact times, computed from the manifests.
    let m1 = manifest(&w, "nightly", &first);
    let m2 = manifest(&w, "nightly", &second);
    let t = |v: &serde_json::Value| v.as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let state = w.state().await;
    let tr = drctl::rpo::transitions(&state, "nightly").await.unwrap();
    assert_eq!(tr.len(), 3, "{tr:?}");
    assert!(tr[0].compliant);
    assert!(!tr[1].compliant);
    let violated_at = t(&m1["started_at"]) + chrono::Duration::seconds(2);
    assert_eq!(tr[1].at.timestamp_millis(), violated_at.timestamp_millis());
    assert!(tr[2].compliant);
    assert_eq!(tr[2].at.timestamp_millis(), t(&m2["finished_at"]).timestamp_millis());

    // One alert, one resolve.
    let posts: Vec<serde_json::Value> = hook.requests("/rpo").iter().map(|r| r.json()).collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0]["event"], "firing");
    assert_eq!(posts[0]["key"], "rpo_violated:nightly");
    assert!(posts[0]["detail"].as_str().unwrap().contains("the target is 2s"), "{}", posts[0]);
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
