//! The ManagedApp's bookkeeping written by requests: the lock (`activeOperation`, taken and
//! released with optimistic concurrency, a stale one released by the rule of
//! [`holder_exists`]) and, when an operation ends, `lastOperation` and `failedVersions`.
//!
//! Each status field has one owner, and only its owner writes it:
//!
//! | fields | owner |
//! |---|---|
//! | `activeOperation`, `lastOperation`, `failedVersions` | this module (for the requests; the ManagedApp controller releases a stale lock through it) |
//! | `currentVersions`, `current`, `availableUpdate`, `available`, `conditions`, `observedGeneration` | the ManagedApp controller ([`super::apps`]), from Git, health and Renovate |
//!
//! Both write with the resourceVersion they read, so neither loses the other's writes.

use crate::api::{
    FailedVersion, LastOperation, ManagedApp, ManagedAppStatus, OperationKind, OperationReference,
};
use crate::cluster::FIELD_MANAGER;
use crate::cluster::cache::{Cluster, WatchedKind};
use crate::cluster::error::describe;
use crate::manifest::{Version, versions_equal};
use crate::workflow::{Finish, Problem};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

/// Whether the request holding a lock still exists, by name and UID. The one rule for a
/// stale lock: it is stale when its holder is gone. A cache that shows the holder is
/// believed (at worst the lock is taken over a moment later); "gone" is never a cache's
/// word — a request created a moment ago, or recreated under the same name, may not be
/// cached yet — so it is read fresh.
pub async fn holder_exists(
    cluster: &Cluster,
    namespace: &str,
    active: &OperationReference,
) -> Result<bool, Problem> {
    let exists = async |cluster: &Cluster| {
        let uid = match active.kind {
            OperationKind::UpgradeRequest => cluster
                .get::<crate::api::UpgradeRequest>(namespace, &active.name)
                .await?
                .and_then(|r| r.uid()),
            OperationKind::RollbackRequest => cluster
                .get::<crate::api::RollbackRequest>(namespace, &active.name)
                .await?
                .and_then(|r| r.uid()),
        };
        Ok::<_, kube::Error>(uid.as_deref() == Some(active.uid.as_str()))
    };
    let found = match exists(cluster).await {
        Ok(true) => Ok(true),
        _ => exists(&cluster.fresh()).await,
    };
    found.map_err(|e| {
        Problem::retryable(
            "ApiError",
            format!(
                "reading the lock holder {:?} {namespace}/{}: {}",
                active.kind,
                active.name,
                describe(&e)
            ),
        )
    })
}

/// How many times a conflicting ManagedApp status write is re-read and retried.
const CONFLICT_RETRIES: usize = 4;

/// The request on whose behalf the app is changed.
#[derive(Clone, Debug)]
pub struct Holder {
    /// UpgradeRequest or RollbackRequest.
    pub kind: OperationKind,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// The upgrade the operation is about (itself, or the one a rollback undoes).
    pub upgrade: String,
}

/// Reads the app, lets `change` edit its status (returning false means "nothing to do") and
/// writes it back with the resourceVersion it read; a conflict re-reads, up to a bound.
/// Read fresh: this takes and releases the app's lock.
pub(super) async fn update_status(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    mut change: impl FnMut(&mut ManagedAppStatus) -> Result<bool, Problem>,
) -> Result<(), Problem> {
    let api = Api::<ManagedApp>::namespaced(cluster.client().clone(), namespace);
    for _ in 0..CONFLICT_RETRIES {
        let mut app = api.get(name).await.map_err(|e| {
            Problem::retryable(
                "ApiError",
                format!("reading ManagedApp {namespace}/{name}: {}", describe(&e)),
            )
        })?;
        let mut status = app.status.clone().unwrap_or_default();
        if !change(&mut status)? {
            return Ok(());
        }
        app.status = Some(status);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.replace_status(name, &params, &app).await {
            Ok(written) => {
                cluster.wrote(WatchedKind::ManagedApp, &written);
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => {
                return Err(Problem::retryable(
                    "ApiError",
                    format!(
                        "writing the status of ManagedApp {namespace}/{name}: {}",
                        describe(&e)
                    ),
                ));
            }
        }
    }
    Err(Problem::retryable(
        "Conflict",
        format!(
            "the status of ManagedApp {namespace}/{name} kept changing under {CONFLICT_RETRIES} attempts; will retry"
        ),
    ))
}

/// Makes `holder` the app's active operation; fails (retryably) when another holds it. A
/// lock left by a request that no longer exists (`stale` UID) is taken over.
pub async fn take_lock(
    cluster: &Cluster,
    namespace: &str,
    app: &str,
    holder: &Holder,
    stale: Option<&str>,
    now: jiff::Timestamp,
) -> Result<(), Problem> {
    update_status(cluster, namespace, app, |status| {
        match &status.active_operation {
            Some(active) if active.uid == holder.uid => Ok(false),
            Some(active) if Some(active.uid.as_str()) != stale => Err(Problem::retryable(
                "LockHeld",
                format!("{:?} {} took the app first", active.kind, active.name),
            )),
            _ => {
                status.active_operation = Some(OperationReference {
                    kind: holder.kind,
                    name: holder.name.clone(),
                    uid: holder.uid.clone(),
                    since: Time(now),
                });
                Ok(true)
            }
        }
    })
    .await
}

/// Releases the lock of a request that no longer exists (`stale`: its UID, found gone by
/// [`holder_exists`]); a lock taken since by anyone else stays.
pub async fn release_stale_lock(
    cluster: &Cluster,
    namespace: &str,
    app: &str,
    stale: &str,
) -> Result<(), Problem> {
    update_status(cluster, namespace, app, |status| {
        if status
            .active_operation
            .as_ref()
            .is_none_or(|a| a.uid != stale)
        {
            return Ok(false);
        }
        status.active_operation = None;
        Ok(true)
    })
    .await
}

/// Records the end of an operation on the app (see [`Finish`]); `why_failed` is the
/// failure of the upgrade whose versions are recorded as failed.
pub async fn finish(
    cluster: &Cluster,
    namespace: &str,
    app: &str,
    holder: &Holder,
    finish: &Finish,
    why_failed: Option<&str>,
    now: jiff::Timestamp,
) -> Result<(), Problem> {
    update_status(cluster, namespace, app, |status| {
        let before = status.clone();
        if let Some(result) = finish.result {
            status.last_operation = Some(LastOperation {
                kind: holder.kind,
                name: holder.name.clone(),
                result: format!("{result:?}"),
                from: finish.from.clone(),
                to: finish.to.clone(),
                completed_at: Time(now),
            });
        }
        // A later success past a failed version unblocks it. (`currentVersions` itself is
        // the ManagedApp controller's: it reads the new versions from Git once the
        // request's end wakes it.)
        if let Some(versions) = &finish.current_versions {
            for (field, version) in versions {
                let now_at = Version::parse(version);
                status
                    .failed_versions
                    .retain(|f| f.name != *field || Version::parse(&f.version) > now_at);
            }
        }
        for (field, version) in &finish.failed_versions {
            if !status
                .failed_versions
                .iter()
                .any(|f| f.name == *field && versions_equal(&f.version, version))
            {
                status.failed_versions.push(FailedVersion {
                    name: field.clone(),
                    version: version.clone(),
                    upgrade_request: holder.upgrade.clone(),
                    failed_at: Time(now),
                    reason: Some(match why_failed {
                        Some(why) => format!("{why}; rolled back by {}", holder.name),
                        None => format!("rolled back by {}", holder.name),
                    }),
                });
            }
        }
        if finish.release_lock
            && status
                .active_operation
                .as_ref()
                .is_some_and(|a| a.uid == holder.uid)
        {
            status.active_operation = None;
        }
        Ok(*status != before)
    })
    .await
}
