//! sim: the simulated world around Fluxgate, driven by kubesim's watches.
//!
//! Flux source/kustomize/helm controllers that read a real Git repository; a CSI driver
//! stand-in (provisioner, snapshotter sidecar, node plugin); the cluster's own controllers
//! for where none run (kubesim): Deployment/StatefulSet/pod controllers, the scheduler's
//! volume binding, the PV controller and external-snapshotter's snapshot-controller; and git
//! servers (`file://` and smart HTTP) for tests and `fluxgate demo`.

pub mod apply;
pub mod chart;
pub mod commit_verify;
pub mod conditions;
pub mod controller;
pub mod csi;
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
pub mod quantity;
pub mod scheduler;
pub mod seed;
pub mod snapshots;
pub mod volumes;
pub mod workloads;
pub mod world;
