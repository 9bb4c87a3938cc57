//! Reads what a story checks, by name: its requests, the app's workloads, volumes and
//! snapshots, Flux's objects and the Events, as they are in the cluster now (namespace
//! `apps` unless a Flux object's namespace is given).
//!
//! A read that fails (other than "not found") panics naming what was read: the story's own
//! client is never faulted, so such a failure is a broken world, not a state to wait out.

use crate::{StoryKind, api};
use fluxgate::api::conditions::{READY, find_condition};
use fluxgate::api::{FluxObjectKind, ManagedAppStatus, Phase, RollbackRequest, UpgradeRequest};
use fluxgate::cluster::flux::ops::{get, is_suspended};
use fluxgate::cluster::snapshots::VolumeSnapshot;
use fluxgate::demo::world::{DemoWorld, wait_until};
use fluxgate::renovate::policy::AUTOMATIC_LABEL;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use std::collections::BTreeSet;
use std::time::Duration;

pub(crate) async fn get_opt<K>(story: &DemoWorld, name: &str) -> Option<K>
where
    K: StoryKind,
{
    api::<K>(story)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading {} apps/{name}: {e}", K::kind(&())))
}

async fn must_get<K>(story: &DemoWorld, name: &str) -> K
where
    K: StoryKind,
{
    get_opt(story, name)
        .await
        .unwrap_or_else(|| panic!("{} apps/{name} does not exist", K::kind(&())))
}

async fn list<K>(story: &DemoWorld, params: &ListParams) -> Vec<K>
where
    K: StoryKind,
{
    api::<K>(story)
        .list(params)
        .await
        .unwrap_or_else(|e| panic!("listing {} in apps: {e}", K::kind(&())))
        .items
}

/// UpgradeRequest `name`, or None once it is gone.
pub async fn upgrade_request(story: &DemoWorld, name: &str) -> Option<UpgradeRequest> {
    get_opt(story, name).await
}

/// The phase UpgradeRequest `name` is in; None before its first status or once it is gone.
pub async fn phase_of(story: &DemoWorld, name: &str) -> Option<Phase> {
    upgrade_request(story, name).await?.status?.phase
}

/// RollbackRequest `name`, or None while it does not exist.
pub async fn rollback_request(story: &DemoWorld, name: &str) -> Option<RollbackRequest> {
    get_opt(story, name).await
}

/// Every RollbackRequest.
pub async fn rollback_requests(story: &DemoWorld) -> Vec<RollbackRequest> {
    list(story, &ListParams::default()).await
}

/// The UpgradeRequests Fluxgate created on its own (labelled automatic).
pub async fn automatic_upgrades(story: &DemoWorld) -> Vec<UpgradeRequest> {
    list(story, &ListParams::default().labels(AUTOMATIC_LABEL)).await
}

/// Every VolumeSnapshot.
pub async fn snapshots(story: &DemoWorld) -> Vec<VolumeSnapshot> {
    list(story, &ListParams::default()).await
}

/// The names of every VolumeSnapshot.
pub async fn snapshot_names(story: &DemoWorld) -> BTreeSet<String> {
    snapshots(story)
        .await
        .iter()
        .map(|s| s.name_any())
        .collect()
}

/// VolumeSnapshot `name`; panics when it does not exist.
pub async fn snapshot(story: &DemoWorld, name: &str) -> VolumeSnapshot {
    must_get(story, name).await
}

/// PersistentVolumeClaim `name`; panics when it does not exist.
pub async fn claim(story: &DemoWorld, name: &str) -> PersistentVolumeClaim {
    must_get(story, name).await
}

/// StatefulSet `name`; panics when it does not exist.
pub async fn statefulset(story: &DemoWorld, name: &str) -> StatefulSet {
    must_get(story, name).await
}

/// The image of the first container StatefulSet `name`'s pods run.
pub async fn running_image(story: &DemoWorld, name: &str) -> Option<String> {
    let sts = statefulset(story, name).await;
    sts.spec.template.spec?.containers.first()?.image.clone()
}

/// Deployment `name`; panics when it does not exist.
pub async fn deployment(story: &DemoWorld, name: &str) -> Deployment {
    must_get(story, name).await
}

/// The pods matching label selector `labels` (`""` for every pod).
pub async fn pods(story: &DemoWorld, labels: &str) -> Vec<Pod> {
    list(story, &ListParams::default().labels(labels)).await
}

/// The Events with reason `reason`.
pub async fn events(story: &DemoWorld, reason: &str) -> Vec<Event> {
    let events: Vec<Event> = list(story, &ListParams::default()).await;
    events
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Flux object `kind` `namespace/name` as it is now; panics when it does not exist.
pub async fn flux_object(
    story: &DemoWorld,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> DynamicObject {
    get(&story.cluster(), kind, namespace, name)
        .await
        .unwrap_or_else(|e| panic!("reading {kind:?} {namespace}/{name}: {e}"))
        .unwrap_or_else(|| panic!("{kind:?} {namespace}/{name} does not exist"))
}

/// Whether Flux object `kind` `namespace/name` is reconciled (not suspended).
pub async fn resumed(story: &DemoWorld, kind: FluxObjectKind, namespace: &str, name: &str) -> bool {
    !is_suspended(&flux_object(story, kind, namespace, name).await)
}

/// The revision of the artifact Flux source `kind` `namespace/name` serves, once it serves
/// one.
pub async fn served_revision(
    story: &DemoWorld,
    kind: FluxObjectKind,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let source = flux_object(story, kind, namespace, name).await;
    source.data["status"]["artifact"]["revision"]
        .as_str()
        .map(str::to_owned)
}

/// ManagedApp `db`'s status once its controller has looked at it (it has a `Ready`
/// condition, whatever it says); panics after 20 s.
/// The status of ManagedApp `app` once it records `version` for `field` in
/// `currentVersions`: the ManagedApp controller reads it from Git when a request's end
/// wakes it, a moment after the request's own last status write.
pub async fn app_records(
    story: &DemoWorld,
    app: &str,
    field: &str,
    version: &str,
) -> ManagedAppStatus {
    wait_until(
        &format!("ManagedApp {app} to record {field} {version} in currentVersions"),
        Duration::from_secs(20),
        async || {
            let status = story.app_named(app).await.ok()?.status?;
            (status.current_versions.get(field).map(String::as_str) == Some(version))
                .then_some(status)
        },
    )
    .await
    .unwrap()
}

pub async fn settled_app_status(story: &DemoWorld) -> ManagedAppStatus {
    wait_until(
        "the ManagedApp's status",
        Duration::from_secs(20),
        async || {
            let status = story.app().await.ok()?.status?;
            find_condition(&status.conditions, READY)
                .is_some()
                .then_some(status)
        },
    )
    .await
    .unwrap()
}

/// Fluxgate's writes (create, update, patch, delete) to objects of `resources` (plurals such
/// as `helmreleases`) so far, one line each (`patch helmreleases apps/db → 200`): from
/// kubesim's request log, or on the real stack from the API server's audit log.
pub async fn operator_writes(story: &DemoWorld, resources: &[&str]) -> Vec<String> {
    let Some(audit_log) = story.audit_log() else {
        return story
            .kubesim()
            .requests(&crate::checks::operator_writes())
            .into_iter()
            .filter(|r| resources.contains(&r.resource.as_str()))
            .map(|r| crate::checks::describe(&r))
            .collect();
    };
    let log = realstack::audit::AuditLog::open(audit_log);
    log.sync(&story.client)
        .await
        .unwrap_or_else(|e| panic!("reading the audit log: {e:#}"));
    let writes = ["create", "update", "patch", "delete", "deletecollection"];
    log.all()
        .unwrap_or_else(|e| panic!("reading the audit log: {e:#}"))
        .requests()
        .iter()
        .filter(|e| e.user_agent == fluxgate::cluster::connect::USER_AGENT)
        .filter(|e| writes.contains(&e.verb.as_str()))
        .filter_map(|e| {
            let o = e.object.as_ref()?;
            resources.contains(&o.resource.as_str()).then(|| {
                // As kubesim's lines read (crate::checks::describe).
                let mut target = [o.namespace.as_deref(), o.name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("/");
                if let Some(sub) = &o.subresource {
                    target = format!("{target}/{sub}");
                }
                let code = e.code.map_or("?".to_owned(), |c| c.to_string());
                format!("{} {} {target} → {code}", e.verb, o.resource)
            })
        })
        .collect()
}

/// How long each phase of a request took (`Admit 0.0s, Suspend 0.1s, …`, from the phase
/// records' second-precision times), printed by stories to compare the stacks.
pub fn phase_times(status: &fluxgate::api::RequestStatus) -> String {
    status
        .phases
        .iter()
        .map(|p| {
            let took = p
                .completed_at
                .as_ref()
                .map(|end| (end.0.as_second() - p.started_at.0.as_second()).to_string())
                .unwrap_or_else(|| "…".into());
            format!("{:?} {took}s", p.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the Preflight phase of dry run `name` told, once it succeeded (panics otherwise).
pub async fn preflight_message(story: &DemoWorld, name: &str) -> String {
    let done: UpgradeRequest = story
        .finished(name, std::time::Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("dry run {name} did not finish: {e:#}"));
    let status = done.status.unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    status
        .phases
        .iter()
        .find(|p| p.name == Phase::Preflight)
        .and_then(|p| p.message.clone())
        .unwrap_or_default()
}
