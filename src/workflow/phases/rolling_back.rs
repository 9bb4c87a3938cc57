//! RollingBack: an upgrade hands its app to its RollbackRequest (created here) and ends with it: RolledBack, Frozen with a frozen rollback, or back through Resume when the rollback failed.

use super::{Needs, Seen, Step, phase_name};
use crate::api::{Phase, PhaseOutcome};
use crate::workflow::actions::{Action, Decision};
use crate::workflow::machine::{finish, rollback_name};
use crate::workflow::transitions::enter;
use std::time::Duration;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    child_rollback: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (request, plan, observed) = (seen.request, seen.plan, seen.observed);
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
        Some(Phase::Frozen) => {
            // The rollback stopped after replacing volumes and holds the app for a person:
            // so does its upgrade (a person's later rollback or deletion ends both).
            let why = child.failure.clone().unwrap_or_default();
            d.actions.push(Action::Finish(finish(
                Some(plan),
                Some(Phase::Frozen),
                false,
                false,
            )));
            enter(
                d,
                Phase::Frozen,
                PhaseOutcome::Failed,
                &format!(
                    "rollback {name} is FROZEN after replacing volumes ({why}); see its status.restores"
                ),
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
