//! YAML anchors as real fleets use them (the bjw-s app-template pattern): the image is
//! written once, `image: &image {repository, tag}`, and repeated as `*image` by a second
//! controller and the chart's top-level `image`. The version field, named through an alias,
//! is the anchored scalar: the dry run says which other paths read it, and the upgrade
//! edits it once, at its definition, leaving every other byte as it was — and every place
//! that repeats it runs the new image.

use e2e::given::{app, upgrade, version_field};
use e2e::then;
use fluxgate::api::{Phase, UpgradeRequest};
use fluxgate::demo::world::{DemoWorld, Fleet, helm_app_manifest};
use std::time::Duration;

e2e::on_all_stacks!(an_anchored_image_tag_is_edited_once_at_its_definition);

const FILE: &str = "clusters/prod/db.yaml";
/// The app's chart, at 1.4.0 throughout (the image is what changes).
const CHART: &str = "oci://ghcr.io/example/charts/db";
const BACKUP_TAG: &str = ".spec.values.controllers.backup.containers.app.image.tag";

/// The db app with its values in app-template style, the image written once at `tag`.
fn anchored(tag: &str) -> String {
    let plain = helm_app_manifest("db", "1.4.0", 2);
    let values = "  values:\n    replicaCount: 2\n";
    assert!(plain.contains(values), "{plain}");
    plain.replace(
        values,
        &format!(
            "  values:
    replicaCount: 2
    controllers:
      main:
        containers:
          app:
            image: &image
              repository: ghcr.io/example/db
              tag: {tag} # written once, repeated below
      backup:
        containers:
          app:
            image: *image
    image: *image
"
        ),
    )
}

async fn running_image(story: &DemoWorld) -> Option<String> {
    then::running_image(story, "db").await
}

async fn an_anchored_image_tag_is_edited_once_at_its_definition() {
    let before = anchored("16.4.0");
    let fleet = Fleet::new()
        .published_chart(CHART, "1.4.0")
        .helm_app_written(
            "db",
            "db",
            &before,
            2,
            app()
                .versions(vec![version_field("image", BACKUP_TAG, "HelmRelease/db")])
                .into(),
        );
    let story = e2e::given::world(fleet).await.unwrap();
    let before = story.fleet_text(&before);
    assert_eq!(
        running_image(&story).await.as_deref(),
        Some("ghcr.io/example/db:16.4.0"),
        "Flux expands the alias the chart's `image` reads"
    );
    // The dry run says which other paths share the scalar it would edit.
    upgrade("db-dry")
        .to_target("image", "16.5.0")
        .dry_run()
        .create(&story)
        .await
        .unwrap();
    let dry: UpgradeRequest = story
        .finished("db-dry", Duration::from_secs(60))
        .await
        .unwrap();
    let status = dry.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let preflight = status
        .phases
        .iter()
        .find(|p| p.name == Phase::Preflight)
        .and_then(|p| p.message.clone())
        .unwrap_or_default();
    let definition_line = before
        .lines()
        .position(|l| l.contains("tag: 16.4.0"))
        .map(|index| format!("line {}", index + 1))
        .unwrap();
    for shared in [
        ".spec.values.controllers.main.containers.app.image.tag",
        ".spec.values.image.tag",
        definition_line.as_str(),
    ] {
        assert!(
            preflight.contains(shared),
            "the preflight names {shared}: {preflight}"
        );
    }
    assert_eq!(
        story.git.log().unwrap().len(),
        1,
        "a dry run commits nothing"
    );

    let app = then::settled_app_status(&story).await;
    assert_eq!(
        app.current_versions.get("image").map(String::as_str),
        Some("16.4.0"),
        "reading follows the alias: {app:#?}"
    );

    // The upgrade: one scalar changed, at the anchor; the aliases untouched.
    upgrade("db-16-5-0")
        .to_target("image", "16.5.0")
        .create(&story)
        .await
        .unwrap();
    let done: UpgradeRequest = story
        .finished("db-16-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let after = story.git.read_file(FILE).unwrap().unwrap();
    assert_eq!(after, story.fleet_text(&anchored("16.5.0")));
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            "              tag: 16.4.0 # written once, repeated below",
            "              tag: 16.5.0 # written once, repeated below"
        )]
    );
    assert_eq!(
        running_image(&story).await.as_deref(),
        Some("ghcr.io/example/db:16.5.0"),
        "every place that repeats the anchor runs the new tag"
    );
    then::app_records(&story, "db", "image", "16.5.0").await;
    story.stop().await;
}
