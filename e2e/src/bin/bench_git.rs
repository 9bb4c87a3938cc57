//! Benchmark: commit + push of one single-line edit through `fluxgate::git` versus the `git`
//! CLI doing the same steps (fetch, fast-forward, edit, commit, push) in a warm clone, on a
//! generated repository of 10,000 files and 2,000 commits.
//!
//! ```text
//! cargo run --release -p e2e --bin bench_git -- [--iterations N] [--transport file|http|both] [--out FILE]
//! ```
//! Prints the median time of each side and the ratio (fluxgate / git CLI); `--out` also
//! writes the figures to FILE.

use fluxgate::git::{
    Author, CommitOutcome, CommitRequest, EditResult, FileEdit, Git2Repo, GitAuth, GitConfig,
    RemoteSpec, request_trailers,
};
use sim::git_server::GitServer;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const FILES: usize = 10_000;
const COMMITS: usize = 2_000;
const TARGET: &str = "apps/app-042/release.yaml";

struct Args {
    iterations: usize,
    transports: Vec<&'static str>,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        iterations: 9,
        transports: vec!["file", "http"],
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--iterations" => {
                args.iterations = value()?
                    .parse()
                    .map_err(|_| "--iterations takes a number".to_owned())?;
            }
            "--transport" => {
                args.transports = match value()?.as_str() {
                    "file" => vec!["file"],
                    "http" => vec!["http"],
                    "both" => vec!["file", "http"],
                    other => return Err(format!("unknown transport {other:?}")),
                };
            }
            "--out" => args.out = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: bench_git [--iterations N] [--transport file|http|both] [--out FILE]"
                        .to_owned(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.iterations == 0 {
        return Err("--iterations must be at least 1".to_owned());
    }
    Ok(args)
}

/// A fast-import stream: one commit adding `FILES` files in 100 directories, then
/// `COMMITS - 1` commits each changing one file, so history and tree are both realistic.
fn generate() -> Vec<u8> {
    let mut s = Vec::with_capacity(4 << 20);
    let blob = |s: &mut Vec<u8>, path: &str, body: &str| {
        let _ = writeln!(s, "M 100644 inline {path}");
        let _ = writeln!(s, "data {}", body.len());
        s.extend_from_slice(body.as_bytes());
        s.push(b'\n');
    };
    let header = |s: &mut Vec<u8>, n: usize| {
        let msg = format!("Commit {n}");
        let _ = writeln!(s, "commit refs/heads/main");
        let _ = writeln!(
            s,
            "committer Gen <gen@bench.invalid> {} +0000",
            1_600_000_000 + n * 60
        );
        let _ = writeln!(s, "data {}\n{msg}", msg.len());
    };
    header(&mut s, 0);
    for i in 0..FILES - 1 {
        let body = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: value-{i}\n"
        );
        blob(
            &mut s,
            &format!("apps/app-{:03}/cm-{i}.yaml", i % 100),
            &body,
        );
    }
    blob(
        &mut s,
        TARGET,
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nspec:\n  chart:\n    spec:\n      version: 1.0.0\n",
    );
    s.push(b'\n');
    for n in 1..COMMITS {
        header(&mut s, n);
        let i = (n * 7919) % (FILES - 1);
        let body = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: value-{i}-rev-{n}\n"
        );
        blob(
            &mut s,
            &format!("apps/app-{:03}/cm-{i}.yaml", i % 100),
            &body,
        );
        s.push(b'\n');
    }
    s
}

/// The single-line edit both sides make.
fn set_version(text: &str, version: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("version: ") {
                format!("      version: {version}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "CLI")
        .env("GIT_AUTHOR_EMAIL", "cli@bench.invalid")
        .env("GIT_COMMITTER_NAME", "CLI")
        .env("GIT_COMMITTER_EMAIL", "cli@bench.invalid")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The CLI's version of one upgrade commit in a warm clone.
fn cli_iteration(work: &Path, version: &str, uid: &str) -> Result<(), String> {
    git(work, &["fetch", "--quiet", "origin", "main"])?;
    git(work, &["merge", "--quiet", "--ff-only", "FETCH_HEAD"])?;
    let path = work.join(TARGET);
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    std::fs::write(&path, set_version(&text, version)).map_err(|e| e.to_string())?;
    let message = format!("Upgrade to {version}\n\nFluxgate-Request-UID: {uid}\n");
    git(work, &["commit", "--quiet", "-a", "-m", &message])?;
    git(work, &["push", "--quiet", "origin", "HEAD:main"])
}

fn ours_iteration(repo: &Git2Repo, version: &str, uid: &str) -> Result<(), String> {
    let target = version.to_owned();
    let request = CommitRequest {
        message: format!("Upgrade to {version}"),
        author: Author::new("Fluxgate", "fluxgate@bench.invalid"),
        trailers: request_trailers("bench", "up", uid),
        edits: vec![FileEdit::new(TARGET, move |current| {
            let text = std::str::from_utf8(current.ok_or("target file missing")?)?;
            Ok(EditResult::Replace(set_version(text, &target).into_bytes()))
        })],
        idempotency: None,
        signing: None,
    };
    match repo.commit_and_push_blocking(request) {
        Ok(CommitOutcome::Pushed { .. }) => Ok(()),
        Ok(other) => Err(format!("unexpected outcome {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(transport: &str, iterations: usize, report: &mut String) -> Result<(), String> {
    let started = Instant::now();
    let server = {
        let b = GitServer::builder().branch("main").fast_import(generate());
        if transport == "http" { b.http() } else { b }
            .start()
            .map_err(|e| format!("fixture: {e}"))?
    };
    let url = match transport {
        "http" => server.http_url().ok_or("no http url")?,
        _ => server.file_url(),
    };
    let generated = started.elapsed();
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;

    let repo = Git2Repo::open(
        GitConfig::new(scratch.path().join("cache")),
        RemoteSpec {
            url: url.clone(),
            branch: "main".into(),
            auth: GitAuth::Anonymous,
        },
    )
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    repo.head_blocking().map_err(|e| e.to_string())?;
    let our_clone = t.elapsed();

    let work = scratch.path().join("cli");
    let t = Instant::now();
    git(
        scratch.path(),
        &[
            "clone",
            "--quiet",
            "--no-local",
            "--branch",
            "main",
            &url,
            &work.to_string_lossy(),
        ],
    )?;
    let cli_clone = t.elapsed();

    // Interleaved, so each side fetches the other's latest commit every time.
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        let t = Instant::now();
        ours_iteration(&repo, &format!("2.0.{i}"), &format!("ours-{i}"))?;
        ours.push(t.elapsed());
        let t = Instant::now();
        cli_iteration(&work, &format!("3.0.{i}"), &format!("cli-{i}"))?;
        cli.push(t.elapsed());
    }
    let (ours, cli) = (median(ours), median(cli));
    let line = format!(
        "transport={transport} files={FILES} commits={COMMITS} iterations={iterations} \
         generate={:.0}ms cold_clone: fluxgate={:.0}ms git={:.0}ms | commit+push median: \
         fluxgate={:.1}ms git-cli={:.1}ms ratio(fluxgate/git)={:.2}\n",
        ms(generated),
        ms(our_clone),
        ms(cli_clone),
        ms(ours),
        ms(cli),
        ours.as_secs_f64() / cli.as_secs_f64()
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut report = String::new();
    for transport in &args.transports {
        if let Err(e) = run(transport, args.iterations, &mut report) {
            eprintln!("bench_git ({transport}): {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(out) = args.out
        && let Err(e) = std::fs::write(&out, report)
    {
        eprintln!("cannot write {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
