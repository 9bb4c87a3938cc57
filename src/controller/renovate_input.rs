//! Renovate's output as the ManagedApp controller reads it: every key of one ConfigMap
//! (kept current by a watch of that object alone) and a mounted file, parsed once per change
//! of their content and shared by every app.

use crate::renovate::model::MAX_INPUT_BYTES;
use crate::renovate::{Parsed, parse_inputs};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// The inputs could not be used; what is known stays, the error is reported.
    Unusable(String),
}

/// Reads and caches Renovate's output.
pub struct RenovateInput {
    settings: RenovateSettings,
    configmaps: Option<Store<ConfigMap>>,
    /// Fingerprint of the last inputs and what they parsed to.
    cache: Mutex<Option<(u64, RenovateData)>>,
}

impl RenovateInput {
    /// A reader of `settings`' inputs; `configmaps` is the store of the watched ConfigMap.
    pub fn new(settings: RenovateSettings, configmaps: Option<Store<ConfigMap>>) -> Self {
        RenovateInput {
            settings,
            configmaps,
            cache: Mutex::new(None),
        }
    }

    /// The data now: parsed again only when the inputs' content changed.
    pub fn read(&self) -> RenovateData {
        if !self.settings.configured() {
            return RenovateData::NotConfigured;
        }
        let inputs = match self.inputs() {
            Ok(inputs) => inputs,
            Err(error) => return RenovateData::Unusable(error),
        };
        if inputs.is_empty() {
            return RenovateData::Missing(format!("no Renovate output yet in {}", self.describe()));
        }
        let mut hasher = DefaultHasher::new();
        inputs.hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, data)) = cache.as_ref()
            && *seen == fingerprint
        {
            return data.clone();
        }
        let borrowed: Vec<(&str, &str)> = inputs
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        let data = match parse_inputs(&borrowed) {
            Ok(parsed) => RenovateData::Parsed(Arc::new(parsed)),
            Err(error) => RenovateData::Unusable(error.to_string()),
        };
        *cache = Some((fingerprint, data.clone()));
        data
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
        let input = RenovateInput::new(RenovateSettings::default(), None);
        assert!(matches!(input.read(), RenovateData::NotConfigured));
    }

    #[test]
    fn a_file_is_read_parsed_and_reparsed_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let settings = RenovateSettings {
            configmap: None,
            file: Some(path.clone()),
        };
        let input = RenovateInput::new(settings, None);
        let RenovateData::Missing(message) = input.read() else {
            panic!("an absent file is missing data, not an error");
        };
        assert!(message.contains("report.json"), "{message}");
        std::fs::write(&path, REPORT).unwrap();
        let RenovateData::Parsed(first) = input.read() else {
            panic!("the report parses");
        };
        assert_eq!(first.findings.len(), 1, "{first:?}");
        let RenovateData::Parsed(again) = input.read() else {
            panic!("still parses");
        };
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged input is not parsed again"
        );
        std::fs::write(&path, "{not json").unwrap();
        match input.read() {
            RenovateData::Parsed(parsed) => assert!(parsed.findings.is_empty()),
            RenovateData::Unusable(_) => {}
            other => panic!("broken input is reported, not missing: {other:?}"),
        }
    }

    #[test]
    fn an_oversized_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.ndjson");
        std::fs::write(&path, "x".repeat(MAX_INPUT_BYTES + 10)).unwrap();
        let input = RenovateInput::new(
            RenovateSettings {
                configmap: None,
                file: Some(path),
            },
            None,
        );
        let RenovateData::Unusable(message) = input.read() else {
            panic!("oversized input must be refused");
        };
        assert!(message.contains("packageFiles with updates"), "{message}");
    }
}
