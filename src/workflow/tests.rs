//! Table-driven transition tests and property tests of the phase machine.

use super::observations::ChildRollback;
use super::*;
use crate::api::conditions::find_condition;
use crate::api::{
    CommitRecord, FluxObjectKind, OnFailure, Phase, PhaseOutcome, Plan, PlannedFluxObject,
    PlannedVolume, PlannedWorkload, ReleasedVolume, RequestStatus, RestoreState, WorkloadKind,
};
use crate::cluster::flux::progress::Progress;
use crate::cluster::health::{HealthReport, ObjectHealth};
use crate::cluster::workloads::{PodMount, PodOwner};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::time::Duration;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn request(kind: RequestKind) -> Request {
    Request {
        kind,
        name: "db-1-5-0".into(),
        uid: "uid-1".into(),
        generation: Some(1),
        dry_run: false,
        skip_snapshot: false,
        deleting: false,
        undoes: BTreeMap::new(),
    }
}

fn upgrade() -> Request {
    request(RequestKind::Upgrade)
}

fn app(on_failure: OnFailure) -> AppPolicy {
    let mut spec: crate::api::ManagedAppSpec = serde_json::from_value(serde_json::json!({
        "source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db.yaml"}
    }))
    .unwrap();
    spec.rollback.on_failure = on_failure;
    AppPolicy::from_spec(&spec)
}

fn flux(kind: FluxObjectKind, name: &str, was_suspended: bool) -> PlannedFluxObject {
    PlannedFluxObject {
        kind,
        name: name.into(),
        namespace: "flux-system".into(),
        was_suspended,
    }
}

fn plan() -> Plan {
    Plan {
        from: BTreeMap::from([("chart".into(), "1.4.0".into())]),
        to: BTreeMap::from([("chart".into(), "1.5.0".into())]),
        git: None,
        flux_objects: vec![
            flux(FluxObjectKind::Kustomization, "apps", false),
            flux(FluxObjectKind::Kustomization, "infra", true),
            flux(FluxObjectKind::HelmRelease, "db", false),
        ],
        workloads: vec![PlannedWorkload {
            kind: WorkloadKind::StatefulSet,
            name: "db".into(),
            namespace: "apps".into(),
            replicas: 2,
            autoscaler: None,
            claim_retention: None,
        }],
        volumes: vec![volume("data-db-0"), volume("data-db-1")],
    }
}

fn volume(name: &str) -> PlannedVolume {
    PlannedVolume {
        name: name.into(),
        namespace: "apps".into(),
        storage_class_name: Some("fast".into()),
        access_modes: vec!["ReadWriteOnce".into()],
        volume_mode: None,
        size: Quantity("1Gi".into()),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        csi_driver: Some("hostpath.csi.k8s.io".into()),
        snapshot_class_name: Some("snap".into()),
        restore_from: None,
        restore_from_handle: None,
    }
}

/// A world at rest before the request: Flux as planned, workloads at their replicas.
fn world(plan: &Plan, now: i64) -> Observed {
    Observed {
        now: t(now),
        lock: Some(LockState::Ours),
        first_in_queue: true,
        flux_suspended: plan
            .flux_objects
            .iter()
            .map(|o| (ObjectKey::flux(o), o.was_suspended))
            .collect(),
        replicas: plan
            .workloads
            .iter()
            .map(|w| (ObjectKey::workload(w), w.replicas))
            .collect(),
        commit: CommitState::Unknown,
        ..Default::default()
    }
}

/// A status in `phase`, started at `started`.
fn in_phase(phase: Phase, started: i64) -> RequestStatus {
    RequestStatus {
        phase: Some(phase),
        phase_started_at: Some(Time(t(started))),
        plan: Some(plan()),
        ..Default::default()
    }
}

fn sha() -> CommitRecord {
    CommitRecord {
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        message: "fluxgate: upgrade".into(),
        url: None,
    }
}

#[test]
fn the_creating_reconcile_persists_the_plan_and_touches_nothing() {
    let mut observed = world(&plan(), 0);
    observed.lock = Some(LockState::Free);
    observed.admission = Some(Ok(plan()));
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &RequestStatus::default(),
        &observed,
    );
    assert_eq!(
        d.actions,
        vec![Action::TakeLock],
        "only the lock, no side effect"
    );
    assert_eq!(d.status.phase, Some(Phase::Suspend));
    assert_eq!(d.status.plan, Some(plan()));
    assert_eq!(d.status.target.as_deref(), Some("1.5.0"));
    let trail: Vec<(Phase, Option<PhaseOutcome>)> = d
        .status
        .phases
        .iter()
        .map(|p| (p.name, p.outcome))
        .collect();
    assert_eq!(
        trail,
        vec![
            (Phase::Admit, Some(PhaseOutcome::Succeeded)),
            (Phase::Suspend, None)
        ]
    );
}

#[test]
fn a_second_request_queues_until_the_lock_is_free() {
    let mut observed = world(&plan(), 0);
    observed.lock = Some(LockState::HeldBy("db-first".into()));
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &RequestStatus::default(),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Queued));
    assert!(d.actions.is_empty() && d.status.plan.is_none());
    // Free, but an older request waits too: still queued, status unchanged.
    observed.lock = Some(LockState::Free);
    observed.first_in_queue = false;
    let again = decide(&upgrade(), &app(OnFailure::Rollback), &d.status, &observed);
    assert_eq!(again.status.phase, Some(Phase::Queued));
    assert!(again.actions.is_empty());
    observed.first_in_queue = true;
    observed.admission = Some(Ok(plan()));
    let admitted = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &again.status,
        &observed,
    );
    assert_eq!(admitted.status.phase, Some(Phase::Suspend));
    assert_eq!(admitted.actions, vec![Action::TakeLock]);
    let names: Vec<Phase> = admitted.status.phases.iter().map(|p| p.name).collect();
    assert_eq!(names, vec![Phase::Queued, Phase::Admit, Phase::Suspend]);
}

#[test]
fn an_invalid_request_is_refused_at_admission_with_its_reason() {
    let mut observed = world(&plan(), 0);
    observed.lock = Some(LockState::Free);
    observed.admission = Some(Err(Problem::terminal(
        "FailedVersion",
        "chart 1.5.0 was rolled back before; set force: true to try it again",
    )));
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &RequestStatus::default(),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let failure = d.status.failure.unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Admit, "FailedVersion")
    );
    assert!(
        d.actions.is_empty(),
        "nothing was touched, the lock was not ours"
    );
}

#[test]
fn suspend_goes_parent_first_and_skips_already_suspended_objects() {
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Suspend, 0),
        &world(&plan(), 1),
    );
    let suspended: Vec<String> = d
        .actions
        .iter()
        .map(|a| match a {
            Action::SetSuspend {
                object,
                suspend: true,
            } => object.name.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        suspended,
        vec!["apps", "db"],
        "parent first; infra was already suspended"
    );
    assert_eq!(d.status.phase, Some(Phase::Suspend));

    let mut done = world(&plan(), 2);
    done.flux_suspended.values_mut().for_each(|s| *s = true);
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Suspend, 0),
        &done,
    );
    assert_eq!(d.status.phase, Some(Phase::Quiesce));
    assert!(d.actions.is_empty());
}

#[test]
fn an_object_suspended_by_someone_else_at_admit_is_never_suspended_by_us() {
    // "infra" was suspended at Admit (another request on a shared parent); that request has
    // since resumed it. Suspending it now would leave it suspended for good: we put back only
    // what we suspended.
    let plan = plan();
    let infra = plan
        .flux_objects
        .iter()
        .find(|o| o.was_suspended)
        .expect("the plan has an object suspended at Admit")
        .clone();
    let mut observed = world(&plan, 1);
    observed
        .flux_suspended
        .insert(ObjectKey::flux(&infra), false);
    for object in plan.flux_objects.iter().filter(|o| !o.was_suspended) {
        observed
            .flux_suspended
            .insert(ObjectKey::flux(object), true);
    }
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Suspend, 0),
        &observed,
    );
    assert!(
        d.actions.is_empty(),
        "{} is left as it is found: {:?}",
        infra.name,
        d.actions
    );
    assert_eq!(d.status.phase, Some(Phase::Quiesce));
}

#[test]
fn a_missing_flux_object_fails_before_the_commit_and_is_undone() {
    let mut observed = world(&plan(), 1);
    observed
        .flux_suspended
        .remove(&ObjectKey::flux(&plan().flux_objects[2]));
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Suspend, 0),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Resume));
    assert_eq!(
        d.status.failure.as_ref().unwrap().reason,
        "FluxObjectNotFound"
    );
}

#[test]
fn quiesce_scales_to_zero_and_waits_for_pods_to_let_go() {
    let mut observed = world(&plan(), 1);
    observed.mounts = vec![PodMount {
        pod: "db-0".into(),
        claims: ["data-db-0".to_owned()].into(),
        owner: PodOwner::StatefulSet("db".into()),
    }];
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Quiesce, 0),
        &observed,
    );
    assert!(matches!(
        &d.actions[..],
        [Action::Scale { replicas: 0, .. }]
    ));
    assert_eq!(d.status.phase, Some(Phase::Quiesce));
    assert!(
        d.status
            .conditions
            .iter()
            .any(|c| c.message.contains("db-0 (StatefulSet db)"))
    );

    observed.replicas.values_mut().for_each(|r| *r = 0);
    observed.mounts.clear();
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Quiesce, 0),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Snapshot));
}

#[test]
fn a_daemonset_holding_a_volume_is_a_blocker() {
    let mut observed = world(&plan(), 1);
    observed.mounts = vec![PodMount {
        pod: "agent-x".into(),
        claims: ["data-db-0".to_owned()].into(),
        owner: PodOwner::DaemonSet("agent".into()),
    }];
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Quiesce, 0),
        &observed,
    );
    let failure = d.status.failure.unwrap();
    assert_eq!(failure.reason, "VolumeInUse");
    assert!(
        failure.message.contains("DaemonSet agent"),
        "{}",
        failure.message
    );
}

#[test]
fn snapshots_are_created_once_named_by_uid_and_their_errors_are_shown() {
    let observed = world(&plan(), 1);
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Snapshot, 0),
        &observed,
    );
    let names: Vec<String> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateSnapshot { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        vec!["fluxgate-uid-1-data-db-0", "fluxgate-uid-1-data-db-1"]
    );

    let mut observed = world(&plan(), 2);
    observed.snapshots.insert(
        ObjectKey::claim_named("apps", "data-db-0"),
        SnapshotState {
            ready: true,
            ..Default::default()
        },
    );
    observed.snapshots.insert(
        ObjectKey::claim_named("apps", "data-db-1"),
        SnapshotState {
            error: Some("quota exceeded".into()),
            ..Default::default()
        },
    );
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Snapshot, 0),
        &observed,
    );
    assert!(
        d.actions.is_empty(),
        "existing snapshots are not created again"
    );
    assert_eq!(d.status.phase, Some(Phase::Snapshot));
    assert_eq!(
        d.status.snapshots[1].error.as_deref(),
        Some("quota exceeded")
    );
    assert!(
        d.status
            .conditions
            .iter()
            .any(|c| c.message.contains("data-db-1: quota exceeded"))
    );

    observed
        .snapshots
        .get_mut(&ObjectKey::claim_named("apps", "data-db-1"))
        .unwrap()
        .ready = true;
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Snapshot, 0),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Commit));
}

#[test]
fn skip_snapshot_goes_straight_to_commit() {
    let mut skipping = upgrade();
    skipping.skip_snapshot = true;
    let d = decide(
        &skipping,
        &app(OnFailure::Rollback),
        &in_phase(Phase::Snapshot, 0),
        &world(&plan(), 1),
    );
    assert_eq!(d.status.phase, Some(Phase::Commit));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phases.last().map(|p| p.name), Some(Phase::Commit));
}

#[test]
fn commit_pushes_once_and_advances_when_git_has_it() {
    let mut observed = world(&plan(), 1);
    observed.commit = CommitState::NotFound;
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Commit, 0),
        &observed,
    );
    assert!(
        matches!(&d.actions[..], [Action::Commit { versions, .. }] if versions["chart"] == "1.5.0")
    );
    assert_eq!(d.requeue_after, Some(Duration::ZERO));
    // After a crash between push and status write, the trailer lookup finds it: no new push.
    observed.commit = CommitState::Pushed(sha());
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Commit, 0),
        &observed,
    );
    assert!(d.actions.is_empty());
    assert_eq!(d.status.commit, Some(sha()));
    assert_eq!(d.status.phase, Some(Phase::Reconcile));
}

#[test]
fn reconcile_resumes_children_last_and_restores_replicas_flux_left_at_zero() {
    let mut observed = world(&plan(), 1);
    observed.flux_suspended.values_mut().for_each(|s| *s = true);
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::Reconcile, 0)
    };
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    let resumed: Vec<String> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetSuspend {
                object,
                suspend: false,
            } => Some(object.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        resumed,
        vec!["apps", "db"],
        "parents first, children last; infra was suspended before and stays so"
    );
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::RequestReconcile { .. }))
    );

    let mut observed = world(&plan(), 2);
    observed.replicas.values_mut().for_each(|r| *r = 0);
    observed.flux_progress = Some(Progress::Waiting(
        "Kustomization apps last applied main@sha1:old".into(),
    ));
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(
        d.status.phase,
        Some(Phase::Reconcile),
        "a stale Ready is not progress"
    );
    observed.flux_progress = Some(Progress::Done);
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Scale { replicas: 2, .. }))
    );
    assert_eq!(d.status.phase, Some(Phase::Reconcile));
    observed.replicas.values_mut().for_each(|r| *r = 2);
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Verify));
}

fn health(healthy: bool) -> HealthReport {
    HealthReport {
        objects: vec![ObjectHealth {
            object: "StatefulSet apps/db".into(),
            healthy,
            reason: "x".into(),
        }],
    }
}

#[test]
fn a_held_back_helm_release_is_resumed_only_when_its_sources_are_ready() {
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::Reconcile, 0)
    };
    let mut observed = world(&plan(), 1);
    observed.flux_suspended.values_mut().for_each(|s| *s = true);
    let release = ObjectKey::flux(&plan().flux_objects[2]);
    observed.held_back.insert(
        release.clone(),
        "OCIRepository db serves chart 1.5.0".into(),
    );
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    let resumed: Vec<String> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetSuspend {
                object,
                suspend: false,
            } => Some(object.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, vec!["apps"], "the HelmRelease waits for its chart");
    observed
        .flux_suspended
        .insert(ObjectKey::flux(&plan().flux_objects[0]), false);
    observed.flux_progress = Some(Progress::Done);
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(
        d.status.phase,
        Some(Phase::Reconcile),
        "not done while held back"
    );
    assert!(d.status.conditions.iter().any(|c| {
        c.message
            .contains("stays suspended until OCIRepository db serves chart 1.5.0")
    }));
}

#[test]
fn verify_requires_health_to_hold_for_the_stabilization_time() {
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::Verify, 0)
    };
    let app = app(OnFailure::Rollback);
    let mut observed = world(&plan(), 10);
    observed.health = Some(health(true));
    let first = decide(&upgrade(), &app, &status, &observed);
    assert_eq!(first.status.healthy_since, Some(Time(t(10))));
    assert_eq!(first.requeue_after, Some(Duration::from_secs(30)));
    observed.now = t(25);
    observed.health = Some(health(false));
    let flapped = decide(&upgrade(), &app, &first.status, &observed);
    assert_eq!(
        flapped.status.healthy_since, None,
        "unhealthy resets the clock"
    );
    observed.now = t(30);
    observed.health = Some(health(true));
    let again = decide(&upgrade(), &app, &flapped.status, &observed);
    observed.now = t(61);
    let done = decide(&upgrade(), &app, &again.status, &observed);
    assert_eq!(done.status.phase, Some(Phase::Succeeded));
    let Some(Action::Finish(finish)) = done.actions.first() else {
        panic!("{:?}", done.actions)
    };
    assert_eq!(finish.current_versions.as_ref().unwrap()["chart"], "1.5.0");
    assert!(finish.release_lock);
    assert!(
        done.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
}

#[test]
fn a_phase_timeout_fires_from_the_persisted_start_even_after_a_restart() {
    // The operator restarted: the only memory is phaseStartedAt in the status.
    let status = in_phase(Phase::Quiesce, 0);
    let mut observed = world(&plan(), 5 * 60 - 1);
    observed.mounts = vec![PodMount {
        pod: "db-0".into(),
        claims: ["data-db-0".to_owned()].into(),
        owner: PodOwner::Job("x".into()),
    }];
    let waiting = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(waiting.status.phase, Some(Phase::Quiesce));
    assert_eq!(
        waiting.requeue_after,
        Some(Duration::from_secs(1)),
        "wakes up when the timeout is due"
    );
    observed.now = t(5 * 60);
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &waiting.status,
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Resume));
    let failure = d.status.failure.unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Quiesce, "Timeout")
    );
    assert!(
        failure.message.contains("db-0 (Job x)"),
        "{}",
        failure.message
    );
    assert_eq!(d.status.phases.last().map(|p| p.name), Some(Phase::Resume));
}

#[test]
fn a_clock_behind_the_phase_start_does_not_fire_the_timeout() {
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Suspend, 100),
        &world(&plan(), -500),
    );
    assert_eq!(d.status.phase, Some(Phase::Suspend));
}

#[test]
fn failure_after_the_commit_follows_on_failure() {
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::Verify, 0)
    };
    let mut observed = world(&plan(), 10);
    observed.remediation = Some(Problem::terminal(
        "HelmRemediated",
        "helm-controller rolled the release back",
    ));

    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::RollingBack));
    assert_eq!(
        d.actions,
        vec![Action::CreateRollback {
            name: "db-1-5-0-rollback".into()
        }]
    );

    let d = decide(&upgrade(), &app(OnFailure::Freeze), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    // Flux, resumed by Reconcile, is suspended again, parents first; what was suspended
    // before the upgrade is left alone; the lock stays with the frozen request.
    let suspended: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetSuspend {
                object,
                suspend: true,
            } => Some(object.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(suspended, vec!["apps", "db"]);
    assert!(
        matches!(d.actions.last(), Some(Action::Finish(f)) if !f.release_lock && f.result == Some(Phase::Frozen))
    );
    assert_eq!(d.actions.len(), 3, "{:?}", d.actions);
    assert!(
        d.notes
            .iter()
            .any(|n| n.warning && n.message.contains("FROZEN"))
    );
    // Verify runs after Flux was resumed: Freeze suspends it again, and says so.
    let frozen = d
        .notes
        .iter()
        .find(|n| n.message.contains("FROZEN"))
        .unwrap();
    assert!(
        frozen.message.contains("held suspended"),
        "{}",
        frozen.message
    );

    let d = decide(&upgrade(), &app(OnFailure::Resume), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Resume));
}

#[test]
fn rolling_back_ends_when_the_rollback_does() {
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::RollingBack, 0)
    };
    let mut observed = world(&plan(), 10);
    observed.rollback = Some(ChildRollback {
        phase: Some(Phase::Restore),
        failure: None,
    });
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::RollingBack));
    assert!(d.actions.is_empty());
    observed.rollback = Some(ChildRollback {
        phase: Some(Phase::Succeeded),
        failure: None,
    });
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(
        d.status.rollback_ref.as_ref().map(|r| r.name.as_str()),
        Some("db-1-5-0-rollback")
    );

    // A rollback refused before it touched anything: the upgrade puts Flux back itself.
    observed.rollback = Some(ChildRollback {
        phase: Some(Phase::Failed),
        failure: Some("no snapshots".into()),
    });
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Resume));
    assert!(
        d.status
            .conditions
            .iter()
            .any(|c| c.message.contains("no snapshots"))
    );
}

#[test]
fn a_frozen_upgrade_ends_when_a_person_rolls_it_back() {
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::Frozen, 0)
    };
    let mut observed = world(&plan(), 10);
    observed.rollback = Some(ChildRollback {
        phase: Some(Phase::Verify),
        failure: None,
    });
    assert_eq!(
        decide(&upgrade(), &app(OnFailure::Freeze), &status, &observed).status,
        status,
        "frozen while it runs"
    );
    observed.rollback = Some(ChildRollback {
        phase: Some(Phase::Succeeded),
        failure: None,
    });
    let d = decide(&upgrade(), &app(OnFailure::Freeze), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert!(matches!(&d.actions[..], [Action::Finish(f)] if f.release_lock));
}

#[test]
fn a_rollback_runs_under_its_upgrades_lock() {
    let mut observed = world(&plan(), 0);
    observed.lock = Some(LockState::HandedOver);
    observed.admission = Some(Ok(plan()));
    let d = decide(
        &request(RequestKind::Rollback),
        &app(OnFailure::Rollback),
        &RequestStatus::default(),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Suspend));
    assert!(
        d.actions.is_empty(),
        "the upgrade keeps the lock and releases it when it ends"
    );
}

#[test]
fn deleting_a_running_request_undoes_it_before_it_goes() {
    let mut deleting = upgrade();
    deleting.deleting = true;
    let mut observed = world(&plan(), 10);
    observed.flux_suspended.values_mut().for_each(|s| *s = true);
    observed.replicas.values_mut().for_each(|r| *r = 0);
    let d = decide(
        &deleting,
        &app(OnFailure::Rollback),
        &in_phase(Phase::Snapshot, 0),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Resume));
    assert!(!d.remove_finalizer);
    let d = decide(&deleting, &app(OnFailure::Rollback), &d.status, &observed);
    assert_eq!(
        d.actions.len(),
        3,
        "two Flux objects resumed (infra stays suspended) and one workload restored: {:?}",
        d.actions
    );
    assert!(!d.remove_finalizer);
    let restored = world(&plan(), 11);
    let d = decide(&deleting, &app(OnFailure::Rollback), &d.status, &restored);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.failure.as_ref().unwrap().reason, "Cancelled");
    assert!(d.remove_finalizer);
}

#[test]
fn a_dry_run_cycles_and_puts_everything_back_without_commit_or_snapshot() {
    let mut dry = upgrade();
    dry.dry_run = true;
    let app = app(OnFailure::Rollback);
    let mut observed = world(&plan(), 0);
    observed.lock = Some(LockState::Free);
    observed.admission = Some(Ok(plan()));
    observed.preflight = Some(Ok(String::new()));
    let mut status = RequestStatus::default();
    let mut phases = Vec::new();
    for step in 0..20 {
        observed.now = t(step);
        let d = decide(&dry, &app, &status, &observed);
        for action in &d.actions {
            match action {
                Action::SetSuspend { object, suspend } => {
                    observed
                        .flux_suspended
                        .insert(ObjectKey::flux(object), *suspend);
                }
                Action::Scale { workload, replicas } => {
                    observed
                        .replicas
                        .insert(ObjectKey::workload(workload), *replicas);
                }
                Action::TakeLock | Action::Finish(_) => {}
                other => panic!("a dry run must not {other:?}"),
            }
        }
        status = d.status;
        if phases.last() != status.phase.as_ref() {
            phases.push(status.phase.unwrap());
        }
    }
    assert_eq!(
        phases,
        vec![
            Phase::Preflight,
            Phase::Suspend,
            Phase::Quiesce,
            Phase::Resume,
            Phase::Succeeded
        ]
    );
    assert_eq!(observed.flux_suspended, world(&plan(), 0).flux_suspended);
    assert_eq!(observed.replicas, world(&plan(), 0).replicas);
}

#[test]
fn the_preflight_notes_are_in_the_phase_record() {
    let mut dry = upgrade();
    dry.dry_run = true;
    let mut observed = world(&plan(), 0);
    let note = "version field image (`.b.tag` in db.yaml) is written once at line 3 and also read at `.a.tag`";
    observed.preflight = Some(Ok(note.to_owned()));
    let status = RequestStatus {
        phases: vec![crate::api::PhaseRecord {
            name: Phase::Preflight,
            started_at: Time(t(0)),
            completed_at: None,
            outcome: None,
            message: None,
        }],
        ..in_phase(Phase::Preflight, 0)
    };
    let d = decide(&dry, &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Suspend));
    let record = d.status.phases.iter().find(|p| p.name == Phase::Preflight);
    assert_eq!(
        record.and_then(|p| p.message.as_deref()),
        Some(format!("preflight checks passed; {note}").as_str()),
        "{:?}",
        d.status.phases
    );
}

/// A rollback's plan: each volume restored from the upgrade's snapshot of it.
fn rollback_plan() -> Plan {
    let mut plan = plan();
    std::mem::swap(&mut plan.from, &mut plan.to);
    for v in &mut plan.volumes {
        v.restore_from = Some(format!("fluxgate-up-{}", v.name));
    }
    plan
}

/// A rollback in Restore whose safety snapshots are ready.
fn restoring() -> RequestStatus {
    RequestStatus {
        plan: Some(rollback_plan()),
        snapshots: ["data-db-0", "data-db-1"]
            .iter()
            .map(|pvc| crate::api::SnapshotRecord {
                pvc: (*pvc).into(),
                name: format!("fluxgate-rb-{pvc}"),
                ready_to_use: true,
                restore_size: None,
                error: None,
                snapshot_handle: None,
            })
            .collect(),
        ..in_phase(Phase::Restore, 0)
    }
}

/// The claims as a Restore reconcile reads them, every source snapshot fit to restore from.
fn claims(observed: &mut Observed, states: &[(&str, Option<ClaimState>)]) {
    observed.claims_read = true;
    observed.claims.clear();
    for (pvc, state) in states {
        let key = ObjectKey::claim_named("apps", pvc);
        if let Some(state) = state {
            observed.claims.insert(key.clone(), state.clone());
        }
        observed.sources.entry(key).or_insert(Ok(()));
    }
}

fn old_claim() -> Option<ClaimState> {
    Some(ClaimState {
        bound: true,
        ..Default::default()
    })
}

fn restored(pvc: &str) -> Option<ClaimState> {
    Some(ClaimState {
        restored_from: Some(format!("fluxgate-up-{pvc}")),
        bound: true,
        ..Default::default()
    })
}

#[test]
fn a_rollback_restores_one_volume_at_a_time_and_each_once() {
    let rollback = request(RequestKind::Rollback);
    let policy = app(OnFailure::Rollback);
    let status = restoring();
    let mut observed = world(&rollback_plan(), 1);
    let step = |observed: &Observed| decide(&rollback, &policy, &status, observed);
    claims(
        &mut observed,
        &[("data-db-0", old_claim()), ("data-db-1", old_claim())],
    );
    let d = step(&observed);
    assert!(
        matches!(&d.actions[..], [Action::DeleteClaim { volume }] if volume.name == "data-db-0"),
        "only the first PVC is deleted: {:?}",
        d.actions
    );
    claims(
        &mut observed,
        &[
            (
                "data-db-0",
                Some(ClaimState {
                    terminating: true,
                    ..Default::default()
                }),
            ),
            ("data-db-1", old_claim()),
        ],
    );
    let d = step(&observed);
    assert!(d.actions.is_empty(), "the next waits: {:?}", d.actions);
    let states: Vec<RestoreState> = d.status.restores.iter().map(|r| r.state).collect();
    assert_eq!(states, vec![RestoreState::Deleted, RestoreState::Pending]);
    claims(
        &mut observed,
        &[("data-db-0", None), ("data-db-1", old_claim())],
    );
    let d = step(&observed);
    assert!(
        matches!(&d.actions[..], [Action::RestoreClaim { volume, snapshot }]
            if volume.name == "data-db-0" && snapshot == "fluxgate-up-data-db-0"),
        "{:?}",
        d.actions
    );
    claims(
        &mut observed,
        &[
            ("data-db-0", restored("data-db-0")),
            ("data-db-1", old_claim()),
        ],
    );
    let d = step(&observed);
    assert!(
        matches!(&d.actions[..], [Action::DeleteClaim { volume }] if volume.name == "data-db-1"),
        "{:?}",
        d.actions
    );
    claims(
        &mut observed,
        &[
            ("data-db-0", restored("data-db-0")),
            (
                "data-db-1",
                Some(ClaimState {
                    restored_from: Some("fluxgate-up-data-db-1".into()),
                    waits_for_first_consumer: true,
                    ..Default::default()
                }),
            ),
        ],
    );
    let d = step(&observed);
    assert_eq!(
        d.status.phase,
        Some(Phase::Revert),
        "WaitForFirstConsumer is not waited on for Bound"
    );
    let kept: Vec<Option<&str>> = d
        .status
        .restores
        .iter()
        .map(|r| r.safety_snapshot.as_deref())
        .collect();
    assert_eq!(
        kept,
        vec![Some("fluxgate-rb-data-db-0"), Some("fluxgate-rb-data-db-1")]
    );
}

#[test]
fn a_pvc_is_deleted_only_after_its_volume_is_kept_and_the_kept_volume_is_reported() {
    let rollback = request(RequestKind::Rollback);
    let policy = app(OnFailure::Rollback);
    let status = restoring();
    let mut observed = world(&rollback_plan(), 1);
    let bound_to = |pv: &str| {
        Some(ClaimState {
            bound: true,
            volume: Some(pv.into()),
            ..Default::default()
        })
    };
    claims(
        &mut observed,
        &[
            ("data-db-0", bound_to("pv-0")),
            ("data-db-1", bound_to("pv-1")),
        ],
    );
    let d = decide(&rollback, &policy, &status, &observed);
    assert!(
        matches!(&d.actions[..], [
            Action::RetainVolume { volume, persistent_volume },
            Action::DeleteClaim { volume: deleted },
        ] if volume.name == "data-db-0" && persistent_volume == "pv-0" && deleted.name == "data-db-0"),
        "the volume is kept before its claim is deleted, in the same step: {:?}",
        d.actions
    );
    // A crash after the volume was kept and before the delete: the volume's own labels say
    // it is kept, so the repeat only deletes.
    let kept = ReleasedVolume {
        name: "pv-0".into(),
        reclaim_policy_before: "Delete".into(),
    };
    observed
        .released
        .insert(ObjectKey::claim_named("apps", "data-db-0"), kept.clone());
    let d = decide(&rollback, &policy, &status, &observed);
    assert!(
        matches!(&d.actions[..], [Action::DeleteClaim { volume }] if volume.name == "data-db-0"),
        "{:?}",
        d.actions
    );
    // Once the claim is gone (and the status write of that step was lost), the kept volume
    // is read back from the cluster into the status, and stays there once restored.
    claims(
        &mut observed,
        &[("data-db-0", None), ("data-db-1", bound_to("pv-1"))],
    );
    let d = decide(&rollback, &policy, &status, &observed);
    assert_eq!(d.status.restores[0].released_volume, Some(kept.clone()));
    assert_eq!(d.status.restores[1].released_volume, None);
    let after = d.status.clone();
    let mut later = observed.clone();
    later.claims_read = false;
    later.released.clear();
    let d = decide(&rollback, &policy, &after, &later);
    assert_eq!(d.status.restores[0].released_volume, Some(kept));
    let report = crate::api::restores_report(&d.status.restores);
    assert!(
        report.contains("on PersistentVolume pv-0 (kept: reclaim policy Retain) and in safety snapshot fluxgate-rb-data-db-0"),
        "{report}"
    );
    assert!(crate::api::released_report(&d.status.restores).contains(
        "PersistentVolume pv-0 (the data data-db-0 held before; reclaim policy was Delete)"
    ),);
    // An unbound claim has no volume to keep: it is only deleted.
    claims(
        &mut observed,
        &[
            ("data-db-0", restored("data-db-0")),
            ("data-db-1", Some(ClaimState::default())),
        ],
    );
    let d = decide(&rollback, &policy, &status, &observed);
    assert!(
        matches!(&d.actions[..], [Action::DeleteClaim { volume }] if volume.name == "data-db-1"),
        "{:?}",
        d.actions
    );
}

#[test]
fn restore_reads_each_source_snapshot_right_before_it_relies_on_it() {
    let plan = rollback_plan();
    let names = |observed: &Observed| -> Vec<String> {
        sources_needed(&plan, &observed.claims)
            .iter()
            .map(|v| v.name.clone())
            .collect()
    };
    let mut observed = world(&plan, 1);
    // Before the first PVC is deleted: every one.
    claims(
        &mut observed,
        &[("data-db-0", old_claim()), ("data-db-1", old_claim())],
    );
    assert_eq!(names(&observed), vec!["data-db-0", "data-db-1"]);
    // A PVC being deleted is only waited on.
    claims(
        &mut observed,
        &[
            (
                "data-db-0",
                Some(ClaimState {
                    terminating: true,
                    ..Default::default()
                }),
            ),
            ("data-db-1", old_claim()),
        ],
    );
    assert!(names(&observed).is_empty());
    // Gone: its source, right before the recreate; then the next one, before its delete.
    claims(
        &mut observed,
        &[("data-db-0", None), ("data-db-1", old_claim())],
    );
    assert_eq!(names(&observed), vec!["data-db-0"]);
    claims(
        &mut observed,
        &[
            ("data-db-0", restored("data-db-0")),
            ("data-db-1", old_claim()),
        ],
    );
    assert_eq!(names(&observed), vec!["data-db-1"]);
    claims(
        &mut observed,
        &[
            ("data-db-0", restored("data-db-0")),
            ("data-db-1", restored("data-db-1")),
        ],
    );
    assert!(names(&observed).is_empty());
}

#[test]
fn an_unusable_snapshot_fails_the_rollback_before_any_pvc_is_touched() {
    let rollback = request(RequestKind::Rollback);
    let mut observed = world(&rollback_plan(), 1);
    observed.sources.insert(
        ObjectKey::claim_named("apps", "data-db-1"),
        Err("VolumeSnapshot apps/fluxgate-up-data-db-1 (of PVC data-db-1) is gone".into()),
    );
    claims(
        &mut observed,
        &[("data-db-0", old_claim()), ("data-db-1", old_claim())],
    );
    let d = decide(
        &rollback,
        &app(OnFailure::Rollback),
        &restoring(),
        &observed,
    );
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::DeleteClaim { .. })),
        "{:?}",
        d.actions
    );
    // Nothing was replaced: the rollback undoes itself (Flux and replicas back) and fails.
    assert_eq!(d.status.phase, Some(Phase::Resume));
    let failure = d.status.failure.unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Restore, "SnapshotUnusable")
    );
    assert!(
        failure.message.contains("fluxgate-up-data-db-1") && failure.message.contains("is gone")
    );
}

#[test]
fn a_rollback_that_fails_after_replacing_a_volume_is_frozen_never_resumed() {
    let rollback = request(RequestKind::Rollback);
    let policy = app(OnFailure::Rollback);
    // data-db-0 is back from its snapshot; the snapshot of data-db-1 went bad meanwhile.
    let mut observed = world(&rollback_plan(), 1);
    observed.replicas.values_mut().for_each(|r| *r = 0);
    observed.sources.insert(
        ObjectKey::claim_named("apps", "data-db-1"),
        Err("VolumeSnapshot apps/fluxgate-up-data-db-1 (of PVC data-db-1) reports an error: VolumeSnapshotContent is missing".into()),
    );
    claims(
        &mut observed,
        &[
            ("data-db-0", restored("data-db-0")),
            ("data-db-1", old_claim()),
        ],
    );
    let d = decide(&rollback, &policy, &restoring(), &observed);
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    assert!(
        !d.actions.iter().any(|a| matches!(
            a,
            Action::Scale { .. }
                | Action::DeleteClaim { .. }
                | Action::SetSuspend { suspend: false, .. }
        )),
        "nothing is put back or touched: {:?}",
        d.actions
    );
    assert!(
        matches!(d.actions.last(), Some(Action::Finish(f)) if !f.release_lock && f.result == Some(Phase::Frozen)),
        "{:?}",
        d.actions
    );
    let message = &find_condition(&d.status.conditions, crate::api::conditions::READY)
        .unwrap()
        .message;
    for part in [
        "FROZEN",
        "data-db-0 restored from fluxgate-up-data-db-0 (the data it held is in safety snapshot fluxgate-rb-data-db-0)",
        "data-db-1 not restored: it still holds the data it had: VolumeSnapshot apps/fluxgate-up-data-db-1",
        "Git still holds 1.5.0 (not reverted)",
        "delete this RollbackRequest",
    ] {
        assert!(message.contains(part), "{part}\n{message}");
    }
    // Once frozen it stays so: a later reconcile changes nothing.
    let again = decide(&rollback, &policy, &d.status, &observed);
    assert_eq!(again.status, d.status);

    // The snapshot went bad between the delete of a PVC and its recreate: it is missing.
    claims(
        &mut observed,
        &[("data-db-0", None), ("data-db-1", old_claim())],
    );
    observed.sources.insert(
        ObjectKey::claim_named("apps", "data-db-0"),
        Err("VolumeSnapshot apps/fluxgate-up-data-db-0 (of PVC data-db-0) is being deleted".into()),
    );
    let d = decide(&rollback, &policy, &restoring(), &observed);
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    let failure = d.status.failure.clone().unwrap();
    assert_eq!(failure.reason, "SnapshotUnusable");
    let message = &find_condition(&d.status.conditions, crate::api::conditions::READY)
        .unwrap()
        .message;
    assert!(
        message.contains("data-db-0 MISSING: deleted and not recreated from fluxgate-up-data-db-0: VolumeSnapshot apps/fluxgate-up-data-db-0 (of PVC data-db-0) is being deleted (the data it held is in safety snapshot fluxgate-rb-data-db-0)"),
        "{message}"
    );

    // Deleting the frozen rollback is a person's decision: then Flux and replicas go back.
    let mut deleting = rollback.clone();
    deleting.deleting = true;
    let d = decide(&deleting, &policy, &d.status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Resume));
}

#[test]
fn a_delete_whose_status_write_a_crash_lost_still_counts_as_replacing() {
    let rollback = request(RequestKind::Rollback);
    let mut observed = world(&rollback_plan(), 1);
    // The status says nothing was touched, but the claim is already going.
    claims(
        &mut observed,
        &[
            (
                "data-db-0",
                Some(ClaimState {
                    terminating: true,
                    ..Default::default()
                }),
            ),
            ("data-db-1", old_claim()),
        ],
    );
    let d = on_action_error(
        &rollback,
        &app(OnFailure::Rollback),
        &restoring(),
        &Problem::terminal("Forbidden", "RBAC denies creating PVCs"),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    assert_eq!(d.status.restores[0].state, RestoreState::Deleted);
    // A PVC an earlier rollback restored (from another snapshot) is not one this one replaced.
    claims(
        &mut observed,
        &[
            (
                "data-db-0",
                Some(ClaimState {
                    restored_from: Some("fluxgate-older-data-db-0".into()),
                    bound: true,
                    ..Default::default()
                }),
            ),
            ("data-db-1", old_claim()),
        ],
    );
    let d = on_action_error(
        &rollback,
        &app(OnFailure::Rollback),
        &restoring(),
        &Problem::terminal("Forbidden", "RBAC denies deleting PVCs"),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Resume));
    // Not read this reconcile: an absent claim says nothing, the record decides.
    observed.claims_read = false;
    observed.claims.clear();
    let d = on_action_error(
        &rollback,
        &app(OnFailure::Rollback),
        &restoring(),
        &Problem::terminal("Forbidden", "RBAC denies reading PVCs"),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Resume));
}

#[test]
fn a_rollback_failing_after_its_restore_is_frozen_and_suspends_flux_again() {
    let rollback = request(RequestKind::Rollback);
    let policy = app(OnFailure::Rollback);
    let mut status = restoring();
    status.phase = Some(Phase::Revert);
    let observed = world(&rollback_plan(), 1);
    let d = on_action_error(
        &rollback,
        &policy,
        &status,
        &Problem::terminal("VersionChangedInGit", "Git holds chart 1.7.0"),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    assert!(
        matches!(&d.actions[..], [Action::Finish(_)]),
        "Flux is still held from Suspend: {:?}",
        d.actions
    );
    // Past Reconcile (which resumed Flux), Flux is suspended again.
    status.phase = Some(Phase::Verify);
    status.commit = Some(sha());
    let d = on_action_error(
        &rollback,
        &policy,
        &status,
        &Problem::terminal("HealthCheckFailed", "0/2 pods ready"),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    let suspended: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetSuspend {
                object,
                suspend: true,
            } => Some(object.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(suspended, vec!["apps", "db"], "Flux held, parents first");
    status.phase = Some(Phase::Revert);
    status.commit = None;

    // A rollback with nothing to restore (the upgrade took no snapshots) replaced no data:
    // it puts everything back and fails as usual.
    let mut plain = status.clone();
    if let Some(plan) = plain.plan.as_mut() {
        plan.volumes.iter_mut().for_each(|v| v.restore_from = None);
    }
    let d = on_action_error(
        &rollback,
        &policy,
        &plain,
        &Problem::terminal("VersionChangedInGit", "Git holds chart 1.7.0"),
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Resume));
}

#[test]
fn an_upgrade_whose_rollback_froze_is_frozen_too() {
    let status = RequestStatus {
        commit: Some(sha()),
        ..in_phase(Phase::RollingBack, 0)
    };
    let mut observed = world(&plan(), 10);
    observed.rollback = Some(ChildRollback {
        phase: Some(Phase::Frozen),
        failure: Some("VolumeSnapshot apps/x is gone".into()),
    });
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(d.status.phase, Some(Phase::Frozen));
    assert!(
        matches!(&d.actions[..], [Action::Finish(f)] if !f.release_lock),
        "it keeps the app for a person: {:?}",
        d.actions
    );
}

/// The plan with StatefulSet `db` deleting its PVCs on scale-down.
fn deleting_claims_plan() -> Plan {
    let mut plan = plan();
    plan.workloads[0].claim_retention = Some(crate::api::ClaimRetention {
        when_scaled: "Delete".into(),
    });
    plan
}

#[test]
fn a_statefulset_that_deletes_its_pvcs_on_scale_down_keeps_them_for_the_operation() {
    let plan = deleting_claims_plan();
    let key = ObjectKey::workload(&plan.workloads[0]);
    let status = RequestStatus {
        plan: Some(plan.clone()),
        ..in_phase(Phase::Quiesce, 0)
    };
    let mut observed = world(&plan, 1);
    observed.when_scaled.insert(key.clone(), "Delete".into());
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert_eq!(
        d.actions,
        vec![Action::SetClaimRetention {
            workload: plan.workloads[0].clone(),
            when_scaled: "Retain".into()
        }],
        "not scaled before it retains its PVCs"
    );
    observed.when_scaled.insert(key.clone(), "Retain".into());
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
    assert!(
        matches!(&d.actions[..], [Action::Scale { replicas: 0, .. }]),
        "{:?}",
        d.actions
    );

    // Every way out puts it back: Resume (undo, dry run, deletion) ...
    observed.replicas.insert(key.clone(), 0);
    let resuming = RequestStatus {
        plan: Some(plan.clone()),
        ..in_phase(Phase::Resume, 0)
    };
    let d = decide(&upgrade(), &app(OnFailure::Rollback), &resuming, &observed);
    assert!(d.actions.contains(&Action::SetClaimRetention {
        workload: plan.workloads[0].clone(),
        when_scaled: "Delete".into()
    }));
    assert_eq!(d.status.phase, Some(Phase::Resume), "until it is seen back");
    // ... and Reconcile, once Flux applied the commit (unless Flux re-applied it already).
    let reconciling = RequestStatus {
        plan: Some(plan.clone()),
        commit: Some(sha()),
        ..in_phase(Phase::Reconcile, 0)
    };
    observed.replicas.insert(key.clone(), 2);
    observed.flux_progress = Some(Progress::Done);
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &reconciling,
        &observed,
    );
    assert_eq!(
        d.actions
            .iter()
            .filter(|a| matches!(a, Action::SetClaimRetention { when_scaled, .. } if when_scaled == "Delete"))
            .count(),
        1,
        "{:?}",
        d.actions
    );
    observed.when_scaled.insert(key, "Delete".into());
    let d = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &reconciling,
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Verify));
}

#[test]
fn a_successful_rollback_records_the_undone_versions_as_failed() {
    let mut rollback_plan = plan();
    std::mem::swap(&mut rollback_plan.from, &mut rollback_plan.to);
    let status = RequestStatus {
        plan: Some(rollback_plan),
        commit: Some(sha()),
        ..in_phase(Phase::Verify, 0)
    };
    let mut observed = world(&plan(), 100);
    observed.health = Some(health(true));
    let first = decide(
        &request(RequestKind::Rollback),
        &app(OnFailure::Rollback),
        &status,
        &observed,
    );
    observed.now = t(200);
    let d = decide(
        &request(RequestKind::Rollback),
        &app(OnFailure::Rollback),
        &first.status,
        &observed,
    );
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    let Some(Action::Finish(finish)) = d.actions.first() else {
        panic!("{:?}", d.actions)
    };
    assert_eq!(finish.failed_versions["chart"], "1.5.0");
    assert_eq!(finish.current_versions.as_ref().unwrap()["chart"], "1.4.0");

    // A forced rollback started from what Git held (a later upgrade's version): the
    // version recorded as failed is still the target of the upgrade it undid.
    let mut forced = request(RequestKind::Rollback);
    forced.undoes = BTreeMap::from([("chart".into(), "1.5.0".into())]);
    let mut later = first.status.clone();
    if let Some(plan) = later.plan.as_mut() {
        plan.from = BTreeMap::from([("chart".into(), "1.7.0".into())]);
    }
    let d = decide(&forced, &app(OnFailure::Rollback), &later, &observed);
    let Some(Action::Finish(finish)) = d.actions.first() else {
        panic!("{:?}", d.actions)
    };
    assert_eq!(finish.failed_versions["chart"], "1.5.0");
}

#[test]
fn errors_from_actions_retry_or_fail_by_kind() {
    let status = in_phase(Phase::Suspend, 0);
    let observed = world(&plan(), 1);
    let retry = on_action_error(
        &upgrade(),
        &app(OnFailure::Rollback),
        &status,
        &Problem::retryable("ApiError", "HTTP 500 from the API server"),
        &observed,
    );
    assert_eq!(retry.status.phase, Some(Phase::Suspend));
    assert_eq!(retry.requeue_after, Some(Duration::from_secs(5)));
    assert!(
        retry
            .status
            .conditions
            .iter()
            .any(|c| c.message.contains("retrying after ApiError"))
    );
    let terminal = on_action_error(
        &upgrade(),
        &app(OnFailure::Rollback),
        &status,
        &Problem::terminal("Forbidden", "RBAC denies patching HelmRelease"),
        &observed,
    );
    assert_eq!(terminal.status.phase, Some(Phase::Resume));
    assert_eq!(terminal.status.failure.unwrap().reason, "Forbidden");
}

#[test]
fn deciding_twice_on_the_same_world_writes_nothing_new() {
    // Conditions keep their transition time, so an unchanged world gives an identical
    // status and the controller skips the write (no self-triggering loop).
    let mut observed = world(&plan(), 1);
    observed.mounts = vec![PodMount {
        pod: "db-0".into(),
        claims: ["data-db-0".to_owned()].into(),
        owner: PodOwner::StatefulSet("db".into()),
    }];
    let first = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &in_phase(Phase::Quiesce, 0),
        &observed,
    );
    observed.now = t(2);
    let second = decide(
        &upgrade(),
        &app(OnFailure::Rollback),
        &first.status,
        &observed,
    );
    assert_eq!(first.status, second.status);
}

#[test]
fn terminal_phases_are_sticky() {
    for phase in [
        Phase::Succeeded,
        Phase::Failed,
        Phase::RolledBack,
        Phase::Frozen,
    ] {
        let status = in_phase(phase, 0);
        let mut observed = world(&plan(), 10_000);
        observed.admission = Some(Ok(plan()));
        observed.flux_suspended.values_mut().for_each(|s| *s = true);
        let d = decide(&upgrade(), &app(OnFailure::Rollback), &status, &observed);
        assert_eq!(d.status, status, "{phase:?}");
        assert!(d.actions.is_empty());
    }
}

mod properties {
    //! Random worlds: actions take effect only sometimes, health and Flux answer at random.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Turn {
        applies: bool,
        pods_gone: bool,
        snapshots_ready: bool,
        flux_done: bool,
        healthy: bool,
        remediated: bool,
        child: u8,
        minutes: i64,
    }

    fn turn() -> impl Strategy<Value = Turn> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.05),
            0u8..4,
            0i64..4,
        )
            .prop_map(
                |(
                    applies,
                    pods_gone,
                    snapshots_ready,
                    flux_done,
                    healthy,
                    remediated,
                    child,
                    minutes,
                )| Turn {
                    applies,
                    pods_gone,
                    snapshots_ready,
                    flux_done,
                    healthy,
                    remediated,
                    child,
                    minutes,
                },
            )
    }

    fn on_failure() -> impl Strategy<Value = OnFailure> {
        prop_oneof![
            Just(OnFailure::Rollback),
            Just(OnFailure::Freeze),
            Just(OnFailure::Resume)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn invariants_hold_in_any_world(turns in prop::collection::vec(turn(), 1..80), policy in on_failure(), skip in any::<bool>(), dry in any::<bool>(), delete_at in prop::option::of(0usize..80), deletes_claims in any::<bool>()) {
            let mut req = upgrade();
            req.skip_snapshot = skip;
            req.dry_run = dry;
            let app = app(policy);
            let plan = || if deletes_claims { deleting_claims_plan() } else { super::plan() };
            let mut observed = world(&plan(), 0);
            if deletes_claims {
                observed.when_scaled.insert(ObjectKey::workload(&plan().workloads[0]), "Delete".into());
            }
            observed.lock = Some(LockState::Free);
            observed.admission = Some(Ok(plan()));
            observed.preflight = Some(Ok(String::new()));
            let mut status = RequestStatus::default();
            let mut now = 0;
            let mut committed = false;
            let mut created_snapshots: std::collections::BTreeSet<ObjectKey> = std::collections::BTreeSet::new();
            let mut trace: Vec<String> = Vec::new();
            for (i, turn) in turns.iter().enumerate() {
                req.deleting = delete_at.is_some_and(|at| i >= at);
                now += turn.minutes * 60 + 1;
                observed.now = t(now);
                // Pods run while replicas > 0 and linger a while after scale-down.
                let running = observed.replicas.values().any(|r| *r > 0);
                observed.mounts = if running || !turn.pods_gone {
                    vec![PodMount { pod: "db-0".into(), claims: ["data-db-0".to_owned()].into(), owner: PodOwner::StatefulSet("db".into()) }]
                } else {
                    vec![]
                };
                for key in created_snapshots.iter() {
                    let state: &mut SnapshotState = observed.snapshots.entry(key.clone()).or_default();
                    state.ready |= turn.snapshots_ready;
                }
                observed.commit = if committed { CommitState::Pushed(sha()) } else { CommitState::NotFound };
                observed.flux_progress = Some(if turn.flux_done { Progress::Done } else { Progress::Waiting("waiting".into()) });
                observed.health = Some(health(turn.healthy));
                observed.remediation = turn.remediated.then(|| Problem::terminal("HelmRemediated", "rolled back by helm"));
                observed.rollback = match turn.child { 0 => None, 1 => Some(ChildRollback { phase: Some(Phase::Restore), failure: None }),
                    2 => Some(ChildRollback { phase: Some(Phase::Succeeded), failure: None }), _ => Some(ChildRollback { phase: Some(Phase::Failed), failure: Some("x".into()) }) };

                let before = status.phase;
                let d = decide(&req, &app, &status, &observed);
                trace.push(format!("{:?}->{:?} {:?}", before, d.status.phase, d.actions.iter().map(|a| format!("{a:?}").chars().take(40).collect::<String>()).collect::<Vec<_>>()));
                if before.is_some_and(|p| p.is_terminal()) && before != Some(Phase::Frozen) {
                    prop_assert_eq!(d.status.phase, before, "terminal phases are sticky");
                }
                for action in &d.actions {
                    match action {
                        Action::Commit { .. } => {
                            prop_assert!(!req.dry_run, "a dry run never commits");
                            let snapshots_ready = status.snapshots.len() == plan().volumes.len() && status.snapshots.iter().all(|s| s.ready_to_use);
                            prop_assert!(req.skip_snapshot || snapshots_ready, "commit before snapshots were ready: {:?}", status.snapshots);
                            if turn.applies { committed = true; }
                        }
                        Action::CreateSnapshot { volume, .. } => {
                            prop_assert!(!req.dry_run, "a dry run never snapshots");
                            if turn.applies { created_snapshots.insert(ObjectKey::claim(volume)); }
                        }
                        Action::SetSuspend { object, suspend } if turn.applies => { observed.flux_suspended.insert(ObjectKey::flux(object), *suspend); }
                        Action::Scale { workload, replicas } => {
                            let key = ObjectKey::workload(workload);
                            prop_assert!(*replicas != 0 || observed.when_scaled.get(&key).is_none_or(|w| w == "Retain"), "scaled down while it deletes its PVCs: {:#?}", trace);
                            if turn.applies { observed.replicas.insert(key, *replicas); }
                        }
                        Action::SetClaimRetention { workload, when_scaled } if turn.applies => { observed.when_scaled.insert(ObjectKey::workload(workload), when_scaled.clone()); }
                        _ => {}
                    }
                }
                status = d.status;
                let finished = status.phase.is_some_and(|p| p.is_terminal() && p != Phase::Frozen && p != Phase::RolledBack);
                if finished {
                    // Flux and replicas are back as they were (for RolledBack the
                    // rollback request did that, outside this simulation).
                    for object in &plan().flux_objects {
                        prop_assert_eq!(observed.flux_suspended[&ObjectKey::flux(object)], object.was_suspended, "{:?} left wrong: {:#?}", object.name, trace);
                    }
                    for w in &plan().workloads {
                        prop_assert!(observed.replicas[&ObjectKey::workload(w)] != 0, "workload left at zero");
                        if deletes_claims {
                            prop_assert_eq!(observed.when_scaled[&ObjectKey::workload(w)].as_str(), "Delete", "PVC retention not put back: {:#?}", trace);
                        }
                    }
                }
            }
        }
    }
}
