//! Building blocks shared by the Fluxgate kinds: names, durations, object references and
//! the validation patterns and CEL rules behind them.

use kube::core::cel::Rule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

/// A DNS-1123 label: namespaces, version-field names.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: the names of Kubernetes objects.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A version as written in Git: no whitespace (so no line breaks either).
pub const VERSION_PATTERN: &str = r"^[^\s]+$";
/// Longest version string accepted (a tag plus a `@sha256:` digest fits comfortably).
pub const VERSION_MAX_LENGTH: u32 = 200;
/// A Go duration (`30s`, `5m`, `1h30m`), the format Flux and Kubernetes use.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// CEL rule: a repository path is relative and cannot climb out of the repository.
pub fn relative_path_rule() -> Rule {
    Rule::new(
        "!self.startsWith('/') && !self.contains('\\\\') && self != '..' && \
         !self.startsWith('../') && !self.contains('/../') && !self.endsWith('/..')",
    )
    .message(
        "must be a path relative to the repository root: no leading '/', no '..' segment, \
         no backslash (for example apps/db/helmrelease.yaml)",
    )
}

/// A duration written as Go writes it (`30s`, `5m`, `1h30m`); kept exactly as written so
/// defaults and user input read back unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(String);

impl GoDuration {
    /// The duration as written, e.g. `5m`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The duration's length; an error names the text that does not parse.
    pub fn to_std(&self) -> Result<Duration, InvalidDuration> {
        let parsed = kube::core::Duration::from_str(&self.0)
            .map_err(|e| InvalidDuration(self.0.clone(), e.to_string()))?;
        if parsed.is_negative() {
            return Err(InvalidDuration(self.0.clone(), "negative".into()));
        }
        Ok(parsed.into())
    }
}

impl From<&str> for GoDuration {
    fn from(s: &str) -> Self {
        GoDuration(s.to_owned())
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A duration that does not parse; the schema refuses these, so seeing one means the
/// object bypassed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {0:?}: {1} (write a Go duration such as 30s, 5m or 1h30m)")]
pub struct InvalidDuration(String, String);

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": DURATION_PATTERN,
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be a positive duration such as 30s, 5m or 1h30m"
            }]
        })
    }
}

/// A reference to an object in the same namespace, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// FNV-1a, 64 bits: tiny and, unlike std's hasher, stable across Rust releases and
/// platforms — names and label values derived from it must match after an operator upgrade.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `text` as a piece of a DNS-1123 name or label value: lowercase `[a-z0-9.-]` only, no
/// separator runs, no separator at either end.
pub fn dns_piece(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '-'
        };
        match (out.chars().last(), c) {
            (Some('-' | '.'), '-') => {
                out.pop();
                out.push('-');
            }
            (Some('-' | '.'), '.') => {}
            _ => out.push(c),
        }
    }
    out.trim_matches(['-', '.']).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_keep_their_text() {
        let d: GoDuration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.to_std().unwrap(), Duration::from_secs(5400));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let bad = GoDuration::from("soon");
        let err = bad.to_std().unwrap_err().to_string();
        assert!(err.contains("\"soon\"") && err.contains("30s"), "{err}");
    }
}
