//! What maintenance and check jobs (vacuum, reindex, prune_files,
//! prune_images, disk, cert_expiry, health) report, and what happens to it.
//!
//! Each kind returns a [`Report`]: a one-line summary, a verdict per subject
//! ([`Finding`]), details for the run record, and metric samples. `run.rs`
//! records it, turns every finding that is not ok into an alert condition
//! (`<alert kind>:<job>:<subject>`, resolved when the subject is ok again
//! or gone), and stores the samples for `/metrics`.

pub mod metrics;

use serde::{Deserialize, Serialize};

/// The verdict on one subject; a run's verdict is its worst finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Attention soon (exit 7 from `drctl run`).
    Warning,
    /// Attention now (exit 8 from `drctl run`).
    Critical,
}

impl Level {
    /// The level as shown and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// `value` against `warn`/`critical` thresholds where higher is worse.
    pub fn of_rising(value: f64, warn: f64, critical: f64) -> Level {
        if value >= critical {
            Level::Critical
        } else if value >= warn {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// One subject's verdict: a mount, a certificate, a health check, a table.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What the finding is about, stable across runs (it keys the alert).
    pub subject: String,
    /// How bad it is.
    pub level: Level,
    /// What was measured, in words an operator reads at 3 a.m.
    pub message: String,
}

impl Finding {
    /// A finding about `subject`.
    pub fn new(subject: impl Into<String>, level: Level, message: impl Into<String>) -> Self {
        Finding {
            subject: subject.into(),
            level,
            message: message.into(),
        }
    }
}

/// A metric value a run produced (see `metrics.rs`).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric family name.
    pub name: &'static str,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
    /// Counters accumulate across runs; gauges are replaced by each run.
    pub counter: bool,
}

impl Sample {
    /// A gauge: the last value counts.
    pub fn gauge(name: &'static str, labels: &[(&str, &str)], value: f64) -> Self {
        Sample {
            name,
            labels: owned(labels),
            value,
            counter: false,
        }
    }
    /// A counter: values add up across runs.
    pub fn counter(name: &'static str, labels: &[(&str, &str)], value: f64) -> Self {
        Sample {
            name,
            labels: owned(labels),
            value,
            counter: true,
        }
    }
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What one run of a maintenance or check kind did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The job that ran.
    pub job: String,
    /// Its kind (`vacuum`, `health`, ...).
    pub kind: &'static str,
    /// One line: "3 tables vacuumed, 120000 dead tuples removed".
    pub summary: String,
    /// One per subject: what was found and how bad it is.
    pub findings: Vec<Finding>,
    /// Kind-specific records (per table, per file, per image...).
    pub details: serde_json::Value,
    /// Bytes freed or processed, for the run record.
    pub bytes: Option<u64>,
    /// Metric samples the run stores for `/metrics`.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl Report {
    /// An empty report of job `job` of kind `kind`.
    pub fn new(job: &str, kind: &'static str) -> Self {
        Report {
            job: job.to_owned(),
            kind,
            summary: String::new(),
            findings: Vec::new(),
            details: serde_json::Value::Null,
            bytes: None,
            samples: Vec::new(),
        }
    }

    /// The worst finding's level (ok when there are none).
    pub fn level(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// Findings that are not ok, worst first.
    pub fn problems(&self) -> Vec<&Finding> {
        let mut p: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.level > Level::Ok)
            .collect();
        p.sort_by_key(|f| std::cmp::Reverse(f.level));
        p
    }

    /// "critical: / 93% used (critical at 90%); warning: ..." for errors and exits.
    pub fn describe_problems(&self) -> String {
        self.problems()
            .iter()
            .map(|f| format!("{}: {}: {}", f.level.as_str(), f.subject, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The report as `--json` prints it and the run record keeps it.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("result".into(), self.level().as_str().into());
        }
        v
    }
}

/// The alert kind each job kind raises its findings under.
pub fn alert_kind(job_kind: &str) -> &'static str {
    match job_kind {
        "disk" => "disk_usage",
        "cert_expiry" => "cert_expiry",
        "health" => "health_down",
        "vacuum" => "vacuum",
        "reindex" => "reindex",
        "prune_files" => "prune_files",
        "prune_images" => "prune_images",
        _ => "check",
    }
}
