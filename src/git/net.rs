//! Network callbacks for one fetch or push: credentials (bounded, so bad ones fail fast),
//! the SSH host-key check, the operation deadline, push rejections — and the translation of
//! libgit2's errors into [`GitError`] using what the callbacks saw.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use git2::{CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, RemoteCallbacks};

use super::auth::GitAuth;
use super::error::GitError;
use super::repo::Inner;

/// Callback state for one network operation: credentials (bounded), host-key check,
/// deadline, and what went wrong, so errors can be classified precisely afterwards.
pub(super) struct Net<'a> {
    inner: &'a Inner,
    deadline: Instant,
    timed_out: Cell<bool>,
    auth_failure: RefCell<Option<String>>,
    host_key_failure: RefCell<Option<String>>,
    password_calls: Cell<u32>,
    key_calls: Cell<u32>,
    username_calls: Cell<u32>,
    pub(super) push_rejection: RefCell<Option<String>>,
    /// What the server printed on the sideband (`remote: …` lines), bounded.
    remote_messages: RefCell<String>,
}

/// How much of the server's `remote:` output is kept for error messages.
const REMOTE_MESSAGES_MAX: usize = 2048;

pub(super) enum Failure {
    Timeout,
    HostKey(String),
    Auth(String),
}

impl<'a> Net<'a> {
    pub(super) fn new(inner: &'a Inner, deadline: Instant) -> Self {
        Net {
            inner,
            deadline,
            timed_out: Cell::new(false),
            auth_failure: RefCell::new(None),
            host_key_failure: RefCell::new(None),
            password_calls: Cell::new(0),
            key_calls: Cell::new(0),
            username_calls: Cell::new(0),
            push_rejection: RefCell::new(None),
            remote_messages: RefCell::new(String::new()),
        }
    }

    fn expired(&self) -> bool {
        let expired = Instant::now() >= self.deadline;
        if expired {
            self.timed_out.set(true);
        }
        expired
    }

    fn fail_auth(&self, why: &str) -> git2::Error {
        *self.auth_failure.borrow_mut() = Some(why.to_owned());
        git2::Error::from_str(why)
    }

    pub(super) fn failure(&self) -> Option<Failure> {
        if self.timed_out.get() {
            return Some(Failure::Timeout);
        }
        if let Some(d) = self.host_key_failure.borrow().clone() {
            return Some(Failure::HostKey(d));
        }
        self.auth_failure.borrow().clone().map(Failure::Auth)
    }

    /// Credentials for libgit2, which asks again after every rejection: a second request for
    /// the same kind of credential means the first was refused, so we stop there.
    fn credentials(
        &self,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        if self.expired() {
            return Err(git2::Error::from_str("operation deadline passed"));
        }
        let bump = |c: &Cell<u32>| {
            c.set(c.get() + 1);
            c.get()
        };
        match &self.inner.auth {
            // libgit2 tries credentials embedded in the URL before asking us.
            GitAuth::Anonymous if self.inner.url.password.is_some() => Err(self.fail_auth(
                "the server rejected the credentials embedded in the URL; move them to a \
                 secret (git.secretRef) with a valid token",
            )),
            GitAuth::Anonymous => Err(self.fail_auth(
                "the server requires credentials but none are configured (set git.secretRef)",
            )),
            GitAuth::Basic { username, password } => {
                if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return Err(self.fail_auth("the server does not accept username/password"));
                }
                if bump(&self.password_calls) > 1 {
                    return Err(self.fail_auth("the server rejected the username/password (token)"));
                }
                Cred::userpass_plaintext(username, password.expose())
            }
            GitAuth::Ssh(ssh) => {
                let user = username_from_url
                    .or(self.inner.url.user.as_deref())
                    .unwrap_or("git");
                if allowed.contains(CredentialType::USERNAME) {
                    if bump(&self.username_calls) > 2 {
                        return Err(self.fail_auth("the server rejected the SSH username"));
                    }
                    return Cred::username(user);
                }
                if !allowed.contains(CredentialType::SSH_KEY)
                    && !allowed.contains(CredentialType::SSH_MEMORY)
                {
                    return Err(self.fail_auth("the server does not accept SSH key authentication"));
                }
                if bump(&self.key_calls) > 1 {
                    return Err(self.fail_auth(&format!(
                        "the server rejected the SSH key for user {user:?} (or its passphrase is wrong)"
                    )));
                }
                Cred::ssh_key_from_memory(
                    user,
                    ssh.public_key.as_deref(),
                    ssh.identity.expose(),
                    ssh.passphrase.as_ref().map(|p| p.expose()),
                )
                .map_err(|_| {
                    self.fail_auth(
                        "the SSH identity cannot be loaded (bad key or wrong passphrase)",
                    )
                })
            }
        }
    }

    fn certificate_check(
        &self,
        cert: &git2::cert::Cert<'_>,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2's own verification against the system trust store applies.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let reject = |why: String| {
            let err = git2::Error::from_str(&why);
            *self.host_key_failure.borrow_mut() = Some(why);
            Err(err)
        };
        let GitAuth::Ssh(ssh) = &self.inner.auth else {
            return reject("no known_hosts configured for an SSH remote".to_owned());
        };
        let (Some(host), Some(key)) = (self.inner.url.host.as_deref(), hostkey.hostkey()) else {
            return reject("the server's host key could not be read".to_owned());
        };
        match ssh.known_hosts.check(host, self.inner.url.port, key) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(why) => reject(why),
        }
    }

    pub(super) fn callbacks(&'a self) -> RemoteCallbacks<'a> {
        let mut cbs = RemoteCallbacks::new();
        cbs.credentials(move |_url, user, allowed| self.credentials(user, allowed));
        cbs.certificate_check(move |cert, _host| self.certificate_check(cert));
        cbs.transfer_progress(move |_| !self.expired());
        cbs.sideband_progress(move |data| {
            let mut kept = self.remote_messages.borrow_mut();
            let room = REMOTE_MESSAGES_MAX.saturating_sub(kept.len());
            let text = String::from_utf8_lossy(&data[..data.len().min(room)]);
            kept.push_str(&text);
            !self.expired()
        });
        cbs.push_negotiation(move |_| {
            if self.expired() {
                Err(git2::Error::from_str("operation deadline passed"))
            } else {
                Ok(())
            }
        });
        cbs.push_update_reference(move |_refname, status| {
            if let Some(status) = status {
                *self.push_rejection.borrow_mut() = Some(status.to_owned());
            }
            Ok(())
        });
        cbs
    }

    /// The server's `remote:` lines, one sentence, secrets removed; `None` when it said
    /// nothing (progress counters such as "Resolving deltas" are left out).
    pub(super) fn remote_messages(&self) -> Option<String> {
        let kept = self.remote_messages.borrow();
        let lines: Vec<&str> = kept
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains('%'))
            .collect();
        (!lines.is_empty()).then(|| self.inner.scrub(&lines.join(" ")))
    }

    /// Whether a failed push connection ([`super::GitRepo::push_access`]) means the server
    /// refused these credentials a push, and what it said. `None` for anything else
    /// (network, timeout, host key), which [`Net::error`] then describes.
    pub(super) fn push_refusal(&self, err: &git2::Error) -> Option<String> {
        match self.failure() {
            Some(Failure::Auth(why)) => Some(self.inner.scrub(&why)),
            Some(Failure::Timeout | Failure::HostKey(_)) => None,
            None => push_refusal_message(err.code(), err.class(), err.message())
                .map(|said| self.inner.scrub(&said)),
        }
    }

    /// Turns a libgit2 error of a network operation into a [`GitError`].
    pub(super) fn error(&self, err: &git2::Error, operation: &'static str) -> GitError {
        let inner = self.inner;
        let remote = inner.remote();
        let branch = inner.branch.clone();
        let detail = inner.scrub(err.message());
        match self.failure() {
            Some(Failure::Timeout) => return inner.timeout(operation),
            Some(Failure::HostKey(detail)) => return GitError::HostKey { remote, detail },
            Some(Failure::Auth(why)) => {
                return GitError::Auth {
                    remote,
                    detail: inner.scrub(&why),
                };
            }
            None => {}
        }
        // Classify on libgit2's own words: scrubbing may have replaced parts of them.
        let lower = err.message().to_ascii_lowercase();
        if err.code() == ErrorCode::Auth
            || lower.contains("status code: 401")
            || lower.contains("status code: 403")
            || lower.contains("authentication")
        {
            return GitError::Auth { remote, detail };
        }
        if err.code() == ErrorCode::Timeout || lower.contains("timed out") {
            return GitError::Timeout {
                remote,
                branch,
                operation,
                timeout: inner.config.io_timeout,
            };
        }
        match err.class() {
            ErrorClass::Odb
            | ErrorClass::Zlib
            | ErrorClass::Object
            | ErrorClass::Repository
            | ErrorClass::Reference
            | ErrorClass::Tree
            | ErrorClass::Index => inner.corrupt(err),
            _ if err.code() == ErrorCode::NotFound && lower.contains("repository") => {
                GitError::Network {
                    remote,
                    branch,
                    detail: format!("{detail} (is the URL right?)"),
                }
            }
            _ => GitError::Network {
                remote,
                branch,
                detail,
            },
        }
    }
}

/// libgit2's words for a refused push connection: HTTP 401/403 on the receive-pack
/// advertisement (GitHub and GitLab answer read-only tokens and deploy keys so; Gitea a token
/// without write scope), or an SSH server's refusal to run `git-receive-pack` — GitHub's
/// "The key you are authenticating with has been marked as read only", GitLab's "This deploy
/// key does not have write access" — which libgit2's SSH transport reports as the server's
/// stderr with code EOF.
fn push_refusal_message(code: ErrorCode, class: ErrorClass, message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let http_refused = lower.contains("status code: 401") || lower.contains("status code: 403");
    let ssh_refused = class == ErrorClass::Ssh && code == ErrorCode::Eof;
    (http_refused || ssh_refused || code == ErrorCode::Auth).then(|| message.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::{Git2Repo, GitConfig, KnownHosts, RemoteSpec, SecretString, SshAuth};
    use std::time::Duration;

    const KNOWN_HOSTS: &str = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn repo(url: &str, auth: GitAuth) -> (tempfile::TempDir, Git2Repo) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Git2Repo::open(
            GitConfig::new(tmp.path()),
            RemoteSpec {
                url: url.to_owned(),
                branch: "main".to_owned(),
                auth,
            },
        )
        .expect("valid remote");
        (tmp, repo)
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn ssh_key_is_offered_once_then_refused() {
        let auth = GitAuth::Ssh(SshAuth {
            identity: SecretString::new("-----BEGIN OPENSSH PRIVATE KEY-----\nkey\n"),
            public_key: None,
            passphrase: Some(SecretString::new("passphrase-secret")),
            known_hosts: KnownHosts::parse(KNOWN_HOSTS).expect("known_hosts"),
        });
        let (_tmp, repo) = repo("ssh://github.com/o/r.git", auth);
        let net = Net::new(repo.inner(), later());
        assert!(net.credentials(None, CredentialType::USERNAME).is_ok());
        assert!(
            net.credentials(Some("git"), CredentialType::SSH_KEY)
                .is_ok()
        );
        assert!(net.failure().is_none());
        assert!(
            net.credentials(Some("git"), CredentialType::SSH_KEY)
                .is_err()
        );
        let err = net.error(&git2::Error::from_str("callback error"), "fetch");
        assert_eq!(err.category(), "git_auth", "{err}");
        assert!(err.to_string().contains("rejected the SSH key"), "{err}");
        assert!(!format!("{err} {err:?}").contains("passphrase-secret"));
    }

    #[test]
    fn password_is_offered_once_then_refused() {
        let auth = GitAuth::Basic {
            username: "u".into(),
            password: SecretString::new("tok"),
        };
        let (_tmp, repo) = repo("https://example.com/o/r.git", auth);
        let net = Net::new(repo.inner(), later());
        assert!(
            net.credentials(None, CredentialType::SSH_KEY).is_err(),
            "wrong kind asked for"
        );
        let net = Net::new(repo.inner(), later());
        assert!(
            net.credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                .is_ok()
        );
        assert!(
            net.credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                .is_err()
        );
        assert!(matches!(net.failure(), Some(Failure::Auth(why)) if why.contains("rejected")));
    }

    #[test]
    fn refused_push_connections_are_told_apart_from_trouble() {
        use git2::{ErrorClass as C, ErrorCode as E};
        let refused = |code, class, msg: &str| push_refusal_message(code, class, msg);
        assert!(refused(E::GenericError, C::Http, "unexpected http status code: 403").is_some());
        assert!(refused(E::GenericError, C::Http, "unexpected http status code: 401").is_some());
        let said = refused(
            E::Eof,
            C::Ssh,
            "ERROR: The key you are authenticating with has been marked as read only.\n",
        );
        assert_eq!(
            said.as_deref(),
            Some("ERROR: The key you are authenticating with has been marked as read only.")
        );
        assert!(
            refused(
                E::GenericError,
                C::Net,
                "failed to connect: Connection refused"
            )
            .is_none()
        );
        assert!(refused(E::Timeout, C::Net, "timed out").is_none());
        assert!(refused(E::GenericError, C::Http, "unexpected http status code: 500").is_none());

        // A callback that refused the credentials a second time is a refusal too.
        let auth = GitAuth::Basic {
            username: "u".into(),
            password: SecretString::new("tok"),
        };
        let (_tmp, repo) = repo("https://example.com/o/r.git", auth);
        let net = Net::new(repo.inner(), later());
        let _ = net.credentials(None, CredentialType::USER_PASS_PLAINTEXT);
        let _ = net.credentials(None, CredentialType::USER_PASS_PLAINTEXT);
        let detail = net
            .push_refusal(&git2::Error::from_str("callback error"))
            .expect("refused");
        assert!(detail.contains("rejected"), "{detail}");
        let net = Net::new(repo.inner(), Instant::now());
        let _ = net.credentials(None, CredentialType::USER_PASS_PLAINTEXT);
        assert!(
            net.push_refusal(&git2::Error::from_str("aborted"))
                .is_none(),
            "a timeout"
        );
    }

    #[test]
    fn a_passed_deadline_is_a_timeout() {
        let (_tmp, repo) = repo("https://example.com/o/r.git", GitAuth::Anonymous);
        let net = Net::new(repo.inner(), Instant::now());
        assert!(
            net.credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                .is_err()
        );
        let err = net.error(&git2::Error::from_str("aborted"), "push");
        assert_eq!(err.category(), "git_timeout", "{err}");
    }

    #[test]
    fn libgit2_errors_are_classified() {
        let (_tmp, repo) = repo("https://u:sekrit@example.com/o/r.git", GitAuth::Anonymous);
        let net = Net::new(repo.inner(), later());
        let classify = |code, class, msg: &str| {
            net.error(&git2::Error::new(code, class, msg), "fetch")
                .category()
        };
        use git2::{ErrorClass as C, ErrorCode as E};
        assert_eq!(
            classify(E::GenericError, C::Http, "unexpected http status code: 401"),
            "git_auth"
        );
        assert_eq!(
            classify(
                E::Auth,
                C::Http,
                "too many redirects or authentication replays"
            ),
            "git_auth"
        );
        assert_eq!(
            classify(
                E::GenericError,
                C::Net,
                "failed to connect: Connection refused"
            ),
            "git_network"
        );
        assert_eq!(
            classify(E::Timeout, C::Net, "read timed out"),
            "git_timeout"
        );
        assert_eq!(
            classify(E::GenericError, C::Odb, "object not found"),
            "git_corrupt"
        );
        let err = net.error(
            &git2::Error::new(
                E::GenericError,
                C::Net,
                "cannot reach https://u:sekrit@example.com/o/r.git",
            ),
            "fetch",
        );
        assert!(!err.to_string().contains("sekrit"), "{err}");
    }
}
