//! Story (b): a Kustomization app whose Deployment image is pinned by digest
//! (`ghcr.io/example/web:1.2.0@sha256:…`, a `format: image` version field) is upgraded:
//! tag and digest change together in one commit that touches nothing else, the Deployment
//! rolls out the new image, Flux is resumed and the ManagedApp records the new version.

use e2e::given::{app, upgrade};
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{Fleet, WEB_FILE, web_deployment};
use std::time::Duration;

e2e::on_all_stacks!(b_a_digest_pinned_deployment_image_is_upgraded_as_one_unit);

fn image(tag: &str, digit: char) -> String {
    format!(
        "ghcr.io/example/web:{tag}@sha256:{}",
        digit.to_string().repeat(64)
    )
}

async fn b_a_digest_pinned_deployment_image_is_upgraded_as_one_unit() {
    let old = image("1.2.0", 'a');
    let new = image("1.3.0", 'b');
    let new_version = format!("1.3.0@sha256:{}", "b".repeat(64));
    let story = e2e::given::world(Fleet::new().web_app(&old, app().into()))
        .await
        .unwrap();
    let before = story.git.read_file(WEB_FILE).unwrap().unwrap();
    assert_eq!(before, web_deployment(&old));

    upgrade("web-1-3-0")
        .of_app("web")
        .to_version(&new_version)
        .create(&story)
        .await
        .unwrap();
    let done: UpgradeRequest = story
        .finished("web-1-3-0", Duration::from_secs(60))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let plan = status.plan.clone().unwrap();
    assert_eq!(
        plan.from.get("image").map(String::as_str),
        Some(format!("1.2.0@sha256:{}", "a".repeat(64)).as_str()),
        "the plan reads the version (tag and digest) out of the image reference"
    );
    assert_eq!(status.snapshots.len(), 1, "{:?}", status.snapshots);
    assert!(status.snapshots[0].ready_to_use && status.snapshots[0].pvc == "web-data");

    // Git: one new commit, ours, changing exactly the image line's tag and digest.
    let log = story.git.log().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].message.contains("Fluxgate-Request: apps/web-1-3-0"),
        "{}",
        log[0].message
    );
    let after = story.git.read_file(WEB_FILE).unwrap().unwrap();
    assert_eq!(after, web_deployment(&new));
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            format!("        image: \"{old}\" # digest pinned").as_str(),
            format!("        image: \"{new}\" # digest pinned").as_str()
        )],
        "only the image scalar changed; quoting and the comment are kept"
    );
    assert_eq!(before.len(), after.len());

    // The cluster runs the new image, rolled out.
    let deployment = then::deployment(&story, "web").await;
    let spec_image = deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone();
    assert_eq!(spec_image.as_deref(), Some(new.as_str()));
    let rollout = deployment.status.clone().unwrap();
    assert_eq!(rollout.observed_generation, deployment.metadata.generation);
    assert_eq!(
        (rollout.updated_replicas, rollout.ready_replicas),
        (Some(1), Some(1))
    );
    let running: Vec<Option<String>> = then::pods(&story, "app=web")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone())
        .collect();
    assert_eq!(running, vec![Some(new.clone())]);

    // Flux resumed (the app's Kustomization and its parent), the app records the version.
    for (namespace, name) in [("flux-system", "web"), ("flux-system", "flux-system")] {
        assert!(
            then::resumed(&story, FluxObjectKind::Kustomization, namespace, name).await,
            "Kustomization {name} resumed"
        );
    }
    let app = then::app_records(&story, "web", "image", &new_version).await;
    assert_eq!(app.active_operation, None);
    story.stop().await;
}
