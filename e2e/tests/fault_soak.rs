//! Issue #7 (i), the fault soak: 20 seeded runs in which kubesim answers the operator's
//! requests (User-Agent `fluxgate/`) with 409, 429 or 500 at p≈0.1, answers its watches
//! with 410 Gone at p≈0.1, and every watch in the world is dropped at seeded random moments.
//! Even seeds upgrade to a good version (must succeed), odd seeds to a version whose pods
//! never become ready (must be rolled back automatically). Every run must end right, with
//! no duplicate snapshot, commit, rollback or restore; the seeds and any failing seed are
//! printed (`FLUXGATE_SOAK_SEEDS=7` or `=1-20` replays them, `FLUXGATE_SOAK_PARALLEL`
//! worlds run at once, default 4).

use e2e::checks::{content_tokens, operator, rollback_problems, upgrade_problems};
use e2e::given::app;
use fluxgate::api::UpgradeRequest;
use futures::StreamExt;
use kubesim::{Fault, FaultAction};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NAME: &str = "db-soak";
/// The chance that one operator request (or watch) is answered with a fault.
const P: f64 = 0.1;

/// A tiny seeded generator for the moments watches are dropped (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Run {
    seed: u64,
    took: Duration,
    faults: String,
    problems: Vec<String>,
}

async fn soak(seed: u64) -> Run {
    let rollback = seed % 2 == 1;
    // Verify's timeout is also the rollback's: 20 s leaves room for retries (5 s apart) under
    // faults; the bad version fails through helm-controller giving up, well before it.
    let settings = if rollback {
        app().health_timeout("20s")
    } else {
        app()
    };
    let story = Arc::new(settings.running_at("v1.4.0").await);
    if rollback {
        story.world.failures.fail_chart_version("v2.0.0");
    }
    let before = content_tokens(&story).await;
    story.kubesim().clear_requests();
    // The three error codes share p; each fault draws from its own seeded stream.
    for (i, code) in [409u16, 429, 500].into_iter().enumerate() {
        let stream = seed.wrapping_mul(31).wrapping_add(i as u64);
        story.kubesim().inject(
            Fault::respond(operator(), code)
                .always()
                .with_probability(P / 3.0, stream),
        );
    }
    story.kubesim().inject(
        Fault::new(operator().verb("watch"), FaultAction::WatchGone)
            .always()
            .with_probability(P, seed.wrapping_mul(31).wrapping_add(7)),
    );
    let running = Arc::new(AtomicBool::new(true));
    let drops = Arc::new(AtomicUsize::new(0));
    let dropper = tokio::spawn({
        let (story, running, drops) = (story.clone(), running.clone(), drops.clone());
        async move {
            let mut rng = Rng::new(seed);
            while running.load(Ordering::SeqCst) {
                // Deliberate pacing: the seeded random gaps between watch drops are the soak.
                tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
                story.kubesim().drop_watches();
                drops.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let started = Instant::now();
    let version = if rollback { "v2.0.0" } else { "v1.5.0" };
    let mut problems = Vec::new();
    let mut created = story.upgrade(NAME, version).await;
    // The story's own client is not faulted, but be sure the request exists.
    if created.is_err() {
        created = story.upgrade(NAME, version).await;
    }
    if let Err(e) = created {
        problems.push(format!("creating the upgrade: {e:#}"));
    }
    let upgrade = story
        .finished::<UpgradeRequest>(NAME, Duration::from_secs(240))
        .await;
    let took = started.elapsed();
    running.store(false, Ordering::SeqCst);
    let _ = dropper.await;
    story.kubesim().clear_faults();
    let count = |code: u16| {
        story
            .kubesim()
            .requests(&operator())
            .iter()
            .filter(|r| r.code == code)
            .count()
    };
    let faults = format!(
        "409×{} 429×{} 500×{} watch drops×{}",
        count(409),
        count(429),
        count(500),
        drops.load(Ordering::SeqCst)
    );
    match upgrade {
        Err(e) => problems.push(format!("{e:#}")),
        Ok(upgrade) if rollback => {
            problems.extend(rollback_problems(&story, &upgrade, "v1.4.0", &before).await)
        }
        Ok(upgrade) => problems.extend(upgrade_problems(&story, &upgrade, version).await),
    }
    if let Ok(story) = Arc::try_unwrap(story) {
        story.stop().await;
    }
    Run {
        seed,
        took,
        faults,
        problems,
    }
}

fn seeds() -> Vec<u64> {
    let spec = std::env::var("FLUXGATE_SOAK_SEEDS").unwrap_or_else(|_| "1-20".into());
    let (a, b) = spec.split_once('-').unwrap_or((&spec, &spec));
    (a.parse().unwrap()..=b.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_seeded_runs_under_random_api_faults_end_right() {
    let parallel: usize = std::env::var("FLUXGATE_SOAK_PARALLEL")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4);
    let started = Instant::now();
    let runs: Vec<Run> = futures::stream::iter(seeds())
        .map(soak)
        .buffer_unordered(parallel)
        .inspect(|r| {
            let kind = if r.seed % 2 == 1 {
                "rollback"
            } else {
                "upgrade"
            };
            let verdict = if r.problems.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            println!(
                "seed {:>2} ({kind}): {verdict} in {:.1}s — {}",
                r.seed,
                r.took.as_secs_f64(),
                r.faults
            );
        })
        .collect()
        .await;
    let failed: Vec<&Run> = runs.iter().filter(|r| !r.problems.is_empty()).collect();
    println!(
        "fault soak: {} runs in {:.0}s, {} failed",
        runs.len(),
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    for r in &failed {
        println!(
            "FAILING SEED {} (replay: FLUXGATE_SOAK_SEEDS={}): {:#?}",
            r.seed, r.seed, r.problems
        );
    }
    let seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
    assert!(failed.is_empty(), "failing seeds: {seeds:?}");
}
