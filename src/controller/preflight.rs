//! Dry-run preflight: everything a real run would need, checked without changing anything —
//! Git readable and every targeted field editable, the credentials allowed to push and the
//! commit signed as the GitRepository requires, the Flux objects and workloads patchable
//! by Fluxgate (SelfSubjectAccessReview), and a snapshot class for every volume's driver.

use super::Context;
use super::git_access::{VersionFiles, locate, open, version_fields};
use super::git_write::{check_push_access, check_signing, deploying_source};
use crate::api::{FluxObjectKind, ManagedApp, Plan, WorkloadKind};
use crate::cluster::error::describe;
use crate::cluster::flux::ops::api_resource;
use crate::cluster::snapshots::class_for_driver;
use crate::cluster::snapshots::ops::classes;
use crate::manifest::fields::{edit_file, shared_readers};
use crate::workflow::Problem;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// Runs every check; the first failure is returned as a terminal problem naming what to fix.
/// On success, what a person should know before the real run (empty when nothing): which
/// version fields are anchored scalars that other paths read too.
pub async fn preflight(ctx: &Context, app: &ManagedApp, plan: &Plan) -> Result<String, Problem> {
    // Git: readable, and each file takes the edit (the result is discarded).
    let location = locate(ctx, app, &plan.flux_objects).await?;
    let repo = open(ctx, &location).await?;
    let VersionFiles { files, fields, .. } = version_fields(repo.as_ref(), app).await?;
    let mut notes = Vec::new();
    for field in fields.iter().filter(|f| plan.to.contains_key(&f.name)) {
        let text = files
            .get(&field.file)
            .map(String::as_str)
            .unwrap_or_default();
        edit_file(text, &field.file, &fields, &plan.to).map_err(Problem::from)?;
        if let Some(shared) = shared_readers(text, field).map_err(Problem::from)? {
            notes.push(format!(
                "version field {} (`{}` in {}) is {shared}: the edit changes it for all of them",
                field.name, field.path, field.file
            ));
        }
    }
    // The push the real run would make: allowed, and signed as Flux requires.
    let deploying = deploying_source(ctx, &plan.flux_objects).await?;
    check_signing(ctx, app, deploying.as_ref()).await?;
    check_push_access(repo.as_ref(), &location).await?;
    // RBAC: what the run would patch.
    for object in &plan.flux_objects {
        let resource = api_resource(object.kind);
        allowed(
            ctx,
            "patch",
            &resource.group,
            &resource.plural,
            &object.namespace,
            &object.name,
        )
        .await?;
        if matches!(
            object.kind,
            FluxObjectKind::Kustomization | FluxObjectKind::HelmRelease
        ) {
            allowed(
                ctx,
                "get",
                &resource.group,
                &resource.plural,
                &object.namespace,
                &object.name,
            )
            .await?;
        }
    }
    for workload in &plan.workloads {
        let plural = match workload.kind {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
        };
        allowed(
            ctx,
            "patch",
            "apps",
            plural,
            &workload.namespace,
            &workload.name,
        )
        .await?;
    }
    // Snapshots: a class for every volume's CSI driver, and the right to create them.
    if app.spec.snapshots.enabled && !plan.volumes.is_empty() {
        let available = classes(&ctx.cluster)
            .await
            .map_err(|e| Problem::retryable("ApiError", e.to_string()))?;
        for volume in &plan.volumes {
            let driver = volume.csi_driver.as_deref().ok_or_else(|| {
                Problem::terminal(
                    "NotSnapshottable",
                    format!(
                        "PVC {}/{} is not a CSI volume; exclude it or disable snapshots",
                        volume.namespace, volume.name
                    ),
                )
            })?;
            class_for_driver(driver, app.spec.snapshots.class_name.as_deref(), &available)
                .map_err(|e| {
                    Problem::terminal(
                        "NoSnapshotClass",
                        format!("PVC {}/{}: {e}", volume.namespace, volume.name),
                    )
                })?;
            allowed(
                ctx,
                "create",
                "snapshot.storage.k8s.io",
                "volumesnapshots",
                &volume.namespace,
                "",
            )
            .await?;
        }
    }
    // What the real run would protect, as the ManagedApp's status says it.
    let (protection, _) = crate::cluster::discovery::ops::protection(&ctx.cluster, app)
        .await
        .map_err(Problem::from)?;
    notes.extend(protection.snapshotted.iter().map(|v| {
        format!(
            "would snapshot PVC {} with {} (deletionPolicy {})",
            v.pvc, v.snapshot_class, v.deletion_policy
        )
    }));
    notes.extend(
        protection
            .unprotected
            .iter()
            .map(|u| format!("NOT PROTECTED: {u}")),
    );
    Ok(notes.join("; "))
}

async fn allowed(
    ctx: &Context,
    verb: &str,
    group: &str,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Result<(), Problem> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(plural.into()),
                namespace: Some(namespace.into()),
                name: (!name.is_empty()).then(|| name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(ctx.cluster.client().clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            Problem::retryable(
                "ApiError",
                format!(
                    "asking whether Fluxgate may {verb} {plural}: {}",
                    describe(&e)
                ),
            )
        })?;
    if answer.status.is_some_and(|s| s.allowed) {
        Ok(())
    } else {
        let object = if name.is_empty() {
            plural.to_owned()
        } else {
            format!("{plural} {namespace}/{name}")
        };
        Err(Problem::terminal(
            "Forbidden",
            format!("Fluxgate may not {verb} {object} ({group}); grant it in Fluxgate's RBAC"),
        ))
    }
}
