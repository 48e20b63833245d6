//! "Formats stay standard": a backup made by drctl is recovered with only
//! `aws s3 cp`, `sha256sum`, `zstd`, `psql` and `pg_restore`, following the
//! README's steps.

mod common;

use common::*;
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_backup_is_recovered_with_standard_tools_only() {
    let pg = pg();
    let src = pg.create_db("manual_src");
    let owner = unique("manual_owner");
    pg.seed(&src, &owner, 300);
    let before = pg.fingerprint(&src);
    let bucket = s3().create_bucket().await;
    let mut w = World::new(&format!(
        "[repositories.offsite]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"db1\"\nendpoint = \"{}\"\npath_style = true\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"offsite\"\n",
        s3().endpoint
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&src));
    let id = w.drctl(&["run", "appdb"]).ok().stdout.trim().to_owned();
    pg.psql("postgres", &format!("DROP DATABASE {src}"));
    pg.psql("postgres", &format!("DROP ROLE {owner}"));

    let aws = |args: &[&str]| {
        let mut c = Command::new("aws");
        c.args(["--endpoint-url", &s3().endpoint, "--region", "us-east-1"])
            .args(args);
        for (k, v) in &w.env {
            c.env(k, v);
        }
        c
    };
    // 1. The newest backup is the greatest id with a manifest.
    let listing = sh(&mut aws(&[
        "s3",
        "ls",
        &format!("s3://{bucket}/db1/appdb/"),
        "--recursive",
    ]));
    let newest = listing
        .lines()
        .filter(|l| l.ends_with("manifest.json"))
        .map(|l| l.split('/').nth(2).unwrap().to_owned())
        .max()
        .unwrap();
    assert_eq!(newest, id);

    // 2. Fetch.
    let dir = w.dir.join("manual");
    sh(&mut aws(&[
        "s3",
        "cp",
        &format!("s3://{bucket}/db1/appdb/{id}/"),
        dir.to_str().unwrap(),
        "--recursive",
    ]));

    // 3. Check against the manifest.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    for a in manifest["artifacts"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let sum = sh(Command::new("sha256sum").arg(dir.join(name)));
        assert_eq!(
            sum.split_whitespace().next().unwrap(),
            a["sha256"].as_str().unwrap(),
            "{name}"
        );
    }

    // 4. Roles, then data.
    let globals = sh(Command::new("zstd")
        .arg("-dc")
        .arg(dir.join("globals.sql.zst")));
    let mut psql = Command::new(pg_bin("psql"))
        .args(["-X", "-q", "-d", &pg.url("postgres")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    psql.stdin
        .take()
        .unwrap()
        .write_all(globals.as_bytes())
        .unwrap();
    assert!(psql.wait().unwrap().success());
    sh(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(dir.join("database.dump.zst"))
        .arg("-o")
        .arg(dir.join("database.dump")));
    let target = unique("manual_dst");
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE {target} TEMPLATE template0"),
    );
    sh(Command::new(pg_bin("pg_restore"))
        .args(["--jobs", "2", "--dbname", &pg.url(&target)])
        .arg(dir.join("database.dump")));
    assert_eq!(pg.fingerprint(&target), before);
}
