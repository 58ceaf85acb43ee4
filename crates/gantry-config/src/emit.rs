//! The merged configuration written back as YAML (`gantry plan --merged`):
//! block style, keys in their order, strings quoted only when a YAML 1.1
//! reader (Psych, GitLab's) or a YAML 1.2 reader could take them for
//! something else — `yes`, `on`, `1.0`, `0x1F`, `1:30`, `''`, `a: b`, a
//! leading `*` or `!`, and so on. Multi-line strings become literal blocks
//! (`|`), which keeps scripts readable.

use crate::node::{Map, Node, Value};

/// The configuration as a YAML document, ending with a newline.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Seq(s) if !s.is_empty() => write_seq(&mut out, s, 0),
        _ => {
            write_inline(&mut out, node, 0);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn write_map(out: &mut String, map: &Map, level: usize) {
    for (i, (key, entry)) in map.iter().enumerate() {
        if i > 0 {
            indent(out, level);
        }
        out.push_str(&scalar_text(key));
        out.push(':');
        write_value_after_key(out, &entry.value, level);
    }
}

/// A value after `key:`: inline for scalars and empty collections, else on
/// the next lines, indented.
fn write_value_after_key(out: &mut String, value: &Node, level: usize) {
    match &value.value {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            indent(out, level + 2);
            write_map(out, m, level + 2);
        }
        Value::Seq(s) if !s.is_empty() => {
            out.push('\n');
            indent(out, level + 2);
            write_seq(out, s, level + 2);
        }
        _ => {
            out.push(' ');
            write_inline(out, value, level + 2);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Node], level: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            indent(out, level);
        }
        out.push_str("- ");
        match &item.value {
            Value::Map(m) if !m.is_empty() => write_map(out, m, level + 2),
            Value::Seq(s) if !s.is_empty() => write_seq(out, s, level + 2),
            _ => {
                write_inline(out, item, level + 2);
                out.push('\n');
            }
        }
    }
}

/// A scalar, an empty collection or a tag, on the current line. Literal
/// blocks continue on the following lines at `content_indent`.
fn write_inline(out: &mut String, node: &Node, content_indent: usize) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&float_text(*f)),
        Value::Str(s) => {
            if literal_block_ok(s) {
                write_literal(out, s, content_indent);
            } else {
                out.push_str(&scalar_text(s));
            }
        }
        Value::Seq(_) => out.push_str("[]"),
        Value::Map(_) => out.push_str("{}"),
        Value::Reference(items) => {
            out.push_str("!reference [");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match &item.value {
                    Value::Str(s) => out.push_str(&quoted(s)),
                    _ => write_inline(out, item, content_indent),
                }
            }
            out.push(']');
        }
    }
}

/// A float that reads back as the same float in YAML 1.1 and 1.2: always
/// with a `.` in the mantissa, exponents signed.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let e = format!("{f:e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        let exp = if exp.starts_with('-') {
            exp.to_string()
        } else {
            format!("+{exp}")
        };
        return format!("{mantissa}e{exp}");
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// Multi-line strings that a literal block keeps exactly.
fn literal_block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n', '\t'])
        && s.chars().all(|c| c == '\n' || c == '\t' || !c.is_control())
        && !s.contains('\u{feff}')
        && !s.contains('\u{2028}')
        && !s.contains('\u{2029}')
        && !s.contains('\u{85}')
        // Lines of only blanks would be read back as empty lines.
        && s.split('\n').all(|line| line.is_empty() || !line.trim_matches([' ', '\t']).is_empty())
        && !s.trim_end_matches('\n').is_empty()
}

fn write_literal(out: &mut String, s: &str, level: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push('|');
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// A string as a plain scalar when that reads back as the same string,
/// else quoted.
pub fn scalar_text(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Single quotes when the string has no control characters, else double
/// quotes with escapes.
fn quoted(s: &str) -> String {
    if s.chars()
        .all(|c| !c.is_control() && c != '\u{feff}' && c != '\u{2028}' && c != '\u{2029}')
    {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Words YAML 1.1 or 1.2 resolves to null or booleans.
const SPECIAL_WORDS: &[&str] = &[
    "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true",
    "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "<<", "=",
];

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if SPECIAL_WORDS.contains(&s) {
        return false;
    }
    if s != s.trim()
        || s.chars().any(|c| {
            c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' || c == '\u{85}'
        })
    {
        return false;
    }
    // Indicators that start something else than a plain scalar.
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.starts_with("---")
        || s.starts_with("...")
    {
        return false;
    }
    !looks_numeric(s)
}

/// Anything a YAML 1.1 or 1.2 reader might take for a number, a date or a
/// special float: a digit (after an optional sign or dot) followed only by
/// characters numbers are made of, or `.inf`/`.nan` in their spellings.
fn looks_numeric(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if lower == ".inf" || lower == ".nan" {
        return true;
    }
    let starts_number = body.starts_with(|c: char| c.is_ascii_digit())
        || (body.starts_with('.') && body[1..].starts_with(|c: char| c.is_ascii_digit()));
    starts_number
        && body
            .chars()
            .all(|c| c.is_ascii_hexdigit() || "xXoObB_.:,+-eE tTzZ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(scalar_text("build"), "build");
        assert_eq!(scalar_text("echo hello"), "echo hello");
        assert_eq!(scalar_text("yes"), "'yes'");
        assert_eq!(scalar_text("on"), "'on'");
        assert_eq!(scalar_text("1.0"), "'1.0'");
        assert_eq!(scalar_text("0x1F"), "'0x1F'");
        assert_eq!(scalar_text("1:30"), "'1:30'");
        assert_eq!(scalar_text("1,000"), "'1,000'");
        assert_eq!(scalar_text("2024-01-01"), "'2024-01-01'");
        assert_eq!(scalar_text(""), "''");
        assert_eq!(scalar_text("a: b"), "'a: b'");
        assert_eq!(scalar_text("*alias"), "'*alias'");
        assert_eq!(scalar_text("it's"), "it's");
        assert_eq!(scalar_text("'q'"), "'''q'''");
        assert_eq!(scalar_text("3rd-party"), "3rd-party");
        assert_eq!(scalar_text("a\tb"), "\"a\\tb\"");
        assert_eq!(scalar_text(" lead"), "' lead'");
    }

    #[test]
    fn floats_keep_a_dot() {
        assert_eq!(float_text(1.0), "1.0");
        assert_eq!(float_text(0.5), "0.5");
        assert_eq!(float_text(1e20), "1.0e+20");
        assert_eq!(float_text(1.5e-7), "1.5e-7");
        assert_eq!(float_text(f64::INFINITY), ".inf");
    }
}
