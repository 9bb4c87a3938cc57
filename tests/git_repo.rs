//! `fluxgate::git` against real git servers (the `sim` fixture): clone, fetch, read, commit
//! and push over `file://` and smart HTTP, push races, idempotency after a crash, and a
//! corrupt cache.

mod git_common;

use fluxgate::git::{
    Author, CommitOutcome, CommitRequest, EditResult, FileEdit, Git2Repo, GitAuth, GitError,
    GitRepo, REQUEST_TRAILER, REQUEST_UID_TRAILER, RemoteSpec, SecretString, parse_trailers,
};
use git_common::{RELEASE, RELEASE_V1, config, counter, request, set_version};
use sim::git_server::{GitServer, OTHER_EMAIL};
use std::sync::Arc;
use std::sync::atomic::Ordering;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn file_server() -> std::io::Result<GitServer> {
    GitServer::builder()
        .file(RELEASE, RELEASE_V1)
        .file("apps/other/kustomization.yaml", "resources: []\n")
        .start()
}

fn open(
    server: &GitServer,
    url: String,
    auth: GitAuth,
    cache: &std::path::Path,
) -> Result<Git2Repo, GitError> {
    Git2Repo::open(
        config(cache),
        RemoteSpec {
            url,
            branch: server.branch().to_owned(),
            auth,
        },
    )
}

fn pushed(outcome: CommitOutcome) -> Result<(fluxgate::git::CommitInfo, u32), String> {
    match outcome {
        CommitOutcome::Pushed { commit, attempts } => Ok((commit, attempts)),
        other => Err(format!("expected a push, got {other:?}")),
    }
}

#[test]
fn clones_reads_commits_and_pushes_over_file_url() -> TestResult {
    let server = file_server()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;

    let file = repo.read_file_blocking(RELEASE)?;
    assert_eq!(file.commit, server.head()?);
    assert_eq!(file.contents.as_deref(), Some(RELEASE_V1.as_bytes()));
    assert_eq!(repo.read_file_blocking("apps/nope.yaml")?.contents, None);
    assert!(
        repo.cache_path().join("HEAD").exists(),
        "cloned into the cache"
    );

    let calls = counter();
    let (commit, attempts) = pushed(
        repo.commit_and_push_blocking(request("uid-1", vec![set_version("1.1.0", calls.clone())]))?,
    )?;
    assert_eq!(attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(commit.sha, server.head()?);
    assert_eq!(commit.url, None, "no web link for a local repository");
    assert_eq!(
        server.read_file(RELEASE)?.as_deref(),
        Some("# Gitea\nname: gitea\nversion: 1.1.0 # pinned\nreplicas: 1\n"),
        "only the version bytes changed"
    );
    assert_eq!(
        server
            .read_file("apps/other/kustomization.yaml")?
            .as_deref(),
        Some("resources: []\n"),
        "other files untouched"
    );
    let log = server.log()?;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].author_name, "Fluxgate");
    assert_eq!(log[0].author_email, "fluxgate@example.com");
    assert!(
        log[0]
            .message
            .starts_with("Upgrade gitea to 1.1.0\n\nRequested by apps/gitea-up.\n\n")
    );
    let trailers = parse_trailers(&log[0].message);
    assert_eq!(
        trailers,
        vec![
            (REQUEST_TRAILER.to_owned(), "apps/gitea-up".to_owned()),
            (REQUEST_UID_TRAILER.to_owned(), "uid-1".to_owned())
        ]
    );
    assert_eq!(commit.message.trim_end(), log[0].message);

    // Later operations fetch incrementally into the same cache.
    let other = server.push_commit(&[("README.md", "hello\n")], "Add readme")?;
    assert_eq!(repo.head_blocking()?, other);
    Ok(())
}

#[test]
fn commits_over_smart_http_with_credentials() -> TestResult {
    let server = GitServer::builder()
        .file(RELEASE, RELEASE_V1)
        .http_credentials("flux", "t0ken-value")
        .start()?;
    let cache = tempfile::tempdir()?;
    let auth = GitAuth::Basic {
        username: "flux".into(),
        password: SecretString::new("t0ken-value"),
    };
    let url = server.http_url().ok_or("http enabled")?;
    let repo = open(&server, url.clone(), auth, cache.path())?;
    assert_eq!(
        repo.read_file_blocking(RELEASE)?.contents.as_deref(),
        Some(RELEASE_V1.as_bytes())
    );
    let (commit, _) = pushed(
        repo.commit_and_push_blocking(request("uid-http", vec![set_version("2.0.0", counter())]))?,
    )?;
    assert_eq!(server.head()?, commit.sha);
    assert_eq!(
        commit.url,
        Some(format!(
            "{}/commit/{}",
            url.trim_end_matches(".git"),
            commit.sha
        ))
    );
    assert!(
        server
            .read_file(RELEASE)?
            .is_some_and(|t| t.contains("version: 2.0.0 # pinned"))
    );
    Ok(())
}

/// Another committer pushes between our fetch and our push (from inside our edit, which
/// runs exactly there): we lose the race, refetch, re-apply on their commit and win.
#[test]
fn rebases_onto_a_concurrent_push_without_losing_theirs() -> TestResult {
    let server = Arc::new(file_server()?);
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let calls = counter();
    let inner = set_version("1.1.0", calls.clone());
    let mut inner = inner.edit;
    let race = server.clone();
    let mut raced = false;
    let edit = FileEdit::new(RELEASE, move |current| {
        if !raced {
            raced = true;
            // Same file, different line, plus another file: both must survive.
            race.push_commit(
                &[
                    (
                        RELEASE,
                        "# Gitea\nname: gitea\nversion: 1.0.0 # pinned\nreplicas: 3\n",
                    ),
                    ("apps/other/kustomization.yaml", "resources: [a.yaml]\n"),
                ],
                "Scale gitea to 3",
            )
            .map_err(|e| format!("racing push failed: {e}"))?;
        }
        inner(current)
    });
    let (commit, attempts) =
        pushed(repo.commit_and_push_blocking(request("uid-race", vec![edit]))?)?;
    assert_eq!(attempts, 2, "first push lost the race");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the edit was re-applied on the new head"
    );

    let log = server.log()?;
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[0].sha, commit.sha);
    assert_eq!(log[1].author_email, OTHER_EMAIL);
    assert_eq!(
        log[0].parents,
        vec![log[1].sha.clone()],
        "ours sits on theirs, no merge"
    );
    let ours: Vec<_> = log
        .iter()
        .filter(|c| c.message.contains("uid-race"))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one commit of ours");
    assert_eq!(
        server.read_file(RELEASE)?.as_deref(),
        Some("# Gitea\nname: gitea\nversion: 1.1.0 # pinned\nreplicas: 3\n")
    );
    assert_eq!(
        server
            .read_file("apps/other/kustomization.yaml")?
            .as_deref(),
        Some("resources: [a.yaml]\n")
    );
    Ok(())
}

/// Someone else already pushed exactly our change: after the lost race there is nothing
/// left to commit.
#[test]
fn no_commit_when_the_new_head_already_has_the_edit() -> TestResult {
    let server = Arc::new(file_server()?);
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let mut inner = set_version("1.1.0", counter()).edit;
    let race = server.clone();
    let mut raced = false;
    let edit = FileEdit::new(RELEASE, move |current| {
        if !raced {
            raced = true;
            race.push_commit(
                &[(RELEASE, &RELEASE_V1.replace("1.0.0", "1.1.0"))],
                "Manual bump",
            )
            .map_err(|e| format!("racing push failed: {e}"))?;
        }
        inner(current)
    });
    let outcome = repo.commit_and_push_blocking(request("uid-same", vec![edit]))?;
    let head = server.head()?;
    assert_eq!(outcome, CommitOutcome::NoChange { head });
    let log = server.log()?;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|c| !c.message.contains("uid-same")));
    Ok(())
}

/// Two writers with separate caches push at the same moment: both land, one after the
/// other, nothing lost (over `file://`, where libgit2's own local push would lose one).
#[test]
fn two_racing_writers_both_land_over_file_url() -> TestResult {
    let server = GitServer::builder()
        .file(RELEASE, RELEASE_V1)
        .file("b.txt", "b0\n")
        .start()?;
    racing_writers(&server, &server.file_url())
}

/// The same race through git's smart HTTP server (its receive-pack does the compare-and-swap).
#[test]
fn two_racing_writers_both_land_over_http() -> TestResult {
    let server = GitServer::builder()
        .file(RELEASE, RELEASE_V1)
        .file("b.txt", "b0\n")
        .http()
        .start()?;
    let url = server.http_url().ok_or("http enabled")?;
    racing_writers(&server, &url)
}

fn racing_writers(server: &GitServer, url: &str) -> TestResult {
    let (cache_a, cache_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = open(server, url.to_owned(), GitAuth::Anonymous, cache_a.path())?;
    let b = open(server, url.to_owned(), GitAuth::Anonymous, cache_b.path())?;
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let make = |uid: &'static str, path: &'static str, text: &'static str| {
        let barrier = barrier.clone();
        let mut first = true;
        request(
            uid,
            vec![FileEdit::new(path, move |_| {
                if std::mem::take(&mut first) {
                    // Both have fetched the same head before either pushes.
                    barrier.wait();
                }
                Ok(EditResult::Replace(text.as_bytes().to_vec()))
            })],
        )
    };
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.commit_and_push_blocking(make("uid-a", RELEASE, "version: 9\n")));
        let tb = s.spawn(|| b.commit_and_push_blocking(make("uid-b", "b.txt", "b1\n")));
        (ta.join(), tb.join())
    });
    let (ra, rb) = (
        ra.map_err(|_| "writer a panicked")??,
        rb.map_err(|_| "writer b panicked")??,
    );
    let attempts = pushed(ra)?.1 + pushed(rb)?.1;
    assert_eq!(attempts, 3, "exactly one of them retried");
    let log = server.log()?;
    assert_eq!(log.len(), 3);
    assert_eq!(server.read_file(RELEASE)?.as_deref(), Some("version: 9\n"));
    assert_eq!(server.read_file("b.txt")?.as_deref(), Some("b1\n"));
    Ok(())
}

/// A crash between push and status write: the next instance (fresh process, fresh cache)
/// finds the commit by its UID trailer and does not commit again.
#[test]
fn finds_the_pushed_commit_after_a_crash() -> TestResult {
    let server = file_server()?;
    let first_cache = tempfile::tempdir()?;
    let first = open(
        &server,
        server.file_url(),
        GitAuth::Anonymous,
        first_cache.path(),
    )?;
    let (commit, _) =
        pushed(first.commit_and_push_blocking(request(
            "uid-crash",
            vec![set_version("1.1.0", counter())],
        ))?)?;
    drop(first);
    drop(first_cache);
    // Someone commits on top, so ours is no longer the head.
    server.push_commit(&[("README.md", "x\n")], "Unrelated")?;

    let cache = tempfile::tempdir()?;
    let again = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let found = again.find_commit_by_trailer_blocking(REQUEST_UID_TRAILER, "uid-crash", 50)?;
    assert_eq!(
        found.as_ref().map(|c| c.sha.as_str()),
        Some(commit.sha.as_str())
    );
    // Trailer keys compare case-insensitively, values exactly.
    assert!(
        again
            .find_commit_by_trailer_blocking("fluxgate-request-uid", "uid-crash", 50)?
            .is_some()
    );
    assert_eq!(
        again.find_commit_by_trailer_blocking(REQUEST_UID_TRAILER, "uid-cras", 50)?,
        None
    );
    assert_eq!(
        again.find_commit_by_trailer_blocking(REQUEST_UID_TRAILER, "uid-crash", 1)?,
        None,
        "depth bounds the search"
    );

    // Retrying the whole commit step is safe too: the edit is not even consulted.
    let calls = counter();
    let outcome = again.commit_and_push_blocking(request(
        "uid-crash",
        vec![set_version("1.2.0", calls.clone())],
    ))?;
    assert_eq!(
        outcome,
        CommitOutcome::AlreadyPushed {
            commit: found.ok_or("found above")?
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(server.log()?.len(), 3, "no duplicate commit");
    Ok(())
}

fn overwrite_files(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            n += overwrite_files(&path)?;
        } else {
            let mut perms = std::fs::metadata(&path)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&path, perms)?;
            std::fs::write(&path, b"garbage")?;
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn recovers_from_a_corrupt_cache() -> TestResult {
    let server = file_server()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    repo.head_blocking()?;

    // Every object and pack replaced by garbage.
    assert!(overwrite_files(&repo.cache_path().join("objects"))? > 0);
    assert_eq!(
        repo.read_file_blocking(RELEASE)?.contents.as_deref(),
        Some(RELEASE_V1.as_bytes())
    );

    // HEAD and refs garbage.
    std::fs::write(repo.cache_path().join("HEAD"), "garbage")?;
    overwrite_files(&repo.cache_path().join("refs"))?;
    pushed(
        repo.commit_and_push_blocking(request("uid-c", vec![set_version("1.1.0", counter())]))?,
    )?;

    // The cache path is not even a directory.
    std::fs::remove_dir_all(repo.cache_path())?;
    std::fs::write(repo.cache_path(), "not a repository")?;
    assert_eq!(repo.head_blocking()?, server.head()?);
    Ok(())
}

#[test]
fn clear_errors_for_bad_branches_paths_and_edits() -> TestResult {
    let server = file_server()?;
    let cache = tempfile::tempdir()?;
    let missing = Git2Repo::open(
        config(cache.path()),
        RemoteSpec {
            url: server.file_url(),
            branch: "no-such-branch".into(),
            auth: GitAuth::Anonymous,
        },
    )?;
    let err = missing.head_blocking().expect_err("branch is missing");
    assert_eq!(err.category(), "git_not_found", "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
    assert!(!err.is_retryable());

    let bad_branch = Git2Repo::open(
        config(cache.path()),
        RemoteSpec {
            url: server.file_url(),
            branch: "a..b".into(),
            auth: GitAuth::Anonymous,
        },
    )
    .expect_err("invalid branch name");
    assert_eq!(bad_branch.category(), "git_config");

    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    for path in ["../etc/passwd", "/abs", "apps/../x"] {
        let err = repo.read_file_blocking(path).expect_err("unsafe path");
        assert_eq!(err.category(), "git_invalid_path", "{path}: {err}");
    }
    let err = repo.read_file_blocking("apps").expect_err("a directory");
    assert!(err.to_string().contains("is a directory"), "{err}");

    let failing = FileEdit::new(RELEASE, |_| {
        Err("path .spec.chart.spec.version not found".into())
    });
    let err = repo
        .commit_and_push_blocking(request("uid-e", vec![failing]))
        .expect_err("edit fails");
    assert_eq!(err.category(), "git_edit");
    assert!(
        err.to_string().contains(RELEASE) && err.to_string().contains(".spec.chart.spec.version"),
        "{err}"
    );

    let over_a_file = FileEdit::new(format!("{RELEASE}/nested.yaml"), |_| {
        Ok(EditResult::Replace(b"x".to_vec()))
    });
    let err = repo
        .commit_and_push_blocking(request("uid-f", vec![over_a_file]))
        .expect_err("parent is a file");
    assert_eq!(err.category(), "git_invalid_path", "{err}");

    let bad_trailer = CommitRequest {
        trailers: vec![("Bad Key".into(), "v".into())],
        ..request("uid-g", vec![set_version("3.0.0", counter())])
    };
    let err = repo
        .commit_and_push_blocking(bad_trailer)
        .expect_err("bad trailer key");
    assert_eq!(err.category(), "git_config");
    assert_eq!(server.log()?.len(), 1, "nothing was pushed");
    Ok(())
}

/// Several files in one commit, including a new one in a new directory.
#[test]
fn one_commit_for_several_files() -> TestResult {
    let server = file_server()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let request = CommitRequest {
        message: "Several".into(),
        author: Author::new("Fluxgate", "fluxgate@example.com"),
        trailers: vec![],
        edits: vec![
            set_version("1.5.0", counter()),
            FileEdit::new("new/dir/notes.txt", |current| {
                assert!(current.is_none());
                Ok(EditResult::Replace(b"created\n".to_vec()))
            }),
            FileEdit::new("apps/other/kustomization.yaml", |_| {
                Ok(EditResult::Unchanged)
            }),
        ],
        idempotency: None,
        signing: None,
    };
    pushed(repo.commit_and_push_blocking(request)?)?;
    assert_eq!(server.log()?.len(), 2);
    assert_eq!(
        server.read_file("new/dir/notes.txt")?.as_deref(),
        Some("created\n")
    );
    assert!(
        server
            .read_file(RELEASE)?
            .is_some_and(|t| t.contains("1.5.0"))
    );
    Ok(())
}

/// The async trait, used as the workflow will: through `Arc<dyn GitRepo>` on a
/// single-threaded runtime (blocking work must not stall it).
#[tokio::test]
async fn async_trait_object_round_trip() -> TestResult {
    let server = GitServer::with_files("main", &[(RELEASE, RELEASE_V1)])?;
    let cache = tempfile::tempdir()?;
    let repo: Arc<dyn GitRepo> = Arc::new(open(
        &server,
        server.file_url(),
        GitAuth::Anonymous,
        cache.path(),
    )?);
    assert_eq!(repo.branch(), "main");
    assert_eq!(repo.head().await?, server.head()?);
    let before = repo.read_file(RELEASE).await?;
    let outcome = repo
        .commit_and_push(request("uid-async", vec![set_version("1.1.0", counter())]))
        .await?;
    let (commit, _) = pushed(outcome)?;
    assert_ne!(commit.sha, before.commit);
    let found = repo
        .find_commit_by_trailer(REQUEST_UID_TRAILER, "uid-async", 10)
        .await?;
    assert_eq!(found.map(|c| c.sha), Some(commit.sha));
    Ok(())
}

#[test]
fn reads_a_whole_directory_at_one_head() -> TestResult {
    let server = GitServer::builder()
        .file("apps/db/helmrelease.yaml", "kind: HelmRelease\n")
        .file("apps/db/ocirepository.yaml", "kind: OCIRepository\n")
        .file("apps/db/config/values.yaml", "a: 1\n")
        .file("README.md", "fleet\n")
        .start()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let dir = repo.read_directory_blocking("apps/db")?;
    assert_eq!(dir.commit, server.head()?);
    let names: Vec<&str> = dir.files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec!["helmrelease.yaml", "ocirepository.yaml"],
        "subdirectories are not files"
    );
    assert_eq!(dir.files["ocirepository.yaml"], b"kind: OCIRepository\n");
    assert!(
        repo.read_directory_blocking("")?
            .files
            .contains_key("README.md")
    );
    assert!(repo.read_directory_blocking("apps/none")?.files.is_empty());
    let err = repo
        .read_directory_blocking("apps/db/helmrelease.yaml")
        .unwrap_err();
    assert!(
        err.to_string().contains("is a file, not a directory"),
        "{err}"
    );
    assert!(repo.read_directory_blocking("../etc").is_err());
    Ok(())
}

#[test]
fn reads_a_whole_tree_at_one_head() -> TestResult {
    let server = GitServer::builder()
        .file("apps/db/helmrelease.yaml", "kind: HelmRelease\n")
        .file("apps/db/config/values.yaml", "a: 1\n")
        .file("apps/db/config/deep/more.yaml", "b: 2\n")
        .file("README.md", "fleet\n")
        .start()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let tree = repo.read_tree_blocking("apps/db")?;
    assert_eq!(tree.commit, server.head()?);
    let paths: Vec<&str> = tree.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        vec![
            "config/deep/more.yaml",
            "config/values.yaml",
            "helmrelease.yaml"
        ],
        "paths relative to the directory, however deep"
    );
    assert_eq!(repo.read_tree_blocking("")?.files.len(), 4);
    assert!(repo.read_tree_blocking("apps/none")?.files.is_empty());
    let err = repo
        .read_tree_blocking("apps/db/helmrelease.yaml")
        .unwrap_err();
    assert!(
        err.to_string().contains("is a file, not a directory"),
        "{err}"
    );
    assert!(repo.read_tree_blocking("../etc").is_err());
    Ok(())
}

#[test]
fn tells_whether_a_later_commit_includes_an_earlier_one() -> TestResult {
    let server = file_server()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let first = server.head()?;
    let ours = server.push_commit(&[("a.txt", "ours\n")], "Ours")?;
    let theirs = server.push_commit(&[("b.txt", "theirs\n")], "Theirs, pushed after ours")?;
    assert!(
        repo.contains_blocking(&theirs, &ours)?,
        "a later head includes ours"
    );
    assert!(repo.contains_blocking(&ours, &ours)?);
    assert!(
        !repo.contains_blocking(&first, &ours)?,
        "an older one does not"
    );
    assert!(
        !repo.contains_blocking(&"0".repeat(40), &ours)?,
        "an unknown commit does not"
    );
    assert!(!repo.contains_blocking("not-a-sha", &ours)?);
    Ok(())
}

/// A signed commit is what `git commit -S` with `gpg.format=ssh` makes: `git verify-commit`
/// (through ssh-keygen, with the key in an allowed-signers file) accepts it, and the commit
/// is otherwise the same as an unsigned one.
#[test]
fn signed_commits_verify_with_git_itself() -> TestResult {
    use ssh_key::private::Ed25519Keypair;
    let server = file_server()?;
    let cache = tempfile::tempdir()?;
    let repo = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    let key = ssh_key::PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
    let signing = fluxgate::git::SigningKey::from_private_key(key.clone());
    let mut signed = request("uid-signed", vec![set_version("1.1.0", counter())]);
    signed.signing = Some(signing);
    let CommitOutcome::Pushed { commit, .. } = repo.commit_and_push_blocking(signed)? else {
        panic!("not pushed");
    };
    let scratch = tempfile::tempdir()?;
    let signers = scratch.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("fluxgate@example.com {}\n", key.public_key().to_openssh()?),
    )?;
    let verify = |signers: &std::path::Path| {
        std::process::Command::new("git")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-C", &server.repo_path().to_string_lossy()])
            .args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
            .args(["verify-commit", "--raw", &commit.sha])
            .output()
    };
    let out = verify(&signers)?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Good \"git\" signature"), "{said}");
    // Another key does not verify it.
    let other = ssh_key::PrivateKey::from(Ed25519Keypair::from_seed(&[8; 32]));
    std::fs::write(
        &signers,
        format!(
            "fluxgate@example.com {}\n",
            other.public_key().to_openssh()?
        ),
    )?;
    assert!(!verify(&signers)?.status.success());
    assert_eq!(
        server.read_file(RELEASE)?.as_deref(),
        Some(&*RELEASE_V1.replace("1.0.0", "1.1.0"))
    );
    Ok(())
}

/// Asking for a push connection tells credentials that may push from read-only ones, as the
/// server refuses them: at the advertisement (GitHub, GitLab) or only at the push (Gitea for
/// a user with read permission), where the rejection then carries the server's words.
#[test]
fn push_access_tells_read_only_credentials_apart() -> TestResult {
    use fluxgate::git::PushAccess;
    use sim::git_server::WriteRefusal;
    let server = GitServer::builder()
        .file(RELEASE, RELEASE_V1)
        .http_credentials("writer", "w")
        .http_read_only_credentials("deploy", "r", WriteRefusal::AtAdvertisement)
        .http_read_only_credentials("reader", "r2", WriteRefusal::AtPush)
        .start()?;
    let url = server.http_url().expect("http");
    let basic = |user: &str, password: &str| GitAuth::Basic {
        username: user.into(),
        password: SecretString::new(password),
    };
    let cache = tempfile::tempdir()?;
    let writer = open(&server, url.clone(), basic("writer", "w"), cache.path())?;
    assert_eq!(writer.push_access_blocking()?, PushAccess::Offered);

    let deploy = open(&server, url.clone(), basic("deploy", "r"), cache.path())?;
    deploy.head_blocking()?;
    match deploy.push_access_blocking()? {
        PushAccess::Refused { detail } => assert!(detail.contains("403"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let anonymous = open(&server, url.clone(), GitAuth::Anonymous, cache.path())?;
    assert!(matches!(
        anonymous.push_access_blocking()?,
        PushAccess::Refused { .. }
    ));

    let reader = open(&server, url.clone(), basic("reader", "r2"), cache.path())?;
    assert_eq!(reader.push_access_blocking()?, PushAccess::Offered);
    let err = reader
        .commit_and_push_blocking(request("uid-reader", vec![set_version("1.1.0", counter())]))
        .expect_err("refused at push");
    assert_eq!(err.category(), "git_rejected", "{err}");
    assert!(
        err.to_string()
            .contains("User permission denied for writing"),
        "{err}"
    );
    let file = open(&server, server.file_url(), GitAuth::Anonymous, cache.path())?;
    assert_eq!(file.push_access_blocking()?, PushAccess::NotChecked);
    assert_eq!(server.log()?.len(), 1, "nothing pushed");
    Ok(())
}
