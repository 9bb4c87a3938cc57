//! The sims held to the real components: each case runs the same steps and checks on the
//! sims (kubesim + test/sim's Flux and workload controllers) and on the real ones (the Flux
//! controllers and kube-controller-manager on the real control plane of test/realstack), so
//! what Fluxgate's fast suite sees is what a cluster shows. A case that fails only
//! `on_sims` is a sim that is wrong about the real component.
//!
//! Without the real stack's binaries the `on_real` half prints `SKIPPED: …` and passes,
//! unless FLUXGATE_REQUIRE_REAL_STACK=1.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubesim::KubeSim;
use realstack::flux::Flux;
use realstack::testing::{create, get, merge, namespace, request_reconcile};
use serde_json::{Value, json};
use sim::git_server::GitServer;
use sim::kinds::{
    dyn_api, git_repository, helm_release, helm_repository, kustomization, oci_repository,
};
use sim::world::{World, WorldOptions};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long any wait may take: real Flux polls some things every few seconds.
const WAIT: Duration = Duration::from_secs(60);
/// The path of the Git repository the Kustomization applies.
const APP_PATH: &str = "app";

/// The sims or the real components, with a namespace of the case's own.
struct Components {
    client: Client,
    namespace: String,
    _keep: Option<(KubeSim, World)>,
}

/// The sims on kubesim.
async fn sims(name: &str) -> Components {
    let kube = KubeSim::start().await;
    kube.load_third_party_crds()
        .expect("kubesim's Flux and VolumeSnapshot CRDs load");
    let client = kube.client();
    let world = World::start(client.clone(), WorldOptions::fast())
        .await
        .expect("the simulated world starts");
    namespace(&client, name).await;
    Components {
        client,
        namespace: name.to_owned(),
        _keep: Some((kube, world)),
    }
}

/// The real Flux controllers and control plane, shared by the process; `None` when not built.
async fn real(name: &str) -> Option<Components> {
    let flux = Flux::shared_or_skip()?;
    let client = flux
        .cluster()
        .client()
        .await
        .expect("a client of the real control plane");
    namespace(&client, name).await;
    Some(Components {
        client,
        namespace: name.to_owned(),
        _keep: None,
    })
}

/// Each case as `::on_sims` and `::on_real`.
macro_rules! on_sims_and_real {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sims() {
                    let flux = super::sims(&super::namespace_of(stringify!($case), "sim")).await;
                    super::$case(flux).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_real() {
                    if let Some(flux) = super::real(&super::namespace_of(stringify!($case), "real")).await {
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

on_sims_and_real!(
    a_new_flux_object_starts_at_observed_generation_minus_one,
    a_suspended_kustomization_records_its_generation_and_the_request_but_applies_nothing,
    ready_is_written_before_the_revision_fields_it_announces,
    pruning_spares_what_is_opted_out_or_owned_by_another_kustomization,
    an_ordered_statefulset_never_replaces_an_unready_pod_of_a_reverted_version,
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

async fn applied(flux: &Components) -> Applied {
    applied_files(flux, app_files("v1")).await
}

/// [`applied`] with `files` as the first commit.
async fn applied_files(flux: &Components, files: Vec<(String, String)>) -> Applied {
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
    wait_applied(flux, &first, "the Kustomization applied the first commit").await;
    Applied { git, first }
}

async fn a_suspended_kustomization_records_its_generation_and_the_request_but_applies_nothing(
    flux: Components,
) {
    let Applied { git, first } = applied(&flux).await;
    let ks_api = kustomizations(&flux);
    merge(&ks_api, "app", json!({"spec": {"suspend": true}})).await;

    let second = pushed_v2(&git);
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
    wait_applied(
        &flux,
        &second,
        "the resumed Kustomization applied the held-back commit",
    )
    .await;
    assert_eq!(applied_version(&flux).await, "v2");
}

async fn ready_is_written_before_the_revision_fields_it_announces(flux: Components) {
    let Applied { git, first } = applied(&flux).await;
    let ks_api = kustomizations(&flux);
    let seen = Watched::start(&ks_api, "app");

    let second = pushed_v2(&git);
    let sources = dyn_api(&flux.client, &git_repository(), &flux.namespace);
    request_reconcile(&sources, "app").await;
    request_reconcile(&ks_api, "app").await;
    wait_applied(
        &flux,
        &second,
        "the Kustomization applied the second commit",
    )
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

async fn a_new_flux_object_starts_at_observed_generation_minus_one(flux: Components) {
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

async fn pruning_spares_what_is_opted_out_or_owned_by_another_kustomization(flux: Components) {
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
    wait_applied(
        &flux,
        &second,
        "the Kustomization applied the second commit",
    )
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

/// Pushes the app at `v2` and returns the revision Flux will name it by.
fn pushed_v2(git: &GitServer) -> String {
    let files = app_files("v2");
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let sha = git.push_commit(&files, "v2").expect("pushing v2");
    format!("main@sha1:{sha}")
}

/// Asks the GitRepository to fetch and waits until its artifact is `revision`.
async fn fetched(flux: &Components, revision: &str) {
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

/// A StatefulSet `db` of two replicas whose pods say `version` (never ready when `broken`).
fn statefulset(version: &str, broken: bool) -> StatefulSet {
    let mut annotations = json!({"example.com/version": version});
    if broken {
        annotations[sim::faults::NEVER_READY_ANNOTATION] = json!("true");
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}, "annotations": annotations},
                "spec": {"containers": [{"name": "db", "image": "example.com/db:1"}]},
            },
        },
    }))
    .expect("a valid StatefulSet")
}

async fn an_ordered_statefulset_never_replaces_an_unready_pod_of_a_reverted_version(
    flux: Components,
) {
    // kube-controller-manager v1.36.3 (stateful_set_control.go `processReplica`): under
    // OrderedReady a pod that is not running and ready stops the sync before the rolling
    // update is reached — a pod of a broken version stays after the template is reverted
    // (Kubernetes' documented "forced rollback": someone must delete it). Whoever restores
    // replicas before the template is right gets such a pod.
    let sets = Api::<StatefulSet>::namespaced(flux.client.clone(), &flux.namespace);
    let pods = Api::<Pod>::namespaced(flux.client.clone(), &flux.namespace);
    let apply = |set: StatefulSet| {
        let sets = sets.clone();
        async move {
            sets.patch(
                "db",
                &PatchParams::apply("conformance").force(),
                &Patch::Apply(&set),
            )
            .await
            .expect("applying StatefulSet db");
        }
    };
    let version_of = |pod: &Pod| {
        pod.annotations()
            .get("example.com/version")
            .cloned()
            .unwrap_or_default()
    };
    let pod_state = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt(name).await.expect("reading a pod");
            pod.map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (
                    version_of(&p),
                    ready,
                    p.metadata.deletion_timestamp.is_some(),
                )
            })
        }
    };
    apply(statefulset("v1", false)).await;
    for name in ["db-0", "db-1"] {
        eventually(&format!("{name} ready at v1"), || async {
            match pod_state(name).await {
                Some((v, true, false)) if v == "v1" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    apply(statefulset("v2", true)).await;
    eventually("db-1 replaced by an unready pod of v2", || async {
        match pod_state("db-1").await {
            Some((v, false, false)) if v == "v2" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    apply(statefulset("v1", false)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pod_state("db-1").await,
        Some(("v2".to_owned(), false, false)),
        "the unready pod of the reverted version stays"
    );
    assert_eq!(
        pod_state("db-0").await,
        Some(("v1".to_owned(), true, false))
    );

    pods.delete("db-1", &Default::default())
        .await
        .expect("deleting db-1 by hand");
    eventually("db-1 back at v1 and ready", || async {
        match pod_state("db-1").await {
            Some((v, true, false)) if v == "v1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Waits until the Kustomization has applied `revision` (`what` names the wait).
async fn wait_applied(flux: &Components, revision: &str, what: &str) {
    let api = kustomizations(flux);
    eventually(what, || async {
        let ks = get(&api, "app").await;
        applied_revision(&ks)
            .filter(|r| r == revision)
            .map(|_| ())
            .ok_or_else(|| status_line(&ks))
    })
    .await;
}

/// [`realstack::testing::eventually`] with [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    realstack::testing::eventually(what, WAIT, probe).await
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

fn kustomizations(flux: &Components) -> Api<DynamicObject> {
    dyn_api(&flux.client, &kustomization(), &flux.namespace)
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
async fn applied_version(flux: &Components) -> String {
    let cm = Api::<ConfigMap>::namespaced(flux.client.clone(), &flux.namespace)
        .get("app")
        .await
        .expect("the applied ConfigMap");
    cm.data
        .and_then(|d| d.get("version").cloned())
        .unwrap_or_default()
}
