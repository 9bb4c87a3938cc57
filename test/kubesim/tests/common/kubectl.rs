//! A kubectl target — a kubectl binary, a kubeconfig and a namespace — on kubesim or on the
//! real control plane of test/realstack, so that `kubectl_cases` run unchanged on both.
//!
//! One kubectl judges both servers: the v1.36.3 kubectl built with the real stack when it is
//! built (the real target always uses it), else the system `kubectl` for kubesim alone.
#![allow(dead_code)]

use kubesim::{KubeSim, Match};
use realstack::RealCluster;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Where a target's requests go.
pub enum Server {
    Sim(KubeSim),
    Real(&'static RealCluster),
}

/// kubectl pointed at one server and one namespace of its own (every command gets `-n`).
pub struct Target {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub server: Server,
    /// kubectl's discovery and OpenAPI cache, fresh for each target.
    cache: tempfile::TempDir,
}

/// What one kubectl run printed and how it ended.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// The kubectl for kubesim: the real stack's (v1.36.3) when built, else the system one;
/// `None` (after a SKIPPED line) when there is neither.
pub fn sim_kubectl() -> Option<PathBuf> {
    let built = realstack::bin_dir().join("kubectl");
    if built.is_file() {
        return Some(built);
    }
    let system = PathBuf::from("kubectl");
    let works = std::process::Command::new(&system)
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        eprintln!(
            "kubectl: the real stack is not built ({} is missing); using the system kubectl",
            built.display()
        );
        Some(system)
    } else {
        eprintln!(
            "SKIPPED: no kubectl: neither {} (test/realstack/build.sh) nor a system kubectl",
            built.display()
        );
        None
    }
}

/// The Flux and VolumeSnapshot CRDs (upstream's when the Go module cache has them, else
/// kubesim's own) and Fluxgate's own CRDs from the chart.
pub fn crd_files() -> Vec<PathBuf> {
    let mut files = super::third_party_crd_files();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/fluxgate/crds");
    let mut fluxgate: Vec<PathBuf> = std::fs::read_dir(&chart)
        .unwrap_or_else(|e| panic!("reading Fluxgate's CRDs in {}: {e}", chart.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    fluxgate.sort();
    assert!(!fluxgate.is_empty(), "no CRD in {}", chart.display());
    files.extend(fluxgate);
    files
}

/// Runs kubectl synchronously (for one-time setup outside any test's runtime).
fn kubectl_blocking(kubectl: &Path, kubeconfig: &Path, cache: &Path, args: &[String]) -> Out {
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `kubectl apply --server-side` of [`crd_files`], then waits until all are Established.
fn install_crds(kubectl: &Path, kubeconfig: &Path, cache: &Path) {
    let mut apply = vec!["apply".to_string(), "--server-side".to_string()];
    for f in crd_files() {
        apply.extend(["-f".to_string(), f.display().to_string()]);
    }
    let out = kubectl_blocking(kubectl, kubeconfig, cache, &apply);
    assert!(
        out.ok(),
        "applying the CRDs failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    // A user installing the chart sees what the server warns about its CRDs (an
    // unrecognised `format`, say): there must be nothing to see.
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("Warning:"))
        .collect();
    assert!(
        warnings.is_empty(),
        "the API server warns about the CRDs:\n{}",
        warnings.join("\n")
    );
    // These CRDs by name: other tests make and delete CRDs of their own meanwhile.
    let mut wait: Vec<String> = ["wait", "--for=condition=Established", "--timeout=30s"]
        .map(String::from)
        .to_vec();
    wait.extend(
        out.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from),
    );
    let out = kubectl_blocking(kubectl, kubeconfig, cache, &wait);
    assert!(
        out.ok(),
        "the CRDs did not become Established:\n{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// Installs [`crd_files`] into the shared real control plane once per test process.
pub fn real_crds(cluster: &RealCluster) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let cache = tempfile::tempdir().expect("a temporary kubectl cache");
        install_crds(&cluster.kubectl(), cluster.kubeconfig(), cache.path());
    });
}

/// `case-kubectl-<case>`, a valid namespace name (at most 58 characters, so that a case may
/// append a short suffix for a namespace of its own).
fn namespace_for(case: &str) -> String {
    let name: String = case.replace('_', "-").chars().take(45).collect();
    format!("case-kubectl-{}", name.trim_end_matches('-'))
}

impl Target {
    /// A fresh kubesim with namespace `case-kubectl-<case>`; `None` without any kubectl.
    pub async fn sim(case: &str) -> Option<Target> {
        let kubectl = sim_kubectl()?;
        let sim = KubeSim::start().await;
        let t = Target {
            kubectl,
            kubeconfig: sim.kubeconfig_path(),
            namespace: namespace_for(case),
            server: Server::Sim(sim),
            cache: tempfile::tempdir().expect("a temporary kubectl cache"),
        };
        t.ok(&["create", "namespace", &t.namespace]).await;
        Some(t)
    }

    /// The shared real control plane with namespace `case-kubectl-<case>` (and its
    /// `default` ServiceAccount, which pods need); `None` when the stack is not built.
    pub async fn real(case: &str) -> Option<Target> {
        let cluster = RealCluster::shared_or_skip()?;
        let t = Target {
            kubectl: cluster.kubectl(),
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            namespace: namespace_for(case),
            server: Server::Real(cluster),
            cache: tempfile::tempdir().expect("a temporary kubectl cache"),
        };
        t.ok(&["create", "namespace", &t.namespace]).await;
        // kube-controller-manager makes it a moment after the namespace.
        t.eventually("the default ServiceAccount", async || {
            t.run(&["get", "serviceaccount", "default"]).await.ok()
        })
        .await;
        Some(t)
    }

    pub fn sim_server(&self) -> Option<&KubeSim> {
        match &self.server {
            Server::Sim(sim) => Some(sim),
            Server::Real(_) => None,
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self.server, Server::Real(_))
    }

    /// Serves the Flux, VolumeSnapshot and Fluxgate kinds ([`crd_files`]): applied with this
    /// kubectl into kubesim, once per process into the shared real control plane.
    pub async fn with_crds(&self) {
        match &self.server {
            Server::Sim(_) => {
                let (kubectl, kubeconfig) = (self.kubectl.clone(), self.kubeconfig.clone());
                let cache = self.cache.path().to_path_buf();
                tokio::task::spawn_blocking(move || install_crds(&kubectl, &kubeconfig, &cache))
                    .await
                    .expect("installing the CRDs into kubesim");
            }
            Server::Real(cluster) => {
                let cluster: &'static RealCluster = cluster;
                tokio::task::spawn_blocking(move || real_crds(cluster))
                    .await
                    .expect("installing the CRDs into the real control plane");
            }
        }
    }

    /// `kubectl --kubeconfig … --cache-dir … -n <namespace> <args>`, not yet started.
    pub fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.kubectl);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    pub async fn run_with(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self
            .cmd(args)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.kubectl.display()));
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("writing kubectl's stdin");
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 60 s"))
            .expect("waiting for kubectl");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, "").await
    }

    /// Runs and insists on success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "").await
    }

    pub async fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let o = self.run_with(args, stdin).await;
        assert!(
            o.ok(),
            "kubectl {args:?} failed (exit {}) on {}:\n{}\n{}",
            o.code,
            self.what(),
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// Runs with `-o json` and parses the answer.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let text = self.ok(&a).await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("kubectl {args:?} -o json printed no JSON ({e}):\n{text}"))
    }

    /// `kubesim` or `the real API server`, for messages.
    pub fn what(&self) -> &'static str {
        match self.server {
            Server::Sim(_) => "kubesim",
            Server::Real(_) => "the real API server",
        }
    }

    /// How many watches of `resource` in this target's namespace the server has started:
    /// kubesim's request log, or the real apiserver's audit log (`ResponseStarted`).
    pub fn watches_started(&self, resource: &str) -> usize {
        match &self.server {
            Server::Sim(sim) => sim.count(
                &Match::any()
                    .verb("watch")
                    .resource(resource)
                    .namespace(&self.namespace),
            ),
            Server::Real(cluster) => {
                let log = std::fs::read_to_string(cluster.audit_log()).unwrap_or_else(|e| {
                    panic!(
                        "reading the audit log {}: {e}",
                        cluster.audit_log().display()
                    )
                });
                log.lines()
                    .filter(|l| l.contains("\"verb\":\"watch\""))
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|e| {
                        e["stage"] == "ResponseStarted"
                            && e["objectRef"]["resource"] == resource
                            && e["objectRef"]["namespace"] == self.namespace.as_str()
                    })
                    .count()
            }
        }
    }

    /// Waits until a watch of `resource` in this namespace has started (so a change made
    /// next reaches the watcher live, not in its initial list).
    pub async fn watch_opened(&self, resource: &str) {
        self.eventually(&format!("a watch on {resource}"), async || {
            self.watches_started(resource) > 0
        })
        .await;
    }

    /// Waits up to 30 s for `done`, for what a real controller does a moment later.
    pub async fn eventually(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done().await {
            assert!(
                Instant::now() < deadline,
                "timed out after 30 s waiting for {what} on {}",
                self.what()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
