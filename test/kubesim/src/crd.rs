//! CustomResourceDefinitions: checking them, turning them into served resource types, and their status conditions.

use crate::resources::{PrinterColumn, ResourceType, ScalePaths, Special};
use crate::schema::VersionSchema;
use crate::status::Cause;
use crate::store::now;
use serde_json::{Value, json};
use std::sync::Arc;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The checks the real server makes that matter for serving the CRD.
/// The annotation a CRD in a protected group must carry.
const API_APPROVED: &str = "api-approved.kubernetes.io";

/// A CRD in a group the Kubernetes community protects (`k8s.io`, `kubernetes.io` and their
/// subdomains) must say where its API was approved, as apiextensions-apiserver's
/// `validateAPIApproval` (v0.36) demands: a URL, or a reason starting with `unapproved`.
fn api_approval(crd: &Value, group: &str) -> Option<Cause> {
    let protected = group == "k8s.io"
        || group.ends_with(".k8s.io")
        || group == "kubernetes.io"
        || group.ends_with(".kubernetes.io");
    if !protected {
        return None;
    }
    let field = format!("metadata.annotations[{API_APPROVED}]");
    let value = crd
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(API_APPROVED))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let is_url = value.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty() && !rest.split('/').next().unwrap_or_default().is_empty()
    });
    if value.is_empty() {
        Some(Cause::new(
            "FieldValueRequired",
            &field,
            format!(
                "Required value: protected groups must have approval annotation \"{API_APPROVED}\", see https://github.com/kubernetes/enhancements/pull/1111"
            ),
        ))
    } else if value.starts_with("unapproved") || is_url {
        None
    } else {
        Some(Cause::new(
            "FieldValueInvalid",
            &field,
            format!(
                "Invalid value: {value:?}: protected groups must have approval annotation \"{API_APPROVED}\" with either a URL or a reason starting with \"unapproved\", see https://github.com/kubernetes/enhancements/pull/1111"
            ),
        ))
    }
}

pub fn validate(crd: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    let kind = s(crd, "/spec/names/kind");
    let name = s(crd, "/metadata/name");
    if group.is_empty() {
        c.push(Cause::new(
            "FieldValueRequired",
            "spec.group",
            "Required value",
        ));
    }
    if plural.is_empty() {
        c.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if kind.is_empty() {
        c.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        c.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if let Some(cause) = api_approval(crd, group) {
        c.push(cause);
    }
    match s(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        other => c.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    match versions {
        None => c.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value",
        )),
        Some(vs) => {
            let storage = vs
                .iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .count();
            if storage != 1 {
                c.push(Cause::new(
                    "FieldValueInvalid",
                    "spec.versions",
                    format!("Invalid value: {storage}: must have exactly one version marked as storage version"),
                ));
            }
            for (i, v) in vs.iter().enumerate() {
                if v["name"].as_str().unwrap_or("").is_empty() {
                    c.push(Cause::new(
                        "FieldValueRequired",
                        format!("spec.versions[{i}].name"),
                        "Required value",
                    ));
                }
                let schema = &v["schema"]["openAPIV3Schema"];
                let base = format!("spec.versions[{i}].schema.openAPIV3Schema");
                check_rules(schema, &base, true, &mut c);
                if schema.is_object()
                    && let Some(rules) = crate::cel::CelRules::compile(schema)
                {
                    for e in rules.compile_errors() {
                        c.push(Cause::new(
                            "FieldValueInvalid",
                            format!("spec.versions[{i}].schema.openAPIV3Schema"),
                            format!("Invalid value: \"object\": compilation failed: {e}"),
                        ));
                    }
                }
            }
        }
    }
    c
}

/// The property name a CEL identifier stands for (`__namespace__` → `namespace`, `a__dash__b` → `a-b`).
fn unescape(ident: &str) -> String {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    if let Some(inner) = ident.strip_prefix("__").and_then(|i| i.strip_suffix("__"))
        && RESERVED.contains(&inner)
    {
        return inner.to_string();
    }
    ident
        .replace("__underscores__", "\u{0}")
        .replace("__dot__", ".")
        .replace("__dash__", "-")
        .replace("__slash__", "/")
        .replace('\u{0}', "_")
}

/// Whether a schema node declares `field` (or accepts any field).
fn declares(node: &Value, field: &str) -> Option<Value> {
    if node["x-kubernetes-preserve-unknown-fields"] == json!(true)
        || node.get("additionalProperties").is_some()
    {
        return None;
    }
    let props = node.get("properties").and_then(Value::as_object)?;
    Some(props.get(field).cloned().unwrap_or(Value::Null))
}

/// The checks the real server's CEL type-checker makes that matter most in practice: only
/// `self`, `oldSelf` and the root variables exist, and `self.a.b` must name declared fields.
fn check_rules(node: &Value, path: &str, root: bool, out: &mut Vec<Cause>) {
    static FIELD_REF: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = FIELD_REF.get_or_init(|| {
        regex::Regex::new(r"\b(?:self|oldSelf)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)(\s*\()?")
            .expect("static regex")
    });
    if let Some(rules) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for (j, r) in rules.iter().enumerate() {
            let Some(rule) = r["rule"].as_str() else {
                continue;
            };
            let field = format!("{path}.x-kubernetes-validations[{j}].rule");
            let bound = macro_bound_variables(rule);
            for w in kube_cel::check_rule_scope(rule, kube_cel::ScopeContext::CrdValidation)
                .into_iter()
                .filter(|w| {
                    !bound
                        .iter()
                        .any(|v| w.message.starts_with(&format!("variable '{v}' ")))
                })
            {
                out.push(Cause::new(
                    "FieldValueInvalid",
                    field.clone(),
                    format!("Invalid value: {rule:?}: compilation failed: {}", w.message),
                ));
            }
            for cap in re.captures_iter(rule) {
                let chain: Vec<&str> = cap[1].split('.').filter(|s| !s.is_empty()).collect();
                // A trailing `(` makes the last name a method (`self.size()`), not a field.
                let fields = if cap.get(2).is_some() {
                    &chain[..chain.len() - 1]
                } else {
                    &chain[..]
                };
                let mut cur = node.clone();
                // The root always has apiVersion, kind and metadata, declared or not.
                if root
                    && fields
                        .first()
                        .is_some_and(|f| ["apiVersion", "kind", "metadata"].contains(f))
                {
                    continue;
                }
                for f in fields {
                    let f = unescape(f);
                    match declares(&cur, &f) {
                        None => break,
                        Some(Value::Null) => {
                            out.push(Cause::new(
                                "FieldValueInvalid",
                                field.clone(),
                                format!("Invalid value: {rule:?}: compilation failed: undefined field '{f}'"),
                            ));
                            break;
                        }
                        Some(child) => cur = child,
                    }
                }
            }
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            check_rules(child, &format!("{path}.properties[{k}]"), false, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            check_rules(child, &format!("{path}.{key}"), false, out);
        }
    }
}

/// `status` as the apiextensions controllers would set it once names are accepted.
pub fn status(crd: &Value) -> Value {
    let t = now();
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let mut stored = stored;
    if let Some(prev) = crd["status"]["storedVersions"].as_array() {
        for p in prev {
            if !stored.contains(p) {
                stored.insert(0, p.clone());
            }
        }
    }
    let keep_time = |ty: &str| -> String {
        crd["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == "True"))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(String::from)
            .unwrap_or_else(|| t.clone())
    };
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")},
        ],
        "storedVersions": stored,
    })
}

/// The resource types a CRD serves: one per served version.
pub fn types(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = &crd["spec"];
    let group = s(crd, "/spec/group").to_string();
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural missing")?
        .to_string();
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind missing")?
        .to_string();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array().ok_or("spec.versions missing")?;
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .ok_or("no storage version")?
        .to_string();
    let mut out = Vec::new();
    for v in versions {
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let version = v["name"].as_str().unwrap_or("").to_string();
        let schema = v["schema"]["openAPIV3Schema"].clone();
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or("").to_string(),
                        type_: c["type"].as_str().unwrap_or("string").to_string(),
                        format: c["format"].as_str().unwrap_or("").to_string(),
                        description: c["description"].as_str().unwrap_or("").to_string(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: c["jsonPath"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sub = &v["subresources"];
        let scale = sub["scale"].as_object().map(|sc| ScalePaths {
            spec_replicas: sc
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .to_string(),
            status_replicas: sc
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .to_string(),
            label_selector: sc
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(String::from),
        });
        out.push(ResourceType {
            group: group.clone(),
            version,
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            list_kind: names["listKind"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("{kind}List")),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status: sub["status"].is_object(),
            scale,
            columns,
            schema: schema
                .is_object()
                .then(|| Arc::new(VersionSchema::new(schema))),
            generation: true,
            storage_version: storage_version.clone(),
            selectable_fields: v["selectableFields"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["jsonPath"].as_str())
                        .map(|p| p.trim_start_matches('.').to_string())
                        .collect()
                })
                .unwrap_or_default(),
            special: Special::None,
            custom: true,
        });
    }
    Ok(out)
}

/// Names bound by CEL comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`,
/// with one or two variables): kube-cel's scope check reports them as unknown variables,
/// which the real API server does not.
fn macro_bound_variables(rule: &str) -> Vec<String> {
    let binder = regex::Regex::new(
        r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,(?:\s*([A-Za-z_][A-Za-z0-9_]*)\s*,)?",
    )
    .expect("a valid regex");
    binder
        .captures_iter(rule)
        .flat_map(|c| {
            [c.get(1), c.get(2)]
                .into_iter()
                .flatten()
                .map(|m| m.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod macro_variable_tests {
    use super::macro_bound_variables;

    #[test]
    fn comprehension_variables_are_bound() {
        assert_eq!(
            macro_bound_variables("self.all(v, self.exists_one(w, w.name == v.name))"),
            vec!["v", "w"]
        );
        assert_eq!(
            macro_bound_variables("self.all(k, v, v > 0)"),
            vec!["k", "v"]
        );
        assert!(macro_bound_variables("self.x > 0").is_empty());
    }
}
