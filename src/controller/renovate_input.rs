//! Renovate's output as the ManagedApp controller reads it: every key of one ConfigMap
//! (kept current by a watch of that object alone) and a mounted file, parsed once per change
//! of their content and shared by every app.

use crate::renovate::model::MAX_INPUT_BYTES;
use crate::renovate::{Parsed, parse_inputs};
use crate::telemetry::metrics::Metrics;
use futures::Stream;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where Renovate's output is read from (flags of `fluxgate run`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenovateSettings {
    /// The ConfigMap as (namespace, name); every key is one input.
    pub configmap: Option<(String, String)>,
    /// A mounted file holding a report or a log.
    pub file: Option<PathBuf>,
}

impl RenovateSettings {
    /// Whether any input is configured.
    pub fn configured(&self) -> bool {
        self.configmap.is_some() || self.file.is_some()
    }

    /// Parses `namespace/name` (the `--renovate-configmap` flag).
    pub fn parse_configmap(text: &str) -> Result<(String, String), String> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok((namespace.to_owned(), name.to_owned()))
            }
            _ => Err(format!(
                "`{text}` is not `namespace/name`: name the ConfigMap Renovate's job writes, e.g. `renovate/renovate-output`"
            )),
        }
    }
}

/// What the inputs hold now.
#[derive(Debug, Clone)]
pub enum RenovateData {
    /// No input is configured: availableUpdate is left alone.
    NotConfigured,
    /// Configured, but nothing is there yet (the job has not run): nothing is cleared.
    Missing(String),
    /// Parsed findings.
    Parsed(Arc<Parsed>),
    /// The inputs cannot be used (the error says why); the last usable ones still speak
    /// for Renovate.
    Stale(Arc<Parsed>, String),
    /// The inputs cannot be used and none could since Fluxgate started: what the apps'
    /// status holds stays, the error is reported.
    Unusable(String),
}

/// What a fresh read of changed inputs found, to tell a person once (a log line, an Event,
/// the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputNews {
    pub usable: bool,
    pub message: String,
}

/// Reads and caches Renovate's output.
pub struct RenovateInput {
    settings: RenovateSettings,
    configmaps: Option<Store<ConfigMap>>,
    metrics: Option<Metrics>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Fingerprint of the last inputs and what they parsed to.
    last: Option<(u64, RenovateData)>,
    /// The last inputs that could be used.
    good: Option<Arc<Parsed>>,
}

impl RenovateInput {
    /// A reader of `settings`' inputs; `configmaps` is the store of the watched ConfigMap;
    /// each fresh read is recorded in `metrics`.
    pub fn new(
        settings: RenovateSettings,
        configmaps: Option<Store<ConfigMap>>,
        metrics: Option<Metrics>,
    ) -> Self {
        RenovateInput {
            settings,
            configmaps,
            metrics,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The data now: parsed again only when the inputs' content changed, and then with
    /// news of what was read.
    pub fn read(&self) -> (RenovateData, Option<InputNews>) {
        if !self.settings.configured() {
            return (RenovateData::NotConfigured, None);
        }
        let inputs = self.inputs();
        if inputs.as_ref().is_ok_and(Vec::is_empty) {
            let missing = format!("no Renovate output yet in {}", self.describe());
            return (RenovateData::Missing(missing), None);
        }
        let mut hasher = DefaultHasher::new();
        inputs.hash(&mut hasher);
        let fingerprint = hasher.finish();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((seen, data)) = cache.last.as_ref()
                && *seen == fingerprint
            {
                return (data.clone(), None);
            }
        }
        let parsed = inputs.and_then(|inputs| {
            let borrowed: Vec<(&str, &str)> = inputs
                .iter()
                .map(|(name, text)| (name.as_str(), text.as_str()))
                .collect();
            parse_inputs(&borrowed).map_err(|e| e.to_string())
        });
        self.settle(fingerprint, parsed)
    }

    /// Decides what a fresh read means: usable inputs replace the last good ones; unusable
    /// ones never do. Records the news in the log and the metrics.
    fn settle(
        &self,
        fingerprint: u64,
        parsed: Result<Parsed, String>,
    ) -> (RenovateData, Option<InputNews>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (parsed, unusable) = match parsed {
            Ok(parsed) => {
                let unusable = parsed.summary.unusable();
                (Some(parsed), unusable)
            }
            Err(error) => (None, vec![error]),
        };
        let all_empty = parsed.as_ref().is_some_and(|p| {
            p.summary
                .sources
                .iter()
                .all(|s| s.kind == crate::renovate::model::InputKind::Empty)
        });
        let (data, news) = match parsed {
            Some(parsed) if unusable.is_empty() => {
                let message = format!("Renovate input read: {}", parsed.summary);
                self.record(true, Some(&parsed));
                let parsed = Arc::new(parsed);
                cache.good = Some(parsed.clone());
                (
                    RenovateData::Parsed(parsed),
                    InputNews {
                        usable: true,
                        message,
                    },
                )
            }
            parsed => {
                self.record(false, parsed.as_ref());
                let why = unusable.join("; ");
                let (data, message) = match &cache.good {
                    Some(good) => (
                        RenovateData::Stale(good.clone(), why.clone()),
                        format!(
                            "Renovate input not used ({why}); the offers from the last usable \
                             input are kept until a usable one replaces them"
                        ),
                    ),
                    None if all_empty => (
                        RenovateData::Missing(format!(
                            "Renovate's output in {} is empty: nothing yet",
                            self.describe()
                        )),
                        format!("Renovate input is empty in {}", self.describe()),
                    ),
                    None => (
                        RenovateData::Unusable(why.clone()),
                        format!(
                            "Renovate input not used ({why}); no usable input has been read \
                             since Fluxgate started, so the apps' offers are left as they are"
                        ),
                    ),
                };
                (
                    data,
                    InputNews {
                        usable: false,
                        message,
                    },
                )
            }
        };
        if news.usable {
            tracing::info!(message = %news.message, "Renovate input");
        } else {
            tracing::warn!(message = %news.message, "Renovate input");
        }
        cache.last = Some((fingerprint, data.clone()));
        (data, Some(news))
    }

    fn record(&self, usable: bool, parsed: Option<&Parsed>) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let Some(parsed) = parsed else {
            metrics.renovate_read(usable, &[]);
            return;
        };
        let summary = &parsed.summary;
        let sum = |f: fn(&crate::renovate::model::SourceSummary) -> usize| {
            summary.sources.iter().map(f).sum::<usize>()
        };
        metrics.renovate_read(
            usable,
            &[
                ("lines", sum(|s| s.lines)),
                ("used", sum(|s| s.used)),
                ("malformed", sum(|s| s.malformed_lines)),
                ("superseded", sum(|s| s.superseded)),
                ("deps", summary.deps),
                ("skipped_deps", summary.skipped_deps.values().sum()),
                ("ignored_updates", summary.ignored_updates.values().sum()),
                ("problems", summary.problem_count),
                ("findings", parsed.findings.len()),
            ],
        );
    }

    /// The ConfigMap input as an Event's subject, when one is configured and exists.
    pub fn configmap_reference(&self) -> Option<ObjectReference> {
        let (namespace, name) = self.settings.configmap.as_ref()?;
        let configmap = self
            .configmaps
            .as_ref()?
            .get(&ObjectRef::new(name).within(namespace))?;
        Some(configmap.object_ref(&()))
    }

    fn describe(&self) -> String {
        let mut places = Vec::new();
        if let Some((namespace, name)) = &self.settings.configmap {
            places.push(format!("ConfigMap {namespace}/{name}"));
        }
        if let Some(file) = &self.settings.file {
            places.push(format!("file {}", file.display()));
        }
        places.join(" and ")
    }

    /// Every input as (source name, text); absent sources are left out.
    fn inputs(&self) -> Result<Vec<(String, String)>, String> {
        let mut inputs = Vec::new();
        if let (Some((namespace, name)), Some(store)) = (&self.settings.configmap, &self.configmaps)
            && let Some(configmap) = store.get(&ObjectRef::new(name).within(namespace))
        {
            for (key, text) in configmap.data.clone().unwrap_or_default() {
                inputs.push((format!("ConfigMap {namespace}/{name} key {key}"), text));
            }
            if let Some(key) = configmap.binary_data.as_ref().and_then(|b| b.keys().next()) {
                return Err(format!(
                    "ConfigMap {namespace}/{name} key {key} is binaryData; write Renovate's output as text (data)"
                ));
            }
        }
        if let Some(path) = &self.settings.file {
            match std::fs::File::open(path) {
                Ok(file) => {
                    let mut text = String::new();
                    let limit = u64::try_from(MAX_INPUT_BYTES).unwrap_or(u64::MAX) + 1;
                    file.take(limit)
                        .read_to_string(&mut text)
                        .map_err(|e| format!("reading {}: {e}", path.display()))?;
                    if text.len() > MAX_INPUT_BYTES {
                        return Err(format!(
                            "{} is over the {MAX_INPUT_BYTES}-byte limit; keep only the `packageFiles with updates` lines or use reportType: file",
                            path.display()
                        ));
                    }
                    inputs.push((format!("file {}", path.display()), text));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("reading {}: {e}", path.display())),
            }
        }
        Ok(inputs)
    }
}

/// How often a `--renovate-file` is looked at. A mounted ConfigMap changes by swapping a
/// symlink, which a watch on the file itself would miss; a stat every two seconds is cheap
/// and sees any change.
pub const FILE_POLL: Duration = Duration::from_secs(2);

/// What identifies a version of a file: its inode (a swapped symlink lands on a new file),
/// size and modification time. `None` while it does not exist.
fn file_version(path: &Path) -> Option<(u64, u64, Option<SystemTime>)> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((inode, metadata.len(), metadata.modified().ok()))
}

/// Yields each time the file at `path` changes (appears, goes, or is rewritten), looking
/// every `every`.
pub fn file_changes(path: PathBuf, every: Duration) -> impl Stream<Item = ()> + Send {
    let seen = file_version(&path);
    futures::stream::unfold((path, seen), move |(path, seen)| async move {
        loop {
            tokio::time::sleep(every).await;
            let now = file_version(&path);
            if now != seen {
                tracing::debug!(file = %path.display(), "Renovate file changed");
                return Some(((), (path, now)));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"repositories": {"example/fleet": {"branchName": "main", "packageFiles": {"flux": [
        {"packageFile": "clusters/prod/db.yaml", "deps": [{"depName": "db", "currentValue": "v1.4.0",
         "datasource": "docker", "updates": [{"newValue": "v1.5.0", "updateType": "minor"}]}]}]}}}}"#;

    #[test]
    fn configmap_flag_needs_namespace_and_name() {
        assert_eq!(
            RenovateSettings::parse_configmap("renovate/out"),
            Ok(("renovate".into(), "out".into()))
        );
        for bad in ["out", "/out", "renovate/", ""] {
            let error = RenovateSettings::parse_configmap(bad).unwrap_err();
            assert!(error.contains("namespace/name"), "{error}");
        }
    }

    #[test]
    fn nothing_configured_leaves_updates_alone() {
        let input = RenovateInput::new(RenovateSettings::default(), None, None);
        assert!(matches!(input.read(), (RenovateData::NotConfigured, None)));
    }

    fn file_input(path: &Path, metrics: Option<Metrics>) -> RenovateInput {
        let settings = RenovateSettings {
            configmap: None,
            file: Some(path.to_owned()),
        };
        RenovateInput::new(settings, None, metrics)
    }

    #[test]
    fn a_file_is_read_parsed_and_reparsed_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let input = file_input(&path, None);
        let (RenovateData::Missing(message), None) = input.read() else {
            panic!("an absent file is missing data, not an error");
        };
        assert!(message.contains("report.json"), "{message}");
        std::fs::write(&path, REPORT).unwrap();
        let (RenovateData::Parsed(first), Some(news)) = input.read() else {
            panic!("the report parses, with news");
        };
        assert_eq!(first.findings.len(), 1, "{first:?}");
        assert!(news.usable);
        assert!(
            news.message.contains("report, 1 repositories; 1 deps"),
            "{}",
            news.message
        );
        let (RenovateData::Parsed(again), None) = input.read() else {
            panic!("still parses, and nothing new is told");
        };
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged input is not parsed again"
        );
    }

    #[test]
    fn bad_input_keeps_the_last_good_findings_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let metrics = Metrics::new();
        let input = file_input(&path, Some(metrics.clone()));
        std::fs::write(&path, REPORT).unwrap();
        let (RenovateData::Parsed(good), _) = input.read() else {
            panic!("the report parses");
        };
        // Cut as at a ConfigMap's size limit, then emptied, then not Renovate's output,
        // then a log from a run that never got to its findings: none may clear anything.
        let cut = &REPORT[..REPORT.len() / 2];
        let not_renovate = r#"{"level":30,"msg":"hello"}"#;
        for (bad, why) in [
            (cut, "cut at the ConfigMap's 1 MiB limit"),
            ("", "empty"),
            ("   \n", "empty"),
            (not_renovate, "info level"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let (RenovateData::Stale(kept, reason), Some(news)) = input.read() else {
                panic!("{bad:?} must keep the last good findings");
            };
            assert!(Arc::ptr_eq(&kept, &good), "{bad:?}");
            assert!(reason.contains(why), "{bad:?}: {reason}");
            assert!(!news.usable);
            assert!(news.message.contains("kept"), "{}", news.message);
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"fluxgate_renovate_reads_total{result="unusable"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fluxgate_renovate_reads_total{result="used"} 1"#),
            "{text}"
        );
        // A valid report that no longer lists the update replaces the good findings.
        let none = r#"{"repositories": {"example/fleet": {"packageFiles": {}}}}"#;
        std::fs::write(&path, none).unwrap();
        let (RenovateData::Parsed(fresh), Some(news)) = input.read() else {
            panic!("a valid report is used");
        };
        assert!(fresh.findings.is_empty() && news.usable);
    }

    #[test]
    fn unusable_input_before_any_good_one_is_reported_and_empty_is_nothing_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let input = file_input(&path, None);
        std::fs::write(&path, "").unwrap();
        assert!(matches!(input.read(), (RenovateData::Missing(_), Some(_))));
        std::fs::write(&path, "{not json").unwrap();
        let (RenovateData::Unusable(reason), Some(news)) = input.read() else {
            panic!("broken input is reported");
        };
        assert!(reason.contains("report.json"), "{reason}");
        assert!(
            news.message.contains("left as they are"),
            "{}",
            news.message
        );
    }

    #[tokio::test]
    async fn a_file_swapped_behind_a_symlink_is_seen() {
        use futures::StreamExt;
        // As the kubelet updates a mounted ConfigMap: a new directory, then `..data` swapped.
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("v1");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("report.json"), REPORT).unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/report.json", dir.path().join("report.json")).unwrap();
        let mut changes = Box::pin(file_changes(
            dir.path().join("report.json"),
            Duration::from_millis(20),
        ));
        let second = dir.path().join("v2");
        std::fs::create_dir(&second).unwrap();
        std::fs::write(second.join("report.json"), REPORT).unwrap();
        std::os::unix::fs::symlink("v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("the swap is seen within seconds")
            .expect("the stream goes on");
    }

    #[test]
    fn an_oversized_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.ndjson");
        std::fs::write(&path, "x".repeat(MAX_INPUT_BYTES + 10)).unwrap();
        let input = file_input(&path, None);
        let (RenovateData::Unusable(message), _) = input.read() else {
            panic!("oversized input must be refused");
        };
        assert!(message.contains("packageFiles with updates"), "{message}");
    }
}
