//! The driver's node plugin with the app on top: a running pod writes to the volumes of
//! the driver it mounts. Its first container's image tag is the writer; when the volume's
//! last writer is another, the volume now holds a new token `<tag>#n`. So a new version
//! leaves its mark on the data, a restore followed by the old version does not, and a
//! failed version that runs (ready or not) has written too — as real apps migrate data on
//! start.
//!
//! It watches pods wherever they run: kubesim's pods made Running by [`crate::pods`], or a
//! real cluster's made Running by KWOK on a fake node. Terminating pods write nothing new.

use crate::controller::{SimError, SimTask, run_controller};
use crate::csi::{CONTENT_ANNOTATION, next_token, stored_token, writer_of};
use crate::kinds::manager;
use crate::kustomize_build::split_image;
use crate::volumes::{claims_of, pods_woken_by_their_claims};
use anyhow::Context;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;

const MANAGER: &str = "hostpath-csi-node";

/// The running node plugin; stops when dropped.
#[derive(Debug)]
pub struct NodePlugin {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    driver: String,
}

impl NodePlugin {
    /// Starts writing for the running pods that mount `driver`'s volumes.
    pub fn start(client: Client, driver: String) -> NodePlugin {
        let controller = pods_woken_by_their_claims(&client);
        NodePlugin {
            _task: run_controller(
                "hostpath-csi-node",
                controller,
                write,
                Arc::new(Ctx { client, driver }),
            ),
        }
    }
}

/// The tag a pod's app writes as: its first container's image tag (`latest` without one).
pub fn writer_of_pod(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .map(|i| split_image(i).1.unwrap_or("latest").to_owned())
        .unwrap_or_else(|| "latest".to_owned())
}

async fn write(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if !running || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pod.namespace().unwrap_or_default();
    let writer = writer_of_pod(&pod);
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    for claim in claims_of(&pod) {
        let Some(volume) = claims
            .get_opt(&claim)
            .await
            .with_context(|| format!("reading PVC {ns}/{claim}"))?
            .and_then(|c| c.spec?.volume_name)
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        let Some(pv) = pvs
            .get_opt(&volume)
            .await
            .with_context(|| format!("reading PersistentVolume {volume}"))?
        else {
            continue;
        };
        let ours = pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .is_some_and(|c| c.driver == ctx.driver);
        if !ours || stored_token(&pv).as_deref().map(writer_of) == Some(writer.as_str()) {
            continue;
        }
        pvs.patch(
            &volume,
            &manager(MANAGER),
            &Patch::Merge(
                json!({"metadata": {"annotations": {CONTENT_ANNOTATION: next_token(&writer)}}}),
            ),
        )
        .await
        .with_context(|| {
            format!(
                "pod {ns}/{} writing to PersistentVolume {volume}",
                pod.name_any()
            )
        })?;
    }
    Ok(Action::await_change())
}
