//! kubesim agrees with the real API server: the conformance cases of `common::cases`, which
//! `kube_rs.rs` runs on kubesim, run here unchanged on the real control plane of
//! test/realstack (Kubernetes v1.36.3), each in a namespace of its own. A case that fails
//! here and passes on kubesim is a difference to fix in kubesim (or to write down in its
//! documented differences with the reason it cannot be fixed).
//!
//! Without the real binaries each test prints `SKIPPED: …` and passes, unless
//! FLUXGATE_REQUIRE_REAL_STACK=1 (CI), where they must run.

mod common;

use common::cases;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use realstack::RealCluster;
use serde_json::json;

/// A client of the shared real control plane and a fresh namespace named after the case;
/// `None` when the real stack is not built here (and not required).
async fn real(case: &str) -> Option<(Client, String)> {
    let cluster = RealCluster::shared_or_skip()?;
    let client = cluster
        .client()
        .await
        .unwrap_or_else(|e| panic!("a client of the real control plane: {e:#}"));
    let namespace = format!("case-{case}");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {namespace}: {e}"));
    Some((client, namespace))
}

#[tokio::test]
async fn crud_generate_name_and_error_statuses() {
    if let Some((client, ns)) = real("crud").await {
        cases::crud_generate_name_and_error_statuses(client, &ns).await;
    }
}

#[tokio::test]
async fn metadata_only_lists_and_watches() {
    if let Some((client, ns)) = real("metadata").await {
        cases::metadata_only_lists_and_watches(client, &ns).await;
    }
}

#[tokio::test]
async fn watches_deliver_every_change_in_order_with_growing_versions() {
    if let Some((client, ns)) = real("watch").await {
        cases::watches_deliver_every_change_in_order_with_growing_versions(client, &ns).await;
    }
}

#[tokio::test]
async fn label_values_over_63_characters_are_refused_in_objects_and_selectors() {
    if let Some((client, ns)) = real("labels").await {
        cases::label_values_over_63_characters_are_refused_in_objects_and_selectors(client, &ns)
            .await;
    }
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    if let Some((client, ns)) = real("finalizers").await {
        cases::finalizers_hold_deletion_until_removed(client, &ns).await;
    }
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    if let Some((client, ns)) = real("owners").await {
        cases::owner_references_are_garbage_collected(client, &ns).await;
    }
}

#[tokio::test]
async fn selectors_limit_and_continue() {
    if let Some((client, ns)) = real("selectors").await {
        cases::selectors_limit_and_continue(client, &ns).await;
    }
}

#[tokio::test]
async fn patches_merge_json_strategic_and_scale() {
    if let Some((client, ns)) = real("patches").await {
        cases::patches_merge_json_strategic_and_scale(client, &ns).await;
    }
}

/// kubesim's own Flux and VolumeSnapshot CRDs, installed once into the shared real control
/// plane and waited for until Established (the real CRD controllers are not instant).
async fn with_flux_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for (file, text) in kubesim::third_party::CRDS {
                let crd: CustomResourceDefinition = serde_saphyr::from_str(text)
                    .unwrap_or_else(|e| panic!("kubesim's CRD {file} parses: {e}"));
                let name = crd.metadata.name.clone().unwrap_or_default();
                match crds.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => panic!("installing CRD {file} into the real API server: {e}"),
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    let established = crds
                        .get(&name)
                        .await
                        .ok()
                        .and_then(|c| c.status)
                        .and_then(|s| s.conditions)
                        .is_some_and(|c| {
                            c.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        });
                    if established {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "CRD {name} not Established within 30 s"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        })
        .await;
}

#[tokio::test]
async fn generation_and_status_subresource() {
    if let Some((client, ns)) = real("generation").await {
        with_flux_crds(&client).await;
        cases::generation_and_status_subresource(client, &ns).await;
    }
}

#[tokio::test]
async fn protected_groups_need_api_approval() {
    if let Some((client, _)) = real("approval").await {
        cases::protected_groups_need_api_approval(client).await;
    }
}

#[tokio::test]
async fn custom_crd_schema_cel_transition_rules_and_versions() {
    if let Some((client, ns)) = real("widgets").await {
        cases::custom_crd_schema_cel_transition_rules_and_versions(client, &ns).await;
    }
}

#[tokio::test]
async fn server_side_apply_ownership_and_lease_election() {
    if let Some((client, ns)) = real("apply").await {
        cases::server_side_apply_ownership_and_lease_election(client, &ns).await;
    }
}

#[tokio::test]
async fn namespace_deletion_removes_its_objects() {
    if let Some((client, ns)) = real("nsdelete").await {
        cases::namespace_deletion_removes_its_objects(client, &ns).await;
    }
}
