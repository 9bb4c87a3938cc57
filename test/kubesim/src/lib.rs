//! kubesim: a Kubernetes API server simulator that kube-rs and `kubectl` talk to unchanged.
//!
//! It is Fluxgate's envtest: a generic store of JSON objects on 127.0.0.1 with the API
//! semantics the operator relies on (discovery, CRDs with schema and CEL validation,
//! optimistic concurrency, finalizers, the status subresource, watches with bounded
//! history) plus test controls (request log, fault injection, gates).
//!
//! # How to use it in a test
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use kubesim::{KubeSim, Match};
//! use k8s_openapi::api::core::v1::ConfigMap;
//! let sim = KubeSim::start().await;                       // 127.0.0.1, random port
//! sim.load_third_party_crds()?;                          // the Flux and VolumeSnapshot kinds
//! sim.load_yaml("crds")?;                                 // more CRDs (files or directories)
//! let cms: kube::Api<ConfigMap> = kube::Api::namespaced(sim.client(), "default");
//! // ... run the code under test against sim.client() or sim.kubeconfig_path() ...
//! let writes = sim.count(&Match::any().verb("write").resource("configmaps"));
//! assert!(writes <= 1);
//! # Ok(()) }
//! ```
//!
//! Faults: `sim.inject(Fault::respond(Match::any().verb("update"), 409).nth(2))`;
//! pause between writes: `let gate = sim.gate(Match::any().verb("write")); gate.wait_held(1, t).await; gate.release(1);`
//! (or `gate.fail(1, 503)` to drop the held write, as if the operator died before sending it);
//! watches: `sim.drop_watches()`, `sim.force_watch_gone(Match::any().resource("pods"))`,
//! `sim.expire_history("", "pods")`. Injected 429s carry `Retry-After` and kube-rs retries
//! 429/503/504 by itself; inject 409 or 500 to see an error reach the code under test.
//!
//! As a process: `kubesim serve --addr 127.0.0.1:0 --kubeconfig /tmp/kc [--crds <dir>]` serves
//! the Flux and VolumeSnapshot kinds (unless `--bare`) and what `--crds` names, and prints `kubesim listening on http://127.0.0.1:<port>` and serves until SIGINT/SIGTERM.
//!
//! # What kubectl asks for (seen in the request log; v1.32, and v1.36 alike)
//!
//! `kubectl apply -f` with a cold cache: `GET /openapi/v3`, the per group-version documents
//! it needs (`/openapi/v3/api/v1?hash=…`, `/openapi/v3/apis/apps/v1?hash=…`), `GET /api` and
//! `GET /apis` (aggregated discovery v2), then per object `GET` (404) and
//! `POST …?fieldManager=kubectl-client-side-apply&fieldValidation=Strict` — the OpenAPI path
//! items declare `fieldValidation`, so kubectl validates server-side and never needs
//! `/openapi/v2`. `kubectl get` asks for `as=Table`; `get --watch` and `wait` list then watch
//! with `fieldSelector=metadata.name=…` (v1.36's `wait` opens its watch with
//! `sendInitialEvents=true` instead of listing first).
//!
//! # Deliberate differences from a real API server
//!
//! The conformance cases of `tests/common/cases.rs` (through kube-rs) and
//! `tests/common/kubectl_cases.rs` (through kubectl v1.36.3) run on kubesim (`tests/kube_rs.rs`,
//! `tests/kubectl.rs`) and on the real Kubernetes v1.36.3 control plane of test/realstack
//! (`tests/real_api_server.rs`); what they found is fixed here: `must be no more than 63
//! bytes` for long label values; CRDs in protected groups refused without
//! `api-approved.kubernetes.io`; an apply without `fieldManager` is a 422 Invalid
//! PatchOptions, not a 400; CEL rules run beside schema errors that do not block them
//! (pattern, minimum, ...) and are replaced by the `<nil>: … some validation rules were not
//! checked …` cause after those that do (enum, required, too long, too many, wrong type); a
//! string reports only the first of maxLength, minLength, pattern it fails; unknown fields
//! (strict) are refused as `<Kind> in version "<v>" cannot be handled as a <Kind>: strict
//! decoding error: …`; apply conflicts are worded as the real server's (`conflict with
//! "kubectl-patch" using v1: .data.a`, several grouped by manager); foreground deletion waits
//! only for dependents with `blockOwnerDeletion`; apply owns the items of a custom resource's
//! list-maps (a ManagedApp's `spec.versions`) by their schema keys, where it took the list
//! as atomic; `kubectl auth can-i` (protobuf reviews),
//! `can-i --list` and `auth whoami` work; CRD OpenAPI carries `apiVersion`, `kind` and
//! `metadata` (ObjectMeta) so `kubectl explain` prints what the real server's does; Pods have
//! their `-o wide` columns; protobuf bodies no longer add empty strings (`generateName: ""`);
//! storage objects get the real server's defaults (claims and volumes `Pending` and
//! `Filesystem`, volumes `Retain`, classes `Delete` and `Immediate`), a claim that names no
//! class gets the default one (DefaultStorageClass admission) or later one class, a claim's
//! `dataSource` and `dataSourceRef` mirror each other, and a volume records
//! `lastPhaseTransitionTime` (found by the CSI stand-in on the real stack).
//! Beside the
//! API server, a real cluster's controllers do
//! things kubesim does not: kube-controller-manager publishes a `kube-root-ca.crt` ConfigMap
//! into every namespace (so negative label selectors there match one more object).
//!
//! - HTTP only (no TLS), no authentication or authorisation: any bearer token is accepted,
//!   and every client is `admin` in `system:masters` (what the real stack's admin kubeconfig
//!   is): SelfSubjectAccessReview answers "allowed" (without a reason, as the real server
//!   does for `system:masters`) unless a test called [`KubeSim::deny`];
//!   SelfSubjectRulesReview (`kubectl auth can-i --list`) answers the rules a real
//!   `system:masters` user has (cluster-admin's `*` plus the discovery and self-review rules
//!   every authenticated user gets), whatever a test denied; SelfSubjectReview (`kubectl
//!   auth whoami`) names `admin` and its groups, without the real server's `extra`
//!   credential id.
//! - Responses are always JSON, which every client accepts (protobuf and CBOR are never
//!   served). Request bodies may be JSON or YAML, and protobuf only for v1 Secret, ConfigMap,
//!   Namespace and DeleteOptions — what Go typed clients such as Helm's release storage and
//!   `kubectl create secret|configmap|namespace` send — and the reviews `kubectl auth can-i`
//!   and `auth whoami` send. Other protobuf bodies get 415, so e.g.
//!   `kubectl create deployment` fails; `kubectl create -f`, `apply`, `patch`, `replace`,
//!   `delete`, `scale`, `get` and `wait` all speak JSON and work.
//! - Built-in kinds get no schema validation, defaulting or pruning. What they do get: name
//!   format, label and annotation checks, Secret `stringData` folded into `data` (and `type`
//!   defaulting to `Opaque`), the storage kinds' defaults and create strategies (above),
//!   immutable ConfigMaps/Secrets, and the update restrictions of PVCs (spec frozen except
//!   `resources.requests`, even unbound, a first `volumeName` and a first class), Pods (spec frozen
//!   except images, tolerations and deadlines), StatefulSets (only replicas, template,
//!   updateStrategy, ... may change), and selectors of Deployments/DaemonSets/ReplicaSets/Jobs
//!   (plus a Job's template). Custom resources get full structural-schema handling. OpenAPI
//!   documents carry schemas for custom resources only (with the API's `apiVersion`, `kind`
//!   and ObjectMeta `metadata`, as the real server publishes them), so `kubectl explain` works
//!   for CRDs but not for built-ins, and client-side apply computes strategic merge patches
//!   for built-ins from kubectl's compiled-in types. The real server publishes a new CRD's
//!   OpenAPI a moment after the CRD is Established (`kubectl explain` fails until then);
//!   kubesim at once.
//! - OpenAPI `format`s (`date-time`, `int64`, ...) are not checked; value validation covers
//!   type, required, enum, pattern, bounds, lengths, item/property counts, nullable,
//!   int-or-string, list-type set/map uniqueness, additionalProperties and allOf/anyOf/oneOf/not.
//! - CEL rules are not fully type-checked when a CRD is written: kubesim refuses rules that
//!   use variables other than `self`/`oldSelf`/`apiVersion`/`apiGroup`/`kind`, that do not
//!   compile, or whose `self.a.b` chains name undeclared fields; type errors beyond that
//!   surface (422) on the first object instead. CEL cost limits are not enforced: the real
//!   server refuses a rule whose estimated cost is too high (e.g. a `messageExpression`
//!   concatenating `string(self.size)`, whose length it cannot bound) where kubesim accepts it.
//! - Multi-version CRDs convert with strategy `None` semantics (only `apiVersion` changes),
//!   even when the CRD asks for a webhook.
//! - The CRD controllers are instant: `NamesAccepted` and `Established` are set in the same
//!   write that creates the CRD; name conflicts with other CRDs are not detected.
//! - Garbage collection is synchronous and inside the deleting request. Background deletes
//!   dependents at once; foreground marks the owner (`deletionTimestamp` plus the
//!   `foregroundDeletion` finalizer), deletes dependents (foreground, recursively) and removes
//!   the owner when no dependent whose reference has `blockOwnerDeletion: true` is left (the
//!   others are deleted too but do not hold it, as with the real collector); a real server
//!   adds the finalizer even to an owner without dependents, for the moment its collector
//!   takes to drop it. Orphan removes the owner reference. Dependents with another live
//!   owner stay. Dependents whose owner never existed are not collected. Namespace deletion
//!   deletes the namespace's objects at once and removes the namespace when the last of them
//!   (finalizers permitting) is gone.
//! - Field ownership (server-side apply) is simplified: conflicts are per leaf field; items
//!   of keyed lists are owned one by one under `k:{...}` entries as in real `fieldsV1` — for
//!   custom resources the lists their schema declares `x-kubernetes-list-type: map` (by its
//!   `x-kubernetes-list-map-keys`), for built-ins (no schema here) those with a
//!   strategic-merge key below (containers/env/volumes by `name`, ports, conditions by
//!   `type`, ...). Every other list is atomic, `set` lists included (the real server owns
//!   their values one by one under `v:` entries), and
//!   `managedFields` have no `.`/`v:` entries. A manager that stops applying a field or item
//!   removes it unless someone else owns it. Fields owned by `kubectl-client-side-apply` or
//!   `before-first-apply` never conflict: an apply takes them over (the real server migrates
//!   them via the last-applied annotation). Non-apply writes record `Update` managers for the
//!   fields they changed; the manager is `fieldManager` or the User-Agent up to the first `/`.
//! - Strategic merge patch picks list merge keys by field name (containers/env/volumes by
//!   `name`, ports by `containerPort` or `port`, conditions by `type`, ...) rather than from Go
//!   struct tags; `$patch: delete|replace`, `$retainKeys` and `$deleteFromPrimitiveList` work,
//!   `$setElementOrder` is ignored.
//! - `continue` tokens resume from a key in the current state, not a snapshot: objects
//!   created behind the cursor during paging are not seen; a continue never answers 410.
//! - Watch history is per resource and bounded ([`Config::history_limit`]); a watcher that
//!   falls more than 4096 events behind is disconnected (it resumes from its last version).
//!   Bookmarks come every [`Config::bookmark_interval`] when asked for.
//! - `events.k8s.io/v1` Events are mirrored into core `v1` Events (converted as the real
//!   server does, same name and uid, their own resourceVersion), so `kubectl describe` and
//!   `kubectl get events` show what kube-rs's `Recorder` publishes; core Events written
//!   directly are not visible through `events.k8s.io`.
//! - `generation` is kept for custom resources and apps/batch workloads and CRDs; other
//!   built-ins have none. No-op writes do not bump resourceVersion, as on the real server.
//! - Reads always see the latest state: `resourceVersion`/`resourceVersionMatch` on get and
//!   list are accepted and ignored. A resource whose collection appears later (a CRD applied
//!   after startup, or re-created) starts its watch history then, so a watch from an earlier
//!   version of it answers 410.
//! - `fieldValidation=Strict` is honoured for custom resources (unknown fields → 400) and
//!   ignored for built-ins; `Warn` is ignored. The refusal is worded as the real server's for
//!   a create or update; for a patch the real server answers 422 on field `patch` quoting the
//!   whole patched object, for an apply 500 `failed to create typed patch object (…): .spec.x:
//!   field not declared in schema` — kubesim answers the create's 400 to both.
//! - No `Warning` headers: the real server warns (kubectl prints `Warning: …`) about unknown
//!   fields under `fieldValidation=Warn` (the default of `kubectl patch`) and about
//!   unrecognised `format`s when a CRD is written (it warned `unrecognized format "uint32"`
//!   about Fluxgate's ManagedApp CRD until that said `int32`; the kubectl suite's CRD install
//!   on the real server now fails on any warning).
//! - Validation errors come in a fixed order; the real server's order follows Go map
//!   iteration and changes from one request to the next (compare them as a set).
//! - No controllers and no kubelet: Deployments create no ReplicaSets or Pods, PVCs stay
//!   unbound, Pods are removed at once on delete (no graceful termination), and namespaces
//!   have no `kubernetes` spec finalizer. The `sim` crate plays those parts.
//! - No admission webhooks, quotas, limit ranges or API priority and fairness; 429s only
//!   come from injected faults. The request log grows for the life of the simulator.
//! - Table output: the real server's main columns for the built-in kinds (e.g. pods READY,
//!   STATUS, RESTARTS; deployments READY, UP-TO-DATE, AVAILABLE; PVCs STATUS, VOLUME, ...)
//!   and Pods' `-o wide` extras (IP, NODE, NOMINATED NODE, READINESS GATES) but not those of
//!   other kinds; CRD `additionalPrinterColumns` with a JSONPath subset (fields, indexes,
//!   `[*]`, `[?(@.a=="b")]`); a column whose value is a list or map prints as JSON where the
//!   real server prints Go's `[a b]` / `map[k:v]`.

pub mod builtin;
pub mod cel;
pub use apicontrols::controls;
pub mod crd;
pub mod discovery;
pub mod http;
pub mod managed;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod status;
pub mod store;
pub mod table;
pub mod third_party;
pub mod watch;

pub use apicontrols::ControlledApi;
pub use controls::{Fault, FaultAction, Gate, Match, RequestInfo, RequestRecord};
pub use http::Config;
pub use status::{ApiError, Cause};

use http::Shared;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use store::{Inner, WriteOpts};

/// Why loading YAML into the simulator failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {kind} {name:?} was refused: {error}")]
    Refused {
        path: PathBuf,
        kind: String,
        name: String,
        error: Box<ApiError>,
    },
    #[error("{path}: no served resource for apiVersion {api_version:?} kind {kind:?}")]
    UnknownKind {
        path: PathBuf,
        api_version: String,
        kind: String,
    },
}

/// A running simulator; it stops when dropped or on [`KubeSim::shutdown`].
pub struct KubeSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    kubeconfig_dir: tempfile::TempDir,
}

/// Kubeconfig text for a server at `base_url` (any token works).
pub fn kubeconfig_yaml(base_url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {base_url}\nusers:\n- name: kubesim\n  user:\n    token: kubesim\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: default\ncurrent-context: kubesim\n"
    )
}

impl KubeSim {
    /// Starts on 127.0.0.1 with a random port and default [`Config`].
    ///
    /// # Panics
    /// When no loopback port can be bound (a broken test machine).
    pub async fn start() -> KubeSim {
        Self::start_with(
            Config::default(),
            "127.0.0.1:0".parse().expect("valid address"),
        )
        .await
        .expect("kubesim could not bind a loopback port")
    }

    /// Starts with explicit tunables and address.
    pub async fn start_with(config: Config, addr: SocketAddr) -> std::io::Result<KubeSim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            store: RwLock::new(Inner::new(config.history_limit)),
            controls: Arc::default(),
            config,
            shutdown: rx.clone(),
            addr: RwLock::new(addr.to_string()),
        });
        let app = http::router(shared.clone());
        let mut stop = rx;
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "kubesim server stopped");
            }
        });
        let kubeconfig_dir = tempfile::tempdir()?;
        let sim = KubeSim {
            shared,
            addr,
            shutdown: tx,
            kubeconfig_dir,
        };
        std::fs::write(sim.kubeconfig_path(), kubeconfig_yaml(&sim.base_url()))?;
        Ok(sim)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let uri = self.base_url().parse().expect("base URL is a valid URI");
        let config = kube::Config::new(uri);
        kube::Client::try_from(config).expect("a plain-HTTP kube client always builds")
    }

    /// A kubeconfig file `kubectl --kubeconfig` accepts, valid while the simulator lives.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig_dir.path().join("kubeconfig")
    }

    /// Loads every YAML document from a file or a directory of `.yaml`/`.yml`/`.json` files:
    /// CustomResourceDefinitions first, then everything else (created, or replaced if present).
    /// Returns `kind/name` of each object written.
    pub fn load_yaml(&self, path: impl AsRef<Path>) -> Result<Vec<String>, LoadError> {
        let path = path.as_ref();
        let mut files = Vec::new();
        if path.is_dir() {
            let rd = std::fs::read_dir(path).map_err(|source| LoadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            for e in rd.flatten() {
                let p = e.path();
                if matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("yaml" | "yml" | "json")
                ) {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut docs: Vec<(PathBuf, Value)> = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| LoadError::Io {
                path: f.clone(),
                source,
            })?;
            docs.extend(parse_documents(&f, &text)?);
        }
        self.put_documents(docs)
    }

    /// Serves the Flux (source, kustomize, helm) and CSI VolumeSnapshot kinds, from the CRDs
    /// embedded in kubesim ([`third_party::CRDS`]). Returns `kind/name` of each CRD written.
    pub fn load_third_party_crds(&self) -> Result<Vec<String>, LoadError> {
        let mut docs = Vec::new();
        for (file, text) in third_party::CRDS {
            docs.extend(parse_documents(Path::new(file), text)?);
        }
        self.put_documents(docs)
    }

    /// Writes documents: CustomResourceDefinitions first, so the kinds they define exist.
    fn put_documents(&self, mut docs: Vec<(PathBuf, Value)>) -> Result<Vec<String>, LoadError> {
        docs.sort_by_key(|(_, v)| v["kind"] != "CustomResourceDefinition");
        let mut written = Vec::new();
        for (p, v) in docs {
            written.push(self.put_object(&p, v)?);
        }
        Ok(written)
    }

    /// Creates or replaces one object given as JSON (apiVersion and kind required).
    pub fn put(&self, obj: Value) -> Result<String, LoadError> {
        self.put_object(Path::new("<value>"), obj)
    }

    fn put_object(&self, path: &Path, v: Value) -> Result<String, LoadError> {
        let api_version = v["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = v["kind"].as_str().unwrap_or("").to_string();
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, ver)) => (g.to_string(), ver.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let mut store = self
            .shared
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let rt = store
            .types
            .get(&(group, version))
            .and_then(|m| m.values().find(|rt| rt.kind == kind).cloned())
            .ok_or_else(|| LoadError::UnknownKind {
                path: path.to_path_buf(),
                api_version: api_version.clone(),
                kind: kind.clone(),
            })?;
        let ns = if rt.namespaced {
            Some(
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
            )
        } else {
            None
        };
        let opts = WriteOpts {
            manager: "kubesim-load".into(),
            ..WriteOpts::default()
        };
        let refused = |error: ApiError| LoadError::Refused {
            path: path.to_path_buf(),
            kind: kind.clone(),
            name: name.clone(),
            error: Box::new(error),
        };
        let key_ns = ns.clone().unwrap_or_default();
        match store.get(&rt, &key_ns, &name) {
            Ok(_) => {
                let mut body = v.clone();
                if let Some(m) = body["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                store
                    .update(&rt, ns.as_deref(), &name, body, None, &opts)
                    .map_err(refused)?;
            }
            Err(_) => {
                store
                    .create(&rt, ns.as_deref(), v, &opts)
                    .map_err(refused)?;
            }
        }
        Ok(format!("{kind}/{name}"))
    }

    /// Requests answered so far that match.
    pub fn requests(&self, m: &Match) -> Vec<RequestRecord> {
        self.shared.controls.requests(m)
    }

    /// How many answered requests match, e.g. status writes of one object.
    pub fn count(&self, m: &Match) -> usize {
        self.requests(m).len()
    }

    /// Moves every answered request out of the log (oldest first), leaving it empty: a
    /// long-running reader polls it this way without copying the whole log each time.
    pub fn take_requests(&self) -> Vec<RequestRecord> {
        self.shared.controls.take_log()
    }

    pub fn clear_requests(&self) {
        self.shared.controls.clear_log();
    }

    /// Adds a fault rule.
    pub fn inject(&self, f: Fault) {
        self.shared.controls.add_fault(f);
    }

    pub fn clear_faults(&self) {
        self.shared.controls.clear_faults();
    }

    /// Holds matching requests until [`Gate::release`]d; dropping the gate opens it.
    pub fn gate(&self, m: Match) -> Gate {
        self.shared.controls.gate(m)
    }

    /// Ends every open watch stream now (clients see the stream close and re-watch).
    pub fn drop_watches(&self) {
        self.shared.controls.drop_watches.send_modify(|n| *n += 1);
    }

    /// The next watch matching `m` gets an ERROR event with a 410 `Status` instead of events.
    pub fn force_watch_gone(&self, m: Match) {
        self.inject(Fault::new(m.verb("watch"), FaultAction::WatchGone));
    }

    /// Forgets the watch history of a resource, so watches from any earlier version get 410.
    pub fn expire_history(&self, group: &str, plural: &str) {
        let gr = resources::GroupResource {
            group: group.to_string(),
            resource: plural.to_string(),
        };
        self.shared
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .compact(&gr);
    }

    /// Makes SelfSubjectAccessReviews for `verb` on `resource` (`*` for any) answer "denied".
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared.controls.deny(verb, resource);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .rv
    }

    /// Stops serving; open watches end.
    pub fn shutdown(self) {
        drop(self);
    }
}

/// kubesim's own request log, faults and gates, as a story uses them on any stack.
impl apicontrols::ControlledApi for KubeSim {
    fn controls(&self) -> &Arc<controls::Controls> {
        &self.shared.controls
    }

    fn expire_history<'a>(&'a self, group: &'a str, plural: &'a str) -> apicontrols::Expiring<'a> {
        KubeSim::expire_history(self, group, plural);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The YAML documents of one file that are objects, each with the file it came from.
fn parse_documents(path: &Path, text: &str) -> Result<Vec<(PathBuf, Value)>, LoadError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| LoadError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(values
        .into_iter()
        .filter(Value::is_object)
        .map(|v| (path.to_path_buf(), v))
        .collect())
}
