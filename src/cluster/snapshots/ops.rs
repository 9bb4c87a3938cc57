//! Talking to the API about snapshots and volumes: snapshot classes, creating and reading
//! VolumeSnapshots (creation is idempotent by name) and the driver's handle of each cut,
//! the CSI driver behind a PVC, and deleting and recreating PVCs for a restore.

use super::{VolumeSnapshot, VolumeSnapshotClass, bound_content};
use crate::cluster::cache::{Cluster, WatchedKind};
use crate::cluster::error::{ClusterError, already_exists};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use std::collections::BTreeMap;

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

/// Keeps PersistentVolume `name` (bound to PVC `namespace/pvc`) when that PVC is deleted:
/// sets its reclaim policy to `Retain` and labels it as released by the request, with its
/// policy before in an annotation written only the first time (a repeat after a crash
/// finds `Retain` already and must not record that as the original). The patch carries the
/// resourceVersion read, so a concurrent change is read again rather than overwritten.
pub async fn retain_volume(
    cluster: &Cluster,
    name: &str,
    namespace: &str,
    pvc: &str,
    request: &str,
    request_uid: &str,
) -> Result<(), ClusterError> {
    use super::{
        RECLAIM_POLICY_BEFORE_ANNOTATION, RELEASED_BY_LABEL, RELEASED_BY_UID_LABEL,
        RELEASED_CLAIM_ANNOTATION,
    };
    let api = Api::<PersistentVolume>::all(cluster.client().clone());
    let what = || format!("PersistentVolume {name} (of PVC {namespace}/{pvc})");
    let Some(pv) = api
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("reading", what(), e))?
    else {
        // Gone already: nothing is left to keep (its claim's delete would not free it).
        return Ok(());
    };
    let before = pv
        .annotations()
        .get(RECLAIM_POLICY_BEFORE_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| {
            pv.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                .unwrap_or_else(|| "Retain".to_owned())
        });
    let mut labels = BTreeMap::from([(RELEASED_BY_UID_LABEL.to_owned(), request_uid.to_owned())]);
    let mut annotations = BTreeMap::from([
        (
            RELEASED_CLAIM_ANNOTATION.to_owned(),
            format!("{namespace}/{pvc}"),
        ),
        (RECLAIM_POLICY_BEFORE_ANNOTATION.to_owned(), before),
    ]);
    crate::cluster::labels::set_name(&mut labels, &mut annotations, RELEASED_BY_LABEL, request);
    let patch = serde_json::json!({
        "metadata": {
            "labels": labels,
            "annotations": annotations,
            "resourceVersion": pv.resource_version(),
        },
        "spec": {"persistentVolumeReclaimPolicy": "Retain"},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| ClusterError::api("keeping (reclaim policy Retain)", what(), e))
}

/// The PersistentVolumes a request has released ([`retain_volume`]), by the PVC
/// (`namespace`, `name`) each held the data of, with its reclaim policy before.
pub async fn released_volumes(
    cluster: &Cluster,
    request_uid: &str,
) -> Result<Vec<(String, String, crate::api::ReleasedVolume)>, ClusterError> {
    use super::{
        RECLAIM_POLICY_BEFORE_ANNOTATION, RELEASED_BY_UID_LABEL, RELEASED_CLAIM_ANNOTATION,
    };
    let list = Api::<PersistentVolume>::all(cluster.client().clone())
        .list(&ListParams::default().labels(&format!("{RELEASED_BY_UID_LABEL}={request_uid}")))
        .await
        .map_err(|e| {
            ClusterError::api(
                "listing",
                format!("PersistentVolumes released by request {request_uid}"),
                e,
            )
        })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|pv| {
            let (namespace, pvc) = pv
                .annotations()
                .get(RELEASED_CLAIM_ANNOTATION)?
                .split_once('/')
                .map(|(n, c)| (n.to_owned(), c.to_owned()))?;
            let before = pv
                .annotations()
                .get(RECLAIM_POLICY_BEFORE_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            Some((
                namespace,
                pvc,
                crate::api::ReleasedVolume {
                    name: pv.name_any(),
                    reclaim_policy_before: before,
                },
            ))
        })
        .collect())
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
/// `max_count` of the app's snapshots (selected by its UID, safety snapshots left out) and
/// deletes older ones and those older than `max_age_secs` — never a PVC's newest, nor one a
/// rollback may still restore from ([`RetentionScope::candidate`]). Returns the names
/// deleted.
pub async fn apply_retention(
    cluster: &Cluster,
    namespace: &str,
    scope: &super::RetentionScope<'_>,
    now: jiff::Timestamp,
) -> Result<Vec<String>, ClusterError> {
    use super::{APP_UID_LABEL, expired_snapshots};
    let selector = format!("{APP_UID_LABEL}={}", scope.app_uid);
    let snapshots = snapshots_with(cluster, namespace, &selector).await?;
    let retained: Vec<_> = snapshots
        .iter()
        .filter_map(|s| scope.candidate(s))
        .collect();
    let expired = expired_snapshots(
        &retained,
        scope.max_count,
        scope.max_age_secs,
        now.as_second(),
    );
    for name in &expired {
        delete_snapshot(cluster, namespace, name).await?;
    }
    Ok(expired)
}
