//! Long names, which the API allows (object names up to 253 characters), against label
//! values, which it limits to 63: a ManagedApp named with 70 characters, requests with 60
//! and a StatefulSet whose PVC names pass 63 characters are upgraded, rolled back (the
//! automatic RollbackRequest `<upgrade>-rollback` is longer still) and upgraded again, and
//! retention still finds and prunes the app's older snapshots by the app's shortened label.
//! Every label Fluxgate writes is a valid label value (a long name is shortened with a
//! hash) and the full names are in annotations.

use e2e::given::{app, upgrade};
use e2e::then;
use fluxgate::api::{Phase, RollbackRequest, UpgradeRequest};
use fluxgate::cluster::snapshots::{APP_LABEL, PVC_LABEL, REQUEST_LABEL};
use fluxgate::demo::world::{DemoWorld, Fleet, OCI_CHARTS, helm_app_manifest_with, wait_until};
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::Duration;

e2e::on_all_stacks!(long_app_request_and_volume_names_upgrade_roll_back_and_keep_retention);

/// 70 characters.
const APP: &str = "accounting-postgres-primary-database-for-the-finance-team-eu-west-01-x";
/// 38 characters: Helm release names stay within helm-controller's 53.
const RELEASE: &str = "accounting-postgres-primary-eu-west-01";
/// Its volume claim template: PVCs `postgres-database-storage-<release>-<n>`, 66 characters.
const VOLUME: &str = "postgres-database-storage";

fn request_name(what: &str) -> String {
    let name = format!("upgrade-{APP}");
    format!("{}-{what}", &name[..59 - what.len()])
}

fn label_value_ok(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

async fn upgraded(story: &DemoWorld, name: &str, version: &str) -> UpgradeRequest {
    upgrade(name)
        .of_app(APP)
        .to_version(version)
        .create(story)
        .await
        .unwrap();
    story
        .finished(name, Duration::from_secs(120))
        .await
        .unwrap()
}

fn snapshot_names(upgrade: &UpgradeRequest) -> BTreeSet<String> {
    let status = upgrade.status.as_ref().unwrap();
    assert_eq!(status.snapshots.len(), 2, "{status:#?}");
    status.snapshots.iter().map(|s| s.name.clone()).collect()
}

async fn long_app_request_and_volume_names_upgrade_roll_back_and_keep_retention() {
    assert_eq!(APP.len(), 70);
    // Helm gives up on the never-ready 2.0.0 after 15 s, not its default 5m (until then
    // real helm-controller sees no suspend, and the rollback waits for it).
    let manifest = helm_app_manifest_with(RELEASE, "1.4.0", 2, "  timeout: 15s\n")
        .replace("    - name: data\n", &format!("    - name: {VOLUME}\n"));
    assert!(manifest.contains(VOLUME));
    let spec = app().keep_snapshots(1).health_timeout("5s");
    let chart = format!("{OCI_CHARTS}/{RELEASE}");
    let fleet = ["1.4.0", "1.4.1", "2.0.0", "1.5.0"]
        .into_iter()
        .fold(Fleet::new(), |fleet, version| {
            fleet.published_chart(&chart, version)
        })
        .helm_app_written(APP, RELEASE, &manifest, 2, spec.into());
    let story = e2e::given::world(fleet).await.unwrap();
    story.world.failures.fail_chart_version("2.0.0");

    // A good upgrade: snapshots labelled within limits, full names in annotations.
    let first_name = request_name("1-4-1");
    assert_eq!(first_name.len(), 60);
    let first = upgraded(&story, &first_name, "1.4.1").await;
    let status = first.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let first_snapshots = snapshot_names(&first);
    for name in &first_snapshots {
        let snapshot = then::snapshot(&story, name).await;
        for (key, value) in snapshot.labels() {
            assert!(label_value_ok(value), "label {key}={value} on {name}");
        }
        let annotations = snapshot.annotations();
        assert_eq!(annotations.get(APP_LABEL).map(String::as_str), Some(APP));
        assert_ne!(
            snapshot.labels().get(APP_LABEL).map(String::as_str),
            Some(APP),
            "the app's label is shortened"
        );
        assert_eq!(
            annotations.get(REQUEST_LABEL),
            Some(&first_name),
            "{annotations:?}"
        );
        let pvc = snapshot.spec.source.persistent_volume_claim_name.clone();
        assert!(pvc.as_ref().is_some_and(|p| p.len() > 63), "{pvc:?}");
        assert_eq!(annotations.get(PVC_LABEL), pvc.as_ref());
    }

    // A failing version rolls back through `<upgrade>-rollback` (69 characters), which
    // snapshots the failed state under its own name first.
    let failing_name = request_name("2-0-0");
    let failing = upgraded(&story, &failing_name, "2.0.0").await;
    let rollback_name = format!("{failing_name}-rollback");
    let rollback: RollbackRequest = story
        .finished(&rollback_name, Duration::from_secs(60))
        .await
        .unwrap();
    let rollback_status = rollback.status.clone().unwrap();
    assert_eq!(
        rollback_status.phase,
        Some(Phase::Succeeded),
        "{rollback_status:#?}"
    );
    assert_eq!(
        failing.status.as_ref().and_then(|s| s.phase),
        Some(Phase::RolledBack),
        "{failing:#?}"
    );
    assert_eq!(rollback_status.snapshots.len(), 2, "safety snapshots taken");
    let failing_snapshots = snapshot_names(&failing);

    // Another good upgrade: retention (maxCount 1) finds the app's older snapshots by their
    // shortened label and prunes them.
    let last = upgraded(&story, &request_name("1-5-0"), "1.5.0").await;
    let status = last.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let last_snapshots = snapshot_names(&last);
    let pruned: BTreeSet<String> = first_snapshots.union(&failing_snapshots).cloned().collect();
    let left = wait_until(
        "the older upgrades' snapshots to be pruned",
        Duration::from_secs(20),
        async || {
            let names = then::snapshot_names(&story).await;
            names.is_disjoint(&pruned).then_some(names)
        },
    )
    .await
    .unwrap();
    assert!(
        last_snapshots.is_subset(&left),
        "the newest upgrade's snapshots are kept: {left:?}"
    );
    story.stop().await;
}
