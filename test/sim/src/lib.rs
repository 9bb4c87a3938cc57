//! sim: the simulated world around Fluxgate, driven by kubesim's watches.
//!
//! Flux source/kustomize/helm controllers that read a real Git repository, a CSI snapshot
//! controller, Deployment/StatefulSet/pod controllers, a PVC binder and git servers
//! (`file://` and smart HTTP) for tests and `fluxgate demo`.

pub mod apply;
pub mod chart;
pub mod commit_verify;
pub mod conditions;
pub mod controller;
pub mod faults;
pub mod flux_source;
pub mod git_mirror;
pub mod git_server;
pub mod helm;
pub mod helm_chart;
pub mod helm_repository;
pub mod helm_secret;
pub mod kinds;
pub mod kustomize;
pub mod kustomize_build;
pub mod oci_source;
pub mod pods;
pub mod seed;
pub mod snapshots;
pub mod volumes;
pub mod workloads;
pub mod world;
