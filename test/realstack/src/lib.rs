//! A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, KWOK (fake nodes whose pods the real scheduler binds and KWOK makes
//! Running, or Running but never Ready when their template says so) and the CSI
//! snapshot-controller (VolumeSnapshots; no CSI driver yet), built from their Go modules by
//! `test/realstack/build.sh` and started on 127.0.0.1 with free ports, once per test process.
//! On request, the real Flux source-, kustomize- and helm-controller run on it as Flux installs
//! them ([`flux::Flux`]), with a loopback OCI registry ([`flux::OciRegistry`]) and a static
//! HTTP server for Helm repositories ([`loopback_http::StaticFiles`]).
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let Some(cluster) = realstack::RealCluster::shared_or_skip() else { return Ok(()) };
//! let client = cluster.client().await?;
//! // The same cluster with Flux started on it (once per process; only tests that ask pay
//! // for it):
//! let Some(flux) = realstack::flux::Flux::shared_or_skip() else { return Ok(()) };
//! # Ok(()) }
//! ```
//!
//! Without the binaries every caller of [`RealCluster::shared_or_skip`] (or
//! [`flux::Flux::shared_or_skip`]) prints `SKIPPED: …` with the command that builds them,
//! unless `FLUXGATE_REQUIRE_REAL_STACK=1`, which turns that into a failure (CI sets it).
//! Every process of the control plane (Flux's and the registries included) ends when the
//! test process does, however it ends (a watchdog process holds a pipe from this one and
//! stops them when it closes: `src/process.rs` says how and why).
//!
//! Environment: `FLUXGATE_REALSTACK_BIN` (where the binaries are; default
//! `test/realstack/bin`), `FLUXGATE_REALSTACK_KEEP=1` (keep the cluster's directory with its
//! logs, audit log and certificates after exit; its path is printed).

pub mod audit;
pub mod flux;
pub mod loopback_http;
pub mod manifest;
mod pki;
mod process;
pub mod proxy;
pub mod snapshotter;
pub mod testing;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::{CertFiles, Pki};
use crate::process::Supervisor;

pub use crate::process::tail;

/// Set to 1 to make missing binaries a failure instead of a skip.
pub const REQUIRE_ENV: &str = "FLUXGATE_REQUIRE_REAL_STACK";
/// Where the binaries are, if not in `test/realstack/bin`.
pub const BIN_ENV: &str = "FLUXGATE_REALSTACK_BIN";
/// Set to 1 to keep the cluster's directory (logs, audit log, certificates) after exit.
pub const KEEP_ENV: &str = "FLUXGATE_REALSTACK_KEEP";

/// The programs `build.sh` makes, all of which a cluster needs.
pub const BINARIES: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "snapshot-controller",
];
/// KWOK's node stages `build.sh` copies from the kwok module (kwokctl's defaults).
const KWOK_NODE_STAGES: [&str; 2] = ["node-initialize.yaml", "node-heartbeat-with-lease.yaml"];
/// Our pod stages (`kwok-stages/`, see its files): Ready, never Ready when declared, Jobs
/// complete, deleted pods linger for their termination time.
const KWOK_POD_STAGES: [(&str, &str); 4] = [
    (
        "pod-ready.yaml",
        include_str!("../kwok-stages/pod-ready.yaml"),
    ),
    (
        "pod-never-ready.yaml",
        include_str!("../kwok-stages/pod-never-ready.yaml"),
    ),
    (
        "pod-complete.yaml",
        include_str!("../kwok-stages/pod-complete.yaml"),
    ),
    (
        "pod-delete.yaml",
        include_str!("../kwok-stages/pod-delete.yaml"),
    ),
];
/// Pod template annotation: the pod runs but never becomes Ready (the sims' convention).
pub const NEVER_READY_ANNOTATION: &str = "sim.fluxgate.dev/never-ready";
/// Pod annotation: seconds (fractions allowed) a deleted pod takes to terminate, capped by
/// its grace period; 1 when absent.
pub const TERMINATION_SECONDS_ANNOTATION: &str = "sim.fluxgate.dev/termination-seconds";
/// The annotation KWOK manages nodes by (the one KWOK's own deployment uses).
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// The fake node every cluster registers.
pub const NODE_NAME: &str = "kwok-node-0";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # Leader-election and node-heartbeat Leases are renewed every few seconds by every
  # component; they would drown what the tests look for.
  - level: None
    resources: [{group: coordination.k8s.io, resources: [leases]}]
  - level: Metadata
";

/// Where the binaries are: `$FLUXGATE_REALSTACK_BIN`, else `test/realstack/bin`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os(BIN_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("bin"),
    }
}

/// Why there is no cluster.
#[derive(Debug, Clone)]
pub enum Unavailable {
    /// The binaries are not built (and `FLUXGATE_REQUIRE_REAL_STACK` is not set).
    Skip(String),
    /// The binaries are required but missing, or the control plane did not come up.
    Failed(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Skip(why) | Unavailable::Failed(why) => f.write_str(why),
        }
    }
}

/// A running control plane. The shared one lives until the process exits; one from
/// [`RealCluster::start`] stops when dropped.
pub struct RealCluster {
    dir: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    ca_pem: String,
    audit_log: PathBuf,
    versions: BTreeMap<String, String>,
    startup: Duration,
    supervisor: Mutex<Supervisor>,
    /// Set by the first [`flux::Flux::start`] on this cluster: one set of Flux per cluster.
    pub(crate) flux_claimed: std::sync::atomic::AtomicBool,
}

static SHARED: OnceLock<Result<RealCluster, Unavailable>> = OnceLock::new();

impl RealCluster {
    /// The control plane of this test process, started by the first caller.
    pub fn shared() -> Result<&'static RealCluster, &'static Unavailable> {
        SHARED
            .get_or_init(|| {
                let cluster = RealCluster::start()?;
                eprintln!(
                    "realstack: control plane up in {:.1} s ({}), {}",
                    cluster.startup.as_secs_f64(),
                    cluster.versions_line(),
                    cluster.server
                );
                Ok(cluster)
            })
            .as_ref()
    }

    /// [`RealCluster::shared`], or `None` after printing `SKIPPED: <why and how to build>`
    /// when the binaries are missing. Panics when the control plane cannot be had otherwise
    /// (it failed to start, or `FLUXGATE_REQUIRE_REAL_STACK=1` and the binaries are missing).
    pub fn shared_or_skip() -> Option<&'static RealCluster> {
        match RealCluster::shared() {
            Ok(cluster) => Some(cluster),
            Err(Unavailable::Skip(why)) => {
                eprintln!("SKIPPED: {why}");
                None
            }
            Err(Unavailable::Failed(why)) => panic!("the real control plane is unavailable: {why}"),
        }
    }

    /// Starts a control plane of its own (the caller's until dropped). Blocks until
    /// /readyz is OK, the `default` ServiceAccount exists, the KWOK node is Ready and the
    /// snapshot-controller has synced its informers (its CRDs Established before it starts).
    pub fn start() -> Result<RealCluster, Unavailable> {
        let bin = bin_dir();
        let missing: Vec<String> = BINARIES
            .iter()
            .map(|b| bin.join(b))
            .chain(
                KWOK_NODE_STAGES
                    .iter()
                    .map(|s| bin.join("kwok-stages").join(s)),
            )
            .chain(snapshotter::files(&bin))
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            let what = if bin.is_dir() {
                format!("missing: {}", missing.join(", "))
            } else {
                format!("{} does not exist", bin.display())
            };
            let why = format!(
                "the real control plane is not built ({what}); build it with `test/realstack/build.sh` \
                 (needs Go >= 1.26 and the Go module proxy; about 30 min the first time, seconds after), \
                 or point {BIN_ENV} at a directory holding {}, kwok-stages/ and {}/",
                BINARIES.join(", "),
                snapshotter::DIR
            );
            return Err(if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                Unavailable::Failed(format!("{REQUIRE_ENV}=1 and {why}"))
            } else {
                Unavailable::Skip(why)
            });
        }
        // Its own thread and runtime: the callers are often inside a test's runtime, and
        // the clients made here must not outlive the runtime they were made on.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime for the startup checks")?;
            // Free ports are chosen before the components bind them; if another process
            // took one in between, start again once with new ones.
            match rt.block_on(launch(bin.clone())) {
                Err(e) if format!("{e:#}").contains("address already in use") => {
                    eprintln!("realstack: a port was taken before a component bound it; starting again ({e:#})");
                    rt.block_on(launch(bin))
                }
                result => result,
            }
        })
        .join()
        .map_err(|_| Unavailable::Failed("the control plane's startup thread panicked".into()))?
        .map_err(|e| Unavailable::Failed(format!("{e:#}")))
    }

    /// A kubeconfig for `system:masters` (user `admin`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubectl built with the control plane (same release).
    pub fn kubectl(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's directory: `logs/`, `audit.log`, `pki/`, etcd's data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster CA's certificate (PEM): what the API server's serving certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The apiserver's audit log (JSON lines, audit.k8s.io/v1 Event).
    pub fn audit_log(&self) -> &Path {
        &self.audit_log
    }

    /// From process start to ready (see [`RealCluster::start`]).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// What `build.sh` recorded: kubernetes, etcd, kwok, snapshot-controller, go.
    pub fn versions(&self) -> &BTreeMap<String, String> {
        &self.versions
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, …).
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }

    /// Name and pid of every component, and the watchdog (`watchdog`).
    pub fn pids(&self) -> Vec<(String, u32)> {
        let sup = self.supervisor.lock().unwrap_or_else(|p| p.into_inner());
        let mut pids = sup.pids();
        pids.push(("watchdog".into(), sup.watchdog_pid()));
        pids
    }

    /// Fails, with its log, if a component has exited.
    pub fn check_running(&self) -> Result<()> {
        self.supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check()
    }

    /// A client as `admin` (`system:masters`), bound to the caller's runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        client_from(kubeconfig, &self.kubeconfig.display().to_string()).await
    }

    /// A client that authenticates with a bearer token (e.g. from a TokenRequest).
    pub async fn token_client(&self, token: &str) -> Result<kube::Client> {
        let yaml = kubeconfig_yaml(&self.server, &self.ca_pem, &Credentials::Token(token));
        let kubeconfig = Kubeconfig::from_yaml(&yaml).context("parsing a token kubeconfig")?;
        client_from(kubeconfig, "a token kubeconfig").await
    }

    /// Starts a process that lives and dies with the cluster (the watchdog stops it with
    /// the rest), stdout and stderr to `logs/<name>.log`.
    pub(crate) fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<PathBuf> {
        let log = self.log(name);
        self.supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn_with_env(name, program, args, env, &log)?;
        Ok(log)
    }

    /// Writes `<name>.kubeconfig` into the cluster's directory: this server, its CA, `token`.
    pub(crate) fn token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let file = self.dir.join(format!("{name}.kubeconfig"));
        write_file(
            &file,
            &kubeconfig_yaml(&self.server, &self.ca_pem, &Credentials::Token(token)),
        )?;
        Ok(file)
    }

    fn versions_line(&self) -> String {
        self.versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn client_from(kubeconfig: Kubeconfig, what: &str) -> Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {what}"))?;
    kube::Client::try_from(config).with_context(|| format!("making a client from {what}"))
}

enum Credentials<'a> {
    Cert(&'a CertFiles),
    Token(&'a str),
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, creds: &Credentials<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match creds {
        Credentials::Cert(c) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        Credentials::Token(t) => format!("    token: {t}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: realstack\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\ncontexts:\n- name: realstack\n  context:\n    cluster: realstack\n    \
         user: user\ncurrent-context: realstack\nusers:\n- name: user\n  user:\n{user}",
        b64(ca_pem)
    )
}

/// Free ports on 127.0.0.1, all held until every one is chosen so they differ.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn read_versions(bin: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(bin.join("VERSIONS"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn launch(bin: PathBuf) -> Result<RealCluster> {
    let t0 = Instant::now();
    let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
    let dir = tempfile::Builder::new()
        .prefix("fluxgate-realstack-")
        .tempdir()
        .context("creating the cluster's temporary directory")?
        .keep();
    if keep {
        eprintln!(
            "realstack: {KEEP_ENV}=1: the cluster's files stay in {}",
            dir.display()
        );
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    // From here on, an error drops the supervisor, which stops whatever was started and
    // (unless kept) removes the directory.
    let mut sup = Supervisor::start(&dir, keep)?;
    let arg = |k: &str, v: &dyn fmt::Display| format!("--{k}={v}");
    let path = |p: &Path| p.display().to_string();

    let pki = Pki::generate(&dir.join("pki"))?;
    let [etcd_client, etcd_peer, etcd_metrics, api_port]: [u16; 4] = free_ports(4)?
        .try_into()
        .map_err(|_| anyhow!("free_ports(4) returned another count"))?;
    let server = format!("https://127.0.0.1:{api_port}");

    // etcd: throwaway, single member, no fsync.
    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    sup.spawn(
        "etcd",
        &bin.join("etcd"),
        &[
            arg("name", &"realstack"),
            arg("data-dir", &path(&dir.join("etcd"))),
            arg("listen-client-urls", &etcd_url),
            arg("advertise-client-urls", &etcd_url),
            arg("listen-peer-urls", &peer_url),
            arg("initial-advertise-peer-urls", &peer_url),
            arg("initial-cluster", &format!("realstack={peer_url}")),
            arg(
                "listen-metrics-urls",
                &format!("http://127.0.0.1:{etcd_metrics}"),
            ),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &logs.join("etcd.log"),
    )?;

    // kube-apiserver: RBAC (+ Node), the default admission chain (ServiceAccount included),
    // service-account tokens, an audit log.
    let audit_policy = dir.join("audit-policy.yaml");
    write_file(&audit_policy, AUDIT_POLICY)?;
    let audit_log = dir.join("audit.log");
    let sa_key = path(&pki.service_account_key);
    sup.spawn(
        "kube-apiserver",
        &bin.join("kube-apiserver"),
        &[
            arg("etcd-servers", &etcd_url),
            arg("bind-address", &"127.0.0.1"),
            arg("advertise-address", &"127.0.0.1"),
            arg("secure-port", &api_port),
            arg("cert-dir", &path(&dir.join("apiserver"))),
            arg("tls-cert-file", &path(&pki.serving.cert)),
            arg("tls-private-key-file", &path(&pki.serving.key)),
            arg("client-ca-file", &path(&pki.ca.cert)),
            arg(
                "service-account-issuer",
                &"https://kubernetes.default.svc.cluster.local",
            ),
            arg("service-account-key-file", &path(&pki.service_account_pub)),
            arg("service-account-signing-key-file", &sa_key),
            arg("service-cluster-ip-range", &"10.0.0.0/24"),
            arg("authorization-mode", &"Node,RBAC"),
            arg("allow-privileged", &true),
            arg("audit-policy-file", &path(&audit_policy)),
            arg("audit-log-path", &path(&audit_log)),
            arg("profiling", &false),
        ],
        &logs.join("kube-apiserver.log"),
    )?;

    // Each of the others with an identity of its own, as kubeadm sets them up.
    let kubeconfig_for = |name: &str, user: &str, group: Option<&str>| -> Result<PathBuf> {
        let cert = pki.client(name, user, group)?;
        let file = dir.join(format!("{name}.kubeconfig"));
        write_file(
            &file,
            &kubeconfig_yaml(&server, &pki.ca.cert_pem, &Credentials::Cert(&cert)),
        )?;
        Ok(file)
    };
    let admin = kubeconfig_for("admin", "admin", Some("system:masters"))?;
    let kcm = kubeconfig_for(
        "kube-controller-manager",
        "system:kube-controller-manager",
        None,
    )?;
    let scheduler = kubeconfig_for("kube-scheduler", "system:kube-scheduler", None)?;
    let kwok = kubeconfig_for("kwok", "kwok-controller", Some("system:masters"))?;

    sup.spawn(
        "kube-scheduler",
        &bin.join("kube-scheduler"),
        &[
            arg("kubeconfig", &path(&scheduler)),
            arg("authentication-kubeconfig", &path(&scheduler)),
            arg("authorization-kubeconfig", &path(&scheduler)),
            arg("secure-port", &0),
            arg("leader-elect", &false),
        ],
        &logs.join("kube-scheduler.log"),
    )?;
    let (ann_key, ann_value) = KWOK_NODE_ANNOTATION;
    let mut kwok_args = vec![
        arg("kubeconfig", &path(&kwok)),
        arg("manage-all-nodes", &false),
        arg(
            "manage-nodes-with-annotation-selector",
            &format!("{ann_key}={ann_value}"),
        ),
        arg("node-lease-duration-seconds", &40),
        arg("cidr", &"10.244.0.0/16"),
        // Nothing connects to it (no server is asked for); loopback keeps it that way.
        arg("node-ip", &"127.0.0.1"),
    ];
    for stage in KWOK_NODE_STAGES {
        kwok_args.push(arg("config", &path(&bin.join("kwok-stages").join(stage))));
    }
    let pod_stages = dir.join("kwok-stages");
    std::fs::create_dir_all(&pod_stages)
        .with_context(|| format!("creating {}", pod_stages.display()))?;
    for (name, text) in KWOK_POD_STAGES {
        let file = pod_stages.join(name);
        write_file(&file, text)?;
        kwok_args.push(arg("config", &path(&file)));
    }
    sup.spawn(
        "kwok",
        &bin.join("kwok"),
        &kwok_args,
        &logs.join("kwok.log"),
    )?;

    let client = client_from(
        Kubeconfig::read_from(&admin).with_context(|| format!("reading {}", admin.display()))?,
        &admin.display().to_string(),
    )
    .await?;

    wait_for(&mut sup, &format!("{server}/readyz to say ok"), || async {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        let body = client.request_text(req).await?;
        Ok((body.trim() == "ok").then_some(()))
    })
    .await?;

    // kube-controller-manager only now: it gives the apiserver 10 s to answer /healthz
    // (`WaitForAPIServer(versionedClient, 10*time.Second)` in v1.36.3's
    // cmd/kube-controller-manager/app/controllermanager.go) and exits otherwise — under load
    // (several control planes starting at once on 2 cores) the apiserver's RBAC bootstrap
    // took longer, and KCM exited with `forbidden: … cannot get path "/healthz"`. In a real
    // cluster the kubelet would restart it; here nothing would.
    sup.spawn(
        "kube-controller-manager",
        &bin.join("kube-controller-manager"),
        &[
            arg("kubeconfig", &path(&kcm)),
            arg("secure-port", &0),
            arg("leader-elect", &false),
            arg("controllers", &"*"),
            arg("use-service-account-credentials", &true),
            arg("service-account-private-key-file", &sa_key),
            arg("root-ca-file", &path(&pki.ca.cert)),
            arg("cluster-signing-cert-file", &path(&pki.ca.cert)),
            arg("cluster-signing-key-file", &path(&pki.ca.key)),
        ],
        &logs.join("kube-controller-manager.log"),
    )?;

    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": { ann_key: ann_value, "node.alpha.kubernetes.io/ttl": "0" },
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": { "cpu": "32", "memory": "256Gi", "pods": "110" },
            "capacity": { "cpu": "32", "memory": "256Gi", "pods": "110" },
        },
    }))?;
    nodes
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("registering Node {NODE_NAME}"))?;

    // The snapshot-controller: its CRDs must be served before it starts (it exits when they
    // are not listable within --retry-crd-interval-max), then it runs as its ServiceAccount.
    // kube-system is made by the apiserver's system-namespaces controller, which /readyz
    // does not wait for.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for(
        &mut sup,
        &format!(
            "namespace {} (made by kube-apiserver)",
            snapshotter::NAMESPACE
        ),
        || async {
            Ok(namespaces
                .get_opt(snapshotter::NAMESPACE)
                .await?
                .map(|_| ()))
        },
    )
    .await?;
    let crds = snapshotter::install(&client, &bin).await?;
    wait_for(
        &mut sup,
        &format!(
            "CustomResourceDefinitions {} to be Established",
            crds.join(", ")
        ),
        || async { Ok(manifest::established(&client, &crds).await?.then_some(())) },
    )
    .await?;
    // Longer than any test process lives; the apiserver sets no maximum here.
    let token = snapshotter::token(&client, Duration::from_secs(24 * 3600)).await?;
    let snapshot_kubeconfig = dir.join("snapshot-controller.kubeconfig");
    write_file(
        &snapshot_kubeconfig,
        &kubeconfig_yaml(&server, &pki.ca.cert_pem, &Credentials::Token(&token)),
    )?;
    let snapshot_log = logs.join("snapshot-controller.log");
    sup.spawn(
        "snapshot-controller",
        &bin.join("snapshot-controller"),
        &[
            arg("kubeconfig", &path(&snapshot_kubeconfig)),
            arg("leader-election", &false),
            // As upstream deploys it (deploy/kubernetes/snapshot-controller); V(4) is also
            // where it says its caches are synced.
            arg("v", &5),
        ],
        &snapshot_log,
    )?;

    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_for(
        &mut sup,
        "ServiceAccount default/default (made by kube-controller-manager)",
        || async { Ok(service_accounts.get_opt("default").await?.map(|_| ())) },
    )
    .await?;
    wait_for(
        &mut sup,
        &format!("Node {NODE_NAME} to be Ready (made so by kwok)"),
        || async {
            let node = nodes.get(NODE_NAME).await?;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(ready.then_some(()))
        },
    )
    .await?;
    wait_for(
        &mut sup,
        &format!(
            "the snapshot-controller to sync its informers (\"{}\" in {})",
            snapshotter::INITIALIZED_LOG,
            snapshot_log.display()
        ),
        || async {
            let text = std::fs::read_to_string(&snapshot_log)
                .with_context(|| format!("reading {}", snapshot_log.display()))?;
            Ok(text.contains(snapshotter::INITIALIZED_LOG).then_some(()))
        },
    )
    .await?;

    Ok(RealCluster {
        versions: read_versions(&bin),
        startup: t0.elapsed(),
        bin,
        kubeconfig: admin,
        server,
        ca_pem: pki.ca.cert_pem.clone(),
        audit_log,
        dir,
        supervisor: Mutex::new(sup),
        flux_claimed: std::sync::atomic::AtomicBool::new(false),
    })
}

/// What [`wait_for`] watches between probes: that no component has exited, and every
/// log's tail for a timeout message.
pub(crate) trait Watched {
    fn check(&mut self) -> Result<()>;
    fn tails(&self, lines: usize) -> String;
}

impl Watched for Supervisor {
    fn check(&mut self) -> Result<()> {
        Supervisor::check(self)
    }

    fn tails(&self, lines: usize) -> String {
        self.all_log_tails(lines)
    }
}

impl Watched for &RealCluster {
    fn check(&mut self) -> Result<()> {
        self.check_running()
    }

    fn tails(&self, lines: usize) -> String {
        self.supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all_log_tails(lines)
    }
}

/// Polls `probe` until it yields `Some`, failing early when a component exits and with
/// the last probe error and every log's tail at [`STARTUP_TIMEOUT`].
pub(crate) async fn wait_for<T, F, Fut>(
    watched: &mut impl Watched,
    what: &str,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        watched
            .check()
            .with_context(|| format!("while waiting for {what}"))?;
        let last = match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s waiting for {what} (last: {last}); the logs end with:\n{}",
                STARTUP_TIMEOUT.as_secs(),
                watched.tails(8)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
