//! The real `fluxgate run` process against the simulated cluster (kubesim + simulated Flux,
//! CSI and workloads + a Git server) performs an upgrade and an automatic rollback that a
//! person watches with `kubectl get ur -w` and `kubectl get rr -w`, applied with
//! `kubectl apply`. (kubectl 1.32 refuses `-w` over two types at once: "you may only
//! specify a single resource type".)

use fluxgate::api::{Phase, RollbackRequest, UpgradeRequest};
use fluxgate::demo::world::DemoWorld;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

fn kubectl_installed() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Spawns `program` with `args`; its stdout lines arrive on the channel.
fn spawn_lines(program: &str, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

fn kubectl_apply(kubeconfig: &str, manifest: &serde_json::Value) {
    let mut child = Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn upgrade(name: &str, version: &str) -> serde_json::Value {
    json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
           "metadata": {"name": name, "namespace": "apps"},
           "spec": {"managedApp": "db", "version": version}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluxgate_run_upgrades_and_rolls_back_while_kubectl_watches() {
    if !kubectl_installed() {
        println!(
            "SKIPPED: kubectl is not installed; `fluxgate run` with kubectl watching did not run"
        );
        return;
    }
    let mut story = DemoWorld::start(
        "v1.4.0",
        json!({"health": {"timeout": "5s", "stabilization": "1s"}}),
    )
    .await
    .unwrap();
    // The in-process operator steps aside for the real binary.
    story.kill_operator().await;
    let kubeconfig = story.kubeconfig_path().to_string_lossy().into_owned();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_string_lossy().into_owned();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args([
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--metrics-addr",
            "127.0.0.1:0",
            "--git-cache-dir",
            &cache_dir,
            "--log-format",
            "text",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch = |kind: &str| {
        spawn_lines(
            "kubectl",
            &["--kubeconfig", &kubeconfig, "get", kind, "-n", "apps", "-w"],
        )
    };
    let (mut upgrades_watch, upgrades_seen) = watch("ur");
    let (mut rollbacks_watch, rollbacks_seen) = watch("rr");

    kubectl_apply(&kubeconfig, &upgrade("db-1-5-0", "v1.5.0"));
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(done.status.unwrap().phase, Some(Phase::Succeeded));

    story.world.failures.fail_chart_version("v2.0.0");
    kubectl_apply(&kubeconfig, &upgrade("db-2-0-0", "v2.0.0"));
    let failed: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(failed.status.unwrap().phase, Some(Phase::RolledBack));
    let rollback: RollbackRequest = story
        .finished("db-2-0-0-rollback", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rollback.status.unwrap().phase, Some(Phase::Succeeded));

    // What the person watching saw: every phase of both requests, as they happened.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for child in [&mut upgrades_watch, &mut rollbacks_watch, &mut operator] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let seen: Vec<String> = upgrades_seen
        .try_iter()
        .chain(rollbacks_seen.try_iter())
        .collect();
    let saw = |name: &str, phase: &str| {
        seen.iter().any(|l| {
            let mut columns = l.split_whitespace();
            columns.next() == Some(name) && columns.any(|c| c == phase)
        })
    };
    for phase in ["Snapshot", "Commit", "Verify", "Succeeded"] {
        assert!(
            saw("db-1-5-0", phase),
            "{phase} of db-1-5-0 not seen:\n{}",
            seen.join("\n")
        );
    }
    assert!(saw("db-2-0-0", "RolledBack"), "{}", seen.join("\n"));
    for phase in ["Restore", "Revert", "Succeeded"] {
        assert!(
            saw("db-2-0-0-rollback", phase),
            "{phase} of the rollback not seen:\n{}",
            seen.join("\n")
        );
    }
    story.stop().await;
}
