//! Puts upstream's manifests and identities into a cluster: multi-document YAML files
//! applied object by object (server-side apply), CustomResourceDefinitions waited on until
//! Established, and TokenRequest tokens for the ServiceAccounts components run as.
//!
//! Why a TokenRequest token rather than a client certificate with the ServiceAccount's name:
//! in a cluster a controller runs as its ServiceAccount with a projected token, and the
//! apiserver's service-account authenticator is what then names it — user
//! `system:serviceaccount:<namespace>:<name>`, groups `system:serviceaccounts` and
//! `system:serviceaccounts:<namespace>`, and only while the ServiceAccount exists. A
//! certificate would reproduce the name but not that path, and its groups only by hand.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{Scope, pinned_kind};
use serde_json::Value;

/// The field manager of everything the launchers apply.
pub const FIELD_MANAGER: &str = "realstack";

/// The documents of a multi-document YAML file, empty ones dropped.
pub fn documents(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("parsing {} as YAML", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Applies one object (server-side apply, forced: the launcher owns what it installs),
/// asking discovery for its resource and scope. A namespaced object without a namespace
/// goes to `default_namespace`, as `kubectl apply -n` would put it. Returns its
/// `kind/name`. `source` names where the document came from, for errors.
pub async fn apply(
    client: &Client,
    doc: &Value,
    default_namespace: &str,
    source: &str,
) -> Result<String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("{kind} {name} from {source}");
    anyhow::ensure!(
        !kind.is_empty() && !name.is_empty(),
        "{source} holds a document without kind or metadata.name"
    );
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (resource, caps) = pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
        .await
        .with_context(|| format!("finding the API of {what} ({api_version})"))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(default_namespace),
            &resource,
        ),
    };
    let mut doc = doc.clone();
    if caps.scope == Scope::Namespaced && doc["metadata"]["namespace"].is_null() {
        doc["metadata"]["namespace"] = default_namespace.into();
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&doc),
    )
    .await
    .with_context(|| format!("applying {what}"))?;
    Ok(format!("{kind}/{name}"))
}

/// Whether every CRD named is Established (served by the apiserver).
pub async fn established(client: &Client, crds: &[String]) -> Result<bool> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for name in crds {
        let crd = api
            .get(name)
            .await
            .with_context(|| format!("reading CustomResourceDefinition {name}"))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A token of ServiceAccount `namespace/name` for the apiserver's own audience, valid for
/// `ttl`.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
    ttl: Duration,
) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // Empty: the apiserver's own audience, as for a projected token.
            audiences: Some(vec![]),
            expiration_seconds: Some(ttl.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("the TokenRequest for {namespace}/{name} returned no token"))
}
