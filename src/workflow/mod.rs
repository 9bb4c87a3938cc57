//! Pure phase machines for UpgradeRequest and RollbackRequest: (request, app policy,
//! status, observations) → decision — the new status plus the idempotent side effects to
//! perform. No I/O at all, so every decision is unit-testable. The controller observes
//! what the phase [`needs`], calls [`decide`], performs the actions, and writes the returned
//! status once. [`machine`] orders the phases; [`phases`] holds one module per phase.

pub mod actions;
mod machine;
pub mod observations;
pub mod phases;
pub mod policy;
mod transitions;

#[cfg(test)]
mod tests;

pub use actions::{Action, Decision, Finish, Note};
pub use machine::{decide, on_action_error, rollback_name};
pub use observations::{
    ClaimState, CommitState, LockState, ObjectKey, Observed, ObservedKind, Problem, SnapshotState,
};
pub use phases::{Needs, SNAPSHOT_UNUSABLE, needs, sources_needed};
pub use policy::{AppPolicy, Request, RequestKind};
