//! `fluxgate run`: the operator process — connects to the cluster, checks the APIs it needs,
//! serves its endpoints, runs the request controllers until SIGTERM or SIGINT.

use crate::cluster::{connect, required_apis};
use crate::controller::leader::{LEASE_NAME, Leadership};
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
    /// UpgradeRequests, RollbackRequests and ManagedApps each reconciled at once.
    #[arg(long, env = "FLUXGATE_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Run only while holding the Lease `fluxgate-leader` (for several replicas).
    #[arg(long, env = "FLUXGATE_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease; by default the pod's own namespace.
    #[arg(long, env = "FLUXGATE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Renovate's output: a ConfigMap `namespace/name` whose keys hold reports or logs.
    #[arg(long, env = "FLUXGATE_RENOVATE_CONFIGMAP", value_name = "NAMESPACE/NAME",
          value_parser = crate::controller::renovate_input::RenovateSettings::parse_configmap)]
    pub renovate_configmap: Option<(String, String)>,
    /// Renovate's output: a mounted file holding a report or a log.
    #[arg(long, env = "FLUXGATE_RENOVATE_FILE", value_name = "FILE")]
    pub renovate_file: Option<PathBuf>,
    /// Automatic upgrades running at once across all apps (0 turns them off).
    #[arg(long, env = "FLUXGATE_AUTO_UPGRADE_LIMIT", default_value_t = 1)]
    pub auto_upgrade_limit: usize,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::listen()?;
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
    settings.concurrency = args.concurrency;
    settings.renovate = crate::controller::renovate_input::RenovateSettings {
        configmap: args.renovate_configmap.clone(),
        file: args.renovate_file.clone(),
    };
    settings.auto_upgrade_limit = args.auto_upgrade_limit;
    let context = std::sync::Arc::new(crate::controller::Context::new(
        cluster.client.clone(),
        settings,
        metrics,
    ));

    let mut leadership = None;
    if args.leader_election {
        let namespace = own_namespace(args.namespace.as_deref());
        let identity = identity();
        let mut joined = Leadership::join(cluster.client.clone(), &namespace, &identity).await?;
        tracing::info!(%namespace, %identity, lease = LEASE_NAME, "waiting to lead");
        tokio::select! {
            acquired = joined.acquired() => acquired?,
            () = signals.received() => {
                joined.release().await;
                let _ = stop_endpoints.send(());
                return Ok(());
            }
        }
        tracing::info!(%identity, "leading: controllers start");
        leadership = Some(joined);
    }

    let (stop_controllers, controllers_stopped) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(crate::controller::run(context, async {
        let _ = controllers_stopped.await;
    }));
    let lost = async {
        match leadership.as_mut() {
            Some(leading) => leading.lost().await,
            None => std::future::pending().await,
        }
    };
    let lost_lead = tokio::select! {
        () = signals.received() => false,
        () = lost => true,
    };
    if lost_lead {
        tracing::error!("lost the leader Lease; stopping so that only the new leader acts");
    }
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
    if let Some(leading) = leadership {
        leading.release().await;
    }
    tracing::info!("stopped");
    if lost_lead {
        anyhow::bail!(
            "lost the leader Lease {LEASE_NAME}; exiting so this replica restarts as a candidate"
        );
    }
    Ok(())
}

/// The namespace of the leader Lease: the flag, else the pod's own (from its service
/// account), else `default`.
fn own_namespace(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

/// This replica's name in the election: the pod name (HOSTNAME in a pod), else a name
/// unique to this process.
fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("fluxgate-{}", std::process::id()))
}

/// How long running work may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// SIGTERM (how Kubernetes stops a pod) and SIGINT (Ctrl-C), listened to from the start of
/// `run` to its end: a listener created later would miss a signal that arrived in between,
/// and with the default handler replaced the process would then never stop.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when either signal has arrived (also one that arrived before this call).
    async fn received(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
