//! The world an end-to-end story runs in: kubesim with every CRD, a Git server holding a
//! small fleet repository, the simulated Flux/CSI/workload controllers, and Fluxgate's
//! controllers running in-process.

use fluxgate::api::{ManagedApp, Phase, RollbackRequest, UpgradeRequest};
use fluxgate::controller::{Context, Settings};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use kubesim::KubeSim;
use serde_json::json;
use sim::git_server::GitServer;
use sim::world::{World, WorldOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The URL the GitRepository names; the sims read the Git server through a rewrite because
/// Flux's CRD refuses `file://`.
pub const FLEET_URL: &str = "https://git.sim.test/fleet.git";
/// The repository file holding the app (an OCIRepository and a HelmRelease).
pub const APP_FILE: &str = "clusters/prod/db.yaml";

/// The app's manifests at chart tag `tag`: an OCIRepository and a HelmRelease with a
/// two-replica StatefulSet and a data volume per replica.
pub fn app_manifest(tag: &str) -> String {
    format!(
        "# The database of the apps namespace.
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata:
  name: db
  namespace: apps
spec:
  interval: 10m
  url: oci://ghcr.io/example/charts/db
  ref:
    tag: {tag} # pinned by Fluxgate
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: db
  namespace: apps
spec:
  interval: 10m
  chartRef:
    kind: OCIRepository
    name: db
  values:
    replicaCount: 2
    persistence:
    - name: data
      size: 1Gi
"
    )
}

/// A running story world; dropping it stops everything.
pub struct Story {
    /// The API server simulator.
    pub kube: KubeSim,
    /// A client of it.
    pub client: Client,
    /// The fleet repository.
    pub git: GitServer,
    /// The simulated controllers (failures can be declared through `world.failures`).
    pub world: World,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    operator: Option<tokio::task::JoinHandle<()>>,
    _cache: tempfile::TempDir,
}

impl Story {
    /// Starts the world with the app at chart tag `tag` deployed and running, its
    /// ManagedApp created with `app_spec` merged over the basics, and Fluxgate running.
    pub async fn start(tag: &str, app_spec: serde_json::Value) -> Story {
        let kube = KubeSim::start().await;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        kube.load_yaml(root.join("crds"))
            .expect("Fluxgate's CRDs load");
        kube.load_yaml(root.join("../shared/external-crds"))
            .expect("the external CRDs load");
        let client = kube.client();
        let git = GitServer::builder()
            .file(
                "clusters/prod/kustomization.yaml",
                "resources:\n- ns.yaml\n- db.yaml\n",
            )
            .file(
                "clusters/prod/ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
            )
            .file(APP_FILE, app_manifest(tag))
            .start()
            .expect("the git server starts");
        let mut options = WorldOptions::fast();
        options
            .git_url_rewrites
            .push((FLEET_URL.into(), git.file_url()));
        let world = World::start(client.clone(), options)
            .await
            .expect("the sims start");
        sim::seed::storage(&client).await.expect("storage classes");
        sim::seed::flux_system(&client, FLEET_URL, "main", "./clusters/prod")
            .await
            .expect("flux-system");
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "apps");
        wait_until("the app to run", Duration::from_secs(30), async || {
            let sts = statefulsets.get_opt("db").await.ok()??;
            (sts.status?.ready_replicas == Some(2)).then_some(())
        })
        .await;
        let mut spec = json!({"source": {"kind": "HelmRelease", "name": "db"},
                              "git": {"file": APP_FILE, "url": git.file_url(), "branch": "main"},
                              "health": {"stabilization": "1s"}});
        json_patch::merge(&mut spec, &app_spec);
        let app: ManagedApp = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "db", "namespace": "apps"}, "spec": spec
        }))
        .expect("a valid ManagedApp");
        Api::<ManagedApp>::namespaced(client.clone(), "apps")
            .create(&PostParams::default(), &app)
            .await
            .expect("the ManagedApp is accepted");
        let cache = tempfile::tempdir().expect("a temporary directory");
        let context = Arc::new(Context {
            client: client.clone(),
            settings: Settings::new(cache.path()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(fluxgate::controller::requests::run(context, async {
            let _ = stopped.await;
        }));
        Story {
            kube,
            client,
            git,
            world,
            stop: Some(stop),
            operator: Some(operator),
            _cache: cache,
        }
    }

    /// Creates an UpgradeRequest named `name` to chart `version`.
    pub async fn upgrade(&self, name: &str, version: &str) -> UpgradeRequest {
        let upgrade: UpgradeRequest = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": name, "namespace": "apps"}, "spec": {"managedApp": "db", "version": version}
        }))
        .expect("a valid UpgradeRequest");
        Api::<UpgradeRequest>::namespaced(self.client.clone(), "apps")
            .create(&PostParams::default(), &upgrade)
            .await
            .expect("the UpgradeRequest is accepted")
    }

    /// Waits until the request reaches a terminal phase and returns it; on timeout the
    /// panic shows its status.
    pub async fn finished<K>(&self, name: &str, timeout: Duration) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + HasPhase,
    {
        let api = Api::<K>::namespaced(self.client.clone(), "apps");
        let deadline = Instant::now() + timeout;
        loop {
            let current = api.get(name).await.expect("the request exists");
            if current.phase().is_some_and(Phase::is_terminal) {
                return current;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not finish: {current:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ManagedApp now.
    pub async fn app(&self) -> ManagedApp {
        Api::<ManagedApp>::namespaced(self.client.clone(), "apps")
            .get("db")
            .await
            .expect("the ManagedApp exists")
    }

    /// Stops Fluxgate's controllers.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(operator) = self.operator.take() {
            let _ = operator.await;
        }
    }
}

/// Requests whose phase a story waits on.
pub trait HasPhase {
    /// The request's phase.
    fn phase(&self) -> Option<Phase>;
}

impl HasPhase for UpgradeRequest {
    fn phase(&self) -> Option<Phase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

impl HasPhase for RollbackRequest {
    fn phase(&self) -> Option<Phase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

/// Polls `check` every 100 ms until it answers or `timeout` passes (then panics naming
/// `what`).
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
