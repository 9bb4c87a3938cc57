//! HTTP routing: turns Kubernetes REST paths and query parameters into store operations and answers.

use crate::controls::{Controls, FaultAction};
use crate::discovery;
use crate::managed;
use crate::openapi;
use crate::patch::{self, PatchType};
use crate::resources::{ResourceType, Special};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::{DeleteOpts, Inner, Obj, Propagation, WriteOpts};
use crate::table;
use crate::watch::{self, WatchRequest};
use apicontrols::request::{Route, parse_query, parse_route, request_info};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch as tokio_watch;

/// Tunables of a simulator instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Events kept per resource for watches that resume from a resourceVersion.
    pub history_limit: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// State shared by all request handlers.
pub struct Shared {
    pub store: RwLock<Inner>,
    pub controls: Arc<Controls>,
    pub config: Config,
    pub shutdown: tokio_watch::Receiver<bool>,
    pub addr: RwLock<String>,
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    // The real server's request size limit; large CRDs need more than axum's 2 MiB default.
    axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(3 * 1024 * 1024))
        .with_state(shared)
}

fn json_response(code: u16, body: &Value) -> Response {
    bytes_response(code, Bytes::from(body.to_string()), "application/json")
}

fn bytes_response(code: u16, body: Bytes, content_type: &str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_json());
    if e.code == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

struct Req {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn wants_metadata(&self) -> bool {
        self.accept().contains("as=PartialObjectMetadata")
    }

    fn wants_table(&self) -> bool {
        self.accept().contains("as=Table")
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }

    fn user_agent(&self) -> String {
        self.headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    fn write_opts(&self) -> WriteOpts {
        let manager = match self.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => {
                let ua = self.user_agent();
                let m = ua.split('/').next().unwrap_or("").to_string();
                if m.is_empty() { "unknown".into() } else { m }
            }
        };
        WriteOpts {
            dry_run: self.q("dryRun") == Some("All"),
            manager,
            strict: self.q("fieldValidation") == Some("Strict"),
            applied: false,
        }
    }

    fn body_value(&self) -> ApiResult<Value> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        let ct = self.content_type();
        if ct.contains("protobuf") {
            return crate::protobuf::decode(&self.body).map_err(|e| {
                if e.starts_with("kubesim decodes") {
                    ApiError::unsupported_media_type(e)
                } else {
                    ApiError::bad_request(format!("the protobuf request body is malformed: {e}"))
                }
            });
        }
        if ct.contains("cbor") {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"
            )));
        }
        if ct.contains("yaml") {
            let text = std::str::from_utf8(&self.body)
                .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
            // JSON is valid YAML, but the JSON parser is exact about numbers, so try it first.
            if let Ok(v) = serde_json::from_str(text) {
                return Ok(v);
            }
            return serde_saphyr::from_str::<Value>(text).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            });
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

/// Write bodies go into the request log so tests can check what was sent.
fn logged_body(req: &Req) -> Option<Value> {
    let write = matches!(req.method, Method::POST | Method::PUT | Method::PATCH);
    (write && !req.body.is_empty())
        .then(|| req.body_value().ok())
        .flatten()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = parse_route(uri.path());
    let req = Req {
        method,
        query: parse_query(uri.query()),
        headers,
        body,
    };
    let info = request_info(&route, &req.method, &req.query, &req.headers, uri.path());
    if let Some(code) = shared.controls.pass_gates(&info).await {
        shared.controls.record(info, code, logged_body(&req));
        return error_response(&ApiError::injected(code));
    }
    let mut force_gone = false;
    for action in shared.controls.faults_for(&info) {
        match action {
            FaultAction::Delay(d) => tokio::time::sleep(d).await,
            FaultAction::Respond(code) => {
                shared.controls.record(info, code, logged_body(&req));
                return error_response(&ApiError::injected(code));
            }
            FaultAction::WatchGone => force_gone = true,
        }
    }
    let response =
        dispatch(&shared, route, &req, force_gone).unwrap_or_else(|e| error_response(&e));
    shared
        .controls
        .record(info, response.status().as_u16(), logged_body(&req));
    response
}

fn dispatch(
    shared: &Arc<Shared>,
    route: Route,
    req: &Req,
    force_gone: bool,
) -> ApiResult<Response> {
    let aggregated = req.accept().contains("as=APIGroupDiscoveryList");
    match route {
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::Health => Ok(bytes_response(200, Bytes::from_static(b"ok"), "text/plain")),
        Route::Api | Route::Apis if req.method != Method::GET => {
            Err(ApiError::method_not_allowed("discovery is read-only"))
        }
        Route::Api => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            if aggregated {
                Ok(bytes_response(
                    200,
                    Bytes::from(discovery::aggregated(&store, true).to_string()),
                    discovery::AGGREGATED_CONTENT_TYPE,
                ))
            } else {
                let addr = shared
                    .addr
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                Ok(json_response(200, &discovery::api_versions(&addr)))
            }
        }
        Route::Apis => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            if aggregated {
                Ok(bytes_response(
                    200,
                    Bytes::from(discovery::aggregated(&store, false).to_string()),
                    discovery::AGGREGATED_CONTENT_TYPE,
                ))
            } else {
                Ok(json_response(200, &discovery::api_group_list(&store)))
            }
        }
        Route::ApiGroup(g) => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            discovery::api_group(&store, &g)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route)
        }
        Route::ResourceList(g, v) => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            discovery::resource_list(&store, &g, &v)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route)
        }
        Route::OpenApiIndex => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            Ok(json_response(200, &openapi::index(&store)))
        }
        Route::OpenApiDoc(g, v) => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            openapi::document(&store, &g, &v)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_route)
        }
        Route::OpenApiV2 => Err(ApiError::no_route()),
        Route::Unknown => Err(ApiError::no_route()),
        Route::Resource {
            group,
            version,
            plural,
            namespace,
            name,
            sub,
        } => {
            let rt = shared
                .store
                .read()
                .expect("store lock")
                .find_type(&group, &version, &plural)
                .ok_or_else(ApiError::no_route)?;
            if rt.namespaced && name.is_some() && namespace.is_none() {
                return Err(ApiError::no_route());
            }
            if !rt.namespaced && namespace.is_some() {
                return Err(ApiError::no_route());
            }
            match sub.as_deref() {
                None => {}
                Some("status") if rt.status => {}
                Some("scale") if rt.scale.is_some() => {}
                Some(_) => return Err(ApiError::no_route()),
            }
            resource(
                shared,
                &rt,
                namespace.as_deref(),
                name.as_deref(),
                sub.as_deref(),
                req,
                force_gone,
            )
        }
    }
}

fn list_bytes(
    rt: &ResourceType,
    items: &[Arc<Obj>],
    rv: u64,
    cont: Option<&str>,
    remaining: Option<u64>,
) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let head = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        rt.list_kind,
        rt.api_version(),
        meta
    );
    let size = head.len() + items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 2;
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(head.as_bytes());
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&o.bytes_for(rt));
    }
    buf.extend_from_slice(b"]}");
    Bytes::from(buf)
}

fn obj_response(code: u16, rt: &ResourceType, obj: &Obj, req: &Req) -> Response {
    if req.wants_metadata() {
        return bytes_response(
            code,
            Bytes::from(partial_metadata(&obj.value).to_string()),
            METADATA_CONTENT_TYPE,
        );
    }
    if req.wants_table() {
        let t = table::table_for(
            rt,
            std::slice::from_ref(&obj.value),
            obj.rv,
            req.q("includeObject").unwrap_or("Metadata"),
        );
        return table_response(&t);
    }
    bytes_response(code, obj.bytes_for(rt), "application/json")
}

/// The `PartialObjectMetadata` form of an object (`Accept: ...;as=PartialObjectMetadata`).
pub fn partial_metadata(v: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]})
}

const METADATA_CONTENT_TYPE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

fn table_response(t: &Value) -> Response {
    bytes_response(
        200,
        Bytes::from(t.to_string()),
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
}

fn set_path(obj: &mut Value, path: &str, v: Value) {
    let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let mut cur = obj;
    for (i, s) in segs.iter().enumerate() {
        if i + 1 == segs.len() {
            cur[*s] = v;
            return;
        }
        if !cur[*s].is_object() {
            cur[*s] = json!({});
        }
        cur = &mut cur[*s];
    }
}

fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(obj, |c, s| c.get(s))
}

fn scale_of(rt: &ResourceType, obj: &Obj) -> Value {
    let paths = rt.scale.as_ref().expect("scale checked by the router");
    let selector = match &paths.label_selector {
        Some(p) => get_path(&obj.value, p).cloned().unwrap_or(json!("")),
        None => {
            let labels = obj.value["spec"]["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            json!(labels)
        }
    };
    let m = &obj.value["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                     "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": get_path(&obj.value, &paths.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {"replicas": get_path(&obj.value, &paths.status_replicas).cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

fn resource(
    shared: &Arc<Shared>,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
    req: &Req,
    force_gone: bool,
) -> ApiResult<Response> {
    let key_ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
    match (&req.method, name) {
        (&Method::GET, Some(name)) if req.flag("watch") && sub.is_none() => {
            // The old single-object watch form: a watch of the collection narrowed to the name.
            let mut query = req.query.clone();
            let narrowed = match req.q("fieldSelector").filter(|f| !f.is_empty()) {
                Some(f) => format!("{f},metadata.name={name}"),
                None => format!("metadata.name={name}"),
            };
            query.insert("fieldSelector".into(), narrowed);
            let collection = Req {
                method: req.method.clone(),
                query,
                headers: req.headers.clone(),
                body: req.body.clone(),
            };
            resource(shared, rt, ns, None, None, &collection, force_gone)
        }
        (&Method::GET, Some(name)) => {
            let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
            let obj = store.get(rt, key_ns, name)?;
            if sub == Some("scale") {
                return Ok(json_response(200, &scale_of(rt, &obj)));
            }
            Ok(obj_response(200, rt, &obj, req))
        }
        (&Method::GET, None) => {
            let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
            let fields =
                FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &rt.selectable_fields)?;
            if req.flag("watch") {
                let from_rv = match req.q("resourceVersion") {
                    None | Some("") => None,
                    Some(s) => Some(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "invalid resourceVersion {s:?}: must be a number"
                        ))
                    })?),
                };
                let timeout = match req.q("timeoutSeconds") {
                    None | Some("") => None,
                    Some(s) => Some(Duration::from_secs(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds {s:?}"))
                    })?)),
                };
                let wr = WatchRequest {
                    rt: rt.clone(),
                    namespace: ns.map(String::from),
                    labels,
                    fields,
                    from_rv,
                    bookmarks: req.flag("allowWatchBookmarks"),
                    send_initial: req.flag("sendInitialEvents"),
                    timeout,
                    table: req.wants_table(),
                    metadata_only: req.wants_metadata(),
                    force_gone,
                };
                let rx = watch::start(shared.clone(), wr);
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|x| (x, rx))
                });
                let mut r = Response::new(Body::from_stream(stream));
                let ct = if req.wants_table() {
                    "application/json;as=Table;v=v1;g=meta.k8s.io"
                } else if req.wants_metadata() {
                    METADATA_CONTENT_TYPE
                } else {
                    "application/json"
                };
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                return Ok(r);
            }
            let limit = match req.q("limit") {
                None | Some("") | Some("0") => None,
                Some(s) => Some(
                    s.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?,
                ),
            };
            let page = {
                let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
                store.list(rt, ns, &labels, &fields, limit, req.q("continue"))?
            };
            if req.wants_metadata() {
                let mut meta = json!({"resourceVersion": page.rv.to_string()});
                if let Some(c) = &page.continue_token {
                    meta["continue"] = json!(c);
                }
                let items: Vec<Value> = page
                    .items
                    .iter()
                    .map(|o| partial_metadata(&o.value))
                    .collect();
                let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
                return Ok(bytes_response(
                    200,
                    Bytes::from(list.to_string()),
                    METADATA_CONTENT_TYPE,
                ));
            }
            if req.wants_table() {
                let values: Vec<Value> = page.items.iter().map(|o| o.value.clone()).collect();
                let mut t = table::table_for(
                    rt,
                    &values,
                    page.rv,
                    req.q("includeObject").unwrap_or("Metadata"),
                );
                if let Some(c) = &page.continue_token {
                    t["metadata"]["continue"] = json!(c);
                }
                return Ok(table_response(&t));
            }
            Ok(bytes_response(
                200,
                list_bytes(
                    rt,
                    &page.items,
                    page.rv,
                    page.continue_token.as_deref(),
                    page.remaining,
                ),
                "application/json",
            ))
        }
        (&Method::POST, None) => {
            let body = req.body_value()?;
            if rt.special == Special::Review {
                return Ok(json_response(201, &review(rt, &shared.controls, body)?));
            }
            let opts = req.write_opts();
            let obj = shared
                .store
                .write()
                .expect("store lock")
                .create(rt, ns, body, &opts)?;
            Ok(obj_response(201, rt, &obj, req))
        }
        (&Method::PUT, Some(name)) => {
            let body = req.body_value()?;
            let opts = req.write_opts();
            let mut store = shared.store.write().unwrap_or_else(PoisonError::into_inner);
            if sub == Some("scale") {
                let old = store.get(rt, key_ns, name)?;
                return write_scale(&mut store, rt, ns, name, old, body, &opts);
            }
            let obj = store.update(rt, ns, name, body, sub, &opts)?;
            Ok(obj_response(200, rt, &obj, req))
        }
        (&Method::PATCH, Some(name)) => {
            let pt = PatchType::from_content_type(req.content_type()).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {})",
                    req.content_type()
                ))
            })?;
            if pt == PatchType::Strategic && rt.custom {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for custom resource {})",
                    crate::status::qualified(&rt.group, &rt.plural)
                )));
            }
            let body = req.body_value()?;
            let mut opts = req.write_opts();
            let mut store = shared.store.write().unwrap_or_else(PoisonError::into_inner);
            let old = match store.get(rt, key_ns, name) {
                Ok(o) => Some(o),
                Err(e) if e.code == 404 && pt == PatchType::Apply && sub.is_none() => None,
                Err(e) => return Err(e),
            };
            if sub == Some("scale") {
                let old = old.expect("scale patches need an existing object");
                let mut scale = scale_of(rt, &old);
                apply_patch(pt, &mut scale, &body)?;
                return write_scale(&mut store, rt, ns, name, old, scale, &opts);
            }
            if pt == PatchType::Apply {
                if body["apiVersion"].as_str().unwrap_or("").is_empty()
                    || body["kind"].as_str().unwrap_or("").is_empty()
                {
                    return Err(ApiError::bad_request(
                        "apply patches must set apiVersion and kind",
                    ));
                }
                // ValidatePatchOptions: an Invalid (422) PatchOptions, as the real server answers.
                if req.q("fieldManager").is_none_or(str::is_empty) {
                    return Err(ApiError::invalid(
                        "meta.k8s.io",
                        "PatchOptions",
                        "",
                        vec![Cause::new(
                            "FieldValueRequired",
                            "fieldManager",
                            "Required value: is required for apply patch",
                        )],
                    ));
                }
                let merged = managed::apply(
                    old.as_ref().map(|o| &o.value),
                    &body,
                    &opts.manager,
                    req.flag("force"),
                    &rt.api_version(),
                    sub == Some("status"),
                    rt.schema.as_ref().map(|s| &s.raw),
                )?;
                opts.manager = String::new();
                let obj = match old {
                    None => {
                        let mut merged = merged;
                        if let Some(m) = merged["metadata"].as_object_mut() {
                            m.insert("name".into(), json!(name));
                        }
                        store.create_applied(rt, ns, merged, &opts)?
                    }
                    Some(_) => store.update_applied(rt, ns, name, merged, sub, &opts)?,
                };
                return Ok(obj_response(200, rt, &obj, req));
            }
            let old = old.expect("only apply reaches here without an object");
            let mut new = old.value.clone();
            apply_patch(pt, &mut new, &body)?;
            let obj = store.update(rt, ns, name, new, sub, &opts)?;
            Ok(obj_response(200, rt, &obj, req))
        }
        (&Method::DELETE, Some(name)) => {
            let opts = delete_opts(req)?;
            let obj = shared
                .store
                .write()
                .expect("store lock")
                .delete(rt, ns, name, &opts)?;
            Ok(obj_response(200, rt, &obj, req))
        }
        (&Method::DELETE, None) => {
            let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
            let fields =
                FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &rt.selectable_fields)?;
            let opts = delete_opts(req)?;
            let mut store = shared.store.write().unwrap_or_else(PoisonError::into_inner);
            let page = store.list(rt, ns, &labels, &fields, None, None)?;
            let mut deleted = Vec::new();
            for o in page.items {
                let n = o.meta_str("name").to_string();
                let ons = o.meta_str("namespace").to_string();
                if let Ok(d) = store.delete(rt, Some(&ons), &n, &opts) {
                    deleted.push(d);
                }
            }
            let rv = store.rv;
            Ok(bytes_response(
                200,
                list_bytes(rt, &deleted, rv, None, None),
                "application/json",
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method,
            crate::status::qualified(&rt.group, &rt.plural)
        ))),
    }
}

fn apply_patch(pt: PatchType, target: &mut Value, body: &Value) -> ApiResult<()> {
    match pt {
        PatchType::Merge => {
            patch::merge_patch(target, body);
            Ok(())
        }
        PatchType::Json => patch::json_patch(target, body),
        PatchType::Strategic => patch::strategic_merge(target, body),
        PatchType::Apply => {
            patch::merge_patch(target, body);
            Ok(())
        }
    }
}

fn write_scale(
    store: &mut Inner,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: &str,
    old: Arc<Obj>,
    scale: Value,
    opts: &WriteOpts,
) -> ApiResult<Response> {
    let paths = rt.scale.as_ref().expect("scale checked by the router");
    let replicas = scale["spec"]["replicas"].clone();
    if !replicas.is_i64() && !replicas.is_u64() {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![crate::status::Cause::new(
                "FieldValueInvalid",
                "spec.replicas",
                format!("Invalid value: {replicas}: must be an integer"),
            )],
        ));
    }
    let mut new = old.value.clone();
    if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    set_path(&mut new, &paths.spec_replicas, replicas);
    let obj = store.update(rt, ns, name, new, None, opts)?;
    Ok(json_response(200, &scale_of(rt, &obj)))
}

fn delete_opts(req: &Req) -> ApiResult<DeleteOpts> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        req.body_value()?
    };
    let policy = body["propagationPolicy"]
        .as_str()
        .or(req.q("propagationPolicy"))
        .unwrap_or("Background");
    let propagation = match policy {
        "Background" => Propagation::Background,
        "Foreground" => Propagation::Foreground,
        "Orphan" => Propagation::Orphan,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {other:?}: must be Background, Foreground or Orphan"
            )));
        }
    };
    let propagation = if body["orphanDependents"].as_bool() == Some(true) {
        Propagation::Orphan
    } else {
        propagation
    };
    let dry = body["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d == "All"))
        || req.q("dryRun") == Some("All");
    Ok(DeleteOpts {
        propagation,
        precondition_uid: body["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from),
        dry_run: dry,
    })
}

/// The identity kubesim gives every client: it has no authentication, and answers as the
/// real stack does for its admin kubeconfig (a member of `system:masters`).
const USER: &str = "admin";
const GROUPS: [&str; 2] = ["system:masters", "system:authenticated"];

/// Answers a review (never stored): access reviews say allowed unless a test denied the verb
/// and resource; rules reviews and self reviews answer what the real server answers for a
/// `system:masters` user.
fn review(rt: &ResourceType, controls: &Controls, mut body: Value) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    body["apiVersion"] = json!(rt.api_version());
    body["kind"] = json!(rt.kind);
    if body["metadata"].is_null() {
        body["metadata"] = json!({});
    }
    match rt.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let attrs = &body["spec"]["resourceAttributes"];
            let verb = attrs["verb"]
                .as_str()
                .or(body["spec"]["nonResourceAttributes"]["verb"].as_str())
                .unwrap_or("")
                .to_string();
            let resource = attrs["resource"].as_str().unwrap_or("").to_string();
            // Allowed answers carry no reason, as the real server's for system:masters.
            body["status"] = if controls.allowed(&verb, &resource) {
                json!({"allowed": true})
            } else {
                json!({"allowed": false, "denied": true, "reason": format!("denied by a kubesim test control ({verb} {resource})")})
            };
        }
        "SelfSubjectRulesReview" => {
            // The rules of cluster-admin, system:basic-user, system:discovery and
            // system:public-info-viewer, in the order the real server lists them; a test's
            // `deny` affects access reviews only.
            let get = |urls: &[&str]| json!({"verbs": ["get"], "nonResourceURLs": urls});
            body["status"] = json!({
                "resourceRules": [
                    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
                     "resources": ["selfsubjectreviews"]},
                    {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                ],
                "nonResourceRules": [
                    get(&["/healthz", "/livez", "/readyz", "/version", "/version/"]),
                    get(&["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                        "/openapi/*", "/readyz", "/version", "/version/"]),
                    {"verbs": ["*"], "nonResourceURLs": ["*"]},
                ],
                "incomplete": false,
            });
        }
        _ => {
            body["metadata"]["creationTimestamp"] = json!(crate::store::now());
            body["status"] = json!({"userInfo": {"username": USER, "groups": GROUPS}});
        }
    }
    Ok(body)
}
