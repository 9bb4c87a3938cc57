//! Renders and lints `charts/fluxgate` with real Helm (the `helm-python-sdk` wheel, driven
//! through Python) and reads the RBAC rules the rendered chart grants its ServiceAccount.
//!
//! Needs a Python that can `import helm_python` (`HELM_PYTHON`, default `python3`;
//! `.ci/run` creates one). [`helm_python`] prints a SKIPPED line when there is none.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/fluxgate")
}

/// The values file that turns every option of the chart on.
pub fn all_on_values() -> PathBuf {
    chart_dir().join("ci/all-on-values.yaml")
}

/// The namespace the tests install the chart into.
pub const RELEASE_NAMESPACE: &str = "fluxgate-system";

/// A Python that can import `helm_python`, or None after printing why the caller skips.
pub fn helm_python(test: &str) -> Option<String> {
    let python = std::env::var("HELM_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    if importable {
        Some(python)
    } else {
        eprintln!(
            "SKIPPED: {python} cannot import helm_python (pip install helm-python-sdk into a venv \
             and set HELM_PYTHON to its python, as .ci/run does); {test} did not run"
        );
        None
    }
}

const SCRIPT: &str = r#"
import json, sys
import helm_python as helm

action, chart_dir, values_file, overrides, name, namespace = sys.argv[1:7]
values = {}
if values_file:
    with open(values_file) as f:
        values = helm.values_from_yaml(f.read())

def merge(into, over):
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into

values = merge(values, json.loads(overrides))
if action == "render":
    chart = helm.Chart.load(chart_dir)
    out = chart.render(values, name=name, namespace=namespace, is_install=True)
    print(json.dumps({"templates": out}))
else:
    print(json.dumps(helm.lint(chart_dir, values, strict=True, namespace=namespace)))
"#;

fn run_helm(
    python: &str,
    action: &str,
    values_file: Option<&Path>,
    overrides: &Value,
) -> anyhow::Result<Value> {
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(action)
        .arg(chart_dir())
        .arg(values_file.map(Path::as_os_str).unwrap_or_default())
        .arg(overrides.to_string())
        .arg("fluxgate")
        .arg(RELEASE_NAMESPACE)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !out.status.success() {
        bail!(
            "helm {action} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "helm {action} printed something that is not JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The chart rendered as release `fluxgate` in [`RELEASE_NAMESPACE`] with `values_file`
/// (if any) and then `overrides` merged over the chart's defaults: every object of every
/// template, in template order (NOTES.txt is left out).
pub fn render(
    python: &str,
    values_file: Option<&Path>,
    overrides: &Value,
) -> anyhow::Result<Vec<Value>> {
    let rendered = run_helm(python, "render", values_file, overrides)?;
    let templates = rendered["templates"]
        .as_object()
        .context("helm render returned no templates")?;
    let mut objects = Vec::new();
    for (path, text) in templates {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        let text = text.as_str().unwrap_or_default();
        let documents: Vec<Value> = serde_saphyr::from_multiple(text)
            .with_context(|| format!("{path} does not render to valid YAML:\n{text}"))?;
        objects.extend(documents.into_iter().filter(|d| !d.is_null()));
    }
    Ok(objects)
}

/// One finding of `helm lint`.
#[derive(Debug, Clone)]
pub struct LintMessage {
    /// 1 = info, 2 = warning, 3 = error.
    pub severity: u64,
    pub path: String,
    pub error: String,
}

/// `helm lint --strict` with `values_file`: its findings.
pub fn lint(python: &str, values_file: Option<&Path>) -> anyhow::Result<Vec<LintMessage>> {
    let report = run_helm(
        python,
        "lint",
        values_file,
        &Value::Object(Default::default()),
    )?;
    let mut messages: Vec<LintMessage> = report["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| LintMessage {
            severity: m["severity"].as_u64().unwrap_or(0),
            path: m["path"].as_str().unwrap_or_default().to_owned(),
            error: m["error"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    messages.extend(
        report["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| LintMessage {
                severity: 3,
                path: String::new(),
                error: e.as_str().unwrap_or_default().to_owned(),
            }),
    );
    Ok(messages)
}

/// The objects of `kind` among `objects`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// One RBAC rule of a rendered Role or ClusterRole that is bound to the chart's
/// ServiceAccount.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `ClusterRole/<name>` or `Role/<namespace>/<name>`.
    pub role: String,
    /// The Role's namespace; None for a ClusterRole (every namespace, and cluster scope).
    pub namespace: Option<String>,
    pub api_groups: Vec<String>,
    /// `resource` or `resource/subresource`.
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

/// A request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// None for cluster-scoped requests and requests across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Rule {
    /// Whether this rule allows `access`, with RBAC's semantics: a Role only inside its
    /// namespace; `resourceNames` only for requests that name an object (never `create`,
    /// never an unnamed `list`/`watch`).
    pub fn allows(&self, access: &Access) -> bool {
        let in_scope = match (&self.namespace, &access.namespace) {
            (None, _) => true,
            (Some(role), Some(request)) => role == request,
            (Some(_), None) => false,
        };
        let named = self.resource_names.is_empty()
            || access
                .name
                .as_ref()
                .is_some_and(|n| self.resource_names.contains(n));
        in_scope
            && named
            && self.api_groups.contains(&access.group)
            && self.resources.contains(&access.resource)
            && self.verbs.contains(&access.verb)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Every rule of every Role and ClusterRole that a (Cluster)RoleBinding of the chart binds
/// to `service_account` in [`RELEASE_NAMESPACE`]. Roles nobody binds grant nothing and are
/// reported as an error, as are bindings to roles the chart does not define.
pub fn bound_rules(objects: &[Value], service_account: &str) -> anyhow::Result<Vec<Rule>> {
    let binds_us = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == service_account
                    && s["namespace"] == RELEASE_NAMESPACE
            })
    };
    let mut rules = Vec::new();
    for (role_kind, binding_kind) in [
        ("ClusterRole", "ClusterRoleBinding"),
        ("Role", "RoleBinding"),
    ] {
        for role in of_kind(objects, role_kind) {
            let name = role["metadata"]["name"].as_str().unwrap_or_default();
            let namespace = role["metadata"]["namespace"].as_str().map(str::to_owned);
            if role_kind == "Role" && namespace.is_none() {
                bail!("Role {name} has no namespace");
            }
            let bound = of_kind(objects, binding_kind).into_iter().any(|b| {
                b["roleRef"]["kind"] == role_kind
                    && b["roleRef"]["name"] == name
                    && b["metadata"]["namespace"].as_str() == namespace.as_deref()
                    && binds_us(b)
            });
            if !bound {
                bail!("{role_kind} {name} is not bound to ServiceAccount {service_account}");
            }
            let label = match &namespace {
                None => format!("ClusterRole/{name}"),
                Some(ns) => format!("Role/{ns}/{name}"),
            };
            for rule in role["rules"].as_array().into_iter().flatten() {
                rules.push(Rule {
                    role: label.clone(),
                    namespace: namespace.clone(),
                    api_groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    verbs: strings(&rule["verbs"]),
                    resource_names: strings(&rule["resourceNames"]),
                });
            }
        }
    }
    Ok(rules)
}

/// The name of the ServiceAccount the chart's Deployment runs as.
pub fn service_account(objects: &[Value]) -> anyhow::Result<String> {
    let deployment = of_kind(objects, "Deployment")
        .into_iter()
        .next()
        .context("the chart renders no Deployment")?;
    deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .map(str::to_owned)
        .context("the Deployment names no serviceAccountName")
}
