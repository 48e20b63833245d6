//! `drctl backups [JOB] [--json]`: what the repositories hold (a job's own
//! and its copies), read from the repositories themselves (works on a new
//! host with no local state), with where each backup exists.

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
    /// Where it was first found (the job's own repository when it is there).
    repository: String,
    /// Every repository where its manifest reads (the job's own, then copies).
    repositories: Vec<String>,
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
    let mut copies = false;
    for name in &names {
        let repos = cfg.job(name)?.1.repositories();
        copies |= repos.len() > 1;
        let mut merged: Vec<Row> = Vec::new();
        for repo in &repos {
            match job_rows(cfg, name, repo, &mut merged).await {
                Ok(()) => {}
                Err(e) if names.len() == 1 && repos.len() == 1 => return Err(e.into()),
                Err(e) => {
                    eprintln!(
                        "drctl: error: {name}: cannot list repository {repo}: {}",
                        drctl::base::secret::redact(&e.to_string())
                    );
                    failed.push(e);
                }
            }
        }
        merged.sort_by(|a, b| a.id.cmp(&b.id));
        rows.extend(merged);
    }
    print(rows, a.json, copies)?;
    match failed.into_iter().next() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Add what `repo_name` holds of job `name` to `rows`: a backup already
/// listed from another repository gains this one in `repositories`.
async fn job_rows(
    cfg: &LoadedConfig,
    name: &str,
    repo_name: &str,
    rows: &mut Vec<Row>,
) -> drctl::Result<()> {
    let (job, _) = cfg.job(name)?;
    let repo = Repository::open(repo_name, cfg.repository(repo_name)?).await?;
    for b in repo.list_backups(&job).await? {
        let existing = rows.iter().position(|r| r.id == b.id.as_str());
        let m = match repo.read_manifest(&job, &b.id).await {
            Ok(m) => m,
            // One damaged manifest must not hide every other backup.
            Err(e @ (drctl::Error::Integrity { .. } | drctl::Error::NotFound(_))) => {
                let text = drctl::base::secret::redact(&e.to_string());
                eprintln!(
                    "drctl: warning: backup {} of {job} in repository {repo_name} is not restorable: {text}",
                    b.id
                );
                let problem = format!("unreadable in {repo_name}: {text}");
                match existing {
                    Some(i) => {
                        let r = &mut rows[i];
                        r.problem = Some(match r.problem.take() {
                            Some(p) => format!("{p}; {problem}"),
                            None => problem,
                        });
                    }
                    None => rows.push(Row {
                        job: JobName::to_string(&job),
                        id: b.id.to_string(),
                        repository: repo_name.to_owned(),
                        repositories: Vec::new(),
                        finished_at: String::new(),
                        stored_bytes: 0,
                        raw_bytes: 0,
                        duration_seconds: 0.0,
                        status: "unreadable",
                        problem: Some(problem),
                        label: None,
                        keep_until: None,
                    }),
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(i) = existing {
            let r = &mut rows[i];
            r.repositories.push(repo_name.to_owned());
            if r.status == "unreadable" {
                // Readable here: restorable from this repository.
                let mut fresh = row(&job, repo_name, &b, &m);
                fresh.repositories = std::mem::take(&mut r.repositories);
                fresh.problem = r.problem.take();
                *r = fresh;
            }
            continue;
        }
        rows.push(row(&job, repo_name, &b, &m));
    }
    Ok(())
}

fn row(
    job: &JobName,
    repo_name: &str,
    b: &drctl::services::repository::BackupRef,
    m: &drctl::base::manifest::Manifest,
) -> Row {
    let skew = b.clock_skew();
    Row {
        status: if skew.is_some() { "clock_skew" } else { "ok" },
        problem: skew.map(|d| {
            format!(
                "written by {} whose clock ran {} ahead of the store's",
                m.host,
                humantime::format_duration(d.to_std().unwrap_or_default())
            )
        }),
        job: JobName::to_string(job),
        id: m.id.to_string(),
        repository: repo_name.to_owned(),
        repositories: vec![repo_name.to_owned()],
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
    }
}

fn print(rows: Vec<Row>, json: bool, copies: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no committed backups");
        return Ok(());
    }
    // The WHERE column appears once a job has copies.
    let mut head = vec!["JOB", "ID", "FINISHED", "SIZE", "DURATION", "STATUS"];
    if copies {
        head.push("WHERE");
    }
    let mut t = super::table::new(&head);
    super::table::right(&mut t, &[3, 4]);
    for r in rows {
        let mut cells = vec![
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
        ];
        if copies {
            cells.push(r.repositories.join(","));
        }
        t.add_row(cells);
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
