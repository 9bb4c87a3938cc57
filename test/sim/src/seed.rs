//! Seed objects for tests and the demo: storage and snapshot classes for the
//! `hostpath.csi.k8s.io` driver, namespaces, and Flux sources, Kustomizations and
//! HelmReleases as a cluster bootstrapped with Flux has them.

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
/// `flux-system` applying `path` of `branch` at `url`.
pub async fn flux_system(client: &Client, url: &str, branch: &str, path: &str) -> Result<()> {
    namespace(client, FLUX_SYSTEM).await?;
    git_repository(client, FLUX_SYSTEM, FLUX_SYSTEM, url, branch, None).await?;
    kustomization(client, FLUX_SYSTEM, FLUX_SYSTEM, FLUX_SYSTEM, path, None).await
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
