//! The ManagedApp's status stays true with and without a request running: `currentVersions` follows
//! Git (also when someone else pushes) and `Ready` follows the live app, event-driven — the
//! prototype's Ready was set once and went stale.

use e2e::given::app;
use e2e::{then, when};
use fluxgate::api::conditions::{READY, find_condition};
use fluxgate::api::{ManagedApp, ManagedAppStatus, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, wait_until};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

e2e::on_all_stacks!(
    versions_and_readiness_follow_git_and_the_live_app_without_a_request,
    a_lock_whose_request_is_gone_is_released_and_the_next_upgrade_runs
);

fn ready(status: &ManagedAppStatus) -> Option<(String, String, String)> {
    find_condition(&status.conditions, READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn versions_and_readiness_follow_git_and_the_live_app_without_a_request() {
    // Helm gives up on the never-ready version pushed below after 15 s, not its default
    // 5m: until then real helm-controller sees no suspend, and the upgrade waits for it.
    let story = app().helm_timeout("15s").running_at("v1.4.0").await;

    let status = wait_until(
        "the app's versions and readiness",
        Duration::from_secs(20),
        async || {
            let status = story.app().await.ok()?.status?;
            let (ready, _, _) = ready(&status)?;
            (ready == "True" && status.current_versions.contains_key("chart")).then_some(status)
        },
    )
    .await
    .unwrap();
    assert_eq!(status.current_versions["chart"], "v1.4.0");
    assert_eq!(status.current.as_deref(), Some("v1.4.0"));
    assert_eq!(status.active_operation, None);
    let (_, reason, message) = ready(&status).unwrap();
    assert_eq!(reason, "Healthy");
    assert!(message.contains("healthy"), "{message}");

    // Someone pushes a new chart version straight to Git, one whose pods never become
    // ready. Flux deploys it; the ManagedApp follows both Git and the app's health.
    story.world.failures.fail_chart_version("v1.4.1");
    story.publish_app_chart("db", "v1.4.1").await.unwrap();
    when::pushed_by_hand(
        &story,
        &[(APP_FILE, &story.app_manifest("v1.4.1"))],
        "db: chart v1.4.1 (by hand)",
    )
    .await;
    let status = wait_until(
        "the pushed version and the failing health to show",
        Duration::from_secs(60),
        async || {
            let status = story.app().await.ok()?.status?;
            let (ready, _, _) = ready(&status)?;
            (ready == "False"
                && status.current_versions.get("chart").map(String::as_str) == Some("v1.4.1"))
            .then_some(status)
        },
    )
    .await
    .unwrap();
    let (_, reason, message) = ready(&status).unwrap();
    assert_eq!(reason, "Unhealthy", "{message}");
    assert!(!message.is_empty());

    // An upgrade to a good version: while it holds the app, Ready says so; once it is
    // done, Ready is read from the live app again.
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    wait_until(
        "Ready to show the operation",
        Duration::from_secs(30),
        async || {
            let status = story.app().await.ok()?.status?;
            let (_, reason, message) = ready(&status)?;
            (reason == "OperationInProgress" && message.contains("db-1-5-0")).then_some(())
        },
    )
    .await
    .unwrap();
    wait_until(
        "Ready=True after the upgrade",
        Duration::from_secs(90),
        async || {
            let status = story.app().await.ok()?.status?;
            let (ready, reason, _) = ready(&status)?;
            (ready == "True"
                && reason == "Healthy"
                && status.current_versions.get("chart").map(String::as_str) == Some("v1.5.0"))
            .then_some(())
        },
    )
    .await
    .unwrap();
    story.stop().await;
}

/// A lock whose request is gone — deleted by hand with its finalizer stripped, say — is
/// released by the app controller at once (a fresh read of the holder decides, not the
/// cache nor a grace period), and the next upgrade then runs; a lock whose request exists is
/// never taken from it.
async fn a_lock_whose_request_is_gone_is_released_and_the_next_upgrade_runs() {
    let story = app().running_at("v1.4.0").await;
    let since = k8s_openapi::jiff::Timestamp::now().to_string();
    e2e::api::<ManagedApp>(&story)
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"activeOperation": {
            "kind": "UpgradeRequest", "name": "ghost", "uid": "ghost-uid", "since": since}}})),
        )
        .await
        .unwrap();
    wait_until(
        "the ghost lock to be released",
        Duration::from_secs(10),
        async || {
            let status = story.app().await.ok()?.status?;
            status.active_operation.is_none().then_some(())
        },
    )
    .await
    .unwrap();
    // The Event follows the status write that released the lock.
    let released = wait_until(
        "a StaleLockReleased Event",
        Duration::from_secs(10),
        async || {
            then::events(&story, "StaleLockReleased")
                .await
                .into_iter()
                .next()
        },
    )
    .await
    .unwrap();
    assert!(
        released
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("UpgradeRequest ghost"),
        "{released:?}"
    );

    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status.unwrap().phase, Some(Phase::Succeeded));
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0"))
    );
}
