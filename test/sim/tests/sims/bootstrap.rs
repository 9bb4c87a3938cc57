//! Flux as `flux bootstrap` leaves it, against the sims: GitRepository refs resolved as
//! source-controller resolves them (with its revision format), a root Kustomization that
//! applies its own manifest and so labels itself, and a child's `spec.suspend` from Git put
//! back by its parent's server-side apply.

use crate::common::*;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use sim::kinds::{git_repository, kustomization};
use sim::seed;

fn revision(obj: &DynamicObject) -> String {
    json_of(obj)["status"]["artifact"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn repository_following(env: &Env, name: &str, url: &str, reference: Value) {
    seed::put(
        &env.client,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": name, "namespace": "flux-system"},
            "spec": {"interval": "1m", "url": url, "ref": reference},
        }),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn git_repository_refs_resolve_as_source_controller_resolves_them() {
    let env = env().await;
    let repo = GitRepo::new();
    let first = repo
        .write("a.yaml", &config_map("a", None, "1"))
        .push("one");
    repo.tag("v1.0.0");
    let second = repo
        .write("a.yaml", &config_map("a", None, "2"))
        .push("two");
    repo.push_to("release");
    seed::namespace(&env.client, "flux-system").await.unwrap();
    let api = dynamic(&env.client, &git_repository(), "flux-system");
    // Checked out as fluxcd/pkg/git's Client.clone picks (commit > name > tag > semver >
    // branch), the revision written as source-controller's commitReference writes it.
    let cases = [
        (
            "branch",
            json!({"branch": "release"}),
            format!("release@sha1:{second}"),
        ),
        (
            "name-branch",
            json!({"name": "refs/heads/main"}),
            format!("refs/heads/main@sha1:{second}"),
        ),
        (
            "name-wins",
            json!({"name": "refs/heads/release", "tag": "v1.0.0", "branch": "main"}),
            format!("refs/heads/release@sha1:{second}"),
        ),
        (
            "tag",
            json!({"tag": "v1.0.0", "branch": "main"}),
            format!("v1.0.0@sha1:{first}"),
        ),
        (
            "name-tag",
            json!({"name": "refs/tags/v1.0.0"}),
            format!("refs/tags/v1.0.0@sha1:{first}"),
        ),
        (
            "tag-over-semver",
            json!({"semver": ">=0.1.0", "tag": "v1.0.0"}),
            format!("v1.0.0@sha1:{first}"),
        ),
        ("commit", json!({"commit": first}), format!("sha1:{first}")),
        (
            "commit-branch",
            json!({"commit": first, "branch": "main"}),
            format!("main@sha1:{first}"),
        ),
    ];
    for (name, reference, _) in &cases {
        repository_following(&env, name, &repo.url(), reference.clone()).await;
    }
    for (name, reference, expected) in &cases {
        let got = wait_for(&api, name, &format!("{reference} to resolve"), |o| {
            !revision(o).is_empty()
        })
        .await;
        assert_eq!(&revision(&got), expected, "{reference}");
        assert_eq!(cond(&json_of(&got), "Ready")["status"], "True");
    }

    // No ref at all follows `master`, which this repository does not have.
    repository_following(&env, "default", &repo.url(), json!({})).await;
    let failed = wait_for(&api, "default", "master to be missing", |o| {
        cond(&json_of(o), "Ready")["status"] == "False"
    })
    .await;
    let message = cond(&json_of(&failed), "Ready")["message"].clone();
    assert!(
        message.as_str().unwrap().contains("branch master"),
        "{message}"
    );
}

#[tokio::test]
async fn the_bootstrap_root_applies_its_own_manifest_and_labels_itself() {
    let env = env().await;
    let repo = GitRepo::new();
    let sync = seed::gotk_sync(
        &repo.url(),
        &json!({"branch": "main"}),
        "clusters/prod",
        false,
    );
    let sha = repo
        .write("clusters/prod/flux-system/gotk-sync.yaml", &sync)
        .write(
            "clusters/prod/flux-system/gotk-components.yaml",
            seed::GOTK_COMPONENTS,
        )
        .write(
            "clusters/prod/flux-system/kustomization.yaml",
            seed::GOTK_KUSTOMIZATION,
        )
        .write(
            "clusters/prod/cm.yaml",
            &config_map("app", Some("default"), "1"),
        )
        .push("flux bootstrap");
    seed::bootstrap(&env.client, &sync, None).await.unwrap();
    let api = dynamic(&env.client, &kustomization(), "flux-system");
    let root = wait_for(&api, "flux-system", "the root to apply itself", |o| {
        json_of(o)["status"]["lastAppliedRevision"] == format!("main@sha1:{sha}").as_str()
    })
    .await;
    let repository = dynamic(&env.client, &git_repository(), "flux-system")
        .get("flux-system")
        .await
        .unwrap();
    for object in [json_of(&root), json_of(&repository)] {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "flux-system");
        assert_eq!(
            labels["kustomize.toolkit.fluxcd.io/namespace"],
            "flux-system"
        );
    }
    let root_json = json_of(&root);
    let entries: Vec<&str> = root_json["status"]["inventory"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    for id in [
        "flux-system_flux-system_kustomize.toolkit.fluxcd.io_Kustomization",
        "flux-system_flux-system_source.toolkit.fluxcd.io_GitRepository",
        "_flux-system__Namespace",
    ] {
        assert!(entries.contains(&id), "{id} not in {entries:?}");
    }
    // kustomize-controller now applies what `flux bootstrap` applied first (field manager
    // `flux`); both applied the same value, so server-side apply lets them share it.
    let owners: Vec<String> = root_json["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["fieldsV1"]["f:spec"]["f:path"].is_object())
        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(owners, ["flux", "kustomize-controller"]);
}

#[tokio::test]
async fn a_child_spec_suspend_written_in_git_is_put_back_by_the_parent() {
    let env = env().await;
    let repo = GitRepo::new();
    let child = |name: &str, suspend: &str| {
        format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./apps\n  prune: true\n{suspend}  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
        )
    };
    let sha = repo
        .write(
            "clusters/prod/written.yaml",
            &child("written", "  suspend: false\n"),
        )
        .write("clusters/prod/left.yaml", &child("left", ""))
        .write("apps/cm.yaml", &config_map("app", Some("default"), "1"))
        .push("two children");
    seed::flux_system(&env.client, &repo.url(), "main", "./clusters/prod")
        .await
        .unwrap();
    let api = dynamic(&env.client, &kustomization(), "flux-system");
    wait_for(&api, "flux-system", "the root to apply", |o| {
        json_of(o)["status"]["lastAppliedRevision"] == format!("main@sha1:{sha}").as_str()
    })
    .await;
    // Someone (Fluxgate) suspends both children with a merge patch, then the parent
    // reconciles.
    for name in ["written", "left"] {
        api.patch(
            name,
            &PatchParams {
                field_manager: Some("fluxgate".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    }
    request_reconcile(&api, "flux-system", "after-suspend").await;
    wait_for(&api, "flux-system", "the root to reconcile", |o| {
        json_of(o)["status"]["lastHandledReconcileAt"] == "after-suspend"
            && cond(&json_of(o), "Ready")["status"] == "True"
    })
    .await;
    let written = json_of(&api.get("written").await.unwrap());
    assert_eq!(
        written["spec"]["suspend"], false,
        "Git's spec.suspend is applied over the patch"
    );
    let owner: Vec<&str> = written["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["fieldsV1"]["f:spec"]["f:suspend"].is_object())
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(owner, ["kustomize-controller"]);
    let left = json_of(&api.get("left").await.unwrap());
    assert_eq!(
        left["spec"]["suspend"], true,
        "a field Git does not write is left alone"
    );
}
