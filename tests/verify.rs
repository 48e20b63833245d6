//! Verification: a flipped byte, a truncated object, an undecodable
//! archive, and a deep walk of a files backup, each caught and named.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::*;

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
