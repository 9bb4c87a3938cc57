//! Conformance through kubectl: each case takes a [`Target`] (kubectl, kubeconfig, namespace)
//! and asserts what a user sees — exit codes and output lines — so that `kubectl.rs` runs it
//! on kubesim and `real_api_server.rs` on the real v1.36.3 control plane. Expected texts are
//! the real server's; where the real server acts later (garbage collector, OpenAPI
//! publishing) a case waits for the outcome, which kubesim's immediate answer also passes.
#![allow(dead_code)]

use super::kubectl::Target;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

pub const SAMPLES: &str = r#"
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

/// A ManagedApp as a user writes it: only what the CRD requires, the rest defaulted.
pub fn managed_app(name: &str, file: &str) -> String {
    format!(
        "apiVersion: fluxgate.dev/v1alpha1\nkind: ManagedApp\nmetadata: {{name: {name}}}\nspec:\n  \
         source: {{kind: HelmRelease, name: {name}}}\n  git: {{file: {file}}}\n  versions:\n  \
         - {{name: chart, path: .spec.chart.spec.version}}\n"
    )
}

/// The ManagedApp's status as Fluxgate writes it when an update is on offer.
const READY_STATUS: &str = r#"{"status":{"current":"chart=1.0.0","available":"chart=1.1.0","conditions":[{"type":"Ready","status":"True","reason":"Idle","message":"watching for updates","lastTransitionTime":"2026-01-01T00:00:00Z"},{"type":"Protected","status":"False","reason":"VolumesUnprotected","message":"PVC apps/cache is not a CSI volume","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;

/// The cells of a `kubectl get` table line (columns are separated by 3+ spaces; a cell
/// may hold single spaces, as a message does).
fn cells(line: &str) -> Vec<String> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The lines of a multi-error `Invalid` answer (`* field: message`), as a set: the real
/// server's order follows Go map iteration and changes from run to run.
fn error_lines(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("* "))
        .map(String::from)
        .collect()
}

/// Applies [`SAMPLES`] (after the CRDs) and checks it is idempotent.
pub async fn with_samples(t: &Target) {
    t.with_crds().await;
    t.ok_with(&["apply", "-f", "-"], SAMPLES).await;
}

pub async fn apply_crds_and_samples_then_get(t: &Target) {
    with_samples(t).await;
    // Applying again changes nothing.
    let again = t.ok_with(&["apply", "-f", "-"], SAMPLES).await;
    assert!(again.lines().all(|l| l.ends_with("unchanged")), "{again}");

    let git = t.json(&["get", "gitrepository", "apps"]).await;
    assert_eq!(git["spec"]["timeout"], "60s", "CRD default applied");
    assert_eq!(git["metadata"]["generation"], 1);

    let table = t.ok(&["get", "gitrepositories"]).await;
    assert_eq!(
        words(table.lines().next().unwrap()),
        ["NAME", "URL", "AGE", "READY", "STATUS"]
    );
    assert!(table.contains("https://example.com/apps.git"), "{table}");
    let hr = t.ok(&["get", "hr"]).await;
    assert!(hr.starts_with("NAME"), "{hr}");
    let cms = t.ok(&["get", "cm", "-l", "app=demo"]).await;
    assert_eq!(cms.lines().count(), 2, "{cms}");
    assert_eq!(words(cms.lines().next().unwrap()), ["NAME", "DATA", "AGE"]);

    // A schema violation is refused with the real server's wording.
    let bad = t
        .run_with(&["apply", "-f", "-"], "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: bad}\nspec: {url: 'ftp://x', interval: 1m}\n")
        .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("spec.url: Invalid value: \"ftp://x\""),
        "{}",
        bad.stderr
    );
}

pub async fn patch_merge_json_strategic(t: &Target) {
    with_samples(t).await;
    t.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ])
    .await;
    t.ok(&["patch", "configmap", "settings", "--type", "json", "-p",
        r#"[{"op":"test","path":"/data/a","value":"1"},{"op":"replace","path":"/data/a","value":"9"}]"#]).await;
    let failed = t
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
    assert_eq!(failed.code, 1, "a failing test op must be refused");
    let cm = t.json(&["get", "cm", "settings"]).await;
    assert_eq!(cm["data"], json!({"a": "9", "b": "2"}));

    t.ok(&["patch", "deployment", "web", "--type", "strategic", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"2"}]},{"name":"sidecar","$patch":"delete"}]}}}}"#]).await;
    let d = t.json(&["get", "deploy", "web"]).await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
    assert_eq!(d["metadata"]["generation"], 2);

    t.ok(&["scale", "deployment", "web", "--replicas", "3"])
        .await;
    assert_eq!(
        t.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );
    // Client-side apply of a changed manifest merges containers by name.
    let changed = SAMPLES.replace("nginx:1", "nginx:2");
    t.ok_with(&["apply", "-f", "-"], &changed).await;
    let image = t
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

pub async fn server_side_apply_conflicts_and_force(t: &Target) {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1', b: '2'}\n";
    let out = t.ok_with(&["apply", "--server-side", "-f", "-"], cm).await;
    assert_eq!(out, "configmap/ssa serverside-applied\n");
    let fewer = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n";
    t.ok_with(&["apply", "--server-side", "-f", "-"], fewer)
        .await;
    let got = t.json(&["get", "cm", "ssa"]).await;
    assert_eq!(
        got["data"],
        json!({"a": "1"}),
        "a field the applier dropped is removed"
    );

    t.ok(&[
        "patch",
        "cm",
        "ssa",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"changed","b":"x"}}"#,
    ])
    .await;
    // One conflict: the manager (an Update, so with its apiVersion) and the field.
    let conflict = t
        .run_with(&["apply", "--server-side", "-f", "-"], fewer)
        .await;
    assert_eq!(conflict.code, 1);
    assert!(
        conflict.stderr.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.a\n\
             Please review the fields above--they currently have other managers."
        ),
        "{}",
        conflict.stderr
    );
    // Several: grouped by manager, one field a line.
    let both = t.run_with(&["apply", "--server-side", "-f", "-"], cm).await;
    assert_eq!(both.code, 1);
    assert!(
        both.stderr.starts_with(
            "error: Apply failed with 2 conflicts: conflicts with \"kubectl-patch\" using v1:\n\
             - .data.a\n- .data.b\n"
        ),
        "{}",
        both.stderr
    );
    // Another applier conflicts with the first applier (an Apply: no apiVersion).
    let other = t
        .run_with(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            &cm.replace("b: '2'", "b: 'x'")
                .replace("a: '1'", "a: 'changed'"),
        )
        .await;
    assert!(
        other.ok(),
        "same values: shared, no conflict: {}",
        other.stderr
    );
    let clash = t
        .run_with(
            &["apply", "--server-side", "--field-manager=third", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {b: 'y'}\n",
        )
        .await;
    // Two managers of one field: both named, sorted, each with its own list.
    assert_eq!(clash.code, 1);
    assert!(
        clash.stderr.starts_with(
            "error: Apply failed with 2 conflicts: conflicts with \"kubectl-patch\" using v1:\n\
             - .data.b\nconflicts with \"other\":\n- .data.b\n"
        ),
        "{}",
        clash.stderr
    );
    t.ok_with(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        fewer,
    )
    .await;
    assert_eq!(
        t.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"])
            .await,
        "1"
    );
    let managed = t.json(&["get", "cm", "ssa", "--show-managed-fields"]).await;
    let managers: Vec<&str> = managed["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // A ManagedApp's `spec.versions` is a list-map keyed by name (its CRD says so): items
    // have owners of their own, so another manager's item is no conflict and stays.
    t.with_crds().await;
    let app = managed_app("ssa", "a.yaml");
    t.ok_with(&["apply", "--server-side", "-f", "-"], &app)
        .await;
    t.ok(&[
        "patch",
        "managedapp",
        "ssa",
        "--type=merge",
        "-p",
        r#"{"spec":{"git":{"file":"b.yaml"},"versions":[{"name":"app","path":".x"}]}}"#,
    ])
    .await;
    let conflict = t
        .run_with(&["apply", "--server-side", "-f", "-"], &app)
        .await;
    assert_eq!(conflict.code, 1);
    assert!(
        conflict.stderr.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl-patch\" using fluxgate.dev/v1alpha1: .spec.git.file\n"
        ),
        "{}",
        conflict.stderr
    );
    t.ok_with(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &app,
    )
    .await;
    let got = t.json(&["get", "ma", "ssa", "--show-managed-fields"]).await;
    assert_eq!(
        got["spec"]["versions"],
        json!([
            {"format": "plain", "name": "app", "path": ".x"},
            {"format": "plain", "name": "chart", "path": ".spec.chart.spec.version"},
        ])
    );
    let owned = |manager: &str| -> Vec<String> {
        got["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["manager"] == manager)
            .flat_map(|e| {
                e["fieldsV1"]["f:spec"]["f:versions"]
                    .as_object()
                    .map(|m| {
                        m.keys()
                            .filter(|k| k.starts_with("k:"))
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    assert_eq!(owned("kubectl"), [r#"k:{"name":"chart"}"#]);
    assert_eq!(owned("kubectl-patch"), [r#"k:{"name":"app"}"#]);
    // Applying no items drops the applier's own and leaves the other's.
    t.ok_with(
        &["apply", "--server-side", "-f", "-"],
        &app.replace(
            "  versions:\n  - {name: chart, path: .spec.chart.spec.version}\n",
            "  versions: []\n",
        ),
    )
    .await;
    assert_eq!(
        t.ok(&[
            "get",
            "ma",
            "ssa",
            "-o",
            "jsonpath={.spec.versions[*].name}"
        ])
        .await,
        "app"
    );
}

pub async fn delete_waits_for_finalizer_removal(t: &Target) {
    t.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [kubesim.dev/hold]}\n",
    )
    .await;
    t.ok(&["delete", "cm", "held", "--wait=false"]).await;
    let held = t.json(&["get", "cm", "held"]).await;
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let waiter = t
        .cmd(&["wait", "--for=delete", "cm/held", "--timeout=20s"])
        .spawn()
        .unwrap();
    t.watch_opened("configmaps").await;
    t.ok(&[
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
    let gone = t.run(&["get", "cm", "held"]).await;
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr.trim(),
        "Error from server (NotFound): configmaps \"held\" not found"
    );
}

pub async fn wait_for_condition_and_jsonpath(t: &Target) {
    with_samples(t).await;
    let waiter = t
        .cmd(&[
            "wait",
            "--for=condition=Ready",
            "gitrepository/apps",
            "--timeout=20s",
        ])
        .spawn()
        .unwrap();
    t.watch_opened("gitrepositories").await;
    t.ok(&["patch", "gitrepository", "apps", "--subresource", "status", "--type", "merge", "-p",
        r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"stored artifact","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#]).await;
    let out = waiter.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "gitrepository.source.toolkit.fluxcd.io/apps condition met\n"
    );
    let table = t.ok(&["get", "gitrepository", "apps"]).await;
    assert!(
        table.contains("True") && table.contains("stored artifact"),
        "{table}"
    );

    // A jsonpath wait on a ManagedApp's status, met by a status write made while it watches.
    t.ok_with(&["apply", "-f", "-"], &managed_app("db", "apps/db.yaml"))
        .await;
    let waiter = t
        .cmd(&[
            "wait",
            "--for=jsonpath={.status.current}=chart-2",
            "managedapp/db",
            "--timeout=20s",
        ])
        .spawn()
        .unwrap();
    t.watch_opened("managedapps").await;
    t.ok(&[
        "patch",
        "managedapp",
        "db",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"current":"chart-2"}}"#,
    ])
    .await;
    let out = waiter.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "managedapp.fluxgate.dev/db condition met\n"
    );
    // Defaults count: the CRD filled in spec.updatePolicy.auto.
    t.ok(&[
        "wait",
        "--for=jsonpath={.spec.updatePolicy.auto}=none",
        "managedapp/db",
        "--timeout=5s",
    ])
    .await;
    // A condition that never comes: exit 1 after the timeout, with kubectl's words.
    let never = t
        .run(&[
            "wait",
            "--for=condition=Ready",
            "managedapp/db",
            "--timeout=1s",
        ])
        .await;
    assert_eq!(never.code, 1);
    assert_eq!(
        never.stderr.trim(),
        "error: timed out waiting for the condition on managedapps/db"
    );
}

pub async fn get_watch_with_request_timeout(t: &Target) {
    t.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {n: '0'}\n",
    )
    .await;
    let watcher = t
        .cmd(&["get", "cm", "watched", "--watch", "--request-timeout=3s"])
        .spawn()
        .unwrap();
    t.watch_opened("configmaps").await;
    t.ok(&[
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
}

/// `kubectl get --watch -o json` prints each version of the object as it changes; the
/// ConfigMap is made by `kubectl create` (a protobuf body), so its metadata is exactly what
/// the server fills in.
pub async fn get_watch_json_sees_an_update(t: &Target) {
    t.ok(&["create", "configmap", "w", "--from-literal=n=0"])
        .await;
    let watcher = t
        .cmd(&[
            "get",
            "cm",
            "w",
            "--watch",
            "-o",
            "json",
            "--request-timeout=3s",
        ])
        .spawn()
        .unwrap();
    t.watch_opened("configmaps").await;
    t.ok(&[
        "patch",
        "cm",
        "w",
        "--type=merge",
        "-p",
        r#"{"data":{"n":"1"}}"#,
    ])
    .await;
    let out = tokio::time::timeout(Duration::from_secs(15), watcher.wait_with_output())
        .await
        .expect("watch ended by its timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let objects: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("watch output is a stream of JSON objects ({e}):\n{text}"));
    assert_eq!(objects.len(), 2, "the object, then its update:\n{text}");
    assert_eq!(objects[0]["data"], json!({"n": "0"}));
    assert_eq!(objects[1]["data"], json!({"n": "1"}));
    for o in &objects {
        assert_eq!(o["kind"], "ConfigMap");
        let keys: Vec<&str> = o["metadata"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "creationTimestamp",
                "name",
                "namespace",
                "resourceVersion",
                "uid"
            ],
            "{o}"
        );
    }
    let rv = |o: &Value| -> u64 {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rv(&objects[1]) > rv(&objects[0]));
}

pub async fn create_generators_send_protobuf(t: &Target) {
    let made = format!("{}-made", t.namespace);
    t.ok(&["create", "namespace", &made]).await;
    t.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        &made,
        "--from-literal=a=b",
    ])
    .await;
    t.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        &made,
        "--from-literal=p=q",
    ])
    .await;
    assert_eq!(
        t.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            &made,
            "-o",
            "jsonpath={.data.p}"
        ])
        .await,
        "cQ=="
    );
    assert_eq!(
        t.ok(&["get", "cm", "c", "-n", &made, "-o", "jsonpath={.data.a}"])
            .await,
        "b"
    );
    // kubectl waits until the namespace and its contents are gone.
    t.ok(&["delete", "namespace", &made]).await;
    let gone = t.run(&["get", "ns", &made]).await;
    assert_eq!(gone.code, 1, "the namespace is gone");
    assert_eq!(
        gone.stderr.trim(),
        format!("Error from server (NotFound): namespaces \"{made}\" not found")
    );
}

pub async fn stale_replace_is_a_conflict(t: &Target) {
    t.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: r}\ndata: {n: '0'}\n",
    )
    .await;
    let stale = t.ok(&["get", "cm", "r", "-o", "json"]).await;
    t.ok(&[
        "patch",
        "cm",
        "r",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"n":"1"}}"#,
    ])
    .await;
    let out = t.run_with(&["replace", "-f", "-"], &stale).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be fulfilled on configmaps \"r\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

/// `kubectl get` tables: Fluxgate's printer columns (priority 1 only with `-o wide`), empty
/// cells for absent status, built-in Pods (with their `-o wide` columns) and ConfigMaps, and
/// the client-side `custom-columns`, `jsonpath` and `name` outputs over defaulted fields.
pub async fn tables_of_crds_and_builtins(t: &Target) {
    t.with_crds().await;
    t.ok_with(&["apply", "-f", "-"], &managed_app("db", "apps/db.yaml"))
        .await;
    t.ok_with(
        &["apply", "-f", "-"],
        &managed_app("idle", "apps/idle.yaml"),
    )
    .await;
    t.ok(&[
        "patch",
        "managedapp",
        "db",
        "--subresource=status",
        "--type=merge",
        "-p",
        READY_STATUS,
    ])
    .await;

    let table = t.ok(&["get", "managedapps"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        words(lines[0]),
        [
            "NAME",
            "SOURCE",
            "CURRENT",
            "AVAILABLE",
            "READY",
            "PROTECTED",
            "AGE"
        ]
    );
    let db = cells(lines[1]);
    assert_eq!(
        db[..6],
        ["db", "db", "chart=1.0.0", "chart=1.1.0", "True", "False"],
        "{table}"
    );
    assert!(db[6].ends_with('s'), "an age: {table}");
    // Absent status: the columns are empty (the server's cells are null).
    assert_eq!(words(lines[2]).len(), 3, "{table}");
    assert_eq!(words(lines[2])[..2], ["idle", "idle"], "{table}");

    let wide = t.ok(&["get", "ma", "-o", "wide"]).await;
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        words(lines[0]),
        [
            "NAME",
            "SOURCE",
            "CURRENT",
            "AVAILABLE",
            "READY",
            "PROTECTED",
            "AGE",
            "MESSAGE"
        ]
    );
    assert_eq!(
        cells(lines[1]).last().map(String::as_str),
        Some("watching for updates"),
        "{wide}"
    );
    let none = t.run(&["get", "upgraderequests"]).await;
    assert!(none.ok() && none.stdout.is_empty());
    assert_eq!(
        none.stderr.trim(),
        format!("No resources found in {} namespace.", t.namespace)
    );

    let columns = t
        .ok(&[
            "get",
            "ma",
            "-o",
            "custom-columns=NAME:.metadata.name,KIND:.spec.source.kind,VERSIONS:.spec.versions[*].name,AUTO:.spec.updatePolicy.auto,MISSING:.status.nope",
        ])
        .await;
    let rows: Vec<Vec<&str>> = columns.lines().map(words).collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "KIND", "VERSIONS", "AUTO", "MISSING"],
            vec!["db", "HelmRelease", "chart", "none", "<none>"],
            vec!["idle", "HelmRelease", "chart", "none", "<none>"],
        ]
    );
    let path = t
        .ok(&[
            "get",
            "ma",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}:{.spec.snapshots.retention.maxCount}:{.spec.health.timeout}{"\n"}{end}"#,
        ])
        .await;
    assert_eq!(path, "db:3:5m\nidle:3:5m\n");
    assert_eq!(
        t.ok(&["get", "ma", "db", "-o", "name"]).await,
        "managedapp.fluxgate.dev/db\n"
    );

    // A Pod no node can take stays Pending, without IP or node, on both servers.
    t.ok_with(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stuck, labels: {app: x}}\nspec:\n  \
         nodeSelector: {nowhere: 'true'}\n  containers: [{name: c, image: busybox}, {name: d, image: busybox}]\n",
    )
    .await;
    let pods = t.ok(&["get", "pod", "stuck"]).await;
    let lines: Vec<&str> = pods.lines().collect();
    assert_eq!(
        words(lines[0]),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(words(lines[1])[..4], ["stuck", "0/2", "Pending", "0"]);
    let wide = t.ok(&["get", "pod", "stuck", "-o", "wide"]).await;
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{wide}"
    );
    let row = words(lines[1]);
    assert_eq!(row[..4], ["stuck", "0/2", "Pending", "0"]);
    assert_eq!(row[5..], ["<none>", "<none>", "<none>", "<none>"], "{wide}");

    t.ok(&[
        "create",
        "configmap",
        "two",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])
    .await;
    let cms = t.ok(&["get", "cm", "two", "-o", "wide"]).await;
    let lines: Vec<&str> = cms.lines().collect();
    assert_eq!(words(lines[0]), ["NAME", "DATA", "AGE"]);
    assert_eq!(words(lines[1])[..2], ["two", "2"]);
}

/// The admin of both servers may do anything: `kubectl auth can-i` says `yes` (exit 0), for
/// built-in and custom resources, subresources and non-resource URLs; `--list` shows the
/// rules a `system:masters` user has on a real cluster; `auth whoami` names that user.
pub async fn auth_can_i_and_whoami(t: &Target) {
    t.with_crds().await;
    for args in [
        &["auth", "can-i", "create", "configmaps"][..],
        &["auth", "can-i", "get", "managedapps.fluxgate.dev"],
        &[
            "auth",
            "can-i",
            "patch",
            "upgraderequests",
            "--subresource=status",
        ],
        &[
            "auth",
            "can-i",
            "delete",
            "helmreleases",
            "--all-namespaces",
        ],
        &["auth", "can-i", "get", "/healthz"],
    ] {
        let out = t.run(args).await;
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "yes\n"),
            "kubectl {args:?}: {}",
            out.stderr
        );
    }
    let list = t.ok(&["auth", "can-i", "--list"]).await;
    let rows: Vec<Vec<&str>> = list.lines().map(words).collect();
    let expected: Vec<Vec<&str>> = [
        "Resources Non-Resource URLs Resource Names Verbs",
        "*.* [] [] [*]",
        "[*] [] [*]",
        "selfsubjectreviews.authentication.k8s.io [] [] [create]",
        "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
        "selfsubjectrulesreviews.authorization.k8s.io [] [] [create]",
        "[/api/*] [] [get]",
        "[/api] [] [get]",
        "[/apis/*] [] [get]",
        "[/apis] [] [get]",
        "[/healthz] [] [get]",
        "[/healthz] [] [get]",
        "[/livez] [] [get]",
        "[/livez] [] [get]",
        "[/openapi/*] [] [get]",
        "[/openapi] [] [get]",
        "[/readyz] [] [get]",
        "[/readyz] [] [get]",
        "[/version/] [] [get]",
        "[/version/] [] [get]",
        "[/version] [] [get]",
        "[/version] [] [get]",
    ]
    .iter()
    .map(|l| words(l))
    .collect();
    assert_eq!(rows, expected, "{list}");

    let who = t.json(&["auth", "whoami"]).await;
    assert_eq!(who["kind"], "SelfSubjectReview");
    assert_eq!(who["status"]["userInfo"]["username"], "admin");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );
}

/// Runs `kubectl explain` until it answers: the real server publishes a new CRD's OpenAPI a
/// moment after the CRD is Established.
async fn explain(t: &Target, what: &[&str]) -> String {
    let mut args = vec!["explain"];
    args.extend(what);
    let mut last = String::new();
    let mut found = None;
    t.eventually(&format!("kubectl explain {what:?}"), async || {
        let out = t.run(&args).await;
        if out.ok() {
            found = Some(out.stdout);
            true
        } else {
            last = out.stderr;
            false
        }
    })
    .await;
    found.unwrap_or_else(|| panic!("kubectl explain {what:?}: {last}"))
}

/// `kubectl explain` reads the OpenAPI v3 the server builds from CRDs: the kind's own fields
/// with descriptions, enums and required marks, plus the `apiVersion`, `kind` and `metadata`
/// (an ObjectMeta reference) every kind has.
pub async fn explain_flux_kind_and_managed_app(t: &Target) {
    t.with_crds().await;
    let top = explain(t, &["managedapp"]).await;
    assert!(
        top.starts_with("GROUP:      fluxgate.dev\nKIND:       ManagedApp\nVERSION:    v1alpha1\n\nDESCRIPTION:\n    ManagedApp puts one Flux-deployed application under Fluxgate's care"),
        "{top}"
    );
    for line in [
        "  apiVersion\t<string>\n    APIVersion defines the versioned schema of this representation of an object.\n",
        "  kind\t<string>\n    Kind is a string value representing the REST resource this object\n",
        "  metadata\t<ObjectMeta>\n    Standard object's metadata. More info:\n",
        "  spec\t<Object> -required-\n",
        "  status\t<Object>\n    What Fluxgate knows about the app now.\n",
    ] {
        assert!(top.contains(line), "missing {line:?} in:\n{top}");
    }
    let kind = explain(t, &["managedapp.spec.source.kind"]).await;
    assert!(
        kind.contains("FIELD: kind <string>\nENUM:\n    HelmRelease\n    Kustomization\n"),
        "{kind}"
    );
    let owners = explain(t, &["managedapp.metadata.ownerReferences"]).await;
    assert!(
        owners.contains("FIELD: ownerReferences <[]OwnerReference>\n"),
        "{owners}"
    );
    assert!(owners.contains("  uid\t<string> -required-\n"), "{owners}");
    let meta = explain(t, &["managedapp.metadata", "--recursive"]).await;
    for line in [
        "  creationTimestamp\t<string>\n",
        "  labels\t<map[string]string>\n",
        "  managedFields\t<[]ManagedFieldsEntry>\n",
        "    fieldsV1\t<FieldsV1>\n",
    ] {
        assert!(meta.contains(line), "missing {line:?} in:\n{meta}");
    }

    let hr = explain(t, &["helmrelease.spec.chart.spec", "--recursive"]).await;
    assert!(
        hr.starts_with("GROUP:      helm.toolkit.fluxcd.io\nKIND:       HelmRelease\nVERSION:    v2\n\nFIELD: spec <Object>\n"),
        "{hr}"
    );
    for line in [
        "  chart\t<string> -required-\n",
        "  sourceRef\t<Object> -required-\n",
        "    kind\t<string> -required-\n",
    ] {
        assert!(hr.contains(line), "missing {line:?} in:\n{hr}");
    }
    let top = explain(t, &["helmrelease"]).await;
    // The server's own words for metadata, not the CRD's bare `type: object`.
    assert!(
        top.contains("  metadata\t<ObjectMeta>\n    Standard object's metadata. More info:\n"),
        "{top}"
    );
}

/// `kubectl diff` dry-runs the apply on the server: exit 0 without changes, 1 with (the
/// spec change and the generation it would bump), 2 when the server refuses the object.
pub async fn apply_then_diff(t: &Target) {
    t.with_crds().await;
    let app = managed_app("db", "apps/db.yaml");
    t.ok_with(&["apply", "-f", "-"], &app).await;
    let same = t.run_with(&["diff", "-f", "-"], &app).await;
    assert_eq!(
        (same.code, same.stdout.as_str(), same.stderr.as_str()),
        (0, "", "")
    );
    let changed = t
        .run_with(
            &["diff", "-f", "-"],
            &app.replace("apps/db.yaml", "apps/db2.yaml"),
        )
        .await;
    assert_eq!(changed.code, 1, "{}", changed.stderr);
    let lines: BTreeSet<&str> = changed
        .stdout
        .lines()
        .filter(|l| l.starts_with(['-', '+']) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect();
    assert_eq!(
        lines,
        BTreeSet::from([
            "-  generation: 1",
            "+  generation: 2",
            "-    file: apps/db.yaml",
            "+    file: apps/db2.yaml",
        ]),
        "{}",
        changed.stdout
    );
    // Server-side diff too.
    let ssa = t
        .run_with(
            &["diff", "--server-side", "--force-conflicts", "-f", "-"],
            &app.replace("apps/db.yaml", "apps/db3.yaml"),
        )
        .await;
    assert_eq!(ssa.code, 1, "{}", ssa.stderr);
    assert!(
        ssa.stdout.contains("+    file: apps/db3.yaml"),
        "{}",
        ssa.stdout
    );
    // An object that does not exist yet: all of it is new.
    let new = t
        .run_with(
            &["diff", "-f", "-"],
            &managed_app("fresh", "apps/fresh.yaml"),
        )
        .await;
    assert_eq!(new.code, 1);
    assert!(new.stdout.contains("+  name: fresh\n"), "{}", new.stdout);
    // Nothing was written by any of them.
    assert_eq!(
        t.ok(&[
            "get",
            "ma",
            "db",
            "-o",
            "jsonpath={.metadata.generation} {.spec.git.file}"
        ])
        .await,
        "1 apps/db.yaml"
    );
    assert!(!t.run(&["get", "ma", "fresh"]).await.ok());
    let invalid = t
        .run_with(
            &["diff", "-f", "-"],
            &app.replace("kind: HelmRelease", "kind: Nope"),
        )
        .await;
    assert_eq!(invalid.code, 2, "{}", invalid.stderr);
    assert!(
        invalid.stderr.contains(
            "* spec.source.kind: Unsupported value: \"Nope\": supported values: \"HelmRelease\", \"Kustomization\""
        ),
        "{}",
        invalid.stderr
    );
}

/// `kubectl delete --cascade=foreground`: the owner stays (deletionTimestamp and the
/// `foregroundDeletion` finalizer) until every dependent whose reference has
/// `blockOwnerDeletion` is gone; kubectl waits for that. A dependent without it is deleted
/// too but does not hold the owner.
pub async fn delete_cascade_foreground(t: &Target) {
    t.ok(&["create", "configmap", "owner"]).await;
    let uid = t
        .ok(&["get", "cm", "owner", "-o", "jsonpath={.metadata.uid}"])
        .await;
    for (name, block, finalizers) in [
        ("blocking", true, "[example.com/hold]"),
        ("free", true, "[]"),
        ("unblocking", false, "[example.com/hold]"),
    ] {
        t.ok_with(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  finalizers: {finalizers}\n  \
                 ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}, blockOwnerDeletion: {block}}}]\n"
            ),
        )
        .await;
    }
    let deleting = t
        .cmd(&[
            "delete",
            "cm",
            "owner",
            "--cascade=foreground",
            "--timeout=30s",
        ])
        .spawn()
        .unwrap();
    t.eventually("the dependents to be deleted", async || {
        !t.run(&["get", "cm", "free"]).await.ok()
            && t.ok(&[
                "get",
                "cm",
                "blocking",
                "unblocking",
                "-o",
                "jsonpath={range .items[*]}{.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ])
            .await
            .lines()
            .filter(|l| !l.is_empty())
            .count()
                == 2
    })
    .await;
    let owner = t.json(&["get", "cm", "owner"]).await;
    assert!(
        owner["metadata"]["deletionTimestamp"].is_string(),
        "{owner}"
    );
    assert_eq!(
        owner["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    t.ok(&[
        "patch",
        "cm",
        "blocking",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let out = tokio::time::timeout(Duration::from_secs(40), deleting.wait_with_output())
        .await
        .expect("kubectl delete returns once the owner is gone")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "configmap \"owner\" deleted from {} namespace\n",
            t.namespace
        )
    );
    // The owner went although `unblocking` (blockOwnerDeletion: false) is still there.
    let left = t
        .ok(&[
            "get",
            "cm",
            "-o",
            "custom-columns=NAME:.metadata.name,FINALIZERS:.metadata.finalizers",
            "--no-headers",
        ])
        .await;
    let names: Vec<Vec<&str>> = left
        .lines()
        .map(words)
        .filter(|w| w[0] != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, [vec!["unblocking", "[example.com/hold]"]]);
    t.ok(&[
        "patch",
        "cm",
        "unblocking",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    t.eventually("unblocking to go", async || {
        !t.run(&["get", "cm", "unblocking"]).await.ok()
    })
    .await;
}

/// Refusals of objects that break the ManagedApp CRD's schema: the exit code, the first line
/// and every `* field: message` line (as a set; the real order varies) are the real server's.
/// Errors that block CEL (enum, required, too long, wrong type) add the `<nil>` line and no
/// CEL message; other errors (pattern, minimum) still let the CEL rules run.
pub async fn crd_schema_violations_are_refused_with_the_real_messages(t: &Target) {
    t.with_crds().await;
    let refused = async |name: &str, spec: &str| {
        let out = t
            .run_with(
                &["apply", "-f", "-"],
                &format!(
                    "apiVersion: fluxgate.dev/v1alpha1\nkind: ManagedApp\nmetadata: {{name: {name}}}\nspec:\n{spec}"
                ),
            )
            .await;
        assert_eq!(out.code, 1, "{name}: {}", out.stderr);
        assert!(
            out.stderr
                .starts_with(&format!("The ManagedApp \"{name}\" is invalid: ")),
            "{}",
            out.stderr
        );
        error_lines(&out.stderr)
    };
    let set =
        |lines: &[&str]| -> BTreeSet<String> { lines.iter().map(|l| l.to_string()).collect() };
    const NOT_CHECKED: &str = "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

    let blocking = refused(
        "blocking",
        "  source: {kind: Deployment, name: Db_1}\n  git: {file: /etc/passwd, branch: '-x'}\n  \
         versions:\n  - {name: chart, path: spec}\n  - {name: chart, path: .x, format: weird}\n  \
         updatePolicy: {auto: always, window: {schedule: '* *'}}\n  health: {timeout: 0s}\n",
    )
    .await;
    assert_eq!(
        blocking,
        set(&[
            "spec.source.name: Invalid value: \"Db_1\": spec.source.name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'",
            "spec.source.kind: Unsupported value: \"Deployment\": supported values: \"HelmRelease\", \"Kustomization\"",
            "spec.git.branch: Invalid value: \"-x\": spec.git.branch in body should match '^[^\\s~^:?*\\[\\\\-][^\\s~^:?*\\[\\\\]*$'",
            "spec.versions[0].path: Invalid value: \"spec\": spec.versions[0].path in body should match '^[.\\[]'",
            "spec.versions[1].format: Unsupported value: \"weird\": supported values: \"plain\", \"image\"",
            "spec.updatePolicy.auto: Unsupported value: \"always\": supported values: \"none\", \"patch\", \"minor\", \"major\"",
            "spec.updatePolicy.window.schedule: Invalid value: \"* *\": spec.updatePolicy.window.schedule in body should be at least 9 chars long",
            "spec.updatePolicy.window.duration: Required value",
            "spec.versions[1]: Duplicate value: {\"name\":\"chart\"}",
            NOT_CHECKED,
        ])
    );

    let required = refused(
        "required",
        "  git: {}\n  snapshots: {retention: {maxCount: 0}}\n",
    )
    .await;
    assert_eq!(
        required,
        set(&[
            "spec.snapshots.retention.maxCount: Invalid value: 0: spec.snapshots.retention.maxCount in body should be greater than or equal to 1",
            "spec.git.file: Required value",
            "spec.source: Required value",
            NOT_CHECKED,
        ])
    );

    let cel = refused(
        "cel",
        "  source: {kind: HelmRelease, name: db}\n  git: {file: /etc/passwd, url: not a url}\n  \
         versions:\n  - {name: chart, path: .spec.x, file: a/../../b}\n  health: {timeout: 0s}\n  \
         snapshots: {retention: {maxCount: 0}}\n",
    )
    .await;
    assert_eq!(
        cel,
        set(&[
            "spec.git.file: Invalid value: \"/etc/passwd\": must be a path relative to the repository root: no leading '/', no '..' segment, no backslash (for example apps/db/helmrelease.yaml)",
            "spec.git.url: Invalid value: \"not a url\": must be a git URL: https://…, ssh://…, file://… or user@host:path",
            "spec.health.timeout: Invalid value: \"0s\": must be a positive duration such as 30s, 5m or 1h30m",
            "spec.snapshots.retention.maxCount: Invalid value: 0: spec.snapshots.retention.maxCount in body should be greater than or equal to 1",
            "spec.versions[0].file: Invalid value: \"a/../../b\": must be a path relative to the repository root: no leading '/', no '..' segment, no backslash (for example apps/db/helmrelease.yaml)",
        ])
    );

    // One error alone: the message is on the first line.
    let one = t
        .run_with(
            &["apply", "-f", "-"],
            &managed_app("one", "apps/one.yaml").replace("kind: HelmRelease", "kind: Nope"),
        )
        .await;
    assert_eq!(one.code, 1);
    assert_eq!(
        one.stderr,
        format!(
            "The ManagedApp \"one\" is invalid: \n* spec.source.kind: Unsupported value: \"Nope\": supported values: \"HelmRelease\", \"Kustomization\"\n* {NOT_CHECKED}\n"
        )
    );

    // Unknown fields: kubectl asks for strict validation when creating.
    let unknown = t
        .run_with(
            &["apply", "-f", "-"],
            &managed_app("unknown", "apps/u.yaml").replace("spec:\n", "spec:\n  bogus: 1\n"),
        )
        .await;
    assert_eq!(unknown.code, 1);
    assert_eq!(
        unknown.stderr.trim(),
        "Error from server (BadRequest): error when creating \"STDIN\": ManagedApp in version \"v1alpha1\" cannot be handled as a ManagedApp: strict decoding error: unknown field \"spec.bogus\""
    );
    // Nothing of it was stored.
    let none = t.run(&["get", "ma"]).await;
    assert_eq!(
        none.stderr.trim(),
        format!("No resources found in {} namespace.", t.namespace)
    );
}
