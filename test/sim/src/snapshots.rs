//! external-snapshotter's snapshot-controller, for dynamically provisioned snapshots: a
//! VolumeSnapshot of a bound claim gets its class (the driver's default one unless named),
//! its finalizers and a VolumeSnapshotContent for the CSI driver's sidecar to cut; its
//! status follows the content's (`boundVolumeSnapshotContentName`, `creationTime`,
//! `readyToUse`, `restoreSize`, `error`). While a snapshot is being cut its claim carries
//! `snapshot.storage.kubernetes.io/pvc-as-source-protection`. A deleted snapshot waits for
//! claims still being restored from it, then asks the sidecar to delete its content
//! (policy `Delete`) and goes once the content has gone.
//!
//! Modelled on external-snapshotter v8.6.0 `pkg/common-controller` (`syncSnapshotByKey`,
//! `checkAndUpdateSnapshotClass`, `SetDefaultSnapshotClass`, `syncSnapshot`,
//! `syncUnreadySnapshot`, `createSnapshotContent`, `updateSnapshotStatus`,
//! `processSnapshotWithDeletionTimestamp`, `ensurePVCFinalizer`,
//! `checkandRemovePVCFinalizer`, `syncContent`). Pre-provisioned snapshots
//! (`spec.source.volumeSnapshotContentName`) and group snapshots are not simulated; events
//! are not written. Cutting is the sidecar's ([`crate::csi::snapshotter`]).

use crate::conditions::now;
use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::{
    add_finalizer, annotation, dyn_api, has_finalizer, is_conflict, is_not_found, manager,
    remove_finalizer, set_finalizers, to_value, volume_snapshot, volume_snapshot_class,
    volume_snapshot_content,
};
use crate::quantity::bytes_quantity;
use crate::volumes::{claim_phase, snapshot_source};
use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// On a VolumeSnapshot bound to a content it would delete.
pub const BOUND_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// On a VolumeSnapshot, so that it waits for the claims being restored from it.
pub const SOURCE_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
/// On a VolumeSnapshotContent bound to a snapshot; the sidecar removes it once it deleted
/// the snapshot.
pub const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// On a claim while a snapshot of it is being cut (not ready yet).
pub const PVC_FINALIZER: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";
/// On a content whose snapshot is being deleted: the sidecar may delete it.
pub const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
/// On a VolumeSnapshotClass: the default class of its driver.
pub const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
const MANAGER: &str = "snapshot-controller";
/// How soon a failure no watched object will announce is retried (the controller's
/// `--retry-interval-start`).
const RETRY: Duration = Duration::from_secs(1);

/// The running snapshot-controller; stops when dropped.
#[derive(Debug)]
pub struct SnapshotController {
    _snapshots: SimTask,
    _contents: SimTask,
}

struct Ctx {
    client: Client,
    /// Every VolumeSnapshot, as the controller's lister sees them.
    snapshots: Store<DynamicObject>,
}

impl SnapshotController {
    /// Starts handling VolumeSnapshots and their contents in all namespaces.
    pub fn start(client: Client) -> SnapshotController {
        let vs = volume_snapshot();
        let vsc = volume_snapshot_content();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &vs),
            watcher::Config::default(),
            vs.clone(),
        );
        let (store, snapshots) = (controller.store(), controller.store());
        let to_snapshot = vs.clone();
        let controller = controller
            // The sidecar reporting on a content.
            .watches_with(
                Api::<DynamicObject>::all_with(client.clone(), &vsc),
                vsc.clone(),
                watcher::Config::default(),
                move |content: DynamicObject| {
                    let r = &content.data["spec"]["volumeSnapshotRef"];
                    Some(
                        ObjectRef::new_with(r["name"].as_str()?, to_snapshot.clone())
                            .within(r["namespace"].as_str()?),
                    )
                },
            )
            // A claim bound (a snapshot of it can be cut) or done restoring (a snapshot it
            // was restored from can go).
            .watches(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                watcher::Config::default(),
                move |pvc: PersistentVolumeClaim| {
                    let (ns, name) = (pvc.namespace(), pvc.name_any());
                    let restored_from = snapshot_source(&pvc);
                    store
                        .state()
                        .into_iter()
                        .filter(|s| {
                            let key = (s.namespace().unwrap_or_default(), s.name_any());
                            restored_from.as_ref() == Some(&key)
                                || (s.namespace() == ns
                                    && s.data["spec"]["source"]["persistentVolumeClaimName"]
                                        == name.as_str())
                        })
                        .map(|s| ObjectRef::from_obj_with(&*s, vs.clone()))
                        .collect::<Vec<_>>()
                },
            );
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            snapshots,
        });
        let contents = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &vsc),
            watcher::Config::default(),
            vsc.clone(),
        )
        .watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot()),
            volume_snapshot(),
            watcher::Config::default(),
            move |snap: DynamicObject| {
                let name = snap.data["status"]["boundVolumeSnapshotContentName"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| snap.uid().map(|uid| content_name_for(&uid)))?;
                Some(ObjectRef::new_with(&name, vsc.clone()))
            },
        );
        SnapshotController {
            _snapshots: run_controller(
                "snapshot-controller",
                controller,
                sync_snapshot,
                ctx.clone(),
            ),
            _contents: run_controller(
                "snapshot-controller (contents)",
                contents,
                sync_content,
                ctx,
            ),
        }
    }
}

/// The content the controller makes for a dynamically provisioned snapshot.
pub fn content_name_for(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}

fn contents(client: &Client) -> Api<DynamicObject> {
    Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_content())
}

fn key(snap: &DynamicObject) -> String {
    format!(
        "{}/{}",
        snap.namespace().unwrap_or_default(),
        snap.name_any()
    )
}

fn is_ready(s: &Value) -> bool {
    s["status"]["readyToUse"] == json!(true)
}

/// `syncSnapshotByKey`: the class first, then `syncSnapshot`.
async fn sync_snapshot(snap: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let s = to_value(&*snap);
    if snap.metadata.deletion_timestamp.is_none()
        && let Some(action) = check_class(&ctx, &snap, &s).await?
    {
        return Ok(action);
    }
    check_and_remove_pvc_finalizer(&ctx, &snap, false).await?;
    if snap.metadata.deletion_timestamp.is_some() {
        return delete_snapshot(&ctx, &snap).await;
    }
    let source = &s["spec"]["source"];
    if source["persistentVolumeClaimName"].is_string()
        == source["volumeSnapshotContentName"].is_string()
    {
        let message = "Exactly one of PersistentVolumeClaimName and VolumeSnapshotContentName should be specified";
        set_error(&ctx.client, &snap, message, true).await?;
        return Ok(Action::await_change());
    }
    if source["volumeSnapshotContentName"].is_string() {
        let message =
            "pre-provisioned snapshots (spec.source.volumeSnapshotContentName) are not simulated";
        set_error(&ctx.client, &snap, message, true).await?;
        return Ok(Action::await_change());
    }
    let content = match dynamic_content(&ctx.client, &snap, &s).await? {
        Ok(content) => content,
        Err(message) => {
            set_error(&ctx.client, &snap, &message, true).await?;
            return Ok(Action::await_change());
        }
    };
    // checkandAddSnapshotFinalizers
    let add_source = !has_finalizer(&*snap, SOURCE_FINALIZER);
    let add_bound = content
        .as_ref()
        .is_some_and(|c| c.data["spec"]["deletionPolicy"] == "Delete")
        && !has_finalizer(&*snap, BOUND_FINALIZER)
        && s["status"]["boundVolumeSnapshotContentName"].is_string();
    if add_source || add_bound {
        let mut all = snap.finalizers().to_vec();
        if add_source {
            all.push(SOURCE_FINALIZER.to_owned());
        }
        if add_bound {
            all.push(BOUND_FINALIZER.to_owned());
        }
        set_finalizers(
            &dyn_api(
                &ctx.client,
                &volume_snapshot(),
                &snap.namespace().unwrap_or_default(),
            ),
            &*snap,
            all,
            MANAGER,
        )
        .await?;
        return Ok(Action::await_change());
    }
    let bound = s["status"]["boundVolumeSnapshotContentName"].as_str();
    if is_ready(&s)
        && let Some(bound) = bound
    {
        // syncReadySnapshot: the content must still be there and bound to this snapshot.
        let content = contents(&ctx.client)
            .get_opt(bound)
            .await
            .with_context(|| format!("reading VolumeSnapshotContent {bound}"))?;
        match content {
            None => set_error(&ctx.client, &snap, "VolumeSnapshotContent is missing", true).await?,
            Some(c) if !refers_to(&c, &snap) => {
                let message = "VolumeSnapshotContent is not bound to the VolumeSnapshot correctly";
                set_error(&ctx.client, &snap, message, true).await?
            }
            Some(_) => {}
        }
        return Ok(Action::await_change());
    }
    // syncUnreadySnapshot
    let content = match content {
        Some(content) => content,
        None => match create_content(&ctx.client, &snap, &s).await? {
            Ok(content) => content,
            Err(e) => {
                let message = format!("Failed to create snapshot content with error {e}");
                set_error(&ctx.client, &snap, &message, true).await?;
                return Ok(Action::requeue(RETRY));
            }
        },
    };
    update_status(&ctx.client, &snap, &content).await?;
    Ok(Action::await_change())
}

/// `checkAndUpdateSnapshotClass`: a named class must exist; an unnamed one becomes the
/// default class of the claim's volume's driver. `Some` ends this sync.
async fn check_class(
    ctx: &Ctx,
    snap: &DynamicObject,
    s: &Value,
) -> Result<Option<Action>, SimError> {
    let classes = Api::<DynamicObject>::all_with(ctx.client.clone(), &volume_snapshot_class());
    if let Some(name) = s["spec"]["volumeSnapshotClassName"].as_str() {
        if classes
            .get_opt(name)
            .await
            .with_context(|| format!("reading VolumeSnapshotClass {name}"))?
            .is_none()
        {
            let message = format!(
                "Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{name}\" not found"
            );
            set_error(&ctx.client, snap, &message, false).await?;
            return Ok(Some(Action::requeue(RETRY)));
        }
        return Ok(None);
    }
    if s["spec"]["source"]["volumeSnapshotContentName"].is_string() {
        return Ok(None);
    }
    let driver = match volume_of(&ctx.client, snap, s).await? {
        Ok(pv) => match pv.spec.as_ref().and_then(|p| p.csi.as_ref()) {
            Some(csi) => Ok(csi.driver.clone()),
            None => Err(format!(
                "snapshotting non-CSI volumes is not supported, snapshot:{}",
                key(snap)
            )),
        },
        Err(e) => Err(e),
    };
    let chosen = match driver {
        Err(e) => Err(e),
        Ok(driver) => {
            let all = classes
                .list(&ListParams::default())
                .await
                .context("listing VolumeSnapshotClasses")?;
            let defaults: Vec<String> = all
                .items
                .iter()
                .filter(|c| {
                    annotation(*c, DEFAULT_CLASS) == Some("true")
                        && c.data["driver"] == driver.as_str()
                })
                .map(|c| c.name_any())
                .collect();
            match defaults.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err("cannot find default snapshot class".to_owned()),
                many => Err(format!(
                    "{} default snapshot classes were found",
                    many.len()
                )),
            }
        }
    };
    match chosen {
        Err(e) => {
            let message = format!("Failed to set default snapshot class with error {e}");
            set_error(&ctx.client, snap, &message, false).await?;
            // The claim being bound (watched) or a class made (not watched) fixes this.
            Ok(Some(Action::requeue(RETRY)))
        }
        Ok(class) => {
            dyn_api(
                &ctx.client,
                &volume_snapshot(),
                &snap.namespace().unwrap_or_default(),
            )
            .patch(
                &snap.name_any(),
                &manager(MANAGER),
                &Patch::Merge(json!({"spec": {"volumeSnapshotClassName": class}})),
            )
            .await
            .with_context(|| format!("setting the class of VolumeSnapshot {}", key(snap)))?;
            Ok(Some(Action::await_change()))
        }
    }
}

/// `getVolumeFromVolumeSnapshot`: the bound volume of the snapshot's claim, or the
/// controller's message for why there is none.
async fn volume_of(
    client: &Client,
    snap: &DynamicObject,
    s: &Value,
) -> Result<Result<PersistentVolume, String>, SimError> {
    let ns = snap.namespace().unwrap_or_default();
    let Some(claim) = s["spec"]["source"]["persistentVolumeClaimName"].as_str() else {
        return Ok(Err("the snapshot source PVC name is not specified".into()));
    };
    let Some(pvc) = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .get_opt(claim)
        .await
        .with_context(|| format!("reading PVC {ns}/{claim}"))?
    else {
        return Ok(Err(format!(
            "failed to retrieve PVC {claim} from the lister: \"persistentvolumeclaim \\\"{claim}\\\" not found\""
        )));
    };
    if claim_phase(&pvc) != "Bound" {
        return Ok(Err(format!(
            "the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot"
        )));
    }
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    let Some(pv) = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .with_context(|| format!("reading PersistentVolume {volume}"))?
    else {
        return Ok(Err(format!(
            "failed to retrieve PV {volume} from the API server: \"persistentvolumes \\\"{volume}\\\" not found\""
        )));
    };
    let bound = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name.as_deref() == Some(claim)
                && r.namespace.as_deref() == Some(ns.as_str())
                && r.uid
                    .as_deref()
                    .is_none_or(|u| u.is_empty() || Some(u) == pvc.uid().as_deref())
        });
    if !bound {
        return Ok(Err("claim in dataSource not bound or invalid".into()));
    }
    Ok(Ok(pv))
}

/// Whether a content's `volumeSnapshotRef` is this very snapshot.
fn refers_to(content: &DynamicObject, snap: &DynamicObject) -> bool {
    let r = &content.data["spec"]["volumeSnapshotRef"];
    r["name"] == snap.name_any().as_str()
        && r["namespace"].as_str() == snap.namespace().as_deref()
        && r["uid"].as_str() == snap.uid().as_deref()
}

/// `getDynamicallyProvisionedContentFromStore`: the snapshot's own content, if made yet.
async fn dynamic_content(
    client: &Client,
    snap: &DynamicObject,
    _s: &Value,
) -> Result<Result<Option<DynamicObject>, String>, SimError> {
    let name = content_name_for(&snap.uid().unwrap_or_default());
    let Some(content) = contents(client)
        .get_opt(&name)
        .await
        .with_context(|| format!("reading VolumeSnapshotContent {name}"))?
    else {
        return Ok(Ok(None));
    };
    if content.data["spec"]["source"]["volumeHandle"].is_null() {
        return Ok(Err(format!(
            "VolumeSnapshotContent {name} is pre-provisioned while expecting a dynamically provisioned one"
        )));
    }
    if !refers_to(&content, snap) {
        return Ok(Err(format!(
            "VolumeSnapshotContent [{name}] is bound to a different snapshot"
        )));
    }
    Ok(Ok(Some(content)))
}

/// `createSnapshotContent`: protect the claim, then make the content for the sidecar.
async fn create_content(
    client: &Client,
    snap: &DynamicObject,
    s: &Value,
) -> Result<Result<DynamicObject, String>, SimError> {
    let ns = snap.namespace().unwrap_or_default();
    let name = snap.name_any();
    // ensurePVCFinalizer
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let claim_name = s["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_default();
    let Some(claim) = claims
        .get_opt(claim_name)
        .await
        .with_context(|| format!("reading PVC {ns}/{claim_name}"))?
    else {
        return Ok(Err(format!(
            "snapshot controller failed to update {name} on API server: cannot get claim from snapshot"
        )));
    };
    if !has_finalizer(&claim, PVC_FINALIZER) {
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(Err(format!(
                "snapshot controller failed to update {claim_name} on API server: cannot add finalizer on claim because it is being deleted"
            )));
        }
        add_finalizer(&claims, &claim, PVC_FINALIZER, MANAGER).await?;
    }
    // getCreateSnapshotInput
    let Some(class_name) = s["spec"]["volumeSnapshotClassName"].as_str() else {
        return Ok(Err(format!(
            "failed to get input parameters to create snapshot {name}: \"failed to take snapshot {name} without a snapshot class\""
        )));
    };
    let Some(class) = Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_class())
        .get_opt(class_name)
        .await
        .with_context(|| format!("reading VolumeSnapshotClass {class_name}"))?
    else {
        return Ok(Err(format!(
            "failed to get input parameters to create snapshot {name}: \"volumesnapshotclass.snapshot.storage.k8s.io \\\"{class_name}\\\" not found\""
        )));
    };
    let volume = match volume_of(client, snap, s).await? {
        Ok(pv) => pv,
        Err(e) => {
            return Ok(Err(format!(
                "failed to get input parameters to create snapshot {name}: \"{e}\""
            )));
        }
    };
    let pv_spec = volume.spec.clone().unwrap_or_default();
    let Some(csi) = pv_spec.csi.as_ref() else {
        return Ok(Err(format!(
            "cannot find CSI PersistentVolumeSource for volume {}",
            volume.name_any()
        )));
    };
    let content_name = content_name_for(&snap.uid().unwrap_or_default());
    let mut spec = json!({
        "volumeSnapshotRef": {
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "namespace": ns, "name": name, "uid": snap.uid(), "resourceVersion": snap.resource_version(),
        },
        "source": {"volumeHandle": csi.volume_handle},
        "volumeSnapshotClassName": class_name,
        "deletionPolicy": class.data["deletionPolicy"],
        "driver": class.data["driver"],
    });
    // --prevent-volume-mode-conversion, on by default.
    if let Some(mode) = &pv_spec.volume_mode {
        spec["sourceVolumeMode"] = json!(mode);
    }
    let content: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name}, "spec": spec,
    }))
    .with_context(|| format!("building VolumeSnapshotContent {content_name}"))?;
    match contents(client)
        .create(&PostParams::default(), &content)
        .await
    {
        Ok(made) => Ok(Ok(made)),
        // Already made by an earlier sync: reuse it.
        Err(e) if is_conflict(&e) => Ok(Ok(content)),
        Err(e) => Ok(Err(format!(
            "snapshot controller failed to update {} on API server: {e}",
            key(snap)
        ))),
    }
}

/// `updateSnapshotStatus`: the snapshot's status follows its content's.
async fn update_status(
    client: &Client,
    snap: &DynamicObject,
    content: &DynamicObject,
) -> Result<(), SimError> {
    let api = dyn_api(
        client,
        &volume_snapshot(),
        &snap.namespace().unwrap_or_default(),
    );
    let name = snap.name_any();
    let fresh = api
        .get(&name)
        .await
        .with_context(|| format!("reading VolumeSnapshot {}", key(snap)))?;
    let old = to_value(&fresh)["status"].clone();
    let cs = &content.data["status"];
    let ready = cs["readyToUse"] == json!(true);
    // metav1.Time: RFC 3339, whole seconds (the fraction is cut, not rounded).
    let created = cs["creationTime"]
        .as_i64()
        .and_then(|ns| jiff::Timestamp::from_second(ns.div_euclid(1_000_000_000)).ok())
        .map(|t| t.to_string());
    let size = cs["restoreSize"].as_u64();
    let error = cs["error"].clone();
    let mut status = if old.is_object() {
        old.clone()
    } else {
        json!({})
    };
    if status["boundVolumeSnapshotContentName"].is_null() {
        status["boundVolumeSnapshotContentName"] = json!(content.name_any());
    }
    if status["creationTime"].is_null()
        && let Some(created) = &created
    {
        status["creationTime"] = json!(created);
    }
    if status["readyToUse"] != json!(ready) {
        status["readyToUse"] = json!(ready);
        if ready {
            status["error"] = Value::Null;
        }
    }
    let zero = status["restoreSize"]
        .as_str()
        .is_some_and(|q| crate::quantity::quantity_bytes(q) == Some(0));
    if let Some(size) = size
        && (status["restoreSize"].is_null() || (zero && size > 0))
    {
        status["restoreSize"] = json!(bytes_quantity(size));
    }
    // The content's error, or none when it has none.
    if !error.is_null() || !status["error"].is_null() {
        status["error"] = error;
    }
    if status == old {
        return Ok(());
    }
    api.patch_status(
        &name,
        &manager(MANAGER),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .with_context(|| format!("writing the status of VolumeSnapshot {}", key(snap)))?;
    Ok(())
}

/// `updateSnapshotErrorStatusWithEvent`.
async fn set_error(
    client: &Client,
    snap: &DynamicObject,
    message: &str,
    not_ready: bool,
) -> Result<(), SimError> {
    if snap.data["status"]["error"]["message"] == message {
        return Ok(());
    }
    let mut status = json!({"error": {"time": now(), "message": message}});
    if not_ready {
        status["readyToUse"] = json!(false);
    }
    dyn_api(
        client,
        &volume_snapshot(),
        &snap.namespace().unwrap_or_default(),
    )
    .patch_status(
        &snap.name_any(),
        &manager(MANAGER),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .with_context(|| format!("writing the error of VolumeSnapshot {}", key(snap)))?;
    Ok(())
}

/// `checkandRemovePVCFinalizer`: the claim keeps `pvc-as-source-protection` while any
/// snapshot of it (but this one, when `skip_this`) is not ready.
async fn check_and_remove_pvc_finalizer(
    ctx: &Ctx,
    snap: &DynamicObject,
    skip_this: bool,
) -> Result<(), SimError> {
    let Some(claim_name) = snap.data["spec"]["source"]["persistentVolumeClaimName"].as_str() else {
        return Ok(());
    };
    let ns = snap.namespace().unwrap_or_default();
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    let Some(claim) = claims
        .get_opt(claim_name)
        .await
        .with_context(|| format!("reading PVC {ns}/{claim_name}"))?
    else {
        return Ok(());
    };
    if !has_finalizer(&claim, PVC_FINALIZER) {
        return Ok(());
    }
    let in_use = ctx.snapshots.state().iter().any(|other| {
        other.namespace().as_deref() == Some(ns.as_str())
            && !(skip_this && other.name_any() == snap.name_any())
            && other.data["spec"]["source"]["persistentVolumeClaimName"] == claim_name
            && !is_ready(&other.data)
    });
    if !in_use {
        remove_finalizer(&claims, &claim, PVC_FINALIZER, MANAGER).await?;
    }
    Ok(())
}

/// `processSnapshotWithDeletionTimestamp`: wait while a claim is restored from the
/// snapshot; mark the content for the sidecar and delete it (policy `Delete`); drop the
/// source finalizer at once and the bound one once the content is gone.
async fn delete_snapshot(ctx: &Ctx, snap: &DynamicObject) -> Result<Action, SimError> {
    if !has_finalizer(snap, SOURCE_FINALIZER) && !has_finalizer(snap, BOUND_FINALIZER) {
        return Ok(Action::await_change());
    }
    let s = &snap.data;
    let content_name = s["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            s["spec"]["source"]["persistentVolumeClaimName"]
                .is_string()
                .then(|| content_name_for(&snap.uid().unwrap_or_default()))
        });
    let api = contents(&ctx.client);
    let mut content = match &content_name {
        Some(n) => api
            .get_opt(n)
            .await
            .with_context(|| format!("reading VolumeSnapshotContent {n}"))?
            .filter(|c| refers_to(c, snap)),
        None => None,
    };
    let delete_content = content
        .as_ref()
        .is_some_and(|c| c.data["spec"]["deletionPolicy"] == "Delete");
    let ns = snap.namespace().unwrap_or_default();
    if content.is_some() && being_restored_from(&ctx.client, &ns, &snap.name_any()).await? {
        // SnapshotDeletePending: "Snapshot is being used to restore a PVC".
        return Ok(Action::await_change());
    }
    if let Some(c) = &content
        && annotation(c, BEING_DELETED).is_none()
    {
        let name = c.name_any();
        content = Some(
            api.patch(
                &name,
                &manager(MANAGER),
                &Patch::Merge(json!({"metadata": {"annotations": {BEING_DELETED: "yes"}}})),
            )
            .await
            .with_context(|| format!("marking VolumeSnapshotContent {name} for deletion"))?,
        );
    }
    if let (Some(c), true) = (&content, delete_content) {
        match api.delete(&c.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(anyhow!(e)
                    .context(format!(
                        "failed to delete VolumeSnapshotContent {} from API server",
                        c.name_any()
                    ))
                    .into());
            }
        }
    }
    let remove_bound = !(content.is_some() && delete_content);
    check_and_remove_pvc_finalizer(ctx, snap, true).await?;
    let rest: Vec<String> = snap
        .finalizers()
        .iter()
        .filter(|f| *f != SOURCE_FINALIZER && !(remove_bound && *f == BOUND_FINALIZER))
        .cloned()
        .collect();
    if rest.len() != snap.finalizers().len() {
        set_finalizers(
            &dyn_api(&ctx.client, &volume_snapshot(), &ns),
            snap,
            rest,
            MANAGER,
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// `isVolumeBeingCreatedFromSnapshot`: a claim of the namespace, still `Pending`, restored
/// from the snapshot.
async fn being_restored_from(client: &Client, ns: &str, name: &str) -> Result<bool, SimError> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the PVCs of namespace {ns}"))?;
    let key = (ns.to_owned(), name.to_owned());
    Ok(claims
        .items
        .iter()
        .any(|p| claim_phase(p) == "Pending" && snapshot_source(p).as_ref() == Some(&key)))
}

/// The content half (`syncContent`): its finalizer while bound to a snapshot, and the
/// `being-deleted` mark when that snapshot is being deleted.
async fn sync_content(content: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let c = &content.data;
    let source = &c["spec"]["source"];
    if source["volumeHandle"].is_null() == source["snapshotHandle"].is_null() {
        tracing::warn!(content = %content.name_any(), "Exactly one of VolumeHandle and SnapshotHandle should be specified");
        return Ok(Action::await_change());
    }
    let reference = &c["spec"]["volumeSnapshotRef"];
    if reference["uid"].as_str().is_none_or(str::is_empty) {
        return Ok(Action::await_change());
    }
    let api = contents(&ctx.client);
    if content.metadata.deletion_timestamp.is_none() && !has_finalizer(&*content, CONTENT_FINALIZER)
    {
        add_finalizer(&api, &*content, CONTENT_FINALIZER, MANAGER).await?;
        return Ok(Action::await_change());
    }
    let (Some(ns), Some(name)) = (reference["namespace"].as_str(), reference["name"].as_str())
    else {
        return Ok(Action::await_change());
    };
    let snap = dyn_api(&ctx.client, &volume_snapshot(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading VolumeSnapshot {ns}/{name}"))?
        .filter(|s| s.uid().as_deref() == reference["uid"].as_str());
    let deleting = snap.as_ref().is_some_and(|s| {
        s.metadata.deletion_timestamp.is_some()
            && (has_finalizer(s, SOURCE_FINALIZER) || has_finalizer(s, BOUND_FINALIZER))
    });
    if deleting && annotation(&*content, BEING_DELETED).is_none() {
        api.patch(
            &content.name_any(),
            &manager(MANAGER),
            &Patch::Merge(json!({"metadata": {"annotations": {BEING_DELETED: "yes"}}})),
        )
        .await
        .with_context(|| {
            format!(
                "marking VolumeSnapshotContent {} for deletion",
                content.name_any()
            )
        })?;
    }
    Ok(Action::await_change())
}
