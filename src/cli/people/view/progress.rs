//! Live progress of a request, as lines: each status seen while following a request is fed
//! in, and only what is new since the last one comes out — a line per phase change with the
//! elapsed time and the phase's message, then snapshots as they become ready, the commit,
//! the automatic rollback, and the end with the time each phase took.

use super::{elapsed, phase_name, ready_message, seconds_between, short_sha, transition, whole};
use crate::api::{Phase, RequestStatus};
use std::collections::BTreeSet;
use std::time::Duration;

/// What has been shown of one request so far.
#[derive(Debug, Default)]
struct Shown {
    label: String,
    phases: usize,
    phase: Option<Phase>,
    /// When the running phase was first seen (its live duration is measured from it).
    phase_seen_at: Option<Duration>,
    message: String,
    plan: bool,
    snapshots: BTreeSet<String>,
    commit: bool,
    rollback: bool,
    finished: bool,
}

/// The progress of the requests being followed (an upgrade and its rollback).
#[derive(Debug, Default)]
pub struct Progress {
    shown: Vec<Shown>,
}

/// Width of the label column, so an upgrade's lines and its rollback's line up.
const LABEL_WIDTH: usize = 8;
/// Width of the phase column.
const PHASE_WIDTH: usize = 14;

fn line(at: Duration, label: &str, phase: &str, text: &str) -> String {
    let at = format!("+{}", elapsed(at));
    format!("{at:>8}  {label:<LABEL_WIDTH$} {phase:<PHASE_WIDTH$} {text}")
        .trim_end()
        .to_owned()
}

impl Progress {
    /// A tracker that has shown nothing yet.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// The new lines for `status` of the request shown as `label` (`upgrade`, `rollback`),
    /// observed `at` after following started.
    pub fn observe(
        &mut self,
        label: &str,
        status: Option<&RequestStatus>,
        at: Duration,
    ) -> Vec<String> {
        let index = match self.shown.iter().position(|s| s.label == label) {
            Some(index) => index,
            None => {
                self.shown.push(Shown {
                    label: label.to_owned(),
                    ..Shown::default()
                });
                self.shown.len() - 1
            }
        };
        let shown = &mut self.shown[index];
        let mut out = Vec::new();
        let Some(status) = status else {
            return out;
        };
        if shown.finished {
            return out;
        }
        let message = ready_message(status).unwrap_or_default().to_owned();
        // Phases that started since the last look, including any that began and ended
        // between two observations (the audit trail has them all). The operator's message
        // on entering a phase says what the previous one achieved.
        let records = &status.phases;
        for (i, record) in records.iter().enumerate().skip(shown.phases) {
            let is_current = i + 1 == records.len() && status.phase == Some(record.name);
            let entry_message = if is_current {
                message.clone()
            } else {
                String::new()
            };
            let text = match i.checked_sub(1).map(|p| &records[p]) {
                None => entry_message.clone(),
                Some(previous) => {
                    let took = (i == shown.phases)
                        .then_some(shown.phase_seen_at)
                        .flatten()
                        .map_or(String::new(), |seen| {
                            format!(" {}", elapsed(at.saturating_sub(seen)))
                        });
                    let mut text = format!("after {}{took}", previous.name);
                    if !entry_message.is_empty() {
                        text.push_str(&format!(": {entry_message}"));
                    }
                    text
                }
            };
            out.push(line(at, label, &record.name.to_string(), &text));
            shown.phase_seen_at = Some(at);
            if is_current {
                shown.message = message.clone();
            }
        }
        let new_records = records.len() > shown.phases;
        shown.phases = records.len();
        if !shown.plan
            && let Some(plan) = &status.plan
            && !plan.to.is_empty()
        {
            shown.plan = true;
            let mut parts = vec![transition(&plan.from, &plan.to)];
            if !plan.volumes.is_empty() {
                parts.push(format!("{} volume(s)", plan.volumes.len()));
            }
            if !plan.workloads.is_empty() {
                parts.push(format!("{} workload(s)", plan.workloads.len()));
            }
            if !plan.flux_objects.is_empty() {
                parts.push(format!("{} Flux object(s)", plan.flux_objects.len()));
            }
            out.push(line(at, label, "", &format!("plan: {}", parts.join(", "))));
        }
        for snapshot in &status.snapshots {
            if snapshot.ready_to_use && shown.snapshots.insert(snapshot.name.clone()) {
                out.push(line(
                    at,
                    label,
                    "",
                    &format!(
                        "snapshot {} of PVC {} is ready",
                        snapshot.name, snapshot.pvc
                    ),
                ));
            }
        }
        if !shown.commit
            && let Some(commit) = &status.commit
        {
            shown.commit = true;
            let mut text = format!(
                "committed {} \"{}\"",
                short_sha(&commit.sha),
                commit.message
            );
            if let Some(url) = &commit.url {
                text.push_str(&format!(" {url}"));
            }
            out.push(line(at, label, "", &text));
        }
        if !shown.rollback
            && let Some(rollback) = &status.rollback_ref
        {
            shown.rollback = true;
            out.push(line(
                at,
                label,
                "",
                &format!("created RollbackRequest {} to undo it", rollback.name),
            ));
        }
        let phase = status.phase;
        if phase.is_some_and(Phase::is_terminal) {
            shown.finished = true;
            let mut text = match records.last() {
                Some(last) => {
                    // Only a phase seen running in an earlier look has a live duration.
                    let took = shown
                        .phase_seen_at
                        .filter(|_| !new_records)
                        .map_or(String::new(), |seen| {
                            format!(" {}", elapsed(at.saturating_sub(seen)))
                        });
                    format!("after {}{took}", last.name)
                }
                None => String::new(),
            };
            if !message.is_empty() {
                text = if text.is_empty() {
                    message.clone()
                } else {
                    format!("{text}: {message}")
                };
            }
            out.push(line(at, label, &phase_name(phase), &text));
            if let Some(failure) = &status.failure {
                out.push(line(
                    at,
                    label,
                    "",
                    &format!(
                        "failed in {}: {} — {}",
                        failure.phase, failure.reason, failure.message
                    ),
                ));
            }
            let timings = phase_timings(status);
            if !timings.is_empty() {
                out.push(line(at, label, "", &format!("phase times: {timings}")));
            }
        } else if !new_records
            && !message.is_empty()
            && message != shown.message
            && phase != Some(Phase::RollingBack)
        {
            // Progress inside the running phase ("1/2 snapshots ready"). While an upgrade
            // rolls back, its messages only echo the rollback's phase, whose own lines show.
            shown.message = message.clone();
            out.push(line(at, label, "", &message));
        }
        shown.phase = phase;
        out
    }
}

/// How long each finished phase took, from the audit trail: `Suspend <1s, Snapshot 12s`.
pub fn phase_timings(status: &RequestStatus) -> String {
    status
        .phases
        .iter()
        .filter_map(|record| {
            let done = record.completed_at.as_ref()?;
            Some(format!(
                "{} {}",
                record.name,
                whole(seconds_between(record.started_at.0, done.0))
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{READY, condition};
    use crate::api::{
        CommitRecord, Failure, LocalObjectReference, PhaseOutcome, PhaseRecord, Plan,
        SnapshotRecord,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    fn record(phase: Phase, start: i64, end: Option<i64>) -> PhaseRecord {
        PhaseRecord {
            name: phase,
            started_at: at(start),
            completed_at: end.map(at),
            outcome: end.map(|_| PhaseOutcome::Succeeded),
            message: Some(format!("{phase:?} done")),
        }
    }

    fn status(phase: Phase, records: Vec<PhaseRecord>, message: &str) -> RequestStatus {
        RequestStatus {
            phase: Some(phase),
            phases: records,
            conditions: vec![condition(
                READY,
                phase == Phase::Succeeded,
                "Test",
                message,
                None,
                at(0),
            )],
            ..RequestStatus::default()
        }
    }

    #[test]
    fn each_phase_change_is_one_line_with_time_and_message() {
        let mut progress = Progress::new();
        assert!(
            progress
                .observe("upgrade", None, Duration::from_millis(100))
                .is_empty()
        );
        let mut s = status(
            Phase::Suspend,
            vec![
                record(Phase::Admit, 0, Some(0)),
                record(Phase::Suspend, 0, None),
            ],
            "suspending 3 Flux objects",
        );
        s.plan = Some(Plan {
            from: BTreeMap::from([("chart".into(), "v1.4.0".into())]),
            to: BTreeMap::from([("chart".into(), "v1.5.0".into())]),
            ..Plan::default()
        });
        let lines = progress.observe("upgrade", Some(&s), Duration::from_millis(1200));
        assert_eq!(
            lines,
            vec![
                "   +1.2s  upgrade  Admit",
                "   +1.2s  upgrade  Suspend        after Admit: suspending 3 Flux objects",
                "   +1.2s  upgrade                 plan: v1.4.0 → v1.5.0",
            ]
        );
        // The same status again shows nothing new.
        assert!(
            progress
                .observe("upgrade", Some(&s), Duration::from_secs(2))
                .is_empty()
        );
        // The next phase says how long the one seen running took, live.
        s.phases[1].completed_at = Some(at(2));
        s.phases.push(record(Phase::Quiesce, 2, None));
        s.phase = Some(Phase::Quiesce);
        s.conditions[0].message = "2 Flux objects suspended".into();
        let lines = progress.observe("upgrade", Some(&s), Duration::from_millis(3000));
        assert_eq!(
            lines,
            vec!["   +3.0s  upgrade  Quiesce        after Suspend 1.8s: 2 Flux objects suspended"]
        );
    }

    #[test]
    fn progress_inside_a_phase_snapshots_and_commit_appear_once() {
        let mut progress = Progress::new();
        let mut s = status(
            Phase::Snapshot,
            vec![record(Phase::Snapshot, 0, None)],
            "0/2 snapshots ready",
        );
        progress.observe("upgrade", Some(&s), Duration::from_secs(1));
        s.conditions[0].message = "1/2 snapshots ready".into();
        s.snapshots = vec![SnapshotRecord {
            pvc: "data-db-0".into(),
            name: "db-abc-data-db-0".into(),
            ready_to_use: true,
            restore_size: None,
            error: None,
            snapshot_handle: None,
        }];
        let lines = progress.observe("upgrade", Some(&s), Duration::from_secs(2));
        assert_eq!(
            lines,
            vec![
                "   +2.0s  upgrade                 snapshot db-abc-data-db-0 of PVC data-db-0 is ready",
                "   +2.0s  upgrade                 1/2 snapshots ready",
            ]
        );
        s.commit = Some(CommitRecord {
            sha: "0123456789abcdef0123".into(),
            message: "db: chart v1.5.0".into(),
            url: None,
        });
        let lines = progress.observe("upgrade", Some(&s), Duration::from_secs(3));
        assert_eq!(
            lines,
            vec!["   +3.0s  upgrade                 committed 0123456789ab \"db: chart v1.5.0\""]
        );
    }

    #[test]
    fn the_end_says_how_it_ended_why_and_how_long_each_phase_took() {
        let mut progress = Progress::new();
        let mut s = status(
            Phase::RolledBack,
            vec![
                record(Phase::Admit, 0, Some(0)),
                record(Phase::Verify, 0, Some(8)),
                record(Phase::RollingBack, 8, Some(75)),
            ],
            "rolled back: data restored and Git reverted",
        );
        s.failure = Some(Failure {
            phase: Phase::Verify,
            reason: "HealthCheckFailed".into(),
            message: "StatefulSet apps/db: 0/2 ready".into(),
            retryable: false,
        });
        s.rollback_ref = Some(LocalObjectReference {
            name: "db-2-rollback".into(),
        });
        let lines = progress.observe("upgrade", Some(&s), Duration::from_secs(80));
        assert!(lines.contains(&"  +1m20s  upgrade                 created RollbackRequest db-2-rollback to undo it".to_owned()), "{lines:#?}");
        assert!(
            lines.contains(
                &"  +1m20s  upgrade  RolledBack     after RollingBack: rolled back: data restored and Git reverted"
                    .to_owned()
            ),
            "{lines:#?}"
        );
        assert!(lines.contains(&"  +1m20s  upgrade                 failed in Verify: HealthCheckFailed — StatefulSet apps/db: 0/2 ready".to_owned()), "{lines:#?}");
        assert_eq!(
            lines.last().unwrap(),
            "  +1m20s  upgrade                 phase times: Admit <1s, Verify 8s, RollingBack 1m07s"
        );
        // Finished requests stay quiet.
        assert!(
            progress
                .observe("upgrade", Some(&s), Duration::from_secs(81))
                .is_empty()
        );
    }

    #[test]
    fn an_upgrade_and_its_rollback_are_tracked_apart() {
        let mut progress = Progress::new();
        let up = status(
            Phase::RollingBack,
            vec![record(Phase::RollingBack, 0, None)],
            "rolling back",
        );
        let down = status(
            Phase::Restore,
            vec![record(Phase::Restore, 0, None)],
            "restoring 2 volumes",
        );
        assert_eq!(
            progress.observe("upgrade", Some(&up), Duration::ZERO).len(),
            1
        );
        let lines = progress.observe("rollback", Some(&down), Duration::ZERO);
        assert_eq!(
            lines,
            vec!["   +0.0s  rollback Restore        restoring 2 volumes"]
        );
    }
}
