//! Our KWOK pod stages (`kwok-stages/`) honour what stories declare: a pod template
//! annotated `sim.fluxgate.dev/never-ready: "true"` runs but never becomes Ready (so its
//! Deployment has no ready or available replica), other pods become Ready, and a deleted pod
//! stays Terminating for its termination time (`sim.fluxgate.dev/termination-seconds`,
//! default 1 s) capped by its grace period before it is gone.
//!
//! Timings are asserted as lower bounds and generous upper bounds only: the machine is noisy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use realstack::{NEVER_READY_ANNOTATION, NODE_NAME, RealCluster, TERMINATION_SECONDS_ANNOTATION};
use serde_json::json;

use realstack::testing::{eventually, namespace};

const TIMEOUT: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: i32, never_ready: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": {
                    "labels": { "app": name },
                    // As the sims' chart renders it: always present, "true" or "false".
                    "annotations": { NEVER_READY_ANNOTATION: never_ready },
                },
                "spec": { "containers": [
                    { "name": "app", "image": "registry.invalid/app:1.0" },
                    { "name": "sidecar", "image": "registry.invalid/sidecar:1.0" },
                ] },
            },
        },
    }))
    .unwrap()
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn describe(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    format!(
        "{} {} Ready={} ContainersReady={}",
        pod.name_any(),
        status.phase.unwrap_or_default(),
        condition(pod, "Ready")
            .map(|c| c.status.as_str())
            .unwrap_or("-"),
        condition(pod, "ContainersReady")
            .map(|c| c.status.as_str())
            .unwrap_or("-"),
    )
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Result<Vec<Pod>, String> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?
        .items)
}

/// Whether the pod runs with every container started and running, but nothing Ready.
fn running_unready(pod: &Pod) -> bool {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.unwrap_or_default();
    status.phase.as_deref() == Some("Running")
        && containers.len() == 2
        && containers.iter().all(|c| {
            !c.ready
                && c.started == Some(true)
                && c.state.as_ref().and_then(|s| s.running.as_ref()).is_some()
        })
        && condition(pod, "Ready").is_some_and(|c| c.status == "False")
        && condition(pod, "ContainersReady").is_some_and(|c| c.status == "False")
}

#[tokio::test]
async fn a_never_ready_deployment_runs_without_ready_replicas_and_a_normal_one_gets_ready() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "stages-ready").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for d in [
        deployment("broken", 2, "true"),
        deployment("healthy", 2, "false"),
    ] {
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap_or_else(|e| panic!("creating Deployment {}: {e}", d.name_any()));
    }

    let healthy = eventually(
        "Deployment healthy: 2 ready and available",
        TIMEOUT,
        || async {
            let d = deployments
                .get("healthy")
                .await
                .map_err(|e| e.to_string())?;
            let s = d.status.clone().unwrap_or_default();
            (s.ready_replicas == Some(2) && s.available_replicas == Some(2))
                .then_some(d)
                .ok_or_else(|| {
                    format!(
                        "ready {:?}, available {:?}",
                        s.ready_replicas, s.available_replicas
                    )
                })
        },
    )
    .await;
    let available = healthy
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"));
    assert_eq!(available.and_then(|c| c.status).as_deref(), Some("True"));

    let broken = eventually("2 pods of broken Running, never Ready", TIMEOUT, || async {
        let list = pods_of(&pods, "broken").await?;
        (list.len() == 2 && list.iter().all(running_unready))
            .then_some(list.clone())
            .ok_or_else(|| list.iter().map(describe).collect::<Vec<_>>().join("; "))
    })
    .await;
    for pod in &broken {
        let ready = condition(pod, "Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app sidecar]"),
            "the kubelet's wording"
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(NODE_NAME)
        );
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        assert!(ip.starts_with("10.244."), "pod IP {ip}");
    }

    // And they stay so: nothing later makes them Ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = pods_of(&pods, "broken").await.unwrap();
    assert_eq!(later.len(), 2);
    for pod in &later {
        assert!(running_unready(pod), "{}", describe(pod));
    }
    let d = deployments.get("broken").await.unwrap();
    let s = d.status.unwrap_or_default();
    assert_eq!(s.replicas, Some(2));
    assert_eq!(s.ready_replicas.unwrap_or(0), 0, "ready replicas of broken");
    assert_eq!(
        s.available_replicas.unwrap_or(0),
        0,
        "available replicas of broken"
    );
    let available = s
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"));
    assert_eq!(
        available
            .as_ref()
            .map(|c| (c.status.as_deref(), c.reason.as_deref())),
        Some((Some("False"), Some("MinimumReplicasUnavailable")))
    );
}

/// A pod webhook of the test marks the pods it declares broken as they are created, whoever
/// creates them (here the real ReplicaSet controller): they run but never get Ready, and the
/// others of the same namespace are untouched.
#[tokio::test]
async fn pods_a_webhook_marks_as_they_are_created_never_get_ready() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "stages-webhook").await;
    let hook =
        realstack::webhook::PodWebhook::register(&client, "stages-webhook", Some(&ns), |pod| {
            let broken = pod.labels().get("app").map(String::as_str) == Some("marked");
            BTreeMap::from_iter(
                broken.then(|| (NEVER_READY_ANNOTATION.to_owned(), "true".to_owned())),
            )
        })
        .await
        .expect("registering the webhook");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // The API server calls a new webhook once its configuration cache has it: create
    // until a marked pod shows it (at most a second or two).
    for d in [
        deployment("marked", 1, "false"),
        deployment("plain", 1, "false"),
    ] {
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap_or_else(|e| panic!("creating Deployment {}: {e}", d.name_any()));
    }
    eventually(
        "the marked pod annotated, running, never Ready",
        TIMEOUT,
        || async {
            let list = pods_of(&pods, "marked").await?;
            let marked = list.iter().find(|p| {
                p.annotations()
                    .get(NEVER_READY_ANNOTATION)
                    .map(String::as_str)
                    == Some("true")
            });
            match marked {
                Some(p) if running_unready(p) => Ok(()),
                Some(p) => Err(describe(p)),
                None => {
                    // Created before the API server saw the webhook: make a new one.
                    for p in &list {
                        pods.delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Err("no marked pod yet".into())
                }
            }
        },
    )
    .await;
    eventually("the plain pod Ready", TIMEOUT, || async {
        let list = pods_of(&pods, "plain").await?;
        list.iter()
            .find(|p| condition(p, "Ready").is_some_and(|c| c.status == "True"))
            .map(|p| {
                assert_eq!(
                    p.annotations()
                        .get(NEVER_READY_ANNOTATION)
                        .map(String::as_str),
                    Some("false")
                )
            })
            .ok_or_else(|| list.iter().map(describe).collect::<Vec<_>>().join("; "))
    })
    .await;
    hook.unregister(&client)
        .await
        .expect("removing the webhook");
}

/// A bare pod on the KWOK node, Running and Ready.
async fn running_pod(pods: &Api<Pod>, name: &str, termination_seconds: Option<&str>) {
    let mut pod = json!({
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1.0" }] },
    });
    if let Some(seconds) = termination_seconds {
        pod["metadata"]["annotations"] = json!({ TERMINATION_SECONDS_ANNOTATION: seconds });
    }
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
    eventually(&format!("pod {name} Ready"), TIMEOUT, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        condition(&p, "Ready")
            .is_some_and(|c| c.status == "True")
            .then_some(())
            .ok_or_else(|| describe(&p))
    })
    .await;
}

/// Deletes the pod, checks it is Terminating a moment later, and returns how long it took
/// to be gone.
async fn terminate(pods: &Api<Pod>, name: &str, grace: Option<u32>) -> Duration {
    let params = DeleteParams {
        grace_period_seconds: grace,
        ..Default::default()
    };
    let started = Instant::now();
    pods.delete(name, &params)
        .await
        .unwrap_or_else(|e| panic!("deleting pod {name}: {e}"));
    eventually(&format!("pod {name} gone"), TIMEOUT, || async {
        match pods.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(started.elapsed()),
            Some(p) => Err(format!(
                "{} deletionTimestamp {:?} grace {:?}",
                describe(&p),
                p.metadata.deletion_timestamp,
                p.metadata.deletion_grace_period_seconds
            )),
        }
    })
    .await
}

#[tokio::test]
async fn a_deleted_pod_terminates_for_its_declared_time_capped_by_its_grace_period() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    let ns = namespace(&client, "stages-delete").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    running_pod(&pods, "default-time", None).await;
    running_pod(&pods, "slow", Some("3")).await;
    running_pod(&pods, "capped", Some("30")).await;
    running_pod(&pods, "forced", Some("30")).await;

    // Declared 3 s, default grace period 30 s: Terminating for 3 s, then gone. No
    // annotation: 1 s. Declared 30 s, deleted with a grace period of 2 s: gone after 2 s.
    // Grace period 0: the apiserver removes it at once (`kubectl delete --grace-period=0
    // --force`). All at once, so the test takes as long as the slowest.
    let slow_and_midway = async {
        let midway = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            pods.get_opt("slow").await.expect("reading pod slow midway")
        };
        tokio::join!(terminate(&pods, "slow", None), midway)
    };
    let ((slow, midway), default_time, capped, forced) = tokio::join!(
        slow_and_midway,
        terminate(&pods, "default-time", None),
        terminate(&pods, "capped", Some(2)),
        terminate(&pods, "forced", Some(0)),
    );

    eprintln!(
        "gone after: slow (3 s declared) {:.1} s, default {:.1} s, capped (2 s grace) {:.1} s, forced {:.1} s",
        slow.as_secs_f64(),
        default_time.as_secs_f64(),
        capped.as_secs_f64(),
        forced.as_secs_f64()
    );
    let midway = midway.expect("pod slow still exists 1.5 s after its deletion");
    assert!(
        midway.metadata.deletion_timestamp.is_some(),
        "slow is Terminating midway"
    );
    assert_eq!(midway.metadata.deletion_grace_period_seconds, Some(30));
    assert!(
        slow >= Duration::from_millis(2900),
        "slow went after {slow:?}, before its 3 s"
    );
    assert!(
        default_time >= Duration::from_millis(900),
        "default went after {default_time:?}"
    );
    assert!(
        capped >= Duration::from_millis(1900),
        "capped went after {capped:?}"
    );
    assert!(
        capped < Duration::from_secs(20),
        "capped took {capped:?}: its grace period is 2 s"
    );
    assert!(
        forced < Duration::from_millis(900),
        "forced took {forced:?}"
    );
}
