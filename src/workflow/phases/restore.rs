//! Restore: one volume at a time, each PVC whose snapshot is still fit to restore from is deleted and recreated from it; a snapshot that is not stops the rollback before its PVC is touched.

use super::{Needs, Seen, Step};
use crate::api::{
    Phase, PhaseOutcome, Plan, PlannedVolume, RequestStatus, RestoreRecord, RestoreState,
};
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::{ClaimState, ObjectKey, Observed, Problem};
use std::collections::BTreeMap;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    claims: true,
    ..Needs::NOTHING
};

/// The reason a rollback stops when a snapshot it restores from cannot be used.
pub const SNAPSHOT_UNUSABLE: &str = "SnapshotUnusable";

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (plan, observed) = (seen.plan, seen.observed);
    d.status.restores = records(plan, &d.status, observed);
    // Every snapshot still needed must be fit, or nothing more is touched: checked before
    // the first PVC is deleted, and again before each next one (and by the delete itself).
    let unusable: Vec<String> = d
        .status
        .restores
        .iter()
        .filter(|r| r.state != RestoreState::Restored)
        .filter_map(|r| r.problem.clone())
        .collect();
    if !unusable.is_empty() {
        return Step::Fail(Problem::terminal(SNAPSHOT_UNUSABLE, unusable.join("; ")));
    }
    let mut waiting = Vec::new();
    // One volume in flight at a time: the next PVC is deleted only once the one before is
    // back, so a snapshot that fails meanwhile costs at most the volume being restored.
    for volume in restored_volumes(plan) {
        let Some(snapshot) = volume.restore_from.as_deref() else {
            continue;
        };
        match observed.claims.get(&ObjectKey::claim(volume)) {
            None => {
                d.actions.push(Action::RestoreClaim {
                    volume: volume.clone(),
                    snapshot: snapshot.to_owned(),
                });
                return Step::Wait(format!("{}: recreating from {snapshot}", volume.name));
            }
            Some(claim) if claim.restored_from.as_deref() == Some(snapshot) => {
                if !claim.bound && !claim.waits_for_first_consumer {
                    waiting.push(format!("{}: waiting to bind", volume.name));
                }
            }
            Some(claim) if claim.terminating => {
                return Step::Wait(format!("{}: waiting for the old PVC to go", volume.name));
            }
            Some(claim) => {
                // The data the PVC holds outlives its delete: its volume is kept first.
                let key = ObjectKey::claim(volume);
                if let Some(pv) = claim
                    .volume
                    .as_ref()
                    .filter(|pv| observed.released.get(&key).map(|r| &r.name) != Some(*pv))
                {
                    d.actions.push(Action::RetainVolume {
                        volume: volume.clone(),
                        persistent_volume: pv.clone(),
                    });
                }
                d.actions.push(Action::DeleteClaim {
                    volume: volume.clone(),
                });
                return Step::Wait(format!(
                    "{}: deleting the old PVC to restore it from {snapshot}",
                    volume.name
                ));
            }
        }
    }
    if waiting.is_empty() {
        let restored = restored_volumes(plan).count();
        Step::Advance(
            format!("{restored} volumes restored"),
            PhaseOutcome::Succeeded,
        )
    } else {
        Step::Wait(waiting.join("; "))
    }
}

/// The volumes whose source snapshot the next Restore step relies on, to be read fresh:
/// before the first PVC is deleted, every one (nothing is destroyed unless all are fit);
/// after that, the next volume's in plan order when its old PVC is about to be deleted or it
/// is about to be recreated; none while a PVC is being deleted (the step only waits).
pub fn sources_needed<'p>(
    plan: &'p Plan,
    claims: &BTreeMap<ObjectKey, ClaimState>,
) -> Vec<&'p PlannedVolume> {
    let claim = |v: &PlannedVolume| claims.get(&ObjectKey::claim(v));
    let restored = |v: &PlannedVolume| {
        claim(v).is_some_and(|c| c.restored_from.is_some() && c.restored_from == v.restore_from)
    };
    let untouched = |v: &PlannedVolume| claim(v).is_some_and(|c| !c.terminating) && !restored(v);
    if restored_volumes(plan).all(untouched) {
        return restored_volumes(plan).collect();
    }
    if restored_volumes(plan).any(|v| claim(v).is_some_and(|c| c.terminating)) {
        return Vec::new();
    }
    restored_volumes(plan)
        .filter(|v| !restored(v))
        .take(1)
        .collect()
}

/// The plan's volumes that a rollback restores (those with a snapshot to restore from).
fn restored_volumes(plan: &Plan) -> impl Iterator<Item = &PlannedVolume> {
    plan.volumes.iter().filter(|v| v.restore_from.is_some())
}

/// Where each volume's restore stands, as observed now (kept as recorded when the claims
/// were not read).
pub fn records(plan: &Plan, status: &RequestStatus, observed: &Observed) -> Vec<RestoreRecord> {
    restored_volumes(plan)
        .map(|volume| {
            let key = ObjectKey::claim(volume);
            let snapshot = volume.restore_from.clone().unwrap_or_default();
            let recorded = status.restores.iter().find(|r| r.pvc == volume.name);
            let state = if observed.claims_read {
                match observed.claims.get(&key) {
                    None => RestoreState::Deleted,
                    Some(c) if c.restored_from.as_deref() == Some(snapshot.as_str()) => {
                        RestoreState::Restored
                    }
                    Some(c) if c.terminating => RestoreState::Deleted,
                    Some(_) => RestoreState::Pending,
                }
            } else {
                recorded.map_or(RestoreState::Pending, |r| r.state)
            };
            // Once restored, its snapshot is no longer needed (nor reported on).
            let problem = match observed.sources.get(&key) {
                _ if state == RestoreState::Restored => None,
                Some(Err(why)) => Some(why.clone()),
                Some(Ok(())) => None,
                None => recorded.and_then(|r| r.problem.clone()),
            };
            RestoreRecord {
                pvc: volume.name.clone(),
                snapshot,
                state,
                safety_snapshot: status
                    .snapshots
                    .iter()
                    .find(|s| s.pvc == volume.name && s.ready_to_use)
                    .map(|s| s.name.clone()),
                problem,
                released_volume: observed
                    .released
                    .get(&key)
                    .cloned()
                    .or_else(|| recorded.and_then(|r| r.released_volume.clone())),
                larger_than_manifest: match observed.claims.get(&key) {
                    Some(c) if state == RestoreState::Restored => c.larger_than_manifest.clone(),
                    _ => recorded.and_then(|r| r.larger_than_manifest.clone()),
                },
            }
        })
        .collect()
}

/// Whether a rollback has replaced any volume (deleted a PVC) by now: from there on a
/// failure must not put the app back to run on missing or partial data.
pub fn volumes_replaced(
    plan: &Plan,
    status: &RequestStatus,
    observed: &Observed,
    phase: Phase,
) -> bool {
    if restored_volumes(plan).next().is_none() {
        return false;
    }
    if matches!(phase, Phase::Revert | Phase::Reconcile | Phase::Verify) {
        return true;
    }
    let recorded = status
        .restores
        .iter()
        .any(|r| r.state != RestoreState::Pending);
    // A delete whose status write a crash lost shows in the claims themselves.
    let seen = phase == Phase::Restore
        && observed.claims_read
        && restored_volumes(plan).any(|v| {
            // (A PVC restored by an earlier rollback carries another snapshot's name.)
            observed
                .claims
                .get(&ObjectKey::claim(v))
                .is_none_or(|c| c.terminating || c.restored_from == v.restore_from)
        });
    recorded || seen
}
