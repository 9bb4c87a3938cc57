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

/// A reconcile failure: logged, then retried after a short pause — or, for an object the
/// sim cannot make sense of, left alone until the object changes.
#[derive(Debug)]
pub struct SimError {
    pub error: anyhow::Error,
    /// The object itself is unusable (e.g. a pod template that is no pod spec): retrying
    /// cannot help, a change to it may.
    pub invalid: bool,
}

impl SimError {
    /// A failure caused by the object's content, not by the API.
    pub fn invalid(error: anyhow::Error) -> SimError {
        SimError {
            error,
            invalid: true,
        }
    }
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for SimError {}

impl From<anyhow::Error> for SimError {
    fn from(error: anyhow::Error) -> Self {
        SimError {
            error,
            invalid: false,
        }
    }
}

impl From<kube::Error> for SimError {
    fn from(e: kube::Error) -> Self {
        SimError::from(anyhow::Error::from(e))
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
            if err.invalid {
                tracing::warn!(sim = name, object = ?obj.meta().name, error = %err, "skipping an object the sim cannot use until it changes");
                return Action::await_change();
            }
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
