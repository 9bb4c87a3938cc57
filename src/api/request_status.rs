//! The status shared by UpgradeRequest and RollbackRequest: phase, plan, audit trail,
//! snapshots, commit, failure and kstatus conditions.

use super::common::LocalObjectReference;
use super::conditions::Condition;
use super::managed_app::FluxObjectKind;
use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The phases of a request. Upgrade: Queued → Suspend → Quiesce → Snapshot → Commit →
/// Reconcile → Verify → Succeeded. Rollback: Queued → Suspend → Quiesce → SafetySnapshot →
/// Restore → Revert → Reconcile → Verify → Succeeded. Dry-run: Preflight → Suspend →
/// Quiesce → Resume → Succeeded.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Phase {
    /// The first reconcile: references and target validated, the app's lock taken and the
    /// plan persisted (appears in the audit trail and as a failure's phase).
    Admit,
    /// Waiting for the app's lock, held by another request (FIFO by creation time).
    Queued,
    /// Dry-run checks: Git readable and editable, Flux objects patchable, snapshot classes.
    Preflight,
    /// Suspending the Flux objects, parents first.
    Suspend,
    /// Scaling workloads that mount the app's volumes to zero and waiting until no pod
    /// mounts them.
    Quiesce,
    /// Taking a CSI snapshot of every volume and waiting until each is ready to use.
    Snapshot,
    /// Snapshotting the failed state before a rollback overwrites it.
    SafetySnapshot,
    /// Committing the new versions to Git and pushing.
    Commit,
    /// Recreating each volume from its pre-upgrade snapshot.
    Restore,
    /// Committing the previous versions back to Git.
    Revert,
    /// Resuming Flux and waiting until it has applied the commit.
    Reconcile,
    /// Waiting until the app is healthy and stays healthy for the stabilization time.
    Verify,
    /// Putting Flux and the workloads back as they were before the request ends (dry-run,
    /// failure before the commit, `onFailure: Resume`).
    Resume,
    /// The upgrade failed after its commit; its RollbackRequest is running.
    RollingBack,
    /// Finished: the operation did what it was asked.
    Succeeded,
    /// Finished: the operation failed; `failure` says where and why.
    Failed,
    /// Finished: the upgrade failed and was rolled back (data and Git).
    RolledBack,
    /// Stopped for a person: an upgrade that failed after its commit with `onFailure:
    /// Freeze`, or a rollback that failed once it had deleted a PVC (never resumed on
    /// missing or partial data; `restores` says what was replaced and where the data is).
    /// Flux stays suspended and nothing is undone until a person acts.
    Frozen,
}

/// A phase is shown to people by its name, as the API spells it.
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Phase {
    /// Terminal phases never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::RolledBack | Phase::Frozen
        )
    }

    /// Not admitted yet: waiting for the app's lock, or being admitted.
    pub fn is_admitting(self) -> bool {
        matches!(self, Phase::Queued | Phase::Admit)
    }

    /// Over for good. `Frozen` is terminal yet not done: it holds the app (and Flux
    /// suspended) until a person acts.
    pub fn is_done(self) -> bool {
        self.is_terminal() && self != Phase::Frozen
    }

    /// Holds its app: admitted and not done.
    pub fn holds_app(self) -> bool {
        !self.is_admitting() && !self.is_done()
    }

    /// An upgrade in this phase hands its app's lock to its RollbackRequest.
    pub fn hands_over(self) -> bool {
        matches!(self, Phase::RollingBack | Phase::Frozen)
    }
}

/// How a phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PhaseOutcome {
    /// The phase did its work.
    Succeeded,
    /// The phase failed.
    Failed,
    /// The phase ran out of time.
    TimedOut,
    /// The phase had nothing to do (e.g. `skipSnapshot`).
    Skipped,
    /// The request was deleted while the phase ran.
    Cancelled,
}

/// One entry of the audit trail: a phase with its start, end and outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRecord {
    /// The phase.
    pub name: Phase,
    /// When it started.
    pub started_at: Time,
    /// When it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<PhaseOutcome>,
    /// What happened in it, for people: its latest progress and, once it ended, how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Everything a request will touch, decided and persisted before it touches anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Versions in Git when the request was admitted, by version name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub from: BTreeMap<String, String>,
    /// Versions the request moves to, by version name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, String>,
    /// The Git repository, branch and revision the versions were read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<PlannedGit>,
    /// Flux objects to suspend, parents first, with their `suspend` value before the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flux_objects: Vec<PlannedFluxObject>,
    /// Workloads to scale to zero, with the replica counts to restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<PlannedWorkload>,
    /// Volumes to snapshot (upgrade) or restore (rollback), with their full spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<PlannedVolume>,
}

/// Where the versions were read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedGit {
    /// Clone URL (never with credentials).
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Commit the versions were read at.
    pub revision: String,
    /// Files holding the version fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// What the Git server answered at Admit when asked for a push connection with these
    /// credentials (credentials it refuses end the request at Admit); absent when it was not
    /// asked (a dry run asks in Preflight). A push refused later despite `Offered` points at
    /// the server's own rules (branch protection, a hook, a read permission it only checks
    /// at push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_access: Option<PushAccessCheck>,
}

/// What the Git server answered at Admit when asked for a push connection with the app's
/// credentials: `Offered` (it served its receive-pack advertisement; a push refused later
/// points at a permission it checks only at push, branch protection or a hook) or
/// `NotCheckable` (`file://`). Absent when not asked (a dry run asks in Preflight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PushAccessCheck {
    /// The server offered a push connection (its receive-pack advertisement).
    Offered,
    /// The transport has no such check (`file://`).
    NotCheckable,
}

/// A Flux object to suspend and later restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFluxObject {
    /// Kind of the Flux object.
    pub kind: FluxObjectKind,
    /// Name of the Flux object.
    pub name: String,
    /// Namespace of the Flux object.
    pub namespace: String,
    /// Its `spec.suspend` before the request: an object that was already suspended is left
    /// suspended at the end.
    pub was_suspended: bool,
}

/// The kinds of workload Fluxgate scales down.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum WorkloadKind {
    /// An `apps/v1` Deployment.
    Deployment,
    /// An `apps/v1` StatefulSet.
    StatefulSet,
}

/// A workload to scale to zero and later restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedWorkload {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload.
    pub name: String,
    /// Namespace of the workload.
    pub namespace: String,
    /// Replicas before the request, restored at the end.
    pub replicas: i32,
    /// A HorizontalPodAutoscaler that targets this workload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<String>,
    /// A StatefulSet's `persistentVolumeClaimRetentionPolicy` before the request, recorded
    /// when its `whenScaled` is `Delete`: scaling it to zero would delete its PVCs, so the
    /// request sets `whenScaled: Retain` before it scales it down and puts this back at
    /// every end (done, undone, or the request deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_retention: Option<ClaimRetention>,
}

/// The part of a StatefulSet's `persistentVolumeClaimRetentionPolicy` a request changes, as
/// Kubernetes spells it (`whenDeleted` is never touched).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRetention {
    /// What happens to the PVCs of pods removed by a scale-down: `Retain` or `Delete`.
    pub when_scaled: String,
}

/// The value of `whenScaled` (and `whenDeleted`) that keeps the PVCs.
pub const RETAIN_CLAIMS: &str = "Retain";
/// The value of `whenScaled` (and `whenDeleted`) that deletes the PVCs.
pub const DELETE_CLAIMS: &str = "Delete";

/// A volume with everything needed to snapshot it and to recreate it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedVolume {
    /// Name of the PersistentVolumeClaim.
    pub name: String,
    /// Namespace of the PersistentVolumeClaim.
    pub namespace: String,
    /// Its StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Its access modes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// Its requested size.
    pub size: Quantity,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (without those the system manages).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// CSI driver of its volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_driver: Option<String>,
    /// VolumeSnapshotClass to snapshot it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class_name: Option<String>,
    /// For a rollback: the VolumeSnapshot to restore it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// For a rollback: the CSI driver's handle of that snapshot when the upgrade took it
    /// (its VolumeSnapshotContent's `status.snapshotHandle`). A snapshot whose content was
    /// lost is cut again by the snapshot-controller under the same name, from the PVC as it
    /// is then: another handle means other data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from_handle: Option<String>,
}

/// A VolumeSnapshot the request took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// The PersistentVolumeClaim it is a snapshot of.
    pub pvc: String,
    /// Name of the VolumeSnapshot (derived from the request UID and the PVC name).
    pub name: String,
    /// Whether the snapshot is ready to use.
    #[serde(default)]
    pub ready_to_use: bool,
    /// Size a volume restored from it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// The snapshotter's error, if it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The CSI driver's handle of the cut (its VolumeSnapshotContent's
    /// `status.snapshotHandle`), once ready: what a rollback checks the snapshot against, since
    /// one cut again later (its content lost) holds other data under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

/// How far the restore of one volume got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreState {
    /// Not touched: the PVC holds the data it held before the rollback.
    Pending,
    /// Its PVC is being deleted or is gone, not recreated yet: the volume is missing.
    Deleted,
    /// Recreated from its snapshot.
    Restored,
}

/// One volume of a rollback: where its restore stands and where its data is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    /// The PersistentVolumeClaim.
    pub pvc: String,
    /// The upgrade's VolumeSnapshot it is restored from.
    pub snapshot: String,
    /// How far its restore got.
    pub state: RestoreState,
    /// The rollback's safety snapshot of it: the data the PVC held before the rollback
    /// replaced it. Absent when none was taken (`safetySnapshot: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<String>,
    /// Why it cannot be restored, when the snapshot is unusable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The PersistentVolume the PVC was bound to before the rollback replaced it: set to
    /// reclaim policy `Retain` before the PVC was deleted, so the data it held stays on it
    /// (`Released`) until a person cleans it up or binds it again (docs/operations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_volume: Option<ReleasedVolume>,
    /// Set when the restored PVC is larger than its manifest asks for (the snapshot's
    /// restore size is): what that means for Flux's next apply, and the request to put in
    /// Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub larger_than_manifest: Option<String>,
}

/// A PersistentVolume a rollback released: kept with reclaim policy `Retain` and labelled
/// `fluxgate.dev/released-by: <request>`, never deleted by Fluxgate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedVolume {
    /// Name of the PersistentVolume.
    pub name: String,
    /// Its `persistentVolumeReclaimPolicy` before the rollback set it to `Retain`: what to
    /// set it back to once its data is no longer wanted (`Delete` lets the provisioner
    /// delete the volume and its data).
    pub reclaim_policy_before: String,
}

/// What a person reads when a rollback stops after replacing volumes: each volume, what it
/// holds now and where the data it held is.
pub fn restores_report(restores: &[RestoreRecord]) -> String {
    restores
        .iter()
        .map(|r| {
            let kept = match (&r.released_volume, &r.safety_snapshot) {
                (Some(pv), Some(safety)) => format!(
                    "the data it held is on PersistentVolume {} (kept: reclaim policy Retain) and in safety snapshot {safety}",
                    pv.name
                ),
                (Some(pv), None) => format!(
                    "the data it held is on PersistentVolume {} (kept: reclaim policy Retain; no safety snapshot)",
                    pv.name
                ),
                (None, Some(safety)) => format!("the data it held is in safety snapshot {safety}"),
                (None, None) => {
                    "the data it held was not snapshotted (safetySnapshot: false)".to_owned()
                }
            };
            let why = r
                .problem
                .as_deref()
                .map_or(String::new(), |p| format!(": {p}"));
            match r.state {
                RestoreState::Restored => {
                    format!("{} restored from {} ({kept})", r.pvc, r.snapshot)
                }
                RestoreState::Deleted => format!(
                    "{} MISSING: deleted and not recreated from {}{why} ({kept})",
                    r.pvc, r.snapshot
                ),
                RestoreState::Pending => {
                    format!(
                        "{} not restored: it still holds the data it had{why}",
                        r.pvc
                    )
                }
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The PersistentVolumes a rollback released, for people: each with the PVC whose data it
/// holds and its reclaim policy before; empty when none.
pub fn released_report(restores: &[RestoreRecord]) -> String {
    restores
        .iter()
        .filter_map(|r| {
            let pv = r.released_volume.as_ref()?;
            Some(format!(
                "PersistentVolume {} (the data {} held before; reclaim policy was {})",
                pv.name, r.pvc, pv.reclaim_policy_before
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Git commit the request pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    /// Commit SHA.
    pub sha: String,
    /// Commit message (first line).
    pub message: String,
    /// Web URL of the commit, where the host's URL scheme is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The phase that failed.
    pub phase: Phase,
    /// A CamelCase reason, e.g. `Timeout`, `SnapshotFailed`, `HealthCheckFailed`.
    pub reason: String,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// Whether retrying could succeed (a new request, once the cause is fixed).
    #[serde(default)]
    pub retryable: bool,
}

/// The status of an UpgradeRequest or RollbackRequest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// The current phase; absent until the request is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the current phase started; phase timeouts are measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// The target versions in one line, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Everything the request will touch, persisted before it touches anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// The audit trail: one entry per phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseRecord>,
    /// VolumeSnapshots the request took.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotRecord>,
    /// The commit the request pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitRecord>,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// When the app last became healthy during Verify; the request succeeds once health has
    /// held for the ManagedApp's `health.stabilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
    /// The RollbackRequest created for this upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_ref: Option<LocalObjectReference>,
    /// A rollback's volumes: the snapshot each is restored from, how far its restore got
    /// and where the data it held before is kept. What a person reads when a rollback is
    /// `Frozen` after replacing some of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<RestoreRecord>,
    /// kstatus conditions: `Ready` (finished successfully), `Reconciling` (in progress),
    /// `Stalled` (finished unsuccessfully or stuck).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn a_frozen_request_is_terminal_yet_holds_its_app() {
        assert!(Phase::Frozen.is_terminal());
        assert!(!Phase::Frozen.is_done());
        assert!(Phase::Frozen.holds_app());
        assert!(Phase::Frozen.hands_over());
        for done in [Phase::Succeeded, Phase::Failed, Phase::RolledBack] {
            assert!(done.is_done() && !done.holds_app(), "{done:?}");
        }
        for waiting in [Phase::Queued, Phase::Admit] {
            assert!(
                waiting.is_admitting() && !waiting.holds_app(),
                "{waiting:?}"
            );
        }
        for running in [
            Phase::Suspend,
            Phase::Verify,
            Phase::Resume,
            Phase::RollingBack,
        ] {
            assert!(running.holds_app() && !running.is_terminal(), "{running:?}");
        }
    }
}
