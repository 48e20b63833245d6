//! `drctl copy [--job JOB]... [--to REPO] [--since 7d|DATE] [--json]`:
//! backfill copies (a new offsite bucket, a copy that kept failing). Each
//! backup the destination's retention would keep and lacks is streamed
//! from the job's repository; a second run copies nothing.

use drctl::config::LoadedConfig;
use drctl::engine::copy;

#[derive(clap::Args)]
pub struct Args {
    /// Only this job (repeatable) [default: every job with copies]
    #[arg(long)]
    job: Vec<String>,
    /// Only this repository [default: each of the job's `copies`]; with
    /// --job, any repository other than the job's own
    #[arg(long)]
    to: Option<String>,
    /// Only backups started since: a duration back from now (7d) or a
    /// time (2026-11-01, 2026-11-01T02:00:00Z)
    #[arg(long, value_parser = parse_since)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long)]
    json: bool,
}

/// `7d` (back from now), `2026-11-01` (midnight UTC) or RFC 3339.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return chrono::Utc::now()
            .checked_sub_signed(d)
            .ok_or_else(|| format!("{s}: too far back"));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "{s}: expected a duration (7d), a date (2026-11-01) or a time (2026-11-01T02:00:00Z)"
    ))
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let jobs: Vec<String> = if a.job.is_empty() {
        cfg.config
            .jobs
            .iter()
            .filter(|(_, j)| match &a.to {
                Some(to) => j.copies().contains(to),
                None => !j.copies().is_empty(),
            })
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        for j in &a.job {
            let (_, jc) = cfg.job(j)?;
            jc.backup_repository(j)?;
            if a.to.is_none() && jc.copies().is_empty() {
                return Err(drctl::Error::Usage(format!(
                    "job {j} has no copies (set copies = [\"REPO\"] in [jobs.{j}], or give --to REPO)"
                ))
                .into());
            }
        }
        a.job.clone()
    };
    if jobs.is_empty() {
        return Err(drctl::Error::Usage(match &a.to {
            Some(to) => format!("no job copies its backups to {to} (copies = [\"{to}\"])"),
            None => "no job has copies (copies = [\"REPO\"] in a backup job)".into(),
        })
        .into());
    }
    if let Some(to) = &a.to {
        cfg.repository(to)?;
    }
    let state = drctl::services::state::State::open(&cfg.config.state_dir).await?;
    let mut reports = Vec::new();
    for j in &jobs {
        let _lock = copy::lock(cfg, j, true).await?;
        reports.extend(copy::sync_all(cfg, &state, j, a.to.as_deref(), a.since).await?);
    }
    super::deliver_now(cfg, &state).await;
    if a.json {
        println!(
            "{}",
            drctl::base::secret::redact(&serde_json::to_string_pretty(&reports)?)
        );
    } else {
        for r in &reports {
            let bytes: u64 = r.copied.iter().map(|c| c.bytes).sum();
            println!(
                "{} {} -> {}: copied {} ({}), already there {}, not kept by its retention {}, older than --since {}, failed {}",
                r.job,
                r.from,
                r.to,
                r.copied.len(),
                super::human_bytes(bytes),
                r.present,
                r.not_kept,
                r.too_old,
                r.failed.len()
            );
            for c in &r.copied {
                println!("  copied {}", c.id);
            }
            for (id, e) in &r.failed {
                println!("  FAILED {id}: {e}");
            }
        }
    }
    let failed: Vec<&copy::Report> = reports.iter().filter(|r| !r.failed.is_empty()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let n: usize = failed.iter().map(|r| r.failed.len()).sum();
    let message = format!("{n} backup(s) could not be copied; see above");
    // A damaged source backup is an integrity finding (exit 3).
    Err(if failed.iter().any(|r| !r.damaged.is_empty()) {
        drctl::Error::Integrity {
            artifact: "copy source".into(),
            message,
        }
    } else {
        drctl::Error::Other(message)
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let back = parse_since("7d").unwrap();
        let age = chrono::Utc::now() - back;
        assert!((age.num_hours() - 168).abs() <= 1, "{age}");
        assert_eq!(
            parse_since("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-11-01T02:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T01:00:00+00:00"
        );
        assert!(parse_since("last tuesday")
            .unwrap_err()
            .contains("expected"));
    }
}
