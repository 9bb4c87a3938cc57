//! What the machine decides: the new status and the side effects to perform, each
//! idempotent (deterministic names, "set to" rather than "change by"), so that repeating a
//! decision after a crash never duplicates anything.

use crate::api::{Phase, PlannedFluxObject, PlannedVolume, PlannedWorkload, RequestStatus};
use std::collections::BTreeMap;
use std::time::Duration;

/// One side effect.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make this request the holder of the app's lock (optimistic concurrency on the
    /// ManagedApp status).
    TakeLock,
    /// Set a Flux object's `spec.suspend`.
    SetSuspend {
        object: PlannedFluxObject,
        suspend: bool,
    },
    /// Ask Flux to reconcile now: `reconcile.fluxcd.io/requestedAt: <token>` on the
    /// GitRepository, Kustomization(s) and HelmRelease. The token is stable within a phase.
    RequestReconcile { token: String },
    /// Set a workload's replicas.
    Scale {
        workload: PlannedWorkload,
        replicas: i32,
    },
    /// Set a StatefulSet's `persistentVolumeClaimRetentionPolicy.whenScaled` (`Retain` before
    /// it is scaled down, the recorded value when it is put back).
    SetClaimRetention {
        workload: PlannedWorkload,
        when_scaled: String,
    },
    /// Create the VolumeSnapshot of a volume (deterministic name).
    CreateSnapshot { volume: PlannedVolume, name: String },
    /// Commit the versions to Git with the request's trailers and push (re-applied on a
    /// push race; nothing to do when the branch already has them).
    Commit {
        versions: BTreeMap<String, String>,
        subject: String,
    },
    /// Set the PersistentVolume a PVC is bound to to reclaim policy `Retain` and label it
    /// as released by this request (its policy before kept in an annotation), so deleting
    /// the PVC releases the volume and its data instead of destroying them.
    RetainVolume {
        volume: PlannedVolume,
        persistent_volume: String,
    },
    /// Delete a PVC so it can be recreated from its snapshot (`volume.restore_from`), which
    /// is read once more right before: the PVC is left alone unless it can be restored.
    DeleteClaim { volume: PlannedVolume },
    /// Recreate a deleted PVC from a snapshot.
    RestoreClaim {
        volume: PlannedVolume,
        snapshot: String,
    },
    /// Create the upgrade's RollbackRequest (deterministic name, owned by the upgrade).
    CreateRollback { name: String },
    /// Update the ManagedApp at the end of an operation.
    Finish(Finish),
}

/// The ManagedApp bookkeeping at the end of an operation, written at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// Final phase, recorded as `lastOperation.result`; None records nothing (a request
    /// refused at admission never ran).
    pub result: Option<Phase>,
    /// Versions before the operation.
    pub from: BTreeMap<String, String>,
    /// Versions it moved to (or tried to).
    pub to: BTreeMap<String, String>,
    /// Versions now in Git, when the operation changed them for good: failed versions at
    /// or below them are unblocked. (`currentVersions` follows from Git: the ManagedApp
    /// controller reads it once the request's end wakes it.)
    pub current_versions: Option<BTreeMap<String, String>>,
    /// Versions to add to `failedVersions` (a rollback's undone target).
    pub failed_versions: BTreeMap<String, String>,
    /// Release the lock if this request holds it (not for `Frozen`).
    pub release_lock: bool,
}

/// A Kubernetes Event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (failures) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write (written only when it differs from the one read).
    pub status: RequestStatus,
    /// Side effects, in order.
    pub actions: Vec<Action>,
    /// Events to emit.
    pub notes: Vec<Note>,
    /// Reconcile again after this long even without a watch event (timeouts, stabilization,
    /// effects no watch reports such as a push); None = wait for events.
    pub requeue_after: Option<Duration>,
    /// The request may go: remove its finalizer.
    pub remove_finalizer: bool,
}
