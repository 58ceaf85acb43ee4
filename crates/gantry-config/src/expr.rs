//! GitLab CI expressions: `rules:if`, `only/except:variables`,
//! `workflow:rules:if`.
//!
//! A faithful port of `lib/gitlab/ci/pipeline/expression/` (lexer, shunting-yard
//! parser, lexemes) and of `Gitlab::UntrustedRegexp` (RE2) for `/patterns/`:
//!
//! * Lexemes, tried in this order at each position (StringScanner-style):
//!   `(`, `)`, `$[[ inputs.NAME ]]`, `$NAME` (`\$\w+`, ASCII), `"…"` / `'…'`
//!   (no escapes, no newline), `/pattern/flags` (`^/([^/]|\\/)+[^\\]/[ismU]*`,
//!   so a one-character body such as `/a/` is not a pattern), `null`,
//!   `true`/`false`, `==`, `=~`, `!=`, `!~`, `&&`, `||`. GitLab stops after 100
//!   loop turns, so 100 tokens or more is an error.
//! * Precedence: the four comparisons (10) bind tighter than `&&` (11), which
//!   binds tighter than `||` (12); all are left-associative. The RPN builder is
//!   GitLab's, quirks included (`$A $B ==` is `$A == $B`).
//! * Values are Ruby values: an undefined variable and `null` are `nil`; `&&` and
//!   `||` return an operand with Ruby truthiness (only `nil`/`false` are falsy, so
//!   `"" && "x"` is `"x"`); the statement is true when the result is `present?`
//!   (not `nil`, `false`, or a blank string).
//! * `=~`/`!~`: a right side that is `nil`/`false` gives false/true. A string on the
//!   right (from a variable or a literal) is turned into a pattern when it looks like
//!   `/…/flags` and compiles; otherwise GitLab calls `String#scan`, i.e. the result
//!   is whether the *right* string contains the left one. `nil` on the left is `""`.
//! * Any lexer or parser error makes the statement false ([`evaluate`]).
//!
//! RE2 syntax is translated to the `regex` crate (both are linear-time and close
//! cousins); differences such as ASCII-only `\d \w \s \b`, `\Q…\E`, octal escapes,
//! literal `{`, and Rust-only syntax (`\<`, `[a&&b]`, `(?x)`) are handled by
//! [`translate_re2`].

use regex::Regex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

/// A lexer or parser error, with the byte offset where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub offset: usize,
}

impl ExprError {
    fn new(message: impl Into<String>, offset: usize) -> Self {
        ExprError {
            message: message.into(),
            offset,
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.offset)
    }
}

impl std::error::Error for ExprError {}

/// GitLab's `Lexer::MAX_TOKENS`; the lexer errors once it has read this many.
const MAX_TOKENS: usize = 100;

/// A parsed expression: parse once, evaluate many times.
#[derive(Clone, Debug)]
pub struct Expression {
    root: Node,
}

impl Expression {
    /// Lexes and parses `src` as GitLab does.
    pub fn parse(src: &str) -> Result<Expression, ExprError> {
        let tokens = lex(src)?;
        if tokens.is_empty() {
            return Err(ExprError::new("empty expression", 0));
        }
        let root = build_tree(tokens)?;
        Ok(Expression { root })
    }

    /// GitLab `truthful?`: the result is `present?` (undefined variables, `null`,
    /// `false` and blank strings are false).
    ///
    /// `lookup` gives variable values; `$[[ inputs.NAME ]]` is looked up as
    /// `inputs.NAME`.
    pub fn evaluate(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        match eval(&self.root, lookup) {
            Some(value) => value.is_present(),
            // A runtime error (GitLab raises) counts as false.
            None => false,
        }
    }
}

/// Parses and evaluates `src`; any parse error gives false, as in GitLab.
pub fn evaluate(src: &str, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
    match Expression::parse(src) {
        Ok(expr) => expr.evaluate(lookup),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    Matches,
    NotMatches,
    And,
    Or,
}

impl Op {
    /// GitLab's precedence numbers: lower binds tighter.
    fn precedence(self) -> u16 {
        match self {
            Op::Equals | Op::NotEquals | Op::Matches | Op::NotMatches => 10,
            Op::And => 11,
            Op::Or => 12,
        }
    }
}

#[derive(Clone, Debug)]
enum Leaf {
    Variable(String),
    Input(String),
    Str(String),
    Pattern(Pattern),
    Null,
    Bool(bool),
}

#[derive(Clone, Debug)]
enum TokenKind {
    Value(Leaf),
    Operator(Op),
    ParenOpen,
    ParenClose,
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    offset: usize,
}

/// `Lexeme::Input::PATTERN`, anchored at the scan position.
static INPUT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$\[\[[ \t\n\x0B\f\r]*inputs\.([A-Za-z0-9_]+)[ \t\n\x0B\f\r]*\]\]")
        .expect("static regex")
});

/// `Lexeme::Pattern::PATTERN`. Leftmost-first matching in the `regex` crate
/// reports the same match Ruby's backtracking engine does.
static PATTERN_TOKEN_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/(?:[^/]|\\/)+[^\\]/[ismU]*").expect("static regex"));

fn is_ruby_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    for _ in 0..MAX_TOKENS {
        while pos < bytes.len() && is_ruby_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            return Ok(tokens);
        }
        let (kind, len) = scan_token(src, pos)?;
        tokens.push(Token { kind, offset: pos });
        pos += len;
    }
    Err(ExprError::new(
        "too many tokens (GitLab's limit is 100)",
        pos,
    ))
}

/// One lexeme at `pos`, in GitLab's `LEXEMES` order.
fn scan_token(src: &str, pos: usize) -> Result<(TokenKind, usize), ExprError> {
    let rest = &src[pos..];
    let b = rest.as_bytes();
    match b[0] {
        b'(' => return Ok((TokenKind::ParenOpen, 1)),
        b')' => return Ok((TokenKind::ParenClose, 1)),
        _ => {}
    }
    if b[0] == b'$' {
        if let Some(caps) = INPUT_RE.captures(rest) {
            let len = caps.get(0).map_or(0, |m| m.end());
            let name = caps.get(1).map_or("", |m| m.as_str()).to_owned();
            return Ok((TokenKind::Value(Leaf::Input(name)), len));
        }
        let name_len = b[1..].iter().take_while(|&&c| is_word_byte(c)).count();
        if name_len > 0 {
            let name = rest[1..1 + name_len].to_owned();
            return Ok((TokenKind::Value(Leaf::Variable(name)), 1 + name_len));
        }
    }
    if b[0] == b'"' || b[0] == b'\'' {
        // `.*?` stops at the first closing quote and never crosses a newline.
        let quote = b[0];
        if let Some(end) = b[1..].iter().position(|&c| c == quote || c == b'\n')
            && b[1 + end] == quote
        {
            let text = rest[1..1 + end].to_owned();
            return Ok((TokenKind::Value(Leaf::Str(text)), end + 2));
        }
    }
    if b[0] == b'/'
        && let Some(m) = PATTERN_TOKEN_RE.find(rest)
    {
        let text = m.as_str();
        // `Pattern#initialize` unescapes `\/` and fails on an invalid regexp.
        let pattern = cached_pattern(text)
            .ok_or_else(|| ExprError::new("invalid regular expression", pos))?;
        return Ok((TokenKind::Value(Leaf::Pattern(pattern)), text.len()));
    }
    if rest.starts_with("null") {
        return Ok((TokenKind::Value(Leaf::Null), 4));
    }
    for (word, value) in [("true", true), ("false", false)] {
        // `\b(?:true|false)\b`; the scan position counts as a boundary.
        if rest.starts_with(word) && !b.get(word.len()).is_some_and(|&c| is_word_byte(c)) {
            return Ok((TokenKind::Value(Leaf::Bool(value)), word.len()));
        }
    }
    for (text, op) in [
        ("==", Op::Equals),
        ("=~", Op::Matches),
        ("!=", Op::NotEquals),
        ("!~", Op::NotMatches),
        ("&&", Op::And),
        ("||", Op::Or),
    ] {
        if rest.starts_with(text) {
            return Ok((TokenKind::Operator(op), 2));
        }
    }
    Err(ExprError::new("unknown lexeme found", pos))
}

// ---------------------------------------------------------------------------
// Parser (GitLab's shunting-yard, then the RPN tree builder)

#[derive(Clone, Debug)]
enum Node {
    Leaf(Leaf),
    Binary(Op, Box<Node>, Box<Node>),
}

enum StackOp {
    Op(Op),
    ParenOpen,
}

impl StackOp {
    fn precedence(&self) -> u16 {
        match self {
            StackOp::Op(op) => op.precedence(),
            StackOp::ParenOpen => 901,
        }
    }
}

fn build_tree(tokens: Vec<Token>) -> Result<Node, ExprError> {
    // Output items: a leaf, an operator, or a stray `(` (an error when built).
    enum Rpn {
        Leaf(Leaf),
        Op(Op),
        ParenOpen,
    }
    let mut output: Vec<(Rpn, usize)> = Vec::new();
    let mut operators: Vec<(StackOp, usize)> = Vec::new();
    for token in tokens {
        match token.kind {
            TokenKind::Value(leaf) => output.push((Rpn::Leaf(leaf), token.offset)),
            TokenKind::Operator(op) => {
                // `consume?`: pop while our precedence number >= the top's.
                while let Some((top, _)) = operators.last()
                    && op.precedence() >= top.precedence()
                {
                    if let Some((StackOp::Op(top), at)) = operators.pop() {
                        output.push((Rpn::Op(top), at));
                    }
                }
                operators.push((StackOp::Op(op), token.offset));
            }
            TokenKind::ParenOpen => operators.push((StackOp::ParenOpen, token.offset)),
            TokenKind::ParenClose => {
                // ParenthesisClose has precedence 900: pops every operator.
                while let Some((StackOp::Op(_), _)) = operators.last() {
                    if let Some((StackOp::Op(top), at)) = operators.pop() {
                        output.push((Rpn::Op(top), at));
                    }
                }
                if operators.pop().is_none() {
                    return Err(ExprError::new("unmatched parenthesis", token.offset));
                }
            }
        }
    }
    while let Some((op, at)) = operators.pop() {
        output.push((
            match op {
                StackOp::Op(op) => Rpn::Op(op),
                StackOp::ParenOpen => Rpn::ParenOpen,
            },
            at,
        ));
    }

    let mut results: Vec<Node> = Vec::new();
    for (item, at) in output {
        match item {
            Rpn::Leaf(leaf) => results.push(Node::Leaf(leaf)),
            Rpn::Op(op) => {
                let right = results.pop();
                let left = results.pop();
                match (left, right) {
                    (Some(left), Some(right)) => {
                        results.push(Node::Binary(op, Box::new(left), Box::new(right)))
                    }
                    (_, None) | (None, _) => {
                        return Err(ExprError::new("operator is missing an operand", at));
                    }
                }
            }
            Rpn::ParenOpen => return Err(ExprError::new("unmatched parenthesis", at)),
        }
    }
    match results.len() {
        1 => results
            .pop()
            .ok_or_else(|| ExprError::new("empty parse tree", 0)),
        0 => Err(ExprError::new("empty parse tree", 0)),
        _ => Err(ExprError::new(
            "unreachable nodes in parse tree (missing operator?)",
            0,
        )),
    }
}

// ---------------------------------------------------------------------------
// Evaluation

/// A Ruby value as GitLab's lexemes return it.
enum Value<'a> {
    Nil,
    Bool(bool),
    Str(Cow<'a, str>),
    Pattern(&'a Pattern),
}

impl<'a> Value<'a> {
    /// Ruby truthiness: only `nil` and `false` are falsy.
    fn is_truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// ActiveSupport `present?`.
    fn is_present(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Str(s) => !s.chars().all(char::is_whitespace),
            Value::Pattern(_) => true,
        }
    }

    /// `to_s` as used on the left of `=~`.
    fn into_text(self) -> Cow<'a, str> {
        match self {
            Value::Nil => Cow::Borrowed(""),
            Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Value::Str(s) => s,
            Value::Pattern(p) => Cow::Borrowed(&p.source),
        }
    }
}

/// Ruby `==` between lexeme values.
fn ruby_equals(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Str(a), Value::Str(b)) => a == b,
        // UntrustedRegexp#== compares sources.
        (Value::Pattern(a), Value::Pattern(b)) => a.source == b.source,
        _ => false,
    }
}

/// `None` is a GitLab runtime error (the statement is then false).
fn eval<'a>(node: &'a Node, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Value<'a>> {
    match node {
        Node::Leaf(leaf) => Some(match leaf {
            Leaf::Variable(name) => lookup(name).map_or(Value::Nil, |v| Value::Str(Cow::Owned(v))),
            Leaf::Input(name) => {
                lookup(&format!("inputs.{name}")).map_or(Value::Nil, |v| Value::Str(Cow::Owned(v)))
            }
            Leaf::Str(s) => Value::Str(Cow::Borrowed(s)),
            Leaf::Pattern(p) => Value::Pattern(p),
            Leaf::Null => Value::Nil,
            Leaf::Bool(b) => Value::Bool(*b),
        }),
        Node::Binary(op, left, right) => match op {
            Op::And => {
                let l = eval(left, lookup)?;
                if l.is_truthy() {
                    eval(right, lookup)
                } else {
                    Some(l)
                }
            }
            Op::Or => {
                let l = eval(left, lookup)?;
                if l.is_truthy() {
                    Some(l)
                } else {
                    eval(right, lookup)
                }
            }
            Op::Equals | Op::NotEquals => {
                let l = eval(left, lookup)?;
                let r = eval(right, lookup)?;
                let equal = ruby_equals(&l, &r);
                Some(Value::Bool(if *op == Op::Equals { equal } else { !equal }))
            }
            Op::Matches | Op::NotMatches => {
                let text = eval(left, lookup)?;
                let target = eval(right, lookup)?;
                let matched = match target {
                    // `return false unless regexp` (true for `!~`).
                    Value::Nil | Value::Bool(false) => None,
                    // `true.gsub` raises NoMethodError in GitLab.
                    Value::Bool(true) => return None,
                    Value::Pattern(p) => Some(p.regex.is_match(&text.into_text())),
                    Value::Str(s) => Some(match cached_pattern(&s) {
                        Some(p) => p.regex.is_match(&text.into_text()),
                        // `String#scan(String)`: does the right side contain the left?
                        None => s.contains(text.into_text().as_ref()),
                    }),
                };
                Some(Value::Bool(match (op, matched) {
                    (Op::Matches, m) => m.unwrap_or(false),
                    (_, m) => !m.unwrap_or(false),
                }))
            }
        },
    }
}

// ---------------------------------------------------------------------------
// Patterns (Gitlab::UntrustedRegexp::RubySyntax)

/// A compiled `/pattern/flags`.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// The RE2 source GitLab builds: `(?flags)` + body.
    source: String,
    regex: Regex,
}

/// `RubySyntax::PATTERN`: `^/(?<regexp>.*)/(?<flags>[ismU]*)$` with Ruby's
/// line anchors.
static RUBY_SYNTAX_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^/(.*)/([ismU]*)$").expect("static regex"));

impl Pattern {
    /// `RubySyntax.fabricate!`: `/body/flags` → RE2 regexp, as Rust regex.
    pub fn from_ruby_syntax(text: &str) -> Result<Pattern, String> {
        let caps = RUBY_SYNTAX_RE
            .captures(text)
            .ok_or_else(|| "not of the form /pattern/flags".to_owned())?;
        let body = caps.get(1).map_or("", |m| m.as_str());
        let flags = caps.get(2).map_or("", |m| m.as_str());
        Pattern::new(body, flags)
    }

    /// RE2 `body` with `flags` (any of `i m s U`).
    pub fn new(body: &str, flags: &str) -> Result<Pattern, String> {
        let mut unique = String::new();
        for f in flags.chars() {
            if !unique.contains(f) {
                unique.push(f);
            }
        }
        let source = if unique.is_empty() {
            body.to_owned()
        } else {
            format!("(?{unique}){body}")
        };
        let translated = translate_re2(&source)?;
        let regex = Regex::new(&translated).map_err(|e| e.to_string())?;
        Ok(Pattern { source, regex })
    }

    /// Unanchored search, as `UntrustedRegexp#scan(...).present?`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// `Pattern.build` (`\/` unescaped, then `RubySyntax`), compiled once per
/// distinct string: pattern tokens and patterns held in variables.
fn cached_pattern(text: &str) -> Option<Pattern> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Pattern>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    // Cheap pre-check: most values are plain strings.
    if !text.contains('/') {
        return None;
    }
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(hit) = cache.get(text) {
        return hit.clone();
    }
    // `Pattern.build_and_evaluate`: `\/` unescaped, invalid → use the string.
    let compiled = Pattern::from_ruby_syntax(&text.replace("\\/", "/")).ok();
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(text.to_owned(), compiled.clone());
    compiled
}

// ---------------------------------------------------------------------------
// RE2 → regex crate

/// Translates RE2 syntax (as `Gitlab::UntrustedRegexp` accepts it) into an
/// equivalent `regex` crate pattern, or reports why RE2 would reject it.
pub fn translate_re2(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    // What came just before, for RE2's repetition rules.
    #[derive(Clone, Copy, PartialEq)]
    enum Last {
        Other,
        // A repetition operator: another one right after is an error (`a**`).
        Repeat,
        // A repetition, then only `(?flags)` groups: a further repetition
        // applies to the repeated atom (`a*(?i)+` is `(?:a*)+`).
        RepeatThenFlags,
    }
    let mut last = Last::Other;
    // Where the latest atom (with its repetitions) starts in `out`.
    let mut atom_start: Option<usize> = None;
    let mut open_groups: Vec<usize> = Vec::new();
    // A flags-only group `(?i)` is not an atom in RE2: `a(?i)*` repeats `a`.
    // The `regex` crate rejects that, so such groups are held back and emitted
    // after any repetition that follows them.
    let mut pending_flags = String::new();
    while i < chars.len() {
        let c = chars[i];
        let repeat = match c {
            '*' | '+' | '?' => Some(1),
            '{' => parse_repeat(&chars, i).map(|(lo, hi, used)| {
                if lo > 1000 || hi.is_some_and(|h| h > 1000 || h < lo) {
                    0
                } else {
                    used
                }
            }),
            _ => None,
        };
        if let Some(used) = repeat {
            if used == 0 {
                return Err("invalid repetition size".into());
            }
            match last {
                Last::Repeat => return Err(format!("bad repetition operator: {c}")),
                Last::RepeatThenFlags => {
                    if let Some(start) = atom_start {
                        out.insert_str(start, "(?:");
                        out.push(')');
                    }
                }
                Last::Other => {}
            }
            out.extend(&chars[i..i + used]);
            i += used;
            i += lazy_suffix(&chars, i, &mut out);
            out.push_str(&pending_flags);
            pending_flags.clear();
            last = Last::Repeat;
            continue;
        }
        if c == '(' && chars.get(i + 1) == Some(&'?') {
            let (group, used, flags_only) = translate_group_open(&chars, i)?;
            i += used;
            if flags_only {
                pending_flags.push_str(&group);
                if last == Last::Repeat {
                    last = Last::RepeatThenFlags;
                }
            } else {
                out.push_str(&pending_flags);
                pending_flags.clear();
                open_groups.push(out.len());
                out.push_str(&group);
                last = Last::Other;
                atom_start = None;
            }
            continue;
        }
        out.push_str(&pending_flags);
        pending_flags.clear();
        last = Last::Other;
        let here = out.len();
        match c {
            '\\' => {
                let (piece, used) = translate_escape(&chars, i, false)?;
                out.push_str(&piece);
                i += used;
                atom_start = Some(here);
            }
            '[' => {
                let (piece, used) = translate_class(&chars, i)?;
                out.push_str(&piece);
                i += used;
                atom_start = Some(here);
            }
            // Not a valid repetition: RE2 reads the brace literally.
            '{' | '}' => {
                out.push('\\');
                out.push(c);
                i += 1;
                atom_start = Some(here);
            }
            '(' => {
                open_groups.push(here);
                out.push(c);
                i += 1;
                atom_start = None;
            }
            ')' => {
                out.push(c);
                i += 1;
                atom_start = open_groups.pop();
            }
            '|' => {
                out.push(c);
                i += 1;
                atom_start = None;
            }
            _ => {
                out.push(c);
                i += 1;
                atom_start = Some(here);
            }
        }
    }
    out.push_str(&pending_flags);
    Ok(out)
}

/// A `?` right after a repetition makes it lazy; returns chars consumed.
fn lazy_suffix(chars: &[char], i: usize, out: &mut String) -> usize {
    if chars.get(i) == Some(&'?') {
        out.push('?');
        1
    } else {
        0
    }
}

/// `{n}`, `{n,}`, `{n,m}` at `i`: (lo, hi, chars used).
fn parse_repeat(chars: &[char], i: usize) -> Option<(u32, Option<u32>, usize)> {
    let mut j = i + 1;
    let digits = |j: &mut usize| -> Option<u32> {
        let start = *j;
        while *j < chars.len() && chars[*j].is_ascii_digit() {
            *j += 1;
        }
        if *j == start {
            return None;
        }
        chars[start..*j]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
            .or(Some(u32::MAX))
    };
    let lo = digits(&mut j)?;
    let hi = if chars.get(j) == Some(&',') {
        j += 1;
        if chars.get(j) == Some(&'}') {
            None
        } else {
            Some(digits(&mut j)?)
        }
    } else {
        Some(lo)
    };
    if chars.get(j) != Some(&'}') {
        return None;
    }
    Some((lo, hi, j + 1 - i))
}

/// `(?…` at `i`: flag groups and named groups; RE2 has no look-around.
/// Returns (regex text, chars used, whether it is a flags-only `(?flags)`).
fn translate_group_open(chars: &[char], i: usize) -> Result<(String, usize, bool), String> {
    let mut out = String::new();
    let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
    if rest == "(?P" || rest == "(?<" {
        let name_start = if rest == "(?P" {
            if chars.get(i + 3) != Some(&'<') {
                return Err("invalid or unsupported Perl syntax: (?P".into());
            }
            i + 4
        } else {
            i + 3
        };
        let mut j = name_start;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        if j == name_start || chars.get(j) != Some(&'>') {
            return Err("invalid named capture group".into());
        }
        out.push_str("(?P<");
        out.extend(&chars[name_start..j]);
        out.push('>');
        return Ok((out, j + 1 - i, false));
    }
    // Flags: (?flags) or (?flags:re), flags from `imsU` with one optional `-`.
    let mut j = i + 2;
    let mut seen_flag = false;
    let mut negated = false;
    while j < chars.len() {
        match chars[j] {
            'i' | 'm' | 's' | 'U' => seen_flag = true,
            '-' if !negated => {
                negated = true;
                seen_flag = false;
            }
            ':' | ')' => {
                if !seen_flag && (negated || chars[j] == ')') {
                    return Err("invalid or unsupported Perl syntax: missing flags".into());
                }
                out.extend(&chars[i..=j]);
                return Ok((out, j + 1 - i, chars[j] == ')'));
            }
            other => return Err(format!("invalid or unsupported Perl syntax: (?{other}")),
        }
        j += 1;
    }
    Err("missing closing )".into())
}

/// Sets RE2's Perl classes stand for (ASCII only, unlike the `regex` crate).
fn perl_class(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        's' => "[\\t\\n\\f\\r ]",
        'S' => "[^\\t\\n\\f\\r ]",
        _ => return None,
    })
}

/// A literal char, escaped so the `regex` crate reads it literally anywhere.
fn literal(c: char) -> String {
    if c.is_alphanumeric() || c == '_' || c == ' ' {
        c.to_string()
    } else {
        format!("\\x{{{:X}}}", c as u32)
    }
}

/// An escape at `chars[i] == '\\'`. Returns (regex text, chars used).
/// In a class only single characters and class escapes are allowed.
fn translate_escape(chars: &[char], i: usize, in_class: bool) -> Result<(String, usize), String> {
    let c = *chars.get(i + 1).ok_or("trailing \\")?;
    if let Some(set) = perl_class(c) {
        return Ok((set.to_owned(), 2));
    }
    match c {
        'p' | 'P' => {
            // \pL or \p{Name} or \p{^Name}.
            let (mut name, used) = match chars.get(i + 2) {
                Some('{') => {
                    let close = chars[i + 3..]
                        .iter()
                        .position(|&ch| ch == '}')
                        .ok_or("invalid character class range: missing }")?;
                    (
                        chars[i + 3..i + 3 + close].iter().collect::<String>(),
                        close + 4,
                    )
                }
                Some(&letter) => (letter.to_string(), 3),
                None => return Err("invalid escape: \\p".into()),
            };
            let mut negated = c == 'P';
            if let Some(stripped) = name.strip_prefix('^') {
                name = stripped.to_owned();
                negated = !negated;
            }
            Ok((
                format!("\\{}{{{name}}}", if negated { 'P' } else { 'p' }),
                used,
            ))
        }
        'Q' if !in_class => {
            let mut j = i + 2;
            let mut text = String::new();
            while j < chars.len() {
                if chars[j] == '\\' && chars.get(j + 1) == Some(&'E') {
                    j += 2;
                    return Ok((text, j - i));
                }
                // RE2 lets `\\` inside \Q…\E stand for one backslash.
                if chars[j] == '\\' && chars.get(j + 1) == Some(&'\\') {
                    text.push_str(&literal('\\'));
                    j += 2;
                    continue;
                }
                text.push_str(&literal(chars[j]));
                j += 1;
            }
            Ok((text, j - i))
        }
        'A' | 'z' if !in_class => Ok((format!("\\{c}"), 2)),
        // Any byte; on valid UTF-8 text the nearest is any character.
        'C' if !in_class => Ok(("(?s:.)".to_owned(), 2)),
        'b' | 'B' if !in_class => Ok((format!("(?-u:\\{c})"), 2)),
        _ => {
            let (ch, used) = escaped_char(chars, i)?;
            Ok((literal(ch), used))
        }
    }
}

/// A single-character escape (`\n`, `\x41`, `\101`, `\.` …) at `chars[i] == '\\'`.
fn escaped_char(chars: &[char], i: usize) -> Result<(char, usize), String> {
    let c = *chars.get(i + 1).ok_or("trailing \\")?;
    let simple = match c {
        'a' => Some('\x07'),
        'f' => Some('\x0C'),
        't' => Some('\t'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        'v' => Some('\x0B'),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, 2));
    }
    match c {
        '0'..='7' => {
            // RE2: `\1`-`\7` alone would be a backreference, which it rejects.
            let is_octal = |k: usize| chars.get(k).is_some_and(|d| ('0'..='7').contains(d));
            if c != '0' && !is_octal(i + 2) {
                return Err(format!("invalid escape sequence: \\{c}"));
            }
            let mut value = 0u32;
            let mut j = i + 1;
            while j < i + 4 && is_octal(j) {
                value = value * 8 + chars[j].to_digit(8).unwrap_or(0);
                j += 1;
            }
            let ch = char::from_u32(value).ok_or("invalid escape sequence")?;
            Ok((ch, j - i))
        }
        'x' => {
            let (hex, used) = if chars.get(i + 2) == Some(&'{') {
                let close = chars[i + 3..]
                    .iter()
                    .position(|&ch| ch == '}')
                    .ok_or("invalid escape sequence: \\x{")?;
                (
                    chars[i + 3..i + 3 + close].iter().collect::<String>(),
                    close + 4,
                )
            } else {
                let two: String = chars[(i + 2).min(chars.len())..(i + 4).min(chars.len())]
                    .iter()
                    .collect();
                (two, 4)
            };
            if hex.is_empty() || !hex.chars().all(|h| h.is_ascii_hexdigit()) || hex.len() > 8 {
                return Err("invalid escape sequence: \\x".into());
            }
            let value = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
            let ch = char::from_u32(value).ok_or("invalid escape sequence: \\x")?;
            Ok((ch, used))
        }
        // Escaped punctuation (and `_`, space) is itself; RE2 rejects other letters.
        _ if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c, 2)),
        _ => Err(format!("invalid escape sequence: \\{c}")),
    }
}

/// A bracket class at `chars[i] == '['`, rebuilt with every literal escaped so
/// the `regex` crate's nested classes and `&&`/`--`/`~~` never apply.
fn translate_class(chars: &[char], i: usize) -> Result<(String, usize), String> {
    let mut out = String::from("[");
    let mut j = i + 1;
    if chars.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    let mut first = true;
    loop {
        let c = *chars.get(j).ok_or("missing closing ]")?;
        if c == ']' && !first {
            out.push(']');
            return Ok((out, j + 1 - i));
        }
        first = false;
        // POSIX class `[:alpha:]` / `[:^alpha:]`.
        if c == '['
            && chars.get(j + 1) == Some(&':')
            && let Some(len) = posix_class_len(chars, j)
        {
            out.extend(&chars[j..j + len]);
            j += len;
            continue;
        }
        // One item: a class escape, or a char that may start a range.
        let lo = if c == '\\' {
            let next = *chars.get(j + 1).ok_or("trailing \\")?;
            if perl_class(next).is_some() || next == 'p' || next == 'P' {
                let (piece, used) = translate_escape(chars, j, true)?;
                out.push_str(&piece);
                j += used;
                continue;
            }
            let (ch, used) = escaped_char(chars, j)?;
            j += used;
            ch
        } else {
            j += 1;
            c
        };
        if chars.get(j) == Some(&'-') && chars.get(j + 1).is_some_and(|&n| n != ']') {
            let hi_start = j + 1;
            let hi = if chars[hi_start] == '\\' {
                let (ch, used) = escaped_char(chars, hi_start)
                    .map_err(|_| "invalid character class range".to_owned())?;
                j = hi_start + used;
                ch
            } else {
                j = hi_start + 1;
                chars[hi_start]
            };
            if hi < lo {
                return Err(format!("invalid character class range: {lo}-{hi}"));
            }
            out.push_str(&literal(lo));
            out.push('-');
            out.push_str(&literal(hi));
        } else {
            out.push_str(&literal(lo));
        }
    }
}

/// Length of `[:name:]` / `[:^name:]` at `j`, if that is what is there.
fn posix_class_len(chars: &[char], j: usize) -> Option<usize> {
    let mut k = j + 2;
    if chars.get(k) == Some(&'^') {
        k += 1;
    }
    let name_start = k;
    while k < chars.len() && chars[k].is_ascii_lowercase() {
        k += 1;
    }
    if k > name_start && chars.get(k) == Some(&':') && chars.get(k + 1) == Some(&']') {
        Some(k + 2 - j)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> impl Fn(&str) -> Option<String> {
        |name: &str| {
            let v = match name {
                "PRESENT_VARIABLE" => "my variable",
                "PATH_VARIABLE" => "a/path/variable/value",
                "FULL_PATH_VARIABLE" => "/a/full/path/variable/value",
                "EMPTY_VARIABLE" => "",
                "BLANK" => "  \t",
                "teststring" => "abcde",
                "pattern1" => "/^ab.*/",
                "pattern2" => "/^at.*/",
                "ipattern" => "/ABC/i",
                "escaped_pattern" => "/a\\/b/",
                "AB" => "a/b",
                "BRANCH" => "main",
                "SOURCE" => "push",
                "TRUE" => "true",
                "inputs.env" => "production",
                _ => return None,
            };
            Some(v.to_owned())
        }
    }

    fn eval_str(src: &str) -> bool {
        evaluate(src, &vars())
    }

    /// GitLab's statement_spec `#evaluate` table, reduced to `truthful?`.
    #[test]
    fn gitlab_statement_spec_table() {
        let cases: &[(&str, bool)] = &[
            (r#"$PRESENT_VARIABLE == "my variable""#, true),
            (r#""my variable" == $PRESENT_VARIABLE"#, true),
            ("$PRESENT_VARIABLE == null", false),
            ("$EMPTY_VARIABLE == null", false),
            (r#""" == $EMPTY_VARIABLE"#, true),
            ("$EMPTY_VARIABLE", false),
            ("$UNDEFINED_VARIABLE == null", true),
            ("null == $UNDEFINED_VARIABLE", true),
            ("$PRESENT_VARIABLE", true),
            ("$UNDEFINED_VARIABLE", false),
            ("$PRESENT_VARIABLE =~ /var.*e$/", true),
            (r"$PRESENT_VARIABLE =~ /va\r.*e$/", false),
            (r"$PRESENT_VARIABLE =~ /va\/r.*e$/", false),
            ("$PRESENT_VARIABLE =~ /^var.*/", false),
            ("$EMPTY_VARIABLE =~ /var.*/", false),
            ("$UNDEFINED_VARIABLE =~ /var.*/", false),
            ("$PRESENT_VARIABLE =~ /VAR.*/i", true),
            (r"$PATH_VARIABLE =~ /path\/variable/", true),
            (
                r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/",
                true,
            ),
            (r#"$PRESENT_VARIABLE != "my variable""#, false),
            (r#""my variable" != $PRESENT_VARIABLE"#, false),
            ("$PRESENT_VARIABLE != null", true),
            ("$EMPTY_VARIABLE != null", true),
            (r#""" != $EMPTY_VARIABLE"#, false),
            ("$UNDEFINED_VARIABLE != null", false),
            ("null != $UNDEFINED_VARIABLE", false),
            ("$PRESENT_VARIABLE !~ /var.*e$/", false),
            ("$PRESENT_VARIABLE !~ /^var.*/", true),
            (r"$PRESENT_VARIABLE !~ /^v\ar.*/", true),
            (r"$PRESENT_VARIABLE !~ /^v\/ar.*/", true),
            ("$EMPTY_VARIABLE !~ /var.*/", true),
            ("$UNDEFINED_VARIABLE !~ /var.*/", true),
            ("$PRESENT_VARIABLE !~ /VAR.*/i", false),
            (r#"$PRESENT_VARIABLE && "string""#, true),
            ("$PRESENT_VARIABLE && $EMPTY_VARIABLE", false),
            ("$PRESENT_VARIABLE && null", false),
            ("$EMPTY_VARIABLE && $PRESENT_VARIABLE", true),
            (r#"$EMPTY_VARIABLE && "string""#, true),
            ("$EMPTY_VARIABLE && $EMPTY_VARIABLE", false),
            (r#""string" && null"#, false),
            ("null && null", false),
            (
                "$PRESENT_VARIABLE =~ /my var/ && $EMPTY_VARIABLE =~ /nope/",
                false,
            ),
            (r#"$EMPTY_VARIABLE == "" && $PRESENT_VARIABLE"#, true),
            (
                r#"$EMPTY_VARIABLE == "" && $PRESENT_VARIABLE != "nope""#,
                true,
            ),
            ("$PRESENT_VARIABLE && $UNDEFINED_VARIABLE", false),
            ("$UNDEFINED_VARIABLE && $EMPTY_VARIABLE", false),
            (
                "$PRESENT_VARIABLE =~ /my var/ || $EMPTY_VARIABLE =~ /nope/",
                true,
            ),
            (r#"$EMPTY_VARIABLE == "" || $PRESENT_VARIABLE"#, true),
            (
                r#"$PRESENT_VARIABLE && null || $EMPTY_VARIABLE == """#,
                true,
            ),
            ("$UNDEFINED_VARIABLE || $PRESENT_VARIABLE", true),
            ("$UNDEFINED_VARIABLE == null || $PRESENT_VARIABLE", true),
            ("($PRESENT_VARIABLE)", true),
            ("(($PRESENT_VARIABLE))", true),
            (
                r#"(($PRESENT_VARIABLE && null) || $EMPTY_VARIABLE == "")"#,
                true,
            ),
            (
                r#"($PRESENT_VARIABLE) && (null || $EMPTY_VARIABLE == "")"#,
                true,
            ),
            (r#"("string" || "test") == "string""#, true),
            (r#"(null || ("test" == "string"))"#, false),
            (r#"("string" == ("test" && "string"))"#, true),
            (r#"("string" == ("test" || "string"))"#, false),
            (r#"("string" == "test" || "string")"#, true),
            (
                r#"("string" == ("string" || (("1" == "1") && ("2" == "3"))))"#,
                true,
            ),
            ("$INVALID = 1", false),
        ];
        for (src, want) in cases {
            assert_eq!(eval_str(src), *want, "{src}");
        }
    }

    #[test]
    fn full_path_with_escaped_slashes() {
        assert!(eval_str(
            r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/ && $PATH_VARIABLE =~ /path\/variable/"
        ));
        assert!(!eval_str(
            r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/ && $PATH_VARIABLE =~ /path\/variable/"
        ));
        assert!(eval_str(
            r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/ || $PATH_VARIABLE =~ /path\/variable/"
        ));
    }

    /// statement_spec "when variables have patterns".
    #[test]
    fn patterns_held_in_variables() {
        assert!(eval_str(r#"$teststring =~ "abcde""#));
        assert!(eval_str("$teststring =~ $teststring"));
        assert!(eval_str("$teststring =~ $pattern1"));
        assert!(!eval_str("$teststring =~ $pattern2"));
        assert!(eval_str("$teststring !~ $pattern2"));
        assert!(eval_str("$teststring =~ $ipattern"));
        // `\/` in a variable's pattern is unescaped like in a literal pattern.
        assert!(eval_str("$AB =~ $escaped_pattern"));
        // A string on the right is searched for the left (String#scan).
        assert!(eval_str(r#"$teststring =~ "xxabcdexx""#));
        assert!(!eval_str(r#"$teststring =~ "abc""#));
        // nil on the right: no match.
        assert!(!eval_str("$teststring =~ $UNDEFINED"));
        assert!(eval_str("$teststring !~ $UNDEFINED"));
        assert!(!eval_str("$teststring =~ null"));
        // An undefined left side is "": found in every string.
        assert!(eval_str(r#"$UNDEFINED =~ "abc""#));
        assert!(eval_str("$UNDEFINED =~ /^$/"));
    }

    #[test]
    fn precedence_and_associativity() {
        // && binds tighter than ||.
        assert!(eval_str("$PRESENT_VARIABLE || $UNDEFINED && $UNDEFINED"));
        assert!(!eval_str("($PRESENT_VARIABLE || $UNDEFINED) && $UNDEFINED"));
        assert!(eval_str("$UNDEFINED && $UNDEFINED || $PRESENT_VARIABLE"));
        // Comparisons bind tighter than &&.
        assert!(eval_str(r#"$BRANCH == "main" && $SOURCE == "push""#));
        assert!(!eval_str(r#"$BRANCH == "main" && $SOURCE == "web""#));
        assert!(eval_str(
            r#"$BRANCH == "x" || $SOURCE == "push" && $BRANCH == "main" || $SOURCE == "y""#
        ));
        // Left associative: (("main" == "main") == true).
        assert!(eval_str(r#"$BRANCH == "main" == true"#));
        assert!(!eval_str(r#"$BRANCH == "main" == $TRUE"#));
    }

    #[test]
    fn parser_tree_shapes_match_gitlab() {
        fn show(node: &Node) -> String {
            match node {
                Node::Leaf(Leaf::Variable(v)) => format!("${v}"),
                Node::Leaf(Leaf::Str(s)) => format!("{s:?}"),
                Node::Leaf(Leaf::Null) => "null".into(),
                Node::Leaf(other) => format!("{other:?}"),
                Node::Binary(op, l, r) => {
                    let name = match op {
                        Op::Equals => "equals",
                        Op::NotEquals => "not_equals",
                        Op::Matches => "matches",
                        Op::NotMatches => "not_matches",
                        Op::And => "and",
                        Op::Or => "or",
                    };
                    format!("{name}({}, {})", show(l), show(r))
                }
            }
        }
        let cases = [
            (r#"$VAR1 == "123""#, r#"equals($VAR1, "123")"#),
            (
                r#"$VAR1 == "123" == $VAR2"#,
                r#"equals(equals($VAR1, "123"), $VAR2)"#,
            ),
            ("$VAR", "$VAR"),
            ("null", "null"),
            ("$VAR1 || $VAR2 && $VAR3", "or($VAR1, and($VAR2, $VAR3))"),
            ("$VAR1 && $VAR2 || $VAR3", "or(and($VAR1, $VAR2), $VAR3)"),
            (
                "$VAR1 && $VAR2 || $VAR3 && $VAR4",
                "or(and($VAR1, $VAR2), and($VAR3, $VAR4))",
            ),
            (
                "$VAR1 && ($VAR2 || $VAR3) && $VAR4",
                "and(and($VAR1, or($VAR2, $VAR3)), $VAR4)",
            ),
            (
                r#"$VAR1 == "a" || $VAR2 == "b" && $VAR3 == "c" || $VAR4 == "d" && $VAR5 == "e""#,
                r#"or(or(equals($VAR1, "a"), and(equals($VAR2, "b"), equals($VAR3, "c"))), and(equals($VAR4, "d"), equals($VAR5, "e")))"#,
            ),
            (
                r#"(($VAR1 == "a" || $VAR2 == "b") && $VAR3 == "c" || $VAR4 == "d") && $VAR5 == "e""#,
                r#"and(or(and(or(equals($VAR1, "a"), equals($VAR2, "b")), equals($VAR3, "c")), equals($VAR4, "d")), equals($VAR5, "e"))"#,
            ),
            // GitLab's RPN builder accepts postfix operators.
            ("$A $B ==", "equals($A, $B)"),
        ];
        for (src, want) in cases {
            let expr = Expression::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(show(&expr.root), want, "{src}");
        }
    }

    #[test]
    fn syntax_errors() {
        let bad = [
            "",
            "   ",
            r#"$VAR "text""#,
            r#"== "123""#,
            "$VAR ==",
            "$VAR == (",
            r#"$VAR2 == ("aa""#,
            r#"$VAR2 == ("aa"))"#,
            r#"$VAR2 == "aa")"#,
            r#"(($VAR2 == "aa")"#,
            r#"($VAR2 == "aa"))"#,
            "()",
            "$V1 123 $V2",
            "$VAR = 1",
            "$ == 1",
            "$VAR == 'unterminated",
            "$VAR =~ /a/",   // a one-character body is not a pattern token
            "$VAR =~ //",    // empty pattern
            "$VAR =~ /a(/",  // invalid regexp
            "$VAR =~ /ab/x", // unsupported flag
            "$VAR == nullx", // null, then an unknown lexeme
            "$VAR == trueish",
            "$VAR === 'a'",
            "$VAR & $B",
            "$[[ inputs.a-b ]]",
            "\"a\nb\" == $X", // strings do not span lines
        ];
        for src in bad {
            assert!(Expression::parse(src).is_err(), "{src:?} should not parse");
            assert!(!eval_str(src), "{src:?}");
        }
    }

    #[test]
    fn error_offsets_point_at_the_problem() {
        let err = Expression::parse("$A == 'x' && 123").unwrap_err();
        assert_eq!(err.offset, 13);
        assert!(err.to_string().contains("unknown lexeme"), "{err}");
    }

    #[test]
    fn token_limit() {
        // GitLab's lexer loop runs 100 times: 99 tokens pass, 100 fail.
        let ninety_nine = vec!["$A"; 50].join(" || ");
        assert_eq!(lex(&ninety_nine).map(|t| t.len()).ok(), Some(99));
        assert!(Expression::parse(&ninety_nine).is_ok());
        let hundred = format!("({ninety_nine}");
        assert!(Expression::parse(&hundred).is_err());
        let many = vec!["$A"; 60].join(" || ");
        let err = Expression::parse(&many).unwrap_err();
        assert!(err.message.contains("too many tokens"), "{err}");
    }

    #[test]
    fn strings_and_quotes() {
        assert!(eval_str(r#"$BRANCH == 'main'"#));
        // No escapes: the first closing quote ends the string.
        assert!(!eval_str(r#""a\" == "a""#));
        assert!(eval_str(r#"'a\' == "a\""#));
        assert!(eval_str(r#"'a"b' == 'a"b'"#));
        assert!(eval_str(r#""" == """#));
        assert!(!eval_str(r#""""#));
        assert!(eval_str(r#""x""#));
        // Whitespace-only strings are blank, hence not present.
        assert!(!eval_str(r#""   ""#));
        assert!(!eval_str("$BLANK"));
        assert!(eval_str("$BLANK && $BRANCH"));
    }

    #[test]
    fn whitespace_and_compact_forms() {
        assert!(eval_str("\t$BRANCH==\"main\"&&$SOURCE=~/^pu/ "));
        assert!(eval_str("\n( $BRANCH )\r\n"));
    }

    #[test]
    fn booleans_and_inputs() {
        assert!(eval_str("true"));
        assert!(!eval_str("false"));
        assert!(
            !eval_str("$TRUE == true"),
            "a string never equals a boolean"
        );
        assert!(eval_str("true == true"));
        assert!(eval_str(r#"$[[ inputs.env ]] == "production""#));
        assert!(eval_str(r#"$[[inputs.env]] == "production""#));
        assert!(!eval_str(r#"$[[ inputs.other ]] == "production""#));
        assert!(!eval_str("$BRANCH =~ true"), "GitLab raises; false");
        assert!(!eval_str("$BRANCH =~ false"));
        assert!(eval_str("$BRANCH !~ false"));
    }

    #[test]
    fn pattern_token_boundaries() {
        // Greedy body up to an unescaped slash.
        assert!(eval_str("$PRESENT_VARIABLE =~ /my var/ && $BRANCH"));
        // `/a//` lexes as the pattern `a/` (the body's last char may be a slash).
        assert!(eval_str("$AB =~ /a//"));
        // An escaped slash does not end the pattern.
        assert!(eval_str(r"$AB =~ /^a\/b$/"));
        // Flags.
        assert!(eval_str("$BRANCH =~ /MAIN/i"));
        assert!(eval_str("$BRANCH =~ /MA.N/ii"));
        assert!(!eval_str("$BRANCH =~ /MAIN/"));
        assert!(eval_str("$BRANCH =~ /^main$/m"));
        assert!(eval_str("$BRANCH =~ /m.*?n/U"));
    }

    #[test]
    fn multiline_and_dotall_flags() {
        let lookup = |name: &str| (name == "MSG").then(|| "first\nsecond".to_owned());
        assert!(!evaluate("$MSG =~ /^second/", &lookup));
        assert!(evaluate("$MSG =~ /^second/m", &lookup));
        assert!(!evaluate("$MSG =~ /first.second/", &lookup));
        assert!(evaluate("$MSG =~ /first.second/s", &lookup));
        assert!(!evaluate("$MSG =~ /first$/", &lookup));
        assert!(evaluate("$MSG =~ /first$/m", &lookup));
    }

    #[test]
    fn re2_translation_semantics() {
        let m = |re: &str, text: &str| {
            let p = Pattern::new(re, "").unwrap_or_else(|e| panic!("{re}: {e}"));
            p.is_match(text)
        };
        // RE2 Perl classes are ASCII-only.
        assert!(m(r"^\d+$", "123"));
        assert!(!m(r"^\d$", "٣"));
        assert!(!m(r"^\w$", "é"));
        assert!(m(r"^\W$", "é"));
        assert!(!m(r"^\s$", "\u{a0}"));
        assert!(m(r"^[\w-]+$", "feature-x_1"));
        assert!(m(r"\bmain\b", "the main branch"));
        assert!(!m(r"\bmain\b", "domain"));
        // Literal braces where they are not a repetition.
        assert!(m(r"^a{2}$", "aa"));
        assert!(m(r"^{foo}$", "{foo}"));
        assert!(m(r"^a{,2}$", "a{,2}"));
        assert!(m(r"x{", "x{"));
        // Rust-only class syntax is literal in RE2.
        assert!(m(r"^[a&&b]+$", "a&&b"));
        assert!(m(r"^[a~~]+$", "~a"));
        assert!(m(r"^[a-c--]+$", "b-"));
        assert!(m(r"^[[]+$", "[["));
        assert!(m(r"^[]a]+$", "]a"));
        assert!(m(r"^[^]a]+$", "bc"));
        assert!(m(r"^[[:alpha:]]+$", "abc"));
        assert!(m(r"^[[:^digit:]]+$", "abc"));
        // Escaped punctuation is literal (`\<` is a word boundary in Rust).
        assert!(m(r"^\<a\>$", "<a>"));
        assert!(m(r"^\-\#\ \_$", "-# _"));
        // \Q…\E, octal and hex escapes.
        assert!(m(r"^\Qa.b*\E$", "a.b*"));
        assert!(!m(r"^\Qa.b\E$", "axb"));
        assert!(m(r"^\101\x42\x{43}$", "ABC"));
        assert!(m(r"^\0$", "\0"));
        assert!(m(r"\pL", "x"));
        assert!(m(r"^\p{Greek}+$", "αβ"));
        assert!(m(r"^\p{^Greek}+$", "ab"));
        assert!(m(r"^(?P<x>a)(?<y>b)$", "ab"));
        assert!(m(r"^(?i:AB)c$", "abc"));
        assert!(m(r"\Aab\z", "ab"));
        // Lazy repetition is fine; stacked repetition is an RE2 error.
        assert!(m(r"a+?", "aa"));
        assert!(m(r"a{1,2}?", "aa"));
        // A flags group is not an atom: the repetition applies before it.
        assert!(m(r"^ab(?i)?c$", "ac"));
        assert!(m(r"^ab(?i)?c$", "aC"));
        assert!(m(r"^ab*(?i)+c$", "aC"));
        assert!(m(r"^(ab)*(?s)*$", "abab"));
        // \C (any byte) is approximated as any character.
        assert!(m(r"^a\Cb$", "a.b"));
        let rejects = [
            r"a**", r"a*+", r"a{2}{3}", r"\1", r"(a)\1", r"\8", r"\Z", r"\e", r"\h", r"(?=a)",
            r"(?!a)", r"(?<=a)", r"(?x)a", r"(?#c)", r"[a", r"a{1001}", r"[z-a]", r"\", r"é\é",
            r"(?P=x)", r"(?)",
        ];
        for re in rejects {
            assert!(Pattern::new(re, "").is_err(), "{re} should be rejected");
        }
    }

    #[test]
    fn ruby_syntax_of_variable_patterns() {
        // Flags outside ismU are not a pattern; the value is then a plain string.
        let lookup = |name: &str| match name {
            "P" => Some("/ma/x".to_owned()),
            "V" => Some("ma".to_owned()),
            _ => None,
        };
        assert!(evaluate("$V =~ $P", &lookup), "'/ma/x' contains 'ma'");
        assert!(Pattern::from_ruby_syntax("/a/").is_ok());
        assert!(Pattern::from_ruby_syntax("//").is_ok());
        assert!(Pattern::from_ruby_syntax("a/").is_err());
        // Ruby's ^ and $ are line anchors in RubySyntax::PATTERN.
        assert!(Pattern::from_ruby_syntax("junk\n/ok/").is_ok());
    }

    #[test]
    fn expression_is_reusable_and_fast() {
        let expr = Expression::parse(
            r#"$CI_COMMIT_BRANCH == "main" || $CI_COMMIT_TAG =~ /^v\d+\.\d+/ && $X != null"#,
        )
        .expect("parses");
        let mut hits = 0;
        for i in 0..10_000 {
            let lookup = move |name: &str| match name {
                "CI_COMMIT_TAG" => Some(format!("v{}.{}", i % 3, i)),
                "X" => (i % 2 == 0).then(|| "x".to_owned()),
                _ => None,
            };
            if expr.evaluate(&lookup) {
                hits += 1;
            }
        }
        assert_eq!(hits, 5_000);
    }
}
