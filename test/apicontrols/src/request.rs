//! A request as the API server sees it: the route of its path, its verb, the patch type, the
//! written body the request log keeps, and the `Status` an injected error answers with.

use crate::controls::RequestInfo;
use http::{HeaderMap, Method, header};
use serde_json::{Value, json};
use std::collections::HashMap;

/// What a path of the Kubernetes API names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    Api,
    Apis,
    ApiGroup(String),
    ResourceList(String, String),
    OpenApiIndex,
    OpenApiDoc(String, String),
    OpenApiV2,
    Resource {
        group: String,
        version: String,
        plural: String,
        namespace: Option<String>,
        name: Option<String>,
        sub: Option<String>,
    },
    Unknown,
}

pub fn parse_route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resource = |group: &str, version: &str, rest: &[&str]| -> Route {
        let (namespace, rest) = if rest.len() >= 3
            && rest[0] == "namespaces"
            && !(rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize"))
        {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
        if rest.is_empty() || rest.len() > 3 {
            return Route::Unknown;
        }
        Route::Resource {
            group: group.to_string(),
            version: version.to_string(),
            plural: rest[0].to_string(),
            namespace,
            name: rest.get(1).map(|s| s.to_string()),
            sub: rest.get(2).map(|s| s.to_string()),
        }
    };
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["api"] => Route::Api,
        ["api", v] => Route::ResourceList(String::new(), v.to_string()),
        ["api", v, rest @ ..] => resource("", v, rest),
        ["apis"] => Route::Apis,
        ["apis", g] => Route::ApiGroup(g.to_string()),
        ["apis", g, v] => Route::ResourceList(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => resource(g, v, rest),
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", "api", v] => Route::OpenApiDoc(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiDoc(g.to_string(), v.to_string()),
        ["openapi", "v2"] => Route::OpenApiV2,
        _ => Route::Unknown,
    }
}

/// The query string's parameters, decoded.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The kinds of PATCH the API server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchType::Merge => "merge",
            PatchType::Json => "json",
            PatchType::Strategic => "strategic",
            PatchType::Apply => "apply",
        }
    }
}

/// A header's value as text (empty when absent or not text).
pub fn header_text<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What the request log and the matchers see of a request to `path`.
pub fn request_info(
    route: &Route,
    method: &Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    path: &str,
) -> RequestInfo {
    let mut info = RequestInfo {
        verb: "discovery".into(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        namespace: None,
        name: None,
        subresource: None,
        patch_type: None,
        selected_name: None,
        path: path.to_string(),
        user_agent: header_text(headers, &header::USER_AGENT).to_owned(),
    };
    if let Route::Resource {
        group,
        version,
        plural,
        namespace,
        name,
        sub,
    } = route
    {
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        info.verb = match (method, name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "unknown",
        }
        .to_string();
        info.group = group.clone();
        info.version = version.clone();
        info.resource = plural.clone();
        info.namespace = namespace.clone();
        info.name = name.clone();
        info.subresource = sub.clone();
        if matches!(info.verb.as_str(), "list" | "watch") {
            info.selected_name = query.get("fieldSelector").and_then(|selector| {
                selector
                    .split(',')
                    .find_map(|term| {
                        let term = term.trim();
                        term.strip_prefix("metadata.name==")
                            .or_else(|| term.strip_prefix("metadata.name="))
                    })
                    .map(str::to_owned)
            });
        }
        if method == Method::PATCH {
            info.patch_type =
                PatchType::from_content_type(header_text(headers, &header::CONTENT_TYPE))
                    .map(|p| p.as_str().to_string());
        }
    }
    info
}

/// Whether the log keeps the body of a request with this method: writes.
pub fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// A JSON or YAML request body as a value (`None` when it is neither or does not parse):
/// what the log keeps of a write.
pub fn text_body(content_type: &str, body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body).ok()?;
        // JSON is valid YAML, but the JSON parser is exact about numbers, so try it first.
        return serde_json::from_str(text)
            .ok()
            .or_else(|| serde_saphyr::from_str::<Value>(text).ok());
    }
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The reason and message a real API server answers `code` with, for an error a test asked
/// for.
pub fn injected_reason(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => ("BadRequest", "injected bad request"),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "injected: forbidden"),
        404 => ("NotFound", "injected: not found"),
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected)",
        ),
        410 => ("Expired", "too old resource version (injected)"),
        422 => ("Invalid", "injected: invalid"),
        429 => (
            "TooManyRequests",
            "Too many requests, please try again later. (injected)",
        ),
        500 => ("InternalError", "Internal error occurred: injected failure"),
        503 => ("ServiceUnavailable", "injected: service unavailable"),
        504 => ("Timeout", "injected: timeout"),
        _ => ("Unknown", "injected failure"),
    }
}

/// A failure `Status` object as the API server writes it.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    v
}

/// The details an injected error carries: a 429 asks to retry after a second (the answer
/// also carries `Retry-After: 1`).
pub fn injected_details(code: u16) -> Option<Value> {
    (code == 429).then(|| json!({"retryAfterSeconds": 1}))
}

/// The `Status` of an injected error (see [`injected_reason`]).
pub fn injected_status(code: u16) -> Value {
    let (reason, message) = injected_reason(code);
    status(code, reason, message, injected_details(code))
}

/// One watch event line: an ERROR carrying a 410 Expired `Status` with `message` — how the
/// API server ends a watch whose resourceVersion is too old (HTTP 200, then this event).
pub fn watch_gone_line(message: &str) -> String {
    format!(
        "{{\"type\":\"ERROR\",\"object\":{}}}\n",
        status(410, "Expired", message, None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path_and_query: &str, headers: &[(&str, &str)]) -> RequestInfo {
        let (path, query) = path_and_query
            .split_once('?')
            .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        request_info(&parse_route(path), &method, &parse_query(query), &map, path)
    }

    #[test]
    fn requests_are_seen_as_the_api_server_sees_them() {
        let watch = info(
            Method::GET,
            "/apis/snapshot.storage.k8s.io/v1/namespaces/apps/volumesnapshots?watch=true&resourceVersion=5&fieldSelector=metadata.name%3Ddata-0",
            &[("user-agent", "fluxgate/0.1.0")],
        );
        assert_eq!(
            (
                watch.verb.as_str(),
                watch.group.as_str(),
                watch.resource.as_str()
            ),
            ("watch", "snapshot.storage.k8s.io", "volumesnapshots")
        );
        assert_eq!(watch.namespace.as_deref(), Some("apps"));
        assert_eq!(watch.selected_name.as_deref(), Some("data-0"));
        assert_eq!(watch.user_agent, "fluxgate/0.1.0");
        let status = info(
            Method::PUT,
            "/apis/fluxgate.dev/v1alpha1/namespaces/apps/upgraderequests/db/status",
            &[],
        );
        assert_eq!(
            (
                status.verb.as_str(),
                status.name.as_deref(),
                status.subresource.as_deref()
            ),
            ("update", Some("db"), Some("status"))
        );
        let patch = info(
            Method::PATCH,
            "/api/v1/namespaces/apps",
            &[("content-type", "application/merge-patch+json")],
        );
        // A namespace itself, not a namespaced collection.
        assert_eq!(
            (
                patch.resource.as_str(),
                patch.name.as_deref(),
                patch.namespace
            ),
            ("namespaces", Some("apps"), None)
        );
        assert_eq!(patch.patch_type.as_deref(), Some("merge"));
        assert_eq!(info(Method::GET, "/apis", &[]).verb, "discovery");
    }

    #[test]
    fn write_bodies_are_kept_as_json() {
        assert_eq!(
            text_body("application/json", br#"{"a":1}"#),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            text_body("application/apply-patch+yaml", b"a: 1\nb: [x]\n"),
            Some(json!({"a": 1, "b": ["x"]}))
        );
        assert_eq!(
            text_body("application/vnd.kubernetes.protobuf", b"k8s\0"),
            None
        );
        assert_eq!(text_body("application/json", b""), None);
    }
}
