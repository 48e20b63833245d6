//! Encryption at rest (age), with the real binary, a real PostgreSQL
//! cluster and the `age` CLI as the independent decryptor.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

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
        "--parallel",
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
