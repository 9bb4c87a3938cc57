//! Remote URLs: just enough parsing to redact credentials, name the SSH host for host-key
//! checks, and derive a web link to a commit.

/// How a remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Https,
    Http,
    Ssh,
    File,
}

/// A parsed remote URL. Keeps the original for libgit2 (it may carry credentials) and a
/// redacted form for everything a human can see.
#[derive(Clone)]
pub(crate) struct RemoteUrl {
    pub raw: String,
    pub redacted: String,
    pub transport: Transport,
    /// Username embedded in the URL (`ssh://git@host`, `https://user@host`).
    pub user: Option<String>,
    /// Password embedded in the URL (`https://user:token@host`): a secret.
    pub password: Option<String>,
    /// Host without brackets or port; `None` for local paths.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Path on the host, without a leading `/` or `:`.
    pub path: String,
}

impl std::fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Replaces credentials in a URL by `***`: `https://user:token@host/x` → `https://***@host/x`.
/// A bare SSH username (`ssh://git@host`, `git@host:org/repo`) is not a secret and is kept;
/// any userinfo of an HTTP(S) URL is removed because tokens are often passed as usernames.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let keep = scheme.eq_ignore_ascii_case("ssh") && !userinfo.contains(':');
    if keep {
        return url.to_owned();
    }
    format!("{scheme}://***@{}{tail}", &authority[at + 1..])
}

impl RemoteUrl {
    /// Parses `scheme://[user[:password]@]host[:port]/path`, scp-like `user@host:path`, or a
    /// local path. `None` when the URL is unusable.
    pub fn parse(url: &str) -> Option<RemoteUrl> {
        let url = url.trim();
        if url.is_empty() || url.contains(['\n', '\r', '\0']) {
            return None;
        }
        let redacted = redact_url(url);
        if let Some((scheme, rest)) = url.split_once("://") {
            let transport = match scheme.to_ascii_lowercase().as_str() {
                "https" => Transport::Https,
                "http" => Transport::Http,
                "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                "file" => {
                    return Some(RemoteUrl {
                        raw: url.to_owned(),
                        redacted,
                        transport: Transport::File,
                        user: None,
                        password: None,
                        host: None,
                        port: None,
                        path: rest.to_owned(),
                    });
                }
                _ => return None,
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let (userinfo, hostport) = match authority.rfind('@') {
                Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
                None => (None, authority),
            };
            let (user, password) = match userinfo {
                Some(info) => match info.split_once(':') {
                    Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                    None => (Some(info.to_owned()), None),
                },
                None => (None, None),
            };
            let (host, port) = split_host_port(hostport)?;
            Some(RemoteUrl {
                raw: url.to_owned(),
                redacted,
                transport,
                user: user.filter(|u| !u.is_empty()),
                password: password.filter(|p| !p.is_empty()),
                host: Some(host),
                port,
                path: path.trim_start_matches('/').to_owned(),
            })
        } else if let Some((left, path)) = url.split_once(':')
            && !left.contains('/')
            && !path.starts_with("//")
        {
            // scp-like syntax: [user@]host:path
            let (user, host) = match left.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_owned()), h),
                None => (None, left),
            };
            if host.is_empty() {
                return None;
            }
            Some(RemoteUrl {
                raw: url.to_owned(),
                redacted,
                transport: Transport::Ssh,
                user: user.filter(|u| !u.is_empty()),
                password: None,
                host: Some(host.to_owned()),
                port: None,
                path: path.trim_start_matches('/').to_owned(),
            })
        } else if url.starts_with('/') {
            Some(RemoteUrl {
                raw: url.to_owned(),
                redacted,
                transport: Transport::File,
                user: None,
                password: None,
                host: None,
                port: None,
                path: url.to_owned(),
            })
        } else {
            None
        }
    }

    /// The URL with any userinfo removed: the identity of the repository, used to name its
    /// cache directory (so two spellings with different tokens share one cache).
    pub fn without_userinfo(&self) -> String {
        match (self.transport, &self.host) {
            (Transport::File, _) | (_, None) => self.raw.clone(),
            (transport, Some(host)) => {
                let scheme = match transport {
                    Transport::Https => "https",
                    Transport::Http => "http",
                    _ => "ssh",
                };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match self.port {
                    Some(port) => format!("{scheme}://{host}:{port}/{}", self.path),
                    None => format!("{scheme}://{host}/{}", self.path),
                }
            }
        }
    }

    /// A browser link to `sha` on the hosting service, when the host is known well enough:
    /// GitLab uses `/-/commit/`, Bitbucket `/commits/`, GitHub, Gitea, Forgejo, Codeberg and
    /// Azure DevOps `/commit/`. `None` for local repositories.
    pub fn commit_web_url(&self, sha: &str) -> Option<String> {
        let host = self.host.as_deref()?;
        if host.starts_with("ssh.dev.azure.com") || host.starts_with("vs-ssh.") {
            // Azure's SSH paths (v3/org/project/repo) do not map to web paths one to one.
            return None;
        }
        let base_path = self.path.trim_end_matches('/').trim_end_matches(".git");
        if base_path.is_empty() {
            return None;
        }
        let (scheme, port) = match self.transport {
            Transport::Https => ("https", self.port),
            Transport::Http => ("http", self.port),
            // The web UI is not served on the SSH port.
            Transport::Ssh => ("https", None),
            Transport::File => return None,
        };
        let authority = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let lower = host.to_ascii_lowercase();
        let commit_path = if lower.contains("gitlab") {
            "-/commit"
        } else if lower == "bitbucket.org" {
            "commits"
        } else {
            "commit"
        };
        Some(format!(
            "{scheme}://{authority}/{base_path}/{commit_path}/{sha}"
        ))
    }
}

fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => (h, Some(p.parse().ok()?)),
        Some((h, _)) => (h, None),
        None => (hostport, None),
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_with_secrets() {
        let cases = [
            (
                "https://user:tok3n@github.com/o/r.git",
                "https://***@github.com/o/r.git",
            ),
            (
                "https://ghp_abc@github.com/o/r",
                "https://***@github.com/o/r",
            ),
            (
                "http://u:p@127.0.0.1:8080/r.git",
                "http://***@127.0.0.1:8080/r.git",
            ),
            (
                "ssh://git@github.com/o/r.git",
                "ssh://git@github.com/o/r.git",
            ),
            ("ssh://git:pw@host/r", "ssh://***@host/r"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("https://github.com/o/r", "https://github.com/o/r"),
            // An `@` in the path is not userinfo.
            ("https://host/o/r@v1", "https://host/o/r@v1"),
            ("file:///tmp/x.git", "file:///tmp/x.git"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_url(input), want, "{input}");
        }
    }

    #[test]
    fn parses_the_url_shapes_git_accepts() {
        let u = RemoteUrl::parse("https://u:t@git.example.com:8443/org/repo.git").expect("url");
        assert_eq!(u.transport, Transport::Https);
        assert_eq!(u.user.as_deref(), Some("u"));
        assert_eq!(u.password.as_deref(), Some("t"));
        assert_eq!(u.host.as_deref(), Some("git.example.com"));
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path, "org/repo.git");
        assert_eq!(
            u.without_userinfo(),
            "https://git.example.com:8443/org/repo.git"
        );

        let u = RemoteUrl::parse("git@github.com:org/fleet.git").expect("scp-like");
        assert_eq!(u.transport, Transport::Ssh);
        assert_eq!(u.user.as_deref(), Some("git"));
        assert_eq!(u.host.as_deref(), Some("github.com"));
        assert_eq!(u.port, None);

        let u = RemoteUrl::parse("ssh://git@[::1]:2222/r.git").expect("ipv6");
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(2222));

        assert_eq!(
            RemoteUrl::parse("file:///srv/r.git").map(|u| u.transport),
            Some(Transport::File)
        );
        assert_eq!(
            RemoteUrl::parse("/srv/r.git").map(|u| u.transport),
            Some(Transport::File)
        );
        for bad in [
            "",
            "ftp://x/y",
            "https://host:notaport/x",
            "relative/path",
            "a\nb",
        ] {
            assert!(RemoteUrl::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn derives_commit_links_per_host() {
        let link = |url: &str| RemoteUrl::parse(url).and_then(|u| u.commit_web_url("abc"));
        assert_eq!(
            link("https://x:y@github.com/o/r.git").as_deref(),
            Some("https://github.com/o/r/commit/abc")
        );
        assert_eq!(
            link("git@gitlab.com:g/sub/r.git").as_deref(),
            Some("https://gitlab.com/g/sub/r/-/commit/abc")
        );
        assert_eq!(
            link("ssh://git@bitbucket.org:22/o/r.git").as_deref(),
            Some("https://bitbucket.org/o/r/commits/abc")
        );
        assert_eq!(
            link("https://codeberg.org/o/r").as_deref(),
            Some("https://codeberg.org/o/r/commit/abc")
        );
        assert_eq!(link("file:///srv/r.git"), None);
        assert_eq!(link("git@ssh.dev.azure.com:v3/o/p/r"), None);
    }
}
