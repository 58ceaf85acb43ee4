//! One job's keywords (GitLab's `job_template`) and the `default:` block:
//! validated and turned into a [`JobDef`] plus what composition needs
//! (which keys the job set itself, its `inherit:` choices, spans for
//! cross-job errors).

use super::check::{Ck, P};
use super::extra;
use super::keywords::{self as kw, Inherit, RuleScope, VarScope};
use crate::model::*;
use crate::node::{Map, Node, Value};
use crate::source::Span;
use std::fmt::Write as _;

/// Every keyword a job may use, most common first (for "one of: ...").
pub(crate) const JOB_KEYS: &[&str] = &[
    "script",
    "stage",
    "image",
    "services",
    "before_script",
    "after_script",
    "variables",
    "rules",
    "needs",
    "dependencies",
    "artifacts",
    "cache",
    "when",
    "allow_failure",
    "start_in",
    "manual_confirmation",
    "only",
    "except",
    "extends",
    "tags",
    "timeout",
    "retry",
    "parallel",
    "interruptible",
    "resource_group",
    "environment",
    "coverage",
    "trigger",
    "inherit",
    "hooks",
    "id_tokens",
    "identity",
    "secrets",
    "release",
    "pages",
    "publish",
    "dast_configuration",
    "inputs",
    "run",
];

/// Whether `key` is in [`JOB_KEYS`], without a linear scan per key. Also
/// accepts `type`, the legacy alias of `stage` (GitLab before 15.0) that
/// old pipelines still use, without advertising it.
fn is_job_key(key: &str) -> bool {
    matches!(
        key,
        "script"
            | "stage"
            | "image"
            | "services"
            | "before_script"
            | "after_script"
            | "variables"
            | "rules"
            | "needs"
            | "dependencies"
            | "artifacts"
            | "cache"
            | "when"
            | "allow_failure"
            | "start_in"
            | "manual_confirmation"
            | "only"
            | "except"
            | "extends"
            | "tags"
            | "timeout"
            | "retry"
            | "parallel"
            | "interruptible"
            | "resource_group"
            | "environment"
            | "coverage"
            | "trigger"
            | "inherit"
            | "hooks"
            | "id_tokens"
            | "identity"
            | "secrets"
            | "release"
            | "pages"
            | "publish"
            | "dast_configuration"
            | "inputs"
            | "run"
            | "type"
    )
}

/// Keywords a trigger (bridge) job may use (GitLab `Entry::Bridge` with
/// `Processable::PROCESSABLE_ALLOWED_KEYS`).
pub(crate) const BRIDGE_KEYS: &[&str] = &[
    "trigger",
    "parallel",
    "extends",
    "stage",
    "only",
    "except",
    "rules",
    "variables",
    "inherit",
    "allow_failure",
    "when",
    "needs",
    "resource_group",
    "environment",
    "interruptible",
];

/// `when:` values a trigger job accepts.
pub(crate) const BRIDGE_WHEN: &[&str] = &["on_success", "on_failure", "always", "manual"];

/// Keys of `default:`.
pub(crate) const DEFAULT_KEYS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// Values of `default:` (or of the legacy top-level keywords), as they
/// are copied into jobs that do not set them.
#[derive(Default)]
pub(crate) struct Defaults {
    pub before_script: Option<Vec<String>>,
    pub after_script: Option<Vec<String>>,
    pub image: Option<Image>,
    pub services: Option<Vec<Service>>,
    pub cache: Option<Vec<Cache>>,
    pub artifacts: Option<Artifacts>,
    pub retry: Option<Retry>,
    pub tags: Option<Vec<String>>,
    pub timeout: Option<u64>,
    pub interruptible: Option<bool>,
    /// `hooks`, `id_tokens`, `identity`: carried into `JobDef::extra`.
    pub extra: Vec<(&'static str, Json)>,
}

/// Parses one keyword shared by jobs and `default:` into `d`.
pub(crate) fn default_keyword(ck: &mut Ck, d: &mut Defaults, key: &str, x: &Node, p: &P) {
    match key {
        "before_script" => d.before_script = kw::script(ck, x, p, true),
        "after_script" => d.after_script = kw::script(ck, x, p, true),
        "image" => d.image = kw::image(ck, x, p),
        "services" => d.services = kw::services(ck, x, p),
        "cache" => d.cache = kw::cache(ck, x, p),
        "artifacts" => d.artifacts = kw::artifacts(ck, x, p),
        "retry" => d.retry = kw::retry(ck, x, p),
        "tags" => d.tags = kw::tags(ck, x, p),
        "timeout" => d.timeout = kw::timeout(ck, x, p),
        "interruptible" => d.interruptible = ck.bool(x, p),
        "hooks" => {
            extra::hooks(ck, x, p);
            d.extra.push(("hooks", x.to_json()));
        }
        "id_tokens" => {
            extra::id_tokens(ck, x, p);
            d.extra.push(("id_tokens", x.to_json()));
        }
        "identity" => {
            extra::identity(ck, x, p);
            d.extra.push(("identity", x.to_json()));
        }
        _ => {}
    }
}

/// `default:`.
pub(crate) fn defaults(ck: &mut Ck, n: &Node) -> Defaults {
    let mut d = Defaults::default();
    let p = P::root("default");
    let Some(m) = ck.map(n, &p) else { return d };
    ck.keys(m, &p, DEFAULT_KEYS);
    for (key, e) in m.iter() {
        if DEFAULT_KEYS.contains(&key) {
            default_keyword(ck, &mut d, key, &e.value, &p.join(key));
        }
    }
    d
}

/// A parsed job and what composing it needs.
pub(crate) struct ParsedJob {
    pub def: JobDef,
    /// The job's own keywords that also exist in `default:` (its own value
    /// wins over the default's).
    pub own: Defaults,
    /// Which of those keys the job wrote, even when invalid.
    pub set: Vec<&'static str>,
    pub inherit_default: Inherit,
    pub inherit_variables: Inherit,
    pub stage_span: Option<Span>,
    pub dependency_spans: Vec<Span>,
    pub on_stop_span: Option<Span>,
    pub has_script: bool,
    pub has_run: bool,
    /// Trigger jobs only: keywords a trigger job may not use.
    pub non_bridge_keys: Vec<(String, Span)>,
    pub when_span: Option<Span>,
    /// `run` when the job also has `script` (they exclude each other).
    pub run_span: Option<Span>,
    /// `publish` in a job that is not a pages job.
    pub publish_outside_pages: Option<Span>,
    pub allow_failure_span: Option<Span>,
}

/// Parses and validates the job `name` (a visible one).
pub(crate) fn job(ck: &mut Ck, name: &str, key_span: Span, n: &Node) -> Option<ParsedJob> {
    // Reuse the owner's buffer: one allocation for all jobs, not one each.
    ck.owner.clear();
    let _ = write!(ck.owner, "job `{name}`");
    if name.chars().count() > 255 {
        ck.push(
            crate::diag::Diagnostic::at(key_span, format!("job name `{name}` is too long"))
                .expected("a name of at most 255 characters"),
        );
    }
    let Value::Map(m) = &n.value else {
        if !ck.is_ref(n, &P::root("")) {
            ck.push(
                crate::diag::Diagnostic::at(
                    n.span,
                    format!(
                        "job `{name}` must be a hash of keywords, not {}",
                        super::check::describe(n)
                    ),
                )
                .expected("a hash with `script:`, `run:` or `trigger:` (or a global keyword)"),
            );
        }
        ck.owner.clear();
        return None;
    };
    let root = P::root("");
    ck.keys_known(m, &root, JOB_KEYS, is_job_key);
    let mut j = ParsedJob {
        def: JobDef {
            name: name.to_string(),
            stage: "test".into(),
            span: Some(key_span),
            ..JobDef::default()
        },
        own: Defaults::default(),
        set: Vec::new(),
        inherit_default: Inherit::All,
        inherit_variables: Inherit::All,
        stage_span: None,
        dependency_spans: Vec::new(),
        on_stop_span: None,
        has_script: m.contains_key("script"),
        has_run: m.contains_key("run"),
        non_bridge_keys: if m.contains_key("trigger") {
            m.iter()
                .filter(|(k, _)| !BRIDGE_KEYS.contains(k))
                .map(|(k, e)| (k.to_string(), e.key_span))
                .collect()
        } else {
            Vec::new()
        },
        when_span: m.entry("when").map(|e| e.key_span),
        run_span: m
            .entry("run")
            .filter(|_| m.contains_key("script"))
            .map(|e| e.key_span),
        // GitLab `pages_job?`: `pages:` set, or a job named `pages` without
        // `pages: false`.
        publish_outside_pages: m.entry("publish").map(|e| e.key_span).filter(|_| {
            let pages = m.get("pages");
            let pages_set = pages.is_some_and(|v| !v.is_null() && v.as_bool() != Some(false));
            !(pages_set || (name == "pages" && pages.and_then(Node::as_bool) != Some(false)))
        }),
        allow_failure_span: m.entry("allow_failure").map(|e| e.key_span),
    };
    for (key, e) in m.iter() {
        let x = &e.value;
        let p = P::root(key);
        let def = &mut j.def;
        match key {
            "script" => def.script = kw::script(ck, x, &p, false).unwrap_or_default(),
            "stage" => {
                j.stage_span = Some(x.span);
                if let Some(s) = stage(ck, x, &p) {
                    def.stage = s;
                }
            }
            // `stage` wins over its legacy alias `type`.
            "type" => {
                if let Some(s) = stage(ck, x, &p).filter(|_| !m.contains_key("stage")) {
                    j.stage_span = Some(x.span);
                    def.stage = s;
                }
            }
            "variables" => {
                def.variables = kw::variables(ck, x, &p, VarScope::Job).unwrap_or_default()
            }
            "rules" => def.rules = kw::rules(ck, x, &p, RuleScope::Job),
            "needs" => def.needs = kw::needs(ck, x, &p, false),
            "dependencies" => {
                if let Some(deps) = ck.strings(x, &p, 0) {
                    j.dependency_spans = x
                        .as_seq()
                        .map(|s| s.iter().map(|i| i.span).collect())
                        .unwrap_or_default();
                    def.dependencies = Some(deps);
                }
            }
            "when" => def.when = ck.one_of(x, &p, kw::JOB_WHEN).and_then(When::parse),
            "allow_failure" => def.allow_failure = kw::allow_failure(ck, x, &p),
            "start_in" => def.start_in = kw::start_in(ck, x, &p),
            "only" => def.only = kw::policy(ck, x, &p),
            "except" => def.except = kw::policy(ck, x, &p),
            "extends" => extends(ck, x, &p),
            "parallel" => def.parallel = kw::parallel(ck, x, &p),
            "resource_group" => def.resource_group = ck.string(x, &p).map(str::to_string),
            "environment" => {
                def.environment = kw::environment(ck, x, &p);
                j.on_stop_span = x.as_map().and_then(|em| em.get("on_stop")).map(|s| s.span);
            }
            "coverage" => def.coverage = extra::coverage(ck, x, &p),
            "trigger" => {
                extra::trigger(ck, x, &p);
                def.trigger = Some(x.to_json());
            }
            "inherit" => (j.inherit_default, j.inherit_variables) = kw::inherit(ck, x, &p),
            "before_script" | "after_script" | "image" | "services" | "cache" | "artifacts"
            | "retry" | "tags" | "timeout" | "interruptible" | "hooks" | "id_tokens"
            | "identity" => {
                if let Some(k) = DEFAULT_KEYS.iter().find(|k| **k == key) {
                    j.set.push(k);
                }
                default_keyword(ck, &mut j.own, key, x, &p);
            }
            "secrets"
            | "release"
            | "pages"
            | "publish"
            | "dast_configuration"
            | "inputs"
            | "run"
            | "manual_confirmation" => {
                match key {
                    "secrets" => extra::secrets(ck, x, &p),
                    "release" => extra::release(ck, x, &p),
                    "pages" => extra::pages(ck, x, &p),
                    "dast_configuration" => extra::dast_configuration(ck, x, &p),
                    "inputs" => extra::job_inputs(ck, x, &p),
                    "run" => extra::run(ck, x, &p),
                    _ => {
                        ck.string(x, &p);
                    }
                }
                def.extra.insert(key.to_string(), x.to_json());
            }
            _ => {}
        }
    }
    combinations(ck, m, n, &j.def);
    ck.owner.clear();
    Some(j)
}

/// Keyword combinations GitLab rejects within one job.
fn combinations(ck: &mut Ck, m: &Map, n: &Node, def: &JobDef) {
    let root = P::root("");
    if m.get("rules").is_some_and(|r| !r.is_null()) {
        for key in ["only", "except", "start_in"] {
            if let Some(e) = m.entry(key).filter(|e| !e.value.is_null()) {
                ck.error(
                    e.key_span,
                    &P::root(key),
                    "may not be used with `rules`",
                    "either `rules`, or `only`/`except`",
                );
            }
        }
        // With rules, `start_in` belongs in the rule; still report a
        // delayed job without one.
        if def.when == Some(When::Delayed) && !m.contains_key("start_in") {
            kw::delayed_pair(ck, m, n, &root, true);
        }
        return;
    }
    kw::delayed_pair(ck, m, n, &root, def.when == Some(When::Delayed));
}

/// `stage:`: a name (an array of one name, from `!reference`, also works).
fn stage(ck: &mut Ck, n: &Node, p: &P) -> Option<String> {
    match &n.value {
        Value::Str(s) if !s.is_empty() => Some(s.clone()),
        Value::Seq(items) if items.len() == 1 => stage(ck, &items[0], p),
        _ if ck.is_ref(n, p) => None,
        _ => {
            ck.bad(n, p, "a stage name");
            None
        }
    }
}

/// `extends:` is kept after extends are applied; it only has to be
/// well-formed.
fn extends(ck: &mut Ck, n: &Node, p: &P) {
    match &n.value {
        Value::Str(_) => {}
        _ => {
            ck.strings(n, p, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_key_lookup_matches_the_key_list() {
        for key in JOB_KEYS {
            assert!(is_job_key(key), "{key}");
        }
        let matched = ["scirpt", "Stage", "", "default", "stages", "variable"];
        assert!(matched.iter().all(|k| !is_job_key(k)));
    }
}
