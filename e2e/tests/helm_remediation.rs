//! Stories of helm-controller failing a release the way helm-controller v1.6.4 does it:
//! remediation with retries left (observedGeneration held back while it retries), the
//! `RetryOnFailure` strategy (no Remediated, no Stalled: `Released=False`/`UpgradeFailed`
//! and a retry after an interval), and an action still running when Fluxgate suspends.
//!
//! The failing action's timeout is `spec.upgrade.timeout` (helm-controller's
//! `timeoutForAction`), so the install of the good version waits for readiness as long as
//! it needs (about 5 s on the real stack; `spec.timeout: 2s` failed the install there).
//!
//! Where they run: the `RetryOnFailure` story on kubesim and real Flux. The remediation
//! story on kubesim and on the real control plane with the Flux sims only: on real Flux
//! helm-controller's own rollback cannot succeed for this app. The chart's StatefulSet is
//! OrderedReady; the upgrade replaces db-1 with a pod that never becomes ready, and after
//! Helm reverts the template the StatefulSet controller never replaces that pod
//! (`processReplica` returns while a replica is not Running and Ready, in
//! pkg/controller/statefulset/stateful_set_control.go of Kubernetes v1.36.3: the documented
//! "forced rollback" case). Helm's rollback then waits out `spec.rollback.timeout` (default
//! `spec.timeout`, 5m; the kstatus wait of internal/action/rollback.go) and fails. Tried:
//! Reconcile timed out after 6 s ("has not acted on its latest spec yet") and the
//! RollbackRequest waited in Suspend beyond the story's 120 s. The sims' StatefulSet
//! replaces unready pods, so their remediation succeeds. The story about an action running
//! during Suspend is kubesim only (see its comment).

use e2e::given::app;
use fluxgate::api::{Phase, RollbackRequest, UpgradeRequest};
use fluxgate::cluster::flux::HelmRelease;
use fluxgate::demo::world::{Fleet, wait_until};
use kube::api::{Patch, PatchParams};
use kubesim::Match;
use serde_json::json;
use std::time::Duration;

e2e::on_all_stacks!(a_release_helm_controller_keeps_retrying_fails_verify_with_its_message);
e2e::on_both_stacks!(a_remediation_with_retries_left_fails_the_upgrade_at_once);

const APP_FILE: &str = "clusters/prod/db.yaml";

/// A failing chart makes helm-controller wait this long (its action timeout) before it
/// records the failure.
const RELEASE_SPEC_RETRIES: &str = "  upgrade:
    timeout: 2s
    remediation:
      retries: 3
";

async fn a_remediation_with_retries_left_fails_the_upgrade_at_once() {
    // Four attempts of 2 s each, every one rolled back: helm-controller writes no
    // observedGeneration until the last. Fluxgate must see the first remediation of its
    // chart, not wait for the Reconcile timeout (6 s).
    let story = e2e::given::world(Fleet::new().helm_app_with(
        "db",
        "v1.4.0",
        2,
        RELEASE_SPEC_RETRIES,
        app().reconcile_timeout("6s").health_timeout("20s").into(),
    ))
    .await
    .unwrap();
    story.world.failures.fail_chart_version("2.0.0");
    story.upgrade("db-2-0-0", "v2.0.0").await.unwrap();
    let upgrade: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(120))
        .await
        .unwrap();
    let status = upgrade.status.clone().unwrap();
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Reconcile, "HelmRemediated"),
        "{failure:?}"
    );
    assert!(
        failure.message.contains("RollbackSucceeded"),
        "{}",
        failure.message
    );
    // The rollback ran while helm-controller was still retrying: it waited for
    // helm-controller to see its suspend, restored the data and reverted Git.
    let rollback: RollbackRequest = story
        .finished("db-2-0-0-rollback", Duration::from_secs(60))
        .await
        .unwrap();
    let rollback_status = rollback.status.unwrap();
    assert_eq!(
        rollback_status.phase,
        Some(Phase::Succeeded),
        "{rollback_status:#?}"
    );
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:#?}");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.4.0"))
    );
    let problems = e2e::checks::put_back_problems(&story).await;
    assert!(problems.is_empty(), "{problems:?}");
    story.stop().await;
}

const RELEASE_SPEC_RETRY_ON_FAILURE: &str = "  upgrade:
    timeout: 1s
    strategy:
      name: RetryOnFailure
      retryInterval: 1s
";

async fn a_release_helm_controller_keeps_retrying_fails_verify_with_its_message() {
    // RetryOnFailure: no Remediated, no Stalled, only Released/Ready=False UpgradeFailed
    // between retries (Ready=Unknown during each). Verify is bounded by its timeout and
    // says why: helm-controller's upgrade failure.
    let story = e2e::given::world(Fleet::new().helm_app_with(
        "db",
        "v1.4.0",
        2,
        RELEASE_SPEC_RETRY_ON_FAILURE,
        app().health_timeout("6s").into(),
    ))
    .await
    .unwrap();
    story.world.failures.fail_chart_version("2.0.0");
    story.upgrade("db-2-0-0", "v2.0.0").await.unwrap();
    let upgrade: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(120))
        .await
        .unwrap();
    let status = upgrade.status.clone().unwrap();
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Verify, "HelmUpgradeFailed"),
        "{failure:?}"
    );
    assert!(
        failure
            .message
            .contains("Helm upgrade failed for release apps/db with chart db@2.0.0+"),
        "{}",
        failure.message
    );
    let rollback: RollbackRequest = story
        .finished("db-2-0-0-rollback", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        rollback.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded),
        "{:#?}",
        rollback.status
    );
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:#?}");
    let problems = e2e::checks::put_back_problems(&story).await;
    assert!(problems.is_empty(), "{problems:?}");
    story.stop().await;
}

const RELEASE_SPEC_SLOW: &str = "  timeout: 3s
  upgrade:
    remediation:
      retries: 1
";

// kubesim only: it reads the bodies of the writes (which patch resumed the HelmRelease), and
// the real API server's audit log is kept at the Metadata level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_helm_controller_is_running_ends_before_the_app_is_quiesced() {
    // helm-controller is in the middle of an upgrade (someone changed the values in the
    // cluster; the chart fails and takes its 3 s timeout, then is rolled back) when the
    // UpgradeRequest suspends the HelmRelease. That action goes on after the suspend and
    // applies the StatefulSet again: Fluxgate must not scale it down before
    // helm-controller has seen the suspend, or the app comes back under the snapshot.
    let story = e2e::given::world(Fleet::new().helm_app_with(
        "db",
        "v1.4.0",
        2,
        RELEASE_SPEC_SLOW,
        app().into(),
    ))
    .await
    .unwrap();
    story.world.failures.fail_chart_version("1.4.0");
    let releases = e2e::api::<HelmRelease>(&story);
    releases
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"values": {"podAnnotations": {"tuned": "yes"}}}})),
        )
        .await
        .unwrap();
    wait_until(
        "helm-controller to run the upgrade",
        Duration::from_secs(30),
        async || {
            let release = releases.get("db").await.ok()?;
            release
                .status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.message.starts_with("Running 'upgrade'"))
                .then_some(())
        },
    )
    .await
    .unwrap();
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let upgrade: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(120))
        .await
        .unwrap();
    let status = upgrade.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");

    // Nobody but Fluxgate touched the StatefulSet's spec between Fluxgate scaling it down
    // and Fluxgate resuming the HelmRelease.
    let log = story.kubesim().requests(&Match::any());
    let operator = |r: &kubesim::RequestRecord| r.user_agent.starts_with("fluxgate/");
    let scaled = log
        .iter()
        .position(|r| {
            operator(r)
                && r.resource == "statefulsets"
                && r.name.as_deref() == Some("db")
                && matches!(r.verb.as_str(), "patch" | "update")
        })
        .expect("Fluxgate scaled the StatefulSet");
    let resumed = log
        .iter()
        .position(|r| {
            operator(r)
                && r.resource == "helmreleases"
                && r.name.as_deref() == Some("db")
                && r.verb == "patch"
                && r.body
                    .as_ref()
                    .is_some_and(|b| b["spec"]["suspend"] == false)
        })
        .expect("Fluxgate resumed the HelmRelease");
    let meddling: Vec<String> = log[scaled..resumed]
        .iter()
        .filter(|r| {
            !operator(r)
                && r.resource == "statefulsets"
                && r.name.as_deref() == Some("db")
                && r.subresource.is_none()
                && matches!(r.verb.as_str(), "patch" | "update" | "create")
        })
        .map(e2e::checks::describe)
        .collect();
    assert!(
        meddling.is_empty(),
        "the StatefulSet was written while the app was quiesced: {meddling:?}"
    );
    let problems = e2e::checks::put_back_problems(&story).await;
    assert!(problems.is_empty(), "{problems:?}");
    story.stop().await;
}
