//! Throughput of kubesim through kube-rs: get, list of 1,000 objects, and watch fan-out to 50 watchers.
//!
//! Run: `cargo bench -p kubesim` (prints requests/s; `KUBESIM_BENCH_QUICK=1` for a smoke run).

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kubesim::KubeSim;
use serde_json::json;
use std::time::{Duration, Instant};

const OBJECTS: usize = 1000;
const WATCHERS: usize = 50;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("KUBESIM_BENCH_QUICK").is_some();
    let scale = if quick { 10 } else { 1 };
    let sim = KubeSim::start().await;
    for i in 0..OBJECTS {
        sim.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i:04}"), "namespace": "default", "labels": {"bench": "yes", "i": (i % 10).to_string()}},
            "data": {"payload": "x".repeat(200)}}))
            .expect("seed object");
    }
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());

    // get: 4 concurrent clients.
    let gets = 4000 / scale;
    let t = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..gets / 4 {
                    api.get(&format!("cm-{:04}", (i * 4 + w) % OBJECTS))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "get:                     {:>9.0} requests/s ({gets} gets, 4 concurrent clients)",
        rate(gets, t.elapsed())
    );

    // list of 1,000 objects.
    let lists = 100 / scale;
    let t = Instant::now();
    for _ in 0..lists {
        let l = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(l.items.len(), OBJECTS);
    }
    println!(
        "list (1,000 objects):    {:>9.1} requests/s ({lists} lists, typed: includes kube-rs decoding)",
        rate(lists, t.elapsed())
    );
    // The same list without client-side decoding: what the server itself sustains.
    let client = sim.client();
    let t = Instant::now();
    for _ in 0..lists * 5 {
        let req = http::Request::get("/api/v1/namespaces/default/configmaps")
            .body(Vec::new())
            .unwrap();
        let text = client.request_text(req).await.unwrap();
        assert!(text.len() > OBJECTS * 200);
    }
    println!(
        "list (1,000 objects):    {:>9.1} requests/s ({} lists, raw bytes: server cost)",
        rate(lists * 5, t.elapsed()),
        lists * 5
    );
    let t = Instant::now();
    for _ in 0..lists {
        let l = api
            .list(&ListParams::default().labels("i=3"))
            .await
            .unwrap();
        assert_eq!(l.items.len(), OBJECTS / 10);
    }
    println!(
        "list (selector, 100/1k): {:>9.1} requests/s ({lists} lists)",
        rate(lists, t.elapsed())
    );

    // watch fan-out: 50 watchers each receive every write.
    let writes = 1000 / scale;
    let rv = sim.resource_version().to_string();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let stream = api.watch(&WatchParams::default(), &rv).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0;
            while seen < writes {
                match stream.next().await {
                    Some(Ok(WatchEvent::Modified(_))) => seen += 1,
                    Some(Ok(_)) => {}
                    other => panic!("watch ended early: {other:?}"),
                }
            }
        }));
    }
    let t = Instant::now();
    for i in 0..writes {
        api.patch(
            &format!("cm-{:04}", i % OBJECTS),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let write_time = t.elapsed();
    for w in watchers {
        w.await.unwrap();
    }
    let all = t.elapsed();
    println!(
        "watch fan-out:           {:>9.0} writes/s while {WATCHERS} watchers listen; {:.0} events/s delivered ({} events in {:.2}s)",
        rate(writes, write_time),
        rate(writes * WATCHERS, all),
        writes * WATCHERS,
        all.as_secs_f64()
    );
}
