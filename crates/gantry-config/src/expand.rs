//! Variable expansion, GitLab side and runner side.
//!
//! * [`expand`] / [`expand_existing`]: GitLab's `ExpandVariables`
//!   (`lib/expand_variables.rb`), used for `environment`, `resource_group`,
//!   `include` paths, `rules:exists`/`changes` paths, … Its regexp is
//!   `\$(NAME)|\${NAME}|%NAME%` with `NAME = [a-zA-Z_][a-zA-Z0-9_]*`. Note that it
//!   has **no** `$$`/`%%` escape: `$$FOO` is `$` followed by `$FOO` (the escapes
//!   belong to the variables collection, see [`expand_all`]).
//! * [`expand_runner`]: the runner's `JobVariables.ExpandValue` (Go `os.Expand`
//!   with the runner's `Get`): `$X`, `${X}`, `$$` → `$`, shell specials
//!   (`$*`, `$1`, …) → "", unknown → "". Used for image names, services, cache keys,
//!   artifact paths and for the variables themselves on the runner.
//! * [`expand_all`]: GitLab's `Collection#sort_and_expand_all` as called for the
//!   runner payload (`keep_undefined: true, expand_file_refs: false,
//!   expand_raw_refs: false`): variables are topologically sorted on their
//!   references and expanded against each other; `$$`/`%%` are left alone.
//!
//! None of these expand recursively (`${URL_${ENV}}` is not a thing in GitLab).

use crate::model::Variable;
use indexmap::IndexMap;
use std::collections::HashMap;

/// `[a-zA-Z_][a-zA-Z0-9_]*` at `i`: the end of the name, if there is one.
fn name_end(b: &[u8], i: usize) -> Option<usize> {
    let first = *b.get(i)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let len = b[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    Some(i + len)
}

/// A match of a variables regexp: `start..end` is the whole match and `name`
/// the referenced variable (`None` for the `$$`/`%%`/`${}` escapes).
struct Reference<'a> {
    end: usize,
    name: Option<&'a str>,
}

/// `ExpandVariables::VARIABLES_REGEXP` at `i`.
fn reference_at(s: &str, i: usize) -> Option<Reference<'_>> {
    let b = s.as_bytes();
    match b[i] {
        b'$' => {
            if let Some(end) = name_end(b, i + 1) {
                return Some(Reference {
                    end,
                    name: Some(&s[i + 1..end]),
                });
            }
            if b.get(i + 1) == Some(&b'{')
                && let Some(end) = name_end(b, i + 2)
                && b.get(end) == Some(&b'}')
            {
                return Some(Reference {
                    end: end + 1,
                    name: Some(&s[i + 2..end]),
                });
            }
            None
        }
        b'%' => {
            let end = name_end(b, i + 1)?;
            (b.get(end) == Some(&b'%')).then(|| Reference {
                end: end + 1,
                name: Some(&s[i + 1..end]),
            })
        }
        _ => None,
    }
}

/// `Collection::Item::VARIABLES_REGEXP` at `i`:
/// `\$\$|%%|\$(?<key>NAME)|\${\g<key>?}|%\g<key>%`.
fn collection_reference_at(s: &str, i: usize) -> Option<Reference<'_>> {
    let b = s.as_bytes();
    match (b[i], b.get(i + 1)) {
        (b'$', Some(b'$')) | (b'%', Some(b'%')) => Some(Reference {
            end: i + 2,
            name: None,
        }),
        (b'$', Some(b'{')) if b.get(i + 2) == Some(&b'}') => Some(Reference {
            end: i + 3,
            name: None,
        }),
        _ => reference_at(s, i),
    }
}

/// Runs `replace` on every match of `find`, copying the rest.
fn replace_references<'s>(
    s: &'s str,
    find: impl Fn(&'s str, usize) -> Option<Reference<'s>>,
    mut replace: impl FnMut(&'s str, Option<&'s str>, &mut String),
) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if (b[i] == b'$' || b[i] == b'%')
            && let Some(r) = find(s, i)
        {
            out.push_str(&s[copied..i]);
            replace(&s[i..r.end], r.name, &mut out);
            i = r.end;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// GitLab `ExpandVariables.expand`: `$VAR`, `${VAR}`, `%VAR%`; unknown → "".
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if !s.contains(['$', '%']) {
        return s.to_owned();
    }
    replace_references(s, reference_at, |_, name, out| {
        if let Some(value) = name.and_then(lookup) {
            out.push_str(&value);
        }
    })
}

/// GitLab `ExpandVariables.expand_existing`: unknown references are kept verbatim.
pub fn expand_existing(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if !s.contains(['$', '%']) {
        return s.to_owned();
    }
    replace_references(s, reference_at, |whole, name, out| {
        match name.and_then(lookup) {
            Some(value) => out.push_str(&value),
            None => out.push_str(whole),
        }
    })
}

/// Runner-side expansion: Go `os.Expand` with the runner's `JobVariables.Get`.
/// `$X` and `${X}` only; `$$` → `$`; `$*`, `$#`, `$@`, `$!`, `$?`, `$0`–`$9` → "";
/// unknown → ""; `${}` and an unclosed `${` are dropped; a `$` that starts no
/// name is kept.
pub fn expand_runner(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    if !b.contains(&b'$') {
        return s.to_owned();
    }
    let get = |name: &str| -> String {
        match name {
            "$" => "$".to_owned(),
            "*" | "#" | "@" | "!" | "?" | "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8"
            | "9" => String::new(),
            _ => lookup(name).unwrap_or_default(),
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&s[copied..j]);
            let (name, width) = shell_name(&s[j + 1..]);
            match name {
                Some(name) => out.push_str(&get(name)),
                // Bad syntax (`${}`, `${`): the characters are eaten.
                None if width > 0 => {}
                // `$` followed by no name: left alone.
                None => out.push('$'),
            }
            j += width;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&s[copied.min(s.len())..]);
    out
}

/// Go `os.getShellName`: the name at the start of `s` and the bytes it takes.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match b[1..].iter().position(|&c| c == b'}') {
            Some(0) => (None, 2),
            Some(k) => (Some(&s[1..1 + k]), k + 2),
            None => (None, 1),
        };
    }
    if special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let len = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if len == 0 {
        (None, 0)
    } else {
        (Some(&s[..len]), len)
    }
}

/// Names a value refers to, as `Item#depends_on` (`None` when it cannot refer
/// to anything: raw, or no `$`/`%` in it).
fn depends_on(var: &Variable) -> Option<Vec<&str>> {
    if !var.expand || !var.value.contains(['$', '%']) {
        return None;
    }
    let s = var.value.as_str();
    let b = s.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if (b[i] == b'$' || b[i] == b'%')
            && let Some(r) = collection_reference_at(s, i)
        {
            names.extend(r.name);
            i = r.end;
        } else {
            i += 1;
        }
    }
    Some(names)
}

/// GitLab `sort_and_expand_all(keep_undefined: true, expand_file_refs: false,
/// expand_raw_refs: false)` over `vars`, with `fallback` for names that are not
/// in the list (predefined variables, for instance).
///
/// * Variables are expanded in dependency order, so `A: $B`, `B: x` gives
///   `A = x` whatever the order.
/// * `expand: false` (raw) values are not expanded, and a reference *to* a raw
///   or file variable is kept as written: the runner resolves it (to the raw
///   value or the file's path), exactly as GitLab defers it.
/// * A reference to a name neither in `vars` nor known to `fallback` is kept
///   verbatim (`expand_existing` semantics) so the runner can still resolve it.
/// * `$$` and `%%` are left as they are.
/// * With several entries of one name, the one expanded last wins (GitLab's
///   `Collection#[]`); in practice that is the later entry.
/// * A reference cycle is an error naming the variables in it, in GitLab's
///   words: `circular variable reference detected: ["A", "B"]`. A variable that
///   refers only to itself is not a cycle; the reference is kept.
///
/// The map keeps the order in which names first appear in `vars`.
pub fn expand_all(
    vars: &[Variable],
    fallback: &dyn Fn(&str) -> Option<String>,
) -> Result<IndexMap<String, String>, String> {
    let deps: Vec<Option<Vec<&str>>> = vars.iter().map(depends_on).collect();
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, var) in vars.iter().enumerate() {
        by_name.entry(var.name.as_str()).or_default().push(i);
    }
    let children = |v: usize| -> Vec<usize> {
        deps[v]
            .iter()
            .flatten()
            .filter_map(|name| by_name.get(name))
            .flatten()
            .copied()
            .collect()
    };
    let components = strongly_connected_components(vars.len(), children);

    let cycles: Vec<String> = components
        .iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let names: Vec<String> = c.iter().map(|&v| format!("{:?}", vars[v].name)).collect();
            format!("[{}]", names.join(", "))
        })
        .collect();
    if !cycles.is_empty() {
        return Err(format!(
            "circular variable reference detected: {}",
            cycles.join(", ")
        ));
    }

    // The new collection, filled in dependency order; lookups see the last
    // entry appended under a name.
    let mut expanded: HashMap<&str, (String, &Variable)> = HashMap::new();
    for &v in components.iter().flatten() {
        let var = &vars[v];
        let value = if deps[v].is_some() {
            replace_references(&var.value, collection_reference_at, |whole, name, out| {
                let Some(name) = name else {
                    out.push_str(whole); // `$$`, `%%`, `${}`
                    return;
                };
                match expanded.get(name) {
                    Some((_, dep)) if dep.file || !dep.expand => out.push_str(whole),
                    Some((value, _)) => out.push_str(value),
                    None => match fallback(name) {
                        Some(value) => out.push_str(&value),
                        None => out.push_str(whole),
                    },
                }
            })
        } else {
            var.value.clone()
        };
        expanded.insert(var.name.as_str(), (value, var));
    }

    let mut result = IndexMap::with_capacity(expanded.len());
    for var in vars {
        if !result.contains_key(&var.name)
            && let Some((value, _)) = expanded.get(var.name.as_str())
        {
            result.insert(var.name.clone(), value.clone());
        }
    }
    Ok(result)
}

/// Tarjan's algorithm as Ruby's `TSort#each_strongly_connected_component`:
/// components come children-first, each in the order its nodes were reached.
fn strongly_connected_components(
    count: usize,
    children: impl Fn(usize) -> Vec<usize>,
) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let mut index = vec![UNVISITED; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack: Vec<usize> = Vec::new();
    let mut components = Vec::new();
    let mut next_index = 0;
    // Explicit DFS frames (node, its children, next child) so long chains of
    // references cannot overflow the call stack.
    let mut frames: Vec<(usize, Vec<usize>, usize)> = Vec::new();
    for root in 0..count {
        if index[root] != UNVISITED {
            continue;
        }
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        frames.push((root, children(root), 0));
        while let Some(frame) = frames.last_mut() {
            let v = frame.0;
            if frame.2 < frame.1.len() {
                let w = frame.1[frame.2];
                frame.2 += 1;
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    frames.push((w, children(w), 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            frames.pop();
            if let Some(parent) = frames.last() {
                low[parent.0] = low[parent.0].min(low[v]);
            }
            if low[v] == index[v] {
                let at = stack.iter().rposition(|&n| n == v).unwrap_or(0);
                let component = stack.split_off(at);
                for &n in &component {
                    on_stack[n] = false;
                }
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| {
            owned
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    /// GitLab's expand_variables_spec "common variable expansion" table.
    #[test]
    fn gitlab_expand_variables_spec() {
        let vv = map(&[("variable", "value"), ("variable2", "result")]);
        let nested = map(&[
            ("variable", "value"),
            ("variable2", "$variable3"),
            ("variable3", "result"),
        ]);
        type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;
        let cases: &[(&str, Lookup, &str)] = &[
            ("key", &vv, "key"),
            ("key$variable", &vv, "keyvalue"),
            ("key${variable}", &vv, "keyvalue"),
            ("key%variable%", &vv, "keyvalue"),
            ("key$variable$variable2", &vv, "keyvalueresult"),
            ("key${variable}${variable2}", &vv, "keyvalueresult"),
            ("key$variable$variable2", &nested, "keyvalue$variable3"),
            ("key$variable2$variable", &vv, "keyresultvalue"),
            ("key${variable2}${variable}", &vv, "keyresultvalue"),
        ];
        for (input, lookup, want) in cases {
            assert_eq!(expand(input, lookup), *want, "expand {input}");
            assert_eq!(
                expand_existing(input, lookup),
                *want,
                "expand_existing {input}"
            );
        }
        let review = map(&[("CI_COMMIT_REF_NAME", "feature/add-review-apps")]);
        assert_eq!(
            expand("review/$CI_COMMIT_REF_NAME", &review),
            "review/feature/add-review-apps"
        );
    }

    #[test]
    fn missing_variables() {
        let v = map(&[("variable", "value")]);
        assert_eq!(expand("key$variable", &map(&[])), "key");
        assert_eq!(expand("key${variable}${variable2}", &v), "keyvalue");
        assert_eq!(expand("key%variable%%variable2%", &v), "keyvalue");
        assert_eq!(expand_existing("key$variable", &map(&[])), "key$variable");
        assert_eq!(
            expand_existing("key${variable}${variable2}", &v),
            "keyvalue${variable2}"
        );
        assert_eq!(
            expand_existing("key%variable%%variable2%", &v),
            "keyvalue%variable2%"
        );
    }

    #[test]
    fn gitlab_side_edge_cases() {
        let v = map(&[("A", "x"), ("_B1", "y")]);
        // No $$ escape in ExpandVariables.
        assert_eq!(expand("$$A", &v), "$x");
        assert_eq!(expand("%%A%", &v), "%x");
        // Not references.
        assert_eq!(expand("cost: 5$ or 10%", &v), "cost: 5$ or 10%");
        assert_eq!(expand("${A", &v), "${A");
        assert_eq!(expand("%A", &v), "%A");
        assert_eq!(expand("% A%", &v), "% A%");
        assert_eq!(expand("$1A", &v), "$1A");
        assert_eq!(expand("${}", &v), "${}");
        assert_eq!(expand("${A B}", &v), "${A B}");
        // Names are greedy: $AB is not $A followed by B.
        assert_eq!(expand("$AB", &v), "");
        assert_eq!(expand_existing("$AB-${A}B", &v), "$AB-xB");
        assert_eq!(expand("$_B1.$A", &v), "y.x");
        assert_eq!(expand("%A%B%", &v), "xB%");
        // Non-ASCII text around references survives.
        assert_eq!(expand("é$A→%A%", &v), "éx→x");
        // No recursion, no nested names.
        assert_eq!(expand("${URL_${A}}", &v), "${URL_x}");
    }

    #[test]
    fn runner_expansion() {
        let v = map(&[
            ("HOME", "/usr/gopher"),
            ("H", "(Value of H)"),
            ("home_1", "/usr/foo"),
        ]);
        let cases = [
            ("", ""),
            ("$*", ""),
            ("$$", "$"),
            ("${*}", ""),
            ("$1", ""),
            ("${1}", ""),
            ("now is the time", "now is the time"),
            ("$HOME", "/usr/gopher"),
            ("$home_1", "/usr/foo"),
            ("${HOME}", "/usr/gopher"),
            ("${H}OME", "(Value of H)OME"),
            ("A$$$#$1$H$home_1*B", "A$(Value of H)/usr/foo*B"),
            ("$$HOME", "$HOME"),
            ("%HOME%", "%HOME%"),
            ("$UNKNOWN/x", "/x"),
            ("${UNKNOWN}", ""),
            ("start$", "start$"),
            ("$ x", "$ x"),
            ("$/x", "$/x"),
            ("${}x", "x"),
            ("${HOME", "HOME"),
            ("${HOME BAR}", ""),
            ("$-", ""),
            ("registry/$H:é", "registry/(Value of H):é"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_runner(input, &v), want, "{input:?}");
        }
    }

    fn var(name: &str, value: &str) -> Variable {
        Variable::new(name, value)
    }

    fn raw(name: &str, value: &str) -> Variable {
        Variable {
            expand: false,
            ..Variable::new(name, value)
        }
    }

    #[test]
    fn expand_all_orders_by_reference() {
        let none = |_: &str| None;
        let vars = [var("A", "$B-${C}"), var("B", "b:$C"), var("C", "c")];
        let out = expand_all(&vars, &none).expect("no cycle");
        assert_eq!(out["A"], "b:c-c");
        assert_eq!(out["B"], "b:c");
        assert_eq!(out["C"], "c");
        assert_eq!(out.keys().collect::<Vec<_>>(), ["A", "B", "C"]);
    }

    #[test]
    fn expand_all_fallback_and_unknowns() {
        let predefined = map(&[("CI_COMMIT_SHA", "abc123"), ("A", "from-fallback")]);
        let vars = [
            var("IMAGE", "app:$CI_COMMIT_SHA-$NOPE-%NOPE%"),
            var("A", "own"),
        ];
        let out = expand_all(&vars, &predefined).expect("ok");
        assert_eq!(out["IMAGE"], "app:abc123-$NOPE-%NOPE%");
        assert_eq!(out["A"], "own");
        let vars = [var("X", "$A")];
        assert_eq!(
            expand_all(&vars, &predefined).expect("ok")["X"],
            "from-fallback"
        );
    }

    #[test]
    fn expand_all_raw_file_and_escapes() {
        let none = |_: &str| None;
        let mut file = var("CERT", "----BEGIN");
        file.file = true;
        let vars = [
            var("N", "normal"),
            raw("R", "raw-$N"),
            var("C", "$R"),
            var("D", "$$N %%N% ${} $N"),
            file,
            var("F", "path=$CERT"),
        ];
        let out = expand_all(&vars, &none).expect("ok");
        assert_eq!(out["R"], "raw-$N", "raw values are never expanded");
        assert_eq!(
            out["C"], "$R",
            "references to raw variables are left to the runner"
        );
        assert_eq!(out["D"], "$$N %%N% ${} normal");
        assert_eq!(
            out["F"], "path=$CERT",
            "file variables are the runner's business"
        );
    }

    #[test]
    fn expand_all_duplicates_last_wins() {
        let none = |_: &str| None;
        let vars = [var("A", "global"), var("B", "$A"), var("A", "job")];
        let out = expand_all(&vars, &none).expect("ok");
        assert_eq!(out["A"], "job");
        assert_eq!(out["B"], "job");
        assert_eq!(out.len(), 2);
        // A job value may build on the global one of the same name.
        let vars = [var("P", "/a"), var("P", "$P:/b")];
        assert_eq!(expand_all(&vars, &none).expect("ok")["P"], "/a:/b");
    }

    #[test]
    fn expand_all_cycles() {
        let none = |_: &str| None;
        let vars = [
            var("A", "$B"),
            var("B", "${C}"),
            var("C", "%A%"),
            var("D", "d"),
        ];
        let err = expand_all(&vars, &none).unwrap_err();
        assert_eq!(
            err,
            r#"circular variable reference detected: ["A", "B", "C"]"#
        );
        let vars = [
            var("A", "$B"),
            var("B", "$A"),
            var("X", "$Y"),
            var("Y", "$X"),
        ];
        let err = expand_all(&vars, &none).unwrap_err();
        assert_eq!(
            err,
            r#"circular variable reference detected: ["A", "B"], ["X", "Y"]"#
        );
        // Self-reference is not a cycle; the reference is kept.
        let vars = [var("S", "x$S")];
        assert_eq!(expand_all(&vars, &none).expect("ok")["S"], "x$S");
        // A cycle through a raw variable is broken by its rawness.
        let vars = [var("A", "$B"), raw("B", "$A")];
        assert_eq!(expand_all(&vars, &none).expect("ok")["A"], "$B");
    }

    #[test]
    fn expand_all_long_chain() {
        let none = |_: &str| None;
        let mut vars: Vec<Variable> = (0..20_000)
            .map(|i| var(&format!("V{i}"), &format!("${{V{}}}", i + 1)))
            .collect();
        vars.push(var("V20000", "end"));
        let out = expand_all(&vars, &none).expect("ok");
        assert_eq!(out["V0"], "end");
        assert_eq!(out.len(), 20_001);
    }
}
