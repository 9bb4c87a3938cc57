//! CSI volume snapshots: the VolumeSnapshot(Class) views, the class for each PVC's driver,
//! deterministic snapshot names and labels, PVCs restored exactly as they were, and
//! retention.

pub mod ops;

use crate::api::PlannedVolume;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference,
    TypedObjectReference, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Annotation marking the default VolumeSnapshotClass of a driver.
pub const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// Label on snapshots: the ManagedApp they protect (a label value, shortened when the name
/// is longer: see [`crate::cluster::labels`]); the annotation of the same key holds the
/// full name.
pub const APP_LABEL: &str = "fluxgate.dev/app";
/// Label on snapshots: the UID of the ManagedApp they protect. Retention selects by it, so
/// two apps of the same name (in different namespaces, their volumes in one) never prune
/// each other's snapshots.
pub const APP_UID_LABEL: &str = "fluxgate.dev/app-uid";
/// Label on snapshots: why they were taken, [`PRE_UPGRADE`] or [`SAFETY`].
pub const PURPOSE_LABEL: &str = "fluxgate.dev/purpose";
/// An upgrade's snapshot of the data before it: what a rollback restores from.
pub const PRE_UPGRADE: &str = "pre-upgrade";
/// A rollback's snapshot of the data it replaces: never pruned.
pub const SAFETY: &str = "safety";
/// Label on snapshots: the name of the request that took them (shortened like the app's;
/// full name in the annotation of the same key).
pub const REQUEST_LABEL: &str = "fluxgate.dev/request";
/// Label on snapshots: the UID of the request that took them.
pub const REQUEST_UID_LABEL: &str = "fluxgate.dev/request-uid";
/// Label on snapshots: the PVC they are a snapshot of (shortened like the app's; full name
/// in the annotation of the same key).
pub const PVC_LABEL: &str = "fluxgate.dev/pvc";
/// Annotation on a restored PVC: the snapshot it was restored from (so it is never
/// restored twice).
pub const RESTORED_FROM_ANNOTATION: &str = "fluxgate.dev/restored-from";

/// Label on a PersistentVolume a rollback released: the request that deleted its PVC
/// (shortened like the app's; full name in the annotation of the same key).
pub const RELEASED_BY_LABEL: &str = "fluxgate.dev/released-by";
/// Label on a PersistentVolume a rollback released: the UID of that request.
pub const RELEASED_BY_UID_LABEL: &str = "fluxgate.dev/released-by-uid";
/// Annotation on a released PersistentVolume: the PVC it held the data of, `namespace/name`.
pub const RELEASED_CLAIM_ANNOTATION: &str = "fluxgate.dev/released-claim";
/// Annotation on a released PersistentVolume: its `persistentVolumeReclaimPolicy` before the
/// rollback set it to `Retain` (written once, so a repeat after a crash keeps the original).
pub const RECLAIM_POLICY_BEFORE_ANNOTATION: &str = "fluxgate.dev/reclaim-policy-before";

/// Where a snapshot's data comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// The PVC to snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// Everything else (pre-provisioned content).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The fields of a VolumeSnapshot that Fluxgate reads and writes.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    namespaced,
    status = "VolumeSnapshotStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// The volume to snapshot.
    pub source: VolumeSnapshotSource,
    /// The class to snapshot it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// A snapshotter error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshotError {
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Everything else (time).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The status fields of a VolumeSnapshot that Fluxgate reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// Whether the snapshot can be restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Smallest size a volume restored from it may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// The snapshotter's last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Everything else.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A VolumeSnapshotClass (cluster-scoped; not a CRD-derived type because its fields sit at
/// the top level, not under `spec`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The CSI driver it snapshots with.
    #[serde(default)]
    pub driver: String,
    /// `Delete` or `Retain`.
    #[serde(default)]
    pub deletion_policy: String,
}

/// Why no snapshot class fits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotClassError {
    /// The configured class does not exist or snapshots another driver.
    #[error(
        "VolumeSnapshotClass {class} (spec.snapshots.className) does not exist or is not for CSI driver {driver}; create it or fix the name"
    )]
    ConfiguredClassUnusable { class: String, driver: String },
    /// No class is marked default for the driver.
    #[error(
        "no VolumeSnapshotClass for CSI driver {driver} is marked default (annotation {DEFAULT_CLASS_ANNOTATION}: \"true\"); mark one as default or set spec.snapshots.className"
    )]
    NoDefault { driver: String },
    /// Several classes are marked default for the driver.
    #[error(
        "VolumeSnapshotClasses {classes:?} are all marked default for CSI driver {driver}; keep one default or set spec.snapshots.className"
    )]
    SeveralDefaults {
        driver: String,
        classes: Vec<String>,
    },
}

/// The VolumeSnapshotClass for a PVC on `driver`: `configured` if given (it must exist and
/// be for that driver), else the one class marked default for the driver.
pub fn class_for_driver(
    driver: &str,
    configured: Option<&str>,
    classes: &[VolumeSnapshotClass],
) -> Result<String, SnapshotClassError> {
    if let Some(name) = configured {
        return classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name) && c.driver == driver)
            .map(|_| name.to_owned())
            .ok_or_else(|| SnapshotClassError::ConfiguredClassUnusable {
                class: name.to_owned(),
                driver: driver.to_owned(),
            });
    }
    let defaults: Vec<String> = classes
        .iter()
        .filter(|c| c.driver == driver)
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .map(String::as_str)
                == Some("true")
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    match defaults.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(SnapshotClassError::NoDefault {
            driver: driver.to_owned(),
        }),
        _ => Err(SnapshotClassError::SeveralDefaults {
            driver: driver.to_owned(),
            classes: defaults,
        }),
    }
}

/// The deterministic name of the snapshot a request takes of a PVC:
/// `fluxgate-<request uid>-<pvc>`, shortened with a stable hash when it would be too long.
/// Deterministic so that a retry after a crash finds the snapshot instead of taking another.
pub fn snapshot_name(request_uid: &str, pvc: &str) -> String {
    const MAX: usize = 253;
    let full = format!("fluxgate-{request_uid}-{pvc}");
    if full.len() <= MAX {
        return full;
    }
    let hash = format!("{:016x}", fnv1a(full.as_bytes()));
    let keep = MAX - hash.len() - 1;
    let mut cut = full[..keep].trim_end_matches(['-', '.']).to_owned();
    cut.push('-');
    cut.push_str(&hash);
    cut
}

/// FNV-1a: tiny and, unlike std's hasher, guaranteed stable across Rust releases, which
/// names that must survive an operator upgrade need.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
    })
}

/// Whose snapshot it is and why: the ManagedApp (name and UID) and [`PRE_UPGRADE`] or
/// [`SAFETY`].
#[derive(Clone, Copy, Debug)]
pub struct SnapshotOwner<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub purpose: &'static str,
}

/// The VolumeSnapshot a request takes of a planned volume, labelled with app (name and
/// UID), purpose, request and PVC (label values within the API's limits, the full names in
/// annotations).
pub fn snapshot_for(
    volume: &PlannedVolume,
    app: &SnapshotOwner<'_>,
    request: &str,
    request_uid: &str,
    class: &str,
) -> VolumeSnapshot {
    let mut labels = BTreeMap::from([
        (REQUEST_UID_LABEL.to_owned(), request_uid.to_owned()),
        (APP_UID_LABEL.to_owned(), app.uid.to_owned()),
        (PURPOSE_LABEL.to_owned(), app.purpose.to_owned()),
    ]);
    let app = app.name;
    let mut annotations = BTreeMap::new();
    for (key, name) in [
        (APP_LABEL, app),
        (REQUEST_LABEL, request),
        (PVC_LABEL, volume.name.as_str()),
    ] {
        crate::cluster::labels::set_name(&mut labels, &mut annotations, key, name);
    }
    let mut snapshot = VolumeSnapshot::new(
        &snapshot_name(request_uid, &volume.name),
        VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: Some(volume.name.clone()),
                rest: Map::new(),
            },
            volume_snapshot_class_name: Some(class.to_owned()),
        },
    );
    snapshot.metadata.namespace = Some(volume.namespace.clone());
    snapshot.metadata.labels = Some(labels);
    snapshot.metadata.annotations = Some(annotations);
    snapshot
}

/// Annotation prefixes the system manages on PVCs; a restored PVC must not carry them over
/// (they describe the old volume's binding).
const SYSTEM_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/",
    "volume.beta.kubernetes.io/",
    "volume.kubernetes.io/",
    "kubectl.kubernetes.io/",
];

/// Everything needed to snapshot a PVC and to recreate it exactly: storage class, access
/// modes, volume mode, size, labels and user annotations, CSI driver and snapshot class.
pub fn capture_volume(
    claim: &PersistentVolumeClaim,
    csi_driver: Option<String>,
    snapshot_class_name: Option<String>,
) -> PlannedVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .or_else(|| {
            claim
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage").cloned())
        })
        .unwrap_or_else(|| Quantity("0".into()));
    let annotations = claim
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            k != RESTORED_FROM_ANNOTATION
                && k != RESTORED_LARGER_ANNOTATION
                && !SYSTEM_ANNOTATIONS.iter().any(|p| k.starts_with(p))
        })
        .collect();
    PlannedVolume {
        name: claim.metadata.name.clone().unwrap_or_default(),
        namespace: claim.metadata.namespace.clone().unwrap_or_default(),
        storage_class_name: spec.storage_class_name,
        access_modes: spec.access_modes.unwrap_or_default(),
        volume_mode: spec.volume_mode,
        size,
        labels: claim.metadata.labels.clone().unwrap_or_default(),
        annotations,
        csi_driver,
        snapshot_class_name,
        restore_from: None,
        restore_from_handle: None,
    }
}

/// Annotation on a restored PVC that had to be made larger than its manifest asks for (the
/// snapshot's restore size is above the captured request): what it asks, what it got, and
/// what that means for the next Flux apply.
pub const RESTORED_LARGER_ANNOTATION: &str = "fluxgate.dev/restored-larger";
/// kustomize-controller's annotation that makes it leave an object in the cluster as it is
/// (fluxcd/kustomize-controller v1.9.4 `ExclusionSelector`, matched on the in-cluster
/// object too by fluxcd/pkg/ssa v0.76.1 `shouldSkipApply`).
pub const KUSTOMIZE_SSA_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/ssa";
/// kustomize-controller labels every object it applies with its Kustomization's name.
const KUSTOMIZE_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";

/// The PVC to recreate from `snapshot`: the captured spec (storage class, access modes,
/// volume mode, labels, annotations), `dataSource` and `dataSourceRef` both naming the
/// snapshot (older clusters and some provisioners read only one), and an annotation naming
/// the snapshot it came from. Its size is the captured request, or the snapshot's restore
/// size when that is larger (a provisioner refuses a volume smaller than its source).
///
/// A larger claim cannot be applied back to the manifest's request: the API server refuses
/// a bound claim's request below its capacity (422, `field can not be less than
/// status.capacity`; ValidatePersistentVolumeClaimUpdate, k8s.io/kubernetes v1.36.3), and
/// fluxcd/pkg/ssa counts that as an immutable-field error — the Kustomization fails, or
/// with `force` deletes and recreates the claim empty. So a larger claim that
/// kustomize-controller applies is marked for it to leave alone (`ssa: Ignore`), and every
/// larger claim says so in [`RESTORED_LARGER_ANNOTATION`] for the person to raise the
/// request in Git (helm-controller has no such switch: its upgrade fails until then).
pub fn restored_claim(
    volume: &PlannedVolume,
    snapshot: &str,
    restore_size: Option<&Quantity>,
) -> PersistentVolumeClaim {
    let mut annotations = volume.annotations.clone();
    annotations.insert(RESTORED_FROM_ANNOTATION.to_owned(), snapshot.to_owned());
    let size = match restore_size {
        Some(restore)
            if quantity_bytes(restore).unwrap_or(0) > quantity_bytes(&volume.size).unwrap_or(0) =>
        {
            let by_kustomize = volume.labels.contains_key(KUSTOMIZE_NAME_LABEL);
            let effect = if by_kustomize {
                annotations.insert(KUSTOMIZE_SSA_ANNOTATION.to_owned(), "Ignore".to_owned());
                format!(
                    "kustomize-controller leaves it alone ({KUSTOMIZE_SSA_ANNOTATION}: Ignore) until Git asks for at least {} and the annotation is removed",
                    restore.0
                )
            } else {
                format!(
                    "an apply of the manifest's {} is refused by the API server until Git asks for at least {}",
                    volume.size.0, restore.0
                )
            };
            annotations.insert(
                RESTORED_LARGER_ANNOTATION.to_owned(),
                format!(
                    "restored at {} (the snapshot's restore size), larger than the {} its manifest asks for: {effect}",
                    restore.0, volume.size.0
                ),
            );
            restore.clone()
        }
        _ => volume.size.clone(),
    };
    let source = TypedLocalObjectReference {
        api_group: Some("snapshot.storage.k8s.io".to_owned()),
        kind: "VolumeSnapshot".to_owned(),
        name: snapshot.to_owned(),
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(volume.name.clone()),
            namespace: Some(volume.namespace.clone()),
            labels: (!volume.labels.is_empty()).then(|| volume.labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: volume.storage_class_name.clone(),
            access_modes: (!volume.access_modes.is_empty()).then(|| volume.access_modes.clone()),
            volume_mode: volume.volume_mode.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                ..Default::default()
            }),
            data_source_ref: Some(TypedObjectReference {
                api_group: source.api_group.clone(),
                kind: source.kind.clone(),
                name: source.name.clone(),
                namespace: None,
            }),
            data_source: Some(source),
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether a PVC was already restored from `snapshot` (so a retry does not restore twice).
pub fn restored_from(claim: &PersistentVolumeClaim, snapshot: &str) -> bool {
    claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTORED_FROM_ANNOTATION))
        .is_some_and(|s| s == snapshot)
}

/// Why a VolumeSnapshot cannot be restored into PVC `pvc` (`None` when it can): it must
/// exist, not be being deleted (the CSI external-provisioner refuses such a source), be
/// `readyToUse` with no `error`, have been taken of that PVC and — when the upgrade recorded
/// the driver's handle of its cut (`expected`) — still be that cut: external-snapshotter's
/// snapshot-controller (v8.6.0, `syncUnreadySnapshot`) answers a bound content gone
/// missing by creating a new one, so the same VolumeSnapshot becomes ready again holding
/// the PVC's data of that later moment (and keeps its old `creationTime`:
/// `updateSnapshotStatus` sets it only once). `found` is the snapshot as just read (`None`:
/// gone), `handle` the `status.snapshotHandle` of the content it is bound to now (`None`:
/// not bound, or the content is gone). The answer names the snapshot and says why, for a
/// person reading why a rollback stopped.
pub fn unusable_for_restore(
    found: Option<&VolumeSnapshot>,
    handle: Option<&str>,
    namespace: &str,
    name: &str,
    pvc: &str,
    expected: Option<&str>,
) -> Option<String> {
    let what = format!("VolumeSnapshot {namespace}/{name} (of PVC {pvc})");
    let Some(snapshot) = found else {
        return Some(format!("{what} is gone"));
    };
    if snapshot.metadata.deletion_timestamp.is_some() {
        return Some(format!("{what} is being deleted"));
    }
    let status = snapshot.status.clone().unwrap_or_default();
    if let Some(error) = status.error.as_ref().and_then(|e| e.message.as_deref()) {
        return Some(format!("{what} reports an error: {error}"));
    }
    if status.ready_to_use != Some(true) {
        return Some(format!("{what} is not ready to use"));
    }
    match (expected, handle) {
        (Some(_), None) => {
            return Some(format!("{what} has lost its VolumeSnapshotContent"));
        }
        (Some(expected), Some(handle)) if expected != handle => {
            return Some(format!(
                "{what} was cut again (driver handle {handle}; the upgrade's cut was {expected}): its \
                 content was lost and it now holds the PVC's data of a later moment"
            ));
        }
        _ => {}
    }
    match snapshot.spec.source.persistent_volume_claim_name.as_deref() {
        Some(source) if source == pvc => None,
        Some(source) => Some(format!("{what} was taken of PVC {source}, not of {pvc}")),
        None => Some(format!(
            "{what} was not taken of a PVC (it names pre-provisioned content)"
        )),
    }
}

/// The name of the VolumeSnapshotContent a snapshot is bound to.
pub fn bound_content(snapshot: &VolumeSnapshot) -> Option<&str> {
    snapshot
        .status
        .as_ref()?
        .rest
        .get("boundVolumeSnapshotContentName")?
        .as_str()
}

/// Whether a StorageClass binds its volumes only when a pod uses them; a restore must then
/// not wait for `Bound`.
pub fn binds_on_first_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

/// A Kubernetes quantity in bytes (`10Gi`, `500M`, `1e9`, `1073741824`); None when it is
/// not a size this parser understands. Fractions are rounded down.
pub fn quantity_bytes(quantity: &Quantity) -> Option<u128> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        exponent => 10u128.checked_pow(exponent.strip_prefix(['e', 'E'])?.parse().ok()?)?,
    };
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    whole
        .checked_mul(multiplier)?
        .checked_add(fraction.checked_mul(multiplier)? / scale)
}

/// One of an app's snapshots, for retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedSnapshot {
    /// Name of the VolumeSnapshot.
    pub name: String,
    /// The PVC it belongs to.
    pub pvc: String,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// A rollback may still need it (the app's last upgrade took it, or a rollback not
    /// finished restores from it): counted, never deleted.
    pub needed: bool,
}

/// Whose snapshots retention looks at and which it must keep besides the newest.
#[derive(Clone, Debug)]
pub struct RetentionScope<'a> {
    /// The ManagedApp's UID: only snapshots labelled with it are considered.
    pub app_uid: &'a str,
    /// The UID of the app's last upgrade (the one that just succeeded): a rollback of it
    /// restores from its snapshots.
    pub last_upgrade_uid: &'a str,
    /// What rollbacks not finished restore from.
    pub restoring: PendingRestores,
    /// How many of each PVC's snapshots to keep.
    pub max_count: usize,
    /// How old a snapshot may grow, in seconds.
    pub max_age_secs: Option<i64>,
}

/// The snapshots rollbacks not finished yet restore from.
#[derive(Clone, Debug, Default)]
pub struct PendingRestores {
    /// `(namespace, name)` of each snapshot named in an admitted rollback's plan.
    pub snapshots: std::collections::BTreeSet<(String, String)>,
    /// Names of the upgrades that rollbacks not yet admitted undo.
    pub upgrades: std::collections::BTreeSet<String>,
}

impl RetentionScope<'_> {
    /// Whether retention may look at `snapshot` at all, and if so, as a [`RetainedSnapshot`]
    /// (`needed` when a rollback may restore from it). Safety snapshots and other apps'
    /// snapshots are left out; so is one whose PVC cannot be told.
    pub fn candidate(&self, snapshot: &VolumeSnapshot) -> Option<RetainedSnapshot> {
        let labels = snapshot.metadata.labels.as_ref()?;
        let annotations = snapshot.metadata.annotations.as_ref();
        if labels.get(APP_UID_LABEL).map(String::as_str) != Some(self.app_uid)
            || labels.get(PURPOSE_LABEL).map(String::as_str) == Some(SAFETY)
        {
            return None;
        }
        let name = snapshot.metadata.name.clone()?;
        let namespace = snapshot.metadata.namespace.clone().unwrap_or_default();
        let pvc = snapshot
            .spec
            .source
            .persistent_volume_claim_name
            .clone()
            .or_else(|| annotations.and_then(|a| a.get(PVC_LABEL)).cloned())
            .or_else(|| labels.get(PVC_LABEL).cloned())?;
        let of_upgrade = |upgrade: &str| {
            crate::cluster::labels::names(Some(labels), annotations, REQUEST_LABEL, upgrade)
        };
        let needed = labels.get(REQUEST_UID_LABEL).map(String::as_str)
            == Some(self.last_upgrade_uid)
            || self
                .restoring
                .snapshots
                .contains(&(namespace, name.clone()))
            || self.restoring.upgrades.iter().any(|u| of_upgrade(u));
        Some(RetainedSnapshot {
            name,
            pvc,
            created: snapshot.metadata.creation_timestamp.as_ref()?.0.as_second(),
            needed,
        })
    }
}

/// Whether a snapshot is not fit to keep for its request: it reports an error or is not
/// ready to use (a request ending leaves it pinning its PVC otherwise).
pub fn unready(snapshot: &VolumeSnapshot) -> bool {
    let status = snapshot.status.as_ref();
    status.and_then(|s| s.ready_to_use) != Some(true)
        || status.and_then(|s| s.error.as_ref()).is_some()
}

/// The snapshots retention deletes: per PVC, all but the newest `max_count`, and those
/// older than `max_age_secs` — but never a PVC's newest snapshot, nor one still needed.
pub fn expired_snapshots(
    snapshots: &[RetainedSnapshot],
    max_count: usize,
    max_age_secs: Option<i64>,
    now: i64,
) -> Vec<String> {
    let mut by_pvc: BTreeMap<&str, Vec<&RetainedSnapshot>> = BTreeMap::new();
    for snapshot in snapshots {
        by_pvc.entry(&snapshot.pvc).or_default().push(snapshot);
    }
    let mut expired = Vec::new();
    for mut list in by_pvc.into_values() {
        list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
        for (index, snapshot) in list.iter().enumerate().skip(1) {
            let too_many = index >= max_count.max(1);
            let too_old = max_age_secs.is_some_and(|age| now - snapshot.created > age);
            if (too_many || too_old) && !snapshot.needed {
                expired.push(snapshot.name.clone());
            }
        }
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, driver: &str, default: bool) -> VolumeSnapshotClass {
        serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: default.to_string()}},
            "driver": driver, "deletionPolicy": "Delete"
        }))
        .unwrap()
    }

    fn volume() -> PlannedVolume {
        PlannedVolume {
            name: "data-db-0".into(),
            namespace: "apps".into(),
            storage_class_name: Some("fast".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: Some("Filesystem".into()),
            size: Quantity("10Gi".into()),
            labels: BTreeMap::from([("app".into(), "db".into())]),
            annotations: BTreeMap::from([("backup.example.com/tier".into(), "gold".into())]),
            csi_driver: Some("hostpath.csi.k8s.io".into()),
            snapshot_class_name: Some("csi-hostpath".into()),
            restore_from: None,
            restore_from_handle: None,
        }
    }

    fn taken(of: &str, status: serde_json::Value) -> VolumeSnapshot {
        serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "fluxgate-u1-data-db-0", "namespace": "apps"},
            "spec": {"source": {"persistentVolumeClaimName": of}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_snapshot_is_restored_from_only_when_it_is_ready_clean_and_of_that_pvc() {
        let check = |found: Option<&VolumeSnapshot>, handle: Option<&str>| {
            unusable_for_restore(
                found,
                handle,
                "apps",
                "fluxgate-u1-data-db-0",
                "data-db-0",
                Some("snap-1"),
            )
        };
        let why = |s: Option<String>| s.expect("refused");
        let ready = taken(
            "data-db-0",
            json!({"readyToUse": true, "restoreSize": "1Gi"}),
        );
        assert_eq!(check(Some(&ready), Some("snap-1")), None);
        assert_eq!(
            why(check(None, None)),
            "VolumeSnapshot apps/fluxgate-u1-data-db-0 (of PVC data-db-0) is gone"
        );
        // The snapshot-controller's word when the content went away (external-snapshotter
        // v8.6.0 syncReadySnapshot): readyToUse false and the error.
        let lost = taken(
            "data-db-0",
            json!({"readyToUse": false, "error": {"message": "VolumeSnapshotContent is missing"}}),
        );
        assert!(
            why(check(Some(&lost), None))
                .ends_with("reports an error: VolumeSnapshotContent is missing")
        );
        // ... and then a new content, cut from the PVC as it is now: ready, yet other data.
        assert!(
            why(check(Some(&ready), Some("snap-2")))
                .contains("was cut again (driver handle snap-2; the upgrade's cut was snap-1)")
        );
        assert!(why(check(Some(&ready), None)).ends_with("has lost its VolumeSnapshotContent"));
        // A record from before handles were kept checks the rest only.
        assert_eq!(
            unusable_for_restore(
                Some(&ready),
                Some("snap-2"),
                "apps",
                "fluxgate-u1-data-db-0",
                "data-db-0",
                None
            ),
            None
        );
        let erred_yet_ready = taken(
            "data-db-0",
            json!({"readyToUse": true, "error": {"message": "quota exceeded"}}),
        );
        assert!(why(check(Some(&erred_yet_ready), Some("snap-1"))).contains("quota exceeded"));
        let cutting = taken("data-db-0", json!({"readyToUse": false}));
        assert!(why(check(Some(&cutting), None)).ends_with("is not ready to use"));
        let other = taken("data-db-1", json!({"readyToUse": true}));
        assert!(
            why(check(Some(&other), Some("snap-1")))
                .ends_with("was taken of PVC data-db-1, not of data-db-0")
        );
        let mut going = ready.clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(why(check(Some(&going), Some("snap-1"))).ends_with("is being deleted"));
    }

    #[test]
    fn the_default_class_of_the_driver_is_chosen() {
        let classes = vec![
            class("a", "ebs.csi.aws.com", true),
            class("b", "hostpath.csi.k8s.io", true),
            class("c", "hostpath.csi.k8s.io", false),
        ];
        assert_eq!(
            class_for_driver("hostpath.csi.k8s.io", None, &classes),
            Ok("b".into())
        );
        assert_eq!(
            class_for_driver("hostpath.csi.k8s.io", Some("c"), &classes),
            Ok("c".into())
        );
        let err = class_for_driver("hostpath.csi.k8s.io", Some("a"), &classes).unwrap_err();
        assert!(
            err.to_string().contains("spec.snapshots.className"),
            "{err}"
        );
        let err = class_for_driver("rbd.csi.ceph.com", None, &classes).unwrap_err();
        assert!(
            err.to_string().contains("rbd.csi.ceph.com")
                && err.to_string().contains(DEFAULT_CLASS_ANNOTATION),
            "{err}"
        );
        let two = vec![class("x", "d", true), class("y", "d", true)];
        assert!(matches!(
            class_for_driver("d", None, &two),
            Err(SnapshotClassError::SeveralDefaults { .. })
        ));
    }

    #[test]
    fn snapshot_names_are_deterministic_and_bounded() {
        let uid = "2f1c3a4b-0000-4000-8000-123456789abc";
        assert_eq!(
            snapshot_name(uid, "data-db-0"),
            format!("fluxgate-{uid}-data-db-0")
        );
        let long_pvc = "p".repeat(240);
        let name = snapshot_name(uid, &long_pvc);
        assert!(name.len() <= 253, "{}", name.len());
        assert_eq!(name, snapshot_name(uid, &long_pvc));
        assert_ne!(name, snapshot_name(uid, &format!("{long_pvc}x")));
    }

    #[test]
    fn long_names_are_shortened_in_labels_and_kept_in_annotations() {
        let app = "a".repeat(60);
        let request = format!("{app}-upgrade-to-1-5-0");
        let volume = PlannedVolume {
            name: format!("postgres-database-storage-{app}-0"),
            ..volume()
        };
        let owner = SnapshotOwner {
            name: &app,
            uid: "app-uid",
            purpose: PRE_UPGRADE,
        };
        let snapshot = snapshot_for(&volume, &owner, &request, "uid-1", "csi-hostpath");
        let labels = snapshot.metadata.labels.clone().unwrap();
        let annotations = snapshot.metadata.annotations.clone().unwrap();
        for (key, full) in [
            (APP_LABEL, app.as_str()),
            (REQUEST_LABEL, request.as_str()),
            (PVC_LABEL, volume.name.as_str()),
        ] {
            assert!(
                crate::cluster::labels::is_label_value(&labels[key]),
                "{key}"
            );
            assert_eq!(annotations[key], full);
            assert!(crate::cluster::labels::names(
                Some(&labels),
                Some(&annotations),
                key,
                full
            ));
        }
        assert_eq!(labels[APP_LABEL], app, "60 characters fit");
        assert_ne!(labels[REQUEST_LABEL], request);
    }

    #[test]
    fn a_snapshot_is_labelled_with_app_request_and_pvc() {
        let owner = SnapshotOwner {
            name: "db",
            uid: "app-uid",
            purpose: SAFETY,
        };
        let snapshot = snapshot_for(&volume(), &owner, "db-1-5-0", "uid-1", "csi-hostpath");
        let labels = snapshot.metadata.labels.unwrap();
        assert_eq!(labels[APP_LABEL], "db");
        assert_eq!(labels[APP_UID_LABEL], "app-uid");
        assert_eq!(labels[PURPOSE_LABEL], "safety");
        assert_eq!(labels[REQUEST_UID_LABEL], "uid-1");
        assert_eq!(labels[PVC_LABEL], "data-db-0");
        assert_eq!(snapshot.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(
            snapshot.spec.source.persistent_volume_claim_name.as_deref(),
            Some("data-db-0")
        );
    }

    #[test]
    fn a_restored_claim_keeps_class_labels_modes_and_the_larger_size() {
        let claim = restored_claim(&volume(), "snap-1", Some(&Quantity("12Gi".into())));
        let spec = claim.spec.as_ref().unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_owned()][..])
        );
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("12Gi".into())
        );
        assert_eq!(spec.data_source_ref.as_ref().unwrap().name, "snap-1");
        let source = spec.data_source.as_ref().unwrap();
        assert_eq!(
            (
                source.api_group.as_deref(),
                source.kind.as_str(),
                source.name.as_str()
            ),
            (Some("snapshot.storage.k8s.io"), "VolumeSnapshot", "snap-1"),
            "dataSource too, equal to dataSourceRef as the API server requires"
        );
        assert_eq!(claim.metadata.labels.as_ref().unwrap()["app"], "db");
        let annotations = claim.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["backup.example.com/tier"], "gold");
        assert!(
            annotations[RESTORED_LARGER_ANNOTATION]
                .contains("restored at 12Gi (the snapshot's restore size), larger than the 10Gi"),
            "{annotations:?}"
        );
        assert!(
            !annotations.contains_key(KUSTOMIZE_SSA_ANNOTATION),
            "not applied by kustomize-controller"
        );
        // One that kustomize-controller applies is left to it no more, until Git catches up.
        let mut applied = volume();
        applied
            .labels
            .insert(KUSTOMIZE_NAME_LABEL.into(), "apps".into());
        let kustomized = restored_claim(&applied, "snap-1", Some(&Quantity("12Gi".into())));
        let annotations = kustomized.metadata.annotations.unwrap();
        assert_eq!(annotations[KUSTOMIZE_SSA_ANNOTATION], "Ignore");
        assert!(restored_from(&claim, "snap-1") && !restored_from(&claim, "snap-2"));
        let smaller = restored_claim(&volume(), "snap-1", Some(&Quantity("5Gi".into())));
        assert!(
            !smaller
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(RESTORED_LARGER_ANNOTATION)
        );
        assert_eq!(
            smaller.spec.unwrap().resources.unwrap().requests.unwrap()["storage"],
            Quantity("10Gi".into()),
            "the manifest's request, so the next apply changes nothing"
        );
    }

    #[test]
    fn a_captured_claim_restores_to_the_same_spec_without_binding_leftovers() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data-db-0", "namespace": "apps", "labels": {"app": "db"},
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/storage-provisioner": "x",
                                         "backup.example.com/tier": "gold", RESTORED_FROM_ANNOTATION: "old-snap"}},
            "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                     "volumeName": "pv-1", "resources": {"requests": {"storage": "10Gi"}}}
        }))
        .unwrap();
        let volume = capture_volume(
            &claim,
            Some("hostpath.csi.k8s.io".into()),
            Some("snap".into()),
        );
        let expected = PlannedVolume {
            snapshot_class_name: Some("snap".into()),
            ..self::volume()
        };
        assert_eq!(
            volume, expected,
            "system annotations and the old restored-from are dropped"
        );
        let restored = restored_claim(&volume, "snap-2", None);
        let spec = restored.spec.unwrap();
        assert_eq!(spec.volume_name, None, "a restore binds a new volume");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            restored.metadata.annotations.unwrap()[RESTORED_FROM_ANNOTATION],
            "snap-2"
        );
    }

    #[test]
    fn quantities_parse_to_bytes() {
        for (text, bytes) in [
            ("10Gi", 10u128 << 30),
            ("1.5Gi", 3 << 29),
            ("500M", 500_000_000),
            ("1e3", 1000),
            ("1024", 1024),
            ("0.5Ki", 512),
        ] {
            assert_eq!(
                quantity_bytes(&Quantity(text.into())),
                Some(bytes),
                "{text}"
            );
        }
        assert_eq!(quantity_bytes(&Quantity("lots".into())), None);
        assert_eq!(quantity_bytes(&Quantity("".into())), None);
    }

    #[test]
    fn retention_keeps_the_newest_per_pvc() {
        let snap = |name: &str, pvc: &str, created| RetainedSnapshot {
            name: name.into(),
            pvc: pvc.into(),
            created,
            needed: false,
        };
        let all = vec![
            snap("a1", "a", 100),
            snap("a2", "a", 200),
            snap("a3", "a", 300),
            snap("a4", "a", 400),
            snap("b1", "b", 10),
        ];
        let mut expired = expired_snapshots(&all, 3, None, 1000);
        expired.sort();
        assert_eq!(expired, vec!["a1"]);
        let mut expired = expired_snapshots(&all, 10, Some(650), 1000);
        expired.sort();
        assert_eq!(
            expired,
            vec!["a1", "a2", "a3"],
            "old ones go, but b1 is b's newest and stays"
        );
        // One a rollback may still need stays, and still counts.
        let mut needed = all.clone();
        needed[1].needed = true;
        let mut expired = expired_snapshots(&needed, 2, None, 1000);
        expired.sort();
        assert_eq!(expired, vec!["a1"], "a2 is needed, a1 beyond the count");
        let mut expired = expired_snapshots(&needed, 10, Some(650), 1000);
        expired.sort();
        assert_eq!(expired, vec!["a1", "a3"]);
    }
}
