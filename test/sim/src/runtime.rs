//! Plumbing every sim shares: tasks that stop on drop, controller loops, Flux-style
//! conditions, timestamps, durations and dynamic API handles.

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
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

/// Now, as RFC 3339 with second precision (what Kubernetes writes).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Parses a Go-style duration as Flux writes them (`1m`, `30s`, `1h30m`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * scale);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A status condition as Flux and Kubernetes write them.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    let mut c = json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now(),
    });
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

/// Sets `new` in `conditions` (by type), keeping the old `lastTransitionTime` when the
/// status did not change, as apimachinery's `SetStatusCondition` does.
pub fn set_condition(conditions: &mut Vec<Value>, mut new: Value) {
    match conditions.iter_mut().find(|c| c["type"] == new["type"]) {
        Some(old) => {
            if old["status"] == new["status"] {
                new["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Removes the condition of `type_`.
pub fn remove_condition(conditions: &mut Vec<Value>, type_: &str) {
    conditions.retain(|c| c["type"] != type_);
}

/// The conditions array of an object's status (empty when absent).
pub fn conditions_of(obj: &Value) -> Vec<Value> {
    obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// An API resource by group, version, kind and plural.
pub fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version,
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Flux's GitRepository v1.
pub fn git_repository() -> ApiResource {
    api_resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
    )
}

/// Flux's OCIRepository v1.
pub fn oci_repository() -> ApiResource {
    api_resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "OCIRepository",
        "ocirepositories",
    )
}

/// Flux's Kustomization v1.
pub fn kustomization() -> ApiResource {
    api_resource(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    )
}

/// Flux's HelmRelease v2.
pub fn helm_release() -> ApiResource {
    api_resource(
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    )
}

/// CSI VolumeSnapshot v1.
pub fn volume_snapshot() -> ApiResource {
    api_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

/// CSI VolumeSnapshotContent v1 (cluster-scoped).
pub fn volume_snapshot_content() -> ApiResource {
    api_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}

/// CSI VolumeSnapshotClass v1 (cluster-scoped).
pub fn volume_snapshot_class() -> ApiResource {
    api_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    )
}

/// An `Api` for a namespaced dynamic kind in `namespace`.
pub fn dyn_api(client: &Client, ar: &ApiResource, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, ar)
}

/// Merge-patches an object's status subresource.
pub async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
    manager: &str,
) -> Result<(), SimError> {
    api.patch_status(
        name,
        &self::manager(manager),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| anyhow::anyhow!("status patch of {name}: {e}"))?;
    Ok(())
}

/// Patch parameters naming the field manager (as each real controller identifies itself).
pub fn manager(name: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(name.to_owned()),
        ..PatchParams::default()
    }
}

/// An object as plain JSON (sims read arbitrary fields by path).
pub fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// The `reconcile.fluxcd.io/requestedAt` annotation, Flux's "reconcile now" request.
pub fn requested_at(obj: &Value) -> Option<String> {
    obj["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        .as_str()
        .map(str::to_owned)
}

/// Whether `spec.suspend` is true.
pub fn suspended(obj: &Value) -> bool {
    obj["spec"]["suspend"].as_bool().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_flux_writes_them() {
        assert_eq!(parse_go_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("10x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let mut cs = vec![json!({"type": "Ready", "status": "True", "lastTransitionTime": "old"})];
        set_condition(&mut cs, condition("Ready", "True", "R", "m", Some(2)));
        assert_eq!(cs[0]["lastTransitionTime"], "old");
        set_condition(&mut cs, condition("Ready", "False", "R", "m", Some(2)));
        assert_ne!(cs[0]["lastTransitionTime"], "old");
    }
}
