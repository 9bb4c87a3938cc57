//! Reaching an app's Git repository: its location (the ManagedApp's `git` overrides, else
//! the GitRepository that deploys it), credentials from the referenced Secret, and the
//! files holding its version fields, read at one head.

use super::Context;
use crate::api::{ManagedApp, PlannedFluxObject};
use crate::cluster::error::{ClusterError, describe};
use crate::cluster::flux::ops::{GitSource, git_source};
use crate::git::{DirectoryAtHead, Git2Repo, GitAuth, GitRepo, RemoteSpec, redact_url};
use crate::manifest::fields::directory_of;
use crate::manifest::fields::{ResolvedField, locate_fields};
use crate::manifest::text_from_bytes;
use crate::workflow::Problem;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where an app's versions live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitLocation {
    /// Clone URL (may carry credentials only if the user wrote them; never shown unredacted).
    pub url: String,
    /// Branch.
    pub branch: String,
    /// The credentials Secret as (namespace, name).
    pub secret: Option<(String, String)>,
    /// The GitRepository (namespace, name) whose Secret `secret` is, when the app names no
    /// `git.secretRef` of its own.
    pub secret_of_repository: Option<(String, String)>,
}

impl GitLocation {
    /// The URL safe to show in status and events.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Which credentials reach the repository, in words for messages.
    pub fn credentials(&self) -> String {
        match (&self.secret, &self.secret_of_repository) {
            (Some((namespace, name)), Some((repo_namespace, repo_name))) => format!(
                "the Secret {namespace}/{name} of GitRepository {repo_namespace}/{repo_name} \
                 (the ManagedApp has no spec.git.secretRef)"
            ),
            (Some((namespace, name)), None) => {
                format!("the Secret {namespace}/{name} (spec.git.secretRef)")
            }
            (None, _) => "no credentials (no spec.git.secretRef, and the GitRepository names no \
                          Secret)"
                .to_owned(),
        }
    }
}

/// The app's Git location: `spec.git` where set, else the deploying GitRepository's.
pub async fn locate(
    ctx: &Context,
    app: &ManagedApp,
    chain: &[PlannedFluxObject],
) -> Result<GitLocation, Problem> {
    match named_location(app) {
        Some(named) => Ok(named),
        None => location(app, git_source(&ctx.cluster, chain).await),
    }
}

/// The location when the app names both its repository and its branch.
fn named_location(app: &ManagedApp) -> Option<GitLocation> {
    let git = &app.spec.git;
    Some(GitLocation {
        url: git.url.clone()?,
        branch: git.branch.clone()?,
        secret: git
            .secret_ref
            .as_ref()
            .map(|s| (app.namespace().unwrap_or_default(), s.name.clone())),
        secret_of_repository: None,
    })
}

/// The app's Git location from `spec.git` and the GitRepository Flux deploys it from
/// (`source`, used only when `spec.git` lacks the URL or the branch). The branch defaults
/// to the one the GitRepository follows; one that follows no branch is refused.
pub fn location(
    app: &ManagedApp,
    source: Result<GitSource, ClusterError>,
) -> Result<GitLocation, Problem> {
    if let Some(named) = named_location(app) {
        return Ok(named);
    }
    let namespace = app.namespace().unwrap_or_default();
    let git = &app.spec.git;
    let own_secret = git
        .secret_ref
        .as_ref()
        .map(|s| (namespace.clone(), s.name.clone()));
    let source = source.map_err(|e| Problem::from(e).with_reason("GitSourceUnknown"))?;
    let branch = match &git.branch {
        Some(branch) => branch.clone(),
        None => source
            .branch()
            .map_err(|why| Problem::terminal(GIT_REF_NOT_BRANCH, why))?
            .to_owned(),
    };
    let borrowed = match (&own_secret, source.secret) {
        (None, Some(name)) => Some((source.repository.0.clone(), name)),
        _ => None,
    };
    Ok(GitLocation {
        url: git.url.clone().unwrap_or(source.url),
        branch,
        secret_of_repository: borrowed.as_ref().map(|_| source.repository.clone()),
        secret: own_secret.or(borrowed),
    })
}

/// The reason under which an app whose GitRepository follows no branch is refused.
pub const GIT_REF_NOT_BRANCH: &str = "GitRefNotBranch";

/// A Secret's decoded data; `missing` is the problem reason when it does not exist.
pub async fn secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
    what: &str,
    missing: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Problem> {
    let secret = Api::<Secret>::namespaced(ctx.cluster.client().clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            Problem::retryable(
                "ApiError",
                format!("reading Secret {namespace}/{name}: {}", describe(&e)),
            )
        })?
        .ok_or_else(|| {
            Problem::terminal(
                missing,
                format!("the {what} Secret {namespace}/{name} does not exist"),
            )
        })?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// Opens the repository at `location` with the credentials of its Secret.
pub async fn open(ctx: &Context, location: &GitLocation) -> Result<Arc<dyn GitRepo>, Problem> {
    let auth = match &location.secret {
        None => GitAuth::Anonymous,
        Some((namespace, name)) => {
            let data =
                secret_data(ctx, namespace, name, "Git credentials", "GitSecretNotFound").await?;
            GitAuth::from_secret_data(&data).map_err(|e| {
                Problem::terminal(
                    "GitSecretInvalid",
                    format!("Secret {namespace}/{name}: {e}"),
                )
            })?
        }
    };
    let spec = RemoteSpec {
        url: location.url.clone(),
        branch: location.branch.clone(),
        auth,
    };
    let repo = Git2Repo::open(ctx.settings.git.clone(), spec).map_err(Problem::from)?;
    Ok(Arc::new(repo))
}

/// The app's version files at the branch head, with its version fields located in them.
pub struct VersionFiles {
    /// The head commit they were read at.
    pub head: String,
    /// Every file of the directories holding version files, as text.
    pub files: BTreeMap<String, String>,
    /// Where each version field is, and its value.
    pub fields: Vec<ResolvedField>,
}

/// Reads the app's version files at the branch head and locates its version fields.
pub async fn version_fields(repo: &dyn GitRepo, app: &ManagedApp) -> Result<VersionFiles, Problem> {
    let (head, files) = read_version_files(repo, app).await?;
    let fields = locate_fields(&app.spec, &files).map_err(Problem::from)?;
    Ok(VersionFiles {
        head,
        files,
        fields,
    })
}

/// The files of every directory holding the app's version files (`git.file`'s directory and
/// each `versions[].file`'s), as text, with the head commit of the first read.
pub async fn read_version_files(
    repo: &dyn GitRepo,
    app: &ManagedApp,
) -> Result<(String, BTreeMap<String, String>), Problem> {
    let mut directories = BTreeSet::from([directory_of(&app.spec.git.file).to_owned()]);
    directories.extend(
        app.spec
            .versions
            .iter()
            .filter_map(|v| v.file.as_deref())
            .map(|f| directory_of(f).to_owned()),
    );
    let mut files = BTreeMap::new();
    let mut commit = None;
    for directory in directories {
        let DirectoryAtHead {
            commit: head,
            files: found,
        } = repo
            .read_directory(&directory)
            .await
            .map_err(Problem::from)?;
        commit.get_or_insert(head);
        for (name, bytes) in found {
            let path = if directory.is_empty() {
                name
            } else {
                format!("{directory}/{name}")
            };
            // Files that are not text are not version files; skip rather than fail on them.
            if let Ok(text) = text_from_bytes(&bytes) {
                files.insert(path, text.to_owned());
            }
        }
    }
    Ok((commit.unwrap_or_default(), files))
}
