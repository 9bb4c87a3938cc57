//! Story (a) against a real cluster: with `FLUXGATE_E2E_KUBECONFIG` set, Fluxgate's
//! controllers run in-process against that cluster (kind + Flux + csi-hostpath + a Git server,
//! set up as the README's "Running the stories on a real cluster" says), an UpgradeRequest
//! moves the prepared ManagedApp to `FLUXGATE_E2E_TARGET`, and the test checks what story (a)
//! checks on kubesim: success, our commit, ready snapshots, Flux resumed, the app updated.
//! Without the variable it prints that it was skipped — it never passes silently. The same
//! story code also runs here against kubesim through its kubeconfig, so it is known to work.

use e2e::given::{app, upgrade};
use fluxgate::api::{ManagedApp, Phase, UpgradeRequest};
use fluxgate::cluster::flux::ops::{get, is_suspended};
use fluxgate::controller::Settings;
use fluxgate::demo::world::spawn_operator;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_on_a_real_cluster_an_app_is_upgraded_end_to_end() {
    let Some(kubeconfig) = std::env::var_os("FLUXGATE_E2E_KUBECONFIG") else {
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        let _ = std::io::stderr().write_all(
            b"SKIPPED: FLUXGATE_E2E_KUBECONFIG not set; real-cluster stories did not run\n",
        );
        return;
    };
    let target = std::env::var("FLUXGATE_E2E_TARGET").expect(
        "FLUXGATE_E2E_TARGET must name the version to upgrade to (a chart version or tag the app does not run yet)",
    );
    let timeout = Duration::from_secs(
        setting("FLUXGATE_E2E_TIMEOUT_SECONDS", "900")
            .parse()
            .expect("FLUXGATE_E2E_TIMEOUT_SECONDS is a number of seconds"),
    );
    upgrade_on(
        Path::new(&kubeconfig),
        &setting("FLUXGATE_E2E_NAMESPACE", "apps"),
        &setting("FLUXGATE_E2E_APP", "db"),
        &target,
        timeout,
    )
    .await;
}

/// The real-cluster story's own code, run here against kubesim through its kubeconfig (the
/// simulated world's operator stopped, so the story's in-process operator does the work):
/// whatever `FLUXGATE_E2E_KUBECONFIG` is, the story itself is known to work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cluster_story_runs_against_any_kubeconfig() {
    let mut story = app().running_at("v1.4.0").await;
    story.kill_operator().await;
    upgrade_on(
        &story.kubeconfig_path(),
        "apps",
        "db",
        "v1.5.0",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        story.git.log().unwrap().len(),
        2,
        "one commit, by the story's operator"
    );
}

/// Story (a) on the cluster of `kubeconfig`: Fluxgate runs in-process against it, upgrades
/// ManagedApp `namespace/app_name` to `target` and the outcome is checked.
async fn upgrade_on(
    kubeconfig: &Path,
    namespace: &str,
    app_name: &str,
    target: &str,
    timeout: Duration,
) {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("FLUXGATE_E2E_KUBECONFIG is a kubeconfig file"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a usable context in FLUXGATE_E2E_KUBECONFIG");
    let client = kube::Client::try_from(fluxgate::cluster::connect::identified(config)).unwrap();
    let apps = Api::<ManagedApp>::namespaced(client.clone(), namespace);
    let app = apps.get(app_name).await.unwrap_or_else(|e| {
        panic!("ManagedApp {namespace}/{app_name} must exist (see the README): {e}")
    });

    let cache = tempfile::tempdir().unwrap();
    let (stop, operator) = spawn_operator(
        client.clone(),
        Settings::new(cache.path()),
        fluxgate::telemetry::metrics::Metrics::new(),
    );

    let name = format!("e2e-{}", jiff_seconds());
    upgrade(&name)
        .of_app(app_name)
        .to_version(target)
        .in_namespace(namespace)
        .create_with(&client)
        .await
        .unwrap();
    let upgrades = Api::<UpgradeRequest>::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    let done = loop {
        let current = upgrades.get(&name).await.unwrap();
        let phase = current.status.as_ref().and_then(|s| s.phase);
        if phase.is_some_and(Phase::is_terminal) {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not finish within {timeout:?}: {:#?}",
            current.status
        );
        // Once a second, not wait_until's ten times: this may be a real, shared API server,
        // and an upgrade there takes minutes.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let commit = status.commit.clone().expect("the upgrade committed");
    assert_eq!(commit.sha.len(), 40, "{commit:?}");
    assert!(
        status.snapshots.iter().all(|s| s.ready_to_use),
        "{:?}",
        status.snapshots
    );
    let plan = status.plan.clone().unwrap();
    for object in &plan.flux_objects {
        let live = get(
            &fluxgate::cluster::cache::Cluster::direct(client.clone()),
            object.kind,
            &object.namespace,
            &object.name,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            is_suspended(&live),
            object.was_suspended,
            "{:?} {}/{} is back to its prior suspend",
            object.kind,
            object.namespace,
            object.name
        );
    }
    let app_status = apps.get(app_name).await.unwrap().status.unwrap();
    assert!(
        app_status.current_versions.values().any(|v| v == target),
        "currentVersions {:?} holds {target} (was {:?})",
        app_status.current_versions,
        app.status.map(|s| s.current_versions)
    );
    assert_eq!(app_status.active_operation, None);
    println!(
        "{name} succeeded with commit {} and {} snapshots",
        commit.sha,
        status.snapshots.len()
    );
    let _ = stop.send(());
    let _ = operator.await;
}

/// Seconds since the epoch: a request name unique per run.
fn jiff_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
