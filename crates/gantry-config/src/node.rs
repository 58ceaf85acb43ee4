//! The YAML tree every later step works on: values with a [`Span`] on every
//! node. Scalars are already resolved the way GitLab (Psych, YAML 1.1) reads
//! them; anchors, aliases and `<<` merge keys are already applied.

use crate::source::Span;
use indexmap::IndexMap;
use std::hash::BuildHasherDefault;

/// Keys are short and trusted to be few per map; FxHash is several times
/// faster than SipHash here and maps hold no attacker-chosen key sets large
/// enough to matter (documents are capped at 1 MB).
type FastHasher = BuildHasherDefault<rustc_hash::FxHasher>;

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
    /// A `!reference [job, key, ...]` tag, resolved after `extends`.
    Reference(Vec<Node>),
}

/// An ordered mapping from string keys to nodes. Non-string YAML keys
/// (`1:`, `true:`) are stored under their canonical string form, as GitLab's
/// symbolised keys behave.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map {
    entries: IndexMap<String, Entry, FastHasher>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key_span: Span,
    pub value: Node,
}

impl Map {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.get(key).map(|e| &e.value)
    }
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.entries.get_mut(key).map(|e| &mut e.value)
    }
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
    /// Inserts or replaces, keeping the original position of an existing key.
    pub fn insert(&mut self, key: impl Into<String>, key_span: Span, value: Node) -> Option<Node> {
        self.entries
            .insert(key.into(), Entry { key_span, value })
            .map(|e| e.value)
    }
    /// Removes a key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        self.entries.shift_remove(key).map(|e| e.value)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), e))
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Entry)> {
        self.entries.iter_mut().map(|(k, e)| (k.as_str(), e))
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|k| k.as_str())
    }
}

impl Node {
    pub fn new(value: Value, span: Span) -> Self {
        Node { value, span }
    }
    pub fn null(span: Span) -> Self {
        Node {
            value: Value::Null,
            span,
        }
    }
    pub fn str(s: impl Into<String>, span: Span) -> Self {
        Node {
            value: Value::Str(s.into()),
            span,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
    /// A scalar as the string a shell would see: `true`, `3`, `1.5`, text.
    /// `None` for null, collections and references.
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format_float(*f)),
            _ => None,
        }
    }
    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "an array",
            Value::Map(_) => "a hash",
            Value::Reference(_) => "a !reference tag",
        }
    }

    /// Converts to JSON (for `--json`, the model's uninterpreted keywords, and
    /// snapshot tests). References that were never resolved become
    /// `{"!reference": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, e)| (k.to_string(), e.value.to_json()))
                    .collect(),
            ),
            Value::Reference(items) => {
                let mut o = serde_json::Map::new();
                o.insert(
                    "!reference".into(),
                    J::Array(items.iter().map(Node::to_json).collect()),
                );
                J::Object(o)
            }
        }
    }
}

/// Formats a float the way Ruby's `Float#to_s` does for common values
/// (`1.0`, `0.5`, `1.0e+20`), which is what GitLab passes to jobs.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Deep merge as ActiveSupport's `Hash#deep_merge`: hashes merge key by key,
/// recursively; anything else on the right replaces the left.
pub fn deep_merge(left: &mut Node, right: Node) {
    match (&mut left.value, right.value) {
        (Value::Map(l), Value::Map(r)) => {
            for (k, e) in r.entries {
                match l.entries.get_mut(&k) {
                    Some(existing) => deep_merge(&mut existing.value, e.value),
                    None => {
                        l.entries.insert(k, e);
                    }
                }
            }
        }
        (_, v) => {
            left.value = v;
            left.span = right.span;
        }
    }
}
