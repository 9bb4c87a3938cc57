//! The normalised findings both Renovate outputs are read into, the summary of what was read
//! and skipped, and the bounded, field-by-field reading of Renovate's `packageFiles` shape
//! that the report file and the log line share.

use jiff::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Largest total input read in one call (all sources together). Renovate's output for a
/// few hundred dependencies is tens of kilobytes; a ConfigMap holds at most 1 MiB.
pub const MAX_INPUT_BYTES: usize = 8 * 1024 * 1024;
/// Longest string field accepted (names, values, digests, paths); longer ones are refused
/// with a problem so a runaway value cannot end up in the status.
pub const MAX_STRING_BYTES: usize = 1024;
/// Most dependencies read from one call, over all sources.
pub const MAX_DEPS: usize = 20_000;
/// Most updates read for one dependency.
pub const MAX_UPDATES_PER_DEP: usize = 64;
/// Most problems kept with their text; the rest are only counted.
pub const MAX_PROBLEMS_KEPT: usize = 100;

/// One dependency Renovate found in one package file, with the updates it offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The repository as Renovate names it (`owner/repo`; `local` for its local platform).
    pub repository: String,
    /// The branch Renovate looked at; the report file does not say.
    pub base_branch: Option<String>,
    /// Managers that reported this dependency (sorted; several when two managers match one
    /// file, e.g. `flux` and `helm-values`).
    pub managers: Vec<String>,
    /// Repository-relative path, normalised (no `./`, no `..`, not absolute).
    pub package_file: String,
    pub dep_name: String,
    pub package_name: Option<String>,
    /// The value exactly as written in the file (for digest-pinned values, the tag only).
    pub current_value: String,
    pub current_digest: Option<String>,
    pub datasource: Option<String>,
    /// Version moves only (see [`RenovateUpdateType::is_offered`]), deduplicated by value
    /// and digest.
    pub updates: Vec<Update>,
    /// The updates Renovate proposed that are not version moves, with why.
    pub not_offered: Vec<NotOffered>,
}

/// The name Renovate's `local` platform gives the repository it looks at (the working
/// directory): it names no repository.
pub const LOCAL_REPOSITORY: &str = "local";

impl Finding {
    /// The repository, when Renovate named one: not empty, not the `local` platform's
    /// placeholder.
    pub fn named_repository(&self) -> Option<&str> {
        let name = self.repository.trim();
        (!name.is_empty() && name != LOCAL_REPOSITORY).then_some(name)
    }

    /// The first manager that reported the dependency, for messages.
    pub fn manager(&self) -> &str {
        self.managers.first().map_or("", String::as_str)
    }
}

/// One update Renovate offers for a dependency.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub update_type: RenovateUpdateType,
    /// The value as it would be written (the tag, for digest-pinned values).
    pub new_value: String,
    pub new_digest: Option<String>,
    pub new_version: Option<String>,
    pub release_timestamp: Option<Timestamp>,
    pub bucket: Option<String>,
    pub is_breaking: bool,
    /// The manager whose entry carried this update.
    pub manager: String,
}

/// Renovate's update types (`updateType`).
///
/// Fluxgate offers the ones that move a version ([`RenovateUpdateType::is_offered`]); the
/// others are kept on the finding so a person can be told why they are not offered:
/// `pinDigest` adds a digest to the same version, `rollback` goes *down* to the newest
/// version still published, `replacement` swaps the package (or a Kubernetes `apiVersion`)
/// for another, and `lockFileMaintenance` has no value at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RenovateUpdateType {
    Patch,
    Minor,
    Major,
    /// Same tag, new digest: applies only to a field that pins a digest.
    Digest,
    /// A range bumped to a new version (`rangeStrategy: bump`): still a version move.
    Bump,
    /// A range or a floating tag replaced by the exact version it resolves to.
    Pin,
    PinDigest,
    Rollback,
    Replacement,
    LockFileMaintenance,
}

impl RenovateUpdateType {
    /// Reads Renovate's `updateType`; `None` for a type Renovate 39 does not have.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "patch" => Some(Self::Patch),
            "minor" => Some(Self::Minor),
            "major" => Some(Self::Major),
            "digest" => Some(Self::Digest),
            "bump" => Some(Self::Bump),
            "pin" => Some(Self::Pin),
            "pinDigest" => Some(Self::PinDigest),
            "rollback" => Some(Self::Rollback),
            "replacement" => Some(Self::Replacement),
            "lockFileMaintenance" => Some(Self::LockFileMaintenance),
            _ => None,
        }
    }

    /// Renovate's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patch => "patch",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Digest => "digest",
            Self::Bump => "bump",
            Self::Pin => "pin",
            Self::PinDigest => "pinDigest",
            Self::Rollback => "rollback",
            Self::Replacement => "replacement",
            Self::LockFileMaintenance => "lockFileMaintenance",
        }
    }

    /// Whether an update of this type moves the field to another version, so Fluxgate may
    /// offer it.
    pub fn is_offered(self) -> bool {
        matches!(
            self,
            Self::Patch | Self::Minor | Self::Major | Self::Digest | Self::Bump | Self::Pin
        )
    }

    /// Why an update of this type is not offered (for types that are not).
    pub fn why_not_offered(self) -> &'static str {
        match self {
            Self::PinDigest => "it adds a digest to the same version; pin it in Git yourself",
            Self::Rollback => {
                "it goes down to an older version; use a RollbackRequest, or an UpgradeRequest naming that version"
            }
            Self::Replacement => {
                "it replaces the package with another; Fluxgate changes versions, never what is deployed"
            }
            Self::LockFileMaintenance => "it has no version",
            _ => "",
        }
    }
}

/// An update Renovate proposed that Fluxgate does not offer, kept to say why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOffered {
    /// Renovate's type, or `apiVersion` for a Kubernetes API version move.
    pub kind: String,
    pub new_value: String,
    pub reason: &'static str,
}

/// The reason an `apiVersion` move is never offered: the `kubernetes` manager types it as a
/// version update (`batch/v1beta1` → `batch/v1` as `patch`), but it changes the object's
/// schema, not the app's version.
pub const API_VERSION_MOVE: &str = "it moves a Kubernetes apiVersion (datasource kubernetes-api), which changes the manifest's schema, not the app's version";

/// Something in the input that was refused or could not be read; reading goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The input it came from (a ConfigMap key or a file name).
    pub source: String,
    /// 1-based line of a log; `None` for a report file.
    pub line: Option<usize>,
    /// Where in the JSON, e.g. `config.flux[0].deps[2].updates[1].newValue`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if !self.location.is_empty() {
            write!(f, " at {}", self.location)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// How an input was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A `reportType: file` report (one JSON document with `repositories`).
    Report,
    /// Renovate's NDJSON log (Bunyan lines).
    Log,
    /// Nothing but whitespace.
    Empty,
}

/// What one input held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    pub name: String,
    pub kind: InputKind,
    /// Non-blank lines of a log (0 for a report).
    pub lines: usize,
    /// `packageFiles with updates` lines read (a log), or repositories read (a report).
    pub used: usize,
    /// Older `packageFiles with updates` lines superseded by a newer one for the same
    /// repository and branch.
    pub superseded: usize,
    /// Lines that are not a JSON object.
    pub malformed_lines: usize,
    /// Log lines by level name (`debug`, `info`, …; `other` for unknown levels).
    pub levels: BTreeMap<String, usize>,
    /// Why nothing in this input can be trusted to say what Renovate found (empty, cut
    /// short, not Renovate's output, a log without the findings line): `None` when usable.
    pub unusable: Option<String>,
}

impl SourceSummary {
    pub(crate) fn new(name: &str, kind: InputKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            lines: 0,
            used: 0,
            superseded: 0,
            malformed_lines: 0,
            levels: BTreeMap::new(),
            unusable: None,
        }
    }
}

/// What was read, skipped and refused, for logs, events and the operator's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sources: Vec<SourceSummary>,
    /// Dependencies read (before deduplication across managers).
    pub deps: usize,
    /// Dependencies Renovate skipped, by `skipReason`.
    pub skipped_deps: BTreeMap<String, usize>,
    /// Updates not offered because they are not version moves, by `updateType` (or
    /// `apiVersion`, or `unknown:<type>` for a type Renovate 39 does not have).
    pub ignored_updates: BTreeMap<String, usize>,
    /// The first [`MAX_PROBLEMS_KEPT`] problems.
    pub problems: Vec<Problem>,
    /// All problems, including those not kept.
    pub problem_count: usize,
    /// Problems Renovate itself reported in a report file.
    pub renovate_problems: Vec<String>,
    /// Setup mistakes worth telling a person about (e.g. info-level logging).
    pub warnings: Vec<String>,
}

impl Summary {
    pub(crate) fn problem(&mut self, problem: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS_KEPT {
            self.problems.push(problem);
        }
    }

    /// Why the inputs cannot be used, one entry per unusable source (empty when all are
    /// usable).
    pub fn unusable(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| Some(format!("{}: {}", s.name, s.unusable.as_ref()?)))
            .collect()
    }

    /// Malformed lines over all sources.
    pub fn malformed_lines(&self) -> usize {
        self.sources.iter().map(|s| s.malformed_lines).sum()
    }
}

/// One line for logs and events, e.g. `renovate.log: log, 1 of 9 lines used, 3 malformed;
/// 42 deps, 5 skipped (local-chart 1, unknown-registry 4); 2 problems`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = |map: &BTreeMap<String, usize>| {
            map.iter()
                .map(|(key, count)| format!("{key} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for source in &self.sources {
            match source.kind {
                InputKind::Empty => write!(f, "{}: empty; ", source.name)?,
                InputKind::Report => {
                    write!(f, "{}: report, {} repositories; ", source.name, source.used)?
                }
                InputKind::Log => {
                    write!(
                        f,
                        "{}: log, {} of {} lines used",
                        source.name, source.used, source.lines
                    )?;
                    if source.superseded > 0 {
                        write!(f, ", {} superseded", source.superseded)?;
                    }
                    if source.malformed_lines > 0 {
                        write!(f, ", {} malformed", source.malformed_lines)?;
                    }
                    write!(f, "; ")?;
                }
            }
        }
        write!(f, "{} deps", self.deps)?;
        let skipped: usize = self.skipped_deps.values().sum();
        if skipped > 0 {
            write!(f, ", {skipped} skipped ({})", counts(&self.skipped_deps))?;
        }
        let ignored: usize = self.ignored_updates.values().sum();
        if ignored > 0 {
            write!(
                f,
                "; {ignored} updates ignored ({})",
                counts(&self.ignored_updates)
            )?;
        }
        if self.problem_count > 0 {
            write!(f, "; {} problems", self.problem_count)?;
        }
        if !self.warnings.is_empty() {
            write!(f, "; {} warnings", self.warnings.len())?;
        }
        Ok(())
    }
}

/// Where reading is: the source, the line and the running totals it adds to.
pub(crate) struct Reader<'a> {
    pub source: &'a str,
    pub line: Option<usize>,
    pub summary: &'a mut Summary,
}

impl Reader<'_> {
    pub fn problem(&mut self, location: &str, message: impl Into<String>) {
        let problem = Problem {
            source: self.source.to_owned(),
            line: self.line,
            location: location.to_owned(),
            message: message.into(),
        };
        self.summary.problem(problem);
    }

    /// An optional string field, bounded; a wrong type or an over-long value is a problem
    /// and reads as absent.
    fn string(&mut self, object: &Map<String, Value>, key: &str, at: &str) -> Option<String> {
        match object.get(key)? {
            Value::Null => None,
            Value::String(text) if text.len() > MAX_STRING_BYTES => {
                self.problem(
                    &format!("{at}.{key}"),
                    format!(
                        "{} bytes, over the {MAX_STRING_BYTES}-byte limit",
                        text.len()
                    ),
                );
                None
            }
            Value::String(text) if text.trim().is_empty() => None,
            Value::String(text) => Some(text.clone()),
            other => {
                self.problem(
                    &format!("{at}.{key}"),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A string field the entry cannot do without: absent → one problem saying the entry is
    /// skipped; present but invalid → the problem [`Reader::string`] reported.
    fn required(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        at: &str,
        what: &str,
    ) -> Option<String> {
        let value = self.string(object, key, at);
        if value.is_none() && matches!(object.get(key), None | Some(Value::Null)) {
            self.problem(at, format!("{what} without `{key}` is skipped"));
        }
        value
    }

    /// Reads Renovate's `config` object: manager name → list of package files.
    pub fn package_files(
        &mut self,
        config: &Value,
        at: &str,
        repository: &str,
        base_branch: Option<&str>,
        out: &mut Vec<Finding>,
    ) {
        let Value::Object(managers) = config else {
            self.problem(
                at,
                format!("expected an object of managers, found {}", kind(config)),
            );
            return;
        };
        for (manager, files) in managers {
            let at = format!("{at}.{manager}");
            if manager.len() > MAX_STRING_BYTES {
                self.problem(&at, "manager name over the length limit");
                continue;
            }
            let Value::Array(files) = files else {
                self.problem(
                    &at,
                    format!("expected a list of package files, found {}", kind(files)),
                );
                continue;
            };
            for (index, file) in files.iter().enumerate() {
                let at = format!("{at}[{index}]");
                self.package_file(file, &at, manager, repository, base_branch, out);
            }
        }
    }

    fn package_file(
        &mut self,
        file: &Value,
        at: &str,
        manager: &str,
        repository: &str,
        base_branch: Option<&str>,
        out: &mut Vec<Finding>,
    ) {
        let Value::Object(file) = file else {
            self.problem(at, format!("expected a package file, found {}", kind(file)));
            return;
        };
        let Some(raw_path) = self.required(file, "packageFile", at, "a package file") else {
            return;
        };
        let package_file = match normalize_repo_path(&raw_path) {
            Ok(path) => path,
            Err(reason) => {
                self.problem(&format!("{at}.packageFile"), reason);
                return;
            }
        };
        let file_datasource = self.string(file, "datasource", at);
        let deps = match file.get("deps") {
            None | Some(Value::Null) => return,
            Some(Value::Array(deps)) => deps,
            Some(other) => {
                self.problem(
                    &format!("{at}.deps"),
                    format!("expected a list, found {}", kind(other)),
                );
                return;
            }
        };
        for (index, dep) in deps.iter().enumerate() {
            let at = format!("{at}.deps[{index}]");
            if self.summary.deps >= MAX_DEPS {
                self.problem(
                    &at,
                    format!("more than {MAX_DEPS} dependencies; the rest are not read"),
                );
                return;
            }
            let Value::Object(dep) = dep else {
                self.problem(&at, format!("expected a dependency, found {}", kind(dep)));
                continue;
            };
            self.summary.deps += 1;
            if let Some(reason) = self.string(dep, "skipReason", &at) {
                *self.summary.skipped_deps.entry(reason).or_default() += 1;
                continue;
            }
            let Some(dep_name) = self.required(dep, "depName", &at, "a dependency") else {
                continue;
            };
            let Some(current_value) = self.string(dep, "currentValue", &at) else {
                // Renovate omits it for dependencies it cannot version (e.g. an image without
                // a tag); there is nothing Fluxgate could match.
                *self
                    .summary
                    .skipped_deps
                    .entry("no-current-value".to_owned())
                    .or_default() += 1;
                continue;
            };
            let datasource = self
                .string(dep, "datasource", &at)
                .or_else(|| file_datasource.clone());
            let (updates, not_offered) =
                self.updates(dep, &at, manager, &dep_name, datasource.as_deref());
            let finding = Finding {
                repository: repository.to_owned(),
                base_branch: base_branch.map(str::to_owned),
                managers: vec![manager.to_owned()],
                package_file: package_file.clone(),
                package_name: self.string(dep, "packageName", &at),
                current_digest: self.string(dep, "currentDigest", &at),
                datasource,
                updates,
                not_offered,
                dep_name,
                current_value,
            };
            out.push(finding);
        }
    }

    /// The dependency's updates: the version moves, and the others with why they are not.
    fn updates(
        &mut self,
        dep: &Map<String, Value>,
        at: &str,
        manager: &str,
        dep_name: &str,
        datasource: Option<&str>,
    ) -> (Vec<Update>, Vec<NotOffered>) {
        let updates = match dep.get("updates") {
            None | Some(Value::Null) => return (Vec::new(), Vec::new()),
            Some(Value::Array(updates)) => updates,
            Some(other) => {
                self.problem(
                    &format!("{at}.updates"),
                    format!("expected a list, found {}", kind(other)),
                );
                return (Vec::new(), Vec::new());
            }
        };
        let mut out: Vec<Update> = Vec::new();
        let mut not_offered: Vec<NotOffered> = Vec::new();
        for (index, update) in updates.iter().enumerate() {
            let at = format!("{at}.updates[{index}]");
            if index >= MAX_UPDATES_PER_DEP {
                self.problem(
                    &at,
                    format!("more than {MAX_UPDATES_PER_DEP} updates; the rest are not read"),
                );
                break;
            }
            let Value::Object(update) = update else {
                self.problem(&at, format!("expected an update, found {}", kind(update)));
                continue;
            };
            let Some(type_text) = self.required(update, "updateType", &at, "an update") else {
                continue;
            };
            let Some(update_type) = RenovateUpdateType::parse(&type_text) else {
                *self
                    .summary
                    .ignored_updates
                    .entry(format!("unknown:{type_text}"))
                    .or_default() += 1;
                continue;
            };
            let new_value = self.string(update, "newValue", &at);
            // A new package name makes any update a replacement, whatever its type says.
            let renamed = self
                .string(update, "newName", &at)
                .filter(|name| name != dep_name);
            let refusal = if datasource == Some("kubernetes-api") {
                Some(("apiVersion".to_owned(), API_VERSION_MOVE))
            } else if renamed.is_some() {
                Some((
                    RenovateUpdateType::Replacement.as_str().to_owned(),
                    RenovateUpdateType::Replacement.why_not_offered(),
                ))
            } else if !update_type.is_offered() {
                Some((type_text.clone(), update_type.why_not_offered()))
            } else {
                None
            };
            if let Some((kind, reason)) = refusal {
                *self
                    .summary
                    .ignored_updates
                    .entry(kind.clone())
                    .or_default() += 1;
                let new_value = match (&renamed, &new_value) {
                    (Some(name), Some(value)) => format!("{name}:{value}"),
                    (Some(name), None) => name.clone(),
                    (None, value) => value.clone().unwrap_or_default(),
                };
                not_offered.push(NotOffered {
                    kind,
                    new_value,
                    reason,
                });
                continue;
            }
            let Some(new_value) = new_value else {
                if matches!(update.get("newValue"), None | Some(Value::Null)) {
                    self.problem(&at, "an update without `newValue` is skipped");
                }
                continue;
            };
            let release_timestamp = match self.string(update, "releaseTimestamp", &at) {
                None => None,
                Some(text) => match parse_timestamp(&text) {
                    Some(timestamp) => Some(timestamp),
                    None => {
                        self.problem(
                            &format!("{at}.releaseTimestamp"),
                            format!(
                                "`{text}` is not an ISO 8601 time; the release time is unknown"
                            ),
                        );
                        None
                    }
                },
            };
            let is_breaking = match update.get("isBreaking") {
                Some(Value::Bool(value)) => *value,
                None | Some(Value::Null) => false,
                Some(other) => {
                    self.problem(
                        &format!("{at}.isBreaking"),
                        format!("expected true or false, found {}", kind(other)),
                    );
                    false
                }
            };
            let update = Update {
                update_type,
                new_digest: self.string(update, "newDigest", &at),
                new_version: self.string(update, "newVersion", &at),
                bucket: self.string(update, "bucket", &at),
                release_timestamp,
                is_breaking,
                manager: manager.to_owned(),
                new_value,
            };
            merge_update(&mut out, update);
        }
        (out, not_offered)
    }
}

/// Adds `update` unless one with the same value and digest is there already (then the
/// known facts are merged: a release time one manager has and the other lacks is kept).
pub(crate) fn merge_update(updates: &mut Vec<Update>, update: Update) {
    match updates
        .iter_mut()
        .find(|u| u.new_value == update.new_value && u.new_digest == update.new_digest)
    {
        Some(existing) => {
            if existing.release_timestamp.is_none() {
                existing.release_timestamp = update.release_timestamp;
            }
            if existing.new_version.is_none() {
                existing.new_version = update.new_version;
            }
            if existing.bucket.is_none() {
                existing.bucket = update.bucket;
            }
            existing.is_breaking |= update.is_breaking;
        }
        None => updates.push(update),
    }
}

/// Renovate writes `2026-11-02T10:00:00.000Z`; some datasources give an offset instead of
/// `Z`, or a bare date.
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp);
    }
    let date: jiff::civil::Date = text.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Normalises a repository-relative path so Renovate's `packageFile` and a ManagedApp's
/// `file` compare equal however they are written: `./` and `.` segments and doubled
/// slashes go; absolute paths, backslashes and `..` are refused (they cannot name a file
/// inside the repository).
pub fn normalize_repo_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err(format!(
            "`{path}` is absolute; expected a repository-relative path"
        ));
    }
    if path.contains('\\') {
        return Err(format!("`{path}` contains a backslash"));
    }
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(format!("`{path}` climbs out with `..`")),
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        return Err(format!("`{path}` names no file"));
    }
    Ok(segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_normalise_and_refuse_escapes() {
        for (input, expected) in [
            ("apps/db/helmrelease.yaml", "apps/db/helmrelease.yaml"),
            ("./apps/db/helmrelease.yaml", "apps/db/helmrelease.yaml"),
            ("apps//db/./helmrelease.yaml", "apps/db/helmrelease.yaml"),
            ("././kustomization.yaml", "kustomization.yaml"),
        ] {
            assert_eq!(
                normalize_repo_path(input).as_deref(),
                Ok(expected),
                "{input}"
            );
        }
        for bad in [
            "/etc/passwd",
            "../other/file.yaml",
            "apps/../../x",
            "apps\\db.yaml",
            "./",
            "",
        ] {
            assert!(normalize_repo_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_with_z_offset_or_date_only() {
        let expected: Timestamp = "2026-11-02T10:00:00Z".parse().expect("valid");
        assert_eq!(parse_timestamp("2026-11-02T10:00:00.000Z"), Some(expected));
        assert_eq!(parse_timestamp("2026-11-02T12:00:00+02:00"), Some(expected));
        assert_eq!(
            parse_timestamp("2026-11-02"),
            "2026-11-02T00:00:00Z".parse().ok()
        );
        assert_eq!(parse_timestamp("last tuesday"), None);
    }

    #[test]
    fn only_version_moves_are_offered() {
        for moves in ["patch", "minor", "major", "digest", "bump", "pin"] {
            let parsed = RenovateUpdateType::parse(moves).expect(moves);
            assert_eq!(parsed.as_str(), moves);
            assert!(parsed.is_offered(), "{moves}");
        }
        for other in [
            "pinDigest",
            "rollback",
            "replacement",
            "lockFileMaintenance",
        ] {
            let parsed = RenovateUpdateType::parse(other).expect(other);
            assert_eq!(parsed.as_str(), other);
            assert!(!parsed.is_offered(), "{other}");
            assert!(!parsed.why_not_offered().is_empty(), "{other}");
        }
        assert_eq!(RenovateUpdateType::parse("sideways"), None);
    }
}
