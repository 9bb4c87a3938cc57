//! Patch bodies: JSON merge patch, JSON patch (RFC 6902, with `test`) and the strategic merge patch subset kubectl needs.

use crate::status::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// The patch flavours, by request content type.
pub use apicontrols::request::PatchType;

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the JSON patch could not be applied: {e}"),
        )
    })
}

/// The merge key of a list field, or `None` when the list is replaced wholesale.
///
/// Keys come from field names (and, for `ports`, from the elements), not from the Go types, so
/// a custom field that happens to be called `containers` is merged the same way.
pub fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => {
            if elements.iter().any(|e| e.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

fn primitive_merge(field: &str) -> bool {
    field == "finalizers"
}

pub fn strategic_merge(target: &mut Value, patch: &Value) -> ApiResult<()> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => smp_map(t, p),
        _ => {
            *target = strip_directives(patch);
            Ok(())
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn smp_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> ApiResult<()> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(&Value::Object(patch.clone()))
            .as_object()
            .cloned()
            .unwrap_or_default();
        return Ok(());
    }
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            target.remove(k);
            continue;
        }
        if let Value::Object(pm) = pv {
            if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                target.remove(k);
                continue;
            }
            match target.get_mut(k) {
                Some(Value::Object(tm)) => smp_map(tm, pm)?,
                _ => {
                    target.insert(k.clone(), strip_directives(pv));
                }
            }
            continue;
        }
        if let Value::Array(pa) = pv {
            let replace = pa
                .iter()
                .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
            let existing = target.get(k).and_then(Value::as_array).cloned();
            let merged = match (existing, replace) {
                (Some(ta), false) => {
                    if primitive_merge(k) {
                        let mut out = ta;
                        for e in pa {
                            if !out.contains(e) {
                                out.push(e.clone());
                            }
                        }
                        out
                    } else if let Some(key) =
                        merge_key(k, pa).filter(|_| pa.iter().all(Value::is_object))
                    {
                        merge_list(ta, pa, key)?
                    } else {
                        strip_directives(pv).as_array().cloned().unwrap_or_default()
                    }
                }
                _ => strip_directives(pv).as_array().cloned().unwrap_or_default(),
            };
            target.insert(k.clone(), Value::Array(merged));
            continue;
        }
        target.insert(k.clone(), pv.clone());
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(mut target: Vec<Value>, patch: &[Value], key: &str) -> ApiResult<Vec<Value>> {
    for pe in patch {
        let Some(kv) = pe.get(key) else {
            return Err(ApiError::bad_request(format!(
                "map: {pe} does not contain declared merge key: {key}"
            )));
        };
        let pos = target.iter().position(|te| te.get(key) == Some(kv));
        if pe.get("$patch").and_then(Value::as_str) == Some("delete") {
            target.retain(|te| te.get(key) != Some(kv));
            continue;
        }
        match pos {
            Some(i) => {
                if let (Some(tm), Some(pm)) = (target[i].as_object_mut(), pe.as_object()) {
                    smp_map(tm, pm)?;
                }
            }
            None => target.push(strip_directives(pe)),
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name_and_env_by_name() {
        let mut t = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ], "finalizers": ["x"]}});
        let p = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}
        ], "finalizers": ["y"]}});
        strategic_merge(&mut t, &p).unwrap();
        let cs = t["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a:1");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "c");
        assert_eq!(t["spec"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn json_patch_test_op_fails_with_422() {
        let mut t = json!({"a": 1});
        let err =
            json_patch(&mut t, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(err.code, 422);
        json_patch(&mut t, &json!([{"op": "test", "path": "/a", "value": 1}, {"op": "replace", "path": "/a", "value": 3}])).unwrap();
        assert_eq!(t["a"], 3);
    }
}
