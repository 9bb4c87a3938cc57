//! A local bare mirror of a Git remote: fetch one branch (with optional basic-auth
//! credentials) and read the files under a path of one exact commit.

use anyhow::{Context, Result, anyhow};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Basic-auth credentials for `http(s)://` remotes (Flux's Secret `username`/`password`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A bare repository in a temporary directory that fetches from any remote URL.
/// Cloning is cheap: clones share the same repository.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Mutex<MirrorInner>>,
}

struct MirrorInner {
    repo: git2::Repository,
    rewrites: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

impl Mirror {
    /// An empty mirror. `rewrites` work like git's `url.<base>.insteadOf`: a URL starting
    /// with the first string is fetched from the second plus the rest — e.g.
    /// (`https://git.sim.test/`, `file:///`) serves `https://` URLs, which Flux's CRD
    /// requires, from local bare repositories.
    pub fn new(rewrites: Vec<(String, String)>) -> Result<Mirror> {
        let dir = tempfile::tempdir().context("creating a mirror directory")?;
        let repo = git2::Repository::init_bare(dir.path()).context("initialising a mirror")?;
        Ok(Mirror {
            inner: Arc::new(Mutex::new(MirrorInner {
                repo,
                rewrites,
                _dir: dir,
            })),
        })
    }

    /// Fetches `branch` from `url` and returns the commit SHA its head points to.
    /// Blocking: call from `spawn_blocking`.
    pub fn fetch(&self, url: &str, branch: &str, creds: Option<&Credentials>) -> Result<String> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("mirror lock poisoned"))?;
        let url = inner
            .rewrites
            .iter()
            .find_map(|(from, to)| {
                url.strip_prefix(from.as_str())
                    .map(|rest| format!("{to}{rest}"))
            })
            .unwrap_or_else(|| url.to_owned());
        let url = url.as_str();
        let local = format!("refs/mirror/{}", url_key(url));
        let refspec = format!("+refs/heads/{branch}:{local}/{branch}");
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut offered = false;
        if let Some(c) = creds.cloned() {
            callbacks.credentials(move |_, _, _| {
                // libgit2 asks again after a rejection; answer once so bad credentials fail.
                if offered {
                    return Err(git2::Error::from_str("credentials rejected"));
                }
                offered = true;
                git2::Cred::userpass_plaintext(&c.username, &c.password)
            });
        }
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks);
        let mut remote = inner
            .repo
            .remote_anonymous(url)
            .with_context(|| format!("remote {url}"))?;
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .with_context(|| format!("fetching branch {branch} from {url}"))?;
        let reference = inner
            .repo
            .find_reference(&format!("{local}/{branch}"))
            .with_context(|| format!("branch {branch} not found in {url}"))?;
        let oid = reference
            .peel_to_commit()
            .with_context(|| format!("branch {branch} of {url} is not a commit"))?
            .id();
        Ok(oid.to_string())
    }

    /// Commit `sha`'s `gpgsig` signature (`None` when unsigned) and the commit object
    /// without that header — what a signature covers. Blocking: call from `spawn_blocking`.
    pub fn commit_signature(&self, sha: &str) -> Result<(Option<String>, Vec<u8>)> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("mirror lock poisoned"))?;
        let oid = git2::Oid::from_str(sha).with_context(|| format!("bad commit id {sha}"))?;
        match inner.repo.extract_signature(&oid, Some("gpgsig")) {
            Ok((signature, payload)) => Ok((
                Some(String::from_utf8_lossy(&signature).into_owned()),
                payload.to_vec(),
            )),
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                let object = inner
                    .repo
                    .find_object(oid, Some(git2::ObjectType::Commit))
                    .with_context(|| format!("commit {sha} not fetched"))?;
                let raw = inner.repo.odb()?.read(object.id())?.data().to_vec();
                Ok((None, raw))
            }
            Err(e) => Err(anyhow!("reading the signature of commit {sha}: {e}")),
        }
    }

    /// Whether the mirror already holds commit `sha`.
    pub fn has_commit(&self, sha: &str) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        git2::Oid::from_str(sha)
            .and_then(|oid| inner.repo.find_commit(oid))
            .is_ok()
    }

    /// Every file under `path` at commit `sha`, keyed by its path relative to `path`
    /// (`/`-separated). A missing path is an error, like Flux's "path not found".
    /// Blocking: call from `spawn_blocking`.
    pub fn files(&self, sha: &str, path: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("mirror lock poisoned"))?;
        let repo = &inner.repo;
        let oid = git2::Oid::from_str(sha).with_context(|| format!("bad commit id {sha}"))?;
        let commit = repo
            .find_commit(oid)
            .with_context(|| format!("commit {sha} not fetched"))?;
        let root = commit.tree().context("reading the commit tree")?;
        let clean = clean_path(path);
        let tree = if clean.is_empty() {
            root
        } else {
            root.get_path(Path::new(&clean))
                .map_err(|_| anyhow!("kustomization path not found: {path}"))?
                .to_object(repo)?
                .peel_to_tree()
                .map_err(|_| anyhow!("kustomization path is not a directory: {path}"))?
        };
        let mut files = BTreeMap::new();
        let mut failure = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(git2::ObjectType::Blob) {
                return git2::TreeWalkResult::Ok;
            }
            let name = entry.name().unwrap_or_default();
            match entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
                Ok(blob) => {
                    files.insert(format!("{dir}{name}"), blob.content().to_vec());
                    git2::TreeWalkResult::Ok
                }
                Err(e) => {
                    failure = Some(anyhow!("reading {dir}{name}: {e}"));
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .ok();
        match failure {
            Some(e) => Err(e),
            None => Ok(files),
        }
    }
}

/// `./apps/x/` → `apps/x`; `./` → ``.
pub fn clean_path(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A ref-safe key for a URL, so one mirror can serve several remotes.
fn url_key(url: &str) -> String {
    url.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
