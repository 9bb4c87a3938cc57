//! What an app consists of: its workloads and the PVCs they use, found from the rendered
//! manifest or the Flux inventory — from workload *specs*, never only from running pods, so
//! discovery gives the same answer after the app is scaled to zero.

pub mod ops;

use super::flux::InventoryEntry;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use serde_json::Value;
use std::collections::BTreeSet;

/// An object named by a Flux inventory entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectId {
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// API group; empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl ObjectId {
    /// Parses `<namespace>_<name>_<group>_<kind>`; none of the parts may contain `_`, so
    /// anything but exactly four parts is malformed.
    pub fn parse(id: &str) -> Option<ObjectId> {
        let mut parts = id.split('_');
        let (namespace, name, group, kind) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || name.is_empty() || kind.is_empty() {
            return None;
        }
        Some(ObjectId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
        })
    }
}

/// The objects of an inventory; malformed entries are returned separately so they can be
/// reported instead of silently dropped.
pub fn inventory_objects(entries: &[InventoryEntry]) -> (Vec<ObjectId>, Vec<String>) {
    let mut objects = Vec::new();
    let mut malformed = Vec::new();
    for entry in entries {
        match ObjectId::parse(&entry.id) {
            Some(id) => objects.push(id),
            None => malformed.push(entry.id.clone()),
        }
    }
    (objects, malformed)
}

/// The kinds of workload discovery recognises.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// An `apps/v1` Deployment.
    Deployment(Deployment),
    /// An `apps/v1` StatefulSet.
    StatefulSet(StatefulSet),
}

/// Why a manifest could not be read; the message names the document.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML.
    #[error("rendered manifest of {source_name} is not valid YAML: {message}")]
    Yaml {
        source_name: String,
        message: String,
    },
    /// A Deployment or StatefulSet that does not parse as one.
    #[error("{kind} {name} in the rendered manifest of {source_name} is malformed: {error}")]
    Workload {
        source_name: String,
        kind: String,
        name: String,
        error: serde_json::Error,
    },
}

/// The Deployments and StatefulSets in a rendered multi-document manifest (Helm's
/// `.manifest`); `source_name` names where it came from, for errors. Objects without a
/// namespace get `default_namespace`.
pub fn workloads_in_manifest(
    manifest: &str,
    source_name: &str,
    default_namespace: &str,
) -> Result<Vec<Workload>, ManifestError> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(manifest).map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
    let mut workloads = Vec::new();
    for mut document in documents {
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        if !matches!(kind.as_str(), "Deployment" | "StatefulSet")
            || document["apiVersion"] != "apps/v1"
        {
            continue;
        }
        if document["metadata"]["namespace"].is_null() {
            document["metadata"]["namespace"] = Value::String(default_namespace.to_owned());
        }
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let malformed = |error| ManifestError::Workload {
            source_name: source_name.to_owned(),
            kind: kind.clone(),
            name: name.clone(),
            error,
        };
        workloads.push(match kind.as_str() {
            "Deployment" => {
                Workload::Deployment(serde_json::from_value(document).map_err(malformed)?)
            }
            _ => Workload::StatefulSet(serde_json::from_value(document).map_err(malformed)?),
        });
    }
    Ok(workloads)
}

/// The PVC names a pod template mounts.
pub fn claims_in_pod_template(template: &PodTemplateSpec) -> BTreeSet<String> {
    template
        .spec
        .as_ref()
        .map(claims_in_pod_spec)
        .unwrap_or_default()
}

/// The PVC names a pod spec mounts.
pub fn claims_in_pod_spec(spec: &PodSpec) -> BTreeSet<String> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|pvc| pvc.claim_name.clone())
        .collect()
}

/// The PVCs a workload uses: the claims in its pod template, and for a StatefulSet the
/// claims of its `volumeClaimTemplates` (`<template>-<statefulset>-<ordinal>`) for every
/// ordinal below `replicas` (the recorded count, so a StatefulSet already scaled to zero
/// still names its volumes) and for `existing` PVCs that match the pattern (left by a
/// larger earlier scale).
pub fn claims_of_workload(
    workload: &Workload,
    replicas: i32,
    existing: &[String],
) -> BTreeSet<String> {
    match workload {
        Workload::Deployment(d) => claims_in_pod_template(&d.spec.template),
        Workload::StatefulSet(sts) => {
            let spec = &sts.spec;
            let mut claims = claims_in_pod_template(&spec.template);
            let sts_name = sts.metadata.name.clone().unwrap_or_default();
            for template in spec.volume_claim_templates.iter().flatten() {
                let prefix = format!(
                    "{}-{sts_name}-",
                    template.metadata.name.as_deref().unwrap_or_default()
                );
                claims.extend((0..replicas.max(0)).map(|ordinal| format!("{prefix}{ordinal}")));
                claims.extend(
                    existing
                        .iter()
                        .filter(|pvc| {
                            pvc.strip_prefix(&prefix).is_some_and(|o| {
                                !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit())
                            })
                        })
                        .cloned(),
                );
            }
            claims
        }
    }
}

/// Applies a ManagedApp's `snapshots.include` / `exclude` to a set of PVC names: an empty
/// include list means every PVC; exclude always wins.
pub fn select_claims(
    claims: BTreeSet<String>,
    include: &[String],
    exclude: &[String],
) -> BTreeSet<String> {
    claims
        .into_iter()
        .filter(|c| include.is_empty() || include.contains(c))
        .filter(|c| !exclude.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "---
# Source: postgres/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: db
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:16.4}]
      volumes:
        - name: shared
          persistentVolumeClaim: {claimName: db-shared}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: db-backup
  namespace: backups
spec:
  selector: {matchLabels: {app: backup}}
  template:
    metadata: {labels: {app: backup}}
    spec:
      containers: [{name: b, image: backup:1}]
      volumes:
        - name: tmp
          emptyDir: {}
        - name: dumps
          persistentVolumeClaim: {claimName: backup-dumps}
";

    #[test]
    fn inventory_ids_parse_and_malformed_ones_are_reported() {
        let entries = vec![
            InventoryEntry {
                id: "apps_db_apps_StatefulSet".into(),
                v: "v1".into(),
            },
            InventoryEntry {
                id: "apps_data-db-0__PersistentVolumeClaim".into(),
                v: "v1".into(),
            },
            InventoryEntry {
                id: "_fast_storage.k8s.io_StorageClass".into(),
                v: "v1".into(),
            },
            InventoryEntry {
                id: "broken".into(),
                v: "v1".into(),
            },
        ];
        let (objects, malformed) = inventory_objects(&entries);
        assert_eq!(
            objects[0],
            ObjectId {
                namespace: "apps".into(),
                name: "db".into(),
                group: "apps".into(),
                kind: "StatefulSet".into()
            }
        );
        assert_eq!(objects[1].group, "");
        assert_eq!(objects[1].kind, "PersistentVolumeClaim");
        assert_eq!(objects[2].namespace, "");
        assert_eq!(malformed, vec!["broken".to_owned()]);
    }

    #[test]
    fn pvcs_are_found_from_specs_even_after_scale_down() {
        let workloads = workloads_in_manifest(MANIFEST, "HelmRelease apps/db", "apps").unwrap();
        assert_eq!(workloads.len(), 2);
        let Workload::StatefulSet(sts) = &workloads[0] else {
            panic!("StatefulSet first")
        };
        assert_eq!(sts.metadata.namespace.as_deref(), Some("apps"));
        // The plan recorded 2 replicas before scaling to zero; a third PVC is left over from
        // an earlier scale-up; an unrelated PVC does not match.
        let existing = vec![
            "data-db-2".to_owned(),
            "data-db-x".to_owned(),
            "data-dbx-0".to_owned(),
        ];
        let claims = claims_of_workload(&workloads[0], 2, &existing);
        assert_eq!(
            claims,
            BTreeSet::from([
                "data-db-0".into(),
                "data-db-1".into(),
                "data-db-2".into(),
                "db-shared".into()
            ])
        );
        let claims = claims_of_workload(&workloads[1], 1, &[]);
        assert_eq!(claims, BTreeSet::from(["backup-dumps".to_owned()]));
    }

    #[test]
    fn include_and_exclude_select_claims() {
        let all = BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        assert_eq!(
            select_claims(all.clone(), &[], &["b".into()]),
            BTreeSet::from(["a".into(), "c".into()])
        );
        assert_eq!(
            select_claims(all, &["a".into(), "b".into()], &["b".into()]),
            BTreeSet::from(["a".into()])
        );
    }

    #[test]
    fn malformed_manifests_are_named() {
        let err = workloads_in_manifest("a: [", "HelmRelease apps/db", "apps").unwrap_err();
        assert!(err.to_string().contains("HelmRelease apps/db"), "{err}");
        let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n";
        let err = workloads_in_manifest(bad, "HelmRelease apps/web", "apps").unwrap_err();
        assert!(err.to_string().contains("Deployment web"), "{err}");
    }
}
