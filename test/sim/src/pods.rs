//! The kubelet, in short: pods start once their PVCs are bound, are ready unless their
//! image or version is declared failing, and take a configurable moment to terminate after
//! deletion. What the app writes to its volumes is the CSI node plugin's
//! ([`crate::csi::node`]), so that it happens on a real cluster's pods too.

use crate::conditions::now;
use crate::controller::{SimError, SimTask, run_controller};
use crate::faults::{Failures, NEVER_READY_ANNOTATION};
use crate::volumes::{claims_of, pods_woken_by_their_claims};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The finalizer that makes deleted pods linger for the termination delay, standing in for
/// the kubelet's graceful shutdown.
pub const TERMINATION_FINALIZER: &str = "sim.fluxgate.dev/termination";
const MANAGER: &str = "kubelet";

/// Options for [`PodSim`].
#[derive(Clone, Debug, Default)]
pub struct PodOptions {
    /// How long a deleted pod stays `Terminating`.
    pub termination_delay: Duration,
}

/// The running pod lifecycle sim; stops when dropped.
#[derive(Debug)]
pub struct PodSim {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    failures: Failures,
    options: PodOptions,
    /// When the sim first saw each pod (by UID) terminating: `deletionTimestamp` has
    /// only second precision, too coarse for sub-second delays.
    seen_deleted: Mutex<HashMap<String, Instant>>,
}

impl PodSim {
    /// Starts running pods in all namespaces.
    pub fn start(client: Client, failures: Failures, options: PodOptions) -> PodSim {
        let controller = pods_woken_by_their_claims(&client).reconcile_all_on(failures.changes());
        let ctx = Arc::new(Ctx {
            client,
            failures,
            options,
            seen_deleted: Mutex::default(),
        });
        PodSim {
            _task: run_controller("kubelet", controller, reconcile, ctx),
        }
    }
}

/// Whether a pod reports `Ready=True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    let finalizers = pod.finalizers().to_vec();
    let ours = finalizers.iter().any(|f| f == TERMINATION_FINALIZER);

    if pod.metadata.deletion_timestamp.is_some() {
        if !ours {
            return Ok(Action::await_change());
        }
        let uid = pod.uid().unwrap_or_default();
        let since = ctx
            .seen_deleted
            .lock()
            .map_err(|_| anyhow::anyhow!("termination clock lock poisoned"))?
            .entry(uid.clone())
            .or_insert_with(Instant::now)
            .elapsed();
        if since < ctx.options.termination_delay {
            if pod_ready(&pod) {
                // A terminating pod is no longer ready, as the endpoints controller sees it.
                write_status(&api, &name, &pod, "Running", false).await?;
            }
            return Ok(Action::requeue(ctx.options.termination_delay - since));
        }
        let rest: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != TERMINATION_FINALIZER)
            .collect();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
        )
        .await?;
        if let Ok(mut seen) = ctx.seen_deleted.lock() {
            seen.remove(&uid);
        }
        return Ok(Action::await_change());
    }
    if !ours {
        let mut all = finalizers.clone();
        all.push(TERMINATION_FINALIZER.to_owned());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": all}})),
        )
        .await?;
        return Ok(Action::await_change());
    }

    // Scheduling: every claim must exist and be bound (a WaitForFirstConsumer claim gets
    // bound once the scheduler has chosen this pod's node: see crate::scheduler).
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    for c in claims_of(&pod) {
        match pvcs.get_opt(&c).await? {
            Some(p) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") => {}
            _ => {
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Pending") {
                    write_status(&api, &name, &pod, "Pending", false).await?;
                }
                return Ok(Action::await_change());
            }
        }
    }
    let images: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.image.clone())
        .collect();
    let never = pod
        .annotations()
        .get(NEVER_READY_ANNOTATION)
        .is_some_and(|v| v == "true");
    let ready = !never && !images.iter().any(|i| ctx.failures.image_fails(i));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Running") || pod_ready(&pod) != ready {
        write_status(&api, &name, &pod, "Running", ready).await?;
    }
    Ok(Action::await_change())
}

async fn write_status(
    api: &Api<Pod>,
    name: &str,
    pod: &Pod,
    phase: &str,
    ready: bool,
) -> Result<(), SimError> {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(now);
    let flag = |b: bool| if b { "True" } else { "False" };
    let running = phase == "Running";
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": ready, "started": running,
                "restartCount": 0,
                "state": if running { json!({"running": {"startedAt": started}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) },
            })
        })
        .collect();
    let t = now();
    let status = json!({
        "phase": phase,
        "startTime": started,
        "hostIP": "10.0.0.1",
        "podIP": if running { json!("10.244.0.10") } else { Value::Null },
        "conditions": [
            {"type": "PodScheduled", "status": flag(running), "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": flag(ready), "lastTransitionTime": t},
            {"type": "Ready", "status": flag(ready), "lastTransitionTime": t},
        ],
        "containerStatuses": containers,
    });
    api.patch_status(
        name,
        &crate::kinds::manager(MANAGER),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}
