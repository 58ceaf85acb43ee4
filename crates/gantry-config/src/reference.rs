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

/// Resolves every `!reference` in `root`.
pub fn resolve(root: Node) -> Result<Node, Vec<Diagnostic>> {
    if !contains_reference(&root) {
        return Ok(root);
    }
    let mut resolver = Resolver { doc: &root, memo: HashMap::new(), in_progress: HashSet::new(), errors: Vec::new() };
    let mut path = Vec::new();
    let resolved = resolver.tree(&root, &mut path);
    let mut errors = resolver.errors;
    match resolved {
        Some(node) if errors.is_empty() => Ok(node),
        _ => {
            let mut seen = HashSet::new();
            errors.retain(|d| seen.insert((d.span.map(|s| (s.file, s.offset)), d.message.clone())));
            Err(errors)
        }
    }
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
    /// Resolved tags by their position; `None` when resolution failed.
    memo: HashMap<Vec<Seg<'a>>, Option<Node>>,
    in_progress: HashSet<Vec<Seg<'a>>>,
    errors: Vec<Diagnostic>,
}

impl<'a> Resolver<'a> {
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

    fn reference(&mut self, node: &'a Node, items: &'a [Node], path: &mut Vec<Seg<'a>>) -> Option<Node> {
        if let Some(done) = self.memo.get(path.as_slice()) {
            return done.clone();
        }
        let shown = inspect(items);
        if self.in_progress.contains(path.as_slice()) {
            self.errors.push(
                Diagnostic::at(node.span, format!("!reference {shown} is part of a circular chain"))
                    .expected("references that do not lead back to themselves"),
            );
            return None;
        }
        let keys: Option<Vec<&'a str>> = items.iter().map(Node::as_str).collect();
        let keys = match keys {
            Some(keys) if !keys.is_empty() => keys,
            _ => {
                self.errors.push(
                    Diagnostic::at(node.span, format!("!reference {shown} is not valid"))
                        .expected("a non-empty sequence of strings, like `!reference [.setup, script]`"),
                );
                self.memo.insert(path.clone(), None);
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
                Diagnostic::at(node.span, format!("!reference {shown} could not be found"))
                    .expected("the path of an existing key, like `[.setup, script]`"),
            );
            self.memo.insert(path.clone(), None);
            return None;
        }
        self.in_progress.insert(path.clone());
        let resolved = self.tree(target, &mut target_path).map(|mut n| {
            n.span = node.span;
            n
        });
        self.in_progress.remove(path.as_slice());
        self.memo.insert(path.clone(), resolved.clone());
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
            _ => n.scalar_string().unwrap_or_else(|| serde_json::to_string(&n.to_json()).unwrap_or_default()),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
