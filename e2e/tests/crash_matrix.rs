//! Issue #7 (h), the crash matrix: a clean upgrade (and a clean automatic rollback) is run
//! once and every write the operator makes is enumerated from kubesim's log (User-Agent
//! `fluxgate/`, verbs create/update/patch/delete). Then, for each k, a fresh world runs the
//! same story with a gate on the operator's writes that lets k through and holds the next;
//! the operator is killed right there (the held write never happens), started again, and
//! the end state must be the clean run's: no duplicate snapshot, commit, rollback or
//! restore. The covered points are printed, with the write each crash followed.
//!
//! The rollback story is the upgrade story until its commit, so its matrix starts at the
//! write that enters Commit (`FLUXGATE_CRASH_FULL=1`: from the first write). A run that
//! needs fewer writes than the clean one is restarted after its last write instead.
//! `FLUXGATE_CRASH_PARALLEL` (default 4) worlds run at once; `FLUXGATE_CRASH_POINTS=a-b`
//! limits the points (for debugging one).

use e2e::checks::{content_tokens, describe, operator_writes, rollback_problems, upgrade_problems};
use e2e::given::app;
use fluxgate::api::UpgradeRequest;
use fluxgate::demo::world::DemoWorld;
use futures::StreamExt;
use kubesim::RequestRecord;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Story {
    /// v1.4.0 → v1.5.0, succeeds.
    Upgrade,
    /// v1.4.0 → v2.0.0, whose pods never become ready: rolled back automatically.
    Rollback,
}

const NAME: &str = "db-up";

impl Story {
    fn version(self) -> &'static str {
        match self {
            Story::Upgrade => "v1.5.0",
            Story::Rollback => "v2.0.0",
        }
    }

    async fn world(self) -> DemoWorld {
        let settings = match self {
            Story::Upgrade => app(),
            // Verify's timeout is the rollback's too: 20 s leaves room for a restart; the bad
            // version fails through helm-controller giving up, well before it.
            Story::Rollback => app().health_timeout("20s"),
        };
        let story = settings.running_at("v1.4.0").await;
        if self == Story::Rollback {
            story.world.failures.fail_chart_version("v2.0.0");
        }
        story
    }

    async fn problems(
        self,
        story: &DemoWorld,
        before: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Vec<String> {
        let upgrade = match story
            .finished::<UpgradeRequest>(NAME, Duration::from_secs(120))
            .await
        {
            Ok(upgrade) => upgrade,
            Err(e) => return vec![format!("{e:#}")],
        };
        match self {
            Story::Upgrade => upgrade_problems(story, &upgrade, self.version()).await,
            Story::Rollback => rollback_problems(story, &upgrade, "v1.4.0", before).await,
        }
    }
}

/// The clean run: its operator writes, in order, and how long it took.
async fn clean_run(story_kind: Story) -> (Vec<RequestRecord>, Duration) {
    let story = story_kind.world().await;
    let before = content_tokens(&story).await;
    story.kubesim().clear_requests();
    let started = Instant::now();
    story.upgrade(NAME, story_kind.version()).await.unwrap();
    let problems = story_kind.problems(&story, &before).await;
    let took = started.elapsed();
    assert!(
        problems.is_empty(),
        "the clean {story_kind:?} run: {problems:#?}"
    );
    // Deliberate settling: the last writes (finalizer, Events) land after the request is
    // finished, and no state says when the last one has; the matrix is this list.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = story.kubesim().requests(&operator_writes());
    story.stop().await;
    (writes, took)
}

/// What one crash point found.
struct Point {
    k: usize,
    /// The k-th write (the last one that happened) and the held one that never did.
    after: String,
    held: String,
    /// The run finished with k writes or fewer: the crash came after its last write.
    past_the_end: bool,
    problems: Vec<String>,
}

/// Runs the story with the operator killed right after its k-th write.
async fn crash_after(story_kind: Story, k: usize) -> Point {
    let mut story = story_kind.world().await;
    let before = content_tokens(&story).await;
    story.kubesim().clear_requests();
    let gate = story.kubesim().gate(operator_writes());
    gate.release(k);
    story.upgrade(NAME, story_kind.version()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reached = false;
    let mut finished_at: Option<Instant> = None;
    while Instant::now() < deadline {
        // Requests count as held for a moment even when a permit lets them through: the
        // crash point is reached once k passed and another waits.
        if gate.wait_held(1, Duration::from_millis(200)).await && gate.passed() >= k {
            // Kill timing: a permit's request shows as held for a moment, so look again
            // a few milliseconds later before calling this the crash point.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if gate.held() >= 1 && gate.passed() == k {
                reached = true;
                break;
            }
        } else if gate.held() > 0 {
            // Kill timing: a held request is passing a permit; let it through at once.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let done = story
            .finished::<UpgradeRequest>(NAME, Duration::ZERO)
            .await
            .is_ok();
        match (done, finished_at) {
            (false, _) => finished_at = None,
            (true, None) => finished_at = Some(Instant::now()),
            // Finished and quiet for a second: this run made fewer writes than the clean
            // one, so the point is "after its last write".
            (true, Some(at)) if at.elapsed() > Duration::from_secs(1) => break,
            (true, Some(_)) => {}
        }
    }
    let mut point = Point {
        k,
        after: String::new(),
        held: String::new(),
        past_the_end: !reached,
        problems: Vec::new(),
    };
    if !reached && Instant::now() >= deadline {
        point.problems.push(format!(
            "stuck: {} writes passed, none held, the upgrade not finished",
            gate.passed()
        ));
    }
    story.kill_operator().await;
    // The held write never happens: answer it as if the client had died before sending it.
    gate.fail(gate.held(), 503);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while gate.held() > 0 {
            // Polled faster than wait_until: the points run by the hundred.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    gate.open();
    // Deliberate settling: the failed held write reaches the request log just after.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writes = story.kubesim().requests(&operator_writes());
    let last = if reached {
        k.checked_sub(1)
    } else {
        writes.len().checked_sub(1)
    };
    point.after = last
        .and_then(|i| writes.get(i))
        .map(describe)
        .unwrap_or_else(|| "(none)".into());
    point.held = writes
        .get(k)
        .map(describe)
        .unwrap_or_else(|| "(none)".into());
    story.start_operator().unwrap();
    point
        .problems
        .extend(story_kind.problems(&story, &before).await);
    story.stop().await;
    point
}

/// The longest one crash point may take (a clean one takes a few seconds).
const POINT_TIMEOUT: Duration = Duration::from_secs(300);

fn points_to_run(first: usize, total: usize) -> Vec<usize> {
    let all: Vec<usize> = (first..=total).collect();
    let Ok(range) = std::env::var("FLUXGATE_CRASH_POINTS") else {
        return all;
    };
    let (a, b) = range.split_once('-').unwrap_or((&range, &range));
    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
    all.into_iter().filter(|k| (a..=b).contains(k)).collect()
}

async fn matrix(story_kind: Story) {
    let (writes, took) = clean_run(story_kind).await;
    println!(
        "{story_kind:?}: the clean run made {} operator writes in {:.1}s:",
        writes.len(),
        took.as_secs_f64()
    );
    for (i, w) in writes.iter().enumerate() {
        println!("  {:>3} {}", i + 1, describe(w));
    }
    // The rollback story is the upgrade story until its commit: by default its matrix starts
    // at the write that enters Commit (the points before are the upgrade matrix's).
    let full = std::env::var_os("FLUXGATE_CRASH_FULL").is_some();
    let first = match story_kind {
        Story::Rollback if !full => writes
            .iter()
            .position(|w| {
                w.subresource.as_deref() == Some("status")
                    && w.body.as_ref().and_then(|b| b.pointer("/status/phase"))
                        == Some(&json!("Commit"))
            })
            .map_or(1, |i| i + 1),
        _ => 1,
    };
    if first > 1 {
        println!(
            "{story_kind:?}: points 1..{} are the upgrade's own (Admit to Commit, the upgrade matrix covers them; FLUXGATE_CRASH_FULL=1 runs them here too)",
            first - 1
        );
    }
    let parallel: usize = std::env::var("FLUXGATE_CRASH_PARALLEL")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4);
    let started = Instant::now();
    let points: Vec<Point> = futures::stream::iter(points_to_run(first, writes.len()))
        .map(|k| async move {
            // A point that hangs is a failure with its number, never a hung suite.
            tokio::time::timeout(POINT_TIMEOUT, crash_after(story_kind, k))
                .await
                .unwrap_or_else(|_| Point {
                    k,
                    after: String::new(),
                    held: String::new(),
                    past_the_end: false,
                    problems: vec![format!(
                        "hung: the point did not finish within {}s",
                        POINT_TIMEOUT.as_secs()
                    )],
                })
        })
        .buffer_unordered(parallel)
        .inspect(|p| {
            let verdict = if p.problems.is_empty() { "ok" } else { "FAILED" };
            if p.past_the_end {
                println!(
                    "{story_kind:?} crash after write {:>3}: past the end of that run, restarted after its last write [{}]: {verdict}",
                    p.k, p.after
                );
            } else {
                println!(
                    "{story_kind:?} crash after write {:>3} [{}], held [{}]: {verdict}",
                    p.k, p.after, p.held
                );
            }
        })
        .collect()
        .await;
    let failed: Vec<&Point> = points.iter().filter(|p| !p.problems.is_empty()).collect();
    let past = points.iter().filter(|p| p.past_the_end).count();
    println!(
        "{story_kind:?}: {} crash points covered in {:.0}s ({} mid-run, {past} after the run's last write), {} failed",
        points.len(),
        started.elapsed().as_secs_f64(),
        points.len() - past,
        failed.len()
    );
    for p in &failed {
        println!("  after write {} [{}]: {:#?}", p.k, p.after, p.problems);
    }
    assert!(failed.is_empty(), "{} crash points failed", failed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_survives_a_crash_after_every_write() {
    matrix(Story::Upgrade).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_survives_a_crash_after_every_write() {
    matrix(Story::Rollback).await;
}
