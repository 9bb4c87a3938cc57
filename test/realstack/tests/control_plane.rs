//! The real control plane works as the rest of the project will rely on: it comes up and
//! serves kube-rs and its kubectl; the real scheduler, controller-manager and KWOK run a
//! Deployment's pods on the fake node and garbage-collect them, bind a StatefulSet's claim to
//! a volume and run its pod, and empty and remove a deleted namespace; service-account tokens
//! authenticate and RBAC binds them; the audit log records requests; and nothing of it is
//! left running after the test process is killed.
//!
//! All tests of this file share one control plane (one per test process). Without the
//! binaries each test prints `SKIPPED: …` and passes, unless FLUXGATE_REQUIRE_REAL_STACK=1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use realstack::{NODE_NAME, RealCluster};
use serde_json::json;

use realstack::testing::{eventually, namespace};

#[tokio::test]
async fn control_plane_comes_up_and_serves_kube_rs_and_kubectl() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    eprintln!(
        "control plane startup: {:.1} s",
        cluster.startup_time().as_secs_f64()
    );
    cluster.check_running().expect("every component is running");
    let client = cluster.client().await.expect("admin client");

    let names: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing namespaces")
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    for expected in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            names.iter().any(|n| n == expected),
            "namespace {expected} missing from [{}]",
            names.join(", ")
        );
    }

    // The binaries say which release they are (build.sh stamps the version).
    let version = client.apiserver_version().await.expect("GET /version");
    let built = cluster
        .versions()
        .get("kubernetes")
        .expect("bin/VERSIONS names the kubernetes release");
    assert_eq!(&version.git_version, built, "/version of the apiserver");
    assert_eq!(
        format!("v{}.{}", version.major, version.minor),
        built.rsplit_once('.').unwrap().0,
        "major.minor of /version"
    );

    // The kubectl of the same release talks to it with the admin kubeconfig.
    let out = Command::new(cluster.kubectl())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl get nodes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), NODE_NAME);
}

#[tokio::test]
async fn deployment_pods_run_on_the_kwok_node_and_are_garbage_collected() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "deploy-gc").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1.0" }] },
            },
        },
    }))
    .unwrap();
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating Deployment web");

    // KCM's deployment and replicaset controllers make the pods, the scheduler binds
    // them to the only node, KWOK plays the kubelet.
    let running = eventually(
        "2 pods of web Running on the KWOK node",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let seen: Vec<String> = list
                .items
                .iter()
                .map(|p| {
                    format!(
                        "{} on {}: {}",
                        p.metadata.name.as_deref().unwrap_or("?"),
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .unwrap_or("no node"),
                        p.status
                            .as_ref()
                            .and_then(|s| s.phase.as_deref())
                            .unwrap_or("no phase")
                    )
                })
                .collect();
            let running: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE_NAME)
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .collect();
            if running.len() == 2 && list.items.len() == 2 {
                Ok(list.items.clone())
            } else {
                Err(seen.join("; "))
            }
        },
    )
    .await;
    eprintln!(
        "2 pods Running on {NODE_NAME} {:.1} s after the Deployment was created",
        started.elapsed().as_secs_f64()
    );
    // Made by the ReplicaSet the Deployment owns, as the real controllers chain them.
    let rs = replica_sets
        .list(&ListParams::default())
        .await
        .expect("listing ReplicaSets")
        .items;
    assert_eq!(rs.len(), 1, "one ReplicaSet for Deployment web");
    let rs_owner = rs[0].metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(rs_owner.len(), 1);
    assert_eq!(
        (rs_owner[0].kind.as_str(), rs_owner[0].name.as_str()),
        ("Deployment", "web")
    );
    for pod in &running {
        let owner = pod.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(
            owner.first().map(|o| o.uid.clone()),
            rs[0].meta().uid.clone()
        );
        // KWOK's pod-ready stage gives them an IP from its --cidr and Ready containers.
        let status = pod.status.as_ref().unwrap();
        assert!(
            status
                .pod_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.244.")),
            "pod IP {}, not from kwok's --cidr 10.244.0.0/16",
            status.pod_ip.as_deref().unwrap_or("none")
        );
        // The ServiceAccount admission plugin ran: the default SA and its token volume.
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name.starts_with("kube-api-access-")),
            "pod {} has no projected service-account token volume",
            pod.metadata.name.as_deref().unwrap_or("?")
        );
    }

    // Deleting the Deployment: the garbage collector removes the ReplicaSet and the pods
    // (KWOK's pod-delete stage finishes them as a kubelet would).
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("deleting Deployment web");
    eventually(
        "ReplicaSets and pods of web to be gone",
        Duration::from_secs(60),
        || async {
            let rs = replica_sets
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let left = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            if rs.items.is_empty() && left.items.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} ReplicaSets, pods [{}]",
                    rs.items.len(),
                    left.items
                        .iter()
                        .filter_map(|p| p.metadata.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_binds_them() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "token-rbac").await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "reader" } })).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("creating ServiceAccount reader");
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "configmap-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }],
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("creating Role configmap-reader");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns }],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating RoleBinding reader");

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request("reader", &PostParams::default(), &request)
        .await
        .expect("TokenRequest for reader")
        .status
        .expect("TokenRequest status")
        .token
        .expect("a token in the TokenRequest status");
    assert_eq!(token.split('.').count(), 3, "a JWT");

    let as_reader = cluster.token_client(&token).await.expect("token client");
    // Who the apiserver says we are.
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
    }))
    .unwrap();
    let review = Api::<SelfSubjectReview>::all(as_reader.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectReview as reader");
    let user = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:reader").as_str())
    );
    assert!(
        user.groups
            .unwrap_or_default()
            .contains(&"system:serviceaccounts".to_string())
    );

    // Allowed by the Role …
    Api::<ConfigMap>::namespaced(as_reader.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("listing configmaps as reader (the Role allows it)");
    // … and nothing else: another resource, another namespace, a write.
    let forbidden = |what: &str, r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        Err(e) => panic!("{what} as reader: expected 403 Forbidden, got {e}"),
        Ok(()) => panic!("{what} as reader: expected 403 Forbidden, but it was allowed"),
    };
    forbidden(
        "listing secrets",
        Api::<Secret>::namespaced(as_reader.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    );
    forbidden(
        "listing configmaps in default",
        Api::<ConfigMap>::namespaced(as_reader.clone(), "default")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    );
    let cm: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "x" } })).unwrap();
    forbidden(
        "creating a configmap",
        Api::<ConfigMap>::namespaced(as_reader.clone(), &ns)
            .create(&PostParams::default(), &cm)
            .await
            .map(|_| ()),
    );
    // A forged token is refused outright.
    let forged = format!("{}x", token);
    let bad = cluster.token_client(&forged).await.expect("token client");
    match Api::<ConfigMap>::namespaced(bad, &ns)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 401 => {}
        Err(e) => panic!("a forged token: expected 401 Unauthorized, got {e}"),
        Ok(_) => panic!("a forged token: expected 401 Unauthorized, but the list was allowed"),
    }
}

#[tokio::test]
async fn the_audit_log_records_requests() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "audited").await;
    let name = format!("audited-{}", std::process::id());
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": name }, "data": { "k": "v" } }))
            .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("creating the audited ConfigMap");

    // The log backend writes each event as one JSON line when the request completes.
    let event = eventually(
        "the audit event of the ConfigMap's create",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(cluster.audit_log())
                .map_err(|e| format!("reading {}: {e}", cluster.audit_log().display()))?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| {
                    e["verb"] == "create"
                        && e["objectRef"]["resource"] == "configmaps"
                        && e["objectRef"]["name"] == name.as_str()
                })
                .ok_or_else(|| format!("{} lines, none about {name}", text.lines().count()))
        },
    )
    .await;
    assert_eq!(event["kind"], "Event");
    assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(event["level"], "Metadata", "the policy's level");
    assert_eq!(event["stage"], "ResponseComplete");
    assert_eq!(event["user"]["username"], "admin");
    assert!(
        event["user"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:masters")),
        "{event}"
    );
    assert_eq!(event["objectRef"]["namespace"], ns.as_str());
    assert_eq!(event["responseStatus"]["code"], 201);
    // Leases are excluded by the policy.
    let text = std::fs::read_to_string(cluster.audit_log()).unwrap();
    assert!(
        !text.contains("\"resource\":\"leases\""),
        "the policy drops Lease requests, yet the audit log has some"
    );
}

#[tokio::test]
async fn statefulset_claims_bind_to_a_static_volume_and_its_pod_runs() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "sts-volume").await;
    // A pre-provisioned volume reserved for the claim the StatefulSet will make.
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": "sts-volume-data-db-0" },
        "spec": {
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "hostPath": { "path": "/nonexistent/realstack" },
            "claimRef": { "namespace": ns, "name": "data-db-0" },
        },
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("creating PersistentVolume sts-volume-data-db-0");
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db" },
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": { "containers": [{
                    "name": "db", "image": "registry.invalid/db:1.0",
                    "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                }] },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual",
                    "resources": { "requests": { "storage": "1Gi" } },
                },
            }],
        },
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sts)
        .await
        .expect("creating StatefulSet db");

    // The statefulset controller makes the claim and the pod, the PV binder binds the
    // claim, the scheduler (VolumeBinding) places the pod, KWOK runs it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(
        "claim data-db-0 Bound to sts-volume-data-db-0 and pod db-0 Running",
        Duration::from_secs(60),
        || async {
            let claim = claims
                .get_opt("data-db-0")
                .await
                .map_err(|e| e.to_string())?;
            let claim_state = claim.as_ref().map(|c| {
                (
                    c.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default(),
                    c.spec
                        .as_ref()
                        .and_then(|s| s.volume_name.clone())
                        .unwrap_or_default(),
                )
            });
            let pod = pods.get_opt("db-0").await.map_err(|e| e.to_string())?;
            let phase = pod
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let node = pod
                .as_ref()
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            match claim_state {
                Some((bound, volume))
                    if bound == "Bound"
                        && volume == "sts-volume-data-db-0"
                        && phase == "Running"
                        && node == NODE_NAME =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "claim {}, pod db-0 '{phase}' on '{node}'",
                    other
                        .map(|(p, v)| format!("'{p}' to '{v}'"))
                        .unwrap_or_else(|| "not made yet".into())
                )),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_objects_and_then_it() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "doomed").await;
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "inside" } })).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("creating ConfigMap doomed/inside");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("deleting namespace doomed");
    // The namespace controller empties it and removes its `kubernetes` finalizer.
    eventually(
        "namespace doomed to be gone",
        Duration::from_secs(60),
        || async {
            match namespaces.get_opt(&ns).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(n) => Err(format!(
                    "phase {}",
                    n.status.and_then(|s| s.phase).unwrap_or_default()
                )),
            }
        },
    )
    .await;
}

const CHILD_ENV: &str = "REALSTACK_TEST_CHILD_PIDFILE";

/// Run only as the child of `nothing_is_left_running_after_the_test_process_is_killed`:
/// starts the control plane, writes the pids of its processes and its directory, then
/// waits to be killed.
#[tokio::test]
#[ignore = "the child half of nothing_is_left_running_after_the_test_process_is_killed"]
async fn child_starts_a_control_plane_and_waits_to_be_killed() {
    let pidfile = PathBuf::from(std::env::var(CHILD_ENV).expect("run by the parent test"));
    let cluster = RealCluster::shared_or_skip().expect("the parent checked the binaries");
    let mut text = format!("dir {}\n", cluster.dir().display());
    for (name, pid) in cluster.pids() {
        text.push_str(&format!("{name} {pid}\n"));
    }
    let tmp = pidfile.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &pidfile).unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    panic!("not killed within 300 s");
}

fn process_alive(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S …": a zombie is dead, only not yet reaped.
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    (state != 'Z').then(|| {
        stat.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[test]
fn nothing_is_left_running_after_the_test_process_is_killed() {
    // The child starts a control plane of its own; this one only proves the binaries work.
    if RealCluster::shared_or_skip().is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_a_control_plane_and_waits_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, &pidfile)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the child test process");
    let deadline = Instant::now() + Duration::from_secs(150);
    while !pidfile.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the child test exited ({status}) before writing {}",
                pidfile.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the child wrote no pid file in 150 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&pidfile).unwrap();
    let mut pids = BTreeMap::new();
    let mut dir = None;
    for line in text.lines() {
        let (name, value) = line.split_once(' ').unwrap();
        if name == "dir" {
            dir = Some(PathBuf::from(value));
        } else {
            pids.insert(name.to_string(), value.parse::<u32>().unwrap());
        }
    }
    let dir = dir.expect("the child names its cluster directory");
    assert_eq!(
        pids.len(),
        realstack::BINARIES.len(),
        "6 components (all binaries but kubectl) and the watchdog, the child wrote:\n{text}"
    );
    for (name, pid) in &pids {
        assert!(
            process_alive(*pid).is_some(),
            "{name} (pid {pid}) should run before the kill"
        );
    }
    assert!(Path::new(&dir).join("etcd").is_dir());

    // What a test runner's timeout does: SIGKILL, no destructor runs.
    child.kill().expect("SIGKILL to the child test process");
    child.wait().unwrap();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(15);
    loop {
        let alive: Vec<String> = pids
            .iter()
            .filter_map(|(name, pid)| process_alive(*pid).map(|s| format!("{name}: {s}")))
            .collect();
        if alive.is_empty() && !dir.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "15 s after SIGKILL to the test process, still running: [{}]; {} exists: {}",
            alive.join(", "),
            dir.display(),
            dir.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "all {} processes gone and {} removed {:.1} s after the test process was killed",
        pids.len(),
        dir.display(),
        killed.elapsed().as_secs_f64()
    );
}

#[test]
fn a_cluster_of_its_own_stops_when_dropped() {
    let cluster = match RealCluster::start() {
        Ok(cluster) => cluster,
        Err(realstack::Unavailable::Skip(why)) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
        Err(realstack::Unavailable::Failed(why)) => {
            panic!("starting a second control plane: {why}")
        }
    };
    let pids = cluster.pids();
    let dir = cluster.dir().to_path_buf();
    assert_eq!(
        pids.len(),
        realstack::BINARIES.len(),
        "6 components (all binaries but kubectl) and the watchdog"
    );
    let started = Instant::now();
    drop(cluster);
    // Drop returns once the watchdog has finished: nothing may be left by then.
    let alive: Vec<String> = pids
        .iter()
        .filter_map(|(name, pid)| process_alive(*pid).map(|s| format!("{name}: {s}")))
        .collect();
    assert!(
        alive.is_empty(),
        "still running after drop: {}",
        alive.join(", ")
    );
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    eprintln!(
        "a dropped cluster stopped in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
