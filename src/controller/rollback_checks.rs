//! Whether a rollback may touch anything: the upgrade it undoes must still be the app's
//! last change — Git holds its target, and no later upgrade changed the app since — or the
//! request says `force`; the refusal says what a forced rollback would do. Pure: the
//! caller reads Git, the app and its requests.

use crate::api::{
    ManagedAppStatus, OperationKind, Phase, PlannedVolume, UpgradeRequest, versions_summary,
};
use crate::manifest::versions_equal;
use crate::workflow::Problem;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// The reason a rollback is refused when Git no longer holds its upgrade's target.
pub const VERSION_CHANGED_IN_GIT: &str = "VersionChangedInGit";
/// The reason a rollback is refused when a later upgrade changed the app.
pub const NOT_LAST_OPERATION: &str = "NotLastOperation";

/// The fields whose version in Git (`current`) is no longer the upgrade's target, as
/// `name: in Git, target`.
pub fn moved_in_git(
    target: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Vec<String> {
    target
        .iter()
        .filter_map(|(field, wanted)| {
            let now = current.get(field).map(String::as_str).unwrap_or("nothing");
            (!versions_equal(now, wanted))
                .then(|| format!("{field} {now}, not its target {wanted}"))
        })
        .collect()
}

/// The operations that changed the app after `upgrade`, in words; empty when it is the
/// app's last change. An upgrade is later when it was created after this one (requests
/// of an app are admitted in creation order) and left a change: it committed (not a dry
/// run) and was not rolled back. An upgrade that holds the app (rolling back, frozen) is
/// its last change by definition. The app's `lastOperation` naming an upgrade that is gone
/// counts too: what it changed can no longer be told.
pub fn later_changes(
    upgrade: &UpgradeRequest,
    upgrades: &[UpgradeRequest],
    app: &ManagedAppStatus,
) -> Vec<String> {
    let uid = upgrade.uid().unwrap_or_default();
    if app.active_operation.as_ref().is_some_and(|a| a.uid == uid) {
        return Vec::new();
    }
    let order = |u: &UpgradeRequest| {
        (
            u.metadata.creation_timestamp.as_ref().map(|t| t.0),
            u.name_any(),
        )
    };
    let mine = order(upgrade);
    let mut later: Vec<&UpgradeRequest> = upgrades
        .iter()
        .filter(|u| u.spec.managed_app == upgrade.spec.managed_app)
        .filter(|u| u.uid().unwrap_or_default() != uid && order(u) > mine)
        .filter(|u| {
            let status = u.status.clone().unwrap_or_default();
            !u.spec.dry_run && status.commit.is_some() && status.phase != Some(Phase::RolledBack)
        })
        .collect();
    later.sort_by_key(|u| order(u));
    let mut found: Vec<String> = later
        .iter()
        .map(|u| {
            let status = u.status.clone().unwrap_or_default();
            let plan = status.plan.unwrap_or_default();
            format!(
                "UpgradeRequest {} ({}, {} → {})",
                u.name_any(),
                status.phase.map_or("running".to_owned(), |p| p.to_string()),
                versions_summary(&plan.from),
                versions_summary(&plan.to)
            )
        })
        .collect();
    if let Some(last) = &app.last_operation
        && last.kind == OperationKind::UpgradeRequest
        && last.name != upgrade.name_any()
        && !upgrades.iter().any(|u| u.name_any() == last.name)
    {
        found.push(format!(
            "UpgradeRequest {} ({}, {} → {}), the app's last operation, which no longer exists",
            last.name,
            last.result,
            versions_summary(&last.from),
            versions_summary(&last.to)
        ));
    }
    found
}

/// The refusal of a rollback of `upgrade` that is not the app's last change, saying what
/// a forced one would do: volumes back to before the upgrade under its previous versions,
/// everything since overwritten (and whether a safety snapshot keeps it).
pub fn refusal(
    upgrade: &str,
    moved: &[String],
    later: &[String],
    previous: &BTreeMap<String, String>,
    volumes: &[PlannedVolume],
    safety_snapshot: bool,
) -> Problem {
    let mut why = Vec::new();
    if !moved.is_empty() {
        why.push(format!("Git holds {}", moved.join(", ")));
    }
    if !later.is_empty() {
        why.push(format!("changed after it: {}", later.join(", ")));
    }
    let restored: Vec<String> = volumes
        .iter()
        .filter_map(|v| {
            v.restore_from
                .as_ref()
                .map(|s| format!("{} (from {s})", v.name))
        })
        .collect();
    let data = if restored.is_empty() {
        "no volume would be restored (the upgrade took no snapshots)".to_owned()
    } else {
        let kept = if safety_snapshot {
            "kept first in a safety snapshot"
        } else {
            "not kept: spec.safetySnapshot is false"
        };
        format!(
            "{} would go back to their state before {upgrade}, overwriting everything written since ({kept})",
            restored.join(", ")
        )
    };
    let reason = if moved.is_empty() {
        NOT_LAST_OPERATION
    } else {
        VERSION_CHANGED_IN_GIT
    };
    Problem::terminal(
        reason,
        format!(
            "UpgradeRequest {upgrade} is not the app's last change: {}. Rolling it back now: {data}, and Git \
             would be set back to {} from what it holds; set spec.force: true to do that, or roll back the \
             later changes first, newest first",
            why.join("; "),
            versions_summary(previous)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommitRecord, LastOperation, OperationReference, Plan, RequestStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn upgrade(name: &str, second: i64, from: &str, to: &str, phase: Phase) -> UpgradeRequest {
        let mut u: UpgradeRequest = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"),
                         "creationTimestamp": jiff::Timestamp::from_second(1_800_000_000 + second).unwrap().to_string()},
            "spec": {"managedApp": "db", "version": to}
        }))
        .unwrap();
        u.status = Some(RequestStatus {
            phase: Some(phase),
            plan: Some(Plan {
                from: BTreeMap::from([("chart".into(), from.into())]),
                to: BTreeMap::from([("chart".into(), to.into())]),
                ..Plan::default()
            }),
            commit: Some(CommitRecord {
                sha: "0".repeat(40),
                message: "fluxgate: upgrade".into(),
                url: None,
            }),
            ..RequestStatus::default()
        });
        u
    }

    fn versions(chart: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("chart".to_owned(), chart.to_owned())])
    }

    #[test]
    fn git_must_still_hold_the_target() {
        assert!(moved_in_git(&versions("v1.6.0"), &versions("1.6.0")).is_empty());
        assert_eq!(
            moved_in_git(&versions("v1.6.0"), &versions("v1.7.0")),
            vec!["chart v1.7.0, not its target v1.6.0"]
        );
    }

    #[test]
    fn a_later_upgrade_that_left_a_change_makes_a_rollback_need_force() {
        let a = upgrade("db-a", 0, "v1.5.0", "v1.6.0", Phase::Succeeded);
        let b = upgrade("db-b", 10, "v1.6.0", "v1.7.0", Phase::Succeeded);
        let app = ManagedAppStatus::default();
        let later = later_changes(&a, &[a.clone(), b.clone()], &app);
        assert_eq!(
            later,
            vec!["UpgradeRequest db-b (Succeeded, v1.6.0 → v1.7.0)"]
        );
        assert!(later_changes(&b, &[a.clone(), b.clone()], &app).is_empty());
    }

    #[test]
    fn later_upgrades_that_changed_nothing_or_were_undone_do_not_count() {
        let a = upgrade("db-a", 0, "v1.5.0", "v1.6.0", Phase::Succeeded);
        let rolled_back = upgrade("db-b", 10, "v1.6.0", "v2.0.0", Phase::RolledBack);
        let mut never_committed = upgrade("db-c", 20, "v1.6.0", "v1.7.0", Phase::Failed);
        never_committed.status.as_mut().unwrap().commit = None;
        let mut dry = upgrade("db-d", 30, "v1.6.0", "v1.7.0", Phase::Succeeded);
        dry.spec.dry_run = true;
        let mut other_app = upgrade("web-e", 40, "1", "2", Phase::Succeeded);
        other_app.spec.managed_app = "web".into();
        let all = [a.clone(), rolled_back, never_committed, dry, other_app];
        assert!(later_changes(&a, &all, &ManagedAppStatus::default()).is_empty());
    }

    #[test]
    fn an_upgrade_holding_the_app_is_its_last_change_and_a_vanished_last_operation_counts() {
        let a = upgrade("db-a", 0, "v1.5.0", "v1.6.0", Phase::RollingBack);
        let b = upgrade("db-b", 10, "v1.6.0", "v1.7.0", Phase::Succeeded);
        let now = Time(jiff::Timestamp::from_second(1_800_000_100).unwrap());
        let holding = ManagedAppStatus {
            active_operation: Some(OperationReference {
                kind: OperationKind::UpgradeRequest,
                name: "db-a".into(),
                uid: "uid-db-a".into(),
                since: now.clone(),
            }),
            ..ManagedAppStatus::default()
        };
        assert!(later_changes(&a, &[a.clone(), b], &holding).is_empty());
        let gone_later = ManagedAppStatus {
            last_operation: Some(LastOperation {
                kind: OperationKind::UpgradeRequest,
                name: "db-deleted".into(),
                result: "Succeeded".into(),
                from: versions("v1.6.0"),
                to: versions("v1.6.1"),
                completed_at: now,
            }),
            ..ManagedAppStatus::default()
        };
        let later = later_changes(&a, std::slice::from_ref(&a), &gone_later);
        assert_eq!(later.len(), 1);
        assert!(later[0].contains("db-deleted") && later[0].contains("no longer exists"));
    }

    #[test]
    fn the_refusal_says_what_a_forced_rollback_would_do() {
        let mut volume: PlannedVolume = serde_json::from_value(json!({
            "name": "data-db-0", "namespace": "apps", "size": "1Gi"
        }))
        .unwrap();
        volume.restore_from = Some("fluxgate-uid-data-db-0".into());
        let problem = refusal(
            "db-a",
            &["chart v1.7.0, not its target v1.6.0".into()],
            &["UpgradeRequest db-b (Succeeded, v1.6.0 → v1.7.0)".into()],
            &versions("v1.5.0"),
            &[volume.clone()],
            true,
        );
        assert_eq!(problem.reason, VERSION_CHANGED_IN_GIT);
        assert!(!problem.retryable);
        for part in [
            "Git holds chart v1.7.0, not its target v1.6.0",
            "changed after it: UpgradeRequest db-b",
            "data-db-0 (from fluxgate-uid-data-db-0) would go back to their state before db-a",
            "kept first in a safety snapshot",
            "set back to v1.5.0",
            "spec.force: true",
        ] {
            assert!(
                problem.message.contains(part),
                "{part}: {}",
                problem.message
            );
        }
        let unsafe_one = refusal(
            "db-a",
            &[],
            &["x".into()],
            &versions("v1.5.0"),
            &[volume],
            false,
        );
        assert_eq!(unsafe_one.reason, NOT_LAST_OPERATION);
        assert!(
            unsafe_one
                .message
                .contains("not kept: spec.safetySnapshot is false")
        );
    }
}
