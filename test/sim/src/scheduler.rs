//! kube-scheduler's volume binding, the part storage waits on: a pod whose claims all
//! exist, some of a `WaitForFirstConsumer` class and not bound yet, has a node chosen for
//! it, and each such claim is annotated `volume.kubernetes.io/selected-node` with that node
//! (k8s.io/kubernetes v1.36.3 `pkg/scheduler/framework/plugins/volumebinding`, PreBind).
//! The PV controller and the provisioner take it from there.
//!
//! kubesim has no nodes and lets no pod be bound to one: every pod "runs" on [`NODE_NAME`],
//! and nothing else of scheduling is simulated (the pod sim starts a pod once its claims
//! are bound, as the scheduler binds it only then).

use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::{annotation, manager};
use crate::volumes::{
    SELECTED_NODE, binds_late, claims_of, pods_woken_by_their_claims, storage_class,
};
use anyhow::Context;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;

/// The node every simulated pod is placed on.
pub const NODE_NAME: &str = "sim-node-0";
const MANAGER: &str = "kube-scheduler";

/// The running scheduler sim; stops when dropped.
#[derive(Debug)]
pub struct Scheduler {
    _task: SimTask,
}

struct Ctx {
    client: Client,
}

impl Scheduler {
    /// Starts placing pods in all namespaces.
    pub fn start(client: Client) -> Scheduler {
        let controller = pods_woken_by_their_claims(&client);
        Scheduler {
            _task: run_controller(
                "kube-scheduler",
                controller,
                schedule,
                Arc::new(Ctx { client }),
            ),
        }
    }
}

async fn schedule(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
        || pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if scheduled || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pod.namespace().unwrap_or_default();
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    let mut claims = Vec::new();
    for name in claims_of(&pod) {
        match api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading PVC {ns}/{name}"))?
        {
            // A missing or deleted claim makes the pod unschedulable.
            Some(c) if c.metadata.deletion_timestamp.is_none() => claims.push(c),
            _ => return Ok(Action::await_change()),
        }
    }
    for claim in claims {
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        if !unbound || annotation(&claim, SELECTED_NODE).is_some_and(|n| !n.is_empty()) {
            continue;
        }
        if !storage_class(&ctx.client, &claim)
            .await?
            .as_ref()
            .is_some_and(binds_late)
        {
            continue;
        }
        api.patch(
            &claim.name_any(),
            &manager(MANAGER),
            &Patch::Merge(json!({"metadata": {"annotations": {SELECTED_NODE: NODE_NAME}}})),
        )
        .await
        .with_context(|| {
            format!(
                "selecting node {NODE_NAME} for PVC {ns}/{}",
                claim.name_any()
            )
        })?;
    }
    Ok(Action::await_change())
}
