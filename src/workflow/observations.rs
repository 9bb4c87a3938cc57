//! What the controller saw this reconcile, in the terms the machine decides on. Objects
//! are keyed by [`ObjectKey`] (kind, namespace, name) so observations never depend on list
//! order and never on how a key is spelled.

use crate::api::{
    CommitRecord, FluxObjectKind, Phase, Plan, PlannedFluxObject, PlannedVolume, PlannedWorkload,
    ReleasedVolume, WorkloadKind,
};
use crate::cluster::flux::progress::Progress;
use crate::cluster::health::HealthReport;
use crate::cluster::workloads::PodMount;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The kinds of planned object an observation can be about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObservedKind {
    Flux(FluxObjectKind),
    Workload(WorkloadKind),
    PersistentVolumeClaim,
}

/// The planned object an observation is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ObservedKind,
    pub namespace: String,
    pub name: String,
}

/// As people read it: `HelmRelease apps/db`.
impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ObservedKind::Flux(kind) => write!(f, "{kind:?}")?,
            ObservedKind::Workload(kind) => write!(f, "{kind:?}")?,
            ObservedKind::PersistentVolumeClaim => write!(f, "PersistentVolumeClaim")?,
        }
        write!(f, " {}/{}", self.namespace, self.name)
    }
}

impl ObjectKey {
    /// A planned Flux object.
    pub fn flux(object: &PlannedFluxObject) -> ObjectKey {
        ObjectKey {
            kind: ObservedKind::Flux(object.kind),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
        }
    }

    /// A planned workload.
    pub fn workload(workload: &PlannedWorkload) -> ObjectKey {
        ObjectKey {
            kind: ObservedKind::Workload(workload.kind),
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        }
    }

    /// A planned volume's claim.
    pub fn claim(volume: &PlannedVolume) -> ObjectKey {
        ObjectKey::claim_named(&volume.namespace, &volume.name)
    }

    /// The claim `namespace/name`.
    pub fn claim_named(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind: ObservedKind::PersistentVolumeClaim,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Something that went wrong, with a CamelCase reason and a message for people.
///
/// Whether it is retryable, and its category, are decided where the error is typed: the
/// `From` conversions below carry each error type's own answer; problems Fluxgate raises
/// itself are [`Problem::terminal`] (category [`REFUSED`]) or [`Problem::retryable`]
/// ([`TRANSIENT`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason, e.g. `FluxObjectNotFound`: for status, Events and people.
    pub reason: String,
    /// What went wrong and what to do.
    pub message: String,
    /// Whether trying again (within the phase's time) can succeed.
    pub retryable: bool,
    /// A static, low-cardinality name for metrics (`git_auth`, `api_conflict`, `refused`, …).
    pub category: &'static str,
}

/// The category of a problem Fluxgate raises itself because the request cannot go on as
/// asked (a failed precondition, an invalid target, a refusal at Admit).
pub const REFUSED: &str = "refused";
/// The category of a problem Fluxgate raises itself that may go away on its own.
pub const TRANSIENT: &str = "transient";

impl Problem {
    /// A problem that retrying will not fix.
    pub fn terminal(reason: &str, message: impl Into<String>) -> Problem {
        Problem {
            reason: reason.to_owned(),
            message: message.into(),
            retryable: false,
            category: REFUSED,
        }
    }

    /// A problem that may go away (API 409/429/5xx, network, a push race).
    pub fn retryable(reason: &str, message: impl Into<String>) -> Problem {
        Problem {
            reason: reason.to_owned(),
            message: message.into(),
            retryable: true,
            category: TRANSIENT,
        }
    }

    /// The same problem under another reason (what it means where it happened), keeping its
    /// category and retryability.
    pub fn with_reason(mut self, reason: &str) -> Problem {
        self.reason = reason.to_owned();
        self
    }
}

impl From<crate::cluster::error::ClusterError> for Problem {
    fn from(error: crate::cluster::error::ClusterError) -> Problem {
        Problem {
            reason: error.reason().to_owned(),
            message: error.to_string(),
            retryable: error.is_retryable(),
            category: error.category(),
        }
    }
}

impl From<crate::git::GitError> for Problem {
    fn from(error: crate::git::GitError) -> Problem {
        Problem {
            reason: "GitError".to_owned(),
            message: error.to_string(),
            retryable: error.is_retryable(),
            category: error.category(),
        }
    }
}

impl From<crate::manifest::fields::FieldError> for Problem {
    fn from(error: crate::manifest::fields::FieldError) -> Problem {
        Problem {
            reason: error.reason().to_owned(),
            message: error.to_string(),
            retryable: false,
            category: error.category(),
        }
    }
}

/// Who holds the app's lock (`ManagedApp.status.activeOperation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// Nobody.
    Free,
    /// This request.
    Ours,
    /// Held by the upgrade this rollback undoes, which lets its rollback run under its lock
    /// (it is rolling back or frozen) and releases it when it ends.
    HandedOver,
    /// Another request, by name.
    HeldBy(String),
}

/// A VolumeSnapshot the request takes, as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotState {
    /// Whether it is ready to use.
    pub ready: bool,
    /// The snapshotter's error, if any.
    pub error: Option<String>,
    /// Its restore size, once known.
    pub restore_size: Option<Quantity>,
    /// The CSI driver's handle of the cut, once ready.
    pub handle: Option<String>,
}

/// A PVC being restored, as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimState {
    /// It is being deleted.
    pub terminating: bool,
    /// The snapshot it was restored from (its `fluxgate.dev/restored-from` annotation).
    pub restored_from: Option<String>,
    /// It is bound to a volume.
    pub bound: bool,
    /// Its StorageClass binds on first consumer, so `Bound` is not to be waited for.
    pub waits_for_first_consumer: bool,
    /// The PersistentVolume it is bound to (`spec.volumeName`), whose data a delete would
    /// release.
    pub volume: Option<String>,
    /// Why a restored claim is larger than its manifest asks for (its
    /// `fluxgate.dev/restored-larger` annotation).
    pub larger_than_manifest: Option<String>,
}

/// The request's commit, looked up in Git by its `Fluxgate-Request-UID` trailer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CommitState {
    /// Not looked up this reconcile (outside Commit/Revert).
    #[default]
    Unknown,
    /// No commit of ours on the branch yet.
    NotFound,
    /// Our commit is on the branch.
    Pushed(CommitRecord),
    /// The branch already holds the target versions without a commit of ours (someone else
    /// pushed them): the head is what Flux must apply.
    AlreadyAtTarget(CommitRecord),
}

/// The child RollbackRequest of an upgrade, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRollback {
    /// Its phase, if admitted.
    pub phase: Option<Phase>,
    /// Its failure message, if it failed.
    pub failure: Option<String>,
}

/// Everything observed in one reconcile. Fields a phase does not need may stay at their
/// defaults.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The time of this reconcile.
    pub now: Timestamp,
    /// Who holds the app's lock.
    pub lock: Option<LockState>,
    /// This request is the oldest one waiting for the app (FIFO by creation).
    pub first_in_queue: bool,
    /// The plan, or why the request cannot be admitted (computed when it may be).
    pub admission: Option<Result<Plan, Problem>>,
    /// Dry-run preflight result: on success, notes for people (empty when none).
    pub preflight: Option<Result<String, Problem>>,
    /// `spec.suspend` of each planned Flux object, by [`ObjectKey`]; absent = not found.
    pub flux_suspended: BTreeMap<ObjectKey, bool>,
    /// HelmReleases of the plan whose helm-controller has not yet seen their latest spec
    /// (`status.observedGeneration < metadata.generation`), by [`ObjectKey`], with the
    /// generations for messages. After a suspend this means an action it was already
    /// running (an upgrade, a retry, a remediation) is still going: helm-controller reads
    /// `spec.suspend` only when that reconcile ends, and the action may still apply the
    /// release's workloads.
    pub flux_unsettled: BTreeMap<ObjectKey, String>,
    /// `spec.replicas` of each planned workload, by [`ObjectKey`]; absent = not found.
    pub replicas: BTreeMap<ObjectKey, i32>,
    /// `persistentVolumeClaimRetentionPolicy.whenScaled` (`Retain` when unset) of each
    /// planned StatefulSet whose policy the plan records, by [`ObjectKey`]; absent = not
    /// found.
    pub when_scaled: BTreeMap<ObjectKey, String>,
    /// Pods that still hold planned volumes.
    pub mounts: Vec<PodMount>,
    /// Snapshots the request takes, by `namespace/pvc`.
    pub snapshots: BTreeMap<ObjectKey, SnapshotState>,
    /// Restored PVCs, by `namespace/pvc`; absent = the PVC does not exist.
    pub claims: BTreeMap<ObjectKey, ClaimState>,
    /// Whether `claims` was read this reconcile (an absent claim then means it is gone).
    pub claims_read: bool,
    /// The PersistentVolumes this request has set to `Retain` before deleting their PVCs,
    /// by the claim they were bound to (read with `claims`, from the volumes' own labels
    /// and annotations, so a status write lost in a crash loses none of them).
    pub released: BTreeMap<ObjectKey, ReleasedVolume>,
    /// The snapshot each volume of a rollback is restored from, read fresh, by
    /// `namespace/pvc`: `Ok` when it can be restored from, else why not (see
    /// [`crate::cluster::snapshots::unusable_for_restore`]).
    pub sources: BTreeMap<ObjectKey, Result<(), String>>,
    /// The request's commit.
    pub commit: CommitState,
    /// Flux objects that must stay suspended a little longer in Reconcile, by
    /// [`ObjectKey`], with what they wait for: a HelmRelease is resumed only once its
    /// parents applied the commit and its chart source serves the target chart, so it never
    /// runs the old chart against restored or snapshotted data.
    pub held_back: BTreeMap<ObjectKey, String>,
    /// Whether Flux has applied the commit (Reconcile).
    pub flux_progress: Option<Progress>,
    /// The app's health (Verify).
    pub health: Option<HealthReport>,
    /// helm-controller remediation of the release (Reconcile, Verify): a failure.
    pub remediation: Option<Problem>,
    /// helm-controller failed our chart and retries it instead of remediating
    /// (`RetryOnFailure`, Verify): not a failure while a retry may succeed, but what a
    /// Verify timeout is reported as.
    pub retried_failure: Option<Problem>,
    /// The upgrade's RollbackRequest (RollingBack, and Frozen: a person's rollback).
    pub rollback: Option<ChildRollback>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::error::ClusterError;
    use crate::git::GitError;

    #[test]
    fn each_problem_keeps_the_category_and_retryability_of_its_error() {
        let auth = Problem::from(GitError::Auth {
            remote: "https://git.example/fleet.git".into(),
            detail: "401".into(),
        });
        assert_eq!(
            (auth.category, auth.retryable, auth.reason.as_str()),
            ("git_auth", false, "GitError")
        );
        let network = Problem::from(GitError::Network {
            remote: "https://git.example/fleet.git".into(),
            branch: "main".into(),
            detail: "connection refused".into(),
        });
        assert_eq!((network.category, network.retryable), ("git_network", true));
        let missing = Problem::from(ClusterError::NotFound {
            object: "Kustomization flux-system/apps".into(),
            hint: String::new(),
        })
        .with_reason("FluxObjectNotFound");
        assert_eq!(
            (missing.category, missing.retryable, missing.reason.as_str()),
            ("object_not_found", false, "FluxObjectNotFound")
        );
        assert_eq!(Problem::terminal("FailedVersion", "x").category, REFUSED);
        assert_eq!(Problem::retryable("Conflict", "x").category, TRANSIENT);
    }
}
