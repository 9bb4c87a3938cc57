//! Story (c), a dry run: every check and a real suspend → quiesce → scale back → resume
//! cycle, and afterwards Git and the app's objects are as they were, with no snapshot taken.
//! And a running upgrade deleted mid-way: its finalizer puts Flux and the replicas back
//! before the object goes, and Git is untouched.

use e2e::checks::{flux_and_replicas, wait_phase};
use e2e::given::{app, upgrade};
use e2e::{then, when};
use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, wait_until};
use std::time::Duration;

e2e::on_all_stacks!(
    a_dry_run_checks_and_cycles_but_changes_nothing,
    deleting_a_running_upgrade_puts_everything_back_before_it_goes,
    deleting_the_managed_app_under_a_running_upgrade_still_puts_everything_back
);

async fn a_dry_run_checks_and_cycles_but_changes_nothing() {
    let story = app().running_at("v1.4.0").await;
    let before = flux_and_replicas(&story).await;
    let commits_before = story.git.log().unwrap().len();
    upgrade("db-dry")
        .to_version("v1.5.0")
        .dry_run()
        .create(&story)
        .await
        .unwrap();
    let done: UpgradeRequest = story
        .finished("db-dry", Duration::from_secs(60))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let phases: Vec<Phase> = status.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        phases,
        vec![
            Phase::Admit,
            Phase::Preflight,
            Phase::Suspend,
            Phase::Quiesce,
            Phase::Resume
        ]
    );

    assert_eq!(
        flux_and_replicas(&story).await,
        before,
        "Flux and replicas are back as they were"
    );
    assert_eq!(
        story.git.log().unwrap().len(),
        commits_before,
        "nothing committed"
    );
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.4.0"))
    );
    assert!(
        then::snapshots(&story).await.is_empty(),
        "a dry run never snapshots"
    );
    let app = story.app().await.unwrap().status.unwrap_or_default();
    assert_eq!(app.active_operation, None);
    story.stop().await;
}

async fn deleting_a_running_upgrade_puts_everything_back_before_it_goes() {
    let story = app().running_at("v1.4.0").await;
    let before = flux_and_replicas(&story).await;
    // Snapshots never become ready: the upgrade waits in Snapshot, Flux suspended, app down.
    story
        .world
        .failures
        .fail_snapshots("data-", "quota exceeded");
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    wait_until(
        "the upgrade to wait on its snapshots",
        Duration::from_secs(30),
        async || {
            let status = then::upgrade_request(&story, "db-1-5-0").await?.status?;
            let shown = status.snapshots.iter().any(|s| {
                s.error
                    .as_deref()
                    .is_some_and(|e| e.contains("quota exceeded"))
            });
            (status.phase == Some(Phase::Snapshot) && shown).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        flux_and_replicas(&story).await,
        (true, true, Some(0)),
        "suspended and quiesced while it runs"
    );

    when::upgrade_deleted(&story, "db-1-5-0").await;
    assert_eq!(
        flux_and_replicas(&story).await,
        before,
        "the finalizer put Flux and replicas back"
    );
    assert_eq!(story.git.log().unwrap().len(), 1, "nothing committed");
    let app = story.app().await.unwrap().status.unwrap_or_default();
    assert_eq!(app.active_operation, None, "the lock is released");
    story.stop().await;
}

async fn deleting_the_managed_app_under_a_running_upgrade_still_puts_everything_back() {
    let story = app().running_at("v1.4.0").await;
    let before = flux_and_replicas(&story).await;
    story
        .world
        .failures
        .fail_snapshots("data-", "quota exceeded");
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    wait_phase(&story, "db-1-5-0", Phase::Snapshot, Duration::from_secs(30)).await;
    when::app_deleted(&story, "db").await;
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(30))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        status.failure.map(|f| f.reason),
        Some("ManagedAppNotFound".to_owned())
    );
    assert_eq!(
        flux_and_replicas(&story).await,
        before,
        "Flux and replicas put back from the plan alone"
    );
    story.stop().await;
}
