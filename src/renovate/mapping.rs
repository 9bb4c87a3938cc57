//! Which Renovate findings belong to which of a ManagedApp's version fields: same file,
//! same current value under the manifest module's normalisation, same package when known.

use super::model::{Finding, normalize_repo_path};
use crate::manifest::versions_equal;
use std::collections::BTreeMap;

pub use crate::manifest::fields::ResolvedField;

pub(crate) use crate::manifest::fields::digest_of;

/// Which repository and branch an app's Git location is, to ignore findings for others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The app's repository: Renovate's `owner/repo` or a clone URL; `None` accepts all.
    pub repository: Option<String>,
    /// The app's branch; findings for another base branch are ignored.
    pub branch: Option<String>,
}

/// Findings per field name; for every field with none, why; and near misses worth telling
/// a person debugging a setup ("Renovate saw this file, but at another value").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    pub matches: BTreeMap<String, Vec<Finding>>,
    /// Field name → why no finding is this field's.
    pub unmatched: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

/// Matches findings to fields. A finding is a field's when it is in the field's file, in
/// the app's repository and branch (where Renovate names them), at the field's current
/// value and of the field's package (when known). A field may match several findings (one
/// per manager or repository it came through); a finding matching no field is simply not
/// this app's.
pub fn map_findings(fields: &[ResolvedField], findings: &[Finding], scope: &Scope) -> Mapping {
    let mut mapping = Mapping::default();
    for field in fields {
        let file = match normalize_repo_path(&field.file) {
            Ok(file) => file,
            Err(reason) => {
                mapping.unmatched.insert(field.name.clone(), reason);
                continue;
            }
        };
        let current = match field.current_version() {
            Ok(current) => current,
            Err(reason) => {
                mapping.unmatched.insert(field.name.clone(), reason);
                continue;
            }
        };
        let in_file: Vec<&Finding> = findings.iter().filter(|f| f.package_file == file).collect();
        let in_scope: Vec<&Finding> = in_file
            .iter()
            .copied()
            .filter(|f| out_of_scope(f, scope).is_none())
            .collect();
        let at_current: Vec<&Finding> = in_scope
            .iter()
            .copied()
            .filter(|f| versions_equal(&f.current_value, &current))
            .collect();
        if at_current.is_empty() {
            let reason = if in_file.is_empty() {
                format!(
                    "Renovate reported nothing in {file}: check that its managers' file \
                     patterns cover it"
                )
            } else if in_scope.is_empty() {
                let why = in_file
                    .iter()
                    .filter_map(|f| out_of_scope(f, scope))
                    .next()
                    .unwrap_or_default();
                format!("Renovate's findings in {file} are {why}")
            } else {
                let seen: Vec<String> = in_scope
                    .iter()
                    .take(5)
                    .map(|f| format!("{} at {}", f.dep_name, f.current_value))
                    .collect();
                format!(
                    "Renovate saw {} in {file}, none at {current} as in Git: its data is \
                     from another commit, or the field is not one Renovate manages",
                    seen.join(", ")
                )
            };
            mapping.unmatched.insert(field.name.clone(), reason);
            continue;
        }
        let pinned = digest_of(&current);
        let hint = field.package_hint();
        let mut matched: Vec<(PackageMatch, Finding)> = Vec::new();
        let mut misses = Vec::new();
        for finding in at_current {
            let renovate_digest = finding
                .current_digest
                .clone()
                .or_else(|| digest_of(&finding.current_value));
            if let (Some(git), Some(seen)) = (&pinned, &renovate_digest)
                && git != seen
            {
                misses.push(format!(
                    "Renovate saw {} at digest {seen}, Git pins {git}; its data is older \
                     than Git",
                    finding.dep_name
                ));
                continue;
            }
            let level = match &hint {
                None => PackageMatch::Exact,
                Some(hint) => match package_match(hint, finding) {
                    Some(level) => level,
                    None => {
                        misses.push(format!(
                            "{} in {file} is at the same version but is not the package \
                     `{hint}`",
                            finding.dep_name
                        ));
                        continue;
                    }
                },
            };
            matched.push((level, finding.clone()));
        }
        // An exact name beats a shared last segment: with the chart `podinfo`, the image
        // `ghcr.io/stefanprodan/podinfo` at the same version is not the chart.
        let best = matched.iter().map(|(level, _)| *level).min();
        let matched: Vec<Finding> = matched
            .into_iter()
            .filter(|(level, _)| Some(*level) == best)
            .map(|(_, finding)| finding)
            .collect();
        if hint.is_none() {
            let mut names: Vec<&str> = matched.iter().map(|f| f.dep_name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            if names.len() > 1 {
                mapping.unmatched.insert(
                    field.name.clone(),
                    format!(
                        "several packages in {file} are at {current} ({}); the field's \
                         package is unknown, so none is used",
                        names.join(", ")
                    ),
                );
                continue;
            }
        }
        if matched.is_empty() {
            mapping
                .unmatched
                .insert(field.name.clone(), misses.join("; "));
        } else {
            mapping
                .notes
                .extend(misses.into_iter().map(|m| format!("{}: {m}", field.name)));
            mapping.matches.insert(field.name.clone(), matched);
        }
    }
    mapping
}

/// Why a finding is for another repository or branch than the app's; `None` when it is
/// the app's, or Renovate did not say (its `local` platform names neither).
fn out_of_scope(finding: &Finding, scope: &Scope) -> Option<String> {
    if let (Some(seen), Some(wanted)) = (finding.named_repository(), scope.repository.as_deref())
        && !repository_matches(seen, wanted)
    {
        return Some(format!(
            "for repository {seen}, not the app's {}",
            crate::git::redact_url(wanted)
        ));
    }
    match (&finding.base_branch, &scope.branch) {
        (Some(seen), Some(wanted)) if seen != wanted => {
            Some(format!("for branch {seen}, not the app's {wanted}"))
        }
        _ => None,
    }
}

/// Whether Renovate's repository name (`owner/repo`, `group/sub/repo`) names the repository
/// at `location` (the same name, or a clone URL: `https://host/owner/repo.git`,
/// `ssh://git@host/owner/repo`, `git@host:owner/repo.git`). Case-insensitive, as hosts are.
pub fn repository_matches(renovate: &str, location: &str) -> bool {
    let clean = |text: &str| {
        text.trim()
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .to_ascii_lowercase()
    };
    let renovate = clean(renovate);
    let location = clean(location);
    if renovate.is_empty() {
        return false;
    }
    let path = match location.split_once("://") {
        // scheme://[user@]host[:port]/path
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path).to_owned(),
        None => match location.split_once(':') {
            // user@host:path (scp-like)
            Some((host, path)) if host.contains('@') => path.to_owned(),
            _ => location,
        },
    };
    path.trim_start_matches('/') == renovate
}

/// A package name in one spelling: no scheme, no Docker Hub prefixes, lowercase.
fn canonical_package(name: &str) -> String {
    let mut name = name.trim().trim_end_matches('/').to_ascii_lowercase();
    for scheme in ["oci://", "https://", "http://"] {
        if let Some(rest) = name.strip_prefix(scheme) {
            name = rest.to_owned();
        }
    }
    for prefix in ["index.docker.io/", "docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest.to_owned();
        }
    }
    name.strip_prefix("library/").unwrap_or(&name).to_owned()
}

/// How well a field's package names a finding's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PackageMatch {
    /// The same name (after [`canonical_package`]).
    Exact,
    /// One is the other's last path segments (a chart `podinfo` and its OCI package
    /// `ghcr.io/stefanprodan/charts/podinfo`).
    Suffix,
}

/// Whether `hint` names the finding's package (its `depName` or `packageName`), and how.
fn package_match(hint: &str, finding: &Finding) -> Option<PackageMatch> {
    let hint = canonical_package(hint);
    [Some(&finding.dep_name), finding.package_name.as_ref()]
        .into_iter()
        .flatten()
        .map(|name| canonical_package(name))
        .filter_map(|name| {
            if name == hint {
                Some(PackageMatch::Exact)
            } else if name.ends_with(&format!("/{hint}")) || hint.ends_with(&format!("/{name}")) {
                Some(PackageMatch::Suffix)
            } else {
                None
            }
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_match_clone_urls() {
        for location in [
            "home/ops",
            "https://github.com/home/ops.git",
            "https://github.com/Home/Ops",
            "ssh://git@github.com/home/ops.git",
            "ssh://git@github.com:22/home/ops",
            "git@github.com:home/ops.git",
            "https://github.com/home/ops/",
        ] {
            assert!(repository_matches("home/ops", location), "{location}");
        }
        for location in [
            "https://github.com/home/ops-old.git",
            "https://github.com/other/home/ops-x",
            "https://github.com/ops",
            "git@github.com:home/opsx.git",
        ] {
            assert!(!repository_matches("home/ops", location), "{location}");
        }
        assert!(repository_matches(
            "group/sub/repo",
            "https://gitlab.example.com/group/sub/repo.git"
        ));
    }

    #[test]
    fn package_names_compare_across_spellings() {
        let finding = |dep: &str, package: Option<&str>| Finding {
            not_offered: Vec::new(),
            repository: "home/ops".into(),
            base_branch: None,
            managers: vec!["flux".into()],
            package_file: "f.yaml".into(),
            dep_name: dep.into(),
            package_name: package.map(str::to_owned),
            current_value: "1.0.0".into(),
            current_digest: None,
            datasource: None,
            updates: vec![],
        };
        use PackageMatch::{Exact, Suffix};
        let cases = [
            (
                "redis",
                finding("docker.io/library/redis", None),
                Some(Exact),
            ),
            (
                "oci://ghcr.io/acme/charts/db",
                finding("ghcr.io/acme/charts/db", None),
                Some(Exact),
            ),
            (
                "podinfo",
                finding("x", Some("ghcr.io/stefanprodan/charts/podinfo")),
                Some(Suffix),
            ),
            (
                "podinfo",
                finding("podinfo", Some("ghcr.io/a/charts/podinfo")),
                Some(Exact),
            ),
            (
                "podinfo",
                finding("ghcr.io/stefanprodan/podinfo-ui", None),
                None,
            ),
            ("db", finding("ghcr.io/acme/charts/dbx", None), None),
        ];
        for (hint, finding, expected) in cases {
            assert_eq!(
                package_match(hint, &finding),
                expected,
                "{hint} vs {finding:?}"
            );
        }
    }
}
