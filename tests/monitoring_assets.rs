//! The Grafana dashboard and the Prometheus alert rules query only metrics Fluxgate really
//! exposes, the dashboard is valid JSON, and the chart's copy of the rules equals the docs'.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every sample name the registry exposes: `# TYPE` lines give the family and its type,
/// and Prometheus' suffixes follow from the type. A family only shows once it has a
/// sample, so one of each is recorded first; a family registered in
/// src/telemetry/metrics.rs but not recorded here fails the test (record it here).
fn exposed_names() -> BTreeSet<String> {
    let metrics = fluxgate::telemetry::metrics::Metrics::new();
    metrics.operation_finished("UpgradeRequest", "Succeeded");
    metrics.phase_took("UpgradeRequest", "Snapshot", 1.0);
    metrics.error("git_auth");
    metrics.set_active("UpgradeRequest", 1);
    metrics.renovate_read(true, &[("findings", 1)]);
    let text = metrics.render();
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let source = std::fs::read_to_string(root().join("src/telemetry/metrics.rs")).unwrap();
    let registered = source.matches(".register(").count();
    assert_eq!(
        families, registered,
        "src/telemetry/metrics.rs registers {registered} metric families but only {families} \
         show in /metrics here: record a sample of the new one in exposed_names()\n{text}"
    );
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

/// The `fluxgate_…` metric names in a PromQL expression.
fn queried(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("fluxgate_") {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !preceded_by_word {
            out.push(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    out
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

fn unknown_metrics(what: &str, exprs: &[String]) -> Vec<String> {
    let exposed = exposed_names();
    exprs
        .iter()
        .flat_map(|e| queried(e))
        .filter(|name| !exposed.contains(name))
        .map(|name| format!("{what}: {name} (exposed: {exposed:?})"))
        .collect()
}

#[test]
fn the_registry_exposes_the_documented_metrics() {
    let exposed = exposed_names();
    for name in [
        "fluxgate_build_info",
        "fluxgate_operations_total",
        "fluxgate_phase_duration_seconds_bucket",
        "fluxgate_errors_total",
        "fluxgate_active_operations",
        "fluxgate_renovate_reads_total",
        "fluxgate_renovate_input",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed:?}");
    }
    assert_eq!(
        queried("sum(rate(fluxgate_errors_total[5m])) / x_fluxgate_y"),
        ["fluxgate_errors_total"]
    );
}

#[test]
fn the_dashboard_queries_only_metrics_that_exist() {
    let path = root().join("charts/fluxgate/dashboards/fluxgate.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert_eq!(dashboard["uid"], "fluxgate");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {} has no query", panel["title"]);
        collect_exprs(panel, &mut exprs);
    }
    collect_exprs(&dashboard["templating"], &mut exprs);
    assert!(exprs.len() >= panels.len() / 2, "{exprs:?}");
    let unknown = unknown_metrics("dashboard", &exprs);
    assert!(unknown.is_empty(), "{unknown:#?}");
}

#[test]
fn the_alert_rules_query_only_metrics_that_exist_and_the_chart_ships_them() {
    let docs = std::fs::read_to_string(root().join("docs/monitoring/prometheus-rules.yaml"))
        .expect("docs/monitoring/prometheus-rules.yaml");
    let chart = std::fs::read_to_string(root().join("charts/fluxgate/files/prometheus-rules.yaml"))
        .expect("charts/fluxgate/files/prometheus-rules.yaml");
    let docs: Value = serde_saphyr::from_str(&docs).expect("docs rules are YAML");
    let chart: Value = serde_saphyr::from_str(&chart).expect("chart rules are YAML");
    assert_eq!(
        docs, chart,
        "charts/fluxgate/files/prometheus-rules.yaml must hold the rules of \
         docs/monitoring/prometheus-rules.yaml (copy the `groups:` part)"
    );
    let mut exprs = Vec::new();
    let mut runbooks = Vec::new();
    for group in docs["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: expr"));
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has no severity"
            );
            exprs.push(expr.to_owned());
            runbooks.push((name.to_owned(), rule["annotations"]["runbook"].clone()));
        }
    }
    assert!(exprs.len() >= 5, "{exprs:?}");
    let unknown = unknown_metrics("alert rules", &exprs);
    assert!(unknown.is_empty(), "{unknown:#?}");
    for (alert, runbook) in runbooks {
        let runbook = runbook
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: runbook"));
        assert!(
            root().join(runbook).is_file(),
            "{alert} names runbook {runbook}, which does not exist"
        );
    }
}
