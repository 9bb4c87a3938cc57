//! The `ManagedApp` kind: one application under Fluxgate's care — where it is deployed from,
//! where its versions live in Git, and how to protect, verify and roll back its upgrades.

use super::common::{
    DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, GoDuration, LocalObjectReference, VERSION_MAX_LENGTH,
    relative_path_rule,
};
use super::conditions::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The app under Fluxgate's care: the Flux object that deploys it, where its versions live
/// in Git, and how its upgrades are protected, verified and rolled back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fluxgate.dev",
    version = "v1alpha1",
    kind = "ManagedApp",
    doc = "ManagedApp puts one Flux-deployed application under Fluxgate's care: its upgrades are guarded by volume snapshots and health checks, and its rollbacks restore data and revert Git together.",
    namespaced,
    status = "ManagedAppStatus",
    shortname = "ma",
    category = "fluxgate",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source.name","description":"The Flux object that deploys the app"}"#,
    printcolumn = r#"{"name":"Current","type":"string","jsonPath":".status.current","description":"Versions in Git now"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.available","description":"Update offered by Renovate"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Protected","type":"string","jsonPath":".status.conditions[?(@.type==\"Protected\")].status","description":"Whether an upgrade snapshots every volume of the app"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAppSpec {
    /// The Flux object that deploys the app (a HelmRelease or a Kustomization).
    pub source: SourceReference,

    /// Extra Flux objects to suspend during an operation, in addition to the ones Fluxgate
    /// finds itself (the parents of `source`, found through the
    /// `kustomize.toolkit.fluxcd.io/name|namespace` labels and walked to the root; a root
    /// that applies its own manifest, as `flux bootstrap`'s does, names itself there). An
    /// app is refused when the Git manifest of one of these objects sets `spec.suspend`:
    /// the Kustomization applying it would put it back during the operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub suspend: Vec<FluxObjectReference>,

    /// Where the app's versions live in Git.
    pub git: GitLocation,

    /// The version fields Fluxgate manages. Empty means the default for the source kind:
    /// for a HelmRelease, one entry `chart` at `.spec.chart.spec.version` of that
    /// HelmRelease in `git.file` (or the `.spec.ref.tag` of the OCIRepository its
    /// `spec.chartRef` names, found in `git.file` or a sibling file). An OCIRepository's
    /// tag with a `spec.ref.digest` beside it holds `tag@digest`, and both change together;
    /// one that follows `spec.ref.semver` cannot be upgraded by Fluxgate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))").message("versions[].name must be unique"))]
    pub versions: Vec<VersionField>,

    /// Volume snapshots taken before an upgrade changes anything.
    #[serde(default)]
    pub snapshots: SnapshotPolicy,

    /// How Fluxgate decides that the app is healthy after an upgrade.
    #[serde(default)]
    pub health: HealthPolicy,

    /// What happens when an upgrade fails after its commit.
    #[serde(default)]
    pub rollback: RollbackPolicy,

    /// Which updates Fluxgate may apply on its own, and when.
    #[serde(default)]
    pub update_policy: UpdatePolicy,

    /// Per-phase timeout overrides; every timeout is measured from the phase's persisted
    /// start time, so it fires even across operator restarts.
    #[serde(default)]
    pub timeouts: PhaseTimeouts,
}

impl ManagedApp {
    /// The namespace of the Flux object that deploys the app (the app's own by default).
    pub fn source_namespace(&self) -> String {
        self.spec
            .source
            .namespace
            .clone()
            .or_else(|| self.metadata.namespace.clone())
            .unwrap_or_default()
    }
}

/// The kinds of Flux object that can deploy an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SourceKind {
    /// A `helm.toolkit.fluxcd.io` HelmRelease.
    HelmRelease,
    /// A `kustomize.toolkit.fluxcd.io` Kustomization.
    Kustomization,
}

/// The Flux object that deploys the app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SourceReference {
    /// Kind of the Flux object: HelmRelease or Kustomization.
    pub kind: SourceKind,
    /// Name of the Flux object.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Namespace of the Flux object; defaults to the ManagedApp's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// The kinds of Flux object Fluxgate can suspend and resume.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum FluxObjectKind {
    /// A `kustomize.toolkit.fluxcd.io` Kustomization.
    Kustomization,
    /// A `helm.toolkit.fluxcd.io` HelmRelease.
    HelmRelease,
    /// A `source.toolkit.fluxcd.io` GitRepository.
    GitRepository,
    /// A `source.toolkit.fluxcd.io` OCIRepository.
    #[serde(rename = "OCIRepository")]
    OciRepository,
    /// A `source.toolkit.fluxcd.io` HelmRepository.
    HelmRepository,
}

/// A Flux object by kind, name and namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FluxObjectReference {
    /// Kind of the Flux object.
    pub kind: FluxObjectKind,
    /// Name of the Flux object.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Namespace of the Flux object; defaults to the ManagedApp's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// Where the app's versions live in Git. The repository defaults to the GitRepository that
/// the deploying Kustomization's `spec.sourceRef` names (its URL and the branch it follows:
/// `spec.ref.branch`, or `spec.ref.name: refs/heads/<branch>`). An app whose GitRepository
/// follows a tag, a semver range or a commit is refused: Flux would never deploy a commit
/// to a branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitLocation {
    /// Repository-relative path of the file holding the versions, e.g.
    /// `apps/db/helmrelease.yaml`. No leading `/`, no `..`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = relative_path_rule())]
    pub file: String,
    /// Clone URL of the repository (`https://…`, `ssh://…` or `git@host:path`); overrides the
    /// GitRepository's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https?://|ssh://|file://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)')").message("must be a git URL: https://…, ssh://…, file://… or user@host:path"))]
    pub url: Option<String>,
    /// Branch to commit to; overrides the branch the GitRepository follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        pattern(r"^[^\s~^:?*\[\\-][^\s~^:?*\[\\]*$")
    )]
    pub branch: Option<String>,
    /// Secret (same namespace) with push credentials, in Flux's git secret format:
    /// `username` and `password` (a token) for HTTPS, or `identity` (an SSH private key) and
    /// `known_hosts` for SSH. Defaults to the GitRepository's `secretRef` — which, as
    /// `flux bootstrap` makes it, is a read-only deploy key: then set this to credentials
    /// that may push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Signs Fluxgate's commits, as a GitRepository with `spec.verify` requires (it refuses
    /// unsigned commits, which stalls the whole repository). Required when the GitRepository
    /// behind the app verifies HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<CommitSigning>,
}

/// The key Fluxgate signs its commits with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitSigning {
    /// Secret (same namespace) holding an SSH private key (Ed25519 or ECDSA) in `identity`,
    /// with its passphrase in `password` if it has one — the keys image-automation-controller
    /// reads an SSH signing key from. Commits are signed as `git commit -S` with
    /// `gpg.format=ssh` signs them; source-controller v1.9 and later verifies them against
    /// the `.sshpub` entries of the GitRepository's `spec.verify.secretRef` Secret.
    pub secret_ref: LocalObjectReference,
}

/// How a version field stores its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// The field holds the version itself, e.g. `1.2.3` or `1.2.3@sha256:…`.
    #[default]
    Plain,
    /// The field holds a full image reference (`registry/name:tag[@digest]`); only the tag
    /// (and digest) is replaced.
    Image,
}

/// One version field Fluxgate manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionField {
    /// Name of this version, used as the key in `target`, `currentVersions` and
    /// `failedVersions` (e.g. `chart`, `image`).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// YAML path of the field: `.spec.chart.spec.version`, `.spec.values.image.tag`,
    /// `.spec.template.spec.containers[0].image`, `.metadata.annotations['a.b/c']`,
    /// `.images[name=app].newTag`.
    #[schemars(length(min = 2, max = 512), pattern(r"^[.\[]"))]
    pub path: String,
    /// File holding the field, repository-relative; defaults to `git.file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = relative_path_rule())]
    pub file: Option<String>,
    /// Document of a multi-document file holding the field: `Kind/name` (e.g.
    /// `HelmRelease/db`) or a zero-based index. Defaults to the only document, or for the
    /// default chart field the source HelmRelease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 317),
        pattern(r"^([0-9]+|[A-Za-z][A-Za-z0-9]*/[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")
    )]
    pub document: Option<String>,
    /// `plain` (default): the field is the version. `image`: the field is an image
    /// reference and only its tag (and digest) changes.
    #[serde(default)]
    pub format: ValueFormat,
}

fn default_true() -> bool {
    true
}

/// Volume snapshots taken before an upgrade changes anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPolicy {
    /// Take a CSI VolumeSnapshot of every included PVC before committing an upgrade.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// VolumeSnapshotClass to use; defaults to the class marked default for each PVC's CSI
    /// driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub class_name: Option<String>,
    /// Only these PVCs (by name) are snapshotted; empty means every PVC the app uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))
    )]
    pub include: Vec<String>,
    /// These PVCs (by name) are never snapshotted nor restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))
    )]
    pub exclude: Vec<String>,
    /// How many of Fluxgate's snapshots to keep per PVC.
    #[serde(default)]
    pub retention: SnapshotRetention,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            enabled: true,
            class_name: None,
            include: Vec::new(),
            exclude: Vec::new(),
            retention: SnapshotRetention::default(),
        }
    }
}

fn default_max_count() -> u32 {
    3
}

/// Which of Fluxgate's snapshots are kept after a successful upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRetention {
    /// Newest snapshots kept per PVC; older ones are deleted.
    #[serde(default = "default_max_count")]
    // schemars says `uint32`, a format the API server does not know and warns about on
    // every install ("unrecognized format"); the range already rules out negatives.
    #[schemars(range(min = 1, max = 100), extend("format" = "int32"))]
    pub max_count: u32,
    /// Snapshots older than this are deleted (the newest one is always kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<GoDuration>,
}

impl Default for SnapshotRetention {
    fn default() -> Self {
        SnapshotRetention {
            max_count: default_max_count(),
            max_age: None,
        }
    }
}

fn default_health_timeout() -> GoDuration {
    "5m".into()
}

fn default_stabilization() -> GoDuration {
    "30s".into()
}

/// How Fluxgate decides that the app is healthy after an upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthPolicy {
    /// How long the app may take to become healthy (the Verify phase's timeout).
    #[serde(default = "default_health_timeout")]
    pub timeout: GoDuration,
    /// How long healthy must hold before the upgrade counts as a success.
    #[serde(default = "default_stabilization")]
    pub stabilization: GoDuration,
    /// Extra conditions on other objects that must hold too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub checks: Vec<HealthCheck>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            timeout: default_health_timeout(),
            stabilization: default_stabilization(),
            checks: Vec::new(),
        }
    }
}

fn default_condition_type() -> String {
    "Ready".into()
}

fn default_condition_status() -> ConditionStatus {
    ConditionStatus::True
}

/// A condition on another object that must hold for the app to be healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// API version of the object, e.g. `apps/v1` or `cert-manager.io/v1`.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$")
    )]
    pub api_version: String,
    /// Kind of the object, e.g. `Certificate`.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Z][A-Za-z0-9]*$"))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Namespace of the object; defaults to the ManagedApp's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
    /// Condition type that must be present.
    #[serde(default = "default_condition_type")]
    #[schemars(length(min = 1, max = 316))]
    pub condition: String,
    /// Status the condition must have.
    #[serde(default = "default_condition_status")]
    pub status: ConditionStatus,
}

/// The status of a Kubernetes condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// What happens when an upgrade fails after its commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnFailure {
    /// Snapshot the failed state, then create a RollbackRequest that restores the volumes
    /// and reverts Git.
    #[default]
    Rollback,
    /// Leave everything as it is for a person, Flux suspended, and report it loudly.
    Freeze,
    /// Resume Flux at the new version, restore replicas and report the failure; a person may
    /// create a RollbackRequest later.
    Resume,
}

/// What happens when an upgrade fails after its commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// `Rollback` (default), `Freeze` or `Resume`.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// Which updates Fluxgate applies on its own.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AutoUpdate {
    /// Never upgrade automatically; updates are only shown.
    #[default]
    None,
    /// Apply patch updates automatically.
    Patch,
    /// Apply patch and minor updates automatically.
    Minor,
    /// Apply every update automatically, major ones included.
    Major,
}

/// Which updates Fluxgate may apply on its own, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicy {
    /// Highest update type applied automatically: `none` (default), `patch`, `minor`,
    /// `major`.
    #[serde(default)]
    pub auto: AutoUpdate,
    /// An update is applied automatically only once its release is at least this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_release_age: Option<GoDuration>,
    /// Automatic upgrades start only inside this maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<MaintenanceWindow>,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// A recurring maintenance window: it opens at each `schedule` time and stays open for
/// `duration`. A running upgrade always finishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Cron schedule (five fields: minute hour day-of-month month day-of-week), e.g.
    /// `0 3 * * 6` for Saturdays at 03:00.
    #[schemars(length(min = 9, max = 128), pattern(r"^\S+( +\S+){4}$"))]
    pub schedule: String,
    /// How long the window stays open after each start.
    pub duration: GoDuration,
    /// IANA time zone of `schedule`, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z][A-Za-z0-9_+/-]*$"))]
    pub timezone: String,
}

/// Per-phase timeout overrides. Verify's timeout is `health.timeout`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTimeouts {
    /// Suspending Flux objects (default 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<GoDuration>,
    /// Scaling workloads down until no pod mounts a volume (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<GoDuration>,
    /// Snapshots becoming ready to use (default 30m); also the safety snapshot of a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<GoDuration>,
    /// Committing and pushing to Git (default 2m); also a rollback's revert commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<GoDuration>,
    /// Flux applying the new commit (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<GoDuration>,
    /// Restoring volumes from snapshots in a rollback (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<GoDuration>,
}

/// What Fluxgate knows about the app now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAppStatus {
    /// Versions in Git now (the source of truth), by version name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub current_versions: BTreeMap<String, String>,
    /// `currentVersions` in one line, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The update Renovate offers, by version name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub available_update: BTreeMap<String, AvailableUpdate>,
    /// `availableUpdate` in one line, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
    /// Versions that were rolled back: never proposed or applied automatically again until a
    /// later upgrade succeeds past them or an UpgradeRequest targets them with `force`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name", "version"]))]
    pub failed_versions: Vec<FailedVersion>,
    /// The request holding the app's lock; other requests wait in phase `Queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_operation: Option<OperationReference>,
    /// The last finished operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<LastOperation>,
    /// `Ready` (the app is healthy) and `UpdateAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What an upgrade of the app would protect now, kept current while no request runs:
    /// the volumes it would snapshot, the workloads it would stop, and what it cannot
    /// protect and why. The `Protected` condition sums it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Protection>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What an upgrade would protect, found as an upgrade's Admit finds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Protection {
    /// The volumes an upgrade snapshots first, each with its VolumeSnapshotClass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshotted: Vec<SnapshottedVolume>,
    /// The workloads an upgrade stops (scales to zero) while it snapshots, as `Kind
    /// namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
    /// What an upgrade cannot protect, or changes for the operation, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unprotected: Vec<String>,
}

/// A volume an upgrade snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshottedVolume {
    /// The PersistentVolumeClaim, `namespace/name`.
    pub pvc: String,
    /// The VolumeSnapshotClass its snapshot is taken with.
    pub snapshot_class: String,
    /// That class's `deletionPolicy`: `Delete` (the cut goes with the VolumeSnapshot) or
    /// `Retain`.
    pub deletion_policy: String,
}

/// How big a step an update is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UpdateType {
    /// Same major and minor version.
    Patch,
    /// Same major version.
    Minor,
    /// A new major version.
    Major,
    /// The same version at a new digest (the field pins one).
    Digest,
    /// A range or floating tag replaced by the exact version it resolves to.
    Pin,
    /// Versions that are not semver.
    Other,
}

impl UpdateType {
    /// The lowercase name used in the API (`patch`, `minor`, `major`, `digest`, `pin`,
    /// `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateType::Patch => "patch",
            UpdateType::Minor => "minor",
            UpdateType::Major => "major",
            UpdateType::Digest => "digest",
            UpdateType::Pin => "pin",
            UpdateType::Other => "other",
        }
    }
}

impl std::fmt::Display for UpdateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An update offered for one version field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AvailableUpdate {
    /// The version in Git the update starts from.
    #[schemars(length(max = VERSION_MAX_LENGTH))]
    pub current: String,
    /// The offered version (with `@digest` when the field pins one).
    #[schemars(length(max = VERSION_MAX_LENGTH))]
    pub version: String,
    /// How big a step the update is.
    pub update_type: UpdateType,
    /// When the new version was released, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,
    /// Where the offer came from, e.g. `renovate flux apps/db/helmrelease.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub source: Option<String>,
    /// Every version offered for this field, highest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub candidates: Vec<String>,
}

/// A version that was rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedVersion {
    /// Version name (the key in `versions`).
    pub name: String,
    /// The version that failed.
    pub version: String,
    /// The UpgradeRequest that tried it.
    pub upgrade_request: String,
    /// When it was rolled back.
    pub failed_at: Time,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The kinds of Fluxgate request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OperationKind {
    /// An UpgradeRequest.
    UpgradeRequest,
    /// A RollbackRequest.
    RollbackRequest,
}

/// The request holding an app's lock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationReference {
    /// Kind of the request.
    pub kind: OperationKind,
    /// Name of the request (same namespace).
    pub name: String,
    /// UID of the request, so a deleted and recreated request does not inherit the lock.
    pub uid: String,
    /// When the request took the lock.
    pub since: Time,
}

/// The outcome of the last finished operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastOperation {
    /// Kind of the request.
    pub kind: OperationKind,
    /// Name of the request.
    pub name: String,
    /// Its final phase: `Succeeded`, `Failed`, `RolledBack` or `Frozen`.
    pub result: String,
    /// Versions before the operation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub from: BTreeMap<String, String>,
    /// Versions the operation moved to (or tried to).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, String>,
    /// When it finished.
    pub completed_at: Time,
}
