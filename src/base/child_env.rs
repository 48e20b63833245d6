//! The environment a child process gets: an allow-list, never drctl's own.
//!
//! drctl's environment is where operators put secrets (`url_env`,
//! `AWS_SECRET_ACCESS_KEY`, SMTP passwords, webhook URLs): a child that
//! inherited it would show them to anyone who can read
//! `/proc/PID/environ` of pg_dump or of a health probe. Children get only
//! what a tool needs to run in the host's locale and time zone; libpq
//! connection variables are set explicitly by the caller (see
//! `pg::target`).

/// Variables passed through unchanged (plus every `LC_*`).
const KEEP: &[&str] = &[
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// Whether a variable of drctl's own environment may reach a child.
pub fn allowed(name: &str) -> bool {
    KEEP.contains(&name) || name.starts_with("LC_")
}

/// Replace `cmd`'s environment with the allowed part of ours; callers add
/// what the child needs on top.
pub fn restrict(cmd: &mut tokio::process::Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(allowed) {
            cmd.env(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_locale_path_and_home_pass() {
        for keep in ["PATH", "HOME", "LANG", "LC_ALL", "LC_TIME", "TZ"] {
            assert!(allowed(keep), "{keep}");
        }
        for drop in [
            "APP_DATABASE_URL",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "PGPASSWORD",
            "PGPASSFILE",
            "SMTP_PASSWORD",
            "SLACK_WEBHOOK_URL",
            "DRCTL_CONFIG",
            "LD_PRELOAD",
            "NOTIFY_SOCKET",
        ] {
            assert!(!allowed(drop), "{drop}");
        }
    }
}
