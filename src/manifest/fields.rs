//! An app's version fields in its repository: where each one lives (the ManagedApp's
//! `versions`, or the default chart field of a HelmRelease — `.spec.chart.spec.version`,
//! or the `.spec.ref.tag` of the OCIRepository its `chartRef` names, in the same file or a
//! sibling), what each holds now, and the new text of a file with several of them changed.

use super::image::split_digest;
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
    /// The package the field versions, when known (see `renovate::mapping::infer_package`): a chart name,
    /// an OCI repository or an image repository. It tells apart two dependencies of one
    /// file that happen to be at the same version (a chart and its image, both `6.5.0`).
    pub package: Option<String>,
}

impl ResolvedField {
    /// The version the field holds: the value itself, or the image reference's tag, with
    /// `@digest` when it pins one.
    pub fn current_version(&self) -> Result<String, String> {
        match self.format {
            ValueFormat::Plain => Ok(self.value.trim().to_owned()),
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
    let tag = YamlPath::parse(".spec.ref.tag").map_err(|e| no_default(e.to_string()))?;
    for file in candidates {
        if get(&files[&file], Some(&repo_doc), &tag).is_ok() {
            let field = ResolvedField {
                name: "chart".into(),
                file,
                document: Some(repository),
                path: ".spec.ref.tag".into(),
                format: ValueFormat::Plain,
                value: String::new(),
                package: None,
            };
            return Ok(vec![with_value(field, files)?]);
        }
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
    mut field: ResolvedField,
    files: &BTreeMap<String, String>,
) -> Result<ResolvedField, FieldError> {
    let text = read(files, &field.name, &field.file)?;
    field.value = value_in(&text, &field, &field.file)?;
    Ok(field)
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

/// The raw value of `field` in `text` (the contents of `file`).
fn value_in(text: &str, field: &ResolvedField, file: &str) -> Result<String, FieldError> {
    let (doc, path) = place(field, file)?;
    get(text, doc.as_ref(), &path).map_err(|e| manifest_error(field, file, e))
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
        text = set(&text, doc.as_ref(), &path, version, field.format)
            .map_err(|e| manifest_error(field, file, e))?
            .text;
    }
    Ok(text)
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
        let now = ResolvedField {
            value: value_in(text, field, file)?,
            ..field.clone()
        };
        let found = current_versions(std::slice::from_ref(&now))?
            .remove(&field.name)
            .unwrap_or_default();
        if versions_equal(&found, version) {
            continue;
        }
        match expected.get(&field.name) {
            Some(from) if !versions_equal(&found, from) => {
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
}
