//! The chart's RBAC is sufficient and minimal. On kubesim the operator runs what it does in
//! a cluster — the start-up API check, leader election, the ManagedApp controller reading
//! Renovate's ConfigMap, a dry run, an upgrade, an upgrade that rolls back on its own and
//! an automatic upgrade — and every request it sent (User-Agent `fluxgate/…`) must be
//! allowed by the rules that the chart, rendered with real Helm, binds to its
//! ServiceAccount; every (verb, group, resource) those rules grant must have been used or
//! be justified below.

use e2e::chart::{self, Access, Rule};
use e2e::given::{app, auto_update, renovate_report, renovate_repository, upgrade};
use e2e::then;
use e2e::when::{self, RENOVATE_CONFIGMAP};
use fluxgate::api::{AutoUpdate, Phase, RollbackRequest, UpgradeRequest};
use fluxgate::controller::leader::Leadership;
use fluxgate::demo::world::{operator_client, wait_until};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// Grants the stories do not exercise, each with why the operator needs it. (A grant listed
/// here may still show up in the log on some runs; that is fine.)
const JUSTIFIED: &[(&str, &str, &str, &str)] = &[
    // (verb, group, resource, why)
    (
        "get",
        "fluxgate.dev",
        "rollbackrequests",
        "a RollbackRequest holding an app's lock is read to see whether it still exists",
    ),
    (
        "patch",
        "events.k8s.io",
        "events",
        "kube-runtime's Recorder patches an Event that repeats (series)",
    ),
    (
        "get",
        "apps",
        "deployments",
        "workloads may be Deployments; the story's app is a StatefulSet",
    ),
    (
        "patch",
        "apps",
        "deployments",
        "quiescing a Deployment patches spec.replicas",
    ),
    (
        "list",
        "apps",
        "replicasets",
        "Quiesce resolves a pod owned by a ReplicaSet to its Deployment; the story's pods belong to a StatefulSet",
    ),
    (
        "patch",
        "source.toolkit.fluxcd.io",
        "ocirepositories",
        "an OCIRepository named in spec.suspend is suspended and resumed",
    ),
    (
        "get",
        "source.toolkit.fluxcd.io",
        "helmrepositories",
        "a HelmRepository named in spec.suspend is read for its suspend state",
    ),
    (
        "patch",
        "source.toolkit.fluxcd.io",
        "helmrepositories",
        "a HelmRepository named in spec.suspend is suspended",
    ),
    (
        "patch",
        "source.toolkit.fluxcd.io",
        "gitrepositories",
        "a GitRepository named in spec.suspend is suspended and resumed",
    ),
    (
        "list",
        "",
        "secrets",
        "Helm release secrets (owner=helm) of a HelmRelease without status.inventory (older Flux)",
    ),
    (
        "get",
        "",
        "secrets",
        "Git credentials named by a ManagedApp or GitRepository (the story's repository is anonymous)",
    ),
    (
        "get",
        "storage.k8s.io",
        "storageclasses",
        "the CSI driver and binding mode of a volume's StorageClass",
    ),
];

fn log_access(record: &kubesim::RequestRecord) -> Option<Access> {
    if record.verb == "discovery" {
        return None; // /api, /apis, /version: every authenticated user may ask.
    }
    let resource = match &record.subresource {
        Some(sub) => format!("{}/{sub}", record.resource),
        None => record.resource.clone(),
    };
    Some(Access {
        verb: record.verb.clone(),
        group: record.group.clone(),
        resource,
        namespace: record.namespace.clone(),
        // A list or watch by `metadata.name=` field selector is authorized by that name.
        name: record.name.clone().or_else(|| record.selected_name.clone()),
    })
}

/// Where the story's Renovate output lives; the chart is rendered with the same values.
const RENOVATE_NAMESPACE: &str = RENOVATE_CONFIGMAP.0;
const RENOVATE_CONFIGMAP_NAME: &str = RENOVATE_CONFIGMAP.1;

/// Runs every story the operator has and returns what it asked the API server for: the
/// start-up API check, leader election, the ManagedApp controller reading Renovate's
/// ConfigMap, a dry run, an upgrade, an upgrade that rolls back on its own and an
/// automatic upgrade.
async fn operator_accesses() -> BTreeSet<Access> {
    let mut story = app().health_timeout("5s").running_at("v1.4.0").await;
    when::operator_reads_renovate(&mut story, when::renovate_configmap()).await;

    // What `fluxgate run` does before the controllers start.
    let operator = operator_client(story.kubesim()).unwrap();
    fluxgate::cluster::required_apis::check_required_apis(&operator, &story.kubesim().base_url())
        .await
        .unwrap();
    sim::seed::namespace(&story.client, chart::RELEASE_NAMESPACE)
        .await
        .unwrap();
    let mut leadership = Leadership::join(operator, chart::RELEASE_NAMESPACE, "fluxgate-0")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), leadership.acquired())
        .await
        .expect("the only candidate leads")
        .unwrap();
    leadership.release().await;

    upgrade("db-dry")
        .to_version("v1.5.0")
        .dry_run()
        .create(&story)
        .await
        .unwrap();
    let dry: UpgradeRequest = story
        .finished("db-dry", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(dry.status.unwrap().phase, Some(Phase::Succeeded));

    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let upgraded: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(upgraded.status.unwrap().phase, Some(Phase::Succeeded));

    story.world.failures.fail_chart_version("v2.0.0");
    story.upgrade("db-2-0-0", "v2.0.0").await.unwrap();
    let failed: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(120))
        .await
        .unwrap();
    let rollback: RollbackRequest = story
        .finished("db-2-0-0-rollback", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rollback.status.unwrap().phase, Some(Phase::Succeeded));
    assert_eq!(failed.status.unwrap().phase, Some(Phase::RolledBack));

    // Renovate offers a patch; the app takes patches automatically, any time.
    let report = renovate_report(
        &renovate_repository(&story),
        "v1.5.0",
        &[("v1.5.1", "patch")],
    );
    when::renovate_writes(&story, &report).await;
    when::update_policy_set(&story, &auto_update(AutoUpdate::Patch, "* * * * *", "1h")).await;
    let automatic = wait_until(
        "the automatic upgrade to finish",
        Duration::from_secs(120),
        async || {
            let upgrade = then::automatic_upgrades(&story).await.into_iter().next()?;
            let phase = upgrade.status.as_ref()?.phase?;
            phase.is_terminal().then_some(phase)
        },
    )
    .await
    .unwrap();
    assert_eq!(automatic, Phase::Succeeded);

    let accesses = story
        .kubesim()
        .requests(&kubesim::Match::any())
        .iter()
        .filter(|r| r.user_agent.starts_with("fluxgate/"))
        .filter_map(log_access)
        .collect();
    story.stop().await;
    accesses
}

fn grants(rules: &[Rule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    out.insert((verb.clone(), group.clone(), resource.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_allows_every_request_the_operator_sends_and_nothing_unused() {
    let Some(python) = chart::helm_python("the chart RBAC test") else {
        return;
    };
    // The default install plus the Renovate ConfigMap the story uses.
    let objects = chart::render(
        &python,
        None,
        &json!({"renovate": {"configMap": {"namespace": RENOVATE_NAMESPACE, "name": RENOVATE_CONFIGMAP_NAME}}}),
    )
    .unwrap();
    let service_account = chart::service_account(&objects).unwrap();
    let rules = chart::bound_rules(&objects, &service_account).unwrap();

    let accesses = operator_accesses().await;
    let seen: BTreeSet<String> = accesses
        .iter()
        .map(|a| format!("{} {}/{}", a.verb, a.group, a.resource))
        .collect();
    eprintln!(
        "the operator sent (verb group/resource):\n{}",
        seen.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(
        accesses.len() > 20,
        "the stories sent few requests: {accesses:#?}"
    );

    // Sufficient: every request the operator sent is allowed.
    let denied: Vec<&Access> = accesses
        .iter()
        .filter(|a| !rules.iter().any(|r| r.allows(a)))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC would refuse these requests of the operator: {denied:#?}"
    );

    // Minimal: every grant of the default install and of the all-on values was used or is
    // justified (the all-on values add the Renovate ConfigMap and the rbac.extraRules
    // example, which is the user's own).
    let used: BTreeSet<(String, String, String)> = accesses
        .iter()
        .map(|a| (a.verb.clone(), a.group.clone(), a.resource.clone()))
        .collect();
    let justified: BTreeSet<(String, String, String)> = JUSTIFIED
        .iter()
        .map(|(v, g, r, _)| ((*v).to_owned(), (*g).to_owned(), (*r).to_owned()))
        .collect();
    let all_on = chart::render(&python, Some(&chart::all_on_values()), &json!({})).unwrap();
    let all_on_rules = chart::bound_rules(&all_on, &chart::service_account(&all_on).unwrap())
        .unwrap()
        .into_iter()
        .filter(|r| !is_extra_rule(r));
    let mut granted = grants(&rules);
    granted.extend(grants(&all_on_rules.collect::<Vec<_>>()));
    let unexplained: Vec<&(String, String, String)> = granted
        .iter()
        .filter(|g| !used.contains(*g) && !justified.contains(*g))
        .collect();
    assert!(
        unexplained.is_empty(),
        "the chart grants (verb, group, resource) that the operator never used and nobody \
         justified — remove them from the chart or add a justification to JUSTIFIED: \
         {unexplained:#?}"
    );
    // A justification for something the chart does not grant is stale.
    let stale: Vec<&(String, String, String)> =
        justified.iter().filter(|j| !granted.contains(*j)).collect();
    assert!(
        stale.is_empty(),
        "JUSTIFIED lists grants the chart no longer has: {stale:#?}"
    );
}

/// The rule `ci/all-on-values.yaml` adds through `rbac.extraRules` (the user's own grant
/// for a health check on another kind).
fn is_extra_rule(rule: &Rule) -> bool {
    rule.api_groups == ["cert-manager.io"]
}

#[test]
fn the_lease_is_granted_only_in_the_release_namespace() {
    let Some(python) = chart::helm_python("the Lease RBAC test") else {
        return;
    };
    for values in [None, Some(chart::all_on_values())] {
        let objects = chart::render(&python, values.as_deref(), &json!({})).unwrap();
        let rules =
            chart::bound_rules(&objects, &chart::service_account(&objects).unwrap()).unwrap();
        let lease_rules: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.resources.iter().any(|res| res.starts_with("leases")))
            .collect();
        assert!(!lease_rules.is_empty(), "leader election is on by default");
        for rule in lease_rules {
            assert_eq!(
                rule.namespace.as_deref(),
                Some(chart::RELEASE_NAMESPACE),
                "{rule:?}"
            );
            // Everything but create is limited to the one Lease.
            if rule.verbs != ["create"] {
                assert_eq!(rule.resource_names, ["fluxgate-leader"], "{rule:?}");
            }
        }
        // Updating or renewing another Lease in the namespace is refused.
        let other = Access {
            verb: "update".into(),
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            namespace: Some(chart::RELEASE_NAMESPACE.into()),
            name: Some("someone-else".into()),
        };
        assert!(!rules.iter().any(|r| r.allows(&other)));
        let elsewhere = Access {
            namespace: Some("kube-system".into()),
            name: Some("fluxgate-leader".into()),
            ..other
        };
        assert!(!rules.iter().any(|r| r.allows(&elsewhere)));
    }
    // Without leader election there is no Lease grant at all.
    let objects = chart::render(
        &python,
        None,
        &json!({"leaderElection": {"enabled": false}}),
    )
    .unwrap();
    let rules = chart::bound_rules(&objects, &chart::service_account(&objects).unwrap()).unwrap();
    assert!(
        !rules
            .iter()
            .any(|r| r.resources.iter().any(|res| res == "leases")),
        "{rules:#?}"
    );
}
