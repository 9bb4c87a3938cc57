//! Wiring (thin): the kube controllers — UpgradeRequest and RollbackRequest (observe the
//! cluster and Git, ask the pure [`crate::workflow`] what to do, perform its actions, write
//! the request's status once per reconcile) and ManagedApp (keep each app's status true,
//! create automatic upgrades).

pub mod act;
pub mod admission;
pub mod app_status;
pub mod apps;
pub mod git_access;
pub mod git_write;
pub mod leader;
pub mod observe;
pub mod preflight;
pub mod renovate_input;
pub mod requests;
pub mod rollback_checks;
pub mod suspend_in_git;

use crate::cluster::cache::{Caches, Cluster};
use crate::git::{Author, GitConfig};
use kube::Client;
use std::path::PathBuf;
use std::sync::Arc;

/// The finalizer that lets a running request undo itself before it goes.
pub const FINALIZER: &str = "fluxgate.dev/cleanup";

/// Operator settings (flags and environment of `fluxgate run`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Git cache directory and network limits.
    pub git: GitConfig,
    /// Author of Fluxgate's commits.
    pub author: Author,
    /// Objects of each kind reconciled at once.
    pub concurrency: u16,
    /// Where Renovate's output is read from.
    pub renovate: renovate_input::RenovateSettings,
    /// Automatic upgrades running at once across all apps (0 turns them off).
    pub auto_upgrade_limit: usize,
}

impl Settings {
    /// Defaults with the Git cache under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Settings {
        Settings {
            git: GitConfig::new(cache_dir),
            author: Author::new("Fluxgate", "fluxgate@fluxgate.dev"),
            concurrency: 4,
            renovate: renovate_input::RenovateSettings::default(),
            auto_upgrade_limit: 1,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The cluster, read through the caches every controller shares.
    pub cluster: Cluster,
    /// The caches behind `cluster`, fed while [`run`] runs.
    pub caches: Arc<Caches>,
    /// Operator settings.
    pub settings: Settings,
    /// Where operations, phase durations and errors are counted.
    pub metrics: crate::telemetry::metrics::Metrics,
}

impl Context {
    /// A context whose reads come from caches that [`run`] keeps current.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: crate::telemetry::metrics::Metrics,
    ) -> Context {
        let caches = Caches::new();
        Context {
            cluster: Cluster::cached(client, caches.clone()),
            caches,
            settings,
            metrics,
        }
    }
}

/// Runs every controller, and the watches that feed their caches, until `shutdown`
/// completes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let watches = ctx.caches.clone().run(ctx.cluster.client().clone());
    let controllers = async {
        futures::join!(
            requests::run(ctx.clone(), shutdown.clone()),
            apps::run(ctx.clone(), shutdown)
        );
    };
    // The watches run until the controllers have stopped.
    tokio::select! {
        () = controllers => {}
        () = watches => {}
    }
}
