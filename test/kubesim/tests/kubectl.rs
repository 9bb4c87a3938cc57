//! Conformance through kubectl on kubesim: the cases of `common::kubectl_cases`, which
//! `real_api_server.rs` runs unchanged on the real v1.36.3 control plane, here each on a
//! kubesim of its own — with the v1.36.3 kubectl of test/realstack when it is built (one
//! kubectl judges both servers), else the system kubectl. Some tests add checks of kubesim's
//! request log, which the real server has no equivalent of.
//!
//! Without any kubectl every test prints a SKIPPED line to stderr and returns.

mod common;

use common::kubectl::{Target, sim_kubectl};
use common::kubectl_cases as cases;
use kubesim::Match;
use std::process::Stdio;
use std::time::Duration;

/// Runs a case on a fresh kubesim (`None`: no kubectl, already said SKIPPED).
macro_rules! on_sim {
    ($case:ident) => {
        #[tokio::test]
        async fn $case() {
            if let Some(t) = Target::sim(stringify!($case)).await {
                cases::$case(&t).await;
            }
        }
    };
}

/// Also checks what kubectl asked kubesim for before applying: discovery and the OpenAPI v3
/// documents (the request log is kubesim's).
#[tokio::test]
async fn apply_crds_and_samples_then_get() {
    let Some(t) = Target::sim("apply").await else {
        return;
    };
    cases::apply_crds_and_samples_then_get(&t).await;
    let sim = t.sim_server().unwrap();
    let paths: Vec<String> = sim
        .requests(&Match::any().verb("discovery"))
        .into_iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(paths.iter().any(|p| p == "/openapi/v3"), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/openapi/v3/apis/source.toolkit.fluxcd.io/v1")),
        "{paths:?}"
    );
}

/// Also checks (kubesim's request log) that kubectl opened exactly one watch.
#[tokio::test]
async fn get_watch_with_request_timeout() {
    let Some(t) = Target::sim("watch").await else {
        return;
    };
    cases::get_watch_with_request_timeout(&t).await;
    assert_eq!(
        t.sim_server()
            .unwrap()
            .count(&Match::any().verb("watch").resource("configmaps")),
        1
    );
}

on_sim!(patch_merge_json_strategic);
on_sim!(server_side_apply_conflicts_and_force);
on_sim!(delete_waits_for_finalizer_removal);
on_sim!(wait_for_condition_and_jsonpath);
on_sim!(get_watch_json_sees_an_update);
on_sim!(create_generators_send_protobuf);
on_sim!(stale_replace_is_a_conflict);
on_sim!(tables_of_crds_and_builtins);
on_sim!(auth_can_i_and_whoami);
on_sim!(explain_flux_kind_and_managed_app);
on_sim!(apply_then_diff);
on_sim!(delete_cascade_foreground);
on_sim!(crd_schema_violations_are_refused_with_the_real_messages);

/// kubesim's own binary (`kubesim serve`), which has no real counterpart: it serves the Flux
/// and snapshot kinds without files and stops on SIGTERM.
#[tokio::test]
async fn kubesim_serve_binary_serves_flux_and_snapshot_kinds_and_stops_on_sigterm() {
    let Some(kubectl) = sim_kubectl() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["serve", "--addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    assert!(
        line.starts_with("kubesim listening on http://127.0.0.1:"),
        "{line}"
    );
    for _ in 0..50 {
        if kc.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kubectl = async |args: &[&str]| {
        let out = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let crds = kubectl(&["get", "crd", "-o", "name"]).await;
    assert_eq!(crds.lines().count(), 9, "{crds}");
    // Without --crds, the Flux and snapshot kinds are served from kubesim's own CRDs.
    kubectl(&[
        "get",
        "helmreleases,kustomizations,gitrepositories,ocirepositories,volumesnapshots",
        "-A",
    ])
    .await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success());
}
