//! Commit and Revert: the plan's target versions committed and pushed once (found again by the request's UID trailer), or already in Git.

use super::{Needs, Seen, Step};
use crate::api::{PhaseOutcome, versions_summary};
use crate::workflow::actions::{Action, Decision};
use crate::workflow::observations::CommitState;
use crate::workflow::policy::RequestKind;
use std::time::Duration;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    commit: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (request, plan, observed) = (seen.request, seen.plan, seen.observed);
    match &observed.commit {
        CommitState::Pushed(record) | CommitState::AlreadyAtTarget(record) => {
            d.status.commit = Some(record.clone());
            Step::Advance(
                format!("committed {}", short(&record.sha)),
                PhaseOutcome::Succeeded,
            )
        }
        CommitState::NotFound => {
            let verb = if request.kind == RequestKind::Upgrade {
                "upgrade"
            } else {
                "roll back"
            };
            d.actions.push(Action::Commit {
                versions: plan.to.clone(),
                subject: format!("fluxgate: {verb} to {}", versions_summary(&plan.to)),
            });
            // A push raises no watch event: look again right away.
            d.requeue_after = Some(Duration::ZERO);
            Step::Wait("committing and pushing".into())
        }
        CommitState::Unknown => {
            d.requeue_after = Some(Duration::ZERO);
            Step::Wait("looking for the commit in Git".into())
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
