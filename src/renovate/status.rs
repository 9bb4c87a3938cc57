//! The next `status.availableUpdate` map and `UpdateAvailable` condition: what fresh
//! Renovate data offers, minus what Git already has, with why old entries went away.

use super::choice::same_version;
use crate::api::AvailableUpdate;
use crate::api::conditions::{UPDATE_AVAILABLE, condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::BTreeMap;

/// Reason of `UpdateAvailable=True`.
pub const REASON_AVAILABLE: &str = "UpdateAvailable";
/// Reason of `UpdateAvailable=False` when Renovate tracks the app's fields.
pub const REASON_UP_TO_DATE: &str = "UpToDate";
/// Reason of `UpdateAvailable=False` when no Renovate finding matches any field.
pub const REASON_NOT_TRACKED: &str = "NotTrackedByRenovate";

/// The condition to set, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateCondition {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl UpdateCondition {
    /// The Kubernetes condition (`lastTransitionTime` is settled by `set_condition`).
    pub fn to_condition(&self, observed_generation: Option<i64>, now: Time) -> Condition {
        condition(
            UPDATE_AVAILABLE,
            self.status,
            self.reason,
            self.message.clone(),
            observed_generation,
            now,
        )
    }
}

/// Why an entry of the previous map is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    pub field: String,
    pub version: String,
    pub reason: String,
}

/// The outcome of [`refresh`].
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    pub available: BTreeMap<String, AvailableUpdate>,
    /// Previous entries no longer offered (for events).
    pub cleared: Vec<Cleared>,
    pub condition: UpdateCondition,
    /// `availableUpdate` in one line for `kubectl get` (`chart=1.4.3, image=2.0.0`).
    pub summary: Option<String>,
}

/// Longest condition message written; a long list of fields is cut with `…`.
const MAX_MESSAGE_CHARS: usize = 2048;

fn bounded(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Builds the next map from the fresh offers (one per field, from [`super::choice`]) and the
/// versions in Git now. Call it only with data that was read successfully: unreadable
/// Renovate output is an error to report, not a reason to clear what is known.
///
/// An entry stays only while fresh data offers it and Git does not hold it yet; whatever
/// the previous map had beyond that is cleared, with the reason.
/// `no_offer` says, per field without an offer, why; the condition's message repeats it.
pub fn refresh(
    previous: &BTreeMap<String, AvailableUpdate>,
    fresh: &BTreeMap<String, AvailableUpdate>,
    current: &BTreeMap<String, String>,
    tracked: bool,
    no_offer: &BTreeMap<String, String>,
) -> Refreshed {
    let in_git = |field: &str, version: &str| {
        current
            .get(field)
            .is_some_and(|now| same_version(now, version))
    };
    let available: BTreeMap<String, AvailableUpdate> = fresh
        .iter()
        .filter(|(field, update)| !in_git(field, &update.version))
        .map(|(field, update)| (field.clone(), update.clone()))
        .collect();
    let mut cleared = Vec::new();
    for (field, old) in previous {
        if available
            .get(field)
            .is_some_and(|new| new.version == old.version)
        {
            continue;
        }
        let reason = if in_git(field, &old.version) {
            "Git already has it".to_owned()
        } else if let Some(new) = available.get(field) {
            format!("replaced by {}", new.version)
        } else {
            "Renovate no longer lists it".to_owned()
        };
        cleared.push(Cleared {
            field: field.clone(),
            version: old.version.clone(),
            reason,
        });
    }
    let offers: Vec<String> = available
        .iter()
        .map(|(field, update)| format!("{field}={}", update.version))
        .collect();
    let why: Vec<String> = no_offer
        .iter()
        .filter(|(field, _)| !available.contains_key(*field))
        .map(|(field, reason)| format!("{field}: {reason}"))
        .collect();
    let condition = if !available.is_empty() {
        let offered = available
            .iter()
            .map(|(field, u)| format!("{field} {} → {} ({})", u.current, u.version, u.update_type))
            .collect::<Vec<_>>()
            .join("; ");
        let message = if why.is_empty() {
            offered
        } else {
            format!("{offered}. No offer for {}", why.join("; "))
        };
        UpdateCondition {
            status: true,
            reason: REASON_AVAILABLE,
            message: bounded(message),
        }
    } else if tracked {
        let mut message = "Renovate offers no update for this app's versions".to_owned();
        if !why.is_empty() {
            message = format!("{message}: {}", why.join("; "));
        }
        UpdateCondition {
            status: false,
            reason: REASON_UP_TO_DATE,
            message: bounded(message),
        }
    } else {
        let mut message = "no Renovate finding matches this app's version fields".to_owned();
        if why.is_empty() {
            message.push_str(
                ": check that Renovate's file patterns cover the files and that its output \
                 reaches Fluxgate",
            );
        } else {
            message = format!("{message}: {}", why.join("; "));
        }
        UpdateCondition {
            status: false,
            reason: REASON_NOT_TRACKED,
            message: bounded(message),
        }
    };
    Refreshed {
        summary: (!offers.is_empty()).then(|| offers.join(", ")),
        available,
        cleared,
        condition,
    }
}
