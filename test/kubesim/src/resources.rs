//! Resource types: what a served (group, version, resource) is, and the built-in kinds kubesim serves from the start.

use crate::schema::VersionSchema;
use std::cmp::Ordering;
use std::sync::Arc;

/// A column of `kubectl get` output (a CRD's `additionalPrinterColumns` entry).
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Where a `scale` subresource reads and writes replicas.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// Behaviour that is not generic storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    Namespace,
    Crd,
    /// Answered, never stored: SelfSubjectAccessReview, SelfSubjectRulesReview and
    /// SelfSubjectReview (`http::review`).
    Review,
}

/// One served resource at one version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub columns: Vec<PrinterColumn>,
    /// Structural schema (custom resources only).
    pub schema: Option<Arc<VersionSchema>>,
    /// Whether `metadata.generation` tracks spec changes.
    pub generation: bool,
    /// The version objects are stored at (CRDs: the `storage: true` version).
    pub storage_version: String,
    /// Extra `fieldSelector` fields besides metadata.name/namespace.
    pub selectable_fields: Vec<String>,
    pub special: Special,
    pub custom: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.special == Special::Review {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// The key collections are stored under: versions of one resource share objects.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }
}

/// A resource independent of version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

/// Kubernetes version ordering: GA > beta > alpha > other, higher numbers first.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn key(v: &str) -> (u8, u64, u64, String) {
        let parse = |s: &str| -> Option<(u64, u8, u64)> {
            let s = s.strip_prefix('v')?;
            let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
            let major: u64 = digits.parse().ok()?;
            let rest = &s[digits.len()..];
            if rest.is_empty() {
                return Some((major, 3, 0));
            }
            let (stage, num) = if let Some(n) = rest.strip_prefix("beta") {
                (2, n)
            } else if let Some(n) = rest.strip_prefix("alpha") {
                (1, n)
            } else {
                return None;
            };
            Some((major, stage, num.parse().ok()?))
        };
        match parse(v) {
            Some((major, stage, minor)) => (stage, major, minor, String::new()),
            None => (0, 0, 0, v.to_string()),
        }
    }
    let (ka, kb) = (key(a), key(b));
    // Higher stage/major/minor sort first; non-conforming versions sort alphabetically last.
    kb.0.cmp(&ka.0)
        .then(kb.1.cmp(&ka.1))
        .then(kb.2.cmp(&ka.2))
        .then(ka.3.cmp(&kb.3))
}

struct B {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
    generation: bool,
    fields: &'static [&'static str],
    special: Special,
}

const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> B {
    B {
        group,
        version,
        plural,
        kind,
        namespaced,
        short: &[],
        status: false,
        scale: false,
        generation: false,
        fields: &[],
        special: Special::None,
    }
}

/// The built-in kinds listed in issue #3; everything else arrives as a CRD.
pub fn builtins() -> Vec<ResourceType> {
    let list = [
        B {
            short: &["ns"],
            status: true,
            fields: &["status.phase"],
            special: Special::Namespace,
            ..b("", "v1", "namespaces", "Namespace", false)
        },
        B {
            short: &["po"],
            status: true,
            fields: &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            ..b("", "v1", "pods", "Pod", true)
        },
        B {
            short: &["pvc"],
            status: true,
            ..b(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
            )
        },
        B {
            short: &["pv"],
            status: true,
            ..b("", "v1", "persistentvolumes", "PersistentVolume", false)
        },
        B {
            fields: &["type"],
            ..b("", "v1", "secrets", "Secret", true)
        },
        B {
            short: &["cm"],
            ..b("", "v1", "configmaps", "ConfigMap", true)
        },
        B {
            short: &["svc"],
            status: true,
            ..b("", "v1", "services", "Service", true)
        },
        B {
            short: &["ev"],
            fields: &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            ..b("", "v1", "events", "Event", true)
        },
        B {
            short: &["ev"],
            fields: &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ],
            ..b("events.k8s.io", "v1", "events", "Event", true)
        },
        B {
            short: &["deploy"],
            status: true,
            scale: true,
            generation: true,
            ..b("apps", "v1", "deployments", "Deployment", true)
        },
        B {
            short: &["sts"],
            status: true,
            scale: true,
            generation: true,
            ..b("apps", "v1", "statefulsets", "StatefulSet", true)
        },
        B {
            short: &["ds"],
            status: true,
            generation: true,
            ..b("apps", "v1", "daemonsets", "DaemonSet", true)
        },
        B {
            short: &["rs"],
            status: true,
            generation: true,
            fields: &["status.replicas"],
            ..b("apps", "v1", "replicasets", "ReplicaSet", true)
        },
        B {
            status: true,
            generation: true,
            fields: &["status.successful"],
            ..b("batch", "v1", "jobs", "Job", true)
        },
        B {
            short: &["hpa"],
            status: true,
            generation: true,
            ..b(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
            )
        },
        B {
            short: &["sc"],
            ..b(
                "storage.k8s.io",
                "v1",
                "storageclasses",
                "StorageClass",
                false,
            )
        },
        b("coordination.k8s.io", "v1", "leases", "Lease", true),
        B {
            short: &["crd", "crds"],
            status: true,
            generation: true,
            special: Special::Crd,
            ..b(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
        },
        B {
            special: Special::Review,
            ..b(
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
            )
        },
        B {
            special: Special::Review,
            ..b(
                "authorization.k8s.io",
                "v1",
                "selfsubjectrulesreviews",
                "SelfSubjectRulesReview",
                false,
            )
        },
        B {
            special: Special::Review,
            ..b(
                "authentication.k8s.io",
                "v1",
                "selfsubjectreviews",
                "SelfSubjectReview",
                false,
            )
        },
    ];
    list.into_iter()
        .map(|b| ResourceType {
            group: b.group.into(),
            version: b.version.into(),
            plural: b.plural.into(),
            singular: b.kind.to_lowercase(),
            kind: b.kind.into(),
            list_kind: format!("{}List", b.kind),
            namespaced: b.namespaced,
            short_names: b.short.iter().map(|s| s.to_string()).collect(),
            categories: if [
                "pods",
                "services",
                "deployments",
                "statefulsets",
                "daemonsets",
                "replicasets",
                "jobs",
            ]
            .contains(&b.plural)
            {
                vec!["all".into()]
            } else {
                vec![]
            },
            status: b.status,
            scale: b.scale.then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: None,
            }),
            columns: vec![],
            schema: None,
            generation: b.generation,
            storage_version: b.version.into(),
            selectable_fields: b.fields.iter().map(|s| s.to_string()).collect(),
            special: b.special,
            custom: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v2", "v1beta1", "v1", "foo", "v1beta2", "v10"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }
}
