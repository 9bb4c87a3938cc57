//! Storage on kubesim: the CSI driver stand-in (provisioner, snapshotter sidecar, node
//! plugin) with the sims of the PV controller, the scheduler's volume binding and the
//! snapshot-controller — snapshots, restores, content tokens, reclaim policies and the
//! protection finalizers.

use crate::common::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sim::kinds::{volume_snapshot, volume_snapshot_content};
use sim::seed;
use sim::volumes::{PVC_PROTECTION, STORAGE_PROVISIONER, content_token, snapshot_token, writer_of};
use sim::world::WorldOptions;
use std::time::{Duration, Instant};

async fn pvc(env: &Env, name: &str, class: Option<&str>, source: Option<&str>) {
    let mut spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    if let Some(s) = source {
        spec["dataSourceRef"] =
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": s});
    }
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "apps"}, "spec": spec,
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "apps")
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
}

async fn pod(env: &Env, name: &str, claim: &str, image: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": image}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(env.client.clone(), "apps")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn snapshot(env: &Env, name: &str, claim: &str) {
    seed::put(
        &env.client,
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

#[tokio::test]
async fn snapshot_becomes_ready_with_restore_size_and_a_restore_gets_its_content() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "data", None, None).await;
    wait_for(&pvcs, "data", "bound", bound).await;
    let fresh = content_token(&env.client, "apps", "data").await.unwrap();
    assert_eq!(fresh.as_deref().map(writer_of), Some("new"), "{fresh:?}");

    // Version 1.0.0 runs and writes.
    pod(&env, "app-v1", "data", "ghcr.io/example/app:1.0.0").await;
    let v1_token = wait_for_token(&env.client, "apps", "data", "v1 write", |t| {
        writer_of(t) == "1.0.0"
    })
    .await;

    snapshot(&env, "snap-1", "data").await;
    let snaps = dynamic(&env.client, &volume_snapshot(), "apps");
    let snap = wait_for(&snaps, "snap-1", "snapshot ready", |s| {
        json_of(s)["status"]["readyToUse"] == true
    })
    .await;
    let s = json_of(&snap);
    assert_eq!(s["status"]["restoreSize"], "1Gi");
    assert!(s["status"]["creationTime"].is_string());
    assert!(s["status"]["error"].is_null());
    assert_eq!(
        snapshot_token(&env.client, "apps", "snap-1")
            .await
            .unwrap()
            .as_deref(),
        Some(v1_token.as_str())
    );
    let content_name = s["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap();
    let contents = kube::Api::<kube::api::DynamicObject>::all_with(
        env.client.clone(),
        &volume_snapshot_content(),
    );
    let content = json_of(&contents.get(content_name).await.unwrap());
    assert_eq!(content["spec"]["driver"], seed::DRIVER);
    assert_eq!(
        content["spec"]["volumeSnapshotClassName"],
        seed::SNAPSHOT_CLASS
    );
    assert_eq!(content["spec"]["volumeSnapshotRef"]["name"], "snap-1");
    assert_eq!(content["status"]["restoreSize"], 1u64 << 30);
    assert_eq!(content["status"]["readyToUse"], true);

    // Version 2.0.0 writes over it; a restore from the snapshot has the v1 content.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");
    pods.delete("app-v1", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pods, "app-v1", "v1 pod").await;
    pod(&env, "app-v2", "data", "ghcr.io/example/app:2.0.0").await;
    let v2 = wait_for_token(&env.client, "apps", "data", "v2 write", |t| {
        writer_of(t) == "2.0.0"
    })
    .await;
    assert_ne!(v2, v1_token);
    pvc(&env, "restored", None, Some("snap-1")).await;
    let restored = wait_for(&pvcs, "restored", "restore bound", bound).await;
    let data = pvcs.get("data").await.unwrap();
    assert_ne!(
        restored.spec.unwrap().volume_name,
        data.spec.unwrap().volume_name,
        "a restore is a volume of its own"
    );
    assert_eq!(
        content_token(&env.client, "apps", "restored")
            .await
            .unwrap()
            .as_deref(),
        Some(v1_token.as_str())
    );
}

#[tokio::test]
async fn snapshot_errors_are_injected_and_cleared() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "data", None, None).await;
    wait_for(&pvcs, "data", "bound", bound).await;
    env.world.failures.fail_snapshots("bad-", "quota exceeded");
    snapshot(&env, "bad-1", "data").await;
    seed::put(&env.client, json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "annotated", "namespace": "apps", "annotations": {"sim.fluxgate.dev/snapshot-error": "driver down"}},
        "spec": {"source": {"persistentVolumeClaimName": "data"}},
    }))
    .await
    .unwrap();
    snapshot(&env, "missing-claim", "nope").await;
    let snaps = dynamic(&env.client, &volume_snapshot(), "apps");
    for (name, message) in [
        ("bad-1", "quota exceeded"),
        ("annotated", "driver down"),
        ("missing-claim", "not found"),
    ] {
        let s = wait_for(&snaps, name, "snapshot error", |s| {
            json_of(s)["status"]["error"]["message"].is_string()
        })
        .await;
        let s = json_of(&s);
        assert!(
            s["status"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{s}"
        );
        assert_ne!(s["status"]["readyToUse"], true);
    }
    // The driver's refusal is the content's error, which the snapshot-controller copied.
    let bad = json_of(&snaps.get("bad-1").await.unwrap());
    let contents = kube::Api::<kube::api::DynamicObject>::all_with(
        env.client.clone(),
        &volume_snapshot_content(),
    );
    let content = json_of(
        &contents
            .get(
                bad["status"]["boundVolumeSnapshotContentName"]
                    .as_str()
                    .unwrap(),
            )
            .await
            .unwrap(),
    );
    let message = content["status"]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Failed to create snapshot: failed to take snapshot of the volume ")
            && message.ends_with("\"rpc error: code = Internal desc = quota exceeded\""),
        "{message}"
    );
    assert_eq!(bad["status"]["error"]["message"], message);
    env.world.failures.clear_snapshot_failures();
    let s = wait_for(&snaps, "bad-1", "ready after clearing", |s| {
        json_of(s)["status"]["readyToUse"] == true
    })
    .await;
    assert!(json_of(&s)["status"]["error"].is_null());
}

#[tokio::test]
async fn snapshot_ready_delay_is_honoured() {
    let mut options = WorldOptions::fast();
    options.csi.snapshot_ready_delay = Duration::from_millis(600);
    let env = env_with(options).await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "data", None, None).await;
    wait_for(&pvcs, "data", "bound", bound).await;
    let start = Instant::now();
    snapshot(&env, "slow", "data").await;
    let snaps = dynamic(&env.client, &volume_snapshot(), "apps");
    let cut = wait_for(&snaps, "slow", "snapshot cut", |s| {
        json_of(s)["status"]["boundVolumeSnapshotContentName"].is_string()
    })
    .await;
    assert_eq!(json_of(&cut)["status"]["readyToUse"], false);
    wait_for(&snaps, "slow", "snapshot ready", |s| {
        json_of(s)["status"]["readyToUse"] == true
    })
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "ready after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn wait_for_first_consumer_claim_stays_pending_until_a_pod_uses_it() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "late", Some(seed::WFFC_CLASS), None).await;
    // The binder has seen it once it adds protection; a claim created after it binds.
    wait_for(&pvcs, "late", "protection added", |p| {
        p.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == PVC_PROTECTION)
    })
    .await;
    pvc(&env, "control", Some(seed::IMMEDIATE_CLASS), None).await;
    wait_for(&pvcs, "control", "immediate claim bound", bound).await;
    let late = pvcs.get("late").await.unwrap();
    assert!(
        !bound(&late),
        "WaitForFirstConsumer claim bound without a consumer"
    );
    assert!(late.spec.unwrap().volume_name.is_none());

    pod(&env, "consumer", "late", "ghcr.io/example/app:1.0.0").await;
    let late = wait_for(&pvcs, "late", "bound for its consumer", bound).await;
    let pv = Api::<PersistentVolume>::all(env.client.clone())
        .get(late.spec.unwrap().volume_name.as_deref().unwrap())
        .await
        .unwrap();
    let spec = pv.spec.unwrap();
    assert_eq!(spec.csi.unwrap().driver, seed::DRIVER);
    assert_eq!(spec.storage_class_name.as_deref(), Some(seed::WFFC_CLASS));
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");
    wait_for(&pods, "consumer", "pod running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
}

#[tokio::test]
async fn claim_mounted_by_a_pod_stays_terminating_until_the_pod_is_gone() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "data", None, None).await;
    pod(&env, "user", "data", "ghcr.io/example/app:1.0.0").await;
    wait_for(&pods, "user", "pod running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let pv_name = pvcs
        .get("data")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();

    pvcs.delete("data", &DeleteParams::default()).await.unwrap();
    // Nothing may happen, so there is no event to wait for: give the binder time to err.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = pvcs.get("data").await.expect("claim in use was deleted");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        held.metadata
            .finalizers
            .unwrap()
            .contains(&PVC_PROTECTION.to_owned())
    );

    pods.delete("user", &DeleteParams::default()).await.unwrap();
    wait_gone(&pods, "user", "pod").await;
    wait_gone(&pvcs, "data", "claim after its pod").await;
    wait_gone(
        &Api::<PersistentVolume>::all(env.client.clone()),
        &pv_name,
        "released volume",
    )
    .await;
}

#[tokio::test]
async fn a_dropped_world_stops_acting() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "before", None, None).await;
    wait_for(&pvcs, "before", "bound while running", bound).await;
    let Env {
        world,
        client,
        _kube,
    } = env;
    drop(world);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "apps");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "after", "namespace": "apps"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &claim).await.unwrap();
    // Nothing may happen, so there is no event to wait for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pvcs.get("after").await.unwrap();
    assert!(
        !bound(&after) && after.metadata.finalizers.is_none(),
        "a dropped binder still acted: {after:?}"
    );
}

#[tokio::test]
async fn sims_started_before_the_crds_back_off_then_pick_them_up() {
    let kube = kubesim::KubeSim::start().await;
    let client = kube.client();
    let world = sim::world::World::start(client.clone(), WorldOptions::fast())
        .await
        .unwrap();
    // Failing watches must retry with backoff, not spin: measure one second of it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = kube.count(&kubesim::Match::any());
    assert!(
        requests < 100,
        "{requests} requests in one second without CRDs"
    );

    kube.load_third_party_crds().unwrap();
    seed::storage(&client).await.unwrap();
    seed::namespace(&client, "apps").await.unwrap();
    let env = Env {
        world,
        client,
        _kube: kube,
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "data", None, None).await;
    wait_for(&pvcs, "data", "bound", bound).await;
    snapshot(&env, "late", "data").await;
    let snaps = dynamic(&env.client, &volume_snapshot(), "apps");
    wait_for(
        &snaps,
        "late",
        "snapshot handled once its CRD exists",
        |s| json_of(s)["status"]["readyToUse"] == true,
    )
    .await;
}

#[tokio::test]
async fn deleting_a_snapshot_waits_for_pending_restores_then_takes_its_content() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "data", None, None).await;
    wait_for(&pvcs, "data", "bound", bound).await;
    snapshot(&env, "snap", "data").await;
    let snaps = dynamic(&env.client, &volume_snapshot(), "apps");
    let ready = wait_for(&snaps, "snap", "ready", |s| {
        json_of(s)["status"]["readyToUse"] == true
    })
    .await;
    let content = json_of(&ready)["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_owned();

    // A WaitForFirstConsumer restore stays Pending, so it holds the snapshot.
    pvc(&env, "restore", Some(seed::WFFC_CLASS), Some("snap")).await;
    wait_for(&pvcs, "restore", "restore seen by the binder", |p| {
        p.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == PVC_PROTECTION)
    })
    .await;
    snaps
        .delete("snap", &DeleteParams::default())
        .await
        .unwrap();
    let held = wait_for(&snaps, "snap", "deletion requested", |s| {
        s.metadata.deletion_timestamp.is_some()
    })
    .await;
    assert!(
        held.metadata
            .finalizers
            .unwrap()
            .iter()
            .any(|f| f == sim::snapshots::SOURCE_FINALIZER)
    );
    // Nothing may happen, so there is no event to wait for: give the snapshotter time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        snaps.get_opt("snap").await.unwrap().is_some(),
        "snapshot deleted under a pending restore"
    );

    // A restore may not begin from a snapshot being deleted (external-provisioner refuses
    // unless its own finalizer shows it had begun): the claim stays Pending with a
    // consumer, and holds the snapshot until it is deleted itself.
    pod(&env, "consumer", "restore", "ghcr.io/example/app:1.0.0").await;
    let handed = wait_for(
        &pvcs,
        "restore",
        "scheduled and handed to the driver",
        |p| p.annotations().get(STORAGE_PROVISIONER).map(String::as_str) == Some(seed::DRIVER),
    )
    .await;
    assert!(
        handed
            .annotations()
            .contains_key(sim::volumes::SELECTED_NODE)
    );
    // Nothing may happen, so there is no event to wait for: give the sims time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !bound(&pvcs.get("restore").await.unwrap()),
        "restored from a snapshot being deleted"
    );
    assert!(
        snaps.get_opt("snap").await.unwrap().is_some(),
        "snapshot deleted under a pending restore"
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");
    pods.delete("consumer", &DeleteParams::default())
        .await
        .unwrap();
    pvcs.delete("restore", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvcs, "restore", "the pending restore").await;
    wait_gone(&snaps, "snap", "snapshot after its pending restore went").await;
    let contents = kube::Api::<kube::api::DynamicObject>::all_with(
        env.client.clone(),
        &volume_snapshot_content(),
    );
    wait_gone(&contents, &content, "content with policy Delete").await;
}

#[tokio::test]
async fn a_claim_binds_once_its_storage_class_appears() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    pvc(&env, "early", Some("made-later"), None).await;
    pvc(&env, "orphan", Some("no-driver"), None).await;
    wait_for(&pvcs, "early", "seen by the PV controller", |p| {
        p.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == PVC_PROTECTION)
    })
    .await;
    assert!(!bound(&pvcs.get("early").await.unwrap()));
    for (name, provisioner) in [
        ("made-later", seed::DRIVER),
        ("no-driver", "other.csi.example.com"),
    ] {
        seed::put(&env.client, json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner, "volumeBindingMode": "Immediate",
        }))
        .await
        .unwrap();
    }
    let early = wait_for(&pvcs, "early", "bound after the class exists", bound).await;
    let pv = Api::<PersistentVolume>::all(env.client.clone())
        .get(early.spec.unwrap().volume_name.as_deref().unwrap())
        .await
        .unwrap();
    let spec = pv.spec.unwrap();
    assert_eq!(spec.csi.unwrap().driver, seed::DRIVER);
    assert_eq!(spec.storage_class_name.as_deref(), Some("made-later"));
    // A class whose driver nobody runs: the PV controller hands the claim to it, and there
    // it stays, Pending, as on a real cluster.
    wait_for(&pvcs, "orphan", "handed to its provisioner, Pending", |p| {
        p.annotations().get(STORAGE_PROVISIONER).map(String::as_str)
            == Some("other.csi.example.com")
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
    })
    .await;
    // Nothing may happen, so there is no event to wait for: give the sims time to err.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let orphan = pvcs.get("orphan").await.unwrap();
    assert!(!bound(&orphan) && orphan.spec.unwrap().volume_name.is_none());
    let pvs = Api::<PersistentVolume>::all(env.client.clone());
    assert!(
        pvs.get_opt(&format!("pvc-{}", orphan.metadata.uid.unwrap()))
            .await
            .unwrap()
            .is_none(),
        "a volume was made for a driver nobody runs"
    );
}
