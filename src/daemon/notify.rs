//! systemd notifications (`Type=notify`): READY, STATUS, WATCHDOG, STOPPING.
//! Each call is a no-op outside systemd (no `$NOTIFY_SOCKET`).

use sd_notify::NotifyState;
use std::time::Duration;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Half the watchdog interval systemd set (`WatchdogSec=`), if any.
/// As libsystemd's sd_watchdog_enabled(3): `WATCHDOG_USEC` enables it, and
/// `WATCHDOG_PID`, when present, must name this process. (The sd-notify
/// crate also requires `WATCHDOG_PID` to be present, which systemd does not.)
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID").ok().map(|p| p.parse::<u32>()) {
        None => {}
        Some(Ok(pid)) if pid == std::process::id() => {}
        Some(_) => return None,
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
