//! A real git server for tests and `fluxgate demo`: one bare repository served over
//! `file://` and over git's smart HTTP (`git http-backend` behind a loopback HTTP server
//! with basic auth), plus helpers to inspect it and to play "another committer".
//!
//! ```no_run
//! use sim::git_server::GitServer;
//!
//! let server = GitServer::builder()
//!     .branch("main")
//!     .file("apps/gitea/release.yaml", "version: 1.0.0\n")
//!     .http_credentials("flux", "s3cret")
//!     .start()?;
//! let url = server.http_url().expect("built with http");
//! // ... point the code under test at `url` with username `flux`, password `s3cret` ...
//! assert_eq!(server.read_file("apps/gitea/release.yaml")?.as_deref(), Some("version: 1.0.0\n"));
//! server.stop_http()?; // now connections are refused: "server down"
//! server.start_http()?; // same port again
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Everything listens on 127.0.0.1 only and lives in a temporary directory removed on drop.
//! The fixture runs its HTTP server on its own small tokio runtime, so it works the same from
//! synchronous code, from `#[tokio::test]` of either flavour and from benchmarks.

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// Name of the repository directory inside the server root; HTTP clients see it as the URL
/// path `/repo.git`.
const REPO_DIR: &str = "repo.git";

/// Author and committer of the seed commit.
const SEED_IDENTITY: &str = "Fixture Seed <seed@fixture.invalid>";

/// Identity used by [`GitServer::push_commit`]: "someone else" pushing to the repository.
pub const OTHER_NAME: &str = "Another Committer";
/// Email of [`OTHER_NAME`].
pub const OTHER_EMAIL: &str = "another@fixture.invalid";

/// Written in a seed file, stands for the server's HTTP URL (`http://127.0.0.1:PORT/repo.git`),
/// known only once the port is reserved: for manifests that name the repository they are
/// in, as `flux bootstrap`'s `gotk-sync.yaml` does.
pub const HTTP_URL_PLACEHOLDER: &str = "${SIM_GIT_HTTP_URL}";

/// Configures a [`GitServer`]; obtained from [`GitServer::builder`].
#[derive(Debug, Clone)]
pub struct GitServerBuilder {
    branch: String,
    files: Vec<(String, Vec<u8>)>,
    message: String,
    http: bool,
    credentials: Option<(String, String)>,
    read_only: Vec<ReadOnlyUser>,
    fast_import: Option<Vec<u8>>,
    tags: Vec<String>,
}

/// Where a Git host refuses credentials that may read but not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefusal {
    /// At the receive-pack advertisement (`GET info/refs?service=git-receive-pack`) and the
    /// push itself: `403` with GitHub's "Write access to repository not granted." — as GitHub
    /// and GitLab answer read-only tokens and deploy keys, and Gitea a token without write
    /// scope (`CheckRepoScopedToken` in routers/web/repo/githttp.go `httpBase`).
    AtAdvertisement,
    /// Only at the push, from the pre-receive hook: Gitea serves the advertisement to a user
    /// with read permission (its write check is deferred for agit's `refs/for`) and its hook
    /// answers "User permission denied for writing." (routers/private/hook_pre_receive.go
    /// `assertCanWriteRef`).
    AtPush,
}

/// Credentials that may fetch but not push.
#[derive(Debug, Clone)]
struct ReadOnlyUser {
    username: String,
    password: String,
    refusal: WriteRefusal,
}

impl Default for GitServerBuilder {
    fn default() -> Self {
        GitServerBuilder {
            branch: "main".to_owned(),
            files: Vec::new(),
            message: "Initial commit".to_owned(),
            http: false,
            credentials: None,
            read_only: Vec::new(),
            fast_import: None,
            tags: Vec::new(),
        }
    }
}

impl GitServerBuilder {
    /// The branch the seed commit goes to and `HEAD` points at (default `main`).
    pub fn branch(mut self, branch: &str) -> Self {
        self.branch = branch.to_owned();
        self
    }

    /// Adds a file (repository-relative path, `/`-separated) to the seed commit.
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .push((path.to_owned(), contents.as_ref().to_vec()));
        self
    }

    /// The message of the seed commit (default "Initial commit").
    pub fn message(mut self, message: &str) -> Self {
        self.message = message.to_owned();
        self
    }

    /// Also serve the repository over smart HTTP on 127.0.0.1, without authentication.
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// Serve over smart HTTP and require HTTP basic auth with exactly these credentials;
    /// anything else gets `401 Unauthorized`.
    pub fn http_credentials(mut self, username: &str, password: &str) -> Self {
        self.http = true;
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Tags the seed commit (a lightweight tag).
    pub fn tag(mut self, name: &str) -> Self {
        self.tags.push(name.to_owned());
        self
    }

    /// Serve over smart HTTP with basic auth, and accept these credentials for fetching
    /// only: a push is refused as `refusal` says (see [`WriteRefusal`]). Combines with
    /// [`http_credentials`](Self::http_credentials), which may push.
    pub fn http_read_only_credentials(
        mut self,
        username: &str,
        password: &str,
        refusal: WriteRefusal,
    ) -> Self {
        self.http = true;
        self.read_only.push(ReadOnlyUser {
            username: username.to_owned(),
            password: password.to_owned(),
            refusal,
        });
        self
    }

    /// Seeds the repository from a `git fast-import` stream instead of [`file`](Self::file)s
    /// (fast for large generated histories). The stream must create the branch.
    pub fn fast_import(mut self, stream: Vec<u8>) -> Self {
        self.fast_import = Some(stream);
        self
    }

    /// Creates the repository, seeds it, and starts the HTTP server if asked for.
    pub fn start(self) -> io::Result<GitServer> {
        let root = tempfile::Builder::new().prefix("sim-git-").tempdir()?;
        let repo = root.path().join(REPO_DIR);
        let initial_branch = format!("--initial-branch={}", self.branch);
        git(
            root.path(),
            &["init", "--quiet", "--bare", &initial_branch, REPO_DIR],
        )?;
        // Pushes over HTTP need this; http-backend otherwise only allows authenticated ones.
        git(&repo, &["config", "http.receivepack", "true"])?;
        // The port is reserved before seeding, so seed files may name the HTTP URL.
        let http = if self.http {
            Some(HttpServer::new(
                root.path().to_path_buf(),
                self.credentials,
                self.read_only.clone(),
            )?)
        } else {
            None
        };
        let stream = match self.fast_import {
            Some(stream) => stream,
            None => {
                let url = http
                    .as_ref()
                    .map(|h| format!("http://{}/{REPO_DIR}", h.addr));
                let files: Vec<(String, Vec<u8>)> = self
                    .files
                    .into_iter()
                    .map(|(path, contents)| match &url {
                        Some(url) => (path, substitute_http_url(contents, url)),
                        None => (path, contents),
                    })
                    .collect();
                seed_stream(&self.branch, &self.message, &files)
            }
        };
        git_with_input(&repo, &["fast-import", "--quiet"], &stream)?;
        for tag in &self.tags {
            git(&repo, &["tag", tag, &self.branch])?;
        }
        let server = GitServer {
            repo,
            branch: self.branch,
            http,
            scratch: AtomicUsize::new(0),
            root,
        };
        let refused_at_push: Vec<&str> = self
            .read_only
            .iter()
            .filter(|u| u.refusal == WriteRefusal::AtPush)
            .map(|u| u.username.as_str())
            .collect();
        if !refused_at_push.is_empty() {
            // http-backend passes REMOTE_USER on to receive-pack and so to its hooks.
            let users = refused_at_push.join("|");
            server.install_hook(
                "pre-receive",
                &format!(
                    "case \"$REMOTE_USER\" in {users}) echo \"Gitea: User permission denied \
                     for writing.\" >&2; exit 1;; esac"
                ),
            )?;
        }
        if server.http.is_some() {
            server.start_http()?;
        }
        Ok(server)
    }
}

/// One commit of the served branch, as listed by [`GitServer::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// Full hex sha.
    pub sha: String,
    /// Author name.
    pub author_name: String,
    /// Author email.
    pub author_email: String,
    /// Parent shas (two or more for merges).
    pub parents: Vec<String>,
    /// The full message, trailers included, without the final newline git adds.
    pub message: String,
}

/// A bare git repository in a temporary directory, served over `file://` and optionally
/// smart HTTP on 127.0.0.1. Dropping it stops the server and deletes the repository.
pub struct GitServer {
    repo: PathBuf,
    branch: String,
    http: Option<HttpServer>,
    scratch: AtomicUsize,
    // Last: dropped after the HTTP server stopped using it.
    root: tempfile::TempDir,
}

impl std::fmt::Debug for GitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitServer")
            .field("repo", &self.repo)
            .field("branch", &self.branch)
            .field("http", &self.http.as_ref().map(|h| h.addr))
            .finish()
    }
}

impl GitServer {
    /// Starts configuring a server; see [`GitServerBuilder`].
    pub fn builder() -> GitServerBuilder {
        GitServerBuilder::default()
    }

    /// A `file://` server on `branch` seeded with `files`; the common case in one call.
    pub fn with_files(branch: &str, files: &[(&str, &str)]) -> io::Result<GitServer> {
        files
            .iter()
            .fold(
                GitServer::builder().branch(branch),
                |b, (path, contents)| b.file(path, contents),
            )
            .start()
    }

    /// The served branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Path of the bare repository on disk.
    pub fn repo_path(&self) -> &Path {
        &self.repo
    }

    /// `file:///…/repo.git`: the repository over git's local transport.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    /// `http://127.0.0.1:PORT/repo.git` (no credentials in it), when serving HTTP.
    pub fn http_url(&self) -> Option<String> {
        self.http
            .as_ref()
            .map(|h| format!("http://{}/{REPO_DIR}", h.addr))
    }

    /// The loopback address of the HTTP server, when serving HTTP.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// Stops the HTTP server: the port is closed when this returns and open connections are
    /// dropped, so clients see "connection refused". No-op without HTTP or when stopped.
    pub fn stop_http(&self) -> io::Result<()> {
        match &self.http {
            Some(http) => http.stop(),
            None => Ok(()),
        }
    }

    /// (Re)starts the HTTP server on the same port. No-op when running or without HTTP.
    pub fn start_http(&self) -> io::Result<()> {
        match &self.http {
            Some(http) => http.start(),
            None => Ok(()),
        }
    }

    /// While stalled, the HTTP server accepts connections but never answers: clients hang
    /// until their own timeouts fire. Use it to test timeouts (vs. [`stop_http`](Self::stop_http)
    /// for refused connections).
    pub fn set_http_stalled(&self, stalled: bool) {
        if let Some(http) = &self.http {
            http.shared.stalled.store(stalled, Ordering::SeqCst);
        }
    }

    /// HTTP requests received so far (all of them, including refused ones).
    pub fn http_requests(&self) -> usize {
        self.http
            .as_ref()
            .map_or(0, |h| h.shared.requests.load(Ordering::SeqCst))
    }

    /// HTTP requests answered `401 Unauthorized` so far.
    pub fn http_unauthorized(&self) -> usize {
        self.http
            .as_ref()
            .map_or(0, |h| h.shared.unauthorized.load(Ordering::SeqCst))
    }

    /// The sha the branch points at.
    pub fn head(&self) -> io::Result<String> {
        let out = git(&self.repo, &["rev-parse", "--verify", &self.branch_ref()])?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The file at the branch head, or `None` when it does not exist there.
    pub fn read_file(&self, path: &str) -> io::Result<Option<String>> {
        Ok(match self.read_file_bytes(path)? {
            Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{path} is not UTF-8"))
            })?),
            None => None,
        })
    }

    /// The raw bytes of a file at the branch head, or `None` when it does not exist there.
    pub fn read_file_bytes(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let spec = format!("{}:{path}", self.branch_ref());
        let Ok(oid) = git(&self.repo, &["rev-parse", "--verify", "--quiet", &spec]) else {
            return Ok(None);
        };
        let oid = String::from_utf8_lossy(&oid).trim().to_owned();
        let kind = git(&self.repo, &["cat-file", "-t", &oid])?;
        if kind.trim_ascii() != b"blob" {
            return Ok(None);
        }
        git(&self.repo, &["cat-file", "blob", &oid]).map(Some)
    }

    /// The branch's first-parent history, newest first.
    pub fn log(&self) -> io::Result<Vec<CommitSummary>> {
        let out = git(
            &self.repo,
            &[
                "log",
                "--first-parent",
                "-z",
                "--format=%H%x1f%an%x1f%ae%x1f%P%x1f%B",
                &self.branch_ref(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out);
        Ok(text
            .split('\0')
            .filter(|record| !record.is_empty())
            .filter_map(|record| {
                let mut fields = record.splitn(5, '\x1f');
                Some(CommitSummary {
                    sha: fields.next()?.to_owned(),
                    author_name: fields.next()?.to_owned(),
                    author_email: fields.next()?.to_owned(),
                    parents: fields
                        .next()?
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect(),
                    message: fields.next()?.trim_end_matches('\n').to_owned(),
                })
            })
            .collect())
    }

    /// Commits `files` (written over whatever is there) on top of the branch head as
    /// [`OTHER_NAME`] and pushes it, like a colleague would: through the `git` CLI in a fresh
    /// clone. Returns the new head sha. Synchronous: when it returns, the push is visible.
    pub fn push_commit(&self, files: &[(&str, &str)], message: &str) -> io::Result<String> {
        self.push_change(files, &[], message)
    }

    /// [`push_commit`](Self::push_commit) that also deletes the files at `removed`.
    pub fn push_change(
        &self,
        files: &[(&str, &str)],
        removed: &[String],
        message: &str,
    ) -> io::Result<String> {
        let n = self.scratch.fetch_add(1, Ordering::SeqCst);
        let work = self.root.path().join(format!("scratch-{n}"));
        let work_str = work.to_string_lossy().into_owned();
        let repo_str = self.repo.to_string_lossy().into_owned();
        git(
            self.root.path(),
            &[
                "clone",
                "--quiet",
                "--branch",
                &self.branch,
                &repo_str,
                &work_str,
            ],
        )?;
        for (path, contents) in files {
            let target = work.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, contents)?;
        }
        for path in removed {
            std::fs::remove_file(work.join(path))?;
        }
        git(&work, &["add", "--all"])?;
        let author = format!("{OTHER_NAME} <{OTHER_EMAIL}>");
        git(
            &work,
            &[
                "-c",
                &format!("user.name={OTHER_NAME}"),
                "-c",
                &format!("user.email={OTHER_EMAIL}"),
                "commit",
                "--quiet",
                "--allow-empty",
                "--author",
                &author,
                "-m",
                message,
            ],
        )?;
        git(
            &work,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:{}", self.branch),
            ],
        )?;
        let sha = git(&work, &["rev-parse", "HEAD"])?;
        // Best effort: the whole root goes on drop anyway.
        let _ = std::fs::remove_dir_all(&work);
        Ok(String::from_utf8_lossy(&sha).trim().to_owned())
    }

    /// Installs a server-side hook (e.g. `pre-receive`) with this shell script as its body;
    /// it runs for pushes over HTTP (git's local transport used by `file://` clients may
    /// bypass hooks). Example: `server.install_hook("pre-receive", "echo protected >&2; exit 1")`.
    pub fn install_hook(&self, name: &str, script: &str) -> io::Result<()> {
        let path = self.repo.join("hooks").join(name);
        std::fs::create_dir_all(self.repo.join("hooks"))?;
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n"))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(http) = self.http.take() {
            let _ = http.stop();
            http.shutdown();
        }
    }
}

/// A fast-import stream with one commit holding `files` on `branch`; fixed dates so that
/// seeded repositories are byte-for-byte reproducible.
/// `contents` with [`HTTP_URL_PLACEHOLDER`] replaced by `url` (text files only).
fn substitute_http_url(contents: Vec<u8>, url: &str) -> Vec<u8> {
    match String::from_utf8(contents) {
        Ok(text) => text.replace(HTTP_URL_PLACEHOLDER, url).into_bytes(),
        Err(e) => e.into_bytes(),
    }
}

fn seed_stream(branch: &str, message: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut s = Vec::new();
    let _ = writeln!(s, "commit refs/heads/{branch}");
    let _ = writeln!(s, "author {SEED_IDENTITY} 1700000000 +0000");
    let _ = writeln!(s, "committer {SEED_IDENTITY} 1700000000 +0000");
    let _ = writeln!(s, "data {}", message.len());
    s.extend_from_slice(message.as_bytes());
    s.push(b'\n');
    for (path, contents) in files {
        // Quoted path: fast-import's C-style quoting handles spaces and specials.
        let quoted = path.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(s, "M 100644 inline \"{quoted}\"");
        let _ = writeln!(s, "data {}", contents.len());
        s.extend_from_slice(contents);
        s.push(b'\n');
    }
    s.push(b'\n');
    s
}

/// Environment that isolates fixture git commands from the user's and system git config.
fn isolated(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        // Messages in English whatever the machine's locale, so tests can match them.
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
}

/// Runs `git args` in `dir` and returns its stdout, or an error carrying its stderr.
fn git(dir: &Path, args: &[&str]) -> io::Result<Vec<u8>> {
    git_with_input(dir, args, &[])
}

fn git_with_input(dir: &Path, args: &[&str], input: &[u8]) -> io::Result<Vec<u8>> {
    let mut child = isolated(Command::new("git").args(args).current_dir(dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run git (is it installed?): {e}")))?;
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    // Feed stdin from a thread so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(io::Error::other(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// State shared by the accept loop and the request handlers.
struct Shared {
    project_root: PathBuf,
    credentials: Option<(String, String)>,
    read_only: Vec<ReadOnlyUser>,
    stalled: AtomicBool,
    requests: AtomicUsize,
    unauthorized: AtomicUsize,
}

/// The loopback smart-HTTP server: an accept loop on its own runtime that can be stopped
/// (port closed, connections dropped) and restarted on the same port.
struct HttpServer {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

struct Running {
    task: tokio::task::JoinHandle<()>,
    /// Receives once the accept loop (and with it the listener) has been dropped.
    stopped: mpsc::Receiver<()>,
}

/// Signals `stopped` when the accept loop future is dropped (aborted or finished).
struct StopSignal(mpsc::Sender<()>);

impl Drop for StopSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl HttpServer {
    fn new(
        project_root: PathBuf,
        credentials: Option<(String, String)>,
        read_only: Vec<ReadOnlyUser>,
    ) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sim-git-http")
            .enable_all()
            .build()?;
        // Reserve a port now so that the URL is stable across stop/start.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(HttpServer {
            runtime: Some(runtime),
            addr,
            shared: Arc::new(Shared {
                project_root,
                credentials,
                read_only,
                stalled: AtomicBool::new(false),
                requests: AtomicUsize::new(0),
                unauthorized: AtomicUsize::new(0),
            }),
            running: Mutex::new(None),
        })
    }

    fn start(&self) -> io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_some() {
            return Ok(());
        }
        let Some(runtime) = &self.runtime else {
            return Err(io::Error::other("git server runtime already shut down"));
        };
        // std sets SO_REUSEADDR on Unix, so the same port can be bound again right away.
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        let shared = self.shared.clone();
        let task = runtime.spawn(async move {
            let _signal = StopSignal(tx);
            if let Err(err) = accept_loop(listener, shared).await {
                eprintln!("sim git server: accept loop ended: {err}");
            }
        });
        *running = Some(Running { task, stopped: rx });
        Ok(())
    }

    fn stop(&self) -> io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = running.take() else {
            return Ok(());
        };
        r.task.abort();
        r.stopped
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| io::Error::other("git server did not stop within 10 s"))
    }

    fn shutdown(mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Allowed inside async contexts, unlike dropping the runtime.
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // Owned here so that aborting this loop drops (and so closes) every connection.
    let mut connections = tokio::task::JoinSet::new();
    let mut stalled = Vec::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        if shared.stalled.load(Ordering::SeqCst) {
            // Hold the socket open and never read from it.
            stalled.push(stream);
            continue;
        }
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

fn authorized(req: &Request<Incoming>, username: &str, password: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{username}:{password}").as_bytes()
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mut user = "anonymous".to_owned();
    let reader = shared
        .read_only
        .iter()
        .find(|u| authorized(&req, &u.username, &u.password));
    if let Some(reader) = reader {
        let pushing = req.uri().path().ends_with("/git-receive-pack")
            || req.uri().query() == Some("service=git-receive-pack");
        if pushing && reader.refusal == WriteRefusal::AtAdvertisement {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                "Write access to repository not granted.\n",
            ));
        }
        user.clone_from(&reader.username);
    } else if shared.credentials.is_some() || !shared.read_only.is_empty() {
        let allowed = shared
            .credentials
            .as_ref()
            .is_some_and(|(username, password)| authorized(&req, username, password));
        if !allowed {
            shared.unauthorized.fetch_add(1, Ordering::SeqCst);
            let mut response = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"sim git\""),
            );
            return Ok(response);
        }
        if let Some((username, _)) = &shared.credentials {
            user.clone_from(username);
        }
    }
    let path = req.uri().path().to_owned();
    if !path.starts_with(&format!("/{REPO_DIR}/")) {
        return Ok(plain(StatusCode::NOT_FOUND, "no such repository\n"));
    }
    Ok(cgi(req, &path, &user, &shared.project_root)
        .await
        .unwrap_or_else(|err| plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n"))))
}

/// Runs `git http-backend` as a CGI program for one request.
async fn cgi(
    req: Request<Incoming>,
    path: &str,
    user: &str,
    project_root: &Path,
) -> io::Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let content_encoding = header("content-encoding");
    let git_protocol = header("git-protocol");
    let body = body
        .collect()
        .await
        .map_err(|e| io::Error::other(format!("reading request body: {e}")))?
        .to_bytes();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", project_root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", user)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(v) = content_type {
        cmd.env("CONTENT_TYPE", v);
    }
    if let Some(v) = content_encoding {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = git_protocol {
        cmd.env("GIT_PROTOCOL", v);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&body).await;
            let _ = stdin.shutdown().await;
        }
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    parse_cgi_output(&out.stdout).ok_or_else(|| {
        io::Error::other(format!(
            "git http-backend gave no valid CGI response: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// Splits a CGI response into headers (with the `Status:` pseudo-header) and body.
fn parse_cgi_output(out: &[u8]) -> Option<Response<Full<Bytes>>> {
    let (head_len, sep_len) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))?;
    let head = std::str::from_utf8(&out[..head_len]).ok()?;
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(
            &out[head_len + sep_len..],
        )))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_status_headers_and_body() {
        let r = parse_cgi_output(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
            .expect("valid CGI output");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "text/plain");
        let r = parse_cgi_output(b"Content-Type: x\n\nbody").expect("LF-only CGI output");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(parse_cgi_output(b"no header end").is_none());
    }

    #[test]
    fn seeds_files_and_lists_history() -> io::Result<()> {
        let server = GitServer::builder()
            .branch("trunk")
            .file("a/b.yaml", "x: 1\n")
            .file("with space.txt", "s")
            .start()?;
        assert_eq!(server.read_file("a/b.yaml")?.as_deref(), Some("x: 1\n"));
        assert_eq!(server.read_file("with space.txt")?.as_deref(), Some("s"));
        assert_eq!(server.read_file("missing")?, None);
        assert_eq!(server.read_file("a")?, None, "a directory is not a file");
        let sha = server.push_commit(&[("a/b.yaml", "x: 2\n")], "Bump x")?;
        assert_eq!(server.head()?, sha);
        let log = server.log()?;
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].message, "Bump x");
        assert_eq!(log[0].author_email, OTHER_EMAIL);
        assert_eq!(log[1].message, "Initial commit");
        assert_eq!(log[0].parents, vec![log[1].sha.clone()]);
        Ok(())
    }

    /// The HTTP side, checked with the real `git` CLI: auth, clone, push, stop/start.
    #[test]
    fn serves_smart_http_with_basic_auth() -> io::Result<()> {
        let server = GitServer::builder()
            .file("f.txt", "one\n")
            .http_credentials("flux", "pa55")
            .start()?;
        let url = server.http_url().expect("http enabled");
        let with_creds = url.replacen("http://", "http://flux:pa55@", 1);
        let wrong = url.replacen("http://", "http://flux:wrong@", 1);
        let scratch = tempfile::tempdir()?;
        let err = git(scratch.path(), &["ls-remote", &wrong]).expect_err("wrong password");
        assert!(err.to_string().contains("Authentication failed"), "{err}");
        assert!(server.http_unauthorized() >= 1);

        git(scratch.path(), &["clone", "--quiet", &with_creds, "c"])?;
        let work = scratch.path().join("c");
        std::fs::write(work.join("f.txt"), "two\n")?;
        git(
            &work,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qam",
                "two",
            ],
        )?;
        git(&work, &["push", "--quiet", "origin", "HEAD:main"])?;
        assert_eq!(server.read_file("f.txt")?.as_deref(), Some("two\n"));

        server.stop_http()?;
        assert!(std::net::TcpStream::connect(server.http_addr().expect("addr")).is_err());
        assert!(git(scratch.path(), &["ls-remote", &with_creds]).is_err());
        server.start_http()?;
        git(scratch.path(), &["ls-remote", &with_creds])?;
        Ok(())
    }

    /// Read-only credentials fetch, and are refused a push where the host refuses it.
    #[test]
    fn read_only_credentials_fetch_but_cannot_push() -> io::Result<()> {
        let server = GitServer::builder()
            .file("f.txt", "one\n")
            .http_credentials("writer", "w")
            .http_read_only_credentials("deploy", "r", WriteRefusal::AtAdvertisement)
            .http_read_only_credentials("reader", "r2", WriteRefusal::AtPush)
            .start()?;
        let url = server.http_url().expect("http enabled");
        let scratch = tempfile::tempdir()?;
        for (who, creds, refused) in [
            ("deploy", "deploy:r", "403"),
            ("reader", "reader:r2", "User permission denied for writing"),
        ] {
            let with_creds = url.replacen("http://", &format!("http://{creds}@"), 1);
            git(scratch.path(), &["clone", "--quiet", &with_creds, who])?;
            let work = scratch.path().join(who);
            std::fs::write(work.join("f.txt"), format!("{who}\n"))?;
            git(
                &work,
                &[
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "commit",
                    "-qam",
                    who,
                ],
            )?;
            let err = git(&work, &["push", "--quiet", "origin", "HEAD:main"])
                .expect_err("read-only credentials cannot push");
            assert!(err.to_string().contains(refused), "{who}: {err}");
        }
        assert_eq!(server.read_file("f.txt")?.as_deref(), Some("one\n"));
        let writer = url.replacen("http://", "http://writer:w@", 1);
        let work = scratch.path().join("deploy");
        git(&work, &["push", "--quiet", &writer, "HEAD:main"])?;
        assert_eq!(server.read_file("f.txt")?.as_deref(), Some("deploy\n"));
        Ok(())
    }
}
