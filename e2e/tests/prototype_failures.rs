//! The Go prototype's failures (why Fluxgate exists), each a named test. Most are proven elsewhere,
//! closer to the code or in another story, and are not repeated here:
//! - "reconciled"/"healthy" pass on a stale `Ready=True` right after resume:
//!   `tests/cluster_flux.rs::a_stale_ready_right_after_resume_is_not_applied`,
//!   `src/cluster/health::a_stale_ready_kustomization_is_not_healthy`;
//! - the health timeout never fires (timer not persisted):
//!   `invariants.rs::a_phase_timeout_fires_on_time_across_an_operator_restart`;
//! - rollback needs a `previousVersion` that is never filled: `rollback.rs` (the plan keeps
//!   `from`; the automatic rollback restores data and reverts Git with nothing filled in);
//! - Helm release secrets decoded wrongly: `src/cluster/helm_release.rs` tests (real
//!   format, legacy uncompressed, double-decoded refused) and
//!   `tests/cluster_discovery.rs::a_helm_release_is_discovered_from_its_release_secret_even_scaled_to_zero`;
//! - multi-document YAML truncated on commit: `upgrade.rs` (the two-document file with its
//!   comment is byte-identical but for the tag) and the golden files in `src/manifest`;
//! - dry-run leaves workloads scaled down: `dry_run_and_cancel.rs::a_dry_run_checks_and_cycles_but_changes_nothing`;
//! - the finalizer cleans nothing: `dry_run_and_cancel.rs::deleting_a_running_upgrade_puts_everything_back_before_it_goes`,
//!   `invariants.rs::deleting_a_running_request_puts_flux_and_replicas_back_before_it_goes`;
//! - two requests on one app interleave: `queueing.rs::f_a_second_request_for_an_app_waits_queued_then_runs_on_top_of_the_first`;
//! - a status-write failure after a commit or snapshot repeats the side effect:
//!   `invariants.rs::a_failed_status_write_after_each_side_effect_repeats_none_of_them` and
//!   `crash_matrix.rs`.
//!
//! Here: auto-discovered volumes never snapshotted because discovery ran through pods
//! after scale-down — through the whole loop, with an app that has no pod at all.

use e2e::checks::{commits_of, snapshots_of};
use e2e::given::app;
use e2e::then;
use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::wait_until;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

e2e::on_all_stacks!(volumes_are_snapshotted_even_when_no_pod_runs);

async fn volumes_are_snapshotted_even_when_no_pod_runs() {
    let story = app().running_at("v1.4.0").await;
    // Someone scaled the app to zero: no pod mounts the volumes, so pod-based discovery
    // would find none.
    e2e::api::<StatefulSet>(&story)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    wait_until("every pod to go", Duration::from_secs(30), async || {
        then::pods(&story, "").await.is_empty().then_some(())
    })
    .await
    .unwrap();
    let upgrade = story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let uid = upgrade.uid().unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let planned: Vec<String> = status
        .plan
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(
        planned,
        ["data-db-0", "data-db-1"],
        "found from the workload spec"
    );
    assert_eq!(status.snapshots.len(), 2);
    assert!(status.snapshots.iter().all(|s| s.ready_to_use));
    assert_eq!(snapshots_of(&story, &uid).await, 2);
    assert_eq!(commits_of(&story, &uid), 1);
    story.stop().await;
}
