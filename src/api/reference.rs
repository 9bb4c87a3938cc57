//! Renders the API reference (`docs/api.md`) as Markdown from the CRDs' own schemas:
//! every field with its type, constraints, default and description, the CEL rules and the
//! `kubectl get` columns — so the reference cannot say something the schema does not.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::fmt::Write as _;

/// The whole reference: a header, a table of contents and one section per kind.
pub fn markdown(crds: &[(&str, CustomResourceDefinition)]) -> String {
    let mut out = String::new();
    out.push_str(
        "# API reference\n\n\
         <!-- Generated from the CRDs by fluxgate::api::reference; do not edit. Regenerate with\n     \
         `FLUXGATE_BLESS=1 cargo test --test api_reference_current`. -->\n\n\
         Every Fluxgate kind is namespaced, in API group `fluxgate.dev`, version `v1alpha1`, with\n\
         a `status` subresource. Validation below (types, limits, patterns, CEL rules) is enforced\n\
         by the API server at `kubectl apply`. `kubectl explain <kind>.spec` shows the same\n\
         descriptions.\n\n",
    );
    for (_, crd) in crds {
        let kind = &crd.spec.names.kind;
        let _ = writeln!(out, "- [{kind}](#{})", kind.to_lowercase());
    }
    out.push('\n');
    for (_, crd) in crds {
        kind_section(&mut out, crd);
    }
    out
}

fn kind_section(out: &mut String, crd: &CustomResourceDefinition) {
    let names = &crd.spec.names;
    let version = &crd.spec.versions[0];
    let _ = writeln!(out, "## {}\n", names.kind);
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    if let Some(description) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", paragraph(description));
    }
    let _ = writeln!(
        out,
        "`apiVersion: {}/{}`, `kind: {}`; {} (plural `{}`{}).\n",
        crd.spec.group,
        version.name,
        names.kind,
        crd.spec.scope.to_lowercase(),
        names.plural,
        names
            .short_names
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| format!(", short names `{}`", s.join("`, `")))
            .unwrap_or_default()
    );
    if let Some(columns) = version
        .additional_printer_columns
        .as_ref()
        .filter(|c| !c.is_empty())
    {
        out.push_str("`kubectl get` columns (`-o wide` adds those marked wide):\n\n");
        out.push_str("| Column | Value | |\n|---|---|---|\n");
        for column in columns {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} |",
                column.name,
                cell(&column.json_path),
                if column.priority.unwrap_or(0) > 0 {
                    "wide"
                } else {
                    ""
                }
            );
        }
        out.push('\n');
    }
    for part in ["spec", "status"] {
        let Some(section) = schema["properties"].get(part) else {
            continue;
        };
        let _ = writeln!(out, "### {} `.{part}`\n", names.kind);
        if let Some(description) = section["description"].as_str() {
            let _ = writeln!(out, "{}\n", paragraph(description));
        }
        rules(out, &format!(".{part}"), section);
        let mut rows = Vec::new();
        fields(&format!(".{part}"), section, &mut rows);
        if !rows.is_empty() {
            out.push_str("| Field | Type | Description |\n|---|---|---|\n");
            for row in rows {
                out.push_str(&row);
            }
            out.push('\n');
        }
    }
}

/// Table rows for every property below `schema` (depth-first, in schema order).
fn fields(path: &str, schema: &Value, rows: &mut Vec<String>) {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (name, property) in properties {
        let here = format!("{path}.{name}");
        let mut description = property["description"]
            .as_str()
            .map(paragraph)
            .unwrap_or_default();
        let constraints = constraints(property);
        if !constraints.is_empty() {
            description.push_str(&format!(" <br>{}", capitalized(&constraints.join("; "))));
        }
        for (rule, message) in validations(property) {
            description.push_str(&format!(" <br>Rule `{rule}`: {message}"));
        }
        rows.push(format!(
            "| `{}`{} | {} | {} |\n",
            cell(&here),
            if required.contains(&name.as_str()) {
                " **required**"
            } else {
                ""
            },
            type_of(property),
            cell(&description)
        ));
        let (inner_path, inner) = match property["type"].as_str() {
            Some("array") => (format!("{here}[]"), &property["items"]),
            _ if property["additionalProperties"].is_object() => {
                (format!("{here}.<key>"), &property["additionalProperties"])
            }
            _ => (here, property),
        };
        fields(&inner_path, inner, rows);
    }
}

/// The CEL rules of an object, listed before its fields (for `spec`/`status` themselves).
fn rules(out: &mut String, path: &str, schema: &Value) {
    let found = validations(schema);
    if found.is_empty() {
        return;
    }
    let _ = writeln!(out, "Rules on `{path}`:\n");
    for (rule, message) in found {
        let _ = writeln!(out, "- `{}` — {}", rule.replace('`', "'"), message);
    }
    out.push('\n');
}

fn validations(schema: &Value) -> Vec<(String, String)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["rule"].as_str().unwrap_or_default().to_owned(),
                v["message"]
                    .as_str()
                    .map(paragraph)
                    .unwrap_or_else(|| "(no message)".to_owned()),
            )
        })
        .collect()
}

fn type_of(schema: &Value) -> String {
    if schema["x-kubernetes-int-or-string"] == true {
        return "int or string".to_owned();
    }
    let base = match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&schema["items"])),
        Some("object") if schema["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&schema["additionalProperties"]))
        }
        Some(t) => t.to_owned(),
        None => "any".to_owned(),
    };
    match schema["format"].as_str() {
        Some(format) if !base.starts_with('[') && !base.starts_with("map") => {
            format!("{base} ({format})")
        }
        _ => base,
    }
}

fn constraints(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
        out.push(format!("one of {}", values.join(", ")));
    }
    if let Some(default) = schema.get("default") {
        out.push(format!("default `{}`", plain(default)));
    }
    for (key, label) in [
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minProperties", "min entries"),
        ("maxProperties", "max entries"),
    ] {
        if let Some(value) = schema.get(key) {
            out.push(format!("{label} {value}"));
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        out.push(format!("pattern `{pattern}`"));
    }
    if let Some(keys) = schema["x-kubernetes-list-map-keys"].as_array() {
        let keys: Vec<String> = keys.iter().map(plain).collect();
        out.push(format!("a map list keyed by `{}`", keys.join("`, `")));
    }
    out
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON value as it would be written in YAML: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A description on one line: wrapped lines joined, paragraphs kept apart by `<br>`.
fn paragraph(text: &str) -> String {
    text.trim()
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" <br>")
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_every_kind_is_in_the_reference() {
        let crds = crate::api::crds();
        let text = markdown(&crds);
        for needle in [
            "## ManagedApp",
            "## UpgradeRequest",
            "## RollbackRequest",
            "`.spec.source.kind` **required**",
            "`.spec.versions[].path`",
            "| `.spec.target` | map[string]string |",
            "`.status.failedVersions`",
            "- `self == oldSelf` — spec is immutable",
            "short names `ur`",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        // Types and constraints come from the schema.
        assert!(text.contains("| `.spec.dryRun` | boolean |"), "{text}");
        assert!(text.contains("Default `false`"), "{text}");
        // A CEL rule with `|` is escaped once for the table, not twice.
        assert!(text.contains("https?://\\|ssh://"), "{text}");
        assert!(!text.contains("\\\\|"), "{text}");
    }

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(paragraph("one\ntwo\n\nthree"), "one two <br>three");
    }
}
