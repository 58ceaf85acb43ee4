//! `extends:` as GitLab's `Extendable` does it
//! (lib/gitlab/ci/config/extendable/entry.rb).
//!
//! Every top-level hash with an `extends:` key (jobs, hidden jobs, and any
//! other hash) is replaced by `merged = {}; bases.each { merged.deep_merge!(base) };
//! merged.deep_merge!(job)`, each base being extended first. The `extends`
//! key stays in the result. Errors, in GitLab's order of checks: an unknown
//! base, a base that is not a hash, nesting deeper than GitLab allows (a
//! chain of at most 11 levels), a circular chain.
//!
//! Each entry is extended once and memoised with the height of its chain,
//! so a document with thousands of jobs sharing templates stays linear.

use crate::diag::Diagnostic;
use crate::node::{Map, Node, Value, deep_merge};
use crate::source::Span;
use std::collections::HashMap;

/// `Extendable::Entry::MAX_NESTING_LEVELS`: an entry being extended may
/// have at most this many entries above it in the chain.
pub const MAX_NESTING_LEVELS: usize = 10;

/// Applies `extends:` to every top-level entry of `root`.
pub fn apply(mut root: Node) -> Result<Node, Vec<Diagnostic>> {
    let Some(map) = root.as_map() else {
        return Ok(root);
    };
    let keys: Vec<&str> = map
        .iter()
        .filter(|(_, e)| is_extensible(&e.value))
        .map(|(k, _)| k)
        .collect();
    if keys.is_empty() {
        return Ok(root);
    }
    // First the order: every chain checked, bases before the entries
    // extending them. Then the merges, in place, in that order.
    let mut planner = Planner {
        root: map,
        state: HashMap::new(),
        order: Vec::new(),
        errors: Vec::new(),
    };
    let mut stack = Vec::new();
    for key in keys {
        let _ = planner.visit(key, &mut stack, None);
    }
    let Planner { order, errors, .. } = planner;
    if !errors.is_empty() {
        return Err(errors);
    }
    let order: Vec<(String, Vec<String>)> = order
        .into_iter()
        .map(|(key, bases)| {
            (
                key.to_string(),
                bases.into_iter().map(str::to_string).collect(),
            )
        })
        .collect();
    if let Some(map) = root.as_map_mut() {
        for (key, bases) in order {
            let mut merged: Option<Node> = None;
            for base in &bases {
                let Some(base_node) = map.get(base) else {
                    continue;
                };
                match &mut merged {
                    None => merged = Some(base_node.clone()),
                    Some(m) => deep_merge(m, base_node.clone()),
                }
            }
            let Some(slot) = map.get_mut(&key) else {
                continue;
            };
            let job = std::mem::replace(slot, Node::null(slot.span));
            let mut merged = merged.unwrap_or_else(|| Node::new(Value::Map(Map::new()), job.span));
            merged.span = job.span;
            deep_merge(&mut merged, job);
            *slot = merged;
        }
    }
    Ok(root)
}

fn is_extensible(node: &Node) -> bool {
    node.as_map().is_some_and(|m| m.contains_key("extends"))
}

#[derive(Clone, Copy)]
enum State {
    InProgress,
    /// Extended; the number of extensible entries in its longest chain.
    Done(usize),
    /// An error was reported for it or below it.
    Failed,
}

struct Planner<'a> {
    root: &'a Map,
    state: HashMap<&'a str, State>,
    /// Extensible entries with their bases, bases first.
    order: Vec<(&'a str, Vec<&'a str>)>,
    errors: Vec<Diagnostic>,
}

/// Most extensible entries a chain may hold: an entry with
/// `MAX_NESTING_LEVELS` ancestors may still extend one more.
const MAX_CHAIN: usize = MAX_NESTING_LEVELS + 1;

impl<'a> Planner<'a> {
    /// Extends `key` (whose ancestors in the current chain are `stack`);
    /// returns the height of its chain. `via` is the `extends` item that
    /// led here, for cycle errors.
    fn visit(
        &mut self,
        key: &'a str,
        stack: &mut Vec<&'a str>,
        via: Option<Span>,
    ) -> Result<usize, ()> {
        let Some(entry) = self.root.entry(key) else {
            return Err(());
        };
        let node = &entry.value;
        let Some(job) = node.as_map() else {
            return Ok(0);
        };
        let Some(extends) = job.entry("extends") else {
            return Ok(0);
        };
        match self.state.get(key) {
            Some(State::Done(height)) => {
                let height = *height;
                if stack.len() + height > MAX_CHAIN {
                    self.nesting_error(key, stack, extends.value.span);
                    return Err(());
                }
                return Ok(height);
            }
            Some(State::Failed) => return Err(()),
            Some(State::InProgress) => {
                let start = stack.iter().position(|k| *k == key).unwrap_or(0);
                let mut chain: Vec<&str> = stack[start..].to_vec();
                chain.push(key);
                self.errors.push(
                    Diagnostic::at(
                        via.unwrap_or(extends.value.span),
                        format!(
                            "{key}: circular dependency detected in `extends` ({})",
                            chain.join(" → ")
                        ),
                    )
                    .expected("a chain of `extends` that does not come back to itself"),
                );
                return Err(());
            }
            None => {}
        }

        let bases = self.bases(key, &extends.value);
        let Some(bases) = bases else {
            self.state.insert(key, State::Failed);
            return Err(());
        };
        if stack.len() > MAX_NESTING_LEVELS {
            self.nesting_error(key, stack, extends.value.span);
            return Err(());
        }

        self.state.insert(key, State::InProgress);
        stack.push(key);
        let mut height = 0;
        let mut failed = false;
        for (base, span) in &bases {
            match self.visit(base, stack, Some(*span)) {
                Ok(h) => height = height.max(h),
                Err(()) => failed = true,
            }
        }
        stack.pop();
        if failed {
            self.state.insert(key, State::Failed);
            return Err(());
        }

        self.order
            .push((key, bases.iter().map(|(b, _)| *b).collect()));
        self.state.insert(key, State::Done(height + 1));
        Ok(height + 1)
    }

    /// The base names of an `extends:` value, checked to exist and to be
    /// hashes; `None` after reporting errors.
    fn bases(&mut self, key: &str, extends: &'a Node) -> Option<Vec<(&'a str, Span)>> {
        let items: Vec<&'a Node> = match &extends.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![extends],
        };
        let mut bases = Vec::new();
        let mut unknown = Vec::new();
        let mut invalid = Vec::new();
        for item in items {
            let name = match &item.value {
                Value::Str(s) => s.as_str(),
                _ => {
                    self.errors.push(
                        Diagnostic::at(
                            item.span,
                            format!(
                                "{key}: `extends` must name jobs or templates, not {}",
                                item.type_name()
                            ),
                        )
                        .expected("a string or an array of strings"),
                    );
                    return None;
                }
            };
            match self.root.entry(name) {
                None => unknown.push((name, item.span)),
                Some(e) if e.value.as_map().is_none() => invalid.push((name, item.span)),
                Some(_) => bases.push((name, item.span)),
            }
        }
        if !unknown.is_empty() {
            let defined: Vec<&str> = self.root.keys().collect();
            for (name, span) in unknown {
                let mut message = format!("{key}: `extends` target `{name}` is not defined");
                if let Some(similar) = crate::compose::closest_name(name, &defined) {
                    message.push_str(&format!("; did you mean `{similar}`?"));
                }
                self.errors.push(Diagnostic::at(span, message).expected(
                    "the name of a job or hidden job (`.template`) defined in the configuration",
                ));
            }
            return None;
        }
        if !invalid.is_empty() {
            let names: Vec<&str> = invalid.iter().map(|(n, _)| *n).collect();
            self.errors.push(
                Diagnostic::at(
                    invalid[0].1,
                    format!(
                        "{key}: invalid base hashes in `extends` ({})",
                        names.join(", ")
                    ),
                )
                .expected("bases that are hashes of job keywords"),
            );
            return None;
        }
        Some(bases)
    }

    fn nesting_error(&mut self, key: &str, stack: &[&str], span: Span) {
        let mut chain: Vec<&str> = stack.to_vec();
        chain.push(key);
        self.errors.push(
            Diagnostic::at(
                span,
                format!(
                    "{key}: nesting too deep in `extends` ({})",
                    chain.join(" → ")
                ),
            )
            .expected(format!("at most {MAX_CHAIN} levels of `extends`")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    fn parse(text: &str) -> Node {
        crate::yaml::parse(text, FileId(0), &crate::yaml::Limits::default()).expect("valid yaml")
    }

    #[test]
    fn chain_of_eleven_levels_is_allowed_and_twelve_is_not() {
        let mut ok = String::from("j0:\n  script: x\n");
        for i in 1..=11 {
            ok.push_str(&format!("j{i}:\n  extends: j{}\n", i - 1));
        }
        assert!(apply(parse(&ok)).is_ok());
        ok.push_str("j12:\n  extends: j11\n");
        let errors = apply(parse(&ok)).expect_err("too deep");
        assert!(errors[0].message.contains("nesting too deep"), "{errors:?}");
    }
}
