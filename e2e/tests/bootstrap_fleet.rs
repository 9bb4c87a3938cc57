//! Issue 15 item 1, issue 19 item 2: a fleet laid out as `flux bootstrap` lays it out. The
//! root Kustomization `flux-system` applies its own manifest (`clusters/prod/flux-system/
//! gotk-sync.yaml`), so kustomize-controller labels it with its own name: that is the root
//! of the parent chain, not a loop. Beneath it the apps of a real fleet: a chart from an
//! OCIRepository by tag (`db`), one pinned by tag and digest (`queue`), one from a
//! HelmRepository (`cache`), and a Kustomization of its own with a digest-pinned image
//! (`web`); every one deployed by Flux and read by its ManagedApp. An app that names no Git
//! location (it takes the GitRepository's URL, branch and Secret) is upgraded end to end,
//! and the ManagedApp reads its versions from Git meanwhile.

use e2e::checks::{flux_resumed, snapshots_of};
use e2e::given::app;
use e2e::then;
use fluxgate::api::conditions::{READY, find_condition};
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, Fleet, digest_placeholder, helm_app_manifest, wait_until};
use kube::ResourceExt;
use std::time::Duration;

/// The chart of app `queue`, pinned by tag and digest.
const QUEUE_CHART: &str = "oci://ghcr.io/example/charts/queue";

/// App `queue`'s manifests: its OCIRepository pins tag 2.1.0 and that tag's digest, as
/// Renovate writes them.
fn queue_manifest() -> String {
    let plain = helm_app_manifest("queue", "2.1.0", 1);
    let tag_line = "    tag: 2.1.0 # pinned by Fluxgate\n";
    assert!(plain.contains(tag_line), "{plain}");
    plain.replace(
        tag_line,
        &format!(
            "    tag: 2.1.0\n    digest: {} # pinned by Renovate\n",
            digest_placeholder(QUEUE_CHART, "2.1.0")
        ),
    )
}

/// App `web`'s image, pinned by digest.
fn web_image() -> String {
    format!("ghcr.io/example/web:1.2.0@sha256:{}", "a".repeat(64))
}

e2e::on_all_stacks!(an_app_on_a_bootstrapped_fleet_is_upgraded_and_its_git_view_works);

async fn an_app_on_a_bootstrapped_fleet_is_upgraded_and_its_git_view_works() {
    let story = e2e::given::world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().into())
            .published_chart(QUEUE_CHART, "2.1.0")
            .helm_app_written("queue", "queue", &queue_manifest(), 1, app().into())
            .helm_repository_app("cache", "3.0.0", 1, app().into())
            .web_app(&web_image(), app().into())
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
    // Every app beneath the root, deployed from its source and read by its ManagedApp.
    for (kind, namespace, name) in [
        (FluxObjectKind::HelmRelease, "apps", "db"),
        (FluxObjectKind::HelmRelease, "apps", "queue"),
        (FluxObjectKind::HelmRelease, "apps", "cache"),
        (FluxObjectKind::Kustomization, "flux-system", "web"),
    ] {
        let object = then::flux_object(&story, kind, namespace, name).await;
        assert_eq!(
            object
                .labels()
                .get("kustomize.toolkit.fluxcd.io/name")
                .map(String::as_str),
            Some("flux-system"),
            "{kind:?} {namespace}/{name} is applied by the root"
        );
    }
    let queue_digest = story.chart_digest(QUEUE_CHART, "2.1.0").unwrap();
    assert_eq!(
        then::served_revision(&story, FluxObjectKind::OciRepository, "apps", "queue").await,
        Some(queue_digest.clone()),
        "the digest wins over the tag"
    );
    let web = then::deployment(&story, "web").await;
    assert_eq!(
        web.spec
            .template
            .spec
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone())),
        Some(web_image()),
        "the Deployment runs the digest-pinned image"
    );
    for (name, field, version) in [
        ("db", "chart", "v1.4.0".to_owned()),
        ("queue", "chart", format!("2.1.0@{queue_digest}")),
        ("cache", "chart", "3.0.0".to_owned()),
        ("web", "image", format!("1.2.0@sha256:{}", "a".repeat(64))),
    ] {
        let status = wait_until(
            &format!("ManagedApp {name} to read its version and be Ready"),
            Duration::from_secs(30),
            async || {
                let status = story.app_named(name).await.ok()?.status?;
                let ready = find_condition(&status.conditions, READY)?.status == "True";
                (ready && status.current_versions.contains_key(field)).then_some(status)
            },
        )
        .await
        .unwrap();
        assert_eq!(
            status.current_versions[field], version,
            "{name}: {status:#?}"
        );
    }

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
