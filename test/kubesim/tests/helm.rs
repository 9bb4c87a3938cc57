//! Real Helm (the `helm-python-sdk` wheel, Helm 4's Go SDK) installs and upgrades a release in kubesim.
//!
//! Needs a Python that can `import helm_python` (`HELM_PYTHON`, default `python3`); without
//! one the test prints a SKIPPED line and returns.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};
use kubesim::KubeSim;

const SCRIPT: &str = r#"
import sys, helm_python as helm
cfg = helm.Config(kubeconfig_path=sys.argv[1], namespace="default")
cfg.install(sys.argv[2], "demo", {"v": "1"})
cfg.upgrade(sys.argv[2], "demo", {"v": "2"})
print("ok")
"#;

#[tokio::test]
async fn helm_install_and_upgrade_write_release_secrets() {
    let python = std::env::var("HELM_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        eprintln!(
            "SKIPPED: {python} cannot import helm_python (pip install helm-python-sdk, or set HELM_PYTHON); the Helm test did not run"
        );
        return;
    }
    let sim = KubeSim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: {{ .Values.v | quote }}\n",
    )
    .unwrap();
    let script = dir.path().join("helm.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(sim.kubeconfig_path())
        .arg(&chart)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "helm failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let secrets: Api<Secret> = Api::default_namespaced(sim.client());
    let releases = secrets
        .list(&ListParams::default().labels("owner=helm,name=demo"))
        .await
        .unwrap();
    let mut states: Vec<(String, String)> = releases
        .items
        .iter()
        .map(|s| {
            assert_eq!(s.type_.as_deref(), Some("helm.sh/release.v1"));
            let l = s.metadata.labels.as_ref().unwrap();
            (l["version"].clone(), l["status"].clone())
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("1".into(), "superseded".into()),
            ("2".into(), "deployed".into())
        ]
    );
    let cm: ConfigMap = Api::default_namespaced(sim.client())
        .get("demo-cm")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["v"], "2");
}
