//! The CSI driver stand-in's own contract: the provisioner alone makes the volumes the PV
//! controller hands it (and binds nothing), reclaim policies, what a snapshot keeps after
//! its volume is gone, the size rule of restores, and the claim protected while a snapshot
//! of it is being cut.

use crate::common::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use sim::csi::provisioner::{PV_FINALIZER, SNAPSHOT_SOURCE_FINALIZER};
use sim::csi::snapshotter::BEING_CREATED;
use sim::csi::{CsiDriver, CsiOptions};
use sim::faults::Failures;
use sim::kinds::{volume_snapshot, volume_snapshot_content};
use sim::seed;
use sim::snapshots::{CONTENT_FINALIZER, PVC_FINALIZER};
use sim::volumes::{
    PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER, content_token, snapshot_token,
    volume_token, writer_of,
};
use sim::world::WorldOptions;
use std::time::Duration;

async fn claim(
    client: &Client,
    name: &str,
    spec: Value,
    annotations: Value,
) -> PersistentVolumeClaim {
    let mut full =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "apps", "annotations": annotations},
        "spec": full,
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &claim)
        .await
        .unwrap_or_else(|e| panic!("creating claim {name}: {e}"))
}

async fn pod(client: &Client, name: &str, claim: &str, image: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": image}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
}

async fn snapshot(client: &Client, name: &str, claim: &str) {
    seed::put(
        client,
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"source": {"persistentVolumeClaimName": claim}},
        }),
    )
    .await
    .unwrap();
}

fn bound(p: &PersistentVolumeClaim) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

fn volume_name(p: &PersistentVolumeClaim) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("bound to a volume")
}

#[tokio::test]
async fn the_provisioner_alone_makes_volumes_for_handed_over_claims_and_binds_nothing() {
    let kube = kubesim::KubeSim::start().await;
    kube.load_third_party_crds().unwrap();
    let client = kube.client();
    seed::storage(&client).await.unwrap();
    seed::namespace(&client, "apps").await.unwrap();
    let _driver = CsiDriver::start(client.clone(), Failures::default(), CsiOptions::default());
    // Claims as kube-controller-manager hands them over: annotated with the provisioner.
    let handed = json!({STORAGE_PROVISIONER: seed::DRIVER});
    let now = claim(
        &client,
        "now",
        json!({"storageClassName": seed::IMMEDIATE_CLASS}),
        handed.clone(),
    )
    .await;
    let late = claim(
        &client,
        "late",
        json!({"storageClassName": seed::WFFC_CLASS}),
        handed,
    )
    .await;
    let elsewhere = claim(
        &client,
        "elsewhere",
        json!({"storageClassName": seed::IMMEDIATE_CLASS}),
        json!({STORAGE_PROVISIONER: "other.csi.example.com"}),
    )
    .await;
    let unasked = claim(
        &client,
        "unasked",
        json!({"storageClassName": seed::IMMEDIATE_CLASS}),
        json!({}),
    )
    .await;

    let pvs = Api::<PersistentVolume>::all(client.clone());
    let uid = |c: &PersistentVolumeClaim| c.metadata.uid.clone().unwrap();
    let made = wait_for(
        &pvs,
        &format!("pvc-{}", uid(&now)),
        "volume for the Immediate claim",
        |_| true,
    )
    .await;
    let v = json_of(&made);
    assert_eq!(v["metadata"]["annotations"][PROVISIONED_BY], seed::DRIVER);
    assert_eq!(v["metadata"]["finalizers"], json!([PV_FINALIZER]));
    assert_eq!(v["spec"]["claimRef"]["name"], "now");
    assert_eq!(v["spec"]["claimRef"]["namespace"], "apps");
    assert_eq!(v["spec"]["claimRef"]["uid"], uid(&now).as_str());
    assert_eq!(v["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(v["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(v["spec"]["volumeMode"], "Filesystem");
    assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(v["spec"]["storageClassName"], seed::IMMEDIATE_CLASS);
    assert_eq!(v["spec"]["csi"]["driver"], seed::DRIVER);
    assert!(
        v["spec"]["csi"]["volumeHandle"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert!(v["spec"]["nodeAffinity"].is_null());
    assert_eq!(
        volume_token(&client, &made.name_any())
            .await
            .unwrap()
            .as_deref()
            .map(writer_of),
        Some("new")
    );

    // Nothing may happen, so there is no event to wait for: give the provisioner time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for (c, why) in [
        (
            &late,
            "a WaitForFirstConsumer claim before the scheduler chose a node",
        ),
        (&elsewhere, "a claim handed to another driver"),
        (&unasked, "a claim not handed over"),
    ] {
        assert!(
            pvs.get_opt(&format!("pvc-{}", uid(c)))
                .await
                .unwrap()
                .is_none(),
            "a volume was made for {why}"
        );
    }
    // The scheduler's choice lets the WaitForFirstConsumer claim provision.
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "apps");
    claims
        .patch(
            "late",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {SELECTED_NODE: "node-a"}}})),
        )
        .await
        .unwrap();
    let late_pv = wait_for(
        &pvs,
        &format!("pvc-{}", uid(&late)),
        "volume after selected-node",
        |_| true,
    )
    .await;
    assert_eq!(
        json_of(&late_pv)["spec"]["storageClassName"],
        seed::WFFC_CLASS
    );
    // Binding is the PV controller's, which does not run here.
    for name in ["now", "late"] {
        let c = claims.get(name).await.unwrap();
        assert!(
            c.spec.unwrap().volume_name.is_none(),
            "{name} was bound by the provisioner"
        );
        assert!(!bound(&claims.get(name).await.unwrap()));
    }
}

#[tokio::test]
async fn retain_keeps_a_released_volume_with_its_content_and_delete_removes_it() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::put(&env.client, json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "sim-retain"},
        "provisioner": seed::DRIVER, "reclaimPolicy": "Retain", "volumeBindingMode": "Immediate",
    }))
    .await
    .unwrap();
    let client = &env.client;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "apps");
    let pods = Api::<Pod>::namespaced(client.clone(), "apps");
    let pvs = Api::<PersistentVolume>::all(client.clone());
    claim(
        client,
        "kept",
        json!({"storageClassName": "sim-retain"}),
        json!({}),
    )
    .await;
    claim(
        client,
        "gone",
        json!({"storageClassName": seed::IMMEDIATE_CLASS}),
        json!({}),
    )
    .await;
    pod(client, "writes-kept", "kept", "ghcr.io/example/app:1.0.0").await;
    pod(client, "writes-gone", "gone", "ghcr.io/example/app:1.0.0").await;
    let kept_token = wait_for_token(client, "apps", "kept", "v1 wrote kept", |t| {
        writer_of(t) == "1.0.0"
    })
    .await;
    wait_for_token(client, "apps", "gone", "v1 wrote gone", |t| {
        writer_of(t) == "1.0.0"
    })
    .await;
    let kept_pv = volume_name(&claims.get("kept").await.unwrap());
    let gone_pv = volume_name(&claims.get("gone").await.unwrap());
    // The provisioner guards only the volumes it must delete.
    wait_for(&pvs, &gone_pv, "Delete volume guarded", |pv| {
        pv.finalizers().iter().any(|f| f == PV_FINALIZER)
    })
    .await;
    assert!(
        !pvs.get(&kept_pv)
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|f| f == PV_FINALIZER),
        "a Retain volume carries the provisioner's finalizer"
    );

    for p in ["writes-kept", "writes-gone"] {
        pods.delete(p, &DeleteParams::default()).await.unwrap();
        wait_gone(&pods, p, "writer pod").await;
    }
    for c in ["kept", "gone"] {
        claims.delete(c, &DeleteParams::default()).await.unwrap();
        wait_gone(&claims, c, "claim").await;
    }
    wait_gone(&pvs, &gone_pv, "the released Delete volume").await;
    wait_for(&pvs, &kept_pv, "the Retain volume Released", |pv| {
        pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
    })
    .await;
    // Nothing may happen, so there is no event to wait for: give the sims time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let kept = pvs
        .get(&kept_pv)
        .await
        .expect("a Retain volume was deleted");
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert_eq!(
        volume_token(client, &kept_pv).await.unwrap().as_deref(),
        Some(kept_token.as_str()),
        "the retained volume still holds what v1 wrote"
    );
}

#[tokio::test]
async fn a_snapshot_keeps_its_content_after_its_volume_is_gone_and_restores_no_smaller() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let client = &env.client;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "apps");
    let pods = Api::<Pod>::namespaced(client.clone(), "apps");
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let snaps = dynamic(client, &volume_snapshot(), "apps");
    claim(client, "data", json!({}), json!({})).await;
    pod(client, "app", "data", "ghcr.io/example/app:1.0.0").await;
    let v1 = wait_for_token(client, "apps", "data", "v1 write", |t| {
        writer_of(t) == "1.0.0"
    })
    .await;
    snapshot(client, "snap", "data").await;
    wait_for(&snaps, "snap", "snapshot ready", |s| {
        json_of(s)["status"]["readyToUse"] == true
    })
    .await;

    // The volume goes (policy Delete) with everything it held; the snapshot keeps its own.
    let data_pv = volume_name(&claims.get("data").await.unwrap());
    pods.delete("app", &DeleteParams::default()).await.unwrap();
    wait_gone(&pods, "app", "pod").await;
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvs, &data_pv, "the source volume").await;
    assert_eq!(
        snapshot_token(client, "apps", "snap")
            .await
            .unwrap()
            .as_deref(),
        Some(v1.as_str())
    );

    // external-provisioner refuses a volume smaller than the snapshot's restoreSize.
    let small = claim(
        client,
        "small",
        json!({"resources": {"requests": {"storage": "512Mi"}},
               "dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}}),
        json!({}),
    )
    .await;
    wait_for(&claims, "small", "handed to the driver", |p| {
        p.annotations().get(STORAGE_PROVISIONER).map(String::as_str) == Some(seed::DRIVER)
    })
    .await;
    // Nothing may happen, so there is no event to wait for: give the provisioner time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !bound(&claims.get("small").await.unwrap()),
        "restored smaller than its snapshot"
    );
    assert!(
        pvs.get_opt(&format!("pvc-{}", small.metadata.uid.unwrap()))
            .await
            .unwrap()
            .is_none()
    );

    claim(
        client,
        "big",
        json!({"resources": {"requests": {"storage": "2Gi"}},
               "dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}}),
        json!({}),
    )
    .await;
    let big = wait_for(&claims, "big", "restore bound", bound).await;
    assert_eq!(
        content_token(client, "apps", "big")
            .await
            .unwrap()
            .as_deref(),
        Some(v1.as_str())
    );
    let pv = pvs.get(&volume_name(&big)).await.unwrap();
    assert_eq!(json_of(&pv)["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(
        json_of(&big)["status"]["capacity"]["storage"],
        "2Gi",
        "the claim reports its volume's size"
    );
    // The provisioner's hold on the snapshot ends with the restore.
    wait_for(&snaps, "snap", "provisioner's finalizer gone", |s| {
        !s.finalizers()
            .iter()
            .any(|f| f == SNAPSHOT_SOURCE_FINALIZER)
    })
    .await;
}

#[tokio::test]
async fn a_claim_is_protected_while_a_snapshot_of_it_is_cut() {
    let mut options = WorldOptions::fast();
    options.csi.snapshot_ready_delay = Duration::from_millis(1500);
    let env = env_with(options).await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let client = &env.client;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "apps");
    let snaps = dynamic(client, &volume_snapshot(), "apps");
    claim(client, "data", json!({}), json!({})).await;
    wait_for(&claims, "data", "bound", bound).await;
    snapshot(client, "snap", "data").await;
    wait_for(&claims, "data", "pvc-as-source-protection", |p| {
        p.finalizers().iter().any(|f| f == PVC_FINALIZER)
    })
    .await;
    let cut = wait_for(&snaps, "snap", "cut, not ready", |s| {
        json_of(s)["status"]["creationTime"].is_string()
    })
    .await;
    let cut = json_of(&cut);
    assert_eq!(cut["status"]["readyToUse"], false);
    assert_eq!(
        cut["spec"]["volumeSnapshotClassName"],
        seed::SNAPSHOT_CLASS,
        "the default class"
    );

    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    // Nothing may happen, so there is no event to wait for: give the sims time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let held = claims
        .get("data")
        .await
        .expect("a claim went while its snapshot was cut");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        held.finalizers().iter().any(|f| f == PVC_FINALIZER),
        "{held:?}"
    );
    let ready = wait_for(&snaps, "snap", "snapshot ready", |s| {
        json_of(s)["status"]["readyToUse"] == true
    })
    .await;
    wait_gone(&claims, "data", "claim once its snapshot is ready").await;

    // The content as the sidecar leaves it.
    let content_name = json_of(&ready)["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_owned();
    let contents =
        kube::Api::<kube::api::DynamicObject>::all_with(client.clone(), &volume_snapshot_content());
    let content = contents.get(&content_name).await.unwrap();
    assert!(content.finalizers().iter().any(|f| f == CONTENT_FINALIZER));
    assert!(!content.annotations().contains_key(BEING_CREATED));
    let status = &json_of(&content)["status"];
    assert!(status["snapshotHandle"].is_string());
    assert!(status["creationTime"].is_i64());
    assert_eq!(status["restoreSize"], 1u64 << 30);
    assert_eq!(status["readyToUse"], true);
}
