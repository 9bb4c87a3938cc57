//! Every CEL rule of the Fluxgate CRDs, evaluated by kube's CEL engine against the schema
//! `fluxgate crd` generates: a valid object passes, each invalid case is refused with its
//! message.

use super::*;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("generated CRDs have a schema");
    serde_json::to_value(schema).unwrap()
}

/// Sets `value` at a JSON pointer, creating missing objects on the way.
fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut target = &mut object;
    for part in parent.split('/').skip(1) {
        target = match target {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            other => other
                .as_object_mut()
                .unwrap()
                .entry(part)
                .or_insert_with(|| json!({})),
        };
    }
    match target {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => other[key] = value,
    }
    object
}

fn errors(crd: &CustomResourceDefinition, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of(crd), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_refused(
    crd: &CustomResourceDefinition,
    object: &Value,
    old: Option<&Value>,
    message: &str,
) {
    let errors = errors(crd, object, old);
    assert!(
        errors.iter().any(|e| e.contains(message)),
        "expected a refusal containing {message:?} for {object}, got {errors:?}"
    );
}

fn managed_app() -> Value {
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "ManagedApp",
        "metadata": {"name": "db", "namespace": "apps"},
        "spec": {
            "source": {"kind": "HelmRelease", "name": "db"},
            "git": {"file": "apps/db/helmrelease.yaml", "url": "https://git.example.com/ops.git", "branch": "main"},
            "versions": [
                {"name": "chart", "path": ".spec.chart.spec.version"},
                {"name": "image", "path": ".spec.values.image.tag", "file": "apps/db/values.yaml"}
            ],
            "snapshots": {"retention": {"maxCount": 3, "maxAge": "720h"}},
            "health": {"timeout": "5m", "stabilization": "30s"},
            "updatePolicy": {"auto": "patch", "minReleaseAge": "72h",
                             "window": {"schedule": "0 3 * * 6", "duration": "2h", "timezone": "Europe/Berlin"}},
            "timeouts": {"snapshot": "45m"}
        }
    })
}

#[test]
fn a_valid_managed_app_passes() {
    assert_eq!(
        errors(&ManagedApp::crd(), &managed_app(), None),
        Vec::<String>::new()
    );
}

#[test]
fn git_file_must_stay_inside_the_repository() {
    let crd = ManagedApp::crd();
    let message = "must be a path relative to the repository root";
    for bad in [
        "/etc/passwd",
        "../other/repo.yaml",
        "apps/../../x.yaml",
        "apps/..",
        "..",
        "apps\\db.yaml",
    ] {
        assert_refused(
            &crd,
            &with(managed_app(), "/spec/git/file", json!(bad)),
            None,
            message,
        );
        assert_refused(
            &crd,
            &with(managed_app(), "/spec/versions/1/file", json!(bad)),
            None,
            message,
        );
    }
    for good in [
        "helmrelease.yaml",
        "apps/db/..hidden/x.yaml",
        "apps/db.../x.yaml",
    ] {
        let object = with(managed_app(), "/spec/git/file", json!(good));
        assert_eq!(errors(&crd, &object, None), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn git_url_must_look_like_a_git_remote() {
    let crd = ManagedApp::crd();
    for good in [
        "https://github.com/a/b.git",
        "ssh://git@host/a.git",
        "git@github.com:a/b.git",
        "file:///srv/git/ops.git",
    ] {
        let object = with(managed_app(), "/spec/git/url", json!(good));
        assert_eq!(errors(&crd, &object, None), Vec::<String>::new(), "{good}");
    }
    for bad in ["github.com/a/b", "ftp://host/x", "-oProxyCommand=evil"] {
        assert_refused(
            &crd,
            &with(managed_app(), "/spec/git/url", json!(bad)),
            None,
            "must be a git URL",
        );
    }
}

#[test]
fn version_names_must_be_unique() {
    let object = with(
        managed_app(),
        "/spec/versions",
        json!([{"name": "chart", "path": ".a"}, {"name": "chart", "path": ".b"}]),
    );
    assert_refused(
        &ManagedApp::crd(),
        &object,
        None,
        "versions[].name must be unique",
    );
}

#[test]
fn durations_must_be_positive() {
    let crd = ManagedApp::crd();
    let message = "must be a positive duration";
    for (pointer, bad) in [
        ("/spec/health/timeout", "0s"),
        ("/spec/health/stabilization", "0m"),
        ("/spec/updatePolicy/minReleaseAge", "0h"),
        ("/spec/updatePolicy/window/duration", "0s"),
        ("/spec/snapshots/retention/maxAge", "0s"),
        ("/spec/timeouts/commit", "0ms"),
    ] {
        assert_refused(
            &crd,
            &with(managed_app(), pointer, json!(bad)),
            None,
            message,
        );
    }
    let object = with(managed_app(), "/spec/timeouts/reconcile", json!("1h30m"));
    assert_eq!(errors(&crd, &object, None), Vec::<String>::new());
}

fn upgrade_request() -> Value {
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "UpgradeRequest",
        "metadata": {"name": "db-1-5-0", "namespace": "apps"},
        "spec": {"managedApp": "db", "target": {"chart": "1.5.0", "image": "16.4@sha256:0123abcd"}}
    })
}

#[test]
fn a_valid_upgrade_request_passes_and_may_be_relabelled() {
    let crd = UpgradeRequest::crd();
    let object = upgrade_request();
    assert_eq!(errors(&crd, &object, None), Vec::<String>::new());
    let relabelled = with(object.clone(), "/metadata/labels", json!({"team": "db"}));
    assert_eq!(
        errors(&crd, &relabelled, Some(&object)),
        Vec::<String>::new()
    );
}

#[test]
fn upgrade_request_spec_is_immutable() {
    let old = upgrade_request();
    let new = with(old.clone(), "/spec/target/chart", json!("2.0.0"));
    assert_refused(
        &UpgradeRequest::crd(),
        &new,
        Some(&old),
        "spec is immutable",
    );
    let new = with(old.clone(), "/spec/force", json!(true));
    assert_refused(
        &UpgradeRequest::crd(),
        &new,
        Some(&old),
        "spec is immutable",
    );
}

#[test]
fn target_and_version_are_exclusive() {
    let object = with(upgrade_request(), "/spec/version", json!("1.5.0"));
    assert_refused(&UpgradeRequest::crd(), &object, None, "set either target");
    let shorthand = json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": "u"}, "spec": {"managedApp": "db", "version": "v1.5.0"}});
    assert_eq!(
        errors(&UpgradeRequest::crd(), &shorthand, None),
        Vec::<String>::new()
    );
}

#[test]
fn target_keys_must_be_version_names() {
    for bad in ["Chart", "chart version", "-chart", ""] {
        let object = with(upgrade_request(), "/spec/target", json!({bad: "1.0.0"}));
        assert_refused(
            &UpgradeRequest::crd(),
            &object,
            None,
            "target keys must be version names",
        );
    }
}

#[test]
fn rollback_request_spec_is_immutable() {
    let crd = RollbackRequest::crd();
    let old = json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "db-1-5-0-rollback"}, "spec": {"upgradeRequest": "db-1-5-0"}});
    assert_eq!(errors(&crd, &old, None), Vec::<String>::new());
    let new = with(old.clone(), "/spec/upgradeRequest", json!("other"));
    assert_refused(&crd, &new, Some(&old), "spec is immutable");
    let new = with(old.clone(), "/spec/safetySnapshot", json!(false));
    assert_refused(&crd, &new, Some(&old), "spec is immutable");
}
