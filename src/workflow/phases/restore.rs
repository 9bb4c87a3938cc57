//! Restore: each volume with a snapshot to restore from has its old PVC deleted and is recreated from the snapshot.

use super::{Needs, Seen, Step};
use crate::api::PhaseOutcome;
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::ObjectKey;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    claims: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (plan, observed) = (seen.plan, seen.observed);
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
