//! Leader election through a Lease, so that of several replicas exactly one runs the
//! controllers: every write Fluxgate makes is gated on holding it.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "fluxgate-leader";
/// Seconds a lease lasts without renewal; a crashed leader is replaced after about this.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews.
const GRACE_SECONDS: u64 = 5;
/// How long stepping down may take.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A candidate's hold on the Lease.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    manager: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Joins the election for the Lease in `namespace` as `identity` (the pod name).
    pub async fn join(client: Client, namespace: &str, identity: &str) -> anyhow::Result<Self> {
        let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .with_field_manager(crate::cluster::FIELD_MANAGER)
            .build()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot join the leader election (Lease {namespace}/{LEASE_NAME}): {}; \
                     the service account needs get, create and patch on leases in {namespace}",
                    crate::cluster::error::describe(&e)
                )
            })?;
        let (leading, manager) = manager.watch().await;
        Ok(Leadership { leading, manager })
    }

    /// Waits until this replica leads.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        self.leading
            .wait_for(|leading| *leading)
            .await
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("the leader election stopped before this replica led"))
    }

    /// Completes when this replica stops leading (the lease was lost or the election ended).
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|leading| !*leading).await;
    }

    /// Steps down, releasing the Lease so another replica takes over at once; bounded, as
    /// an unreachable API server must not keep the process from stopping (the Lease then
    /// expires on its own).
    pub async fn release(self) {
        drop(self.leading);
        match tokio::time::timeout(RELEASE_TIMEOUT, self.manager).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader Lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader election task failed"),
            Err(_) => tracing::warn!(
                "releasing the leader Lease took over {}s; it expires on its own",
                RELEASE_TIMEOUT.as_secs()
            ),
        }
    }
}
