//! Container image references (`registry:port/path/name:tag@sha256:…`), split so that a
//! `format: image` field can have its tag and digest replaced while the rest stays as written.

use std::fmt;

/// An image reference split into the part before the tag, the tag and the digest.
///
/// Parsing only splits; writing it back gives the original text exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry (with port) and repository path, e.g. `ghcr.io/stefanprodan/podinfo`.
    pub name: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:0123…`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Splits a reference such as `localhost:5000/app:1.2.3@sha256:…`. The reason on error
    /// is a phrase for a message.
    pub fn parse(reference: &str) -> Result<Self, String> {
        if reference.is_empty() {
            return Err("it is empty".to_owned());
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("it contains whitespace".to_owned());
        }
        let (rest, digest) = split_digest(reference)?;
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                let tag = &rest[colon + 1..];
                check_tag(tag)?;
                (&rest[..colon], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(format!("`{name}` is not a repository name"));
        }
        Ok(Self {
            name: name.to_owned(),
            tag,
            digest,
        })
    }

    /// The version this reference pins: the tag, with `@digest` when there is one.
    pub fn version(&self) -> Option<String> {
        let tag = self.tag.as_deref()?;
        Some(match &self.digest {
            Some(digest) => format!("{tag}@{digest}"),
            None => tag.to_owned(),
        })
    }

    /// The same image at `version` (`TAG` or `TAG@sha256:…`): the tag is replaced, and the
    /// digest too when the version carries one.
    ///
    /// A reference that pins a digest needs a new digest too; keeping the old one would keep
    /// running the old image. `Err(None)` reports that; `Err(Some(reason))` a malformed version.
    pub fn with_version(&self, version: &str) -> Result<Self, Option<String>> {
        let (tag, digest) = split_digest(version).map_err(Some)?;
        check_tag(tag).map_err(Some)?;
        if self.digest.is_some() && digest.is_none() {
            return Err(None);
        }
        Ok(Self {
            name: self.name.clone(),
            tag: Some(tag.to_owned()),
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `text@algo:hex` into `text` and the checked digest.
pub(crate) fn split_digest(text: &str) -> Result<(&str, Option<String>), String> {
    let Some((rest, digest)) = text.split_once('@') else {
        return Ok((text, None));
    };
    let valid = digest.split_once(':').is_some_and(|(algorithm, encoded)| {
        !algorithm.is_empty()
            && algorithm
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
            && encoded.len() >= 32
            && encoded
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=_-".contains(c))
            && (algorithm != "sha256"
                || (encoded.len() == 64 && encoded.chars().all(|c| c.is_ascii_hexdigit())))
    });
    if !valid {
        return Err(format!(
            "`{digest}` is not a digest (expected `sha256:` and 64 hex digits)"
        ));
    }
    Ok((rest, Some(digest.to_owned())))
}

/// Tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (the OCI distribution rule).
fn check_tag(tag: &str) -> Result<(), String> {
    let valid = (1..=128).contains(&tag.len())
        && tag.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'))
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a valid tag (letters, digits, `_`, `.`, `-`; at most 128)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(reference: &str) -> (String, Option<String>, Option<String>) {
        match ImageRef::parse(reference) {
            Ok(image) => {
                assert_eq!(image.to_string(), reference, "round trip");
                (image.name, image.tag, image.digest)
            }
            Err(err) => panic!("`{reference}` should parse: {err}"),
        }
    }

    #[test]
    fn splits_references_and_round_trips() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(parts("nginx"), ("nginx".to_owned(), None, None));
        assert_eq!(
            parts("nginx:1.27"),
            ("nginx".to_owned(), some("1.27"), None)
        );
        assert_eq!(
            parts("ghcr.io/stefanprodan/podinfo:6.5.0"),
            (
                "ghcr.io/stefanprodan/podinfo".to_owned(),
                some("6.5.0"),
                None
            )
        );
        assert_eq!(
            parts("localhost:5000/team/app"),
            ("localhost:5000/team/app".to_owned(), None, None)
        );
        assert_eq!(
            parts("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app".to_owned(), some("v2"), None)
        );
        let pinned = format!("docker.io/library/postgres:16.2-alpine@{DIGEST}");
        assert_eq!(
            parts(&pinned),
            (
                "docker.io/library/postgres".to_owned(),
                some("16.2-alpine"),
                some(DIGEST)
            )
        );
        let digest_only = format!("app@{DIGEST}");
        assert_eq!(parts(&digest_only), ("app".to_owned(), None, some(DIGEST)));
    }

    #[test]
    fn refuses_non_references() {
        for bad in [
            "",
            "a b",
            "app:",
            "app:-x",
            "app:1.0@sha256:short",
            "app@md5",
            "/app:1",
            "reg//app:1",
            "app:has/slash:1/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "`{bad}` should not parse");
        }
    }

    #[test]
    fn replaces_tag_and_digest_together() {
        let image = ImageRef::parse("registry:5000/app:1.0").expect("valid");
        let updated = image.with_version("1.1").map(|i| i.to_string());
        assert_eq!(updated, Ok("registry:5000/app:1.1".to_owned()));

        let pinned = ImageRef::parse(&format!("app:1.0@{DIGEST}")).expect("valid");
        let new_digest = DIGEST.replace('0', "f");
        let updated = pinned
            .with_version(&format!("1.1@{new_digest}"))
            .map(|i| i.to_string());
        assert_eq!(updated, Ok(format!("app:1.1@{new_digest}")));
        assert_eq!(pinned.with_version("1.1"), Err(None));
        assert!(matches!(pinned.with_version("bad tag"), Err(Some(_))));
        assert_eq!(pinned.version(), Some(format!("1.0@{DIGEST}")));
    }
}
