//! `docs/api.md` is exactly what `fluxgate::api::reference` renders from the CRDs.

use std::path::Path;

#[test]
fn docs_api_md_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md");
    let generated = fluxgate::api::reference::markdown(&fluxgate::api::crds());
    if std::env::var_os("FLUXGATE_BLESS").is_some() {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "docs/api.md is stale (the CRD types changed): regenerate it with \
         `FLUXGATE_BLESS=1 cargo test --test api_reference_current` and commit the result"
    );
}
