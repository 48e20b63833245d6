//! The README cannot drift from the code: its exit-code table is the one in
//! `error.rs`, and every TOML block it shows loads (`config check`) on top
//! of the first, complete example.

mod common;

use common::*;

fn readme() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .unwrap()
}

#[test]
fn the_readme_exit_code_table_is_the_one_drctl_uses() {
    let text = readme();
    let table = text
        .split("### Exit codes")
        .nth(1)
        .expect("an Exit codes section");
    let documented: Vec<u8> = table
        .lines()
        .skip_while(|l| !l.starts_with("| ---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let used: Vec<u8> = drctl::base::error::Exit::ALL
        .iter()
        .map(|e| e.code())
        .collect();
    assert_eq!(documented, used);
}

/// `fragment`'s tables merged into `base` (the fragment wins).
fn merge(base: &mut toml::Table, fragment: toml::Table) {
    for (k, v) in fragment {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(f)) => merge(b, f),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[test]
fn every_toml_block_of_the_readme_loads() {
    let text = readme();
    let blocks: Vec<&str> = text
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 5, "{} blocks", blocks.len());
    let dir = scratch_dir("drctl-readme-");
    for sub in ["schedules", "restore-drills"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // Paths of the example host, moved into a scratch directory.
    std::fs::write(dir.join("internal-ca.pem"), "").unwrap();
    let local = |b: &str| {
        b.replace("/etc/drctl/", &format!("{}/", dir.display()))
            .replace("/var/lib/drctl", &format!("{}/state", dir.display()))
            .replace(
                "/etc/ssl/internal-ca.pem",
                &format!("{}/internal-ca.pem", dir.display()),
            )
    };
    // Later blocks extend the first, complete example (and name channels
    // defined further down): every block is checked on top of all of them.
    let fragments: Vec<Result<toml::Table, String>> = blocks
        .iter()
        .map(|b| toml::from_str(&local(b)).map_err(|e| e.to_string()))
        .collect();
    let mut all = toml::Table::new();
    for f in fragments.iter().flatten() {
        merge(&mut all, f.clone());
    }
    // Every variable a `*_env` key names, set as the service's environment
    // would have it.
    fn env_refs(t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            match v {
                toml::Value::Table(t) => env_refs(t, out),
                toml::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_table())
                    .for_each(|t| env_refs(t, out)),
                toml::Value::String(s) if k.ends_with("_env") => out.push(s.clone()),
                _ => {}
            }
        }
    }
    let mut vars = Vec::new();
    env_refs(&all, &mut vars);
    assert!(vars.contains(&"APP_DATABASE_URL".to_owned()), "{vars:?}");
    let mut failed = Vec::new();
    for (i, (b, fragment)) in blocks.iter().zip(fragments).enumerate() {
        let fragment = match fragment {
            Ok(t) => t,
            Err(e) => {
                failed.push(format!("block {i}: not TOML: {e}"));
                continue;
            }
        };
        let mut cfg = all.clone();
        merge(&mut cfg, fragment);
        let file = dir.join(format!("block-{i}.toml"));
        std::fs::write(&file, toml::to_string(&cfg).unwrap()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
            .arg("-c")
            .arg(&file)
            .args(["config", "check"])
            .env_remove("DRCTL_CONFIG")
            .envs(
                vars.iter()
                    .map(|v| (v.as_str(), "postgres://app@127.0.0.1:5432/app")),
            )
            .output()
            .unwrap();
        if !out.status.success() {
            failed.push(format!(
                "block {i} ({}): {}",
                b.lines().next().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
