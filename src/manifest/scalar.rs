//! How a scalar's text is typed and written: which plain values would stop being strings, and
//! how to write a new value in the old scalar's quote style when that is safe.
//!
//! Type resolution is deliberately the union of YAML 1.1 (what Kubernetes and Flux read, via
//! go-yaml) and YAML 1.2 core: a value that any of them would read as null, bool, number or
//! timestamp is quoted. Quoting a value that did not need it is harmless; failing to quote
//! one that did turns `1.10` into `1.1`.

use serde_saphyr::granit_parser::ScalarStyle;

/// What a plain (unquoted, untagged) scalar is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainType {
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    /// `<<` (merge) and `=` (value), special in YAML 1.1.
    Special,
    String,
}

/// Where the scalar sits: flow collections forbid `,[]{}` in plain scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Block,
    Flow,
}

/// The type a scalar resolves to, from its value, style and explicit tag.
pub(crate) fn resolved_type(value: &str, style: ScalarStyle, tag: Option<&str>) -> String {
    if let Some(tag) = tag {
        return tag.to_owned();
    }
    if style == ScalarStyle::Plain {
        format!("{:?}", classify_plain(value))
    } else {
        format!("{:?}", PlainType::String)
    }
}

/// Classifies a plain scalar conservatively across YAML 1.1 and 1.2.
pub(crate) fn classify_plain(value: &str) -> PlainType {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return PlainType::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "n" | "N" | "no" | "No" | "NO" | "true" | "True"
        | "TRUE" | "false" | "False" | "FALSE" | "on" | "On" | "ON" | "off" | "Off" | "OFF" => {
            return PlainType::Bool;
        }
        "<<" | "=" => return PlainType::Special,
        _ => {}
    }
    let unsigned = value.strip_prefix(['+', '-']).unwrap_or(value);
    let lower = unsigned.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | ".nan")
        // Go's ParseFloat, which go-yaml v2 uses after a sign, also takes these.
        || (unsigned.len() != value.len() && matches!(lower.as_str(), "inf" | "infinity" | "nan"))
    {
        return PlainType::Float;
    }
    if is_int(unsigned) {
        return PlainType::Int;
    }
    if is_float(unsigned) {
        return PlainType::Float;
    }
    if is_timestamp(value) {
        return PlainType::Timestamp;
    }
    PlainType::String
}

fn all(text: &str, allowed: impl Fn(char) -> bool) -> bool {
    !text.is_empty() && text.chars().all(allowed)
}

fn is_int(unsigned: &str) -> bool {
    let digits_or_underscore = |c: char| c.is_ascii_digit() || c == '_';
    if let Some(rest) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        // Also covers Go hex floats such as 0x1p-2.
        return all(rest, |c| {
            c.is_ascii_hexdigit() || matches!(c, '_' | '.' | 'p' | 'P' | '+' | '-')
        });
    }
    if let Some(rest) = unsigned
        .strip_prefix("0o")
        .or_else(|| unsigned.strip_prefix("0O"))
    {
        return all(rest, |c| matches!(c, '0'..='7' | '_'));
    }
    if let Some(rest) = unsigned
        .strip_prefix("0b")
        .or_else(|| unsigned.strip_prefix("0B"))
    {
        return all(rest, |c| matches!(c, '0' | '1' | '_'));
    }
    if unsigned.starts_with(|c: char| c.is_ascii_digit()) {
        // Decimal, YAML 1.1 octal (`010`) and sexagesimal (`1:30`).
        let mut parts = unsigned.split(':');
        let first_ok = parts.next().is_some_and(|p| all(p, digits_or_underscore));
        return first_ok && parts.all(|p| all(p, |c| c.is_ascii_digit()) && p.len() <= 2);
    }
    false
}

fn is_float(unsigned: &str) -> bool {
    // Sexagesimal float (YAML 1.1): `1:30.5`.
    let last = match unsigned.rsplit_once(':') {
        Some((head, tail)) => {
            let head_ok = head
                .split(':')
                .all(|p| all(p, |c| c.is_ascii_digit() || c == '_'));
            if !head_ok {
                return false;
            }
            tail
        }
        None => unsigned,
    };
    let (mantissa, exponent) = match last.find(['e', 'E']) {
        Some(at) => (&last[..at], Some(&last[at + 1..])),
        None => (last, None),
    };
    if let Some(exponent) = exponent {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if !all(digits, |c| c.is_ascii_digit()) {
            return false;
        }
    }
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    if fraction.is_none() && exponent.is_none() {
        return false;
    }
    let numeric = |p: &str| p.chars().all(|c| c.is_ascii_digit() || c == '_');
    let has_digit = whole
        .chars()
        .chain(fraction.unwrap_or("").chars())
        .any(|c| c.is_ascii_digit());
    has_digit && numeric(whole) && fraction.is_none_or(numeric)
}

/// `YYYY-M-D…`: YAML 1.1 timestamps (and anything that starts like one, conservatively).
fn is_timestamp(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() >= 6
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5].is_ascii_digit()
        && value[5..]
            .split(['-', 'T', 't', ' ', ':', '.'])
            .next()
            .is_some_and(|month| month.len() <= 2)
}

/// Whether `value` can be written as a plain scalar in `context` and read back as the same
/// characters (regardless of type).
pub(crate) fn plain_syntax_ok(value: &str, context: Context) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if value.trim() != value
        || value.chars().any(|c| c.is_control() || c == '\u{feff}')
        || "-?:,[]{}#&*!|>'\"%@`".contains(first)
        || value.starts_with("...")
        || value.contains(": ")
        || value.contains(" #")
        || value.ends_with(':')
    {
        return false;
    }
    context == Context::Block || !value.contains([',', '[', ']', '{', '}'])
}

/// Whether `value` is a decimal integer written canonically (`0`, `42`), so that writing it
/// plain where an integer was keeps both type and meaning.
fn is_canonical_decimal(value: &str) -> bool {
    value == "0"
        || (value.starts_with(|c: char| matches!(c, '1'..='9'))
            && all(value, |c| c.is_ascii_digit()))
}

/// Writes `value` for a scalar that was written in `old_style` with plain type `old_type`.
///
/// Keeps the old style when that is safe, else double-quotes. Callers have already refused
/// values containing control characters and block styles.
pub(crate) fn render(
    value: &str,
    old_style: ScalarStyle,
    old_plain_type: PlainType,
    str_tagged: bool,
    context: Context,
) -> String {
    match old_style {
        ScalarStyle::Plain => {
            let new_type = classify_plain(value);
            let keeps_type = str_tagged
                || new_type == PlainType::String
                || (old_plain_type == PlainType::Int
                    && new_type == PlainType::Int
                    && is_canonical_decimal(value));
            if keeps_type && plain_syntax_ok(value, context) {
                value.to_owned()
            } else {
                double_quoted(value)
            }
        }
        ScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        _ => double_quoted(value),
    }
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_plain_scalars_like_yaml_1_1_and_1_2() {
        use PlainType::*;
        let cases = [
            ("", Null),
            ("~", Null),
            ("null", Null),
            ("NULL", Null),
            ("yes", Bool),
            ("No", Bool),
            ("on", Bool),
            ("y", Bool),
            ("true", Bool),
            ("0", Int),
            ("42", Int),
            ("-7", Int),
            ("010", Int),
            ("0x1F", Int),
            ("0o17", Int),
            ("0b101", Int),
            ("1_000", Int),
            ("1:30", Int),
            ("1.10", Float),
            ("1.", Float),
            (".5", Float),
            ("1e3", Float),
            ("1.5E-3", Float),
            ("-.inf", Float),
            (".NaN", Float),
            ("+Infinity", Float),
            ("1:30.5", Float),
            ("2024-01-15", Timestamp),
            ("2001-12-14t21:59:43.10-05:00", Timestamp),
            ("<<", Special),
            ("1.2.3", String),
            ("v1.2.3", String),
            ("1.2.3-rc.1", String),
            ("1e", String),
            ("e3", String),
            ("1.2.3@sha256:abc", String),
            ("inf", String),
            ("latest", String),
            ("16-alpine", String),
            ("20240115", Int),
            ("2024.01.15", String),
            ("1:3:x", String),
            ("0xZZ", String),
        ];
        for (value, expected) in cases {
            assert_eq!(classify_plain(value), expected, "`{value}`");
        }
    }

    #[test]
    fn plain_syntax_rejects_indicators_and_comment_like_text() {
        let block_ok = [
            "1.2.3",
            "v1",
            "ghcr.io/org/app:1.2",
            "a:b",
            "x#y",
            "a,b",
            "_x",
        ];
        for value in block_ok {
            assert!(plain_syntax_ok(value, Context::Block), "`{value}`");
        }
        assert!(!plain_syntax_ok("a,b", Context::Flow));
        assert!(!plain_syntax_ok("a]", Context::Flow));
        for value in [
            "", " a", "a ", "a: b", "a #b", "a:", "@x", "*x", "&x", "!x", "-x", "'x", "\"x", "%x",
            "|", ">", "#x", "...x", "a\tb", "a\nb", "[a", "{a", "`x",
        ] {
            assert!(!plain_syntax_ok(value, Context::Block), "`{value}`");
        }
    }

    #[test]
    fn render_keeps_style_or_quotes_when_type_would_change() {
        use ScalarStyle::*;
        let block = Context::Block;
        let s = PlainType::String;
        let cases = [
            ("1.2.4", Plain, s, "1.2.4"),
            ("1.10", Plain, s, "\"1.10\""),
            ("yes", Plain, s, "\"yes\""),
            ("null", Plain, s, "\"null\""),
            ("010", Plain, s, "\"010\""),
            ("1e3", Plain, s, "\"1e3\""),
            ("a: b", Plain, s, "\"a: b\""),
            ("@x", Plain, s, "\"@x\""),
            ("x #y", Plain, s, "\"x #y\""),
            ("17", Plain, PlainType::Int, "17"),
            ("017", Plain, PlainType::Int, "\"017\""),
            ("1.10", Plain, PlainType::Float, "\"1.10\""),
            ("17", Plain, s, "\"17\""),
            ("1.2.4", SingleQuoted, s, "'1.2.4'"),
            ("it's", SingleQuoted, s, "'it''s'"),
            ("1.2.4", DoubleQuoted, s, "\"1.2.4\""),
            ("a\"b\\c", DoubleQuoted, s, "\"a\\\"b\\\\c\""),
        ];
        for (value, style, old_type, expected) in cases {
            assert_eq!(
                render(value, style, old_type, false, block),
                expected,
                "`{value}`"
            );
        }
        assert_eq!(render("1.10", Plain, s, true, block), "1.10");
        assert_eq!(render("a,b", Plain, s, false, Context::Flow), "\"a,b\"");
    }
}
