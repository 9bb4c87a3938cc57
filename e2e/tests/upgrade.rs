//! Story (a): a HelmRelease app whose chart comes from an OCIRepository (`chartRef`), with a
//! StatefulSet and two PVCs, is upgraded through the real controller loop on kubesim and the
//! simulated world: one commit with the trailers and a byte-minimal diff, ready snapshots,
//! Flux back to its prior state, replicas restored, the ManagedApp updated.

use fluxgate::api::{ManagedApp, Phase, UpgradeRequest};
use fluxgate::controller::{Context, Settings};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, PostParams};
use kubesim::KubeSim;
use serde_json::json;
use sim::git_server::GitServer;
use sim::world::{World, WorldOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLEET_URL: &str = "https://git.sim.test/fleet.git";

fn release(tag: &str) -> String {
    format!(
        "# The database of the apps namespace.
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata:
  name: db
  namespace: apps
spec:
  interval: 10m
  url: oci://ghcr.io/example/charts/db
  ref:
    tag: {tag} # pinned by Fluxgate
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: db
  namespace: apps
spec:
  interval: 10m
  chartRef:
    kind: OCIRepository
    name: db
  values:
    replicaCount: 2
    persistence:
    - name: data
      size: 1Gi
"
    )
}

async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_app_is_upgraded_end_to_end() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,fluxgate=info")
        .with_test_writer()
        .try_init();
    let kube = KubeSim::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    kube.load_yaml(root.join("crds")).unwrap();
    kube.load_yaml(root.join("../shared/external-crds"))
        .unwrap();
    let client = kube.client();
    let git = GitServer::builder()
        .file(
            "clusters/prod/kustomization.yaml",
            "resources:\n- ns.yaml\n- db.yaml\n",
        )
        .file(
            "clusters/prod/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
        )
        .file("clusters/prod/db.yaml", release("v1.4.0"))
        .start()
        .unwrap();
    let mut options = WorldOptions::fast();
    options
        .git_url_rewrites
        .push((FLEET_URL.into(), git.file_url()));
    let _world = World::start(client.clone(), options).await.unwrap();
    sim::seed::storage(&client).await.unwrap();
    sim::seed::flux_system(&client, FLEET_URL, "main", "./clusters/prod")
        .await
        .unwrap();

    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "apps");
    wait_until("the app to run", Duration::from_secs(30), async || {
        let sts = statefulsets.get_opt("db").await.ok()??;
        (sts.status?.ready_replicas == Some(2)).then_some(())
    })
    .await;

    let app: ManagedApp = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
        "metadata": {"name": "db", "namespace": "apps"},
        "spec": {"source": {"kind": "HelmRelease", "name": "db"},
                 "git": {"file": "clusters/prod/db.yaml", "url": git.file_url(), "branch": "main"},
                 "health": {"stabilization": "1s"}}
    }))
    .unwrap();
    Api::<ManagedApp>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &app)
        .await
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let context = Arc::new(Context {
        client: client.clone(),
        settings: Settings::new(cache.path()),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(fluxgate::controller::requests::run(context, async {
        let _ = stopped.await;
    }));

    let upgrade: UpgradeRequest = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": "db-1-5-0", "namespace": "apps"},
        "spec": {"managedApp": "db", "version": "v1.5.0"}
    }))
    .unwrap();
    let upgrades = Api::<UpgradeRequest>::namespaced(client.clone(), "apps");
    upgrades
        .create(&PostParams::default(), &upgrade)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let current = upgrades.get("db-1-5-0").await.unwrap();
        if current
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_terminal)
        {
            break current;
        }
        let shown = serde_json::to_string_pretty(&current.status).unwrap();
        assert!(
            Instant::now() < deadline,
            "the upgrade did not finish: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "status: {}",
        serde_json::to_string_pretty(&status).unwrap()
    );

    // Git: exactly one new commit, ours, with the trailers and a one-value diff.
    let log = git.log().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    let ours = &log[0];
    assert!(
        ours.message.contains("Fluxgate-Request: apps/db-1-5-0"),
        "{}",
        ours.message
    );
    assert!(ours.message.contains(&format!(
        "Fluxgate-Request-UID: {}",
        done.metadata.uid.clone().unwrap()
    )));
    assert_eq!(
        git.read_file("clusters/prod/db.yaml").unwrap(),
        Some(release("v1.5.0"))
    );
    assert_eq!(
        status.commit.as_ref().map(|c| c.sha.as_str()),
        Some(ours.sha.as_str())
    );

    // Snapshots of both volumes, ready; the audit trail tells the story.
    assert_eq!(status.snapshots.len(), 2);
    assert!(
        status.snapshots.iter().all(|s| s.ready_to_use),
        "{:?}",
        status.snapshots
    );
    let phases: Vec<Phase> = status.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        phases,
        vec![
            Phase::Admit,
            Phase::Suspend,
            Phase::Quiesce,
            Phase::Snapshot,
            Phase::Commit,
            Phase::Reconcile,
            Phase::Verify
        ]
    );

    // Flux resumed, replicas back, the app records the new version and is free.
    let release_now = fluxgate::cluster::flux::ops::get(
        &client,
        fluxgate::api::FluxObjectKind::HelmRelease,
        "apps",
        "db",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!fluxgate::cluster::flux::ops::is_suspended(&release_now));
    let sts = statefulsets.get("db").await.unwrap();
    assert_eq!(sts.spec.replicas, Some(2));
    let app = Api::<ManagedApp>::namespaced(client.clone(), "apps")
        .get("db")
        .await
        .unwrap();
    let app_status = app.status.unwrap();
    assert_eq!(
        app_status.current_versions.get("chart").map(String::as_str),
        Some("v1.5.0")
    );
    assert_eq!(app_status.active_operation, None);
    assert_eq!(
        app_status.last_operation.map(|o| o.result),
        Some("Succeeded".to_owned())
    );

    let _ = stop.send(());
    operator.await.unwrap();
}
