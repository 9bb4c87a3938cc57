//! Reads Renovate's report file (`reportType: file`): one JSON document whose
//! `repositories.<owner/repo>.packageFiles` has the same shape as the log line's `config`.

use super::model::{Finding, Reader, kind};
use serde_json::Value;

/// Whether a parsed JSON document looks like a report (it has `repositories`).
pub(crate) fn is_report(document: &Value) -> bool {
    document.get("repositories").is_some()
}

/// Reads every repository of a report into `out`; returns how many repositories were read.
/// `at` prefixes locations in problems (empty for a report file, `report` for a report
/// embedded in a log line).
pub(crate) fn read_report(
    reader: &mut Reader<'_>,
    document: &Value,
    at: &str,
    out: &mut Vec<Finding>,
) -> usize {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    collect_problems(reader, document.get("problems"));
    let repositories = match document.get("repositories") {
        Some(Value::Object(repositories)) => repositories,
        Some(other) => {
            reader.problem(
                &join("repositories"),
                format!("expected an object of repositories, found {}", kind(other)),
            );
            return 0;
        }
        None => {
            reader.problem(at, "not a Renovate report: no `repositories`");
            return 0;
        }
    };
    let mut read = 0;
    for (repository, entry) in repositories {
        let at = format!("{}[{repository:?}]", join("repositories"));
        let Value::Object(entry) = entry else {
            reader.problem(&at, format!("expected an object, found {}", kind(entry)));
            continue;
        };
        collect_problems(reader, entry.get("problems"));
        match entry.get("packageFiles") {
            // A repository Renovate could not process has problems and no package files.
            None | Some(Value::Null) => {}
            Some(package_files) => {
                let at = format!("{at}.packageFiles");
                reader.package_files(package_files, &at, repository, None, out);
            }
        }
        read += 1;
    }
    read
}

/// Keeps the messages of Renovate's own `problems` (e.g. a repository it could not clone),
/// so they can be shown next to Fluxgate's.
fn collect_problems(reader: &mut Reader<'_>, problems: Option<&Value>) {
    let Some(Value::Array(problems)) = problems else {
        return;
    };
    for problem in problems.iter().take(super::model::MAX_PROBLEMS_KEPT) {
        let message = problem
            .get("message")
            .or_else(|| problem.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        let text: String = message.chars().take(256).collect();
        if reader.summary.renovate_problems.len() < super::model::MAX_PROBLEMS_KEPT {
            reader
                .summary
                .renovate_problems
                .push(format!("{}: {text}", reader.source));
        }
    }
}
