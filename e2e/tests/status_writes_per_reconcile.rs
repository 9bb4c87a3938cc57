//! Invariant 2 of docs/design.md §5 (issue #6, invariant test 2): at most one status write per reconcile
//! per request, counted through the real controller loop, on kubesim and on the real control
//! plane with real Flux. A reconcile cannot be told from
//! kubesim's log alone (two reconciles can read the same cached resourceVersion), so this
//! test listens to the operator's own tracing: every reconcile runs in a `reconcile` span,
//! every kube-client request in an `HTTP` span beneath it; a PUT to an UpgradeRequest's or
//! RollbackRequest's `/status` is counted against the reconcile it belongs to. Its own test
//! binary, because the tracing subscriber is process-wide.

use e2e::checks::{content_tokens, rollback_problems};
use e2e::given::app;
use fluxgate::api::UpgradeRequest;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// A span's fields, as text.
#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

/// Marks a `reconcile` span.
struct Reconcile;

#[derive(Default)]
struct Counts {
    /// Status writes per reconcile span: (request, writes).
    per_reconcile: HashMap<u64, (String, usize)>,
    /// Status writes of a request sent outside any reconcile span.
    outside: Vec<String>,
}

#[derive(Clone, Default)]
struct StatusWrites(Arc<Mutex<Counts>>);

impl<S> Layer<S> for StatusWrites
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let Some(span) = ctx.span(id) else { return };
        match attrs.metadata().name() {
            "reconcile" => {
                let name = format!(
                    "{}/{}",
                    fields.0.get("kind").cloned().unwrap_or_default(),
                    fields.0.get("name").cloned().unwrap_or_default()
                );
                self.0
                    .lock()
                    .unwrap()
                    .per_reconcile
                    .insert(id.into_u64(), (name, 0));
                span.extensions_mut().insert(Reconcile);
            }
            "HTTP" => {
                let method = fields.0.get("http.method").cloned().unwrap_or_default();
                let url = fields.0.get("http.url").cloned().unwrap_or_default();
                let path = url.split('?').next().unwrap_or_default();
                let request_status = path.ends_with("/status")
                    && (path.contains("/upgraderequests/") || path.contains("/rollbackrequests/"));
                if method != "PUT" || !request_status {
                    return;
                }
                let reconcile = span
                    .scope()
                    .skip(1)
                    .find(|s| s.extensions().get::<Reconcile>().is_some());
                let mut counts = self.0.lock().unwrap();
                match reconcile {
                    Some(r) => {
                        if let Some(entry) = counts.per_reconcile.get_mut(&r.id().into_u64()) {
                            entry.1 += 1;
                        }
                    }
                    None => counts.outside.push(path.to_owned()),
                }
            }
            _ => {}
        }
    }
}

fn wanted(meta: &Metadata<'_>) -> bool {
    matches!(meta.name(), "reconcile" | "HTTP")
}

/// The process's status-write counter: the tracing subscriber is installed once for the
/// process, and the stories that read it take turns ([`STORY`]).
fn status_writes() -> &'static StatusWrites {
    static WRITES: OnceLock<StatusWrites> = OnceLock::new();
    WRITES.get_or_init(|| {
        let writes = StatusWrites::default();
        tracing_subscriber::registry()
            .with(
                writes
                    .clone()
                    .with_filter(tracing_subscriber::filter::filter_fn(wanted)),
            )
            .init();
        writes
    })
}

/// Held by the story that counts: one at a time, since both stacks' operators would
/// otherwise report to the same counter.
static STORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn at_most_one_status_write_per_reconcile() {
    let _turn = STORY.lock().await;
    let writes = status_writes();
    *writes.0.lock().unwrap() = Counts::default();
    // A failing version: an upgrade and its automatic rollback, both kinds in one run.
    // Helm gives up on the never-ready version soon after the health timeout (on real Flux
    // its default 5m wait would hold the rollback that long; see rollback.rs).
    let story = app()
        .health_timeout("5s")
        .helm_timeout("15s")
        .running_at("v1.4.0")
        .await;
    story.world.failures.fail_chart_version("v2.0.0");
    let before = content_tokens(&story).await;
    story.upgrade("db-2-0-0", "v2.0.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-2-0-0", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        rollback_problems(&story, &done, "v1.4.0", &before).await,
        Vec::<String>::new()
    );
    story.stop().await;

    let counts = writes.0.lock().unwrap();
    assert!(
        counts.outside.is_empty(),
        "status writes outside any reconcile: {:?}",
        counts.outside
    );
    let mut by_request: HashMap<&str, (usize, usize)> = HashMap::new();
    for (request, n) in counts.per_reconcile.values() {
        let entry = by_request.entry(request).or_default();
        entry.0 += 1;
        entry.1 += n;
        assert!(
            *n <= 1,
            "a reconcile of {request} wrote its status {n} times"
        );
    }
    println!("reconciles and status writes by request: {by_request:?}");
    for kind in ["Upgrade/db-2-0-0", "Rollback/db-2-0-0-rollback"] {
        let (reconciles, status_writes) = by_request.get(kind).copied().unwrap_or_default();
        assert!(
            status_writes >= 5 && reconciles >= status_writes,
            "{kind}: {reconciles} reconciles, {status_writes} status writes seen"
        );
    }
}

e2e::on_all_stacks!(at_most_one_status_write_per_reconcile);
