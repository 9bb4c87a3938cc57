//! Our own Flux and VolumeSnapshot CRDs (`crds/`, embedded as `kubesim::third_party::CRDS`)
//! against the upstream releases they mirror (`crds/upstream.txt`, whose files
//! `kubesim::third_party::upstream_crd_files` finds in the Go module cache), and kubesim
//! serving them.
//!
//! The fidelity test compares, per CRD: group, scope, names, versions (served, storage,
//! deprecated), subresources, printer columns, and every schema node our files declare —
//! the node must exist upstream with the same `type`, `enum`, `format` and int-or-string,
//! our `required` must be a subset of upstream's, and any `default` or CEL rule of ours must
//! be upstream's too. Upstream nodes we leave open are not compared. Without the upstream
//! modules in the cache it prints `SKIPPED: …` and passes, unless
//! `FLUXGATE_REQUIRE_UPSTREAM_CRDS=1` (CI) makes that a failure.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kubesim::KubeSim;
use kubesim::third_party::{CRDS, UPSTREAM, upstream_crd_files};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")
}

/// Every YAML document of a text that is an object; `origin` names it in errors.
fn documents_of(text: &str, origin: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{origin} is not valid YAML: {e}"));
    docs.into_iter().filter(Value::is_object).collect()
}

/// Every YAML document of a file that is an object.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    documents_of(&text, &path.display().to_string())
}

/// Our nine CRDs as (file name, CRD), as kubesim embeds them ([`CRDS`]).
fn ours() -> Vec<(&'static str, Value)> {
    CRDS.iter()
        .map(|(file, text)| {
            let mut docs = documents_of(text, &format!("crds/{file}"));
            assert_eq!(docs.len(), 1, "{file}: expected exactly one document");
            (*file, docs.remove(0))
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn versions(crd: &Value) -> &[Value] {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A line for the test log, shown even when the test harness captures output.
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ---------------------------------------------------------------------------------------
// The upstream files (found by `kubesim::third_party::upstream_crd_files`).

/// The lines of `crds/upstream.txt` ([`UPSTREAM`]) as (`<module path>@<version>`, directory
/// in the module); panics on a malformed line, so that a typo fails instead of skipping.
fn upstream_modules() -> Vec<(&'static str, &'static str)> {
    UPSTREAM
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (module, dir) = line.split_once(char::is_whitespace).unwrap_or_else(|| {
                panic!("crds/upstream.txt: {line:?} is not `<module>@<version> <dir>`")
            });
            let (path, version) = module
                .split_once('@')
                .unwrap_or_else(|| panic!("crds/upstream.txt: {module:?} has no @version"));
            assert!(
                !path.is_empty() && version.starts_with('v') && !dir.trim().is_empty(),
                "crds/upstream.txt: {line:?} is not `<module>@<version> <dir>`"
            );
            (module, dir.trim())
        })
        .collect()
}

/// The line of `crds/upstream.txt` an upstream file came from: its path holds the module
/// (as the Go module cache spells it, `!x` for `X`) followed by the directory.
fn module_of(file: &Path) -> Option<&'static str> {
    let spelled = file.to_string_lossy().replace('!', "");
    upstream_modules()
        .into_iter()
        .find(|(module, dir)| spelled.contains(&format!("{}/{dir}/", module.to_lowercase())))
        .map(|(module, _)| module)
}

/// Upstream CRDs by `metadata.name`, with the file each came from.
fn upstream_index(files: &[PathBuf]) -> BTreeMap<String, (PathBuf, Value)> {
    let mut index = BTreeMap::new();
    for file in files {
        for doc in documents(file) {
            if doc["kind"] == "CustomResourceDefinition" {
                let name = str_at(&doc, "/metadata/name").to_owned();
                index.insert(name, (file.clone(), doc));
            }
        }
    }
    index
}

// ---------------------------------------------------------------------------------------
// Comparing.

/// Collects differences as `<plural> <version> <what>: <detail>`.
struct Diffs {
    out: Vec<String>,
}

impl Diffs {
    fn push(&mut self, what: String) {
        self.out.push(what);
    }
}

fn bool_at(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn columns(version: &Value) -> Vec<(String, String, String, String, i64)> {
    version["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| {
                    (
                        str_at(c, "/name").to_owned(),
                        str_at(c, "/type").to_owned(),
                        str_at(c, "/format").to_owned(),
                        str_at(c, "/jsonPath").to_owned(),
                        c["priority"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn subresources(version: &Value) -> BTreeSet<String> {
    version["subresources"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An enum as a set of its values' JSON (order does not matter).
fn enum_set(node: Option<&Value>) -> Option<BTreeSet<String>> {
    node.and_then(|n| n.get("enum"))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Value::to_string).collect())
}

/// Walks our schema node at `path` and compares it with upstream's node there.
fn compare_node(ours: &Value, upstream: Option<&Value>, path: &str, at: &str, diffs: &mut Diffs) {
    let shown = if path.is_empty() { "." } else { path };
    let Some(up) = upstream else {
        diffs.push(format!(
            "{at} {shown}: ours declares it, upstream has no such field"
        ));
        return;
    };
    if let Some(ty) = ours.get("type")
        && up.get("type") != Some(ty)
    {
        diffs.push(format!(
            "{at} {shown}: ours {}, upstream {}",
            show(Some(ty)),
            show(up.get("type"))
        ));
    }
    let (ours_enum, up_enum) = (enum_set(Some(ours)), enum_set(Some(up)));
    if (ours_enum.is_some() || up_enum.is_some()) && ours_enum != up_enum {
        diffs.push(format!(
            "{at} {shown}: enum ours {}, upstream {}",
            show(ours.get("enum")),
            show(up.get("enum"))
        ));
    }
    if let Some(format) = ours.get("format")
        && up.get("format") != Some(format)
    {
        diffs.push(format!(
            "{at} {shown}: format ours {}, upstream {}",
            show(Some(format)),
            show(up.get("format"))
        ));
    }
    if bool_at(ours, "x-kubernetes-int-or-string") && !bool_at(up, "x-kubernetes-int-or-string") {
        diffs.push(format!("{at} {shown}: ours int-or-string, upstream not"));
    }
    let up_required: BTreeSet<String> = string_list(up.get("required")).into_iter().collect();
    for r in string_list(ours.get("required")) {
        if !up_required.contains(&r) {
            diffs.push(format!(
                "{at} {shown}: ours requires {r}, upstream does not"
            ));
        }
    }
    if let Some(default) = ours.get("default")
        && up.get("default") != Some(default)
    {
        diffs.push(format!(
            "{at} {shown}: default ours {default}, upstream {}",
            show(up.get("default"))
        ));
    }
    let up_rules: BTreeSet<String> = up
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rs| rs.iter().map(|r| str_at(r, "/rule").to_owned()).collect())
        .unwrap_or_default();
    for rule in ours
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rule = str_at(rule, "/rule");
        if !up_rules.contains(rule) {
            diffs.push(format!("{at} {shown}: CEL rule {rule:?} is not upstream's"));
        }
    }
    if let Some(props) = ours.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let up_child = up.get("properties").and_then(|p| p.get(name));
            compare_node(child, up_child, &format!("{path}.{name}"), at, diffs);
        }
    }
    if let Some(items) = ours.get("items").filter(|i| i.is_object()) {
        compare_node(
            items,
            up.get("items").filter(|i| i.is_object()),
            &format!("{path}[*]"),
            at,
            diffs,
        );
    }
    if let Some(extra) = ours.get("additionalProperties").filter(|a| a.is_object()) {
        let up_extra = up.get("additionalProperties").filter(|a| a.is_object());
        compare_node(extra, up_extra, &format!("{path}{{*}}"), at, diffs);
    }
}

fn compare_crd(file: &str, ours: &Value, upstream: &Value, diffs: &mut Diffs) {
    let plural = str_at(ours, "/spec/names/plural");
    for ptr in ["/spec/group", "/spec/scope"] {
        if ours.pointer(ptr) != upstream.pointer(ptr) {
            diffs.push(format!(
                "{file} {ptr}: ours {}, upstream {}",
                show(ours.pointer(ptr)),
                show(upstream.pointer(ptr))
            ));
        }
    }
    for key in ["kind", "plural", "singular", "listKind"] {
        let ptr = format!("/spec/names/{key}");
        if ours.pointer(&ptr) != upstream.pointer(&ptr) {
            diffs.push(format!(
                "{file} names.{key}: ours {}, upstream {}",
                show(ours.pointer(&ptr)),
                show(upstream.pointer(&ptr))
            ));
        }
    }
    for key in ["shortNames", "categories"] {
        let (o, u) = (
            string_list(ours.pointer(&format!("/spec/names/{key}"))),
            string_list(upstream.pointer(&format!("/spec/names/{key}"))),
        );
        if o != u {
            diffs.push(format!("{file} names.{key}: ours {o:?}, upstream {u:?}"));
        }
    }
    let by_name = |crd: &Value| -> BTreeMap<String, Value> {
        versions(crd)
            .iter()
            .map(|v| (str_at(v, "/name").to_owned(), v.clone()))
            .collect()
    };
    let (ours_v, up_v) = (by_name(ours), by_name(upstream));
    let (ours_names, up_names): (BTreeSet<_>, BTreeSet<_>) =
        (ours_v.keys().collect(), up_v.keys().collect());
    if ours_names != up_names {
        diffs.push(format!(
            "{file} versions: ours {ours_names:?}, upstream {up_names:?}"
        ));
    }
    for (name, ov) in &ours_v {
        let Some(uv) = up_v.get(name) else { continue };
        let at = format!("{plural} {name}");
        for flag in ["served", "storage", "deprecated"] {
            if bool_at(ov, flag) != bool_at(uv, flag) {
                diffs.push(format!(
                    "{at} {flag}: ours {}, upstream {}",
                    bool_at(ov, flag),
                    bool_at(uv, flag)
                ));
            }
        }
        if subresources(ov) != subresources(uv) {
            diffs.push(format!(
                "{at} subresources: ours {:?}, upstream {:?}",
                subresources(ov),
                subresources(uv)
            ));
        }
        let (oc, uc) = (columns(ov), columns(uv));
        for i in 0..oc.len().max(uc.len()) {
            if oc.get(i) != uc.get(i) {
                diffs.push(format!(
                    "{at} additionalPrinterColumns[{i}] (name, type, format, jsonPath, priority): ours {:?}, upstream {:?}",
                    oc.get(i),
                    uc.get(i)
                ));
            }
        }
        let schema = ov.pointer("/schema/openAPIV3Schema");
        let up_schema = uv.pointer("/schema/openAPIV3Schema");
        if let Some(schema) = schema {
            compare_node(schema, up_schema, "", &at, diffs);
        }
    }
}

#[test]
fn our_crds_match_the_upstream_releases_they_mirror() {
    let modules = upstream_modules();
    let files = match upstream_crd_files() {
        Ok(files) => files,
        Err(why) => {
            if std::env::var("FLUXGATE_REQUIRE_UPSTREAM_CRDS").as_deref() == Ok("1") {
                panic!("FLUXGATE_REQUIRE_UPSTREAM_CRDS=1 but the upstream CRDs are missing: {why}");
            }
            log(&format!("SKIPPED: {why}"));
            return;
        }
    };
    let index = upstream_index(&files);
    let mut diffs = Diffs { out: Vec::new() };
    let mut used = Vec::new();
    for (file, crd) in ours() {
        let name = str_at(&crd, "/metadata/name");
        match index.get(name) {
            None => diffs.push(format!(
                "{file}: no upstream CRD named {name} in {} (files: {files:?})",
                modules
                    .iter()
                    .map(|(module, _)| *module)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some((path, upstream)) => {
                used.push(format!(
                    "{} {}",
                    module_of(path).unwrap_or("(module not in crds/upstream.txt?)"),
                    path.display()
                ));
                compare_crd(file, &crd, upstream, &mut diffs);
            }
        }
    }
    for (module, dir) in &modules {
        if !files.iter().any(|f| module_of(f) == Some(*module)) {
            diffs.push(format!(
                "crds/upstream.txt: {module} {dir} supplied none of our CRDs"
            ));
        }
    }
    log(&format!(
        "upstream CRDs compared with:\n  {}",
        used.join("\n  ")
    ));
    assert!(
        diffs.out.is_empty(),
        "{} difference(s) between crds/ and upstream:\n  {}",
        diffs.out.len(),
        diffs.out.join("\n  ")
    );
    log(&format!(
        "all {} CRDs match upstream where they declare something",
        used.len()
    ));
}

// ---------------------------------------------------------------------------------------
// Well-formed and served, no upstream needed.

/// Schema nodes that are neither typed nor explicitly free-form (not structural).
fn untyped_nodes(node: &Value, path: &str, out: &mut Vec<String>) {
    let free = bool_at(node, "x-kubernetes-preserve-unknown-fields")
        || bool_at(node, "x-kubernetes-int-or-string");
    if node.get("type").is_none() && !free {
        out.push(if path.is_empty() {
            ".".into()
        } else {
            path.into()
        });
    }
    if node.get("properties").is_some() && node["type"] != "object" {
        out.push(format!("{path} (has properties but is not type: object)"));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            untyped_nodes(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        untyped_nodes(items, &format!("{path}[*]"), out);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
        untyped_nodes(extra, &format!("{path}{{*}}"), out);
    }
}

#[test]
fn each_crd_is_well_formed_and_open_where_untyped() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(crds_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    let expected: BTreeSet<String> = CRDS.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(
        on_disk, expected,
        "crds/ holds exactly the CRD files kubesim embeds (third_party::CRDS)"
    );
    assert_eq!(expected.len(), 9, "our nine CRDs");
    for (file, crd) in ours() {
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1", "{file}");
        assert_eq!(crd["kind"], "CustomResourceDefinition", "{file}");
        let (group, plural) = (
            str_at(&crd, "/spec/group"),
            str_at(&crd, "/spec/names/plural"),
        );
        assert_eq!(
            str_at(&crd, "/metadata/name"),
            format!("{plural}.{group}"),
            "{file}"
        );
        assert_eq!(
            file,
            format!("{group}_{plural}.yaml"),
            "file named as upstream names it"
        );
        let storage: Vec<&str> = versions(&crd)
            .iter()
            .filter(|v| bool_at(v, "storage"))
            .map(|v| str_at(v, "/name"))
            .collect();
        assert_eq!(
            storage.len(),
            1,
            "{file}: exactly one storage version, got {storage:?}"
        );
        for v in versions(&crd) {
            let name = str_at(v, "/name");
            let schema = v.pointer("/schema/openAPIV3Schema");
            assert!(
                schema.is_some_and(Value::is_object),
                "{file} {name}: every version has a schema (served: {})",
                bool_at(v, "served")
            );
            let schema = schema.unwrap();
            let mut untyped = Vec::new();
            untyped_nodes(schema, "", &mut untyped);
            assert!(
                untyped.is_empty(),
                "{file} {name}: untyped schema nodes {untyped:?}"
            );
            // Fields we do not type must round-trip: spec and status keep unknown fields
            // (a VolumeSnapshotClass has neither, so its root does).
            let props = schema["properties"].as_object().unwrap();
            if props.contains_key("spec") || props.contains_key("status") {
                for part in ["spec", "status"] {
                    if let Some(p) = props.get(part) {
                        assert!(
                            bool_at(p, "x-kubernetes-preserve-unknown-fields"),
                            "{file} {name}: .{part} must keep unknown fields"
                        );
                    }
                }
            } else {
                assert!(
                    bool_at(schema, "x-kubernetes-preserve-unknown-fields"),
                    "{file} {name}: a schema without spec/status must keep unknown fields at the root"
                );
            }
        }
    }
}

/// The spec of a minimal valid object of each kind (a VolumeSnapshotClass's top-level
/// fields), with one field no schema of ours types (`probe`), to see it round-trip.
fn sample(kind: &str) -> Value {
    match kind {
        "GitRepository" => {
            json!({"url": "https://git.example.com/r.git", "interval": "1m", "probe": "kept"})
        }
        "HelmRepository" => json!({"url": "https://charts.example.com", "probe": "kept"}),
        "OCIRepository" => {
            json!({"url": "oci://ghcr.io/x/y", "interval": "1m", "ref": {"tag": "1.0.0"}, "probe": "kept"})
        }
        "HelmChart" => {
            json!({"chart": "app", "interval": "1m", "sourceRef": {"kind": "HelmRepository", "name": "r"}, "probe": "kept"})
        }
        "Kustomization" => {
            json!({"interval": "10m", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "r"}, "probe": "kept"})
        }
        "HelmRelease" => {
            json!({"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "c"}, "probe": "kept"})
        }
        "VolumeSnapshot" => {
            json!({"source": {"persistentVolumeClaimName": "data"}, "probe": "kept"})
        }
        "VolumeSnapshotContent" => {
            json!({"deletionPolicy": "Delete", "driver": "d", "source": {"volumeHandle": "h"},
                                          "volumeSnapshotRef": {"name": "s", "namespace": "default"}, "probe": "kept"})
        }
        _ => json!({"driver": "d", "deletionPolicy": "Retain", "probe": "kept"}),
    }
}

#[tokio::test]
async fn kubesim_serves_every_kind_from_our_crds() {
    let sim = KubeSim::start().await;
    let written = sim
        .load_third_party_crds()
        .expect("kubesim accepts our CRDs");
    assert_eq!(
        written
            .iter()
            .filter(|w| w.starts_with("CustomResourceDefinition/"))
            .count(),
        CRDS.len(),
        "{written:?}"
    );
    let client = sim.client();
    for (file, crd) in ours() {
        let group = str_at(&crd, "/spec/group");
        let kind = str_at(&crd, "/spec/names/kind");
        let plural = str_at(&crd, "/spec/names/plural");
        let namespaced = str_at(&crd, "/spec/scope") == "Namespaced";
        for v in versions(&crd) {
            let version = str_at(v, "/name");
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            );
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(client.clone(), "default", &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            let listed = api.list(&ListParams::default()).await;
            if bool_at(v, "served") {
                listed.unwrap_or_else(|e| panic!("{file}: listing {kind} {version}: {e}"));
            } else {
                assert!(listed.is_err(), "{file}: {version} is not served but lists");
            }
            if !bool_at(v, "storage") {
                continue;
            }
            let mut object = if kind == "VolumeSnapshotClass" {
                sample(kind) // top-level fields, no spec
            } else {
                json!({ "spec": sample(kind) })
            };
            object["apiVersion"] = json!(format!("{group}/{version}"));
            object["kind"] = json!(kind);
            object["metadata"] = json!({"name": "probe"});
            let created = api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(object).unwrap(),
                )
                .await
                .unwrap_or_else(|e| panic!("{file}: creating a minimal {kind}: {e}"));
            let data = &created.data;
            let probe = if kind == "VolumeSnapshotClass" {
                &data["probe"]
            } else {
                &data["spec"]["probe"]
            };
            assert_eq!(
                probe, "kept",
                "{file}: an untyped field must round-trip, got {data}"
            );
        }
    }
}
