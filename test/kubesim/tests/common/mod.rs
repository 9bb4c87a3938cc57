//! Helpers shared by the conformance suites.
#![allow(dead_code)]

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::Status;
use kubesim::KubeSim;
use serde_json::Value;
use std::path::PathBuf;

/// `../shared/external-crds` beside the repository (override: `KUBESIM_EXTERNAL_CRDS`).
pub fn external_crds() -> PathBuf {
    let p = std::env::var_os("KUBESIM_EXTERNAL_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/external-crds")
        });
    assert!(
        p.is_dir(),
        "the third-party CRDs are expected at {} (set KUBESIM_EXTERNAL_CRDS to their directory)",
        p.display()
    );
    p
}

pub async fn sim_with_flux() -> KubeSim {
    let sim = KubeSim::start().await;
    sim.load_yaml(external_crds()).expect("external CRDs load");
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
