//! An app's version fields in its repository: where each one lives (the ManagedApp's
//! `versions`, or the default chart field of a HelmRelease — `.spec.chart.spec.version`,
//! or the `.spec.ref.tag` of the OCIRepository its `chartRef` names, in the same file or a
//! sibling), what each holds now, and the new text of a file with several of them changed.
//!
//! An OCIRepository's `.spec.ref.tag` is read as source-controller reads the ref
//! (`getArtifactRef` in source-controller's internal/controller/ocirepository_controller.go:
//! `digest` over `semver` over `tag`): a `spec.ref.digest` beside the tag (Renovate writes
//! both) is part of the version, `tag@digest`, and an upgrade changes both fields; a
//! `spec.ref.semver` range is refused, since Flux picks the chart itself.

use super::image::split_digest;
use super::path::Segment;
use super::{
    DocSelector, ImageRef, ManifestError, Sharing, YamlPath, get, set, sharing, versions_equal,
};
use crate::api::{ManagedAppSpec, SourceKind, ValueFormat};
use std::collections::BTreeMap;

/// A version field resolved against Git: where it is and what it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedField {
    /// The field's name (the key in `target`, `currentVersions`, `failedVersions`).
    pub name: String,
    /// Repository-relative file holding the field (for a `chartRef` chart, the
    /// OCIRepository's file).
    pub file: String,
    /// Document of a multi-document file (`Kind/name` or an index), if chosen.
    pub document: Option<String>,
    /// YAML path of the field.
    pub path: String,
    /// Plain version or image reference.
    pub format: ValueFormat,
    /// The scalar as it is in Git (`manifest::get`): the version, or for `format: image`
    /// the whole image reference.
    pub value: String,
    /// For an OCIRepository's `.spec.ref.tag`: the `.spec.ref.digest` beside it, which
    /// source-controller pulls instead of the tag; the field's version is then
    /// `tag@digest`.
    pub ref_digest: Option<String>,
    /// The package the field versions, when known ([`infer_package`]): a chart name,
    /// an OCI repository or an image repository. It tells apart two dependencies of one
    /// file that happen to be at the same version (a chart and its image, both `6.5.0`).
    pub package: Option<String>,
}

impl ResolvedField {
    /// The version the field holds: the value itself, or the image reference's tag, with
    /// `@digest` when it pins one (in the value, or in an OCIRepository's `ref.digest`).
    pub fn current_version(&self) -> Result<String, String> {
        match self.format {
            ValueFormat::Plain => Ok(match &self.ref_digest {
                Some(digest) => format!("{}@{digest}", self.value.trim()),
                None => self.value.trim().to_owned(),
            }),
            ValueFormat::Image => {
                let image = ImageRef::parse(&self.value)
                    .map_err(|reason| format!("`{}` is not an image: {reason}", self.value))?;
                image
                    .version()
                    .ok_or_else(|| format!("the image `{}` has no tag", self.value))
            }
        }
    }

    /// The digest the field pins (`tag@sha256:…`), if any.
    pub fn pinned_digest(&self) -> Option<String> {
        let version = self.current_version().ok()?;
        digest_of(&version)
    }

    /// The package: [`ResolvedField::package`], or for an image field the image's name.
    pub fn package_hint(&self) -> Option<String> {
        self.package.clone().or_else(|| match self.format {
            ValueFormat::Image => ImageRef::parse(&self.value).ok().map(|image| image.name),
            ValueFormat::Plain => None,
        })
    }
}

/// The digest part of `tag@digest`, when it is a valid digest.
pub fn digest_of(version: &str) -> Option<String> {
    split_digest(version.trim())
        .ok()
        .and_then(|(_, digest)| digest)
}

/// Why an app's version fields cannot be found or changed; every message names the field
/// and file.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// A file the fields live in is not in the repository.
    #[error(
        "{file} does not exist on the branch (it holds version field {field}); check spec.git.file and spec.versions[].file"
    )]
    FileMissing { field: String, file: String },
    /// The default chart field cannot be found.
    #[error(
        "cannot find the chart version of HelmRelease {release} in {file}: {reason}; list the field in spec.versions"
    )]
    NoDefault {
        release: String,
        file: String,
        reason: String,
    },
    /// A Kustomization source has no default field.
    #[error(
        "spec.versions is required when the source is a Kustomization (name the image or tag fields to manage)"
    )]
    VersionsRequired,
    /// Reading or editing the field failed.
    #[error("version field {field} in {file}: {source}")]
    Manifest {
        field: String,
        file: String,
        source: Box<ManifestError>,
    },
    /// The OCIRepository follows a semver range: Flux picks the chart itself.
    #[error(
        "OCIRepository {repository} in {file} follows spec.ref.semver `{range}`: source-controller \
         picks the newest chart in that range itself (a semver range wins over spec.ref.tag), so \
         there is no version for Fluxgate to pin; to upgrade it with Fluxgate, replace \
         spec.ref.semver with spec.ref.tag set to the chart version"
    )]
    SemverRef {
        repository: String,
        file: String,
        range: String,
    },
    /// The OCIRepository pins a digest beside its tag, but the new version has none.
    #[error(
        "OCIRepository {repository} in {file} pins spec.ref.digest beside spec.ref.tag, and \
         source-controller pulls the digest (it wins over the tag): changing only the tag to \
         {version} would leave the old chart running; give the version with its digest, \
         `{version}@sha256:…` (Renovate's newDigest), so both change in one commit"
    )]
    DigestRequired {
        repository: String,
        file: String,
        version: String,
    },
    /// The new version pins a digest, but the OCIRepository has no `ref.digest` to hold it.
    #[error(
        "OCIRepository {repository} in {file} has no spec.ref.digest, so the digest of {version} \
         has nowhere to go (source-controller does not accept `tag@digest` in spec.ref.tag); \
         give the tag alone, or add spec.ref.digest beside the tag in Git first"
    )]
    DigestUnexpected {
        repository: String,
        file: String,
        version: String,
    },
    /// An OCIRepository's tag holds a digest, which source-controller cannot pull.
    #[error(
        "spec.ref.tag of OCIRepository {repository} in {file} is `{tag}`, a tag with a digest, \
         which source-controller cannot pull (it asks the registry for a tag of that name); \
         move the digest to spec.ref.digest beside the tag"
    )]
    TagWithDigest {
        repository: String,
        file: String,
        tag: String,
    },
    /// A target names a field the app does not have.
    #[error("target names version {0}, which the ManagedApp does not manage (known: {1})")]
    UnknownField(String, String),
    /// The field holds neither the version the request started from nor its target: someone
    /// else changed it since, and their change is not ours to overwrite.
    #[error(
        "version field {field} in {file} now holds {found}, not {expected} as when the request was admitted: \
         someone else changed it; Fluxgate does not overwrite it (create a new request from the version in Git)"
    )]
    ChangedInGit {
        field: String,
        file: String,
        expected: String,
        found: String,
    },
}

impl FieldError {
    /// A static category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            FieldError::FileMissing { .. } => "git_file_missing",
            FieldError::NoDefault { .. } | FieldError::VersionsRequired => "version_field_unknown",
            FieldError::Manifest { .. } => "manifest_invalid",
            FieldError::UnknownField(..) => "target_invalid",
            FieldError::ChangedInGit { .. } => "version_changed",
            FieldError::SemverRef { .. } => "semver_ref",
            FieldError::TagWithDigest { .. } => "manifest_invalid",
            FieldError::DigestRequired { .. } | FieldError::DigestUnexpected { .. } => {
                "target_invalid"
            }
        }
    }

    /// The reason a request refused for this error carries.
    pub fn reason(&self) -> &'static str {
        match self {
            FieldError::SemverRef { .. } => "SemverRef",
            FieldError::DigestRequired { .. } | FieldError::DigestUnexpected { .. } => {
                "InvalidTarget"
            }
            _ => "VersionFieldInvalid",
        }
    }
}

/// The directory part of a repository path (`""` for the root).
pub fn directory_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn selector(
    field: &str,
    file: &str,
    document: Option<&str>,
) -> Result<Option<DocSelector>, FieldError> {
    document
        .map(DocSelector::parse)
        .transpose()
        .map_err(|source| FieldError::Manifest {
            field: field.to_owned(),
            file: file.to_owned(),
            source: Box::new(source),
        })
}

fn read(files: &BTreeMap<String, String>, field: &str, file: &str) -> Result<String, FieldError> {
    files
        .get(file)
        .cloned()
        .ok_or_else(|| FieldError::FileMissing {
            field: field.to_owned(),
            file: file.to_owned(),
        })
}

/// Where each of the app's version fields lives. `files` maps repository paths to their
/// text and must hold `git.file`, the files of its directory (for the default chart field)
/// and every `versions[].file`.
pub fn locate_fields(
    spec: &ManagedAppSpec,
    files: &BTreeMap<String, String>,
) -> Result<Vec<ResolvedField>, FieldError> {
    let main_file = spec.git.file.as_str();
    if !spec.versions.is_empty() {
        return spec
            .versions
            .iter()
            .map(|v| {
                let file = v.file.clone().unwrap_or_else(|| main_file.to_owned());
                let located = ResolvedField {
                    name: v.name.clone(),
                    file,
                    document: v.document.clone(),
                    path: v.path.clone(),
                    format: v.format,
                    value: String::new(),
                    ref_digest: None,
                    package: None,
                };
                with_value(located, files)
            })
            .collect();
    }
    if spec.source.kind == SourceKind::Kustomization {
        return Err(FieldError::VersionsRequired);
    }
    let release = format!("HelmRelease/{}", spec.source.name);
    let text = read(files, "chart", main_file)?;
    let no_default = |reason: String| FieldError::NoDefault {
        release: spec.source.name.clone(),
        file: main_file.to_owned(),
        reason,
    };
    let doc = DocSelector::parse(&release).map_err(|e| no_default(e.to_string()))?;
    let at = |path: &str| YamlPath::parse(path).map(|p| get(&text, Some(&doc), &p));
    let version = at(".spec.chart.spec.version");
    if let Ok(Err(e)) = &version
        && e.is_unreadable_file()
    {
        // Not "the field is missing": the file itself cannot be read; say why.
        return Err(FieldError::Manifest {
            field: "chart".into(),
            file: main_file.to_owned(),
            source: Box::new(e.clone()),
        });
    }
    if let Ok(Ok(_)) = version {
        let field = ResolvedField {
            name: "chart".into(),
            file: main_file.to_owned(),
            document: Some(release),
            path: ".spec.chart.spec.version".into(),
            format: ValueFormat::Plain,
            value: String::new(),
            ref_digest: None,
            package: None,
        };
        return Ok(vec![with_value(field, files)?]);
    }
    let kind = at(".spec.chartRef.kind").ok().and_then(Result::ok);
    let name = at(".spec.chartRef.name").ok().and_then(Result::ok);
    let (Some(kind), Some(name)) = (kind, name) else {
        return Err(no_default(
            "it has neither spec.chart.spec.version nor spec.chartRef".into(),
        ));
    };
    if kind != "OCIRepository" {
        return Err(no_default(format!(
            "its spec.chartRef is a {kind}, not an OCIRepository"
        )));
    }
    // The OCIRepository sits in the same file or a sibling; the same file wins.
    let directory = directory_of(main_file);
    let candidates = std::iter::once(main_file.to_owned()).chain(
        files
            .keys()
            .filter(|f| {
                directory_of(f) == directory
                    && f.as_str() != main_file
                    && (f.ends_with(".yaml") || f.ends_with(".yml"))
            })
            .cloned(),
    );
    let repository = format!("OCIRepository/{name}");
    let repo_doc = DocSelector::parse(&repository).map_err(|e| no_default(e.to_string()))?;
    let tag = YamlPath::parse(REF_TAG).map_err(|e| no_default(e.to_string()))?;
    for file in candidates {
        let text = &files[&file];
        let Some(reference) = oci_ref(text, Some(&repo_doc)) else {
            continue;
        };
        if let Some(range) = reference.semver {
            return Err(FieldError::SemverRef {
                repository: name,
                file,
                range,
            });
        }
        if get(text, Some(&repo_doc), &tag).is_err() {
            let follows = match reference.digest {
                Some(_) => "only a spec.ref.digest, which says no version",
                None => "the tag `latest`",
            };
            return Err(no_default(format!(
                "its spec.chartRef names OCIRepository {name} in {file}, which has no \
                 spec.ref.tag and follows {follows}; write the chart version in spec.ref.tag"
            )));
        }
        let field = ResolvedField {
            name: "chart".into(),
            file,
            document: Some(repository),
            path: REF_TAG.into(),
            format: ValueFormat::Plain,
            value: String::new(),
            ref_digest: None,
            package: None,
        };
        return Ok(vec![with_value(field, files)?]);
    }
    Err(no_default(format!(
        "its spec.chartRef names OCIRepository {name}, which no file in {} defines with spec.ref.tag",
        if directory.is_empty() {
            "the repository root"
        } else {
            directory
        }
    )))
}

fn with_value(
    field: ResolvedField,
    files: &BTreeMap<String, String>,
) -> Result<ResolvedField, FieldError> {
    let text = read(files, &field.name, &field.file)?;
    let file = field.file.clone();
    read_in(&text, &field, &file)
}

/// The package a field versions, read from the field's neighbours in the manifest:
/// `.spec.chart.spec.version` → `.spec.chart.spec.chart`; an OCIRepository's
/// `.spec.ref.tag` → `.spec.url`; `….tag` → `….repository` (after `….registry/` when there
/// is one); Kustomize `….newTag` → `….newName`, else `….name`; `format: image` → the
/// image's name. `None` when the layout is not one of these.
pub fn infer_package(
    text: &str,
    document: Option<&DocSelector>,
    path: &YamlPath,
    format: ValueFormat,
) -> Option<String> {
    let get = |parent: usize, key: &str| -> Option<String> {
        let segments = path.segments();
        let sibling = format!("{}.{key}", path.prefix(segments.len().checked_sub(parent)?));
        let sibling = YamlPath::parse(&sibling).ok()?;
        let value = get(text, document, &sibling).ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    };
    if format == ValueFormat::Image {
        let value = super::get(text, document, path).ok()?;
        return ImageRef::parse(&value).ok().map(|image| image.name);
    }
    let keys: Vec<&str> = path
        .segments()
        .iter()
        .rev()
        .take(2)
        .map(|segment| match segment {
            Segment::Key(key) => key.as_str(),
            _ => "",
        })
        .collect();
    match keys.as_slice() {
        ["version", ..] => get(1, "chart"),
        ["tag", "ref"] => get(2, "url"),
        ["tag", ..] => {
            let repository = get(1, "repository")?;
            Some(match get(1, "registry") {
                Some(registry) => format!("{registry}/{repository}"),
                None => repository,
            })
        }
        ["newTag", ..] => get(1, "newName").or_else(|| get(1, "name")),
        _ => None,
    }
}

/// The path of an OCIRepository's tag.
const REF_TAG: &str = ".spec.ref.tag";
/// The path of the digest beside it.
const REF_DIGEST: &str = ".spec.ref.digest";

/// How an OCIRepository document refers to its artifact (the fields source-controller's
/// `getArtifactRef` reads).
struct OciRef {
    name: String,
    digest: Option<String>,
    semver: Option<String>,
}

/// The ref of the chosen document of `text`, when that document is an OCIRepository.
fn oci_ref(text: &str, doc: Option<&DocSelector>) -> Option<OciRef> {
    // An empty or absent field is no ref, as for source-controller (`!= ""`).
    let read = |at: &str| {
        YamlPath::parse(at)
            .ok()
            .and_then(|at| get(text, doc, &at).ok())
            .filter(|value| !value.trim().is_empty())
    };
    (read(".kind")? == "OCIRepository").then(|| OciRef {
        name: read(".metadata.name").unwrap_or_default(),
        digest: read(REF_DIGEST),
        semver: read(".spec.ref.semver"),
    })
}

/// The ref of the OCIRepository whose `.spec.ref.tag` `path` names in `text`, if it does.
fn oci_ref_at(text: &str, doc: Option<&DocSelector>, path: &YamlPath) -> Option<OciRef> {
    (path.prefix(usize::MAX) == REF_TAG)
        .then(|| oci_ref(text, doc))
        .flatten()
}

/// A manifest error about `field` in `file`.
fn manifest_error(field: &ResolvedField, file: &str, source: ManifestError) -> FieldError {
    FieldError::Manifest {
        field: field.name.clone(),
        file: file.to_owned(),
        source: Box::new(source),
    }
}

/// Where `field` lives in `file`: its document selector and its path.
fn place(field: &ResolvedField, file: &str) -> Result<(Option<DocSelector>, YamlPath), FieldError> {
    let doc = selector(&field.name, file, field.document.as_deref())?;
    let path = YamlPath::parse(&field.path).map_err(|e| manifest_error(field, file, e))?;
    Ok((doc, path))
}

/// `field` as `text` (the contents of `file`) holds it now: its raw value and, for an
/// OCIRepository's tag, the digest pinned beside it. A semver ref is refused: Flux picks
/// the chart itself, whatever the tag says.
fn read_in(text: &str, field: &ResolvedField, file: &str) -> Result<ResolvedField, FieldError> {
    let (doc, path) = place(field, file)?;
    let reference = oci_ref_at(text, doc.as_ref(), &path);
    if let Some(OciRef {
        name,
        semver: Some(range),
        ..
    }) = &reference
    {
        return Err(FieldError::SemverRef {
            repository: name.clone(),
            file: file.to_owned(),
            range: range.clone(),
        });
    }
    let value = get(text, doc.as_ref(), &path).map_err(|e| manifest_error(field, file, e))?;
    let mut read = ResolvedField {
        value,
        ref_digest: None,
        package: infer_package(text, doc.as_ref(), &path, field.format),
        ..field.clone()
    };
    if let Some(reference) = reference {
        if read.value.contains('@') {
            return Err(FieldError::TagWithDigest {
                repository: reference.name,
                file: file.to_owned(),
                tag: read.value,
            });
        }
        read.ref_digest = reference.digest;
    }
    Ok(read)
}

/// The current version of every field, by name.
pub fn current_versions(fields: &[ResolvedField]) -> Result<BTreeMap<String, String>, FieldError> {
    fields
        .iter()
        .map(|f| {
            f.current_version()
                .map(|v| (f.name.clone(), v))
                .map_err(|reason| FieldError::Manifest {
                    field: f.name.clone(),
                    file: f.file.clone(),
                    source: Box::new(ManifestError::InvalidImage {
                        path: f.path.clone(),
                        value: f.value.clone(),
                        reason,
                    }),
                })
        })
        .collect()
}

/// The new text of `file` with every field of `target` that lives in it set to its new
/// version; other fields and all other bytes stay as they are.
pub fn edit_file(
    text: &str,
    file: &str,
    fields: &[ResolvedField],
    target: &BTreeMap<String, String>,
) -> Result<String, FieldError> {
    let mut text = text.to_owned();
    for field in fields.iter().filter(|f| f.file == file) {
        let Some(version) = target.get(&field.name) else {
            continue;
        };
        let (doc, path) = place(field, file)?;
        let doc = doc.as_ref();
        let Some(reference) = oci_ref_at(&text, doc, &path) else {
            text = set(&text, doc, &path, version, field.format)
                .map_err(|e| manifest_error(field, file, e))?
                .text;
            continue;
        };
        // An OCIRepository: the tag goes to `ref.tag`, its digest to `ref.digest` — never
        // `tag@digest` into `ref.tag`, which source-controller cannot pull.
        if let Some(range) = reference.semver {
            return Err(FieldError::SemverRef {
                repository: reference.name,
                file: file.to_owned(),
                range,
            });
        }
        let (tag, digest) = split_digest(version.trim()).map_err(|reason| {
            manifest_error(
                field,
                file,
                ManifestError::InvalidValue {
                    value: version.clone(),
                    reason,
                },
            )
        })?;
        match (reference.digest, digest) {
            (Some(_), None) => {
                return Err(FieldError::DigestRequired {
                    repository: reference.name,
                    file: file.to_owned(),
                    version: version.clone(),
                });
            }
            (None, Some(_)) => {
                return Err(FieldError::DigestUnexpected {
                    repository: reference.name,
                    file: file.to_owned(),
                    version: version.clone(),
                });
            }
            (_, digest) => {
                text = set(&text, doc, &path, tag, ValueFormat::Plain)
                    .map_err(|e| manifest_error(field, file, e))?
                    .text;
                if let Some(digest) = digest {
                    let digest_path =
                        YamlPath::parse(REF_DIGEST).map_err(|e| manifest_error(field, file, e))?;
                    text = set(&text, doc, &digest_path, &digest, ValueFormat::Plain)
                        .map_err(|e| manifest_error(field, file, e))?
                        .text;
                }
            }
        }
    }
    Ok(text)
}

/// The same version, digest included (a new digest under the same tag is a change).
fn same_version(a: &str, b: &str) -> bool {
    versions_equal(a, b) && digest_of(a) == digest_of(b)
}

/// Like [`edit_file`], but only from the versions the caller expects: each field of `target`
/// in `file` must hold its version in `expected` (it is then set) or already its target (it
/// stays); any other value was written by someone else and is refused, never overwritten.
pub fn edit_file_expecting(
    text: &str,
    file: &str,
    fields: &[ResolvedField],
    expected: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
) -> Result<String, FieldError> {
    let mut wanted = BTreeMap::new();
    for field in fields.iter().filter(|f| f.file == file) {
        let Some(version) = target.get(&field.name) else {
            continue;
        };
        let now = read_in(text, field, file)?;
        let found = current_versions(std::slice::from_ref(&now))?
            .remove(&field.name)
            .unwrap_or_default();
        if same_version(&found, version) {
            continue;
        }
        match expected.get(&field.name) {
            Some(from) if !same_version(&found, from) => {
                return Err(FieldError::ChangedInGit {
                    field: field.name.clone(),
                    file: file.to_owned(),
                    expected: from.clone(),
                    found,
                });
            }
            _ => {
                wanted.insert(field.name.clone(), version.clone());
            }
        }
    }
    edit_file(text, file, fields, &wanted)
}

/// The other paths that read `field` in `text` (the contents of its file) because the
/// scalar is anchored and repeated through aliases or merge keys — an edit changes them
/// all; None when only its own path reads it.
pub fn shared_readers(text: &str, field: &ResolvedField) -> Result<Option<Sharing>, FieldError> {
    let (doc, path) = place(field, &field.file)?;
    sharing(text, doc.as_ref(), &path).map_err(|e| manifest_error(field, &field.file, e))
}

/// Checks that every name in `target` is one of the fields.
pub fn check_target(
    fields: &[ResolvedField],
    target: &BTreeMap<String, String>,
) -> Result<(), FieldError> {
    let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    match target.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(FieldError::UnknownField(unknown.clone(), known.join(", "))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RELEASE: &str = "---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: db
spec:
  chartRef:
    kind: OCIRepository
    name: db-chart
  values:
    image:
      tag: 16.4@sha256:0000000000000000000000000000000000000000000000000000000000000000 # pinned
";
    const OCI: &str = "apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata:
  name: db-chart
spec:
  url: oci://ghcr.io/acme/charts/db
  ref:
    tag: v1.4.2
";

    fn spec(value: serde_json::Value) -> ManagedAppSpec {
        serde_json::from_value(value).unwrap()
    }

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_default_chart_field_follows_chart_ref_to_a_sibling_oci_repository() {
        let app = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db/release.yaml"}}),
        );
        let repo = files(&[
            ("apps/db/release.yaml", RELEASE),
            ("apps/db/oci.yaml", OCI),
            ("apps/other/oci.yaml", OCI),
        ]);
        let fields = locate_fields(&app, &repo).unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(
            (
                fields[0].file.as_str(),
                fields[0].path.as_str(),
                fields[0].value.as_str()
            ),
            ("apps/db/oci.yaml", ".spec.ref.tag", "v1.4.2")
        );
        assert_eq!(current_versions(&fields).unwrap()["chart"], "v1.4.2");
        // What tells this chart from an image of the same version in a Renovate report.
        assert_eq!(
            fields[0].package.as_deref(),
            Some("oci://ghcr.io/acme/charts/db")
        );
        let edited = edit_file(
            OCI,
            "apps/db/oci.yaml",
            &fields,
            &BTreeMap::from([("chart".into(), "v1.5.0".into())]),
        )
        .unwrap();
        assert_eq!(edited, OCI.replace("v1.4.2", "v1.5.0"));
    }

    #[test]
    fn the_default_chart_field_is_the_chart_spec_version_when_there_is_one() {
        let release = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\nspec:\n  chart:\n    spec:\n      chart: postgres\n      version: \"1.4.0\"\n";
        let app = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "db.yaml"}}),
        );
        let fields = locate_fields(&app, &files(&[("db.yaml", release)])).unwrap();
        assert_eq!(fields[0].document.as_deref(), Some("HelmRelease/db"));
        assert_eq!(current_versions(&fields).unwrap()["chart"], "1.4.0");
        assert_eq!(fields[0].package.as_deref(), Some("postgres"));
    }

    #[test]
    fn listed_fields_are_read_and_edited_in_place() {
        let app = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db/release.yaml"},
            "versions": [{"name": "image", "path": ".spec.values.image.tag"}, {"name": "chart", "file": "apps/db/oci.yaml", "path": ".spec.ref.tag"}]}),
        );
        let repo = files(&[("apps/db/release.yaml", RELEASE), ("apps/db/oci.yaml", OCI)]);
        let fields = locate_fields(&app, &repo).unwrap();
        let current = current_versions(&fields).unwrap();
        assert!(current["image"].starts_with("16.4@sha256:"));
        let digest = "1".repeat(64);
        let target = BTreeMap::from([("image".to_owned(), format!("16.5@sha256:{digest}"))]);
        let edited = edit_file(RELEASE, "apps/db/release.yaml", &fields, &target).unwrap();
        assert!(
            edited.contains(&format!("tag: 16.5@sha256:{digest} # pinned")),
            "{edited}"
        );
        assert_eq!(edited.len(), RELEASE.len());
        check_target(&fields, &target).unwrap();
        let err = check_target(
            &fields,
            &BTreeMap::from([("app".to_owned(), "1".to_owned())]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "target names version app, which the ManagedApp does not manage (known: image, chart)"
        );
    }

    #[test]
    fn an_edit_from_expected_versions_never_overwrites_someone_elses_value() {
        let app = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db/release.yaml"}}),
        );
        let repo = files(&[("apps/db/release.yaml", RELEASE), ("apps/db/oci.yaml", OCI)]);
        let fields = locate_fields(&app, &repo).unwrap();
        let from = BTreeMap::from([("chart".to_owned(), "v1.4.2".to_owned())]);
        let to = BTreeMap::from([("chart".to_owned(), "v1.5.0".to_owned())]);
        let edit = |text: &str| edit_file_expecting(text, "apps/db/oci.yaml", &fields, &from, &to);
        // From the expected version: set; already at the target: unchanged.
        let edited = edit(OCI).unwrap();
        assert_eq!(edited, OCI.replace("v1.4.2", "v1.5.0"));
        assert_eq!(edit(&edited).unwrap(), edited);
        // Someone else moved it on: refused, naming both versions.
        let theirs = OCI.replace("v1.4.2", "v1.6.0");
        let err = edit(&theirs).unwrap_err();
        assert_eq!(err.category(), "version_changed");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "version field chart in apps/db/oci.yaml now holds v1.6.0, not v1.4.2"
            ),
            "{message}"
        );
    }

    #[test]
    fn an_unreadable_file_is_reported_as_such_not_as_a_missing_field() {
        let app = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "db.yaml"}}),
        );
        let broken = "apiVersion: v2\nkind: HelmRelease\nmetadata: {name: db\nspec: [\n";
        let err = locate_fields(&app, &files(&[("db.yaml", broken)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("version field chart in db.yaml: the file is not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn missing_files_and_fields_are_named() {
        let app = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db/release.yaml"}}),
        );
        let err = locate_fields(&app, &files(&[("apps/db/release.yaml", RELEASE)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OCIRepository db-chart") && err.contains("apps/db"),
            "{err}"
        );
        let err = locate_fields(&app, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("apps/db/release.yaml does not exist"),
            "{err}"
        );
        let kustomized = spec(
            json!({"source": {"kind": "Kustomization", "name": "db"}, "git": {"file": "k.yaml"}}),
        );
        assert!(matches!(
            locate_fields(&kustomized, &BTreeMap::new()),
            Err(FieldError::VersionsRequired)
        ));
        let wrong_path = spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db/release.yaml"},
            "versions": [{"name": "image", "path": ".spec.values.image.version"}]}),
        );
        let err = locate_fields(&wrong_path, &files(&[("apps/db/release.yaml", RELEASE)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("version field image in apps/db/release.yaml:"),
            "{err}"
        );
    }

    const OLD_DIGEST: &str =
        "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const NEW_DIGEST: &str =
        "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn chart_app() -> ManagedAppSpec {
        spec(
            json!({"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "apps/db/release.yaml"}}),
        )
    }

    fn with_oci(oci: &str) -> BTreeMap<String, String> {
        files(&[("apps/db/release.yaml", RELEASE), ("apps/db/oci.yaml", oci)])
    }

    fn target(version: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("chart".to_owned(), version.to_owned())])
    }

    #[test]
    fn a_digest_beside_the_tag_is_part_of_the_version_and_changes_with_it() {
        let pinned = OCI.replace(
            "    tag: v1.4.2\n",
            &format!("    tag: v1.4.2\n    digest: {OLD_DIGEST} # renovate\n"),
        );
        let fields = locate_fields(&chart_app(), &with_oci(&pinned)).unwrap();
        assert_eq!(fields[0].ref_digest.as_deref(), Some(OLD_DIGEST));
        assert_eq!(
            current_versions(&fields).unwrap()["chart"],
            format!("v1.4.2@{OLD_DIGEST}")
        );
        let edit = |text: &str, version: &str| {
            edit_file(text, "apps/db/oci.yaml", &fields, &target(version))
        };
        let edited = edit(&pinned, &format!("v1.5.0@{NEW_DIGEST}")).unwrap();
        assert_eq!(
            edited,
            pinned
                .replace("v1.4.2", "v1.5.0")
                .replace(OLD_DIGEST, NEW_DIGEST)
        );
        // A new digest under the same tag is a change too.
        let from = target(&format!("v1.4.2@{OLD_DIGEST}"));
        let same_tag = target(&format!("v1.4.2@{NEW_DIGEST}"));
        let repinned =
            edit_file_expecting(&pinned, "apps/db/oci.yaml", &fields, &from, &same_tag).unwrap();
        assert_eq!(repinned, pinned.replace(OLD_DIGEST, NEW_DIGEST));
        // Without a digest the old one would win: refused, saying what to give.
        let err = edit(&pinned, "v1.5.0").unwrap_err();
        assert_eq!(err.reason(), "InvalidTarget");
        assert_eq!(
            err.to_string(),
            "OCIRepository db-chart in apps/db/oci.yaml pins spec.ref.digest beside spec.ref.tag, \
             and source-controller pulls the digest (it wins over the tag): changing only the tag \
             to v1.5.0 would leave the old chart running; give the version with its digest, \
             `v1.5.0@sha256:…` (Renovate's newDigest), so both change in one commit"
        );
    }

    #[test]
    fn a_tag_only_oci_repository_never_gets_tag_at_digest() {
        let fields = locate_fields(&chart_app(), &with_oci(OCI)).unwrap();
        let err = edit_file(
            OCI,
            "apps/db/oci.yaml",
            &fields,
            &target(&format!("v1.5.0@{NEW_DIGEST}")),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("has no spec.ref.digest")
                && err.to_string().contains("does not accept `tag@digest`"),
            "{err}"
        );
        // Written that way by hand, it is refused when read: source-controller cannot pull it.
        let bad = OCI.replace("v1.4.2", &format!("v1.4.2@{OLD_DIGEST}"));
        let err = locate_fields(&chart_app(), &with_oci(&bad)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "spec.ref.tag of OCIRepository db-chart in apps/db/oci.yaml is `v1.4.2@sha256:"
            ) && err
                .to_string()
                .contains("move the digest to spec.ref.digest"),
            "{err}"
        );
    }

    #[test]
    fn a_semver_range_is_refused_with_or_without_a_tag() {
        let range_only = OCI.replace("    tag: v1.4.2\n", "    semver: \">=1.4.0 <2.0.0\"\n");
        let beside = OCI.replace("    tag: v1.4.2\n", "    tag: v1.4.2\n    semver: 1.x\n");
        for (oci, range) in [(range_only, ">=1.4.0 <2.0.0"), (beside, "1.x")] {
            let err = locate_fields(&chart_app(), &with_oci(&oci)).unwrap_err();
            assert_eq!(err.reason(), "SemverRef");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "OCIRepository db-chart in apps/db/oci.yaml follows spec.ref.semver `{range}`"
                )) && message.contains("replace spec.ref.semver with spec.ref.tag"),
                "{message}"
            );
            // Listed by hand, the tag is refused the same way.
            let listed = spec(json!({"source": {"kind": "HelmRelease", "name": "db"},
                "git": {"file": "apps/db/release.yaml"},
                "versions": [{"name": "chart", "file": "apps/db/oci.yaml", "path": ".spec.ref.tag"}]}));
            let err = locate_fields(&listed, &with_oci(&oci)).unwrap_err();
            assert_eq!(err.reason(), "SemverRef", "{err}");
        }
    }

    #[test]
    fn an_oci_repository_without_a_tag_says_what_it_follows() {
        let digest_only = OCI.replace("    tag: v1.4.2\n", &format!("    digest: {OLD_DIGEST}\n"));
        let err = locate_fields(&chart_app(), &with_oci(&digest_only)).unwrap_err();
        assert!(
            err.to_string()
                .contains("has no spec.ref.tag and follows only a spec.ref.digest")
                && err
                    .to_string()
                    .contains("write the chart version in spec.ref.tag"),
            "{err}"
        );
    }
}
