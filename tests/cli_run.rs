//! `fluxgate run` fails fast with a clear, actionable message (and no panic) when it cannot
//! work: no kubeconfig, or a cluster that cannot be reached.

use std::process::{Command, Output};

fn fluxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("the fluxgate binary runs")
}

fn assert_clear_failure(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure, got success; stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "stderr should contain {expected:?}: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "no panic expected: {stderr}"
    );
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let output = fluxgate(&[
        "run",
        "--kubeconfig",
        path.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_clear_failure(
        &output,
        &format!("cannot read kubeconfig {}", path.display()),
    );
}

#[test]
fn an_unreachable_cluster_is_reported_with_what_to_check() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n\
             users:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let output = fluxgate(&[
        "run",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_clear_failure(
        &output,
        &format!("cannot reach the Kubernetes API server at http://127.0.0.1:{port}"),
    );
    assert_clear_failure(&output, "check that the cluster is running");
}

#[test]
fn crd_prints_every_kind() {
    let output = fluxgate(&["crd"]);
    assert!(output.status.success());
    let yaml = String::from_utf8(output.stdout).unwrap();
    for name in [
        "managedapps.fluxgate.dev",
        "upgraderequests.fluxgate.dev",
        "rollbackrequests.fluxgate.dev",
    ] {
        assert!(yaml.contains(&format!("name: {name}")), "{name} missing");
    }
}

mod on_kubesim {
    //! `fluxgate run` against a simulated API server: missing CRDs are named with the fix;
    //! with everything installed it serves its endpoints and stops cleanly on SIGTERM.

    use super::assert_clear_failure;
    use kubesim::KubeSim;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn run_args(sim: &KubeSim) -> Vec<String> {
        let kubeconfig = sim.kubeconfig_path().to_string_lossy().into_owned();
        [
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        .map(String::from)
        .to_vec()
    }

    #[tokio::test]
    async fn missing_crds_are_named_with_how_to_install_them() {
        let sim = KubeSim::start().await;
        let output = tokio::task::spawn_blocking({
            let args = run_args(&sim);
            move || {
                Command::new(env!("CARGO_BIN_EXE_fluxgate"))
                    .args(&args)
                    .env("RUST_LOG", "off")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert_clear_failure(&output, "the cluster does not serve APIs Fluxgate needs");
        assert_clear_failure(
            &output,
            "managedapps.fluxgate.dev/v1alpha1: install Fluxgate's CRDs: `fluxgate crd | kubectl apply -f -`",
        );
        assert_clear_failure(
            &output,
            "helmreleases.helm.toolkit.fluxcd.io/v2: install Flux",
        );
        assert_clear_failure(
            &output,
            "volumesnapshots.snapshot.storage.k8s.io/v1: install the CSI snapshot CRDs",
        );
    }

    fn get(addr: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response[9..12].parse().unwrap();
        (code, response)
    }

    /// Starts `fluxgate` with JSON logs at info; stderr lines arrive on the channel.
    fn spawn_logged(
        args: &[String],
        env: &[(&str, &str)],
    ) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fluxgate"))
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .arg("--git-cache-dir")
            .arg(std::env::temp_dir().join(format!("fluxgate-cli-run-{}", std::process::id())))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain stderr on its own thread so the child never blocks on a full pipe.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, lines)
    }

    /// Reads JSON log lines until `found` says so; a stuck child fails the test instead of
    /// hanging it.
    fn wait_for_log(
        lines: &std::sync::mpsc::Receiver<String>,
        timeout: Duration,
        mut found: impl FnMut(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the expected log line within {timeout:?}"));
            let log: serde_json::Value = serde_json::from_str(&line).expect("logs are JSON lines");
            if found(&log) {
                return;
            }
        }
    }

    fn says(log: &serde_json::Value, text: &str) -> bool {
        log["message"].as_str().is_some_and(|m| m.contains(text))
    }

    fn stop(child: &mut std::process::Child) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let stopped_by = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > stopped_by {
                child.kill().unwrap();
                panic!("fluxgate did not stop within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn installed_sim(sim: &KubeSim) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        sim.load_yaml(root.join("crds")).unwrap();
        sim.load_third_party_crds().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_replicas_with_leader_election_one_leads_and_the_other_takes_over() {
        let sim = KubeSim::start().await;
        installed_sim(&sim);
        let mut args = run_args(&sim);
        args.extend(["--leader-election=true", "--namespace", "default"].map(String::from));
        tokio::task::spawn_blocking(move || {
            let (mut a, a_lines) = spawn_logged(&args, &[("POD_NAME", "fluxgate-a")]);
            wait_for_log(&a_lines, Duration::from_secs(30), |l| says(l, "leading"));
            let (mut b, b_lines) = spawn_logged(&args, &[("POD_NAME", "fluxgate-b")]);
            wait_for_log(&b_lines, Duration::from_secs(30), |l| {
                says(l, "waiting to lead")
            });
            // While a leads, b never starts its controllers.
            let b_early = b_lines.recv_timeout(Duration::from_secs(4));
            assert!(
                !b_early.as_deref().is_ok_and(|l| l.contains("leading")),
                "two leaders at once: {b_early:?}"
            );
            assert!(stop(&mut a).success(), "a steps down cleanly");
            wait_for_log(&b_lines, Duration::from_secs(40), |l| says(l, "leading"));
            assert!(stop(&mut b).success());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn with_everything_installed_it_serves_endpoints_until_sigterm() {
        let sim = KubeSim::start().await;
        installed_sim(&sim);
        let args = run_args(&sim);
        tokio::task::spawn_blocking(move || {
            let (mut child, lines) = spawn_logged(&args, &[]);
            let mut endpoints = None;
            wait_for_log(&lines, Duration::from_secs(30), |log| {
                if let Some(addr) = log["endpoints"].as_str() {
                    endpoints = Some(addr.to_owned());
                }
                log["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("every required API is served"))
            });
            let addr = endpoints.expect("the endpoints address is logged");
            assert_eq!(get(&addr, "/healthz").0, 200);
            assert_eq!(get(&addr, "/readyz").0, 200);
            let (code, metrics) = get(&addr, "/metrics");
            assert_eq!(code, 200);
            assert!(
                metrics.contains("fluxgate_build_info{version="),
                "{metrics}"
            );

            let status = stop(&mut child);
            assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
            // The child has exited, so its stderr ends and the reader thread hangs up.
            let rest: Vec<String> = lines.iter().collect();
            assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
        })
        .await
        .unwrap();
    }
}
