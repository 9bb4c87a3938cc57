//! The ManagedApp controller: keeps every app's status true while no request runs —
//! `currentVersions` from Git (cached by commit), `Ready` from the health checker,
//! `availableUpdate` and `UpdateAvailable` from Renovate's output, a lock left by a vanished
//! request released — and creates the automatic UpgradeRequests an app's policy allows.
//!
//! Event-driven: an app is reconciled when it changes, when a request for it changes, when
//! its Flux objects or workloads change, when Flux fetched a new Git revision, and when
//! Renovate's ConfigMap changes. The only timed wake-ups are a maintenance window opening
//! or a release coming of age, plus a slow safety resync.

use super::Context;
use super::app_status::update_status;
use super::renovate_input::{FILE_POLL, InputNews, RenovateData, RenovateInput, file_changes};
use crate::api::conditions::{READY, condition, set_condition};
use crate::api::{
    AutoUpdate, ManagedApp, ManagedAppStatus, OperationKind, Phase, RollbackRequest, SourceKind,
    UpgradeRequest, versions_summary,
};
use crate::cluster::discovery::ops::{VolumeSelection, discover_app};
use crate::cluster::flux::ops::{api_resource, chain_error_reason, suspend_chain};
use crate::cluster::health::ops::app_health;
use crate::manifest::fields::{ResolvedField, current_versions, locate_fields};
use crate::renovate::app::{AppContext, evaluate};
use crate::renovate::mapping::Scope;
use crate::renovate::policy::{APP_LABEL, AUTOMATIC_LABEL, AutoDecision, Situation, auto_upgrade};
use crate::workflow::Problem;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A safety resync in case an event was missed; everything that matters arrives as events.
/// Each app adds its own share of [`RESYNC_SPREAD`] so many apps never resync together.
const RESYNC: Duration = Duration::from_secs(30 * 60);
const RESYNC_SPREAD: Duration = Duration::from_secs(30 * 60);
/// A lock whose request is gone from the cache is released only after this long, so a
/// request the cache has not seen yet is not mistaken for a vanished one.
const STALE_LOCK_AFTER: Duration = Duration::from_secs(60);

/// What every app reconcile shares beyond the [`Context`].
struct Shared {
    ctx: Arc<Context>,
    upgrades: Store<UpgradeRequest>,
    rollbacks: Store<RollbackRequest>,
    renovate: RenovateInput,
    git: Mutex<GitMemo>,
    /// Held while counting and creating automatic upgrades, so the global limit holds
    /// between concurrent reconciles; the set holds names created but not yet in the cache.
    automatic: tokio::sync::Mutex<BTreeSet<(String, String)>>,
    /// The last warning published per app, so a lasting problem is told once.
    warned: Mutex<HashMap<(String, String), String>>,
}

/// When a remote's last fetch started and the head it found.
type LastFetch = Option<(Instant, String)>;

/// The last fetch per remote (when it started, the head it found), and version fields
/// resolved per (app, generation, commit).
#[derive(Default)]
struct GitMemo {
    heads: HashMap<(String, String), Arc<tokio::sync::Mutex<LastFetch>>>,
    fields: HashMap<(String, i64, String), Arc<Vec<ResolvedField>>>,
}

/// Runs the ManagedApp controller until `shutdown` completes; the active-operations gauge
/// is kept from the same caches.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let (upgrades, upgrades_writer) = reflector::store::<UpgradeRequest>();
    let (rollbacks, rollbacks_writer) = reflector::store::<RollbackRequest>();
    let upgrade_cache = reflector::reflector(
        upgrades_writer,
        watcher(Api::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let rollback_cache = reflector::reflector(
        rollbacks_writer,
        watcher(Api::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();

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
        upgrades: upgrades.clone(),
        rollbacks: rollbacks.clone(),
        git: Mutex::new(GitMemo::default()),
        automatic: tokio::sync::Mutex::new(BTreeSet::new()),
        warned: Mutex::new(HashMap::new()),
    });

    let controller = Controller::new(Api::<ManagedApp>::all(client.clone()), Default::default())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
        );
    let apps = controller.store();
    let mut controller = controller
        .watches(
            Api::<UpgradeRequest>::all(client.clone()),
            Default::default(),
            |upgrade: UpgradeRequest| {
                let phase = upgrade.status.as_ref().and_then(|s| s.phase);
                let namespace = upgrade.namespace().filter(|_| starts_or_ends(phase))?;
                Some(ObjectRef::new(&upgrade.spec.managed_app).within(&namespace))
            },
        )
        .watches(
            Api::<RollbackRequest>::all(client.clone()),
            Default::default(),
            {
                let upgrades = upgrades.clone();
                move |rollback: RollbackRequest| {
                    let phase = rollback.status.as_ref().and_then(|s| s.phase);
                    if !starts_or_ends(phase) {
                        return None;
                    }
                    let ns = rollback.namespace()?;
                    let upgrade = upgrades
                        .get(&ObjectRef::new(&rollback.spec.upgrade_request).within(&ns))?;
                    Some(ObjectRef::new(&upgrade.spec.managed_app).within(&ns))
                }
            },
        )
        .watches(
            Api::<StatefulSet>::all(client.clone()),
            Default::default(),
            {
                let apps = apps.clone();
                move |o: StatefulSet| deployed_by(&apps.state(), o.labels(), o.namespace())
            },
        )
        .watches(
            Api::<Deployment>::all(client.clone()),
            Default::default(),
            {
                let apps = apps.clone();
                move |o: Deployment| deployed_by(&apps.state(), o.labels(), o.namespace())
            },
        );
    for kind in [SourceKind::HelmRelease, SourceKind::Kustomization] {
        let resource = api_resource(match kind {
            SourceKind::HelmRelease => crate::api::FluxObjectKind::HelmRelease,
            SourceKind::Kustomization => crate::api::FluxObjectKind::Kustomization,
        });
        let apps = apps.clone();
        controller = controller.watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            resource,
            Default::default(),
            move |o: DynamicObject| {
                let (name, namespace) = (o.name_any(), o.namespace().unwrap_or_default());
                apps.state()
                    .iter()
                    .filter(|a| idle(a))
                    .filter(|a| {
                        a.spec.source.kind == kind
                            && a.spec.source.name == name
                            && a.source_namespace() == namespace
                    })
                    .map(|a| ObjectRef::from_obj(a.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    }
    // A new revision fetched by Flux may change any app's versions (which app uses which
    // GitRepository is not known without reading the chain): wake every app, but only when
    // the revision changes, not on every status update.
    let revisions = Mutex::new(HashMap::<(String, String), String>::new());
    let resource = api_resource(crate::api::FluxObjectKind::GitRepository);
    controller = controller.watches_with(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        resource,
        Default::default(),
        {
            let apps = apps.clone();
            move |o: DynamicObject| {
                let revision = o.data["status"]["artifact"]["revision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let key = (o.namespace().unwrap_or_default(), o.name_any());
                let mut seen = revisions.lock().unwrap_or_else(|e| e.into_inner());
                if seen.get(&key) == Some(&revision) {
                    return Vec::new();
                }
                seen.insert(key, revision);
                all_apps(&apps)
            }
        },
    );
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
    let gauge = keep_active_gauge(ctx.clone(), upgrades.clone(), rollbacks.clone());
    let caches = async {
        futures::join!(
            upgrade_cache.for_each(|_| async {}),
            rollback_cache.for_each(|_| async {})
        );
    };
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, shared)
        .for_each(|_| async {});
    tokio::select! {
        _ = controller => {}
        _ = caches => {}
        _ = gauge => {}
        _ = shutdown => {}
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
    phase.is_none_or(|p| matches!(p, Phase::Admit | Phase::Queued) || p.is_terminal())
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

fn all_apps(apps: &Store<ManagedApp>) -> Vec<ObjectRef<ManagedApp>> {
    apps.state()
        .iter()
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Sets `fluxgate_active_operations` from the request caches every second (no API calls).
async fn keep_active_gauge(
    ctx: Arc<Context>,
    upgrades: Store<UpgradeRequest>,
    rollbacks: Store<RollbackRequest>,
) {
    let active =
        |phase: Option<Phase>| phase.is_some_and(|p| !p.is_terminal() || p == Phase::Frozen);
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

/// What this controller owns in the app's status, computed from what it observed.
#[derive(Debug)]
struct View {
    /// When Git was read: an operation that finished since knows better.
    read_at: jiff::Timestamp,
    /// From Git; None when Git could not be read (what is known stays).
    current_versions: Option<BTreeMap<String, String>>,
    ready: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// From Renovate; None leaves availableUpdate and its condition alone.
    updates: Option<crate::renovate::status::Refreshed>,
    /// The UID of a lock whose request is gone.
    stale_lock: Option<String>,
    /// Warnings to publish as Events (reason, message).
    warnings: Vec<(&'static str, String)>,
    /// Normal Events (reason, message).
    notes: Vec<(&'static str, String)>,
}

async fn reconcile(app: Arc<ManagedApp>, shared: Arc<Shared>) -> Result<Requeue, AppError> {
    if app.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let ctx = &shared.ctx;
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let now = jiff::Timestamp::now();
    let status = app.status.clone().unwrap_or_default();
    let mut view = View {
        read_at: now,
        current_versions: None,
        ready: None,
        updates: None,
        stale_lock: None,
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
        let since = active.since.0;
        let gone = match active.kind {
            OperationKind::UpgradeRequest => !shared
                .upgrades
                .state()
                .iter()
                .any(|u| u.metadata.uid.as_deref() == Some(active.uid.as_str())),
            OperationKind::RollbackRequest => !shared
                .rollbacks
                .state()
                .iter()
                .any(|r| r.metadata.uid.as_deref() == Some(active.uid.as_str())),
        };
        let old = now.duration_since(since).as_secs() >= STALE_LOCK_AFTER.as_secs() as i64;
        if gone && old {
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
    if next != status {
        let generation = app.metadata.generation;
        update_status(&ctx.client, &namespace, &name, |fresh| {
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

/// Puts the view's fields onto `status`, leaving what requests own alone.
fn apply(status: &mut ManagedAppStatus, view: &View, generation: Option<i64>) {
    // A request that finished after Git was read wrote newer versions; the wake-up its
    // finish causes reads Git again.
    let superseded = status
        .last_operation
        .as_ref()
        .is_some_and(|last| last.completed_at.0 >= view.read_at);
    if let Some(versions) = view.current_versions.as_ref().filter(|_| !superseded) {
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
    if let Some(stale) = &view.stale_lock
        && status
            .active_operation
            .as_ref()
            .is_some_and(|a| a.uid == *stale)
    {
        status.active_operation = None;
    }
    status.observed_generation = generation;
}

/// The app's version fields at the branch head, and its Renovate scope. The head is
/// fetched once per reconcile, except that a fetch another reconcile started after
/// `started` is reused (so a wake-up of every app fetches each remote about once); the
/// fields are parsed once per commit.
async fn git_fields(
    shared: &Shared,
    app: &ManagedApp,
    started: Instant,
) -> Result<(Arc<Vec<ResolvedField>>, Scope), Problem> {
    let ctx = &shared.ctx;
    let namespace = app.namespace().unwrap_or_default();
    let git = &app.spec.git;
    let chain = if git.url.is_some() && git.branch.is_some() {
        Vec::new()
    } else {
        suspend_chain(&ctx.client, &namespace, &app.spec.source, &app.spec.suspend)
            .await
            .map_err(|e| Problem {
                reason: chain_error_reason(&e).into(),
                message: e.to_string(),
                retryable: e.is_retryable(),
            })?
    };
    let location = super::git_access::locate(ctx, app, &chain).await?;
    let scope = Scope {
        repository: Some(location.url.clone()),
        branch: Some(location.branch.clone()),
    };
    let remote = {
        let mut memo = shared.git.lock().unwrap_or_else(|e| e.into_inner());
        memo.heads
            .entry((location.url.clone(), location.branch.clone()))
            .or_default()
            .clone()
    };
    // One fetch per remote at a time; waiting reconciles reuse it when it is fresh enough.
    let mut last_fetch = remote.lock().await;
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let generation = app.metadata.generation.unwrap_or_default();
    if let Some((at, head)) = last_fetch.as_ref()
        && *at >= started
    {
        let memo = shared.git.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fields) = memo.fields.get(&(uid.clone(), generation, head.clone())) {
            return Ok((fields.clone(), scope));
        }
    }
    let fetch_started = Instant::now();
    let repo = super::git_access::open(ctx, &location).await?;
    let (head, files) = super::git_access::read_version_files(repo.as_ref(), app).await?;
    *last_fetch = Some((fetch_started, head.clone()));
    drop(last_fetch);
    let fields = Arc::new(
        locate_fields(&app.spec, &files)
            .map_err(|e| Problem::terminal("VersionFieldInvalid", e.to_string()))?,
    );
    let mut memo = shared.git.lock().unwrap_or_else(|e| e.into_inner());
    // Only the newest commit's fields are worth keeping per app.
    memo.fields.retain(|(u, _, _), _| *u != uid);
    memo.fields.insert((uid, generation, head), fields.clone());
    Ok((fields, scope))
}

/// The `Ready` condition from the app's health now; a retryable failure to read it is an
/// error (the reconcile is retried), a terminal one is reported in the condition.
async fn health_condition(
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
async fn health(
    ctx: &Context,
    app: &ManagedApp,
    namespace: &str,
) -> Result<crate::cluster::health::HealthReport, Problem> {
    let source_namespace = app.source_namespace();
    let problem = |reason: &str, e: crate::cluster::error::ClusterError| Problem {
        reason: reason.into(),
        message: e.to_string(),
        retryable: e.is_retryable(),
    };
    let inventory = discover_app(
        &ctx.client,
        app.spec.source.kind,
        &source_namespace,
        &app.spec.source.name,
        &VolumeSelection::default(),
    )
    .await
    .map_err(|e| problem("DiscoveryFailed", e))?;
    app_health(
        &ctx.client,
        (
            app.spec.source.kind,
            source_namespace.as_str(),
            app.spec.source.name.as_str(),
        ),
        &inventory.workloads,
        &app.spec.health.checks,
        namespace,
    )
    .await
    .map_err(|e| problem("HealthCheckFailed", e))
}

/// Creates the automatic UpgradeRequest the app's policy allows now, if any; returns when
/// to decide again (a window opening, a release coming of age).
async fn automatic_upgrade(
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
    let mut created = shared.automatic.lock().await;
    let upgrades = shared.upgrades.state();
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
    match auto_upgrade(
        &name,
        &app.spec.update_policy,
        &status.available_update,
        &status.failed_versions,
        situation,
    ) {
        AutoDecision::Create {
            name: request,
            target,
            labels,
        } => {
            let upgrade: UpgradeRequest = serde_json::from_value(serde_json::json!({
                "apiVersion": "fluxgate.dev/v1alpha1",
                "kind": "UpgradeRequest",
                "metadata": {"name": request, "namespace": namespace, "labels": labels,
                             "annotations": {APP_LABEL: name}},
                "spec": {"managedApp": name, "target": target},
            }))
            .map_err(|e| AppError(format!("building UpgradeRequest {request}: {e}")))?;
            let params = PostParams {
                field_manager: Some(crate::cluster::FIELD_MANAGER.into()),
                ..Default::default()
            };
            match Api::<UpgradeRequest>::namespaced(shared.ctx.client.clone(), &namespace)
                .create(&params, &upgrade)
                .await
            {
                Ok(_) => {
                    created.insert((namespace.clone(), request.clone()));
                    let message = format!(
                        "created UpgradeRequest {request} to {}",
                        versions_summary(&target)
                    );
                    tracing::info!(app = %name, %namespace, %request, "automatic upgrade: {message}");
                    event(shared, app, EventType::Normal, "AutomaticUpgrade", &message).await;
                }
                // Created before (this name is deterministic): never a second one.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
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

/// Publishes the view's Events; a warning is told once until its text changes.
async fn publish(shared: &Shared, app: &ManagedApp, view: &View) {
    let key = (app.namespace().unwrap_or_default(), app.name_any());
    let warning = view
        .warnings
        .iter()
        .map(|(r, m)| format!("{r}: {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    let new_warning = {
        let mut warned = shared.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warning.is_empty() {
            warned.remove(&key);
            false
        } else {
            warned.insert(key, warning.clone()) != Some(warning)
        }
    };
    if new_warning {
        for (reason, message) in &view.warnings {
            tracing::warn!(app = %app.name_any(), reason, %message, "ManagedApp");
            event(shared, app, EventType::Warning, reason, message).await;
        }
    }
    for (reason, message) in &view.notes {
        event(shared, app, EventType::Normal, reason, message).await;
    }
}

/// Tells what a fresh read of Renovate's input found as an Event on its ConfigMap (the log
/// line and the metrics are written where it was read). A file input has no object to
/// carry it; its unusable reads reach each app's Events instead.
async fn publish_input_news(shared: &Shared, news: &InputNews) {
    let Some(reference) = shared.renovate.configmap_reference() else {
        return;
    };
    let (type_, reason) = if news.usable {
        (EventType::Normal, "RenovateInputRead")
    } else {
        (EventType::Warning, "RenovateInputUnusable")
    };
    publish_event(shared, &reference, type_, reason, &news.message).await;
}

async fn event(shared: &Shared, app: &ManagedApp, type_: EventType, reason: &str, note: &str) {
    publish_event(shared, &app.object_ref(&()), type_, reason, note).await;
}

async fn publish_event(
    shared: &Shared,
    subject: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let recorder = Recorder::new(
        shared.ctx.client.clone(),
        Reporter {
            controller: "fluxgate".into(),
            instance: None,
        },
    );
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Observe".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, subject).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
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
