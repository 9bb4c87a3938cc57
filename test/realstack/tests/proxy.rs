//! The API proxy (`realstack::proxy`) in front of the real kube-apiserver gives it kubesim's
//! test controls without changing what a client sees: a kube-rs client configured with the
//! proxy's URL and a ServiceAccount token reads, writes and watches as it would directly;
//! its requests are logged with the bodies of writes and the real answers' codes; a fault
//! answers in its place as the real server would; a gate holds a write until released (the
//! object unchanged meanwhile); dropped watches end, forced ones end with 410 Expired, and an
//! expired history refuses a resume from before it. Also prints what the proxy costs a
//! request.

use std::time::{Duration, Instant};

use apicontrols::{ControlledApi, Fault, Match};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use realstack::RealCluster;
use realstack::proxy::ApiProxy;
use serde_json::json;

#[allow(dead_code)] // the shared helpers; this file needs only `namespace`
use realstack::testing::namespace;

/// The User-Agent of the proxied client, to tell its requests apart in the log.
const AGENT: &str = "proxy-test/1";

/// A client of the proxy with a token of a ServiceAccount bound to `cluster-admin`, and one
/// with the same token straight to the API server.
async fn clients(
    cluster: &RealCluster,
    admin: &Client,
    proxy: &ApiProxy,
    ns: &str,
) -> (Client, Client) {
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "tester"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &account)
        .await
        .expect("creating ServiceAccount tester");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-tester")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "tester", "namespace": ns}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the ClusterRoleBinding");
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request("tester", &PostParams::default(), &Default::default())
        .await
        .expect("TokenRequest for tester")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let kubeconfig =
        Kubeconfig::from_yaml(&proxy.kubeconfig_yaml(&token, ns)).expect("the proxy's kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a config for the proxy");
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(AGENT),
    ));
    let proxied = Client::try_from(config).expect("a client of the proxy");
    let direct = cluster
        .token_client(&token)
        .await
        .expect("a direct token client");
    (proxied, direct)
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": value}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_through_the_proxy_is_logged_faulted_gated_and_watched() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let admin = cluster.client().await.expect("admin client");
    let ns = namespace(&admin, "proxy").await;
    let proxy = ApiProxy::start(cluster).await.expect("starting the proxy");
    let (client, direct) = clients(cluster, &admin, &proxy, &ns).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let as_admin: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);

    // A watch through the proxy sees what someone else writes directly.
    let listed = maps
        .list(&ListParams::default())
        .await
        .expect("a list through the proxy");
    let from = listed
        .metadata
        .resource_version
        .clone()
        .expect("the list's resourceVersion");
    let mut events = maps
        .watch(&WatchParams::default().timeout(60), &from)
        .await
        .expect("a watch through the proxy")
        .boxed();
    as_admin
        .create(&PostParams::default(), &config_map("seen", "1"))
        .await
        .expect("creating seen");
    next_added(&mut events, "seen", "through the proxy").await;
    // Dropped: the stream ends, as when the server ends a watch.
    proxy.drop_watches();
    match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
        Ok(Ok(None)) | Ok(Err(_)) => {}
        other => panic!("the dropped watch went on: {other:?}"),
    }
    let watches = proxy.requests(&Match::any().verb("watch").user_agent(AGENT));
    assert_eq!(watches.len(), 1, "{watches:?}");
    assert_eq!(watches[0].code, 200);

    // A fault answers in the server's place, as the server would: nothing is created.
    proxy.inject(Fault::respond(
        Match::any().verb("create").resource("configmaps"),
        500,
    ));
    match maps
        .create(&PostParams::default(), &config_map("faulted", "1"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (500, "InternalError"),
                "{status:?}"
            )
        }
        other => panic!("expected the injected 500, got {other:?}"),
    }
    assert!(
        as_admin.get_opt("faulted").await.unwrap().is_none(),
        "the faulted create never reached the server"
    );
    let conflict = Fault::respond(Match::any().verb("update").resource("configmaps"), 409);
    proxy.inject(conflict);
    let mut seen = maps.get("seen").await.expect("reading seen");
    seen.data = Some([("k".to_owned(), "2".to_owned())].into());
    match maps.replace("seen", &PostParams::default(), &seen).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("expected the injected 409, got {other:?}"),
    }
    // The next create passes: the fault fired once.
    maps.create(&PostParams::default(), &config_map("created", "1"))
        .await
        .expect("the second create reaches the server");

    // A gate holds the write before the server sees it; released, it lands.
    let gate = proxy.gate(Match::any().verb("patch").name("created"));
    let patching = {
        let maps = maps.clone();
        tokio::spawn(async move {
            maps.patch(
                "created",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "gated"}})),
            )
            .await
        })
    };
    assert!(
        gate.wait_held(1, Duration::from_secs(10)).await,
        "the patch reached the gate"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = as_admin.get("created").await.unwrap();
    assert_eq!(
        held.data.unwrap()["k"],
        "1",
        "the held patch has not reached the server"
    );
    gate.release(1);
    let patched = patching.await.unwrap().expect("the released patch");
    assert_eq!(patched.data.unwrap()["k"], "gated");
    assert_eq!(gate.passed(), 1);
    drop(gate);

    // The log: every request of the client, with the written bodies and the real codes.
    let writes = proxy.requests(&Match::any().verb("write").user_agent(AGENT));
    let lines: Vec<(String, Option<String>, u16)> = writes
        .iter()
        .map(|r| {
            (
                r.verb.clone(),
                r.body
                    .as_ref()
                    .and_then(|b| b.pointer("/metadata/name").or(b.pointer("/data/k")))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                r.code,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("create".to_owned(), Some("faulted".to_owned()), 500),
            ("update".to_owned(), Some("seen".to_owned()), 409),
            ("create".to_owned(), Some("created".to_owned()), 201),
            ("patch".to_owned(), Some("gated".to_owned()), 200),
        ]
    );
    assert_eq!(writes[3].patch_type.as_deref(), Some("merge"));

    // A forced 410: the watch is answered with one ERROR event carrying Expired.
    proxy.force_watch_gone(Match::any().resource("configmaps"));
    let now = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let first = maps
        .watch(&WatchParams::default().timeout(30), &now)
        .await
        .expect("the forced watch opens")
        .boxed()
        .try_next()
        .await;
    match first {
        Ok(Some(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}")
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // The fault fired once: the next watch from the same version runs.
    let mut again = maps
        .watch(&WatchParams::default().timeout(30), &now)
        .await
        .unwrap()
        .boxed();
    as_admin
        .create(&PostParams::default(), &config_map("watched", "1"))
        .await
        .unwrap();
    let watches = proxy.requests(&Match::any().verb("watch"));
    next_added(
        &mut again,
        "watched",
        &format!("after the forced 410 (watches: {watches:#?})"),
    )
    .await;
    drop(again);

    // An expired history: a resume from before it gets 410, one from a later list works.
    as_admin
        .create(&PostParams::default(), &config_map("before", "1"))
        .await
        .unwrap();
    proxy
        .expire_history("", "configmaps")
        .await
        .expect("expiring the configmaps' history");
    match maps
        .watch(&WatchParams::default().timeout(30), &now)
        .await
        .unwrap()
        .boxed()
        .try_next()
        .await
    {
        Ok(Some(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410, "{e:?}");
            assert!(
                e.message
                    .starts_with(&format!("too old resource version: {now} (")),
                "{}",
                e.message
            );
        }
        other => panic!(
            "expected 410 for a resume from before the expiry, got {other:?}; watches: {:#?}",
            proxy.requests(&Match::any().verb("watch"))
        ),
    }
    let fresh = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut resumed = maps
        .watch(&WatchParams::default().timeout(30), &fresh)
        .await
        .unwrap()
        .boxed();
    as_admin
        .create(&PostParams::default(), &config_map("after", "1"))
        .await
        .unwrap();
    next_added(&mut resumed, "after", "on the watch from a fresh list").await;

    // What the proxy costs: the same GET, sequentially, straight and through it.
    let direct_maps: Api<ConfigMap> = Api::namespaced(direct, &ns);
    let time = async |api: &Api<ConfigMap>| {
        for _ in 0..20 {
            api.get("seen").await.unwrap();
        }
        let started = Instant::now();
        for _ in 0..200 {
            api.get("seen").await.unwrap();
        }
        started.elapsed() / 200
    };
    let (straight, proxied) = (time(&direct_maps).await, time(&maps).await);
    let (straight_again, proxied_again) = (time(&direct_maps).await, time(&maps).await);
    println!(
        "GET configmap, mean of 200: direct {:?} / {:?}, through the proxy {:?} / {:?}",
        straight, straight_again, proxied, proxied_again
    );
}

/// Asserts that the next event of `events` (within 10 s) adds ConfigMap `name`; `when` says
/// which watch, for the failure message.
async fn next_added(
    events: &mut futures::stream::BoxStream<'_, kube::Result<WatchEvent<ConfigMap>>>,
    name: &str,
    when: &str,
) {
    match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
        Ok(Ok(Some(WatchEvent::Added(cm)))) => assert_eq!(cm.name_any(), name),
        other => panic!("expected {name} ADDED {when}, got {other:?}"),
    }
}
