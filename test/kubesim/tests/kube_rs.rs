//! Conformance through kube-rs: every API semantic kubesim promises, exercised the way Fluxgate's code will.

mod common;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kubesim::{Fault, KubeSim, Match};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn discovery_serves_builtins_and_crd_kinds() {
    let sim = sim_with_flux().await;
    let d = kube::Discovery::new(sim.client()).run().await.unwrap();
    let kinds: Vec<String> = d
        .groups()
        .flat_map(|g| g.recommended_resources().into_iter().map(|(ar, _)| ar.kind))
        .collect();
    for k in [
        "Namespace",
        "Pod",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "Secret",
        "ConfigMap",
        "Service",
        "Event",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "StorageClass",
        "Lease",
        "CustomResourceDefinition",
        "GitRepository",
        "HelmRelease",
        "Kustomization",
        "VolumeSnapshot",
        "VolumeSnapshotClass",
        "VolumeSnapshotContent",
        "OCIRepository",
        "HelmChart",
        "HelmRepository",
    ] {
        assert!(
            kinds.iter().any(|x| x == k),
            "{k} missing from discovery: {kinds:?}"
        );
    }
    let hr = d
        .groups()
        .find(|g| g.name() == "helm.toolkit.fluxcd.io")
        .unwrap();
    assert_eq!(hr.preferred_version_or_latest(), "v2");
}

#[tokio::test]
async fn crud_generate_name_and_error_statuses() {
    let sim = KubeSim::start().await;
    cases::crud_generate_name_and_error_statuses(sim.client(), "default").await;
}

#[tokio::test]
async fn metadata_only_lists_and_watches() {
    let sim = KubeSim::start().await;
    cases::metadata_only_lists_and_watches(sim.client(), "default").await;
}

#[tokio::test]
async fn watches_deliver_every_change_in_order_with_growing_versions() {
    let sim = KubeSim::start().await;
    cases::watches_deliver_every_change_in_order_with_growing_versions(sim.client(), "default")
        .await;
}

/// Label values are at most 63 bytes, as apimachinery's `IsLabelValue` says, in a
/// written object (422, one cause per problem) and in a label selector (400: the API server
/// cannot parse the requirement).
#[tokio::test]
async fn label_values_over_63_characters_are_refused_in_objects_and_selectors() {
    let sim = KubeSim::start().await;
    cases::label_values_over_63_characters_are_refused_in_objects_and_selectors(
        sim.client(),
        "default",
    )
    .await;
}

#[tokio::test]
async fn selectors_limit_and_continue() {
    let sim = KubeSim::start().await;
    cases::selectors_limit_and_continue(sim.client(), "default").await;
}

#[tokio::test]
async fn generation_and_status_subresource() {
    let sim = sim_with_flux().await;
    cases::generation_and_status_subresource(sim.client(), "default").await;
    assert_eq!(
        sim.count(
            &Match::any()
                .verb("patch")
                .resource("gitrepositories")
                .name("r")
                .subresource("status")
        ),
        1
    );
    let main_patches = Match::any()
        .verb("patch")
        .resource("gitrepositories")
        .name("r")
        .main_resource();
    assert_eq!(sim.count(&main_patches), 2);
    let status_patch = &sim.requests(&Match::any().verb("patch").subresource("status"))[0];
    assert_eq!(
        status_patch.body.as_ref().unwrap()["status"]["observedGeneration"],
        2
    );
}

#[tokio::test]
async fn upstream_crds_validate_prune_and_default() {
    let Some(sim) = sim_with_upstream_flux().await else {
        return;
    };
    let samples = [
        (
            "source.toolkit.fluxcd.io",
            "GitRepository",
            "gitrepositories",
            json!({"url": "https://e.com/r.git", "interval": "1m"}),
        ),
        (
            "source.toolkit.fluxcd.io",
            "HelmRepository",
            "helmrepositories",
            json!({"url": "https://charts.e.com", "interval": "1h"}),
        ),
        (
            "source.toolkit.fluxcd.io",
            "OCIRepository",
            "ocirepositories",
            json!({"url": "oci://ghcr.io/x/y", "interval": "1h", "ref": {"tag": "1.2.3"}}),
        ),
        (
            "source.toolkit.fluxcd.io",
            "HelmChart",
            "helmcharts",
            json!({"chart": "app", "interval": "1h", "sourceRef": {"kind": "HelmRepository", "name": "repo"}}),
        ),
        (
            "helm.toolkit.fluxcd.io",
            "HelmRelease",
            "helmreleases",
            json!({"interval": "10m", "chart": {"spec": {"chart": "app", "version": "1.0.0", "sourceRef": {"kind": "HelmRepository", "name": "repo"}}}}),
        ),
        (
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "kustomizations",
            json!({"interval": "10m", "path": "./apps", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "r"}}),
        ),
        (
            "snapshot.storage.k8s.io",
            "VolumeSnapshot",
            "volumesnapshots",
            json!({"volumeSnapshotClassName": "csi", "source": {"persistentVolumeClaimName": "data"}}),
        ),
    ];
    for (group, kind, plural, spec) in samples {
        let version = if group == "helm.toolkit.fluxcd.io" {
            "v2"
        } else {
            "v1"
        };
        let api = dyn_api(&sim, group, version, kind, plural, Some("default"));
        let o = obj(
            json!({"apiVersion": format!("{group}/{version}"), "kind": kind, "metadata": {"name": "s"}, "spec": spec}),
        );
        if let Err(e) = api.create(&PostParams::default(), &o).await {
            panic!("{kind} sample refused: {e}");
        }
    }
    let vsc = dyn_api(
        &sim,
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
        None,
    );
    vsc.create(
        &PostParams::default(),
        &obj(
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "csi"}, "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete"}),
        ),
    )
    .await
    .unwrap();
    let content = dyn_api(
        &sim,
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
        None,
    );
    let good = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent", "metadata": {"name": "c"},
        "spec": {"deletionPolicy": "Delete", "driver": "d", "source": {"volumeHandle": "h"}, "volumeSnapshotRef": {"name": "s", "namespace": "default"}}});
    content
        .create(&PostParams::default(), &obj(good))
        .await
        .unwrap();
    // CEL: exactly one of volumeHandle / snapshotHandle.
    let both = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent", "metadata": {"name": "c2"},
        "spec": {"deletionPolicy": "Delete", "driver": "d", "source": {"volumeHandle": "h", "snapshotHandle": "s"}, "volumeSnapshotRef": {"name": "s", "namespace": "default"}}});
    let st = status(content.create(&PostParams::default(), &obj(both)).await);
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(
        st.details
            .unwrap()
            .causes
            .iter()
            .any(|c| c.field.starts_with("spec.source")),
        "{}",
        st.message
    );

    // Pattern violation with the field path the real server reports.
    let git = dyn_api(
        &sim,
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
        Some("default"),
    );
    let st = status(
        git.create(
            &PostParams::default(),
            &obj(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "bad"}, "spec": {"url": "ftp://x", "interval": "1m"}}),
            ),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    let cause = &st.details.unwrap().causes[0];
    assert_eq!(
        (cause.field.as_str(), cause.reason.as_str()),
        ("spec.url", "FieldValueInvalid")
    );
    // Required field missing.
    let st = status(
        git.create(
            &PostParams::default(),
            &obj(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "bad"}, "spec": {"interval": "1m"}}),
            ),
        )
        .await,
    );
    assert_eq!(st.details.unwrap().causes[0].field, "spec.url");
    // Unknown fields are pruned (and refused under fieldValidation=Strict).
    let pruned = git
        .create(
            &PostParams::default(),
            &obj(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "p"}, "spec": {"url": "https://e.com", "interval": "1m", "bogus": 1}}),
            ),
        )
        .await
        .unwrap();
    assert!(pruned.data["spec"].get("bogus").is_none());
    // Schema defaults are applied, in spec and in status.
    assert_eq!(
        pruned.data["spec"]["timeout"], "60s",
        "schema default applied"
    );
    assert_eq!(pruned.data["status"]["observedGeneration"], -1);
    // HelmRelease CEL rule: chart or chartRef must be set.
    let hr = dyn_api(
        &sim,
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
        Some("default"),
    );
    let st = status(
        hr.create(
            &PostParams::default(),
            &obj(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "nochart"}, "spec": {"interval": "1m"}}),
            ),
        )
        .await,
    );
    assert_eq!(st.code, 422, "{}", st.message);
    assert!(st.message.contains("chart"), "{}", st.message);
}

#[tokio::test]
async fn custom_crd_schema_cel_transition_rules_and_versions() {
    let sim = KubeSim::start().await;
    cases::custom_crd_schema_cel_transition_rules_and_versions(sim.client(), "default").await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let sim = KubeSim::start().await;
    cases::finalizers_hold_deletion_until_removed(sim.client(), "default").await;
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let sim = KubeSim::start().await;
    cases::owner_references_are_garbage_collected(sim.client(), "default").await;
}

#[tokio::test]
async fn storage_defaults_default_class_and_data_sources() {
    let sim = KubeSim::start().await;
    cases::storage_defaults_default_class_and_data_sources(sim.client(), "default").await;
}

#[tokio::test]
async fn a_bound_claim_request_never_shrinks_to_its_capacity() {
    let sim = KubeSim::start().await;
    cases::a_bound_claim_request_never_shrinks_to_its_capacity(sim.client(), "default").await;
}

#[tokio::test]
async fn namespace_deletion_removes_its_objects() {
    let sim = KubeSim::start().await;
    cases::namespace_deletion_removes_its_objects(sim.client(), "default").await;
}

#[tokio::test]
async fn patches_merge_json_strategic_and_scale() {
    let sim = KubeSim::start().await;
    cases::patches_merge_json_strategic_and_scale(sim.client(), "default").await;
    let pp = PatchParams::default();
    // Strategic merge is refused for custom resources, like the real server.
    let sim2 = sim_with_flux().await;
    let git = dyn_api(
        &sim2,
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
        Some("default"),
    );
    git.create(
        &PostParams::default(),
        &obj(
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "r"}, "spec": {"url": "https://e.com", "interval": "1m"}}),
        ),
    )
    .await
    .unwrap();
    let st = status(
        git.patch(
            "r",
            &pp,
            &Patch::Strategic(json!({"spec": {"interval": "2m"}})),
        )
        .await,
    );
    assert_eq!(st.code, 415);
}

#[tokio::test]
async fn server_side_apply_ownership_and_lease_election() {
    let sim = KubeSim::start().await;
    cases::server_side_apply_ownership_and_lease_election(sim.client(), "default").await;
}

type WatchStream =
    futures::stream::BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>>;

async fn next(s: &mut WatchStream) -> Option<Result<watcher::Event<ConfigMap>, watcher::Error>> {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("watcher event in time")
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes_and_relists_after_410() {
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("w0", json!({})))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut saw_init_w0 = false;
    loop {
        match next(&mut stream).await.unwrap().unwrap() {
            watcher::Event::InitApply(c) if c.metadata.name.as_deref() == Some("w0") => {
                saw_init_w0 = true
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert!(saw_init_w0);
    api.create(&PostParams::default(), &cm("w1", json!({})))
        .await
        .unwrap();
    match next(&mut stream).await.unwrap().unwrap() {
        watcher::Event::Apply(c) => assert_eq!(c.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected Apply, got {other:?}"),
    }
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    match next(&mut stream).await.unwrap().unwrap() {
        watcher::Event::Delete(c) => assert_eq!(c.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected Delete, got {other:?}"),
    }
    // Force a 410: the open watch is dropped and its re-watch is told "too old".
    sim.force_watch_gone(Match::any().resource("configmaps"));
    sim.drop_watches();
    let mut saw_error = false;
    let mut relisted = false;
    for _ in 0..20 {
        match next(&mut stream).await.unwrap() {
            Err(_) => saw_error = true,
            Ok(watcher::Event::Init) => {
                relisted = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(
        saw_error && relisted,
        "error {saw_error}, relisted {relisted}"
    );
    loop {
        if let Ok(watcher::Event::InitDone) = next(&mut stream).await.unwrap() {
            break;
        }
    }
    assert_eq!(
        sim.count(&Match::any().verb("list").resource("configmaps")),
        2
    );
    // The watch after the relist works again.
    api.create(&PostParams::default(), &cm("w2", json!({})))
        .await
        .unwrap();
    match next(&mut stream).await.unwrap().unwrap() {
        watcher::Event::Apply(c) => assert_eq!(c.metadata.name.as_deref(), Some("w2")),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn raw_watch_history_410_bookmarks_selectors_and_timeout() {
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = api
        .create(&PostParams::default(), &cm("h0", json!({"app": "x"})))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("h1", json!({"app": "y"})))
        .await
        .unwrap();
    // Resuming from a version inside history replays what followed.
    let wp = WatchParams::default().labels("app=y").timeout(1);
    let events: Vec<_> = api
        .watch(&wp, &rv0)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        matches!(&events[0], WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("h1")),
        "{events:?}"
    );
    // A label change that leaves the selection shows up as DELETED for that watcher.
    let mut s = api
        .watch(&WatchParams::default().labels("app=y").timeout(2), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        s.next().await.unwrap().unwrap(),
        WatchEvent::Added(_)
    ));
    api.patch(
        "h1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})),
    )
    .await
    .unwrap();
    // Skip bookmarks (kube asks for them by default) on the way to the change.
    let change = loop {
        match s.next().await.unwrap().unwrap() {
            WatchEvent::Bookmark(_) => continue,
            other => break other,
        }
    };
    assert!(matches!(change, WatchEvent::Deleted(_)), "{change:?}");
    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    while s.next().await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(4));

    // History expired: the watch answers an ERROR event with a 410 Status.
    sim.expire_history("", "configmaps");
    let mut s = api
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match s.next().await.unwrap() {
        Ok(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // Bookmarks arrive when asked for.
    let latest = sim.resource_version().to_string();
    let mut wp = WatchParams::default().timeout(3);
    wp.bookmarks = true;
    let mut s = api.watch(&wp, &latest).await.unwrap().boxed();
    let ev = tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");
}

#[tokio::test]
async fn request_log_faults_latency_and_gates() {
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let pp = PatchParams::default();
    let bump = |n: i32| Patch::Merge(json!({"data": {"n": n.to_string()}}));

    sim.inject(Fault::respond(Match::any().verb("patch").name("x"), 409).nth(2));
    api.patch("x", &pp, &bump(1)).await.unwrap();
    let st = status(api.patch("x", &pp, &bump(2)).await);
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    api.patch("x", &pp, &bump(3)).await.unwrap();
    let log = sim.requests(&Match::any().verb("patch").resource("configmaps").name("x"));
    assert_eq!(
        log.iter().map(|r| r.code).collect::<Vec<_>>(),
        [200, 409, 200]
    );
    assert_eq!(log[0].patch_type.as_deref(), Some("merge"));
    assert_eq!(log[0].namespace.as_deref(), Some("default"));
    sim.inject(Fault::respond(
        Match::any().verb("get").resource("configmaps"),
        500,
    ));
    let st = status(api.get("x").await);
    assert_eq!((st.code, st.reason.as_str()), (500, "InternalError"));
    // 429 carries Retry-After like the real server, so kube-rs retries it transparently.
    sim.clear_requests();
    sim.inject(Fault::respond(Match::any().verb("get").resource("configmaps"), 429).times(2));
    api.get("x").await.unwrap();
    let gets: Vec<u16> = sim
        .requests(&Match::any().verb("get"))
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(gets, [429, 429, 200]);

    sim.inject(Fault::delay(
        Match::any().verb("get").name("x"),
        Duration::from_millis(300),
    ));
    let t = std::time::Instant::now();
    api.get("x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.clear_faults();

    // A gate holds the write until the test releases it.
    let gate = sim.gate(Match::any().verb("write").resource("configmaps"));
    let api2 = api.clone();
    let write = tokio::spawn(async move {
        api2.patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": "gated"}})),
        )
        .await
    });
    assert!(gate.wait_held(1, Duration::from_secs(5)).await);
    assert_eq!(
        api.get("x").await.unwrap().data.unwrap()["n"],
        "3",
        "held write not applied yet"
    );
    gate.release(1);
    write.await.unwrap().unwrap();
    assert_eq!(api.get("x").await.unwrap().data.unwrap()["n"], "gated");
    assert_eq!(gate.passed(), 1);

    // Crash between writes: the held write is failed instead of applied.
    let api3 = api.clone();
    let doomed = tokio::spawn(async move {
        api3.patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": "lost"}})),
        )
        .await
    });
    assert!(gate.wait_held(1, Duration::from_secs(5)).await);
    doomed.abort();
    gate.fail(1, 503);
    gate.open();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        api.get("x").await.unwrap().data.unwrap()["n"],
        "gated",
        "the failed write never happened"
    );
}

#[tokio::test]
async fn self_subject_access_review_allows_unless_denied() {
    let sim = KubeSim::start().await;
    let api: Api<SelfSubjectAccessReview> = Api::all(sim.client());
    let review = |verb: &str| -> SelfSubjectAccessReview {
        serde_json::from_value(json!({"spec": {"resourceAttributes": {"verb": verb, "resource": "volumesnapshots", "group": "snapshot.storage.k8s.io"}}})).unwrap()
    };
    let r = api
        .create(&PostParams::default(), &review("create"))
        .await
        .unwrap();
    assert!(r.status.unwrap().allowed);
    sim.deny("delete", "volumesnapshots");
    let r = api
        .create(&PostParams::default(), &review("delete"))
        .await
        .unwrap();
    assert!(!r.status.unwrap().allowed);
}

#[tokio::test]
async fn tables_use_printer_columns() {
    let sim = sim_with_flux().await;
    let git = dyn_api(
        &sim,
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
        Some("default"),
    );
    git.create(
        &PostParams::default(),
        &obj(
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "r"}, "spec": {"url": "https://e.com/r.git", "interval": "1m"}}),
        ),
    )
    .await
    .unwrap();
    git.patch_status("r", &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "stored artifact", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))).await.unwrap();
    let req =
        http::Request::get("/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories")
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap();
    let t: serde_json::Value = sim.client().request(req).await.unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "URL", "Age", "Ready", "Status"]);
    let cells = &t["rows"][0]["cells"];
    assert_eq!(cells[0], "r");
    assert_eq!(cells[1], "https://e.com/r.git");
    assert_eq!(cells[3], "True");
    assert_eq!(cells[4], "stored artifact");
}

#[tokio::test]
async fn kube_lease_manager_elects_exactly_one_leader() {
    use kube_lease_manager::LeaseManagerBuilder;
    let sim = KubeSim::start().await;
    let build = |id: &str| {
        LeaseManagerBuilder::new(sim.client(), "fluxgate-leader")
            .with_namespace("default")
            .with_identity(id)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let (mut a, a_task) = build("pod-a").await.unwrap().watch().await;
    let a_leads = tokio::time::timeout(Duration::from_secs(5), a.wait_for(|locked| *locked))
        .await
        .is_ok();
    assert!(a_leads, "a leads");
    let (mut b, b_task) = build("pod-b").await.unwrap().watch().await;
    // While a renews, b never gets the lock.
    let b_won = tokio::time::timeout(Duration::from_secs(3), b.wait_for(|locked| *locked))
        .await
        .is_ok();
    assert!(!b_won, "two leaders at once");
    assert!(*a.borrow());
    // a steps down (closing its channel releases the lease); b takes over.
    drop(a);
    a_task.await.unwrap().unwrap();
    let b_leads = tokio::time::timeout(Duration::from_secs(8), b.wait_for(|locked| *locked))
        .await
        .is_ok();
    assert!(b_leads, "b leads after a");
    let lease: Lease = Api::default_namespaced(sim.client())
        .get("fluxgate-leader")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );
    drop(b);
    b_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn streaming_list_watcher_dry_run_and_delete_collection() {
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    for n in ["s0", "s1"] {
        api.create(&PostParams::default(), &cm(n, json!({"group": "a"})))
            .await
            .unwrap();
    }
    // sendInitialEvents: ADDED for each object, then the initial-events-end bookmark.
    let mut stream: WatchStream =
        watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match next(&mut stream).await.unwrap().unwrap() {
            watcher::Event::InitApply(c) => initial.push(c.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["s0", "s1"]);
    assert_eq!(
        sim.count(&Match::any().verb("list").resource("configmaps")),
        0,
        "no list call needed"
    );

    // Server-side dry run validates but stores nothing.
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let dry = api.create(&pp, &cm("dry", json!({}))).await.unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("dry"));
    assert!(api.get_opt("dry").await.unwrap().is_none());

    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("group=a"),
        )
        .await
        .unwrap();
    assert_eq!(deleted.left().map(|l| l.items.len()), Some(2));
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    for _ in 0..2 {
        assert!(matches!(
            next(&mut stream).await.unwrap().unwrap(),
            watcher::Event::Delete(_)
        ));
    }
}

#[tokio::test]
async fn event_recorder_publishes_and_updates_series() {
    use k8s_openapi::api::events::v1::Event as EventV1;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let target = api
        .create(&PostParams::default(), &cm("subject", json!({})))
        .await
        .unwrap();
    let recorder = Recorder::new(
        sim.client(),
        Reporter {
            controller: "fluxgate".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "SnapshotTaken".into(),
        note: Some("snapshot data-1 ready".into()),
        action: "Snapshot".into(),
        secondary: None,
    };
    let reference = target.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<EventV1> = Api::default_namespaced(sim.client());
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the repeat becomes a series on the same event"
    );
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("SnapshotTaken"));
    assert_eq!(
        e.regarding.as_ref().unwrap().name.as_deref(),
        Some("subject")
    );
    assert_eq!(
        sim.count(&Match::any().verb("create").group("events.k8s.io")),
        1
    );
    assert_eq!(
        sim.count(&Match::any().verb("patch").group("events.k8s.io")),
        1
    );
    // The same event through the core v1 API, as `kubectl describe` reads it.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(sim.client());
    let seen = core
        .list(
            &ListParams::default()
                .fields("involvedObject.name=subject,involvedObject.kind=ConfigMap"),
        )
        .await
        .unwrap();
    assert_eq!(seen.items.len(), 1);
    assert_eq!(
        seen.items[0].message.as_deref(),
        Some("snapshot data-1 ready")
    );
    assert_eq!(
        seen.items[0].reporting_component.as_deref(),
        Some("fluxgate")
    );
}

#[tokio::test]
async fn bad_requests_get_status_answers() {
    let sim = KubeSim::start().await;
    let client = sim.client();
    let send = |method: &str, path: &str, ct: &str, body: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let client = client.clone();
        async move { status(client.request::<serde_json::Value>(req).await) }
    };
    let cases = [
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "{not json",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "[1,2]",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"kind":"Secret","metadata":{"name":"x"}}"#,
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"metadata":{}}"#,
            422,
            "Invalid",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20b",
            "application/json",
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?continue=%%%",
            "application/json",
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/apis/nope.example.com/v1/things",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/x/nosuchsub",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "text/plain",
            "{}",
            415,
            "UnsupportedMediaType",
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "application/json",
            "42",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/yaml",
            "a: [",
            400,
            "BadRequest",
        ),
    ];
    for (method, path, ct, body, code, reason) in cases {
        let st = send(method, path, ct, body).await;
        assert_eq!(
            (st.code, st.reason.as_str()),
            (code, reason),
            "{method} {path} {body}: {}",
            st.message
        );
        assert!(!st.message.is_empty());
    }
    // The server is still healthy afterwards.
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("fine", json!({})))
        .await
        .unwrap();
}

#[tokio::test]
async fn repository_crds_load_and_are_served() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let has_yaml = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml")
            })
        })
        .unwrap_or(false);
    if !has_yaml {
        eprintln!(
            "SKIPPED: {} holds no CRD YAML yet; nothing to load",
            dir.display()
        );
        return;
    }
    let sim = KubeSim::start().await;
    let loaded = sim.load_yaml(&dir).expect("the repository's CRDs load");
    assert!(!loaded.is_empty());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(sim.client());
    let d = kube::Discovery::new(sim.client()).run().await.unwrap();
    for crd in crds.list(&ListParams::default()).await.unwrap() {
        let kind = &crd.spec.names.kind;
        let found = d
            .groups()
            .any(|g| g.name() == crd.spec.group && g.recommended_kind(kind).is_some());
        assert!(
            found,
            "{kind} from {} is not served",
            crd.metadata.name.unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let owner = api
        .create(&PostParams::default(), &cm("fg-owner", json!({})))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "fg-owner", "uid": owner.metadata.uid, "blockOwnerDeletion": true}]);
    let mut held = cm("fg-held", json!({}));
    held.metadata.owner_references = Some(serde_json::from_value(oref.clone()).unwrap());
    held.metadata.finalizers = Some(vec!["kubesim.dev/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    let mut free = cm("fg-free", json!({}));
    free.metadata.owner_references = Some(serde_json::from_value(oref).unwrap());
    api.create(&PostParams::default(), &free).await.unwrap();

    api.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let o = api.get("fg-owner").await.unwrap();
    assert!(o.metadata.deletion_timestamp.is_some());
    assert_eq!(o.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    assert!(api.get_opt("fg-free").await.unwrap().is_none());
    assert!(
        api.get("fg-held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    api.patch(
        "fg-held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("fg-held").await.unwrap().is_none());
    assert!(
        api.get_opt("fg-owner").await.unwrap().is_none(),
        "the owner goes with its last dependent"
    );
}

#[tokio::test]
async fn builtin_kind_rules_secrets_immutability_pvcs_statefulsets() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
    let sim = KubeSim::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(sim.client());
    let s = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(s.data.unwrap()["password"].0, b"hunter2");
    assert!(s.string_data.is_none());
    assert_eq!(s.type_.as_deref(), Some("Opaque"));

    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut frozen = cm("frozen", json!({}));
    frozen.immutable = Some(true);
    cms.create(&PostParams::default(), &frozen).await.unwrap();
    let st = status(
        cms.patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await,
    );
    assert_eq!(
        (st.code, st.details.unwrap().causes[0].field.as_str()),
        (422, "data")
    );

    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(sim.client());
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap(),
    )
    .await
    .unwrap();
    // A claim not bound yet may be given its volume once, but not another size (only a
    // bound claim's requests change).
    let st = status(
        pvcs.patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await,
    );
    assert_eq!(st.code, 422, "{}", st.message);
    pvcs.patch(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"volumeName": "pv-1"}})),
    )
    .await
    .unwrap();
    let st = status(pvcs.patch("data", &PatchParams::default(), &Patch::Merge(json!({"spec": {"dataSource": {"kind": "VolumeSnapshot", "name": "s", "apiGroup": "snapshot.storage.k8s.io"}}}))).await);
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("spec is immutable after creation"),
        "{}",
        st.message
    );

    let sts: Api<StatefulSet> = Api::default_namespaced(sim.client());
    sts.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})).unwrap())
        .await
        .unwrap();
    sts.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    let st = status(
        sts.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeClaimTemplates": []}})),
        )
        .await,
    );
    assert_eq!(
        (st.code, st.details.unwrap().causes[0].reason.as_str()),
        (422, "FieldValueForbidden")
    );
}

#[tokio::test]
async fn bounded_history_answers_410_for_versions_it_no_longer_keeps() {
    let config = kubesim::Config {
        history_limit: 5,
        ..Default::default()
    };
    let sim = KubeSim::start_with(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = api
        .create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.unwrap();
    for i in 0..3 {
        api.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    // Still inside the last 5 events: replayed.
    let events: Vec<_> = api
        .watch(&WatchParams::default().timeout(1), &rv0)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, WatchEvent::Modified(_)))
            .count(),
        3
    );
    for i in 3..10 {
        api.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default().timeout(1), &rv0)
        .await
        .unwrap()
        .boxed();
    match s.next().await.unwrap() {
        Ok(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_only_get_list_and_watch() {
    use kube::core::PartialObjectMeta;
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("m0", json!({"app": "m"})))
        .await
        .unwrap();
    let one = api.get_metadata("m0").await.unwrap();
    assert_eq!(one.metadata.name.as_deref(), Some("m0"));
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(sim.client());
    let mut w = watcher(meta_api, watcher::Config::default()).boxed();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitDone => break,
            _ => continue,
        }
    }
    api.create(&PostParams::default(), &cm("m1", json!({})))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Apply(m) => assert_eq!(m.metadata.name.as_deref(), Some("m1")),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn crd_with_rules_naming_undeclared_fields_or_variables_is_refused() {
    let sim = KubeSim::start().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(sim.client());
    let crd = |rule: &str| {
        serde_json::from_value(json!({
            "metadata": {"name": "gadgets.test.kubesim.dev"},
            "spec": {"group": "test.kubesim.dev", "scope": "Namespaced",
                "names": {"plural": "gadgets", "kind": "Gadget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-validations": [{"rule": rule}],
                    "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}}}]}
        }))
        .unwrap()
    };
    for bad in [
        "self.replicas <= 5",
        "self.spec.sise > 0",
        "object.spec.size > 0",
    ] {
        let st = status(crds.create(&PostParams::default(), &crd(bad)).await);
        assert_eq!(st.code, 422, "{bad}: {}", st.message);
        assert!(
            st.details.unwrap().causes[0]
                .field
                .ends_with("x-kubernetes-validations[0].rule")
        );
    }
    crds.create(
        &PostParams::default(),
        &crd("self.spec.size > 0 && self.spec.tags.size() < 3 && has(self.spec.tags) && self.metadata.name != ''"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn single_object_watch_path() {
    let sim = KubeSim::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("other", json!({})))
        .await
        .unwrap();
    let req =
        http::Request::get("/api/v1/namespaces/default/configmaps/one?watch=true&timeoutSeconds=1")
            .body(Vec::new())
            .unwrap();
    let text = sim.client().request_text(req).await.unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["one"]);
}

#[tokio::test]
async fn protected_groups_need_api_approval() {
    let sim = KubeSim::start().await;
    cases::protected_groups_need_api_approval(sim.client()).await;
}
