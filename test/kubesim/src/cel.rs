//! CEL `x-kubernetes-validations` rules (with `oldSelf` transition rules) via kube-cel, reported as 422 causes.

use crate::status::Cause;
use kube_cel::{CompiledSchema, RootContext, Validator};
use serde_json::Value;

thread_local! {
    // A Validator holds the CEL function registry; building one per call would cost more than
    // evaluating most rules, and it is not Sync, so each worker thread keeps its own.
    static VALIDATOR: Validator = Validator::new();
}

/// Compiled rules of one schema tree.
pub struct CelRules {
    compiled: CompiledSchema,
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_rules),
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

/// Walks a dotted/indexed field path (`spec.items[0].name`) to the value it names.
fn value_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx.trim_matches('"'))?,
            };
        }
    }
    Some(cur)
}

impl CelRules {
    /// `None` when the schema declares no rules, so objects skip CEL entirely.
    pub fn compile(schema: &Value) -> Option<Self> {
        has_rules(schema).then(|| CelRules {
            compiled: kube_cel::compile_schema(schema),
        })
    }

    /// Compilation problems, reported when the CRD itself is written.
    pub fn compile_errors(&self) -> Vec<String> {
        fn walk(s: &CompiledSchema, path: &str, out: &mut Vec<String>) {
            for e in s.compilation_errors() {
                out.push(format!(
                    "{}: {e}",
                    if path.is_empty() { "<root>" } else { path }
                ));
            }
            for (k, c) in &s.properties {
                walk(c, &format!("{path}.{k}"), out);
            }
            if let Some(i) = &s.items {
                walk(i, &format!("{path}[*]"), out);
            }
            if let Some(a) = &s.additional_properties {
                walk(a, &format!("{path}[*]"), out);
            }
        }
        let mut out = Vec::new();
        walk(&self.compiled, "", &mut out);
        out
    }

    pub fn validate(
        &self,
        obj: &Value,
        old: Option<&Value>,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Vec<Cause> {
        let ctx = RootContext {
            api_version: if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            },
            api_group: group.to_string(),
            kind: kind.to_string(),
        };
        let result = VALIDATOR
            .with(|v| v.validate_compiled_with_context(&self.compiled, obj, old, Some(&ctx)));
        match result {
            Ok(()) => vec![],
            Err(errors) => errors
                .iter()
                .map(|e| {
                    let ty = value_at(obj, &e.field_path)
                        .map(|v| match v {
                            Value::Object(_) => "object".to_string(),
                            Value::Array(_) => "array".to_string(),
                            other => other.to_string().trim_matches('"').to_string(),
                        })
                        .unwrap_or_else(|| "object".into());
                    Cause::new(
                        e.reason.as_deref().unwrap_or("FieldValueInvalid"),
                        e.field_path.clone(),
                        format!("Invalid value: \"{ty}\": {}", e.message),
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transition_rules_see_old_self() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"size": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.size >= oldSelf.size", "message": "size may not shrink"},
            {"rule": "self.size < 100", "messageExpression": "'size ' + string(self.size) + ' too big'"}
        ]}}});
        let rules = CelRules::compile(&schema).unwrap();
        assert!(rules.compile_errors().is_empty());
        let new = json!({"spec": {"size": 1}});
        let old = json!({"spec": {"size": 2}});
        assert!(rules.validate(&new, None, "g", "v1", "K").is_empty());
        let c = rules.validate(&new, Some(&old), "g", "v1", "K");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "spec");
        assert!(
            c[0].message.ends_with("size may not shrink"),
            "{}",
            c[0].message
        );
        let c = rules.validate(&json!({"spec": {"size": 200}}), None, "g", "v1", "K");
        assert!(
            c[0].message.ends_with("size 200 too big"),
            "{}",
            c[0].message
        );
    }
}
