//! Snapshot retention after a successful upgrade: with `retention.maxCount: 1`, each
//! volume keeps only the newest upgrade's snapshot; older ones are deleted.

use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::cluster::snapshots::VolumeSnapshot;
use fluxgate::demo::world::DemoWorld;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_snapshots_are_kept_per_volume() {
    let story = DemoWorld::start(
        "v1.4.0",
        json!({"snapshots": {"retention": {"maxCount": 1}}}),
    )
    .await
    .unwrap();
    let mut taken = Vec::new();
    for (name, version) in [("db-1-4-1", "v1.4.1"), ("db-1-5-0", "v1.5.0")] {
        story.upgrade(name, version).await.unwrap();
        let done: UpgradeRequest = story.finished(name, Duration::from_secs(90)).await.unwrap();
        let status = done.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
        assert_eq!(status.snapshots.len(), 2);
        taken.push(
            status
                .snapshots
                .iter()
                .map(|s| s.name.clone())
                .collect::<BTreeSet<_>>(),
        );
    }
    let left: BTreeSet<String> = Api::<VolumeSnapshot>::namespaced(story.client.clone(), "apps")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(left, taken[1], "the first upgrade's snapshots are pruned");
    story.stop().await;
}
