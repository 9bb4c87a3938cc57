//! Talking to the cluster for the people's commands: the connection flags, a first check
//! that says plainly when the cluster cannot be reached or Fluxgate is not installed, and
//! lookups whose errors say what to do next.

use crate::api::ManagedApp;
use crate::cluster::connect;
use anyhow::anyhow;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the cluster (the same flags as kubectl).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file to use; by default KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// A connection checked to serve Fluxgate's API.
pub struct Session {
    /// The client.
    pub client: Client,
    /// The API server's URL, for messages.
    pub url: String,
}

impl Session {
    /// `namespace`, else the kubeconfig context's namespace.
    pub fn namespace(&self, namespace: Option<&str>) -> String {
        namespace.map_or_else(|| self.client.default_namespace().to_owned(), str::to_owned)
    }

    /// Turns an API error of `what` into one that says what to check.
    pub fn error(&self, what: &str, error: kube::Error) -> anyhow::Error {
        explain(&self.url, what, error)
    }
}

/// How long the first request may take before the cluster counts as unreachable.
const REACH_TIMEOUT: Duration = Duration::from_secs(15);

/// The message for an error talking to the API server at `url` while doing `what`.
pub fn explain(url: &str, what: &str, error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) if status.code == 401 => anyhow!(
            "{what}: the API server at {url} does not accept your credentials ({}); log in again or pick another --context",
            status.message
        ),
        kube::Error::Api(status) if status.code == 403 => anyhow!(
            "{what}: not allowed ({}); ask for RBAC access to fluxgate.dev resources",
            status.message
        ),
        kube::Error::Api(status) => anyhow!("{what}: {} ({})", status.message, status.reason),
        other => anyhow!(
            "{what}: cannot reach the Kubernetes API server at {url}: {other}; check that the cluster is running and that your kubeconfig (--kubeconfig, --context) points at it"
        ),
    }
}

/// Connects and checks that the cluster serves Fluxgate's API.
pub async fn open(args: &ClusterArgs) -> anyhow::Result<Session> {
    let connection = connect::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let session = Session {
        client: connection.client,
        url: connection.url,
    };
    let group_version = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
    let served = tokio::time::timeout(
        REACH_TIMEOUT,
        session.client.list_api_group_resources(&group_version),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "the Kubernetes API server at {} did not answer within {}s; check that the cluster is running and that your kubeconfig (--kubeconfig, --context) points at it",
            session.url,
            REACH_TIMEOUT.as_secs()
        )
    })?;
    let resources: Vec<String> = match served {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(e) => return Err(session.error("checking for Fluxgate's API", e)),
    };
    let missing: Vec<&str> = ["managedapps", "upgraderequests", "rollbackrequests"]
        .into_iter()
        .filter(|plural| !resources.iter().any(|r| r == plural))
        .collect();
    if !missing.is_empty() {
        return Err(anyhow!(
            "Fluxgate is not installed in the cluster at {}: it does not serve {} ({group_version}). \
             Install the Helm chart (`helm install fluxgate charts/fluxgate --namespace fluxgate-system --create-namespace`), \
             which installs the CRDs and runs the operator",
            session.url,
            missing.join(", ")
        ));
    }
    Ok(session)
}

/// The ManagedApp `name` in `namespace`; when absent, the error says where it does exist
/// (if anywhere) and how to list the apps.
pub async fn find_app(
    session: &Session,
    namespace: &str,
    name: &str,
) -> anyhow::Result<ManagedApp> {
    let api = Api::<ManagedApp>::namespaced(session.client.clone(), namespace);
    let what = format!("reading ManagedApp {namespace}/{name}");
    if let Some(app) = api
        .get_opt(name)
        .await
        .map_err(|e| session.error(&what, e))?
    {
        return Ok(app);
    }
    let elsewhere: Vec<String> = Api::<ManagedApp>::all(session.client.clone())
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .map(|list| {
            list.items
                .iter()
                .filter(|a| a.name_any() == name)
                .filter_map(|a| a.namespace())
                .collect()
        })
        .unwrap_or_default();
    let hint = match elsewhere.as_slice() {
        [] => {
            "list the apps with `fluxgate status -A` (or `kubectl get managedapps -A`)".to_owned()
        }
        [only] => format!("it exists in namespace {only}: pass `-n {only}`"),
        many => format!(
            "it exists in namespaces {}: pass one with `-n`",
            many.join(", ")
        ),
    };
    Err(anyhow!(
        "no ManagedApp named {name:?} in namespace {namespace:?}; {hint}"
    ))
}
