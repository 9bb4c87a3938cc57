//! The CRDs checked in under `crds/` are exactly what the Rust types generate.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut stale = Vec::new();
    for (file, crd) in fluxgate::api::crds() {
        let generated = fluxgate::api::crd_yaml(&crd).unwrap();
        let checked_in = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if generated != checked_in {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is stale ({}): regenerate with `cargo run -- crd --dir crds` and commit the result",
        stale.join(", ")
    );
}

#[test]
fn every_schema_property_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                let here = format!("{path}.{name}");
                // metadata and apiVersion/kind are described by Kubernetes itself.
                let inherited =
                    path.is_empty() && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
                if !inherited && property.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, property, missing);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(inner) = schema.get(key).filter(|v| v.is_object()) {
                walk(&format!("{path}[]"), inner, missing);
            }
        }
    }
    let mut missing = Vec::new();
    for (file, crd) in fluxgate::api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(file, &schema["openAPIV3Schema"], &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain would be empty): {missing:#?}"
    );
}

#[test]
fn the_helm_chart_ships_the_same_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = root.join("charts/fluxgate/crds");
    let mut differ = Vec::new();
    for (file, _) in fluxgate::api::crds() {
        let ours = std::fs::read_to_string(root.join("crds").join(file)).unwrap_or_default();
        let shipped = std::fs::read_to_string(chart.join(file)).unwrap_or_default();
        if ours.is_empty() || ours != shipped {
            differ.push(file);
        }
    }
    let extra: Vec<String> = std::fs::read_dir(&chart)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !fluxgate::api::crds().iter().any(|(f, _)| f == name))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        differ.is_empty() && extra.is_empty(),
        "charts/fluxgate/crds differs from crds/ ({}; not ours: {}): copy them with \
         `cp crds/*.yaml charts/fluxgate/crds/` and commit the result",
        differ.join(", "),
        extra.join(", ")
    );
}
