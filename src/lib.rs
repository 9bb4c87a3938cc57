//! Fluxgate: upgrades Flux-managed applications safely — CSI snapshots, a Git commit and
//! health checks as one unit, with rollback that restores data and reverts Git together.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
#[cfg(feature = "demo")]
pub mod demo;
pub mod git;
pub mod manifest;
pub mod renovate;
pub mod telemetry;
pub mod workflow;
