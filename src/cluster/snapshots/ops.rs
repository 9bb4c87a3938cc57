//! Talking to the API about snapshots and volumes: snapshot classes, creating and reading
//! VolumeSnapshots (creation is idempotent by name) and the driver's handle of each cut,
//! the CSI driver behind a PVC, and deleting and recreating PVCs for a restore.

use super::{VolumeSnapshot, VolumeSnapshotClass, bound_content};
use crate::cluster::cache::{Cluster, WatchedKind};
use crate::cluster::error::{ClusterError, already_exists};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

/// Every VolumeSnapshotClass.
pub async fn classes(cluster: &Cluster) -> Result<Vec<VolumeSnapshotClass>, ClusterError> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
    ));
    let list = Api::<DynamicObject>::all_with(cluster.client().clone(), &resource)
        .list(&ListParams::default())
        .await
        .map_err(|e| ClusterError::api("listing", "VolumeSnapshotClasses", e))?;
    list.items
        .into_iter()
        .map(|object| {
            let name = object.name_any();
            serde_json::to_value(object)
                .and_then(serde_json::from_value)
                .map_err(|e| {
                    ClusterError::Invalid(format!("VolumeSnapshotClass {name} is malformed: {e}"))
                })
        })
        .collect()
}

/// Creates a VolumeSnapshot; one that already exists under that name counts as created
/// (names are deterministic, so it is ours from before a crash).
pub async fn create_snapshot(
    cluster: &Cluster,
    snapshot: &VolumeSnapshot,
) -> Result<(), ClusterError> {
    create_once(cluster, snapshot, Some(WatchedKind::VolumeSnapshot)).await
}

/// A VolumeSnapshot, or None.
pub async fn snapshot(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Option<VolumeSnapshot>, ClusterError> {
    Api::<VolumeSnapshot>::namespaced(cluster.client().clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("reading", format!("VolumeSnapshot {namespace}/{name}"), e))
}

/// A VolumeSnapshot and the CSI driver's handle of its cut (the `status.snapshotHandle` of
/// the VolumeSnapshotContent it is bound to; `None` while unbound or when that content is
/// gone), read together: what a restore checks before it destroys anything.
pub async fn snapshot_and_handle(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<(Option<VolumeSnapshot>, Option<String>), ClusterError> {
    let Some(found) = snapshot(cluster, namespace, name).await? else {
        return Ok((None, None));
    };
    let handle = match bound_content(&found) {
        Some(content) => content_handle(cluster, content).await?,
        None => None,
    };
    Ok((Some(found), handle))
}

/// The `status.snapshotHandle` of VolumeSnapshotContent `name` (cluster-scoped); `None` when
/// it has none or is gone.
pub async fn content_handle(cluster: &Cluster, name: &str) -> Result<Option<String>, ClusterError> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
    ));
    let content = Api::<DynamicObject>::all_with(cluster.client().clone(), &resource)
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("reading", format!("VolumeSnapshotContent {name}"), e))?;
    Ok(content.and_then(|c| {
        c.data["status"]["snapshotHandle"]
            .as_str()
            .map(str::to_owned)
    }))
}

/// The VolumeSnapshots carrying a label selector, e.g. an app's for retention.
pub async fn snapshots_with(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
) -> Result<Vec<VolumeSnapshot>, ClusterError> {
    Api::<VolumeSnapshot>::namespaced(cluster.client().clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .map_err(|e| {
            ClusterError::api(
                "listing",
                format!("VolumeSnapshots in {namespace} ({selector})"),
                e,
            )
        })
}

/// Deletes a VolumeSnapshot; one already gone is fine.
pub async fn delete_snapshot(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<(), ClusterError> {
    delete_if_present::<VolumeSnapshot>(cluster, namespace, name).await
}

/// A PVC, or None.
pub async fn claim(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Option<PersistentVolumeClaim>, ClusterError> {
    Api::<PersistentVolumeClaim>::namespaced(cluster.client().clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            ClusterError::api(
                "reading",
                format!("PersistentVolumeClaim {namespace}/{name}"),
                e,
            )
        })
}

/// Deletes a PVC (it stays Terminating while a pod uses it); one already gone is fine.
pub async fn delete_claim(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<(), ClusterError> {
    delete_if_present::<PersistentVolumeClaim>(cluster, namespace, name).await
}

/// Creates a restored PVC; one that already exists is left to the caller to inspect (its
/// `restored-from` annotation says whether it is ours).
pub async fn create_claim(
    cluster: &Cluster,
    claim: &PersistentVolumeClaim,
) -> Result<(), ClusterError> {
    create_once(cluster, claim, None).await
}

type Namespaced = k8s_openapi::NamespaceResourceScope;

/// Creates a namespaced object; AlreadyExists counts as created (deterministic names make
/// a repeat after a crash find its own object).
/// `watched`: the kind as the caches know it, so that reads see the new object at once.
async fn create_once<K>(
    cluster: &Cluster,
    object: &K,
    watched: Option<WatchedKind>,
) -> Result<(), ClusterError>
where
    K: kube::Resource<DynamicType = (), Scope = Namespaced>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    match Api::<K>::namespaced(cluster.client().clone(), &namespace)
        .create(&PostParams::default(), object)
        .await
    {
        Ok(created) => {
            if let Some(kind) = watched {
                cluster.wrote(kind, &created);
            }
            Ok(())
        }
        Err(e) if already_exists(&e) => Ok(()),
        Err(e) => Err(ClusterError::api(
            "creating",
            format!("{} {namespace}/{}", K::kind(&()), object.name_any()),
            e,
        )),
    }
}

/// Deletes a namespaced object; one already gone is fine.
async fn delete_if_present<K>(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<(), ClusterError>
where
    K: kube::Resource<DynamicType = (), Scope = Namespaced>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(cluster.client().clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(ClusterError::api(
            "deleting",
            format!("{} {namespace}/{name}", K::kind(&())),
            e,
        )),
    }
}

/// A StorageClass, or None.
pub async fn storage_class(
    cluster: &Cluster,
    name: &str,
) -> Result<Option<StorageClass>, ClusterError> {
    Api::<StorageClass>::all(cluster.client().clone())
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("reading", format!("StorageClass {name}"), e))
}

/// The CSI driver behind a PVC: its bound PersistentVolume's `spec.csi.driver`, else its
/// StorageClass's provisioner; None for volumes that are not CSI (they cannot be
/// snapshotted).
pub async fn csi_driver(
    cluster: &Cluster,
    claim: &PersistentVolumeClaim,
) -> Result<Option<String>, ClusterError> {
    let spec = claim.spec.as_ref();
    if let Some(volume) = spec
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty())
    {
        let pv = Api::<PersistentVolume>::all(cluster.client().clone())
            .get_opt(volume)
            .await
            .map_err(|e| ClusterError::api("reading", format!("PersistentVolume {volume}"), e))?;
        if let Some(driver) = pv
            .and_then(|pv| pv.spec)
            .and_then(|s| s.csi)
            .map(|csi| csi.driver)
        {
            return Ok(Some(driver));
        }
    }
    let Some(class) = spec.and_then(|s| s.storage_class_name.as_deref()) else {
        return Ok(None);
    };
    Ok(storage_class(cluster, class).await?.map(|c| c.provisioner))
}

/// Applies an app's snapshot retention in `namespace`: per PVC, keeps the newest
/// `max_count` of Fluxgate's snapshots of the app and deletes older ones and those older
/// than `max_age_secs` (never a PVC's newest). Returns the names deleted.
pub async fn apply_retention(
    cluster: &Cluster,
    namespace: &str,
    app: &str,
    max_count: usize,
    max_age_secs: Option<i64>,
    now: jiff::Timestamp,
) -> Result<Vec<String>, ClusterError> {
    use super::{APP_LABEL, PVC_LABEL, RetainedSnapshot, expired_snapshots};
    use crate::cluster::labels;
    // The label may be a shortened name shared by another app; the annotation tells.
    let snapshots = snapshots_with(cluster, namespace, &labels::selector(APP_LABEL, app)).await?;
    let retained: Vec<RetainedSnapshot> = snapshots
        .iter()
        .filter(|s| {
            labels::names(
                s.metadata.labels.as_ref(),
                s.metadata.annotations.as_ref(),
                APP_LABEL,
                app,
            )
        })
        .filter_map(|s| {
            let pvc = s
                .spec
                .source
                .persistent_volume_claim_name
                .clone()
                .or_else(|| s.annotations().get(PVC_LABEL).cloned())
                .or_else(|| s.labels().get(PVC_LABEL).cloned())?;
            Some(RetainedSnapshot {
                name: s.name_any(),
                pvc,
                created: s.metadata.creation_timestamp.as_ref()?.0.as_second(),
            })
        })
        .collect();
    let expired = expired_snapshots(&retained, max_count, max_age_secs, now.as_second());
    for name in &expired {
        delete_snapshot(cluster, namespace, name).await?;
    }
    Ok(expired)
}
