//! Named fault points for the fault suite: `DRCTL_FAULT_PAUSE=<point>` makes
//! the process announce the point on stderr and stop there until it is
//! killed, so a test can SIGKILL drctl at an exact step (between the two
//! halves of a restore's swap, say). Unset, a point costs one comparison.

use std::sync::OnceLock;

fn wanted() -> Option<&'static str> {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    WANTED
        .get_or_init(|| std::env::var("DRCTL_FAULT_PAUSE").ok())
        .as_deref()
}

/// Stop here forever if this is the point asked for.
pub async fn point(name: &str) {
    if wanted() == Some(name) {
        eprintln!("drctl: fault point {name} reached");
        std::future::pending::<()>().await;
    }
}
