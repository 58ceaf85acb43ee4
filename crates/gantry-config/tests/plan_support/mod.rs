//! Shared helpers of the `plan_*` tests: a fixed git context, loading YAML
//! through the real loader, and planning.
#![allow(dead_code)]

use gantry_config::context::{Context, GitFacts};
use gantry_config::load::{LoadOptions, MemorySource, load};
use gantry_config::model::{Config, Pipeline};
use gantry_config::plan::plan;

pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A branch push on `group/project` with `src/main.rs` and `README.md`
/// changed.
pub fn facts(ref_name: &str) -> GitFacts {
    GitFacts {
        sha: SHA.into(),
        before_sha: "fedcba9876543210fedcba9876543210fedcba98".into(),
        ref_name: ref_name.into(),
        is_tag: false,
        tag_message: None,
        default_branch: "main".into(),
        author: "Ada Lovelace <ada@example.com>".into(),
        author_name: "Ada Lovelace".into(),
        author_email: "ada@example.com".into(),
        message: "Add the engine\n\nIt computes.\n".into(),
        timestamp: "2026-11-01T12:00:00+00:00".into(),
        project_path: "group/project".into(),
        project_dir: "/work/project".into(),
        project_url: Some("https://gitlab.example.com/group/project".into()),
        changed_paths: Some(vec!["README.md".into(), "src/main.rs".into()]),
        files: vec![
            ".gitlab-ci.yml".into(),
            "Cargo.toml".into(),
            "README.md".into(),
            "docs/index.md".into(),
            "src/lib/util.rs".into(),
            "src/main.rs".into(),
        ],
    }
}

pub fn tag_facts(tag: &str) -> GitFacts {
    GitFacts {
        is_tag: true,
        tag_message: Some("Release".into()),
        changed_paths: None,
        ..facts(tag)
    }
}

pub fn push(ref_name: &str) -> Context {
    Context::new(&facts(ref_name), "push", &[])
}

pub fn with_vars(ref_name: &str, source: &str, vars: &[(&str, &str)]) -> Context {
    let overrides: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Context::new(&facts(ref_name), source, &overrides)
}

pub fn load_yaml(yaml: &str) -> Config {
    let fs = MemorySource::single(".gitlab-ci.yml", yaml);
    match load(&fs, &LoadOptions::default()) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("fixture does not load:\n{e}"),
    }
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/plan/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn plan_ok(yaml: &str, ctx: &Context) -> Pipeline {
    match plan(&load_yaml(yaml), ctx) {
        Ok(p) => p,
        Err(diags) => panic!("plan failed: {diags:#?}"),
    }
}

/// The planning errors as `line:col: message`.
pub fn plan_errors(yaml: &str, ctx: &Context) -> Vec<String> {
    match plan(&load_yaml(yaml), ctx) {
        Ok(p) => panic!("expected plan errors, got {p:#?}"),
        Err(diags) => diags
            .iter()
            .map(|d| match d.span {
                Some(s) => format!("{}:{}: {}", s.line, s.col, d.message),
                None => d.message.clone(),
            })
            .collect(),
    }
}

/// `name` → `when` of each created job, for compact assertions.
pub fn created(p: &Pipeline) -> Vec<(String, String)> {
    p.jobs
        .iter()
        .map(|j| (j.name.clone(), j.when.as_str().to_string()))
        .collect()
}

pub fn job<'p>(p: &'p Pipeline, name: &str) -> &'p gantry_config::model::Job {
    p.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name:?} in {:?}", created(p)))
}

pub fn skipped_reason<'p>(p: &'p Pipeline, name: &str) -> &'p str {
    p.skipped
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.reason.as_str())
        .unwrap_or_else(|| panic!("{name:?} not skipped; skipped: {:?}", p.skipped))
}

pub fn var<'p>(j: &'p gantry_config::model::Job, name: &str) -> Option<&'p str> {
    j.variables
        .iter()
        .find(|v| v.name == name)
        .map(|v| v.value.as_str())
}
