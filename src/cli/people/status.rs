//! `fluxgate status [app]`: reads the ManagedApps, the requests holding or waiting for them
//! and the live `spec.suspend` of their Flux objects, and prints the table (or one app in
//! detail).

use super::cluster::{ClusterArgs, Session, find_app, open};
use super::view::status::{ActiveRequest, AppView, FluxObjectState, render_app, render_table};
use crate::api::{ManagedApp, OperationKind, Phase, RollbackRequest, UpgradeRequest};
use crate::cluster::flux::ops::{get, is_suspended, suspend_chain};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

/// Arguments of `fluxgate status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Show this app in detail; without it, a table of the apps.
    pub app: Option<String>,
    /// Namespace; by default the kubeconfig context's.
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// The apps of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The live state of an app's Flux objects: its suspend chain, plus any object the active
/// request planned that the chain no longer names.
async fn flux_objects(
    session: &Session,
    app: &ManagedApp,
    active: Option<&ActiveRequest>,
) -> Result<Vec<FluxObjectState>, String> {
    let namespace = app.namespace().unwrap_or_default();
    let chain = suspend_chain(
        &crate::cluster::cache::Cluster::direct(session.client.clone()),
        &namespace,
        &app.spec.source,
        &app.spec.suspend,
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut objects: Vec<FluxObjectState> = chain
        .into_iter()
        .map(|o| FluxObjectState {
            kind: o.kind,
            namespace: o.namespace,
            name: o.name,
            suspended: o.was_suspended,
        })
        .collect();
    let planned = active
        .and_then(|a| a.status.as_ref())
        .and_then(|s| s.plan.as_ref())
        .map(|p| p.flux_objects.clone())
        .unwrap_or_default();
    for object in planned {
        let known = objects.iter().any(|o| {
            o.kind == object.kind && o.namespace == object.namespace && o.name == object.name
        });
        if known {
            continue;
        }
        if let Some(live) = get(
            &crate::cluster::cache::Cluster::direct(session.client.clone()),
            object.kind,
            &object.namespace,
            &object.name,
        )
        .await
        .map_err(|e| e.to_string())?
        {
            objects.push(FluxObjectState {
                kind: object.kind,
                namespace: object.namespace,
                name: object.name,
                suspended: is_suspended(&live),
            });
        }
    }
    Ok(objects)
}

/// Everything `status` shows about `app`, given the requests of its namespace.
async fn view(
    session: &Session,
    app: ManagedApp,
    upgrades: &[UpgradeRequest],
    rollbacks: &[RollbackRequest],
) -> AppView {
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let active = app
        .status
        .as_ref()
        .and_then(|s| s.active_operation.as_ref())
        .map(|op| {
            let status = match op.kind {
                OperationKind::UpgradeRequest => upgrades
                    .iter()
                    .find(|u| {
                        u.name_any() == op.name
                            && u.namespace().as_deref() == Some(namespace.as_str())
                    })
                    .map(|u| u.status.clone().unwrap_or_default()),
                OperationKind::RollbackRequest => rollbacks
                    .iter()
                    .find(|r| {
                        r.name_any() == op.name
                            && r.namespace().as_deref() == Some(namespace.as_str())
                    })
                    .map(|r| r.status.clone().unwrap_or_default()),
            };
            ActiveRequest {
                kind: op.kind,
                name: op.name.clone(),
                status,
            }
        });
    let mut queued: Vec<&UpgradeRequest> = upgrades
        .iter()
        .filter(|u| {
            u.namespace().as_deref() == Some(namespace.as_str())
                && u.spec.managed_app == name
                && u.status.as_ref().and_then(|s| s.phase) == Some(Phase::Queued)
        })
        .collect();
    queued.sort_by_key(|u| u.creation_timestamp().map(|t| t.0));
    let queued = queued.into_iter().map(ResourceExt::name_any).collect();
    let flux = flux_objects(session, &app, active.as_ref()).await;
    AppView {
        app,
        active,
        queued,
        flux,
    }
}

/// Runs `fluxgate status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let session = open(&args.cluster).await?;
    let namespace = session.namespace(args.namespace.as_deref());
    let (apps_api, upgrades_api, rollbacks_api) = if args.all_namespaces && args.app.is_none() {
        (
            Api::<ManagedApp>::all(session.client.clone()),
            Api::<UpgradeRequest>::all(session.client.clone()),
            Api::<RollbackRequest>::all(session.client.clone()),
        )
    } else {
        (
            Api::<ManagedApp>::namespaced(session.client.clone(), &namespace),
            Api::<UpgradeRequest>::namespaced(session.client.clone(), &namespace),
            Api::<RollbackRequest>::namespaced(session.client.clone(), &namespace),
        )
    };
    let apps = match &args.app {
        Some(name) => vec![find_app(&session, &namespace, name).await?],
        None => {
            apps_api
                .list(&ListParams::default())
                .await
                .map_err(|e| session.error("listing ManagedApps", e))?
                .items
        }
    };
    let upgrades = upgrades_api
        .list(&ListParams::default())
        .await
        .map_err(|e| session.error("listing UpgradeRequests", e))?
        .items;
    let rollbacks = rollbacks_api
        .list(&ListParams::default())
        .await
        .map_err(|e| session.error("listing RollbackRequests", e))?
        .items;
    if apps.is_empty() {
        if args.all_namespaces {
            super::say("No ManagedApps in any namespace.")?;
        } else {
            super::say(&format!(
                "No ManagedApps in namespace {namespace} (use -A for every namespace, -n for another)."
            ))?;
        }
        return Ok(());
    }
    let mut views = Vec::new();
    for app in apps {
        views.push(view(&session, app, &upgrades, &rollbacks).await);
    }
    views.sort_by_key(|v| (v.app.namespace(), v.app.name_any()));
    if args.app.is_some() {
        super::say_text(&render_app(&views[0], jiff::Timestamp::now()))?;
    } else {
        super::say_text(&render_table(&views, args.all_namespaces))?;
    }
    Ok(())
}
