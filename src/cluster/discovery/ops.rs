//! Discovering an app on the API: the workloads its Flux source deployed (from the
//! HelmRelease's or Kustomization's inventory, else from the newest deployed Helm release's
//! manifest), their live replica counts and autoscalers, and the PVCs they use with
//! everything needed to snapshot and recreate them.

use super::{
    ObjectId, Workload, claims_of_workload, inventory_objects, select_claims, workloads_in_manifest,
};
use crate::api::{PlannedVolume, PlannedWorkload, SourceKind, WorkloadKind};
use crate::cluster::error::ClusterError;
use crate::cluster::flux::{HelmRelease, Inventory, Kustomization};
use crate::cluster::helm_release::{decode, newest_deployed, release_location};
use crate::cluster::snapshots::ops::{claim, csi_driver};
use crate::cluster::snapshots::{VolumeSnapshotClass, capture_volume, class_for_driver};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};

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
    client: &Client,
    kind: SourceKind,
    namespace: &str,
    name: &str,
    selection: &VolumeSelection<'_>,
) -> Result<AppInventory, ClusterError> {
    let (workloads, inventory_claims, malformed) = match kind {
        SourceKind::HelmRelease => helm_release_workloads(client, namespace, name).await?,
        SourceKind::Kustomization => {
            let kustomization = Api::<Kustomization>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| {
                    ClusterError::api("reading", format!("Kustomization {namespace}/{name}"), e)
                })?
                .ok_or_else(|| ClusterError::NotFound {
                    object: format!("Kustomization {namespace}/{name}"),
                    hint: "; check spec.source of the ManagedApp".into(),
                })?;
            let inventory = kustomization.status.and_then(|s| s.inventory).ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "Kustomization {namespace}/{name} has no status.inventory yet; wait until Flux has applied it"
                ))
            })?;
            inventory_workloads(client, &inventory).await?
        }
    };
    let mut planned = Vec::new();
    let mut claims_by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ns, claim_name) in inventory_claims {
        claims_by_namespace
            .entry(ns)
            .or_default()
            .insert(claim_name);
    }
    for workload in &workloads {
        let (kind, meta, replicas) = match workload {
            Workload::Deployment(d) => (
                WorkloadKind::Deployment,
                &d.metadata,
                d.spec.replicas.unwrap_or(1),
            ),
            Workload::StatefulSet(s) => (
                WorkloadKind::StatefulSet,
                &s.metadata,
                s.spec.replicas.unwrap_or(1),
            ),
        };
        let ns = meta
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned());
        let existing = claim_names(client, &ns).await?;
        claims_by_namespace
            .entry(ns.clone())
            .or_default()
            .extend(claims_of_workload(workload, replicas, &existing));
        planned.push(PlannedWorkload {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            namespace: ns,
            replicas,
            autoscaler: None,
        });
    }
    note_autoscalers(client, &mut planned).await?;
    let mut volumes = Vec::new();
    for (ns, claims) in claims_by_namespace {
        for claim_name in select_claims(claims, selection.include, selection.exclude) {
            // A claim a StatefulSet will create for an ordinal it never ran has no data.
            let Some(pvc) = claim(client, &ns, &claim_name).await? else {
                continue;
            };
            volumes.push(capture(client, &pvc, selection).await?);
        }
    }
    Ok(AppInventory {
        workloads: planned,
        volumes,
        malformed_inventory: malformed,
    })
}

async fn capture(
    client: &Client,
    pvc: &PersistentVolumeClaim,
    selection: &VolumeSelection<'_>,
) -> Result<PlannedVolume, ClusterError> {
    let driver = csi_driver(client, pvc).await?;
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

async fn claim_names(client: &Client, namespace: &str) -> Result<Vec<String>, ClusterError> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await
        .map(|list| list.items.into_iter().map(|m| m.name_any()).collect())
        .map_err(|e| ClusterError::api("listing", format!("PVCs in {namespace}"), e))
}

type Discovered = (Vec<Workload>, Vec<(String, String)>, Vec<String>);

/// A HelmRelease's workloads: from its inventory (recent Flux), else from the manifest of
/// its newest deployed Helm release.
async fn helm_release_workloads(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Discovered, ClusterError> {
    let object = format!("HelmRelease {namespace}/{name}");
    let release = Api::<HelmRelease>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("reading", object.clone(), e))?
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
        return inventory_workloads(client, inventory).await;
    }
    let location = release_location(&release);
    let selector = format!("owner=helm,name={}", location.name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &location.storage_namespace)
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
        live.extend(live_workload(client, &wanted).await?);
    }
    Ok((live, Vec::new(), Vec::new()))
}

/// The live Deployments/StatefulSets and the PVC objects an inventory lists.
async fn inventory_workloads(
    client: &Client,
    inventory: &Inventory,
) -> Result<Discovered, ClusterError> {
    let (objects, malformed) = inventory_objects(&inventory.entries);
    let mut workloads = Vec::new();
    let mut claims = Vec::new();
    for object in objects {
        match (object.group.as_str(), object.kind.as_str()) {
            ("apps", "Deployment" | "StatefulSet") => {
                workloads.extend(live_workload(client, &object).await?)
            }
            ("", "PersistentVolumeClaim") => claims.push((object.namespace, object.name)),
            _ => {}
        }
    }
    Ok((workloads, claims, malformed))
}

async fn live_workload(client: &Client, id: &ObjectId) -> Result<Option<Workload>, ClusterError> {
    let describe = format!("{} {}/{}", id.kind, id.namespace, id.name);
    Ok(match id.kind.as_str() {
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), &id.namespace)
            .get_opt(&id.name)
            .await
            .map_err(|e| ClusterError::api("reading", describe, e))?
            .map(Workload::Deployment),
        _ => Api::<StatefulSet>::namespaced(client.clone(), &id.namespace)
            .get_opt(&id.name)
            .await
            .map_err(|e| ClusterError::api("reading", describe, e))?
            .map(Workload::StatefulSet),
    })
}

/// Notes the HorizontalPodAutoscaler that targets each workload: it may keep replicas away
/// from zero and is why Fluxgate restores replicas Flux leaves at zero.
async fn note_autoscalers(
    client: &Client,
    workloads: &mut [PlannedWorkload],
) -> Result<(), ClusterError> {
    let namespaces: BTreeSet<String> = workloads.iter().map(|w| w.namespace.clone()).collect();
    for namespace in namespaces {
        let autoscalers = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &namespace)
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
