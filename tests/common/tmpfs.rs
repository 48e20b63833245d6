//! A small tmpfs for the disk-full tests.

use super::scratch_dir;
use std::path::PathBuf;

/// A tmpfs of `bytes` (root only: CI runs as root), unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(bytes: u64) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the disk-full tests mount a tmpfs: run them as root (CI does)"
        );
        let path = scratch_dir("drctl-tmpfs-");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0777"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", path.display());
        Tmpfs { path }
    }

    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.path).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Leave exactly `free` bytes (a multiple of the page size) free.
    pub fn fill_leaving(&self, free: u64) {
        let have = self.free();
        assert!(have >= free, "{have} < {free}");
        std::fs::write(self.path.join("filler"), vec![0u8; (have - free) as usize]).unwrap();
        assert!(self.free() <= free, "{} > {free}", self.free());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
