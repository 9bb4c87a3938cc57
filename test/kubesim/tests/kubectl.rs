//! Conformance through the real `kubectl` (v1.32): apply, get, patch, server-side apply, delete, wait, watch, replace.
//!
//! When kubectl is not installed every test prints a SKIPPED line to stderr and returns.

mod common;

use common::third_party_crd_files;
use kubesim::{KubeSim, Match};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn kubectl_present() -> bool {
    let ok = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: kubectl is not installed; the kubectl conformance suite did not run");
    }
    ok
}

struct Ctl {
    sim: KubeSim,
    cache: tempfile::TempDir,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ctl {
    async fn new() -> Ctl {
        Ctl {
            sim: KubeSim::start().await,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(self.sim.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run_with(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self.cmd(args).spawn().expect("kubectl starts");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("kubectl finished in time")
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, "").await
    }

    /// Runs and insists on success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }

    async fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let o = self.run_with(args, stdin).await;
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }

    /// Waits until some client has a watch open on `resource` (so a change made next is seen live).
    async fn watch_opened(&self, resource: &str) {
        for _ in 0..200 {
            if self
                .sim
                .count(&Match::any().verb("watch").resource(resource))
                > 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no watch on {resource} was opened within 10s");
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }
}

const SAMPLES: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: demo}}
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1", env: [{name: A, value: "1"}]}
      - {name: sidecar, image: busybox}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: apps}
spec: {url: "https://example.com/apps.git", interval: 1m, ref: {branch: main}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: db}
spec:
  interval: 10m
  chart: {spec: {chart: postgres, version: "1.0.0", sourceRef: {kind: HelmRepository, name: charts}}}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap}
spec: {volumeSnapshotClassName: csi, source: {persistentVolumeClaimName: data}}
"#;

async fn with_samples() -> Ctl {
    let ctl = Ctl::new().await;
    let mut apply = vec!["apply".to_owned(), "--server-side".to_owned()];
    for file in third_party_crd_files() {
        apply.extend(["-f".to_owned(), file.display().to_string()]);
    }
    ctl.ok(&apply.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    ctl.ok(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=10s",
    ])
    .await;
    ctl.ok_with(&["apply", "-f", "-"], SAMPLES).await;
    ctl
}

#[tokio::test]
async fn kubectl_apply_crds_and_samples_then_get() {
    if !kubectl_present() {
        return;
    }
    let ctl = with_samples().await;
    // Applying again changes nothing.
    let again = ctl.ok_with(&["apply", "-f", "-"], SAMPLES).await;
    assert!(again.lines().all(|l| l.ends_with("unchanged")), "{again}");

    let git = ctl.json(&["get", "gitrepository", "apps"]).await;
    assert_eq!(git["spec"]["timeout"], "60s", "CRD default applied");
    assert_eq!(git["metadata"]["generation"], 1);

    let table = ctl.ok(&["get", "gitrepositories"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "URL", "AGE", "READY", "STATUS"]);
    assert!(table.contains("https://example.com/apps.git"), "{table}");
    let hr = ctl.ok(&["get", "hr"]).await;
    assert!(hr.starts_with("NAME"), "{hr}");
    let cms = ctl.ok(&["get", "cm", "-l", "app=demo"]).await;
    assert_eq!(cms.lines().count(), 2, "{cms}");
    assert!(cms.lines().next().unwrap().contains("AGE"));

    // What kubectl asked for before applying: discovery and OpenAPI v3 documents.
    let paths: Vec<String> = ctl
        .sim
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

    // A schema violation is refused with the real server's wording.
    let bad = ctl
        .run_with(&["apply", "-f", "-"], "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: bad}\nspec: {url: 'ftp://x', interval: 1m}\n")
        .await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("spec.url: Invalid value: \"ftp://x\""),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn kubectl_patch_merge_json_strategic() {
    if !kubectl_present() {
        return;
    }
    let ctl = with_samples().await;
    ctl.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ])
    .await;
    ctl.ok(&["patch", "configmap", "settings", "--type", "json", "-p",
        r#"[{"op":"test","path":"/data/a","value":"1"},{"op":"replace","path":"/data/a","value":"9"}]"#]).await;
    let failed = ctl
        .run(&[
            "patch",
            "configmap",
            "settings",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/a","value":"1"}]"#,
        ])
        .await;
    assert!(!failed.ok, "a failing test op must be refused");
    let cm = ctl.json(&["get", "cm", "settings"]).await;
    assert_eq!(cm["data"], serde_json::json!({"a": "9", "b": "2"}));

    ctl.ok(&["patch", "deployment", "web", "--type", "strategic", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"2"}]},{"name":"sidecar","$patch":"delete"}]}}}}"#]).await;
    let d = ctl.json(&["get", "deploy", "web"]).await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
    assert_eq!(d["metadata"]["generation"], 2);

    ctl.ok(&["scale", "deployment", "web", "--replicas", "3"])
        .await;
    assert_eq!(
        ctl.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );
    // Client-side apply of a changed manifest merges containers by name.
    let changed = SAMPLES.replace("nginx:1", "nginx:2");
    ctl.ok_with(&["apply", "-f", "-"], &changed).await;
    let image = ctl
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[?(@.name==\"web\")].image}",
        ])
        .await;
    assert_eq!(image, "nginx:2");
}

#[tokio::test]
async fn kubectl_server_side_apply_and_conflicts() {
    if !kubectl_present() {
        return;
    }
    let ctl = Ctl::new().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1', b: '2'}\n";
    assert!(
        ctl.ok_with(&["apply", "--server-side", "-f", "-"], cm)
            .await
            .contains("serverside-applied")
    );
    let fewer = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n";
    ctl.ok_with(&["apply", "--server-side", "-f", "-"], fewer)
        .await;
    let got = ctl.json(&["get", "cm", "ssa"]).await;
    assert_eq!(
        got["data"],
        serde_json::json!({"a": "1"}),
        "a field the applier dropped is removed"
    );

    ctl.ok(&[
        "patch",
        "cm",
        "ssa",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"changed"}}"#,
    ])
    .await;
    let conflict = ctl
        .run_with(&["apply", "--server-side", "-f", "-"], fewer)
        .await;
    assert!(!conflict.ok);
    assert!(
        conflict.stderr.contains("conflict with \"kubectl-patch\""),
        "{}",
        conflict.stderr
    );
    ctl.ok_with(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        fewer,
    )
    .await;
    assert_eq!(
        ctl.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"])
            .await,
        "1"
    );
    let managed = ctl
        .json(&["get", "cm", "ssa", "--show-managed-fields"])
        .await;
    let managers: Vec<&str> = managed["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
}

#[tokio::test]
async fn kubectl_delete_waits_for_finalizer_removal() {
    if !kubectl_present() {
        return;
    }
    let ctl = Ctl::new().await;
    ctl.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [kubesim.dev/hold]}\n",
    )
    .await;
    ctl.ok(&["delete", "cm", "held", "--wait=false"]).await;
    let held = ctl.json(&["get", "cm", "held"]).await;
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let waiter = ctl
        .cmd(&["wait", "--for=delete", "cm/held", "--timeout=20s"])
        .spawn()
        .unwrap();
    ctl.watch_opened("configmaps").await;
    ctl.ok(&[
        "patch",
        "cm",
        "held",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let out = waiter.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = ctl.run(&["get", "cm", "held"]).await;
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
}

#[tokio::test]
async fn kubectl_wait_for_condition() {
    if !kubectl_present() {
        return;
    }
    let ctl = with_samples().await;
    let waiter = ctl
        .cmd(&[
            "wait",
            "--for=condition=Ready",
            "gitrepository/apps",
            "--timeout=20s",
        ])
        .spawn()
        .unwrap();
    ctl.watch_opened("gitrepositories").await;
    ctl.ok(&["patch", "gitrepository", "apps", "--subresource", "status", "--type", "merge", "-p",
        r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"stored artifact","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#]).await;
    let out = waiter.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    let table = ctl.ok(&["get", "gitrepository", "apps"]).await;
    assert!(
        table.contains("True") && table.contains("stored artifact"),
        "{table}"
    );
}

#[tokio::test]
async fn kubectl_get_watch_with_request_timeout() {
    if !kubectl_present() {
        return;
    }
    let ctl = Ctl::new().await;
    ctl.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {n: '0'}\n",
    )
    .await;
    let watcher = ctl
        .cmd(&["get", "cm", "watched", "--watch", "--request-timeout=3s"])
        .spawn()
        .unwrap();
    ctl.watch_opened("configmaps").await;
    ctl.ok(&[
        "patch",
        "cm",
        "watched",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"n":"1"}}"#,
    ])
    .await;
    let out = tokio::time::timeout(Duration::from_secs(15), watcher.wait_with_output())
        .await
        .expect("watch ended by its timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = text.lines().filter(|l| l.starts_with("watched")).count();
    assert_eq!(rows, 2, "initial row and one update:\n{text}");
    assert_eq!(
        ctl.sim
            .count(&Match::any().verb("watch").resource("configmaps")),
        1
    );
}

#[tokio::test]
async fn kubectl_create_generators_send_protobuf_for_secrets_configmaps_namespaces() {
    if !kubectl_present() {
        return;
    }
    let ctl = Ctl::new().await;
    ctl.ok(&["create", "namespace", "made"]).await;
    ctl.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "made",
        "--from-literal=a=b",
    ])
    .await;
    ctl.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "made",
        "--from-literal=p=q",
    ])
    .await;
    assert_eq!(
        ctl.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "made",
            "-o",
            "jsonpath={.data.p}"
        ])
        .await,
        "cQ=="
    );
    assert_eq!(
        ctl.ok(&["get", "cm", "c", "-n", "made", "-o", "jsonpath={.data.a}"])
            .await,
        "b"
    );
    ctl.ok(&["delete", "namespace", "made"]).await;
    let gone = ctl.run(&["get", "ns", "made"]).await;
    assert!(!gone.ok, "the namespace and its contents are gone");
}

#[tokio::test]
async fn kubectl_stale_replace_is_a_conflict() {
    if !kubectl_present() {
        return;
    }
    let ctl = Ctl::new().await;
    ctl.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: r}\ndata: {n: '0'}\n",
    )
    .await;
    let stale = ctl.ok(&["get", "cm", "r", "-o", "json"]).await;
    ctl.ok(&[
        "patch",
        "cm",
        "r",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"n":"1"}}"#,
    ])
    .await;
    let out = ctl.run_with(&["replace", "-f", "-"], &stale).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Error from server (Conflict)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the object has been modified"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn kubesim_serve_binary_serves_flux_and_snapshot_kinds_and_stops_on_sigterm() {
    if !kubectl_present() {
        return;
    }
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
        let out = tokio::process::Command::new("kubectl")
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
