//! Helpers the real-stack tests of every crate share: a namespace per test, polling with a
//! deadline, and objects driven as JSON (create, merge-patch, read, ask Flux to reconcile).
//! They panic with the object and the error, as test helpers do.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Creates the namespace `name` (each test uses one of its own) and returns its name.
pub async fn namespace(client: &Client, name: &str) -> String {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name.to_string()
}

/// Polls `probe` every 100 ms until it returns `Ok`, panicking with `what` and the last
/// observation after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!(
                    "timed out after {} s waiting for {what}; last seen: {last}",
                    timeout.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates the object `value` describes.
pub async fn create(api: &Api<DynamicObject>, value: Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(value).expect("a valid object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
}

/// Merge-patches object `name` with `patch`.
pub async fn merge(api: &Api<DynamicObject>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patching {name} with {patch}: {e}"));
}

/// Object `name` as JSON.
pub async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {name}: {e}"));
    serde_json::to_value(obj).expect("an object as JSON")
}

/// Asks for a reconcile now, as `flux reconcile` does; returns the request's token.
pub async fn request_reconcile(api: &Api<DynamicObject>, name: &str) -> String {
    let at = jiff::Timestamp::now().to_string();
    merge(
        api,
        name,
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}}),
    )
    .await;
    at
}
