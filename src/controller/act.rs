//! Performing the workflow's actions against the cluster and Git. Every action is
//! idempotent (deterministic names, "set to" values, idempotency trailers), so a repeat after
//! a crash changes nothing that was already done.

use super::Context;
use super::app_status::{self, Holder};
use super::git_access::{locate, open, version_fields};
use super::git_write::{push_problem, signing_key};
use crate::api::Phase;
use crate::api::{
    FluxObjectKind, ManagedApp, Plan, RollbackRequest, RollbackRequestSpec, UpgradeRequest,
};
use crate::cluster::cache::{Cluster, WatchedKind};
use crate::cluster::error::ClusterError;
use crate::cluster::flux::ops::{
    chart_helm_repository, git_source, request_reconcile, set_suspend,
};
use crate::cluster::snapshots::ops::{apply_retention, delete_snapshot};
use crate::cluster::snapshots::ops::{
    create_claim, create_snapshot, delete_claim, retain_volume, snapshot_and_handle,
};
use crate::cluster::snapshots::{
    PRE_UPGRADE, PendingRestores, RetentionScope, SAFETY, SnapshotOwner, restored_claim,
    snapshot_for, snapshot_name, unready, unusable_for_restore,
};
use crate::cluster::workloads::ops::{scale, set_when_scaled};
use crate::git::{
    CommitRequest, EditError, EditResult, FileEdit, REQUEST_UID_TRAILER, request_trailers,
};
use crate::manifest::fields::{FieldError, edit_file_expecting};
use crate::workflow::RequestKind;
use crate::workflow::{Action, Problem, Request, SNAPSHOT_UNUSABLE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use std::sync::{Arc, Mutex};

/// Everything an action needs to know about its request.
pub struct Acting<'a> {
    /// The request, as the workflow sees it.
    pub request: &'a Request,
    /// Who holds the app's lock for this operation.
    pub holder: &'a Holder,
    /// The app; `None` when it is gone, and then only actions that put the cluster back
    /// (resume Flux, scale back) can run: the app's own bookkeeping has nowhere to go.
    pub app: Option<&'a ManagedApp>,
    /// The request's plan.
    pub plan: Option<&'a Plan>,
    /// The upgrade object, for creating its rollback (owner reference).
    pub upgrade: Option<&'a UpgradeRequest>,
    /// The UID of a lock holder that no longer exists, which TakeLock may replace.
    pub stale_lock: Option<&'a str>,
}

/// The app, for an action that cannot be done without it.
fn needs_app<'a>(acting: &Acting<'a>, what: &str) -> Result<&'a ManagedApp, Problem> {
    acting.app.ok_or_else(|| {
        Problem::terminal(
            "ManagedAppNotFound",
            format!("{what} needs the ManagedApp, which no longer exists"),
        )
    })
}

/// Performs one action.
pub async fn perform(
    ctx: &Context,
    acting: &Acting<'_>,
    action: &Action,
    now: jiff::Timestamp,
) -> Result<(), Problem> {
    let cluster = &ctx.cluster;
    match action {
        Action::TakeLock => {
            let app = needs_app(acting, "taking the app's lock")?;
            app_status::take_lock(
                cluster,
                &app.namespace().unwrap_or_default(),
                &app.name_any(),
                acting.holder,
                acting.stale_lock,
                now,
            )
            .await
        }
        Action::Finish(finish) => {
            // An app that is gone has nothing to record.
            let Some(app) = acting.app else {
                return Ok(());
            };
            // A snapshot that failed or never became ready pins its PVC (external-snapshotter
            // keeps pvc-as-source-protection on it until every snapshot of it is ready or
            // gone): the request that took it deletes it as it ends.
            if finish.result.is_some() {
                discard_unready_snapshots(cluster, acting).await?;
            }
            if finish.result == Some(Phase::Succeeded)
                && acting.request.kind == RequestKind::Upgrade
                && !acting.request.dry_run
            {
                apply_snapshot_retention(cluster, acting, now).await?;
            }
            // A version recorded as failed says why the upgrade to it failed.
            let why_failed = acting
                .upgrade
                .and_then(|u| u.status.as_ref()?.failure.as_ref())
                .map(|f| {
                    let message: String = f.message.chars().take(300).collect();
                    format!("{:?} failed ({}): {message}", f.phase, f.reason)
                });
            app_status::finish(
                cluster,
                &app.namespace().unwrap_or_default(),
                &app.name_any(),
                acting.holder,
                finish,
                why_failed.as_deref(),
                now,
            )
            .await
        }
        Action::SetSuspend { object, suspend } => set_suspend(cluster, object, *suspend)
            .await
            .map_err(Problem::from),
        Action::Scale { workload, replicas } => scale(cluster, workload, *replicas)
            .await
            .map_err(Problem::from),
        Action::RequestReconcile { token } => {
            let chain = acting
                .plan
                .map(|p| p.flux_objects.as_slice())
                .unwrap_or_default();
            // The GitRepository first, so it fetches our commit now instead of at its
            // interval (minutes on a real cluster); its children then apply it.
            match git_source(cluster, chain).await {
                Ok(source) => {
                    let (namespace, name) = &source.repository;
                    request_reconcile(
                        cluster,
                        FluxObjectKind::GitRepository,
                        namespace,
                        name,
                        token,
                    )
                    .await
                    .map_err(Problem::from)?;
                }
                // No GitRepository behind the chain (e.g. an OCI-sourced Kustomization):
                // nothing to wake, Flux fetches on its own.
                Err(e) if !e.is_retryable() => {
                    tracing::debug!(error = %e, "no GitRepository to ask for a fetch");
                }
                Err(e) => return Err(Problem::from(e)),
            }
            for object in chain {
                if matches!(
                    object.kind,
                    FluxObjectKind::Kustomization | FluxObjectKind::HelmRelease
                ) && !object.was_suspended
                {
                    // A chart from a HelmRepository is built from the repository's stored
                    // index: have it fetched now, before the HelmRelease asks for the chart.
                    if object.kind == FluxObjectKind::HelmRelease
                        && let Some((namespace, name)) = chart_helm_repository(cluster, object)
                            .await
                            .map_err(Problem::from)?
                    {
                        request_reconcile(
                            cluster,
                            FluxObjectKind::HelmRepository,
                            &namespace,
                            &name,
                            token,
                        )
                        .await
                        .map_err(Problem::from)?;
                    }
                    request_reconcile(cluster, object.kind, &object.namespace, &object.name, token)
                        .await
                        .map_err(Problem::from)?;
                }
            }
            Ok(())
        }
        Action::CreateSnapshot { volume, .. } => {
            let class = volume.snapshot_class_name.clone().ok_or_else(|| {
                Problem::terminal(
                    "NoSnapshotClass",
                    format!(
                        "PVC {}/{} has no VolumeSnapshotClass in the plan",
                        volume.namespace, volume.name
                    ),
                )
            })?;
            let app = needs_app(acting, "a snapshot (labelled with its app)")?;
            let (name, uid) = (app.name_any(), app.uid().unwrap_or_default());
            let owner = SnapshotOwner {
                name: &name,
                uid: &uid,
                purpose: match acting.request.kind {
                    RequestKind::Upgrade => PRE_UPGRADE,
                    RequestKind::Rollback => SAFETY,
                },
            };
            let wanted = snapshot_for(
                volume,
                &owner,
                &acting.request.name,
                &acting.request.uid,
                &class,
            );
            create_snapshot(cluster, &wanted)
                .await
                .map_err(Problem::from)
        }
        Action::SetClaimRetention {
            workload,
            when_scaled,
        } => set_when_scaled(cluster, workload, when_scaled)
            .await
            .map_err(Problem::from),
        Action::RetainVolume {
            volume,
            persistent_volume,
        } => retain_volume(
            cluster,
            persistent_volume,
            &volume.namespace,
            &volume.name,
            &acting.request.name,
            &acting.request.uid,
        )
        .await
        .map_err(Problem::from),
        Action::DeleteClaim { volume } => {
            // The last look before data is destroyed: the snapshot that will replace it,
            // read fresh, must be fit to restore from, or the PVC stays as it is.
            let name = volume.restore_from.as_deref().ok_or_else(|| {
                Problem::terminal(
                    "Internal",
                    format!(
                        "PVC {}/{} has no snapshot to restore from; not deleting it",
                        volume.namespace, volume.name
                    ),
                )
            })?;
            usable_source(cluster, volume, name).await?;
            delete_claim(cluster, &volume.namespace, &volume.name)
                .await
                .map_err(Problem::from)
        }
        Action::RestoreClaim {
            volume,
            snapshot: name,
        } => {
            // Read fresh: the claim's data is restored from what this read finds.
            let source = usable_source(cluster, volume, name).await?;
            let restore_size = source.status.and_then(|s| s.restore_size);
            create_claim(
                cluster,
                &restored_claim(volume, name, restore_size.as_ref()),
            )
            .await
            .map_err(Problem::from)
        }
        Action::Commit { versions, subject } => commit(ctx, acting, versions, subject).await,
        Action::CreateRollback { name } => create_rollback(ctx, acting, name).await,
    }
}

/// The snapshot `name` to restore `volume` from, read fresh from the API server, if it is
/// fit to restore from; else the terminal problem saying which snapshot and why.
async fn usable_source(
    cluster: &Cluster,
    volume: &crate::api::PlannedVolume,
    name: &str,
) -> Result<crate::cluster::snapshots::VolumeSnapshot, Problem> {
    let (found, handle) = snapshot_and_handle(&cluster.fresh(), &volume.namespace, name)
        .await
        .map_err(Problem::from)?;
    match (
        unusable_for_restore(
            found.as_ref(),
            handle.as_deref(),
            &volume.namespace,
            name,
            &volume.name,
            volume.restore_from_handle.as_deref(),
        ),
        found,
    ) {
        (None, Some(source)) => Ok(source),
        (why, _) => Err(Problem::terminal(
            SNAPSHOT_UNUSABLE,
            why.unwrap_or_else(|| format!("VolumeSnapshot {}/{name} is gone", volume.namespace)),
        )),
    }
}

async fn commit(
    ctx: &Context,
    acting: &Acting<'_>,
    versions: &std::collections::BTreeMap<String, String>,
    subject: &str,
) -> Result<(), Problem> {
    let app = needs_app(acting, "a commit")?;
    let chain = acting
        .plan
        .map(|p| p.flux_objects.as_slice())
        .unwrap_or_default();
    let location = locate(ctx, app, chain).await?;
    let repo = open(ctx, &location).await?;
    let signing = signing_key(ctx, app).await?;
    // Locate the fields on the current head; each edit re-applies on whatever head the push
    // lands on (a lost race re-runs it), so only the fields' bytes change.
    let fields = version_fields(repo.as_ref(), app).await?.fields;
    let mut paths: Vec<String> = fields
        .iter()
        .filter(|f| versions.contains_key(&f.name))
        .map(|f| f.file.clone())
        .collect();
    paths.sort();
    paths.dedup();
    // Every edit starts from the versions the plan was made from: a field someone else has
    // changed since (before our first fetch or during a lost push race) is not overwritten.
    let expected = acting.plan.map(|p| p.from.clone()).unwrap_or_default();
    let changed_in_git: Arc<Mutex<Option<String>>> = Arc::default();
    let edits = paths
        .into_iter()
        .map(|path| {
            let fields = fields.clone();
            let versions = versions.clone();
            let expected = expected.clone();
            let changed_in_git = changed_in_git.clone();
            let file = path.clone();
            FileEdit::new(
                path,
                move |current: Option<&[u8]>| -> Result<EditResult, EditError> {
                    let bytes = current.ok_or_else(|| format!("{file} is gone from the branch"))?;
                    let text =
                        crate::manifest::text_from_bytes(bytes).map_err(|e| e.to_string())?;
                    let edited =
                        match edit_file_expecting(text, &file, &fields, &expected, &versions) {
                            Ok(edited) => edited,
                            Err(e) => {
                                if matches!(e, FieldError::ChangedInGit { .. }) {
                                    *changed_in_git.lock().unwrap_or_else(|p| p.into_inner()) =
                                        Some(e.to_string());
                                }
                                return Err(e.to_string().into());
                            }
                        };
                    Ok(if edited == text {
                        EditResult::Unchanged
                    } else {
                        EditResult::Replace(edited.into_bytes())
                    })
                },
            )
        })
        .collect();
    let namespace = app.namespace().unwrap_or_default();
    let request = CommitRequest {
        message: subject.to_owned(),
        author: ctx.settings.author.clone(),
        trailers: request_trailers(&namespace, &acting.request.name, &acting.request.uid),
        edits,
        idempotency: Some((REQUEST_UID_TRAILER.into(), acting.request.uid.clone())),
        signing,
    };
    match repo.commit_and_push(request).await {
        Ok(_) => Ok(()),
        Err(error) => {
            let changed = changed_in_git
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            Err(match changed {
                Some(message) => Problem::terminal("VersionChangedInGit", message),
                None => push_problem(
                    error,
                    &location,
                    acting
                        .plan
                        .and_then(|p| p.git.as_ref())
                        .and_then(|g| g.push_access),
                ),
            })
        }
    }
}

async fn create_rollback(ctx: &Context, acting: &Acting<'_>, name: &str) -> Result<(), Problem> {
    let Some(upgrade) = acting.upgrade else {
        return Err(Problem::terminal(
            "Internal",
            "only an upgrade creates a rollback",
        ));
    };
    let namespace = upgrade.namespace().unwrap_or_default();
    let mut rollback = RollbackRequest::new(
        name,
        RollbackRequestSpec {
            upgrade_request: upgrade.name_any(),
            safety_snapshot: true,
            dry_run: false,
            force: false,
        },
    );
    rollback.metadata.namespace = Some(namespace.clone());
    rollback.metadata.labels =
        Some([("fluxgate.dev/automatic".to_owned(), "true".to_owned())].into());
    rollback.metadata.owner_references = Some(vec![OwnerReference {
        api_version: UpgradeRequest::api_version(&()).into_owned(),
        kind: UpgradeRequest::kind(&()).into_owned(),
        name: upgrade.name_any(),
        uid: upgrade.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    match Api::<RollbackRequest>::namespaced(ctx.cluster.client().clone(), &namespace)
        .create(&PostParams::default(), &rollback)
        .await
    {
        Ok(created) => {
            ctx.cluster.wrote(WatchedKind::RollbackRequest, &created);
            Ok(())
        }
        Err(e) if crate::cluster::error::already_exists(&e) => Ok(()),
        Err(e) => Err(Problem::from(ClusterError::api(
            "creating",
            format!("RollbackRequest {namespace}/{name}"),
            e,
        ))),
    }
}

/// After a successful upgrade, prunes the app's older snapshots per its retention policy
/// (never a PVC's newest), in every namespace its volumes live in. Only this app's (by its
/// UID), never a safety snapshot, never one of this upgrade (now the app's last, which a
/// rollback restores from) nor one a rollback not finished restores from. Runs before the
/// lock is released, and again on a retry: pruning is idempotent.
async fn apply_snapshot_retention(
    cluster: &Cluster,
    acting: &Acting<'_>,
    now: jiff::Timestamp,
) -> Result<(), Problem> {
    let app = needs_app(acting, "snapshot retention")?;
    let retention = &app.spec.snapshots.retention;
    let max_age = match &retention.max_age {
        None => None,
        Some(age) => Some(
            age.to_std()
                .map_err(|e| {
                    Problem::terminal(
                        "InvalidRetention",
                        format!("spec.snapshots.retention.maxAge: {e}"),
                    )
                })?
                .as_secs()
                .try_into()
                .unwrap_or(i64::MAX),
        ),
    };
    let namespaces: std::collections::BTreeSet<&str> = acting
        .plan
        .map(|p| p.volumes.iter().map(|v| v.namespace.as_str()).collect())
        .unwrap_or_default();
    let app_uid = app.uid().unwrap_or_default();
    // Read fresh: retention deletes snapshots, and must see every one that exists.
    let fresh = cluster.fresh();
    let scope = RetentionScope {
        app_uid: &app_uid,
        last_upgrade_uid: &acting.request.uid,
        restoring: pending_restores(&fresh, &app.namespace().unwrap_or_default()).await?,
        max_count: usize::try_from(retention.max_count).unwrap_or(usize::MAX),
        max_age_secs: max_age,
    };
    let app = app.name_any();
    for namespace in namespaces {
        let deleted = apply_retention(&fresh, namespace, &scope, now)
            .await
            .map_err(Problem::from)?;
        if !deleted.is_empty() {
            tracing::info!(%app, %namespace, ?deleted, "snapshot retention pruned old snapshots");
        }
    }
    Ok(())
}

/// What the app's rollbacks not finished yet restore from: the snapshots their plans name
/// and, for one not admitted yet, every snapshot of the upgrade it undoes (by request name).
async fn pending_restores(cluster: &Cluster, namespace: &str) -> Result<PendingRestores, Problem> {
    let rollbacks = super::observe::rollback_requests(cluster, namespace).await?;
    let mut pending = PendingRestores::default();
    for rollback in rollbacks.iter() {
        let status = rollback.status.as_ref();
        if status.and_then(|s| s.phase).is_some_and(Phase::is_done) {
            continue;
        }
        match status.and_then(|s| s.plan.as_ref()) {
            Some(plan) => pending.snapshots.extend(
                plan.volumes
                    .iter()
                    .filter_map(|v| Some((v.namespace.clone(), v.restore_from.clone()?))),
            ),
            // Not admitted yet: it will restore from its upgrade's snapshots.
            None => {
                pending
                    .upgrades
                    .insert(rollback.spec.upgrade_request.clone());
            }
        }
    }
    Ok(pending)
}

/// Deletes the request's snapshots that are not ready to use (failed, or still being cut
/// when the request ended), read fresh; a ready one is never touched here.
async fn discard_unready_snapshots(cluster: &Cluster, acting: &Acting<'_>) -> Result<(), Problem> {
    let Some(plan) = acting.plan else {
        return Ok(());
    };
    let fresh = cluster.fresh();
    for volume in &plan.volumes {
        let name = snapshot_name(&acting.request.uid, &volume.name);
        let found = crate::cluster::snapshots::ops::snapshot(&fresh, &volume.namespace, &name)
            .await
            .map_err(Problem::from)?;
        if found.as_ref().is_some_and(unready) {
            tracing::info!(request = %acting.request.name, snapshot = %name, "deleting a snapshot that never became ready");
            delete_snapshot(&fresh, &volume.namespace, &name)
                .await
                .map_err(Problem::from)?;
        }
    }
    Ok(())
}
