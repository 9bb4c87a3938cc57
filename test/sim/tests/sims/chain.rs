//! The whole chain as Fluxgate meets it: a commit to Git flows through source-controller
//! and kustomize-controller to an OCIRepository and HelmRelease, whose chart then runs.

use crate::common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use sim::kinds::{git_repository, helm_release};
use sim::seed;
use sim::volumes::writer_of;

fn app(tag: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: db\n  namespace: apps\nspec:\n  interval: 10m\n  url: oci://ghcr.io/example/charts/db\n  ref:\n    tag: {tag} # {{\"$imagepolicy\": \"x\"}}\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\n  namespace: apps\nspec:\n  interval: 10m\n  chartRef:\n    kind: OCIRepository\n    name: db\n  values:\n    persistence:\n    - name: data\n      size: 1Gi\n"
    )
}

#[tokio::test]
async fn a_commit_flows_through_flux_to_the_helm_release_and_its_volumes() {
    let env = env().await;
    let repo = GitRepo::new();
    repo.write(
        "clusters/prod/kustomization.yaml",
        "resources:\n- ns.yaml\n- db.yaml\n",
    )
    .write(
        "clusters/prod/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
    )
    .write("clusters/prod/db.yaml", &app("1.0.0"));
    repo.push("db 1.0.0");
    seed::flux_system(&env.client, &repo.url(), "main", "./clusters/prod")
        .await
        .unwrap();
    let releases = dynamic(&env.client, &helm_release(), "apps");
    let hr = wait_for(&releases, "db", "installed", |o| {
        let v = json_of(o);
        v["status"]["lastAttemptedRevision"]
            .as_str()
            .is_some_and(|r| sim::helm::chart_version_without_build(r) == "1.0.0")
            && cond(&v, "Ready")["status"] == "True"
    })
    .await;
    // Parent chain: the HelmRelease was applied by the root Kustomization.
    let labels = json_of(&hr)["metadata"]["labels"].clone();
    assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "flux-system");
    wait_for_token(
        &env.client,
        "apps",
        "data-db-0",
        "v1 wrote its volume",
        |t| writer_of(t) == "1.0.0",
    )
    .await;

    // What Fluxgate's commit does: change the tag in Git, then ask Flux to reconcile.
    repo.write("clusters/prod/db.yaml", &app("1.1.0"));
    repo.push("db 1.1.0");
    request_reconcile(
        &dynamic(&env.client, &git_repository(), "flux-system"),
        "flux-system",
        "upgrade",
    )
    .await;
    wait_for(&releases, "db", "upgraded", |o| {
        let v = json_of(o);
        v["status"]["lastAttemptedRevision"]
            .as_str()
            .is_some_and(|r| sim::helm::chart_version_without_build(r) == "1.1.0")
            && cond(&v, "Ready")["status"] == "True"
    })
    .await;
    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), "apps");
    wait_for(&sts, "db", "1.1.0 rolled out", |s| {
        let st = s.status.clone().unwrap_or_default();
        st.ready_replicas == Some(1)
            && st.current_revision == st.update_revision
            && st.observed_generation == s.metadata.generation
            && s.spec.template.spec.as_ref().unwrap().containers[0]
                .image
                .as_deref()
                == Some("ghcr.io/example/db:1.1.0")
    })
    .await;
    wait_for_token(
        &env.client,
        "apps",
        "data-db-0",
        "v1.1 wrote its volume",
        |t| writer_of(t) == "1.1.0",
    )
    .await;
}
