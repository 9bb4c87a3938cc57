//! The driver's external-provisioner: a PersistentVolume for each claim the PV controller
//! hands to the driver (empty, or restored from a ready VolumeSnapshot), and deletion of
//! each released volume whose policy is `Delete`. Binding is not its job: it sets the
//! volume's `claimRef` and the PV controller binds.
//!
//! Modelled on external-provisioner v6.4.0 (`pkg/controller/controller.go`: `Provision`,
//! `prepareProvision`, `getSnapshotSource`, `Delete`; `snapshot_finalizer_controller.go`)
//! and sig-storage-lib-external-provisioner v13.1.0 (`controller/controller.go`:
//! `shouldProvision`, `provisionClaimOperation`, `syncVolume`, `handleProtectionFinalizer`,
//! `shouldDelete`, `deleteVolumeOperation`), with the finalizer option on, as
//! csi-provisioner runs it.
//!
//! What it does not do: topology (the stand-in reports no accessible topology, so volumes
//! get no node affinity — the real hostpath driver is node-local and would pin each volume
//! to its node, which needs the node plugin's CSINode registration that no fake node
//! has), cloning from a PVC, volume attributes classes, secrets, capacity tracking, events.

use crate::controller::{SimError, SimTask, run_controller};
use crate::csi::{CONTENT_ANNOTATION, next_token, stored_token};
use crate::kinds::{
    add_finalizer, annotation, dyn_api, has_finalizer, is_conflict, is_not_found, remove_finalizer,
    to_value, volume_snapshot, volume_snapshot_content,
};
use crate::quantity::{bytes_quantity, quantity_bytes};
use crate::volumes::{
    BETA_STORAGE_PROVISIONER, PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER, binds_late,
    claim_phase, class_name, reclaim_policy, snapshot_source, storage_bytes, storage_class,
    volume_phase,
};
use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;

/// The finalizer the provisioner keeps on the volumes it must delete.
pub const PV_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// The provisioner's own finalizer on a VolumeSnapshot a volume is being restored from
/// (distinct from the snapshot-controller's `volumesnapshot-as-source-protection`).
pub const SNAPSHOT_SOURCE_FINALIZER: &str =
    "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection";
/// The volume attribute naming the provisioner instance that made a volume.
pub const IDENTITY_ATTRIBUTE: &str = "storage.kubernetes.io/csiProvisionerIdentity";
const DELETION_SECRET_NAME: &str = "volume.kubernetes.io/provisioner-deletion-secret-name";
const DELETION_SECRET_NAMESPACE: &str =
    "volume.kubernetes.io/provisioner-deletion-secret-namespace";
const ALLOW_VOLUME_MODE_CHANGE: &str = "snapshot.storage.kubernetes.io/allow-volume-mode-change";
const FS_TYPE: &str = "csi.storage.k8s.io/fstype";
const MANAGER: &str = "csi-provisioner";

/// The running provisioner (claims, volumes, and the sweep of its snapshot finalizers);
/// stops when dropped.
#[derive(Debug)]
pub struct Provisioner {
    _claims: SimTask,
    _volumes: SimTask,
    _sweep: SimTask,
}

struct Ctx {
    client: Client,
    driver: String,
    /// `<start millis>-<n>-<driver>`, as csi-provisioner names itself.
    identity: String,
}

impl Provisioner {
    /// Starts provisioning for StorageClasses whose `provisioner` is `driver`.
    pub fn start(client: Client, driver: String) -> Provisioner {
        let now = jiff::Timestamp::now();
        let identity = format!(
            "{}-{}-{driver}",
            now.as_millisecond(),
            now.subsec_nanosecond().rem_euclid(10_000)
        );
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            driver,
            identity,
        });
        Provisioner {
            _claims: run_controller(
                "csi-provisioner (claims)",
                claim_controller(&client),
                sync_claim,
                ctx.clone(),
            ),
            _volumes: run_controller(
                "csi-provisioner (volumes)",
                Controller::new(
                    Api::<PersistentVolume>::all(client.clone()),
                    watcher::Config::default(),
                ),
                sync_volume,
                ctx.clone(),
            ),
            _sweep: run_controller(
                "csi-provisioner (snapshot finalizers)",
                sweep_controller(&client),
                sweep,
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
    let (restoring, unbound) = (controller.store(), controller.store());
    let vs = volume_snapshot();
    controller
        // A snapshot becoming ready lets its restores go on.
        .watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &vs),
            vs,
            watcher::Config::default(),
            move |snap: DynamicObject| {
                let key = (snap.namespace().unwrap_or_default(), snap.name_any());
                restoring
                    .state()
                    .into_iter()
                    .filter(|p| snapshot_source(p).as_ref() == Some(&key))
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        // So does a class made (or fixed) after its claims.
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
}

fn sweep_controller(client: &Client) -> Controller<DynamicObject> {
    let vs = volume_snapshot();
    Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &vs),
        watcher::Config::default(),
        vs.clone(),
    )
    .watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        move |pvc: PersistentVolumeClaim| {
            snapshot_source(&pvc)
                .map(|(ns, name)| ObjectRef::new_with(&name, vs.clone()).within(&ns))
        },
    )
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any())
}

/// `syncClaim`: `shouldProvision`, then `provisionClaimOperation`.
async fn sync_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    if pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
    {
        return Ok(Action::await_change());
    }
    let asked =
        annotation(&*pvc, STORAGE_PROVISIONER).or(annotation(&*pvc, BETA_STORAGE_PROVISIONER));
    if asked != Some(ctx.driver.as_str()) {
        return Ok(Action::await_change());
    }
    let Some(class) = storage_class(&ctx.client, &pvc).await? else {
        // The real provisioner retries with backoff; the class watch wakes this one.
        tracing::debug!(claim = %claim_key(&pvc), "the claim's StorageClass does not exist");
        return Ok(Action::await_change());
    };
    if binds_late(&class) && annotation(&*pvc, SELECTED_NODE).is_none_or(str::is_empty) {
        return Ok(Action::await_change());
    }
    let pv_name = format!("pvc-{}", pvc.uid().unwrap_or_default());
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    if pvs
        .get_opt(&pv_name)
        .await
        .with_context(|| format!("reading PersistentVolume {pv_name}"))?
        .is_some()
    {
        return Ok(Action::await_change());
    }
    if class.provisioner != ctx.driver {
        return Ok(Action::await_change());
    }
    let pv = match provision(&ctx, &pvc, &class, &pv_name).await? {
        Provisioned::Volume(pv) => pv,
        Provisioned::Ignored => return Ok(Action::await_change()),
        Provisioned::Failed(message) => {
            // ProvisioningFailed: the claim stays Pending until it, its class or its source
            // snapshot changes.
            tracing::info!(claim = %claim_key(&pvc), %message, "provisioning failed");
            return Ok(Action::await_change());
        }
    };
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {}
        Err(e) => {
            return Err(anyhow!(e)
                .context(format!(
                    "creating PersistentVolume {pv_name} for claim {}",
                    claim_key(&pvc)
                ))
                .into());
        }
    }
    if let Some((ns, name)) = snapshot_source(&pvc) {
        release_snapshot(&ctx.client, &ns, &name).await?;
    }
    Ok(Action::await_change())
}

enum Provisioned {
    Volume(Box<PersistentVolume>),
    /// Not this provisioner's to make (a data source some populator fills).
    Ignored,
    /// Refused or not possible yet, with the message the real provisioner reports.
    Failed(String),
}

/// What a volume restored from a snapshot starts from.
struct SnapshotSource {
    token: String,
}

/// `Provision` with the driver's `CreateVolume`: the PersistentVolume as csi-provisioner
/// writes it.
async fn provision(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    pv_name: &str,
) -> Result<Provisioned, SimError> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let mut source: Option<SnapshotSource> = None;
    if let Some((kind, group, ns, name)) = data_source(pvc) {
        match kind.as_str() {
            "VolumeSnapshot" if group != "snapshot.storage.k8s.io" => {
                return Ok(Provisioned::Failed(format!(
                    "the PVC source does not belong to the right APIGroup. Expected snapshot.storage.k8s.io, Got {group}"
                )));
            }
            "VolumeSnapshot" => {}
            "PersistentVolumeClaim" => {
                return Ok(Provisioned::Failed(format!(
                    "cloning PVC {ns}/{name} is not simulated by the CSI driver stand-in"
                )));
            }
            _ => return Ok(Provisioned::Ignored),
        }
        let Some(request) =
            storage_bytes(spec.resources.as_ref().and_then(|r| r.requests.as_ref()))
        else {
            return Ok(Provisioned::Failed(format!(
                "error getting capacity for PVC {} when creating snapshot {name}",
                pvc.name_any()
            )));
        };
        match snapshot_source_of(ctx, pvc, class, &ns, &name, request).await? {
            Ok(s) => source = Some(s),
            Err(message) => {
                return Ok(Provisioned::Failed(format!(
                    "error getting handle for DataSource Type VolumeSnapshot by Name {name}: {message}"
                )));
            }
        }
        let snapshots = dyn_api(&ctx.client, &volume_snapshot(), &ns);
        if let Some(snap) = snapshots
            .get_opt(&name)
            .await
            .with_context(|| format!("reading VolumeSnapshot {ns}/{name}"))?
        {
            add_finalizer(&snapshots, &snap, SNAPSHOT_SOURCE_FINALIZER, MANAGER).await?;
        }
    }
    // CreateVolume: the driver makes exactly the requested size, holding the snapshot's
    // content or nothing yet.
    let token = source.map(|s| s.token);
    Ok(volume_for(
        &ctx.driver,
        &ctx.identity,
        pvc,
        class,
        pv_name,
        token,
    ))
}

/// The PersistentVolume csi-provisioner writes for `pvc` once the driver made its volume
/// (holding `token`, or a new empty volume's), or why it makes none.
fn volume_for(
    driver: &str,
    identity: &str,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    pv_name: &str,
    token: Option<String>,
) -> Provisioned {
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.selector.is_some() {
        return Provisioned::Failed("claim Selector is not supported".into());
    }
    let params = class.parameters.clone().unwrap_or_default();
    let fs_types: Vec<&String> = params
        .iter()
        .filter(|(k, _)| k.to_lowercase() == "fstype" || *k == FS_TYPE)
        .map(|(_, v)| v)
        .collect();
    if fs_types.len() > 1 {
        return Provisioned::Failed(format!(
            "fstype specified in parameters with both \"fstype\" and \"{FS_TYPE}\" keys"
        ));
    }
    let Some(capacity) = storage_bytes(spec.resources.as_ref().and_then(|r| r.requests.as_ref()))
    else {
        return Provisioned::Failed(format!("claim {} requests no storage", claim_key(pvc)));
    };
    let block = spec.volume_mode.as_deref() == Some("Block");
    let mut csi = json!({
        "driver": driver,
        "volumeHandle": format!("vol-{}", pvc.uid().unwrap_or_default()),
        "volumeAttributes": {IDENTITY_ATTRIBUTE: identity},
    });
    if let (false, Some(fs)) = (block, fs_types.first()) {
        csi["fsType"] = json!(fs);
    }
    let mut pv_spec = json!({
        "accessModes": spec.access_modes,
        "capacity": {"storage": bytes_quantity(capacity)},
        "csi": csi,
        // A StorageClass's reclaimPolicy defaults to Delete on the API server.
        "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
        // So does a claim's volumeMode to Filesystem; kubesim leaves both unset.
        "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
        "claimRef": {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": pvc.namespace(), "name": pvc.name_any(),
            "uid": pvc.uid(), "resourceVersion": pvc.resource_version(),
        },
        "storageClassName": class_name(pvc).unwrap_or_else(|| class.name_any()),
    });
    if let Some(options) = &class.mount_options {
        pv_spec["mountOptions"] = json!(options);
    }
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name,
            "annotations": {
                PROVISIONED_BY: class.provisioner,
                DELETION_SECRET_NAME: "",
                DELETION_SECRET_NAMESPACE: "",
                CONTENT_ANNOTATION: token.unwrap_or_else(|| next_token("new")),
            },
            "finalizers": [PV_FINALIZER],
        },
        "spec": pv_spec,
    });
    match serde_json::from_value(pv) {
        Ok(pv) => Provisioned::Volume(Box::new(pv)),
        Err(e) => Provisioned::Failed(format!("building PersistentVolume {pv_name}: {e}")),
    }
}

/// `(kind, apiGroup, namespace, name)` of a claim's data source: `dataSource`, else
/// `dataSourceRef` (see [`snapshot_source`] for why both).
fn data_source(pvc: &PersistentVolumeClaim) -> Option<(String, String, String, String)> {
    let spec = pvc.spec.as_ref()?;
    let ns = pvc.namespace().unwrap_or_default();
    if let Some(d) = &spec.data_source {
        return Some((
            d.kind.clone(),
            d.api_group.clone().unwrap_or_default(),
            ns,
            d.name.clone(),
        ));
    }
    let r = spec.data_source_ref.as_ref()?;
    Some((
        r.kind.clone(),
        r.api_group.clone().unwrap_or_default(),
        r.namespace.clone().unwrap_or(ns),
        r.name.clone(),
    ))
}

/// `getSnapshotSource`, then the driver finding the snapshot's content: `Err` carries the
/// message the real provisioner reports for a snapshot it cannot restore (yet).
async fn snapshot_source_of(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    ns: &str,
    name: &str,
    request: u64,
) -> Result<Result<SnapshotSource, String>, SimError> {
    let Some(snap) = dyn_api(&ctx.client, &volume_snapshot(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading VolumeSnapshot {ns}/{name}"))?
    else {
        return Ok(Err(format!(
            "error getting snapshot {name} from api server: volumesnapshots.snapshot.storage.k8s.io \"{name}\" not found"
        )));
    };
    // A snapshot being deleted may still finish a restore that had begun (it carries this
    // provisioner's finalizer), but none may begin.
    if snap.metadata.deletion_timestamp.is_some()
        && !has_finalizer(&snap, SNAPSHOT_SOURCE_FINALIZER)
    {
        return Ok(Err(format!("snapshot {name} is being deleted")));
    }
    let s = to_value(&snap);
    let Some(content_name) = s["status"]["boundVolumeSnapshotContentName"].as_str() else {
        return Ok(Err(format!("snapshot {name} not bound")));
    };
    let Some(content) =
        Api::<DynamicObject>::all_with(ctx.client.clone(), &volume_snapshot_content())
            .get_opt(content_name)
            .await
            .with_context(|| format!("reading VolumeSnapshotContent {content_name}"))?
    else {
        return Ok(Err(format!(
            "error getting snapshotcontent {content_name} for snapshot {name}"
        )));
    };
    let c = to_value(&content);
    let reference = &c["spec"]["volumeSnapshotRef"];
    if reference["uid"] != s["metadata"]["uid"]
        || reference["namespace"] != ns
        || reference["name"] != name
    {
        return Ok(Err(format!(
            "snapshotcontent {content_name} for snapshot {name} is bound to a different snapshot"
        )));
    }
    if c["spec"]["driver"] != class.provisioner.as_str() {
        return Ok(Err(format!(
            "snapshotcontent {content_name} for snapshot {name} is not handled by CSI driver of StorageClass {}",
            class.name_any()
        )));
    }
    if s["status"]["readyToUse"] != json!(true) {
        return Ok(Err(format!("snapshot {name} is not Ready")));
    }
    let Some(handle) = c["status"]["snapshotHandle"].as_str() else {
        return Ok(Err(format!("snapshot handle {name} is not available")));
    };
    if let Some(restore) = s["status"]["restoreSize"].as_str().and_then(quantity_bytes) {
        // The volume may be larger than the snapshot, never smaller.
        if request < restore {
            return Ok(Err(format!(
                "requested volume size {request} is less than the size {restore} for the source snapshot {name}"
            )));
        }
    }
    // --prevent-volume-mode-conversion, on by default.
    let claim_mode = pvc.spec.as_ref().and_then(|s| s.volume_mode.clone());
    if let (Some(source_mode), Some(claim_mode)) =
        (c["spec"]["sourceVolumeMode"].as_str(), claim_mode)
        && source_mode != claim_mode
    {
        let allowed = annotation(&content, ALLOW_VOLUME_MODE_CHANGE);
        if allowed != Some("true") {
            return Ok(Err(format!(
                "requested volume {} modifies the mode of the source volume but does not have permission to do so. {ALLOW_VOLUME_MODE_CHANGE} annotation is not present on snapshotcontent {content_name}",
                claim_key(pvc)
            )));
        }
    }
    // The driver restores what it kept when it cut the snapshot.
    match stored_token(&content) {
        Some(token) => Ok(Ok(SnapshotSource { token })),
        None => Ok(Err(format!(
            "rpc error: code = NotFound desc = cannot find snapshot {handle}"
        ))),
    }
}

/// Takes the provisioner's finalizer off a snapshot it restored from.
async fn release_snapshot(client: &Client, ns: &str, name: &str) -> Result<(), SimError> {
    let snapshots = dyn_api(client, &volume_snapshot(), ns);
    if let Some(snap) = snapshots
        .get_opt(name)
        .await
        .with_context(|| format!("reading VolumeSnapshot {ns}/{name}"))?
    {
        match remove_finalizer(&snapshots, &snap, SNAPSHOT_SOURCE_FINALIZER, MANAGER).await {
            Ok(()) => {}
            // Gone meanwhile, or changed: the sweep takes care of it.
            Err(e) => {
                tracing::debug!(snapshot = %format!("{ns}/{name}"), error = %e, "finalizer left for the sweep")
            }
        }
    }
    Ok(())
}

/// The sweep of `snapshot_finalizer_controller.go`: a snapshot keeps the provisioner's
/// finalizer only while a claim that has not bound yet is restored from it.
async fn sweep(snap: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    if !has_finalizer(&*snap, SNAPSHOT_SOURCE_FINALIZER) {
        return Ok(Action::await_change());
    }
    let key = (snap.namespace().unwrap_or_default(), snap.name_any());
    let claims = Api::<PersistentVolumeClaim>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .context("listing PersistentVolumeClaims")?;
    let pending = claims
        .items
        .iter()
        .any(|p| claim_phase(p) == "Pending" && snapshot_source(p).as_ref() == Some(&key));
    if !pending {
        let snapshots = dyn_api(&ctx.client, &volume_snapshot(), &key.0);
        remove_finalizer(&snapshots, &*snap, SNAPSHOT_SOURCE_FINALIZER, MANAGER).await?;
    }
    Ok(Action::await_change())
}

/// Whether a volume is this provisioner's: made by it, or a static volume of its driver.
fn is_ours(pv: &PersistentVolume, driver: &str) -> bool {
    match annotation(pv, PROVISIONED_BY) {
        Some(by) => by == driver,
        None => pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .is_some_and(|c| c.driver == driver),
    }
}

/// `syncVolume`: keep the finalizer on bound volumes that must be deleted, and delete the
/// released ones: the driver's `DeleteVolume` (its data goes), the PersistentVolume, then
/// the finalizer.
async fn sync_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    if !is_ours(&pv, &ctx.driver) {
        return Ok(Action::await_change());
    }
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    let name = pv.name_any();
    let policy = reclaim_policy(&pv);
    let deleting = pv.metadata.deletion_timestamp.is_some();
    if policy == "Delete"
        && !deleting
        && volume_phase(&pv) == "Bound"
        && !has_finalizer(&*pv, PV_FINALIZER)
    {
        add_finalizer(&pvs, &*pv, PV_FINALIZER, MANAGER).await?;
        return Ok(Action::await_change());
    }
    if matches!(policy, "Retain" | "Recycle") && has_finalizer(&*pv, PV_FINALIZER) {
        remove_finalizer(&pvs, &*pv, PV_FINALIZER, MANAGER).await?;
        return Ok(Action::await_change());
    }
    // shouldDelete
    if (deleting && !has_finalizer(&*pv, PV_FINALIZER))
        || volume_phase(&pv) != "Released"
        || policy != "Delete"
    {
        return Ok(Action::await_change());
    }
    // DeleteVolume: the volume and what it held are gone; the object follows.
    match pvs.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
        Err(e) => {
            return Err(anyhow!(e)
                .context(format!("deleting PersistentVolume {name}"))
                .into());
        }
    }
    if let Some(fresh) = pvs
        .get_opt(&name)
        .await
        .with_context(|| format!("reading PersistentVolume {name}"))?
    {
        remove_finalizer(&pvs, &fresh, PV_FINALIZER, MANAGER).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn merge(base: &mut Value, over: &Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (b, o) => *b = o.clone(),
        }
    }

    fn claim(extra: Value) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                              "storageClassName": "fast"});
        merge(&mut spec, &extra);
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "apps", "uid": "u-1", "resourceVersion": "7"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn class(extra: Value) -> StorageClass {
        let mut c = json!({"metadata": {"name": "fast"}, "provisioner": "hostpath.csi.k8s.io"});
        merge(&mut c, &extra);
        serde_json::from_value(c).unwrap()
    }

    fn made(p: Provisioned) -> Value {
        match p {
            Provisioned::Volume(pv) => serde_json::to_value(*pv).unwrap(),
            Provisioned::Ignored => panic!("ignored"),
            Provisioned::Failed(m) => panic!("failed: {m}"),
        }
    }

    #[test]
    fn the_volume_is_written_as_csi_provisioner_writes_it() {
        let pv = made(volume_for(
            "hostpath.csi.k8s.io",
            "1-2-hostpath.csi.k8s.io",
            &claim(json!({})),
            &class(
                json!({"reclaimPolicy": "Retain", "mountOptions": ["noatime"],
                          "parameters": {"csi.storage.k8s.io/fstype": "ext4"}}),
            ),
            "pvc-u-1",
            Some("1.0.0#3".into()),
        ));
        assert_eq!(pv["metadata"]["name"], "pvc-u-1");
        assert_eq!(pv["metadata"]["finalizers"], json!([PV_FINALIZER]));
        let annotations = &pv["metadata"]["annotations"];
        assert_eq!(annotations[PROVISIONED_BY], "hostpath.csi.k8s.io");
        assert_eq!(annotations[DELETION_SECRET_NAME], "");
        assert_eq!(annotations[CONTENT_ANNOTATION], "1.0.0#3");
        let spec = &pv["spec"];
        assert_eq!(spec["capacity"]["storage"], "2Gi");
        assert_eq!(spec["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(spec["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(spec["volumeMode"], "Filesystem");
        assert_eq!(spec["storageClassName"], "fast");
        assert_eq!(spec["mountOptions"], json!(["noatime"]));
        assert_eq!(spec["csi"]["driver"], "hostpath.csi.k8s.io");
        assert_eq!(spec["csi"]["volumeHandle"], "vol-u-1");
        assert_eq!(spec["csi"]["fsType"], "ext4");
        assert_eq!(
            spec["csi"]["volumeAttributes"][IDENTITY_ATTRIBUTE],
            "1-2-hostpath.csi.k8s.io"
        );
        assert_eq!(
            spec["claimRef"],
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "apps",
                   "name": "data", "uid": "u-1", "resourceVersion": "7"})
        );
        assert!(
            spec["nodeAffinity"].is_null(),
            "no topology: no node affinity"
        );
    }

    #[test]
    fn a_new_volume_is_empty_and_block_volumes_have_no_filesystem() {
        let pv = made(volume_for(
            "d",
            "i",
            &claim(json!({"volumeMode": "Block"})),
            &class(json!({"parameters": {"fsType": "xfs"}})),
            "pvc-u-1",
            None,
        ));
        assert_eq!(
            crate::csi::writer_of(
                pv["metadata"]["annotations"][CONTENT_ANNOTATION]
                    .as_str()
                    .unwrap()
            ),
            "new"
        );
        assert_eq!(pv["spec"]["volumeMode"], "Block");
        assert!(pv["spec"]["csi"]["fsType"].is_null());
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    }

    #[test]
    fn claims_it_cannot_serve_are_refused_with_the_real_messages() {
        let refused = |p: Provisioned| match p {
            Provisioned::Failed(m) => m,
            _ => panic!("not refused"),
        };
        let selector = refused(volume_for(
            "d",
            "i",
            &claim(json!({"selector": {"matchLabels": {"a": "b"}}})),
            &class(json!({})),
            "pvc-u-1",
            None,
        ));
        assert_eq!(selector, "claim Selector is not supported");
        let both = refused(volume_for(
            "d",
            "i",
            &claim(json!({})),
            &class(json!({"parameters": {"fstype": "xfs", FS_TYPE: "ext4"}})),
            "pvc-u-1",
            None,
        ));
        assert!(
            both.starts_with("fstype specified in parameters with both"),
            "{both}"
        );
    }
}
