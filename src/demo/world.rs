//! The world the demo and the end-to-end stories run in: a cluster with every CRD (kubesim
//! in process, or a real control plane: [`Stack`]), a Git server holding a small fleet
//! repository, Flux (simulated, or the real controllers: [`RealFlux`]), the CSI driver
//! stand-in and — on kubesim — workload controllers, and Fluxgate's controllers running
//! in-process.

use crate::api::{ManagedApp, Phase, RollbackRequest, UpgradeRequest};
use crate::controller::{Context, Settings};
use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use kubesim::KubeSim;
use serde_json::json;
use sim::faults::Failures;
use sim::git_server::{GitServer, WriteRefusal};
use sim::world::{World, WorldOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The URL the GitRepository names; the sims read the Git server through a rewrite because
/// Flux's CRD refuses `file://`.
pub const FLEET_URL: &str = "https://git.sim.test/fleet.git";
/// The repository file holding the app (an OCIRepository and a HelmRelease).
pub const APP_FILE: &str = "clusters/prod/db.yaml";
/// The directory Flux's root Kustomization `flux-system` applies.
pub const FLEET_PATH: &str = "./clusters/prod";

/// The app's manifests at chart tag `tag`: an OCIRepository and a HelmRelease with a
/// two-replica StatefulSet and a data volume per replica.
pub fn app_manifest(tag: &str) -> String {
    helm_app_manifest("db", tag, 2)
}

/// Where the fleet's OCIRepositories find their charts (`<this>/<chart>`); on real Flux the
/// world rewrites it to [`RealFlux::oci_charts_url`].
pub const OCI_CHARTS: &str = "oci://ghcr.io/example/charts";

/// The manifests of a HelmRelease app `name` in namespace `apps` at chart tag `tag`: an
/// OCIRepository and a HelmRelease whose chart runs a StatefulSet of `replicas` pods with a
/// data volume each.
pub fn helm_app_manifest(name: &str, tag: &str, replicas: u32) -> String {
    helm_app_manifest_with(name, tag, replicas, "")
}

/// [`helm_app_manifest`] with `release_spec` (YAML lines indented for the HelmRelease's
/// `spec`, e.g. `"  timeout: 2s\n"`) at the end of the HelmRelease's spec.
pub fn helm_app_manifest_with(name: &str, tag: &str, replicas: u32, release_spec: &str) -> String {
    format!(
        "# The database of the apps namespace.
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata:
  name: {name}
  namespace: apps
spec:
  interval: 10m
  url: {OCI_CHARTS}/{name}
  ref:
    tag: {tag} # pinned by Fluxgate
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: {name}
  namespace: apps
spec:
  interval: 10m
  chartRef:
    kind: OCIRepository
    name: {name}
  values:
    replicaCount: {replicas}
    persistence:
    - name: data
      size: 1Gi
{release_spec}"
    )
}

/// The URL of the simulated Helm repository [`Fleet::helm_repository_app`] charts come from.
pub const CHARTS_URL: &str = "https://charts.example.com";

/// The manifests of a HelmRelease app `name` in namespace `apps` whose chart `name` at
/// `version` (`spec.chart.spec`) comes from HelmRepository `charts` ([`CHARTS_URL`]), which
/// refreshes its index only hourly, with a StatefulSet of `replicas` pods and a data volume each.
pub fn helm_repository_app_manifest(name: &str, version: &str, replicas: u32) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: charts
  namespace: apps
spec:
  interval: 1h
  url: {CHARTS_URL}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: {name}
  namespace: apps
spec:
  interval: 10m
  chart:
    spec:
      chart: {name}
      version: {version}
      sourceRef:
        kind: HelmRepository
        name: charts
  values:
    replicaCount: {replicas}
    persistence:
    - name: data
      size: 1Gi
"
    )
}

/// The Kustomization app's Deployment (file [`WEB_FILE`]) running `image`, a full image
/// reference: one replica mounting PVC `web-data`.
pub fn web_deployment(image: &str) -> String {
    format!(
        "# The web frontend; Fluxgate manages its image.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
  labels:
    app: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: \"{image}\" # digest pinned
        ports:
        - containerPort: 8080
        volumeMounts:
        - name: data
          mountPath: /data
      volumes:
      - name: data
        persistentVolumeClaim:
          claimName: web-data
"
    )
}

/// The repository file holding the Kustomization app's Deployment.
pub const WEB_FILE: &str = "apps/web/deployment.yaml";

/// Which cluster a world runs on.
pub enum Stack {
    /// kubesim in process; the sims also play kube-controller-manager, the scheduler, the
    /// kubelet and the snapshot-controller.
    Simulated,
    /// A real control plane someone else started (test/realstack): its own controllers run
    /// workloads, pods and volume binding; the sims play Flux and the CSI driver.
    Real(Box<RealStack>),
}

/// Where a chart version is published for real Flux ([`RealFlux::publish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartPlace {
    /// The OCI registry, as `helm push` does: repository `<oci_charts_url>/<chart>`, tag =
    /// the version.
    Oci,
    /// The Helm repository at [`RealFlux::helm_repository_url`]: the packaged chart and a
    /// regenerated `index.yaml`.
    HelmRepository,
}

/// The real Flux controllers (source-, kustomize- and helm-controller) on a real stack, as
/// the harness that started them lets the world use them: this crate depends neither on the
/// harness (test/realstack) nor on real Helm, so the harness hands over this handle in
/// [`RealStack::flux`]. With it the world runs no Flux sims ([`WorldOptions::flux`] off) and:
/// - serves the fleet's Git repository over smart HTTP with basic auth (source-controller
///   cannot read `file://`): GitRepository `flux-system` names that URL and Secret
///   `flux-system/flux-system` holds the credentials, as `flux bootstrap --token-auth`
///   leaves them;
/// - rewrites chart locations in the fleet's files ([`DemoWorld::fleet_text`]):
///   `<OCI_CHARTS>/<chart>` becomes `<oci_charts_url>/<chart>` with `insecure: true` (a
///   plain-HTTP registry), [`CHARTS_URL`] becomes [`RealFlux::helm_repository_url`];
/// - publishes every chart version the fleet starts at or a story publishes, and the version
///   of each UpgradeRequest made for an OCI app ([`DemoWorld::prepare_upgrade`]), since a
///   real registry only serves what was pushed;
/// - shares [`RealFlux::failures`] as the world's `failures`: the harness marks the pods of
///   a chart version or image declared failing so that they never become ready, as the
///   helm sim does when it renders them.
pub trait RealFlux: Send + Sync {
    /// `oci://<host>/<path>`: chart `c` is pushed to repository `<path>/c` there.
    fn oci_charts_url(&self) -> String;
    /// The Helm repository's base URL (where `index.yaml` is served).
    fn helm_repository_url(&self) -> String;
    /// Publishes chart `chart` at `version` in `place` (blocking: real Helm packages it).
    fn publish(&self, place: ChartPlace, chart: &str, version: &str) -> anyhow::Result<()>;
    /// The manifest digest (`sha256:…`) of chart `chart` at tag `tag` in the OCI registry
    /// (blocking).
    fn oci_digest(&self, chart: &str, tag: &str) -> anyhow::Result<String>;
    /// The failures the harness applies to the pods it admits.
    fn failures(&self) -> Failures;
}

/// A real control plane a world runs on (see [`Stack::Real`]).
pub struct RealStack {
    /// A client with every right, for the sims and the story.
    pub client: Client,
    /// The client Fluxgate's controllers use (in the tests: the chart's ServiceAccount).
    pub operator_client: Client,
    /// A kubeconfig with every right, for kubectl.
    pub kubeconfig: std::path::PathBuf,
    /// The kubectl of the cluster's release.
    pub kubectl: std::path::PathBuf,
    /// Whether the real snapshot-controller runs there (else the sim plays it).
    pub snapshot_controller: bool,
    /// The API server's audit log (JSON lines), which shows what Fluxgate sent.
    pub audit_log: std::path::PathBuf,
    /// The real Flux controllers, if they run there; else the Flux sims play Flux.
    pub flux: Option<Arc<dyn RealFlux>>,
    /// What must live as long as the world (the cluster's processes).
    pub keep_alive: Box<dyn std::any::Any + Send + Sync>,
}

/// The world's cluster: kubesim, or a real one and what keeps it running.
enum Backend {
    Simulated(KubeSim),
    Real {
        operator_client: Client,
        audit_log: std::path::PathBuf,
        kubeconfig: std::path::PathBuf,
        kubectl: std::path::PathBuf,
        _keep_alive: Box<dyn std::any::Any + Send + Sync>,
    },
}

/// A running world; dropping it stops everything.
pub struct DemoWorld {
    backend: Backend,
    /// A client of its cluster with every right.
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
    /// The real Flux, where it runs instead of the sims.
    real_flux: Option<Arc<dyn RealFlux>>,
    /// The fleet's OCI apps: ManagedApp → chart (for [`DemoWorld::prepare_upgrade`]).
    oci_charts: BTreeMap<String, String>,
    /// The manifest digest of each chart the fleet published: (URL, tag) → `sha256:…`.
    digests: BTreeMap<(String, String), String>,
    _cache: tempfile::TempDir,
}

/// A workload a fleet waits for before its ManagedApps are created.
#[derive(Clone, Debug)]
enum Running {
    StatefulSet(String, i32),
    Deployment(String, i32),
}

/// What a [`DemoWorld`] deploys: the fleet repository as `flux bootstrap` leaves it
/// (`clusters/prod`, applied by Flux's root Kustomization `flux-system`, whose own manifest
/// is `clusters/prod/flux-system/gotk-sync.yaml` in the same repository), the apps in it
/// and their ManagedApps (all in namespace `apps`), and how the Git server is reached.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    resources: Vec<String>,
    files: Vec<(String, String)>,
    apps: Vec<(String, serde_json::Value)>,
    running: Vec<Running>,
    credentials: Option<(String, String)>,
    flux_ref: Option<serde_json::Value>,
    tags: Vec<String>,
    apps_follow_flux: bool,
    published: Vec<(String, String)>,
    /// Charts (name, version) published in the simulated Helm repository at [`CHARTS_URL`].
    charts: Vec<(String, String)>,
    /// OCI apps written by [`Fleet::helm_app_with`]: (ManagedApp, chart, tag).
    oci_apps: Vec<(String, String, String)>,
    /// Read-only credentials Flux fetches with (see [`Fleet::bootstrap_deploy_key`]).
    deploy_key: Option<(String, String, WriteRefusal)>,
}

/// The credentials `flux bootstrap --token-auth` stored in Secret `flux-system/flux-system`
/// for a fleet served without [`Fleet::http_credentials`].
pub const BOOTSTRAP_CREDENTIALS: (&str, &str) = ("git", "bootstrap-t0ken");

/// The Secret (namespace `apps`) holding the Git credentials of a fleet served with
/// [`Fleet::http_credentials`].
pub const GIT_SECRET: &str = "fleet-git";

impl Fleet {
    /// An empty fleet: namespace `apps` and nothing else.
    pub fn new() -> Fleet {
        Fleet::default()
    }

    /// A HelmRelease app `name` (file `clusters/prod/<name>.yaml`, see
    /// [`helm_app_manifest`]) with its ManagedApp `name`: `app_spec` merged over the basics
    /// (source, git file, 1 s stabilization).
    pub fn helm_app(
        self,
        name: &str,
        tag: &str,
        replicas: u32,
        app_spec: serde_json::Value,
    ) -> Fleet {
        self.helm_app_with(name, tag, replicas, "", app_spec)
    }

    /// [`Fleet::helm_app`] whose HelmRelease's spec ends with `release_spec` (see
    /// [`helm_app_manifest_with`]).
    pub fn helm_app_with(
        mut self,
        name: &str,
        tag: &str,
        replicas: u32,
        release_spec: &str,
        app_spec: serde_json::Value,
    ) -> Fleet {
        let manifest = helm_app_manifest_with(name, tag, replicas, release_spec);
        self.oci_apps
            .push((name.to_owned(), name.to_owned(), tag.to_owned()));
        self.helm_app_written(name, name, &manifest, replicas, app_spec)
    }

    /// A HelmRelease app whose file `clusters/prod/<release>.yaml` is `manifest` as written
    /// (it must define HelmRelease `apps/<release>` running a StatefulSet `<release>` of
    /// `replicas` pods), managed by ManagedApp `app`: `app_spec` merged over the basics.
    pub fn helm_app_written(
        mut self,
        app: &str,
        release: &str,
        manifest: &str,
        replicas: u32,
        app_spec: serde_json::Value,
    ) -> Fleet {
        let file = format!("clusters/prod/{release}.yaml");
        self.resources.push(format!("{release}.yaml"));
        self.files.push((file.clone(), manifest.to_owned()));
        let mut spec = json!({"source": {"kind": "HelmRelease", "name": release},
                              "git": {"file": file}, "health": {"stabilization": "1s"}});
        json_patch::merge(&mut spec, &app_spec);
        self.apps.push((app.to_owned(), spec));
        self.running.push(Running::StatefulSet(
            release.to_owned(),
            i32::try_from(replicas).unwrap_or(i32::MAX),
        ));
        self
    }

    /// A HelmRelease app `name` whose chart comes from a HelmRepository (file
    /// `clusters/prod/<name>.yaml`, see [`helm_repository_app_manifest`]), with `version`
    /// published in it, and its ManagedApp `name` (`app_spec` merged over the basics).
    pub fn helm_repository_app(
        mut self,
        name: &str,
        version: &str,
        replicas: u32,
        app_spec: serde_json::Value,
    ) -> Fleet {
        self.charts.push((name.to_owned(), version.to_owned()));
        let manifest = helm_repository_app_manifest(name, version, replicas);
        self.helm_app_written(name, name, &manifest, replicas, app_spec)
    }

    /// The Kustomization app `web`: Flux Kustomization `flux-system/web` applying `apps/web`
    /// (a Deployment running `image` — see [`web_deployment`] — and its PVC `web-data`),
    /// and ManagedApp `web` managing the image as version `image` (`format: image`), with
    /// `app_spec` merged over that.
    pub fn web_app(mut self, image: &str, app_spec: serde_json::Value) -> Fleet {
        self.resources.push("web.yaml".into());
        self.files.push((
            "clusters/prod/web.yaml".into(),
            "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: web
  namespace: flux-system
spec:
  interval: 10m
  path: ./apps/web
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"
            .into(),
        ));
        self.files.push((
            "apps/web/kustomization.yaml".into(),
            "resources:\n- deployment.yaml\n- pvc.yaml\n".into(),
        ));
        self.files.push((WEB_FILE.into(), web_deployment(image)));
        self.files.push((
            "apps/web/pvc.yaml".into(),
            "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: web-data
  namespace: apps
spec:
  storageClassName: sim-immediate
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
"
            .into(),
        ));
        let mut spec = json!({
            "source": {"kind": "Kustomization", "name": "web", "namespace": "flux-system"},
            "git": {"file": WEB_FILE},
            "versions": [{"name": "image", "path": ".spec.template.spec.containers[0].image", "format": "image"}],
            "health": {"stabilization": "1s"}});
        json_patch::merge(&mut spec, &app_spec);
        self.apps.push(("web".into(), spec));
        self.running.push(Running::Deployment("web".into(), 1));
        self
    }

    /// Pushes chart tag `tag` to the simulated OCI registry at `url` before Flux starts, so
    /// that an OCIRepository pinning its digest or a semver range finds it (the digest is
    /// `sim::oci_source::manifest_digest(url, tag)`). On real Flux `url` must be
    /// `<OCI_CHARTS>/<chart>`: the chart is pushed to the real registry.
    pub fn published_chart(mut self, url: &str, tag: &str) -> Fleet {
        self.published.push((url.to_owned(), tag.to_owned()));
        self
    }

    /// Serves the repository over smart HTTP with basic auth too: the ManagedApps use the
    /// HTTP URL with these credentials, from Secret [`GIT_SECRET`] (Flux's sims keep
    /// reading it locally).
    pub fn http_credentials(mut self, username: &str, password: &str) -> Fleet {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// The reference Flux's GitRepository `flux-system` follows (its `spec.ref` in
    /// `gotk-sync.yaml`); `{"branch": "main"}` by default.
    pub fn flux_follows(mut self, reference: serde_json::Value) -> Fleet {
        self.flux_ref = Some(reference);
        self
    }

    /// Tags the repository's first commit with `name`.
    pub fn git_tag(mut self, name: &str) -> Fleet {
        self.tags.push(name.to_owned());
        self
    }

    /// The ManagedApps name no Git location: they use the URL, branch and Secret of the
    /// GitRepository Flux deploys them from. That GitRepository then names the Git
    /// server's HTTP URL (so Fluxgate can reach it as well as Flux), served with basic
    /// auth: the [`Fleet::http_credentials`], else [`BOOTSTRAP_CREDENTIALS`], kept in
    /// Secret `flux-system/flux-system` as `flux bootstrap --token-auth` keeps them.
    pub fn apps_follow_flux(mut self) -> Fleet {
        self.apps_follow_flux = true;
        self
    }

    /// As [`Fleet::apps_follow_flux`], but the credentials `flux bootstrap` stored in
    /// Secret `flux-system/flux-system` may fetch and not push (a deploy key created
    /// read-only): the Git server refuses their push as `refusal` says.
    pub fn bootstrap_deploy_key(
        mut self,
        username: &str,
        password: &str,
        refusal: WriteRefusal,
    ) -> Fleet {
        self.apps_follow_flux = true;
        self.deploy_key = Some((username.to_owned(), password.to_owned(), refusal));
        self
    }
}

impl DemoWorld {
    /// Starts the world with the app at chart tag `tag` deployed and running, its
    /// ManagedApp created with `app_spec` merged over the basics, and Fluxgate running.
    pub async fn start(tag: &str, app_spec: serde_json::Value) -> anyhow::Result<DemoWorld> {
        DemoWorld::start_fleet(Fleet::new().helm_app("db", tag, 2, app_spec)).await
    }

    /// Starts the world on kubesim with every app of `fleet` deployed and running, their
    /// ManagedApps created, and Fluxgate running.
    pub async fn start_fleet(fleet: Fleet) -> anyhow::Result<DemoWorld> {
        DemoWorld::start_fleet_on(fleet, Stack::Simulated).await
    }

    /// [`DemoWorld::start_fleet`] on `stack`.
    pub async fn start_fleet_on(fleet: Fleet, stack: Stack) -> anyhow::Result<DemoWorld> {
        let mut options = WorldOptions::fast();
        let mut real_flux = None;
        let (backend, client) = match stack {
            Stack::Simulated => {
                let kube = KubeSim::start().await;
                for (file, crd) in crate::api::crds() {
                    kube.put(serde_json::to_value(crd)?).with_context(|| {
                        format!("loading Fluxgate's CRD {file} into the simulated cluster")
                    })?;
                }
                kube.load_third_party_crds()
                    .context("loading the Flux and VolumeSnapshot CRDs built into kubesim")?;
                let client = kube.client();
                (Backend::Simulated(kube), client)
            }
            Stack::Real(real) => {
                let real = *real;
                install_crds(&real.client).await?;
                options.kube_controllers = false;
                options.snapshot_controller = !real.snapshot_controller;
                if let Some(flux) = &real.flux {
                    options.flux = false;
                    options.failures = Some(flux.failures());
                }
                real_flux = real.flux;
                let backend = Backend::Real {
                    operator_client: real.operator_client,
                    audit_log: real.audit_log,
                    kubeconfig: real.kubeconfig,
                    kubectl: real.kubectl,
                    _keep_alive: real.keep_alive,
                };
                (backend, real.client)
            }
        };
        let mut resources = "resources:\n- flux-system\n- ns.yaml\n".to_owned();
        for resource in &fleet.resources {
            resources.push_str(&format!("- {resource}\n"));
        }
        // As `flux bootstrap` leaves the repository: Flux's own manifests under
        // `<path>/flux-system`, applied by the root Kustomization they define.
        let flux_ref = fleet
            .flux_ref
            .clone()
            .unwrap_or_else(|| json!({"branch": "main"}));
        // Real source-controller reads Git over HTTP(S) or SSH only: serve it as for
        // apps_follow_flux, with the bootstrap credentials.
        let flux_over_http = fleet.apps_follow_flux || real_flux.is_some();
        let flux_url = if flux_over_http {
            sim::git_server::HTTP_URL_PLACEHOLDER
        } else {
            FLEET_URL
        };
        let gotk_sync = |url: &str| sim::seed::gotk_sync(url, &flux_ref, FLEET_PATH, true);
        let bootstrap_credentials = match (&fleet.deploy_key, &fleet.credentials) {
            (Some((username, password, _)), _) | (None, Some((username, password))) => {
                (username.clone(), password.clone())
            }
            (None, None) => {
                let (username, password) = BOOTSTRAP_CREDENTIALS;
                (username.to_owned(), password.to_owned())
            }
        };
        // Charts first: the fleet's files may pin their digests (`digest_placeholder`).
        let registry = sim::oci_source::OciRegistry::default();
        options.registry = Some(registry.clone());
        let mut digests = BTreeMap::new();
        match &real_flux {
            None => {
                for (url, tag) in &fleet.published {
                    let digest = registry.publish(url, tag);
                    digests.insert((url.clone(), tag.clone()), digest);
                }
            }
            Some(flux) => {
                let mut oci: Vec<(String, String)> = fleet
                    .oci_apps
                    .iter()
                    .map(|(_, chart, tag)| (chart.clone(), tag.clone()))
                    .collect();
                for (url, tag) in &fleet.published {
                    oci.push((oci_chart_name(url)?.to_owned(), tag.clone()));
                }
                oci.sort();
                oci.dedup();
                for (chart, tag) in &oci {
                    publish_on(flux, ChartPlace::Oci, chart, tag).await?;
                }
                for (url, tag) in &fleet.published {
                    let chart = oci_chart_name(url)?.to_owned();
                    let (flux, tag_) = (flux.clone(), tag.clone());
                    let digest =
                        tokio::task::spawn_blocking(move || flux.oci_digest(&chart, &tag_))
                            .await
                            .context("the digest task panicked")?
                            .with_context(|| {
                                format!("the digest of {url}:{tag} in the real registry")
                            })?;
                    digests.insert((url.clone(), tag.clone()), digest);
                }
                for (chart, version) in &fleet.charts {
                    publish_on(flux, ChartPlace::HelmRepository, chart, version).await?;
                }
            }
        }
        let mut builder = GitServer::builder()
            .file("clusters/prod/kustomization.yaml", resources)
            .file(
                "clusters/prod/flux-system/gotk-components.yaml",
                sim::seed::GOTK_COMPONENTS,
            )
            .file(
                "clusters/prod/flux-system/gotk-sync.yaml",
                gotk_sync(flux_url),
            )
            .file(
                "clusters/prod/flux-system/kustomization.yaml",
                sim::seed::GOTK_KUSTOMIZATION,
            )
            .file(
                "clusters/prod/ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
            );
        for (path, contents) in &fleet.files {
            let text = resolve_digests(&fleet_text(real_flux.as_deref(), contents), &digests);
            builder = builder.file(path, text);
        }
        for tag in &fleet.tags {
            builder = builder.tag(tag);
        }
        if let Some((username, password)) = &fleet.credentials {
            builder = builder.http_credentials(username, password);
        }
        match &fleet.deploy_key {
            Some((username, password, refusal)) => {
                builder = builder.http_read_only_credentials(username, password, *refusal);
            }
            None if flux_over_http && fleet.credentials.is_none() => {
                let (username, password) = &bootstrap_credentials;
                builder = builder.http_credentials(username, password);
            }
            None => {}
        }
        let git = builder
            .start()
            .context("starting the local Git server (is `git` installed?)")?;
        let flux_url = if flux_over_http {
            git.http_url().context("the Git server serves HTTP")?
        } else {
            FLEET_URL.to_owned()
        };
        options
            .git_url_rewrites
            .push((FLEET_URL.into(), git.file_url()));
        let world = World::start(client.clone(), options)
            .await
            .context("starting the simulated controllers")?;
        if real_flux.is_none() {
            for (chart, version) in &fleet.charts {
                world.charts.publish(CHARTS_URL, chart, version);
            }
        }
        sim::seed::storage(&client)
            .await
            .context("creating storage classes")?;
        let (username, password) = &bootstrap_credentials;
        sim::seed::bootstrap(&client, &gotk_sync(&flux_url), Some((username, password)))
            .await
            .context("bootstrapping Flux")?;
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "apps");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
        for running in &fleet.running {
            match running {
                Running::StatefulSet(name, replicas) => {
                    // Deployed means Flux finished: the real helm-controller readies the
                    // workload before it marks the release deployed (Helm's install waits
                    // with the release `pending-install`), and a ManagedApp admits nothing
                    // without a deployed release.
                    wait_until(
                        &format!("HelmRelease {name} to be Ready"),
                        Duration::from_secs(60),
                        async || flux_done(&client, HELM_RELEASES, "apps", name).await,
                    )
                    .await?;
                    wait_until(
                        &format!("StatefulSet {name} to run"),
                        Duration::from_secs(60),
                        async || {
                            let sts = statefulsets.get_opt(name).await.ok()??;
                            (sts.status?.ready_replicas == Some(*replicas)).then_some(())
                        },
                    )
                    .await?
                }
                Running::Deployment(name, replicas) => {
                    wait_until(
                        &format!("Kustomization {name} to be Ready"),
                        Duration::from_secs(60),
                        async || flux_done(&client, KUSTOMIZATIONS, "flux-system", name).await,
                    )
                    .await?;
                    wait_until(
                        &format!("Deployment {name} to run"),
                        Duration::from_secs(60),
                        async || {
                            let deployment = deployments.get_opt(name).await.ok()??;
                            (deployment.status?.ready_replicas == Some(*replicas)).then_some(())
                        },
                    )
                    .await?
                }
            }
        }
        let mut git_spec = json!({"url": git.file_url(), "branch": "main"});
        if fleet.apps_follow_flux {
            git_spec = json!({});
        } else if let Some((username, password)) = &fleet.credentials {
            sim::seed::git_credentials(&client, "apps", GIT_SECRET, username, password)
                .await
                .context("creating the Git credentials Secret")?;
            let url = git.http_url().context("the Git server serves HTTP")?;
            git_spec = json!({"url": url, "branch": "main", "secretRef": {"name": GIT_SECRET}});
        }
        for (name, spec) in &fleet.apps {
            // The fleet's Git location underneath, the app's own settings over it.
            let mut spec_with_git = json!({ "git": git_spec.clone() });
            json_patch::merge(&mut spec_with_git, spec);
            let spec = spec_with_git;
            let app: ManagedApp = serde_json::from_value(json!({
                "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
                "metadata": {"name": name, "namespace": "apps"}, "spec": spec
            }))
            .with_context(|| format!("the ManagedApp {name}"))?;
            Api::<ManagedApp>::namespaced(client.clone(), "apps")
                .create(&PostParams::default(), &app)
                .await
                .with_context(|| format!("creating the ManagedApp {name}"))?;
        }
        let cache = tempfile::tempdir().context("creating the Git cache directory")?;
        let mut story = DemoWorld {
            settings: Settings::new(cache.path()),
            backend,
            client,
            git,
            world,
            metrics: crate::telemetry::metrics::Metrics::new(),
            stop: None,
            operator: None,
            real_flux,
            digests,
            oci_charts: fleet
                .oci_apps
                .iter()
                .map(|(app, chart, _)| (app.clone(), chart.clone()))
                .collect(),
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
        let client = match &self.backend {
            Backend::Simulated(kube) => operator_client(kube)?,
            Backend::Real {
                operator_client, ..
            } => operator_client.clone(),
        };
        let (stop, operator) = spawn_operator(client, self.settings.clone(), self.metrics.clone());
        self.operator = Some(operator);
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

    /// The in-process kubesim: its request log, faults and write gates. Only stories that
    /// run on the simulated stack alone may ask for it.
    pub fn kubesim(&self) -> &KubeSim {
        match &self.backend {
            Backend::Simulated(kube) => kube,
            Backend::Real { .. } => panic!(
                "this story reads kubesim's request log or uses its gates; it runs on the simulated stack only"
            ),
        }
    }

    /// The real API server's audit log; `None` on kubesim (its request log is
    /// [`DemoWorld::kubesim`]'s).
    pub fn audit_log(&self) -> Option<&std::path::Path> {
        match &self.backend {
            Backend::Simulated(_) => None,
            Backend::Real { audit_log, .. } => Some(audit_log),
        }
    }

    /// Whether the world runs on kubesim.
    pub fn is_simulated(&self) -> bool {
        matches!(self.backend, Backend::Simulated(_))
    }

    /// A kubeconfig with every right on the world's cluster.
    pub fn kubeconfig_path(&self) -> std::path::PathBuf {
        match &self.backend {
            Backend::Simulated(kube) => kube.kubeconfig_path(),
            Backend::Real { kubeconfig, .. } => kubeconfig.clone(),
        }
    }

    /// The kubectl to drive the world's cluster with: the cluster's own release on a real
    /// stack, the one on `PATH` on kubesim.
    pub fn kubectl(&self) -> std::path::PathBuf {
        match &self.backend {
            Backend::Simulated(_) => "kubectl".into(),
            Backend::Real { kubectl, .. } => kubectl.clone(),
        }
    }

    /// Creates an UpgradeRequest named `name` to chart `version` of app `db`.
    pub async fn upgrade(&self, name: &str, version: &str) -> anyhow::Result<UpgradeRequest> {
        self.request(name, json!({"managedApp": "db", "version": version}))
            .await
    }

    /// Creates an UpgradeRequest named `name` (namespace `apps`) with this spec (after
    /// [`DemoWorld::prepare_upgrade`] of its app and `version` or `target.chart`).
    pub async fn request(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> anyhow::Result<UpgradeRequest> {
        let version = spec["version"]
            .as_str()
            .or(spec["target"]["chart"].as_str());
        if let (Some(app), Some(version)) = (spec["managedApp"].as_str(), version) {
            self.prepare_upgrade(app, version).await?;
        }
        let upgrade: UpgradeRequest = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": name, "namespace": "apps"}, "spec": spec
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

    /// What an upgrade of ManagedApp `app` to chart `version` needs before it is asked for:
    /// on real Flux, an OCI app's chart pushed at that tag (a real registry serves only what
    /// was pushed; the simulated one answers any tag). Nothing otherwise.
    pub async fn prepare_upgrade(&self, app: &str, version: &str) -> anyhow::Result<()> {
        match (&self.real_flux, self.oci_charts.get(app)) {
            (Some(flux), Some(chart)) => publish_on(flux, ChartPlace::Oci, chart, version).await,
            _ => Ok(()),
        }
    }

    /// Publishes chart `chart` at `version` in the fleet's Helm repository ([`CHARTS_URL`]):
    /// a HelmRepository sees it at its next refresh of the index.
    pub async fn publish_chart(&self, chart: &str, version: &str) -> anyhow::Result<()> {
        match &self.real_flux {
            Some(flux) => publish_on(flux, ChartPlace::HelmRepository, chart, version).await,
            None => {
                self.world.charts.publish(CHARTS_URL, chart, version);
                Ok(())
            }
        }
    }

    /// Whether the real Flux controllers play Flux (else the sims do).
    pub fn on_real_flux(&self) -> bool {
        self.real_flux.is_some()
    }

    /// `text` (a fleet file) as the world writes it into Git: on real Flux with the chart
    /// locations rewritten (see [`RealFlux`]), and every [`digest_placeholder`] of a chart
    /// the fleet published replaced by its digest.
    pub fn fleet_text(&self, text: &str) -> String {
        resolve_digests(&fleet_text(self.real_flux.as_deref(), text), &self.digests)
    }

    /// The manifest digest (`sha256:…`) of chart tag `tag` published at `url` with
    /// [`Fleet::published_chart`]: the simulated registry's, or the real one's.
    pub fn chart_digest(&self, url: &str, tag: &str) -> anyhow::Result<String> {
        self.digests
            .get(&(url.to_owned(), tag.to_owned()))
            .cloned()
            .with_context(|| format!("{url}:{tag} was not published with Fleet::published_chart"))
    }

    /// [`app_manifest`] as this world writes it ([`DemoWorld::fleet_text`]).
    pub fn app_manifest(&self, tag: &str) -> String {
        self.fleet_text(&app_manifest(tag))
    }

    /// The cluster as the story reads it: every read from the API server.
    pub fn cluster(&self) -> crate::cluster::cache::Cluster {
        crate::cluster::cache::Cluster::direct(self.client.clone())
    }

    /// The ManagedApp `db` now.
    pub async fn app(&self) -> anyhow::Result<ManagedApp> {
        self.app_named("db").await
    }

    /// The ManagedApp `name` (namespace `apps`) now.
    pub async fn app_named(&self, name: &str) -> anyhow::Result<ManagedApp> {
        Api::<ManagedApp>::namespaced(self.client.clone(), "apps")
            .get(name)
            .await
            .with_context(|| format!("reading the ManagedApp {name}"))
    }

    /// Stops Fluxgate's controllers gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut operator) = self.operator.take() {
            // As `fluxgate run`: running reconciles get a bounded grace, then are cut short.
            if tokio::time::timeout(STOP_GRACE, &mut operator)
                .await
                .is_err()
            {
                eprintln!(
                    "warning: Fluxgate's controllers did not stop within {}s; aborted",
                    STOP_GRACE.as_secs()
                );
                operator.abort();
                let _ = operator.await;
            }
        }
    }
}

/// How long a graceful stop may take before the controllers are aborted.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// (group, version, kind, plural) of Flux's HelmRelease and Kustomization.
const HELM_RELEASES: (&str, &str, &str, &str) = (
    "helm.toolkit.fluxcd.io",
    "v2",
    "HelmRelease",
    "helmreleases",
);
const KUSTOMIZATIONS: (&str, &str, &str, &str) = (
    "kustomize.toolkit.fluxcd.io",
    "v1",
    "Kustomization",
    "kustomizations",
);

/// `Some` once the Flux object says it is done with its generation: Ready True, no
/// Reconciling True, and `status.observedGeneration` at `metadata.generation` (the real
/// controllers write Ready in an earlier patch than observedGeneration).
async fn flux_done(
    client: &Client,
    (group, version, kind, plural): (&str, &str, &str, &str),
    namespace: &str,
    name: &str,
) -> Option<()> {
    let resource = kube::api::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource);
    let object = api.get_opt(name).await.ok()??;
    let status = object.data.get("status")?;
    let condition = |type_: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .map(|c| c["status"].as_str() == Some("True"))
    };
    let observed = status["observedGeneration"].as_i64() == object.metadata.generation;
    (observed && condition("Ready") == Some(true) && condition("Reconciling") != Some(true))
        .then_some(())
}

/// Stands in a fleet file for the manifest digest of chart tag `tag` published at `url`
/// ([`Fleet::published_chart`]), which is known only once the world pushed it; the world
/// writes the digest into Git in its place (see [`DemoWorld::fleet_text`]).
pub fn digest_placeholder(url: &str, tag: &str) -> String {
    format!("${{CHART_DIGEST {url} {tag}}}")
}

/// `text` with each [`digest_placeholder`] of `digests` replaced.
fn resolve_digests(text: &str, digests: &BTreeMap<(String, String), String>) -> String {
    let mut text = text.to_owned();
    for ((url, tag), digest) in digests {
        text = text.replace(&digest_placeholder(url, tag), digest);
    }
    text
}

/// Publishes with real Helm off the async workers (it blocks for a second or so).
async fn publish_on(
    flux: &Arc<dyn RealFlux>,
    place: ChartPlace,
    chart: &str,
    version: &str,
) -> anyhow::Result<()> {
    let (flux, chart, version) = (flux.clone(), chart.to_owned(), version.to_owned());
    tokio::task::spawn_blocking(move || {
        flux.publish(place, &chart, &version).with_context(|| {
            format!("publishing chart {chart} {version} ({place:?}) for real Flux")
        })
    })
    .await
    .context("the chart publishing task panicked")?
}

/// The chart of an OCI URL under [`OCI_CHARTS`] (`<OCI_CHARTS>/<chart>`).
fn oci_chart_name(url: &str) -> anyhow::Result<&str> {
    url.strip_prefix(OCI_CHARTS)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|chart| !chart.is_empty() && !chart.contains('/'))
        .with_context(|| {
            format!("chart URL {url}: on real Flux a published chart must be under {OCI_CHARTS}/")
        })
}

/// A fleet file as written for `flux`: every `url: <OCI_CHARTS>/<chart>` line becomes the
/// real registry's URL followed by `insecure: true` at the same indentation (the registry
/// speaks plain HTTP), and [`CHARTS_URL`] the real Helm repository's URL. Unchanged without
/// real Flux.
fn fleet_text(flux: Option<&dyn RealFlux>, text: &str) -> String {
    let Some(flux) = flux else {
        return text.to_owned();
    };
    let (oci, charts) = (flux.oci_charts_url(), flux.helm_repository_url());
    let oci_line = format!("url: {OCI_CHARTS}/");
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        match body.strip_prefix(&oci_line) {
            Some(rest) => {
                let rest = rest.strip_suffix('\n').unwrap_or(rest);
                out.push_str(&format!(
                    "{indent}url: {oci}/{rest}\n{indent}insecure: true\n"
                ));
            }
            None => out.push_str(&line.replace(CHARTS_URL, &charts)),
        }
    }
    out
}

/// Runs Fluxgate's controllers in-process against `client`, as `fluxgate run` does, until
/// the returned sender is used or dropped (a graceful stop) or the task is aborted (a crash).
pub fn spawn_operator(
    client: Client,
    settings: Settings,
    metrics: crate::telemetry::metrics::Metrics,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let context = Arc::new(Context::new(client, settings, metrics));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(crate::controller::run(context, async {
        let _ = stopped.await;
    }));
    (stop, operator)
}

/// Creates Fluxgate's CRDs and the Flux and VolumeSnapshot CRDs kubesim carries where a
/// real cluster lacks them (a chart install or the real snapshot-controller may have
/// brought some), and waits until each is served.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut wanted: Vec<(String, CustomResourceDefinition)> = crate::api::crds()
        .into_iter()
        .map(|(file, crd)| (file.to_string(), crd))
        .collect();
    for (file, text) in kubesim::third_party::CRDS {
        let crd = serde_saphyr::from_str(text)
            .with_context(|| format!("parsing kubesim's CRD {file}"))?;
        wanted.push((file.to_string(), crd));
    }
    for (file, crd) in &wanted {
        let name = crd.metadata.name.clone().unwrap_or_default();
        if crds.get_opt(&name).await?.is_none() {
            crds.create(&PostParams::default(), crd)
                .await
                .with_context(|| format!("creating CRD {name} ({file})"))?;
        }
        wait_until(
            &format!("CRD {name} to be established"),
            Duration::from_secs(30),
            async || {
                let crd = crds.get_opt(&name).await.ok()??;
                let established = crd
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await?;
    }
    Ok(())
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
/// Checks that `check` stays true for all of `duration` — for stories where nothing must
/// happen (a closed window, a queued request) — failing as soon as it does not.
pub async fn holds_for(
    what: &str,
    duration: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        if !check().await {
            anyhow::bail!("{what} stopped holding before {}s", duration.as_secs());
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
