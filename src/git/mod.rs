//! Git repositories: read a file at a branch head, commit edits with Fluxgate's trailers and
//! push them — exactly once, safely against concurrent pushes — through a local clone cache.
//!
//! The [`GitRepo`] trait is what the workflow uses; [`Git2Repo`] implements it with libgit2
//! (git2). Every operation fetches first (incrementally, into a bare cache repository), works
//! on objects only (no working tree), and runs on tokio's blocking pool with a time budget.
//!
//! Push races are handled by making edits functions of the file's current contents: on a
//! non-fast-forward rejection we fetch, re-run each [`FileEdit`] on the new head (which may
//! now say "already done"), and push again, a bounded number of times. Idempotency across
//! crashes comes from the `Fluxgate-Request-UID` trailer: [`CommitRequest::idempotency`]
//! (or [`GitRepo::find_commit_by_trailer`]) finds a commit pushed before a crash.
//!
//! ```no_run
//! use fluxgate::git::*;
//! # async fn upgrade(secret_data: std::collections::BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
//! let repo = Git2Repo::open(
//!     GitConfig::new("/var/cache/fluxgate/git"),
//!     RemoteSpec {
//!         url: "https://github.com/acme/fleet.git".into(),
//!         branch: "main".into(),
//!         auth: GitAuth::from_secret_data(&secret_data)?,
//!     },
//! )?;
//! let edit = FileEdit::new("apps/gitea/release.yaml", |current| {
//!     let text = std::str::from_utf8(current.ok_or("file is missing")?)?;
//!     // The manifest module computes the new text; "already there" means Unchanged.
//!     Ok(match text.replace("version: 1.21.0", "version: 1.22.1") {
//!         new if new == text => EditResult::Unchanged,
//!         new => EditResult::Replace(new.into_bytes()),
//!     })
//! });
//! let outcome = repo
//!     .commit_and_push(CommitRequest {
//!         message: "Upgrade gitea to 1.22.1".into(),
//!         author: Author::new("Fluxgate", "fluxgate@example.com"),
//!         trailers: request_trailers("apps", "gitea-up", "4f1c…uid"),
//!         edits: vec![edit],
//!         idempotency: Some((REQUEST_UID_TRAILER.into(), "4f1c…uid".into())),
//!         signing: None,
//!     })
//!     .await?;
//! if let CommitOutcome::Pushed { commit, .. } | CommitOutcome::AlreadyPushed { commit } = outcome {
//!     println!("{} {:?}", commit.sha, commit.url);
//! }
//! # Ok(()) }
//! ```

mod auth;
mod cache;
mod error;
mod net;
mod remote;
mod repo;
mod signing;
mod trailers;

pub use auth::{AuthConfigError, GitAuth, KnownHosts, SecretString, SshAuth};
pub use error::{EditError, GitError};
pub use remote::redact_url;
pub use repo::Git2Repo;
pub use signing::{SigningKey, SigningKeyError};
pub use trailers::{
    REQUEST_TRAILER, REQUEST_UID_TRAILER, TrailerError, format_message, has_trailer,
    parse_trailers, request_trailers,
};

use futures::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;

/// Where and how to reach one branch of one repository.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    /// `https://…`, `http://…`, `ssh://…`, `user@host:path` or `file://…`.
    pub url: String,
    /// The branch to read from and push to.
    pub branch: String,
    /// Credentials, usually from [`GitAuth::from_secret_data`].
    pub auth: GitAuth,
}

/// Settings shared by all repositories of a process.
#[derive(Clone, Debug)]
pub struct GitConfig {
    /// Directory holding one bare clone per remote + branch (created if missing).
    pub cache_dir: PathBuf,
    /// Time to establish a TCP connection. Process-wide in libgit2: the first
    /// [`Git2Repo::open`] of the process sets it.
    pub connect_timeout: Duration,
    /// Time a single read or write on a connection may block. Process-wide, like
    /// `connect_timeout`.
    pub io_timeout: Duration,
    /// Budget for a whole operation (lock, fetch, edits, push, retries).
    pub operation_timeout: Duration,
    /// How many times a push that lost a race is retried in all.
    pub push_attempts: u32,
    /// First backoff after a lost race; doubles per attempt (with jitter, capped at 5 s).
    pub backoff: Duration,
    /// How many first-parent commits [`CommitRequest::idempotency`] looks back.
    pub idempotency_depth: usize,
    /// Largest file we read or write; bigger ones are refused (input from Git is bounded).
    pub max_file_size: u64,
}

impl GitConfig {
    /// Defaults suited to an operator: 10 s connect, 30 s I/O, 2 min per operation, 5 push
    /// attempts starting at 200 ms, 200 commits of idempotency look-back, 8 MiB files.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        GitConfig {
            cache_dir: cache_dir.into(),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            push_attempts: 5,
            backoff: Duration::from_millis(200),
            idempotency_depth: 200,
            max_file_size: 8 << 20,
        }
    }
}

/// Author (and committer) of our commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    /// An author from name and email.
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Author {
            name: name.into(),
            email: email.into(),
        }
    }
}

/// What an edit wants done with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditResult {
    /// Write these bytes (creating the file if it did not exist).
    Replace(Vec<u8>),
    /// The file is already as wanted: nothing to commit for it.
    Unchanged,
}

/// The edit function: current contents (`None` when the file does not exist) in, decision
/// out. Called again on every push retry with the file at the new head, so it must compute
/// from its input (e.g. "set the version to X"), never from what it saw last time.
pub type EditFn = Box<dyn FnMut(Option<&[u8]>) -> Result<EditResult, EditError> + Send + 'static>;

/// One file to change in a commit.
pub struct FileEdit {
    /// Repository-relative path with `/` separators (no `..`, not absolute).
    pub path: String,
    /// Computes the new contents; see [`EditFn`].
    pub edit: EditFn,
}

impl FileEdit {
    /// An edit of `path` by `edit`.
    pub fn new<F>(path: impl Into<String>, edit: F) -> Self
    where
        F: FnMut(Option<&[u8]>) -> Result<EditResult, EditError> + Send + 'static,
    {
        FileEdit {
            path: path.into(),
            edit: Box::new(edit),
        }
    }
}

impl std::fmt::Debug for FileEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEdit")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A commit to make on top of the branch head and push.
#[derive(Debug)]
pub struct CommitRequest {
    /// Subject, optionally a blank line and a body; trailers are appended.
    pub message: String,
    pub author: Author,
    /// Git trailers, e.g. [`request_trailers`].
    pub trailers: Vec<(String, String)>,
    /// The files to change, applied in order.
    pub edits: Vec<FileEdit>,
    /// A trailer (key, value) that identifies this change: when a commit carrying it is
    /// already on the branch (pushed before a crash), nothing is committed and
    /// [`CommitOutcome::AlreadyPushed`] returns it. Usually
    /// `(REQUEST_UID_TRAILER, uid)`.
    pub idempotency: Option<(String, String)>,
    /// Signs the commit (its `gpgsig` header) when set, as a GitRepository with
    /// `spec.verify` requires.
    pub signing: Option<SigningKey>,
}

/// A commit on the remote branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full hex sha.
    pub sha: String,
    /// The full message, trailers included.
    pub message: String,
    /// A browser link to the commit when the host is known (see `commit_web_url`).
    pub url: Option<String>,
}

/// What [`GitRepo::commit_and_push`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// We made and pushed this commit; `attempts` counts pushes (1 = no race).
    Pushed { commit: CommitInfo, attempts: u32 },
    /// Every edit said the branch head is already as wanted: nothing committed.
    NoChange { head: String },
    /// A commit carrying the request's idempotency trailer is already on the branch.
    AlreadyPushed { commit: CommitInfo },
}

/// What the server answered when asked for a push connection without pushing
/// ([`GitRepo::push_access`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushAccess {
    /// The server offered these credentials a push connection (its receive-pack
    /// advertisement). Most hosts refuse read-only credentials right there; some (Gitea
    /// for a user with read permission) only refuse the push itself.
    Offered,
    /// The server refused these credentials a push connection: they may read, not write.
    /// `detail` is what the server said (secrets removed).
    Refused { detail: String },
    /// The transport has no such check (`file://`): nothing was asked.
    NotChecked,
}

/// A file read at the branch head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAtHead {
    /// The head commit the file was read at.
    pub commit: String,
    /// The contents, or `None` when the file does not exist there.
    pub contents: Option<Vec<u8>>,
}

/// The files directly inside one directory, read at one branch head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryAtHead {
    /// The head commit the files were read at.
    pub commit: String,
    /// File name (not path) → contents; subdirectories, symbolic links, submodules and files
    /// over the size limit are left out. Empty when the directory does not exist.
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
}

/// One branch of one Git repository, as the workflow sees it. Object-safe so tests can
/// substitute a fake; every method fetches first, so answers reflect the remote now.
pub trait GitRepo: Send + Sync {
    /// The remote URL with credentials removed: safe to show.
    fn remote(&self) -> &str;

    /// The branch this handle works on.
    fn branch(&self) -> &str;

    /// Fetches and returns the sha at the head of the branch.
    fn head(&self) -> BoxFuture<'_, Result<String, GitError>>;

    /// Fetches and reads `path` at the head of the branch.
    fn read_file(&self, path: &str) -> BoxFuture<'_, Result<FileAtHead, GitError>>;

    /// Fetches and reads every file directly inside `dir` (`""` for the repository root) at
    /// the head of the branch, so related files are seen at one commit.
    fn read_directory(&self, dir: &str) -> BoxFuture<'_, Result<DirectoryAtHead, GitError>>;

    /// Fetches and reads every file under `dir` (`""` for the whole repository), however
    /// deep, at the head of the branch. The keys of [`DirectoryAtHead::files`] are then
    /// paths relative to `dir` (`a.yaml`, `sub/b.yaml`); links, submodules and files over
    /// the size limit are left out as by [`GitRepo::read_directory`].
    fn read_tree(&self, dir: &str) -> BoxFuture<'_, Result<DirectoryAtHead, GitError>>;

    /// Applies the request's edits on the fetched head, commits and pushes, re-applying on
    /// the new head after a lost push race (bounded). See [`CommitOutcome`].
    fn commit_and_push(
        &self,
        request: CommitRequest,
    ) -> BoxFuture<'_, Result<CommitOutcome, GitError>>;

    /// Asks the server for a push connection (the receive-pack advertisement over smart
    /// HTTP, `git-receive-pack` over SSH) and hangs up without pushing: whether these
    /// credentials may write. Call after a successful read, so that a refusal means "may
    /// read, may not write" rather than "bad credentials". Bounded by the connect and I/O
    /// timeouts.
    fn push_access(&self) -> BoxFuture<'_, Result<PushAccess, GitError>>;

    /// Fetches and tells whether commit `descendant` includes commit `ancestor` (is it, or
    /// has it in its history); false when either is not known after the fetch.
    fn contains(&self, descendant: &str, ancestor: &str) -> BoxFuture<'_, Result<bool, GitError>>;

    /// Fetches and searches the newest `max_depth` first-parent commits of the branch for
    /// one carrying trailer `key: value` (key case-insensitive).
    fn find_commit_by_trailer(
        &self,
        key: &str,
        value: &str,
        max_depth: usize,
    ) -> BoxFuture<'_, Result<Option<CommitInfo>, GitError>>;
}
