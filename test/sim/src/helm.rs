//! Flux helm-controller for HelmRelease v2 with simulated charts: installs/upgrades the
//! chart version it finds (`spec.chart.spec.version` or an OCIRepository `chartRef`),
//! stores releases as real Helm secrets, keeps history, and on a declared failing version
//! reports failure and remediates (rollback or uninstall) as `spec.*.remediation` says.

use crate::apply::{Applier, Entry};
use crate::chart::{Rendered, render};
use crate::conditions::{
    condition, conditions_of, now, remove_condition, requested_at, set_condition, suspended,
};
use crate::controller::{SimError, SimTask, run_controller};
use crate::faults::{FAIL_VERSIONS_ANNOTATION, Failures};
use crate::helm_secret::HelmReleaseSecret;
use crate::kinds::{dyn_api, helm_release, oci_repository, patch_status, to_value};
use anyhow::{Context, anyhow};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

/// Labels helm-controller puts on every object of a release.
pub const NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";
const MANAGER: &str = "helm-controller";
/// Releases larger than this after gunzip are refused (a corrupt or hostile secret).
const MAX_RELEASE_BYTES: u64 = 16 << 20;

/// Options for [`HelmController`].
#[derive(Clone, Debug, Default)]
pub struct HelmOptions {
    /// Remediation retries for releases whose spec sets none (Flux's default is 0).
    pub default_retries: Option<i64>,
}

/// The running helm-controller; stops when dropped.
#[derive(Debug)]
pub struct HelmController {
    _task: SimTask,
}

struct Ctx {
    client: Client,
    applier: Applier,
    failures: Failures,
    options: HelmOptions,
}

impl HelmController {
    /// Starts watching HelmReleases (and the OCIRepositories they use) in all namespaces.
    pub fn start(client: Client, failures: Failures, options: HelmOptions) -> HelmController {
        let hr = helm_release();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &hr),
            watcher::Config::default(),
            hr.clone(),
        );
        let store = controller.store();
        let oci = oci_repository();
        let controller = controller
            .watches_with(
                Api::<DynamicObject>::all_with(client.clone(), &oci),
                oci,
                watcher::Config::default(),
                move |repo: DynamicObject| {
                    let (rns, rname) = (repo.namespace().unwrap_or_default(), repo.name_any());
                    store
                        .state()
                        .into_iter()
                        .filter(|h| {
                            let v = to_value(&**h);
                            let r = &v["spec"]["chartRef"];
                            let ns = r["namespace"]
                                .as_str()
                                .or(v["metadata"]["namespace"].as_str());
                            r["kind"] == "OCIRepository"
                                && r["name"] == rname.as_str()
                                && ns == Some(rns.as_str())
                        })
                        .map(|h| ObjectRef::from_obj_with(&*h, hr.clone()))
                        .collect::<Vec<_>>()
                },
            )
            .reconcile_all_on(failures.changes());
        let ctx = Arc::new(Ctx {
            applier: Applier::new(client.clone(), MANAGER),
            client,
            failures,
            options,
        });
        HelmController {
            _task: run_controller("helm-controller", controller, reconcile, ctx),
        }
    }
}

/// Where a HelmRelease's release lives, as Flux derives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseTarget {
    /// `spec.releaseName`, else `[<targetNamespace>-]<name>`.
    pub name: String,
    /// `spec.targetNamespace`, else the HelmRelease's namespace.
    pub namespace: String,
    /// `spec.storageNamespace`, else the HelmRelease's namespace.
    pub storage_namespace: String,
}

/// The release name, namespace and storage namespace of a HelmRelease (JSON).
pub fn release_target(hr: &Value) -> ReleaseTarget {
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let target = hr["spec"]["targetNamespace"].as_str();
    let release = match (hr["spec"]["releaseName"].as_str(), target) {
        (Some(r), _) => r.to_owned(),
        (None, Some(t)) => format!("{t}-{name}"),
        (None, None) => name.to_owned(),
    };
    ReleaseTarget {
        name: release,
        namespace: target.unwrap_or(ns).to_owned(),
        storage_namespace: hr["spec"]["storageNamespace"]
            .as_str()
            .unwrap_or(ns)
            .to_owned(),
    }
}

/// One stored release, as read back from its secret.
#[derive(Clone, Debug)]
struct Release {
    revision: i64,
    status: String,
    chart: String,
    chart_version: String,
    values: Value,
    manifest: String,
}

impl Release {
    fn secret(&self, target: &ReleaseTarget) -> HelmReleaseSecret {
        HelmReleaseSecret {
            name: target.name.clone(),
            namespace: target.storage_namespace.clone(),
            revision: self.revision,
            status: self.status.clone(),
            chart: self.chart.clone(),
            chart_version: self.chart_version.clone(),
            app_version: self.chart_version.clone(),
            values: self.values.clone(),
            manifest: self.manifest.clone(),
        }
    }
}

/// Decodes Helm's `release` payload: base64, gzip when the magic is there, JSON.
fn decode_release(payload: &[u8]) -> anyhow::Result<Value> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .context("release is not base64")?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_RELEASE_BYTES + 1)
            .read_to_end(&mut out)
            .context("release is not valid gzip")?;
        if out.len() as u64 > MAX_RELEASE_BYTES {
            return Err(anyhow!("release is larger than {MAX_RELEASE_BYTES} bytes"));
        }
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).context("release is not JSON")
}

/// Every stored release of `target`, newest first; undecodable secrets are logged and skipped.
async fn history(client: &Client, target: &ReleaseTarget) -> Result<Vec<Release>, SimError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &target.storage_namespace)
        .list(&ListParams::default().labels(&format!("owner=helm,name={}", target.name)))
        .await?;
    let mut releases = Vec::new();
    for s in secrets.items {
        let Some(payload) = s.data.as_ref().and_then(|d| d.get("release")) else {
            continue;
        };
        match decode_release(&payload.0) {
            Ok(r) => releases.push(Release {
                revision: r["version"].as_i64().unwrap_or(0),
                status: r["info"]["status"].as_str().unwrap_or_default().to_owned(),
                chart: r["chart"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                chart_version: r["chart"]["metadata"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                values: r["config"].clone(),
                manifest: r["manifest"].as_str().unwrap_or_default().to_owned(),
            }),
            Err(e) => {
                tracing::warn!(secret = %s.name_any(), error = %format!("{e:#}"), "skipping undecodable Helm release")
            }
        }
    }
    releases.sort_by_key(|r| -r.revision);
    Ok(releases)
}

/// Creates or overwrites a release secret.
async fn store(client: &Client, target: &ReleaseTarget, release: &Release) -> Result<(), SimError> {
    let secret = release.secret(target).to_secret();
    let api = Api::<Secret>::namespaced(client.clone(), &target.storage_namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.patch(
                &secret.name_any(),
                &crate::kinds::manager(MANAGER),
                &Patch::Merge(&secret),
            )
            .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn digest_of(value: &impl Hash) -> String {
    let mut out = String::from("sha256:");
    for round in 0u8..4 {
        let mut h = DefaultHasher::new();
        (round, value).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn manifest_entries(manifest: &str) -> Vec<Entry> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(manifest).unwrap_or_default();
    docs.iter()
        .filter(|d| d.is_object())
        .map(|d| {
            Entry::of(
                d["metadata"]["namespace"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default(),
                d["apiVersion"].as_str().unwrap_or_default(),
                d["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// The chart (name, version) the HelmRelease asks for, or why it cannot be had.
async fn wanted_chart(
    client: &Client,
    hr: &Value,
) -> Result<Result<(String, String), String>, SimError> {
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or_default();
    let r = &hr["spec"]["chartRef"];
    if r.is_object() {
        if r["kind"] != "OCIRepository" {
            return Ok(Err(format!("chartRef kind {} is not simulated", r["kind"])));
        }
        let rns = r["namespace"].as_str().unwrap_or(ns);
        let rname = r["name"].as_str().unwrap_or_default();
        let Some(repo) = dyn_api(client, &oci_repository(), rns)
            .get_opt(rname)
            .await?
        else {
            return Ok(Err(format!("could not get OCIRepository '{rns}/{rname}'")));
        };
        let repo = to_value(&repo);
        let Some(revision) = repo["status"]["artifact"]["revision"].as_str() else {
            return Ok(Err(format!(
                "HelmChart source OCIRepository '{rns}/{rname}' is not ready"
            )));
        };
        // helm-controller reads the version from the chart's Chart.yaml in the artifact;
        // the simulated artifact carries it in the manifest annotation `helm push` writes
        // (a digest ref's revision is only `sha256:…`, without a tag).
        let version = repo["status"]["artifact"]["metadata"][crate::oci_source::VERSION_ANNOTATION]
            .as_str()
            .unwrap_or_else(|| revision.split_once('@').map_or(revision, |(t, _)| t));
        let chart = repo["spec"]["url"]
            .as_str()
            .unwrap_or(rname)
            .rsplit('/')
            .next()
            .unwrap_or(rname);
        return Ok(Ok((
            chart.to_owned(),
            version.trim_start_matches('v').to_owned(),
        )));
    }
    let spec = &hr["spec"]["chart"]["spec"];
    let chart = spec["chart"].as_str().unwrap_or_default().to_owned();
    let version = spec["version"].as_str().unwrap_or("*");
    if version.contains(['*', 'x', '^', '~', '>', '<', ' ', '|']) {
        return Ok(Err(format!(
            "chart version {version:?}: the simulated charts need an exact version"
        )));
    }
    Ok(Ok((chart, version.to_owned())))
}

/// What the HelmRelease asks to have released.
struct Wanted {
    chart: String,
    version: String,
    values: Value,
    /// Declared failing: its pods never become ready.
    failing: bool,
}

struct Attempt {
    action: &'static str,
    ok: bool,
    revision: i64,
    message: String,
}

/// Installs or upgrades one revision and stores it (deployed or failed).
async fn release(
    ctx: &Ctx,
    hr: &Value,
    target: &ReleaseTarget,
    wanted: &Wanted,
    prior: &[Release],
) -> Result<Attempt, SimError> {
    let deployed = prior.iter().find(|r| r.status == "deployed");
    let action = if deployed.is_some() {
        "upgrade"
    } else {
        "install"
    };
    let revision = prior.first().map_or(1, |r| r.revision + 1);
    let Wanted {
        chart,
        version,
        values,
        failing,
    } = wanted;
    let chart = chart.as_str();
    let version = version.as_str();
    let rendered = render(
        chart,
        version,
        &target.name,
        &target.namespace,
        values,
        *failing,
    );
    let applied = apply_release(ctx, hr, target, &rendered, deployed).await;
    let ok = !failing && applied.is_ok();
    let message = match (&applied, ok) {
        (Err(e), _) => format!(
            "Helm {action} failed for release {}/{} with chart {chart}@{version}: {e:#}",
            target.namespace, target.name
        ),
        (Ok(()), false) => format!(
            "Helm {action} failed for release {}/{} with chart {chart}@{version}: context deadline exceeded",
            target.namespace, target.name
        ),
        (Ok(()), true) => format!(
            "Helm {action} succeeded for release {}/{}.v{revision} with chart {chart}@{version}",
            target.namespace, target.name
        ),
    };
    let new = Release {
        revision,
        status: if ok { "deployed" } else { "failed" }.into(),
        chart: chart.to_owned(),
        chart_version: version.to_owned(),
        values: values.clone(),
        manifest: rendered.manifest,
    };
    store(&ctx.client, target, &new).await?;
    if ok && let Some(old) = deployed {
        store(
            &ctx.client,
            target,
            &Release {
                status: "superseded".into(),
                ..old.clone()
            },
        )
        .await?;
    }
    Ok(Attempt {
        action,
        ok,
        revision,
        message,
    })
}

/// Applies a rendering and deletes what the previous release had and this one lacks.
async fn apply_release(
    ctx: &Ctx,
    hr: &Value,
    target: &ReleaseTarget,
    rendered: &Rendered,
    previous: Option<&Release>,
) -> anyhow::Result<()> {
    let hr_ns = hr["metadata"]["namespace"].as_str().unwrap_or_default();
    let hr_name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let mut kept = BTreeSet::new();
    for o in &rendered.objects {
        let mut o = o.clone();
        o["metadata"]["labels"][NAME_LABEL] = json!(hr_name);
        o["metadata"]["labels"][NAMESPACE_LABEL] = json!(hr_ns);
        o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(target.name);
        o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(target.namespace);
        kept.insert(ctx.applier.apply(&o).await?.id);
    }
    for old in previous
        .map(|p| manifest_entries(&p.manifest))
        .unwrap_or_default()
    {
        if !kept.contains(&old.id) {
            ctx.applier.delete(&old).await?;
        }
    }
    Ok(())
}

/// Rolls back to the newest release before the failed one that was deployed or superseded.
async fn rollback(
    ctx: &Ctx,
    hr: &Value,
    target: &ReleaseTarget,
) -> Result<Option<String>, SimError> {
    let releases = history(&ctx.client, target).await?;
    let Some(failed) = releases.first() else {
        return Ok(None);
    };
    let Some(to) = releases
        .iter()
        .skip(1)
        .find(|r| r.status == "deployed" || r.status == "superseded")
    else {
        return Ok(None);
    };
    let rendered = render(
        &to.chart,
        &to.chart_version,
        &target.name,
        &target.namespace,
        &to.values,
        false,
    );
    apply_release(ctx, hr, target, &rendered, Some(failed)).await?;
    let revision = failed.revision + 1;
    for r in releases.iter().filter(|r| r.status == "deployed") {
        store(
            &ctx.client,
            target,
            &Release {
                status: "superseded".into(),
                ..r.clone()
            },
        )
        .await?;
    }
    store(
        &ctx.client,
        target,
        &Release {
            revision,
            status: "deployed".into(),
            manifest: rendered.manifest,
            ..to.clone()
        },
    )
    .await?;
    Ok(Some(format!(
        "Helm rollback to previous release {}/{}.v{} with chart {}@{} succeeded",
        target.namespace, target.name, to.revision, to.chart, to.chart_version
    )))
}

/// Uninstalls the release (objects and, as without `keepHistory`, its secrets).
async fn uninstall(ctx: &Ctx, target: &ReleaseTarget) -> Result<String, SimError> {
    let releases = history(&ctx.client, target).await?;
    if let Some(latest) = releases.first() {
        for e in manifest_entries(&latest.manifest) {
            ctx.applier.delete(&e).await?;
        }
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &target.storage_namespace);
    for r in &releases {
        let name = format!("sh.helm.release.v1.{}.v{}", target.name, r.revision);
        match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!(
        "Helm uninstall succeeded for release {}/{}",
        target.namespace, target.name
    ))
}

async fn reconcile(cached: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    // Read the object fresh: the cache may not yet hold our own last status write, and
    // deciding on a stale status would redo (or re-fail) a release or apply.
    let api = dyn_api(
        &ctx.client,
        &helm_release(),
        &cached.namespace().unwrap_or_default(),
    );
    let Some(obj) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let hr = to_value(&obj);
    if suspended(&hr) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    let old_status = &hr["status"];
    let target = release_target(&hr);
    let mut conditions = conditions_of(&hr);
    let mut status = json!({
        "observedGeneration": generation,
        "storageNamespace": target.storage_namespace,
    });
    if let Some(at) = requested_at(&hr) {
        status["lastHandledReconcileAt"] = json!(at);
    }
    if hr["spec"]["chart"].is_object() {
        let src = &hr["spec"]["chart"]["spec"]["sourceRef"];
        status["helmChart"] = json!(format!(
            "{}/{ns}-{name}",
            src["namespace"].as_str().unwrap_or(&ns)
        ));
    }

    let (chart, version) = match wanted_chart(&ctx.client, &hr).await? {
        Ok(c) => c,
        Err(message) => {
            set_condition(
                &mut conditions,
                condition("Ready", "False", "ArtifactFailed", &message, generation),
            );
            status["conditions"] = json!(conditions);
            patch_status(&api, &name, status, MANAGER).await?;
            return Ok(Action::await_change());
        }
    };
    let values = if hr["spec"]["values"].is_object() {
        hr["spec"]["values"].clone()
    } else {
        json!({})
    };
    let config_digest = digest_of(&values.to_string());
    let failing = ctx.failures.chart_fails(&version)
        || hr["metadata"]["annotations"][FAIL_VERSIONS_ANNOTATION]
            .as_str()
            .is_some_and(|l| {
                l.split(',')
                    .any(|v| v.trim().trim_start_matches('v') == version.trim_start_matches('v'))
            });

    let releases = history(&ctx.client, &target).await?;
    let latest = releases.first();
    let up_to_date = latest.is_some_and(|r| {
        r.status == "deployed" && r.chart_version == version && r.values == values
    });
    let same_attempt = old_status["lastAttemptedGeneration"].as_i64() == generation
        && old_status["lastAttemptedRevision"] == version.as_str()
        && old_status["lastAttemptedConfigDigest"] == config_digest.as_str();
    let stalled = conditions
        .iter()
        .any(|c| c["type"] == "Stalled" && c["status"] == "True");
    if up_to_date || (same_attempt && stalled) {
        // Nothing to release: record that we looked, at this generation.
        if up_to_date {
            let release = latest.map_or(0, |r| r.revision);
            let message = format!(
                "Helm release {}/{}.v{release} with chart {chart}@{version} is in sync",
                target.namespace, target.name
            );
            for t in ["Ready", "Released"] {
                let keep = conditions
                    .iter()
                    .find(|c| c["type"] == t && c["status"] == "True")
                    .cloned();
                let c = match keep {
                    Some(mut c) => {
                        c["observedGeneration"] = json!(generation);
                        c
                    }
                    None => condition(t, "True", "UpgradeSucceeded", &message, generation),
                };
                set_condition(&mut conditions, c);
            }
            remove_condition(&mut conditions, "Stalled");
            remove_condition(&mut conditions, "Remediated");
            status["conditions"] = json!(conditions);
            status["lastAttemptedRevision"] = json!(version);
            status["lastAttemptedGeneration"] = json!(generation);
            status["lastAttemptedConfigDigest"] = json!(config_digest);
        }
        let mut refreshed = old_status.clone();
        for (k, v) in status.as_object().into_iter().flatten() {
            refreshed[k] = v.clone();
        }
        if refreshed != *old_status {
            patch_status(&api, &name, status, MANAGER).await?;
        }
        return Ok(Action::await_change());
    }

    let progress = format!(
        "Running '{}' action with timeout of 5m0s",
        if releases.iter().any(|r| r.status == "deployed") {
            "upgrade"
        } else {
            "install"
        }
    );
    set_condition(
        &mut conditions,
        condition("Reconciling", "True", "Progressing", &progress, generation),
    );
    set_condition(
        &mut conditions,
        condition("Ready", "Unknown", "Progressing", &progress, generation),
    );
    patch_status(&api, &name, json!({"conditions": conditions}), MANAGER).await?;

    // A new spec, chart version or values resets the failure counters, as in Flux.
    let reset = !same_attempt;
    let counter = |k: &str| {
        if reset {
            0
        } else {
            old_status[k].as_i64().unwrap_or(0)
        }
    };
    let (mut failures, mut install_failures, mut upgrade_failures) = (
        counter("failures"),
        counter("installFailures"),
        counter("upgradeFailures"),
    );
    let wanted = Wanted {
        chart: chart.clone(),
        version: version.clone(),
        values: values.clone(),
        failing,
    };
    let mut attempt;
    let mut remediation: Option<(&str, String)> = None;
    loop {
        let prior = history(&ctx.client, &target).await?;
        attempt = release(&ctx, &hr, &target, &wanted, &prior).await?;
        if attempt.ok {
            remediation = None;
            break;
        }
        failures += 1;
        let section = if attempt.action == "install" {
            &hr["spec"]["install"]
        } else {
            &hr["spec"]["upgrade"]
        };
        let count = if attempt.action == "install" {
            &mut install_failures
        } else {
            &mut upgrade_failures
        };
        *count += 1;
        let retries = section["remediation"]["retries"]
            .as_i64()
            .or(ctx.options.default_retries)
            .unwrap_or(0)
            .clamp(-1, 3);
        // Negative retries mean "forever" in Flux; the sim stops after a few.
        let retries = if retries < 0 { 3 } else { retries };
        let exhausted = *count > retries;
        let remediate_last = section["remediation"]["remediateLastFailure"]
            .as_bool()
            .unwrap_or(retries > 0);
        if !exhausted || remediate_last {
            remediation = if attempt.action == "install" {
                Some(("UninstallSucceeded", uninstall(&ctx, &target).await?))
            } else {
                rollback(&ctx, &hr, &target)
                    .await?
                    .map(|m| ("RollbackSucceeded", m))
            };
        }
        if exhausted {
            let verb = attempt.action;
            set_condition(
                &mut conditions,
                condition(
                    "Stalled",
                    "True",
                    "RetriesExceeded",
                    &format!("Failed to {verb} after {count} attempt(s)"),
                    generation,
                ),
            );
            break;
        }
    }

    let reason = match (attempt.action, attempt.ok) {
        ("install", true) => "InstallSucceeded",
        ("install", false) => "InstallFailed",
        (_, true) => "UpgradeSucceeded",
        (_, false) => "UpgradeFailed",
    };
    set_condition(
        &mut conditions,
        condition(
            "Released",
            if attempt.ok { "True" } else { "False" },
            reason,
            &attempt.message,
            generation,
        ),
    );
    remove_condition(&mut conditions, "Reconciling");
    if attempt.ok {
        remove_condition(&mut conditions, "Stalled");
        remove_condition(&mut conditions, "Remediated");
        set_condition(
            &mut conditions,
            condition("Ready", "True", reason, &attempt.message, generation),
        );
    } else if let Some((r, message)) = &remediation {
        set_condition(
            &mut conditions,
            condition("Remediated", "True", r, message, generation),
        );
        set_condition(
            &mut conditions,
            condition("Ready", "False", r, message, generation),
        );
    } else {
        set_condition(
            &mut conditions,
            condition("Ready", "False", reason, &attempt.message, generation),
        );
    }

    let releases = history(&ctx.client, &target).await?;
    let current = releases.iter().find(|r| r.status == "deployed");
    status["history"] = json!(releases
        .iter()
        .take(5)
        .map(|r| json!({
            "name": target.name, "namespace": target.namespace, "version": r.revision,
            "chartName": r.chart, "chartVersion": r.chart_version, "appVersion": r.chart_version,
            "configDigest": digest_of(&r.values.to_string()),
            "digest": digest_of(&(r.revision, &r.manifest)),
            "firstDeployed": now(), "lastDeployed": now(), "status": r.status,
        }))
        .collect::<Vec<_>>());
    status["inventory"] = json!({"entries": current
        .map(|r| { let mut e = manifest_entries(&r.manifest); e.sort(); e.iter().map(Entry::to_json).collect::<Vec<_>>() })
        .unwrap_or_default()});
    status["lastAttemptedRevision"] = json!(version);
    status["lastAttemptedGeneration"] = json!(generation);
    status["lastAttemptedConfigDigest"] = json!(config_digest);
    status["lastAttemptedReleaseAction"] = json!(attempt.action);
    status["lastReleaseRevision"] = json!(current.map_or(attempt.revision, |r| r.revision));
    status["failures"] = json!(failures);
    status["installFailures"] = json!(install_failures);
    status["upgradeFailures"] = json!(upgrade_failures);
    status["conditions"] = json!(conditions);
    patch_status(&api, &name, status, MANAGER).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_as_flux_derives_them() {
        let hr =
            |spec: Value| json!({"metadata": {"name": "app", "namespace": "flux"}, "spec": spec});
        assert_eq!(
            release_target(&hr(json!({}))),
            ReleaseTarget {
                name: "app".into(),
                namespace: "flux".into(),
                storage_namespace: "flux".into()
            }
        );
        assert_eq!(
            release_target(&hr(json!({"targetNamespace": "prod"}))),
            ReleaseTarget {
                name: "prod-app".into(),
                namespace: "prod".into(),
                storage_namespace: "flux".into()
            }
        );
        assert_eq!(
            release_target(&hr(
                json!({"targetNamespace": "prod", "releaseName": "x", "storageNamespace": "s"})
            )),
            ReleaseTarget {
                name: "x".into(),
                namespace: "prod".into(),
                storage_namespace: "s".into()
            }
        );
    }

    #[test]
    fn decodes_what_helm_secret_writes_and_its_legacy_form() {
        let rel = HelmReleaseSecret {
            name: "a".into(),
            namespace: "n".into(),
            revision: 3,
            status: "deployed".into(),
            chart: "c".into(),
            chart_version: "1.0.0".into(),
            app_version: "1.0.0".into(),
            values: json!({"k": 1}),
            manifest: "m".into(),
        };
        for s in [rel.to_secret(), rel.to_legacy_secret()] {
            let payload = &s.data.unwrap()["release"].0;
            let r = decode_release(payload).unwrap();
            assert_eq!(r["version"], 3);
            assert_eq!(r["config"]["k"], 1);
        }
        assert!(decode_release(b"!!").is_err());
    }
}
