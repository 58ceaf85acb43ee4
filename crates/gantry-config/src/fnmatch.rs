//! Ruby's `File.fnmatch?(pattern, path, File::FNM_PATHNAME | File::FNM_DOTMATCH |
//! File::FNM_EXTGLOB)`, which GitLab uses for `rules:changes`, `rules:exists`,
//! `only/except:changes` and `include:local` globs.
//!
//! A port of `dir.c` (`fnmatch`, `fnmatch_helper`, `bracket`,
//! `ruby_brace_expand`) for exactly those flags:
//!
//! * `*` and `?` never match `/`; with DOTMATCH they do match a leading `.`.
//! * `**/` at the start of a segment matches zero or more directories; `**`
//!   anywhere else is just `*` (`src/**` does not match `src/a/b`).
//! * `[abc]`, `[a-z]`, `[!x]`, `[^x]` (no POSIX classes); a bracket never matches
//!   `/`; an unterminated bracket never matches.
//! * `{a,b}` alternatives (nested, `{}` is an empty alternative); a `{` without its
//!   `}` makes the pattern match nothing, as in Ruby.
//! * `\` escapes the next character.
//!
//! Matching works on bytes and steps over whole UTF-8 characters. Brace
//! alternatives are expanded once in [`Glob::new`], which is the form to use for
//! many paths; [`fnmatch`] is the one-off convenience.

/// Most brace alternatives one pattern may expand to; more are ignored.
/// Ruby has no limit, but `{a,b}` twenty times over would be a million.
const MAX_ALTERNATIVES: usize = 4096;

/// A glob compiled for repeated matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    alternatives: Vec<Box<[u8]>>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let mut alternatives = Vec::new();
        let mut budget = MAX_ALTERNATIVES;
        brace_expand(pattern.as_bytes(), &mut budget, &mut |alt| {
            alternatives.push(alt.to_vec().into_boxed_slice());
            false
        });
        Glob { alternatives }
    }

    pub fn matches(&self, path: &str) -> bool {
        self.alternatives
            .iter()
            .any(|alt| match_pathname(alt, path.as_bytes()))
    }
}

/// `File.fnmatch?(pattern, path, FNM_PATHNAME | FNM_DOTMATCH | FNM_EXTGLOB)`.
pub fn fnmatch(pattern: &str, path: &str) -> bool {
    let (pattern, path) = (pattern.as_bytes(), path.as_bytes());
    if !pattern.contains(&b'{') {
        return match_pathname(pattern, path);
    }
    let mut budget = MAX_ALTERNATIVES;
    brace_expand(pattern, &mut budget, &mut |alt| match_pathname(alt, path))
}

/// Whether GitLab treats `pattern` as a glob rather than an exact path
/// (`exists.rb#exact_glob?`: any of `*`, `?`, `[`, `{`).
pub fn is_glob(pattern: &str) -> bool {
    pattern
        .bytes()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'{'))
}

/// Length of the UTF-8 character starting with `lead` (1 for a stray byte).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Step over one character at `i`, never past the end.
fn next_char(bytes: &[u8], i: usize) -> usize {
    (i + bytes.get(i).map_or(1, |&b| char_len(b))).min(bytes.len().max(i + 1))
}

/// The character at `i` as a code point (for bracket ranges).
fn code_point(bytes: &[u8], i: usize) -> u32 {
    let end = next_char(bytes, i).min(bytes.len());
    std::str::from_utf8(&bytes[i..end])
        .ok()
        .and_then(|s| s.chars().next())
        .map_or_else(|| u32::from(bytes[i]), u32::from)
}

/// `ruby_brace_expand`: calls `each` with every expansion until it returns true.
/// Returns whether some call returned true.
fn brace_expand(pat: &[u8], budget: &mut usize, each: &mut dyn FnMut(&[u8]) -> bool) -> bool {
    let mut lbrace = None;
    let mut rbrace = None;
    let mut nest = 0usize;
    let mut p = 0;
    while p < pat.len() {
        if pat[p] == b'{' {
            if nest == 0 {
                lbrace = Some(p);
            }
            nest += 1;
        }
        if pat[p] == b'}' && lbrace.is_some() {
            nest -= 1;
            if nest == 0 {
                rbrace = Some(p);
                break;
            }
        }
        if pat[p] == b'\\' {
            p += 1;
            if p >= pat.len() {
                break;
            }
        }
        p = next_char(pat, p);
    }
    match (lbrace, rbrace) {
        (Some(lb), Some(rb)) => {
            let (prefix, suffix) = (&pat[..lb], &pat[rb + 1..]);
            let mut p = lb;
            let mut buf = Vec::with_capacity(pat.len());
            while p < rb {
                p += 1;
                let start = p;
                let mut depth = 0isize;
                while p < rb && !(pat[p] == b',' && depth == 0) {
                    match pat[p] {
                        b'{' => depth += 1,
                        b'}' => depth -= 1,
                        _ => {}
                    }
                    if pat[p] == b'\\' {
                        p += 1;
                        if p == rb {
                            break;
                        }
                    }
                    p = next_char(pat, p);
                }
                let end = p.min(rb);
                buf.clear();
                buf.extend_from_slice(prefix);
                buf.extend_from_slice(&pat[start..end]);
                buf.extend_from_slice(suffix);
                if brace_expand(&buf, budget, each) {
                    return true;
                }
                if *budget == 0 {
                    return false;
                }
            }
            false
        }
        (None, None) => {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            each(pat)
        }
        // An unclosed `{`: Ruby calls nothing, so nothing matches.
        _ => false,
    }
}

/// `fnmatch` with FNM_PATHNAME: segment by segment, with `**/` recursion.
fn match_pathname(pat: &[u8], path: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut recursion: Option<(usize, usize)> = None; // (ptmp, stmp)
    loop {
        if pat[p..].starts_with(b"**/") {
            while pat[p..].starts_with(b"**/") {
                p += 3;
            }
            recursion = Some((p, s));
        }
        let (ok, np, ns) = match_segment(pat, p, path, s);
        p = np;
        s = ns;
        if ok {
            while s < path.len() && path[s] != b'/' {
                s = next_char(path, s);
            }
            if p < pat.len() && s < path.len() {
                p += 1;
                s += 1;
                continue;
            }
            if p >= pat.len() && s >= path.len() {
                return true;
            }
        }
        // Failed: let the last `**/` swallow one more directory.
        if let Some((ptmp, mut stmp)) = recursion {
            while stmp < path.len() && path[stmp] != b'/' {
                stmp = next_char(path, stmp);
            }
            if stmp < path.len() {
                stmp += 1;
                recursion = Some((ptmp, stmp));
                p = ptmp;
                s = stmp;
                continue;
            }
        }
        return false;
    }
}

/// `fnmatch_helper`: matches one segment (up to `/` or the end) of `pat` from
/// `p` against `path` from `s`. Returns (matched, p, s) where they stopped.
fn match_segment(pat: &[u8], mut p: usize, path: &[u8], mut s: usize) -> (bool, usize, usize) {
    let p_end = |i: usize| i >= pat.len() || pat[i] == b'/';
    let s_end = |i: usize| i >= path.len() || path[i] == b'/';
    let unescape = |i: usize| if pat.get(i) == Some(&b'\\') { i + 1 } else { i };
    let mut star: Option<(usize, usize)> = None; // (ptmp, stmp)
    loop {
        let mut failed = false;
        match pat.get(p) {
            Some(b'*') => {
                while pat.get(p) == Some(&b'*') {
                    p += 1;
                }
                let up = unescape(p);
                if p_end(up) {
                    return (true, up, s);
                }
                if s_end(s) {
                    return (false, p, s);
                }
                star = Some((p, s));
                continue;
            }
            Some(b'?') => {
                if s_end(s) {
                    return (false, p, s);
                }
                p += 1;
                s = next_char(path, s);
                continue;
            }
            Some(b'[') => {
                if s_end(s) {
                    return (false, p, s);
                }
                match bracket(pat, p + 1, path, s) {
                    Some(t) => {
                        p = t;
                        s = next_char(path, s);
                        continue;
                    }
                    None => failed = true,
                }
            }
            _ => {}
        }
        if !failed {
            // An ordinary (possibly escaped) character.
            p = unescape(p);
            if s_end(s) {
                return (p_end(p), p, s);
            }
            if p_end(p) {
                failed = true;
            } else {
                let len = char_len(pat[p]).min(pat.len() - p);
                if path[s..].starts_with(&pat[p..p + len]) {
                    p += len;
                    s += len;
                    continue;
                }
                failed = true;
            }
        }
        debug_assert!(failed);
        // Let the last `*` swallow one more character.
        match star {
            Some((ptmp, stmp)) => {
                let stmp = next_char(path, stmp);
                star = Some((ptmp, stmp));
                p = ptmp;
                s = stmp;
            }
            None => return (false, p, s),
        }
    }
}

/// `bracket`: `p` is just after `[`. Returns the index after `]` when the
/// character at `path[s]` is accepted.
fn bracket(pat: &[u8], mut p: usize, path: &[u8], s: usize) -> Option<usize> {
    let end = pat.len();
    if p >= end {
        return None;
    }
    let negated = pat[p] == b'!' || pat[p] == b'^';
    if negated {
        p += 1;
    }
    let subject = &path[s..];
    let mut ok = false;
    while pat.get(p) != Some(&b']') {
        let mut t1 = p;
        if pat.get(t1) == Some(&b'\\') {
            t1 += 1;
        }
        if t1 >= end {
            return None;
        }
        let r1 = char_len(pat[t1]).min(end - t1);
        p = t1 + r1;
        if p >= end {
            return None;
        }
        if pat[p] == b'-' && pat.get(p + 1) != Some(&b']') {
            let mut t2 = p + 1;
            if pat.get(t2) == Some(&b'\\') {
                t2 += 1;
            }
            if t2 >= end {
                return None;
            }
            let r2 = char_len(pat[t2]).min(end - t2);
            p = t2 + r2;
            if ok {
                continue;
            }
            if subject.starts_with(&pat[t1..t1 + r1]) || subject.starts_with(&pat[t2..t2 + r2]) {
                ok = true;
                continue;
            }
            let c = code_point(path, s);
            if c < code_point(pat, t1) || c > code_point(pat, t2) {
                continue;
            }
            ok = true;
        } else if !ok && subject.starts_with(&pat[t1..t1 + r1]) {
            ok = true;
        }
    }
    if ok == negated { None } else { Some(p + 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, path: &str, want: bool) {
        assert_eq!(
            fnmatch(pattern, path),
            want,
            "fnmatch({pattern:?}, {path:?})"
        );
        assert_eq!(
            Glob::new(pattern).matches(path),
            want,
            "Glob({pattern:?}) on {path:?}"
        );
    }

    /// The examples of Ruby's `File.fnmatch` documentation, with the answers
    /// for PATHNAME | DOTMATCH | EXTGLOB.
    #[test]
    fn ruby_documentation_examples() {
        check("cat", "cat", true);
        check("cat", "category", false);
        check("c{at,ub}s", "cats", true);
        check("c{at,ub}s", "cubs", true);
        check("c{at,ub}s", "cs", false);
        check("c?t", "cat", true);
        check("c??t", "cat", false);
        check("c*", "cats", true);
        check("c*t", "c/a/b/t", false);
        check("ca[a-z]", "cat", true);
        check("ca[^t]", "cat", false);
        check("ca[!t]", "cat", false);
        check("cat", "CAT", false);
        check("?", "/", false);
        check("*", "/", false);
        check("[/]", "/", false);
        check(r"\?", "?", true);
        check(r"\?", "a", false);
        check(r"\a", "a", true);
        check(r"[\?]", "?", true);
        check("*", ".profile", true);
        check(".*", ".profile", true);
        check("**/*.rb", "main.rb", true);
        check("**/*.rb", "./main.rb", true);
        check("**/*.rb", "lib/song.rb", true);
        check("**.rb", "main.rb", true);
        check("**.rb", "./main.rb", false);
        check("**.rb", "lib/song.rb", false);
        check("*", "dave/.profile", false);
        check("**/foo", "a/b/c/foo", true);
        check("**/foo", "/a/b/c/foo", true);
        check("**/foo", "c:/a/b/c/foo", true);
        check("**/foo", "a/.b/c/foo", true);
    }

    #[test]
    fn star_stays_within_a_segment() {
        check("src/*", "src/a.rs", true);
        check("src/*", "src/a/b.rs", false);
        check("src/**", "src/a/b.rs", false);
        check("src/**/*", "src/a/b.rs", true);
        check("src/**/*", "src/a.rs", true);
        check("src/**/*.rs", "src/x/y/z.rs", true);
        check("src/**/*.rs", "src/x/y/z.rb", false);
        check("**/*", "a", true);
        check("**/*", "a/b/c", true);
        check("*.md", "docs/README.md", false);
        check("docs/*.md", "docs/README.md", true);
        check("*/*", "a/b", true);
        check("*/*", "a", false);
        check("a/*/c", "a/b/c", true);
        // A `*` ending a segment matches an empty one (dir.c checks that first).
        check("a/*/c", "a//c", true);
        check("a*b*c", "aXXbYYc", true);
        check("a*b*c", "aXXbYY", false);
        check("*a", "bba", true);
        check("*a", "bab", false);
        check("*ab", "aabab", true);
        check("*", "", true);
        check("", "", true);
        check("a/", "a/", true);
        check("a/", "a", false);
        check("a", "a/", false);
    }

    #[test]
    fn double_star_directories() {
        check("a/**/b", "a/b", true);
        check("a/**/b", "a/x/b", true);
        check("a/**/b", "a/x/y/b", true);
        check("a/**/b", "a/x/y/c", false);
        check("a/**/**/b", "a/b", true);
        check("**/", "a/", true);
        check("**/.gitlab-ci.yml", ".gitlab-ci.yml", true);
        check("**/.gitlab-ci.yml", "x/.gitlab-ci.yml", true);
        check("**/*.{js,ts}", "web/src/app.ts", true);
        check("**/*.{js,ts}", "web/src/app.tsx", false);
        check("x**/y", "xa/y", true);
        check("x**/y", "xa/b/y", false);
    }

    #[test]
    fn brackets() {
        check("[abc]", "b", true);
        check("[abc]", "d", false);
        check("[a-c]x", "bx", true);
        check("[!a-c]x", "dx", true);
        check("[^a-c]x", "bx", false);
        check("[a-]", "-", true);
        check("[]]", "]", false); // `[]` is an empty set, then a literal `]`
        check("[]]", "]]", false);
        check("[!]", "x", true); // `[!]` is "not nothing": any one character
        check("[!]]", "x", false);
        check("[!]]", "x]", true);
        check("[abc", "a", false);
        check("[a-", "a", false);
        check(r"[\]]", "]", true);
        check(r"[a\-z]", "-", true);
        check(r"[a\-z]", "b", false);
        check("[é-ë]", "ê", true);
        check("[é-ë]", "e", false);
        check("?", "é", true);
        check("??", "é", false);
        check("*[0-9]", "v10", true);
    }

    #[test]
    fn braces() {
        check("{a,b}", "a", true);
        check("{a,b}", "c", false);
        check("x{}y", "xy", true);
        check("x{a,}y", "xy", true);
        check("x{a,}y", "xay", true);
        check("{a,{b,c}d}", "cd", true);
        check("{a,{b,c}d}", "c", false);
        check("{src,lib}/**/*.{rs,toml}", "lib/x/Cargo.toml", true);
        check("{src,lib}/**/*.{rs,toml}", "bin/x.rs", false);
        check(r"\{a,b}", "{a,b}", true);
        check(r"\{a,b}", "a", false);
        check("{a,b", "a", false); // unclosed: Ruby matches nothing
        check("{a,b", "{a,b", false);
        check("a}", "a}", true);
        check(r"{a\,b,c}", "a,b", true);
        check(r"{a\,b,c}", "c", true);
        check("{a/b,c}/d", "a/b/d", true);
    }

    #[test]
    fn escapes() {
        check(r"\*", "*", true);
        check(r"\*", "a", false);
        check(r"a\*b", "a*b", true);
        check(r"\[a]", "[a]", true);
        check(r"a\\b", r"a\b", true);
    }

    #[test]
    fn dots_are_ordinary_with_dotmatch() {
        check("*", ".hidden", true);
        check("?hidden", ".hidden", true);
        check("**/*", ".git/config", true);
        check(".*/*", ".git/config", true);
        check("[.]x", ".x", true);
    }

    #[test]
    fn is_glob_matches_gitlab_exact_glob() {
        assert!(!is_glob("Dockerfile"));
        assert!(!is_glob("src/main.rs"));
        assert!(is_glob("*.rs"));
        assert!(is_glob("a?"));
        assert!(is_glob("[ab]"));
        assert!(is_glob("{a,b}"));
    }

    #[test]
    fn hostile_patterns_stay_bounded() {
        let pattern = "{a,b}".repeat(30);
        let start = std::time::Instant::now();
        assert!(!fnmatch(&pattern, "c"));
        assert!(Glob::new(&pattern).alternatives.len() <= MAX_ALTERNATIVES);
        assert!(fnmatch(&pattern, &"a".repeat(30)));
        let stars = format!("{}b", "*a".repeat(40));
        assert!(!fnmatch(&stars, &"a".repeat(60)));
        assert!(start.elapsed().as_secs() < 5);
    }

    #[test]
    fn many_paths_one_glob() {
        let glob = Glob::new("services/**/src/**/*.{rs,toml}");
        let paths: Vec<String> = (0..20_000)
            .map(|i| {
                format!(
                    "services/s{}/src/m{}/f{}.{}",
                    i % 50,
                    i % 7,
                    i,
                    ["rs", "md"][i % 2]
                )
            })
            .collect();
        let hits = paths.iter().filter(|p| glob.matches(p)).count();
        assert_eq!(hits, 10_000);
    }
}
