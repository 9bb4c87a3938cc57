//! Story (issue 15, item 4): a HelmRelease app whose chart comes from a HelmRepository that
//! refreshes its index hourly. A chart version published after the repository's last
//! refresh is not in its stored index, so source-controller cannot build it ("no 'db' chart
//! with version matching …"); Reconcile asks the repository to refresh
//! (`reconcile.fluxcd.io/requestedAt`) before the HelmRelease, so the upgrade succeeds.

use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::{CHARTS_URL, DemoWorld, Fleet};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DynamicObject};
use serde_json::json;
use sim::kinds::{helm_release, helm_repository};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_published_after_the_repository_refreshed_is_upgraded_to() {
    let story =
        DemoWorld::start_fleet(Fleet::new().helm_repository_app("db", "1.4.0", 2, json!({})))
            .await
            .unwrap();
    let repos: Api<DynamicObject> =
        Api::namespaced_with(story.client.clone(), "apps", &helm_repository());
    let stale_index = serde_json::to_value(repos.get("charts").await.unwrap()).unwrap()["status"]
        ["artifact"]["revision"]
        .clone();
    assert!(stale_index.is_string(), "{stale_index}");

    // Published now, minutes before the repository's next hourly refresh.
    story.world.charts.publish(CHARTS_URL, "db", "1.5.0");
    story.upgrade("db-1-5-0", "1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");

    let repo = serde_json::to_value(repos.get("charts").await.unwrap()).unwrap();
    assert_ne!(repo["status"]["artifact"]["revision"], stale_index);
    assert!(
        repo["status"]["lastHandledReconcileAt"].is_string(),
        "{repo:#}"
    );
    let releases: Api<DynamicObject> =
        Api::namespaced_with(story.client.clone(), "apps", &helm_release());
    let release = serde_json::to_value(releases.get("db").await.unwrap()).unwrap();
    assert_eq!(release["status"]["lastAttemptedRevision"], "1.5.0");
    let sts = Api::<StatefulSet>::namespaced(story.client.clone(), "apps")
        .get("db")
        .await
        .unwrap();
    let image = sts.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("ghcr.io/example/db:1.5.0"));
    story.stop().await;
}
