//! The simulated Flux held to the real one: each case runs the same steps and checks on the
//! sims (kubesim + test/sim's source- and kustomize-controller) and on the real Flux
//! controllers on the real control plane (test/realstack), so what Fluxgate's fast suite
//! sees of Flux is what a cluster shows. A case that fails only `on_sim_flux` is a sim that
//! is wrong about Flux.
//!
//! Without the real stack's binaries the `on_real_flux` half prints `SKIPPED: …` and passes,
//! unless FLUXGATE_REQUIRE_REAL_STACK=1.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubesim::KubeSim;
use realstack::flux::Flux;
use serde_json::{Value, json};
use sim::git_server::GitServer;
use sim::kinds::{
    dyn_api, git_repository, helm_release, helm_repository, kustomization, oci_repository,
};
use sim::world::{World, WorldOptions};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any wait may take: real Flux polls some things every few seconds.
const WAIT: Duration = Duration::from_secs(60);
/// The path of the Git repository the Kustomization applies.
const APP_PATH: &str = "app";

/// Flux, simulated or real, with a namespace of the case's own.
struct FluxUnderTest {
    client: Client,
    namespace: String,
    _keep: Option<(KubeSim, World)>,
}

/// The sims on kubesim.
async fn sim_flux(namespace: &str) -> FluxUnderTest {
    let kube = KubeSim::start().await;
    kube.load_third_party_crds()
        .expect("kubesim's Flux and VolumeSnapshot CRDs load");
    let client = kube.client();
    let world = World::start(client.clone(), WorldOptions::fast())
        .await
        .expect("the simulated world starts");
    create_namespace(&client, namespace).await;
    FluxUnderTest {
        client,
        namespace: namespace.to_owned(),
        _keep: Some((kube, world)),
    }
}

/// The real controllers on the shared real control plane; `None` when it is not built.
async fn real_flux(namespace: &str) -> Option<FluxUnderTest> {
    let flux = Flux::shared_or_skip()?;
    let client = flux
        .cluster()
        .client()
        .await
        .expect("a client of the real control plane");
    create_namespace(&client, namespace).await;
    Some(FluxUnderTest {
        client,
        namespace: namespace.to_owned(),
        _keep: None,
    })
}

async fn create_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// Each case as `::on_sim_flux` and `::on_real_flux`.
macro_rules! on_both_fluxes {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sim_flux() {
                    let flux = super::sim_flux(&super::namespace_of(stringify!($case), "sim")).await;
                    super::$case(flux).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_real_flux() {
                    if let Some(flux) = super::real_flux(&super::namespace_of(stringify!($case), "real")).await {
                        super::$case(flux).await
                    }
                }
            }
        )+
    };
}

/// A namespace name of at most 63 characters for `case` on `stack`.
fn namespace_of(case: &str, stack: &str) -> String {
    let short: String = case.replace('_', "-").chars().take(50).collect();
    format!("{}-{stack}", short.trim_end_matches('-'))
}

on_both_fluxes!(
    a_new_flux_object_starts_at_observed_generation_minus_one,
    a_suspended_kustomization_records_its_generation_and_the_request_but_applies_nothing,
    ready_is_written_before_the_revision_fields_it_announces,
    pruning_spares_what_is_opted_out_or_owned_by_another_kustomization,
);

/// The manifest the Kustomization applies: one ConfigMap saying `version`.
fn app_files(version: &str) -> Vec<(String, String)> {
    vec![config_map_file("app", version, "")]
}

/// A file of the app's path holding ConfigMap `name` saying `version`, with `annotations`
/// (YAML lines under `metadata.annotations`, or nothing).
fn config_map_file(name: &str, version: &str, annotations: &str) -> (String, String) {
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n    {annotations}\n")
    };
    (
        format!("{APP_PATH}/{name}.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{annotations}data:\n  version: \"{version}\"\n"
        ),
    )
}

/// A Git server holding the app at `v1`, a GitRepository following it and a pruning
/// Kustomization applying it into the case's namespace, Ready at the first commit.
struct Applied {
    git: GitServer,
    first: String,
}

async fn applied(flux: &FluxUnderTest) -> Applied {
    applied_files(flux, app_files("v1")).await
}

/// [`applied`] with `files` as the first commit.
async fn applied_files(flux: &FluxUnderTest, files: Vec<(String, String)>) -> Applied {
    let mut builder = GitServer::builder().http().branch("main");
    for (path, contents) in files {
        builder = builder.file(&path, contents);
    }
    let git = builder.start().expect("the Git server starts");
    let url = git.http_url().expect("the Git server serves HTTP");
    let ns = &flux.namespace;
    create(
        &dyn_api(&flux.client, &git_repository(), ns),
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"url": url, "interval": "1h", "ref": {"branch": "main"}},
        }),
    )
    .await;
    create(
        &kustomizations(flux),
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {
                "interval": "1h", "path": format!("./{APP_PATH}"), "prune": true,
                "targetNamespace": ns,
                "sourceRef": {"kind": "GitRepository", "name": "app"},
            },
        }),
    )
    .await;
    let first = format!("main@sha1:{}", git.head().expect("the Git head"));
    eventually("the Kustomization applied the first commit", || async {
        let ks = get(&kustomizations(flux), "app").await;
        applied_revision(&ks)
            .filter(|r| *r == first)
            .map(|_| ())
            .ok_or_else(|| status_line(&ks))
    })
    .await;
    Applied { git, first }
}

async fn a_suspended_kustomization_records_its_generation_and_the_request_but_applies_nothing(
    flux: FluxUnderTest,
) {
    let Applied { git, first } = applied(&flux).await;
    let ks_api = kustomizations(&flux);
    merge(&ks_api, "app", json!({"spec": {"suspend": true}})).await;

    let files = app_files("v2");
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let second = format!(
        "main@sha1:{}",
        git.push_commit(&files, "v2").expect("pushing v2")
    );
    fetched(&flux, &second).await;
    let asked = request_reconcile(&ks_api, "app").await;

    // kustomize-controller v1.9.4 (kustomization_controller.go): the deferred finalizeStatus
    // runs for a suspended object too — lastHandledReconcileAt takes the request, and
    // observedGeneration the generation while Ready is True — but nothing is applied.
    let ks = eventually(
        "the suspended Kustomization recorded the request",
        || async {
            let ks = get(&ks_api, "app").await;
            (ks["status"]["lastHandledReconcileAt"] == asked.as_str())
                .then(|| ks.clone())
                .ok_or_else(|| status_line(&ks))
        },
    )
    .await;
    assert_eq!(
        ks["status"]["observedGeneration"],
        ks["metadata"]["generation"],
        "a suspended Kustomization's observedGeneration follows its generation: {}",
        status_line(&ks)
    );
    assert_eq!(applied_revision(&ks), Some(first.clone()));
    assert_eq!(
        applied_version(&flux).await,
        "v1",
        "nothing applied while suspended"
    );

    merge(&ks_api, "app", json!({"spec": {"suspend": false}})).await;
    eventually(
        "the resumed Kustomization applied the held-back commit",
        || async {
            let ks = get(&ks_api, "app").await;
            applied_revision(&ks)
                .filter(|r| *r == second)
                .map(|_| ())
                .ok_or_else(|| status_line(&ks))
        },
    )
    .await;
    assert_eq!(applied_version(&flux).await, "v2");
}

async fn ready_is_written_before_the_revision_fields_it_announces(flux: FluxUnderTest) {
    let Applied { git, first } = applied(&flux).await;
    let ks_api = kustomizations(&flux);
    let seen = Watched::start(&ks_api, "app");

    let files = app_files("v2");
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let second = format!(
        "main@sha1:{}",
        git.push_commit(&files, "v2").expect("pushing v2")
    );
    let sources = dyn_api(&flux.client, &git_repository(), &flux.namespace);
    request_reconcile(&sources, "app").await;
    request_reconcile(&ks_api, "app").await;
    eventually("the Kustomization applied the second commit", || async {
        let ks = get(&ks_api, "app").await;
        applied_revision(&ks)
            .filter(|r| *r == second)
            .map(|_| ())
            .ok_or_else(|| status_line(&ks))
    })
    .await;
    let states = seen.stop();

    // fluxcd/pkg/runtime v0.110 patch.Helper.Patch: "Patch the conditions first", then the
    // rest of the status. A reader that takes Ready=True for "applied" before
    // lastAppliedRevision says so acts on a revision not yet recorded.
    let announced = format!("Applied revision: {second}");
    let early = states.iter().find(|ks| {
        ready(ks).is_some_and(|c| c["status"] == "True" && c["message"] == announced.as_str())
            && applied_revision(ks).as_deref() == Some(first.as_str())
    });
    assert!(
        early.is_some(),
        "no state with Ready announcing {second} before lastAppliedRevision moved; seen:\n{}",
        states
            .iter()
            .map(status_line)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn a_new_flux_object_starts_at_observed_generation_minus_one(flux: FluxUnderTest) {
    // The Flux CRDs default `status` to `{observedGeneration: -1}`: a reader comparing it
    // with the generation sees "not reconciled yet" from the create on, never a missing
    // status it must special-case.
    let ns = flux.namespace.as_str();
    let source = json!({"kind": "GitRepository", "name": "nowhere"});
    let objects = [
        (
            git_repository(),
            json!({"url": "https://git.invalid/repo", "interval": "1h"}),
        ),
        (
            oci_repository(),
            json!({"url": "oci://registry.invalid/charts/app", "interval": "1h"}),
        ),
        (
            helm_repository(),
            json!({"url": "https://charts.invalid/", "interval": "1h"}),
        ),
        (
            kustomization(),
            json!({"interval": "1h", "prune": true, "sourceRef": source}),
        ),
        (
            helm_release(),
            json!({"interval": "1h", "chart": {"spec": {"chart": "app", "sourceRef":
                {"kind": "HelmRepository", "name": "nowhere"}}}}),
        ),
    ];
    for (resource, spec) in objects {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": resource.api_version, "kind": resource.kind,
            "metadata": {"name": "fresh", "namespace": ns}, "spec": spec,
        }))
        .expect("a valid object");
        let created = dyn_api(&flux.client, &resource, ns)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {} fresh: {e}", resource.kind));
        let created = serde_json::to_value(created).expect("an object as JSON");
        assert_eq!(
            created["status"]["observedGeneration"],
            json!(-1),
            "{} as created: {}",
            resource.kind,
            created["status"]
        );
    }
}

async fn pruning_spares_what_is_opted_out_or_owned_by_another_kustomization(flux: FluxUnderTest) {
    // kustomize-controller v1.9.4 prunes through fluxcd/pkg/ssa's ResourceManager.Delete:
    // an object whose labels no longer name this Kustomization, or that carries
    // `kustomize.toolkit.fluxcd.io/prune: disabled`, is skipped — how people keep a PVC's
    // data when its manifest leaves Git.
    let files = vec![
        config_map_file("app", "v1", ""),
        config_map_file("gone", "v1", ""),
        config_map_file("kept", "v1", "kustomize.toolkit.fluxcd.io/prune: disabled"),
        config_map_file("taken", "v1", ""),
    ];
    let Applied { git, .. } = applied_files(&flux, files).await;
    let config_maps = Api::<ConfigMap>::namespaced(flux.client.clone(), &flux.namespace);
    config_maps
        .patch(
            "taken",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "other"}}}),
            ),
        )
        .await
        .expect("relabelling ConfigMap taken");

    let (path, contents) = config_map_file("app", "v2", "");
    let removed: Vec<String> = ["gone", "kept", "taken"]
        .iter()
        .map(|n| format!("{APP_PATH}/{n}.yaml"))
        .collect();
    let second = format!(
        "main@sha1:{}",
        git.push_change(&[(path.as_str(), contents.as_str())], &removed, "v2 alone")
            .expect("pushing v2")
    );
    // Only then the Kustomization: a reconcile of the first commit would apply its labels
    // again.
    fetched(&flux, &second).await;
    let ks_api = kustomizations(&flux);
    request_reconcile(&ks_api, "app").await;
    eventually("the Kustomization applied the second commit", || async {
        let ks = get(&ks_api, "app").await;
        applied_revision(&ks)
            .filter(|r| *r == second)
            .map(|_| ())
            .ok_or_else(|| status_line(&ks))
    })
    .await;
    eventually("ConfigMap gone pruned", || async {
        match config_maps.get_opt("gone").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for spared in ["kept", "taken"] {
        assert!(
            config_maps
                .get_opt(spared)
                .await
                .expect("reading a ConfigMap")
                .is_some(),
            "ConfigMap {spared} was pruned"
        );
    }
}

/// Asks the GitRepository to fetch and waits until its artifact is `revision`.
async fn fetched(flux: &FluxUnderTest, revision: &str) {
    let sources = dyn_api(&flux.client, &git_repository(), &flux.namespace);
    request_reconcile(&sources, "app").await;
    eventually("the GitRepository fetched the new commit", || async {
        let source = get(&sources, "app").await;
        let artifact = source["status"]["artifact"]["revision"].as_str();
        (artifact == Some(revision))
            .then_some(())
            .ok_or_else(|| format!("artifact {artifact:?}"))
    })
    .await;
}

/// Every state of an object a watch delivered, in order.
struct Watched {
    states: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    fn start(api: &Api<DynamicObject>, name: &str) -> Watched {
        let states = Arc::new(Mutex::new(Vec::new()));
        let log = states.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api.clone(), config);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event {
                    let v = serde_json::to_value(o).unwrap_or_default();
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            }
        });
        Watched { states, task }
    }

    fn stop(self) -> Vec<Value> {
        self.task.abort();
        std::mem::take(&mut *self.states.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn kustomizations(flux: &FluxUnderTest) -> Api<DynamicObject> {
    dyn_api(&flux.client, &kustomization(), &flux.namespace)
}

async fn create(api: &Api<DynamicObject>, value: Value) {
    let obj: DynamicObject = serde_json::from_value(value).expect("a valid object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()));
}

async fn merge(api: &Api<DynamicObject>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patching {name} with {patch}: {e}"));
}

async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {name}: {e}"));
    serde_json::to_value(obj).expect("an object as JSON")
}

/// Asks for a reconcile now, as `flux reconcile` does; returns the token.
async fn request_reconcile(api: &Api<DynamicObject>, name: &str) -> String {
    let at = jiff::Timestamp::now().to_string();
    merge(
        api,
        name,
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}}),
    )
    .await;
    at
}

fn applied_revision(ks: &Value) -> Option<String> {
    ks["status"]["lastAppliedRevision"]
        .as_str()
        .map(str::to_owned)
}

fn ready(obj: &Value) -> Option<&Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Generation, observed generation, Ready and the revisions, for failure messages.
fn status_line(obj: &Value) -> String {
    let ready = ready(obj).map_or("no Ready".to_owned(), |c| {
        format!("Ready={}/{}: {}", c["status"], c["reason"], c["message"])
    });
    format!(
        "generation {} observed {}; {ready}; lastAppliedRevision {}; lastHandledReconcileAt {}",
        obj["metadata"]["generation"],
        obj["status"]["observedGeneration"],
        obj["status"]["lastAppliedRevision"],
        obj["status"]["lastHandledReconcileAt"]
    )
}

/// The version the applied ConfigMap says.
async fn applied_version(flux: &FluxUnderTest) -> String {
    let cm = Api::<ConfigMap>::namespaced(flux.client.clone(), &flux.namespace)
        .get("app")
        .await
        .expect("the applied ConfigMap");
    cm.data
        .and_then(|d| d.get("version").cloned())
        .unwrap_or_default()
}

/// Polls `probe` every 100 ms until it returns `Ok`, panicking with `what` and the last
/// observation after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!(
                    "timed out after {} s waiting for {what}; last seen: {last}",
                    WAIT.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
