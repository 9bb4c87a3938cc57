//! The CSI driver stand-in: the parts of a cluster's storage that come with a CSI driver
//! rather than with Kubernetes — its external-provisioner, its csi-snapshotter sidecar and
//! its node plugin — for the driver `hostpath.csi.k8s.io` ([`crate::seed::DRIVER`]). They
//! run beside kube-controller-manager's PV controller and external-snapshotter's
//! snapshot-controller, real ones or the sims of [`crate::volumes`] and
//! [`crate::snapshots`], and talk to them only through the API, as the real ones do.
//!
//! - [`provisioner`]: makes a PersistentVolume for each claim the PV controller hands to
//!   the driver, empty or restored from a VolumeSnapshot, and deletes released ones;
//! - [`snapshotter`]: cuts the snapshot of each VolumeSnapshotContent the snapshot-controller
//!   makes for the driver, and deletes it;
//! - [`node`]: the app on a running pod writing to the volumes it mounts.
//!
//! # Content tokens: what a volume holds
//! The driver's "data" is a token `<writer>#<n>` with a process-wide unique `n`
//! ([`next_token`]). A volume keeps its token on its PersistentVolume and a snapshot on its
//! VolumeSnapshotContent (annotation [`CONTENT_ANNOTATION`]), so the data lives where a
//! real driver's does: it survives the claim (a retained volume keeps it), a snapshot
//! keeps what the volume held when it was cut, and goes with the volume or snapshot when
//! the driver deletes that. A new volume holds `new#n`; a restored one starts with its
//! snapshot's token; a running pod whose image tag differs from the last writer writes
//! `<tag>#n`. Read them with [`content_token`] (a claim's volume), [`volume_token`] (a
//! PersistentVolume, also one whose claim is gone) and [`snapshot_token`].

pub mod node;
pub mod provisioner;
pub mod snapshotter;

use crate::faults::Failures;
use crate::kinds::{annotation, dyn_api, volume_snapshot, volume_snapshot_content};
use anyhow::Context;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::DynamicObject;
use kube::{Api, Client, Resource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the driver keeps what a volume (on its PersistentVolume) or a snapshot (on its
/// VolumeSnapshotContent) holds.
pub const CONTENT_ANNOTATION: &str = "sim.fluxgate.dev/content";

static TOKENS: AtomicU64 = AtomicU64::new(1);

/// A fresh content token written by `writer`.
pub fn next_token(writer: &str) -> String {
    format!("{writer}#{}", TOKENS.fetch_add(1, Ordering::Relaxed))
}

/// Who wrote a token last (`new` for an empty volume).
pub fn writer_of(token: &str) -> &str {
    token.rsplit_once('#').map_or(token, |(w, _)| w)
}

/// The token kept on a PersistentVolume or VolumeSnapshotContent.
pub fn stored_token<K: Resource>(obj: &K) -> Option<String> {
    annotation(obj, CONTENT_ANNOTATION).map(str::to_owned)
}

/// What the volume of claim `namespace/name` holds: the token of the PersistentVolume it
/// is bound to; `None` while it is bound to none (or its volume is gone).
pub async fn content_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading PVC {namespace}/{name}"))?;
    let Some(volume) = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .with_context(|| format!("reading PersistentVolume {volume} of PVC {namespace}/{name}"))?;
    Ok(pv.as_ref().and_then(stored_token))
}

/// What PersistentVolume `name` holds (also after its claim is gone, for a retained one).
pub async fn volume_token(client: &Client, name: &str) -> anyhow::Result<Option<String>> {
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(name)
        .await
        .with_context(|| format!("reading PersistentVolume {name}"))?;
    Ok(stored_token(&pv))
}

/// What VolumeSnapshot `namespace/name` recorded when it was cut: the token of the
/// VolumeSnapshotContent it is bound to; `None` before it is bound or cut.
pub async fn snapshot_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let vs = dyn_api(client, &volume_snapshot(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading VolumeSnapshot {namespace}/{name}"))?;
    let Some(content) = vs.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    let content = Api::<DynamicObject>::all_with(client.clone(), &volume_snapshot_content())
        .get_opt(&content)
        .await
        .with_context(|| {
            format!("reading VolumeSnapshotContent {content} of VolumeSnapshot {namespace}/{name}")
        })?;
    Ok(content.as_ref().and_then(stored_token))
}

/// Options for [`CsiDriver`].
#[derive(Clone, Debug)]
pub struct CsiOptions {
    /// The driver's name: the `provisioner` of its StorageClasses and the `driver` of its
    /// VolumeSnapshotClasses (default [`crate::seed::DRIVER`]).
    pub driver: String,
    /// Time from a snapshot being cut to `readyToUse` (default: ready when cut).
    pub snapshot_ready_delay: Duration,
}

impl Default for CsiOptions {
    fn default() -> Self {
        CsiOptions {
            driver: crate::seed::DRIVER.to_owned(),
            snapshot_ready_delay: Duration::ZERO,
        }
    }
}

/// The driver with its provisioner, snapshotter and node plugin, running; stops when
/// dropped.
#[derive(Debug)]
pub struct CsiDriver {
    pub provisioner: provisioner::Provisioner,
    pub snapshotter: snapshotter::Snapshotter,
    pub node: node::NodePlugin,
}

impl CsiDriver {
    /// Starts every part of the driver against `client`. Snapshots named in `failures`
    /// (or annotated `sim.fluxgate.dev/snapshot-error`) fail in the driver.
    pub fn start(client: Client, failures: Failures, options: CsiOptions) -> CsiDriver {
        CsiDriver {
            provisioner: provisioner::Provisioner::start(client.clone(), options.driver.clone()),
            snapshotter: snapshotter::Snapshotter::start(
                client.clone(),
                failures,
                options.driver.clone(),
                options.snapshot_ready_delay,
            ),
            node: node::NodePlugin::start(client, options.driver),
        }
    }
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
