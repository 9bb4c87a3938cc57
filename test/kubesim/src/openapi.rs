//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group-version, enough for `kubectl apply` validation.

use crate::resources::ResourceType;
use crate::store::Inner;
use k8s_openapi::schemars;
use serde_json::{Map, Value, json};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// What the real server adds to every CRD schema it publishes: ObjectMeta and the types it
/// refers to (components), and the `apiVersion`, `kind` and `metadata` properties with the
/// API's own descriptions. Taken from k8s-openapi's schemas, which carry the API's texts.
struct MetaSchemas {
    components: Map<String, Value>,
    api_version: Value,
    kind: Value,
    metadata: Value,
}

fn meta_schemas() -> &'static MetaSchemas {
    static META: OnceLock<MetaSchemas> = OnceLock::new();
    META.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
        let components = generator.take_definitions(true);
        // Any top-level kind has the TypeMeta and metadata texts; a ConfigMap will do.
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        generator.subschema_for::<k8s_openapi::api::core::v1::ConfigMap>();
        let kinds = generator.take_definitions(true);
        let props = &kinds["io.k8s.api.core.v1.ConfigMap"]["properties"];
        MetaSchemas {
            components,
            api_version: props["apiVersion"].clone(),
            kind: props["kind"].clone(),
            metadata: json!({
                "description": props["metadata"]["description"],
                "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
            }),
        }
    })
}

/// A CRD version's schema as the real server publishes it: its own `apiVersion`, `kind` and
/// `metadata` replaced by the API's, and the same for every embedded resource inside.
fn published_schema(raw: &Value) -> Value {
    let meta = meta_schemas();
    let mut s = raw.clone();
    add_embedded_properties(&mut s);
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), meta.api_version.clone());
        props.insert("kind".into(), meta.kind.clone());
        props.insert("metadata".into(), meta.metadata.clone());
    }
    s
}

/// `x-kubernetes-embedded-resource` objects get apiVersion, kind (both required) and metadata.
fn add_embedded_properties(s: &mut Value) {
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(add_embedded_properties);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = s.get_mut(key).filter(|v| v.is_object()) {
            add_embedded_properties(sub);
        }
    }
    if s["x-kubernetes-embedded-resource"] != json!(true) {
        return;
    }
    let meta = meta_schemas();
    let props = s["properties"].as_object().cloned().unwrap_or_default();
    let mut props = props;
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "apiVersion defines the versioned schema of this representation of an object. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
    );
    props.insert(
        "kind".into(),
        json!({"type": "string", "description": "kind is a string value representing the type of this object. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
    );
    props.insert("metadata".into(), meta.metadata.clone());
    s["properties"] = Value::Object(props);
    let mut required: Vec<Value> = s["required"].as_array().cloned().unwrap_or_default();
    for r in ["kind", "apiVersion"] {
        if !required.contains(&json!(r)) {
            required.push(json!(r));
        }
    }
    s["required"] = Value::Array(required);
}

fn gv_path(g: &str, v: &str) -> String {
    if g.is_empty() {
        format!("api/{v}")
    } else {
        format!("apis/{g}/{v}")
    }
}

/// `io.fluxcd.toolkit.source.v1.GitRepository`, the way the real server names CRD schemas.
fn schema_name(rt: &ResourceType) -> String {
    let mut parts: Vec<&str> = rt.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), rt.version, rt.kind)
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// One group-version document; `None` when the group-version is not served.
pub fn document(inner: &Inner, g: &str, v: &str) -> Option<Value> {
    let types = inner.types.get(&(g.to_string(), v.to_string()))?;
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in types.values() {
        let gvk = json!({"group": g, "version": v, "kind": rt.kind});
        let ok = |s: &Option<String>| match s {
            Some(name) => {
                json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}})
            }
            None => json!({"200": {"description": "OK"}}),
        };
        let sname = rt.schema.as_ref().map(|_| schema_name(rt));
        let op = |action: &str, extra: &[&str]| {
            let mut params = vec![param("dryRun"), param("fieldManager")];
            params.extend(extra.iter().map(|p| param(p)));
            json!({
                "operationId": format!("{action}{}", rt.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": ok(&sname),
            })
        };
        let base = format!("/{}", gv_path(g, v));
        let (collection, item) = if rt.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", rt.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural),
            )
        } else {
            (
                format!("{base}/{}", rt.plural),
                format!("{base}/{}/{{name}}", rt.plural),
            )
        };
        paths.insert(
            collection,
            json!({"get": op("list", &[]), "post": op("post", &["fieldValidation"]), "delete": op("deletecollection", &[])}),
        );
        paths.insert(
            item.clone(),
            json!({"get": op("get", &[]), "put": op("put", &["fieldValidation"]),
                   "patch": op("patch", &["fieldValidation", "force"]), "delete": op("delete", &[])}),
        );
        if rt.status {
            paths.insert(
                format!("{item}/status"),
                json!({"get": op("get", &[]), "put": op("put", &["fieldValidation"]), "patch": op("patch", &["fieldValidation", "force"])}),
            );
        }
        if let (Some(name), Some(schema)) = (&sname, &rt.schema) {
            let mut s = published_schema(&schema.raw);
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            schemas.insert(name.clone(), s);
            for (k, v) in &meta_schemas().components {
                schemas.insert(k.clone(), v.clone());
            }
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The index: every group-version with a URL whose hash changes when its document does.
pub fn index(inner: &Inner) -> Value {
    let mut paths = Map::new();
    for (g, v) in inner.types.keys() {
        let Some(doc) = document(inner, g, v) else {
            continue;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc.to_string().hash(&mut h);
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", h.finish())}),
        );
    }
    json!({"paths": paths})
}
