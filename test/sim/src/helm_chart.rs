//! Flux source-controller for HelmChart v1 from a HelmRepository: resolves `spec.chart` at
//! `spec.version` against the repository's *stored* index (not what is published now) and
//! records the chart artifact, or fails as the real controller does when the version is not
//! in that index. Rebuilt when the chart changes or its repository stores a new index.

use crate::conditions::{
    condition, conditions_of, now, parse_go_duration, remove_condition, requested_at,
    set_condition, suspended,
};
use crate::controller::{SimError, SimTask, run_controller};
use crate::helm_repository::{ChartRepositories, Index};
use crate::kinds::{dyn_api, helm_chart, helm_repository, patch_status, to_value};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The running HelmChart controller; stops when dropped.
#[derive(Debug)]
pub struct HelmChartController {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    repositories: ChartRepositories,
}

impl HelmChartController {
    /// Starts watching HelmCharts (and the HelmRepositories they are built from).
    pub fn start(client: Client, repositories: ChartRepositories) -> HelmChartController {
        let ar = helm_chart();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
            ar.clone(),
        );
        let store = controller.store();
        let repo = helm_repository();
        // As `requestsForHelmRepositoryChange` in source-controller v1.9.6
        // internal/controller/helmchart_controller.go: a new index rebuilds the charts of
        // the repository (the reconcile is idempotent, so any change of it may).
        let controller = controller.watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &repo),
            repo,
            watcher::Config::default(),
            move |repo: DynamicObject| {
                let (rns, rname) = (repo.namespace().unwrap_or_default(), repo.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|c| {
                        let v = to_value(&**c);
                        let src = &v["spec"]["sourceRef"];
                        src["kind"] == "HelmRepository"
                            && src["name"] == rname.as_str()
                            && v["metadata"]["namespace"] == rns.as_str()
                    })
                    .map(|c| ObjectRef::from_obj_with(&*c, ar.clone()))
                    .collect::<Vec<_>>()
            },
        );
        let ctx = Arc::new(Ctx {
            client,
            repositories,
        });
        HelmChartController {
            _task: run_controller("helm-chart-controller", controller, reconcile, ctx),
        }
    }
}

/// The version of `chart` that `wanted` (exact, or empty/`*` for the latest) picks from
/// `index`, or the error Helm's repository lookup gives (`getChartVersion` in
/// source-controller v1.9.6 internal/helm/repository/chart_repository.go).
pub fn resolve(index: &Index, chart: &str, wanted: &str) -> Result<String, String> {
    let Some(versions) = index.get(chart).filter(|v| !v.is_empty()) else {
        // helm's repo.ErrNoChartName
        return Err("no chart name found".into());
    };
    if let Some(v) = versions.iter().find(|v| *v == wanted) {
        return Ok(v.clone());
    }
    if wanted.is_empty() || wanted == "*" {
        let numeric = |v: &str| -> Option<Vec<u64>> {
            v.trim_start_matches('v')
                .split('.')
                .map(|p| p.parse().ok())
                .collect()
        };
        if let Some(latest) = versions.iter().filter_map(|v| Some((numeric(v)?, v))).max() {
            return Ok(latest.1.clone());
        }
    } else if wanted.contains(['*', 'x', '^', '~', '>', '<', ' ', '|', ',']) {
        return Err(format!(
            "version constraint '{wanted}': the simulated repositories resolve exact versions only"
        ));
    }
    Err(format!(
        "no '{chart}' chart with version matching '{wanted}' found"
    ))
}

/// Why a chart cannot be built: the FetchFailed reason and message.
type Failure = (&'static str, String);

async fn build(
    ctx: &Ctx,
    v: &Value,
    ns: &str,
) -> Result<Result<(String, String), Failure>, SimError> {
    let spec = &v["spec"];
    let source = &spec["sourceRef"];
    let source_name = source["name"].as_str().unwrap_or_default();
    if source["kind"] != "HelmRepository" {
        return Ok(Err((
            "NotSimulated",
            format!(
                "HelmChart sources of kind {} are not simulated",
                source["kind"]
            ),
        )));
    }
    let Some(repo) = dyn_api(&ctx.client, &helm_repository(), ns)
        .get_opt(source_name)
        .await?
    else {
        // `reconcileSource`: the client's NotFound error, wrapped.
        return Ok(Err((
            "SourceUnavailable",
            format!(
                "failed to get source: HelmRepository.source.toolkit.fluxcd.io \"{source_name}\" not found"
            ),
        )));
    };
    let repo = to_value(&repo);
    let index = repo["status"]["artifact"]["revision"]
        .as_str()
        .and_then(|d| ctx.repositories.stored(d));
    let Some(index) = index else {
        return Ok(Err((
            "NoSourceArtifact",
            format!("no artifact available for HelmRepository source '{source_name}'"),
        )));
    };
    let chart = spec["chart"].as_str().unwrap_or_default();
    match resolve(&index, chart, spec["version"].as_str().unwrap_or("*")) {
        Ok(version) => Ok(Ok((
            version,
            repo["status"]["artifact"]["revision"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))),
        // `downloadFromRepository` (internal/helm/chart/builder_remote.go) wraps the lookup
        // error, and the BuildError prefixes its reason's summary.
        Err(e) => Ok(Err((
            "InvalidChartReference",
            format!(
                "invalid chart reference: failed to get chart version for remote reference: {e}"
            ),
        ))),
    }
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let v = to_value(&*obj);
    if suspended(&v) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    let interval = v["spec"]["interval"]
        .as_str()
        .and_then(parse_go_duration)
        .unwrap_or(Duration::from_secs(600));
    let old = v["status"].clone();
    let mut status = if old.is_object() {
        old.clone()
    } else {
        json!({})
    };
    let mut conditions = conditions_of(&v);
    let chart = v["spec"]["chart"].as_str().unwrap_or_default();
    match build(&ctx, &v, &ns).await? {
        Ok((mut version, source_revision)) => {
            // `buildFromHelmRepository`: values files make the version `<version>+<generation>`
            // so consumers notice a change of them.
            let values_files = v["spec"]["valuesFiles"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if values_files && let Some(g) = generation {
                version = format!("{}+{g}", crate::helm::chart_version_without_build(&version));
            }
            if status["artifact"]["revision"] != version.as_str() {
                let path = format!("helmchart/{ns}/{name}/{chart}-{version}.tgz");
                status["artifact"] = json!({
                    "revision": version, "lastUpdateTime": now(), "path": path,
                    "digest": format!("sha256:{:0>64}", hex_of(&path)),
                    "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
                });
            }
            status["observedChartName"] = json!(chart);
            status["observedSourceArtifactRevision"] = json!(source_revision);
            status["observedGeneration"] = json!(generation);
            // `Build.Summary` in internal/helm/chart/builder.go.
            let message = format!("pulled '{chart}' chart with version '{version}'");
            for t in ["Ready", "ArtifactInStorage"] {
                set_condition(
                    &mut conditions,
                    condition(t, "True", "ChartPullSucceeded", &message, generation),
                );
            }
            remove_condition(&mut conditions, "FetchFailed");
        }
        Err((reason, message)) => {
            // `observeChartBuild` marks FetchFailed; the summary makes Ready=False from it
            // and, the reconcile having failed, leaves observedGeneration where it was (and
            // any earlier artifact in place).
            for (t, s) in [("FetchFailed", "True"), ("Ready", "False")] {
                set_condition(
                    &mut conditions,
                    condition(t, s, reason, &message, generation),
                );
            }
        }
    }
    status["conditions"] = json!(conditions);
    if let Some(at) = requested_at(&v) {
        status["lastHandledReconcileAt"] = json!(at);
    }
    if status != old {
        patch_status(
            &dyn_api(&ctx.client, &helm_chart(), &ns),
            &name,
            status,
            "source-controller",
        )
        .await?;
    }
    // A failed build can only succeed once the spec or the repository's index changes,
    // and both wake this controller; otherwise the chart is checked at its interval.
    Ok(Action::requeue(interval))
}

/// A stable hex string for a fake artifact digest.
fn hex_of(text: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        Index::from([(
            "db".to_owned(),
            vec!["1.0.0".to_owned(), "1.10.0".to_owned(), "1.9.0".to_owned()],
        )])
    }

    #[test]
    fn resolves_exact_and_latest_versions_and_says_what_is_missing() {
        assert_eq!(resolve(&index(), "db", "1.9.0").unwrap(), "1.9.0");
        assert_eq!(resolve(&index(), "db", "*").unwrap(), "1.10.0");
        assert_eq!(resolve(&index(), "db", "").unwrap(), "1.10.0");
        assert_eq!(
            resolve(&index(), "db", "2.0.0").unwrap_err(),
            "no 'db' chart with version matching '2.0.0' found"
        );
        assert_eq!(
            resolve(&index(), "web", "1.0.0").unwrap_err(),
            "no chart name found"
        );
        assert!(
            resolve(&index(), "db", ">=1.0.0")
                .unwrap_err()
                .contains("exact versions only")
        );
    }
}
