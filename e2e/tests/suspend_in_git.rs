//! Issue 15 item 8: a Flux object whose manifest in Git sets `spec.suspend` is forced back
//! by its parent's server-side apply as soon as Fluxgate resumes the parent, before
//! Fluxgate's hold on the object ends. Such an app is refused at Admit (and by a dry run),
//! naming the file and the field, before anything is touched; once the field is gone from
//! Git, the same upgrade goes through. The root Kustomization's own `spec.suspend` (in the
//! `gotk-sync.yaml` it applies itself) does not count.

use e2e::checks::suspended;
use e2e::given::{app, upgrade};
use e2e::{then, when};
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, DemoWorld, wait_until};
use std::time::Duration;

e2e::on_all_stacks!(an_app_whose_manifest_sets_spec_suspend_is_refused_at_admit);

/// The app's manifests with `spec.suspend: false` written on its HelmRelease, as some
/// repositories do to "document" the default.
fn with_suspend_written(story: &DemoWorld) -> String {
    let manifest = story.app_manifest("v1.4.0");
    let written = manifest.replace("  chartRef:\n", "  suspend: false\n  chartRef:\n");
    assert_ne!(written, manifest);
    written
}

/// Flux's `gotk-sync.yaml` with `spec.suspend: false` written on the root Kustomization.
fn root_with_suspend_written(story: &DemoWorld) -> String {
    let sync = story
        .git
        .read_file(GOTK_SYNC)
        .unwrap()
        .expect("the fleet is bootstrap-shaped");
    let written = sync.replace("  prune: true\n", "  prune: true\n  suspend: false\n");
    assert_ne!(written, sync);
    written
}

const GOTK_SYNC: &str = "clusters/prod/flux-system/gotk-sync.yaml";

async fn an_app_whose_manifest_sets_spec_suspend_is_refused_at_admit() {
    let story = app().running_at("v1.4.0").await;
    // The root's own spec.suspend does not count: it applies itself only while it runs,
    // that is after Fluxgate resumed it.
    let pushed = when::pushed_by_hand(
        &story,
        &[
            (APP_FILE, &with_suspend_written(&story)),
            (GOTK_SYNC, &root_with_suspend_written(&story)),
        ],
        "db: write spec.suspend",
    )
    .await;
    // Flux applies it: the root Kustomization now owns the HelmRelease's spec.suspend.
    wait_until(
        "the root Kustomization to apply the commit",
        Duration::from_secs(30),
        async || {
            let root = then::flux_object(
                &story,
                FluxObjectKind::Kustomization,
                "flux-system",
                "flux-system",
            )
            .await;
            root.data["status"]["lastAppliedRevision"]
                .as_str()?
                .ends_with(&pushed)
                .then_some(())
        },
    )
    .await
    .unwrap();
    let commits = story.git.log().unwrap().len();

    for (name, dry_run) in [("db-1-5-0-dry", true), ("db-1-5-0", false)] {
        upgrade(name)
            .to_version("v1.5.0")
            .dry_run_if(dry_run)
            .create(&story)
            .await
            .unwrap();
        let done: UpgradeRequest = story.finished(name, Duration::from_secs(60)).await.unwrap();
        let status = done.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
        let failure = status.failure.unwrap();
        assert_eq!(
            (failure.phase, failure.reason.as_str()),
            (Phase::Admit, "SuspendSetInGit"),
            "{failure:?}"
        );
        println!("{name}: {} — {}", failure.reason, failure.message);
        for needle in [
            "spec.suspend in clusters/prod/db.yaml of HelmRelease apps/db (sets it to false): remove it from Git",
            "Kustomization flux-system/flux-system applies it with server-side apply",
        ] {
            assert!(
                failure.message.contains(needle),
                "the message does not say {needle:?}: {}",
                failure.message
            );
        }
        assert!(!failure.message.contains(GOTK_SYNC), "{}", failure.message);
    }
    // Nothing was touched.
    assert_eq!(story.git.log().unwrap().len(), commits);
    assert_eq!(suspended(&story).await, Some((false, false)));
    let touched =
        then::operator_writes(&story, &["kustomizations", "helmreleases", "statefulsets"]).await;
    assert!(touched.is_empty(), "the operator wrote {touched:?}");

    // The user removes the field from Git; the upgrade then goes through.
    when::pushed_by_hand(
        &story,
        &[(APP_FILE, &story.app_manifest("v1.4.0"))],
        "db: leave spec.suspend to Flux",
    )
    .await;
    story.upgrade("db-1-5-0-again", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0-again", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0"))
    );
    assert!(
        story
            .git
            .read_file(GOTK_SYNC)
            .unwrap()
            .is_some_and(|sync| sync.contains("suspend: false")),
        "the root's own spec.suspend stayed in Git"
    );
    story.stop().await;
}
