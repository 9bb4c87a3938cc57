//! Seed objects for tests and the demo: storage and snapshot classes for the
//! `hostpath.csi.k8s.io` driver, namespaces, Flux sources, Kustomizations and
//! HelmReleases, and Flux's bootstrap — the manifests `flux bootstrap` writes to Git and
//! what it applies to the cluster.

use crate::apply::Applier;
use anyhow::Result;
use kube::Client;
use serde_json::{Value, json};

/// The CSI driver every seeded class uses.
pub const DRIVER: &str = "hostpath.csi.k8s.io";
/// The default StorageClass, binding `Immediate`.
pub const IMMEDIATE_CLASS: &str = "sim-immediate";
/// A StorageClass binding `WaitForFirstConsumer`.
pub const WFFC_CLASS: &str = "sim-wffc";
/// The default VolumeSnapshotClass for [`DRIVER`].
pub const SNAPSHOT_CLASS: &str = "sim-snapshots";
/// Flux's namespace and the name of its root GitRepository and Kustomization.
pub const FLUX_SYSTEM: &str = "flux-system";

/// Creates or updates `obj` (server-side apply, field manager `sim-seed`).
pub async fn put(client: &Client, obj: Value) -> Result<()> {
    Applier::new(client.clone(), "sim-seed").apply(&obj).await?;
    Ok(())
}

/// A namespace.
pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    put(
        client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
}

/// Both StorageClasses ([`IMMEDIATE_CLASS`] is the default) and [`SNAPSHOT_CLASS`].
pub async fn storage(client: &Client) -> Result<()> {
    for (name, mode, default) in [
        (IMMEDIATE_CLASS, "Immediate", "true"),
        (WFFC_CLASS, "WaitForFirstConsumer", "false"),
    ] {
        put(client, json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": default}},
            "provisioner": DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": mode,
            "allowVolumeExpansion": true,
        }))
        .await?;
    }
    put(client, json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": SNAPSHOT_CLASS, "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
        "driver": DRIVER, "deletionPolicy": "Delete",
    }))
    .await
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A Secret with `username`/`password` for a GitRepository's `secretRef`.
pub async fn git_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
    username: &str,
    password: &str,
) -> Result<()> {
    put(client, json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        // `data`, not `stringData`: kubesim stores built-ins as given and does not convert.
        "type": "Opaque", "data": {"username": b64(username), "password": b64(password)},
    }))
    .await
}

/// A GitRepository following `branch` of `url` (with `secret` for credentials).
pub async fn git_repository(
    client: &Client,
    namespace: &str,
    name: &str,
    url: &str,
    branch: &str,
    secret: Option<&str>,
) -> Result<()> {
    let mut spec = json!({"interval": "1m", "url": url, "ref": {"branch": branch}});
    if let Some(s) = secret {
        spec["secretRef"] = json!({"name": s});
    }
    put(
        client,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }),
    )
    .await
}

/// A Kustomization in `namespace` applying `path` of GitRepository `source` (same namespace).
pub async fn kustomization(
    client: &Client,
    namespace: &str,
    name: &str,
    source: &str,
    path: &str,
    target_namespace: Option<&str>,
) -> Result<()> {
    let mut spec = json!({
        "interval": "10m", "path": path, "prune": true,
        "sourceRef": {"kind": "GitRepository", "name": source},
    });
    if let Some(t) = target_namespace {
        spec["targetNamespace"] = json!(t);
    }
    put(
        client,
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }),
    )
    .await
}

/// Flux's bootstrap: namespace `flux-system`, GitRepository and root Kustomization
/// `flux-system` applying `path` of `branch` at `url` (no Secret), as [`bootstrap`] applies
/// them. The manifests are only in the cluster, not in Git: for a fleet whose Git holds
/// them too, as `flux bootstrap` leaves it, see [`gotk_sync`].
pub async fn flux_system(client: &Client, url: &str, branch: &str, path: &str) -> Result<()> {
    bootstrap(
        client,
        &gotk_sync(url, &json!({"branch": branch}), path, false),
        None,
    )
    .await
}

/// The header `flux bootstrap` writes above its generated manifests
/// (fluxcd/flux2 pkg/manifestgen `GenWarning`).
const GENERATED: &str = "# This manifest was generated by flux. DO NOT EDIT.";

/// `<path>/flux-system/gotk-sync.yaml` as `flux bootstrap` writes it (fluxcd/flux2
/// pkg/manifestgen/sync `Generate`: sigs.k8s.io/yaml output, so keys sorted, intervals as Go
/// durations): GitRepository `flux-system` following `reference` (`spec.ref`, e.g.
/// `{"branch": "main"}`) of `url` with Secret `flux-system` when `secret`, and the root
/// Kustomization `flux-system` applying `path` of it, pruning. The root applies this very
/// file, so kustomize-controller labels both with the root's own name.
pub fn gotk_sync(url: &str, reference: &Value, path: &str, secret: bool) -> String {
    let mut fields: Vec<(&String, &Value)> = reference.as_object().into_iter().flatten().collect();
    fields.sort_by_key(|(key, _)| *key);
    let mut reference_yaml = String::new();
    for (key, value) in fields {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        reference_yaml.push_str(&format!("    {key}: {value}\n"));
    }
    let secret_ref = if secret {
        format!("  secretRef:\n    name: {FLUX_SYSTEM}\n")
    } else {
        String::new()
    };
    let path = format!("./{}", path.trim_start_matches("./"));
    format!(
        "{GENERATED}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: {FLUX_SYSTEM}
  namespace: {FLUX_SYSTEM}
spec:
  interval: 1m0s
  ref:
{reference_yaml}{secret_ref}  url: {url}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {FLUX_SYSTEM}
  namespace: {FLUX_SYSTEM}
spec:
  interval: 10m0s
  path: {path}
  prune: true
  sourceRef:
    kind: GitRepository
    name: {FLUX_SYSTEM}
"
    )
}

/// `<path>/flux-system/kustomization.yaml` as `flux bootstrap` writes it (fluxcd/flux2
/// pkg/manifestgen/kustomization `Generate`).
pub const GOTK_KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- gotk-components.yaml
- gotk-sync.yaml
";

/// A stand-in for `<path>/flux-system/gotk-components.yaml`: of what `flux install` writes
/// there, only the `flux-system` Namespace (with its labels). The controllers it deploys
/// are the sims, and their CRDs are built into kubesim.
pub const GOTK_COMPONENTS: &str = "---
# Flux's controllers and CRDs are simulated; only their namespace is applied from here.
apiVersion: v1
kind: Namespace
metadata:
  labels:
    app.kubernetes.io/instance: flux-system
    app.kubernetes.io/part-of: flux
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/warn-version: latest
  name: flux-system
";

/// What `flux bootstrap` applies to the cluster itself, before Flux takes over from Git:
/// namespace `flux-system`, Secret `flux-system` with `credentials` (as `--token-auth`
/// stores them: `username`/`password`) when given, then the objects of `gotk_sync` (see
/// [`gotk_sync`]), server-side applied with field manager `flux` (fluxcd/flux2
/// internal/utils/apply.go).
pub async fn bootstrap(
    client: &Client,
    gotk_sync: &str,
    credentials: Option<(&str, &str)>,
) -> Result<()> {
    namespace(client, FLUX_SYSTEM).await?;
    if let Some((username, password)) = credentials {
        git_credentials(client, FLUX_SYSTEM, FLUX_SYSTEM, username, password).await?;
    }
    let flux = Applier::new(client.clone(), "flux");
    for object in crate::kustomize_build::parse_file("gotk-sync.yaml", gotk_sync.as_bytes())? {
        flux.apply(&object).await?;
    }
    Ok(())
}

/// An OCIRepository serving chart `url` at `tag`.
pub async fn oci_chart(
    client: &Client,
    namespace: &str,
    name: &str,
    url: &str,
    tag: &str,
) -> Result<()> {
    put(client, json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"interval": "10m", "url": url, "ref": {"tag": tag}, "layerSelector": {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "operation": "copy"}},
    }))
    .await
}

/// A HelmRelease installing the chart of OCIRepository `chart_ref` with `values`.
pub async fn helm_release(
    client: &Client,
    namespace: &str,
    name: &str,
    chart_ref: &str,
    values: Value,
) -> Result<()> {
    put(client, json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": chart_ref}, "values": values},
    }))
    .await
}
