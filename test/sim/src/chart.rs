//! The simulated Helm chart: chart version + values → a StatefulSet or Deployment named
//! after the release (image, replicas, persistence from values) and its manifest text.
//!
//! Values it understands:
//! - `kind`: `StatefulSet` (default) or `Deployment`;
//! - `image.repository` (default `ghcr.io/example/<chart>`), `image.tag` (default: the
//!   chart version);
//! - `replicaCount` or `replicas` (default 1);
//! - `persistence`: a list of `{name, size, storageClass?}`; a StatefulSet gets one
//!   `volumeClaimTemplate` each, a Deployment one PVC `<release>-<name>` each;
//! - `persistentVolumeClaimRetentionPolicy` (`{whenScaled, whenDeleted}`): copied into a
//!   StatefulSet's spec as charts commonly expose it;
//! - `podAnnotations`: extra pod template annotations.
//!
//! Its twin for real Helm is `test/sim/charts/app` (the e2e stories on real Flux package
//! it per version): the same objects, labels on the workload, its claims and its pods
//! (`app.kubernetes.io/version` is the version the chart was published as, which a pod
//! webhook reads to mark the pods of a version declared failing).

use crate::faults::NEVER_READY_ANNOTATION;
use serde_json::{Value, json};

/// One rendering of the chart.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The objects, in install order.
    pub objects: Vec<Value>,
    /// The manifest as Helm stores it in a release (`---` + `# Source:` per object).
    pub manifest: String,
}

/// Renders the chart `chart` at `version` — as helm-controller hands it to Helm, with the
/// build metadata it may have appended (`1.5.0+<12 hex>` for an OCIRepository chart) — for
/// release `release` in `namespace`. `failing` marks the pods as never ready (a broken
/// version). Like `test/sim/charts/app`: the image tag and `app.kubernetes.io/version` are
/// the version as published (the chart's appVersion there), `helm.sh/chart` is
/// `<chart>-<.Chart.Version>` with `+` spelled `_` (a label value cannot hold `+`), as
/// `helm create`'s charts write it.
pub fn render(
    chart: &str,
    version: &str,
    release: &str,
    namespace: &str,
    values: &Value,
    failing: bool,
) -> Rendered {
    let chart_version = version;
    let version = crate::helm::chart_version_without_build(version);
    let repository = values["image"]["repository"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("ghcr.io/example/{chart}"));
    let tag = values["image"]["tag"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| values["image"]["tag"].as_f64().map(|n| n.to_string()))
        .unwrap_or_else(|| version.to_owned());
    let replicas = values["replicaCount"]
        .as_i64()
        .or(values["replicas"].as_i64())
        .unwrap_or(1);
    let kind = values["kind"].as_str().unwrap_or("StatefulSet");
    let labels = json!({
        "app.kubernetes.io/name": chart,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/version": version,
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": helm_chart_label(chart, chart_version),
    });
    let selector = json!({"app.kubernetes.io/name": chart, "app.kubernetes.io/instance": release});
    let mut annotations = values["podAnnotations"].clone();
    if !annotations.is_object() {
        annotations = json!({});
    }
    // Always set, never dropped: a rollback then changes the value rather than relying on
    // server-side apply removing a field the manager stopped applying (kubesim's field
    // ownership splits keys at dots, so it would keep a dropped `sim.fluxgate.dev/…` key).
    annotations[NEVER_READY_ANNOTATION] = json!(if failing { "true" } else { "false" });
    let persistence: Vec<(String, String, Option<String>)> = values["persistence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                p["size"].as_str().unwrap_or("1Gi").to_owned(),
                p["storageClass"].as_str().map(str::to_owned),
            ))
        })
        .collect();
    let mounts: Vec<Value> = persistence
        .iter()
        .map(|(n, _, _)| json!({"name": n, "mountPath": format!("/data/{n}")}))
        .collect();
    let claim_spec = |size: &str, class: &Option<String>| {
        let mut spec =
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        spec
    };
    let mut pod_spec = json!({
        "containers": [{"name": chart, "image": format!("{repository}:{tag}"), "volumeMounts": mounts}],
    });
    let mut objects = Vec::new();
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": selector},
    });
    if kind == "Deployment" {
        let mut volumes = Vec::new();
        for (n, size, class) in &persistence {
            let claim = format!("{release}-{n}");
            objects.push(json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace, "labels": labels},
                "spec": claim_spec(size, class),
            }));
            volumes.push(json!({"name": n, "persistentVolumeClaim": {"claimName": claim}}));
        }
        pod_spec["volumes"] = json!(volumes);
    } else {
        spec["serviceName"] = json!(release);
        let retention = &values["persistentVolumeClaimRetentionPolicy"];
        if retention.is_object() {
            spec["persistentVolumeClaimRetentionPolicy"] = retention.clone();
        }
        spec["volumeClaimTemplates"] = json!(persistence
            .iter()
            .map(|(n, size, class)| json!({"metadata": {"name": n}, "spec": claim_spec(size, class)}))
            .collect::<Vec<_>>());
    }
    spec["template"] = json!({
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": pod_spec,
    });
    let kind = if kind == "Deployment" {
        "Deployment"
    } else {
        "StatefulSet"
    };
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": release, "namespace": namespace, "labels": labels},
        "spec": spec,
    }));
    let manifest = objects
        .iter()
        .map(|o| {
            let file = o["kind"].as_str().unwrap_or("object").to_lowercase();
            let body = serde_saphyr::to_string(o).unwrap_or_else(|_| o.to_string());
            format!("---\n# Source: {chart}/templates/{file}.yaml\n{body}")
        })
        .collect::<Vec<_>>()
        .join("\n");
    Rendered { objects, manifest }
}

/// `helm.sh/chart` as `helm create`'s `_helpers.tpl` writes it: `printf "%s-%s" .Chart.Name
/// .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-"`.
pub fn helm_chart_label(chart: &str, chart_version: &str) -> String {
    let label: String = format!("{chart}-{chart_version}")
        .replace('+', "_")
        .chars()
        .take(63)
        .collect();
    label.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statefulset_with_claim_templates_and_tag_default() {
        let r = render(
            "db",
            "1.2.0",
            "prod-db",
            "prod",
            &json!({"persistence": [{"name": "data", "size": "2Gi"}, {"name": "logs"}]}),
            false,
        );
        assert_eq!(r.objects.len(), 1);
        let sts = &r.objects[0];
        assert_eq!(sts["kind"], "StatefulSet");
        assert_eq!(sts["metadata"]["name"], "prod-db");
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["image"],
            "ghcr.io/example/db:1.2.0"
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "2Gi"
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][1]["metadata"]["name"],
            "logs"
        );
        assert!(
            r.manifest
                .contains("# Source: db/templates/statefulset.yaml")
        );
        let docs: Vec<Value> = serde_saphyr::from_multiple(&r.manifest).unwrap();
        assert_eq!(docs.iter().filter(|d| d.is_object()).count(), 1);
    }

    #[test]
    fn an_oci_chart_version_labels_with_its_digest_and_runs_the_published_version() {
        let r = render("db", "1.5.0+f020b3f2f52d", "db", "apps", &json!({}), false);
        let sts = &r.objects[0];
        assert_eq!(
            sts["metadata"]["labels"]["helm.sh/chart"],
            "db-1.5.0_f020b3f2f52d"
        );
        assert_eq!(
            sts["metadata"]["labels"]["app.kubernetes.io/version"],
            "1.5.0"
        );
        assert_eq!(
            sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"],
            "1.5.0"
        );
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["image"],
            "ghcr.io/example/db:1.5.0"
        );
    }

    #[test]
    fn deployment_with_pvcs_and_failing_pods() {
        let values = json!({"kind": "Deployment", "replicaCount": 2, "image": {"repository": "r/app", "tag": "9"}, "persistence": [{"name": "data"}]});
        let r = render("app", "1.0.0", "app", "ns", &values, true);
        assert_eq!(r.objects[0]["kind"], "PersistentVolumeClaim");
        assert_eq!(r.objects[0]["metadata"]["name"], "app-data");
        let d = &r.objects[1];
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "r/app:9"
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"][NEVER_READY_ANNOTATION],
            "true"
        );
    }
}
