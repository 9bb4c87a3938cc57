//! The whole simulated world in one call: every sim started against one `kube::Client`
//! (kubesim or a real cluster), sharing one [`Failures`] handle; dropping it stops them.
//! On a real control plane, switch off the sims of what runs there for real
//! ([`WorldOptions::kube_controllers`], [`WorldOptions::snapshot_controller`],
//! [`WorldOptions::flux`]); the CSI driver stand-in always runs.
//!
//! ```no_run
//! # async fn t(client: kube::Client) -> anyhow::Result<()> {
//! use sim::world::{World, WorldOptions};
//! let mut options = WorldOptions::fast();
//! // Flux's CRD only takes http(s):// and ssh:// URLs; serve local bare repos under one.
//! options.git_url_rewrites.push(("https://git.sim.test/".into(), "file:///".into()));
//! let world = World::start(client.clone(), options).await?;
//! sim::seed::storage(&client).await?;                       // classes for hostpath.csi.k8s.io
//! sim::seed::flux_system(&client, "https://git.sim.test/tmp/r/repo.git", "main", "./clusters/prod").await?;
//! // Or as `flux bootstrap` does it, with gotk-sync.yaml also in Git (see sim::seed::gotk_sync):
//! // sim::seed::bootstrap(&client, &sim::seed::gotk_sync(url, &reference, path, true), Some(creds))
//! world.failures.fail_chart_version("2.0.0");               // its pods never get ready
//! world.failures.fail_image("ghcr.io/example/web:2.0.0");   // same, for any workload
//! world.failures.fail_snapshots("data-", "quota exceeded"); // status.error.message
//! world.charts.publish("https://charts.example.com", "db", "1.1.0"); // seen at the HelmRepository's next refresh
//! let token = sim::volumes::content_token(&client, "apps", "data-db-0").await?; // PVC → PV
//! let cut = sim::volumes::snapshot_token(&client, "apps", "snap-1").await?;   // VS → content
//! let kept = sim::volumes::volume_token(&client, "pvc-0c1d…").await?;         // a PV by name
//! # Ok(()) }
//! ```
//!
//! The same failures can be declared on the objects themselves, which also works when the
//! sims run elsewhere: HelmRelease annotation `sim.fluxgate.dev/fail-versions: "2.0.0,2.1.0"`,
//! pod template annotation `sim.fluxgate.dev/never-ready: "true"`, VolumeSnapshot annotation
//! `sim.fluxgate.dev/snapshot-error: <message>`. What volumes and snapshots hold (content
//! tokens) is kept by the CSI driver stand-in on PersistentVolumes and
//! VolumeSnapshotContents (see [`crate::csi`]); read it through the readers above.
//!
//! # What the sims do not model
//! Flux:
//!
//! - source-controller builds no artifact tarball: `artifact.digest` is `sha1:<commit>`,
//!   `url` points nowhere; GitRepository `ref.semver` (reported as not simulated), `include`,
//!   `ignore`, `sparseCheckout`, SSH and TLS-certificate auth are not simulated (`ref.commit`,
//!   `name`, `tag` and `branch` are); commit verification (`spec.verify`) checks SSH
//!   signatures of the fetched commit only (no OpenPGP, no tag signatures: see
//!   [`crate::commit_verify`]);
//!   OCIRepository resolves `ref.digest`, `ref.semver` and `ref.tag` from a simulated
//!   registry ([`crate::oci_source::OciRegistry`]; digests are fake, `semverFilter`,
//!   `layerSelector` and `verify` are not simulated);
//!   HelmRepository only serves the charts published through [`World::charts`] over HTTP
//!   (type `oci`, auth, TLS and index contents beyond chart names and versions are not
//!   simulated); HelmChart builds only from a HelmRepository, resolving exact versions
//!   (or `*`), not ranges; Bucket sources are not simulated.
//! - kustomize-controller: no periodic drift correction (applies happen when the artifact,
//!   the generation or `requestedAt` changes, and failed applies retry), no `dependsOn`,
//!   `wait`/`healthChecks`, `postBuild` substitution, SOPS decryption, patches, generators,
//!   components or remote resources; `kustomization.yaml` honours `resources`, `namespace`
//!   and `images` only. Objects are applied in one pass (CRDs and Namespaces first). Only
//!   GitRepository sources (not OCIRepository or Bucket). Namespaced objects without a
//!   namespace fail with Flux's "namespace not specified" unless `targetNamespace` is set.
//! - helm-controller: charts are the simulated chart of [`crate::chart`]; no `valuesFrom`,
//!   hooks, tests, drift detection, post-renderers or `maxHistory` pruning of secrets; it
//!   does not wait for workloads to become ready — a version fails only when declared
//!   failing — and a failed release with its whole retry/remediation cycle is settled in
//!   one reconcile (watchers see the outcome, not each retry). `status.history` timestamps
//!   are the time of the status write. The release Secret is written after the objects are
//!   applied, as `deployed` at once (Helm writes it `pending-install`/`pending-upgrade`
//!   first and marks it `deployed` after its wait). Release names longer than 53 characters are not
//!   shortened as Flux does; a `spec.chart` HelmChart is created and updated but not
//!   deleted with its HelmRelease.
//!
//! CSI and kube:
//!
//! - The CSI driver stand-in ([`crate::csi`]) has no topology (no node affinity on its
//!   volumes; the real hostpath driver pins each volume to its node), no cloning from a
//!   PVC, no volume expansion, group snapshots, pre-provisioned snapshots, secrets or
//!   capacity tracking; its volumes are tokens, not data, and a snapshot becomes ready a
//!   fixed delay after it was cut. It writes no Events (neither do the sims of the
//!   cluster's controllers).
//! - PV controller (kubesim only): binds a claim to the volume made for it, or to the
//!   smallest matching free volume unless the class binds late (the scheduler's choice of a
//!   free volume for such a class is not simulated); in-tree provisioners and the
//!   `Recycle` policy are not simulated. A claim made before any class was the default
//!   is read as of the default class, not given it (kube-controller-manager writes it in).
//!   pvc-protection holds a claim while any pod that mounts it exists (kubesim's pods have
//!   no node; the real controller counts pods bound to one).
//! - Scheduler (kubesim only): only volume binding — a pod's `WaitForFirstConsumer` claims
//!   get `volume.kubernetes.io/selected-node: sim-node-0`; pods are never bound to a node.
//! - snapshot-controller (where the real one does not run): pre-provisioned and group
//!   snapshots are not simulated.
//! - Deployments replace all old pods at once (as `Recreate`, no surge). StatefulSets
//!   (OrderedReady) start pods in order and scale down one at a time from the top, but a
//!   rolling update replaces pods one at a time without waiting for readiness, and an
//!   unready pod does not block scale-down; `updateStrategy` and `partition` are ignored.
//!   The PVC retention policy sets the claims' owner references as the real controller
//!   does, so kubesim's garbage collector deletes a scaled-down pod's claims with it under
//!   `whenScaled: Delete` (the stale-reference and conflicting-controller events are not
//!   written). No ControllerRevisions,
//!   `minReadySeconds`, PodDisruptionBudgets, HPAs, DaemonSets or Jobs.
//!   Pods have no nodes, probes, restarts or logs; a pod is ready unless its image or chart
//!   version is declared failing.

use crate::csi::{CsiDriver, CsiOptions};
use crate::faults::Failures;
use crate::flux_source::{SourceController, SourceOptions};
use crate::helm::{HelmController, HelmOptions};
use crate::helm_chart::HelmChartController;
use crate::helm_repository::{ChartRepositories, HelmRepositoryController, HelmRepositoryOptions};
use crate::kustomize::{KustomizeController, KustomizeOptions};
use crate::oci_source::{OciRegistry, OciSourceController};
use crate::pods::{PodOptions, PodSim};
use crate::scheduler::Scheduler;
use crate::snapshots::SnapshotController;
use crate::volumes::PvController;
use crate::workloads::WorkloadSim;
use std::time::Duration;

/// Options for every sim of the world. The default is today's all-simulated world.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    pub source: SourceOptions,
    pub kustomize: KustomizeOptions,
    pub helm: HelmOptions,
    pub helm_repository: HelmRepositoryOptions,
    /// The CSI driver stand-in (its name, the snapshot ready delay).
    pub csi: CsiOptions,
    pub pods: PodOptions,
    /// Run the sims of kube-controller-manager, kube-scheduler and the kubelet: workloads,
    /// the scheduler's volume binding, pods, and the PV, pvc-protection and pv-protection
    /// controllers (default `true`). `false` on a real control plane.
    pub kube_controllers: bool,
    /// Run the sim of external-snapshotter's snapshot-controller (default `true`). `false`
    /// where the real one runs.
    pub snapshot_controller: bool,
    /// Run the Flux sims: source (Git, HelmRepository, HelmChart, OCIRepository), kustomize
    /// and helm controllers (default `true`). `false` where the real Flux controllers run
    /// (test/realstack's `flux`): then [`World::charts`] and [`World::registry`] are only
    /// bookkeeping, and [`World::failures`] reaches pods only through whoever marks them
    /// (on the real stack, e2e's pod webhook).
    pub flux: bool,
    /// Git URL rewrites for both Flux controllers that read Git (see
    /// [`crate::git_mirror::Mirror::new`]); added to those in `source` and `kustomize`.
    pub git_url_rewrites: Vec<(String, String)>,
    /// The failures handle to share; a fresh one when `None`.
    pub failures: Option<Failures>,
    /// The OCI registry to share; a fresh, empty one when `None`.
    pub registry: Option<OciRegistry>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            source: SourceOptions::default(),
            kustomize: KustomizeOptions::default(),
            helm: HelmOptions::default(),
            helm_repository: HelmRepositoryOptions::default(),
            csi: CsiOptions::default(),
            pods: PodOptions::default(),
            kube_controllers: true,
            snapshot_controller: true,
            flux: true,
            git_url_rewrites: Vec::new(),
            failures: None,
            registry: None,
        }
    }
}

impl WorldOptions {
    /// Short timings for tests: Git polled every second, retries after 200 ms,
    /// snapshots ready when cut, pods terminate after 100 ms.
    pub fn fast() -> WorldOptions {
        WorldOptions {
            source: SourceOptions {
                interval: Some(Duration::from_secs(1)),
                ..SourceOptions::default()
            },
            kustomize: KustomizeOptions {
                retry_interval: Duration::from_millis(200),
                ..KustomizeOptions::default()
            },
            pods: PodOptions {
                termination_delay: Duration::from_millis(100),
            },
            ..WorldOptions::default()
        }
    }
}

/// Every sim, running. Dropping the world stops them all. The sims of the cluster's own
/// controllers and of Flux are `None` when switched off in [`WorldOptions`].
#[derive(Debug)]
pub struct World {
    /// Declared failures (chart versions, images, snapshots), shared by the sims.
    pub failures: Failures,
    /// The simulated OCI registry the OCIRepository controller pulls from (publish chart
    /// tags there for digest and semver refs).
    pub registry: OciRegistry,
    /// The charts published in the simulated Helm repositories (by URL).
    pub charts: ChartRepositories,
    pub source: Option<SourceController>,
    pub helm_repository: Option<HelmRepositoryController>,
    pub helm_chart: Option<HelmChartController>,
    pub oci: Option<OciSourceController>,
    pub kustomize: Option<KustomizeController>,
    pub helm: Option<HelmController>,
    /// The CSI driver stand-in: provisioner, snapshotter sidecar, node plugin.
    pub csi: CsiDriver,
    /// external-snapshotter's snapshot-controller.
    pub snapshots: Option<SnapshotController>,
    /// kube-controller-manager's PV, pvc-protection and pv-protection controllers.
    pub volumes: Option<PvController>,
    /// kube-scheduler's volume binding.
    pub scheduler: Option<Scheduler>,
    /// The kubelet.
    pub pods: Option<PodSim>,
    /// kube-controller-manager's Deployment and StatefulSet controllers.
    pub workloads: Option<WorkloadSim>,
}

impl World {
    /// Starts all sims against `client`.
    pub async fn start(client: kube::Client, options: WorldOptions) -> anyhow::Result<World> {
        let failures = options.failures.unwrap_or_default();
        let registry = options.registry.unwrap_or_default();
        let (mut source, mut kustomize) = (options.source, options.kustomize);
        source
            .url_rewrites
            .extend(options.git_url_rewrites.iter().cloned());
        kustomize.url_rewrites.extend(options.git_url_rewrites);
        let charts = ChartRepositories::default();
        let kube = options.kube_controllers;
        let flux = options.flux;
        Ok(World {
            source: flux
                .then(|| SourceController::start(client.clone(), source))
                .transpose()?,
            helm_repository: flux.then(|| {
                HelmRepositoryController::start(
                    client.clone(),
                    charts.clone(),
                    options.helm_repository,
                )
            }),
            helm_chart: flux.then(|| HelmChartController::start(client.clone(), charts.clone())),
            oci: flux.then(|| OciSourceController::start(client.clone(), registry.clone())),
            kustomize: flux
                .then(|| KustomizeController::start(client.clone(), kustomize))
                .transpose()?,
            helm: flux
                .then(|| HelmController::start(client.clone(), failures.clone(), options.helm)),
            charts,
            csi: CsiDriver::start(client.clone(), failures.clone(), options.csi),
            snapshots: options
                .snapshot_controller
                .then(|| SnapshotController::start(client.clone())),
            volumes: kube.then(|| PvController::start(client.clone())),
            scheduler: kube.then(|| Scheduler::start(client.clone())),
            pods: kube.then(|| PodSim::start(client.clone(), failures.clone(), options.pods)),
            workloads: kube.then(|| WorkloadSim::start(client)),
            failures,
            registry,
        })
    }
}
