//! Talking to the API about Flux objects: reading them, suspending and resuming them
//! (merge patches of `spec.suspend` only), asking them to reconcile now, and walking the
//! chain of parent Kustomizations that must be suspended first.

use super::{KUSTOMIZE_NAME_LABEL, KUSTOMIZE_NAMESPACE_LABEL, REQUESTED_AT_ANNOTATION};
use crate::api::{
    FluxObjectKind, FluxObjectReference, PlannedFluxObject, SourceKind, SourceReference,
};
use crate::cluster::cache::{Cluster, WatchedKind};
use crate::cluster::error::ClusterError;
use crate::cluster::patch_params;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use std::sync::Arc;

/// How deep a chain of parent Kustomizations may be before it is treated as a loop.
const MAX_CHAIN_DEPTH: usize = 16;

/// The API resource of a Flux kind, at the version Fluxgate speaks.
pub fn api_resource(kind: FluxObjectKind) -> ApiResource {
    let (group, version, name) = match kind {
        FluxObjectKind::Kustomization => ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        FluxObjectKind::HelmRelease => ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        FluxObjectKind::GitRepository => ("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        FluxObjectKind::OciRepository => ("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
        FluxObjectKind::HelmRepository => ("source.toolkit.fluxcd.io", "v1", "HelmRepository"),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, name))
}

/// `Kind namespace/name`, for messages.
pub fn describe(kind: FluxObjectKind, namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", api_resource(kind).kind)
}

fn api(cluster: &Cluster, kind: FluxObjectKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(cluster.client().clone(), namespace, &api_resource(kind))
}

/// Lets the next read of a cached Flux kind see the operator's write.
fn remember(cluster: &Cluster, kind: FluxObjectKind, written: &DynamicObject) {
    if let Some(watched) = WatchedKind::of_flux(kind) {
        cluster.wrote(watched, written);
    }
}

/// A Flux object, or None when it does not exist.
pub async fn get(
    cluster: &Cluster,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, ClusterError> {
    cluster
        .get_flux(kind, namespace, name)
        .await
        .map(|found| found.map(Arc::unwrap_or_clone))
        .map_err(|e| ClusterError::api("reading", describe(kind, namespace, name), e))
}

/// A Flux object read as Fluxgate's typed view of its kind, or None when it does not exist.
pub async fn get_typed<T: serde::de::DeserializeOwned>(
    cluster: &Cluster,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> Result<Option<T>, ClusterError> {
    let Some(object) = get(cluster, kind, namespace, name).await? else {
        return Ok(None);
    };
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map(Some)
        .map_err(|e| {
            ClusterError::Invalid(format!(
                "{} is malformed: {e}",
                describe(kind, namespace, name)
            ))
        })
}

/// Whether `spec.suspend` is set on an object.
pub fn is_suspended(object: &DynamicObject) -> bool {
    object.data["spec"]["suspend"].as_bool().unwrap_or(false)
}

/// Sets `spec.suspend` — and nothing else — on a Flux object.
pub async fn set_suspend(
    cluster: &Cluster,
    object: &PlannedFluxObject,
    suspend: bool,
) -> Result<(), ClusterError> {
    let patch = Patch::Merge(json!({"spec": {"suspend": suspend}}));
    let action = if suspend { "suspending" } else { "resuming" };
    api(cluster, object.kind, &object.namespace)
        .patch(&object.name, &patch_params(), &patch)
        .await
        .map(|written| remember(cluster, object.kind, &written))
        .map_err(|e| {
            ClusterError::api(
                action,
                describe(object.kind, &object.namespace, &object.name),
                e,
            )
        })
}

/// Asks a Flux controller to reconcile now by setting `reconcile.fluxcd.io/requestedAt` to
/// `token`; no write when the object already carries that token.
pub async fn request_reconcile(
    cluster: &Cluster,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
    token: &str,
) -> Result<(), ClusterError> {
    let Some(object) = get(cluster, kind, namespace, name).await? else {
        return Err(ClusterError::NotFound {
            object: describe(kind, namespace, name),
            hint: String::new(),
        });
    };
    if object
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .map(String::as_str)
        == Some(token)
    {
        return Ok(());
    }
    let patch =
        Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: token}}}));
    api(cluster, kind, namespace)
        .patch(name, &patch_params(), &patch)
        .await
        .map(|written| remember(cluster, kind, &written))
        .map_err(|e| {
            ClusterError::api(
                "requesting a reconcile of",
                describe(kind, namespace, name),
                e,
            )
        })
}

/// The HelmRepository a HelmRelease's chart template (`spec.chart.spec.sourceRef`) names,
/// as (namespace, name), or None for a `chartRef` or another kind of source.
/// source-controller builds the HelmRelease's HelmChart from that repository's stored
/// index, fetched at the repository's own interval (`buildFromHelmRepository` in
/// source-controller v1.9.6 internal/controller/helmchart_controller.go loads it from the
/// repository's artifact), so a chart published since is "not found" until the index is
/// refreshed.
pub async fn chart_helm_repository(
    cluster: &Cluster,
    release: &PlannedFluxObject,
) -> Result<Option<(String, String)>, ClusterError> {
    let Some(object) = get(cluster, release.kind, &release.namespace, &release.name).await? else {
        return Ok(None);
    };
    let source = &object.data["spec"]["chart"]["spec"]["sourceRef"];
    if source["kind"] != "HelmRepository" {
        return Ok(None);
    }
    let Some(name) = source["name"].as_str().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let namespace = source["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(&release.namespace);
    Ok(Some((namespace.to_owned(), name.to_owned())))
}

/// The Kustomization that applied `object`, from Flux's labels.
fn parent_of(object: &DynamicObject) -> Option<(String, String)> {
    let labels = object.labels();
    let name = labels.get(KUSTOMIZE_NAME_LABEL)?;
    let namespace = labels
        .get(KUSTOMIZE_NAMESPACE_LABEL)
        .cloned()
        .or_else(|| object.namespace())?;
    Some((namespace, name.clone()))
}

/// The Kustomization that applied the object `kind namespace/name` (from its labels), unless
/// that is the object itself. kustomize-controller labels everything it applies with the
/// applying Kustomization (`SetOwnerLabels`, fluxcd/pkg/ssa manager.go, called from
/// kustomize-controller's `reconcile`), so the root Kustomization that `flux bootstrap`
/// makes, which applies its own manifest (`flux-system/gotk-sync.yaml`), names itself: it is
/// the root of the chain, not a loop.
pub fn applier_of(
    object: &DynamicObject,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> Option<(String, String)> {
    parent_of(object).filter(|(parent_namespace, parent_name)| {
        !(kind == FluxObjectKind::Kustomization
            && parent_namespace == namespace
            && parent_name == name)
    })
}

fn source_kind(kind: SourceKind) -> FluxObjectKind {
    match kind {
        SourceKind::HelmRelease => FluxObjectKind::HelmRelease,
        SourceKind::Kustomization => FluxObjectKind::Kustomization,
    }
}

/// The reason a failure of [`suspend_chain`] is reported under: a missing object, a chain
/// of parents that loops or is too deep, or the API's own error.
pub fn chain_error_reason(error: &ClusterError) -> &'static str {
    match error {
        ClusterError::NotFound { .. } => "FluxObjectNotFound",
        ClusterError::Invalid(_) => "FluxParentChainInvalid",
        ClusterError::Api { .. } => error.reason(),
    }
}

/// The Flux objects to suspend for an app, parents first: the chain of Kustomizations that
/// applied the source (walked up through Flux's labels to the root: a Kustomization that is
/// applied by nobody or by itself), the source itself, then the extra objects of
/// `spec.suspend`; each with its current `spec.suspend` as the value to restore. References
/// default to `app_namespace`. A chain that comes back to an object already in it, or is
/// deeper than [`MAX_CHAIN_DEPTH`], is refused (as [`ClusterError::Invalid`]).
pub async fn suspend_chain(
    cluster: &Cluster,
    app_namespace: &str,
    source: &SourceReference,
    extra: &[FluxObjectReference],
) -> Result<Vec<PlannedFluxObject>, ClusterError> {
    let namespace = source
        .namespace
        .clone()
        .unwrap_or_else(|| app_namespace.to_owned());
    let source_id = describe(source_kind(source.kind), &namespace, &source.name);
    let mut chain = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some((source_kind(source.kind), namespace, source.name.clone()));
    while let Some((kind, namespace, name)) = next.take() {
        let id = describe(kind, &namespace, &name);
        if seen.contains(&id) {
            seen.push(id.clone());
            return Err(ClusterError::Invalid(format!(
                "the parents of {source_id} form a loop: {id} is its own ancestor ({}); check the {KUSTOMIZE_NAME_LABEL} and {KUSTOMIZE_NAMESPACE_LABEL} labels",
                seen.join(" → applied by ")
            )));
        }
        if chain.len() >= MAX_CHAIN_DEPTH {
            return Err(ClusterError::Invalid(format!(
                "the parents of {source_id} are deeper than {MAX_CHAIN_DEPTH} Kustomizations (still going at {id}); check the {KUSTOMIZE_NAME_LABEL} labels"
            )));
        }
        seen.push(id.clone());
        let Some(object) = get(cluster, kind, &namespace, &name).await? else {
            let hint = if chain.is_empty() {
                "; check spec.source of the ManagedApp".to_owned()
            } else {
                format!(
                    "; it is named as a parent by the {KUSTOMIZE_NAME_LABEL} label of {}",
                    chain_name(&chain)
                )
            };
            return Err(ClusterError::NotFound { object: id, hint });
        };
        next = applier_of(&object, kind, &namespace, &name)
            .map(|(ns, n)| (FluxObjectKind::Kustomization, ns, n));
        chain.push(PlannedFluxObject {
            kind,
            name,
            namespace,
            was_suspended: is_suspended(&object),
        });
    }
    chain.reverse();
    for reference in extra {
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| app_namespace.to_owned());
        if chain.iter().any(|o| {
            o.kind == reference.kind && o.namespace == namespace && o.name == reference.name
        }) {
            continue;
        }
        let Some(object) = get(cluster, reference.kind, &namespace, &reference.name).await? else {
            return Err(ClusterError::NotFound {
                object: describe(reference.kind, &namespace, &reference.name),
                hint: "; it is listed in spec.suspend of the ManagedApp".into(),
            });
        };
        chain.push(PlannedFluxObject {
            kind: reference.kind,
            name: reference.name.clone(),
            namespace,
            was_suspended: is_suspended(&object),
        });
    }
    Ok(chain)
}

fn chain_name(chain: &[PlannedFluxObject]) -> String {
    chain
        .last()
        .map(|o| describe(o.kind, &o.namespace, &o.name))
        .unwrap_or_default()
}

/// The Git repository an app's versions live in by default: the GitRepository that the
/// deploying Kustomization's `spec.sourceRef` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    /// The GitRepository's namespace and name.
    pub repository: (String, String),
    /// Its clone URL.
    pub url: String,
    /// What it follows; only a branch can take Fluxgate's commits.
    pub follows: FollowedRef,
    /// Its credentials Secret (in the GitRepository's namespace), if any.
    pub secret: Option<String>,
}

impl GitSource {
    /// The branch Flux follows, or why Fluxgate cannot upgrade through this repository.
    pub fn branch(&self) -> Result<&str, String> {
        let (namespace, name) = &self.repository;
        match self
            .follows
            .refusal(&describe(FluxObjectKind::GitRepository, namespace, name))
        {
            Some(why) => Err(why),
            None => Ok(self.follows.branch().unwrap_or_default()),
        }
    }
}

/// What a GitRepository follows, decided from `spec.ref` as source-controller decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowedRef {
    /// A branch: `spec.ref.branch` (default `master`) or `spec.ref.name: refs/heads/<branch>`.
    Branch(String),
    /// One commit, `spec.ref.commit` (with or without a branch beside it).
    Commit(String),
    /// A tag: `spec.ref.tag`, or `spec.ref.name: refs/tags/<tag>` (`field` says which).
    Tag { tag: String, field: &'static str },
    /// The newest tag in a semver range, `spec.ref.semver`.
    SemVer(String),
    /// A `spec.ref.name` that is neither a branch nor a tag (`refs/pull/1/head`, or a short
    /// name that matches no reference).
    OtherName(String),
}

impl FollowedRef {
    /// The reference `spec.ref` selects. source-controller v1.9.6 (`gitCheckout`,
    /// internal/controller/gitrepository_controller.go) hands every field to fluxcd/pkg/git
    /// v0.52.0, whose `Client.clone` (gogit/cluster.go) checks out the commit if set, else
    /// the `name`, else the tag, else the semver range, else the branch (`master` when
    /// empty). (The API docs say semver wins over tag; the code checks the tag first.) A
    /// `name` under `refs/heads/` is cloned as that branch (`cloneRefName`); any other name
    /// is looked up among the remote's references as written, so `main` is not a branch.
    pub fn of(reference: Option<&super::GitRepositoryRef>) -> FollowedRef {
        let set = |field: Option<&String>| field.filter(|v| !v.is_empty()).cloned();
        let Some(reference) = reference else {
            return FollowedRef::Branch("master".into());
        };
        if let Some(commit) = set(reference.commit.as_ref()) {
            return FollowedRef::Commit(commit);
        }
        if let Some(name) = set(reference.name.as_ref()) {
            return match (
                name.strip_prefix("refs/heads/"),
                name.strip_prefix("refs/tags/"),
            ) {
                (Some(branch), _) if !branch.is_empty() => FollowedRef::Branch(branch.to_owned()),
                (_, Some(tag)) if !tag.is_empty() => FollowedRef::Tag {
                    tag: tag.trim_end_matches("^{}").to_owned(),
                    field: "spec.ref.name",
                },
                _ => FollowedRef::OtherName(name),
            };
        }
        if let Some(tag) = set(reference.tag.as_ref()) {
            return FollowedRef::Tag {
                tag,
                field: "spec.ref.tag",
            };
        }
        if let Some(range) = set(reference.semver.as_ref()) {
            return FollowedRef::SemVer(range);
        }
        FollowedRef::Branch(set(reference.branch.as_ref()).unwrap_or_else(|| "master".into()))
    }

    /// The branch, when a branch is what is followed.
    pub fn branch(&self) -> Option<&str> {
        match self {
            FollowedRef::Branch(branch) => Some(branch),
            _ => None,
        }
    }

    /// Why an upgrade through `repository` (`GitRepository ns/name`) following this cannot
    /// work, for a person (None for a branch): Fluxgate commits to a branch, and Flux
    /// deploys only what this reference names.
    pub fn refusal(&self, repository: &str) -> Option<String> {
        let follows = match self {
            FollowedRef::Branch(_) => return None,
            FollowedRef::Commit(commit) => format!(
                "is pinned to commit {commit} (spec.ref.commit, which wins over every other field of spec.ref), so Flux deploys that commit whatever is pushed"
            ),
            FollowedRef::Tag { tag, field } => {
                format!("follows tag {tag} ({field}), so Flux deploys only what that tag points to")
            }
            FollowedRef::SemVer(range) => format!(
                "follows the newest tag in semver range {range} (spec.ref.semver), so Flux deploys only tagged commits"
            ),
            FollowedRef::OtherName(name) => format!(
                "follows reference {name} (spec.ref.name), which is not a branch (refs/heads/<branch>)"
            ),
        };
        Some(format!(
            "{repository} {follows}. Fluxgate upgrades by committing to a branch; it does not move tags or pinned commits, so its commit would never be deployed. To upgrade this app with Fluxgate, make the GitRepository follow a branch (spec.ref.branch, or spec.ref.name: refs/heads/<branch>)"
        ))
    }
}

/// The Kustomization that deploys the app: the source itself when it is one, else the
/// closest Kustomization above it in the chain.
fn deploying_kustomization(chain: &[PlannedFluxObject]) -> Option<&PlannedFluxObject> {
    chain
        .iter()
        .rev()
        .find(|o| o.kind == FluxObjectKind::Kustomization)
}

/// The GitRepository behind the deploying Kustomization of a suspend chain.
pub async fn git_source(
    cluster: &Cluster,
    chain: &[PlannedFluxObject],
) -> Result<GitSource, ClusterError> {
    let Some(deployer) = deploying_kustomization(chain) else {
        return Err(ClusterError::Invalid(
            "no Kustomization deploys this app, so its Git repository is unknown; set spec.git.url and spec.git.branch".into(),
        ));
    };
    kustomization_git_source(cluster, &deployer.namespace, &deployer.name).await
}

/// The GitRepository that Kustomization `namespace/name` applies manifests from.
pub async fn kustomization_git_source(
    cluster: &Cluster,
    kustomization_namespace: &str,
    kustomization_name: &str,
) -> Result<GitSource, ClusterError> {
    let kustomization = get(
        cluster,
        FluxObjectKind::Kustomization,
        kustomization_namespace,
        kustomization_name,
    )
    .await?
    .ok_or_else(|| ClusterError::NotFound {
        object: describe(
            FluxObjectKind::Kustomization,
            kustomization_namespace,
            kustomization_name,
        ),
        hint: String::new(),
    })?;
    let source: super::KustomizationSpec = serde_json::from_value(
        kustomization.data["spec"].clone(),
    )
    .map_err(|e| {
        ClusterError::Invalid(format!(
            "Kustomization {kustomization_namespace}/{kustomization_name} has a malformed spec: {e}"
        ))
    })?;
    if source.source_ref.kind != "GitRepository" {
        return Err(ClusterError::Invalid(format!(
            "Kustomization {kustomization_namespace}/{kustomization_name} deploys from a {}, not a GitRepository; set spec.git.url and spec.git.branch",
            source.source_ref.kind
        )));
    }
    let namespace = source
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| kustomization_namespace.to_owned());
    let name = source.source_ref.name.clone();
    let repository = get(cluster, FluxObjectKind::GitRepository, &namespace, &name)
        .await?
        .ok_or_else(|| ClusterError::NotFound {
            object: describe(FluxObjectKind::GitRepository, &namespace, &name),
            hint: format!(
                "; Kustomization {kustomization_namespace}/{kustomization_name} names it in spec.sourceRef"
            ),
        })?;
    let spec: super::GitRepositorySpec = serde_json::from_value(repository.data["spec"].clone())
        .map_err(|e| {
            ClusterError::Invalid(format!(
                "GitRepository {namespace}/{name} has a malformed spec: {e}"
            ))
        })?;
    Ok(GitSource {
        repository: (namespace, name),
        url: spec.url,
        follows: FollowedRef::of(spec.reference.as_ref()),
        secret: spec.secret_ref.map(|s| s.name),
    })
}

/// Whether Flux has applied commit `sha` for an app: the GitRepository's artifact is the
/// commit, every Kustomization of the chain that follows that repository applied it at its
/// current generation, and a HelmRelease in the chain acted on its current generation (and
/// attempted `chart_version` when the upgrade changes the chart). The first thing still
/// missing (or a failure) is reported.
pub async fn apply_progress(
    cluster: &Cluster,
    chain: &[PlannedFluxObject],
    sha: &str,
    chart_version: Option<&str>,
) -> Result<super::progress::Progress, ClusterError> {
    use super::HelmRelease;
    use super::progress::{Progress, helm_release_progress};
    let mut verdicts = vec![parents_progress(cluster, chain, sha).await?];
    for object in chain
        .iter()
        .filter(|o| o.kind == FluxObjectKind::HelmRelease)
    {
        let release: HelmRelease = typed(
            get(cluster, object.kind, &object.namespace, &object.name).await?,
            object.kind,
            &object.namespace,
            &object.name,
        )?;
        verdicts.push(helm_release_progress(&release, chart_version));
    }
    let failed = verdicts
        .iter()
        .find(|v| matches!(v, Progress::Failed { .. }))
        .cloned();
    Ok(failed
        .or_else(|| verdicts.into_iter().find(|v| !v.is_done()))
        .unwrap_or(Progress::Done))
}

/// The commit the GitRepository that deploys the chain serves now (its artifact's
/// revision), if it has an artifact.
pub async fn served_commit(
    cluster: &Cluster,
    chain: &[PlannedFluxObject],
) -> Result<Option<String>, ClusterError> {
    use super::GitRepository;
    let source = git_source(cluster, chain).await?;
    let (namespace, name) = &source.repository;
    let repository: GitRepository = typed(
        get(cluster, FluxObjectKind::GitRepository, namespace, name).await?,
        FluxObjectKind::GitRepository,
        namespace,
        name,
    )?;
    Ok(repository
        .status
        .and_then(|s| s.artifact)
        .map(|a| super::progress::revision_commit(&a.revision).to_owned()))
}

/// Whether the GitRepository serves commit `sha` and every Kustomization of the chain that
/// follows it has applied it at its current generation (the first thing missing otherwise).
async fn parents_progress(
    cluster: &Cluster,
    chain: &[PlannedFluxObject],
    sha: &str,
) -> Result<super::progress::Progress, ClusterError> {
    use super::progress::{Progress, git_repository_progress, kustomization_progress};
    use super::{GitRepository, Kustomization};
    let source = git_source(cluster, chain).await?;
    let (repo_namespace, repo_name) = &source.repository;
    let repository: GitRepository = typed(
        get(
            cluster,
            FluxObjectKind::GitRepository,
            repo_namespace,
            repo_name,
        )
        .await?,
        FluxObjectKind::GitRepository,
        repo_namespace,
        repo_name,
    )?;
    let repo_verdict = git_repository_progress(&repository, sha);
    if !repo_verdict.is_done() {
        return Ok(repo_verdict);
    }
    for object in chain
        .iter()
        .filter(|o| o.kind == FluxObjectKind::Kustomization)
    {
        let kustomization: Kustomization = typed(
            get(cluster, object.kind, &object.namespace, &object.name).await?,
            object.kind,
            &object.namespace,
            &object.name,
        )?;
        let follows = kustomization.spec.source_ref.name == *repo_name
            && kustomization
                .spec
                .source_ref
                .namespace
                .as_deref()
                .unwrap_or(&object.namespace)
                == repo_namespace;
        let verdict = kustomization_progress(&kustomization, sha);
        if follows && !verdict.is_done() {
            return Ok(verdict);
        }
    }
    Ok(Progress::Done)
}

/// Why a HelmRelease of the chain must stay suspended a little longer after commit `sha`,
/// or None when it may resume: its parents must have applied the commit (its spec may have
/// changed) and, when the chart changes, the OCIRepository its `chartRef` names must serve
/// `chart_version` — otherwise helm-controller would first run the old chart again.
pub async fn helm_release_hold(
    cluster: &Cluster,
    chain: &[PlannedFluxObject],
    release: &PlannedFluxObject,
    sha: &str,
    chart_version: Option<&str>,
) -> Result<Option<String>, ClusterError> {
    use super::progress::Progress;
    use super::{HelmRelease, OCIRepository};
    if let Progress::Waiting(why) = parents_progress(cluster, chain, sha).await? {
        return Ok(Some(format!("its parents applied the commit ({why})")));
    }
    let Some(target) = chart_version else {
        return Ok(None);
    };
    let object: HelmRelease = typed(
        get(cluster, release.kind, &release.namespace, &release.name).await?,
        release.kind,
        &release.namespace,
        &release.name,
    )?;
    let Some(chart_ref) = object.spec.chart_ref.filter(|r| r.kind == "OCIRepository") else {
        return Ok(None);
    };
    let namespace = chart_ref
        .namespace
        .unwrap_or_else(|| release.namespace.clone());
    let repository: OCIRepository = typed(
        get(
            cluster,
            FluxObjectKind::OciRepository,
            &namespace,
            &chart_ref.name,
        )
        .await?,
        FluxObjectKind::OciRepository,
        &namespace,
        &chart_ref.name,
    )?;
    let serves = repository
        .status
        .and_then(|s| s.artifact)
        .map(|a| a.revision)
        .is_some_and(|revision| super::progress::oci_serves(&revision, target));
    Ok((!serves).then(|| {
        format!(
            "OCIRepository {namespace}/{} serves chart {target}",
            chart_ref.name
        )
    }))
}

/// A Flux object as its typed view; absent or malformed objects are errors naming it.
fn typed<T: serde::de::DeserializeOwned>(
    object: Option<DynamicObject>,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> Result<T, ClusterError> {
    let object = object.ok_or_else(|| ClusterError::NotFound {
        object: describe(kind, namespace, name),
        hint: String::new(),
    })?;
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            ClusterError::Invalid(format!(
                "{} is malformed: {e}",
                describe(kind, namespace, name)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::flux::GitRepositoryRef;

    fn reference(fields: serde_json::Value) -> GitRepositoryRef {
        serde_json::from_value(fields).unwrap()
    }

    #[test]
    fn spec_ref_is_resolved_in_source_controllers_order() {
        let cases = [
            (json!({}), FollowedRef::Branch("master".into())),
            (json!({"branch": ""}), FollowedRef::Branch("master".into())),
            (
                json!({"branch": "main"}),
                FollowedRef::Branch("main".into()),
            ),
            (
                json!({"name": "refs/heads/main", "branch": "dev", "tag": "v1"}),
                FollowedRef::Branch("main".into()),
            ),
            (
                json!({"name": "refs/tags/v1^{}"}),
                FollowedRef::Tag {
                    tag: "v1".into(),
                    field: "spec.ref.name",
                },
            ),
            (
                json!({"name": "refs/pull/4/head"}),
                FollowedRef::OtherName("refs/pull/4/head".into()),
            ),
            (
                json!({"name": "main"}),
                FollowedRef::OtherName("main".into()),
            ),
            (
                json!({"semver": ">=1", "tag": "v1", "branch": "main"}),
                FollowedRef::Tag {
                    tag: "v1".into(),
                    field: "spec.ref.tag",
                },
            ),
            (
                json!({"semver": ">=1", "branch": "main"}),
                FollowedRef::SemVer(">=1".into()),
            ),
            (
                json!({"commit": "abc", "name": "refs/heads/main", "branch": "main"}),
                FollowedRef::Commit("abc".into()),
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(
                FollowedRef::of(Some(&reference(fields.clone()))),
                want,
                "{fields}"
            );
        }
        assert_eq!(FollowedRef::of(None), FollowedRef::Branch("master".into()));
    }

    #[test]
    fn only_a_branch_can_take_a_commit() {
        let repository = "GitRepository flux-system/flux-system";
        assert_eq!(FollowedRef::Branch("main".into()).refusal(repository), None);
        let tag = FollowedRef::Tag {
            tag: "v1".into(),
            field: "spec.ref.tag",
        }
        .refusal(repository)
        .unwrap();
        assert!(
            tag.starts_with("GitRepository flux-system/flux-system follows tag v1 (spec.ref.tag)"),
            "{tag}"
        );
        assert!(tag.contains("does not move tags"), "{tag}");
        assert!(
            tag.ends_with("(spec.ref.branch, or spec.ref.name: refs/heads/<branch>)"),
            "{tag}"
        );
    }

    #[test]
    fn a_kustomization_labelled_with_itself_has_no_applier() {
        let object = |labels: serde_json::Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": "flux-system", "namespace": "flux-system", "labels": labels}
            }))
            .unwrap()
        };
        let kind = FluxObjectKind::Kustomization;
        let itself = object(json!({
            KUSTOMIZE_NAME_LABEL: "flux-system", KUSTOMIZE_NAMESPACE_LABEL: "flux-system"
        }));
        assert_eq!(
            applier_of(&itself, kind, "flux-system", "flux-system"),
            None
        );
        // Without the namespace label, the object's own namespace is meant.
        let short = object(json!({KUSTOMIZE_NAME_LABEL: "flux-system"}));
        assert_eq!(applier_of(&short, kind, "flux-system", "flux-system"), None);
        let child = object(json!({
            KUSTOMIZE_NAME_LABEL: "infra", KUSTOMIZE_NAMESPACE_LABEL: "flux-system"
        }));
        assert_eq!(
            applier_of(&child, kind, "flux-system", "flux-system"),
            Some(("flux-system".into(), "infra".into()))
        );
        // A HelmRelease is never its own applier, whatever its labels say.
        assert_eq!(
            applier_of(
                &itself,
                FluxObjectKind::HelmRelease,
                "flux-system",
                "flux-system"
            ),
            Some(("flux-system".into(), "flux-system".into()))
        );
    }
}
