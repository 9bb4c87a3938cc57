//! Field ownership (`managedFields`) and server-side apply: per-field owners, keyed list items owned one by one, other lists atomic.
//!
//! Which lists are keyed: for custom resources the schema says (`x-kubernetes-list-type: map`
//! with its `x-kubernetes-list-map-keys`; every other list is atomic, as the real server
//! treats them); built-ins have no schema here, so their strategic-merge keys stand in.

use crate::patch::merge_key;
use crate::status::{ApiError, Cause};
use crate::store::now;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Leaf paths, segments separated by NUL so keys with dots (annotations) stay whole.
type FieldSet = BTreeSet<String>;

/// Managers whose fields a server-side apply takes over without conflict: client-side
/// apply history, which the real server migrates through the last-applied annotation.
const MIGRATED_MANAGERS: &[&str] = &["kubectl-client-side-apply", "before-first-apply"];

/// `.spec.containers[name="app"].image`, the way the real server names fields in conflicts.
fn display(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('\u{0}').filter(|s| !s.is_empty()) {
        match item_match(seg) {
            Some(m) => {
                let keys: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", keys.join(",")));
            }
            None => {
                out.push('.');
                out.push_str(seg);
            }
        }
    }
    out
}

const META_SKIP: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// What is known of the part of an object being walked.
#[derive(Clone, Copy)]
enum Sch<'a> {
    /// A built-in kind (or its metadata): lists keyed by their strategic-merge keys.
    Builtin,
    /// A custom resource: the structural schema of this node, `None` where it declares
    /// nothing (preserved unknown fields), whose lists are atomic.
    Custom(Option<&'a Value>),
}

impl<'a> Sch<'a> {
    fn root(schema: Option<&'a Value>) -> Self {
        match schema {
            Some(s) => Sch::Custom(Some(s)),
            None => Sch::Builtin,
        }
    }

    fn field(self, k: &str) -> Self {
        match self {
            Sch::Custom(Some(s)) => Sch::Custom(
                s.get("properties")
                    .and_then(|p| p.get(k))
                    .or(s.get("additionalProperties").filter(|a| a.is_object())),
            ),
            other => other,
        }
    }

    fn items(self) -> Self {
        match self {
            Sch::Custom(Some(s)) => Sch::Custom(s.get("items")),
            other => other,
        }
    }

    /// The keys of a list whose items are owned one by one (when every item has them as
    /// scalars); `None` for an atomic list.
    fn list_keys(self, field: &str, items: &[Value]) -> Option<Vec<String>> {
        let keys: Vec<String> = match self {
            Sch::Builtin => vec![merge_key(field, items)?.to_string()],
            Sch::Custom(Some(s)) if s["x-kubernetes-list-type"] == "map" => {
                s["x-kubernetes-list-map-keys"]
                    .as_array()?
                    .iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            }
            Sch::Custom(_) => return None,
        };
        let scalar =
            |e: &Value, k: &String| e.get(k).is_some_and(|v| v.is_string() || v.is_number());
        (!keys.is_empty()
            && !items.is_empty()
            && items.iter().all(|e| keys.iter().all(|k| scalar(e, k))))
        .then_some(keys)
    }

    /// Whether this is a keyed list (so an empty one claims no items).
    fn keyed(self, field: &str, items: &[Value]) -> bool {
        match self {
            Sch::Builtin => merge_key(field, items).is_some(),
            Sch::Custom(Some(s)) => s["x-kubernetes-list-type"] == "map",
            Sch::Custom(None) => false,
        }
    }
}

/// `k:{"name":"web"}`: the path segment of a keyed list item, as in real `fieldsV1`.
fn item_segment(keys: &[String], item: &Value) -> String {
    let mut m = Map::new();
    for key in keys {
        m.insert(key.clone(), item[key.as_str()].clone());
    }
    format!("k:{}", Value::Object(m))
}

/// Leaf paths (NUL-separated segments) of an object with their values. Scalars, atomic
/// lists and empty maps are leaves; keyed list items are walked under `k:` segments.
fn leaves<'a>(v: &'a Value, status: bool, schema: Option<&Value>) -> BTreeMap<String, &'a Value> {
    fn walk<'a>(
        v: &'a Value,
        field: &str,
        sch: Sch<'_>,
        path: String,
        out: &mut BTreeMap<String, &'a Value>,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    walk(c, k, sch.field(k), format!("{path}\u{0}{k}"), out);
                }
            }
            // An empty keyed list claims no items.
            Value::Array(items) if items.is_empty() && sch.keyed(field, items) => {}
            Value::Array(items) => match sch.list_keys(field, items) {
                Some(keys) => {
                    for item in items {
                        walk(
                            item,
                            "",
                            sch.items(),
                            format!("{path}\u{0}{}", item_segment(&keys, item)),
                            out,
                        );
                    }
                }
                None => {
                    out.insert(path, v);
                }
            },
            _ => {
                out.insert(path, v);
            }
        }
    }
    let root = Sch::root(schema);
    let mut out = BTreeMap::new();
    if let Some(m) = v.as_object() {
        for (k, c) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "status" if !status => {}
                "metadata" => {
                    if let Some(mm) = c.as_object() {
                        for (mk, mc) in mm {
                            if !META_SKIP.contains(&mk.as_str()) {
                                walk(
                                    mc,
                                    mk,
                                    Sch::Builtin,
                                    format!("\u{0}metadata\u{0}{mk}"),
                                    &mut out,
                                );
                            }
                        }
                    }
                }
                _ if status && k != "status" => {}
                _ => walk(c, k, root.field(k), format!("\u{0}{k}"), &mut out),
            }
        }
    }
    out
}

/// The key/value pairs a `k:` segment names.
fn item_match(seg: &str) -> Option<Map<String, Value>> {
    seg.strip_prefix("k:")
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|v| v.as_object().cloned())
}

fn find_item(items: &[Value], want: &Map<String, Value>) -> Option<usize> {
    items
        .iter()
        .position(|e| want.iter().all(|(k, v)| e.get(k) == Some(v)))
}

/// The path of the innermost keyed list item a path runs through.
fn item_prefix(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('\u{0}').collect();
    let i = segs.iter().rposition(|s| s.starts_with("k:"))?;
    Some(segs[..=i].join("\u{0}"))
}

/// Whether the path is a key field of its list item (`...k:{"name":"x"}\0name`).
fn is_item_key(path: &str) -> bool {
    let segs: Vec<&str> = path.split('\u{0}').collect();
    match segs.as_slice() {
        [.., parent, last] => item_match(parent).is_some_and(|m| m.contains_key(*last)),
        _ => false,
    }
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path.split('\u{0}').filter(|s| !s.is_empty()) {
            let name = if seg.starts_with("k:") {
                seg.to_string()
            } else {
                format!("f:{seg}")
            };
            let entry = cur.entry(name).or_insert_with(|| Value::Object(Map::new()));
            cur = match entry {
                Value::Object(m) => m,
                _ => unreachable!("fieldsV1 nodes are always objects"),
            };
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: String, out: &mut FieldSet) {
        let children: Vec<(String, &Value)> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, c)| {
                        if let Some(f) = k.strip_prefix("f:") {
                            Some((f.to_string(), c))
                        } else if k.starts_with("k:") {
                            Some((k.clone(), c))
                        } else {
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path);
            }
            return;
        }
        for (seg, c) in children {
            walk(c, format!("{path}\u{0}{seg}"), out);
        }
    }
    let mut out = FieldSet::new();
    walk(v, String::new(), &mut out);
    out
}

struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: String,
    fields: FieldSet,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                    subresource: e["subresource"].as_str().unwrap_or("").to_string(),
                    time: e["time"].as_str().unwrap_or("").to_string(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Records a non-apply write: `manager` takes the fields it changed, others lose them.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    schema: Option<&Value>,
) {
    let manager = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    let status = subresource == Some("status");
    let new_leaves = leaves(new, status, schema);
    let (changed, removed): (FieldSet, FieldSet) = match old {
        None => (new_leaves.keys().cloned().collect(), FieldSet::new()),
        Some(o) => {
            let old_leaves = leaves(o, status, schema);
            (
                new_leaves
                    .iter()
                    .filter(|(p, v)| old_leaves.get(*p) != Some(*v))
                    .map(|(p, _)| p.clone())
                    .collect(),
                old_leaves
                    .keys()
                    .filter(|p| !new_leaves.contains_key(*p))
                    .cloned()
                    .collect(),
            )
        }
    };
    let mut entries = match old {
        Some(o) => read_entries(o),
        None => Vec::new(),
    };
    let sub = subresource.unwrap_or("").to_string();
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                subresource: sub,
                time: now(),
                fields: changed,
            }),
        }
    }
    write_entries(new, entries);
}

fn remove_path(obj: &mut Value, path: &str) {
    let segs: Vec<&str> = path.split('\u{0}').filter(|s| !s.is_empty()).collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        let next = match item_match(s) {
            Some(want) => match cur.as_array_mut() {
                Some(items) => find_item(items, &want).and_then(|i| items.get_mut(i)),
                None => None,
            },
            None => cur.get_mut(*s),
        };
        match next {
            Some(c) => cur = c,
            None => return,
        }
    }
    match item_match(last) {
        Some(want) => {
            if let Some(items) = cur.as_array_mut()
                && let Some(i) = find_item(items, &want)
            {
                items.remove(i);
            }
        }
        None => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(*last);
            }
        }
    }
}

fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('\u{0}')
        .filter(|s| !s.is_empty())
        .try_fold(obj, |c, s| match item_match(s) {
            Some(want) => c
                .as_array()
                .and_then(|items| find_item(items, &want).map(|i| &items[i])),
            None => c.get(s),
        })
}

/// Deep merge for apply: maps merge, keyed lists merge by key, other lists and scalars replace.
fn apply_merge(target: &mut Value, applied: &Value, field: &str, sch: Sch<'_>) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                if av.is_null() {
                    t.remove(k);
                    continue;
                }
                // Metadata is a built-in part of every object.
                let child = if k == "metadata" && field.is_empty() {
                    Sch::Builtin
                } else {
                    sch.field(k)
                };
                match t.get_mut(k) {
                    Some(tv) => apply_merge(tv, av, k, child),
                    None => {
                        t.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(_), Value::Array(a)) if a.is_empty() && sch.keyed(field, a) => {}
        (Value::Array(t), Value::Array(a)) => match sch.list_keys(field, a) {
            // Items merge into the live list by key; items others own stay.
            Some(keys) => {
                let same = |te: &Value, ae: &Value| keys.iter().all(|k| te.get(k) == ae.get(k));
                for ae in a {
                    match t.iter_mut().find(|te| same(te, ae)) {
                        Some(te) => apply_merge(te, ae, "\u{0}item", sch.items()),
                        None => t.push(ae.clone()),
                    }
                }
            }
            None => *t = a.clone(),
        },
        (t, a) => *t = a.clone(),
    }
}

/// A manager as the real server names it in conflicts: `"kubectl-patch" using v1` for an
/// Update (with ` with subresource "status"` before `using` for a subresource), the bare
/// quoted name for an Apply.
fn printed_manager(e: &Entry) -> String {
    let mut out = format!("{:?}", e.manager);
    if !e.subresource.is_empty() {
        out.push_str(&format!(" with subresource {:?}", e.subresource));
    }
    if e.operation == "Update" {
        out.push_str(&format!(" using {}", e.api_version));
    }
    out
}

/// The 409 of a refused apply, worded as the real server's: one conflict on one line; several
/// grouped by manager (sorted), each field on a line of its own.
fn conflict_error(conflicts: &[(String, String)]) -> ApiError {
    let message = if let [(m, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            display(p)
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (m, p) in conflicts {
            by_manager.entry(m).or_default().push(display(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            let c = Cause::new(
                "FieldManagerConflict",
                display(p),
                format!("conflict with {m}"),
            );
            json!({"reason": c.reason, "message": c.message, "field": c.field})
        })
        .collect();
    let mut err = ApiError::new(409, "Conflict", message);
    err.details = Some(json!({"causes": causes}));
    err
}

/// Server-side apply of `applied` by `manager` onto `old` (or onto nothing, for a create).
///
/// Returns the merged object carrying updated `managedFields`, or a 409 naming the conflicts.
pub fn apply(
    old: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    status: bool,
    schema: Option<&Value>,
) -> Result<Value, ApiError> {
    let applied_leaves = leaves(applied, status, schema);
    let applied_set: FieldSet = applied_leaves.keys().cloned().collect();
    let Some(old) = old else {
        let mut new = applied.clone();
        write_entries(
            &mut new,
            vec![Entry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                api_version: api_version.to_string(),
                subresource: String::new(),
                time: now(),
                fields: applied_set,
            }],
        );
        return Ok(new);
    };
    let mut entries = read_entries(old);
    let sub = if status { "status" } else { "" };
    // (manager as the real server prints it, field path)
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in &entries {
        if (e.manager == manager && (e.operation == "Apply" || e.subresource == sub))
            || MIGRATED_MANAGERS.contains(&e.manager.as_str())
        {
            continue;
        }
        for p in e.fields.intersection(&applied_set) {
            if value_at(old, p) != applied_leaves.get(p).copied() {
                conflicts.push((printed_manager(e), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    let mut conflicted: FieldSet = conflicts.into_iter().map(|(_, p)| p).collect();
    for e in &entries {
        if MIGRATED_MANAGERS.contains(&e.manager.as_str()) {
            conflicted.extend(e.fields.intersection(&applied_set).cloned());
        }
    }
    let prev_applied: FieldSet = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut new = old.clone();
    let others = |p: &dyn Fn(&String) -> bool| {
        entries
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.iter().any(p))
    };
    let mut dropped_items = BTreeSet::new();
    for p in prev_applied.difference(&applied_set) {
        if others(&|f| f == p) {
            continue;
        }
        if let Some(item) = item_prefix(p) {
            dropped_items.insert(item);
            // Key fields go with their item, never alone.
            if is_item_key(p) {
                continue;
            }
        }
        remove_path(&mut new, p);
    }
    for item in dropped_items {
        let still_owned =
            applied_set.iter().any(|f| f.starts_with(&item)) || others(&|f| f.starts_with(&item));
        if !still_owned {
            remove_path(&mut new, &item);
        }
    }
    let mut body = applied.clone();
    if let Some(m) = body.as_object_mut() {
        if !status {
            m.remove("status");
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    apply_merge(&mut new, &body, "", Sch::root(schema));
    for e in entries.iter_mut() {
        e.fields.retain(|p| !conflicted.contains(p));
    }
    entries.retain(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == sub));
    entries.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        subresource: sub.to_string(),
        time: now(),
        fields: applied_set,
    });
    write_entries(&mut new, entries);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_conflicts_with_other_owner_unless_forced() {
        let created = apply(None, &json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "l"}, "spec": {"holder": "a"}}), "a", false, "v1", false, None).unwrap();
        let err = apply(
            Some(&created),
            &json!({"spec": {"holder": "b"}}),
            "b",
            false,
            "v1",
            false,
            None,
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains(".spec.holder"), "{}", err.message);
        // Same value: shared ownership, no conflict.
        apply(
            Some(&created),
            &json!({"spec": {"holder": "a"}}),
            "b",
            false,
            "v1",
            false,
            None,
        )
        .unwrap();
        let forced = apply(
            Some(&created),
            &json!({"spec": {"holder": "b"}}),
            "b",
            true,
            "v1",
            false,
            None,
        )
        .unwrap();
        assert_eq!(forced["spec"]["holder"], "b");
    }

    #[test]
    fn keyed_list_items_have_their_own_owners() {
        let dep = |containers: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": containers}}}})
        };
        let a = apply(
            None,
            &dep(json!([{"name": "app", "image": "app:1"}])),
            "a",
            false,
            "apps/v1",
            false,
            None,
        )
        .unwrap();
        // b adds a sidecar: no conflict, both items live.
        let b = apply(
            Some(&a),
            &dep(json!([{"name": "sidecar", "image": "proxy:1"}])),
            "b",
            false,
            "apps/v1",
            false,
            None,
        )
        .unwrap();
        let names = |v: &Value| -> Vec<String> {
            v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&b), ["app", "sidecar"]);
        let fields = &b["metadata"]["managedFields"][1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
            ["f:containers"];
        assert!(fields.get("k:{\"name\":\"sidecar\"}").is_some(), "{fields}");
        // b changing a's image conflicts on that one field.
        let err = apply(
            Some(&b),
            &dep(
                json!([{"name": "sidecar", "image": "proxy:1"}, {"name": "app", "image": "app:2"}]),
            ),
            "b",
            false,
            "apps/v1",
            false,
            None,
        )
        .unwrap_err();
        assert!(
            err.message
                .contains(".spec.template.spec.containers[name=\"app\"].image"),
            "{}",
            err.message
        );
        // a re-applies without its container: only a's item goes.
        let c = apply(
            Some(&b),
            &dep(json!([])),
            "a",
            false,
            "apps/v1",
            false,
            None,
        )
        .unwrap();
        assert_eq!(names(&c), ["sidecar"]);
        // An Update manager changing one item owns just that item's field.
        let mut upd = c.clone();
        upd["spec"]["template"]["spec"]["containers"][0]["image"] = json!("proxy:2");
        record_update(Some(&c), &mut upd, "kubectl-edit", "apps/v1", None, None);
        let err = apply(
            Some(&upd),
            &dep(json!([{"name": "sidecar", "image": "proxy:3"}])),
            "b",
            false,
            "apps/v1",
            false,
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("kubectl-edit"), "{}", err.message);
    }

    #[test]
    fn reapply_removes_fields_the_manager_dropped() {
        let v1 = apply(
            None,
            &json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}}),
            "m",
            false,
            "v1",
            false,
            None,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &json!({"metadata": {"name": "x"}, "data": {"a": "1"}}),
            "m",
            false,
            "v1",
            false,
            None,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"a": "1"}));
        let mut upd = v2.clone();
        upd["data"]["c"] = json!("3");
        record_update(Some(&v2), &mut upd, "other", "v1", None, None);
        let owners: Vec<&str> = upd["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["m", "other"]);
    }
}
