//! SPEC §8, issue #20 item 8: before the first upgrade, the ManagedApp's status says what an
//! upgrade would protect — each volume with its snapshot class and the class's
//! `deletionPolicy`, the workloads it would stop, what it cannot protect — with a
//! `Protected` condition; a dry run reports the same.

use e2e::given::{APP, app, upgrade};
use fluxgate::api::conditions::find_condition;
use fluxgate::api::{ManagedApp, SnapshottedVolume};
use fluxgate::demo::world::wait_until;
use kube::api::Api;
use std::time::Duration;

e2e::on_both_stacks!(what_an_upgrade_would_protect_is_visible_before_the_first_one);

async fn what_an_upgrade_would_protect_is_visible_before_the_first_one() {
    let story = app().running_at("v1.5.0").await;
    let apps = Api::<ManagedApp>::namespaced(story.client.clone(), "apps");
    let status = wait_until(
        "the app's protection to be found",
        Duration::from_secs(30),
        async || {
            let status = apps.get(APP).await.ok()?.status?;
            let protected = find_condition(&status.conditions, "Protected")?;
            (protected.status == "True").then_some(status)
        },
    )
    .await
    .unwrap();
    let protection = status.protection.clone().unwrap();
    let volume = |pvc: &str| SnapshottedVolume {
        pvc: format!("apps/{pvc}"),
        snapshot_class: sim::seed::SNAPSHOT_CLASS.to_owned(),
        deletion_policy: "Delete".to_owned(),
    };
    assert_eq!(
        protection.snapshotted,
        vec![volume("data-db-0"), volume("data-db-1")]
    );
    assert_eq!(protection.stopped, vec!["StatefulSet apps/db".to_owned()]);
    assert!(protection.unprotected.is_empty(), "{protection:#?}");
    let condition = find_condition(&status.conditions, "Protected").unwrap();
    assert_eq!(condition.reason, "AllVolumesSnapshotted");

    // A dry run says the same.
    upgrade("db-dry")
        .to_version("v1.6.0")
        .dry_run()
        .create(&story)
        .await
        .unwrap();
    let preflight = e2e::then::preflight_message(&story, "db-dry").await;
    for pvc in ["data-db-0", "data-db-1"] {
        let said = format!(
            "would snapshot PVC apps/{pvc} with {} (deletionPolicy Delete)",
            sim::seed::SNAPSHOT_CLASS
        );
        assert!(preflight.contains(&said), "{said}\n{preflight}");
    }
    story.stop().await;
}
