//! Deployment, ReplicaSet and StatefulSet controllers: pods with controller owner
//! references, StatefulSet PVCs from `volumeClaimTemplates`, and rollout status fields as
//! the real controllers report them.

use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::to_value;
use crate::pods::{TERMINATION_FINALIZER, pod_ready};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The running workload controllers; they stop when dropped.
#[derive(Debug)]
pub struct WorkloadSim {
    _tasks: Vec<SimTask>,
}

struct Ctx {
    client: Client,
}

impl WorkloadSim {
    /// Starts the Deployment, ReplicaSet and StatefulSet controllers in all namespaces.
    pub fn start(client: Client) -> WorkloadSim {
        let ctx = Arc::new(Ctx {
            client: client.clone(),
        });
        let wc = watcher::Config::default;
        let deployments = Controller::new(Api::<Deployment>::all(client.clone()), wc())
            .owns(Api::<ReplicaSet>::all(client.clone()), wc());
        let replicasets = Controller::new(Api::<ReplicaSet>::all(client.clone()), wc())
            .owns(Api::<Pod>::all(client.clone()), wc());
        let statefulsets = Controller::new(Api::<StatefulSet>::all(client.clone()), wc())
            .owns(Api::<Pod>::all(client.clone()), wc());
        WorkloadSim {
            _tasks: vec![
                run_controller(
                    "deployment-controller",
                    deployments,
                    reconcile_deployment,
                    ctx.clone(),
                ),
                run_controller(
                    "replicaset-controller",
                    replicasets,
                    reconcile_replicaset,
                    ctx.clone(),
                ),
                run_controller(
                    "statefulset-controller",
                    statefulsets,
                    reconcile_statefulset,
                    ctx,
                ),
            ],
        }
    }
}

/// A stable short hash of a pod template (what `pod-template-hash` and revisions name).
fn template_hash(template: &Value) -> String {
    let mut h = DefaultHasher::new();
    template.to_string().hash(&mut h);
    format!("{:016x}", h.finish())[..10].to_owned()
}

/// A random-looking 5-character suffix from Kubernetes' name alphabet.
fn suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = DefaultHasher::new();
    (
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
    )
        .hash(&mut h);
    let mut x = h.finish();
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Value {
    to_value(
        &owner
            .controller_owner_ref(&())
            .unwrap_or_else(|| OwnerReference {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                name: owner.meta().name.clone().unwrap_or_default(),
                uid: owner.meta().uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }),
    )
}

fn owned_by(obj: &impl Resource, uid: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn terminating(obj: &impl Resource) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

/// Leaves out zero counts, as the Go structs' `omitempty` does.
fn put_count(status: &mut Map<String, Value>, field: &str, n: i64) {
    if n != 0 {
        status.insert(field.to_owned(), json!(n));
    }
}

/// A merge patch that turns `old` into `new`: fields `new` leaves out are nulled.
fn replacing(old: &Value, new: &Value) -> Value {
    let mut patch = new.clone();
    if let (Some(o), Some(p)) = (old.as_object(), patch.as_object_mut()) {
        for k in o.keys() {
            p.entry(k.clone()).or_insert(Value::Null);
        }
    }
    patch
}

async fn owned_pods(client: &Client, ns: &str, uid: &str) -> Result<Vec<Pod>, SimError> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| owned_by(p, uid))
        .collect())
}

async fn create_pod(
    client: &Client,
    ns: &str,
    name: &str,
    template: &Value,
    labels: &Value,
    owner: Value,
) -> Result<(), SimError> {
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(ns);
    metadata["labels"] = labels.clone();
    metadata["ownerReferences"] = json!([owner]);
    // Added at creation so even an immediate delete lingers for the termination delay.
    metadata["finalizers"] = json!([TERMINATION_FINALIZER]);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"],
    }))
    .map_err(|e| {
        SimError::invalid(anyhow::anyhow!(
            "pod template of {name} is not a pod spec: {e}"
        ))
    })?;
    match Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete_pod(client: &Client, ns: &str, name: &str) -> Result<(), SimError> {
    match Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile_deployment(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    if terminating(&*d) {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.uid().unwrap_or_default();
    let v = to_value(&*d);
    let desired = v["spec"]["replicas"].as_i64().unwrap_or(1);
    let hash = template_hash(&v["spec"]["template"]);
    let new_name = format!("{name}-{hash}");
    let api = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    let owned: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| owned_by(rs, &uid))
        .collect();
    let revision = |rs: &ReplicaSet| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let top = owned.iter().map(revision).max().unwrap_or(0);
    match owned.iter().find(|rs| rs.name_any() == new_name) {
        None => {
            let mut template = v["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = v["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs: ReplicaSet = serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": new_name, "namespace": ns,
                    "labels": template["metadata"]["labels"],
                    "annotations": {"deployment.kubernetes.io/revision": (top + 1).to_string(),
                                    "deployment.kubernetes.io/desired-replicas": desired.to_string()},
                    "ownerReferences": [controller_ref(&*d)],
                },
                "spec": {"replicas": desired, "selector": selector, "template": template},
            }))
            .map_err(|e| SimError::invalid(anyhow::anyhow!("Deployment {ns}/{name} template: {e}")))?;
            match api.create(&PostParams::default(), &rs).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(rs) if rs.spec.replicas != Some(desired as i32) => {
            api.patch(
                &new_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": desired}})),
            )
            .await?;
        }
        Some(_) => {}
    }
    // Old ReplicaSets are scaled down at once (as with strategy Recreate).
    for rs in owned.iter().filter(|rs| rs.name_any() != new_name) {
        if rs.spec.replicas.unwrap_or(0) != 0 {
            api.patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await?;
        }
    }
    let count =
        |rs: &ReplicaSet, f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>| {
            rs.status.as_ref().and_then(f).unwrap_or(0) as i64
        };
    let replicas: i64 = owned.iter().map(|rs| count(rs, |s| Some(s.replicas))).sum();
    let ready: i64 = owned.iter().map(|rs| count(rs, |s| s.ready_replicas)).sum();
    let available: i64 = owned
        .iter()
        .map(|rs| count(rs, |s| s.available_replicas))
        .sum();
    let updated: i64 = owned
        .iter()
        .filter(|rs| rs.name_any() == new_name)
        .map(|rs| count(rs, |s| Some(s.replicas)))
        .sum();
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(d.metadata.generation));
    put_count(&mut status, "replicas", replicas);
    put_count(&mut status, "updatedReplicas", updated);
    put_count(&mut status, "readyReplicas", ready);
    put_count(&mut status, "availableReplicas", available);
    put_count(
        &mut status,
        "unavailableReplicas",
        (desired - available).max(0),
    );
    let complete = updated == desired && replicas == desired && available == desired;
    let old = &v["status"]["conditions"];
    let cond = |t: &str, s: bool, reason: &str, message: String| {
        let s = if s { "True" } else { "False" };
        let prior = old
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t);
        let since = prior
            .filter(|c| c["status"] == s)
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(crate::conditions::now()));
        json!({"type": t, "status": s, "reason": reason, "message": message,
               "lastTransitionTime": since, "lastUpdateTime": since})
    };
    status.insert(
        "conditions".into(),
        json!([
            if available >= desired {
                cond(
                    "Available",
                    true,
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                cond(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            },
            if complete {
                cond(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                )
            } else {
                cond(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                )
            },
        ]),
    );
    let status = Value::Object(status);
    if status != v["status"] {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": replacing(&v["status"], &status)})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

async fn reconcile_replicaset(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    if terminating(&*rs) {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let v = to_value(&*rs);
    let desired = v["spec"]["replicas"].as_i64().unwrap_or(1);
    let pods = owned_pods(client, &ns, &rs.uid().unwrap_or_default()).await?;
    let mut active: Vec<&Pod> = pods.iter().filter(|p| !terminating(*p)).collect();
    active.sort_by_key(|p| p.name_any());
    let template = &v["spec"]["template"];
    for _ in active.len() as i64..desired {
        let labels = template["metadata"]["labels"].clone();
        create_pod(
            client,
            &ns,
            &format!("{name}-{}", suffix()),
            template,
            &labels,
            controller_ref(&*rs),
        )
        .await?;
    }
    // Surplus pods go, not-ready ones first, as the real controller prefers.
    let mut surplus: Vec<&Pod> = active.clone();
    surplus.sort_by_key(|p| pod_ready(p));
    for p in surplus
        .iter()
        .take((active.len() as i64 - desired).max(0) as usize)
    {
        delete_pod(client, &ns, &p.name_any()).await?;
    }
    let ready = active.iter().filter(|p| pod_ready(p)).count() as i64;
    let mut status = Map::new();
    status.insert("replicas".into(), json!(active.len()));
    put_count(&mut status, "fullyLabeledReplicas", active.len() as i64);
    put_count(&mut status, "readyReplicas", ready);
    put_count(&mut status, "availableReplicas", ready);
    status.insert("observedGeneration".into(), json!(rs.metadata.generation));
    let status = Value::Object(status);
    if status != v["status"] {
        let api = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": replacing(&v["status"], &status)})),
        )
        .await?;
    }
    Ok(Action::await_change())
}

async fn reconcile_statefulset(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    if terminating(&*sts) {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let v = to_value(&*sts);
    let desired = v["spec"]["replicas"].as_i64().unwrap_or(1);
    let update_revision = format!("{name}-{}", template_hash(&v["spec"]["template"]));
    let pods = owned_pods(client, &ns, &sts.uid().unwrap_or_default()).await?;
    let by_name: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let revision_of = |p: &Pod| {
        p.labels()
            .get("controller-revision-hash")
            .cloned()
            .unwrap_or_default()
    };
    let templates = v["spec"]["volumeClaimTemplates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let selector_labels = v["spec"]["selector"]["matchLabels"].clone();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    // OrderedReady (the default): pod N is created only once pods 0..N are running and
    // ready, and pods go one at a time from the highest ordinal.
    let ordered = v["spec"]["podManagementPolicy"].as_str() != Some("Parallel");
    let ordinal_of = |p: &Pod| {
        p.name_any()
            .rsplit_once('-')
            .and_then(|(_, o)| o.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    };
    let any_terminating = pods.iter().any(terminating);

    for ordinal in 0..desired {
        let pod_name = format!("{name}-{ordinal}");
        if ordered && pods.iter().filter(|p| ordinal_of(p) < ordinal).count() < ordinal as usize {
            break;
        }
        if ordered
            && pods
                .iter()
                .any(|p| ordinal_of(p) < ordinal && (terminating(p) || !pod_ready(p)))
        {
            break;
        }
        for t in &templates {
            let claim = format!(
                "{}-{pod_name}",
                t["metadata"]["name"].as_str().unwrap_or_default()
            );
            if pvcs.get_opt(&claim).await?.is_none() {
                let mut labels = t["metadata"]["labels"].clone();
                for (k, val) in selector_labels.as_object().into_iter().flatten() {
                    labels[k] = val.clone();
                }
                let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": ns, "labels": labels,
                                 "annotations": t["metadata"]["annotations"]},
                    "spec": t["spec"],
                }))
                .map_err(|e| {
                    SimError::invalid(anyhow::anyhow!(
                        "volumeClaimTemplate of StatefulSet {ns}/{name}: {e}"
                    ))
                })?;
                match pvcs.create(&PostParams::default(), &pvc).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !by_name.contains(&pod_name) {
            let mut template = v["spec"]["template"].clone();
            let mut labels = template["metadata"]["labels"].clone();
            labels["controller-revision-hash"] = json!(update_revision);
            labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
            labels["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
            let volumes = template["spec"]["volumes"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut volumes: Vec<Value> = volumes;
            for t in &templates {
                let vol = t["metadata"]["name"].as_str().unwrap_or_default();
                volumes.retain(|x| x["name"] != vol);
                volumes.push(json!({"name": vol, "persistentVolumeClaim": {"claimName": format!("{vol}-{pod_name}")}}));
            }
            template["spec"]["volumes"] = json!(volumes);
            template["spec"]["hostname"] = json!(pod_name);
            if let Some(svc) = v["spec"]["serviceName"].as_str() {
                template["spec"]["subdomain"] = json!(svc);
            }
            create_pod(
                client,
                &ns,
                &pod_name,
                &template,
                &labels,
                controller_ref(&*sts),
            )
            .await?;
        }
    }
    // Outdated pods are replaced from the highest ordinal; under OrderedReady one at a time,
    // and only once every pod below the desired count is running and ready:
    // kube-controller-manager v1.36.3 (stateful_set_control.go `processReplica`) returns
    // before the rolling update otherwise. So a pod of a broken version is never replaced,
    // even after the template is reverted — Kubernetes' documented "forced rollback".
    let replicas_ready = (0..desired).all(|ordinal| {
        pods.iter()
            .any(|p| ordinal_of(p) == ordinal && !terminating(p) && pod_ready(p))
    });
    let mut outdated: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            ordinal_of(p) < desired && !terminating(*p) && revision_of(p) != update_revision
        })
        .filter(|_| replicas_ready || !ordered)
        .collect();
    let mut condemned: Vec<&Pod> = pods
        .iter()
        .filter(|p| ordinal_of(p) >= desired && !terminating(*p))
        .collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p)));
    outdated.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p)));
    // The PVC retention policy, before any pod goes: claims of pods to be removed get the
    // owner references that make the garbage collector delete them with their pod.
    for pod in &pods {
        for t in &templates {
            let claim = format!(
                "{}-{}",
                t["metadata"]["name"].as_str().unwrap_or_default(),
                pod.name_any()
            );
            let scaled_down = ordinal_of(pod) >= desired;
            fix_claim_owners(client, &ns, &claim, &sts, pod, scaled_down).await?;
        }
    }
    let victims: Vec<&Pod> = condemned.into_iter().chain(outdated).collect();
    let take = if !ordered {
        victims.len()
    } else if any_terminating {
        0
    } else {
        1
    };
    for p in victims.into_iter().take(take) {
        delete_pod(client, &ns, &p.name_any()).await?;
    }

    // Status, counted over the pods that exist (terminating ones too, as the real controller does).
    let replicas = pods.len() as i64;
    let live_ready: Vec<&Pod> = pods
        .iter()
        .filter(|p| !terminating(*p) && pod_ready(p))
        .collect();
    let ready = live_ready.len() as i64;
    let updated = pods
        .iter()
        .filter(|p| revision_of(p) == update_revision)
        .count() as i64;
    let old_current = v["status"]["currentRevision"].as_str().map(str::to_owned);
    let rolled = updated == desired
        && replicas == desired
        && live_ready.iter().all(|p| revision_of(p) == update_revision)
        && ready == desired;
    let current_revision = match old_current {
        Some(c) if !rolled => c,
        _ => update_revision.clone(),
    };
    let current = pods
        .iter()
        .filter(|p| revision_of(p) == current_revision)
        .count() as i64;
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(sts.metadata.generation));
    status.insert("replicas".into(), json!(replicas));
    put_count(&mut status, "readyReplicas", ready);
    put_count(&mut status, "currentReplicas", current);
    put_count(&mut status, "updatedReplicas", updated);
    status.insert("availableReplicas".into(), json!(ready));
    status.insert("currentRevision".into(), json!(current_revision));
    status.insert("updateRevision".into(), json!(update_revision));
    status.insert("collisionCount".into(), json!(0));
    let status = Value::Object(status);
    if status != v["status"] {
        let api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": replacing(&v["status"], &status)})),
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// The owner references a StatefulSet's PVC retention policy asks for on the claim of one
/// of its pods, as k8s.io/kubernetes v1.36.3 `pkg/controller/statefulset` sets them
/// (`stateful_set_utils.go`: `isClaimOwnerUpToDate`, `updateClaimOwnerRefForSetAndPod`;
/// `stateful_pod_control.go`: `UpdatePodClaimForRetentionPolicy`, run for each pod in range
/// and, before any is deleted, for each condemned one): `whenDeleted: Delete` → the set
/// owns the claim of a pod in range; `whenScaled: Delete` → the pod owns the claim of a pod
/// a scale-down removes, so the garbage collector deletes the claim once the pod is gone.
/// Claims with a stale reference (our name, another UID) are left alone; a claim with
/// another controller only loses our references.
async fn fix_claim_owners(
    client: &Client,
    ns: &str,
    claim: &str,
    sts: &StatefulSet,
    pod: &Pod,
    scaled_down: bool,
) -> Result<(), SimError> {
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let Some(pvc) = pvcs.get_opt(claim).await? else {
        return Ok(());
    };
    let policy = sts
        .spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or_default();
    let delete = |p: &Option<String>| p.as_deref() == Some("Delete");
    let (when_scaled, when_deleted) = (delete(&policy.when_scaled), delete(&policy.when_deleted));
    let refs = pvc.metadata.owner_references.clone().unwrap_or_default();
    let ours = |r: &OwnerReference| {
        (r.kind == "StatefulSet"
            && r.api_version == "apps/v1"
            && Some(&r.name) == sts.metadata.name.as_ref())
            || (r.kind == "Pod"
                && r.api_version == "v1"
                && Some(&r.name) == pod.metadata.name.as_ref())
    };
    let uid_of = |r: &OwnerReference| {
        if r.kind == "Pod" {
            pod.uid()
        } else {
            sts.uid()
        }
    };
    if refs
        .iter()
        .any(|r| ours(r) && Some(&r.uid) != uid_of(r).as_ref())
    {
        return Ok(());
    }
    let retains = !when_scaled && !when_deleted;
    let other_controller = !retains && refs.iter().any(|r| !ours(r) && r.controller == Some(true));
    let mut wanted: Vec<OwnerReference> = refs.iter().filter(|r| !ours(r)).cloned().collect();
    if !other_controller {
        if when_scaled && scaled_down {
            wanted.push(serde_json::from_value(controller_ref(pod)).map_err(|e| {
                SimError::invalid(anyhow::anyhow!(
                    "owner reference of pod {}: {e}",
                    pod.name_any()
                ))
            })?);
        }
        if when_deleted && !(when_scaled && scaled_down) {
            wanted.push(serde_json::from_value(controller_ref(sts)).map_err(|e| {
                SimError::invalid(anyhow::anyhow!(
                    "owner reference of StatefulSet {}: {e}",
                    sts.name_any()
                ))
            })?);
        }
    }
    let key = |r: &OwnerReference| r.uid.clone();
    let mut before: Vec<String> = refs.iter().map(key).collect();
    let mut after: Vec<String> = wanted.iter().map(key).collect();
    before.sort();
    after.sort();
    if before == after {
        return Ok(());
    }
    let owners = if wanted.is_empty() {
        Value::Null
    } else {
        json!(wanted)
    };
    pvcs.patch(
        claim,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"ownerReferences": owners}})),
    )
    .await?;
    Ok(())
}
