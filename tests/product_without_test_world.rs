//! The operator's image carries the operator only: built as the Dockerfile builds it
//! (`--no-default-features`), Fluxgate depends on no crate of the simulated world — not
//! kubesim (the API simulator), not sim (simulated Flux, CSI and the Git servers), not
//! tempfile — while a default build (`cargo run -- demo`, `cargo install`) has them for the
//! demo. `.ci/product-binary` builds that binary and checks its symbols too.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The test world's crates, which the product must not link.
const TEST_WORLD: [&str; 3] = ["kubesim", "sim", "tempfile"];

/// The crates `cargo tree` lists for the fluxgate package's normal dependencies.
fn dependencies(extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["tree", "-p", "fluxgate", "-e", "normal", "--prefix", "none"])
        .args(["--locked", "--offline"])
        .args(extra)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_image_build_links_nothing_of_the_test_world() {
    let product = dependencies(&["--no-default-features"]);
    assert!(product.contains("kube"), "cargo tree listed: {product:?}");
    for crate_name in TEST_WORLD {
        assert!(
            !product.contains(crate_name),
            "the image's binary would link {crate_name}: {product:?}"
        );
    }
    let demo = dependencies(&[]);
    for crate_name in TEST_WORLD {
        assert!(
            demo.contains(crate_name),
            "the default build (the demo) lacks {crate_name}: {demo:?}"
        );
    }
}

#[test]
fn the_dockerfile_builds_without_the_demo() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("reading Dockerfile");
    let build = dockerfile
        .lines()
        .find(|line| line.contains("cargo build"))
        .expect("the Dockerfile runs cargo build");
    assert!(
        build.contains("--no-default-features"),
        "the image must be built without the demo feature: {build}"
    );
}
