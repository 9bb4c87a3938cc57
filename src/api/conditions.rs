//! Conditions in the Kubernetes style, and the rule that `lastTransitionTime` moves only
//! when a condition's status changes (otherwise every status write would re-trigger the
//! controller that watches it).

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition type: the object is in its desired state.
pub const READY: &str = "Ready";
/// Condition type (kstatus): the object is being worked on.
pub const RECONCILING: &str = "Reconciling";
/// Condition type (kstatus): the object cannot make progress without a change.
pub const STALLED: &str = "Stalled";
/// Condition type of a ManagedApp: Renovate offers an update.
pub const UPDATE_AVAILABLE: &str = "UpdateAvailable";
/// ManagedApp: an upgrade would snapshot every volume of the app (`status.protection`).
pub const PROTECTED: &str = "Protected";

/// Builds a condition; `lastTransitionTime` is settled by [`set_condition`].
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Inserts or replaces the condition of the same type, keeping the old
/// `lastTransitionTime` when the status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// Removes the condition of the given type, if present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            condition(READY, false, "Working", "a", None, at(10)),
        );
        set_condition(
            &mut conditions,
            condition(READY, false, "Working", "b", None, at(20)),
        );
        let ready = find_condition(&conditions, READY).unwrap();
        assert_eq!(ready.last_transition_time, at(10));
        assert_eq!(ready.message, "b");

        set_condition(
            &mut conditions,
            condition(READY, true, "Done", "c", None, at(30)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(30));
        remove_condition(&mut conditions, READY);
        assert!(conditions.is_empty());
    }
}
