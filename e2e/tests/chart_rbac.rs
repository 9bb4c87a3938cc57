//! The chart's RBAC is sufficient and minimal, judged by the real RBAC authorizer.
//!
//! - On the real control plane (test/realstack), `charts/fluxgate` is installed with real
//!   Helm and Fluxgate runs as the chart's ServiceAccount (a TokenRequest token, configured
//!   as the chart's Deployment configures `fluxgate run`): the apiserver's audit log must
//!   show it listing and watching every kind it watches, writing statuses — and no request
//!   refused.
//! - The same installed chart must allow, by the real authorizer's SubjectAccessReview,
//!   every request the operator sends across its stories on kubesim (the start-up API
//!   check, leader election, Renovate's ConfigMap, a dry run, an upgrade, an upgrade that
//!   rolls back on its own, an automatic upgrade) — the stories the real stack cannot run
//!   yet without Flux's controllers.
//! - Minimal: every (verb, group, resource) the chart grants was used in those kubesim
//!   stories or is justified below. This half stays on kubesim's request log: the real
//!   stack's one story reaches only part of the operator, and the audit log of a part
//!   cannot say what the whole never needs.
//! - The leader-election Lease is granted in the release namespace only, for one Lease.
//!
//! The real-stack halves print SKIPPED and pass without the real stack (test/realstack/bin)
//! or a Python with helm-python (HELM_PYTHON), unless FLUXGATE_REQUIRE_REAL_STACK=1.

use e2e::chart::{self, Access, Rule};
use e2e::given::{self, app, auto_update, renovate_report, upgrade};
use e2e::real_operator::{self, ChartInstall, RealOperator};
use e2e::then;
use e2e::when::{self, RENOVATE_CONFIGMAP};
use fluxgate::api::FluxObjectKind;
use fluxgate::api::{AutoUpdate, ManagedApp, Phase, RollbackRequest, UpgradeRequest};
use fluxgate::cluster::flux::ops::api_resource;
use fluxgate::controller::leader::{LEASE_NAME, Leadership};
use fluxgate::demo::world::{operator_client, wait_until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// Grants the stories do not exercise, each with why the operator needs it. (A grant listed
/// here may still show up in the log on some runs; that is fine.)
const JUSTIFIED: &[(&str, &str, &str, &str)] = &[
    // (verb, group, resource, why)
    (
        "delete",
        "snapshot.storage.k8s.io",
        "volumesnapshots",
        "retention prunes an app's snapshots beyond maxCount (these stories keep fewer than \
         that, and never the last upgrade's or a safety snapshot), and a request deletes its \
         snapshots that never became ready (e2e/tests/retention.rs, data_loss.rs)",
    ),
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
        "ocirepositories",
        "OCIRepositories are cached; a read before the watch's first list goes to the API server",
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

/// What the operator watches (src/cluster/cache.rs, `Caches::run`), as the audit log names
/// the resources (`resource[.group]`); each is listed, then watched, cluster-wide.
const WATCHED: &[&str] = &[
    "upgraderequests.fluxgate.dev",
    "rollbackrequests.fluxgate.dev",
    "managedapps.fluxgate.dev",
    "statefulsets.apps",
    "deployments.apps",
    "volumesnapshots.snapshot.storage.k8s.io",
    "pods",
    "persistentvolumeclaims",
    "kustomizations.kustomize.toolkit.fluxcd.io",
    "helmreleases.helm.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io",
    "ocirepositories.source.toolkit.fluxcd.io",
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

/// Where the story's Renovate output lives; the chart is rendered and installed with the
/// same values.
const RENOVATE_NAMESPACE: &str = RENOVATE_CONFIGMAP.0;
const RENOVATE_CONFIGMAP_NAME: &str = RENOVATE_CONFIGMAP.1;

/// Runs every story the operator has on kubesim and returns what it asked the API server
/// for: the start-up API check, leader election, the ManagedApp controller reading
/// Renovate's ConfigMap, a dry run, an upgrade, an upgrade that rolls back on its own and
/// an automatic upgrade.
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
    let report = renovate_report(&story, "v1.5.0", &[("v1.5.1", "patch")]);
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

/// On the real control plane, as the chart's ServiceAccount: the operator starts as the
/// chart's Deployment runs it (leader election on, Renovate's ConfigMap watched), takes up
/// a ManagedApp and a dry-run UpgradeRequest whose HelmRelease and OCIRepository exist
/// (no Flux controllers, no Git: the request fails early, after the calls that matter
/// here), and every request it sent is in the audit log, none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluxgate_runs_as_the_charts_service_account_and_is_refused_nothing() {
    let Some(install) =
        ChartInstall::shared_or_skip("the chart's ServiceAccount on the real stack")
    else {
        return;
    };
    let cluster = install.cluster();
    let admin = cluster.client().await.unwrap();
    let release = install.release();

    // The token kubeconfig is one kubectl (and `fluxgate run --kubeconfig`) takes.
    let whoami = std::process::Command::new(cluster.kubectl())
        .arg("--kubeconfig")
        .arg(install.kubeconfig())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("running kubectl auth whoami");
    assert!(
        whoami.status.success(),
        "kubectl auth whoami with {}: {}",
        install.kubeconfig().display(),
        String::from_utf8_lossy(&whoami.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), install.username());

    // The chart's Deployment is accepted as rendered and its pod is scheduled onto the KWOK
    // node, as the ServiceAccount; KWOK only marks it Running, so nothing of it acts.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &release.namespace);
    wait_until(
        "the chart's Deployment to be available on the KWOK node",
        Duration::from_secs(60),
        async || {
            let d = deployments.get(&release.name).await.ok()?;
            (d.status?.available_replicas? == 1).then_some(())
        },
    )
    .await
    .unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), &release.namespace)
        .list(&ListParams::default().labels("app.kubernetes.io/name=fluxgate"))
        .await
        .unwrap();
    let pod = pods.items.first().expect("the Deployment's pod");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(release.service_account.as_str())
    );
    assert_eq!(spec.node_name.as_deref(), Some(realstack::NODE_NAME));

    let log = install.audit_log();
    let mark = log.mark().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = install.operator_config(cache.path()).unwrap();
    assert!(config.leader_election, "the chart turns leader election on");
    assert_eq!(
        config.settings.renovate.configmap,
        Some((
            RENOVATE_NAMESPACE.to_owned(),
            RENOVATE_CONFIGMAP_NAME.to_owned()
        )),
        "the shared release names the stories' Renovate ConfigMap"
    );
    let operator = RealOperator::start_as_charted(install).await.unwrap();

    // Leases are not in the audit log (the cluster's policy drops them); the Lease itself
    // shows the election ran as the ServiceAccount.
    let lease = Api::<Lease>::namespaced(admin.clone(), &release.namespace)
        .get(LEASE_NAME)
        .await
        .unwrap_or_else(|e| panic!("Lease {}/{LEASE_NAME}: {e}", release.namespace));
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.starts_with("fluxgate-e2e-"),
        "the Lease is held by {holder}"
    );

    // A HelmRelease app as Flux would have it (no Flux controllers: no status), its
    // ManagedApp and a dry-run UpgradeRequest.
    let flux = |kind| {
        Api::<DynamicObject>::namespaced_with(admin.clone(), given::NAMESPACE, &api_resource(kind))
    };
    let repository: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": given::APP, "namespace": given::NAMESPACE},
        "spec": {"interval": "10m", "url": "oci://ghcr.io/example/charts/db", "ref": {"tag": "v1.4.0"}},
    }))
    .unwrap();
    flux(FluxObjectKind::OciRepository)
        .create(&PostParams::default(), &repository)
        .await
        .unwrap_or_else(|e| panic!("creating OCIRepository apps/db: {e}"));
    let helm_release = given::helm_release(given::APP)
        .chart_from_oci_repository(given::APP)
        .build();
    given::create(&admin, &helm_release).await.unwrap();
    given::create(
        &admin,
        &given::managed_app(given::APP, given::APP, fluxgate::demo::world::APP_FILE).build(),
    )
    .await
    .unwrap();
    upgrade("db-dry")
        .to_version("v1.5.0")
        .dry_run()
        .create_with(&admin)
        .await
        .unwrap();

    let upgrades: Api<UpgradeRequest> = Api::namespaced(admin.clone(), given::NAMESPACE);
    let apps: Api<ManagedApp> = Api::namespaced(admin.clone(), given::NAMESPACE);
    let progress = wait_until(
        "the operator to write the dry run's and the app's status",
        Duration::from_secs(60),
        async || {
            let status = upgrades.get("db-dry").await.ok()?.status?;
            apps.get(given::APP).await.ok()?.status?;
            Some((status.phase?, status.failure.map(|f| f.message)))
        },
    )
    .await;
    if progress.is_ok() {
        // Some seconds more: retries, events and the requests that follow.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    operator.stop().await;

    // Refused requests first: they are why a story got stuck.
    if let Err(e) = install.check_nothing_refused_since(&mark).await {
        panic!("{e:#}");
    }
    let (phase, message) = progress.unwrap();
    eprintln!("the dry run is {phase:?}: {}", message.unwrap_or_default());
    let requests = install.requests_since(&mark).await.unwrap();
    eprintln!(
        "Fluxgate as {} sent {} requests (verb resource: count):\n{}",
        install.username(),
        requests.len(),
        requests
            .counts()
            .iter()
            .map(|((verb, resource), n)| format!("  {verb} {resource}: {n}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let answered = |verb: &str, resource: &str, code: u16| {
        requests
            .iter()
            .any(|e| e.verb == verb && e.resource_key() == resource && e.code == Some(code))
    };
    for resource in WATCHED {
        assert!(
            answered("list", resource, 200),
            "no list of {resource} answered 200"
        );
        assert!(
            requests
                .iter()
                .any(|e| e.verb == "watch" && e.resource_key() == *resource),
            "no watch of {resource}"
        );
    }
    // Renovate's ConfigMap, watched by name (a field selector) in its namespace only.
    let renovate = requests
        .filter(|e| e.resource_key() == "configmaps")
        .into_iter()
        .map(|e| (e.verb.clone(), e.object.and_then(|o| o.namespace)))
        .collect::<BTreeSet<_>>();
    assert_eq!(
        renovate,
        BTreeSet::from([
            ("list".to_owned(), Some(RENOVATE_NAMESPACE.to_owned())),
            ("watch".to_owned(), Some(RENOVATE_NAMESPACE.to_owned())),
        ]),
        "Renovate's ConfigMap is listed and watched in its namespace"
    );
    for status in [
        "upgraderequests.fluxgate.dev/status",
        "managedapps.fluxgate.dev/status",
    ] {
        assert!(answered("update", status, 200), "no {status} written (200)");
    }
    let strangers: Vec<String> = requests
        .iter()
        .filter(|e| !e.user_agent.starts_with("fluxgate/"))
        .map(|e| format!("{e} ({})", e.user_agent))
        .collect();
    assert!(
        strangers.is_empty(),
        "requests as the ServiceAccount without Fluxgate's User-Agent:\n{}",
        strangers.join("\n")
    );
}

/// The real authorizer allows, to the installed chart's ServiceAccount, every request the
/// operator sends across its kubesim stories; and the chart grants nothing those stories
/// did not use, unless justified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_allows_every_request_the_operator_sends_and_nothing_unused() {
    let Some(python) = chart::helm_python("the chart RBAC test") else {
        return;
    };
    // The default install plus the Renovate ConfigMap the story uses: as installed on the
    // real stack.
    let objects = chart::render(&python, None, &real_operator::shared_values()).unwrap();
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
        "the stories sent few requests:\n{}",
        accesses
            .iter()
            .map(|a| format!("  {a}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Sufficient, by the real authorizer: the chart installed with the same values.
    if let Some(install) =
        ChartInstall::shared_or_skip("the chart RBAC test's real-authorizer half")
    {
        let admin = install.cluster().client().await.unwrap();
        let mut refused = Vec::new();
        for access in &accesses {
            let (allowed, reason) = install.allows(&admin, access).await.unwrap();
            if !allowed {
                refused.push(match reason.as_str() {
                    "" => format!("  {access}"),
                    reason => format!("  {access}: {reason}"),
                });
            }
        }
        assert!(
            refused.is_empty(),
            "with the chart installed, the real authorizer refuses {} these requests the \
             operator sent in its kubesim stories:\n{}",
            install.username(),
            refused.join("\n")
        );
        eprintln!(
            "the real authorizer allows all {} distinct requests to {}",
            accesses.len(),
            install.username()
        );
    }

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
                assert_eq!(rule.resource_names, [LEASE_NAME], "{rule:?}");
            }
        }
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

/// The real authorizer, with the chart installed, allows the ServiceAccount the Lease
/// `fluxgate-leader` in the release namespace and no other Lease anywhere.
#[tokio::test]
async fn the_real_authorizer_allows_only_the_leader_lease_in_the_release_namespace() {
    let Some(install) = ChartInstall::shared_or_skip("the Lease test on the real authorizer")
    else {
        return;
    };
    let admin = install.cluster().client().await.unwrap();
    let lease = |verb: &str, namespace: &str, name: Option<&str>| Access {
        verb: verb.into(),
        group: "coordination.k8s.io".into(),
        resource: "leases".into(),
        namespace: Some(namespace.into()),
        name: name.map(str::to_owned),
    };
    let home = chart::RELEASE_NAMESPACE;
    let allowed = [
        lease("create", home, None),
        lease("get", home, Some(LEASE_NAME)),
        lease("patch", home, Some(LEASE_NAME)),
    ];
    let refused = [
        lease("patch", home, Some("someone-else")),
        lease("get", home, Some("someone-else")),
        lease("delete", home, Some(LEASE_NAME)),
        lease("update", home, Some(LEASE_NAME)),
        lease("list", home, None),
        lease("create", "kube-system", None),
        lease("get", "kube-system", Some(LEASE_NAME)),
        lease("patch", "default", Some(LEASE_NAME)),
    ];
    for access in allowed {
        let (ok, reason) = install.allows(&admin, &access).await.unwrap();
        assert!(ok, "the real authorizer refuses {access}: {reason}");
    }
    for access in refused {
        let (ok, reason) = install.allows(&admin, &access).await.unwrap();
        assert!(!ok, "the real authorizer allows {access}: {reason}");
    }
}
