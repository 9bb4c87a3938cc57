//! Conformance cases that hold on kubesim and on the real API server alike: each takes a
//! client and a namespace of its own, so `kube_rs.rs` runs it on kubesim and
//! `real_api_server.rs` on the real control plane (test/realstack). Where the real server
//! acts later (its garbage collector), a case waits for the outcome instead of expecting it
//! at once; kubesim's immediate answer passes the same wait.
#![allow(dead_code)]

use super::{obj, status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::json;
use std::time::{Duration, Instant};

pub fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

/// Waits up to 30 s for `done`, for what a real controller does a moment later.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn crud_generate_name_and_error_statuses(client: Client, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let created = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let dup = status(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await,
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let missing = status(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    let mut gen_cm = cm("", json!({}));
    gen_cm.metadata.name = None;
    gen_cm.metadata.generate_name = Some("gen-".into());
    let g = api.create(&PostParams::default(), &gen_cm).await.unwrap();
    let name = g.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let mut upd = created.clone();
    upd.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = api
        .replace("a", &PostParams::default(), &upd)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "one global counter moves forward");

    // Stale resourceVersion: 409 Conflict, as a Status.
    let stale = status(api.replace("a", &PostParams::default(), &upd).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );

    // A no-op update keeps the resourceVersion (no write, no event).
    let same = api
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        updated.metadata.resource_version
    );

    let bad = status(
        api.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await,
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert_eq!(bad.details.unwrap().causes[0].field, "metadata.name");

    let bad_label = status(
        api.create(
            &PostParams::default(),
            &cm("l", json!({"version": "1.2.3+build"})),
        )
        .await,
    );
    assert_eq!(
        (
            bad_label.code,
            bad_label.details.unwrap().causes[0].field.as_str()
        ),
        (422, "metadata.labels")
    );

    let nsapi: Api<ConfigMap> = Api::namespaced(client.clone(), "absent");
    let no_ns = status(
        nsapi
            .create(&PostParams::default(), &cm("x", json!({})))
            .await,
    );
    assert_eq!(
        (no_ns.code, no_ns.message.as_str()),
        (404, "namespaces \"absent\" not found")
    );

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
}

pub async fn label_values_over_63_characters_are_refused_in_objects_and_selectors(
    client: Client,
    ns: &str,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let long = "a".repeat(64);
    let refused = status(
        api.create(&PostParams::default(), &cm("long", json!({"app": long})))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    let causes = refused.details.unwrap().causes;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].field, "metadata.labels");
    assert!(
        causes[0]
            .message
            .ends_with(": must be no more than 63 bytes"),
        "{}",
        causes[0].message
    );
    // Too long and ill-formed: both problems, as two causes.
    let both = status(
        api.create(
            &PostParams::default(),
            &cm("both", json!({"app": format!("{long}-")})),
        )
        .await,
    );
    assert_eq!(both.details.unwrap().causes.len(), 2);
    let fits = "a".repeat(63);
    api.create(&PostParams::default(), &cm("fits", json!({"app": fits})))
        .await
        .unwrap();

    let selector = format!("app={long}");
    let bad_selector = status(api.list(&ListParams::default().labels(&selector)).await);
    assert_eq!(
        (bad_selector.code, bad_selector.reason.as_str()),
        (400, "BadRequest")
    );
    assert!(
        bad_selector
            .message
            .contains("values[0][app]: Invalid value")
            && bad_selector
                .message
                .contains("must be no more than 63 bytes"),
        "{}",
        bad_selector.message
    );
    let listed = api
        .list(&ListParams::default().labels(&format!("app={fits}")))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

pub async fn finalizers_hold_deletion_until_removed(client: Client, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["kubesim.dev/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // New finalizers cannot be added while deleting.
    let st = status(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["kubesim.dev/hold", "x/y"]}})),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
}

pub async fn owner_references_are_garbage_collected(client: Client, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let owner = api
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]);
    for n in ["dep1", "dep2"] {
        let mut d = cm(n, json!({}));
        d.metadata.owner_references = Some(serde_json::from_value(oref.clone()).unwrap());
        api.create(&PostParams::default(), &d).await.unwrap();
    }
    let mut grandchild = cm("grandchild", json!({}));
    let dep1 = api.get("dep1").await.unwrap();
    grandchild.metadata.owner_references = Some(serde_json::from_value(
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "dep1", "uid": dep1.metadata.uid}]),
    ).unwrap());
    api.create(&PostParams::default(), &grandchild)
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    for n in ["dep1", "dep2", "grandchild"] {
        eventually(&format!("{n} to be collected"), async || {
            api.get_opt(n).await.unwrap().is_none()
        })
        .await;
    }
    // Orphan keeps dependents and drops the reference.
    let owner = api
        .create(&PostParams::default(), &cm("owner2", json!({})))
        .await
        .unwrap();
    let mut d = cm("kept", json!({}));
    d.metadata.owner_references = Some(serde_json::from_value(
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner.metadata.uid}]),
    ).unwrap());
    api.create(&PostParams::default(), &d).await.unwrap();
    api.delete("owner2", &DeleteParams::orphan()).await.unwrap();
    eventually("the orphan's owner reference to go", async || {
        api.get("kept")
            .await
            .unwrap()
            .metadata
            .owner_references
            .is_none()
    })
    .await;
    assert!(api.get_opt("kept").await.unwrap().is_some(), "kept is kept");
}

pub async fn selectors_limit_and_continue(client: Client, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..10 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        let mut labels = json!({"app": "web", "tier": tier});
        if i < 3 {
            labels["canary"] = json!("yes");
        }
        api.create(&PostParams::default(), &cm(&format!("cm-{i}"), labels))
            .await
            .unwrap();
    }
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    other
        .create(
            &PostParams::default(),
            &cm("elsewhere", json!({"app": "web"})),
        )
        .await
        .unwrap();

    let count = |sel: &'static str| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=front").await, 5);
    assert_eq!(count("tier==front").await, 5);
    // Negative selectors also match objects without the label, such as the
    // kube-root-ca.crt ConfigMap of every real namespace: scoped to the app.
    assert_eq!(count("app=web,tier!=front").await, 5);
    assert_eq!(count("tier in (front,back)").await, 10);
    assert_eq!(count("app=web,tier notin (front)").await, 5);
    assert_eq!(count("canary").await, 3);
    assert_eq!(count("app=web,!canary").await, 7);
    assert_eq!(count("app=web,!canary,tier=back").await, 4);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=cm-3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all: Api<ConfigMap> = Api::all(client.clone());
    let elsewhere = all
        .list(
            &ListParams::default()
                .labels("app=web")
                .fields(&format!("metadata.namespace!={ns}")),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.items.len(), 1);
    let unsupported = status(api.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!(unsupported.code, 400);

    let mut names = Vec::new();
    // By label: a real namespace also holds the kube-root-ca.crt ConfigMap.
    let mut lp = ListParams::default().labels("app=web").limit(3);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names.len(), 10);
}

pub fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"}]}}}
    }))
    .unwrap()
}

pub async fn patches_merge_json_strategic_and_scale(client: Client, ns: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let pp = PatchParams::default();
    let d = api
        .patch(
            "web",
            &pp,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "sidecar", "$patch": "delete"}]}}}})),
        )
        .await
        .unwrap();
    let containers = d.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("nginx:2"));
    assert_eq!(containers[0].env.as_ref().unwrap().len(), 2);

    let d = api
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.labels.unwrap()["a"], "b");

    let ok: Patch<()> = Patch::Json(
        serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 2}]))
        .unwrap(),
    );
    api.patch("web", &pp, &ok).await.unwrap();
    let failing: Patch<()> = Patch::Json(
        serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 5}]))
        .unwrap(),
    );
    let st = status(api.patch("web", &pp, &failing).await);
    assert_eq!(st.code, 422);

    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    api.patch_scale("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    let d = api.get("web").await.unwrap();
    assert_eq!(d.spec.replicas, Some(4));
    // create, strategic, json patch, scale: metadata-only and refused patches do not count.
    assert_eq!(d.metadata.generation, Some(4));
}

/// Needs the Flux CRDs (kubesim's own, `kubesim::third_party::CRDS`).
pub async fn generation_and_status_subresource(client: Client, ns: &str) {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let created = api
        .create(
            &PostParams::default(),
            &obj(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "r"},
            "spec": {"url": "https://example.com/r.git", "interval": "1m"},
            "status": {"artifact": "ignored on create"}})),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.data["status"].get("artifact").is_none());

    // Metadata-only change: no generation bump.
    let p = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    // Spec change: bump. Status in a main write is ignored.
    let p = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "5m"}, "status": {"observedGeneration": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    assert_ne!(p.data["status"]["observedGeneration"], 7, "status ignored");
    // Status write changes only status.
    let s = api
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "9m"}, "status": {"observedGeneration": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["observedGeneration"], 2);
    assert_eq!(s.data["spec"]["interval"], "5m");
    assert_eq!(s.metadata.generation, Some(2));
}

/// A CRD in a protected group (`*.k8s.io`, `*.kubernetes.io`) needs the
/// `api-approved.kubernetes.io` annotation: a URL or a reason starting with `unapproved`.
pub async fn protected_groups_need_api_approval(client: Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = |approval: Option<&str>| -> CustomResourceDefinition {
        let annotations = approval.map(|a| json!({"api-approved.kubernetes.io": a}));
        serde_json::from_value(json!({
            "metadata": {"name": "widgets.conformance.k8s.io", "annotations": annotations},
            "spec": {"group": "conformance.k8s.io", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap()
    };
    let missing = status(crds.create(&PostParams::default(), &crd(None)).await);
    assert_eq!(missing.code, 422);
    let cause = &missing.details.unwrap().causes[0];
    assert_eq!(
        cause.field,
        "metadata.annotations[api-approved.kubernetes.io]"
    );
    assert!(
        cause.message.contains(
            "protected groups must have approval annotation \"api-approved.kubernetes.io\""
        ),
        "{}",
        cause.message
    );
    let invalid = status(
        crds.create(&PostParams::default(), &crd(Some("trust me")))
            .await,
    );
    assert_eq!(invalid.code, 422);
    assert!(
        invalid.details.unwrap().causes[0]
            .message
            .contains("with either a URL or a reason starting with \"unapproved\""),
    );
    crds.create(
        &PostParams::default(),
        &crd(Some("unapproved, a conformance test")),
    )
    .await
    .unwrap();
    crds.delete("widgets.conformance.k8s.io", &DeleteParams::default())
        .await
        .unwrap();
}

pub const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.kubesim.dev}
spec:
  group: test.kubesim.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1
    served: true
    storage: true
    subresources: {status: {}, scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [storage]
            x-kubernetes-validations:
            - {rule: "self.storage == oldSelf.storage", message: "storage is immutable"}
            - {rule: "self.size <= 10", messageExpression: "'size exceeds 10 for storage ' + self.storage"}
            properties:
              storage: {type: string, minLength: 1, maxLength: 8}
              size: {type: integer, default: 1, minimum: 0}
              replicas: {type: integer}
              mode: {type: string, enum: [fast, slow]}
              port: {x-kubernetes-int-or-string: true}
              note: {type: string, nullable: true}
              tags: {type: array, maxItems: 3, items: {type: string}, x-kubernetes-list-type: set}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items: {type: object, required: [name], properties: {name: {type: string}, port: {type: integer}}}
              labels: {type: object, additionalProperties: {type: string}, maxProperties: 2}
          status:
            type: object
            properties:
              replicas: {type: integer}
              conditions: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

pub async fn custom_crd_schema_cel_transition_rules_and_versions(client: Client, ns: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definition: CustomResourceDefinition = serde_saphyr::from_str(WIDGET_CRD).unwrap();
    crds.create(&PostParams::default(), &definition)
        .await
        .unwrap();
    eventually(
        "the Widget CRD to be Established with its names accepted",
        async || {
            let conditions = crds
                .get("widgets.test.kubesim.dev")
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .unwrap_or_default();
            ["Established", "NamesAccepted"].iter().all(|wanted| {
                conditions
                    .iter()
                    .any(|c| c.type_ == *wanted && c.status == "True")
            })
        },
    )
    .await;

    let widget = |version: &str| {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("test.kubesim.dev", version, "Widget"),
            "widgets",
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
    };
    let api = widget("v1");
    let w = |spec: serde_json::Value| {
        obj(
            json!({"apiVersion": "test.kubesim.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}),
        )
    };
    let invalid = |spec: serde_json::Value| {
        let api = api.clone();
        let o = w(spec);
        async move {
            let st = status(api.create(&PostParams::default(), &o).await);
            assert_eq!(st.code, 422, "{}", st.message);
            st.details
                .unwrap()
                .causes
                .into_iter()
                .map(|c| (c.field, c.reason))
                .collect::<Vec<_>>()
        }
    };
    let has = |causes: &[(String, String)], field: &str, reason: &str| {
        assert!(
            causes.iter().any(|(f, r)| f == field && r == reason),
            "want {field}/{reason} in {causes:?}"
        );
    };
    has(
        &invalid(json!({})).await,
        "spec.storage",
        "FieldValueRequired",
    );
    has(
        &invalid(json!({"storage": "waytoolongvalue"})).await,
        "spec.storage",
        "FieldValueTooLong",
    );
    has(
        &invalid(json!({"storage": "s", "mode": "medium"})).await,
        "spec.mode",
        "FieldValueNotSupported",
    );
    has(
        &invalid(json!({"storage": "s", "size": -1})).await,
        "spec.size",
        "FieldValueInvalid",
    );
    has(
        &invalid(json!({"storage": "s", "port": true})).await,
        "spec.port",
        "FieldValueTypeInvalid",
    );
    has(
        &invalid(json!({"storage": "s", "tags": ["a", "a"]})).await,
        "spec.tags[1]",
        "FieldValueDuplicate",
    );
    has(
        &invalid(json!({"storage": "s", "tags": ["a", "b", "c", "d"]})).await,
        "spec.tags",
        "FieldValueTooMany",
    );
    has(
        &invalid(json!({"storage": "s", "ports": [{"name": "a"}, {"name": "a"}]})).await,
        "spec.ports[1]",
        "FieldValueDuplicate",
    );
    has(
        &invalid(json!({"storage": "s", "labels": {"a": "1", "b": "2", "c": "3"}})).await,
        "spec.labels",
        "FieldValueTooMany",
    );
    has(
        &invalid(json!({"storage": "s", "labels": {"a": 1}})).await,
        "spec.labels.a",
        "FieldValueTypeInvalid",
    );
    let cel = invalid(json!({"storage": "s", "size": 11})).await;
    has(&cel, "spec", "FieldValueInvalid");

    let created = api
        .create(
            &PostParams::default(),
            &w(json!({"storage": "s", "port": "http", "note": null, "extra": 1})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 1, "default applied");
    assert!(
        created.data["spec"]["note"].is_null() && created.data["spec"].get("note").is_some(),
        "nullable null kept"
    );
    assert!(
        created.data["spec"].get("extra").is_none(),
        "unknown field pruned"
    );

    // Transition rule: storage may not change on update.
    let st = status(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storage": "t"}})),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("storage is immutable"),
        "{}",
        st.message
    );
    let st = status(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 12}})),
        )
        .await,
    );
    assert!(
        st.message.contains("size exceeds 10 for storage s"),
        "{}",
        st.message
    );

    // The same object through the other served version.
    let beta = widget("v1beta1");
    let b = beta.get("w").await.unwrap();
    assert_eq!(b.types.unwrap().api_version, "test.kubesim.dev/v1beta1");

    // Scale subresource from the CRD's paths.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let scale = api.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));

    // Deleting the CRD removes its objects and its discovery entry.
    crds.delete("widgets.test.kubesim.dev", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the Widget to go with its CRD",
        async || matches!(api.get("w").await, Err(kube::Error::Api(s)) if s.code == 404),
    )
    .await;
}

pub async fn server_side_apply_ownership_and_lease_election(client: Client, ns: &str) {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    let a = api
        .patch(
            "leader",
            &PatchParams::apply("candidate-a"),
            &Patch::Apply(lease("a")),
        )
        .await
        .unwrap();
    assert_eq!(a.spec.unwrap().holder_identity.as_deref(), Some("a"));
    let mf = a.metadata.managed_fields.unwrap();
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("candidate-a"), Some("Apply"))
    );
    // Another candidate taking the lease conflicts.
    let st = status(
        api.patch(
            "leader",
            &PatchParams::apply("candidate-b"),
            &Patch::Apply(lease("b")),
        )
        .await,
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(
        st.message.contains("candidate-a") && st.message.contains(".spec.holderIdentity"),
        "{}",
        st.message
    );
    // Forcing takes it over.
    let b = api
        .patch(
            "leader",
            &PatchParams::apply("candidate-b").force(),
            &Patch::Apply(lease("b")),
        )
        .await
        .unwrap();
    assert_eq!(b.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // Re-applying without a field removes it (the applier owned it alone).
    let less = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"}, "spec": {"holderIdentity": "b"}});
    let c = api
        .patch(
            "leader",
            &PatchParams::apply("candidate-b").force(),
            &Patch::Apply(less),
        )
        .await
        .unwrap();
    let spec = c.spec.unwrap();
    assert_eq!(
        spec.lease_duration_seconds,
        Some(15),
        "still owned by candidate-a, so it stays"
    );
    // Apply without a fieldManager is refused: an invalid PatchOptions.
    let st = status(
        api.patch("leader", &PatchParams::default(), &Patch::Apply(lease("x")))
            .await,
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        st.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}

/// A deleted namespace loses its objects and then goes (the real namespace controller
/// does it a moment later; `default` cannot be deleted).
pub async fn namespace_deletion_removes_its_objects(client: Client, ns: &str) {
    let tmp = format!("{ns}-tmp");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": tmp}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &tmp);
    api.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    nss.delete(&tmp, &DeleteParams::default()).await.unwrap();
    eventually(
        "the namespace's objects and then the namespace to go",
        async || {
            api.get_opt("c").await.unwrap().is_none() && nss.get_opt(&tmp).await.unwrap().is_none()
        },
    )
    .await;
    let st = status(nss.delete("default", &DeleteParams::default()).await);
    assert_eq!(st.code, 403);
}

/// A watch from a resourceVersion delivers every later change of an object, in order,
/// each with the resourceVersion its write answered, and resourceVersions grow as integers.
/// Fluxgate's caches rely on both: a watch passes through each version the operator wrote,
/// and a cached object at a higher version than a write is at least as new as it
/// (`cluster::cache`'s read-your-writes).
pub async fn watches_deliver_every_change_in_order_with_growing_versions(client: Client, ns: &str) {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let api = Api::<ConfigMap>::namespaced(client, ns);
    let created = api
        .create(&PostParams::default(), &cm("watched", json!({})))
        .await
        .unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(20), &from)
        .await
        .unwrap()
        .boxed();
    let mut written = Vec::new();
    for value in ["1", "2", "3"] {
        let patch = Patch::Merge(json!({"data": {"k": value}}));
        let patched = api
            .patch("watched", &PatchParams::default(), &patch)
            .await
            .unwrap();
        written.push(patched.metadata.resource_version.unwrap());
    }
    api.delete("watched", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|(kind, _)| *kind == "Deleted") {
        assert!(
            Instant::now() < deadline,
            "the watch did not deliver the deletion: {seen:?}"
        );
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("a watch event within 20 s")
            .expect("the watch stays open")
            .unwrap();
        match event {
            WatchEvent::Modified(o) => {
                seen.push(("Modified", o.metadata.resource_version.unwrap()))
            }
            WatchEvent::Deleted(o) => seen.push(("Deleted", o.metadata.resource_version.unwrap())),
            WatchEvent::Added(o) => seen.push(("Added", o.metadata.resource_version.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    let modified: Vec<&str> = seen
        .iter()
        .filter(|(kind, _)| *kind == "Modified")
        .map(|(_, rv)| rv.as_str())
        .collect();
    assert_eq!(modified, written, "every write, in order: {seen:?}");
    let versions: Vec<u64> = std::iter::once(&from)
        .chain(seen.iter().map(|(_, rv)| rv))
        .map(|rv| {
            rv.parse()
                .unwrap_or_else(|_| panic!("resourceVersion {rv} is an integer"))
        })
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions grow: {versions:?}"
    );
}

/// A metadata-only list and watch (`Accept: ...;as=PartialObjectMetadata`) answer with
/// `PartialObjectMetadata` objects, deletions included: Fluxgate watches pods and PVCs this
/// way, only to wake reconciles.
pub async fn metadata_only_lists_and_watches(client: Client, ns: &str) {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let api = Api::<ConfigMap>::namespaced(client, ns);
    api.create(&PostParams::default(), &cm("slim", json!({"app": "slim"})))
        .await
        .unwrap();
    let list = api
        .list_metadata(&ListParams::default().labels("app=slim"))
        .await
        .unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(
        item.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(item.metadata.labels.as_ref().unwrap()["app"], "slim");
    let from = list.metadata.resource_version.clone().unwrap();
    let mut events = api
        .watch_metadata(&WatchParams::default().timeout(20), &from)
        .await
        .unwrap()
        .boxed();
    api.delete("slim", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no metadata-only Deleted event");
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("a watch event within 20 s")
            .expect("the watch stays open")
            .unwrap();
        if let WatchEvent::Deleted(gone) = event {
            assert_eq!(gone.metadata.name.as_deref(), Some("slim"));
            assert_eq!(
                gone.types.as_ref().map(|t| t.kind.as_str()),
                Some("PartialObjectMetadata")
            );
            break;
        }
    }
}

/// Storage objects as the real server stores them: a StorageClass deletes its volumes and
/// binds at once unless it says otherwise; a claim that names no class gets the default one
/// (the DefaultStorageClass admission plugin), `""` stays no class; a claim is `Pending` and
/// `Filesystem` from its creation; `dataSource` and `dataSourceRef` mirror each other when
/// only one is given; a PersistentVolume keeps its data (`Retain`) unless told otherwise and
/// records when its phase last changed. Fluxgate's restore sets both data-source fields and
/// its data-safety checks read reclaim policies, so the sims must see what a cluster has.
pub async fn storage_defaults_default_class_and_data_sources(client: Client, ns: &str) {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    let classes: Api<StorageClass> = Api::all(client.clone());
    let (plain, default) = (format!("{ns}-plain"), format!("{ns}-default"));
    for (name, is_default) in [(&plain, false), (&default, true)] {
        let class = json!({
            "metadata": {"name": name, "annotations": {
                "storageclass.kubernetes.io/is-default-class": is_default.to_string()}},
            "provisioner": "conformance.fluxgate.dev",
        });
        let made = classes
            .create(
                &PostParams::default(),
                &serde_json::from_value(class).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("creating StorageClass {name}: {e}"));
        assert_eq!(made.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(made.volume_binding_mode.as_deref(), Some("Immediate"));
    }

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = |name: &str, extra: serde_json::Value| {
        let mut c = json!({"metadata": {"name": name}, "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}});
        for (k, v) in extra.as_object().unwrap() {
            c["spec"][k] = v.clone();
        }
        serde_json::from_value::<PersistentVolumeClaim>(c).unwrap()
    };
    let snapshot =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s1"});
    let from_source = claims
        .create(
            &PostParams::default(),
            &claim("from-source", json!({"dataSource": snapshot})),
        )
        .await
        .unwrap();
    let spec = from_source.spec.clone().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some(default.as_str()));
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(
        serde_json::to_value(&spec.data_source_ref).unwrap(),
        snapshot,
        "dataSourceRef mirrors dataSource"
    );
    let phase = from_source.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));

    let from_ref = claims
        .create(
            &PostParams::default(),
            &claim(
                "from-ref",
                json!({"dataSourceRef": snapshot, "storageClassName": ""}),
            ),
        )
        .await
        .unwrap();
    let spec = from_ref.spec.unwrap();
    assert_eq!(
        spec.storage_class_name.as_deref(),
        Some(""),
        "\"\" is no class"
    );
    assert_eq!(serde_json::to_value(&spec.data_source).unwrap(), snapshot);
    let named = claims
        .create(
            &PostParams::default(),
            &claim("named", json!({"storageClassName": plain})),
        )
        .await
        .unwrap();
    assert_eq!(named.spec.unwrap().storage_class_name, Some(plain.clone()));

    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv_name = format!("{ns}-pv");
    let pv = json!({"metadata": {"name": pv_name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "csi": {"driver": "conformance.fluxgate.dev", "volumeHandle": "h1"}}});
    let made = volumes
        .create(&PostParams::default(), &serde_json::from_value(pv).unwrap())
        .await
        .unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    let status = made.status.unwrap();
    // Pending as created; the real PV controller may already have made it Available.
    assert!(
        matches!(status.phase.as_deref(), Some("Pending" | "Available")),
        "phase {:?}",
        status.phase
    );
    assert!(status.last_phase_transition_time.is_some());

    volumes
        .delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    for name in [plain, default] {
        classes
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// A bound claim's request may not shrink to its capacity or below
/// (ValidatePersistentVolumeClaimUpdate, k8s.io/kubernetes v1.36.3): neither by a patch nor
/// by a server-side apply of a manifest asking for less, as kustomize-controller sends for a
/// PVC restored larger than its manifest (the restore size of a snapshot rounded up). The
/// refusal is 422 Invalid, which fluxcd/pkg/ssa (v0.76.1, `IsImmutableError`) counts as an
/// immutable-field error: a Kustomization then fails, or with `force` deletes and recreates
/// the claim.
pub async fn a_bound_claim_request_never_shrinks_to_its_capacity(client: Client, ns: &str) {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let pv_name = format!("{ns}-restored");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = json!({"metadata": {"name": pv_name}, "spec": {
        "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
        "claimRef": {"namespace": ns, "name": "restored"},
        "csi": {"driver": "conformance.fluxgate.dev", "volumeHandle": "h-restored"}}});
    volumes
        .create(&PostParams::default(), &serde_json::from_value(pv).unwrap())
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = |storage: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "restored", "namespace": ns},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                        "volumeName": pv_name, "resources": {"requests": {"storage": storage}}}})
    };
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(claim("2Gi")).unwrap(),
        )
        .await
        .unwrap();
    // The real PV controller binds the pre-bound pair; on kubesim the case writes what it
    // would (the same values, so the two writers agree).
    let bound = json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                                  "capacity": {"storage": "2Gi"}}});
    claims
        .patch_status("restored", &PatchParams::default(), &Patch::Merge(&bound))
        .await
        .unwrap();
    eventually("the claim to be bound", async || {
        claims
            .get("restored")
            .await
            .ok()
            .and_then(|c| c.status?.phase)
            == Some("Bound".into())
    })
    .await;

    let shrink = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
    let refused = status(
        claims
            .patch("restored", &PatchParams::default(), &Patch::Merge(&shrink))
            .await,
    );
    let (code, message) = (refused.code, refused.message);
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains(
            "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
        ),
        "{message}"
    );
    // As kustomize-controller applies its manifest.
    let apply = PatchParams::apply("kustomize-controller").force();
    let refused = status(
        claims
            .patch("restored", &apply, &Patch::Apply(claim("1Gi")))
            .await,
    );
    let (code, message) = (refused.code, refused.message);
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("field can not be less than status.capacity"),
        "{message}"
    );
    // The manifest's request at the claim's size applies. (Growing it is a matter for the
    // PersistentVolumeClaimResize admission plugin and the class's allowVolumeExpansion,
    // which kubesim does not model.)
    let same = claims
        .patch("restored", &apply, &Patch::Apply(claim("2Gi")))
        .await
        .expect("an apply of the same size");
    let requests = same.spec.unwrap().resources.unwrap().requests.unwrap();
    assert_eq!(requests["storage"].0, "2Gi");

    claims
        .delete("restored", &DeleteParams::default())
        .await
        .unwrap();
    let _ = volumes.delete(&pv_name, &DeleteParams::default()).await;
}
