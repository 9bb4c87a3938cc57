//! Running a sim: a kube `Controller` loop as a task that stops when its handle is
//! dropped, with reconcile errors logged and retried, never ending the loop.

use futures::StreamExt;
use kube::Resource;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

/// A background task that is aborted when this handle is dropped.
#[derive(Debug)]
pub struct SimTask(tokio::task::JoinHandle<()>);

impl SimTask {
    /// Runs `fut` on the current runtime until it ends or the handle is dropped.
    pub fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> SimTask {
        SimTask(tokio::spawn(fut))
    }

    /// Stops the task now (same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for SimTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A reconcile failure: logged, then the object is retried after a short pause.
#[derive(Debug)]
pub struct SimError(pub anyhow::Error);

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for SimError {}

impl From<anyhow::Error> for SimError {
    fn from(e: anyhow::Error) -> Self {
        SimError(e)
    }
}

impl From<kube::Error> for SimError {
    fn from(e: kube::Error) -> Self {
        SimError(e.into())
    }
}

/// How soon a failed reconcile is retried: short, because the world is local and tests wait.
const RETRY: Duration = Duration::from_millis(200);

/// Runs `controller` with `reconcile` until the returned task is dropped. Errors are
/// logged with the sim's name and retried; they never stop the loop.
pub fn run_controller<K, Ctx, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: F,
    ctx: Arc<Ctx>,
) -> SimTask
where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Clone + Eq + Hash + Unpin + Send + Sync,
    Ctx: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, SimError>> + Send + 'static,
{
    let stream = controller.run(
        reconcile,
        move |obj: Arc<K>, err: &SimError, _| {
            tracing::warn!(sim = name, object = ?obj.meta().name, error = %err, "reconcile failed");
            Action::requeue(RETRY)
        },
        ctx,
    );
    SimTask::spawn(async move {
        stream
            .for_each(|res| async move {
                if let Err(e) = res {
                    // Watch errors (e.g. a CRD not yet installed) are retried by the watcher.
                    tracing::debug!(sim = name, error = %e, "controller event error");
                }
            })
            .await;
    })
}
