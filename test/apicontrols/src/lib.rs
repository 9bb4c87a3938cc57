//! Test controls of a Kubernetes API server — the request log, fault injection and gates —
//! and what they need to see a request as the API server does (its route, verb, body), shared
//! by kubesim (which serves the API itself) and the real stack's proxy (test/realstack's
//! `proxy`, in front of a real kube-apiserver), so that a story uses them the same way on
//! both ([`ControlledApi`]).

pub mod controls;
pub mod request;

pub use controls::{Controls, Fault, FaultAction, Gate, Match, RequestInfo, RequestRecord};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What [`ControlledApi::expire_history`] returns: done once the history is expired.
pub type Expiring<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// An API server whose requests pass through [`Controls`]: kubesim, or the proxy in front of a
/// real API server (there only the requests of the clients that use the proxy — Fluxgate's).
pub trait ControlledApi: Send + Sync {
    /// The shared request log, faults and gates.
    fn controls(&self) -> &Arc<Controls>;

    /// Makes watches of `group`/`plural` that resume from any resourceVersion handed out
    /// before now get 410 Expired, as after a compaction of the watch history; a watch from a
    /// later list works.
    fn expire_history<'a>(&'a self, group: &'a str, plural: &'a str) -> Expiring<'a>;

    /// Requests answered so far that match.
    fn requests(&self, m: &Match) -> Vec<RequestRecord> {
        self.controls().requests(m)
    }

    /// How many answered requests match, e.g. status writes of one object.
    fn count(&self, m: &Match) -> usize {
        self.requests(m).len()
    }

    /// Moves every answered request out of the log (oldest first), leaving it empty.
    fn take_requests(&self) -> Vec<RequestRecord> {
        self.controls().take_log()
    }

    fn clear_requests(&self) {
        self.controls().clear_log();
    }

    /// Adds a fault rule.
    fn inject(&self, f: Fault) {
        self.controls().add_fault(f);
    }

    fn clear_faults(&self) {
        self.controls().clear_faults();
    }

    /// Holds matching requests until [`Gate::release`]d; dropping the gate opens it.
    fn gate(&self, m: Match) -> Gate {
        self.controls().gate(m)
    }

    /// Ends every open watch stream now (clients see the stream close and re-watch).
    fn drop_watches(&self) {
        self.controls().drop_watches.send_modify(|n| *n += 1);
    }

    /// The next watch matching `m` gets an ERROR event with a 410 `Status` instead of events.
    fn force_watch_gone(&self, m: Match) {
        self.inject(Fault::new(m.verb("watch"), FaultAction::WatchGone));
    }
}
