//! Is the app healthy? A structured report, object by object with the reason, used by the
//! Verify phase and by ManagedApp `Ready`: Flux objects Ready at their current generation,
//! workloads fully rolled out, extra condition checks, and helm-controller remediation
//! counted as failure.

pub mod ops;

use super::flux::{HelmRelease, Kustomization, progress::remediation};
use crate::api::HealthCheck;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::DynamicObject;
use std::fmt;

/// The health of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHealth {
    /// `Kind namespace/name`.
    pub object: String,
    /// Whether it is healthy.
    pub healthy: bool,
    /// Why (for people).
    pub reason: String,
}

/// The health of every object of an app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// One entry per object checked.
    pub objects: Vec<ObjectHealth>,
}

impl HealthReport {
    /// Healthy when every object is (and something was checked).
    pub fn healthy(&self) -> bool {
        !self.objects.is_empty() && self.objects.iter().all(|o| o.healthy)
    }

    /// The unhealthy objects.
    pub fn unhealthy(&self) -> impl Iterator<Item = &ObjectHealth> {
        self.objects.iter().filter(|o| !o.healthy)
    }
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.objects.is_empty() {
            return f.write_str("nothing to check yet");
        }
        if self.healthy() {
            return write!(f, "all {} objects healthy", self.objects.len());
        }
        let reasons: Vec<String> = self
            .unhealthy()
            .map(|o| format!("{}: {}", o.object, o.reason))
            .collect();
        f.write_str(&reasons.join("; "))
    }
}

fn id(kind: &str, object: &impl ResourceExt) -> String {
    format!(
        "{kind} {}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

fn verdict(object: String, healthy: bool, reason: impl Into<String>) -> ObjectHealth {
    ObjectHealth {
        object,
        healthy,
        reason: reason.into(),
    }
}

/// A condition is current when it was set for the object's latest generation.
fn current_condition<'a>(
    conditions: &'a [Condition],
    type_: &str,
    generation: Option<i64>,
    observed: Option<i64>,
) -> Option<&'a Condition> {
    let condition = conditions.iter().find(|c| c.type_ == type_)?;
    let seen = condition.observed_generation.or(observed);
    match (generation, seen) {
        (Some(generation), Some(seen)) if seen < generation => None,
        (Some(_), None) => None,
        _ => Some(condition),
    }
}

fn ready_verdict(
    object: String,
    conditions: &[Condition],
    generation: Option<i64>,
    observed: Option<i64>,
) -> ObjectHealth {
    match current_condition(conditions, "Ready", generation, observed) {
        Some(c) if c.status == "True" => verdict(object, true, "Ready"),
        Some(c) => verdict(
            object,
            false,
            format!("not Ready: {}: {}", c.reason, c.message),
        ),
        None => verdict(
            object,
            false,
            "Ready not yet reported for the current generation",
        ),
    }
}

/// A Kustomization is healthy when Ready=True for its current generation.
pub fn kustomization_health(kustomization: &Kustomization) -> ObjectHealth {
    let status = kustomization.status.clone().unwrap_or_default();
    ready_verdict(
        id("Kustomization", kustomization),
        &status.conditions,
        kustomization.metadata.generation,
        status.observed_generation,
    )
}

/// A HelmRelease is healthy when Ready=True for its current generation and helm-controller
/// has not remediated it.
pub fn helm_release_health(release: &HelmRelease) -> ObjectHealth {
    let object = id("HelmRelease", release);
    if let Some((_, message)) = remediation(release) {
        return verdict(object, false, message);
    }
    let status = release.status.clone().unwrap_or_default();
    ready_verdict(
        object,
        &status.conditions,
        release.metadata.generation,
        status.observed_generation,
    )
}

/// A Deployment is healthy when its controller has seen the latest spec and every desired
/// replica is updated, ready and available (and the rollout has not exceeded its deadline).
pub fn deployment_health(deployment: &Deployment) -> ObjectHealth {
    let object = id("Deployment", deployment);
    let desired = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return verdict(object, false, "no status yet");
    };
    if status.observed_generation.unwrap_or(0) < deployment.metadata.generation.unwrap_or(0) {
        return verdict(
            object,
            false,
            "rollout not started: the controller has not seen the latest spec",
        );
    }
    if let Some(stuck) = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return verdict(
            object,
            false,
            format!(
                "rollout stuck: {}",
                stuck.message.clone().unwrap_or_default()
            ),
        );
    }
    let (updated, ready, available) = (
        status.updated_replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    );
    let total = status.replicas.unwrap_or(0);
    if updated == desired && ready == desired && available == desired && total == desired {
        verdict(object, true, format!("{ready}/{desired} replicas ready"))
    } else {
        verdict(
            object,
            false,
            format!(
                "rolling out: {updated} updated, {ready} ready, {available} available of {desired} (total {total})"
            ),
        )
    }
}

/// A StatefulSet is healthy when its controller has seen the latest spec, every desired
/// replica is updated and ready, and the current revision is the update revision.
pub fn statefulset_health(statefulset: &StatefulSet) -> ObjectHealth {
    let object = id("StatefulSet", statefulset);
    let desired = statefulset.spec.replicas.unwrap_or(1);
    let Some(status) = statefulset.status.as_ref() else {
        return verdict(object, false, "no status yet");
    };
    if status.observed_generation.unwrap_or(0) < statefulset.metadata.generation.unwrap_or(0) {
        return verdict(
            object,
            false,
            "rollout not started: the controller has not seen the latest spec",
        );
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let revision_current =
        status.update_revision.is_none() || status.current_revision == status.update_revision;
    if updated == desired && ready == desired && status.replicas == desired && revision_current {
        verdict(object, true, format!("{ready}/{desired} replicas ready"))
    } else {
        verdict(
            object,
            false,
            format!("rolling out: {updated} updated, {ready} ready of {desired}"),
        )
    }
}

/// An extra check from `spec.health.checks`: the object's condition has the expected status
/// for its current generation.
pub fn condition_check(object: &DynamicObject, check: &HealthCheck) -> ObjectHealth {
    let name = format!(
        "{} {}/{}",
        check.kind,
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    let status = object.data.get("status");
    // Other controllers' conditions often lack fields the strict type requires (times,
    // reasons): read each leniently, skipping only entries without type and status.
    let conditions: Vec<Condition> = status
        .and_then(|s| s.get("conditions"))
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Condition {
                type_: c.get("type")?.as_str()?.to_owned(),
                status: c.get("status")?.as_str()?.to_owned(),
                reason: c
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                message: c
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                observed_generation: c.get("observedGeneration").and_then(|g| g.as_i64()),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            })
        })
        .collect();
    let observed = status
        .and_then(|s| s.get("observedGeneration"))
        .and_then(|g| g.as_i64());
    let expected = match check.status {
        crate::api::ConditionStatus::True => "True",
        crate::api::ConditionStatus::False => "False",
        crate::api::ConditionStatus::Unknown => "Unknown",
    };
    // Objects whose conditions carry no generation at all are judged as they are.
    let generation =
        if observed.is_none() && conditions.iter().all(|c| c.observed_generation.is_none()) {
            None
        } else {
            object.metadata.generation
        };
    match current_condition(&conditions, &check.condition, generation, observed) {
        Some(c) if c.status == expected => {
            verdict(name, true, format!("{}={}", check.condition, c.status))
        }
        Some(c) => verdict(
            name,
            false,
            format!(
                "{}={} (want {expected}): {}",
                check.condition, c.status, c.message
            ),
        ),
        None => verdict(
            name,
            false,
            format!(
                "condition {} not reported for the current generation",
                check.condition
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, observed: i64, updated: i32, ready: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "apps", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": 2, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": ready}
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_healthy_only_when_fully_rolled_out_at_its_generation() {
        assert!(deployment_health(&deployment(3, 3, 2, 2)).healthy);
        let stale = deployment_health(&deployment(4, 3, 2, 2));
        assert!(
            !stale.healthy && stale.reason.contains("has not seen the latest spec"),
            "{stale:?}"
        );
        let rolling = deployment_health(&deployment(4, 4, 1, 2));
        assert!(
            !rolling.healthy && rolling.reason.contains("1 updated"),
            "{rolling:?}"
        );
    }

    #[test]
    fn a_statefulset_waits_for_its_update_revision() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "apps", "generation": 2},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "db", "template": {}},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                       "currentRevision": "db-1", "updateRevision": "db-2"}
        }))
        .unwrap();
        assert!(!statefulset_health(&sts).healthy);
    }

    #[test]
    fn a_stale_ready_kustomization_is_not_healthy() {
        let kustomization: Kustomization = serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system", "generation": 7},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "fleet"}},
            "status": {"observedGeneration": 6, "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                       "message": "Applied", "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 6}]}
        }))
        .unwrap();
        let health = kustomization_health(&kustomization);
        assert!(
            !health.healthy && health.reason.contains("current generation"),
            "{health:?}"
        );
        let report = HealthReport {
            objects: vec![health, deployment_health(&deployment(1, 1, 2, 2))],
        };
        assert!(!report.healthy());
        assert!(
            report
                .to_string()
                .starts_with("Kustomization flux-system/apps: "),
            "{report}"
        );
    }

    #[test]
    fn extra_checks_compare_the_named_condition() {
        let check: HealthCheck = serde_json::from_value(
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "tls"}),
        )
        .unwrap();
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "tls", "namespace": "apps", "generation": 1},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending", "message": "Issuing",
                       "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 1}]}
        }))
        .unwrap();
        let health = condition_check(&object, &check);
        assert!(
            !health.healthy && health.reason.contains("want True"),
            "{health:?}"
        );
        assert!(HealthReport::default().to_string().contains("nothing"));
        assert!(!HealthReport::default().healthy());
    }
}
