//! Reads Renovate's JSON log (Bunyan NDJSON): picks the debug-level
//! `packageFiles with updates` lines, newest per repository and branch, and counts the rest.

use super::model::{Finding, InputKind, Reader, SourceSummary, kind};
use super::report;
use jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;

/// The message of the line that carries the lookup results.
pub const UPDATES_MSG: &str = "packageFiles with updates";
/// The message of `reportType: logging`, whose `report` field holds a whole report.
pub const REPORT_MSG: &str = "Printing report";

/// Bunyan's numeric levels by name.
fn level_name(level: Option<&Value>) -> &'static str {
    match level.and_then(Value::as_u64) {
        Some(10) => "trace",
        Some(20) => "debug",
        Some(30) => "info",
        Some(40) => "warn",
        Some(50) => "error",
        Some(60) => "fatal",
        _ => "other",
    }
}

/// One `packageFiles with updates` line, before the newest per repository is chosen.
struct Snapshot {
    line: usize,
    time: Option<Timestamp>,
    repository: String,
    base_branch: Option<String>,
    config: Value,
}

/// Reads a whole log. Only the newest line per (repository, base branch) is used: a log
/// that holds several runs must not resurrect updates a later run no longer lists.
pub(crate) fn read_log(
    reader: &mut Reader<'_>,
    text: &str,
    out: &mut Vec<Finding>,
) -> SourceSummary {
    let mut summary = SourceSummary::new(reader.source, InputKind::Log);
    let mut snapshots: BTreeMap<(String, Option<String>), Snapshot> = BTreeMap::new();
    let mut reports = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        summary.lines += 1;
        let line_no = index + 1;
        reader.line = Some(line_no);
        let value = match serde_json::from_str::<Value>(line) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                summary.malformed_lines += 1;
                continue;
            }
        };
        *summary
            .levels
            .entry(level_name(value.get("level")).to_owned())
            .or_default() += 1;
        match value.get("msg").and_then(Value::as_str) {
            Some(UPDATES_MSG) => {
                if let Some(snapshot) = snapshot(reader, line_no, value) {
                    let key = (snapshot.repository.clone(), snapshot.base_branch.clone());
                    match snapshots.get(&key) {
                        Some(old) if is_newer(old, &snapshot) => summary.superseded += 1,
                        Some(_) => {
                            summary.superseded += 1;
                            snapshots.insert(key, snapshot);
                        }
                        None => {
                            snapshots.insert(key, snapshot);
                        }
                    }
                }
            }
            Some(REPORT_MSG) => {
                if let Some(embedded) = value.get("report") {
                    reports += report::read_report(reader, embedded, "report", out);
                }
            }
            _ => {}
        }
    }
    for snapshot in snapshots.into_values() {
        reader.line = Some(snapshot.line);
        reader.package_files(
            &snapshot.config,
            "config",
            &snapshot.repository,
            snapshot.base_branch.as_deref(),
            out,
        );
        summary.used += 1;
    }
    reader.line = None;
    summary.used += reports;
    summary
}

/// Whether `old` is newer than `new` (by `time`, else by position: later lines are newer).
fn is_newer(old: &Snapshot, new: &Snapshot) -> bool {
    match (old.time, new.time) {
        (Some(old_time), Some(new_time)) if old_time != new_time => old_time > new_time,
        _ => old.line > new.line,
    }
}

fn snapshot(reader: &mut Reader<'_>, line: usize, mut value: Value) -> Option<Snapshot> {
    let repository = match value.get("repository") {
        Some(Value::String(repository)) if !repository.is_empty() && repository.len() <= 1024 => {
            repository.clone()
        }
        other => {
            let found = other.map_or("nothing", kind);
            reader.problem(
                "repository",
                format!("expected the repository name, found {found}; the line is skipped"),
            );
            return None;
        }
    };
    // Renovate's `local` platform logs `"baseBranch": ""`: the branch is unknown.
    let base_branch = value
        .get("baseBranch")
        .and_then(Value::as_str)
        .filter(|branch| !branch.is_empty() && branch.len() <= 1024)
        .map(str::to_owned);
    let time = value
        .get("time")
        .and_then(Value::as_str)
        .and_then(|text| text.parse::<Timestamp>().ok());
    let config = match value.get_mut("config") {
        Some(config) => config.take(),
        None => {
            reader.problem("config", "the line has no `config`; it is skipped");
            return None;
        }
    };
    Some(Snapshot {
        line,
        time,
        repository,
        base_branch,
        config,
    })
}

/// The warning for a log without a usable line, naming the likely setup mistake.
pub(crate) fn no_updates_warning(summary: &SourceSummary) -> String {
    let debug_lines = summary.levels.get("debug").copied().unwrap_or(0)
        + summary.levels.get("trace").copied().unwrap_or(0);
    if summary.lines == 0 {
        "the log is empty; no updates were read".to_owned()
    } else if summary.malformed_lines == summary.lines {
        format!(
            "none of its {} lines is JSON: run Renovate with LOG_FORMAT=json (and \
             LOG_LEVEL=debug), or use reportType: file",
            summary.lines
        )
    } else if summary.levels.keys().all(|level| level == "other") {
        "none of its lines is a Renovate log line (no Bunyan `level`) and it is not a report \
         (no `repositories`): is this the right ConfigMap key or file?"
            .to_owned()
    } else if debug_lines == 0 {
        format!(
            "no `{UPDATES_MSG}` line and no debug-level line: Renovate logged at info level, \
             where that line is absent. Run it with LOG_LEVEL=debug and LOG_FORMAT=json, or \
             use reportType: file"
        )
    } else {
        format!(
            "no `{UPDATES_MSG}` line although the log is at debug level: the run may have \
             failed before looking up updates (look for error lines), or the log was cut \
             before that line"
        )
    }
}
