//! A YAML file as a tree of nodes that remember their byte spans, built from the event stream
//! of `granit-parser` (the parser under serde-saphyr).
//!
//! Aliases stay references (never expanded), so reading a file costs its size; the expanded
//! size is computed arithmetically and files that would explode are refused.

use super::ManifestError;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError, Span, StructureStyle};
use std::collections::HashMap;
use std::ops::Range;

/// Most nodes a document may expand to through aliases. A 1 MiB file without aliases has
/// well under 600,000 nodes, so only alias amplification reaches this.
pub(crate) const MAX_EXPANDED_NODES: usize = 1_000_000;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    /// Byte range of the node's content in the file (for scalars: including quotes; excluding
    /// any tag or anchor in front of it).
    pub span: Range<usize>,
    /// Anchor id defined on this node, 0 for none.
    pub anchor: usize,
    /// The resolved tag, e.g. `tag:yaml.org,2002:str`, if one was written.
    pub tag: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Scalar {
        value: String,
        style: ScalarStyle,
    },
    Mapping {
        entries: Vec<(Node, Node)>,
        flow: bool,
    },
    Sequence {
        items: Vec<Node>,
        flow: bool,
    },
    Alias {
        anchor: usize,
    },
}

impl NodeKind {
    pub fn describe(&self) -> &'static str {
        match self {
            NodeKind::Scalar { .. } => "scalar",
            NodeKind::Mapping { .. } => "mapping",
            NodeKind::Sequence { .. } => "sequence",
            NodeKind::Alias { .. } => "alias",
        }
    }
}

impl Node {
    /// The scalar value of this node when it is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Value of the entry `key` when this node is a mapping with exactly that scalar key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Mapping { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// One document of the file.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    pub root: Node,
    /// True for a document with no content at all (e.g. after a trailing `---`).
    pub empty: bool,
}

/// Parses every document of `text`, refusing syntax errors and alias bombs.
pub(crate) fn parse(text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(syntax_error)?;
        builder.push(event, span)?;
    }
    Ok(builder.documents)
}

fn syntax_error(err: ScanError) -> ManifestError {
    let marker = err.marker();
    ManifestError::Syntax {
        message: err.info(),
        line: marker.line(),
        column: marker.col() + 1,
    }
}

/// A collection being filled while its events arrive.
struct Open {
    node: Node,
    /// For mappings: the key read but not yet paired with its value.
    pending_key: Option<Node>,
    /// Expanded node count of the children so far.
    expanded: usize,
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Open>,
    /// Expanded size of each anchored node, by anchor id, for alias-bomb accounting. (A map,
    /// not a list: a hostile file may hold many thousands of anchors and aliases.)
    anchor_sizes: HashMap<usize, usize>,
}

fn byte_range(span: &Span) -> Range<usize> {
    // Markers from a `&str` input always carry byte offsets; fall back to the character
    // index only to stay total (equal for ASCII).
    let start = span.start.byte_offset().unwrap_or(span.start.index());
    let end = span.end.byte_offset().unwrap_or(span.end.index());
    start..end.max(start)
}

impl Builder {
    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), ManifestError> {
        let range = byte_range(&span);
        match event {
            // Anchors are scoped to their document.
            Event::DocumentStart(..) => self.anchor_sizes.clear(),
            Event::Scalar(value, style, anchor, tag) => {
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        style,
                    },
                    span: range,
                    anchor,
                    tag: tag.map(|t| t.to_string()),
                };
                self.finish(node, 1)?;
            }
            Event::Alias(anchor) => {
                let size = self.anchor_sizes.get(&anchor).copied().unwrap_or(1);
                let node = Node {
                    kind: NodeKind::Alias { anchor },
                    span: range,
                    anchor: 0,
                    tag: None,
                };
                self.finish(node, size)?;
            }
            Event::SequenceStart(style, anchor, tag) => {
                let kind = NodeKind::Sequence {
                    items: Vec::new(),
                    flow: style == StructureStyle::Flow,
                };
                self.open(kind, range, anchor, tag.map(|t| t.to_string()));
            }
            Event::MappingStart(style, anchor, tag) => {
                let kind = NodeKind::Mapping {
                    entries: Vec::new(),
                    flow: style == StructureStyle::Flow,
                };
                self.open(kind, range, anchor, tag.map(|t| t.to_string()));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(mut open) = self.stack.pop() {
                    open.node.span.end = range.end.max(open.node.span.end);
                    let size = open.expanded.saturating_add(1);
                    self.finish(open.node, size)?;
                }
            }
            // Stream markers, comments and anchor metadata carry nothing the tree needs.
            _ => {}
        }
        Ok(())
    }

    fn open(&mut self, kind: NodeKind, span: Range<usize>, anchor: usize, tag: Option<String>) {
        self.stack.push(Open {
            node: Node {
                kind,
                span,
                anchor,
                tag,
            },
            pending_key: None,
            expanded: 0,
        });
    }

    /// Attaches a completed node to its parent (or makes it a document root).
    fn finish(&mut self, node: Node, expanded: usize) -> Result<(), ManifestError> {
        if expanded > MAX_EXPANDED_NODES {
            return Err(ManifestError::AliasBomb {
                doc: format!("document {}", self.documents.len()),
                limit: MAX_EXPANDED_NODES,
            });
        }
        if node.anchor != 0 {
            self.anchor_sizes.insert(node.anchor, expanded);
        }
        let Some(parent) = self.stack.last_mut() else {
            let empty = node.span.is_empty() && node.scalar().is_some();
            self.documents.push(Document { root: node, empty });
            return Ok(());
        };
        parent.expanded = parent.expanded.saturating_add(expanded);
        if parent.expanded > MAX_EXPANDED_NODES {
            return Err(ManifestError::AliasBomb {
                doc: format!("document {}", self.documents.len()),
                limit: MAX_EXPANDED_NODES,
            });
        }
        match &mut parent.node.kind {
            NodeKind::Sequence { items, .. } => items.push(node),
            NodeKind::Mapping { entries, .. } => match parent.pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => parent.pending_key = Some(node),
            },
            // Only collections are ever pushed on the stack.
            NodeKind::Scalar { .. } | NodeKind::Alias { .. } => {}
        }
        Ok(())
    }
}
