//! Shared fixtures for tests against kubesim: a cluster with every CRD Fluxgate meets, and
//! builders for Flux objects in the shapes Flux writes them.
#![allow(dead_code)]

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubesim::KubeSim;
use serde_json::{Value, json};
use std::path::Path;

/// A kubesim with Fluxgate's, Flux's and the snapshot CRDs, and the given namespaces.
pub async fn cluster(namespaces: &[&str]) -> KubeSim {
    let sim = KubeSim::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    sim.load_yaml(root.join("crds"))
        .expect("Fluxgate's CRDs load");
    sim.load_third_party_crds()
        .expect("kubesim's Flux and VolumeSnapshot CRDs load");
    for namespace in namespaces {
        sim.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
            .unwrap();
    }
    sim
}

/// Labels Flux's kustomize-controller puts on what a Kustomization applied.
pub fn applied_by(namespace: &str, name: &str) -> Value {
    json!({"kustomize.toolkit.fluxcd.io/name": name, "kustomize.toolkit.fluxcd.io/namespace": namespace})
}

/// A Kustomization of GitRepository `fleet`, optionally applied by a parent.
pub fn kustomization(
    namespace: &str,
    name: &str,
    parent: Option<(&str, &str)>,
    suspend: bool,
) -> Value {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace, "labels": parent.map_or(json!({}), |(ns, n)| applied_by(ns, n))},
        "spec": {"interval": "10m", "prune": true, "path": format!("./{name}"), "suspend": suspend,
                 "sourceRef": {"kind": "GitRepository", "name": "fleet", "namespace": "flux-system"}}
    })
}

/// A HelmRelease whose chart comes from an OCIRepository, applied by a parent.
pub fn helm_release(namespace: &str, name: &str, parent: Option<(&str, &str)>) -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "labels": parent.map_or(json!({}), |(ns, n)| applied_by(ns, n))},
        "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": name},
                 "values": {"image": {"tag": "16.4"}}}
    })
}

/// Writes status fields the way a controller does (the status subresource).
pub async fn patch_status(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    status: Value,
) {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap_or_else(|e| panic!("status of {kind} {namespace}/{name}: {e}"));
}
