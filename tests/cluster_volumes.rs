//! Workloads, pods, snapshots and PVCs on an API server: scaling touches only replicas,
//! pods are traced to their Deployment through the ReplicaSet's UID, snapshot creation is
//! idempotent, and a PVC is recreated from a snapshot with its full spec.

mod common;

use common::cluster;
use fluxgate::api::{PlannedWorkload, WorkloadKind};
use fluxgate::cluster::cache::Cluster;
use fluxgate::cluster::snapshots::ops::{
    claim, classes, create_claim, create_snapshot, csi_driver, delete_claim, snapshot,
};
use fluxgate::cluster::snapshots::{
    capture_volume, class_for_driver, restored_claim, restored_from, snapshot_for,
};
use fluxgate::cluster::workloads::PodOwner;
use fluxgate::cluster::workloads::ops::{mounts, replicas, scale};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use kube::api::Api;
use kubesim::{KubeSim, Match};
use serde_json::json;
use std::collections::BTreeSet;

async fn app() -> KubeSim {
    let sim = cluster(&["apps"]).await;
    for object in [
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
               "provisioner": "hostpath.csi.k8s.io", "volumeBindingMode": "WaitForFirstConsumer"}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "hostpath", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete"}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "hostpath.csi.k8s.io", "volumeHandle": "h1"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-db-0", "namespace": "apps", "labels": {"app": "db"}, "annotations": {"team": "data"}},
               "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"], "volumeName": "pv-1",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "unbound", "namespace": "apps"},
               "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "apps"},
               "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}}}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-5d8f", "namespace": "apps",
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": true}]},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "w", "image": "w"}]}}}}),
    ] {
        sim.put(object).unwrap();
    }
    // The server assigns UIDs; the pod's owner reference must carry the real one.
    let replica_set = Api::<ReplicaSet>::namespaced(sim.client(), "apps")
        .get("web-5d8f")
        .await
        .unwrap();
    let uid = replica_set.metadata.uid.unwrap();
    sim.put(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-5d8f-abc", "namespace": "apps",
           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": uid, "controller": true}]},
           "spec": {"containers": [{"name": "w", "image": "w"}], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data-db-0"}}]},
           "status": {"phase": "Running"}}))
        .unwrap();
    sim
}

#[tokio::test]
async fn scaling_changes_only_replicas() {
    let sim = app().await;
    let client = Cluster::direct(sim.client());
    let db = PlannedWorkload {
        kind: WorkloadKind::StatefulSet,
        name: "db".into(),
        namespace: "apps".into(),
        replicas: 2,
        autoscaler: None,
        claim_retention: None,
    };
    assert_eq!(
        replicas(&client, WorkloadKind::StatefulSet, "apps", "db")
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        replicas(&client, WorkloadKind::Deployment, "apps", "missing")
            .await
            .unwrap(),
        None
    );
    scale(&client, &db, 0).await.unwrap();
    let sts = Api::<StatefulSet>::namespaced(client.client().clone(), "apps")
        .get("db")
        .await
        .unwrap();
    assert_eq!(sts.spec.replicas, Some(0));
    assert_eq!(
        sts.spec.template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("postgres:16")
    );
}

#[tokio::test]
async fn pods_are_traced_to_their_deployment_by_uid() {
    let sim = app().await;
    let found = mounts(
        &Cluster::direct(sim.client()),
        "apps",
        &BTreeSet::from(["data-db-0".to_owned()]),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].owner, PodOwner::Deployment("web".into()));
    assert!(
        mounts(
            &Cluster::direct(sim.client()),
            "apps",
            &BTreeSet::from(["other".to_owned()])
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn a_volume_is_snapshotted_once_and_restored_with_its_spec() {
    let sim = app().await;
    let client = Cluster::direct(sim.client());
    let original = claim(&client, "apps", "data-db-0").await.unwrap().unwrap();
    let driver = csi_driver(&client, &original).await.unwrap();
    assert_eq!(
        driver.as_deref(),
        Some("hostpath.csi.k8s.io"),
        "from the bound PersistentVolume"
    );
    let unbound = claim(&client, "apps", "unbound").await.unwrap().unwrap();
    assert_eq!(
        csi_driver(&client, &unbound).await.unwrap().as_deref(),
        Some("hostpath.csi.k8s.io"),
        "from the StorageClass"
    );

    let class = class_for_driver(
        "hostpath.csi.k8s.io",
        None,
        &classes(&client).await.unwrap(),
    )
    .unwrap();
    let volume = capture_volume(&original, driver, Some(class.clone()));
    let owner = fluxgate::cluster::snapshots::SnapshotOwner {
        name: "db",
        uid: "app-uid",
        purpose: fluxgate::cluster::snapshots::PRE_UPGRADE,
    };
    let wanted = snapshot_for(&volume, &owner, "db-1-5-0", "uid-1", &class);
    create_snapshot(&client, &wanted).await.unwrap();
    create_snapshot(&client, &wanted)
        .await
        .expect("creating it again after a crash is fine");
    assert_eq!(
        sim.count(&Match::any().verb("create").resource("volumesnapshots")),
        2
    );
    let stored = snapshot(&client, "apps", "fluxgate-uid-1-data-db-0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.spec.source.persistent_volume_claim_name.as_deref(),
        Some("data-db-0")
    );

    delete_claim(&client, "apps", "data-db-0").await.unwrap();
    delete_claim(&client, "apps", "data-db-0")
        .await
        .expect("deleting a gone PVC is fine");
    create_claim(
        &client,
        &restored_claim(&volume, "fluxgate-uid-1-data-db-0", None),
    )
    .await
    .unwrap();
    let restored = claim(&client, "apps", "data-db-0").await.unwrap().unwrap();
    assert!(restored_from(&restored, "fluxgate-uid-1-data-db-0"));
    let spec = restored.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        spec.data_source_ref.unwrap().name,
        "fluxgate-uid-1-data-db-0"
    );
    assert_eq!(restored.metadata.labels.unwrap()["app"], "db");
    assert_eq!(restored.metadata.annotations.unwrap()["team"], "data");
}
