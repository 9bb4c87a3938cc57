//! Observing what a request's current phase decides on — and only that: Flux objects'
//! suspend state, workload replicas and PVC retention, pods holding volumes, snapshots,
//! restored PVCs and the snapshots they come from, the request's commit in Git, Flux's
//! progress and the app's health.

use super::Context;
use super::git_access::{VersionFiles, locate, open, version_fields};
use super::preflight::preflight;
use crate::api::CommitRecord;
use crate::api::{
    FluxObjectKind, ManagedApp, Phase, Plan, RequestStatus, RollbackRequest, SourceKind,
};
use crate::cluster::cache::Cluster;
use crate::cluster::error::ClusterError;
use crate::cluster::flux::HelmRelease;
use crate::cluster::flux::ops::{apply_progress, get, get_typed, helm_release_hold, served_commit};
use crate::cluster::flux::progress::{remediation_for, retried_failure};
use crate::cluster::health::ops::app_health;
use crate::cluster::snapshots::ops::{
    claim, content_handle, released_volumes, snapshot, snapshot_and_handle, storage_class,
};
use crate::cluster::snapshots::{
    RESTORED_FROM_ANNOTATION, RESTORED_LARGER_ANNOTATION, binds_on_first_consumer, bound_content,
    snapshot_name, unusable_for_restore,
};
use crate::cluster::workloads::PodMount;
use crate::cluster::workloads::ops::{mounts, replicas, when_scaled};
use crate::git::{CommitInfo, REQUEST_UID_TRAILER};
use crate::manifest::fields::current_versions;
use crate::workflow::observations::ChildRollback;
use crate::workflow::{
    ClaimState, CommitState, ObjectKey, Observed, Problem, Request, SnapshotState, needs,
    sources_needed,
};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How far back in the branch's history a request's commit is looked for.
const COMMIT_LOOKBACK: usize = 200;

fn record(info: CommitInfo) -> CommitRecord {
    let subject = info.message.lines().next().unwrap_or_default().to_owned();
    CommitRecord {
        sha: info.sha,
        message: subject,
        url: info.url,
    }
}

/// Fills `observed` with what `phase` needs ([`needs`]: the phase's module says what it
/// decides on; this is the one place that knows how each need is read). Errors are problems
/// the caller feeds back to the workflow (retryable ones keep the phase).
pub async fn observe_phase(
    ctx: &Context,
    request: &Request,
    app: &ManagedApp,
    status: &RequestStatus,
    phase: Phase,
    observed: &mut Observed,
) -> Result<(), Problem> {
    let Some(plan) = status.plan.as_ref() else {
        return Ok(());
    };
    let needs = needs(request.kind, phase);
    if needs.flux_state {
        observe_plan_state(ctx, plan, observed).await?;
    }
    if needs.mounts {
        observed.mounts = mounts_of(&ctx.cluster, plan).await?;
    }
    if needs.snapshots {
        observed.snapshots = snapshots_of(&ctx.cluster, request, plan).await?;
    }
    if needs.claims {
        // Read fresh: Restore deletes and recreates claims on what it sees here.
        let fresh = ctx.cluster.fresh();
        observed.claims = claims_of(&fresh, plan).await?;
        observed.claims_read = true;
        observed.released = released_volumes(&fresh, &request.uid)
            .await
            .map_err(Problem::from)?
            .into_iter()
            .map(|(namespace, pvc, volume)| (ObjectKey::claim_named(&namespace, &pvc), volume))
            .collect();
        observed.sources = sources_of(&fresh, plan, &observed.claims).await?;
    }
    if needs.commit {
        observed.commit = commit_state(ctx, request, app, plan).await?;
    }
    if needs.flux_progress {
        observe_progress(ctx, app, status, plan, observed).await?;
    }
    if needs.health {
        observe_health(ctx, app, plan, observed).await?;
    }
    if needs.child_rollback {
        observed.rollback = child_rollback(ctx, request, app).await?;
    }
    if needs.preflight {
        observed.preflight = Some(preflight(ctx, app, plan).await);
    }
    Ok(())
}

/// The pods that still hold any of the plan's volumes.
async fn mounts_of(cluster: &Cluster, plan: &Plan) -> Result<Vec<PodMount>, Problem> {
    let mut by_namespace: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for volume in &plan.volumes {
        by_namespace
            .entry(&volume.namespace)
            .or_default()
            .insert(volume.name.clone());
    }
    let mut found = Vec::new();
    for (namespace, claims) in by_namespace {
        found.extend(
            mounts(cluster, namespace, &claims)
                .await
                .map_err(Problem::from)?,
        );
    }
    Ok(found)
}

/// This request's snapshot of each planned volume, where one exists.
async fn snapshots_of(
    cluster: &Cluster,
    request: &Request,
    plan: &Plan,
) -> Result<BTreeMap<ObjectKey, SnapshotState>, Problem> {
    let mut found = BTreeMap::new();
    for volume in &plan.volumes {
        let name = snapshot_name(&request.uid, &volume.name);
        if let Some(snapshot) = snapshot(cluster, &volume.namespace, &name)
            .await
            .map_err(Problem::from)?
        {
            let ready = snapshot
                .status
                .as_ref()
                .and_then(|s| s.ready_to_use)
                .unwrap_or(false);
            // The driver's handle of a ready cut: what a rollback will check it against.
            let handle = match bound_content(&snapshot).filter(|_| ready) {
                Some(content) => content_handle(cluster, content)
                    .await
                    .map_err(Problem::from)?,
                None => None,
            };
            let status = snapshot.status.unwrap_or_default();
            found.insert(
                ObjectKey::claim(volume),
                SnapshotState {
                    ready,
                    error: status.error.and_then(|e| e.message),
                    restore_size: status.restore_size,
                    handle,
                },
            );
        }
    }
    Ok(found)
}

/// The PVCs of the volumes being restored, where they exist.
async fn claims_of(
    cluster: &Cluster,
    plan: &Plan,
) -> Result<BTreeMap<ObjectKey, ClaimState>, Problem> {
    let mut found = BTreeMap::new();
    for volume in plan.volumes.iter().filter(|v| v.restore_from.is_some()) {
        let Some(pvc) = claim(cluster, &volume.namespace, &volume.name)
            .await
            .map_err(Problem::from)?
        else {
            continue;
        };
        let restored_from = pvc.annotations().get(RESTORED_FROM_ANNOTATION).cloned();
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        // Whether binding is to be waited for matters only for a restored claim not bound yet.
        let waits = match &volume.storage_class_name {
            Some(class) if !bound && restored_from == volume.restore_from => {
                storage_class(cluster, class)
                    .await
                    .map_err(Problem::from)?
                    .is_some_and(|c| binds_on_first_consumer(&c))
            }
            _ => false,
        };
        found.insert(
            ObjectKey::claim(volume),
            ClaimState {
                terminating: pvc.metadata.deletion_timestamp.is_some(),
                restored_from,
                bound,
                waits_for_first_consumer: waits,
                volume: pvc
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .filter(|v| !v.is_empty()),
                larger_than_manifest: pvc.annotations().get(RESTORED_LARGER_ANNOTATION).cloned(),
            },
        );
    }
    Ok(found)
}

/// Whether the snapshots a Restore step is about to rely on ([`sources_needed`]) can be
/// restored from now (see [`unusable_for_restore`]), read from the API server.
async fn sources_of(
    cluster: &Cluster,
    plan: &Plan,
    claims: &BTreeMap<ObjectKey, ClaimState>,
) -> Result<BTreeMap<ObjectKey, Result<(), String>>, Problem> {
    let mut found = BTreeMap::new();
    for volume in sources_needed(plan, claims) {
        let Some(name) = volume.restore_from.as_deref() else {
            continue;
        };
        let (source, handle) = snapshot_and_handle(cluster, &volume.namespace, name)
            .await
            .map_err(Problem::from)?;
        let verdict = match unusable_for_restore(
            source.as_ref(),
            handle.as_deref(),
            &volume.namespace,
            name,
            &volume.name,
            volume.restore_from_handle.as_deref(),
        ) {
            None => Ok(()),
            Some(why) => Err(why),
        };
        found.insert(ObjectKey::claim(volume), verdict);
    }
    Ok(found)
}

/// Whether Flux applied the request's commit, and which of our suspended HelmReleases
/// must stay so until their parents applied it.
async fn observe_progress(
    ctx: &Context,
    app: &ManagedApp,
    status: &RequestStatus,
    plan: &Plan,
    observed: &mut Observed,
) -> Result<(), Problem> {
    let cluster = &ctx.cluster;
    let ours = status
        .commit
        .as_ref()
        .map(|c| c.sha.clone())
        .unwrap_or_default();
    let sha = applied_target(ctx, app, plan, &ours).await?;
    let chart = (app.spec.source.kind == SourceKind::HelmRelease)
        .then(|| plan.to.get("chart"))
        .flatten();
    let releases = plan
        .flux_objects
        .iter()
        .filter(|o| o.kind == FluxObjectKind::HelmRelease && !o.was_suspended);
    for release in releases {
        let key = ObjectKey::flux(release);
        if observed.flux_suspended.get(&key) != Some(&true) {
            continue;
        }
        let hold = helm_release_hold(
            cluster,
            &plan.flux_objects,
            release,
            &sha,
            chart.map(String::as_str),
        )
        .await
        .map_err(Problem::from)?;
        if let Some(why) = hold {
            observed.held_back.insert(key, why);
        }
    }
    observed.flux_progress = Some(
        apply_progress(cluster, &plan.flux_objects, &sha, chart.map(String::as_str))
            .await
            .map_err(Problem::from)?,
    );
    Ok(())
}

/// The app's health, and helm-controller's remediation or retried failure of the chart.
async fn observe_health(
    ctx: &Context,
    app: &ManagedApp,
    plan: &Plan,
    observed: &mut Observed,
) -> Result<(), Problem> {
    let cluster = &ctx.cluster;
    let namespace = app.namespace().unwrap_or_default();
    let source_namespace = app.source_namespace();
    let source = (
        app.spec.source.kind,
        source_namespace.as_str(),
        app.spec.source.name.as_str(),
    );
    observed.health = Some(
        app_health(
            cluster,
            source,
            &plan.workloads,
            &app.spec.health.checks,
            &namespace,
        )
        .await
        .map_err(Problem::from)?,
    );
    if app.spec.source.kind == SourceKind::HelmRelease {
        let release: Option<HelmRelease> = get_typed(
            cluster,
            FluxObjectKind::HelmRelease,
            &source_namespace,
            &app.spec.source.name,
        )
        .await
        .map_err(Problem::from)?;
        let chart = plan.to.get("chart").map(String::as_str);
        observed.remediation = release
            .as_ref()
            .and_then(|r| remediation_for(r, chart))
            .map(|(reason, message)| Problem::terminal(&reason, message));
        observed.retried_failure = release
            .as_ref()
            .and_then(|r| retried_failure(r, chart))
            .map(|(reason, message)| Problem::terminal(&reason, message));
    }
    Ok(())
}

/// The commit Flux must apply for ours to be in: ours, or — when others pushed after us —
/// the newer commit the GitRepository already serves, if that one includes ours. (Waiting
/// for Flux to apply exactly our commit would wait forever once a later push lands first.)
async fn applied_target(
    ctx: &Context,
    app: &ManagedApp,
    plan: &Plan,
    ours: &str,
) -> Result<String, Problem> {
    let served = served_commit(&ctx.cluster, &plan.flux_objects)
        .await
        .map_err(Problem::from)?;
    // Flux still serving the head the request was admitted at (older than ours) is the
    // common case while it has not fetched yet: no need to ask Git.
    let admitted = plan.git.as_ref().map(|g| g.revision.as_str());
    let Some(served) = served.filter(|s| {
        s.len() >= 40
            && !s.eq_ignore_ascii_case(ours)
            && !admitted.is_some_and(|a| s.eq_ignore_ascii_case(a))
    }) else {
        return Ok(ours.to_owned());
    };
    let location = locate(ctx, app, &plan.flux_objects).await?;
    let repo = open(ctx, &location).await?;
    let includes = repo.contains(&served, ours).await.map_err(Problem::from)?;
    Ok(if includes { served } else { ours.to_owned() })
}

/// The `spec.suspend` of every planned Flux object and the replicas of every planned
/// workload: all that putting things back needs, read from the plan alone (it works even
/// when the ManagedApp is gone).
pub async fn observe_plan_state(
    ctx: &Context,
    plan: &Plan,
    observed: &mut Observed,
) -> Result<(), Problem> {
    let cluster = &ctx.cluster;
    for object in &plan.flux_objects {
        if let Some(found) = get(cluster, object.kind, &object.namespace, &object.name)
            .await
            .map_err(Problem::from)?
        {
            let key = ObjectKey::flux(object);
            if object.kind == FluxObjectKind::HelmRelease {
                // helm-controller writes observedGeneration when a reconcile ends (also a
                // suspended one); until then an action it started earlier is running.
                let generation = found.metadata.generation;
                let seen = found.data["status"]["observedGeneration"].as_i64();
                if let (Some(generation), seen) = (generation, seen)
                    && seen.is_none_or(|seen| seen < generation)
                {
                    observed.flux_unsettled.insert(
                        key.clone(),
                        format!(
                            "it is finishing an action it started before (observedGeneration {}, generation {generation})",
                            seen.map_or("none".to_owned(), |s| s.to_string())
                        ),
                    );
                }
            }
            observed
                .flux_suspended
                .insert(key, crate::cluster::flux::ops::is_suspended(&found));
        }
    }
    for workload in &plan.workloads {
        if let Some(count) = replicas(cluster, workload.kind, &workload.namespace, &workload.name)
            .await
            .map_err(Problem::from)?
        {
            observed
                .replicas
                .insert(ObjectKey::workload(workload), count);
        }
        if workload.claim_retention.is_some()
            && let Some(policy) = when_scaled(cluster, &workload.namespace, &workload.name)
                .await
                .map_err(Problem::from)?
        {
            observed
                .when_scaled
                .insert(ObjectKey::workload(workload), policy);
        }
    }
    Ok(())
}

/// The request's commit: found by its UID trailer, or the branch already at the target
/// versions without it (someone else pushed them), or not there yet.
async fn commit_state(
    ctx: &Context,
    request: &Request,
    app: &ManagedApp,
    plan: &Plan,
) -> Result<CommitState, Problem> {
    let chain = &plan.flux_objects;
    let location = locate(ctx, app, chain).await?;
    let repo = open(ctx, &location).await?;
    if let Some(found) = repo
        .find_commit_by_trailer(REQUEST_UID_TRAILER, &request.uid, COMMIT_LOOKBACK)
        .await
        .map_err(Problem::from)?
    {
        return Ok(CommitState::Pushed(record(found)));
    }
    let VersionFiles { head, fields, .. } = version_fields(repo.as_ref(), app).await?;
    let current = current_versions(&fields)
        .map_err(|e| Problem::terminal("VersionFieldInvalid", e.to_string()))?;
    if plan.to.iter().all(|(k, v)| current.get(k) == Some(v)) {
        return Ok(CommitState::AlreadyAtTarget(CommitRecord {
            sha: head,
            message: "already at the target versions".into(),
            url: None,
        }));
    }
    Ok(CommitState::NotFound)
}

/// The RollbackRequest undoing this upgrade, if any: the newest one naming it (the
/// automatic one, or one a person created for a frozen upgrade).
async fn child_rollback(
    ctx: &Context,
    request: &Request,
    app: &ManagedApp,
) -> Result<Option<ChildRollback>, Problem> {
    let namespace = app.namespace().unwrap_or_default();
    let rollbacks = rollback_requests(&ctx.cluster, &namespace).await?;
    let mut mine: Vec<Arc<RollbackRequest>> = rollbacks
        .into_iter()
        .filter(|r| r.spec.upgrade_request == request.name)
        .collect();
    mine.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(mine.pop().map(|r| {
        let status = r.status.clone().unwrap_or_default();
        ChildRollback {
            phase: status.phase,
            failure: status.failure.map(|f| f.message),
        }
    }))
}

/// The RollbackRequests in `namespace`.
pub(super) async fn rollback_requests(
    cluster: &Cluster,
    namespace: &str,
) -> Result<Vec<Arc<RollbackRequest>>, Problem> {
    cluster
        .list::<RollbackRequest>(namespace)
        .await
        .map_err(|e| {
            Problem::from(ClusterError::api(
                "listing",
                format!("RollbackRequests in {namespace}"),
                e,
            ))
        })
}
