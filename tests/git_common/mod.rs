//! Helpers shared by the `git_*` integration tests: configs, a version-setting edit and
//! commit requests shaped like the ones the workflow makes.

use fluxgate::git::{
    Author, CommitRequest, EditResult, FileEdit, GitConfig, REQUEST_UID_TRAILER, request_trailers,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A config with a private cache directory and short budgets so failures show up fast.
pub fn config(cache_dir: &Path) -> GitConfig {
    let mut config = GitConfig::new(cache_dir);
    config.connect_timeout = Duration::from_secs(2);
    config.io_timeout = Duration::from_secs(2);
    config.operation_timeout = Duration::from_secs(20);
    config.backoff = Duration::from_millis(10);
    config
}

/// The release file every test repository starts with.
pub const RELEASE: &str = "apps/gitea/release.yaml";
pub const RELEASE_V1: &str = "# Gitea\nname: gitea\nversion: 1.0.0 # pinned\nreplicas: 1\n";

/// Sets the `version:` line's value (keeping its comment), like the manifest module would;
/// `Unchanged` when it already holds `target`; counts its calls in `calls`.
pub fn set_version(target: &str, calls: Arc<AtomicUsize>) -> FileEdit {
    let target = target.to_owned();
    FileEdit::new(RELEASE, move |current| {
        calls.fetch_add(1, Ordering::SeqCst);
        let text = std::str::from_utf8(current.ok_or("file is missing")?)?;
        let mut found = false;
        let mut already = false;
        let lines: Vec<String> = text
            .split_inclusive('\n')
            .map(|line| match line.strip_prefix("version: ") {
                Some(rest) => {
                    found = true;
                    let end = rest.find([' ', '\n']).unwrap_or(rest.len());
                    already = rest[..end] == target;
                    format!("version: {target}{}", &rest[end..])
                }
                None => line.to_owned(),
            })
            .collect();
        if !found {
            return Err("no `version:` line".into());
        }
        Ok(if already {
            EditResult::Unchanged
        } else {
            EditResult::Replace(lines.concat().into_bytes())
        })
    })
}

/// A commit request for `uid` with Fluxgate's trailers and idempotency key.
pub fn request(uid: &str, edits: Vec<FileEdit>) -> CommitRequest {
    CommitRequest {
        message: "Upgrade gitea to 1.1.0\n\nRequested by apps/gitea-up.".to_owned(),
        author: Author::new("Fluxgate", "fluxgate@example.com"),
        trailers: request_trailers("apps", "gitea-up", uid),
        edits,
        idempotency: Some((REQUEST_UID_TRAILER.to_owned(), uid.to_owned())),
        signing: None,
    }
}

/// A fresh call counter.
pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}
