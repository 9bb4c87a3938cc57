//! The custom resource kinds the sims read and write (Flux, CSI snapshots) and the
//! dynamic-API helpers to reach them.

use crate::controller::SimError;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// An API resource by group, version, kind and plural.
pub fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version,
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Flux's GitRepository v1.
pub fn git_repository() -> ApiResource {
    api_resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
    )
}

/// Flux's OCIRepository v1.
pub fn oci_repository() -> ApiResource {
    api_resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "OCIRepository",
        "ocirepositories",
    )
}

/// Flux's HelmRepository v1.
pub fn helm_repository() -> ApiResource {
    api_resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "HelmRepository",
        "helmrepositories",
    )
}

/// Flux's HelmChart v1.
pub fn helm_chart() -> ApiResource {
    api_resource("source.toolkit.fluxcd.io", "v1", "HelmChart", "helmcharts")
}

/// Flux's Kustomization v1.
pub fn kustomization() -> ApiResource {
    api_resource(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    )
}

/// Flux's HelmRelease v2.
pub fn helm_release() -> ApiResource {
    api_resource(
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    )
}

/// CSI VolumeSnapshot v1.
pub fn volume_snapshot() -> ApiResource {
    api_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

/// CSI VolumeSnapshotContent v1 (cluster-scoped).
pub fn volume_snapshot_content() -> ApiResource {
    api_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}

/// CSI VolumeSnapshotClass v1 (cluster-scoped).
pub fn volume_snapshot_class() -> ApiResource {
    api_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    )
}

/// An `Api` for a namespaced dynamic kind in `namespace`.
pub fn dyn_api(client: &Client, ar: &ApiResource, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, ar)
}

/// Merge-patches an object's status subresource.
pub async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
    manager: &str,
) -> Result<(), SimError> {
    api.patch_status(
        name,
        &self::manager(manager),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| anyhow::anyhow!("status patch of {name}: {e}"))?;
    Ok(())
}

/// Patch parameters naming the field manager (as each real controller identifies itself).
pub fn manager(name: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(name.to_owned()),
        ..PatchParams::default()
    }
}

/// An object as plain JSON (sims read arbitrary fields by path).
pub fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}
