//! Quiesce: the app's workloads scaled to zero, and no pod left holding its volumes (a DaemonSet's cannot be stopped).

use super::{Needs, Seen, Step};
use crate::api::{PhaseOutcome, RETAIN_CLAIMS};
use crate::cluster::workloads::PodOwner;
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::{ObjectKey, Problem};

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    flux_state: true,
    mounts: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (plan, observed) = (seen.plan, seen.observed);
    let mut retaining = Vec::new();
    for workload in &plan.workloads {
        let key = ObjectKey::workload(workload);
        // A StatefulSet that deletes its PVCs on scale-down keeps them for the operation:
        // it is scaled down only once it is seen to retain them (the plan, persisted at
        // Admit, says what to put back).
        if workload.claim_retention.is_some()
            && let Some(when_scaled) = observed.when_scaled.get(&key)
            && when_scaled != RETAIN_CLAIMS
        {
            d.actions.push(Action::SetClaimRetention {
                workload: workload.clone(),
                when_scaled: RETAIN_CLAIMS.to_owned(),
            });
            retaining.push(format!("{key}"));
            continue;
        }
        if observed.replicas.get(&key).is_some_and(|r| *r != 0) {
            d.actions.push(Action::Scale {
                workload: workload.clone(),
                replicas: 0,
            });
        }
    }
    if !retaining.is_empty() {
        return Step::Wait(format!(
            "setting persistentVolumeClaimRetentionPolicy.whenScaled to Retain on {} before scaling down, so no PVC is deleted",
            retaining.join(", ")
        ));
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
