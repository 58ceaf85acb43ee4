//! `!reference [job, key, ...]` as GitLab resolves it
//! (lib/gitlab/ci/config/yaml/tags/{reference,base,resolver}.rb): after
//! `extends`, on the whole configuration. Each tag is replaced by
//! `config.dig(*path)` of the configuration as it was before any tag was
//! resolved, with the tags inside that value resolved in turn. Digging only
//! goes through hashes; a missing, `null` or `false` value is "could not be
//! found"; a tag met again while it is being resolved is "part of a circular
//! chain". A referenced array that is an element of another array stays a
//! nested array (scripts flatten it later).
//!
//! Each tag is resolved once (memoised by its position in the document),
//! like GitLab's tag objects, so a template referenced by many jobs is
//! resolved once.

use crate::diag::Diagnostic;
use crate::node::{Map, Node, Value};
use std::collections::{HashMap, HashSet};

/// How deep `!reference` tags may nest (GitLab documents 10 levels); it
/// also bounds recursion on hostile input.
pub const MAX_NESTING: usize = 10;

/// Resolves every `!reference` in `root`.
pub fn resolve(mut root: Node) -> Result<Node, Vec<Diagnostic>> {
    // Resolve every tag against the untouched document, then put the
    // results in place: only referenced values are copied.
    let replacements: Vec<(Vec<OwnedSeg>, Node)> = {
        let mut resolver = Resolver {
            doc: &root,
            memo: HashMap::new(),
            in_progress: HashSet::new(),
            errors: Vec::new(),
            sites: Vec::new(),
            depth: 0,
            inner_levels: 0,
        };
        let mut path = Vec::new();
        resolver.walk(&root, &mut path);
        let Resolver {
            sites, mut errors, ..
        } = resolver;
        if !errors.is_empty() {
            let mut seen = HashSet::new();
            errors.retain(|d| seen.insert((d.span.map(|s| (s.file, s.offset)), d.message.clone())));
            return Err(errors);
        }
        sites
            .into_iter()
            .map(|(path, node)| (path.into_iter().map(OwnedSeg::from).collect(), node))
            .collect()
    };
    for (path, node) in replacements {
        if let Some(slot) = navigate_mut(&mut root, &path) {
            *slot = node;
        }
    }
    Ok(root)
}

/// A path step that outlives the borrow of the document.
enum OwnedSeg {
    Key(String),
    Index(usize),
}

impl From<Seg<'_>> for OwnedSeg {
    fn from(seg: Seg<'_>) -> Self {
        match seg {
            Seg::Key(k) => OwnedSeg::Key(k.to_string()),
            Seg::Index(i) => OwnedSeg::Index(i),
        }
    }
}

fn navigate_mut<'n>(node: &'n mut Node, path: &[OwnedSeg]) -> Option<&'n mut Node> {
    let mut cur = node;
    for seg in path {
        cur = match (seg, &mut cur.value) {
            (OwnedSeg::Key(k), Value::Map(m)) => m.get_mut(k)?,
            (OwnedSeg::Index(i), Value::Seq(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn contains_reference(node: &Node) -> bool {
    match &node.value {
        Value::Reference(_) => true,
        Value::Seq(items) => items.iter().any(contains_reference),
        Value::Map(m) => m.iter().any(|(_, e)| contains_reference(&e.value)),
        _ => false,
    }
}

/// One step of a path into the document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Resolver<'a> {
    doc: &'a Node,
    /// Resolved tags by their position (`None` when resolution failed),
    /// with how many tags deep their value nests.
    memo: HashMap<Vec<Seg<'a>>, (Option<Node>, usize)>,
    in_progress: HashSet<Vec<Seg<'a>>>,
    errors: Vec<Diagnostic>,
    /// Every tag of the document with its resolved value.
    sites: Vec<(Vec<Seg<'a>>, Node)>,
    /// Tags being resolved inside one another right now.
    depth: usize,
    /// Deepest nesting of tags met inside the value being resolved.
    inner_levels: usize,
}

impl<'a> Resolver<'a> {
    /// Finds and resolves every tag under `node` (at `path`).
    fn walk(&mut self, node: &'a Node, path: &mut Vec<Seg<'a>>) {
        match &node.value {
            Value::Reference(items) => {
                if let Some(resolved) = self.reference(node, items, path) {
                    self.sites.push((path.clone(), resolved));
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.walk(item, path);
                    path.pop();
                }
            }
            Value::Map(map) => {
                for (key, entry) in map.iter() {
                    path.push(Seg::Key(key));
                    self.walk(&entry.value, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// A copy of `node` (found at `path`) with every tag resolved; `None`
    /// when a tag in it failed (the error is recorded).
    fn tree(&mut self, node: &'a Node, path: &mut Vec<Seg<'a>>) -> Option<Node> {
        match &node.value {
            Value::Reference(items) => self.reference(node, items, path),
            Value::Seq(items) if items.iter().any(contains_reference) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    match self.tree(item, path) {
                        Some(n) => out.push(n),
                        None => ok = false,
                    }
                    path.pop();
                }
                ok.then(|| Node::new(Value::Seq(out), node.span))
            }
            Value::Map(map) if map.iter().any(|(_, e)| contains_reference(&e.value)) => {
                let mut out = Map::new();
                let mut ok = true;
                for (key, entry) in map.iter() {
                    path.push(Seg::Key(key));
                    match self.tree(&entry.value, path) {
                        Some(n) => {
                            out.insert(key, entry.key_span, n);
                        }
                        None => ok = false,
                    }
                    path.pop();
                }
                ok.then(|| Node::new(Value::Map(out), node.span))
            }
            _ => Some(node.clone()),
        }
    }

    fn reference(
        &mut self,
        node: &'a Node,
        items: &'a [Node],
        path: &mut Vec<Seg<'a>>,
    ) -> Option<Node> {
        if let Some((done, levels)) = self.memo.get(path.as_slice()) {
            self.inner_levels = self.inner_levels.max(*levels);
            return done.clone();
        }
        // Built only for errors: most tags resolve.
        let shown = || inspect(items);
        if self.in_progress.contains(path.as_slice()) {
            self.errors.push(
                Diagnostic::at(
                    node.span,
                    format!("!reference {} is part of a circular chain", shown()),
                )
                .expected("references that do not lead back to themselves"),
            );
            return None;
        }
        let keys: Option<Vec<&'a str>> = items.iter().map(Node::as_str).collect();
        let keys = match keys {
            Some(keys) if !keys.is_empty() => keys,
            _ => {
                self.errors.push(
                    Diagnostic::at(node.span, format!("!reference {} is not valid", shown()))
                        .expected(
                            "a non-empty sequence of strings, like `!reference [.setup, script]`",
                        ),
                );
                self.memo.insert(path.clone(), (None, 0));
                return None;
            }
        };
        let mut target = self.doc;
        let mut target_path = Vec::with_capacity(keys.len());
        let mut found = true;
        for key in &keys {
            match target.as_map().and_then(|m| m.get(key)) {
                Some(next) => {
                    target = next;
                    target_path.push(Seg::Key(key));
                }
                None => {
                    found = false;
                    break;
                }
            }
        }
        // Ruby: `raise MissingReferenceError unless value`.
        if !found || matches!(target.value, Value::Null | Value::Bool(false)) {
            self.errors.push(
                Diagnostic::at(
                    node.span,
                    format!("!reference {} could not be found", shown()),
                )
                .expected("the path of an existing key, like `[.setup, script]`"),
            );
            self.memo.insert(path.clone(), (None, 0));
            return None;
        }
        let too_deep = |shown: &str| {
            Diagnostic::at(
                node.span,
                format!("!reference {shown} nests references more than {MAX_NESTING} levels deep"),
            )
            .expected(format!(
                "at most {MAX_NESTING} levels of `!reference` inside one another"
            ))
        };
        // Also bounds the recursion on hostile chains.
        if self.depth >= MAX_NESTING {
            self.errors.push(too_deep(&shown()));
            self.memo.insert(path.clone(), (None, 0));
            return None;
        }
        self.in_progress.insert(path.clone());
        self.depth += 1;
        let outer_levels = std::mem::take(&mut self.inner_levels);
        let mut resolved = self.tree(target, &mut target_path).map(|mut n| {
            n.span = node.span;
            n
        });
        let levels = self.inner_levels + 1;
        self.inner_levels = outer_levels.max(levels);
        self.depth -= 1;
        self.in_progress.remove(path.as_slice());
        if resolved.is_some() && levels > MAX_NESTING {
            self.errors.push(too_deep(&shown()));
            resolved = None;
        }
        self.memo.insert(path.clone(), (resolved.clone(), levels));
        resolved
    }
}

/// The tag's sequence as Ruby's `Array#inspect` shows it: `["job", "script"]`.
fn inspect(items: &[Node]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|n| match &n.value {
            Value::Str(s) => serde_json::to_string(s).unwrap_or_default(),
            Value::Null => "nil".into(),
            _ => n
                .scalar_string()
                .unwrap_or_else(|| serde_json::to_string(&n.to_json()).unwrap_or_default()),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
