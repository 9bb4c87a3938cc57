//! Following a request until it ends: watches (not polling) on the request and, once it
//! names one, on its automatic RollbackRequest, printing the progress lines as they happen;
//! says so when the operator does not pick the request up.

use super::cluster::Session;
use super::view::progress::Progress;
use crate::api::{RequestStatus, RollbackRequest, UpgradeRequest};
use crate::cluster::error::describe;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// A request kind the CLI follows.
pub trait Request:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Its status, if written yet.
    fn request_status(&self) -> Option<&RequestStatus>;
}

impl Request for UpgradeRequest {
    fn request_status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
}

impl Request for RollbackRequest {
    fn request_status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
}

/// The flags of commands that can follow what they created.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Follow the request phase by phase until it ends (an upgrade also into its automatic
    /// rollback); the exit code says how it ended (0 succeeded, 3 failed, 4 rolled back,
    /// 5 frozen).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long the request may stay unadmitted before the operator counts as
    /// not running.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = super::upgrade::parse_duration)]
    pub pickup_timeout: Duration,
    /// With --wait: stop waiting after this long (the request keeps running).
    #[arg(long, value_name = "DURATION", value_parser = super::upgrade::parse_duration)]
    pub timeout: Option<Duration>,
}

impl WaitArgs {
    /// The follow options, measuring from `started`.
    pub fn options(&self, started: Instant) -> FollowOptions {
        FollowOptions {
            started,
            pickup_timeout: self.pickup_timeout,
            timeout: self.timeout,
        }
    }
}

/// How to follow.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// When following started (elapsed times are measured from it).
    pub started: Instant,
    /// How long a request may stay without a phase before the operator counts as not
    /// running.
    pub pickup_timeout: Duration,
    /// Give up waiting after this long (the request keeps running).
    pub timeout: Option<Duration>,
}

/// What a watch on one named object reports.
enum Seen<K> {
    Object(Box<K>),
    Deleted,
}

/// A watch on the object `name` (a field selector on its name), resuming and relisting on
/// its own.
fn watch_named<K: Request>(
    session: &Session,
    namespace: &str,
    name: &str,
) -> BoxStream<'static, Result<Seen<K>, watcher::Error>> {
    let api = Api::<K>::namespaced(session.client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config)
        .default_backoff()
        .try_filter_map(|event| async move {
            Ok(match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    Some(Seen::Object(Box::new(o)))
                }
                watcher::Event::Delete(_) => Some(Seen::Deleted),
                watcher::Event::Init | watcher::Event::InitDone => None,
            })
        })
        .boxed()
}

fn print(lines: Vec<String>) -> anyhow::Result<()> {
    for line in lines {
        super::say(&line)?;
    }
    Ok(())
}

fn phase_of<K: Request>(object: &K) -> Option<crate::api::Phase> {
    object.request_status().and_then(|s| s.phase)
}

async fn next_or_pending<K>(
    stream: &mut Option<BoxStream<'static, Result<Seen<K>, watcher::Error>>>,
) -> Option<Result<Seen<K>, watcher::Error>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Follows the request `name` (and its automatic rollback, for an upgrade) until it ends,
/// printing progress; returns it as it ended.
pub async fn follow<K: Request>(
    session: &Session,
    namespace: &str,
    name: &str,
    label: &str,
    options: &FollowOptions,
) -> anyhow::Result<K> {
    let kind = K::kind(&());
    let mut progress = Progress::new();
    let mut main = watch_named::<K>(session, namespace, name);
    let mut rollback: Option<BoxStream<'static, Result<Seen<RollbackRequest>, watcher::Error>>> =
        None;
    let mut rollback_name: Option<String> = None;
    let mut picked_up = false;
    let pickup = tokio::time::sleep(options.pickup_timeout);
    tokio::pin!(pickup);
    let give_up = tokio::time::sleep(options.timeout.unwrap_or_default());
    tokio::pin!(give_up);
    let mut warned = false;
    // The last watch error while the request itself has not been seen: a failing watch
    // (RBAC, network) must not be mistaken for an absent operator.
    let mut unseen_error: Option<String> = None;
    loop {
        tokio::select! {
            event = main.next() => match event {
                Some(Ok(Seen::Object(object))) => {
                    unseen_error = None;
                    let status = object.request_status();
                    print(progress.observe(label, status, options.started.elapsed()))?;
                    picked_up |= phase_of(object.as_ref()).is_some();
                    if rollback.is_none()
                        && let Some(reference) = status.and_then(|s| s.rollback_ref.as_ref())
                    {
                        rollback = Some(watch_named::<RollbackRequest>(session, namespace, &reference.name));
                        rollback_name = Some(reference.name.clone());
                    }
                    if phase_of(object.as_ref()).is_some_and(crate::api::Phase::is_terminal) {
                        // The rollback ended before its upgrade did: show its last lines too.
                        if let Some(rollback_name) = &rollback_name {
                            let api = Api::<RollbackRequest>::namespaced(session.client.clone(), namespace);
                            if let Ok(Some(last)) = api.get_opt(rollback_name).await {
                                let lines = progress.observe("rollback", last.status.as_ref(), options.started.elapsed());
                                print(lines)?;
                            }
                        }
                        return Ok(*object);
                    }
                }
                Some(Ok(Seen::Deleted)) => anyhow::bail!(
                    "{kind} {namespace}/{name} was deleted while it ran (its finalizer put Flux and the replicas back)"
                ),
                Some(Err(error)) => {
                    if !warned {
                        eprintln!("warning: watching {kind} {namespace}/{name}: {}; retrying", describe(&error));
                        warned = true;
                    }
                    if !picked_up {
                        unseen_error = Some(describe(&error));
                    }
                }
                None => anyhow::bail!("the watch on {kind} {namespace}/{name} ended unexpectedly"),
            },
            event = next_or_pending(&mut rollback) => match event {
                Some(Ok(Seen::Object(object))) => {
                    print(progress.observe("rollback", object.status.as_ref(), options.started.elapsed()))?;
                }
                Some(Ok(Seen::Deleted)) | None => rollback = None,
                Some(Err(error)) => {
                    if !warned {
                        eprintln!("warning: watching the rollback: {}; retrying", describe(&error));
                        warned = true;
                    }
                }
            },
            () = &mut pickup, if !picked_up => match unseen_error {
                Some(error) => anyhow::bail!(
                    "cannot follow {kind} {namespace}/{name}: watching it fails ({error}); it was created and runs in the operator; \
                     check that you may watch them (`kubectl auth can-i watch {} -n {namespace}`)",
                    K::plural(&())
                ),
                None => anyhow::bail!(
                "{kind} {namespace}/{name} has had no phase for {}s: the Fluxgate operator does not seem to be running. \
                 Check it (`kubectl get pods -A -l app.kubernetes.io/name=fluxgate` and its logs); \
                 the request stays and runs once the operator is up (delete it with `kubectl delete {} {name} -n {namespace}` otherwise)",
                options.pickup_timeout.as_secs(),
                kind.to_lowercase()
                ),
            },
            () = &mut give_up, if options.timeout.is_some() => anyhow::bail!(
                "stopped waiting after {}s; {kind} {namespace}/{name} keeps running (see `fluxgate history` or `kubectl get {} {name} -n {namespace}`)",
                options.timeout.unwrap_or_default().as_secs(),
                kind.to_lowercase()
            ),
        }
    }
}
