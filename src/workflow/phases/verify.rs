//! Verify: the app healthy and staying so for the stabilization time; helm-controller's remediation counts as failure.

use super::{Needs, Seen, Step, elapsed};
use crate::api::PhaseOutcome;
use crate::workflow::actions::Decision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What this phase decides on.
pub(super) const NEEDS: Needs = Needs {
    health: true,
    ..Needs::NOTHING
};

pub(super) fn step(seen: &Seen, d: &mut Decision) -> Step {
    let (app, observed) = (seen.app, seen.observed);
    if let Some(problem) = &observed.remediation {
        return Step::Fail(problem.clone());
    }
    let Some(report) = &observed.health else {
        return Step::Wait("checking health".into());
    };
    if !report.healthy() {
        d.status.healthy_since = None;
        return Step::Wait(match &observed.retried_failure {
            Some(failure) => format!("not healthy yet: {report}; {}", failure.message),
            None => format!("not healthy yet: {report}"),
        });
    }
    let since = d.status.healthy_since.clone().unwrap_or(Time(observed.now));
    d.status.healthy_since = Some(since.clone());
    let held = elapsed(observed.now, since.0);
    if held >= app.stabilization {
        return Step::Advance(
            format!("healthy for {}s", held.as_secs()),
            PhaseOutcome::Succeeded,
        );
    }
    let remaining = app.stabilization - held;
    d.requeue_after = Some(d.requeue_after.map_or(remaining, |r| r.min(remaining)));
    Step::Wait(format!(
        "healthy for {}s of {}s",
        held.as_secs(),
        app.stabilization.as_secs()
    ))
}
