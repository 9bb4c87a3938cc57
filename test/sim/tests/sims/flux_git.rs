//! source-controller and kustomize-controller against a real bare Git repository.

use crate::common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DynamicObject;
use serde_json::{Value, json};
use sim::kinds::{git_repository, kustomization};
use sim::seed;

fn revision(obj: &DynamicObject) -> String {
    json_of(obj)["status"]["artifact"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn git_repository_revision_follows_pushes_requested_at_and_suspend() {
    let env = env().await;
    let repo = GitRepo::new();
    let first = repo
        .write("a.yaml", &config_map("a", None, "1"))
        .push("one");
    seed::namespace(&env.client, "flux-system").await.unwrap();
    seed::git_repository(&env.client, "flux-system", "app", &repo.url(), "main", None)
        .await
        .unwrap();
    let api = dynamic(&env.client, &git_repository(), "flux-system");
    let got = wait_for(&api, "app", "first revision", |o| {
        revision(o) == format!("main@sha1:{first}")
    })
    .await;
    let v = json_of(&got);
    assert_eq!(cond(&v, "Ready")["status"], "True");
    assert_eq!(
        cond(&v, "Ready")["observedGeneration"],
        v["metadata"]["generation"]
    );
    assert_eq!(
        v["status"]["observedGeneration"],
        v["metadata"]["generation"]
    );

    // A push is seen on the (1 s) interval, or at once when asked.
    let second = repo
        .write("a.yaml", &config_map("a", None, "2"))
        .push("two");
    request_reconcile(&api, "app", "t1").await;
    let got = wait_for(&api, "app", "second revision", |o| {
        revision(o) == format!("main@sha1:{second}")
    })
    .await;
    let got = if json_of(&got)["status"]["lastHandledReconcileAt"] == "t1" {
        got
    } else {
        wait_for(&api, "app", "requestedAt handled", |o| {
            json_of(o)["status"]["lastHandledReconcileAt"] == "t1"
        })
        .await
    };
    assert_eq!(revision(&got), format!("main@sha1:{second}"));

    // Suspended: neither the interval nor requestedAt fetches.
    merge(&api, "app", json!({"spec": {"suspend": true}})).await;
    let third = repo
        .write("a.yaml", &config_map("a", None, "3"))
        .push("three");
    request_reconcile(&api, "app", "t2").await;
    // Nothing to wait for when nothing may happen: give it more than one fetch interval.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let now = api.get("app").await.unwrap();
    assert_eq!(
        revision(&now),
        format!("main@sha1:{second}"),
        "suspended source fetched"
    );
    assert_ne!(json_of(&now)["status"]["lastHandledReconcileAt"], "t2");
    merge(&api, "app", json!({"spec": {"suspend": false}})).await;
    wait_for(&api, "app", "revision after resume", |o| {
        revision(o) == format!("main@sha1:{third}")
            && json_of(o)["status"]["lastHandledReconcileAt"] == "t2"
    })
    .await;
}

#[tokio::test]
async fn unreachable_repository_is_not_ready_with_the_git_error() {
    let env = env().await;
    seed::namespace(&env.client, "flux-system").await.unwrap();
    seed::git_repository(
        &env.client,
        "flux-system",
        "gone",
        &format!("{GIT_HOST}nonexistent/repo.git"),
        "main",
        None,
    )
    .await
    .unwrap();
    let api = dynamic(&env.client, &git_repository(), "flux-system");
    let got = wait_for(&api, "gone", "fetch failure", |o| {
        cond(&json_of(o), "Ready")["status"] == "False"
    })
    .await;
    let ready = cond(&json_of(&got), "Ready");
    assert_eq!(ready["reason"], "GitOperationFailed");
    assert!(
        ready["message"].as_str().unwrap().contains("nonexistent"),
        "{ready}"
    );
}

#[tokio::test]
async fn credentials_come_from_the_secret_ref() {
    let env = env().await;
    let repo = GitRepo::new();
    let sha = repo
        .write("a.yaml", &config_map("a", None, "1"))
        .push("one");
    seed::namespace(&env.client, "flux-system").await.unwrap();
    seed::git_repository(
        &env.client,
        "flux-system",
        "app",
        &repo.url(),
        "main",
        Some("git-auth"),
    )
    .await
    .unwrap();
    let api = dynamic(&env.client, &git_repository(), "flux-system");
    let failed = wait_for(&api, "app", "missing secret reported", |o| {
        cond(&json_of(o), "Ready")["status"] == "False"
    })
    .await;
    let message = cond(&json_of(&failed), "Ready")["message"].clone();
    assert!(
        message.as_str().unwrap().contains("flux-system/git-auth"),
        "{message}"
    );
    seed::git_credentials(&env.client, "flux-system", "git-auth", "fluxgate", "s3cret")
        .await
        .unwrap();
    request_reconcile(&api, "app", "with-secret").await;
    wait_for(&api, "app", "fetched with credentials", |o| {
        revision(o) == format!("main@sha1:{sha}") && cond(&json_of(o), "Ready")["status"] == "True"
    })
    .await;
}

fn applied(obj: &DynamicObject, sha: &str) -> bool {
    let v = json_of(obj);
    v["status"]["lastAppliedRevision"] == format!("main@sha1:{sha}").as_str()
        && cond(&v, "Ready")["status"] == "True"
}

fn inventory(obj: &DynamicObject) -> Vec<String> {
    json_of(obj)["status"]["inventory"]["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}@{}", e["id"].as_str().unwrap(), e["v"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn kustomization_applies_multi_file_path_sets_inventory_and_prunes() {
    let env = env().await;
    let repo = GitRepo::new();
    repo.write("clusters/prod/kustomization.yaml", "resources:\n- ns.yaml\n- config.yaml\n- ../../apps/web\n")
        .write("clusters/prod/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n")
        .write(
            "clusters/prod/config.yaml",
            &format!("{}---\n{}", config_map("one", Some("web"), "1"), config_map("two", Some("web"), "2")),
        )
        .write("clusters/prod/unlisted.yaml", &config_map("unlisted", Some("web"), "x"))
        .write("apps/web/deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: ghcr.io/example/web:1.0.0\n");
    let sha = repo.push("prod");
    seed::flux_system(&env.client, &repo.url(), "main", "./clusters/prod")
        .await
        .unwrap();
    let api = dynamic(&env.client, &kustomization(), "flux-system");
    let ks = wait_for(&api, "flux-system", "first apply", |o| applied(o, &sha)).await;
    assert_eq!(
        inventory(&ks),
        [
            "_web__Namespace@v1",
            "web_one__ConfigMap@v1",
            "web_two__ConfigMap@v1",
            "web_web_apps_Deployment@v1",
        ]
    );
    let v = json_of(&ks);
    assert_eq!(
        v["status"]["lastAttemptedRevision"],
        format!("main@sha1:{sha}")
    );
    assert_eq!(
        v["status"]["observedGeneration"],
        v["metadata"]["generation"]
    );
    assert!(
        cond(&v, "Reconciling").is_null(),
        "Reconciling stays after success: {v}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "web");
    let one = cms.get("one").await.unwrap();
    assert_eq!(
        one.metadata.labels.as_ref().unwrap()["kustomize.toolkit.fluxcd.io/name"],
        "flux-system"
    );
    assert_eq!(
        one.metadata.labels.as_ref().unwrap()["kustomize.toolkit.fluxcd.io/namespace"],
        "flux-system"
    );
    assert!(
        cms.get_opt("unlisted").await.unwrap().is_none(),
        "a file not in resources was applied"
    );
    let managers: Vec<String> = one
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"kustomize-controller".to_owned()),
        "{managers:?}"
    );

    // Dropping a file from the commit prunes its objects.
    let sha2 = repo
        .write(
            "clusters/prod/config.yaml",
            &config_map("one", Some("web"), "changed"),
        )
        .push("drop two");
    request_reconcile(
        &dynamic(&env.client, &git_repository(), "flux-system"),
        "flux-system",
        "now",
    )
    .await;
    let ks = wait_for(&api, "flux-system", "second apply", |o| applied(o, &sha2)).await;
    assert!(!inventory(&ks).iter().any(|e| e.starts_with("web_two_")));
    wait_gone(&cms, "two", "pruned ConfigMap").await;
    assert_eq!(
        cms.get("one").await.unwrap().data.unwrap()["value"],
        "changed"
    );
}

#[tokio::test]
async fn kustomization_honours_suspend_and_requested_at() {
    let env = env().await;
    let repo = GitRepo::new();
    let sha = repo
        .write("app/cm.yaml", &config_map("cfg", Some("default"), "1"))
        .push("one");
    seed::flux_system(&env.client, &repo.url(), "main", "./app")
        .await
        .unwrap();
    let api = dynamic(&env.client, &kustomization(), "flux-system");
    let git = dynamic(&env.client, &git_repository(), "flux-system");
    wait_for(&api, "flux-system", "first apply", |o| applied(o, &sha)).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");

    merge(&api, "flux-system", json!({"spec": {"suspend": true}})).await;
    let sha2 = repo
        .write("app/cm.yaml", &config_map("cfg", Some("default"), "2"))
        .push("two");
    request_reconcile(&git, "flux-system", "g1").await;
    wait_for(&git, "flux-system", "source moved", |o| {
        revision(o).ends_with(&sha2)
    })
    .await;
    request_reconcile(&api, "flux-system", "k1").await;
    // Nothing may happen, so there is no event to wait for: allow time for a wrong apply.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let ks = json_of(&api.get("flux-system").await.unwrap());
    assert_eq!(
        ks["status"]["lastAppliedRevision"],
        format!("main@sha1:{sha}"),
        "applied while suspended"
    );
    assert_eq!(cms.get("cfg").await.unwrap().data.unwrap()["value"], "1");

    merge(&api, "flux-system", json!({"spec": {"suspend": false}})).await;
    wait_for(&api, "flux-system", "apply after resume", |o| {
        applied(o, &sha2)
    })
    .await;
    assert_eq!(cms.get("cfg").await.unwrap().data.unwrap()["value"], "2");

    // requestedAt re-applies the same revision: hand edits are reverted.
    let patch = json!({"data": {"value": "drifted"}});
    cms.patch(
        "cfg",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .unwrap();
    request_reconcile(&api, "flux-system", "k2").await;
    wait_for(&api, "flux-system", "requestedAt handled", |o| {
        json_of(o)["status"]["lastHandledReconcileAt"] == "k2"
            && cond(&json_of(o), "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(cms.get("cfg").await.unwrap().data.unwrap()["value"], "2");
}

#[tokio::test]
async fn child_kustomization_carries_parent_labels_and_failures_are_not_ready() {
    let env = env().await;
    let repo = GitRepo::new();
    repo.write(
        "clusters/prod/apps.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  interval: 10m\n  prune: true\n  path: ./apps\n  targetNamespace: default\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
    )
    .write("apps/cm.yaml", &config_map("from-child", None, "1"));
    let sha = repo.push("tree");
    seed::flux_system(&env.client, &repo.url(), "main", "./clusters/prod")
        .await
        .unwrap();
    let api = dynamic(&env.client, &kustomization(), "flux-system");
    let child = wait_for(&api, "apps", "child applied", |o| applied(o, &sha)).await;
    let labels = json_of(&child)["metadata"]["labels"].clone();
    assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "flux-system");
    assert_eq!(
        labels["kustomize.toolkit.fluxcd.io/namespace"],
        "flux-system"
    );
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), "default")
        .get("from-child")
        .await
        .unwrap();
    assert_eq!(
        cm.metadata.labels.unwrap()["kustomize.toolkit.fluxcd.io/name"],
        "apps"
    );

    // A path that does not exist at that commit: Ready=False with Flux's reason.
    merge(&api, "apps", json!({"spec": {"path": "./missing"}})).await;
    let failed = wait_for(&api, "apps", "failure", |o| {
        let v = json_of(o);
        cond(&v, "Ready")["status"] == "False"
            && v["status"]["observedGeneration"] == v["metadata"]["generation"]
    })
    .await;
    let v: Value = json_of(&failed);
    assert_eq!(cond(&v, "Ready")["reason"], "ArtifactFailed");
    assert!(
        cond(&v, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    assert_eq!(
        v["status"]["lastAppliedRevision"],
        format!("main@sha1:{sha}")
    );
}

#[tokio::test]
async fn an_object_without_namespace_fails_the_apply_like_flux() {
    let env = env().await;
    let repo = GitRepo::new();
    let sha = repo
        .write("app/good.yaml", &config_map("good", Some("default"), "1"))
        .write("app/bad.yaml", &config_map("homeless", None, "1"))
        .push("one without namespace");
    seed::flux_system(&env.client, &repo.url(), "main", "./app")
        .await
        .unwrap();
    let api = dynamic(&env.client, &kustomization(), "flux-system");
    let failed = wait_for(&api, "flux-system", "apply failure", |o| {
        let v = json_of(o);
        cond(&v, "Ready")["status"] == "False"
            && v["status"]["lastAttemptedRevision"] == format!("main@sha1:{sha}").as_str()
    })
    .await;
    let v = json_of(&failed);
    assert_eq!(cond(&v, "Ready")["reason"], "ReconciliationFailed");
    assert!(
        cond(&v, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap/homeless namespace not specified"),
        "{v}"
    );
    assert_eq!(cond(&v, "Reconciling")["reason"], "ProgressingWithRetry");
    assert!(v["status"]["lastAppliedRevision"].is_null());
}
