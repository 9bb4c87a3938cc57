//! One watch per kind, shared by every controller: the caches the operator reads from, the
//! [`Change`]s that wake its reconciles, and [`Cluster`], through which every part of
//! Fluxgate reads and writes the cluster — watched kinds from the caches, everything else
//! (and whatever a caller must see exactly as it is now) from the API server.
//!
//! A miss is never answered from a cache: the object may have been created a moment ago.
//!
//! Read-your-writes: a watch shows the operator's own write a moment after the API server
//! answered it. Each write through [`Cluster`] is remembered by its resourceVersion; until
//! the cache shows that version (or a few seconds passed), reads of that object go to the
//! API server, so a reconcile never decides on a state older than what it just did.

use crate::api::{FluxObjectKind, ManagedApp, RollbackRequest, UpgradeRequest};
use crate::cluster::flux::ops::api_resource;
use crate::cluster::snapshots::VolumeSnapshot;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The kinds the operator watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchedKind {
    UpgradeRequest,
    RollbackRequest,
    ManagedApp,
    StatefulSet,
    Deployment,
    VolumeSnapshot,
    Kustomization,
    HelmRelease,
    GitRepository,
    /// A HelmRelease's `chartRef` source: its new artifact is what lets Fluxgate resume the
    /// HelmRelease it holds back (the real source-controller stores it after
    /// kustomize-controller reported the commit applied, and helm-controller writes nothing
    /// while the HelmRelease is suspended, so nothing else would wake the request).
    OciRepository,
    /// Metadata only: pods only wake reconciles (which pods hold a volume is read fresh).
    Pod,
    /// Metadata only: PVCs only wake reconciles (a restore reads them fresh).
    PersistentVolumeClaim,
}

impl WatchedKind {
    /// The cached Flux kind, if `kind` is one.
    pub fn of_flux(kind: FluxObjectKind) -> Option<WatchedKind> {
        match kind {
            FluxObjectKind::Kustomization => Some(WatchedKind::Kustomization),
            FluxObjectKind::HelmRelease => Some(WatchedKind::HelmRelease),
            FluxObjectKind::GitRepository => Some(WatchedKind::GitRepository),
            FluxObjectKind::OciRepository => Some(WatchedKind::OciRepository),
            _ => None,
        }
    }
}

/// A change a watch saw, after the cache took it in.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// One object was created, changed or deleted (it is no longer in the cache then).
    Object {
        kind: WatchedKind,
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// Any object of `kind` may have changed: its watch listed everything again (also the
    /// first time). `None`: any object of any kind — a subscriber fell behind and missed
    /// changes.
    Relisted(Option<WatchedKind>),
}

/// How long after a write the operator waits for its cache to show it before trusting
/// the cache again anyway (a relist can skip over the written version).
const WRITE_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// The longest pause of a watch after errors (e.g. 410 Gone).
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Changes buffered per subscriber; one that falls further behind gets
/// [`Change::Relisted`]`(None)` instead.
const CHANGES_BUFFER: usize = 4096;

/// The operator's caches of the watched kinds.
pub struct Caches {
    pub upgrades: Store<UpgradeRequest>,
    pub rollbacks: Store<RollbackRequest>,
    pub apps: Store<ManagedApp>,
    statefulsets: Store<StatefulSet>,
    deployments: Store<Deployment>,
    snapshots: Store<VolumeSnapshot>,
    flux: BTreeMap<WatchedKind, Store<DynamicObject>>,
    /// Kinds whose first list is complete: before it, their reads go to the API server.
    ready: Mutex<HashSet<WatchedKind>>,
    changes: broadcast::Sender<Change>,
    /// The operator's writes the caches may not show yet, by object.
    written: Mutex<HashMap<ObjectId, Written>>,
    /// What feeds the caches, until [`Caches::run`] takes it.
    writers: Mutex<Option<Writers>>,
}

type ObjectId = (WatchedKind, String, String);

struct Written {
    /// The resourceVersion the write left; None when it deleted the object.
    resource_version: Option<String>,
    at: Instant,
}

struct Writers {
    upgrades: reflector::store::Writer<UpgradeRequest>,
    rollbacks: reflector::store::Writer<RollbackRequest>,
    apps: reflector::store::Writer<ManagedApp>,
    statefulsets: reflector::store::Writer<StatefulSet>,
    deployments: reflector::store::Writer<Deployment>,
    snapshots: reflector::store::Writer<VolumeSnapshot>,
    flux: Vec<(
        WatchedKind,
        FluxObjectKind,
        reflector::store::Writer<DynamicObject>,
    )>,
}

/// A kind the operator caches whole, read with [`Cluster::get`] and [`Cluster::list`].
pub trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: WatchedKind;
    fn store(caches: &Caches) -> &Store<Self>;
}

macro_rules! watched {
    ($type:ty, $kind:ident, $field:ident) => {
        impl Watched for $type {
            const KIND: WatchedKind = WatchedKind::$kind;
            fn store(caches: &Caches) -> &Store<Self> {
                &caches.$field
            }
        }
    };
}
watched!(UpgradeRequest, UpgradeRequest, upgrades);
watched!(RollbackRequest, RollbackRequest, rollbacks);
watched!(ManagedApp, ManagedApp, apps);
watched!(StatefulSet, StatefulSet, statefulsets);
watched!(Deployment, Deployment, deployments);
watched!(VolumeSnapshot, VolumeSnapshot, snapshots);

impl Caches {
    /// Empty caches; [`Caches::run`] fills them and keeps them current.
    pub fn new() -> Arc<Caches> {
        let (upgrades, upgrades_writer) = reflector::store();
        let (rollbacks, rollbacks_writer) = reflector::store();
        let (apps, apps_writer) = reflector::store();
        let (statefulsets, statefulsets_writer) = reflector::store();
        let (deployments, deployments_writer) = reflector::store();
        let (snapshots, snapshots_writer) = reflector::store();
        let mut flux = BTreeMap::new();
        let mut flux_writers = Vec::new();
        for (watched, kind) in [
            (WatchedKind::Kustomization, FluxObjectKind::Kustomization),
            (WatchedKind::HelmRelease, FluxObjectKind::HelmRelease),
            (WatchedKind::GitRepository, FluxObjectKind::GitRepository),
            (WatchedKind::OciRepository, FluxObjectKind::OciRepository),
        ] {
            let writer = reflector::store::Writer::new(api_resource(kind));
            flux.insert(watched, writer.as_reader());
            flux_writers.push((watched, kind, writer));
        }
        Arc::new(Caches {
            upgrades,
            rollbacks,
            apps,
            statefulsets,
            deployments,
            snapshots,
            flux,
            ready: Mutex::new(HashSet::new()),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            written: Mutex::new(HashMap::new()),
            writers: Mutex::new(Some(Writers {
                upgrades: upgrades_writer,
                rollbacks: rollbacks_writer,
                apps: apps_writer,
                statefulsets: statefulsets_writer,
                deployments: deployments_writer,
                snapshots: snapshots_writer,
                flux: flux_writers,
            })),
        })
    }

    /// Watches every kind and keeps the caches current until the future is dropped; only
    /// the first call watches (the caches have one feed).
    pub async fn run(self: Arc<Self>, client: Client) {
        let Some(writers) = lock(&self.writers).take() else {
            tracing::warn!("the caches are already being fed; not watching twice");
            return;
        };
        let mut watches = vec![
            self.clone()
                .feed(
                    WatchedKind::UpgradeRequest,
                    writers.upgrades,
                    Api::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed(
                    WatchedKind::RollbackRequest,
                    writers.rollbacks,
                    Api::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed(
                    WatchedKind::ManagedApp,
                    writers.apps,
                    Api::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed(
                    WatchedKind::StatefulSet,
                    writers.statefulsets,
                    Api::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed(
                    WatchedKind::Deployment,
                    writers.deployments,
                    Api::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed(
                    WatchedKind::VolumeSnapshot,
                    writers.snapshots,
                    Api::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed_metadata(
                    WatchedKind::Pod,
                    Api::<PartialObjectMeta<Pod>>::all(client.clone()),
                )
                .boxed(),
            self.clone()
                .feed_metadata(
                    WatchedKind::PersistentVolumeClaim,
                    Api::<PartialObjectMeta<PersistentVolumeClaim>>::all(client.clone()),
                )
                .boxed(),
        ];
        for (watched, kind, writer) in writers.flux {
            let api = Api::<DynamicObject>::all_with(client.clone(), &api_resource(kind));
            watches.push(self.clone().feed(watched, writer, api).boxed());
        }
        futures::future::join_all(watches).await;
    }

    /// Keeps one kind's cache current and tells subscribers what changed.
    async fn feed<K>(
        self: Arc<Self>,
        kind: WatchedKind,
        writer: reflector::store::Writer<K>,
        api: Api<K>,
    ) where
        K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let events = watcher(api, watcher::Config::default())
            .backoff(watch_backoff())
            .modify(|object: &mut K| slim(object.meta_mut()))
            .reflect(writer);
        self.forward(kind, events).await;
    }

    /// Tells subscribers what changed, from a watch of metadata only (no cache).
    async fn feed_metadata<K>(self: Arc<Self>, kind: WatchedKind, api: Api<K>)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
        K::DynamicType: Default,
    {
        let events = watcher(api, watcher::Config::default()).backoff(watch_backoff());
        self.forward(kind, events).await;
    }

    async fn forward<K: Resource>(
        &self,
        kind: WatchedKind,
        events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
    ) {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let change = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    Change::Object {
                        kind,
                        namespace: object.namespace().unwrap_or_default(),
                        name: object.name_any(),
                        labels: object.labels().clone(),
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    lock(&self.ready).insert(kind);
                    Change::Relisted(Some(kind))
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Err(error) => {
                    tracing::warn!(?kind, %error, "watch failed; retrying");
                    continue;
                }
            };
            // No subscriber yet is fine: controllers that start later begin with a relist.
            let _ = self.changes.send(change);
        }
    }

    /// Every change from now on; a subscriber that falls behind gets
    /// [`Change::Relisted`]`(None)` for what it missed.
    pub fn changes(&self) -> impl Stream<Item = Change> + Send + use<> {
        futures::stream::unfold(self.changes.subscribe(), |mut changes| async move {
            match changes.recv().await {
                Ok(change) => Some((change, changes)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some((Change::Relisted(None), changes))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    /// A cached Flux object of a watched kind, as the cache has it (no API call).
    pub fn flux_object(
        &self,
        kind: FluxObjectKind,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let store = self.flux.get(&WatchedKind::of_flux(kind)?)?;
        store.get(&ObjectRef::new_with(name, api_resource(kind)).within(namespace))
    }

    fn is_ready(&self, kind: WatchedKind) -> bool {
        lock(&self.ready).contains(&kind)
    }

    /// Whether the cache may answer for an object whose cached resourceVersion is
    /// `cached`: its watch has listed, and it shows the operator's last write to it.
    fn answers(&self, id: ObjectId, cached: Option<&str>) -> bool {
        if !self.is_ready(id.0) {
            return false;
        }
        let mut written = lock(&self.written);
        let Some(write) = written.get(&id) else {
            return true;
        };
        if at_least(cached, write.resource_version.as_deref())
            || write.at.elapsed() > WRITE_VISIBLE_WITHIN
        {
            written.remove(&id);
            return true;
        }
        false
    }

    /// Whether the cache may answer a list of `kind` in `namespace`.
    fn answers_list(
        &self,
        kind: WatchedKind,
        namespace: &str,
        current: impl Fn(&str) -> Option<String>,
    ) -> bool {
        if !self.is_ready(kind) {
            return false;
        }
        let pending: Vec<ObjectId> = lock(&self.written)
            .keys()
            .filter(|(k, ns, _)| *k == kind && ns == namespace)
            .cloned()
            .collect();
        pending.into_iter().all(|id| {
            let cached = current(&id.2);
            self.answers(id, cached.as_deref())
        })
    }

    fn wrote(&self, id: ObjectId, resource_version: Option<String>) {
        let mut written = lock(&self.written);
        written.retain(|_, w| w.at.elapsed() <= WRITE_VISIBLE_WITHIN);
        written.insert(
            id,
            Written {
                resource_version,
                at: Instant::now(),
            },
        );
    }
}

/// Whether an object cached at resourceVersion `cached` is at least as new as the write
/// that left `written` (None: deleted). resourceVersions are opaque to clients in general,
/// but every API server Fluxgate meets (etcd's, kubesim's) issues increasing integers
/// (checked on both by the conformance case
/// `watches_deliver_every_change_in_order_with_growing_versions`); versions that do not
/// parse only match exactly.
fn at_least(cached: Option<&str>, written: Option<&str>) -> bool {
    match (cached, written) {
        (cached, written) if cached == written => true,
        (Some(cached), Some(written)) => matches!(
            (cached.parse::<u64>(), written.parse::<u64>()),
            (Ok(cached), Ok(written)) if cached >= written
        ),
        _ => false,
    }
}

/// Drops what no read needs from a cached object: managed fields and kubectl's copy of
/// the last applied object are most of many objects' size.
fn slim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pause after consecutive watch errors: 50 ms, doubling up to [`WATCH_BACKOFF_MAX`],
/// forgotten after 15 s without errors. (kube's default, 0.8 s doubling to 30 s, left
/// requests waiting on a watch that had met a few 410 Gone answers.)
fn watch_backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff::default(), Duration::from_secs(15))
}

#[derive(Default)]
pub struct WatchBackoff {
    next: Option<Duration>,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next.unwrap_or(Duration::from_millis(50));
        self.next = Some((now * 2).min(WATCH_BACKOFF_MAX));
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = None;
    }
}

/// Fluxgate's way to the cluster: reads of watched kinds from the caches (when it has
/// them), writes remembered so that the next read sees them.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    caches: Option<Arc<Caches>>,
    /// Reads go to the API server even where a cache could answer.
    fresh: bool,
}

impl Cluster {
    /// Every read from the API server (the CLI, tests).
    pub fn direct(client: Client) -> Cluster {
        Cluster {
            client,
            caches: None,
            fresh: true,
        }
    }

    /// Reads of watched kinds from `caches`.
    pub fn cached(client: Client, caches: Arc<Caches>) -> Cluster {
        Cluster {
            client,
            caches: Some(caches),
            fresh: false,
        }
    }

    /// The same cluster with every read from the API server: for decisions that destroy
    /// data or take a lock, which must not rest on a cache that lags behind.
    pub fn fresh(&self) -> Cluster {
        Cluster {
            fresh: true,
            ..self.clone()
        }
    }

    /// The API client, for kinds the operator does not watch.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The caches, unless reads must be fresh.
    fn caches(&self) -> Option<&Caches> {
        self.caches.as_deref().filter(|_| !self.fresh)
    }

    /// An object of a watched kind, or None when it does not exist. Only a hit is
    /// answered from the cache: a miss is read from the API server, since the cache may not
    /// have seen an object someone created a moment ago (an app applied together with its
    /// first UpgradeRequest), and "it does not exist" often ends a request.
    pub async fn get<K: Watched>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<K>>, kube::Error> {
        if let Some(caches) = self.caches() {
            let id = (K::KIND, namespace.to_owned(), name.to_owned());
            if let Some(found) = K::store(caches).get(&ObjectRef::new(name).within(namespace))
                && caches.answers(id, found.resource_version().as_deref())
            {
                return Ok(Some(found));
            }
        }
        Ok(Api::<K>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(Arc::new))
    }

    /// Every object of a watched kind in `namespace`.
    pub async fn list<K: Watched>(&self, namespace: &str) -> Result<Vec<Arc<K>>, kube::Error> {
        if let Some(caches) = self.caches() {
            let store = K::store(caches);
            let current = |name: &str| {
                store
                    .get(&ObjectRef::new(name).within(namespace))
                    .and_then(|o| o.resource_version())
            };
            if caches.answers_list(K::KIND, namespace, current) {
                return Ok(store
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace().as_deref() == Some(namespace))
                    .collect());
            }
        }
        Ok(Api::<K>::namespaced(self.client.clone(), namespace)
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// A Flux object, or None when it does not exist (a miss read fresh, as in
    /// [`Cluster::get`]).
    pub async fn get_flux(
        &self,
        kind: FluxObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<DynamicObject>>, kube::Error> {
        if let (Some(caches), Some(watched)) = (self.caches(), WatchedKind::of_flux(kind))
            && let Some(found) = caches.flux_object(kind, namespace, name)
            && caches.answers(
                (watched, namespace.to_owned(), name.to_owned()),
                found.resource_version().as_deref(),
            )
        {
            return Ok(Some(found));
        }
        Ok(Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &api_resource(kind),
        )
        .get_opt(name)
        .await?
        .map(Arc::new))
    }

    /// Remembers a write the operator made (the object as the API server answered it), so
    /// that reads see it before the watch does.
    pub fn wrote<K: Resource>(&self, kind: WatchedKind, object: &K) {
        if let Some(caches) = &self.caches {
            let id = (
                kind,
                object.namespace().unwrap_or_default(),
                object.name_any(),
            );
            caches.wrote(id, object.resource_version());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_waits_for_the_cache_to_show_the_operators_own_write() {
        let caches = Caches::new();
        lock(&caches.ready).insert(WatchedKind::HelmRelease);
        let id = || (WatchedKind::HelmRelease, "apps".to_owned(), "db".to_owned());
        assert!(
            caches.answers(id(), Some("5")),
            "nothing written: the cache answers"
        );
        caches.wrote(id(), Some("7".into()));
        assert!(
            !caches.answers(id(), Some("5")),
            "the cache is older than our write"
        );
        assert!(caches.answers(id(), Some("7")), "the cache shows our write");
        assert!(
            caches.answers(id(), Some("9")),
            "and is trusted from then on"
        );
        caches.wrote(id(), None);
        assert!(
            !caches.answers(id(), Some("9")),
            "deleted by us, still cached"
        );
        assert!(caches.answers(id(), None), "gone from the cache too");
    }

    #[test]
    fn a_cache_newer_than_the_write_answers_though_it_never_showed_the_write_itself() {
        let caches = Caches::new();
        lock(&caches.ready).insert(WatchedKind::GitRepository);
        let id = || {
            (
                WatchedKind::GitRepository,
                "flux-system".to_owned(),
                "flux-system".to_owned(),
            )
        };
        // source-controller wrote its status right after our patch: the watch delivered
        // both before the read, so the cache is past our version.
        caches.wrote(id(), Some("121".into()));
        assert!(!caches.answers(id(), Some("120")));
        assert!(caches.answers(id(), Some("122")));
        // Versions that are not numbers cannot be ordered: only the written one answers.
        caches.wrote(id(), Some("b".into()));
        assert!(!caches.answers(id(), Some("c")));
    }

    #[test]
    fn a_kind_not_listed_yet_is_read_from_the_api_server() {
        let caches = Caches::new();
        let id = (WatchedKind::StatefulSet, "apps".to_owned(), "db".to_owned());
        assert!(!caches.answers(id.clone(), None));
        lock(&caches.ready).insert(WatchedKind::StatefulSet);
        assert!(caches.answers(id, None));
    }

    #[test]
    fn a_list_waits_for_every_write_of_its_namespace() {
        let caches = Caches::new();
        lock(&caches.ready).insert(WatchedKind::UpgradeRequest);
        caches.wrote(
            (WatchedKind::UpgradeRequest, "apps".into(), "a".into()),
            Some("3".into()),
        );
        let old = |_: &str| Some("2".to_owned());
        let new = |_: &str| Some("3".to_owned());
        assert!(caches.answers_list(WatchedKind::UpgradeRequest, "other", old));
        assert!(!caches.answers_list(WatchedKind::UpgradeRequest, "apps", old));
        assert!(caches.answers_list(WatchedKind::UpgradeRequest, "apps", new));
    }
}
