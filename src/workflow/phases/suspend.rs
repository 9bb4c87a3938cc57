//! Suspend: every Flux object of the plan that was not already suspended is suspended, parents first; the phase ends once helm-controller has seen it.

use super::{Needs, Seen, Step};
use crate::api::PhaseOutcome;
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::{ObjectKey, Problem};

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    flux_state: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (plan, observed) = (seen.plan, seen.observed);
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
