//! Field ownership (`managedFields`) and server-side apply, simplified: lists are atomic leaves.

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

fn display(path: &str) -> String {
    path.replace('\u{0}', ".")
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

/// Leaf paths (`.spec.a.b`) of an object with their values; lists and scalars are leaves.
fn leaves(v: &Value, status: bool) -> BTreeMap<String, &Value> {
    fn walk<'a>(v: &'a Value, path: String, out: &mut BTreeMap<String, &'a Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    walk(c, format!("{path}\u{0}{k}"), out);
                }
            }
            _ => {
                out.insert(path, v);
            }
        }
    }
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
                                walk(mc, format!("\u{0}metadata\u{0}{mk}"), &mut out);
                            }
                        }
                    }
                }
                _ if status && k != "status" => {}
                _ => walk(c, format!("\u{0}{k}"), &mut out),
            }
        }
    }
    out
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path.split('\u{0}').filter(|s| !s.is_empty()) {
            let entry = cur
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
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
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty()
            || v.as_object()
                .is_some_and(|m| m.keys().any(|k| !k.starts_with("f:") && k != "."))
        {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            if children.is_empty() {
                return;
            }
        }
        for (k, c) in children {
            walk(c, format!("{path}\u{0}{}", &k[2..]), out);
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
) {
    let manager = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    let status = subresource == Some("status");
    let new_leaves = leaves(new, status);
    let (changed, removed): (FieldSet, FieldSet) = match old {
        None => (new_leaves.keys().cloned().collect(), FieldSet::new()),
        Some(o) => {
            let old_leaves = leaves(o, status);
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
        match cur.get_mut(*s) {
            Some(c) => cur = c,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(*last);
    }
}

fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('\u{0}')
        .filter(|s| !s.is_empty())
        .try_fold(obj, |c, s| c.get(s))
}

/// Deep merge for apply: maps merge, keyed lists merge by key, other lists and scalars replace.
fn apply_merge(target: &mut Value, applied: &Value, field: &str) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                if av.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => apply_merge(tv, av, k),
                    None => {
                        t.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a)) => {
            match merge_key(field, a)
                .filter(|_| a.iter().all(Value::is_object) && field != "conditions")
            {
                Some(key) => {
                    let mut out = Vec::new();
                    for ae in a {
                        let mut merged = ae.clone();
                        if let Some(te) = t.iter().find(|te| te.get(key) == ae.get(key)) {
                            merged = te.clone();
                            apply_merge(&mut merged, ae, "");
                        }
                        out.push(merged);
                    }
                    *t = out;
                }
                None => *t = a.clone(),
            }
        }
        (t, a) => *t = a.clone(),
    }
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
) -> Result<Value, ApiError> {
    let applied_leaves = leaves(applied, status);
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
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in &entries {
        if (e.manager == manager && (e.operation == "Apply" || e.subresource == sub))
            || MIGRATED_MANAGERS.contains(&e.manager.as_str())
        {
            continue;
        }
        for p in e.fields.intersection(&applied_set) {
            if value_at(old, p) != applied_leaves.get(p).copied() {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(m, p)| {
                Cause::new(
                    "FieldManagerConflict",
                    display(p),
                    format!("conflict with \"{m}\""),
                )
            })
            .collect();
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", display(p)))
            .collect();
        let mut err = ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                list.join("\n")
            ),
        );
        err.details = Some(
            json!({"causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()}),
        );
        return Err(err);
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
    for p in prev_applied.difference(&applied_set) {
        let owned_elsewhere = entries
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(p));
        if !owned_elsewhere {
            remove_path(&mut new, p);
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
    apply_merge(&mut new, &body, "");
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
        let created = apply(None, &json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "l"}, "spec": {"holder": "a"}}), "a", false, "v1", false).unwrap();
        let err = apply(
            Some(&created),
            &json!({"spec": {"holder": "b"}}),
            "b",
            false,
            "v1",
            false,
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
        )
        .unwrap();
        let forced = apply(
            Some(&created),
            &json!({"spec": {"holder": "b"}}),
            "b",
            true,
            "v1",
            false,
        )
        .unwrap();
        assert_eq!(forced["spec"]["holder"], "b");
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
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &json!({"metadata": {"name": "x"}, "data": {"a": "1"}}),
            "m",
            false,
            "v1",
            false,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"a": "1"}));
        let mut upd = v2.clone();
        upd["data"]["c"] = json!("3");
        record_update(Some(&v2), &mut upd, "other", "v1", None);
        let owners: Vec<&str> = upd["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["m", "other"]);
    }
}
