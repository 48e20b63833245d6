//! Giving back the code pages only startup needed.
//!
//! Starting touches much of the binary (configuration, clients, the
//! scheduler, the first pass of every worker), and the kernel maps 64 KiB
//! around each page fault; those pages stay in the process's RSS until
//! memory runs short, although the idle daemon runs a small loop. A few
//! seconds after start, and every five minutes, the daemon drops its
//! mappings of the binary's read-only, never-written segments: the pages
//! stay in the page cache, what runs next maps them back with a minor
//! fault, and the RSS shows the idle working set rather than the history
//! of startup.
//!
//! `MADV_DONTNEED` on a private file mapping re-reads from the file, so it
//! is dropped only where the file is the whole content: a mapping of the
//! executable itself, not writable, holding no private (copy-on-write)
//! page. The RELRO segment the loader wrote holds such pages and is left
//! alone, as is anything whose counts cannot be read.

use std::time::Duration;

/// A mapped file: device (major, minor) and inode.
pub type FileId = (i32, i32, u64);

/// A memory mapping, as the decision needs it.
#[derive(Debug, Clone)]
pub struct Region {
    /// Start and end addresses.
    pub range: (u64, u64),
    /// The mapped file's device (major, minor) and inode.
    pub file: FileId,
    /// Writable now.
    pub writable: bool,
    /// A shared mapping (writes would reach the file).
    pub shared: bool,
    /// Private pages in it (`Anonymous:` of smaps); none when unknown.
    pub anonymous_bytes: Option<u64>,
    /// Its resident bytes (`Rss:`).
    pub resident_bytes: u64,
}

/// The ranges whose pages can be dropped without losing anything (pure):
/// mappings of `exe`, private, not writable, with no private page.
pub fn droppable(regions: &[Region], exe: FileId) -> Vec<(u64, u64)> {
    regions
        .iter()
        .filter(|r| r.file == exe && exe.2 != 0)
        .filter(|r| !r.writable && !r.shared)
        .filter(|r| r.anonymous_bytes == Some(0))
        .map(|r| r.range)
        .collect()
}

/// What a trim did: bytes of the executable's read-only mappings resident
/// before and after.
#[derive(Debug, Clone, Copy)]
pub struct Trimmed {
    /// Resident before.
    pub before: u64,
    /// Resident after.
    pub after: u64,
}

/// This process's mappings and the identity of its executable.
fn regions() -> Result<(Vec<Region>, FileId), String> {
    use std::os::unix::fs::MetadataExt;
    let me = procfs::process::Process::myself().map_err(|e| e.to_string())?;
    // The running file, even if an upgrade replaced it on disk.
    let meta = std::fs::metadata("/proc/self/exe").map_err(|e| e.to_string())?;
    let dev = meta.dev();
    let exe = (
        i32::try_from(libc::major(dev)).unwrap_or(-1),
        i32::try_from(libc::minor(dev)).unwrap_or(-1),
        meta.ino(),
    );
    let maps = me.smaps().map_err(|e| e.to_string())?;
    let regions = maps
        .iter()
        .map(|m| {
            use procfs::process::MMPermissions;
            Region {
                range: m.address,
                file: (m.dev.0, m.dev.1, m.inode),
                writable: m.perms.contains(MMPermissions::WRITE),
                shared: m.perms.contains(MMPermissions::SHARED),
                anonymous_bytes: m.extension.map.get("Anonymous").copied(),
                resident_bytes: m.extension.map.get("Rss").copied().unwrap_or(0),
            }
        })
        .collect();
    Ok((regions, exe))
}

fn resident(regions: &[Region], ranges: &[(u64, u64)]) -> u64 {
    regions
        .iter()
        .filter(|r| ranges.contains(&r.range))
        .map(|r| r.resident_bytes)
        .sum()
}

/// Drop the droppable mappings of this process's executable.
pub fn trim() -> Result<Trimmed, String> {
    let (before, exe) = regions()?;
    let ranges = droppable(&before, exe);
    for &(start, end) in &ranges {
        let len = usize::try_from(end - start).map_err(|e| e.to_string())?;
        // SAFETY: the range is a whole mapping of the executable, private
        // and read-only with no private page (checked just above from
        // smaps); MADV_DONTNEED there only unmaps pages whose content is
        // the file's, which the next access maps again. Nothing in the
        // range is freed or written.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    let (after, _) = regions()?;
    Ok(Trimmed {
        before: resident(&before, &ranges),
        after: resident(&after, &ranges),
    })
}

/// Trims a few seconds after start (once the workers made their first
/// pass), then every five minutes, until the daemon stops.
pub async fn worker(stopping: tokio_util::sync::CancellationToken) {
    let mut wait = Duration::from_secs(3);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopping.cancelled() => return,
        }
        match tokio::task::spawn_blocking(trim).await {
            Ok(Ok(t)) => tracing::debug!(
                resident_before = t.before,
                resident_after = t.after,
                "dropped the mappings of the binary's read-only pages (they stay in the page cache)"
            ),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot trim the binary's mapped pages"),
            Err(e) => tracing::debug!(error = %e, "the trim task failed"),
        }
        wait = Duration::from_secs(300);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(file: FileId, writable: bool, anon: Option<u64>) -> Region {
        Region {
            range: (0x1000, 0x2000),
            file,
            writable,
            shared: false,
            anonymous_bytes: anon,
            resident_bytes: 4096,
        }
    }

    #[test]
    fn only_read_only_mappings_of_the_executable_without_private_pages() {
        let exe = (8, 1, 42);
        let ok = region(exe, false, Some(0));
        assert_eq!(
            droppable(std::slice::from_ref(&ok), exe),
            vec![(0x1000, 0x2000)]
        );
        // RELRO: written by the loader, private pages inside.
        assert!(droppable(&[region(exe, false, Some(4096))], exe).is_empty());
        // Counts unknown: left alone.
        assert!(droppable(&[region(exe, false, None)], exe).is_empty());
        // Writable data, another file, a shared mapping.
        assert!(droppable(&[region(exe, true, Some(0))], exe).is_empty());
        assert!(droppable(&[region((8, 1, 43), false, Some(0))], exe).is_empty());
        let mut shared = ok;
        shared.shared = true;
        assert!(droppable(&[shared], exe).is_empty());
        // No inode (anonymous memory) never matches.
        assert!(droppable(&[region((0, 0, 0), false, Some(0))], (0, 0, 0)).is_empty());
    }
}
