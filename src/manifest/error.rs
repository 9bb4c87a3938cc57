//! The one error type of the manifest module: every refusal names the path or document and
//! says what to do next.

/// Why a manifest could not be read or changed.
///
/// `doc` fields describe the chosen document, e.g. `HelmRelease/podinfo (document 2 of 3)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "the file is {size} bytes, over the {limit}-byte limit for manifests; \
         point `git.file` at the manifest itself, not a bundle"
    )]
    TooLarge { size: usize, limit: usize },

    #[error(
        "the file is not valid UTF-8 (first bad byte at offset {valid_up_to}); \
         YAML manifests must be UTF-8"
    )]
    InvalidUtf8 { valid_up_to: usize },

    #[error("the file is not valid YAML: {message} (line {line}, column {column})")]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },

    #[error("invalid YAML path `{path}`: {reason}; {PATH_SYNTAX_HINT}")]
    InvalidPath { path: String, reason: String },

    #[error(
        "invalid document selector `{selector}`: {reason}; \
         use `Kind/name` (e.g. `HelmRelease/podinfo`) or a 0-based document index"
    )]
    InvalidSelector { selector: String, reason: String },

    #[error("no document matches `{selector}`; the file holds: {available}")]
    DocumentNotFound { selector: String, available: String },

    #[error("{reason}; the file holds: {available}; choose one with `Kind/name` or an index")]
    AmbiguousDocument { reason: String, available: String },

    #[error(
        "path `{path}` not found in {doc}: nothing at `{missing_at}`{hint}; \
         Fluxgate never creates fields, so the field must already exist"
    )]
    PathNotFound {
        path: String,
        doc: String,
        missing_at: String,
        hint: String,
    },

    #[error("path `{path}` is ambiguous in {doc}: {reason}")]
    AmbiguousPath {
        path: String,
        doc: String,
        reason: String,
    },

    #[error(
        "path `{path}` in {doc} leads to a {found}, not a scalar; \
         point the path at the version string itself"
    )]
    NotAScalar {
        path: String,
        doc: String,
        found: &'static str,
    },

    #[error(
        "path `{path}` in {doc} is a block scalar (`|` or `>`); \
         write the version as a plain or quoted scalar on one line"
    )]
    BlockScalar { path: String, doc: String },

    #[error(
        "path `{path}` in {doc} has an empty value; \
         write the current version there first (Fluxgate only replaces existing values)"
    )]
    EmptyValue { path: String, doc: String },

    #[error(
        "{doc} expands to more than {limit} nodes through aliases (an \"alias bomb\"); \
         refusing to read it"
    )]
    AliasBomb { doc: String, limit: usize },

    #[error("`{value}` at `{path}` is not an image reference: {reason}")]
    InvalidImage {
        path: String,
        value: String,
        reason: String,
    },

    #[error(
        "the value at `{path}` pins a digest (`{current}`) but the new version `{new}` has none; \
         give the new version as `TAG@sha256:…` so the pin stays correct"
    )]
    DigestRequired {
        path: String,
        current: String,
        new: String,
    },

    #[error("invalid new value `{value}`: {reason}")]
    InvalidValue { value: String, reason: String },

    #[error(
        "refusing the edit of `{path}` in {doc}: after the change the file no longer parses \
         as the same YAML with one value changed ({detail}); the file was not changed"
    )]
    VerificationFailed {
        path: String,
        doc: String,
        detail: String,
    },
}

const PATH_SYNTAX_HINT: &str = "paths look like `.spec.chart.spec.version`, \
    `.spec.template.spec.containers[0].image`, `.metadata.annotations['a.b/c']` or \
    `.images[name=podinfo].newTag`";

impl ManifestError {
    /// Whether the file as a whole cannot be read (too large, not UTF-8, not YAML, an alias
    /// bomb), as opposed to one path or document not being there.
    pub fn is_unreadable_file(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::InvalidUtf8 { .. }
                | Self::Syntax { .. }
                | Self::AliasBomb { .. }
        )
    }

    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "file_too_large",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::Syntax { .. } => "yaml_syntax",
            Self::InvalidPath { .. } => "invalid_path",
            Self::InvalidSelector { .. } => "invalid_selector",
            Self::DocumentNotFound { .. } => "document_not_found",
            Self::AmbiguousDocument { .. } => "ambiguous_document",
            Self::PathNotFound { .. } => "path_not_found",
            Self::AmbiguousPath { .. } => "ambiguous_path",
            Self::NotAScalar { .. } => "not_a_scalar",
            Self::BlockScalar { .. } => "block_scalar",
            Self::EmptyValue { .. } => "empty_value",
            Self::AliasBomb { .. } => "alias_bomb",
            Self::InvalidImage { .. } => "invalid_image",
            Self::DigestRequired { .. } => "digest_required",
            Self::InvalidValue { .. } => "invalid_value",
            Self::VerificationFailed { .. } => "verification_failed",
        }
    }
}
