//! `meta.k8s.io/v1` Table answers for `kubectl get`: printer columns and the JSONPath subset they use.

use crate::resources::ResourceType;
use serde_json::{Value, json};

/// Age as kubectl prints it (`45s`, `3m20s`, `5h`, `12d`).
pub fn human_age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        eq: bool,
        value: String,
    },
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut steps = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|e| e + i)
                    .ok_or_else(|| format!("unclosed [ in {path}"))?;
                let inner: String = chars[i + 1..end].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                    let (lhs, eq, rhs) = if let Some(k) = f.find("!=") {
                        (&f[..k], false, &f[k + 2..])
                    } else if let Some(k) = f.find("==") {
                        (&f[..k], true, &f[k + 2..])
                    } else {
                        return Err(format!("unsupported filter {f} in {path}"));
                    };
                    let lhs = lhs
                        .trim()
                        .strip_prefix('@')
                        .ok_or_else(|| format!("filter must start with @ in {path}"))?;
                    steps.push(Step::Filter {
                        path: lhs
                            .split('.')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                        eq,
                        value: rhs
                            .trim()
                            .trim_matches(|c| c == '"' || c == '\'')
                            .to_string(),
                    });
                } else if let Ok(n) = inner.parse::<usize>() {
                    steps.push(Step::Index(n));
                } else {
                    steps.push(Step::Field(
                        inner.trim_matches(|c| c == '"' || c == '\'').to_string(),
                    ));
                }
                i = end + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(steps)
}

/// Evaluates a printer-column JSONPath; returns every match in order.
pub fn jsonpath<'a>(obj: &'a Value, path: &str) -> Result<Vec<&'a Value>, String> {
    let steps = parse_path(path)?;
    let mut cur = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(f) => next.extend(v.get(f)),
                Step::Index(n) => next.extend(v.get(*n)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter { path, eq, value } => {
                    if let Value::Array(a) = v {
                        for e in a {
                            let got = path.iter().try_fold(e, |c, p| c.get(p));
                            let got = match got {
                                Some(Value::String(s)) => Some(s.clone()),
                                Some(other) => Some(other.to_string()),
                                None => None,
                            };
                            if got.as_deref().is_some_and(|g| (g == value) == *eq) {
                                next.push(e);
                            }
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

fn cell(v: Option<&Value>, ty: &str) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if ty == "date" => Value::String(human_age(s)),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(n @ (Value::Number(_) | Value::Bool(_))) => n.clone(),
        Some(other) => Value::String(other.to_string()),
    }
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

type Cell = fn(&Value) -> Value;

fn count(v: &Value) -> Value {
    json!(v.as_object().map_or(0, |m| m.len()))
}

fn or_none(v: &Value) -> Value {
    match v {
        Value::Null => json!("<none>"),
        Value::String(s) if s.is_empty() => json!("<none>"),
        Value::Array(a) => json!(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.clone(),
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn pod_ready(o: &Value) -> Value {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = o["status"]["containerStatuses"].as_array().map_or(0, |a| {
        a.iter().filter(|c| c["ready"] == json!(true)).count()
    });
    json!(format!("{ready}/{total}"))
}

fn pod_status(o: &Value) -> Value {
    if !o["metadata"]["deletionTimestamp"].is_null() {
        return json!("Terminating");
    }
    let waiting = o["status"]["containerStatuses"].as_array().and_then(|a| {
        a.iter()
            .find_map(|c| c["state"]["waiting"]["reason"].as_str())
    });
    json!(
        waiting
            .or(o["status"]["phase"].as_str())
            .unwrap_or("Pending")
    )
}

fn pod_restarts(o: &Value) -> Value {
    json!(o["status"]["containerStatuses"].as_array().map_or(0, |a| {
        a.iter().map(|c| int(&c["restartCount"])).sum::<i64>()
    }))
}

fn ports(o: &Value) -> Value {
    let list: Vec<String> = o["spec"]["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect()
        })
        .unwrap_or_default();
    json!(if list.is_empty() {
        "<none>".to_string()
    } else {
        list.join(",")
    })
}

/// Columns the real server prints for built-in kinds (between NAME and AGE).
fn builtin_columns(rt: &ResourceType) -> Vec<(&'static str, &'static str, Cell)> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => vec![("Status", "string", |o| o["status"]["phase"].clone())],
        ("", "configmaps") => vec![("Data", "integer", |o| {
            json!(
                count(&o["data"]).as_u64().unwrap_or(0)
                    + count(&o["binaryData"]).as_u64().unwrap_or(0)
            )
        })],
        ("", "secrets") => vec![
            ("Type", "string", |o| o["type"].clone()),
            ("Data", "integer", |o| count(&o["data"])),
        ],
        ("", "pods") => vec![
            ("Ready", "string", pod_ready),
            ("Status", "string", pod_status),
            ("Restarts", "string", pod_restarts),
        ],
        ("", "services") => vec![
            ("Type", "string", |o| {
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP"))
            }),
            ("Cluster-IP", "string", |o| or_none(&o["spec"]["clusterIP"])),
            ("Port(s)", "string", ports),
        ],
        ("", "persistentvolumeclaims") => vec![
            ("Status", "string", |o| {
                json!(o["status"]["phase"].as_str().unwrap_or("Pending"))
            }),
            ("Volume", "string", |o| {
                json!(o["spec"]["volumeName"].as_str().unwrap_or(""))
            }),
            ("Capacity", "string", |o| {
                json!(o["status"]["capacity"]["storage"].as_str().unwrap_or(""))
            }),
            ("Access Modes", "string", |o| {
                or_none(&o["spec"]["accessModes"])
            }),
            ("StorageClass", "string", |o| {
                or_none(&o["spec"]["storageClassName"])
            }),
        ],
        ("", "persistentvolumes") => vec![
            ("Capacity", "string", |o| {
                o["spec"]["capacity"]["storage"].clone()
            }),
            ("Access Modes", "string", |o| {
                or_none(&o["spec"]["accessModes"])
            }),
            ("Reclaim Policy", "string", |o| {
                json!(
                    o["spec"]["persistentVolumeReclaimPolicy"]
                        .as_str()
                        .unwrap_or("Retain")
                )
            }),
            ("Status", "string", |o| {
                json!(o["status"]["phase"].as_str().unwrap_or("Pending"))
            }),
            ("Claim", "string", |o| {
                let c = &o["spec"]["claimRef"];
                json!(c["name"].as_str().map_or(String::new(), |n| format!(
                    "{}/{n}",
                    c["namespace"].as_str().unwrap_or("")
                )))
            }),
            ("StorageClass", "string", |o| {
                or_none(&o["spec"]["storageClassName"])
            }),
        ],
        ("apps", "deployments") => vec![
            ("Ready", "string", |o| {
                json!(format!(
                    "{}/{}",
                    int(&o["status"]["readyReplicas"]),
                    int(&o["spec"]["replicas"])
                ))
            }),
            ("Up-to-date", "integer", |o| {
                json!(int(&o["status"]["updatedReplicas"]))
            }),
            ("Available", "integer", |o| {
                json!(int(&o["status"]["availableReplicas"]))
            }),
        ],
        ("apps", "statefulsets") | ("apps", "replicasets") => vec![("Ready", "string", |o| {
            json!(format!(
                "{}/{}",
                int(&o["status"]["readyReplicas"]),
                int(&o["spec"]["replicas"])
            ))
        })],
        ("batch", "jobs") => vec![("Completions", "string", |o| {
            json!(format!(
                "{}/{}",
                int(&o["status"]["succeeded"]),
                o["spec"]["completions"].as_i64().unwrap_or(1)
            ))
        })],
        ("", "events") => vec![
            ("Last Seen", "string", |o| {
                let t = [
                    &o["lastTimestamp"],
                    &o["eventTime"],
                    &o["metadata"]["creationTimestamp"],
                ]
                .into_iter()
                .find_map(|v| v.as_str());
                json!(t.map(human_age).unwrap_or_default())
            }),
            ("Type", "string", |o| o["type"].clone()),
            ("Reason", "string", |o| o["reason"].clone()),
            ("Object", "string", |o| {
                let r = &o["involvedObject"];
                json!(format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or("").to_lowercase(),
                    r["name"].as_str().unwrap_or("")
                ))
            }),
            ("Message", "string", |o| o["message"].clone()),
        ],
        ("coordination.k8s.io", "leases") => vec![("Holder", "string", |o| {
            json!(o["spec"]["holderIdentity"].as_str().unwrap_or(""))
        })],
        ("storage.k8s.io", "storageclasses") => vec![
            ("Provisioner", "string", |o| o["provisioner"].clone()),
            ("ReclaimPolicy", "string", |o| {
                json!(o["reclaimPolicy"].as_str().unwrap_or("Delete"))
            }),
        ],
        _ => vec![],
    }
}

/// Columns the real server adds after AGE at priority 1 (kubectl shows them with `-o wide`).
fn builtin_wide_columns(rt: &ResourceType) -> Vec<(&'static str, &'static str, Cell)> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => vec![
            ("IP", "string", |o| or_none(&o["status"]["podIP"])),
            ("Node", "string", |o| or_none(&o["spec"]["nodeName"])),
            ("Nominated Node", "string", |o| {
                or_none(&o["status"]["nominatedNodeName"])
            }),
            ("Readiness Gates", "string", |o| {
                let gates = o["spec"]["readinessGates"].as_array();
                match gates.filter(|g| !g.is_empty()) {
                    None => json!("<none>"),
                    Some(gates) => {
                        let met = gates
                            .iter()
                            .filter(|g| {
                                o["status"]["conditions"].as_array().is_some_and(|cs| {
                                    cs.iter().any(|c| {
                                        c["type"] == g["conditionType"] && c["status"] == "True"
                                    })
                                })
                            })
                            .count();
                        json!(format!("{met}/{}", gates.len()))
                    }
                }
            }),
        ],
        _ => vec![],
    }
}

/// A Table of `objects`; `include` is `None`, `Metadata` (default) or `Object`.
pub fn table_for(rt: &ResourceType, objects: &[Value], rv: u64, include: &str) -> Value {
    let mut defs = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )];
    let custom = !rt.columns.is_empty();
    let (builtin, wide) = if custom {
        (Vec::new(), Vec::new())
    } else {
        (builtin_columns(rt), builtin_wide_columns(rt))
    };
    // Core events print like the real server: no NAME (priority 1, `-o wide`) and no AGE.
    let is_event = rt.group.is_empty() && rt.plural == "events";
    if is_event {
        defs[0]["priority"] = json!(1);
    }
    if custom {
        for c in &rt.columns {
            defs.push(column(
                &c.name,
                &c.type_,
                &c.format,
                &c.description,
                c.priority,
            ));
        }
    } else {
        for (name, ty, _) in &builtin {
            defs.push(column(name, ty, "", "", 0));
        }
        if !is_event {
            defs.push(column(
                "Age",
                "date",
                "",
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
                0,
            ));
        }
        for (name, ty, _) in &wide {
            defs.push(column(name, ty, "", "", 1));
        }
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            if custom {
                for c in &rt.columns {
                    let found = jsonpath(o, &c.json_path)
                        .ok()
                        .and_then(|r| r.first().copied());
                    cells.push(cell(found, &c.type_));
                }
            } else {
                for (_, _, f) in &builtin {
                    cells.push(f(o));
                }
                if !is_event {
                    cells.push(cell(o["metadata"].get("creationTimestamp"), "date"));
                }
                for (_, _, f) in &wide {
                    cells.push(f(o));
                }
            }
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_and_fields() {
        let o = json!({"status": {"conditions": [
            {"type": "Reconciling", "status": "False"},
            {"type": "Ready", "status": "True", "message": "ok"}]}, "spec": {"url": "x"}});
        let r = jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status").unwrap();
        assert_eq!(r, vec![&json!("True")]);
        assert_eq!(jsonpath(&o, ".spec.url").unwrap(), vec![&json!("x")]);
        assert_eq!(
            jsonpath(&o, ".status.conditions[0].type").unwrap(),
            vec![&json!("Reconciling")]
        );
        assert!(jsonpath(&o, ".spec.missing").unwrap().is_empty());
        assert_eq!(
            jsonpath(&o, "{.status.conditions[*].type}").unwrap().len(),
            2
        );
    }

    #[test]
    fn builtin_columns_follow_the_real_server() {
        let pods = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "pods")
            .unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"ready": true, "restartCount": 2, "state": {}}, {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table_for(&pods, &[pod], 1, "None");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "p",
                "1/2",
                "CrashLoopBackOff",
                3,
                human_age("2020-01-01T00:00:00Z"),
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ])
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let t = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3 * 3600 + 5 * 60);
        assert_eq!(
            human_age(&t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            "3h5m"
        );
    }
}
