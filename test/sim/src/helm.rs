//! Flux helm-controller for HelmRelease v2 with simulated charts: installs/upgrades the
//! chart version it finds (`spec.chart.spec.version` or an OCIRepository `chartRef`),
//! stores releases as real Helm secrets, keeps history, and on a declared failing version
//! reports failure and remediates (rollback or uninstall) as `spec.*.remediation` says.

use crate::apply::{Applier, Entry};
use crate::chart::{Rendered, render};
use crate::conditions::{
    condition, conditions_of, now, parse_go_duration, remove_condition, requested_at,
    set_condition, suspended,
};
use crate::controller::{SimError, SimTask, run_controller};
use crate::faults::{FAIL_VERSIONS_ANNOTATION, Failures};
use crate::helm_secret::HelmReleaseSecret;
use crate::kinds::{dyn_api, helm_chart, helm_release, oci_repository, patch_status, to_value};
use anyhow::{Context, anyhow};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// RetryOnFailure: when each HelmRelease (`namespace/name`) may retry its failed action.
    retry_not_before: Mutex<HashMap<String, Instant>>,
}

/// How soon a release with remediation retries left is reconciled again (helm-controller
/// requeues at once, through the rate limiter).
const RETRY_REQUEUE: Duration = Duration::from_millis(100);

impl HelmController {
    /// Starts watching HelmReleases (and the OCIRepositories and HelmCharts they use) in all
    /// namespaces.
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
            // The HelmCharts it created, by the owner labels it put on them.
            .watches_with(
                Api::<DynamicObject>::all_with(client.clone(), &helm_chart()),
                helm_chart(),
                watcher::Config::default(),
                |chart: DynamicObject| {
                    let labels = chart.labels();
                    let owner = labels.get(NAME_LABEL).zip(labels.get(NAMESPACE_LABEL));
                    owner.map(|(name, ns)| ObjectRef::new_with(name, helm_release()).within(ns))
                },
            )
            .reconcile_all_on(failures.changes());
        let ctx = Arc::new(Ctx {
            applier: Applier::new(client.clone(), MANAGER),
            client,
            failures,
            options,
            retry_not_before: Mutex::default(),
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
        name: shorten_release_name(&release),
        namespace: target.unwrap_or(ns).to_owned(),
        storage_namespace: hr["spec"]["storageNamespace"]
            .as_str()
            .unwrap_or(ns)
            .to_owned(),
    }
}

/// A Helm release name of at most 53 characters, as helm-controller makes it
/// (`ShortenName` in helm-controller's internal/release/name.go, applied to every install,
/// upgrade and test): a longer name becomes its first 40 characters, `-`, and the first 12
/// hex digits of the SHA-256 of the whole name.
pub fn shorten_release_name(name: &str) -> String {
    const MAX: usize = 53;
    const HASH: usize = 12;
    if name.len() <= MAX {
        return name.to_owned();
    }
    let sum = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    // Go slices bytes; release names are DNS labels, so ASCII.
    let cut = name.get(..MAX - HASH - 1).unwrap_or(name);
    format!("{cut}-{}", &hex[..HASH])
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
            app_version: chart_version_without_build(&self.chart_version).to_owned(),
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

/// Why a HelmRelease's chart cannot be had: its Ready reason and message.
type ChartProblem = (&'static str, String);

/// The chart (name, version) the HelmRelease asks for, or why it cannot be had.
async fn wanted_chart(
    client: &Client,
    hr: &Value,
) -> Result<Result<(String, String), ChartProblem>, SimError> {
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or_default();
    let r = &hr["spec"]["chartRef"];
    if r.is_object() {
        if r["kind"] != "OCIRepository" {
            return Ok(Err((
                "ArtifactFailed",
                format!("chartRef kind {} is not simulated", r["kind"]),
            )));
        }
        let rns = r["namespace"].as_str().unwrap_or(ns);
        let rname = r["name"].as_str().unwrap_or_default();
        let Some(repo) = dyn_api(client, &oci_repository(), rns)
            .get_opt(rname)
            .await?
        else {
            return Ok(Err((
                "ArtifactFailed",
                format!("could not get OCIRepository '{rns}/{rname}'"),
            )));
        };
        let repo = to_value(&repo);
        let Some(revision) = repo["status"]["artifact"]["revision"].as_str() else {
            return Ok(Err((
                "ArtifactFailed",
                format!("HelmChart source OCIRepository '{rns}/{rname}' is not ready"),
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
        // The digest part of the revision (`<tag>@sha256:…` or just `sha256:…`) is the
        // build metadata helm-controller appends to the chart's own version.
        let digest = revision.rsplit_once('@').map_or(revision, |(_, d)| d);
        return Ok(Ok((
            chart.to_owned(),
            oci_chart_version(&format!("{version}@{digest}")),
        )));
    }
    let (cns, cname) = helm_chart_of(hr);
    let Some(chart) = dyn_api(client, &helm_chart(), &cns).get_opt(&cname).await? else {
        return Ok(Err((
            "ArtifactFailed",
            format!("could not get Source object: HelmChart '{cns}/{cname}' not found"),
        )));
    };
    let chart = to_value(&chart);
    // `isReady` in helm-controller's internal/controller/helmrelease_controller.go: a
    // HelmChart whose generation is not yet built (its Ready message says why when False),
    // or that has no artifact, is not ready, and the release waits (reason SourceNotReady).
    let not_ready = |why: &str| {
        (
            "SourceNotReady",
            format!("HelmChart '{cns}/{cname}' is not ready: {why}"),
        )
    };
    let conditions = conditions_of(&chart);
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    if chart["status"]["observedGeneration"] != chart["metadata"]["generation"] {
        let why = ready
            .filter(|c| c["status"] == "False")
            .and_then(|c| c["message"].as_str())
            .unwrap_or("latest generation of object has not been reconciled");
        return Ok(Err(not_ready(why)));
    }
    let Some(version) = chart["status"]["artifact"]["revision"].as_str() else {
        return Ok(Err(not_ready("does not have an artifact")));
    };
    let name = chart["status"]["observedChartName"]
        .as_str()
        .or(chart["spec"]["chart"].as_str())
        .unwrap_or_default();
    // A HelmChart's artifact revision is the chart's version as built (with `+<generation>`
    // for values files); helm-controller appends no source digest to it
    // (`mutateChartWithSourceRevision` only does for sources whose revision has a digest).
    Ok(Ok((name.to_owned(), version.to_owned())))
}

/// The HelmChart (namespace, name) helm-controller keeps for a `spec.chart` HelmRelease:
/// `<namespace>-<name>` in the sourceRef's namespace (`GetHelmChartName` and
/// `HelmChartTemplate.GetNamespace` in helm-controller's api/v2).
fn helm_chart_of(hr: &Value) -> (String, String) {
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let src_ns = hr["spec"]["chart"]["spec"]["sourceRef"]["namespace"]
        .as_str()
        .unwrap_or(ns);
    (src_ns.to_owned(), format!("{ns}-{name}"))
}

/// Creates or updates the HelmChart of a `spec.chart` HelmRelease from its template, as
/// `buildHelmChartFromTemplate` and `reconcileChart` in helm-controller v1.6.4
/// internal/reconcile/helmchart_template.go do, with the owner labels it sets.
async fn apply_helm_chart(client: &Client, hr: &Value) -> Result<(), SimError> {
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let template = &hr["spec"]["chart"];
    let spec = &template["spec"];
    let (cns, cname) = helm_chart_of(hr);
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[NAME_LABEL] = json!(name);
    labels[NAMESPACE_LABEL] = json!(ns);
    let mut chart_spec = json!({
        "chart": spec["chart"],
        "version": spec["version"].as_str().unwrap_or("*"),
        "sourceRef": {"kind": spec["sourceRef"]["kind"], "name": spec["sourceRef"]["name"]},
        "interval": spec["interval"].as_str().or(hr["spec"]["interval"].as_str()).unwrap_or("10m"),
    });
    for field in [
        "reconcileStrategy",
        "valuesFiles",
        "ignoreMissingValuesFiles",
    ] {
        if !spec[field].is_null() {
            chart_spec[field] = spec[field].clone();
        }
    }
    let mut chart = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
        "metadata": {"name": cname, "namespace": cns, "labels": labels},
        "spec": chart_spec,
    });
    if template["metadata"]["annotations"].is_object() {
        chart["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
    }
    let api = dyn_api(client, &helm_chart(), &cns);
    // helm-controller patches only when the template changed; applying an unchanged object
    // each reconcile would also wake this controller through its HelmChart watch.
    if let Some(existing) = api.get_opt(&cname).await? {
        let existing = to_value(&existing);
        let same = |a: &Value, b: &Value| {
            a.as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| b[k.as_str()] == *v)
        };
        if same(&chart["spec"], &existing["spec"])
            && same(
                &chart["metadata"]["labels"],
                &existing["metadata"]["labels"],
            )
        {
            return Ok(());
        }
    }
    api.patch(
        &cname,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(chart),
    )
    .await
    .map_err(|e| anyhow!("applying HelmChart {cns}/{cname}: {e}"))?;
    Ok(())
}

/// The chart version helm-controller records for a chart pulled from an OCIRepository
/// whose artifact revision is `revision` (`<tag>@sha256:<hex>`, or just `sha256:<hex>`):
/// the chart's own version (the sim's charts carry the tag without a leading `v`) with the
/// first 12 hex digits of the artifact digest as SemVer build metadata, `1.5.0+f020b3f2f52d`.
/// As `mutateChartWithSourceRevision` in helm-controller's
/// internal/controller/helmrelease_controller.go, which writes it into the chart's metadata
/// before the release: so it is what `status.lastAttemptedRevision`,
/// `status.history[].chartVersion` and the Helm release secret's chart version all say.
pub fn oci_chart_version(revision: &str) -> String {
    let (tag, digest) = revision.split_once('@').unwrap_or(("", revision));
    let version = tag.trim_start_matches('v');
    // An OCI tag spells SemVer's `+` as `_`; helm-controller's SetMetadata replaces any
    // build metadata the version had.
    let version = version.replace('_', "+");
    let version = version.split_once('+').map_or(version.as_str(), |(v, _)| v);
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    format!("{version}+{}", &hex[..hex.len().min(12)])
}

/// The chart's own version, without the build metadata helm-controller or source-controller
/// appended: what the sim's chart renders (image tag, labels) and what declared failures name.
pub fn chart_version_without_build(version: &str) -> &str {
    version.split_once('+').map_or(version, |(v, _)| v)
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
    timeout: Option<Duration>,
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
    if *failing
        && applied.is_ok()
        && let Some(timeout) = timeout
    {
        // Helm applied the objects and waits for them to become ready, which they never do.
        tokio::time::sleep(timeout).await;
    }
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
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    if suspended(&hr) {
        // helm-controller's `Reconcile` returns early for a suspended object, and its
        // deferred patch still writes observedGeneration (and lastHandledReconcileAt): the
        // suspend is "seen". An action already running when the suspend arrived finishes
        // first — its reconcile holds the object (this sim's reconcile does too).
        let mut seen = json!({"observedGeneration": generation});
        if let Some(at) = requested_at(&hr) {
            seen["lastHandledReconcileAt"] = json!(at);
        }
        if hr["status"]["observedGeneration"].as_i64() != generation
            || seen
                .get("lastHandledReconcileAt")
                .is_some_and(|at| *at != hr["status"]["lastHandledReconcileAt"])
        {
            patch_status(&api, &name, seen, MANAGER).await?;
        }
        return Ok(Action::await_change());
    }
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

    if hr["spec"]["chart"].is_object() {
        apply_helm_chart(&ctx.client, &hr).await?;
    }
    let (chart, version) = match wanted_chart(&ctx.client, &hr).await? {
        Ok(c) => c,
        Err((reason, message)) => {
            set_condition(
                &mut conditions,
                condition("Ready", "False", reason, &message, generation),
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
    let bare = chart_version_without_build(&version);
    let failing = ctx.failures.chart_fails(bare)
        || hr["metadata"]["annotations"][FAIL_VERSIONS_ANNOTATION]
            .as_str()
            .is_some_and(|l| {
                l.split(',')
                    .any(|v| v.trim().trim_start_matches('v') == bare.trim_start_matches('v'))
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

    // One release action (and its remediation) per reconcile, as helm-controller's
    // AtomicRelease (internal/reconcile/atomic_release.go) runs each action once and then
    // requeues: a retry is a later reconcile.
    let action = if releases.iter().any(|r| r.status == "deployed") {
        "upgrade"
    } else {
        "install"
    };
    let section = &hr["spec"][action];
    // A RetryOnFailure strategy (`spec.install.strategy.name` / `spec.upgrade.strategy.name`)
    // retries the failed action after `retryInterval` (default 5m) and never remediates:
    // `GetActiveRetry` / `UpgradeStrategy.GetRetryInterval` in api/v2/helmrelease_types.go.
    let retry_on_failure = section["strategy"]["name"] == "RetryOnFailure";
    if retry_on_failure && same_attempt && !stalled {
        let key = format!("{ns}/{name}");
        let wait = ctx
            .retry_not_before
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
            .and_then(|at| at.checked_duration_since(Instant::now()));
        if let Some(wait) = wait {
            // Our own status write woke us; the retry is due after the interval.
            return Ok(Action::requeue(wait));
        }
    }
    let timeout = action_timeout(&hr, action);
    let progress = format!(
        "Running '{action}' action with timeout of {}",
        timeout.as_ref().map_or("5m0s", |(text, _)| text.as_str())
    );
    set_condition(
        &mut conditions,
        condition("Reconciling", "True", "Progressing", &progress, generation),
    );
    set_condition(
        &mut conditions,
        condition("Ready", "Unknown", "Progressing", &progress, generation),
    );
    // helm-controller records the attempt before running it (`reconcileRelease` sets
    // lastAttempted* and the AtomicRelease patches before each action), without
    // observedGeneration: that is only written when the reconcile ends.
    patch_status(
        &api,
        &name,
        json!({"conditions": conditions, "lastAttemptedRevision": version,
               "lastAttemptedGeneration": generation, "lastAttemptedConfigDigest": config_digest}),
        MANAGER,
    )
    .await?;

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
    let prior = history(&ctx.client, &target).await?;
    let attempt = release(&ctx, &hr, &target, &wanted, &prior, timeout.map(|(_, d)| d)).await?;
    let mut remediation: Option<(&str, String)> = None;
    // When the reconcile asks to be requeued at once (`ErrMustRequeue`, retries left) the
    // deferred patch in helm-controller's `Reconcile` leaves observedGeneration alone;
    // otherwise (success, RetryOnFailure's RequeueAfter, retries exhausted) it is written.
    let mut finished = true;
    let mut requeue = None;
    let mut retrying = None;
    if !attempt.ok {
        failures += 1;
        let count = if attempt.action == "install" {
            &mut install_failures
        } else {
            &mut upgrade_failures
        };
        *count += 1;
        if retry_on_failure {
            let interval = section["strategy"]["retryInterval"]
                .as_str()
                .and_then(parse_go_duration)
                .unwrap_or(Duration::from_secs(300));
            if let Ok(mut m) = ctx.retry_not_before.lock() {
                m.insert(format!("{ns}/{name}"), Instant::now() + interval);
            }
            retrying = Some(format!("retrying after {}", go_duration(interval)));
            requeue = Some(interval);
        } else {
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
            } else {
                finished = false;
                requeue = Some(RETRY_REQUEUE);
            }
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
        // No remediation: the Remediated condition of an earlier attempt no longer holds
        // (`Upgrade.Reconcile` deletes it before running).
        remove_condition(&mut conditions, "Remediated");
        set_condition(
            &mut conditions,
            condition("Ready", "False", reason, &attempt.message, generation),
        );
    }
    if !finished {
        // `ErrMustRequeue`: Reconciling stays, carrying Ready's message.
        let message = match &remediation {
            Some((_, m)) => m.clone(),
            None => attempt.message.clone(),
        };
        set_condition(
            &mut conditions,
            condition(
                "Reconciling",
                "True",
                "ProgressingWithRetry",
                &message,
                generation,
            ),
        );
    }
    if let Some(message) = &retrying {
        set_condition(
            &mut conditions,
            condition(
                "Reconciling",
                "True",
                "ProgressingWithRetry",
                message,
                generation,
            ),
        );
    }

    let releases = history(&ctx.client, &target).await?;
    let current = releases.iter().find(|r| r.status == "deployed");
    status["history"] = json!(
        releases
            .iter()
            .take(5)
            .map(|r| json!({
                "name": target.name, "namespace": target.namespace, "version": r.revision,
                "chartName": r.chart, "chartVersion": r.chart_version,
                "appVersion": chart_version_without_build(&r.chart_version),
                "configDigest": digest_of(&r.values.to_string()),
                "digest": digest_of(&(r.revision, &r.manifest)),
                "firstDeployed": now(), "lastDeployed": now(), "status": r.status,
            }))
            .collect::<Vec<_>>()
    );
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
    if !finished && let Some(fields) = status.as_object_mut() {
        fields.remove("observedGeneration");
    }
    patch_status(&api, &name, status, MANAGER).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// An action's timeout as helm-controller reads it (`timeoutForAction` in
/// internal/reconcile/atomic_release.go: `spec.<action>.timeout`, else `spec.timeout`, else
/// 5m), as its text and value — or None when neither is set. A failing release takes the
/// timeout to fail (Helm waits for readiness that never comes); the sim compresses the
/// unset 5m default to no wait at all, so only a HelmRelease that sets a timeout has a
/// long-running action.
fn action_timeout(hr: &Value, action: &str) -> Option<(String, Duration)> {
    [&hr["spec"][action]["timeout"], &hr["spec"]["timeout"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find_map(|text| Some((text.to_owned(), parse_go_duration(text)?)))
}

/// A duration as Go's `time.Duration.String` writes whole seconds: `5m0s`, `1s`.
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
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
    fn long_release_names_are_shortened_as_helm_controller_does() {
        // The cases of helm-controller's internal/release/name_test.go.
        for (name, short) in [
            ("release-name", "release-name"),
            (
                "release-name-with-very-long-name-which-is-longer-than-53-characters",
                "release-name-with-very-long-name-which-i-788ca0d0d7b0",
            ),
            (
                "another-release-name-with-very-long-name-which-is-longer-than-53-characters",
                "another-release-name-with-very-long-name-7e72150d5a36",
            ),
            ("", ""),
        ] {
            assert_eq!(shorten_release_name(name), short);
        }
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
