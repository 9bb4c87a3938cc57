//! Status the way Flux and Kubernetes write it: conditions with transition times,
//! timestamps, Go durations, and the `suspend` and `requestedAt` fields sims obey.

use serde_json::{Value, json};
use std::time::Duration;

/// Now, as RFC 3339 with second precision (what Kubernetes writes).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Parses a Go-style duration as Flux writes them (`1m`, `30s`, `1h30m`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * scale);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A status condition as Flux and Kubernetes write them.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    let mut c = json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now(),
    });
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

/// Sets `new` in `conditions` (by type), keeping the old `lastTransitionTime` when the
/// status did not change, as apimachinery's `SetStatusCondition` does.
pub fn set_condition(conditions: &mut Vec<Value>, mut new: Value) {
    match conditions.iter_mut().find(|c| c["type"] == new["type"]) {
        Some(old) => {
            if old["status"] == new["status"] {
                new["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Removes the condition of `type_`.
pub fn remove_condition(conditions: &mut Vec<Value>, type_: &str) {
    conditions.retain(|c| c["type"] != type_);
}

/// The conditions array of an object's status (empty when absent).
pub fn conditions_of(obj: &Value) -> Vec<Value> {
    obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `reconcile.fluxcd.io/requestedAt` annotation, Flux's "reconcile now" request.
pub fn requested_at(obj: &Value) -> Option<String> {
    obj["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        .as_str()
        .map(str::to_owned)
}

/// Whether `spec.suspend` is true.
pub fn suspended(obj: &Value) -> bool {
    obj["spec"]["suspend"].as_bool().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_flux_writes_them() {
        assert_eq!(parse_go_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("10x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let mut cs = vec![json!({"type": "Ready", "status": "True", "lastTransitionTime": "old"})];
        set_condition(&mut cs, condition("Ready", "True", "R", "m", Some(2)));
        assert_eq!(cs[0]["lastTransitionTime"], "old");
        set_condition(&mut cs, condition("Ready", "False", "R", "m", Some(2)));
        assert_ne!(cs[0]["lastTransitionTime"], "old");
    }
}
