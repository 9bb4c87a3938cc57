//! Does what happens to a running world in a story, by name: a person deleting a request or
//! an app, changing the app's update policy, Renovate writing its report, the operator
//! restarted to read Renovate's output.

use crate::api;
use crate::then;
use fluxgate::api::{ManagedApp, UpdatePolicy, UpgradeRequest};
use fluxgate::controller::renovate_input::RenovateSettings;
use fluxgate::demo::world::{DemoWorld, wait_until};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The namespace and name of the ConfigMap the stories' Renovate writes its report to.
pub const RENOVATE_CONFIGMAP: (&str, &str) = ("apps", "renovate-output");

/// How long a deleted request may take to go: its finalizer puts Flux and the replicas
/// back first.
const DELETION: Duration = Duration::from_secs(30);

/// A person deletes UpgradeRequest `name`; returns once it is gone (its finalizer done).
pub async fn upgrade_deleted(story: &DemoWorld, name: &str) {
    api::<UpgradeRequest>(story)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting UpgradeRequest {name}: {e}"));
    wait_until(
        &format!("UpgradeRequest {name} to go"),
        DELETION,
        async || {
            then::upgrade_request(story, name)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// A person deletes ManagedApp `name` (without waiting for it to go).
pub async fn app_deleted(story: &DemoWorld, name: &str) {
    api::<ManagedApp>(story)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting ManagedApp {name}: {e}"));
}

/// A person sets ManagedApp `db`'s update policy.
pub async fn update_policy_set(story: &DemoWorld, policy: &UpdatePolicy) {
    api::<ManagedApp>(story)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updatePolicy": policy}})),
        )
        .await
        .unwrap_or_else(|e| panic!("setting the update policy of db: {e}"));
}

/// Renovate writes `report` to [`RENOVATE_CONFIGMAP`] (creating it the first time, as
/// Renovate's post-upgrade step does, and replacing its data after).
pub async fn renovate_writes(story: &DemoWorld, report: &str) {
    let (namespace, name) = RENOVATE_CONFIGMAP;
    let configmaps = kube::Api::<ConfigMap>::namespaced(story.client.clone(), namespace);
    let data = BTreeMap::from([("report.json".to_owned(), report.to_owned())]);
    let exists = configmaps
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading ConfigMap {namespace}/{name}: {e}"))
        .is_some();
    let written = if exists {
        configmaps
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": data})),
            )
            .await
    } else {
        let configmap = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        configmaps.create(&PostParams::default(), &configmap).await
    };
    written.unwrap_or_else(|e| panic!("writing ConfigMap {namespace}/{name}: {e}"));
}

/// Restarts the operator reading Renovate's output as `renovate` says, as a pod started
/// with those flags would.
pub async fn operator_reads_renovate(story: &mut DemoWorld, renovate: RenovateSettings) {
    story.kill_operator().await;
    story.settings.renovate = renovate;
    story
        .start_operator()
        .unwrap_or_else(|e| panic!("restarting the operator: {e:#}"));
}

/// The settings that make the operator read [`RENOVATE_CONFIGMAP`].
pub fn renovate_configmap() -> RenovateSettings {
    let (namespace, name) = RENOVATE_CONFIGMAP;
    RenovateSettings {
        configmap: Some((namespace.into(), name.into())),
        file: None,
    }
}
