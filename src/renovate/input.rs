//! Reads a set of inputs (ConfigMap keys or files): bounds their size, tells a report file
//! from a log, and merges what they hold into one deduplicated list of findings.

use super::log;
use super::model::{
    Finding, InputKind, MAX_INPUT_BYTES, Reader, SourceSummary, Summary, merge_update,
};
use super::report;
use serde_json::Value;
use std::collections::BTreeMap;

/// Input that cannot be read at all; everything smaller is reported in [`Summary`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error(
        "the Renovate output is {size} bytes ({sources}), over the {limit}-byte limit; \
         keep only the `packageFiles with updates` lines or use reportType: file"
    )]
    TooLarge {
        size: usize,
        limit: usize,
        sources: String,
    },
}

impl InputError {
    /// A static name for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "renovate_input_too_large",
        }
    }
}

/// The findings of all inputs, and what was skipped on the way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Deduplicated by (repository, base branch, package file, dep name, current value),
    /// sorted by the same key.
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

/// Reads every `(source name, content)` input, detecting report or log per input, and
/// merges them. Only the total size is fatal; malformed parts are counted in the summary.
pub fn parse_inputs(inputs: &[(&str, &str)]) -> Result<Parsed, InputError> {
    let size: usize = inputs.iter().map(|(_, content)| content.len()).sum();
    if size > MAX_INPUT_BYTES {
        let sources = inputs
            .iter()
            .map(|(name, content)| format!("{name}: {} bytes", content.len()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(InputError::TooLarge {
            size,
            limit: MAX_INPUT_BYTES,
            sources,
        });
    }
    let mut summary = Summary::default();
    let mut findings = Vec::new();
    for (name, content) in inputs {
        let mut reader = Reader {
            source: name,
            line: None,
            summary: &mut summary,
        };
        let source = read_one(&mut reader, content, &mut findings);
        summary.sources.push(source);
    }
    Ok(Parsed {
        findings: dedupe(findings),
        summary,
    })
}

fn read_one(reader: &mut Reader<'_>, content: &str, out: &mut Vec<Finding>) -> SourceSummary {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        reader
            .summary
            .warnings
            .push(format!("{}: empty; no updates were read", reader.source));
        let mut source = SourceSummary::new(reader.source, InputKind::Empty);
        source.unusable = Some("empty".to_owned());
        return source;
    }
    // A report is one (usually pretty-printed) document; a log is one object per line and
    // does not parse as a whole unless it has exactly one line.
    let mut as_document = None;
    if trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(document) if report::is_report(&document) => {
                let mut source = SourceSummary::new(reader.source, InputKind::Report);
                source.used = report::read_report(reader, &document, "", out);
                if !document["repositories"].is_object() {
                    source.unusable = Some("its `repositories` is not an object".to_owned());
                }
                return source;
            }
            Ok(_) => {}
            Err(err) => as_document = Some(err),
        }
    }
    let mut source = log::read_log(reader, content, out);
    if source.used == 0 {
        let warning = match as_document {
            // Mostly not JSON lines, and not a document either: most likely a pretty-printed
            // report that was cut short (a ConfigMap holds at most 1 MiB). A few of its
            // lines may parse on their own (`{"level": 40, "msg": …},` does not, but an
            // entry without the comma does), so the test is "mostly".
            Some(err) if source.malformed_lines * 2 > source.lines => {
                reader.line = Some(err.line());
                reader.problem("", format!("not valid JSON: {err}"));
                reader.line = None;
                format!(
                    "neither a log nor a valid report: as a report it is not valid JSON \
                     ({err}); was it cut at the ConfigMap's 1 MiB limit?"
                )
            }
            _ => log::no_updates_warning(&source),
        };
        reader
            .summary
            .warnings
            .push(format!("{}: {warning}", reader.source));
        source.unusable = Some(warning);
    }
    source
}

type Key = (String, Option<String>, String, String, String);

/// Merges the same dependency reported by several managers (or inputs): the managers are
/// listed together and the updates are deduplicated by value and digest.
fn dedupe(findings: Vec<Finding>) -> Vec<Finding> {
    let mut merged: BTreeMap<Key, Finding> = BTreeMap::new();
    for finding in findings {
        let key = (
            finding.repository.clone(),
            finding.base_branch.clone(),
            finding.package_file.clone(),
            finding.dep_name.clone(),
            finding.current_value.clone(),
        );
        match merged.get_mut(&key) {
            None => {
                merged.insert(key, finding);
            }
            Some(existing) => {
                for manager in finding.managers {
                    if !existing.managers.contains(&manager) {
                        existing.managers.push(manager);
                    }
                }
                existing.managers.sort();
                existing.package_name = existing.package_name.take().or(finding.package_name);
                existing.current_digest = existing.current_digest.take().or(finding.current_digest);
                existing.datasource = existing.datasource.take().or(finding.datasource);
                for update in finding.updates {
                    merge_update(&mut existing.updates, update);
                }
                for other in finding.not_offered {
                    if !existing.not_offered.contains(&other) {
                        existing.not_offered.push(other);
                    }
                }
            }
        }
    }
    merged.into_values().collect()
}
