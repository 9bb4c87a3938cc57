//! The running phases, one module each: what the phase needs to see ([`Needs`], which the
//! controller's observer interprets), and one step of it ([`step`]): the actions it emits
//! and whether it waits, advances or fails. Pure; the order of phases, timeouts and the
//! failure policy are the machine's ([`super::machine`]).

mod commit;
mod preflight;
mod quiesce;
mod reconcile;
mod restore;
mod resume;
mod rolling_back;
mod snapshot;
mod suspend;
mod verify;

pub use restore::{SNAPSHOT_UNUSABLE, sources_needed};
pub(super) use restore::{records as restore_records, volumes_replaced};

use super::actions::Decision;
use super::observations::{Observed, Problem};
use super::policy::{AppPolicy, Request, RequestKind};
use crate::api::{Phase, PhaseOutcome, Plan};
use std::time::Duration;

/// What one phase step concluded.
pub(super) enum Step {
    /// Keep waiting; the text says for what.
    Wait(String),
    /// The phase is done.
    Advance(String, PhaseOutcome),
    /// The phase failed.
    Fail(Problem),
    /// The step already moved the request on (to a terminal phase).
    Concluded,
}

/// What a phase step reads.
pub(super) struct Seen<'a> {
    pub request: &'a Request,
    pub app: &'a AppPolicy,
    pub plan: &'a Plan,
    pub observed: &'a Observed,
}

/// What a phase needs observed before it decides; everything else stays unobserved (and
/// unread from the cluster and Git).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `spec.suspend` of the plan's Flux objects (and whether helm-controller has seen
    /// it), and the replicas of its workloads: `flux_suspended`, `flux_unsettled`,
    /// `replicas`.
    pub flux_state: bool,
    /// The pods that still hold the plan's volumes: `mounts`.
    pub mounts: bool,
    /// This request's VolumeSnapshots: `snapshots`.
    pub snapshots: bool,
    /// The PVCs being restored and the snapshots they are restored from, read fresh:
    /// `claims`, `claims_read`, `sources`.
    pub claims: bool,
    /// The request's commit in Git: `commit`.
    pub commit: bool,
    /// Whether Flux applied the commit, and which HelmReleases stay suspended until their
    /// parents did: `flux_progress`, `held_back`.
    pub flux_progress: bool,
    /// The app's health and helm-controller's remediation: `health`, `remediation`,
    /// `retried_failure`.
    pub health: bool,
    /// The RollbackRequest undoing this upgrade: `rollback`.
    pub child_rollback: bool,
    /// The dry run's preflight checks: `preflight`.
    pub preflight: bool,
}

impl Needs {
    /// Nothing observed.
    pub const NOTHING: Needs = Needs {
        flux_state: false,
        mounts: false,
        snapshots: false,
        claims: false,
        commit: false,
        flux_progress: false,
        health: false,
        child_rollback: false,
        preflight: false,
    };
}

/// What a request of `kind` in `phase` needs observed. A Frozen upgrade waits for a person:
/// its Flux objects for putting back if deleted, and a RollbackRequest they may create.
pub fn needs(kind: RequestKind, phase: Phase) -> Needs {
    let needs = match phase {
        Phase::Preflight => preflight::NEEDS,
        Phase::Suspend => suspend::NEEDS,
        Phase::Quiesce => quiesce::NEEDS,
        Phase::Snapshot | Phase::SafetySnapshot => snapshot::NEEDS,
        Phase::Commit | Phase::Revert => commit::NEEDS,
        Phase::Restore => restore::NEEDS,
        Phase::Reconcile => reconcile::NEEDS,
        Phase::Verify => verify::NEEDS,
        Phase::Resume => resume::NEEDS,
        Phase::RollingBack => rolling_back::NEEDS,
        Phase::Frozen => Needs {
            flux_state: true,
            child_rollback: true,
            ..Needs::NOTHING
        },
        Phase::Admit | Phase::Queued | Phase::Succeeded | Phase::Failed | Phase::RolledBack => {
            Needs::NOTHING
        }
    };
    // Only an upgrade has a RollbackRequest of its own.
    Needs {
        child_rollback: needs.child_rollback && kind == RequestKind::Upgrade,
        ..needs
    }
}

/// One step of a running `phase`.
pub(super) fn step(phase: Phase, seen: &Seen, d: &mut Decision) -> Step {
    match phase {
        Phase::Preflight => preflight::step(seen, d),
        Phase::Suspend => suspend::step(seen, d),
        Phase::Quiesce => quiesce::step(seen, d),
        Phase::Snapshot | Phase::SafetySnapshot => snapshot::step(seen, d),
        Phase::Commit | Phase::Revert => commit::step(seen, d),
        Phase::Restore => restore::step(seen, d),
        Phase::Reconcile => reconcile::step(seen, d),
        Phase::Verify => verify::step(seen, d),
        Phase::Resume => resume::step(seen, d),
        Phase::RollingBack => rolling_back::step(seen, d),
        Phase::Admit
        | Phase::Queued
        | Phase::Succeeded
        | Phase::Failed
        | Phase::RolledBack
        | Phase::Frozen => Step::Wait(phase_name(phase)),
    }
}

pub(super) fn phase_name(phase: Phase) -> String {
    format!("{phase:?}")
}

/// Time since `since`; zero when the clock reads earlier (skew between replicas must not
/// fire a timeout early).
pub(super) fn elapsed(now: jiff::Timestamp, since: jiff::Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_reads_only_what_it_decides_on() {
        let upgrade = |phase| needs(RequestKind::Upgrade, phase);
        assert_eq!(
            upgrade(Phase::Quiesce),
            Needs {
                flux_state: true,
                mounts: true,
                ..Needs::NOTHING
            }
        );
        assert_eq!(
            upgrade(Phase::Restore),
            Needs {
                claims: true,
                ..Needs::NOTHING
            }
        );
        assert!(upgrade(Phase::Verify).health && !upgrade(Phase::Verify).flux_state);
        for done in [
            Phase::Succeeded,
            Phase::Failed,
            Phase::RolledBack,
            Phase::Queued,
        ] {
            assert_eq!(upgrade(done), Needs::NOTHING, "{done:?}");
        }
    }

    #[test]
    fn only_an_upgrade_looks_for_a_rollback_of_its_own() {
        assert!(needs(RequestKind::Upgrade, Phase::RollingBack).child_rollback);
        assert!(needs(RequestKind::Upgrade, Phase::Frozen).child_rollback);
        assert!(!needs(RequestKind::Rollback, Phase::Frozen).child_rollback);
        // A frozen request still sees its Flux objects, to put them back when deleted.
        assert!(needs(RequestKind::Rollback, Phase::Frozen).flux_state);
    }
}
