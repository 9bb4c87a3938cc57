//! Story (j), the bad input catalogue: invalid objects are refused at `kubectl apply` with the
//! field named; at run time a missing Flux object, a YAML bomb in the version file, a gzip
//! bomb in a Helm release secret, a missing VolumeSnapshotClass and wrong Git credentials
//! each end their request with a clear reason and message — no crash (a good upgrade runs
//! afterwards), nothing lost (Git unchanged, volumes intact, Flux not left suspended).

use base64::Engine as _;
use e2e::checks::replicas;
use e2e::given::{NewApp, app, helm_release, managed_app, upgrade, world};
use e2e::stack::{BareCluster, bare_cluster};
use e2e::then;
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::demo::world::{APP_FILE, DemoWorld, Fleet, GIT_SECRET};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

e2e::on_all_stacks!(
    j_invalid_objects_are_refused_at_apply_naming_the_field,
    j_bad_input_at_run_time_fails_clearly_and_loses_nothing
);

// ---------------------------------------------------------------------------------------
// Refused at apply.

/// Applies `object` the way a person does — `kubectl apply` when the cluster has a kubectl,
/// else a create through kube-rs — and returns the server's refusal, if any.
async fn apply(cluster: &BareCluster, object: &Value) -> Result<(), String> {
    if let Some(kubectl) = &cluster.kubectl {
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(object.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        return if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        };
    }
    let kind = object["kind"].as_str().unwrap();
    let plural = match kind {
        "ManagedApp" => "managedapps",
        "UpgradeRequest" => "upgraderequests",
        _ => "rollbackrequests",
    };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("fluxgate.dev", "v1alpha1", kind),
        plural,
    );
    let api = Api::<DynamicObject>::namespaced_with(cluster.client.clone(), "apps", &resource);
    let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let name = object.metadata.name.clone().unwrap();
    let result = match api.get_opt(&name).await.map_err(|e| e.to_string())? {
        None => api.create(&PostParams::default(), &object).await,
        Some(current) => {
            let mut object = object;
            object.metadata.resource_version = current.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &object).await
        }
    };
    result.map(|_| ()).map_err(|e| e.to_string())
}

/// ManagedApp `bad` with `spec` merged over a valid one, as JSON: the invalid specs below
/// cannot be written with the API's types.
fn invalid_app(spec: Value) -> Value {
    let mut base = json!({"source": {"kind": "HelmRelease", "name": "db"},
                          "git": {"file": "clusters/prod/db.yaml"}});
    json_merge(&mut base, &spec);
    json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
           "metadata": {"name": "bad", "namespace": "apps"}, "spec": base})
}

fn json_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                json_merge(base.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (base, over) => *base = over.clone(),
    }
}

async fn j_invalid_objects_are_refused_at_apply_naming_the_field() {
    let cluster = bare_cluster().await;
    sim::seed::put(
        &cluster.client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
    )
    .await
    .unwrap();
    if cluster.kubectl.is_none() {
        println!("kubectl is not installed: applying through kube-rs instead");
    }
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "git.file climbing out of the repository",
            invalid_app(json!({"git": {"file": "../secrets/db.yaml"}})),
            &["spec.git.file", ".."],
        ),
        (
            "an absolute git.file",
            invalid_app(json!({"git": {"file": "/etc/passwd"}})),
            &["spec.git.file"],
        ),
        (
            "a version file climbing out",
            invalid_app(
                json!({"versions": [{"name": "chart", "path": ".spec.ref.tag", "file": "apps/../../x.yaml"}]}),
            ),
            &["spec.versions[0].file"],
        ),
        (
            "two version fields with one name",
            invalid_app(
                json!({"versions": [{"name": "chart", "path": ".a"}, {"name": "chart", "path": ".b"}]}),
            ),
            &["spec.versions"],
        ),
        (
            "an unknown failure policy",
            invalid_app(json!({"rollback": {"onFailure": "Explode"}})),
            &["spec.rollback.onFailure", "Explode"],
        ),
        (
            "a source kind Flux does not have",
            invalid_app(json!({"source": {"kind": "Deployment", "name": "db"}})),
            &["spec.source.kind"],
        ),
        (
            "an UpgradeRequest without its app",
            json!({"apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
                   "metadata": {"name": "nameless", "namespace": "apps"}, "spec": {"version": "v1.5.0"}}),
            &["spec.managedApp"],
        ),
    ];
    let mut report = Vec::new();
    for (what, object, wanted) in &cases {
        match apply(&cluster, object).await {
            Ok(()) => panic!("{what}: accepted"),
            Err(message) => {
                for needle in *wanted {
                    assert!(
                        message.contains(needle),
                        "{what}: the refusal does not name {needle}: {message}"
                    );
                }
                report.push(format!("{what}: {}", message.trim()));
            }
        }
    }
    // A request's spec cannot change once it exists.
    let upgrade = serde_json::to_value(upgrade("db-1-5-0").to_version("v1.5.0").build()).unwrap();
    apply(&cluster, &upgrade).await.unwrap();
    let mut changed = upgrade.clone();
    changed["spec"]["version"] = json!("v9.9.9");
    let message = apply(&cluster, &changed)
        .await
        .expect_err("a changed spec is refused");
    assert!(
        message.contains("spec") && message.contains("immutable"),
        "{message}"
    );
    report.push(format!("a changed request: {}", message.trim()));
    println!("{}", report.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Failing clearly at run time.

async fn upgrade_of(
    story: &DemoWorld,
    name: &str,
    app: &str,
    version: &str,
) -> fluxgate::api::RequestStatus {
    upgrade(name)
        .of_app(app)
        .to_version(version)
        .create(story)
        .await
        .unwrap();
    let done: UpgradeRequest = story.finished(name, Duration::from_secs(60)).await.unwrap();
    done.status.unwrap()
}

/// ManagedApp `name` of HelmRelease `release` with its versions in `file`, pushing as the
/// world's own app does.
fn fleet_app(story: &DemoWorld, name: &str, release: &str, file: &str) -> NewApp {
    managed_app(name, release, file)
        .pushing_to(&story.git.http_url().unwrap(), "main", GIT_SECRET)
        .stabilization("1s")
}

/// What must never be lost whatever the input: Git as it was, both volumes, Flux resumed,
/// the app's replicas, and no app left locked.
async fn nothing_lost(story: &DemoWorld, commits: usize, case: &str) {
    assert_eq!(
        story.git.log().unwrap().len(),
        commits,
        "{case}: Git unchanged"
    );
    for pvc in ["data-db-0", "data-db-1"] {
        let claim = then::claim(story, pvc).await;
        assert!(
            claim.metadata.deletion_timestamp.is_none(),
            "{case}: {pvc} intact"
        );
    }
    for (kind, namespace, name) in [
        (FluxObjectKind::Kustomization, "flux-system", "flux-system"),
        (FluxObjectKind::HelmRelease, "apps", "db"),
    ] {
        assert!(
            then::resumed(story, kind, namespace, name).await,
            "{case}: {kind:?} {name} resumed"
        );
    }
    assert_eq!(replicas(story).await, Some(2), "{case}: replicas");
}

fn failed_at_admit(
    status: &fluxgate::api::RequestStatus,
    reason: &str,
    needles: &[&str],
    case: &str,
) {
    assert_eq!(status.phase, Some(Phase::Failed), "{case}: {status:#?}");
    let failure = status.failure.clone().unwrap();
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Admit, reason),
        "{case}: {failure:?}"
    );
    for needle in needles {
        assert!(
            failure.message.contains(needle),
            "{case}: the message does not say {needle:?}: {}",
            failure.message
        );
    }
    println!("{case}: {} — {}", failure.reason, failure.message);
}

/// A YAML "billion laughs": nine levels of nine aliases each (9^9 strings if expanded).
fn yaml_bomb() -> String {
    let mut text = String::from(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\n  namespace: apps\n",
    );
    text.push_str("  annotations:\n    a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let letters = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'];
    for pair in letters.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(",");
        text.push_str(&format!("    {}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    text.push_str("spec:\n  chart:\n    spec:\n      chart: db\n      version: 1.4.0\n");
    text
}

/// A Helm release Secret whose `release` is gzip of 40 MiB of zeros (about 40 KiB stored).
fn gzip_bomb_secret(release: &str) -> Value {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..40 {
        encoder.write_all(&zeros).unwrap();
    }
    let gz = encoder.finish().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    // Helm stores base64(gzip(json)); the Secret's `data` base64-encodes that once more.
    let helm_text = b64.encode(&gz);
    json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
           "metadata": {"name": format!("sh.helm.release.v1.{release}.v1"), "namespace": "apps",
                        "labels": {"owner": "helm", "name": release, "status": "deployed", "version": "1"}},
           "data": {"release": b64.encode(helm_text.as_bytes())}})
}

async fn j_bad_input_at_run_time_fails_clearly_and_loses_nothing() {
    let story = world(
        Fleet::new()
            .helm_app("db", "v1.4.0", 2, app().into())
            .http_credentials("fluxgate", "t0ken"),
    )
    .await
    .unwrap();
    let mut commits = story.git.log().unwrap().len();

    // A Flux object that does not exist.
    fleet_app(&story, "ghost", "ghost", APP_FILE)
        .create(&story)
        .await
        .unwrap();
    let status = upgrade_of(&story, "ghost-1", "ghost", "v1.5.0").await;
    failed_at_admit(
        &status,
        "FluxObjectNotFound",
        &["HelmRelease apps/ghost"],
        "missing Flux object",
    );
    nothing_lost(&story, commits, "missing Flux object").await;

    // A YAML bomb where the version lives (a file Flux does not apply).
    story
        .git
        .push_commit(&[("clusters/bombs/db.yaml", &yaml_bomb())], "A bomb")
        .unwrap();
    commits += 1;
    fleet_app(&story, "bomb", "db", "clusters/bombs/db.yaml")
        .create(&story)
        .await
        .unwrap();
    let status = upgrade_of(&story, "bomb-1", "bomb", "1.5.0").await;
    failed_at_admit(
        &status,
        "VersionFieldInvalid",
        &["clusters/bombs/db.yaml"],
        "YAML bomb",
    );
    nothing_lost(&story, commits, "YAML bomb").await;

    // A gzip bomb in the Helm release Secret of a release without an inventory.
    story
        .git
        .push_commit(
            &[(
                "clusters/legacy/release.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: legacy\n  namespace: apps\nspec:\n  chart:\n    spec:\n      chart: legacy\n      version: 1.0.0\n",
            )],
            "The legacy release",
        )
        .unwrap();
    commits += 1;
    let legacy = helm_release("legacy")
        .chart_from_oci_repository("nowhere")
        .build();
    sim::seed::put(&story.client, serde_json::to_value(legacy).unwrap())
        .await
        .unwrap();
    sim::seed::put(&story.client, gzip_bomb_secret("legacy"))
        .await
        .unwrap();
    fleet_app(&story, "legacy", "legacy", "clusters/legacy/release.yaml")
        .create(&story)
        .await
        .unwrap();
    let status = upgrade_of(&story, "legacy-1", "legacy", "1.1.0").await;
    failed_at_admit(
        &status,
        "DiscoveryFailed",
        &["sh.helm.release.v1.legacy.v1", "refusing"],
        "gzip bomb",
    );
    nothing_lost(&story, commits, "gzip bomb").await;

    // No VolumeSnapshotClass for the volumes' CSI driver.
    let classes = Api::<DynamicObject>::all_with(
        story.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"),
            "volumesnapshotclasses",
        ),
    );
    classes
        .delete(sim::seed::SNAPSHOT_CLASS, &DeleteParams::default())
        .await
        .unwrap();
    let status = upgrade_of(&story, "db-no-class", "db", "v1.5.0").await;
    failed_at_admit(
        &status,
        "DiscoveryFailed",
        &["data-db-0", sim::seed::DRIVER],
        "snapshot class missing",
    );
    nothing_lost(&story, commits, "snapshot class missing").await;
    sim::seed::storage(&story.client).await.unwrap();

    // Wrong Git credentials: refused by the server, the password never shown.
    sim::seed::git_credentials(&story.client, "apps", GIT_SECRET, "fluxgate", "wr0ng-pa55")
        .await
        .unwrap();
    let status = upgrade_of(&story, "db-wrong-creds", "db", "v1.5.0").await;
    failed_at_admit(
        &status,
        "GitError",
        &["authentication", "password"],
        "wrong credentials",
    );
    let shown = serde_json::to_string(&status).unwrap();
    assert!(!shown.contains("wr0ng-pa55"), "the secret leaked: {shown}");
    assert!(story.git.http_unauthorized() > 0);
    nothing_lost(&story, commits, "wrong credentials").await;
    sim::seed::git_credentials(&story.client, "apps", GIT_SECRET, "fluxgate", "t0ken")
        .await
        .unwrap();

    // The operator kept serving: a good upgrade goes through.
    let status = upgrade_of(&story, "db-1-5-0", "db", "v1.5.0").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(story.git.log().unwrap().len(), commits + 1);
    story.stop().await;
}
