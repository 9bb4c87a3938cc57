//! GitRepository over smart HTTP with basic auth: a minimal loopback front for
//! `git http-backend` (CGI), enough for libgit2's fetch, answering 401 without the
//! right credentials.

use crate::common::*;
use base64::Engine;
use kube::api::DynamicObject;
use serde_json::json;
use sim::kinds::{git_repository, kustomization};
use sim::seed;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serves the repositories under `root` at `http://127.0.0.1:<port>/`; the task ends with
/// the test's runtime.
async fn serve(root: PathBuf, user: &'static str, password: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (root, expected) = (root.clone(), expected.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &root, &expected).await {
                    eprintln!("git http fixture: {e}");
                }
            });
        }
    });
    format!("http://{addr}/")
}

async fn handle(stream: TcpStream, root: &std::path::Path, expected: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let (mut length, mut chunked, mut auth, mut content_type) =
        (0usize, false, String::new(), String::new());
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((k, v)) = header.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.parse().unwrap_or(0),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "authorization" => auth = v.to_owned(),
            "content-type" => content_type = v.to_owned(),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
    }
    let mut stream = reader.into_inner();
    if auth != expected {
        let answer = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return stream.write_all(answer.as_bytes()).await;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", &content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "fluxgate")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(&body).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap_or((out.stdout.len(), 0));
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let payload = &out.stdout[split.0 + split.1..];
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => headers.push_str(&format!("{h}\r\n")),
            None => {}
        }
    }
    let answer = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.write_all(payload).await
}

fn ready(o: &DynamicObject) -> bool {
    cond(&json_of(o), "Ready")["status"] == "True"
}

#[tokio::test]
async fn git_repository_and_kustomization_fetch_over_http_with_basic_auth() {
    let env = env().await;
    let repo = GitRepo::new();
    let sha = repo
        .write(
            "app/cm.yaml",
            &config_map("over-http", Some("default"), "1"),
        )
        .push("one");
    let base = serve(repo.root(), "fluxgate", "s3cret").await;
    let url = format!("{base}repo.git");
    seed::namespace(&env.client, "flux-system").await.unwrap();
    seed::git_credentials(&env.client, "flux-system", "wrong", "fluxgate", "guess")
        .await
        .unwrap();
    seed::git_repository(
        &env.client,
        "flux-system",
        "app",
        &url,
        "main",
        Some("wrong"),
    )
    .await
    .unwrap();
    let api = dynamic(&env.client, &git_repository(), "flux-system");
    let refused = wait_for(&api, "app", "refused credentials", |o| {
        cond(&json_of(o), "Ready")["status"] == "False"
    })
    .await;
    assert_eq!(
        cond(&json_of(&refused), "Ready")["reason"],
        "GitOperationFailed"
    );

    seed::git_credentials(&env.client, "flux-system", "right", "fluxgate", "s3cret")
        .await
        .unwrap();
    merge(
        &api,
        "app",
        json!({"spec": {"secretRef": {"name": "right"}}}),
    )
    .await;
    wait_for(&api, "app", "fetched over http", |o| {
        ready(o)
            && json_of(o)["status"]["artifact"]["revision"] == format!("main@sha1:{sha}").as_str()
    })
    .await;
    seed::kustomization(&env.client, "flux-system", "app", "app", "./app", None)
        .await
        .unwrap();
    let ks = dynamic(&env.client, &kustomization(), "flux-system");
    wait_for(&ks, "app", "applied from http source", |o| {
        ready(o)
            && json_of(o)["status"]["lastAppliedRevision"] == format!("main@sha1:{sha}").as_str()
    })
    .await;
}
