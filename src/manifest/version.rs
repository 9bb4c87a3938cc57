//! Versions as found in manifests: semver where it parses (a leading `v` kept as written),
//! opaque strings otherwise, one normalisation rule for equality, ordering and update types.
//!
//! The normalisation rule (used for every "is this the same version?" question, so formatting
//! is never drift): trim whitespace, remove one pair of surrounding quotes, drop a digest
//! suffix (`@sha256:…`), then drop a leading `v`/`V` when a digit follows.

use std::cmp::Ordering;
use std::fmt;

/// A version as written, with its semver reading when it has one.
#[derive(Debug, Clone)]
pub struct Version {
    written: String,
    normalized: String,
    semver: Option<semver::Version>,
}

pub use crate::api::UpdateType;

/// Applies the module's one normalisation rule (see the module documentation).
pub fn normalize(version: &str) -> String {
    let mut text = version.trim();
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            text = text[1..text.len() - 1].trim();
            break;
        }
    }
    if let Some((tag, _digest)) = text.split_once('@') {
        text = tag;
    }
    match text.strip_prefix(['v', 'V']) {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest.to_owned(),
        _ => text.to_owned(),
    }
}

/// Whether two versions are the same under the normalisation rule (`v1.2.3` == `"1.2.3"`).
pub fn versions_equal(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

/// Reads semver, and also `1` or `1.2` (missing parts filled with 0): image tags such as `16`
/// or `1.27` are versions too. Short forms with a suffix (`16-alpine`, `2024-01-15`) stay
/// opaque: read as semver they would be pre-releases, sorting below `16`.
fn lenient_semver(normalized: &str) -> Option<semver::Version> {
    let core_end = normalized.find(['-', '+']).unwrap_or(normalized.len());
    let (core, suffix) = normalized.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 || (parts.len() < 3 && !suffix.is_empty()) {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    padded.push_str(suffix);
    semver::Version::parse(&padded).ok()
}

impl Version {
    /// Reads a version; never fails (what is not semver is an opaque tag).
    pub fn parse(written: &str) -> Self {
        let normalized = normalize(written);
        let semver = lenient_semver(&normalized);
        Self {
            written: written.trim().to_owned(),
            normalized,
            semver,
        }
    }

    /// The version exactly as written (trimmed), `v` and digest included.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The normalised form used for equality.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The semver reading, when the version is semver.
    pub fn semver(&self) -> Option<&semver::Version> {
        self.semver.as_ref()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normalized.hash(state);
    }
}

/// For choosing the highest: semver versions by semver precedence (a semver version is
/// above any opaque tag), opaque tags by their text; ties broken by the normalised text so
/// the order agrees with equality.
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_kind = match (&self.semver, &other.semver) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        };
        by_kind.then_with(|| self.normalized.cmp(&other.normalized))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Classifies the change from `from` to `to` by the first of major, minor, patch that
/// differs (in either direction); `Other` when either is not semver or none differs.
pub fn update_type(from: &str, to: &str) -> UpdateType {
    let (from, to) = (Version::parse(from), Version::parse(to));
    let (Some(a), Some(b)) = (from.semver(), to.semver()) else {
        return UpdateType::Other;
    };
    if a.major != b.major {
        UpdateType::Major
    } else if a.minor != b.minor {
        UpdateType::Minor
    } else if a.patch != b.patch || a.pre != b.pre {
        UpdateType::Patch
    } else {
        UpdateType::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_ignores_quotes_v_prefix_and_digest() {
        let equal = [
            ("v1.2.3", "1.2.3"),
            ("\"1.2.3\"", "1.2.3"),
            ("'v1.2.3'", "1.2.3"),
            (" 1.2.3 ", "1.2.3"),
            ("V2.0.0", "v2.0.0"),
            ("1.2.3@sha256:aaaa", "1.2.3@sha256:bbbb"),
            ("latest", "latest"),
        ];
        for (a, b) in equal {
            assert!(versions_equal(a, b), "{a} == {b}");
            assert_eq!(Version::parse(a), Version::parse(b), "{a} == {b}");
            assert_eq!(Version::parse(a).cmp(&Version::parse(b)), Ordering::Equal);
        }
        let different = [
            ("1.2.3", "1.2.4"),
            ("1.2", "1.2.0"),
            ("vnext", "next"),
            ("1.2.3-rc.1", "1.2.3"),
            ("latest", "Latest"),
        ];
        for (a, b) in different {
            assert!(!versions_equal(a, b), "{a} != {b}");
            assert_ne!(Version::parse(a).cmp(&Version::parse(b)), Ordering::Equal);
        }
    }

    #[test]
    fn keeps_the_version_as_written() {
        let version = Version::parse("v1.2.3");
        assert_eq!(version.as_str(), "v1.2.3");
        assert_eq!(version.to_string(), "v1.2.3");
        assert_eq!(version.normalized(), "1.2.3");
        assert_eq!(version.semver(), Some(&semver::Version::new(1, 2, 3)));
        assert_eq!(
            Version::parse("16").semver(),
            Some(&semver::Version::new(16, 0, 0))
        );
        for opaque in [
            "latest",
            "main-abc123",
            "1.2.3.4",
            "01.2.3",
            "2024-01-15",
            "16-alpine",
            "",
        ] {
            assert_eq!(Version::parse(opaque).semver(), None, "{opaque}");
        }
    }

    #[test]
    fn orders_for_choosing_the_highest() {
        let ascending = [
            "latest",
            "stable",
            "1.2.3-alpha.1",
            "1.2.3-rc.1",
            "1.2.3",
            "v1.2.4",
            "1.9.0",
            "1.10.0",
            "2.0.0",
            "v10.0.0",
        ];
        for pair in ascending.windows(2) {
            assert!(
                Version::parse(pair[0]) < Version::parse(pair[1]),
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
        let mut shuffled: Vec<Version> =
            ascending.iter().rev().map(|v| Version::parse(v)).collect();
        shuffled.sort();
        let sorted: Vec<&str> = shuffled.iter().map(Version::as_str).collect();
        assert_eq!(sorted, ascending);
        let highest = ["1.9.0", "v1.10.0", "1.10.0-rc.2"]
            .map(Version::parse)
            .into_iter()
            .max();
        assert_eq!(
            highest.map(|v| v.as_str().to_owned()),
            Some("v1.10.0".to_owned())
        );
    }

    fn any_version() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[vV]?[0-9]{1,2}(\\.[0-9]{1,2}){0,2}",
            "v?[0-9]\\.[0-9]\\.[0-9](-(rc|alpha|beta)(\\.[0-9])?)?(\\+b[0-9])?",
            "[0-9]\\.[0-9]\\.[0-9]@sha256:[a-f]{4}",
            "[a-z]{1,6}(-[0-9a-f]{3})?",
            "\"[0-9]\\.[0-9]\\.[0-9]\"",
        ]
    }

    proptest::proptest! {
        /// Ordering is a total order that agrees with equality, so sorting and `max` are
        /// well defined whatever tags a registry returns.
        #[test]
        fn ordering_is_total_and_agrees_with_equality(
            a in any_version(),
            b in any_version(),
            c in any_version(),
        ) {
            let (a, b, c) = (Version::parse(&a), Version::parse(&b), Version::parse(&c));
            proptest::prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            proptest::prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a <= b && b <= c {
                proptest::prop_assert!(a <= c, "{} <= {} <= {}", a, b, c);
            }
            if let (Some(x), Some(y)) = (a.semver(), b.semver())
                && x != y
            {
                proptest::prop_assert_eq!(a.cmp(&b), x.cmp(y));
            }
        }
    }

    #[test]
    fn classifies_update_types() {
        let cases = [
            ("1.2.3", "1.2.4", UpdateType::Patch),
            ("v1.2.3", "1.2.4", UpdateType::Patch),
            ("1.2.3-rc.1", "1.2.3", UpdateType::Patch),
            ("1.2.3", "1.3.0", UpdateType::Minor),
            ("0.1.0", "0.2.0", UpdateType::Minor),
            ("1.9.9", "2.0.0", UpdateType::Major),
            ("16", "17", UpdateType::Major),
            ("1.27", "1.28", UpdateType::Minor),
            ("2.0.0", "1.0.0", UpdateType::Major),
            ("1.2.3@sha256:aaaa", "1.2.4@sha256:bbbb", UpdateType::Patch),
            ("1.2.3", "1.2.3", UpdateType::Other),
            ("1.2.3", "v1.2.3", UpdateType::Other),
            ("1.2.3+build.1", "1.2.3+build.2", UpdateType::Other),
            ("latest", "1.2.3", UpdateType::Other),
            ("main-abc", "main-def", UpdateType::Other),
        ];
        for (from, to, expected) in cases {
            assert_eq!(update_type(from, to), expected, "{from} -> {to}");
        }
        assert_eq!(UpdateType::Minor.to_string(), "minor");
    }
}
