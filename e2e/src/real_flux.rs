//! Real Flux for a story on the real stack: the real source-, kustomize- and helm-controller
//! (test/realstack's `flux`) on the story's own control plane, an OCI registry and a Helm
//! repository on loopback that the sims' chart (`test/sim/charts/app`, the twin of
//! `test/sim/src/chart.rs`) is published to with real Helm, and a pod webhook that marks the
//! pods of what the story declared failing — handed to the world as its
//! [`fluxgate::demo::world::RealFlux`].

use anyhow::{Context, bail};
use fluxgate::demo::world::{ChartPlace, RealFlux};
use k8s_openapi::api::core::v1::Pod;
use realstack::RealCluster;
use realstack::flux::{Flux, OciRegistry};
use realstack::loopback_http::StaticFiles;
use realstack::webhook::PodWebhook;
use sim::faults::{Failures, NEVER_READY_ANNOTATION};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// The chart every fleet app is published from: the sims' chart as a real Helm chart.
pub fn chart_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test/sim/charts/app")
}

/// The repository path charts are pushed under in the registry (`oci://<host>/charts/<chart>`).
const OCI_PATH: &str = "charts";
/// The pod label the chart sets to the version it was published as (its appVersion).
const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// Real Flux on one story's cluster; lives as long as the story's world.
pub struct StoryFlux {
    python: String,
    registry: OciRegistry,
    repository: StaticFiles,
    work: tempfile::TempDir,
    failures: Failures,
    published: Mutex<BTreeSet<(String, String, String)>>,
    _webhook: PodWebhook,
}

impl StoryFlux {
    /// Starts Flux on `cluster` (once per cluster), the registry and the Helm repository,
    /// and registers the pod webhook for namespace `apps`. Call from inside the story's
    /// runtime (multi-threaded): the webhook is served from it.
    pub async fn start(cluster: &RealCluster, python: &str) -> anyhow::Result<StoryFlux> {
        let started = Instant::now();
        let flux = tokio::task::block_in_place(|| Flux::start(cluster))
            .map_err(|e| anyhow::anyhow!("starting Flux: {e}"))?;
        let flux_up = flux.startup_time();
        drop(flux); // the controllers live in the cluster's process group, not in `flux`
        let registry = OciRegistry::start(cluster).await?;
        let work = tempfile::tempdir().context("a directory for the charts")?;
        let repository_dir = work.path().join("repository");
        std::fs::create_dir_all(&repository_dir)
            .with_context(|| format!("creating {}", repository_dir.display()))?;
        let repository = StaticFiles::start(&repository_dir)?;
        let failures = Failures::default();
        let marked = failures.clone();
        let client = cluster.client().await?;
        let webhook = PodWebhook::register(
            &client,
            "fluxgate-e2e-failures",
            Some(crate::given::NAMESPACE),
            move |pod| never_ready(&marked, pod),
        )
        .await?;
        eprintln!(
            "real Flux: controllers up in {:.1} s, registry {}, Helm repository {}, webhook \
             ({:.1} s in all)",
            flux_up.as_secs_f64(),
            registry.host(),
            repository.url(),
            started.elapsed().as_secs_f64()
        );
        Ok(StoryFlux {
            python: python.to_owned(),
            registry,
            repository,
            work,
            failures,
            published: Mutex::new(BTreeSet::new()),
            _webhook: webhook,
        })
    }

    /// The chart `chart` at `version` written out for packaging: the chart source with its
    /// Chart.yaml naming `chart`, `version` and, as appVersion, the version without a
    /// leading `v` (what the helm sim renders as the image tag and version label).
    fn chart_dir(&self, chart: &str, version: &str) -> anyhow::Result<PathBuf> {
        let dir = self
            .work
            .path()
            .join("sources")
            .join(format!("{chart}-{version}"))
            .join(chart);
        copy_dir(&chart_source(), &dir)?;
        let app_version = version.trim_start_matches('v');
        std::fs::write(
            dir.join("Chart.yaml"),
            format!(
                "apiVersion: v2\nname: {chart}\ndescription: The sims' chart as {chart}\n\
                 type: application\nversion: {version}\nappVersion: \"{app_version}\"\n"
            ),
        )
        .with_context(|| format!("writing {}/Chart.yaml", dir.display()))?;
        Ok(dir)
    }
}

/// The annotations for a pod being created: never ready when its chart version (label) or
/// one of its images is declared failing.
fn never_ready(failures: &Failures, pod: &Pod) -> BTreeMap<String, String> {
    let version_fails = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(VERSION_LABEL))
        .is_some_and(|version| failures.chart_fails(version));
    let image_fails = pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
        c.image
            .as_deref()
            .is_some_and(|image| failures.image_fails(image))
    });
    let mut annotations = BTreeMap::new();
    if version_fails || image_fails {
        annotations.insert(NEVER_READY_ANNOTATION.to_owned(), "true".to_owned());
    }
    annotations
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!("copying {} to {}", entry.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}

const PUBLISH_SCRIPT: &str = r#"
import json, sys
import helm_python as helm

action, chart_dir, version, destination, where = sys.argv[1:6]
archive = helm.package(chart_dir, destination=destination, version=version)
if action == "oci":
    print(json.dumps(helm.push(archive, where, plain_http=True), default=str))
else:
    helm.repo_index_generate(destination, base_url=where)
    print(json.dumps({"archive": archive}))
"#;

impl RealFlux for StoryFlux {
    fn oci_charts_url(&self) -> String {
        self.registry.url(OCI_PATH)
    }

    fn helm_repository_url(&self) -> String {
        self.repository.url().trim_end_matches('/').to_owned()
    }

    fn publish(&self, place: ChartPlace, chart: &str, version: &str) -> anyhow::Result<()> {
        let key = (format!("{place:?}"), chart.to_owned(), version.to_owned());
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if published.contains(&key) {
            return Ok(());
        }
        let dir = self.chart_dir(chart, version)?;
        let (action, destination, where_) = match place {
            ChartPlace::Oci => (
                "oci",
                dir.parent()
                    .context("a chart directory's parent")?
                    .to_owned(),
                self.oci_charts_url(),
            ),
            ChartPlace::HelmRepository => (
                "repo",
                self.work.path().join("repository"),
                self.helm_repository_url(),
            ),
        };
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(PUBLISH_SCRIPT)
            .arg(action)
            .arg(&dir)
            .arg(version)
            .arg(&destination)
            .arg(&where_)
            .output()
            .with_context(|| format!("running {}", self.python))?;
        if !out.status.success() {
            bail!(
                "real Helm could not publish chart {chart} {version} to {where_}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        published.insert(key);
        Ok(())
    }

    fn oci_digest(&self, chart: &str, tag: &str) -> anyhow::Result<String> {
        // Called off the async workers (the world's spawn_blocking), inside the runtime.
        tokio::runtime::Handle::current().block_on(
            self.registry
                .manifest_digest(&format!("{OCI_PATH}/{chart}"), tag),
        )
    }

    fn failures(&self) -> Failures {
        self.failures.clone()
    }
}
