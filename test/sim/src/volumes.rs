//! kube-controller-manager's volume controllers, in short: the PV controller (binds a
//! claim to the volume made for it or to a matching free one, asks an external provisioner
//! for a volume by annotating the claim, marks volumes `Bound`, `Released` or `Available`),
//! the pvc-protection and the pv-protection controllers. It creates and deletes no volume:
//! that is the CSI driver's provisioner ([`crate::csi::provisioner`]), as on a real cluster.
//!
//! Modelled on k8s.io/kubernetes v1.36.3 `pkg/controller/volume/persistentvolume`
//! (pv_controller.go: `syncClaim`, `syncUnboundClaim`, `syncBoundClaim`, `syncVolume`,
//! `bind`, `provisionClaimOperationExternal`), `pvcprotection` and `pvprotection`.
//!
//! The readers of content tokens live with the driver that keeps them ([`crate::csi`]) and
//! are re-exported here, where tests and stories have always found them.

use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::{add_finalizer, annotation, has_finalizer, manager, remove_finalizer};
use crate::quantity::quantity_bytes;
use anyhow::Context;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::csi::{
    CONTENT_ANNOTATION, content_token, next_token, snapshot_token, volume_token, writer_of,
};

/// The finalizer that keeps a claim a pod uses from going away (pvc-protection).
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a bound volume from going away (pv-protection).
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// On a claim: the provisioner asked to make its volume (set by the PV controller).
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The deprecated twin of [`STORAGE_PROVISIONER`] the PV controller still writes.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a claim of a `WaitForFirstConsumer` class: the node the scheduler chose for its pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a claim: binding finished (the PV controller's own mark).
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the PV controller, not a user, made the binding.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: the provisioner that made it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The claim's class before `storageClassName` existed; still honoured.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const MANAGER: &str = "persistentvolume-controller";
const PROTECTION_MANAGER: &str = "pvc-protection-controller";
const PV_PROTECTION_MANAGER: &str = "pv-protection-controller";

/// A controller of every Pod that also wakes for each pod mounting a claim that changed (a
/// claim bound, restored or made after its pod).
pub fn pods_woken_by_their_claims(client: &Client) -> Controller<Pod> {
    let controller = Controller::new(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    controller.watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        move |pvc: PersistentVolumeClaim| {
            let (ns, name) = (pvc.namespace(), pvc.name_any());
            store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && claims_of(p).contains(&name))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        },
    )
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

/// (namespace, name) of the VolumeSnapshot a PVC is restored from: `dataSource`, else
/// `dataSourceRef` (which alone can name another namespace). The API server (the real one
/// and kubesim) copies one into the other for same-namespace sources.
pub fn snapshot_source(pvc: &PersistentVolumeClaim) -> Option<(String, String)> {
    let spec = pvc.spec.as_ref()?;
    let group_ok = |g: &Option<String>| g.as_deref().is_none_or(|g| g == "snapshot.storage.k8s.io");
    if let Some(d) = &spec.data_source
        && d.kind == "VolumeSnapshot"
        && group_ok(&d.api_group)
    {
        return Some((pvc.namespace()?, d.name.clone()));
    }
    let r = spec.data_source_ref.as_ref()?;
    (r.kind == "VolumeSnapshot" && group_ok(&r.api_group)).then(|| {
        Some((
            r.namespace.clone().or_else(|| pvc.namespace())?,
            r.name.clone(),
        ))
    })?
}

/// A claim's phase; none reads as `Pending`, the phase the API server gives a claim at
/// creation.
pub fn claim_phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// A volume's phase (`Pending` until the PV controller first looks at it).
pub fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The class a claim names: `spec.storageClassName`, else the beta annotation.
pub fn class_name(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .or_else(|| annotation(pvc, BETA_STORAGE_CLASS).map(str::to_owned))
}

/// The claim's StorageClass: the one it names, or — for a claim that names none, made
/// before any class was the default (the API server's DefaultStorageClass admission names
/// the default at creation) — the cluster's default now, which kube-controller-manager
/// would write into the claim retroactively.
pub async fn storage_class(
    client: &Client,
    pvc: &PersistentVolumeClaim,
) -> Result<Option<StorageClass>, SimError> {
    let api = Api::<StorageClass>::all(client.clone());
    if let Some(name) = class_name(pvc) {
        if name.is_empty() {
            return Ok(None);
        }
        return Ok(api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading StorageClass {name}"))?);
    }
    let all = api
        .list(&ListParams::default())
        .await
        .context("listing StorageClasses")?;
    Ok(all
        .items
        .into_iter()
        .find(|sc| annotation(sc, DEFAULT_CLASS) == Some("true")))
}

/// Bytes of the `storage` entry of a capacity or request list.
pub fn storage_bytes(list: Option<&BTreeMap<String, Quantity>>) -> Option<u64> {
    list.and_then(|l| l.get("storage"))
        .and_then(|q| quantity_bytes(&q.0))
}

/// Whether a class binds its claims only once a pod is scheduled.
pub fn binds_late(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

/// The running PV, pvc-protection and pv-protection controllers; stop when dropped.
#[derive(Debug)]
pub struct PvController {
    _claims: SimTask,
    _volumes: SimTask,
}

struct Ctx {
    client: Client,
}

impl PvController {
    /// Starts binding claims and tracking volumes in all namespaces.
    pub fn start(client: Client) -> PvController {
        let ctx = Arc::new(Ctx {
            client: client.clone(),
        });
        PvController {
            _claims: run_controller(
                "persistentvolume-controller (claims)",
                claim_controller(&client),
                sync_claim,
                ctx.clone(),
            ),
            _volumes: run_controller(
                "persistentvolume-controller (volumes)",
                volume_controller(&client),
                sync_volume,
                ctx,
            ),
        }
    }
}

fn claim_controller(client: &Client) -> Controller<PersistentVolumeClaim> {
    let controller = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let unbound = controller.store();
    controller
        // A class made after its claims lets them provision.
        .watches(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
            move |_: StorageClass| {
                unbound
                    .state()
                    .into_iter()
                    .filter(|p| claim_phase(p) != "Bound")
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        // A volume made (or released) for a claim.
        .watches(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
            |pv: PersistentVolume| {
                pv.spec
                    .and_then(|s| s.claim_ref)
                    .and_then(|r| Some(ObjectRef::new(&r.name?).within(&r.namespace?)))
            },
        )
        // Pods hold claims (pvc-protection).
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
}

fn volume_controller(client: &Client) -> Controller<PersistentVolume> {
    let controller = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    );
    let volumes = controller.store();
    controller.watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        move |pvc: PersistentVolumeClaim| {
            let (ns, name) = (pvc.namespace(), pvc.name_any());
            let named = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
            volumes
                .state()
                .into_iter()
                .filter(|pv| {
                    let by_ref = pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_some_and(|r| r.namespace == ns && r.name.as_deref() == Some(&name));
                    by_ref || named.as_deref() == Some(pv.name_any().as_str())
                })
                .map(|pv| ObjectRef::from_obj(&*pv))
                .collect::<Vec<_>>()
        },
    )
}

async fn pods_using(client: &Client, ns: &str, claim: &str) -> Result<Vec<Pod>, SimError> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the pods of namespace {ns}"))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| claims_of(p).iter().any(|c| c == claim))
        .collect())
}

/// One claim: pvc-protection first (as its own controller would), then the PV controller's
/// `syncClaim`.
async fn sync_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    if pvc.metadata.deletion_timestamp.is_some() {
        // Protection holds while a pod that mounts the claim exists, even a terminating
        // one. (The real controller counts only pods bound to a node; kubesim's pods have
        // none, every pod here stands for a scheduled one.)
        if has_finalizer(&*pvc, PVC_PROTECTION)
            && pods_using(&ctx.client, &ns, &name).await?.is_empty()
        {
            remove_finalizer(&api, &*pvc, PVC_PROTECTION, PROTECTION_MANAGER).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer(&*pvc, PVC_PROTECTION) {
        add_finalizer(&api, &*pvc, PVC_PROTECTION, PROTECTION_MANAGER).await?;
        return Ok(Action::await_change());
    }
    if annotation(&*pvc, BIND_COMPLETED).is_none() {
        sync_unbound_claim(&ctx.client, &pvc).await?;
    } else {
        sync_bound_claim(&ctx.client, &pvc).await?;
    }
    Ok(Action::await_change())
}

async fn sync_unbound_claim(client: &Client, pvc: &PersistentVolumeClaim) -> Result<(), SimError> {
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let wanted = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    match wanted.filter(|v| !v.is_empty()) {
        None => {
            let class = storage_class(client, pvc).await?;
            let late = class.as_ref().is_some_and(binds_late);
            let all = pvs
                .list(&ListParams::default())
                .await
                .context("listing PersistentVolumes")?;
            let class_name = class_name(pvc)
                .or_else(|| class.as_ref().map(|c| c.name_any()))
                .unwrap_or_default();
            if let Some(pv) = best_match(&all.items, pvc, &class_name, late) {
                return bind(client, pv, pvc).await;
            }
            match class {
                // The scheduler has not placed a pod that uses the claim yet.
                Some(_) if late && annotation(pvc, SELECTED_NODE).is_none_or(str::is_empty) => {}
                Some(class) => ask_provisioner(client, pvc, &class).await?,
                // A named class that does not exist (yet): the real controller reports
                // ProvisioningFailed and tries again; the class watch wakes us.
                None if class_name_given(pvc) => {}
                None => tracing::debug!(
                    claim = %key(pvc),
                    "no persistent volumes available for this claim and no storage class is set"
                ),
            }
            set_claim_status(client, pvc, "Pending", None).await
        }
        Some(volume_name) => {
            let Some(pv) = pvs
                .get_opt(&volume_name)
                .await
                .with_context(|| format!("reading PersistentVolume {volume_name}"))?
            else {
                return set_claim_status(client, pvc, "Pending", None).await;
            };
            match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                None if satisfies(&pv, pvc, &class_name(pvc).unwrap_or_default()) => {
                    bind(client, &pv, pvc).await
                }
                None => set_claim_status(client, pvc, "Pending", None).await,
                Some(_) if bound_to(&pv, pvc) => bind(client, &pv, pvc).await,
                // Bound to another claim: wait (the real controller reports FailedBinding).
                Some(_) => set_claim_status(client, pvc, "Pending", None).await,
            }
        }
    }
}

fn class_name_given(pvc: &PersistentVolumeClaim) -> bool {
    class_name(pvc).is_some_and(|c| !c.is_empty())
}

async fn sync_bound_claim(client: &Client, pvc: &PersistentVolumeClaim) -> Result<(), SimError> {
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if volume_name.is_empty() {
        return set_claim_status(client, pvc, "Lost", None).await;
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume_name)
        .await
        .with_context(|| format!("reading PersistentVolume {volume_name}"))?;
    match pv {
        None => set_claim_status(client, pvc, "Lost", None).await,
        Some(pv) => {
            let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
            if claim_ref.is_none_or(|r| r.uid == pvc.uid()) {
                bind(client, &pv, pvc).await
            } else {
                // Two claims bound to one volume: this one is bound incorrectly.
                set_claim_status(client, pvc, "Lost", None).await
            }
        }
    }
}

fn key(pvc: &PersistentVolumeClaim) -> String {
    format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any())
}

/// Whether a volume's `claimRef` names this claim (and this very claim, when it has a UID).
fn bound_to(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name.as_deref() == Some(pvc.name_any().as_str())
                && r.namespace == pvc.namespace()
                && r.uid
                    .as_deref()
                    .is_none_or(|u| u.is_empty() || Some(u) == pvc.uid().as_deref())
        })
}

/// `checkVolumeSatisfyClaim`: not being deleted, big enough, same class and volume mode,
/// and every access mode the claim asks for.
fn satisfies(pv: &PersistentVolume, pvc: &PersistentVolumeClaim, class: &str) -> bool {
    let (Some(spec), Some(claim)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    let requested =
        storage_bytes(claim.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0);
    let capacity = storage_bytes(spec.capacity.as_ref()).unwrap_or(0);
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    let modes = spec.access_modes.clone().unwrap_or_default();
    pv.metadata.deletion_timestamp.is_none()
        && capacity >= requested
        && spec.storage_class_name.as_deref().unwrap_or_default() == class
        && mode(&spec.volume_mode) == mode(&claim.volume_mode)
        && claim
            .access_modes
            .iter()
            .flatten()
            .all(|m| modes.contains(m))
}

/// `findBestMatchForClaim`: a volume made for this claim first; otherwise the smallest free
/// volume that satisfies it — except for a class that binds late, whose free volumes the
/// scheduler chooses (not simulated).
fn best_match<'a>(
    all: &'a [PersistentVolume],
    pvc: &PersistentVolumeClaim,
    class: &str,
    late: bool,
) -> Option<&'a PersistentVolume> {
    if let Some(pre_bound) = all
        .iter()
        .find(|pv| bound_to(pv, pvc) && pv.metadata.deletion_timestamp.is_none())
    {
        return Some(pre_bound);
    }
    if late {
        return None;
    }
    all.iter()
        .filter(|pv| {
            pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                && volume_phase(pv) == "Available"
                && satisfies(pv, pvc, class)
        })
        .min_by_key(|pv| storage_bytes(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())))
}

/// `provisionClaimOperationExternal`: annotate the claim with the class's provisioner and
/// let that provisioner make the volume. In-tree provisioners (`kubernetes.io/…`) are not
/// simulated.
async fn ask_provisioner(
    client: &Client,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
) -> Result<(), SimError> {
    if class.provisioner.starts_with("kubernetes.io/") {
        tracing::warn!(claim = %key(pvc), provisioner = %class.provisioner, "in-tree provisioners are not simulated");
        return Ok(());
    }
    if annotation(pvc, STORAGE_PROVISIONER) == Some(class.provisioner.as_str()) {
        return Ok(());
    }
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &pvc.namespace().unwrap_or_default())
        .patch(
            &pvc.name_any(),
            &manager(MANAGER),
            &Patch::Merge(json!({"metadata": {"annotations": {
                BETA_STORAGE_PROVISIONER: class.provisioner,
                STORAGE_PROVISIONER: class.provisioner,
            }}})),
        )
        .await
        .with_context(|| format!("annotating claim {} for its provisioner", key(pvc)))?;
    Ok(())
}

/// `bind`: the volume's `claimRef` and phase, then the claim's `volumeName`, annotations
/// and status, each written only when it differs.
async fn bind(
    client: &Client,
    pv: &PersistentVolume,
    pvc: &PersistentVolumeClaim,
) -> Result<(), SimError> {
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let pv_name = pv.name_any();
    let ns = pvc.namespace().unwrap_or_default();
    let complete = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| bound_to(pv, pvc) && r.uid.as_deref().is_some_and(|u| !u.is_empty()));
    if !complete {
        let mut patch = json!({
            "metadata": {"resourceVersion": pv.resource_version()},
            "spec": {"claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                "name": pvc.name_any(), "uid": pvc.uid(), "resourceVersion": pvc.resource_version(),
            }},
        });
        if !bound_to(pv, pvc) {
            patch["metadata"]["annotations"] = json!({BOUND_BY_CONTROLLER: "yes"});
        }
        pvs.patch(&pv_name, &manager(MANAGER), &Patch::Merge(patch))
            .await
            .with_context(|| format!("binding PersistentVolume {pv_name} to claim {}", key(pvc)))?;
    }
    set_volume_phase(client, pv, "Bound").await?;
    let spec = pvc.spec.clone().unwrap_or_default();
    let mut annotations = serde_json::Map::new();
    let mut metadata = json!({});
    let mut spec_patch = Value::Null;
    if spec.volume_name.as_deref() != Some(pv_name.as_str()) {
        spec_patch = json!({"volumeName": pv_name});
        if annotation(pvc, BOUND_BY_CONTROLLER).is_none() {
            annotations.insert(BOUND_BY_CONTROLLER.into(), json!("yes"));
        }
    }
    if annotation(pvc, BIND_COMPLETED).is_none() {
        annotations.insert(BIND_COMPLETED.into(), json!("yes"));
    }
    if !annotations.is_empty() || !spec_patch.is_null() {
        metadata["annotations"] = Value::Object(annotations);
        let mut patch = json!({"metadata": metadata});
        if !spec_patch.is_null() {
            patch["spec"] = spec_patch;
        }
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .patch(&pvc.name_any(), &manager(MANAGER), &Patch::Merge(patch))
            .await
            .with_context(|| format!("binding claim {} to PersistentVolume {pv_name}", key(pvc)))?;
    }
    set_claim_status(client, pvc, "Bound", Some(pv)).await
}

/// `updateClaimStatus`: the phase, and with a volume its access modes and capacity.
async fn set_claim_status(
    client: &Client,
    pvc: &PersistentVolumeClaim,
    phase: &str,
    pv: Option<&PersistentVolume>,
) -> Result<(), SimError> {
    let status = pvc.status.clone().unwrap_or_default();
    let mut patch = serde_json::Map::new();
    if status.phase.as_deref() != Some(phase) {
        patch.insert("phase".into(), json!(phase));
    }
    match pv.and_then(|pv| pv.spec.as_ref()) {
        None => {
            if status.access_modes.is_some() {
                patch.insert("accessModes".into(), Value::Null);
            }
            if status.capacity.is_some() {
                patch.insert("capacity".into(), Value::Null);
            }
        }
        Some(spec) => {
            if status.access_modes != spec.access_modes {
                patch.insert("accessModes".into(), json!(spec.access_modes));
            }
            if status.phase.as_deref() != Some(phase)
                && storage_bytes(status.capacity.as_ref()) != storage_bytes(spec.capacity.as_ref())
            {
                patch.insert("capacity".into(), json!(spec.capacity));
            }
        }
    }
    if patch.is_empty() {
        return Ok(());
    }
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &pvc.namespace().unwrap_or_default())
        .patch_status(
            &pvc.name_any(),
            &manager(MANAGER),
            &Patch::Merge(json!({"status": patch})),
        )
        .await
        .with_context(|| format!("writing the status of claim {}", key(pvc)))?;
    Ok(())
}

async fn set_volume_phase(
    client: &Client,
    pv: &PersistentVolume,
    phase: &str,
) -> Result<(), SimError> {
    set_volume_status(client, pv, phase, None).await
}

async fn set_volume_status(
    client: &Client,
    pv: &PersistentVolume,
    phase: &str,
    message: Option<&str>,
) -> Result<(), SimError> {
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
        return Ok(());
    }
    let name = pv.name_any();
    Api::<PersistentVolume>::all(client.clone())
        .patch_status(
            &name,
            &manager(MANAGER),
            &Patch::Merge(json!({"status": {"phase": phase, "message": message}})),
        )
        .await
        .with_context(|| format!("setting PersistentVolume {name} {phase}"))?;
    Ok(())
}

/// One volume: pv-protection first, then the PV controller's `syncVolume`.
async fn sync_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    if pv.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&*pv, PV_PROTECTION) && volume_phase(&pv) != "Bound" {
            remove_finalizer(&pvs, &*pv, PV_PROTECTION, PV_PROTECTION_MANAGER).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer(&*pv, PV_PROTECTION) {
        // The real API server's admission adds it at creation; the controller makes sure.
        add_finalizer(&pvs, &*pv, PV_PROTECTION, PV_PROTECTION_MANAGER).await?;
        return Ok(Action::await_change());
    }
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        set_volume_phase(&ctx.client, &pv, "Available").await?;
        return Ok(Action::await_change());
    };
    if claim_ref.uid.as_deref().is_none_or(str::is_empty) {
        // Pre-bound by a user to a claim that does not exist yet.
        set_volume_phase(&ctx.client, &pv, "Available").await?;
        return Ok(Action::await_change());
    }
    let (ns, name) = (
        claim_ref.namespace.clone().unwrap_or_default(),
        claim_ref.name.clone().unwrap_or_default(),
    );
    let claim = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .with_context(|| format!("reading claim {ns}/{name}"))?
        .filter(|c| c.uid() == claim_ref.uid);
    let Some(claim) = claim else {
        release(&ctx.client, &pv).await?;
        return Ok(Action::await_change());
    };
    match claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        // Not bound yet: the claim's own sync binds it.
        None | Some("") => {}
        Some(v) if v == pv.name_any() => set_volume_phase(&ctx.client, &pv, "Bound").await?,
        Some(_) => {
            let dynamic = annotation(&*pv, PROVISIONED_BY).is_some();
            if dynamic && reclaim_policy(&pv) == "Delete" {
                release(&ctx.client, &pv).await?;
            } else {
                unbind(&ctx.client, &pv).await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// A volume's reclaim policy (`Retain`, the API's default for a PersistentVolume, if unset).
pub fn reclaim_policy(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain")
}

/// The claim is gone: `Released`, then `reclaimVolume`. `Retain` keeps the volume;
/// `Delete` of an externally provisioned volume is its provisioner's to do; a volume no
/// provisioner made cannot be deleted by the controller (`Failed`); `Recycle` is not
/// simulated.
async fn release(client: &Client, pv: &PersistentVolume) -> Result<(), SimError> {
    if !matches!(volume_phase(pv), "Released" | "Failed") {
        set_volume_status(client, pv, "Released", None).await?;
    }
    match (reclaim_policy(pv), annotation(pv, PROVISIONED_BY)) {
        ("Retain", _) => {}
        ("Delete", Some(p)) if !p.starts_with("kubernetes.io/") => {}
        ("Delete", _) => {
            if volume_phase(pv) != "Failed" {
                set_volume_status(
                    client,
                    pv,
                    "Failed",
                    Some("error getting deleter volume plugin for volume: no deletable volume plugin matched"),
                )
                .await?;
            }
        }
        (policy, _) => {
            tracing::warn!(volume = %pv.name_any(), policy, "reclaim policy not simulated")
        }
    }
    Ok(())
}

/// `unbindVolume`: a volume the controller bound loses its claim; one a user pre-bound
/// keeps the name and loses the UID.
async fn unbind(client: &Client, pv: &PersistentVolume) -> Result<(), SimError> {
    let name = pv.name_any();
    let patch = if annotation(pv, BOUND_BY_CONTROLLER).is_some() {
        json!({"metadata": {"resourceVersion": pv.resource_version(), "annotations": {BOUND_BY_CONTROLLER: null}},
               "spec": {"claimRef": null}})
    } else {
        json!({"metadata": {"resourceVersion": pv.resource_version()}, "spec": {"claimRef": {"uid": null}}})
    };
    Api::<PersistentVolume>::all(client.clone())
        .patch(&name, &manager(MANAGER), &Patch::Merge(patch))
        .await
        .with_context(|| format!("unbinding PersistentVolume {name}"))?;
    Ok(())
}
