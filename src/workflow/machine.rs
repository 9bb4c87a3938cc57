//! The phase machine itself: one step of the running phase per reconcile, with persisted
//! timeouts, the undo path (Resume) and the failure policy after a commit.

use super::actions::{Action, Decision, Finish};
use super::observations::{CommitState, LockState, ObjectKey, Observed, Problem};
use super::policy::{AppPolicy, Request, RequestKind};
use super::transitions::{enter, progress, record_failure};
use crate::api::conditions::{READY, find_condition};
use crate::api::{
    OnFailure, Phase, PhaseOutcome, PhaseRecord, Plan, RequestStatus, SnapshotRecord,
    versions_summary,
};
use crate::cluster::flux::progress::Progress;
use crate::cluster::snapshots::snapshot_name;
use crate::cluster::workloads::PodOwner;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long to wait for an event before looking again anyway.
const FALLBACK: Duration = Duration::from_secs(60);
/// How soon to retry after a retryable error.
const RETRY: Duration = Duration::from_secs(5);

/// What one phase step concluded.
enum Step {
    /// Keep waiting; the text says for what.
    Wait(String),
    /// The phase is done.
    Advance(String, PhaseOutcome),
    /// The phase failed.
    Fail(Problem),
    /// The step already moved the request on (to a terminal phase).
    Concluded,
}

/// Decides the next status and side effects of a request from what was observed.
pub fn decide(
    request: &Request,
    app: &AppPolicy,
    status: &RequestStatus,
    observed: &Observed,
) -> Decision {
    let mut d = Decision {
        status: status.clone(),
        actions: Vec::new(),
        notes: Vec::new(),
        requeue_after: None,
        remove_finalizer: false,
    };
    match status.phase {
        Some(Phase::Frozen)
            if observed
                .rollback
                .as_ref()
                .is_some_and(|r| r.phase == Some(Phase::Succeeded)) =>
        {
            // A person rolled the frozen upgrade back: it ends RolledBack and lets the app go.
            let plan = status.plan.clone().unwrap_or_default();
            d.actions.push(Action::Finish(finish(
                Some(&plan),
                Some(Phase::RolledBack),
                false,
                true,
            )));
            let message = "rolled back by a RollbackRequest after being frozen: data restored and Git reverted";
            enter(
                &mut d,
                Phase::RolledBack,
                PhaseOutcome::Succeeded,
                message,
                observed.now,
                request.generation,
            );
            d.remove_finalizer = request.deleting;
        }
        Some(Phase::Frozen) if request.deleting => {
            // A person deletes a frozen request once they have looked: put Flux back.
            cancel(request, &mut d, observed);
        }
        Some(phase) if phase.is_terminal() => d.remove_finalizer = request.deleting,
        None | Some(Phase::Queued) if request.deleting => {
            // Nothing was touched; release the lock in case admission got that far.
            d.actions
                .push(Action::Finish(finish(None, None, false, true)));
            d.remove_finalizer = true;
        }
        Some(Phase::Resume) => run_phase(request, app, &mut d, observed, Phase::Resume),
        Some(_) if request.deleting => cancel(request, &mut d, observed),
        None | Some(Phase::Queued) | Some(Phase::Admit) => admit(request, &mut d, observed),
        Some(phase) => run_phase(request, app, &mut d, observed, phase),
    }
    d
}

/// The decision after an action failed: a retryable error keeps the phase and retries
/// soon; a terminal one fails the phase.
pub fn on_action_error(
    request: &Request,
    app: &AppPolicy,
    status: &RequestStatus,
    problem: &Problem,
    observed: &Observed,
) -> Decision {
    let mut d = Decision {
        status: status.clone(),
        actions: Vec::new(),
        notes: Vec::new(),
        requeue_after: Some(RETRY),
        remove_finalizer: false,
    };
    let phase = status.phase.unwrap_or(Phase::Admit);
    if problem.retryable || phase == Phase::Resume || phase.is_terminal() {
        // Resume never gives up: Flux must not be left suspended.
        let message = format!("retrying after {}: {}", problem.reason, problem.message);
        progress(&mut d.status, &message, observed.now, request.generation);
    } else {
        fail(request, app, &mut d, observed, phase, problem.clone());
    }
    d
}

fn finish(
    plan: Option<&Plan>,
    result: Option<Phase>,
    versions_changed: bool,
    release_lock: bool,
) -> Finish {
    let (from, to) = plan
        .map(|p| (p.from.clone(), p.to.clone()))
        .unwrap_or_default();
    Finish {
        result,
        current_versions: versions_changed.then(|| to.clone()),
        from,
        to,
        failed_versions: BTreeMap::new(),
        release_lock,
    }
}

fn admit(request: &Request, d: &mut Decision, observed: &Observed) {
    let now = observed.now;
    let lock = observed.lock.clone().unwrap_or(LockState::Free);
    let waiting = match &lock {
        LockState::HeldBy(other) => Some(format!("waiting for {other} to finish with this app")),
        LockState::Free if !observed.first_in_queue => {
            Some("waiting behind older requests for this app".to_owned())
        }
        _ => None,
    };
    if let Some(message) = waiting {
        if d.status.phase != Some(Phase::Queued) {
            enter(
                d,
                Phase::Queued,
                PhaseOutcome::Succeeded,
                &message,
                now,
                request.generation,
            );
        } else {
            progress(&mut d.status, &message, now, request.generation);
        }
        return;
    }
    match &observed.admission {
        None => d.requeue_after = Some(RETRY),
        Some(Err(problem)) if problem.retryable => {
            progress(
                &mut d.status,
                &format!("cannot admit yet ({}): {}", problem.reason, problem.message),
                now,
                request.generation,
            );
            d.requeue_after = Some(RETRY);
        }
        Some(Err(problem)) => {
            if lock == LockState::Ours {
                d.actions
                    .push(Action::Finish(finish(None, None, false, true)));
            }
            open_admit_record(&mut d.status, now);
            record_failure(
                &mut d.status,
                Phase::Admit,
                &problem.reason,
                &problem.message,
                false,
            );
            enter(
                d,
                Phase::Failed,
                PhaseOutcome::Failed,
                &format!("refused: {}", problem.message),
                now,
                request.generation,
            );
        }
        Some(Ok(plan)) => {
            // A rollback handed the lock by its own upgrade runs under the upgrade's lock,
            // which the upgrade releases when it ends.
            if lock == LockState::Free {
                d.actions.push(Action::TakeLock);
            }
            d.status.target = Some(versions_summary(&plan.to));
            d.status.plan = Some(plan.clone());
            open_admit_record(&mut d.status, now);
            let first = if request.dry_run {
                Phase::Preflight
            } else {
                Phase::Suspend
            };
            let message = format!(
                "admitted: {} → {}",
                versions_summary(&plan.from),
                versions_summary(&plan.to)
            );
            enter(
                d,
                first,
                PhaseOutcome::Succeeded,
                &message,
                now,
                request.generation,
            );
        }
    }
}

/// The Admit entry of the audit trail (it starts and ends within one reconcile).
fn open_admit_record(status: &mut RequestStatus, now: jiff::Timestamp) {
    if let Some(queued) = status
        .phases
        .last_mut()
        .filter(|p| p.completed_at.is_none())
    {
        queued.completed_at = Some(Time(now));
        queued.outcome = Some(PhaseOutcome::Succeeded);
    }
    status.phases.push(PhaseRecord {
        name: Phase::Admit,
        started_at: Time(now),
        completed_at: None,
        outcome: None,
        message: None,
    });
}

/// Deletion of a running request: record why, then undo through Resume.
fn cancel(request: &Request, d: &mut Decision, observed: &Observed) {
    let phase = d.status.phase.unwrap_or(Phase::Admit);
    record_failure(
        &mut d.status,
        phase,
        "Cancelled",
        "the request was deleted; Flux and replicas are being put back",
        false,
    );
    enter(
        d,
        Phase::Resume,
        PhaseOutcome::Cancelled,
        "deleted: resuming Flux and restoring replicas",
        observed.now,
        request.generation,
    );
    d.requeue_after = Some(Duration::ZERO);
}

fn run_phase(
    request: &Request,
    app: &AppPolicy,
    d: &mut Decision,
    observed: &Observed,
    phase: Phase,
) {
    let now = observed.now;
    let Some(plan) = d.status.plan.clone() else {
        // A status without a plan past Admit was not written by Fluxgate.
        fail(
            request,
            app,
            d,
            observed,
            phase,
            Problem::terminal(
                "PlanMissing",
                "status.plan is missing; delete the request and create a new one",
            ),
        );
        return;
    };
    d.requeue_after = Some(FALLBACK);
    if let (Some(limit), Some(started)) =
        (app.timeouts.of(phase), d.status.phase_started_at.clone())
    {
        let elapsed = elapsed(now, started.0);
        if elapsed >= limit {
            let waiting = find_condition(&d.status.conditions, READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let message = format!(
                "{phase:?} did not finish within {}s: {waiting}",
                limit.as_secs()
            );
            // Out of time while helm-controller keeps retrying a failed release: that
            // failure is the reason (its message is in what Verify waited for).
            let reason = match (&observed.retried_failure, phase) {
                (Some(failure), Phase::Verify) => failure.reason.clone(),
                _ => "Timeout".to_owned(),
            };
            fail(
                request,
                app,
                d,
                observed,
                phase,
                Problem::terminal(&reason, message),
            );
            return;
        }
        d.requeue_after = Some(FALLBACK.min(limit - elapsed));
    }
    let step = match phase {
        Phase::Preflight => match &observed.preflight {
            None => Step::Wait("running preflight checks".into()),
            Some(Ok(notes)) if notes.is_empty() => {
                Step::Advance("preflight checks passed".into(), PhaseOutcome::Succeeded)
            }
            Some(Ok(notes)) => Step::Advance(
                format!("preflight checks passed; {notes}"),
                PhaseOutcome::Succeeded,
            ),
            Some(Err(problem)) => Step::Fail(problem.clone()),
        },
        Phase::Suspend => suspend(d, &plan, observed),
        Phase::Quiesce => quiesce(d, &plan, observed),
        Phase::Snapshot | Phase::SafetySnapshot => snapshot(request, d, &plan, observed),
        Phase::Commit | Phase::Revert => commit(request, d, &plan, observed),
        Phase::Restore => restore(d, &plan, observed),
        Phase::Reconcile => reconcile(d, &plan, observed),
        Phase::Verify => verify(app, d, observed),
        Phase::Resume => resume(d, &plan, observed),
        Phase::RollingBack => rolling_back(request, d, &plan, observed),
        Phase::Admit
        | Phase::Queued
        | Phase::Succeeded
        | Phase::Failed
        | Phase::RolledBack
        | Phase::Frozen => Step::Wait(format!("{phase:?}")),
    };
    match step {
        Step::Concluded => {}
        Step::Wait(message) => progress(&mut d.status, &message, now, request.generation),
        Step::Fail(problem) if problem.retryable => {
            progress(
                &mut d.status,
                &format!("retrying after {}: {}", problem.reason, problem.message),
                now,
                request.generation,
            );
            d.requeue_after = Some(RETRY);
        }
        Step::Fail(problem) => fail(request, app, d, observed, phase, problem),
        Step::Advance(message, outcome) => {
            let next = next_phase(request, &d.status, phase);
            if next.is_terminal() {
                conclude(request, d, &plan, next, &message, observed);
            } else {
                enter(d, next, outcome, &message, now, request.generation);
                d.requeue_after = Some(Duration::ZERO);
            }
        }
    }
}

/// The phase after `phase` succeeds.
fn next_phase(request: &Request, status: &RequestStatus, phase: Phase) -> Phase {
    use Phase::*;
    let after_resume = if status.failure.is_some() {
        Failed
    } else {
        Succeeded
    };
    match (request.kind, request.dry_run, phase) {
        (_, _, Resume) => after_resume,
        (_, true, Preflight) => Suspend,
        (_, true, Suspend) => Quiesce,
        (_, true, _) => Resume,
        (RequestKind::Upgrade, false, Suspend) => Quiesce,
        (RequestKind::Upgrade, false, Quiesce) => Snapshot,
        (RequestKind::Upgrade, false, Snapshot) => Commit,
        (RequestKind::Upgrade, false, Commit) => Reconcile,
        (RequestKind::Rollback, false, Suspend) => Quiesce,
        (RequestKind::Rollback, false, Quiesce) => SafetySnapshot,
        (RequestKind::Rollback, false, SafetySnapshot) => Restore,
        (RequestKind::Rollback, false, Restore) => Revert,
        (RequestKind::Rollback, false, Revert) => Reconcile,
        (_, false, Reconcile) => Verify,
        (_, false, Verify) => Succeeded,
        // RollingBack ends through its child rollback, never by Advance.
        (_, false, _) => after_resume,
    }
}

/// Enters a terminal phase with the ManagedApp bookkeeping that goes with it.
fn conclude(
    request: &Request,
    d: &mut Decision,
    plan: &Plan,
    terminal: Phase,
    message: &str,
    observed: &Observed,
) {
    let succeeded_for_real = terminal == Phase::Succeeded && !request.dry_run;
    let mut record = finish(
        Some(plan),
        Some(terminal),
        succeeded_for_real,
        terminal != Phase::Frozen,
    );
    if succeeded_for_real && request.kind == RequestKind::Rollback {
        // A rollback undoes the upgrade's target: remember it as failed.
        record.failed_versions = plan.from.clone();
    }
    d.actions.push(Action::Finish(record));
    enter(
        d,
        terminal,
        PhaseOutcome::Succeeded,
        message,
        observed.now,
        request.generation,
    );
    d.remove_finalizer = request.deleting;
}

/// A failed phase: undo when nothing was committed; after an upgrade's commit, follow the
/// app's `rollback.onFailure`.
fn fail(
    request: &Request,
    app: &AppPolicy,
    d: &mut Decision,
    observed: &Observed,
    phase: Phase,
    problem: Problem,
) {
    let now = observed.now;
    record_failure(
        &mut d.status,
        phase,
        &problem.reason,
        &problem.message,
        problem.retryable,
    );
    let outcome = if problem.reason == "Timeout" {
        PhaseOutcome::TimedOut
    } else {
        PhaseOutcome::Failed
    };
    let committed =
        request.kind == RequestKind::Upgrade && !request.dry_run && d.status.commit.is_some();
    let plan = d.status.plan.clone().unwrap_or_default();
    if !committed {
        let message = format!(
            "{} failed ({}): {}; putting Flux and replicas back",
            phase_name(phase),
            problem.reason,
            problem.message
        );
        enter(d, Phase::Resume, outcome, &message, now, request.generation);
        d.requeue_after = Some(Duration::ZERO);
        return;
    }
    match app.on_failure {
        OnFailure::Rollback => {
            let message = format!(
                "upgrade failed after its commit ({}): {}; rolling back",
                problem.reason, problem.message
            );
            enter(
                d,
                Phase::RollingBack,
                outcome,
                &message,
                now,
                request.generation,
            );
            d.actions.push(Action::CreateRollback {
                name: rollback_name(&request.name),
            });
        }
        OnFailure::Freeze => {
            let message = format!(
                "upgrade failed after its commit ({}): {}; FROZEN for a person: Flux is held suspended at the new version, nothing is undone; \
                 create a RollbackRequest to restore the data and revert Git, or delete this request to resume Flux",
                problem.reason, problem.message
            );
            // Reconcile has resumed Flux by now: suspend it again (parents first), so that
            // neither Flux nor helm-controller's remediation moves anything while a person
            // looks. Deleting the request resumes exactly these.
            for object in plan.flux_objects.iter().filter(|o| !o.was_suspended) {
                d.actions.push(Action::SetSuspend {
                    object: object.clone(),
                    suspend: true,
                });
            }
            d.actions.push(Action::Finish(finish(
                Some(&plan),
                Some(Phase::Frozen),
                false,
                false,
            )));
            enter(d, Phase::Frozen, outcome, &message, now, request.generation);
        }
        OnFailure::Resume => {
            let message = format!(
                "upgrade failed after its commit ({}): {}; resuming Flux at the new version",
                problem.reason, problem.message
            );
            enter(d, Phase::Resume, outcome, &message, now, request.generation);
            d.requeue_after = Some(Duration::ZERO);
        }
    }
}

fn phase_name(phase: Phase) -> String {
    format!("{phase:?}")
}

/// The deterministic name of an upgrade's automatic RollbackRequest.
pub fn rollback_name(upgrade: &str) -> String {
    const SUFFIX: &str = "-rollback";
    let keep = upgrade.len().min(253 - SUFFIX.len());
    format!("{}{SUFFIX}", upgrade[..keep].trim_end_matches(['-', '.']))
}

fn suspend(d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    let mut pending = 0;
    // An object that was suspended at Admit is someone else's (a person's, or another
    // request's on a parent two apps share): it is left as it is found — never suspended by
    // us, since we would never resume it (resume_flux puts back only what we suspended).
    // Suspending it after its owner resumed it left Flux suspended for good.
    for object in plan.flux_objects.iter().filter(|o| !o.was_suspended) {
        let key = ObjectKey::flux(object);
        match observed.flux_suspended.get(&key) {
            None => {
                return Step::Fail(Problem::terminal(
                    "FluxObjectNotFound",
                    format!(
                        "{:?} {}/{} no longer exists",
                        object.kind, object.namespace, object.name
                    ),
                ));
            }
            Some(false) => {
                d.actions.push(Action::SetSuspend {
                    object: object.clone(),
                    suspend: true,
                });
                pending += 1;
            }
            Some(true) => {}
        }
    }
    if pending > 0 {
        return Step::Wait(format!("suspending {pending} Flux objects, parents first"));
    }
    // Quiesce only once helm-controller has seen the suspend: an action it was running
    // goes on after `spec.suspend` is set and could scale the workloads back up.
    if let Some((object, why)) = observed.flux_unsettled.iter().next() {
        return Step::Wait(format!(
            "waiting for helm-controller to see the suspend of {object}: {why}"
        ));
    }
    let ours = plan
        .flux_objects
        .iter()
        .filter(|o| !o.was_suspended)
        .count();
    Step::Advance(
        format!("{ours} Flux objects suspended"),
        PhaseOutcome::Succeeded,
    )
}

fn quiesce(d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    for workload in &plan.workloads {
        let key = ObjectKey::workload(workload);
        if observed.replicas.get(&key).is_some_and(|r| *r != 0) {
            d.actions.push(Action::Scale {
                workload: workload.clone(),
                replicas: 0,
            });
        }
    }
    if let Some(daemon) = observed
        .mounts
        .iter()
        .find(|m| matches!(m.owner, PodOwner::DaemonSet(_)))
    {
        return Step::Fail(Problem::terminal(
            "VolumeInUse",
            format!(
                "pod {} of {} mounts {:?} and a DaemonSet cannot be scaled to zero; exclude those PVCs \
                 (spec.snapshots.exclude) or stop the DaemonSet",
                daemon.pod, daemon.owner, daemon.claims
            ),
        ));
    }
    if observed.mounts.is_empty() && d.actions.is_empty() {
        return Step::Advance(
            "no pod mounts the app's volumes".into(),
            PhaseOutcome::Succeeded,
        );
    }
    let holders: Vec<String> = observed
        .mounts
        .iter()
        .map(|m| format!("{} ({})", m.pod, m.owner))
        .collect();
    Step::Wait(format!(
        "waiting for pods to release the volumes: {}",
        holders.join(", ")
    ))
}

fn snapshot(request: &Request, d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    if request.skip_snapshot || plan.volumes.is_empty() {
        let why = if plan.volumes.is_empty() {
            "no volumes to snapshot"
        } else {
            "snapshots skipped as requested"
        };
        return Step::Advance(why.into(), PhaseOutcome::Skipped);
    }
    let mut records = Vec::new();
    let (mut ready, mut errors) = (0, Vec::new());
    for volume in &plan.volumes {
        let name = snapshot_name(&request.uid, &volume.name);
        let state = observed.snapshots.get(&ObjectKey::claim(volume));
        match state {
            None => d.actions.push(Action::CreateSnapshot {
                volume: volume.clone(),
                name: name.clone(),
            }),
            Some(s) if s.ready => ready += 1,
            Some(s) => errors.extend(s.error.iter().map(|e| format!("{}: {e}", volume.name))),
        }
        records.push(SnapshotRecord {
            pvc: volume.name.clone(),
            name,
            ready_to_use: state.is_some_and(|s| s.ready),
            restore_size: state.and_then(|s| s.restore_size.clone()),
            error: state.and_then(|s| s.error.clone()),
        });
    }
    d.status.snapshots = records;
    let total = plan.volumes.len();
    if ready == total {
        return Step::Advance(format!("{total} snapshots ready"), PhaseOutcome::Succeeded);
    }
    let mut message = format!("{ready}/{total} snapshots ready");
    if !errors.is_empty() {
        message.push_str(&format!("; snapshotter errors: {}", errors.join("; ")));
    }
    Step::Wait(message)
}

fn commit(request: &Request, d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    match &observed.commit {
        CommitState::Pushed(record) | CommitState::AlreadyAtTarget(record) => {
            d.status.commit = Some(record.clone());
            Step::Advance(
                format!("committed {}", short(&record.sha)),
                PhaseOutcome::Succeeded,
            )
        }
        CommitState::NotFound => {
            let verb = if request.kind == RequestKind::Upgrade {
                "upgrade"
            } else {
                "roll back"
            };
            d.actions.push(Action::Commit {
                versions: plan.to.clone(),
                subject: format!("fluxgate: {verb} to {}", versions_summary(&plan.to)),
            });
            // A push raises no watch event: look again right away.
            d.requeue_after = Some(Duration::ZERO);
            Step::Wait("committing and pushing".into())
        }
        CommitState::Unknown => {
            d.requeue_after = Some(Duration::ZERO);
            Step::Wait("looking for the commit in Git".into())
        }
    }
}

fn restore(d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    let mut waiting = Vec::new();
    for volume in &plan.volumes {
        let Some(snapshot) = &volume.restore_from else {
            continue;
        };
        match observed.claims.get(&ObjectKey::claim(volume)) {
            None => {
                d.actions.push(Action::RestoreClaim {
                    volume: volume.clone(),
                    snapshot: snapshot.clone(),
                });
                waiting.push(format!("{}: recreating from {snapshot}", volume.name));
            }
            Some(claim) if claim.restored_from.as_deref() == Some(snapshot.as_str()) => {
                if !claim.bound && !claim.waits_for_first_consumer {
                    waiting.push(format!("{}: waiting to bind", volume.name));
                }
            }
            Some(claim) if claim.terminating => {
                waiting.push(format!("{}: waiting for the old PVC to go", volume.name))
            }
            Some(_) => {
                d.actions.push(Action::DeleteClaim {
                    volume: volume.clone(),
                });
                waiting.push(format!("{}: deleting the old PVC", volume.name));
            }
        }
    }
    if waiting.is_empty() {
        let restored = plan
            .volumes
            .iter()
            .filter(|v| v.restore_from.is_some())
            .count();
        Step::Advance(
            format!("{restored} volumes restored"),
            PhaseOutcome::Succeeded,
        )
    } else {
        Step::Wait(waiting.join("; "))
    }
}

/// Flux objects back to their prior `suspend`, in plan order: parents first, children
/// last, so a child reconciles once, with the spec its parent has just applied. Objects in
/// `held_back` stay suspended for now; returns how many change.
fn resume_flux(d: &mut Decision, plan: &Plan, observed: &Observed) -> usize {
    let mut changed = 0;
    for object in &plan.flux_objects {
        let key = ObjectKey::flux(object);
        if observed.held_back.contains_key(&key) {
            continue;
        }
        if !object.was_suspended && observed.flux_suspended.get(&key) == Some(&true) {
            d.actions.push(Action::SetSuspend {
                object: object.clone(),
                suspend: false,
            });
            changed += 1;
        }
    }
    changed
}

/// Workloads left at zero get their recorded replicas back; returns how many change.
fn restore_replicas(d: &mut Decision, plan: &Plan, observed: &Observed) -> usize {
    let mut changed = 0;
    for workload in &plan.workloads {
        let key = ObjectKey::workload(workload);
        if workload.replicas > 0 && observed.replicas.get(&key) == Some(&0) {
            d.actions.push(Action::Scale {
                workload: workload.clone(),
                replicas: workload.replicas,
            });
            changed += 1;
        }
    }
    changed
}

fn reconcile(d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    if let Some(problem) = &observed.remediation {
        return Step::Fail(problem.clone());
    }
    let resumed = resume_flux(d, plan, observed);
    let token = d
        .status
        .phase_started_at
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    d.actions.push(Action::RequestReconcile { token });
    if resumed > 0 {
        return Step::Wait(format!("resuming {resumed} Flux objects"));
    }
    if let Some((object, why)) = observed.held_back.iter().next() {
        return Step::Wait(format!("{object} stays suspended until {why}"));
    }
    match &observed.flux_progress {
        None => Step::Wait("waiting for Flux".into()),
        Some(Progress::Waiting(message)) => Step::Wait(message.clone()),
        Some(Progress::Failed { reason, message }) => {
            Step::Fail(Problem::terminal(reason, message.clone()))
        }
        Some(Progress::Done) => {
            if restore_replicas(d, plan, observed) > 0 {
                Step::Wait("Flux applied the commit; restoring replicas it left at zero".into())
            } else {
                Step::Advance("Flux applied the commit".into(), PhaseOutcome::Succeeded)
            }
        }
    }
}

fn verify(app: &AppPolicy, d: &mut Decision, observed: &Observed) -> Step {
    if let Some(problem) = &observed.remediation {
        return Step::Fail(problem.clone());
    }
    let Some(report) = &observed.health else {
        return Step::Wait("checking health".into());
    };
    if !report.healthy() {
        d.status.healthy_since = None;
        return Step::Wait(match &observed.retried_failure {
            Some(failure) => format!("not healthy yet: {report}; {}", failure.message),
            None => format!("not healthy yet: {report}"),
        });
    }
    let since = d.status.healthy_since.clone().unwrap_or(Time(observed.now));
    d.status.healthy_since = Some(since.clone());
    let held = elapsed(observed.now, since.0);
    if held >= app.stabilization {
        return Step::Advance(
            format!("healthy for {}s", held.as_secs()),
            PhaseOutcome::Succeeded,
        );
    }
    let remaining = app.stabilization - held;
    d.requeue_after = Some(d.requeue_after.map_or(remaining, |r| r.min(remaining)));
    Step::Wait(format!(
        "healthy for {}s of {}s",
        held.as_secs(),
        app.stabilization.as_secs()
    ))
}

fn resume(d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    let changes = resume_flux(d, plan, observed) + restore_replicas(d, plan, observed);
    if changes == 0 {
        Step::Advance(
            "Flux and replicas are back as they were".into(),
            PhaseOutcome::Succeeded,
        )
    } else {
        Step::Wait(format!("putting back {changes} Flux objects and workloads"))
    }
}

fn rolling_back(request: &Request, d: &mut Decision, plan: &Plan, observed: &Observed) -> Step {
    let name = rollback_name(&request.name);
    let Some(child) = &observed.rollback else {
        d.actions
            .push(Action::CreateRollback { name: name.clone() });
        return Step::Wait(format!("creating RollbackRequest {name}"));
    };
    d.status.rollback_ref = Some(crate::api::LocalObjectReference { name: name.clone() });
    match child.phase {
        Some(Phase::Succeeded) => {
            d.actions.push(Action::Finish(finish(
                Some(plan),
                Some(Phase::RolledBack),
                false,
                true,
            )));
            enter(
                d,
                Phase::RolledBack,
                PhaseOutcome::Succeeded,
                &format!("rolled back by {name}: data restored and Git reverted"),
                observed.now,
                request.generation,
            );
            Step::Concluded
        }
        Some(Phase::Failed) => {
            // The rollback may have failed before touching anything (e.g. refused at
            // admission): put Flux and replicas back ourselves before ending Failed.
            let why = child.failure.clone().unwrap_or_default();
            let message = format!("rollback {name} failed: {why}; putting Flux and replicas back");
            enter(
                d,
                Phase::Resume,
                PhaseOutcome::Failed,
                &message,
                observed.now,
                request.generation,
            );
            d.requeue_after = Some(Duration::ZERO);
            Step::Concluded
        }
        phase => Step::Wait(format!(
            "RollbackRequest {name} is {}",
            phase.map_or("starting".into(), phase_name)
        )),
    }
}

/// Time since `since`; zero when the clock reads earlier (skew between replicas must not
/// fire a timeout early).
fn elapsed(now: jiff::Timestamp, since: jiff::Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
