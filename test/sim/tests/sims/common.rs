//! Test fixtures: kubesim with the real Flux and snapshot CRDs, the whole world running,
//! bare Git repositories driven by the git CLI, and watch-based waiting.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use kubesim::KubeSim;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sim::world::{World, WorldOptions};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Env {
    pub world: World,
    pub client: Client,
    /// Kept alive for the test's duration.
    pub _kube: KubeSim,
}

/// The host under which [`GitRepo::url`] names local bare repositories: Flux's CRD only
/// accepts `http(s)://` and `ssh://` URLs, so the sims rewrite these to `file:///`.
pub const GIT_HOST: &str = "https://git.sim.test/";

/// kubesim with CRDs, seeded storage classes, and the world started with `options`.
pub async fn env_with(mut options: WorldOptions) -> Env {
    options
        .git_url_rewrites
        .push((GIT_HOST.to_owned(), "file:///".to_owned()));
    let kube = KubeSim::start().await;
    kube.load_third_party_crds()
        .expect("kubesim's Flux and VolumeSnapshot CRDs load");
    let client = kube.client();
    sim::seed::storage(&client).await.expect("storage classes");
    let world = World::start(client.clone(), options)
        .await
        .expect("world starts");
    Env {
        world,
        client,
        _kube: kube,
    }
}

pub async fn env() -> Env {
    env_with(WorldOptions::fast()).await
}

/// Waits (on a watch, not by polling) until object `name` satisfies `pred`.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, pred: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config).applied_objects();
    let found = tokio::time::timeout(WAIT, async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(obj) = stream.try_next().await.expect("watch works") {
            if pred(&obj) {
                return obj;
            }
        }
        panic!("watch ended while waiting for {what}")
    })
    .await;
    match found {
        Ok(obj) => obj,
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!("timed out waiting for {what}; object is now {now:#?}")
        }
    }
}

/// Waits until object `name` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api.clone(), config));
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            if api.get_opt(name).await.expect("get works").is_none() {
                return;
            }
            // Any event may be the deletion; re-check after each.
            let _ = stream.next().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "timed out waiting for {what} to be deleted");
}

/// Waits until the volume of claim `ns/claim` holds a content token satisfying `pred`,
/// read through `sim::volumes::content_token` again after every change of a
/// PersistentVolume or of the namespace's claims (the token lives on the volume, which a
/// claim may change); returns that token.
pub async fn wait_for_token(
    client: &Client,
    ns: &str,
    claim: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let volumes = watcher(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .map(|_| ());
    let claims = watcher(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
        watcher::Config::default(),
    )
    .map(|_| ());
    let mut changes = std::pin::pin!(futures::stream::select(volumes, claims));
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            last = sim::volumes::content_token(client, ns, claim)
                .await
                .ok()
                .flatten();
            if let Some(token) = last.as_deref().filter(|t| pred(t)) {
                return token.to_owned();
            }
            changes.next().await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!("timed out waiting for {what}; claim {ns}/{claim} holds {last:?}")
    })
}

/// A dynamic API for `ar` in `ns`.
pub fn dynamic(client: &Client, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, ar)
}

/// An object as JSON.
pub fn json_of<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).expect("serialisable")
}

/// The condition `type_` of a JSON object's status.
pub fn cond(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Merge-patches `patch` into an object.
pub async fn merge(api: &Api<DynamicObject>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("merge patch");
}

/// Sets Flux's `reconcile.fluxcd.io/requestedAt` annotation to `at`.
pub async fn request_reconcile(api: &Api<DynamicObject>, name: &str, at: &str) {
    merge(
        api,
        name,
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}}),
    )
    .await;
}

/// A bare repository (branch `main`) and a working clone, driven by the git CLI.
pub struct GitRepo {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("repo.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        GitRepo {
            _dir: dir,
            bare,
            work,
        }
    }

    /// The directory holding the bare repository `repo.git`.
    pub fn root(&self) -> PathBuf {
        self.bare
            .parent()
            .expect("bare repo has a parent")
            .to_path_buf()
    }

    pub fn url(&self) -> String {
        let path = self.bare.display().to_string();
        format!("{GIT_HOST}{}", path.trim_start_matches('/'))
    }

    pub fn write(&self, path: &str, content: &str) -> &Self {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Tags the working clone's head with lightweight tag `name` and pushes the tag.
    pub fn tag(&self, name: &str) -> &Self {
        git(&self.work, &["tag", name]);
        git(&self.work, &["push", "-q", "origin", name]);
        self
    }

    /// Pushes the working clone's head to branch `branch` too.
    pub fn push_to(&self, branch: &str) -> &Self {
        git(
            &self.work,
            &["push", "-q", "origin", &format!("HEAD:{branch}")],
        );
        self
    }

    /// Commits everything and pushes; returns the commit SHA.
    pub fn push(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A ConfigMap manifest.
pub fn config_map(name: &str, ns: Option<&str>, value: &str) -> String {
    let ns = ns
        .map(|n| format!("\n  namespace: {n}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{ns}\ndata:\n  value: \"{value}\"\n"
    )
}
