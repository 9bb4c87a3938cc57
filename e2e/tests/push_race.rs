//! Story (g): someone else pushes to the branch while Fluxgate commits. The Git server (smart
//! HTTP with credentials) runs a `pre-receive` hook on Fluxgate's first push that lands a
//! colleague's commit first, so Fluxgate's push loses the race. An unrelated change (another
//! line of the same file): Fluxgate re-applies its edit on the new head and pushes again —
//! both changes are in Git, exactly one Fluxgate commit, the upgrade succeeds. A change of the
//! same field to another version: Fluxgate does not overwrite it — the upgrade fails at Commit
//! with a reason that says so, Git keeps the colleague's version, Flux and replicas are back.

use e2e::checks::flux_and_replicas;
use e2e::given::app;
use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, DemoWorld, Fleet};
use sim::git_server::OTHER_EMAIL;
use std::time::Duration;

e2e::on_all_stacks!(
    g_an_unrelated_push_during_the_commit_is_kept_and_ours_lands_on_top,
    g_a_push_that_changes_the_same_field_is_never_overwritten
);

/// A `pre-receive` hook that, the first time it runs, has "someone else" push a commit that
/// replaces `from` by `to` in the app's file (through a clone of the repository, so the
/// commit is real), then lets the push it was called for go on — which then fails to update
/// the branch, exactly as a lost race does.
fn colleague_pushes_first(from: &str, to: &str, message: &str) -> String {
    format!(
        r#"repo="$PWD"
[ -e "$repo/raced-once" ] && exit 0
touch "$repo/raced-once"
unset GIT_DIR GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
work=$(mktemp -d)
git clone -q --branch main "$repo" "$work/w" >&2 || exit 1
cd "$work/w"
sed -i 's|{from}|{to}|' {APP_FILE}
git -c user.name='Another Committer' -c user.email='{OTHER_EMAIL}' commit -qam '{message}' >&2 || exit 1
git push -q origin HEAD:main >&2 || exit 1
rm -rf "$work"
exit 0"#
    )
}

async fn start() -> DemoWorld {
    e2e::given::world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().into())
            .http_credentials("fluxgate", "t0ken"),
    )
    .await
    .unwrap()
}

async fn g_an_unrelated_push_during_the_commit_is_kept_and_ours_lands_on_top() {
    let story = start().await;
    let header = "# The database of the apps namespace.";
    let owned = "# The database of the apps namespace, owned by the data team.";
    story
        .git
        .install_hook(
            "pre-receive",
            &colleague_pushes_first(header, owned, "Name the owner of db"),
        )
        .unwrap();
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(60))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");

    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 3, "seed, the colleague's, ours: {log:#?}");
    assert_eq!(
        log[1].author_email, OTHER_EMAIL,
        "the colleague's push is kept"
    );
    assert!(log[0].message.contains("Fluxgate-Request: apps/db-1-5-0"));
    assert_eq!(
        log[0].parents,
        vec![log[1].sha.clone()],
        "ours sits on top of theirs"
    );
    let fluxgate_commits = log
        .iter()
        .filter(|c| c.message.contains("Fluxgate-Request-UID"))
        .count();
    assert_eq!(fluxgate_commits, 1, "exactly one Fluxgate commit");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.5.0").replace(header, owned)),
        "both changes are in the file"
    );
    assert_eq!(
        status.commit.as_ref().map(|c| c.sha.as_str()),
        Some(log[0].sha.as_str())
    );
    assert!(
        story.git.repo_path().join("raced-once").exists(),
        "the colleague's push happened inside Fluxgate's push"
    );
    assert_eq!(flux_and_replicas(&story).await, (false, false, Some(2)));
    story.stop().await;
}

async fn g_a_push_that_changes_the_same_field_is_never_overwritten() {
    let story = start().await;
    // The colleague's version exists (on real Flux the registry serves only what was pushed).
    story.publish_app_chart("db", "v1.6.0").await.unwrap();
    story
        .git
        .install_hook(
            "pre-receive",
            &colleague_pushes_first("tag: v1.4.0", "tag: v1.6.0", "Upgrade db to v1.6.0 by hand"),
        )
        .unwrap();
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(60))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failure = status.failure.clone().unwrap();
    assert_eq!(failure.phase, Phase::Commit, "{failure:?}");
    assert_eq!(failure.reason, "VersionChangedInGit", "{failure:?}");
    assert!(
        failure.message.contains("v1.6.0") && failure.message.contains("v1.4.0"),
        "the message names what Git holds and what was expected: {}",
        failure.message
    );
    assert!(status.commit.is_none());

    assert!(story.git.repo_path().join("raced-once").exists());
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 2, "no Fluxgate commit: {log:#?}");
    assert_eq!(log[0].author_email, OTHER_EMAIL);
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.6.0")),
        "the colleague's version stays"
    );
    assert_eq!(
        flux_and_replicas(&story).await,
        (false, false, Some(2)),
        "Flux and replicas are put back"
    );
    let app = story.app().await.unwrap().status.unwrap();
    assert_eq!(app.active_operation, None);
    story.stop().await;
}
