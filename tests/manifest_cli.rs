//! `fluxgate manifest get|set` run as a user would: the built binary on real files.

use std::path::Path;
use std::process::{Command, Output};

const RELEASES: &str = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: podinfo
spec:
  url: https://stefanprodan.github.io/podinfo
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  chart:
    spec:
      chart: podinfo
      version: \"6.5.0\" # pinned
  values:
    image:
      repository: ghcr.io/stefanprodan/podinfo
      full: ghcr.io/stefanprodan/podinfo:6.5.0
";

fn fluxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run fluxgate: {err}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_file(dir: &Path, text: &str) -> String {
    let file = dir.join("release.yaml");
    std::fs::write(&file, text).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    file.display().to_string()
}

fn read(file: &str) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|err| panic!("{file}: {err}"))
}

#[test]
fn get_prints_the_value_of_the_chosen_document() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let file = write_file(dir.path(), RELEASES);
    let version = ".spec.chart.spec.version";
    let output = fluxgate(&[
        "manifest",
        "get",
        &file,
        version,
        "--doc",
        "HelmRelease/podinfo",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "6.5.0\n");

    let image = ".spec.values.image.full";
    let output = fluxgate(&["manifest", "get", &file, image, "--doc", "1", "--image"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "6.5.0\n");
}

#[test]
fn set_prints_the_edited_file_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let file = write_file(dir.path(), RELEASES);
    let output = fluxgate(&[
        "manifest",
        "set",
        &file,
        ".spec.chart.spec.version",
        "6.6.0",
        "--doc",
        "HelmRelease/podinfo",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        RELEASES.replace("\"6.5.0\" # pinned", "\"6.6.0\" # pinned")
    );
    assert_eq!(
        read(&file),
        RELEASES,
        "without --write the file is untouched"
    );
}

#[test]
fn set_write_edits_in_place_and_reports_the_change() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let file = write_file(dir.path(), RELEASES);
    let args = [
        "manifest",
        "set",
        &file,
        ".spec.values.image.full",
        "6.7.0",
        "--doc",
        "HelmRelease/podinfo",
        "--image",
        "--write",
    ];
    let output = fluxgate(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output)
            .contains("ghcr.io/stefanprodan/podinfo:6.5.0 -> ghcr.io/stefanprodan/podinfo:6.7.0"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        read(&file),
        RELEASES.replace("podinfo:6.5.0", "podinfo:6.7.0")
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );

    let again = fluxgate(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("is already"), "{}", stderr(&again));
}

#[test]
fn errors_name_the_file_and_give_a_hint() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let file = write_file(dir.path(), RELEASES);

    let ambiguous = fluxgate(&["manifest", "get", &file, ".spec.chart.spec.version"]);
    assert!(!ambiguous.status.success());
    let message = stderr(&ambiguous);
    assert!(
        message.starts_with(&format!("error: {file}: ")),
        "{message}"
    );
    assert!(message.contains("1: HelmRelease/podinfo"), "{message}");

    let missing = fluxgate(&[
        "manifest",
        "set",
        &file,
        ".spec.chart.spec.versoin",
        "1.0.0",
        "--doc",
        "HelmRelease/podinfo",
        "--write",
    ]);
    assert!(!missing.status.success());
    let message = stderr(&missing);
    assert!(
        message.contains(&file) && message.contains("never creates"),
        "{message}"
    );
    assert_eq!(read(&file), RELEASES, "a failed set writes nothing");

    let absent = format!("{}/absent.yaml", dir.path().display());
    let output = fluxgate(&["manifest", "get", &absent, ".a"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&absent), "{}", stderr(&output));

    let bad_path = fluxgate(&["manifest", "get", &file, "spec.chart"]);
    assert!(
        stderr(&bad_path).contains("invalid YAML path"),
        "{}",
        stderr(&bad_path)
    );
}
