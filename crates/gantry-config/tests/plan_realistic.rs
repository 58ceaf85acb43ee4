//! `gantry plan` on a realistic pipeline (`fixtures/plan/webapp.gitlab-ci.yml`)
//! for the contexts a project sees: a push to main, to a feature branch, a
//! merge request, release and non-release tags. Full JSON and human
//! snapshots.

mod plan_support;

use gantry_config::context::{Context, GitFacts};
use gantry_config::model::PipelineStatus;
use gantry_config::output::{plan_human, plan_json};
use gantry_config::plan::plan;
use plan_support::*;

fn webapp() -> gantry_config::model::Config {
    load_yaml(&fixture("webapp.gitlab-ci.yml"))
}

fn names(p: &gantry_config::model::Pipeline) -> Vec<String> {
    created(p).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn push_to_main() {
    let p = plan(&webapp(), &push("main")).expect("plan");
    assert_eq!(p.status, PipelineStatus::Created);
    assert_eq!(p.name.as_deref(), Some("push pipeline for main"));
    assert_eq!(
        names(&p),
        ["build", "unit 1/2", "unit 2/2", "lint", "e2e", "staging"]
    );
    assert_eq!(p.stages, ["build", "test", "deploy"]);
    let staging = job(&p, "staging");
    assert!(!staging.interruptible);
    assert_eq!(staging.resource_group.as_deref(), Some("staging"));
    assert_eq!(staging.dependencies, ["build", "unit 1/2", "unit 2/2"]);
    assert_eq!(job(&p, "lint").when.as_str(), "manual");
    assert!(job(&p, "lint").allow_failure);
    let e2e = job(&p, "e2e");
    assert_eq!(e2e.dependencies, ["build"]);
    assert_eq!(e2e.retry.max, 2);
    assert_eq!(e2e.timeout, Some(1800));
    assert_eq!(var(job(&p, "build"), "DOCKER_TLS_CERTDIR"), Some("/certs"));
    assert_eq!(
        skipped_reason(&p, "pages"),
        "only:changes [docs/**/*]: no changed file matched"
    );
    insta::assert_snapshot!("webapp_main_human", plan_human(&p));
    insta::assert_json_snapshot!("webapp_main_json", plan_json(&p));
}

#[test]
fn push_to_a_feature_branch() {
    let p = plan(&webapp(), &push("feature/search")).expect("plan");
    assert_eq!(names(&p), ["build", "unit 1/2", "unit 2/2", "lint"]);
    insta::assert_snapshot!("webapp_feature_human", plan_human(&p));
}

#[test]
fn push_to_a_branch_with_an_open_merge_request_is_filtered() {
    let ctx = with_vars(
        "feature/search",
        "push",
        &[("CI_OPEN_MERGE_REQUESTS", "group/project!7")],
    );
    let p = plan(&webapp(), &ctx).expect("plan");
    assert_eq!(p.status, PipelineStatus::Filtered);
    assert_eq!(
        p.filtered_reason.as_deref(),
        Some("workflow:rules[1] (if: $CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS) → when: never")
    );
    assert_eq!(plan_json(&p)["status"], "filtered");
    assert!(
        plan_json(&p)["jobs"]
            .as_array()
            .is_some_and(|j| j.is_empty())
    );
}

#[test]
fn merge_request() {
    let p = plan(
        &webapp(),
        &Context::new(&facts("feature/search"), "merge_request_event", &[]),
    )
    .expect("plan");
    assert_eq!(
        names(&p),
        [
            "build",
            "unit 1/2",
            "unit 2/2",
            "lint",
            "e2e",
            "review",
            "stop_review"
        ]
    );
    assert_eq!(job(&p, "stop_review").when.as_str(), "manual");
    assert!(!job(&p, "stop_review").allow_failure);
    // environment name and url are expanded when the job is created.
    let env = job(&p, "review").environment.as_ref().expect("environment");
    assert_eq!(env.name, "review/feature-search");
    assert_eq!(
        env.url.as_deref(),
        Some("https://feature-search.review.example.com")
    );
    insta::assert_snapshot!("webapp_mr_human", plan_human(&p));
    insta::assert_json_snapshot!("webapp_mr_json", plan_json(&p));
}

#[test]
fn release_tag() {
    let ctx = Context::new(&tag_facts("v1.2.3"), "push", &[]);
    let p = plan(&webapp(), &ctx).expect("plan");
    assert_eq!(
        names(&p),
        ["build", "unit 1/2", "unit 2/2", "lint", "production"]
    );
    let prod = job(&p, "production");
    assert_eq!(prod.when.as_str(), "manual");
    assert!(!prod.allow_failure);
    assert_eq!(var(prod, "DEPLOY_TIER"), Some("production"));
    assert_eq!(prod.resource_group.as_deref(), Some("production"));
    assert_eq!(
        p.variables
            .iter()
            .find(|v| v.name == "DEPLOY_TIER")
            .map(|v| v.value.as_str()),
        Some("production")
    );
    // Without a diff, `changes:` matches: lint runs automatically.
    assert_eq!(job(&p, "lint").when.as_str(), "on_success");
    insta::assert_snapshot!("webapp_tag_human", plan_human(&p));
}

#[test]
fn other_tag() {
    let facts = GitFacts {
        ..tag_facts("nightly-2026-11-01")
    };
    let p = plan(&webapp(), &Context::new(&facts, "push", &[])).expect("plan");
    assert_eq!(
        skipped_reason(&p, "production"),
        r#"rules[1] (if: $CI_COMMIT_TAG) → when: never"#
    );
    assert_eq!(
        skipped_reason(&p, "pages"),
        r#"only:refs [main] did not match ref "nightly-2026-11-01""#
    );
}
