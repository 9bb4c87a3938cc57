//! Builds what a story starts from and asks for out of the API's own types: UpgradeRequests,
//! RollbackRequests, ManagedApps and their settings, the Flux objects and references a story
//! puts in place, and the Renovate report it hands the operator.
//!
//! Names and shapes come from `fluxgate::api` and `fluxgate::cluster::flux`, so a renamed
//! field breaks the build instead of silently writing a key the server prunes. Deliberately
//! malformed input (`bad_input.rs`) stays hand-written JSON: these types cannot express it.

use fluxgate::api::{
    AutoUpdate, CommitSigning, GitLocation, GoDuration, HealthPolicy, LocalObjectReference,
    MaintenanceWindow, ManagedApp, ManagedAppSpec, OnFailure, PhaseTimeouts, RollbackPolicy,
    RollbackRequest, RollbackRequestSpec, SnapshotPolicy, SourceKind, SourceReference,
    UpdatePolicy, UpgradeRequest, UpgradeRequestSpec, ValueFormat, VersionField,
};
use fluxgate::cluster::flux::{
    CrossNamespaceSourceReference, GitRepositoryRef, HelmRelease, HelmReleaseSpec,
};
use fluxgate::demo::world::{DemoWorld, Fleet};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The namespace every story's apps and requests live in.
pub const NAMESPACE: &str = "apps";

/// The app [`DemoWorld::start`] deploys and [`DemoWorld::upgrade`] upgrades.
pub const APP: &str = "db";

/// Creates `object` in its own namespace through `client`, naming it in the error.
pub async fn create<K>(client: &Client, object: &K) -> anyhow::Result<K>
where
    K: crate::StoryKind + Serialize,
{
    let namespace = object.namespace().unwrap_or_else(|| NAMESPACE.to_owned());
    Api::<K>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), object)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "creating {} {namespace}/{}: {e}",
                K::kind(&()),
                object.name_any()
            )
        })
}

// ---------------------------------------------------------------------------------------
// Requests.

/// An UpgradeRequest `name` of app [`APP`] in [`NAMESPACE`]; say what it upgrades to with
/// [`Upgrade::to_version`] or [`Upgrade::to_target`].
pub fn upgrade(name: &str) -> Upgrade {
    Upgrade {
        name: name.to_owned(),
        namespace: NAMESPACE.to_owned(),
        spec: UpgradeRequestSpec {
            managed_app: APP.to_owned(),
            target: None,
            version: None,
            skip_snapshot: false,
            dry_run: false,
            force: false,
        },
    }
}

/// An UpgradeRequest being written; see [`upgrade`].
#[derive(Clone, Debug)]
pub struct Upgrade {
    name: String,
    namespace: String,
    spec: UpgradeRequestSpec,
}

impl Upgrade {
    /// Upgrades ManagedApp `app` instead of [`APP`].
    pub fn of_app(mut self, app: &str) -> Upgrade {
        self.spec.managed_app = app.to_owned();
        self
    }

    /// To `version` (`spec.version`, for a single-version app).
    pub fn to_version(mut self, version: &str) -> Upgrade {
        self.spec.version = Some(version.to_owned());
        self
    }

    /// Version field `field` to `version` (`spec.target`); call again for more fields.
    pub fn to_target(mut self, field: &str, version: &str) -> Upgrade {
        self.spec
            .target
            .get_or_insert_default()
            .insert(field.to_owned(), version.to_owned());
        self
    }

    /// Only checks and cycles; commits and snapshots nothing (`spec.dryRun`).
    pub fn dry_run(self) -> Upgrade {
        self.dry_run_if(true)
    }

    /// A dry run when `dry_run` is true, for stories that run a case both ways.
    pub fn dry_run_if(mut self, dry_run: bool) -> Upgrade {
        self.spec.dry_run = dry_run;
        self
    }

    /// In namespace `namespace` instead of [`NAMESPACE`].
    pub fn in_namespace(mut self, namespace: &str) -> Upgrade {
        self.namespace = namespace.to_owned();
        self
    }

    /// The UpgradeRequest.
    pub fn build(self) -> UpgradeRequest {
        let mut upgrade = UpgradeRequest::new(&self.name, self.spec);
        upgrade.metadata.namespace = Some(self.namespace);
        upgrade
    }

    /// Creates it in the story's cluster, after what the world needs for it
    /// ([`DemoWorld::prepare_upgrade`]: on real Flux, the chart pushed at that version).
    pub async fn create(self, story: &DemoWorld) -> anyhow::Result<UpgradeRequest> {
        let version = self
            .spec
            .version
            .clone()
            .or_else(|| self.spec.target.as_ref()?.get("chart").cloned());
        if let Some(version) = version {
            story
                .prepare_upgrade(&self.spec.managed_app, &version)
                .await?;
        }
        self.create_with(&story.client).await
    }

    /// Creates it through `client` (a real cluster's, say).
    pub async fn create_with(self, client: &Client) -> anyhow::Result<UpgradeRequest> {
        create(client, &self.build()).await
    }
}

/// A RollbackRequest `name` undoing UpgradeRequest `upgrade` in [`NAMESPACE`], with the
/// API's defaults: a safety snapshot first, not a dry run.
pub fn rollback(name: &str, upgrade: &str) -> Rollback {
    Rollback {
        name: name.to_owned(),
        spec: RollbackRequestSpec {
            upgrade_request: upgrade.to_owned(),
            safety_snapshot: true,
            dry_run: false,
            force: false,
        },
    }
}

/// A RollbackRequest being written; see [`rollback`].
#[derive(Clone, Debug)]
pub struct Rollback {
    name: String,
    spec: RollbackRequestSpec,
}

impl Rollback {
    /// Overwrites the failed state without snapshotting it first (`spec.safetySnapshot: false`).
    pub fn without_safety_snapshot(mut self) -> Rollback {
        self.spec.safety_snapshot = false;
        self
    }

    /// Rolls back even when the upgrade is no longer the app's last change (`spec.force`).
    pub fn force(mut self) -> Rollback {
        self.spec.force = true;
        self
    }

    /// Only checks and cycles; restores, commits and snapshots nothing (`spec.dryRun`).
    pub fn dry_run(mut self) -> Rollback {
        self.spec.dry_run = true;
        self
    }

    /// The RollbackRequest.
    pub fn build(self) -> RollbackRequest {
        let mut rollback = RollbackRequest::new(&self.name, self.spec);
        rollback.metadata.namespace = Some(NAMESPACE.to_owned());
        rollback
    }

    /// Creates it in the story's cluster.
    pub async fn create(self, story: &DemoWorld) -> anyhow::Result<RollbackRequest> {
        create(&story.client, &self.build()).await
    }
}

// ---------------------------------------------------------------------------------------
// ManagedApps.

/// A ManagedApp's settings over the basics the world writes (its source, Git location and a
/// 1 s stabilization): only what a story sets is written, so everything else keeps the
/// basics or the API's defaults. With nothing set it is the app as the world makes it.
pub fn app() -> AppSettings {
    AppSettings::default()
}

/// Settings for one ManagedApp; see [`app`].
#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    spec: Map<String, Value>,
    /// Lines for the HelmRelease's `spec` ([`AppSettings::helm_timeout`]).
    release_spec: String,
}

impl AppSettings {
    /// Sets the field at `path` (JSON names) to `value` as the API serializes it.
    fn set(mut self, path: &[&str], value: impl Serialize) -> AppSettings {
        let value = serde_json::to_value(value).expect("API types serialize");
        let (last, parents) = path.split_last().expect("a field path");
        let mut object = &mut self.spec;
        for key in parents {
            object = object
                .entry(*key)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("settings nest objects only");
        }
        object.insert((*last).to_owned(), value);
        self
    }

    /// How long the app may take to become healthy after an upgrade (`health.timeout`):
    /// short for a version meant to fail, so the story does not wait the default 5 minutes.
    pub fn health_timeout(self, timeout: &str) -> AppSettings {
        self.set(&["health", "timeout"], GoDuration::from(timeout))
    }

    /// How long helm-controller's Helm actions wait for readiness (the HelmRelease's
    /// `spec.timeout`, default 5m): for a story whose version never becomes ready, so that
    /// real Helm gives up about when the app's health timeout fires. Until Helm's wait ends,
    /// helm-controller sees no suspend (Fluxgate's rollback waits for that before it
    /// quiesces), and a failing version's wait lasts the whole timeout.
    pub fn helm_timeout(mut self, timeout: &str) -> AppSettings {
        self.release_spec = format!("  timeout: {timeout}\n");
        self
    }

    /// What a failure after the commit does (`rollback.onFailure`).
    pub fn on_failure(self, policy: OnFailure) -> AppSettings {
        self.set(&["rollback", "onFailure"], policy)
    }

    /// Newest snapshots kept per PVC (`snapshots.retention.maxCount`).
    pub fn keep_snapshots(self, max_count: u32) -> AppSettings {
        self.set(&["snapshots", "retention", "maxCount"], max_count)
    }

    /// The Snapshot phase's timeout (`timeouts.snapshot`).
    pub fn snapshot_timeout(self, timeout: &str) -> AppSettings {
        self.set(&["timeouts", "snapshot"], GoDuration::from(timeout))
    }

    /// The Reconcile phase's timeout (`timeouts.reconcile`).
    pub fn reconcile_timeout(self, timeout: &str) -> AppSettings {
        self.set(&["timeouts", "reconcile"], GoDuration::from(timeout))
    }

    /// Which updates are applied automatically, and when (`updatePolicy`).
    pub fn update_policy(self, policy: UpdatePolicy) -> AppSettings {
        self.set(&["updatePolicy"], policy)
    }

    /// The version fields Fluxgate manages (`versions`), replacing the source kind's default.
    pub fn versions(self, fields: Vec<VersionField>) -> AppSettings {
        self.set(&["versions"], fields)
    }

    /// Signs Fluxgate's commits with the SSH key in Secret `secret` (`git.signing`).
    pub fn signed_with(self, secret: &str) -> AppSettings {
        self.set(
            &["git", "signing"],
            CommitSigning {
                secret_ref: LocalObjectReference {
                    name: secret.to_owned(),
                },
            },
        )
    }

    /// The settings as the merge patch [`DemoWorld::start`] and `Fleet` take.
    pub fn spec(self) -> Value {
        Value::Object(self.spec)
    }

    /// Starts the world with app [`APP`] at chart tag `tag` and these settings, Fluxgate
    /// running ([`DemoWorld::start`]), on the stack of the calling test.
    pub async fn running_at(self, tag: &str) -> DemoWorld {
        let release_spec = self.release_spec.clone();
        world(Fleet::new().helm_app_with(APP, tag, 2, &release_spec, self.spec()))
            .await
            .unwrap_or_else(|e| panic!("starting the world with {APP} at {tag}: {e:#}"))
    }
}

/// Starts the world with `fleet` deployed and Fluxgate running
/// ([`DemoWorld::start_fleet`]), on the stack of the calling test ([`crate::stack`]).
pub async fn world(fleet: Fleet) -> anyhow::Result<DemoWorld> {
    DemoWorld::start_fleet_on(fleet, crate::stack::current().await).await
}

impl From<AppSettings> for Value {
    fn from(settings: AppSettings) -> Value {
        settings.spec()
    }
}

/// An update policy applying updates up to `auto` inside the window that opens at each
/// `schedule` (cron, UTC) and stays open for `duration`.
pub fn auto_update(auto: AutoUpdate, schedule: &str, duration: &str) -> UpdatePolicy {
    UpdatePolicy {
        auto,
        min_release_age: None,
        window: Some(MaintenanceWindow {
            schedule: schedule.to_owned(),
            duration: GoDuration::from(duration),
            timezone: "UTC".to_owned(),
        }),
    }
}

/// Version field `name` at YAML path `path` of document `document` (`Kind/name`) of the
/// app's Git file, holding the version itself.
pub fn version_field(name: &str, path: &str, document: &str) -> VersionField {
    VersionField {
        name: name.to_owned(),
        path: path.to_owned(),
        file: None,
        document: Some(document.to_owned()),
        format: ValueFormat::Plain,
    }
}

/// A whole ManagedApp `name` in [`NAMESPACE`], for stories that create one beside the
/// world's: deployed by HelmRelease `release` (same namespace), versions in Git file `file`,
/// the API's defaults otherwise.
pub fn managed_app(name: &str, release: &str, file: &str) -> NewApp {
    let spec = ManagedAppSpec {
        source: SourceReference {
            kind: SourceKind::HelmRelease,
            name: release.to_owned(),
            namespace: None,
        },
        suspend: Vec::new(),
        git: GitLocation {
            file: file.to_owned(),
            url: None,
            branch: None,
            secret_ref: None,
            signing: None,
        },
        versions: Vec::new(),
        snapshots: SnapshotPolicy::default(),
        health: HealthPolicy::default(),
        rollback: RollbackPolicy::default(),
        update_policy: UpdatePolicy::default(),
        timeouts: PhaseTimeouts::default(),
    };
    NewApp {
        name: name.to_owned(),
        spec,
    }
}

/// A ManagedApp being written; see [`managed_app`].
#[derive(Clone, Debug)]
pub struct NewApp {
    name: String,
    spec: ManagedAppSpec,
}

impl NewApp {
    /// Commits to branch `branch` of `url`, pushing with the credentials in Secret `secret`.
    pub fn pushing_to(mut self, url: &str, branch: &str, secret: &str) -> NewApp {
        self.spec.git.url = Some(url.to_owned());
        self.spec.git.branch = Some(branch.to_owned());
        self.spec.git.secret_ref = Some(LocalObjectReference {
            name: secret.to_owned(),
        });
        self
    }

    /// How long healthy must hold after an upgrade (`health.stabilization`).
    pub fn stabilization(mut self, stabilization: &str) -> NewApp {
        self.spec.health.stabilization = GoDuration::from(stabilization);
        self
    }

    /// The ManagedApp.
    pub fn build(self) -> ManagedApp {
        let mut app = ManagedApp::new(&self.name, self.spec);
        app.metadata.namespace = Some(NAMESPACE.to_owned());
        app
    }

    /// Creates it in the story's cluster.
    pub async fn create(self, story: &DemoWorld) -> anyhow::Result<ManagedApp> {
        create(&story.client, &self.build()).await
    }
}

// ---------------------------------------------------------------------------------------
// Flux.

/// Flux's GitRepository following tag `tag` (`spec.ref`), for `Fleet::flux_follows`.
pub fn tag_ref(tag: &str) -> Value {
    git_ref(GitRepositoryRef {
        tag: Some(tag.to_owned()),
        ..GitRepositoryRef::default()
    })
}

/// Flux's GitRepository following the full reference `name` (`spec.ref.name`, e.g.
/// `refs/heads/main`), for `Fleet::flux_follows`.
pub fn ref_name(name: &str) -> Value {
    git_ref(GitRepositoryRef {
        name: Some(name.to_owned()),
        ..GitRepositoryRef::default()
    })
}

fn git_ref(reference: GitRepositoryRef) -> Value {
    serde_json::to_value(reference).expect("a GitRepository ref serializes")
}

/// A Flux HelmRelease `name` in [`NAMESPACE`], reconciled every 10 minutes; say where its
/// chart comes from with [`NewHelmRelease::chart_from_oci_repository`].
pub fn helm_release(name: &str) -> NewHelmRelease {
    let mut spec = HelmReleaseSpec::default();
    spec.rest.insert("interval".into(), json!("10m"));
    let mut release = HelmRelease::new(name, spec);
    release.metadata.namespace = Some(NAMESPACE.to_owned());
    NewHelmRelease(release)
}

/// A HelmRelease being written; see [`helm_release`].
#[derive(Clone, Debug)]
pub struct NewHelmRelease(HelmRelease);

impl NewHelmRelease {
    /// Its chart comes from OCIRepository `repository` (`spec.chartRef`).
    pub fn chart_from_oci_repository(mut self, repository: &str) -> NewHelmRelease {
        self.0.spec.chart_ref = Some(CrossNamespaceSourceReference {
            kind: "OCIRepository".into(),
            name: repository.to_owned(),
            namespace: None,
        });
        self
    }

    /// The HelmRelease.
    pub fn build(self) -> HelmRelease {
        self.0
    }
}

// ---------------------------------------------------------------------------------------
// Renovate.

/// Renovate's report (`reportType: file`) for `repository` (as Renovate names it, see
/// [`renovate_repository`]): the app's chart tag in `clusters/prod/db.yaml` at `current`,
/// with these updates (version, update type) offered.
pub fn renovate_report(repository: &str, current: &str, updates: &[(&str, &str)]) -> String {
    let updates: Vec<Value> = updates
        .iter()
        .map(|(version, kind)| json!({"newValue": version, "updateType": kind}))
        .collect();
    json!({"repositories": {repository: {"problems": [], "packageFiles": {"flux": [
        {"packageFile": fluxgate::demo::world::APP_FILE, "deps": [
            {"depName": "ghcr.io/example/charts/db", "currentValue": current,
             "datasource": "docker", "updates": updates}]}]}}}})
    .to_string()
}

/// The name Renovate gives the story's fleet repository: its path on the host, which for
/// the local Git server is the path of its `file://` URL.
pub fn renovate_repository(story: &DemoWorld) -> String {
    story
        .git
        .file_url()
        .trim_start_matches("file://")
        .trim_start_matches('/')
        .trim_end_matches(".git")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_is_written_as_the_api_spells_it() {
        let dry = upgrade("db-dry").to_version("v1.5.0").dry_run().build();
        assert_eq!(
            serde_json::to_value(&dry).unwrap(),
            json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
                   "metadata": {"name": "db-dry", "namespace": "apps"},
                   "spec": {"managedApp": "db", "version": "v1.5.0", "dryRun": true,
                            "skipSnapshot": false, "force": false}})
        );
        let target = upgrade("web-up")
            .of_app("web")
            .to_target("image", "16.5.0")
            .build();
        assert_eq!(
            serde_json::to_value(&target.spec).unwrap()["target"],
            json!({"image": "16.5.0"})
        );
    }

    #[test]
    fn a_rollback_can_skip_its_safety_snapshot_dry_run_or_be_forced() {
        let undo = rollback("undo", "db-2-0-0")
            .without_safety_snapshot()
            .dry_run()
            .build();
        assert_eq!(
            serde_json::to_value(&undo).unwrap(),
            json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "RollbackRequest",
                   "metadata": {"name": "undo", "namespace": "apps"},
                   "spec": {"upgradeRequest": "db-2-0-0", "safetySnapshot": false,
                            "dryRun": true, "force": false}})
        );
        let defaults = serde_json::to_value(rollback("undo", "db-2-0-0").build()).unwrap();
        assert_eq!(defaults["spec"]["safetySnapshot"], true);
        assert_eq!(defaults["spec"]["force"], false);
        let forced = serde_json::to_value(rollback("undo", "db-2-0-0").force().build()).unwrap();
        assert_eq!(forced["spec"]["force"], true);
    }

    #[test]
    fn app_settings_write_only_what_is_set() {
        assert_eq!(app().spec(), json!({}));
        let settings = app()
            .health_timeout("5s")
            .on_failure(OnFailure::Freeze)
            .keep_snapshots(1)
            .reconcile_timeout("20s")
            .signed_with("fluxgate-signing")
            .update_policy(auto_update(AutoUpdate::Minor, "0 0 1 1 *", "1m"))
            .versions(vec![version_field("image", ".spec.x", "HelmRelease/db")]);
        assert_eq!(
            settings.spec(),
            json!({"health": {"timeout": "5s"}, "rollback": {"onFailure": "Freeze"},
                   "snapshots": {"retention": {"maxCount": 1}},
                   "timeouts": {"reconcile": "20s"},
                   "git": {"signing": {"secretRef": {"name": "fluxgate-signing"}}},
                   "updatePolicy": {"auto": "minor", "window": {
                       "schedule": "0 0 1 1 *", "duration": "1m", "timezone": "UTC"}},
                   "versions": [{"name": "image", "path": ".spec.x",
                                 "document": "HelmRelease/db", "format": "plain"}]})
        );
    }

    #[test]
    fn a_managed_app_names_its_source_file_and_remote() {
        let app = managed_app("ghost", "ghost", "clusters/prod/db.yaml")
            .pushing_to("http://git/fleet.git", "main", "fleet-git")
            .stabilization("1s")
            .build();
        let value = serde_json::to_value(&app).unwrap();
        assert_eq!(
            value["spec"]["source"],
            json!({"kind": "HelmRelease", "name": "ghost"})
        );
        assert_eq!(
            value["spec"]["git"],
            json!({"file": "clusters/prod/db.yaml", "url": "http://git/fleet.git",
                   "branch": "main", "secretRef": {"name": "fleet-git"}})
        );
        assert_eq!(value["spec"]["health"]["stabilization"], "1s");
        assert_eq!(value["metadata"]["namespace"], "apps");
    }

    #[test]
    fn flux_objects_are_written_as_flux_spells_them() {
        let release = helm_release("legacy")
            .chart_from_oci_repository("nowhere")
            .build();
        assert_eq!(
            serde_json::to_value(&release).unwrap(),
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                   "metadata": {"name": "legacy", "namespace": "apps"},
                   "spec": {"interval": "10m",
                            "chartRef": {"kind": "OCIRepository", "name": "nowhere"}}})
        );
        assert_eq!(tag_ref("fleet-v1"), json!({"tag": "fleet-v1"}));
        assert_eq!(
            ref_name("refs/heads/main"),
            json!({"name": "refs/heads/main"})
        );
    }
}
