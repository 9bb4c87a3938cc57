//! Flux on a real cluster: the real source-, kustomize- and helm-controller (built by
//! `build.sh` from their Go modules) installed as Flux's own install sets them up, and a
//! loopback OCI registry for OCIRepository charts.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use realstack::flux::{Flux, OciRegistry};
//! // The shared control plane with Flux on it, started once per test process; None after
//! // printing SKIPPED when the binaries are missing (a failure under
//! // FLUXGATE_REQUIRE_REAL_STACK=1).
//! let Some(flux) = Flux::shared_or_skip() else { return Ok(()) };
//! let client = flux.cluster().client().await?;
//! // … create GitRepositories, Kustomizations, HelmReleases with `client` …
//! let registry = OciRegistry::start(flux.cluster()).await?; // oci://127.0.0.1:<port>
//! # Ok(()) }
//! ```
//!
//! What [`Flux::start`] does, in order (each step cites the upstream file it follows):
//! 1. applies every CRD of the three controllers (`config/crd/bases` of each module, copied
//!    to `bin/flux/` by `build.sh`) and waits until they are Established;
//! 2. creates namespace `flux-system` and a ServiceAccount per controller (flux2's
//!    `manifests/bases/<controller>/account.yaml`);
//! 3. applies flux2's RBAC (`manifests/rbac/controller.yaml`: ClusterRole `crd-controller`
//!    bound to every controller's ServiceAccount; `manifests/rbac/reconciler.yaml`:
//!    ClusterRoleBinding `cluster-reconciler` giving kustomize- and helm-controller
//!    `cluster-admin`), as `build.sh` copied them from the flux2 release of these controllers;
//! 4. starts each controller as its ServiceAccount (a TokenRequest token in its kubeconfig,
//!    passed as `KUBECONFIG`: the mains bind no `--kubeconfig` flag) with upstream's
//!    deployment arguments (`config/manager/deployment.yaml`: `--watch-all-namespaces
//!    --log-level=info --log-encoding=json`, `RUNTIME_NAMESPACE=flux-system`), leader
//!    election off (the flag's default; one replica), `--events-addr` empty (no
//!    notification-controller), `--requeue-dependency` [`REQUEUE_DEPENDENCY`], and free
//!    loopback ports for metrics, health and source-controller's artifact server, which it
//!    advertises as `http://127.0.0.1:<port>` (`--storage-adv-addr`) for the other two to
//!    download from; artifacts under the cluster's directory;
//! 5. waits until each controller's health endpoint answers `/readyz`, its log says
//!    `Starting workers` for every kind it reconciles (controller-runtime logs it after the
//!    informers synced) and, for source-controller, its artifact server answers `/` (the
//!    readiness probe of its Deployment).
//!
//! The controllers run in the cluster's process group: they stop with the cluster (see
//! `src/process.rs`), and [`crate::RealCluster::check_running`] fails when one has exited.
//! Their logs are `logs/<controller>.log` in the cluster's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::{RealCluster, Unavailable, loopback_http, manifest, wait_for};

/// Where Flux's controllers run and their ServiceAccounts live.
pub const NAMESPACE: &str = "flux-system";
/// The directory under the binaries with the CRDs and RBAC `build.sh` copies.
pub const DIR: &str = "flux";
/// flux2's RBAC manifests (`manifests/rbac/`) the launcher applies.
pub const RBAC_FILES: [&str; 2] = ["controller.yaml", "reconciler.yaml"];
/// Our OCI registry program (`go/registry`).
pub const REGISTRY_BINARY: &str = "oci-registry";
/// How often a controller re-checks a dependency that is not ready (a source without an
/// artifact, a `dependsOn` not Ready): upstream's default is 30 s, too slow for tests.
pub const REQUEUE_DEPENDENCY: Duration = Duration::from_secs(2);
/// How long the controllers' tokens last: longer than any test process.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// One of Flux's controllers: its program (and ServiceAccount) name and the kinds it
/// starts workers for (its `SetupWithManager` calls in main.go).
#[derive(Debug, Clone, Copy)]
pub struct Controller {
    pub name: &'static str,
    pub kinds: &'static [&'static str],
}

pub const SOURCE_CONTROLLER: Controller = Controller {
    name: "source-controller",
    // source-controller v1.9.3 main.go: GitRepository, HelmRepository, HelmChart, Bucket,
    // OCIRepository reconcilers (ExternalArtifact has a CRD but no reconciler here).
    kinds: &[
        "GitRepository",
        "HelmRepository",
        "HelmChart",
        "Bucket",
        "OCIRepository",
    ],
};
pub const KUSTOMIZE_CONTROLLER: Controller = Controller {
    name: "kustomize-controller",
    kinds: &["Kustomization"],
};
pub const HELM_CONTROLLER: Controller = Controller {
    name: "helm-controller",
    kinds: &["HelmRelease"],
};
/// The three, in the order they are started.
pub const CONTROLLERS: [Controller; 3] = [SOURCE_CONTROLLER, KUSTOMIZE_CONTROLLER, HELM_CONTROLLER];

/// The CRD files every build has (`config/crd/bases` of the three modules); `build.sh`
/// copies all of them, and the launcher applies every `*.toolkit.fluxcd.io_*.yaml` it finds.
pub const CRD_FILES: [&str; 8] = [
    "source.toolkit.fluxcd.io_buckets.yaml",
    "source.toolkit.fluxcd.io_externalartifacts.yaml",
    "source.toolkit.fluxcd.io_gitrepositories.yaml",
    "source.toolkit.fluxcd.io_helmcharts.yaml",
    "source.toolkit.fluxcd.io_helmrepositories.yaml",
    "source.toolkit.fluxcd.io_ocirepositories.yaml",
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
    "helm.toolkit.fluxcd.io_helmreleases.yaml",
];

/// Every file Flux needs from `bin/` (programs, CRDs, RBAC), for the missing-build check.
pub fn files(bin: &Path) -> Vec<PathBuf> {
    CONTROLLERS
        .iter()
        .map(|c| bin.join(c.name))
        .chain(std::iter::once(bin.join(REGISTRY_BINARY)))
        .chain(CRD_FILES.iter().map(|f| bin.join(DIR).join(f)))
        .chain(RBAC_FILES.iter().map(|f| bin.join(DIR).join(f)))
        .collect()
}

/// A running controller.
#[derive(Debug, Clone)]
pub struct Running {
    pub controller: Controller,
    /// `--health-addr` (`/readyz`, `/healthz`).
    pub health: SocketAddr,
    /// `--metrics-addr` (`/metrics`).
    pub metrics: SocketAddr,
    pub log: PathBuf,
    pub kubeconfig: PathBuf,
}

/// Flux's controllers running on a cluster (they live as long as the cluster does).
pub struct Flux<'c> {
    cluster: &'c RealCluster,
    storage: SocketAddr,
    controllers: Vec<Running>,
    crds: Vec<String>,
    startup: Duration,
}

static SHARED: OnceLock<Result<Flux<'static>, Unavailable>> = OnceLock::new();

impl Flux<'static> {
    /// The shared control plane ([`RealCluster::shared`]) with Flux started on it, once per
    /// test process, by the first caller.
    pub fn shared() -> Result<&'static Flux<'static>, &'static Unavailable> {
        SHARED
            .get_or_init(|| {
                // Without Flux's binaries, say so before starting a control plane for nothing.
                if let Some(why) = not_built(&crate::bin_dir()) {
                    return Err(why);
                }
                let cluster = RealCluster::shared().map_err(Unavailable::clone)?;
                let flux = Flux::start(cluster)?;
                eprintln!(
                    "realstack: Flux up in {:.1} s ({})",
                    flux.startup.as_secs_f64(),
                    flux.versions_line()
                );
                Ok(flux)
            })
            .as_ref()
    }

    /// [`Flux::shared`], or `None` after printing `SKIPPED: <why and how to build>` when
    /// the binaries are missing. Panics when Flux cannot be had otherwise (it failed to
    /// start, or `FLUXGATE_REQUIRE_REAL_STACK=1` and the binaries are missing).
    pub fn shared_or_skip() -> Option<&'static Flux<'static>> {
        match Flux::shared() {
            Ok(flux) => Some(flux),
            Err(Unavailable::Skip(why)) => {
                eprintln!("SKIPPED: {why}");
                None
            }
            Err(Unavailable::Failed(why)) => {
                panic!("Flux on the real control plane is unavailable: {why}")
            }
        }
    }
}

impl<'c> Flux<'c> {
    /// Installs Flux into `cluster` and starts its three controllers (see the module doc);
    /// returns once every one is ready. Once per cluster: a second call (or one after a
    /// failed start) fails, as two sets of controllers would reconcile the same objects.
    pub fn start(cluster: &'c RealCluster) -> Result<Flux<'c>, Unavailable> {
        if let Some(why) = not_built(cluster.bin_dir()) {
            return Err(why);
        }
        if cluster.flux_claimed.swap(true, Ordering::SeqCst) {
            return Err(Unavailable::Failed(format!(
                "Flux was already started on the cluster at {}: one set of controllers per cluster",
                cluster.server()
            )));
        }
        // A runtime of its own, as RealCluster::start: the callers are often inside a test's
        // runtime, and the clients made here must not outlive the runtime they were made on.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building a tokio runtime for Flux's startup")?
                        .block_on(launch(cluster))
                })
                .join()
        })
        .map_err(|_| Unavailable::Failed("Flux's startup thread panicked".into()))?
        .map_err(|e| Unavailable::Failed(format!("{e:#}")))
    }

    /// The cluster Flux runs on.
    pub fn cluster(&self) -> &'c RealCluster {
        self.cluster
    }

    /// source-controller's artifact server (`--storage-addr`, also what it advertises).
    pub fn storage_addr(&self) -> SocketAddr {
        self.storage
    }

    /// The running controllers, in [`CONTROLLERS`] order.
    pub fn controllers(&self) -> &[Running] {
        &self.controllers
    }

    /// The log of `controller` (`source-controller`, …): JSON lines, as upstream logs.
    pub fn log(&self, controller: &str) -> PathBuf {
        self.cluster.log(controller)
    }

    /// The CRDs installed (names).
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// From the first CRD applied to the last controller ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// `source-controller v1.9.3, …` as `build.sh` recorded them.
    pub fn versions_line(&self) -> String {
        let versions = self.cluster.versions();
        CONTROLLERS
            .iter()
            .map(|c| c.name)
            .chain(["flux2-rbac"])
            .map(|name| {
                format!(
                    "{name} {}",
                    versions.get(name).map(String::as_str).unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why Flux cannot be started from `bin` (files missing), as a skip or, under
/// `FLUXGATE_REQUIRE_REAL_STACK=1`, a failure; `None` when everything is there.
fn not_built(bin: &Path) -> Option<Unavailable> {
    let missing: Vec<String> = files(bin)
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let why = format!(
        "Flux's controllers are not built (missing: {}); build them with \
         `test/realstack/build.sh` (needs Go >= 1.26 and the Go module proxy)",
        missing.join(", ")
    );
    Some(
        if std::env::var(crate::REQUIRE_ENV).is_ok_and(|v| v == "1") {
            Unavailable::Failed(format!("{}=1 and {why}", crate::REQUIRE_ENV))
        } else {
            Unavailable::Skip(why)
        },
    )
}

async fn launch(cluster: &RealCluster) -> Result<Flux<'_>> {
    let t0 = Instant::now();
    let bin = cluster.bin_dir();
    let client = cluster.client().await?;
    let flux_bin = bin.join(DIR);

    // 1. CRDs.
    let mut crd_files: Vec<PathBuf> = std::fs::read_dir(&flux_bin)
        .with_context(|| format!("listing {}", flux_bin.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".toolkit.fluxcd.io_") && n.ends_with(".yaml"))
        })
        .collect();
    crd_files.sort();
    let mut crds = Vec::new();
    for path in &crd_files {
        for doc in manifest::documents(path)? {
            manifest::apply(&client, &doc, NAMESPACE, &path.display().to_string()).await?;
            crds.push(
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let mut watched = cluster;
    wait_for(
        &mut watched,
        &format!("Flux's CRDs {} to be Established", crds.join(", ")),
        || async { Ok(manifest::established(&client, &crds).await?.then_some(())) },
    )
    .await?;

    // 2. Namespace and ServiceAccounts, as flux2's manifests/bases/*/account.yaml (with the
    // namespace its kustomization sets).
    let made_here = "the Flux launcher";
    manifest::apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        NAMESPACE,
        made_here,
    )
    .await?;
    for c in CONTROLLERS {
        manifest::apply(
            &client,
            &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": c.name, "namespace": NAMESPACE}}),
            NAMESPACE,
            made_here,
        )
        .await?;
    }

    // 3. flux2's RBAC.
    for file in RBAC_FILES {
        let path = flux_bin.join(file);
        for doc in manifest::documents(&path)? {
            manifest::apply(&client, &doc, NAMESPACE, &path.display().to_string()).await?;
        }
    }

    // 4. The controllers.
    let ports = crate::free_ports(2 * CONTROLLERS.len() + 1)?;
    let storage: SocketAddr = ([127, 0, 0, 1], ports[2 * CONTROLLERS.len()]).into();
    let flux_dir = cluster.dir().join("flux");
    let mut controllers = Vec::new();
    for (i, c) in CONTROLLERS.into_iter().enumerate() {
        let token = manifest::service_account_token(&client, NAMESPACE, c.name, TOKEN_TTL).await?;
        let kubeconfig = cluster.token_kubeconfig(c.name, &token)?;
        let health: SocketAddr = ([127, 0, 0, 1], ports[2 * i]).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], ports[2 * i + 1]).into();
        // Its own home and temporary directory (the pods mount an emptyDir at /tmp), inside
        // the cluster's directory so that they go with it.
        let home = flux_dir.join(c.name);
        let tmp = home.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut args = vec![
            "--watch-all-namespaces=true".to_string(),
            "--log-level=info".into(),
            "--log-encoding=json".into(),
            "--enable-leader-election=false".into(),
            format!("--metrics-addr={metrics}"),
            format!("--health-addr={health}"),
            "--events-addr=".into(),
            format!("--requeue-dependency={}s", REQUEUE_DEPENDENCY.as_secs()),
        ];
        let path = |p: &Path| p.display().to_string();
        let mut env = vec![
            ("KUBECONFIG".to_string(), path(&kubeconfig)),
            ("RUNTIME_NAMESPACE".into(), NAMESPACE.into()),
            ("HOME".into(), path(&home)),
            ("TMPDIR".into(), path(&tmp)),
        ];
        if c.name == SOURCE_CONTROLLER.name {
            let storage_path = flux_dir.join("storage");
            std::fs::create_dir_all(&storage_path)
                .with_context(|| format!("creating {}", storage_path.display()))?;
            args.push(format!("--storage-path={}", path(&storage_path)));
            args.push(format!("--storage-addr={storage}"));
            args.push(format!("--storage-adv-addr={storage}"));
            // As its Deployment sets it: the sigstore TUF cache goes to the temporary dir.
            env.push(("TUF_ROOT".into(), path(&tmp.join(".sigstore"))));
        }
        let log = cluster.spawn(c.name, &bin.join(c.name), &args, &env)?;
        controllers.push(Running {
            controller: c,
            health,
            metrics,
            log,
            kubeconfig,
        });
    }

    // 5. Ready.
    for r in &controllers {
        let name = r.controller.name;
        wait_for(
            &mut watched,
            &format!("{name}'s health endpoint http://{}/readyz", r.health),
            || async {
                let answer = loopback_http::get(r.health, "/readyz").await?;
                Ok((answer.status == 200).then_some(()))
            },
        )
        .await?;
        wait_for(
            &mut watched,
            &format!(
                "{name} to start workers for {} (\"Starting workers\" in {})",
                r.controller.kinds.join(", "),
                r.log.display()
            ),
            || async {
                let started = started_workers(&r.log)?;
                let missing: Vec<_> = r
                    .controller
                    .kinds
                    .iter()
                    .filter(|k| !started.iter().any(|s| s == *k))
                    .collect();
                Ok(missing.is_empty().then_some(()))
            },
        )
        .await?;
    }
    wait_for(
        &mut watched,
        &format!("source-controller's artifact server http://{storage}/"),
        || async { Ok(loopback_http::get(storage, "/").await.ok().map(|_| ())) },
    )
    .await?;

    Ok(Flux {
        cluster,
        storage,
        controllers,
        crds,
        startup: t0.elapsed(),
    })
}

/// The kinds whose workers a controller's JSON log says it started (controller-runtime's
/// `Starting workers` with `controllerKind`).
pub fn started_workers(log: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == "Starting workers")
        .filter_map(|v| v["controllerKind"].as_str().map(str::to_owned))
        .collect())
}

/// Our OCI registry (`go/registry`: go-containerregistry's in-memory registry, the
/// distribution API) on a free loopback port, living as long as the cluster.
pub struct OciRegistry {
    addr: SocketAddr,
    log: PathBuf,
}

static REGISTRIES: AtomicUsize = AtomicUsize::new(0);

impl OciRegistry {
    /// Starts a registry (logged to `logs/oci-registry[-N].log` of the cluster) and waits
    /// until it listens. It binds port 0 and says which port it got, so no port can be taken
    /// from under it.
    pub async fn start(cluster: &RealCluster) -> Result<OciRegistry> {
        let n = REGISTRIES.fetch_add(1, Ordering::Relaxed);
        let name = match n {
            0 => REGISTRY_BINARY.to_string(),
            n => format!("{REGISTRY_BINARY}-{}", n + 1),
        };
        let log = cluster.spawn(
            &name,
            &cluster.bin_dir().join(REGISTRY_BINARY),
            &["-addr".into(), "127.0.0.1:0".into()],
            &[],
        )?;
        let mut watched = cluster;
        let addr = wait_for(
            &mut watched,
            &format!("{name} to listen (\"listening on\" in {})", log.display()),
            || async {
                let text = std::fs::read_to_string(&log)
                    .with_context(|| format!("reading {}", log.display()))?;
                text.lines()
                    .find_map(|l| l.strip_prefix("oci-registry: listening on http://"))
                    .map(|a| {
                        a.trim()
                            .parse::<SocketAddr>()
                            .map_err(|e| anyhow!("{name} says it listens on {a:?}: {e}"))
                    })
                    .transpose()
            },
        )
        .await?;
        Ok(OciRegistry { addr, log })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`, the registry host in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `oci://127.0.0.1:<port>/<repository>`, as an OCIRepository's `spec.url` or a
    /// `helm push` remote names it.
    pub fn url(&self, repository: &str) -> String {
        format!("oci://{}/{}", self.addr, repository.trim_start_matches('/'))
    }

    /// Its request log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The digest (`sha256:…`) of the manifest `reference` (a tag or digest) names in
    /// `repository`, from the registry's own `Docker-Content-Digest` header, checked
    /// against the SHA-256 of the manifest it serves.
    pub async fn manifest_digest(&self, repository: &str, reference: &str) -> Result<String> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let answer = loopback_http::ok(
            loopback_http::get_accepting(
                self.addr,
                &path,
                Some("application/vnd.oci.image.manifest.v1+json"),
            )
            .await?,
            &format!("the registry's manifest {path}"),
        )?;
        let header = answer
            .header("docker-content-digest")
            .with_context(|| format!("{path}: no Docker-Content-Digest header"))?
            .to_string();
        let computed = format!("sha256:{}", sha256_hex(&answer.body));
        anyhow::ensure!(
            header == computed,
            "{path}: Docker-Content-Digest {header} but the manifest's SHA-256 is {computed}"
        );
        Ok(header)
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
