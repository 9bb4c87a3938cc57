//! `fluxgate upgrade <app>`: checks the target against the app (a failed version is refused
//! before anything is created unless `--force`), creates the UpgradeRequest and, with
//! `--wait`, follows it and its automatic rollback to the end.

use super::cluster::{ClusterArgs, find_app, open};
use super::follow::{WaitArgs, follow};
use super::view::outcome::{Ended, conclusion};
use super::view::transition;
use crate::api::{ManagedApp, SourceKind, UpgradeRequest, UpgradeRequestSpec};
use crate::manifest::versions_equal;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Arguments of `fluxgate upgrade`.
#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// The ManagedApp to upgrade.
    pub app: String,
    /// The version to upgrade to; NAME=VERSION (repeatable) for an app with several version
    /// fields. Without it, the app's available update is applied.
    #[arg(long = "to", value_name = "VERSION")]
    pub to: Vec<String>,
    /// Check everything and run a suspend → quiesce → resume cycle, but never commit or
    /// snapshot.
    #[arg(long)]
    pub dry_run: bool,
    /// Namespace of the app; by default the kubeconfig context's.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Name of the UpgradeRequest; by default `<app>-<version>-<random>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Allow a version listed in the app's failed versions (one that was rolled back).
    #[arg(long)]
    pub force: bool,
    /// Do not snapshot the volumes first (a rollback then cannot restore data).
    #[arg(long)]
    pub skip_snapshot: bool,
    #[command(flatten)]
    pub follow: WaitArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Parses a Go-style duration (`15s`, `5m`, `1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::api::GoDuration::from(text)
        .to_std()
        .map_err(|e| e.to_string())
}

/// What the user asked for, as the request's spec fields and as versions per field name
/// (for the checks; empty when the app's field names are unknown here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// `spec.version`.
    pub version: Option<String>,
    /// `spec.target`.
    pub target: Option<BTreeMap<String, String>>,
    /// The versions by field name.
    pub wanted: BTreeMap<String, String>,
}

/// The app's version field names: `spec.versions`, else the default `chart` of a
/// HelmRelease.
pub fn field_names(app: &ManagedApp) -> Vec<String> {
    if !app.spec.versions.is_empty() {
        return app.spec.versions.iter().map(|v| v.name.clone()).collect();
    }
    match app.spec.source.kind {
        SourceKind::HelmRelease => vec!["chart".to_owned()],
        SourceKind::Kustomization => Vec::new(),
    }
}

fn split_assignment(text: &str) -> Option<(&str, &str)> {
    let (name, version) = text.split_once('=')?;
    let is_label = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    is_label.then_some((name, version))
}

/// Resolves `--to` against the app; the error says how to write it.
pub fn resolve(to: &[String], app: &ManagedApp) -> Result<Requested, String> {
    let name = app.name_any();
    let names = field_names(app);
    if to.is_empty() {
        let wanted: BTreeMap<String, String> = app
            .status
            .as_ref()
            .map(|s| {
                s.available_update
                    .iter()
                    .map(|(k, u)| (k.clone(), u.version.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if wanted.is_empty() {
            return Err(format!(
                "ManagedApp {name} offers no available update; say which version with --to <version>"
            ));
        }
        return Ok(Requested {
            version: None,
            target: None,
            wanted,
        });
    }
    let assignments: Vec<Option<(&str, &str)>> = to.iter().map(|t| split_assignment(t)).collect();
    if assignments.iter().all(Option::is_some) {
        let mut target = BTreeMap::new();
        for (field, version) in assignments.into_iter().flatten() {
            if version.is_empty() {
                return Err(format!("--to {field}= has no version"));
            }
            if !names.is_empty() && !names.iter().any(|n| n == field) {
                return Err(format!(
                    "ManagedApp {name} has no version field {field:?}; its fields: {}",
                    names.join(", ")
                ));
            }
            if target
                .insert(field.to_owned(), version.to_owned())
                .is_some()
            {
                return Err(format!("--to names {field} twice"));
            }
        }
        return Ok(Requested {
            version: None,
            wanted: target.clone(),
            target: Some(target),
        });
    }
    match (to, names.as_slice()) {
        ([version], [only]) => Ok(Requested {
            version: Some(version.clone()),
            target: None,
            wanted: BTreeMap::from([(only.clone(), version.clone())]),
        }),
        ([version], []) => Ok(Requested {
            version: Some(version.clone()),
            target: None,
            wanted: BTreeMap::new(),
        }),
        ([_], several) => Err(format!(
            "ManagedApp {name} has several version fields ({}): write --to NAME=VERSION for each one to change",
            several.join(", ")
        )),
        _ => Err(
            "give one --to VERSION, or NAME=VERSION for each version field to change (not both)"
                .to_owned(),
        ),
    }
}

/// Refuses a version the app rolled back before (unless `force`), and a target Git already
/// holds.
pub fn check(requested: &Requested, app: &ManagedApp, force: bool) -> Result<(), String> {
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    let status = app.status.clone().unwrap_or_default();
    if !force {
        let hit = status.failed_versions.iter().find(|failed| {
            match (&requested.version, requested.wanted.is_empty()) {
                (Some(version), true) => versions_equal(version, &failed.version),
                _ => requested
                    .wanted
                    .get(&failed.name)
                    .is_some_and(|v| versions_equal(v, &failed.version)),
            }
        });
        if let Some(failed) = hit {
            let reason = failed
                .reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {r}"));
            return Err(format!(
                "{} {} of ManagedApp {namespace}/{name} failed before and was rolled back (UpgradeRequest {}{reason}); \
                 Fluxgate does not try it again on its own. Nothing was created. \
                 To try it anyway, add --force (the version is cleared from the failed list once an upgrade succeeds past it)",
                failed.name, failed.version, failed.upgrade_request
            ));
        }
    }
    if !requested.wanted.is_empty()
        && requested.wanted.iter().all(|(field, version)| {
            status
                .current_versions
                .get(field)
                .is_some_and(|current| versions_equal(current, version))
        })
    {
        return Err(format!(
            "ManagedApp {namespace}/{name} is already at {} in Git; nothing to upgrade",
            crate::api::versions_summary(&requested.wanted)
        ));
    }
    Ok(())
}

/// The generated name's prefix: `<app>-<version>-` in the characters names allow.
pub fn name_prefix(app: &str, wanted: &BTreeMap<String, String>) -> String {
    let raw = if wanted.is_empty() {
        "update".to_owned()
    } else {
        wanted.values().cloned().collect::<Vec<_>>().join("-")
    };
    let mut slug = String::new();
    for c in raw.to_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    let slug = slug.trim_matches('-');
    let mut prefix = format!("{app}-{slug}");
    prefix.truncate(200);
    format!("{}-", prefix.trim_end_matches(['-', '.']))
}

/// The request to create.
pub fn build(args: &UpgradeArgs, app: &ManagedApp, requested: &Requested) -> UpgradeRequest {
    let app_name = app.name_any();
    let (mut labels, mut annotations) = (BTreeMap::new(), BTreeMap::new());
    crate::cluster::labels::set_name(
        &mut labels,
        &mut annotations,
        crate::cluster::snapshots::APP_LABEL,
        &app_name,
    );
    let metadata = ObjectMeta {
        name: args.name.clone(),
        generate_name: args
            .name
            .is_none()
            .then(|| name_prefix(&app_name, &requested.wanted)),
        namespace: app.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    UpgradeRequest {
        metadata,
        spec: UpgradeRequestSpec {
            managed_app: app_name,
            target: requested.target.clone(),
            version: requested.version.clone(),
            skip_snapshot: args.skip_snapshot,
            dry_run: args.dry_run,
            force: args.force,
        },
        status: None,
    }
}

/// Runs `fluxgate upgrade`.
pub async fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let session = open(&args.cluster).await?;
    let namespace = session.namespace(args.namespace.as_deref());
    let app = find_app(&session, &namespace, &args.app).await?;
    let requested = resolve(&args.to, &app).map_err(anyhow::Error::msg)?;
    check(&requested, &app, args.force).map_err(anyhow::Error::msg)?;
    let request = build(&args, &app, &requested);
    let api = Api::<UpgradeRequest>::namespaced(session.client.clone(), &namespace);
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 409 => anyhow::anyhow!(
                "an UpgradeRequest named {:?} already exists in namespace {namespace} (requests cannot change): pick another --name, or leave it out to get a fresh one",
                args.name.clone().unwrap_or_default()
            ),
            other => session.error("creating the UpgradeRequest", other),
        })?;
    let started = Instant::now();
    let name = created.name_any();
    let current = app
        .status
        .as_ref()
        .map(|s| s.current_versions.clone())
        .unwrap_or_default();
    let known =
        !requested.wanted.is_empty() && requested.wanted.keys().all(|k| current.contains_key(k));
    let mut line = if known {
        format!(
            "UpgradeRequest {namespace}/{name} created: {} {}",
            app.name_any(),
            transition(&current, &requested.wanted)
        )
    } else {
        let wanted = if requested.wanted.is_empty() {
            requested.version.clone().unwrap_or_default()
        } else {
            crate::api::versions_summary(&requested.wanted)
        };
        format!(
            "UpgradeRequest {namespace}/{name} created: {} to {wanted}",
            app.name_any()
        )
    };
    if args.dry_run {
        line.push_str(" (dry run)");
    }
    super::say(&line)?;
    if let Some(active) = app
        .status
        .as_ref()
        .and_then(|s| s.active_operation.as_ref())
    {
        super::say(&format!(
            "ManagedApp {} is busy with {:?} {}: this request waits its turn (phase Queued).",
            app.name_any(),
            active.kind,
            active.name
        ))?;
    }
    if !args.follow.wait {
        super::say(&format!(
            "It runs in the operator. Watch it with `fluxgate status {} -n {namespace}`, or follow it next time with --wait.",
            app.name_any()
        ))?;
        return Ok(());
    }
    let options = args.follow.options(started);
    let ended: UpgradeRequest = follow(&session, &namespace, &name, "upgrade", &options).await?;
    let status = ended.status.clone().unwrap_or_default();
    let app_name = app.name_any();
    let text = conclusion(
        Ended::Upgrade {
            app: &app_name,
            dry_run: args.dry_run,
        },
        &namespace,
        &name,
        &status,
        started.elapsed(),
    )?;
    super::say(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FailedVersion, ManagedAppStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn app(versions: serde_json::Value, status: ManagedAppStatus) -> ManagedApp {
        let mut app: ManagedApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"source": {"kind": "HelmRelease", "name": "db"},
                     "git": {"file": "db.yaml"}, "versions": versions}
        }))
        .unwrap();
        app.status = Some(status);
        app
    }

    fn to(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn failed(version: &str) -> ManagedAppStatus {
        ManagedAppStatus {
            current_versions: BTreeMap::from([("chart".into(), "v1.5.0".into())]),
            failed_versions: vec![FailedVersion {
                name: "chart".into(),
                version: version.into(),
                upgrade_request: "db-2".into(),
                failed_at: Time(jiff::Timestamp::UNIX_EPOCH),
                reason: Some("HealthCheckFailed".into()),
            }],
            ..ManagedAppStatus::default()
        }
    }

    #[test]
    fn one_version_for_a_single_field_app_uses_the_shorthand() {
        let app = app(serde_json::json!([]), ManagedAppStatus::default());
        let r = resolve(&to(&["v1.5.0"]), &app).unwrap();
        assert_eq!(r.version.as_deref(), Some("v1.5.0"));
        assert_eq!(r.target, None);
        assert_eq!(r.wanted["chart"], "v1.5.0");
    }

    #[test]
    fn several_fields_need_names_and_unknown_names_are_refused() {
        let fields = serde_json::json!([
            {"name": "chart", "path": ".spec.chart.spec.version"},
            {"name": "image", "path": ".spec.values.image.tag"}
        ]);
        let app = app(fields, ManagedAppStatus::default());
        let err = resolve(&to(&["v1.5.0"]), &app).unwrap_err();
        assert!(
            err.contains("--to NAME=VERSION") && err.contains("chart, image"),
            "{err}"
        );
        let r = resolve(&to(&["image=16.4", "chart=v1.5.0"]), &app).unwrap();
        assert_eq!(r.target.unwrap().len(), 2);
        let err = resolve(&to(&["tag=1"]), &app).unwrap_err();
        assert!(err.contains("no version field \"tag\""), "{err}");
        let err = resolve(&to(&["image=16.4", "v1.5.0"]), &app).unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn no_version_needs_an_available_update() {
        let app = app(serde_json::json!([]), ManagedAppStatus::default());
        let err = resolve(&[], &app).unwrap_err();
        assert!(err.contains("--to <version>"), "{err}");
    }

    #[test]
    fn a_failed_version_is_refused_with_the_way_out_unless_forced() {
        let app = app(serde_json::json!([]), failed("v2.0.0"));
        // The normalised comparison: "2.0.0" is the same version.
        let r = resolve(&to(&["2.0.0"]), &app).unwrap();
        let err = check(&r, &app, false).unwrap_err();
        assert!(
            err.contains("chart v2.0.0 of ManagedApp apps/db failed before"),
            "{err}"
        );
        assert!(
            err.contains("UpgradeRequest db-2: HealthCheckFailed"),
            "{err}"
        );
        assert!(
            err.contains("--force") && err.contains("Nothing was created"),
            "{err}"
        );
        assert_eq!(check(&r, &app, true), Ok(()));
    }

    #[test]
    fn an_available_update_that_failed_before_is_refused_too() {
        let mut status = failed("v2.0.0");
        status.available_update.insert(
            "chart".into(),
            crate::api::AvailableUpdate {
                current: "v1.5.0".into(),
                version: "v2.0.0".into(),
                update_type: crate::api::UpdateType::Major,
                released_at: None,
                source: None,
                candidates: vec![],
            },
        );
        let app = app(serde_json::json!([]), status);
        let r = resolve(&[], &app).unwrap();
        assert_eq!((r.version.clone(), r.target.clone()), (None, None));
        assert!(check(&r, &app, false).unwrap_err().contains("--force"));
    }

    #[test]
    fn the_version_already_in_git_is_refused() {
        let app = app(serde_json::json!([]), failed("v2.0.0"));
        let r = resolve(&to(&["v1.5.0"]), &app).unwrap();
        let err = check(&r, &app, false).unwrap_err();
        assert!(err.contains("already at v1.5.0"), "{err}");
    }

    #[test]
    fn generated_names_are_valid_and_readable() {
        let wanted = BTreeMap::from([("chart".to_owned(), "v1.5.0+build.1".to_owned())]);
        assert_eq!(name_prefix("db", &wanted), "db-v1-5-0-build-1-");
        assert_eq!(name_prefix("db", &BTreeMap::new()), "db-update-");
        let long = "a".repeat(240);
        assert!(name_prefix(&long, &wanted).len() <= 201);
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}
