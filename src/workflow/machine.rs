//! The phase machine itself: admission, the order of phases, persisted timeouts, deletion,
//! the undo path (Resume) and the failure policy after a commit; one step of the running
//! phase per reconcile, taken by its module in [`super::phases`].

use super::actions::{Action, Decision, Finish};
use super::observations::{LockState, Observed, Problem};
use super::phases::{self, Seen, Step, elapsed, phase_name};
use super::policy::{AppPolicy, Request, RequestKind};
use super::transitions::{enter, progress, record_failure};
use crate::api::conditions::{READY, find_condition};
use crate::api::{
    OnFailure, Phase, PhaseOutcome, PhaseRecord, Plan, RequestStatus, versions_summary,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long to wait for an event before looking again anyway.
const FALLBACK: Duration = Duration::from_secs(60);
/// How soon to retry after a retryable error.
const RETRY: Duration = Duration::from_secs(5);

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

pub(super) fn finish(
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
    let seen = Seen {
        request,
        app,
        plan: &plan,
        observed,
    };
    let step = phases::step(phase, &seen, d);
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
        // A rollback undoes the upgrade's target: remember it as failed. (A forced rollback
        // starts from what Git held then, which may be a later upgrade's versions.)
        record.failed_versions = if request.undoes.is_empty() {
            plan.from.clone()
        } else {
            request.undoes.clone()
        };
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
    if request.kind == RequestKind::Rollback
        && !request.dry_run
        && phases::volumes_replaced(&plan, &d.status, observed, phase)
    {
        hold_replaced_volumes(request, d, observed, &plan, phase, &problem, outcome);
        return;
    }
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

/// A rollback that fails once it has deleted a PVC never puts the app back to run on
/// missing or partial data: it ends `Frozen` for a person, Flux held suspended (suspended
/// again if Reconcile had resumed it) and the workloads left as they are, saying what was
/// replaced, what is missing and where the data is. Deleting it puts Flux and the workloads
/// back (Resume), once a person has decided to.
fn hold_replaced_volumes(
    request: &Request,
    d: &mut Decision,
    observed: &Observed,
    plan: &Plan,
    phase: Phase,
    problem: &Problem,
    outcome: PhaseOutcome,
) {
    if observed.claims_read {
        d.status.restores = phases::restore_records(plan, &d.status, observed);
    }
    // Reconcile resumes Flux; before it, Flux is still held by Suspend.
    if matches!(phase, Phase::Reconcile | Phase::Verify) {
        for object in plan.flux_objects.iter().filter(|o| !o.was_suspended) {
            d.actions.push(Action::SetSuspend {
                object: object.clone(),
                suspend: true,
            });
        }
    }
    d.actions.push(Action::Finish(finish(
        Some(plan),
        Some(Phase::Frozen),
        false,
        false,
    )));
    let git = if d.status.commit.is_some() {
        format!("Git was reverted to {}", versions_summary(&plan.to))
    } else {
        format!(
            "Git still holds {} (not reverted)",
            versions_summary(&plan.from)
        )
    };
    let message = format!(
        "{} failed ({}) after volumes were replaced: {}; FROZEN for a person, never resumed on missing or \
         partial data: Flux stays suspended and the workloads as they are. {}. {git}. Restore what is \
         missing (e.g. a PVC with the safety snapshot as its dataSource), then delete this RollbackRequest \
         to put Flux and the workloads back",
        phase_name(phase),
        problem.reason,
        problem.message,
        crate::api::restores_report(&d.status.restores)
    );
    enter(
        d,
        Phase::Frozen,
        outcome,
        &message,
        observed.now,
        request.generation,
    );
}

/// The deterministic name of an upgrade's automatic RollbackRequest.
pub fn rollback_name(upgrade: &str) -> String {
    const SUFFIX: &str = "-rollback";
    let keep = upgrade.len().min(253 - SUFFIX.len());
    format!("{}{SUFFIX}", upgrade[..keep].trim_end_matches(['-', '.']))
}
