//! This host's identity, as recorded in backup ids, manifests, leases, run
//! records and alerts. Its own module at the bottom of the layers: storage,
//! state and locks need it and must not depend on the backup engine.

/// This host's name (`gethostname`).
pub fn name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Which daemon installation this is, beyond its host name: a random id
/// kept in `state_dir/instance-id` (made once), so two daemons that share
/// a host name (a cloned VM, a copied config) are told apart in the
/// repository. `None` when the state directory cannot hold it.
pub fn instance_id(state_dir: &std::path::Path) -> Option<String> {
    let path = state_dir.join("instance-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(id.to_owned());
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    crate::base::private_fs::dir_all(state_dir).ok()?;
    let tmp = state_dir.join(format!(".instance-id.{}", std::process::id()));
    {
        use std::io::Write;
        // 0600 like everything in the state directory.
        let _ = std::fs::remove_file(&tmp);
        let mut f = crate::base::private_fs::open_rw(&tmp).ok()?;
        f.write_all(format!("{id}\n").as_bytes()).ok()?;
    }
    // Two processes starting at once: the first link wins, and the other
    // reads the winner's back.
    if std::fs::hard_link(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return std::fs::read_to_string(&path)
            .ok()
            .map(|t| t.trim().to_owned());
    }
    let _ = std::fs::remove_file(&tmp);
    Some(id)
}

/// The machine's `/etc/machine-id`, hashed (the id itself is meant to stay
/// on the machine): a cloned state directory on another machine still
/// differs. Empty when there is none.
pub fn machine_tag() -> String {
    use sha2::Digest;
    match std::fs::read_to_string("/etc/machine-id") {
        Ok(id) if !id.trim().is_empty() => {
            hex::encode(&sha2::Sha256::digest(format!("drctl:{}", id.trim()).as_bytes())[..8])
        }
        _ => String::new(),
    }
}
