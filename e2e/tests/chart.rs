//! `charts/fluxgate` with real Helm: it lints clean and renders for the default values and
//! for `ci/all-on-values.yaml`; the pod runs restricted (non-root, read-only root
//! filesystem, seccomp RuntimeDefault, no capabilities) with probes and the operator's
//! settings; no RBAC rule uses a wildcard; impossible values are refused with a reason.

use e2e::chart::{self, of_kind};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap_or_default().to_owned(), value)
        })
        .collect()
}

fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "want one {kind}, got {}", found.len());
    found[0]
}

#[test]
fn the_chart_lints_clean_with_default_and_all_on_values() {
    let Some(python) = chart::helm_python("the chart lint test") else {
        return;
    };
    for values in [None, Some(chart::all_on_values())] {
        let findings = chart::lint(&python, values.as_deref()).unwrap();
        // Info-level findings (e.g. "icon is recommended") are advice; warnings and errors
        // fail, as `helm lint --strict` does.
        let problems: Vec<_> = findings.iter().filter(|m| m.severity >= 2).collect();
        assert!(problems.is_empty(), "helm lint ({values:?}): {problems:#?}");
    }
}

#[test]
fn the_default_install_runs_restricted_with_probes_and_settings() {
    let Some(python) = chart::helm_python("the chart render test") else {
        return;
    };
    let objects = chart::render(&python, None, &json!({})).unwrap();
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // Restricted pod security.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // Probes on the metrics port.
    assert_eq!(container["command"], json!(["/usr/local/bin/fluxgate"]));
    assert_eq!(container["args"], json!(["run"]));
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The operator's settings.
    let env = env_of(deployment);
    assert_eq!(
        env["FLUXGATE_NAMESPACE"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env["POD_NAME"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env["FLUXGATE_METRICS_ADDR"], "0.0.0.0:8080");
    assert_eq!(env["FLUXGATE_LOG_FORMAT"], "json");
    assert_eq!(env["FLUXGATE_LEADER_ELECTION"], "true");
    assert_eq!(env["FLUXGATE_AUTO_UPGRADE_LIMIT"], "1");
    assert_eq!(env["FLUXGATE_CONCURRENCY"], "4");
    assert_eq!(env["FLUXGATE_GIT_AUTHOR_NAME"], "Fluxgate");
    assert!(!env.contains_key("FLUXGATE_RENOVATE_CONFIGMAP"));
    assert!(!env.contains_key("FLUXGATE_RENOVATE_FILE"));

    // The git clone cache is a writable emptyDir holding FLUXGATE_GIT_CACHE_DIR; /tmp too.
    let cache_dir = env["FLUXGATE_GIT_CACHE_DIR"].as_str().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    for wanted in [cache_dir, "/tmp"] {
        let mount = mounts
            .iter()
            .find(|m| wanted.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("nothing writable is mounted at {wanted}: {mounts:#?}"));
        assert_ne!(mount["readOnly"], true);
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        assert!(volume["emptyDir"].is_object(), "{volume}");
    }

    // The CRDs ship with the chart; the ServiceAccount, metrics Service, RBAC are there;
    // the optional objects are not.
    assert_eq!(
        only(&objects, "ServiceAccount")["metadata"]["name"],
        "fluxgate"
    );
    let service = only(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    only(&objects, "ClusterRole");
    only(&objects, "ClusterRoleBinding");
    for optional in [
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
    ] {
        assert!(
            of_kind(&objects, optional).is_empty(),
            "{optional} is opt-in"
        );
    }
    no_wildcards(&objects);
}

#[test]
fn every_option_renders_when_turned_on() {
    let Some(python) = chart::helm_python("the all-on chart render test") else {
        return;
    };
    let objects = chart::render(&python, Some(&chart::all_on_values()), &json!({})).unwrap();
    let deployment = only(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/fluxgate-dev/fluxgate@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let env = env_of(deployment);
    assert_eq!(env["FLUXGATE_LOG_FORMAT"], "text");
    assert_eq!(env["FLUXGATE_CONCURRENCY"], "8");
    assert_eq!(env["FLUXGATE_AUTO_UPGRADE_LIMIT"], "2");
    assert_eq!(env["FLUXGATE_GIT_AUTHOR_EMAIL"], "fleet-bot@example.com");
    assert_eq!(
        env["FLUXGATE_RENOVATE_CONFIGMAP"],
        "renovate/renovate-report"
    );
    assert_eq!(
        env["FLUXGATE_RENOVATE_FILE"],
        "/etc/fluxgate/renovate/report.json"
    );
    assert_eq!(env["RUST_LOG"], "info,fluxgate=debug");

    let monitor = only(&objects, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let rule = only(&objects, "PrometheusRule");
    let shipped: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart::chart_dir().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"], shipped);
    let dashboard = only(&objects, "ConfigMap");
    let json_text = dashboard["data"]["fluxgate.json"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(parsed["uid"], "fluxgate");
    let policy = only(&objects, "NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));

    // Git credentials in Flux's format, one Secret per namespace listed.
    let secrets = of_kind(&objects, "Secret");
    assert_eq!(secrets.len(), 2);
    for secret in secrets {
        assert_eq!(secret["stringData"]["username"], "git");
        assert!(secret["stringData"]["password"].is_string());
    }
    // Secrets are read only in the namespaces listed, and never cluster-wide.
    let rules = chart::bound_rules(&objects, &chart::service_account(&objects).unwrap()).unwrap();
    let secret_rules: Vec<_> = rules
        .iter()
        .filter(|r| r.resources.iter().any(|res| res == "secrets"))
        .collect();
    assert_eq!(secret_rules.len(), 3, "{secret_rules:#?}");
    for rule in secret_rules {
        assert!(rule.namespace.is_some(), "{rule:?}");
        assert_eq!(
            rule.verbs,
            ["get", "list"],
            "secrets are read-only: {rule:?}"
        );
    }
    no_wildcards(&objects);
}

fn no_wildcards(objects: &[Value]) {
    for kind in ["ClusterRole", "Role"] {
        for role in of_kind(objects, kind) {
            for rule in role["rules"].as_array().unwrap() {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    let wild = rule[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v.as_str().is_some_and(|s| s.contains('*')));
                    assert!(
                        !wild,
                        "{kind} {} uses a wildcard: {rule}",
                        role["metadata"]["name"]
                    );
                }
            }
        }
    }
}

#[test]
fn impossible_values_are_refused_with_the_fix() {
    let Some(python) = chart::helm_python("the chart refusal test") else {
        return;
    };
    let cases = [
        (
            json!({"replicas": 2, "leaderElection": {"enabled": false}}),
            "leaderElection.enabled=true",
        ),
        // values.schema.json: types, ranges and typos.
        (json!({"logging": {"format": "xml"}}), "'json', 'text'"),
        (json!({"concurrency": 0}), "/concurrency"),
        (json!({"replica": 2}), "'replica' not allowed"),
        (
            json!({"rbac": {"extraRules": [{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]}}),
            "wildcards",
        ),
        (
            json!({"gitCredentials": {"create": true, "namespaces": ["apps"], "identity": "KEY"}}),
            "knownHosts",
        ),
        (
            json!({"renovate": {"configMap": {"name": "report"}}}),
            "renovate.configMap.namespace",
        ),
    ];
    for (values, wanted) in cases {
        let error = chart::render(&python, None, &values)
            .expect_err(&format!("{values} renders"))
            .to_string();
        assert!(error.contains(wanted), "{values}: {error}");
    }
}

#[test]
fn every_setting_the_chart_passes_is_a_flag_of_fluxgate_run() {
    use clap::CommandFactory;
    let Some(python) = chart::helm_python("the chart settings test") else {
        return;
    };
    let cli = fluxgate::cli::Cli::command();
    let run = cli
        .get_subcommands()
        .find(|c| c.get_name() == "run")
        .expect("fluxgate run");
    let known: Vec<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for values in [None, Some(chart::all_on_values())] {
        let objects = chart::render(&python, values.as_deref(), &json!({})).unwrap();
        let env = env_of(only(&objects, "Deployment"));
        let unknown: Vec<&String> = env
            .keys()
            .filter(|name| name.starts_with("FLUXGATE_") && !known.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "the chart sets {unknown:?}, which `fluxgate run` does not read (it reads {known:?})"
        );
    }
    // The settings a user most needs are all passed.
    for wanted in [
        "FLUXGATE_LEADER_ELECTION",
        "FLUXGATE_NAMESPACE",
        "FLUXGATE_CONCURRENCY",
        "FLUXGATE_GIT_CACHE_DIR",
    ] {
        assert!(known.iter().any(|k| k == wanted), "{wanted}: {known:?}");
    }
}
