//! The UpgradeRequest and RollbackRequest controllers: each reconcile reads the request and
//! its app, observes what the current phase needs, lets the workflow decide, performs the
//! actions, writes the status once (with the resourceVersion it read) and emits Events.

use super::act::{Acting, perform};
use super::admission::{rollback_plan, upgrade_plan};
use super::app_status::Holder;
use super::observe::observe_phase;
use super::{Context, FINALIZER};
use crate::api::{
    ManagedApp, OperationKind, Phase, RequestStatus, RollbackRequest, RollbackRequestSpec,
    UpgradeRequest,
};
use crate::cluster::cache::{Caches, Change, Watched, WatchedKind};
use crate::cluster::error::describe;
use crate::workflow::{
    self, AppPolicy, Decision, LockState, Observed, Problem, Request, RequestKind,
};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Errors that end a reconcile early; the controller retries them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API refused or failed a request about the request object itself.
    #[error("{0}")]
    Api(String),
    /// The request's status kept changing under the operator's writes.
    #[error("{0}")]
    Conflict(String),
}

/// How many status writes in a row may meet a conflict (each retried at once, from a fresh
/// read) before the reconcile fails with [`ReconcileError::Conflict`] and backs off.
const STATUS_CONFLICT_RETRIES: u32 = 3;

/// Requests whose last status write met a conflict, by UID, with how many in a row (every
/// reconcile reads its request fresh; this bounds how often a conflict is retried at once).
#[derive(Clone, Default)]
struct Conflicts(Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>);

impl Conflicts {
    fn bump(&self, uid: &str) -> u32 {
        self.0.lock().map_or(u32::MAX, |mut m| {
            let n = m.entry(uid.to_owned()).or_insert(0);
            *n += 1;
            *n
        })
    }

    fn clear(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }
}

/// A request kind the controller handles.
trait RequestObject: Watched + serde::Serialize {
    const REQUEST_KIND: RequestKind;
    fn status(&self) -> Option<&RequestStatus>;
    fn set_status(&mut self, status: RequestStatus);
    /// A RollbackRequest's spec; None for an UpgradeRequest.
    fn rollback_spec(&self) -> Option<&RollbackRequestSpec> {
        None
    }
}

impl RequestObject for UpgradeRequest {
    const REQUEST_KIND: RequestKind = RequestKind::Upgrade;
    fn status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: RequestStatus) {
        self.status = Some(status);
    }
}

impl RequestObject for RollbackRequest {
    const REQUEST_KIND: RequestKind = RequestKind::Rollback;
    fn status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: RequestStatus) {
        self.status = Some(status);
    }
    fn rollback_spec(&self) -> Option<&RollbackRequestSpec> {
        Some(&self.spec)
    }
}

fn api_error(what: &str, e: kube::Error) -> ReconcileError {
    ReconcileError::Api(format!("{what}: {}", describe(&e)))
}

/// Runs both request controllers until `shutdown` completes. Both are woken by the
/// changes of the shared caches ([`Caches::changes`]): no watch of their own.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let conflicts = Conflicts::default();
    let config =
        || kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    let caches = ctx.caches.clone();
    let upgrades = Controller::for_stream(futures::stream::pending(), caches.upgrades.clone())
        .with_config(config())
        .reconcile_on(woken(&caches, upgrades_woken_by))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            {
                let conflicts = conflicts.clone();
                move |upgrade: Arc<UpgradeRequest>, ctx| {
                    let span = reconcile_span(upgrade.as_ref());
                    reconcile_upgrade(upgrade, ctx, conflicts.clone()).instrument(span)
                }
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let rollbacks = Controller::for_stream(futures::stream::pending(), caches.rollbacks.clone())
        .with_config(config())
        .reconcile_on(woken(&caches, rollbacks_woken_by))
        .graceful_shutdown_on(shutdown)
        .run(
            move |rollback: Arc<RollbackRequest>, ctx| {
                let span = reconcile_span(rollback.as_ref());
                reconcile_rollback(rollback, ctx, conflicts.clone()).instrument(span)
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    futures::join!(upgrades, rollbacks);
}

/// The objects of `K` each change wakes, as `wakes` maps them.
fn woken<K: RequestObject>(
    caches: &Arc<Caches>,
    wakes: fn(&Caches, &Change) -> Vec<ObjectRef<K>>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static {
    let caches = caches.clone();
    caches
        .changes()
        .flat_map(move |change| futures::stream::iter(wakes(&caches, &change)))
}

/// The span every reconcile of a request runs in: logs carry the request, and a test can
/// count what one reconcile sent (docs/design.md §5: at most one status write).
fn reconcile_span<K: RequestObject>(object: &K) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        kind = ?K::REQUEST_KIND,
        namespace = %object.namespace().unwrap_or_default(),
        name = %object.name_any()
    )
}

/// The UpgradeRequests a change may let go on: the request itself; the unfinished requests
/// of an app that changed (its lock released); the upgrade a RollbackRequest undoes (it
/// waits in RollingBack on it); and for anything a running request waits on (Flux
/// objects, snapshots, PVCs, pods, workloads), the running requests it may concern.
fn upgrades_woken_by(caches: &Caches, change: &Change) -> Vec<ObjectRef<UpgradeRequest>> {
    let upgrades = caches.upgrades.state();
    match change {
        Change::Object {
            kind: WatchedKind::UpgradeRequest,
            namespace,
            name,
            ..
        } => vec![ObjectRef::new(name).within(namespace)],
        Change::Object {
            kind: WatchedKind::ManagedApp,
            namespace,
            name,
            ..
        } => waiting_for_app(&upgrades, namespace, Some(name)),
        Change::Object {
            kind: WatchedKind::RollbackRequest,
            namespace,
            name,
            ..
        } => match caches
            .rollbacks
            .get(&ObjectRef::new(name).within(namespace))
        {
            Some(rollback) => {
                vec![ObjectRef::new(&rollback.spec.upgrade_request).within(namespace)]
            }
            // Deleted: which upgrade it undid is gone with it.
            None => waiting_for_app(&upgrades, namespace, None),
        },
        Change::Relisted(None | Some(WatchedKind::UpgradeRequest)) => upgrades
            .iter()
            .map(|u| ObjectRef::from_obj(u.as_ref()))
            .collect(),
        Change::Relisted(Some(WatchedKind::ManagedApp | WatchedKind::RollbackRequest)) => upgrades
            .iter()
            .filter(|u| {
                !u.status()
                    .and_then(|s| s.phase)
                    .is_some_and(Phase::is_terminal)
            })
            .map(|u| ObjectRef::from_obj(u.as_ref()))
            .collect(),
        world => running_in(&upgrades, world),
    }
}

/// The RollbackRequests a change may let go on: the rollback itself; the rollbacks of an
/// upgrade that changed (a rollback waits until its upgrade hands the lock over by entering
/// RollingBack — which happens after the rollback exists, created by the upgrade's
/// reconcile or by a person); and, as for upgrades, the running ones the world concerns.
fn rollbacks_woken_by(caches: &Caches, change: &Change) -> Vec<ObjectRef<RollbackRequest>> {
    let rollbacks = caches.rollbacks.state();
    match change {
        Change::Object {
            kind: WatchedKind::RollbackRequest,
            namespace,
            name,
            ..
        } => vec![ObjectRef::new(name).within(namespace)],
        Change::Object {
            kind: WatchedKind::UpgradeRequest,
            namespace,
            name,
            ..
        } => rollbacks
            .iter()
            .filter(|r| {
                r.namespace().as_deref() == Some(namespace) && r.spec.upgrade_request == *name
            })
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect(),
        Change::Object {
            kind: WatchedKind::ManagedApp,
            ..
        }
        | Change::Relisted(Some(WatchedKind::ManagedApp)) => Vec::new(),
        Change::Relisted(
            None | Some(WatchedKind::RollbackRequest | WatchedKind::UpgradeRequest),
        ) => rollbacks
            .iter()
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect(),
        world => running_in(&rollbacks, world),
    }
}

/// Running (admitted, not finished) requests that a change of something they wait on may
/// concern: those whose plan touches the changed object's namespace. Flux objects often
/// live in another namespace than the app: their changes wake every running request
/// (there are few), as does a relist.
fn running_in<K: RequestObject>(requests: &[Arc<K>], change: &Change) -> Vec<ObjectRef<K>> {
    let namespace = match change {
        Change::Object {
            kind:
                WatchedKind::Kustomization
                | WatchedKind::HelmRelease
                | WatchedKind::GitRepository
                | WatchedKind::OciRepository,
            ..
        }
        | Change::Relisted(_) => None,
        Change::Object { namespace, .. } => Some(namespace.as_str()),
    };
    requests
        .iter()
        .filter(|r| {
            let Some(status) = r.status() else {
                return false;
            };
            // An upgrade in RollingBack waits only on its RollbackRequest, whose own watch
            // wakes it; the cluster's churn during the rollback is not its business.
            let running = status
                .phase
                .is_some_and(|p| p.holds_app() && p != Phase::RollingBack);
            let touches = |plan: &crate::api::Plan| match namespace {
                None => true,
                Some(ns) => {
                    plan.workloads.iter().any(|w| w.namespace == ns)
                        || plan.volumes.iter().any(|v| v.namespace == ns)
                        || plan.flux_objects.iter().any(|o| o.namespace == ns)
                }
            };
            running && status.plan.as_ref().is_some_and(touches)
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Unfinished requests of the app `name` in `namespace` (of any app there when None): a
/// change of the app (its lock released) may let them go on.
fn waiting_for_app(
    requests: &[Arc<UpgradeRequest>],
    namespace: &str,
    name: Option<&str>,
) -> Vec<ObjectRef<UpgradeRequest>> {
    requests
        .iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(namespace)
                && name.is_none_or(|name| r.spec.managed_app == name)
        })
        .filter(|r| {
            !r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_terminal)
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

fn error_policy<K>(_: Arc<K>, error: &ReconcileError, _: Arc<Context>) -> Requeue {
    tracing::warn!(%error, "reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(5))
}

/// The request as it is now: from the cache, which shows our own last status write
/// before any reconcile reads it (a watch event of a Flux object we just patched may
/// trigger the next reconcile before the watch shows that write; deciding from that stale
/// phase would repeat or undo an earlier step's side effects).
async fn current<K: RequestObject>(
    ctx: &Context,
    cached: &K,
) -> Result<Option<Arc<K>>, ReconcileError> {
    let namespace = cached.namespace().unwrap_or_default();
    ctx.cluster
        .get::<K>(&namespace, &cached.name_any())
        .await
        .map_err(|e| api_error("reading the request", e))
}

async fn app_named(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<ManagedApp>, ReconcileError> {
    ctx.cluster
        .get::<ManagedApp>(namespace, name)
        .await
        .map(|found| found.map(Arc::unwrap_or_clone))
        .map_err(|e| api_error("reading the ManagedApp", e))
}

async fn reconcile_upgrade(
    cached: Arc<UpgradeRequest>,
    ctx: Arc<Context>,
    conflicts: Conflicts,
) -> Result<Requeue, ReconcileError> {
    let Some(upgrade) = current(&ctx, cached.as_ref()).await? else {
        return Ok(Requeue::await_change());
    };
    let namespace = upgrade.namespace().unwrap_or_default();
    let app = app_named(&ctx, &namespace, &upgrade.spec.managed_app).await?;
    let request = request_of(upgrade.as_ref(), upgrade.spec.dry_run, false);
    reconcile(
        ctx,
        conflicts,
        upgrade.clone(),
        request,
        app,
        Some(upgrade.as_ref().clone()),
    )
    .await
}

async fn reconcile_rollback(
    cached: Arc<RollbackRequest>,
    ctx: Arc<Context>,
    conflicts: Conflicts,
) -> Result<Requeue, ReconcileError> {
    let Some(rollback) = current(&ctx, cached.as_ref()).await? else {
        return Ok(Requeue::await_change());
    };
    let namespace = rollback.namespace().unwrap_or_default();
    let upgrade = ctx
        .cluster
        .get::<UpgradeRequest>(&namespace, &rollback.spec.upgrade_request)
        .await
        .map(|found| found.map(Arc::unwrap_or_clone))
        .map_err(|e| api_error("reading the UpgradeRequest", e))?;
    let app = match &upgrade {
        Some(upgrade) => app_named(&ctx, &namespace, &upgrade.spec.managed_app).await?,
        None => None,
    };
    let mut request = request_of(
        rollback.as_ref(),
        rollback.spec.dry_run,
        !rollback.spec.safety_snapshot,
    );
    request.undoes = upgrade
        .as_ref()
        .and_then(|u| u.status.as_ref()?.plan.as_ref())
        .map(|p| p.to.clone())
        .unwrap_or_default();
    reconcile(ctx, conflicts, rollback.clone(), request, app, upgrade).await
}

fn request_of<K: RequestObject>(object: &K, dry_run: bool, skip_snapshot: bool) -> Request {
    Request {
        kind: K::REQUEST_KIND,
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
        generation: object.meta().generation,
        dry_run,
        skip_snapshot,
        deleting: object.meta().deletion_timestamp.is_some(),
        undoes: Default::default(),
    }
}

/// One reconcile of a request, whatever its phase and whether its app still exists:
/// load → lock and queue → observe → decide → act → one status write.
async fn reconcile<K: RequestObject>(
    ctx: Arc<Context>,
    conflicts: Conflicts,
    object: Arc<K>,
    request: Request,
    app: Option<ManagedApp>,
    upgrade: Option<UpgradeRequest>,
) -> Result<Requeue, ReconcileError> {
    if let Some(requeue) = ensure_finalizer(&ctx, object.as_ref(), &request).await? {
        return Ok(requeue);
    }
    let loaded = Loaded::new(object, request, app, upgrade);
    let mut observed = Observed {
        now: jiff::Timestamp::now(),
        ..Default::default()
    };
    let stale_lock = observe_lock_and_queue(&ctx, &loaded, &mut observed).await?;
    let seen = observe_world(&ctx, &loaded, &mut observed).await;
    let decision = decide(&ctx, &loaded, &observed, seen);
    let decision = act(&ctx, &loaded, &observed, stale_lock.as_deref(), decision).await;
    let api = Api::<K>::namespaced(ctx.cluster.client().clone(), &loaded.namespace);
    finish_reconcile(
        &ctx,
        &conflicts,
        &api,
        loaded.object.as_ref(),
        &loaded.status,
        decision,
        &loaded.request,
    )
    .await
}

/// What one reconcile knows about its request before it observes the world.
struct Loaded<K> {
    object: Arc<K>,
    namespace: String,
    request: Request,
    status: RequestStatus,
    app: Option<ManagedApp>,
    upgrade: Option<UpgradeRequest>,
    policy: AppPolicy,
    holder: Holder,
    /// Why the request cannot go on, when its app (or the upgrade it undoes) is gone:
    /// from its plan alone it can still put back what it changed.
    gone: Option<Problem>,
}

impl<K: RequestObject> Loaded<K> {
    fn new(
        object: Arc<K>,
        mut request: Request,
        app: Option<ManagedApp>,
        upgrade: Option<UpgradeRequest>,
    ) -> Loaded<K> {
        let namespace = object.namespace().unwrap_or_default();
        let gone = app.is_none().then(|| {
            let missing = if K::REQUEST_KIND == RequestKind::Rollback && upgrade.is_none() {
                "UpgradeRequest"
            } else {
                "ManagedApp"
            };
            Problem::terminal(
                &format!("{missing}NotFound"),
                format!("the {missing} this request names does not exist in namespace {namespace}"),
            )
        });
        let policy = app.as_ref().map_or_else(AppPolicy::without_app, |app| {
            AppPolicy::from_spec(&app.spec)
        });
        if let (RequestKind::Upgrade, Some(app)) = (K::REQUEST_KIND, &app) {
            request.skip_snapshot = request.skip_snapshot
                || !app.spec.snapshots.enabled
                || upgrade.as_ref().is_some_and(|u| u.spec.skip_snapshot);
        }
        let holder = Holder {
            kind: if K::REQUEST_KIND == RequestKind::Upgrade {
                OperationKind::UpgradeRequest
            } else {
                OperationKind::RollbackRequest
            },
            name: request.name.clone(),
            uid: request.uid.clone(),
            upgrade: upgrade
                .as_ref()
                .map(|u| u.name_any())
                .unwrap_or_else(|| request.name.clone()),
        };
        Loaded {
            status: object.status().cloned().unwrap_or_default(),
            object,
            namespace,
            request,
            app,
            upgrade,
            policy,
            holder,
            gone,
        }
    }
}

/// Adds the finalizer that lets a running request undo itself before it goes; the write's
/// own event brings the next reconcile.
async fn ensure_finalizer<K: RequestObject>(
    ctx: &Context,
    object: &K,
    request: &Request,
) -> Result<Option<Requeue>, ReconcileError> {
    if request.deleting || object.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}});
    let namespace = object.namespace().unwrap_or_default();
    let written = Api::<K>::namespaced(ctx.cluster.client().clone(), &namespace)
        .patch(&request.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| api_error("adding the finalizer", e))?;
    ctx.cluster.wrote(K::KIND, &written);
    Ok(Some(Requeue::await_change()))
}

/// Who holds the app's lock and, for a request not admitted yet, whether it is first in
/// its app's queue and (if it may go) its plan. Returns the UID of a lock whose holder is
/// gone, which taking the lock may replace.
async fn observe_lock_and_queue<K: RequestObject>(
    ctx: &Context,
    loaded: &Loaded<K>,
    observed: &mut Observed,
) -> Result<Option<String>, ReconcileError> {
    let Loaded {
        request,
        app,
        upgrade,
        gone,
        ..
    } = loaded;
    let (lock, stale) = match app {
        Some(app) => lock_state(ctx, app, request, upgrade.as_ref()).await?,
        None => (LockState::Free, None),
    };
    observed.lock = Some(lock.clone());
    // A request without its app is refused at Admit even while it is being deleted.
    let admitting = loaded.status.phase.is_none_or(Phase::is_admitting);
    if !admitting || (gone.is_none() && request.deleting) {
        return Ok(stale);
    }
    observed.first_in_queue = match app {
        Some(app) => first_in_queue(ctx, app, request).await?,
        None => true,
    };
    let may_admit = matches!(
        lock,
        LockState::Free | LockState::Ours | LockState::HandedOver
    ) && observed.first_in_queue;
    if may_admit {
        observed.admission = Some(match (K::REQUEST_KIND, upgrade, app, gone) {
            (_, _, _, Some(gone)) => Err(gone.clone()),
            (RequestKind::Upgrade, Some(u), Some(app), _) => upgrade_plan(ctx, u, app).await,
            (RequestKind::Rollback, Some(u), Some(app), _) => match loaded.object.rollback_spec() {
                Some(spec) => rollback_plan(ctx, spec, u, app).await,
                None => Err(Problem::terminal(
                    "Internal",
                    "a rollback without a RollbackRequest spec",
                )),
            },
            _ => Err(Problem::terminal(
                "UpgradeRequestNotFound",
                "the UpgradeRequest to roll back does not exist",
            )),
        });
    }
    Ok(stale)
}

/// What the running phase needs from the cluster and Git (a request being deleted observes
/// as Resume does: it is going back). Without its app, only what putting back needs.
async fn observe_world<K: RequestObject>(
    ctx: &Context,
    loaded: &Loaded<K>,
    observed: &mut Observed,
) -> Result<(), Problem> {
    let Loaded {
        request,
        status,
        app,
        gone,
        ..
    } = loaded;
    match (status.phase, app) {
        (None, _) => Ok(()),
        (Some(p), _) if p.is_admitting() => Ok(()),
        (Some(p), Some(app)) => {
            let effective = if request.deleting && !p.is_terminal() {
                Phase::Resume
            } else {
                p
            };
            observe_phase(ctx, request, app, status, effective, observed).await
        }
        // A finished request has nothing left to put back.
        (Some(p), None) if p.is_done() => Ok(()),
        (Some(p), None) => match status.plan.as_ref() {
            None => Ok(()),
            Some(plan) => super::observe::observe_plan_state(ctx, plan, observed)
                .await
                // Still running without its app: it can only go back (through Resume).
                .and_then(|()| match gone {
                    Some(gone) if p != Phase::Resume && !request.deleting => Err(gone.clone()),
                    _ => Ok(()),
                }),
        },
    }
}

/// The workflow's decision on what was observed, or on why observing failed.
fn decide<K>(
    ctx: &Context,
    loaded: &Loaded<K>,
    observed: &Observed,
    seen: Result<(), Problem>,
) -> Decision {
    match seen {
        Ok(()) => workflow::decide(&loaded.request, &loaded.policy, &loaded.status, observed),
        Err(problem) => on_problem(ctx, loaded, observed, &problem),
    }
}

/// The workflow's decision on a problem met while observing or acting, counted by its
/// category.
fn on_problem<K>(
    ctx: &Context,
    loaded: &Loaded<K>,
    observed: &Observed,
    problem: &Problem,
) -> Decision {
    ctx.metrics.error(problem.category);
    workflow::on_action_error(
        &loaded.request,
        &loaded.policy,
        &loaded.status,
        problem,
        observed,
    )
}

/// Performs the decision's actions in order; the first that fails ends the list, and the
/// workflow decides again on that failure.
async fn act<K>(
    ctx: &Context,
    loaded: &Loaded<K>,
    observed: &Observed,
    stale_lock: Option<&str>,
    decision: Decision,
) -> Decision {
    let Loaded {
        request, status, ..
    } = loaded;
    let plan = decision.status.plan.clone().or(status.plan.clone());
    let acting = Acting {
        request,
        holder: &loaded.holder,
        app: loaded.app.as_ref(),
        plan: plan.as_ref(),
        upgrade: loaded.upgrade.as_ref(),
        stale_lock,
    };
    for action in &decision.actions {
        if let Err(problem) = perform(ctx, &acting, action, observed.now).await {
            tracing::warn!(request = %request.name, reason = %problem.reason, message = %problem.message, "action failed");
            return on_problem(ctx, loaded, observed, &problem);
        }
    }
    decision
}

/// Writes the decided status (once, only when it changed, with the resourceVersion read),
/// emits its Events, lets the object go when the workflow says so. A conflict re-runs the
/// reconcile at once from a fresh read, up to [`STATUS_CONFLICT_RETRIES`] times in a row;
/// then it fails with [`ReconcileError::Conflict`] (counted as `status_conflict`) and backs off.
async fn finish_reconcile<K: RequestObject>(
    ctx: &Context,
    conflicts: &Conflicts,
    api: &Api<K>,
    object: &K,
    before: &RequestStatus,
    decision: Decision,
    request: &Request,
) -> Result<Requeue, ReconcileError> {
    if decision.status != *before {
        let mut updated = object.clone();
        updated.set_status(decision.status.clone());
        let params = PostParams {
            field_manager: Some(crate::cluster::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.replace_status(&request.name, &params, &updated).await {
            Ok(written) => {
                ctx.cluster.wrote(K::KIND, &written);
                conflicts.clear(&request.uid);
            }
            // Someone wrote in between: the next reconcile starts from a fresh read.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let in_a_row = conflicts.bump(&request.uid);
                if in_a_row > STATUS_CONFLICT_RETRIES {
                    ctx.metrics.error("status_conflict");
                    return Err(ReconcileError::Conflict(format!(
                        "the status of {} kept changing under {in_a_row} writes in a row; backing off",
                        request.name
                    )));
                }
                return Ok(Requeue::requeue(Duration::ZERO));
            }
            Err(e) => return Err(api_error("writing the status", e)),
        }
        record_transition(ctx, request, before, &decision.status);
    }
    let recorder = Recorder::new(
        ctx.cluster.client().clone(),
        Reporter {
            controller: "fluxgate".into(),
            instance: None,
        },
    );
    let reference = object.object_ref(&());
    for note in &decision.notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.clone(),
            note: Some(note.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
    if decision.remove_finalizer {
        let finalizers: Vec<String> = object
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers}});
        match api
            .patch(&request.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(written) => ctx.cluster.wrote(K::KIND, &written),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(api_error("removing the finalizer", e)),
        }
    }
    Ok(match decision.requeue_after {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

/// Counts a phase change once its status is written: the duration of the phase that ended
/// and, for a terminal phase, the finished operation.
fn record_transition(
    ctx: &Context,
    request: &Request,
    before: &RequestStatus,
    after: &RequestStatus,
) {
    if before.phase == after.phase {
        return;
    }
    let kind = match request.kind {
        RequestKind::Upgrade => "UpgradeRequest",
        RequestKind::Rollback => "RollbackRequest",
    };
    let ended = before
        .phase
        .filter(|p| !p.is_terminal() && *p != Phase::Queued);
    if let (Some(phase), Some(started)) = (ended, before.phase_started_at.as_ref()) {
        let seconds = jiff::Timestamp::now()
            .duration_since(started.0)
            .as_secs_f64()
            .max(0.0);
        ctx.metrics.phase_took(kind, &format!("{phase:?}"), seconds);
    }
    if let Some(result) = after.phase.filter(|p| p.is_terminal()) {
        ctx.metrics.operation_finished(kind, &format!("{result:?}"));
    }
}

/// Who holds the app's lock, from this request's point of view, and the UID of a holder
/// that no longer exists (its lock may be taken over).
async fn lock_state(
    ctx: &Context,
    app: &ManagedApp,
    request: &Request,
    upgrade: Option<&UpgradeRequest>,
) -> Result<(LockState, Option<String>), ReconcileError> {
    let Some(active) = app.status.as_ref().and_then(|s| s.active_operation.clone()) else {
        return Ok((LockState::Free, None));
    };
    if active.uid == request.uid {
        return Ok((LockState::Ours, None));
    }
    let namespace = app.namespace().unwrap_or_default();
    if let (RequestKind::Rollback, Some(upgrade)) = (request.kind, upgrade) {
        let handing_over = upgrade.uid().as_deref() == Some(active.uid.as_str())
            && upgrade
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::hands_over);
        if handing_over {
            return Ok((LockState::HandedOver, None));
        }
    }
    let holder_exists = super::app_status::holder_exists(&ctx.cluster, &namespace, &active)
        .await
        .map_err(|p| ReconcileError::Api(p.message))?;
    if holder_exists {
        Ok((
            LockState::HeldBy(format!("{:?} {}", active.kind, active.name)),
            None,
        ))
    } else {
        Ok((LockState::Free, Some(active.uid)))
    }
}

/// Whether this request is the oldest not-yet-admitted request for its app (FIFO by
/// creation time, then name).
async fn first_in_queue(
    ctx: &Context,
    app: &ManagedApp,
    request: &Request,
) -> Result<bool, ReconcileError> {
    if request.kind == RequestKind::Rollback {
        // A rollback is not queued behind upgrades: it undoes one.
        return Ok(true);
    }
    let namespace = app.namespace().unwrap_or_default();
    let waiting = |status: Option<&RequestStatus>| {
        matches!(status.and_then(|s| s.phase), None | Some(Phase::Queued))
    };
    // Read fresh: this decides the order of admission, and an older request the cache has
    // not shown yet must not be overtaken.
    let upgrades = ctx
        .cluster
        .fresh()
        .list::<UpgradeRequest>(&namespace)
        .await
        .map_err(|e| api_error("listing UpgradeRequests", e))?;
    let mut queue: Vec<(Option<jiff::Timestamp>, String, String)> = upgrades
        .iter()
        .filter(|u| {
            u.spec.managed_app == app.name_any()
                && waiting(u.status.as_ref())
                && u.meta().deletion_timestamp.is_none()
        })
        .map(|u| {
            (
                u.meta().creation_timestamp.clone().map(|t| t.0),
                u.name_any(),
                u.uid().unwrap_or_default(),
            )
        })
        .collect();
    queue.sort();
    Ok(queue.first().is_none_or(|(_, _, uid)| *uid == request.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// An UpgradeRequest in Reconcile whose plan holds HelmRelease `apps/db` (its
    /// OCIRepository is not part of the plan: it is found through the HelmRelease's
    /// chartRef).
    fn reconciling() -> Arc<UpgradeRequest> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
                "metadata": {"name": "db-1-5-0", "namespace": "apps"},
                "spec": {"managedApp": "db", "version": "v1.5.0"},
                "status": {"phase": "Reconcile", "plan": {
                    "from": {"chart": "v1.4.0"}, "to": {"chart": "v1.5.0"},
                    "fluxObjects": [{"kind": "HelmRelease", "name": "db", "namespace": "apps",
                                     "wasSuspended": false}],
                    "workloads": [], "volumes": []}}
            }))
            .expect("an UpgradeRequest"),
        )
    }

    fn change(kind: WatchedKind, namespace: &str, name: &str) -> Change {
        Change::Object {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn a_new_oci_artifact_wakes_the_request_holding_its_helm_release_back() {
        // Found on the real Flux controllers (e2e/tests/upgrade.rs on_real_flux): the
        // request holds the HelmRelease suspended until its OCIRepository serves the new
        // chart; source-controller stores that artifact after kustomize-controller wrote
        // its final status, and helm-controller writes nothing for a suspended
        // HelmRelease, so only the OCIRepository's own change can wake the request (else
        // it waited for the 60 s fallback).
        let requests = [reconciling()];
        for namespace in ["apps", "flux-system"] {
            let woken = running_in(
                &requests,
                &change(WatchedKind::OciRepository, namespace, "db"),
            );
            assert_eq!(woken.len(), 1, "an OCIRepository in {namespace}");
        }
        // Objects of other kinds still wake it only where its plan has something.
        assert!(running_in(&requests, &change(WatchedKind::StatefulSet, "other", "x")).is_empty());
        assert_eq!(
            WatchedKind::of_flux(crate::api::FluxObjectKind::OciRepository),
            Some(WatchedKind::OciRepository),
            "OCIRepositories are cached and watched"
        );
    }
}
