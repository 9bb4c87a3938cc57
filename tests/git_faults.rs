//! `fluxgate::git` when things go wrong on the wire: wrong or missing credentials, a server
//! that is down or hangs, a push refused by a hook — each a clear, bounded, secret-free error.

mod git_common;

use fluxgate::git::{Git2Repo, GitAuth, GitError, RemoteSpec, SecretString};
use git_common::{RELEASE, RELEASE_V1, config, counter, request, set_version};
use sim::git_server::GitServer;
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const USER: &str = "flux";
const TOKEN: &str = "glpat-very-secret-token";

fn http_server() -> std::io::Result<GitServer> {
    GitServer::builder()
        .file(RELEASE, RELEASE_V1)
        .http_credentials(USER, TOKEN)
        .start()
}

fn basic(password: &str) -> GitAuth {
    GitAuth::Basic {
        username: USER.into(),
        password: SecretString::new(password),
    }
}

fn open(url: &str, auth: GitAuth, cache: &std::path::Path) -> Result<Git2Repo, GitError> {
    Git2Repo::open(
        config(cache),
        RemoteSpec {
            url: url.to_owned(),
            branch: "main".into(),
            auth,
        },
    )
}

/// Display and Debug of an error must not contain any of `secrets`.
fn assert_no_secret(err: &GitError, secrets: &[&str]) {
    let shown = format!("{err} / {err:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "secret {secret:?} leaked: {shown}");
    }
}

#[test]
fn wrong_credentials_fail_fast_with_a_clear_auth_error() -> TestResult {
    let server = http_server()?;
    let cache = tempfile::tempdir()?;
    let url = server.http_url().ok_or("http")?;
    let repo = open(&url, basic("wrong-password-123"), cache.path())?;
    let started = Instant::now();
    let err = repo.head_blocking().expect_err("wrong password");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retry loop: {:?}",
        started.elapsed()
    );
    assert_eq!(err.category(), "git_auth", "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains(&url), "names the remote: {text}");
    assert!(text.contains("rejected"), "{text}");
    assert_no_secret(&err, &["wrong-password-123", TOKEN]);
    assert!(
        server.http_unauthorized() <= 3,
        "asked {} times",
        server.http_unauthorized()
    );

    let anonymous = open(&url, GitAuth::Anonymous, cache.path())?;
    let err = anonymous.head_blocking().expect_err("no credentials");
    assert_eq!(err.category(), "git_auth");
    assert!(
        err.to_string().contains("secretRef"),
        "says what to do: {err}"
    );
    Ok(())
}

#[test]
fn credentials_in_the_url_never_reach_messages() -> TestResult {
    let server = http_server()?;
    let cache = tempfile::tempdir()?;
    let plain = server.http_url().ok_or("http")?;
    let url = plain.replacen("http://", "http://flux:url-embedded-s3cret@", 1);
    let repo = open(&url, GitAuth::Anonymous, cache.path())?;
    let err = repo.head_blocking().expect_err("wrong password in the URL");
    assert_eq!(err.category(), "git_auth", "{err}");
    assert!(err.to_string().contains("embedded in the URL"), "{err}");
    assert_no_secret(&err, &["url-embedded-s3cret"]);
    assert!(
        err.to_string()
            .contains(&plain.replacen("http://", "http://***@", 1)),
        "{err}"
    );
    assert!(!format!("{repo:?}").contains("url-embedded-s3cret"));

    // And the right token in the URL works, without the token reaching the cache on disk.
    let good = plain.replacen("http://", &format!("http://{USER}:{TOKEN}@"), 1);
    let repo = open(&good, GitAuth::Anonymous, cache.path())?;
    repo.head_blocking()?;
    let name = repo.cache_path().to_string_lossy().into_owned();
    assert!(!name.contains(TOKEN));
    let config = std::fs::read_to_string(repo.cache_path().join("config"))?;
    assert!(
        !config.contains(TOKEN),
        "no remote URL with credentials persisted"
    );
    Ok(())
}

#[test]
fn a_stopped_server_is_a_retryable_network_error_naming_the_remote() -> TestResult {
    let server = http_server()?;
    let cache = tempfile::tempdir()?;
    let url = server.http_url().ok_or("http")?;
    let repo = open(&url, basic(TOKEN), cache.path())?;
    repo.head_blocking()?;

    server.stop_http()?;
    let started = Instant::now();
    let err = repo
        .commit_and_push_blocking(request("uid-down", vec![set_version("1.1.0", counter())]))
        .expect_err("server is down");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err.category(), "git_network" | "git_timeout"),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&url), "names the remote: {err}");
    assert_no_secret(&err, &[TOKEN]);

    server.start_http()?;
    assert_eq!(
        repo.head_blocking()?,
        server.head()?,
        "works again once the server is back"
    );
    Ok(())
}

#[test]
fn a_hanging_server_times_out() -> TestResult {
    let server = http_server()?;
    let cache = tempfile::tempdir()?;
    let url = server.http_url().ok_or("http")?;
    let repo = open(&url, basic(TOKEN), cache.path())?;
    server.set_http_stalled(true);
    let started = Instant::now();
    let err = repo.head_blocking().expect_err("server never answers");
    let elapsed = started.elapsed();
    // io_timeout is 2 s in these tests; allow for slow CI machines.
    assert!(elapsed < Duration::from_secs(15), "bounded: {elapsed:?}");
    assert_eq!(err.category(), "git_timeout", "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&url), "{err}");
    assert_no_secret(&err, &[TOKEN]);
    Ok(())
}

#[tokio::test]
async fn the_async_wrapper_bounds_the_whole_operation() -> TestResult {
    use fluxgate::git::GitRepo as _;
    let server = http_server()?;
    let cache = tempfile::tempdir()?;
    let url = server.http_url().ok_or("http")?;
    let mut cfg = config(cache.path());
    cfg.operation_timeout = Duration::from_millis(500);
    let repo = Git2Repo::open(
        cfg,
        RemoteSpec {
            url,
            branch: "main".into(),
            auth: basic(TOKEN),
        },
    )?;
    server.set_http_stalled(true);
    let started = Instant::now();
    let err = repo.head().await.expect_err("stalled");
    assert_eq!(err.category(), "git_timeout", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn a_push_refused_by_a_server_hook_is_terminal() -> TestResult {
    let server = http_server()?;
    server.install_hook("pre-receive", "echo 'branch main is protected' >&2; exit 1")?;
    let cache = tempfile::tempdir()?;
    let url = server.http_url().ok_or("http")?;
    let repo = open(&url, basic(TOKEN), cache.path())?;
    let err = repo
        .commit_and_push_blocking(request("uid-hook", vec![set_version("1.1.0", counter())]))
        .expect_err("hook refuses");
    assert_eq!(err.category(), "git_rejected", "{err}");
    assert!(!err.is_retryable());
    assert_eq!(server.log()?.len(), 1, "nothing landed");
    Ok(())
}

#[test]
fn ssh_urls_need_a_key_and_known_hosts() -> TestResult {
    let cache = tempfile::tempdir()?;
    let err = open(
        "git@github.com:org/fleet.git",
        GitAuth::Anonymous,
        cache.path(),
    )
    .expect_err("no SSH key");
    assert_eq!(err.category(), "git_config");
    assert!(err.to_string().contains("known_hosts"), "{err}");
    let err = open("https://github.com/org/fleet.git", {
        let mut data = std::collections::BTreeMap::new();
        data.insert("identity".to_owned(), b"KEY".to_vec());
        data.insert(
            "known_hosts".to_owned(),
            b"github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl".to_vec(),
        );
        GitAuth::from_secret_data(&data)?
    }, cache.path())
    .expect_err("SSH key with an HTTPS URL");
    assert_eq!(err.category(), "git_config");
    Ok(())
}

/// Captured log output for one thread (our blocking calls log on the calling thread).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_never_contain_credentials() -> TestResult {
    let server = http_server()?;
    let cache = tempfile::tempdir()?;
    let plain = server.http_url().ok_or("http")?;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || -> TestResult {
        // Good token in the URL over plain http (warned about), a commit, then a bad one.
        let good = plain.replacen("http://", &format!("http://{USER}:{TOKEN}@"), 1);
        let repo = open(&good, GitAuth::Anonymous, cache.path())?;
        repo.commit_and_push_blocking(request("uid-log", vec![set_version("1.1.0", counter())]))?;
        let secret_auth = open(&plain, basic(TOKEN), cache.path())?;
        secret_auth.head_blocking()?;
        let bad = open(&plain, basic("bad-pa55word-xyz"), cache.path())?;
        let _ = bad.head_blocking().expect_err("bad password");
        Ok(())
    })?;
    let logs = String::from_utf8(captured.0.lock().map_err(|_| "poisoned")?.clone())?;
    assert!(logs.contains("pushed commit"), "logging is on: {logs}");
    for secret in [TOKEN, "bad-pa55word-xyz"] {
        assert!(!logs.contains(secret), "secret {secret:?} in logs: {logs}");
    }
    Ok(())
}
