//! The ManagedApp controller: keeps every app's status true while no request runs —
//! `currentVersions` from Git (cached by commit), `Ready` from the health checker,
//! `availableUpdate` and `UpdateAvailable` from Renovate's output, a lock left by a vanished
//! request released — and creates the automatic UpgradeRequests an app's policy allows.
//!
//! Event-driven: an app is reconciled when it changes, when a request for it changes, when
//! its Flux objects or workloads change, when Flux fetched a new Git revision, and when
//! Renovate's ConfigMap changes. The only timed wake-ups are a maintenance window opening
//! or a release coming of age, plus a slow safety resync.
//!
//! The pieces: [`view`] (the status it owns), [`git_memo`] (versions from Git),
//! [`automatic`] (automatic upgrades), [`events`]; this module maps the shared caches' changes
//! to the apps they concern.

mod automatic;
mod events;
mod git_memo;
mod view;

use git_memo::GitMemo;
use view::reconcile;

use super::Context;
use super::renovate_input::{FILE_POLL, RenovateInput, file_changes};
use crate::api::FluxObjectKind;
use crate::api::{ManagedApp, Phase, SourceKind};
use crate::cluster::cache::{Caches, Change, WatchedKind};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A safety resync in case an event was missed; everything that matters arrives as events.
/// Each app adds its own share of [`RESYNC_SPREAD`] so many apps never resync together.
const RESYNC: Duration = Duration::from_secs(30 * 60);
const RESYNC_SPREAD: Duration = Duration::from_secs(30 * 60);

/// What every app reconcile shares beyond the [`Context`].
struct Shared {
    ctx: Arc<Context>,
    renovate: RenovateInput,
    git: Mutex<GitMemo>,
    /// Automatic upgrades created (or being created) that the cache has not shown yet; held
    /// while counting against the global limit and reserving a name, so two concurrent
    /// reconciles cannot both pass the limit.
    automatic: Mutex<BTreeSet<(String, String)>>,
    /// The last warning published per app, so a lasting problem is told once.
    warned: Mutex<HashMap<(String, String), String>>,
}

/// Runs the ManagedApp controller until `shutdown` completes; the active-operations gauge
/// is kept from the same caches.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.cluster.client().clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let caches = ctx.caches.clone();
    let renovate = &ctx.settings.renovate;
    let (configmaps, configmap_cache) = match &renovate.configmap {
        Some((namespace, name)) => {
            let (store, writer) = reflector::store::<ConfigMap>();
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
            (Some(store), Some((writer, api, config)))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        renovate: RenovateInput::new(renovate.clone(), configmaps, Some(ctx.metrics.clone())),
        ctx: ctx.clone(),
        git: Mutex::new(GitMemo::default()),
        automatic: Mutex::new(BTreeSet::new()),
        warned: Mutex::new(HashMap::new()),
    });

    // A new revision fetched by Flux may change any app's versions (which app uses which
    // GitRepository is not known without reading the chain): every app wakes, but only
    // when the revision changes, not on every status update.
    let revisions = Mutex::new(HashMap::<(String, String), String>::new());
    let wakes = {
        let caches = caches.clone();
        caches.changes().flat_map(move |change| {
            futures::stream::iter(apps_woken_by(&caches, &change, &revisions))
        })
    };
    let mut controller = Controller::for_stream(futures::stream::pending(), caches.apps.clone())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
        )
        .reconcile_on(wakes);
    if let Some((writer, api, config)) = configmap_cache {
        // The ConfigMap's own watch feeds both the cache and the wake-ups of every app.
        let cache = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects()
            .filter_map(|o| async move { o.ok().map(|_| ()) });
        controller = controller.reconcile_all_on(cache);
    }
    if let Some(path) = &renovate.file {
        controller = controller.reconcile_all_on(file_changes(path.clone(), FILE_POLL));
    }
    let gauge = keep_active_gauge(ctx.clone());
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, shared)
        .for_each(|_| async {});
    tokio::select! {
        _ = controller => {}
        _ = gauge => {}
        _ = shutdown => {}
    }
}

/// The apps a change concerns: the app itself; the app of a request that starts or ends
/// (or of every app of its namespace, for a request deleted); the idle apps whose Flux
/// object changed or deployed a changed workload; every app when a GitRepository serves a
/// new revision, or after a relist.
fn apps_woken_by(
    caches: &Caches,
    change: &Change,
    revisions: &Mutex<HashMap<(String, String), String>>,
) -> Vec<ObjectRef<ManagedApp>> {
    let apps = caches.apps.state();
    let Change::Object {
        kind,
        namespace,
        name,
        labels,
    } = change
    else {
        return all_apps(&apps);
    };
    let in_namespace = || -> Vec<ObjectRef<ManagedApp>> {
        apps.iter()
            .filter(|a| a.namespace().as_deref() == Some(namespace))
            .map(|a| ObjectRef::from_obj(a.as_ref()))
            .collect()
    };
    match kind {
        WatchedKind::ManagedApp => vec![ObjectRef::new(name).within(namespace)],
        WatchedKind::UpgradeRequest => {
            match caches.upgrades.get(&ObjectRef::new(name).within(namespace)) {
                Some(upgrade) => starts_or_ends(upgrade.status.as_ref().and_then(|s| s.phase))
                    .then(|| ObjectRef::new(&upgrade.spec.managed_app).within(namespace))
                    .into_iter()
                    .collect(),
                None => in_namespace(),
            }
        }
        WatchedKind::RollbackRequest => match caches
            .rollbacks
            .get(&ObjectRef::new(name).within(namespace))
        {
            Some(rollback) => {
                if !starts_or_ends(rollback.status.as_ref().and_then(|s| s.phase)) {
                    return Vec::new();
                }
                let upgrade = ObjectRef::new(&rollback.spec.upgrade_request).within(namespace);
                caches
                    .upgrades
                    .get(&upgrade)
                    .map(|u| ObjectRef::new(&u.spec.managed_app).within(namespace))
                    .into_iter()
                    .collect()
            }
            None => in_namespace(),
        },
        WatchedKind::StatefulSet | WatchedKind::Deployment => {
            deployed_by(&apps, labels, Some(namespace.clone()))
        }
        WatchedKind::HelmRelease | WatchedKind::Kustomization => {
            let source_kind = if *kind == WatchedKind::HelmRelease {
                SourceKind::HelmRelease
            } else {
                SourceKind::Kustomization
            };
            apps.iter()
                .filter(|a| idle(a))
                .filter(|a| {
                    a.spec.source.kind == source_kind
                        && a.spec.source.name == *name
                        && a.source_namespace() == *namespace
                })
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect()
        }
        WatchedKind::GitRepository => {
            let revision = caches
                .flux_object(FluxObjectKind::GitRepository, namespace, name)
                .and_then(|o| {
                    o.data["status"]["artifact"]["revision"]
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let mut seen = revisions.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&(namespace.clone(), name.clone())) == Some(&revision) {
                return Vec::new();
            }
            seen.insert((namespace.clone(), name.clone()), revision);
            all_apps(&apps)
        }
        WatchedKind::VolumeSnapshot
        | WatchedKind::Pod
        | WatchedKind::PersistentVolumeClaim
        | WatchedKind::OciRepository => Vec::new(),
    }
}

/// This app's safety resync period: [`RESYNC`] plus a stable per-app share of
/// [`RESYNC_SPREAD`].
fn resync_after(app: &ManagedApp) -> Duration {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    app.metadata.uid.hash(&mut hasher);
    RESYNC + Duration::from_secs(hasher.finish() % RESYNC_SPREAD.as_secs().max(1))
}

/// Whether a request in `phase` is starting (the app becomes busy) or has ended (idle
/// again): the only request changes an app's status depends on.
fn starts_or_ends(phase: Option<Phase>) -> bool {
    phase.is_none_or(|p| p.is_admitting() || p.is_terminal())
}

/// The apps whose Flux object deployed a workload with these labels (Flux labels what it
/// applies); without Flux's labels, the apps of the workload's namespace. Apps a request is
/// changing are left out: their status waits for the request to end.
fn deployed_by(
    apps: &[Arc<ManagedApp>],
    labels: &BTreeMap<String, String>,
    namespace: Option<String>,
) -> Vec<ObjectRef<ManagedApp>> {
    let owner = [
        (SourceKind::HelmRelease, "helm.toolkit.fluxcd.io"),
        (SourceKind::Kustomization, "kustomize.toolkit.fluxcd.io"),
    ]
    .into_iter()
    .find_map(|(kind, prefix)| {
        Some((
            kind,
            labels.get(&format!("{prefix}/name"))?,
            labels.get(&format!("{prefix}/namespace"))?,
        ))
    });
    apps.iter()
        .filter(|a| idle(a))
        .filter(|a| match owner {
            Some((kind, name, source_namespace)) => {
                a.spec.source.kind == kind
                    && a.spec.source.name == *name
                    && a.source_namespace() == *source_namespace
            }
            None => a.namespace() == namespace,
        })
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// No request holds the app's lock.
fn idle(app: &ManagedApp) -> bool {
    app.status
        .as_ref()
        .is_none_or(|s| s.active_operation.is_none())
}

fn all_apps(apps: &[Arc<ManagedApp>]) -> Vec<ObjectRef<ManagedApp>> {
    apps.iter()
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Sets `fluxgate_active_operations` from the request caches every second (no API calls).
async fn keep_active_gauge(ctx: Arc<Context>) {
    let (upgrades, rollbacks) = (&ctx.caches.upgrades, &ctx.caches.rollbacks);
    let active = |phase: Option<Phase>| phase.is_some_and(|p| !p.is_done());
    loop {
        let running_upgrades = upgrades
            .state()
            .iter()
            .filter(|u| active(u.status.as_ref().and_then(|s| s.phase)))
            .count();
        let running_rollbacks = rollbacks
            .state()
            .iter()
            .filter(|r| active(r.status.as_ref().and_then(|s| s.phase)))
            .count();
        ctx.metrics.set_active("UpgradeRequest", running_upgrades);
        ctx.metrics.set_active("RollbackRequest", running_rollbacks);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Errors that end an app reconcile early; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppError(String);

fn error_policy(app: Arc<ManagedApp>, error: &AppError, _: Arc<Shared>) -> Requeue {
    tracing::warn!(app = %app.name_any(), %error, "ManagedApp reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, namespace: &str, kind: &str, source: &str) -> Arc<ManagedApp> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"source": {"kind": kind, "name": source}, "git": {"file": "a.yaml"}}
            }))
            .unwrap(),
        )
    }

    fn names(refs: Vec<ObjectRef<ManagedApp>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_workload_wakes_only_the_app_whose_flux_object_deployed_it() {
        let apps = [
            app("db", "apps", "HelmRelease", "db"),
            app("web", "apps", "HelmRelease", "web"),
            app("cache", "apps", "Kustomization", "cache"),
        ];
        let helm = BTreeMap::from([
            ("helm.toolkit.fluxcd.io/name".to_owned(), "db".to_owned()),
            (
                "helm.toolkit.fluxcd.io/namespace".to_owned(),
                "apps".to_owned(),
            ),
        ]);
        assert_eq!(
            names(deployed_by(&apps, &helm, Some("apps".into()))),
            ["db"]
        );
        let kustomize = BTreeMap::from([
            (
                "kustomize.toolkit.fluxcd.io/name".to_owned(),
                "cache".to_owned(),
            ),
            (
                "kustomize.toolkit.fluxcd.io/namespace".to_owned(),
                "apps".to_owned(),
            ),
        ]);
        assert_eq!(
            names(deployed_by(&apps, &kustomize, Some("apps".into()))),
            ["cache"]
        );
        // Not applied by Flux (or labels stripped): every app of its namespace looks.
        assert_eq!(
            names(deployed_by(&apps, &BTreeMap::new(), Some("apps".into()))).len(),
            3
        );
        assert!(deployed_by(&apps, &BTreeMap::new(), Some("other".into())).is_empty());
    }

    #[test]
    fn only_a_request_starting_or_ending_concerns_its_app() {
        assert!(starts_or_ends(None));
        assert!(starts_or_ends(Some(Phase::Queued)));
        assert!(starts_or_ends(Some(Phase::Succeeded)));
        assert!(starts_or_ends(Some(Phase::RolledBack)));
        assert!(!starts_or_ends(Some(Phase::Snapshot)));
        assert!(!starts_or_ends(Some(Phase::Verify)));
    }
}
