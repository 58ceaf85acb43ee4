//! `gantry plan`: `only`/`except` (refs, variables, changes) and the
//! default `only: [branches, tags]`.

mod plan_support;

use gantry_config::context::Context;
use gantry_config::output::plan_human;
use plan_support::*;

const POLICIES: &str = r#"
default_only:
  script: x
main_only:
  script: x
  only: [main]
release_branches:
  script: x
  only:
    - /^release-.*$/
feature_ci:
  script: x
  only:
    - /^FEATURE/i
tags_only:
  script: x
  only: [tags]
schedules_only:
  script: x
  only: [schedules]
not_main:
  script: x
  except: [main]
this_project:
  script: x
  only: [branches@group/project]
other_project:
  script: x
  only: [branches@someone/fork]
mrs:
  script: x
  only: [merge_requests]
with_variable:
  script: x
  only:
    variables:
      - $RELEASE == "yes"
      - $CI_COMMIT_BRANCH == "never"
except_variable:
  script: x
  except:
    variables: [$SKIP_TESTS]
only_changes:
  script: x
  only:
    refs: [branches]
    changes: ["docs/*"]
except_changes:
  script: x
  except:
    changes: ["src/**/*"]
"#;

fn names(p: &gantry_config::model::Pipeline) -> Vec<String> {
    created(p).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn feature_branch_push() {
    let p = plan_ok(POLICIES, &push("feature/x"));
    assert_eq!(
        names(&p),
        [
            "default_only",
            "feature_ci",
            "not_main",
            "this_project",
            "except_variable"
        ]
    );
    assert_eq!(
        skipped_reason(&p, "main_only"),
        r#"only:refs [main] did not match ref "feature/x""#
    );
    assert_eq!(
        skipped_reason(&p, "other_project"),
        r#"only:refs [branches@someone/fork] did not match ref "feature/x""#
    );
    assert_eq!(
        skipped_reason(&p, "except_changes"),
        "except:changes [src/**/*]: a changed file matched"
    );
    insta::assert_snapshot!("only_except_feature_human", plan_human(&p));
}

#[test]
fn main_branch_with_variables() {
    let ctx = with_vars("main", "push", &[("RELEASE", "yes"), ("SKIP_TESTS", "1")]);
    let p = plan_ok(POLICIES, &ctx);
    assert!(names(&p).contains(&"main_only".to_string()));
    assert!(names(&p).contains(&"with_variable".to_string()));
    assert_eq!(
        skipped_reason(&p, "not_main"),
        "except:refs [main] matched: main"
    );
    assert_eq!(
        skipped_reason(&p, "except_variable"),
        "except:variables [$SKIP_TESTS]: $SKIP_TESTS was true"
    );
    insta::assert_snapshot!("only_except_main_human", plan_human(&p));
}

#[test]
fn release_branch_matches_the_regex() {
    let p = plan_ok(POLICIES, &push("release-1.0"));
    assert!(names(&p).contains(&"release_branches".to_string()));
    assert!(!names(&p).contains(&"feature_ci".to_string()));
}

#[test]
fn tags_and_schedules_match_keywords() {
    let p = plan_ok(POLICIES, &Context::new(&tag_facts("v2.0.0"), "push", &[]));
    assert!(names(&p).contains(&"tags_only".to_string()));
    assert!(names(&p).contains(&"default_only".to_string()));
    assert!(!names(&p).contains(&"this_project".to_string()));

    let p = plan_ok(POLICIES, &Context::new(&facts("main"), "schedule", &[]));
    assert!(names(&p).contains(&"schedules_only".to_string()));
}

#[test]
fn merge_request_pipelines_only_match_source_keywords() {
    let p = plan_ok(
        POLICIES,
        &Context::new(&facts("feature/x"), "merge_request_event", &[]),
    );
    assert_eq!(names(&p), ["mrs"]);
    assert_eq!(
        skipped_reason(&p, "default_only"),
        r#"only:refs [branches, tags] (default) did not match ref "feature/x" (merge request pipeline: only source keywords can match)"#
    );
}

#[test]
fn workflow_rules_drop_the_default_only() {
    let yaml = r#"
workflow:
  rules:
    - when: always
job:
  script: x
"#;
    let p = plan_ok(
        yaml,
        &Context::new(&facts("feature/x"), "merge_request_event", &[]),
    );
    assert_eq!(names(&p), ["job"]);
}
