//! The `prune_images` kind: R4's weekly `docker image prune -f --filter
//! until=168h`, through the Docker Engine API (bollard), plus what the
//! one-liner cannot do: tagged images no container uses are removed too,
//! except the newest `keep_last` tags of each repository (rollback targets).
//!
//! Images any container uses (running or stopped) are never touched.
//! Tagged images are removed tag by tag, so the engine deletes the image
//! only once its last tag is gone. Bytes reclaimed are the engine's own
//! layer accounting (`/system/df`) before and after, so layers shared with
//! kept images are not counted as freed.

use crate::checks::{Finding, Level, Report, Sample};
use crate::config::PruneImagesJob;
use crate::error::{Error, Result};
use crate::jobs::CheckCtx;
use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, RemoveImageOptions};
use bollard::Docker;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Serialize)]
struct Removal {
    /// A tag (`app:1.2`) or an image id (dangling).
    reference: String,
    image: String,
    created: String,
    size: i64,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Kept {
    reference: String,
    reason: String,
}

fn connect(job: &PruneImagesJob) -> Result<Docker> {
    let timeout = job.timeout.as_secs().max(1);
    let d = match &job.socket {
        Some(p) => Docker::connect_with_unix(
            &p.display().to_string(),
            timeout,
            bollard::API_DEFAULT_VERSION,
        ),
        None => Docker::connect_with_local_defaults()
            .map(|d| d.with_timeout(std::time::Duration::from_secs(timeout))),
    };
    d.map_err(|e| Error::Other(format!("cannot reach the Docker engine: {e}")))
}

fn docker_err(what: &str) -> impl Fn(bollard::errors::Error) -> Error + '_ {
    move |e| Error::Other(format!("Docker engine: {what}: {e}"))
}

/// `registry:5000/app:1.2` -> `registry:5000/app`.
pub fn repository_of(tag: &str) -> &str {
    match tag.rsplit_once(':') {
        Some((repo, t)) if !t.contains('/') => repo,
        _ => tag,
    }
}

async fn layers_size(d: &Docker) -> Option<i64> {
    d.df(None).await.ok().and_then(|r| r.layers_size)
}

pub async fn run(ctx: &CheckCtx<'_>, job: &PruneImagesJob) -> Result<Report> {
    let docker = connect(job)?
        .negotiate_version()
        .await
        .map_err(docker_err("negotiating the API version"))?;
    let images = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            ..Default::default()
        }))
        .await
        .map_err(docker_err("listing images"))?;
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(docker_err("listing containers"))?;
    let used: HashSet<String> = containers
        .iter()
        .filter_map(|c| c.image_id.clone())
        .collect();
    let now = chrono::Utc::now().timestamp();
    let old = |created: i64| now - created > job.until.as_secs() as i64;
    let when = |created: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(created, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    };
    let short = |id: &str| {
        id.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };

    // The newest keep_last tags of each repository, used or not.
    let mut by_repo: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for img in &images {
        for tag in img.repo_tags.iter().filter(|t| *t != "<none>:<none>") {
            by_repo
                .entry(repository_of(tag))
                .or_default()
                .push((img.created, tag));
        }
    }
    let mut newest: HashSet<&str> = HashSet::new();
    for tags in by_repo.values_mut() {
        tags.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(a.1)));
        newest.extend(tags.iter().take(job.keep_last).map(|(_, t)| *t));
    }

    let mut plan: Vec<Removal> = Vec::new();
    let mut kept: Vec<Kept> = Vec::new();
    let mut sizes_of_removed: i64 = 0;
    for img in &images {
        let tags: Vec<&String> = img
            .repo_tags
            .iter()
            .filter(|t| *t != "<none>:<none>")
            .collect();
        let id = short(&img.id);
        if used.contains(&img.id) {
            kept.push(Kept {
                reference: tags.first().map(|t| t.to_string()).unwrap_or(id),
                reason: "used by a container".into(),
            });
            continue;
        }
        if !old(img.created) {
            kept.push(Kept {
                reference: tags.first().map(|t| t.to_string()).unwrap_or(id),
                reason: format!(
                    "newer than until ({})",
                    humantime::format_duration(job.until)
                ),
            });
            continue;
        }
        if tags.is_empty() {
            if job.dangling {
                sizes_of_removed += img.size;
                plan.push(Removal {
                    reference: img.id.clone(),
                    image: id,
                    created: when(img.created),
                    size: img.size,
                    reason: "dangling".into(),
                    error: None,
                });
            }
            continue;
        }
        let mut all_go = true;
        for tag in tags {
            if newest.contains(tag.as_str()) {
                all_go = false;
                kept.push(Kept {
                    reference: tag.clone(),
                    reason: format!(
                        "among the newest {} of {}",
                        job.keep_last,
                        repository_of(tag)
                    ),
                });
            } else if job.unused {
                plan.push(Removal {
                    reference: tag.clone(),
                    image: id.clone(),
                    created: when(img.created),
                    size: img.size,
                    reason: "unused".into(),
                    error: None,
                });
            } else {
                all_go = false;
            }
        }
        if all_go && job.unused {
            sizes_of_removed += img.size;
        }
    }

    let before = if job.dry_run {
        None
    } else {
        layers_size(&docker).await
    };
    let mut errors = 0;
    if !job.dry_run {
        for r in &mut plan {
            if ctx.cancel.is_cancelled() {
                break;
            }
            let opts = RemoveImageOptions {
                force: false,
                noprune: false,
            };
            if let Err(e) = docker.remove_image(&r.reference, Some(opts), None).await {
                errors += 1;
                r.error = Some(e.to_string());
            }
        }
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted(format!(
            "prune_images job {} cancelled",
            ctx.job
        )));
    }
    let after = if job.dry_run {
        None
    } else {
        layers_size(&docker).await
    };
    let freed = match (before, after) {
        (Some(b), Some(a)) => (b - a).max(0) as u64,
        _ => sizes_of_removed.max(0) as u64,
    };
    let mut report = Report::new(ctx.job, "prune_images");
    let removed = plan.iter().filter(|r| r.error.is_none()).count();
    report.summary = format!(
        "{} {removed} image references ({} dangling), {} {}; {} kept",
        if job.dry_run {
            "would remove"
        } else {
            "removed"
        },
        plan.iter()
            .filter(|r| r.reason == "dangling" && r.error.is_none())
            .count(),
        if job.dry_run {
            "would reclaim about"
        } else {
            "reclaimed"
        },
        bytesize::ByteSize(freed),
        kept.len()
    );
    if errors > 0 {
        let first = plan
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_default();
        report.findings.push(Finding::new(
            "errors",
            Level::Warning,
            format!("{errors} images could not be removed: {first}"),
        ));
    }
    if !job.dry_run {
        report.bytes = Some(freed);
        report.samples.push(Sample::counter(
            "drctl_prune_bytes_freed",
            &[("job", ctx.job)],
            freed as f64,
        ));
    }
    report.details = json!({
        "dry_run": job.dry_run,
        "removed": plan,
        "kept": kept,
        "bytes_reclaimed": freed,
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repositories_of_tags() {
        assert_eq!(super::repository_of("app:1.2"), "app");
        assert_eq!(
            super::repository_of("registry:5000/app:1.2"),
            "registry:5000/app"
        );
        assert_eq!(
            super::repository_of("registry:5000/app"),
            "registry:5000/app"
        );
    }
}
