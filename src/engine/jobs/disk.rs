//! The `disk` kind: R1/R4's daily `df -h`, against thresholds, for space and
//! inodes. Used space is counted as df counts it: blocks not free over blocks
//! available to unprivileged users plus those used, so the root reserve
//! shows as used, which is when services start failing.

use crate::base::error::Result;
use crate::config::DiskJob;
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
use serde_json::json;

/// Usage of one mount.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Share of the space in use, 0 to 1 (as df rounds it: blocks reserved
    /// for root count as used).
    pub used_ratio: f64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in the filesystem.
    pub size_bytes: u64,
    /// None on filesystems without a fixed inode table (btrfs reports 0).
    pub inodes_used_ratio: Option<f64>,
}

/// Space and inode usage of the filesystem holding `path` (statvfs).
pub fn usage(path: &std::path::Path) -> std::result::Result<Usage, String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs: {e}"))?;
    let frag = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    let free = s.blocks_free() as u64;
    let avail = s.blocks_available() as u64;
    let used = blocks.saturating_sub(free);
    let denom = used + avail;
    let used_ratio = if denom == 0 {
        0.0
    } else {
        used as f64 / denom as f64
    };
    let files = s.files() as u64;
    let inodes_used_ratio = (files > 0).then(|| {
        let ffree = s.files_free() as u64;
        files.saturating_sub(ffree) as f64 / files as f64
    });
    Ok(Usage {
        used_ratio,
        used_bytes: used * frag,
        size_bytes: denom * frag,
        inodes_used_ratio,
    })
}

/// Grade every mount of the job against its thresholds.
pub async fn run(ctx: &CheckCtx<'_>, job: &DiskJob) -> Result<Report> {
    let mut report = Report::new(ctx.job, "disk");
    let mut details = Vec::new();
    for m in &job.mounts {
        let mount = m.display().to_string();
        let path = m.clone();
        let u = tokio::task::spawn_blocking(move || usage(&path))
            .await
            .map_err(|e| crate::Error::task(format!("reading the usage of {mount}"), e))?;
        let u = match u {
            Ok(u) => u,
            Err(e) => {
                report.findings.push(Finding::new(
                    &mount,
                    Level::Critical,
                    format!("cannot read usage of {mount}: {e}"),
                ));
                details.push(json!({ "mount": mount, "error": e }));
                continue;
            }
        };
        let pct = u.used_ratio * 100.0;
        let space = Level::of_rising(pct, job.warn, job.critical);
        let mut level = space;
        let mut message = format!(
            "{pct:.1}% used ({} of {}; warning at {}%, critical at {}%)",
            bytesize::ByteSize(u.used_bytes),
            bytesize::ByteSize(u.size_bytes),
            job.warn,
            job.critical
        );
        report.samples.push(Sample::gauge(
            "drctl_disk_used_ratio",
            &[("mount", &mount)],
            u.used_ratio,
        ));
        if let Some(ir) = u.inodes_used_ratio {
            let (iw, ic) = (
                job.inodes_warn.unwrap_or(job.warn),
                job.inodes_critical.unwrap_or(job.critical),
            );
            let inodes = Level::of_rising(ir * 100.0, iw, ic);
            if inodes > Level::Ok {
                message.push_str(&format!(
                    "; inodes {:.1}% used (warning at {iw}%, critical at {ic}%)",
                    ir * 100.0
                ));
            }
            level = level.max(inodes);
            report.samples.push(Sample::gauge(
                "drctl_disk_inodes_used_ratio",
                &[("mount", &mount)],
                ir,
            ));
        }
        details.push(json!({
            "mount": mount,
            "used_ratio": u.used_ratio,
            "used_bytes": u.used_bytes,
            "size_bytes": u.size_bytes,
            "inodes_used_ratio": u.inodes_used_ratio,
            "result": level.as_str(),
        }));
        report.findings.push(Finding::new(&mount, level, message));
    }
    report.summary = report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.subject, f.message))
        .collect::<Vec<_>>()
        .join("; ");
    report.details = json!({ "mounts": details });
    Ok(report)
}
