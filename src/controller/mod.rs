//! Wiring (thin): the kube controllers for UpgradeRequest and RollbackRequest that observe
//! the cluster and Git, ask the pure [`crate::workflow`] what to do, perform its actions and
//! write the request's status once per reconcile.

pub mod act;
pub mod admission;
pub mod app_status;
pub mod git_access;
pub mod observe;
pub mod preflight;
pub mod requests;

use crate::git::{Author, GitConfig};
use kube::Client;
use std::path::PathBuf;

/// The finalizer that lets a running request undo itself before it goes.
pub const FINALIZER: &str = "fluxgate.dev/cleanup";

/// Operator settings (flags and environment of `fluxgate run`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Git cache directory and network limits.
    pub git: GitConfig,
    /// Author of Fluxgate's commits.
    pub author: Author,
    /// Requests reconciled at once.
    pub concurrency: u16,
}

impl Settings {
    /// Defaults with the Git cache under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Settings {
        Settings {
            git: GitConfig::new(cache_dir),
            author: Author::new("Fluxgate", "fluxgate@fluxgate.dev"),
            concurrency: 4,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator settings.
    pub settings: Settings,
    /// Where operations, phase durations and errors are counted.
    pub metrics: crate::telemetry::metrics::Metrics,
}
