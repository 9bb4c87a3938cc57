//! Deployment, ReplicaSet, StatefulSet and pod lifecycle against kubesim.

use crate::common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sim::seed;
use sim::volumes::writer_of;
use sim::world::WorldOptions;
use std::time::{Duration, Instant};

fn deployment(image: &str, replicas: i64) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}},
    })
}

fn statefulset(image: &str, replicas: i64) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "apps"},
        "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": image}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
    })
}

fn deployment_done(d: &Deployment, n: i32) -> bool {
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.replicas == Some(n)
        && s.updated_replicas == Some(n)
        && s.ready_replicas == Some(n)
        && s.available_replicas == Some(n)
        && s.unavailable_replicas.is_none()
}

#[tokio::test]
async fn deployment_rolls_out_through_replica_sets_with_real_status_fields() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::put(&env.client, deployment("ghcr.io/example/web:1.0.0", 2))
        .await
        .unwrap();
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "apps");
    let d = wait_for(&api, "web", "rolled out", |d| deployment_done(d, 2)).await;
    let conditions = d.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.type_.as_deref() == Some("Progressing")
                && c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );

    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "apps");
    let owned = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(owned.len(), 1);
    let rs = &owned[0];
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Deployment", d.metadata.uid.as_deref().unwrap(), Some(true))
    );
    let pods = Api::<Pod>::namespaced(env.client.clone(), "apps")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            (
                "ReplicaSet",
                rs.metadata.uid.as_deref().unwrap(),
                Some(true)
            )
        );
        assert!(p.name_any().starts_with(&format!("{}-", rs.name_any())));
    }

    // A new image: a second ReplicaSet takes over, the first is scaled to zero.
    seed::put(&env.client, deployment("ghcr.io/example/web:2.0.0", 2))
        .await
        .unwrap();
    let d = wait_for(&api, "web", "second rollout", |d| {
        d.metadata.generation == Some(2) && deployment_done(d, 2)
    })
    .await;
    assert_eq!(d.status.unwrap().observed_generation, Some(2));
    let all = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2);
    let old = all.iter().find(|r| r.name_any() == rs.name_any()).unwrap();
    assert_eq!(old.spec.replicas, Some(0));
}

#[tokio::test]
async fn statefulset_creates_claims_and_reports_revisions() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::put(&env.client, statefulset("ghcr.io/example/db:1.0.0", 2))
        .await
        .unwrap();
    let api: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    let done = |s: &StatefulSet| {
        let st = s.status.clone().unwrap_or_default();
        st.observed_generation == s.metadata.generation
            && st.replicas == 2
            && st.ready_replicas == Some(2)
            && st.updated_replicas == Some(2)
            && st.current_replicas == Some(2)
            && st.available_replicas == Some(2)
            && st.current_revision.is_some()
            && st.current_revision == st.update_revision
    };
    let first = wait_for(&api, "db", "rolled out", done).await;
    let first_rev = first.status.unwrap().update_revision.unwrap();
    assert!(first_rev.starts_with("db-"));
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    for ordinal in 0..2 {
        let claim = wait_for(&pvcs, &format!("data-db-{ordinal}"), "claim bound", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        })
        .await;
        assert_eq!(claim.labels()["app"], "db");
        let pod = Api::<Pod>::namespaced(env.client.clone(), "apps")
            .get(&format!("db-{ordinal}"))
            .await
            .unwrap();
        assert_eq!(pod.labels()["controller-revision-hash"], first_rev);
        let vols = pod.spec.unwrap().volumes.unwrap();
        assert!(vols.iter().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str())
                == Some(&format!("data-db-{ordinal}"))
        }));
    }

    seed::put(&env.client, statefulset("ghcr.io/example/db:1.1.0", 2))
        .await
        .unwrap();
    let second = wait_for(&api, "db", "second rollout", |s| {
        s.metadata.generation == Some(2) && done(s)
    })
    .await;
    assert_ne!(second.status.unwrap().update_revision.unwrap(), first_rev);
    // The new version has written to its volumes.
    wait_for_token(&env.client, "apps", "data-db-0", "new version wrote", |t| {
        writer_of(t) == "1.1.0"
    })
    .await;
}

#[tokio::test]
async fn scale_to_zero_removes_pods_after_the_termination_delay() {
    let mut options = WorldOptions::fast();
    options.pods.termination_delay = Duration::from_millis(1000);
    let env = env_with(options).await;
    seed::namespace(&env.client, "apps").await.unwrap();
    seed::put(&env.client, statefulset("ghcr.io/example/db:1.0.0", 1))
        .await
        .unwrap();
    let api: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    wait_for(&api, "db", "running", |s| {
        s.status.as_ref().and_then(|st| st.ready_replicas) == Some(1)
    })
    .await;

    let start = Instant::now();
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");
    let terminating = wait_for(&pods, "db-0", "pod terminating", |p| {
        p.metadata.deletion_timestamp.is_some()
    })
    .await;
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let mid = wait_for(&api, "db", "status while terminating", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.observed_generation == s.metadata.generation && st.ready_replicas.is_none()
        })
    })
    .await;
    assert_eq!(
        mid.status.unwrap().replicas,
        1,
        "a terminating pod still counts in status.replicas"
    );
    wait_gone(&pods, "db-0", "pod").await;
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "pod gone after {:?}",
        start.elapsed()
    );
    wait_for(&api, "db", "scaled to zero", |s| {
        s.status.as_ref().is_some_and(|st| st.replicas == 0)
    })
    .await;
    // The claim stays (StatefulSet PVCs are retained) and, unused now, is not protected by any pod.
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "apps")
            .get_opt("data-db-0")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn pods_of_a_failing_image_never_become_ready_until_cleared() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    env.world.failures.fail_image("2.0.0");
    seed::put(&env.client, deployment("ghcr.io/example/web:2.0.0", 1))
        .await
        .unwrap();
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "apps");
    let stuck = wait_for(&api, "web", "rolled out but unready", |d| {
        let s = d.status.clone().unwrap_or_default();
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(1)
            && s.replicas == Some(1)
    })
    .await;
    let status = stuck.status.unwrap();
    assert_eq!(status.ready_replicas, None);
    assert_eq!(status.unavailable_replicas, Some(1));
    let available = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .unwrap();
    assert_eq!(available.status.as_deref(), Some("False"));

    env.world.failures.clear_versions();
    wait_for(&api, "web", "ready once cleared", |d| deployment_done(d, 1)).await;
}

fn named_statefulset(name: &str, image: &str, replicas: i64, policy: &str) -> serde_json::Value {
    let mut s = statefulset(image, replicas);
    s["metadata"]["name"] = json!(name);
    s["spec"]["selector"]["matchLabels"]["app"] = json!(name);
    s["spec"]["template"]["metadata"]["labels"]["app"] = json!(name);
    s["spec"]["podManagementPolicy"] = json!(policy);
    s
}

#[tokio::test]
async fn ordered_statefulsets_start_in_order_and_scale_down_from_the_top() {
    let mut options = WorldOptions::fast();
    options.pods.termination_delay = Duration::from_millis(400);
    let env = env_with(options).await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");

    // A broken first pod holds back the rest, unless the policy is Parallel.
    env.world.failures.fail_image("9.9.9");
    seed::put(
        &env.client,
        named_statefulset("ordered", "ghcr.io/example/db:9.9.9", 2, "OrderedReady"),
    )
    .await
    .unwrap();
    seed::put(
        &env.client,
        named_statefulset("parallel", "ghcr.io/example/db:9.9.9", 2, "Parallel"),
    )
    .await
    .unwrap();
    wait_for(&pods, "parallel-1", "parallel pods both created", |_| true).await;
    wait_for(&pods, "ordered-0", "first ordered pod running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    assert!(
        pods.get_opt("ordered-1").await.unwrap().is_none(),
        "ordered-1 started before ordered-0 was ready"
    );
    env.world.failures.clear_versions();
    wait_for(
        &pods,
        "ordered-1",
        "second ordered pod once the first is ready",
        |_| true,
    )
    .await;

    // Scale-down goes from the highest ordinal, one pod at a time.
    seed::put(
        &env.client,
        named_statefulset("ordered", "ghcr.io/example/db:9.9.9", 0, "OrderedReady"),
    )
    .await
    .unwrap();
    wait_for(&pods, "ordered-1", "top pod terminating", |p| {
        p.metadata.deletion_timestamp.is_some()
    })
    .await;
    let first = pods.get("ordered-0").await.unwrap();
    assert!(
        first.metadata.deletion_timestamp.is_none(),
        "ordered-0 deleted together with ordered-1"
    );
    wait_gone(&pods, "ordered-1", "top pod").await;
    wait_gone(&pods, "ordered-0", "last pod").await;
}

#[tokio::test]
async fn an_unusable_template_is_skipped_until_fixed() {
    let env = env().await;
    seed::namespace(&env.client, "apps").await.unwrap();
    // kubesim stores built-in kinds unvalidated, so this reaches the sims as written.
    let mut bad = deployment("ghcr.io/example/bad:1", 1);
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["template"]["spec"]["containers"] = json!("not a list");
    env._kube.put(bad.clone()).unwrap();
    seed::put(&env.client, deployment("ghcr.io/example/web:1.0.0", 1))
        .await
        .unwrap();
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "apps");
    wait_for(&api, "web", "the good one rolls out", |d| {
        deployment_done(d, 1)
    })
    .await;
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "apps");
    let names: Vec<String> = rss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("bad-")), "{names:?}");

    bad["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "bad", "image": "ghcr.io/example/bad:2"}]);
    env._kube.put(bad).unwrap();
    wait_for(&api, "bad", "the fixed one rolls out", |d| {
        deployment_done(d, 1)
    })
    .await;
}

#[tokio::test]
async fn a_scale_down_deletes_the_claims_of_removed_pods_only_under_when_scaled_delete() {
    let mut options = WorldOptions::fast();
    options.pods.termination_delay = Duration::from_millis(200);
    let env = env_with(options).await;
    seed::namespace(&env.client, "apps").await.unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "apps");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "apps");
    let mut set = statefulset("ghcr.io/example/db:1.0.0", 2);
    set["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenScaled": "Delete", "whenDeleted": "Retain"});
    seed::put(&env.client, set.clone()).await.unwrap();
    let api: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    wait_for(&api, "db", "running", |s| {
        s.status.as_ref().and_then(|st| st.ready_replicas) == Some(2)
    })
    .await;
    // In range, a claim has no owner (whenDeleted: Retain): nothing deletes it.
    let kept = claims.get("data-db-0").await.unwrap();
    assert!(kept.owner_references().is_empty(), "{kept:?}");

    // Scaled to one: the claim of the removed pod goes with it, as the real controller's
    // owner reference to the pod makes the garbage collector do.
    set["spec"]["replicas"] = json!(1);
    seed::put(&env.client, set.clone()).await.unwrap();
    let owned = wait_for(&claims, "data-db-1", "owned by its condemned pod", |c| {
        c.owner_references()
            .iter()
            .any(|o| o.kind == "Pod" && o.name == "db-1" && o.controller == Some(true))
    })
    .await;
    assert_eq!(owned.owner_references().len(), 1);
    wait_gone(&pods, "db-1", "the removed pod").await;
    wait_gone(&claims, "data-db-1", "the removed pod's claim").await;
    assert!(claims.get_opt("data-db-0").await.unwrap().is_some());

    // With whenScaled: Retain set before the scale-down, the claims stay.
    set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = json!("Retain");
    seed::put(&env.client, set.clone()).await.unwrap();
    set["spec"]["replicas"] = json!(0);
    seed::put(&env.client, set).await.unwrap();
    wait_gone(&pods, "db-0", "the last pod").await;
    let retained = claims.get("data-db-0").await.unwrap();
    assert!(retained.metadata.deletion_timestamp.is_none());
    assert!(retained.owner_references().is_empty(), "{retained:?}");
}
