//! Flux source-controller for HTTP HelmRepository v1: the charts "published" at a URL
//! ([`ChartRepositories`]) and the repository's stored index — a copy of what was
//! published when the repository last reconciled, as the real controller stores
//! `index.yaml` as its artifact — refreshed on create, on a spec change, on its interval and
//! on a new `reconcile.fluxcd.io/requestedAt`, and nothing else.

use crate::conditions::{
    condition, conditions_of, now, parse_go_duration, requested_at, set_condition, suspended,
};
use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::{dyn_api, helm_repository, patch_status, to_value};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A repository index: chart name → versions, in publishing order.
pub type Index = BTreeMap<String, Vec<String>>;

/// The simulated Helm repositories (shared by the sims and the tests that publish to them):
/// what is published at each URL now, and every index a HelmRepository stored (by digest).
#[derive(Clone, Debug, Default)]
pub struct ChartRepositories {
    inner: Arc<Mutex<Repositories>>,
}

#[derive(Debug, Default)]
struct Repositories {
    published: BTreeMap<String, Index>,
    stored: HashMap<String, Index>,
}

/// Repository URLs compare without a trailing slash (source-controller normalizes them).
fn normalized(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

impl ChartRepositories {
    /// Publishes `chart` at `version` in the repository at `url`, from now on. HelmRepositories
    /// serving `url` see it at their next refresh, not before.
    pub fn publish(&self, url: &str, chart: &str, version: &str) {
        let mut repos = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let versions = repos
            .published
            .entry(normalized(url))
            .or_default()
            .entry(chart.to_owned())
            .or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_owned());
        }
    }

    /// Fetches the index at `url` as it is now and stores it; returns its digest.
    fn fetch_and_store(&self, url: &str) -> String {
        let mut repos = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = repos
            .published
            .get(&normalized(url))
            .cloned()
            .unwrap_or_default();
        let digest = index_digest(&index);
        repos.stored.insert(digest.clone(), index);
        digest
    }

    /// The index a HelmRepository stored under artifact revision `digest`.
    pub fn stored(&self, digest: &str) -> Option<Index> {
        let repos = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        repos.stored.get(digest).cloned()
    }
}

/// The revision source-controller gives an index artifact: the `sha256:` digest of the
/// index (`chartRepo.Digest(intdigest.Canonical)` in `reconcileSource`,
/// source-controller v1.9.6 internal/controller/helmrepository_controller.go). Ours hashes
/// a canonical serialization of the simulated index instead of index.yaml's bytes.
fn index_digest(index: &Index) -> String {
    let bytes = serde_json::to_vec(index).unwrap_or_default();
    let hash = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Options for [`HelmRepositoryController`].
#[derive(Clone, Debug, Default)]
pub struct HelmRepositoryOptions {
    /// Refresh interval for every HelmRepository; `None` uses each object's `spec.interval`
    /// (the default even in fast worlds: a stale index is what HelmRepositories are about).
    pub interval: Option<Duration>,
}

/// The running HelmRepository controller; stops when dropped.
#[derive(Debug)]
pub struct HelmRepositoryController {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    repositories: ChartRepositories,
    options: HelmRepositoryOptions,
    /// When each HelmRepository (`namespace/name`) last fetched its index.
    fetched_at: Mutex<HashMap<String, Instant>>,
}

impl HelmRepositoryController {
    /// Starts watching HelmRepositories in all namespaces.
    pub fn start(
        client: Client,
        repositories: ChartRepositories,
        options: HelmRepositoryOptions,
    ) -> HelmRepositoryController {
        let ar = helm_repository();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
            ar,
        );
        let ctx = Arc::new(Ctx {
            client,
            repositories,
            options,
            fetched_at: Mutex::default(),
        });
        HelmRepositoryController {
            _task: run_controller("helm-repository-controller", controller, reconcile, ctx),
        }
    }
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let v = to_value(&*obj);
    if suspended(&v) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = format!("{ns}/{name}");
    let generation = obj.metadata.generation;
    let interval = ctx
        .options
        .interval
        .or_else(|| v["spec"]["interval"].as_str().and_then(parse_go_duration))
        .unwrap_or(Duration::from_secs(600));
    let old = v["status"].clone();
    let requested = requested_at(&v);
    // source-controller reconciles a HelmRepository on a generation change or a new
    // `requestedAt` (its predicates, `SetupWithManagerAndOptions` in
    // helmrepository_controller.go) and then every `spec.interval`; our own status writes
    // and other metadata changes also wake this sim, and must not refetch the index.
    let due = {
        let fetched_at = ctx.fetched_at.lock().unwrap_or_else(|e| e.into_inner());
        match fetched_at.get(&key) {
            None => None,
            Some(at) => interval.checked_sub(at.elapsed()),
        }
    };
    let asked = old["observedGeneration"].as_i64() != generation
        || requested
            .as_ref()
            .is_some_and(|at| old["lastHandledReconcileAt"] != at.as_str())
        || !old["artifact"].is_object();
    if let (Some(remaining), false) = (due, asked) {
        return Ok(Action::requeue(remaining));
    }
    let mut status = if old.is_object() {
        old.clone()
    } else {
        json!({})
    };
    let mut conditions = conditions_of(&v);
    if v["spec"]["type"] == "oci" {
        let message = "HelmRepository type oci is not simulated";
        set_condition(
            &mut conditions,
            condition("Ready", "False", "NotSimulated", message, generation),
        );
    } else {
        let url = v["spec"]["url"].as_str().unwrap_or_default();
        let revision = ctx.repositories.fetch_and_store(url);
        ctx.fetched_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Instant::now());
        if status["artifact"]["revision"] != revision.as_str() {
            let hex = &revision["sha256:".len()..];
            let path = format!("helmrepository/{ns}/{name}/index-{hex}.yaml");
            status["artifact"] = json!({
                "revision": revision, "digest": revision, "lastUpdateTime": now(), "path": path,
                "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
            });
            status["url"] = json!(format!(
                "http://source-controller.flux-system.svc.cluster.local./helmrepository/{ns}/{name}/index.yaml"
            ));
        }
        // As `reconcileArtifact` in helmrepository_controller.go words it.
        let message = format!("stored artifact: revision '{revision}'");
        for t in ["Ready", "ArtifactInStorage"] {
            set_condition(
                &mut conditions,
                condition(t, "True", "Succeeded", &message, generation),
            );
        }
    }
    status["conditions"] = json!(conditions);
    status["observedGeneration"] = json!(generation);
    if let Some(at) = requested {
        status["lastHandledReconcileAt"] = json!(at);
    }
    if status != old {
        patch_status(
            &dyn_api(&ctx.client, &helm_repository(), &ns),
            &name,
            status,
            "source-controller",
        )
        .await?;
    }
    Ok(Action::requeue(interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_index_does_not_change_when_a_version_is_published_later() {
        let repos = ChartRepositories::default();
        repos.publish("https://charts.example.com/", "db", "1.0.0");
        let before = repos.fetch_and_store("https://charts.example.com");
        repos.publish("https://charts.example.com", "db", "1.1.0");
        assert_eq!(repos.stored(&before).unwrap()["db"], ["1.0.0"]);
        let after = repos.fetch_and_store("https://charts.example.com");
        assert_ne!(before, after);
        assert!(after.starts_with("sha256:") && after.len() == 7 + 64);
        assert_eq!(repos.stored(&after).unwrap()["db"], ["1.0.0", "1.1.0"]);
    }
}
