//! Benchmark: the operator's speed and cost on kubesim and the simulated world — step latency
//! (a dependency becoming true → the operator's next request), one upgrade's wall time with
//! near-instant dependencies, API requests per upgrade and per rollback, and 1,000 idle
//! ManagedApps watched by a real `fluxgate run` process (requests per minute, resident memory).
//!
//! ```text
//! cargo build --release --bin fluxgate
//! cargo run --release -p e2e --bin bench_operator -- [--upgrades N] [--slow-upgrades N]
//!     [--rollbacks N] [--apps N] [--idle-secs S] [--fluxgate PATH] [--out FILE]
//! ```
//! Prints the figures and writes them to FILE (default `e2e/results/bench_operator.txt`),
//! each with its bar from docs/design.md and PASS or MISS. Everything is read from
//! kubesim's request log: its timestamps (taken when a request has been answered) and
//! User-Agents tell who did what when. In-process, the request controllers and the
//! ManagedApp controller run with their own User-Agents (both starting `fluxgate/`), so
//! their requests can be told apart; the idle part runs the real binary.

use fluxgate::api::FluxObjectKind;
use fluxgate::api::{ManagedApp, Phase, UpgradeRequest};
use fluxgate::cluster::connect::{USER_AGENT, identified};
use fluxgate::cluster::flux::ops::api_resource;
use fluxgate::controller::{Context, apps, requests};
use fluxgate::demo::world::{DemoWorld, FLEET_URL};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kubesim::{KubeSim, RequestRecord};
use serde_json::json;
use sim::flux_source::{SourceController, SourceOptions};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The bench's own requests (creating requests, waiting for them) carry this User-Agent.
const BENCH_AGENT: &str = "fluxgate-bench";
/// The Git poll interval of the simulated source-controller in the near-instant runs.
const FAST_POLL: Duration = Duration::from_millis(100);
/// Its poll interval in `WorldOptions::fast`, the other runs.
const SLOW_POLL: Duration = Duration::from_secs(1);

struct Args {
    upgrades: usize,
    slow_upgrades: usize,
    rollbacks: usize,
    apps: usize,
    idle: Duration,
    fluxgate: Option<PathBuf>,
    out: PathBuf,
}

const USAGE: &str = "usage: bench_operator [--upgrades N] [--slow-upgrades N] [--rollbacks N] \
                     [--apps N] [--idle-secs S] [--fluxgate PATH] [--out FILE]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        upgrades: 10,
        slow_upgrades: 4,
        rollbacks: 3,
        apps: 1000,
        idle: Duration::from_secs(60),
        fluxgate: None,
        out: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/bench_operator.txt"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--upgrades" => args.upgrades = number(value()?)?,
            "--slow-upgrades" => args.slow_upgrades = number(value()?)?,
            "--rollbacks" => args.rollbacks = number(value()?)?,
            "--apps" => args.apps = number(value()?)?,
            "--idle-secs" => args.idle = Duration::from_secs(number(value()?)? as u64),
            "--fluxgate" => args.fluxgate = Some(value()?.into()),
            "--out" => args.out = value()?.into(),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.upgrades == 0 || args.apps == 0 {
        return Err("--upgrades and --apps must be at least 1".to_owned());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// The machine, figures and bars.

/// `nproc`, the CPU model and the load average, as one line.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores (nproc), {model}, loadavg {}", loadavg())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// Seconds since the epoch of a log timestamp.
fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// Reading the request log.

/// Who sent a request, from its User-Agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Fluxgate's UpgradeRequest/RollbackRequest controllers.
    Requests,
    /// Fluxgate's ManagedApp controller.
    Apps,
    /// The bench itself.
    Bench,
    /// The sims (and anything else).
    World,
}

fn requests_agent() -> String {
    format!("{USER_AGENT} requests-controller")
}

fn apps_agent() -> String {
    format!("{USER_AGENT} managedapp-controller")
}

fn who(record: &RequestRecord) -> Who {
    let agent = record.user_agent.as_str();
    if agent == BENCH_AGENT {
        Who::Bench
    } else if agent.ends_with("managedapp-controller") {
        Who::Apps
    } else if agent.starts_with("fluxgate/") {
        Who::Requests
    } else {
        Who::World
    }
}

fn is_operator(record: &RequestRecord) -> bool {
    matches!(who(record), Who::Requests | Who::Apps)
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// `verb resource[/subresource]`, the key requests are counted by.
fn key(record: &RequestRecord) -> String {
    let resource = if record.resource.is_empty() {
        record.path.clone()
    } else {
        record.resource.clone()
    };
    match &record.subresource {
        Some(sub) => format!("{} {resource}/{sub}", record.verb),
        None => format!("{} {resource}", record.verb),
    }
}

fn tally<'a>(records: impl IntoIterator<Item = &'a RequestRecord>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(key(record)).or_default() += 1;
    }
    counts
}

/// The object name a record is about: from the path, else from a create's body.
fn object_name(record: &RequestRecord) -> Option<String> {
    record.name.clone().or_else(|| {
        record.body.as_ref()?["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
    })
}

/// The phase a status write of a request object sets.
fn written_phase(record: &RequestRecord) -> Option<String> {
    record.body.as_ref()?["status"]["phase"]
        .as_str()
        .map(str::to_owned)
}

fn is_terminal_phase(phase: &str) -> bool {
    serde_json::from_value::<Phase>(json!(phase)).is_ok_and(Phase::is_terminal)
}

/// kubesim's request log, moved into the bench as it grows: polling it by copying the
/// whole log every few milliseconds would cost more than the operator does.
#[derive(Default)]
struct Log {
    records: Vec<RequestRecord>,
}

impl Log {
    /// Moves what kubesim recorded since the last pull to the end of `records`.
    fn pull(&mut self, kube: &KubeSim) {
        self.records.extend(kube.take_requests());
    }

    /// When the operator last sent a request other than a watch.
    fn last_operator_request(&self) -> Option<SystemTime> {
        self.records
            .iter()
            .rev()
            .find(|r| is_operator(r) && r.verb != "watch")
            .map(|r| r.time)
    }
}

/// A dependency becoming true, as the sims wrote it.
#[derive(Clone, Debug)]
struct DependencyEvent {
    kind: &'static str,
    time: SystemTime,
}

/// Tracks the sims' writes and reports those that make something the workflow waits on
/// true: a VolumeSnapshot `readyToUse`, a pod gone (its last finalizer removed), a new
/// GitRepository artifact, a Kustomization's new `lastAppliedRevision`, a HelmRelease
/// becoming Ready (or failing) at a new attempted revision, a StatefulSet fully ready.
#[derive(Default)]
struct Dependencies {
    seen: HashMap<(String, String), String>,
}

impl Dependencies {
    fn observe(&mut self, record: &RequestRecord) -> Option<DependencyEvent> {
        if who(record) != Who::World || !is_write(&record.verb) {
            return None;
        }
        let body = record.body.as_ref()?;
        let name = object_name(record)?;
        let status = &body["status"];
        let sub = record.subresource.as_deref();
        let (kind, state) = match (record.resource.as_str(), sub) {
            ("volumesnapshots", Some("status")) => (
                "VolumeSnapshot readyToUse",
                status["readyToUse"].to_string(),
            ),
            ("pods", None) if record.verb == "patch" => {
                let finalizers = body["metadata"]["finalizers"].as_array()?;
                let terminating = finalizers
                    .iter()
                    .any(|f| f == sim::pods::TERMINATION_FINALIZER);
                // The sim lets a terminating pod go by removing its own finalizer.
                if terminating {
                    return None;
                }
                ("pod gone", format!("gone@{}", secs(record.time)))
            }
            ("gitrepositories", Some("status")) => (
                "GitRepository new artifact",
                status["artifact"]["revision"].as_str()?.to_owned(),
            ),
            ("kustomizations", Some("status")) => (
                "Kustomization applied revision",
                status["lastAppliedRevision"].as_str()?.to_owned(),
            ),
            ("helmreleases", Some("status")) => {
                let ready = status["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")?;
                let attempted = status["lastAttemptedRevision"].as_str().unwrap_or("");
                let state = format!("{}@{attempted}", ready["status"].as_str().unwrap_or(""));
                match ready["status"].as_str() {
                    Some("True") => ("HelmRelease Ready", state),
                    Some("False") if status["lastAttemptedRevision"].is_string() => {
                        ("HelmRelease Ready=False (failed)", state)
                    }
                    _ => return None,
                }
            }
            ("statefulsets", Some("status")) => {
                let ready = status["readyReplicas"].as_i64().unwrap_or(0);
                let replicas = status["replicas"].as_i64()?;
                let all_ready = ready == replicas && replicas > 0;
                let state = format!("{all_ready}:{replicas}");
                if !all_ready {
                    self.seen.insert((record.resource.clone(), name), state);
                    return None;
                }
                ("StatefulSet all replicas ready", state)
            }
            _ => return None,
        };
        let previous = self
            .seen
            .insert((record.resource.clone(), name), state.clone());
        let changed = previous.as_deref() != Some(state.as_str());
        let became_true = match kind {
            "VolumeSnapshot readyToUse" => state == "true",
            _ => true,
        };
        (changed && became_true).then_some(DependencyEvent {
            kind,
            time: record.time,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Part A: upgrades and rollbacks on the in-process operator.

/// A client of `kube` sending `agent` as its User-Agent.
fn client_as(kube: &KubeSim, agent: &str) -> anyhow::Result<Client> {
    let mut config = identified(kube::Config::new(kube.base_url().parse()?));
    for (name, value) in &mut config.headers {
        if name == "user-agent" {
            *value = agent.parse()?;
        }
    }
    Ok(Client::try_from(config)?)
}

/// Fluxgate's controllers in-process, as `fluxgate::controller::run` starts them, but with
/// one client per controller family so the log tells their requests apart.
struct SplitOperator {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SplitOperator {
    fn start(story: &DemoWorld) -> anyhow::Result<SplitOperator> {
        let context = |agent: String| -> anyhow::Result<Arc<Context>> {
            Ok(Arc::new(Context::new(
                client_as(story.kubesim(), &agent)?,
                story.settings.clone(),
                story.metrics.clone(),
            )))
        };
        let requests = context(requests_agent())?;
        let apps = context(apps_agent())?;
        Ok(SplitOperator {
            // Each side watches through its own caches, so that its reads are its own.
            tasks: vec![
                tokio::spawn(
                    requests
                        .caches
                        .clone()
                        .run(requests.cluster.client().clone()),
                ),
                tokio::spawn(apps.caches.clone().run(apps.cluster.client().clone())),
                tokio::spawn(requests::run(requests, std::future::pending())),
                tokio::spawn(apps::run(apps, std::future::pending())),
            ],
        })
    }

    async fn stop(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Waits `i/n` of `period` before run `i`: runs back to back would keep the same phase
/// against the source's poll (a run lasts about as long as a poll period), so the wait for
/// the poll would be sampled at one point instead of evenly.
async fn stagger(i: usize, n: usize, period: Duration) {
    tokio::time::sleep(period.mul_f64(i as f64 / n.max(1) as f64)).await;
}

/// One upgrade (and the rollback it may cause) as the log saw it.
struct Run {
    name: String,
    /// The bench's create of the UpgradeRequest.
    start: SystemTime,
    /// The UpgradeRequest's terminal status write.
    upgrade_done: SystemTime,
    upgrade_phase: String,
    /// The operator's create of the RollbackRequest, and its terminal status write.
    rollback: Option<(SystemTime, SystemTime, String)>,
    /// When the operator had gone quiet after the run.
    end: SystemTime,
    /// Every request answered in [start, end].
    records: Vec<RequestRecord>,
}

impl Run {
    /// The last terminal status write of the run.
    fn done(&self) -> SystemTime {
        match &self.rollback {
            Some((_, done, _)) => (*done).max(self.upgrade_done),
            None => self.upgrade_done,
        }
    }

    fn wall(&self) -> f64 {
        secs(self.upgrade_done) - secs(self.start)
    }

    fn operator(&self) -> impl Iterator<Item = &RequestRecord> {
        self.records.iter().filter(|r| is_operator(r))
    }
}

/// Waits until the operator has sent nothing (watches aside) for `quiet`, at most `limit`.
async fn operator_quiet(
    kube: &KubeSim,
    log: &mut Log,
    quiet: Duration,
    limit: Duration,
) -> SystemTime {
    let deadline = Instant::now() + limit;
    loop {
        log.pull(kube);
        let now = SystemTime::now();
        let idle = log
            .last_operator_request()
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= quiet);
        if idle || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates an UpgradeRequest to `version`, waits for it (and its rollback, if one comes)
/// to finish and for the operator to go quiet, and returns what the log saw.
async fn upgrade_run(
    story: &DemoWorld,
    log: &mut Log,
    bench: &Client,
    name: &str,
    version: &str,
) -> anyhow::Result<Run> {
    let upgrade: UpgradeRequest = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"managedApp": "db", "version": version}
    }))?;
    log.pull(story.kubesim());
    let from = log.records.len();
    Api::<UpgradeRequest>::namespaced(bench.clone(), "apps")
        .create(&PostParams::default(), &upgrade)
        .await?;
    let rollback_name = format!("{name}-rollback");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (upgrade_done, upgrade_phase, rollback) = loop {
        log.pull(story.kubesim());
        let new = &log.records[from..];
        let terminal = |resource: &str, object: &str| {
            new.iter()
                .filter(|r| is_operator(r) && (200..300).contains(&r.code))
                .filter(|r| r.resource == resource && r.subresource.as_deref() == Some("status"))
                .filter(|r| r.name.as_deref() == Some(object))
                .find_map(|r| {
                    let phase = written_phase(r)?;
                    is_terminal_phase(&phase).then_some((r.time, phase))
                })
        };
        let rollback_created = new
            .iter()
            .find(|r| {
                is_operator(r)
                    && r.verb == "create"
                    && r.resource == "rollbackrequests"
                    && object_name(r).as_deref() == Some(rollback_name.as_str())
            })
            .map(|r| r.time);
        match (
            terminal("upgraderequests", name),
            rollback_created,
            terminal("rollbackrequests", &rollback_name),
        ) {
            (Some((done, phase)), None, _) => break (done, phase, None),
            (Some((done, phase)), Some(created), Some((rollback_done, rollback_phase))) => {
                break (done, phase, Some((created, rollback_done, rollback_phase)));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let upgrade = Api::<UpgradeRequest>::namespaced(bench.clone(), "apps")
                .get_opt(name)
                .await?;
            let rollback = Api::<fluxgate::api::RollbackRequest>::namespaced(bench.clone(), "apps")
                .get_opt(&rollback_name)
                .await?;
            anyhow::bail!(
                "{name} did not finish within 120 s; its status: {:#?}\nits rollback's status: {:#?}",
                upgrade.map(|u| u.status),
                rollback.map(|r| r.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let end = operator_quiet(
        story.kubesim(),
        log,
        Duration::from_millis(400),
        Duration::from_secs(10),
    )
    .await;
    let new = &log.records[from..];
    let start = new
        .iter()
        .find(|r| who(r) == Who::Bench && r.verb == "create" && r.resource == "upgraderequests")
        .map(|r| r.time)
        .ok_or_else(|| anyhow::anyhow!("the create of {name} is not in the log"))?;
    let records = new
        .iter()
        .filter(|r| r.time >= start && r.time <= end)
        .cloned()
        .collect();
    Ok(Run {
        name: name.to_owned(),
        start,
        upgrade_done,
        upgrade_phase,
        rollback,
        end,
        records,
    })
}

/// Step latencies: every dependency event while a run's request was unfinished, paired
/// with the request controllers' next request and with any operator request after it (ms).
fn step_latencies(log: &[RequestRecord], runs: &[&Run]) -> Vec<(&'static str, f64, f64)> {
    let mut deps = Dependencies::default();
    let timeline: Vec<&RequestRecord> = log.iter().filter(|r| r.verb != "watch").collect();
    let mut out = Vec::new();
    for (i, record) in timeline.iter().enumerate() {
        // The tracker sees every write in order, also between runs, to know what changed.
        let Some(event) = deps.observe(record) else {
            continue;
        };
        if !runs
            .iter()
            .any(|run| event.time >= run.start && event.time <= run.done())
        {
            continue;
        }
        let after = &timeline[i + 1..];
        let next = |pick: &dyn Fn(&RequestRecord) -> bool| {
            after
                .iter()
                .find(|r| pick(r))
                .map(|r| (secs(r.time) - secs(event.time)) * 1000.0)
        };
        let by_requests = next(&|r| who(r) == Who::Requests);
        let by_any = next(&is_operator);
        if let (Some(requests), Some(any)) = (by_requests, by_any) {
            out.push((event.kind, requests, any));
        }
    }
    out
}

/// Durations (ms) of the phases the UpgradeRequest went through, from the times of the
/// status writes that entered and left each phase. Admit starts and ends within the first
/// reconcile, so it is measured from the request's creation to the first status write.
fn phase_durations(run: &Run) -> Vec<(String, f64)> {
    let writes: Vec<(SystemTime, String)> = run
        .records
        .iter()
        .filter(|r| {
            who(r) == Who::Requests
                && r.resource == "upgraderequests"
                && r.subresource.as_deref() == Some("status")
                && r.name.as_deref() == Some(run.name.as_str())
                && (200..300).contains(&r.code)
        })
        .filter_map(|r| Some((r.time, written_phase(r)?)))
        .collect();
    let mut out = Vec::new();
    let mut current = Some((run.start, "Admit".to_owned()));
    for (time, phase) in writes {
        match &current {
            Some((_, p)) if *p == phase => {}
            Some((since, p)) => {
                out.push((p.clone(), (secs(time) - secs(*since)) * 1000.0));
                current = Some((time, phase));
            }
            None => {}
        }
    }
    out
}

/// The request log of a run split into time the operator was being waited on and time the
/// world was: each gap between consecutive non-watch requests (the bench's own aside) goes
/// to whoever sent the later request — the operator was computing or reacting, or a sim
/// was. Returns (operator seconds, world seconds) up to the UpgradeRequest's end.
fn attribute(run: &Run) -> (f64, f64) {
    let mut operator = 0.0;
    let mut world = 0.0;
    let mut last = secs(run.start);
    for r in run
        .records
        .iter()
        .filter(|r| r.verb != "watch" && who(r) != Who::Bench && r.time <= run.upgrade_done)
    {
        let t = secs(r.time);
        if is_operator(r) {
            operator += t - last;
        } else {
            world += t - last;
        }
        last = t;
    }
    (operator, world)
}

/// Per-key counts over runs: "median (min–max)".
fn count_table(report: &mut String, runs: &[BTreeMap<String, usize>], indent: &str) {
    let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let _ = writeln!(
            report,
            "{indent}{:<42} {}",
            k,
            spread(runs, |r| *r.get(k).unwrap_or(&0))
        );
    }
}

fn spread(
    runs: &[BTreeMap<String, usize>],
    f: impl Fn(&BTreeMap<String, usize>) -> usize,
) -> String {
    let mut v: Vec<usize> = runs.iter().map(f).collect();
    v.sort_unstable();
    let (min, max, median) = (v[0], v[v.len() - 1], v[(v.len() - 1) / 2]);
    if min == max {
        format!("{median}")
    } else {
        format!("{median} ({min}–{max})")
    }
}

fn writes_reads(counts: &BTreeMap<String, usize>) -> (usize, usize, usize) {
    let mut out = (0, 0, 0);
    for (k, n) in counts {
        let verb = k.split(' ').next().unwrap_or("");
        if is_write(verb) {
            out.0 += n;
        } else if verb == "watch" {
            out.2 += n;
        } else {
            out.1 += n;
        }
    }
    out
}

/// Writes the request figures of `runs` (counted over `records` of each) to the report.
fn request_figures(
    report: &mut String,
    title: &str,
    runs: &[&Run],
    records: impl Fn(&Run) -> Vec<&RequestRecord>,
) {
    let all: Vec<BTreeMap<String, usize>> = runs.iter().map(|r| tally(records(r))).collect();
    let by = |f: fn(&RequestRecord) -> bool| -> Vec<BTreeMap<String, usize>> {
        runs.iter()
            .map(|r| tally(records(r).into_iter().filter(|x| f(x))))
            .collect()
    };
    let requests_side = by(|r| who(r) == Who::Requests);
    let apps_side = by(|r| who(r) == Who::Apps);
    let total = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    let _ = writeln!(
        report,
        "{title} (n={}; median (min–max) per run; operator User-Agent only):",
        runs.len()
    );
    let _ = writeln!(
        report,
        "  total {} = request controllers {} + ManagedApp controller {}",
        spread(&all, total),
        spread(&requests_side, total),
        spread(&apps_side, total)
    );
    let _ = writeln!(
        report,
        "  writes {}, reads {}, watches opened {}",
        spread(&all, |m| writes_reads(m).0),
        spread(&all, |m| writes_reads(m).1),
        spread(&all, |m| writes_reads(m).2)
    );
    let status_writes = |m: &BTreeMap<String, usize>| {
        m.iter()
            .filter(|(k, _)| {
                is_write(k.split(' ').next().unwrap_or(""))
                    && (k.contains("upgraderequests/status")
                        || k.contains("rollbackrequests/status"))
            })
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    let _ = writeln!(
        report,
        "  status writes of the request objects (UpgradeRequest + RollbackRequest): {}",
        spread(&all, status_writes)
    );
    let conflicts: Vec<BTreeMap<String, usize>> = runs
        .iter()
        .map(|r| tally(records(r).into_iter().filter(|x| x.code == 409)))
        .collect();
    let _ = writeln!(
        report,
        "  answered 409 Conflict: {} ({})",
        spread(&conflicts, total),
        conflicts
            .iter()
            .flat_map(|m| m.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(report, "  request controllers, by verb and resource:");
    count_table(report, &requests_side, "    ");
    let _ = writeln!(report, "  ManagedApp controller, by verb and resource:");
    count_table(report, &apps_side, "    ");
}

/// The operator's writes of one run, in order (repeats folded): what the workflow did.
fn write_sequence(report: &mut String, run: &Run) {
    let mut lines: Vec<(String, usize)> = Vec::new();
    for r in run.operator().filter(|r| is_write(&r.verb)) {
        let name = object_name(r).unwrap_or_default();
        let who = if who(r) == Who::Apps {
            " [ManagedApp controller]"
        } else {
            ""
        };
        let code = if (200..300).contains(&r.code) {
            String::new()
        } else {
            format!(" → {}", r.code)
        };
        let line = format!("{} {name}{code}{who}", key(r));
        match lines.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => lines.push((line, 1)),
        }
    }
    let total: usize = lines.iter().map(|(_, n)| n).sum();
    let _ = writeln!(report, "  {total} writes, in order:");
    for (line, n) in lines {
        let times = if n > 1 {
            format!(" ×{n}")
        } else {
            String::new()
        };
        let _ = writeln!(report, "    {line}{times}");
    }
}

async fn part_a(args: &Args, report: &mut String) -> anyhow::Result<()> {
    let mut story = DemoWorld::start(
        "v1.0.0",
        json!({"health": {"stabilization": "1ms", "timeout": "30s"}}),
    )
    .await?;
    // Fluxgate runs again below with one User-Agent per controller family.
    story.kill_operator().await;
    let operator = SplitOperator::start(&story)?;
    let bench = client_as(story.kubesim(), BENCH_AGENT)?;
    let mut log = Log::default();
    operator_quiet(
        story.kubesim(),
        &mut log,
        Duration::from_millis(500),
        Duration::from_secs(20),
    )
    .await;

    let mut slow = Vec::new();
    for i in 0..args.slow_upgrades {
        stagger(i, args.slow_upgrades, SLOW_POLL).await;
        let run = upgrade_run(
            &story,
            &mut log,
            &bench,
            &format!("slow-{i}"),
            &format!("v1.{}.0", i + 1),
        )
        .await?;
        eprintln!(
            "  slow-{i}: {} in {:.0} ms",
            run.upgrade_phase,
            run.wall() * 1000.0
        );
        slow.push(run);
    }
    // Near-instant source: the simulated source-controller polls Git every FAST_POLL.
    story.world.source = Some(SourceController::start(
        story.client.clone(),
        SourceOptions {
            interval: Some(FAST_POLL),
            url_rewrites: vec![(FLEET_URL.into(), story.git.file_url())],
        },
    )?);
    let mut fast = Vec::new();
    for i in 0..args.upgrades {
        stagger(i, args.upgrades, FAST_POLL).await;
        let run = upgrade_run(
            &story,
            &mut log,
            &bench,
            &format!("fast-{i}"),
            &format!("v2.{}.0", i + 1),
        )
        .await?;
        eprintln!(
            "  fast-{i}: {} in {:.0} ms",
            run.upgrade_phase,
            run.wall() * 1000.0
        );
        fast.push(run);
    }
    let mut rollbacks = Vec::new();
    for i in 0..args.rollbacks {
        let version = format!("v9.{i}.0");
        story.world.failures.fail_chart_version(&version);
        story.world.failures.fail_chart_version(&version[1..]);
        let run = upgrade_run(&story, &mut log, &bench, &format!("bad-{i}"), &version).await?;
        let rollback = run
            .rollback
            .as_ref()
            .map_or("no rollback".into(), |r| r.2.clone());
        eprintln!(
            "  bad-{i}: {} / rollback {rollback} in {:.0} ms",
            run.upgrade_phase,
            (secs(run.done()) - secs(run.start)) * 1000.0
        );
        rollbacks.push(run);
    }
    operator.stop().await;

    // 1. Step latency.
    log.pull(story.kubesim());
    let all_runs: Vec<&Run> = slow.iter().chain(&fast).chain(&rollbacks).collect();
    let latencies = step_latencies(&log.records, &all_runs);
    let requests_ms = sorted(latencies.iter().map(|l| l.1).collect());
    let any_ms = sorted(latencies.iter().map(|l| l.2).collect());
    let (p50, p99) = (
        percentile(&requests_ms, 50.0),
        percentile(&requests_ms, 99.0),
    );
    let _ = writeln!(
        report,
        "\n## 1. Step latency: a dependency becoming true → the operator's next request"
    );
    let _ = writeln!(
        report,
        "# pairs from kubesim's request log over {} runs ({} upgrades, {} failed upgrades + rollbacks), events while a request ran;",
        all_runs.len(),
        slow.len() + fast.len(),
        rollbacks.len()
    );
    let _ = writeln!(
        report,
        "# the next request is the first non-watch request after the event's write was answered"
    );
    let _ = writeln!(
        report,
        "dependency → request controllers' next request: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms  [bar p50<50ms: {}; p99<250ms: {}]",
        requests_ms.len(),
        p50,
        p99,
        requests_ms.last().copied().unwrap_or(f64::NAN),
        verdict(p50 < 50.0),
        verdict(p99 < 250.0)
    );
    let _ = writeln!(
        report,
        "dependency → any operator request (ManagedApp controller included): n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        any_ms.len(),
        percentile(&any_ms, 50.0),
        percentile(&any_ms, 99.0),
        any_ms.last().copied().unwrap_or(f64::NAN)
    );
    let mut kinds: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (kind, ms, _) in &latencies {
        kinds.entry(kind).or_default().push(*ms);
    }
    let _ = writeln!(report, "by dependency event (→ request controllers):");
    for (kind, v) in kinds {
        let v = sorted(v);
        let _ = writeln!(
            report,
            "  {kind:<32} n={:<4} p50={:.1}ms max={:.1}ms",
            v.len(),
            percentile(&v, 50.0),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }

    // 2. Wall time.
    let _ = writeln!(
        report,
        "\n## 2. One upgrade's wall time (UpgradeRequest created → status Succeeded written)"
    );
    let _ = writeln!(
        report,
        "# health.stabilization 1ms (must be positive), snapshots instant, pods terminate after 100 ms; Flux's GitRepository polls (the operator"
    );
    let _ = writeln!(
        report,
        "# also asks it to fetch at once with reconcile.fluxcd.io/requestedAt, so the poll interval matters little;"
    );
    let _ = writeln!(
        report,
        "# run starts are staggered over the poll period so that wait is sampled evenly)"
    );
    for (label, runs) in [
        (
            format!("source polled every {} ms", FAST_POLL.as_millis()),
            &fast,
        ),
        (
            "source polled every 1 s (WorldOptions::fast)".to_owned(),
            &slow,
        ),
    ] {
        if runs.is_empty() {
            continue;
        }
        let ok = runs
            .iter()
            .filter(|r| r.upgrade_phase == "Succeeded")
            .count();
        let wall = sorted(runs.iter().map(|r| r.wall() * 1000.0).collect());
        let parts: Vec<(f64, f64)> = runs.iter().map(attribute).collect();
        let operator = sorted(parts.iter().map(|p| p.0 * 1000.0).collect());
        let world = sorted(parts.iter().map(|p| p.1 * 1000.0).collect());
        let _ = writeln!(
            report,
            "{label}: n={} succeeded={ok} wall p50={:.0}ms max={:.0}ms | operator-attributed p50={:.0}ms max={:.0}ms [bar <1000ms: {}] | world-attributed p50={:.0}ms",
            runs.len(),
            percentile(&wall, 50.0),
            wall.last().copied().unwrap_or(f64::NAN),
            percentile(&operator, 50.0),
            operator.last().copied().unwrap_or(f64::NAN),
            verdict(operator.last().is_some_and(|m| *m < 1000.0)),
            percentile(&world, 50.0),
        );
        let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order = Vec::new();
        for run in runs.iter() {
            for (phase, ms) in phase_durations(run) {
                if !order.contains(&phase) {
                    order.push(phase.clone());
                }
                phases.entry(phase).or_default().push(ms);
            }
        }
        let line: Vec<String> = order
            .iter()
            .map(|p| format!("{p} {:.0}", percentile(&sorted(phases[p].clone()), 50.0)))
            .collect();
        let _ = writeln!(
            report,
            "  phase p50 (ms, between status writes): {}",
            line.join(", ")
        );
    }
    let _ = writeln!(
        report,
        "# operator-attributed: the gaps between consecutive requests in the log that end in an operator request (the operator was"
    );
    let _ = writeln!(
        report,
        "# reacting or computing); the rest ends in a sim's request (the world was working or polling). An upper bound: reactions"
    );
    let _ = writeln!(
        report,
        "# to events that do not advance the request count as operator time."
    );

    // 3. Requests.
    let _ = writeln!(report, "\n## 3. API requests per upgrade and per rollback");
    let upgrades: Vec<&Run> = slow.iter().chain(&fast).collect();
    request_figures(report, "per successful upgrade", &upgrades, |r| {
        r.operator().collect()
    });
    let with_rollback: Vec<&Run> = rollbacks.iter().filter(|r| r.rollback.is_some()).collect();
    if !with_rollback.is_empty() {
        request_figures(
            report,
            "per rollback (from the RollbackRequest's creation to quiet)",
            &with_rollback,
            |r| {
                let from = r.rollback.as_ref().map_or(r.end, |x| x.0);
                r.operator().filter(|x| x.time >= from).collect()
            },
        );
        request_figures(
            report,
            "per failed upgrade + its rollback (whole run)",
            &with_rollback,
            |r| r.operator().collect(),
        );
    }
    if let Some(run) = fast.last() {
        let _ = writeln!(report, "one upgrade ({}):", run.name);
        write_sequence(report, run);
    }
    if let Some(run) = with_rollback.last() {
        let _ = writeln!(
            report,
            "one failed upgrade and its rollback ({}):",
            run.name
        );
        write_sequence(report, run);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part B: idle ManagedApps watched by a real `fluxgate run` process.

/// The `fluxgate` binary: `--fluxgate`, else beside this bench's executable.
fn fluxgate_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.fluxgate {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("fluxgate"))
            .ok_or_else(|| anyhow::anyhow!("no directory for the bench's executable"))?,
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first with `cargo build --release --bin fluxgate` (same CARGO_TARGET_DIR) or pass --fluxgate PATH",
        path.display()
    );
    Ok(path)
}

/// (VmRSS, VmHWM: resident now and at its peak) of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Apps whose status the ManagedApp controller has written (Ready known).
async fn apps_reconciled(bench: &Client) -> anyhow::Result<usize> {
    let apps = Api::<ManagedApp>::all(bench.clone())
        .list(&ListParams::default())
        .await?;
    Ok(apps
        .items
        .iter()
        .filter(|a| {
            a.status.as_ref().is_some_and(|s| {
                fluxgate::api::conditions::find_condition(&s.conditions, "Ready").is_some()
            })
        })
        .count())
}

async fn part_b(args: &Args, binary: &std::path::Path, report: &mut String) -> anyhow::Result<()> {
    let mut story = DemoWorld::start("v1.0.0", json!({})).await?;
    story.kill_operator().await;
    let bench = client_as(story.kubesim(), BENCH_AGENT)?;
    let db = Api::<ManagedApp>::namespaced(bench.clone(), "apps")
        .get("db")
        .await?;
    let spec = serde_json::to_value(&db.spec)?;
    for i in 1..args.apps {
        story
            .kubesim()
            .put(json!({
                "apiVersion": "fluxgate.dev/v1alpha1", "kind": "ManagedApp",
                "metadata": {"name": format!("app-{i:04}"), "namespace": "apps"},
                "spec": spec,
            }))
            .map_err(|e| anyhow::anyhow!("creating ManagedApp {i}: {e}"))?;
    }
    let scratch = tempfile::tempdir()?;
    let log_path = scratch.path().join("fluxgate.log");
    let log = std::fs::File::create(&log_path)?;
    let spawned = SystemTime::now();
    let mut child = std::process::Command::new(binary)
        .args(["run", "--kubeconfig"])
        .arg(story.kubeconfig_path())
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--git-cache-dir",
        ])
        .arg(scratch.path().join("git"))
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let pid = child.id();
    let mut log = Log::default();
    let outcome = async {
        // Startup: every app reconciled once, then nothing from the operator for 3 s.
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut reconciled_at = None;
        loop {
            anyhow::ensure!(
                child.try_wait()?.is_none(),
                "fluxgate run exited early; its log is {}:\n{}",
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            if reconciled_at.is_none() && apps_reconciled(&bench).await? == args.apps {
                reconciled_at = Some(SystemTime::now());
            }
            log.pull(story.kubesim());
            let quiet = log.last_operator_request().is_some_and(|t| {
                SystemTime::now().duration_since(t).unwrap_or_default() >= Duration::from_secs(3)
            });
            if reconciled_at.is_some() && quiet {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the operator did not settle within 180 s ({} of {} apps reconciled)",
                apps_reconciled(&bench).await?,
                args.apps
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let settled_memory = memory_kib(pid);
        let idle_start = SystemTime::now();
        tokio::time::sleep(args.idle).await;
        let idle_end = SystemTime::now();
        let end_memory = memory_kib(pid);
        // One change to a Flux object none of the apps depends on more than any other.
        let touched = SystemTime::now();
        let kustomizations = Api::<DynamicObject>::namespaced_with(
            bench.clone(),
            "flux-system",
            &api_resource(FluxObjectKind::Kustomization),
        );
        let touch = json!({"metadata": {"annotations": {"bench.fluxgate.dev/touched": "1"}}});
        kustomizations
            .patch("flux-system", &PatchParams::default(), &Patch::Merge(touch))
            .await?;
        let calm = Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            log.pull(story.kubesim());
            let quiet = log.last_operator_request().is_none_or(|t| {
                SystemTime::now().duration_since(t).unwrap_or_default() >= Duration::from_secs(3)
            });
            if quiet || Instant::now() >= calm {
                break;
            }
        }
        let final_memory = memory_kib(pid);
        anyhow::Ok((
            reconciled_at,
            settled_memory,
            idle_start,
            idle_end,
            end_memory,
            touched,
            final_memory,
        ))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (reconciled_at, settled_memory, idle_start, idle_end, end_memory, touched, final_memory) =
        outcome?;

    log.pull(story.kubesim());
    let log = log.records;
    let startup: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| is_operator(r) && r.time >= spawned && r.time < idle_start)
        .collect();
    let first = startup.first().map(|r| r.time).unwrap_or(spawned);
    let last_startup = startup
        .iter()
        .rev()
        .find(|r| r.verb != "watch")
        .map_or(first, |r| r.time);
    let in_idle = |r: &&RequestRecord| r.time >= idle_start && r.time <= idle_end;
    let idle: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| is_operator(r))
        .filter(in_idle)
        .collect();
    let world_idle = log
        .iter()
        .filter(|r| who(r) == Who::World)
        .filter(in_idle)
        .count();
    let minutes = secs(idle_end) - secs(idle_start);
    let per_min = idle.len() as f64 * 60.0 / minutes;
    let (rss_end, hwm_end) = end_memory.unwrap_or((0, 0));
    let rss_settled = settled_memory.map_or(0, |m| m.0);
    // VmHWM is the kernel's own high-water mark of the resident set.
    let peak = hwm_end;
    let peak_after_fan_out = final_memory.map_or(0, |m| m.1);

    let _ = writeln!(
        report,
        "\n## 4. {} idle ManagedApps, real `fluxgate run` process",
        args.apps
    );
    let _ = writeln!(
        report,
        "# {} ManagedApps in namespace apps, each with spec.git.url/branch set (no Flux lookups), all deploying the one HelmRelease db",
        args.apps
    );
    let _ = writeln!(
        report,
        "# (StatefulSet, 2 PVCs) of one Git repository; the sims keep running but nothing changes; the binary runs with RUST_LOG=warn"
    );
    let _ = writeln!(
        report,
        "startup: first request {:.2}s after spawn, all apps reconciled {:.1}s after spawn, last startup request {:.1}s after spawn",
        secs(first) - secs(spawned),
        reconciled_at.map_or(f64::NAN, |t| secs(t) - secs(spawned)),
        secs(last_startup) - secs(spawned)
    );
    let counts = tally(startup.iter().copied());
    let (w, r, watches) = writes_reads(&counts);
    let _ = writeln!(
        report,
        "startup requests: {} ({:.2} per app; writes {w}, reads {r}, watches opened {watches}):",
        startup.len(),
        startup.len() as f64 / args.apps as f64
    );
    for (k, n) in &counts {
        let _ = writeln!(report, "  {k:<42} {n}");
    }
    let _ = writeln!(
        report,
        "idle {:.0}s: {} operator requests = {per_min:.1}/min [bar near zero: {}]; the sims sent {world_idle} in the same window",
        minutes,
        idle.len(),
        verdict(per_min <= 1.0)
    );
    for (k, n) in tally(idle.iter().copied()) {
        let _ = writeln!(report, "  {k:<42} {n}");
    }
    let _ = writeln!(
        report,
        "resident memory: peak (VmHWM) through startup and the idle window {:.1} MiB, when settled {:.1} MiB, after the idle window {:.1} MiB [bar <64 MiB: {}]",
        mib(peak),
        mib(rss_settled),
        mib(rss_end),
        verdict(peak > 0 && mib(peak) < 64.0)
    );

    let woken: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| is_operator(r) && r.time >= touched)
        .collect();
    let span = woken
        .iter()
        .rev()
        .find(|r| r.verb != "watch")
        .map_or(0.0, |r| secs(r.time) - secs(touched));
    let world_woken = log
        .iter()
        .filter(|r| who(r) == Who::World && r.time >= touched)
        .count();
    let _ = writeln!(
        report,
        "then one change to a Flux object (an annotation on Kustomization flux-system, the root of the fleet): {} operator requests ({:.1} per app) over {span:.1}s; the sims sent {world_woken}; peak RSS afterwards {:.1} MiB:",
        woken.len(),
        woken.len() as f64 / args.apps as f64,
        mib(peak_after_fan_out)
    );
    for (k, n) in tally(woken.iter().copied()) {
        let _ = writeln!(report, "  {k:<42} {n}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

/// The git benchmark's figures, quoted from its results file.
fn git_figures(report: &mut String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/bench_git.txt");
    let _ = writeln!(
        report,
        "\n## 5. Git commit+push vs the git CLI (from e2e/results/bench_git.txt, not rerun here)"
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for line in text.lines().filter(|l| l.starts_with("transport=")) {
                let _ = writeln!(report, "{line}");
            }
            let _ = writeln!(
                report,
                "[bar fluxgate no slower than the git CLI: ratio ≤ 1 on both transports, see that file]"
            );
        }
        Err(e) => {
            let _ = writeln!(report, "(cannot read {}: {e})", path.display());
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let binary = match fluxgate_binary(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench_operator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# bench_operator: Fluxgate's operator on kubesim + the simulated world (test/sim), figures from kubesim's request log"
    );
    let _ = writeln!(report, "# machine at start: {}", machine());
    let _ = writeln!(
        report,
        "# command: cargo build --release --bin fluxgate && cargo run --release -p e2e --bin bench_operator"
    );
    let _ = writeln!(
        report,
        "# measured {} (UTC); operator, kubesim and sims share this machine (and, in parts 1-3, one process)",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%MZ")
    );
    eprintln!("bench_operator: upgrades and rollbacks (in-process operator)");
    if let Err(e) = part_a(&args, &mut report).await {
        eprintln!("bench_operator: {e:#}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "bench_operator: {} idle ManagedApps ({})",
        args.apps,
        binary.display()
    );
    if let Err(e) = part_b(&args, &binary, &mut report).await {
        eprintln!("bench_operator: {e:#}");
        return ExitCode::FAILURE;
    }
    git_figures(&mut report);
    let _ = writeln!(
        report,
        "\n# whole run {:.0}s; loadavg at end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    print!("{report}");
    if let Err(e) = std::fs::write(&args.out, &report) {
        eprintln!("cannot write {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
