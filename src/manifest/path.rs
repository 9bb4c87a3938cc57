//! The YAML path syntax that names one field of a document.
//!
//! A path is a sequence of segments, read left to right from the document root:
//!
//! | segment          | meaning                                                      |
//! |------------------|--------------------------------------------------------------|
//! | `.key`           | mapping key; any characters except `.`, `[`, `]`, quotes, `=` and whitespace |
//! | `['key.with.dots']` or `["key"]` | mapping key written in quotes (`''` escapes `'`; `\"`, `\\` escape in `"`) |
//! | `[0]`            | sequence item by 0-based index                               |
//! | `[name=foo]`     | the one sequence item that is a mapping whose `name` is `foo` (the value may be quoted: `[name='a.b']`) |
//!
//! Examples: `.spec.chart.spec.version`, `.spec.template.spec.containers[0].image`,
//! `.metadata.annotations['a.b/c']`, `.images[name=podinfo].newTag`.

use super::ManifestError;
use std::fmt;

/// One step of a [`YamlPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key of a mapping.
    Key(String),
    /// An item of a sequence, 0-based.
    Index(usize),
    /// The item of a sequence that is a mapping whose `field` has the scalar value `value`.
    Match { field: String, value: String },
}

/// A parsed path, keeping the text it was parsed from for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlPath {
    source: String,
    segments: Vec<Segment>,
}

impl YamlPath {
    /// Parses the documented path syntax (see the module documentation).
    pub fn parse(source: &str) -> Result<Self, ManifestError> {
        let invalid = |reason: String| ManifestError::InvalidPath {
            path: source.to_owned(),
            reason,
        };
        let chars: Vec<char> = source.chars().collect();
        let mut segments = Vec::new();
        let mut pos = 0;
        while pos < chars.len() {
            match chars[pos] {
                '.' => {
                    let start = pos + 1;
                    let end = scan_bare(&chars, start);
                    if end == start {
                        return Err(invalid(format!(
                            "expected a key after `.` at character {}",
                            pos + 1
                        )));
                    }
                    segments.push(Segment::Key(chars[start..end].iter().collect()));
                    pos = end;
                }
                '[' => {
                    let (segment, next) = parse_bracket(&chars, pos).map_err(&invalid)?;
                    segments.push(segment);
                    pos = next;
                }
                other => {
                    return Err(invalid(format!(
                        "unexpected `{other}` at character {}; segments start with `.` or `[`",
                        pos + 1
                    )));
                }
            }
        }
        if segments.is_empty() {
            return Err(invalid("the path is empty".to_owned()));
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// The segments, root first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The path as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first `count` segments written in canonical syntax, for "nothing at …" messages.
    pub fn prefix(&self, count: usize) -> String {
        self.segments
            .iter()
            .take(count)
            .map(|segment| segment.to_string())
            .collect()
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for YamlPath {
    type Err = ManifestError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Self::parse(source)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Key(key) if is_bare(key) => write!(f, ".{key}"),
            Segment::Key(key) => write!(f, "['{}']", key.replace('\'', "''")),
            Segment::Index(index) => write!(f, "[{index}]"),
            Segment::Match { field, value } if is_bare(value) => write!(f, "[{field}={value}]"),
            Segment::Match { field, value } => {
                write!(f, "[{field}='{}']", value.replace('\'', "''"))
            }
        }
    }
}

/// Characters that end a bare key or match value.
fn ends_bare(c: char) -> bool {
    matches!(c, '.' | '[' | ']' | '\'' | '"' | '=') || c.is_whitespace()
}

fn is_bare(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(ends_bare)
}

fn scan_bare(chars: &[char], start: usize) -> usize {
    let mut end = start;
    while end < chars.len() && !ends_bare(chars[end]) {
        end += 1;
    }
    end
}

/// Parses `[...]` starting at `open` (the `[`); returns the segment and the index after `]`.
fn parse_bracket(chars: &[char], open: usize) -> Result<(Segment, usize), String> {
    let start = open + 1;
    let Some(&first) = chars.get(start) else {
        return Err(format!("unclosed `[` at character {}", open + 1));
    };
    let (segment, after) = if first == '\'' || first == '"' {
        let (key, after) = parse_quoted(chars, start)?;
        (Segment::Key(key), after)
    } else if first.is_ascii_digit() {
        let end = (start..chars.len())
            .find(|&i| !chars[i].is_ascii_digit())
            .unwrap_or(chars.len());
        let digits: String = chars[start..end].iter().collect();
        let index = digits
            .parse::<usize>()
            .map_err(|_| format!("index `{digits}` is too large"))?;
        (Segment::Index(index), end)
    } else {
        let field_end = scan_bare(chars, start);
        if field_end == start || chars.get(field_end) != Some(&'=') {
            return Err(format!(
                "expected an index, a quoted key or `field=value` after `[` at character {}",
                open + 1
            ));
        }
        let field: String = chars[start..field_end].iter().collect();
        let value_start = field_end + 1;
        let (value, after) = match chars.get(value_start) {
            Some('\'' | '"') => parse_quoted(chars, value_start)?,
            _ => {
                let end = (value_start..chars.len())
                    .find(|&i| chars[i] == ']')
                    .unwrap_or(chars.len());
                let value: String = chars[value_start..end].iter().collect();
                if value.is_empty() || value != value.trim() {
                    return Err(format!(
                        "the value in `[{field}=…]` is empty or has surrounding spaces; quote it"
                    ));
                }
                (value, end)
            }
        };
        (Segment::Match { field, value }, after)
    };
    if chars.get(after) != Some(&']') {
        return Err(format!(
            "expected `]` at character {} to close the `[` at character {}",
            after + 1,
            open + 1
        ));
    }
    Ok((segment, after + 1))
}

/// Parses a `'…'` or `"…"` string starting at its opening quote; returns it and the index
/// after the closing quote.
fn parse_quoted(chars: &[char], open: usize) -> Result<(String, usize), String> {
    let quote = chars[open];
    let mut text = String::new();
    let mut pos = open + 1;
    while let Some(&c) = chars.get(pos) {
        match (quote, c) {
            ('\'', '\'') if chars.get(pos + 1) == Some(&'\'') => {
                text.push('\'');
                pos += 2;
            }
            ('"', '\\') => match chars.get(pos + 1) {
                Some(&escaped @ ('"' | '\\')) => {
                    text.push(escaped);
                    pos += 2;
                }
                _ => {
                    return Err(format!(
                        "only `\\\"` and `\\\\` escapes are allowed in `\"…\"` (character {})",
                        pos + 1
                    ));
                }
            },
            _ if c == quote => return Ok((text, pos + 1)),
            _ => {
                text.push(c);
                pos += 1;
            }
        }
    }
    Err(format!("unclosed quote at character {}", open + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<Segment> {
        match YamlPath::parse(path) {
            Ok(parsed) => parsed.segments,
            Err(err) => panic!("`{path}` should parse: {err}"),
        }
    }

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn parses_documented_forms() {
        let cases: Vec<(&str, Vec<Segment>)> = vec![
            (
                ".spec.chart.spec.version",
                vec![key("spec"), key("chart"), key("spec"), key("version")],
            ),
            (
                ".spec.template.spec.containers[0].image",
                vec![
                    key("spec"),
                    key("template"),
                    key("spec"),
                    key("containers"),
                    Segment::Index(0),
                    key("image"),
                ],
            ),
            (
                ".metadata.annotations['a.b/c']",
                vec![key("metadata"), key("annotations"), key("a.b/c")],
            ),
            (
                r#".metadata.labels["app.kubernetes.io/name"]"#,
                vec![
                    key("metadata"),
                    key("labels"),
                    key("app.kubernetes.io/name"),
                ],
            ),
            (
                ".images[name=ghcr.io/stefanprodan/podinfo].newTag",
                vec![
                    key("images"),
                    Segment::Match {
                        field: "name".to_owned(),
                        value: "ghcr.io/stefanprodan/podinfo".to_owned(),
                    },
                    key("newTag"),
                ],
            ),
            (
                "[name='it''s'][12]",
                vec![
                    Segment::Match {
                        field: "name".to_owned(),
                        value: "it's".to_owned(),
                    },
                    Segment::Index(12),
                ],
            ),
            (r#".a["q\"uote\\"]"#, vec![key("a"), key("q\"uote\\")]),
            (
                ".kebab-case.under_score/x",
                vec![key("kebab-case"), key("under_score/x")],
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(segments(path), expected, "{path}");
        }
    }

    #[test]
    fn refuses_malformed_paths() {
        for path in [
            "",
            "spec",
            ".",
            ".a..b",
            ".a[",
            ".a[0",
            ".a[x]",
            ".a['x",
            ".a['x'",
            ".a[=x]",
            ".a[name=]",
            ".a[99999999999999999999999999]",
            r#".a["\n"]"#,
            ".a b",
        ] {
            let err = YamlPath::parse(path).expect_err(path);
            assert_eq!(err.category(), "invalid_path", "{path}");
            assert!(err.to_string().contains("paths look like"), "{path}: {err}");
        }
    }

    #[test]
    fn canonical_prefix_round_trips() {
        let path = ".metadata.annotations['a.b/c'][0][name='x y']";
        let parsed = segments(path);
        let canonical = YamlPath::parse(path)
            .map(|p| p.prefix(5))
            .unwrap_or_default();
        assert_eq!(canonical, path);
        assert_eq!(segments(&canonical), parsed);
    }
}
