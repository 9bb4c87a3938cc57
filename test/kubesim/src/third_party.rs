//! The Flux and CSI snapshot CRDs kubesim serves when asked: written by this project (see
//! `crds/README.md` for what they type and how they are checked against upstream) and
//! embedded, so that a binary copied anywhere needs no files beside it.

/// `(file name, contents)` of a file in `crds/`, read at compile time.
macro_rules! crd {
    ($file:literal) => {
        ($file, include_str!(concat!("../crds/", $file)))
    };
}

/// Each CRD as `(file name, YAML)`.
pub const CRDS: &[(&str, &str)] = &[
    crd!("source.toolkit.fluxcd.io_gitrepositories.yaml"),
    crd!("source.toolkit.fluxcd.io_helmrepositories.yaml"),
    crd!("source.toolkit.fluxcd.io_ocirepositories.yaml"),
    crd!("source.toolkit.fluxcd.io_helmcharts.yaml"),
    crd!("kustomize.toolkit.fluxcd.io_kustomizations.yaml"),
    crd!("helm.toolkit.fluxcd.io_helmreleases.yaml"),
    crd!("snapshot.storage.k8s.io_volumesnapshotclasses.yaml"),
    crd!("snapshot.storage.k8s.io_volumesnapshots.yaml"),
    crd!("snapshot.storage.k8s.io_volumesnapshotcontents.yaml"),
];

/// The upstream releases our CRDs mirror: `<module>@<version> <directory in the module>` per
/// line (`crds/upstream.txt`; `.ci/run` downloads exactly these with `go mod download`).
pub const UPSTREAM: &str = include_str!("../crds/upstream.txt");

/// The upstream CRD files of [`UPSTREAM`] in the Go module cache, for tests that care about
/// schema fidelity; `Err` says which module is missing and the command that fetches it.
pub fn upstream_crd_files() -> Result<Vec<std::path::PathBuf>, String> {
    let cache = go_module_cache()?;
    let mut files = Vec::new();
    for line in UPSTREAM.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (module, dir) = line.split_once(char::is_whitespace).ok_or_else(|| {
            format!("crds/upstream.txt: `{line}` is not `<module>@<version> <dir>`")
        })?;
        let root = cache.join(escape_module_path(module)).join(dir.trim());
        let entries = std::fs::read_dir(&root).map_err(|_| {
            format!(
                "upstream CRDs of {module} are not in the Go module cache ({}); run: go mod download {module}",
                root.display()
            )
        })?;
        let mut found: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                CRDS.iter().any(|(ours, _)| *ours == name)
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// `GOMODCACHE`, else what `go env GOMODCACHE` says, else `$HOME/go/pkg/mod`.
fn go_module_cache() -> Result<std::path::PathBuf, String> {
    if let Some(dir) = std::env::var_os("GOMODCACHE").filter(|d| !d.is_empty()) {
        return Ok(dir.into());
    }
    if let Ok(out) = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !dir.is_empty() {
            return Ok(dir.into());
        }
    }
    std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join("go/pkg/mod"))
        .ok_or_else(|| "cannot find the Go module cache: set GOMODCACHE".to_owned())
}

/// A module path as the Go module cache spells it: each upper-case letter becomes `!` and
/// its lower-case form (`github.com/BurntSushi` → `github.com/!burnt!sushi`).
fn escape_module_path(module: &str) -> String {
    let mut out = String::with_capacity(module.len());
    for c in module.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_paths_are_escaped_as_go_does() {
        assert_eq!(
            super::escape_module_path("github.com/BurntSushi/toml@v1.0.0"),
            "github.com/!burnt!sushi/toml@v1.0.0"
        );
    }
}
