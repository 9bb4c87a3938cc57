//! The only code that talks to the Kubernetes API about the cluster around Fluxgate: Flux,
//! snapshots, workloads, discovery and health (plus the pure rules for reading them).

pub mod cache;
pub mod connect;
pub mod discovery;
pub mod error;
pub mod flux;
pub mod health;
pub mod helm_release;
pub mod labels;
pub mod required_apis;
pub mod snapshots;
pub mod workloads;

/// The field manager of every write Fluxgate makes.
pub const FIELD_MANAGER: &str = "fluxgate.dev";

/// Patch parameters for Fluxgate's writes (its field manager).
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}
