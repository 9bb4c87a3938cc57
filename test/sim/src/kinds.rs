//! The custom resource kinds the sims read and write (Flux, CSI snapshots), the
//! dynamic-API helpers to reach them, and the object helpers every sim shares (finalizers
//! written on condition of the version read, annotations, API error codes).

use crate::controller::SimError;
use anyhow::Context;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;

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

/// Merge-patches a Flux object's status the way the Flux controllers' patch helper writes it
/// (fluxcd/pkg/runtime v0.110 `patch.Helper.Patch`: "Patch the conditions first", then the
/// rest of the status): the conditions in a patch of their own before the other fields, so
/// a watcher sees e.g. Ready announce a revision that `lastAppliedRevision` does not yet hold.
pub async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    mut status: Value,
    manager: &str,
) -> Result<(), SimError> {
    let conditions = status.as_object_mut().and_then(|s| s.remove("conditions"));
    let rest = status.as_object().is_some_and(|s| !s.is_empty());
    let patches = conditions
        .map(|c| json!({ "conditions": c }))
        .into_iter()
        .chain(rest.then_some(status));
    for patch in patches {
        api.patch_status(
            name,
            &self::manager(manager),
            &Patch::Merge(json!({ "status": patch })),
        )
        .await
        .map_err(|e| anyhow::anyhow!("status patch of {name}: {e}"))?;
    }
    Ok(())
}

/// Patch parameters naming the field manager (as each real controller identifies itself).
pub fn manager(name: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(name.to_owned()),
        ..PatchParams::default()
    }
}

/// Whether an object carries `finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta()
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer)
}

/// Replaces an object's finalizers with `finalizers`, on condition that it is still the
/// version the caller read: several controllers keep finalizers on one object (the PV
/// controller and the snapshot-controller on a PVC), and a whole-list write must not drop
/// another's. A conflict fails the reconcile, which then retries from a fresh read.
pub async fn set_finalizers<K>(
    api: &Api<K>,
    obj: &K,
    finalizers: Vec<String>,
    manager: &str,
) -> Result<(), SimError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    api.patch(
        &name,
        &self::manager(manager),
        &Patch::Merge(json!({"metadata": {
            "resourceVersion": obj.resource_version(),
            "finalizers": finalizers,
        }})),
    )
    .await
    .with_context(|| format!("writing the finalizers of {name}"))?;
    Ok(())
}

/// Adds `finalizer` to an object unless it has it (see [`set_finalizers`]).
pub async fn add_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    manager: &str,
) -> Result<(), SimError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if has_finalizer(obj, finalizer) {
        return Ok(());
    }
    let mut all = obj.finalizers().to_vec();
    all.push(finalizer.to_owned());
    set_finalizers(api, obj, all, manager).await
}

/// Removes `finalizer` from an object if it has it (see [`set_finalizers`]).
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    manager: &str,
) -> Result<(), SimError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !has_finalizer(obj, finalizer) {
        return Ok(());
    }
    let rest = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, obj, rest, manager).await
}

/// An annotation of an object.
pub fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether a kube error is the API's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is the API's 409 (a conflict or an existing name).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// An object as plain JSON (sims read arbitrary fields by path).
pub fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}
