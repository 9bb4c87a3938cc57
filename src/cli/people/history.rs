//! `fluxgate history <app>`: the app's UpgradeRequests (matched on `spec.managedApp`, since
//! hand-written ones carry no label) and the RollbackRequests that undo them (or carry the
//! app's label), oldest first.

use super::cluster::{ClusterArgs, find_app, open};
use super::view::history::{HistoryEntry, render};
use crate::api::{OperationKind, RollbackRequest, UpgradeRequest, versions_summary};
use crate::cluster::snapshots::APP_LABEL;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;

/// Arguments of `fluxgate history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The ManagedApp.
    pub app: String,
    /// Namespace of the app; by default the kubeconfig context's.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The history entries of `app` among the requests of its namespace.
pub fn entries(
    app: &str,
    upgrades: &[UpgradeRequest],
    rollbacks: &[RollbackRequest],
) -> Vec<HistoryEntry> {
    let created = |meta: &kube::api::ObjectMeta| {
        meta.creation_timestamp
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
    };
    let mine: Vec<&UpgradeRequest> = upgrades
        .iter()
        .filter(|u| u.spec.managed_app == app)
        .collect();
    let names: BTreeSet<String> = mine.iter().map(|u| u.name_any()).collect();
    let mut out: Vec<HistoryEntry> = mine
        .iter()
        .map(|u| HistoryEntry {
            kind: OperationKind::UpgradeRequest,
            name: u.name_any(),
            created: created(&u.metadata),
            dry_run: u.spec.dry_run,
            undoes: None,
            requested: u
                .spec
                .version
                .clone()
                .or_else(|| u.spec.target.as_ref().map(versions_summary)),
            status: u.status.clone(),
        })
        .collect();
    out.extend(
        rollbacks
            .iter()
            .filter(|r| {
                names.contains(&r.spec.upgrade_request)
                    || crate::cluster::labels::names(
                        r.metadata.labels.as_ref(),
                        r.metadata.annotations.as_ref(),
                        APP_LABEL,
                        app,
                    )
            })
            .map(|r| HistoryEntry {
                kind: OperationKind::RollbackRequest,
                name: r.name_any(),
                created: created(&r.metadata),
                dry_run: r.spec.dry_run,
                undoes: Some(r.spec.upgrade_request.clone()),
                requested: None,
                status: r.status.clone(),
            }),
    );
    out.sort_by(super::view::history::chronological);
    out
}

/// Runs `fluxgate history`.
pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let session = open(&args.cluster).await?;
    let namespace = session.namespace(args.namespace.as_deref());
    let app = find_app(&session, &namespace, &args.app).await?;
    let upgrades = Api::<UpgradeRequest>::namespaced(session.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| session.error("listing UpgradeRequests", e))?
        .items;
    let rollbacks = Api::<RollbackRequest>::namespaced(session.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| session.error("listing RollbackRequests", e))?
        .items;
    let list = entries(&app.name_any(), &upgrades, &rollbacks);
    super::say_text(&render(
        &app.name_any(),
        &namespace,
        &list,
        jiff::Timestamp::now(),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(name: &str, app: &str, created: &str) -> UpgradeRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": name, "namespace": "apps", "creationTimestamp": created},
            "spec": {"managedApp": app, "version": "v2"}
        }))
        .unwrap()
    }

    fn rollback(name: &str, upgrade: &str, labels: serde_json::Value) -> RollbackRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"name": name, "namespace": "apps", "labels": labels,
                         "creationTimestamp": "2026-01-01T00:00:09Z"},
            "spec": {"upgradeRequest": upgrade}
        }))
        .unwrap()
    }

    #[test]
    fn requests_are_matched_on_the_spec_not_a_label_and_sorted_by_creation() {
        let upgrades = vec![
            upgrade("late", "db", "2026-01-01T00:00:10Z"),
            upgrade("other-app", "gitea", "2026-01-01T00:00:00Z"),
            upgrade("early", "db", "2026-01-01T00:00:01Z"),
        ];
        let rollbacks = vec![
            rollback("early-rollback", "early", serde_json::json!({})),
            rollback(
                "gone-upgrade",
                "deleted",
                serde_json::json!({APP_LABEL: "db"}),
            ),
            rollback("not-ours", "other-app", serde_json::json!({})),
        ];
        let names: Vec<String> = entries("db", &upgrades, &rollbacks)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            vec!["early", "early-rollback", "gone-upgrade", "late"]
        );
    }

    #[test]
    fn a_long_app_name_is_matched_by_its_shortened_label_and_full_annotation() {
        use std::collections::BTreeMap;
        let app = "a".repeat(80);
        let (mut labels, mut annotations) = (BTreeMap::new(), BTreeMap::new());
        crate::cluster::labels::set_name(&mut labels, &mut annotations, APP_LABEL, &app);
        let mut ours = rollback("ours", "deleted", serde_json::json!(labels));
        ours.metadata.annotations = Some(annotations.clone());
        // Another app whose long name shortens to the same label value cannot be told
        // apart by the label; its annotation tells.
        let mut theirs = rollback("theirs", "deleted-too", serde_json::json!(labels));
        let mut other = annotations;
        other.insert(APP_LABEL.to_owned(), format!("{app}b"));
        theirs.metadata.annotations = Some(other);
        let names: Vec<String> = entries(&app, &[], &[ours, theirs])
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["ours"]);
    }
}
