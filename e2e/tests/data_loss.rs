//! Issue #20, the data-loss catalogue: each way a careful user found to lose data, told as
//! a story that ends with every byte accounted for — the content tokens of every PVC, PV
//! and snapshot of the app before and after ([`Ledger`]): a rollback whose snapshots were
//! deleted or broken, a rollback of an upgrade that is no longer the app's last change, a
//! StatefulSet that deletes its PVCs on scale-down, a snapshot lost in the middle of a
//! Restore, the operator killed between a PVC's delete and its recreate, a rollback
//! without a safety snapshot (the released volumes keep what it replaced) and a snapshot
//! that fails (deleted when its upgrade ends, so it pins no PVC).

use e2e::checks::{Ledger, content_tokens, operator, put_back_problems, rollback_problems};
use e2e::given::{self, APP, app};
use e2e::{then, when};
use fluxgate::api::conditions::{READY, find_condition};
use fluxgate::api::{Phase, RestoreState, RollbackRequest, UpgradeRequest};
use fluxgate::cluster::snapshots::{
    RECLAIM_POLICY_BEFORE_ANNOTATION, RELEASED_BY_LABEL, RELEASED_CLAIM_ANNOTATION,
};
use fluxgate::demo::world::{APP_FILE, DemoWorld, Fleet, wait_until};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a whole upgrade (or an upgrade and its rollback) may take.
const WAIT: Duration = Duration::from_secs(180);

/// What Fluxgate may never touch while refusing a rollback: the app's volumes, snapshots,
/// workloads and Flux objects.
const DATA_AND_FLUX: &[&str] = &[
    "persistentvolumeclaims",
    "persistentvolumes",
    "volumesnapshots",
    "statefulsets",
    "helmreleases",
    "kustomizations",
];

e2e::on_all_stacks!(
    a_rollback_whose_snapshots_are_gone_or_broken_touches_nothing,
    a_rollback_of_an_upgrade_that_is_no_longer_the_last_change_needs_force,
    a_statefulset_deleting_its_pvcs_on_scale_down_keeps_them_through_upgrade_and_rollback,
    a_snapshot_lost_during_restore_freezes_the_rollback_with_every_byte_accounted_for,
    a_rollback_without_a_safety_snapshot_keeps_the_replaced_data_on_its_released_volumes,
    a_snapshot_that_fails_is_deleted_when_its_upgrade_ends_and_pins_no_pvc,
);

/// Upgrades the app to `version` with request `name` and returns it once it succeeded.
async fn upgraded(story: &DemoWorld, name: &str, version: &str) -> UpgradeRequest {
    story.upgrade(name, version).await.unwrap();
    let upgrade: UpgradeRequest = story.finished(name, WAIT).await.unwrap();
    let status = upgrade.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:#?}");
    upgrade
}

/// The snapshots a request took, by PVC.
fn snapshots_by_pvc(status: &fluxgate::api::RequestStatus) -> BTreeMap<String, String> {
    status
        .snapshots
        .iter()
        .map(|s| (s.pvc.clone(), s.name.clone()))
        .collect()
}

async fn a_rollback_whose_snapshots_are_gone_or_broken_touches_nothing() {
    let story = app().running_at("v1.5.0").await;
    let upgrade = upgraded(&story, "db-a", "v1.6.0").await;
    let taken = snapshots_by_pvc(&upgrade.status.unwrap());
    // Afterwards a person deletes one of the upgrade's snapshots, and the storage loses
    // what the other kept: the snapshot-controller reports it in error, then cuts it anew
    // from the PVC as it is now — ready again under the same name, holding other data.
    when::snapshot_deleted(&story, &taken["data-db-1"]).await;
    when::snapshot_content_lost(&story, &taken["data-db-0"]).await;
    let recut = wait_until("the lost snapshot to be cut again", WAIT, async || {
        let snapshot = then::snapshot(&story, &taken["data-db-0"]).await;
        let status = snapshot.status?;
        (status.ready_to_use == Some(true)).then_some(())
    });
    recut.await.unwrap();
    let recut_holds = Ledger::read(&story).await;
    assert_eq!(
        recut_holds.snapshot(&taken["data-db-0"]),
        recut_holds.claim("data-db-0"),
        "the new cut holds what the PVC holds now, not what it held before db-a"
    );

    let before = Ledger::read(&story).await;
    let writes = then::operator_writes(&story, DATA_AND_FLUX).await;
    let commits = story.git.log().unwrap().len();
    // Refused at Admit, with or without a safety snapshot: nothing is deleted first.
    for rollback in [
        given::rollback("undo-a", "db-a"),
        given::rollback("undo-a-unsafe", "db-a").without_safety_snapshot(),
    ] {
        let name = rollback.clone().build().name_any();
        rollback.create(&story).await.unwrap();
        let refused: RollbackRequest = story.finished(&name, WAIT).await.unwrap();
        let status = refused.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Failed), "{name}: {status:#?}");
        let failure = status.failure.unwrap();
        assert_eq!(
            (failure.phase, failure.reason.as_str()),
            (Phase::Admit, "SnapshotUnusable"),
            "{name}: {failure:?}"
        );
        for part in [
            format!(
                "VolumeSnapshot apps/{} (of PVC data-db-1) is gone",
                taken["data-db-1"]
            ),
            format!(
                "VolumeSnapshot apps/{} (of PVC data-db-0) was cut again (driver handle",
                taken["data-db-0"]
            ),
            "nothing was touched".to_owned(),
        ] {
            assert!(
                failure.message.contains(&part),
                "{part}\n{}",
                failure.message
            );
        }
        assert!(status.snapshots.is_empty() && status.restores.is_empty());
    }

    // Every byte where it was: the same PVCs on the same volumes holding the same data.
    let after = Ledger::read(&story).await;
    assert_eq!(after.claims, before.claims);
    assert_eq!(after.lost_since(&before), BTreeMap::new());
    assert_eq!(
        then::operator_writes(&story, DATA_AND_FLUX).await,
        writes,
        "the refused rollbacks touched no volume, snapshot, workload or Flux object"
    );
    assert_eq!(story.git.log().unwrap().len(), commits, "nor Git");
    assert_eq!(put_back_problems(&story).await, Vec::<String>::new());
    story.stop().await;
}

async fn a_rollback_of_an_upgrade_that_is_no_longer_the_last_change_needs_force() {
    let story = app().running_at("v1.5.0").await;
    let a = upgraded(&story, "db-a", "v1.6.0").await;
    upgraded(&story, "db-b", "v1.7.0").await;
    let before_a = snapshots_by_pvc(&a.status.unwrap());

    let before = Ledger::read(&story).await;
    let writes = then::operator_writes(&story, DATA_AND_FLUX).await;
    given::rollback("undo-a", "db-a")
        .create(&story)
        .await
        .unwrap();
    let refused: RollbackRequest = story.finished("undo-a", WAIT).await.unwrap();
    let status = refused.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failure = status.failure.unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Admit, "VersionChangedInGit")
    );
    // The refusal says what a forced rollback would do.
    for part in [
        "Git holds chart v1.7.0, not its target v1.6.0",
        "changed after it: UpgradeRequest db-b (Succeeded, v1.6.0 → v1.7.0)",
        &format!("data-db-0 (from {})", before_a["data-db-0"]),
        "would go back to their state before db-a, overwriting everything written since (kept first in a safety snapshot)",
        "set back to v1.5.0",
        "spec.force: true",
    ] {
        assert!(
            failure.message.contains(part),
            "{part}\n{}",
            failure.message
        );
    }
    assert_eq!(Ledger::read(&story).await, before, "nothing was touched");
    assert_eq!(then::operator_writes(&story, DATA_AND_FLUX).await, writes);
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.7.0"))
    );

    // Forced, it does what it said: data from before db-a, Git at v1.5.0.
    given::rollback("undo-a-forced", "db-a")
        .force()
        .create(&story)
        .await
        .unwrap();
    let forced: RollbackRequest = story.finished("undo-a-forced", WAIT).await.unwrap();
    let status = forced.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let plan = status.plan.clone().unwrap();
    assert_eq!(
        (plan.from["chart"].as_str(), plan.to["chart"].as_str()),
        ("v1.7.0", "v1.5.0"),
        "it starts from what Git held"
    );
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0"))
    );
    let after = Ledger::read(&story).await;
    let safety = snapshots_by_pvc(&status);
    for pvc in ["data-db-0", "data-db-1"] {
        assert_eq!(
            after.claim(pvc),
            after.snapshot(&before_a[pvc]),
            "{pvc} holds what it held before db-a"
        );
        assert_eq!(
            after.snapshot(&safety[pvc]),
            before.claim(pvc),
            "what {pvc} held under v1.7.0 is in the safety snapshot"
        );
    }
    assert_eq!(after.lost_since(&before), BTreeMap::new());
    // The version recorded as failed is db-a's target, not db-b's.
    let app_status = then::app_records(&story, APP, "chart", "v1.5.0").await;
    let failed: Vec<&str> = app_status
        .failed_versions
        .iter()
        .map(|f| f.version.as_str())
        .collect();
    assert_eq!(failed, vec!["v1.6.0"]);
    assert_eq!(put_back_problems(&story).await, Vec::<String>::new());
    story.stop().await;
}

async fn a_statefulset_deleting_its_pvcs_on_scale_down_keeps_them_through_upgrade_and_rollback() {
    // The chart exposes the policy, as common charts do; whenScaled: Delete would have the
    // StatefulSet controller delete the PVCs of every pod a scale to zero removes.
    // Helm gives up on the never-ready v2.0.0 after 15 s, not its default 5m (until then
    // real helm-controller sees no suspend, and the rollback waits for it).
    let deleting =
        "    persistentVolumeClaimRetentionPolicy:\n      whenScaled: Delete\n  timeout: 15s\n";
    let story = given::world(Fleet::new().helm_app_with(
        APP,
        "v1.5.0",
        2,
        deleting,
        app().health_timeout("5s").into(),
    ))
    .await
    .unwrap();
    let when_scaled = async |story: &DemoWorld| {
        then::statefulset(story, APP)
            .await
            .spec
            .persistent_volume_claim_retention_policy
            .and_then(|p| p.when_scaled)
    };
    assert_eq!(when_scaled(&story).await.as_deref(), Some("Delete"));
    let uids = async |story: &DemoWorld| -> Vec<Option<String>> {
        let mut uids = Vec::new();
        for pvc in ["data-db-0", "data-db-1"] {
            uids.push(then::claim(story, pvc).await.uid());
        }
        uids
    };
    let before = Ledger::read(&story).await;
    let claims_before = uids(&story).await;

    let upgrade = upgraded(&story, "db-a", "v1.6.0").await;
    let status = upgrade.status.unwrap();
    let recorded = status.plan.as_ref().unwrap().workloads[0]
        .claim_retention
        .clone();
    assert_eq!(
        recorded.map(|r| r.when_scaled).as_deref(),
        Some("Delete"),
        "the plan records what to put back"
    );
    // The PVCs were never deleted: the same claims on the same volumes; what they held
    // before is in the upgrade's snapshots; the policy is back.
    let after = Ledger::read(&story).await;
    assert_eq!(uids(&story).await, claims_before);
    let taken = snapshots_by_pvc(&status);
    for pvc in ["data-db-0", "data-db-1"] {
        assert_eq!(after.volume_of(pvc), before.volume_of(pvc), "{pvc}");
        assert_eq!(after.snapshot(&taken[pvc]), before.claim(pvc), "{pvc}");
    }
    assert_eq!(after.lost_since(&before), BTreeMap::new());
    assert_eq!(when_scaled(&story).await.as_deref(), Some("Delete"));

    // A failing version: its rollback quiesces the StatefulSet again and restores the
    // volumes from the snapshots; nothing but Fluxgate's restore replaces a PVC.
    story.world.failures.fail_chart_version("v2.0.0");
    let mid = Ledger::read(&story).await;
    story.upgrade("db-b", "v2.0.0").await.unwrap();
    let failed: UpgradeRequest = story.finished("db-b", WAIT).await.unwrap();
    let failed = failed.status.unwrap();
    assert_eq!(failed.phase, Some(Phase::RolledBack), "{failed:#?}");
    let rollback: RollbackRequest = story.finished("db-b-rollback", WAIT).await.unwrap();
    let rollback = rollback.status.unwrap();
    assert_eq!(
        rollback.plan.as_ref().unwrap().workloads[0]
            .claim_retention
            .as_ref()
            .map(|r| r.when_scaled.as_str()),
        Some("Delete")
    );
    let end = Ledger::read(&story).await;
    let taken = snapshots_by_pvc(&failed);
    let safety = snapshots_by_pvc(&rollback);
    for pvc in ["data-db-0", "data-db-1"] {
        assert_eq!(end.claim(pvc), mid.claim(pvc), "{pvc} is back");
        assert_eq!(end.claim(pvc), end.snapshot(&taken[pvc]), "{pvc}");
        assert!(end.snapshot(&safety[pvc]).is_some(), "{pvc}: {end:#?}");
    }
    assert_eq!(end.lost_since(&mid), BTreeMap::new());
    assert_eq!(when_scaled(&story).await.as_deref(), Some("Delete"));
    assert_eq!(put_back_problems(&story).await, Vec::<String>::new());
    story.stop().await;
}

async fn a_snapshot_lost_during_restore_freezes_the_rollback_with_every_byte_accounted_for() {
    let story = app()
        .health_timeout("5s")
        .helm_timeout("15s")
        .running_at("v1.5.0")
        .await;
    // The story holds data-db-0 once it is deleted, to break its snapshot right then.
    when::claim_held(&story, "data-db-0").await;
    story.world.failures.fail_chart_version("v2.0.0");
    story.upgrade("db-2", "v2.0.0").await.unwrap();
    when::claim_deleting(&story, "data-db-0", WAIT).await;
    let upgrade = then::upgrade_request(&story, "db-2").await.unwrap();
    let taken = snapshots_by_pvc(&upgrade.status.unwrap());
    let rollback = then::rollback_request(&story, "db-2-rollback")
        .await
        .unwrap();
    let safety = snapshots_by_pvc(&rollback.status.unwrap());
    let before = Ledger::read(&story).await;

    // The snapshot data-db-0 is to come back from is lost while its old PVC goes.
    when::snapshot_content_lost(&story, &taken["data-db-0"]).await;
    when::claim_let_go(&story, "data-db-0").await;

    let frozen: RollbackRequest = story.finished("db-2-rollback", WAIT).await.unwrap();
    let status = frozen.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Frozen), "{status:#?}");
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Restore, "SnapshotUnusable")
    );
    let missing = status
        .restores
        .iter()
        .find(|r| r.pvc == "data-db-0")
        .unwrap();
    assert_eq!(missing.state, RestoreState::Deleted);
    assert_eq!(missing.safety_snapshot.as_ref(), Some(&safety["data-db-0"]));
    let ready = find_condition(&status.conditions, READY).unwrap();
    // The error it reports when the operator looks: the content missing, or why it cannot
    // be cut again from a PVC being deleted.
    for part in [
        "FROZEN".to_owned(),
        format!(
            "data-db-0 MISSING: deleted and not recreated from {}: VolumeSnapshot apps/{} (of PVC data-db-0) reports an error",
            taken["data-db-0"], taken["data-db-0"]
        ),
        format!(
            "the data it held is on PersistentVolume {} (kept: reclaim policy Retain) and in safety snapshot {}",
            before
                .volume_of("data-db-0")
                .expect("bound while being deleted"),
            safety["data-db-0"]
        ),
        "Git still holds v2.0.0 (not reverted)".to_owned(),
    ] {
        assert!(ready.message.contains(&part), "{part}\n{}", ready.message);
    }
    let upgrade: UpgradeRequest = story.finished("db-2", WAIT).await.unwrap();
    assert_eq!(upgrade.status.unwrap().phase, Some(Phase::Frozen));

    // Held for a person, not resumed on the missing volume: Flux suspended, the StatefulSet
    // at zero (so it makes no empty data-db-0), Git at the failed version.
    assert_eq!(e2e::checks::suspended(&story).await, Some((true, true)));
    assert_eq!(e2e::checks::replicas(&story).await, Some(0));
    assert!(
        !Ledger::read(&story).await.claims.contains_key("data-db-0"),
        "nothing recreated data-db-0"
    );
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v2.0.0"))
    );

    // Every byte accounted for: what data-db-0 held is in its safety snapshot and on its
    // released volume, data-db-1 untouched or restored; the only data gone is what the lost
    // snapshot kept.
    let after = Ledger::read(&story).await;
    assert_eq!(
        after.snapshot(&safety["data-db-0"]),
        before.claim("data-db-0")
    );
    let old = before.volume_of("data-db-0").unwrap();
    assert_eq!(after.volumes[old].1.as_deref(), before.claim("data-db-0"));
    let lost = after.lost_since(&before);
    let expected = BTreeMap::from([(
        before
            .snapshot(&taken["data-db-0"])
            .expect("the lost snapshot was cut")
            .to_owned(),
        vec![format!("VolumeSnapshot {}", taken["data-db-0"])],
    )]);
    assert_eq!(lost, expected);
    assert!(
        !then::events(&story, "Frozen").await.is_empty(),
        "a Warning Event says so"
    );
    story.stop().await;
}

/// kubesim only (a plain test): stopping the operator between a PVC's delete and its
/// recreate needs kubesim's write gates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_between_a_pvc_delete_and_its_recreate_restores_each_volume_once() {
    let mut story = app().health_timeout("5s").running_at("v1.5.0").await;
    story.world.failures.fail_chart_version("v2.0.0");
    let before = Ledger::read(&story).await;
    let tokens = content_tokens(&story).await;
    story.kubesim().clear_requests();
    let recreates = story
        .kubesim()
        .gate(operator().verb("create").resource("persistentvolumeclaims"));
    story.upgrade("db-up", "v2.0.0").await.unwrap();
    assert!(
        recreates.wait_held(1, WAIT).await,
        "the rollback recreates a PVC"
    );
    // The PVC is deleted and not yet recreated: the operator dies right here.
    let at_crash = Ledger::read(&story).await;
    let gone: Vec<&str> = ["data-db-0", "data-db-1"]
        .into_iter()
        .filter(|pvc| !at_crash.claims.contains_key(*pvc))
        .collect();
    assert_eq!(gone.len(), 1, "{at_crash:#?}");
    story.kill_operator().await;
    recreates.fail(recreates.held(), 503);
    recreates.open();
    story.start_operator().unwrap();

    let upgrade: UpgradeRequest = story.finished("db-up", WAIT).await.unwrap();
    assert_eq!(
        rollback_problems(&story, &upgrade, "v1.5.0", &tokens).await,
        Vec::<String>::new()
    );
    let after = Ledger::read(&story).await;
    assert_eq!(after.lost_since(&before), BTreeMap::new());
    assert_eq!(after.lost_since(&at_crash), BTreeMap::new());
    story.stop().await;
}

/// Item 3: with `safetySnapshot: false` the released PersistentVolumes are the only copy of
/// what the rollback replaced, so they must survive: each is set to `Retain` before its PVC
/// is deleted, labelled with the rollback, listed in its status, and never deleted.
async fn a_rollback_without_a_safety_snapshot_keeps_the_replaced_data_on_its_released_volumes() {
    let story = app().running_at("v1.5.0").await;
    let upgrade = upgraded(&story, "db-up", "v1.6.0").await;
    let taken = snapshots_by_pvc(&upgrade.status.unwrap());
    let before = Ledger::read(&story).await;
    given::rollback("undo", "db-up")
        .without_safety_snapshot()
        .create(&story)
        .await
        .unwrap();
    let done: RollbackRequest = story.finished("undo", WAIT).await.unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert!(status.snapshots.is_empty(), "no safety snapshot was taken");

    let after = Ledger::read(&story).await;
    let volumes = Api::<PersistentVolume>::all(story.client.clone());
    let released = volumes
        .list(&ListParams::default().labels(&format!("{RELEASED_BY_LABEL}=undo")))
        .await
        .unwrap();
    let mut listed = BTreeMap::new();
    for pvc in ["data-db-0", "data-db-1"] {
        let old = before.volume_of(pvc).expect("bound before the rollback");
        let record = status.restores.iter().find(|r| r.pvc == pvc).unwrap();
        let kept = record
            .released_volume
            .as_ref()
            .expect("its volume is listed");
        assert_eq!(kept.name, old, "{pvc}: {record:?}");
        assert_eq!(kept.reclaim_policy_before, "Delete");
        listed.insert(kept.name.clone(), pvc);
        let pv = volumes.get(old).await.unwrap();
        let spec = pv.spec.clone().unwrap();
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        let annotations = pv.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(RELEASED_CLAIM_ANNOTATION)
                .map(String::as_str),
            Some(format!("apps/{pvc}").as_str())
        );
        assert_eq!(
            annotations
                .get(RECLAIM_POLICY_BEFORE_ANNOTATION)
                .map(String::as_str),
            Some("Delete")
        );
        // What the PVC held under v1.6.0 is on its old volume; the PVC holds the upgrade's cut.
        assert_eq!(after.volumes[old].1.as_deref(), before.claim(pvc), "{pvc}");
        assert_eq!(after.claim(pvc), after.snapshot(&taken[pvc]), "{pvc}");
        assert_ne!(after.volume_of(pvc), Some(old), "{pvc} has a new volume");
    }
    let labelled: BTreeMap<String, &str> = released
        .items
        .iter()
        .map(|pv| {
            let name = pv.metadata.name.clone().unwrap();
            let pvc = listed.get(&name).copied().unwrap_or("?");
            (name, pvc)
        })
        .collect();
    assert_eq!(labelled, listed, "the labelled volumes are those listed");
    assert_eq!(after.lost_since(&before), BTreeMap::new());
    assert_eq!(put_back_problems(&story).await, Vec::<String>::new());
    story.stop().await;
}

/// Item 6: a snapshot the driver fails is deleted when its upgrade ends, so
/// external-snapshotter drops `pvc-as-source-protection` from its PVC (kept while any
/// snapshot of it is not ready) and nothing later waits on a PVC stuck Terminating.
async fn a_snapshot_that_fails_is_deleted_when_its_upgrade_ends_and_pins_no_pvc() {
    const PIN: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";
    let story = app().snapshot_timeout("8s").running_at("v1.5.0").await;
    let before = Ledger::read(&story).await;
    story
        .world
        .failures
        .fail_snapshots("data-db-1", "quota exceeded");
    story.upgrade("db-up", "v1.6.0").await.unwrap();
    let failed: UpgradeRequest = story.finished("db-up", WAIT).await.unwrap();
    let status = failed.status.unwrap();
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (status.phase, failure.phase),
        (Some(Phase::Failed), Phase::Snapshot),
        "{status:#?}"
    );
    let taken = snapshots_by_pvc(&status);
    let claims = Api::<PersistentVolumeClaim>::namespaced(story.client.clone(), "apps");
    let settled = wait_until(
        "the failed snapshot to go and its PVC to be let go",
        Duration::from_secs(30),
        async || {
            let names = then::snapshot_names(&story).await;
            let pinned = claims
                .get("data-db-1")
                .await
                .ok()?
                .metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f == PIN);
            (!names.contains(&taken["data-db-1"]) && !pinned).then_some(names)
        },
    )
    .await
    .unwrap();
    assert!(
        settled.contains(&taken["data-db-0"]),
        "the snapshot that was cut is kept: {settled:?}"
    );
    assert_eq!(put_back_problems(&story).await, Vec::<String>::new());

    // The next upgrade goes through, on volumes nothing pins.
    story.world.failures.clear_snapshot_failures();
    upgraded(&story, "db-up-again", "v1.6.0").await;
    let after = Ledger::read(&story).await;
    assert_eq!(after.lost_since(&before), BTreeMap::new());
    story.stop().await;
}
