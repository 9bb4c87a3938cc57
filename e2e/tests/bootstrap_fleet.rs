//! Issue 15 item 1: a fleet laid out as `flux bootstrap` lays it out. The root
//! Kustomization `flux-system` applies its own manifest (`clusters/prod/flux-system/
//! gotk-sync.yaml`), so kustomize-controller labels it with its own name: that is the root
//! of the parent chain, not a loop. An app that names no Git location (it takes the
//! GitRepository's URL, branch and Secret) is upgraded end to end, and the ManagedApp reads
//! its versions from Git meanwhile.

use e2e::checks::{flux_resumed, snapshots_of};
use e2e::given::app;
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, Fleet, wait_until};
use kube::ResourceExt;
use std::time::Duration;

e2e::on_all_stacks!(an_app_on_a_bootstrapped_fleet_is_upgraded_and_its_git_view_works);

async fn an_app_on_a_bootstrapped_fleet_is_upgraded_and_its_git_view_works() {
    let story = e2e::given::world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().into())
            .apps_follow_flux(),
    )
    .await
    .unwrap();

    // The fleet is bootstrap-shaped: Flux's own manifests are in Git, and the root that
    // applies them carries labels naming itself.
    assert!(
        story
            .git
            .read_file("clusters/prod/flux-system/gotk-sync.yaml")
            .unwrap()
            .is_some_and(|sync| sync.contains("kind: Kustomization")),
        "gotk-sync.yaml is in Git"
    );
    let root = wait_until(
        "the root Kustomization to apply its own manifest",
        Duration::from_secs(30),
        async || {
            let root = then::flux_object(
                &story,
                FluxObjectKind::Kustomization,
                "flux-system",
                "flux-system",
            )
            .await;
            root.labels()
                .contains_key("kustomize.toolkit.fluxcd.io/name")
                .then_some(root)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        root.labels()["kustomize.toolkit.fluxcd.io/name"],
        "flux-system"
    );
    assert_eq!(
        root.labels()["kustomize.toolkit.fluxcd.io/namespace"],
        "flux-system"
    );
    let app = story.app().await.unwrap();
    assert_eq!(app.spec.git.url, None, "the app names no Git location");
    assert_eq!(app.spec.git.branch, None);

    // The ManagedApp's Git view: versions read from the GitRepository's repository.
    wait_until(
        "the ManagedApp to read its versions from Git",
        Duration::from_secs(30),
        async || {
            let status = story.app().await.ok()?.status?;
            (status.current_versions.get("chart").map(String::as_str) == Some("v1.4.0"))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // The upgrade goes through, the root first in its plan.
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let plan = status.plan.clone().unwrap();
    let planned: Vec<String> = plan
        .flux_objects
        .iter()
        .map(|o| format!("{:?} {}/{}", o.kind, o.namespace, o.name))
        .collect();
    assert_eq!(
        planned,
        [
            "Kustomization flux-system/flux-system",
            "HelmRelease apps/db"
        ]
    );
    let git = plan.git.unwrap();
    assert_eq!(git.url, story.git.http_url().unwrap());
    assert_eq!(git.branch, "main");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0"))
    );
    assert_eq!(snapshots_of(&story, &done.uid().unwrap()).await, 2);
    assert!(flux_resumed(&story).await);
    wait_until(
        "the ManagedApp to show the new version",
        Duration::from_secs(30),
        async || {
            let status = story.app().await.ok()?.status?;
            (status.current_versions.get("chart").map(String::as_str) == Some("v1.5.0"))
                .then_some(())
        },
    )
    .await
    .unwrap();
    story.stop().await;
}
