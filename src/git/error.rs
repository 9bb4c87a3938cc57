//! The one error type of `git`: what failed, on which remote (redacted) and branch, and what
//! to do about it, with a static category for metrics and a retryable/terminal verdict.

use std::path::PathBuf;
use std::time::Duration;

/// The error returned by a boxed file edit (see [`FileEdit`](super::FileEdit)).
pub type EditError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to a Git repository. Every `remote` field holds a
/// URL with credentials already removed (see [`redact_url`](super::redact_url)), and every
/// `detail` has been scrubbed of secrets, so `Display` is safe for logs, events and status.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The server refused our credentials, or asked for some and we had none.
    #[error(
        "authentication to {remote} failed: {detail}; check the username/password (token) or \
         SSH identity in the git secret and that it grants read and push access"
    )]
    Auth { remote: String, detail: String },

    /// The SSH server's host key is unknown, changed, or revoked.
    #[error(
        "SSH host key check for {remote} failed: {detail}; add the host's key to the secret's \
         known_hosts (e.g. from `ssh-keyscan HOST`) after verifying it"
    )]
    HostKey { remote: String, detail: String },

    /// The server could not be reached or the connection broke.
    #[error(
        "cannot reach {remote} (branch {branch}): {detail}; check the URL, DNS, network \
         policies and that the git server is up (will retry)"
    )]
    Network {
        remote: String,
        branch: String,
        detail: String,
    },

    /// An operation did not finish within its time budget.
    #[error(
        "git {operation} on {remote} (branch {branch}) did not finish within {timeout:?}; the \
         server is slow or unreachable (will retry)"
    )]
    Timeout {
        remote: String,
        branch: String,
        operation: &'static str,
        timeout: Duration,
    },

    /// Others kept pushing to the branch: every attempt lost the race.
    #[error(
        "push to {remote} branch {branch} lost the race against other pushes {attempts} times \
         in a row; will retry later"
    )]
    Conflict {
        remote: String,
        branch: String,
        attempts: u32,
    },

    /// The server refused the push for a reason other than a race (protected branch, hook).
    #[error(
        "push to {remote} branch {branch} was rejected by the server: {reason}; check branch \
         protection rules and that the credentials may push to this branch"
    )]
    Rejected {
        remote: String,
        branch: String,
        reason: String,
    },

    /// The branch does not exist on the remote.
    #[error(
        "branch {branch} does not exist on {remote}; check `git.branch` (or the GitRepository's \
         branch) and that the credentials can see it"
    )]
    BranchNotFound { remote: String, branch: String },

    /// A repository path is unusable (absolute, `..`, a directory, a symlink, too large...).
    #[error("file {path:?} on {remote} branch {branch}: {reason}")]
    InvalidPath {
        remote: String,
        branch: String,
        path: String,
        reason: String,
    },

    /// A file edit callback refused the file's contents.
    #[error("cannot edit {path} on {remote} branch {branch}: {source}")]
    Edit {
        remote: String,
        branch: String,
        path: String,
        #[source]
        source: EditError,
    },

    /// The local clone cache is damaged and could not be rebuilt.
    #[error(
        "the local cache of {remote} at {dir} is corrupt and re-cloning did not help: {detail}; \
         check the disk and the cache directory's permissions"
    )]
    Corrupt {
        remote: String,
        dir: PathBuf,
        detail: String,
    },

    /// The remote, branch, secret or commit request is invalid as configured.
    #[error("invalid git configuration for {remote}: {detail}")]
    Config { remote: String, detail: String },

    /// Local I/O failed (cache directory not writable, lock not obtainable, worker died).
    #[error("local git cache for {remote}: {detail}")]
    Local { remote: String, detail: String },
}

impl GitError {
    /// A stable, low-cardinality name for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            GitError::Auth { .. } => "git_auth",
            GitError::HostKey { .. } => "git_host_key",
            GitError::Network { .. } => "git_network",
            GitError::Timeout { .. } => "git_timeout",
            GitError::Conflict { .. } => "git_conflict",
            GitError::Rejected { .. } => "git_rejected",
            GitError::BranchNotFound { .. } => "git_not_found",
            GitError::InvalidPath { .. } => "git_invalid_path",
            GitError::Edit { .. } => "git_edit",
            GitError::Corrupt { .. } => "git_corrupt",
            GitError::Config { .. } => "git_config",
            GitError::Local { .. } => "git_local",
        }
    }

    /// Whether trying the same thing again later may succeed without a human changing
    /// anything: network trouble, timeouts, lost push races and local hiccups.
    pub fn is_retryable(&self) -> bool {
        match self {
            GitError::Network { .. }
            | GitError::Timeout { .. }
            | GitError::Conflict { .. }
            | GitError::Corrupt { .. }
            | GitError::Local { .. } => true,
            GitError::Auth { .. }
            | GitError::HostKey { .. }
            | GitError::Rejected { .. }
            | GitError::BranchNotFound { .. }
            | GitError::InvalidPath { .. }
            | GitError::Edit { .. }
            | GitError::Config { .. } => false,
        }
    }
}
