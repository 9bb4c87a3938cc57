//! A mutating admission webhook for Pods, served over TLS by the test process: the way a test
//! marks pods it declared broken (a chart version, an image) on a real control plane, where
//! the pods are made by real controllers from objects the test does not write.
//!
//! ```no_run
//! # async fn t(client: kube::Client) -> anyhow::Result<()> {
//! use std::collections::BTreeMap;
//! let hook = realstack::webhook::PodWebhook::register(&client, "faults", None, |pod| {
//!     let broken = pod.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/version"))
//!         == Some(&"2.0.0".to_owned());
//!     BTreeMap::from_iter(broken.then(|| ("sim.fluxgate.dev/never-ready".into(), "true".into())))
//! }).await?;
//! // ... pods of version 2.0.0 are created with the annotation; KWOK leaves them unready ...
//! hook.unregister(&client).await?;
//! # Ok(()) }
//! ```
//!
//! The kube-apiserver calls `https://127.0.0.1:<port>/mutate` for every Pod CREATE (the
//! `MutatingAdmissionWebhook` plugin is in its default admission chain) with an
//! `admission.k8s.io/v1` AdmissionReview, trusting the webhook's own CA (`caBundle`). The
//! answer adds the annotations `decide` returns with a JSON patch. `failurePolicy: Fail`:
//! a fault must not be lost to a slow answer, so a pod is refused rather than made
//! unmarked; the server lives as long as the [`PodWebhook`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// What to add to a pod being created: annotations by key (none: leave it as it is).
pub type Decide = dyn Fn(&Pod) -> BTreeMap<String, String> + Send + Sync;

/// A registered webhook and its server; [`PodWebhook::unregister`] removes the
/// configuration, dropping it stops the server.
pub struct PodWebhook {
    name: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for PodWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl PodWebhook {
    /// Serves `decide` on a free loopback port and registers MutatingWebhookConfiguration
    /// `name` for Pod creation in `namespace` (every namespace if `None`); returns once the API
    /// server has stored it (it calls the webhook a moment later, when its cache has it).
    pub async fn register(
        client: &Client,
        name: &str,
        namespace: Option<&str>,
        decide: impl Fn(&Pod) -> BTreeMap<String, String> + Send + Sync + 'static,
    ) -> Result<PodWebhook> {
        let (ca_pem, acceptor) = tls().context("making the webhook's certificates")?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the webhook's port")?;
        let addr = listener.local_addr()?;
        let decide: Arc<Decide> = Arc::new(decide);
        let server = tokio::spawn(serve(listener, acceptor, decide));
        let namespaces = match namespace {
            Some(ns) => json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}),
            None => json!({}),
        };
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": name},
            "webhooks": [{
                "name": format!("{name}.realstack.fluxgate.dev"),
                "clientConfig": {
                    "url": format!("https://{addr}/mutate"),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca_pem),
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": namespaces,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 10,
            }],
        }))
        .context("building the MutatingWebhookConfiguration")?;
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .with_context(|| format!("creating MutatingWebhookConfiguration {name}"))?;
        Ok(PodWebhook {
            name: name.to_owned(),
            server,
        })
    }

    /// Removes the configuration: pods are created unmarked from then on.
    pub async fn unregister(self, client: &Client) -> Result<()> {
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting MutatingWebhookConfiguration {}", self.name))?;
        Ok(())
    }
}

/// A CA of the webhook's own (its PEM goes into `caBundle`) and a TLS acceptor with a
/// serving certificate it signed for 127.0.0.1, speaking HTTP/1.1 only.
fn tls() -> Result<(String, TlsAcceptor)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::IpAddress(Ipv4Addr::LOCALHOST.into())];
    let cert = params.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca_pem, TlsAcceptor::from(Arc::new(config))))
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, decide: Arc<Decide>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, decide) = (acceptor.clone(), decide.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let answer = service_fn(move |request: Request<Incoming>| {
                let decide = decide.clone();
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    let review = review(&body, decide.as_ref()).to_string();
                    let mut response = Response::new(Full::new(Bytes::from(review)));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), answer)
                .await;
        });
    }
}

/// The AdmissionReview answer to one request: allowed, with a JSON patch adding what
/// `decide` returned (the annotations map is made if the pod has none).
fn review(body: &[u8], decide: &Decide) -> Value {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if let Ok(pod) = serde_json::from_value::<Pod>(request["object"].clone()) {
        let add = decide(&pod);
        if !add.is_empty() {
            let mut patch = Vec::new();
            if pod.metadata.annotations.is_none() {
                patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
            }
            for (key, value) in add {
                let path = format!(
                    "/metadata/annotations/{}",
                    key.replace('~', "~0").replace('/', "~1")
                );
                patch.push(json!({"op": "add", "path": path, "value": value}));
            }
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(
                base64::engine::general_purpose::STANDARD.encode(Value::Array(patch).to_string())
            );
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide_broken(pod: &Pod) -> BTreeMap<String, String> {
        let broken = pod.metadata.labels.as_ref().and_then(|l| l.get("v")) == Some(&"2".into());
        BTreeMap::from_iter(broken.then(|| ("sim.fluxgate.dev/never-ready".into(), "true".into())))
    }

    #[test]
    fn the_answer_patches_only_the_pods_decide_marks() {
        let ask = |labels: Value, annotations: Value| {
            let body = json!({"request": {"uid": "u1", "object": {
                "metadata": {"name": "p", "labels": labels, "annotations": annotations}}}});
            review(body.to_string().as_bytes(), &decide_broken)["response"].clone()
        };
        let untouched = ask(json!({"v": "1"}), Value::Null);
        assert_eq!(untouched, json!({"uid": "u1", "allowed": true}));
        let marked = ask(json!({"v": "2"}), Value::Null);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(marked["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&patch).unwrap(),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {}},
                   {"op": "add", "path": "/metadata/annotations/sim.fluxgate.dev~1never-ready", "value": "true"}])
        );
        let with_annotations = ask(json!({"v": "2"}), json!({"a": "b"}));
        let patch = base64::engine::general_purpose::STANDARD
            .decode(with_annotations["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&patch)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
