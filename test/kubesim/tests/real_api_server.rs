//! kubesim agrees with the real API server: the conformance cases of `common::cases`, which
//! `kube_rs.rs` runs on kubesim, and those of `common::kubectl_cases`, which `kubectl.rs`
//! runs on kubesim, run here unchanged on the real control plane of test/realstack
//! (Kubernetes v1.36.3, with its own kubectl), each in a namespace of its own. A case that fails
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

#[tokio::test]
async fn storage_defaults_default_class_and_data_sources() {
    if let Some((client, ns)) = real("storage").await {
        cases::storage_defaults_default_class_and_data_sources(client, &ns).await;
    }
}

#[tokio::test]
async fn a_bound_claim_request_never_shrinks_to_its_capacity() {
    if let Some((client, ns)) = real("claim-size").await {
        cases::a_bound_claim_request_never_shrinks_to_its_capacity(client, &ns).await;
    }
}

/// The Flux, VolumeSnapshot and Fluxgate CRDs, installed once into the shared real control
/// plane (by kubectl, the same files and way as the kubectl cases) and Established.
async fn with_flux_crds() {
    let cluster = RealCluster::shared_or_skip().expect("the real control plane is up");
    tokio::task::spawn_blocking(move || common::kubectl::real_crds(cluster))
        .await
        .expect("installing the CRDs into the real control plane");
}

#[tokio::test]
async fn generation_and_status_subresource() {
    if let Some((client, ns)) = real("generation").await {
        with_flux_crds().await;
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

/// Runs a kubectl case on the real control plane, in namespace `case-kubectl-<case>`.
macro_rules! kubectl_case {
    ($case:ident) => {
        #[tokio::test]
        async fn $case() {
            if let Some(t) = Target::real(stringify!($case)).await {
                kubectl_cases::$case(&t).await;
            }
        }
    };
}

/// The kubectl cases, as `kubectl_<case>`.
mod kubectl {
    use super::common::kubectl::Target;
    use super::common::kubectl_cases;

    kubectl_case!(apply_crds_and_samples_then_get);
    kubectl_case!(patch_merge_json_strategic);
    kubectl_case!(server_side_apply_conflicts_and_force);
    kubectl_case!(delete_waits_for_finalizer_removal);
    kubectl_case!(wait_for_condition_and_jsonpath);
    kubectl_case!(get_watch_with_request_timeout);
    kubectl_case!(get_watch_json_sees_an_update);
    kubectl_case!(create_generators_send_protobuf);
    kubectl_case!(stale_replace_is_a_conflict);
    kubectl_case!(tables_of_crds_and_builtins);
    kubectl_case!(auth_can_i_and_whoami);
    kubectl_case!(explain_flux_kind_and_managed_app);
    kubectl_case!(apply_then_diff);
    kubectl_case!(delete_cascade_foreground);
    kubectl_case!(crd_schema_violations_are_refused_with_the_real_messages);
}
