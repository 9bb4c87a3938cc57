//! A CRD generated the way Fluxgate generates its own (kube `CustomResource` + schemars) loads and validates.

mod common;

use common::status;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubesim::KubeSim;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(kube::CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "fluxgate.dev",
    version = "v1alpha1",
    kind = "Sample",
    namespaced,
    status = "SampleStatus"
)]
#[kube(printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#)]
#[kube(validation = Rule::new("self.spec.replicas <= 5").message("at most 5 replicas"))]
#[kube(validation = Rule::new("self.spec.class == oldSelf.spec.class").message("class is immutable"))]
pub struct SampleSpec {
    /// Repo-relative path.
    #[schemars(length(min = 1))]
    pub file: String,
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub class: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub enum Mode {
    Fast,
    Safe,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct SampleStatus {
    pub phase: Option<String>,
}

#[tokio::test]
async fn kube_derived_crd_validates_like_the_real_server() {
    let sim = KubeSim::start().await;
    sim.put(serde_json::to_value(Sample::crd()).unwrap())
        .unwrap();
    let api: Api<Sample> = Api::default_namespaced(sim.client());
    let good = Sample::new(
        "s",
        SampleSpec {
            file: "apps/db.yaml".into(),
            replicas: 1,
            mode: Some(Mode::Safe),
            class: "a".into(),
        },
    );
    api.create(&PostParams::default(), &good).await.unwrap();

    let mut bad = good.clone();
    bad.metadata.name = Some("b".into());
    bad.spec.replicas = 9;
    let st = status(api.create(&PostParams::default(), &bad).await);
    assert_eq!(st.code, 422);
    assert!(st.message.contains("at most 5 replicas"), "{}", st.message);

    bad.spec.replicas = 1;
    bad.spec.file = String::new();
    let st = status(api.create(&PostParams::default(), &bad).await);
    assert_eq!(st.details.unwrap().causes[0].field, "spec.file");

    let st = status(
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"mode": "Slow"}})),
        )
        .await,
    );
    assert_eq!(
        st.details.unwrap().causes[0].reason,
        "FieldValueNotSupported"
    );
    let st = status(
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"class": "b"}})),
        )
        .await,
    );
    assert!(st.message.contains("immutable"), "{}", st.message);

    let s = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Planned"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.status.unwrap().phase.as_deref(), Some("Planned"));
}

#[tokio::test]
async fn kube_runtime_controller_reconciles_with_one_status_write() {
    use futures::StreamExt;
    use kube::runtime::controller::{Action, Controller};
    use kubesim::Match;
    use std::sync::Arc;
    use std::time::Duration;

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct E(#[from] kube::Error);

    async fn reconcile(obj: Arc<Sample>, api: Arc<Api<Sample>>) -> Result<Action, E> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let want = format!("Planned-{}", obj.metadata.generation.unwrap_or(0));
        if obj.status.as_ref().and_then(|s| s.phase.as_deref()) != Some(want.as_str()) {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"phase": want}})),
            )
            .await?;
        }
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<Sample>, _: &E, _: Arc<Api<Sample>>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }

    let sim = KubeSim::start().await;
    sim.put(serde_json::to_value(Sample::crd()).unwrap())
        .unwrap();
    let api: Api<Sample> = Api::default_namespaced(sim.client());
    let ctx = Arc::new(api.clone());
    let controller = tokio::spawn(
        Controller::new(api.clone(), kube::runtime::watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );
    let spec = SampleSpec {
        file: "apps/db.yaml".into(),
        replicas: 1,
        mode: None,
        class: "a".into(),
    };
    api.create(&PostParams::default(), &Sample::new("s", spec))
        .await
        .unwrap();
    let status_writes = Match::any()
        .verb("patch")
        .resource("samples")
        .name("s")
        .subresource("status");
    for _ in 0..100 {
        if api
            .get("s")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Planned-1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The status write's own event reconciles again, and that reconcile must not write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.count(&status_writes), 1);
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    for _ in 0..100 {
        if api
            .get("s")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Planned-2")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.count(&status_writes), 2);
    controller.abort();
}
