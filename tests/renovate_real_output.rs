//! Real Renovate output, end to end: each fixture that `test/renovate/generate.sh` made by
//! running Renovate 39 against `test/renovate/fleet/` (a report file and a JSON debug log,
//! from platform `local` and from a named Gitea repository) is handed to `fluxgate run
//! --renovate-file` on kubesim, with the same fleet in Git and one ManagedApp per version
//! field Renovate looked at. Every version update Renovate found must show on its app's
//! `status.availableUpdate` with Renovate's current value, new values, update type and
//! release time — read from the fixture, so the test stays true when it is regenerated —
//! and an apiVersion move (Renovate's `kubernetes-api` datasource) must never be offered.

use fluxgate::api::ManagedApp;
use kube::api::{Api, PostParams};
use kubesim::KubeSim;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "fleet";
/// The repository as the Gitea run names it; the Git server below serves the fleet at this
/// path, so a named finding belongs to these apps by the ordinary repository match.
const REPOSITORY_PATH: &str = "home/fleet";
const BRANCH: &str = "main";

fn renovate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test/renovate")
}

/// One version field of the fleet under a ManagedApp of its own, and the dependency Renovate
/// reports for it (by manager, package file and name: identities, not expected values).
struct Field {
    app: &'static str,
    source: (&'static str, &'static str, &'static str),
    file: &'static str,
    path: &'static str,
    image: bool,
    manager: &'static str,
    dep_name: &'static str,
}

const FIELDS: &[Field] = &[
    Field {
        app: "web-chart",
        source: ("HelmRelease", "web", "web"),
        file: "apps/web/helmrelease.yaml",
        path: ".spec.chart.spec.version",
        image: false,
        manager: "flux",
        dep_name: "web",
    },
    Field {
        app: "web-image",
        source: ("HelmRelease", "web", "web"),
        file: "apps/web/helmrelease.yaml",
        path: ".spec.values.image.tag",
        image: false,
        manager: "flux",
        dep_name: "127.0.0.1:45601/acme/web",
    },
    Field {
        app: "web-exporter",
        source: ("HelmRelease", "web", "web"),
        file: "apps/web/values.yaml",
        path: ".exporter.image.tag",
        image: false,
        manager: "helm-values",
        dep_name: "127.0.0.1:45601/acme/web-exporter",
    },
    Field {
        app: "db-chart",
        source: ("HelmRelease", "db", "db"),
        file: "apps/db/ocirepository.yaml",
        path: ".spec.ref.tag",
        image: false,
        manager: "flux",
        dep_name: "127.0.0.1:45601/charts/db",
    },
    Field {
        app: "platform-config",
        source: ("Kustomization", "cache", "flux-system"),
        file: "infrastructure/sources/platform-config.yaml",
        path: ".spec.ref.tag",
        image: false,
        manager: "flux",
        dep_name: "platform-config",
    },
    Field {
        app: "api",
        source: ("Kustomization", "api", "flux-system"),
        file: "apps/api/kustomization.yaml",
        path: ".images[name=api].newTag",
        image: false,
        manager: "kustomize",
        dep_name: "127.0.0.1:45601/acme/api",
    },
    Field {
        app: "worker",
        source: ("Kustomization", "worker", "flux-system"),
        file: "apps/worker/deployment.yaml",
        path: ".spec.template.spec.containers[0].image",
        image: true,
        manager: "kubernetes",
        dep_name: "127.0.0.1:45601/acme/worker",
    },
    Field {
        app: "cleanup",
        source: ("Kustomization", "worker", "flux-system"),
        file: "apps/worker/cronjob.yaml",
        path: ".spec.jobTemplate.spec.template.spec.containers[0].image",
        image: true,
        manager: "kubernetes",
        dep_name: "127.0.0.1:45601/acme/cleanup",
    },
    // Renovate proposes the CronJob's move off the removed batch/v1beta1: not a version of
    // anything, so even a field pointing at it must never be offered an "update".
    Field {
        app: "cleanup-api",
        source: ("Kustomization", "worker", "flux-system"),
        file: "apps/worker/cronjob.yaml",
        path: ".apiVersion",
        image: false,
        manager: "kubernetes",
        dep_name: "CronJob",
    },
    Field {
        app: "redis",
        source: ("Kustomization", "cache", "flux-system"),
        file: "apps/cache/ks.yaml",
        path: ".spec.postBuild.substitute.redis_version",
        image: false,
        manager: "regex",
        dep_name: "127.0.0.1:45601/library/redis",
    },
];

/// Version field name in every app.
const FIELD: &str = "version";

/// One dependency of the fixture, with the manager and file it came through.
#[derive(Debug, Clone)]
struct Dep {
    manager: String,
    package_file: String,
    value: Value,
}

impl Dep {
    fn name(&self) -> &str {
        self.value["depName"].as_str().unwrap_or_default()
    }

    fn updates(&self) -> Vec<&Value> {
        self.value["updates"]
            .as_array()
            .map(|u| u.iter().collect())
            .unwrap_or_default()
    }

    /// An apiVersion move: Renovate's `kubernetes-api` datasource, or the `replacement`
    /// update type. Not a version Fluxgate may offer.
    fn is_api_move(update: &Value, dep: &Value) -> bool {
        dep["datasource"] == "kubernetes-api" || update["updateType"] == "replacement"
    }
}

/// Every dependency in Renovate's output: a report file's `repositories.*.packageFiles`, or
/// the newest `packageFiles with updates` line of a log (its `config`).
fn fixture_deps(text: &str) -> Vec<Dep> {
    let mut package_files: Vec<Value> = Vec::new();
    if let Ok(report) = serde_json::from_str::<Value>(text)
        && report.get("repositories").is_some()
    {
        for entry in report["repositories"]
            .as_object()
            .expect("repositories")
            .values()
        {
            package_files.push(entry["packageFiles"].clone());
        }
    } else {
        let line = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .rfind(|line| line["msg"] == "packageFiles with updates")
            .expect("the log has a `packageFiles with updates` line");
        package_files.push(line["config"].clone());
    }
    let mut deps = Vec::new();
    for managers in package_files {
        for (manager, files) in managers.as_object().expect("managers") {
            for file in files.as_array().expect("package files") {
                for dep in file["deps"].as_array().into_iter().flatten() {
                    deps.push(Dep {
                        manager: manager.clone(),
                        package_file: file["packageFile"].as_str().unwrap().to_owned(),
                        value: dep.clone(),
                    });
                }
            }
        }
    }
    deps
}

/// What the app must show: `None` when nothing may be offered.
#[derive(Debug)]
struct Expected {
    current: String,
    /// Renovate's largest step: (value as written, update type, release time).
    chosen: (String, String, Option<jiff::Timestamp>),
    candidates: BTreeSet<String>,
}

fn expected(field: &Field, dep: &Dep) -> Option<Expected> {
    let digest = dep.value["currentDigest"].as_str();
    let with_digest = |value: &str, digest: Option<&str>| match digest {
        Some(d) => format!("{value}@{d}"),
        None => value.to_owned(),
    };
    let pinned = digest.is_some();
    let updates: Vec<&Value> = dep
        .updates()
        .into_iter()
        .filter(|u| !Dep::is_api_move(u, &dep.value))
        .collect();
    if updates.is_empty() {
        return None;
    }
    let value_of = |u: &Value| {
        let new = u["newValue"].as_str().expect("newValue");
        with_digest(
            new,
            pinned.then(|| u["newDigest"].as_str().expect("newDigest")),
        )
    };
    // Renovate's largest step is the one offered when the app's policy picks none.
    let rank = |u: &&Value| match u["updateType"].as_str() {
        Some("major") => 4,
        Some("minor") => 3,
        Some("patch") => 2,
        Some("digest") => 1,
        _ => 0,
    };
    let top = updates.iter().copied().max_by_key(rank).expect("an update");
    let released = top["releaseTimestamp"].as_str().map(|t| {
        t.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{}: releaseTimestamp {t}: {e}", field.app))
    });
    Some(Expected {
        current: with_digest(
            dep.value["currentValue"].as_str().expect("currentValue"),
            digest,
        ),
        chosen: (
            value_of(top),
            top["updateType"].as_str().unwrap().to_owned(),
            released,
        ),
        candidates: updates.iter().map(|u| value_of(u)).collect(),
    })
}

/// Pairs each field with its dependency, and checks that the fields cover every dependency
/// Renovate found updates for (a regenerated fixture with a new one needs a new field).
fn pair(deps: &[Dep]) -> Vec<(&'static Field, Dep)> {
    let mut paired = Vec::new();
    for field in FIELDS {
        let found: Vec<&Dep> = deps
            .iter()
            .filter(|d| {
                d.manager == field.manager
                    && d.package_file == field.file
                    && d.name() == field.dep_name
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one {} dependency {} in {}, found {found:?}",
            field.app,
            field.manager,
            field.dep_name,
            field.file
        );
        paired.push((field, found[0].clone()));
    }
    for dep in deps.iter().filter(|d| !d.updates().is_empty()) {
        assert!(
            paired.iter().any(|(_, d)| d.manager == dep.manager
                && d.package_file == dep.package_file
                && d.name() == dep.name()),
            "the fixture has updates for {} {} in {} that no ManagedApp of this test covers",
            dep.manager,
            dep.name(),
            dep.package_file
        );
    }
    paired
}

/// The fleet's files, by repository path.
fn fleet_files() -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push((relative.replace('\\', "/"), std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = renovate_dir().join("fleet");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    files
}

/// Git's smart HTTP through `git http-backend`, read-only, serving `root`'s repositories
/// (the simulated Git server's URL path is fixed, and Renovate's repository name is the
/// path Fluxgate compares).
async fn serve_git(root: PathBuf) -> std::net::SocketAddr {
    use axum::body::{Body, to_bytes};
    use axum::extract::{Request, State};
    use axum::response::Response;

    async fn cgi(State(root): State<Arc<PathBuf>>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, 64 << 20).await.expect("request body");
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut child = tokio::process::Command::new("git")
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", root.as_os_str())
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("PATH_INFO", parts.uri.path())
            .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
            .env("CONTENT_TYPE", header("content-type"))
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("GIT_PROTOCOL", header("git-protocol"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git http-backend starts");
        let mut stdin = child.stdin.take().unwrap();
        // Written concurrently: upload-pack may answer before it has read everything.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let _ = stdin.write_all(&body).await;
        });
        let output = child
            .wait_with_output()
            .await
            .expect("git http-backend runs");
        let split = output
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| (at, 4))
            .or_else(|| {
                output
                    .stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|at| (at, 2))
            })
            .expect("CGI headers end with a blank line");
        let head = String::from_utf8_lossy(&output.stdout[..split.0]).into_owned();
        let mut response = Response::builder();
        for line in head.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.eq_ignore_ascii_case("status") {
                let code: u16 = value.trim()[..3].parse().expect("CGI status");
                response = response.status(code);
            } else {
                response = response.header(key.trim(), value.trim());
            }
        }
        response
            .body(Body::from(output.stdout[split.0 + split.1..].to_vec()))
            .expect("a response")
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(cgi).with_state(Arc::new(root));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The app of one field. Its Flux source does not exist in kubesim: the app controller then
/// sets `Ready=False` (not found, not retried) and still evaluates Renovate's data, which is
/// all this test reads. `git.url` and `git.branch` name the repository, so no Flux chain is
/// looked up either.
fn managed_app(field: &Field, url: &str) -> ManagedApp {
    let (kind, name, namespace) = field.source;
    let mut version = json!({"name": FIELD, "path": field.path, "file": field.file});
    if field.image {
        version["format"] = json!("image");
    }
    serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
        "metadata": {"name": field.app, "namespace": NAMESPACE},
        "spec": {
            "source": {"kind": kind, "name": name, "namespace": namespace},
            "git": {"file": field.file, "url": url, "branch": BRANCH},
            "versions": [version],
            "snapshots": {"enabled": false}
        }
    }))
    .expect("a valid ManagedApp")
}

/// `fluxgate run` with its stderr in a file, stopped (and reaped) on drop.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one fixture through `fluxgate run` and checks every app's status against it.
async fn check_fixture(name: &str) {
    let fixture = renovate_dir().join("fixtures").join(name);
    let text = std::fs::read_to_string(&fixture)
        .unwrap_or_else(|e| panic!("reading {}: {e}", fixture.display()));
    let deps = fixture_deps(&text);
    let paired = pair(&deps);

    let scratch = tempfile::tempdir().unwrap();
    let git = paired_git(&scratch);
    let addr = serve_git(scratch.path().join("served")).await;
    let url = format!("http://{addr}/{REPOSITORY_PATH}.git");

    let sim = KubeSim::start().await;
    sim.load_yaml(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .expect("Fluxgate's CRDs load");
    sim.load_third_party_crds().expect("Flux's CRDs load");
    sim.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .unwrap();

    let log = scratch.path().join("fluxgate.log");
    let operator = Operator {
        child: Command::new(env!("CARGO_BIN_EXE_fluxgate"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(sim.kubeconfig_path())
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
            .arg("--git-cache-dir")
            .arg(scratch.path().join("cache"))
            .arg("--renovate-file")
            .arg(&fixture)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("fluxgate runs"),
        log,
    };

    let apps = Api::<ManagedApp>::namespaced(sim.client(), NAMESPACE);
    for (field, _) in &paired {
        apps.create(&PostParams::default(), &managed_app(field, &url))
            .await
            .unwrap_or_else(|e| panic!("creating ManagedApp {}: {e}", field.app));
    }

    // Every app has been through Renovate's data once its UpdateAvailable condition is set
    // (True, UpToDate or NotTrackedByRenovate); an offer appears in that same status write.
    let deadline = Instant::now() + Duration::from_secs(90);
    let statuses: BTreeMap<String, Value> = loop {
        let mut statuses = BTreeMap::new();
        for (field, _) in &paired {
            let app = apps.get(field.app).await.unwrap();
            let status = serde_json::to_value(app.status.unwrap_or_default()).unwrap();
            let evaluated = status["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "UpdateAvailable"));
            if evaluated {
                statuses.insert(field.app.to_owned(), status);
            }
        }
        if statuses.len() == paired.len() {
            break statuses;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: only {:?} of {} apps evaluated Renovate's data within 90s; fluxgate's log:\n{}",
            statuses.keys().collect::<Vec<_>>(),
            paired.len(),
            operator.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(operator);
    drop(git);

    let mut failures = String::new();
    for (field, dep) in &paired {
        let status = &statuses[field.app];
        let shown = &status["availableUpdate"][FIELD];
        let condition = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "UpdateAvailable")
            .unwrap();
        let context = format!(
            "{name}: app {} ({} {} in {}; condition {} {}: {})",
            field.app,
            dep.manager,
            dep.name(),
            dep.package_file,
            condition["status"],
            condition["reason"],
            condition["message"]
        );
        let Some(expected) = expected(field, dep) else {
            if !shown.is_null() {
                let _ = writeln!(
                    failures,
                    "{context}: Renovate's apiVersion move is offered as a version: {shown}"
                );
            }
            continue;
        };
        if shown.is_null() {
            let _ = writeln!(
                failures,
                "{context}: no availableUpdate; expected {} → {} ({})",
                expected.current, expected.chosen.0, expected.chosen.1
            );
            continue;
        }
        let mut check = |what: &str, seen: Value, wanted: Value| {
            if seen != wanted {
                let _ = writeln!(
                    failures,
                    "{context}: {what} is {seen}, Renovate says {wanted}"
                );
            }
        };
        check("current", shown["current"].clone(), json!(expected.current));
        check(
            "version",
            shown["version"].clone(),
            json!(expected.chosen.0),
        );
        check(
            "updateType",
            shown["updateType"].clone(),
            json!(expected.chosen.1),
        );
        let released = shown["releasedAt"].as_str().map(|t| {
            t.parse::<jiff::Timestamp>()
                .expect("releasedAt")
                .to_string()
        });
        check(
            "releasedAt",
            json!(released),
            json!(expected.chosen.2.map(|t| t.to_string())),
        );
        let candidates: BTreeSet<String> = shown["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        check("candidates", json!(candidates), json!(expected.candidates));
    }
    assert!(failures.is_empty(), "\n{failures}");
}

/// The fleet in a bare repository at `served/home/fleet.git`, built by the simulated Git
/// server (kept alive by the returned value) and linked where `git http-backend` serves it.
fn paired_git(scratch: &tempfile::TempDir) -> sim::git_server::GitServer {
    let server = fleet_files()
        .into_iter()
        .fold(
            sim::git_server::GitServer::builder().branch(BRANCH),
            |builder, (path, contents)| builder.file(&path, contents),
        )
        .start()
        .expect("the fleet's Git server starts");
    let link = scratch
        .path()
        .join("served")
        .join(format!("{REPOSITORY_PATH}.git"));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(server.repo_path(), &link).unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_report() {
    check_fixture("local.report.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_log() {
    check_fixture("local.log.ndjson").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_repository_report() {
    check_fixture("gitea.report.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_repository_log() {
    check_fixture("gitea.log.ndjson").await;
}
