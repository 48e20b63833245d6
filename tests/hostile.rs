//! Hostile input and secrets: canary secrets in every place a secret can be
//! configured, then every place they must never reach is searched.

mod common;

use common::*;
use std::path::Path;

/// Every canary, as configured; none may appear where it does not belong.
/// The test cluster's own password (in its URL) is one too.
fn canaries() -> Vec<String> {
    let mut c: Vec<String> = [
        "CanaryAwsSecret2",
        "CanarySmtpPw3",
        "CanaryHookSecret4",
        "CanaryHealthToken6",
        "CanarySlackToken7",
        "CanaryPingUuid8",
    ]
    .map(String::from)
    .to_vec();
    c.push(db_password());
    c
}

fn db_password() -> String {
    let u = url::Url::parse(&pg().url("postgres")).unwrap();
    let pw = u.password().expect("the test cluster's URL has a password");
    assert!(pw.len() >= 8, "a password long enough to find: {pw}");
    pw.to_owned()
}

/// Canary hits in `text`, with where they were found.
fn hits(place: &str, text: &str) -> Vec<String> {
    canaries()
        .into_iter()
        .filter(|c| text.contains(c.as_str()))
        .map(|c| format!("{c} in {place}"))
        .collect()
}

/// A wrapper that records its argv and environment into `dir`, then runs
/// the real tool (its environment is exactly what drctl gave pg_dump).
fn recording(dir: &Path, tool: &str) -> String {
    format!(
        "printf '%s\\n' \"$*\" >> {d}/argv-{tool}; tr '\\0' '\\n' < /proc/$$/environ >> {d}/environ-{tool}; exec \"$REAL\" \"$@\"",
        d = dir.display()
    )
}

#[test]
fn canary_secrets_never_reach_a_child_argv_or_a_file_left_behind() {
    let pg = pg();
    let db = pg.create_db("canary");
    pg.seed(&db, &unique("canary_owner"), 10);
    let seen = scratch_dir("drctl-canary-seen-");
    let bin = tool_wrappers(&[
        ("pg_dump", &recording(&seen, "pg_dump")),
        ("pg_dumpall", &recording(&seen, "pg_dumpall")),
        ("pg_restore", &recording(&seen, "pg_restore")),
        ("psql", &recording(&seen, "psql")),
    ]);
    let url = pg.url(&db);
    let probe = format!("{}/environ-probe", seen.display());
    let mut w = World::new(&format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [alerts.channels.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"\nfrom = \"drctl@example.test\"\nto = [\"ops@example.test\"]\nusername = \"drctl\"\npassword_env = \"SMTP_PASSWORD\"\n\
         [alerts.channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret_env = \"WEBHOOK_SECRET\"\n\
         [alerts.channels.slack]\ntype = \"slack\"\nwebhook_url = \"http://LOCALHOST:1/services/T0/B0/CanarySlackToken7\"\n\
         [alerts.channels.hc]\ntype = \"ping\"\nurl = \"http://LOCALHOST:1/ping/CanaryPingUuid8\"\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\npg_bindir = \"{}\"\n\
         [jobs.probe]\ntype = \"health\"\n[[jobs.probe.checks]]\ntype = \"command\"\nname = \"env\"\ncommand = [\"sh\", \"-c\", \"tr '\\\\0' '\\\\n' < /proc/$$/environ > {probe}\"]\n\
         [jobs.tokenprobe]\ntype = \"health\"\n[[jobs.tokenprobe.checks]]\ntype = \"http\"\nurl = \"http://LOCALHOST:1/health?token=CanaryHealthToken6\"\nfailure_threshold = 1\n",
        free_port(),
        bin.display()
    ));
    w.set_env("APP_DATABASE_URL", &url);
    w.set_env("AWS_SECRET_ACCESS_KEY", "CanaryAwsSecret2");
    w.set_env("SMTP_PASSWORD", "CanarySmtpPw3");
    w.set_env("WEBHOOK_SECRET", "CanaryHookSecret4");

    let backup = w.drctl(&["run", "appdb"]);
    backup.ok();
    w.drctl(&["run", "probe"]).ok();
    // A probe whose URL carries a token, failing (nothing listens): its
    // message, the run record and the status must not show the token.
    let tokenprobe = w.drctl(&["run", "tokenprobe"]);
    assert_eq!(tokenprobe.code, 8, "{}", tokenprobe.all());
    let status = w.drctl(&["status", "--json"]);
    let config = w.drctl(&["config", "check"]);
    config.ok();
    // Every channel fails (nothing listens): the errors, as the HTTP client
    // normalises the URL (`localhost`), must not carry the Slack token.
    let alerts_test = w.drctl(&["alerts", "test"]);
    assert_eq!(alerts_test.code, 1, "{}", alerts_test.all());
    let alerts = w.drctl(&["alerts", "--json"]);
    // The daemon's log and its endpoint.
    let port = http_port(&w);
    let mut d = Daemon::start(&w);
    wait_for_endpoint(port);
    let served: Vec<(String, String)> = ["/metrics", "/status", "/health"]
        .iter()
        .map(|p| (format!("GET {p}"), http_get(port, p).1))
        .collect();
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait(std::time::Duration::from_secs(20)),
        Some(0),
        "{}",
        d.log()
    );
    let daemon_log = d.log();
    let target = unique("canary_dst");
    let restore = w.drctl(&[
        "restore",
        "--latest",
        "--job",
        "appdb",
        "--to",
        &pg.url(&target),
    ]);
    restore.ok();

    let mut found = Vec::new();
    let mut children = 0;
    for e in std::fs::read_dir(&seen).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        children += 1;
        found.extend(hits(&e.file_name().to_string_lossy(), &text));
        if e.file_name().to_string_lossy().starts_with("environ-pg") {
            // The password reaches libpq only as an unnamed passfile.
            assert!(text.contains("PGPASSFILE=/dev/fd/"), "{text}");
        }
    }
    assert!(children >= 5, "the wrappers recorded {children} files");
    for (place, text) in [
        ("run output", backup.all()),
        ("restore output", restore.all()),
        ("health probe output", tokenprobe.all()),
        ("status --json", status.all()),
        ("config check", config.all()),
        ("alerts test", alerts_test.all()),
        ("alerts --json", alerts.all()),
        ("daemon log", daemon_log),
    ] {
        found.extend(hits(place, &text));
    }
    for (place, text) in &served {
        found.extend(hits(place, text));
    }
    for (place, dir) in [("state", w.dir.join("state")), ("repository", w.repo_dir())] {
        for f in walk(&dir) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            found.extend(hits(
                &format!("{place} {}", f.display()),
                &String::from_utf8_lossy(&bytes),
            ));
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn pgpassword_reaches_children_through_the_passfile_and_a_killed_run_leaves_no_passfile() {
    let pg = pg();
    let db = pg.create_db("pgpw");
    pg.seed(&db, &unique("pgpw_owner"), 10);
    let seen = scratch_dir("drctl-pgpw-seen-");
    let marker = seen.join("dumping");
    let bin = tool_wrappers(&[
        (
            "pg_dumpall",
            &format!(
                "cat \"$PGPASSFILE\" > {d}/passfile-pg_dumpall; exec \"$REAL\" \"$@\"",
                d = seen.display()
            ),
        ),
        (
            "pg_dump",
            &format!(
                "case \"$*\" in *--version*) exec \"$REAL\" \"$@\";; esac; touch {}; sleep 30; exec \"$REAL\" \"$@\"",
                marker.display()
            ),
        ),
    ]);
    let tmp = scratch_dir("drctl-pgpw-tmp-");
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\npg_bindir = \"{}\"\n",
        bin.display()
    ));
    // The URL without its password; the password in PGPASSWORD only.
    let mut url = url::Url::parse(&pg.url(&db)).unwrap();
    url.set_password(None).unwrap();
    w.set_env("APP_DATABASE_URL", url.as_str());
    w.set_env("PGPASSWORD", &db_password());
    w.set_env("TMPDIR", tmp.to_str().unwrap());
    let mut child = w
        .command(&["run", "appdb"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_path(&marker, std::time::Duration::from_secs(30));
    // pg_dumpall (before pg_dump) read the password from the passfile.
    let pf = std::fs::read_to_string(seen.join("passfile-pg_dumpall")).unwrap();
    assert!(pf.contains(&db_password()), "{pf}");
    // Mid-run, and after a SIGKILL: no passfile anywhere in the temp dir.
    let listing = || -> Vec<String> {
        walk(&tmp)
            .into_iter()
            .map(|p| p.display().to_string())
            .collect()
    };
    assert_eq!(listing(), Vec::<String>::new());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(listing(), Vec::<String>::new());
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// One case of `tests/corpus/configs.txt`.
struct Case {
    name: String,
    exit: i32,
    key: String,
    body: String,
}

fn corpus() -> Vec<Case> {
    let text = include_str!("corpus/configs.txt");
    text.split("\n=== ")
        .skip(1)
        .map(|block| {
            let (head, body) = block.split_once("\n---\n").expect("a --- line");
            let mut lines = head.lines();
            let name = lines.next().unwrap().trim().to_owned();
            let mut exit = None;
            let mut key = String::new();
            for l in lines {
                if let Some(n) = l.strip_prefix("exit ") {
                    exit = Some(n.trim().parse().unwrap());
                } else if let Some(k) = l.strip_prefix("key ") {
                    key = k.to_owned();
                } else if l.trim() == "key" {
                    key.clear();
                }
            }
            Case {
                name,
                exit: exit.expect("an exit line"),
                key,
                body: body.to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_config_of_the_hostile_corpus_gets_its_exit_code_and_names_its_key() {
    let cases = corpus();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let dir = scratch_dir("drctl-corpus-");
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let file = dir.join(format!("case-{i}.toml"));
        std::fs::write(&file, c.body.replace("{dir}", dir.to_str().unwrap())).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
            .arg("-c")
            .arg(&file)
            .args(["config", "check"])
            .env_remove("DRCTL_CONFIG")
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let mut why = Vec::new();
        if code != c.exit {
            why.push(format!("exit {code}, expected {}", c.exit));
        }
        if c.exit == 2 {
            let named = if c.name.starts_with("syntax.") {
                err.contains(&c.key)
            } else {
                err.contains(&format!("key `{}`", c.key))
            };
            if !named {
                why.push(format!("does not name `{}`", c.key));
            }
            if !err.contains(file.to_str().unwrap()) {
                why.push("does not name the file".into());
            }
        }
        if text.contains("S3cretCanary") {
            why.push("echoes the canary".into());
        }
        if text.contains("panicked") {
            why.push("panicked".into());
        }
        if !why.is_empty() {
            wrong.push(format!(
                "{}: {}\n    {}",
                c.name,
                why.join("; "),
                err.trim()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn one_broken_repository_stops_only_its_jobs_and_usage_errors_exit_2() {
    let src = scratch_dir("drctl-iso-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let not_a_dir = scratch_dir("drctl-iso-").join("file");
    std::fs::write(&not_a_dir, "a repository path that is a file").unwrap();
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.broken]\ntype = \"local\"\npath = \"{}\"\n\
         [jobs.good]\ntype = \"files\"\npaths = [\"{src}\"]\nrepository = \"local\"\nretention = {{ keep_last = 2 }}\n\
         [jobs.bad]\ntype = \"files\"\npaths = [\"{src}\"]\nrepository = \"broken\"\n\
         [alerts.channels.hc]\ntype = \"ping\"\nurl = \"http://127.0.0.1:1/ping\"\n",
        not_a_dir.display(),
        src = src.display()
    ));
    let id = w.drctl(&["run", "good"]).ok().stdout.trim().to_owned();

    let listed = w.drctl(&["backups", "--json"]);
    assert_ne!(listed.code, 0, "{}", listed.all());
    assert!(listed.stdout.contains(&id), "{}", listed.all());
    assert!(listed.stderr.contains("bad"), "{}", listed.all());

    let verified = w.drctl(&["verify"]);
    assert_ne!(verified.code, 0, "{}", verified.all());
    assert!(
        verified.stdout.contains(&format!("ok   good/{id}")),
        "{}",
        verified.all()
    );
    assert!(
        verified.stdout.contains("FAIL bad: cannot verify"),
        "{}",
        verified.all()
    );

    let pruned = w.drctl(&["prune"]);
    assert_ne!(pruned.code, 0, "{}", pruned.all());
    assert!(pruned.stdout.contains("good: kept 1"), "{}", pruned.all());

    // Usage errors: exit 2, and nothing restored.
    let dst = scratch_dir("drctl-iso-dst-");
    for args in [
        vec!["restore", "--latest", "--to", dst.to_str().unwrap()],
        vec![
            "restore",
            "--id",
            "not-an-id",
            "--job",
            "good",
            "--to",
            dst.to_str().unwrap(),
        ],
        vec![
            "restore",
            "--latest",
            "--job",
            "good",
            "--to",
            dst.to_str().unwrap(),
            "--tmp-dir",
            "/nonexistent/drctl-tmp",
        ],
        vec![
            "restore",
            "--latest",
            "--job",
            "good",
            "--to-env",
            "DRCTL_TEST_UNSET_TARGET",
        ],
        vec!["drill", "run", "weekly", "--id", "not-an-id"],
    ] {
        let r = w.drctl(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0, "{args:?}");
    }
    assert!(!std::path::Path::new("/nonexistent/drctl-tmp").exists());

    // A ping channel is skipped by `alerts test`, not failed.
    let t = w.drctl(&["alerts", "test", "--json"]);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(t.stdout.contains("\"skipped\": true"), "{}", t.stdout);
}

#[test]
fn a_daemon_refuses_to_start_without_the_secrets_its_jobs_name() {
    let w = World::new(
        "[http]\nenabled = false\n[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"DRCTL_TEST_NEVER_SET\"\nschedule = \"0 0 2 * * *\"\nrepository = \"local\"\n",
    );
    let r = Run::from(
        w.command(&["daemon"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("key `jobs.appdb.url_env`")
            && r.stderr.contains("DRCTL_TEST_NEVER_SET is not set"),
        "{}",
        r.stderr
    );
    // `config check` says the same (and exits 2 as the service's own user).
    let c = w.drctl(&["config", "check"]);
    assert_eq!(c.code, 2, "{}", c.all());
}

#[test]
fn a_ten_megabyte_value_is_never_echoed() {
    let dir = scratch_dir("drctl-huge-");
    let file = dir.join("huge.toml");
    let huge = "S3cretCanary".repeat(10 * 1024 * 1024 / 12);
    std::fs::write(
        &file,
        format!("[alerts.channels.m]\ntype = \"email\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"c@d.e\"]\nport = \"{huge}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
        .arg("-c")
        .arg(&file)
        .args(["config", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(500)]);
    assert!(err.len() < 2000, "{} bytes of error", err.len());
    assert!(err.contains("key `alerts.channels.m.port`"), "{err}");
    assert!(
        !err.contains("S3cretCanary"),
        "{}",
        &err[..err.len().min(500)]
    );
}
