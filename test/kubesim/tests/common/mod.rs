//! Helpers shared by the conformance suites.
#![allow(dead_code)]

pub mod cases;
pub mod kubectl;
pub mod kubectl_cases;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::Status;
use kubesim::KubeSim;
use serde_json::Value;
use std::path::PathBuf;

/// The Flux and VolumeSnapshot CRD files for tests that care about schema fidelity (kubectl
/// applying them, explaining them): upstream's from the Go module cache when it has them,
/// else kubesim's own; says which it used.
pub fn third_party_crd_files() -> Vec<PathBuf> {
    match kubesim::third_party::upstream_crd_files() {
        Ok(files) if !files.is_empty() => {
            eprintln!("using the upstream Flux and VolumeSnapshot CRDs: {files:#?}");
            files
        }
        Ok(_) | Err(_) => {
            let why = kubesim::third_party::upstream_crd_files()
                .err()
                .unwrap_or_else(|| "none found".into());
            eprintln!(
                "using kubesim's own Flux and VolumeSnapshot CRDs (test/kubesim/crds): {why}"
            );
            kubesim::third_party::CRDS
                .iter()
                .map(|(file, _)| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("crds")
                        .join(file)
                })
                .collect()
        }
    }
}

/// A simulator serving the Flux and VolumeSnapshot kinds from upstream's own CRDs (their
/// defaults, patterns and CEL rules), for tests of kubesim's validation against them; `None`
/// (after saying SKIPPED and why) where the Go module cache lacks them, a failure where
/// `FLUXGATE_REQUIRE_UPSTREAM_CRDS=1` (CI) demands them.
pub async fn sim_with_upstream_flux() -> Option<KubeSim> {
    let files = match kubesim::third_party::upstream_crd_files() {
        Ok(files) if !files.is_empty() => files,
        other => {
            let why = other
                .err()
                .unwrap_or_else(|| "no upstream CRD files found".into());
            assert!(
                std::env::var("FLUXGATE_REQUIRE_UPSTREAM_CRDS").as_deref() != Ok("1"),
                "the upstream CRDs are required here: {why}"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        }
    };
    let sim = KubeSim::start().await;
    for file in &files {
        sim.load_yaml(file)
            .unwrap_or_else(|e| panic!("upstream CRD {} loads: {e}", file.display()));
    }
    eprintln!("using the upstream Flux and VolumeSnapshot CRDs: {files:#?}");
    Some(sim)
}

/// A simulator serving the Flux and VolumeSnapshot kinds (kubesim's embedded CRDs).
pub async fn sim_with_flux() -> KubeSim {
    let sim = KubeSim::start().await;
    sim.load_third_party_crds()
        .expect("kubesim's Flux and VolumeSnapshot CRDs load");
    sim
}

pub fn dyn_api(
    sim: &KubeSim,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(sim.client(), ns, &ar),
        None => Api::all_with(sim.client(), &ar),
    }
}

pub fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("test object is a valid DynamicObject")
}

/// The `Status` of an API error; panics on success or transport errors.
pub fn status<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}
