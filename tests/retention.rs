//! Retention and prune: GFS on 400 backups in the job's time zone, an
//! interrupted prune, leases, and S3 Object Lock.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::*;

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
        .filter_map(std::result::Result::ok)
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
        let gap_min =
            10 + (x % 4300) as i64 * (if x.is_multiple_of(5) { 1 } else { 0 }) + (x % 40) as i64;
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
            head.storage_class()
                .map(aws_sdk_s3::types::StorageClass::as_str),
            Some("STANDARD_IA"),
            "{key}"
        );
        assert_eq!(
            head.server_side_encryption()
                .map(aws_sdk_s3::types::ServerSideEncryption::as_str),
            Some("AES256"),
            "{key}"
        );
        assert_eq!(
            head.object_lock_mode()
                .map(aws_sdk_s3::types::ObjectLockMode::as_str),
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

#[test]
fn a_pinned_labelled_backup_survives_retention_until_its_time_and_restores_by_label() {
    let (w, src) = files_world("app", "retention = { keep_last = 1 }\n");
    let conf = src.join("a.conf");
    std::fs::write(&conf, "schema=v1\n").unwrap();
    let pinned = w
        .drctl(&[
            "run",
            "app",
            "--label",
            "pre-migration",
            "--keep-for",
            "30d",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let m = manifest(&w, "app", &pinned);
    assert_eq!(m["label"], "pre-migration", "{m}");
    let until = chrono::DateTime::parse_from_rfc3339(m["keep_until"].as_str().unwrap()).unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(m["started_at"].as_str().unwrap()).unwrap();
    assert_eq!((until - started).num_days(), 30);

    // The migration runs; nightly backups follow. keep_last = 1 prunes
    // after each one: every unpinned older backup goes, the pinned one stays.
    let mut last = String::new();
    for v in ["v2", "v3"] {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&conf, format!("schema={v}\n")).unwrap();
        last = w.drctl(&["run", "app"]).ok().stdout.trim().to_owned();
    }
    assert_eq!(
        committed_dirs(&w, "app"),
        [pinned.clone(), last.clone()].into_iter().collect(),
        "keep_last = 1 keeps the newest, and the pin keeps its backup"
    );
    let r = w
        .drctl(&["prune", "--job", "app", "--dry-run", "--json"])
        .ok()
        .stdout
        .clone();
    assert!(r.contains("pinned"), "{r}");

    // `backups` shows the label and the pin.
    let listed: serde_json::Value =
        serde_json::from_str(&w.drctl(&["backups", "app", "--json"]).ok().stdout).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == pinned.as_str())
        .unwrap();
    assert_eq!(row["label"], "pre-migration");
    assert!(row["keep_until"].is_string(), "{row}");
    let text = w.drctl(&["backups", "app"]).ok().stdout.clone();
    assert!(text.contains("label pre-migration, pinned until"), "{text}");

    // Rollback: restore by label gives the pre-migration files, not the newest.
    let out = scratch_dir("drctl-label-out-");
    let r = w.drctl(&[
        "restore",
        "--label",
        "pre-migration",
        "--job",
        "app",
        "--to",
        out.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let restored = out.join(conf.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(restored).unwrap(), "schema=v1\n");

    // Unknown labels are "not found" (5); malformed ones a usage error (2)
    // that makes no backup.
    let r = w.drctl(&[
        "restore", "--label", "no-such", "--job", "app", "--to", "/tmp/x", "--yes",
    ]);
    assert_eq!(r.code, 5, "{}", r.all());
    let before = committed_dirs(&w, "app");
    for (flag, value) in [
        ("--label", "two words"),
        ("--keep-for", "0s"),
        ("--keep-for", "200y"),
    ] {
        let r = w.drctl(&["run", "app", flag, value]);
        assert_eq!(r.code, 2, "{flag} {value}: {}", r.all());
        assert!(r.stderr.contains(flag), "{}", r.stderr);
    }
    assert_eq!(committed_dirs(&w, "app"), before);

    // Once the pin has run out, the backup is an ordinary one again: the
    // next backup's prune lets it go.
    let path = w.repo_dir().join("app").join(&pinned).join("manifest.json");
    let mut m = manifest(&w, "app", &pinned);
    m["keep_until"] = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .to_rfc3339()
        .into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newest = w.drctl(&["run", "app"]).ok().stdout.trim().to_owned();
    assert_eq!(
        committed_dirs(&w, "app"),
        [newest].into_iter().collect(),
        "an expired pin protects nothing"
    );
}
