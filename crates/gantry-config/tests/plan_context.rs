//! Predefined variables (`Context::new`): branch, tag and merge request
//! pipelines, `CI_COMMIT_REF_SLUG`, commit title/description, overrides.

mod plan_support;

use gantry_config::context::{Context, GitFacts, slugify};
use plan_support::*;

fn get<'c>(ctx: &'c Context, name: &str) -> Option<&'c str> {
    ctx.variables.get(name).map(String::as_str)
}

#[test]
fn branch_push_variables() {
    let ctx = push("feature/Login_Page");
    assert_eq!(get(&ctx, "CI"), Some("true"));
    assert_eq!(get(&ctx, "GITLAB_CI"), Some("true"));
    assert_eq!(get(&ctx, "CI_COMMIT_SHA"), Some(SHA));
    assert_eq!(get(&ctx, "CI_COMMIT_SHORT_SHA"), Some("01234567"));
    assert_eq!(
        get(&ctx, "CI_COMMIT_BEFORE_SHA"),
        Some("fedcba9876543210fedcba9876543210fedcba98")
    );
    assert_eq!(get(&ctx, "CI_COMMIT_REF_NAME"), Some("feature/Login_Page"));
    assert_eq!(get(&ctx, "CI_COMMIT_REF_SLUG"), Some("feature-login-page"));
    assert_eq!(get(&ctx, "CI_COMMIT_BRANCH"), Some("feature/Login_Page"));
    assert_eq!(get(&ctx, "CI_COMMIT_TAG"), None);
    assert_eq!(get(&ctx, "CI_COMMIT_REF_PROTECTED"), Some("false"));
    assert_eq!(get(&ctx, "CI_COMMIT_TITLE"), Some("Add the engine"));
    assert_eq!(get(&ctx, "CI_COMMIT_DESCRIPTION"), Some("\nIt computes."));
    assert_eq!(
        get(&ctx, "CI_COMMIT_MESSAGE"),
        Some("Add the engine\n\nIt computes.\n")
    );
    assert_eq!(
        get(&ctx, "CI_COMMIT_AUTHOR"),
        Some("Ada Lovelace <ada@example.com>")
    );
    assert_eq!(get(&ctx, "CI_DEFAULT_BRANCH"), Some("main"));
    assert_eq!(get(&ctx, "CI_PIPELINE_SOURCE"), Some("push"));
    assert_eq!(get(&ctx, "CI_PIPELINE_ID"), Some("1"));
    assert_eq!(get(&ctx, "CI_PIPELINE_IID"), Some("1"));
    assert_eq!(get(&ctx, "CI_PROJECT_PATH"), Some("group/project"));
    assert_eq!(get(&ctx, "CI_PROJECT_NAME"), Some("project"));
    assert_eq!(get(&ctx, "CI_PROJECT_NAMESPACE"), Some("group"));
    assert_eq!(get(&ctx, "CI_PROJECT_ROOT_NAMESPACE"), Some("group"));
    assert_eq!(get(&ctx, "CI_PROJECT_PATH_SLUG"), Some("group-project"));
    assert_eq!(
        get(&ctx, "CI_PROJECT_URL"),
        Some("https://gitlab.example.com/group/project")
    );
    assert_eq!(
        get(&ctx, "CI_SERVER_URL"),
        Some("https://gitlab.example.com")
    );
    assert_eq!(get(&ctx, "CI_SERVER_HOST"), Some("gitlab.example.com"));
    assert_eq!(get(&ctx, "CI_SERVER_PORT"), Some("443"));
    assert_eq!(
        get(&ctx, "CI_REGISTRY_IMAGE"),
        Some("registry.gitlab.example.com/group/project")
    );
    assert_eq!(get(&ctx, "CI_MERGE_REQUEST_IID"), None);
    assert_eq!(ctx.files.len(), 6);
    assert_eq!(ctx.changed_paths.as_ref().map(Vec::len), Some(2));
}

#[test]
fn default_branch_is_protected() {
    assert_eq!(get(&push("main"), "CI_COMMIT_REF_PROTECTED"), Some("true"));
}

#[test]
fn tag_pipeline_variables() {
    let ctx = Context::new(&tag_facts("v1.2.0"), "push", &[]);
    assert_eq!(get(&ctx, "CI_COMMIT_TAG"), Some("v1.2.0"));
    assert_eq!(get(&ctx, "CI_COMMIT_TAG_MESSAGE"), Some("Release"));
    assert_eq!(get(&ctx, "CI_COMMIT_BRANCH"), None);
    assert_eq!(get(&ctx, "CI_COMMIT_REF_SLUG"), Some("v1-2-0"));
}

#[test]
fn merge_request_variables_with_defaults() {
    let ctx = Context::new(&facts("feature/x"), "merge_request_event", &[]);
    assert_eq!(get(&ctx, "CI_PIPELINE_SOURCE"), Some("merge_request_event"));
    assert_eq!(get(&ctx, "CI_COMMIT_BRANCH"), None);
    assert_eq!(get(&ctx, "CI_COMMIT_REF_NAME"), Some("feature/x"));
    assert_eq!(
        get(&ctx, "CI_COMMIT_BEFORE_SHA"),
        Some("0000000000000000000000000000000000000000")
    );
    assert_eq!(get(&ctx, "CI_MERGE_REQUEST_IID"), Some("1"));
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"),
        Some("feature/x")
    );
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"),
        Some("main")
    );
    assert_eq!(get(&ctx, "CI_MERGE_REQUEST_EVENT_TYPE"), Some("detached"));
    assert_eq!(get(&ctx, "CI_MERGE_REQUEST_TITLE"), Some("Add the engine"));
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_PROJECT_PATH"),
        Some("group/project")
    );
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_REF_PATH"),
        Some("refs/merge-requests/1/head")
    );
    assert_eq!(get(&ctx, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA"), Some(""));
    assert_eq!(get(&ctx, "CI_OPEN_MERGE_REQUESTS"), Some("group/project!1"));
    let mr: Vec<String> = ctx
        .variables
        .iter()
        .filter(|(k, _)| k.starts_with("CI_MERGE_REQUEST_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    insta::assert_snapshot!("merge_request_variables", mr.join("\n"));
}

#[test]
fn merge_request_overrides_feed_derived_values() {
    let ctx = with_vars(
        "feature/x",
        "merge_request_event",
        &[
            ("CI_MERGE_REQUEST_IID", "42"),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "develop"),
        ],
    );
    assert_eq!(get(&ctx, "CI_MERGE_REQUEST_IID"), Some("42"));
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_REF_PATH"),
        Some("refs/merge-requests/42/head")
    );
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"),
        Some("develop")
    );
    assert_eq!(
        get(&ctx, "CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED"),
        Some("false")
    );
    assert_eq!(
        ctx.overrides
            .get("CI_MERGE_REQUEST_IID")
            .map(String::as_str),
        Some("42")
    );
}

#[test]
fn merge_request_rules_plan() {
    let yaml = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS
      when: never
    - if: $CI_COMMIT_BRANCH
review:
  script: review
  rules:
    - if: $CI_MERGE_REQUEST_TARGET_BRANCH_NAME == $CI_DEFAULT_BRANCH
push_only:
  script: x
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
"#;
    let p = plan_ok(
        yaml,
        &Context::new(&facts("feature/x"), "merge_request_event", &[]),
    );
    let names: Vec<String> = created(&p).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["review"]);
    let p = plan_ok(yaml, &push("feature/x"));
    let names: Vec<String> = created(&p).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["push_only"]);
}

#[test]
fn overrides_win() {
    let ctx = with_vars(
        "main",
        "web",
        &[("CI_COMMIT_REF_SLUG", "custom"), ("CI_PIPELINE_ID", "77")],
    );
    assert_eq!(get(&ctx, "CI_COMMIT_REF_SLUG"), Some("custom"));
    assert_eq!(get(&ctx, "CI_PIPELINE_ID"), Some("77"));
    assert_eq!(
        get(&ctx, "CI_PIPELINE_URL"),
        Some("https://gitlab.example.com/group/project/-/pipelines/77")
    );
    assert_eq!(get(&ctx, "CI_PIPELINE_SOURCE"), Some("web"));
}

#[test]
fn ref_slug_edge_cases() {
    assert_eq!(slugify("main"), "main");
    assert_eq!(slugify("Feature/ABC_123"), "feature-abc-123");
    assert_eq!(slugify("--weird--"), "weird");
    assert_eq!(slugify("/leading/and/trailing/"), "leading-and-trailing");
    assert_eq!(slugify("ünïcödé-branch"), "n-c-d--branch");
    assert_eq!(slugify("v1.2.3"), "v1-2-3");
    assert_eq!(slugify(""), "");
    assert_eq!(slugify("---"), "");
    // Cut to 63 characters before trailing dashes are trimmed.
    let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
    assert_eq!(slugify(&long), "a".repeat(62));
    let long = "x".repeat(100);
    assert_eq!(slugify(&long).len(), 63);
    // Each non-ASCII character becomes one dash, not one per byte.
    assert_eq!(slugify("a€b"), "a-b");
}

#[test]
fn long_titles_are_cut_in_the_description() {
    let title = "t".repeat(120);
    let facts = GitFacts {
        message: format!("{title}\nbody"),
        ..facts("main")
    };
    let ctx = Context::new(&facts, "push", &[]);
    assert_eq!(get(&ctx, "CI_COMMIT_TITLE"), Some(title.as_str()));
    let expected = format!("…{}\nbody", "t".repeat(40));
    assert_eq!(get(&ctx, "CI_COMMIT_DESCRIPTION"), Some(expected.as_str()));
}

#[test]
fn project_without_remote() {
    let facts = GitFacts {
        project_path: String::new(),
        project_url: None,
        project_dir: "/home/me/my-app".into(),
        ..facts("main")
    };
    let ctx = Context::new(&facts, "push", &[]);
    assert_eq!(get(&ctx, "CI_PROJECT_PATH"), Some("my-app"));
    assert_eq!(get(&ctx, "CI_PROJECT_NAME"), Some("my-app"));
    assert_eq!(get(&ctx, "CI_PROJECT_NAMESPACE"), Some(""));
    assert_eq!(get(&ctx, "CI_SERVER_URL"), Some("http://localhost"));
    assert_eq!(get(&ctx, "CI_PROJECT_URL"), Some("http://localhost/my-app"));
}
