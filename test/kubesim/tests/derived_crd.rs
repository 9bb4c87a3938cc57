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
