//! `gantry plan`: rules (`if`, `changes`, `exists`), `when` and
//! `allow_failure` defaults, rules variables, workflow rules.

mod plan_support;

use gantry_config::context::{Context, GitFacts};
use gantry_config::model::PipelineStatus;
use gantry_config::output::{plan_human, plan_json};
use plan_support::*;

const RULES: &str = r#"
stages: [build, test, deploy]
variables:
  DEPLOY_ENV: staging
build:
  stage: build
  script: make
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
      when: never
    - if: $CI_COMMIT_BRANCH
unit:
  stage: test
  script: make test
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
      when: manual
lint:
  stage: test
  script: lint
  when: manual
manual_job:
  stage: test
  script: x
  when: manual
  rules:
    - if: $CI_COMMIT_BRANCH
release:
  stage: deploy
  script: deploy
  rules:
    - if: $DEPLOY_ENV == "production"
    - if: $CI_COMMIT_TAG
later:
  stage: deploy
  script: later
  rules:
    - when: delayed
      start_in: 10 minutes
      allow_failure: true
flaky:
  stage: deploy
  script: flaky
  allow_failure:
    exit_codes: [3, 4]
"#;

#[test]
fn rules_decide_when_and_allow_failure_on_a_feature_branch() {
    let p = plan_ok(RULES, &push("feature/login"));
    assert_eq!(p.status, PipelineStatus::Created);
    assert_eq!(
        created(&p),
        [
            ("build", "on_success"),
            ("unit", "manual"),
            ("lint", "manual"),
            ("manual_job", "manual"),
            ("later", "delayed"),
            ("flaky", "on_success"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // `when: manual` from a rule: allow_failure defaults to false.
    assert!(!job(&p, "unit").allow_failure);
    // `when: manual` on the job: true, with or without rules.
    assert!(job(&p, "lint").allow_failure);
    assert!(job(&p, "manual_job").allow_failure);
    assert!(job(&p, "later").allow_failure);
    let start_in = job(&p, "later").start_in.clone().expect("start_in");
    assert_eq!(
        (start_in.text.as_str(), start_in.seconds),
        ("10 minutes", 600)
    );
    assert!(!job(&p, "flaky").allow_failure);
    assert_eq!(job(&p, "flaky").allow_failure_exit_codes, [3, 4]);
    assert_eq!(skipped_reason(&p, "release"), "rules: no rule matched");
    insta::assert_snapshot!("rules_feature_human", plan_human(&p));
    insta::assert_json_snapshot!("rules_feature_json", plan_json(&p));
}

#[test]
fn a_never_rule_names_its_index_and_condition() {
    let p = plan_ok(RULES, &push("main"));
    assert_eq!(
        skipped_reason(&p, "build"),
        r#"rules[0] (if: $CI_COMMIT_BRANCH == "main") → when: never"#
    );
    insta::assert_snapshot!("rules_main_human", plan_human(&p));
}

#[test]
fn tag_pipelines_see_ci_commit_tag_and_not_the_branch() {
    let ctx = Context::new(&tag_facts("v1.2.0"), "push", &[]);
    let p = plan_ok(RULES, &ctx);
    assert!(p.jobs.iter().any(|j| j.name == "release"));
    assert_eq!(skipped_reason(&p, "build"), "rules: no rule matched");
    insta::assert_snapshot!("rules_tag_human", plan_human(&p));
}

#[test]
fn command_line_variables_outrank_yaml_variables_in_rules() {
    let p = plan_ok(
        RULES,
        &with_vars("feature/x", "push", &[("DEPLOY_ENV", "production")]),
    );
    assert!(
        p.jobs.iter().any(|j| j.name == "release"),
        "{:?}",
        created(&p)
    );
}

const VARIABLES: &str = r#"
variables:
  SHARED: global
  LEVEL: global
job:
  script: echo
  variables:
    LEVEL: job
    ONLY_JOB: "1"
  rules:
    - if: $LEVEL == "job" && $ONLY_JOB == "1"
      variables:
        LEVEL: rule
        FROM_RULE: "yes"
unreached:
  script: echo
  rules:
    - if: $FROM_RULE
"#;

#[test]
fn rules_see_job_variables_and_rule_variables_win() {
    let p = plan_ok(VARIABLES, &push("main"));
    let j = job(&p, "job");
    assert_eq!(var(j, "SHARED"), Some("global"));
    assert_eq!(var(j, "LEVEL"), Some("rule"));
    assert_eq!(var(j, "FROM_RULE"), Some("yes"));
    assert_eq!(var(j, "ONLY_JOB"), Some("1"));
    // Names are unique, in definition order.
    let names: Vec<&str> = j.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["SHARED", "LEVEL", "ONLY_JOB", "FROM_RULE"]);
    // Another job's rule variables are not visible.
    assert_eq!(skipped_reason(&p, "unreached"), "rules: no rule matched");
    assert_eq!(plan_json(&p)["jobs"][0]["variables"]["LEVEL"], "rule");
}

const FILES: &str = r#"
docs:
  script: mkdocs
  rules:
    - changes: ["docs/**/*"]
rust:
  script: cargo build
  rules:
    - changes:
        paths: ["src/**/*.rs"]
readme:
  script: echo
  rules:
    - changes: [README.md]
      when: manual
cargo:
  script: cargo
  rules:
    - exists: [Cargo.toml]
node:
  script: npm
  rules:
    - exists: [package.json]
deep:
  script: echo
  rules:
    - exists: ["src/**/util.rs"]
from_var:
  script: echo
  rules:
    - exists: ["$MANIFEST"]
      variables:
        X: "1"
  variables:
    MANIFEST: Cargo.toml
"#;

#[test]
fn changes_and_exists_use_the_changed_paths_and_the_repository_files() {
    let p = plan_ok(FILES, &push("feature"));
    let names: Vec<String> = created(&p).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["rust", "readme", "cargo", "deep", "from_var"]);
    assert_eq!(skipped_reason(&p, "docs"), "rules: no rule matched");
    assert_eq!(skipped_reason(&p, "node"), "rules: no rule matched");
    insta::assert_snapshot!("changes_exists_human", plan_human(&p));
}

#[test]
fn changes_match_when_there_is_no_diff() {
    let facts = GitFacts {
        changed_paths: None,
        ..facts("new-branch")
    };
    let p = plan_ok(FILES, &Context::new(&facts, "push", &[]));
    assert!(p.jobs.iter().any(|j| j.name == "docs"));
}

const WORKFLOW: &str = r#"
workflow:
  name: "Pipeline for $CI_COMMIT_REF_NAME ($DEPLOY_TARGET)"
  rules:
    - if: $CI_COMMIT_BRANCH == "wip"
      when: never
    - if: $CI_COMMIT_BRANCH == "main"
      variables:
        DEPLOY_TARGET: production
    - if: $CI_COMMIT_BRANCH
variables:
  DEPLOY_TARGET: review
  OTHER: kept
build:
  script: make
  rules:
    - if: $DEPLOY_TARGET == "production"
      when: manual
    - when: on_success
own:
  script: make
  variables:
    DEPLOY_TARGET: own
"#;

#[test]
fn workflow_rules_variables_override_global_ones() {
    let p = plan_ok(WORKFLOW, &push("main"));
    assert_eq!(p.status, PipelineStatus::Created);
    assert_eq!(p.name.as_deref(), Some("Pipeline for main (production)"));
    assert_eq!(var(job(&p, "build"), "DEPLOY_TARGET"), Some("production"));
    assert_eq!(job(&p, "build").when.as_str(), "manual");
    // A job's own value still beats the workflow's.
    assert_eq!(var(job(&p, "own"), "DEPLOY_TARGET"), Some("own"));
    let pvars: Vec<(&str, &str)> = p
        .variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(pvars, [("DEPLOY_TARGET", "production"), ("OTHER", "kept")]);

    let p = plan_ok(WORKFLOW, &push("feature"));
    assert_eq!(p.name.as_deref(), Some("Pipeline for feature (review)"));
    assert_eq!(var(job(&p, "build"), "DEPLOY_TARGET"), Some("review"));
    assert_eq!(job(&p, "build").when.as_str(), "on_success");
}

#[test]
fn workflow_rules_filter_the_pipeline() {
    let p = plan_ok(WORKFLOW, &push("wip"));
    assert_eq!(p.status, PipelineStatus::Filtered);
    assert_eq!(
        p.filtered_reason.as_deref(),
        Some(r#"workflow:rules[0] (if: $CI_COMMIT_BRANCH == "wip") → when: never"#)
    );
    assert!(p.jobs.is_empty());
    assert_eq!(p.skipped.len(), 2);
    insta::assert_snapshot!("workflow_never_human", plan_human(&p));
    insta::assert_json_snapshot!("workflow_never_json", plan_json(&p));

    let ctx = Context::new(&tag_facts("v1"), "push", &[]);
    let p = plan_ok(WORKFLOW, &ctx);
    assert_eq!(p.status, PipelineStatus::Filtered);
    assert_eq!(
        p.filtered_reason.as_deref(),
        Some("workflow:rules: no rule matched")
    );
}

#[test]
fn a_pipeline_whose_rules_exclude_every_job_is_not_created() {
    let yaml = r#"
only_main:
  script: x
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
"#;
    let p = plan_ok(yaml, &push("feature"));
    assert_eq!(p.status, PipelineStatus::Filtered);
    assert_eq!(skipped_reason(&p, "only_main"), "rules: no rule matched");
    insta::assert_snapshot!("no_jobs_human", plan_human(&p));
}

#[test]
fn rules_needs_and_interruptible_override_the_job() {
    let yaml = r#"
stages: [build, test]
a:
  stage: build
  script: a
b:
  stage: build
  script: b
t:
  stage: test
  script: t
  needs: [a]
  interruptible: false
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
      needs: [b]
      interruptible: true
    - when: on_success
"#;
    let p = plan_ok(yaml, &push("main"));
    let t = job(&p, "t");
    assert_eq!(
        t.needs
            .as_ref()
            .map(|n| n.iter().map(|n| n.job.as_str()).collect::<Vec<_>>()),
        Some(vec!["b"])
    );
    assert!(t.interruptible);
    let p = plan_ok(yaml, &push("dev"));
    let t = job(&p, "t");
    assert_eq!(
        t.needs
            .as_ref()
            .map(|n| n.iter().map(|n| n.job.as_str()).collect::<Vec<_>>()),
        Some(vec!["a"])
    );
    assert!(!t.interruptible);
}

#[test]
fn an_invalid_expression_is_false() {
    let yaml = r#"
broken:
  script: x
  rules:
    - if: $A == "unterminated
    - if: $CI_COMMIT_BRANCH == "never-this"
ok:
  script: x
"#;
    // Compose may reject the expression at lint time; when it accepts it,
    // planning must treat it as false and not panic.
    let fs = gantry_config::load::MemorySource::single(".gitlab-ci.yml", yaml);
    if let Ok(loaded) = gantry_config::load::load(&fs, &Default::default()) {
        let p = gantry_config::plan::plan(&loaded.config, &push("main")).expect("plan");
        assert_eq!(skipped_reason(&p, "broken"), "rules: no rule matched");
    }
}
