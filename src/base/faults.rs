//! Named fault points for the fault suite: `DRCTL_FAULT_PAUSE=<point>` makes
//! the process announce the point on stderr and stop there until it is
//! killed, so a test can SIGKILL drctl at an exact step (between the two
//! halves of a restore's swap, say); `<point>:<ms>` waits that long and goes
//! on (a window for the test to change the world: fill a disk). Unset, a
//! point costs one comparison.

use std::sync::OnceLock;

fn wanted() -> Option<(&'static str, Option<u64>)> {
    static WANTED: OnceLock<Option<(String, Option<u64>)>> = OnceLock::new();
    WANTED
        .get_or_init(|| {
            let v = std::env::var("DRCTL_FAULT_PAUSE").ok()?;
            Some(match v.rsplit_once(':') {
                Some((name, ms)) => (name.to_owned(), ms.parse().ok()),
                None => (v, None),
            })
        })
        .as_ref()
        .map(|(n, ms)| (n.as_str(), *ms))
}

/// Stop here (forever, or for the configured time) if this is the point
/// asked for.
pub async fn point(name: &str) {
    match wanted() {
        Some((n, None)) if n == name => {
            eprintln!("drctl: fault point {name} reached");
            std::future::pending::<()>().await;
        }
        Some((n, Some(ms))) if n == name => {
            eprintln!("drctl: fault point {name} reached; going on in {ms} ms");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        _ => {}
    }
}
