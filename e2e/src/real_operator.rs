//! Fluxgate on the real control plane as the chart's ServiceAccount (issue #18, item 5): the
//! chart installed with real Helm beside the Flux and VolumeSnapshot CRDs a Flux cluster
//! has, a TokenRequest token of the chart's ServiceAccount, and the operator started in
//! process with that identity and the configuration the chart's Deployment gives
//! `fluxgate run`. The API server's real RBAC authorizer decides every request; its audit
//! log shows what was refused. [`crate::chart`]'s module documentation shows a story's use.

use crate::chart::{self, Access, Release};
use anyhow::{Context, bail};
use clap::{Args, FromArgMatches};
use fluxgate::cli::run::RunArgs;
use fluxgate::cluster::{connect, required_apis};
use fluxgate::controller::Settings;
use fluxgate::controller::leader::Leadership;
use fluxgate::telemetry::metrics::Metrics;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use realstack::RealCluster;
use realstack::audit::{AuditLog, Events, Mark};
use realstack::proxy::ApiProxy;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the ServiceAccount token lasts: longer than any test process.
const TOKEN_SECONDS: i64 = 24 * 3600;
/// How long CRDs may take to be Established.
const ESTABLISHED_WITHIN: Duration = Duration::from_secs(60);
/// How long the operator may take to win the Lease (a replica of an earlier test that
/// did not release it leaves it to expire: 15 s).
const LEAD_WITHIN: Duration = Duration::from_secs(60);
/// `fluxgate run`'s flag for the Git cache directory.
const GIT_CACHE_FLAG: &str = "git-cache-dir";
/// How long a graceful stop may take before the controllers are aborted.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The values the shared release is installed with, over the chart's defaults: the
/// ConfigMap the stories' Renovate writes to ([`crate::when::RENOVATE_CONFIGMAP`]), so
/// that the Role the chart grants for it exists and the operator watches it as the
/// stories configure it.
pub fn shared_values() -> serde_json::Value {
    let (namespace, name) = crate::when::RENOVATE_CONFIGMAP;
    json!({"renovate": {"configMap": {"namespace": namespace, "name": name}}})
}

/// The control plane a chart is installed in: the test process's shared one, or one of the
/// install's own (a story's), which stops when the install is dropped.
pub enum InstalledIn {
    Shared(&'static RealCluster),
    Own(Box<RealCluster>),
}

impl std::ops::Deref for InstalledIn {
    type Target = RealCluster;

    fn deref(&self) -> &RealCluster {
        match self {
            InstalledIn::Shared(cluster) => cluster,
            InstalledIn::Own(cluster) => cluster,
        }
    }
}

/// The chart installed into a real cluster, and the ServiceAccount token Fluxgate runs with.
pub struct ChartInstall {
    cluster: InstalledIn,
    release: Release,
    third_party_crds: String,
    kubeconfig: PathBuf,
    /// The ServiceAccount's token in [`ChartInstall::kubeconfig`].
    token: String,
}

static SHARED: OnceLock<Result<ChartInstall, String>> = OnceLock::new();

impl ChartInstall {
    /// The chart installed (once per test process, with [`shared_values`]) into the shared
    /// real control plane, with the Flux and VolumeSnapshot CRDs and namespace `apps`; or
    /// `None` after printing `SKIPPED: …` when the real stack or a Python with helm-python
    /// is missing. With `FLUXGATE_REQUIRE_REAL_STACK=1` a missing piece panics instead, as
    /// does a failed install.
    pub fn shared_or_skip(test: &str) -> Option<&'static ChartInstall> {
        let Some(python) = chart::helm_python(test) else {
            if std::env::var(realstack::REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!(
                    "{}=1, but there is no Python with helm-python to install the chart (set \
                     HELM_PYTHON)",
                    realstack::REQUIRE_ENV
                );
            }
            return None;
        };
        let cluster = RealCluster::shared_or_skip()?;
        let installed = SHARED.get_or_init(|| {
            let started = Instant::now();
            // A thread and runtime of its own: the caller's runtime is a test's and ends
            // with it; nothing made here may depend on it.
            let result = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a runtime for the install")?
                    .block_on(ChartInstall::install(
                        InstalledIn::Shared(cluster),
                        &python,
                        &shared_values(),
                    ))
            })
            .join()
            .map_err(|_| "the chart's install thread panicked".to_owned())
            .and_then(|r| r.map_err(|e| format!("{e:#}")));
            if let Ok(install) = &result {
                eprintln!(
                    "chart: release {}/{} installed with real Helm in {:.1} s; {}; Fluxgate runs \
                     as {}",
                    install.release.namespace,
                    install.release.name,
                    started.elapsed().as_secs_f64(),
                    install.third_party_crds,
                    install.username()
                );
            }
            result
        });
        match installed {
            Ok(install) => Some(install),
            Err(e) => panic!("installing the chart into the real control plane: {e}"),
        }
    }

    /// Installs the chart into `cluster` with `overrides`, after the Flux and VolumeSnapshot
    /// CRDs, the stories' namespace `apps` and every other namespace the rendered release
    /// puts objects in (Helm creates only the release's own); waits until every CRD is
    /// Established; makes a token of the chart's ServiceAccount and a kubeconfig holding it.
    pub async fn install(
        cluster: InstalledIn,
        python: &str,
        overrides: &serde_json::Value,
    ) -> anyhow::Result<ChartInstall> {
        let admin = cluster.client().await?;
        let mut namespaces = std::collections::BTreeSet::from([crate::given::NAMESPACE.to_owned()]);
        namespaces.extend(
            chart::render(python, None, overrides)?
                .iter()
                .filter_map(|o| o["metadata"]["namespace"].as_str())
                .filter(|ns| *ns != chart::RELEASE_NAMESPACE)
                .map(str::to_owned),
        );
        for namespace in &namespaces {
            create_namespace(&admin, namespace).await?;
        }
        let third_party_crds = install_third_party_crds(&admin).await?;
        let release = chart::install(python, cluster.kubeconfig(), overrides)?;
        wait_established(&admin).await?;
        let token = service_account_token(&admin, &release).await?;
        let kubeconfig = cluster.dir().join("fluxgate-operator.kubeconfig");
        write_token_kubeconfig(&cluster, &token, &kubeconfig)?;
        Ok(ChartInstall {
            cluster,
            release,
            third_party_crds,
            kubeconfig,
            token,
        })
    }

    pub fn cluster(&self) -> &RealCluster {
        &self.cluster
    }

    pub fn release(&self) -> &Release {
        &self.release
    }

    /// `system:serviceaccount:fluxgate-system:<the chart's ServiceAccount>`.
    pub fn username(&self) -> String {
        self.release.username()
    }

    /// A kubeconfig whose user is the chart's ServiceAccount (a bearer token from the
    /// TokenRequest API, valid 24 h): what `fluxgate run --kubeconfig FILE` or kubectl take.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The operator's client: built from [`ChartInstall::kubeconfig`] by the code `fluxgate
    /// run --kubeconfig` uses (`fluxgate::cluster::connect::connect`), so it authenticates as
    /// the chart's ServiceAccount and sends Fluxgate's User-Agent. Bound to the caller's
    /// runtime.
    pub async fn operator_client(&self) -> anyhow::Result<Client> {
        Ok(connect::connect(Some(&self.kubeconfig), None).await?.client)
    }

    /// [`ChartInstall::operator_client`] through `proxy`: the same identity and code, the
    /// kubeconfig's server the proxy (its request log, faults and gates then see every
    /// request of the operator).
    pub async fn operator_client_via(&self, proxy: &ApiProxy) -> anyhow::Result<Client> {
        let path = self
            .cluster
            .dir()
            .join("fluxgate-operator-proxied.kubeconfig");
        write_private(
            &path,
            &proxy.kubeconfig_yaml(&self.token, chart::RELEASE_NAMESPACE),
        )?;
        Ok(connect::connect(Some(&path), None).await?.client)
    }

    /// How `fluxgate run` is configured by the chart's Deployment: each literal variable of
    /// its container's environment given to `fluxgate run`'s own flags (`RunArgs`, through
    /// the `env` each flag names), with the Git cache in `git_cache_dir` instead of the
    /// pod's volume.
    pub fn operator_config(&self, git_cache_dir: &Path) -> anyhow::Result<OperatorConfig> {
        let command = RunArgs::augment_args(clap::Command::new("fluxgate-run"));
        let mut argv = vec!["fluxgate-run".to_owned()];
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            if long == GIT_CACHE_FLAG {
                continue; // the pod's volume; given below instead
            }
            if let Some(value) = self.release.operator_env(&env.to_string_lossy()) {
                argv.push(format!("--{long}={value}"));
            }
        }
        argv.push(format!("--{GIT_CACHE_FLAG}={}", git_cache_dir.display()));
        // Only the Deployment's environment counts, not this test process's.
        let command = command.mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(&argv).with_context(|| {
            format!(
                "`fluxgate run` refuses the chart's Deployment environment as flags: {}",
                argv.join(" ")
            )
        })?;
        let args = RunArgs::from_arg_matches(&matches)
            .context("reading `fluxgate run`'s flags from the chart's environment")?;
        // As src/cli/run.rs turns the flags into settings.
        let mut settings = Settings::new(&args.git_cache_dir);
        settings.author = fluxgate::git::Author::new(&args.git_author_name, &args.git_author_email);
        settings.concurrency = args.concurrency;
        settings.renovate = fluxgate::controller::renovate_input::RenovateSettings {
            configmap: args.renovate_configmap.clone(),
            file: args.renovate_file.clone(),
        };
        settings.auto_upgrade_limit = args.auto_upgrade_limit;
        Ok(OperatorConfig {
            settings,
            leader_election: args.leader_election,
            // FLUXGATE_NAMESPACE is the pod's own namespace (a fieldRef).
            lease_namespace: self.release.namespace.clone(),
            identity: format!("fluxgate-e2e-{}", std::process::id()),
        })
    }

    /// The API server's audit log.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::open(self.cluster.audit_log())
    }

    /// Every request of the chart's ServiceAccount since `mark` that was answered 403, once
    /// the log holds every request answered so far.
    pub async fn refused_since(&self, mark: &Mark) -> anyhow::Result<Events> {
        Ok(self.requests_since(mark).await?.forbidden())
    }

    /// Every request of the chart's ServiceAccount since `mark` (see [`Events::requests`]),
    /// once the log holds every request answered so far.
    pub async fn requests_since(&self, mark: &Mark) -> anyhow::Result<Events> {
        let log = self.audit_log();
        log.sync(&self.cluster.client().await?).await?;
        Ok(log.since(mark)?.by_user(&self.username()).requests())
    }

    /// Fails, listing them for a person, if the API server refused the chart's
    /// ServiceAccount anything since `mark`: the chart does not allow what Fluxgate did.
    pub async fn check_nothing_refused_since(&self, mark: &Mark) -> anyhow::Result<()> {
        let refused = self.refused_since(mark).await?;
        if !refused.is_empty() {
            bail!(
                "the API server refused {} request(s) of Fluxgate running as {} — the chart \
                 (charts/fluxgate/templates/clusterrole.yaml) does not allow them:\n{}",
                refused.len(),
                self.username(),
                refused.render()
            );
        }
        Ok(())
    }

    /// Whether the real authorizer lets the chart's ServiceAccount make `access`, asked with
    /// a SubjectAccessReview (as admin), and the authorizer's reason.
    pub async fn allows(&self, admin: &Client, access: &Access) -> anyhow::Result<(bool, String)> {
        let (resource, subresource) = match access.resource.split_once('/') {
            Some((resource, sub)) => (resource.to_owned(), Some(sub.to_owned())),
            None => (access.resource.clone(), None),
        };
        let namespace = &self.release.namespace;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(self.username()),
                // The groups the ServiceAccount token authenticates with.
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.clone()),
                    group: Some(access.group.clone()),
                    resource: Some(resource),
                    subresource,
                    namespace: access.namespace.clone(),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(admin.clone())
            .create(&PostParams::default(), &review)
            .await
            .with_context(|| {
                format!(
                    "asking the API server whether {} may {access}",
                    self.username()
                )
            })?;
        let status = answer.status.unwrap_or_default();
        Ok((status.allowed, status.reason.unwrap_or_default()))
    }
}

/// How the operator runs: what `fluxgate run` makes of its flags and environment.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub settings: Settings,
    /// Whether only the holder of Lease `fluxgate-leader` runs the controllers.
    pub leader_election: bool,
    /// Where the Lease is: the pod's namespace (the release's).
    pub lease_namespace: String,
    /// This replica's name in the election (a pod name in a cluster).
    pub identity: String,
}

/// Fluxgate's controllers running in-process as the chart's ServiceAccount, started as
/// `fluxgate run` starts them: the required-API check, the leader election when
/// configured, then the controllers. Dropping it aborts them (a crash); [`RealOperator::stop`]
/// stops them gracefully and releases the Lease.
pub struct RealOperator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    leadership: Option<Leadership>,
    metrics: Metrics,
    _git_cache: Option<tempfile::TempDir>,
}

impl RealOperator {
    /// Starts the operator as the chart configures it, with its Git cache in a temporary
    /// directory of its own.
    pub async fn start_as_charted(install: &ChartInstall) -> anyhow::Result<RealOperator> {
        let cache = tempfile::tempdir().context("creating the operator's Git cache directory")?;
        let config = install.operator_config(cache.path())?;
        let mut operator = RealOperator::start(install, config).await?;
        operator._git_cache = Some(cache);
        Ok(operator)
    }

    /// Starts the operator with `config` (see [`ChartInstall::operator_config`]).
    pub async fn start(
        install: &ChartInstall,
        config: OperatorConfig,
    ) -> anyhow::Result<RealOperator> {
        let connection = connect::connect(Some(install.kubeconfig()), None).await?;
        required_apis::check_required_apis(&connection.client, &connection.url).await?;
        let leadership = if config.leader_election {
            let mut joined = Leadership::join(
                connection.client.clone(),
                &config.lease_namespace,
                &config.identity,
            )
            .await?;
            tokio::time::timeout(LEAD_WITHIN, joined.acquired())
                .await
                .with_context(|| {
                    format!(
                        "{} did not win Lease {}/{} within {} s",
                        config.identity,
                        config.lease_namespace,
                        fluxgate::controller::leader::LEASE_NAME,
                        LEAD_WITHIN.as_secs()
                    )
                })??;
            Some(joined)
        } else {
            None
        };
        let metrics = Metrics::new();
        let (stop, task) = fluxgate::demo::world::spawn_operator(
            connection.client,
            config.settings,
            metrics.clone(),
        );
        Ok(RealOperator {
            stop: Some(stop),
            task: Some(task),
            leadership,
            metrics,
            _git_cache: None,
        })
    }

    /// The operator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops the controllers as on SIGTERM (aborted after 15 s) and releases the Lease.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            eprintln!(
                "the operator did not stop within {} s; aborting it",
                STOP_GRACE.as_secs()
            );
            task.abort();
            let _ = task.await;
        }
        if let Some(leadership) = self.leadership.take() {
            leadership.release().await;
        }
    }
}

impl Drop for RealOperator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates namespace `name` unless it exists.
async fn create_namespace(admin: &Client, name: &str) -> anyhow::Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Applies the Flux and VolumeSnapshot CRDs Fluxgate needs on a cluster: upstream's own
/// files from the Go module cache when they are there (the releases kubesim's CRDs mirror,
/// `test/kubesim/crds/upstream.txt`), else kubesim's copies. Says which.
pub async fn install_third_party_crds(admin: &Client) -> anyhow::Result<String> {
    let (crds, source) = match kubesim::third_party::upstream_crd_files() {
        Ok(files) if files.len() == kubesim::third_party::CRDS.len() => {
            let mut crds = Vec::new();
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                crds.push((file.display().to_string(), text));
            }
            let modules: Vec<&str> = kubesim::third_party::UPSTREAM
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            (crds, format!("upstream CRDs of {}", modules.join(", ")))
        }
        found => {
            let why = match found {
                Ok(files) => format!(
                    "{} of the {} upstream CRD files are in the Go module cache",
                    files.len(),
                    kubesim::third_party::CRDS.len()
                ),
                Err(e) => e,
            };
            let crds = kubesim::third_party::CRDS
                .iter()
                .map(|(file, text)| (format!("test/kubesim/crds/{file}"), (*text).to_owned()))
                .collect();
            (
                crds,
                format!("kubesim's own Flux and VolumeSnapshot CRDs ({why})"),
            )
        }
    };
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for (file, text) in crds {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
            .with_context(|| format!("{file} is not a CustomResourceDefinition"))?;
        let name = crd.name_any();
        // Server-side apply, forced: whoever put a version of it there before, ours wins.
        api.patch(
            &name,
            &PatchParams::apply("fluxgate-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name} from {file}"))?;
    }
    Ok(source)
}

/// Waits until every CRD of the cluster is Established.
async fn wait_established(admin: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let deadline = Instant::now() + ESTABLISHED_WITHIN;
    loop {
        let pending: Vec<String> = api
            .list(&Default::default())
            .await
            .context("listing CRDs")?
            .into_iter()
            .filter(|crd| {
                !crd.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            })
            .map(|crd| crd.name_any())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "CRDs not Established within {} s: {}",
                ESTABLISHED_WITHIN.as_secs(),
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token of the release's ServiceAccount from the TokenRequest API, valid 24 h.
async fn service_account_token(admin: &Client, release: &Release) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            ..Default::default()
        }),
        ..Default::default()
    };
    let what = format!(
        "a token of ServiceAccount {}/{}",
        release.namespace, release.service_account
    );
    let answer = Api::<ServiceAccount>::namespaced(admin.clone(), &release.namespace)
        .create_token_request(&release.service_account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting {what}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("the TokenRequest for {what} answered no token"))
}

/// Writes a kubeconfig (mode 0600) for `cluster` whose user authenticates with `token`.
fn write_token_kubeconfig(cluster: &RealCluster, token: &str, path: &Path) -> anyhow::Result<()> {
    // The CA comes from the admin kubeconfig, which holds it inline.
    let admin = Kubeconfig::read_from(cluster.kubeconfig())
        .with_context(|| format!("reading {}", cluster.kubeconfig().display()))?;
    let ca = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .with_context(|| {
            format!(
                "{} holds no certificate-authority-data",
                cluster.kubeconfig().display()
            )
        })?;
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: realstack\n  cluster:\n    server: {}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: fluxgate\n  context:\n    cluster: realstack\n    \
         user: fluxgate\n    namespace: {}\ncurrent-context: fluxgate\nusers:\n- name: fluxgate\n  user:\n    \
         token: {token}\n",
        cluster.server(),
        chart::RELEASE_NAMESPACE,
    );
    write_private(path, &yaml)
}

/// Writes `text` to `path` readable by its owner only (a kubeconfig holding a token).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}
