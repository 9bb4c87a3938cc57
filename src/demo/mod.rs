//! `fluxgate demo`: the whole system on an embedded simulated cluster — kubesim, simulated
//! Flux, CSI snapshots and workloads, a local Git repository — running an upgrade and then
//! an upgrade to a version that fails, which rolls back (data and Git) on its own; every
//! phase is printed as it happens.

pub mod world;

use crate::api::conditions::{READY, find_condition};
use crate::api::{Phase, RequestStatus, RollbackRequest, UpgradeRequest};
use anyhow::Context as _;
use kube::Api;
use std::time::{Duration, Instant};
use world::DemoWorld;

/// Runs the demo (the arguments are [`crate::cli::DemoArgs`]).
pub async fn run(args: crate::cli::DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "Fluxgate demo: a simulated cluster (kubesim) with Flux, a CSI snapshotter and a local Git repository."
    );
    println!(
        "Deploying app `db`: a HelmRelease whose chart v1.4.0 comes from an OCIRepository, a StatefulSet with 2 volumes…"
    );
    let world = DemoWorld::start(
        "v1.4.0",
        serde_json::json!({"health": {"timeout": "8s", "stabilization": "1s"}}),
    )
    .await?;
    println!(
        "  running after {:.1}s; ManagedApp `db` watches it.\n",
        started.elapsed().as_secs_f64()
    );

    println!("1) Upgrade to v1.5.0 (UpgradeRequest db-1-5-0)");
    world.upgrade("db-1-5-0", "v1.5.0").await?;
    let first = follow(&world, "db-1-5-0", None).await?;
    report(&world, &first).await?;

    println!(
        "\n2) Upgrade to v2.0.0, a version whose pods never become ready (UpgradeRequest db-2-0-0)"
    );
    world.world.failures.fail_chart_version("v2.0.0");
    world.world.failures.fail_chart_version("2.0.0");
    world.upgrade("db-2-0-0", "v2.0.0").await?;
    let second = follow(&world, "db-2-0-0", Some("db-2-0-0-rollback")).await?;
    report(&world, &second).await?;

    // The ManagedApp reads the app's health again once the rollback released it.
    let app = world::wait_until(
        "the ManagedApp to read the app's health again",
        Duration::from_secs(30),
        async || {
            let status = world.app().await.ok()?.status?;
            let ready = find_condition(&status.conditions, READY)?;
            (ready.reason != "OperationInProgress").then_some(status)
        },
    )
    .await?;
    println!("\nSummary");
    println!(
        "  versions in Git now: {}",
        crate::api::versions_summary(&app.current_versions)
    );
    for failed in &app.failed_versions {
        println!(
            "  never again without force: {} {} (rolled back from {})",
            failed.name, failed.version, failed.upgrade_request
        );
    }
    if let Some(ready) = find_condition(&app.conditions, READY) {
        println!(
            "  ManagedApp db: Ready={} ({})",
            ready.status, ready.message
        );
    }
    let commits = world.git.log()?;
    println!("  commits on the branch: {} (newest first)", commits.len());
    for commit in &commits {
        println!(
            "    {} {}",
            &commit.sha[..12],
            commit.message.lines().next().unwrap_or_default()
        );
    }
    println!("  total time: {:.1}s", started.elapsed().as_secs_f64());
    if args.keep {
        println!(
            "\nThe simulated cluster keeps running, Fluxgate with it. Explore it with:\n  export KUBECONFIG={}\n  kubectl get ma,ur,rr -A\n  kubectl get ur -n apps -w     # in another terminal, then:\n  kubectl -n apps apply -f - <<<'{{\"apiVersion\":\"fluxgate.dev/v1alpha1\",\"kind\":\"UpgradeRequest\",\"metadata\":{{\"name\":\"db-1-6-0\"}},\"spec\":{{\"managedApp\":\"db\",\"version\":\"v1.6.0\"}}}}'\nStop with Ctrl-C.",
            world.kubeconfig_path().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    world.stop().await;
    Ok(())
}

/// Prints each phase of an upgrade (and of its rollback, if one appears) as it happens, and
/// returns the finished upgrade.
async fn follow(
    world: &DemoWorld,
    upgrade: &str,
    rollback: Option<&str>,
) -> anyhow::Result<UpgradeRequest> {
    let upgrades = Api::<UpgradeRequest>::namespaced(world.client.clone(), "apps");
    let rollbacks = Api::<RollbackRequest>::namespaced(world.client.clone(), "apps");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let current = upgrades
            .get(upgrade)
            .await
            .with_context(|| format!("reading UpgradeRequest apps/{upgrade}"))?;
        let child = match rollback {
            Some(name) => rollbacks
                .get_opt(name)
                .await
                .with_context(|| format!("reading RollbackRequest apps/{name}"))?
                .and_then(|c| c.status.map(|status| (name, status))),
            None => None,
        };
        let finished = current
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_terminal);
        // The upgrade ends after its rollback: its last line comes last.
        if finished && let Some((name, status)) = &child {
            print_new(&mut seen, name, status, started);
        }
        if let Some(status) = &current.status {
            print_new(&mut seen, upgrade, status, started);
        }
        if !finished && let Some((name, status)) = &child {
            print_new(&mut seen, name, status, started);
        }
        if finished {
            return Ok(current);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{upgrade} did not finish within 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints what changed in a request's story since the last look: each new phase, then every
/// new message under the phase it belongs to (a phase's closing message stays with it, so
/// "committed …" reads under Commit, not under the Reconcile that follows).
fn print_new(seen: &mut Vec<String>, name: &str, status: &RequestStatus, started: Instant) {
    let now = started.elapsed().as_secs_f64();
    for (index, record) in status.phases.iter().enumerate() {
        let header = format!("{name}#{index}");
        if !seen.contains(&header) {
            seen.push(header);
            println!("   +{now:5.1}s  {name:<18} {}", record.name);
        }
        // While an upgrade rolls back, its messages only repeat the rollback's phase, whose
        // own lines are printed: show how RollingBack ended, not its echo.
        if record.name == Phase::RollingBack && record.completed_at.is_none() {
            continue;
        }
        let Some(message) = record.message.as_deref().filter(|m| !m.is_empty()) else {
            continue;
        };
        let said = format!("{name}#{index}: {message}");
        if !seen.contains(&said) {
            seen.push(said);
            println!("   +{now:5.1}s  {name:<18}   {message}");
        }
    }
}

/// Says how an upgrade ended: its commit, its snapshots, and for a rollback whether every
/// volume holds its snapshot's content again.
async fn report(world: &DemoWorld, upgrade: &UpgradeRequest) -> anyhow::Result<()> {
    let status = upgrade.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("unknown".to_owned(), |p| p.to_string());
    println!("   => {phase}");
    if let Some(commit) = &status.commit {
        println!(
            "      committed {} \"{}\"",
            &commit.sha[..12.min(commit.sha.len())],
            commit.message
        );
    }
    for snapshot in &status.snapshots {
        println!(
            "      snapshot {} of PVC {} (ready: {})",
            snapshot.name, snapshot.pvc, snapshot.ready_to_use
        );
    }
    if let Some(failure) = &status.failure {
        println!(
            "      failed in {}: {} — {}",
            failure.phase, failure.reason, failure.message
        );
    }
    if status.phase == Some(Phase::RolledBack) {
        for snapshot in &status.snapshots {
            let restored =
                sim::volumes::content_token(&world.client, "apps", &snapshot.pvc).await?;
            let taken = sim::volumes::snapshot_token(&world.client, "apps", &snapshot.name).await?;
            let verdict = if restored == taken {
                "restored from its snapshot"
            } else {
                "NOT the snapshot's content"
            };
            println!(
                "      PVC {}: {verdict} (content {})",
                snapshot.pvc,
                restored.unwrap_or_default()
            );
        }
    }
    Ok(())
}
