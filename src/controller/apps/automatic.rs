//! Automatic upgrades: the UpgradeRequest an app's update policy allows now, created under
//! the global limit of automatic upgrades running at once.

use super::events::event;
use super::{AppError, Shared};

use crate::api::{
    AutoUpdate, ManagedApp, ManagedAppStatus, Phase, UpgradeRequest, versions_summary,
};
use crate::renovate::policy::{APP_LABEL, AUTOMATIC_LABEL, AutoDecision, Situation, auto_upgrade};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use std::time::Duration;

/// Creates the automatic UpgradeRequest the app's policy allows now, if any; returns when
/// to decide again (a window opening, a release coming of age).
pub(super) async fn automatic_upgrade(
    shared: &Shared,
    app: &ManagedApp,
    status: &ManagedAppStatus,
    now: jiff::Timestamp,
) -> Result<Option<Duration>, AppError> {
    if app.spec.update_policy.auto == AutoUpdate::None || status.available_update.is_empty() {
        return Ok(None);
    }
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    // The count and the reservation of a name happen under the lock; the create call does
    // not, so one slow API call does not hold up every other app's decision.
    let decision = {
        let mut created = shared.automatic.lock().unwrap_or_else(|e| e.into_inner());
        let upgrades = shared.ctx.caches.upgrades.state();
        let unfinished = |u: &UpgradeRequest| {
            !u.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_terminal)
        };
        // Names created here that the cache has not shown yet still count.
        created.retain(|(ns, n)| {
            !upgrades
                .iter()
                .any(|u| u.namespace().as_deref() == Some(ns.as_str()) && u.name_any() == *n)
        });
        let running_auto = upgrades
            .iter()
            .filter(|u| u.labels().contains_key(AUTOMATIC_LABEL) && unfinished(u))
            .count()
            + created.len();
        let app_idle = status.active_operation.is_none()
            && !upgrades.iter().any(|u| {
                u.namespace().as_deref() == Some(namespace.as_str())
                    && u.spec.managed_app == name
                    && unfinished(u)
            })
            && !created.iter().any(|(ns, _)| *ns == namespace);
        let situation = Situation {
            app_idle,
            running_auto_upgrades: running_auto,
            global_limit: shared.ctx.settings.auto_upgrade_limit,
            now,
        };
        let decision = auto_upgrade(
            &name,
            &app.spec.update_policy,
            &status.available_update,
            &status.failed_versions,
            situation,
        );
        if let AutoDecision::Create { name: request, .. } = &decision {
            created.insert((namespace.clone(), request.clone()));
        }
        decision
    };
    match decision {
        AutoDecision::Create {
            name: request,
            target,
            labels,
        } => {
            let reservation = (namespace.clone(), request.clone());
            // A request that was never created must not count against the limit.
            let release = || {
                shared
                    .automatic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&reservation);
            };
            let upgrade: UpgradeRequest = match serde_json::from_value(serde_json::json!({
                "apiVersion": "fluxgate.dev/v1alpha1",
                "kind": "UpgradeRequest",
                "metadata": {"name": request, "namespace": namespace, "labels": labels,
                             "annotations": {APP_LABEL: name}},
                "spec": {"managedApp": name, "target": target},
            })) {
                Ok(upgrade) => upgrade,
                Err(e) => {
                    release();
                    return Err(AppError(format!("building UpgradeRequest {request}: {e}")));
                }
            };
            let params = PostParams {
                field_manager: Some(crate::cluster::FIELD_MANAGER.into()),
                ..Default::default()
            };
            match Api::<UpgradeRequest>::namespaced(shared.ctx.cluster.client().clone(), &namespace)
                .create(&params, &upgrade)
                .await
            {
                Ok(_) => {
                    let message = format!(
                        "created UpgradeRequest {request} to {}",
                        versions_summary(&target)
                    );
                    tracing::info!(app = %name, %namespace, %request, "automatic upgrade: {message}");
                    event(shared, app, EventType::Normal, "AutomaticUpgrade", &message).await;
                }
                // Created before (this name is deterministic): never a second one. The
                // reservation stays until the cache shows it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    release();
                    return Err(AppError(format!(
                        "creating UpgradeRequest {namespace}/{request}: {}",
                        crate::cluster::error::describe(&e)
                    )));
                }
            }
            Ok(None)
        }
        AutoDecision::Wait { reason, until } => {
            tracing::debug!(app = %name, %reason, "automatic upgrade waits");
            Ok(until.map(|at| {
                let secs = at.duration_since(now).as_secs().max(1);
                Duration::from_secs(u64::try_from(secs).unwrap_or(1))
            }))
        }
        AutoDecision::Never { reason } => {
            tracing::debug!(app = %name, %reason, "no automatic upgrade");
            Ok(None)
        }
    }
}
