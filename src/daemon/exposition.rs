//! The two exposition formats `/metrics` speaks. prometheus-client writes
//! OpenMetrics only; Prometheus asks for it (`Accept:
//! application/openmetrics-text`), but curl, `promtool check metrics`,
//! node_exporter's textfile habits and many agents read the classic text
//! format (0.0.4), where a counter's `# HELP`/`# TYPE` name carries the
//! `_total` its samples carry, `# UNIT` and `# EOF` do not exist and
//! `unknown` is spelled `untyped`. Serving OpenMetrics to those makes every
//! counter look undocumented. So the daemon negotiates, as the Go client
//! does, and translates the one encoding into the other here.

/// The content type of OpenMetrics 1.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus's scrapes
/// do; a bare `curl` does not).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            part.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/openmetrics-text")
            })
        })
    })
}

/// OpenMetrics text (as prometheus-client writes it) in the classic text
/// format. Samples are copied as they are: the two formats share the
/// sample syntax for counters, gauges, histograms and summaries.
pub fn to_text_format(openmetrics: &str) -> String {
    use std::collections::HashMap;
    // The family types, read first: `# HELP` comes before `# TYPE`.
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, ty)) = rest.split_once(' ') {
                types.insert(name, ty.trim());
            }
        }
    }
    // The name a family's metadata takes in the text format.
    let renamed = |name: &str| match types.get(name).copied() {
        Some("counter") if !name.ends_with("_total") => format!("{name}_total"),
        Some("info") => format!("{name}_info"),
        _ => name.to_owned(),
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // OpenMetrics escapes `"` in HELP; the text format does not.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let ty = match ty.trim() {
                "counter" => "counter",
                "gauge" | "info" | "stateset" => "gauge",
                "histogram" | "gaugehistogram" => "histogram",
                "summary" => "summary",
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {} {ty}\n", renamed(name)));
            continue;
        }
        // A counter's `_created` sample has no family in the text format.
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if sample_name
            .strip_suffix("_created")
            .is_some_and(|f| types.get(f) == Some(&"counter"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_the_openmetrics_only_lines_go() {
        let om = "# HELP drctl_job_runs Runs on this host by outcome.\n\
                  # TYPE drctl_job_runs counter\n\
                  drctl_job_runs_total{job_name=\"a\",outcome=\"failed\"} 2\n\
                  drctl_job_runs_created{job_name=\"a\",outcome=\"failed\"} 1700000000.0\n\
                  # HELP drctl_disk_used_ratio Used \\\"share\\\".\n\
                  # TYPE drctl_disk_used_ratio gauge\n\
                  # UNIT drctl_disk_used_ratio ratio\n\
                  drctl_disk_used_ratio{mount=\"/\"} 0.5\n\
                  # TYPE drctl_thing unknown\n\
                  drctl_thing 1\n\
                  # EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP drctl_job_runs_total Runs on this host by outcome.\n\
             # TYPE drctl_job_runs_total counter\n\
             drctl_job_runs_total{job_name=\"a\",outcome=\"failed\"} 2\n\
             # HELP drctl_disk_used_ratio Used \"share\".\n\
             # TYPE drctl_disk_used_ratio gauge\n\
             drctl_disk_used_ratio{mount=\"/\"} 0.5\n\
             # TYPE drctl_thing untyped\n\
             drctl_thing 1\n"
        );
    }

    #[test]
    fn openmetrics_is_served_only_to_who_asks_for_it() {
        // Prometheus 2.x's scrape Accept header.
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
