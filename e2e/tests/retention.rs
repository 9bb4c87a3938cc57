//! Snapshot retention after a successful upgrade: with `retention.maxCount: 1`, each
//! volume keeps only the newest upgrade's snapshot; older ones are deleted.

use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::cluster::snapshots::VolumeSnapshot;
use fluxgate::demo::world::{DemoWorld, wait_until};
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
    // Deletion goes through the snapshot controller's finalizer: wait for it to finish.
    let api = Api::<VolumeSnapshot>::namespaced(story.client.clone(), "apps");
    let left = wait_until(
        "old snapshots to be pruned",
        Duration::from_secs(20),
        async || {
            let names: BTreeSet<String> = api
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .map(|s| s.name_any())
                .collect();
            (names == taken[1]).then_some(names)
        },
    )
    .await;
    assert!(
        left.is_ok(),
        "the first upgrade's snapshots are pruned, the second's kept: {left:?}"
    );
    story.stop().await;
}
