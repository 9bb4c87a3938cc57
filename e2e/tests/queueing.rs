//! Story (f): two UpgradeRequests for one app — the second waits in `Queued` while the first
//! runs, touching nothing, and then runs on top of it (invariant 5 of docs/design.md §5:
//! one active operation per app); and ten apps of one repository upgraded at once — every
//! request succeeds with its own commit, no push is lost, Flux ends resumed.

use e2e::checks::{commits_of, put_back_problems, snapshots_of, wait_phase};
use e2e::given::{app, upgrade};
use e2e::then;
use fluxgate::api::conditions::{READY, find_condition};
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, Fleet, helm_app_manifest, holds_for, wait_until};
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::Duration;

e2e::on_all_stacks!(
    f_a_second_request_for_an_app_waits_queued_then_runs_on_top_of_the_first,
    f_ten_apps_of_one_repository_upgrade_at_once
);

// Invariant 5 of docs/design.md §5 too: one active operation per app, the rest queue.
async fn f_a_second_request_for_an_app_waits_queued_then_runs_on_top_of_the_first() {
    let story = app().running_at("v1.4.0").await;
    // The first upgrade waits in Snapshot until the snapshotter is let go, so the second
    // is seen queued while the first holds the app, however fast the world runs.
    story.world.failures.fail_snapshots("data-", "slow disk");
    // Created together: the queue is first come, first served (creation time, then name).
    let first_uid = story
        .upgrade("db-1-5-0", "v1.5.0")
        .await
        .unwrap()
        .uid()
        .unwrap();
    let second_uid = story
        .upgrade("db-1-6-0", "v1.6.0")
        .await
        .unwrap()
        .uid()
        .unwrap();
    wait_phase(&story, "db-1-5-0", Phase::Snapshot, Duration::from_secs(60)).await;
    wait_phase(&story, "db-1-6-0", Phase::Queued, Duration::from_secs(60)).await;
    // Queued, and (once the first holds the app's lock) saying what it waits for.
    let queued = wait_until(
        "the second request to queue behind the first while it runs",
        Duration::from_secs(30),
        async || {
            let first = then::upgrade_request(&story, "db-1-5-0").await?.status?;
            let queued = then::upgrade_request(&story, "db-1-6-0").await?;
            let second = queued.status.as_ref()?;
            let first_running = first
                .phase
                .is_some_and(|p| !p.is_terminal() && p != Phase::Queued);
            let says_why = second
                .conditions
                .iter()
                .any(|c| c.message.contains("db-1-5-0"));
            (first_running && second.phase == Some(Phase::Queued) && says_why).then_some(queued)
        },
    )
    .await
    .unwrap();
    let message = find_condition(&queued.status.as_ref().unwrap().conditions, READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("db-1-5-0"),
        "says what it waits for: {message}"
    );
    let app_status = story.app().await.unwrap().status.unwrap();
    assert_eq!(
        app_status.active_operation.map(|a| a.name),
        Some("db-1-5-0".into())
    );
    // While queued it touches nothing and keeps waiting.
    holds_for(
        "the second request waiting Queued without a snapshot",
        Duration::from_secs(1),
        async || {
            then::phase_of(&story, "db-1-6-0").await == Some(Phase::Queued)
                && snapshots_of(&story, &second_uid).await == 0
        },
    )
    .await
    .unwrap();

    story.world.failures.clear_snapshot_failures();
    let first: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let second: UpgradeRequest = story
        .finished("db-1-6-0", Duration::from_secs(90))
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
    // Admitted only after the first ended: after its last phase and after every moment
    // any of its phases completed.
    let first_last_done = first.phases.last().unwrap().completed_at.clone().unwrap();
    let first_done = first
        .phases
        .iter()
        .filter_map(|p| p.completed_at.clone())
        .max()
        .unwrap();
    let second_admitted = second
        .phases
        .iter()
        .find(|p| p.name == Phase::Admit)
        .unwrap()
        .started_at
        .clone();
    assert!(
        second_admitted.0 >= first_last_done.0 && second_admitted.0 >= first_done.0,
        "the second was admitted ({second_admitted:?}) before the first ended ({first_last_done:?}, {first_done:?})"
    );
    assert_eq!(second.phases[0].name, Phase::Queued, "{:?}", second.phases);
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        (
            commits_of(&story, &first_uid),
            commits_of(&story, &second_uid)
        ),
        (1, 1)
    );
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.6.0"))
    );
    let app = then::app_records(&story, "db", "chart", "v1.6.0").await;
    assert_eq!(app.active_operation, None);
    assert_eq!(put_back_problems(&story).await, Vec::<String>::new());
    story.stop().await;
}

async fn f_ten_apps_of_one_repository_upgrade_at_once() {
    let names: Vec<String> = (0..10).map(|i| format!("app-{i}")).collect();
    let fleet = names.iter().fold(Fleet::new(), |fleet, name| {
        fleet.helm_app(name, "v1.0.0", 1, app().into())
    });
    let started = std::time::Instant::now();
    let story = e2e::given::world(fleet).await.unwrap();
    println!(
        "ten apps running after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    for name in &names {
        upgrade(&format!("{name}-up"))
            .of_app(name)
            .to_version("v1.1.0")
            .create(&story)
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
            Some(story.fleet_text(&helm_app_manifest(name, "v1.1.0", 1))),
            "{name} at its new version, nothing else changed"
        );
        assert!(
            then::resumed(&story, FluxObjectKind::HelmRelease, "apps", name).await,
            "{name} resumed"
        );
        then::app_records(&story, name, "chart", "v1.1.0").await;
    }
    assert!(
        then::resumed(
            &story,
            FluxObjectKind::Kustomization,
            "flux-system",
            "flux-system"
        )
        .await,
        "the shared root Kustomization is resumed"
    );
    story.stop().await;
}
