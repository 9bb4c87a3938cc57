//! Story (a): a HelmRelease app whose chart comes from an OCIRepository (`chartRef`), with a
//! StatefulSet and two PVCs, is upgraded through the real controller loop on kubesim and the
//! simulated world: one commit with the trailers and a byte-minimal diff, ready snapshots,
//! Flux back to its prior state, replicas restored, the ManagedApp updated.

use e2e::checks::replicas;
use e2e::given::app;
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::APP_FILE;
use std::time::Duration;

e2e::on_all_stacks!(a_helm_release_app_is_upgraded_end_to_end);

async fn a_helm_release_app_is_upgraded_end_to_end() {
    let story = app().running_at("v1.4.0").await;
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    eprintln!("phases: {}", then::phase_times(&status));
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");

    // Git: exactly one new commit, ours, with the trailers and a one-value diff.
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    let ours = &log[0];
    assert!(
        ours.message.contains("Fluxgate-Request: apps/db-1-5-0"),
        "{}",
        ours.message
    );
    assert!(ours.message.contains(&format!(
        "Fluxgate-Request-UID: {}",
        done.metadata.uid.clone().unwrap()
    )));
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0"))
    );
    assert_eq!(
        status.commit.as_ref().map(|c| c.sha.as_str()),
        Some(ours.sha.as_str())
    );

    // Snapshots of both volumes, ready; the audit trail tells the story.
    assert_eq!(status.snapshots.len(), 2);
    assert!(
        status.snapshots.iter().all(|s| s.ready_to_use),
        "{:?}",
        status.snapshots
    );
    let phases: Vec<Phase> = status.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        phases,
        vec![
            Phase::Admit,
            Phase::Suspend,
            Phase::Quiesce,
            Phase::Snapshot,
            Phase::Commit,
            Phase::Reconcile,
            Phase::Verify
        ]
    );

    // Fluxgate suspended and resumed the HelmRelease (a write each) and scaled the
    // StatefulSet down; resumed, Flux scales it back.
    let writes = then::operator_writes(&story, &["helmreleases", "statefulsets"]).await;
    for (object, at_least) in [("helmreleases apps/db", 2), ("statefulsets apps/db", 1)] {
        let count = writes.iter().filter(|w| w.contains(object)).count();
        assert!(count >= at_least, "{object}: {count} writes in {writes:#?}");
    }
    // Flux resumed, replicas back, the app records the new version and is free.
    assert!(then::resumed(&story, FluxObjectKind::HelmRelease, "apps", "db").await);
    assert_eq!(replicas(&story).await, Some(2));
    let app_status = then::app_records(&story, "db", "chart", "v1.5.0").await;
    assert_eq!(app_status.active_operation, None);
    assert_eq!(
        app_status.last_operation.map(|o| o.result),
        Some("Succeeded".to_owned())
    );
    // The operation is counted, with the time each phase took.
    let metrics = story.metrics.render();
    assert!(
        metrics
            .contains(r#"fluxgate_operations_total{kind="UpgradeRequest",result="Succeeded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"fluxgate_phase_duration_seconds_count{kind="UpgradeRequest",phase="Snapshot"} 1"#
        ),
        "{metrics}"
    );
    // Every request the operator sent says who it is (audit logs, least-privilege RBAC). On
    // the real stack `e2e::stack::on_real_stack` checks it from the audit log, for every story.
    if story.is_simulated() {
        let operator = story
            .kubesim()
            .requests(&kubesim::Match::any())
            .into_iter()
            .filter(|r| r.user_agent.starts_with("fluxgate/"))
            .count();
        assert!(
            operator > 10,
            "the operator's requests carry its User-Agent"
        );
    }
    story.stop().await;
}
