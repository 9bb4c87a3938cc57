//! `fluxgate rollback <upgrade>`: checks that the upgrade has something to undo, creates the
//! RollbackRequest and, with `--wait`, follows it to the end.

use super::cluster::{ClusterArgs, open};
use super::follow::{WaitArgs, follow};
use super::view::outcome::{Ended, conclusion};
use crate::api::{Phase, RollbackRequest, RollbackRequestSpec, UpgradeRequest};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::Instant;

/// Arguments of `fluxgate rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The UpgradeRequest to undo.
    pub upgrade: String,
    /// Namespace of the upgrade; by default the kubeconfig context's.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Name of the RollbackRequest; by default `<upgrade>-rollback-<random>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Check everything and run a suspend → quiesce → resume cycle, but never restore,
    /// commit or snapshot.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not snapshot the current (failed) state before overwriting it.
    #[arg(long)]
    pub no_safety_snapshot: bool,
    /// Roll back even when the upgrade is no longer the app's last change (Git or a later
    /// upgrade moved on): the volumes go back to their state before it and Git to its
    /// previous versions, overwriting everything since.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub follow: WaitArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Why `upgrade` cannot be rolled back (the operator would refuse it too), or None.
/// `running` names a rollback of it that has not ended.
pub fn refusal(upgrade: &UpgradeRequest, running: Option<&str>) -> Option<String> {
    let name = upgrade.name_any();
    let status = upgrade.status.clone().unwrap_or_default();
    if upgrade.spec.dry_run {
        return Some(format!(
            "UpgradeRequest {name} is a dry run: it never changed anything, so there is nothing to roll back"
        ));
    }
    if let Some(rollback) = running {
        return Some(format!(
            "RollbackRequest {rollback} is already undoing {name}; follow it with `fluxgate history {}`",
            upgrade.spec.managed_app
        ));
    }
    if status.phase == Some(Phase::RolledBack) {
        return Some(format!(
            "UpgradeRequest {name} was already rolled back{}",
            status
                .rollback_ref
                .as_ref()
                .map_or(String::new(), |r| format!(" by {}", r.name))
        ));
    }
    if status.commit.is_none() {
        return Some(format!(
            "UpgradeRequest {name} never committed a change (phase {}), so there is nothing to roll back",
            super::view::phase_name(status.phase)
        ));
    }
    None
}

/// Runs `fluxgate rollback`.
pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let session = open(&args.cluster).await?;
    let namespace = session.namespace(args.namespace.as_deref());
    let upgrades = Api::<UpgradeRequest>::namespaced(session.client.clone(), &namespace);
    let what = format!("reading UpgradeRequest {namespace}/{}", args.upgrade);
    let Some(upgrade) = upgrades
        .get_opt(&args.upgrade)
        .await
        .map_err(|e| session.error(&what, e))?
    else {
        anyhow::bail!(
            "no UpgradeRequest named {:?} in namespace {namespace:?}; list an app's upgrades with `fluxgate history <app> -n {namespace}`",
            args.upgrade
        );
    };
    let rollbacks = Api::<RollbackRequest>::namespaced(session.client.clone(), &namespace);
    let existing = rollbacks
        .list(&Default::default())
        .await
        .map_err(|e| session.error("listing RollbackRequests", e))?;
    let running = existing.items.iter().find(|r| {
        r.spec.upgrade_request == args.upgrade
            && !r
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_terminal)
    });
    if let Some(why) = refusal(&upgrade, running.map(|r| r.name_any()).as_deref()) {
        anyhow::bail!(why);
    }
    let app = upgrade.spec.managed_app.clone();
    let (mut labels, mut annotations) = (BTreeMap::new(), BTreeMap::new());
    crate::cluster::labels::set_name(
        &mut labels,
        &mut annotations,
        crate::cluster::snapshots::APP_LABEL,
        &app,
    );
    let mut prefix = format!("{}-rollback", args.upgrade);
    prefix.truncate(240);
    let request = RollbackRequest {
        metadata: ObjectMeta {
            name: args.name.clone(),
            generate_name: args.name.is_none().then(|| format!("{prefix}-")),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: RollbackRequestSpec {
            upgrade_request: args.upgrade.clone(),
            safety_snapshot: !args.no_safety_snapshot,
            dry_run: args.dry_run,
            force: args.force,
        },
        status: None,
    };
    let created = rollbacks
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 409 => anyhow::anyhow!(
                "a RollbackRequest named {:?} already exists in namespace {namespace}: pick another --name",
                args.name.clone().unwrap_or_default()
            ),
            other => session.error("creating the RollbackRequest", other),
        })?;
    let started = Instant::now();
    let name = created.name_any();
    super::say(&format!(
        "RollbackRequest {namespace}/{name} created: undoing {} of {app}{}",
        args.upgrade,
        if args.dry_run { " (dry run)" } else { "" }
    ))?;
    if !args.follow.wait {
        super::say(&format!(
            "It runs in the operator. Watch it with `fluxgate status {app} -n {namespace}`, or follow it next time with --wait."
        ))?;
        return Ok(());
    }
    let options = args.follow.options(started);
    let ended: RollbackRequest = follow(&session, &namespace, &name, "rollback", &options).await?;
    let status = ended.status.clone().unwrap_or_default();
    let text = conclusion(
        Ended::Rollback {
            upgrade: &args.upgrade,
        },
        &namespace,
        &name,
        &status,
        started.elapsed(),
    )?;
    super::say(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommitRecord, RequestStatus};

    fn upgrade(dry_run: bool, status: RequestStatus) -> UpgradeRequest {
        let mut u: UpgradeRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": "db-2", "namespace": "apps"},
            "spec": {"managedApp": "db", "version": "v2.0.0", "dryRun": dry_run}
        }))
        .unwrap();
        u.status = Some(status);
        u
    }

    fn committed(phase: Phase) -> RequestStatus {
        RequestStatus {
            phase: Some(phase),
            commit: Some(CommitRecord {
                sha: "abc".into(),
                message: "m".into(),
                url: None,
            }),
            ..RequestStatus::default()
        }
    }

    #[test]
    fn only_a_committed_real_upgrade_not_yet_undone_can_be_rolled_back() {
        assert_eq!(
            refusal(&upgrade(false, committed(Phase::Failed)), None),
            None
        );
        assert_eq!(
            refusal(&upgrade(false, committed(Phase::Succeeded)), None),
            None
        );
        let dry = refusal(&upgrade(true, committed(Phase::Succeeded)), None).unwrap();
        assert!(dry.contains("dry run"), "{dry}");
        let never = refusal(&upgrade(false, RequestStatus::default()), None).unwrap();
        assert!(
            never.contains("never committed a change (phase Pending)"),
            "{never}"
        );
        let done = refusal(&upgrade(false, committed(Phase::RolledBack)), None).unwrap();
        assert!(done.contains("already rolled back"), "{done}");
        let busy = refusal(
            &upgrade(false, committed(Phase::Failed)),
            Some("db-2-rollback"),
        )
        .unwrap();
        assert!(
            busy.contains("db-2-rollback is already undoing db-2"),
            "{busy}"
        );
    }
}
