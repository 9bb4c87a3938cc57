//! A clone of the repository stands on its own: no file of it reads or names anything beside
//! the repository (our machines have a folder of notes there; a user's clone does not).
//! `.ci/fresh-clone-demo` proves the other half: a binary built in a fresh clone and copied
//! elsewhere runs `fluxgate demo`.

use std::path::Path;
use std::process::Command;

/// What a file would contain if it reached outside the repository.
fn forbidden() -> [String; 3] {
    [
        // Spelled in pieces so that this file does not name them itself.
        format!("..{}shared", '/'),
        format!("shared{}external-crds", '/'),
        format!("FLUXGATE_{}", "EXTERNAL_CRDS"),
    ]
}

#[test]
fn no_tracked_file_names_a_path_beside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    let listed = match listed {
        Ok(out) if out.status.success() => out.stdout,
        _ => {
            println!("SKIPPED: not a git checkout (or git is missing); nothing to check");
            return;
        }
    };
    let mut offenders = Vec::new();
    for file in listed.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let file = String::from_utf8_lossy(file).into_owned();
        // Deleted but not yet committed files are still listed.
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        for needle in forbidden() {
            if let Some(line) = text.lines().position(|l| l.contains(&needle)) {
                offenders.push(format!("{file}:{}: names `{needle}`", line + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "files that depend on or point at something outside the repository:\n{}",
        offenders.join("\n")
    );
}
