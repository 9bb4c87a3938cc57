//! Resume: the undo path — Flux objects back to their `suspend` before the request, workloads to their recorded replicas and PVC retention policies; it never gives up.

use super::{Needs, Seen, Step};
use crate::api::{PhaseOutcome, Plan};
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::{ObjectKey, Observed};

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    flux_state: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (plan, observed) = (seen.plan, seen.observed);
    let changes = resume_flux(d, plan, observed)
        + restore_replicas(d, plan, observed)
        + restore_claim_retention(d, plan, observed);
    if changes == 0 {
        Step::Advance(
            "Flux, replicas and PVC retention are back as they were".into(),
            PhaseOutcome::Succeeded,
        )
    } else {
        Step::Wait(format!(
            "putting back {changes} Flux objects, workloads and PVC retention policies"
        ))
    }
}

/// Flux objects back to their prior `suspend`, in plan order: parents first, children
/// last, so a child reconciles once, with the spec its parent has just applied. Objects in
/// `held_back` stay suspended for now; returns how many change.
pub(super) fn resume_flux(d: &mut Decision, plan: &Plan, observed: &Observed) -> usize {
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
pub(super) fn restore_replicas(d: &mut Decision, plan: &Plan, observed: &Observed) -> usize {
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

/// StatefulSets whose PVC retention the request changed get their recorded `whenScaled`
/// back (idempotent: only where it still differs, e.g. Flux has not re-applied it); returns
/// how many change.
pub(super) fn restore_claim_retention(d: &mut Decision, plan: &Plan, observed: &Observed) -> usize {
    let mut changed = 0;
    for workload in &plan.workloads {
        let Some(recorded) = &workload.claim_retention else {
            continue;
        };
        let now = observed.when_scaled.get(&ObjectKey::workload(workload));
        if now.is_some_and(|now| *now != recorded.when_scaled) {
            d.actions.push(Action::SetClaimRetention {
                workload: workload.clone(),
                when_scaled: recorded.when_scaled.clone(),
            });
            changed += 1;
        }
    }
    changed
}
