//! `drctl backups [JOB] [--json]`: what the repository holds, read from the
//! repository itself (works on a new host with no local state).

use drctl::base::ids::JobName;
use drctl::config::LoadedConfig;
use drctl::services::repository::Repository;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Only this job
    job: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    job: String,
    id: String,
    repository: String,
    finished_at: String,
    stored_bytes: u64,
    raw_bytes: u64,
    duration_seconds: f64,
    /// `ok`, `unreadable` (its manifest cannot be read: not restorable) or
    /// `clock_skew` (its host's clock ran ahead: never taken as latest).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    /// The operator's label (`drctl run --label`).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    /// Pinned until then (`drctl run --keep-for`).
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_until: Option<String>,
}

pub async fn exec(cfg: &LoadedConfig, a: Args) -> anyhow::Result<()> {
    let names: Vec<String> = match &a.job {
        Some(j) => vec![cfg.job(j)?.0.to_string()],
        None => cfg
            .config
            .jobs
            .iter()
            .filter(|(_, j)| j.repository().is_some())
            .map(|(n, _)| n.clone())
            .collect(),
    };
    let mut rows = Vec::new();
    // One broken repository hides nothing of the others: listed, then the
    // exit status says which job could not be.
    let mut failed = Vec::new();
    for name in &names {
        match job_rows(cfg, name, &mut rows).await {
            Ok(()) => {}
            Err(e) if names.len() == 1 => return Err(e.into()),
            Err(e) => {
                eprintln!(
                    "drctl: error: {name}: cannot list: {}",
                    drctl::base::secret::redact(&e.to_string())
                );
                failed.push(e);
            }
        }
    }
    print(rows, a.json)?;
    match failed.into_iter().next() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn job_rows(cfg: &LoadedConfig, name: &str, rows: &mut Vec<Row>) -> drctl::Result<()> {
    let (job, jc) = cfg.job(name)?;
    let Some(repo_name) = jc.repository() else {
        return Ok(());
    };
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    for b in repo.list_backups(&job).await? {
        let m = match repo.read_manifest(&job, &b.id).await {
            Ok(m) => m,
            // One damaged manifest must not hide every other backup.
            Err(e @ (drctl::Error::Integrity { .. } | drctl::Error::NotFound(_))) => {
                let text = drctl::base::secret::redact(&e.to_string());
                eprintln!(
                    "drctl: warning: backup {} of {job} is not restorable: {text}",
                    b.id
                );
                rows.push(Row {
                    job: JobName::to_string(&job),
                    id: b.id.to_string(),
                    repository: repo_name.to_owned(),
                    finished_at: String::new(),
                    stored_bytes: 0,
                    raw_bytes: 0,
                    duration_seconds: 0.0,
                    status: "unreadable",
                    problem: Some(text),
                    label: None,
                    keep_until: None,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let skew = b.clock_skew();
        rows.push(Row {
            status: if skew.is_some() { "clock_skew" } else { "ok" },
            problem: skew.map(|d| {
                format!(
                    "written by {} whose clock ran {} ahead of the store's",
                    m.host,
                    humantime::format_duration(d.to_std().unwrap_or_default())
                )
            }),
            job: JobName::to_string(&job),
            id: m.id.to_string(),
            repository: repo_name.to_owned(),
            finished_at: m
                .finished_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            stored_bytes: m.stored_bytes(),
            raw_bytes: m.raw_bytes(),
            duration_seconds: (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
            label: m.label.as_ref().map(ToString::to_string),
            keep_until: m
                .keep_until
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        });
    }
    Ok(())
}

fn print(rows: Vec<Row>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no committed backups");
        return Ok(());
    }
    let mut t = super::table::new(&["JOB", "ID", "FINISHED", "SIZE", "DURATION", "STATUS"]);
    super::table::right(&mut t, &[3, 4]);
    for r in rows {
        t.add_row(vec![
            r.job.clone(),
            r.id.clone(),
            r.finished_at.clone(),
            super::human_bytes(r.stored_bytes),
            format!("{:.1}s", r.duration_seconds),
            format!(
                "{}{}{}",
                r.status,
                marks(r.label.as_deref(), r.keep_until.as_deref()),
                r.problem.map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        ]);
    }
    println!("{}", super::table::render(&t));
    Ok(())
}

/// ` label pre-migration, pinned until 2027-01-01T02:00:00Z`, or nothing.
fn marks(label: Option<&str>, keep_until: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(l) = label {
        out.push_str(&format!(" label {l}"));
    }
    if let Some(t) = keep_until {
        out.push_str(&format!(
            "{} pinned until {t}",
            if label.is_some() { "," } else { "" }
        ));
    }
    out
}
