//! Tests of the manifest module through its public API: golden files of real Flux manifests,
//! one test per error, and property tests of edits on generated documents.

use super::*;
use std::path::PathBuf;

fn testdata(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/manifest/testdata")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn path(text: &str) -> YamlPath {
    YamlPath::parse(text).unwrap_or_else(|err| panic!("{err}"))
}

fn selector(text: &str) -> DocSelector {
    DocSelector::parse(text).unwrap_or_else(|err| panic!("{err}"))
}

const OLD_DIGEST: &str = "sha256:3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a3f1c9a0b2e";
const NEW_DIGEST: &str = "sha256:a7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04ea7d04e91c8";

mod golden {
    use super::*;

    struct Case {
        name: &'static str,
        doc: Option<&'static str>,
        path: &'static str,
        format: ValueFormat,
        old: String,
        new: String,
        /// Whether setting `old` back gives the input bytes (false when quoting was added).
        restores: bool,
    }

    fn case(
        name: &'static str,
        doc: Option<&'static str>,
        path: &'static str,
        old: &str,
        new: &str,
    ) -> Case {
        Case {
            name,
            doc,
            path,
            format: ValueFormat::Plain,
            old: old.to_owned(),
            new: new.to_owned(),
            restores: true,
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            case(
                "helmrelease_comments",
                None,
                ".spec.chart.spec.version",
                "6.5.0",
                "6.6.0",
            ),
            case(
                "helmrelease_single_quoted_tag",
                None,
                ".spec.values.image.tag",
                "6.5.0",
                "6.6.0",
            ),
            case(
                "ocirepository_v_prefix",
                Some("OCIRepository/cert-manager"),
                ".spec.ref.tag",
                "v1.14.4",
                "v1.15.0",
            ),
            case(
                "app_template_digest",
                Some("HelmRelease/home-assistant"),
                ".spec.values.controllers.home-assistant.containers.app.image.tag",
                &format!("2024.3.1@{OLD_DIGEST}"),
                &format!("2024.4.0@{NEW_DIGEST}"),
            ),
            case(
                "app_template_anchors",
                None,
                ".spec.values.controllers.worker.containers.app.image.tag",
                "2.7.2",
                "2.8.1",
            ),
            case(
                "flow_map",
                None,
                ".spec.chart.spec.version",
                "18.6.1",
                "18.12.0",
            ),
            case(
                "flow_map_image_tag",
                None,
                ".spec.values.image.tag",
                "7.2.4",
                "7.2.5",
            ),
            case(
                "kustomize_images",
                None,
                ".images[name=ghcr.io/stefanprodan/podinfo].newTag",
                "6.5.0",
                "6.5.4",
            ),
            case(
                "multi_document_repository_and_release",
                Some("HelmRelease/podinfo"),
                ".spec.chart.spec.version",
                "6.5.0",
                "6.7.1",
            ),
            case("crlf", None, ".spec.chart.spec.version", "7.3.7", "7.3.9"),
            case(
                "annotation_with_dots",
                Some("Deployment/podinfo"),
                ".metadata.annotations['fluxgate.dev/version']",
                "6.5.0",
                "6.6.0",
            ),
            Case {
                format: ValueFormat::Image,
                ..case(
                    "deployment_image_format",
                    None,
                    ".spec.template.spec.containers[0].image",
                    "6.5.0",
                    "6.6.0",
                )
            },
            Case {
                format: ValueFormat::Image,
                ..case(
                    "image_with_port_and_digest",
                    Some("0"),
                    ".spec.template.spec.containers[name=postgres].image",
                    &format!("16.1-alpine@{OLD_DIGEST}"),
                    &format!("16.2-alpine@{NEW_DIGEST}"),
                )
            },
            Case {
                restores: false,
                ..case(
                    "quote_when_type_would_change",
                    None,
                    ".spec.values.image.tag",
                    "1.9.0",
                    "1.10",
                )
            },
        ]
    }

    /// The one byte range in which `a` and `b` differ: (start, end in a, end in b).
    fn differing_range(a: &str, b: &str) -> (usize, usize, usize) {
        let prefix = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let suffix = a.as_bytes()[prefix..]
            .iter()
            .rev()
            .zip(b.as_bytes()[prefix..].iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        (prefix, a.len() - suffix, b.len() - suffix)
    }

    #[test]
    fn golden_edits_match_expected_files_byte_for_byte() {
        for case in cases() {
            let name = case.name;
            let input = testdata(&format!("{name}.input.yaml"));
            let expected = testdata(&format!("{name}.expected.yaml"));
            let doc = case.doc.map(selector);
            let yaml_path = path(case.path);

            let before = get_version(&input, doc.as_ref(), &yaml_path, case.format);
            assert_eq!(before, Ok(case.old.clone()), "{name}: get before");

            let edit = set(&input, doc.as_ref(), &yaml_path, &case.new, case.format)
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(edit.changed(), "{name}");
            assert_eq!(
                edit.text, expected,
                "{name}: output differs from the golden file"
            );

            // Only the scalar's bytes changed: the differing range lies inside the old value.
            let (start, old_end, _) = differing_range(&input, &edit.text);
            let changed_old = &input[start..old_end];
            assert!(
                !changed_old.contains(['\r', '\n', '#']),
                "{name}: change spans more than the scalar: {changed_old:?}"
            );

            let after = get_version(&edit.text, doc.as_ref(), &yaml_path, case.format);
            assert_eq!(after, Ok(case.new.clone()), "{name}: get after");

            let back = set(&edit.text, doc.as_ref(), &yaml_path, &case.old, case.format)
                .unwrap_or_else(|err| panic!("{name}: set back: {err}"));
            if case.restores {
                assert_eq!(
                    back.text, input,
                    "{name}: set back must restore the input bytes"
                );
            } else {
                assert_eq!(
                    get_version(&back.text, doc.as_ref(), &yaml_path, case.format),
                    Ok(case.old.clone()),
                    "{name}"
                );
            }

            let again = set(&edit.text, doc.as_ref(), &yaml_path, &case.new, case.format)
                .unwrap_or_else(|err| panic!("{name}: set again: {err}"));
            assert!(
                !again.changed(),
                "{name}: setting the same value is a no-op"
            );
            assert_eq!(again.text, edit.text, "{name}");
        }
    }

    #[test]
    fn golden_files_cover_crlf_and_multi_documents() {
        let crlf = testdata("crlf.expected.yaml");
        assert_eq!(crlf.matches("\r\n").count(), crlf.matches('\n').count());
        let multi = testdata("multi_document_repository_and_release.expected.yaml");
        assert!(
            multi.contains("\n...\n---\n"),
            "the `...` and `---` markers are kept"
        );
    }

    /// Small inputs for the scalar styles and placements real files use.
    #[test]
    fn edits_keep_style_and_surroundings() {
        let cases = [
            ("a: !!str 1.0\n", ".a", "1.10", "a: !!str 1.10\n"),
            (
                "\"version\": 1.2.3\n",
                ".version",
                "1.2.4",
                "\"version\": 1.2.4\n",
            ),
            ("x: [a, 1.2.3]\n", ".x[1]", "a,b", "x: [a, \"a,b\"]\n"),
            ("x: [a, 1.2.3]\n", ".x[1]", "1.3.0", "x: [a, 1.3.0]\n"),
            (
                "- {name: app, tag: 1.0}\n",
                "[name=app].tag",
                "2.0",
                "- {name: app, tag: \"2.0\"}\n",
            ),
            ("\u{feff}a: 1.0.0\n", ".a", "1.0.1", "\u{feff}a: 1.0.1\n"),
            (
                "%YAML 1.2\n---\na: 'x'\n",
                ".a",
                "it's",
                "%YAML 1.2\n---\na: 'it''s'\n",
            ),
            (
                "a: \"x\"\n",
                ".a",
                "say \"hi\" \\o/",
                "a: \"say \\\"hi\\\" \\\\o/\"\n",
            ),
            ("a: 1.0.0#not-a-comment\n", ".a", "2.0.0", "a: 2.0.0\n"),
            ("a: multi\n  line\nb: 1\n", ".a", "one", "a: one\nb: 1\n"),
            ("replicas: 2\n", ".replicas", "3", "replicas: 3\n"),
            ("tag: 16\n", ".tag", "17-alpine", "tag: 17-alpine\n"),
            (
                "tag: 1.2.3\n",
                ".tag",
                "2024-01-15",
                "tag: \"2024-01-15\"\n",
            ),
            (
                "tag: \u{e9}t\u{e9}\n",
                ".tag",
                "\u{fc}ber",
                "tag: \u{fc}ber\n",
            ),
            ("k: &a 1.0.0\n", ".k", "2.0.0", "k: &a 2.0.0\n"),
        ];
        for (input, path_text, value, expected) in cases {
            let edit = set(input, None, &path(path_text), value, ValueFormat::Plain);
            assert_eq!(edit.map(|e| e.text), Ok(expected.to_owned()), "{input:?}");
        }
    }

    #[test]
    fn plain_and_image_formats_read_the_same_field_differently() {
        let input = testdata("deployment_image_format.input.yaml");
        let image = path(".spec.template.spec.containers[0].image");
        assert_eq!(
            get(&input, None, &image),
            Ok("ghcr.io/stefanprodan/podinfo:6.5.0".to_owned())
        );
        let plain = set(&input, None, &image, "nginx:1.27", ValueFormat::Plain).map(|e| e.text);
        assert_eq!(
            plain,
            Ok(input.replace("ghcr.io/stefanprodan/podinfo:6.5.0", "nginx:1.27"))
        );
    }
}

mod errors {
    use super::*;

    const RELEASE: &str = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  chart:
    spec:
      version: 6.5.0
";

    fn set_err(text: &str, path_text: &str, value: &str, format: ValueFormat) -> ManifestError {
        match set(text, None, &path(path_text), value, format) {
            Ok(edit) => panic!("expected an error, got {:?}", edit.text),
            Err(err) => err,
        }
    }

    fn assert_mentions(err: &ManifestError, category: &str, needles: &[&str]) {
        assert_eq!(err.category(), category, "{err}");
        let message = err.to_string();
        for needle in needles {
            assert!(
                message.contains(needle),
                "`{message}` should mention `{needle}`"
            );
        }
    }

    #[test]
    fn file_over_one_mib_is_refused() {
        let big = format!("{RELEASE}# {}\n", "x".repeat(MAX_FILE_BYTES));
        let err = set_err(
            &big,
            ".spec.chart.spec.version",
            "6.6.0",
            ValueFormat::Plain,
        );
        assert_mentions(&err, "file_too_large", &["1048576-byte limit"]);
        let from_bytes = text_from_bytes(big.as_bytes()).map(str::len);
        assert_eq!(from_bytes.map_err(|e| e.category()), Err("file_too_large"));
        assert_eq!(text_from_bytes(RELEASE.as_bytes()), Ok(RELEASE));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut bytes = RELEASE.as_bytes().to_vec();
        bytes.insert(10, 0xff);
        let err = text_from_bytes(&bytes).err();
        assert_eq!(err, Some(ManifestError::InvalidUtf8 { valid_up_to: 10 }));
        assert!(
            err.is_some_and(
                |e| e.category() == "invalid_utf8" && e.to_string().contains("offset 10")
            )
        );
    }

    #[test]
    fn deep_nesting_is_a_syntax_error_not_a_crash() {
        let depth = 100_000;
        let deep = format!("a: {}1{}\n", "[".repeat(depth), "]".repeat(depth));
        let err = set_err(&deep, ".a[0]", "2", ValueFormat::Plain);
        assert_eq!(err.category(), "yaml_syntax", "{err}");
        let mut block = String::new();
        for level in 0..1_000 {
            block.push_str(&format!("{}k:\n", " ".repeat(level)));
        }
        let err = get(&block, None, &path(".k")).err();
        assert!(
            err.is_some(),
            "1,000 nested mappings must be refused or fail cleanly"
        );
    }

    #[test]
    fn yaml_syntax_errors_are_reported_with_position() {
        let err = set_err("a: [1, 2\nb: 3\n", ".a[0]", "4", ValueFormat::Plain);
        assert_mentions(&err, "yaml_syntax", &["not valid YAML", "line"]);
        let tabs = get("a:\n\tb: 1\n", None, &path(".a.b")).err();
        assert_eq!(tabs.map(|e| e.category()), Some("yaml_syntax"));
    }

    #[test]
    fn invalid_path_and_selector_are_refused_before_reading() {
        let err = YamlPath::parse("spec.chart").err();
        assert!(err.is_some_and(
            |e| e.category() == "invalid_path" && e.to_string().contains("`spec.chart`")
        ));
        let err = DocSelector::parse("HelmRelease").err();
        assert!(err.is_some_and(|e| e.category() == "invalid_selector"));
    }

    #[test]
    fn missing_and_ambiguous_documents_are_refused() {
        let multi = testdata("multi_document_repository_and_release.input.yaml");
        let version = path(".spec.chart.spec.version");
        let err = set(&multi, None, &version, "1.0.0", ValueFormat::Plain).err();
        let err = err.unwrap_or_else(|| panic!("two documents without a selector must fail"));
        assert_mentions(
            &err,
            "ambiguous_document",
            &["0: HelmRepository/podinfo", "1: HelmRelease/podinfo"],
        );
        let err = get(&multi, Some(&selector("HelmRelease/grafana")), &version).err();
        let err = err.unwrap_or_else(|| panic!("unknown document must fail"));
        assert_mentions(&err, "document_not_found", &["HelmRelease/grafana"]);
    }

    #[test]
    fn missing_path_is_an_error_and_nothing_is_created() {
        let err = set_err(
            RELEASE,
            ".spec.chart.spec.versoin",
            "6.6.0",
            ValueFormat::Plain,
        );
        assert_mentions(
            &err,
            "path_not_found",
            &[
                "`.spec.chart.spec.versoin`",
                "HelmRelease/podinfo",
                "keys here: `version`",
                "never creates",
            ],
        );
        let err = set_err(
            RELEASE,
            ".spec.chart.spec.version.x",
            "1",
            ValueFormat::Plain,
        );
        assert_mentions(&err, "path_not_found", &["it is a scalar"]);
        let err = set_err(RELEASE, ".spec[0]", "1", ValueFormat::Plain);
        assert_mentions(&err, "path_not_found", &["not a sequence"]);
        let list = "images:\n- name: a\n  newTag: 1\n";
        let err = set_err(list, ".images[3].newTag", "2", ValueFormat::Plain);
        assert_mentions(&err, "path_not_found", &["has 1 items"]);
        let err = set_err(list, ".images[name=b].newTag", "2", ValueFormat::Plain);
        assert_mentions(&err, "path_not_found", &["`name` values here: `a`"]);
        let merged = "base: &b {tag: 1.0.0}\napp:\n  <<: *b\n";
        let err = set_err(merged, ".app.version", "2.0.0", ValueFormat::Plain);
        assert_mentions(&err, "path_not_found", &["keys here: none"]);
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let list = "images:\n- name: a\n  newTag: 1.0.0\n- name: a\n  newTag: 2.0.0\n";
        let err = set_err(list, ".images[name=a].newTag", "3.0.0", ValueFormat::Plain);
        assert_mentions(&err, "ambiguous_path", &["2 items have `name: a`"]);
        let duplicate = "tag: 1.0.0\ntag: 2.0.0\n";
        let err = set_err(duplicate, ".tag", "3.0.0", ValueFormat::Plain);
        assert_mentions(&err, "ambiguous_path", &["appears 2 times"]);
    }

    #[test]
    fn collections_are_not_scalars() {
        let err = set_err(RELEASE, ".spec.chart", "1", ValueFormat::Plain);
        assert_mentions(&err, "not_a_scalar", &["leads to a mapping", ".spec.chart"]);
        let err = get("a: [1]\n", None, &path(".a")).err();
        assert!(err.is_some_and(|e| e.to_string().contains("leads to a sequence")));
    }

    #[test]
    fn merged_in_from_several_mappings_is_ambiguous() {
        let two = "a: &a {tag: 1.0.0}\nb: &b {tag: 2.0.0}\napp:\n  <<: [*a, *b]\n";
        let err = set_err(two, ".app.tag", "3.0.0", ValueFormat::Plain);
        assert_mentions(&err, "ambiguous_path", &["`.app.tag`", "from 2 mappings"]);
        // Only one of them has the key: no doubt which one is read.
        let one = "a: &a {tag: 1.0.0}\nb: &b {other: x}\napp:\n  <<: [*b, *a]\n";
        let edit = set(one, None, &path(".app.tag"), "3.0.0", ValueFormat::Plain);
        assert_eq!(edit.map(|e| e.text), Ok(one.replace("1.0.0", "3.0.0")));
    }

    #[test]
    fn block_scalars_are_refused() {
        let err = set_err(
            "version: |\n  1.0.0\n",
            ".version",
            "2.0.0",
            ValueFormat::Plain,
        );
        assert_mentions(&err, "block_scalar", &["`.version`", "plain or quoted"]);
        let err = set_err(
            "version: >-\n  1.0.0\n",
            ".version",
            "2.0.0",
            ValueFormat::Plain,
        );
        assert_eq!(err.category(), "block_scalar");
    }

    #[test]
    fn empty_values_are_refused() {
        let err = set_err(
            "version:\nnext: 1\n",
            ".version",
            "2.0.0",
            ValueFormat::Plain,
        );
        assert_mentions(
            &err,
            "empty_value",
            &["`.version`", "write the current version"],
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = format!("*l{}", level - 1);
            let items = [prev.as_str(); 10].join(", ");
            bomb.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        bomb.push_str("version: 1.0.0\n");
        let err = set_err(&bomb, ".version", "2.0.0", ValueFormat::Plain);
        assert_mentions(&err, "alias_bomb", &["1000000 nodes"]);
        let err = get(&bomb, None, &path(".version")).err();
        assert_eq!(err.map(|e| e.category()), Some("alias_bomb"));
    }

    /// Many anchors and aliases (legal, not a bomb) in a file near the size limit are read
    /// in linear time.
    #[test]
    fn many_anchors_near_the_size_limit_are_fine() {
        let mut text = String::new();
        let mut index = 0;
        while text.len() < MAX_FILE_BYTES - 100 {
            text.push_str(&format!(
                "a{index}: &x{index} v{index}\nb{index}: *x{index}\n"
            ));
            index += 1;
        }
        text.push_str("version: 1.0.0\n");
        let started = std::time::Instant::now();
        let edit = set(&text, None, &path(".version"), "1.0.1", ValueFormat::Plain);
        assert_eq!(edit.map(|e| e.text.len()), Ok(text.len()));
        assert!(
            started.elapsed().as_secs() < 20,
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn image_format_needs_an_image_reference() {
        let text = "image: \"not an image!\"\n";
        let err = set_err(text, ".image", "1.2.3", ValueFormat::Image);
        assert_mentions(&err, "invalid_image", &["`.image`", "whitespace"]);
        let untagged = "image: nginx\n";
        let err = get_version(untagged, None, &path(".image"), ValueFormat::Image).err();
        assert!(err.is_some_and(|e| e.category() == "invalid_image" && e.to_string().contains("no tag")));
        let err = set_err(untagged, ".image", "1.27", ValueFormat::Image);
        assert_mentions(&err, "invalid_image", &["no tag", "nginx"]);
        let err = set_err(
            "image: nginx:1.0\n",
            ".image",
            "bad tag!",
            ValueFormat::Image,
        );
        assert_mentions(&err, "invalid_value", &["not a valid tag"]);
    }

    #[test]
    fn digest_pinned_images_need_a_new_digest() {
        let text = format!("image: app:1.0@{OLD_DIGEST}\n");
        let err = set_err(&text, ".image", "1.1", ValueFormat::Image);
        assert_mentions(&err, "digest_required", &["`.image`", "TAG@sha256:"]);
        // A digest-pinned tag is one unit in plain format too.
        let tag = format!("tag: 1.0@{OLD_DIGEST}\n");
        let err = set_err(&tag, ".tag", "1.1", ValueFormat::Plain);
        assert_mentions(&err, "digest_required", &["`.tag`", "`1.1`"]);
        let edit = set(
            &tag,
            None,
            &path(".tag"),
            &format!("1.1@{NEW_DIGEST}"),
            ValueFormat::Plain,
        );
        assert_eq!(edit.map(|e| e.text), Ok(format!("tag: 1.1@{NEW_DIGEST}\n")));
    }

    #[test]
    fn invalid_new_values_are_refused() {
        for value in ["", "1.2\n3", " 1.2.3", "1.2.3\t"] {
            let err = set_err(
                RELEASE,
                ".spec.chart.spec.version",
                value,
                ValueFormat::Plain,
            );
            assert_eq!(err.category(), "invalid_value", "{value:?}");
        }
    }

    #[test]
    fn verification_catches_any_other_change() {
        let text = "a: 1.0.0\nb: [x, y]\n---\nc: z\n";
        let before = tree::parse(text).unwrap_or_else(|err| panic!("{err}"));
        let check = |edited: &str, target: &str| edit::verify(&before, edited, 0, &[0], target);
        assert_eq!(check("a: 2.0.0\nb: [x, y]\n---\nc: z\n", "2.0.0"), Ok(()));
        assert_eq!(check("a: \"1.10\"\nb: [x, y]\n---\nc: z\n", "1.10"), Ok(()));
        let failures = [
            ("a: 2.0.0\nb: [x, q]\n---\nc: z\n", "2.0.0"),
            ("a: 2.0.0\nb: [x, y]\n---\nc: q\n", "2.0.0"),
            ("a: 2.0.0\nb: [x, y]\n", "2.0.0"),
            ("a: 1.10\nb: [x, y]\n---\nc: z\n", "1.10"),
            ("a: 2.0.0 #\nb: [x, y, z]\n---\nc: z\n", "2.0.0"),
            ("a: 3.0.0\nb: [x, y]\n---\nc: z\n", "2.0.0"),
            ("a: [2.0.0\nb: [x, y]\n---\nc: z\n", "2.0.0"),
        ];
        for (edited, target) in failures {
            assert!(
                check(edited, target).is_err(),
                "{edited:?} must fail verification"
            );
        }
        let err = ManifestError::VerificationFailed {
            path: ".a".to_owned(),
            doc: "document 0 of 2".to_owned(),
            detail: "x".to_owned(),
        };
        assert_mentions(&err, "verification_failed", &["the file was not changed"]);
    }
}

mod anchors {
    use super::*;

    fn edited(text: &str, path_text: &str, value: &str) -> String {
        set(text, None, &path(path_text), value, ValueFormat::Plain)
            .unwrap_or_else(|err| panic!("{path_text}: {err}"))
            .text
    }

    fn shared(text: &str, path_text: &str) -> Option<Sharing> {
        sharing(text, None, &path(path_text)).unwrap_or_else(|err| panic!("{path_text}: {err}"))
    }

    #[test]
    fn an_anchored_scalar_is_edited_at_its_definition_from_any_path() {
        let text = "version: &v 1.0.0 # here\nother: *v\nalias: *v\n";
        let expected = "version: &v 2.0.0 # here\nother: *v\nalias: *v\n";
        for through in [".version", ".other", ".alias"] {
            assert_eq!(get(text, None, &path(through)), Ok("1.0.0".to_owned()));
            assert_eq!(edited(text, through, "2.0.0"), expected, "{through}");
        }
        assert_eq!(
            shared(text, ".alias"),
            Some(Sharing {
                line: 1,
                paths: vec![".other".into(), ".version".into()],
                more: 0
            })
        );
        assert_eq!(
            shared(text, ".version").map(|s| s.to_string()),
            Some("written once at line 1 and also read at `.alias`, `.other`".to_owned())
        );
        // An anchor nothing repeats is shared with nobody.
        assert_eq!(shared("version: &v 1.0.0\n", ".version"), None);
        assert_eq!(shared("a: 1.0.0\nb: 1.0.0\n", ".a"), None);
    }

    #[test]
    fn a_path_through_an_aliased_mapping_edits_the_anchored_mapping() {
        let flow = "base: &b {image: {tag: 1.0.0}}\napp: *b\n";
        assert_eq!(
            edited(flow, ".app.image.tag", "2.0.0"),
            "base: &b {image: {tag: 2.0.0}}\napp: *b\n"
        );
        // The flow context of the definition decides the quoting, not the alias's place.
        assert_eq!(
            edited(flow, ".app.image.tag", "a,b"),
            "base: &b {image: {tag: \"a,b\"}}\napp: *b\n"
        );
        let nested = "defaults: &d\n  image: &i\n    tag: 1.0.0\nworker:\n  image: *i\nweb: *d\n";
        assert_eq!(
            shared(nested, ".worker.image.tag").map(|s| s.paths),
            Some(vec![".defaults.image.tag".into(), ".web.image.tag".into()])
        );
        let items = "defaults: &d {name: app, newTag: 1.0.0}\nimages:\n- *d\n";
        assert_eq!(
            edited(items, ".images[name=app].newTag", "1.1.0"),
            items.replace("1.0.0", "1.1.0")
        );
        assert_eq!(
            shared(items, ".images[name=app].newTag").map(|s| s.paths),
            Some(vec![".defaults.newTag".into()])
        );
    }

    #[test]
    fn merge_keys_are_followed_and_own_keys_win() {
        let merged = "base: &b\n  tag: 1.0.0\napp:\n  <<: *b\n  name: x\n";
        assert_eq!(get(merged, None, &path(".app.tag")), Ok("1.0.0".to_owned()));
        assert_eq!(
            edited(merged, ".app.tag", "2.0.0"),
            merged.replace("1.0.0", "2.0.0")
        );
        assert_eq!(
            shared(merged, ".base.tag").map(|s| s.paths),
            Some(vec![".app.tag".into()])
        );
        // The mapping overrides the merged key: its own value is read and edited alone.
        let overridden = "base: &b\n  tag: 1.0.0\napp:\n  <<: *b\n  tag: 3.0.0\n";
        assert_eq!(
            edited(overridden, ".app.tag", "4.0.0"),
            overridden.replace("3.0.0", "4.0.0")
        );
        assert_eq!(shared(overridden, ".base.tag"), None);
        assert_eq!(shared(overridden, ".app.tag"), None);
    }

    #[test]
    fn the_golden_app_template_says_who_shares_the_tag() {
        let input = testdata("app_template_anchors.input.yaml");
        let paths = shared(
            &input,
            ".spec.values.controllers.worker.containers.app.image.tag",
        );
        assert_eq!(
            paths,
            Some(Sharing {
                line: 19,
                paths: vec![".spec.values.controllers.paperless.containers.app.image.tag".into()],
                more: 0
            })
        );
        // The merged env is read through `<<`, and an own key beside it stays its own.
        let workers =
            path(".spec.values.controllers.worker.containers.app.env.PAPERLESS_TASK_WORKERS");
        assert_eq!(get(&input, None, &workers), Ok("2".to_owned()));
        let zone = path(".spec.values.controllers.worker.containers.app.env.PAPERLESS_TIME_ZONE");
        assert_eq!(get(&input, None, &zone), Ok("Europe/Berlin".to_owned()));
    }

    #[test]
    fn a_self_referencing_anchor_does_not_hang() {
        let text = "a: &a [1.0.0, *a]\nb: *a\n";
        assert_eq!(
            get(text, None, &path(".b[1][1][0]")),
            Ok("1.0.0".to_owned())
        );
        let found = sharing(text, None, &path(".a[0]"));
        assert!(found.is_ok(), "{found:?}");
    }

    #[test]
    fn merges_that_repeat_or_contain_themselves_end_quickly() {
        let mut text = String::from("m0: &m0 {tag: 1.0.0, <<: *m0}\n");
        for level in 1..10 {
            let previous = level - 1;
            text.push_str(&format!(
                "m{level}: &m{level} {{<<: [*m{previous}, *m{previous}, *m{previous}]}}\n"
            ));
        }
        text.push_str("app:\n  <<: *m9\n");
        let started = std::time::Instant::now();
        assert_eq!(get(&text, None, &path(".app.tag")), Ok("1.0.0".to_owned()));
        let found = sharing(&text, None, &path(".m0.tag")).unwrap();
        assert!(found.is_some_and(|s| s.paths.contains(&".app.tag".to_owned())));
        assert!(
            started.elapsed().as_secs() < 5,
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn many_paths_to_one_anchor_are_counted_not_listed() {
        let mut text = String::from("base: &t 1.0.0\n");
        for index in 0..25 {
            text.push_str(&format!("a{index:02}: *t\n"));
        }
        let found = shared(&text, ".base").unwrap();
        assert_eq!(found.paths.len(), 10);
        assert_eq!(found.more, 15);
        assert!(found.to_string().ends_with(" and 15 more"), "{found}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// A generated YAML node; leaves know how to write themselves.
    #[derive(Debug, Clone)]
    enum Gen {
        Map(Vec<(String, Gen)>),
        Seq(Vec<Gen>),
        Leaf(String, Style),
        /// A leaf carrying the anchor `&shared`.
        Anchored(String, Style),
        /// The alias `*shared`.
        Alias,
    }

    #[derive(Debug, Clone, Copy)]
    enum Style {
        Plain,
        Single,
        Double,
    }

    fn plain_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "v?[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-rc\\.[0-9])?",
            "[a-z][a-z0-9-]{0,8}",
            "[a-z]{1,5}\\.[a-z]{2,3}/[a-z]{1,6}:[0-9]\\.[0-9]",
        ]
        .prop_filter("plain strings only", |s| {
            scalar::classify_plain(s) == scalar::PlainType::String
        })
    }

    fn leaf() -> impl Strategy<Value = Gen> {
        prop_oneof![
            plain_string().prop_map(|s| Gen::Leaf(s, Style::Plain)),
            "[ -~]{0,12}".prop_map(|s| Gen::Leaf(s, Style::Single)),
            "[ -~é]{0,12}".prop_map(|s| Gen::Leaf(s, Style::Double)),
        ]
    }

    fn node() -> impl Strategy<Value = Gen> {
        leaf().prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::btree_map("k[a-z]{0,5}", inner.clone(), 1..5)
                    .prop_map(|m| Gen::Map(m.into_iter().collect())),
                prop::collection::vec(inner, 1..4).prop_map(Gen::Seq),
            ]
        })
    }

    fn document() -> impl Strategy<Value = Gen> {
        prop::collection::btree_map("k[a-z]{0,5}", node(), 1..5)
            .prop_map(|m| Gen::Map(m.into_iter().collect()))
    }

    /// How the generated file is laid out.
    #[derive(Debug, Clone)]
    struct Layout {
        newline: &'static str,
        flow_leaf_maps: bool,
        comments: bool,
    }

    fn write_leaf(value: &str, style: Style) -> String {
        match style {
            Style::Plain => value.to_owned(),
            Style::Single => format!("'{}'", value.replace('\'', "''")),
            Style::Double => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
        }
    }

    fn only_leaves(entries: &[(String, Gen)]) -> bool {
        entries.iter().all(|(_, v)| matches!(v, Gen::Leaf(..)))
    }

    /// Writes `node` as the value after `key:` or `-` at `indent`.
    fn write_value(out: &mut String, node: &Gen, indent: usize, layout: &Layout) {
        let nl = layout.newline;
        match node {
            Gen::Leaf(value, style) | Gen::Anchored(value, style) => {
                out.push(' ');
                if matches!(node, Gen::Anchored(..)) {
                    out.push_str("&shared ");
                }
                out.push_str(&write_leaf(value, *style));
                if layout.comments {
                    out.push_str("  # note");
                }
                out.push_str(nl);
            }
            Gen::Alias => {
                out.push_str(" *shared");
                out.push_str(nl);
            }
            Gen::Map(entries) if layout.flow_leaf_maps && only_leaves(entries) => {
                let items: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| match v {
                        Gen::Leaf(value, style) => format!("{k}: {}", write_leaf(value, *style)),
                        _ => String::new(),
                    })
                    .collect();
                out.push_str(&format!(" {{{}}}{nl}", items.join(", ")));
            }
            Gen::Map(entries) => {
                out.push_str(nl);
                write_map(out, entries, indent + 2, layout);
            }
            Gen::Seq(items) => {
                out.push_str(nl);
                for item in items {
                    out.push_str(&" ".repeat(indent));
                    out.push('-');
                    match item {
                        Gen::Map(entries) if !(layout.flow_leaf_maps && only_leaves(entries)) => {
                            out.push_str(nl);
                            write_map(out, entries, indent + 2, layout);
                        }
                        _ => write_value(out, item, indent + 2, layout),
                    }
                }
            }
        }
    }

    fn write_map(out: &mut String, entries: &[(String, Gen)], indent: usize, layout: &Layout) {
        for (key, value) in entries {
            if layout.comments {
                out.push_str(&format!(
                    "{}# about {key}{}",
                    " ".repeat(indent),
                    layout.newline
                ));
            }
            out.push_str(&format!("{}{key}:", " ".repeat(indent)));
            write_value(out, value, indent, layout);
        }
        if layout.comments {
            out.push_str(layout.newline);
        }
    }

    fn write_file(documents: &[Gen], layout: &Layout) -> String {
        let mut out = String::new();
        for document in documents {
            out.push_str("---");
            out.push_str(layout.newline);
            if let Gen::Map(entries) = document {
                write_map(&mut out, entries, 0, layout);
            }
        }
        out
    }

    /// Every leaf of `node` with its path in the documented syntax.
    fn leaves(node: &Gen, prefix: String, out: &mut Vec<(String, String)>) {
        match node {
            Gen::Leaf(value, _) | Gen::Anchored(value, _) => out.push((prefix, value.clone())),
            Gen::Alias => {}
            Gen::Map(entries) => {
                for (key, value) in entries {
                    leaves(value, format!("{prefix}.{key}"), out);
                }
            }
            Gen::Seq(items) => {
                for (index, item) in items.iter().enumerate() {
                    leaves(item, format!("{prefix}[{index}]"), out);
                }
            }
        }
    }

    /// Puts the anchor `&shared` on the leaf at `target` (a path from [`leaves`]).
    fn anchor_leaf(node: &mut Gen, prefix: String, target: &str) {
        match node {
            Gen::Leaf(value, style) if prefix == target => {
                *node = Gen::Anchored(value.clone(), *style);
            }
            Gen::Map(entries) => {
                for (key, value) in entries {
                    anchor_leaf(value, format!("{prefix}.{key}"), target);
                }
            }
            Gen::Seq(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    anchor_leaf(item, format!("{prefix}[{index}]"), target);
                }
            }
            _ => {}
        }
    }

    /// Every leaf of every document: (document index, path, value).
    fn all_leaves(documents: &[Gen]) -> Vec<(usize, String, String)> {
        let mut all = Vec::new();
        for (index, document) in documents.iter().enumerate() {
            let mut found = Vec::new();
            leaves(document, String::new(), &mut found);
            all.extend(found.into_iter().map(|(p, v)| (index, p, v)));
        }
        all
    }

    /// Values `set` must be able to write back (versions are never empty or space-padded).
    fn settable(value: &str) -> bool {
        !value.is_empty() && value.trim() == value
    }

    fn json_path<'a>(value: &'a mut Value, yaml_path: &YamlPath) -> Option<&'a mut Value> {
        let mut current = value;
        for segment in yaml_path.segments() {
            current = match segment {
                path::Segment::Key(key) => current.get_mut(key.as_str())?,
                path::Segment::Index(index) => current.get_mut(*index)?,
                path::Segment::Match { .. } => return None,
            };
        }
        Some(current)
    }

    fn new_value() -> impl Strategy<Value = String> {
        prop_oneof![
            plain_string(),
            Just("1.10".to_owned()),
            Just("yes".to_owned()),
            Just("null".to_owned()),
            Just("010".to_owned()),
            Just("1e3".to_owned()),
            Just("a: b".to_owned()),
            Just("@latest".to_owned()),
            Just("x #y".to_owned()),
            Just("it's \"q\"".to_owned()),
            Just("a,b]".to_owned()),
            Just("back\\slash".to_owned()),
            "[!-~][ -~]{0,10}[!-~]",
            "[a-zé]{1,6}",
        ]
    }

    /// One line of text that is often, but not always, valid YAML.
    fn yamlish_line() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "[a-c]: [a-c0-9.]{1,5}",
            3 => "  [a-c]: [a-c0-9.'\"]{1,5}",
            2 => "[a-c]:",
            2 => "- [a-c0-9.]{1,4}",
            1 => "[a-c]: \\{[a-c]: [a-c0-9.]{1,3}\\}",
            1 => " {0,4}[a-c]: ?[a-c0-9.'\"#&*!|>@{}\\[\\],:~-]{0,6}",
            1 => " {0,4}- ?[a-c0-9.'\"#{}\\[\\]:-]{0,6}",
            1 => "---",
            1 => "# [ -~]{0,6}",
            1 => "[ -~]{0,8}",
        ]
    }

    fn layout() -> impl Strategy<Value = Layout> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(crlf, flow, comments)| Layout {
            newline: if crlf { "\r\n" } else { "\n" },
            flow_leaf_maps: flow,
            comments,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// parse(set(x)) == parse(x) with the one value changed, checked with serde-saphyr's
        /// typed deserializer (an independent reading of the result), and set-back restores
        /// the original text whenever the new value did not need different quoting.
        #[test]
        fn set_changes_exactly_one_value(
            documents in prop::collection::vec(document(), 1..3),
            layout in layout(),
            pick in any::<prop::sample::Index>(),
            value in new_value(),
        ) {
            let text = write_file(&documents, &layout);
            let all = all_leaves(&documents);
            let (doc_index, path_text, old) = pick.get(&all).clone();
            prop_assume!(settable(&old));
            let yaml_path = path(&path_text);
            let doc = DocSelector::Index(doc_index);

            let mut expected: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|err| TestCaseError::fail(format!("generated YAML must parse: {err}\n{text}")))?;
            let edit = set(&text, Some(&doc), &yaml_path, &value, ValueFormat::Plain)
                .map_err(|err| TestCaseError::fail(format!("{err}\n{text}")))?;
            prop_assert_eq!(&edit.old, &old);

            let slot = expected.get_mut(doc_index).and_then(|d| json_path(d, &yaml_path));
            let slot = slot.ok_or_else(|| TestCaseError::fail("path missing in JSON"))?;
            *slot = Value::String(value.clone());
            let actual: Vec<Value> = serde_saphyr::from_multiple(&edit.text)
                .map_err(|err| TestCaseError::fail(format!("edited YAML must parse: {err}\n{}", edit.text)))?;
            prop_assert_eq!(actual, expected, "edited:\n{}", edit.text);

            let back = set(&edit.text, Some(&doc), &yaml_path, &old, ValueFormat::Plain)
                .map_err(|err| TestCaseError::fail(format!("set back: {err}")))?;
            prop_assert_eq!(get(&back.text, Some(&doc), &yaml_path), Ok(old.clone()));
            if edit.text.len() - value.len() == text.len() - old.len() || old == value {
                // The value was written in its original style: the bytes come back exactly.
                prop_assert_eq!(&back.text, &text);
            }
        }

        /// A leaf anchored and repeated through an alias is one value: setting it through
        /// the alias changes the definition's bytes only, and every reader — read with
        /// serde-saphyr, which expands aliases as kustomize does — sees the new value.
        #[test]
        fn set_through_an_alias_changes_every_reader(
            documents in prop::collection::vec(document(), 1..3),
            layout in layout(),
            pick in any::<prop::sample::Index>(),
            value in new_value(),
        ) {
            let all = all_leaves(&documents);
            let (doc_index, path_text, old) = pick.get(&all).clone();
            prop_assume!(settable(&old));
            let mut documents = documents;
            anchor_leaf(&mut documents[doc_index], String::new(), &path_text);
            if let Gen::Map(entries) = &mut documents[doc_index] {
                entries.push(("zalias".to_owned(), Gen::Alias));
            }
            let text = write_file(&documents, &layout);
            let doc = DocSelector::Index(doc_index);
            let alias = path(".zalias");
            prop_assert_eq!(get(&text, Some(&doc), &alias), Ok(old.clone()));

            let mut expected: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|err| TestCaseError::fail(format!("generated YAML must parse: {err}\n{text}")))?;
            let edit = set(&text, Some(&doc), &alias, &value, ValueFormat::Plain)
                .map_err(|err| TestCaseError::fail(format!("{err}\n{text}")))?;
            for reader in [path(&path_text), alias.clone()] {
                let slot = expected.get_mut(doc_index).and_then(|d| json_path(d, &reader));
                let slot = slot.ok_or_else(|| TestCaseError::fail("path missing in JSON"))?;
                *slot = Value::String(value.clone());
            }
            let actual: Vec<Value> = serde_saphyr::from_multiple(&edit.text)
                .map_err(|err| TestCaseError::fail(format!("edited YAML must parse: {err}\n{}", edit.text)))?;
            prop_assert_eq!(actual, expected, "edited:\n{}", edit.text);
            let shared = sharing(&edit.text, Some(&doc), &alias)
                .map_err(|err| TestCaseError::fail(err.to_string()))?
                .map(|s| s.paths);
            prop_assert_eq!(shared, Some(vec![path(&path_text).prefix(usize::MAX)]));

            // Setting back through the definition restores the bytes when the style held.
            let back = set(&edit.text, Some(&doc), &path(&path_text), &old, ValueFormat::Plain)
                .map_err(|err| TestCaseError::fail(format!("set back: {err}")))?;
            if edit.text.len() - value.len() == text.len() - old.len() || old == value {
                prop_assert_eq!(&back.text, &text);
            }
        }

        /// Arbitrary YAML-ish text never panics, and whatever `set` accepts reads back as set.
        #[test]
        fn arbitrary_input_is_refused_or_edited_correctly(
            lines in prop::collection::vec(yamlish_line(), 0..8),
            crlf in any::<bool>(),
            path_text in prop_oneof![
                4 => "\\.[a-c]",
                2 => "\\.[a-c]\\.[a-c]",
                1 => "\\.[a-c]\\[[01]\\]",
                1 => "\\[[01]\\]\\.?[a-c]?",
                1 => "[.\\[\\]a-c0-2='\"]{1,8}",
            ],
            value in prop_oneof![4 => "[a-c0-9][a-c0-9.-]{0,6}", 1 => "[a-c0-9.:#@' \"-]{0,8}"],
            image in any::<bool>(),
        ) {
            let text = lines.join(if crlf { "\r\n" } else { "\n" });
            let Ok(yaml_path) = YamlPath::parse(&path_text) else {
                return Ok(());
            };
            let format = if image { ValueFormat::Image } else { ValueFormat::Plain };
            let read = get_version(&text, None, &yaml_path, format);
            if let Ok(edit) = set(&text, None, &yaml_path, &value, format) {
                prop_assert!(read.is_ok(), "set succeeded where get failed: {:?}", read);
                let after = get_version(&edit.text, None, &yaml_path, format);
                prop_assert_eq!(after.as_deref().ok(), Some(value.as_str()), "{:?}", edit.text);
            }
        }

        /// With values that are safe in every style, set then set back restores the bytes.
        #[test]
        fn set_then_set_back_restores_the_bytes(
            documents in prop::collection::vec(document(), 1..3),
            layout in layout(),
            pick in any::<prop::sample::Index>(),
            value in "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}",
        ) {
            let text = write_file(&documents, &layout);
            let all = all_leaves(&documents);
            let (doc_index, path_text, old) = pick.get(&all).clone();
            prop_assume!(settable(&old));
            let yaml_path = path(&path_text);
            let doc = DocSelector::Index(doc_index);
            let edit = set(&text, Some(&doc), &yaml_path, &value, ValueFormat::Plain)
                .map_err(|err| TestCaseError::fail(format!("{err}\n{text}")))?;
            let back = set(&edit.text, Some(&doc), &yaml_path, &old, ValueFormat::Plain)
                .map_err(|err| TestCaseError::fail(format!("set back: {err}")))?;
            prop_assert_eq!(back.text, text);
        }
    }
}
