//! Story (issue 15, item 4): a HelmRelease app whose chart comes from a HelmRepository that
//! refreshes its index hourly. A chart version published after the repository's last
//! refresh is not in its stored index, so source-controller cannot build it ("no 'db' chart
//! with version matching …"); Reconcile asks the repository to refresh
//! (`reconcile.fluxcd.io/requestedAt`) before the HelmRelease, so the upgrade succeeds.

use e2e::given::app;
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::Fleet;
use std::time::Duration;

e2e::on_all_stacks!(a_chart_published_after_the_repository_refreshed_is_upgraded_to);

async fn a_chart_published_after_the_repository_refreshed_is_upgraded_to() {
    let story = e2e::given::world(Fleet::new().helm_repository_app("db", "1.4.0", 2, app().into()))
        .await
        .unwrap();
    let stale_index =
        then::served_revision(&story, FluxObjectKind::HelmRepository, "apps", "charts").await;
    assert!(stale_index.is_some(), "{stale_index:?}");

    // Published now, minutes before the repository's next hourly refresh.
    story.publish_chart("db", "1.5.0").await.unwrap();
    story.upgrade("db-1-5-0", "1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");

    let repo = then::flux_object(&story, FluxObjectKind::HelmRepository, "apps", "charts").await;
    assert_ne!(
        repo.data["status"]["artifact"]["revision"].as_str(),
        stale_index.as_deref()
    );
    assert!(
        repo.data["status"]["lastHandledReconcileAt"].is_string(),
        "{repo:#?}"
    );
    let release = then::flux_object(&story, FluxObjectKind::HelmRelease, "apps", "db").await;
    assert_eq!(release.data["status"]["lastAttemptedRevision"], "1.5.0");
    assert_eq!(
        then::running_image(&story, "db").await.as_deref(),
        Some("ghcr.io/example/db:1.5.0")
    );
    story.stop().await;
}
