//! Renders, lints and installs `charts/fluxgate` with real Helm (the `helm-python-sdk`
//! wheel, driven through Python) and reads the RBAC rules the rendered chart grants its
//! ServiceAccount.
//!
//! Needs a Python that can `import helm_python` (`HELM_PYTHON`, default `python3`;
//! `.ci/run` creates one). [`helm_python`] prints a SKIPPED line when there is none.
//!
//! # A story on the real stack, as the chart's ServiceAccount
//!
//! [`crate::real_operator`] builds on [`install`]: once per test process the chart is
//! installed into the shared real control plane (release `fluxgate` in `fluxgate-system`,
//! its CRDs, the Flux and VolumeSnapshot CRDs, namespace `apps`), and a TokenRequest token of
//! the chart's ServiceAccount is written into a kubeconfig. A story then runs Fluxgate with
//! that identity, and fails if the API server refused it anything:
//!
//! ```no_run
//! # async fn story() -> anyhow::Result<()> {
//! use e2e::real_operator::{ChartInstall, RealOperator};
//! // None (after printing SKIPPED) without the real stack or helm-python, unless
//! // FLUXGATE_REQUIRE_REAL_STACK=1, which panics instead.
//! let Some(install) = ChartInstall::shared_or_skip("my story") else { return Ok(()) };
//! let admin = install.cluster().client().await?;      // the story's own hands (system:masters)
//! let mark = install.audit_log().mark()?;             // this story's part of the audit log
//! // The controllers as `fluxgate run` starts them from the chart's Deployment: required
//! // APIs, leader election in fluxgate-system, Renovate's ConfigMap apps/renovate-output.
//! let operator = RealOperator::start_as_charted(install).await?;
//! // … create objects with `admin`, wait for outcomes …
//! operator.stop().await;
//! install.check_nothing_refused_since(&mark).await?;  // Err lists each 403 for a person
//! # Ok(()) }
//! ```
//!
//! Other pieces: [`crate::real_operator::ChartInstall::operator_client`] (a `kube::Client`
//! as the ServiceAccount with Fluxgate's User-Agent, made by `fluxgate run --kubeconfig`'s
//! own code), `ChartInstall::kubeconfig` (the token kubeconfig for `fluxgate run
//! --kubeconfig` or kubectl), `ChartInstall::operator_config` + `RealOperator::start` (to
//! change settings first), `ChartInstall::requests_since` (the ServiceAccount's requests,
//! with `counts()` by verb and resource) and `ChartInstall::allows` (a SubjectAccessReview).

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
/// The release name the tests render and install the chart as.
pub const RELEASE_NAME: &str = "fluxgate";

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

action, chart_dir, values_file, overrides, name, namespace, kubeconfig = sys.argv[1:8]
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
elif action == "install":
    # The chart's crds/ are installed first (Helm's default); the namespace is made if missing.
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as cfg:
        release = cfg.install(chart_dir, name, values, namespace=namespace,
                              create_namespace=True, timeout=120)
    print(json.dumps(release))
else:
    print(json.dumps(helm.lint(chart_dir, values, strict=True, namespace=namespace)))
"#;

fn run_helm(
    python: &str,
    action: &str,
    values_file: Option<&Path>,
    overrides: &Value,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<Value> {
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(action)
        .arg(chart_dir())
        .arg(values_file.map(Path::as_os_str).unwrap_or_default())
        .arg(overrides.to_string())
        .arg(RELEASE_NAME)
        .arg(RELEASE_NAMESPACE)
        .arg(kubeconfig.map(Path::as_os_str).unwrap_or_default())
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
    let rendered = run_helm(python, "render", values_file, overrides, None)?;
    let templates = rendered["templates"]
        .as_object()
        .context("helm render returned no templates")?;
    let mut objects = Vec::new();
    for (path, text) in templates {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        objects.extend(documents(path, text.as_str().unwrap_or_default())?);
    }
    Ok(objects)
}

/// The objects of a multi-document YAML text (`what` names it in errors).
fn documents(what: &str, text: &str) -> anyhow::Result<Vec<Value>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .with_context(|| format!("{what} is not valid YAML:\n{text}"))?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// A release of the chart in a cluster.
#[derive(Clone, Debug)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    /// The ServiceAccount the operator's Deployment runs as, in `namespace`.
    pub service_account: String,
    /// What Helm applied: the release's manifest, one object each (the CRDs of `crds/` are
    /// not part of it).
    pub objects: Vec<Value>,
}

impl Release {
    /// The user the API server knows the ServiceAccount as (audit logs, RBAC subjects).
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// The value of environment variable `name` of the operator's container, when the
    /// chart sets it to a literal value (not `valueFrom`).
    pub fn operator_env(&self, name: &str) -> Option<String> {
        of_kind(&self.objects, "Deployment")
            .into_iter()
            .flat_map(|d| d["spec"]["template"]["spec"]["containers"].as_array())
            .flatten()
            .flat_map(|c| c["env"].as_array())
            .flatten()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str().map(str::to_owned))
    }
}

/// Installs the chart with real Helm into the cluster of `kubeconfig` (an admin's), as
/// `helm install fluxgate charts/fluxgate -n fluxgate-system --create-namespace` with
/// `overrides` over the chart's defaults: the CRDs of `crds/` first, then every object of
/// the release. Does not wait for the Deployment. Blocks while Helm works (a few seconds).
pub fn install(python: &str, kubeconfig: &Path, overrides: &Value) -> anyhow::Result<Release> {
    let release =
        run_helm(python, "install", None, overrides, Some(kubeconfig)).with_context(|| {
            format!(
                "installing the chart into the cluster of {}",
                kubeconfig.display()
            )
        })?;
    let manifest = release["manifest"]
        .as_str()
        .with_context(|| format!("helm install returned no manifest: {release}"))?;
    let objects = documents("the release's manifest", manifest)?;
    let service_account = service_account(&objects)?;
    Ok(Release {
        name: RELEASE_NAME.to_owned(),
        namespace: RELEASE_NAMESPACE.to_owned(),
        service_account,
        objects,
    })
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
        None,
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

/// A request as RBAC sees it (what a SubjectAccessReview asks about).
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

/// `verb resource[.group][/subresource]` then `namespace/name`, `in <namespace>` or
/// `(cluster-wide)` — the audit log's rendering (`realstack::audit`), for a person.
impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (resource, subresource) = match self.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub)),
            None => (self.resource.as_str(), None),
        };
        write!(f, "{} {resource}", self.verb)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(sub) = subresource {
            write!(f, "/{sub}")?;
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, " {ns}/{name}"),
            (Some(ns), None) => write!(f, " in {ns}"),
            (None, Some(name)) => write!(f, " {name}"),
            (None, None) => write!(f, " (cluster-wide)"),
        }
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
