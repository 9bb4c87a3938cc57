//! Discovering an app on the API: the workloads its Flux source deployed (from the
//! HelmRelease's or Kustomization's inventory, else from the newest deployed Helm release's
//! manifest), their live replica counts and autoscalers, and the PVCs they use with
//! everything needed to snapshot and recreate them.

use super::{
    ObjectId, Workload, claims_of_workload, inventory_objects, select_claims, workloads_in_manifest,
};
use crate::api::FluxObjectKind;
use crate::api::{
    ClaimRetention, DELETE_CLAIMS, PlannedVolume, PlannedWorkload, SourceKind, WorkloadKind,
};
use crate::cluster::cache::Cluster;
use crate::cluster::error::ClusterError;
use crate::cluster::flux::ops::get_typed;
use crate::cluster::flux::{HelmRelease, Inventory, Kustomization};
use crate::cluster::helm_release::{decode, newest_deployed, release_location};
use crate::cluster::snapshots::ops::{claim, csi_driver};
use crate::cluster::snapshots::{VolumeSnapshotClass, capture_volume, class_for_driver};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What an app consists of now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppInventory {
    /// Deployments and StatefulSets, with their live replicas and autoscalers.
    pub workloads: Vec<PlannedWorkload>,
    /// PVCs the workloads use (after include/exclude), captured in full.
    pub volumes: Vec<PlannedVolume>,
    /// Inventory entries that did not parse, for the status message.
    pub malformed_inventory: Vec<String>,
}

/// How volumes are chosen and which snapshot class they get.
#[derive(Clone, Debug, Default)]
pub struct VolumeSelection<'a> {
    /// `spec.snapshots.include`.
    pub include: &'a [String],
    /// `spec.snapshots.exclude`.
    pub exclude: &'a [String],
    /// `spec.snapshots.className`.
    pub class_name: Option<&'a str>,
    /// The cluster's VolumeSnapshotClasses; None when no snapshots will be taken (no class
    /// is then required).
    pub classes: Option<&'a [VolumeSnapshotClass]>,
}

/// Discovers the app deployed by a HelmRelease or Kustomization.
pub async fn discover_app(
    cluster: &Cluster,
    kind: SourceKind,
    namespace: &str,
    name: &str,
    selection: &VolumeSelection<'_>,
) -> Result<AppInventory, ClusterError> {
    let (workloads, inventory_claims, malformed) = deployed(cluster, kind, namespace, name).await?;
    let mut planned = Vec::new();
    let mut claims_by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ns, claim_name) in inventory_claims {
        claims_by_namespace
            .entry(ns)
            .or_default()
            .insert(claim_name);
    }
    for workload in &workloads {
        let workload_plan = planned_workload(workload, namespace);
        let existing = claim_names(cluster, &workload_plan.namespace).await?;
        claims_by_namespace
            .entry(workload_plan.namespace.clone())
            .or_default()
            .extend(claims_of_workload(
                workload,
                workload_plan.replicas,
                &existing,
            ));
        planned.push(workload_plan);
    }
    note_autoscalers(cluster, &mut planned).await?;
    let mut volumes = Vec::new();
    for (ns, claims) in claims_by_namespace {
        for claim_name in select_claims(claims, selection.include, selection.exclude) {
            // A claim a StatefulSet will create for an ordinal it never ran has no data.
            let Some(pvc) = claim(cluster, &ns, &claim_name).await? else {
                continue;
            };
            volumes.push(capture(cluster, &pvc, selection).await?);
        }
    }
    Ok(AppInventory {
        workloads: planned,
        volumes,
        malformed_inventory: malformed,
    })
}

async fn capture(
    cluster: &Cluster,
    pvc: &PersistentVolumeClaim,
    selection: &VolumeSelection<'_>,
) -> Result<PlannedVolume, ClusterError> {
    let driver = csi_driver(cluster, pvc).await?;
    let class = match (selection.classes, driver.as_deref()) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ClusterError::Invalid(format!(
                "PVC {}/{} is not a CSI volume, so it cannot be snapshotted; exclude it (spec.snapshots.exclude) \
                 or skip snapshots",
                pvc.namespace().unwrap_or_default(),
                pvc.name_any()
            )));
        }
        (Some(classes), Some(driver)) => Some(
            class_for_driver(driver, selection.class_name, classes).map_err(|e| {
                ClusterError::Invalid(format!(
                    "PVC {}/{}: {e}",
                    pvc.namespace().unwrap_or_default(),
                    pvc.name_any()
                ))
            })?,
        ),
    };
    Ok(capture_volume(pvc, driver, class))
}

/// The workloads an app's Flux object deploys, with their live replicas — all its health
/// needs (no volumes, no autoscalers).
pub async fn discover_workloads(
    cluster: &Cluster,
    kind: SourceKind,
    namespace: &str,
    name: &str,
) -> Result<Vec<PlannedWorkload>, ClusterError> {
    let (workloads, _, _) = deployed(cluster, kind, namespace, name).await?;
    Ok(workloads
        .iter()
        .map(|w| planned_workload(w, namespace))
        .collect())
}

/// What a HelmRelease or Kustomization deploys: workloads, claims its inventory lists, and
/// inventory entries that did not parse.
async fn deployed(
    cluster: &Cluster,
    kind: SourceKind,
    namespace: &str,
    name: &str,
) -> Result<Discovered, ClusterError> {
    match kind {
        SourceKind::HelmRelease => helm_release_workloads(cluster, namespace, name).await,
        SourceKind::Kustomization => {
            let kustomization: Kustomization =
                get_typed(cluster, FluxObjectKind::Kustomization, namespace, name)
                    .await?
                    .ok_or_else(|| ClusterError::NotFound {
                        object: format!("Kustomization {namespace}/{name}"),
                        hint: "; check spec.source of the ManagedApp".into(),
                    })?;
            let inventory = kustomization.status.and_then(|s| s.inventory).ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "Kustomization {namespace}/{name} has no status.inventory yet; wait until Flux has applied it"
                ))
            })?;
            inventory_workloads(cluster, &inventory).await
        }
    }
}

/// A live workload as a plan records it (its namespace defaults to the Flux object's).
fn planned_workload(workload: &Workload, namespace: &str) -> PlannedWorkload {
    let (kind, meta, replicas, claim_retention) = match workload {
        Workload::Deployment(d) => (
            WorkloadKind::Deployment,
            &d.metadata,
            d.spec.replicas.unwrap_or(1),
            None,
        ),
        Workload::StatefulSet(s) => (
            WorkloadKind::StatefulSet,
            &s.metadata,
            s.spec.replicas.unwrap_or(1),
            claims_deleted_on_scale_down(s),
        ),
    };
    PlannedWorkload {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned()),
        replicas,
        autoscaler: None,
        claim_retention,
    }
}

/// A StatefulSet's PVC retention policy when it deletes the PVCs of the pods a scale-down
/// removes (`whenScaled: Delete`): the kube-controller-manager's StatefulSet controller
/// then gives each such PVC an owner reference to its pod and the garbage collector
/// deletes it with the pod (k8s.io/kubernetes v1.36.3
/// `pkg/controller/statefulset/stateful_set_utils.go`, `updateClaimOwnerRefForSetAndPod`).
pub fn claims_deleted_on_scale_down(set: &StatefulSet) -> Option<ClaimRetention> {
    let policy = set.spec.persistent_volume_claim_retention_policy.as_ref()?;
    (policy.when_scaled.as_deref() == Some(DELETE_CLAIMS)).then(|| ClaimRetention {
        when_scaled: DELETE_CLAIMS.to_owned(),
    })
}

async fn claim_names(cluster: &Cluster, namespace: &str) -> Result<Vec<String>, ClusterError> {
    Api::<PersistentVolumeClaim>::namespaced(cluster.client().clone(), namespace)
        .list_metadata(&ListParams::default())
        .await
        .map(|list| list.items.into_iter().map(|m| m.name_any()).collect())
        .map_err(|e| ClusterError::api("listing", format!("PVCs in {namespace}"), e))
}

type Discovered = (Vec<Workload>, Vec<(String, String)>, Vec<String>);

/// A HelmRelease's workloads: from its inventory (recent Flux), else from the manifest of
/// its newest deployed Helm release.
async fn helm_release_workloads(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Discovered, ClusterError> {
    let object = format!("HelmRelease {namespace}/{name}");
    let release: HelmRelease = get_typed(cluster, FluxObjectKind::HelmRelease, namespace, name)
        .await?
        .ok_or_else(|| ClusterError::NotFound {
            object: object.clone(),
            hint: "; check spec.source of the ManagedApp".into(),
        })?;
    if let Some(inventory) = release
        .status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .filter(|i| !i.entries.is_empty())
    {
        return inventory_workloads(cluster, inventory).await;
    }
    let location = release_location(&release);
    let selector = format!("owner=helm,name={}", location.name);
    let secrets = Api::<Secret>::namespaced(cluster.client().clone(), &location.storage_namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            ClusterError::api(
                "listing",
                format!(
                    "Helm release secrets in {} ({selector})",
                    location.storage_namespace
                ),
                e,
            )
        })?;
    let secret = newest_deployed(&secrets.items, &location.name).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "{object}: no deployed Helm release {} in namespace {}; wait until Flux has installed it",
            location.name, location.storage_namespace
        ))
    })?;
    let decoded = decode(secret).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    let manifest_namespace = release
        .spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| namespace.to_owned());
    let rendered = workloads_in_manifest(&decoded.manifest, &object, &manifest_namespace)
        .map_err(|e| ClusterError::Invalid(e.to_string()))?;
    // The manifest says which workloads exist; their live objects say how they run now.
    let mut live = Vec::new();
    for workload in rendered {
        let id = match &workload {
            Workload::Deployment(d) => ("apps", "Deployment", &d.metadata),
            Workload::StatefulSet(s) => ("apps", "StatefulSet", &s.metadata),
        };
        let wanted = ObjectId {
            namespace: id.2.namespace.clone().unwrap_or_default(),
            name: id.2.name.clone().unwrap_or_default(),
            group: id.0.into(),
            kind: id.1.into(),
        };
        live.extend(live_workload(cluster, &wanted).await?);
    }
    Ok((live, Vec::new(), Vec::new()))
}

/// The live Deployments/StatefulSets and the PVC objects an inventory lists.
async fn inventory_workloads(
    cluster: &Cluster,
    inventory: &Inventory,
) -> Result<Discovered, ClusterError> {
    let (objects, malformed) = inventory_objects(&inventory.entries);
    let mut workloads = Vec::new();
    let mut claims = Vec::new();
    for object in objects {
        match (object.group.as_str(), object.kind.as_str()) {
            ("apps", "Deployment" | "StatefulSet") => {
                workloads.extend(live_workload(cluster, &object).await?)
            }
            ("", "PersistentVolumeClaim") => claims.push((object.namespace, object.name)),
            _ => {}
        }
    }
    Ok((workloads, claims, malformed))
}

async fn live_workload(cluster: &Cluster, id: &ObjectId) -> Result<Option<Workload>, ClusterError> {
    let describe = format!("{} {}/{}", id.kind, id.namespace, id.name);
    Ok(match id.kind.as_str() {
        "Deployment" => cluster
            .get::<Deployment>(&id.namespace, &id.name)
            .await
            .map_err(|e| ClusterError::api("reading", describe, e))?
            .map(|d| Workload::Deployment(Arc::unwrap_or_clone(d))),
        _ => cluster
            .get::<StatefulSet>(&id.namespace, &id.name)
            .await
            .map_err(|e| ClusterError::api("reading", describe, e))?
            .map(|s| Workload::StatefulSet(Arc::unwrap_or_clone(s))),
    })
}

/// Notes the HorizontalPodAutoscaler that targets each workload: it may keep replicas away
/// from zero and is why Fluxgate restores replicas Flux leaves at zero.
async fn note_autoscalers(
    cluster: &Cluster,
    workloads: &mut [PlannedWorkload],
) -> Result<(), ClusterError> {
    let namespaces: BTreeSet<String> = workloads.iter().map(|w| w.namespace.clone()).collect();
    for namespace in namespaces {
        let autoscalers =
            Api::<HorizontalPodAutoscaler>::namespaced(cluster.client().clone(), &namespace)
                .list(&ListParams::default())
                .await
                .map_err(|e| {
                    ClusterError::api(
                        "listing",
                        format!("HorizontalPodAutoscalers in {namespace}"),
                        e,
                    )
                })?;
        for hpa in autoscalers.items {
            let target = &hpa.spec.scale_target_ref;
            for workload in workloads.iter_mut().filter(|w| w.namespace == namespace) {
                if target.kind == format!("{:?}", workload.kind) && target.name == workload.name {
                    workload.autoscaler = Some(hpa.name_any());
                }
            }
        }
    }
    Ok(())
}

/// What an upgrade of `app` would protect now (SPEC §8), found as Admit finds it: the
/// volumes it would snapshot with their class and its `deletionPolicy`, the workloads it
/// would stop, and what it cannot protect (a volume that is not CSI or has no usable
/// snapshot class, snapshots turned off) or changes for the operation (a StatefulSet that
/// deletes its PVCs on scale-down), each with why. Also whether every volume is protected.
pub async fn protection(
    cluster: &Cluster,
    app: &crate::api::ManagedApp,
) -> Result<(crate::api::Protection, bool), ClusterError> {
    use crate::api::{Protection, SnapshottedVolume};
    let snapshots = &app.spec.snapshots;
    let selection = VolumeSelection {
        include: &snapshots.include,
        exclude: &snapshots.exclude,
        class_name: snapshots.class_name.as_deref(),
        classes: None,
    };
    let inventory = discover_app(
        cluster,
        app.spec.source.kind,
        &app.source_namespace(),
        &app.spec.source.name,
        &selection,
    )
    .await?;
    let mut found = Protection::default();
    for workload in &inventory.workloads {
        let what = format!(
            "{:?} {}/{}",
            workload.kind, workload.namespace, workload.name
        );
        if workload.claim_retention.is_some() {
            found.unprotected.push(format!(
                "{what} deletes its PVCs on scale-down (persistentVolumeClaimRetentionPolicy.whenScaled: Delete): \
                 an operation sets it to Retain while it runs and puts it back after"
            ));
        }
        found.stopped.push(what);
    }
    if !snapshots.enabled {
        found.unprotected.push(format!(
            "snapshots are off (spec.snapshots.enabled: false): none of the app's {} volumes is snapshotted, \
             and a rollback has nothing to restore from",
            inventory.volumes.len()
        ));
        return Ok((found, inventory.volumes.is_empty()));
    }
    let classes = crate::cluster::snapshots::ops::classes(cluster).await?;
    let mut every_volume = true;
    for volume in &inventory.volumes {
        let pvc = format!("{}/{}", volume.namespace, volume.name);
        let Some(driver) = volume.csi_driver.as_deref() else {
            every_volume = false;
            found.unprotected.push(format!(
                "PVC {pvc} is not a CSI volume, so it cannot be snapshotted (an upgrade refuses to start \
                 while it is included): exclude it with spec.snapshots.exclude and back it up another way"
            ));
            continue;
        };
        match class_for_driver(driver, selection.class_name, &classes) {
            Ok(class) => found.snapshotted.push(SnapshottedVolume {
                pvc,
                deletion_policy: classes
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(class.as_str()))
                    .map(|c| c.deletion_policy.clone())
                    .unwrap_or_default(),
                snapshot_class: class,
            }),
            Err(why) => {
                every_volume = false;
                found.unprotected.push(format!("PVC {pvc}: {why}"));
            }
        }
    }
    Ok((found, every_volume))
}
