//! Fleet-ready edges, reproduced as an operator rolling drctl out meets
//! them: file modes under a permissive umask, commands run as the wrong
//! user, lock files left by another user, `prune_files` without the
//! permission to see open files, first-contact config checks.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

const NOBODY: u32 = 65534;

/// `drctl` in world `w` as uid/gid 65534, environment kept.
fn as_nobody(w: &World, args: &[&str]) -> Run {
    Run::from(
        w.command_via(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ],
            args,
        )
        .output()
        .unwrap(),
    )
}

fn chown_tree(p: &Path, uid: u32) {
    let st = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

#[test]
fn backups_and_state_are_private_whatever_the_umask() {
    let w = etc_world();
    let mut c = w.command(&["run", "etc"]);
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let r = Run::from(c.output().unwrap());
    r.ok();
    let id = r.stdout.trim();
    let mut checked = 0;
    for e in walkdir::WalkDir::new(w.repo_dir()).min_depth(1) {
        let e = e.unwrap();
        let want = if e.file_type().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(e.path()), want, "{}", e.path().display());
        checked += 1;
    }
    assert!(checked >= 4, "{checked} entries under the repository");
    assert!(w
        .repo_dir()
        .join("etc")
        .join(id)
        .join("manifest.json")
        .is_file());
    let state = w.dir.join("state");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.db")), 0o600);
    assert_eq!(mode(&state.join("locks")), 0o700);
    assert_eq!(mode(&state.join("locks/etc.lock")), 0o600);
}

#[test]
fn a_command_as_another_user_than_the_state_owner_is_refused_with_the_command_to_use() {
    let w = etc_world();
    // The service user (here: nobody) owns the state; root runs a job.
    as_nobody(&w, &["status"]).ok();
    let state = w.dir.join("state");
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), NOBODY);
    let before: Vec<_> = walkdir::WalkDir::new(&state)
        .into_iter()
        .map(|e| e.unwrap().path().to_owned())
        .collect();
    let r = w.drctl(&["run", "etc"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("belongs to user nobody")
            && r.stderr.contains(&format!(
                "sudo -u nobody drctl -c {} run etc",
                w.config.display()
            )),
        "{}",
        r.stderr
    );
    // Nothing of root's was left behind for the service to trip over.
    for e in walkdir::WalkDir::new(&state) {
        let e = e.unwrap();
        assert_eq!(
            e.metadata().unwrap().uid(),
            NOBODY,
            "{}",
            e.path().display()
        );
    }
    let after: Vec<_> = walkdir::WalkDir::new(&state)
        .into_iter()
        .map(|e| e.unwrap().path().to_owned())
        .collect();
    assert_eq!(before, after);
    assert!(!w.repo_dir().join("etc").exists(), "no backup was written");
}

/// A lock file another user created (before the owner check existed, or by
/// hand) never stops the service user from taking the lock.
#[test]
fn a_lock_file_left_by_root_does_not_lock_the_service_user_out() {
    let w = etc_world();
    let locks = w.dir.join("state/locks");
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::create_dir_all(w.repo_dir()).unwrap();
    chown_tree(&w.dir.join("state"), NOBODY);
    chown_tree(&w.repo_dir(), NOBODY);
    let lock = locks.join("etc.lock");
    std::fs::write(&lock, "pid 1 on an old run as root").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(std::fs::metadata(&lock).unwrap().uid(), 0);
    let r = as_nobody(&w, &["run", "etc"]);
    r.ok();
    assert!(w.repo_dir().join("etc").join(r.stdout.trim()).is_dir());
}

/// Without the permission to read other users' open files, `prune_files`
/// would see every file as unused: it refuses and deletes nothing, unless
/// `check_open_files = false` says so.
#[test]
fn prune_files_refuses_when_it_cannot_see_open_files() {
    let logs = scratch_dir("drctl-logs-");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86400);
    for n in ["a.log", "b.log"] {
        let p = logs.join(n);
        std::fs::write(&p, "line\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    chown_tree(&logs, NOBODY);
    let job = |extra: &str| {
        format!(
            "[jobs.logs]\ntype = \"prune_files\"\npaths = [\"{}/*.log\"]\nolder_than = \"30d\"\n{extra}",
            logs.display()
        )
    };
    let w = World::new(&job(""));
    std::fs::create_dir_all(w.dir.join("state")).unwrap();
    chown_tree(&w.dir.join("state"), NOBODY);
    let r = as_nobody(&w, &["run", "logs"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("refusing to delete") && r.stderr.contains("CAP_SYS_PTRACE"),
        "{}",
        r.stderr
    );
    assert!(logs.join("a.log").exists() && logs.join("b.log").exists());

    let w = World::new(&job("check_open_files = false\n"));
    std::fs::create_dir_all(w.dir.join("state")).unwrap();
    chown_tree(&w.dir.join("state"), NOBODY);
    let r = as_nobody(&w, &["run", "logs"]);
    r.ok();
    assert!(!logs.join("a.log").exists() && !logs.join("b.log").exists());
}

#[test]
fn config_check_without_a_config_file_fails_unless_defaults_are_allowed() {
    let dir = scratch_dir("drctl-nocfg-");
    let check = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
            .args(["config", "check"])
            .args(extra)
            .env_remove("DRCTL_CONFIG")
            .env("DRCTL_STATE_DIR", &dir)
            .env("DATABASE_URL", "postgres://app@127.0.0.1:5432/app")
            .output()
            .unwrap();
        Run::from(out)
    };
    if Path::new("/etc/drctl/drctl.toml").exists() {
        return; // this machine is configured: nothing to reproduce
    }
    let r = check(&[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("/etc/drctl/drctl.toml") && r.stderr.contains("--allow-defaults"),
        "{}",
        r.stderr
    );
    check(&["--allow-defaults"]).ok();
}

#[test]
fn config_check_warns_when_alerts_reach_nobody() {
    let w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"local\"\n",
    );
    let r = w.drctl(&["config", "check"]);
    r.ok();
    assert!(
        r.stderr
            .contains("warning: alerts.channels: no channel is configured"),
        "{}",
        r.stderr
    );
    let w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"local\"\n\
         [alerts.channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n\
         [alerts.routes]\nwarning = [\"hook\"]\n",
    );
    let r = w.drctl(&["config", "check"]);
    r.ok();
    assert!(
        r.stderr.contains("warning: alerts.routes.critical: empty")
            && !r.stderr.contains("alerts.routes.warning"),
        "{}",
        r.stderr
    );
}

/// A database URL without a password is not a secret: errors name the
/// server, instead of "connecting to ***".
#[test]
fn a_passwordless_url_shows_its_server_in_errors() {
    let port = free_port();
    let mut w = World::new(
        "[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n",
    );
    w.set_env(
        "APP_DATABASE_URL",
        &format!("postgres://app@127.0.0.1:{port}/appdb"),
    );
    let r = w.drctl(&["run", "appdb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}/appdb")),
        "{}",
        r.stderr
    );
}

fn etc_world() -> World {
    let src = scratch_dir("drctl-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n\
         [jobs.broken]\ntype = \"files\"\npaths = [\"{}/missing\"]\nrepository = \"local\"\n",
        src.display(),
        src.display()
    ))
}

#[test]
fn logs_have_no_colour_codes_off_a_terminal_and_speak_json_when_asked() {
    let mut w = etc_world();
    w.set_env("DRCTL_LOG", "info");
    let r = w.drctl(&["run", "etc"]);
    r.ok();
    assert!(r.stderr.contains("backup started"), "{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "ANSI escapes: {:?}", r.stderr);

    for how in [
        &["--log-format", "json", "run", "etc"][..],
        &["run", "etc"][..],
    ] {
        let mut c = w.command(how);
        if how.len() == 2 {
            c.env("DRCTL_LOG_FORMAT", "json");
        }
        let r = Run::from(c.output().unwrap());
        r.ok();
        let lines: Vec<serde_json::Value> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let started = lines
            .iter()
            .find(|v| v["fields"]["message"] == "backup started")
            .unwrap_or_else(|| panic!("{}", r.stderr));
        assert_eq!(started["level"], "INFO");
        assert_eq!(started["fields"]["job"], "etc");
    }
}

#[test]
fn quiet_and_verbose_set_the_detail() {
    let w = etc_world();
    let run = |args: &[&str]| {
        let mut c = w.command(args);
        c.env_remove("DRCTL_LOG");
        let r = Run::from(c.output().unwrap());
        r.ok();
        r
    };
    let r = run(&["-q", "run", "etc"]);
    assert!(!r.stderr.contains("backup started"), "{}", r.stderr);
    let r = run(&["run", "etc"]);
    assert!(r.stderr.contains("backup started"), "{}", r.stderr);
    assert!(!r.stderr.contains("DEBUG"), "{}", r.stderr);
    let r = run(&["-vv", "run", "etc"]);
    assert!(r.stderr.contains("DEBUG"), "{}", r.stderr);
}

/// Under systemd (stderr connected to the journal, as `JOURNAL_STREAM`
/// says), each line is a journal entry with its priority and fields. The
/// journal here is a datagram socket at the journal's path, in a mount
/// namespace of the test's own.
#[test]
fn under_systemd_logs_go_to_the_journal_with_priorities_and_fields() {
    let w = etc_world();
    let dir = scratch_dir("drctl-journal-");
    let sock = std::os::unix::net::UnixDatagram::bind(dir.join("socket")).unwrap();
    std::fs::set_permissions(dir.join("socket"), std::fs::Permissions::from_mode(0o666)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let run = |job: &str| {
        let script = format!(
            "mount -t tmpfs none /run && mkdir -p /run/systemd/journal && \
             mount --bind {} /run/systemd/journal && \
             JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"",
            dir.display()
        );
        let mut c = w.command_via(
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ],
            &["run", job],
        );
        c.env_remove("DRCTL_LOG");
        Run::from(c.output().unwrap())
    };
    let entries = || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    };
    let r = run("etc");
    r.ok();
    assert!(
        !r.stderr.contains("backup started"),
        "went to stderr: {}",
        r.stderr
    );
    let got = entries();
    let started = got
        .iter()
        .find(|e| e.starts_with("MESSAGE=backup started"))
        .unwrap_or_else(|| panic!("{got:#?}\n{}", r.stderr));
    for field in [
        "\nPRIORITY=5\n",
        "\nSYSLOG_IDENTIFIER=drctl\n",
        "\nJOB=etc\n",
        "\nBACKUP_ID=",
    ] {
        assert!(started.contains(field), "{field} in {started}");
    }
    let r = run("broken");
    assert_ne!(r.code, 0);
    let got = entries();
    assert!(
        got.iter()
            .any(|e| e.contains("\nPRIORITY=3\n") && e.contains("\nJOB=broken\n")),
        "no error entry for the failed run: {got:#?}"
    );
}

/// `rust-version` in Cargo.toml is at least what every locked dependency
/// declares, so an older toolchain fails with cargo's clear message
/// instead of a compile error deep in a dependency.
#[test]
fn rust_version_covers_every_locked_dependency() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let ours = parse(env!("CARGO_PKG_RUST_VERSION"));
    let mut needs = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        if let Some(v) = p["rust_version"].as_str() {
            if parse(v) > ours {
                needs.push(format!("{} {} needs {v}", p["name"], p["version"]));
            }
        }
    }
    assert!(
        needs.is_empty(),
        "rust-version {ours:?} is too low: {needs:?}"
    );
}

#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let inner = text
        .trim()
        .strip_prefix(&format!("drctl {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        inner == "unknown" || (inner.len() == 12 && inner.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
}

/// The bash completion script completes subcommands and their flags.
#[test]
fn bash_completion_completes_commands_and_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = scratch_dir("drctl-completion-");
    std::fs::write(dir.join("drctl.bash"), &out.stdout).unwrap();
    let complete = |words: &str| -> String {
        let script = format!(
            "source {}/drctl.bash\nCOMP_WORDS=({words})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             COMP_LINE=\"{words}\"\nCOMP_POINT=${{#COMP_LINE}}\n_drctl drctl \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            dir.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        complete("drctl res").lines().any(|l| l == "restore"),
        "{}",
        complete("drctl res")
    );
    let flags = complete("drctl restore --par");
    assert!(flags.lines().any(|l| l == "--parallel"), "{flags}");
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("restore"));
    }
}

/// Missing AWS credentials are one sentence naming what was tried, not the
/// SDK's provider-by-provider dump with a "cannot reach the store" hint.
#[test]
fn missing_aws_credentials_are_one_sentence() {
    let w = World::new(
        "[repositories.r]\ntype = \"s3\"\nbucket = \"b\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\n\
         [jobs.etc]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"r\"\n",
    );
    let home = scratch_dir("drctl-home-");
    let mut c = w.command(&["backups", "etc"]);
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
    ] {
        c.env_remove(k);
    }
    c.env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("DRCTL_LOG");
    let r = Run::from(c.output().unwrap());
    assert_ne!(r.code, 0);
    let err = r.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no AWS credentials found (tried the environment"),
        "{err}"
    );
    assert!(
        !err.contains("dispatch failure") && err.len() < 500,
        "{err}"
    );
}

/// Job files in `schedules/` next to the main config are merged without a
/// `schedules_dir` key (the package's /etc/drctl/schedules).
#[test]
fn schedules_next_to_the_config_are_merged_by_default() {
    let w = World::new("[repositories.local]\ntype = \"local\"\npath = \"{dir}/repo\"\n");
    std::fs::create_dir_all(w.dir.join("schedules")).unwrap();
    std::fs::write(
        w.dir.join("schedules/etc.toml"),
        "[jobs.etc]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"local\"\n",
    )
    .unwrap();
    let r = w.drctl(&["config", "check"]);
    r.ok();
    assert!(r.stderr.contains("1 jobs"), "{}", r.stderr);
    w.drctl(&["run", "etc"]).ok();
}

/// `drctl doctor` probes for real: a reachable database and a writable
/// repository are ok; a database that refuses and a repository that cannot
/// be written fail with their fix, and the exit code says so.
#[test]
fn doctor_checks_databases_repositories_and_the_state_directory() {
    let pg = pg();
    let db = pg.create_db("doctor");
    let blocked = scratch_dir("drctl-blocked-");
    std::fs::write(blocked.join("repo"), "a file where a directory should be").unwrap();
    let mut w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n\
         [repositories.broken]\ntype = \"local\"\npath = \"{}/repo/sub\"\n\
         [jobs.appdb]\ntype = \"postgres\"\nurl_env = \"APP_DATABASE_URL\"\nrepository = \"local\"\n\
         [jobs.gone]\ntype = \"postgres\"\nurl_env = \"GONE_URL\"\nrepository = \"broken\"\n",
        blocked.display()
    ));
    w.set_env("APP_DATABASE_URL", &pg.url(&db));
    w.set_env(
        "GONE_URL",
        &format!("postgres://nobody@127.0.0.1:{}/none", free_port()),
    );
    w.drctl(&["run", "appdb"]).ok();
    let r = w.drctl(&["doctor", "--json"]);
    assert_eq!(r.code, 8, "{}", r.all());
    let findings: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let level = |check: &str, subject: &str| -> String {
        findings
            .iter()
            .find(|f| f["check"] == check && f["subject"] == subject)
            .unwrap_or_else(|| panic!("no {check} {subject} in {findings:#?}"))["level"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(level("database", "appdb"), "ok");
    assert_eq!(level("database", "gone"), "fail");
    assert_eq!(level("repository", "local"), "ok");
    assert_eq!(level("clock", "local"), "ok");
    assert_eq!(level("repository", "broken"), "fail");
    assert_eq!(level("scratch", "appdb"), "ok");
    assert_eq!(
        level("state", &w.dir.join("state").display().to_string()),
        "ok"
    );
    let gone = findings
        .iter()
        .find(|f| f["subject"] == "gone" && f["check"] == "database")
        .unwrap();
    assert!(
        gone["fix"].as_str().unwrap().contains("pg_hba.conf"),
        "{gone}"
    );
    // No probe is left behind.
    assert!(
        !w.repo_dir().join("_doctor").exists()
            || std::fs::read_dir(w.repo_dir().join("_doctor"))
                .unwrap()
                .next()
                .is_none()
    );
    // The text form: one line per finding, fixes under them.
    let t = w.drctl(&["doctor"]);
    assert_eq!(t.code, 8);
    assert!(
        t.stdout
            .lines()
            .any(|l| l.starts_with("FAIL  repository   broken")),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout
            .contains("fix: check the credentials and the write permission"),
        "{}",
        t.stdout
    );
}

/// Two hosts (UTS namespaces of their own) sharing one repository: each
/// daemon publishes `_hosts/<host>.json`; `drctl fleet` from either shows
/// both with their state; a host whose daemon dies is shown stale and
/// alerted on by the other (`fleet_stale`), resolved when it comes back.
// One end-to-end scenario told in order.
#[allow(clippy::too_many_lines)]
#[test]
fn the_fleet_view_shows_every_host_of_a_repository_and_alerts_on_a_silent_one() {
    use common::receivers::HttpReceiver;
    let repo = scratch_dir("drctl-fleet-repo-");
    let src = scratch_dir("drctl-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let hook = HttpReceiver::start();
    // Host names take no underscore.
    let (a_host, b_host) = (
        unique("fleet-a").replace('_', "-"),
        unique("fleet-b").replace('_', "-"),
    );
    // Only a's job has an RPO: b's, never backed up, would otherwise be
    // `rpo_violated` (worse than `failing`) as soon as its daemon has
    // evaluated it, racing the first publication.
    let world = |job: &str, paths: &str| {
        let rpo = if job == "etc" { "rpo = \"1d\"\n" } else { "" };
        World::new(&format!(
            "fleet_publish = \"1s\"\nfleet_stale = \"8s\"\n\
             [http]\nenabled = false\n\
             [repositories.shared]\ntype = \"local\"\npath = \"{}\"\n\
             [jobs.{job}]\ntype = \"files\"\npaths = [\"{paths}\"]\nrepository = \"shared\"\nschedule = \"0 0 2 * * *\"\n{rpo}\
             [jobs.health]\ntype = \"health\"\n[[jobs.health.checks]]\ntype = \"http\"\nurl = \"http://user:fleet-canary-pw@127.0.0.1:{}/up\"\n\
             [alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.routes]\ncritical = [\"hook\"]\n",
            repo.display(),
            free_port(),
            hook.url("/alerts")
        ))
    };
    let a = world("etc", &src.display().to_string());
    // Host b's job fails: its path does not exist.
    let b = world("conf", &format!("{}/missing", src.display()));
    assert_eq!(
        Run::from(
            a.command_via(&as_host(&a_host), &["run", "etc"])
                .output()
                .unwrap()
        )
        .code,
        0
    );
    assert_ne!(
        Run::from(
            b.command_via(&as_host(&b_host), &["run", "conf"])
                .output()
                .unwrap()
        )
        .code,
        0
    );
    let _da = Daemon::start_via(&a, &as_host(&a_host));
    let mut db = Daemon::start_via(&b, &as_host(&b_host));
    let fleet = |w: &World| {
        let r = w.drctl(&["fleet", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        (r.code, v)
    };
    let host = |v: &serde_json::Value, h: &str| {
        v.as_array()
            .and_then(|a| a.iter().find(|x| x["host"] == h).cloned())
    };
    wait_until(Duration::from_secs(30), "both hosts published", || {
        let (_, v) = fleet(&a);
        host(&v, &a_host).is_some() && host(&v, &b_host).is_some()
    });
    let (code, v) = fleet(&b);
    // b's failing job: exit 7 (warning) from any host.
    assert_eq!(code, 7, "{v}");
    let ha = host(&v, &a_host).unwrap();
    assert_eq!(ha["state"], "ok", "{ha}");
    assert_eq!(ha["stale"], false);
    assert_eq!(ha["status"]["version"], env!("CARGO_PKG_VERSION"));
    let etc = ha["status"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "etc")
        .unwrap();
    assert_eq!(etc["last_outcome"], "succeeded", "{ha}");
    assert_eq!(etc["rpo"]["compliant"], true, "{ha}");
    let hb = host(&v, &b_host).unwrap();
    assert_eq!(hb["state"], "failing", "{hb}");
    // The objects: private, no secret in them, one per host.
    let objects: Vec<std::path::PathBuf> = std::fs::read_dir(repo.join("_hosts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    for o in &objects {
        assert_eq!(mode(o) & 0o777, 0o600, "{}", o.display());
        let text = std::fs::read_to_string(o).unwrap();
        assert!(!text.contains("fleet-canary-pw"), "{text}");
    }
    // The text table names both hosts.
    let table = a.drctl(&["fleet"]);
    assert!(
        table.stdout.contains(&a_host) && table.stdout.contains(&b_host),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("FAILING"), "{}", table.stdout);
    // The DR report covers the fleet.
    let report = a.drctl(&["drill", "report", "--fleet", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    let hosts: Vec<&str> = r["fleet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert!(
        hosts.contains(&a_host.as_str()) && hosts.contains(&b_host.as_str()),
        "{r}"
    );
    let md = a.drctl(&["drill", "report", "--fleet"]);
    assert!(md.stdout.contains("## Fleet"), "{}", md.stdout);

    // b's daemon dies: a alerts once b's status is older than 8 s.
    db.child.kill().unwrap();
    db.child.wait().unwrap();
    let key = format!("host_stale:{b_host}");
    wait_until(Duration::from_secs(40), "host_stale fired", || {
        hook.requests("/alerts")
            .iter()
            .any(|r| r.json()["key"] == key && r.json()["event"] == "firing")
    });
    let (code, v) = fleet(&a);
    assert_eq!(code, 8, "{v}");
    assert_eq!(host(&v, &b_host).unwrap()["state"], "stale");
    let _db = Daemon::start_via(&b, &as_host(&b_host));
    wait_until(Duration::from_secs(40), "host_stale resolved", || {
        hook.requests("/alerts")
            .iter()
            .any(|r| r.json()["key"] == key && r.json()["event"] == "resolved")
    });
}

#[test]
fn a_fleet_stale_shorter_than_an_idle_hosts_silence_is_refused() {
    let msg = config_error("fleet_publish = \"1m\"\nfleet_stale = \"5m\"\n");
    assert!(msg.contains("fleet_stale") && msg.contains("15m"), "{msg}");
    let msg = config_error("fleet_publish = \"0s\"\nfleet_stale = \"15m\"\n");
    assert!(
        msg.contains("fleet_stale") && msg.contains("fleet_publish"),
        "{msg}"
    );
    let msg = config_error("fleet_publish = \"10ms\"\n");
    assert!(
        msg.contains("fleet_publish") && msg.contains("at least 1s"),
        "{msg}"
    );
}

/// Two daemons under one host name sharing a repository (a cloned
/// machine): the second does not overwrite the first's status, which
/// stays the first's for good, and raises `host_name_conflict`.
#[test]
fn two_daemons_with_one_host_name_never_overwrite_each_other_and_the_second_alerts() {
    let repo = scratch_dir("drctl-fleet-twin-repo-");
    let src = scratch_dir("drctl-twin-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let host = unique("twin").replace('_', "-");
    let world = || {
        World::new(&format!(
            "fleet_publish = \"1s\"\nfleet_stale = \"8s\"\n[http]\nenabled = false\n\
             [repositories.shared]\ntype = \"local\"\npath = \"{}\"\n\
             [jobs.etc]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"shared\"\nschedule = \"0 0 2 * * *\"\n",
            repo.display(),
            src.display()
        ))
    };
    let (a, b) = (world(), world());
    let object = repo.join("_hosts").join(format!("{host}.json"));
    let instance = || -> String {
        std::fs::read(&object)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["instance"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let _da = Daemon::start_via(&a, &as_host(&host));
    wait_until(Duration::from_secs(30), "the first daemon's status", || {
        !instance().is_empty()
    });
    let first = instance();
    let _db = Daemon::start_via(&b, &as_host(&host));
    let key = format!("host_name_conflict:{host}");
    wait_until(
        Duration::from_secs(30),
        "the second daemon's conflict alert",
        || active_alerts(&b).contains(&key),
    );
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(instance(), first, "the first daemon's status stays its own");
    }
    assert!(!active_alerts(&a).contains(&key));
}
