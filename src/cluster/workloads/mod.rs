//! Workloads and the pods that mount an app's volumes: who owns each pod (ReplicaSet →
//! Deployment by ownerReference lookup, not by name), which owners Fluxgate cannot scale
//! (DaemonSets, Jobs, bare pods: blockers), and whether the app is quiesced.

pub mod ops;

use super::discovery::claims_in_pod_spec;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::fmt;

/// What controls a pod, resolved to the object Fluxgate would scale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodOwner {
    /// A Deployment (through its ReplicaSet).
    Deployment(String),
    /// A StatefulSet.
    StatefulSet(String),
    /// A DaemonSet: cannot be scaled to zero.
    DaemonSet(String),
    /// A Job (or a CronJob's Job): cannot be scaled.
    Job(String),
    /// A ReplicaSet without a Deployment above it.
    ReplicaSet(String),
    /// Something else (another operator's kind).
    Other { kind: String, name: String },
    /// No controller at all.
    Bare,
}

impl fmt::Display for PodOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodOwner::Deployment(n) => write!(f, "Deployment {n}"),
            PodOwner::StatefulSet(n) => write!(f, "StatefulSet {n}"),
            PodOwner::DaemonSet(n) => write!(f, "DaemonSet {n}"),
            PodOwner::Job(n) => write!(f, "Job {n}"),
            PodOwner::ReplicaSet(n) => write!(f, "ReplicaSet {n}"),
            PodOwner::Other { kind, name } => write!(f, "{kind} {name}"),
            PodOwner::Bare => f.write_str("no controller (a bare pod)"),
        }
    }
}

/// A pod that mounts some of the app's volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMount {
    /// The pod's name.
    pub pod: String,
    /// The claims of interest it mounts.
    pub claims: BTreeSet<String>,
    /// Who controls it.
    pub owner: PodOwner,
}

fn controller_of(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// Resolves a pod's controller; a ReplicaSet is looked up (by UID) among `replica_sets` to
/// find the Deployment that controls it.
pub fn pod_owner(pod: &Pod, replica_sets: &[ReplicaSet]) -> PodOwner {
    let Some(owner) = controller_of(pod.metadata.owner_references.as_ref()) else {
        return PodOwner::Bare;
    };
    match owner.kind.as_str() {
        "StatefulSet" => PodOwner::StatefulSet(owner.name.clone()),
        "DaemonSet" => PodOwner::DaemonSet(owner.name.clone()),
        "Job" => PodOwner::Job(owner.name.clone()),
        "ReplicaSet" => replica_sets
            .iter()
            .find(|rs| rs.metadata.uid.as_deref() == Some(owner.uid.as_str()))
            .and_then(|rs| controller_of(rs.metadata.owner_references.as_ref()))
            .filter(|o| o.kind == "Deployment")
            .map_or_else(
                || PodOwner::ReplicaSet(owner.name.clone()),
                |d| PodOwner::Deployment(d.name.clone()),
            ),
        kind => PodOwner::Other {
            kind: kind.to_owned(),
            name: owner.name.clone(),
        },
    }
}

/// Whether the pod still holds its volumes: every pod that has not finished does, including
/// one that is terminating.
fn holds_volumes(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The pods (of one namespace) that hold any of `claims`.
pub fn pods_mounting(
    pods: &[Pod],
    claims: &BTreeSet<String>,
    replica_sets: &[ReplicaSet],
) -> Vec<PodMount> {
    pods.iter()
        .filter(|pod| holds_volumes(pod))
        .filter_map(|pod| {
            let mounted: BTreeSet<String> = pod
                .spec
                .as_ref()
                .map(claims_in_pod_spec)
                .unwrap_or_default()
                .intersection(claims)
                .cloned()
                .collect();
            (!mounted.is_empty()).then(|| PodMount {
                pod: pod.name_any(),
                claims: mounted,
                owner: pod_owner(pod, replica_sets),
            })
        })
        .collect()
}

/// Mounts whose owner Fluxgate cannot scale to zero: they would keep the volumes busy.
pub fn blockers(mounts: &[PodMount]) -> Vec<&PodMount> {
    mounts
        .iter()
        .filter(|m| !matches!(m.owner, PodOwner::Deployment(_) | PodOwner::StatefulSet(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, claim: &str, owner: Option<(&str, &str, &str)>, phase: &str) -> Pod {
        let owners = owner.map(|(kind, name, uid)| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps", "ownerReferences": owners.unwrap_or(json!([]))},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn replica_set(name: &str, uid: &str, deployment: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": uid, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": "d1", "controller": true}]},
            "spec": {"selector": {}}
        }))
        .unwrap()
    }

    #[test]
    fn owners_resolve_through_replica_sets_by_uid() {
        // The ReplicaSet's name does not reveal its Deployment; only the lookup does.
        let sets = vec![replica_set("renamed-7d9f", "rs-uid", "web")];
        assert_eq!(
            pod_owner(
                &pod(
                    "p",
                    "c",
                    Some(("ReplicaSet", "renamed-7d9f", "rs-uid")),
                    "Running"
                ),
                &sets
            ),
            PodOwner::Deployment("web".into())
        );
        assert_eq!(
            pod_owner(
                &pod(
                    "p",
                    "c",
                    Some(("ReplicaSet", "orphan", "other-uid")),
                    "Running"
                ),
                &sets
            ),
            PodOwner::ReplicaSet("orphan".into())
        );
        assert_eq!(
            pod_owner(&pod("p", "c", None, "Running"), &sets),
            PodOwner::Bare
        );
    }

    #[test]
    fn daemonsets_jobs_and_bare_pods_are_blockers() {
        let claims = BTreeSet::from(["data".to_owned()]);
        let pods = vec![
            pod("db-0", "data", Some(("StatefulSet", "db", "s1")), "Running"),
            pod(
                "agent-x",
                "data",
                Some(("DaemonSet", "agent", "a1")),
                "Running",
            ),
            pod("dump-1", "data", Some(("Job", "dump", "j1")), "Running"),
            pod("debug", "data", None, "Pending"),
            pod("old-dump", "data", Some(("Job", "old", "j2")), "Succeeded"),
            pod("other", "unrelated", None, "Running"),
        ];
        let mounts = pods_mounting(&pods, &claims, &[]);
        assert_eq!(
            mounts.len(),
            4,
            "finished pods and unrelated claims do not count"
        );
        let blocking: Vec<String> = blockers(&mounts)
            .iter()
            .map(|m| format!("{} ({})", m.pod, m.owner))
            .collect();
        assert_eq!(
            blocking,
            vec![
                "agent-x (DaemonSet agent)",
                "dump-1 (Job dump)",
                "debug (no controller (a bare pod))"
            ]
        );
    }
}
