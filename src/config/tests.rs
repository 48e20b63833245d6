use super::*;
use std::io::Write;

/// The config from the spine issue, exactly as written there.
const ISSUE_CONFIG: &str = r#"
state_dir = "/var/lib/drctl"            # SQLite state and locks
schedules_dir = "SCHEDULES"             # optional, more [jobs.*] in *.toml

[repositories.local]
type = "local"
path = "/var/backups/drctl"

[repositories.offsite]
type = "s3"
bucket = "acme-backups"
prefix = "db1"                          # optional
region = "eu-west-1"
endpoint = "http://127.0.0.1:9000"      # optional, S3-compatible stores
path_style = true                       # optional
# credentials: the standard AWS chain (env, profile, instance role)

[jobs.appdb]
type = "postgres"
url_env = "APP_DATABASE_URL"            # or url = "...", or url_file = "/path"
schedule = "0 0 2 * * *"
repository = "offsite"
compression = "zstd"                    # zstd (default) | gzip | none

[jobs.configs]
type = "files"
paths = ["/opt/app/.env", "/opt/app/docker-compose.yml"]
schedule = "0 30 2 * * *"
repository = "local"
"#;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    p
}

fn load_str(body: &str) -> (tempfile::TempDir, Result<LoadedConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let sched = dir.path().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    let body = body.replace("SCHEDULES", sched.to_str().unwrap());
    let p = write(dir.path(), "drctl.toml", &body);
    let r = LoadedConfig::load(Some(&p));
    (dir, r)
}

fn config_err(r: Result<LoadedConfig>) -> (String, String, String) {
    match r {
        Err(Error::Config { file, key, message }) => (file, key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn issue_config_loads_as_written() {
    let (_d, r) = load_str(ISSUE_CONFIG);
    let c = r.unwrap();
    assert_eq!(c.config.jobs.len(), 2);
    match &c.config.repositories["offsite"] {
        RepositoryConfig::S3(s) => {
            assert_eq!(s.bucket, "acme-backups");
            assert_eq!(s.prefix.as_deref(), Some("db1"));
            assert!(s.path_style);
        }
        other => panic!("{other:?}"),
    }
    match &c.config.jobs["configs"].kind {
        Kind::Files(f) => assert_eq!(f.paths.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.config.jobs["appdb"].repository(), Some("offsite"));
}

#[test]
fn job_files_merge_and_duplicates_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let sched = dir.path().join("s");
    std::fs::create_dir(&sched).unwrap();
    let main = write(
        dir.path(),
        "main.toml",
        &format!(
            "schedules_dir = {sched:?}\n[repositories.r]\ntype = \"local\"\npath = \"/tmp/x\"\n"
        ),
    );
    write(
        &sched,
        "a.toml",
        "[jobs.one]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\nrepository = \"r\"\n",
    );
    let c = LoadedConfig::load(Some(&main)).unwrap();
    assert!(c.config.jobs.contains_key("one"));
    assert_eq!(c.files.len(), 2);

    write(
        &sched,
        "b.toml",
        "[jobs.one]\ntype = \"files\"\npaths = [\"/etc/hosts\"]\nrepository = \"r\"\n",
    );
    let (file, key, msg) = config_err(LoadedConfig::load(Some(&main)));
    assert!(file.ends_with("b.toml"), "{file}");
    assert_eq!(key, "jobs.one");
    assert!(msg.contains("a.toml"), "{msg}");

    std::fs::remove_file(sched.join("b.toml")).unwrap();
    write(
        &sched,
        "c.toml",
        "[repositories.sneaky]\ntype = \"local\"\npath = \"/\"\n",
    );
    let (file, key, msg) = config_err(LoadedConfig::load(Some(&main)));
    assert!(file.ends_with("c.toml"), "{file}");
    assert_eq!(key, "repositories");
    assert!(
        msg.contains("unknown key") && msg.contains("[jobs.NAME]"),
        "{key}: {msg}"
    );
}

#[test]
fn unknown_key_names_file_key_and_expectation() {
    let (_d, r) =
        load_str(&ISSUE_CONFIG.replace("path_style = true", "path_style = true\nbukket = \"x\""));
    let (file, key, msg) = config_err(r);
    assert!(file.ends_with("drctl.toml"), "{file}");
    assert!(key.starts_with("repositories.offsite"), "{key}");
    assert!(
        msg.contains("unknown field") && msg.contains("bukket"),
        "{msg}"
    );
    assert!(msg.contains("expected"), "{msg}");
}

#[test]
fn wrong_type_names_key() {
    let (_d, r) = load_str(&ISSUE_CONFIG.replace("path_style = true", "path_style = \"yes\""));
    let (_f, key, msg) = config_err(r);
    assert!(key.contains("offsite"), "{key}");
    assert!(
        msg.contains("invalid type") && msg.contains("bool"),
        "{msg}"
    );
}

#[test]
fn unknown_job_type_is_named() {
    let (_d, r) = load_str(&ISSUE_CONFIG.replace("type = \"files\"", "type = \"filez\""));
    let (_f, key, msg) = config_err(r);
    assert!(key.contains("configs"), "{key}");
    assert!(msg.contains("filez") && msg.contains("postgres"), "{msg}");
}

#[test]
fn missing_repository_is_named_with_choices() {
    let (_d, r) =
        load_str(&ISSUE_CONFIG.replace("repository = \"offsite\"", "repository = \"nowhere\""));
    let (file, key, msg) = config_err(r);
    assert!(file.ends_with("drctl.toml"), "{file}");
    assert_eq!(key, "jobs.appdb.repository");
    assert!(
        msg.contains("nowhere") && msg.contains("local, offsite"),
        "{msg}"
    );
}

#[test]
fn missing_job_is_named_with_choices() {
    let (_d, r) = load_str(ISSUE_CONFIG);
    let c = r.unwrap();
    match c.job("nope") {
        Err(Error::Config { key, message, .. }) => {
            assert_eq!(key, "jobs.nope");
            assert!(message.contains("appdb, configs"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn url_sources_are_exclusive() {
    let (_d, r) = load_str(&ISSUE_CONFIG.replace(
        "url_env = \"APP_DATABASE_URL\"",
        "url_env = \"APP_DATABASE_URL\"\nurl = \"postgres://u:p@h/d\"",
    ));
    let (_f, key, msg) = config_err(r);
    assert_eq!(key, "jobs.appdb.url");
    assert!(msg.contains("exactly one"), "{msg}");
}

#[test]
fn missing_file_is_a_config_error() {
    let (file, _k, msg) = config_err(LoadedConfig::load(Some(Path::new(
        "/nonexistent/drctl.toml",
    ))));
    assert_eq!(file, "/nonexistent/drctl.toml");
    assert!(msg.contains("not found"));
}

#[test]
fn check_output_masks_inline_passwords() {
    let (_d, r) = load_str(&ISSUE_CONFIG.replace(
        "url_env = \"APP_DATABASE_URL\"",
        "url = \"postgres://app:s3cr3t-pw@db:5432/app\"",
    ));
    let c = r.unwrap();
    let out = render_masked(&c);
    assert!(!out.contains("s3cr3t-pw"), "{out}");
    assert!(out.contains("postgres://app:***@db:5432/app"), "{out}");
}

#[test]
fn embedded_defaults_are_valid() {
    let c: Config = Figment::from(Toml::string(EMBEDDED_DEFAULTS))
        .extract()
        .unwrap();
    assert!(c.jobs.contains_key("db"));
}

#[test]
fn the_repositorys_example_job_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let schedules = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let main = write(
        dir.path(),
        "drctl.toml",
        &format!(
            "schedules_dir = {schedules:?}\n[repositories.offsite]\ntype = \"s3\"\nbucket = \"b\"\n[repositories.local]\ntype = \"local\"\npath = \"/var/backups/drctl\"\n"
        ),
    );
    let c = LoadedConfig::load(Some(&main)).unwrap();
    assert!(c.config.jobs.contains_key("appdb"));
    assert!(c.config.jobs.contains_key("configs"));
    assert!(c.config.jobs.contains_key("verify-nightly"));
    assert_eq!(c.config.jobs["appdb"].schedule(), Some("0 0 2 * * *"));
    assert!(c.config.jobs["appdb"].retention().is_some());
}

#[test]
fn the_repositorys_example_drills_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let main = write(
        dir.path(),
        "drctl.toml",
        &format!(
            "schedules_dir = {:?}\ndrills_dir = {:?}\n[repositories.offsite]\ntype = \"s3\"\nbucket = \"b\"\n[repositories.local]\ntype = \"local\"\npath = \"/var/backups/drctl\"\n",
            root.join("schedules"),
            root.join("restore-drills")
        ),
    );
    let c = LoadedConfig::load(Some(&main)).unwrap();
    let d = &c.config.drills["appdb-weekly"];
    assert_eq!(d.job, "appdb");
    assert_eq!(d.checks.len(), 2);
    assert_eq!(d.rto, Some(std::time::Duration::from_secs(1800)));
    assert!(c.config.drills["appdb-ephemeral"].target.ephemeral);
    assert_eq!(
        c.config.drills["skillregistry-pitr-weekly"].at.as_deref(),
        Some("random")
    );
}

#[test]
fn a_drill_defined_twice_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let drills = dir.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let body = "[drills.x]\njob = \"a\"\ntarget = { ephemeral = true }\n";
    write(&drills, "1.toml", body);
    write(&drills, "2.toml", body);
    let main = write(
        dir.path(),
        "drctl.toml",
        &format!("drills_dir = {drills:?}\n[repositories.r]\ntype = \"local\"\npath = \"/tmp/r\"\n[jobs.a]\ntype = \"postgres\"\nurl_env = \"X\"\nrepository = \"r\"\n"),
    );
    let (file, key, msg) = config_err(LoadedConfig::load(Some(&main)));
    assert!(file.ends_with("2.toml"), "{file}");
    assert_eq!(key, "drills.x");
    assert!(msg.contains("1.toml"), "{msg}");
}

/// The alert config from the alerts issue, exactly as written there.
const ALERTS_ISSUE_CONFIG: &str = r#"
[repositories.local]
type = "local"
path = "/var/backups/drctl"

[jobs.appdb]
type = "postgres"
url_env = "APP_DATABASE_URL"
repository = "local"

[alerts.channels.mail]
type = "email"
host = "smtp.example.com"
port = 587
security = "starttls"              # starttls | tls | none
username = "drctl"
password_env = "SMTP_PASSWORD"     # or password_file
from = "drctl@example.com"
to = ["oncall@example.com"]

[alerts.channels.ops]
type = "slack"
webhook_url_env = "SLACK_WEBHOOK_URL"

[alerts.channels.hooks]
type = "webhook"
url = "https://hooks.example.com/drctl"
secret_env = "WEBHOOK_SECRET"

[alerts.routes]
critical = ["mail", "ops", "hooks"]
warning = ["ops"]
"#;

#[test]
fn alerts_issue_config_loads_as_written() {
    let (_d, r) = load_str(ALERTS_ISSUE_CONFIG);
    let cfg = r.unwrap();
    let a = &cfg.config.alerts;
    assert_eq!(a.channels.len(), 3);
    assert_eq!(a.routes.critical, ["mail", "ops", "hooks"]);
    assert_eq!(a.repeat_interval, std::time::Duration::from_secs(4 * 3600));
    assert_eq!(a.max_age, std::time::Duration::from_secs(24 * 3600));
    assert!(a.for_.is_zero());
    match &a.channels["mail"] {
        ChannelConfig::Email(e) => {
            assert_eq!(e.security, SmtpSecurity::Starttls);
            assert_eq!(e.port, Some(587));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn alert_routes_name_unknown_and_ping_channels() {
    let body = format!(
        "{ALERTS_ISSUE_CONFIG}info = [\"pager\"]\n[alerts.channels.hc]\ntype = \"ping\"\nurl = \"https://hc-ping.com/x/{{job}}\"\n[jobs.appdb.alerts]\nwarning = [\"hc\"]\n"
    );
    let (_d, r) = load_str(&body);
    let (file, key, msg) = config_err(r);
    assert!(file.ends_with("drctl.toml"), "{file}");
    assert_eq!(key, "alerts.routes.info", "{msg}");
    assert!(
        msg.contains("no channel named \"pager\"") && msg.contains("hooks, mail, ops"),
        "{msg}"
    );
    assert!(
        msg.contains("jobs.appdb.alerts.warning") || msg.contains("ping channel"),
        "{msg}"
    );
}

#[test]
fn email_channel_errors_name_the_key() {
    let body = ALERTS_ISSUE_CONFIG.replace("to = [\"oncall@example.com\"]", "to = []");
    let (_d, r) = load_str(&body);
    let (_, key, msg) = config_err(r);
    assert_eq!(key, "alerts.channels.mail.to");
    assert!(msg.contains("at least one recipient"), "{msg}");

    let body = ALERTS_ISSUE_CONFIG.replace("security = \"starttls\"", "security = \"ssl\"");
    let (_d, r) = load_str(&body);
    let (_, key, msg) = config_err(r);
    assert!(key.starts_with("alerts.channels"), "{key}");
    assert!(
        msg.contains("starttls") && msg.contains("tls") && msg.contains("none"),
        "{msg}"
    );

    let body = ALERTS_ISSUE_CONFIG.replace("username = \"drctl\"\n", "");
    let (_d, r) = load_str(&body);
    let (_, key, _) = config_err(r);
    assert_eq!(key, "alerts.channels.mail.username");
}

#[test]
fn check_output_masks_inline_slack_urls_and_secrets() {
    let body = ALERTS_ISSUE_CONFIG
        .replace(
            "webhook_url_env = \"SLACK_WEBHOOK_URL\"",
            "webhook_url = \"https://hooks.slack.com/services/T0/B0/XyZsecret\"",
        )
        .replace(
            "secret_env = \"WEBHOOK_SECRET\"",
            "secret = \"hunter22-whsec\"",
        );
    let (_d, r) = load_str(&body);
    let out = render_masked(&r.unwrap());
    assert!(
        !out.contains("XyZsecret") && !out.contains("hunter22-whsec"),
        "{out}"
    );
}

#[test]
fn check_output_masks_health_check_credentials() {
    let (_d, r) = load_str(
        "[jobs.h]\ntype = \"health\"\n[[jobs.h.checks]]\ntype = \"http\"\nurl = \"https://ops:pw-in-url-77@api.example.com/health\"\nheaders = { Authorization = \"Bearer tok-88\", Accept = \"application/json\" }\n",
    );
    let out = render_masked(&r.unwrap());
    assert!(
        !out.contains("pw-in-url-77") && !out.contains("tok-88"),
        "{out}"
    );
    assert!(out.contains("application/json"), "{out}");
}

#[test]
fn config_errors_never_quote_a_value_or_a_line() {
    let parse = "TOML parse error at line 6, column 21\n  |\n6 | password = \"S3cret\" x\n  |                     ^\nexpected newline, `#`\n";
    assert_eq!(
        scrub(parse),
        "TOML parse error at line 6, column 21: expected newline, `#`"
    );
    assert_eq!(
        scrub("invalid type: found string \"S3cret \\\" x\", expected u32"),
        "invalid type: found string (value not shown), expected u32"
    );
    assert_eq!(
        scrub("invalid type: found signed int `12345678`, expected a string"),
        "invalid type: found signed int (value not shown), expected a string"
    );
    // Field names are not values.
    let unknown = "unknown field: found `kind`, expected `one of `schedule``";
    assert_eq!(scrub(unknown), unknown);
    let huge = format!(
        "invalid type: found string \"{}\", expected u32",
        "x".repeat(10 << 20)
    );
    assert!(scrub(&huge).len() < 700);
    assert!(scrub(&"é".repeat(1000)).ends_with('…'));
}

#[test]
fn every_problem_of_a_file_is_reported_not_only_the_first() {
    let (_d, r) = load_str(
        r#"
[repositories.local]
type = "local"
path = "/var/backups/drctl"

[jobs.vac]
type = "vacuum"
url = "postgres://u@h/db"
dead_ratio = 2.0
analyze_ratio = -1.0
window = "25:00-26:00"
schedule = "0 0 2 * *"
timezone = "Mars/Olympus"

[jobs.certs]
type = "cert_expiry"
endpoints = ["no-port", "example.com:443"]
warn = "1d"
critical = "2d"

[drills.d]
job = "vac"
jobs = 0
target = { ephemeral = true }
checks = [{ sql = "SELECT 1", expect = ">= x" }]
"#,
    );
    let (_, key, message) = config_err(r);
    // The first problem heads the error; each other one is an "also:" line.
    let message = format!("key `{key}`: {message}");
    for (k, what) in [
        (
            "drills.d.job",
            "expected a postgres, postgres_physical or redis backup job",
        ),
        ("jobs.vac.dead_ratio", "between 0 and 1"),
        ("jobs.vac.analyze_ratio", "between 0 and 1"),
        ("jobs.vac.window", "HH:MM-HH:MM"),
        ("jobs.vac.timezone", "IANA"),
        ("jobs.certs.endpoints", "host:port"),
        ("jobs.certs.critical", "critical <= warn"),
        ("drills.d.jobs", "at least 1"),
        ("drills.d.checks.expect", "needs a number"),
    ] {
        let line = message
            .lines()
            .find(|l| l.contains(&format!("key `{k}`")))
            .unwrap_or_else(|| panic!("no problem reported for {k}:\n{message}"));
        assert!(line.contains(what), "{k}: {line}");
    }
}

#[test]
fn restore_hooks_are_argv_lists_with_a_timeout() {
    let body = |hooks: &str| {
        format!(
            "[repositories.local]\ntype = \"local\"\npath = \"/var/backups/drctl\"\n[jobs.app]\ntype = \"postgres\"\nurl_env = \"X\"\nrepository = \"local\"\n[jobs.app.restore]\n{hooks}\n"
        )
    };
    let (_d, r) = load_str(&body(
        "before = [[\"systemctl\", \"stop\", \"app\"]]\nafter = [[\"systemctl\", \"start\", \"app\"]]\ntimeout = \"2m\"",
    ));
    let c = r.unwrap();
    let h = c.config.jobs["app"]
        .storage()
        .unwrap()
        .restore
        .clone()
        .unwrap();
    assert_eq!(h.before, vec![vec!["systemctl", "stop", "app"]]);
    assert_eq!(h.timeout, std::time::Duration::from_secs(120));
    let (_d, r) = load_str(&body("before = [[]]\nafter = [[\"\"]]\ntimeout = \"0s\""));
    let (_, key, message) = config_err(r);
    assert_eq!(key, "jobs.app.restore.before[0]", "{message}");
    assert!(message.contains("argv list"), "{message}");
    assert!(
        message.contains("jobs.app.restore.after[0]")
            && message.contains("jobs.app.restore.timeout"),
        "{message}"
    );
    let (_d, r) = load_str(&body("before = \"systemctl stop app\""));
    let (_, key, _) = config_err(r);
    assert!(key.starts_with("jobs.app"), "{key}");
}

#[test]
fn health_checks_load_as_one_variant_per_type_and_render_back_the_same_keys() {
    let (_d, r) = load_str(
        "[jobs.h]\ntype = \"health\"\n\
         [[jobs.h.checks]]\ntype = \"http\"\nurl = \"http://127.0.0.1:1/h\"\nmethod = \"head\"\nexpect_status = 204\n\
         [[jobs.h.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:6379\"\n\
         [[jobs.h.checks]]\ntype = \"command\"\ncommand = [\"true\"]\nexpect_exit = 1\n\
         [[jobs.h.checks]]\ntype = \"redis\"\nurl_env = \"REDIS_URL\"\n",
    );
    let c = r.unwrap();
    let Kind::Health(h) = &c.config.jobs["h"].kind else {
        panic!("not a health job")
    };
    match &h.checks[0].probe {
        Probe::Http(p) => {
            assert_eq!(
                p.method.as_ref().unwrap().get().unwrap().0,
                reqwest::Method::HEAD
            );
            assert_eq!(p.expect_status, Some(204));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&h.checks[1].probe, Probe::Tcp { address } if address == "127.0.0.1:6379"));
    assert!(
        matches!(&h.checks[2].probe, Probe::Command { argv, expect_exit: 1 } if argv == &["true"])
    );
    assert!(
        matches!(&h.checks[3].probe, Probe::Redis { url } if url.url_env.as_deref() == Some("REDIS_URL"))
    );
    // `config check` prints the keys as written, nothing of another type.
    let out = render_masked(&c);
    for want in [
        "method = \"head\"",
        "address = \"127.0.0.1:6379\"",
        "expect_exit = 1",
        "url_env = \"REDIS_URL\"",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(!out.contains("headers"), "{out}");
}

#[test]
fn keys_of_another_check_type_are_each_named_with_the_type() {
    let (_d, r) = load_str(
        "[jobs.h]\ntype = \"health\"\n\
         [[jobs.h.checks]]\ntype = \"postgres\"\nurl = \"postgres://db/app\"\naddress = \"db:5432\"\nmethod = \"GET\"\n\
         [[jobs.h.checks]]\ntype = \"http\"\nurl = \"http://x/\"\nmethod = \"NOT A METHOD\"\n",
    );
    let text = r.unwrap_err().to_string();
    for want in [
        "jobs.h.checks[0].address",
        "jobs.h.checks[0].method",
        "not a key of postgres checks",
        "jobs.h.checks[1].method",
        "expected an HTTP method",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}
