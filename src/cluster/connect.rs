//! Connecting to the cluster: a kube client from a kubeconfig file, the usual kubeconfig
//! search, or the in-cluster service account — with errors that say what to check.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::Path;

/// A client and the API server URL it talks to (for messages).
pub struct Connection {
    /// The client.
    pub client: Client,
    /// The API server's URL, as configured.
    pub url: String,
}

/// Builds a client from `kubeconfig` (with an optional `context`), or from the usual
/// places (`KUBECONFIG`, `~/.kube/config`, in-cluster) when no file is given.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<Connection> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            // kube's own message quotes the path as a debug string; say it plainly.
            if let Err(e) = std::fs::metadata(path) {
                anyhow::bail!(
                    "cannot read kubeconfig {}: {e}; pass an existing file to --kubeconfig",
                    path.display()
                );
            }
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {} is not usable: {e}", path.display()))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot load kubeconfig context `{}`: {e}",
                context.unwrap_or_default()
            )
        })?,
        None => Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot find a cluster to talk to: {e}. Pass --kubeconfig, set KUBECONFIG, \
                 or run inside a cluster with a service account"
            )
        })?,
    };
    let url = config.cluster_url.to_string();
    let client = Client::try_from(identified(config))
        .map_err(|e| anyhow::anyhow!("cannot create a client for {url}: {e}"))?;
    Ok(Connection { client, url })
}

/// The User-Agent of every request Fluxgate's operator sends: audit logs (and kubesim's
/// request log in the tests) tell its requests apart from everyone else's.
pub const USER_AGENT: &str = concat!("fluxgate/", env!("CARGO_PKG_VERSION"));

/// `config` with Fluxgate's User-Agent header.
pub fn identified(mut config: Config) -> Config {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    config
}
