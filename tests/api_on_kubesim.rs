//! The generated CRDs behave on an API server as users expect: the examples are accepted,
//! bad input is refused at apply time with a message naming the field, request specs cannot
//! change, and `kubectl get` tells the story through the printer columns.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubesim::KubeSim;
use serde_json::{Value, json};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

async fn cluster() -> KubeSim {
    let sim = KubeSim::start().await;
    sim.load_yaml(root().join("crds")).expect("our CRDs load");
    for namespace in ["databases", "home", "apps"] {
        sim.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
            .unwrap();
    }
    sim
}

fn api(sim: &KubeSim, kind: &str, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("fluxgate.dev", "v1alpha1", kind));
    Api::namespaced_with(sim.client(), namespace, &resource)
}

async fn create(sim: &KubeSim, object: Value) -> Result<DynamicObject, kube::Error> {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("apps")
        .to_owned();
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api(sim, &kind, &namespace)
        .create(&PostParams::default(), &object)
        .await
}

fn refusal(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(object) => panic!(
            "expected a refusal, the server accepted {:?}",
            object.metadata.name
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn every_example_is_accepted_with_defaults_filled_in() {
    let sim = cluster().await;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let object: Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            create(&sim, object)
                .await
                .unwrap_or_else(|e| panic!("{}: refused: {e}", path.display()));
        }
    }
    let app = api(&sim, "ManagedApp", "home")
        .get("home-assistant")
        .await
        .unwrap();
    let spec = &app.data["spec"];
    assert_eq!(
        spec["snapshots"]["enabled"],
        json!(true),
        "defaults come from the schema"
    );
    assert_eq!(spec["snapshots"]["retention"]["maxCount"], json!(3));
    assert_eq!(spec["health"]["timeout"], json!("5m"));
    assert_eq!(spec["updatePolicy"]["auto"], json!("none"));
    assert_eq!(spec["versions"][0]["format"], json!("image"));
}

#[tokio::test]
async fn bad_input_is_refused_at_apply_naming_the_field() {
    let sim = cluster().await;
    let app = |spec: Value| json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp", "metadata": {"name": "db", "namespace": "apps"}, "spec": spec});
    let base =
        json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db.yaml"}});
    let cases = [
        (
            json!({"git": {"file": "../secrets.yaml"}}),
            "must be a path relative to the repository root",
        ),
        (json!({"git": {"file": "/etc/passwd"}}), "spec.git.file"),
        (
            json!({"source": {"kind": "Deployment", "name": "db"}}),
            "spec.source.kind",
        ),
        (
            json!({"source": {"kind": "HelmRelease", "name": "Not_A_Name"}}),
            "spec.source.name",
        ),
        (
            json!({"health": {"timeout": "soon"}}),
            "spec.health.timeout",
        ),
        (
            json!({"health": {"timeout": "0s"}}),
            "must be a positive duration",
        ),
        (
            json!({"versions": [{"name": "chart", "path": ".a"}, {"name": "chart", "path": ".b"}]}),
            "chart",
        ),
        (
            json!({"updatePolicy": {"auto": "always"}}),
            "spec.updatePolicy.auto",
        ),
        (
            json!({"snapshots": {"retention": {"maxCount": 0}}}),
            "spec.snapshots.retention.maxCount",
        ),
    ];
    for (patch, expected) in cases {
        let mut spec = base.clone();
        json_patch::merge(&mut spec, &patch);
        let message = refusal(create(&sim, app(spec)).await);
        assert!(message.contains(expected), "for {patch}: {message}");
    }
    create(&sim, app(base))
        .await
        .expect("the base object is valid");
}

#[tokio::test]
async fn request_specs_are_immutable_and_target_excludes_version() {
    let sim = cluster().await;
    let upgrade = json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": "db-2", "namespace": "apps"}, "spec": {"managedApp": "db", "version": "2.0.0"}});
    let both = json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": "db-3", "namespace": "apps"}, "spec": {"managedApp": "db", "version": "2.0.0", "target": {"chart": "2.0.0"}}});
    assert!(refusal(create(&sim, both).await).contains("set either target"));
    let spaced = json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": "db-4", "namespace": "apps"}, "spec": {"managedApp": "db", "version": "2.0.0\nrm -rf"}});
    assert!(refusal(create(&sim, spaced).await).contains("spec.version"));

    create(&sim, upgrade).await.unwrap();
    let requests = api(&sim, "UpgradeRequest", "apps");
    let change = Patch::Merge(json!({"spec": {"version": "3.0.0"}}));
    let err = requests
        .patch("db-2", &PatchParams::default(), &change)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec is immutable"), "{err}");
    // Labels may change; the spec stays.
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"team": "db"}}}));
    requests
        .patch("db-2", &PatchParams::default(), &relabel)
        .await
        .unwrap();
}
