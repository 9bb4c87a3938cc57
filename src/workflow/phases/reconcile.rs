//! Reconcile: Flux resumed (a HelmRelease held back until its parents applied the commit), asked to reconcile now, until it applied our commit; replicas it left at zero restored.

use super::resume::{restore_claim_retention, restore_replicas, resume_flux};
use super::{Needs, Seen, Step};
use crate::api::PhaseOutcome;
use crate::cluster::flux::progress::Progress;
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::Problem;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    flux_state: true,
    flux_progress: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (plan, observed) = (seen.plan, seen.observed);
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
            let replicas = restore_replicas(d, plan, observed);
            let retention = restore_claim_retention(d, plan, observed);
            if replicas + retention > 0 {
                Step::Wait(
                    "Flux applied the commit; restoring replicas it left at zero and PVC retention policies"
                        .into(),
                )
            } else {
                Step::Advance("Flux applied the commit".into(), PhaseOutcome::Succeeded)
            }
        }
    }
}
