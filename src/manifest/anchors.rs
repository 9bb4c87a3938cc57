//! Anchors, aliases and merge keys (`&name`, `*name`, `<<: *name`): the node an alias
//! repeats, the value a merge key brings into a mapping, where a node is written in the
//! file, and every path that reads it.
//!
//! Flux reads manifests through kustomize, which expands aliases and merge keys before
//! anything is applied (kyaml `RNode.DeAnchor`: a mapping's own keys win over merged ones,
//! and of several merged mappings the first listed wins). A value repeated through an alias
//! is therefore written in exactly one place, its definition, and that is where an edit
//! goes.

use super::path::Segment;
use super::scalar::Context;
use super::tree::{Node, NodeKind};
use serde_saphyr::granit_parser::ScalarStyle;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// The anchored nodes of one document, by anchor id (ids are unique per definition: a name
/// defined twice gets two ids, and each alias names the definition it means).
pub(crate) struct Anchors<'a> {
    by_id: HashMap<usize, &'a Node>,
    /// Steps left for following merge keys: mappings that merge the same mapping many times
    /// over, level upon level, would otherwise take exponential time (as aliases would,
    /// which the parser bounds). Once spent, merges are no longer followed.
    merge_steps: Cell<usize>,
}

/// Merge steps one document may take; real manifests take a handful.
const MERGE_STEPS: usize = 100_000;

impl<'a> Anchors<'a> {
    /// Collects the anchors of the document rooted at `root`.
    pub fn of(root: &'a Node) -> Anchors<'a> {
        let mut by_id = HashMap::new();
        let mut pending = vec![root];
        while let Some(node) = pending.pop() {
            if node.anchor != 0 {
                by_id.insert(node.anchor, node);
            }
            match &node.kind {
                NodeKind::Mapping { entries, .. } => {
                    pending.extend(entries.iter().flat_map(|(k, v)| [k, v]));
                }
                NodeKind::Sequence { items, .. } => pending.extend(items),
                NodeKind::Scalar { .. } | NodeKind::Alias { .. } => {}
            }
        }
        Anchors {
            by_id,
            merge_steps: Cell::new(MERGE_STEPS),
        }
    }

    /// Takes one merge step; false once they are spent.
    fn merge_step(&self) -> bool {
        let left = self.merge_steps.get();
        self.merge_steps.set(left.saturating_sub(1));
        left > 0
    }

    /// The node `node` stands for: the anchored node for an alias (YAML has no alias of an
    /// alias), the node itself otherwise.
    pub fn resolve(&self, node: &'a Node) -> &'a Node {
        match &node.kind {
            NodeKind::Alias { anchor } => self.by_id.get(anchor).copied().unwrap_or(node),
            _ => node,
        }
    }

    /// The mappings a mapping merges in with `<<`, first listed first (it wins), each once.
    fn merged(&self, entries: &'a [(Node, Node)]) -> Vec<&'a Node> {
        let mut sources: Vec<&'a Node> = Vec::new();
        let mut add = |node: &'a Node| {
            if matches!(node.kind, NodeKind::Mapping { .. })
                && !sources.iter().any(|known| std::ptr::eq(*known, node))
            {
                sources.push(node);
            }
        };
        for (_, value) in entries.iter().filter(|(k, _)| is_merge_key(k)) {
            let value = self.resolve(value);
            match &value.kind {
                NodeKind::Sequence { items, .. } => {
                    items.iter().for_each(|item| add(self.resolve(item)));
                }
                _ => add(value),
            }
        }
        sources
    }

    /// The value of `key` in `mapping` as a reader sees it: written there (own keys win),
    /// or brought in by a merge key.
    pub fn lookup(&self, mapping: &'a Node, key: &str) -> Lookup<'a> {
        self.lookup_guarded(mapping, key, &mut HashSet::new())
    }

    fn lookup_guarded(
        &self,
        mapping: &'a Node,
        key: &str,
        visiting: &mut HashSet<*const Node>,
    ) -> Lookup<'a> {
        let NodeKind::Mapping { entries, .. } = &mapping.kind else {
            return Lookup::Missing;
        };
        let own: Vec<usize> = (0..entries.len())
            .filter(|&i| !is_merge_key(&entries[i].0) && entries[i].0.scalar() == Some(key))
            .collect();
        match own.as_slice() {
            [only] => return Lookup::Own(&entries[*only].1),
            [] => {}
            several => return Lookup::Duplicate(several.len()),
        }
        if !self.merge_step() || !visiting.insert(std::ptr::from_ref(mapping)) {
            return Lookup::Missing;
        }
        let mut providers = Vec::new();
        for source in self.merged(entries) {
            match self.lookup_guarded(source, key, visiting) {
                Lookup::Own(value) | Lookup::Merged(value) => providers.push(value),
                Lookup::Missing => {}
                ambiguous @ (Lookup::Duplicate(_) | Lookup::MergedFromSeveral(_)) => {
                    visiting.remove(&std::ptr::from_ref(mapping));
                    return ambiguous;
                }
            }
        }
        visiting.remove(&std::ptr::from_ref(mapping));
        match providers.as_slice() {
            [] => Lookup::Missing,
            [only] => Lookup::Merged(only),
            several => Lookup::MergedFromSeveral(several.len()),
        }
    }

    /// Every key a reader sees in `mapping` with its value node: its own keys, then the
    /// merged keys it does not override (the first merged mapping wins, as in kyaml).
    fn effective_entries(
        &self,
        mapping: &'a Node,
        visiting: &mut Vec<*const Node>,
    ) -> Vec<(&'a Node, &'a Node)> {
        let NodeKind::Mapping { entries, .. } = &mapping.kind else {
            return Vec::new();
        };
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for (key, value) in entries.iter().filter(|(k, _)| !is_merge_key(k)) {
            if let Some(name) = key.scalar() {
                seen.insert(name);
            }
            out.push((key, value));
        }
        visiting.push(std::ptr::from_ref(mapping));
        for source in self.merged(entries) {
            if visiting.contains(&std::ptr::from_ref(source)) || !self.merge_step() {
                continue;
            }
            for (key, value) in self.effective_entries(source, visiting) {
                if let Some(name) = key.scalar()
                    && seen.insert(name)
                {
                    out.push((key, value));
                }
            }
        }
        visiting.pop();
        out
    }
}

/// How a mapping answers for a key.
pub(crate) enum Lookup<'a> {
    /// Written in the mapping itself.
    Own(&'a Node),
    /// Brought in by a merge key from exactly one merged mapping.
    Merged(&'a Node),
    /// Not there.
    Missing,
    /// Written this many times in the mapping.
    Duplicate(usize),
    /// Brought in by this many merged mappings.
    MergedFromSeveral(usize),
}

/// Whether a mapping key is the merge key `<<` (plain, or tagged `!!merge`).
pub(crate) fn is_merge_key(key: &Node) -> bool {
    match &key.kind {
        NodeKind::Scalar { value, style } => match key.tag.as_deref() {
            Some(tag) => tag == "tag:yaml.org,2002:merge",
            None => value == "<<" && *style == ScalarStyle::Plain,
        },
        _ => false,
    }
}

/// Where `target` is written under `root`: the child positions from the root (mapping entry
/// or sequence item per level) and whether it sits inside a flow collection.
pub(crate) fn place_of(root: &Node, target: &Node) -> Option<(Vec<usize>, Context)> {
    fn search(
        node: &Node,
        target: *const Node,
        flow: bool,
        route: &mut Vec<usize>,
    ) -> Option<Context> {
        if std::ptr::eq(node, target) {
            return Some(if flow { Context::Flow } else { Context::Block });
        }
        let children: Vec<&Node> = match &node.kind {
            NodeKind::Mapping { entries, .. } => entries.iter().map(|(_, v)| v).collect(),
            NodeKind::Sequence { items, .. } => items.iter().collect(),
            NodeKind::Scalar { .. } | NodeKind::Alias { .. } => return None,
        };
        let flow = flow
            || matches!(
                node.kind,
                NodeKind::Mapping { flow: true, .. } | NodeKind::Sequence { flow: true, .. }
            );
        for (index, child) in children.into_iter().enumerate() {
            route.push(index);
            if let Some(context) = search(child, target, flow, route) {
                return Some(context);
            }
            route.pop();
        }
        None
    }
    let mut route = Vec::new();
    search(root, std::ptr::from_ref(target), false, &mut route).map(|context| (route, context))
}

/// Every path (in the documented syntax) that reads `target` in the document at `root`,
/// through aliases and merge keys, sorted; at most `limit`, with the count of those left out.
pub(crate) fn paths_to(
    root: &Node,
    target: &Node,
    anchors: &Anchors<'_>,
    limit: usize,
) -> (Vec<String>, usize) {
    let mut walk = Walk {
        anchors,
        target: std::ptr::from_ref(target),
        reaches: HashMap::new(),
        expanding: Vec::new(),
        found: Vec::new(),
        more: 0,
        limit,
        budget: WALK_BUDGET,
    };
    walk.visit(root, &mut Vec::new());
    let mut found = walk.found;
    found.sort();
    found.dedup();
    (found, walk.more)
}

/// Nodes the path walk may visit: enough for any real manifest, and a bound on files that
/// repeat one anchor in exponentially many ways.
const WALK_BUDGET: usize = 100_000;

struct Walk<'a, 'b> {
    anchors: &'b Anchors<'a>,
    target: *const Node,
    /// Whether a node leads to the target (memoised; false while being computed, which
    /// cuts self-referencing anchors).
    reaches: HashMap<*const Node, bool>,
    /// Anchors being expanded on the current path (an anchor that contains its own alias
    /// is not expanded again).
    expanding: Vec<*const Node>,
    found: Vec<String>,
    more: usize,
    limit: usize,
    budget: usize,
}

impl<'a> Walk<'a, '_> {
    fn reaches(&mut self, node: &'a Node) -> bool {
        if std::ptr::eq(node, self.target) {
            return true;
        }
        let node = self.anchors.resolve(node);
        let key = std::ptr::from_ref(node);
        if let Some(known) = self.reaches.get(&key) {
            return *known;
        }
        self.reaches.insert(key, false);
        let answer = std::ptr::eq(node, self.target)
            || match &node.kind {
                NodeKind::Mapping { entries, .. } => {
                    entries.iter().any(|(_, value)| self.reaches(value))
                }
                NodeKind::Sequence { items, .. } => items.iter().any(|item| self.reaches(item)),
                NodeKind::Scalar { .. } | NodeKind::Alias { .. } => false,
            };
        self.reaches.insert(key, answer);
        answer
    }

    fn visit(&mut self, node: &'a Node, path: &mut Vec<Segment>) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let node = self.anchors.resolve(node);
        if std::ptr::eq(node, self.target) {
            if self.found.len() < self.limit {
                self.found
                    .push(path.iter().map(ToString::to_string).collect());
            } else {
                self.more += 1;
            }
            return;
        }
        let key = std::ptr::from_ref(node);
        if self.expanding.contains(&key) || !self.reaches(node) {
            return;
        }
        self.expanding.push(key);
        match &node.kind {
            NodeKind::Mapping { .. } => {
                for (name, value) in self.anchors.effective_entries(node, &mut Vec::new()) {
                    let Some(name) = name.scalar() else { continue };
                    path.push(Segment::Key(name.to_owned()));
                    self.visit(value, path);
                    path.pop();
                }
            }
            NodeKind::Sequence { items, .. } => {
                for (index, item) in items.iter().enumerate() {
                    path.push(Segment::Index(index));
                    self.visit(item, path);
                    path.pop();
                }
            }
            NodeKind::Scalar { .. } | NodeKind::Alias { .. } => {}
        }
        self.expanding.pop();
    }
}
