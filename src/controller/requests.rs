//! The UpgradeRequest and RollbackRequest controllers: each reconcile reads the request and
//! its app, observes what the current phase needs, lets the workflow decide, performs the
//! actions, writes the status once (with the resourceVersion it read) and emits Events.

use super::act::{Acting, perform};
use super::admission::{rollback_plan, upgrade_plan};
use super::app_status::Holder;
use super::observe::observe_phase;
use super::preflight::preflight;
use super::{Context, FINALIZER};
use crate::api::{
    ManagedApp, OperationKind, Phase, RequestStatus, RollbackRequest, UpgradeRequest,
};
use crate::cluster::error::describe;
use crate::workflow::{
    self, AppPolicy, Decision, LockState, Observed, Problem, Request, RequestKind,
};
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
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
trait RequestObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: RequestKind;
    fn status(&self) -> Option<&RequestStatus>;
    fn set_status(&mut self, status: RequestStatus);
}

impl RequestObject for UpgradeRequest {
    const KIND: RequestKind = RequestKind::Upgrade;
    fn status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: RequestStatus) {
        self.status = Some(status);
    }
}

impl RequestObject for RollbackRequest {
    const KIND: RequestKind = RequestKind::Rollback;
    fn status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: RequestStatus) {
        self.status = Some(status);
    }
}

fn api_error(what: &str, e: kube::Error) -> ReconcileError {
    ReconcileError::Api(format!("{what}: {}", describe(&e)))
}

/// Runs both request controllers until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let conflicts = Conflicts::default();
    let upgrades = Controller::new(
        Api::<UpgradeRequest>::all(client.clone()),
        watcher::Config::default(),
    );
    let config =
        || kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    let upgrades = upgrades.with_config(config());
    let upgrade_store = upgrades.store();
    let upgrades = watch_the_world(upgrades, &client)
        .watches(
            Api::<ManagedApp>::all(client.clone()),
            watcher::Config::default(),
            {
                let store = upgrade_store.clone();
                move |app: ManagedApp| waiting_for_app(&store.state(), &app)
            },
        )
        .watches(
            Api::<RollbackRequest>::all(client.clone()),
            watcher::Config::default(),
            |rollback: RollbackRequest| {
                rollback
                    .namespace()
                    .map(|ns| ObjectRef::new(&rollback.spec.upgrade_request).within(&ns))
            },
        )
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
    let rollbacks = Controller::new(
        Api::<RollbackRequest>::all(client.clone()),
        watcher::Config::default(),
    );
    let rollbacks = rollbacks.with_config(config());
    let rollback_store = rollbacks.store();
    let rollbacks = watch_the_world(rollbacks, &client)
        // A rollback waits (Queued) until its upgrade hands the app's lock over by entering
        // RollingBack; that happens after the rollback exists (created by the upgrade's
        // reconcile before its status write, or by a person), so the upgrade's changes
        // must wake it.
        .watches(
            Api::<UpgradeRequest>::all(client.clone()),
            watcher::Config::default(),
            move |upgrade: UpgradeRequest| rollbacks_of(&rollback_store.state(), &upgrade),
        )
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

/// The longest pause of a controller's watches after watch errors (e.g. 410 Gone).
const TRIGGER_BACKOFF_MAX: Duration = Duration::from_secs(3);

/// The pause after consecutive watch errors: 50 ms, doubling up to [`TRIGGER_BACKOFF_MAX`].
#[derive(Default)]
struct TriggerBackoff {
    next: Option<Duration>,
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next.unwrap_or(Duration::from_millis(50));
        self.next = Some((now * 2).min(TRIGGER_BACKOFF_MAX));
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = None;
    }
}

/// The span every reconcile of a request runs in: logs carry the request, and a test can
/// count what one reconcile sent (docs/design.md §5: at most one status write).
fn reconcile_span<K: RequestObject>(object: &K) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        kind = ?K::KIND,
        namespace = %object.namespace().unwrap_or_default(),
        name = %object.name_any()
    )
}

/// Progress is event-driven: a change of anything a running request waits on (Flux
/// objects, snapshots, PVCs, pods, workloads) reconciles the running requests whose plan
/// touches that namespace, found in the controller's own cache (no API calls to map).
fn watch_the_world<K: RequestObject>(
    controller: Controller<K>,
    client: &kube::Client,
) -> Controller<K> {
    use crate::api::FluxObjectKind;
    use crate::cluster::flux::ops::api_resource;
    use crate::cluster::snapshots::VolumeSnapshot;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    use kube::api::DynamicObject;
    let store = controller.store();
    let config = watcher::Config::default;
    // kube's default trigger backoff (client-go's, 0.8 s doubling to 30 s, reset after 2
    // min without errors) is shared by every watch of a controller: a few 410 Gone answers
    // on any one of them paused all events for up to 30 s, and requests sat until the 60 s
    // fallback. Errors still back off, but briefly, and the backoff forgets them sooner.
    let controller = controller.trigger_backoff(kube::runtime::utils::ResetTimerBackoff::new(
        TriggerBackoff::default(),
        Duration::from_secs(15),
    ));
    let map = |store: kube::runtime::reflector::Store<K>| {
        move |namespace: Option<String>| running_in(&store.state(), namespace.as_deref())
    };
    let mut controller = controller
        .watches(Api::<Pod>::all(client.clone()), config(), {
            let f = map(store.clone());
            move |o: Pod| f(o.namespace())
        })
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            config(),
            {
                let f = map(store.clone());
                move |o: PersistentVolumeClaim| f(o.namespace())
            },
        )
        .watches(Api::<StatefulSet>::all(client.clone()), config(), {
            let f = map(store.clone());
            move |o: StatefulSet| f(o.namespace())
        })
        .watches(Api::<Deployment>::all(client.clone()), config(), {
            let f = map(store.clone());
            move |o: Deployment| f(o.namespace())
        })
        .watches(Api::<VolumeSnapshot>::all(client.clone()), config(), {
            let f = map(store.clone());
            move |o: VolumeSnapshot| f(o.namespace())
        });
    for kind in [
        FluxObjectKind::Kustomization,
        FluxObjectKind::HelmRelease,
        FluxObjectKind::GitRepository,
    ] {
        let resource = api_resource(kind);
        // Flux objects often live in another namespace than the app: any change wakes
        // every running request (there are few).
        let f = map(store.clone());
        controller = controller.watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            resource,
            config(),
            move |_: DynamicObject| f(None),
        );
    }
    controller
}

/// Running (admitted, not finished) requests whose plan touches `namespace` (any namespace
/// when None).
fn running_in<K: RequestObject>(requests: &[Arc<K>], namespace: Option<&str>) -> Vec<ObjectRef<K>> {
    requests
        .iter()
        .filter(|r| {
            let Some(status) = r.status() else {
                return false;
            };
            // An upgrade in RollingBack waits only on its RollbackRequest, whose own watch
            // wakes it; the cluster's churn during the rollback is not its business.
            let running = status.phase.is_some_and(|p| {
                !p.is_terminal() && !matches!(p, Phase::Queued | Phase::Admit | Phase::RollingBack)
            });
            let touches = |plan: &crate::api::Plan| match namespace {
                None => true,
                Some(ns) => {
                    plan.workloads.iter().any(|w| w.namespace == ns)
                        || plan.volumes.iter().any(|v| v.namespace == ns)
                        || plan.flux_objects.iter().any(|o| o.namespace == ns)
                }
            };
            (running || status.phase == Some(Phase::Frozen))
                && status.plan.as_ref().is_some_and(touches)
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Requests of `app` that are not finished: a change of the app (its lock released) may let
/// them go on.
fn waiting_for_app(
    requests: &[Arc<UpgradeRequest>],
    app: &ManagedApp,
) -> Vec<ObjectRef<UpgradeRequest>> {
    requests
        .iter()
        .filter(|r| r.namespace() == app.namespace() && r.spec.managed_app == app.name_any())
        .filter(|r| {
            !r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_terminal)
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// The RollbackRequests that undo `upgrade`.
fn rollbacks_of(
    rollbacks: &[Arc<RollbackRequest>],
    upgrade: &UpgradeRequest,
) -> Vec<ObjectRef<RollbackRequest>> {
    rollbacks
        .iter()
        .filter(|r| {
            r.namespace() == upgrade.namespace() && r.spec.upgrade_request == upgrade.name_any()
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

fn error_policy<K>(_: Arc<K>, error: &ReconcileError, _: Arc<Context>) -> Requeue {
    tracing::warn!(%error, "reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(5))
}

/// The request as the API server has it now. The controller's cache can lag behind our own
/// last status write (a watch event of a Flux object we just patched may trigger the next
/// reconcile before the cache sees that write); deciding from that stale phase would repeat
/// or undo an earlier step's side effects before the status write is refused as stale.
async fn fresh<K: RequestObject>(
    ctx: &Context,
    cached: &K,
) -> Result<Option<Arc<K>>, ReconcileError> {
    let namespace = cached.namespace().unwrap_or_default();
    Api::<K>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&cached.name_any())
        .await
        .map(|found| found.map(Arc::new))
        .map_err(|e| api_error("reading the request", e))
}

async fn reconcile_upgrade(
    cached: Arc<UpgradeRequest>,
    ctx: Arc<Context>,
    conflicts: Conflicts,
) -> Result<Requeue, ReconcileError> {
    let Some(upgrade) = fresh(&ctx, cached.as_ref()).await? else {
        return Ok(Requeue::await_change());
    };
    let namespace = upgrade.namespace().unwrap_or_default();
    let app = Api::<ManagedApp>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&upgrade.spec.managed_app)
        .await
        .map_err(|e| api_error("reading the ManagedApp", e))?;
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
    let Some(rollback) = fresh(&ctx, cached.as_ref()).await? else {
        return Ok(Requeue::await_change());
    };
    let namespace = rollback.namespace().unwrap_or_default();
    let upgrade = Api::<UpgradeRequest>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&rollback.spec.upgrade_request)
        .await
        .map_err(|e| api_error("reading the UpgradeRequest", e))?;
    let app = match &upgrade {
        Some(upgrade) => Api::<ManagedApp>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&upgrade.spec.managed_app)
            .await
            .map_err(|e| api_error("reading the ManagedApp", e))?,
        None => None,
    };
    let request = request_of(
        rollback.as_ref(),
        rollback.spec.dry_run,
        !rollback.spec.safety_snapshot,
    );
    reconcile(ctx, conflicts, rollback.clone(), request, app, upgrade).await
}

fn request_of<K: RequestObject>(object: &K, dry_run: bool, skip_snapshot: bool) -> Request {
    Request {
        kind: K::KIND,
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
        generation: object.meta().generation,
        dry_run,
        skip_snapshot,
        deleting: object.meta().deletion_timestamp.is_some(),
    }
}

async fn reconcile<K: RequestObject>(
    ctx: Arc<Context>,
    conflicts: Conflicts,
    object: Arc<K>,
    mut request: Request,
    app: Option<ManagedApp>,
    upgrade: Option<UpgradeRequest>,
) -> Result<Requeue, ReconcileError> {
    let namespace = object.namespace().unwrap_or_default();
    let api = Api::<K>::namespaced(ctx.client.clone(), &namespace);
    let has_finalizer = object.finalizers().iter().any(|f| f == FINALIZER);
    if !has_finalizer && !request.deleting {
        let mut finalizers = object.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}});
        api.patch(&request.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| api_error("adding the finalizer", e))?;
        return Ok(Requeue::await_change());
    }
    let status = object.status().cloned().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut observed = Observed {
        now,
        ..Default::default()
    };
    // Without its app a request can still put back what it changed, from its plan alone.
    let gone = app.is_none().then(|| {
        let missing = if K::KIND == RequestKind::Rollback && upgrade.is_none() {
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
    if let (RequestKind::Upgrade, Some(app)) = (K::KIND, &app) {
        request.skip_snapshot = request.skip_snapshot
            || !app.spec.snapshots.enabled
            || upgrade.as_ref().is_some_and(|u| u.spec.skip_snapshot);
    }
    let holder = Holder {
        kind: if K::KIND == RequestKind::Upgrade {
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

    // Observe.
    let (lock, stale) = match &app {
        Some(app) => lock_state(&ctx, app, &request, upgrade.as_ref()).await?,
        None => (LockState::Free, None),
    };
    observed.lock = Some(lock.clone());
    let phase = status.phase;
    // A request without its app is refused at Admit even while it is being deleted.
    let admitting = matches!(phase, None | Some(Phase::Queued) | Some(Phase::Admit));
    if admitting && (gone.is_some() || !request.deleting) {
        observed.first_in_queue = match &app {
            Some(app) => first_in_queue(&ctx, app, &request).await?,
            None => true,
        };
        let may_admit = matches!(
            lock,
            LockState::Free | LockState::Ours | LockState::HandedOver
        ) && observed.first_in_queue;
        if may_admit {
            observed.admission = Some(match (K::KIND, &upgrade, &app, &gone) {
                (_, _, _, Some(gone)) => Err(gone.clone()),
                (RequestKind::Upgrade, Some(u), Some(app), _) => upgrade_plan(&ctx, u, app).await,
                (RequestKind::Rollback, Some(u), _, _) => rollback_plan(u),
                _ => Err(Problem::terminal(
                    "UpgradeRequestNotFound",
                    "the UpgradeRequest to roll back does not exist",
                )),
            });
        }
    }
    let seen = match (phase, &app) {
        (None | Some(Phase::Queued) | Some(Phase::Admit), _) => Ok(()),
        (Some(p), Some(app)) => {
            let effective = if request.deleting && !p.is_terminal() {
                Phase::Resume
            } else {
                p
            };
            let seen = observe_phase(&ctx, &request, app, &status, effective, &mut observed).await;
            if let (Ok(()), Phase::Preflight, Some(plan)) = (&seen, p, status.plan.as_ref()) {
                observed.preflight = Some(preflight(&ctx, app, plan).await);
            }
            seen
        }
        // A finished request has nothing left to put back.
        (Some(p), None) if p.is_terminal() && p != Phase::Frozen => Ok(()),
        (Some(p), None) => match status.plan.as_ref() {
            None => Ok(()),
            Some(plan) => super::observe::observe_plan_state(&ctx, plan, &mut observed)
                .await
                // Still running without its app: it can only go back (through Resume).
                .and_then(|()| match &gone {
                    Some(gone) if p != Phase::Resume && !request.deleting => Err(gone.clone()),
                    _ => Ok(()),
                }),
        },
    };

    // Decide.
    let mut decision = match seen {
        Ok(()) => workflow::decide(&request, &policy, &status, &observed),
        Err(problem) => {
            ctx.metrics.error(problem.category);
            workflow::on_action_error(&request, &policy, &status, &problem, &observed)
        }
    };

    // Act.
    let plan = decision.status.plan.clone().or(status.plan.clone());
    let acting = Acting {
        request: &request,
        holder: &holder,
        app: app.as_ref(),
        plan: plan.as_ref(),
        upgrade: upgrade.as_ref(),
        stale_lock: stale.as_deref(),
    };
    for action in decision.actions.clone() {
        if let Err(problem) = perform(&ctx, &acting, &action, now).await {
            tracing::warn!(request = %request.name, reason = %problem.reason, message = %problem.message, "action failed");
            ctx.metrics.error(problem.category);
            decision = workflow::on_action_error(&request, &policy, &status, &problem, &observed);
            break;
        }
    }
    finish_reconcile(
        &ctx,
        &conflicts,
        &api,
        object.as_ref(),
        &status,
        decision,
        &request,
    )
    .await
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
            Ok(_) => conflicts.clear(&request.uid),
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
        ctx.client.clone(),
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
            Ok(_) => {}
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
                .is_some_and(|p| matches!(p, Phase::RollingBack | Phase::Frozen));
        if handing_over {
            return Ok((LockState::HandedOver, None));
        }
    }
    let holder_exists = super::app_status::holder_exists(&ctx.client, &namespace, &active)
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
    let upgrades = Api::<UpgradeRequest>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("listing UpgradeRequests", e))?;
    let mut queue: Vec<(Option<jiff::Timestamp>, String, String)> = upgrades
        .items
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
