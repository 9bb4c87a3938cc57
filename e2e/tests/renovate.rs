//! Renovate-driven updates end to end: Renovate's report lands in a ConfigMap → the
//! ManagedApp shows the update its policy picks → once the maintenance window opens, an
//! automatic UpgradeRequest runs and succeeds → the update is cleared. A failed automatic
//! upgrade rolls back, and that version is never proposed or attempted again.

use fluxgate::api::conditions::{UPDATE_AVAILABLE, find_condition};
use fluxgate::api::{ManagedApp, Phase, UpgradeRequest};
use fluxgate::controller::renovate_input::RenovateSettings;
use fluxgate::demo::world::{APP_FILE, DemoWorld, app_manifest, holds_for, wait_until};
use fluxgate::renovate::policy::AUTOMATIC_LABEL;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// Renovate's report (`reportType: file`) for the fleet repository: the OCIRepository's tag
/// at `current`, with these updates offered.
fn report(repository: &str, current: &str, updates: &[(&str, &str)]) -> String {
    let updates: Vec<_> = updates
        .iter()
        .map(|(version, kind)| json!({"newValue": version, "updateType": kind}))
        .collect();
    json!({"repositories": {repository: {"problems": [], "packageFiles": {"flux": [
        {"packageFile": APP_FILE, "deps": [
            {"depName": "ghcr.io/example/charts/db", "currentValue": current,
             "datasource": "docker", "updates": updates}]}]}}}})
    .to_string()
}

/// Renovate names a repository by its path on the host; for the local test server that is
/// the path of its `file://` URL.
fn renovate_repository(story: &DemoWorld) -> String {
    let url = story.git.file_url();
    url.trim_start_matches("file://")
        .trim_start_matches('/')
        .trim_end_matches(".git")
        .to_owned()
}

async fn write_report(story: &DemoWorld, text: String) {
    let configmap: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "renovate-output", "namespace": "apps"},
        "data": {"report.json": text}
    }))
    .unwrap();
    let api = Api::<ConfigMap>::namespaced(story.client.clone(), "apps");
    match api.get_opt("renovate-output").await.unwrap() {
        None => {
            api.create(&PostParams::default(), &configmap)
                .await
                .unwrap();
        }
        Some(_) => {
            api.patch(
                "renovate-output",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": configmap.data})),
            )
            .await
            .unwrap();
        }
    }
}

async fn automatic_upgrades(story: &DemoWorld) -> Vec<UpgradeRequest> {
    Api::<UpgradeRequest>::namespaced(story.client.clone(), "apps")
        .list(&ListParams::default().labels(AUTOMATIC_LABEL))
        .await
        .unwrap()
        .items
}

async fn set_policy(story: &DemoWorld, policy: serde_json::Value) {
    Api::<ManagedApp>::namespaced(story.client.clone(), "apps")
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updatePolicy": policy}})),
        )
        .await
        .unwrap();
}

/// A window that opened at 00:00 UTC a year from now: closed for the whole test.
const CLOSED: &str = "0 0 1 1 *";
/// A window opening every minute for an hour: always open.
const OPEN: &str = "* * * * *";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renovate_updates_are_shown_applied_in_the_window_and_failed_versions_never_again() {
    let mut story = DemoWorld::start(
        "v1.4.0",
        json!({"health": {"timeout": "5s", "stabilization": "1s"},
               "updatePolicy": {"auto": "minor",
                                "window": {"schedule": CLOSED, "duration": "1m"}}}),
    )
    .await
    .unwrap();
    story.kill_operator().await;
    story.settings.renovate = RenovateSettings {
        configmap: Some(("apps".into(), "renovate-output".into())),
        file: None,
    };
    story.start_operator().unwrap();
    let repository = renovate_repository(&story);

    // Renovate offers a patch, a minor and a major: the policy (auto: minor) picks the minor.
    write_report(
        &story,
        report(
            &repository,
            "v1.4.0",
            &[
                ("v1.4.1", "patch"),
                ("v1.5.0", "minor"),
                ("v2.0.0", "major"),
            ],
        ),
    )
    .await;
    let shown = wait_until(
        "the update to be shown",
        Duration::from_secs(20),
        async || {
            let status = story.app().await.ok()?.status?;
            let update = status.available_update.get("chart")?.clone();
            Some((update, status))
        },
    )
    .await
    .unwrap();
    let (update, status) = shown;
    assert_eq!(update.version, "v1.5.0", "{update:?}");
    assert_eq!(update.current, "v1.4.0");
    let condition = find_condition(&status.conditions, UPDATE_AVAILABLE).unwrap();
    assert_eq!(condition.status, "True", "{condition:?}");
    assert_eq!(status.available.as_deref(), Some("chart=v1.5.0"));

    // The window is closed: nothing is created however long we wait.
    holds_for(
        "no automatic upgrade while the window is closed",
        Duration::from_secs(2),
        async || automatic_upgrades(&story).await.is_empty(),
    )
    .await
    .unwrap();

    // The window opens: one automatic upgrade, labelled, to the chosen version; it succeeds
    // and the offer is cleared because Git has it.
    set_policy(
        &story,
        json!({"auto": "minor", "window": {"schedule": OPEN, "duration": "1h"}}),
    )
    .await;
    let first = wait_until(
        "the automatic upgrade",
        Duration::from_secs(20),
        async || automatic_upgrades(&story).await.into_iter().next(),
    )
    .await
    .unwrap();
    assert_eq!(first.spec.managed_app, "db");
    assert_eq!(
        first.spec.target.as_ref().and_then(|t| t.get("chart")),
        Some(&"v1.5.0".to_owned())
    );
    let name = first.metadata.name.clone().unwrap();
    let done: UpgradeRequest = story
        .finished(&name, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(done.status.unwrap().phase, Some(Phase::Succeeded));
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(app_manifest("v1.5.0"))
    );
    wait_until(
        "the offer to be cleared",
        Duration::from_secs(20),
        async || {
            let status = story.app().await.ok()?.status?;
            (status.available_update.is_empty()
                && status.current_versions.get("chart").map(String::as_str) == Some("v1.5.0"))
            .then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        automatic_upgrades(&story).await.len(),
        1,
        "no second request"
    );

    // Renovate's next run offers a major; the policy now allows it; it fails health and
    // rolls back; from then on it is neither offered nor attempted.
    story.world.failures.fail_chart_version("v2.0.0");
    set_policy(
        &story,
        json!({"auto": "major", "window": {"schedule": OPEN, "duration": "1h"}}),
    )
    .await;
    write_report(
        &story,
        report(&repository, "v1.5.0", &[("v2.0.0", "major")]),
    )
    .await;
    let second = wait_until(
        "the automatic upgrade to v2.0.0",
        Duration::from_secs(20),
        async || {
            automatic_upgrades(&story)
                .await
                .into_iter()
                .find(|u| u.metadata.name.as_deref() != Some(name.as_str()))
        },
    )
    .await
    .unwrap();
    let failed: UpgradeRequest = story
        .finished(
            second.metadata.name.as_deref().unwrap(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert_eq!(
        failed.status.as_ref().and_then(|s| s.phase),
        Some(Phase::RolledBack),
        "{:#?}",
        failed.status
    );
    let status = wait_until(
        "the failed version to be recorded and the offer dropped",
        Duration::from_secs(20),
        async || {
            let status = story.app().await.ok()?.status?;
            (status.failed_versions.iter().any(|f| f.version == "v2.0.0")
                && status.available_update.is_empty())
            .then_some(status)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        status.current_versions.get("chart").map(String::as_str),
        Some("v1.5.0")
    );
    // Renovate's next run offers it again; Fluxgate keeps refusing it.
    write_report(
        &story,
        report(&repository, "v1.5.0", &[("v2.0.0", "major")]) + "\n",
    )
    .await;
    holds_for(
        "a failed version is never attempted again",
        Duration::from_secs(3),
        async || automatic_upgrades(&story).await.len() == 2,
    )
    .await
    .unwrap();
    assert!(
        story
            .app()
            .await
            .unwrap()
            .status
            .unwrap()
            .available_update
            .is_empty()
    );
    story.stop().await;
}
