//! Label and field selectors: parsing the query syntax and matching objects against it.

use crate::status::{ApiError, ApiResult};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '(' => {
                depth += 1;
                cur.push(ch)
            }
            ')' => {
                depth -= 1;
                cur.push(ch)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn check_key(k: &str, whole: &str) -> ApiResult<String> {
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(k.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {k:?} in selector {whole:?}"
        )))
    }
}

fn parse_set(rest: &str, whole: &str) -> ApiResult<Vec<String>> {
    let rest = rest.trim();
    if !(rest.starts_with('(') && rest.ends_with(')')) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: expected a parenthesised value list in {whole:?}"
        )));
    }
    Ok(rest[1..rest.len() - 1]
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

/// A requirement's value must be a label value (apimachinery `labels.NewRequirement`
/// validates each one; the API server answers 400 for a selector it cannot parse).
fn check_value(key: &str, index: usize, value: &str, whole: &str) -> ApiResult<()> {
    let problems = crate::store::label_value_problems(value);
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "unable to parse requirement: values[{index}][{key}]: Invalid value: {value:?}: {} (in selector {whole:?})",
        problems.join("; ")
    )))
}

impl LabelSelector {
    pub fn parse(s: &str) -> ApiResult<Self> {
        let parsed = Self::parse_terms(s)?;
        for req in &parsed.0 {
            match req {
                Req::Eq(k, v) | Req::NotEq(k, v) => check_value(k, 0, v, s)?,
                Req::In(k, vs) | Req::NotIn(k, vs) => {
                    for (index, v) in vs.iter().enumerate() {
                        check_value(k, index, v, s)?;
                    }
                }
                Req::Exists(_) | Req::NotExists(_) => {}
            }
        }
        Ok(parsed)
    }

    fn parse_terms(s: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            if let Some(k) = term.strip_prefix('!') {
                reqs.push(Req::NotExists(check_key(k.trim(), s)?));
            } else if let Some(i) = term.find(" notin ") {
                reqs.push(Req::NotIn(
                    check_key(term[..i].trim(), s)?,
                    parse_set(&term[i + 7..], s)?,
                ));
            } else if let Some(i) = term.find(" in ") {
                reqs.push(Req::In(
                    check_key(term[..i].trim(), s)?,
                    parse_set(&term[i + 4..], s)?,
                ));
            } else if let Some(i) = term.find("!=") {
                reqs.push(Req::NotEq(
                    check_key(term[..i].trim(), s)?,
                    term[i + 2..].trim().to_string(),
                ));
            } else if let Some(i) = term.find("==") {
                reqs.push(Req::Eq(
                    check_key(term[..i].trim(), s)?,
                    term[i + 2..].trim().to_string(),
                ));
            } else if let Some(i) = term.find('=') {
                reqs.push(Req::Eq(
                    check_key(term[..i].trim(), s)?,
                    term[i + 1..].trim().to_string(),
                ));
            } else {
                reqs.push(Req::Exists(check_key(&term, s)?));
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Matches an object (reads `metadata.labels`).
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector` over the fields a resource makes selectable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `allowed` lists the selectable fields besides `metadata.name` and `metadata.namespace`.
    pub fn parse(s: &str, allowed: &[String]) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some(i) = term.find("!=") {
                (&term[..i], false, &term[i + 2..])
            } else if let Some(i) = term.find("==") {
                (&term[..i], true, &term[i + 2..])
            } else if let Some(i) = term.find('=') {
                (&term[..i], true, &term[i + 1..])
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !allowed.iter().any(|a| a == field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The single `metadata.name=x` value, which lets a list skip a scan.
    pub fn exact_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let mut cur = Some(obj);
            for part in field.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let got = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("tier"));
        assert!(!m("!tier"));
        assert!(m("!missing,app=web"));
        assert!(m("missing notin (x)"));
        assert!(!m("missing in (x)"));
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn field_selector_rejects_unknown_fields() {
        let o =
            json!({"metadata": {"name": "a", "namespace": "n"}, "status": {"phase": "Running"}});
        let fs = FieldSelector::parse("metadata.name=a,metadata.namespace!=x", &[]).unwrap();
        assert!(fs.matches(&o));
        assert!(FieldSelector::parse("status.phase=Running", &[]).is_err());
        let fs = FieldSelector::parse("status.phase=Running", &["status.phase".into()]).unwrap();
        assert!(fs.matches(&o));
    }
}
