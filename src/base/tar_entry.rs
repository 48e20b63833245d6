//! What a files archive may hold, entry by entry: the one rule the files
//! backup (which leaves out what a restore would refuse), the restore (which
//! checks the whole archive before writing) and `verify --deep` share. At
//! the bottom of the layers: the backup and restore engines both use it.

use std::path::Path;

/// What a files archive may hold, decided per entry before anything is
/// written: a relative path without `..`, and a regular file, directory or
/// link that stays inside the target. Anything else refuses the restore
/// (an archive drctl wrote never holds it, so it means tampering or a bug).
pub fn check_entry(
    path: &Path,
    kind: tar::EntryType,
    link: Option<&Path>,
) -> std::result::Result<(), String> {
    use std::path::Component;
    let shown = path.display();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{shown:?} contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{shown:?} is an absolute path"))
            }
        }
    }
    match kind {
        tar::EntryType::Regular
        | tar::EntryType::Continuous
        | tar::EntryType::Directory
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink
        | tar::EntryType::XHeader
        | tar::EntryType::XGlobalHeader => Ok(()),
        tar::EntryType::Symlink => {
            let target = link.ok_or_else(|| format!("{shown:?}: symlink without a target"))?;
            // Resolve lexically from the link's own directory.
            let mut at = depth.saturating_sub(1) as isize;
            for c in target.components() {
                match c {
                    Component::Normal(_) => at += 1,
                    Component::CurDir => {}
                    Component::ParentDir => at -= 1,
                    Component::RootDir | Component::Prefix(_) => {
                        return Err(format!(
                            "{shown:?} links to the absolute path {:?}",
                            target.display()
                        ))
                    }
                }
                if at < 0 {
                    return Err(format!(
                        "{shown:?} links out of the target ({:?})",
                        target.display()
                    ));
                }
            }
            Ok(())
        }
        tar::EntryType::Link => {
            let target = link.ok_or_else(|| format!("{shown:?}: hard link without a target"))?;
            check_entry(target, tar::EntryType::Regular, None)
                .map_err(|e| format!("{shown:?} is a hard link to {e}"))
        }
        other => Err(format!(
            "{shown:?} is a {other:?} entry (devices, FIFOs and sockets are not restored)"
        )),
    }
}
