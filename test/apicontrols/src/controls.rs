//! Test controls: the request log, fault injection (errors, latency, forced 410s, dropped watches) and gates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, Semaphore, watch};

/// What a request was about, as the log records and matchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// or `discovery` for everything that is not a resource request.
    pub verb: String,
    pub group: String,
    pub version: String,
    /// Plural resource name, e.g. `configmaps`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// `merge`, `json`, `strategic` or `apply` for patches.
    pub patch_type: Option<String>,
    /// For `list` and `watch`: the one name a `metadata.name=<name>` field selector picks —
    /// what the real API server's authorizer matches against RBAC `resourceNames`.
    pub selected_name: Option<String>,
    pub path: String,
    /// The client's `User-Agent` header (empty when it sent none).
    pub user_agent: String,
}

/// One answered request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub info: RequestInfo,
    pub code: u16,
    pub time: SystemTime,
    /// The request body of writes (create/update/patch) when it was JSON or YAML.
    pub body: Option<serde_json::Value>,
}

impl std::ops::Deref for RequestRecord {
    type Target = RequestInfo;
    fn deref(&self) -> &RequestInfo {
        &self.info
    }
}

/// Selects requests by verb/resource/namespace/name/subresource/User-Agent; unset parts
/// match anything.
#[derive(Debug, Clone, Default)]
pub struct Match {
    verbs: Vec<String>,
    resource: Option<String>,
    group: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<Option<String>>,
    user_agent_prefix: Option<String>,
}

impl Match {
    /// Matches every request (including discovery).
    pub fn any() -> Self {
        Self::default()
    }

    /// Adds an accepted verb; several calls accept any of them. `write` means create/update/patch/delete.
    pub fn verb(mut self, verb: &str) -> Self {
        if verb == "write" {
            self.verbs.extend(
                ["create", "update", "patch", "delete", "deletecollection"].map(String::from),
            );
        } else {
            self.verbs.push(verb.to_string());
        }
        self
    }

    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_string());
        self
    }

    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_string());
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// `status`, `scale`, ...
    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(Some(sub.to_string()));
        self
    }

    /// Only requests to the main resource, not a subresource.
    pub fn main_resource(mut self) -> Self {
        self.subresource = Some(None);
        self
    }

    /// Only requests whose `User-Agent` starts with `prefix` (e.g. `fluxgate/`: one client's
    /// requests among many, for gates and faults aimed at an operator).
    pub fn user_agent(mut self, prefix: &str) -> Self {
        self.user_agent_prefix = Some(prefix.to_string());
        self
    }

    pub fn matches(&self, r: &RequestInfo) -> bool {
        (self.verbs.is_empty() || self.verbs.contains(&r.verb))
            && self
                .user_agent_prefix
                .as_ref()
                .is_none_or(|p| r.user_agent.starts_with(p.as_str()))
            && self.resource.as_ref().is_none_or(|x| *x == r.resource)
            && self.group.as_ref().is_none_or(|x| *x == r.group)
            && self
                .namespace
                .as_ref()
                .is_none_or(|x| r.namespace.as_ref() == Some(x))
            && self
                .name
                .as_ref()
                .is_none_or(|x| r.name.as_ref() == Some(x))
            && self
                .subresource
                .as_ref()
                .is_none_or(|x| *x == r.subresource)
    }
}

/// What a fault does to a matching request.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this HTTP code and a `Status` with the matching reason.
    Respond(u16),
    /// Wait this long, then handle normally.
    Delay(Duration),
    /// For watches: open the stream and send an ERROR event with a 410 `Status` at once.
    WatchGone,
}

/// A fault rule: which requests, which action, on which occurrence and how often.
#[derive(Debug, Clone)]
pub struct Fault {
    matcher: Match,
    action: FaultAction,
    skip: usize,
    times: Option<usize>,
    chance: Option<Chance>,
}

/// A seeded coin for probabilistic faults: xorshift64*, so the same seed gives the same
/// sequence of draws (which requests they land on still depends on the request order).
#[derive(Debug, Clone)]
struct Chance {
    /// Fires when a draw in [0, 2^32) is below this.
    threshold: u64,
    state: u64,
}

impl Chance {
    fn new(probability: f64, seed: u64) -> Chance {
        let p = probability.clamp(0.0, 1.0);
        Chance {
            threshold: (p * (1u64 << 32) as f64) as u64,
            // splitmix64 of the seed: any seed (even 0) gives a non-zero, well-mixed state.
            state: {
                let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) | 1
            },
        }
    }

    fn draw(&mut self) -> bool {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) < self.threshold
    }
}

impl Fault {
    pub fn new(matcher: Match, action: FaultAction) -> Self {
        Fault {
            matcher,
            action,
            skip: 0,
            times: Some(1),
            chance: None,
        }
    }

    /// Answer a matching request with `code` (409, 429, 500, ...), once.
    pub fn respond(matcher: Match, code: u16) -> Self {
        Self::new(matcher, FaultAction::Respond(code))
    }

    /// Delay matching requests, every time.
    pub fn delay(matcher: Match, by: Duration) -> Self {
        Self::new(matcher, FaultAction::Delay(by)).always()
    }

    /// Fire on the `n`th matching request (1-based) instead of the first.
    pub fn nth(mut self, n: usize) -> Self {
        self.skip = n.saturating_sub(1);
        self
    }

    /// Fire this many times (after the skipped ones).
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    pub fn always(mut self) -> Self {
        self.times = None;
        self
    }

    /// Fire on each matching request with `probability` only, drawn from a generator seeded
    /// with `seed` (deterministic: a fault soak names its seed to be replayed). Counts
    /// (`nth`, `times`) apply to the requests the draw picked; combine with
    /// [`Fault::always`] for a steady rate.
    pub fn with_probability(mut self, probability: f64, seed: u64) -> Self {
        self.chance = Some(Chance::new(probability, seed));
        self
    }
}

struct GateInner {
    matcher: Match,
    /// (code, how many): the next requests let through are answered with `code`, unhandled.
    fail_with: Mutex<(u16, usize)>,
    permits: Semaphore,
    held: AtomicUsize,
    passed: AtomicUsize,
    changed: Notify,
}

/// A request waiting at a gate; leaving (passing or being dropped) un-counts it.
struct Holding<'a>(&'a GateInner);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Holds matching requests until released; dropping the gate opens it.
pub struct Gate {
    inner: Arc<GateInner>,
    controls: Arc<Controls>,
}

impl Gate {
    /// Requests waiting at the gate now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// Requests let through so far.
    pub fn passed(&self) -> usize {
        self.inner.passed.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are held (or the timeout passes); true when reached.
    pub async fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            if self.held() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.held() >= n;
            }
        }
    }

    /// Lets `n` held (or future) requests through.
    pub fn release(&self, n: usize) {
        self.inner.permits.add_permits(n);
    }

    /// Answers `n` held (or future) requests with `code` without handling them: the write never
    /// happens, as if the client had died before sending it (the crash matrix).
    pub fn fail(&self, n: usize, code: u16) {
        *self
            .inner
            .fail_with
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (code, n);
        self.inner.permits.add_permits(n);
    }

    /// Lets everything through from now on and removes the gate.
    pub fn open(&self) {
        self.inner.permits.close();
        self.controls
            .gates
            .lock()
            .expect("gate list lock")
            .retain(|g| !Arc::ptr_eq(g, &self.inner));
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

/// Shared state of the request log, faults and gates.
pub struct Controls {
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Vec<(Fault, usize)>>,
    gates: Mutex<Vec<Arc<GateInner>>>,
    /// Bumped to make open watches end.
    pub drop_watches: watch::Sender<u64>,
    denied: Mutex<Vec<(String, String)>>,
}

impl Default for Controls {
    fn default() -> Self {
        Controls {
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            gates: Mutex::new(Vec::new()),
            drop_watches: watch::channel(0).0,
            denied: Mutex::new(Vec::new()),
        }
    }
}

impl Controls {
    pub fn record(&self, info: RequestInfo, code: u16, body: Option<serde_json::Value>) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RequestRecord {
                info,
                code,
                time: SystemTime::now(),
                body,
            });
    }

    pub fn requests(&self, m: &Match) -> Vec<RequestRecord> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|r| m.matches(&r.info))
            .cloned()
            .collect()
    }

    /// Moves every record out of the log, leaving it empty.
    pub fn take_log(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn clear_log(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn add_fault(&self, f: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((f, 0));
    }

    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The actions that fire for this request, consuming one use of each.
    pub fn faults_for(&self, r: &RequestInfo) -> Vec<FaultAction> {
        let mut out = Vec::new();
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        for (f, seen) in faults.iter_mut() {
            if !f.matcher.matches(r) {
                continue;
            }
            if let Some(chance) = f.chance.as_mut()
                && !chance.draw()
            {
                continue;
            }
            *seen += 1;
            if *seen <= f.skip {
                continue;
            }
            if let Some(t) = f.times.as_mut() {
                if *t == 0 {
                    continue;
                }
                *t -= 1;
            }
            out.push(f.action.clone());
        }
        faults.retain(|(f, _)| f.times != Some(0));
        out
    }

    pub fn gate(self: &Arc<Self>, m: Match) -> Gate {
        let inner = Arc::new(GateInner {
            matcher: m,
            fail_with: Mutex::new((0, 0)),
            permits: Semaphore::new(0),
            held: AtomicUsize::new(0),
            passed: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        self.gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(inner.clone());
        Gate {
            inner,
            controls: self.clone(),
        }
    }

    /// Waits at every gate that matches; `Some(code)` when a gate failed the request instead.
    pub async fn pass_gates(&self, r: &RequestInfo) -> Option<u16> {
        let gates: Vec<Arc<GateInner>> = self
            .gates
            .lock()
            .expect("gate lock")
            .iter()
            .filter(|g| g.matcher.matches(r))
            .cloned()
            .collect();
        for g in gates {
            g.held.fetch_add(1, Ordering::SeqCst);
            g.changed.notify_waiters();
            // Counted as held until it passes or its client goes away (the handler is
            // dropped), so a test that killed the client sees the gate empty.
            let holding = Holding(&g);
            // A closed semaphore means the gate was opened: pass freely.
            if let Ok(p) = g.permits.acquire().await {
                p.forget();
            }
            drop(holding);
            g.passed.fetch_add(1, Ordering::SeqCst);
            g.changed.notify_waiters();
            let mut fail = g.fail_with.lock().unwrap_or_else(PoisonError::into_inner);
            if fail.1 > 0 {
                fail.1 -= 1;
                return Some(fail.0);
            }
        }
        None
    }

    pub fn deny(&self, verb: &str, resource: &str) {
        self.denied
            .lock()
            .expect("deny lock")
            .push((verb.to_string(), resource.to_string()));
    }

    pub fn allowed(&self, verb: &str, resource: &str) -> bool {
        !self
            .denied
            .lock()
            .expect("deny lock")
            .iter()
            .any(|(v, r)| (v == verb || v == "*") && (r == resource || r == "*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(verb: &str, user_agent: &str) -> RequestInfo {
        RequestInfo {
            verb: verb.into(),
            group: "apps".into(),
            version: "v1".into(),
            resource: "statefulsets".into(),
            namespace: Some("apps".into()),
            name: Some("db".into()),
            subresource: None,
            patch_type: None,
            path: "/apis/apps/v1/namespaces/apps/statefulsets/db".into(),
            selected_name: None,
            user_agent: user_agent.into(),
        }
    }

    #[test]
    fn user_agent_prefix_selects_one_client() {
        let operator = Match::any().verb("write").user_agent("fluxgate/");
        assert!(operator.matches(&info("patch", "fluxgate/0.1.0")));
        assert!(!operator.matches(&info("patch", "sim/0.1.0")));
        assert!(!operator.matches(&info("patch", "")));
        assert!(!operator.matches(&info("get", "fluxgate/0.1.0")));
        assert!(
            Match::any().matches(&info("get", "")),
            "unset matches anything"
        );
    }

    fn fired(controls: &Controls, n: usize) -> Vec<bool> {
        (0..n)
            .map(|_| !controls.faults_for(&info("get", "fluxgate/1")).is_empty())
            .collect()
    }

    #[test]
    fn probabilistic_faults_are_deterministic_per_seed_and_near_their_rate() {
        let run = |seed| {
            let controls = Controls::default();
            controls.add_fault(
                Fault::respond(Match::any(), 500)
                    .always()
                    .with_probability(0.1, seed),
            );
            fired(&controls, 10_000)
        };
        let first = run(7);
        assert_eq!(first, run(7), "same seed, same draws");
        assert_ne!(first, run(8), "another seed, other draws");
        let rate = first.iter().filter(|f| **f).count();
        assert!((800..1200).contains(&rate), "about 10% fired: {rate}");
        // Probability 0 and 1 are exact; counts apply to the drawn requests.
        let controls = Controls::default();
        controls.add_fault(
            Fault::respond(Match::any(), 500)
                .always()
                .with_probability(0.0, 1),
        );
        assert!(fired(&controls, 1000).iter().all(|f| !f));
        let controls = Controls::default();
        controls.add_fault(
            Fault::respond(Match::any(), 500)
                .times(3)
                .with_probability(1.0, 1),
        );
        assert_eq!(fired(&controls, 5), [true, true, true, false, false]);
    }

    #[tokio::test]
    async fn a_dropped_request_leaves_the_gate() {
        let controls = Arc::new(Controls::default());
        let gate = controls.gate(Match::any());
        let waiting = {
            let controls = controls.clone();
            tokio::spawn(async move { controls.pass_gates(&info("patch", "x")).await })
        };
        assert!(gate.wait_held(1, Duration::from_secs(5)).await);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(gate.held(), 0, "the client went away");
        assert_eq!(gate.passed(), 0);
    }
}
