//! kubesim: a Kubernetes API server simulator that kube-rs and `kubectl` talk to unchanged.
//!
//! It is Fluxgate's envtest: a generic store of JSON objects on 127.0.0.1 with the API
//! semantics the operator relies on (discovery, CRDs with schema and CEL validation,
//! optimistic concurrency, finalizers, the status subresource, watches with bounded
//! history) plus test controls (request log, fault injection, gates).
