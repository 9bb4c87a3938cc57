//! The `UpgradeRequest` kind: one upgrade of a ManagedApp to new versions.

use super::common::{DNS_SUBDOMAIN_PATTERN, VERSION_MAX_LENGTH, VERSION_PATTERN};
use super::request_status::RequestStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to upgrade: Fluxgate suspends Flux, quiesces the app,
/// snapshots its volumes, commits the new versions to Git and verifies the app's health,
/// rolling back (data and Git) when it fails. The spec cannot change after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fluxgate.dev",
    version = "v1alpha1",
    kind = "UpgradeRequest",
    doc = "UpgradeRequest upgrades one ManagedApp safely: snapshots, a Git commit and health checks as one unit, rolled back (data and Git) when it fails.",
    namespaced,
    status = "RequestStatus",
    shortname = "ur",
    category = "fluxgate",
    printcolumn = r#"{"name":"App","type":"string","jsonPath":".spec.managedApp"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.target"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec is immutable: delete this UpgradeRequest and create a new one"),
    validation = Rule::new("!(has(self.target) && has(self.version))").message("set either target (a map of version name to version) or version (for single-version apps), not both")
)]
pub struct UpgradeRequestSpec {
    /// Name of the ManagedApp to upgrade, in the same namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub managed_app: String,
    /// New versions by version name (the names in the ManagedApp's `versions`, e.g.
    /// `chart`). Omit both `target` and `version` to apply the app's `availableUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "minProperties" = 1,
        "maxProperties" = 16,
        "additionalProperties" = {"type": "string", "minLength": 1, "maxLength": VERSION_MAX_LENGTH, "pattern": VERSION_PATTERN}
    ))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 63 && k.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("target keys must be version names (DNS labels such as chart or image)"))]
    pub target: Option<BTreeMap<String, String>>,
    /// New version of a single-version app (shorthand for `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = VERSION_MAX_LENGTH), pattern(VERSION_PATTERN))]
    pub version: Option<String>,
    /// Upgrade without snapshotting the volumes first (a rollback then cannot restore data).
    #[serde(default)]
    pub skip_snapshot: bool,
    /// Check everything and run a real suspend → quiesce → scale back → resume cycle, but
    /// never commit or snapshot; everything is put back.
    #[serde(default)]
    pub dry_run: bool,
    /// Allow a target listed in the ManagedApp's `failedVersions`.
    #[serde(default)]
    pub force: bool,
}
