//! Structural-schema handling for custom resources: pruning unknown fields, defaulting and OpenAPI value validation.

use crate::cel::CelRules;
use crate::status::Cause;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The `openAPIV3Schema` of one served CRD version, with its CEL rules compiled once.
pub struct VersionSchema {
    pub raw: Value,
    pub cel: Option<CelRules>,
}

impl std::fmt::Debug for VersionSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionSchema")
            .field("cel", &self.cel.is_some())
            .finish()
    }
}

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

impl VersionSchema {
    pub fn new(raw: Value) -> Self {
        let cel = CelRules::compile(&raw);
        VersionSchema { raw, cel }
    }

    /// Drops fields the schema does not know, like the real server; returns their paths.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        if let Some(map) = obj.as_object_mut() {
            if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                let unknown: Vec<String> = meta
                    .keys()
                    .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                for k in unknown {
                    meta.remove(&k);
                    pruned.push(format!("metadata.{k}"));
                }
            }
            prune_object(&self.raw, map, "", &mut pruned, true);
        }
        pruned
    }

    /// Fills in schema `default`s for absent fields.
    pub fn default(&self, obj: &mut Value) {
        *obj = kube_cel::apply_defaults(&self.raw, obj);
    }

    /// Value validation (types, formats of numbers and strings, required, enums, list types).
    pub fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let (Some(props), Some(map)) = (
            self.raw.get("properties").and_then(Value::as_object),
            obj.as_object(),
        ) {
            for (k, s) in props {
                if k == "metadata" || k == "apiVersion" || k == "kind" {
                    continue;
                }
                if let Some(v) = map.get(k) {
                    validate_value(s, v, k, &mut causes);
                }
            }
            if let Some(req) = self.raw.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        causes.push(Cause::new("FieldValueRequired", r, "Required value"));
                    }
                }
            }
        }
        causes
    }
}

/// Schema errors after which the real server does not run the CEL rules (its
/// `hasBlockingErr`): the object may not even have the shape the rules expect.
pub fn blocks_cel(c: &Cause) -> bool {
    matches!(
        c.reason.as_str(),
        "FieldValueNotSupported"
            | "FieldValueRequired"
            | "FieldValueTooLong"
            | "FieldValueTooMany"
            | "FieldValueTypeInvalid"
    )
}

/// The cause the real server adds when [`blocks_cel`] errors kept the CEL rules from running.
pub fn cel_not_checked() -> Cause {
    Cause::new(
        "FieldValueInvalid",
        "<nil>",
        "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
    )
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, name: &str) -> bool {
    s.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn prune_value(s: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(map) => prune_object(s, map, path, pruned, false),
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(is, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    s: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    pruned: &mut Vec<String>,
    root: bool,
) {
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(s, "x-kubernetes-embedded-resource");
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        let keep_meta = (root || embedded) && (k == "apiVersion" || k == "kind" || k == "metadata");
        let child_schema = props
            .and_then(|p| p.get(&k))
            .or(additional.filter(|a| a.is_object()));
        match child_schema {
            Some(cs) => {
                let child_path = join(path, &k);
                if map.get(&k).is_some_and(Value::is_null) && !flag(cs, "nullable") {
                    // The real server drops nulls of non-nullable fields before defaulting.
                    map.remove(&k);
                    continue;
                }
                if root && k == "metadata" {
                    continue;
                }
                if let Some(child) = map.get_mut(&k) {
                    prune_value(cs, child, &child_path, pruned);
                }
            }
            None if keep_meta => {}
            None if preserve || additional.is_some_and(|a| a.as_bool() == Some(true)) => {}
            None => {
                map.remove(&k);
                pruned.push(join(path, &k));
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn validate_value(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if !flag(s, "nullable") && s.get("type").is_some() {
            out.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    s["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if flag(s, "x-kubernetes-int-or-string") {
        if !(is_integer(v) || v.is_string()) {
            out.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body must be of type integer-or-string: \"{}\"",
                    short(v),
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(ty) = s.get("type").and_then(Value::as_str)
        && !type_ok(ty, v)
    {
        out.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body must be of type {ty}: \"{}\"",
                short(v),
                type_name(v)
            ),
        ));
        return;
    }

    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        out.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                v,
                list.join(", ")
            ),
        ));
    }

    match v {
        Value::String(text) => validate_string(s, text, path, out),
        Value::Number(n) => validate_number(s, n.as_f64().unwrap_or(0.0), v, path, out),
        Value::Array(items) => validate_array(s, items, path, out),
        Value::Object(map) => validate_object(s, map, path, out),
        _ => {}
    }

    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = s.get(junctor).and_then(Value::as_array) {
            let results: Vec<Vec<Cause>> = branches
                .iter()
                .map(|b| {
                    let mut c = Vec::new();
                    validate_value(b, v, path, &mut c);
                    c
                })
                .collect();
            let passing = results.iter().filter(|r| r.is_empty()).count();
            match junctor {
                "allOf" => results.into_iter().for_each(|r| out.extend(r)),
                "anyOf" if passing == 0 => {
                    out.extend(results.into_iter().flatten());
                }
                "oneOf" if passing != 1 => {
                    if passing == 0 {
                        out.extend(results.into_iter().flatten());
                    } else {
                        out.push(Cause::new(
                            "FieldValueInvalid",
                            path,
                            format!(
                                "Invalid value: {}: {path} in body must validate one and only one schema (oneOf). Found {passing} valid alternatives",
                                short(v)
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(not) = s.get("not") {
        let mut c = Vec::new();
        validate_value(not, v, path, &mut c);
        if c.is_empty() {
            out.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body must not validate the schema (not)",
                    short(v)
                ),
            ));
        }
    }
}

/// maxLength, minLength, pattern: like the real validator, only the first that fails is
/// reported (a too-short value that also misses the pattern yields one error).
fn validate_string(s: &Value, text: &str, path: &str, out: &mut Vec<Cause>) {
    let len = text.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        out.push(Cause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
        return;
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        out.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {text:?}: {path} in body should be at least {min} chars long"),
        ));
        return;
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        match cached_regex(p) {
            Ok(re) if !re.is_match(text) => out.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {text:?}: {path} in body should match '{p}'"),
            )),
            Ok(_) => {}
            Err(e) => out.push(Cause::new(
                "InternalError",
                path,
                format!("the schema pattern {p:?} does not compile: {e}"),
            )),
        }
    }
}

/// Patterns compile once per process: schemas are few, objects many.
fn cached_regex(p: &str) -> Result<regex::Regex, regex::Error> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, regex::Regex>>,
    > = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().ok().and_then(|c| c.get(p).cloned()) {
        return Ok(re);
    }
    let re = regex::Regex::new(p)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(p.to_string(), re.clone());
    }
    Ok(re)
}

fn validate_number(s: &Value, n: f64, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let excl = flag(s, "exclusiveMinimum");
        if (excl && n <= min) || (!excl && n < min) {
            let rel = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {v}: {path} in body should be {rel} {}",
                    s["minimum"]
                ),
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let excl = flag(s, "exclusiveMaximum");
        if (excl && n >= max) || (!excl && n > max) {
            let rel = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {v}: {path} in body should be {rel} {}",
                    s["maximum"]
                ),
            ));
        }
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
        && m != 0.0
        && (n / m).fract() != 0.0
    {
        out.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {v}: {path} in body should be a multiple of {}",
                s["multipleOf"]
            ),
        ));
    }
}

fn validate_array(s: &Value, items: &[Value], path: &str, out: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        out.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        out.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body should have at least {min} items"),
        ));
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    out.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {item}"),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                let key = Value::Object(key);
                if !seen.insert(key.to_string()) {
                    out.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {key}"),
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(is) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate_value(is, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn validate_object(s: &Value, map: &Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
    let n = map.len() as u64;
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        out.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        out.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body should have at least {min} properties"),
        ));
    }
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                out.push(Cause::new(
                    "FieldValueRequired",
                    join(path, r),
                    "Required value",
                ));
            }
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    let embedded = flag(s, "x-kubernetes-embedded-resource");
    for (k, v) in map {
        if embedded
            && (k == "apiVersion" || k == "kind" || k == "metadata")
            && props.is_none_or(|p| !p.contains_key(k))
        {
            continue;
        }
        if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
            validate_value(cs, v, &join(path, k), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> VersionSchema {
        VersionSchema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {
                        "url": {"type": "string", "pattern": "^https?://"},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
                        "port": {"x-kubernetes-int-or-string": true},
                        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "opt": {"type": "string", "nullable": true}
                    }
                }
            }
        }))
    }

    #[test]
    fn prunes_unknown_and_nulls_but_keeps_preserved() {
        let s = schema();
        let mut o = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "bogus": 1},
            "spec": {"url": "http://x", "extra": 1, "free": {"any": {"thing": 1}}, "mode": null, "opt": null},
            "other": 2});
        let pruned = s.prune(&mut o);
        assert_eq!(pruned, vec!["metadata.bogus", "other", "spec.extra"]);
        assert_eq!(o["spec"]["free"]["any"]["thing"], 1);
        assert!(o["spec"].get("mode").is_none());
        assert!(o["spec"]["opt"].is_null() && o["spec"].get("opt").is_some());
        s.default(&mut o);
        assert_eq!(o["spec"]["mode"], "a");
    }

    #[test]
    fn validation_reports_field_paths_and_reasons() {
        let s = schema();
        let o = json!({"spec": {"url": "ftp://x", "mode": "c", "replicas": 9, "port": true,
            "tags": ["a", "a"], "labels": {"k": 1}}});
        let causes = s.validate(&o);
        let got: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason.as_str()))
            .collect();
        assert!(got.contains(&("spec.url", "FieldValueInvalid")), "{got:?}");
        assert!(
            got.contains(&("spec.mode", "FieldValueNotSupported")),
            "{got:?}"
        );
        assert!(
            got.contains(&("spec.replicas", "FieldValueInvalid")),
            "{got:?}"
        );
        assert!(
            got.contains(&("spec.port", "FieldValueTypeInvalid")),
            "{got:?}"
        );
        assert!(
            got.contains(&("spec.tags[1]", "FieldValueDuplicate")),
            "{got:?}"
        );
        assert!(
            got.contains(&("spec.labels.k", "FieldValueTypeInvalid")),
            "{got:?}"
        );
        let missing = s.validate(&json!({"spec": {}}));
        assert_eq!(missing[0].field, "spec.url");
        assert_eq!(missing[0].reason, "FieldValueRequired");
    }
}
