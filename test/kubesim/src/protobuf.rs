//! Decoding of Kubernetes protobuf request bodies for the kinds Go typed clients write (Helm release Secrets, ConfigMaps, Namespaces, DeleteOptions, kubectl's auth reviews).
//!
//! Go clients such as Helm and kubectl's generators send built-in objects as protobuf. The
//! server answers in JSON either way (clients accept it); only these request bodies need
//! decoding. Field numbers follow the `generated.proto` files of k8s.io/api and apimachinery.

use base64::Engine;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

/// Splits one message into (field number, value) pairs.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                out.push((num, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            other => return Err(format!("unsupported wire type {other}")),
        }
        if pos > buf.len() {
            return Err("truncated fixed-width field".into());
        }
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn bytes_of<'a>(f: &Field<'a>) -> Result<&'a [u8], String> {
    match f {
        Field::Bytes(b) => Ok(b),
        Field::Varint(_) => Err("expected a length-delimited field".into()),
    }
}

fn int_of(f: &Field<'_>) -> Result<u64, String> {
    match f {
        Field::Varint(v) => Ok(*v),
        Field::Bytes(_) => Err("expected a varint field".into()),
    }
}

/// A `map<string, string|bytes>` entry; bytes values are base64 as in JSON.
fn map_entry(b: &[u8], binary: bool) -> Result<(String, Value), String> {
    let mut k = String::new();
    let mut v = Value::String(String::new());
    for (n, f) in fields(b)? {
        match n {
            1 => k = text(bytes_of(&f)?)?,
            2 if binary => {
                v = json!(base64::engine::general_purpose::STANDARD.encode(bytes_of(&f)?))
            }
            2 => v = json!(text(bytes_of(&f)?)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut owners = Vec::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        let key = match n {
            1 => "name",
            2 => "generateName",
            3 => "namespace",
            5 => "uid",
            6 => "resourceVersion",
            7 => {
                m.insert("generation".into(), json!(int_of(&f)? as i64));
                continue;
            }
            11 => {
                let (k, v) = map_entry(bytes_of(&f)?, false)?;
                labels.insert(k, v);
                continue;
            }
            12 => {
                let (k, v) = map_entry(bytes_of(&f)?, false)?;
                annotations.insert(k, v);
                continue;
            }
            13 => {
                let mut o = Map::new();
                for (on, of) in fields(bytes_of(&f)?)? {
                    match on {
                        1 => o.insert("kind".into(), json!(text(bytes_of(&of)?)?)),
                        3 => o.insert("name".into(), json!(text(bytes_of(&of)?)?)),
                        4 => o.insert("uid".into(), json!(text(bytes_of(&of)?)?)),
                        5 => o.insert("apiVersion".into(), json!(text(bytes_of(&of)?)?)),
                        6 => o.insert("controller".into(), json!(int_of(&of)? != 0)),
                        7 => o.insert("blockOwnerDeletion".into(), json!(int_of(&of)? != 0)),
                        _ => None,
                    };
                }
                owners.push(Value::Object(o));
                continue;
            }
            14 => {
                finalizers.push(json!(text(bytes_of(&f)?)?));
                continue;
            }
            // Timestamps, selfLink and managedFields are the server's to set.
            _ => continue,
        };
        // Go writes empty strings too; its JSON omits them (`omitempty`), and so do we.
        let value = text(bytes_of(&f)?)?;
        if !value.is_empty() {
            m.insert(key.into(), json!(value));
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), Value::Array(owners));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

fn secret(raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({"apiVersion": "v1", "kind": "Secret"});
    for (n, f) in fields(raw)? {
        match n {
            1 => o["metadata"] = object_meta(bytes_of(&f)?)?,
            2 => {
                let (k, v) = map_entry(bytes_of(&f)?, true)?;
                if !o["data"].is_object() {
                    o["data"] = json!({});
                }
                o["data"][k] = v;
            }
            3 => o["type"] = json!(text(bytes_of(&f)?)?),
            4 => {
                let (k, v) = map_entry(bytes_of(&f)?, false)?;
                if !o["stringData"].is_object() {
                    o["stringData"] = json!({});
                }
                o["stringData"][k] = v;
            }
            5 => o["immutable"] = json!(int_of(&f)? != 0),
            _ => {}
        }
    }
    Ok(o)
}

fn config_map(raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    for (n, f) in fields(raw)? {
        match n {
            1 => o["metadata"] = object_meta(bytes_of(&f)?)?,
            2 | 3 => {
                let field = if n == 2 { "data" } else { "binaryData" };
                let (k, v) = map_entry(bytes_of(&f)?, n == 3)?;
                if !o[field].is_object() {
                    o[field] = json!({});
                }
                o[field][k] = v;
            }
            4 => o["immutable"] = json!(int_of(&f)? != 0),
            _ => {}
        }
    }
    Ok(o)
}

fn namespace(raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({"apiVersion": "v1", "kind": "Namespace"});
    for (n, f) in fields(raw)? {
        match n {
            1 => o["metadata"] = object_meta(bytes_of(&f)?)?,
            2 => {
                let fins: Result<Vec<Value>, String> = fields(bytes_of(&f)?)?
                    .iter()
                    .filter(|(sn, _)| *sn == 1)
                    .map(|(_, sf)| Ok(json!(text(bytes_of(sf)?)?)))
                    .collect();
                o["spec"] = json!({"finalizers": fins?});
            }
            _ => {}
        }
    }
    Ok(o)
}

fn delete_options(raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
    let mut dry = Vec::new();
    for (n, f) in fields(raw)? {
        match n {
            1 => o["gracePeriodSeconds"] = json!(int_of(&f)? as i64),
            2 => {
                let mut p = json!({});
                for (pn, pf) in fields(bytes_of(&f)?)? {
                    match pn {
                        1 => p["uid"] = json!(text(bytes_of(&pf)?)?),
                        2 => p["resourceVersion"] = json!(text(bytes_of(&pf)?)?),
                        _ => {}
                    }
                }
                o["preconditions"] = p;
            }
            3 => o["orphanDependents"] = json!(int_of(&f)? != 0),
            4 => o["propagationPolicy"] = json!(text(bytes_of(&f)?)?),
            5 => dry.push(json!(text(bytes_of(&f)?)?)),
            _ => {}
        }
    }
    if !dry.is_empty() {
        o["dryRun"] = Value::Array(dry);
    }
    Ok(o)
}

/// The string fields of a message, by field number, as a JSON object (empty ones omitted).
fn strings(raw: &[u8], names: &[(u64, &str)]) -> Result<Value, String> {
    let mut o = Map::new();
    for (n, f) in fields(raw)? {
        if let Some((_, name)) = names.iter().find(|(num, _)| *num == n) {
            let value = text(bytes_of(&f)?)?;
            if !value.is_empty() {
                o.insert((*name).into(), json!(value));
            }
        }
    }
    Ok(Value::Object(o))
}

/// `kubectl auth can-i <verb> <resource>` (selectors, fields 8 and 9, are not decoded).
fn self_subject_access_review(raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    for (n, f) in fields(raw)? {
        if n != 2 {
            continue;
        }
        for (sn, sf) in fields(bytes_of(&f)?)? {
            match sn {
                1 => {
                    o["spec"]["resourceAttributes"] = strings(
                        bytes_of(&sf)?,
                        &[
                            (1, "namespace"),
                            (2, "verb"),
                            (3, "group"),
                            (4, "version"),
                            (5, "resource"),
                            (6, "subresource"),
                            (7, "name"),
                        ],
                    )?
                }
                2 => {
                    o["spec"]["nonResourceAttributes"] =
                        strings(bytes_of(&sf)?, &[(1, "path"), (2, "verb")])?
                }
                _ => {}
            }
        }
    }
    Ok(o)
}

/// `kubectl auth can-i --list`.
fn self_subject_rules_review(raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {}});
    for (n, f) in fields(raw)? {
        if n == 2 {
            o["spec"] = strings(bytes_of(&f)?, &[(1, "namespace")])?;
        }
    }
    Ok(o)
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s envelope prefix")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        match n {
            1 => {
                for (tn, tf) in fields(bytes_of(&f)?)? {
                    match tn {
                        1 => api_version = text(bytes_of(&tf)?)?,
                        2 => kind = text(bytes_of(&tf)?)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes_of(&f)?,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => secret(raw),
        ("v1", "ConfigMap") => config_map(raw),
        ("v1", "Namespace") => namespace(raw),
        (_, "DeleteOptions") => delete_options(raw),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => self_subject_access_review(raw),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => self_subject_rules_review(raw),
        // `kubectl auth whoami`: nothing to read but the kind.
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            Ok(json!({"apiVersion": api_version, "kind": kind}))
        }
        _ => Err(format!(
            "kubesim decodes protobuf only for v1 Secret, ConfigMap, Namespace and DeleteOptions and the authorization.k8s.io/v1 SelfSubjectAccessReview and SelfSubjectRulesReview and authentication.k8s.io/v1 SelfSubjectReview, not {api_version} {kind}; send JSON"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8];
        let mut len = payload.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let meta = [
            len_field(1, b"sh.helm.release.v1.demo.v1"),
            len_field(
                11,
                &[len_field(1, b"owner"), len_field(2, b"helm")].concat(),
            ),
        ]
        .concat();
        let entry = [len_field(1, b"release"), len_field(2, b"\x00\x01")].concat();
        let secret = [
            len_field(1, &meta),
            len_field(2, &entry),
            len_field(3, b"helm.sh/release.v1"),
        ]
        .concat();
        let type_meta = [len_field(1, b"v1"), len_field(2, b"Secret")].concat();
        let body = [
            MAGIC.to_vec(),
            len_field(1, &type_meta),
            len_field(2, &secret),
        ]
        .concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "sh.helm.release.v1.demo.v1");
        assert_eq!(v["metadata"]["labels"]["owner"], "helm");
        assert_eq!(v["data"]["release"], "AAE=");
        assert_eq!(v["type"], "helm.sh/release.v1");
        assert!(decode(b"k8s\0\x0a").is_err());
        assert!(decode(b"nope").is_err());
    }
}
