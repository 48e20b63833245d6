//! This host's identity, as recorded in backup ids, manifests, leases, run
//! records and alerts. Its own module at the bottom of the layers: storage,
//! state and locks need it and must not depend on the backup engine.

/// This host's name (`gethostname`).
pub fn name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
