//! Does what happens to a running world in a story, by name: a person deleting a request or
//! an app, pushing to the fleet by hand, changing the app's update policy, Renovate writing its report, the operator
//! restarted to read Renovate's output, and what befalls the app's data: a snapshot deleted
//! or its content lost, a PVC's deletion held back.

use crate::{StoryKind, api, then};
use fluxgate::api::{FluxObjectKind, ManagedApp, UpdatePolicy, UpgradeRequest};
use fluxgate::cluster::flux::ops::request_reconcile;
use fluxgate::cluster::snapshots::VolumeSnapshot;
use fluxgate::controller::renovate_input::RenovateSettings;
use fluxgate::demo::world::{DemoWorld, wait_until};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The namespace and name of the ConfigMap the stories' Renovate writes its report to.
pub const RENOVATE_CONFIGMAP: (&str, &str) = ("apps", "renovate-output");

/// How long a deleted request may take to go: its finalizer puts Flux and the replicas
/// back first.
const DELETION: Duration = Duration::from_secs(30);

/// A person deletes UpgradeRequest `name`; returns once it is gone (its finalizer done).
pub async fn upgrade_deleted(story: &DemoWorld, name: &str) {
    deleted_and_gone::<UpgradeRequest>(story, name).await;
}

/// A person deletes ManagedApp `name` (without waiting for it to go).
pub async fn app_deleted(story: &DemoWorld, name: &str) {
    api::<ManagedApp>(story)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting ManagedApp {name}: {e}"));
}

/// A person sets ManagedApp `db`'s update policy.
pub async fn update_policy_set(story: &DemoWorld, policy: &UpdatePolicy) {
    api::<ManagedApp>(story)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updatePolicy": policy}})),
        )
        .await
        .unwrap_or_else(|e| panic!("setting the update policy of db: {e}"));
}

/// Someone else pushes `files` (path, contents) to the fleet's branch as one commit and
/// asks Flux to fetch it now, as `flux reconcile source git flux-system` does
/// (`reconcile.fluxcd.io/requestedAt` on GitRepository `flux-system/flux-system`): real
/// source-controller would see it only at its next interval (gotk-sync's 1m0s).
/// Returns the commit's SHA.
pub async fn pushed_by_hand(story: &DemoWorld, files: &[(&str, &str)], message: &str) -> String {
    let sha = story
        .git
        .push_commit(files, message)
        .unwrap_or_else(|e| panic!("pushing {message:?}: {e}"));
    request_reconcile(
        &story.cluster(),
        FluxObjectKind::GitRepository,
        "flux-system",
        "flux-system",
        &k8s_openapi::jiff::Timestamp::now().to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("asking Flux to fetch {sha}: {e}"));
    sha
}

/// Renovate writes `report` to [`RENOVATE_CONFIGMAP`] (creating it the first time, as
/// Renovate's post-upgrade step does, and replacing its data after).
pub async fn renovate_writes(story: &DemoWorld, report: &str) {
    let (namespace, name) = RENOVATE_CONFIGMAP;
    let configmaps = kube::Api::<ConfigMap>::namespaced(story.client.clone(), namespace);
    let data = BTreeMap::from([("report.json".to_owned(), report.to_owned())]);
    let exists = configmaps
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading ConfigMap {namespace}/{name}: {e}"))
        .is_some();
    let written = if exists {
        configmaps
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": data})),
            )
            .await
    } else {
        let configmap = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        configmaps.create(&PostParams::default(), &configmap).await
    };
    written.unwrap_or_else(|e| panic!("writing ConfigMap {namespace}/{name}: {e}"));
}

/// Restarts the operator reading Renovate's output as `renovate` says, as a pod started
/// with those flags would.
pub async fn operator_reads_renovate(story: &mut DemoWorld, renovate: RenovateSettings) {
    story.kill_operator().await;
    story.settings.renovate = renovate;
    story
        .start_operator()
        .unwrap_or_else(|e| panic!("restarting the operator: {e:#}"));
}

/// The settings that make the operator read [`RENOVATE_CONFIGMAP`].
pub fn renovate_configmap() -> RenovateSettings {
    let (namespace, name) = RENOVATE_CONFIGMAP;
    RenovateSettings {
        configmap: Some((namespace.into(), name.into())),
        file: None,
    }
}

/// A finalizer of the stories' own, to hold a PVC's deletion for a moment.
pub const HOLD_FINALIZER: &str = "e2e.fluxgate.dev/hold";

/// A person deletes VolumeSnapshot `name` (in `apps`); returns once it is gone.
pub async fn snapshot_deleted(story: &DemoWorld, name: &str) {
    deleted_and_gone::<VolumeSnapshot>(story, name).await;
}

/// Deletes `K` `name` (in the stories' namespace) and waits until it is gone, its
/// finalizers done.
async fn deleted_and_gone<K: StoryKind>(story: &DemoWorld, name: &str) {
    let kind = K::kind(&());
    api::<K>(story)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting {kind} {name}: {e}"));
    wait_until(&format!("{kind} {name} to go"), DELETION, async || {
        then::get_opt::<K>(story, name)
            .await
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
}

/// The storage loses what VolumeSnapshot `name` (in `apps`) kept: its VolumeSnapshotContent
/// goes (finalizers and all, as when the driver's backend lost it). Returns once the
/// snapshot-controller has noticed: it reports the snapshot in error, as it does for a bound
/// content that is missing (external-snapshotter v8.6.0 `syncReadySnapshot`:
/// `VolumeSnapshotContent is missing`, `readyToUse: false`), or — the PVC still there — has
/// already made a new content for it (`syncUnreadySnapshot`), to cut it again.
pub async fn snapshot_content_lost(story: &DemoWorld, name: &str) {
    let snapshot = api::<VolumeSnapshot>(story)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading VolumeSnapshot {name}: {e}"));
    let content = snapshot
        .status
        .as_ref()
        .and_then(|s| s.rest.get("boundVolumeSnapshotContentName"))
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| panic!("VolumeSnapshot {name} is bound to no content"))
        .to_owned();
    let contents = kube::Api::<DynamicObject>::all_with(
        story.client.clone(),
        &sim::kinds::volume_snapshot_content(),
    );
    let lost = contents
        .get(&content)
        .await
        .unwrap_or_else(|e| panic!("reading VolumeSnapshotContent {content}: {e}"))
        .uid();
    // Deleted first: once it is being deleted no controller can add a finalizer back.
    match contents.delete(&content, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("deleting VolumeSnapshotContent {content}: {e}"),
    }
    match contents
        .patch(
            &content,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("clearing the finalizers of VolumeSnapshotContent {content}: {e}"),
    }
    // A content of the same name made since is the snapshot-controller's new one.
    let replaced = async || {
        let now = contents.get_opt(&content).await.ok()?;
        Some(now.is_none_or(|c| c.uid() != lost))
    };
    wait_until(
        &format!("VolumeSnapshotContent {content} to go"),
        DELETION,
        async || replaced().await.filter(|gone| *gone).map(|_| ()),
    )
    .await
    .unwrap();
    wait_until(
        &format!("the snapshot-controller to notice that VolumeSnapshot {name} lost its content"),
        DELETION,
        async || {
            let status = api::<VolumeSnapshot>(story).get(name).await.ok()?.status?;
            let erred = status.error.and_then(|e| e.message).is_some()
                && status.ready_to_use == Some(false);
            let recut = contents
                .get_opt(&content)
                .await
                .ok()?
                .is_some_and(|c| c.uid() != lost);
            (erred || recut).then_some(())
        },
    )
    .await
    .unwrap();
}

/// PVC `name` (in `apps`) gets [`HOLD_FINALIZER`]: once deleted it stays Terminating until
/// [`claim_let_go`].
pub async fn claim_held(story: &DemoWorld, name: &str) {
    let claims = api::<PersistentVolumeClaim>(story);
    let claim = claims
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading PVC {name}: {e}"));
    let mut finalizers = claim.finalizers().to_vec();
    finalizers.push(HOLD_FINALIZER.to_owned());
    claims
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": finalizers,
                                              "resourceVersion": claim.resource_version()}})),
        )
        .await
        .unwrap_or_else(|e| panic!("holding PVC {name}: {e}"));
}

/// Waits until PVC `name` (in `apps`) is being deleted, and returns it.
pub async fn claim_deleting(
    story: &DemoWorld,
    name: &str,
    timeout: Duration,
) -> PersistentVolumeClaim {
    wait_until(&format!("PVC {name} to be deleted"), timeout, async || {
        let claim = api::<PersistentVolumeClaim>(story)
            .get_opt(name)
            .await
            .ok()??;
        claim.metadata.deletion_timestamp.is_some().then_some(claim)
    })
    .await
    .unwrap()
}

/// PVC `name` (in `apps`) loses [`HOLD_FINALIZER`] again.
pub async fn claim_let_go(story: &DemoWorld, name: &str) {
    let claims = api::<PersistentVolumeClaim>(story);
    let claim = claims
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading PVC {name}: {e}"));
    let finalizers: Vec<String> = claim
        .finalizers()
        .iter()
        .filter(|f| *f != HOLD_FINALIZER)
        .cloned()
        .collect();
    claims
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": finalizers,
                                              "resourceVersion": claim.resource_version()}})),
        )
        .await
        .unwrap_or_else(|e| panic!("letting PVC {name} go: {e}"));
}
