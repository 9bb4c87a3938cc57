//! The only code that talks to the Kubernetes API about the cluster around Fluxgate: Flux,
//! snapshots, workloads, discovery and health (plus the pure rules for reading them).

pub mod connect;
pub mod discovery;
pub mod flux;
pub mod health;
pub mod helm_release;
pub mod required_apis;
pub mod snapshots;
pub mod workloads;
