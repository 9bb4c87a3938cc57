//! The PVC binder: provisions a CSI PersistentVolume for each claim (at once for
//! `Immediate` classes, once a pod uses it for `WaitForFirstConsumer`, from a ready
//! VolumeSnapshot for `dataSourceRef`), keeps `kubernetes.io/pvc-protection` while a pod
//! uses the claim, and tracks each volume's content token.
//!
//! # Content tokens
//! Every bound PVC carries [`CONTENT_ANNOTATION`]: `<writer>#<n>` with a unique `n`. A new
//! empty volume gets writer `new`; a running pod whose image tag differs from the last
//! writer "writes" and sets writer = its image tag; a snapshot records the token its PVC
//! had when it was cut, and a PVC restored from that snapshot starts with that token.

use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::{dyn_api, to_value, volume_snapshot};
use anyhow::Context;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The annotation holding a PVC's (or a VolumeSnapshot's recorded) content token.
pub const CONTENT_ANNOTATION: &str = "sim.fluxgate.dev/content";
/// The finalizer that keeps a used PVC from going away.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const MANAGER: &str = "persistentvolume-controller";

static TOKENS: AtomicU64 = AtomicU64::new(1);

/// A fresh content token written by `writer`.
pub fn next_token(writer: &str) -> String {
    format!("{writer}#{}", TOKENS.fetch_add(1, Ordering::Relaxed))
}

/// Who wrote a token last (`new` for an empty volume).
pub fn writer_of(token: &str) -> &str {
    token.rsplit_once('#').map_or(token, |(w, _)| w)
}

/// The content token of PVC `namespace/name`, if it has one.
pub async fn content_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("PVC {namespace}/{name}"))?;
    Ok(pvc.annotations().get(CONTENT_ANNOTATION).cloned())
}

/// The content token a VolumeSnapshot recorded when it was cut, if it was.
pub async fn snapshot_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let vs = dyn_api(client, &volume_snapshot(), namespace)
        .get(name)
        .await
        .with_context(|| format!("VolumeSnapshot {namespace}/{name}"))?;
    Ok(vs.annotations().get(CONTENT_ANNOTATION).cloned())
}

/// Claim names a pod mounts.
pub fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect()
}

/// The running binder; stops when dropped.
#[derive(Debug)]
pub struct VolumeBinder {
    _task: SimTask,
}

struct Ctx {
    client: Client,
}

impl VolumeBinder {
    /// Starts binding PVCs in all namespaces.
    pub fn start(client: Client) -> VolumeBinder {
        let pvcs = Api::<PersistentVolumeClaim>::all(client.clone());
        let controller = Controller::new(pvcs, watcher::Config::default());
        let store = controller.store();
        let pending = controller.store();
        let vs = volume_snapshot();
        let controller = controller
            // A class created after its claims lets them bind.
            .watches(
                Api::<StorageClass>::all(client.clone()),
                watcher::Config::default(),
                move |_: StorageClass| {
                    pending
                        .state()
                        .into_iter()
                        .filter(|p| {
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
                        })
                        .map(|p| ObjectRef::from_obj(&*p))
                        .collect::<Vec<_>>()
                },
            )
            .watches(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default(),
                |pod: Pod| {
                    let ns = pod.namespace().unwrap_or_default();
                    claims_of(&pod)
                        .into_iter()
                        .map(move |c| ObjectRef::new(&c).within(&ns))
                },
            )
            .watches_with(
                Api::all_with(client.clone(), &vs),
                vs,
                watcher::Config::default(),
                move |snap: DynamicObject| {
                    let ns = snap.namespace().unwrap_or_default();
                    let name = snap.name_any();
                    store
                        .state()
                        .into_iter()
                        .filter(|p| {
                            p.namespace().as_deref() == Some(ns.as_str())
                                && snapshot_source(p)
                                    .is_some_and(|(sns, sn)| sns == ns && sn == name)
                        })
                        .map(|p| ObjectRef::from_obj(&*p))
                        .collect::<Vec<_>>()
                },
            );
        VolumeBinder {
            _task: run_controller(
                "pvc-binder",
                controller,
                reconcile,
                Arc::new(Ctx { client }),
            ),
        }
    }
}

/// (namespace, name) of the VolumeSnapshot a PVC is restored from.
pub fn snapshot_source(pvc: &PersistentVolumeClaim) -> Option<(String, String)> {
    let spec = pvc.spec.as_ref()?;
    if let Some(r) = &spec.data_source_ref
        && r.kind == "VolumeSnapshot"
    {
        let ns = r.namespace.clone().or_else(|| pvc.namespace())?;
        return Some((ns, r.name.clone()));
    }
    let d = spec.data_source.as_ref()?;
    (d.kind == "VolumeSnapshot").then(|| Some((pvc.namespace()?, d.name.clone())))?
}

async fn pods_using(client: &Client, ns: &str, claim: &str) -> Result<Vec<Pod>, SimError> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| claims_of(p).iter().any(|c| c == claim))
        .collect())
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    let finalizers = pvc.finalizers().to_vec();

    if pvc.metadata.deletion_timestamp.is_some() {
        if !finalizers.iter().any(|f| f == PVC_PROTECTION) {
            return Ok(Action::await_change());
        }
        // Protection holds while any pod, even a terminating one, still mounts the claim.
        if !pods_using(&ctx.client, &ns, &name).await?.is_empty() {
            return Ok(Action::await_change());
        }
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != PVC_PROTECTION).collect();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
        )
        .await?;
        if let Some(pv) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            release_volume(&ctx.client, &pv).await?;
        }
        return Ok(Action::await_change());
    }
    if !finalizers.iter().any(|f| f == PVC_PROTECTION) {
        let mut all = finalizers.clone();
        all.push(PVC_PROTECTION.to_owned());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": all}})),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
        return Ok(Action::await_change());
    }
    let Some(sc) = storage_class(&ctx.client, &pvc).await? else {
        tracing::debug!(pvc = %format!("{ns}/{name}"), "no storage class; stays Pending");
        return Ok(Action::await_change());
    };
    if sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        && pods_using(&ctx.client, &ns, &name).await?.is_empty()
    {
        return Ok(Action::await_change());
    }
    let token = match snapshot_source(&pvc) {
        Some((sns, sname)) => {
            let snap = dyn_api(&ctx.client, &volume_snapshot(), &sns)
                .get_opt(&sname)
                .await?;
            let snap = snap.map(|s| to_value(&s)).unwrap_or(Value::Null);
            if snap["status"]["readyToUse"] != json!(true) {
                // Like the external provisioner: wait until the snapshot can be restored.
                return Ok(Action::await_change());
            }
            snap["metadata"]["annotations"][CONTENT_ANNOTATION]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| next_token("new"))
        }
        None => next_token("new"),
    };
    bind(&ctx.client, &pvc, &sc, &token).await?;
    Ok(Action::await_change())
}

/// The claim's StorageClass: named, or the cluster default.
async fn storage_class(
    client: &Client,
    pvc: &PersistentVolumeClaim,
) -> Result<Option<StorageClass>, SimError> {
    let api = Api::<StorageClass>::all(client.clone());
    if let Some(name) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        return Ok(api.get_opt(name).await?);
    }
    let all = api.list(&ListParams::default()).await?;
    Ok(all.items.into_iter().find(|sc| {
        sc.annotations()
            .get("storageclass.kubernetes.io/is-default-class")
            .is_some_and(|v| v == "true")
    }))
}

async fn bind(
    client: &Client,
    pvc: &PersistentVolumeClaim,
    sc: &StorageClass,
    token: &str,
) -> Result<(), SimError> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let uid = pvc.uid().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".to_owned());
    let access_modes = spec
        .access_modes
        .clone()
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pv_name = format!("pvc-{uid}");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": sc.provisioner}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": access_modes,
            "csi": {"driver": sc.provisioner, "volumeHandle": format!("sim-{uid}")},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": sc.name_any(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
        }
    }))
    .context("building a PersistentVolume")?;
    let pvs = Api::<PersistentVolume>::all(client.clone());
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    pvs.patch_status(
        &pv_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await?;
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    api.patch(
        &name,
        &crate::kinds::manager(MANAGER),
        &Patch::Merge(json!({
            "metadata": {"annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.kubernetes.io/storage-provisioner": sc.provisioner,
                CONTENT_ANNOTATION: token,
            }},
            "spec": {"volumeName": pv_name},
        })),
    )
    .await?;
    api.patch_status(
        &name,
        &crate::kinds::manager(MANAGER),
        &Patch::Merge(json!({"status": {"phase": "Bound", "accessModes": access_modes, "capacity": {"storage": size}}})),
    )
    .await?;
    Ok(())
}

/// A released volume with reclaim policy `Delete` goes away with its claim.
async fn release_volume(client: &Client, pv_name: &str) -> Result<(), SimError> {
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let Some(pv) = pvs.get_opt(pv_name).await? else {
        return Ok(());
    };
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    if policy.unwrap_or("Delete") == "Delete" {
        match pvs.delete(pv_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        pvs.patch_status(
            pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Released"}})),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_name_their_writer() {
        let a = next_token("new");
        let b = next_token("1.2.3");
        assert_ne!(a, b);
        assert_eq!(writer_of(&a), "new");
        assert_eq!(writer_of(&b), "1.2.3");
    }
}
