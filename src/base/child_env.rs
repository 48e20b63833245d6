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

/// The I/O scheduling class a child gets (ioprio_set(2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoPriority {
    /// Disk time only when no other process wants it.
    Idle,
    /// The normal class, at its lowest level (7).
    BestEffort,
}

/// How a child is to be scheduled: `nice` and I/O class, applied between
/// fork and exec (so the child, and only it, runs at them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Priority {
    /// setpriority(2) value, 0 to 19.
    pub nice: Option<i32>,
    /// ioprio_set(2) class.
    pub io: Option<IoPriority>,
}

impl Priority {
    /// Apply to the calling process. Only async-signal-safe calls: this
    /// runs in the forked child before exec.
    pub fn apply_to_self(self) -> std::io::Result<()> {
        if let Some(n) = self.nice {
            // SAFETY: setpriority on our own process; no memory is touched.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(io) = self.io {
            // linux/ioprio.h: class in the top bits, level in the low 13.
            const CLASS_SHIFT: i32 = 13;
            const WHO_PROCESS: i32 = 1;
            let value = match io {
                IoPriority::Idle => 3 << CLASS_SHIFT,
                IoPriority::BestEffort => (2 << CLASS_SHIFT) | 7,
            };
            // SAFETY: ioprio_set on our own process (who = 0).
            if unsafe { libc::syscall(libc::SYS_ioprio_set, WHO_PROCESS, 0, value) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
