//! Story (d): the new version fails its health check, so the upgrade rolls back on its own:
//! every volume's content equals its pre-upgrade snapshot, Git is back at the old version
//! byte for byte, the failed version is remembered and a new upgrade to it is refused.

use e2e::given::app;
use e2e::then;
use fluxgate::api::{Phase, RollbackRequest, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, helm_app_manifest_with};
use sim::volumes::{content_token, snapshot_token};
use std::time::Duration;

e2e::on_all_stacks!(a_failing_version_is_rolled_back_with_its_data_and_never_retried);

async fn a_failing_version_is_rolled_back_with_its_data_and_never_retried() {
    // Helm gives up on the never-ready version soon after the health timeout fires (its
    // default 5m wait would hold helm-controller, and so the rollback, that long on real
    // Flux; the install of 1.4.0 takes about 5 s on the real stack).
    let story = app()
        .health_timeout("5s")
        .helm_timeout("15s")
        .running_at("v1.4.0")
        .await;
    story.world.failures.fail_chart_version("v2.0.0");
    story.upgrade("db-2-0-0", "v2.0.0").await.unwrap();

    let upgrade: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(120))
        .await
        .unwrap();
    let status = upgrade.status.clone().unwrap();
    eprintln!("upgrade phases: {}", then::phase_times(&status));
    let rollback: RollbackRequest = story
        .finished("db-2-0-0-rollback", Duration::from_secs(10))
        .await
        .unwrap();
    let rollback_status = rollback.status.clone().unwrap();
    assert_eq!(
        rollback_status.phase,
        Some(Phase::Succeeded),
        "{rollback_status:#?}"
    );
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:#?}");
    // The new version never became healthy: helm-controller gave up on it (or the health
    // timeout fired) after the commit, which is what sends an upgrade into rollback.
    assert!(
        status
            .failure
            .as_ref()
            .is_some_and(|f| matches!(f.phase, Phase::Reconcile | Phase::Verify)),
        "{:?}",
        status.failure
    );

    // Data: each PVC carries the content of the upgrade's snapshot of it.
    for snapshot in &status.snapshots {
        let restored = content_token(&story.client, "apps", &snapshot.pvc)
            .await
            .unwrap();
        let taken = snapshot_token(&story.client, "apps", &snapshot.name)
            .await
            .unwrap();
        let pvc = then::claim(&story, &snapshot.pvc).await;
        let safety: Vec<String> = rollback_status
            .snapshots
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(
            restored, taken,
            "{} was not restored from {}: {:#?} safety {safety:?}",
            snapshot.pvc, snapshot.name, pvc.metadata.annotations
        );
    }
    // The failed state was kept too: a safety snapshot per volume.
    assert_eq!(rollback_status.snapshots.len(), 2);

    // Git: the upgrade and the revert, and the file byte-identical to before.
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.fleet_text(&helm_app_manifest_with(
            "db",
            "v1.4.0",
            2,
            "  timeout: 15s\n"
        )))
    );

    // The app remembers the failure and refuses it next time.
    let app_status = then::app_records(&story, "db", "chart", "v1.4.0").await;
    assert!(
        app_status
            .failed_versions
            .iter()
            .any(|f| f.name == "chart" && f.version == "v2.0.0"),
        "{:?}",
        app_status.failed_versions
    );
    // The record says why, not only who rolled it back.
    let why = app_status.failed_versions[0]
        .reason
        .clone()
        .unwrap_or_default();
    assert!(
        why.contains("failed (") && why.contains("rolled back by db-2-0-0-rollback"),
        "{why}"
    );
    assert_eq!(app_status.active_operation, None);
    story.upgrade("db-2-0-0-again", "v2.0.0").await.unwrap();
    let again: UpgradeRequest = story
        .finished("db-2-0-0-again", Duration::from_secs(30))
        .await
        .unwrap();
    let failure = again.status.unwrap().failure.unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Admit, "FailedVersion")
    );
    story.stop().await;
}
