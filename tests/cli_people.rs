//! The people's CLI, run as the real binary (and as `kubectl fluxgate`) against the
//! simulated world: upgrades followed live with their exit codes, the automatic rollback, a
//! manual rollback, status and history, and the clear errors (unknown app, failed version,
//! operator not running, Fluxgate not installed, cluster unreachable).

use fluxgate::api::{ManagedApp, UpgradeRequest};
use fluxgate::demo::world::{DemoWorld, Fleet};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Runs `program args… --kubeconfig kubeconfig` with a deadline.
async fn run_as(program: &Path, kubeconfig: &Path, args: &[&str], path: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("RUST_LOG", "off")
        .kill_on_drop(true);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within 180s", program.display()))
        .expect("the command runs")
}

async fn fluxgate(kubeconfig: &Path, args: &[&str]) -> Output {
    run_as(
        Path::new(env!("CARGO_BIN_EXE_fluxgate")),
        kubeconfig,
        args,
        None,
    )
    .await
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts the exit code and that `stdout` (or `stderr`) holds each expected part.
#[track_caller]
fn expect(output: &Output, code: i32, stdout_parts: &[&str], stderr_parts: &[&str]) {
    let (stdout, stderr) = text(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for part in stdout_parts {
        assert!(
            stdout.contains(part),
            "stdout lacks {part:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    for part in stderr_parts {
        assert!(
            stderr.contains(part),
            "stderr lacks {part:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

async fn upgrade_names(world: &DemoWorld) -> Vec<String> {
    Api::<UpgradeRequest>::namespaced(world.client.clone(), "apps")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|u| u.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_rollback_status_and_history_through_the_binary() {
    let world = DemoWorld::start(
        "v1.4.0",
        json!({"health": {"timeout": "8s", "stabilization": "1s"}}),
    )
    .await
    .unwrap();
    let kubeconfig = world.kubeconfig_path();
    let k = kubeconfig.as_path();

    // A successful upgrade, followed live: one line per phase, the snapshots, the commit.
    let up = fluxgate(
        k,
        &["upgrade", "db", "-n", "apps", "--to", "v1.5.0", "--wait"],
    )
    .await;
    expect(
        &up,
        0,
        &[
            "UpgradeRequest apps/db-v1-5-0-",
            "plan: v1.4.0 → v1.5.0, 2 volume(s)",
            "Admit",
            "Suspend",
            "Quiesce",
            "Snapshot",
            "is ready",
            "Commit",
            "committed ",
            "Reconcile",
            "Verify",
            "Succeeded",
            "phase times: ",
            "Upgraded db (v1.4.0 → v1.5.0) in ",
        ],
        &[],
    );
    let (stdout, _) = text(&up);
    let phase_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('+') && l.contains("upgrade  Commit"))
        .collect();
    assert_eq!(
        phase_lines.len(),
        1,
        "one line for the Commit phase: {stdout}"
    );

    // A version whose pods never become ready: the upgrade rolls back on its own; the CLI
    // follows into the rollback and exits 4 with the reason.
    world.world.failures.fail_chart_version("v2.0.0");
    let failing = fluxgate(
        k,
        &[
            "upgrade", "db", "-n", "apps", "--to", "v2.0.0", "--name", "db-2", "--wait",
        ],
    )
    .await;
    expect(
        &failing,
        4,
        &[
            "created RollbackRequest db-2-rollback to undo it",
            "rollback Restore",
            "rollback Revert",
            "RollingBack",
            "RolledBack",
        ],
        &[
            "upgrade db-2 of db (v1.5.0 → v2.0.0) failed in ",
            "rolled back by db-2-rollback",
            "--to v2.0.0 --force",
        ],
    );

    // The table: versions from Git, the failed version; the detailed view says why.
    let status = fluxgate(k, &["status", "-n", "apps"]).await;
    expect(
        &status,
        0,
        &["APP", "VERSIONS", "FAILED", "db ", "v1.5.0", "v2.0.0"],
        &[],
    );
    let (table, _) = text(&status);
    let row = table.lines().find(|l| l.starts_with("db ")).unwrap();
    assert!(row.contains("v1.5.0") && row.contains("v2.0.0"), "{table}");
    let detail = fluxgate(k, &["status", "db", "-n", "apps"]).await;
    expect(
        &detail,
        0,
        &[
            "ManagedApp apps/db",
            "chart v1.5.0",
            "chart v2.0.0 (rolled back from db-2",
            "refused unless --force",
            "Operation:    none",
            "HelmRelease",
        ],
        &[],
    );

    // The failed version is refused before anything is created, with the way out.
    let before = upgrade_names(&world).await;
    let refused = fluxgate(k, &["upgrade", "db", "-n", "apps", "--to", "v2.0.0"]).await;
    expect(
        &refused,
        1,
        &[],
        &[
            "chart v2.0.0 of ManagedApp apps/db failed before",
            "--force",
            "Nothing was created",
        ],
    );
    assert_eq!(upgrade_names(&world).await, before, "nothing was created");

    // A manual rollback of the first upgrade, followed to the end.
    let first = before
        .iter()
        .find(|n| n.starts_with("db-v1-5-0-"))
        .unwrap()
        .clone();
    let rollback = fluxgate(k, &["rollback", &first, "-n", "apps", "--wait"]).await;
    expect(
        &rollback,
        0,
        &[
            &format!("RollbackRequest apps/{first}-rollback-"),
            "rollback Restore",
            &format!("Rolled back {first} (v1.5.0 → v1.4.0)"),
        ],
        &[],
    );
    let app = Api::<ManagedApp>::namespaced(world.client.clone(), "apps")
        .get("db")
        .await
        .unwrap();
    assert_eq!(
        app.status.unwrap().current_versions["chart"],
        "v1.4.0",
        "the rollback reverted Git"
    );

    // History: every request of the app, oldest first, with outcome, versions and commits.
    let history = fluxgate(k, &["history", "db", "-n", "apps"]).await;
    expect(
        &history,
        0,
        &[
            "OUTCOME",
            "Succeeded",
            "RolledBack (",
            "rollback of db-2",
            &format!("rollback of {first}"),
            "v1.4.0 → v1.5.0",
            "v1.5.0 → v2.0.0",
            "2 ready",
        ],
        &[],
    );
    let (listing, _) = text(&history);
    let row_of = |name: &str| {
        listing
            .lines()
            .position(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("no row for {name}: {listing}"))
    };
    assert_eq!(
        listing.lines().count(),
        5,
        "a header and 4 requests: {listing}"
    );
    assert!(
        row_of(&first) < row_of("db-2") && row_of("db-2") < row_of("db-2-rollback"),
        "oldest first: {listing}"
    );
    assert!(
        listing
            .lines()
            .last()
            .unwrap()
            .contains(&format!("{first}-rollback-"))
    );

    // Flux left suspended while nothing holds the app: the table warns with the fix.
    Api::<kube::api::DynamicObject>::namespaced_with(
        world.client.clone(),
        "apps",
        &fluxgate::cluster::flux::ops::api_resource(fluxgate::api::FluxObjectKind::HelmRelease),
    )
    .patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let suspended = fluxgate(k, &["status", "-A"]).await;
    expect(
        &suspended,
        0,
        &[
            "NAMESPACE",
            "! HelmRelease/db (no operation)",
            "Flux left suspended",
            "flux resume helmrelease db -n apps",
        ],
        &[],
    );

    // Unknown apps: the namespace searched and how to list them; where it really is.
    let unknown = fluxgate(k, &["upgrade", "nope", "-n", "apps", "--to", "v1"]).await;
    expect(
        &unknown,
        1,
        &[],
        &[
            "no ManagedApp named \"nope\" in namespace \"apps\"",
            "fluxgate status -A",
        ],
    );
    let elsewhere = fluxgate(k, &["history", "db"]).await;
    expect(
        &elsewhere,
        1,
        &[],
        &[
            "in namespace \"default\"",
            "it exists in namespace apps: pass `-n apps`",
        ],
    );

    // As a kubectl plugin: the same binary under the name kubectl-fluxgate.
    let bin = tempfile::tempdir().unwrap();
    let plugin = bin.path().join("kubectl-fluxgate");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fluxgate"), &plugin).unwrap();
    let direct = run_as(&plugin, k, &["history", "db", "-n", "apps"], None).await;
    expect(&direct, 0, &["rollback of db-2"], &[]);
    let help = tokio::process::Command::new(&plugin)
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl fluxgate"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
    let kubectl_found = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    if kubectl_found {
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let via_kubectl = run_as(
            Path::new("kubectl"),
            k,
            &["fluxgate", "status", "db", "-n", "apps"],
            Some(&path),
        )
        .await;
        expect(
            &via_kubectl,
            0,
            &["ManagedApp apps/db", "refused unless --force"],
            &[],
        );
    } else {
        eprintln!("kubectl is not installed: `kubectl fluxgate` itself was not run");
    }
    world.stop().await;
}

/// Issue 15 item 1: on a fleet laid out as `flux bootstrap` lays it out, the root
/// Kustomization names itself as its parent; `status` still reads the app's Flux objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_flux_objects_of_a_bootstrapped_fleet() {
    let world = DemoWorld::start_fleet(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, json!({}))
            .apps_follow_flux(),
    )
    .await
    .unwrap();
    let k = world.kubeconfig_path();
    let status = fluxgate(&k, &["status", "db", "-n", "apps"]).await;
    expect(
        &status,
        0,
        &[
            "Flux objects:",
            "Kustomization",
            "flux-system/flux-system",
            "apps/db",
        ],
        &[],
    );
    let (stdout, _) = text(&status);
    assert!(!stdout.contains("cannot be read"), "{stdout}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_succeeds_with_exit_zero_and_changes_nothing() {
    let world = DemoWorld::start("v1.4.0", json!({})).await.unwrap();
    let k = world.kubeconfig_path();
    let dry = fluxgate(
        &k,
        &[
            "upgrade",
            "db",
            "-n",
            "apps",
            "--to",
            "v1.5.0",
            "--dry-run",
            "--wait",
        ],
    )
    .await;
    expect(
        &dry,
        0,
        &[
            "(dry run)",
            "Preflight",
            "Succeeded",
            "nothing was committed or snapshotted",
        ],
        &[],
    );
    assert_eq!(world.git.log().unwrap().len(), 1, "no commit");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_upgrade_exits_5_shows_in_status_and_can_be_rolled_back() {
    let world = DemoWorld::start(
        "v1.4.0",
        json!({"health": {"timeout": "8s", "stabilization": "1s"}, "rollback": {"onFailure": "Freeze"}}),
    )
    .await
    .unwrap();
    let k = world.kubeconfig_path();
    world.world.failures.fail_chart_version("v2.0.0");
    let frozen = fluxgate(
        &k,
        &[
            "upgrade", "db", "-n", "apps", "--to", "v2.0.0", "--name", "db-2", "--wait",
        ],
    )
    .await;
    expect(
        &frozen,
        5,
        &["Frozen"],
        &[
            "It is Frozen",
            "nothing was undone",
            "fluxgate rollback db-2 -n apps",
        ],
    );
    let status = fluxgate(&k, &["status", "-n", "apps"]).await;
    expect(
        &status,
        0,
        &[
            "upgrade db-2 (Frozen)",
            "is Frozen",
            "fluxgate rollback db-2 -n apps",
        ],
        &[],
    );
    let (table, _) = text(&status);
    assert!(
        !table.contains("Flux left suspended"),
        "a Frozen request holds the app: {table}"
    );
    let undo = fluxgate(&k, &["rollback", "db-2", "-n", "apps", "--wait"]).await;
    expect(&undo, 0, &["Rolled back db-2 (v2.0.0 → v1.4.0)"], &[]);
    let after = fluxgate(&k, &["status", "db", "-n", "apps"]).await;
    expect(&after, 0, &["Operation:    none"], &[]);
    let (detail, _) = text(&after);
    assert!(
        !detail.contains("yes,"),
        "Flux resumed after the rollback: {detail}"
    );
    world.stop().await;
}

mod without_a_working_operator {
    //! Clear errors when Fluxgate is missing, not running, or the cluster is unreachable.

    use super::{expect, fluxgate};
    use fluxgate::api::ManagedApp;
    use kube::api::{Api, PostParams};
    use kubesim::{Fault, KubeSim, Match};
    use serde_json::json;
    use std::path::Path;

    #[tokio::test]
    async fn missing_crds_say_to_install_the_chart() {
        let sim = KubeSim::start().await;
        let output = fluxgate(&sim.kubeconfig_path(), &["status", "-A"]).await;
        expect(
            &output,
            1,
            &[],
            &[
                "Fluxgate is not installed in the cluster",
                "helm install fluxgate charts/fluxgate",
            ],
        );
    }

    /// Fluxgate's CRDs and a ManagedApp, but no operator.
    async fn installed_without_operator() -> KubeSim {
        let sim = KubeSim::start().await;
        sim.load_yaml(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .unwrap();
        sim.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}))
            .unwrap();
        let app: ManagedApp = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"source": {"kind": "HelmRelease", "name": "db"}, "git": {"file": "db.yaml"}}
        }))
        .unwrap();
        Api::<ManagedApp>::namespaced(sim.client(), "apps")
            .create(&PostParams::default(), &app)
            .await
            .unwrap();
        sim
    }

    const WAIT_BRIEFLY: &[&str] = &[
        "upgrade",
        "db",
        "-n",
        "apps",
        "--to",
        "v2",
        "--wait",
        "--pickup-timeout",
        "2s",
    ];

    #[tokio::test]
    async fn a_request_nobody_picks_up_means_the_operator_is_not_running() {
        let sim = installed_without_operator().await;
        let output = fluxgate(&sim.kubeconfig_path(), WAIT_BRIEFLY).await;
        expect(
            &output,
            1,
            &["UpgradeRequest apps/db-v2-"],
            &["has had no phase for 2s: the Fluxgate operator does not seem to be running"],
        );
    }

    #[tokio::test]
    async fn a_closed_pipe_ends_the_command_quietly() {
        let sim = installed_without_operator().await;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"))
            .args(WAIT_BRIEFLY)
            .arg("--kubeconfig")
            .arg(sim.kubeconfig_path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // `fluxgate upgrade … | head -0`: the reader is gone before the first line.
        drop(child.stdout.take());
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .unwrap()
                .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(141), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    #[tokio::test]
    async fn a_watch_that_fails_is_not_mistaken_for_an_absent_operator() {
        let sim = installed_without_operator().await;
        sim.inject(
            Fault::respond(Match::any().verb("watch").resource("upgraderequests"), 403).always(),
        );
        let output = fluxgate(&sim.kubeconfig_path(), WAIT_BRIEFLY).await;
        expect(
            &output,
            1,
            &["UpgradeRequest apps/db-v2-"],
            &[
                "watching it fails",
                "kubectl auth can-i watch upgraderequests -n apps",
            ],
        );
    }

    #[tokio::test]
    async fn context_picks_the_cluster_like_kubectl() {
        let sim = KubeSim::start().await;
        sim.load_yaml(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n\
                 - name: dead\n  cluster: {{server: \"http://127.0.0.1:{dead}\"}}\n\
                 - name: live\n  cluster: {{server: \"{}\"}}\n\
                 contexts:\n\
                 - name: dead\n  context: {{cluster: dead, user: u}}\n\
                 - name: live\n  context: {{cluster: live, user: u, namespace: team}}\n\
                 current-context: dead\nusers:\n- name: u\n  user: {{token: t}}\n",
                sim.base_url()
            ),
        )
        .unwrap();
        let current = fluxgate(&kubeconfig, &["status"]).await;
        expect(
            &current,
            1,
            &[],
            &["cannot reach the Kubernetes API server"],
        );
        // The context's namespace is the default namespace, as with kubectl.
        let live = fluxgate(&kubeconfig, &["status", "--context", "live"]).await;
        expect(&live, 0, &["No ManagedApps in namespace team"], &[]);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubesim::kubeconfig_yaml(&format!("http://127.0.0.1:{port}")),
        )
        .unwrap();
        let output = fluxgate(&kubeconfig, &["status"]).await;
        expect(
            &output,
            1,
            &[],
            &[
                &format!("cannot reach the Kubernetes API server at http://127.0.0.1:{port}"),
                "check that the cluster is running",
            ],
        );
    }
}
