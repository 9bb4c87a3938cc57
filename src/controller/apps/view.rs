//! What the ManagedApp controller owns in an app's status, computed from what it observed:
//! `currentVersions` from Git, `Ready` from the app's health, `availableUpdate` from
//! Renovate; one reconcile builds the view and writes it once. A lock whose request is gone
//! is released through the lock's owner ([`crate::controller::app_status`]).

use super::automatic::automatic_upgrade;
use super::events::{publish, publish_input_news};
use super::git_memo::git_fields;
use super::{AppError, Shared, resync_after};
use crate::controller::app_status::{holder_exists, release_stale_lock};

use crate::api::conditions::{PROTECTED, READY, condition, set_condition};
use crate::api::{ManagedApp, ManagedAppStatus, versions_summary};
use crate::cluster::discovery::ops::{discover_workloads, protection};
use crate::cluster::health::ops::app_health;
use crate::controller::Context;
use crate::controller::app_status::update_status;
use crate::controller::renovate_input::RenovateData;
use crate::manifest::fields::current_versions;
use crate::renovate::app::{AppContext, evaluate};
use crate::workflow::Problem;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What this controller owns in the app's status, computed from what it observed.
#[derive(Debug)]
pub(super) struct View {
    /// From Git; None when Git could not be read (what is known stays).
    pub(super) current_versions: Option<BTreeMap<String, String>>,
    pub(super) ready: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// From Renovate; None leaves availableUpdate and its condition alone.
    pub(super) updates: Option<crate::renovate::status::Refreshed>,
    /// The UID of a lock whose request is gone.
    pub(super) stale_lock: Option<String>,
    /// What an upgrade would protect, with the `Protected` condition; None when it could
    /// not be found out now (what is known stays).
    pub(super) protection: Option<(
        crate::api::Protection,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
    )>,
    /// Warnings to publish as Events (reason, message).
    pub(super) warnings: Vec<(&'static str, String)>,
    /// Normal Events (reason, message).
    pub(super) notes: Vec<(&'static str, String)>,
}

pub(super) async fn reconcile(
    app: Arc<ManagedApp>,
    shared: Arc<Shared>,
) -> Result<Requeue, AppError> {
    if app.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let ctx = &shared.ctx;
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let now = jiff::Timestamp::now();
    let status = app.status.clone().unwrap_or_default();
    let mut view = View {
        current_versions: None,
        ready: None,
        updates: None,
        stale_lock: None,
        protection: None,
        warnings: Vec::new(),
        notes: Vec::new(),
    };

    let fields = match git_fields(&shared, &app, Instant::now()).await {
        Ok((fields, scope)) => {
            match current_versions(&fields) {
                Ok(versions) => view.current_versions = Some(versions),
                Err(e) => view.warnings.push(("VersionFieldInvalid", e.to_string())),
            }
            Some((fields, scope))
        }
        Err(problem) => {
            view.warnings.push(("GitUnreadable", problem.message));
            None
        }
    };

    view.ready = Some(match &status.active_operation {
        // The request's own status tells the story phase by phase; the app is not Ready
        // while it is being changed, and its health is read again once the lock is released.
        Some(active) => condition(
            READY,
            false,
            "OperationInProgress",
            format!("{:?} {} is changing the app", active.kind, active.name),
            app.metadata.generation,
            Time(now),
        ),
        None => health_condition(ctx, &app, &namespace, now).await?,
    });

    // While a request runs, its plan says what it protects; the app's view waits for it.
    if status.active_operation.is_none() {
        match protection(&ctx.cluster, &app).await {
            Ok((found, every_volume)) => {
                let condition = protected_condition(&found, every_volume, &app, now);
                view.protection = Some((found, condition));
            }
            Err(e) if e.is_retryable() => return Err(AppError(e.to_string())),
            Err(e) => view.warnings.push((
                "ProtectionUnknown",
                format!("finding what an upgrade would protect: {e}"),
            )),
        }
    }

    let (renovate, news) = shared.renovate.read();
    if let Some(news) = news {
        publish_input_news(&shared, &news).await;
    }
    let findings = match renovate {
        RenovateData::Parsed(parsed) => Some(parsed),
        RenovateData::Stale(parsed, why) => {
            view.warnings.push((
                "RenovateInputUnusable",
                format!(
                    "{why}; the offers from the last usable Renovate input are kept until a \
                     usable one replaces them"
                ),
            ));
            Some(parsed)
        }
        RenovateData::Unusable(why) => {
            view.warnings.push(("RenovateInputUnusable", why));
            None
        }
        RenovateData::NotConfigured | RenovateData::Missing(_) => None,
    };
    if let (Some(parsed), Some((fields, scope))) = (findings, &fields) {
        let updates = evaluate(
            AppContext {
                fields,
                scope,
                policy: &app.spec.update_policy,
                failed: &status.failed_versions,
                previous: &status.available_update,
            },
            &parsed.findings,
        );
        for note in &updates.notes {
            tracing::debug!(app = %name, %note, "Renovate");
        }
        for cleared in &updates.refreshed.cleared {
            view.notes.push((
                "UpdateCleared",
                format!(
                    "{} {} is no longer offered: {}",
                    cleared.field, cleared.version, cleared.reason
                ),
            ));
        }
        view.updates = Some(updates.refreshed);
    }

    if let Some(active) = &status.active_operation {
        // A cached holder is believed; "gone" is read fresh (app_status::holder_exists).
        if !holder_exists(&ctx.cluster, &namespace, active)
            .await
            .map_err(|p| AppError(p.message))?
        {
            view.stale_lock = Some(active.uid.clone());
            view.warnings.push((
                "StaleLockReleased",
                format!(
                    "{:?} {} held the app but no longer exists; the lock is released",
                    active.kind, active.name
                ),
            ));
        }
    }

    let mut next = status.clone();
    apply(&mut next, &view, app.metadata.generation);
    let view_changed = next != status;
    if let Some(stale) = &view.stale_lock {
        release_stale_lock(&ctx.cluster, &namespace, &name, stale)
            .await
            .map_err(|p| AppError(p.message))?;
        next.active_operation = None;
    }
    if view_changed {
        let generation = app.metadata.generation;
        update_status(&ctx.cluster, &namespace, &name, |fresh| {
            let before = fresh.clone();
            apply(fresh, &view, generation);
            Ok(*fresh != before)
        })
        .await
        .map_err(|p| AppError(p.message))?;
    }
    publish(&shared, &app, &view).await;

    let mut requeue = resync_after(&app);
    if let Some(wait) = automatic_upgrade(&shared, &app, &next, now).await? {
        requeue = requeue.min(wait);
    }
    Ok(Requeue::requeue(requeue))
}

/// Puts the view's fields onto `status`, leaving what requests own alone (see the table
/// in [`crate::controller::app_status`]). A request that finished after Git was read has
/// woken this controller again, and that reconcile reads Git after the request's commit.
pub(super) fn apply(status: &mut ManagedAppStatus, view: &View, generation: Option<i64>) {
    if let Some(versions) = &view.current_versions {
        status.current_versions = versions.clone();
        status.current = Some(versions_summary(versions));
    }
    if let Some(ready) = &view.ready {
        set_condition(&mut status.conditions, ready.clone());
    }
    if let Some(updates) = &view.updates {
        status.available_update = updates.available.clone();
        status.available = updates.summary.clone();
        // set_condition keeps the old transition time while the status stays the same.
        set_condition(
            &mut status.conditions,
            updates
                .condition
                .to_condition(generation, Time(jiff::Timestamp::now())),
        );
    }
    if let Some((protection, condition)) = &view.protection {
        status.protection = Some(protection.clone());
        set_condition(&mut status.conditions, condition.clone());
    }
    status.observed_generation = generation;
}

/// The `Protected` condition: True when an upgrade would snapshot every volume of the app
/// (an app without volumes has nothing to lose), else False naming what is not.
fn protected_condition(
    protection: &crate::api::Protection,
    every_volume: bool,
    app: &ManagedApp,
    now: jiff::Timestamp,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let (reason, message) = match (every_volume, protection.snapshotted.len()) {
        (true, 0) => ("NoVolumes", "the app has no volumes to snapshot".to_owned()),
        (true, n) => (
            "AllVolumesSnapshotted",
            format!("an upgrade snapshots all {n} volumes of the app first"),
        ),
        (false, _) => ("VolumesUnprotected", protection.unprotected.join("; ")),
    };
    condition(
        PROTECTED,
        every_volume,
        reason,
        message,
        app.metadata.generation,
        Time(now),
    )
}

/// The `Ready` condition from the app's health now; a retryable failure to read it is an
/// error (the reconcile is retried), a terminal one is reported in the condition.
pub(super) async fn health_condition(
    ctx: &Context,
    app: &ManagedApp,
    namespace: &str,
    now: jiff::Timestamp,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition, AppError> {
    Ok(match health(ctx, app, namespace).await {
        Ok(report) if report.healthy() => condition(
            READY,
            true,
            "Healthy",
            report.to_string(),
            app.metadata.generation,
            Time(now),
        ),
        Ok(report) => condition(
            READY,
            false,
            "Unhealthy",
            report.to_string(),
            app.metadata.generation,
            Time(now),
        ),
        Err(problem) if problem.retryable => {
            return Err(AppError(format!(
                "checking the health of ManagedApp {namespace}/{}: {}",
                app.name_any(),
                problem.message
            )));
        }
        Err(problem) => condition(
            READY,
            false,
            &problem.reason,
            problem.message,
            app.metadata.generation,
            Time(now),
        ),
    })
}

/// The app's health now: its Flux source, the workloads it deploys, its extra checks.
pub(super) async fn health(
    ctx: &Context,
    app: &ManagedApp,
    namespace: &str,
) -> Result<crate::cluster::health::HealthReport, Problem> {
    let source_namespace = app.source_namespace();
    let problem =
        |reason: &str, e: crate::cluster::error::ClusterError| Problem::from(e).with_reason(reason);
    let workloads = discover_workloads(
        &ctx.cluster,
        app.spec.source.kind,
        &source_namespace,
        &app.spec.source.name,
    )
    .await
    .map_err(|e| problem("DiscoveryFailed", e))?;
    app_health(
        &ctx.cluster,
        (
            app.spec.source.kind,
            source_namespace.as_str(),
            app.spec.source.name.as_str(),
        ),
        &workloads,
        &app.spec.health.checks,
        namespace,
    )
    .await
    .map_err(|e| problem("HealthCheckFailed", e))
}
