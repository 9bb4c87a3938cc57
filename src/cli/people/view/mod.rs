//! Pure rendering for the people's commands: API objects in, text out. No I/O here, so
//! every line a person reads is covered by unit tests.

pub mod history;
pub mod outcome;
pub mod progress;
pub mod status;
pub mod table;

use crate::api::{Phase, RequestStatus};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// A duration for people: `0.4s` and `12.3s` under a minute (live progress),
/// `3m07s`, `1h05m` above.
pub fn elapsed(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    whole(duration.as_secs())
}

/// Whole seconds for people: `<1s`, `42s`, `3m07s`, `1h05m`, `2d03h` (timestamps in the
/// API have one-second resolution).
pub fn whole(secs: u64) -> String {
    match secs {
        0 => "<1s".to_owned(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Seconds from `from` to `to`, zero when the clock went backwards.
pub fn seconds_between(from: Timestamp, to: Timestamp) -> u64 {
    let secs = to.as_second() - from.as_second();
    u64::try_from(secs).unwrap_or(0)
}

/// `a → b` for each version name; a single field shows only the versions.
pub fn transition(from: &BTreeMap<String, String>, to: &BTreeMap<String, String>) -> String {
    if to.is_empty() {
        return "-".to_owned();
    }
    let single = to.len() == 1 && from.keys().all(|k| to.contains_key(k));
    to.iter()
        .map(|(name, new)| {
            let old = from.get(name).map_or("?", String::as_str);
            if single {
                format!("{old} → {new}")
            } else {
                format!("{name} {old} → {new}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A phase's name as people read it.
pub fn phase_name(phase: Option<Phase>) -> String {
    match phase {
        None => "Pending".to_owned(),
        Some(phase) => phase.to_string(),
    }
}

/// The Ready condition's message: what the request is doing now, or how it ended.
pub fn ready_message(status: &RequestStatus) -> Option<&str> {
    crate::api::conditions::find_condition(&status.conditions, crate::api::conditions::READY)
        .map(|c| c.message.as_str())
        .filter(|m| !m.is_empty())
}

/// The first `len` characters of a commit SHA.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(elapsed(Duration::from_millis(430)), "0.4s");
        assert_eq!(elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(elapsed(Duration::from_secs(187)), "3m07s");
        assert_eq!(whole(0), "<1s");
        assert_eq!(whole(42), "42s");
        assert_eq!(whole(3900), "1h05m");
        assert_eq!(whole(2 * 86_400 + 3 * 3600), "2d03h");
    }

    #[test]
    fn transitions_name_fields_only_when_there_are_several() {
        let from = BTreeMap::from([("chart".to_owned(), "v1.4.0".to_owned())]);
        let to = BTreeMap::from([("chart".to_owned(), "v1.5.0".to_owned())]);
        assert_eq!(transition(&from, &to), "v1.4.0 → v1.5.0");
        let to2 = BTreeMap::from([
            ("chart".to_owned(), "v1.5.0".to_owned()),
            ("image".to_owned(), "16.4".to_owned()),
        ]);
        assert_eq!(
            transition(&from, &to2),
            "chart v1.4.0 → v1.5.0, image ? → 16.4"
        );
        assert_eq!(transition(&BTreeMap::new(), &BTreeMap::new()), "-");
    }

    #[test]
    fn short_shas_never_panic() {
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha("0123456789abcdef"), "0123456789ab");
    }
}
