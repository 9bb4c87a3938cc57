//! What the invariant tests, the crash matrix, the fault soak and the data-loss catalogue
//! check, shared: the operator's own requests in kubesim's log, the end state of an upgrade
//! or a rollback counted from the cluster and Git (snapshots, commits carrying a request's
//! UID, rollback requests, PVC restores, Flux and replicas put back), and where every piece
//! of the app's data is ([`Ledger`]: the content tokens of its PVCs, PVs and snapshots).

use fluxgate::api::{FluxObjectKind, Phase, RollbackRequest, UpgradeRequest};
use fluxgate::cluster::flux::ops::{get, is_suspended};
use fluxgate::cluster::snapshots::{REQUEST_UID_LABEL, VolumeSnapshot};
use fluxgate::demo::world::{APP_FILE, DemoWorld};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kubesim::{Match, RequestRecord};
use std::collections::BTreeMap;

/// The User-Agent prefix of every request the operator sends.
pub const OPERATOR: &str = "fluxgate/";

/// The operator's requests.
pub fn operator() -> Match {
    Match::any().user_agent(OPERATOR)
}

/// The operator's writes (create, update, patch, delete).
pub fn operator_writes() -> Match {
    operator().verb("write")
}

/// One request in a line: `patch helmreleases apps/db`, `update upgraderequests apps/x/status`.
pub fn describe(r: &RequestRecord) -> String {
    let mut target = match (&r.namespace, &r.name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (Some(ns), None) => format!("{ns}/"),
        (None, Some(name)) => name.clone(),
        (None, None) => String::new(),
    };
    if let Some(sub) = &r.subresource {
        target.push('/');
        target.push_str(sub);
    }
    format!("{} {} {target} → {}", r.verb, r.resource, r.code)
}

/// The PVCs of the app (its StatefulSet's volume claims), by name.
pub async fn app_claims(story: &DemoWorld) -> Vec<String> {
    let mut names: Vec<String> =
        Api::<PersistentVolumeClaim>::namespaced(story.client.clone(), "apps")
            .list(&ListParams::default())
            .await
            .map(|l| l.items.iter().map(ResourceExt::name_any).collect())
            .unwrap_or_default();
    names.sort();
    names
}

/// Each app PVC's content token now (see `sim::volumes`).
pub async fn content_tokens(story: &DemoWorld) -> BTreeMap<String, Option<String>> {
    let mut tokens = BTreeMap::new();
    for claim in app_claims(story).await {
        let token = sim::volumes::content_token(&story.client, "apps", &claim)
            .await
            .ok()
            .flatten();
        tokens.insert(claim, token);
    }
    tokens
}

/// Commits on the branch whose message carries `Fluxgate-Request-UID: <uid>`.
pub fn commits_of(story: &DemoWorld, uid: &str) -> usize {
    let trailer = format!("Fluxgate-Request-UID: {uid}");
    story
        .git
        .log()
        .unwrap_or_default()
        .iter()
        .filter(|c| c.message.lines().any(|l| l.trim() == trailer))
        .count()
}

/// VolumeSnapshots labelled with the request's UID.
pub async fn snapshots_of(story: &DemoWorld, uid: &str) -> usize {
    Api::<VolumeSnapshot>::namespaced(story.client.clone(), "apps")
        .list(&ListParams::default().labels(&format!("{REQUEST_UID_LABEL}={uid}")))
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

/// Whether the root Kustomization and the app's HelmRelease are suspended, in that order;
/// None when either cannot be read.
pub async fn suspended(story: &DemoWorld) -> Option<(bool, bool)> {
    let release = get(&story.cluster(), FluxObjectKind::HelmRelease, "apps", "db")
        .await
        .ok()??;
    let root = get(
        &story.cluster(),
        FluxObjectKind::Kustomization,
        "flux-system",
        "flux-system",
    )
    .await
    .ok()??;
    Some((is_suspended(&root), is_suspended(&release)))
}

/// Whether the HelmRelease and the root Kustomization are both resumed.
pub async fn flux_resumed(story: &DemoWorld) -> bool {
    suspended(story).await == Some((false, false))
}

/// The root Kustomization's and the HelmRelease's suspend, and the StatefulSet's replicas.
pub async fn flux_and_replicas(story: &DemoWorld) -> (bool, bool, Option<i32>) {
    let (root, release) = suspended(story)
        .await
        .expect("the root Kustomization and the HelmRelease exist");
    (root, release, replicas(story).await)
}

/// Waits until UpgradeRequest `name` is in `phase` and returns it; panics naming both after
/// `timeout`.
pub async fn wait_phase(
    story: &DemoWorld,
    name: &str,
    phase: Phase,
    timeout: std::time::Duration,
) -> UpgradeRequest {
    let api = Api::<UpgradeRequest>::namespaced(story.client.clone(), "apps");
    fluxgate::demo::world::wait_until(&format!("{name} to reach {phase:?}"), timeout, async || {
        let upgrade = api.get(name).await.ok()?;
        (upgrade.status.as_ref()?.phase == Some(phase)).then_some(upgrade)
    })
    .await
    .unwrap()
}

/// The StatefulSet's desired replicas.
pub async fn replicas(story: &DemoWorld) -> Option<i32> {
    Api::<StatefulSet>::namespaced(story.client.clone(), "apps")
        .get("db")
        .await
        .ok()?
        .spec
        .replicas
}

/// The operator's successful creates of PVCs (restores), per PVC name.
pub fn restores(story: &DemoWorld) -> BTreeMap<String, usize> {
    let mut by_name = BTreeMap::new();
    let creates = story
        .kubesim()
        .requests(&operator().verb("create").resource("persistentvolumeclaims"));
    for create in creates.iter().filter(|r| r.code < 300) {
        let name = create
            .body
            .as_ref()
            .and_then(|b| b.pointer("/metadata/name"))
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_owned();
        *by_name.entry(name).or_insert(0) += 1;
    }
    by_name
}

/// Everything wrong with a finished upgrade that should have succeeded to `version`
/// (empty when it is right): Succeeded, one commit with its UID, one snapshot per PVC,
/// Flux resumed, two replicas, the file at the version, the app's lock released.
pub async fn upgrade_problems(
    story: &DemoWorld,
    upgrade: &UpgradeRequest,
    version: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let status = upgrade.status.clone().unwrap_or_default();
    let uid = upgrade.uid().unwrap_or_default();
    if status.phase != Some(Phase::Succeeded) {
        problems.push(format!(
            "phase {:?}, failure {:?}",
            status.phase, status.failure
        ));
    }
    let commits = commits_of(story, &uid);
    if commits != 1 {
        problems.push(format!("{commits} commits carry the request's UID"));
    }
    let claims = app_claims(story).await.len();
    let snapshots = snapshots_of(story, &uid).await;
    if snapshots != claims {
        problems.push(format!("{snapshots} snapshots for {claims} PVCs"));
    }
    problems.extend(put_back_problems(story).await);
    if story.git.read_file(APP_FILE).ok().flatten() != Some(story.app_manifest(version)) {
        problems.push(format!("{APP_FILE} is not exactly the app at {version}"));
    }
    problems
}

/// Flux resumed, replicas restored, the app's lock released.
pub async fn put_back_problems(story: &DemoWorld) -> Vec<String> {
    let mut problems = Vec::new();
    if !flux_resumed(story).await {
        problems.push("Flux left suspended".into());
    }
    let replicas = replicas(story).await;
    if replicas != Some(2) {
        problems.push(format!("replicas {replicas:?}, not 2"));
    }
    match story.app().await {
        Ok(app) => {
            let active = app.status.and_then(|s| s.active_operation);
            if let Some(active) = active {
                problems.push(format!("the app's lock is still held by {}", active.name));
            }
        }
        Err(e) => problems.push(format!("{e}")),
    }
    problems
}

/// Everything wrong with an upgrade that should have been rolled back (empty when right):
/// upgrade RolledBack, one RollbackRequest that Succeeded, one commit each with the
/// upgrade's and the rollback's UID, Git back at `from` byte for byte, one snapshot and one
/// safety snapshot per PVC, each PVC restored exactly once and holding the content it had
/// before the upgrade (`before`), Flux and replicas back.
pub async fn rollback_problems(
    story: &DemoWorld,
    upgrade: &UpgradeRequest,
    from: &str,
    before: &BTreeMap<String, Option<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let status = upgrade.status.clone().unwrap_or_default();
    if status.phase != Some(Phase::RolledBack) {
        problems.push(format!(
            "upgrade phase {:?}, failure {:?}",
            status.phase, status.failure
        ));
    }
    let rollbacks = Api::<RollbackRequest>::namespaced(story.client.clone(), "apps")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    if rollbacks.len() != 1 {
        problems.push(format!("{} RollbackRequests", rollbacks.len()));
    }
    let claims = app_claims(story).await;
    let upgrade_uid = upgrade.uid().unwrap_or_default();
    if commits_of(story, &upgrade_uid) != 1 {
        problems.push(format!(
            "{} commits carry the upgrade's UID",
            commits_of(story, &upgrade_uid)
        ));
    }
    let upgrade_snapshots = snapshots_of(story, &upgrade_uid).await;
    if upgrade_snapshots != claims.len() {
        problems.push(format!(
            "{upgrade_snapshots} upgrade snapshots for {} PVCs",
            claims.len()
        ));
    }
    if let Some(rollback) = rollbacks.first() {
        let rollback_status = rollback.status.clone().unwrap_or_default();
        if rollback_status.phase != Some(Phase::Succeeded) {
            problems.push(format!(
                "rollback phase {:?}, failure {:?}",
                rollback_status.phase, rollback_status.failure
            ));
        }
        let uid = rollback.uid().unwrap_or_default();
        let reverts = commits_of(story, &uid);
        if reverts != 1 {
            problems.push(format!("{reverts} revert commits"));
        }
        let safety = snapshots_of(story, &uid).await;
        if safety != claims.len() {
            problems.push(format!(
                "{safety} safety snapshots for {} PVCs",
                claims.len()
            ));
        }
    }
    if story.git.read_file(APP_FILE).ok().flatten() != Some(story.app_manifest(from)) {
        problems.push(format!("{APP_FILE} is not back at {from} byte for byte"));
    }
    let restores = restores(story);
    for claim in &claims {
        let n = restores.get(claim).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!("{claim} restored {n} times"));
        }
    }
    let after = content_tokens(story).await;
    if &after != before {
        problems.push(format!(
            "volume contents {after:?} are not those before the upgrade {before:?}"
        ));
    }
    for snapshot in &status.snapshots {
        let taken = sim::volumes::snapshot_token(&story.client, "apps", &snapshot.name)
            .await
            .ok()
            .flatten();
        if after.get(&snapshot.pvc).cloned().flatten() != taken {
            problems.push(format!(
                "{} does not hold snapshot {}",
                snapshot.pvc, snapshot.name
            ));
        }
    }
    problems.extend(put_back_problems(story).await);
    problems
}

/// Where the app's data is: the content token (see `sim::volumes`) of each PVC in namespace
/// `apps` with the PersistentVolume it is bound to, of each PersistentVolume that was made
/// for one of them (also one whose claim is gone), and of each VolumeSnapshot there. What a
/// data-loss story compares before and after: every token held before must still be held
/// somewhere.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    /// PVC → (the PV it is bound to, what it holds).
    pub claims: BTreeMap<String, (Option<String>, Option<String>)>,
    /// PV → (the claim it was made for, `namespace/name`; what it holds).
    pub volumes: BTreeMap<String, (Option<String>, Option<String>)>,
    /// VolumeSnapshot → what it holds (None before it is cut, or when its content is gone).
    pub snapshots: BTreeMap<String, Option<String>>,
}

impl Ledger {
    /// The ledger now; panics naming what could not be read.
    pub async fn read(story: &DemoWorld) -> Ledger {
        let mut ledger = Ledger::default();
        let claims = Api::<PersistentVolumeClaim>::namespaced(story.client.clone(), "apps")
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing PVCs in apps: {e}"));
        for claim in claims.items {
            let name = claim.name_any();
            let token = sim::volumes::content_token(&story.client, "apps", &name)
                .await
                .unwrap_or_else(|e| panic!("reading what PVC apps/{name} holds: {e:#}"));
            let volume = claim
                .spec
                .and_then(|s| s.volume_name)
                .filter(|v| !v.is_empty());
            ledger.claims.insert(name, (volume, token));
        }
        let volumes = Api::<PersistentVolume>::all(story.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing PersistentVolumes: {e}"));
        for volume in volumes.items {
            let claim = volume
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| {
                    Some(format!(
                        "{}/{}",
                        r.namespace.as_deref()?,
                        r.name.as_deref()?
                    ))
                });
            if claim.as_deref().is_some_and(|c| c.starts_with("apps/")) {
                ledger
                    .volumes
                    .insert(volume.name_any(), (claim, sim::csi::stored_token(&volume)));
            }
        }
        let snapshots = Api::<VolumeSnapshot>::namespaced(story.client.clone(), "apps")
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing VolumeSnapshots in apps: {e}"));
        for snapshot in snapshots.items {
            let name = snapshot.name_any();
            let token = sim::volumes::snapshot_token(&story.client, "apps", &name)
                .await
                .unwrap_or_else(|e| panic!("reading what VolumeSnapshot apps/{name} holds: {e:#}"));
            ledger.snapshots.insert(name, token);
        }
        ledger
    }

    /// What PVC `pvc` holds now (None when it is gone or unbound).
    pub fn claim(&self, pvc: &str) -> Option<&str> {
        self.claims.get(pvc).and_then(|(_, t)| t.as_deref())
    }

    /// The PV PVC `pvc` is bound to.
    pub fn volume_of(&self, pvc: &str) -> Option<&str> {
        self.claims.get(pvc).and_then(|(v, _)| v.as_deref())
    }

    /// What VolumeSnapshot `name` holds.
    pub fn snapshot(&self, name: &str) -> Option<&str> {
        self.snapshots.get(name).and_then(|t| t.as_deref())
    }

    /// Everywhere `token` is held: `PVC x`, `PV y`, `VolumeSnapshot z`.
    pub fn holders(&self, token: &str) -> Vec<String> {
        let claims = self
            .claims
            .iter()
            .filter(|(_, (_, t))| t.as_deref() == Some(token))
            .map(|(n, _)| format!("PVC {n}"));
        let volumes = self
            .volumes
            .iter()
            .filter(|(_, (_, t))| t.as_deref() == Some(token))
            .map(|(n, _)| format!("PV {n}"));
        let snapshots = self
            .snapshots
            .iter()
            .filter(|(_, t)| t.as_deref() == Some(token))
            .map(|(n, _)| format!("VolumeSnapshot {n}"));
        claims.chain(volumes).chain(snapshots).collect()
    }

    /// Every token held `before` and nowhere now, each with where it was.
    pub fn lost_since(&self, before: &Ledger) -> BTreeMap<String, Vec<String>> {
        let mut lost = BTreeMap::new();
        let all = before
            .claims
            .values()
            .chain(before.volumes.values())
            .filter_map(|(_, t)| t.clone())
            .chain(before.snapshots.values().flatten().cloned());
        for token in all {
            if self.holders(&token).is_empty() {
                lost.insert(token.clone(), before.holders(&token));
            }
        }
        lost
    }
}
