//! Story (e), `rollback.onFailure: Freeze`: a version that fails after its commit leaves
//! everything as it is for a person — the new commit stays in Git, no rollback, Flux
//! suspended, volumes and snapshots kept, the app's lock held — and says so loudly in the
//! request's phase, failure, conditions and Events, the app's last operation and the metrics.
//! Deleting the frozen request (the documented way out) resumes Flux and frees the app.

use e2e::checks::wait_phase;
use e2e::given::app;
use e2e::{then, when};
use fluxgate::api::conditions::{READY, STALLED, find_condition};
use fluxgate::api::{OnFailure, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, DemoWorld, helm_app_manifest_with, wait_until};
use k8s_openapi::api::core::v1::Event;
use std::time::Duration;

e2e::on_all_stacks!(e_a_frozen_upgrade_undoes_nothing_and_says_so);

async fn suspended(story: &DemoWorld) -> (bool, bool) {
    e2e::checks::suspended(story)
        .await
        .expect("the root Kustomization and the HelmRelease exist")
}

async fn e_a_frozen_upgrade_undoes_nothing_and_says_so() {
    let story = app()
        .on_failure(OnFailure::Freeze)
        .health_timeout("5s")
        // Real Helm waits this long for the never-ready version (its default is 5m).
        .helm_timeout("15s")
        .running_at("v1.4.0")
        .await;
    story.world.failures.fail_chart_version("v2.0.0");
    story.upgrade("db-2-0-0", "v2.0.0").await.unwrap();
    let frozen: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(60))
        .await
        .unwrap();
    let status = frozen.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Frozen), "{status:#?}");
    let failure = status.failure.clone().expect("the failure is recorded");
    assert!(
        matches!(failure.phase, Phase::Reconcile | Phase::Verify),
        "{failure:?}"
    );
    assert!(!failure.reason.is_empty() && !failure.message.is_empty());

    // Nothing undone: the commit stays, no rollback, volumes and snapshots are there.
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.fleet_text(&helm_app_manifest_with(
            "db",
            "v2.0.0",
            2,
            "  timeout: 15s\n"
        )))
    );
    assert_eq!(
        status.commit.as_ref().map(|c| c.sha.as_str()),
        Some(log[0].sha.as_str())
    );
    assert!(
        then::rollback_requests(&story).await.is_empty(),
        "Freeze creates no rollback"
    );
    assert_eq!(
        then::snapshots(&story).await.len(),
        2,
        "the safety net is kept"
    );
    for pvc in ["data-db-0", "data-db-1"] {
        then::claim(&story, pvc).await;
    }
    // Flux is held still for the person who looks (onFailure: Freeze holds Flux suspended).
    assert_eq!(
        suspended(&story).await,
        (true, true),
        "Flux stays suspended while frozen"
    );

    // Reported everywhere a person looks.
    let ready = find_condition(&status.conditions, READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("FROZEN"), "{}", ready.message);
    assert!(
        find_condition(&status.conditions, STALLED).is_some_and(|c| c.status == "True"),
        "{:?}",
        status.conditions
    );
    let frozen_event = wait_until("the Frozen event", Duration::from_secs(10), async || {
        then::events(&story, "Frozen")
            .await
            .into_iter()
            .find(|e: &Event| e.involved_object.name.as_deref() == Some("db-2-0-0"))
    })
    .await
    .unwrap();
    assert_eq!(frozen_event.type_.as_deref(), Some("Warning"));
    let app = story.app().await.unwrap().status.unwrap();
    assert_eq!(
        app.active_operation.as_ref().map(|o| o.name.as_str()),
        Some("db-2-0-0"),
        "the app stays locked for the person"
    );
    assert_eq!(
        app.last_operation.as_ref().map(|o| o.result.as_str()),
        Some("Frozen")
    );
    assert!(
        app.failed_versions.is_empty(),
        "nothing was rolled back, so nothing is remembered as failed"
    );
    let metrics = story.metrics.render();
    assert!(
        metrics.contains(r#"fluxgate_operations_total{kind="UpgradeRequest",result="Frozen"} 1"#),
        "{metrics}"
    );

    // Another upgrade waits for the person.
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    wait_phase(&story, "db-1-5-0", Phase::Queued, Duration::from_secs(10)).await;

    // The person deletes the frozen request: Flux resumes, the queued upgrade runs.
    story.world.failures.clear_versions();
    when::upgrade_deleted(&story, "db-2-0-0").await;
    let next: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        next.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded),
        "{:#?}",
        next.status
    );
    assert_eq!(suspended(&story).await, (false, false));
    story.stop().await;
}
