//! `fluxgate run`: the operator process — connects to the cluster, checks the APIs it needs,
//! serves its endpoints and runs until SIGTERM or SIGINT.

use crate::cluster::{connect, required_apis};
use crate::telemetry::{
    http::{Readiness, Server},
    logging::{self, LogFormat},
    metrics::Metrics,
};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `fluxgate run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file to use; by default KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long)]
    pub context: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "FLUXGATE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log format: json (default, for log collectors) or text (for people).
    #[arg(long, env = "FLUXGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    logging::init(args.log_format);
    let cluster = connect::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let server = Server::bind(args.metrics_addr, metrics, readiness.clone()).await?;
    let endpoints = server.local_addr()?;
    let (stop_endpoints, endpoints_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = endpoints_stopped.await;
    }));
    tracing::info!(%endpoints, "serving /healthz, /readyz and /metrics");

    required_apis::check_required_apis(&cluster.client, &cluster.url).await?;
    readiness.set(true);
    tracing::info!(cluster = %cluster.url, "connected; every required API is served");

    shutdown_signal().await?;
    tracing::info!("shutting down");
    readiness.set(false);
    let _ = stop_endpoints.send(());
    serving.await??;
    Ok(())
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    Ok(())
}
