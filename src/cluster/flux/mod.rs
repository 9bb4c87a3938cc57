//! Flux objects as Fluxgate sees them: minimal typed views of GitRepository, Kustomization,
//! HelmRelease and OCIRepository (the fields we read, everything else kept in `rest`), and
//! the pure rules for reading their progress.

pub mod applied;
pub mod ops;
pub mod progress;
pub mod verification;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Label Flux's kustomize-controller puts on every object it applies: the name of the
/// Kustomization that applied it.
pub const KUSTOMIZE_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Label Flux's kustomize-controller puts on every object it applies: that
/// Kustomization's namespace.
pub const KUSTOMIZE_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Annotation that asks a Flux controller to reconcile now; its value changes each time.
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// A reference to a Flux source (`sourceRef`, `chartRef`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceSourceReference {
    /// Kind of the source, e.g. `GitRepository`, `OCIRepository`.
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// Namespace of the source; defaults to the referring object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An artifact a Flux source produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Revision, e.g. `main@sha1:<sha>` for Git. For an OCIRepository source-controller's
    /// `getRevision` writes `<tag>@sha256:<digest>` for a tag (or a semver range resolved
    /// to a tag) and just `sha256:<digest>` for a `spec.ref.digest` ref.
    #[serde(default)]
    pub revision: String,
    /// Everything else Flux reports.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Status fields shared by Flux sources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The artifact the source produced last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Conditions (`Ready`, `Reconciling`, `Stalled`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last `requestedAt` annotation value the controller handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Everything else Flux reports.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The Git reference a GitRepository follows (`spec.ref`); which field wins is
/// [`ops::FollowedRef::of`]'s to say.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GitRepositoryRef {
    /// Branch to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag to check out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Semver range of tags, the newest match checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A full reference name, e.g. `refs/heads/main` or `refs/tags/v1.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A commit SHA to check out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A reference to a Secret by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretReference {
    /// Name of the Secret.
    pub name: String,
}

/// The fields of a Flux GitRepository that Fluxgate reads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    namespaced,
    status = "SourceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    /// Clone URL.
    #[serde(default)]
    pub url: String,
    /// Branch, tag or commit to follow.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRepositoryRef>,
    /// Secret with the credentials Flux uses to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Whether reconciliation is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The OCI reference an OCIRepository follows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OciRepositoryRef {
    /// Tag to pull. source-controller's `getArtifactRef` prefers `digest`, then `semver`
    /// (both in `rest`), over it; a digest is never part of the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Everything else (semver, semverFilter, digest).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The fields of a Flux OCIRepository that Fluxgate reads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    namespaced,
    status = "SourceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    /// Repository URL (`oci://…`).
    #[serde(default)]
    pub url: String,
    /// Tag, semver range or digest to follow.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<OciRepositoryRef>,
    /// Whether reconciliation is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One entry of a Flux inventory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// `<namespace>_<name>_<group>_<kind>` (core group empty, namespace empty when
    /// cluster-scoped).
    pub id: String,
    /// API version of the object.
    #[serde(default)]
    pub v: String,
}

/// The objects a Kustomization or HelmRelease applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// The objects.
    #[serde(default)]
    pub entries: Vec<InventoryEntry>,
}

/// The fields of a Flux Kustomization that Fluxgate reads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    namespaced,
    status = "KustomizationStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    /// The source holding the manifests.
    #[serde(default)]
    pub source_ref: CrossNamespaceSourceReference,
    /// Path of the manifests inside the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Namespace every applied object is moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Whether reconciliation is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The status fields of a Kustomization that Fluxgate reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    /// The source revision applied last, e.g. `main@sha1:<sha>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The source revision tried last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// The objects it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Conditions (`Ready`, `Reconciling`, `Stalled`, `Healthy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last `requestedAt` annotation value the controller handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The chart template of a HelmRelease (`spec.chart.spec`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    /// Chart name.
    #[serde(default)]
    pub chart: String,
    /// Chart version or semver range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the chart comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<CrossNamespaceSourceReference>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `spec.chart` of a HelmRelease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HelmChartTemplate {
    /// The chart's spec.
    #[serde(default)]
    pub spec: HelmChartTemplateSpec,
}

/// The fields of a Flux HelmRelease that Fluxgate reads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    namespaced,
    status = "HelmReleaseStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    /// Chart from a HelmRepository/GitRepository/Bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<HelmChartTemplate>,
    /// Chart from an OCIRepository or HelmChart (the common pattern today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<CrossNamespaceSourceReference>,
    /// Helm release name; Flux's default is `[<targetNamespace>-]<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Namespace the release's objects go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Namespace of the Helm release secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_namespace: Option<String>,
    /// Whether reconciliation is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Everything else (values, install/upgrade settings, …).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One release in a HelmRelease's history (newest first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSnapshot {
    /// Helm release name.
    #[serde(default)]
    pub name: String,
    /// Namespace of the release.
    #[serde(default)]
    pub namespace: String,
    /// Helm release revision.
    #[serde(default)]
    pub version: i64,
    /// Chart version installed.
    #[serde(default)]
    pub chart_version: String,
    /// Helm's status of the release (`deployed`, `failed`, `superseded`, …).
    #[serde(default)]
    pub status: String,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The status fields of a HelmRelease that Fluxgate reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation the controller tried last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_generation: Option<i64>,
    /// The chart version tried last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// `install`, `upgrade`, … — what the controller did last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_release_action: Option<String>,
    /// Releases, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HelmReleaseSnapshot>,
    /// Namespace of the Helm release secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_namespace: Option<String>,
    /// The objects the release applied (recent Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Failed install attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_failures: Option<i64>,
    /// Failed upgrade attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_failures: Option<i64>,
    /// Conditions (`Ready`, `Released`, `Remediated`, `TestSuccess`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last `requestedAt` annotation value the controller handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}
