//! Flux source-controller for GitRepository v1: fetches `spec.url` at the reference
//! `spec.ref` selects (commit > name > tag > semver > branch, as Flux chooses; semver is not
//! simulated), verifies the commit's signature when `spec.verify` asks for it (see
//! [`crate::commit_verify`]), and reports the artifact revision as Flux writes it
//! (`main@sha1:<sha>`, `refs/heads/main@sha1:<sha>` for a `name` ref), `Ready`,
//! `SourceVerified`, `observedGeneration` and `lastHandledReconcileAt`, on its interval or
//! when `requestedAt` changes.

use crate::commit_verify::{Verdict, verify_head};
use crate::conditions::{
    condition, conditions_of, now, parse_go_duration, remove_condition, requested_at,
    set_condition, suspended,
};
use crate::controller::{SimError, SimTask, run_controller};
use crate::git_mirror::{Credentials, Mirror};
use crate::kinds::{dyn_api, git_repository, patch_status, to_value};
use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Options for [`SourceController`].
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// Fetch interval for every GitRepository; `None` uses each object's `spec.interval`.
    pub interval: Option<Duration>,
    /// URL rewrites, as git's `insteadOf` (see [`Mirror::new`]).
    pub url_rewrites: Vec<(String, String)>,
}

/// The running GitRepository controller; stops when dropped.
#[derive(Debug)]
pub struct SourceController {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    mirror: Mirror,
    options: SourceOptions,
}

impl SourceController {
    /// Starts watching GitRepositories in all namespaces.
    pub fn start(client: Client, options: SourceOptions) -> anyhow::Result<SourceController> {
        let ar = git_repository();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let controller = Controller::new_with(api, watcher::Config::default(), ar);
        let ctx = Arc::new(Ctx {
            client,
            mirror: Mirror::new(options.url_rewrites.clone())?,
            options,
        });
        Ok(SourceController {
            _task: run_controller("source-controller", controller, reconcile, ctx),
        })
    }
}

/// Reads a GitRepository's basic-auth Secret (`spec.secretRef`), if it names one.
pub async fn credentials(
    client: &Client,
    namespace: &str,
    spec: &Value,
) -> anyhow::Result<Option<Credentials>> {
    let Some(name) = spec["secretRef"]["name"].as_str() else {
        return Ok(None);
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("secret {namespace}/{name}"))?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| anyhow!("secret {namespace}/{name} has no {k:?}"))
    };
    Ok(Some(Credentials {
        username: field("username")?,
        password: field("password")?,
    }))
}

/// What a GitRepository's `spec.ref` makes source-controller check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitRef {
    /// `commit`, optionally with the `branch` to clone it from or the `name` it is under.
    Commit {
        sha: String,
        branch: Option<String>,
        name: Option<String>,
    },
    /// `name`: a full reference (`refs/heads/main`, `refs/tags/v1`, `refs/pull/1/head`).
    Name(String),
    /// `tag`.
    Tag(String),
    /// `semver`: the newest tag in a range.
    SemVer(String),
    /// `branch`, `master` when nothing is set.
    Branch(String),
}

/// The reference `spec.ref` selects, in source-controller's order: `gitCheckout`
/// (source-controller v1.9.6 internal/controller/gitrepository_controller.go) passes every
/// field to fluxcd/pkg/git v0.52.0, whose `Client.clone` (gogit/client.go) picks commit,
/// then name, then tag, then semver, then branch (default `master`, `git.DefaultBranch`).
/// The API's field docs say semver wins over tag; the code checks the tag first, and the
/// code is what runs.
pub fn git_ref(spec: &Value) -> GitRef {
    let field = |k: &str| {
        spec["ref"][k]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    if let Some(sha) = field("commit") {
        return GitRef::Commit {
            sha,
            branch: field("branch"),
            name: field("name"),
        };
    }
    if let Some(name) = field("name") {
        return GitRef::Name(name);
    }
    if let Some(tag) = field("tag") {
        return GitRef::Tag(tag);
    }
    if let Some(range) = field("semver") {
        return GitRef::SemVer(range);
    }
    GitRef::Branch(field("branch").unwrap_or_else(|| "master".into()))
}

/// Fetches what `reference` names from `url` into `mirror` and returns the commit and the
/// artifact revision as source-controller writes it (`commitReference`): the full reference
/// for a `name` ref (`git.Commit.AbsoluteReference`, e.g. `refs/heads/main@sha1:<sha>`),
/// else the short one (`git.Commit.String`: `main@sha1:<sha>`, `v1.0.0@sha1:<sha>`), and
/// just `sha1:<sha>` for a commit cloned without a branch. Blocking: call from
/// `spawn_blocking`.
pub fn checkout(
    mirror: &Mirror,
    url: &str,
    reference: &GitRef,
    creds: Option<&Credentials>,
) -> anyhow::Result<(String, String)> {
    let (sha, shown) = match reference {
        GitRef::Branch(branch) => (
            mirror.fetch_ref(url, &format!("refs/heads/{branch}"), creds)?,
            branch.clone(),
        ),
        GitRef::Tag(tag) => (
            mirror.fetch_ref(url, &format!("refs/tags/{tag}"), creds)?,
            tag.clone(),
        ),
        GitRef::Name(name) => (mirror.fetch_ref(url, name, creds)?, name.clone()),
        GitRef::Commit { sha, branch, name } => {
            let found = mirror.fetch_commit(url, branch.as_deref(), sha, creds)?;
            let shown = name.clone().or_else(|| branch.clone()).unwrap_or_default();
            (found, shown)
        }
        GitRef::SemVer(range) => {
            return Err(anyhow!(
                "the simulated source-controller does not resolve semver ranges (spec.ref.semver {range:?})"
            ));
        }
    };
    let revision = if shown.is_empty() {
        format!("sha1:{sha}")
    } else {
        format!("{shown}@sha1:{sha}")
    };
    Ok((sha, revision))
}

/// The verdict on HEAD commit `sha` when `spec.verify` asks for one (`None` otherwise):
/// `verifySignature` skips an empty mode, and reads every mode but `Tag` as verifying HEAD.
async fn verify(
    ctx: &Ctx,
    namespace: &str,
    spec: &Value,
    sha: &str,
) -> anyhow::Result<Option<Verdict>> {
    let mode = spec["verify"]["mode"].as_str().unwrap_or_default();
    if mode.is_empty() || mode == "Tag" {
        return Ok(None);
    }
    let secret_name = spec["verify"]["secretRef"]["name"]
        .as_str()
        .unwrap_or_default();
    let secret = match Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(secret_name)
        .await?
    {
        Some(secret) => secret,
        None => {
            return Ok(Some(Verdict::Refused(
                "VerificationError".to_owned(),
                format!("public keys secret error: secrets \"{secret_name}\" not found"),
            )));
        }
    };
    let data: std::collections::BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let mirror = ctx.mirror.clone();
    let commit = sha.to_owned();
    let (signature, payload) =
        tokio::task::spawn_blocking(move || mirror.commit_signature(&commit))
            .await
            .map_err(|e| anyhow!("signature task: {e}"))??;
    Ok(Some(verify_head(
        sha,
        signature.as_deref(),
        &payload,
        &data,
    )))
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let v = to_value(&*obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    if suspended(&v) {
        return Ok(Action::await_change());
    }
    let interval = ctx
        .options
        .interval
        .or_else(|| v["spec"]["interval"].as_str().and_then(parse_go_duration))
        .unwrap_or(Duration::from_secs(60));
    let url = v["spec"]["url"].as_str().unwrap_or_default().to_owned();
    let reference = git_ref(&v["spec"]);
    let fetched = match credentials(&ctx.client, &ns, &v["spec"]).await {
        Ok(creds) => {
            let mirror = ctx.mirror.clone();
            let u = url.clone();
            tokio::task::spawn_blocking(move || checkout(&mirror, &u, &reference, creds.as_ref()))
                .await
                .map_err(|e| anyhow!("fetch task: {e}"))
                .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    let generation = obj.metadata.generation;
    let old = v["status"].clone();
    let mut status = old.clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions = conditions_of(&v);
    // reconcileSource drops a failed verification before verifying again.
    if conditions
        .iter()
        .any(|c| c["type"] == "SourceVerified" && c["status"] == "False")
    {
        remove_condition(&mut conditions, "SourceVerified");
    }
    let verdict = match &fetched {
        Ok((sha, _)) => verify(&ctx, &ns, &v["spec"], sha)
            .await
            .map_err(|e| SimError::from(anyhow!("verifying commit {sha}: {e:#}")))?,
        Err(_) => None,
    };
    match fetched {
        Ok((sha, _)) if matches!(verdict, Some(Verdict::Refused(..))) => {
            // verifySignature failed: SourceVerified=False, and Ready (summarised with
            // SourceVerified as a bipolar condition) False with the same reason and message.
            // The stored artifact stays the previous one, and a generic error leaves
            // `observedGeneration` alone (ComputeReconcileResult, internal/reconcile).
            let Some(Verdict::Refused(reason, message)) = verdict else {
                unreachable!("matched above")
            };
            tracing::info!(gitrepository = %format!("{ns}/{name}"), %sha, %message, "commit refused");
            for (t, s) in [("SourceVerified", "False"), ("Ready", "False")] {
                set_condition(
                    &mut conditions,
                    condition(t, s, &reason, &message, generation),
                );
            }
            status["conditions"] = json!(conditions);
            if let Some(at) = requested_at(&v) {
                status["lastHandledReconcileAt"] = json!(at);
            }
            if status != old {
                let api = dyn_api(&ctx.client, &git_repository(), &ns);
                patch_status(&api, &name, status, "source-controller").await?;
            }
            return Ok(Action::requeue(interval));
        }
        Ok((sha, revision)) => {
            match &verdict {
                Some(Verdict::Verified(message)) => {
                    set_condition(
                        &mut conditions,
                        condition("SourceVerified", "True", "Succeeded", message, generation),
                    );
                    // GitRepositoryVerification.GetMode: a valid mode as written, else HEAD.
                    let mode = v["spec"]["verify"]["mode"]
                        .as_str()
                        .filter(|m| matches!(*m, "HEAD" | "Tag" | "TagAndHEAD"))
                        .unwrap_or("HEAD");
                    status["sourceVerificationMode"] = json!(mode);
                }
                _ => {
                    remove_condition(&mut conditions, "SourceVerified");
                    if let Some(map) = status.as_object_mut() {
                        map.remove("sourceVerificationMode");
                    }
                }
            }
            if status["artifact"]["revision"] != revision.as_str() {
                let path = format!("gitrepository/{ns}/{name}/{sha}.tar.gz");
                status["artifact"] = json!({
                    "revision": revision,
                    // No tarball is built, so the digest names the commit itself.
                    "digest": format!("sha1:{sha}"),
                    "lastUpdateTime": now(),
                    "path": path,
                    "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
                });
            }
            let message = format!("stored artifact for revision '{revision}'");
            for t in ["Ready", "ArtifactInStorage"] {
                set_condition(
                    &mut conditions,
                    condition(t, "True", "Succeeded", &message, generation),
                );
            }
            remove_condition(&mut conditions, "FetchFailed");
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::info!(gitrepository = %format!("{ns}/{name}"), error = %message, "fetch failed");
            for t in ["Ready", "FetchFailed"] {
                let status = if t == "Ready" { "False" } else { "True" };
                set_condition(
                    &mut conditions,
                    condition(t, status, "GitOperationFailed", &message, generation),
                );
            }
        }
    }
    status["conditions"] = json!(conditions);
    status["observedGeneration"] = json!(generation);
    if let Some(at) = requested_at(&v) {
        status["lastHandledReconcileAt"] = json!(at);
    }
    if status != old {
        let api = dyn_api(&ctx.client, &git_repository(), &ns);
        patch_status(&api, &name, status, "source-controller").await?;
    }
    Ok(Action::requeue(interval))
}
