//! Story: Renovate's output as it really arrives. Renovate's `local` platform (a lookup run
//! against a checkout, in CI or a CronJob) names the repository `local`; its findings still
//! reach the app, matched by file, value and package. A report cut at the ConfigMap's size
//! limit, or emptied, keeps the offers it cannot speak for and says so on the ConfigMap and
//! the app. A changed `--renovate-file` (a mounted ConfigMap, swapped by symlink) is seen
//! within seconds, not at the next resync half an hour later.

use e2e::given::{app, renovate_chart_package};
use e2e::{then, when};
use fluxgate::api::conditions::{UPDATE_AVAILABLE, find_condition};
use fluxgate::api::{AvailableUpdate, ManagedApp};
use fluxgate::controller::renovate_input::RenovateSettings;
use fluxgate::demo::world::{APP_FILE, DemoWorld, holds_for, wait_until};
use k8s_openapi::api::core::v1::Event;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

e2e::on_all_stacks!(
    a_local_platform_report_is_shown_and_a_cut_one_keeps_the_offer,
    a_renovate_file_swapped_by_the_kubelet_is_seen_within_seconds
);

/// Renovate's report as its `local` platform writes it: the repository is `local`.
fn local_report(current: &str, updates: &[(&str, &str)]) -> String {
    let updates: Vec<_> = updates
        .iter()
        .map(|(version, kind)| {
            json!({"newValue": version, "updateType": kind,
                   "releaseTimestamp": "2026-11-30T08:00:00.000Z"})
        })
        .collect();
    serde_json::to_string_pretty(&json!({"repositories": {"local": {"problems": [],
        "packageFiles": {"flux": [
        {"packageFile": APP_FILE, "deps": [
            {"depName": renovate_chart_package(), "currentValue": current,
             "datasource": "docker", "updates": updates}]}]}}}}))
    .unwrap()
}

async fn offer(story: &DemoWorld) -> Option<AvailableUpdate> {
    story
        .app()
        .await
        .ok()?
        .status?
        .available_update
        .get("chart")
        .cloned()
}

/// The Events about `kind`/`name` in namespace `apps` with this reason.
async fn events(story: &DemoWorld, kind: &str, name: &str, reason: &str) -> Vec<Event> {
    then::events(story, reason)
        .await
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .collect()
}

async fn started_with(settings: RenovateSettings) -> DemoWorld {
    let mut story = app().running_at("v1.4.0").await;
    when::operator_reads_renovate(&mut story, settings).await;
    story
}

async fn a_local_platform_report_is_shown_and_a_cut_one_keeps_the_offer() {
    let story = started_with(when::renovate_configmap()).await;

    // Renovate's local platform: repository `local`, whatever the app's clone URL is.
    let good = local_report("v1.4.0", &[("v1.4.1", "patch"), ("v1.5.0", "minor")]);
    when::renovate_writes(&story, &good).await;
    let shown = wait_until("the offer", Duration::from_secs(20), async || {
        offer(&story).await
    })
    .await
    .unwrap();
    assert_eq!(shown.version, "v1.5.0", "{shown:?}");
    assert_eq!(shown.current, "v1.4.0");
    assert_eq!(
        shown
            .released_at
            .as_ref()
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2026-11-30T08:00:00Z")
    );
    wait_until(
        "the ConfigMap to say what was read",
        Duration::from_secs(10),
        async || {
            let read = events(&story, "ConfigMap", "renovate-output", "RenovateInputRead").await;
            read.into_iter()
                .find(|e| e.message.as_deref().unwrap_or_default().contains("1 deps"))
        },
    )
    .await
    .unwrap();

    // The report is cut at the ConfigMap's size limit: the offer stays, and both the
    // ConfigMap and the app say why.
    when::renovate_writes(&story, &good[..good.len() / 2]).await;
    let warning = wait_until(
        "the ConfigMap's warning",
        Duration::from_secs(20),
        async || {
            events(
                &story,
                "ConfigMap",
                "renovate-output",
                "RenovateInputUnusable",
            )
            .await
            .into_iter()
            .next()
        },
    )
    .await
    .unwrap();
    let message = warning.message.unwrap_or_default();
    assert!(message.contains("1 MiB limit"), "{message}");
    assert!(message.contains("kept"), "{message}");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    wait_until("the app's warning", Duration::from_secs(20), async || {
        events(&story, "ManagedApp", "db", "RenovateInputUnusable")
            .await
            .into_iter()
            .next()
    })
    .await
    .unwrap();
    // Emptied as well: still nothing is cleared.
    when::renovate_writes(&story, "").await;
    holds_for(
        "the offer while the input is empty",
        Duration::from_secs(3),
        async || offer(&story).await.as_ref() == Some(&shown),
    )
    .await
    .unwrap();
    assert!(
        events(&story, "ManagedApp", "db", "UpdateCleared")
            .await
            .is_empty(),
        "unusable input cleared an offer"
    );

    // A valid report that lists nothing newer clears it, and the condition says why.
    when::renovate_writes(&story, &local_report("v1.4.0", &[])).await;
    let app: ManagedApp = wait_until("the offer to go", Duration::from_secs(20), async || {
        let app = story.app().await.ok()?;
        app.status
            .as_ref()?
            .available_update
            .is_empty()
            .then_some(app)
    })
    .await
    .unwrap();
    let status = app.status.unwrap();
    let condition = find_condition(&status.conditions, UPDATE_AVAILABLE).unwrap();
    assert_eq!(condition.reason, "UpToDate");
    assert_eq!(
        condition.message,
        "Renovate offers no update for this app's versions: chart: Renovate lists no update \
         from v1.4.0"
    );
}

async fn a_renovate_file_swapped_by_the_kubelet_is_seen_within_seconds() {
    // The layout the kubelet gives a mounted ConfigMap: the file is a symlink through
    // `..data` to a timestamped directory, and an update swaps `..data`.
    let mount = tempfile::tempdir().unwrap();
    let publish = |version: &str, report: &str| {
        let dir = mount.path().join(version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("report.json"), report).unwrap();
        let staged = mount.path().join("..data_tmp");
        std::os::unix::fs::symlink(version, &staged).unwrap();
        std::fs::rename(&staged, mount.path().join("..data")).unwrap();
    };
    publish("v1", &local_report("v1.4.0", &[("v1.4.1", "patch")]));
    let file = mount.path().join("report.json");
    std::os::unix::fs::symlink(Path::new("..data/report.json"), &file).unwrap();
    let story = started_with(RenovateSettings {
        configmap: None,
        file: Some(file),
    })
    .await;
    let first = wait_until("the first offer", Duration::from_secs(20), async || {
        offer(&story).await
    })
    .await
    .unwrap();
    assert_eq!(first.version, "v1.4.1");

    // Renovate's next run finds a minor; the app shows it within seconds (the resync is
    // half an hour away).
    publish("v2", &local_report("v1.4.0", &[("v1.5.0", "minor")]));
    let next = wait_until("the new offer", Duration::from_secs(15), async || {
        offer(&story).await.filter(|o| o.version == "v1.5.0")
    })
    .await
    .unwrap();
    assert_eq!(next.update_type.as_str(), "minor");
}
