//! Path globs for `artifacts:paths`/`exclude`, `cache:paths` and
//! `cache:key:files`, with the runner's doublestar semantics: `*` and `?`
//! stay inside one path segment, `**` spans any number of segments,
//! `[abc]`/`[!a-z]` classes and `{a,b}` alternatives. A pattern that
//! matches a directory selects everything below it.

use std::path::{Component, Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    AnyDepth,
    Glob(String),
}

/// One compiled pattern (after brace expansion).
#[derive(Clone, Debug)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// Compiles a pattern relative to the project directory. Returns `None`
    /// for a pattern that leaves the project (`..`) or is empty.
    fn compile(pattern: &str) -> Option<Pattern> {
        let mut segments = Vec::new();
        for part in pattern.split('/') {
            match part {
                "" | "." => continue,
                ".." => return None,
                "**" => {
                    if segments.last() != Some(&Segment::AnyDepth) {
                        segments.push(Segment::AnyDepth);
                    }
                }
                p => segments.push(Segment::Glob(p.to_string())),
            }
        }
        if segments.is_empty() {
            return None;
        }
        Some(Pattern { segments })
    }

    /// The leading segments without wildcards: where a walk can start.
    fn literal_prefix(&self) -> PathBuf {
        let mut p = PathBuf::new();
        for s in &self.segments {
            match s {
                Segment::Glob(g) if !has_meta(g) => p.push(unescape(g)),
                _ => break,
            }
        }
        p
    }

    pub fn matches(&self, rel: &[&str]) -> bool {
        match_segments(&self.segments, rel)
    }

    /// Whether some path below `rel` (a directory) could still match.
    fn could_match_below(&self, rel: &[&str]) -> bool {
        prefix_possible(&self.segments, rel)
    }
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn match_segments(pat: &[Segment], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(Segment::AnyDepth) => {
            (0..=path.len()).any(|skip| match_segments(&pat[1..], &path[skip..]))
        }
        Some(Segment::Glob(g)) => match path.first() {
            Some(first) if match_name(g, first) => match_segments(&pat[1..], &path[1..]),
            _ => false,
        },
    }
}

/// Whether `path` (a directory) can be a proper prefix of a match.
fn prefix_possible(pat: &[Segment], path: &[&str]) -> bool {
    if path.is_empty() {
        return !pat.is_empty();
    }
    match pat.first() {
        None => false,
        Some(Segment::AnyDepth) => true,
        Some(Segment::Glob(g)) => match_name(g, path[0]) && prefix_possible(&pat[1..], &path[1..]),
    }
}

/// Matches one path segment against a glob segment (`*`, `?`, `[...]`, `\`).
pub fn match_name(glob: &str, name: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_chars(&g, &n)
}

fn match_chars(g: &[char], n: &[char]) -> bool {
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() {
            match g[gi] {
                '*' => {
                    star = Some((gi, ni));
                    gi += 1;
                    continue;
                }
                '?' => {
                    gi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = match_class(&g[gi..], n[ni]) {
                        if matched {
                            gi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        gi += 1;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if gi + 1 < g.len() && g[gi + 1] == n[ni] => {
                    gi += 2;
                    ni += 1;
                    continue;
                }
                c if c == n[ni] => {
                    gi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sg, sn)) => {
                gi = sg + 1;
                ni = sn + 1;
                star = Some((sg, sn + 1));
            }
            None => return false,
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// `[...]` at the start of `g`: whether `c` matches, and the class length.
fn match_class(g: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(g.get(1), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < g.len() {
        if g[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = g[i];
        if i + 2 < g.len() && g[i + 1] == '-' && g[i + 2] != ']' {
            if lo <= c && c <= g[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Expands `{a,b}` alternatives (nested allowed).
fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut last = open + 1;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(&pattern[last..i]);
                    let (head, tail) = (&pattern[..open], &pattern[i + 1..]);
                    let mut out = Vec::new();
                    for p in parts {
                        for t in expand_braces(tail) {
                            out.extend(expand_braces(&format!("{head}{p}{t}")));
                        }
                    }
                    return out;
                }
            }
            b',' if depth == 1 => {
                parts.push(&pattern[last..i]);
                last = i + 1;
            }
            _ => {}
        }
    }
    vec![pattern.to_string()]
}

/// A set of patterns, relative to a base directory.
#[derive(Clone, Debug, Default)]
pub struct GlobSet {
    patterns: Vec<Pattern>,
}

impl GlobSet {
    /// Compiles patterns; `project_prefix` (the job's `CI_PROJECT_DIR`) is
    /// stripped from absolute patterns. Patterns leaving the project are
    /// returned in the error list.
    pub fn new(patterns: &[String], project_prefix: &str) -> (GlobSet, Vec<String>) {
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        for raw in patterns {
            let mut p = raw.as_str();
            if !project_prefix.is_empty()
                && let Some(rest) = p.strip_prefix(project_prefix)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                p = rest.trim_start_matches('/');
                if p.is_empty() {
                    p = "**";
                }
            }
            if p.starts_with('/') {
                rejected.push(raw.clone());
                continue;
            }
            for alt in expand_braces(p) {
                match Pattern::compile(&alt) {
                    Some(pat) => out.push(pat),
                    None => rejected.push(raw.clone()),
                }
            }
        }
        (GlobSet { patterns: out }, rejected)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn matches(&self, rel: &Path) -> bool {
        let segs = segments(rel);
        self.patterns.iter().any(|p| p.matches(&segs))
    }

    /// Whether `rel` or anything below it is matched.
    fn covers(&self, rel: &Path) -> bool {
        let segs = segments(rel);
        self.patterns
            .iter()
            .any(|p| p.matches(&segs) || p.could_match_below(&segs))
    }

    /// Files (and symlinks, and empty directories) under `base` selected by
    /// the set: matched entries, and everything below matched directories.
    /// Paths are relative to `base`, sorted. Symlinks are not followed.
    pub fn collect(&self, base: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut roots: Vec<PathBuf> = self.patterns.iter().map(|p| p.literal_prefix()).collect();
        roots.sort();
        roots.dedup();
        // A root below another root is walked by the outer one.
        let mut kept: Vec<PathBuf> = Vec::new();
        for r in roots {
            if !kept.iter().any(|k| r.starts_with(k)) {
                kept.push(r);
            }
        }
        for root in kept {
            self.walk_from(base, &root, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    fn walk_from(&self, base: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let full = base.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            return;
        };
        if !rel.as_os_str().is_empty() && self.matches(rel) {
            add_all(base, rel, &meta, out);
            return;
        }
        if meta.is_dir() && (rel.as_os_str().is_empty() || self.covers(rel)) {
            let Ok(entries) = std::fs::read_dir(&full) else {
                return;
            };
            let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            names.sort();
            for name in names {
                self.walk_from(base, &rel.join(name), out);
            }
        }
    }
}

/// Adds `rel` and, for a directory, everything below it.
fn add_all(base: &Path, rel: &Path, meta: &std::fs::Metadata, out: &mut Vec<PathBuf>) {
    if !meta.is_dir() {
        out.push(rel.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(base.join(rel)) else {
        return;
    };
    let mut any = false;
    for e in entries.flatten() {
        any = true;
        let child = rel.join(e.file_name());
        if let Ok(m) = std::fs::symlink_metadata(base.join(&child)) {
            add_all(base, &child, &m, out);
        }
    }
    if !any {
        out.push(rel.to_path_buf());
    }
}

fn segments(rel: &Path) -> Vec<&str> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect()
}

/// Every file under `base` (relative paths, sorted; symlinks not followed),
/// skipping `.git`.
pub fn all_files(base: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(base.join(rel)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if rel.as_os_str().is_empty() && name == ".git" {
                continue;
            }
            let child = rel.join(&name);
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(base, &child, out),
                Ok(_) => out.push(child),
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(base, Path::new(""), &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> GlobSet {
        GlobSet::new(
            &p.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "/proj",
        )
        .0
    }

    #[test]
    fn names() {
        assert!(match_name("*.txt", "a.txt"));
        assert!(!match_name("*.txt", "a.txt.bak"));
        assert!(match_name("a?c", "abc"));
        assert!(match_name("[a-c]x", "bx"));
        assert!(!match_name("[!a-c]x", "bx"));
        assert!(match_name("\\*", "*"));
        assert!(match_name("*", ".hidden"));
    }

    #[test]
    fn double_star_and_braces() {
        let s = set(&["**/*.{xml,json}", "out/"]);
        assert!(s.matches(Path::new("report.xml")));
        assert!(s.matches(Path::new("a/b/c.json")));
        assert!(s.matches(Path::new("out")));
        assert!(!s.matches(Path::new("a/b/c.txt")));
        let s = set(&["/proj/dist/*.js"]);
        assert!(s.matches(Path::new("dist/app.js")));
        assert!(!s.matches(Path::new("dist/sub/app.js")));
    }

    #[test]
    fn escaping_patterns_are_rejected() {
        let (_, rejected) = GlobSet::new(&["../x".to_string(), "/etc/passwd".to_string()], "/p");
        assert_eq!(rejected.len(), 2);
    }

    #[test]
    fn collect_walks_matching_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        std::fs::create_dir_all(b.join("out/sub")).unwrap();
        std::fs::write(b.join("out/a.txt"), "a").unwrap();
        std::fs::write(b.join("out/sub/b.txt"), "b").unwrap();
        std::fs::write(b.join("top.log"), "t").unwrap();
        std::fs::write(b.join("other.txt"), "o").unwrap();
        let got = set(&["out", "*.log"]).collect(b);
        assert_eq!(
            got,
            vec![
                PathBuf::from("out/a.txt"),
                PathBuf::from("out/sub/b.txt"),
                PathBuf::from("top.log")
            ]
        );
        let got = set(&["**/b.txt"]).collect(b);
        assert_eq!(got, vec![PathBuf::from("out/sub/b.txt")]);
    }
}
