//! The last word on a followed request: what it achieved, or why it did not and what to do
//! next, with the exit code that tells scripts the same.

use super::{elapsed, short_sha, transition};
use crate::api::{Phase, RequestStatus};
use crate::cli::people::{EXIT_FAILED, EXIT_FROZEN, EXIT_ROLLED_BACK, Outcome};
use std::time::Duration;

/// Which request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended<'a> {
    /// An upgrade of `app`.
    Upgrade {
        /// The ManagedApp.
        app: &'a str,
        /// Whether it was a dry run.
        dry_run: bool,
    },
    /// A rollback of `upgrade`.
    Rollback {
        /// The UpgradeRequest it undoes.
        upgrade: &'a str,
    },
}

/// The closing message for a request that ended: `Ok` on success, else the [`Outcome`]
/// with its exit code.
pub fn conclusion(
    ended: Ended<'_>,
    namespace: &str,
    name: &str,
    status: &RequestStatus,
    took: Duration,
) -> Result<String, Outcome> {
    let took = elapsed(took);
    let versions = status
        .plan
        .as_ref()
        .map_or("-".to_owned(), |p| transition(&p.from, &p.to));
    let why = status.failure.as_ref().map_or(String::new(), |f| {
        format!(" in {}: {} — {}", f.phase, f.reason, f.message)
    });
    let commit = status
        .commit
        .as_ref()
        .map_or(String::new(), |c| format!("; commit {}", short_sha(&c.sha)));
    let snapshots = match status.snapshots.len() {
        0 => String::new(),
        n => format!("; {n} snapshot(s)"),
    };
    let phase = status.phase.unwrap_or(Phase::Failed);
    match (ended, phase) {
        (Ended::Upgrade { dry_run: true, .. }, Phase::Succeeded) => Ok(format!(
            "Dry run of {name} passed in {took} ({versions}): Git, Flux, permissions and snapshot classes checked, \
             a suspend → quiesce → resume cycle ran and everything was put back; nothing was committed or snapshotted."
        )),
        (Ended::Upgrade { app, .. }, Phase::Succeeded) => Ok(format!(
            "Upgraded {app} ({versions}) in {took}{commit}{snapshots}."
        )),
        (Ended::Rollback { upgrade }, Phase::Succeeded) => {
            let released = match crate::api::released_report(&status.restores) {
                none if none.is_empty() => String::new(),
                kept => format!(
                    " Kept, not deleted: {kept}, labelled fluxgate.dev/released-by={name}; \
                     delete them or bind them again as docs/operations.md says."
                ),
            };
            let larger: String = status
                .restores
                .iter()
                .filter_map(|r| Some(format!(" {}: {}.", r.pvc, r.larger_than_manifest.as_ref()?)))
                .collect();
            Ok(format!(
                "Rolled back {upgrade} ({versions}) in {took}: volumes restored from their snapshots and Git reverted{commit}.{released}{larger}"
            ))
        }
        (Ended::Upgrade { app, .. }, Phase::RolledBack) => {
            let rollback = status
                .rollback_ref
                .as_ref()
                .map_or("its RollbackRequest".to_owned(), |r| r.name.clone());
            let to = status
                .plan
                .as_ref()
                .map(|p| p.to.clone())
                .unwrap_or_default();
            let target = to.values().cloned().collect::<Vec<_>>().join(", ");
            let to_args = if to.len() == 1 {
                target.clone()
            } else {
                to.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" --to ")
            };
            Err(Outcome {
                code: EXIT_ROLLED_BACK,
                message: format!(
                    "upgrade {name} of {app} ({versions}) failed{why}. It was rolled back by {rollback} after {took}: \
                     volumes restored from their snapshots and Git reverted. {target} is now a failed version: \
                     Fluxgate refuses it unless you pass --force (`fluxgate upgrade {app} -n {namespace} --to {to_args} --force`)."
                ),
            })
        }
        (Ended::Rollback { .. }, Phase::Frozen) => Err(Outcome {
            code: EXIT_FROZEN,
            message: format!(
                "rollback {name} ({versions}) failed{why}. It is Frozen after {took}, after replacing volumes: it never \
                 resumes the app on missing or partial data, so Flux stays suspended and the workloads stopped. {}. \
                 Restore what is missing (e.g. a PVC with its safety snapshot as dataSource), then delete it \
                 (`kubectl delete rollbackrequest {name} -n {namespace}`) to put Flux and the workloads back.",
                crate::api::restores_report(&status.restores)
            ),
        }),
        (ended, Phase::Frozen) => {
            let subject = match ended {
                Ended::Upgrade { .. } => "upgrade",
                Ended::Rollback { .. } => "rollback",
            };
            Err(Outcome {
                code: EXIT_FROZEN,
                message: format!(
                    "{subject} {name} ({versions}) failed{why}. It is Frozen after {took}: nothing was undone and the app stays locked, \
                     as it was when it failed (Flux objects still suspended stay so; see `fluxgate status -n {namespace}`), for a person to look at. \
                     Undo it with `fluxgate rollback {name} -n {namespace}`, or fix the app and resume Flux yourself."
                ),
            })
        }
        (ended, _) => {
            let (subject, next) = match ended {
                Ended::Upgrade { .. } if status.commit.is_some() => (
                    "upgrade",
                    format!(
                        "The new version stays in Git; undo it with `fluxgate rollback {name} -n {namespace}`."
                    ),
                ),
                Ended::Upgrade { .. } => (
                    "upgrade",
                    "Nothing was committed; Flux and the replicas were put back.".to_owned(),
                ),
                Ended::Rollback { .. } => (
                    "rollback",
                    "Look at the app before trying again (`fluxgate status`).".to_owned(),
                ),
            };
            let retry = if status.failure.as_ref().is_some_and(|f| f.retryable) {
                " The cause may be temporary: a new request can succeed once it is fixed."
            } else {
                ""
            };
            Err(Outcome {
                code: EXIT_FAILED,
                message: format!(
                    "{subject} {name} ({versions}) failed{why} after {took}. {next}{retry}"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommitRecord, Failure, LocalObjectReference, Plan};
    use std::collections::BTreeMap;

    fn status(phase: Phase) -> RequestStatus {
        RequestStatus {
            phase: Some(phase),
            plan: Some(Plan {
                from: BTreeMap::from([("chart".into(), "v1.5.0".into())]),
                to: BTreeMap::from([("chart".into(), "v2.0.0".into())]),
                ..Plan::default()
            }),
            commit: Some(CommitRecord {
                sha: "0123456789abcdef".into(),
                message: "m".into(),
                url: None,
            }),
            ..RequestStatus::default()
        }
    }

    const UPGRADE: Ended<'static> = Ended::Upgrade {
        app: "db",
        dry_run: false,
    };

    #[test]
    fn success_is_ok_with_versions_and_commit() {
        let text = conclusion(
            UPGRADE,
            "apps",
            "db-2",
            &status(Phase::Succeeded),
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(
            text,
            "Upgraded db (v1.5.0 → v2.0.0) in 3.0s; commit 0123456789ab."
        );
        let dry = conclusion(
            Ended::Upgrade {
                app: "db",
                dry_run: true,
            },
            "apps",
            "db-2",
            &status(Phase::Succeeded),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(
            dry.contains("nothing was committed or snapshotted"),
            "{dry}"
        );
    }

    #[test]
    fn a_rolled_back_upgrade_exits_4_naming_the_reason_the_rollback_and_force() {
        let mut s = status(Phase::RolledBack);
        s.failure = Some(Failure {
            phase: Phase::Verify,
            reason: "HealthCheckFailed".into(),
            message: "0/2 pods ready".into(),
            retryable: false,
        });
        s.rollback_ref = Some(LocalObjectReference {
            name: "db-2-rollback".into(),
        });
        let outcome = conclusion(UPGRADE, "apps", "db-2", &s, Duration::from_secs(20)).unwrap_err();
        assert_eq!(outcome.code, EXIT_ROLLED_BACK);
        for part in [
            "failed in Verify: HealthCheckFailed — 0/2 pods ready",
            "rolled back by db-2-rollback",
            "v2.0.0 is now a failed version",
            "`fluxgate upgrade db -n apps --to v2.0.0 --force`",
        ] {
            assert!(
                outcome.message.contains(part),
                "{part}: {}",
                outcome.message
            );
        }
    }

    #[test]
    fn failed_and_frozen_have_their_own_codes_and_next_steps() {
        let mut failed = status(Phase::Failed);
        failed.commit = None;
        failed.failure = Some(Failure {
            phase: Phase::Snapshot,
            reason: "Timeout".into(),
            message: "snapshots not ready".into(),
            retryable: true,
        });
        let outcome =
            conclusion(UPGRADE, "apps", "db-2", &failed, Duration::from_secs(5)).unwrap_err();
        assert_eq!(outcome.code, EXIT_FAILED);
        assert!(
            outcome.message.contains("Nothing was committed"),
            "{}",
            outcome.message
        );
        assert!(
            outcome.message.contains("may be temporary"),
            "{}",
            outcome.message
        );
        let frozen = conclusion(
            UPGRADE,
            "apps",
            "db-2",
            &status(Phase::Frozen),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(frozen.code, EXIT_FROZEN);
        assert!(
            frozen.message.contains("fluxgate rollback db-2 -n apps"),
            "{}",
            frozen.message
        );
        // A rollback frozen after replacing volumes says where the data is, and no
        // rollback of a rollback.
        let mut replaced = status(Phase::Frozen);
        replaced.restores = vec![crate::api::RestoreRecord {
            pvc: "data-db-0".into(),
            snapshot: "fluxgate-u-data-db-0".into(),
            state: crate::api::RestoreState::Deleted,
            safety_snapshot: Some("fluxgate-r-data-db-0".into()),
            problem: Some(
                "VolumeSnapshot apps/fluxgate-u-data-db-0 (of PVC data-db-0) is gone".into(),
            ),
            released_volume: Some(crate::api::ReleasedVolume {
                name: "pvc-0a1b".into(),
                reclaim_policy_before: "Delete".into(),
            }),
            larger_than_manifest: None,
        }];
        let frozen = conclusion(
            Ended::Rollback { upgrade: "db-2" },
            "apps",
            "db-2-rollback",
            &replaced,
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(frozen.code, EXIT_FROZEN);
        for part in [
            "data-db-0 MISSING: deleted and not recreated from fluxgate-u-data-db-0",
            "safety snapshot fluxgate-r-data-db-0",
            "on PersistentVolume pvc-0a1b (kept: reclaim policy Retain)",
            "kubectl delete rollbackrequest db-2-rollback -n apps",
        ] {
            assert!(frozen.message.contains(part), "{part}: {}", frozen.message);
        }
        assert!(
            !frozen.message.contains("fluxgate rollback"),
            "{}",
            frozen.message
        );
    }
}
