//! Credentials for a remote, read from Flux-style git Secret data, and the SSH host-key
//! check against the secret's `known_hosts`.

use base64::Engine as _;
use std::collections::BTreeMap;

/// A string that never shows itself in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself; only for handing it to libgit2.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// SSH credentials: a private key and the host keys we trust.
#[derive(Clone, Debug)]
pub struct SshAuth {
    /// The private key in PEM/OpenSSH format (Flux key `identity`).
    pub identity: SecretString,
    /// The matching public key (Flux key `identity.pub`); derived from the private key by
    /// libssh2 when absent.
    pub public_key: Option<String>,
    /// Passphrase of the key (Flux key `password` next to `identity`).
    pub passphrase: Option<SecretString>,
    /// Trusted host keys in OpenSSH `known_hosts` format (Flux key `known_hosts`).
    pub known_hosts: KnownHosts,
}

/// How to authenticate to a remote.
#[derive(Clone, Debug, Default)]
pub enum GitAuth {
    /// No credentials (public repositories, `file://`).
    #[default]
    Anonymous,
    /// HTTP(S) basic auth; with most hosts the password is an access token.
    Basic {
        username: String,
        password: SecretString,
    },
    /// SSH key authentication with host-key verification.
    Ssh(SshAuth),
}

/// Why secret data cannot be turned into credentials; never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(pub String);

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<Option<String>, AuthConfigError> {
    match data.get(key) {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes.clone())
            .map(|s| Some(s).filter(|s| !s.trim().is_empty()))
            .map_err(|_| AuthConfigError(format!("secret key `{key}` is not valid UTF-8"))),
    }
}

impl GitAuth {
    /// Reads Flux's git secret keys: `identity` (+ optional `password` as its passphrase)
    /// and `known_hosts` for SSH; else `username` + `password` for HTTPS; else anonymous.
    /// `data` is the Secret's decoded `data` map (what k8s-openapi gives).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<GitAuth, AuthConfigError> {
        let username = text(data, "username")?;
        let password = text(data, "password")?;
        if let Some(identity) = text(data, "identity")? {
            let known_hosts = text(data, "known_hosts")?.ok_or_else(|| {
                AuthConfigError(
                    "secret has `identity` but no `known_hosts`: host keys must be pinned; add \
                     the output of `ssh-keyscan HOST` as `known_hosts`"
                        .to_owned(),
                )
            })?;
            let known_hosts = KnownHosts::parse(&known_hosts)?;
            return Ok(GitAuth::Ssh(SshAuth {
                identity: SecretString::new(identity),
                public_key: text(data, "identity.pub")?,
                passphrase: password.map(SecretString::new),
                known_hosts,
            }));
        }
        if data.contains_key("bearerToken") && password.is_none() {
            return Err(AuthConfigError(
                "secret key `bearerToken` is not supported; put the token in `password` (with any \
                 `username`, e.g. `git`)"
                    .to_owned(),
            ));
        }
        match (username, password) {
            (Some(username), Some(password)) => Ok(GitAuth::Basic {
                username,
                password: SecretString::new(password),
            }),
            (None, None) => Ok(GitAuth::Anonymous),
            (Some(_), None) => Err(AuthConfigError(
                "secret has `username` but no `password` (token)".to_owned(),
            )),
            (None, Some(_)) => Err(AuthConfigError(
                "secret has `password` but no `username` (for a token, any username such as `git` \
                 works on most hosts)"
                    .to_owned(),
            )),
        }
    }

    /// Every secret value, so error messages can be scrubbed of them.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            GitAuth::Anonymous => Vec::new(),
            GitAuth::Basic { password, .. } => vec![password.expose().to_owned()],
            GitAuth::Ssh(ssh) => {
                let mut out = vec![ssh.identity.expose().to_owned()];
                out.extend(ssh.passphrase.iter().map(|p| p.expose().to_owned()));
                out
            }
        }
    }
}

/// One `known_hosts` line.
#[derive(Clone, Debug)]
struct HostEntry {
    revoked: bool,
    patterns: Vec<String>,
    key_type: String,
    key: Vec<u8>,
}

/// Trusted SSH host keys, parsed from OpenSSH `known_hosts` text. Supports plain host
/// patterns (`host`, `[host]:port`, `*`/`?` wildcards, `!negation`) and `@revoked`;
/// hashed entries (`|1|…`) and `@cert-authority` lines are skipped (see `check`).
#[derive(Clone, Debug, Default)]
pub struct KnownHosts {
    entries: Vec<HostEntry>,
    skipped_hashed: usize,
}

impl KnownHosts {
    /// Parses `known_hosts` text; fails when no usable line is left.
    pub fn parse(text: &str) -> Result<KnownHosts, AuthConfigError> {
        let mut out = KnownHosts::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => revoked = true,
                    // Host certificates are not something libgit2 hands us; skip.
                    _ => continue,
                }
                first = fields.next().unwrap_or_default();
            }
            if first.starts_with("|1|") {
                out.skipped_hashed += 1;
                continue;
            }
            let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
                return Err(AuthConfigError(format!(
                    "known_hosts line {} is not `hosts keytype key`",
                    n + 1
                )));
            };
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| {
                    AuthConfigError(format!("known_hosts line {}: key is not base64", n + 1))
                })?;
            out.entries.push(HostEntry {
                revoked,
                patterns: first.split(',').map(str::to_owned).collect(),
                key_type: key_type.to_owned(),
                key,
            });
        }
        if out.entries.is_empty() {
            let hint = if out.skipped_hashed > 0 {
                " (hashed `|1|` entries are not supported: use `ssh-keyscan` without -H)"
            } else {
                ""
            };
            return Err(AuthConfigError(format!(
                "known_hosts has no usable host key{hint}"
            )));
        }
        Ok(out)
    }

    /// Accepts `key` (the SSH wire-format public key blob) for `host:port` only when a
    /// non-revoked entry for that host has exactly this key. The error says why not.
    pub fn check(&self, host: &str, port: Option<u16>, key: &[u8]) -> Result<(), String> {
        let name = match port {
            None | Some(22) => host.to_owned(),
            Some(p) => format!("[{host}]:{p}"),
        };
        let for_host: Vec<&HostEntry> = self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, &name))
            .collect();
        if for_host.iter().any(|e| e.revoked && e.key == key) {
            return Err(format!("the host key of {name} is marked @revoked"));
        }
        if for_host.iter().any(|e| !e.revoked && e.key == key) {
            return Ok(());
        }
        if for_host.iter().any(|e| !e.revoked) {
            let types: Vec<&str> = for_host.iter().map(|e| e.key_type.as_str()).collect();
            return Err(format!(
                "the host key of {name} does NOT match known_hosts (known: {}); the key was \
                 rotated or someone is intercepting the connection",
                types.join(", ")
            ));
        }
        let hashed = if self.skipped_hashed > 0 {
            "; hashed known_hosts entries are not supported (use `ssh-keyscan` without -H)"
        } else {
            ""
        };
        Err(format!("{name} is not in known_hosts{hashed}"))
    }
}

/// OpenSSH pattern-list matching: any positive match and no negated match.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(pattern.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcards, ASCII case-insensitive (host names are).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => name
            .split_first()
            .is_some_and(|(n, tail)| n.eq_ignore_ascii_case(c) && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";

    fn key(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("test key is base64")
    }

    #[test]
    fn reads_flux_secret_shapes() {
        assert!(matches!(
            GitAuth::from_secret_data(&data(&[])),
            Ok(GitAuth::Anonymous)
        ));
        match GitAuth::from_secret_data(&data(&[("username", "git"), ("password", "tok")])) {
            Ok(GitAuth::Basic { username, password }) => {
                assert_eq!(username, "git");
                assert_eq!(password.expose(), "tok");
            }
            other => panic!("want basic auth, got {other:?}"),
        }
        let kh = format!("github.com ssh-ed25519 {KEY_A}\n");
        match GitAuth::from_secret_data(&data(&[
            ("identity", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"),
            ("identity.pub", "ssh-ed25519 AAAA test"),
            ("password", "phrase"),
            ("known_hosts", &kh),
        ])) {
            Ok(GitAuth::Ssh(ssh)) => {
                assert_eq!(ssh.public_key.as_deref(), Some("ssh-ed25519 AAAA test"));
                assert_eq!(
                    ssh.passphrase.as_ref().map(SecretString::expose),
                    Some("phrase")
                );
            }
            other => panic!("want ssh auth, got {other:?}"),
        }
    }

    #[test]
    fn refuses_incomplete_secrets_without_leaking_them() {
        let cases = [
            data(&[("identity", "PRIVATE-KEY-MATERIAL")]),
            data(&[("username", "git")]),
            data(&[("password", "hunter2-token")]),
            data(&[("bearerToken", "bearer-secret")]),
        ];
        for case in cases {
            let err = GitAuth::from_secret_data(&case).expect_err("incomplete secret");
            for secret in ["PRIVATE-KEY-MATERIAL", "hunter2-token", "bearer-secret"] {
                assert!(!err.to_string().contains(secret), "{err}");
            }
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let auth = GitAuth::Basic {
            username: "u".into(),
            password: SecretString::new("topsecret"),
        };
        assert!(!format!("{auth:?}").contains("topsecret"));
    }

    #[test]
    fn host_key_must_match_known_hosts() {
        let kh = KnownHosts::parse(&format!(
            "# comment\ngithub.com,140.82.112.3 ssh-ed25519 {KEY_A}\n\
             [git.example.com]:2222 ssh-ed25519 {KEY_B}\n\
             *.corp.example ssh-ed25519 {KEY_A}\n\
             |1|abc=|def= ssh-ed25519 {KEY_A}\n"
        ))
        .expect("parses");
        assert_eq!(kh.check("github.com", None, &key(KEY_A)), Ok(()));
        assert_eq!(kh.check("GitHub.com", Some(22), &key(KEY_A)), Ok(()));
        assert_eq!(kh.check("git.example.com", Some(2222), &key(KEY_B)), Ok(()));
        assert_eq!(kh.check("git.corp.example", None, &key(KEY_A)), Ok(()));
        let mismatch = kh
            .check("github.com", None, &key(KEY_B))
            .expect_err("wrong key");
        assert!(mismatch.contains("does NOT match"), "{mismatch}");
        let wrong_port = kh
            .check("git.example.com", None, &key(KEY_B))
            .expect_err("port 22 is a different entry");
        assert!(wrong_port.contains("not in known_hosts"), "{wrong_port}");
        let unknown = kh
            .check("evil.example", None, &key(KEY_A))
            .expect_err("unknown");
        assert!(
            unknown.contains("hashed"),
            "mentions skipped hashed entries: {unknown}"
        );
    }

    #[test]
    fn revoked_and_negated_entries_refuse() {
        let kh = KnownHosts::parse(&format!(
            "@revoked * ssh-ed25519 {KEY_B}\n*,!bad.example ssh-ed25519 {KEY_A}\n\
             *,!bad.example ssh-ed25519 {KEY_B}\n"
        ))
        .expect("parses");
        assert!(kh.check("any.example", None, &key(KEY_B)).is_err());
        assert_eq!(kh.check("any.example", None, &key(KEY_A)), Ok(()));
        assert!(kh.check("bad.example", None, &key(KEY_A)).is_err());
    }

    #[test]
    fn rejects_unusable_known_hosts() {
        assert!(KnownHosts::parse("").is_err());
        assert!(KnownHosts::parse("host ssh-ed25519").is_err());
        assert!(KnownHosts::parse("host ssh-ed25519 !!notbase64").is_err());
        let hashed =
            KnownHosts::parse(&format!("|1|a=|b= ssh-ed25519 {KEY_A}")).expect_err("only hashed");
        assert!(hashed.0.contains("-H"), "{hashed}");
    }
}
