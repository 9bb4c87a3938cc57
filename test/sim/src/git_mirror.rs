//! A local bare mirror of a Git remote: fetch one reference (a branch, a tag, any full ref
//! name) or look for one commit, with optional basic-auth credentials, and read the files
//! under a path of one exact commit.

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

impl MirrorInner {
    /// `url` after the first matching `insteadOf` rewrite.
    fn rewrite(&self, url: &str) -> String {
        self.rewrites
            .iter()
            .find_map(|(from, to)| {
                url.strip_prefix(from.as_str())
                    .map(|rest| format!("{to}{rest}"))
            })
            .unwrap_or_else(|| url.to_owned())
    }

    /// Fetches `refspecs` from `url`, offering `creds` once when the server asks.
    fn fetch(
        &self,
        url: &str,
        refspecs: &[String],
        what: &str,
        creds: Option<&Credentials>,
    ) -> Result<()> {
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
        let mut remote = self
            .repo
            .remote_anonymous(url)
            .with_context(|| format!("remote {url}"))?;
        let specs: Vec<&str> = refspecs.iter().map(String::as_str).collect();
        remote
            .fetch(&specs, Some(&mut options), None)
            .with_context(|| format!("fetching {what} from {url}"))?;
        Ok(())
    }
}

/// `branch main` for `refs/heads/main`, `tag v1` for `refs/tags/v1`, else the name.
fn describe_ref(name: &str) -> String {
    if let Some(branch) = name.strip_prefix("refs/heads/") {
        format!("branch {branch}")
    } else if let Some(tag) = name.strip_prefix("refs/tags/") {
        format!("tag {tag}")
    } else {
        format!("reference {name}")
    }
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
        self.fetch_ref(url, &format!("refs/heads/{branch}"), creds)
    }

    /// Fetches the full reference `name` (`refs/heads/main`, `refs/tags/v1.0.0`,
    /// `refs/pull/1/head`) from `url` and returns the commit it points to (an annotated tag
    /// peeled to its commit). Blocking: call from `spawn_blocking`.
    pub fn fetch_ref(&self, url: &str, name: &str, creds: Option<&Credentials>) -> Result<String> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("mirror lock poisoned"))?;
        let url = inner.rewrite(url);
        let local = format!("refs/mirror/{}/{name}", url_key(&url));
        inner.fetch(
            &url,
            &[format!("+{name}:{local}")],
            &describe_ref(name),
            creds,
        )?;
        let reference = inner
            .repo
            .find_reference(&local)
            .with_context(|| format!("{} not found in {url}", describe_ref(name)))?;
        let oid = reference
            .peel_to_commit()
            .with_context(|| format!("{} of {url} is not a commit", describe_ref(name)))?
            .id();
        Ok(oid.to_string())
    }

    /// Fetches every branch of `url` (or only `branch`) and returns `sha` when the mirror
    /// then holds that commit. Blocking: call from `spawn_blocking`.
    pub fn fetch_commit(
        &self,
        url: &str,
        branch: Option<&str>,
        sha: &str,
        creds: Option<&Credentials>,
    ) -> Result<String> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("mirror lock poisoned"))?;
        let url = inner.rewrite(url);
        let heads = branch.map_or_else(|| "refs/heads/*".to_owned(), |b| format!("refs/heads/{b}"));
        let local = format!("refs/mirror/{}/{heads}", url_key(&url));
        let what = branch.map_or_else(|| "every branch".to_owned(), |b| format!("branch {b}"));
        inner.fetch(&url, &[format!("+{heads}:{local}")], &what, creds)?;
        let oid = git2::Oid::from_str(sha).with_context(|| format!("bad commit id {sha}"))?;
        inner
            .repo
            .find_commit(oid)
            .map(|c| c.id().to_string())
            .map_err(|_| anyhow!("unable to resolve commit object for '{sha}' in {url}"))
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
