//! Talking to the API about Flux objects: reading them, suspending and resuming them
//! (merge patches of `spec.suspend` only), asking them to reconcile now, and walking the
//! chain of parent Kustomizations that must be suspended first.

use super::{KUSTOMIZE_NAME_LABEL, KUSTOMIZE_NAMESPACE_LABEL, REQUESTED_AT_ANNOTATION};
use crate::api::{
    FluxObjectKind, FluxObjectReference, PlannedFluxObject, SourceKind, SourceReference,
};
use crate::cluster::error::ClusterError;
use crate::cluster::patch_params;
use kube::api::{Api, DynamicObject, Patch};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeSet;

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

fn api(client: &Client, kind: FluxObjectKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &api_resource(kind))
}

/// A Flux object, or None when it does not exist.
pub async fn get(
    client: &Client,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, ClusterError> {
    api(client, kind, namespace)
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("reading", describe(kind, namespace, name), e))
}

/// Whether `spec.suspend` is set on an object.
pub fn is_suspended(object: &DynamicObject) -> bool {
    object.data["spec"]["suspend"].as_bool().unwrap_or(false)
}

/// Sets `spec.suspend` — and nothing else — on a Flux object.
pub async fn set_suspend(
    client: &Client,
    object: &PlannedFluxObject,
    suspend: bool,
) -> Result<(), ClusterError> {
    let patch = Patch::Merge(json!({"spec": {"suspend": suspend}}));
    let action = if suspend { "suspending" } else { "resuming" };
    api(client, object.kind, &object.namespace)
        .patch(&object.name, &patch_params(), &patch)
        .await
        .map(|_| ())
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
    client: &Client,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
    token: &str,
) -> Result<(), ClusterError> {
    let Some(object) = get(client, kind, namespace, name).await? else {
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
    api(client, kind, namespace)
        .patch(name, &patch_params(), &patch)
        .await
        .map(|_| ())
        .map_err(|e| {
            ClusterError::api(
                "requesting a reconcile of",
                describe(kind, namespace, name),
                e,
            )
        })
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

fn source_kind(kind: SourceKind) -> FluxObjectKind {
    match kind {
        SourceKind::HelmRelease => FluxObjectKind::HelmRelease,
        SourceKind::Kustomization => FluxObjectKind::Kustomization,
    }
}

/// The Flux objects to suspend for an app, parents first: the chain of Kustomizations that
/// applied the source (walked up through Flux's labels to the root), the source itself, then
/// the extra objects of `spec.suspend`; each with its current `spec.suspend` as the value to
/// restore. References default to `app_namespace`.
pub async fn suspend_chain(
    client: &Client,
    app_namespace: &str,
    source: &SourceReference,
    extra: &[FluxObjectReference],
) -> Result<Vec<PlannedFluxObject>, ClusterError> {
    let namespace = source
        .namespace
        .clone()
        .unwrap_or_else(|| app_namespace.to_owned());
    let mut chain = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next = Some((source_kind(source.kind), namespace, source.name.clone()));
    while let Some((kind, namespace, name)) = next.take() {
        let id = describe(kind, &namespace, &name);
        if !seen.insert(id.clone()) || chain.len() >= MAX_CHAIN_DEPTH {
            return Err(ClusterError::Invalid(format!(
                "the parents of {} form a loop or are deeper than {MAX_CHAIN_DEPTH} at {id}; check the {KUSTOMIZE_NAME_LABEL} labels",
                describe(source_kind(source.kind), app_namespace, &source.name)
            )));
        }
        let Some(object) = get(client, kind, &namespace, &name).await? else {
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
        next = parent_of(&object).map(|(ns, n)| (FluxObjectKind::Kustomization, ns, n));
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
        let Some(object) = get(client, reference.kind, &namespace, &reference.name).await? else {
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
    /// Its branch (Flux's default is `master`).
    pub branch: String,
    /// Its credentials Secret (in the GitRepository's namespace), if any.
    pub secret: Option<String>,
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
    client: &Client,
    chain: &[PlannedFluxObject],
) -> Result<GitSource, ClusterError> {
    let Some(deployer) = deploying_kustomization(chain) else {
        return Err(ClusterError::Invalid(
            "no Kustomization deploys this app, so its Git repository is unknown; set spec.git.url and spec.git.branch".into(),
        ));
    };
    let kustomization = api(client, FluxObjectKind::Kustomization, &deployer.namespace)
        .get(&deployer.name)
        .await
        .map_err(|e| {
            ClusterError::api(
                "reading",
                describe(deployer.kind, &deployer.namespace, &deployer.name),
                e,
            )
        })?;
    let source: super::KustomizationSpec =
        serde_json::from_value(kustomization.data["spec"].clone()).map_err(|e| {
            ClusterError::Invalid(format!(
                "Kustomization {}/{} has a malformed spec: {e}",
                deployer.namespace, deployer.name
            ))
        })?;
    if source.source_ref.kind != "GitRepository" {
        return Err(ClusterError::Invalid(format!(
            "Kustomization {}/{} deploys from a {}, not a GitRepository; set spec.git.url and spec.git.branch",
            deployer.namespace, deployer.name, source.source_ref.kind
        )));
    }
    let namespace = source
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| deployer.namespace.clone());
    let name = source.source_ref.name.clone();
    let repository = get(client, FluxObjectKind::GitRepository, &namespace, &name)
        .await?
        .ok_or_else(|| ClusterError::NotFound {
            object: describe(FluxObjectKind::GitRepository, &namespace, &name),
            hint: format!(
                "; Kustomization {}/{} names it in spec.sourceRef",
                deployer.namespace, deployer.name
            ),
        })?;
    let spec: super::GitRepositorySpec = serde_json::from_value(repository.data["spec"].clone())
        .map_err(|e| {
            ClusterError::Invalid(format!(
                "GitRepository {namespace}/{name} has a malformed spec: {e}"
            ))
        })?;
    let branch = spec
        .reference
        .and_then(|r| r.branch)
        .unwrap_or_else(|| "master".into());
    Ok(GitSource {
        repository: (namespace, name),
        url: spec.url,
        branch,
        secret: spec.secret_ref.map(|s| s.name),
    })
}

/// Whether Flux has applied commit `sha` for an app: the GitRepository's artifact is the
/// commit, every Kustomization of the chain that follows that repository applied it at its
/// current generation, and a HelmRelease in the chain acted on its current generation (and
/// attempted `chart_version` when the upgrade changes the chart). The first thing still
/// missing (or a failure) is reported.
pub async fn apply_progress(
    client: &Client,
    chain: &[PlannedFluxObject],
    sha: &str,
    chart_version: Option<&str>,
) -> Result<super::progress::Progress, ClusterError> {
    use super::HelmRelease;
    use super::progress::{Progress, helm_release_progress};
    let mut verdicts = vec![parents_progress(client, chain, sha).await?];
    for object in chain
        .iter()
        .filter(|o| o.kind == FluxObjectKind::HelmRelease)
    {
        let release: HelmRelease = typed(
            get(client, object.kind, &object.namespace, &object.name).await?,
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
    client: &Client,
    chain: &[PlannedFluxObject],
) -> Result<Option<String>, ClusterError> {
    use super::GitRepository;
    let source = git_source(client, chain).await?;
    let (namespace, name) = &source.repository;
    let repository: GitRepository = typed(
        get(client, FluxObjectKind::GitRepository, namespace, name).await?,
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
    client: &Client,
    chain: &[PlannedFluxObject],
    sha: &str,
) -> Result<super::progress::Progress, ClusterError> {
    use super::progress::{Progress, git_repository_progress, kustomization_progress};
    use super::{GitRepository, Kustomization};
    let source = git_source(client, chain).await?;
    let (repo_namespace, repo_name) = &source.repository;
    let repository: GitRepository = typed(
        get(
            client,
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
            get(client, object.kind, &object.namespace, &object.name).await?,
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
    client: &Client,
    chain: &[PlannedFluxObject],
    release: &PlannedFluxObject,
    sha: &str,
    chart_version: Option<&str>,
) -> Result<Option<String>, ClusterError> {
    use super::progress::Progress;
    use super::{HelmRelease, OCIRepository};
    if let Progress::Waiting(why) = parents_progress(client, chain, sha).await? {
        return Ok(Some(format!("its parents applied the commit ({why})")));
    }
    let Some(target) = chart_version else {
        return Ok(None);
    };
    let object: HelmRelease = typed(
        get(client, release.kind, &release.namespace, &release.name).await?,
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
            client,
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
