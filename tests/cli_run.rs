//! `fluxgate run` fails fast with a clear, actionable message (and no panic) when it cannot
//! work: no kubeconfig, or a cluster that cannot be reached.

use std::process::{Command, Output};

fn fluxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("the fluxgate binary runs")
}

fn assert_clear_failure(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure, got success; stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "stderr should contain {expected:?}: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "no panic expected: {stderr}"
    );
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let output = fluxgate(&[
        "run",
        "--kubeconfig",
        path.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_clear_failure(
        &output,
        &format!("cannot read kubeconfig {}", path.display()),
    );
}

#[test]
fn an_unreachable_cluster_is_reported_with_what_to_check() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n\
             users:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let output = fluxgate(&[
        "run",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_clear_failure(
        &output,
        &format!("cannot reach the Kubernetes API server at http://127.0.0.1:{port}"),
    );
    assert_clear_failure(&output, "check that the cluster is running");
}

#[test]
fn crd_prints_every_kind() {
    let output = fluxgate(&["crd"]);
    assert!(output.status.success());
    let yaml = String::from_utf8(output.stdout).unwrap();
    for name in [
        "managedapps.fluxgate.dev",
        "upgraderequests.fluxgate.dev",
        "rollbackrequests.fluxgate.dev",
    ] {
        assert!(yaml.contains(&format!("name: {name}")), "{name} missing");
    }
}
