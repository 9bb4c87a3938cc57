//! Admitting a request: everything it will touch, decided before it touches anything — the
//! versions from Git now, the target validated against the app and its failed versions,
//! the Flux objects to suspend with their prior state, the workloads with their replicas
//! and the volumes with their full spec. A rollback's plan is derived from its upgrade's.

use super::Context;
use super::git_access::{GIT_REF_NOT_BRANCH, VersionFiles, locate, location, open, version_fields};
use super::git_write::{check_push_access, check_signing};
use super::rollback_checks::{later_changes, moved_in_git, refusal};
use super::suspend_in_git::refuse_suspend_in_git;
use crate::api::{
    ManagedApp, Phase, Plan, PlannedGit, RequestStatus, RollbackRequestSpec, UpgradeRequest,
    WorkloadKind,
};
use crate::cluster::discovery::ops::{VolumeSelection, claims_deleted_on_scale_down, discover_app};
use crate::cluster::error::ClusterError;
use crate::cluster::flux::ops::{chain_error_reason, git_source, suspend_chain};
use crate::cluster::snapshots::ops::{classes, snapshot_and_handle};
use crate::cluster::snapshots::unusable_for_restore;
use crate::manifest::fields::{check_target, current_versions, edit_file};
use crate::manifest::versions_equal;
use crate::workflow::{Problem, SNAPSHOT_UNUSABLE};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use std::collections::BTreeMap;

fn cluster_problem(reason: &str, error: crate::cluster::error::ClusterError) -> Problem {
    Problem::from(error).with_reason(reason)
}

/// The versions an upgrade asks for: `target`, `version` (single-version apps) or the app's
/// `availableUpdate`.
fn requested_target(
    upgrade: &UpgradeRequest,
    app: &ManagedApp,
    field_names: &[String],
) -> Result<BTreeMap<String, String>, Problem> {
    if let Some(target) = &upgrade.spec.target {
        return Ok(target.clone());
    }
    if let Some(version) = &upgrade.spec.version {
        return match field_names {
            [only] => Ok(BTreeMap::from([(only.clone(), version.clone())])),
            _ => Err(Problem::terminal(
                "AmbiguousVersion",
                format!(
                    "spec.version needs an app with exactly one version field; this one has {}: use spec.target",
                    field_names.join(", ")
                ),
            )),
        };
    }
    let available: BTreeMap<String, String> = app
        .status
        .as_ref()
        .map(|s| {
            s.available_update
                .iter()
                .map(|(k, v)| (k.clone(), v.version.clone()))
                .collect()
        })
        .unwrap_or_default();
    if available.is_empty() {
        return Err(Problem::terminal(
            "NoTarget",
            "no target, no version and the ManagedApp offers no available update: set spec.target or spec.version",
        ));
    }
    Ok(available)
}

/// The plan of an UpgradeRequest, or why it cannot run.
pub async fn upgrade_plan(
    ctx: &Context,
    upgrade: &UpgradeRequest,
    app: &ManagedApp,
) -> Result<Plan, Problem> {
    // Read fresh: the plan says what is suspended, scaled and snapshotted (which objects
    // someone else had suspended decides what we leave alone), and admitting takes the lock.
    let cluster = &ctx.cluster.fresh();
    let namespace = app.namespace().unwrap_or_default();
    let chain = suspend_chain(cluster, &namespace, &app.spec.source, &app.spec.suspend)
        .await
        .map_err(|e| cluster_problem(chain_error_reason(&e), e))?;
    if let Some(source) = chain
        .iter()
        .find(|o| o.name == app.spec.source.name && o.was_suspended)
    {
        return Err(Problem::terminal(
            "SourceSuspended",
            format!(
                "{:?} {}/{} is suspended, so Flux would never apply the upgrade; resume it first",
                source.kind, source.namespace, source.name
            ),
        ));
    }
    // The GitRepository Flux deploys the app from must follow a branch, whatever the app
    // names as its own location: Reconcile waits for that repository to serve our commit.
    let flux_git = match git_source(cluster, &chain).await {
        Err(e) if e.is_retryable() => return Err(e.into()),
        flux_git => flux_git,
    };
    if let Ok(source) = &flux_git
        && let Err(why) = source.branch()
    {
        return Err(Problem::terminal(GIT_REF_NOT_BRANCH, why));
    }
    let deploying = flux_git.as_ref().ok().cloned();
    let location = location(app, flux_git)?;
    let repo = open(ctx, &location).await?;
    let VersionFiles {
        head: revision,
        files,
        fields,
    } = version_fields(repo.as_ref(), app).await?;
    refuse_suspend_in_git(ctx, &chain, deploying.as_ref(), repo.as_ref()).await?;
    // Refuse what Git or Flux would refuse at Commit, before anything is touched.
    check_signing(ctx, app, deploying.as_ref()).await?;
    let current = current_versions(&fields).map_err(Problem::from)?;
    let names: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    let target = requested_target(upgrade, app, &names)?;
    check_target(&fields, &target)
        .map_err(|e| Problem::terminal("InvalidTarget", e.to_string()))?;
    if !upgrade.spec.force {
        let failed = app
            .status
            .as_ref()
            .map(|s| s.failed_versions.as_slice())
            .unwrap_or_default();
        if let Some(f) = failed.iter().find(|f| {
            target
                .get(&f.name)
                .is_some_and(|t| versions_equal(t, &f.version))
        }) {
            return Err(Problem::terminal(
                "FailedVersion",
                format!(
                    "{} {} was rolled back before ({}); set spec.force: true to try it again",
                    f.name, f.version, f.upgrade_request
                ),
            ));
        }
    }
    if target
        .iter()
        .all(|(k, v)| current.get(k).is_some_and(|c| c == v))
    {
        return Err(Problem::terminal(
            "AlreadyAtTarget",
            format!(
                "Git already holds {}; nothing to upgrade",
                crate::api::versions_summary(&target)
            ),
        ));
    }
    // Each file takes the edit (the text is discarded): a target the fields cannot hold —
    // no digest for a digest-pinned tag, say — is refused before anything is touched.
    let targeted: std::collections::BTreeSet<&str> = fields
        .iter()
        .filter(|f| target.contains_key(&f.name))
        .map(|f| f.file.as_str())
        .collect();
    for file in targeted {
        let text = files.get(file).map(String::as_str).unwrap_or_default();
        edit_file(text, file, &fields, &target).map_err(Problem::from)?;
    }
    // One connection, bounded by the Git timeouts, only in this admitting reconcile; a dry
    // run asks in Preflight instead. The answer is kept in the plan for Commit's messages.
    let push_access = if upgrade.spec.dry_run {
        None
    } else {
        Some(check_push_access(repo.as_ref(), &location).await?)
    };
    let snapshots_wanted =
        app.spec.snapshots.enabled && !upgrade.spec.skip_snapshot && !upgrade.spec.dry_run;
    let all_classes = if snapshots_wanted {
        Some(
            classes(cluster)
                .await
                .map_err(|e| cluster_problem("ApiError", e))?,
        )
    } else {
        None
    };
    let selection = VolumeSelection {
        include: &app.spec.snapshots.include,
        exclude: &app.spec.snapshots.exclude,
        class_name: app.spec.snapshots.class_name.as_deref(),
        classes: all_classes.as_deref(),
    };
    let source_namespace = app.source_namespace();
    let inventory = discover_app(
        cluster,
        app.spec.source.kind,
        &source_namespace,
        &app.spec.source.name,
        &selection,
    )
    .await
    .map_err(|e| cluster_problem("DiscoveryFailed", e))?;
    let from = target
        .keys()
        .filter_map(|k| current.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    let mut files_touched: Vec<String> = fields
        .iter()
        .filter(|f| target.contains_key(&f.name))
        .map(|f| f.file.clone())
        .collect();
    files_touched.dedup();
    Ok(Plan {
        from,
        to: target,
        git: Some(PlannedGit {
            url: location.shown_url(),
            branch: location.branch,
            revision,
            files: files_touched,
            push_access,
        }),
        flux_objects: chain,
        workloads: inventory.workloads,
        volumes: inventory.volumes,
    })
}

/// The plan of a RollbackRequest: its upgrade's plan reversed — back to the upgrade's
/// `from` versions, the same Flux objects and workloads with their original state, and each
/// volume restored from the upgrade's ready snapshot of it — once it is safe to touch
/// anything: the upgrade is still the app's last change (or the request says `force`),
/// and every snapshot it restores from exists, is ready with no error and was taken of
/// its PVC. Otherwise the refusal says which and why, before anything is touched.
pub async fn rollback_plan(
    ctx: &Context,
    rollback: &RollbackRequestSpec,
    upgrade: &UpgradeRequest,
    app: &ManagedApp,
) -> Result<Plan, Problem> {
    let name = upgrade.name_any();
    let status: &RequestStatus = upgrade.status.as_ref().ok_or_else(|| {
        Problem::terminal(
            "NothingToRollBack",
            format!("UpgradeRequest {name} has not started"),
        )
    })?;
    let plan = status.plan.as_ref().ok_or_else(|| {
        Problem::terminal(
            "NothingToRollBack",
            format!("UpgradeRequest {name} has no plan"),
        )
    })?;
    if status.commit.is_none() || upgrade.spec.dry_run {
        return Err(Problem::terminal(
            "NothingToRollBack",
            format!(
                "UpgradeRequest {name} never committed a change (phase {:?}); there is nothing to roll back",
                status.phase.unwrap_or(Phase::Admit)
            ),
        ));
    }
    let mut volumes = plan.volumes.clone();
    for volume in &mut volumes {
        let taken = status
            .snapshots
            .iter()
            .find(|s| s.pvc == volume.name && s.ready_to_use);
        volume.restore_from = taken.map(|s| s.name.clone());
        volume.restore_from_handle = taken.and_then(|s| s.snapshot_handle.clone());
    }
    // Read fresh: this decides whether old data may replace what the app holds now.
    let cluster = &ctx.cluster.fresh();
    let namespace = upgrade.namespace().unwrap_or_default();
    let location = locate(ctx, app, &plan.flux_objects).await?;
    let repo = open(ctx, &location).await?;
    let VersionFiles { head, fields, .. } = version_fields(repo.as_ref(), app).await?;
    let current = current_versions(&fields).map_err(Problem::from)?;
    let moved = moved_in_git(&plan.to, &current);
    let upgrades: Vec<UpgradeRequest> = cluster
        .list::<UpgradeRequest>(&namespace)
        .await
        .map_err(|e| {
            cluster_problem(
                "ApiError",
                ClusterError::api("listing", format!("UpgradeRequests in {namespace}"), e),
            )
        })?
        .iter()
        .map(|u| u.as_ref().clone())
        .collect();
    let app_status = app.status.clone().unwrap_or_default();
    let later = later_changes(upgrade, &upgrades, &app_status);
    if (!moved.is_empty() || !later.is_empty()) && !rollback.force {
        return Err(refusal(
            &name,
            &moved,
            &later,
            &plan.from,
            &volumes,
            rollback.safety_snapshot,
        ));
    }
    let mut unusable = Vec::new();
    for volume in &volumes {
        let Some(source) = &volume.restore_from else {
            continue;
        };
        let (found, handle) = snapshot_and_handle(cluster, &volume.namespace, source)
            .await
            .map_err(Problem::from)?;
        unusable.extend(unusable_for_restore(
            found.as_ref(),
            handle.as_deref(),
            &volume.namespace,
            source,
            &volume.name,
            volume.restore_from_handle.as_deref(),
        ));
    }
    if !unusable.is_empty() {
        return Err(Problem::terminal(
            SNAPSHOT_UNUSABLE,
            format!(
                "{}; nothing was touched: every volume keeps the data it holds now",
                unusable.join("; ")
            ),
        ));
    }
    // A StatefulSet's PVC retention as it must be put back: the upgrade's record while the
    // upgrade still holds the app (it may not have put it back yet), else as it is now.
    let upgrade_holds_app = status.phase.is_some_and(Phase::holds_app);
    let mut workloads = plan.workloads.clone();
    for workload in &mut workloads {
        if workload.kind != WorkloadKind::StatefulSet
            || (upgrade_holds_app && workload.claim_retention.is_some())
        {
            continue;
        }
        workload.claim_retention = cluster
            .get::<StatefulSet>(&workload.namespace, &workload.name)
            .await
            .map_err(|e| {
                cluster_problem(
                    "ApiError",
                    ClusterError::api(
                        "reading",
                        format!("StatefulSet {}/{}", workload.namespace, workload.name),
                        e,
                    ),
                )
            })?
            .and_then(|live| claims_deleted_on_scale_down(&live));
    }
    let from = plan
        .to
        .keys()
        .filter_map(|k| current.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    let git = plan.git.clone().map(|g| PlannedGit {
        revision: head,
        ..g
    });
    Ok(Plan {
        from,
        to: plan.from.clone(),
        git,
        flux_objects: plan.flux_objects.clone(),
        workloads,
        volumes,
    })
}
