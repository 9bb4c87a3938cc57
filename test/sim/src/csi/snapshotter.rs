//! The driver's csi-snapshotter sidecar: for each VolumeSnapshotContent of the driver that
//! the snapshot-controller made from a volume, cut the snapshot (the driver keeps what the
//! volume holds then) and report it in the content's status — `snapshotHandle`,
//! `creationTime`, `readyToUse` once the ready delay has passed, `restoreSize` — or report
//! the driver's error in `status.error`; delete the snapshot when the snapshot-controller
//! deletes its content. The VolumeSnapshot side is the snapshot-controller's.
//!
//! Modelled on external-snapshotter v8.6.0 `pkg/sidecar-controller/snapshot_controller.go`
//! (`syncContent`, `createSnapshotWrapper`, `updateSnapshotContentStatus`,
//! `updateContentErrorStatusWithEvent`, `shouldDelete`, `deleteCSISnapshotOperation`,
//! `clearVolumeContentStatus`, `removeContentFinalizer`) and `isDriverMatch`. Pre-provisioned
//! contents (`source.snapshotHandle`) and group snapshots are not simulated; events are not
//! written.
//!
//! Declared failures ([`Failures::fail_snapshots`], or the VolumeSnapshot annotation
//! [`SNAPSHOT_ERROR_ANNOTATION`]) are the driver refusing `CreateSnapshot` with a final
//! error (gRPC `Internal`): the content's `status.error.message` reads
//! `Failed to create snapshot: failed to take snapshot of the volume <handle>: "rpc error:
//! code = Internal desc = <message>"`, which the snapshot-controller copies to the
//! VolumeSnapshot. The snapshot is cut once the failure is withdrawn.

use crate::conditions::now;
use crate::controller::{SimError, SimTask, run_controller};
use crate::csi::{CONTENT_ANNOTATION, next_token, stored_token};
use crate::faults::{Failures, SNAPSHOT_ERROR_ANNOTATION};
use crate::kinds::{
    annotation, dyn_api, has_finalizer, manager, remove_finalizer, to_value, volume_snapshot,
    volume_snapshot_class, volume_snapshot_content,
};
use crate::snapshots::{BEING_DELETED, CONTENT_FINALIZER};
use crate::volumes::storage_bytes;
use anyhow::Context;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DynamicObject, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// On a content while the sidecar is asking the driver to cut it: its deletion waits.
pub const BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
const MANAGER: &str = "csi-snapshotter";
/// How soon a driver error that no declaration explains is retried (the sidecar's
/// `--retry-interval-start`).
const RETRY: Duration = Duration::from_secs(1);

/// The running sidecar; stops when dropped.
#[derive(Debug)]
pub struct Snapshotter {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    failures: Failures,
    driver: String,
    ready_delay: Duration,
}

impl Snapshotter {
    /// Starts cutting snapshots of `driver`'s volumes; each becomes ready `ready_delay`
    /// after it was cut.
    pub fn start(
        client: Client,
        failures: Failures,
        driver: String,
        ready_delay: Duration,
    ) -> Snapshotter {
        let vsc = volume_snapshot_content();
        let vs = volume_snapshot();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &vsc),
            watcher::Config::default(),
            vsc.clone(),
        )
        // A failure declared on (or withdrawn from) a VolumeSnapshot reaches its content.
        .watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &vs),
            vs,
            watcher::Config::default(),
            move |snap: DynamicObject| {
                let name = snap.data["status"]["boundVolumeSnapshotContentName"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| snap.uid().map(|uid| format!("snapcontent-{uid}")))?;
                Some(ObjectRef::new_with(&name, vsc.clone()))
            },
        )
        .reconcile_all_on(failures.changes());
        let ctx = Arc::new(Ctx {
            client,
            failures,
            driver,
            ready_delay,
        });
        Snapshotter {
            _task: run_controller("csi-snapshotter", controller, sync_content, ctx),
        }
    }
}

fn contents(client: &Client) -> Api<DynamicObject> {
    Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_content())
}

/// `isDriverMatch`: a content with a source, of this driver, whose class (if it exists)
/// is this driver's.
async fn driver_match(ctx: &Ctx, c: &Value) -> Result<bool, SimError> {
    let source = &c["spec"]["source"];
    if source["volumeHandle"].is_null() && source["snapshotHandle"].is_null() {
        return Ok(false);
    }
    if c["spec"]["driver"] != ctx.driver.as_str() {
        return Ok(false);
    }
    if let Some(class) = c["spec"]["volumeSnapshotClassName"].as_str()
        && let Some(class) =
            Api::<DynamicObject>::all_with(ctx.client.clone(), &volume_snapshot_class())
                .get_opt(class)
                .await
                .with_context(|| format!("reading VolumeSnapshotClass {class}"))?
    {
        return Ok(class.data["driver"] == ctx.driver.as_str());
    }
    Ok(true)
}

/// `syncContent`.
async fn sync_content(content: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let c = to_value(&*content);
    if !driver_match(&ctx, &c).await? {
        return Ok(Action::await_change());
    }
    if content.metadata.deletion_timestamp.is_some() && should_delete(&content, &c) {
        delete_snapshot(&ctx, &content, &c).await?;
        return Ok(Action::await_change());
    }
    // A content being deleted while a cut is in flight finishes the cut first, which
    // clears `volumesnapshot-being-created` and so lets the deletion go on.
    if c["spec"]["source"]["snapshotHandle"].is_string() {
        tracing::debug!(content = %content.name_any(), "pre-provisioned snapshot contents are not simulated");
        return Ok(Action::await_change());
    }
    if c["status"]["readyToUse"] == json!(true) {
        set_being_created(&ctx.client, &content, false).await?;
        return Ok(Action::await_change());
    }
    // Not cut yet, failed, or cut and not ready: (again) CreateSnapshot, which the driver
    // answers idempotently by the content's name.
    create_snapshot(&ctx, &content).await
}

/// `shouldDelete`: the snapshot-controller asked (`volumesnapshot-being-deleted`) and no
/// cut is in flight.
fn should_delete(content: &DynamicObject, c: &Value) -> bool {
    if c["spec"]["source"]["snapshotHandle"].is_string()
        && c["spec"]["volumeSnapshotRef"]["uid"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        return true;
    }
    annotation(content, BEING_CREATED).is_none() && annotation(content, BEING_DELETED).is_some()
}

/// `DeleteSnapshot` (what the snapshot kept goes with it), the status cleared, then the
/// content's finalizer removed.
async fn delete_snapshot(ctx: &Ctx, content: &DynamicObject, c: &Value) -> Result<(), SimError> {
    let name = content.name_any();
    let api = contents(&ctx.client);
    let mut content = content.clone();
    if c["spec"]["deletionPolicy"] == "Delete"
        && c["status"]["snapshotHandle"].is_string()
        && c["status"]["volumeGroupSnapshotHandle"].is_null()
    {
        content = api
            .patch_status(
                &name,
                &manager(MANAGER),
                &Patch::Merge(json!({"status": {
                    "snapshotHandle": null, "readyToUse": null, "creationTime": null, "restoreSize": null,
                }})),
            )
            .await
            .with_context(|| format!("clearing the status of VolumeSnapshotContent {name}"))?;
    }
    if has_finalizer(&content, CONTENT_FINALIZER) {
        remove_finalizer(&api, &content, CONTENT_FINALIZER, MANAGER).await?;
    }
    Ok(())
}

async fn set_being_created(
    client: &Client,
    content: &DynamicObject,
    on: bool,
) -> Result<(), SimError> {
    if annotation(content, BEING_CREATED).is_some() == on {
        return Ok(());
    }
    let name = content.name_any();
    contents(client)
        .patch(
            &name,
            &manager(MANAGER),
            &Patch::Merge(json!({"metadata": {"annotations": {BEING_CREATED: if on { json!("yes") } else { Value::Null }}}})),
        )
        .await
        .with_context(|| format!("annotating VolumeSnapshotContent {name}"))?;
    Ok(())
}

/// A refusal of the driver's, as gRPC reports it.
struct DriverError {
    code: &'static str,
    message: String,
    /// A failure a test declared (it changes only with a watched object or the failures).
    declared: bool,
}

/// A snapshot as the driver cut it.
struct Cut {
    handle: String,
    created_ns: i64,
    size: Option<u64>,
    ready: bool,
}

/// `createSnapshotWrapper`: class, `volumesnapshot-being-created`, the driver's
/// `CreateSnapshot`, the status, then the annotation off again.
async fn create_snapshot(ctx: &Ctx, content: &DynamicObject) -> Result<Action, SimError> {
    let name = content.name_any();
    let c = to_value(content);
    let handle = c["spec"]["source"]["volumeHandle"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(class) = c["spec"]["volumeSnapshotClassName"].as_str() else {
        let message = format!(
            "Failed to create snapshot: failed to get input parameters to create snapshot for content {name}: \"failed to take snapshot {name} without a snapshot class\""
        );
        set_error(&ctx.client, content, &message).await?;
        return Ok(Action::requeue(RETRY));
    };
    if Api::<DynamicObject>::all_with(ctx.client.clone(), &volume_snapshot_class())
        .get_opt(class)
        .await
        .with_context(|| format!("reading VolumeSnapshotClass {class}"))?
        .is_none()
    {
        let message = format!(
            "Failed to create snapshot: failed to get input parameters to create snapshot for content {name}: \"volumesnapshotclass.snapshot.storage.k8s.io \\\"{class}\\\" not found\""
        );
        set_error(&ctx.client, content, &message).await?;
        return Ok(Action::requeue(RETRY));
    }
    set_being_created(&ctx.client, content, true).await?;
    let content = fresh(&ctx.client, &name).await?;
    match cut(ctx, &content).await? {
        Err(DriverError {
            code,
            message,
            declared,
        }) => {
            // A final error: nothing is in flight any more.
            set_being_created(&ctx.client, &content, false).await?;
            let message = format!(
                "Failed to create snapshot: failed to take snapshot of the volume {handle}: \"rpc error: code = {code} desc = {message}\""
            );
            let content = fresh(&ctx.client, &name).await?;
            set_error(&ctx.client, &content, &message).await?;
            // Anything but a declared failure is retried as the sidecar does.
            Ok(if declared {
                Action::await_change()
            } else {
                Action::requeue(RETRY)
            })
        }
        Ok(cut) => {
            let content = update_status(&ctx.client, &name, &cut).await?;
            set_being_created(&ctx.client, &content, false).await?;
            if cut.ready {
                return Ok(Action::await_change());
            }
            let age = Duration::from_nanos((now_ns() - cut.created_ns).max(0) as u64);
            Ok(Action::requeue(ctx.ready_delay.saturating_sub(age)))
        }
    }
}

async fn fresh(client: &Client, name: &str) -> Result<DynamicObject, SimError> {
    Ok(contents(client)
        .get(name)
        .await
        .with_context(|| format!("reading VolumeSnapshotContent {name}"))?)
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// The driver's `CreateSnapshot`, idempotent by content: keep (on the content) what the
/// source volume holds at the first cut, and report the snapshot.
async fn cut(ctx: &Ctx, content: &DynamicObject) -> Result<Result<Cut, DriverError>, SimError> {
    let c = to_value(content);
    let reference = &c["spec"]["volumeSnapshotRef"];
    let (vs_ns, vs_name) = (
        reference["namespace"].as_str().unwrap_or_default(),
        reference["name"].as_str().unwrap_or_default(),
    );
    let declared = match ctx.failures.snapshot_error(vs_name) {
        Some(m) => Some(m),
        None => dyn_api(&ctx.client, &volume_snapshot(), vs_ns)
            .get_opt(vs_name)
            .await
            .with_context(|| format!("reading VolumeSnapshot {vs_ns}/{vs_name}"))?
            .and_then(|s| annotation(&s, SNAPSHOT_ERROR_ANNOTATION).map(str::to_owned)),
    };
    if let Some(message) = declared {
        return Ok(Err(DriverError {
            code: "Internal",
            message,
            declared: true,
        }));
    }
    let handle = c["spec"]["source"]["volumeHandle"]
        .as_str()
        .unwrap_or_default();
    let volumes = Api::<PersistentVolume>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .context("listing PersistentVolumes")?;
    let Some(volume) = volumes.items.into_iter().find(|pv| {
        pv.spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .is_some_and(|csi| csi.driver == ctx.driver && csi.volume_handle == handle)
    }) else {
        return Ok(Err(DriverError {
            code: "NotFound",
            message: format!("source volume {handle} not found"),
            declared: false,
        }));
    };
    let name = content.name_any();
    if stored_token(content).is_none() {
        let token = stored_token(&volume).unwrap_or_else(|| next_token("new"));
        contents(&ctx.client)
            .patch(
                &name,
                &manager(MANAGER),
                &Patch::Merge(json!({"metadata": {"annotations": {CONTENT_ANNOTATION: token}}})),
            )
            .await
            .with_context(|| format!("keeping the snapshot of VolumeSnapshotContent {name}"))?;
    }
    let created_ns = c["status"]["creationTime"].as_i64().unwrap_or_else(now_ns);
    let age = Duration::from_nanos((now_ns() - created_ns).max(0) as u64);
    Ok(Ok(Cut {
        handle: format!("snap-{}", content.uid().unwrap_or_default()),
        created_ns,
        size: storage_bytes(volume.spec.as_ref().and_then(|s| s.capacity.as_ref())),
        ready: age >= ctx.ready_delay,
    }))
}

/// `updateSnapshotContentStatus`: fields the content lacks are filled in, `readyToUse`
/// follows the driver and clears an error once ready.
async fn update_status(client: &Client, name: &str, cut: &Cut) -> Result<DynamicObject, SimError> {
    let content = fresh(client, name).await?;
    let old = to_value(&content)["status"].clone();
    let mut status = if old.is_object() {
        old.clone()
    } else {
        json!({})
    };
    if status["snapshotHandle"].is_null() {
        status["snapshotHandle"] = json!(cut.handle);
    }
    if status["readyToUse"] != json!(cut.ready) {
        status["readyToUse"] = json!(cut.ready);
        if cut.ready && !status["error"].is_null() {
            status["error"] = Value::Null;
        }
    }
    if status["creationTime"].is_null() {
        status["creationTime"] = json!(cut.created_ns);
    }
    if let Some(size) = cut.size.filter(|s| *s > 0)
        && status["restoreSize"].is_null()
    {
        status["restoreSize"] = json!(size);
    }
    if status == old {
        return Ok(content);
    }
    Ok(contents(client)
        .patch_status(
            name,
            &manager(MANAGER),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .with_context(|| format!("writing the status of VolumeSnapshotContent {name}"))?)
}

/// `updateContentErrorStatusWithEvent`: the error, and `readyToUse: false`.
async fn set_error(
    client: &Client,
    content: &DynamicObject,
    message: &str,
) -> Result<(), SimError> {
    if content.data["status"]["error"]["message"] == message {
        return Ok(());
    }
    let name = content.name_any();
    contents(client)
        .patch_status(
            &name,
            &manager(MANAGER),
            &Patch::Merge(json!({"status": {"readyToUse": false, "error": {"time": now(), "message": message}}})),
        )
        .await
        .with_context(|| format!("writing the error of VolumeSnapshotContent {name}"))?;
    Ok(())
}
