//! OCIRepository refs as real fleets write them. Renovate pins a chart's OCIRepository with
//! `spec.ref.digest` beside `spec.ref.tag`, and source-controller pulls the digest (digest
//! wins over semver over tag; the artifact revision is then just `sha256:…`): an upgrade
//! changes tag and digest together in one commit, byte-minimal, and Reconcile recognises
//! the new artifact by its digest. A version without a digest for such a ref is refused at
//! Admit, as is an app whose OCIRepository follows a `semver` range (Flux picks the chart
//! itself; there is nothing to pin).

use e2e::given::{app, upgrade};
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{DemoWorld, Fleet, digest_placeholder, helm_app_manifest};
use std::time::Duration;

e2e::on_all_stacks!(
    a_digest_pinned_oci_repository_changes_tag_and_digest_in_one_commit,
    an_oci_repository_following_a_semver_range_is_refused_at_admit
);

const DB_URL: &str = "oci://ghcr.io/example/charts/db";
const DB_FILE: &str = "clusters/prod/db.yaml";

/// App `name` with its OCIRepository's `ref` written as `reference` (YAML lines at the
/// indentation of `ref:`'s children) instead of the plain tag.
fn with_ref(name: &str, replicas: u32, reference: &str) -> String {
    let plain = helm_app_manifest(name, "1.4.0", replicas);
    let tag_line = "    tag: 1.4.0 # pinned by Fluxgate\n";
    assert!(plain.contains(tag_line), "{plain}");
    plain.replace(tag_line, reference)
}

fn pinned(tag: &str, digest: &str) -> String {
    format!("    tag: {tag}\n    digest: {digest} # pinned by Renovate\n")
}

async fn served_revision(story: &DemoWorld, name: &str) -> Option<String> {
    then::served_revision(story, FluxObjectKind::OciRepository, "apps", name).await
}

async fn a_digest_pinned_oci_repository_changes_tag_and_digest_in_one_commit() {
    // The digests are the registry's, known once the world pushed the charts.
    let written = with_ref(
        "db",
        2,
        &pinned("1.4.0", &digest_placeholder(DB_URL, "1.4.0")),
    );
    let fleet = Fleet::new()
        .published_chart(DB_URL, "1.4.0")
        .published_chart(DB_URL, "1.5.0")
        .helm_app_written("db", "db", &written, 2, app().into());
    let story = e2e::given::world(fleet).await.unwrap();
    let old = story.chart_digest(DB_URL, "1.4.0").unwrap();
    let new = story.chart_digest(DB_URL, "1.5.0").unwrap();
    let before = story.fleet_text(&written);
    assert!(before.contains(&old), "{before}");
    assert_eq!(
        served_revision(&story, "db").await,
        Some(old.clone()),
        "source-controller pulls the digest; the revision is the digest alone"
    );

    // A version without a digest would leave the old digest in place, and it wins: refused
    // before anything is touched, saying what to give instead.
    story.upgrade("db-no-digest", "1.5.0").await.unwrap();
    let refused: UpgradeRequest = story
        .finished("db-no-digest", Duration::from_secs(60))
        .await
        .unwrap();
    let status = refused.status.unwrap();
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (status.phase, failure.phase),
        (Some(Phase::Failed), Phase::Admit),
        "{status:#?}"
    );
    for needle in ["spec.ref.digest", DB_FILE, "1.5.0@sha256:"] {
        assert!(
            failure.message.contains(needle),
            "the refusal names {needle}: {}",
            failure.message
        );
    }
    assert_eq!(story.git.log().unwrap().len(), 1, "nothing committed");
    let app = then::settled_app_status(&story).await;
    assert_eq!(
        app.current_versions.get("chart"),
        Some(&format!("1.4.0@{old}")),
        "the chart's version is its tag with the digest the ref pins"
    );

    // Tag and digest together: one commit changing exactly those two values.
    let target = format!("1.5.0@{new}");
    story.upgrade("db-1-5-0", &target).await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let plan = status.plan.unwrap();
    assert_eq!(plan.from.get("chart"), Some(&format!("1.4.0@{old}")));
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].message.contains("Fluxgate-Request: apps/db-1-5-0"));
    let after = story.git.read_file(DB_FILE).unwrap().unwrap();
    assert_eq!(
        after,
        story.fleet_text(&with_ref("db", 2, &pinned("1.5.0", &new)))
    );
    assert_eq!(after.len(), before.len(), "only the two scalars changed");
    assert!(
        !after.contains("tag: 1.5.0@"),
        "never `tag: <tag>@<digest>` in an OCIRepository"
    );

    // Flux pulled the new digest and released the chart it holds.
    assert_eq!(served_revision(&story, "db").await, Some(new.clone()));
    let sts = then::statefulset(&story, "db").await;
    assert_eq!(
        sts.metadata
            .labels
            .unwrap_or_default()
            .get("helm.sh/chart")
            .map(String::as_str),
        // helm-controller releases a digest-pulled chart as `1.5.0+<12 hex of the digest>`
        // (mutateChartWithSourceRevision), which the chart's label spells with `_`.
        Some(format!("db-1.5.0_{}", &new.trim_start_matches("sha256:")[..12]).as_str())
    );
    then::app_records(&story, "db", "chart", &target).await;
    story.stop().await;
}

async fn an_oci_repository_following_a_semver_range_is_refused_at_admit() {
    let cache_url = "oci://ghcr.io/example/charts/cache";
    let range = "    semver: \">=1.4.0 <2.0.0\"\n";
    let fleet = Fleet::new()
        .published_chart(DB_URL, "1.4.0")
        .published_chart(cache_url, "1.4.0")
        // Flux follows the range alone…
        .helm_app_written("db", "db", &with_ref("db", 2, range), 2, app().into())
        // …and the range beside a tag still wins over the tag.
        .helm_app_written(
            "cache",
            "cache",
            &with_ref("cache", 1, &format!("    tag: 1.4.0\n{range}")),
            1,
            app().into(),
        );
    let story = e2e::given::world(fleet).await.unwrap();
    let commits = story.git.log().unwrap().len();
    for app in ["db", "cache"] {
        let name = format!("{app}-1-5-0");
        upgrade(&name)
            .of_app(app)
            .to_version("1.5.0")
            .create(&story)
            .await
            .unwrap();
        let refused: UpgradeRequest = story
            .finished(&name, Duration::from_secs(60))
            .await
            .unwrap();
        let status = refused.status.unwrap();
        let failure = status.failure.clone().unwrap();
        assert_eq!(
            (status.phase, failure.phase, failure.reason.as_str()),
            (Some(Phase::Failed), Phase::Admit, "SemverRef"),
            "{app}: {status:#?}"
        );
        for needle in [
            format!("OCIRepository {app}"),
            format!("clusters/prod/{app}.yaml"),
            "spec.ref.semver".to_owned(),
            ">=1.4.0 <2.0.0".to_owned(),
            "spec.ref.tag".to_owned(),
        ] {
            assert!(
                failure.message.contains(&needle),
                "{app}: the refusal names {needle}: {}",
                failure.message
            );
        }
    }
    assert_eq!(story.git.log().unwrap().len(), commits, "nothing committed");
    story.stop().await;
}
