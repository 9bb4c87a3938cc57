//! Names in labels: a label value is at most 63 characters (alphanumeric at both ends), an
//! object name up to 253, so a name Fluxgate puts in a label is written as it is when it
//! fits and otherwise shortened with a stable hash, with the full name in an annotation of
//! the same key; a lookup selects by the label value and then checks the name.

use std::collections::BTreeMap;

/// Longest label value the API server accepts.
pub const MAX_LABEL_VALUE: usize = 63;

/// Whether `value` is a valid label value: at most 63 characters of `[A-Za-z0-9-_.]`,
/// alphanumeric at both ends (or empty).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= MAX_LABEL_VALUE
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// The label value naming `name`: the name itself when it is a valid label value, else its
/// first characters (lowercased, separators kept) and 8 hex digits of a stable hash of the
/// whole name — deterministic across restarts and releases, and different for names that
/// share a long prefix.
pub fn label_value(name: &str) -> String {
    if is_label_value(name) {
        return name.to_owned();
    }
    let hash = format!(
        "{:08x}",
        crate::api::common::fnv1a(name.as_bytes()) & 0xffff_ffff
    );
    let mut prefix: String = crate::api::common::dns_piece(name)
        .chars()
        .take(MAX_LABEL_VALUE - hash.len() - 1)
        .collect();
    while prefix.ends_with(['-', '.', '_']) {
        prefix.pop();
    }
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Labels `key` with the label value of `name` and keeps the full name in the annotation
/// `key`.
pub fn set_name(
    labels: &mut BTreeMap<String, String>,
    annotations: &mut BTreeMap<String, String>,
    key: &str,
    name: &str,
) {
    labels.insert(key.to_owned(), label_value(name));
    annotations.insert(key.to_owned(), name.to_owned());
}

/// The selector `key=<label value of name>`; what it finds must still pass [`names`].
pub fn selector(key: &str, name: &str) -> String {
    format!("{key}={}", label_value(name))
}

/// Whether an object with these labels and annotations names `name` under `key`: the
/// annotation holds it, or — on objects labelled before names were kept in annotations,
/// which only a name that fit the label could be — the label does.
pub fn names(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    name: &str,
) -> bool {
    match annotations.and_then(|a| a.get(key)) {
        Some(full) => full == name,
        None => labels.and_then(|l| l.get(key)).map(String::as_str) == Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_fits_is_its_own_label_value() {
        for name in ["db", "db-1-5-0", "a.b_c", &"a".repeat(63)] {
            assert_eq!(label_value(name), name);
        }
    }

    #[test]
    fn a_long_name_is_shortened_stably_and_stays_distinct() {
        let pvc = "postgres-database-storage-accounting-postgres-primary-eu-west-01-";
        let (zero, one) = (format!("{pvc}0"), format!("{pvc}1"));
        let value = label_value(&zero);
        assert_eq!(
            value,
            "postgres-database-storage-accounting-postgres-primary-0ddbffab"
        );
        assert_eq!(value, label_value(&zero), "deterministic");
        assert_ne!(
            value,
            label_value(&one),
            "names sharing a long prefix differ"
        );
        assert_eq!(
            label_value(&"x".repeat(253)),
            label_value(&"x".repeat(253)).to_lowercase()
        );
        // Not a label value for other reasons: shortened the same way.
        assert!(is_label_value(&label_value("-odd name-")));
        assert!(is_label_value(&label_value("---")));
    }

    #[test]
    fn the_values_automatic_requests_have_always_carried() {
        // Automatic UpgradeRequests labelled before this module carry this value (the
        // algorithm must not change, or their app's label would no longer match).
        assert_eq!(
            label_value(&format!("Accounting Postgres {}", "x".repeat(60))),
            "accounting-postgres-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-61472991"
        );
    }

    #[test]
    fn a_lookup_checks_the_full_name() {
        let long = "n".repeat(80);
        let mut labels = BTreeMap::new();
        let mut annotations = BTreeMap::new();
        set_name(&mut labels, &mut annotations, "fluxgate.dev/app", &long);
        assert_eq!(
            selector("fluxgate.dev/app", &long),
            format!("fluxgate.dev/app={}", labels["fluxgate.dev/app"])
        );
        assert!(names(
            Some(&labels),
            Some(&annotations),
            "fluxgate.dev/app",
            &long
        ));
        assert!(!names(
            Some(&labels),
            Some(&annotations),
            "fluxgate.dev/app",
            &format!("{long}x")
        ));
        // Labelled before annotations were written: the label is the name.
        let old = BTreeMap::from([("fluxgate.dev/app".to_owned(), "db".to_owned())]);
        assert!(names(Some(&old), None, "fluxgate.dev/app", "db"));
        assert!(!names(Some(&old), None, "fluxgate.dev/app", "db2"));
    }
}
