//! The real CSI snapshot-controller (external-snapshotter) does the VolumeSnapshot side on our
//! control plane the way Fluxgate relies on: for a VolumeSnapshot of a bound CSI claim it
//! creates the VolumeSnapshotContent, puts its protection finalizers on the snapshot, the
//! content and the source claim, and carries what the CSI driver's side reports (here this
//! test plays the csi-snapshotter sidecar, exactly as `pkg/sidecar-controller` of the same
//! release writes it) back to the VolumeSnapshot: readiness, restore size, creation time,
//! errors; on deletion it hands the content to the driver's side and finishes after it.
//!
//! No provisioner exists yet: the claim binds to a pre-created CSI PersistentVolume through
//! kube-controller-manager's binder. README.md ("What a CSI driver stand-in must do") sums up
//! the contract these tests establish.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use realstack::RealCluster;
use serde_json::{Value, json};

use realstack::testing::{eventually, namespace};

const DRIVER: &str = "hostpath.csi.k8s.io";
const STORAGE_CLASS: &str = "realstack-hostpath";
const SNAPSHOT_CLASS: &str = "realstack-hostpath-delete";
const GROUP: &str = "snapshot.storage.k8s.io";

const PVC_FINALIZER: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";
const AS_SOURCE_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
const BOUND_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
const BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

const TIMEOUT: Duration = Duration::from_secs(30);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn snapshots(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &resource("VolumeSnapshot", "volumesnapshots"),
    )
}

fn contents(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource("VolumeSnapshotContent", "volumesnapshotcontents"),
    )
}

fn classes(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource("VolumeSnapshotClass", "volumesnapshotclasses"),
    )
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object")
}

fn json_patch(ops: Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).expect("a valid JSON patch"))
}

/// The StorageClass and VolumeSnapshotClass of the fake driver, made once per process.
async fn classes_once(client: &Client) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let sc: StorageClass = serde_json::from_value(json!({
            "metadata": { "name": STORAGE_CLASS },
            "provisioner": DRIVER,
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }))
        .unwrap();
        Api::<StorageClass>::all(client.clone())
            .create(&PostParams::default(), &sc)
            .await
            .expect("creating the StorageClass");
        let vsc = object(json!({
            "apiVersion": format!("{GROUP}/v1"),
            "kind": "VolumeSnapshotClass",
            "metadata": { "name": SNAPSHOT_CLASS },
            "driver": DRIVER,
            "deletionPolicy": "Delete",
        }));
        classes(client)
            .create(&PostParams::default(), &vsc)
            .await
            .expect("creating the VolumeSnapshotClass");
    })
    .await;
}

/// A 1Gi claim `data` bound to a pre-created CSI volume with handle `handle`.
async fn bound_claim(client: &Client, ns: &str, handle: &str) -> PersistentVolumeClaim {
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": format!("{ns}-data") },
        "spec": {
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Retain",
            "csi": { "driver": DRIVER, "volumeHandle": handle },
            "claimRef": { "namespace": ns, "name": "data" },
        },
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("creating the PersistentVolume");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "data" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "resources": { "requests": { "storage": "1Gi" } },
        },
    }))
    .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    claims
        .create(&PostParams::default(), &pvc)
        .await
        .expect("creating PersistentVolumeClaim data");
    eventually(
        "claim data Bound (kube-controller-manager's binder)",
        TIMEOUT,
        || async {
            let c = claims.get("data").await.map_err(|e| e.to_string())?;
            let phase = c.status.as_ref().and_then(|s| s.phase.clone());
            (phase.as_deref() == Some("Bound"))
                .then_some(c)
                .ok_or_else(|| format!("phase {phase:?}"))
        },
    )
    .await
}

async fn create_snapshot(client: &Client, ns: &str, name: &str) -> DynamicObject {
    let vs = object(json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "VolumeSnapshot",
        "metadata": { "name": name },
        "spec": {
            "volumeSnapshotClassName": SNAPSHOT_CLASS,
            "source": { "persistentVolumeClaimName": "data" },
        },
    }));
    snapshots(client, ns)
        .create(&PostParams::default(), &vs)
        .await
        .unwrap_or_else(|e| panic!("creating VolumeSnapshot {ns}/{name}: {e}"))
}

/// The content the controller makes for `vs` (`snapcontent-<uid>`), once it exists.
async fn content_of(client: &Client, vs: &DynamicObject) -> DynamicObject {
    let name = format!("snapcontent-{}", vs.uid().expect("a uid"));
    let api = contents(client);
    eventually(
        &format!("VolumeSnapshotContent {name}"),
        TIMEOUT,
        || async {
            api.get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not made yet".to_string())
        },
    )
    .await
}

fn finalizers(o: &impl ResourceExt) -> Vec<String> {
    o.finalizers().to_vec()
}

fn has(o: &impl ResourceExt, finalizer: &str) -> bool {
    o.finalizers().iter().any(|f| f == finalizer)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

/// What csi-snapshotter's `createSnapshotWrapper` does around the driver's CreateSnapshot
/// (`pkg/sidecar-controller/snapshot_controller.go`): mark the content
/// (`setAnnVolumeSnapshotBeingCreated`: JSON patch replacing all annotations with the
/// marker added), then, with the driver's answer, `updateSnapshotContentStatus` (GET, then
/// a JSON patch of the status subresource replacing `/status`, keeping an existing
/// creationTime and restoreSize, clearing `error` once ready), then drop the marker
/// (`removeAnnVolumeSnapshotBeingCreated`: JSON patch remove).
async fn sidecar_creates(
    client: &Client,
    name: &str,
    handle: &str,
    created_at: i64,
    size: i64,
    ready: bool,
) -> DynamicObject {
    let api = contents(client);
    let content = api.get(name).await.expect("reading the content");
    let mut annotations = content.annotations().clone();
    annotations.insert(BEING_CREATED.into(), "yes".into());
    api.patch(
        name,
        &PatchParams::default(),
        &json_patch(
            json!([{ "op": "replace", "path": "/metadata/annotations", "value": annotations }]),
        ),
    )
    .await
    .expect("marking the content volumesnapshot-being-created");

    let current = api.get(name).await.expect("reading the content");
    let mut status = current.data["status"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    status
        .entry("snapshotHandle")
        .or_insert_with(|| json!(handle));
    status.insert("readyToUse".into(), json!(ready));
    status
        .entry("creationTime")
        .or_insert_with(|| json!(created_at));
    if size > 0 {
        status.entry("restoreSize").or_insert_with(|| json!(size));
    }
    if ready {
        status.remove("error");
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &json_patch(json!([{ "op": "replace", "path": "/status", "value": status }])),
    )
    .await
    .expect("writing the content's status");

    api.patch(
        name,
        &PatchParams::default(),
        &json_patch(json!([{
            "op": "remove",
            "path": format!("/metadata/annotations/{}", BEING_CREATED.replace('/', "~1")),
        }])),
    )
    .await
    .expect("removing volumesnapshot-being-created")
}

fn snapshot_status(vs: &DynamicObject) -> String {
    format!(
        "status {}, finalizers {:?}",
        vs.data["status"],
        finalizers(vs)
    )
}

#[tokio::test]
async fn the_controller_takes_a_snapshot_through_the_driver_side_and_deletes_it() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    classes_once(&client).await;
    let ns = namespace(&client, "snap-ok").await;
    let handle = "vol-snap-ok-0001";
    let pvc = bound_claim(&client, &ns, handle).await;
    let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    assert_eq!(pv_name.as_deref(), Some(format!("{ns}-data").as_str()));

    let vs = create_snapshot(&client, &ns, "snap").await;
    let vs_api = snapshots(&client, &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let content = content_of(&client, &vs).await;
    let content_name = content.name_any();

    // The content as the controller writes it (createSnapshotContent).
    let spec = &content.data["spec"];
    assert_eq!(spec["driver"], DRIVER, "{spec}");
    assert_eq!(spec["source"]["volumeHandle"], handle, "{spec}");
    assert!(spec["source"]["snapshotHandle"].is_null(), "{spec}");
    assert_eq!(spec["volumeSnapshotClassName"], SNAPSHOT_CLASS, "{spec}");
    assert_eq!(spec["deletionPolicy"], "Delete", "{spec}");
    // --prevent-volume-mode-conversion (on by default) records the source's mode.
    assert_eq!(spec["sourceVolumeMode"], "Filesystem", "{spec}");
    let reference = &spec["volumeSnapshotRef"];
    assert_eq!(reference["kind"], "VolumeSnapshot", "{spec}");
    assert_eq!(reference["apiVersion"], format!("{GROUP}/v1"), "{spec}");
    assert_eq!(reference["namespace"], ns.as_str(), "{spec}");
    assert_eq!(reference["name"], "snap", "{spec}");
    assert_eq!(reference["uid"], vs.uid().unwrap().as_str(), "{spec}");
    assert!(
        content.data["status"].is_null(),
        "the controller never writes the content's status"
    );

    // Binding and protection while the driver has not answered.
    let contents_api = contents(&client);
    eventually(
        "the content's finalizer, the snapshot bound with its finalizers, the claim protected",
        TIMEOUT,
        || async {
            let c = contents_api
                .get(&content_name)
                .await
                .map_err(|e| e.to_string())?;
            let s = vs_api.get("snap").await.map_err(|e| e.to_string())?;
            let p = claims.get("data").await.map_err(|e| e.to_string())?;
            let bound = s.data["status"]["boundVolumeSnapshotContentName"] == content_name.as_str();
            (has(&c, CONTENT_FINALIZER)
                && bound
                && s.data["status"]["readyToUse"] == false
                && has(&s, AS_SOURCE_FINALIZER)
                && has(&s, BOUND_FINALIZER)
                && has(&p, PVC_FINALIZER))
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "content finalizers {:?}; snapshot {}; claim finalizers {:?}",
                    finalizers(&c),
                    snapshot_status(&s),
                    finalizers(&p)
                )
            })
        },
    )
    .await;

    // The driver's side, first answer: snapshot cut but not yet ready (e.g. uploading).
    let created_at = now_nanos();
    let size: i64 = 1 << 30;
    let after = sidecar_creates(
        &client,
        &content_name,
        "snap-handle-0001",
        created_at,
        size,
        false,
    )
    .await;
    assert!(!after.annotations().contains_key(BEING_CREATED));
    eventually(
        "the snapshot to show its creation time and size, still not ready",
        TIMEOUT,
        || async {
            let s = vs_api.get("snap").await.map_err(|e| e.to_string())?;
            let st = &s.data["status"];
            (st["creationTime"].is_string()
                && st["restoreSize"] == "1Gi"
                && st["readyToUse"] == false)
                .then_some(())
                .ok_or_else(|| snapshot_status(&s))
        },
    )
    .await;
    // Not ready: the claim stays protected as a snapshot source.
    let p = claims.get("data").await.unwrap();
    assert!(
        has(&p, PVC_FINALIZER),
        "claim finalizers {:?}",
        finalizers(&p)
    );

    // Second answer (the sidecar polls CreateSnapshot again until ready): ready.
    sidecar_creates(
        &client,
        &content_name,
        "snap-handle-0001",
        created_at,
        size,
        true,
    )
    .await;
    let ready = eventually(
        "the snapshot ready to use and the claim's finalizer gone",
        TIMEOUT,
        || async {
            let s = vs_api.get("snap").await.map_err(|e| e.to_string())?;
            let p = claims.get("data").await.map_err(|e| e.to_string())?;
            (s.data["status"]["readyToUse"] == true && !has(&p, PVC_FINALIZER))
                .then_some(s.clone())
                .ok_or_else(|| {
                    format!(
                        "snapshot {}; claim finalizers {:?}",
                        snapshot_status(&s),
                        finalizers(&p)
                    )
                })
        },
    )
    .await;
    let st = &ready.data["status"];
    assert_eq!(
        st["boundVolumeSnapshotContentName"],
        content_name.as_str(),
        "{st}"
    );
    assert_eq!(st["restoreSize"], "1Gi", "{st}");
    assert!(st["error"].is_null(), "{st}");
    // creationTime is the content's nanoseconds, at the second precision of metav1.Time.
    let expected_time = jiff::Timestamp::from_second(created_at.div_euclid(1_000_000_000))
        .expect("a valid time")
        .to_string();
    assert_eq!(st["creationTime"], expected_time.as_str(), "{st}");
    assert_eq!(
        finalizers(&ready)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        [AS_SOURCE_FINALIZER.to_string(), BOUND_FINALIZER.to_string()].into(),
    );

    // Its events, as `kubectl describe volumesnapshot` shows them.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reasons = eventually("the snapshot's events", TIMEOUT, || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=snap"))
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        ["CreatingSnapshot", "SnapshotCreated", "SnapshotReady"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(reasons.clone())
            .ok_or_else(|| format!("{reasons:?}"))
    })
    .await;
    eprintln!("events of snap: {reasons:?}");

    // Deleting the snapshot (content policy Delete): the controller marks the content for
    // the driver's side and deletes it, keeping its own bound finalizer until it is gone.
    vs_api
        .delete("snap", &DeleteParams::default())
        .await
        .expect("deleting VolumeSnapshot snap");
    let marked = eventually(
        "the content marked volumesnapshot-being-deleted and deleted",
        TIMEOUT,
        || async {
            let c = contents_api
                .get(&content_name)
                .await
                .map_err(|e| e.to_string())?;
            let s = vs_api.get("snap").await.map_err(|e| e.to_string())?;
            (c.annotations().get(BEING_DELETED).map(String::as_str) == Some("yes")
                && c.metadata.deletion_timestamp.is_some()
                && s.metadata.deletion_timestamp.is_some()
                && finalizers(&s) == [BOUND_FINALIZER])
            .then_some(c.clone())
            .ok_or_else(|| {
                format!(
                    "content annotations {:?}, deleting {}, finalizers {:?}; snapshot {}",
                    c.annotations(),
                    c.metadata.deletion_timestamp.is_some(),
                    finalizers(&c),
                    snapshot_status(&s)
                )
            })
        },
    )
    .await;
    assert_eq!(
        finalizers(&marked),
        [CONTENT_FINALIZER],
        "only the driver's side may release it"
    );
    // It stays so until the driver's side acts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(contents_api.get_opt(&content_name).await.unwrap().is_some());
    assert!(vs_api.get_opt("snap").await.unwrap().is_some());

    // The driver's side (`syncContent` → `deleteCSISnapshotOperation` → DeleteSnapshot, then
    // `clearVolumeContentStatus`: GET and UpdateStatus without the snapshot's fields, then
    // `removeContentFinalizer`: JSON patch replacing the finalizers).
    let mut current = contents_api.get(&content_name).await.unwrap();
    if let Some(status) = current.data["status"].as_object_mut() {
        for field in [
            "snapshotHandle",
            "readyToUse",
            "creationTime",
            "restoreSize",
        ] {
            status.remove(field);
        }
    }
    let cleared = contents_api
        .replace_status(&content_name, &PostParams::default(), &current)
        .await
        .expect("clearing the content's status");
    let rest: Vec<String> = finalizers(&cleared)
        .into_iter()
        .filter(|f| f != CONTENT_FINALIZER)
        .collect();
    contents_api
        .patch(
            &content_name,
            &PatchParams::default(),
            &json_patch(
                json!([{ "op": "replace", "path": "/metadata/finalizers", "value": rest }]),
            ),
        )
        .await
        .expect("removing the content's finalizer");
    eventually("the content and the snapshot gone", TIMEOUT, || async {
        let c = contents_api
            .get_opt(&content_name)
            .await
            .map_err(|e| e.to_string())?;
        let s = vs_api.get_opt("snap").await.map_err(|e| e.to_string())?;
        match (c, s) {
            (None, None) => Ok(()),
            (c, s) => Err(format!(
                "content present: {}, snapshot: {}",
                c.is_some(),
                s.as_ref()
                    .map(snapshot_status)
                    .unwrap_or_else(|| "gone".into())
            )),
        }
    })
    .await;
    let p = claims.get("data").await.unwrap();
    assert!(
        !has(&p, PVC_FINALIZER),
        "claim finalizers {:?}",
        finalizers(&p)
    );

    // Everything the controller wrote, it wrote as its own ServiceAccount (TokenRequest).
    let audit = std::fs::read_to_string(cluster.audit_log()).expect("reading the audit log");
    let creator = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "volumesnapshotcontents"
                && e["objectRef"]["name"] == content_name.as_str()
        })
        .expect("the audit event of the content's creation");
    assert_eq!(
        creator["user"]["username"], "system:serviceaccount:kube-system:snapshot-controller",
        "{creator}"
    );
    assert!(
        creator["user"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:serviceaccounts:kube-system")),
        "{creator}"
    );
}

#[tokio::test]
async fn a_driver_error_shows_on_the_snapshot_and_a_later_success_clears_it() {
    let Some(cluster) = RealCluster::shared_or_skip() else {
        return;
    };
    let client = cluster.client().await.expect("admin client");
    classes_once(&client).await;
    let ns = namespace(&client, "snap-error").await;
    let handle = "vol-snap-error-0001";
    bound_claim(&client, &ns, handle).await;
    let vs = create_snapshot(&client, &ns, "snap").await;
    let vs_api = snapshots(&client, &ns);
    let content = content_of(&client, &vs).await;
    let name = content.name_any();
    let contents_api = contents(&client);

    // The sidecar's failed CreateSnapshot (a final gRPC error, e.g. Internal): the marker
    // comes off again, then `updateContentErrorStatusWithEvent` replaces the empty status
    // with readyToUse false and the error (time, message as the sidecar words it).
    let mut annotations: BTreeMap<String, String> = content.annotations().clone();
    annotations.insert(BEING_CREATED.into(), "yes".into());
    contents_api
        .patch(
            &name,
            &PatchParams::default(),
            &json_patch(
                json!([{ "op": "replace", "path": "/metadata/annotations", "value": annotations }]),
            ),
        )
        .await
        .expect("marking the content volumesnapshot-being-created");
    contents_api
        .patch(
            &name,
            &PatchParams::default(),
            &json_patch(json!([{
                "op": "remove",
                "path": format!("/metadata/annotations/{}", BEING_CREATED.replace('/', "~1")),
            }])),
        )
        .await
        .expect("removing volumesnapshot-being-created");
    let message = format!(
        "Failed to create snapshot: failed to take snapshot of the volume {handle}: \
         \"rpc error: code = Internal desc = backend unavailable\""
    );
    let failed_at = "2026-01-02T03:04:05Z";
    contents_api
        .patch_status(
            &name,
            &PatchParams::default(),
            &json_patch(json!([{
                "op": "replace",
                "path": "/status",
                "value": { "readyToUse": false, "error": { "time": failed_at, "message": message } },
            }])),
        )
        .await
        .expect("writing the content's error");

    let failed = eventually("the error on the snapshot", TIMEOUT, || async {
        let s = vs_api.get("snap").await.map_err(|e| e.to_string())?;
        (s.data["status"]["error"]["message"] == message.as_str())
            .then_some(s.clone())
            .ok_or_else(|| snapshot_status(&s))
    })
    .await;
    let st = &failed.data["status"];
    assert_eq!(
        st["error"]["time"], failed_at,
        "the content's error, copied: {st}"
    );
    assert_eq!(st["readyToUse"], false, "{st}");
    assert_eq!(st["boundVolumeSnapshotContentName"], name.as_str(), "{st}");
    assert!(st["creationTime"].is_null(), "never cut: {st}");
    // The claim stays protected while the snapshot is not ready.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let p = claims.get("data").await.unwrap();
    assert!(
        has(&p, PVC_FINALIZER),
        "claim finalizers {:?}",
        finalizers(&p)
    );

    // The sidecar retries with backoff; a later success clears the error on both.
    sidecar_creates(
        &client,
        &name,
        "snap-handle-err-0001",
        now_nanos(),
        1 << 30,
        true,
    )
    .await;
    let recovered = eventually("the snapshot ready, its error cleared", TIMEOUT, || async {
        let s = vs_api.get("snap").await.map_err(|e| e.to_string())?;
        (s.data["status"]["readyToUse"] == true && s.data["status"]["error"].is_null())
            .then_some(s.clone())
            .ok_or_else(|| snapshot_status(&s))
    })
    .await;
    assert_eq!(recovered.data["status"]["restoreSize"], "1Gi");
    let c = contents_api.get(&name).await.unwrap();
    assert!(c.data["status"]["error"].is_null(), "{}", c.data["status"]);
}
