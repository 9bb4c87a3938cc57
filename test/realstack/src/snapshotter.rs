//! Installs what the CSI snapshot-controller needs into a fresh cluster: the three v1
//! VolumeSnapshot CRDs and upstream's RBAC manifest (its ServiceAccount included), as
//! `build.sh` copied them from the external-snapshotter modules into `bin/snapshotter/`, and
//! a token of that ServiceAccount for the controller's kubeconfig (`crate::manifest` says why
//! a token).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use kube::Client;

use crate::manifest;

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

/// Applies the CRDs and the RBAC objects and returns the CRDs' names. Namespaced objects
/// without a namespace go to [`NAMESPACE`]: upstream's manifest leaves the leader-election
/// RoleBinding without one (its kustomization sets none either), though the Role it binds is
/// in kube-system.
pub async fn install(client: &Client, bin: &Path) -> Result<Vec<String>> {
    let mut crds = Vec::new();
    for file in CRD_FILES {
        let path = bin.join(DIR).join(file);
        for doc in manifest::documents(&path)? {
            manifest::apply(client, &doc, NAMESPACE, &path.display().to_string()).await?;
            crds.push(
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let path = bin.join(DIR).join(RBAC_FILE);
    for doc in manifest::documents(&path)? {
        manifest::apply(client, &doc, NAMESPACE, &path.display().to_string()).await?;
    }
    Ok(crds)
}

/// A token of the controller's ServiceAccount, valid for `ttl`.
pub async fn token(client: &Client, ttl: Duration) -> Result<String> {
    manifest::service_account_token(client, NAMESPACE, SERVICE_ACCOUNT, ttl).await
}
