//! Per version field: every applicable candidate (highest first) and the `availableUpdate`,
//! the highest the app's `updatePolicy.auto` allows, else the highest; never a failed one.

use super::mapping::{ResolvedField, digest_of};
use super::model::{Finding, RenovateUpdateType};
use super::policy::auto_allows;
use crate::api::common::VERSION_MAX_LENGTH;
use crate::api::{AutoUpdate, AvailableUpdate, FailedVersion, UpdateType, ValueFormat};
use crate::manifest::{self, ImageRef, Version, versions_equal};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Most candidates listed in `availableUpdate.candidates` (the schema's limit).
pub const MAX_CANDIDATES: usize = 16;

/// One update that could be applied to a field.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The value to write: the tag, or `tag@digest` when the field pins a digest.
    pub version: String,
    pub update_type: UpdateType,
    /// Same tag, new digest.
    pub digest_only: bool,
    pub released_at: Option<Timestamp>,
    pub is_breaking: bool,
    /// E.g. `renovate flux apps/db/ocirepository.yaml`.
    pub source: String,
}

/// An update Renovate offered that is not a candidate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub version: String,
    pub reason: String,
}

/// The outcome for one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChoice {
    pub field: String,
    /// The version in Git (`tag` or `tag@digest`).
    pub current: String,
    /// Highest first; failed and inapplicable updates are not here.
    pub candidates: Vec<Candidate>,
    /// The candidate offered as `availableUpdate`.
    pub chosen: Option<Candidate>,
    pub skipped: Vec<Skipped>,
}

impl FieldChoice {
    /// The `availableUpdate` entry for this field, if there is an update.
    pub fn available_update(&self) -> Option<AvailableUpdate> {
        let chosen = self.chosen.as_ref()?;
        Some(AvailableUpdate {
            current: self.current.clone(),
            version: chosen.version.clone(),
            update_type: chosen.update_type,
            released_at: chosen.released_at.map(Time),
            source: Some(chosen.source.clone()),
            candidates: self
                .candidates
                .iter()
                .take(MAX_CANDIDATES)
                .map(|c| c.version.clone())
                .collect(),
        })
    }
}

/// Whether `a` and `b` are the same version including the digest: the tag under the
/// manifest module's normalisation, and the same digest (or none on both sides).
pub fn same_version(a: &str, b: &str) -> bool {
    versions_equal(a, b) && digest_of(a) == digest_of(b)
}

/// Whether `version` of field `field` is listed in `failedVersions` (tags compared
/// normalised, digests ignored: a tag that failed is not retried under another digest).
pub fn is_failed(field: &str, version: &str, failed: &[FailedVersion]) -> bool {
    failed
        .iter()
        .any(|f| f.name == field && versions_equal(&f.version, version))
}

/// Chooses for one field among the updates of the findings that mapping matched to it.
pub fn choose(
    field: &ResolvedField,
    findings: &[Finding],
    auto: AutoUpdate,
    failed: &[FailedVersion],
) -> Result<FieldChoice, String> {
    let current = field.current_version()?;
    let pinned = digest_of(&current).is_some();
    let image = match field.format {
        ValueFormat::Image => Some(
            ImageRef::parse(&field.value)
                .map_err(|reason| format!("`{}` is not an image: {reason}", field.value))?,
        ),
        ValueFormat::Plain => None,
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut skipped = Vec::new();
    for finding in findings {
        // Renovate saw a digest, but not in this field: it sits in a field of its own (a
        // Kustomize `digest:`). Changing only the tag would leave the image pinned to the
        // old digest, an upgrade in name only.
        let digest_elsewhere = !pinned && finding.current_digest.is_some();
        for update in &finding.updates {
            let mut skip = |version: &str, reason: String| {
                skipped.push(Skipped {
                    version: version.to_owned(),
                    reason,
                })
            };
            if digest_elsewhere {
                skip(
                    &update.new_value,
                    "the image's digest is pinned in another field; Fluxgate would change \
                     only the tag (pin the digest in this field as `tag@digest` instead)"
                        .into(),
                );
                continue;
            }
            // A manager may write `tag@digest` into newValue itself.
            let (tag, value_digest) = match update.new_value.split_once('@') {
                Some((tag, _)) => (tag.to_owned(), digest_of(&update.new_value)),
                None => (update.new_value.clone(), None),
            };
            let new_digest = update.new_digest.clone().or(value_digest);
            let version = if pinned {
                match &new_digest {
                    Some(digest) => format!("{tag}@{digest}"),
                    None => {
                        skip(
                            &update.new_value,
                            "the field pins a digest and Renovate gave no newDigest".into(),
                        );
                        continue;
                    }
                }
            } else if update.update_type == RenovateUpdateType::Digest {
                skip(
                    &update.new_value,
                    "a digest update, but the field pins no digest".into(),
                );
                continue;
            } else {
                tag.clone()
            };
            if version.len() > VERSION_MAX_LENGTH as usize
                || version.chars().any(char::is_whitespace)
            {
                skip(&version, "not a version Fluxgate can write".into());
                continue;
            }
            if let Some(image) = &image
                && let Err(Some(reason)) = image.with_version(&version)
            {
                skip(&version, format!("not a valid image tag: {reason}"));
                continue;
            }
            if same_version(&version, &current) {
                skip(&version, "Git already has it".into());
                continue;
            }
            let digest_only = versions_equal(&version, &current);
            if !digest_only && is_older(&version, &current) {
                skip(&version, format!("older than {current}"));
                continue;
            }
            if is_failed(&field.name, &version, failed) {
                skip(&version, "it failed before (failedVersions)".into());
                continue;
            }
            if candidates.iter().any(|c| c.version == version) {
                continue;
            }
            candidates.push(Candidate {
                update_type: classify(&current, &version, digest_only, update.update_type),
                digest_only,
                released_at: update.release_timestamp,
                is_breaking: update.is_breaking,
                // The status field holds at most 1024 characters.
                source: format!("renovate {} {}", update.manager, finding.package_file)
                    .chars()
                    .take(1024)
                    .collect(),
                version,
            });
        }
    }
    // Highest first; ties (same tag, other digest) keep Renovate's order.
    candidates.sort_by(|a, b| Version::parse(&b.version).cmp(&Version::parse(&a.version)));
    let chosen = candidates
        .iter()
        .find(|c| auto_allows(auto, c.update_type, c.digest_only))
        .or_else(|| candidates.first())
        .cloned();
    Ok(FieldChoice {
        field: field.name.clone(),
        current,
        candidates,
        chosen,
        skipped,
    })
}

/// Whether `new` is below `current`, when both are semver (opaque tags have no order to
/// trust, so they are never "older").
fn is_older(new: &str, current: &str) -> bool {
    let (new, current) = (Version::parse(new), Version::parse(current));
    matches!((new.semver(), current.semver()), (Some(n), Some(c)) if n < c)
}

/// The update type from current → new, computed by the manifest module; Renovate's own
/// type is used only when the versions are opaque to it (its versioning knows more).
fn classify(
    current: &str,
    new: &str,
    digest_only: bool,
    renovate: RenovateUpdateType,
) -> UpdateType {
    if digest_only {
        return UpdateType::Digest;
    }
    if renovate == RenovateUpdateType::Pin {
        return UpdateType::Pin;
    }
    match manifest::update_type(current, new) {
        UpdateType::Other => {
            let both_semver = Version::parse(current).semver().is_some()
                && Version::parse(new).semver().is_some();
            match renovate {
                _ if both_semver => UpdateType::Other,
                RenovateUpdateType::Patch => UpdateType::Patch,
                RenovateUpdateType::Minor => UpdateType::Minor,
                RenovateUpdateType::Major => UpdateType::Major,
                _ => UpdateType::Other,
            }
        }
        known => known,
    }
}
