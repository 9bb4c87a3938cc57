//! Status bookkeeping for phase changes: the audit trail, `phaseStartedAt`, kstatus
//! conditions and the Events that tell the story.

use super::actions::{Decision, Note};
use crate::api::conditions::{
    READY, RECONCILING, STALLED, condition, remove_condition, set_condition,
};
use crate::api::{Failure, Phase, PhaseOutcome, PhaseRecord, RequestStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Ends the current phase with `outcome` and starts `next`, with a message for people.
pub fn enter(
    decision: &mut Decision,
    next: Phase,
    outcome: PhaseOutcome,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let status = &mut decision.status;
    if let Some(open) = status
        .phases
        .last_mut()
        .filter(|p| p.completed_at.is_none())
    {
        open.completed_at = Some(Time(now));
        open.outcome = Some(outcome);
        // The message of a transition says how the phase ended, so the audit trail keeps it
        // with that phase rather than with the next.
        open.message = Some(message.to_owned());
    }
    status.phase = Some(next);
    status.phase_started_at = Some(Time(now));
    status.healthy_since = None;
    if !next.is_terminal() {
        status.phases.push(PhaseRecord {
            name: next,
            started_at: Time(now),
            completed_at: None,
            outcome: None,
            message: None,
        });
    }
    let warning = matches!(
        next,
        Phase::Failed | Phase::Frozen | Phase::RolledBack | Phase::RollingBack
    );
    decision.notes.push(Note {
        warning,
        reason: format!("{next:?}"),
        message: message.to_owned(),
    });
    set_conditions(status, message, now, generation);
}

/// Records a failure (the first one wins: later ones happen while undoing it).
pub fn record_failure(
    status: &mut RequestStatus,
    phase: Phase,
    reason: &str,
    message: &str,
    retryable: bool,
) {
    if status.failure.is_none() {
        status.failure = Some(Failure {
            phase,
            reason: reason.to_owned(),
            message: message.to_owned(),
            retryable,
        });
    }
}

/// Updates the message of the running phase (audit trail and conditions) without a phase
/// change; conditions keep their transition times.
pub fn progress(
    status: &mut RequestStatus,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    if let Some(open) = status
        .phases
        .last_mut()
        .filter(|p| p.completed_at.is_none())
    {
        open.message = Some(message.to_owned());
    }
    set_conditions(status, message, now, generation);
}

/// kstatus: in progress → Reconciling=True, Ready=False; Succeeded → Ready=True; other
/// terminal phases → Stalled=True, Ready=False with the failure's reason.
fn set_conditions(
    status: &mut RequestStatus,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let phase = status.phase.unwrap_or(Phase::Queued);
    let phase_name = format!("{phase:?}");
    let now = Time(now);
    status.observed_generation = generation;
    let conditions = &mut status.conditions;
    match phase {
        Phase::Succeeded => {
            set_condition(
                conditions,
                condition(READY, true, "Succeeded", message, generation, now),
            );
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        Phase::Failed | Phase::RolledBack | Phase::Frozen => {
            let reason = status
                .failure
                .as_ref()
                .map_or(phase_name.clone(), |f| f.reason.clone());
            set_condition(
                conditions,
                condition(READY, false, &reason, message, generation, now.clone()),
            );
            set_condition(
                conditions,
                condition(STALLED, true, &phase_name, message, generation, now),
            );
            remove_condition(conditions, RECONCILING);
        }
        _ => {
            set_condition(
                conditions,
                condition(READY, false, &phase_name, message, generation, now.clone()),
            );
            set_condition(
                conditions,
                condition(RECONCILING, true, &phase_name, message, generation, now),
            );
            remove_condition(conditions, STALLED);
        }
    }
}
