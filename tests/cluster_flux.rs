//! Suspending, resuming and nudging Flux objects on an API server, and finding the parent
//! chain: parents first, prior `suspend` remembered, only `spec.suspend` touched.

mod common;

use common::{cluster, helm_release, kustomization};
use fluxgate::api::{FluxObjectKind, FluxObjectReference, SourceKind, SourceReference};
use fluxgate::cluster::error::ClusterError;
use fluxgate::cluster::flux::ops::{
    get, is_suspended, request_reconcile, set_suspend, suspend_chain,
};
use kubesim::{KubeSim, Match};
use serde_json::json;

async fn fleet() -> KubeSim {
    let sim = cluster(&["flux-system", "apps"]).await;
    sim.put(kustomization("flux-system", "flux-system", None, false))
        .unwrap();
    sim.put(kustomization(
        "flux-system",
        "apps",
        Some(("flux-system", "flux-system")),
        false,
    ))
    .unwrap();
    sim.put(kustomization(
        "flux-system",
        "infra",
        Some(("flux-system", "flux-system")),
        true,
    ))
    .unwrap();
    sim.put(helm_release("apps", "db", Some(("flux-system", "apps"))))
        .unwrap();
    sim
}

fn db() -> SourceReference {
    SourceReference {
        kind: SourceKind::HelmRelease,
        name: "db".into(),
        namespace: None,
    }
}

#[tokio::test]
async fn the_chain_is_parents_first_with_prior_suspend_remembered() {
    let sim = fleet().await;
    let extra = [FluxObjectReference {
        kind: FluxObjectKind::Kustomization,
        name: "infra".into(),
        namespace: Some("flux-system".into()),
    }];
    let chain = suspend_chain(&sim.client(), "apps", &db(), &extra)
        .await
        .unwrap();
    let names: Vec<(String, bool)> = chain
        .iter()
        .map(|o| (o.name.clone(), o.was_suspended))
        .collect();
    assert_eq!(
        names,
        vec![
            ("flux-system".into(), false),
            ("apps".into(), false),
            ("db".into(), false),
            ("infra".into(), true)
        ]
    );
    assert_eq!(chain[2].namespace, "apps");
}

#[tokio::test]
async fn suspend_and_resume_touch_only_spec_suspend() {
    let sim = fleet().await;
    let client = sim.client();
    let chain = suspend_chain(&client, "apps", &db(), &[]).await.unwrap();
    for object in &chain {
        set_suspend(&client, object, true).await.unwrap();
    }
    let release = get(&client, FluxObjectKind::HelmRelease, "apps", "db")
        .await
        .unwrap()
        .unwrap();
    assert!(is_suspended(&release));
    assert_eq!(
        release.data["spec"]["values"],
        json!({"image": {"tag": "16.4"}}),
        "the rest of the spec is untouched"
    );
    for object in chain.iter().rev() {
        set_suspend(&client, object, object.was_suspended)
            .await
            .unwrap();
    }
    let parent = get(
        &client,
        FluxObjectKind::Kustomization,
        "flux-system",
        "apps",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!is_suspended(&parent));
    assert_eq!(parent.data["spec"]["path"], json!("./apps"));
}

#[tokio::test]
async fn a_reconcile_request_is_written_once_per_token() {
    let sim = fleet().await;
    let client = sim.client();
    let writes = || {
        sim.count(
            &Match::any()
                .verb("patch")
                .resource("helmreleases")
                .name("db"),
        )
    };
    request_reconcile(
        &client,
        FluxObjectKind::HelmRelease,
        "apps",
        "db",
        "2026-11-23T10:00:00Z",
    )
    .await
    .unwrap();
    request_reconcile(
        &client,
        FluxObjectKind::HelmRelease,
        "apps",
        "db",
        "2026-11-23T10:00:00Z",
    )
    .await
    .unwrap();
    assert_eq!(writes(), 1);
    let release = get(&client, FluxObjectKind::HelmRelease, "apps", "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        release.metadata.annotations.unwrap()["reconcile.fluxcd.io/requestedAt"],
        "2026-11-23T10:00:00Z"
    );
}

#[tokio::test]
async fn missing_objects_and_loops_are_explained() {
    let sim = fleet().await;
    let client = sim.client();
    let missing = SourceReference {
        kind: SourceKind::HelmRelease,
        name: "nope".into(),
        namespace: None,
    };
    let err = suspend_chain(&client, "apps", &missing, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "HelmRelease apps/nope does not exist; check spec.source of the ManagedApp"
    );

    sim.put(helm_release(
        "apps",
        "orphan",
        Some(("flux-system", "gone")),
    ))
    .unwrap();
    let orphan = SourceReference {
        kind: SourceKind::HelmRelease,
        name: "orphan".into(),
        namespace: None,
    };
    let err = suspend_chain(&client, "apps", &orphan, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Kustomization flux-system/gone does not exist")
            && err.contains("HelmRelease apps/orphan"),
        "{err}"
    );

    sim.put(kustomization(
        "flux-system",
        "self",
        Some(("flux-system", "self")),
        false,
    ))
    .unwrap();
    let looping = SourceReference {
        kind: SourceKind::Kustomization,
        name: "self".into(),
        namespace: Some("flux-system".into()),
    };
    let err = suspend_chain(&client, "flux-system", &looping, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::Invalid(ref m) if m.contains("loop")),
        "{err}"
    );
}

#[tokio::test]
async fn api_faults_are_classified_for_retry() {
    let sim = fleet().await;
    let client = sim.client();
    let chain = suspend_chain(&client, "apps", &db(), &[]).await.unwrap();
    sim.inject(
        kubesim::controls::Fault::respond(Match::any().verb("patch").resource("helmreleases"), 500)
            .nth(1),
    );
    let err = set_suspend(&client, &chain[2], true).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    set_suspend(&client, &chain[2], true)
        .await
        .expect("the retry succeeds");
}
