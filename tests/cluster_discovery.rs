//! Discovering an app on an API server: workloads from the Helm release's manifest (decoded
//! from Helm's real secret format) or from a Flux inventory, PVCs from workload specs — still
//! found after the app is scaled to zero — and each volume captured with its snapshot class.

mod common;

use common::{cluster, helm_release};
use fluxgate::api::{SourceKind, WorkloadKind};
use fluxgate::cluster::cache::Cluster;
use fluxgate::cluster::discovery::ops::{VolumeSelection, discover_app};
use fluxgate::cluster::snapshots::ops::classes;
use kubesim::KubeSim;
use serde_json::{Value, json};
use sim::helm_secret::HelmReleaseSecret;

const MANIFEST: &str = "---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: 'postgres:16.4'}]}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: db-exporter
spec:
  selector: {matchLabels: {app: exporter}}
  template:
    metadata: {labels: {app: exporter}}
    spec: {containers: [{name: e, image: 'exporter:1'}]}
";

fn pvc(name: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "apps", "labels": {"app": "db"}},
           "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

fn workload(kind: &str, name: &str, replicas: i32) -> Value {
    let mut spec = json!({"replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}});
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
        spec["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
    }
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "apps"}, "spec": spec})
}

async fn world() -> KubeSim {
    let sim = cluster(&["apps", "flux-system"]).await;
    for object in [
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"}, "provisioner": "hostpath.csi.k8s.io"}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "nfs"}, "provisioner": "example.com/nfs"}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "hostpath", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete"}),
        // Scaled to zero already: discovery must still find data-db-0 and data-db-1.
        workload("StatefulSet", "db", 0),
        workload("Deployment", "db-exporter", 1),
        pvc("data-db-0", "csi"),
        pvc("data-db-1", "csi"),
        pvc("unrelated", "csi"),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "exporter", "namespace": "apps"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db-exporter"}, "maxReplicas": 3}}),
    ] {
        sim.put(object).unwrap();
    }
    let mut release = helm_release("apps", "db", None);
    release["spec"]["storageNamespace"] = json!("apps");
    sim.put(release).unwrap();
    let secret = |revision, status: &str| HelmReleaseSecret {
        name: "db".into(),
        namespace: "apps".into(),
        revision,
        status: status.into(),
        chart: "postgres".into(),
        chart_version: "1.4.0".into(),
        app_version: "16".into(),
        values: json!({}),
        manifest: if revision == 2 {
            MANIFEST.into()
        } else {
            "---\n".into()
        },
    };
    for (revision, status) in [(1, "superseded"), (2, "deployed")] {
        sim.put(serde_json::to_value(secret(revision, status).to_secret()).unwrap())
            .unwrap();
    }
    sim
}

#[tokio::test]
async fn a_helm_release_is_discovered_from_its_release_secret_even_scaled_to_zero() {
    let sim = world().await;
    let client = Cluster::direct(sim.client());
    let classes = classes(&client).await.unwrap();
    let selection = VolumeSelection {
        classes: Some(&classes),
        ..Default::default()
    };
    let app = discover_app(&client, SourceKind::HelmRelease, "apps", "db", &selection)
        .await
        .unwrap();
    let workloads: Vec<(WorkloadKind, &str, i32, Option<&str>)> = app
        .workloads
        .iter()
        .map(|w| (w.kind, w.name.as_str(), w.replicas, w.autoscaler.as_deref()))
        .collect();
    assert_eq!(
        workloads,
        vec![
            (WorkloadKind::StatefulSet, "db", 0, None),
            (WorkloadKind::Deployment, "db-exporter", 1, Some("exporter"))
        ]
    );
    let volumes: Vec<(&str, Option<&str>, Option<&str>)> = app
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.csi_driver.as_deref(),
                v.snapshot_class_name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        vec![
            ("data-db-0", Some("hostpath.csi.k8s.io"), Some("hostpath")),
            ("data-db-1", Some("hostpath.csi.k8s.io"), Some("hostpath"))
        ]
    );
    assert_eq!(app.volumes[0].labels["app"], "db");

    let excluded = [String::from("data-db-1")];
    let selection = VolumeSelection {
        classes: Some(&classes),
        exclude: &excluded,
        ..Default::default()
    };
    let app = discover_app(&client, SourceKind::HelmRelease, "apps", "db", &selection)
        .await
        .unwrap();
    assert_eq!(app.volumes.len(), 1);
}

#[tokio::test]
async fn a_kustomization_is_discovered_from_its_inventory() {
    let sim = world().await;
    sim.put(pvc("shared", "nfs")).unwrap();
    sim.put(common::kustomization("flux-system", "db", None, false))
        .unwrap();
    let client = Cluster::direct(sim.client());
    let inventory = json!({"status": {"inventory": {"entries": [
        {"id": "apps_db-exporter_apps_Deployment", "v": "v1"},
        {"id": "apps_shared__PersistentVolumeClaim", "v": "v1"},
        {"id": "apps_db_v1_Service_extra", "v": "v1"}
    ]}}});
    common::patch_status(
        client.client(),
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "flux-system",
        "db",
        inventory,
    )
    .await;
    let no_snapshots = VolumeSelection::default();
    let app = discover_app(
        &client,
        SourceKind::Kustomization,
        "flux-system",
        "db",
        &no_snapshots,
    )
    .await
    .unwrap();
    assert_eq!(app.workloads.len(), 1);
    assert_eq!(
        app.volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        vec!["shared"]
    );
    assert_eq!(
        app.malformed_inventory,
        vec!["apps_db_v1_Service_extra".to_owned()]
    );

    // With snapshots on, a volume no snapshot class can take is refused, naming the fix.
    let classes = classes(&client).await.unwrap();
    let selection = VolumeSelection {
        classes: Some(&classes),
        ..Default::default()
    };
    let err = discover_app(
        &client,
        SourceKind::Kustomization,
        "flux-system",
        "db",
        &selection,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("PVC apps/shared")
            && err.contains("example.com/nfs")
            && err.contains("spec.snapshots.className"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_source_is_named() {
    let sim = world().await;
    let err = discover_app(
        &Cluster::direct(sim.client()),
        SourceKind::HelmRelease,
        "apps",
        "nope",
        &VolumeSelection::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "HelmRelease apps/nope does not exist; check spec.source of the ManagedApp"
    );
}

#[tokio::test]
async fn a_long_release_name_is_shortened_as_helm_controller_does() {
    // `<targetNamespace>-<name>` is 62 characters: helm-controller installs the release under
    // a shortened name. A HelmRelease whose status has no history or inventory yet (restored
    // from a backup, which drops status, or recreated) must still be found by that name.
    let target = "databases-of-the-payments-team";
    let name = "postgres-for-the-ledger-service";
    let sim = cluster(&["apps", target]).await;
    let mut live = workload("StatefulSet", "ledger", 2);
    live["metadata"]["namespace"] = json!(target);
    sim.put(live).unwrap();
    let mut release = helm_release("apps", name, None);
    release["spec"]["targetNamespace"] = json!(target);
    sim.put(release).unwrap();
    let short = sim::helm::shorten_release_name(&format!("{target}-{name}"));
    assert_eq!(short.len(), 53);
    let manifest = "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: ledger\nspec:\n  replicas: 2\n";
    let secret = HelmReleaseSecret {
        name: short.clone(),
        namespace: "apps".into(),
        revision: 1,
        status: "deployed".into(),
        chart: "postgres".into(),
        chart_version: "1.4.0".into(),
        app_version: "16".into(),
        values: json!({}),
        manifest: manifest.into(),
    };
    sim.put(serde_json::to_value(secret.to_secret()).unwrap())
        .unwrap();
    let app = discover_app(
        &Cluster::direct(sim.client()),
        SourceKind::HelmRelease,
        "apps",
        name,
        &VolumeSelection::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let workloads: Vec<(&str, &str)> = app
        .workloads
        .iter()
        .map(|w| (w.namespace.as_str(), w.name.as_str()))
        .collect();
    assert_eq!(workloads, vec![(target, "ledger")]);
}
