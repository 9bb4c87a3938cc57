//! Installs what the CSI snapshot-controller needs into a fresh cluster: the three v1
//! VolumeSnapshot CRDs and upstream's RBAC manifest (its ServiceAccount included), as
//! `build.sh` copied them from the external-snapshotter modules into `bin/snapshotter/`, and
//! a token of that ServiceAccount for the controller's kubeconfig.
//!
//! Why a TokenRequest token rather than a client certificate with the ServiceAccount's name:
//! in a cluster the controller runs as that ServiceAccount with a projected token, and the
//! apiserver's service-account authenticator is what then names it — user
//! `system:serviceaccount:kube-system:snapshot-controller`, groups `system:serviceaccounts`
//! and `system:serviceaccounts:kube-system`, and only while the ServiceAccount exists. A
//! certificate would reproduce the name but not that path, and its groups only by hand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The directory under the binaries that holds the manifests.
pub const DIR: &str = "snapshotter";
/// The v1 CRDs, in the order they are created.
pub const CRD_FILES: [&str; 3] = [
    "snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
    "snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
    "snapshot.storage.k8s.io_volumesnapshots.yaml",
];
/// Upstream's `deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml`.
pub const RBAC_FILE: &str = "rbac-snapshot-controller.yaml";
/// Where upstream deploys the controller, and where its ServiceAccount lives.
pub const NAMESPACE: &str = "kube-system";
/// The ServiceAccount the controller runs as (named in the RBAC manifest).
pub const SERVICE_ACCOUNT: &str = "snapshot-controller";
/// What the controller logs (klog V(4), `pkg/common-controller/snapshot_controller_base.go`)
/// once its informers have synced and its caches are filled; its workers start right after.
pub const INITIALIZED_LOG: &str = "controller initialized";

/// Every file [`install`] reads, for the check that the build is complete.
pub fn files(bin: &Path) -> Vec<PathBuf> {
    CRD_FILES
        .iter()
        .chain(std::iter::once(&RBAC_FILE))
        .map(|f| bin.join(DIR).join(f))
        .collect()
}

fn documents(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("parsing {} as YAML", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

async fn create<K>(api: Api<K>, doc: Value, what: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(doc).with_context(|| format!("reading {what}"))?;
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {what}"))?;
    Ok(())
}

/// Creates the CRDs and the RBAC objects. Namespaced objects without a namespace go to
/// [`NAMESPACE`]: upstream's manifest leaves the leader-election RoleBinding without one
/// (its kustomization sets none either), though the Role it binds is in kube-system.
pub async fn install(client: &Client, bin: &Path) -> Result<Vec<String>> {
    let mut crds = Vec::new();
    for file in CRD_FILES {
        let path = bin.join(DIR).join(file);
        for doc in documents(&path)? {
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let what = format!("CustomResourceDefinition {name} from {}", path.display());
            create(
                Api::<CustomResourceDefinition>::all(client.clone()),
                doc,
                &what,
            )
            .await?;
            crds.push(name);
        }
    }
    let path = bin.join(DIR).join(RBAC_FILE);
    for doc in documents(&path)? {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(NAMESPACE)
            .to_string();
        let what = format!("{kind} {name} from {}", path.display());
        let c = client.clone();
        match kind.as_str() {
            "ServiceAccount" => create(Api::<ServiceAccount>::namespaced(c, &ns), doc, &what).await,
            "ClusterRole" => create(Api::<ClusterRole>::all(c), doc, &what).await,
            "ClusterRoleBinding" => create(Api::<ClusterRoleBinding>::all(c), doc, &what).await,
            "Role" => create(Api::<Role>::namespaced(c, &ns), doc, &what).await,
            "RoleBinding" => create(Api::<RoleBinding>::namespaced(c, &ns), doc, &what).await,
            other => bail!(
                "{} holds a {other} ({name}), which the launcher does not know how to create",
                path.display()
            ),
        }?;
    }
    Ok(crds)
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

/// A token of the controller's ServiceAccount, valid for `ttl`.
pub async fn token(client: &Client, ttl: Duration) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // Empty: the apiserver's own audience, as for a projected token.
            audiences: Some(vec![]),
            expiration_seconds: Some(ttl.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {NAMESPACE}/{SERVICE_ACCOUNT}"))?
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .with_context(|| {
            format!("the TokenRequest for {NAMESPACE}/{SERVICE_ACCOUNT} returned no token")
        })
}
