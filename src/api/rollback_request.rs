//! The `RollbackRequest` kind: undo one upgrade, restoring the volumes and reverting Git.

use super::common::DNS_SUBDOMAIN_PATTERN;
use super::request_status::RequestStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// What to undo: Fluxgate restores the app's volumes from
/// the upgrade's snapshots and commits the previous versions back to Git, then verifies the
/// app's health. The spec cannot change after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fluxgate.dev",
    version = "v1alpha1",
    kind = "RollbackRequest",
    doc = "RollbackRequest undoes one UpgradeRequest as a unit: volumes restored from its snapshots and the previous versions committed back to Git.",
    namespaced,
    status = "RequestStatus",
    shortname = "rr",
    category = "fluxgate",
    printcolumn = r#"{"name":"Upgrade","type":"string","jsonPath":".spec.upgradeRequest"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete this RollbackRequest and create a new one"))]
pub struct RollbackRequestSpec {
    /// Name of the UpgradeRequest to undo, in the same namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub upgrade_request: String,
    /// Snapshot the failed state before overwriting it, so even that is kept.
    #[serde(default = "default_true")]
    pub safety_snapshot: bool,
    /// Check everything and run a real suspend → quiesce → scale back → resume cycle, but
    /// never restore, commit or snapshot; everything is put back.
    #[serde(default)]
    pub dry_run: bool,
    /// Roll back even when the upgrade is no longer the app's last change: Git holds other
    /// versions than the upgrade's target, or a later upgrade changed the app since. The
    /// volumes then go back to their state before this upgrade (everything written since is
    /// overwritten; the safety snapshot keeps it) and Git goes back to this upgrade's
    /// previous versions, from whatever it holds. Without it such a rollback is refused,
    /// saying what it would do.
    #[serde(default)]
    pub force: bool,
}
