//! Validation of the keywords the model carries as JSON (`secrets`,
//! `id_tokens`, `release`, `run`, `trigger`, ...) and of the document-level
//! `include:` and `spec:` headers. Each checks types and keys against
//! GitLab's schema and records what is wrong.

use super::check::{Ck, P};
use super::keywords::{RuleScope, rules, script};
use crate::node::{Map, Node, Value};

/// `hooks: {pre_get_sources_script}`.
pub(crate) fn hooks(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    ck.keys(m, p, &["pre_get_sources_script"]);
    if let Some(x) = m.get("pre_get_sources_script") {
        script(ck, x, &p.join("pre_get_sources_script"), true);
    }
}

/// `id_tokens: {NAME: {aud}}`.
pub(crate) fn id_tokens(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    for (name, e) in m.iter() {
        let tp = p.join(name);
        let Some(t) = ck.map(&e.value, &tp) else {
            continue;
        };
        ck.keys(t, &tp, &["aud"]);
        ck.require(t, &e.value, &tp, "aud");
        if let Some(aud) = t.get("aud") {
            let ap = tp.join("aud");
            if let Value::Seq(items) = &aud.value {
                ck.strings(aud, &ap, 1);
                ck.unique(items, &ap);
            } else if aud.as_str().is_none() && !ck.is_ref(aud, &ap) {
                ck.bad(aud, &ap, "a string or a non-empty array of strings");
            }
        }
    }
}

/// `identity: google_cloud`.
pub(crate) fn identity(ck: &mut Ck, n: &Node, p: &P) {
    ck.one_of(n, p, &["google_cloud"]);
}

/// `dast_configuration: {site_profile, scanner_profile}`.
pub(crate) fn dast_configuration(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    ck.keys(m, p, &["site_profile", "scanner_profile"]);
    for key in ["site_profile", "scanner_profile"] {
        if let Some(x) = m.get(key) {
            ck.string(x, &p.join(key));
        }
    }
}

/// `secrets: {NAME: {vault | azure_key_vault | ..., file, token}}`.
pub(crate) fn secrets(ck: &mut Ck, n: &Node, p: &P) {
    const PROVIDERS: &[&str] = &[
        "vault",
        "gcp_secret_manager",
        "azure_key_vault",
        "aws_secrets_manager",
        "gitlab_secrets_manager",
    ];
    let Some(m) = ck.map(n, p) else { return };
    for (name, e) in m.iter() {
        let sp = p.join(name);
        let node = &e.value;
        let Some(s) = ck.map(node, &sp) else { continue };
        let mut allowed = PROVIDERS.to_vec();
        allowed.extend_from_slice(&["file", "token"]);
        ck.keys(s, &sp, &allowed);
        if !PROVIDERS.iter().any(|k| s.contains_key(k)) {
            ck.error(
                node.span,
                &sp,
                "names no secret provider",
                &format!("one of: {}", PROVIDERS.join(", ")),
            );
        }
        if let Some(x) = s.get("file") {
            ck.bool(x, &sp.join("file"));
        }
        if let Some(x) = s.get("token") {
            ck.string(x, &sp.join("token"));
        }
        if let Some(x) = s.get("vault") {
            let vp = sp.join("vault");
            if x.as_str().is_none()
                && let Some(v) = ck.map(x, &vp)
            {
                ck.keys(v, &vp, &["engine", "path", "field"]);
                for key in ["engine", "path", "field"] {
                    ck.require(v, x, &vp, key);
                }
                string_keys(ck, v, &vp, &["path", "field"]);
                if let Some(eng) = v.get("engine") {
                    let ep = vp.join("engine");
                    if let Some(em) = ck.map(eng, &ep) {
                        ck.require(em, eng, &ep, "name");
                        ck.require(em, eng, &ep, "path");
                        string_keys(ck, em, &ep, &["name", "path"]);
                    }
                }
            }
        }
        if let Some(x) = s.get("gcp_secret_manager") {
            let gp = sp.join("gcp_secret_manager");
            if let Some(g) = ck.map(x, &gp) {
                ck.keys(g, &gp, &["name", "version"]);
                ck.require(g, x, &gp, "name");
                string_keys(ck, g, &gp, &["name"]);
                if let Some(v) = g.get("version")
                    && !matches!(v.value, Value::Str(_) | Value::Int(_))
                    && !ck.is_ref(v, &gp)
                {
                    ck.bad(v, &gp.join("version"), "a string or an integer");
                }
            }
            ck.require(s, node, &sp, "token");
        }
        if let Some(x) = s.get("azure_key_vault") {
            let ap = sp.join("azure_key_vault");
            if let Some(a) = ck.map(x, &ap) {
                ck.keys(a, &ap, &["name", "version"]);
                ck.require(a, x, &ap, "name");
                string_keys(ck, a, &ap, &["name", "version"]);
            }
        }
        if let Some(x) = s.get("aws_secrets_manager") {
            let ap = sp.join("aws_secrets_manager");
            if x.as_str().is_none()
                && let Some(a) = ck.map(x, &ap)
            {
                let keys = [
                    "secret_id",
                    "version_id",
                    "version_stage",
                    "region",
                    "role_arn",
                    "role_session_name",
                    "field",
                ];
                ck.keys(a, &ap, &keys);
                ck.require(a, x, &ap, "secret_id");
                string_keys(ck, a, &ap, &keys);
            }
        }
        if let Some(x) = s.get("gitlab_secrets_manager") {
            let gp = sp.join("gitlab_secrets_manager");
            if let Some(g) = ck.map(x, &gp) {
                ck.keys(g, &gp, &["name", "source"]);
                ck.require(g, x, &gp, "name");
                string_keys(ck, g, &gp, &["name", "source"]);
                if let Some(v) = g.get("name").and_then(Node::as_str)
                    && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                {
                    ck.bad(
                        g.get("name").unwrap_or(x),
                        &gp.join("name"),
                        "letters, digits and `_` only",
                    );
                }
            }
        }
    }
}

/// Each of `keys` present in `m` must be a string.
fn string_keys(ck: &mut Ck, m: &Map, p: &P, keys: &[&str]) {
    for key in keys {
        if let Some(x) = m.get(key) {
            ck.string(x, &p.join(key));
        }
    }
}

/// `release: {tag_name, description, ...}`.
pub(crate) fn release(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    ck.keys(
        m,
        p,
        &[
            "tag_name",
            "tag_message",
            "name",
            "description",
            "ref",
            "milestones",
            "released_at",
            "assets",
        ],
    );
    ck.require(m, n, p, "tag_name");
    ck.require(m, n, p, "description");
    for key in ["tag_name", "description"] {
        if let Some(x) = m.get(key) {
            ck.nonempty_string(x, &p.join(key));
        }
    }
    string_keys(ck, m, p, &["tag_message", "name", "ref"]);
    if let Some(x) = m.get("milestones") {
        ck.strings(x, &p.join("milestones"), 0);
    }
    if let Some(x) = m.get("released_at") {
        let rp = p.join("released_at");
        if let Some(s) = ck.string(x, &rp)
            && !is_iso8601(s)
        {
            ck.bad(x, &rp, "an ISO 8601 time such as \"2021-03-15T08:00:00Z\"");
        }
    }
    if let Some(x) = m.get("assets") {
        let ap = p.join("assets");
        if let Some(a) = ck.map(x, &ap) {
            ck.keys(a, &ap, &["links"]);
            ck.require(a, x, &ap, "links");
            if let Some(links) = a.get("links") {
                let lp = ap.join("links");
                match links.as_seq() {
                    Some(items) if !items.is_empty() => {
                        for link in items {
                            let Some(l) = ck.map(link, &lp) else { continue };
                            ck.keys(l, &lp, &["name", "url", "filepath", "link_type"]);
                            ck.require(l, link, &lp, "name");
                            ck.require(l, link, &lp, "url");
                            for key in ["name", "url"] {
                                if let Some(v) = l.get(key) {
                                    ck.nonempty_string(v, &lp.join(key));
                                }
                            }
                            string_keys(ck, l, &lp, &["filepath"]);
                            if let Some(v) = l.get("link_type") {
                                ck.one_of(
                                    v,
                                    &lp.join("link_type"),
                                    &["runbook", "package", "image", "other"],
                                );
                            }
                        }
                    }
                    _ if ck.is_ref(links, &lp) => {}
                    _ => ck.bad(links, &lp, "a non-empty array of links"),
                }
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` with `Z` or `±HH:MM`.
fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let num =
        |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok()).unwrap_or(99);
    let date_time = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_time || !(1..=12).contains(&num(5..7)) || !(1..=31).contains(&num(8..10)) {
        return false;
    }
    if num(11..13) > 23 || num(14..16) > 59 || num(17..19) > 59 {
        return false;
    }
    let zone = &s[19..];
    zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':'
            && zone[1..3].bytes().all(|c| c.is_ascii_digit())
            && zone[4..6].bytes().all(|c| c.is_ascii_digit()))
}

/// `pages: {path_prefix, expire_in, publish}` or a boolean.
pub(crate) fn pages(ck: &mut Ck, n: &Node, p: &P) {
    if matches!(n.value, Value::Bool(_)) {
        return;
    }
    let Some(m) = ck.map(n, p) else { return };
    ck.keys(m, p, &["path_prefix", "expire_in", "publish"]);
    string_keys(ck, m, p, &["path_prefix", "expire_in", "publish"]);
}

/// `coverage: /regex/`.
pub(crate) fn coverage(ck: &mut Ck, n: &Node, p: &P) -> Option<String> {
    let s = ck.string(n, p)?;
    if s.len() >= 3 && s.starts_with('/') && s.ends_with('/') {
        Some(s.to_string())
    } else {
        ck.bad(
            n,
            p,
            "a regular expression between slashes, such as \"/Coverage: \\d+%/\"",
        );
        None
    }
}

/// Job `inputs:` (at most 50, each with a `default` of its type).
pub(crate) fn job_inputs(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    if m.len() > 50 {
        ck.bad(n, p, "at most 50 inputs");
    }
    for (name, e) in m.iter() {
        input_spec(ck, &e.value, &p.join(name), true);
    }
}

/// `spec:inputs` (`job` = false) and job `inputs` (`job` = true) entries.
fn input_spec(ck: &mut Ck, n: &Node, p: &P, job: bool) {
    if n.is_null() && !job {
        return;
    }
    let Some(m) = ck.map(n, p) else { return };
    let allowed: &[&str] = if job {
        &["type", "options", "regex", "default", "description"]
    } else {
        &[
            "type",
            "options",
            "regex",
            "default",
            "description",
            "rules",
        ]
    };
    ck.keys(m, p, allowed);
    let ty = match m.get("type") {
        Some(x) => ck.one_of(
            x,
            &p.join("type"),
            &["array", "boolean", "number", "string"],
        ),
        None => Some("string"),
    };
    if let Some(x) = m.get("options") {
        input_options(ck, x, &p.join("options"), usize::MAX);
    }
    if let Some(x) = m.get("regex") {
        ck.string(x, &p.join("regex"));
    }
    if let Some(x) = m.get("description") {
        ck.short_string(x, &p.join("description"), 1024);
    }
    if job {
        ck.require(m, n, p, "default");
    }
    if let (Some(ty), Some(d)) = (ty, m.get("default")) {
        default_matches(ck, d, &p.join("default"), ty, !job);
    }
    if let Some(r) = m.get("rules") {
        let rp = p.join("rules");
        for key in ["options", "default"] {
            if let Some(e) = m.entry(key) {
                ck.error(
                    e.key_span,
                    p,
                    &format!("cannot use `{key}` together with `rules`"),
                    "only `rules`",
                );
            }
        }
        if r.is_null() || ck.is_ref(r, &rp) {
            return;
        }
        let Some(items) = r.as_seq() else {
            ck.bad(
                r,
                &rp,
                "an array of hashes with `if`, `options` and `default`",
            );
            return;
        };
        for item in items {
            let Some(rm) = ck.map(item, &rp) else {
                continue;
            };
            ck.keys(rm, &rp, &["if", "options", "default"]);
            ck.require(rm, item, &rp, "default");
            if let Some(x) = rm.get("if") {
                super::keywords::expression(ck, x, &rp.join("if"));
            }
            if let Some(x) = rm.get("options") {
                input_options(ck, x, &rp.join("options"), 50);
            }
        }
    }
}

/// Input `options`: strings, numbers or booleans.
fn input_options(ck: &mut Ck, n: &Node, p: &P, max: usize) {
    if ck.is_ref(n, p) {
        return;
    }
    let Some(items) = n.as_seq() else {
        ck.bad(n, p, "an array of strings, numbers or booleans");
        return;
    };
    if items.len() > max {
        ck.bad(n, p, &format!("an array of at most {max} options"));
    }
    for item in items {
        if item.scalar_string().is_none() && !ck.is_ref(item, p) {
            ck.bad(item, p, "a string, a number or a boolean");
        }
    }
}

/// An input's `default` must have the input's `type` (`null` allowed in
/// `spec:inputs`).
fn default_matches(ck: &mut Ck, d: &Node, p: &P, ty: &str, null_ok: bool) {
    if (null_ok && d.is_null()) || matches!(d.value, Value::Reference(_)) {
        return;
    }
    let ok = match ty {
        "string" => matches!(d.value, Value::Str(_)),
        "number" => matches!(d.value, Value::Int(_) | Value::Float(_)),
        "boolean" => matches!(d.value, Value::Bool(_)),
        "array" => matches!(d.value, Value::Seq(_)),
        _ => true,
    };
    if !ok {
        let expected = match ty {
            "number" => "a number, as the input's type is `number`",
            "boolean" => "a boolean, as the input's type is `boolean`",
            "array" => "an array, as the input's type is `array`",
            _ => "a string, as the input's type is `string` (the default type)",
        };
        ck.bad(d, p, expected);
    }
}

/// `inputs:` passed to an include or a downstream pipeline.
pub(crate) fn inputs(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    for (name, e) in m.iter() {
        let ip = p.join(name);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            ck.error(
                e.key_span,
                &ip,
                "is not a valid input name",
                "letters, digits, `_` and `-` only",
            );
        }
        if let Value::Str(_) = &e.value.value {
            ck.short_string(&e.value, &ip, 1024);
        }
    }
}

/// Whether `s` looks like a project path: the schema's unanchored
/// `(?:\S/\S|\$\S+)` (a `/` between two non-blanks, or a `$` variable).
pub(crate) fn is_project_path(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    c.windows(3)
        .any(|w| !w[0].is_whitespace() && w[1] == '/' && !w[2].is_whitespace())
        || c.windows(2).any(|w| w[0] == '$' && !w[1].is_whitespace())
}

fn project_path(ck: &mut Ck, n: &Node, p: &P) -> Option<()> {
    let s = ck.string(n, p)?;
    if is_project_path(s) {
        Some(())
    } else {
        ck.bad(
            n,
            p,
            "a project path such as \"group/project\", or a $VARIABLE",
        );
        None
    }
}

/// A string ending in `.yml` or `.yaml`.
fn yaml_file(ck: &mut Ck, n: &Node, p: &P) {
    if let Some(s) = ck.string(n, p)
        && !has_yaml_ext(s)
    {
        ck.bad(n, p, "a path ending in .yml or .yaml");
    }
}

fn has_yaml_ext(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.ends_with(".yml") || l.ends_with(".yaml")
}

fn remote_url(ck: &mut Ck, n: &Node, p: &P) {
    if let Some(s) = ck.string(n, p) {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        if !rest.is_some_and(|r| r.len() > 4 && has_yaml_ext(r)) {
            ck.bad(n, p, "an http(s):// URL of a .yml or .yaml file");
        }
    }
}

/// `trigger:` of a bridge job: a project path, `{project, branch, ...}` or
/// `{include, strategy, forward}`.
pub(crate) fn trigger(ck: &mut Ck, n: &Node, p: &P) {
    match &n.value {
        Value::Str(_) => {
            project_path(ck, n, p);
        }
        Value::Map(m) => {
            if m.contains_key("include") {
                ck.keys(m, p, &["include", "strategy", "forward"]);
                trigger_include(ck, m.get("include").unwrap_or(n), &p.join("include"));
            } else {
                ck.keys(
                    m,
                    p,
                    &["project", "branch", "strategy", "inputs", "forward"],
                );
                ck.require(m, n, p, "project");
                if let Some(x) = m.get("project") {
                    project_path(ck, x, &p.join("project"));
                }
                string_keys(ck, m, p, &["branch"]);
                if let Some(x) = m.get("inputs") {
                    inputs(ck, x, &p.join("inputs"));
                }
            }
            if let Some(x) = m.get("strategy") {
                ck.one_of(x, &p.join("strategy"), &["depend", "mirror"]);
            }
            if let Some(x) = m.get("forward") {
                let fp = p.join("forward");
                if let Some(f) = ck.map(x, &fp) {
                    ck.keys(f, &fp, &["yaml_variables", "pipeline_variables"]);
                    for key in ["yaml_variables", "pipeline_variables"] {
                        if let Some(v) = f.get(key) {
                            ck.bool(v, &fp.join(key));
                        }
                    }
                }
            }
        }
        _ if ck.is_ref(n, p) => {}
        _ => ck.bad(n, p, "a project path or a hash with `project` or `include`"),
    }
}

/// `trigger:include`: a file or up to three include hashes.
fn trigger_include(ck: &mut Ck, n: &Node, p: &P) {
    match &n.value {
        Value::Str(_) => yaml_file(ck, n, p),
        Value::Seq(items) => {
            if items.len() > 3 {
                ck.bad(n, p, "at most 3 files");
            }
            for item in items {
                include_item(ck, item, p, IncludeScope::Trigger);
            }
        }
        _ if ck.is_ref(n, p) => {}
        _ => ck.bad(n, p, "a .yml file or an array of include hashes"),
    }
}

/// Which include hash forms are allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IncludeScope {
    /// Top-level `include:`.
    Config,
    /// `trigger:include`.
    Trigger,
    /// `spec:include`.
    Spec,
}

/// Top-level `include:`: one item or an array of items.
pub(crate) fn include(ck: &mut Ck, n: &Node, p: &P) {
    match &n.value {
        Value::Seq(items) => {
            for item in items {
                include_item(ck, item, p, IncludeScope::Config);
            }
        }
        _ => include_item(ck, n, p, IncludeScope::Config),
    }
}

fn include_item(ck: &mut Ck, n: &Node, p: &P, scope: IncludeScope) {
    const LOCATIONS: &[&str] = &[
        "local",
        "project",
        "remote",
        "template",
        "component",
        "artifact",
    ];
    match &n.value {
        Value::Str(s) if scope == IncludeScope::Config => {
            let is_url = s.starts_with("http://") || s.starts_with("https://");
            let other_scheme = s.find("://").is_some_and(|i| {
                i > 0
                    && s[..i]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            let ext_ok = s.len() > 4 && {
                let l = s.to_ascii_lowercase();
                l.strip_suffix(".yml")
                    .or_else(|| l.strip_suffix(".yaml"))
                    .is_some_and(|stem| {
                        stem.chars()
                            .last()
                            .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
            };
            if !ext_ok || (!is_url && other_scheme) {
                ck.bad(
                    n,
                    p,
                    "a local path or an http(s):// URL of a .yml or .yaml file",
                );
            }
        }
        Value::Map(m) => {
            let present: Vec<&str> = LOCATIONS
                .iter()
                .copied()
                .filter(|k| m.contains_key(k))
                .collect();
            let allowed_locations: &[&str] = match scope {
                IncludeScope::Config => &["local", "project", "remote", "template", "component"],
                IncludeScope::Trigger => &[
                    "local",
                    "project",
                    "remote",
                    "template",
                    "component",
                    "artifact",
                ],
                IncludeScope::Spec => &["local", "project", "remote"],
            };
            let location = match present.as_slice() {
                [one] if allowed_locations.contains(one) => *one,
                [] | [_] => {
                    ck.error(
                        n.span,
                        p,
                        "item does not name a file to include",
                        &format!("one of: {}", allowed_locations.join(", ")),
                    );
                    return;
                }
                _ => {
                    ck.error(
                        n.span,
                        p,
                        &format!(
                            "item uses {}; each include must use only one of them",
                            present.join(", ")
                        ),
                        &format!("one of: {}", allowed_locations.join(", ")),
                    );
                    return;
                }
            };
            let mut allowed: Vec<&str> = vec![location];
            match location {
                "project" => allowed.extend_from_slice(&["ref", "file"]),
                "remote" if scope != IncludeScope::Trigger => {
                    allowed.extend_from_slice(&["integrity", "cache"])
                }
                "artifact" => allowed.push("job"),
                _ => {}
            }
            if scope == IncludeScope::Config {
                allowed.push("rules");
            }
            if scope != IncludeScope::Spec {
                allowed.push("inputs");
            }
            ck.keys(m, p, &allowed);
            let lp = p.join(location);
            let value = m.get(location).unwrap_or(n);
            match location {
                "local" | "template" | "artifact" => yaml_file(ck, value, &lp),
                "component" => {
                    ck.string(value, &lp);
                }
                "remote" => remote_url(ck, value, &lp),
                "project" => {
                    project_path(ck, value, &lp);
                    ck.require(m, n, p, "file");
                    if let Some(f) = m.get("file") {
                        let fp = p.join("file");
                        match &f.value {
                            Value::Seq(files) if scope != IncludeScope::Trigger => {
                                for file in files {
                                    yaml_file(ck, file, &fp);
                                }
                            }
                            _ => yaml_file(ck, f, &fp),
                        }
                    }
                    if let Some(r) = m.get("ref") {
                        let rp = p.join("ref");
                        if scope == IncludeScope::Trigger {
                            ck.nonempty_string(r, &rp);
                        } else {
                            ck.string(r, &rp);
                        }
                    }
                }
                _ => {}
            }
            if location == "artifact" {
                ck.require(m, n, p, "job");
                string_keys(ck, m, p, &["job"]);
            }
            if let Some(x) = m.get("integrity") {
                let ip = p.join("integrity");
                if let Some(s) = ck.string(x, &ip) {
                    let ok = s.strip_prefix("sha256-").is_some_and(|b64| {
                        b64.len() == 44
                            && b64.ends_with('=')
                            && b64
                                .bytes()
                                .take(43)
                                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
                    });
                    if !ok {
                        ck.bad(x, &ip, "\"sha256-\" followed by a base64 SHA-256 digest");
                    }
                }
            }
            if let Some(x) = m.get("cache") {
                let cp = p.join("cache");
                match &x.value {
                    Value::Bool(_) => {}
                    Value::Str(s) if !s.is_empty() => {}
                    _ if ck.is_ref(x, &cp) => {}
                    _ => ck.bad(x, &cp, "a boolean or a duration"),
                }
            }
            if let Some(x) = m.get("rules") {
                rules(ck, x, &p.join("rules"), RuleScope::Include);
            }
            if let Some(x) = m.get("inputs") {
                inputs(ck, x, &p.join("inputs"));
            }
        }
        _ if ck.is_ref(n, p) => {}
        _ => ck.bad(n, p, "a hash naming one file to include"),
    }
}

/// The `spec:` header: `inputs`, `include`, `component`, `description`.
pub(crate) fn spec(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    ck.keys(m, p, &["inputs", "include", "component", "description"]);
    if let Some(x) = m.get("inputs") {
        let ip = p.join("inputs");
        if let Some(im) = ck.map(x, &ip) {
            for (name, e) in im.iter() {
                input_spec(ck, &e.value, &ip.join(name), false);
            }
        }
    }
    if let Some(x) = m.get("include") {
        let ip = p.join("include");
        if !ck.is_ref(x, &ip) {
            match x.as_seq() {
                Some(items) => {
                    for item in items {
                        include_item(ck, item, &ip, IncludeScope::Spec);
                    }
                }
                None => ck.bad(x, &ip, "an array of include hashes"),
            }
        }
    }
    if let Some(x) = m.get("component") {
        let cp = p.join("component");
        if let Some(items) = x.as_seq() {
            for item in items {
                ck.one_of(item, &cp, &["name", "sha", "version", "reference"]);
            }
            ck.unique(items, &cp);
        } else if !ck.is_ref(x, &cp) {
            ck.bad(x, &cp, "an array of: name, sha, version, reference");
        }
    }
    if let Some(x) = m.get("description") {
        ck.short_string(x, &p.join("description"), 256);
    }
}

/// `run:` steps.
pub(crate) fn run(ck: &mut Ck, n: &Node, p: &P) {
    if ck.is_ref(n, p) {
        return;
    }
    let Some(items) = n.as_seq() else {
        ck.bad(n, p, "an array of steps");
        return;
    };
    for item in items {
        step(ck, item, p);
    }
}

fn step(ck: &mut Ck, n: &Node, p: &P) {
    let Some(m) = ck.map(n, p) else { return };
    let has_script = m.contains_key("script");
    let refs: Vec<&str> = ["step", "func"]
        .into_iter()
        .filter(|k| m.contains_key(k))
        .collect();
    if has_script {
        ck.keys(m, p, &["name", "env", "script"]);
        if let Some(e) = m.entry("step").or(m.entry("func")) {
            ck.error(
                e.key_span,
                p,
                "uses both `script` and a step reference",
                "either `script` or `step`",
            );
        }
    } else {
        ck.keys(m, p, &["name", "env", "inputs", "step", "func"]);
        match refs.len() {
            0 => ck.error(
                n.span,
                p,
                "names neither `step` nor `script`",
                "a `step:` reference or a `script:`",
            ),
            1 => {}
            _ => ck.error(
                n.span,
                p,
                "uses both `step` and `func`",
                "only one of `step` or `func`",
            ),
        }
    }
    ck.require(m, n, p, "name");
    if let Some(x) = m.get("name") {
        let np = p.join("name");
        if let Some(s) = ck.string(x, &np)
            && !is_identifier(s)
        {
            ck.bad(
                x,
                &np,
                "a name of letters, digits and `_`, not starting with a digit",
            );
        }
    }
    if let Some(x) = m.get("script") {
        ck.nonempty_string(x, &p.join("script"));
    }
    if let Some(x) = m.get("env") {
        let ep = p.join("env");
        if let Some(em) = ck.map(x, &ep) {
            for (k, e) in em.iter() {
                if !is_identifier(k) {
                    ck.error(
                        e.key_span,
                        &ep.join(k),
                        "is not a valid variable name",
                        "letters, digits and `_`",
                    );
                }
                ck.string(&e.value, &ep.join(k));
            }
        }
    }
    if let Some(x) = m.get("inputs") {
        let ip = p.join("inputs");
        if let Some(im) = ck.map(x, &ip) {
            for (k, e) in im.iter() {
                if !is_identifier(k) {
                    ck.error(
                        e.key_span,
                        &ip.join(k),
                        "is not a valid input name",
                        "letters, digits and `_`",
                    );
                }
            }
        }
    }
    for key in refs {
        if let Some(x) = m.get(key) {
            step_reference(ck, x, &p.join(key));
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A step reference: a string, `{git: {url, rev, dir, file}}` or
/// `{oci: {registry, repository, tag, dir, file}}`.
fn step_reference(ck: &mut Ck, n: &Node, p: &P) {
    let m = match &n.value {
        Value::Str(_) => return,
        Value::Map(m) => m,
        _ if ck.is_ref(n, p) => return,
        _ => return ck.bad(n, p, "a step name, or a hash with `git:` or `oci:`"),
    };
    let (kind, required, optional): (&str, &[&str], &[&str]) = if m.contains_key("git") {
        ("git", &["url", "rev"], &["dir", "file"])
    } else if m.contains_key("oci") {
        ("oci", &["registry", "repository", "tag"], &["dir", "file"])
    } else {
        ck.error(
            n.span,
            p,
            "is neither a string, `git:` nor `oci:`",
            "a step name, `git:` or `oci:`",
        );
        return;
    };
    ck.keys(m, p, &[kind]);
    let kp = p.join(kind);
    let Some(x) = m.get(kind) else { return };
    let Some(r) = ck.map(x, &kp) else { return };
    let mut all = required.to_vec();
    all.extend_from_slice(optional);
    ck.keys(r, &kp, &all);
    for key in required {
        ck.require(r, x, &kp, key);
    }
    string_keys(ck, r, &kp, &all);
}

/// `workflow:name`: 1 to 255 characters.
pub(crate) fn workflow_name(ck: &mut Ck, n: &Node, p: &P) -> Option<String> {
    ck.nonempty_string(n, p)?;
    ck.short_string(n, p, 255).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_follow_the_schema_pattern() {
        for ok in [
            "group/project",
            "group/sub/project",
            "$FOO",
            "group/$VAR/project",
            "$.",
        ] {
            assert!(is_project_path(ok), "{ok}");
        }
        for bad in ["", "slug#", "/slug", "slug", "slug/"] {
            assert!(!is_project_path(bad), "{bad}");
        }
    }

    #[test]
    fn iso8601_times() {
        assert!(is_iso8601("2021-03-15T08:00:00Z"));
        assert!(is_iso8601("2021-03-15T08:00:00+02:00"));
        assert!(!is_iso8601("2021-13-15T08:00:00Z"));
        assert!(!is_iso8601("yesterday"));
    }
}
