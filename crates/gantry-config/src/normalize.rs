//! Empty values and composed lists, the way GitLab's entries read them,
//! applied to the merged configuration before validation.
//!
//! - A keyword with a null value is "not specified" (GitLab's
//!   `Entry::Factory` makes an `Unspecified` entry for `nil`), so a job's
//!   `image:` with nothing after it takes the default, and `cache:` with an
//!   empty `paths:` is a cache without paths. Null keys are dropped from
//!   jobs, `default:`, `workflow:`, global keywords and every hash below
//!   them, except where null is a value: variables (a null variable is the
//!   empty string) and `parallel:matrix`.
//! - Lists GitLab composes are flattened and their null items dropped:
//!   `needs`, `cache`, `services`, and the script keys. This is what makes a
//!   list built from anchors that are themselves lists (`needs: [*a, *b]`)
//!   or an anchor holding a single empty item work as it does in GitLab.

use crate::node::{Map, Node, Value};

/// Global keywords: everything else at the top level is a job or hidden.
const GLOBAL_KEYS: &[&str] = &[
    "default",
    "include",
    "stages",
    "types",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "spec",
];

/// Keys whose lists are flattened, null items dropped.
const COMPOSED_LISTS: &[&str] = &[
    "needs",
    "cache",
    "services",
    "script",
    "before_script",
    "after_script",
];

/// Normalises the merged configuration in place.
pub fn normalize(root: &mut Node) {
    let Value::Map(m) = &mut root.value else {
        return;
    };
    drop_null_globals(m);
    for (key, e) in m.iter_mut() {
        if key.starts_with('.') || key == "include" || key == "spec" {
            continue;
        }
        if key == "variables" {
            variables(&mut e.value);
        } else if GLOBAL_KEYS.contains(&key) && !matches!(e.value.value, Value::Map(_)) {
            keyword(key, &mut e.value);
        } else {
            hash(&mut e.value);
        }
    }
}

/// Whether [`normalize`] would change anything (so callers holding a
/// borrowed tree only clone it when needed).
pub fn needed(root: &Node) -> bool {
    let Value::Map(m) = &root.value else {
        return false;
    };
    m.iter().any(|(key, e)| {
        if key.starts_with('.') || key == "include" || key == "spec" {
            return false;
        }
        if e.value.is_null() {
            return GLOBAL_KEYS.contains(&key);
        }
        if key == "variables" {
            return has_null_variable(&e.value);
        }
        if GLOBAL_KEYS.contains(&key) && !matches!(e.value.value, Value::Map(_)) {
            return keyword_needed(key, &e.value);
        }
        hash_needed(&e.value)
    })
}

fn drop_null_globals(m: &mut Map) {
    let nulls: Vec<String> = m
        .iter()
        .filter(|(k, e)| e.value.is_null() && GLOBAL_KEYS.contains(k))
        .map(|(k, _)| k.to_string())
        .collect();
    for k in nulls {
        m.remove(&k);
    }
}

/// A hash of keywords (a job, `default:`, a cache, an artifacts block...):
/// null keys dropped, then each value by its key.
fn hash(node: &mut Node) {
    let Value::Map(m) = &mut node.value else {
        return;
    };
    let nulls: Vec<String> = m
        .iter()
        .filter(|(_, e)| e.value.is_null())
        .map(|(k, _)| k.to_string())
        .collect();
    for k in nulls {
        m.remove(&k);
    }
    for (key, e) in m.iter_mut() {
        keyword(key, &mut e.value);
    }
}

fn keyword(key: &str, node: &mut Node) {
    match key {
        "variables" => variables(node),
        // Values, not keywords: nulls there mean something.
        "matrix" | "inputs" => {}
        _ => {
            if COMPOSED_LISTS.contains(&key)
                && let Value::Seq(items) = &mut node.value
                && items
                    .iter()
                    .any(|i| matches!(i.value, Value::Seq(_) | Value::Null))
            {
                if SCRIPT_KEYS.contains(&key) {
                    // Validation flattens scripts itself (and reports
                    // nesting deeper than GitLab's 10 levels).
                    drop_null_items(items);
                } else {
                    let mut flat = Vec::with_capacity(items.len());
                    flatten_into(std::mem::take(items), &mut flat, 0);
                    *items = flat;
                }
            }
            match &mut node.value {
                Value::Map(_) => hash(node),
                Value::Seq(items) => items.iter_mut().for_each(hash),
                _ => {}
            }
        }
    }
}

const SCRIPT_KEYS: &[&str] = &["script", "before_script", "after_script"];

/// Flattens nested lists (10 levels, as GitLab's `flatten` calls go
/// deeper than any real file) and drops null items.
fn flatten_into(items: Vec<Node>, out: &mut Vec<Node>, depth: usize) {
    for item in items {
        match item.value {
            Value::Null => {}
            Value::Seq(inner) if depth < 10 => flatten_into(inner, out, depth + 1),
            _ => out.push(item),
        }
    }
}

/// Drops null items at every level of a nested list.
fn drop_null_items(items: &mut Vec<Node>) {
    items.retain(|i| !i.is_null());
    for item in items {
        if let Value::Seq(inner) = &mut item.value {
            drop_null_items(inner);
        }
    }
}

/// A null variable is the empty string.
fn variables(node: &mut Node) {
    if let Value::Map(m) = &mut node.value {
        for (_, e) in m.iter_mut() {
            if e.value.is_null() {
                e.value = Node::str("", e.value.span);
            }
        }
    }
}

fn has_null_variable(node: &Node) -> bool {
    node.as_map()
        .is_some_and(|m| m.iter().any(|(_, e)| e.value.is_null()))
}

fn keyword_needed(key: &str, node: &Node) -> bool {
    match key {
        "variables" => has_null_variable(node),
        "matrix" | "inputs" => false,
        _ => {
            if COMPOSED_LISTS.contains(&key)
                && let Value::Seq(items) = &node.value
                && items
                    .iter()
                    .any(|i| matches!(i.value, Value::Seq(_) | Value::Null))
            {
                return true;
            }
            match &node.value {
                Value::Map(_) => hash_needed(node),
                Value::Seq(items) => items.iter().any(hash_needed),
                _ => false,
            }
        }
    }
}

fn hash_needed(node: &Node) -> bool {
    node.as_map().is_some_and(|m| {
        m.iter()
            .any(|(k, e)| e.value.is_null() || keyword_needed(k, &e.value))
    })
}
