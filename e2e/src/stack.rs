//! Which cluster a story runs on: kubesim, or a real control plane of its own
//! (test/realstack). [`on_both_stacks!`](crate::on_both_stacks) runs one story on both; the `given` builders start the world on the stack of the test that calls them.

use fluxgate::demo::world::{RealStack, Stack};
use realstack::{RealCluster, Unavailable};
use std::cell::RefCell;
use std::io::Write as _;

tokio::task_local! {
    /// Set while a story runs on the real stack: the control plane started for it, until
    /// the story's world takes it.
    static ON_REAL_STACK: RefCell<Option<RealCluster>>;
}

/// Runs `story` on a real control plane of its own, started first; when the real stack is
/// not built here it prints `SKIPPED: …` (past the harness's capture) and returns without
/// running it, unless it is required (`FLUXGATE_REQUIRE_REAL_STACK=1`): then it panics.
pub async fn on_real_stack<F: std::future::Future<Output = ()>>(name: &str, story: F) {
    match start_cluster().await {
        Ok(cluster) => {
            ON_REAL_STACK
                .scope(RefCell::new(Some(cluster)), story)
                .await
        }
        Err(Unavailable::Skip(why)) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {name} on the real stack: {why}"
            );
        }
        Err(Unavailable::Failed(why)) => panic!("{name} must run on the real stack: {why}"),
    }
}

/// Whether the calling story runs on the real stack.
pub fn is_real() -> bool {
    ON_REAL_STACK.try_with(|_| ()).is_ok()
}

async fn start_cluster() -> Result<RealCluster, Unavailable> {
    tokio::task::spawn_blocking(RealCluster::start)
        .await
        .expect("starting the control plane does not panic")
}

/// The stack for a world starting now: kubesim, or — inside [`on_real_stack`] — the story's
/// real control plane (its processes stop with the world).
pub async fn current() -> Stack {
    let Ok(prepared) = ON_REAL_STACK.try_with(|cluster| cluster.borrow_mut().take()) else {
        return Stack::Simulated;
    };
    let cluster = match prepared {
        Some(cluster) => cluster,
        // A second world in one story gets a control plane of its own.
        None => start_cluster()
            .await
            .unwrap_or_else(|e| panic!("starting a second real control plane: {e}")),
    };
    let client = cluster
        .client()
        .await
        .unwrap_or_else(|e| panic!("a client of the real control plane: {e:#}"));
    let operator_client = operator_client(&cluster).await;
    Stack::Real(Box::new(RealStack {
        client,
        operator_client,
        kubeconfig: cluster.kubeconfig().to_owned(),
        kubectl: cluster.kubectl(),
        snapshot_controller: true,
        keep_alive: Box::new(cluster),
    }))
}

/// The client Fluxgate's controllers use on the real stack: admin rights, Fluxgate's
/// User-Agent.
async fn operator_client(cluster: &realstack::RealCluster) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig())
        .unwrap_or_else(|e| panic!("reading the real cluster's kubeconfig: {e}"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("loading the real cluster's kubeconfig: {e}"));
    kube::Client::try_from(fluxgate::cluster::connect::identified(config))
        .unwrap_or_else(|e| panic!("the operator's client of the real cluster: {e}"))
}

/// Runs each named story (an `async fn()` of the test file) on both stacks: as test
/// `<story>::on_kubesim`, and as `<story>::on_the_real_stack` on a real control plane of its
/// own (skipped, saying so, where the real stack is not built). The body is the same code;
/// the `given` builders it calls start the world on the stack of the test.
///
/// ```ignore
/// async fn a_dry_run_changes_nothing() { let story = app().running_at("v1.4.0").await; … }
/// e2e::on_both_stacks!(a_dry_run_changes_nothing);
/// ```
#[macro_export]
macro_rules! on_both_stacks {
    ($($story:ident),+ $(,)?) => {
        $(
            mod $story {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_kubesim() {
                    super::$story().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_the_real_stack() {
                    $crate::stack::on_real_stack(stringify!($story), super::$story()).await
                }
            }
        )+
    };
}

/// A cluster with Fluxgate's, Flux's and the VolumeSnapshot CRDs and nothing running on it:
/// for stories about what the API server itself accepts.
pub struct BareCluster {
    /// A client with every right.
    pub client: kube::Client,
    /// A kubeconfig with every right.
    pub kubeconfig: std::path::PathBuf,
    /// The kubectl to use: the cluster's own release on the real stack, the one on `PATH`
    /// (if any) on kubesim.
    pub kubectl: Option<std::path::PathBuf>,
    _keep_alive: Box<dyn std::any::Any + Send + Sync>,
}

/// A [`BareCluster`] on the stack of the calling test.
pub async fn bare_cluster() -> BareCluster {
    let (client, kubeconfig, kubectl, keep_alive): (_, _, _, Box<dyn std::any::Any + Send + Sync>) =
        match current().await {
            Stack::Simulated => {
                let kube = kubesim::KubeSim::start().await;
                let kubectl = std::process::Command::new("kubectl")
                    .args(["version", "--client"])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    .then(|| "kubectl".into());
                (
                    kube.client(),
                    kube.kubeconfig_path(),
                    kubectl,
                    Box::new(kube),
                )
            }
            Stack::Real(real) => {
                let real = *real;
                (
                    real.client,
                    real.kubeconfig,
                    Some(real.kubectl),
                    real.keep_alive,
                )
            }
        };
    fluxgate::demo::world::install_crds(&client)
        .await
        .unwrap_or_else(|e| panic!("installing the CRDs: {e:#}"));
    BareCluster {
        client,
        kubeconfig,
        kubectl,
        _keep_alive: keep_alive,
    }
}
