//! The ManagedApp controller's Events: an app's warnings told once until they change, its
//! notes, and what a fresh read of Renovate's input found, on the input's ConfigMap.

use super::Shared;
use super::view::View;

use crate::api::ManagedApp;
use crate::controller::renovate_input::InputNews;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

/// Publishes the view's Events; a warning is told once until its text changes.
pub(super) async fn publish(shared: &Shared, app: &ManagedApp, view: &View) {
    let key = (app.namespace().unwrap_or_default(), app.name_any());
    let warning = view
        .warnings
        .iter()
        .map(|(r, m)| format!("{r}: {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    let new_warning = {
        let mut warned = shared.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warning.is_empty() {
            warned.remove(&key);
            false
        } else {
            warned.insert(key, warning.clone()) != Some(warning)
        }
    };
    if new_warning {
        for (reason, message) in &view.warnings {
            tracing::warn!(app = %app.name_any(), reason, %message, "ManagedApp");
            event(shared, app, EventType::Warning, reason, message).await;
        }
    }
    for (reason, message) in &view.notes {
        event(shared, app, EventType::Normal, reason, message).await;
    }
}

/// Tells what a fresh read of Renovate's input found as an Event on its ConfigMap (the log
/// line and the metrics are written where it was read). A file input has no object to
/// carry it; its unusable reads reach each app's Events instead.
pub(super) async fn publish_input_news(shared: &Shared, news: &InputNews) {
    let Some(reference) = shared.renovate.configmap_reference() else {
        return;
    };
    let (type_, reason) = if news.usable {
        (EventType::Normal, "RenovateInputRead")
    } else {
        (EventType::Warning, "RenovateInputUnusable")
    };
    publish_event(shared, &reference, type_, reason, &news.message).await;
}

pub(super) async fn event(
    shared: &Shared,
    app: &ManagedApp,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    publish_event(shared, &app.object_ref(&()), type_, reason, note).await;
}

pub(super) async fn publish_event(
    shared: &Shared,
    subject: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let recorder = Recorder::new(
        shared.ctx.cluster.client().clone(),
        Reporter {
            controller: "fluxgate".into(),
            instance: None,
        },
    );
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Observe".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, subject).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}
