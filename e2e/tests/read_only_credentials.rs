//! Story: a fleet bootstrapped as `flux bootstrap` does it — GitRepository `flux-system`
//! reading the repository with a read-only deploy key from Secret `flux-system/flux-system`,
//! and ManagedApps without a `git.secretRef` of their own, so Fluxgate borrows that Secret.
//! The Git server refuses the key a push the way real hosts do: at the receive-pack
//! advertisement (GitHub, GitLab; Gitea for a token without write scope), or only at the
//! push itself (Gitea for a user with read permission).
//!
//! Before the fix the upgrade suspended Flux, stopped the app and snapshotted its volumes for
//! nothing: the push was refused in Commit with a generic "authentication failed" or
//! "rejected" message. Now Admit (and a dry run's Preflight) asks the server for a push
//! connection and refuses the request before anything is touched, naming the fix; where the
//! server only refuses the push itself, the Commit failure names it.

use e2e::checks::{put_back_problems, snapshots_of, suspended};
use e2e::given::{app, upgrade};
use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, DemoWorld, Fleet};
use kube::ResourceExt;
use sim::git_server::WriteRefusal;
use std::time::Duration;

e2e::on_all_stacks!(
    a_read_only_deploy_key_is_refused_at_admit_before_anything_is_touched,
    a_dry_run_finds_the_read_only_deploy_key,
    a_push_refused_only_at_push_names_the_credentials_and_the_fix
);

async fn bootstrapped_fleet(refusal: WriteRefusal) -> DemoWorld {
    e2e::given::world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().into())
            .bootstrap_deploy_key("git", "read-only-deploy-key", refusal),
    )
    .await
    .unwrap()
}

/// The failure of a finished request, with the phase names it went through.
fn failure_of(done: &UpgradeRequest) -> (Phase, String, String, Vec<Phase>) {
    let status = done.status.clone().unwrap_or_default();
    let failure = status
        .failure
        .clone()
        .unwrap_or_else(|| panic!("no failure: {status:#?}"));
    let phases = status.phases.iter().map(|p| p.name).collect();
    (failure.phase, failure.reason, failure.message, phases)
}

/// Nothing was touched: Flux never suspended, no snapshot, Git as it was.
async fn untouched(story: &DemoWorld, done: &UpgradeRequest, phases: &[Phase]) {
    assert!(
        !phases.contains(&Phase::Suspend) && !phases.contains(&Phase::Snapshot),
        "{phases:?}"
    );
    assert_eq!(suspended(story).await, Some((false, false)));
    assert_eq!(snapshots_of(story, &done.uid().unwrap()).await, 0);
    assert_eq!(story.git.log().unwrap().len(), 1, "Git unchanged");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.4.0"))
    );
}

async fn a_read_only_deploy_key_is_refused_at_admit_before_anything_is_touched() {
    let story = bootstrapped_fleet(WriteRefusal::AtAdvertisement).await;
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let (phase, reason, message, phases) = failure_of(&done);
    assert_eq!(
        (phase, reason.as_str()),
        (Phase::Admit, "GitReadOnly"),
        "{message}"
    );
    for words in [
        "Secret flux-system/flux-system of GitRepository flux-system/flux-system",
        "set spec.git.secretRef",
        "403",
        "Nothing was changed",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    untouched(&story, &done, &phases).await;
    story.stop().await;
}

async fn a_dry_run_finds_the_read_only_deploy_key() {
    let story = bootstrapped_fleet(WriteRefusal::AtAdvertisement).await;
    upgrade("db-dry-run")
        .to_version("v1.5.0")
        .dry_run()
        .create(&story)
        .await
        .unwrap();
    let done: UpgradeRequest = story
        .finished("db-dry-run", Duration::from_secs(90))
        .await
        .unwrap();
    let (phase, reason, message, phases) = failure_of(&done);
    assert_eq!(
        (phase, reason.as_str()),
        (Phase::Preflight, "GitReadOnly"),
        "{message}"
    );
    assert!(message.contains("set spec.git.secretRef"), "{message}");
    untouched(&story, &done, &phases).await;
    story.stop().await;
}

async fn a_push_refused_only_at_push_names_the_credentials_and_the_fix() {
    let story = bootstrapped_fleet(WriteRefusal::AtPush).await;
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let (phase, reason, message, _) = failure_of(&done);
    assert_eq!(
        (phase, reason.as_str()),
        (Phase::Commit, "GitPushRefused"),
        "{message}"
    );
    for words in [
        // The server's own words, not only libgit2's "pre-receive hook declined".
        "User permission denied for writing",
        "The push used the Secret flux-system/flux-system of GitRepository flux-system/flux-system",
        "set spec.git.secretRef",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    // Refused before anything reached Git: Flux and the app are put back as they were.
    assert_eq!(story.git.log().unwrap().len(), 1, "Git unchanged");
    let problems = put_back_problems(&story).await;
    assert!(problems.is_empty(), "{problems:?}");
    story.stop().await;
}
