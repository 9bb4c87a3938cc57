//! The CSI driver stand-in on the real control plane of test/realstack: real
//! kube-apiserver, kube-controller-manager (StatefulSet controller, PV binder,
//! pvc-protection), kube-scheduler and KWOK, with only the driver's parts simulated (and
//! the snapshot-controller, until the real one is part of the stack). What the stand-in
//! writes must be what these real components accept and act on.
//!
//! Without the binaries the test prints `SKIPPED: …` and passes, unless
//! FLUXGATE_REQUIRE_REAL_STACK=1 (point FLUXGATE_REALSTACK_BIN at a built `bin/`).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use realstack::{NODE_NAME, RealCluster};
use serde_json::{Value, json};
use sim::csi::provisioner::PV_FINALIZER;
use sim::kinds::{dyn_api, volume_snapshot};
use sim::seed;
use sim::volumes::{
    BIND_COMPLETED, PROVISIONED_BY, PV_PROTECTION, SELECTED_NODE, STORAGE_PROVISIONER,
    content_token, snapshot_token, writer_of,
};
use sim::world::{World, WorldOptions};
use std::future::Future;
use std::time::{Duration, Instant};

const NS: &str = "csi-standin";
const WAIT: Duration = Duration::from_secs(90);

/// [`realstack::testing::eventually`] with [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    realstack::testing::eventually(what, WAIT, probe).await
}

/// The VolumeSnapshot CRDs kubesim serves (client/v8's, see kubesim's crds/upstream.txt),
/// applied and Established.
async fn snapshot_crds(client: &Client) {
    for (file, text) in kubesim::third_party::CRDS {
        if !file.starts_with("snapshot.storage.k8s.io_") {
            continue;
        }
        for crd in sim::kustomize_build::parse_file(file, text.as_bytes()).expect("CRD YAML parses")
        {
            seed::put(client, crd)
                .await
                .unwrap_or_else(|e| panic!("applying {file}: {e:#}"));
        }
    }
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in [
        "volumesnapshotclasses",
        "volumesnapshots",
        "volumesnapshotcontents",
    ] {
        let name = format!("{name}.snapshot.storage.k8s.io");
        eventually(&format!("CRD {name} Established"), || async {
            let crd = crds.get(&name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established
                .then_some(())
                .ok_or_else(|| "not established".to_owned())
        })
        .await;
    }
}

fn statefulset(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 1, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web", "image": image,
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": seed::WFFC_CLASS,
                         "resources": {"requests": {"storage": "1Gi"}}},
            }],
        },
    })
}

/// Which field managers wrote `field` (e.g. `f:volumeName`) of an object.
fn writers_of<K: kube::Resource>(obj: &K, field: &str) -> Vec<String> {
    obj.meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1.as_ref().is_some_and(|f| {
                serde_json::to_string(&f.0)
                    .unwrap_or_default()
                    .contains(field)
            })
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_binds_writes_snapshots_restores_and_deletes_on_the_real_control_plane() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let started = Instant::now();
    let client = cluster.client().await.expect("admin client");
    snapshot_crds(&client).await;
    seed::storage(&client)
        .await
        .expect("storage and snapshot classes");
    seed::namespace(&client, NS).await.expect("namespace");
    let mut options = WorldOptions::fast();
    options.kube_controllers = false;
    options.snapshot_controller = true;
    let world = World::start(client.clone(), options)
        .await
        .expect("world starts");
    assert!(world.volumes.is_none() && world.pods.is_none() && world.workloads.is_none());
    assert!(world.scheduler.is_none() && world.snapshots.is_some());

    // The StatefulSet controller makes claim data-web-0 and pod web-0; the scheduler picks
    // the KWOK node and annotates the WaitForFirstConsumer claim; KCM hands it to the
    // driver; the stand-in makes the volume; KCM binds it; the scheduler binds the pod;
    // KWOK runs it; the stand-in's node plugin has the app write.
    seed::put(&client, statefulset("registry.invalid/web:1.0.0"))
        .await
        .expect("StatefulSet");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let v1 = eventually("data-web-0 Bound, web-0 Running, v1 written", || async {
        let claim = claims
            .get_opt("data-web-0")
            .await
            .map_err(|e| e.to_string())?;
        let claim = claim.ok_or("no claim yet")?;
        let pod = pods
            .get_opt("web-0")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no pod yet")?;
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        let token = content_token(&client, NS, "data-web-0")
            .await
            .map_err(|e| format!("{e:#}"))?;
        match token {
            Some(t)
                if phase_of_claim(&claim) == "Bound"
                    && phase == "Running"
                    && writer_of(&t) == "1.0.0" =>
            {
                Ok(t)
            }
            t => Err(format!(
                "claim {}, pod {phase}, token {t:?}",
                phase_of_claim(&claim)
            )),
        }
    })
    .await;
    let claim = claims.get("data-web-0").await.unwrap();
    let annotations = claim.annotations();
    assert_eq!(
        annotations.get(SELECTED_NODE).map(String::as_str),
        Some(NODE_NAME)
    );
    assert_eq!(
        annotations.get(STORAGE_PROVISIONER).map(String::as_str),
        Some(seed::DRIVER)
    );
    assert_eq!(
        annotations.get(BIND_COMPLETED).map(String::as_str),
        Some("yes")
    );
    let bound_by = writers_of(&claim, "f:volumeName");
    assert!(
        !bound_by.is_empty()
            && bound_by
                .iter()
                .all(|m| m.starts_with("kube-controller-manager")),
        "the claim was bound by {bound_by:?}, not kube-controller-manager"
    );
    let pv_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap();
    assert_eq!(pv_name, format!("pvc-{}", claim.uid().unwrap()));
    let pv = pvs.get(&pv_name).await.unwrap();
    assert_eq!(
        pv.annotations().get(PROVISIONED_BY).map(String::as_str),
        Some(seed::DRIVER)
    );
    for f in [PV_FINALIZER, PV_PROTECTION] {
        assert!(
            pv.finalizers().iter().any(|x| x == f),
            "{f} missing on {pv_name}"
        );
    }
    assert_eq!(pv.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let pod = pods.get("web-0").await.unwrap();
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(NODE_NAME)
    );
    eprintln!(
        "provisioned, bound and written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A snapshot (the snapshot-controller sim, the stand-in's sidecar), a new version
    // writing over it, and a restore that holds what the snapshot kept.
    let snaps = dyn_api(&client, &volume_snapshot(), NS);
    seed::put(
        &client,
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "before-v2", "namespace": NS},
            "spec": {"source": {"persistentVolumeClaimName": "data-web-0"}},
        }),
    )
    .await
    .expect("VolumeSnapshot");
    eventually("snapshot ready", || async {
        let s = snaps.get("before-v2").await.map_err(|e| e.to_string())?;
        (s.data["status"]["readyToUse"] == true)
            .then_some(())
            .ok_or_else(|| s.data["status"].to_string())
    })
    .await;
    assert_eq!(
        snapshot_token(&client, NS, "before-v2")
            .await
            .unwrap()
            .as_deref(),
        Some(v1.as_str())
    );
    seed::put(&client, statefulset("registry.invalid/web:2.0.0"))
        .await
        .expect("StatefulSet v2");
    let v2 = eventually("v2 written", || async {
        let t = content_token(&client, NS, "data-web-0")
            .await
            .map_err(|e| format!("{e:#}"))?;
        t.filter(|t| writer_of(t) == "2.0.0")
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert_ne!(v2, v1);
    let restore: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "restored", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": seed::IMMEDIATE_CLASS,
                 "resources": {"requests": {"storage": "1Gi"}},
                 "dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "before-v2"}},
    }))
    .unwrap();
    claims
        .create(&PostParams::default(), &restore)
        .await
        .expect("restore claim");
    let restored = eventually("restore Bound", || async {
        let c = claims.get("restored").await.map_err(|e| e.to_string())?;
        (phase_of_claim(&c) == "Bound")
            .then_some(c.clone())
            .ok_or_else(|| phase_of_claim(&c))
    })
    .await;
    assert_eq!(
        content_token(&client, NS, "restored")
            .await
            .unwrap()
            .as_deref(),
        Some(v1.as_str())
    );
    assert!(
        writers_of(&restored, "f:volumeName")
            .iter()
            .all(|m| m.starts_with("kube-controller-manager"))
    );

    // Deletion: the StatefulSet's pod goes (garbage collector, KWOK), KCM's pvc-protection
    // lets the claim go, KCM releases the volume, the stand-in deletes it.
    Api::<StatefulSet>::namespaced(client.clone(), NS)
        .delete("web", &DeleteParams::default())
        .await
        .expect("deleting the StatefulSet");
    eventually("web-0 gone", || async {
        match pods.get_opt("web-0").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    claims
        .delete("data-web-0", &DeleteParams::default())
        .await
        .expect("deleting the claim");
    eventually("the released volume deleted by the driver", || async {
        match pvs.get_opt(&pv_name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(pv) => Err(format!(
                "{} {:?}",
                pv.status.and_then(|s| s.phase).unwrap_or_default(),
                pv.metadata.finalizers
            )),
        }
    })
    .await;
    eprintln!("whole story in {:.1} s", started.elapsed().as_secs_f64());
    drop(world);
}
