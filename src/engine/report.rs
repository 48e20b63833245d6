//! The DR drill report: every drill and backup job over a window, latest
//! drill result and RTO against target, RPO compliance side by side, a table
//! of runs, and in HTML an inline SVG chart of restore time per drill with
//! the RTO as a line. Self-contained: no scripts, no external assets, inline
//! styles only, so it renders in a browser and in mail clients (those that
//! drop SVG still get every number in the tables).

use crate::base::error::Result;
use crate::config::LoadedConfig;
use crate::engine::drill::DrillOutcome;
use crate::engine::drill::DrillRecord;
use crate::services::state::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// One drill over the report's period.
#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    /// The drill.
    pub drill: String,
    /// The job it restores.
    pub job: String,
    /// Its RTO target.
    pub rto_seconds: Option<f64>,
    /// Runs in the period.
    pub runs: usize,
    /// Runs that passed.
    pub passed: usize,
    /// Runs that restored but took longer than the RTO.
    pub over_rto: usize,
    /// Runs that failed.
    pub failed: usize,
    /// The newest run.
    pub latest: Option<DrillRecord>,
    /// Runs in the window, oldest first.
    pub history: Vec<DrillRecord>,
}

/// One backup job over the report's period.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The job.
    pub job: String,
    /// Its RPO target.
    pub rpo_seconds: Option<f64>,
    /// RPO compliance over the period.
    pub rpo: Option<crate::engine::rpo::Window>,
    /// RPO status now.
    pub rpo_status: Option<crate::engine::rpo::Status>,
    /// Drills of this job that passed in the window (over-RTO included).
    pub drills_passed: usize,
}

/// A restore an operator ran (not a drill), against the job's RTO.
#[derive(Debug, Clone, Serialize)]
pub struct RealRestore {
    /// What the journal recorded.
    #[serde(flatten)]
    pub record: crate::engine::restore::journal::RestoreRecord,
    /// The job's `rto` (else its drill's).
    pub rto_seconds: Option<f64>,
    /// `within`, `over`, or `-` (no RTO, or it did not finish).
    pub rto_verdict: &'static str,
}

/// How a restore's measured time compares with the RTO (pure).
pub fn rto_verdict(outcome: &str, total: Option<f64>, rto: Option<f64>) -> &'static str {
    match (outcome, total, rto) {
        ("done", Some(t), Some(r)) if t <= r => "within",
        ("done", Some(_), Some(_)) => "over",
        _ => "-",
    }
}

impl JobSummary {
    /// Compliance, violations and worst gap as printed ("-" without an RPO).
    fn window_cells(&self) -> (String, String, String) {
        match &self.rpo {
            Some(w) => (
                format!("{:.2}%", w.compliance * 100.0),
                w.violations.to_string(),
                opt_dur(w.worst_gap_seconds),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        }
    }
}

/// A DR report: drills and RPO compliance over a period.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// Start of the period.
    pub from: DateTime<Utc>,
    /// End of the period.
    pub to: DateTime<Utc>,
    /// The host it describes.
    pub host: String,
    /// Every drill.
    pub drills: Vec<DrillSummary>,
    /// Every backup job.
    pub jobs: Vec<JobSummary>,
    /// Restores (and undos) operators ran in the period, newest first:
    /// the RTO measured when it counted.
    pub real_restores: Vec<RealRestore>,
    /// What the reader should know (a job never drilled, ...).
    pub notes: Vec<String>,
    /// Every host publishing into the repositories (`drill report
    /// --fleet`), with its drills: the report covers the whole fleet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fleet: Vec<crate::engine::fleet::HostView>,
}

/// The fleet section's header (one row per host and drill).
const FLEET_HEADERS: [&str; 10] = [
    "host",
    "state",
    "seen",
    "drill",
    "job",
    "latest",
    "restore time",
    "RTO",
    "30 days: passed / over RTO / failed",
    "backup",
];

/// The fleet section as plain cells, one row per host and drill (a host
/// without drills gets one row saying so) (pure).
pub fn fleet_rows(hosts: &[crate::engine::fleet::HostView]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for h in hosts {
        let seen = format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(h.age_seconds.unsigned_abs()))
        );
        let head = [h.host.clone(), h.state.to_owned(), seen];
        if h.status.drills.is_empty() {
            let mut row = head.to_vec();
            row.extend(["no drill".into()]);
            row.resize(FLEET_HEADERS.len(), "-".into());
            rows.push(row);
        }
        for d in &h.status.drills {
            let mut row = head.to_vec();
            row.extend([
                d.drill.clone(),
                d.job.clone(),
                match (&d.last_outcome, &d.last_finished_at) {
                    (Some(o), Some(t)) => format!("{o} ({})", day(t)),
                    _ => "not run in 30 days".into(),
                },
                opt_dur(d.last_total_seconds),
                opt_dur(d.rto_seconds),
                format!("{} / {} / {}", d.passed_30d, d.over_rto_30d, d.failed_30d),
                d.last_backup_id.clone().unwrap_or_else(|| "-".into()),
            ]);
            rows.push(row);
        }
    }
    rows
}

impl Report {
    /// "2 drills: 1 passed, 1 failed; RPO 99.2% ..." for subjects and Slack.
    pub fn headline(&self) -> String {
        let failing: Vec<&str> = self
            .drills
            .iter()
            .filter(|d| {
                d.latest
                    .as_ref()
                    .is_some_and(|l| l.outcome == DrillOutcome::Failed)
            })
            .map(|d| d.drill.as_str())
            .collect();
        let over: Vec<&str> = self
            .drills
            .iter()
            .filter(|d| {
                d.latest
                    .as_ref()
                    .is_some_and(|l| l.outcome == DrillOutcome::OverRto)
            })
            .map(|d| d.drill.as_str())
            .collect();
        let mut s = format!("{} drill(s)", self.drills.len());
        if failing.is_empty() && over.is_empty() {
            s.push_str(", all passing");
        }
        if !failing.is_empty() {
            s.push_str(&format!(", FAILING: {}", failing.join(", ")));
        }
        if !over.is_empty() {
            s.push_str(&format!(", over RTO: {}", over.join(", ")));
        }
        let worst = self
            .jobs
            .iter()
            .filter_map(|j| j.rpo.as_ref().map(|w| (w.compliance, j.job.as_str())))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((c, job)) = worst {
            s.push_str(&format!(
                "; lowest RPO compliance {:.1}% ({job})",
                c * 100.0
            ));
        }
        if !self.fleet.is_empty() {
            let not_ok: Vec<String> = self
                .fleet
                .iter()
                .filter(|h| h.state != "ok")
                .map(|h| format!("{} {}", h.host, h.state))
                .collect();
            s.push_str(&format!("; fleet of {} host(s)", self.fleet.len()));
            if !not_ok.is_empty() {
                s.push_str(&format!(": {}", not_ok.join(", ")));
            }
        }
        s
    }
}

/// Gather the report for `[now - since, now]`. RPO is evaluated against
/// the repository first, so the figures are current even without a daemon.
pub async fn build(cfg: &LoadedConfig, state: &State, since: Duration) -> Result<Report> {
    let to = Utc::now();
    let from =
        to - chrono::Duration::from_std(since).unwrap_or_else(|_| chrono::Duration::days(90));
    let runs = crate::engine::drill::list(state, None, Some(&from.to_rfc3339()), 100_000).await?;
    let mut notes = Vec::new();
    let mut drills = Vec::new();
    for (name, d) in &cfg.config.drills {
        let mut history: Vec<DrillRecord> = runs
            .iter()
            .filter(|r| &r.drill == name && r.outcome != DrillOutcome::Running)
            .cloned()
            .collect();
        history.reverse();
        let count = |o: DrillOutcome| history.iter().filter(|r| r.outcome == o).count();
        drills.push(DrillSummary {
            drill: name.clone(),
            job: d.job.clone(),
            rto_seconds: d.rto.map(|r| r.as_secs_f64()),
            runs: history.len(),
            passed: count(DrillOutcome::Passed),
            over_rto: count(DrillOutcome::OverRto),
            failed: count(DrillOutcome::Failed) + count(DrillOutcome::Interrupted),
            latest: history.last().cloned(),
            history,
        });
    }
    let mut jobs = Vec::new();
    for (name, j) in &cfg.config.jobs {
        if j.repository().is_none() {
            continue;
        }
        let (rpo, rpo_status) = match j.rpo() {
            Some(_) => {
                let status = match crate::engine::rpo::evaluate(cfg, state, name).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        notes.push(format!("RPO of {name} not evaluated now: {e}"));
                        None
                    }
                };
                (
                    Some(crate::engine::rpo::window(state, name, from, to).await?),
                    status,
                )
            }
            None => (None, None),
        };
        jobs.push(JobSummary {
            job: name.clone(),
            rpo_seconds: j.rpo().map(|r| r.as_secs_f64()),
            rpo,
            rpo_status,
            drills_passed: drills
                .iter()
                .filter(|d| &d.job == name)
                .map(|d| d.passed + d.over_rto)
                .sum(),
        });
    }
    let real_restores = real_restores(cfg, state, from).await?;
    Ok(Report {
        generated_at: to,
        from,
        to,
        host: crate::base::host::name(),
        drills,
        jobs,
        real_restores,
        notes,
        fleet: Vec::new(),
    })
}

async fn real_restores(
    cfg: &LoadedConfig,
    state: &State,
    from: DateTime<Utc>,
) -> Result<Vec<RealRestore>> {
    use crate::engine::restore::journal;
    let rows = journal::recent(state, None, Some(journal::Origin::Operator), 10_000).await?;
    Ok(rows
        .into_iter()
        .filter(|r| DateTime::parse_from_rfc3339(&r.started_at).is_ok_and(|t| t >= from))
        .map(|record| {
            let own = cfg
                .config
                .jobs
                .get(&record.job)
                .and_then(|j| j.storage())
                .and_then(|s| s.rto);
            let drill = cfg
                .config
                .drills
                .values()
                .filter(|d| d.job == record.job)
                .filter_map(|d| d.rto)
                .min();
            let rto_seconds = own.or(drill).map(|d| d.as_secs_f64());
            RealRestore {
                rto_verdict: rto_verdict(&record.outcome, record.total_seconds, rto_seconds),
                rto_seconds,
                record,
            }
        })
        .collect())
}

fn dur(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
    }
}

fn opt_dur(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), dur)
}

fn day(t: &str) -> String {
    t.get(..16).unwrap_or(t).replace('T', " ")
}

/// The report as JSON.
pub fn json(r: &Report) -> String {
    crate::base::secret::redact(&serde_json::to_string_pretty(r).unwrap_or_default())
}

/// The "Real restores" section of the markdown report.
fn real_restores_markdown(o: &mut String, restores: &[RealRestore]) {
    let _ = writeln!(o, "\n## Real restores\n");
    if restores.is_empty() {
        let _ = writeln!(o, "No restore was run by an operator in this period.");
    } else {
        let _ = writeln!(o, "| started (UTC) | job | what | outcome | backup | phases | health | time | RTO | against RTO |");
        let _ = writeln!(
            o,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
    }
    for x in restores {
        let rec = &x.record;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            day(&rec.started_at),
            rec.job,
            rec.action.as_str(),
            rec.outcome,
            rec.backup_id,
            rec.describe_phases(),
            rec.health.as_deref().unwrap_or("-"),
            opt_dur(rec.total_seconds),
            opt_dur(x.rto_seconds),
            x.rto_verdict
        );
    }
}

/// Markdown (also the plain-text part of the report email).
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# DR drill report");
    let _ = writeln!(
        o,
        "\n{} to {} (UTC), generated on {}.\n\n**{}**\n",
        r.from.format("%Y-%m-%d %H:%M"),
        r.to.format("%Y-%m-%d %H:%M"),
        r.host,
        r.headline()
    );
    let _ = writeln!(o, "## Drills\n");
    let _ = writeln!(
        o,
        "| drill | job | latest | restore time | RTO | runs | passed | over RTO | failed |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for d in &r.drills {
        let (latest, time) = match &d.latest {
            Some(l) => (
                format!("{} ({})", l.outcome, day(&l.started_at)),
                opt_dur(l.total_seconds),
            ),
            None => ("never run".into(), "-".into()),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {latest} | {time} | {} | {} | {} | {} | {} |",
            d.drill,
            d.job,
            opt_dur(d.rto_seconds),
            d.runs,
            d.passed,
            d.over_rto,
            d.failed
        );
    }
    if !r.fleet.is_empty() {
        let _ = writeln!(o, "\n## Fleet\n");
        let _ = writeln!(o, "| {} |", FLEET_HEADERS.join(" | "));
        let _ = writeln!(o, "|{}", " --- |".repeat(FLEET_HEADERS.len()));
        for row in fleet_rows(&r.fleet) {
            let _ = writeln!(o, "| {} |", row.join(" | "));
        }
    }
    let _ = writeln!(o, "\n## Backups: RPO compliance\n");
    let _ = writeln!(o, "| job | RPO | now | newest backup age | compliance | violations | worst gap | drills passed |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for j in &r.jobs {
        let now = j
            .rpo_status
            .as_ref()
            .map_or("-", |s| if s.compliant { "ok" } else { "VIOLATED" });
        let age = j.rpo_status.as_ref().and_then(|s| s.age_seconds);
        let (comp, viol, worst) = j.window_cells();
        let _ = writeln!(
            o,
            "| {} | {} | {now} | {} | {comp} | {viol} | {worst} | {} |",
            j.job,
            opt_dur(j.rpo_seconds),
            opt_dur(age),
            j.drills_passed
        );
    }
    real_restores_markdown(&mut o, &r.real_restores);
    let _ = writeln!(o, "\n## Drill runs\n");
    let _ = writeln!(o, "| started (UTC) | drill | outcome | backup | backup age | fetch | restore | verify | total |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for d in &r.drills {
        for run in d.history.iter().rev() {
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                day(&run.started_at),
                run.drill,
                run.outcome,
                run.failed_phase
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default(),
                run.backup_id.as_deref().unwrap_or("-"),
                opt_dur(run.backup_age_seconds),
                opt_dur(run.phase("fetch")),
                opt_dur(run.phase("restore")),
                opt_dur(run.phase("verify")),
                opt_dur(run.total_seconds)
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "\nNote: {n}");
    }
    crate::base::secret::redact(&o)
}

/// Escape text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Chart colour of restore times.
pub const COLOR_LINE: &str = "#1f77b4";
/// Chart colour of the RTO line.
pub const COLOR_RTO: &str = "#d62728";

fn outcome_color(o: &str) -> &'static str {
    match o {
        "passed" => "#2ca02c",
        "over_rto" => "#ff7f0e",
        _ => "#d62728",
    }
}

/// Restore time per run over time, with the RTO as a dashed line.
// One SVG drawn top to bottom (axes, grid, RTO, points): its parts share
// the coordinate transform.
#[allow(clippy::too_many_lines)]
fn chart(d: &DrillSummary, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 220.0, 56.0, 16.0, 16.0, 36.0);
    let points: Vec<(f64, f64, &str)> = d
        .history
        .iter()
        .filter_map(|r| {
            let t = DateTime::parse_from_rfc3339(&r.started_at)
                .ok()?
                .with_timezone(&Utc);
            Some((t.timestamp() as f64, r.total_seconds?, r.outcome.as_str()))
        })
        .collect();
    let ymax = points
        .iter()
        .map(|p| p.1)
        .chain(d.rto_seconds)
        .fold(1.0_f64, f64::max)
        * 1.15;
    // The runs' own time span (the window when there are fewer than two),
    // so a weekly drill in a 90-day window still draws a readable line.
    let span = points
        .iter()
        .map(|p| p.0)
        .fold(None, |acc: Option<(f64, f64)>, t| {
            Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
        })
        .filter(|(a, b)| b > a);
    let (t0, t1) = match span {
        Some((a, b)) => {
            let pad = (b - a) * 0.05;
            (a - pad, b + pad)
        }
        None => (from.timestamp() as f64, to.timestamp() as f64),
    };
    let (from, to) = (
        DateTime::<Utc>::from_timestamp(t0 as i64, 0).unwrap_or(from),
        DateTime::<Utc>::from_timestamp(t1 as i64, 0).unwrap_or(to),
    );
    let x = |t: f64| left + (t - t0) / (t1 - t0).max(1.0) * (w - left - right);
    let y = |v: f64| top + (1.0 - v / ymax) * (h - top - bottom);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="restore time of {name}" style="background:#ffffff;border:1px solid #dddddd">"#,
        name = esc(&d.drill)
    );
    // Axes and labels.
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#888888"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#888888"/>"##,
        b = h - bottom,
        r = w - right
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = ymax / 1.15 * frac;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555555" font-family="sans-serif">{}</text>"##,
            left - 6.0,
            y(v) + 4.0,
            esc(&dur(v))
        );
    }
    let _ = write!(
        s,
        r##"<text x="{left}" y="{}" font-size="11" fill="#555555" font-family="sans-serif">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555555" font-family="sans-serif">{}</text>"##,
        h - 12.0,
        from.format("%Y-%m-%d %H:%M"),
        w - right,
        h - 12.0,
        to.format("%Y-%m-%d %H:%M")
    );
    if let Some(rto) = d.rto_seconds {
        let _ = write!(
            s,
            r#"<line x1="{left}" y1="{yy}" x2="{r}" y2="{yy}" stroke="{COLOR_RTO}" stroke-width="2" stroke-dasharray="6 4"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end" fill="{COLOR_RTO}" font-family="sans-serif">RTO {label}</text>"#,
            yy = y(rto),
            r = w - right,
            tx = w - right - 4.0,
            ty = y(rto) - 4.0,
            label = esc(&dur(rto))
        );
    }
    if points.len() > 1 {
        let path: Vec<String> = points
            .iter()
            .map(|(t, v, _)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{COLOR_LINE}" stroke-width="3"/>"#,
            path.join(" ")
        );
    }
    for (t, v, o) in &points {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{}"><title>{} {}</title></circle>"#,
            x(*t),
            y(*v),
            outcome_color(o),
            esc(o),
            esc(&dur(*v))
        );
    }
    if points.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#888888" font-family="sans-serif">no drill runs in this window</text>"##,
            w / 2.0,
            h / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Self-contained HTML.
// One page in reading order; its sections share the inline styles.
#[allow(clippy::too_many_lines)]
pub fn html(r: &Report) -> String {
    let td = r#"style="padding:4px 8px;border-bottom:1px solid #e5e5e5;text-align:left""#;
    let th = r#"style="padding:4px 8px;border-bottom:2px solid #999999;text-align:left;background:#f3f3f3""#;
    let table = |head: &[&str], rows: Vec<Vec<String>>, id: &str| {
        let mut t = format!(
            r#"<table id="{id}" style="border-collapse:collapse;font-size:13px;margin:8px 0 20px 0"><tr>"#
        );
        for h in head {
            let _ = write!(t, "<th {th}>{}</th>", esc(h));
        }
        t.push_str("</tr>");
        for row in rows {
            t.push_str("<tr>");
            for c in row {
                let _ = write!(t, "<td {td}>{c}</td>");
            }
            t.push_str("</tr>");
        }
        t.push_str("</table>");
        t
    };
    let badge = |o: &str| {
        format!(
            r#"<span style="color:#ffffff;background:{};padding:1px 6px;border-radius:3px">{}</span>"#,
            outcome_color(o),
            esc(o)
        )
    };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"><title>DR drill report</title></head><body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222222;margin:24px;max-width:980px">"#
    );
    let _ = write!(
        o,
        "<h1 style=\"font-size:22px\">DR drill report</h1><p>{} to {} UTC, generated on {}.</p><p><b>{}</b></p>",
        r.from.format("%Y-%m-%d %H:%M"),
        r.to.format("%Y-%m-%d %H:%M"),
        esc(&r.host),
        esc(&r.headline())
    );
    o.push_str("<h2 style=\"font-size:18px\">Drills</h2>");
    let rows = r
        .drills
        .iter()
        .map(|d| {
            let (latest, time) = match &d.latest {
                Some(l) => (
                    format!("{} {}", badge(l.outcome.as_str()), esc(&day(&l.started_at))),
                    esc(&opt_dur(l.total_seconds)),
                ),
                None => ("never run".into(), "-".into()),
            };
            vec![
                esc(&d.drill),
                esc(&d.job),
                latest,
                time,
                esc(&opt_dur(d.rto_seconds)),
                d.runs.to_string(),
                d.passed.to_string(),
                d.over_rto.to_string(),
                d.failed.to_string(),
            ]
        })
        .collect();
    o.push_str(&table(
        &[
            "drill",
            "job",
            "latest",
            "restore time",
            "RTO",
            "runs",
            "passed",
            "over RTO",
            "failed",
        ],
        rows,
        "drills",
    ));
    for d in &r.drills {
        let _ = write!(
            o,
            "<h3 style=\"font-size:15px\">Restore time: {} </h3>{}",
            esc(&d.drill),
            chart(d, r.from, r.to)
        );
    }
    if !r.fleet.is_empty() {
        o.push_str("<h2 style=\"font-size:18px\">Fleet</h2>");
        let rows = fleet_rows(&r.fleet)
            .into_iter()
            .map(|row| row.iter().map(|c| esc(c)).collect())
            .collect();
        o.push_str(&table(&FLEET_HEADERS, rows, "fleet"));
    }
    o.push_str("<h2 style=\"font-size:18px\">Backups: RPO compliance</h2>");
    let rows = r
        .jobs
        .iter()
        .map(|j| {
            let now = match &j.rpo_status {
                Some(s) if s.compliant => badge("passed").replace(">passed<", ">ok<"),
                Some(_) => badge("failed").replace(">failed<", ">VIOLATED<"),
                None => "-".into(),
            };
            let age = j.rpo_status.as_ref().and_then(|s| s.age_seconds);
            let (comp, viol, worst) = j.window_cells();
            vec![
                esc(&j.job),
                esc(&opt_dur(j.rpo_seconds)),
                now,
                esc(&opt_dur(age)),
                comp,
                viol,
                esc(&worst),
                j.drills_passed.to_string(),
            ]
        })
        .collect();
    o.push_str(&table(
        &[
            "job",
            "RPO",
            "now",
            "newest backup age",
            "compliance",
            "violations",
            "worst gap",
            "drills passed",
        ],
        rows,
        "rpo",
    ));
    o.push_str("<h2 style=\"font-size:18px\">Real restores</h2>");
    let rows = r
        .real_restores
        .iter()
        .map(|x| {
            let rec = &x.record;
            vec![
                esc(&day(&rec.started_at)),
                esc(&rec.job),
                esc(rec.action.as_str()),
                badge(if rec.outcome == "done" {
                    "passed"
                } else {
                    "failed"
                })
                .replace(">passed<", ">done<")
                .replace(">failed<", &format!(">{}<", esc(&rec.outcome))),
                esc(&rec.backup_id),
                esc(&rec.describe_phases()),
                esc(rec.health.as_deref().unwrap_or("-")),
                esc(&opt_dur(rec.total_seconds)),
                esc(&opt_dur(x.rto_seconds)),
                esc(x.rto_verdict),
            ]
        })
        .collect();
    o.push_str(&table(
        &[
            "started (UTC)",
            "job",
            "what",
            "outcome",
            "backup",
            "phases",
            "health",
            "time",
            "RTO",
            "against RTO",
        ],
        rows,
        "restores",
    ));
    o.push_str("<h2 style=\"font-size:18px\">Drill runs</h2>");
    let mut rows = Vec::new();
    for d in &r.drills {
        for run in d.history.iter().rev() {
            rows.push(vec![
                esc(&day(&run.started_at)),
                esc(&run.drill),
                format!(
                    "{}{}",
                    badge(run.outcome.as_str()),
                    run.failed_phase
                        .as_deref()
                        .map(|p| format!(" in {}", esc(p)))
                        .unwrap_or_default()
                ),
                esc(run.backup_id.as_deref().unwrap_or("-")),
                esc(&opt_dur(run.backup_age_seconds)),
                esc(&opt_dur(run.phase("fetch"))),
                esc(&opt_dur(run.phase("restore"))),
                esc(&opt_dur(run.phase("verify"))),
                esc(&opt_dur(run.total_seconds)),
            ]);
        }
    }
    o.push_str(&table(
        &[
            "started (UTC)",
            "drill",
            "outcome",
            "backup",
            "backup age",
            "fetch",
            "restore",
            "verify",
            "total",
        ],
        rows,
        "runs",
    ));
    for n in &r.notes {
        let _ = write!(o, "<p style=\"color:#8a6d3b\">Note: {}</p>", esc(n));
    }
    o.push_str("<p style=\"color:#888888;font-size:12px\">drctl: restore drills restore the newest backup into a scratch database, check every table's row count against the backup's snapshot, and time each phase.</p></body></html>");
    crate::base::secret::redact(&o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_is_within_its_rto_only_when_it_finished_in_time() {
        assert_eq!(rto_verdict("done", Some(30.0), Some(60.0)), "within");
        assert_eq!(rto_verdict("done", Some(90.0), Some(60.0)), "over");
        assert_eq!(rto_verdict("failed", Some(10.0), Some(60.0)), "-");
        assert_eq!(rto_verdict("done", Some(10.0), None), "-");
        assert_eq!(rto_verdict("done", None, Some(60.0)), "-");
    }

    #[test]
    fn html_escapes_what_it_prints() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
