//! Suspending, resuming and nudging Flux objects on an API server, and finding the parent
//! chain: parents first, prior `suspend` remembered, only `spec.suspend` touched.

mod common;

use common::{cluster, helm_release, kustomization};
use fluxgate::api::{FluxObjectKind, FluxObjectReference, SourceKind, SourceReference};
use fluxgate::cluster::cache::Cluster;
use fluxgate::cluster::error::ClusterError;
use fluxgate::cluster::flux::ops::{
    chain_error_reason, get, is_suspended, request_reconcile, set_suspend, suspend_chain,
};
use kubesim::{KubeSim, Match};
use serde_json::json;

/// A fleet as `flux bootstrap` makes it: the root Kustomization `flux-system` applies its
/// own manifest, so its labels name itself.
async fn fleet() -> KubeSim {
    let sim = cluster(&["flux-system", "apps"]).await;
    sim.put(kustomization(
        "flux-system",
        "flux-system",
        Some(("flux-system", "flux-system")),
        false,
    ))
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
    let chain = suspend_chain(&Cluster::direct(sim.client()), "apps", &db(), &extra)
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
    let client = Cluster::direct(sim.client());
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
    let client = Cluster::direct(sim.client());
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
    let client = Cluster::direct(sim.client());
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

    // A real loop: a is applied by b, b by a.
    sim.put(kustomization(
        "flux-system",
        "a",
        Some(("flux-system", "b")),
        false,
    ))
    .unwrap();
    sim.put(kustomization(
        "flux-system",
        "b",
        Some(("flux-system", "a")),
        false,
    ))
    .unwrap();
    sim.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cache"}}))
        .unwrap();
    sim.put(helm_release("cache", "redis", Some(("flux-system", "a"))))
        .unwrap();
    let looping = SourceReference {
        kind: SourceKind::HelmRelease,
        name: "redis".into(),
        namespace: None,
    };
    let err = suspend_chain(&client, "cache", &looping, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Invalid(_)), "{err}");
    assert_eq!(chain_error_reason(&err), "FluxParentChainInvalid");
    assert_eq!(
        err.to_string(),
        "the parents of HelmRelease cache/redis form a loop: Kustomization flux-system/a is its own ancestor (HelmRelease cache/redis → applied by Kustomization flux-system/a → applied by Kustomization flux-system/b → applied by Kustomization flux-system/a); check the kustomize.toolkit.fluxcd.io/name and kustomize.toolkit.fluxcd.io/namespace labels"
    );

    // An app in one namespace whose source is in another is named by the source's.
    let across = SourceReference {
        kind: SourceKind::Kustomization,
        name: "a".into(),
        namespace: Some("flux-system".into()),
    };
    let err = suspend_chain(&client, "cache", &across, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("the parents of Kustomization flux-system/a form a loop"),
        "{err}"
    );

    // Seventeen Kustomizations deep is refused as too deep, not as a loop.
    for level in 0..17 {
        let parent = format!("level-{}", level + 1);
        sim.put(kustomization(
            "flux-system",
            &format!("level-{level}"),
            Some(("flux-system", &parent)),
            false,
        ))
        .unwrap();
    }
    sim.put(kustomization(
        "flux-system",
        "level-17",
        Some(("flux-system", "level-17")),
        false,
    ))
    .unwrap();
    let deep = SourceReference {
        kind: SourceKind::Kustomization,
        name: "level-0".into(),
        namespace: Some("flux-system".into()),
    };
    let err = suspend_chain(&client, "flux-system", &deep, &[])
        .await
        .unwrap_err();
    assert_eq!(chain_error_reason(&err), "FluxParentChainInvalid");
    assert!(
        err.to_string()
            .contains("are deeper than 16 Kustomizations"),
        "{err}"
    );
    // Sixteen deep, ending at a root that names itself, is fine.
    let shallow = SourceReference {
        kind: SourceKind::Kustomization,
        name: "level-2".into(),
        namespace: Some("flux-system".into()),
    };
    let chain = suspend_chain(&client, "flux-system", &shallow, &[])
        .await
        .unwrap();
    assert_eq!(chain.len(), 16);
    assert_eq!(chain[0].name, "level-17");
}

#[tokio::test]
async fn a_root_that_applies_itself_ends_the_chain() {
    let sim = fleet().await;
    let chain = suspend_chain(&Cluster::direct(sim.client()), "apps", &db(), &[])
        .await
        .unwrap();
    let names: Vec<&str> = chain.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["flux-system", "apps", "db"]);
    let root = SourceReference {
        kind: SourceKind::Kustomization,
        name: "flux-system".into(),
        namespace: Some("flux-system".into()),
    };
    let chain = suspend_chain(&Cluster::direct(sim.client()), "apps", &root, &[])
        .await
        .unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].name, "flux-system");
}

#[tokio::test]
async fn api_faults_are_classified_for_retry() {
    let sim = fleet().await;
    let client = Cluster::direct(sim.client());
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

mod applied {
    //! "Has Flux applied our commit?" read from live objects: a stale Ready=True right after
    //! resume is not applied; a remediated HelmRelease is a failure.

    use super::*;
    use common::patch_status;
    use fluxgate::cluster::flux::ops::{apply_progress, git_source};
    use fluxgate::cluster::flux::progress::Progress;

    const OLD: &str = "1111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222";

    fn ready(generation: i64) -> serde_json::Value {
        json!({"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision",
               "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": generation})
    }

    async fn world_at(revision: &str) -> KubeSim {
        let sim = fleet().await;
        sim.put(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "fleet", "namespace": "flux-system"},
            "spec": {"url": "https://git.example.com/fleet.git", "interval": "1m", "ref": {"branch": "main"}, "secretRef": {"name": "fleet-auth"}}}))
            .unwrap();
        let client = Cluster::direct(sim.client());
        let artifact = json!({"status": {"artifact": {"revision": format!("main@sha1:{revision}"), "digest": "sha256:x",
            "lastUpdateTime": "2026-11-23T10:00:00Z", "path": "p", "url": "u"}, "conditions": [ready(1)]}});
        patch_status(
            client.client(),
            "source.toolkit.fluxcd.io",
            "v1",
            "GitRepository",
            "flux-system",
            "fleet",
            artifact,
        )
        .await;
        for name in ["flux-system", "apps"] {
            let status = json!({"status": {"observedGeneration": 1, "lastAppliedRevision": format!("main@sha1:{revision}"), "conditions": [ready(1)]}});
            patch_status(
                client.client(),
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "flux-system",
                name,
                status,
            )
            .await;
        }
        let release = json!({"status": {"observedGeneration": 1, "lastAttemptedGeneration": 1, "lastAttemptedRevision": "1.5.0", "conditions": [ready(1)]}});
        patch_status(
            client.client(),
            "helm.toolkit.fluxcd.io",
            "v2",
            "HelmRelease",
            "apps",
            "db",
            release,
        )
        .await;
        sim
    }

    #[tokio::test]
    async fn the_git_source_comes_from_the_deploying_kustomization() {
        let sim = world_at(OLD).await;
        let chain = suspend_chain(&Cluster::direct(sim.client()), "apps", &db(), &[])
            .await
            .unwrap();
        let source = git_source(&Cluster::direct(sim.client()), &chain)
            .await
            .unwrap();
        assert_eq!(source.url, "https://git.example.com/fleet.git");
        assert_eq!(source.branch(), Ok("main"));
        assert_eq!(source.secret.as_deref(), Some("fleet-auth"));
        assert_eq!(
            source.repository,
            ("flux-system".to_owned(), "fleet".to_owned())
        );
    }

    #[tokio::test]
    async fn the_branch_is_the_one_flux_resolves_from_spec_ref() {
        let sim = world_at(OLD).await;
        let client = Cluster::direct(sim.client());
        let chain = suspend_chain(&client, "apps", &db(), &[]).await.unwrap();
        let set_ref = |reference: serde_json::Value| {
            sim.put(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                "metadata": {"name": "fleet", "namespace": "flux-system"},
                "spec": {"url": "https://git.example.com/fleet.git", "interval": "1m", "ref": reference}}))
                .unwrap();
        };
        for (reference, expected) in [
            (json!({"name": "refs/heads/release/2"}), Ok("release/2")),
            (
                json!({"name": "refs/heads/main", "branch": "other"}),
                Ok("main"),
            ),
            (json!({}), Ok("master")),
            (
                json!({"tag": "v1.0.0"}),
                Err("follows tag v1.0.0 (spec.ref.tag)"),
            ),
            (
                json!({"name": "refs/tags/v1"}),
                Err("follows tag v1 (spec.ref.name)"),
            ),
            (
                json!({"tag": "v1", "branch": "main"}),
                Err("follows tag v1 (spec.ref.tag)"),
            ),
            (
                json!({"semver": ">=1.0.0"}),
                Err("semver range >=1.0.0 (spec.ref.semver)"),
            ),
            (
                json!({"commit": "abc123", "branch": "main"}),
                Err("is pinned to commit abc123 (spec.ref.commit"),
            ),
            (
                json!({"name": "main"}),
                Err("follows reference main (spec.ref.name), which is not a branch"),
            ),
        ] {
            set_ref(reference.clone());
            let source = git_source(&client, &chain).await.unwrap();
            match (source.branch(), expected) {
                (Ok(branch), Ok(want)) => assert_eq!(branch, want, "{reference}"),
                (Err(why), Err(want)) => {
                    assert!(why.starts_with("GitRepository flux-system/fleet "), "{why}");
                    assert!(why.contains(want), "{reference}: {why}");
                    assert!(
                        why.contains("make the GitRepository follow a branch"),
                        "{why}"
                    );
                }
                (got, want) => panic!("{reference}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_stale_ready_right_after_resume_is_not_applied() {
        let sim = world_at(OLD).await;
        let client = Cluster::direct(sim.client());
        let chain = suspend_chain(&client, "apps", &db(), &[]).await.unwrap();
        // Everything is Ready=True — for the old commit.
        let progress = apply_progress(&client, &chain, NEW, Some("1.5.0"))
            .await
            .unwrap();
        assert!(
            matches!(&progress, Progress::Waiting(m) if m.contains("GitRepository fleet")),
            "{progress:?}"
        );
        let applied = world_at(NEW).await;
        let chain = suspend_chain(&Cluster::direct(applied.client()), "apps", &db(), &[])
            .await
            .unwrap();
        assert_eq!(
            apply_progress(
                &Cluster::direct(applied.client()),
                &chain,
                NEW,
                Some("v1.5.0")
            )
            .await
            .unwrap(),
            Progress::Done
        );
        let progress = apply_progress(
            &Cluster::direct(applied.client()),
            &chain,
            NEW,
            Some("1.6.0"),
        )
        .await
        .unwrap();
        assert!(
            matches!(&progress, Progress::Waiting(m) if m.contains("waiting for 1.6.0")),
            "{progress:?}"
        );
    }

    #[tokio::test]
    async fn a_helm_release_remediated_by_helm_controller_is_a_failure() {
        let sim = world_at(NEW).await;
        let client = Cluster::direct(sim.client());
        let remediated = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": "context deadline exceeded", "lastTransitionTime": "2026-11-23T10:05:00Z", "observedGeneration": 1},
            {"type": "Remediated", "status": "True", "reason": "RollbackSucceeded", "message": "Helm rollback to previous release apps/db.v1 succeeded", "lastTransitionTime": "2026-11-23T10:05:00Z", "observedGeneration": 1}
        ]}});
        patch_status(
            client.client(),
            "helm.toolkit.fluxcd.io",
            "v2",
            "HelmRelease",
            "apps",
            "db",
            remediated,
        )
        .await;
        let chain = suspend_chain(&client, "apps", &db(), &[]).await.unwrap();
        match apply_progress(&client, &chain, NEW, Some("1.5.0"))
            .await
            .unwrap()
        {
            Progress::Failed { reason, message } => {
                assert_eq!(reason, "HelmRemediated");
                assert!(message.contains("RollbackSucceeded"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
