//! Validation and composition: a document (after includes, `extends` and
//! `!reference`) becomes a [`Config`].
//!
//! Every keyword is checked against GitLab's CI schema and its entry
//! classes (`lib/gitlab/ci/config/entry/*`): unknown keys (with the closest
//! valid one suggested), wrong types, out-of-range values and impossible
//! combinations. Every error is collected, each with the span of the
//! offending key or value and what was expected.
//!
//! [`compose`] then does what GitLab does when it builds the pipeline's
//! jobs: `.pre`/`.post` stages, `default:` and the legacy top-level
//! keywords with `inherit:`, hidden jobs dropped, trigger jobs checked, and
//! the static checks across jobs (stages, needs, dependencies, on_stop).

mod check;
mod duration;
mod extra;
mod graph;
mod job;
mod keywords;

pub use duration::parse_duration;

use crate::diag::Diagnostic;
use crate::model::{Config, Inheritance, JobDef, Variable, Workflow};
use crate::node::{Map, Node, Value};
use check::{Ck, P};
use indexmap::IndexMap;
use job::{Defaults, ParsedJob};
use keywords::{Inherit, RuleScope, VarScope};

/// Legacy top-level keywords that `default:` replaces.
const LEGACY_DEFAULTS: &[&str] = &[
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

/// The name in `names` closest to a misspelt `word`, if one is close enough.
pub fn closest_name<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    check::closest(word, names)
}

/// GitLab's stages when `stages:` is not given.
const DEFAULT_STAGES: &[&str] = &["build", "test", "deploy"];

/// Keyword-level validation of a document or fragment (no "no jobs" error,
/// no cross-job checks). Used by the conformance test and by [`compose`].
/// `!reference` tags are accepted wherever a value is expected.
pub fn validate(root: &Node) -> Vec<Diagnostic> {
    let mut ck = Ck::new(true);
    walk(&mut ck, root);
    ck.diags
}

/// Validation of a file's header document (the part before `---` that
/// holds `spec:`): only `spec` is allowed there.
pub fn validate_header(header: &Node) -> Vec<Diagnostic> {
    let mut ck = Ck::new(true);
    if let Some(m) = ck.map(header, &P::root("header")) {
        ck.keys(m, &P::root("header"), &["spec"]);
        if let Some(spec) = m.get("spec") {
            extra::spec(&mut ck, spec, &P::root("spec"));
        }
    }
    ck.diags
}

/// Full composition of a post-include, post-extends, post-`!reference`
/// document into a [`Config`], reporting every error found.
pub fn compose(root: &Node) -> Result<Config, Vec<Diagnostic>> {
    // The loader normalises in place; a tree from elsewhere is copied first.
    if crate::normalize::needed(root) {
        let mut owned = root.clone();
        crate::normalize::normalize(&mut owned);
        return compose_normalized(&owned);
    }
    compose_normalized(root)
}

fn compose_normalized(root: &Node) -> Result<Config, Vec<Diagnostic>> {
    let mut ck = Ck::new(false);
    let Some(doc) = walk(&mut ck, root) else {
        return Err(ck.diags);
    };
    let config = build(&mut ck, root, doc);
    if ck.diags.is_empty() {
        Ok(config)
    } else {
        Err(ck.diags)
    }
}

/// The top level, parsed.
struct Document {
    stages: Option<Vec<String>>,
    variables: Vec<Variable>,
    workflow: Workflow,
    defaults: Defaults,
    legacy: Defaults,
    jobs: Vec<ParsedJob>,
}

/// Validates every top-level key and parses the document's parts. `None`
/// when the root is not a hash.
fn walk(ck: &mut Ck, root: &Node) -> Option<Document> {
    let Value::Map(m) = &root.value else {
        ck.push(
            Diagnostic::at(
                root.span,
                format!(
                    "the configuration must be a hash, not {}",
                    check::describe(root)
                ),
            )
            .expected("a hash of global keywords and jobs"),
        );
        return None;
    };
    let mut doc = Document {
        stages: None,
        variables: Vec::new(),
        workflow: Workflow::default(),
        defaults: Defaults::default(),
        legacy: Defaults::default(),
        jobs: Vec::new(),
    };
    for (key, e) in m.iter() {
        let x = &e.value;
        let p = P::root(key);
        match key {
            "default" => doc.defaults = job::defaults(ck, x),
            "include" => extra::include(ck, x, &p),
            "stages" => doc.stages = stages(ck, x, &p),
            "variables" => {
                doc.variables = keywords::variables(ck, x, &p, VarScope::Global).unwrap_or_default()
            }
            "workflow" => doc.workflow = workflow(ck, x, &p),
            "spec" => extra::spec(ck, x, &p),
            "$schema" => {
                ck.string(x, &p);
            }
            k if LEGACY_DEFAULTS.contains(&k) => {
                job::default_keyword(ck, &mut doc.legacy, key, x, &p)
            }
            // Legacy alias of `stages` (GitLab before 15.0); `stages` wins.
            "types" => {
                let types = stages(ck, x, &p);
                if !m.contains_key("stages") {
                    doc.stages = types;
                }
            }
            k if k.starts_with('.') => {}
            _ => {
                if let Some(j) = job::job(ck, key, e.key_span, x) {
                    doc.jobs.push(j);
                }
            }
        }
    }
    legacy_conflicts(ck, m);
    Some(doc)
}

/// A legacy top-level keyword and the same key in `default:` is an error.
fn legacy_conflicts(ck: &mut Ck, m: &Map) {
    let Some(default) = m.get("default").and_then(Node::as_map) else {
        return;
    };
    for key in LEGACY_DEFAULTS {
        if let (Some(e), true) = (m.entry(key), default.contains_key(key)) {
            ck.push(
                Diagnostic::at(
                    e.key_span,
                    format!("`{key}` is defined both at the top level and in `default:`"),
                )
                .expected(format!("only `default:{key}`")),
            );
        }
    }
}

/// `stages:`: names, nested arrays flattened; at least one, no duplicates.
fn stages(ck: &mut Ck, n: &Node, p: &P) -> Option<Vec<String>> {
    if ck.is_ref(n, p) {
        return None;
    }
    let Some(items) = n.as_seq().filter(|s| !s.is_empty()) else {
        ck.bad(n, p, "a non-empty array of stage names");
        return None;
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let names: Vec<&Node> = match &item.value {
            Value::Seq(inner) => inner.iter().collect(),
            _ => vec![item],
        };
        for name in names {
            if let Some(s) = ck.string(name, p) {
                if !seen.insert(s.to_string()) {
                    ck.error(
                        name.span,
                        p,
                        &format!("lists the stage `{s}` twice"),
                        "unique stage names",
                    );
                } else {
                    out.push(s.to_string());
                }
            }
        }
    }
    Some(out)
}

/// `workflow: {name, rules, auto_cancel}`.
fn workflow(ck: &mut Ck, n: &Node, p: &P) -> Workflow {
    let mut w = Workflow::default();
    let Some(m) = ck.map(n, p) else { return w };
    ck.keys(m, p, &["name", "rules", "auto_cancel"]);
    if let Some(x) = m.get("name") {
        w.name = extra::workflow_name(ck, x, &p.join("name"));
    }
    if let Some(x) = m.get("rules") {
        w.rules = keywords::rules(ck, x, &p.join("rules"), RuleScope::Workflow);
    }
    if let Some(x) = m.get("auto_cancel") {
        w.auto_cancel = keywords::auto_cancel(ck, x, &p.join("auto_cancel"));
    }
    w
}

/// Builds the [`Config`]: stages, defaults and inheritance, job-type
/// checks, cross-job checks.
fn build(ck: &mut Ck, root: &Node, doc: Document) -> Config {
    let Document {
        stages,
        variables,
        workflow,
        defaults,
        legacy,
        jobs,
    } = doc;
    let user_stages =
        stages.unwrap_or_else(|| DEFAULT_STAGES.iter().map(|s| s.to_string()).collect());
    let mut all_stages = Vec::with_capacity(user_stages.len() + 2);
    all_stages.push(".pre".to_string());
    all_stages.extend(
        user_stages
            .into_iter()
            .filter(|s| s != ".pre" && s != ".post"),
    );
    all_stages.push(".post".to_string());

    let defaults = merge_defaults(defaults, legacy);
    let mut out: IndexMap<String, JobDef> = IndexMap::with_capacity(jobs.len());
    let mut spans = Vec::with_capacity(jobs.len());
    for mut j in jobs {
        job_kind_checks(ck, &j);
        spans.push(graph::JobSpans {
            stage: j.stage_span,
            dependencies: std::mem::take(&mut j.dependency_spans),
            on_stop: j.on_stop_span,
        });
        let def = inherit(j, &defaults, &variables);
        out.insert(def.name.clone(), def);
    }

    if out.is_empty() {
        ck.push(
            Diagnostic::at(
                root.span,
                "jobs config should contain at least one visible job",
            )
            .expected("a job: a top-level key not starting with `.`, with `script:`"),
        );
    }
    graph::check(&all_stages, &out, &spans, &mut ck.diags);
    Config {
        stages: all_stages,
        variables,
        workflow,
        jobs: out,
    }
}

/// `default:` wins over nothing; the legacy keyword fills what `default:`
/// does not set (both set is reported separately).
fn merge_defaults(mut d: Defaults, legacy: Defaults) -> Defaults {
    d.image = d.image.or(legacy.image);
    d.services = d.services.or(legacy.services);
    d.cache = d.cache.or(legacy.cache);
    d.before_script = d.before_script.or(legacy.before_script);
    d.after_script = d.after_script.or(legacy.after_script);
    d
}

/// Script/run/trigger presence and the trigger-job key restrictions.
fn job_kind_checks(ck: &mut Ck, j: &ParsedJob) {
    let name = &j.def.name;
    let span = j.def.span.unwrap_or_default();
    if let Some(at) = j.publish_outside_pages {
        ck.push(
            Diagnostic::at(
                at,
                format!("`publish` in job `{name}` can only be used within a `pages` job"),
            )
            .expected("a job named `pages`, or one with `pages:`"),
        );
    }
    if j.def.trigger.is_some() {
        for (key, key_span) in &j.non_bridge_keys {
            ck.push(
                Diagnostic::at(
                    *key_span,
                    format!("trigger job `{name}` cannot use `{key}`"),
                )
                .expected(format!("one of: {}", job::BRIDGE_KEYS.join(", "))),
            );
        }
        if let Some(w) = j
            .def
            .when
            .filter(|w| !job::BRIDGE_WHEN.contains(&w.as_str()))
        {
            let at = j.when_span.unwrap_or(span);
            ck.push(
                Diagnostic::at(
                    at,
                    format!("trigger job `{name}` cannot use `when: {}`", w.as_str()),
                )
                .expected(format!("one of: {}", job::BRIDGE_WHEN.join(", "))),
            );
        }
        if let Some(crate::model::AllowFailure::ExitCodes { .. }) = j.def.allow_failure {
            let at = j.allow_failure_span.unwrap_or(span);
            ck.push(
                Diagnostic::at(
                    at,
                    format!("`allow_failure` in trigger job `{name}` must be a boolean"),
                )
                .expected("true or false"),
            );
        }
    } else if let Some(at) = j.run_span {
        ck.push(
            Diagnostic::at(
                at,
                format!("job `{name}` cannot use both `script` and `run`"),
            )
            .expected("either `script:` or `run:`"),
        );
    } else if !j.has_script && !j.has_run {
        ck.push(
            Diagnostic::at(
                span,
                format!(
                    "job `{name}` config should implement the script:, run:, or trigger: keyword"
                ),
            )
            .expected("a `script:` (or `run:` or `trigger:`) in the job"),
        );
    }
}

/// Applies `default:` (whole values, for keys the job does not set, as
/// `inherit:default` allows) and global variables (as `inherit:variables`
/// allows, job variables winning).
fn inherit(j: ParsedJob, d: &Defaults, globals: &[Variable]) -> JobDef {
    let ParsedJob {
        mut def,
        own,
        set,
        inherit_default,
        inherit_variables,
        ..
    } = j;
    let take = |key: &str| !set.contains(&key) && inherit_default.allows(key);
    let pick = |key: &str, mine: Option<Vec<String>>, theirs: &Option<Vec<String>>| {
        if take(key) {
            theirs.clone().unwrap_or_default()
        } else {
            mine.unwrap_or_default()
        }
    };
    def.before_script = pick("before_script", own.before_script, &d.before_script);
    def.after_script = pick("after_script", own.after_script, &d.after_script);
    def.tags = pick("tags", own.tags, &d.tags);
    def.image = if take("image") {
        d.image.clone()
    } else {
        own.image
    };
    def.services = if take("services") {
        d.services.clone().unwrap_or_default()
    } else {
        own.services.unwrap_or_default()
    };
    def.cache = if take("cache") {
        d.cache.clone().unwrap_or_default()
    } else {
        own.cache.unwrap_or_default()
    };
    def.artifacts = if take("artifacts") {
        d.artifacts.clone()
    } else {
        own.artifacts
    };
    def.retry = if take("retry") {
        d.retry.clone()
    } else {
        own.retry
    };
    def.timeout = if take("timeout") {
        d.timeout
    } else {
        own.timeout
    };
    def.interruptible = if take("interruptible") {
        d.interruptible
    } else {
        own.interruptible
    };
    for (key, value) in &d.extra {
        if take(key) {
            def.extra.insert(key.to_string(), value.clone());
        }
    }
    for (key, value) in own.extra {
        def.extra.insert(key.to_string(), value);
    }

    // Job variables override global ones in place (Ruby `Hash#merge`).
    let job_vars = std::mem::take(&mut def.variables);
    def.own_variables = job_vars.iter().map(|v| v.name.clone()).collect();
    def.inherit_variables = match &inherit_variables {
        Inherit::All => Inheritance::All,
        Inherit::None => Inheritance::None,
        Inherit::Only(names) => Inheritance::Only(names.clone()),
    };
    let mut vars: Vec<Variable> = Vec::with_capacity(globals.len() + job_vars.len());
    vars.extend(
        globals
            .iter()
            .filter(|v| inherit_variables.allows(&v.name))
            .cloned(),
    );
    let inherited = vars.len();
    for v in job_vars {
        match vars[..inherited].iter().position(|g| g.name == v.name) {
            Some(i) => vars[i] = v,
            None => vars.push(v),
        }
    }
    def.variables = vars;
    def
}

#[cfg(test)]
mod tests;
