//! Tests of the renovate module through its public API, on fixtures built from the formats
//! in Renovate's real output (one per known trap of it) and a sample GitOps repository whose current
//! values are read with the manifest module, as the controller will.

use super::choice::{self, FieldChoice};
use super::mapping::{self, ResolvedField, Scope};
use super::model::{InputKind, MAX_INPUT_BYTES};
use super::*;
use crate::api::{AutoUpdate, FailedVersion, UpdateType, ValueFormat};
use crate::manifest::{self, DocSelector, YamlPath};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::path::PathBuf;

const OLD_DIGEST: &str = "sha256:3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a0b2e";
const NEW_DIGEST: &str = "sha256:a7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04e91c8";
const REBUILD_DIGEST: &str =
    "sha256:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e77";

fn testdata(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/renovate/testdata")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn parse(inputs: &[(&str, &str)]) -> Parsed {
    parse_inputs(inputs).unwrap_or_else(|err| panic!("{err}"))
}

fn parse_fixture(name: &str) -> Parsed {
    let text = testdata(name);
    parse(&[(name, &text)])
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
}

fn find<'a>(parsed: &'a Parsed, file: &str, dep: &str) -> &'a Finding {
    parsed
        .findings
        .iter()
        .find(|f| f.package_file == file && f.dep_name == dep)
        .unwrap_or_else(|| panic!("no finding {dep} in {file}: {:#?}", parsed.findings))
}

fn values(finding: &Finding) -> Vec<&str> {
    finding
        .updates
        .iter()
        .map(|u| u.new_value.as_str())
        .collect()
}

mod parsing {
    use super::*;

    #[test]
    fn minimal_example_keeps_every_update_of_a_dep() {
        let parsed = parse_fixture("minimal.ndjson");
        assert_eq!(parsed.findings.len(), 1);
        let db = &parsed.findings[0];
        assert_eq!(db.repository, "home/ops");
        assert_eq!(db.base_branch.as_deref(), Some("main"));
        assert_eq!(db.managers, ["flux"]);
        assert_eq!(db.package_file, "apps/db/ocirepository.yaml");
        assert_eq!(db.current_value, "v1.4.2");
        assert_eq!(db.datasource.as_deref(), Some("docker"));
        assert_eq!(values(db), ["v1.4.3", "v2.0.0"]);
        let (patch, major) = (&db.updates[0], &db.updates[1]);
        assert_eq!(patch.update_type, RenovateUpdateType::Patch);
        assert_eq!(patch.bucket.as_deref(), Some("non-major"));
        assert_eq!(patch.release_timestamp, Some(ts("2026-11-02T10:00:00Z")));
        assert!(!patch.is_breaking);
        assert_eq!(major.update_type, RenovateUpdateType::Major);
        assert!(major.is_breaking);
        assert_eq!(major.release_timestamp, None);
        let source = &parsed.summary.sources[0];
        assert_eq!(
            (source.kind, source.lines, source.used),
            (InputKind::Log, 1, 1)
        );
        assert!(parsed.summary.warnings.is_empty(), "{:?}", parsed.summary);
        assert_eq!(parsed.summary.problem_count, 0);
    }

    #[test]
    fn a_whole_run_log_uses_the_newest_line_and_counts_the_rest() {
        let parsed = parse_fixture("home_ops.ndjson");
        let source = &parsed.summary.sources[0];
        assert_eq!(source.kind, InputKind::Log);
        assert_eq!(source.lines, 9);
        assert_eq!(source.used, 1);
        assert_eq!(source.superseded, 1, "the run of the day before");
        assert_eq!(source.malformed_lines, 0);
        assert_eq!(source.levels.get("debug"), Some(&4));
        assert_eq!(source.levels.get("info"), Some(&4));
        assert_eq!(source.levels.get("warn"), Some(&1));
        // The older run offered v1.4.9; the newer one does not.
        let db = find(
            &parsed,
            "apps/db/ocirepository.yaml",
            "ghcr.io/acme/charts/db",
        );
        assert_eq!(values(db), ["v1.5.0", "v2.0.0", "v1.4.3"]);
        assert!(
            parsed.summary.warnings.is_empty(),
            "{:?}",
            parsed.summary.warnings
        );
        assert_eq!(
            parsed.summary.to_string(),
            "home_ops.ndjson: log, 1 of 9 lines used, 1 superseded; 10 deps, 1 skipped \
             (local-chart 1); 2 updates ignored (pinDigest 1, rollback 1)"
        );
    }

    #[test]
    fn the_same_line_order_decides_when_times_are_equal_or_missing() {
        let line = |value: &str| {
            format!(
                r#"{{"level":20,"repository":"home/ops","msg":"packageFiles with updates","config":{{"flux":[{{"packageFile":"a.yaml","deps":[{{"depName":"x","currentValue":"1.0.0","updates":[{{"updateType":"patch","newValue":"{value}"}}]}}]}}]}}}}"#
            )
        };
        let log = format!("{}\n{}\n", line("1.0.1"), line("1.0.2"));
        let parsed = parse(&[("log", &log)]);
        assert_eq!(values(&parsed.findings[0]), ["1.0.2"]);
    }

    #[test]
    fn replacements_and_api_version_moves_are_never_version_updates() {
        // As Renovate 39's kubernetes manager reports a deprecated apiVersion: datasource
        // kubernetes-api, typed as a patch.
        let report = r#"{"repositories": {"local": {"packageFiles": {"kubernetes": [
            {"packageFile": "apps/jobs/cron.yaml", "deps": [
              {"depName": "CronJob", "currentValue": "batch/v1beta1", "datasource": "kubernetes-api",
               "updates": [{"newValue": "batch/v1", "updateType": "patch"}]},
              {"depName": "bitnami/redis", "currentValue": "7.0.0", "datasource": "docker",
               "updates": [{"newName": "valkey/valkey", "newValue": "8.0.0", "updateType": "replacement"},
                           {"newName": "redis", "newValue": "7.0.1", "updateType": "patch"},
                           {"newValue": "7.0.2", "updateType": "patch"},
                           {"newValue": "6.2.0", "updateType": "rollback"}]}]}]}}}}"#;
        let parsed = parse(&[("report.json", report)]);
        let api = find(&parsed, "apps/jobs/cron.yaml", "CronJob");
        assert!(api.updates.is_empty(), "{api:?}");
        assert_eq!(api.not_offered[0].kind, "apiVersion");
        assert_eq!(api.not_offered[0].new_value, "batch/v1");
        let redis = find(&parsed, "apps/jobs/cron.yaml", "bitnami/redis");
        assert_eq!(values(redis), ["7.0.2"]);
        let refused: Vec<(&str, &str)> = redis
            .not_offered
            .iter()
            .map(|o| (o.kind.as_str(), o.new_value.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                ("replacement", "valkey/valkey:8.0.0"),
                ("replacement", "redis:7.0.1"),
                ("rollback", "6.2.0")
            ]
        );
        assert_eq!(
            parsed.summary.to_string(),
            "report.json: report, 1 repositories; 2 deps; 4 updates ignored (apiVersion 1, \
             replacement 2, rollback 1)"
        );
    }

    #[test]
    fn the_same_dep_under_two_managers_is_one_finding() {
        let parsed = parse_fixture("home_ops.ndjson");
        let image: Vec<&Finding> = parsed
            .findings
            .iter()
            .filter(|f| {
                f.package_file == "apps/podinfo/helmrelease.yaml"
                    && f.dep_name == "ghcr.io/stefanprodan/podinfo"
            })
            .collect();
        assert_eq!(image.len(), 1, "deduplicated across flux and helm-values");
        let image = image[0];
        assert_eq!(image.managers, ["flux", "helm-values"]);
        // 6.7.1 came from both (once, with flux's release time); 6.5.1 only from
        // helm-values; the rollback is not a version move.
        assert_eq!(values(image), ["6.7.1", "6.5.1"]);
        assert_eq!(
            image.updates[0].release_timestamp,
            Some(ts("2026-11-01T00:00:00Z"))
        );
        assert_eq!(parsed.summary.ignored_updates.get("rollback"), Some(&1));
        assert_eq!(parsed.summary.ignored_updates.get("pinDigest"), Some(&1));
    }

    #[test]
    fn chart_ref_comes_from_the_oci_repository_file_as_docker() {
        let parsed = parse_fixture("two_repositories.report.json");
        let db = parsed
            .findings
            .iter()
            .find(|f| f.repository == "home/ops")
            .expect("home/ops");
        assert_eq!(db.package_file, "apps/db/ocirepository.yaml");
        assert_eq!(db.datasource.as_deref(), Some("docker"));
        assert_eq!(db.updates[0].new_version.as_deref(), Some("v1.4.3"));
    }

    #[test]
    fn digest_pinned_updates_carry_the_new_digest() {
        let parsed = parse_fixture("home_ops.ndjson");
        let ha = find(
            &parsed,
            "apps/home-assistant/helmrelease.yaml",
            "ghcr.io/home-operations/home-assistant",
        );
        assert_eq!(ha.current_value, "2024.3.1");
        assert_eq!(ha.current_digest.as_deref(), Some(OLD_DIGEST));
        let digests: Vec<(&str, Option<&str>, RenovateUpdateType)> = ha
            .updates
            .iter()
            .map(|u| (u.new_value.as_str(), u.new_digest.as_deref(), u.update_type))
            .collect();
        assert_eq!(
            digests,
            [
                ("2024.4.0", Some(NEW_DIGEST), RenovateUpdateType::Minor),
                ("2024.3.2", None, RenovateUpdateType::Patch),
                ("2024.3.1", Some(REBUILD_DIGEST), RenovateUpdateType::Digest),
            ]
        );
    }

    #[test]
    fn empty_config_means_no_findings_and_no_warning() {
        let parsed = parse_fixture("empty_config.ndjson");
        assert!(parsed.findings.is_empty());
        assert_eq!(parsed.summary.sources[0].used, 1);
        assert!(parsed.summary.warnings.is_empty(), "{:?}", parsed.summary);
        assert_eq!(parsed.summary.problem_count, 0);
    }

    #[test]
    fn an_info_level_log_warns_about_the_log_level() {
        let parsed = parse_fixture("info_level.ndjson");
        assert!(parsed.findings.is_empty());
        assert_eq!(parsed.summary.sources[0].levels.get("info"), Some(&3));
        let [warning] = parsed.summary.warnings.as_slice() else {
            panic!("one warning: {:?}", parsed.summary.warnings);
        };
        assert!(warning.starts_with("info_level.ndjson: "), "{warning}");
        assert!(warning.contains("info level"), "{warning}");
        assert!(warning.contains("LOG_LEVEL=debug"), "{warning}");
    }

    #[test]
    fn a_text_format_log_warns_about_the_log_format() {
        let parsed = parse(&[("log", "DEBUG: Using RE2\n INFO: Repository started\n")]);
        assert_eq!(parsed.summary.sources[0].malformed_lines, 2);
        assert!(
            parsed.summary.warnings[0].contains("LOG_FORMAT=json"),
            "{:?}",
            parsed.summary.warnings
        );
    }

    #[test]
    fn debug_log_without_the_line_gets_its_own_warning() {
        let log = r#"{"level":20,"msg":"Using RE2 as regex engine"}"#;
        let parsed = parse(&[("log", log)]);
        let warning = &parsed.summary.warnings[0];
        assert!(
            warning.contains("although the log is at debug level"),
            "{warning}"
        );
    }

    #[test]
    fn malformed_lines_and_fields_are_counted_with_their_place() {
        let parsed = parse_fixture("malformed.ndjson");
        let source = &parsed.summary.sources[0];
        // The text line, the truncated line and the JSON array; the blank line is no line.
        assert_eq!(source.malformed_lines, 3);
        assert_eq!(source.lines, 6);
        assert_eq!(source.used, 1);
        let db = find(
            &parsed,
            "apps/db/ocirepository.yaml",
            "ghcr.io/acme/charts/db",
        );
        assert_eq!(values(db), ["v1.4.3", "v1.5.0"]);
        assert_eq!(db.updates[0].release_timestamp, None, "not a time");
        assert!(!db.updates[1].is_breaking, "`no` is not a boolean");
        let app = find(&parsed, "apps/db/ocirepository.yaml", "ghcr.io/acme/app");
        assert!(app.updates.is_empty(), "`updates` was not a list");
        assert_eq!(
            parsed.findings.len(),
            2,
            "the escaping package files are dropped"
        );
        let problems: Vec<String> = parsed
            .summary
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        let expect = [
            "malformed.ndjson line 6 at config.flux[0].deps[0].updates[0].releaseTimestamp: `not a time`",
            "malformed.ndjson line 6 at config.flux[0].deps[0].updates[1].newValue: expected a string, found a number",
            "malformed.ndjson line 6 at config.flux[0].deps[0].updates[2].isBreaking: expected true or false",
            "malformed.ndjson line 6 at config.flux[0].deps[1]: expected a dependency, found a string",
            "malformed.ndjson line 6 at config.flux[0].deps[2].updates: expected a list, found an object",
            "malformed.ndjson line 6 at config.flux[1].packageFile: `../outside/ocirepository.yaml` climbs out",
            "malformed.ndjson line 6 at config.flux[2].packageFile: `/etc/flux.yaml` is absolute",
            "malformed.ndjson line 6 at config.kubernetes: expected a list of package files, found a string",
        ];
        for expected in expect {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "missing `{expected}` in {problems:#?}"
            );
        }
        assert_eq!(parsed.summary.problem_count, expect.len(), "{problems:#?}");
    }

    #[test]
    fn oversized_input_is_refused_with_the_sizes() {
        let big = " ".repeat(MAX_INPUT_BYTES / 2 + 1);
        let err = parse_inputs(&[("a", &big), ("b", &big)]).expect_err("too large");
        let message = err.to_string();
        assert!(
            message.contains("a: 4194305 bytes, b: 4194305 bytes"),
            "{message}"
        );
        assert!(message.contains("reportType: file"), "{message}");
        assert_eq!(err.category(), "renovate_input_too_large");
        assert!(
            parse_inputs(&[("a", &big)]).is_ok(),
            "half the limit is fine"
        );
    }

    #[test]
    fn oversized_fields_are_refused_one_by_one() {
        let long = "x".repeat(model::MAX_STRING_BYTES + 1);
        let log = format!(
            r#"{{"level":20,"repository":"home/ops","msg":"packageFiles with updates","config":{{"flux":[{{"packageFile":"a.yaml","deps":[{{"depName":"{long}","currentValue":"1.0.0"}},{{"depName":"ok","currentValue":"1.0.0","updates":[{{"updateType":"patch","newValue":"1.0.1","newDigest":"{long}"}}]}}]}}]}}}}"#
        );
        let parsed = parse(&[("cm/renovate", &log)]);
        assert_eq!(parsed.findings.len(), 1);
        assert_eq!(parsed.findings[0].dep_name, "ok");
        assert_eq!(parsed.findings[0].updates[0].new_digest, None);
        let problems: Vec<String> = parsed
            .summary
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert!(
            problems[0].contains("deps[0].depName: 1025 bytes"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("deps[1].updates[0].newDigest"),
            "{problems:?}"
        );
        assert_eq!(
            problems.len(),
            2,
            "one problem per refused field: {problems:?}"
        );
    }

    #[test]
    fn entries_missing_what_they_need_are_skipped_with_a_problem() {
        let log = r#"{"level":20,"repository":"r/r","msg":"packageFiles with updates","config":{"flux":[{"deps":[]},{"packageFile":"a.yaml","deps":[{"currentValue":"1.0.0"},{"depName":"x","currentValue":"1.0.0","updates":[{"newValue":"1.0.1"},{"updateType":"patch"},{"updateType":"patch","newValue":"1.0.2"}]}]}]}}
{"level":20,"msg":"packageFiles with updates","config":{}}
{"level":20,"repository":"r/r","msg":"packageFiles with updates","baseBranch":"dev"}"#;
        let parsed = parse(&[("cm", log)]);
        let problems: Vec<String> = parsed
            .summary
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            problems,
            [
                "cm line 2 at repository: expected the repository name, found nothing; the line is skipped",
                "cm line 3 at config: the line has no `config`; it is skipped",
                "cm line 1 at config.flux[0]: a package file without `packageFile` is skipped",
                "cm line 1 at config.flux[1].deps[0]: a dependency without `depName` is skipped",
                "cm line 1 at config.flux[1].deps[1].updates[0]: an update without `updateType` is skipped",
                "cm line 1 at config.flux[1].deps[1].updates[1]: an update without `newValue` is skipped",
            ]
        );
        assert_eq!(values(&parsed.findings[0]), ["1.0.2"]);
    }

    #[test]
    fn too_many_updates_are_cut_with_a_problem() {
        let updates: Vec<String> = (0..model::MAX_UPDATES_PER_DEP + 5)
            .map(|i| format!(r#"{{"updateType":"patch","newValue":"1.0.{}"}}"#, i + 1))
            .collect();
        let log = format!(
            r#"{{"level":20,"repository":"r/r","msg":"packageFiles with updates","config":{{"flux":[{{"packageFile":"a.yaml","deps":[{{"depName":"x","currentValue":"1.0.0","updates":[{}]}}]}}]}}}}"#,
            updates.join(",")
        );
        let parsed = parse(&[("log", &log)]);
        assert_eq!(parsed.findings[0].updates.len(), model::MAX_UPDATES_PER_DEP);
        assert_eq!(parsed.summary.problem_count, 1);
    }

    #[test]
    fn skipped_deps_are_counted_by_reason() {
        let parsed = parse_fixture("skip_reason.json");
        assert_eq!(parsed.summary.sources[0].kind, InputKind::Report);
        let skipped: Vec<(&str, usize)> = parsed
            .summary
            .skipped_deps
            .iter()
            .map(|(reason, count)| (reason.as_str(), *count))
            .collect();
        assert_eq!(
            skipped,
            [
                ("local-chart", 1),
                ("no-current-value", 1),
                ("unknown-registry", 2),
                ("unsupported-datasource", 1)
            ]
        );
        assert_eq!(parsed.summary.deps, 6);
        assert_eq!(parsed.findings.len(), 1);
        assert_eq!(parsed.findings[0].dep_name, "podinfo");
        assert_eq!(parsed.findings[0].base_branch, None, "reports do not say");
    }

    #[test]
    fn a_report_with_two_repositories_keeps_them_apart() {
        let parsed = parse_fixture("two_repositories.report.json");
        let source = &parsed.summary.sources[0];
        assert_eq!((source.kind, source.used), (InputKind::Report, 3));
        let seen: Vec<(&str, &str)> = parsed
            .findings
            .iter()
            .map(|f| (f.repository.as_str(), f.current_value.as_str()))
            .collect();
        assert_eq!(seen, [("home/lab", "v1.3.0"), ("home/ops", "v1.4.2")]);
        assert_eq!(
            parsed.summary.renovate_problems,
            [
                "two_repositories.report.json: Repository home/broken could not be cloned",
                "two_repositories.report.json: Repository could not be cloned",
            ]
        );
    }

    #[test]
    fn inputs_are_detected_one_by_one_and_merged() {
        let report = testdata("two_repositories.report.json");
        let log = testdata("home_ops.ndjson");
        let parsed = parse(&[
            ("report.json", &report),
            ("renovate.log", &log),
            ("empty", "  \n"),
        ]);
        let kinds: Vec<InputKind> = parsed.summary.sources.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [InputKind::Report, InputKind::Log, InputKind::Empty]);
        // home/ops's db is in both (report: no branch; log: main), so twice; the report's
        // v1.4.3 and the log's are the same update only within one finding.
        let db: Vec<&Finding> = parsed
            .findings
            .iter()
            .filter(|f| f.repository == "home/ops" && f.dep_name == "ghcr.io/acme/charts/db")
            .collect();
        assert_eq!(db.len(), 2);
        assert_eq!(
            parsed.summary.warnings,
            ["empty: empty; no updates were read"]
        );
        let mut sorted = parsed.findings.clone();
        sorted.sort_by(|a, b| {
            (&a.repository, &a.base_branch, &a.package_file, &a.dep_name).cmp(&(
                &b.repository,
                &b.base_branch,
                &b.package_file,
                &b.dep_name,
            ))
        });
        assert_eq!(sorted, parsed.findings, "findings come out sorted");
    }

    #[test]
    fn a_report_printed_into_the_log_is_read() {
        let report: serde_json::Value =
            serde_json::from_str(&testdata("two_repositories.report.json")).expect("json");
        let line = serde_json::json!({
            "name": "renovate", "level": 30, "msg": "Printing report", "report": report
        });
        let parsed = parse(&[("log", &line.to_string())]);
        assert_eq!(parsed.findings.len(), 2);
        assert!(parsed.summary.warnings.is_empty());
    }

    #[test]
    fn a_report_cut_short_is_reported_as_such() {
        let report = testdata("two_repositories.report.json");
        let cut = &report[..report.len() / 2];
        let parsed = parse(&[("cm/report.json", cut)]);
        assert!(parsed.findings.is_empty());
        let warning = &parsed.summary.warnings[0];
        assert!(
            warning.starts_with("cm/report.json: neither a log nor a valid report"),
            "{warning}"
        );
        assert!(warning.contains("1 MiB"), "{warning}");
        let problem = &parsed.summary.problems[0];
        assert!(
            problem.line.is_some() && problem.message.contains("EOF"),
            "{problem}"
        );
    }

    #[test]
    fn a_log_whose_first_line_was_cut_is_still_a_log() {
        let log = testdata("minimal.ndjson");
        let text = format!("{{\"level\":20,\"msg\":\"cut\n{log}");
        let parsed = parse(&[("log", &text)]);
        assert_eq!(parsed.findings.len(), 1);
        assert_eq!(parsed.summary.sources[0].malformed_lines, 1);
    }

    #[test]
    fn a_json_document_that_is_neither_is_reported() {
        let parsed = parse(&[("values.yaml", r#"{"replicas": 3}"#)]);
        assert!(parsed.findings.is_empty());
        assert_eq!(
            parsed.summary.warnings,
            [
                "values.yaml: none of its lines is a Renovate log line (no Bunyan `level`) and \
              it is not a report (no `repositories`): is this the right ConfigMap key or file?"
            ]
        );
    }

    proptest::proptest! {
        /// Whatever bytes a ConfigMap holds, reading returns (it never panics).
        #[test]
        fn arbitrary_input_never_panics(text in "\\PC{0,400}") {
            let _ = parse_inputs(&[("fuzz", &text)]);
        }

        /// Cutting or corrupting a real log anywhere never panics and never invents deps.
        #[test]
        fn corrupted_logs_never_panic(cut in 0usize..5848, flip in 0usize..5848) {
            let log = testdata("home_ops.ndjson");
            let mut bytes = log.into_bytes();
            let flip = flip % bytes.len();
            bytes[flip] = b'"';
            bytes.truncate(cut.min(bytes.len()));
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Ok(parsed) = parse_inputs(&[("fuzz", &text)]) {
                proptest::prop_assert!(parsed.findings.len() <= 9);
            }
        }
    }
}

/// Reads a field from the sample repository the way the controller will.
fn field(
    name: &str,
    file: &str,
    document: Option<&str>,
    path: &str,
    format: ValueFormat,
) -> ResolvedField {
    let text = testdata(&format!("repo/{file}"));
    let selector = document.map(|d| DocSelector::parse(d).expect("selector"));
    let yaml_path = YamlPath::parse(path).expect("path");
    let value = manifest::get(&text, selector.as_ref(), &yaml_path).expect("value in Git");
    ResolvedField {
        name: name.to_owned(),
        file: file.to_owned(),
        document: document.map(str::to_owned),
        path: path.to_owned(),
        format,
        ref_digest: None,
        package: crate::manifest::fields::infer_package(
            &text,
            selector.as_ref(),
            &yaml_path,
            format,
        ),
        value,
    }
}

fn db_chart() -> ResolvedField {
    field(
        "chart",
        "apps/db/ocirepository.yaml",
        None,
        ".spec.ref.tag",
        ValueFormat::Plain,
    )
}

fn podinfo_chart() -> ResolvedField {
    field(
        "chart",
        "apps/podinfo/helmrelease.yaml",
        Some("HelmRelease/podinfo"),
        ".spec.chart.spec.version",
        ValueFormat::Plain,
    )
}

fn podinfo_image() -> ResolvedField {
    field(
        "image",
        "apps/podinfo/helmrelease.yaml",
        Some("HelmRelease/podinfo"),
        ".spec.values.image.tag",
        ValueFormat::Plain,
    )
}

fn home_assistant() -> ResolvedField {
    field(
        "app",
        "apps/home-assistant/helmrelease.yaml",
        None,
        ".spec.values.controllers.home-assistant.containers.app.image.tag",
        ValueFormat::Plain,
    )
}

fn home_ops() -> Vec<Finding> {
    parse_fixture("home_ops.ndjson").findings
}

fn choose_for(field: &ResolvedField, auto: AutoUpdate, failed: &[FailedVersion]) -> FieldChoice {
    let findings = home_ops();
    let mapping = mapping::map_findings(std::slice::from_ref(field), &findings, &Scope::default());
    let matched = mapping
        .matches
        .get(&field.name)
        .cloned()
        .unwrap_or_default();
    choice::choose(field, &matched, auto, failed).unwrap_or_else(|err| panic!("{err}"))
}

fn failed(name: &str, version: &str) -> FailedVersion {
    FailedVersion {
        name: name.into(),
        version: version.into(),
        upgrade_request: "db-v1-5-0-0123456789".into(),
        failed_at: Time(ts("2026-11-21T03:30:00Z")),
        reason: Some("health checks failed".into()),
    }
}

fn candidates(choice: &FieldChoice) -> Vec<&str> {
    choice
        .candidates
        .iter()
        .map(|c| c.version.as_str())
        .collect()
}

mod mapping_tests {
    use super::*;

    #[test]
    fn packages_are_inferred_from_neighbouring_fields() {
        assert_eq!(
            db_chart().package.as_deref(),
            Some("oci://ghcr.io/acme/charts/db")
        );
        assert_eq!(podinfo_chart().package.as_deref(), Some("podinfo"));
        assert_eq!(
            podinfo_image().package.as_deref(),
            Some("ghcr.io/stefanprodan/podinfo")
        );
        assert_eq!(
            home_assistant().package.as_deref(),
            Some("ghcr.io/home-operations/home-assistant")
        );
        let redis = field(
            "redis",
            "apps/web/kustomization.yaml",
            None,
            ".images[name=redis].newTag",
            ValueFormat::Plain,
        );
        assert_eq!(redis.package.as_deref(), Some("docker.io/library/redis"));
        let podinfo = field(
            "podinfo",
            "apps/web/kustomization.yaml",
            None,
            ".images[name='ghcr.io/stefanprodan/podinfo'].newTag",
            ValueFormat::Plain,
        );
        assert_eq!(
            podinfo.package.as_deref(),
            Some("ghcr.io/stefanprodan/podinfo")
        );
    }

    #[test]
    fn chart_ref_matches_the_oci_repository_tag_with_a_v() {
        let findings = home_ops();
        let mapping = mapping::map_findings(&[db_chart()], &findings, &Scope::default());
        let matched = &mapping.matches["chart"];
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].dep_name, "ghcr.io/acme/charts/db");
        assert_eq!(matched[0].datasource.as_deref(), Some("docker"));
    }

    #[test]
    fn helm_release_chart_and_image_at_the_same_version_stay_apart() {
        let findings = home_ops();
        let mapping = mapping::map_findings(
            &[podinfo_chart(), podinfo_image()],
            &findings,
            &Scope::default(),
        );
        let names = |field: &str| -> Vec<String> {
            mapping.matches[field]
                .iter()
                .map(|f| f.dep_name.clone())
                .collect()
        };
        assert_eq!(names("chart"), ["podinfo"]);
        assert_eq!(names("image"), ["ghcr.io/stefanprodan/podinfo"]);
        // Without a known package the two are ambiguous, and neither is used.
        let mut unknown = podinfo_chart();
        unknown.package = None;
        let mapping = mapping::map_findings(&[unknown], &findings, &Scope::default());
        assert!(mapping.matches.is_empty());
        assert!(
            mapping.unmatched["chart"].contains("several packages"),
            "{:?}",
            mapping.unmatched
        );
    }

    #[test]
    fn app_template_image_tag_with_digest_matches_tag_and_digest() {
        let ha = home_assistant();
        assert_eq!(ha.value, format!("2024.3.1@{OLD_DIGEST}"));
        let findings = home_ops();
        let mapping =
            mapping::map_findings(std::slice::from_ref(&ha), &findings, &Scope::default());
        assert_eq!(mapping.matches["app"].len(), 1);
        // Renovate's data from before a digest change in Git does not match.
        let mut moved = ha.clone();
        moved.value = format!("2024.3.1@{NEW_DIGEST}");
        let mapping = mapping::map_findings(&[moved], &findings, &Scope::default());
        assert!(mapping.matches.is_empty());
        assert!(
            mapping.unmatched["app"].contains("older than Git"),
            "{:?}",
            mapping.unmatched
        );
    }

    #[test]
    fn kustomize_images_and_image_format_fields_match() {
        let findings = home_ops();
        let fields = [
            field(
                "podinfo",
                "./apps/web/kustomization.yaml",
                None,
                ".images[name='ghcr.io/stefanprodan/podinfo'].newTag",
                ValueFormat::Plain,
            ),
            field(
                "redis",
                "apps/web/kustomization.yaml",
                None,
                ".images[name=redis].newTag",
                ValueFormat::Plain,
            ),
            field(
                "web",
                "apps/web/deployment.yaml",
                None,
                ".spec.template.spec.containers[0].image",
                ValueFormat::Image,
            ),
            // Renovate's kubernetes manager did not report redis in the deployment.
            field(
                "cache",
                "apps/web/deployment.yaml",
                None,
                ".spec.template.spec.containers[1].image",
                ValueFormat::Image,
            ),
        ];
        let mapping = mapping::map_findings(&fields, &findings, &Scope::default());
        let matched: Vec<(&str, &str, &str)> = mapping
            .matches
            .iter()
            .flat_map(|(name, findings)| {
                findings
                    .iter()
                    .map(move |f| (name.as_str(), f.package_file.as_str(), f.dep_name.as_str()))
            })
            .collect();
        assert_eq!(
            matched,
            [
                (
                    "podinfo",
                    "apps/web/kustomization.yaml",
                    "ghcr.io/stefanprodan/podinfo"
                ),
                (
                    "redis",
                    "apps/web/kustomization.yaml",
                    "docker.io/library/redis"
                ),
                (
                    "web",
                    "apps/web/deployment.yaml",
                    "ghcr.io/stefanprodan/podinfo"
                ),
            ]
        );
        let web = choice::choose(&fields[2], &mapping.matches["web"], AutoUpdate::Minor, &[])
            .expect("choice");
        assert_eq!(web.current, "6.5.0", "the tag within the image reference");
        assert_eq!(candidates(&web), ["6.7.1"]);
    }

    #[test]
    fn findings_for_another_value_file_repository_or_branch_are_not_this_apps() {
        let findings = home_ops();
        let mut moved = db_chart();
        moved.value = "v1.5.0".into();
        assert!(
            mapping::map_findings(&[moved], &findings, &Scope::default())
                .matches
                .is_empty(),
            "Git moved on: Renovate's data is about an older value"
        );
        let mut elsewhere = db_chart();
        elsewhere.file = "apps/db2/ocirepository.yaml".into();
        assert!(
            mapping::map_findings(&[elsewhere], &findings, &Scope::default())
                .matches
                .is_empty()
        );
        let scope = |repository: &str, branch: &str| Scope {
            repository: Some(repository.into()),
            branch: Some(branch.into()),
        };
        let matches = |scope: Scope| {
            !mapping::map_findings(&[db_chart()], &findings, &scope)
                .matches
                .is_empty()
        };
        assert!(matches(scope("https://github.com/home/ops.git", "main")));
        assert!(!matches(scope("https://github.com/home/lab.git", "main")));
        assert!(!matches(scope("home/ops", "staging")));
        // Each miss says why, for the app's condition.
        let why = |scope: Scope| {
            mapping::map_findings(&[db_chart()], &findings, &scope).unmatched["chart"].clone()
        };
        assert_eq!(
            why(scope("https://github.com/home/lab.git", "main")),
            "Renovate's findings in apps/db/ocirepository.yaml are for repository home/ops, \
             not the app's https://github.com/home/lab.git"
        );
        assert_eq!(
            why(scope("home/ops", "staging")),
            "Renovate's findings in apps/db/ocirepository.yaml are for branch main, not the \
             app's staging"
        );
        let mut elsewhere = db_chart();
        elsewhere.file = "apps/db2/ocirepository.yaml".into();
        let reason =
            &mapping::map_findings(&[elsewhere], &findings, &Scope::default()).unmatched["chart"];
        assert!(
            reason.contains("reported nothing in apps/db2/ocirepository.yaml"),
            "{reason}"
        );
    }

    #[test]
    fn the_local_platform_and_an_empty_base_branch_name_nothing() {
        // Renovate's `local` platform names the repository `local`, and its log writes
        // `"baseBranch": ""`: both mean "unknown", so file, value and package decide.
        let log = testdata("home_ops.ndjson")
            .replace(r#""repository":"home/ops""#, r#""repository":"local""#)
            .replace(r#""baseBranch":"main""#, r#""baseBranch":"""#);
        assert!(log.contains(r#""repository":"local""#) && log.contains(r#""baseBranch":"""#));
        let parsed = parse(&[("local.ndjson", &log)]);
        assert!(parsed.findings.iter().all(|f| f.base_branch.is_none()));
        let scope = Scope {
            repository: Some("https://github.com/home/ops.git".into()),
            branch: Some("main".into()),
        };
        let mapping = mapping::map_findings(&[db_chart()], &parsed.findings, &scope);
        assert_eq!(mapping.matches["chart"].len(), 1, "{mapping:?}");
        let report = r#"{"repositories": {"local": {"packageFiles": {"flux": [
            {"packageFile": "apps/db/ocirepository.yaml", "deps": [{"depName": "ghcr.io/acme/charts/db",
             "currentValue": "v1.4.2", "datasource": "docker",
             "updates": [{"newValue": "v1.4.3", "updateType": "patch"}]}]}]}}}}"#;
        let parsed = parse(&[("report.json", report)]);
        let mapping = mapping::map_findings(&[db_chart()], &parsed.findings, &scope);
        assert_eq!(mapping.matches["chart"].len(), 1, "{mapping:?}");
    }

    #[test]
    fn bad_field_files_and_values_are_reasons_not_panics() {
        let findings = home_ops();
        let mut escaping = db_chart();
        escaping.file = "../db/ocirepository.yaml".into();
        let mut untagged = db_chart();
        untagged.format = ValueFormat::Image;
        untagged.value = "ghcr.io/acme/db".into();
        untagged.name = "image".into();
        let mapping = mapping::map_findings(&[escaping, untagged], &findings, &Scope::default());
        assert!(mapping.matches.is_empty());
        assert!(
            mapping.unmatched["chart"].contains("climbs out"),
            "{:?}",
            mapping.unmatched
        );
        assert!(
            mapping.unmatched["image"].contains("ghcr.io/acme/db"),
            "{:?}",
            mapping.unmatched
        );
    }
}

mod choice_tests {
    use super::*;

    #[test]
    fn the_policy_picks_among_several_updates_never_the_first_blindly() {
        // Renovate listed minor, major, patch (in that order).
        let cases = [
            (AutoUpdate::Patch, "v1.4.3", UpdateType::Patch),
            (AutoUpdate::Minor, "v1.5.0", UpdateType::Minor),
            (AutoUpdate::Major, "v2.0.0", UpdateType::Major),
            (AutoUpdate::None, "v2.0.0", UpdateType::Major),
        ];
        for (auto, version, update_type) in cases {
            let choice = choose_for(&db_chart(), auto, &[]);
            assert_eq!(candidates(&choice), ["v2.0.0", "v1.5.0", "v1.4.3"]);
            let available = choice.available_update().expect("an update");
            assert_eq!(
                (available.version.as_str(), available.update_type),
                (version, update_type),
                "{auto:?}"
            );
            assert_eq!(available.current, "v1.4.2");
            assert_eq!(
                available.source.as_deref(),
                Some("renovate flux apps/db/ocirepository.yaml")
            );
            assert_eq!(available.candidates, ["v2.0.0", "v1.5.0", "v1.4.3"]);
        }
        let patch = choose_for(&db_chart(), AutoUpdate::Patch, &[]);
        assert_eq!(
            patch.available_update().and_then(|a| a.released_at),
            Some(Time(ts("2026-11-02T10:00:00Z")))
        );
    }

    #[test]
    fn failed_versions_are_never_chosen_nor_listed() {
        // `1.5.0` failed; Renovate writes `v1.5.0`: the same version.
        let choice = choose_for(&db_chart(), AutoUpdate::Minor, &[failed("chart", "1.5.0")]);
        assert_eq!(candidates(&choice), ["v2.0.0", "v1.4.3"]);
        assert_eq!(
            choice.chosen.as_ref().map(|c| c.version.as_str()),
            Some("v1.4.3")
        );
        assert!(
            choice
                .skipped
                .iter()
                .any(|s| s.version == "v1.5.0" && s.reason.contains("failedVersions"))
        );
        // A failure of another field does not count.
        let other = choose_for(&db_chart(), AutoUpdate::Minor, &[failed("image", "v1.5.0")]);
        assert_eq!(other.chosen.map(|c| c.version), Some("v1.5.0".to_owned()));
        // Everything failed: nothing to offer.
        let all = [
            failed("chart", "v1.4.3"),
            failed("chart", "v1.5.0"),
            failed("chart", "v2.0.0"),
        ];
        assert_eq!(
            choose_for(&db_chart(), AutoUpdate::Major, &all).available_update(),
            None
        );
    }

    #[test]
    fn digest_pinned_fields_get_tag_and_digest_and_need_a_new_digest() {
        let choice = choose_for(&home_assistant(), AutoUpdate::Patch, &[]);
        assert_eq!(
            candidates(&choice),
            [
                format!("2024.4.0@{NEW_DIGEST}"),
                format!("2024.3.1@{REBUILD_DIGEST}")
            ]
        );
        assert!(
            choice
                .skipped
                .iter()
                .any(|s| s.version == "2024.3.2" && s.reason.contains("no newDigest"))
        );
        // auto: patch allows the rebuild (digest only), not the minor.
        let chosen = choice.chosen.clone().expect("chosen");
        assert!(chosen.digest_only);
        assert_eq!(chosen.update_type, UpdateType::Digest);
        assert_eq!(chosen.version, format!("2024.3.1@{REBUILD_DIGEST}"));
        let minor = choose_for(&home_assistant(), AutoUpdate::Minor, &[]);
        let available = minor.available_update().expect("update");
        assert_eq!(available.version, format!("2024.4.0@{NEW_DIGEST}"));
        assert_eq!(available.current, format!("2024.3.1@{OLD_DIGEST}"));
        assert_eq!(available.update_type, UpdateType::Minor);
        assert_eq!(
            available.released_at,
            Some(Time(ts("2024-04-03T18:00:00Z")))
        );
        // The written value is one the manifest module accepts.
        let text = testdata("repo/apps/home-assistant/helmrelease.yaml");
        let path = YamlPath::parse(&home_assistant().path).expect("path");
        let edit = manifest::set(
            &text,
            None,
            &path,
            &available.version,
            manifest::ValueFormat::Plain,
        )
        .expect("edit");
        assert!(edit.text.contains(&format!("tag: 2024.4.0@{NEW_DIGEST}")));
    }

    #[test]
    fn digest_updates_do_not_apply_to_unpinned_fields() {
        let mut unpinned = home_assistant();
        unpinned.value = "2024.3.1".into();
        let findings = home_ops();
        // As Renovate reports an unpinned tag: no currentDigest (a digest update can still
        // come with `newDigest`).
        let matched: Vec<Finding> = findings
            .into_iter()
            .filter(|f| f.dep_name == "ghcr.io/home-operations/home-assistant")
            .map(|f| Finding {
                not_offered: Vec::new(),
                current_digest: None,
                ..f
            })
            .collect();
        let choice = choice::choose(&unpinned, &matched, AutoUpdate::Major, &[]).expect("choice");
        assert_eq!(candidates(&choice), ["2024.4.0", "2024.3.2"]);
        assert!(
            choice
                .skipped
                .iter()
                .any(|s| s.reason.contains("pins no digest"))
        );
    }

    #[test]
    fn a_digest_pinned_in_another_field_blocks_tag_only_updates() {
        // Kustomize `images:` with `newTag` and a separate `digest:`.
        let text = "images:\n  - name: redis\n    newTag: 7.2.4\n    digest: sha256:aa\n";
        let path = YamlPath::parse(".images[name=redis].newTag").expect("path");
        let field = ResolvedField {
            name: "redis".into(),
            file: "kustomization.yaml".into(),
            document: None,
            path: path.to_string(),
            format: ValueFormat::Plain,
            value: manifest::get(text, None, &path).expect("value"),
            ref_digest: None,
            package: crate::manifest::fields::infer_package(text, None, &path, ValueFormat::Plain),
        };
        let finding = Finding {
            not_offered: Vec::new(),
            repository: "r/r".into(),
            base_branch: None,
            managers: vec!["kustomize".into()],
            package_file: "kustomization.yaml".into(),
            dep_name: "redis".into(),
            package_name: None,
            current_value: "7.2.4".into(),
            current_digest: Some(OLD_DIGEST.into()),
            datasource: Some("docker".into()),
            updates: vec![Update {
                update_type: RenovateUpdateType::Patch,
                new_value: "7.2.5".into(),
                new_digest: Some(NEW_DIGEST.into()),
                new_version: None,
                release_timestamp: None,
                bucket: None,
                is_breaking: false,
                manager: "kustomize".into(),
            }],
        };
        let mapping = mapping::map_findings(
            std::slice::from_ref(&field),
            std::slice::from_ref(&finding),
            &Scope::default(),
        );
        let choice = choice::choose(&field, &mapping.matches["redis"], AutoUpdate::Major, &[])
            .expect("choice");
        assert!(choice.chosen.is_none());
        assert!(
            choice.skipped[0].reason.contains("pinned in another field"),
            "{:?}",
            choice.skipped
        );
    }

    fn one_update(current: &str, new: &str, renovate: RenovateUpdateType) -> FieldChoice {
        let field = ResolvedField {
            name: "app".into(),
            file: "a.yaml".into(),
            document: None,
            path: ".tag".into(),
            format: ValueFormat::Plain,
            value: current.into(),
            ref_digest: None,
            package: None,
        };
        let finding = Finding {
            not_offered: Vec::new(),
            repository: "r/r".into(),
            base_branch: None,
            managers: vec!["regex".into()],
            package_file: "a.yaml".into(),
            dep_name: "minio".into(),
            package_name: None,
            current_value: current.into(),
            current_digest: None,
            datasource: Some("docker".into()),
            updates: vec![Update {
                update_type: renovate,
                new_value: new.into(),
                new_digest: None,
                new_version: None,
                release_timestamp: None,
                bucket: None,
                is_breaking: false,
                manager: "regex".into(),
            }],
        };
        choice::choose(&field, &[finding], AutoUpdate::Major, &[]).expect("choice")
    }

    #[test]
    fn update_types_are_computed_and_renovates_used_only_for_opaque_versions() {
        let cases = [
            // Renovate's type is not trusted where the versions say otherwise.
            (
                "1.9.0",
                "2.0.0",
                RenovateUpdateType::Minor,
                Some(UpdateType::Major),
            ),
            (
                "v1.2.3",
                "v1.2.4",
                RenovateUpdateType::Major,
                Some(UpdateType::Patch),
            ),
            // Opaque to semver: Renovate's versioning knows better.
            (
                "RELEASE.2024-01-01",
                "RELEASE.2024-02-01",
                RenovateUpdateType::Minor,
                Some(UpdateType::Minor),
            ),
            (
                "16-alpine",
                "17-alpine",
                RenovateUpdateType::Major,
                Some(UpdateType::Major),
            ),
            (
                "main-abc",
                "main-def",
                RenovateUpdateType::Bump,
                Some(UpdateType::Other),
            ),
        ];
        for (current, new, renovate, expected) in cases {
            let choice = one_update(current, new, renovate);
            assert_eq!(
                choice.chosen.map(|c| c.update_type),
                expected,
                "{current} -> {new}"
            );
        }
        let older = one_update("1.2.3", "1.2.0", RenovateUpdateType::Patch);
        assert!(older.chosen.is_none());
        assert!(
            older.skipped[0].reason.contains("older"),
            "{:?}",
            older.skipped
        );
        let same = one_update("v1.2.3", "1.2.3", RenovateUpdateType::Patch);
        assert_eq!(same.skipped[0].reason, "Git already has it");
        let spaced = one_update("1.2.3", "1.2.4 beta", RenovateUpdateType::Patch);
        assert!(spaced.chosen.is_none());
    }

    fn semver_version() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (0u64..3, 0u64..3, 0u64..3, proptest::bool::ANY)
            .prop_map(|(a, b, c, v)| format!("{}{a}.{b}.{c}", if v { "v" } else { "" }))
    }

    proptest::proptest! {
        /// The chosen update is never a failed version, and when some candidate is within
        /// the policy, the chosen one is within it and is the highest such.
        #[test]
        fn chosen_is_never_failed_and_within_policy_when_possible(
            current in semver_version(),
            offered in proptest::collection::vec(semver_version(), 0..8),
            failed_versions in proptest::collection::vec(semver_version(), 0..4),
            auto in 0usize..4,
        ) {
            let auto = [AutoUpdate::None, AutoUpdate::Patch, AutoUpdate::Minor, AutoUpdate::Major][auto];
            let field = ResolvedField {
                name: "app".into(),
                file: "a.yaml".into(),
                document: None,
                path: ".tag".into(),
                format: ValueFormat::Plain,
                value: current.clone(),
                ref_digest: None,                package: None,
            };
            let finding = Finding {
                not_offered: Vec::new(),
                repository: "r/r".into(),
                base_branch: None,
                managers: vec!["flux".into()],
                package_file: "a.yaml".into(),
                dep_name: "app".into(),
                package_name: None,
                current_value: current.clone(),
                current_digest: None,
                datasource: None,
                updates: offered.iter().map(|v| Update {
                    update_type: RenovateUpdateType::Patch,
                    new_value: v.clone(),
                    new_digest: None,
                    new_version: None,
                    release_timestamp: None,
                    bucket: None,
                    is_breaking: false,
                    manager: "flux".into(),
                }).collect(),
            };
            let failed: Vec<FailedVersion> = failed_versions.iter().map(|v| failed("app", v)).collect();
            let choice = choice::choose(&field, &[finding], auto, &failed).expect("choice");
            let allowed = |c: &choice::Candidate| policy::auto_allows(auto, c.update_type, c.digest_only);
            if let Some(chosen) = &choice.chosen {
                proptest::prop_assert!(!choice::is_failed("app", &chosen.version, &failed));
                proptest::prop_assert!(crate::manifest::Version::parse(&chosen.version) > crate::manifest::Version::parse(&current));
                let best_allowed = choice
                    .candidates
                    .iter()
                    .filter(|c| allowed(c))
                    .max_by(|a, b| crate::manifest::Version::parse(&a.version).cmp(&crate::manifest::Version::parse(&b.version)));
                if let Some(best) = best_allowed {
                    proptest::prop_assert!(allowed(chosen));
                    proptest::prop_assert!(crate::manifest::versions_equal(&best.version, &chosen.version));
                }
            }
            for candidate in &choice.candidates {
                proptest::prop_assert!(!choice::is_failed("app", &candidate.version, &failed));
            }
            // Something newer, not failed, was offered ⇒ something is chosen.
            let any_eligible = offered.iter().any(|v| {
                crate::manifest::Version::parse(v) > crate::manifest::Version::parse(&current)
                    && !choice::is_failed("app", v, &failed)
            });
            proptest::prop_assert_eq!(any_eligible, choice.chosen.is_some());
        }
    }
}

mod policy_tests {
    use super::*;
    use crate::api::{MaintenanceWindow, UpdatePolicy};
    use policy::{AutoDecision, Situation, auto_upgrade, request_name};
    use std::collections::BTreeMap;

    fn update(
        current: &str,
        version: &str,
        update_type: UpdateType,
        released: Option<&str>,
    ) -> AvailableUpdate {
        AvailableUpdate {
            current: current.into(),
            version: version.into(),
            update_type,
            released_at: released.map(|t| Time(ts(t))),
            source: Some("renovate flux apps/db/ocirepository.yaml".into()),
            candidates: vec![version.into()],
        }
    }

    use crate::api::AvailableUpdate;

    fn chart(version: &str, update_type: UpdateType) -> BTreeMap<String, AvailableUpdate> {
        BTreeMap::from([(
            "chart".to_owned(),
            update("v1.4.2", version, update_type, Some("2026-11-02T10:00:00Z")),
        )])
    }

    fn policy(auto: AutoUpdate) -> UpdatePolicy {
        UpdatePolicy {
            auto,
            min_release_age: None,
            window: None,
        }
    }

    /// Saturdays 03:00 Europe/Berlin for 2h.
    fn saturday_window() -> Option<MaintenanceWindow> {
        Some(MaintenanceWindow {
            schedule: "0 3 * * sat".into(),
            duration: "2h".into(),
            timezone: "Europe/Berlin".into(),
        })
    }

    fn at(now: &str) -> Situation {
        Situation {
            app_idle: true,
            running_auto_upgrades: 0,
            global_limit: 1,
            now: ts(now),
        }
    }

    // Monday 2026-11-23 15:00 UTC.
    const NOW: &str = "2026-11-23T15:00:00Z";

    fn reason(decision: &AutoDecision) -> &str {
        match decision {
            AutoDecision::Wait { reason, .. } | AutoDecision::Never { reason } => reason,
            AutoDecision::Create { .. } => "create",
        }
    }

    #[test]
    fn creates_a_labelled_request_when_everything_allows() {
        let decision = auto_upgrade(
            "db",
            &policy(AutoUpdate::Patch),
            &chart("v1.4.3", UpdateType::Patch),
            &[],
            at(NOW),
        );
        let AutoDecision::Create {
            name,
            target,
            labels,
        } = decision
        else {
            panic!("{decision:?}");
        };
        assert_eq!(
            target,
            BTreeMap::from([("chart".to_owned(), "v1.4.3".to_owned())])
        );
        assert!(name.starts_with("db-1.4.3-"), "{name}");
        assert_eq!(labels["fluxgate.dev/automatic"], "true");
        assert_eq!(labels["fluxgate.dev/app"], "db");
    }

    #[test]
    fn the_auto_level_bounds_the_update_type() {
        let cases = [
            (AutoUpdate::None, UpdateType::Patch, false),
            (AutoUpdate::Patch, UpdateType::Patch, true),
            (AutoUpdate::Patch, UpdateType::Minor, false),
            (AutoUpdate::Minor, UpdateType::Minor, true),
            (AutoUpdate::Minor, UpdateType::Major, false),
            (AutoUpdate::Major, UpdateType::Major, true),
            (AutoUpdate::Minor, UpdateType::Other, false),
            (AutoUpdate::Major, UpdateType::Other, true),
        ];
        for (auto, update_type, creates) in cases {
            let decision = auto_upgrade(
                "db",
                &policy(auto),
                &chart("v9.9.9", update_type),
                &[],
                at(NOW),
            );
            assert_eq!(
                matches!(decision, AutoDecision::Create { .. }),
                creates,
                "{auto:?} {update_type:?}: {decision:?}"
            );
            if !creates {
                assert!(
                    matches!(decision, AutoDecision::Never { .. }),
                    "{decision:?}"
                );
            }
        }
        // A digest-only rebuild counts as a patch.
        let rebuild = BTreeMap::from([(
            "app".to_owned(),
            update(
                &format!("2024.3.1@{OLD_DIGEST}"),
                &format!("2024.3.1@{REBUILD_DIGEST}"),
                UpdateType::Other,
                None,
            ),
        )]);
        assert!(matches!(
            auto_upgrade("ha", &policy(AutoUpdate::Patch), &rebuild, &[], at(NOW)),
            AutoDecision::Create { .. }
        ));
        let never = auto_upgrade(
            "db",
            &policy(AutoUpdate::Patch),
            &chart("v2.0.0", UpdateType::Major),
            &[],
            at(NOW),
        );
        assert_eq!(
            reason(&never),
            "chart v2.0.0 is a major update, beyond auto: patch"
        );
    }

    #[test]
    fn only_allowed_fields_enter_the_target() {
        let mut available = chart("v1.4.3", UpdateType::Patch);
        available.insert(
            "image".into(),
            update(
                "1.0.0",
                "2.0.0",
                UpdateType::Major,
                Some("2026-01-01T00:00:00Z"),
            ),
        );
        let AutoDecision::Create { target, .. } =
            auto_upgrade("db", &policy(AutoUpdate::Minor), &available, &[], at(NOW))
        else {
            panic!("create");
        };
        assert_eq!(target.keys().collect::<Vec<_>>(), ["chart"]);
    }

    #[test]
    fn a_failed_version_is_never_applied() {
        let decision = auto_upgrade(
            "db",
            &policy(AutoUpdate::Major),
            &chart("v1.4.3", UpdateType::Patch),
            &[failed("chart", "1.4.3")],
            at(NOW),
        );
        assert!(
            matches!(decision, AutoDecision::Never { .. }),
            "{decision:?}"
        );
        assert!(reason(&decision).contains("failed before"));
    }

    #[test]
    fn min_release_age_waits_until_the_release_is_old_enough() {
        let mut with_age = policy(AutoUpdate::Patch);
        with_age.min_release_age = Some("72h".into());
        let young = BTreeMap::from([(
            "chart".to_owned(),
            update(
                "v1.4.2",
                "v1.4.3",
                UpdateType::Patch,
                Some("2026-11-22T10:00:00Z"),
            ),
        )]);
        assert_eq!(
            auto_upgrade("db", &with_age, &young, &[], at(NOW)),
            AutoDecision::Wait {
                reason: "waiting for minReleaseAge 72h".into(),
                until: Some(ts("2026-11-25T10:00:00Z")),
            }
        );
        assert!(matches!(
            auto_upgrade("db", &with_age, &young, &[], at("2026-11-25T10:00:00Z")),
            AutoDecision::Create { .. }
        ));
        // Unknown release time: the age cannot be proven, whatever the wait.
        let unknown = BTreeMap::from([(
            "chart".to_owned(),
            update("v1.4.2", "v1.4.3", UpdateType::Patch, None),
        )]);
        let decision = auto_upgrade("db", &with_age, &unknown, &[], at(NOW));
        assert!(
            matches!(decision, AutoDecision::Never { .. }),
            "{decision:?}"
        );
        assert!(reason(&decision).contains("no known release time"));
        // Without minReleaseAge an unknown time does not matter.
        assert!(matches!(
            auto_upgrade("db", &policy(AutoUpdate::Patch), &unknown, &[], at(NOW)),
            AutoDecision::Create { .. }
        ));
    }

    #[test]
    fn the_window_must_be_open_and_the_next_opening_is_given() {
        let mut windowed = policy(AutoUpdate::Patch);
        windowed.window = saturday_window();
        let available = chart("v1.4.3", UpdateType::Patch);
        // Monday: wait until Saturday 2026-11-28 03:00 CET = 02:00 UTC.
        assert_eq!(
            auto_upgrade("db", &windowed, &available, &[], at(NOW)),
            AutoDecision::Wait {
                reason: "outside the maintenance window `0 3 * * sat`".into(),
                until: Some(ts("2026-11-28T02:00:00Z")),
            }
        );
        // Saturday 04:59 Berlin: open; 05:00: closed again.
        assert!(matches!(
            auto_upgrade("db", &windowed, &available, &[], at("2026-11-28T03:59:00Z")),
            AutoDecision::Create { .. }
        ));
        assert!(matches!(
            auto_upgrade("db", &windowed, &available, &[], at("2026-11-28T04:00:00Z")),
            AutoDecision::Wait { .. }
        ));
        // In summer (CEST) the same window opens at 01:00 UTC.
        assert!(matches!(
            auto_upgrade("db", &windowed, &available, &[], at("2026-07-04T01:30:00Z")),
            AutoDecision::Create { .. }
        ));
        // Young and outside the window: the first opening after the release is old enough.
        windowed.min_release_age = Some("168h".into());
        let young = BTreeMap::from([(
            "chart".to_owned(),
            update(
                "v1.4.2",
                "v1.4.3",
                UpdateType::Patch,
                Some("2026-11-22T10:00:00Z"),
            ),
        )]);
        assert_eq!(
            auto_upgrade("db", &windowed, &young, &[], at(NOW)),
            AutoDecision::Wait {
                reason: "waiting for minReleaseAge 168h".into(),
                until: Some(ts("2026-12-05T02:00:00Z")),
            }
        );
        windowed.window = Some(MaintenanceWindow {
            schedule: "0 0 31 2 *".into(),
            duration: "1h".into(),
            timezone: "UTC".into(),
        });
        for available in [&available, &young] {
            let decision = auto_upgrade("db", &windowed, available, &[], at(NOW));
            assert_eq!(
                decision,
                AutoDecision::Never {
                    reason: "the maintenance window `0 0 31 2 *` never opens again".into()
                }
            );
        }
        let mut broken = policy(AutoUpdate::Patch);
        broken.window = Some(MaintenanceWindow {
            schedule: "0 3 * * L".into(),
            duration: "2h".into(),
            timezone: "UTC".into(),
        });
        let decision = auto_upgrade("db", &broken, &available, &[], at(NOW));
        assert!(
            reason(&decision).starts_with("updatePolicy.window: invalid schedule"),
            "{decision:?}"
        );
    }

    #[test]
    fn a_busy_app_and_the_global_limit_make_it_wait() {
        let available = chart("v1.4.3", UpdateType::Patch);
        let busy = Situation {
            app_idle: false,
            ..at(NOW)
        };
        assert_eq!(
            auto_upgrade("db", &policy(AutoUpdate::Patch), &available, &[], busy),
            AutoDecision::Wait {
                reason: "another operation holds the app".into(),
                until: None
            }
        );
        let full = Situation {
            running_auto_upgrades: 1,
            ..at(NOW)
        };
        assert_eq!(
            auto_upgrade("db", &policy(AutoUpdate::Patch), &available, &[], full),
            AutoDecision::Wait {
                reason: "1 automatic upgrade(s) running, the limit is 1".into(),
                until: None
            }
        );
        let roomy = Situation {
            running_auto_upgrades: 1,
            global_limit: 2,
            ..at(NOW)
        };
        assert!(matches!(
            auto_upgrade("db", &policy(AutoUpdate::Patch), &available, &[], roomy),
            AutoDecision::Create { .. }
        ));
        assert_eq!(
            reason(&auto_upgrade(
                "db",
                &policy(AutoUpdate::Patch),
                &BTreeMap::new(),
                &[],
                at(NOW)
            )),
            "no update available"
        );
    }

    fn is_dns_subdomain(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn request_names_are_deterministic_valid_and_distinct() {
        let target = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = request_name("db", &target(&[("chart", "v1.4.3")]));
        assert_eq!(
            a,
            request_name("db", &target(&[("chart", "v1.4.3")])),
            "stable"
        );
        assert_eq!(
            a, "db-1.4.3-c1f1595032",
            "stable across builds and restarts"
        );
        let names = [
            a.clone(),
            request_name("db", &target(&[("chart", "v1.4.4")])),
            request_name("db", &target(&[("image", "v1.4.3")])),
            request_name("db2", &target(&[("chart", "v1.4.3")])),
            request_name("ha", &target(&[("app", &format!("2024.3.1@{OLD_DIGEST}"))])),
            request_name(
                "ha",
                &target(&[("app", &format!("2024.3.1@{REBUILD_DIGEST}"))]),
            ),
        ];
        for (i, x) in names.iter().enumerate() {
            assert!(is_dns_subdomain(x) && x.len() <= 63, "{x}");
            for y in &names[i + 1..] {
                assert_ne!(x, y);
            }
        }
        let long_app = "a".repeat(253);
        let odd = request_name(
            &long_app,
            &target(&[("chart", "V1.0.0_RC+build/x"), ("image", "latest")]),
        );
        assert!(is_dns_subdomain(&odd) && odd.len() <= 63, "{odd}");
        let weird = request_name("db", &target(&[("chart", "--__..--")]));
        assert!(is_dns_subdomain(&weird), "{weird}");
        let label = policy::app_label_value(&long_app);
        assert!(
            label.len() <= 63 && label != policy::app_label_value(&"a".repeat(252)),
            "{label}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_target_gives_a_valid_name(app in "[a-z0-9][a-z0-9.-]{0,80}", version in "\\PC{0,60}") {
            let target = BTreeMap::from([("chart".to_owned(), version)]);
            let name = request_name(&app, &target);
            proptest::prop_assert!(is_dns_subdomain(&name) && name.len() <= 63, "{}", name);
        }
    }
}

mod status_tests {
    use super::*;
    use crate::api::AvailableUpdate;
    use status::{REASON_AVAILABLE, REASON_NOT_TRACKED, REASON_UP_TO_DATE, refresh};
    use std::collections::BTreeMap;

    fn offer(current: &str, version: &str) -> AvailableUpdate {
        AvailableUpdate {
            current: current.into(),
            version: version.into(),
            update_type: UpdateType::Patch,
            released_at: None,
            source: None,
            candidates: vec![version.into()],
        }
    }

    fn map(entries: &[(&str, AvailableUpdate)]) -> BTreeMap<String, AvailableUpdate> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn git(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn entries_go_when_renovate_drops_them_or_git_has_them() {
        let previous = map(&[
            ("chart", offer("v1.4.2", "v1.4.3")),
            ("image", offer("1.0.0", "1.0.1")),
            ("sidecar", offer("2.0.0", "2.0.1")),
        ]);
        // Fresh data: chart still offered but Git got it meanwhile; image gone from
        // Renovate; sidecar now offers a newer one.
        let fresh = map(&[
            ("chart", offer("v1.4.2", "v1.4.3")),
            ("sidecar", offer("2.0.0", "2.0.2")),
        ]);
        let refreshed = refresh(
            &previous,
            &fresh,
            &git(&[("chart", "1.4.3"), ("image", "1.0.0"), ("sidecar", "2.0.0")]),
            true,
            &BTreeMap::new(),
        );
        assert_eq!(refreshed.available.keys().collect::<Vec<_>>(), ["sidecar"]);
        let cleared: Vec<(&str, &str)> = refreshed
            .cleared
            .iter()
            .map(|c| (c.field.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            cleared,
            [
                ("chart", "Git already has it"),
                ("image", "Renovate no longer lists it"),
                ("sidecar", "replaced by 2.0.2")
            ]
        );
        assert!(refreshed.condition.status);
        assert_eq!(refreshed.condition.reason, REASON_AVAILABLE);
        assert_eq!(refreshed.condition.message, "sidecar 2.0.0 → 2.0.2 (patch)");
        assert_eq!(refreshed.summary.as_deref(), Some("sidecar=2.0.2"));
        let condition = refreshed
            .condition
            .to_condition(Some(3), Time(ts(NOW_STATUS)));
        assert_eq!(
            (condition.type_.as_str(), condition.status.as_str()),
            ("UpdateAvailable", "True")
        );
        assert_eq!(condition.observed_generation, Some(3));
    }

    const NOW_STATUS: &str = "2026-11-23T15:00:00Z";

    #[test]
    fn a_digest_only_offer_is_not_mistaken_for_what_git_has() {
        let fresh = map(&[(
            "app",
            offer(
                &format!("2024.3.1@{OLD_DIGEST}"),
                &format!("2024.3.1@{REBUILD_DIGEST}"),
            ),
        )]);
        let kept = refresh(
            &BTreeMap::new(),
            &fresh,
            &git(&[("app", &format!("2024.3.1@{OLD_DIGEST}"))]),
            true,
            &BTreeMap::new(),
        );
        assert_eq!(kept.available.len(), 1);
        let done = refresh(
            &fresh,
            &fresh,
            &git(&[("app", &format!("2024.3.1@{REBUILD_DIGEST}"))]),
            true,
            &BTreeMap::new(),
        );
        assert!(done.available.is_empty());
        assert_eq!(done.cleared[0].reason, "Git already has it");
    }

    #[test]
    fn the_condition_says_up_to_date_or_not_tracked() {
        let up_to_date = refresh(
            &BTreeMap::new(),
            &BTreeMap::new(),
            &git(&[("chart", "1.0.0")]),
            true,
            &BTreeMap::new(),
        );
        assert!(!up_to_date.condition.status);
        assert_eq!(up_to_date.condition.reason, REASON_UP_TO_DATE);
        assert_eq!(up_to_date.summary, None);
        let untracked = refresh(
            &BTreeMap::new(),
            &BTreeMap::new(),
            &git(&[("chart", "1.0.0")]),
            false,
            &BTreeMap::new(),
        );
        assert_eq!(untracked.condition.reason, REASON_NOT_TRACKED);
        assert!(untracked.condition.message.contains("file patterns"));
        let why = BTreeMap::from([(
            "chart".to_owned(),
            "Renovate's findings in apps/db.yaml are for branch dev, not the app's main".to_owned(),
        )]);
        let explained = refresh(
            &BTreeMap::new(),
            &BTreeMap::new(),
            &git(&[("chart", "1.0.0")]),
            false,
            &why,
        );
        assert_eq!(
            explained.condition.message,
            "no Renovate finding matches this app's version fields: chart: Renovate's findings \
             in apps/db.yaml are for branch dev, not the app's main"
        );
    }

    #[test]
    fn end_to_end_from_log_to_status_and_decision() {
        // The pieces in the order the controller will call them.
        let parsed = parse_fixture("home_ops.ndjson");
        let fields = [db_chart(), home_assistant(), podinfo_chart()];
        let failed_versions = [failed("chart", "v1.5.0")];
        let policy = crate::api::UpdatePolicy {
            auto: AutoUpdate::Minor,
            min_release_age: Some("24h".into()),
            window: None,
        };
        let previous = BTreeMap::from([("chart".to_owned(), offer("v1.4.2", "v1.5.0"))]);
        let scope = Scope {
            repository: Some("git@github.com:home/ops.git".into()),
            branch: Some("main".into()),
        };
        let updates = app::evaluate(
            app::AppContext {
                fields: &fields[..2],
                scope: &scope,
                policy: &policy,
                failed: &failed_versions,
                previous: &previous,
            },
            &parsed.findings,
        );
        let refreshed = updates.refreshed;
        assert_eq!(
            refreshed.summary.as_deref(),
            Some(format!("app=2024.4.0@{NEW_DIGEST}, chart=v1.4.3").as_str())
        );
        assert_eq!(refreshed.cleared[0].reason, "replaced by v1.4.3");
        assert_eq!(updates.choices.len(), 2);
        // A podinfo chart field in another app: its own choice, not the image's 6.7.1.
        let podinfo = app::evaluate(
            app::AppContext {
                fields: &fields[2..],
                scope: &scope,
                policy: &policy,
                failed: &[],
                previous: &BTreeMap::new(),
            },
            &parsed.findings,
        );
        assert_eq!(podinfo.refreshed.summary.as_deref(), Some("chart=6.6.0"));
        let situation = policy::Situation {
            app_idle: true,
            running_auto_upgrades: 0,
            global_limit: 1,
            now: ts("2026-11-23T15:00:00Z"),
        };
        let policy::AutoDecision::Create { target, .. } = policy::auto_upgrade(
            "home",
            &policy,
            &refreshed.available,
            &failed_versions,
            situation,
        ) else {
            panic!("create");
        };
        assert_eq!(target["chart"], "v1.4.3");
        assert_eq!(target["app"], format!("2024.4.0@{NEW_DIGEST}"));
    }
}
