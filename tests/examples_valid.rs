//! Every file in `examples/` is a valid object of its kind: it deserialises into the Rust
//! type and passes the CRD's CEL rules.

use fluxgate::api::{ManagedApp, RollbackRequest, UpgradeRequest};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::Value;
use std::path::Path;

fn check<T: serde::de::DeserializeOwned + CustomResourceExt>(file: &Path, object: &Value) {
    serde_json::from_value::<T>(object.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: does not deserialise as {}: {e}",
            file.display(),
            T::crd_name()
        )
    });
    let crd = T::crd();
    let schema = serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap();
    if let Err(errors) = Validator::new().validate(&schema, object, None) {
        panic!("{}: refused by the CEL rules: {errors}", file.display());
    }
}

#[test]
fn every_example_is_a_valid_object() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        match object["kind"].as_str() {
            Some("ManagedApp") => check::<ManagedApp>(&path, &object),
            Some("UpgradeRequest") => check::<UpgradeRequest>(&path, &object),
            Some("RollbackRequest") => check::<RollbackRequest>(&path, &object),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
        checked += 1;
    }
    assert_eq!(
        checked, 4,
        "one example per kind and source type is expected"
    );
}
