//! Startup check: are the APIs Fluxgate needs (its own CRDs, Flux's and the CSI snapshot
//! CRDs) served by the cluster? A missing one is named with how to install it.

use kube::Client;
use std::time::Duration;

/// One API (group, version, resource) Fluxgate needs, and how to get it installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredApi {
    /// API group, e.g. `kustomize.toolkit.fluxcd.io`.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Plural resource name, e.g. `kustomizations`.
    pub plural: &'static str,
    /// What installs it.
    pub install: &'static str,
}

const FLUXGATE: &str = "install Fluxgate's CRDs: `fluxgate crd | kubectl apply -f -` (or the Helm chart charts/fluxgate)";
const FLUX: &str = "install Flux (`flux install`, or the fluxcd/flux2 manifests)";
const SNAPSHOTS: &str = "install the CSI snapshot CRDs and controller (kubernetes-csi/external-snapshotter, client/config/crd and deploy/kubernetes/snapshot-controller)";

/// Everything `fluxgate run` needs before it starts.
pub const REQUIRED_APIS: &[RequiredApi] = &[
    RequiredApi {
        group: "fluxgate.dev",
        version: "v1alpha1",
        plural: "managedapps",
        install: FLUXGATE,
    },
    RequiredApi {
        group: "fluxgate.dev",
        version: "v1alpha1",
        plural: "upgraderequests",
        install: FLUXGATE,
    },
    RequiredApi {
        group: "fluxgate.dev",
        version: "v1alpha1",
        plural: "rollbackrequests",
        install: FLUXGATE,
    },
    RequiredApi {
        group: "kustomize.toolkit.fluxcd.io",
        version: "v1",
        plural: "kustomizations",
        install: FLUX,
    },
    RequiredApi {
        group: "helm.toolkit.fluxcd.io",
        version: "v2",
        plural: "helmreleases",
        install: FLUX,
    },
    RequiredApi {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        plural: "gitrepositories",
        install: FLUX,
    },
    RequiredApi {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        plural: "ocirepositories",
        install: FLUX,
    },
    RequiredApi {
        group: "snapshot.storage.k8s.io",
        version: "v1",
        plural: "volumesnapshots",
        install: SNAPSHOTS,
    },
    RequiredApi {
        group: "snapshot.storage.k8s.io",
        version: "v1",
        plural: "volumesnapshotclasses",
        install: SNAPSHOTS,
    },
];

/// How long the whole check may take before the cluster counts as unreachable.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks that every API in [`REQUIRED_APIS`] is served. The error says which are missing
/// and how to install them, or that the cluster cannot be reached.
pub async fn check_required_apis(client: &Client, cluster: &str) -> anyhow::Result<()> {
    let missing = tokio::time::timeout(CHECK_TIMEOUT, missing_apis(client))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the Kubernetes API server at {cluster} did not answer within {}s; check that the \
                 cluster is running and that your kubeconfig points at it",
                CHECK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kubernetes API server at {cluster}: {}; check that the \
                 cluster is running and that your kubeconfig points at it",
                crate::cluster::error::describe(&e)
            )
        })?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut message = String::from("the cluster does not serve APIs Fluxgate needs:");
    for api in &missing {
        message.push_str(&format!(
            "\n  - {}.{}/{}: {}",
            api.plural, api.group, api.version, api.install
        ));
    }
    Err(anyhow::anyhow!(message))
}

/// The required APIs the cluster does not serve.
pub async fn missing_apis(client: &Client) -> Result<Vec<RequiredApi>, kube::Error> {
    let mut missing = Vec::new();
    let mut group_versions: Vec<(&str, &str)> =
        REQUIRED_APIS.iter().map(|a| (a.group, a.version)).collect();
    group_versions.dedup();
    for (group, version) in group_versions {
        let served: Vec<String> = match client
            .list_api_group_resources(&format!("{group}/{version}"))
            .await
        {
            Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
            Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
            Err(e) => return Err(e),
        };
        missing.extend(REQUIRED_APIS.iter().filter(|a| {
            a.group == group && a.version == version && !served.iter().any(|s| s == a.plural)
        }));
    }
    Ok(missing)
}
