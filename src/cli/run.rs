//! `fluxgate run`: the operator process — connects to the cluster, checks the APIs it needs,
//! serves its endpoints, runs the request controllers until SIGTERM or SIGINT.

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
    /// Directory of the Git clone cache (one bare repository per remote and branch).
    #[arg(
        long,
        env = "FLUXGATE_GIT_CACHE_DIR",
        default_value = "/var/cache/fluxgate/git"
    )]
    pub git_cache_dir: PathBuf,
    /// Author name of Fluxgate's commits.
    #[arg(long, env = "FLUXGATE_GIT_AUTHOR_NAME", default_value = "Fluxgate")]
    pub git_author_name: String,
    /// Author email of Fluxgate's commits.
    #[arg(
        long,
        env = "FLUXGATE_GIT_AUTHOR_EMAIL",
        default_value = "fluxgate@fluxgate.dev"
    )]
    pub git_author_email: String,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    logging::init(args.log_format);
    let cluster = connect::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let server = Server::bind(args.metrics_addr, metrics.clone(), readiness.clone()).await?;
    let endpoints = server.local_addr()?;
    let (stop_endpoints, endpoints_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = endpoints_stopped.await;
    }));
    tracing::info!(%endpoints, "serving /healthz, /readyz and /metrics");

    required_apis::check_required_apis(&cluster.client, &cluster.url).await?;
    readiness.set(true);
    tracing::info!(cluster = %cluster.url, "connected; every required API is served");

    let mut settings = crate::controller::Settings::new(&args.git_cache_dir);
    settings.author = crate::git::Author::new(&args.git_author_name, &args.git_author_email);
    let context = std::sync::Arc::new(crate::controller::Context {
        client: cluster.client.clone(),
        settings,
        metrics,
    });
    let (stop_controllers, controllers_stopped) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(crate::controller::run(context, async {
        let _ = controllers_stopped.await;
    }));
    shutdown_signal().await?;
    tracing::info!("shutting down");
    readiness.set(false);
    let _ = stop_controllers.send(());
    let _ = stop_endpoints.send(());
    // Running reconciles get a bounded time to finish (Kubernetes kills the pod after its
    // grace period anyway); every step is idempotent, so cutting one short loses nothing.
    let stopping = async {
        controllers.await?;
        serving.await??;
        anyhow::Ok(())
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, stopping).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            seconds = SHUTDOWN_GRACE.as_secs(),
            "work still running at shutdown was cut short"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long running work may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
