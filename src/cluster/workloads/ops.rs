//! Talking to the API about workloads: their replicas, scaling them (a merge patch of
//! `spec.replicas` only), a StatefulSet's PVC retention on scale-down, and the pods that
//! still hold an app's volumes.

use super::{PodMount, pods_mounting};
use crate::api::{PlannedWorkload, RETAIN_CLAIMS, WorkloadKind};
use crate::cluster::cache::{Cluster, WatchedKind};
use crate::cluster::error::ClusterError;
use crate::cluster::patch_params;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch};
use serde_json::json;
use std::collections::BTreeSet;

fn describe(kind: WorkloadKind, namespace: &str, name: &str) -> String {
    format!("{kind:?} {namespace}/{name}")
}

/// A workload's `spec.replicas` (1 when unset, as Kubernetes defaults it), or None when it
/// does not exist.
pub async fn replicas(
    cluster: &Cluster,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
) -> Result<Option<i32>, ClusterError> {
    let error = |e| ClusterError::api("reading", describe(kind, namespace, name), e);
    Ok(match kind {
        WorkloadKind::Deployment => cluster
            .get::<Deployment>(namespace, name)
            .await
            .map_err(error)?
            .map(|d| d.spec.replicas.unwrap_or(1)),
        WorkloadKind::StatefulSet => cluster
            .get::<StatefulSet>(namespace, name)
            .await
            .map_err(error)?
            .map(|s| s.spec.replicas.unwrap_or(1)),
    })
}

/// A StatefulSet's `persistentVolumeClaimRetentionPolicy.whenScaled` (`Retain`, the API's
/// default, when unset), or None when it does not exist.
pub async fn when_scaled(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, ClusterError> {
    Ok(cluster
        .get::<StatefulSet>(namespace, name)
        .await
        .map_err(|e| {
            ClusterError::api(
                "reading",
                describe(WorkloadKind::StatefulSet, namespace, name),
                e,
            )
        })?
        .map(|s| {
            s.spec
                .persistent_volume_claim_retention_policy
                .as_ref()
                .and_then(|p| p.when_scaled.clone())
                .unwrap_or_else(|| RETAIN_CLAIMS.to_owned())
        }))
}

/// Sets a StatefulSet's `persistentVolumeClaimRetentionPolicy.whenScaled` (a merge patch of
/// that field only; `whenDeleted` is left as it is).
pub async fn set_when_scaled(
    cluster: &Cluster,
    workload: &PlannedWorkload,
    when_scaled: &str,
) -> Result<(), ClusterError> {
    let patch = Patch::Merge(
        json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenScaled": when_scaled}}}),
    );
    Api::<StatefulSet>::namespaced(cluster.client().clone(), &workload.namespace)
        .patch(&workload.name, &patch_params(), &patch)
        .await
        .map(|written| cluster.wrote(WatchedKind::StatefulSet, &written))
        .map_err(|e| {
            ClusterError::api(
                "setting the PVC retention policy of",
                describe(workload.kind, &workload.namespace, &workload.name),
                e,
            )
        })
}

/// Sets a workload's replicas.
pub async fn scale(
    cluster: &Cluster,
    workload: &PlannedWorkload,
    replicas: i32,
) -> Result<(), ClusterError> {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let object = describe(workload.kind, &workload.namespace, &workload.name);
    let (namespace, name) = (&workload.namespace, &workload.name);
    let result = match workload.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(cluster.client().clone(), namespace)
                .patch(name, &patch_params(), &patch)
                .await
                .map(|written| cluster.wrote(WatchedKind::Deployment, &written))
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(cluster.client().clone(), namespace)
                .patch(name, &patch_params(), &patch)
                .await
                .map(|written| cluster.wrote(WatchedKind::StatefulSet, &written))
        }
    };
    result.map_err(|e| ClusterError::api("scaling", object, e))
}

/// The pods of `namespace` that still hold any of `claims`, with their owners resolved.
pub async fn mounts(
    cluster: &Cluster,
    namespace: &str,
    claims: &BTreeSet<String>,
) -> Result<Vec<PodMount>, ClusterError> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    // Always from the API server (pods are not cached): snapshots follow once no pod holds
    // the volumes, and a pod a lagging cache missed would still be writing to them.
    let pods = Api::<Pod>::namespaced(cluster.client().clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| ClusterError::api("listing", format!("pods in {namespace}"), e))?;
    // ReplicaSets only tell which Deployment owns a pod: not read when no pod needs them.
    let owned_by_replica_set = pods.items.iter().any(|pod| {
        pod.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
    });
    let replica_sets = if owned_by_replica_set {
        Api::<ReplicaSet>::namespaced(cluster.client().clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| ClusterError::api("listing", format!("ReplicaSets in {namespace}"), e))?
            .items
    } else {
        Vec::new()
    };
    Ok(pods_mounting(&pods.items, claims, &replica_sets))
}
