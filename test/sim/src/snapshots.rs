//! The CSI snapshotter: VolumeSnapshots of a PVC get a VolumeSnapshotContent, record the
//! PVC's content token, and become `readyToUse` with `restoreSize` after a configurable
//! delay — or report `status.error` when a test declared the snapshot failing. A deleted
//! snapshot waits for pending restores from it, then takes its content along (policy
//! `Delete`), guarded by the snapshot-controller's finalizers.

use crate::conditions::now;
use crate::controller::{SimError, SimTask, run_controller};
use crate::faults::{Failures, SNAPSHOT_ERROR_ANNOTATION};
use crate::kinds::{
    dyn_api, patch_status, to_value, volume_snapshot, volume_snapshot_class,
    volume_snapshot_content,
};
use crate::volumes::CONTENT_ANNOTATION;
use anyhow::anyhow;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MANAGER: &str = "snapshot-controller";
/// Held while the snapshot is bound to its content.
pub const BOUND_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// Held while a PVC is being restored from the snapshot.
pub const SOURCE_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";

/// Options for [`Snapshotter`].
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// Time from a snapshot being cut to `readyToUse` (default: instant).
    pub ready_delay: Duration,
}

/// The running CSI snapshotter; stops when dropped.
#[derive(Debug)]
pub struct Snapshotter {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    failures: Failures,
    options: SnapshotOptions,
    cut_at: Mutex<HashMap<String, Instant>>,
}

impl Snapshotter {
    /// Starts handling VolumeSnapshots in all namespaces.
    pub fn start(client: Client, failures: Failures, options: SnapshotOptions) -> Snapshotter {
        let vs = volume_snapshot();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &vs),
            watcher::Config::default(),
            vs.clone(),
        );
        let store = controller.store();
        let controller = controller
            .watches(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                watcher::Config::default(),
                move |pvc: PersistentVolumeClaim| {
                    let (ns, name) = (pvc.namespace(), pvc.name_any());
                    store
                        .state()
                        .into_iter()
                        .filter(|s| {
                            let restoring = crate::volumes::snapshot_source(&pvc).is_some_and(
                                |(sns, sname)| Some(sns) == s.namespace() && sname == s.name_any(),
                            );
                            restoring
                                || (s.namespace() == ns
                                    && to_value(&**s)["spec"]["source"]["persistentVolumeClaimName"]
                                        == name.as_str())
                        })
                        .map(|s| ObjectRef::from_obj_with(&*s, vs.clone()))
                        .collect::<Vec<_>>()
                },
            )
            .reconcile_all_on(failures.changes());
        let ctx = Arc::new(Ctx {
            client,
            failures,
            options,
            cut_at: Mutex::default(),
        });
        Snapshotter {
            _task: run_controller("snapshot-controller", controller, reconcile, ctx),
        }
    }
}

/// Bytes of a Kubernetes quantity such as `1Gi`, `500M` or `1024` (fractions rounded up).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale: f64 = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        _ => return None,
    };
    Some((n * scale).ceil() as u64)
}

async fn set_error(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    v: &Value,
    message: String,
) -> Result<Action, SimError> {
    if v["status"]["error"]["message"] != message.as_str() {
        let api = dyn_api(&ctx.client, &volume_snapshot(), ns);
        patch_status(
            &api,
            name,
            json!({"readyToUse": false, "error": {"message": message, "time": now()}}),
            MANAGER,
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// Deletion: wait while a PVC is still being restored from the snapshot, then delete its
/// content when the policy says so and let the snapshot go.
async fn finalize(ctx: &Ctx, v: &Value) -> Result<Action, SimError> {
    let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    let finalizers: Vec<String> = v["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    let ours = |f: &String| f == BOUND_FINALIZER || f == SOURCE_FINALIZER;
    if !finalizers.iter().any(ours) {
        return Ok(Action::await_change());
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let restoring = claims.items.iter().any(|p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
            && crate::volumes::snapshot_source(p)
                .is_some_and(|(sns, sname)| sns == ns && sname == name)
    });
    if restoring {
        return Ok(Action::await_change());
    }
    if let Some(content) = v["status"]["boundVolumeSnapshotContentName"].as_str() {
        let contents =
            Api::<DynamicObject>::all_with(ctx.client.clone(), &volume_snapshot_content());
        if let Some(c) = contents.get_opt(content).await?
            && to_value(&c)["spec"]["deletionPolicy"] == "Delete"
        {
            match contents.delete(content, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let (Some(uid), Ok(mut cut)) = (v["metadata"]["uid"].as_str(), ctx.cut_at.lock()) {
        cut.remove(uid);
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| !ours(f)).collect();
    dyn_api(&ctx.client, &volume_snapshot(), ns)
        .patch(
            name,
            &crate::kinds::manager(MANAGER),
            &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
        )
        .await?;
    Ok(Action::await_change())
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let v = to_value(&*obj);
    if v["metadata"]["deletionTimestamp"].is_string() {
        return finalize(&ctx, &v).await;
    }
    if v["status"]["readyToUse"] == json!(true) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let uid = obj.uid().unwrap_or_default();
    let injected = ctx.failures.snapshot_error(&name).or_else(|| {
        v["metadata"]["annotations"][SNAPSHOT_ERROR_ANNOTATION]
            .as_str()
            .map(str::to_owned)
    });
    if let Some(message) = injected {
        return set_error(&ctx, &ns, &name, &v, message).await;
    }
    let Some(claim) = v["spec"]["source"]["persistentVolumeClaimName"].as_str() else {
        return set_error(
            &ctx,
            &ns,
            &name,
            &v,
            "pre-provisioned snapshots (spec.source.volumeSnapshotContentName) are not simulated"
                .into(),
        )
        .await;
    };
    let Some(pvc) = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .get_opt(claim)
        .await?
    else {
        return set_error(&ctx, &ns, &name, &v, format!(
            "failed to get input parameters to create snapshot {name}: \"persistentvolumeclaims \\\"{claim}\\\" not found\"")).await;
    };
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        // The real snapshotter waits for the claim to be bound, too.
        return Ok(Action::await_change());
    };
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get(&pv_name)
        .await?;
    let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.clone()) else {
        let message = format!("volume {pv_name} is not a CSI volume and cannot be snapshotted");
        return set_error(&ctx, &ns, &name, &v, message).await;
    };
    let class = match snapshot_class(&ctx.client, &v, &csi.driver).await? {
        Ok(c) => c,
        Err(message) => return set_error(&ctx, &ns, &name, &v, message).await,
    };
    let vs_api = dyn_api(&ctx.client, &volume_snapshot(), &ns);

    // Cut the snapshot: record what the volume holds right now.
    let token = match v["metadata"]["annotations"][CONTENT_ANNOTATION].as_str() {
        Some(t) => t.to_owned(),
        None => {
            let t = pvc
                .annotations()
                .get(CONTENT_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let mut finalizers: Vec<Value> = v["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for f in [BOUND_FINALIZER, SOURCE_FINALIZER] {
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(json!(f));
                }
            }
            vs_api
                .patch(
                    &name,
                    &crate::kinds::manager(MANAGER),
                    &Patch::Merge(json!({"metadata": {
                        "annotations": {CONTENT_ANNOTATION: t},
                        "finalizers": finalizers,
                    }})),
                )
                .await?;
            t
        }
    };
    let cut = *ctx
        .cut_at
        .lock()
        .map_err(|_| anyhow!("snapshot clock lock poisoned"))?
        .entry(uid.clone())
        .or_insert_with(Instant::now);
    let size = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "0".into());
    let ready = cut.elapsed() >= ctx.options.ready_delay;
    let created = v["status"]["creationTime"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(now);
    let content_name = format!("snapcontent-{uid}");
    let content = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name, "annotations": {CONTENT_ANNOTATION: token}},
        "spec": {
            "deletionPolicy": class["deletionPolicy"].as_str().unwrap_or("Delete"),
            "driver": csi.driver,
            "source": {"volumeHandle": csi.volume_handle},
            "volumeSnapshotClassName": class["metadata"]["name"],
            "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                  "name": name, "namespace": ns, "uid": uid},
        },
    });
    let contents = Api::<DynamicObject>::all_with(ctx.client.clone(), &volume_snapshot_content());
    let content_obj: DynamicObject =
        serde_json::from_value(content).map_err(|e| anyhow!("content object: {e}"))?;
    match contents.create(&PostParams::default(), &content_obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let created_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    let mut content_status = json!({
        "readyToUse": ready, "snapshotHandle": format!("snap-{uid}"), "creationTime": created_ns,
    });
    if let Some(bytes) = quantity_bytes(&size) {
        content_status["restoreSize"] = json!(bytes);
    }
    patch_status(&contents, &content_name, content_status, MANAGER).await?;
    let mut status = json!({
        "boundVolumeSnapshotContentName": content_name,
        "creationTime": created,
        "readyToUse": ready,
        "error": null,
    });
    if ready {
        status["restoreSize"] = json!(size);
    }
    patch_status(&vs_api, &name, status, MANAGER).await?;
    Ok(if ready {
        Action::await_change()
    } else {
        Action::requeue(ctx.options.ready_delay.saturating_sub(cut.elapsed()))
    })
}

/// The snapshot's class: named, or the default class for the volume's driver.
async fn snapshot_class(
    client: &Client,
    vs: &Value,
    driver: &str,
) -> Result<Result<Value, String>, SimError> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_class());
    if let Some(name) = vs["spec"]["volumeSnapshotClassName"].as_str() {
        return Ok(match api.get_opt(name).await? {
            Some(c) => Ok(to_value(&c)),
            None => Err(format!(
                "failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{name}\" not found"
            )),
        });
    }
    let classes = api.list(&ListParams::default()).await?;
    Ok(classes
        .items
        .iter()
        .map(to_value)
        .find(|c| {
            c["driver"] == driver
                && c["metadata"]["annotations"]["snapshot.storage.kubernetes.io/is-default-class"]
                    == "true"
        })
        .ok_or_else(|| format!("cannot find default snapshot class for driver {driver}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1024"), Some(1024));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536));
        assert_eq!(quantity_bytes("lots"), None);
    }
}
