//! Which manifests in Git a Flux Kustomization applies — its `spec.path` walked the way
//! kustomize-controller builds it — and whether they set `spec.suspend` on a given Flux
//! object, a field the Kustomization's server-side apply puts back whenever it reconciles.
//!
//! Pure: the caller reads directories of the repository and asks again until the walk is
//! [`Walk::Done`].

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// File names kustomize reads as a kustomization (`konfig.RecognizedKustomizationFileNames`).
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Most directories one walk visits; kustomize refuses cycles, and real trees are far smaller.
const MAX_DIRECTORIES: usize = 1000;

/// The files of a repository read so far: contents by path from the repository root, and
/// the directories that were read in full (every file under them, however deep).
#[derive(Debug, Default)]
pub struct RepoFiles {
    files: BTreeMap<String, Vec<u8>>,
    read: BTreeSet<String>,
}

impl RepoFiles {
    /// Adds the files of directory `dir` (paths relative to it), read in full.
    pub fn add_directory(&mut self, dir: &str, files: BTreeMap<String, Vec<u8>>) {
        let dir = clean(dir);
        for (path, bytes) in files {
            self.files.insert(join(&dir, &path), bytes);
        }
        self.read.insert(dir);
    }

    /// Whether no directory has been read yet.
    pub fn nothing_read(&self) -> bool {
        self.read.is_empty()
    }

    /// Whether everything under `dir` has been read.
    pub fn covers(&self, dir: &str) -> bool {
        self.read
            .iter()
            .any(|r| r.is_empty() || dir == r || dir.starts_with(&format!("{r}/")))
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    fn is_dir(&self, path: &str) -> bool {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        self.files
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix))
    }

    /// The files directly in `dir` and the names of its direct subdirectories.
    fn entries(&self, dir: &str) -> (Vec<&str>, BTreeSet<String>) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut files = Vec::new();
        let mut dirs = BTreeSet::new();
        for (path, _) in self.files.range(prefix.clone()..) {
            let Some(rest) = path.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                None => files.push(path.as_str()),
                Some((sub, _)) => {
                    dirs.insert(join(dir, sub));
                }
            }
        }
        (files, dirs)
    }
}

/// One document of a file the Kustomization applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Its file, from the repository root.
    pub file: String,
    /// The document.
    pub document: Value,
    /// The namespace kustomize gives it (an enclosing kustomization's `namespace`, or the
    /// Kustomization's `spec.targetNamespace`), when one does.
    pub namespace: Option<String>,
}

/// A patch a kustomization applies to the objects it builds.
#[derive(Clone, Debug, PartialEq)]
pub struct KustomizePatch {
    /// Where it is written: the patch file, or the kustomization that holds it inline.
    pub file: String,
    /// Its `target` (kind, name, namespace), when it has one.
    pub target: Value,
    /// The patch: a strategic-merge document (a mapping) or JSON 6902 operations (a list).
    pub patch: Value,
}

/// What the Kustomization builds from Git: its manifests and the patches over them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Build {
    /// Every document of every file it applies.
    pub manifests: Vec<Manifest>,
    /// Every patch of every kustomization it reads.
    pub patches: Vec<KustomizePatch>,
}

/// How far a walk got.
#[derive(Debug, PartialEq)]
pub enum Walk {
    /// Everything it applies was among the files read.
    Done(Build),
    /// It reaches into this directory, not read yet (read it and walk again).
    NeedDirectory(String),
}

/// Walks what a Kustomization with `spec.path` `path` (and `spec.targetNamespace`
/// `target_namespace`) applies from `files`. As kustomize-controller builds it: a directory
/// with a kustomization file gives its `resources` and `components` (files or directories,
/// remote ones skipped) and its patches; a directory without one gives every YAML or JSON
/// file in it and below it, a subdirectory with its own kustomization file standing for
/// itself (fluxcd/pkg/kustomize `Generator`, which writes that kustomization). The
/// outermost `namespace` wins, and `spec.targetNamespace` is outermost of all. Files that
/// do not parse are skipped: kustomize-controller cannot build them, so it applies nothing
/// from them either.
pub fn walk(files: &RepoFiles, path: &str, target_namespace: Option<&str>) -> Walk {
    let mut walker = Walker {
        files,
        build: Build::default(),
        visited: BTreeSet::new(),
    };
    match walker.directory(&clean(path), target_namespace.map(str::to_owned)) {
        Ok(()) => Walk::Done(walker.build),
        Err(Need(dir)) => Walk::NeedDirectory(dir),
    }
}

/// A directory the walk needs and has not got.
struct Need(String);

struct Walker<'a> {
    files: &'a RepoFiles,
    build: Build,
    visited: BTreeSet<String>,
}

impl Walker<'_> {
    fn directory(&mut self, dir: &str, namespace: Option<String>) -> Result<(), Need> {
        if !self.files.covers(dir) {
            return Err(Need(dir.to_owned()));
        }
        if !self.visited.insert(dir.to_owned()) || self.visited.len() > MAX_DIRECTORIES {
            return Ok(());
        }
        let kustomization = KUSTOMIZATION_FILES
            .iter()
            .map(|name| join(dir, name))
            .find(|path| self.files.is_file(path));
        match kustomization {
            Some(file) => self.kustomization(dir, &file, namespace),
            None => self.plain_directory(dir, namespace),
        }
    }

    fn plain_directory(&mut self, dir: &str, namespace: Option<String>) -> Result<(), Need> {
        let (files, subdirectories) = self.files.entries(dir);
        for file in files {
            if is_manifest_file(file) {
                self.manifests(file, namespace.clone());
            }
        }
        for sub in subdirectories {
            self.directory(&sub, namespace.clone())?;
        }
        Ok(())
    }

    fn kustomization(
        &mut self,
        dir: &str,
        file: &str,
        namespace: Option<String>,
    ) -> Result<(), Need> {
        let Some(spec) = self.parse(file).into_iter().next() else {
            return Ok(());
        };
        let namespace = namespace.or_else(|| spec["namespace"].as_str().map(str::to_owned));
        for field in ["resources", "components", "bases"] {
            for entry in strings(&spec[field]) {
                if is_remote(&entry) {
                    continue;
                }
                let Some(path) = resolve(dir, &entry) else {
                    continue;
                };
                if !self.files.covers(&path) {
                    // A file's directory is read whole, so siblings come along.
                    return Err(Need(if is_manifest_file(&path) {
                        parent(&path).to_owned()
                    } else {
                        path
                    }));
                }
                if self.files.is_file(&path) {
                    self.manifests(&path, namespace.clone());
                } else if self.files.is_dir(&path) {
                    self.directory(&path, namespace.clone())?;
                }
            }
        }
        for patch in spec["patches"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(spec["patchesJson6902"].as_array().into_iter().flatten())
        {
            let target = patch["target"].clone();
            if let Some(inline) = patch["patch"].as_str() {
                self.patches(file, &inline_documents(inline), &target);
            } else if let Some(entry) = patch["path"].as_str() {
                self.patch_file(dir, entry, &target)?;
            }
        }
        for entry in strings(&spec["patchesStrategicMerge"]) {
            let documents = inline_documents(&entry);
            if documents.iter().any(Value::is_object) {
                self.patches(file, &documents, &Value::Null);
            } else {
                self.patch_file(dir, &entry, &Value::Null)?;
            }
        }
        Ok(())
    }

    fn patch_file(&mut self, dir: &str, entry: &str, target: &Value) -> Result<(), Need> {
        let Some(path) = resolve(dir, entry) else {
            return Ok(());
        };
        if !self.files.covers(&path) {
            return Err(Need(parent(&path).to_owned()));
        }
        let documents = self.parse(&path);
        self.patches(&path, &documents, target);
        Ok(())
    }

    fn patches(&mut self, file: &str, documents: &[Value], target: &Value) {
        for document in documents {
            self.build.patches.push(KustomizePatch {
                file: file.to_owned(),
                target: target.clone(),
                patch: document.clone(),
            });
        }
    }

    fn manifests(&mut self, file: &str, namespace: Option<String>) {
        for document in self.parse(file) {
            self.build.manifests.push(Manifest {
                file: file.to_owned(),
                document,
                namespace: namespace.clone(),
            });
        }
    }

    /// The documents of a file; none when it is not YAML (or JSON).
    fn parse(&self, file: &str) -> Vec<Value> {
        self.files
            .files
            .get(file)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .map(inline_documents)
            .unwrap_or_default()
    }
}

/// The non-empty documents of YAML text; none when it does not parse (serde-saphyr's
/// default budget bounds what aliases may expand to).
fn inline_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .map(|documents| documents.into_iter().filter(|d| !d.is_null()).collect())
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn is_manifest_file(path: &str) -> bool {
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// A resource kustomize fetches from elsewhere (a Git URL or a remote base).
fn is_remote(entry: &str) -> bool {
    entry.contains("://") || entry.starts_with("git@") || entry.starts_with("github.com/")
}

/// `entry` relative to `dir`, from the repository root; None when it leaves the repository.
fn resolve(dir: &str, entry: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in entry.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// `./apps/x/` → `apps/x`; `./` → ``.
fn clean(path: &str) -> String {
    resolve("", path).unwrap_or_default()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// A Flux object whose `spec.suspend` matters: its API group, kind, namespace and name.
#[derive(Clone, Copy, Debug)]
pub struct ObjectId<'a> {
    /// API group, e.g. `helm.toolkit.fluxcd.io`.
    pub group: &'a str,
    /// Kind, e.g. `HelmRelease`.
    pub kind: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
}

/// Where Git sets `spec.suspend` on an object.
#[derive(Clone, Debug, PartialEq)]
pub struct SuspendInGit {
    /// The file (a manifest, a patch, or the kustomization holding an inline patch).
    pub file: String,
    /// The value written there (`true`, `false`, or null when a patch removes it).
    pub value: Value,
}

/// Where `build` sets `spec.suspend` on `object`: its manifest, or a patch targeting it.
pub fn suspend_set_in(build: &Build, object: ObjectId<'_>) -> Vec<SuspendInGit> {
    let mut found = Vec::new();
    for manifest in &build.manifests {
        let document = &manifest.document;
        let namespace = manifest
            .namespace
            .as_deref()
            .or_else(|| document["metadata"]["namespace"].as_str());
        let same = document["kind"] == object.kind
            && group_of(&document["apiVersion"]) == object.group
            && document["metadata"]["name"] == object.name
            && namespace.is_none_or(|n| n == object.namespace);
        if same && let Some(value) = spec_suspend(document) {
            found.push(SuspendInGit {
                file: manifest.file.clone(),
                value,
            });
        }
    }
    for patch in &build.patches {
        if let Some(value) = patch_sets_suspend(patch, object) {
            found.push(SuspendInGit {
                file: patch.file.clone(),
                value,
            });
        }
    }
    found
}

/// `spec.suspend` of a document, when the key is written (even as null).
fn spec_suspend(document: &Value) -> Option<Value> {
    document["spec"].as_object()?.get("suspend").cloned()
}

fn group_of(api_version: &Value) -> &str {
    api_version
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group)
}

/// Whether a patch targets `object` and writes its `spec.suspend`, and the value it writes.
/// A target names kind, name and namespace exactly or not at all (a regular-expression name
/// is taken literally).
fn patch_sets_suspend(patch: &KustomizePatch, object: ObjectId<'_>) -> Option<Value> {
    let targets = |field: &str, want: &str, own: &Value| match patch.target[field].as_str() {
        Some(t) => t == want,
        None => own.as_str().is_none_or(|o| o == want),
    };
    match &patch.patch {
        Value::Array(operations) => {
            if !(targets("kind", object.kind, &Value::Null)
                && targets("name", object.name, &Value::Null)
                && targets("namespace", object.namespace, &Value::Null))
            {
                return None;
            }
            operations
                .iter()
                .find(|op| {
                    op["path"] == "/spec/suspend"
                        && matches!(op["op"].as_str(), Some("add" | "replace" | "remove"))
                })
                .map(|op| op.get("value").cloned().unwrap_or(Value::Null))
        }
        document @ Value::Object(_) => {
            let hits = targets("kind", object.kind, &document["kind"])
                && targets("name", object.name, &document["metadata"]["name"])
                && targets(
                    "namespace",
                    object.namespace,
                    &document["metadata"]["namespace"],
                );
            hits.then(|| spec_suspend(document)).flatten()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DB: ObjectId<'static> = ObjectId {
        group: "helm.toolkit.fluxcd.io",
        kind: "HelmRelease",
        namespace: "apps",
        name: "db",
    };

    fn release(extra_spec: &str) -> String {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\n  namespace: apps\nspec:\n  interval: 10m\n{extra_spec}"
        )
    }

    fn repo(files: &[(&str, &str)]) -> RepoFiles {
        let mut repo = RepoFiles::default();
        repo.add_directory(
            "",
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        );
        repo
    }

    fn built(repo: &RepoFiles, path: &str) -> Build {
        match walk(repo, path, None) {
            Walk::Done(build) => build,
            Walk::NeedDirectory(dir) => panic!("needs {dir}"),
        }
    }

    fn files_of(build: &Build) -> Vec<&str> {
        build.manifests.iter().map(|m| m.file.as_str()).collect()
    }

    #[test]
    fn a_kustomization_file_lists_what_is_applied() {
        let repo = repo(&[
            (
                "clusters/prod/kustomization.yaml",
                "resources:\n- flux-system\n- db.yaml\n- ../../apps/base\n- https://github.com/x/y//z\n",
            ),
            (
                "clusters/prod/flux-system/kustomization.yaml",
                "resources: [gotk-sync.yaml]\n",
            ),
            (
                "clusters/prod/flux-system/gotk-sync.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n",
            ),
            ("clusters/prod/flux-system/unlisted.yaml", &release("")),
            ("clusters/prod/db.yaml", &release("")),
            (
                "clusters/prod/not-listed.yaml",
                &release("  suspend: true\n"),
            ),
            ("apps/base/web.yaml", &release("")),
            ("clusters/staging/db.yaml", &release("  suspend: true\n")),
        ]);
        let build = built(&repo, "./clusters/prod");
        assert_eq!(
            files_of(&build),
            [
                "clusters/prod/flux-system/gotk-sync.yaml",
                "clusters/prod/db.yaml",
                "apps/base/web.yaml"
            ]
        );
        assert!(
            suspend_set_in(&build, DB).is_empty(),
            "unlisted files do not count"
        );
    }

    #[test]
    fn a_directory_without_one_applies_every_manifest_below_it() {
        let repo = repo(&[
            ("apps/db.yaml", &release("  suspend: false\n")),
            ("apps/README.md", "not yaml"),
            ("apps/deep/more.yml", &release("")),
            ("apps/own/kustomization.yaml", "resources: [a.yaml]\n"),
            ("apps/own/a.yaml", &release("")),
            ("apps/own/b.yaml", &release("  suspend: true\n")),
        ]);
        let build = built(&repo, "apps");
        assert_eq!(
            files_of(&build),
            ["apps/db.yaml", "apps/deep/more.yml", "apps/own/a.yaml"]
        );
        assert_eq!(
            suspend_set_in(&build, DB),
            [SuspendInGit {
                file: "apps/db.yaml".into(),
                value: json!(false)
            }]
        );
    }

    #[test]
    fn only_the_same_object_counts_with_namespaces_as_kustomize_sets_them() {
        let repo = repo(&[
            (
                "apps/kustomization.yaml",
                "namespace: apps\nresources: [db.yaml, other.yaml]\n",
            ),
            (
                "apps/db.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\nspec:\n  suspend: true\n",
            ),
            (
                "apps/other.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: db\n  namespace: apps\nspec:\n  suspend: true\n",
            ),
        ]);
        let build = built(&repo, "apps");
        assert_eq!(suspend_set_in(&build, DB).len(), 1);
        assert_eq!(suspend_set_in(&build, DB)[0].file, "apps/db.yaml");
        let elsewhere = ObjectId {
            namespace: "other",
            ..DB
        };
        assert!(suspend_set_in(&build, elsewhere).is_empty());
        // spec.targetNamespace is outermost: it moves the object out of `apps`.
        let Walk::Done(moved) = walk(&repo, "apps", Some("prod")) else {
            panic!("walks")
        };
        assert!(suspend_set_in(&moved, DB).is_empty());
    }

    #[test]
    fn patches_that_write_spec_suspend_count() {
        let repo = repo(&[
            (
                "apps/kustomization.yaml",
                "resources: [db.yaml]\npatches:\n- patch: |\n    - op: add\n      path: /spec/suspend\n      value: false\n  target:\n    kind: HelmRelease\n    name: db\n- path: smp.yaml\npatchesStrategicMerge:\n- other-smp.yaml\n",
            ),
            ("apps/db.yaml", &release("")),
            (
                "apps/smp.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\nspec:\n  suspend: true\n",
            ),
            (
                "apps/other-smp.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\nspec:\n  suspend: true\n",
            ),
        ]);
        let found = suspend_set_in(&built(&repo, "apps"), DB);
        assert_eq!(
            found,
            [
                SuspendInGit {
                    file: "apps/kustomization.yaml".into(),
                    value: json!(false)
                },
                SuspendInGit {
                    file: "apps/smp.yaml".into(),
                    value: json!(true)
                },
            ]
        );
    }

    #[test]
    fn the_walk_asks_for_directories_it_has_not_read() {
        let mut repo = RepoFiles::default();
        repo.add_directory(
            "clusters/prod",
            [(
                "kustomization.yaml".to_owned(),
                b"resources: [../../apps/db/release.yaml]\n".to_vec(),
            )]
            .into(),
        );
        assert_eq!(
            walk(&repo, "./clusters/prod/", None),
            Walk::NeedDirectory("apps/db".into())
        );
        repo.add_directory(
            "apps/db",
            [(
                "release.yaml".to_owned(),
                release("  suspend: false\n").into_bytes(),
            )]
            .into(),
        );
        let build = built(&repo, "./clusters/prod/");
        assert_eq!(suspend_set_in(&build, DB)[0].file, "apps/db/release.yaml");
        let empty = RepoFiles::default();
        assert_eq!(walk(&empty, "x", None), Walk::NeedDirectory("x".into()));
    }

    #[test]
    fn unparsable_files_and_paths_out_of_the_repository_are_skipped() {
        let repo = repo(&[
            (
                "apps/kustomization.yaml",
                "resources: [../../../etc/passwd, broken.yaml, db.yaml]\n",
            ),
            ("apps/broken.yaml", "a: [unclosed\n"),
            ("apps/db.yaml", &release("  suspend: false\n")),
        ]);
        let build = built(&repo, "apps");
        assert_eq!(files_of(&build), ["apps/db.yaml"]);
    }
}
