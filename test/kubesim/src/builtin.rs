//! Rules of built-in kinds that operators trip over: Secret `stringData`, the storage kinds' defaults, immutable ConfigMaps and Secrets, and fields the real server forbids changing.

use crate::quantity::quantity_bytes;
use crate::resources::ResourceType;
use crate::status::Cause;
use base64::Engine;
use serde_json::{Value, json};

/// Normalises a built-in object before storage (e.g. `stringData` into `data`), and gives the
/// storage kinds the defaults the real server's decoder gives them on every write
/// (k8s.io/kubernetes v1.36.3 `pkg/apis/core/v1/defaults.go`, `pkg/apis/storage/v1/defaults.go`):
/// a claim and a volume are `Pending` until a controller says otherwise, a volume's reclaim
/// policy is `Retain` unless it says `Delete`, a class deletes its volumes and binds at once.
pub fn normalise(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "persistentvolumeclaims") => {
            default_field(obj, &["status", "phase"], json!("Pending"));
            default_field(obj, &["spec", "volumeMode"], json!("Filesystem"));
        }
        ("", "persistentvolumes") => {
            default_field(obj, &["status", "phase"], json!("Pending"));
            default_field(
                obj,
                &["spec", "persistentVolumeReclaimPolicy"],
                json!("Retain"),
            );
            default_field(obj, &["spec", "volumeMode"], json!("Filesystem"));
        }
        ("storage.k8s.io", "storageclasses") => {
            default_field(obj, &["reclaimPolicy"], json!("Delete"));
            default_field(obj, &["volumeBindingMode"], json!("Immediate"));
        }
        _ => {}
    }
    if rt.group.is_empty() && rt.plural == "secrets" {
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
            if !obj["data"].is_object() {
                obj["data"] = json!({});
            }
            for (k, v) in sd {
                let text = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string());
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
        if obj
            .get("type")
            .is_none_or(|t| t.as_str().is_none_or(str::is_empty))
        {
            obj["type"] = json!("Opaque");
        }
    }
}

/// The annotation that named a claim's class before `spec.storageClassName`.
pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// Sets `obj.<path>` to `value` unless it holds one already, as the API's defaulters do.
fn default_field(obj: &mut Value, path: &[&str], value: Value) {
    let Some((field, parents)) = path.split_last() else {
        return;
    };
    let mut holder = obj;
    for key in parents {
        if !holder[*key].is_object() {
            holder[*key] = json!({});
        }
        holder = &mut holder[*key];
    }
    if holder[*field].is_null() {
        holder[*field] = value;
    }
}

/// What the real server's create strategies do to a storage object beyond defaults
/// (k8s.io/kubernetes v1.36.3 `pkg/registry/core/persistentvolume{,claim}/strategy.go`): a
/// volume records when its phase last changed; a claim's `dataSource` and `dataSourceRef`
/// mirror each other when only one is given (`NormalizeDataSources`; a `dataSourceRef` into
/// another namespace has no `dataSource` form).
pub fn prepare_for_create(rt: &ResourceType, obj: &mut Value, now: &str) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "persistentvolumes") => obj["status"]["lastPhaseTransitionTime"] = json!(now),
        ("", "persistentvolumeclaims") => {
            let spec = &mut obj["spec"];
            let source = spec["dataSource"].clone();
            let source_ref = spec["dataSourceRef"].clone();
            let copy = |from: &Value| {
                let mut to = json!({"kind": from["kind"], "name": from["name"]});
                if from["apiGroup"].is_string() {
                    to["apiGroup"] = from["apiGroup"].clone();
                }
                to
            };
            if source.is_object() && source_ref.is_null() {
                spec["dataSourceRef"] = copy(&source);
            } else if source_ref.is_object()
                && source.is_null()
                && source_ref["namespace"].as_str().is_none_or(str::is_empty)
            {
                spec["dataSource"] = copy(&source_ref);
            }
        }
        _ => {}
    }
}

/// A volume's status written with a new phase and no new transition time gets the time now
/// (`persistentVolumeStatusStrategy.PrepareForUpdate`); the same phase keeps the old time.
pub fn prepare_for_status_update(rt: &ResourceType, new: &mut Value, old: &Value, now: &str) {
    if !(rt.group.is_empty() && rt.plural == "persistentvolumes") {
        return;
    }
    let time = "lastPhaseTransitionTime";
    let old_time = &old["status"][time];
    if new["status"]["phase"] == old["status"]["phase"] {
        if new["status"][time].is_null() && !old_time.is_null() {
            new["status"][time] = old_time.clone();
        }
    } else if new["status"][time].is_null() || new["status"][time] == *old_time {
        new["status"][time] = json!(now);
    }
}

/// The core `v1` view of an `events.k8s.io/v1` Event (the field mapping the real server uses).
pub fn core_event(ev: &Value) -> Value {
    let mut out = json!({"apiVersion": "v1", "kind": "Event", "metadata": ev["metadata"].clone()});
    let series = &ev["series"];
    let pairs: [(&str, Value); 14] = [
        ("involvedObject", ev["regarding"].clone()),
        ("related", ev["related"].clone()),
        ("reason", ev["reason"].clone()),
        ("message", ev["note"].clone()),
        ("type", ev["type"].clone()),
        ("action", ev["action"].clone()),
        ("eventTime", ev["eventTime"].clone()),
        ("series", ev["series"].clone()),
        ("reportingComponent", ev["reportingController"].clone()),
        ("reportingInstance", ev["reportingInstance"].clone()),
        (
            "source",
            if ev["deprecatedSource"].is_object() {
                ev["deprecatedSource"].clone()
            } else {
                json!({"component": ev["reportingController"]})
            },
        ),
        ("firstTimestamp", ev["deprecatedFirstTimestamp"].clone()),
        (
            "lastTimestamp",
            [
                &ev["deprecatedLastTimestamp"],
                &series["lastObservedTime"],
                &ev["eventTime"],
            ]
            .into_iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        ),
        (
            "count",
            if series.is_object() {
                series["count"].clone()
            } else {
                ev["deprecatedCount"].clone()
            },
        ),
    ];
    for (k, v) in pairs {
        if !v.is_null() {
            out[k] = v;
        }
    }
    out
}

fn strip(v: &Value, paths: &[&[&str]]) -> Value {
    let mut c = v.clone();
    for path in paths {
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut cur = Some(&mut c);
        for p in parents {
            cur = cur.and_then(|x| x.get_mut(*p));
        }
        if let Some(Value::Object(m)) = cur {
            m.remove(*last);
        }
    }
    c
}

fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn forbidden(field: &str, message: &str) -> Cause {
    Cause::new(
        "FieldValueForbidden",
        field,
        format!("Forbidden: {message}"),
    )
}

fn immutable(field: &str, v: &Value) -> Cause {
    Cause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {}: field is immutable", short(v)),
    )
}

/// Update checks the real server's strategies make for these kinds.
pub fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "configmaps" | "secrets") => {
            if old["immutable"] == json!(true) {
                if new["immutable"] != json!(true) {
                    causes.push(forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
                for f in ["data", "binaryData"] {
                    if new.get(f) != old.get(f) {
                        causes.push(forbidden(f, "field is immutable when `immutable` is set"));
                    }
                }
            }
            if rt.plural == "secrets" && new["type"] != old["type"] {
                causes.push(immutable("type", &new["type"]));
            }
        }
        ("", "persistentvolumeclaims") => {
            // ValidatePersistentVolumeClaimUpdate (k8s.io/kubernetes v1.36.3,
            // pkg/apis/core/validation/validation.go): only a bound claim may change its
            // requests (and volumeAttributesClassName); the status is the old one on a spec
            // update (the strategy's PrepareForUpdate keeps it).
            let mutable: &[&[&str]] = if old["status"]["phase"] == "Bound" {
                &[&["resources", "requests"], &["volumeAttributesClassName"]]
            } else {
                &[]
            };
            let mut old_spec = strip(&old["spec"], mutable);
            let new_spec = strip(&new["spec"], mutable);
            // The binder may fill in volumeName once.
            if old_spec
                .get("volumeName")
                .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
                && let (Some(o), Some(n)) = (old_spec.as_object_mut(), new_spec.get("volumeName"))
            {
                o.insert("volumeName".into(), n.clone());
            }
            // A claim that named no class may be given one, once (how kube-controller-manager
            // assigns a default class that appeared later; validateStorageClassUpgradeFromNil).
            let beta = &old["metadata"]["annotations"][BETA_STORAGE_CLASS];
            if old_spec.get("storageClassName").is_none_or(Value::is_null)
                && let Some(class) = new_spec.get("storageClassName").filter(|c| !c.is_null())
                && (beta.is_null() || beta == class)
                && let Some(o) = old_spec.as_object_mut()
            {
                o.insert("storageClassName".into(), class.clone());
            }
            if old_spec != new_spec {
                causes.push(forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
            // A request may not shrink to status.capacity or below (RecoverVolumeExpansionFailure,
            // GA and locked on since 1.34, allows shrinking only above it: to recover from a
            // failed expansion). So a claim restored larger than its manifest asks for cannot
            // be applied back to the manifest's size.
            let size = |v: &Value| {
                v["spec"]["resources"]["requests"]["storage"]
                    .as_str()
                    .and_then(quantity_bytes)
            };
            let capacity = old["status"]["capacity"]["storage"]
                .as_str()
                .and_then(quantity_bytes)
                .unwrap_or(0);
            if let (Some(new_size), Some(old_size)) = (size(new), size(old))
                && new_size < old_size
                && new_size <= capacity
            {
                causes.push(forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than status.capacity",
                ));
            }
        }
        ("", "pods") => {
            let mutable: &[&[&str]] = &[
                &["activeDeadlineSeconds"],
                &["tolerations"],
                &["terminationGracePeriodSeconds"],
            ];
            let images = |spec: &Value| -> Value {
                let mut s = strip(spec, mutable);
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                s
            };
            if images(&old["spec"]) != images(&new["spec"]) {
                causes.push(forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        ("apps", "statefulsets") => {
            let allowed: &[&[&str]] = &[
                &["replicas"],
                &["template"],
                &["updateStrategy"],
                &["persistentVolumeClaimRetentionPolicy"],
                &["minReadySeconds"],
                &["ordinals"],
                &["revisionHistoryLimit"],
            ];
            if strip(&old["spec"], allowed) != strip(&new["spec"], allowed) {
                causes.push(forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        ("apps", "deployments" | "daemonsets" | "replicasets")
            if new["spec"]["selector"] != old["spec"]["selector"] =>
        {
            causes.push(immutable("spec.selector", &new["spec"]["selector"]));
        }
        ("batch", "jobs") => {
            if new["spec"]["selector"] != old["spec"]["selector"] {
                causes.push(immutable("spec.selector", &new["spec"]["selector"]));
            }
            if new["spec"]["template"] != old["spec"]["template"] {
                causes.push(immutable("spec.template", &json!("object")));
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    fn rt(plural: &str) -> ResourceType {
        builtins().into_iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn a_volume_records_when_its_phase_changed() {
        let pvs = rt("persistentvolumes");
        let old = json!({"status": {"phase": "Available", "lastPhaseTransitionTime": "T1"}});
        // Same phase, no time given: the old time stays.
        let mut same = json!({"status": {"phase": "Available"}});
        prepare_for_status_update(&pvs, &mut same, &old, "T2");
        assert_eq!(same["status"]["lastPhaseTransitionTime"], "T1");
        // A new phase with the old time, or none: now.
        for given in [json!("T1"), Value::Null] {
            let mut bound = json!({"status": {"phase": "Bound", "lastPhaseTransitionTime": given}});
            prepare_for_status_update(&pvs, &mut bound, &old, "T2");
            assert_eq!(bound["status"]["lastPhaseTransitionTime"], "T2");
        }
        // A time the client chose is kept.
        let mut chosen = json!({"status": {"phase": "Bound", "lastPhaseTransitionTime": "T0"}});
        prepare_for_status_update(&pvs, &mut chosen, &old, "T2");
        assert_eq!(chosen["status"]["lastPhaseTransitionTime"], "T0");
    }

    #[test]
    fn string_data_becomes_data() {
        let mut s = json!({"stringData": {"password": "hunter2"}});
        normalise(&rt("secrets"), &mut s);
        assert_eq!(
            s,
            json!({"data": {"password": "aHVudGVyMg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn pvc_spec_is_immutable_but_requests_grow() {
        let pvc = rt("persistentvolumeclaims");
        let old = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                         "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        grown["spec"]["volumeName"] = json!("pv-1");
        assert!(validate_update(&pvc, &grown, &old).is_empty());
        let mut pending = old.clone();
        pending["status"] = json!({"phase": "Pending"});
        assert!(
            !validate_update(&pvc, &grown, &pending).is_empty(),
            "an unbound claim's requests are fixed"
        );
        let mut shrunk = grown.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
        let causes = validate_update(&pvc, &shrunk, &grown);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].reason, "FieldValueForbidden");
        let mut classed = old.clone();
        classed["spec"]["storageClassName"] = json!("standard");
        assert!(
            validate_update(&pvc, &classed, &old).is_empty(),
            "a first class"
        );
        let mut reclassed = classed.clone();
        reclassed["spec"]["storageClassName"] = json!("fast");
        assert!(
            !validate_update(&pvc, &reclassed, &classed).is_empty(),
            "no second"
        );
        let mut restored = old.clone();
        restored["spec"]["dataSource"] = json!({"kind": "VolumeSnapshot", "name": "s"});
        assert_eq!(
            validate_update(&pvc, &restored, &old)[0].reason,
            "FieldValueForbidden"
        );
    }
}
