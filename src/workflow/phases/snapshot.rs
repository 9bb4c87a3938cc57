//! Snapshot and SafetySnapshot: one VolumeSnapshot per planned volume, named by the request, until every one is ready to use.

use super::{Needs, Seen, Step};
use crate::api::{PhaseOutcome, SnapshotRecord};
use crate::cluster::snapshots::snapshot_name;
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::ObjectKey;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    snapshots: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (request, plan, observed) = (seen.request, seen.plan, seen.observed);
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
            snapshot_handle: state.and_then(|s| s.handle.clone()),
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
