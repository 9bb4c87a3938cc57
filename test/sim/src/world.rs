//! The whole simulated world in one call: every sim started against one `kube::Client`
//! (kubesim or a real cluster), sharing one [`Failures`] handle; dropping it stops them.
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
//! let token = sim::volumes::content_token(&client, "apps", "data-db-0").await?;
//! let cut = sim::volumes::snapshot_token(&client, "apps", "snap-1").await?;
//! # Ok(()) }
//! ```
//!
//! The same failures can be declared on the objects themselves, which also works when the
//! sims run elsewhere: HelmRelease annotation `sim.fluxgate.dev/fail-versions: "2.0.0,2.1.0"`,
//! pod template annotation `sim.fluxgate.dev/never-ready: "true"`, VolumeSnapshot annotation
//! `sim.fluxgate.dev/snapshot-error: <message>`. Content tokens are the annotation
//! `sim.fluxgate.dev/content` on PVCs and VolumeSnapshots (see [`crate::volumes`]).
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
//!   are the time of the status write. Release names longer than 53 characters are not
//!   shortened as Flux does; a `spec.chart` HelmChart is created and updated but not
//!   deleted with its HelmRelease.
//!
//! CSI and kube:
//!
//! - Pre-provisioned snapshots, group snapshots and volume expansion are not simulated;
//!   a restored PVC's size is not checked against `restoreSize`; the source PVC gets no
//!   `pvc-as-source-protection` finalizer while a snapshot is cut (cutting is instant).
//! - Deployments replace all old pods at once (as `Recreate`, no surge). StatefulSets
//!   (OrderedReady) start pods in order and scale down one at a time from the top, but a
//!   rolling update replaces pods one at a time without waiting for readiness, and an
//!   unready pod does not block scale-down; `updateStrategy`, `partition` and the PVC
//!   retention policy are ignored (claims are always retained). No ControllerRevisions,
//!   `minReadySeconds`, PodDisruptionBudgets, HPAs, DaemonSets or Jobs.
//!   Pods have no nodes, probes, restarts or logs; a pod is ready unless its image or chart
//!   version is declared failing.

use crate::faults::Failures;
use crate::flux_source::{SourceController, SourceOptions};
use crate::helm::{HelmController, HelmOptions};
use crate::helm_chart::HelmChartController;
use crate::helm_repository::{ChartRepositories, HelmRepositoryController, HelmRepositoryOptions};
use crate::kustomize::{KustomizeController, KustomizeOptions};
use crate::oci_source::{OciRegistry, OciSourceController};
use crate::pods::{PodOptions, PodSim};
use crate::snapshots::{SnapshotOptions, Snapshotter};
use crate::volumes::VolumeBinder;
use crate::workloads::WorkloadSim;
use std::time::Duration;

/// Options for every sim of the world.
#[derive(Clone, Debug, Default)]
pub struct WorldOptions {
    pub source: SourceOptions,
    pub kustomize: KustomizeOptions,
    pub helm: HelmOptions,
    pub helm_repository: HelmRepositoryOptions,
    pub snapshots: SnapshotOptions,
    pub pods: PodOptions,
    /// Git URL rewrites for both Flux controllers that read Git (see
    /// [`crate::git_mirror::Mirror::new`]); added to those in `source` and `kustomize`.
    pub git_url_rewrites: Vec<(String, String)>,
    /// The failures handle to share; a fresh one when `None`.
    pub failures: Option<Failures>,
    /// The OCI registry to share; a fresh, empty one when `None`.
    pub registry: Option<OciRegistry>,
    /// Run the sims of kube-controller-manager, the scheduler and the kubelet (workloads,
    /// pods, volume binding); off on a real control plane, whose own controllers do it.
    pub kube_controllers: bool,
    /// Run the sim of external-snapshotter's snapshot-controller; off where the real one runs.
    pub snapshot_controller: bool,
}

impl WorldOptions {
    /// Short timings for tests: Git polled every second, retries after 200 ms,
    /// snapshots instant, pods terminate after 100 ms.
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
            kube_controllers: true,
            snapshot_controller: true,
            ..WorldOptions::default()
        }
    }
}

/// Every sim, running. Dropping the world stops them all.
#[derive(Debug)]
pub struct World {
    /// Declared failures (chart versions, images, snapshots), shared by the sims.
    pub failures: Failures,
    /// The simulated OCI registry the OCIRepository controller pulls from (publish chart
    /// tags there for digest and semver refs).
    pub registry: OciRegistry,
    /// The charts published in the simulated Helm repositories (by URL).
    pub charts: ChartRepositories,
    pub source: SourceController,
    pub helm_repository: HelmRepositoryController,
    pub helm_chart: HelmChartController,
    pub oci: OciSourceController,
    pub kustomize: KustomizeController,
    pub helm: HelmController,
    pub snapshots: Option<Snapshotter>,
    pub volumes: Option<VolumeBinder>,
    pub pods: Option<PodSim>,
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
        Ok(World {
            source: SourceController::start(client.clone(), source)?,
            helm_repository: HelmRepositoryController::start(
                client.clone(),
                charts.clone(),
                options.helm_repository,
            ),
            helm_chart: HelmChartController::start(client.clone(), charts.clone()),
            charts,
            oci: OciSourceController::start(client.clone(), registry.clone()),
            kustomize: KustomizeController::start(client.clone(), kustomize)?,
            helm: HelmController::start(client.clone(), failures.clone(), options.helm),
            snapshots: options
                .snapshot_controller
                .then(|| Snapshotter::start(client.clone(), failures.clone(), options.snapshots)),
            volumes: options
                .kube_controllers
                .then(|| VolumeBinder::start(client.clone())),
            pods: options
                .kube_controllers
                .then(|| PodSim::start(client.clone(), failures.clone(), options.pods)),
            workloads: options
                .kube_controllers
                .then(|| WorkloadSim::start(client.clone())),
            failures,
            registry,
        })
    }
}
