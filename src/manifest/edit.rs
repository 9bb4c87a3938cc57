//! Reading and replacing the scalar at a path: the byte splice and the re-parse check that
//! proves exactly one value changed.

use super::anchors::{Anchors, Lookup, is_merge_key, paths_to, place_of};
use super::document::{self, Chosen, DocSelector};
use super::image::{self, ImageRef};
use super::path::{Segment, YamlPath};
use super::scalar::{self, Context, PlainType};
use super::tree::{self, Document, Node, NodeKind};
use super::{ManifestError, check_size};
use serde_saphyr::granit_parser::ScalarStyle;

pub use crate::api::ValueFormat;

/// The result of [`set`]: the new file text and the scalar values before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub text: String,
    /// The scalar's value before the edit (after YAML unquoting).
    pub old: String,
    /// The scalar's value after the edit.
    pub new: String,
}

impl Edit {
    /// False when the field already held the new value (`text` is then the input unchanged).
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

/// The scalar value at `path` in the chosen document.
///
/// Applies the same checks as [`set`], so a path that `get` reads is one `set` can change.
pub fn get(
    text: &str,
    doc: Option<&DocSelector>,
    path: &YamlPath,
) -> Result<String, ManifestError> {
    check_size(text.len())?;
    let documents = tree::parse(text)?;
    let chosen = document::choose(&documents, doc)?;
    let target = locate(&chosen, path)?;
    Ok(target.value.to_owned())
}

/// The version held at `path`: the scalar itself, or for [`ValueFormat::Image`] the tag of
/// the reference (with `@digest` when it pins one).
pub fn get_version(
    text: &str,
    doc: Option<&DocSelector>,
    path: &YamlPath,
    format: ValueFormat,
) -> Result<String, ManifestError> {
    let value = get(text, doc, path)?;
    match format {
        ValueFormat::Plain => Ok(value),
        ValueFormat::Image => {
            let invalid = |reason: String| ManifestError::InvalidImage {
                path: path.to_string(),
                value: value.clone(),
                reason,
            };
            let image = ImageRef::parse(&value).map_err(invalid)?;
            image.version().ok_or_else(|| invalid(NO_TAG.to_owned()))
        }
    }
}

const NO_TAG: &str = "it has no tag; write the current tag (`name:TAG`) first, \
    Fluxgate only replaces an existing one";

/// Replaces the scalar at `path` with `new_value` (for [`ValueFormat::Image`]: `TAG` or
/// `TAG@sha256:…`, replacing only the reference's tag and digest).
///
/// Only the bytes of that scalar change. The old quote style is kept when the new value is
/// safe in it; otherwise the value is double-quoted so it stays a string. The result is
/// re-parsed and compared with the input before it is returned.
pub fn set(
    text: &str,
    doc: Option<&DocSelector>,
    path: &YamlPath,
    new_value: &str,
    format: ValueFormat,
) -> Result<Edit, ManifestError> {
    check_size(text.len())?;
    let documents = tree::parse(text)?;
    let chosen = document::choose(&documents, doc)?;
    let target = locate(&chosen, path)?;
    let old = target.value.to_owned();
    let new = match format {
        ValueFormat::Plain => with_plain_version(&old, new_value, path)?,
        ValueFormat::Image => with_image_version(&old, new_value, path)?,
    };
    check_new_value(&new)?;
    if new == old {
        return Ok(Edit {
            text: text.to_owned(),
            old,
            new,
        });
    }

    let old_plain_type = match target.style {
        ScalarStyle::Plain => scalar::classify_plain(&old),
        _ => PlainType::String,
    };
    let str_tagged = target.node.tag.as_deref() == Some("tag:yaml.org,2002:str");
    let rendered = scalar::render(
        &new,
        target.style,
        old_plain_type,
        str_tagged,
        target.context,
    );
    let span = &target.node.span;
    let failed = |detail: String| ManifestError::VerificationFailed {
        path: path.to_string(),
        doc: chosen.label.clone(),
        detail,
    };
    let (Some(before), Some(after)) = (text.get(..span.start), text.get(span.end..)) else {
        return Err(failed(
            "the scalar's span is not on character boundaries".to_owned(),
        ));
    };
    let edited = [before, rendered.as_str(), after].concat();
    check_size(edited.len())?;
    verify(&documents, &edited, chosen.position, &target.route, &new).map_err(failed)?;
    Ok(Edit {
        text: edited,
        old,
        new,
    })
}

/// A plain version replaces the whole scalar, but a value that pins a digest
/// (`1.2.3@sha256:…`) is one unit: the new value must pin one too, or the old image keeps
/// running under a new tag (or silently loses its pin).
fn with_plain_version(old: &str, version: &str, path: &YamlPath) -> Result<String, ManifestError> {
    let pins_digest = matches!(image::split_digest(old), Ok((_, Some(_))));
    if pins_digest && !version.contains('@') {
        return Err(ManifestError::DigestRequired {
            path: path.to_string(),
            current: old.to_owned(),
            new: version.to_owned(),
        });
    }
    Ok(version.to_owned())
}

fn with_image_version(old: &str, version: &str, path: &YamlPath) -> Result<String, ManifestError> {
    let invalid = |reason: String| ManifestError::InvalidImage {
        path: path.to_string(),
        value: old.to_owned(),
        reason,
    };
    let image = ImageRef::parse(old).map_err(invalid)?;
    // Same rule as `get_version`: only an existing tag is replaced, never added.
    if image.tag.is_none() {
        return Err(invalid(NO_TAG.to_owned()));
    }
    match image.with_version(version) {
        Ok(updated) => Ok(updated.to_string()),
        Err(Some(reason)) => Err(ManifestError::InvalidValue {
            value: version.to_owned(),
            reason,
        }),
        Err(None) => Err(ManifestError::DigestRequired {
            path: path.to_string(),
            current: old.to_owned(),
            new: version.to_owned(),
        }),
    }
}

/// Versions are single-line text; anything else is a mistake upstream, not a version.
fn check_new_value(value: &str) -> Result<(), ManifestError> {
    let reason = if value.is_empty() {
        "it is empty"
    } else if value.chars().any(|c| c.is_control() || c == '\u{feff}') {
        "it contains a line break or control character"
    } else if value.trim() != value {
        "it has leading or trailing spaces"
    } else {
        return Ok(());
    };
    Err(ManifestError::InvalidValue {
        value: value.escape_debug().to_string(),
        reason: reason.to_owned(),
    })
}

/// The scalar a path leads to, with what `set` needs to rewrite and verify it.
struct Target<'a> {
    node: &'a Node,
    value: &'a str,
    style: ScalarStyle,
    context: Context,
    /// Child positions from the root (mapping entry or sequence item index per level) of
    /// the place the scalar is written: its definition when the path went through an alias.
    route: Vec<usize>,
    /// The path as taken, in canonical syntax with sequence items by index.
    taken: String,
}

/// Follows `path` from the document root — through aliases to the nodes they repeat and
/// through merge keys to the value they bring in — and checks that it ends at an editable
/// scalar, written once in the file.
fn locate<'a>(chosen: &Chosen<'a>, path: &YamlPath) -> Result<Target<'a>, ManifestError> {
    let doc_label = || chosen.label.clone();
    let root = &chosen.document.root;
    let anchors = Anchors::of(root);
    let mut node = root;
    let mut taken = String::new();
    for (depth, segment) in path.segments().iter().enumerate() {
        let (index, child) =
            step(anchors.resolve(node), segment, &anchors).map_err(|failure| match failure {
                StepFailure::Missing(hint) => ManifestError::PathNotFound {
                    path: path.to_string(),
                    doc: doc_label(),
                    missing_at: path.prefix(depth + 1),
                    hint,
                },
                StepFailure::Ambiguous(reason) => ManifestError::AmbiguousPath {
                    path: path.to_string(),
                    doc: doc_label(),
                    reason: format!("at `{}`, {reason}", path.prefix(depth + 1)),
                },
            })?;
        let concrete = match (segment, index) {
            (Segment::Match { .. }, Some(index)) => Segment::Index(index),
            _ => segment.clone(),
        };
        taken.push_str(&concrete.to_string());
        node = child;
    }
    let node = anchors.resolve(node);
    match &node.kind {
        NodeKind::Alias { .. } => Err(ManifestError::PathNotFound {
            path: path.to_string(),
            doc: doc_label(),
            missing_at: path.to_string(),
            hint: " (an alias to an anchor this document does not define)".to_owned(),
        }),
        NodeKind::Mapping { .. } | NodeKind::Sequence { .. } => Err(ManifestError::NotAScalar {
            path: path.to_string(),
            doc: doc_label(),
            found: node.kind.describe(),
        }),
        NodeKind::Scalar {
            style: ScalarStyle::Literal | ScalarStyle::Folded,
            ..
        } => Err(ManifestError::BlockScalar {
            path: path.to_string(),
            doc: doc_label(),
        }),
        NodeKind::Scalar { .. } if node.span.is_empty() => Err(ManifestError::EmptyValue {
            path: path.to_string(),
            doc: doc_label(),
        }),
        NodeKind::Scalar { value, style } => {
            let (route, context) =
                place_of(root, node).ok_or_else(|| ManifestError::VerificationFailed {
                    path: path.to_string(),
                    doc: doc_label(),
                    detail: "the scalar is not written anywhere in the document".to_owned(),
                })?;
            Ok(Target {
                node,
                value,
                style: *style,
                context,
                route,
                taken,
            })
        }
    }
}

/// Which other paths read the scalar at `path` because it is anchored and repeated through
/// aliases or merge keys; None when `path` is the only one. The result names the line the
/// scalar is written on, where an edit of any of these paths goes.
pub fn sharing(
    text: &str,
    doc: Option<&DocSelector>,
    path: &YamlPath,
) -> Result<Option<Sharing>, ManifestError> {
    check_size(text.len())?;
    let documents = tree::parse(text)?;
    let chosen = document::choose(&documents, doc)?;
    let target = locate(&chosen, path)?;
    let root = &chosen.document.root;
    let anchors = Anchors::of(root);
    let (mut paths, more) = paths_to(root, target.node, &anchors, SHARING_SHOWN + 1);
    paths.retain(|p| *p != target.taken);
    if paths.is_empty() {
        return Ok(None);
    }
    let more = more + paths.len().saturating_sub(SHARING_SHOWN);
    paths.truncate(SHARING_SHOWN);
    let line = text
        .get(..target.node.span.start)
        .map_or(0, |before| before.matches('\n').count())
        + 1;
    Ok(Some(Sharing { line, paths, more }))
}

/// How many sharing paths [`sharing`] lists by name.
const SHARING_SHOWN: usize = 10;

/// The other paths that read one anchored scalar (see [`sharing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// The 1-based line the scalar is written on.
    pub line: usize,
    /// The other paths reading it, sorted.
    pub paths: Vec<String>,
    /// How many more paths read it than are listed.
    pub more: usize,
}

impl std::fmt::Display for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listed: Vec<String> = self.paths.iter().map(|p| format!("`{p}`")).collect();
        write!(
            f,
            "written once at line {} and also read at {}",
            self.line,
            listed.join(", ")
        )?;
        if self.more > 0 {
            write!(f, " and {} more", self.more)?;
        }
        Ok(())
    }
}

enum StepFailure {
    Missing(String),
    Ambiguous(String),
}

/// Takes one path segment from `node` (already resolved if it was an alias): the child,
/// with its position when the segment chose a sequence item.
fn step<'a>(
    node: &'a Node,
    segment: &Segment,
    anchors: &Anchors<'a>,
) -> Result<(Option<usize>, &'a Node), StepFailure> {
    match (segment, &node.kind) {
        (Segment::Key(key), NodeKind::Mapping { entries, .. }) => match anchors.lookup(node, key) {
            Lookup::Own(value) | Lookup::Merged(value) => Ok((None, value)),
            Lookup::Missing => {
                let keys: Vec<&str> = entries
                    .iter()
                    .filter(|(k, _)| !is_merge_key(k))
                    .filter_map(|(k, _)| k.scalar())
                    .collect();
                Err(StepFailure::Missing(format!(
                    " (keys here: {})",
                    preview(&keys)
                )))
            }
            Lookup::Duplicate(count) => Err(StepFailure::Ambiguous(format!(
                "the key `{key}` appears {count} times"
            ))),
            Lookup::MergedFromSeveral(count) => Err(StepFailure::Ambiguous(format!(
                "the key `{key}` is not written there but merged in (`<<`) from {count} \
                     mappings; which one a reader takes depends on their order, so write \
                     the field in that mapping or name the path where it is defined"
            ))),
        },
        (Segment::Index(index), NodeKind::Sequence { items, .. }) => items
            .get(*index)
            .map(|item| (Some(*index), item))
            .ok_or_else(|| {
                StepFailure::Missing(format!(" (the sequence has {} items)", items.len()))
            }),
        (Segment::Match { field, value }, NodeKind::Sequence { items, .. }) => {
            let field_of = |item: &'a Node| match anchors.lookup(anchors.resolve(item), field) {
                Lookup::Own(found) | Lookup::Merged(found) => anchors.resolve(found).scalar(),
                _ => None,
            };
            let found: Vec<(usize, &Node)> = items
                .iter()
                .enumerate()
                .filter(|(_, item)| field_of(item) == Some(value.as_str()))
                .collect();
            match found.as_slice() {
                [(index, only)] => Ok((Some(*index), only)),
                [] => {
                    let values: Vec<&str> = items.iter().filter_map(field_of).collect();
                    Err(StepFailure::Missing(format!(
                        " (`{field}` values here: {})",
                        preview(&values)
                    )))
                }
                _ => Err(StepFailure::Ambiguous(format!(
                    "{} items have `{field}: {value}`",
                    found.len()
                ))),
            }
        }
        (Segment::Key(_), kind) => Err(StepFailure::Missing(format!(
            " (it is a {}, not a mapping)",
            kind.describe()
        ))),
        (Segment::Index(_) | Segment::Match { .. }, kind) => Err(StepFailure::Missing(format!(
            " (it is a {}, not a sequence)",
            kind.describe()
        ))),
    }
}

fn preview(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", … {} more", names.len() - SHOWN));
    }
    text
}

/// Re-parses `edited` and checks it equals `before` except the scalar at `route` in document
/// `position`, which must now be the string `new`. The error is the first difference.
pub(super) fn verify(
    before: &[Document],
    edited: &str,
    position: usize,
    route: &[usize],
    new: &str,
) -> Result<(), String> {
    let after = tree::parse(edited).map_err(|err| format!("the result does not parse: {err}"))?;
    if after.len() != before.len() {
        return Err(format!(
            "the file had {} documents and now has {}",
            before.len(),
            after.len()
        ));
    }
    for (index, (old, new_doc)) in before.iter().zip(&after).enumerate() {
        let where_ = format!("document {index}");
        if old.empty != new_doc.empty {
            return Err(format!("{where_} changed between empty and non-empty"));
        }
        if index == position {
            same_except(&old.root, &new_doc.root, route, new, &where_)?;
        } else {
            same(&old.root, &new_doc.root, &where_)?;
        }
    }
    Ok(())
}

fn resolved_type(node: &Node) -> Option<String> {
    match &node.kind {
        NodeKind::Scalar { value, style } => {
            Some(scalar::resolved_type(value, *style, node.tag.as_deref()))
        }
        _ => None,
    }
}

/// Data equality: structure, scalar values and their resolved types, tags and anchors.
fn same(old: &Node, new: &Node, at: &str) -> Result<(), String> {
    if old.anchor != new.anchor || old.tag != new.tag {
        return Err(format!("an anchor or tag changed in {at}"));
    }
    match (&old.kind, &new.kind) {
        (NodeKind::Scalar { value: a, .. }, NodeKind::Scalar { value: b, .. }) => {
            if a != b || resolved_type(old) != resolved_type(new) {
                return Err(format!("the value `{a}` in {at} became `{b}`"));
            }
        }
        (NodeKind::Alias { anchor: a }, NodeKind::Alias { anchor: b }) if a == b => {}
        (NodeKind::Mapping { entries: a, .. }, NodeKind::Mapping { entries: b, .. })
            if a.len() == b.len() =>
        {
            for ((old_key, old_value), (new_key, new_value)) in a.iter().zip(b) {
                same(old_key, new_key, at)?;
                same(old_value, new_value, at)?;
            }
        }
        (NodeKind::Sequence { items: a, .. }, NodeKind::Sequence { items: b, .. })
            if a.len() == b.len() =>
        {
            for (old_item, new_item) in a.iter().zip(b) {
                same(old_item, new_item, at)?;
            }
        }
        _ => {
            return Err(format!(
                "a {} in {at} became a different {}",
                old.kind.describe(),
                new.kind.describe()
            ));
        }
    }
    Ok(())
}

/// Like [`same`], except that the node at `route` must have become the string `target`.
fn same_except(
    old: &Node,
    new: &Node,
    route: &[usize],
    target: &str,
    at: &str,
) -> Result<(), String> {
    let Some((&next, rest)) = route.split_first() else {
        return changed_as_intended(old, new, target, at);
    };
    if old.anchor != new.anchor || old.tag != new.tag {
        return Err(format!("an anchor or tag changed in {at}"));
    }
    match (&old.kind, &new.kind) {
        (NodeKind::Mapping { entries: a, .. }, NodeKind::Mapping { entries: b, .. })
            if a.len() == b.len() =>
        {
            for (index, ((old_key, old_value), (new_key, new_value))) in a.iter().zip(b).enumerate()
            {
                same(old_key, new_key, at)?;
                if index == next {
                    same_except(old_value, new_value, rest, target, at)?;
                } else {
                    same(old_value, new_value, at)?;
                }
            }
            Ok(())
        }
        (NodeKind::Sequence { items: a, .. }, NodeKind::Sequence { items: b, .. })
            if a.len() == b.len() =>
        {
            for (index, (old_item, new_item)) in a.iter().zip(b).enumerate() {
                if index == next {
                    same_except(old_item, new_item, rest, target, at)?;
                } else {
                    same(old_item, new_item, at)?;
                }
            }
            Ok(())
        }
        _ => Err(format!("the structure around the target in {at} changed")),
    }
}

/// The target must be a one-line scalar holding `target`, typed as a string (or, when it was
/// a plain integer and still is, the same type).
fn changed_as_intended(old: &Node, new: &Node, target: &str, at: &str) -> Result<(), String> {
    if old.anchor != new.anchor || old.tag != new.tag {
        return Err(format!("the target's anchor or tag changed in {at}"));
    }
    let NodeKind::Scalar { value, style } = &new.kind else {
        return Err(format!(
            "the target in {at} is now a {}",
            new.kind.describe()
        ));
    };
    if value != target {
        return Err(format!(
            "the target in {at} reads `{value}`, not `{target}`"
        ));
    }
    if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
        return Err(format!("the target in {at} became a block scalar"));
    }
    let new_type = resolved_type(new);
    let string_type = Some(scalar::resolved_type("", ScalarStyle::DoubleQuoted, None));
    if new.tag.is_none() && new_type != string_type && new_type != resolved_type(old) {
        return Err(format!(
            "the target in {at} would be read as {} instead of a string",
            new_type.unwrap_or_default()
        ));
    }
    Ok(())
}
