//! Git commit trailers (`Key: value` lines in the last paragraph of a message): writing
//! them the way `git interpret-trailers` reads them, and reading them back.

/// Trailer naming the request that made a commit: `<namespace>/<name>`.
pub const REQUEST_TRAILER: &str = "Fluxgate-Request";
/// Trailer carrying the request's UID: the idempotency key of a commit.
pub const REQUEST_UID_TRAILER: &str = "Fluxgate-Request-UID";

/// The two Fluxgate trailers for a request.
pub fn request_trailers(namespace: &str, name: &str, uid: &str) -> Vec<(String, String)> {
    vec![
        (REQUEST_TRAILER.to_owned(), format!("{namespace}/{name}")),
        (REQUEST_UID_TRAILER.to_owned(), uid.to_owned()),
    ]
}

/// Why a message or trailer cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    #[error("the commit message is empty")]
    EmptyMessage,
    #[error("trailer key {0:?} is invalid: use letters, digits and '-' only (like Signed-off-by)")]
    InvalidKey(String),
    #[error("the value of trailer {0} is empty or spans several lines")]
    InvalidValue(String),
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Splits a trailer line `Key: value` (git also accepts no space after the colon).
fn trailer_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    valid_key(key).then_some((key, value.trim()))
}

/// The paragraphs of a message (runs of non-blank lines), trailing whitespace removed.
fn paragraphs(message: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut current = Vec::new();
    for line in message.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether a paragraph is a trailer block: every line is a trailer or a continuation
/// (indented) of the previous one, and the first is a trailer.
fn is_trailer_block(lines: &[&str]) -> bool {
    !lines.is_empty()
        && trailer_line(lines[0]).is_some()
        && lines
            .iter()
            .all(|l| l.starts_with([' ', '\t']) || l.starts_with('#') || trailer_line(l).is_some())
}

/// Appends `trailers` to `message` as a git trailer block: after a blank line, or joined to
/// an existing trailer block (e.g. `Signed-off-by`) at the end of the message. The result
/// ends with a newline. Keys must be `[A-Za-z0-9-]+`; values one non-empty line.
pub fn format_message(
    message: &str,
    trailers: &[(String, String)],
) -> Result<String, TrailerError> {
    let body = message.trim_end();
    if body.trim().is_empty() {
        return Err(TrailerError::EmptyMessage);
    }
    for (key, value) in trailers {
        if !valid_key(key) {
            return Err(TrailerError::InvalidKey(key.clone()));
        }
        if value.trim().is_empty() || value.contains(['\n', '\r']) {
            return Err(TrailerError::InvalidValue(key.clone()));
        }
    }
    let mut out = body.to_owned();
    if !trailers.is_empty() {
        let paras = paragraphs(body);
        let joins_existing_block =
            paras.len() > 1 && paras.last().is_some_and(|p| is_trailer_block(p));
        out.push_str(if joins_existing_block { "\n" } else { "\n\n" });
        let block: Vec<String> = trailers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.trim()))
            .collect();
        out.push_str(&block.join("\n"));
    }
    out.push('\n');
    Ok(out)
}

/// The trailers of a commit message, in order: the last paragraph when it is a trailer
/// block and not the subject. Continuation lines are joined with a space, as git does.
pub fn parse_trailers(message: &str) -> Vec<(String, String)> {
    let paras = paragraphs(message);
    let Some(last) = paras
        .last()
        .filter(|p| paras.len() > 1 && is_trailer_block(p))
    else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for line in last {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = trailer_line(line) {
            out.push((key.to_owned(), value.to_owned()));
        }
    }
    out
}

/// Whether `message` carries trailer `key` (case-insensitive, like git) with exactly `value`.
pub fn has_trailer(message: &str, key: &str, value: &str) -> bool {
    parse_trailers(message)
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && v == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn formats_a_trailer_block_after_a_blank_line() {
        let msg = format_message(
            "Upgrade gitea to 1.22.1\n\nChart 1.21.0 -> 1.22.1\n\n",
            &request_trailers("apps", "gitea-up", "0b1c-uid"),
        )
        .expect("valid");
        assert_eq!(
            msg,
            "Upgrade gitea to 1.22.1\n\nChart 1.21.0 -> 1.22.1\n\n\
             Fluxgate-Request: apps/gitea-up\nFluxgate-Request-UID: 0b1c-uid\n"
        );
        assert_eq!(
            parse_trailers(&msg),
            vec![
                t(REQUEST_TRAILER, "apps/gitea-up"),
                t(REQUEST_UID_TRAILER, "0b1c-uid")
            ]
        );
        assert!(has_trailer(&msg, "fluxgate-request-uid", "0b1c-uid"));
        assert!(!has_trailer(&msg, REQUEST_UID_TRAILER, "0b1c"));
    }

    #[test]
    fn joins_an_existing_trailer_block() {
        let msg = format_message(
            "Subject\n\nSigned-off-by: A <a@x>",
            &[t("Fluxgate-Request-UID", "u1")],
        )
        .expect("valid");
        assert_eq!(
            msg,
            "Subject\n\nSigned-off-by: A <a@x>\nFluxgate-Request-UID: u1\n"
        );
        assert_eq!(parse_trailers(&msg).len(), 2);
    }

    #[test]
    fn a_subject_that_looks_like_a_trailer_is_not_one() {
        let msg =
            format_message("fix: bump chart", &[t("Fluxgate-Request-UID", "u")]).expect("valid");
        assert_eq!(msg, "fix: bump chart\n\nFluxgate-Request-UID: u\n");
        assert_eq!(parse_trailers("fix: bump chart\n"), vec![]);
        assert_eq!(parse_trailers(""), vec![]);
    }

    #[test]
    fn body_prose_is_not_a_trailer_block() {
        assert_eq!(
            parse_trailers("S\n\nThis is prose: with a colon\nand more\n"),
            vec![]
        );
    }

    #[test]
    fn continuation_lines_are_joined() {
        assert_eq!(
            parse_trailers("S\n\nKey: a\n  b\nOther: c\n"),
            vec![t("Key", "a b"), t("Other", "c")]
        );
    }

    #[test]
    fn refuses_bad_keys_values_and_empty_messages() {
        assert_eq!(
            format_message("S", &[t("Bad Key", "v")]),
            Err(TrailerError::InvalidKey("Bad Key".into()))
        );
        assert_eq!(
            format_message("S", &[t("K", "a\nInjected: x")]),
            Err(TrailerError::InvalidValue("K".into()))
        );
        assert_eq!(
            format_message("S", &[t("K", " ")]),
            Err(TrailerError::InvalidValue("K".into()))
        );
        assert_eq!(format_message(" \n", &[]), Err(TrailerError::EmptyMessage));
        assert_eq!(format_message("S\n\n", &[]).as_deref(), Ok("S\n"));
    }

    /// Our block must be what git itself reads as trailers.
    #[test]
    fn git_interpret_trailers_agrees() {
        let msg = format_message(
            "Upgrade x\n\nBody line.",
            &request_trailers("ns", "req", "1234-abcd"),
        )
        .expect("valid");
        let mut child = match std::process::Command::new("git")
            .args(["interpret-trailers", "--parse"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(err) => panic!("git is needed for this test: {err}"),
        };
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(msg.as_bytes()).expect("write to git");
        }
        let out = child.wait_with_output().expect("git ran");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Fluxgate-Request: ns/req\nFluxgate-Request-UID: 1234-abcd\n"
        );
    }
}
