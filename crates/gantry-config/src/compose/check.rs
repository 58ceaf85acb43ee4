//! The checker every keyword parser reports into: typed accessors that
//! record a [`Diagnostic`] (with the span of the offending node and what was
//! expected) instead of stopping, so one run reports every error.

use crate::diag::Diagnostic;
use crate::node::{Map, Node, Value};
use crate::source::Span;
use std::fmt;

/// A keyword path such as `cache:key:files`, built on the stack while
/// descending and only rendered when an error is reported.
#[derive(Clone, Copy)]
pub(crate) struct P<'a> {
    parent: Option<&'a P<'a>>,
    name: &'a str,
}

impl<'a> P<'a> {
    pub fn root(name: &'a str) -> Self {
        P { parent: None, name }
    }
    pub fn join(&'a self, name: &'a str) -> P<'a> {
        // The unnamed root (a job's own keys) adds nothing to the path.
        if self.parent.is_none() && self.name.is_empty() {
            return P::root(name);
        }
        P {
            parent: Some(self),
            name,
        }
    }
}

impl fmt::Display for P<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}:")?;
        }
        f.write_str(self.name)
    }
}

/// Collects diagnostics for one validation run.
pub(crate) struct Ck {
    pub diags: Vec<Diagnostic>,
    /// Raw fragments (conformance, `validate`) may still hold `!reference`
    /// tags; after the resolver ran, one left over is an error.
    pub allow_refs: bool,
    /// Who owns the keys being checked: "job `build`", "`default`"; empty
    /// for top-level keywords.
    pub owner: String,
}

impl Ck {
    pub fn new(allow_refs: bool) -> Self {
        Ck {
            diags: Vec::new(),
            allow_refs,
            owner: String::new(),
        }
    }

    /// `` `path` in job `x` `` or `` `path` `` at the top level.
    pub fn subject(&self, p: &P) -> String {
        match (
            p.name.is_empty() && p.parent.is_none(),
            self.owner.is_empty(),
        ) {
            (true, true) => "the configuration".into(),
            (true, false) => self.owner.clone(),
            (false, true) => format!("`{p}`"),
            (false, false) => format!("`{p}` in {}", self.owner),
        }
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Records "`p` in owner {problem}", expecting `expected`.
    pub fn error(&mut self, span: Span, p: &P, problem: &str, expected: &str) {
        let msg = format!("{} {problem}", self.subject(p));
        self.diags
            .push(Diagnostic::at(span, msg).expected(expected));
    }

    /// Records a wrong type or value: "`p` in owner must be {expected}, not {found}".
    pub fn bad(&mut self, n: &Node, p: &P, expected: &str) {
        let msg = format!(
            "{} must be {expected}, not {}",
            self.subject(p),
            describe(n)
        );
        self.diags
            .push(Diagnostic::at(n.span, msg).expected(expected));
    }

    /// True when `n` is a `!reference` tag: the caller skips it. Outside raw
    /// fragments that is also an error.
    pub fn is_ref(&mut self, n: &Node, p: &P) -> bool {
        if let Value::Reference(_) = n.value {
            if !self.allow_refs {
                let msg = format!(
                    "{} is a `!reference` tag that was not resolved",
                    self.subject(p)
                );
                self.diags
                    .push(Diagnostic::at(n.span, msg).expected("a resolved value"));
            }
            return true;
        }
        false
    }

    pub fn map<'n>(&mut self, n: &'n Node, p: &P) -> Option<&'n Map> {
        if self.is_ref(n, p) {
            return None;
        }
        match &n.value {
            Value::Map(m) => Some(m),
            _ => {
                self.bad(n, p, "a hash");
                None
            }
        }
    }

    /// Reports every key of `m` not in `allowed`, suggesting the closest one.
    pub fn keys(&mut self, m: &Map, p: &P, allowed: &[&str]) {
        for (k, e) in m.iter() {
            if !allowed.contains(&k) {
                self.unknown_key(e.key_span, k, p, allowed);
            }
        }
    }

    /// [`Ck::keys`] with a fast membership test for long key lists.
    pub fn keys_known(&mut self, m: &Map, p: &P, allowed: &[&str], known: fn(&str) -> bool) {
        for (k, e) in m.iter() {
            if !known(k) {
                self.unknown_key(e.key_span, k, p, allowed);
            }
        }
    }

    pub fn unknown_key(&mut self, span: Span, key: &str, p: &P, allowed: &[&str]) {
        let place = if p.name.is_empty() {
            if self.owner.is_empty() {
                String::new()
            } else {
                format!(" in {}", self.owner)
            }
        } else {
            format!(" in {}", self.subject(p))
        };
        let mut msg = format!("unknown key `{key}`{place}");
        if let Some(s) = closest(key, allowed) {
            msg.push_str(&format!("; did you mean `{s}`?"));
        }
        self.diags
            .push(Diagnostic::at(span, msg).expected(format!("one of: {}", allowed.join(", "))));
    }

    /// Reports a missing required key at the hash's position.
    pub fn require(&mut self, m: &Map, n: &Node, p: &P, key: &str) -> bool {
        if m.contains_key(key) {
            return true;
        }
        self.error(
            n.span,
            p,
            &format!("is missing the required key `{key}`"),
            &format!("the key `{key}:`"),
        );
        false
    }

    pub fn string<'n>(&mut self, n: &'n Node, p: &P) -> Option<&'n str> {
        if self.is_ref(n, p) {
            return None;
        }
        match &n.value {
            Value::Str(s) => Some(s),
            _ => {
                self.bad(n, p, "a string");
                None
            }
        }
    }

    pub fn nonempty_string<'n>(&mut self, n: &'n Node, p: &P) -> Option<&'n str> {
        if self.is_ref(n, p) {
            return None;
        }
        match &n.value {
            Value::Str(s) if !s.is_empty() => Some(s),
            _ => {
                self.bad(n, p, "a non-empty string");
                None
            }
        }
    }

    pub fn bool(&mut self, n: &Node, p: &P) -> Option<bool> {
        if self.is_ref(n, p) {
            return None;
        }
        match n.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.bad(n, p, "a boolean (true or false)");
                None
            }
        }
    }

    pub fn int_in(&mut self, n: &Node, p: &P, lo: i64, hi: i64) -> Option<i64> {
        if self.is_ref(n, p) {
            return None;
        }
        match n.value {
            Value::Int(i) if (lo..=hi).contains(&i) => Some(i),
            _ => {
                self.bad(n, p, &format!("an integer from {lo} to {hi}"));
                None
            }
        }
    }

    /// A string that is one of `allowed`.
    pub fn one_of<'n>(&mut self, n: &'n Node, p: &P, allowed: &[&str]) -> Option<&'n str> {
        if self.is_ref(n, p) {
            return None;
        }
        match &n.value {
            Value::Str(s) if allowed.contains(&s.as_str()) => Some(s),
            _ => {
                self.bad(n, p, &format!("one of: {}", allowed.join(", ")));
                None
            }
        }
    }

    /// A string of at most `max` characters.
    pub fn short_string<'n>(&mut self, n: &'n Node, p: &P, max: usize) -> Option<&'n str> {
        let s = self.string(n, p)?;
        let len = s.chars().count();
        if len > max {
            self.error(
                n.span,
                p,
                &format!("is {len} characters long"),
                &format!("at most {max} characters"),
            );
            return None;
        }
        Some(s)
    }

    /// An array of strings with at least `min` items.
    pub fn strings(&mut self, n: &Node, p: &P, min: usize) -> Option<Vec<String>> {
        if self.is_ref(n, p) {
            return None;
        }
        let expected = if min > 0 {
            "a non-empty array of strings"
        } else {
            "an array of strings"
        };
        let Value::Seq(items) = &n.value else {
            self.bad(n, p, expected);
            return None;
        };
        if items.len() < min {
            self.bad(n, p, expected);
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match &item.value {
                Value::Str(s) => out.push(s.clone()),
                Value::Reference(_) if self.allow_refs => ok = false,
                _ => {
                    self.bad(item, p, "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A string or an array of strings (`string_file_list` in the schema).
    pub fn string_or_strings(&mut self, n: &Node, p: &P, min: usize) -> Option<Vec<String>> {
        if let Value::Str(s) = &n.value {
            return Some(vec![s.clone()]);
        }
        if self.is_ref(n, p) {
            return None;
        }
        if !matches!(n.value, Value::Seq(_)) {
            self.bad(n, p, "a string or an array of strings");
            return None;
        }
        self.strings(n, p, min)
    }

    /// Reports duplicate scalar items of an array (`uniqueItems`).
    pub fn unique(&mut self, items: &[Node], p: &P) {
        let mut seen: Vec<String> = Vec::new();
        for item in items {
            let Some(s) = item.scalar_string() else {
                continue;
            };
            if seen.contains(&s) {
                self.error(
                    item.span,
                    p,
                    &format!("has the duplicate item `{s}`"),
                    "unique items",
                );
            } else {
                seen.push(s);
            }
        }
    }
}

/// A short description of a node for "not ..." in messages.
pub(crate) fn describe(n: &Node) -> String {
    match &n.value {
        Value::Str(s) if s.chars().count() <= 40 => format!("\"{s}\""),
        Value::Int(i) => format!("the integer {i}"),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Null => "an empty value".into(),
        Value::Seq(items) if items.is_empty() => "an empty array".into(),
        Value::Map(m) if m.is_empty() => "an empty hash".into(),
        _ => n.type_name().into(),
    }
}

/// The allowed word nearest to `word`, when it is a plausible typo.
pub(crate) fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).clamp(1, 3);
    allowed
        .iter()
        // The distance is at least the difference in length: skip early.
        .filter(|a| {
            a.len().abs_diff(word.len()) <= 4 * limit && a.chars().count().abs_diff(len) <= limit
        })
        .map(|a| (edit_distance(word, a), *a))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance with transpositions counted as one edit
/// (optimal string alignment), over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    if a.is_ascii() && b.is_ascii() {
        osa(a.as_bytes(), b.as_bytes())
    } else {
        osa(
            &a.chars().collect::<Vec<_>>(),
            &b.chars().collect::<Vec<_>>(),
        )
    }
}

fn osa<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let w = b.len() + 1;
    // Three rows in one buffer: two rows back, the previous one, this one.
    let mut rows = vec![0usize; 3 * w];
    for (j, cell) in rows[w..2 * w].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        let (older, rest) = rows.split_at_mut(w);
        let (prev, cur) = rest.split_at_mut(w);
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(older[j - 2] + 1);
            }
            cur[j] = d;
        }
        rows.rotate_left(w);
    }
    // After the last rotation the newest row is the middle one.
    rows[2 * w - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["script", "stage", "stages", "variables"];
        assert_eq!(closest("scirpt", &keys), Some("script"));
        assert_eq!(closest("varaibles", &keys), Some("variables"));
        assert_eq!(closest("stag", &keys), Some("stage"));
        assert_eq!(closest("zzzzzz", &keys), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("größe", "grösse"), 2);
    }

    #[test]
    fn paths_render_with_colons() {
        let root = P::root("cache");
        let key = root.join("key");
        assert_eq!(key.join("files").to_string(), "cache:key:files");
    }
}
