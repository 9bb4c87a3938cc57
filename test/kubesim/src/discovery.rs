//! Discovery documents: `/version`, `/api`, `/apis`, per group-version resource lists and aggregated discovery v2.

use crate::resources::ResourceType;
use crate::store::Inner;
use serde_json::{Value, json};
use std::sync::Arc;

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-kubesim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
    })
}

fn group_entry(inner: &Inner, g: &str) -> Value {
    let versions = inner.group_versions(g);
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub fn api_group_list(inner: &Inner) -> Value {
    let groups: Vec<Value> = inner
        .groups()
        .iter()
        .map(|g| group_entry(inner, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(inner: &Inner, g: &str) -> Option<Value> {
    if inner.group_versions(g).is_empty() {
        return None;
    }
    let mut v = group_entry(inner, g);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

fn types_of<'a>(
    inner: &'a Inner,
    g: &str,
    v: &str,
) -> Option<impl Iterator<Item = &'a Arc<ResourceType>>> {
    inner
        .types
        .get(&(g.to_string(), v.to_string()))
        .map(|m| m.values())
}

pub fn resource_list(inner: &Inner, g: &str, v: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for rt in types_of(inner, g, v)? {
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        resources.push(r);
        if rt.status {
            resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced,
                "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
        }
        if rt.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", rt.plural), "singularName": "", "namespaced": rt.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_group(inner: &Inner, g: &str) -> Value {
    let versions: Vec<Value> = inner
        .group_versions(g)
        .iter()
        .map(|v| {
            let resources: Vec<Value> = types_of(inner, g, v)
                .into_iter()
                .flatten()
                .map(|rt| {
                    let mut subs = Vec::new();
                    if rt.status {
                        subs.push(json!({"subresource": "status", "responseKind": {"group": g, "version": v, "kind": rt.kind}, "verbs": ["get", "patch", "update"]}));
                    }
                    if rt.scale.is_some() {
                        subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
                    }
                    let mut r = json!({
                        "resource": rt.plural,
                        "responseKind": {"group": g, "version": v, "kind": rt.kind},
                        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": rt.singular,
                        "verbs": rt.verbs(),
                    });
                    if !rt.short_names.is_empty() {
                        r["shortNames"] = json!(rt.short_names);
                    }
                    if !rt.categories.is_empty() {
                        r["categories"] = json!(rt.categories);
                    }
                    if !subs.is_empty() {
                        r["subresources"] = json!(subs);
                    }
                    r
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut meta = json!({"creationTimestamp": null});
    if !g.is_empty() {
        meta["name"] = json!(g);
    }
    json!({"metadata": meta, "versions": versions})
}

/// `/api` (core only) or `/apis` (every named group) in the aggregated v2 format.
pub fn aggregated(inner: &Inner, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(inner, "")]
    } else {
        inner
            .groups()
            .iter()
            .map(|g| aggregated_group(inner, g))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
