//! What `kustomize build` yields for the files of one directory tree, as kustomize-controller
//! runs it: `kustomization.yaml` `resources` (files and directories), `namespace` and
//! `images`; a directory without one gets all its YAML files, as Flux generates it.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::collections::BTreeMap;

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Kinds that are never namespaced, so a kustomization `namespace:` leaves them alone.
const CLUSTER_SCOPED: [&str; 10] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "PersistentVolume",
    "VolumeSnapshotClass",
    "VolumeSnapshotContent",
    "PriorityClass",
    "APIService",
];

/// Builds the objects of directory `dir` in the repository tree `files` (paths from the
/// repository root, `/`-separated), in resource order. Resources may point anywhere in the
/// repository (`../base`), as with Flux, but not outside it.
pub fn build(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Vec<Value>> {
    let dir = normalize(dir)?;
    if !is_dir(files, &dir) {
        bail!("kustomization path not found: {dir}");
    }
    build_dir(files, &dir, 0)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Resolves `.` and `..`; leaving the root is an error (Flux refuses it too).
fn normalize(path: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts
                    .pop()
                    .ok_or_else(|| anyhow!("path {path} leaves the repository"))?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

pub fn is_dir(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> bool {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    files.keys().any(|k| k.starts_with(&prefix))
}

fn kustomization_file(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Option<String> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|n| join(dir, n))
        .find(|p| files.contains_key(p))
}

fn build_dir(files: &BTreeMap<String, Vec<u8>>, dir: &str, depth: usize) -> Result<Vec<Value>> {
    if depth > 32 {
        bail!("kustomization resources nest too deeply at {dir} (a cycle?)");
    }
    let Some(kfile) = kustomization_file(files, dir) else {
        return generated(files, dir, depth);
    };
    let text =
        std::str::from_utf8(&files[&kfile]).with_context(|| format!("{kfile} is not UTF-8"))?;
    let k: Value = serde_saphyr::from_str(text).with_context(|| format!("parsing {kfile}"))?;
    let mut objects = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let r = r
            .as_str()
            .ok_or_else(|| anyhow!("{kfile}: resources entries must be strings"))?;
        if r.contains("://") {
            bail!("{kfile}: remote resource {r} is not supported by the simulator");
        }
        let path = normalize(&join(dir, r))?;
        if files.contains_key(&path) {
            objects.extend(parse_file(&path, &files[&path])?);
        } else if is_dir(files, &path) {
            objects.extend(build_dir(files, &path, depth + 1)?);
        } else {
            bail!("{kfile}: resource {r} not found");
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for o in objects.iter_mut() {
            let kind = o["kind"].as_str().unwrap_or_default();
            if !CLUSTER_SCOPED.contains(&kind) {
                o["metadata"]["namespace"] = Value::from(ns);
            }
        }
    }
    for image in k["images"].as_array().into_iter().flatten() {
        for o in objects.iter_mut() {
            set_images(o, image);
        }
    }
    Ok(objects)
}

/// Flux's generated kustomization: every YAML file in the directory and below, except
/// that a subdirectory with its own kustomization is built as one resource.
fn generated(files: &BTreeMap<String, Vec<u8>>, dir: &str, depth: usize) -> Result<Vec<Value>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut objects = Vec::new();
    let mut subdirs: Vec<String> = Vec::new();
    for (path, content) in files.range(prefix.clone()..) {
        let Some(rest) = path.strip_prefix(&prefix) else {
            break;
        };
        match rest.split_once('/') {
            None => {
                if rest.ends_with(".yaml") || rest.ends_with(".yml") || rest.ends_with(".json") {
                    objects.extend(parse_file(path, content)?);
                }
            }
            Some((sub, _)) => {
                let sub = join(dir, sub);
                if subdirs.last() != Some(&sub) {
                    subdirs.push(sub);
                }
            }
        }
    }
    for sub in subdirs {
        objects.extend(build_dir(files, &sub, depth + 1)?);
    }
    Ok(objects)
}

/// Every object in a (multi-document) YAML file; empty documents are skipped.
pub fn parse_file(path: &str, content: &[u8]) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(content).with_context(|| format!("{path} is not UTF-8"))?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).with_context(|| format!("parsing {path}"))?;
    let mut objects = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if d.is_null() {
            continue;
        }
        let named = d["apiVersion"].is_string()
            && d["kind"].is_string()
            && d["metadata"]["name"].is_string();
        if !named {
            bail!(
                "{path}: document {} lacks apiVersion, kind or metadata.name",
                i + 1
            );
        }
        objects.push(d);
    }
    Ok(objects)
}

/// Applies one kustomize `images` entry to the containers of an object.
fn set_images(obj: &mut Value, image: &Value) {
    let Some(name) = image["name"].as_str() else {
        return;
    };
    let pod_specs = [
        "/spec/template/spec",
        "/spec/jobTemplate/spec/template/spec",
        "/spec",
    ];
    for p in pod_specs {
        let Some(spec) = obj.pointer_mut(p) else {
            continue;
        };
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array_mut().into_iter().flatten() {
                let Some(current) = c["image"].as_str() else {
                    continue;
                };
                let (repo, tag, digest) = split_image(current);
                if repo != name {
                    continue;
                }
                let repo = image["newName"].as_str().unwrap_or(repo);
                let mut out = repo.to_owned();
                match (image["digest"].as_str(), image["newTag"].as_str()) {
                    (Some(d), _) => out = format!("{out}@{d}"),
                    (None, Some(t)) => out = format!("{out}:{t}"),
                    (None, None) => {
                        if let Some(t) = tag {
                            out = format!("{out}:{t}");
                        }
                        if let Some(d) = digest {
                            out = format!("{out}@{d}");
                        }
                    }
                }
                c["image"] = Value::from(out);
            }
        }
    }
}

/// `repo[:tag][@digest]`, where a `:` inside the registry host:port is not a tag.
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag), digest),
        _ => (rest, None, digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn names(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ";

    #[test]
    fn resources_files_and_directories_in_order() {
        let files = tree(&[
            (
                "kustomization.yaml",
                "resources:\n- b.yaml\n- sub\n- ./a.yaml\n",
            ),
            ("a.yaml", &format!("{CM}a\n")),
            ("b.yaml", &format!("{CM}b1\n---\n{CM}b2\n---\n")),
            (
                "sub/kustomization.yaml",
                "resources: [c.yaml]\nnamespace: other\n",
            ),
            ("sub/c.yaml", &format!("{CM}c\n")),
            ("sub/ignored.yaml", &format!("{CM}ignored\n")),
            ("unlisted.yaml", &format!("{CM}unlisted\n")),
        ]);
        let objects = build(&files, "").unwrap();
        assert_eq!(
            names(&objects),
            ["ConfigMap/b1", "ConfigMap/b2", "ConfigMap/c", "ConfigMap/a"]
        );
        assert_eq!(objects[2]["metadata"]["namespace"], "other");
        assert!(objects[0]["metadata"]["namespace"].is_null());
    }

    #[test]
    fn plain_directory_takes_all_yaml_recursively() {
        let files = tree(&[
            ("a.yaml", &format!("{CM}a\n")),
            ("README.md", "not yaml"),
            ("deep/b.yml", &format!("{CM}b\n")),
            ("k/kustomization.yaml", "resources: [x.yaml]\n"),
            ("k/x.yaml", &format!("{CM}x\n")),
            ("k/y.yaml", &format!("{CM}y\n")),
        ]);
        assert_eq!(
            names(&build(&files, "").unwrap()),
            ["ConfigMap/a", "ConfigMap/b", "ConfigMap/x"]
        );
    }

    #[test]
    fn missing_resource_and_escape_are_errors() {
        let files = tree(&[("kustomization.yaml", "resources: [gone.yaml]\n")]);
        assert!(
            build(&files, "")
                .unwrap_err()
                .to_string()
                .contains("gone.yaml")
        );
        let files = tree(&[("kustomization.yaml", "resources: [../x.yaml]\n")]);
        assert!(build(&files, "").is_err());
        let files = tree(&[("a.yaml", "kind: ConfigMap\n")]);
        assert!(
            build(&files, "")
                .unwrap_err()
                .to_string()
                .contains("a.yaml")
        );
    }

    #[test]
    fn a_path_may_use_the_rest_of_the_repository() {
        let files = tree(&[
            (
                "clusters/prod/kustomization.yaml",
                "resources: [../../base]\n",
            ),
            ("base/a.yaml", &format!("{CM}a\n")),
            ("other/b.yaml", &format!("{CM}b\n")),
        ]);
        assert_eq!(
            names(&build(&files, "./clusters/prod/").unwrap()),
            ["ConfigMap/a"]
        );
        assert_eq!(names(&build(&files, "./base").unwrap()), ["ConfigMap/a"]);
        let missing = build(&files, "./nope").unwrap_err().to_string();
        assert!(missing.contains("path not found"), "{missing}");
    }

    #[test]
    fn images_set_new_tag() {
        let files = tree(&[
            (
                "kustomization.yaml",
                "resources: [d.yaml]\nimages:\n- name: ghcr.io/x/app\n  newTag: 2.0.0\n",
            ),
            (
                "d.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: a, image: 'ghcr.io/x/app:1.0.0'}\n      - {name: b, image: 'other:1'}\n",
            ),
        ]);
        let o = &build(&files, "").unwrap()[0];
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"][0]["image"],
            "ghcr.io/x/app:2.0.0"
        );
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"][1]["image"],
            "other:1"
        );
    }

    #[test]
    fn image_split_ignores_registry_port() {
        assert_eq!(split_image("reg:5000/app"), ("reg:5000/app", None, None));
        assert_eq!(
            split_image("reg:5000/app:1.2@sha256:ab"),
            ("reg:5000/app", Some("1.2"), Some("sha256:ab"))
        );
    }
}
