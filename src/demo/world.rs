//! The simulated world the demo and the end-to-end stories run in: kubesim with every CRD,
//! a Git server holding a small fleet repository, the simulated Flux/CSI/workload
//! controllers, and Fluxgate's controllers running in-process.

use crate::api::{ManagedApp, Phase, RollbackRequest, UpgradeRequest};
use crate::controller::{Context, Settings};
use anyhow::Context as _;
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

/// A running simulated world; dropping it stops everything.
pub struct DemoWorld {
    /// The API server simulator.
    pub kube: KubeSim,
    /// A client of it.
    pub client: Client,
    /// The fleet repository.
    pub git: GitServer,
    /// The simulated controllers (failures can be declared through `world.failures`).
    pub world: World,
    /// Fluxgate's metrics (they survive operator restarts, unlike a real pod's).
    pub metrics: crate::telemetry::metrics::Metrics,
    /// The operator's settings; change them before (re)starting it.
    pub settings: Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    operator: Option<tokio::task::JoinHandle<()>>,
    _cache: tempfile::TempDir,
}

/// Where the third-party (Flux, VolumeSnapshot) CRDs are read from: `FLUXGATE_EXTERNAL_CRDS`,
/// else `../shared/external-crds` beside the repository.
fn external_crds() -> std::path::PathBuf {
    std::env::var_os("FLUXGATE_EXTERNAL_CRDS")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/external-crds"))
}

impl DemoWorld {
    /// Starts the world with the app at chart tag `tag` deployed and running, its
    /// ManagedApp created with `app_spec` merged over the basics, and Fluxgate running.
    pub async fn start(tag: &str, app_spec: serde_json::Value) -> anyhow::Result<DemoWorld> {
        let kube = KubeSim::start().await;
        for (file, crd) in crate::api::crds() {
            kube.put(serde_json::to_value(crd)?)
                .map_err(|e| anyhow::anyhow!("loading Fluxgate's CRD {file}: {e:?}"))?;
        }
        let external = external_crds();
        kube.load_yaml(&external).map_err(|e| {
            anyhow::anyhow!(
                "cannot load the Flux and VolumeSnapshot CRDs from {}: {e:?}; point FLUXGATE_EXTERNAL_CRDS at a directory holding them",
                external.display()
            )
        })?;
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
            .context("starting the local Git server (is `git` installed?)")?;
        let mut options = WorldOptions::fast();
        options
            .git_url_rewrites
            .push((FLEET_URL.into(), git.file_url()));
        let world = World::start(client.clone(), options)
            .await
            .context("starting the simulated controllers")?;
        sim::seed::storage(&client)
            .await
            .context("creating storage classes")?;
        sim::seed::flux_system(&client, FLEET_URL, "main", "./clusters/prod")
            .await
            .context("bootstrapping Flux")?;
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "apps");
        wait_until("the app to run", Duration::from_secs(60), async || {
            let sts = statefulsets.get_opt("db").await.ok()??;
            (sts.status?.ready_replicas == Some(2)).then_some(())
        })
        .await?;
        let mut spec = json!({"source": {"kind": "HelmRelease", "name": "db"},
                              "git": {"file": APP_FILE, "url": git.file_url(), "branch": "main"},
                              "health": {"stabilization": "1s"}});
        json_patch::merge(&mut spec, &app_spec);
        let app: ManagedApp = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "db", "namespace": "apps"}, "spec": spec
        }))
        .context("the ManagedApp of the demo")?;
        Api::<ManagedApp>::namespaced(client.clone(), "apps")
            .create(&PostParams::default(), &app)
            .await
            .context("creating the ManagedApp")?;
        let cache = tempfile::tempdir().context("creating the Git cache directory")?;
        let mut story = DemoWorld {
            settings: Settings::new(cache.path()),
            kube,
            client,
            git,
            world,
            metrics: crate::telemetry::metrics::Metrics::new(),
            stop: None,
            operator: None,
            _cache: cache,
        };
        story.start_operator()?;
        Ok(story)
    }

    /// Starts Fluxgate's controllers in-process (with the operator's User-Agent), as
    /// `fluxgate run` would; a no-op while they run.
    pub fn start_operator(&mut self) -> anyhow::Result<()> {
        if self.operator.is_some() {
            return Ok(());
        }
        let context = Arc::new(Context {
            client: operator_client(&self.kube)?,
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.operator = Some(tokio::spawn(crate::controller::run(context, async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
        Ok(())
    }

    /// Kills Fluxgate's controllers at once, mid-reconcile, the way a crashed or evicted
    /// pod stops: nothing gets to finish. Start them again with [`Self::start_operator`].
    pub async fn kill_operator(&mut self) {
        self.stop = None;
        if let Some(operator) = self.operator.take() {
            operator.abort();
            let _ = operator.await;
        }
    }

    /// Creates an UpgradeRequest named `name` to chart `version`.
    pub async fn upgrade(&self, name: &str, version: &str) -> anyhow::Result<UpgradeRequest> {
        let upgrade: UpgradeRequest = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": name, "namespace": "apps"}, "spec": {"managedApp": "db", "version": version}
        }))?;
        Api::<UpgradeRequest>::namespaced(self.client.clone(), "apps")
            .create(&PostParams::default(), &upgrade)
            .await
            .with_context(|| format!("creating UpgradeRequest {name}"))
    }

    /// Waits until the request reaches a terminal phase and returns it; the timeout error
    /// shows its status.
    pub async fn finished<K>(&self, name: &str, timeout: Duration) -> anyhow::Result<K>
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
            let current = api
                .get(name)
                .await
                .with_context(|| format!("reading {name}"))?;
            if current.phase().is_some_and(Phase::is_terminal) {
                return Ok(current);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{name} did not finish within {}s: {current:#?}",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ManagedApp now.
    pub async fn app(&self) -> anyhow::Result<ManagedApp> {
        Api::<ManagedApp>::namespaced(self.client.clone(), "apps")
            .get("db")
            .await
            .context("reading the ManagedApp")
    }

    /// Stops Fluxgate's controllers gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(operator) = self.operator.take() {
            let _ = operator.await;
        }
    }
}

/// A client of `kube` that sends Fluxgate's User-Agent, so the request log tells the
/// operator's requests apart from the sims' and the story's.
pub fn operator_client(kube: &KubeSim) -> anyhow::Result<Client> {
    let config = kube::Config::new(kube.base_url().parse()?);
    Client::try_from(crate::cluster::connect::identified(config))
        .context("creating the operator's client")
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

/// Polls `check` every 100 ms until it answers; an error naming `what` after `timeout`.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
