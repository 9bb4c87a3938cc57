//! An app's health read from live objects, and snapshot retention applied on the API.

mod common;

use common::{cluster, patch_status};
use fluxgate::api::{HealthCheck, PlannedWorkload, SourceKind, WorkloadKind};
use fluxgate::cluster::cache::Cluster;
use fluxgate::cluster::health::ops::app_health;
use fluxgate::cluster::snapshots::ops::{apply_retention, snapshots_with};
use fluxgate::cluster::snapshots::{PendingRestores, RetentionScope};
use serde_json::json;

fn deployment(name: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "apps"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

#[tokio::test]
async fn health_is_reported_object_by_object() {
    let sim = cluster(&["apps", "flux-system"]).await;
    sim.put(common::helm_release("apps", "web", None)).unwrap();
    sim.put(deployment("web")).unwrap();
    let client = Cluster::direct(sim.client());
    let ready = json!({"status": {"observedGeneration": 1, "lastAttemptedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
        "reason": "UpgradeSucceeded", "message": "ok", "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 1}]}});
    patch_status(
        client.client(),
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "apps",
        "web",
        ready,
    )
    .await;
    let workloads = [
        PlannedWorkload {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
            namespace: "apps".into(),
            replicas: 2,
            autoscaler: None,
            claim_retention: None,
        },
        PlannedWorkload {
            kind: WorkloadKind::StatefulSet,
            name: "gone".into(),
            namespace: "apps".into(),
            replicas: 1,
            autoscaler: None,
            claim_retention: None,
        },
    ];
    let checks: Vec<HealthCheck> = vec![serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "condition": "Available"})).unwrap()];
    let report = app_health(
        &client,
        (SourceKind::HelmRelease, "apps", "web"),
        &workloads,
        &checks,
        "apps",
    )
    .await
    .unwrap();
    let verdicts: Vec<(String, bool)> = report
        .objects
        .iter()
        .map(|o| (o.object.clone(), o.healthy))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("HelmRelease apps/web".into(), true),
            ("Deployment apps/web".into(), false),
            ("StatefulSet apps/gone".into(), false),
            ("Deployment apps/web".into(), false),
        ]
    );
    assert!(!report.healthy());
    assert!(
        report
            .to_string()
            .contains("StatefulSet apps/gone: not found"),
        "{report}"
    );

    let rolled_out = json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}]}});
    patch_status(
        client.client(),
        "apps",
        "v1",
        "Deployment",
        "apps",
        "web",
        rolled_out,
    )
    .await;
    let report = app_health(
        &client,
        (SourceKind::HelmRelease, "apps", "web"),
        &workloads[..1],
        &checks,
        "apps",
    )
    .await
    .unwrap();
    assert!(report.healthy(), "{report}");
}

#[tokio::test]
async fn retention_keeps_the_newest_snapshots_per_pvc_and_every_one_that_matters() {
    let sim = cluster(&["apps"]).await;
    // (name, pvc, app UID, purpose, request UID, request name): oldest first.
    for (name, pvc, app, purpose, request_uid, request) in [
        ("s0", "data", "uid-db", "pre-upgrade", "u0", "db-0"),
        ("s1", "data", "uid-db", "pre-upgrade", "u1", "db-1"),
        ("s2", "data", "uid-db", "safety", "r2", "db-1-rollback"),
        ("s3", "data", "uid-db", "pre-upgrade", "u3", "db-3"),
        ("s4", "data", "uid-db", "pre-upgrade", "u4", "db-4"),
        ("s5", "data", "uid-db", "pre-upgrade", "u5", "db-5"),
        // The same name, another app (another namespace's ManagedApp "db").
        ("o1", "data", "uid-other-db", "pre-upgrade", "o1", "db-x"),
        ("t1", "logs", "uid-db", "pre-upgrade", "u5", "db-5"),
    ] {
        sim.put(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "apps", "labels": {
                "fluxgate.dev/app": "db", "fluxgate.dev/app-uid": app, "fluxgate.dev/purpose": purpose,
                "fluxgate.dev/request-uid": request_uid, "fluxgate.dev/request": request,
                "fluxgate.dev/pvc": pvc}},
            "spec": {"source": {"persistentVolumeClaimName": pvc}}}))
            .unwrap();
        // Creation timestamps have one-second resolution: keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let client = Cluster::direct(sim.client());
    // db-3 just succeeded (it is the app's last upgrade, though not its newest snapshot:
    // s4 and s5 stand for upgrades of a test world's fast clock); a rollback of db-0 waits
    // for admission.
    let scope = RetentionScope {
        app_uid: "uid-db",
        last_upgrade_uid: "u3",
        restoring: PendingRestores {
            upgrades: ["db-0".to_owned()].into(),
            ..Default::default()
        },
        max_count: 1,
        max_age_secs: None,
    };
    let deleted = apply_retention(&client, "apps", &scope, jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        deleted,
        vec!["s4".to_owned(), "s1".to_owned()],
        "only snapshots nobody may need: not the newest (s5), the last upgrade's (s3), the \
         safety snapshot (s2), the pending rollback's (s0), nor another app's (o1)"
    );
    let left: Vec<String> = snapshots_with(&client, "apps", "fluxgate.dev/app=db")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(left, vec!["o1", "s0", "s2", "s3", "s5", "t1"]);
}
