//! The object store: typed collections of JSON objects, the global resourceVersion, write semantics, events and garbage collection.

use crate::builtin;
use crate::crd;
use crate::managed;
use crate::resources::{GroupResource, ResourceType, Special, builtins, version_priority};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, Cause};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// A stored object with its JSON serialisation made once at write time.
#[derive(Debug)]
pub struct Obj {
    pub value: Value,
    pub bytes: Bytes,
    pub rv: u64,
}

impl Obj {
    fn new(value: Value, rv: u64) -> Self {
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Obj { value, bytes, rv }
    }

    pub fn meta_str(&self, field: &str) -> &str {
        self.value["metadata"][field].as_str().unwrap_or("")
    }

    /// The object as seen through another version of its resource (CRD conversion strategy `None`).
    pub fn bytes_for(&self, rt: &ResourceType) -> Bytes {
        let want = rt.api_version();
        if self.value["apiVersion"].as_str() == Some(want.as_str()) {
            self.bytes.clone()
        } else {
            let mut v = self.value.clone();
            v["apiVersion"] = Value::String(want);
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, serialised once as a watch line and shared by every watcher.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub rv: u64,
    pub obj: Arc<Obj>,
    /// The previous state, so selector watchers can turn changes into ADDED/DELETED.
    pub prev: Option<Arc<Obj>>,
    pub line: Bytes,
}

pub fn event_line(kind: EventType, object: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(object.len() + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    buf.extend_from_slice(object);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

impl Event {
    pub fn new(kind: EventType, obj: Arc<Obj>, prev: Option<Arc<Obj>>) -> Self {
        let line = event_line(kind, &obj.bytes);
        Event {
            kind,
            rv: obj.rv,
            obj,
            prev,
            line,
        }
    }
}

pub type Key = (String, String);

/// All objects of one resource (all versions share it) and their recent events.
pub struct Collection {
    pub rt: Arc<ResourceType>,
    pub objects: BTreeMap<Key, Arc<Obj>>,
    pub history: VecDeque<Arc<Event>>,
    /// Events at or below this resourceVersion have been dropped from history.
    pub compacted_rv: u64,
    pub tx: broadcast::Sender<Arc<Event>>,
}

impl Collection {
    fn new(rt: Arc<ResourceType>, rv: u64) -> Self {
        Collection {
            rt,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: rv,
            tx: broadcast::channel(4096).0,
        }
    }
}

/// Options that shape a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub manager: String,
    /// `Strict` turns pruned unknown fields into 400 answers, as kubectl's server-side validation expects.
    pub strict: bool,
    /// The body comes from server-side apply and already carries its `managedFields`.
    pub applied: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// One page of a list.
pub struct ListPage {
    pub items: Vec<Arc<Obj>>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Everything behind the store lock.
pub struct Inner {
    pub rv: u64,
    pub types: BTreeMap<(String, String), BTreeMap<String, Arc<ResourceType>>>,
    pub collections: HashMap<GroupResource, Collection>,
    /// owner uid → dependents, for garbage collection without a scan.
    owners: HashMap<String, HashSet<(GroupResource, Key)>>,
    uids: HashMap<String, (GroupResource, Key)>,
    pub history_limit: usize,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The finalizer a foreground deletion puts on the owner until its dependents are gone.
const FOREGROUND: &str = "foregroundDeletion";

fn random_suffix() -> String {
    // The alphabet the real server uses: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

fn dns_subdomain_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

/// Why `v` is not a label value, in apimachinery's words (`content.IsLabelValue`: the
/// length and the pattern are checked separately, each with its own message; since v0.36
/// its `MaxLenError` counts bytes, found by real_api_server.rs against Kubernetes v1.36.3);
/// empty when it is one.
pub(crate) fn label_value_problems(v: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if v.len() > 63 {
        problems.push("must be no more than 63 bytes".to_owned());
    }
    let pattern_ok = v.is_empty()
        || (v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if !pattern_ok {
        problems.push(LABEL_VALUE_RULE.to_owned());
    }
    problems
}

/// Label values: at most 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Label and annotation keys: `[prefix/]name`, prefix a DNS subdomain, name like a label value.
fn qualified_name_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty() && label_value_ok(name) && prefix.is_none_or(dns_subdomain_ok)
}

fn dns_label_ok(s: &str) -> bool {
    !s.contains('.') && s.len() <= 63 && dns_subdomain_ok(s)
}

/// The object minus bookkeeping, for "did anything change" and "did the spec change" tests.
fn without(v: &Value, drop_meta: &[&str], drop_top: &[&str]) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in drop_meta {
            m.remove(*k);
        }
    }
    if let Some(m) = c.as_object_mut() {
        for k in drop_top {
            m.remove(*k);
        }
    }
    c
}

fn without_field_times(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(entries) = c["metadata"]
        .get_mut("managedFields")
        .and_then(Value::as_array_mut)
    {
        for e in entries {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    c
}

fn owner_uids(v: &Value) -> Vec<String> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

impl Inner {
    pub fn new(history_limit: usize) -> Self {
        let mut inner = Inner {
            rv: 1,
            types: BTreeMap::new(),
            collections: HashMap::new(),
            owners: HashMap::new(),
            uids: HashMap::new(),
            history_limit,
        };
        for rt in builtins() {
            inner.register(Arc::new(rt));
        }
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = inner
                .find_type("", "v1", "namespaces")
                .expect("namespaces are built in");
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            inner
                .create(&rt, None, body, &WriteOpts::default())
                .expect("built-in namespaces are valid");
        }
        inner
    }

    pub fn register(&mut self, rt: Arc<ResourceType>) {
        let gr = rt.group_resource();
        let rv = self.rv;
        let storage = rt.version == rt.storage_version;
        let coll = self
            .collections
            .entry(gr)
            .or_insert_with(|| Collection::new(rt.clone(), rv));
        if storage {
            coll.rt = rt.clone();
        }
        self.types
            .entry((rt.group.clone(), rt.version.clone()))
            .or_default()
            .insert(rt.plural.clone(), rt);
    }

    fn unregister(&mut self, group: &str, plural: &str) {
        for map in self.types.values_mut() {
            map.retain(|p, rt| !(rt.group == group && p == plural));
        }
        self.types.retain(|_, m| !m.is_empty());
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string()))
            .and_then(|m| m.get(plural))
            .cloned()
    }

    /// Versions of a group, preferred first.
    pub fn group_versions(&self, group: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .types
            .keys()
            .filter(|(g, _)| g == group)
            .map(|(_, v)| v.clone())
            .collect();
        v.sort_by(|a, b| version_priority(a, b));
        v
    }

    /// Groups in discovery order: built-in groups first, then custom groups alphabetically.
    pub fn groups(&self) -> Vec<String> {
        let mut builtin: Vec<String> = Vec::new();
        let mut custom: Vec<String> = Vec::new();
        for ((g, _), m) in &self.types {
            if g.is_empty() || builtin.contains(g) || custom.contains(g) {
                continue;
            }
            if m.values().any(|rt| rt.custom) {
                custom.push(g.clone());
            } else {
                builtin.push(g.clone());
            }
        }
        builtin.extend(custom);
        builtin
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Arc<Obj>> {
        self.collections
            .get(&rt.group_resource())
            .and_then(|c| c.objects.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> ApiResult<ListPage> {
        let coll = self
            .collections
            .get(&rt.group_resource())
            .ok_or_else(ApiError::no_route)?;
        let start: Option<Key> = match cont {
            Some(token) if !token.is_empty() => Some(decode_continue(token)?),
            _ => None,
        };
        let matches = |o: &Arc<Obj>| labels.matches(&o.value) && fields.matches(&o.value);
        let mut items = Vec::new();
        let mut next = None;
        let iter: Box<dyn Iterator<Item = (&Key, &Arc<Obj>)>> = match (ns, fields.exact_name()) {
            (Some(ns), Some(name)) => Box::new(
                coll.objects
                    .get_key_value(&(ns.to_string(), name.to_string()))
                    .into_iter(),
            ),
            (Some(ns), None) => {
                let ns_owned = ns.to_string();
                let from = start.clone().unwrap_or((ns.to_string(), String::new()));
                Box::new(
                    coll.objects
                        .range(from..)
                        .take_while(move |(k, _)| k.0 == ns_owned),
                )
            }
            (None, _) => match &start {
                Some(from) => Box::new(coll.objects.range(from.clone()..)),
                None => Box::new(coll.objects.iter()),
            },
        };
        let mut remaining = 0u64;
        for (k, o) in iter {
            if start.as_ref() == Some(k) {
                continue;
            }
            if !matches(o) {
                continue;
            }
            if next.is_some() {
                remaining += 1;
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                next = Some(encode_continue(items.last().map(|o: &Arc<Obj>| {
                    (
                        o.meta_str("namespace").to_string(),
                        o.meta_str("name").to_string(),
                    )
                })));
                remaining += 1;
                continue;
            }
            items.push(o.clone());
        }
        Ok(ListPage {
            items,
            rv: self.rv,
            remaining: next.as_ref().map(|_| remaining),
            continue_token: next,
        })
    }

    /// Applies a change and records its event; `None` removes the object.
    fn commit(
        &mut self,
        gr: &GroupResource,
        key: Key,
        new: Option<Value>,
        prev: Option<Arc<Obj>>,
    ) -> Arc<Obj> {
        self.rv += 1;
        let rv = self.rv;
        let (kind, value) = match new {
            Some(v) => (
                if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                v,
            ),
            None => (
                EventType::Deleted,
                prev.as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or(Value::Null),
            ),
        };
        let mut value = value;
        meta_mut(&mut value).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let obj = Arc::new(Obj::new(value, rv));
        // Keep the owner and uid indexes in step with the collection.
        if let Some(p) = &prev {
            for o in owner_uids(&p.value) {
                if let Some(set) = self.owners.get_mut(&o) {
                    set.remove(&(gr.clone(), key.clone()));
                }
            }
        }
        let uid = obj.meta_str("uid").to_string();
        if kind == EventType::Deleted {
            self.uids.remove(&uid);
        } else {
            for o in owner_uids(&obj.value) {
                self.owners
                    .entry(o)
                    .or_default()
                    .insert((gr.clone(), key.clone()));
            }
            self.uids.insert(uid, (gr.clone(), key.clone()));
        }
        let limit = self.history_limit;
        let key_copy = key.clone();
        let coll = self
            .collections
            .get_mut(gr)
            .expect("commit only targets registered collections");
        if kind == EventType::Deleted {
            coll.objects.remove(&key);
        } else {
            coll.objects.insert(key, obj.clone());
        }
        let ev = Arc::new(Event::new(kind, obj.clone(), prev));
        coll.history.push_back(ev.clone());
        while coll.history.len() > limit {
            if let Some(old) = coll.history.pop_front() {
                coll.compacted_rv = old.rv;
            }
        }
        // No receivers is normal; the history still serves later watchers.
        let _ = coll.tx.send(ev);
        if gr.group == "events.k8s.io" && gr.resource == "events" {
            self.mirror_core_event(key_copy, kind, &obj);
        }
        obj
    }

    /// Shows an `events.k8s.io/v1` Event through the core `v1` Events API too, as the real
    /// server does (one storage, two versions), so `kubectl describe` and `get events` see it.
    fn mirror_core_event(&mut self, key: Key, kind: EventType, obj: &Obj) {
        let core = GroupResource {
            group: String::new(),
            resource: "events".into(),
        };
        let prev = self
            .collections
            .get(&core)
            .and_then(|c| c.objects.get(&key))
            .cloned();
        match kind {
            EventType::Deleted => {
                if prev.is_some() {
                    self.commit(&core, key, None, prev);
                }
            }
            _ => {
                self.commit(
                    &core,
                    key,
                    Some(crate::builtin::core_event(&obj.value)),
                    prev,
                );
            }
        }
    }

    /// Drops all history of a resource so the next watch from an old version gets 410.
    pub fn compact(&mut self, gr: &GroupResource) {
        let rv = self.rv;
        if let Some(c) = self.collections.get_mut(gr) {
            c.history.clear();
            c.compacted_rv = rv;
        }
    }

    fn check_kind(rt: &ResourceType, body: &mut Value) -> ApiResult<()> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let want = rt.api_version();
        match body.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != want && !v.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )));
            }
            _ => body["apiVersion"] = Value::String(want),
        }
        match body.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind && !k.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
            _ => body["kind"] = Value::String(rt.kind.clone()),
        }
        Ok(())
    }

    /// Schema pruning, defaulting, validation and CEL for custom resources; name checks for all.
    /// The DefaultStorageClass admission plugin: a claim that names no class (no
    /// `storageClassName`, not even `""`, and no beta annotation) gets the default one, the
    /// newest if several say so (k8s.io/kubernetes v1.36.3
    /// `plugin/pkg/admission/storage/storageclass/setdefault`, `pkg/volume/util/storageclass.go`).
    fn set_default_storage_class(&self, rt: &ResourceType, claim: &mut Value) {
        let is_claim = rt.group.is_empty() && rt.plural == "persistentvolumeclaims";
        if !is_claim
            || !claim["spec"]["storageClassName"].is_null()
            || !claim["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]
                .is_null()
        {
            return;
        }
        let classes = GroupResource {
            group: "storage.k8s.io".into(),
            resource: "storageclasses".into(),
        };
        let Some(classes) = self.collections.get(&classes) else {
            return;
        };
        let is_default = |class: &Value| {
            let annotations = &class["metadata"]["annotations"];
            annotations["storageclass.kubernetes.io/is-default-class"] == "true"
                || annotations["storageclass.beta.kubernetes.io/is-default-class"] == "true"
        };
        let created = |class: &Value| {
            class["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        let chosen = classes
            .objects
            .values()
            .map(|o| &o.value)
            .filter(|c| is_default(c))
            // Newest first, then by name: the objects iterate in name order, so the first
            // of the newest wins.
            .fold(None::<&Value>, |best, c| match best {
                Some(b) if created(b) >= created(c) => Some(b),
                _ => Some(c),
            });
        if let Some(name) = chosen.and_then(|c| c["metadata"]["name"].as_str()) {
            claim["spec"]["storageClassName"] = json!(name);
        }
    }

    fn admit(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
    ) -> ApiResult<()> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut causes: Vec<Cause> = Vec::new();
        let name_ok = if rt.special == Special::Namespace {
            dns_label_ok(&name)
        } else {
            dns_subdomain_ok(&name)
        };
        if !name_ok {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                format!(
                    "Invalid value: {name:?}: a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                    if rt.special == Special::Namespace { "label" } else { "subdomain" }
                ),
            ));
        }
        if let Some(labels) = obj["metadata"]["labels"].as_object() {
            for (k, v) in labels {
                if !qualified_name_ok(k) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        "metadata.labels",
                        format!("Invalid value: {k:?}: {QUALIFIED_NAME_RULE}"),
                    ));
                }
                match v.as_str() {
                    // ValidateLabels: one cause per problem, all at `metadata.labels`.
                    Some(text) => {
                        for problem in label_value_problems(text) {
                            causes.push(Cause::new(
                                "FieldValueInvalid",
                                "metadata.labels",
                                format!("Invalid value: {text:?}: {problem}"),
                            ));
                        }
                    }
                    None => causes.push(Cause::new(
                        "FieldValueTypeInvalid",
                        format!("metadata.labels.{k}"),
                        "Invalid value: label values must be strings",
                    )),
                }
            }
        }
        if let Some(annotations) = obj["metadata"]["annotations"].as_object() {
            let size: usize = annotations
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum();
            if size > 262_144 {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    "metadata.annotations",
                    "Too long: may not be more than 262144 bytes",
                ));
            }
            for (k, v) in annotations {
                if !qualified_name_ok(k) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        "metadata.annotations",
                        format!("Invalid value: {k:?}: {QUALIFIED_NAME_RULE}"),
                    ));
                }
                if !v.is_string() {
                    causes.push(Cause::new(
                        "FieldValueTypeInvalid",
                        format!("metadata.annotations.{k}"),
                        "Invalid value: annotation values must be strings",
                    ));
                }
            }
        }
        if let Some(schema) = &rt.schema {
            let pruned = schema.prune(obj);
            if opts.strict && !pruned.is_empty() {
                let list: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                // The real decoder's words for a create or update; a patch or an apply
                // with unknown fields is refused in other words there (lib.rs, differences).
                return Err(ApiError::bad_request(format!(
                    "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = rt.kind,
                    version = rt.version,
                )));
            }
            schema.default(obj);
            let schema_causes = schema.validate(obj);
            if let Some(cel) = &schema.cel {
                // As the real server: CEL runs beside errors such as a pattern mismatch, but
                // not after errors that leave the object's shape in doubt.
                if schema_causes.iter().any(crate::schema::blocks_cel) {
                    causes.extend(schema_causes);
                    causes.push(crate::schema::cel_not_checked());
                } else {
                    causes.extend(schema_causes);
                    let old = old.map(|o| {
                        let mut o = o.clone();
                        schema.prune(&mut o);
                        o
                    });
                    causes.extend(cel.validate(
                        obj,
                        old.as_ref(),
                        &rt.group,
                        &rt.version,
                        &rt.kind,
                    ));
                }
            } else {
                causes.extend(schema_causes);
            }
        }
        if rt.special == Special::Crd {
            causes.extend(crd::validate(obj));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes))
        }
    }

    fn namespace_ok(&self, rt: &ResourceType, ns: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let nsc = &self.collections[&GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        }];
        match nsc.objects.get(&(String::new(), ns.to_string())) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(o) if !o.value["metadata"]["deletionTimestamp"].is_null() => {
                Err(ApiError::forbidden(format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    crate::status::qualified(&rt.group, &rt.plural),
                )))
            }
            Some(_) => Ok(()),
        }
    }

    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        mut body: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Obj>> {
        Self::check_kind(rt, &mut body)?;
        let ns = ns.unwrap_or("");
        {
            let meta = meta_mut(&mut body);
            if rt.namespaced {
                match meta.get("namespace").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() && n != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    _ => {
                        meta.insert("namespace".into(), Value::String(ns.to_string()));
                    }
                }
            } else {
                meta.remove("namespace");
            }
            if meta
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(ApiError::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
        }
        let key_ns = if rt.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        let name = match body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match body["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    let coll = self
                        .collections
                        .get(&rt.group_resource())
                        .ok_or_else(ApiError::no_route)?;
                    let mut tries = 0;
                    loop {
                        let candidate = format!("{prefix}{}", random_suffix());
                        tries += 1;
                        if !coll
                            .objects
                            .contains_key(&(key_ns.clone(), candidate.clone()))
                            || tries > 8
                        {
                            break candidate;
                        }
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        &rt.group,
                        &rt.kind,
                        "",
                        vec![Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            },
        };
        {
            let meta = meta_mut(&mut body);
            meta.insert("name".into(), Value::String(name.clone()));
            meta.insert("uid".into(), Value::String(new_uid()));
            meta.insert("creationTimestamp".into(), Value::String(now()));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            if rt.generation || rt.custom {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        if rt.status {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
            if rt.special == Special::Namespace {
                body["status"] = json!({"phase": "Active"});
            }
        }
        if !rt.custom {
            builtin::normalise(rt, &mut body);
            builtin::prepare_for_create(rt, &mut body, &now());
            self.set_default_storage_class(rt, &mut body);
        }
        self.admit(rt, &mut body, None, opts)?;
        if rt.special == Special::Crd {
            body["status"] = crd::status(&body);
        }
        self.namespace_ok(rt, ns)?;
        let gr = rt.group_resource();
        let key = (key_ns, name.clone());
        let coll = self.collections.get(&gr).ok_or_else(ApiError::no_route)?;
        if coll.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if !opts.applied {
            managed::record_update(
                None,
                &mut body,
                &opts.manager,
                &rt.api_version(),
                None,
                rt.schema.as_ref().map(|s| &s.raw),
            );
        }
        if opts.dry_run {
            return Ok(Arc::new(Obj::new(body, self.rv)));
        }
        let obj = self.commit(&gr, key, Some(body), None);
        if rt.special == Special::Crd {
            self.crd_changed(&obj.value);
        }
        Ok(obj)
    }

    /// PUT semantics for the main resource or the `status` subresource; also the tail of every patch.
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        subresource: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Obj>> {
        Self::check_kind(rt, &mut body)?;
        let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
        let old = self.get(rt, ns, name)?;
        let body_name = body["metadata"]["name"].as_str().unwrap_or("");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && let Some(bns) = body["metadata"]["namespace"].as_str()
            && !bns.is_empty()
            && bns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv != old.meta_str("resourceVersion")
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        if let Some(uid) = body["metadata"]["uid"].as_str()
            && !uid.is_empty()
            && uid != old.meta_str("uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.meta_str("uid")
                ),
            ));
        }
        let applied_fields = body["metadata"]["managedFields"].clone();
        let mut new = if subresource == Some("status") {
            let mut n = old.value.clone();
            if opts.applied {
                n["metadata"]["managedFields"] = applied_fields;
            }
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = body;
            if rt.status {
                match old.value.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            let old_meta = &old.value["metadata"];
            let meta = meta_mut(&mut n);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
            ] {
                if k == "managedFields" && opts.applied {
                    continue;
                }
                match old_meta.get(k) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.remove(k);
                    }
                }
            }
            meta.insert("name".into(), Value::String(name.to_string()));
            if rt.namespaced {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            } else {
                meta.remove("namespace");
            }
            n
        };
        if !old.value["metadata"]["deletionTimestamp"].is_null() {
            let before: HashSet<String> = finalizers(&old.value).into_iter().collect();
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name,
                    vec![Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        if !rt.custom {
            builtin::normalise(rt, &mut new);
            if subresource == Some("status") {
                builtin::prepare_for_status_update(rt, &mut new, &old.value, &now());
            }
            if subresource != Some("status") {
                let causes = builtin::validate_update(rt, &new, &old.value);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(&rt.group, &rt.kind, name, causes));
                }
            }
        }
        self.admit(rt, &mut new, Some(&old.value), opts)?;
        if rt.special == Special::Crd && subresource != Some("status") {
            new["status"] = crd::status(&new);
        }
        if rt.generation || rt.custom {
            // Without a status subresource, status is part of what generation tracks.
            let ignored: &[&str] = if rt.status {
                &["metadata", "status"]
            } else {
                &["metadata"]
            };
            let spec_new = without(&new, &["resourceVersion", "managedFields"], ignored);
            let spec_old = without(&old.value, &["resourceVersion", "managedFields"], ignored);
            if spec_new != spec_old {
                let g = old.value["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta_mut(&mut new).insert("generation".into(), json!(g));
            }
        }
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            Value::String(old.meta_str("resourceVersion").to_string()),
        );
        // An apply that only changes ownership is still a write; timestamps alone are not.
        let unchanged = if opts.applied {
            without_field_times(&new) == without_field_times(&old.value)
        } else {
            without(&new, &["managedFields"], &[]) == without(&old.value, &["managedFields"], &[])
        };
        if unchanged {
            // The real server skips the write (no new resourceVersion, no event) for a no-op.
            return Ok(old);
        }
        if !opts.applied {
            managed::record_update(
                Some(&old.value),
                &mut new,
                &opts.manager,
                &rt.api_version(),
                subresource,
                rt.schema.as_ref().map(|s| &s.raw),
            );
        }
        if opts.dry_run {
            return Ok(Arc::new(Obj::new(new, old.rv)));
        }
        self.store_updated(rt, ns, name, new, old)
    }

    /// Create for server-side apply: `body` already carries its managedFields.
    pub fn create_applied(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Obj>> {
        let opts = WriteOpts {
            applied: true,
            ..opts.clone()
        };
        self.create(rt, ns, body, &opts)
    }

    /// Update for server-side apply: `body` already carries its managedFields.
    pub fn update_applied(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        body: Value,
        subresource: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Obj>> {
        let opts = WriteOpts {
            applied: true,
            ..opts.clone()
        };
        self.update(rt, ns, name, body, subresource, &opts)
    }

    /// Commits an update, turning "deleting and no finalizers left" into the real removal.
    pub fn store_updated(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        new: Value,
        old: Arc<Obj>,
    ) -> ApiResult<Arc<Obj>> {
        let gr = rt.group_resource();
        let key = (ns.to_string(), name.to_string());
        let finish = !new["metadata"]["deletionTimestamp"].is_null() && finalizers(&new).is_empty();
        let obj = self.commit(&gr, key.clone(), Some(new), Some(old));
        if rt.special == Special::Crd {
            self.crd_changed(&obj.value);
        }
        if finish {
            return Ok(self.remove(&gr, key, Propagation::Background));
        }
        Ok(obj)
    }

    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<Arc<Obj>> {
        let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
        let old = self.get(rt, ns, name)?;
        if let Some(uid) = &opts.precondition_uid
            && uid != old.meta_str("uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.meta_str("uid")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != old.meta_str("resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old.meta_str("resourceVersion")
                ),
            ));
        }
        if opts.dry_run {
            return Ok(old);
        }
        let gr = rt.group_resource();
        let key = (ns.to_string(), name.to_string());
        if rt.special == Special::Namespace {
            if ["default", "kube-system", "kube-public"].contains(&name) {
                return Err(ApiError::forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            return Ok(self.delete_namespace(name, old));
        }
        Ok(self.delete_obj(&gr, key, old, opts.propagation))
    }

    /// Deletion honouring finalizers: mark with deletionTimestamp, or remove now.
    fn delete_obj(
        &mut self,
        gr: &GroupResource,
        key: Key,
        old: Arc<Obj>,
        propagation: Propagation,
    ) -> Arc<Obj> {
        let uid = old.meta_str("uid").to_string();
        let foreground = propagation == Propagation::Foreground && self.has_dependents(&uid);
        if finalizers(&old.value).is_empty() && !foreground {
            return self.remove(gr, key, propagation);
        }
        let deleting = !old.value["metadata"]["deletionTimestamp"].is_null();
        let has_fg = finalizers(&old.value).iter().any(|f| f == FOREGROUND);
        if deleting && (!foreground || has_fg) {
            return old;
        }
        let mut v = old.value.clone();
        let meta = meta_mut(&mut v);
        if !deleting {
            meta.insert("deletionTimestamp".into(), Value::String(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
                meta.insert("generation".into(), json!(g + 1));
            }
        }
        if foreground && !has_fg {
            let mut fs = finalizers(&old.value);
            fs.push(FOREGROUND.to_string());
            meta.insert("finalizers".into(), json!(fs));
        }
        let marked = self.commit(gr, key.clone(), Some(v), Some(old));
        if foreground {
            self.collect_dependents(&uid, Propagation::Foreground);
            self.release_foreground(&uid);
            return self
                .collections
                .get(gr)
                .and_then(|c| c.objects.get(&key))
                .cloned()
                .unwrap_or(marked);
        }
        marked
    }

    fn has_dependents(&self, uid: &str) -> bool {
        self.owners.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// Whether a dependent of `uid` holds it in foreground deletion: like the real garbage
    /// collector, only those whose owner reference says `blockOwnerDeletion: true`.
    fn has_blocking_dependents(&self, uid: &str) -> bool {
        self.owners.get(uid).is_some_and(|deps| {
            deps.iter().any(|(gr, key)| {
                self.collections
                    .get(gr)
                    .and_then(|c| c.objects.get(key))
                    .and_then(|d| d.value["metadata"]["ownerReferences"].as_array().cloned())
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r["uid"].as_str() == Some(uid) && r["blockOwnerDeletion"] == json!(true)
                        })
                    })
            })
        })
    }

    /// Drops an owner's `foregroundDeletion` finalizer once no dependent blocks it.
    fn release_foreground(&mut self, owner_uid: &str) {
        if self.has_blocking_dependents(owner_uid) {
            return;
        }
        let Some((gr, key)) = self.uids.get(owner_uid).cloned() else {
            return;
        };
        let Some(owner) = self
            .collections
            .get(&gr)
            .and_then(|c| c.objects.get(&key))
            .cloned()
        else {
            return;
        };
        let fs = finalizers(&owner.value);
        if owner.value["metadata"]["deletionTimestamp"].is_null()
            || !fs.iter().any(|f| f == FOREGROUND)
        {
            return;
        }
        let rest: Vec<String> = fs.into_iter().filter(|f| f != FOREGROUND).collect();
        let mut v = owner.value.clone();
        if rest.is_empty() {
            meta_mut(&mut v).remove("finalizers");
        } else {
            meta_mut(&mut v).insert("finalizers".into(), json!(rest));
        }
        let done = finalizers(&v).is_empty();
        self.commit(&gr, key.clone(), Some(v), Some(owner));
        if done {
            self.remove(&gr, key, Propagation::Background);
        }
    }

    /// Removes an object now and collects what it owned.
    fn remove(&mut self, gr: &GroupResource, key: Key, propagation: Propagation) -> Arc<Obj> {
        let prev = self
            .collections
            .get(gr)
            .and_then(|c| c.objects.get(&key))
            .cloned();
        let Some(prev) = prev else {
            return Arc::new(Obj::new(Value::Null, self.rv));
        };
        let is_crd = self.collections[gr].rt.special == Special::Crd;
        let ns = key.0.clone();
        let obj = self.commit(gr, key, None, Some(prev));
        let uid = obj.meta_str("uid").to_string();
        self.collect_dependents(&uid, propagation);
        for owner in owner_uids(&obj.value) {
            self.release_foreground(&owner);
        }
        if is_crd {
            self.crd_removed(&obj.value);
        }
        if !ns.is_empty() {
            self.maybe_finish_namespace(&ns);
        }
        obj
    }

    fn collect_dependents(&mut self, owner_uid: &str, propagation: Propagation) {
        // Foreground keeps the index: the owner waits for these dependents to go.
        let deps = if propagation == Propagation::Foreground {
            self.owners.get(owner_uid).cloned()
        } else {
            self.owners.remove(owner_uid)
        };
        let Some(deps) = deps else {
            return;
        };
        let mut deps: Vec<_> = deps.into_iter().collect();
        deps.sort();
        for (gr, key) in deps {
            let Some(dep) = self
                .collections
                .get(&gr)
                .and_then(|c| c.objects.get(&key))
                .cloned()
            else {
                continue;
            };
            if propagation == Propagation::Orphan {
                let mut v = dep.value.clone();
                if let Some(refs) = v["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
                    if refs.is_empty() {
                        meta_mut(&mut v).remove("ownerReferences");
                    }
                }
                self.commit(&gr, key, Some(v), Some(dep));
                continue;
            }
            // Like the real collector, a dependent with another live owner stays.
            let other_live_owner = owner_uids(&dep.value)
                .iter()
                .any(|u| u != owner_uid && self.uids.contains_key(u));
            if !other_live_owner {
                self.delete_obj(&gr, key, dep, propagation);
            }
        }
    }

    fn delete_namespace(&mut self, name: &str, old: Arc<Obj>) -> Arc<Obj> {
        let gr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        let key = (String::new(), name.to_string());
        let marked = if old.value["metadata"]["deletionTimestamp"].is_null() {
            let mut v = old.value.clone();
            meta_mut(&mut v).insert("deletionTimestamp".into(), Value::String(now()));
            v["status"] = json!({"phase": "Terminating"});
            self.commit(&gr, key, Some(v), Some(old))
        } else {
            old
        };
        let mut victims = Vec::new();
        for (cgr, c) in &self.collections {
            if !c.rt.namespaced {
                continue;
            }
            for (k, o) in c
                .objects
                .range((name.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == name)
            {
                victims.push((cgr.clone(), k.clone(), o.clone()));
            }
        }
        for (cgr, k, o) in victims {
            if self
                .collections
                .get(&cgr)
                .is_some_and(|c| c.objects.contains_key(&k))
            {
                self.delete_obj(&cgr, k, o, Propagation::Background);
            }
        }
        self.maybe_finish_namespace(name);
        self.collections[&gr]
            .objects
            .get(&(String::new(), name.to_string()))
            .cloned()
            .unwrap_or(marked)
    }

    fn maybe_finish_namespace(&mut self, name: &str) {
        let gr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        let key = (String::new(), name.to_string());
        let Some(ns) = self.collections[&gr].objects.get(&key).cloned() else {
            return;
        };
        if ns.value["metadata"]["deletionTimestamp"].is_null() || !finalizers(&ns.value).is_empty()
        {
            return;
        }
        let empty = self.collections.values().all(|c| {
            !c.rt.namespaced
                || c.objects
                    .range((name.to_string(), String::new())..)
                    .next()
                    .is_none_or(|(k, _)| k.0 != name)
        });
        if empty {
            self.remove(&gr, key, Propagation::Background);
        }
    }

    fn crd_changed(&mut self, crd_obj: &Value) {
        let Ok(types) = crd::types(crd_obj) else {
            return;
        };
        let (group, plural) = (
            crd_obj["spec"]["group"].as_str().unwrap_or("").to_string(),
            crd_obj["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        if !crd_obj["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        self.unregister(&group, &plural);
        for rt in types {
            self.register(Arc::new(rt));
        }
    }

    fn crd_removed(&mut self, crd_obj: &Value) {
        let group = crd_obj["spec"]["group"].as_str().unwrap_or("").to_string();
        let plural = crd_obj["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let gr = GroupResource {
            group: group.clone(),
            resource: plural.clone(),
        };
        let keys: Vec<Key> = self
            .collections
            .get(&gr)
            .map(|c| c.objects.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            self.remove(&gr, k, Propagation::Background);
        }
        self.unregister(&group, &plural);
        self.collections.remove(&gr);
    }
}

fn encode_continue(last: Option<Key>) -> String {
    use base64::Engine;
    let (ns, name) = last.unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(json!({"ns": ns, "name": name}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<Key> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["ns"].as_str().ok_or_else(bad)?.to_string(),
        v["name"].as_str().ok_or_else(bad)?.to_string(),
    ))
}
