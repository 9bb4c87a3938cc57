//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group-version, enough for `kubectl apply` validation.

use crate::resources::ResourceType;
use crate::store::Inner;
use serde_json::{Map, Value, json};
use std::hash::{Hash, Hasher};

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
            let mut s = schema.raw.clone();
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            schemas.insert(name.clone(), s);
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
