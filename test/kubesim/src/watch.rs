//! Watch streams: replay from history or the current state, live fan-out of pre-serialised events, bookmarks, timeouts and 410s.

use crate::http::Shared;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType, Obj, event_line};
use crate::table;
use bytes::Bytes;
use serde_json::json;
use std::convert::Infallible;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// What a watch request asked for.
pub struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub from_rv: Option<u64>,
    pub bookmarks: bool,
    pub send_initial: bool,
    pub timeout: Option<Duration>,
    pub table: bool,
    /// `as=PartialObjectMetadata`: events carry metadata only.
    pub metadata_only: bool,
    /// A test asked for this watch to fail with 410 at once.
    pub force_gone: bool,
}

impl WatchRequest {
    fn selects(&self, o: &Obj) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| o.meta_str("namespace") == ns)
            && self.labels.matches(&o.value)
            && self.fields.matches(&o.value)
    }

    fn filtered(&self) -> bool {
        self.namespace.is_some() || !self.labels.is_empty() || !self.fields.is_empty()
    }

    fn line(&self, kind: EventType, obj: &Obj) -> Bytes {
        if self.metadata_only {
            let partial = crate::http::partial_metadata(&obj.value);
            return event_line(kind, &serde_json::to_vec(&partial).unwrap_or_default());
        }
        if self.table {
            let t = table::table_for(&self.rt, std::slice::from_ref(&obj.value), obj.rv, "Object");
            return event_line(kind, &serde_json::to_vec(&t).unwrap_or_default());
        }
        event_line(kind, &obj.bytes_for(&self.rt))
    }

    /// The line a watcher sends for a stored event, if any (selectors turn changes into ADDED/DELETED).
    fn translate(&self, ev: &Event) -> Option<Bytes> {
        let same_version =
            ev.obj.value["apiVersion"].as_str() == Some(self.rt.api_version().as_str());
        if !self.filtered() {
            return Some(if same_version && !self.table && !self.metadata_only {
                ev.line.clone()
            } else {
                self.line(ev.kind, &ev.obj)
            });
        }
        let now = self.selects(&ev.obj);
        let before = ev.prev.as_deref().is_some_and(|p| self.selects(p));
        let kind = match ev.kind {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if now => EventType::Deleted,
            _ => return None,
        };
        Some(
            if kind == ev.kind && same_version && !self.table && !self.metadata_only {
                ev.line.clone()
            } else {
                self.line(kind, &ev.obj)
            },
        )
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        Bytes::from(format!("{{\"type\":\"BOOKMARK\",\"object\":{obj}}}\n"))
    }
}

fn error_line(err: &ApiError) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"ERROR\",\"object\":{}}}\n",
        err.to_json()
    ))
}

/// Starts a watch; the returned channel yields the response body's lines.
pub fn start(shared: Arc<Shared>, req: WatchRequest) -> mpsc::Receiver<Result<Bytes, Infallible>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let gr = req.rt.group_resource();
    let mut first: Vec<Bytes> = Vec::new();
    let mut sub: Option<broadcast::Receiver<Arc<Event>>> = None;
    let mut last_rv = 0;
    if req.force_gone {
        first.push(error_line(&ApiError::gone(
            "too old resource version: the watch was expired by a test (forced 410)",
        )));
    } else {
        let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
        match store.collections.get(&gr) {
            None => first.push(error_line(&ApiError::gone(
                "the resource is no longer served",
            ))),
            Some(coll) => {
                last_rv = store.rv;
                match req.from_rv.filter(|rv| *rv != 0 && !req.send_initial) {
                    Some(rv) if rv < coll.compacted_rv => {
                        first.push(error_line(&ApiError::gone(format!(
                            "too old resource version: {rv} ({})",
                            coll.compacted_rv
                        ))));
                    }
                    Some(rv) => {
                        for ev in coll.history.iter().filter(|e| e.rv > rv) {
                            if let Some(l) = req.translate(ev) {
                                first.push(l);
                            }
                        }
                        sub = Some(coll.tx.subscribe());
                    }
                    None => {
                        let iter: Box<dyn Iterator<Item = &Arc<Obj>>> = match &req.namespace {
                            Some(ns) => Box::new(
                                coll.objects
                                    .range((ns.clone(), String::new())..)
                                    .take_while(|(k, _)| k.0 == *ns)
                                    .map(|(_, o)| o),
                            ),
                            None => Box::new(coll.objects.values()),
                        };
                        for o in iter.filter(|o| req.selects(o)) {
                            first.push(req.line(EventType::Added, o));
                        }
                        if req.send_initial {
                            first.push(req.bookmark(last_rv, true));
                        }
                        sub = Some(coll.tx.subscribe());
                    }
                }
            }
        }
    }
    let mut drop_rx = shared.controls.drop_watches.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let interval = shared.config.bookmark_interval;
    tokio::spawn(async move {
        for line in first {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let Some(mut sub) = sub else {
            return;
        };
        let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if let Some(l) = req.translate(&ev)
                            && tx.send(Ok(l)).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher this far behind is closed; the client resumes from its last version.
                    Err(_) => return,
                },
                _ = ticker.tick(), if req.bookmarks => {
                    let rv = {
                        let store = shared.store.read().unwrap_or_else(PoisonError::into_inner);
                        sub.is_empty().then_some(store.rv)
                    };
                    if let Some(rv) = rv {
                        last_rv = last_rv.max(rv);
                        if tx.send(Ok(req.bookmark(last_rv, false))).await.is_err() {
                            return;
                        }
                    }
                }
                _ = sleep => return,
                _ = drop_rx.changed() => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
