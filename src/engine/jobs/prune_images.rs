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

use crate::base::error::{Error, Result};
use crate::config::PruneImagesJob;
use crate::engine::jobs::CheckCtx;
use crate::services::checks::{Finding, Level, Report, Sample};
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
    crate::services::docker::connect(job.socket.as_deref(), job.timeout)
}

use crate::services::docker::err as docker_err;

/// `registry:5000/app:1.2` -> `registry:5000/app`.
pub fn repository_of(tag: &str) -> &str {
    match tag.rsplit_once(':') {
        Some((repo, t)) if !t.contains('/') => repo,
        _ => tag,
    }
}

/// The run's report: what was (or would be) removed and kept, and the bytes
/// the engine says were reclaimed.
fn report(
    name: &str,
    dry_run: bool,
    plan: Vec<Removal>,
    kept: Vec<Kept>,
    freed: u64,
    errors: usize,
) -> Report {
    let mut report = Report::new(name, "prune_images");
    let removed = plan.iter().filter(|r| r.error.is_none()).count();
    report.summary = format!(
        "{} {removed} image references ({} dangling), {} {}; {} kept",
        if dry_run { "would remove" } else { "removed" },
        plan.iter()
            .filter(|r| r.reason == "dangling" && r.error.is_none())
            .count(),
        if dry_run {
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
    if !dry_run {
        report.bytes = Some(freed);
        report.samples.push(Sample::counter(
            "drctl_prune_bytes_freed",
            &[("job", name)],
            freed as f64,
        ));
    }
    report.details = json!({
        "dry_run": dry_run,
        "removed": plan,
        "kept": kept,
        "bytes_reclaimed": freed,
    });
    report
}

/// An image as the decision needs it (tags without `<none>:<none>`).
#[derive(Debug, Clone)]
struct Image {
    id: String,
    created: i64,
    size: i64,
    tags: Vec<String>,
}

/// The job's rules.
struct Policy {
    until_secs: i64,
    until: std::time::Duration,
    keep_last: usize,
    dangling: bool,
    unused: bool,
}

impl Policy {
    fn of(job: &PruneImagesJob) -> Policy {
        Policy {
            until_secs: job.until.as_secs() as i64,
            until: job.until,
            keep_last: job.keep_last,
            dangling: job.dangling,
            unused: job.unused,
        }
    }
}

/// What to remove and what to keep, and why.
#[derive(Debug)]
struct Plan {
    removals: Vec<Removal>,
    kept: Vec<Kept>,
    /// Sizes of images that go whole (the estimate a dry run reports).
    sizes_of_removed: i64,
}

/// Decide from the listing alone (pure): images a container uses and images
/// newer than `until` stay; dangling ones go (with `dangling`); tagged ones
/// go tag by tag (with `unused`) except the newest `keep_last` tags of each
/// repository.
fn decide(images: &[Image], used: &HashSet<String>, p: &Policy, now: i64) -> Plan {
    let old = |created: i64| now - created > p.until_secs;
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
    for img in images {
        for tag in &img.tags {
            by_repo
                .entry(repository_of(tag))
                .or_default()
                .push((img.created, tag));
        }
    }
    let mut newest: HashSet<&str> = HashSet::new();
    for tags in by_repo.values_mut() {
        tags.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(a.1)));
        newest.extend(tags.iter().take(p.keep_last).map(|(_, t)| *t));
    }
    let mut plan = Plan {
        removals: Vec::new(),
        kept: Vec::new(),
        sizes_of_removed: 0,
    };
    for img in images {
        let id = short(&img.id);
        let name = || img.tags.first().cloned().unwrap_or_else(|| id.clone());
        if used.contains(&img.id) {
            plan.kept.push(Kept {
                reference: name(),
                reason: "used by a container".into(),
            });
            continue;
        }
        if !old(img.created) {
            plan.kept.push(Kept {
                reference: name(),
                reason: format!("newer than until ({})", humantime::format_duration(p.until)),
            });
            continue;
        }
        if img.tags.is_empty() {
            if p.dangling {
                plan.sizes_of_removed += img.size;
                plan.removals.push(Removal {
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
        for tag in &img.tags {
            if newest.contains(tag.as_str()) {
                all_go = false;
                plan.kept.push(Kept {
                    reference: tag.clone(),
                    reason: format!("among the newest {} of {}", p.keep_last, repository_of(tag)),
                });
            } else if p.unused {
                plan.removals.push(Removal {
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
        if all_go && p.unused {
            plan.sizes_of_removed += img.size;
        }
    }
    plan
}

async fn layers_size(d: &Docker) -> Option<i64> {
    d.df(None).await.ok().and_then(|r| r.layers_size)
}

/// Remove the images the job's rules select from the Docker engine.
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
    let listed: Vec<Image> = images
        .iter()
        .map(|i| Image {
            id: i.id.clone(),
            created: i.created,
            size: i.size,
            tags: i
                .repo_tags
                .iter()
                .filter(|t| *t != "<none>:<none>")
                .cloned()
                .collect(),
        })
        .collect();
    let Plan {
        removals: mut plan,
        kept,
        sizes_of_removed,
    } = decide(
        &listed,
        &used,
        &Policy::of(job),
        chrono::Utc::now().timestamp(),
    );

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
    Ok(report(ctx.job, job.dry_run, plan, kept, freed, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn img(id: &str, age_days: i64, tags: &[&str]) -> Image {
        Image {
            id: format!("sha256:{id}"),
            created: 100 * DAY - age_days * DAY,
            size: 10,
            tags: tags.iter().map(std::string::ToString::to_string).collect(),
        }
    }
    fn policy(keep_last: usize, unused: bool) -> Policy {
        Policy {
            until_secs: 7 * DAY,
            until: std::time::Duration::from_secs(7 * DAY as u64),
            keep_last,
            dangling: true,
            unused,
        }
    }
    fn removed(p: &Plan) -> Vec<&str> {
        p.removals.iter().map(|r| r.reference.as_str()).collect()
    }

    #[test]
    fn dangling_unused_used_recent_and_rollback_targets() {
        let images = [
            img("dangling", 30, &[]),
            img("young", 1, &[]),
            img("running", 60, &["app:1.0"]),
            img("v11", 50, &["app:1.1"]),
            img("v12", 40, &["app:1.2"]),
            img("v13", 20, &["app:1.3", "app:latest"]),
            img("other", 30, &["db:15"]),
        ];
        let used: HashSet<String> = ["sha256:running".to_owned()].into();
        let p = decide(&images, &used, &policy(2, true), 100 * DAY);
        // keep_last = 2 per repository: app:1.3 and app:latest (same image,
        // the newest); app:1.2 and 1.1 go; app:1.0 is used; db:15 is the
        // newest of its repository.
        assert_eq!(removed(&p), vec!["sha256:dangling", "app:1.1", "app:1.2"]);
        let reasons: Vec<(&str, &str)> = p
            .kept
            .iter()
            .map(|k| {
                (
                    k.reference.as_str(),
                    k.reason.split(' ').next().unwrap_or(""),
                )
            })
            .collect();
        assert!(reasons.contains(&("young", "newer")), "{reasons:?}");
        assert!(reasons.contains(&("app:1.0", "used")), "{reasons:?}");
        assert!(reasons.contains(&("app:1.3", "among")), "{reasons:?}");
        assert!(reasons.contains(&("db:15", "among")), "{reasons:?}");
        assert_eq!(p.sizes_of_removed, 30);
    }

    #[test]
    fn without_unused_only_dangling_images_go() {
        let images = [
            img("dangling", 30, &[]),
            img("v1", 50, &["app:1"]),
            img("v2", 40, &["app:2"]),
        ];
        let p = decide(&images, &HashSet::new(), &policy(1, false), 100 * DAY);
        assert_eq!(removed(&p), vec!["sha256:dangling"]);
        assert_eq!(p.sizes_of_removed, 10);
    }

    #[test]
    fn an_image_goes_whole_only_when_every_tag_goes() {
        // One image with two tags, one of them the rollback target (tags of
        // one image tie on time; the greater name counts as newer).
        let images = [
            img("a", 30, &["app:2", "app:old"]),
            img("b", 50, &["app:1"]),
        ];
        let p = decide(&images, &HashSet::new(), &policy(1, true), 100 * DAY);
        assert_eq!(removed(&p), vec!["app:2", "app:1"]);
        assert_eq!(p.sizes_of_removed, 10, "only b is freed");
    }

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
