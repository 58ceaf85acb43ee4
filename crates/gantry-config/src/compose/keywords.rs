//! Parsers for the keywords the model has typed fields for: each one
//! validates a node against GitLab's schema and returns the typed value, or
//! `None` after recording why it is invalid.

use super::check::{Ck, P};
use super::duration::parse_duration;
use crate::model::*;
use crate::node::{Map, Node, Value};
use indexmap::IndexMap;

/// `when:` values a job accepts (GitLab `Entry::Job::ALLOWED_WHEN`).
pub(crate) const JOB_WHEN: &[&str] = &["on_success", "on_failure", "always", "manual", "delayed"];
/// `when:` values inside job `rules:`.
pub(crate) const RULE_WHEN: &[&str] = &[
    "on_success",
    "on_failure",
    "always",
    "never",
    "manual",
    "delayed",
];
const PULL_POLICIES: &[&str] = &["always", "never", "if-not-present"];
const RETRY_WHEN: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "stuck_pending_with_matching_runners",
    "stuck_pending_no_matching_runners",
    "no_updates_running",
    "no_updates_canceling",
    "runner_system_failure",
    "runner_configuration_error",
    "runner_external_dependency_failure",
    "runner_interrupted",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "server_timeout_running",
    "server_timeout_canceling",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
];
/// GitLab's `ci_needs_size_limit` default.
pub(crate) const MAX_NEEDS: usize = 50;
/// GitLab's limit on `cache:` entries per job.
const MAX_CACHES: usize = 4;
/// Jobs one `parallel:` may create.
const MAX_PARALLEL: usize = 200;
/// `start_in` limit: one week.
const MAX_START_IN: u64 = 7 * 86_400;
/// Job `timeout` limit: one month (ActiveSupport's 1.month).
const MAX_TIMEOUT: u64 = 2_629_746;

/// How deep `!reference` may nest script arrays (GitLab `Commands`).
const MAX_SCRIPT_NESTING: usize = 10;

/// `script` (required: a non-empty string or array) or `before_script` /
/// `after_script` / hooks (`optional`: may be empty). Arrays nested by
/// `!reference` are flattened, up to 10 levels as GitLab does.
pub(crate) fn script(ck: &mut Ck, n: &Node, p: &P, optional: bool) -> Option<Vec<String>> {
    let expected = if optional {
        "a string or an array of strings"
    } else {
        "a non-empty string or a non-empty array of strings"
    };
    match &n.value {
        // An empty optional script (`before_script: ""`) clears the default.
        Value::Str(s) if s.is_empty() && optional => Some(Vec::new()),
        Value::Str(s) if !s.is_empty() => Some(vec![s.clone()]),
        Value::Seq(items) if optional || !items.is_empty() => {
            let mut out = Vec::with_capacity(items.len());
            flatten_lines(ck, items, p, 1, &mut out).then_some(out)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, expected);
            None
        }
    }
}

/// Appends the strings of a (nested) script array; false on any error.
fn flatten_lines(ck: &mut Ck, items: &[Node], p: &P, depth: usize, out: &mut Vec<String>) -> bool {
    let mut ok = true;
    for item in items {
        match &item.value {
            Value::Str(s) => out.push(s.clone()),
            Value::Seq(inner) if depth < MAX_SCRIPT_NESTING => {
                ok &= flatten_lines(ck, inner, p, depth + 1, out)
            }
            Value::Seq(_) => {
                ck.bad(
                    item,
                    p,
                    "a string (script arrays nest at most 10 levels deep)",
                );
                ok = false;
            }
            _ if ck.is_ref(item, p) => ok = false,
            _ => {
                ck.bad(item, p, "a string or an array of strings");
                ok = false;
            }
        }
    }
    ok
}

/// Where a `variables:` block is: what its hash form may contain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarScope {
    /// Top level: `{value, description, options, expand}`.
    Global,
    /// Job or service: `{value, expand}`.
    Job,
    /// `rules:variables`: plain values only.
    Rules,
}

/// A `variables:` block. Plain values (strings, numbers, booleans) become
/// strings as written.
pub(crate) fn variables(ck: &mut Ck, n: &Node, p: &P, scope: VarScope) -> Option<Vec<Variable>> {
    let m = ck.map(n, p)?;
    let mut out = Vec::with_capacity(m.len());
    for (name, e) in m.iter() {
        let vp = p.join(name);
        if name.is_empty() {
            ck.error(
                e.key_span,
                p,
                "has a variable with an empty name",
                "a variable name",
            );
            continue;
        }
        let v = &e.value;
        if let Some(s) = v.scalar_string() {
            out.push(Variable::new(name, s));
            continue;
        }
        if ck.is_ref(v, &vp) {
            continue;
        }
        let Value::Map(h) = &v.value else {
            let expected = match scope {
                VarScope::Rules => "a string, a number or a boolean",
                VarScope::Job => {
                    "a string, a number, a boolean or a hash with `value` and `expand`"
                }
                VarScope::Global => {
                    "a string, a number, a boolean or a hash with `value`, `description`, `options` and `expand`"
                }
            };
            ck.bad(v, &vp, expected);
            continue;
        };
        let allowed: &[&str] = match scope {
            VarScope::Global => &["value", "description", "options", "expand"],
            VarScope::Job => &["value", "expand"],
            VarScope::Rules => {
                ck.bad(v, &vp, "a string, a number or a boolean");
                continue;
            }
        };
        ck.keys(h, &vp, allowed);
        let mut var = Variable::new(name, "");
        let mut has_value = false;
        if let Some(x) = h.get("value")
            && let Some(s) = ck.string(x, &vp.join("value"))
        {
            var.value = s.to_string();
            has_value = true;
        }
        if let Some(x) = h.get("description").filter(|_| scope == VarScope::Global) {
            var.description = ck.string(x, &vp.join("description")).map(str::to_string);
        }
        if let Some(x) = h.get("expand")
            && let Some(b) = ck.bool(x, &vp.join("expand"))
        {
            var.expand = b;
        }
        if let Some(x) = h.get("options").filter(|_| scope == VarScope::Global) {
            let op = vp.join("options");
            if let Some(opts) = ck.strings(x, &op, 1) {
                if let Some(items) = x.as_seq() {
                    ck.unique(items, &op);
                }
                if !has_value || !opts.contains(&var.value) {
                    let span = h.entry("value").map(|e| e.value.span).unwrap_or(v.span);
                    ck.error(
                        span,
                        &vp.join("value"),
                        "must be one of its `options`",
                        &opts.join(", "),
                    );
                }
                var.options = opts;
            }
        }
        out.push(var);
    }
    Some(out)
}

/// `image:` as a name or a hash.
pub(crate) fn image(ck: &mut Ck, n: &Node, p: &P) -> Option<Image> {
    match &n.value {
        Value::Str(s) if !s.is_empty() => Some(Image {
            name: s.clone(),
            entrypoint: None,
            pull_policy: Vec::new(),
            docker: None,
        }),
        Value::Map(m) => {
            ck.keys(
                m,
                p,
                &["name", "entrypoint", "docker", "kubernetes", "pull_policy"],
            );
            ck.require(m, n, p, "name");
            let name = m
                .get("name")
                .and_then(|x| ck.nonempty_string(x, &p.join("name")));
            let entrypoint = m
                .get("entrypoint")
                .and_then(|x| ck.strings(x, &p.join("entrypoint"), 1));
            let pull_policy = m
                .get("pull_policy")
                .and_then(|x| pull_policy(ck, x, &p.join("pull_policy")));
            let docker = m
                .get("docker")
                .and_then(|x| executor_opts(ck, x, &p.join("docker"), false));
            if let Some(x) = m.get("kubernetes") {
                executor_opts(ck, x, &p.join("kubernetes"), true);
            }
            Some(Image {
                name: name?.to_string(),
                entrypoint,
                pull_policy: pull_policy.unwrap_or_default(),
                docker,
            })
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "an image name or a hash with `name`");
            None
        }
    }
}

/// `pull_policy`: one policy or a non-empty array of distinct ones.
fn pull_policy(ck: &mut Ck, n: &Node, p: &P) -> Option<Vec<String>> {
    match &n.value {
        Value::Str(_) => ck.one_of(n, p, PULL_POLICIES).map(|s| vec![s.to_string()]),
        Value::Seq(items) if !items.is_empty() => {
            ck.unique(items, p);
            let mut out = Vec::new();
            for item in items {
                if let Some(s) = ck.one_of(item, p, PULL_POLICIES) {
                    out.push(s.to_string());
                }
            }
            (out.len() == items.len()).then_some(out)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(
                n,
                p,
                "always, never or if-not-present, or a non-empty array of them",
            );
            None
        }
    }
}

/// `docker: {platform, user}` / `kubernetes: {user}` of an image or service.
fn executor_opts(ck: &mut Ck, n: &Node, p: &P, kubernetes: bool) -> Option<Json> {
    let m = ck.map(n, p)?;
    if kubernetes {
        ck.keys(m, p, &["user"]);
    } else {
        ck.keys(m, p, &["platform", "user"]);
        if let Some(x) = m.get("platform") {
            ck.nonempty_string(x, &p.join("platform"));
        }
    }
    if let Some(x) = m.get("user") {
        let up = p.join("user");
        match &x.value {
            Value::Str(s) if !s.is_empty() && s.len() <= 255 => {}
            Value::Int(_) if kubernetes => {}
            _ if ck.is_ref(x, &up) => {}
            _ => ck.bad(x, &up, "a non-empty string of at most 255 characters"),
        }
    }
    Some(n.to_json())
}

/// `services:`: names or hashes.
pub(crate) fn services(ck: &mut Ck, n: &Node, p: &P) -> Option<Vec<Service>> {
    if ck.is_ref(n, p) {
        return None;
    }
    let Some(items) = n.as_seq() else {
        ck.bad(n, p, "an array of service names or hashes");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(s) = service(ck, item, p) {
            out.push(s);
        }
    }
    (out.len() == items.len()).then_some(out)
}

fn service(ck: &mut Ck, n: &Node, p: &P) -> Option<Service> {
    let mut svc = Service {
        name: String::new(),
        alias: None,
        entrypoint: None,
        command: None,
        variables: Vec::new(),
        pull_policy: Vec::new(),
        docker: None,
    };
    match &n.value {
        Value::Str(s) if !s.is_empty() => {
            svc.name = s.clone();
            Some(svc)
        }
        Value::Map(m) => {
            ck.keys(
                m,
                p,
                &[
                    "name",
                    "entrypoint",
                    "docker",
                    "kubernetes",
                    "pull_policy",
                    "command",
                    "alias",
                    "variables",
                ],
            );
            ck.require(m, n, p, "name");
            let name = m
                .get("name")
                .and_then(|x| ck.nonempty_string(x, &p.join("name")));
            svc.entrypoint = m
                .get("entrypoint")
                .and_then(|x| ck.strings(x, &p.join("entrypoint"), 1));
            svc.command = m
                .get("command")
                .and_then(|x| script(ck, x, &p.join("command"), false));
            svc.alias = m
                .get("alias")
                .and_then(|x| ck.nonempty_string(x, &p.join("alias")))
                .map(str::to_string);
            svc.pull_policy = m
                .get("pull_policy")
                .and_then(|x| pull_policy(ck, x, &p.join("pull_policy")))
                .unwrap_or_default();
            svc.docker = m
                .get("docker")
                .and_then(|x| executor_opts(ck, x, &p.join("docker"), false));
            if let Some(x) = m.get("kubernetes") {
                executor_opts(ck, x, &p.join("kubernetes"), true);
            }
            svc.variables = m
                .get("variables")
                .and_then(|x| variables(ck, x, &p.join("variables"), VarScope::Job))
                .unwrap_or_default();
            svc.name = name?.to_string();
            Some(svc)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "a service name or a hash with `name`");
            None
        }
    }
}

/// `cache:`: one hash or an array of at most four.
pub(crate) fn cache(ck: &mut Ck, n: &Node, p: &P) -> Option<Vec<Cache>> {
    match &n.value {
        Value::Map(_) => cache_item(ck, n, p).map(|c| vec![c]),
        Value::Seq(items) => {
            if items.len() > MAX_CACHES {
                ck.error(
                    n.span,
                    p,
                    &format!(
                        "defines {} caches; no more than {MAX_CACHES} caches can be created",
                        items.len()
                    ),
                    "at most 4 caches",
                );
            }
            let out: Vec<Cache> = items.iter().filter_map(|i| cache_item(ck, i, p)).collect();
            (out.len() == items.len()).then_some(out)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "a hash or an array of hashes");
            None
        }
    }
}

fn cache_item(ck: &mut Ck, n: &Node, p: &P) -> Option<Cache> {
    let m = ck.map(n, p)?;
    ck.keys(
        m,
        p,
        &[
            "key",
            "paths",
            "policy",
            "unprotect",
            "untracked",
            "when",
            "fallback_keys",
        ],
    );
    let mut c = Cache::default();
    let before = ck.diags.len();
    if let Some(x) = m.get("key")
        && let Some(k) = cache_key(ck, x, &p.join("key"))
    {
        c.key = k;
    }
    if let Some(x) = m.get("paths") {
        c.paths = ck.strings(x, &p.join("paths"), 0).unwrap_or_default();
    }
    if let Some(x) = m.get("policy") {
        let pp = p.join("policy");
        match x.as_str() {
            Some("pull") => c.policy = CachePolicy::Pull,
            Some("push") => c.policy = CachePolicy::Push,
            Some("pull-push") => c.policy = CachePolicy::PullPush,
            // A variable chooses the policy when the job runs; the runner
            // falls back to pull-push when it is not one of the three.
            Some(s) if is_variable_ref(s) => c.policy = CachePolicy::PullPush,
            _ if ck.is_ref(x, &pp) => {}
            _ => ck.bad(x, &pp, "pull, push, pull-push or a $VARIABLE"),
        }
    }
    if let Some(x) = m.get("unprotect") {
        c.unprotect = ck.bool(x, &p.join("unprotect")).unwrap_or_default();
    }
    if let Some(x) = m.get("untracked") {
        c.untracked = ck.bool(x, &p.join("untracked")).unwrap_or_default();
    }
    if let Some(x) = m.get("when") {
        c.when = artifacts_when(ck, x, &p.join("when")).unwrap_or_default();
    }
    if let Some(x) = m.get("fallback_keys") {
        let fp = p.join("fallback_keys");
        if let Some(keys) = ck.strings(x, &fp, 0) {
            if keys.len() > 5 {
                ck.bad(x, &fp, "an array of at most 5 keys");
            }
            c.fallback_keys = keys;
        }
    }
    (ck.diags.len() == before).then_some(c)
}

/// `$NAME` with 1 to 255 word characters.
fn is_variable_ref(s: &str) -> bool {
    s.strip_prefix('$').is_some_and(|v| {
        !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn cache_key(ck: &mut Ck, n: &Node, p: &P) -> Option<CacheKey> {
    match &n.value {
        Value::Str(s) => {
            // Schema pattern `^[^/]*[^./][^/]*$`: no `/`, not only dots.
            if s.contains('/') || s.chars().all(|c| c == '.') {
                ck.bad(n, p, "a key without `/` that is not empty, `.` or `..`");
                return None;
            }
            Some(CacheKey::Literal(s.clone()))
        }
        Value::Map(m) => {
            ck.keys(m, p, &["files", "files_commits", "prefix"]);
            // At most 2 files as GitLab ships (10 only behind the
            // `ci_cache_key_files_limit` feature flag, off by default).
            let files = m
                .get("files")
                .and_then(|x| limited_strings(ck, x, &p.join("files"), 2));
            // `files_commits` keys on the files' last commits, which is what
            // the model's `Files` key computes.
            let commits = m
                .get("files_commits")
                .and_then(|x| limited_strings(ck, x, &p.join("files_commits"), 2));
            let prefix = m
                .get("prefix")
                .and_then(|x| ck.string(x, &p.join("prefix")))
                .map(str::to_string);
            if !m.contains_key("files") && !m.contains_key("files_commits") {
                ck.error(
                    n.span,
                    p,
                    "is missing the required key `files`",
                    "a `files:` array",
                );
                return None;
            }
            let files = files.or(commits)?;
            Some(CacheKey::Files { files, prefix })
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "a string or a hash with `files` and `prefix`");
            None
        }
    }
}

/// A non-empty array of at most `max` strings.
fn limited_strings(ck: &mut Ck, n: &Node, p: &P, max: usize) -> Option<Vec<String>> {
    let v = ck.strings(n, p, 1)?;
    if v.len() > max {
        ck.bad(n, p, &format!("an array of 1 to {max} strings"));
        return None;
    }
    Some(v)
}

fn artifacts_when(ck: &mut Ck, n: &Node, p: &P) -> Option<ArtifactsWhen> {
    Some(
        match ck.one_of(n, p, &["on_success", "on_failure", "always"])? {
            "on_failure" => ArtifactsWhen::OnFailure,
            "always" => ArtifactsWhen::Always,
            _ => ArtifactsWhen::OnSuccess,
        },
    )
}

/// Report kinds that take a path or a list of paths.
const REPORT_LISTS: &[&str] = &[
    "api_fuzzing",
    "coverage_fuzzing",
    "codequality",
    "dotenv",
    "lsif",
    "sast",
    "dependency_scanning",
    "container_scanning",
    "dast",
    "license_management",
    "license_scanning",
    "requirements",
    "secret_detection",
    "metrics",
    "terraform",
    "cyclonedx",
    "sarif",
    "load_performance",
    "repository_xray",
];
/// Report kinds documented with one path (they accept a list too).
const REPORT_SINGLE: &[&str] = &["accessibility", "annotations", "browser_performance"];

/// `artifacts:`. An empty value means "no artifacts".
pub(crate) fn artifacts(ck: &mut Ck, n: &Node, p: &P) -> Option<Artifacts> {
    if n.is_null() {
        return Some(Artifacts::default());
    }
    let m = ck.map(n, p)?;
    ck.keys(
        m,
        p,
        &[
            "paths",
            "exclude",
            "expose_as",
            "name",
            "untracked",
            "when",
            "access",
            "public",
            "expire_in",
            "reports",
        ],
    );
    let mut a = Artifacts::default();
    // `Entry::Artifacts` validates `array_of_strings`: an empty list is
    // accepted (the editor schema's `minItems` is not the backend's rule).
    if let Some(x) = m.get("paths") {
        a.paths = ck.strings(x, &p.join("paths"), 0).unwrap_or_default();
    }
    if let Some(x) = m.get("exclude") {
        a.exclude = ck.strings(x, &p.join("exclude"), 0).unwrap_or_default();
    }
    if let Some(x) = m.get("expose_as") {
        a.expose_as = ck.string(x, &p.join("expose_as")).map(str::to_string);
    }
    if let Some(x) = m.get("name") {
        a.name = ck.string(x, &p.join("name")).map(str::to_string);
    }
    if let Some(x) = m.get("untracked") {
        a.untracked = ck.bool(x, &p.join("untracked")).unwrap_or_default();
    }
    if let Some(x) = m.get("when") {
        a.when = artifacts_when(ck, x, &p.join("when")).unwrap_or_default();
    }
    if let Some(x) = m.get("expire_in") {
        let ep = p.join("expire_in");
        if let Some(s) = ck.string(x, &ep) {
            if s != "never" && parse_duration(s).is_none() {
                ck.bad(x, &ep, "a duration such as \"30 days\", or \"never\"");
            }
            a.expire_in = Some(s.to_string());
        }
    }
    if let Some(x) = m.get("access")
        && ck
            .one_of(
                x,
                &p.join("access"),
                &["none", "developer", "maintainer", "all"],
            )
            .is_some()
    {
        a.extra.insert("access".into(), x.to_json());
    }
    if let Some(x) = m.get("public") {
        if ck.bool(x, &p.join("public")).is_some() {
            a.extra.insert("public".into(), x.to_json());
        }
        if let Some(e) = m.entry("access") {
            ck.error(
                e.key_span,
                p,
                "cannot use both `access` and `public`",
                "only one of `access` or `public`",
            );
        }
    }
    if let Some(x) = m.get("reports") {
        reports(ck, x, &p.join("reports"), &mut a);
    }
    Some(a)
}

fn reports(ck: &mut Ck, n: &Node, p: &P, a: &mut Artifacts) {
    let Some(m) = ck.map(n, p) else { return };
    let mut allowed: Vec<&str> = REPORT_LISTS.to_vec();
    allowed.extend_from_slice(REPORT_SINGLE);
    allowed.extend_from_slice(&["junit", "coverage_report"]);
    ck.keys(m, p, &allowed);
    for (kind, e) in m.iter() {
        let kp = p.join(kind);
        let x = &e.value;
        // GitLab's `Entry::Reports` validates every path report with
        // `array_of_strings_or_string`, an empty array included.
        let paths =
            if REPORT_LISTS.contains(&kind) || REPORT_SINGLE.contains(&kind) || kind == "junit" {
                ck.string_or_strings(x, &kp, 0)
            } else if kind == "coverage_report" {
                coverage_report(ck, x, &kp, a)
            } else {
                None
            };
        if let Some(paths) = paths {
            a.reports.insert(kind.to_string(), paths);
        }
    }
}

/// `coverage_report: {coverage_format, path}`: the path goes into
/// `reports`, the whole hash into `extra`.
fn coverage_report(ck: &mut Ck, n: &Node, p: &P, a: &mut Artifacts) -> Option<Vec<String>> {
    if n.is_null() {
        return None;
    }
    let m = ck.map(n, p)?;
    ck.keys(m, p, &["coverage_format", "path"]);
    if let Some(x) = m.get("coverage_format") {
        ck.one_of(x, &p.join("coverage_format"), &["cobertura", "jacoco"]);
    }
    a.extra.insert("coverage_report".into(), n.to_json());
    let path = m
        .get("path")
        .and_then(|x| ck.nonempty_string(x, &p.join("path")))?;
    Some(vec![path.to_string()])
}

/// `retry:`: 0..2 or `{max, when, exit_codes}`.
pub(crate) fn retry(ck: &mut Ck, n: &Node, p: &P) -> Option<Retry> {
    match &n.value {
        Value::Int(_) => ck.int_in(n, p, 0, 2).map(|max| Retry {
            max: max as u32,
            ..Retry::default()
        }),
        Value::Map(m) => {
            ck.keys(m, p, &["max", "when", "exit_codes"]);
            let mut r = Retry::default();
            let before = ck.diags.len();
            if let Some(x) = m.get("max") {
                r.max = ck.int_in(x, &p.join("max"), 0, 2).unwrap_or_default() as u32;
            }
            if let Some(x) = m.get("when") {
                let wp = p.join("when");
                match &x.value {
                    Value::Seq(items) => {
                        for item in items {
                            if let Some(s) = ck.one_of(item, &wp, RETRY_WHEN) {
                                r.when.push(s.to_string());
                            }
                        }
                    }
                    _ => {
                        if let Some(s) = ck.one_of(x, &wp, RETRY_WHEN) {
                            r.when.push(s.to_string());
                        }
                    }
                }
            }
            if let Some(x) = m.get("exit_codes") {
                r.exit_codes = exit_codes(ck, x, &p.join("exit_codes")).unwrap_or_default();
            }
            (ck.diags.len() == before).then_some(r)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(
                n,
                p,
                "an integer from 0 to 2, or a hash with `max`, `when` and `exit_codes`",
            );
            None
        }
    }
}

/// An exit code or a non-empty array of distinct ones.
fn exit_codes(ck: &mut Ck, n: &Node, p: &P) -> Option<Vec<i32>> {
    let expected = "an integer or a non-empty array of distinct integers";
    match &n.value {
        Value::Int(i) => i32::try_from(*i).ok().map(|c| vec![c]).or_else(|| {
            ck.bad(n, p, expected);
            None
        }),
        Value::Seq(items) if !items.is_empty() => {
            ck.unique(items, p);
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    Some(c) => out.push(c),
                    None => ck.bad(item, p, "an integer"),
                }
            }
            (out.len() == items.len()).then_some(out)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, expected);
            None
        }
    }
}

/// `allow_failure:` `true|false|{exit_codes}`.
pub(crate) fn allow_failure(ck: &mut Ck, n: &Node, p: &P) -> Option<AllowFailure> {
    match &n.value {
        Value::Bool(b) => Some(AllowFailure::Bool(*b)),
        Value::Map(m) => {
            ck.keys(m, p, &["exit_codes"]);
            if !ck.require(m, n, p, "exit_codes") {
                return None;
            }
            let codes = exit_codes(ck, m.get("exit_codes")?, &p.join("exit_codes"))?;
            Some(AllowFailure::ExitCodes { exit_codes: codes })
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "a boolean or a hash with `exit_codes`");
            None
        }
    }
}

/// `parallel:`: 1..200 or `{matrix: [...]}` creating at most 200 jobs.
pub(crate) fn parallel(ck: &mut Ck, n: &Node, p: &P) -> Option<Parallel> {
    match &n.value {
        Value::Int(_) => ck
            .int_in(n, p, 1, MAX_PARALLEL as i64)
            .map(|c| Parallel::Count(c as u32)),
        Value::Map(m) => {
            let matrix = parallel_matrix(ck, n, m, p)?;
            let jobs: usize = matrix
                .iter()
                .map(|e| e.values().map(|v| v.len().max(1)).product::<usize>())
                .sum();
            if jobs > MAX_PARALLEL {
                ck.error(
                    n.span,
                    &p.join("matrix"),
                    &format!("generates {jobs} jobs; the maximum is {MAX_PARALLEL}"),
                    "at most 200 jobs",
                );
                return None;
            }
            Some(Parallel::Matrix(matrix))
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "an integer from 1 to 200, or a hash with `matrix`");
            None
        }
    }
}

/// The `{matrix: [{VAR: value | [values]}]}` hash of `parallel` and of
/// `needs:parallel`.
fn parallel_matrix(ck: &mut Ck, n: &Node, m: &Map, p: &P) -> Option<Vec<MatrixEntry>> {
    ck.keys(m, p, &["matrix"]);
    if !ck.require(m, n, p, "matrix") {
        return None;
    }
    let mp = p.join("matrix");
    let x = m.get("matrix")?;
    if ck.is_ref(x, &mp) {
        return None;
    }
    let Some(entries) = x.as_seq() else {
        ck.bad(x, &mp, "an array of hashes of variables to values");
        return None;
    };
    if entries.len() > MAX_PARALLEL {
        ck.bad(x, &mp, "an array of at most 200 entries");
        return None;
    }
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(em) = ck.map(entry, &mp) else {
            continue;
        };
        let mut vars: MatrixEntry = IndexMap::new();
        for (name, e) in em.iter() {
            let vp = mp.join(name);
            let v = &e.value;
            let values = match &v.value {
                Value::Seq(items) => {
                    let mut vals = Vec::with_capacity(items.len());
                    for item in items {
                        match item.scalar_string() {
                            Some(s) => vals.push(s),
                            None if ck.is_ref(item, &vp) => {}
                            None => ck.bad(item, &vp, "a string or a number"),
                        }
                    }
                    vals
                }
                Value::Str(_) | Value::Int(_) | Value::Float(_) => {
                    v.scalar_string().into_iter().collect()
                }
                _ if ck.is_ref(v, &vp) => continue,
                _ => {
                    ck.bad(v, &vp, "a string, a number or an array of them");
                    continue;
                }
            };
            vars.insert(name.to_string(), values);
        }
        out.push(vars);
    }
    (out.len() == entries.len()).then_some(out)
}

/// `environment:` as a name or a hash.
pub(crate) fn environment(ck: &mut Ck, n: &Node, p: &P) -> Option<Environment> {
    let mut env = Environment {
        name: String::new(),
        url: None,
        action: None,
        on_stop: None,
        auto_stop_in: None,
        deployment_tier: None,
        kubernetes: None,
    };
    match &n.value {
        Value::Str(s) if !s.is_empty() => {
            env.name = s.clone();
            Some(env)
        }
        Value::Map(m) => {
            ck.keys(
                m,
                p,
                &[
                    "name",
                    "url",
                    "on_stop",
                    "action",
                    "auto_stop_in",
                    "kubernetes",
                    "deployment_tier",
                ],
            );
            ck.require(m, n, p, "name");
            let name = m
                .get("name")
                .and_then(|x| ck.nonempty_string(x, &p.join("name")));
            if let Some(x) = m.get("url") {
                let up = p.join("url");
                if let Some(s) = ck.string(x, &up) {
                    let ok = s.starts_with("http://") && s.len() > 7
                        || s.starts_with("https://") && s.len() > 8
                        || s.strip_prefix('$')
                            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_alphabetic()));
                    if ok {
                        env.url = Some(s.to_string());
                    } else {
                        ck.bad(x, &up, "an http(s):// URL or a $VARIABLE");
                    }
                }
            }
            env.on_stop = m
                .get("on_stop")
                .and_then(|x| ck.string(x, &p.join("on_stop")))
                .map(str::to_string);
            env.action = m
                .get("action")
                .and_then(|x| {
                    ck.one_of(
                        x,
                        &p.join("action"),
                        &["start", "prepare", "stop", "verify", "access"],
                    )
                })
                .map(str::to_string);
            if let Some(x) = m.get("auto_stop_in") {
                let ap = p.join("auto_stop_in");
                if let Some(s) = ck.string(x, &ap) {
                    if s != "never" && parse_duration(s).is_none() {
                        ck.bad(x, &ap, "a duration such as \"1 day\", or \"never\"");
                    }
                    env.auto_stop_in = Some(s.to_string());
                }
            }
            env.deployment_tier = m
                .get("deployment_tier")
                .and_then(|x| {
                    ck.one_of(
                        x,
                        &p.join("deployment_tier"),
                        &["production", "staging", "testing", "development", "other"],
                    )
                })
                .map(str::to_string);
            if let Some(x) = m.get("kubernetes") {
                env.kubernetes = environment_kubernetes(ck, x, &p.join("kubernetes"));
            }
            env.name = name?.to_string();
            Some(env)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "an environment name or a hash with `name`");
            None
        }
    }
}

fn environment_kubernetes(ck: &mut Ck, n: &Node, p: &P) -> Option<Json> {
    let m = ck.map(n, p)?;
    ck.keys(
        m,
        p,
        &[
            "agent",
            "namespace",
            "flux_resource_path",
            "managed_resources",
            "dashboard",
        ],
    );
    if let Some(x) = m.get("agent") {
        ck.string(x, &p.join("agent"));
    }
    if let Some(x) = m.get("namespace") {
        ck.nonempty_string(x, &p.join("namespace"));
    }
    if let Some(x) = m.get("flux_resource_path") {
        ck.string(x, &p.join("flux_resource_path"));
    }
    if let Some(x) = m.get("managed_resources") {
        let mp = p.join("managed_resources");
        if let Some(mm) = ck.map(x, &mp) {
            ck.keys(mm, &mp, &["enabled"]);
            if let Some(b) = mm.get("enabled") {
                ck.bool(b, &mp.join("enabled"));
            }
        }
    }
    if let Some(x) = m.get("dashboard") {
        let dp = p.join("dashboard");
        if let Some(dm) = ck.map(x, &dp) {
            ck.keys(dm, &dp, &["namespace", "flux_resource_path"]);
            if let Some(v) = dm.get("namespace") {
                ck.nonempty_string(v, &dp.join("namespace"));
            }
            if let Some(v) = dm.get("flux_resource_path") {
                ck.string(v, &dp.join("flux_resource_path"));
            }
        }
    }
    Some(n.to_json())
}

/// `needs:` of a job (`in_rules` = `rules:needs`, which only names jobs of
/// this pipeline).
pub(crate) fn needs(ck: &mut Ck, n: &Node, p: &P, in_rules: bool) -> Option<Vec<Need>> {
    if ck.is_ref(n, p) {
        return None;
    }
    let Some(items) = n.as_seq() else {
        ck.bad(n, p, "an array of job names or hashes with `job`");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        // An array item comes from `!reference`: its entries are needs.
        if let Value::Seq(inner) = &item.value {
            for x in inner {
                match need(ck, x, p, in_rules) {
                    Some(nd) => out.push(nd),
                    None => ok = false,
                }
            }
            continue;
        }
        match need(ck, item, p, in_rules) {
            Some(nd) => out.push(nd),
            None => ok = false,
        }
    }
    if out.len() > MAX_NEEDS {
        ck.error(
            n.span,
            p,
            &format!(
                "has {} entries; a job can need at most {MAX_NEEDS} jobs",
                out.len()
            ),
            "at most 50 needs",
        );
    }
    ok.then_some(out)
}

fn need(ck: &mut Ck, n: &Node, p: &P, in_rules: bool) -> Option<Need> {
    let mut nd = Need {
        job: String::new(),
        artifacts: true,
        optional: false,
        matrix: None,
        pipeline: None,
        project: None,
        git_ref: None,
        span: Some(n.span),
    };
    match &n.value {
        Value::Str(s) if !s.is_empty() => {
            nd.job = s.clone();
            Some(nd)
        }
        Value::Map(m) => {
            let allowed: &[&str] = if in_rules {
                &["job", "artifacts", "optional"]
            } else if m.contains_key("pipeline") {
                &["pipeline", "job", "artifacts", "optional", "parallel"]
            } else if m.contains_key("project") {
                &["job", "project", "ref", "artifacts", "parallel"]
            } else {
                &["job", "artifacts", "optional", "parallel"]
            };
            ck.keys(m, p, allowed);
            let before = ck.diags.len();
            ck.require(m, n, p, "job");
            if let Some(x) = m.get("job")
                && let Some(s) = ck.nonempty_string(x, &p.join("job"))
            {
                nd.job = s.to_string();
            }
            if let Some(x) = m.get("artifacts") {
                nd.artifacts = ck.bool(x, &p.join("artifacts")).unwrap_or(true);
            }
            if let Some(x) = m.get("optional") {
                nd.optional = ck.bool(x, &p.join("optional")).unwrap_or_default();
            }
            if !in_rules {
                if let Some(x) = m.get("pipeline") {
                    nd.pipeline = ck.string(x, &p.join("pipeline")).map(str::to_string);
                }
                if let Some(x) = m.get("project") {
                    nd.project = ck.string(x, &p.join("project")).map(str::to_string);
                    ck.require(m, n, p, "ref");
                }
                if let Some(x) = m.get("ref") {
                    nd.git_ref = ck.string(x, &p.join("ref")).map(str::to_string);
                }
                if let Some(x) = m.get("parallel") {
                    let pp = p.join("parallel");
                    if let Some(pm) = ck.map(x, &pp) {
                        nd.matrix = parallel_matrix(ck, x, pm, &pp);
                    }
                }
            }
            (ck.diags.len() == before).then_some(nd)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "a job name or a hash with `job`");
            None
        }
    }
}

/// Where a `rules:` list is: it decides the keys and `when` values allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleScope {
    Job,
    Workflow,
    Include,
}

/// `rules:`. `null` means no rules. Nested arrays (from `!reference`) are
/// flattened one level.
pub(crate) fn rules(ck: &mut Ck, n: &Node, p: &P, scope: RuleScope) -> Option<Vec<Rule>> {
    if n.is_null() || ck.is_ref(n, p) {
        return None;
    }
    let Some(items) = n.as_seq() else {
        ck.bad(n, p, "an array of rules (hashes)");
        return None;
    };
    // `Entry::Rules` validates `presence`: an empty list is an error.
    if items.is_empty() && scope != RuleScope::Include {
        ck.error(
            n.span,
            p,
            "config can't be blank",
            "at least one rule (or no `rules:` at all)",
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    flatten_rules(ck, items, p, scope, 1, &mut out);
    Some(out)
}

/// GitLab flattens rules nested by `!reference` up to 10 levels deep.
fn flatten_rules(
    ck: &mut Ck,
    items: &[Node],
    p: &P,
    scope: RuleScope,
    depth: usize,
    out: &mut Vec<Rule>,
) {
    for item in items {
        match &item.value {
            Value::Seq(inner) if depth < 10 => flatten_rules(ck, inner, p, scope, depth + 1, out),
            Value::Seq(_) => ck.bad(item, p, "rules nested at most 10 levels deep"),
            _ => out.extend(rule(ck, item, p, scope)),
        }
    }
}

fn rule(ck: &mut Ck, n: &Node, p: &P, scope: RuleScope) -> Option<Rule> {
    let m = ck.map(n, p)?;
    let (allowed, whens): (&[&str], &[&str]) = match scope {
        RuleScope::Job => (
            &[
                "if",
                "changes",
                "exists",
                "variables",
                "when",
                "start_in",
                "allow_failure",
                "needs",
                "interruptible",
            ],
            RULE_WHEN,
        ),
        RuleScope::Workflow => (
            &[
                "if",
                "changes",
                "exists",
                "variables",
                "when",
                "auto_cancel",
            ],
            &["always", "never"],
        ),
        RuleScope::Include => (&["if", "changes", "exists", "when"], &["always", "never"]),
    };
    ck.keys(m, p, allowed);
    let mut r = Rule {
        span: Some(n.span),
        ..Rule::default()
    };
    if let Some(x) = m.get("if") {
        r.if_expr = expression(ck, x, &p.join("if"));
    }
    if let Some(x) = m.get("changes") {
        r.changes = changes(ck, x, &p.join("changes"));
    }
    if let Some(x) = m.get("exists") {
        r.exists = exists(ck, x, &p.join("exists"));
    }
    if let Some(x) = m.get("when") {
        // include rules accept an empty `when`.
        if !(scope == RuleScope::Include && x.is_null()) {
            r.when = ck.one_of(x, &p.join("when"), whens).and_then(When::parse);
        }
    }
    if scope != RuleScope::Include
        && let Some(x) = m.get("variables")
    {
        r.variables = variables(ck, x, &p.join("variables"), VarScope::Rules).unwrap_or_default();
    }
    if scope == RuleScope::Workflow
        && let Some(x) = m.get("auto_cancel")
    {
        r.auto_cancel = auto_cancel(ck, x, &p.join("auto_cancel"));
    }
    if scope == RuleScope::Job {
        if let Some(x) = m.get("start_in") {
            r.start_in = start_in(ck, x, &p.join("start_in"));
        }
        if let Some(x) = m.get("allow_failure") {
            r.allow_failure = ck.bool(x, &p.join("allow_failure")).map(AllowFailure::Bool);
        }
        if let Some(x) = m.get("needs") {
            r.needs = needs(ck, x, &p.join("needs"), true);
        }
        if let Some(x) = m.get("interruptible") {
            r.interruptible = ck.bool(x, &p.join("interruptible"));
        }
        delayed_pair(ck, m, n, p, r.when == Some(When::Delayed));
    }
    Some(r)
}

/// A CI expression (`rules:if`): a string GitLab's expression parser accepts.
pub(crate) fn expression(ck: &mut Ck, n: &Node, p: &P) -> Option<String> {
    let s = ck.string(n, p)?;
    check_expression(ck, n, p, s);
    Some(s.to_string())
}

fn check_expression(ck: &mut Ck, n: &Node, p: &P, src: &str) {
    if let Err(e) = crate::expr::Expression::parse(src) {
        ck.error(
            n.span,
            p,
            &format!("is an invalid expression: {}", e.message),
            "an expression such as `$CI_COMMIT_BRANCH == \"main\"`",
        );
    }
}

/// `when: delayed` needs `start_in`, and `start_in` needs `when: delayed`.
pub(crate) fn delayed_pair(ck: &mut Ck, m: &Map, n: &Node, p: &P, delayed: bool) {
    match (delayed, m.entry("start_in")) {
        (true, None) => ck.error(
            m.get("when").map_or(n.span, |w| w.span),
            p,
            "uses `when: delayed` without `start_in`",
            "a `start_in:` duration such as \"30 minutes\"",
        ),
        (false, Some(e))
            if !m
                .get("when")
                .is_some_and(|w| matches!(w.value, Value::Reference(_))) =>
        {
            ck.error(
                e.key_span,
                &p.join("start_in"),
                "is only allowed with `when: delayed`",
                "`when: delayed`, or no `start_in`",
            )
        }
        _ => {}
    }
}

/// `start_in`: a duration of at most one week, parsed here once (engines
/// read its seconds).
pub(crate) fn start_in(ck: &mut Ck, n: &Node, p: &P) -> Option<crate::model::StartIn> {
    let s = ck.nonempty_string(n, p)?;
    match parse_duration(s) {
        Some(seconds) if seconds <= MAX_START_IN => Some(crate::model::StartIn {
            seconds,
            text: s.to_string(),
        }),
        _ => {
            ck.bad(
                n,
                p,
                "a duration of at most one week, such as \"30 minutes\" or \"1 day\"",
            );
            None
        }
    }
}

/// `timeout`: a duration of at most one month, in seconds.
pub(crate) fn timeout(ck: &mut Ck, n: &Node, p: &P) -> Option<u64> {
    let s = ck.nonempty_string(n, p)?;
    match parse_duration(s) {
        Some(secs) if secs <= MAX_TIMEOUT => Some(secs),
        _ => {
            ck.bad(
                n,
                p,
                "a duration of at most one month, such as \"1h 30m\" or \"3600\"",
            );
            None
        }
    }
}

/// `workflow:auto_cancel` (also inside workflow rules).
pub(crate) fn auto_cancel(ck: &mut Ck, n: &Node, p: &P) -> Option<Json> {
    let m = ck.map(n, p)?;
    ck.keys(m, p, &["on_job_failure", "on_new_commit"]);
    let before = ck.diags.len();
    if let Some(x) = m.get("on_job_failure") {
        ck.one_of(x, &p.join("on_job_failure"), &["none", "all"]);
    }
    if let Some(x) = m.get("on_new_commit") {
        ck.one_of(
            x,
            &p.join("on_new_commit"),
            &["conservative", "interruptible", "none"],
        );
    }
    (ck.diags.len() == before).then(|| n.to_json())
}

/// `changes:` as an array of paths or `{paths | regexp, compare_to}`.
pub(crate) fn changes(ck: &mut Ck, n: &Node, p: &P) -> Option<Changes> {
    match &n.value {
        Value::Seq(_) => ck.strings(n, p, 0).map(|paths| Changes {
            paths,
            compare_to: None,
        }),
        Value::Map(m) => {
            ck.keys(m, p, &["paths", "compare_to", "regexp"]);
            path_or_regexp(ck, m, n, p);
            let paths = m
                .get("paths")
                .and_then(|x| ck.strings(x, &p.join("paths"), 0))
                .unwrap_or_default();
            let compare_to = m
                .get("compare_to")
                .and_then(|x| ck.string(x, &p.join("compare_to")))
                .map(str::to_string);
            Some(Changes { paths, compare_to })
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(
                n,
                p,
                "an array of paths or a hash with `paths` and `compare_to`",
            );
            None
        }
    }
}

/// `exists:` as an array of paths or `{paths | regexp, project, ref}`.
pub(crate) fn exists(ck: &mut Ck, n: &Node, p: &P) -> Option<Exists> {
    match &n.value {
        Value::Seq(_) => ck.strings(n, p, 0).map(|paths| Exists {
            paths,
            ..Exists::default()
        }),
        Value::Map(m) => {
            ck.keys(m, p, &["paths", "project", "ref", "regexp"]);
            path_or_regexp(ck, m, n, p);
            let paths = m
                .get("paths")
                .and_then(|x| ck.strings(x, &p.join("paths"), 0))
                .unwrap_or_default();
            let project = m
                .get("project")
                .and_then(|x| ck.string(x, &p.join("project")))
                .map(str::to_string);
            let git_ref = m
                .get("ref")
                .and_then(|x| ck.string(x, &p.join("ref")))
                .map(str::to_string);
            if let (Some(e), None) = (m.entry("ref"), &project) {
                ck.error(
                    e.key_span,
                    &p.join("ref"),
                    "needs `project`",
                    "a `project:` entry",
                );
            }
            Some(Exists {
                paths,
                project,
                git_ref,
            })
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "an array of paths or a hash with `paths`");
            None
        }
    }
}

/// Exactly one of `paths` and `regexp`.
fn path_or_regexp(ck: &mut Ck, m: &Map, n: &Node, p: &P) {
    match (m.get("paths"), m.get("regexp")) {
        (None, None) => ck.error(n.span, p, "needs `paths` or `regexp`", "a `paths:` array"),
        (Some(_), Some(r)) => ck.error(
            r.span,
            p,
            "cannot use both `paths` and `regexp`",
            "only one of them",
        ),
        (None, Some(r)) => {
            let rp = p.join("regexp");
            if let Some(s) = ck.string(r, &rp)
                && s.len() > 255
            {
                ck.bad(r, &rp, "a regular expression of at most 255 characters");
            }
        }
        (Some(_), None) => {}
    }
}

/// `only:` / `except:`; `null` means "not set".
pub(crate) fn policy(ck: &mut Ck, n: &Node, p: &P) -> Option<Policy> {
    match &n.value {
        Value::Null => None,
        Value::Seq(_) => ck.strings(n, p, 0).map(|refs| Policy {
            refs,
            ..Policy::default()
        }),
        Value::Map(m) => {
            ck.keys(m, p, &["refs", "kubernetes", "variables", "changes"]);
            let mut pol = Policy::default();
            if let Some(x) = m.get("refs") {
                pol.refs = ck.strings(x, &p.join("refs"), 0).unwrap_or_default();
            }
            if let Some(x) = m.get("kubernetes") {
                pol.kubernetes = ck
                    .one_of(x, &p.join("kubernetes"), &["active"])
                    .map(str::to_string);
            }
            if let Some(x) = m.get("variables") {
                let vp = p.join("variables");
                pol.variables = ck.strings(x, &vp, 0).unwrap_or_default();
                for (expr, item) in pol.variables.iter().zip(x.as_seq().unwrap_or_default()) {
                    check_expression(ck, item, &vp, expr);
                }
            }
            if let Some(x) = m.get("changes") {
                pol.changes = ck.strings(x, &p.join("changes"), 0).map(|paths| Changes {
                    paths,
                    compare_to: None,
                });
            }
            Some(pol)
        }
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(
                n,
                p,
                "an array of refs or a hash with `refs`, `variables`, `changes` and `kubernetes`",
            );
            None
        }
    }
}

/// `tags:`: non-empty strings; nested arrays (from `!reference`) flattened.
pub(crate) fn tags(ck: &mut Ck, n: &Node, p: &P) -> Option<Vec<String>> {
    if ck.is_ref(n, p) {
        return None;
    }
    let Some(items) = n.as_seq() else {
        ck.bad(n, p, "an array of tags");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match &item.value {
            Value::Str(s) if !s.is_empty() => out.push(s.clone()),
            Value::Seq(inner) if !inner.is_empty() => {
                if let Some(v) = ck.strings(item, p, 1) {
                    out.extend(v);
                }
            }
            _ if ck.is_ref(item, p) => {}
            _ => ck.bad(item, p, "a non-empty string"),
        }
    }
    Some(out)
}

/// `inherit:default` / `inherit:variables`: all, none, or the listed names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inherit {
    All,
    None,
    Only(Vec<String>),
}

impl Inherit {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Inherit::All => true,
            Inherit::None => false,
            Inherit::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// The `default:` keys `inherit:default` may list.
pub(crate) const INHERITABLE_DEFAULTS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// `inherit: {default, variables}`.
pub(crate) fn inherit(ck: &mut Ck, n: &Node, p: &P) -> (Inherit, Inherit) {
    let mut out = (Inherit::All, Inherit::All);
    let Some(m) = ck.map(n, p) else { return out };
    ck.keys(m, p, &["default", "variables"]);
    let one = |ck: &mut Ck, key: &str, names: Option<&[&str]>| -> Inherit {
        let Some(x) = m.get(key) else {
            return Inherit::All;
        };
        let kp = p.join(key);
        match &x.value {
            Value::Bool(true) => Inherit::All,
            Value::Bool(false) => Inherit::None,
            Value::Seq(items) => {
                let mut list = Vec::with_capacity(items.len());
                for item in items {
                    let got = match names {
                        Some(allowed) => ck.one_of(item, &kp, allowed),
                        None => ck.string(item, &kp),
                    };
                    if let Some(s) = got {
                        list.push(s.to_string());
                    }
                }
                Inherit::Only(list)
            }
            _ if ck.is_ref(x, &kp) => Inherit::All,
            _ => {
                ck.bad(x, &kp, "a boolean or an array of names");
                Inherit::All
            }
        }
    };
    out.0 = one(ck, "default", Some(INHERITABLE_DEFAULTS));
    out.1 = one(ck, "variables", None);
    out
}
