//! A loopback HTTP proxy in front of the real kube-apiserver that gives it kubesim's test
//! controls (`apicontrols`): every request that passes is recorded as kubesim records it
//! (verb, path, User-Agent, the body of writes, the answer's code), may be held at a
//! [`Gate`](apicontrols::Gate), answered with an injected error or delayed by a
//! [`Fault`](apicontrols::Fault), and watches may be ended (dropped, or with 410 Expired).
//!
//! ```no_run
//! # async fn t(cluster: &realstack::RealCluster, token: &str) -> anyhow::Result<()> {
//! use apicontrols::{ControlledApi, Fault, Match};
//! let proxy = realstack::proxy::ApiProxy::start(cluster).await?;
//! // A client of the proxy: plain HTTP on 127.0.0.1, its own bearer token forwarded.
//! let kubeconfig = proxy.kubeconfig_yaml(token, "default");
//! proxy.inject(Fault::respond(Match::any().verb("create"), 500));
//! // ... the client's first create is answered 500 by the proxy, the rest reach the server ...
//! let writes = proxy.requests(&Match::any().verb("write"));
//! # let _ = (kubeconfig, writes); Ok(()) }
//! ```
//!
//! Only the clients configured with the proxy's URL pass through it (in the e2e stories:
//! Fluxgate's); the real controllers talk to the API server directly, so the log, faults and
//! gates concern Fluxgate alone. The client speaks plain HTTP/1.1 to the proxy with its
//! own credentials (a bearer token), which the proxy forwards over TLS (the cluster's CA),
//! one upstream connection per client connection. Responses stream through unbuffered, so
//! watches work as they do directly. What the proxy makes itself follows the real server:
//! an injected error is a `Status` with the code's reason (as kubesim's); a watch ended with
//! 410 is HTTP 200 and one ERROR event carrying a 410 Expired `Status`, as the API server's
//! watch cache answers a resourceVersion too old (k8s.io/apiserver v0.36
//! `pkg/storage/cacher`: `newErrWatcher` with `NewResourceExpired("too old resource
//! version: …")`); a dropped watch is a response stream that ends.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use apicontrols::request;
use apicontrols::{ControlledApi, Controls, Expiring, FaultAction, RequestInfo};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use crate::RealCluster;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// The proxy; dropping it stops serving (open connections end).
pub struct ApiProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What every connection's handler shares.
struct Shared {
    controls: Arc<Controls>,
    upstream: Upstream,
    /// Expired watch histories: (group, plural, resourceVersion) — watches of that resource
    /// from an earlier version get 410.
    expired: Mutex<Vec<(String, String, u64)>>,
    /// An admin client, to read the cluster's current resourceVersion.
    admin: kube::Client,
}

/// Where and how the proxy connects to the API server.
struct Upstream {
    /// `127.0.0.1:<port>`.
    authority: String,
    tls: TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl ApiProxy {
    /// Serves on a free loopback port, forwarding to `cluster`'s API server. Its tasks run
    /// on the caller's runtime.
    pub async fn start(cluster: &RealCluster) -> Result<ApiProxy> {
        let authority = cluster
            .server()
            .strip_prefix("https://")
            .with_context(|| format!("the API server's URL {} is not https", cluster.server()))?
            .trim_end_matches('/')
            .to_owned();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(host, _)| host)
            .to_owned();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("the API server's host {host}"))?;
        let upstream = Upstream {
            authority,
            tls: tls_connector(cluster.ca_pem())?,
            name,
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the API proxy's port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            controls: Arc::default(),
            upstream,
            expired: Mutex::new(Vec::new()),
            admin: cluster.client().await?,
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(ApiProxy {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose server is the proxy and whose user sends `token`, in `namespace`.
    pub fn kubeconfig_yaml(&self, token: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: realstack-proxy\n  cluster:\n    \
             server: {}\ncontexts:\n- name: proxied\n  context:\n    cluster: realstack-proxy\n    \
             user: proxied\n    namespace: {namespace}\ncurrent-context: proxied\nusers:\n- name: \
             proxied\n  user:\n    token: {token}\n",
            self.url()
        )
    }
}

impl ControlledApi for ApiProxy {
    fn controls(&self) -> &Arc<Controls> {
        &self.shared.controls
    }

    /// The real API server keeps watch history in its watch cache, which a test cannot
    /// compact: the proxy answers for it. The cluster's current resourceVersion (a quorum
    /// list's, etcd's revision) becomes the mark.
    fn expire_history<'a>(&'a self, group: &'a str, plural: &'a str) -> Expiring<'a> {
        Box::pin(async move {
            let list = Api::<Namespace>::all(self.shared.admin.clone())
                .list_metadata(&ListParams::default().limit(1))
                .await
                .map_err(|e| format!("reading the cluster's resourceVersion: {e}"))?;
            let mark = list
                .metadata
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "the namespace list's resourceVersion {:?} is not a number",
                        list.metadata.resource_version
                    )
                })?;
            self.shared
                .expired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((group.to_owned(), plural.to_owned(), mark));
            Ok(())
        })
    }
}

/// A TLS client configuration trusting only the cluster's CA, speaking HTTP/1.1.
fn tls_connector(ca_pem: &str) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("parsing the cluster's CA certificate")?)
            .context("trusting the cluster's CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Connections end with the server task (dropping the set aborts them).
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            // One upstream connection per client connection: HTTP/1.1 carries one request
            // at a time, so it is free whenever the client sends the next.
            let upstream: Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>> = Arc::default();
            let service = service_fn(move |req: Request<Incoming>| {
                let (shared, upstream) = (shared.clone(), upstream.clone());
                async move { Ok::<_, Infallible>(handle(&shared, &upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    shared: &Shared,
    upstream: &tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    let path = parts.uri.path().to_owned();
    let query = request::parse_query(parts.uri.query());
    let info = request::request_info(
        &request::parse_route(&path),
        &parts.method,
        &query,
        &parts.headers,
        &path,
    );
    // Parsed before it is forwarded: what was asked, whatever the answer.
    let written = request::is_write(&parts.method)
        .then(|| {
            request::text_body(
                request::header_text(&parts.headers, &header::CONTENT_TYPE),
                &body,
            )
        })
        .flatten();
    let controls = &shared.controls;
    if let Some(code) = controls.pass_gates(&info).await {
        controls.record(info, code, written);
        return injected(code);
    }
    let mut gone = None;
    for action in controls.faults_for(&info) {
        match action {
            FaultAction::Delay(d) => tokio::time::sleep(d).await,
            FaultAction::Respond(code) => {
                controls.record(info, code, written);
                return injected(code);
            }
            FaultAction::WatchGone => {
                gone = Some(
                    "too old resource version: the watch was expired by a test (forced 410)"
                        .to_owned(),
                )
            }
        }
    }
    if info.verb == "watch" && gone.is_none() {
        gone = shared.expired_for(&info, &query);
    }
    if let Some(message) = gone {
        controls.record(info, 200, None);
        return watch_event(request::watch_gone_line(&message));
    }
    let watch = info.verb == "watch";
    let response = match forward(&shared.upstream, upstream, parts, body).await {
        Ok(response) => response,
        Err(e) => {
            // The API server could not be reached: answered as a gateway that failed.
            controls.record(info, 502, written);
            return plain(StatusCode::BAD_GATEWAY, format!("{e:#}"));
        }
    };
    controls.record(info, response.status().as_u16(), written);
    let (mut parts, upstream_body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = if watch {
        until_dropped(upstream_body, controls.drop_watches.subscribe())
    } else {
        upstream_body.map_err(BoxError::from).boxed()
    };
    Response::from_parts(parts, body)
}

impl Shared {
    /// The 410 message for a watch resuming from before an expiry of its resource's history
    /// (as kubesim: a resourceVersion of 0 or a watch sending initial events starts anew).
    fn expired_for(
        &self,
        info: &RequestInfo,
        query: &std::collections::HashMap<String, String>,
    ) -> Option<String> {
        if query.get("sendInitialEvents").map(String::as_str) == Some("true") {
            return None;
        }
        let from: u64 = query.get("resourceVersion")?.parse().ok()?;
        if from == 0 {
            return None;
        }
        let expired = self.expired.lock().unwrap_or_else(PoisonError::into_inner);
        let mark = expired
            .iter()
            .filter(|(g, r, _)| *g == info.group && *r == info.resource)
            .map(|(_, _, mark)| *mark)
            .max()?;
        (from < mark).then(|| format!("too old resource version: {from} ({mark})"))
    }
}

/// Headers that belong to one connection, not to the request or answer.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut header::HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Sends the request to the API server on this client connection's upstream connection,
/// opening one when there is none or the last one closed (a watch the proxy ended leaves
/// its connection unusable).
async fn forward(
    upstream: &Upstream,
    connection: &tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
    mut parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Incoming>> {
    strip_hop_by_hop(&mut parts.headers);
    let authority = HeaderValue::from_str(&upstream.authority)
        .context("the API server's address as a Host header")?;
    parts.headers.insert(header::HOST, authority);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .context("the request's path")?;
    parts.uri = path;
    let request = Request::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    );
    let mut slot = connection.lock().await;
    let reusable = match slot.take() {
        Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
        None => None,
    };
    let mut sender = match reusable {
        Some(sender) => sender,
        None => connect(upstream).await?,
    };
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("forwarding to the API server at {}", upstream.authority))?;
    *slot = Some(sender);
    Ok(response)
}

/// A new TLS connection to the API server.
async fn connect(upstream: &Upstream) -> Result<SendRequest<ProxyBody>> {
    let tcp = TcpStream::connect(&upstream.authority)
        .await
        .with_context(|| format!("connecting to the API server at {}", upstream.authority))?;
    tcp.set_nodelay(true)?;
    let tls = upstream
        .tls
        .connect(upstream.name.clone(), tcp)
        .await
        .with_context(|| format!("TLS with the API server at {}", upstream.authority))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP/1.1 with the API server")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// An injected error as the real API server answers it (see [`request::injected_status`]).
fn injected(code: u16) -> Response<ProxyBody> {
    let mut response = Response::new(full(request::injected_status(code).to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if code == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A watch answered with these events only (HTTP 200, as the API server streams them).
fn watch_event(lines: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}

fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// The watch's stream, ended early when the test drops watches: the client sees the stream
/// close, as when the API server ends a watch, and watches again.
fn until_dropped(
    mut upstream: Incoming,
    mut dropped: tokio::sync::watch::Receiver<u64>,
) -> ProxyBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = upstream.frame() => frame,
                _ = dropped.changed() => return,
                _ = tx.closed() => return,
            };
            let Some(frame) = frame else { return };
            if tx.send(frame.map_err(BoxError::from)).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx).boxed()
}

/// A response body fed frame by frame through a channel.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}
