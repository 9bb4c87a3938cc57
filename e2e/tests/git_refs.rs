//! Issue 15 item 5: the branch Fluxgate commits to is the one Flux really follows. Flux
//! resolves a GitRepository's `spec.ref` as commit > name > tag > semver > branch; a
//! `name: refs/heads/<branch>` is that branch, and an app whose GitRepository follows a
//! tag (or a semver range, a commit, another ref) is refused at Admit — a commit to a
//! branch would never be deployed — before anything is touched.

use e2e::checks::{snapshots_of, suspended};
use e2e::given::{app, ref_name, tag_ref, upgrade};
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, RequestStatus, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, DemoWorld, Fleet, wait_until};
use kube::ResourceExt;
use std::time::Duration;

e2e::on_all_stacks!(
    an_app_whose_git_repository_follows_a_ref_name_is_upgraded_on_that_branch,
    an_app_whose_git_repository_follows_a_tag_is_refused_before_anything_is_touched
);

/// The artifact revision of Flux's GitRepository `flux-system`, once it has one.
async fn served_revision(story: &DemoWorld) -> String {
    wait_until(
        "the GitRepository to serve an artifact",
        Duration::from_secs(30),
        async || {
            then::served_revision(
                story,
                FluxObjectKind::GitRepository,
                "flux-system",
                "flux-system",
            )
            .await
        },
    )
    .await
    .unwrap()
}

async fn an_app_whose_git_repository_follows_a_ref_name_is_upgraded_on_that_branch() {
    let story = e2e::given::world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().into())
            .flux_follows(ref_name("refs/heads/main"))
            .apps_follow_flux(),
    )
    .await
    .unwrap();
    // source-controller writes the whole reference for a `name` ref.
    let head = story.git.head().unwrap();
    assert_eq!(
        served_revision(&story).await,
        format!("refs/heads/main@sha1:{head}")
    );

    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(status.plan.unwrap().git.unwrap().branch, "main");
    let commit = status.commit.unwrap();
    assert_eq!(story.git.head().unwrap(), commit.sha);
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0"))
    );
    assert_eq!(
        served_revision(&story).await,
        format!("refs/heads/main@sha1:{}", commit.sha)
    );
    story.stop().await;
}

/// A failure at Admit with `reason`, whose message says each of `needles`.
fn refused_at_admit(status: &RequestStatus, reason: &str, needles: &[&str]) {
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Admit, reason),
        "{failure:?}"
    );
    for needle in needles {
        assert!(
            failure.message.contains(needle),
            "the message does not say {needle:?}: {}",
            failure.message
        );
    }
}

async fn an_app_whose_git_repository_follows_a_tag_is_refused_before_anything_is_touched() {
    // The fleet is pinned to a release tag; the app names its repository and branch
    // itself, so only the GitRepository says that a commit to `main` is never deployed.
    let story = e2e::given::world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().reconcile_timeout("20s").into())
            .git_tag("fleet-v1")
            .flux_follows(tag_ref("fleet-v1")),
    )
    .await
    .unwrap();
    let head = story.git.head().unwrap();
    assert_eq!(
        served_revision(&story).await,
        format!("fleet-v1@sha1:{head}")
    );
    let needles = [
        "GitRepository flux-system/flux-system follows tag fleet-v1 (spec.ref.tag)",
        "make the GitRepository follow a branch",
    ];

    for (name, dry_run) in [("db-1-5-0", false), ("db-1-5-0-dry", true)] {
        upgrade(name)
            .to_version("v1.5.0")
            .dry_run_if(dry_run)
            .create(&story)
            .await
            .unwrap();
        let done: UpgradeRequest = story.finished(name, Duration::from_secs(60)).await.unwrap();
        refused_at_admit(done.status.as_ref().unwrap(), "GitRefNotBranch", &needles);
        assert_eq!(snapshots_of(&story, &done.uid().unwrap()).await, 0);
    }

    // Nothing was touched: no commit, Flux never suspended, no workload or Flux write.
    assert_eq!(story.git.log().unwrap().len(), 1);
    assert_eq!(suspended(&story).await, Some((false, false)));
    let touched = then::operator_writes(
        &story,
        &[
            "kustomizations",
            "helmreleases",
            "statefulsets",
            "volumesnapshots",
        ],
    )
    .await;
    assert!(touched.is_empty(), "the operator wrote {touched:?}");
    story.stop().await;
}
