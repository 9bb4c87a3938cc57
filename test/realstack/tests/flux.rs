//! The real Flux controllers (source-, kustomize- and helm-controller, as `build.sh` builds
//! them) on our real control plane, end to end, the way Fluxgate relies on them:
//! - a GitRepository fetching over smart HTTP with basic auth and a Kustomization applying
//!   a path of it: revisions, a pushed change arriving on `reconcile.fluxcd.io/requestedAt`,
//!   and `spec.suspend` holding a change back until resumed;
//! - a HelmRepository served over loopback HTTP (chart and index made by real Helm) and a
//!   HelmRelease installing and upgrading a chart (release Secrets v1, v2);
//! - the same chart pushed by real Helm to our OCI registry and installed through an
//!   OCIRepository `chartRef`: the artifact revision is `<tag>@sha256:<manifest digest>`.
//!
//! Each test prints the status the real controllers write at each step (`STATUS …` lines),
//! and its comments record what they were when this was written, to hold our sims
//! (test/sim: flux_source.rs, kustomize.rs, helm_repository.rs, helm_chart.rs,
//! oci_source.rs, helm.rs) against. The Helm tests need real Helm through helm-python
//! (`HELM_PYTHON`, as `.ci/run` sets it): SKIPPED without it, a failure under
//! `FLUXGATE_REQUIRE_REAL_STACK=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, ResourceExt};
use realstack::audit::{AuditLog, Events, Mark};
use realstack::flux::{Flux, OciRegistry};
use realstack::loopback_http::StaticFiles;
use serde_json::{Value, json};
use sim::git_server::GitServer;

use realstack::testing::{create, get, merge, request_reconcile};
use realstack::testing::{eventually, namespace};

const TIMEOUT: Duration = Duration::from_secs(90);
const HELM_CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn git_repositories(c: &Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
    );
    Api::namespaced_with(c.clone(), ns, &r)
}
fn helm_repositories(c: &Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "HelmRepository",
        "helmrepositories",
    );
    Api::namespaced_with(c.clone(), ns, &r)
}
fn helm_charts(c: &Client, ns: &str) -> Api<DynamicObject> {
    let r = resource("source.toolkit.fluxcd.io", "v1", "HelmChart", "helmcharts");
    Api::namespaced_with(c.clone(), ns, &r)
}
fn oci_repositories(c: &Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "OCIRepository",
        "ocirepositories",
    );
    Api::namespaced_with(c.clone(), ns, &r)
}
fn kustomizations(c: &Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    );
    Api::namespaced_with(c.clone(), ns, &r)
}
fn helm_releases(c: &Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    );
    Api::namespaced_with(c.clone(), ns, &r)
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `type=status/reason` of every condition, for progress messages.
fn conditions_line(obj: &Value) -> String {
    obj["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}={}/{}: {}",
                        c["type"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?"),
                        c["reason"].as_str().unwrap_or("?"),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "no conditions".into())
}

/// Ready=True for the object's current generation.
fn ready_now(obj: &Value) -> bool {
    condition(obj, "Ready").is_some_and(|c| c["status"] == "True")
        && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

/// Prints what the controllers wrote, for the lead to compare with the sims.
fn show(step: &str, obj: &Value) {
    let pretty = serde_json::to_string_pretty(&json!({
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "generation": obj["metadata"]["generation"],
        "finalizers": obj["metadata"]["finalizers"],
        "status": obj["status"],
    }))
    .expect("JSON");
    eprintln!("STATUS {step}:\n{pretty}");
}

/// Every distinct status an object went through while it was watched: the generations,
/// each condition (type=status/reason: message) and the revisions, one line per change, so
/// the short-lived in-progress states the controllers write are recorded too.
struct Transitions {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Transitions {
    fn watch(api: &Api<DynamicObject>, name: &str) -> Transitions {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api.clone(), config);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let obj = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    _ => continue,
                };
                let v = serde_json::to_value(obj).unwrap_or_default();
                let mut line = format!(
                    "generation {} observed {}; {}",
                    v["metadata"]["generation"],
                    v["status"]["observedGeneration"],
                    conditions_line(&v)
                );
                for field in [
                    "lastAttemptedRevision",
                    "lastAppliedRevision",
                    "lastAttemptedReleaseAction",
                    "lastHandledReconcileAt",
                ] {
                    if let Some(value) = v["status"][field].as_str() {
                        line.push_str(&format!("; {field} {value}"));
                    }
                }
                if let Some(revision) = v["status"]["artifact"]["revision"].as_str() {
                    line.push_str(&format!("; artifact {revision}"));
                }
                let mut seen = log.lock().unwrap_or_else(|p| p.into_inner());
                if seen.last() != Some(&line) {
                    seen.push(line);
                }
            }
        });
        Transitions { seen, task }
    }

    /// Stops watching and prints what was seen.
    fn print(self, what: &str) {
        self.task.abort();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!("TRANSITIONS {what}:");
        for line in seen.iter() {
            eprintln!("  {line}");
        }
    }
}

/// What Flux's controllers asked the API server since `mark`, failing if any request was
/// refused: they run as their ServiceAccounts with the RBAC of Flux's own install.
async fn flux_requests(flux: &Flux<'_>, client: &Client, mark: &Mark) -> Events {
    let log = AuditLog::open(flux.cluster().audit_log());
    log.sync(client).await.expect("syncing the audit log");
    let flux = log
        .since(mark)
        .expect("reading the audit log")
        .filter(|e| e.username.starts_with("system:serviceaccount:flux-system:"));
    let refused = flux.forbidden();
    assert!(
        refused.is_empty(),
        "Flux's controllers were refused:\n{}",
        refused.render()
    );
    flux
}

/// The requests of controller `name` with `verb` on `resource` `namespace/object`.
fn made_by(
    events: &Events,
    name: &str,
    verb: &str,
    resource: &str,
    ns: &str,
    object: &str,
) -> Events {
    events
        .by_user(&format!("system:serviceaccount:flux-system:{name}"))
        .requests()
        .filter(|e| {
            e.verb == verb
                && e.object.as_ref().is_some_and(|o| {
                    o.resource == resource
                        && o.namespace.as_deref() == Some(ns)
                        && o.name.as_deref() == Some(object)
                })
        })
}

/// Waits until `probe` of the object `name` holds, returning the object.
async fn until(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    probe: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, TIMEOUT, || async {
        let obj = get(api, name).await;
        if probe(&obj) {
            Ok(obj)
        } else {
            Err(format!(
                "generation {}, observedGeneration {}, {}",
                obj["metadata"]["generation"],
                obj["status"]["observedGeneration"],
                conditions_line(&obj)
            ))
        }
    })
    .await
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading ConfigMap {ns}/{name}: {e}"))
}

fn data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref()?.get(key).map(String::as_str)
}

fn app_config_map(greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  greeting: {greeting}\n"
    )
}

const APP_DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
        - name: app
          image: registry.invalid/app:1.0.0
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomization_applies_git_commits_fetched_over_http_with_basic_auth() {
    let Some(flux) = Flux::shared_or_skip() else {
        return;
    };
    let client = flux.cluster().client().await.expect("an admin client");
    let mark = AuditLog::open(flux.cluster().audit_log())
        .mark()
        .expect("an audit mark");
    let ns = namespace(&client, "flux-git").await;
    let git = GitServer::builder()
        .branch("main")
        .file("deploy/configmap.yaml", app_config_map("hello"))
        .file("deploy/deployment.yaml", APP_DEPLOYMENT)
        .file("README.md", "not applied: outside spec.path\n")
        .http_credentials("flux", "s3cret")
        .start()
        .expect("the git server");
    let url = git.http_url().expect("served over HTTP");
    let first = git.head().expect("the seed commit");

    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "git-auth"},
        "stringData": {"username": "flux", "password": "s3cret"},
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the basic-auth Secret");
    let repos = git_repositories(&client, &ns);
    let kss = kustomizations(&client, &ns);
    let repo_transitions = Transitions::watch(&repos, "app");
    let ks_transitions = Transitions::watch(&kss, "app");
    create(
        &repos,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "app"},
            // A long interval: every later fetch here is asked for with requestedAt.
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"},
                     "secretRef": {"name": "git-auth"}},
        }),
    )
    .await;
    create(
        &kss,
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "app"},
            "spec": {"interval": "10m", "path": "./deploy", "prune": true,
                     "targetNamespace": ns, "wait": true, "timeout": "1m",
                     "sourceRef": {"kind": "GitRepository", "name": "app"}},
        }),
    )
    .await;

    // The first commit, applied.
    let revision1 = format!("main@sha1:{first}");
    let repo = until(&repos, "app", "the GitRepository's first artifact", |o| {
        ready_now(o) && o["status"]["artifact"]["revision"] == revision1.as_str()
    })
    .await;
    show("GitRepository after the first fetch", &repo);
    // Recorded (source-controller v1.9.3): Ready=True and ArtifactInStorage=True, both
    // reason Succeeded, message "stored artifact for revision 'main@sha1:<sha>'";
    // artifact {revision, digest "sha256:<of the tarball>", path
    // "gitrepository/<ns>/<name>/<sha>.tar.gz", url "http://<storage-adv-addr>/<path>",
    // size, lastUpdateTime}; finalizer finalizers.fluxcd.io.
    assert_eq!(
        condition(&repo, "ArtifactInStorage").map(|c| &c["status"]),
        Some(&json!("True"))
    );
    let artifact_url = repo["status"]["artifact"]["url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        artifact_url.starts_with(&format!(
            "http://{}/gitrepository/{ns}/app/",
            flux.storage_addr()
        )),
        "the artifact is served by source-controller at its advertised address: {artifact_url}"
    );
    assert!(
        git.http_requests() > 0,
        "source-controller fetched over HTTP"
    );

    let t = Instant::now();
    let ks = until(
        &kss,
        "app",
        "the Kustomization to apply the first commit",
        |o| ready_now(o) && o["status"]["lastAppliedRevision"] == revision1.as_str(),
    )
    .await;
    show("Kustomization after applying the first commit", &ks);
    eprintln!(
        "first apply seen {:.1} s after the artifact",
        t.elapsed().as_secs_f64()
    );
    // Recorded (kustomize-controller v1.9.4): Ready=True reason ReconciliationSucceeded,
    // message "Applied revision: main@sha1:<sha>"; no Reconciling condition once done;
    // lastAppliedRevision = lastAttemptedRevision = the artifact's revision; inventory
    // entries {id: "<ns>_<name>_<group>_<Kind>", v: "<version>"}; history (checksum of
    // the build, digest, first/lastReconciled…, totalReconciliations, metadata.revision).
    assert_eq!(
        ks["status"]["lastAttemptedRevision"], revision1,
        "lastAttemptedRevision is the applied one"
    );
    let mut inventory: Vec<&str> = ks["status"]["inventory"]["entries"]
        .as_array()
        .expect("an inventory")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    inventory.sort();
    assert_eq!(
        inventory,
        [
            format!("{ns}_app-config__ConfigMap"),
            format!("{ns}_app_apps_Deployment")
        ],
        "the inventory lists exactly what the path holds"
    );
    let cm = config_map(&client, &ns, "app-config")
        .await
        .expect("the ConfigMap applied");
    assert_eq!(data(&cm, "greeting"), Some("hello"));
    let labels = cm.labels();
    assert_eq!(
        labels
            .get("kustomize.toolkit.fluxcd.io/name")
            .map(String::as_str),
        Some("app"),
        "objects carry the Kustomization's owner labels"
    );
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .expect("the Deployment applied");

    // A pushed change arrives when the GitRepository is asked to reconcile.
    let second = git
        .push_commit(
            &[("deploy/configmap.yaml", &app_config_map("bonjour"))],
            "Say bonjour",
        )
        .expect("pushing the second commit");
    let revision2 = format!("main@sha1:{second}");
    let asked = request_reconcile(&repos, "app").await;
    let repo = until(
        &repos,
        "app",
        "the GitRepository to fetch the second commit",
        |o| {
            o["status"]["artifact"]["revision"] == revision2.as_str()
                && o["status"]["lastHandledReconcileAt"] == asked.as_str()
        },
    )
    .await;
    show("GitRepository after requestedAt", &repo);
    let t = Instant::now();
    let ks = until(
        &kss,
        "app",
        "the Kustomization to apply the second commit",
        |o| ready_now(o) && o["status"]["lastAppliedRevision"] == revision2.as_str(),
    )
    .await;
    let latency = t.elapsed();
    eprintln!(
        "the Kustomization applied the new artifact {:.1} s after the GitRepository had it",
        latency.as_secs_f64()
    );
    show("Kustomization after the second commit", &ks);
    let cm = config_map(&client, &ns, "app-config")
        .await
        .expect("the ConfigMap");
    assert_eq!(data(&cm, "greeting"), Some("bonjour"), "the change arrived");

    // Suspended, a new commit is fetched but not applied.
    merge(&kss, "app", json!({"spec": {"suspend": true}})).await;
    // Recorded: kustomize-controller acknowledges a suspend: its finalizeStatus runs for a
    // suspended object and, Ready being True, sets observedGeneration to the new generation
    // (kustomization_controller.go `Reconcile`, "Reconciliation is suspended for this object").
    let ks = until(
        &kss,
        "app",
        "the Kustomization to observe its suspension",
        |o| o["metadata"]["generation"] == o["status"]["observedGeneration"],
    )
    .await;
    show("Kustomization suspended", &ks);
    let third = git
        .push_commit(
            &[("deploy/configmap.yaml", &app_config_map("hola"))],
            "Say hola",
        )
        .expect("pushing the third commit");
    let revision3 = format!("main@sha1:{third}");
    request_reconcile(&repos, "app").await;
    until(
        &repos,
        "app",
        "the GitRepository to fetch the third commit",
        |o| o["status"]["artifact"]["revision"] == revision3.as_str(),
    )
    .await;
    // Asking the suspended Kustomization itself changes nothing either.
    let asked_ks = request_reconcile(&kss, "app").await;
    // Unsuspended, the new artifact was applied within `latency` above; hold 5 s more.
    let hold = latency + Duration::from_secs(5);
    tokio::time::sleep(hold).await;
    let ks = get(&kss, "app").await;
    show("Kustomization suspended, after the third commit", &ks);
    assert_eq!(
        ks["status"]["lastAppliedRevision"],
        revision2,
        "a suspended Kustomization applies nothing ({:.1} s after the artifact)",
        hold.as_secs_f64()
    );
    let cm = config_map(&client, &ns, "app-config")
        .await
        .expect("the ConfigMap");
    assert_eq!(
        data(&cm, "greeting"),
        Some("bonjour"),
        "nothing new arrived while suspended"
    );
    eprintln!(
        "suspended: lastHandledReconcileAt {} (asked {asked_ks})",
        ks["status"]["lastHandledReconcileAt"]
    );

    // Resumed, it applies the commit it held back.
    merge(&kss, "app", json!({"spec": {"suspend": false}})).await;
    let ks = until(
        &kss,
        "app",
        "the resumed Kustomization to apply the third commit",
        |o| ready_now(o) && o["status"]["lastAppliedRevision"] == revision3.as_str(),
    )
    .await;
    show("Kustomization resumed", &ks);
    let cm = config_map(&client, &ns, "app-config")
        .await
        .expect("the ConfigMap");
    assert_eq!(
        data(&cm, "greeting"),
        Some("hola"),
        "the held-back change arrived"
    );
    repo_transitions.print("GitRepository app");
    ks_transitions.print("Kustomization app");

    // Who did it: source-controller read the credentials, kustomize-controller applied
    // (server-side apply: a patch), each as its own ServiceAccount, nothing refused.
    let requests = flux_requests(flux, &client, &mark).await;
    assert!(
        !made_by(
            &requests,
            "source-controller",
            "get",
            "secrets",
            &ns,
            "git-auth"
        )
        .is_empty(),
        "source-controller read the basic-auth Secret as its ServiceAccount"
    );
    assert!(
        !made_by(
            &requests,
            "kustomize-controller",
            "patch",
            "configmaps",
            &ns,
            "app-config"
        )
        .is_empty(),
        "kustomize-controller applied the ConfigMap as its ServiceAccount"
    );
    flux.cluster()
        .check_running()
        .expect("every component still running");
}

/// A Python that can import helm_python, or None after printing SKIPPED (a panic under
/// FLUXGATE_REQUIRE_REAL_STACK=1).
fn helm_python(test: &str) -> Option<String> {
    let python = std::env::var("HELM_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    if importable {
        return Some(python);
    }
    let why = format!(
        "{python} cannot import helm_python (pip install helm-python-sdk into a venv and set \
         HELM_PYTHON to its python, as .ci/run does); {test} needs real Helm to package charts"
    );
    if std::env::var(realstack::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{}=1, but {why}", realstack::REQUIRE_ENV);
    }
    eprintln!("SKIPPED: {why}");
    None
}

const HELM_SCRIPT: &str = r#"
import json, sys
import helm_python as helm

action = sys.argv[1]
if action == "package":
    chart_dir, destination, version = sys.argv[2:5]
    print(json.dumps({"path": helm.package(chart_dir, destination=destination, version=version)}))
elif action == "index":
    directory, base_url = sys.argv[2:4]
    helm.repo_index_generate(directory, base_url=base_url)
    print(json.dumps({}))
elif action == "push":
    archive, remote = sys.argv[2:4]
    print(json.dumps(helm.push(archive, remote, plain_http=True), default=str))
elif action == "version":
    print(json.dumps({"version": helm.helm_sdk_version()}))
"#;

fn helm(python: &str, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg("-c")
        .arg(HELM_SCRIPT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "helm {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A minimal chart `hello` in `dir`: a ConfigMap naming the chart version and a value, and
/// a Deployment (so helm-controller's readiness wait has a workload to wait for).
fn write_chart(dir: &Path) -> PathBuf {
    let chart = dir.join("hello");
    std::fs::create_dir_all(chart.join("templates")).expect("creating the chart's directory");
    let files = [
        (
            "Chart.yaml",
            "apiVersion: v2\nname: hello\ndescription: A test chart\ntype: application\nversion: 0.0.0\nappVersion: \"1.0.0\"\n",
        ),
        ("values.yaml", "greeting: hello\n"),
        (
            "templates/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-hello\ndata:\n  chartVersion: {{ .Chart.Version | quote }}\n  greeting: {{ .Values.greeting | quote }}\n",
        ),
        (
            "templates/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-hello\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: {{ .Release.Name }}-hello}\n  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}-hello}\n    spec:\n      containers:\n        - name: hello\n          image: registry.invalid/hello:{{ .Chart.AppVersion }}\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(chart.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }
    chart
}

/// Packages the chart at `version` into `dest` with real Helm; returns the archive.
fn package(python: &str, chart: &Path, dest: &Path, version: &str) -> PathBuf {
    let out = helm(
        python,
        &[
            "package",
            &chart.display().to_string(),
            &dest.display().to_string(),
            version,
        ],
    );
    PathBuf::from(
        out["path"]
            .as_str()
            .expect("package returns the archive's path"),
    )
}

async fn release_secret(client: &Client, ns: &str, release: &str, n: u32) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&format!("sh.helm.release.v1.{release}.v{n}"))
        .await
        .unwrap_or_else(|e| panic!("reading release Secret v{n} of {ns}/{release}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_release_installs_and_upgrades_a_chart_from_a_helm_repository() {
    let Some(python) =
        helm_python("helm_release_installs_and_upgrades_a_chart_from_a_helm_repository")
    else {
        return;
    };
    let Some(flux) = Flux::shared_or_skip() else {
        return;
    };
    let client = flux.cluster().client().await.expect("an admin client");
    let mark = AuditLog::open(flux.cluster().audit_log())
        .mark()
        .expect("an audit mark");
    let ns = namespace(&client, "flux-helm").await;
    let work = tempfile::tempdir().expect("a temporary directory");
    let chart = write_chart(work.path());
    let repo_dir = work.path().join("repo");
    std::fs::create_dir_all(&repo_dir).expect("the repository's directory");
    for version in ["0.1.0", "0.2.0"] {
        package(&python, &chart, &repo_dir, version);
    }
    let server = StaticFiles::start(&repo_dir).expect("serving the chart repository");
    helm(
        &python,
        &["index", &repo_dir.display().to_string(), &server.url()],
    );
    eprintln!(
        "index.yaml by real Helm ({}):\n{}",
        helm(&python, &["version"])["version"],
        std::fs::read_to_string(repo_dir.join("index.yaml")).expect("index.yaml")
    );

    let repos = helm_repositories(&client, &ns);
    let hrs = helm_releases(&client, &ns);
    let repo_transitions = Transitions::watch(&repos, "charts");
    let hr_transitions = Transitions::watch(&hrs, "hello");
    let chart_transitions = Transitions::watch(&helm_charts(&client, &ns), &format!("{ns}-hello"));
    create(
        &repos,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "charts"},
            "spec": {"interval": "10m", "url": server.url()},
        }),
    )
    .await;
    create(
        &hrs,
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "hello"},
            "spec": {"interval": "10m",
                     "chart": {"spec": {"chart": "hello", "version": "0.1.0", "interval": "10m",
                                        "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
                     "values": {"greeting": "hi"}},
        }),
    )
    .await;

    let repo = until(&repos, "charts", "the HelmRepository's index", ready_now).await;
    show("HelmRepository", &repo);
    // Recorded (source-controller v1.9.3): Ready=True and ArtifactInStorage=True, reason
    // Succeeded, message "stored artifact: revision 'sha256:<of the index>'"; artifact
    // revision = digest = "sha256:<hex>", path "helmrepository/<ns>/<name>/index-<hex>.yaml";
    // status.url "http://<storage>/helmrepository/<ns>/<name>/index.yaml".
    let hr = until(&hrs, "hello", "the HelmRelease to install 0.1.0", |o| {
        ready_now(o) && o["status"]["history"][0]["chartVersion"] == "0.1.0"
    })
    .await;
    show("HelmRelease after install", &hr);
    // Recorded (helm-controller v1.6.4): Ready=True reason InstallSucceeded, message
    // "Helm install succeeded for release <ns>/<name>.v1 with chart hello@0.1.0"; Released
    // True likewise; history[0] {name, namespace, version: 1, status: deployed, chartName,
    // chartVersion, appVersion, configDigest, digest, firstDeployed, lastDeployed};
    // lastAttemptedRevision "0.1.0", lastAttemptedReleaseAction "install",
    // lastAttemptedGeneration, lastAttemptedConfigDigest, helmChart "<ns>/<ns>-<name>",
    // storageNamespace.
    assert_eq!(hr["status"]["lastAttemptedRevision"], "0.1.0");
    assert_eq!(hr["status"]["helmChart"], format!("{ns}/{ns}-hello"));
    let chart_obj = get(&helm_charts(&client, &ns), &format!("{ns}-hello")).await;
    show("HelmChart made by helm-controller", &chart_obj);
    assert!(
        release_secret(&client, &ns, "hello", 1).await.is_some(),
        "the release Secret v1"
    );
    let cm = config_map(&client, &ns, "hello-hello")
        .await
        .expect("the chart's ConfigMap");
    assert_eq!(data(&cm, "chartVersion"), Some("0.1.0"));
    assert_eq!(
        data(&cm, "greeting"),
        Some("hi"),
        "spec.values reached the chart"
    );
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("hello-hello")
        .await
        .expect("the chart's Deployment");

    // An upgrade: a new chart version in the spec.
    merge(
        &hrs,
        "hello",
        json!({"spec": {"chart": {"spec": {"version": "0.2.0"}}}}),
    )
    .await;
    let hr = until(&hrs, "hello", "the HelmRelease to upgrade to 0.2.0", |o| {
        ready_now(o) && o["status"]["history"][0]["chartVersion"] == "0.2.0"
    })
    .await;
    show("HelmRelease after upgrade", &hr);
    assert_eq!(hr["status"]["lastAttemptedRevision"], "0.2.0");
    assert_eq!(hr["status"]["history"][0]["version"], 2);
    assert_eq!(
        hr["status"]["history"][1]["version"], 1,
        "the history keeps the first release"
    );
    assert!(
        release_secret(&client, &ns, "hello", 2).await.is_some(),
        "the release Secret v2"
    );
    let cm = config_map(&client, &ns, "hello-hello")
        .await
        .expect("the chart's ConfigMap");
    assert_eq!(
        data(&cm, "chartVersion"),
        Some("0.2.0"),
        "the upgrade arrived"
    );
    let chart_obj = get(&helm_charts(&client, &ns), &format!("{ns}-hello")).await;
    show("HelmChart after the upgrade", &chart_obj);
    eprintln!("chart repository requests: {:?}", server.requests());
    repo_transitions.print("HelmRepository charts");
    chart_transitions.print("HelmChart made by helm-controller");
    hr_transitions.print("HelmRelease hello");
    let requests = flux_requests(flux, &client, &mark).await;
    let release = "sh.helm.release.v1.hello.v2";
    assert!(
        !made_by(
            &requests,
            "helm-controller",
            "create",
            "secrets",
            &ns,
            release
        )
        .is_empty(),
        "helm-controller wrote the release as its ServiceAccount"
    );
    flux.cluster()
        .check_running()
        .expect("every component still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_release_installs_a_chart_from_an_oci_repository() {
    let Some(python) = helm_python("helm_release_installs_a_chart_from_an_oci_repository") else {
        return;
    };
    let Some(flux) = Flux::shared_or_skip() else {
        return;
    };
    let client = flux.cluster().client().await.expect("an admin client");
    let mark = AuditLog::open(flux.cluster().audit_log())
        .mark()
        .expect("an audit mark");
    let ns = namespace(&client, "flux-oci").await;
    let registry = OciRegistry::start(flux.cluster())
        .await
        .expect("the OCI registry");
    let work = tempfile::tempdir().expect("a temporary directory");
    let chart = write_chart(work.path());
    let archive = package(&python, &chart, work.path(), "0.1.0");
    // Real Helm's push: config application/vnd.cncf.helm.config.v1+json, one layer
    // application/vnd.cncf.helm.chart.content.v1.tar+gzip, tag = the chart version.
    let pushed = helm(
        &python,
        &[
            "push",
            &archive.display().to_string(),
            &registry.url("charts"),
        ],
    );
    eprintln!("helm push: {pushed}");
    let digest = registry
        .manifest_digest("charts/hello", "0.1.0")
        .await
        .expect("the pushed manifest");
    let manifest = realstack::loopback_http::get_accepting(
        registry.addr(),
        "/v2/charts/hello/manifests/0.1.0",
        Some("application/vnd.oci.image.manifest.v1+json"),
    )
    .await
    .expect("the manifest");
    let manifest: Value = serde_json::from_slice(&manifest.body).expect("the manifest is JSON");
    eprintln!("manifest {digest}: {manifest}");
    assert_eq!(manifest["config"]["mediaType"], HELM_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], HELM_CHART_MEDIA_TYPE);

    let repos = oci_repositories(&client, &ns);
    let hrs = helm_releases(&client, &ns);
    let repo_transitions = Transitions::watch(&repos, "hello");
    let hr_transitions = Transitions::watch(&hrs, "hello");
    create(
        &repos,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "hello"},
            "spec": {"interval": "10m", "url": registry.url("charts/hello"),
                     "ref": {"tag": "0.1.0"}, "insecure": true,
                     // As Flux's docs write an OCIRepository for a Helm chart.
                     "layerSelector": {"mediaType": HELM_CHART_MEDIA_TYPE, "operation": "copy"}},
        }),
    )
    .await;
    create(
        &hrs,
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "hello"},
            "spec": {"interval": "10m",
                     "chartRef": {"kind": "OCIRepository", "name": "hello"}},
        }),
    )
    .await;

    let revision = format!("0.1.0@{digest}");
    let repo = until(&repos, "hello", "the OCIRepository's artifact", |o| {
        ready_now(o) && o["status"]["artifact"]["revision"] == revision.as_str()
    })
    .await;
    show("OCIRepository", &repo);
    // Recorded (source-controller v1.9.3): Ready=True and ArtifactInStorage=True reason
    // Succeeded, message "stored artifact for digest '<tag>@sha256:<digest>'"; artifact
    // revision "<tag>@sha256:<manifest digest>", digest "sha256:<of the stored tarball>",
    // metadata = the manifest's annotations; status.url = the registry URL.
    // helm-controller makes the chart's version `<version>+<first 12 hex digits of the
    // manifest digest>` for a source whose revision has a digest, so that a tag pushed again
    // is seen as new (`mutateChartWithSourceRevision`, helm-controller v1.6.4
    // internal/controller/helmrelease_controller.go); the release, its history and
    // lastAttemptedRevision carry that version.
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let tracked = format!("0.1.0+{}", &hex[..12]);
    let hr = until(
        &hrs,
        "hello",
        "the HelmRelease to install the OCI chart",
        |o| ready_now(o) && o["status"]["history"][0]["status"] == "deployed",
    )
    .await;
    show("HelmRelease from the OCIRepository", &hr);
    // Recorded: as for a HelmRepository chart, plus lastAttemptedRevisionDigest and
    // history[].ociDigest = the manifest digest; no helmChart (no HelmChart object is made
    // for a chartRef).
    assert_eq!(hr["status"]["history"][0]["chartVersion"], tracked);
    assert_eq!(hr["status"]["lastAttemptedRevision"], tracked);
    assert_eq!(
        condition(&hr, "Ready").map(|c| c["message"].clone()),
        Some(json!(format!(
            "Helm install succeeded for release {ns}/hello.v1 with chart hello@{tracked}"
        )))
    );
    assert!(
        release_secret(&client, &ns, "hello", 1).await.is_some(),
        "the release Secret v1"
    );
    let cm = config_map(&client, &ns, "hello-hello")
        .await
        .expect("the chart's ConfigMap");
    assert_eq!(
        data(&cm, "chartVersion"),
        Some(tracked.as_str()),
        "templates render with the mutated version (.Chart.Version)"
    );
    assert_eq!(
        data(&cm, "greeting"),
        Some("hello"),
        "the chart's own default value"
    );
    flux_requests(flux, &client, &mark).await;
    repo_transitions.print("OCIRepository hello");
    hr_transitions.print("HelmRelease hello (chartRef)");
    flux.cluster()
        .check_running()
        .expect("every component still running");
}

#[test]
fn flux_starts_once_per_cluster() {
    let Some(flux) = Flux::shared_or_skip() else {
        return;
    };
    match Flux::start(flux.cluster()) {
        Err(realstack::Unavailable::Failed(why)) => assert!(
            why.contains("already started"),
            "the second start says why it refuses: {why}"
        ),
        Err(realstack::Unavailable::Skip(why)) => panic!("the second start skipped: {why}"),
        Ok(_) => panic!("a second set of Flux controllers started on the same cluster"),
    }
    flux.cluster()
        .check_running()
        .expect("the first set still runs");
}
