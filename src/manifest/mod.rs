//! Reads and changes one version field in a YAML manifest, changing only that scalar's bytes.
//!
//! The module is pure (no I/O). Its pieces:
//! - [`path`]: the documented path syntax (`.spec.chart.spec.version`, `[0]`, `['a.b/c']`,
//!   `[name=foo]`);
//! - [`document`]: choosing one document of a multi-document file (`Kind/name` or index);
//! - [`edit`]: [`get`] and [`set`], the byte splice and the re-parse check, and
//!   [`sharing`]: the other paths that read an anchored scalar;
//! - `anchors`: following aliases and merge keys to the one place a value is written;
//! - [`image`]: image references whose tag (and digest) a `format: image` field updates;
//! - [`version`]: version parsing, the one normalisation rule, ordering and update types;
//! - [`fields`]: an app's version fields — where they live, what they hold, editing several.
//!
//! Spans come from `granit-parser`, the YAML 1.2 event parser that serde-saphyr is built on
//! and re-exports, so reading, editing and verifying all see the file exactly as the typed
//! deserializer does. (yaml-edit's CST parser recovers from syntax errors instead of
//! reporting them, so it could "edit" a file Flux would reject; we do not use it here.)

pub mod document;
pub mod edit;
pub mod fields;
pub mod image;
pub mod path;
pub mod version;

mod anchors;
mod error;
mod scalar;
mod tree;

#[cfg(test)]
mod tests;

pub use document::DocSelector;
pub use edit::{Edit, Sharing, ValueFormat, get, get_version, set, sharing};
pub use error::ManifestError;
pub use image::ImageRef;
pub use path::YamlPath;
pub use version::{UpdateType, Version, normalize, update_type, versions_equal};

/// Largest manifest Fluxgate reads (1 MiB): real manifests are kilobytes; anything bigger is
/// more likely a mistake or an attack than a HelmRelease.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Checks the size limit and UTF-8 of raw file bytes and returns them as text.
///
/// Call this on bytes read from Git or disk before [`get`] or [`set`].
pub fn text_from_bytes(bytes: &[u8]) -> Result<&str, ManifestError> {
    check_size(bytes.len())?;
    std::str::from_utf8(bytes).map_err(|err| ManifestError::InvalidUtf8 {
        valid_up_to: err.valid_up_to(),
    })
}

fn check_size(len: usize) -> Result<(), ManifestError> {
    if len > MAX_FILE_BYTES {
        return Err(ManifestError::TooLarge {
            size: len,
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(())
}
