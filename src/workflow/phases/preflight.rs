//! Preflight (dry runs): the checks a real run would meet — push access, snapshot classes,
//! RBAC — run once; their notes go into the message, a failure fails the dry run.

use super::{Needs, Seen, Step};
use crate::api::PhaseOutcome;
use crate::workflow::actions::Decision;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    preflight: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, _: &mut Decision) -> Step {
    match &seen.observed.preflight {
        None => Step::Wait("running preflight checks".into()),
        Some(Ok(notes)) if notes.is_empty() => {
            Step::Advance("preflight checks passed".into(), PhaseOutcome::Succeeded)
        }
        Some(Ok(notes)) => Step::Advance(
            format!("preflight checks passed; {notes}"),
            PhaseOutcome::Succeeded,
        ),
        Some(Err(problem)) => Step::Fail(problem.clone()),
    }
}
