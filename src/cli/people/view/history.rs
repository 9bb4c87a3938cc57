//! `fluxgate history` as text: an app's UpgradeRequests and RollbackRequests, oldest first,
//! each with its outcome, versions, snapshots, commit and how long it took.

use super::table::Table;
use super::{phase_name, seconds_between, short_sha, transition, whole};
use crate::api::{OperationKind, RequestStatus};
use jiff::Timestamp;

/// One past or running request of an app.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// UpgradeRequest or RollbackRequest.
    pub kind: OperationKind,
    /// Its name.
    pub name: String,
    /// Its creation time.
    pub created: Timestamp,
    /// Whether it is a dry run.
    pub dry_run: bool,
    /// For a rollback: the upgrade it undoes.
    pub undoes: Option<String>,
    /// What was asked, for requests not admitted yet (e.g. `v1.5.0`).
    pub requested: Option<String>,
    /// Its status.
    pub status: Option<RequestStatus>,
}

fn outcome(entry: &HistoryEntry) -> String {
    let status = entry.status.clone().unwrap_or_default();
    let mut text = phase_name(status.phase);
    if let Some(failure) = &status.failure {
        text.push_str(&format!(" ({})", failure.reason));
    }
    if entry.dry_run {
        text.push_str(" [dry run]");
    }
    text
}

fn versions(entry: &HistoryEntry) -> String {
    match entry.status.as_ref().and_then(|s| s.plan.as_ref()) {
        Some(plan) if !plan.to.is_empty() => transition(&plan.from, &plan.to),
        _ => entry
            .requested
            .as_ref()
            .map_or("-".to_owned(), |r| format!("→ {r}")),
    }
}

fn snapshots(status: Option<&RequestStatus>) -> String {
    let Some(status) = status.filter(|s| !s.snapshots.is_empty()) else {
        return "-".to_owned();
    };
    let ready = status.snapshots.iter().filter(|s| s.ready_to_use).count();
    if ready == status.snapshots.len() {
        format!("{ready} ready")
    } else {
        format!("{ready}/{} ready", status.snapshots.len())
    }
}

fn duration(entry: &HistoryEntry, now: Timestamp) -> String {
    let status = entry.status.clone().unwrap_or_default();
    match (status.phase, &status.phase_started_at) {
        (Some(phase), Some(ended)) if phase.is_terminal() => {
            whole(seconds_between(entry.created, ended.0))
        }
        _ => format!("running {}", whole(seconds_between(entry.created, now))),
    }
}

fn kind(entry: &HistoryEntry) -> String {
    match (entry.kind, &entry.undoes) {
        (OperationKind::UpgradeRequest, _) => "upgrade".to_owned(),
        (OperationKind::RollbackRequest, Some(upgrade)) => format!("rollback of {upgrade}"),
        (OperationKind::RollbackRequest, None) => "rollback".to_owned(),
    }
}

/// When a finished request ended (its terminal phase's start).
fn ended(entry: &HistoryEntry) -> Option<Timestamp> {
    let status = entry.status.as_ref()?;
    status
        .phase
        .filter(|p| p.is_terminal())
        .and(status.phase_started_at.as_ref())
        .map(|t| t.0)
}

/// Oldest first. Creation times have one-second resolution: among requests created in the
/// same second, the one that finished first (then by name) comes first, so a request that
/// queued behind another is listed after it.
pub fn chronological(a: &HistoryEntry, b: &HistoryEntry) -> std::cmp::Ordering {
    let end = |e: &HistoryEntry| ended(e).unwrap_or(Timestamp::MAX);
    a.created
        .cmp(&b.created)
        .then_with(|| end(a).cmp(&end(b)))
        .then_with(|| a.name.cmp(&b.name))
}

/// The history table of `app` at `now`, oldest first; a line saying so when there is none.
pub fn render(app: &str, namespace: &str, entries: &[HistoryEntry], now: Timestamp) -> String {
    if entries.is_empty() {
        return format!(
            "No UpgradeRequests or RollbackRequests for ManagedApp {namespace}/{app} \
             (start one with `fluxgate upgrade {app} -n {namespace} --to <version>`).\n"
        );
    }
    let mut sorted: Vec<&HistoryEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| chronological(a, b));
    let mut table = Table::new(&[
        "CREATED (UTC)",
        "KIND",
        "NAME",
        "OUTCOME",
        "VERSIONS",
        "SNAPSHOTS",
        "COMMIT",
        "DURATION",
    ]);
    for entry in sorted {
        table.row(vec![
            entry.created.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            kind(entry),
            entry.name.clone(),
            outcome(entry),
            versions(entry),
            snapshots(entry.status.as_ref()),
            entry
                .status
                .as_ref()
                .and_then(|s| s.commit.as_ref())
                .map_or("-".to_owned(), |c| short_sha(&c.sha).to_owned()),
            duration(entry, now),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommitRecord, Failure, Phase, Plan, SnapshotRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn versions(from: &str, to: &str) -> Plan {
        Plan {
            from: BTreeMap::from([("chart".into(), from.into())]),
            to: BTreeMap::from([("chart".into(), to.into())]),
            ..Plan::default()
        }
    }

    fn snapshot(name: &str) -> SnapshotRecord {
        SnapshotRecord {
            pvc: name.into(),
            name: format!("snap-{name}"),
            ready_to_use: true,
            restore_size: None,
            error: None,
            snapshot_handle: None,
        }
    }

    #[test]
    fn past_operations_are_listed_oldest_first_with_everything_that_matters() {
        let rollback = HistoryEntry {
            kind: OperationKind::RollbackRequest,
            name: "db-2-rollback".into(),
            created: ts(100),
            dry_run: false,
            undoes: Some("db-2".into()),
            requested: None,
            status: Some(RequestStatus {
                phase: Some(Phase::Succeeded),
                phase_started_at: Some(Time(ts(160))),
                plan: Some(versions("v2.0.0", "v1.5.0")),
                commit: Some(CommitRecord {
                    sha: "bbbbbbbbbbbbbbbbbbbb".into(),
                    message: "revert".into(),
                    url: None,
                }),
                ..RequestStatus::default()
            }),
        };
        let failed = HistoryEntry {
            kind: OperationKind::UpgradeRequest,
            name: "db-2".into(),
            created: ts(50),
            dry_run: false,
            undoes: None,
            requested: Some("v2.0.0".into()),
            status: Some(RequestStatus {
                phase: Some(Phase::RolledBack),
                phase_started_at: Some(Time(ts(170))),
                plan: Some(versions("v1.5.0", "v2.0.0")),
                snapshots: vec![snapshot("data-db-0"), snapshot("data-db-1")],
                commit: Some(CommitRecord {
                    sha: "aaaaaaaaaaaaaaaaaaaa".into(),
                    message: "up".into(),
                    url: None,
                }),
                failure: Some(Failure {
                    phase: Phase::Verify,
                    reason: "HealthCheckFailed".into(),
                    message: "pods not ready".into(),
                    retryable: false,
                }),
                ..RequestStatus::default()
            }),
        };
        let pending = HistoryEntry {
            kind: OperationKind::UpgradeRequest,
            name: "db-3".into(),
            created: ts(200),
            dry_run: true,
            undoes: None,
            requested: Some("v1.6.0".into()),
            status: None,
        };
        let text = render("db", "apps", &[pending, rollback, failed], ts(230));
        let expected = "\
CREATED (UTC)         KIND               NAME            OUTCOME                          VERSIONS          SNAPSHOTS   COMMIT         DURATION
2027-01-15 08:00:50   upgrade            db-2            RolledBack (HealthCheckFailed)   v1.5.0 → v2.0.0   2 ready     aaaaaaaaaaaa   2m00s
2027-01-15 08:01:40   rollback of db-2   db-2-rollback   Succeeded                        v2.0.0 → v1.5.0   -           bbbbbbbbbbbb   1m00s
2027-01-15 08:03:20   upgrade            db-3            Pending [dry run]                → v1.6.0          -           -              running 30s
";
        assert_eq!(text, expected);
    }

    #[test]
    fn requests_created_in_the_same_second_are_listed_in_the_order_they_ran() {
        let finished = |name: &str, end: i64| HistoryEntry {
            kind: OperationKind::UpgradeRequest,
            name: name.into(),
            created: ts(0),
            dry_run: false,
            undoes: None,
            requested: None,
            status: Some(RequestStatus {
                phase: Some(Phase::Succeeded),
                phase_started_at: Some(Time(ts(end))),
                ..RequestStatus::default()
            }),
        };
        let mut entries = [finished("a-queued", 9), finished("z-first", 4)];
        entries.sort_by(chronological);
        assert_eq!(entries[0].name, "z-first");
    }

    #[test]
    fn no_history_says_how_to_start() {
        let text = render("db", "apps", &[], ts(0));
        assert!(
            text.contains("fluxgate upgrade db -n apps --to <version>"),
            "{text}"
        );
    }
}
