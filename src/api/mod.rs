//! The Fluxgate API (`fluxgate.dev/v1alpha1`): CRD types, their validation and conditions.
//!
//! The CRDs in `crds/` are generated from these types (`fluxgate crd`); validation lives in
//! the schema and in CEL rules so bad input is refused at `kubectl apply`.

pub mod common;
pub mod conditions;
pub mod managed_app;
pub mod reference;
pub mod request_status;
pub mod rollback_request;
pub mod upgrade_request;

#[cfg(test)]
mod cel_tests;

pub use common::{GoDuration, LocalObjectReference};
pub use managed_app::*;
pub use request_status::*;
pub use rollback_request::*;
pub use upgrade_request::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every Fluxgate kind.
pub const GROUP: &str = "fluxgate.dev";
/// API version of every Fluxgate kind.
pub const VERSION: &str = "v1alpha1";

/// Every Fluxgate CRD with the file it is checked in as under `crds/`.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("managedapps.yaml", ManagedApp::crd()),
        ("upgraderequests.yaml", UpgradeRequest::crd()),
        ("rollbackrequests.yaml", RollbackRequest::crd()),
    ]
}

/// Renders one CRD as YAML, as checked in under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// Renders every Fluxgate CRD as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for (_, crd) in crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}

/// Versions in one line for `kubectl get`: the version alone for a single field, else
/// `name=version,…`.
pub fn versions_summary(versions: &std::collections::BTreeMap<String, String>) -> String {
    match versions.len() {
        1 => versions.values().next().cloned().unwrap_or_default(),
        _ => versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}
