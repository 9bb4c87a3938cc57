//! Plain HTTP on 127.0.0.1 without an HTTP crate: a one-shot GET for health, artifact and
//! registry checks, and a static file server for what Flux fetches over plain HTTP (a Helm
//! chart repository: `index.yaml` and chart archives).
//!
//! ```no_run
//! # async fn t(dir: &std::path::Path) -> anyhow::Result<()> {
//! use realstack::loopback_http::{StaticFiles, get};
//! let server = StaticFiles::start(dir)?; // serves dir at http://127.0.0.1:<port>/
//! let answer = get(server.addr(), "/index.yaml").await?;
//! assert_eq!(answer.status, 200);
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An answer to [`get`].
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header of this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `addr` as HTTP/1.0 (so the server answers without chunking and closes),
/// with `accept` as the Accept header if given; 10 s at most.
pub async fn get_accepting(addr: SocketAddr, path: &str, accept: Option<&str>) -> Result<Answer> {
    let what = format!("GET http://{addr}{path}");
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(addr).await?;
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_answer(&raw)
    })
    .await
    .with_context(|| format!("{what}: no answer within 10 s"))?
    .with_context(|| what.clone())
}

/// `GET path` from `addr` (see [`get_accepting`]).
pub async fn get(addr: SocketAddr, path: &str) -> Result<Answer> {
    get_accepting(addr, path, None).await
}

fn parse_answer(raw: &[u8]) -> Result<Answer> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("the answer's headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// A directory served read-only over HTTP on 127.0.0.1 (any free port), from a thread and
/// runtime of its own so that it outlives any test's runtime; stops when dropped. Files are
/// read at each request, so what is written into the directory later is served too.
pub struct StaticFiles {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticFiles {
    /// Starts serving `dir`.
    pub fn start(dir: &Path) -> Result<StaticFiles> {
        let root = dir
            .canonicalize()
            .with_context(|| format!("serving {}", dir.display()))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding 127.0.0.1:0 for the static file server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let log = requests.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the static file server's runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("static-files-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = async {
                            loop {
                                let Ok((stream, _)) = listener.accept().await else { continue };
                                let (root, log) = (root.clone(), log.clone());
                                tokio::spawn(async move {
                                    // A client that goes away mid-request is its own business.
                                    let _ = serve(stream, &root, &log).await;
                                });
                            }
                        } => {}
                    }
                })
            })
            .context("starting the static file server's thread")?;
        Ok(StaticFiles {
            addr,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Every request so far, as `METHOD /path STATUS`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for StaticFiles {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let (status, body) = match (method.as_str(), file_for(root, path)) {
        ("GET" | "HEAD", Some(file)) => match tokio::fs::read(&file).await {
            Ok(bytes) => (200, bytes),
            Err(_) => (404, b"not found\n".to_vec()),
        },
        ("GET" | "HEAD", None) => (404, b"not found\n".to_vec()),
        _ => (405, b"method not allowed\n".to_vec()),
    };
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {target} {status}"));
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut stream = reader.into_inner();
    stream
        .write_all(
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    if method != "HEAD" {
        stream.write_all(&body).await?;
    }
    stream.shutdown().await?;
    Ok(())
}

/// The file under `root` that URL path `path` names; `None` for anything that would leave
/// `root` or is not a plain file path.
fn file_for(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

/// Fails unless `answer` has status 200.
pub fn ok(answer: Answer, what: &str) -> Result<Answer> {
    if answer.status != 200 {
        bail!(
            "{what}: HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(answer)
}
