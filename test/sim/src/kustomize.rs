//! Flux kustomize-controller for Kustomization v1: applies the manifests at `spec.path` of
//! the source's exact commit when the artifact moved, the spec changed or `requestedAt`
//! changed; prunes, and reports inventory, revisions and `Ready`/`Reconciling` like Flux.

use crate::apply::{Applier, Entry};
use crate::conditions::{
    condition, conditions_of, remove_condition, requested_at, set_condition, suspended,
};
use crate::controller::{SimError, SimTask, run_controller};
use crate::flux_source::{checkout, credentials, git_ref};
use crate::git_mirror::Mirror;
use crate::kinds::{dyn_api, git_repository, kustomization, patch_status, to_value};
use crate::kustomize_build::build;
use anyhow::{Context, anyhow};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Labels kustomize-controller puts on every object it applies (so parent chains exist).
pub const NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
pub const NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// Options for [`KustomizeController`].
#[derive(Clone, Debug)]
pub struct KustomizeOptions {
    /// How long after a failed apply the same revision is tried again.
    pub retry_interval: Duration,
    /// URL rewrites, as git's `insteadOf` (see [`Mirror::new`]).
    pub url_rewrites: Vec<(String, String)>,
}

impl Default for KustomizeOptions {
    fn default() -> Self {
        KustomizeOptions {
            retry_interval: Duration::from_secs(1),
            url_rewrites: Vec::new(),
        }
    }
}

/// The running Kustomization controller; stops when dropped.
#[derive(Debug)]
pub struct KustomizeController {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    mirror: Mirror,
    applier: Applier,
    options: KustomizeOptions,
    /// When each Kustomization last failed, so failures retry on an interval, not in a loop.
    failed_at: Mutex<HashMap<String, Instant>>,
}

impl KustomizeController {
    /// Starts watching Kustomizations (and the GitRepositories they use) in all namespaces.
    pub fn start(client: Client, options: KustomizeOptions) -> anyhow::Result<KustomizeController> {
        let ks = kustomization();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &ks),
            watcher::Config::default(),
            ks.clone(),
        );
        let store = controller.store();
        let gr = git_repository();
        let controller = controller.watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &gr),
            gr,
            watcher::Config::default(),
            move |repo: DynamicObject| {
                let (rns, rname) = (repo.namespace().unwrap_or_default(), repo.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|k| {
                        let (ns, name, kind) = source_ref(&to_value(&**k));
                        kind == "GitRepository" && ns == rns && name == rname
                    })
                    .map(|k| ObjectRef::from_obj_with(&*k, ks.clone()))
                    .collect::<Vec<_>>()
            },
        );
        let ctx = Arc::new(Ctx {
            applier: Applier::new(client.clone(), "kustomize-controller"),
            client,
            mirror: Mirror::new(options.url_rewrites.clone())?,
            options,
            failed_at: Mutex::default(),
        });
        Ok(KustomizeController {
            _task: run_controller("kustomize-controller", controller, reconcile, ctx),
        })
    }
}

/// (namespace, name, kind) of `spec.sourceRef`; the namespace defaults to the object's.
fn source_ref(v: &Value) -> (String, String, String) {
    let r = &v["spec"]["sourceRef"];
    let ns = r["namespace"]
        .as_str()
        .or(v["metadata"]["namespace"].as_str())
        .unwrap_or_default();
    (
        ns.to_owned(),
        r["name"].as_str().unwrap_or_default().to_owned(),
        r["kind"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Why an attempt failed, as Flux's Ready reason.
struct Failure {
    reason: &'static str,
    message: String,
}

fn fail(reason: &'static str) -> impl FnOnce(anyhow::Error) -> Failure {
    move |e| Failure {
        reason,
        message: format!("{e:#}"),
    }
}

async fn reconcile(cached: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    // Read the object fresh: the cache may not yet hold our own last status write, and
    // deciding on a stale status would redo (or re-fail) a release or apply.
    let api = dyn_api(
        &ctx.client,
        &kustomization(),
        &cached.namespace().unwrap_or_default(),
    );
    let Some(obj) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let v = to_value(&obj);
    if suspended(&v) {
        if let Some(seen) = suspended_status(&v, obj.metadata.generation) {
            patch_status(&api, &obj.name_any(), seen, "kustomize-controller").await?;
        }
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = format!("{ns}/{name}");
    let generation = obj.metadata.generation;
    let requested = requested_at(&v);
    let status = &v["status"];

    // Which revision would we apply?
    let (src_ns, src_name, src_kind) = source_ref(&v);
    let source = if src_kind == "GitRepository" {
        dyn_api(&ctx.client, &git_repository(), &src_ns)
            .get_opt(&src_name)
            .await?
    } else {
        None
    };
    let source = source.map(|s| to_value(&s));
    let revision = source
        .as_ref()
        .and_then(|s| s["status"]["artifact"]["revision"].as_str())
        .map(str::to_owned);

    let ready = conditions_of(&v).into_iter().find(|c| c["type"] == "Ready");
    let last_failed = ready.as_ref().is_some_and(|c| c["status"] == "False");
    let moved = revision.as_deref() != status["lastAttemptedRevision"].as_str();
    let respecced = generation != status["observedGeneration"].as_i64();
    let asked =
        requested.is_some() && requested.as_deref() != status["lastHandledReconcileAt"].as_str();
    let retry_due = last_failed
        && ctx
            .failed_at
            .lock()
            .ok()
            .and_then(|f| f.get(&key).copied())
            .is_none_or(|t| t.elapsed() >= ctx.options.retry_interval);
    if !(moved || respecced || asked || retry_due) {
        return Ok(if last_failed {
            Action::requeue(ctx.options.retry_interval)
        } else {
            Action::await_change()
        });
    }

    let mut conditions = conditions_of(&v);
    let progress = format!(
        "Reconciliation in progress for revision {}",
        revision.as_deref().unwrap_or("unknown")
    );
    set_condition(
        &mut conditions,
        condition("Reconciling", "True", "Progressing", &progress, generation),
    );
    set_condition(
        &mut conditions,
        condition("Ready", "Unknown", "Progressing", &progress, generation),
    );
    patch_status(
        &api,
        &name,
        json!({"conditions": conditions}),
        "kustomize-controller",
    )
    .await?;

    let outcome = match (&source, &revision) {
        (Some(source), Some(revision)) => attempt(&ctx, &v, source, revision).await,
        _ => Err(Failure {
            reason: "ArtifactFailed",
            message: format!(
                "Source '{src_kind}/{src_ns}/{src_name}' not found or has no artifact"
            ),
        }),
    };

    let mut new = json!({"observedGeneration": generation});
    if let Some(r) = &revision {
        new["lastAttemptedRevision"] = json!(r);
    }
    if let Some(at) = &requested {
        new["lastHandledReconcileAt"] = json!(at);
    }
    let action = match outcome {
        Ok(entries) => {
            let r = revision.clone().unwrap_or_default();
            new["lastAppliedRevision"] = json!(r);
            new["inventory"] =
                json!({"entries": entries.iter().map(Entry::to_json).collect::<Vec<_>>()});
            remove_condition(&mut conditions, "Reconciling");
            set_condition(
                &mut conditions,
                condition(
                    "Ready",
                    "True",
                    "ReconciliationSucceeded",
                    &format!("Applied revision: {r}"),
                    generation,
                ),
            );
            if let Ok(mut f) = ctx.failed_at.lock() {
                f.remove(&key);
            }
            Action::await_change()
        }
        Err(f) => {
            tracing::info!(kustomization = %key, reason = f.reason, error = %f.message, "apply failed");
            set_condition(
                &mut conditions,
                condition(
                    "Reconciling",
                    "True",
                    "ProgressingWithRetry",
                    &f.message,
                    generation,
                ),
            );
            set_condition(
                &mut conditions,
                condition("Ready", "False", f.reason, &f.message, generation),
            );
            if let Ok(mut fa) = ctx.failed_at.lock() {
                fa.insert(key, Instant::now());
            }
            Action::requeue(ctx.options.retry_interval)
        }
    };
    new["conditions"] = json!(conditions);
    patch_status(&api, &name, new, "kustomize-controller").await?;
    Ok(action)
}

/// Builds and applies the commit, prunes, and returns the new inventory (sorted).
async fn attempt(
    ctx: &Ctx,
    ks: &Value,
    source: &Value,
    revision: &str,
) -> Result<Vec<Entry>, Failure> {
    let sha = revision
        .rsplit_once("sha1:")
        .map(|(_, s)| s.to_owned())
        .ok_or_else(|| Failure {
            reason: "ArtifactFailed",
            message: format!("revision {revision} does not name a Git commit"),
        })?;
    let path = ks["spec"]["path"].as_str().unwrap_or("./").to_owned();
    let files = {
        let src_ns = source["metadata"]["namespace"].as_str().unwrap_or_default();
        let creds = if ctx.mirror.has_commit(&sha) {
            None
        } else {
            credentials(&ctx.client, src_ns, &source["spec"])
                .await
                .map_err(fail("ArtifactFailed"))?
        };
        let url = source["spec"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Real kustomize-controller downloads the source's artifact; this one fetches the
        // same reference from Git when it does not hold the commit yet.
        let reference = git_ref(&source["spec"]);
        let mirror = ctx.mirror.clone();
        tokio::task::spawn_blocking(move || {
            if !mirror.has_commit(&sha) {
                checkout(&mirror, &url, &reference, creds.as_ref())?;
            }
            mirror.files(&sha, "")
        })
        .await
        .map_err(|e| anyhow!("read task: {e}"))
        .and_then(|r| r)
        .map_err(fail("ArtifactFailed"))?
    };
    let dir = crate::git_mirror::clean_path(&path);
    if !crate::kustomize_build::is_dir(&files, &dir) {
        return Err(Failure {
            reason: "ArtifactFailed",
            message: format!("kustomization path not found: {path}"),
        });
    }
    let mut objects = build(&files, &dir).map_err(fail("BuildFailed"))?;

    let ns = ks["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = ks["metadata"]["name"].as_str().unwrap_or_default();
    let target = ks["spec"]["targetNamespace"].as_str();
    let common = &ks["spec"]["commonMetadata"];
    for o in objects.iter_mut() {
        if let Some(t) = target {
            let (api_version, kind) = (
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
            );
            let (_, namespaced) = ctx
                .applier
                .resolve(api_version, kind)
                .await
                .map_err(fail("ReconciliationFailed"))?;
            if namespaced {
                o["metadata"]["namespace"] = json!(t);
            }
        }
        // kustomize-controller v1.9.6 `reconcile` labels every built object with the
        // applying Kustomization (`ResourceManager.SetOwnerLabels`, fluxcd/pkg/ssa v0.76.2
        // manager.go) — a Kustomization applying its own manifest, as `flux bootstrap`'s
        // root does, so carries labels naming itself — and then `apply` merges
        // `spec.commonMetadata` over them (`ssautil.SetCommonMetadata`), so a common label
        // of the same key wins. No annotation is added.
        o["metadata"]["labels"][NAME_LABEL] = json!(name);
        o["metadata"]["labels"][NAMESPACE_LABEL] = json!(ns);
        for (field, extra) in [
            ("labels", &common["labels"]),
            ("annotations", &common["annotations"]),
        ] {
            for (k, val) in extra.as_object().into_iter().flatten() {
                o["metadata"][field][k] = val.clone();
            }
        }
    }
    // Flux applies CRDs and Namespaces before everything that may live in them.
    objects.sort_by_key(|o| match o["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    });
    let mut entries = Vec::new();
    for o in &objects {
        entries.push(
            ctx.applier
                .apply(o)
                .await
                .map_err(fail("ReconciliationFailed"))?,
        );
    }
    entries.sort();
    entries.dedup();
    if ks["spec"]["prune"].as_bool().unwrap_or(false) {
        let keep: BTreeSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        for old in Entry::list_from(&ks["status"]["inventory"]) {
            if !keep.contains(old.id.as_str()) {
                ctx.applier
                    .prune(&old, &[(NAME_LABEL, name), (NAMESPACE_LABEL, ns)])
                    .await
                    .context("pruning")
                    .map_err(fail("PruneFailed"))?;
            }
        }
    }
    Ok(entries)
}

/// What kustomize-controller writes for a suspended Kustomization, if anything changed: its
/// deferred `finalizeStatus` runs for a suspended object too (kustomization_controller.go,
/// v1.9.4) — `lastHandledReconcileAt` takes a reconcile request, and `observedGeneration`
/// the generation while Ready is True — though nothing is applied.
fn suspended_status(ks: &Value, generation: Option<i64>) -> Option<Value> {
    let status = &ks["status"];
    let mut seen = serde_json::Map::new();
    if let Some(at) = requested_at(ks)
        && status["lastHandledReconcileAt"].as_str() != Some(at.as_str())
    {
        seen.insert("lastHandledReconcileAt".into(), json!(at));
    }
    let ready = conditions_of(ks)
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if ready && status["observedGeneration"].as_i64() != generation {
        seen.insert("observedGeneration".into(), json!(generation));
    }
    (!seen.is_empty()).then_some(Value::Object(seen))
}
