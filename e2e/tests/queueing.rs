//! Story (f): two UpgradeRequests for one app — the second waits in `Queued` while the first
//! runs and then runs on top of it; and ten apps of one repository upgraded at once — every
//! request succeeds with its own commit, no push is lost, Flux ends resumed.

use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::cluster::flux::ops::{get, is_suspended};
use fluxgate::demo::world::{
    APP_FILE, DemoWorld, Fleet, app_manifest, helm_app_manifest, wait_until,
};
use kube::api::Api;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_a_second_request_for_an_app_queues_behind_the_first() {
    let story = DemoWorld::start("v1.4.0", json!({})).await.unwrap();
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    story.upgrade("db-1-6-0", "v1.6.0").await.unwrap();
    let upgrades = Api::<UpgradeRequest>::namespaced(story.client.clone(), "apps");
    // Queued, and (once the first holds the app's lock) saying what it waits for.
    wait_until(
        "the second request to queue behind the first while it runs",
        Duration::from_secs(30),
        async || {
            let first = upgrades.get("db-1-5-0").await.ok()?.status?;
            let second = upgrades.get("db-1-6-0").await.ok()?.status?;
            let first_running = first
                .phase
                .is_some_and(|p| !p.is_terminal() && p != Phase::Queued);
            let says_why = second
                .conditions
                .iter()
                .any(|c| c.message.contains("db-1-5-0"));
            (first_running && second.phase == Some(Phase::Queued) && says_why).then_some(())
        },
    )
    .await
    .unwrap();

    let first: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(60))
        .await
        .unwrap();
    let second: UpgradeRequest = story
        .finished("db-1-6-0", Duration::from_secs(60))
        .await
        .unwrap();
    let (first, second) = (first.status.unwrap(), second.status.unwrap());
    assert_eq!(first.phase, Some(Phase::Succeeded), "{first:#?}");
    assert_eq!(second.phase, Some(Phase::Succeeded), "{second:#?}");
    // The second was planned after the first finished: it starts from the first's version.
    assert_eq!(
        second
            .plan
            .as_ref()
            .unwrap()
            .from
            .get("chart")
            .map(String::as_str),
        Some("v1.5.0")
    );
    let first_done = first.phases.last().unwrap().completed_at.clone().unwrap();
    let second_admitted = second
        .phases
        .iter()
        .find(|p| p.name == Phase::Admit)
        .unwrap()
        .started_at
        .clone();
    assert!(
        second_admitted.0 >= first_done.0,
        "admitted at {second_admitted:?}, before the first ended at {first_done:?}"
    );
    assert_eq!(second.phases[0].name, Phase::Queued, "{:?}", second.phases);
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(app_manifest("v1.6.0"))
    );
    let app = story.app().await.unwrap().status.unwrap();
    assert_eq!(
        app.current_versions.get("chart").map(String::as_str),
        Some("v1.6.0")
    );
    assert_eq!(app.active_operation, None);
    story.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_ten_apps_of_one_repository_upgrade_at_once() {
    let names: Vec<String> = (0..10).map(|i| format!("app-{i}")).collect();
    let fleet = names.iter().fold(Fleet::new(), |fleet, name| {
        fleet.helm_app(name, "v1.0.0", 1, json!({}))
    });
    let started = std::time::Instant::now();
    let story = DemoWorld::start_fleet(fleet).await.unwrap();
    println!(
        "ten apps running after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    for name in &names {
        story
            .request(
                &format!("{name}-up"),
                json!({"managedApp": name, "version": "v1.1.0"}),
            )
            .await
            .unwrap();
    }
    let mut shas = BTreeSet::new();
    for name in &names {
        let done: UpgradeRequest = story
            .finished(&format!("{name}-up"), Duration::from_secs(120))
            .await
            .unwrap();
        let status = done.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:#?}");
        shas.insert(status.commit.unwrap().sha);
    }
    println!(
        "ten upgrades finished after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(shas.len(), 10, "each request has its own commit");
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 11, "the seed and ten upgrades: {log:#?}");
    let in_log: BTreeSet<String> = log.iter().map(|c| c.sha.clone()).collect();
    assert!(shas.is_subset(&in_log), "no push was lost");
    for name in &names {
        assert_eq!(
            story
                .git
                .read_file(&format!("clusters/prod/{name}.yaml"))
                .unwrap(),
            Some(helm_app_manifest(name, "v1.1.0", 1)),
            "{name} at its new version, nothing else changed"
        );
        let release = get(&story.cluster(), FluxObjectKind::HelmRelease, "apps", name)
            .await
            .unwrap()
            .unwrap();
        assert!(!is_suspended(&release), "{name} resumed");
        let app = story.app_named(name).await.unwrap().status.unwrap();
        assert_eq!(
            app.current_versions.get("chart").map(String::as_str),
            Some("v1.1.0")
        );
    }
    let root = get(
        &story.cluster(),
        FluxObjectKind::Kustomization,
        "flux-system",
        "flux-system",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        !is_suspended(&root),
        "the shared root Kustomization is resumed"
    );
    story.stop().await;
}
