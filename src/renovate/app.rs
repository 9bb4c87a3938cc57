//! One ManagedApp's view of Renovate's findings in one call: mapping, the choice per field
//! and the refreshed `availableUpdate` map and condition, for the controller to write.

use super::choice::{self, FieldChoice};
use super::mapping::{self, ResolvedField, Scope};
use super::model::Finding;
use super::status::{self, Refreshed};
use crate::api::{AvailableUpdate, FailedVersion, UpdatePolicy};
use std::collections::BTreeMap;

/// What the app is and has, besides the findings.
#[derive(Debug, Clone, Copy)]
pub struct AppContext<'a> {
    /// The app's version fields, resolved against Git.
    pub fields: &'a [ResolvedField],
    /// The app's repository and branch.
    pub scope: &'a Scope,
    pub policy: &'a UpdatePolicy,
    /// `status.failedVersions`.
    pub failed: &'a [FailedVersion],
    /// `status.availableUpdate` as last written.
    pub previous: &'a BTreeMap<String, AvailableUpdate>,
}

/// The outcome for one app.
#[derive(Debug, Clone, PartialEq)]
pub struct AppUpdates {
    /// One per field Renovate reported on, in field order.
    pub choices: Vec<FieldChoice>,
    /// The next `availableUpdate`, `UpdateAvailable` condition and one-line summary.
    pub refreshed: Refreshed,
    /// Near misses and unusable fields, for a person debugging the setup.
    pub notes: Vec<String>,
}

/// Maps `findings` to the app's fields, chooses per field and refreshes the status.
pub fn evaluate(app: AppContext<'_>, findings: &[Finding]) -> AppUpdates {
    let mapping = mapping::map_findings(app.fields, findings, app.scope);
    let mut notes = mapping.notes;
    let mut no_offer = mapping.unmatched;
    let mut current = BTreeMap::new();
    let mut choices = Vec::new();
    for field in app.fields {
        if let Ok(version) = field.current_version() {
            current.insert(field.name.clone(), version);
        }
        let Some(matched) = mapping.matches.get(&field.name) else {
            continue;
        };
        for finding in matched {
            for other in &finding.not_offered {
                notes.push(format!(
                    "{}: Renovate proposes {} `{}` for {}, not offered: {}",
                    field.name, other.kind, other.new_value, finding.dep_name, other.reason
                ));
            }
        }
        match choice::choose(field, matched, app.policy.auto, app.failed) {
            Ok(choice) => {
                if choice.chosen.is_none() {
                    no_offer.insert(field.name.clone(), why_no_offer(&choice, matched));
                }
                choices.push(choice);
            }
            Err(reason) => {
                no_offer.insert(field.name.clone(), reason.clone());
                notes.push(format!("{}: {reason}", field.name));
            }
        }
    }
    let fresh: BTreeMap<String, AvailableUpdate> = choices
        .iter()
        .filter_map(|c| Some((c.field.clone(), c.available_update()?)))
        .collect();
    let refreshed = status::refresh(
        app.previous,
        &fresh,
        &current,
        !mapping.matches.is_empty(),
        &no_offer,
    );
    AppUpdates {
        choices,
        refreshed,
        notes,
    }
}

/// Why a field Renovate tracks has no offer: what was skipped, what is not a version move,
/// or that Renovate lists nothing newer.
fn why_no_offer(choice: &FieldChoice, matched: &[Finding]) -> String {
    let mut reasons: Vec<String> = choice
        .skipped
        .iter()
        .map(|s| format!("{} skipped: {}", s.version, s.reason))
        .collect();
    reasons.extend(
        matched
            .iter()
            .flat_map(|f| &f.not_offered)
            .map(|o| format!("{} `{}` not offered: {}", o.kind, o.new_value, o.reason)),
    );
    if reasons.is_empty() {
        format!("Renovate lists no update from {}", choice.current)
    } else {
        reasons.join("; ")
    }
}
