//! helm-controller (with the OCIRepository source) against kubesim.

use crate::common::*;
use base64::Engine;
use flate2::read::GzDecoder;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde_json::{Value, json};
use sim::kinds::{helm_chart, helm_release, helm_repository, oci_repository};
use sim::seed;
use std::io::Read;

/// Decodes a release secret as Helm reads it: base64 → gzip → JSON.
fn decode(secret: &Secret) -> Value {
    let payload = &secret.data.as_ref().unwrap()["release"].0;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "release is not gzip");
    let mut json = String::new();
    GzDecoder::new(gz.as_slice())
        .read_to_string(&mut json)
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

async fn releases(env: &Env, ns: &str, release: &str) -> Vec<(i64, String, String)> {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), ns);
    let list = secrets
        .list(&ListParams::default().labels(&format!("owner=helm,name={release}")))
        .await
        .unwrap();
    let mut out: Vec<(i64, String, String)> = list
        .items
        .iter()
        .map(|s| {
            assert_eq!(s.type_.as_deref(), Some("helm.sh/release.v1"));
            let r = decode(s);
            assert_eq!(
                s.metadata.name.as_deref().unwrap(),
                format!("sh.helm.release.v1.{release}.v{}", r["version"])
            );
            (
                r["version"].as_i64().unwrap(),
                r["info"]["status"].as_str().unwrap().to_owned(),
                // Without the `+<digest prefix>` an OCIRepository chart carries.
                sim::helm::chart_version_without_build(
                    r["chart"]["metadata"]["version"].as_str().unwrap(),
                )
                .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn history(hr: &DynamicObject) -> Vec<(i64, String, String)> {
    json_of(hr)["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["version"].as_i64().unwrap(),
                h["status"].as_str().unwrap().to_owned(),
                sim::helm::chart_version_without_build(h["chartVersion"].as_str().unwrap())
                    .to_owned(),
            )
        })
        .collect()
}

fn attempted(hr: &DynamicObject, version: &str) -> bool {
    let v = json_of(hr);
    // helm-controller records an OCIRepository chart with `+<digest prefix>`.
    sim::helm::chart_version_without_build(
        v["status"]["lastAttemptedRevision"]
            .as_str()
            .unwrap_or_default(),
    ) == version
        && v["status"]["observedGeneration"] == v["metadata"]["generation"]
        && cond(&v, "Reconciling").is_null()
}

/// [`attempted`], and the rest of its status written too: helm-controller patches the
/// conditions first and the other status fields after (fluxcd/pkg/runtime `patch.Helper`),
/// so Ready can be final while `field` still holds the value before.
fn attempted_with(hr: &DynamicObject, version: &str, field: &str, value: Value) -> bool {
    attempted(hr, version) && json_of(hr)["status"][field] == value
}

/// [`attempted`], and an inventory written.
fn installed(hr: &DynamicObject, version: &str) -> bool {
    attempted(hr, version) && json_of(hr)["status"]["inventory"].is_object()
}

async fn app(env: &Env, annotations: Value, upgrade: Value) -> Api<DynamicObject> {
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::oci_chart(
        &env.client,
        "apps",
        "db-chart",
        "oci://ghcr.io/example/charts/db",
        "1.0.0",
    )
    .await
    .unwrap();
    seed::put(&env.client, json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "db", "namespace": "apps", "annotations": annotations},
        "spec": {
            "interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "db-chart"},
            "upgrade": upgrade,
            "values": {"persistence": [{"name": "data", "size": "1Gi"}, {"name": "logs", "size": "256Mi"}]},
        },
    }))
    .await
    .unwrap();
    dynamic(&env.client, &helm_release(), "apps")
}

#[tokio::test]
async fn helm_release_installs_statefulset_with_pvcs_and_real_release_secrets() {
    let env = env().await;
    let api = app(&env, json!({}), json!({})).await;
    let hr = wait_for(&api, "db", "install", |o| installed(o, "1.0.0")).await;
    let v = json_of(&hr);
    assert_eq!(cond(&v, "Ready")["status"], "True", "{v}");
    assert_eq!(cond(&v, "Ready")["reason"], "InstallSucceeded");
    assert_eq!(cond(&v, "Released")["status"], "True");
    assert_eq!(
        v["status"]["lastAttemptedGeneration"],
        v["metadata"]["generation"]
    );
    assert_eq!(v["status"]["storageNamespace"], "apps");
    assert_eq!(
        v["status"]["inventory"]["entries"],
        json!([{"id": "apps_db_apps_StatefulSet", "v": "v1"}])
    );
    assert_eq!(history(&hr), [(1, "deployed".into(), "1.0.0".into())]);
    assert_eq!(
        releases(&env, "apps", "db").await,
        [(1, "deployed".into(), "1.0.0".into())]
    );

    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    let ready = wait_for(&sts, "db", "StatefulSet ready", |s| {
        s.status.as_ref().and_then(|st| st.ready_replicas) == Some(1)
    })
    .await;
    let image = ready.spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "ghcr.io/example/db:1.0.0");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    for claim in ["data-db-0", "logs-db-0"] {
        wait_for(&pvcs, claim, "claim bound", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        })
        .await;
    }

    // A new tag upgrades: the old release is superseded, history is newest first.
    merge(
        &dynamic(&env.client, &oci_repository(), "apps"),
        "db-chart",
        json!({"spec": {"ref": {"tag": "1.1.0"}}}),
    )
    .await;
    let hr = wait_for(&api, "db", "upgrade", |o| {
        attempted(o, "1.1.0") && history(o).len() == 2
    })
    .await;
    assert_eq!(cond(&json_of(&hr), "Ready")["reason"], "UpgradeSucceeded");
    assert_eq!(
        history(&hr),
        [
            (2, "deployed".into(), "1.1.0".into()),
            (1, "superseded".into(), "1.0.0".into())
        ]
    );
    assert_eq!(
        releases(&env, "apps", "db").await,
        [
            (1, "superseded".into(), "1.0.0".into()),
            (2, "deployed".into(), "1.1.0".into())
        ]
    );
    wait_for(&sts, "db", "new image rolled out", |s| {
        let st = s.status.clone().unwrap_or_default();
        st.observed_generation == s.metadata.generation
            && st.update_revision == st.current_revision
            && st.ready_replicas == Some(1)
            && s.spec.template.spec.as_ref().unwrap().containers[0]
                .image
                .as_deref()
                == Some("ghcr.io/example/db:1.1.0")
    })
    .await;
}

#[tokio::test]
async fn failing_version_is_remediated_by_rollback_when_retries_allow() {
    let env = env().await;
    let api = app(&env, json!({}), json!({"remediation": {"retries": 1}})).await;
    wait_for(&api, "db", "install", |o| attempted(o, "1.0.0")).await;
    env.world.failures.fail_chart_version("2.0.0");
    merge(
        &dynamic(&env.client, &oci_repository(), "apps"),
        "db-chart",
        json!({"spec": {"ref": {"tag": "2.0.0"}}}),
    )
    .await;
    let hr = wait_for(&api, "db", "failed upgrade", |o| {
        attempted_with(o, "2.0.0", "upgradeFailures", json!(2))
    })
    .await;
    let v = json_of(&hr);
    assert_eq!(cond(&v, "Ready")["status"], "False");
    assert_eq!(cond(&v, "Released")["reason"], "UpgradeFailed");
    assert_eq!(cond(&v, "Remediated")["status"], "True");
    assert_eq!(cond(&v, "Remediated")["reason"], "RollbackSucceeded");
    assert_eq!(cond(&v, "Stalled")["reason"], "RetriesExceeded");
    // Two failed attempts, each rolled back to 1.0.0.
    assert_eq!(
        releases(&env, "apps", "db").await,
        [
            (1, "superseded".into(), "1.0.0".into()),
            (2, "failed".into(), "2.0.0".into()),
            (3, "superseded".into(), "1.0.0".into()),
            (4, "failed".into(), "2.0.0".into()),
            (5, "deployed".into(), "1.0.0".into()),
        ]
    );
    assert_eq!(history(&hr)[0], (5, "deployed".into(), "1.0.0".into()));
    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    wait_for(&sts, "db", "rolled back and ready", |s| {
        s.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref()
            == Some("ghcr.io/example/db:1.0.0")
            && s.status.as_ref().and_then(|st| st.ready_replicas) == Some(1)
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
            && s.status.as_ref().and_then(|st| st.update_revision.clone())
                == s.status.as_ref().and_then(|st| st.current_revision.clone())
    })
    .await;

    // Reverting to the version the rollback runs is in sync: Ready again, nothing released.
    merge(
        &dynamic(&env.client, &oci_repository(), "apps"),
        "db-chart",
        json!({"spec": {"ref": {"tag": "1.0.0"}}}),
    )
    .await;
    let hr = wait_for(&api, "db", "in sync again", |o| {
        let v = json_of(o);
        attempted(o, "1.0.0") && cond(&v, "Ready")["status"] == "True"
    })
    .await;
    let v = json_of(&hr);
    assert!(
        cond(&v, "Stalled").is_null() && cond(&v, "Remediated").is_null(),
        "{v}"
    );
    assert_eq!(releases(&env, "apps", "db").await.len(), 5);

    // A spec change that needs no release still moves every condition to the new generation.
    merge(&api, "db", json!({"spec": {"interval": "5m"}})).await;
    let hr = wait_for(&api, "db", "new generation observed", |o| {
        let v = json_of(o);
        v["status"]["observedGeneration"] == v["metadata"]["generation"]
            && cond(&v, "Ready")["observedGeneration"] == v["metadata"]["generation"]
    })
    .await;
    assert_eq!(cond(&json_of(&hr), "Ready")["status"], "True");
    assert_eq!(releases(&env, "apps", "db").await.len(), 5);
}

#[tokio::test]
async fn failing_version_without_remediation_leaves_pods_unready() {
    let env = env().await;
    let api = app(
        &env,
        json!({"sim.fluxgate.dev/fail-versions": "2.0.0"}),
        json!({}),
    )
    .await;
    wait_for(&api, "db", "install", |o| attempted(o, "1.0.0")).await;
    merge(
        &dynamic(&env.client, &oci_repository(), "apps"),
        "db-chart",
        json!({"spec": {"ref": {"tag": "2.0.0"}}}),
    )
    .await;
    let hr = wait_for(&api, "db", "failed upgrade", |o| attempted(o, "2.0.0")).await;
    let v = json_of(&hr);
    assert_eq!(cond(&v, "Ready")["status"], "False");
    assert_eq!(cond(&v, "Ready")["reason"], "UpgradeFailed");
    assert!(cond(&v, "Remediated").is_null());
    assert_eq!(cond(&v, "Stalled")["status"], "True");
    assert_eq!(
        releases(&env, "apps", "db").await,
        [
            (1, "deployed".into(), "1.0.0".into()),
            (2, "failed".into(), "2.0.0".into())
        ]
    );
    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    let broken = wait_for(&sts, "db", "broken version rolled out", |s| {
        let st = s.status.clone().unwrap_or_default();
        let image = s.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .clone();
        // The watch may first show the status of the 1.0.0 pod: wait for 2.0.0's.
        st.observed_generation == s.metadata.generation
            && image.as_deref() == Some("ghcr.io/example/db:2.0.0")
            && st.updated_replicas == Some(1)
            && st.replicas == 1
    })
    .await;
    assert_eq!(
        broken.status.unwrap().ready_replicas,
        None,
        "a failing version's pod became ready"
    );

    // A requestedAt alone does not retry a stalled release.
    request_reconcile(&api, "db", "again").await;
    wait_for(&api, "db", "requestedAt handled", |o| {
        json_of(o)["status"]["lastHandledReconcileAt"] == "again"
    })
    .await;
    assert_eq!(releases(&env, "apps", "db").await.len(), 2);

    // A new chart version (as a revert in Git gives) is tried afresh despite the stall.
    merge(
        &dynamic(&env.client, &oci_repository(), "apps"),
        "db-chart",
        json!({"spec": {"ref": {"tag": "1.0.0"}}}),
    )
    .await;
    let hr = wait_for(&api, "db", "reverted release", |o| {
        attempted_with(o, "1.0.0", "upgradeFailures", json!(0))
    })
    .await;
    let v = json_of(&hr);
    assert_eq!(cond(&v, "Ready")["reason"], "UpgradeSucceeded", "{v}");
    assert!(cond(&v, "Stalled").is_null());
    assert_eq!(
        releases(&env, "apps", "db").await[2],
        (3, "deployed".into(), "1.0.0".into())
    );
}

#[tokio::test]
async fn helm_release_honours_suspend_and_requested_at() {
    let env = env().await;
    let api = app(&env, json!({}), json!({})).await;
    wait_for(&api, "db", "install", |o| attempted(o, "1.0.0")).await;
    merge(&api, "db", json!({"spec": {"suspend": true}})).await;
    let oci = dynamic(&env.client, &oci_repository(), "apps");
    merge(&oci, "db-chart", json!({"spec": {"ref": {"tag": "1.1.0"}}})).await;
    wait_for(&oci, "db-chart", "new tag resolved", |o| {
        json_of(o)["status"]["artifact"]["revision"]
            .as_str()
            .unwrap_or_default()
            .starts_with("1.1.0@sha256:")
    })
    .await;
    request_reconcile(&api, "db", "while-suspended").await;
    // Nothing may happen, so there is no event to wait for: allow time for a wrong upgrade.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let hr = json_of(&api.get("db").await.unwrap());
    assert_eq!(
        sim::helm::chart_version_without_build(
            hr["status"]["lastAttemptedRevision"]
                .as_str()
                .unwrap_or_default()
        ),
        "1.0.0",
        "upgraded while suspended"
    );
    // helm-controller's deferred status patch runs for a suspended object too: the suspend
    // and the request are "seen" (observedGeneration, lastHandledReconcileAt), nothing runs.
    assert_eq!(hr["status"]["lastHandledReconcileAt"], "while-suspended");
    assert_eq!(
        hr["status"]["observedGeneration"],
        hr["metadata"]["generation"]
    );
    assert_eq!(releases(&env, "apps", "db").await.len(), 1);

    merge(&api, "db", json!({"spec": {"suspend": false}})).await;
    let hr = wait_for(&api, "db", "upgrade after resume", |o| {
        attempted(o, "1.1.0")
    })
    .await;
    assert_eq!(
        json_of(&hr)["status"]["lastHandledReconcileAt"],
        "while-suspended"
    );
    request_reconcile(&api, "db", "later").await;
    let hr = wait_for(&api, "db", "requestedAt handled", |o| {
        json_of(o)["status"]["lastHandledReconcileAt"] == "later"
    })
    .await;
    // Nothing changed, so nothing was released again.
    assert_eq!(history(&hr).len(), 2);
}

#[tokio::test]
async fn failing_install_is_remediated_by_uninstall() {
    let env = env().await;
    env.world.failures.fail_chart_version("1.0.0");
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::oci_chart(
        &env.client,
        "apps",
        "db-chart",
        "oci://ghcr.io/example/charts/db",
        "1.0.0",
    )
    .await
    .unwrap();
    seed::put(
        &env.client,
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "db-chart"},
                     "targetNamespace": "apps", "install": {"remediation": {"retries": 1}}},
        }),
    )
    .await
    .unwrap();
    let api = dynamic(&env.client, &helm_release(), "apps");
    let hr = wait_for(&api, "db", "failed install", |o| {
        attempted_with(o, "1.0.0", "installFailures", json!(2))
    })
    .await;
    let v = json_of(&hr);
    assert_eq!(cond(&v, "Released")["reason"], "InstallFailed");
    assert_eq!(cond(&v, "Remediated")["reason"], "UninstallSucceeded");
    assert_eq!(cond(&v, "Stalled")["reason"], "RetriesExceeded");
    // Flux's default release name with a target namespace; uninstalled without history.
    assert!(releases(&env, "apps", "apps-db").await.is_empty());
    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    assert!(sts.get_opt("apps-db").await.unwrap().is_none());
}

#[tokio::test]
async fn chart_spec_version_renders_a_deployment_in_the_target_namespace() {
    let env = env().await;
    seed::namespace(&env.client, "flux-system").await.unwrap();
    seed::namespace(&env.client, "web").await.unwrap();
    env.world
        .charts
        .publish("https://charts.example.com", "site", "3.1.0");
    seed::put(
        &env.client,
        helm_repository_object("charts", "flux-system", "10m"),
    )
    .await
    .unwrap();
    seed::put(&env.client, json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "site", "namespace": "flux-system"},
        "spec": {
            "interval": "10m", "targetNamespace": "web",
            "chart": {"spec": {"chart": "site", "version": "3.1.0", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
            "values": {"kind": "Deployment", "replicaCount": 2, "image": {"repository": "ghcr.io/example/site", "tag": "9.9"},
                       "persistence": [{"name": "uploads", "size": "2Gi"}]},
        },
    }))
    .await
    .unwrap();
    let api = dynamic(&env.client, &helm_release(), "flux-system");
    let hr = wait_for(&api, "site", "install", |o| installed(o, "3.1.0")).await;
    let v = json_of(&hr);
    assert_eq!(cond(&v, "Ready")["status"], "True");
    assert_eq!(v["status"]["helmChart"], "flux-system/flux-system-site");
    assert_eq!(v["status"]["storageNamespace"], "flux-system");
    assert_eq!(
        v["status"]["inventory"]["entries"],
        json!([{"id": "web_web-site-uploads__PersistentVolumeClaim", "v": "v1"}, {"id": "web_web-site_apps_Deployment", "v": "v1"}])
    );
    assert_eq!(
        releases(&env, "flux-system", "web-site").await,
        [(1, "deployed".into(), "3.1.0".into())]
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), "web");
    let d = wait_for(&deployments, "web-site", "rolled out", |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)
    })
    .await;
    let labels = d.metadata.labels.unwrap();
    assert_eq!(labels["helm.toolkit.fluxcd.io/name"], "site");
    assert_eq!(labels["helm.toolkit.fluxcd.io/namespace"], "flux-system");
    let pod_spec = d.spec.template.spec.unwrap();
    assert_eq!(
        pod_spec.containers[0].image.as_deref(),
        Some("ghcr.io/example/site:9.9")
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "web");
    wait_for(&pvcs, "web-site-uploads", "claim bound", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    })
    .await;
}

/// An HTTP HelmRepository at https://charts.example.com refreshed every `interval`.
fn helm_repository_object(name: &str, ns: &str, interval: &str) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"interval": interval, "url": "https://charts.example.com"},
    })
}

#[tokio::test]
async fn a_helm_repository_chart_waits_for_the_index_refresh_that_lists_its_version() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    env.world
        .charts
        .publish("https://charts.example.com", "db", "1.0.0");
    seed::put(&env.client, helm_repository_object("charts", "apps", "1h"))
        .await
        .unwrap();
    seed::put(&env.client, json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "db", "namespace": "apps"},
        "spec": {"interval": "10m",
                 "chart": {"spec": {"chart": "db", "version": "1.0.0", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}},
    }))
    .await
    .unwrap();
    let releases_api = dynamic(&env.client, &helm_release(), "apps");
    let hr = wait_for(&releases_api, "db", "install", |o| attempted(o, "1.0.0")).await;
    // A HelmRepository chart's version carries no build metadata.
    assert_eq!(json_of(&hr)["status"]["lastAttemptedRevision"], "1.0.0");
    let charts = dynamic(&env.client, &helm_chart(), "apps");
    let chart = json_of(&charts.get("apps-db").await.unwrap());
    assert_eq!(
        chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"],
        "db"
    );
    assert_eq!(
        chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"],
        "apps"
    );
    assert_eq!(chart["status"]["artifact"]["revision"], "1.0.0");
    let repos = dynamic(&env.client, &helm_repository(), "apps");
    let repo = json_of(&repos.get("charts").await.unwrap());
    let stale_index = repo["status"]["artifact"]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stale_index.starts_with("sha256:"), "{stale_index}");
    assert_eq!(
        cond(&repo, "Ready")["message"],
        format!("stored artifact: revision '{stale_index}'")
    );

    // Published after the repository's last refresh: its stored index does not list it.
    env.world
        .charts
        .publish("https://charts.example.com", "db", "1.1.0");
    merge(
        &releases_api,
        "db",
        json!({"spec": {"chart": {"spec": {"version": "1.1.0"}}}}),
    )
    .await;
    let missing = "invalid chart reference: failed to get chart version for remote reference: \
                   no 'db' chart with version matching '1.1.0' found";
    let chart = wait_for(&charts, "apps-db", "build failure", |c| {
        cond(&json_of(c), "FetchFailed")["reason"] == "InvalidChartReference"
    })
    .await;
    let chart = json_of(&chart);
    assert_eq!(cond(&chart, "FetchFailed")["message"], missing);
    assert_eq!(cond(&chart, "Ready")["status"], "False");
    assert_eq!(chart["status"]["artifact"]["revision"], "1.0.0");
    // First "latest generation of object has not been reconciled", then, once the chart's
    // build failed (its watch wakes the release), why.
    let not_ready = format!("HelmChart 'apps/apps-db' is not ready: {missing}");
    let hr = wait_for(&releases_api, "db", "source not ready", |o| {
        cond(&json_of(o), "Ready")["message"] == not_ready.as_str()
    })
    .await;
    assert_eq!(cond(&json_of(&hr), "Ready")["reason"], "SourceNotReady");
    assert_eq!(
        json_of(&repos.get("charts").await.unwrap())["status"]["artifact"]["revision"],
        stale_index.as_str(),
        "the repository refetched its index before its interval or a request"
    );

    request_reconcile(&repos, "charts", "refresh-1").await;
    let repo = wait_for(&repos, "charts", "refresh", |r| {
        json_of(r)["status"]["lastHandledReconcileAt"] == "refresh-1"
    })
    .await;
    assert_ne!(
        json_of(&repo)["status"]["artifact"]["revision"],
        stale_index.as_str()
    );
    let hr = wait_for(&releases_api, "db", "upgrade", |o| attempted(o, "1.1.0")).await;
    assert_eq!(cond(&json_of(&hr), "Ready")["status"], "True");
    assert_eq!(
        releases(&env, "apps", "db").await,
        [
            (1, "superseded".into(), "1.0.0".into()),
            (2, "deployed".into(), "1.1.0".into())
        ]
    );
}

#[tokio::test]
async fn a_helm_repository_refreshes_its_index_on_its_interval() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::put(&env.client, helm_repository_object("charts", "apps", "1s"))
        .await
        .unwrap();
    let repos = dynamic(&env.client, &helm_repository(), "apps");
    let repo = wait_for(&repos, "charts", "first index", |r| {
        json_of(r)["status"]["artifact"]["revision"].is_string()
    })
    .await;
    let empty = json_of(&repo)["status"]["artifact"]["revision"].clone();
    env.world
        .charts
        .publish("https://charts.example.com", "db", "1.0.0");
    wait_for(&repos, "charts", "index refreshed on its interval", |r| {
        let revision = &json_of(r)["status"]["artifact"]["revision"];
        revision.is_string() && *revision != empty
    })
    .await;
}

#[tokio::test]
async fn sim_option_supplies_remediation_retries_when_the_spec_sets_none() {
    let mut options = sim::world::WorldOptions::fast();
    options.helm.default_retries = Some(1);
    let env = env_with(options).await;
    let api = app(
        &env,
        json!({"sim.fluxgate.dev/fail-versions": "2.0.0"}),
        json!({}),
    )
    .await;
    wait_for(&api, "db", "install", |o| attempted(o, "1.0.0")).await;
    merge(
        &dynamic(&env.client, &oci_repository(), "apps"),
        "db-chart",
        json!({"spec": {"ref": {"tag": "2.0.0"}}}),
    )
    .await;
    let hr = wait_for(&api, "db", "failed upgrade", |o| attempted(o, "2.0.0")).await;
    assert_eq!(
        cond(&json_of(&hr), "Remediated")["reason"],
        "RollbackSucceeded"
    );
}
