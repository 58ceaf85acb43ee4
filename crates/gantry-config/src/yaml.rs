//! YAML text to a [`Node`] tree, read the way GitLab reads it.
//!
//! GitLab parses with Psych (YAML 1.1) through `safe_load`, so plain scalars
//! resolve as YAML 1.1 says: `yes`/`no`/`on`/`off` are booleans, `1.10` is
//! the float 1.1, `0755` is octal, `1:30` is sexagesimal. Anchors, aliases
//! and `<<` merge keys are applied here, per file. Psych applies a merge key
//! positionally (`hash.merge!`), so keys written after `<<` override merged
//! ones and merged ones override keys written before it.
//!
//! Limits against hostile input: file size, nesting depth, and the number of
//! nodes aliases may expand to (a "billion laughs" document is rejected
//! before anything is copied). Duplicate keys are an error.

use crate::diag::Diagnostic;
use crate::node::{Map, Node, Value};
use crate::source::{FileId, Span};
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Limits applied while loading one file.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum file size in bytes (GitLab: 1 MB).
    pub max_bytes: usize,
    /// Maximum nesting depth of collections (GitLab: 100).
    pub max_depth: usize,
    /// Maximum number of nodes that aliases may add by expansion.
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 100,
            max_alias_nodes: 1_000_000,
        }
    }
}

/// A file's documents: the optional header (`spec:` then `---`) and the
/// configuration itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub header: Option<Node>,
    pub body: Node,
    /// Duplicate keys: GitLab accepts them, the user should know.
    pub warnings: Vec<Diagnostic>,
}

/// Parses a configuration file. A header document with `spec:` is allowed
/// before the configuration; use [`parse_document`] to see it.
pub fn parse(text: &str, file: FileId, limits: &Limits) -> Result<Node, Vec<Diagnostic>> {
    parse_document(text, file, limits).map(|d| d.body)
}

/// Parses a file into its header (if any) and body.
pub fn parse_document(
    text: &str,
    file: FileId,
    limits: &Limits,
) -> Result<Document, Vec<Diagnostic>> {
    let origin = Span::new(file, 1, 1, 0);
    if text.len() > limits.max_bytes {
        return Err(vec![
            Diagnostic::at(
                origin,
                format!(
                    "the file is {} bytes, over the limit of {} bytes",
                    text.len(),
                    limits.max_bytes
                ),
            )
            .expected("a configuration file of at most 1 MB"),
        ]);
    }
    let (mut docs, warnings) = Builder::new(file, limits).run(text)?;
    match docs.len() {
        0 => Ok(Document {
            header: None,
            body: Node::null(origin),
            warnings,
        }),
        1 => Ok(Document {
            header: None,
            body: docs.remove(0),
            warnings,
        }),
        2 => {
            let body = docs.pop().unwrap_or_else(|| Node::null(origin));
            let header = docs.pop().unwrap_or_else(|| Node::null(origin));
            let is_header = header.as_map().is_some_and(|m| m.contains_key("spec"));
            if !is_header {
                return Err(vec![
                    Diagnostic::at(
                        header.span,
                        "a file with two YAML documents must start with a header document",
                    )
                    .expected("a first document holding only `spec:`"),
                ]);
            }
            Ok(Document {
                header: Some(header),
                body,
                warnings,
            })
        }
        _ => Err(vec![
            Diagnostic::at(docs[2].span, "too many YAML documents in one file")
                .expected("at most a `spec:` header document and the configuration"),
        ]),
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
        tag: Option<String>,
        count: usize,
    },
    Map {
        map: Map,
        span: Span,
        anchor: usize,
        key: Option<(String, Span)>,
        count: usize,
        merged: Option<HashSet<String>>,
    },
}

struct Builder<'l> {
    file: FileId,
    limits: &'l Limits,
    stack: Vec<Frame>,
    /// Anchor id to its node and that node's size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    alias_nodes: usize,
    docs: Vec<Node>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'l> Builder<'l> {
    fn new(file: FileId, limits: &'l Limits) -> Self {
        Builder {
            file,
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            docs: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn span(&self, m: &saphyr_parser::Marker) -> Span {
        Span::new(
            self.file,
            m.line() as u32,
            m.col() as u32 + 1,
            m.index() as u32,
        )
    }

    fn run(mut self, text: &str) -> Result<(Vec<Node>, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut parser = Parser::new_from_str(text);
        loop {
            let (event, marker) = match parser.next_event() {
                None => break,
                Some(Ok((event, span))) => (event, span.start),
                Some(Err(e)) => {
                    let span = self.span(e.marker());
                    self.errors.push(
                        Diagnostic::at(span, format!("invalid YAML: {}", e.info()))
                            .expected("valid YAML syntax"),
                    );
                    return Err(self.errors);
                }
            };
            let span = self.span(&marker);
            match event {
                Event::StreamStart
                | Event::StreamEnd
                | Event::DocumentStart(_)
                | Event::Nothing => {}
                Event::DocumentEnd => {
                    // Anchors do not cross documents.
                    self.anchors.clear();
                }
                Event::Alias(id) => {
                    let Some((node, size)) = self.anchors.get(&id) else {
                        self.errors.push(
                            Diagnostic::at(span, "alias to an unknown anchor")
                                .expected("an anchor defined earlier in this file"),
                        );
                        return Err(self.errors);
                    };
                    self.alias_nodes += size;
                    if self.alias_nodes > self.limits.max_alias_nodes {
                        self.errors.push(
                            Diagnostic::at(span, format!("aliases expand to more than {} nodes", self.limits.max_alias_nodes))
                                .expected("a document whose anchors and aliases do not multiply (\"billion laughs\")"),
                        );
                        return Err(self.errors);
                    }
                    let (mut node, size) = (node.clone(), *size);
                    relocate(&mut node, span);
                    self.push_value(node, size)?;
                }
                Event::Scalar(value, style, anchor, tag) => {
                    let node = match self.scalar(value, style, tag.as_deref(), span) {
                        Ok(n) => n,
                        Err(d) => {
                            self.errors.push(d);
                            Node::null(span)
                        }
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, (node.clone(), 1));
                    }
                    self.push_value(node, 1)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.check_depth(span)?;
                    let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                    self.stack.push(Frame::Seq {
                        items: Vec::new(),
                        span,
                        anchor,
                        tag,
                        count: 1,
                    });
                }
                Event::MappingStart(anchor, tag) => {
                    self.check_depth(span)?;
                    if let Some(t) = tag {
                        let t = format!("{}{}", t.handle, t.suffix);
                        if t != "tag:yaml.org,2002:map" && t != "!!map" {
                            self.errors.push(
                                Diagnostic::at(span, format!("unknown tag `{t}` on a mapping"))
                                    .expected("an untagged mapping"),
                            );
                        }
                    }
                    self.stack.push(Frame::Map {
                        map: Map::new(),
                        span,
                        anchor,
                        key: None,
                        count: 1,
                        merged: None,
                    });
                }
                Event::SequenceEnd => {
                    let Some(Frame::Seq {
                        items,
                        span,
                        anchor,
                        tag,
                        count,
                    }) = self.stack.pop()
                    else {
                        continue;
                    };
                    let node = match tag.as_deref() {
                        None | Some("tag:yaml.org,2002:seq") | Some("!!seq") => {
                            Node::new(Value::Seq(items), span)
                        }
                        Some("!reference") => self.reference(items, span),
                        Some(t) => {
                            self.errors.push(
                                Diagnostic::at(span, format!("unknown tag `{t}`"))
                                    .expected("`!reference [job, key]` or no tag"),
                            );
                            Node::new(Value::Seq(items), span)
                        }
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, (node.clone(), count));
                    }
                    self.push_value(node, count)?;
                }
                Event::MappingEnd => {
                    let Some(Frame::Map {
                        map,
                        span,
                        anchor,
                        count,
                        ..
                    }) = self.stack.pop()
                    else {
                        continue;
                    };
                    let node = Node::new(Value::Map(map), span);
                    if anchor > 0 {
                        self.anchors.insert(anchor, (node.clone(), count));
                    }
                    self.push_value(node, count)?;
                }
            }
        }
        if self.errors.is_empty() {
            Ok((self.docs, self.warnings))
        } else {
            Err(self.errors)
        }
    }

    fn check_depth(&mut self, span: Span) -> Result<(), Vec<Diagnostic>> {
        if self.stack.len() >= self.limits.max_depth {
            self.errors.push(
                Diagnostic::at(
                    span,
                    format!("nesting is deeper than {} levels", self.limits.max_depth),
                )
                .expected("a document nested at most 100 levels deep"),
            );
            return Err(std::mem::take(&mut self.errors));
        }
        Ok(())
    }

    fn reference(&mut self, items: Vec<Node>, span: Span) -> Node {
        let valid = !items.is_empty() && items.iter().all(|i| i.as_str().is_some());
        if !valid {
            self.errors.push(
                Diagnostic::at(span, "invalid `!reference` tag").expected(
                    "a non-empty sequence of strings, like `!reference [.setup, script]`",
                ),
            );
        }
        Node::new(Value::Reference(items), span)
    }

    /// Adds a finished node to the collection being built, or ends a document.
    fn push_value(&mut self, node: Node, size: usize) -> Result<(), Vec<Diagnostic>> {
        let Some(top) = self.stack.last_mut() else {
            self.docs.push(node);
            return Ok(());
        };
        match top {
            Frame::Seq { items, count, .. } => {
                *count += size;
                items.push(node);
            }
            Frame::Map {
                map,
                key,
                count,
                merged,
                ..
            } => {
                *count += size;
                match key.take() {
                    None => {
                        let name = match &node.value {
                            Value::Str(s) => s.clone(),
                            Value::Null => String::new(),
                            Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                                node.scalar_string().unwrap_or_default()
                            }
                            _ => {
                                self.errors.push(
                                    Diagnostic::at(node.span, "a mapping key must be a scalar")
                                        .expected("a plain key like `script`"),
                                );
                                "<invalid key>".to_string()
                            }
                        };
                        *key = Some((name, node.span));
                    }
                    Some((name, _)) if name == "<<" => {
                        merge_into(
                            map,
                            merged.get_or_insert_with(Default::default),
                            node,
                            &mut self.errors,
                        );
                    }
                    Some((name, key_span)) => {
                        // A key that came from a `<<` merge may be overridden;
                        // a key written twice keeps the last value (Psych).
                        let from_merge = merged.as_mut().is_some_and(|m| m.remove(&name));
                        if !from_merge && let Some(first) = map.entry(&name) {
                            self.warnings.push(
                                Diagnostic::at(
                                    key_span,
                                    format!(
                                        "duplicate key `{name}`: this value (line {}, column {}) replaces the one at line {}, column {}",
                                        key_span.line,
                                        key_span.col,
                                        first.key_span.line,
                                        first.key_span.col
                                    ),
                                )
                                .expected("each key once per mapping (GitLab keeps the last value)")
                                .warning(),
                            );
                        }
                        map.insert(name, key_span, node);
                    }
                }
            }
        }
        Ok(())
    }

    fn scalar(
        &self,
        value: Cow<'_, str>,
        style: ScalarStyle,
        tag: Option<&saphyr_parser::Tag>,
        span: Span,
    ) -> Result<Node, Diagnostic> {
        if let Some(tag) = tag {
            let t = format!("{}{}", tag.handle, tag.suffix);
            return match t.as_str() {
                "tag:yaml.org,2002:str" | "!!str" => Ok(Node::str(value.into_owned(), span)),
                "tag:yaml.org,2002:int" | "!!int" => resolve_plain(&value, span)
                    .filter(|n| matches!(n.value, Value::Int(_)))
                    .ok_or_else(|| bad_tag(&t, span)),
                "tag:yaml.org,2002:float" | "!!float" => {
                    match resolve_plain(&value, span).map(|n| n.value) {
                        Some(Value::Float(f)) => Ok(Node::new(Value::Float(f), span)),
                        Some(Value::Int(i)) => Ok(Node::new(Value::Float(i as f64), span)),
                        _ => Err(bad_tag(&t, span)),
                    }
                }
                "tag:yaml.org,2002:bool" | "!!bool" => resolve_plain(&value, span)
                    .filter(|n| matches!(n.value, Value::Bool(_)))
                    .ok_or_else(|| bad_tag(&t, span)),
                "tag:yaml.org,2002:null" | "!!null" => Ok(Node::null(span)),
                "!reference" => Err(Diagnostic::at(span, "invalid `!reference` tag").expected(
                    "a non-empty sequence of strings, like `!reference [.setup, script]`",
                )),
                _ => Err(Diagnostic::at(span, format!("unknown tag `{t}`"))
                    .expected("`!reference [job, key]` or no tag")),
            };
        }
        if style != ScalarStyle::Plain {
            return Ok(Node::str(value.into_owned(), span));
        }
        Ok(resolve_plain(&value, span).unwrap_or_else(|| Node::str(value.into_owned(), span)))
    }
}

fn bad_tag(tag: &str, span: Span) -> Diagnostic {
    Diagnostic::at(span, format!("the value does not fit its tag `{tag}`"))
        .expected("a value of the tagged type")
}

/// Applies a `<<` value (a mapping, or a sequence of mappings where earlier
/// ones win) the way Psych does: merged keys override what came before.
fn merge_into(
    map: &mut Map,
    merged_keys: &mut HashSet<String>,
    value: Node,
    errors: &mut Vec<Diagnostic>,
) {
    match value.value {
        Value::Map(m) => {
            for (k, e) in m.iter() {
                merged_keys.insert(k.to_string());
                map.insert(k.to_string(), e.key_span, e.value.clone());
            }
        }
        Value::Seq(items) => {
            // Psych: `h = {}; val.reverse_each { |v| h.merge! v }; hash.merge! h`.
            let mut merged = Map::new();
            for item in items.into_iter().rev() {
                match item.value {
                    Value::Map(m) => {
                        for (k, e) in m.iter() {
                            merged.insert(k.to_string(), e.key_span, e.value.clone());
                        }
                    }
                    _ => errors.push(
                        Diagnostic::at(item.span, "a merge key `<<` list may only hold mappings")
                            .expected("`<<: [*a, *b]` with mapping anchors"),
                    ),
                }
            }
            for (k, e) in merged.iter() {
                merged_keys.insert(k.to_string());
                map.insert(k.to_string(), e.key_span, e.value.clone());
            }
        }
        _ => errors.push(
            Diagnostic::at(value.span, "a merge key `<<` needs a mapping")
                .expected("`<<: *anchor` naming a mapping"),
        ),
    }
}

/// Points a copied alias at the alias's own position, so errors inside it
/// point at the place it is used. Only the root moves; children keep the
/// anchor's positions, which are where their text is.
fn relocate(node: &mut Node, span: Span) {
    node.span = span;
}

/// YAML 1.1 resolution of a plain scalar, as Psych's `ScalarScanner`.
/// `None` means a string.
fn resolve_plain(s: &str, span: Span) -> Option<Node> {
    let v = match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        _ if is_word(s, &["yes", "true", "on"]) => Value::Bool(true),
        _ if is_word(s, &["no", "false", "off"]) => Value::Bool(false),
        _ => {
            if let Some(i) = parse_int(s) {
                Value::Int(i)
            } else if let Some(f) = parse_float(s) {
                Value::Float(f)
            } else {
                return None;
            }
        }
    };
    Some(Node::new(v, span))
}

fn is_word(s: &str, words: &[&str]) -> bool {
    words.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// Psych's INTEGER forms: decimal with `_` or `,` separators, `0b`, octal
/// `0...`, `0x`, and sexagesimal `1:30`.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let clean = |t: &str| {
        t.chars()
            .filter(|c| *c != '_' && *c != ',')
            .collect::<String>()
    };
    let magnitude: i64 = if let Some(bin) = body.strip_prefix("0b") {
        if bin.is_empty() || !bin.chars().all(|c| matches!(c, '0' | '1' | '_' | ',')) {
            return None;
        }
        i64::from_str_radix(&clean(bin), 2).ok()?
    } else if let Some(hex) = body.strip_prefix("0x") {
        if hex.is_empty()
            || !hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '_' || c == ',')
        {
            return None;
        }
        i64::from_str_radix(&clean(hex), 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        if !body.chars().all(|c| matches!(c, '0'..='7' | '_' | ',')) {
            return None;
        }
        i64::from_str_radix(&clean(body), 8).ok()?
    } else if body.contains(':') {
        // Sexagesimal: [1-9][0-9_]*(:[0-5]?[0-9])+
        let mut parts = body.split(':');
        let first = parts.next()?;
        if first.is_empty()
            || first.starts_with('0')
            || !first.chars().all(|c| c.is_ascii_digit() || c == '_')
        {
            return None;
        }
        let mut total: i64 = clean(first).parse().ok()?;
        for p in parts {
            if p.is_empty() || p.len() > 2 || !p.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: i64 = p.parse().ok()?;
            if n > 59 {
                return None;
            }
            total = total.checked_mul(60)?.checked_add(n)?;
        }
        total
    } else {
        // 0 | [1-9]([0-9]|,[0-9]|_[0-9])*
        let b = body.as_bytes();
        if b == b"0" {
            0
        } else {
            if !b[0].is_ascii_digit() || b[0] == b'0' {
                return None;
            }
            let mut prev_sep = false;
            for &c in &b[1..] {
                match c {
                    b'0'..=b'9' => prev_sep = false,
                    b'_' | b',' if !prev_sep => prev_sep = true,
                    _ => return None,
                }
            }
            if prev_sep {
                return None;
            }
            clean(body).parse().ok()?
        }
    };
    Some(if neg { -magnitude } else { magnitude })
}

/// Psych's FLOAT: `[-+]?([0-9][0-9_,]*)?\.[0-9]*([eE][-+][0-9]+)?`, `.inf`,
/// `.nan`.
fn parse_float(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(sign * f64::INFINITY);
    }
    if !neg && !s.starts_with('+') && matches!(body, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let dot = body.find('.')?;
    let (int_part, rest) = body.split_at(dot);
    let rest = &rest[1..];
    if !int_part.is_empty() {
        let ib = int_part.as_bytes();
        if !ib[0].is_ascii_digit()
            || !ib
                .iter()
                .all(|c| c.is_ascii_digit() || *c == b'_' || *c == b',')
        {
            return None;
        }
    }
    let (frac, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if let Some(e) = exp {
        let eb = e.as_bytes();
        if eb.len() < 2
            || !matches!(eb[0], b'+' | b'-')
            || !eb[1..].iter().all(|c| c.is_ascii_digit())
        {
            return None;
        }
    }
    if int_part.is_empty() && frac.is_empty() {
        return None;
    }
    let text: String = format!(
        "{}.{}{}",
        if int_part.is_empty() { "0" } else { int_part },
        if frac.is_empty() { "0" } else { frac },
        exp.map(|e| format!("e{e}")).unwrap_or_default()
    )
    .chars()
    .filter(|c| *c != '_' && *c != ',')
    .collect();
    text.parse::<f64>().ok().map(|f| sign * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(text, FileId(0), &Limits::default()).expect("parses")
    }

    fn json(text: &str) -> serde_json::Value {
        p(text).to_json()
    }

    fn err(text: &str) -> Vec<Diagnostic> {
        parse(text, FileId(0), &Limits::default()).expect_err("must fail")
    }

    #[test]
    fn yaml_1_1_scalars() {
        let v = json(
            "a: yes\nb: No\nc: on\nd: OFF\ne: y\nf: 1.10\ng: 0755\nh: 0x1f\ni: 1:30\nj: 1_000\nk: ~\nl: '1.10'\nm: .inf\nn: 1e3\no: 1.0e+3\np: 010\nq: 08\nr: 1,000\n",
        );
        assert_eq!(v["a"], true);
        assert_eq!(v["b"], false);
        assert_eq!(v["c"], true);
        assert_eq!(v["d"], false);
        assert_eq!(v["e"], "y");
        assert_eq!(v["f"], 1.1);
        assert_eq!(v["g"], 493);
        assert_eq!(v["h"], 31);
        assert_eq!(v["i"], 90);
        assert_eq!(v["j"], 1000);
        assert_eq!(v["k"], serde_json::Value::Null);
        assert_eq!(v["l"], "1.10");
        assert_eq!(v["n"], "1e3");
        assert_eq!(v["o"], 1000.0);
        assert_eq!(v["p"], 8);
        assert_eq!(v["q"], "08");
        assert_eq!(v["r"], 1000);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v = json(
            ".base: &base\n  image: alpine\n  tags: [a]\njob:\n  <<: *base\n  tags: [b]\n  script: &s [echo hi]\nother:\n  script: *s\n",
        );
        assert_eq!(v["job"]["image"], "alpine");
        assert_eq!(v["job"]["tags"], serde_json::json!(["b"]));
        assert_eq!(v["other"]["script"], serde_json::json!(["echo hi"]));
    }

    #[test]
    fn merge_key_is_positional_like_psych() {
        let v = json("a: &a {x: 1, y: 1}\nb:\n  x: 2\n  <<: *a\n  y: 3\n");
        assert_eq!(v["b"]["x"], 1);
        assert_eq!(v["b"]["y"], 3);
        let v = json("a: &a {x: 1}\nc: &c {x: 2, z: 2}\nb:\n  <<: [*a, *c]\n");
        assert_eq!(v["b"]["x"], 1);
        assert_eq!(v["b"]["z"], 2);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_with_a_warning() {
        let doc = parse_document(
            "job:\n  script: a\n  script: b\n",
            FileId(0),
            &Limits::default(),
        )
        .expect("accepted");
        assert_eq!(doc.body.to_json()["job"]["script"], "b");
        let e = &doc.warnings;
        assert_eq!(e.len(), 1);
        assert!(e[0].is_warning());
        assert!(
            e[0].message.contains("duplicate key `script`")
                && e[0].message.contains("line 2, column 3"),
            "{}",
            e[0].message
        );
        let s = e[0].span.expect("span");
        assert_eq!((s.line, s.col), (3, 3));
    }

    #[test]
    fn reference_tags() {
        let n = p("a:\n  script: !reference [.setup, script]\n");
        let script = n
            .as_map()
            .and_then(|m| m.get("a"))
            .and_then(|a| a.as_map())
            .and_then(|a| a.get("script"))
            .cloned();
        assert!(matches!(script.map(|s| s.value), Some(Value::Reference(v)) if v.len() == 2));
        assert!(!err("a: !reference []\n").is_empty());
        assert!(!err("a: !unknown x\n").is_empty());
    }

    #[test]
    fn billion_laughs_is_rejected_quickly() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            doc.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = n;
        }
        let start = std::time::Instant::now();
        let e = err(&doc);
        assert!(e[0].message.contains("aliases expand"), "{}", e[0].message);
        assert!(start.elapsed().as_secs() < 2);
    }

    #[test]
    fn depth_and_size_limits() {
        let deep = "[".repeat(150) + &"]".repeat(150);
        assert!(err(&deep)[0].message.contains("nesting"));
        let big = format!("a: \"{}\"\n", "x".repeat(1024 * 1024 + 1));
        assert!(err(&big)[0].message.contains("over the limit"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err("job:\n  script: [a, b\n");
        assert!(e[0].message.starts_with("invalid YAML"));
        assert!(e[0].span.is_some());
    }

    #[test]
    fn header_document() {
        let d = parse_document(
            "spec:\n  inputs:\n    x: {}\n---\njob:\n  script: a\n",
            FileId(0),
            &Limits::default(),
        )
        .expect("parses");
        assert!(d.header.is_some());
        assert!(d.body.as_map().is_some_and(|m| m.contains_key("job")));
        assert!(parse("a: 1\n---\nb: 2\n", FileId(0), &Limits::default()).is_err());
    }

    #[test]
    fn empty_document_is_null() {
        assert!(p("").is_null());
        assert!(p("# only a comment\n").is_null());
    }
}
