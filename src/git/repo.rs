//! [`Git2Repo`]: the libgit2 implementation of [`GitRepo`] — fetch into the cache, read blobs,
//! build commits from trees, push with race retries — plus its async wrappers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use git2::{AutotagOption, ErrorCode, FetchOptions, FetchPrune, Oid, PushOptions, Repository};

use super::auth::GitAuth;
use super::cache;
use super::error::GitError;
use super::net::Net;
use super::remote::{RemoteUrl, Transport};
use super::signing::SigningKey;
use super::trailers;
use super::{
    CommitInfo, CommitOutcome, CommitRequest, DirectoryAtHead, EditResult, FileAtHead, FileEdit,
    GitConfig, GitRepo, PushAccess, RemoteSpec,
};

/// Local ref our commit is pushed from (libgit2 pushes refs, not bare object ids).
const PUSH_REF: &str = "refs/fluxgate/push";

/// Extra time the async wrapper grants beyond the operation budget before giving up on the
/// blocking worker (which then finishes on its own when libgit2's I/O timeouts fire).
const WORKER_GRACE: Duration = Duration::from_secs(5);

/// libgit2's connect and I/O timeouts are process globals without synchronisation; set
/// them once, before the first network operation of the process.
static TIMEOUTS: Once = Once::new();

/// One branch of one repository through a local clone cache. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Git2Repo {
    inner: Arc<Inner>,
}

/// Everything about one remote + branch that operations need; shared by clones of a handle.
pub(super) struct Inner {
    pub(super) url: RemoteUrl,
    pub(super) branch: String,
    pub(super) auth: GitAuth,
    pub(super) config: GitConfig,
    dir: PathBuf,
    lock_file: PathBuf,
    tracking_ref: String,
    /// Values that must never appear in messages.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Git2Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git2Repo")
            .field("remote", &self.inner.url.redacted)
            .field("branch", &self.inner.branch)
            .field("cache", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Removes the raw URL and every secret from a message (libgit2 messages can echo URLs).
    pub(super) fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.url.raw, &self.url.redacted);
        for secret in &self.secrets {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    pub(super) fn remote(&self) -> String {
        self.url.redacted.clone()
    }

    pub(super) fn config_error(&self, detail: impl Into<String>) -> GitError {
        GitError::Config {
            remote: self.remote(),
            detail: self.scrub(&detail.into()),
        }
    }

    pub(super) fn corrupt(&self, err: &git2::Error) -> GitError {
        GitError::Corrupt {
            remote: self.remote(),
            dir: self.dir.clone(),
            detail: self.scrub(err.message()),
        }
    }

    fn invalid_path(&self, path: &str, reason: impl Into<String>) -> GitError {
        GitError::InvalidPath {
            remote: self.remote(),
            branch: self.branch.clone(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(super) fn timeout(&self, operation: &'static str) -> GitError {
        GitError::Timeout {
            remote: self.remote(),
            branch: self.branch.clone(),
            operation,
            timeout: self.config.operation_timeout,
        }
    }
}

/// Checks a repository-relative path and splits it into components.
fn path_components(path: &str) -> Result<Vec<&str>, &'static str> {
    if path.is_empty() {
        return Err("the path is empty");
    }
    if path.starts_with('/') {
        return Err("the path must be relative to the repository root");
    }
    if path.contains(['\\', '\0']) {
        return Err("the path must use `/` separators and no NUL");
    }
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err("the path has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return Err("the path must not contain `.` or `..`"),
            p if p.eq_ignore_ascii_case(".git") => return Err("the path must not enter `.git`"),
            _ => {}
        }
    }
    Ok(parts)
}

impl Git2Repo {
    /// Prepares a handle for `spec` under `config.cache_dir`. Validates the URL, branch and
    /// credentials; does no network I/O (the first operation clones).
    pub fn open(config: GitConfig, spec: RemoteSpec) -> Result<Git2Repo, GitError> {
        let redacted = super::redact_url(&spec.url);
        let url = RemoteUrl::parse(&spec.url).ok_or_else(|| GitError::Config {
            remote: redacted.clone(),
            detail: "unsupported URL: use https://, http://, ssh://, user@host:path or file://"
                .to_owned(),
        })?;
        let mut secrets = spec.auth.secrets();
        secrets.extend(url.password.clone());
        if matches!(url.transport, Transport::Https | Transport::Http) && url.password.is_none() {
            // A lone username in an HTTPS URL is usually a token (`https://TOKEN@host`).
            secrets.extend(url.user.clone());
        }
        let tracking_ref = format!("refs/remotes/origin/{}", spec.branch);
        let dir = config.cache_dir.join(cache::dir_name(&url, &spec.branch));
        let lock_file = dir.with_extension("lock");
        let inner = Inner {
            url,
            branch: spec.branch,
            auth: spec.auth,
            config,
            dir,
            lock_file,
            tracking_ref,
            secrets,
        };
        if inner.branch.is_empty()
            || inner.branch.starts_with('-')
            || !git2::Reference::is_valid_name(&format!("refs/heads/{}", inner.branch))
        {
            return Err(
                inner.config_error(format!("{:?} is not a valid branch name", inner.branch))
            );
        }
        match (&inner.auth, inner.url.transport) {
            (GitAuth::Ssh(_), Transport::Ssh) | (_, Transport::File) => {}
            (_, Transport::Ssh) => {
                return Err(inner.config_error(
                    "an SSH URL needs a secret with `identity` (private key) and `known_hosts`",
                ));
            }
            (GitAuth::Ssh(_), _) => {
                return Err(inner.config_error(
                    "the secret holds an SSH key (`identity`) but the URL is not an SSH URL; use \
                     ssh://… or user@host:path, or `username`/`password` for HTTPS",
                ));
            }
            (GitAuth::Basic { .. }, Transport::Http) => {
                tracing::warn!(remote = %inner.url.redacted, "sending git credentials over plain http");
            }
            _ => {}
        }
        std::fs::create_dir_all(&inner.config.cache_dir).map_err(|e| GitError::Local {
            remote: inner.remote(),
            detail: format!(
                "cannot create cache directory {}: {e}",
                inner.config.cache_dir.display()
            ),
        })?;
        let (connect, io) = (inner.config.connect_timeout, inner.config.io_timeout);
        TIMEOUTS.call_once(|| {
            let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: libgit2 reads these globals when it opens or polls a socket; `Once`
            // makes this the only write, and it happens before this process's first git
            // network operation (all of which go through a `Git2Repo`).
            unsafe {
                let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
                let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
            }
        });
        Ok(Git2Repo {
            inner: Arc::new(inner),
        })
    }

    /// The shared state, for the network module's tests.
    #[cfg(test)]
    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The cache directory of this remote + branch (for operators and tests).
    pub fn cache_path(&self) -> &Path {
        &self.inner.dir
    }

    /// Blocking [`GitRepo::head`].
    pub fn head_blocking(&self) -> Result<String, GitError> {
        self.run("fetch", |s| s.fetch().map(|oid| oid.to_string()))
    }

    /// Blocking [`GitRepo::read_file`].
    pub fn read_file_blocking(&self, path: &str) -> Result<FileAtHead, GitError> {
        path_components(path).map_err(|reason| self.inner.invalid_path(path, reason))?;
        self.run("fetch", |s| {
            let head = s.fetch()?;
            let tree = s.tree_of(head)?;
            let contents = s.read_path(&tree, path)?;
            Ok(FileAtHead {
                commit: head.to_string(),
                contents,
            })
        })
    }

    /// Blocking [`GitRepo::read_directory`].
    pub fn read_directory_blocking(&self, dir: &str) -> Result<DirectoryAtHead, GitError> {
        self.read_at_head(dir, false)
    }

    /// Blocking [`GitRepo::read_tree`].
    pub fn read_tree_blocking(&self, dir: &str) -> Result<DirectoryAtHead, GitError> {
        self.read_at_head(dir, true)
    }

    /// The files of `dir` at the fetched head: its own files, or with `subtree` every file
    /// below it.
    fn read_at_head(&self, dir: &str, subtree: bool) -> Result<DirectoryAtHead, GitError> {
        if !dir.is_empty() {
            path_components(dir).map_err(|reason| self.inner.invalid_path(dir, reason))?;
        }
        self.run("fetch", |s| {
            let head = s.fetch()?;
            let tree = s.tree_of(head)?;
            let files = if subtree {
                s.read_subtree(&tree, dir)?
            } else {
                s.read_directory(&tree, dir)?
            };
            Ok(DirectoryAtHead {
                commit: head.to_string(),
                files,
            })
        })
    }

    /// Blocking [`GitRepo::find_commit_by_trailer`].
    pub fn find_commit_by_trailer_blocking(
        &self,
        key: &str,
        value: &str,
        max_depth: usize,
    ) -> Result<Option<CommitInfo>, GitError> {
        self.run("fetch", |s| {
            let head = s.fetch()?;
            s.find_by_trailer(head, key, value, max_depth)
        })
    }

    /// Blocking [`GitRepo::contains`].
    pub fn contains_blocking(&self, descendant: &str, ancestor: &str) -> Result<bool, GitError> {
        if descendant.eq_ignore_ascii_case(ancestor) {
            return Ok(true);
        }
        let (Ok(descendant), Ok(ancestor)) = (Oid::from_str(descendant), Oid::from_str(ancestor))
        else {
            return Ok(false);
        };
        self.run("fetch", |s| {
            s.fetch()?;
            if s.repo.find_commit(descendant).is_err() || s.repo.find_commit(ancestor).is_err() {
                return Ok(false);
            }
            s.repo
                .graph_descendant_of(descendant, ancestor)
                .map_err(|e| self.inner.corrupt(&e))
        })
    }

    /// Blocking [`GitRepo::commit_and_push`].
    pub fn commit_and_push_blocking(
        &self,
        mut request: CommitRequest,
    ) -> Result<CommitOutcome, GitError> {
        let inner = &self.inner;
        let message = trailers::format_message(&request.message, &request.trailers)
            .map_err(|e| inner.config_error(format!("commit message: {e}")))?;
        for edit in &request.edits {
            path_components(&edit.path).map_err(|reason| inner.invalid_path(&edit.path, reason))?;
        }
        let author = git2::Signature::now(&request.author.name, &request.author.email)
            .map_err(|e| inner.config_error(format!("commit author: {}", e.message())))?;
        self.run("push", |s| {
            let attempts = inner.config.push_attempts.max(1);
            for attempt in 1..=attempts {
                s.check_deadline()?;
                let head = s.fetch()?;
                if let Some((key, value)) = &request.idempotency
                    && let Some(commit) =
                        s.find_by_trailer(head, key, value, inner.config.idempotency_depth)?
                {
                    tracing::info!(remote = %inner.url.redacted, branch = %inner.branch,
                        sha = %commit.sha, "commit already on the branch; not committing again");
                    return Ok(CommitOutcome::AlreadyPushed { commit });
                }
                let parent = s.repo.find_commit(head).map_err(|e| inner.corrupt(&e))?;
                let base = parent.tree().map_err(|e| inner.corrupt(&e))?;
                let Some(tree) = s.apply_edits(&base, &mut request.edits)? else {
                    return Ok(CommitOutcome::NoChange {
                        head: head.to_string(),
                    });
                };
                let tree = s.repo.find_tree(tree).map_err(|e| inner.corrupt(&e))?;
                let oid = s.commit(&author, &message, &tree, &parent, request.signing.as_ref())?;
                match s.push(oid, head)? {
                    Push::Done => {
                        // Keep the tracking ref in step so the next fetch negotiates from here.
                        let _ =
                            s.repo
                                .reference(&inner.tracking_ref, oid, true, "fluxgate: pushed");
                        tracing::info!(remote = %inner.url.redacted, branch = %inner.branch,
                            sha = %oid, attempt, "pushed commit");
                        return Ok(CommitOutcome::Pushed {
                            commit: s.info(oid, &message),
                            attempts: attempt,
                        });
                    }
                    Push::Race => {
                        tracing::warn!(remote = %inner.url.redacted, branch = %inner.branch,
                            attempt, "push lost a race with another push; refetching");
                        if attempt < attempts {
                            s.backoff(attempt);
                        }
                    }
                    Push::Rejected(reason) => {
                        return Err(GitError::Rejected {
                            remote: inner.remote(),
                            branch: inner.branch.clone(),
                            reason: inner.scrub(&reason),
                        });
                    }
                }
            }
            Err(GitError::Conflict {
                remote: inner.remote(),
                branch: inner.branch.clone(),
                attempts,
            })
        })
    }

    /// Blocking [`GitRepo::push_access`]. Needs no cache: a detached remote connects, reads
    /// the receive-pack advertisement and hangs up.
    pub fn push_access_blocking(&self) -> Result<PushAccess, GitError> {
        let inner = &*self.inner;
        if inner.url.transport == Transport::File {
            return Ok(PushAccess::NotChecked);
        }
        // Bounded like one read: connecting plus one answer, never a whole operation's budget.
        let budget = (inner.config.connect_timeout + inner.config.io_timeout)
            .min(inner.config.operation_timeout);
        let net = Net::new(inner, Instant::now() + budget);
        let mut remote = git2::Remote::create_detached(inner.url.raw.as_str())
            .map_err(|e| inner.config_error(format!("bad remote: {}", e.message())))?;
        let connected = remote
            .connect_auth(git2::Direction::Push, Some(net.callbacks()), None)
            .map(drop);
        match connected {
            Ok(()) => Ok(PushAccess::Offered),
            Err(e) => match net.push_refusal(&e) {
                Some(detail) => Ok(PushAccess::Refused { detail }),
                None => Err(net.error(&e, "push check")),
            },
        }
    }

    /// Runs `op` with exclusive use of the cache; when the cache turns out to be corrupt, wipes
    /// it and runs `op` once more from a fresh clone.
    fn run<T>(
        &self,
        operation: &'static str,
        mut op: impl FnMut(&Session<'_>) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.config.operation_timeout;
        let _lock = cache::lock(&inner.dir, &inner.lock_file, deadline).map_err(|detail| {
            if Instant::now() >= deadline {
                inner.timeout(operation)
            } else {
                GitError::Local {
                    remote: inner.remote(),
                    detail,
                }
            }
        })?;
        let mut wiped = false;
        if cache::too_fragmented(&inner.dir) {
            tracing::info!(remote = %inner.url.redacted, cache = %inner.dir.display(),
                "git cache has too many packs; re-cloning");
            wiped = cache::wipe(&inner.dir).is_ok();
        }
        loop {
            let opened = cache::open_or_create(&inner.dir).and_then(|repo| {
                cache::validate(&repo, &inner.tracking_ref)?;
                Ok(repo)
            });
            let result = match opened {
                Ok(repo) => op(&Session {
                    inner,
                    repo,
                    deadline,
                    operation,
                }),
                Err(e) => Err(inner.corrupt(&e)),
            };
            match result {
                Err(GitError::Corrupt { detail, .. }) if !wiped => {
                    tracing::warn!(remote = %inner.url.redacted, cache = %inner.dir.display(),
                        %detail, "git cache is corrupt; re-cloning");
                    cache::wipe(&inner.dir).map_err(|e| GitError::Local {
                        remote: inner.remote(),
                        detail: format!("cannot remove corrupt cache {}: {e}", inner.dir.display()),
                    })?;
                    wiped = true;
                }
                other => return other,
            }
        }
    }

    /// Runs a blocking operation on tokio's blocking pool, bounded by the operation budget.
    async fn spawn<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Git2Repo) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let this = self.clone();
        let limit = self.inner.config.operation_timeout + WORKER_GRACE;
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || f(&this))).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitError::Local {
                remote: self.inner.remote(),
                detail: format!("git worker stopped unexpectedly: {join}"),
            }),
            Err(_) => Err(self.inner.timeout(operation)),
        }
    }
}

impl GitRepo for Git2Repo {
    fn remote(&self) -> &str {
        &self.inner.url.redacted
    }

    fn branch(&self) -> &str {
        &self.inner.branch
    }

    fn head(&self) -> BoxFuture<'_, Result<String, GitError>> {
        Box::pin(self.spawn("fetch", |r| r.head_blocking()))
    }

    fn read_file(&self, path: &str) -> BoxFuture<'_, Result<FileAtHead, GitError>> {
        let path = path.to_owned();
        Box::pin(self.spawn("fetch", move |r| r.read_file_blocking(&path)))
    }

    fn read_directory(&self, dir: &str) -> BoxFuture<'_, Result<DirectoryAtHead, GitError>> {
        let dir = dir.to_owned();
        Box::pin(self.spawn("fetch", move |r| r.read_directory_blocking(&dir)))
    }

    fn read_tree(&self, dir: &str) -> BoxFuture<'_, Result<DirectoryAtHead, GitError>> {
        let dir = dir.to_owned();
        Box::pin(self.spawn("fetch", move |r| r.read_tree_blocking(&dir)))
    }

    fn commit_and_push(
        &self,
        request: CommitRequest,
    ) -> BoxFuture<'_, Result<CommitOutcome, GitError>> {
        Box::pin(self.spawn("push", move |r| r.commit_and_push_blocking(request)))
    }

    fn push_access(&self) -> BoxFuture<'_, Result<PushAccess, GitError>> {
        Box::pin(self.spawn("push check", |r| r.push_access_blocking()))
    }

    fn contains(&self, descendant: &str, ancestor: &str) -> BoxFuture<'_, Result<bool, GitError>> {
        let (descendant, ancestor) = (descendant.to_owned(), ancestor.to_owned());
        Box::pin(self.spawn("fetch", move |r| {
            r.contains_blocking(&descendant, &ancestor)
        }))
    }

    fn find_commit_by_trailer(
        &self,
        key: &str,
        value: &str,
        max_depth: usize,
    ) -> BoxFuture<'_, Result<Option<CommitInfo>, GitError>> {
        let (key, value) = (key.to_owned(), value.to_owned());
        Box::pin(self.spawn("fetch", move |r| {
            r.find_commit_by_trailer_blocking(&key, &value, max_depth)
        }))
    }
}

/// Outcome of one push attempt.
enum Push {
    Done,
    Race,
    Rejected(String),
}

/// Server messages that mean "someone else moved the branch first": worth a retry.
pub(super) fn is_race(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "non-fast-forward",
        "fetch first",
        "stale info",
        "cannot lock ref",
        "failed to update ref",
        // libgit2's local transport when another writer holds the ref lock.
        "failed to lock",
        "incorrect old value",
    ]
    .iter()
    .any(|s| r.contains(s))
}

/// One operation on an opened cache.
struct Session<'a> {
    inner: &'a Inner,
    repo: Repository,
    deadline: Instant,
    operation: &'static str,
}

impl Session<'_> {
    fn check_deadline(&self) -> Result<(), GitError> {
        if Instant::now() >= self.deadline {
            Err(self.inner.timeout(self.operation))
        } else {
            Ok(())
        }
    }

    /// Sleeps before retrying a lost race: doubling from `config.backoff`, with up to 50 %
    /// jitter so that competing writers spread out, never past the deadline.
    fn backoff(&self, attempt: u32) {
        let base = self.inner.config.backoff;
        let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
        let capped = exp.min(Duration::from_secs(5));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = capped.mul_f64(f64::from(nanos % 500) / 1000.0);
        let left = self.deadline.saturating_duration_since(Instant::now());
        std::thread::sleep((capped + jitter).min(left));
    }

    /// Writes the commit object (signed when a key is given: the `gpgsig` header carries the
    /// signature of the object without it, as `git commit -S` makes it).
    fn commit(
        &self,
        author: &git2::Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parent: &git2::Commit<'_>,
        signing: Option<&SigningKey>,
    ) -> Result<Oid, GitError> {
        let inner = self.inner;
        let Some(key) = signing else {
            return self
                .repo
                .commit(None, author, author, message, tree, &[parent])
                .map_err(|e| inner.corrupt(&e));
        };
        let buffer = self
            .repo
            .commit_create_buffer(author, author, message, tree, &[parent])
            .map_err(|e| inner.corrupt(&e))?;
        let content = std::str::from_utf8(&buffer)
            .map_err(|_| inner.config_error("the commit to sign is not valid UTF-8"))?;
        let signature = key
            .sign(&buffer)
            .map_err(|e| inner.config_error(e.to_string()))?;
        self.repo
            .commit_signed(content, &signature, Some("gpgsig"))
            .map_err(|e| inner.corrupt(&e))
    }

    /// Fetches the branch into the tracking ref and returns its commit.
    fn fetch(&self) -> Result<Oid, GitError> {
        let inner = self.inner;
        self.check_deadline()?;
        let net = Net::new(inner, self.deadline);
        let mut remote = self
            .repo
            .remote_anonymous(&inner.url.raw)
            .map_err(|e| inner.config_error(format!("bad remote: {}", e.message())))?;
        let refspec = format!("+refs/heads/{0}:{1}", inner.branch, inner.tracking_ref);
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(net.callbacks())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false)
            // Drops the tracking ref when the branch was deleted on the remote.
            .prune(FetchPrune::On);
        let started = Instant::now();
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(|e| net.error(&e, self.operation))?;
        drop(options);
        let stats = remote.stats();
        tracing::debug!(remote = %inner.url.redacted, branch = %inner.branch,
            objects = stats.received_objects(), bytes = stats.received_bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64, "fetched");
        match self.repo.refname_to_id(&inner.tracking_ref) {
            Ok(oid) => Ok(oid),
            Err(e) if e.code() == ErrorCode::NotFound => Err(GitError::BranchNotFound {
                remote: inner.remote(),
                branch: inner.branch.clone(),
            }),
            Err(e) => Err(inner.corrupt(&e)),
        }
    }

    fn tree_of(&self, commit: Oid) -> Result<git2::Tree<'_>, GitError> {
        self.repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| self.inner.corrupt(&e))
    }

    /// The blob at `path` in `tree`; `None` when absent. Directories, symlinks, submodules
    /// and oversized files are errors.
    fn read_path(&self, tree: &git2::Tree<'_>, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let inner = self.inner;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(inner.corrupt(&e)),
        };
        match entry.kind() {
            Some(git2::ObjectType::Blob) if entry.filemode() == 0o120000 => {
                Err(inner.invalid_path(path, "is a symbolic link; point the path at its target"))
            }
            Some(git2::ObjectType::Blob) => {
                let blob = self
                    .repo
                    .find_blob(entry.id())
                    .map_err(|e| inner.corrupt(&e))?;
                let size = blob.size() as u64;
                if size > inner.config.max_file_size {
                    return Err(inner.invalid_path(
                        path,
                        format!(
                            "is {size} bytes, over the {} byte limit",
                            inner.config.max_file_size
                        ),
                    ));
                }
                Ok(Some(blob.content().to_vec()))
            }
            Some(git2::ObjectType::Tree) => Err(inner.invalid_path(path, "is a directory")),
            _ => Err(inner.invalid_path(path, "is a submodule, not a file")),
        }
    }

    /// Directory `dir` of `tree` (`tree` itself for `""`); `None` when it does not exist.
    fn directory<'t>(
        &'t self,
        tree: &git2::Tree<'t>,
        dir: &str,
    ) -> Result<Option<git2::Tree<'t>>, GitError> {
        if dir.is_empty() {
            return Ok(Some(tree.clone()));
        }
        match tree.get_path(Path::new(dir)) {
            Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => self
                .repo
                .find_tree(entry.id())
                .map(Some)
                .map_err(|e| self.inner.corrupt(&e)),
            Ok(_) => Err(self.inner.invalid_path(dir, "is a file, not a directory")),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.inner.corrupt(&e)),
        }
    }

    /// The regular files directly inside `dir` of `tree` (the root for `""`), by name; an
    /// absent directory has none. Oversized files, links and submodules are skipped.
    fn read_directory(
        &self,
        tree: &git2::Tree<'_>,
        dir: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, GitError> {
        let inner = self.inner;
        let Some(tree) = self.directory(tree, dir)? else {
            return Ok(Default::default());
        };
        let mut files = std::collections::BTreeMap::new();
        for entry in tree.iter() {
            let (Ok(name), Some(git2::ObjectType::Blob)) = (entry.name(), entry.kind()) else {
                continue;
            };
            if entry.filemode() == 0o120000 {
                continue;
            }
            let blob = self
                .repo
                .find_blob(entry.id())
                .map_err(|e| inner.corrupt(&e))?;
            if (blob.size() as u64) <= inner.config.max_file_size {
                files.insert(name.to_owned(), blob.content().to_vec());
            }
        }
        Ok(files)
    }

    /// Every regular file under `dir` of `tree` (the root for `""`), however deep, by path
    /// relative to `dir`; an absent directory has none. Oversized files, links and
    /// submodules are skipped.
    fn read_subtree(
        &self,
        tree: &git2::Tree<'_>,
        dir: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, GitError> {
        let inner = self.inner;
        let Some(tree) = self.directory(tree, dir)? else {
            return Ok(Default::default());
        };
        let mut files = std::collections::BTreeMap::new();
        let mut failure = None;
        let walked = tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            let (Ok(name), Some(git2::ObjectType::Blob)) = (entry.name(), entry.kind()) else {
                return git2::TreeWalkResult::Ok;
            };
            if entry.filemode() == 0o120000 {
                return git2::TreeWalkResult::Ok;
            }
            match self.repo.find_blob(entry.id()) {
                Ok(blob) if (blob.size() as u64) <= inner.config.max_file_size => {
                    files.insert(format!("{parent}{name}"), blob.content().to_vec());
                    git2::TreeWalkResult::Ok
                }
                Ok(_) => git2::TreeWalkResult::Ok,
                Err(e) => {
                    failure = Some(inner.corrupt(&e));
                    git2::TreeWalkResult::Abort
                }
            }
        });
        match (failure, walked) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(inner.corrupt(&e)),
            (None, Ok(())) => Ok(files),
        }
    }

    /// Runs every edit on the tree it builds up; the new root tree, or `None` when nothing
    /// changed.
    fn apply_edits(
        &self,
        base: &git2::Tree<'_>,
        edits: &mut [FileEdit],
    ) -> Result<Option<Oid>, GitError> {
        let inner = self.inner;
        let mut root = base.id();
        let mut changed = false;
        for edit in edits.iter_mut() {
            let tree = self.repo.find_tree(root).map_err(|e| inner.corrupt(&e))?;
            let current = self.read_path(&tree, &edit.path)?;
            let result = (edit.edit)(current.as_deref()).map_err(|source| GitError::Edit {
                remote: inner.remote(),
                branch: inner.branch.clone(),
                path: edit.path.clone(),
                source,
            })?;
            let EditResult::Replace(bytes) = result else {
                continue;
            };
            if current.as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            if bytes.len() as u64 > inner.config.max_file_size {
                return Err(
                    inner.invalid_path(&edit.path, "the edited file is over the size limit")
                );
            }
            let blob = self.repo.blob(&bytes).map_err(|e| inner.corrupt(&e))?;
            let parts = path_components(&edit.path)
                .map_err(|reason| inner.invalid_path(&edit.path, reason))?;
            root = self.upsert(Some(&tree), &parts, blob, &edit.path)?;
            changed = true;
        }
        Ok(changed.then_some(root))
    }

    /// Writes `blob` at `parts` below `tree` (creating directories), keeping an existing
    /// file's mode (e.g. executable); returns the new tree.
    fn upsert(
        &self,
        tree: Option<&git2::Tree<'_>>,
        parts: &[&str],
        blob: Oid,
        path: &str,
    ) -> Result<Oid, GitError> {
        let inner = self.inner;
        let Some((name, rest)) = parts.split_first() else {
            return Err(inner.invalid_path(path, "the path is empty"));
        };
        let existing = tree.and_then(|t| t.get_name(name));
        let mut builder = self.repo.treebuilder(tree).map_err(|e| inner.corrupt(&e))?;
        if rest.is_empty() {
            let mode = match &existing {
                Some(e) if e.kind() == Some(git2::ObjectType::Blob) && e.filemode() != 0o120000 => {
                    e.filemode()
                }
                Some(_) => return Err(inner.invalid_path(path, "exists but is not a regular file")),
                None => 0o100644,
            };
            builder
                .insert(name, blob, mode)
                .map_err(|e| inner.corrupt(&e))?;
        } else {
            let subtree = match &existing {
                Some(e) if e.kind() == Some(git2::ObjectType::Tree) => {
                    Some(self.repo.find_tree(e.id()).map_err(|e| inner.corrupt(&e))?)
                }
                Some(_) => {
                    return Err(
                        inner.invalid_path(path, format!("`{name}` is a file, not a directory"))
                    );
                }
                None => None,
            };
            let child = self.upsert(subtree.as_ref(), rest, blob, path)?;
            builder
                .insert(name, child, 0o040000)
                .map_err(|e| inner.corrupt(&e))?;
        }
        builder.write().map_err(|e| inner.corrupt(&e))
    }

    /// Searches the newest `max_depth` first-parent commits from `head` for trailer
    /// `key: value`.
    fn find_by_trailer(
        &self,
        head: Oid,
        key: &str,
        value: &str,
        max_depth: usize,
    ) -> Result<Option<CommitInfo>, GitError> {
        let mut current = Some(
            self.repo
                .find_commit(head)
                .map_err(|e| self.inner.corrupt(&e))?,
        );
        let mut seen = 0;
        while let Some(commit) = current {
            if seen >= max_depth {
                break;
            }
            seen += 1;
            let message = String::from_utf8_lossy(commit.message_bytes());
            if trailers::has_trailer(&message, key, value) {
                return Ok(Some(self.info(commit.id(), &message)));
            }
            current = match commit.parent(0) {
                Ok(parent) => Some(parent),
                Err(e) if e.code() == ErrorCode::NotFound => None,
                Err(e) => return Err(self.inner.corrupt(&e)),
            };
        }
        Ok(None)
    }

    fn info(&self, oid: Oid, message: &str) -> CommitInfo {
        let sha = oid.to_string();
        CommitInfo {
            url: self.inner.url.commit_web_url(&sha),
            sha,
            message: message.to_owned(),
        }
    }

    /// Pushes `commit` (whose parent is `expected`, the head we fetched) to the branch,
    /// never forced.
    fn push(&self, commit: Oid, expected: Oid) -> Result<Push, GitError> {
        let inner = self.inner;
        self.check_deadline()?;
        if inner.url.transport == Transport::File {
            return self.push_local(commit, expected);
        }
        self.repo
            .reference(PUSH_REF, commit, true, "fluxgate: to push")
            .map_err(|e| inner.corrupt(&e))?;
        let net = Net::new(inner, self.deadline);
        let mut remote = self
            .repo
            .remote_anonymous(&inner.url.raw)
            .map_err(|e| inner.config_error(format!("bad remote: {}", e.message())))?;
        let refspec = format!("{PUSH_REF}:refs/heads/{}", inner.branch);
        let mut options = PushOptions::new();
        options.remote_callbacks(net.callbacks());
        let result = remote.push(&[refspec.as_str()], Some(&mut options));
        drop(options);
        match result {
            Ok(()) => match net.push_rejection.take() {
                None => Ok(Push::Done),
                Some(reason) if is_race(&reason) => Ok(Push::Race),
                // "pre-receive hook declined" alone hides why: the server's own words (e.g.
                // Gitea's "User permission denied for writing.") came as `remote:` lines.
                Some(reason) => Ok(Push::Rejected(match net.remote_messages() {
                    Some(said) => format!("{reason}; the server said: {said}"),
                    None => reason,
                })),
            },
            // libgit2 refuses locally when the remote ref moved to a commit we do not have.
            Err(e) if e.code() == ErrorCode::NotFastForward => Ok(Push::Race),
            Err(e) if is_race(e.message()) && net.failure().is_none() => Ok(Push::Race),
            Err(e) => Err(net.error(&e, self.operation)),
        }
    }
}

impl Session<'_> {
    /// Push to a repository on this machine. libgit2's local transport checks for a fast
    /// forward when it connects but then overwrites the ref unconditionally, so a push landing
    /// in between is silently lost. Instead: copy the missing objects ourselves, then move
    /// the branch with a compare-and-swap against `expected` (under git's own ref lock).
    fn push_local(&self, commit: Oid, expected: Oid) -> Result<Push, GitError> {
        let inner = self.inner;
        let network = |detail: String| GitError::Network {
            remote: inner.remote(),
            branch: inner.branch.clone(),
            detail: inner.scrub(&detail),
        };
        let target = Repository::open(&inner.url.path)
            .map_err(|e| network(format!("cannot open the repository: {}", e.message())))?;
        let branch_ref = format!("refs/heads/{}", inner.branch);
        if !target.is_bare()
            && target
                .head()
                .ok()
                .and_then(|h| h.name().ok().map(|n| n == branch_ref))
                .unwrap_or(false)
        {
            return Ok(Push::Rejected(format!(
                "refusing to update the checked-out branch {} of a non-bare repository",
                inner.branch
            )));
        }
        copy_missing_objects(&self.repo, &target, commit)
            .map_err(|e| network(format!("copying objects: {}", e.message())))?;
        match target.reference_matching(&branch_ref, commit, true, expected, "fluxgate: push") {
            Ok(_) => Ok(Push::Done),
            Err(e)
                if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked)
                    || is_race(e.message()) =>
            {
                Ok(Push::Race)
            }
            Err(e) => Err(network(format!("updating {branch_ref}: {}", e.message()))),
        }
    }
}

/// Copies the objects reachable from `commit` that `dst` lacks, children before parents,
/// so that `dst` never holds an object whose referents are missing (which would make the
/// "already there, skip it" shortcut wrong after an interrupted copy).
fn copy_missing_objects(
    src: &Repository,
    dst: &Repository,
    commit: Oid,
) -> Result<(), git2::Error> {
    let (src_odb, dst_odb) = (src.odb()?, dst.odb()?);
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    let mut stack = vec![commit];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || dst_odb.exists(id) {
            continue;
        }
        let object = src.find_object(id, None)?;
        match object.kind() {
            Some(git2::ObjectType::Commit) => {
                let c = object.peel_to_commit()?;
                stack.push(c.tree_id());
                stack.extend(c.parent_ids());
            }
            Some(git2::ObjectType::Tree) => {
                let t = object.peel_to_tree()?;
                // Submodule entries point into other repositories.
                stack.extend(
                    t.iter()
                        .filter(|e| e.kind() != Some(git2::ObjectType::Commit))
                        .map(|e| e.id()),
                );
            }
            _ => {}
        }
        order.push(id);
    }
    for id in order.into_iter().rev() {
        let object = src_odb.read(id)?;
        dst_odb.write(object.kind(), object.data())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated() {
        assert_eq!(
            path_components("apps/gitea/release.yaml"),
            Ok(vec!["apps", "gitea", "release.yaml"])
        );
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            ".git/config",
            "a\\b",
            "A/.GIT/x",
        ] {
            assert!(path_components(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn race_messages_are_recognised() {
        assert!(is_race("non-fast-forward"));
        assert!(is_race("[rejected] (fetch first)"));
        assert!(is_race(
            "failed to update ref: cannot lock ref 'refs/heads/main'"
        ));
        assert!(!is_race("pre-receive hook declined"));
        assert!(!is_race("protected branch hook declined"));
    }
}
