//! Renovate-driven updates end to end: Renovate's report lands in a ConfigMap → the
//! ManagedApp shows the update its policy picks → once the maintenance window opens, an
//! automatic UpgradeRequest runs and succeeds → the update is cleared. A failed automatic
//! upgrade rolls back, and that version is never proposed or attempted again.

use e2e::given::{app, auto_update, renovate_report};
use e2e::then::automatic_upgrades;
use e2e::when;
use fluxgate::api::conditions::{UPDATE_AVAILABLE, find_condition};
use fluxgate::api::{AutoUpdate, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, holds_for, wait_until};
use std::time::Duration;

e2e::on_all_stacks!(
    renovate_updates_are_shown_applied_in_the_window_and_failed_versions_never_again
);

/// A window that opened at 00:00 UTC a year from now: closed for the whole test.
const CLOSED: &str = "0 0 1 1 *";
/// A window opening every minute for an hour: always open.
const OPEN: &str = "* * * * *";

async fn renovate_updates_are_shown_applied_in_the_window_and_failed_versions_never_again() {
    // Helm gives up on the never-ready v2.0.0 after 15 s, not its default 5m (until then
    // real helm-controller sees no suspend, and the rollback waits for it).
    let mut story = app()
        .health_timeout("5s")
        .helm_timeout("15s")
        .update_policy(auto_update(AutoUpdate::Minor, CLOSED, "1m"))
        .running_at("v1.4.0")
        .await;
    when::operator_reads_renovate(&mut story, when::renovate_configmap()).await;
    // Renovate offers only what the registry has (the sims' registry answers any tag).
    for version in ["v1.4.1", "v1.5.0", "v2.0.0"] {
        story.publish_app_chart("db", version).await.unwrap();
    }

    // Renovate offers a patch, a minor and a major: the policy (auto: minor) picks the minor.
    when::renovate_writes(
        &story,
        &renovate_report(
            &story,
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
    when::update_policy_set(&story, &auto_update(AutoUpdate::Minor, OPEN, "1h")).await;
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
        Some(story.app_manifest("v1.5.0"))
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
    when::update_policy_set(&story, &auto_update(AutoUpdate::Major, OPEN, "1h")).await;
    when::renovate_writes(
        &story,
        &renovate_report(&story, "v1.5.0", &[("v2.0.0", "major")]),
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
    when::renovate_writes(
        &story,
        &(renovate_report(&story, "v1.5.0", &[("v2.0.0", "major")]) + "\n"),
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
