//! Renovate-driven updates, pure: reading Renovate's output, matching it to a ManagedApp's
//! version fields, choosing the update per policy, and deciding automatic upgrades.
//!
//! Nothing here does I/O; the ManagedApp controller reads the inputs (ConfigMap keys or a
//! mounted file) and the Git values, calls in, and writes what comes back. The pieces:
//! - [`model`]: the normalised findings, bounds, and the shared `packageFiles` reader;
//! - [`report`] and [`log`]: the two output formats; [`input`]: detection and merging;
//! - [`mapping`]: which findings belong to which version field;
//! - [`choice`]: candidates and the `availableUpdate` per field;
//! - [`schedule`]: five-field cron schedules and maintenance windows in a time zone;
//! - [`policy`]: the automatic-upgrade decision and the request's name and labels;
//! - [`status`]: the new `availableUpdate` map and the `UpdateAvailable` condition;
//! - [`app`]: mapping, choice and status for one app in one call.
//!
//! The controller's order: [`parse_inputs`] once per change of Renovate's output, then per
//! app [`app::evaluate`] (write `refreshed` to the status) and [`policy::auto_upgrade`]
//! (create the request it names, if any).

pub mod app;
pub mod choice;
pub mod input;
pub mod log;
pub mod mapping;
pub mod model;
pub mod policy;
pub mod report;
pub mod schedule;
pub mod status;

#[cfg(test)]
mod tests;

pub use input::{InputError, Parsed, parse_inputs};
pub use model::{Finding, Problem, RenovateUpdateType, Summary, Update};
