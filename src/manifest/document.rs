//! Choosing one document of a multi-document YAML file, by `Kind/name` or by index.

use super::ManifestError;
use super::tree::Document;
use std::fmt;

/// Which document of a file a path applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocSelector {
    /// The document whose `kind` and `metadata.name` are these.
    KindName { kind: String, name: String },
    /// The document at this 0-based position, counting only documents with content (a
    /// trailing `---` with nothing after it is not a document).
    Index(usize),
}

impl DocSelector {
    /// Parses `Kind/name` (e.g. `HelmRelease/podinfo`) or a 0-based index (`1`).
    pub fn parse(source: &str) -> Result<Self, ManifestError> {
        let invalid = |reason: &str| ManifestError::InvalidSelector {
            selector: source.to_owned(),
            reason: reason.to_owned(),
        };
        if !source.is_empty() && source.bytes().all(|b| b.is_ascii_digit()) {
            return source
                .parse()
                .map(Self::Index)
                .map_err(|_| invalid("the index is too large"));
        }
        let Some((kind, name)) = source.split_once('/') else {
            return Err(invalid("expected `Kind/name` or an index"));
        };
        if kind.is_empty() || name.is_empty() || name.contains('/') {
            return Err(invalid(
                "expected exactly one `/` between a kind and a name",
            ));
        }
        if source.trim() != source {
            return Err(invalid("remove the surrounding spaces"));
        }
        Ok(Self::KindName {
            kind: kind.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for DocSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocSelector::KindName { kind, name } => write!(f, "{kind}/{name}"),
            DocSelector::Index(index) => write!(f, "document {index}"),
        }
    }
}

impl std::str::FromStr for DocSelector {
    type Err = ManifestError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Self::parse(source)
    }
}

/// A document chosen from a file, with a description for messages.
pub(crate) struct Chosen<'a> {
    /// Position among all parsed documents (including empty ones).
    pub position: usize,
    pub document: &'a Document,
    pub label: String,
}

/// `Kind/name` of a document, when it has both.
fn kind_name(document: &Document) -> Option<(&str, &str)> {
    let kind = document.root.get("kind")?.scalar()?;
    let name = document.root.get("metadata")?.get("name")?.scalar()?;
    Some((kind, name))
}

fn describe(document: &Document, index: usize, count: usize) -> String {
    match kind_name(document) {
        Some((kind, name)) => format!("{kind}/{name} (document {index} of {count})"),
        None => format!("document {index} of {count}"),
    }
}

/// Picks the document `selector` names; without a selector the file must hold exactly one.
pub(crate) fn choose<'a>(
    documents: &'a [Document],
    selector: Option<&DocSelector>,
) -> Result<Chosen<'a>, ManifestError> {
    let with_content: Vec<(usize, &Document)> = documents
        .iter()
        .enumerate()
        .filter(|(_, document)| !document.empty)
        .collect();
    let count = with_content.len();
    let chosen = |(content_index, (position, document)): (usize, &(usize, &'a Document))| Chosen {
        position: *position,
        document,
        label: describe(document, content_index, count),
    };
    let available = || {
        if with_content.is_empty() {
            return "no documents".to_owned();
        }
        with_content
            .iter()
            .enumerate()
            .map(|(index, (_, document))| match kind_name(document) {
                Some((kind, name)) => format!("{index}: {kind}/{name}"),
                None => format!("{index}: (no kind/name)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match selector {
        None => match with_content.as_slice() {
            [only] => Ok(chosen((0, only))),
            [] => Err(ManifestError::DocumentNotFound {
                selector: "(any document)".to_owned(),
                available: available(),
            }),
            _ => Err(ManifestError::AmbiguousDocument {
                reason: format!("the file holds {count} documents and none was chosen"),
                available: available(),
            }),
        },
        Some(DocSelector::Index(index)) => with_content
            .get(*index)
            .map(|entry| chosen((*index, entry)))
            .ok_or_else(|| ManifestError::DocumentNotFound {
                selector: format!("document index {index}"),
                available: available(),
            }),
        Some(DocSelector::KindName { kind, name }) => {
            let matches: Vec<(usize, &(usize, &Document))> = with_content
                .iter()
                .enumerate()
                .filter(|(_, (_, document))| {
                    kind_name(document) == Some((kind.as_str(), name.as_str()))
                })
                .collect();
            match matches.as_slice() {
                [only] => Ok(chosen(*only)),
                [] => Err(ManifestError::DocumentNotFound {
                    selector: format!("{kind}/{name}"),
                    available: available(),
                }),
                _ => Err(ManifestError::AmbiguousDocument {
                    reason: format!("{} documents are {kind}/{name}", matches.len()),
                    available: available(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tree;

    const FILE: &str = "\
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: podinfo
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
---
# just a comment
---
plain: mapping
---
";

    fn pick(selector: Option<&str>) -> Result<(usize, String), ManifestError> {
        let documents = tree::parse(FILE)?;
        let selector = selector.map(DocSelector::parse).transpose()?;
        choose(&documents, selector.as_ref()).map(|c| (c.position, c.label))
    }

    #[test]
    fn chooses_by_kind_name_and_index() -> Result<(), ManifestError> {
        assert_eq!(
            pick(Some("HelmRelease/podinfo"))?,
            (1, "HelmRelease/podinfo (document 1 of 3)".to_owned())
        );
        assert_eq!(
            pick(Some("HelmRepository/podinfo"))?,
            (0, "HelmRepository/podinfo (document 0 of 3)".to_owned())
        );
        // Index 2 skips the comment-only document.
        assert_eq!(pick(Some("2"))?, (3, "document 2 of 3".to_owned()));
        Ok(())
    }

    #[test]
    fn refuses_missing_and_ambiguous_documents() {
        let missing = pick(Some("HelmRelease/other")).expect_err("missing");
        assert_eq!(missing.category(), "document_not_found");
        let message = missing.to_string();
        assert!(message.contains("HelmRelease/other"), "{message}");
        assert!(message.contains("1: HelmRelease/podinfo"), "{message}");
        assert_eq!(
            pick(Some("3")).map_err(|e| e.category()),
            Err("document_not_found")
        );
        let none = pick(None).expect_err("ambiguous");
        assert_eq!(none.category(), "ambiguous_document");
        assert!(none.to_string().contains("3 documents"), "{none}");

        let twice = "kind: A\nmetadata: {name: x}\n---\nkind: A\nmetadata: {name: x}\n";
        let documents = tree::parse(twice).expect("valid YAML");
        let selector = DocSelector::parse("A/x").expect("valid selector");
        let err = choose(&documents, Some(&selector))
            .err()
            .map(|e| e.category());
        assert_eq!(err, Some("ambiguous_document"));

        let empty = tree::parse("# nothing\n").expect("valid YAML");
        let err = choose(&empty, None).err().map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("no documents")));
    }

    #[test]
    fn parses_selectors() {
        assert_eq!(DocSelector::parse("7").ok(), Some(DocSelector::Index(7)));
        assert_eq!(
            DocSelector::parse("OCIRepository/podinfo").ok(),
            Some(DocSelector::KindName {
                kind: "OCIRepository".to_owned(),
                name: "podinfo".to_owned()
            })
        );
        for bad in [
            "",
            "HelmRelease",
            "/x",
            "x/",
            "a/b/c",
            " A/b",
            "99999999999999999999999",
        ] {
            let err = DocSelector::parse(bad).expect_err(bad);
            assert_eq!(err.category(), "invalid_selector", "{bad}");
        }
    }
}
