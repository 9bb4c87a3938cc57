//! Which cluster a story runs on: kubesim, or a real control plane of its own
//! (test/realstack), with Flux simulated or real. [`on_both_stacks!`](crate::on_both_stacks)
//! runs one story on kubesim and on the real control plane with the Flux sims;
//! [`on_all_stacks!`](crate::on_all_stacks) on kubesim and on the real control plane with the
//! real Flux controllers. The `given` builders start the world on the stack of the test that
//! calls them.

use crate::real_flux::StoryFlux;
use crate::real_operator::{ChartInstall, InstalledIn, shared_values};
use fluxgate::demo::world::{RealStack, Stack};
use realstack::{RealCluster, Unavailable};
use std::io::Write as _;
use std::sync::Arc;

/// A story's real stack: its control plane with the chart installed, and real Flux if asked.
struct RealRun {
    install: Arc<ChartInstall>,
    flux: Option<Arc<StoryFlux>>,
}

tokio::task_local! {
    /// Set while a story runs on the real stack.
    static ON_REAL_STACK: Arc<RealRun>;
}

/// Which Flux a story on the real stack runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FluxOf {
    /// test/sim's Flux controllers, writing to the real API server.
    Sims,
    /// The real source-, kustomize- and helm-controller ([`StoryFlux`]).
    Real,
}

/// Runs `story` on a real control plane of its own with `charts/fluxgate` installed by
/// real Helm, Fluxgate running as the chart's ServiceAccount; afterwards the story fails
/// if the API server refused that ServiceAccount anything (the chart lacks a right).
/// Where the real stack or Helm is not available here it prints `SKIPPED: …` (past the
/// harness's capture) and returns without running the story, unless they are required
/// (`FLUXGATE_REQUIRE_REAL_STACK=1`): then it panics.
pub async fn on_real_stack<F: std::future::Future<Output = ()>>(name: &str, story: F) {
    run_on_real_stack(name, FluxOf::Sims, story).await
}

/// [`on_real_stack`] with the real Flux controllers started on the story's control plane
/// ([`StoryFlux`]: registry, Helm repository and pod webhook too) instead of the Flux sims.
pub async fn on_real_flux<F: std::future::Future<Output = ()>>(name: &str, story: F) {
    run_on_real_stack(name, FluxOf::Real, story).await
}

/// [`on_real_stack`] with `flux`.
pub async fn run_on_real_stack<F: std::future::Future<Output = ()>>(
    name: &str,
    flux: FluxOf,
    story: F,
) {
    let started = std::time::Instant::now();
    let required = std::env::var(realstack::REQUIRE_ENV).is_ok_and(|v| v == "1");
    let Some(python) = crate::chart::helm_python(name) else {
        assert!(
            !required,
            "{}=1, but there is no Python with helm-python to install the chart (set HELM_PYTHON)",
            realstack::REQUIRE_ENV
        );
        return;
    };
    let cluster = match tokio::task::spawn_blocking(RealCluster::start)
        .await
        .expect("starting the control plane does not panic")
    {
        Ok(cluster) => cluster,
        Err(Unavailable::Skip(why)) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {name} on the real stack: {why}"
            );
            return;
        }
        Err(Unavailable::Failed(why)) => panic!("{name} must run on the real stack: {why}"),
    };
    let install = ChartInstall::install(
        InstalledIn::Own(Box::new(cluster)),
        &python,
        &shared_values(),
    )
    .await
    .unwrap_or_else(|e| panic!("installing charts/fluxgate for {name}: {e:#}"));
    let install = Arc::new(install);
    let real_flux = match flux {
        FluxOf::Sims => None,
        FluxOf::Real => Some(Arc::new(
            StoryFlux::start(install.cluster(), &python)
                .await
                .unwrap_or_else(|e| panic!("real Flux for {name}: {e:#}")),
        )),
    };
    let mark = install
        .audit_log()
        .mark()
        .unwrap_or_else(|e| panic!("reading the audit log: {e:#}"));
    let ready = started.elapsed();
    let run = Arc::new(RealRun {
        install: install.clone(),
        flux: real_flux,
    });
    ON_REAL_STACK.scope(run, story).await;
    eprintln!(
        "realstack: {name} ({flux:?} Flux): stack ready in {:.1} s, story {:.1} s",
        ready.as_secs_f64(),
        (started.elapsed() - ready).as_secs_f64()
    );
    let requests = install
        .requests_since(&mark)
        .await
        .unwrap_or_else(|e| panic!("reading the audit log after {name}: {e:#}"));
    let anonymous = requests.filter(|e| e.user_agent != fluxgate::cluster::connect::USER_AGENT);
    assert!(
        anonymous.is_empty(),
        "{name}: requests of Fluxgate's ServiceAccount without Fluxgate's User-Agent:\n{}",
        anonymous.render()
    );
    eprintln!(
        "realstack: {name}: Fluxgate made {} requests as {}",
        requests.len(),
        install.username()
    );
    let refused = requests.forbidden();
    assert!(
        refused.is_empty(),
        "{name}: the API server refused Fluxgate, running as {}, what the chart does not grant:\n{}",
        install.username(),
        refused.render()
    );
}

/// Whether the calling story runs on the real stack.
pub fn is_real() -> bool {
    ON_REAL_STACK.try_with(|_| ()).is_ok()
}

/// The stack for a world starting now: kubesim, or — inside [`on_real_stack`] — the story's
/// real control plane, where Fluxgate's client is the chart's ServiceAccount.
pub async fn current() -> Stack {
    let Ok(run) = ON_REAL_STACK.try_with(Arc::clone) else {
        return Stack::Simulated;
    };
    let install = run.install.clone();
    let cluster = install.cluster();
    let client = cluster
        .client()
        .await
        .unwrap_or_else(|e| panic!("a client of the real control plane: {e:#}"));
    let operator_client = install
        .operator_client()
        .await
        .unwrap_or_else(|e| panic!("a client as the chart's ServiceAccount: {e:#}"));
    Stack::Real(Box::new(RealStack {
        client,
        operator_client,
        kubeconfig: cluster.kubeconfig().to_owned(),
        kubectl: cluster.kubectl(),
        snapshot_controller: true,
        audit_log: cluster.audit_log().to_owned(),
        flux: run
            .flux
            .clone()
            .map(|flux| flux as Arc<dyn fluxgate::demo::world::RealFlux>),
        keep_alive: Box::new(run),
    }))
}

/// Runs each named story (an `async fn()` of the test file) on both stacks: as test
/// `<story>::on_kubesim`, and as `<story>::on_the_real_stack` on a real control plane of its
/// own ([`on_real_stack`]). The body is the same code; the `given` builders it calls start
/// the world on the stack of the test.
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

/// Runs each named story on kubesim (`<story>::on_kubesim`) and on a real control plane of
/// its own with the real Flux controllers (`<story>::on_real_flux`, [`on_real_flux`]): the
/// same body, the world started on the stack of the test. Stories move here from
/// [`on_both_stacks!`](crate::on_both_stacks) once they pass on real Flux (the real Flux run
/// replaces the run with the Flux sims on the real control plane).
#[macro_export]
macro_rules! on_all_stacks {
    ($($story:ident),+ $(,)?) => {
        $(
            mod $story {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_kubesim() {
                    super::$story().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_real_flux() {
                    $crate::stack::on_real_flux(stringify!($story), super::$story()).await
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
