//! Where a glob pattern starts (`prune_files` jobs refuse `/`).

use std::path::PathBuf;

/// The literal directory a glob starts from: `/opt/app/logs/**/*.log` ->
/// `/opt/app/logs`.
pub fn root_of(pattern: &str) -> PathBuf {
    let mut root = PathBuf::from("/");
    let parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in parts.iter().enumerate() {
        let is_last = i + 1 == parts.len();
        if is_last || c.contains(['*', '?', '[', '{']) {
            break;
        }
        root.push(c);
    }
    root
}
