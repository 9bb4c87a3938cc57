//! What the machine needs to know about a request and its app: the request's kind and
//! switches, and the app's timeouts, failure policy and stabilization time.

use crate::api::{GoDuration, HealthPolicy, ManagedAppSpec, OnFailure, Phase, PhaseTimeouts};
use std::collections::BTreeMap;
use std::time::Duration;

/// The two kinds of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// An UpgradeRequest.
    Upgrade,
    /// A RollbackRequest.
    Rollback,
}

/// The parts of a request the machine uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Upgrade or rollback.
    pub kind: RequestKind,
    /// The request's name.
    pub name: String,
    /// The request's UID (names its snapshots and tags its commit).
    pub uid: String,
    /// `metadata.generation`, reported back as `observedGeneration`.
    pub generation: Option<i64>,
    /// Check and cycle only; never commit, snapshot or restore.
    pub dry_run: bool,
    /// Do not snapshot (upgrade: `skipSnapshot` or snapshots disabled; rollback: no safety
    /// snapshot).
    pub skip_snapshot: bool,
    /// The request is being deleted: undo and let it go.
    pub deleting: bool,
    /// A rollback: the target versions of the upgrade it undoes, recorded as failed when it
    /// succeeds (empty for an upgrade).
    pub undoes: BTreeMap<String, String>,
}

/// The app's settings that shape a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPolicy {
    /// What happens when an upgrade fails after its commit.
    pub on_failure: OnFailure,
    /// How long healthy must hold in Verify.
    pub stabilization: Duration,
    /// Per-phase timeouts.
    pub timeouts: Timeouts,
}

/// Per-phase timeouts, resolved from the ManagedApp with the defaults the API reference (docs/api.md) documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Suspend (default 2m); also the dry-run preflight.
    pub suspend: Duration,
    /// Quiesce (default 5m).
    pub quiesce: Duration,
    /// Snapshot and SafetySnapshot (default 30m).
    pub snapshot: Duration,
    /// Commit and Revert (default 2m).
    pub commit: Duration,
    /// Reconcile (default 10m).
    pub reconcile: Duration,
    /// Verify (`health.timeout`, default 5m).
    pub verify: Duration,
    /// Restore (default 30m).
    pub restore: Duration,
}

impl Timeouts {
    /// The timeout of a phase; None for phases that wait without limit (Queued, Resume —
    /// Flux must never be left suspended — and RollingBack, which its rollback bounds).
    pub fn of(&self, phase: Phase) -> Option<Duration> {
        Some(match phase {
            Phase::Preflight | Phase::Suspend => self.suspend,
            Phase::Quiesce => self.quiesce,
            Phase::Snapshot | Phase::SafetySnapshot => self.snapshot,
            Phase::Commit | Phase::Revert => self.commit,
            Phase::Reconcile => self.reconcile,
            Phase::Verify => self.verify,
            Phase::Restore => self.restore,
            _ => return None,
        })
    }
}

fn or_default(value: Option<&GoDuration>, default: Duration) -> Duration {
    // The schema refuses unparsable durations; an object that bypassed it gets the default.
    value.and_then(|d| d.to_std().ok()).unwrap_or(default)
}

impl AppPolicy {
    /// The policy of a request whose ManagedApp is gone: the default timeouts, and a
    /// failure resumes (nothing can be rolled back or verified without the app).
    pub fn without_app() -> AppPolicy {
        AppPolicy::from_settings(
            &PhaseTimeouts::default(),
            &HealthPolicy::default(),
            OnFailure::Resume,
        )
    }

    /// The policy of a ManagedApp, defaults filled in.
    pub fn from_spec(spec: &ManagedAppSpec) -> AppPolicy {
        AppPolicy::from_settings(&spec.timeouts, &spec.health, spec.rollback.on_failure)
    }

    fn from_settings(t: &PhaseTimeouts, health: &HealthPolicy, on_failure: OnFailure) -> AppPolicy {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        AppPolicy {
            on_failure,
            stabilization: or_default(Some(&health.stabilization), Duration::from_secs(30)),
            timeouts: Timeouts {
                suspend: or_default(t.suspend.as_ref(), minutes(2)),
                quiesce: or_default(t.quiesce.as_ref(), minutes(5)),
                snapshot: or_default(t.snapshot.as_ref(), minutes(30)),
                commit: or_default(t.commit.as_ref(), minutes(2)),
                reconcile: or_default(t.reconcile.as_ref(), minutes(10)),
                verify: or_default(Some(&health.timeout), minutes(5)),
                restore: or_default(t.restore.as_ref(), minutes(30)),
            },
        }
    }
}
