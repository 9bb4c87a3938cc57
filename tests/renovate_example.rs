//! The example Renovate CronJob (`examples/renovate/renovate.yaml`) gets right what
//! docs/renovate.md says it must: lookup-only, a report file, `flux` patterns that match the
//! fleet's own files, the report published into the ConfigMap Fluxgate reads, and a Role
//! that allows writing that ConfigMap and nothing else.

use serde_json::Value;

fn documents() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/renovate/renovate.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is in the example"))
}

#[test]
fn renovate_only_looks_and_writes_a_report() {
    let docs = documents();
    let config_map = find(&docs, "ConfigMap", "renovate-config");
    let config: Value =
        serde_json::from_str(config_map["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(config["dryRun"], "lookup", "never opens pull requests");
    assert_eq!(config["reportType"], "file");
    let report_path = config["reportPath"].as_str().unwrap();
    for manager in ["flux", "helm-values", "kubernetes"] {
        let patterns = config[manager]["managerFilePatterns"].as_array().unwrap();
        // Renovate's default flux pattern only matches gotk-components.yaml; ours must
        // match an ordinary app file.
        assert!(
            patterns
                .iter()
                .any(|p| p.as_str().unwrap().contains("clusters/")),
            "{manager}: {patterns:?}"
        );
    }

    let cron = find(&docs, "CronJob", "renovate");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let renovate = &pod["initContainers"][0];
    assert!(
        renovate["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RENOVATE_CONFIG_FILE" && e["value"] == "/config/config.json")
    );
    let publish = &pod["containers"][0];
    let script = publish["args"][0].as_str().unwrap();
    assert!(
        script.contains(&format!("report.json={report_path}")),
        "{script}"
    );
    assert!(
        script.contains("configmap renovate-output"),
        "publishes into the ConfigMap Fluxgate reads: {script}"
    );
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
}

#[test]
fn the_job_can_write_its_configmap_and_nothing_else() {
    let docs = documents();
    let role = find(&docs, "Role", "renovate-output-writer");
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["resources"], serde_json::json!(["configmaps"]));
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if verbs != ["create"] {
            assert_eq!(
                rule["resourceNames"],
                serde_json::json!(["renovate-output"]),
                "{rule}"
            );
        }
        assert!(
            !verbs.contains(&"*") && !verbs.contains(&"delete"),
            "{rule}"
        );
    }
    let binding = find(&docs, "RoleBinding", "renovate-output-writer");
    assert_eq!(binding["subjects"][0]["name"], "renovate");
}

#[test]
fn the_example_output_parses_as_fluxgate_reads_it() {
    // What the job publishes: a report file under one key, as Fluxgate's parser takes it.
    let report = r#"{"problems": [], "repositories": {"example/fleet": {"problems": [],
        "branches": [], "packageFiles": {"flux": [{"packageFile": "clusters/prod/db.yaml",
        "deps": [{"depName": "ghcr.io/example/charts/db", "currentValue": "v1.4.0",
        "datasource": "docker", "updates": [{"newValue": "v1.5.0", "updateType": "minor"}]}]}]}}}}"#;
    let parsed = fluxgate::renovate::parse_inputs(&[(
        "ConfigMap renovate/renovate-output key report.json",
        report,
    )])
    .unwrap();
    assert_eq!(parsed.findings.len(), 1);
    assert_eq!(parsed.findings[0].repository, "example/fleet");
    assert_eq!(parsed.findings[0].updates.len(), 1);
}
