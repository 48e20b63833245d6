//! RPO measured from the repository: violated, then compliant, with exact
//! transitions, metrics and one alert.
// Each test is one end-to-end scenario told in order; splitting it would
// hide the sequence the assertions depend on.
#![allow(clippy::too_many_lines)]

mod common;

use common::*;

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
            .find(|l| l.starts_with(&format!("{name}{{job_name=\"nightly\",repository=\"")))
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
    let tr = drctl::engine::rpo::transitions(&state, "nightly")
        .await
        .unwrap();
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
    let posts: Vec<serde_json::Value> = hook
        .requests("/rpo")
        .iter()
        .map(common::receivers::Request::json)
        .collect();
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
    // A violation is exit 8, so cron and monitoring can act on it.
    let r = w.drctl(&["rpo", "--json"]);
    assert_eq!(r.code, 8, "{}", r.all());
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["compliant"], false, "{rows}");
    assert!(rows[0]["age_seconds"].as_f64().unwrap() >= 2.0);
    let table = w.drctl(&["rpo"]);
    assert_eq!(table.code, 8, "{}", table.all());
    assert!(table.stdout.contains("VIOLATED"), "{}", table.stdout);
    assert!(
        table.stderr.contains("RPO violated: nightly"),
        "{}",
        table.stderr
    );
    let check = w.drctl(&["rpo", "--check"]);
    assert_eq!(check.code, 8, "{}", check.all());
    assert!(
        check
            .stdout
            .starts_with("nightly: RPO violated: newest backup"),
        "{}",
        check.stdout
    );
}
