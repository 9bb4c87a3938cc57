//! Snapshot retention after a successful upgrade: with `retention.maxCount: 1`, each
//! volume keeps only the newest upgrade's snapshot; older ones are deleted.

use e2e::given::app;
use e2e::then;
use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::wait_until;
use std::collections::BTreeSet;
use std::time::Duration;

e2e::on_all_stacks!(only_the_newest_snapshots_are_kept_per_volume);

async fn only_the_newest_snapshots_are_kept_per_volume() {
    let story = app().keep_snapshots(1).running_at("v1.4.0").await;
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
    let left = wait_until(
        "old snapshots to be pruned",
        Duration::from_secs(20),
        async || {
            let names = then::snapshot_names(&story).await;
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
