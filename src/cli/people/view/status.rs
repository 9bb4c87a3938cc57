//! `fluxgate status` as text: the table of apps (versions, available updates, failed
//! versions, Ready, the operation holding each app, the Flux objects suspended) and the
//! detailed view of one app, with a warning and the fix when Flux is left suspended.

use super::table::Table;
use super::{phase_name, ready_message, seconds_between, short_sha, transition, whole};
use crate::api::conditions::{PROTECTED, READY, find_condition};
use crate::api::{
    FluxObjectKind, ManagedApp, OperationKind, Phase, RequestStatus, SourceKind, versions_summary,
};
use crate::cluster::flux::ops::describe;
use jiff::Timestamp;
use kube::ResourceExt;

/// A Flux object of an app with its live `spec.suspend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxObjectState {
    /// Its kind.
    pub kind: FluxObjectKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.suspend` now.
    pub suspended: bool,
}

/// The request holding an app's lock, as read from the cluster.
#[derive(Clone, Debug)]
pub struct ActiveRequest {
    /// UpgradeRequest or RollbackRequest.
    pub kind: OperationKind,
    /// Its name.
    pub name: String,
    /// Its status; None when the request no longer exists.
    pub status: Option<RequestStatus>,
}

/// Everything `status` shows about one app.
#[derive(Clone, Debug)]
pub struct AppView {
    /// The ManagedApp.
    pub app: ManagedApp,
    /// The request holding its lock, if any.
    pub active: Option<ActiveRequest>,
    /// Requests waiting for the lock, oldest first.
    pub queued: Vec<String>,
    /// Its Flux objects (the suspend chain) with their live state, or why they could not be
    /// read.
    pub flux: Result<Vec<FluxObjectState>, String>,
}

/// Why a Flux object is suspended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Suspension {
    /// The operation holding the app suspended it and will resume it.
    ByOperation(String),
    /// Suspended before the operation holding the app started; it stays suspended.
    Before(String),
    /// The operation holding the app ended Frozen: left suspended for a person on purpose.
    Frozen(String),
    /// Suspended while no operation holds the app: Flux left suspended.
    Left,
}

/// The suspended Flux objects of an app and why each is suspended.
pub fn suspensions(view: &AppView) -> Vec<(&FluxObjectState, Suspension)> {
    let Ok(objects) = &view.flux else {
        return Vec::new();
    };
    let active = view.active.as_ref();
    let planned = active
        .and_then(|a| a.status.as_ref())
        .and_then(|s| s.plan.as_ref())
        .map(|p| p.flux_objects.as_slice())
        .unwrap_or_default();
    let frozen = active
        .and_then(|a| a.status.as_ref())
        .is_some_and(|s| s.phase == Some(Phase::Frozen));
    objects
        .iter()
        .filter(|o| o.suspended)
        .map(|o| {
            let plan = planned
                .iter()
                .find(|p| p.kind == o.kind && p.namespace == o.namespace && p.name == o.name);
            let why = match (active, plan) {
                (None, _) => Suspension::Left,
                (Some(a), Some(p)) if p.was_suspended => Suspension::Before(a.name.clone()),
                (Some(a), _) if frozen => Suspension::Frozen(a.name.clone()),
                (Some(a), Some(_)) => Suspension::ByOperation(a.name.clone()),
                // Held by an operation that has not planned it (yet): not Fluxgate's doing.
                (Some(a), None) => Suspension::Before(a.name.clone()),
            };
            (o, why)
        })
        .collect()
}

fn short_kind(kind: FluxObjectKind) -> String {
    crate::cluster::flux::ops::api_resource(kind).kind
}

fn suspended_cell(view: &AppView) -> String {
    if view.flux.is_err() {
        return "? (see status <app>)".to_owned();
    }
    let all = suspensions(view);
    if all.is_empty() {
        return "-".to_owned();
    }
    let mut cells = Vec::new();
    let by_op: Vec<_> = all
        .iter()
        .filter_map(|(_, s)| match s {
            Suspension::ByOperation(name) | Suspension::Frozen(name) => Some(name),
            _ => None,
        })
        .collect();
    if let Some(name) = by_op.first() {
        cells.push(format!("{} by {name}", by_op.len()));
    }
    for (object, why) in &all {
        match why {
            Suspension::Left => cells.push(format!(
                "! {}/{} (no operation)",
                short_kind(object.kind),
                object.name
            )),
            Suspension::Before(_) => cells.push(format!(
                "{}/{} (not by Fluxgate)",
                short_kind(object.kind),
                object.name
            )),
            _ => {}
        }
    }
    cells.join(", ")
}

fn operation_cell(view: &AppView) -> String {
    let mut cell = match &view.active {
        None => "-".to_owned(),
        Some(active) => {
            let phase = active
                .status
                .as_ref()
                .map_or("missing".to_owned(), |s| phase_name(s.phase));
            format!("{} {} ({phase})", kind_word(active.kind), active.name)
        }
    };
    if !view.queued.is_empty() {
        cell.push_str(&format!(" +{} queued", view.queued.len()));
    }
    cell
}

fn kind_word(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::UpgradeRequest => "upgrade",
        OperationKind::RollbackRequest => "rollback",
    }
}

fn available_cell(app: &ManagedApp) -> String {
    let Some(status) = &app.status else {
        return "-".to_owned();
    };
    if status.available_update.is_empty() {
        return "-".to_owned();
    }
    let single = status.available_update.len() == 1;
    status
        .available_update
        .iter()
        .map(|(name, update)| {
            if single {
                format!("{} ({})", update.version, update.update_type)
            } else {
                format!("{name}={} ({})", update.version, update.update_type)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn failed_cell(app: &ManagedApp) -> String {
    let failed = app
        .status
        .as_ref()
        .map(|s| s.failed_versions.as_slice())
        .unwrap_or_default();
    if failed.is_empty() {
        return "-".to_owned();
    }
    let single = app.spec.versions.len() <= 1;
    failed
        .iter()
        .map(|f| {
            if single {
                f.version.clone()
            } else {
                format!("{}={}", f.name, f.version)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn versions_cell(app: &ManagedApp) -> String {
    app.status
        .as_ref()
        .filter(|s| !s.current_versions.is_empty())
        .map_or("-".to_owned(), |s| versions_summary(&s.current_versions))
}

fn ready_cell(app: &ManagedApp) -> String {
    app.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, READY))
        .map_or("-".to_owned(), |c| c.status.clone())
}

/// The table of apps; `all_namespaces` adds a NAMESPACE column. Warnings (Flux left
/// suspended, frozen operations) follow the table with what to do.
pub fn render_table(views: &[AppView], all_namespaces: bool) -> String {
    let mut headers = vec![
        "APP",
        "VERSIONS",
        "AVAILABLE",
        "FAILED",
        "READY",
        "OPERATION",
        "FLUX SUSPENDED",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(&headers);
    for view in views {
        let mut row = vec![
            view.app.name_any(),
            versions_cell(&view.app),
            available_cell(&view.app),
            failed_cell(&view.app),
            ready_cell(&view.app),
            operation_cell(view),
            suspended_cell(view),
        ];
        if all_namespaces {
            row.insert(0, view.app.namespace().unwrap_or_default());
        }
        table.row(row);
    }
    let mut out = table.render();
    for view in views {
        for warning in warnings(view) {
            out.push_str(&format!("\n! {warning}"));
        }
    }
    if views.iter().any(|v| !warnings(v).is_empty()) {
        out.push('\n');
    }
    out
}

/// What a person must look at for one app, each with the fix.
pub fn warnings(view: &AppView) -> Vec<String> {
    let app = view.app.name_any();
    let namespace = view.app.namespace().unwrap_or_default();
    let mut out = Vec::new();
    let all = suspensions(view);
    let left: Vec<_> = all
        .iter()
        .filter(|(_, s)| *s == Suspension::Left)
        .map(|(o, _)| *o)
        .collect();
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .map(|o| describe(o.kind, &o.namespace, &o.name))
            .collect();
        let resume: Vec<String> = left
            .iter()
            .map(|o| {
                format!(
                    "flux resume {} {} -n {}",
                    short_kind(o.kind).to_lowercase(),
                    o.name,
                    o.namespace
                )
            })
            .collect();
        out.push(format!(
            "{namespace}/{app}: Flux left suspended: {} suspended while no Fluxgate operation holds the app, so Flux does not apply changes to it. \
             Find out why (`fluxgate history {app} -n {namespace}`, `kubectl get events -n {namespace}`), then resume, children last: {}",
            names.join(", "),
            resume.join("; ")
        ));
    }
    if let Some(active) = &view.active {
        match active.status.as_ref().and_then(|s| s.phase) {
            Some(Phase::Frozen) => {
                let held: Vec<String> = all
                    .iter()
                    .filter(|(_, s)| matches!(s, Suspension::Frozen(_)))
                    .map(|(o, _)| describe(o.kind, &o.namespace, &o.name))
                    .collect();
                let flux = if held.is_empty() {
                    String::new()
                } else {
                    format!(" ({} stay suspended)", held.join(", "))
                };
                let status = active.status.as_ref();
                let frozen_rollback = match active.kind {
                    OperationKind::RollbackRequest => Some(active.name.clone()),
                    OperationKind::UpgradeRequest => status
                        .and_then(|s| s.rollback_ref.as_ref())
                        .map(|r| r.name.clone()),
                };
                out.push(match frozen_rollback {
                    Some(rollback) => format!(
                        "{namespace}/{app}: {} {} is Frozen: rollback {rollback} failed after replacing volumes and holds the app \
                         for a person{flux}, never resumed on missing data. Its status.restores says what is missing and which \
                         safety snapshot holds the data (`kubectl get rr {rollback} -n {namespace} -o yaml`); restore that, \
                         then delete the RollbackRequest",
                        kind_word(active.kind),
                        active.name
                    ),
                    None => format!(
                        "{namespace}/{app}: {} {} is Frozen: it failed after its commit and left everything as it was for a person{flux}. \
                         Inspect the app, then undo it with `fluxgate rollback {} -n {namespace}`",
                        kind_word(active.kind),
                        active.name,
                        active.name
                    ),
                })
            }
            _ if active.status.is_none() => out.push(format!(
                "{namespace}/{app}: the app is held by {} {}, which no longer exists; the operator releases the lock on its next reconcile (is it running?)",
                kind_word(active.kind),
                active.name
            )),
            _ => {}
        }
    }
    if let Err(error) = &view.flux {
        out.push(format!(
            "{namespace}/{app}: cannot read its Flux objects: {error}"
        ));
    }
    out
}

/// The detailed view of one app at `now`.
/// What an upgrade would protect (`status.protection`), one line per volume, workload and
/// gap, under `Protected:` with the condition's status.
fn protection_lines(
    status: &crate::api::ManagedAppStatus,
    field: &dyn Fn(&str, String) -> String,
) -> String {
    let Some(protection) = &status.protection else {
        return field("Protected", "- (not found out yet)".to_owned());
    };
    let verdict =
        find_condition(&status.conditions, PROTECTED).map_or("-".to_owned(), |c| c.status.clone());
    let mut out = field("Protected", verdict);
    for volume in &protection.snapshotted {
        out.push_str(&field(
            "",
            format!(
                "snapshots PVC {} with {} (deletionPolicy {})",
                volume.pvc, volume.snapshot_class, volume.deletion_policy
            ),
        ));
    }
    for workload in &protection.stopped {
        out.push_str(&field("", format!("stops {workload}")));
    }
    for gap in &protection.unprotected {
        out.push_str(&field("", format!("NOT PROTECTED: {gap}")));
    }
    out
}

pub fn render_app(view: &AppView, now: Timestamp) -> String {
    let app = &view.app;
    let status = app.status.clone().unwrap_or_default();
    let namespace = app.namespace().unwrap_or_default();
    let mut out = format!("ManagedApp {namespace}/{}\n", app.name_any());
    let source_kind = match app.spec.source.kind {
        SourceKind::HelmRelease => "HelmRelease",
        SourceKind::Kustomization => "Kustomization",
    };
    let field = |name: &str, value: String| format!("  {:<14}{value}\n", format!("{name}:"));
    out.push_str(&field(
        "Source",
        format!(
            "{source_kind} {}/{}",
            app.source_namespace(),
            app.spec.source.name
        ),
    ));
    let mut git = app.spec.git.file.clone();
    if let Some(url) = &app.spec.git.url {
        git.push_str(&format!(" in {url}"));
    }
    if let Some(branch) = &app.spec.git.branch {
        git.push_str(&format!(" ({branch})"));
    }
    out.push_str(&field("Git", git));
    out.push_str(&field(
        "Versions",
        if status.current_versions.is_empty() {
            "- (not read from Git yet)".to_owned()
        } else {
            status
                .current_versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    out.push_str(&field(
        "Available",
        if status.available_update.is_empty() {
            "-".to_owned()
        } else {
            status
                .available_update
                .iter()
                .map(|(k, u)| format!("{k} {} → {} ({})", u.current, u.version, u.update_type))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    if status.failed_versions.is_empty() {
        out.push_str(&field("Failed", "-".to_owned()));
    } else {
        for (i, failed) in status.failed_versions.iter().enumerate() {
            let mut text = format!(
                "{} {} (rolled back from {}, {} ago",
                failed.name,
                failed.version,
                failed.upgrade_request,
                whole(seconds_between(failed.failed_at.0, now))
            );
            if let Some(reason) = &failed.reason {
                text.push_str(&format!(": {reason}"));
            }
            text.push_str("); refused unless --force");
            out.push_str(&field(if i == 0 { "Failed" } else { "" }, text));
        }
    }
    out.push_str(&protection_lines(&status, &field));
    let ready = find_condition(&status.conditions, READY).map_or("-".to_owned(), |c| {
        if c.message.is_empty() {
            c.status.clone()
        } else {
            format!("{} — {}", c.status, c.message)
        }
    });
    out.push_str(&field("Ready", ready));
    let operation = match &view.active {
        None => "none".to_owned(),
        Some(active) => match &active.status {
            None => format!(
                "{} {} (no longer exists)",
                kind_word(active.kind),
                active.name
            ),
            Some(s) => {
                let mut text = format!(
                    "{} {}: {}",
                    kind_word(active.kind),
                    active.name,
                    phase_name(s.phase)
                );
                if let Some(started) = &s.phase_started_at {
                    text.push_str(&format!(" for {}", whole(seconds_between(started.0, now))));
                }
                if let Some(message) = ready_message(s) {
                    text.push_str(&format!(" — {message}"));
                }
                text
            }
        },
    };
    out.push_str(&field("Operation", operation));
    if !view.queued.is_empty() {
        out.push_str(&field("Queued", view.queued.join(", ")));
    }
    if let Some(last) = &status.last_operation {
        out.push_str(&field(
            "Last",
            format!(
                "{} {} {} ({}), {} ago",
                kind_word(last.kind),
                last.name,
                last.result,
                transition(&last.from, &last.to),
                whole(seconds_between(last.completed_at.0, now))
            ),
        ));
    }
    out.push_str("  Flux objects:\n");
    match &view.flux {
        Err(error) => out.push_str(&format!("    cannot be read: {error}\n")),
        Ok(objects) => {
            let why = suspensions(view);
            let mut table = Table::new(&["KIND", "NAME", "SUSPENDED"]);
            for object in objects {
                let state = match why.iter().find(|(o, _)| *o == object).map(|(_, s)| s) {
                    None => "no".to_owned(),
                    Some(Suspension::ByOperation(name)) => {
                        format!("yes, by {name} (resumed when it ends)")
                    }
                    Some(Suspension::Frozen(name)) => {
                        format!("yes, left by {name} (Frozen, for a person)")
                    }
                    Some(Suspension::Before(name)) => {
                        format!("yes, before {name} started (not by Fluxgate; stays so)")
                    }
                    Some(Suspension::Left) => "yes, while no operation holds the app!".to_owned(),
                };
                table.row(vec![
                    short_kind(object.kind),
                    format!("{}/{}", object.namespace, object.name),
                    state,
                ]);
            }
            for line in table.render().lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out.push_str(&field(
        "Policy",
        format!(
            "on failure {:?}; automatic updates {:?}; health timeout {}, stabilization {}; snapshots {}",
            app.spec.rollback.on_failure,
            app.spec.update_policy.auto,
            app.spec.health.timeout,
            app.spec.health.stabilization,
            if app.spec.snapshots.enabled { "on" } else { "off" }
        )
        .replace("automatic updates None", "automatic updates off"),
    ));
    if let Some(commit) = view
        .active
        .as_ref()
        .and_then(|a| a.status.as_ref())
        .and_then(|s| s.commit.as_ref())
    {
        out.push_str(&field(
            "Commit",
            format!("{} \"{}\"", short_sha(&commit.sha), commit.message),
        ));
    }
    for warning in warnings(view) {
        out.push_str(&format!("\n! {warning}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::condition;
    use crate::api::{
        AvailableUpdate, FailedVersion, ManagedAppStatus, Plan, PlannedFluxObject, UpdateType,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn app(status: ManagedAppStatus) -> ManagedApp {
        let mut app: ManagedApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"source": {"kind": "HelmRelease", "name": "db"},
                     "git": {"file": "clusters/prod/db.yaml"}}
        }))
        .unwrap();
        app.status = Some(status);
        app
    }

    fn flux(release_suspended: bool) -> Vec<FluxObjectState> {
        vec![
            FluxObjectState {
                kind: FluxObjectKind::Kustomization,
                namespace: "flux-system".into(),
                name: "apps".into(),
                suspended: false,
            },
            FluxObjectState {
                kind: FluxObjectKind::HelmRelease,
                namespace: "apps".into(),
                name: "db".into(),
                suspended: release_suspended,
            },
        ]
    }

    fn with_versions() -> ManagedAppStatus {
        ManagedAppStatus {
            current_versions: BTreeMap::from([("chart".into(), "v1.5.0".into())]),
            available_update: BTreeMap::from([(
                "chart".into(),
                AvailableUpdate {
                    current: "v1.5.0".into(),
                    version: "v1.6.0".into(),
                    update_type: UpdateType::Minor,
                    released_at: None,
                    source: None,
                    candidates: vec![],
                },
            )]),
            failed_versions: vec![FailedVersion {
                name: "chart".into(),
                version: "v2.0.0".into(),
                upgrade_request: "db-2".into(),
                failed_at: Time(ts(0)),
                reason: Some("HealthCheckFailed".into()),
            }],
            conditions: vec![condition(READY, true, "Healthy", "", None, Time(ts(0)))],
            ..ManagedAppStatus::default()
        }
    }

    #[test]
    fn the_table_shows_versions_updates_failed_versions_and_readiness() {
        let view = AppView {
            app: app(with_versions()),
            active: None,
            queued: vec![],
            flux: Ok(flux(false)),
        };
        let text = render_table(&[view], false);
        assert_eq!(
            text,
            "APP   VERSIONS   AVAILABLE        FAILED   READY   OPERATION   FLUX SUSPENDED\n\
             db    v1.5.0     v1.6.0 (minor)   v2.0.0   True    -           -\n"
        );
    }

    #[test]
    fn flux_suspended_by_the_running_operation_is_expected() {
        let mut status = RequestStatus {
            phase: Some(Phase::Snapshot),
            ..RequestStatus::default()
        };
        status.plan = Some(Plan {
            flux_objects: vec![PlannedFluxObject {
                kind: FluxObjectKind::HelmRelease,
                name: "db".into(),
                namespace: "apps".into(),
                was_suspended: false,
            }],
            ..Plan::default()
        });
        let view = AppView {
            app: app(ManagedAppStatus::default()),
            active: Some(ActiveRequest {
                kind: OperationKind::UpgradeRequest,
                name: "db-up".into(),
                status: Some(status),
            }),
            queued: vec!["db-next".into()],
            flux: Ok(flux(true)),
        };
        let text = render_table(std::slice::from_ref(&view), true);
        assert!(
            text.contains("apps        db    -          -           -        -       upgrade db-up (Snapshot) +1 queued   1 by db-up\n"),
            "{text}"
        );
        assert!(
            !text.contains('!'),
            "no warning while an operation holds it: {text}"
        );
        let detail = render_app(&view, ts(10));
        assert!(
            detail.contains(
                "HelmRelease     apps/db            yes, by db-up (resumed when it ends)"
            ),
            "{detail}"
        );
        assert!(detail.contains("Queued:       db-next"), "{detail}");
    }

    #[test]
    fn flux_left_suspended_without_an_operation_is_a_warning_with_the_fix() {
        let view = AppView {
            app: app(with_versions()),
            active: None,
            queued: vec![],
            flux: Ok(flux(true)),
        };
        let text = render_table(std::slice::from_ref(&view), false);
        assert!(text.contains("! HelmRelease/db (no operation)"), "{text}");
        assert!(
            text.contains("! apps/db: Flux left suspended: HelmRelease apps/db suspended while no Fluxgate operation holds the app"),
            "{text}"
        );
        assert!(
            text.contains("flux resume helmrelease db -n apps"),
            "{text}"
        );
        let detail = render_app(&view, ts(90));
        assert!(
            detail.contains("yes, while no operation holds the app!"),
            "{detail}"
        );
        assert!(
            detail.contains("chart v2.0.0 (rolled back from db-2, 1m30s ago: HealthCheckFailed); refused unless --force"),
            "{detail}"
        );
    }

    #[test]
    fn the_app_view_shows_what_an_upgrade_would_protect_and_what_not() {
        let mut status = with_versions();
        status.protection = Some(crate::api::Protection {
            snapshotted: vec![crate::api::SnapshottedVolume {
                pvc: "apps/data-db-0".into(),
                snapshot_class: "csi-snaps".into(),
                deletion_policy: "Retain".into(),
            }],
            stopped: vec!["StatefulSet apps/db".into()],
            unprotected: vec!["PVC apps/cache is not a CSI volume".into()],
        });
        status.conditions.push(crate::api::conditions::condition(
            PROTECTED,
            false,
            "VolumesUnprotected",
            "PVC apps/cache is not a CSI volume",
            None,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(0)),
        ));
        let view = AppView {
            app: app(status),
            active: None,
            queued: vec![],
            flux: Ok(flux(false)),
        };
        let text = render_app(&view, ts(60));
        for line in [
            "Protected:    False",
            "snapshots PVC apps/data-db-0 with csi-snaps (deletionPolicy Retain)",
            "stops StatefulSet apps/db",
            "NOT PROTECTED: PVC apps/cache is not a CSI volume",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn a_frozen_operation_says_what_to_do_next() {
        let view = AppView {
            app: app(with_versions()),
            active: Some(ActiveRequest {
                kind: OperationKind::UpgradeRequest,
                name: "db-2".into(),
                status: Some(RequestStatus {
                    phase: Some(Phase::Frozen),
                    plan: Some(Plan {
                        flux_objects: vec![PlannedFluxObject {
                            kind: FluxObjectKind::HelmRelease,
                            name: "db".into(),
                            namespace: "apps".into(),
                            was_suspended: false,
                        }],
                        ..Plan::default()
                    }),
                    ..RequestStatus::default()
                }),
            }),
            queued: vec![],
            flux: Ok(flux(true)),
        };
        let warnings = warnings(&view);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("fluxgate rollback db-2 -n apps"),
            "{warnings:?}"
        );
        let text = render_table(std::slice::from_ref(&view), false);
        assert!(text.contains("upgrade db-2 (Frozen)   1 by db-2"), "{text}");

        // Frozen because its rollback froze after replacing volumes: no rollback of it again,
        // but where the data is and how to let go.
        let mut held = view;
        if let Some(status) = held.active.as_mut().and_then(|a| a.status.as_mut()) {
            status.rollback_ref = Some(crate::api::LocalObjectReference {
                name: "db-2-rollback".into(),
            });
        }
        let said = super::warnings(&held);
        assert_eq!(said.len(), 1, "{said:?}");
        for part in [
            "rollback db-2-rollback failed after replacing volumes",
            "kubectl get rr db-2-rollback -n apps -o yaml",
            "then delete the RollbackRequest",
        ] {
            assert!(said[0].contains(part), "{part}: {said:?}");
        }
        assert!(!said[0].contains("fluxgate rollback"), "{said:?}");
    }

    #[test]
    fn unreadable_flux_objects_are_reported_not_hidden() {
        let view = AppView {
            app: app(ManagedAppStatus::default()),
            active: None,
            queued: vec![],
            flux: Err("HelmRelease apps/db not found".into()),
        };
        let detail = render_app(&view, ts(0));
        assert!(
            detail.contains("cannot be read: HelmRelease apps/db not found"),
            "{detail}"
        );
        assert!(
            detail.contains("Versions:     - (not read from Git yet)"),
            "{detail}"
        );
    }
}
