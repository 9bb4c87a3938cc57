//! Gathering an app's health from the API: the Flux source object, every workload of the
//! plan and the ManagedApp's extra checks, into one [`HealthReport`].

use super::{
    HealthReport, ObjectHealth, condition_check, deployment_health, helm_release_health,
    kustomization_health, statefulset_health,
};
use crate::api::{FluxObjectKind, HealthCheck, PlannedWorkload, SourceKind, WorkloadKind};
use crate::cluster::cache::Cluster;
use crate::cluster::error::ClusterError;
use crate::cluster::flux::ops::get_typed;
use crate::cluster::flux::{HelmRelease, Kustomization};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;

fn missing(object: String) -> ObjectHealth {
    ObjectHealth {
        object,
        healthy: false,
        reason: "not found".into(),
    }
}

/// The health of an app: its Flux source, its workloads and its extra checks. Objects that
/// do not exist count as unhealthy (with that reason); API errors are returned.
pub async fn app_health(
    cluster: &Cluster,
    source: (SourceKind, &str, &str),
    workloads: &[PlannedWorkload],
    checks: &[HealthCheck],
    app_namespace: &str,
) -> Result<HealthReport, ClusterError> {
    let mut objects = Vec::new();
    let (kind, namespace, name) = source;
    let id = format!("{kind:?} {namespace}/{name}");
    objects.push(match kind {
        SourceKind::HelmRelease => {
            get_typed::<HelmRelease>(cluster, FluxObjectKind::HelmRelease, namespace, name)
                .await?
                .map_or_else(|| missing(id.clone()), |r| helm_release_health(&r))
        }
        SourceKind::Kustomization => {
            get_typed::<Kustomization>(cluster, FluxObjectKind::Kustomization, namespace, name)
                .await?
                .map_or_else(|| missing(id.clone()), |k| kustomization_health(&k))
        }
    });
    for workload in workloads {
        let id = format!(
            "{:?} {}/{}",
            workload.kind, workload.namespace, workload.name
        );
        let error = |e| ClusterError::api("reading", id.clone(), e);
        let (namespace, name) = (&workload.namespace, &workload.name);
        objects.push(match workload.kind {
            WorkloadKind::Deployment => cluster
                .get::<Deployment>(namespace, name)
                .await
                .map_err(error)?
                .map_or_else(|| missing(id.clone()), |d| deployment_health(&d)),
            WorkloadKind::StatefulSet => cluster
                .get::<StatefulSet>(namespace, name)
                .await
                .map_err(error)?
                .map_or_else(|| missing(id.clone()), |s| statefulset_health(&s)),
        });
    }
    for check in checks {
        objects.push(extra_check(cluster, check, app_namespace).await?);
    }
    Ok(HealthReport { objects })
}

async fn extra_check(
    cluster: &Cluster,
    check: &HealthCheck,
    app_namespace: &str,
) -> Result<ObjectHealth, ClusterError> {
    let namespace = check.namespace.as_deref().unwrap_or(app_namespace);
    let id = format!("{} {namespace}/{}", check.kind, check.name);
    let (group, version) = check
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", check.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &check.kind);
    let (resource, _) = match pinned_kind(cluster.client(), &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Ok(ObjectHealth {
                object: id,
                healthy: false,
                reason: format!("the cluster does not serve {}", check.api_version),
            });
        }
        Err(kube::Error::Discovery(e)) => {
            return Ok(ObjectHealth {
                object: id,
                healthy: false,
                reason: format!(
                    "the cluster does not serve {} {}: {e}",
                    check.api_version, check.kind
                ),
            });
        }
        Err(e) => return Err(ClusterError::api("discovering", id, e)),
    };
    let object =
        Api::<DynamicObject>::namespaced_with(cluster.client().clone(), namespace, &resource)
            .get_opt(&check.name)
            .await
            .map_err(|e| ClusterError::api("reading", id.clone(), e))?;
    Ok(object.map_or_else(|| missing(id), |o| condition_check(&o, check)))
}
