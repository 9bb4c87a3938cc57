//! The Git side of an app's status: each remote's head fetched about once per wake-up of
//! every app, and the app's version fields resolved once per commit.

use super::Shared;

use crate::api::ManagedApp;
use crate::cluster::flux::ops::{chain_error_reason, suspend_chain};
use crate::manifest::fields::{ResolvedField, locate_fields};
use crate::renovate::mapping::Scope;
use crate::workflow::Problem;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// When a remote's last fetch started and the head it found.
pub(super) type LastFetch = Option<(Instant, String)>;

/// The last fetch per remote (when it started, the head it found), and version fields
/// resolved per (app, generation, commit).
#[derive(Default)]
pub(super) struct GitMemo {
    pub(super) heads: HashMap<(String, String), Arc<tokio::sync::Mutex<LastFetch>>>,
    pub(super) fields: HashMap<(String, i64, String), Arc<Vec<ResolvedField>>>,
}

/// The app's version fields at the branch head, and its Renovate scope. The head is
/// fetched once per reconcile, except that a fetch another reconcile started after
/// `started` is reused (so a wake-up of every app fetches each remote about once); the
/// fields are parsed once per commit.
pub(super) async fn git_fields(
    shared: &Shared,
    app: &ManagedApp,
    started: Instant,
) -> Result<(Arc<Vec<ResolvedField>>, Scope), Problem> {
    let ctx = &shared.ctx;
    let namespace = app.namespace().unwrap_or_default();
    let git = &app.spec.git;
    let chain = if git.url.is_some() && git.branch.is_some() {
        Vec::new()
    } else {
        suspend_chain(
            &ctx.cluster,
            &namespace,
            &app.spec.source,
            &app.spec.suspend,
        )
        .await
        .map_err(|e| {
            let reason = chain_error_reason(&e);
            Problem::from(e).with_reason(reason)
        })?
    };
    let location = crate::controller::git_access::locate(ctx, app, &chain).await?;
    let scope = Scope {
        repository: Some(location.url.clone()),
        branch: Some(location.branch.clone()),
    };
    let remote = {
        let mut memo = shared.git.lock().unwrap_or_else(|e| e.into_inner());
        memo.heads
            .entry((location.url.clone(), location.branch.clone()))
            .or_default()
            .clone()
    };
    // One fetch per remote at a time; waiting reconciles reuse it when it is fresh enough.
    let mut last_fetch = remote.lock().await;
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let generation = app.metadata.generation.unwrap_or_default();
    if let Some((at, head)) = last_fetch.as_ref()
        && *at >= started
    {
        let memo = shared.git.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fields) = memo.fields.get(&(uid.clone(), generation, head.clone())) {
            return Ok((fields.clone(), scope));
        }
    }
    let fetch_started = Instant::now();
    let repo = crate::controller::git_access::open(ctx, &location).await?;
    let (head, files) =
        crate::controller::git_access::read_version_files(repo.as_ref(), app).await?;
    *last_fetch = Some((fetch_started, head.clone()));
    drop(last_fetch);
    let fields = Arc::new(
        locate_fields(&app.spec, &files)
            .map_err(|e| Problem::terminal("VersionFieldInvalid", e.to_string()))?,
    );
    let mut memo = shared.git.lock().unwrap_or_else(|e| e.into_inner());
    // Only the newest commit's fields are worth keeping per app.
    memo.fields.retain(|(u, _, _), _| *u != uid);
    memo.fields.insert((uid, generation, head), fields.clone());
    Ok((fields, scope))
}
