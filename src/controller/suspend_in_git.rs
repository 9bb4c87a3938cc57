//! Refusing, at Admit, an app one of whose planned Flux objects has `spec.suspend` written
//! in the Git manifest that another Kustomization applies. kustomize-controller applies
//! with server-side apply and forced ownership (fluxcd/pkg/ssa `ResourceManager.apply`,
//! field manager `kustomize-controller`), so once Fluxgate resumes that Kustomization it
//! sets `spec.suspend` back to Git's value — resuming the object before Fluxgate's hold on
//! it ends (or suspending it for good). A manifest that does not write the field leaves
//! Fluxgate's value alone.
//!
//! A Kustomization that applies its own manifest — the root `flux bootstrap` makes — is
//! not checked against itself: it can only re-apply itself while it runs, that is after
//! Fluxgate resumed it, and the value it applies then is the one Git declares for it.

use super::Context;
use super::git_access::{GitLocation, open};
use crate::api::{FluxObjectKind, PlannedFluxObject};
use crate::cluster::flux::KustomizationSpec;
use crate::cluster::flux::applied::{
    Build, KustomizePatch, ObjectId, RepoFiles, SuspendInGit, Walk, suspend_set_in, walk,
};
use crate::cluster::flux::ops::{
    GitSource, api_resource, applier_of, describe, get, kustomization_git_source,
};
use crate::git::GitRepo;
use crate::workflow::Problem;
use serde_json::Value;
use std::collections::BTreeMap;

/// The reason an app is refused under when Git sets `spec.suspend` on one of its objects.
pub const SUSPEND_SET_IN_GIT: &str = "SuspendSetInGit";

/// Refuses the app when the Git manifest of one of `objects` — as the Kustomization that
/// applies it builds it — sets `spec.suspend`. `app_repo` is the app's own repository,
/// read for every Kustomization that applies from `deploying` (the GitRepository behind
/// the app); another GitRepository is opened with its own URL, branch and Secret, and one
/// that follows no branch, or a non-Git source, cannot be read and is not checked.
pub async fn refuse_suspend_in_git(
    ctx: &Context,
    objects: &[PlannedFluxObject],
    deploying: Option<&GitSource>,
    app_repo: &dyn GitRepo,
) -> Result<(), Problem> {
    let mut by_applier: BTreeMap<(String, String), Vec<&PlannedFluxObject>> = BTreeMap::new();
    for object in objects {
        let live = get(&ctx.cluster, object.kind, &object.namespace, &object.name)
            .await
            .map_err(Problem::from)?;
        let applier = live
            .as_ref()
            .and_then(|live| applier_of(live, object.kind, &object.namespace, &object.name));
        if let Some(applier) = applier {
            by_applier.entry(applier).or_default().push(object);
        }
    }
    let mut found = Vec::new();
    for ((namespace, name), applied) in by_applier {
        let Some(kustomization) = get(
            &ctx.cluster,
            FluxObjectKind::Kustomization,
            &namespace,
            &name,
        )
        .await
        .map_err(Problem::from)?
        else {
            continue;
        };
        let applier = describe(FluxObjectKind::Kustomization, &namespace, &name);
        let spec: KustomizationSpec = serde_json::from_value(kustomization.data["spec"].clone())
            .map_err(|e| {
                Problem::terminal(
                    "InvalidClusterState",
                    format!("{applier} has a malformed spec: {e}"),
                )
            })?;
        let Some(mut build) =
            applier_build(ctx, &namespace, &name, &spec, deploying, app_repo).await?
        else {
            continue;
        };
        build.patches.extend(spec_patches(&applier, &spec));
        for object in applied {
            let resource = api_resource(object.kind);
            let id = ObjectId {
                group: &resource.group,
                kind: &resource.kind,
                namespace: &object.namespace,
                name: &object.name,
            };
            for place in suspend_set_in(&build, id) {
                found.push(explain(object, &applier, &place));
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Problem::terminal(SUSPEND_SET_IN_GIT, found.join("; ")))
    }
}

/// What Kustomization `namespace/name` builds from Git, or None when its source cannot be
/// read (logged).
async fn applier_build(
    ctx: &Context,
    namespace: &str,
    name: &str,
    spec: &KustomizationSpec,
    deploying: Option<&GitSource>,
    app_repo: &dyn GitRepo,
) -> Result<Option<Build>, Problem> {
    let path = spec.path.as_deref().unwrap_or("./");
    let target = spec.target_namespace.as_deref();
    let source_namespace = spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.to_owned());
    let same_repository = spec.source_ref.kind == "GitRepository"
        && deploying.is_some_and(|d| {
            d.repository == (source_namespace.clone(), spec.source_ref.name.clone())
        });
    if same_repository {
        return read_build(app_repo, path, target).await.map(Some);
    }
    let other = match kustomization_git_source(&ctx.cluster, namespace, name).await {
        Ok(source) => source,
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => {
            tracing::info!(kustomization = %format!("{namespace}/{name}"), reason = %e,
                "not checking what this Kustomization applies for spec.suspend: its source cannot be read from Git");
            return Ok(None);
        }
    };
    let branch = match other.branch() {
        Ok(branch) => branch.to_owned(),
        Err(why) => {
            tracing::info!(kustomization = %format!("{namespace}/{name}"), reason = %why,
                "not checking what this Kustomization applies for spec.suspend: its source follows no branch");
            return Ok(None);
        }
    };
    let location = GitLocation {
        url: other.url.clone(),
        branch,
        secret: other
            .secret
            .clone()
            .map(|secret| (other.repository.0.clone(), secret)),
        secret_of_repository: other.secret.is_some().then(|| other.repository.clone()),
    };
    let repo = open(ctx, &location).await?;
    read_build(repo.as_ref(), path, target).await.map(Some)
}

/// Reads what a Kustomization with `path` applies: its directory first, then, if it reaches
/// outside it (`../base`), the whole repository, so a build costs at most two reads.
async fn read_build(
    repo: &dyn GitRepo,
    path: &str,
    target_namespace: Option<&str>,
) -> Result<Build, Problem> {
    let mut files = RepoFiles::default();
    loop {
        match walk(&files, path, target_namespace) {
            Walk::Done(build) => return Ok(build),
            Walk::NeedDirectory(dir) => {
                let dir = if files.nothing_read() {
                    dir
                } else {
                    String::new()
                };
                let read = repo.read_tree(&dir).await.map_err(Problem::from)?;
                files.add_directory(&dir, read.files);
            }
        }
    }
}

/// The Kustomization's own `spec.patches`, which kustomize-controller adds to the build.
fn spec_patches(applier: &str, spec: &KustomizationSpec) -> Vec<KustomizePatch> {
    spec.rest
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|patch| {
            let text = patch["patch"].as_str()?;
            let documents: Vec<Value> = serde_saphyr::from_multiple(text).ok()?;
            Some(documents.into_iter().map(|document| KustomizePatch {
                file: format!("spec.patches of {applier}"),
                target: patch["target"].clone(),
                patch: document,
            }))
        })
        .flatten()
        .collect()
}

/// One finding, for a person: where, which object, what to do, and why.
fn explain(object: &PlannedFluxObject, applier: &str, place: &SuspendInGit) -> String {
    let what = describe(object.kind, &object.namespace, &object.name);
    let value = match &place.value {
        Value::Null => "removes it".to_owned(),
        value => format!("sets it to {value}"),
    };
    format!(
        "spec.suspend in {} of {what} ({value}): remove it from Git. {applier} applies it with server-side apply, which sets spec.suspend to Git's value again as soon as Fluxgate resumes {applier}, before Fluxgate's hold on {what} ends",
        place.file
    )
}
