//! `gantry plan`: `parallel` and `parallel:matrix` expansion, `needs`
//! (parallel expansion, `parallel:matrix` selectors, optional, errors),
//! `dependencies`, and the stages list.

mod plan_support;

use gantry_config::model::Need;
use gantry_config::output::{plan_human, plan_json};
use plan_support::*;

const PARALLEL: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script: make
  parallel: 3
  artifacts:
    paths: [out/]
deploy:
  stage: deploy
  script: deploy $PROVIDER $REGION
  variables:
    PROVIDER: none
  parallel:
    matrix:
      - PROVIDER: aws
        REGION: [eu, us]
      - PROVIDER: [gcp, azure]
        REGION: eu
      - PROVIDER: on-prem
  rules:
    - if: $PROVIDER == "azure"
      when: never
    - when: on_success
test:
  stage: test
  script: test
  needs: [build]
smoke:
  stage: deploy
  script: smoke
  needs:
    - job: deploy
      parallel:
        matrix:
          - PROVIDER: aws
            REGION: [eu, us]
    - job: build
      artifacts: false
"#;

#[test]
fn parallel_and_matrix_instances() {
    let p = plan_ok(PARALLEL, &push("main"));
    let names: Vec<String> = created(&p).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "build 1/3",
            "build 2/3",
            "build 3/3",
            "test",
            "deploy: [aws, eu]",
            "deploy: [aws, us]",
            "deploy: [gcp, eu]",
            "deploy: [on-prem]",
            "smoke",
        ]
    );
    let b2 = job(&p, "build 2/3");
    assert_eq!((b2.node_index, b2.node_total), (Some(2), Some(3)));
    assert_eq!(b2.definition, "build");
    // Matrix instances are numbered over all instances, excluded ones included.
    let onprem = job(&p, "deploy: [on-prem]");
    assert_eq!((onprem.node_index, onprem.node_total), (Some(5), Some(5)));
    assert_eq!(var(onprem, "PROVIDER"), Some("on-prem"));
    assert_eq!(var(job(&p, "deploy: [aws, us]"), "REGION"), Some("us"));
    // Rules see the matrix variables.
    assert_eq!(
        skipped_reason(&p, "deploy: [azure, eu]"),
        r#"rules[0] (if: $PROVIDER == "azure") → when: never"#
    );

    let need_names = |name: &str| -> Vec<String> {
        job(&p, name)
            .needs
            .as_ref()
            .map(|n| n.iter().map(|n| n.job.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(need_names("test"), ["build 1/3", "build 2/3", "build 3/3"]);
    assert_eq!(
        need_names("smoke"),
        [
            "deploy: [aws, eu]",
            "deploy: [aws, us]",
            "build 1/3",
            "build 2/3",
            "build 3/3"
        ]
    );
    // Artifacts come from needs with artifacts: true only.
    assert_eq!(
        job(&p, "smoke").dependencies,
        ["deploy: [aws, eu]", "deploy: [aws, us]"]
    );
    assert_eq!(
        job(&p, "test").dependencies,
        ["build 1/3", "build 2/3", "build 3/3"]
    );
    // Stage-ordered jobs download from earlier jobs that have artifacts.
    assert_eq!(
        job(&p, "deploy: [aws, eu]").dependencies,
        ["build 1/3", "build 2/3", "build 3/3"]
    );

    insta::assert_snapshot!("parallel_human", plan_human(&p));
    insta::assert_json_snapshot!("parallel_json", plan_json(&p));
}

#[test]
fn needs_on_a_job_that_is_not_created() {
    let yaml = r#"
stages: [build, test]
build:
  stage: build
  script: make
  rules:
    - if: $CI_COMMIT_TAG
test:
  stage: test
  script: test
  needs: [build]
"#;
    let errors = plan_errors(yaml, &push("main"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .ends_with("'test' job needs 'build' job, but 'build' is not in any previous stage"),
        "{errors:?}"
    );
    // The error points at the need (line 11: `  needs: [build]`).
    assert!(errors[0].starts_with("11:"), "{errors:?}");
}

#[test]
fn optional_needs_on_missing_jobs_are_dropped() {
    let yaml = r#"
stages: [build, test]
build:
  stage: build
  script: make
  rules:
    - if: $CI_COMMIT_TAG
lint:
  stage: build
  script: lint
test:
  stage: test
  script: test
  needs:
    - job: build
      optional: true
    - lint
"#;
    let p = plan_ok(yaml, &push("main"));
    let t = job(&p, "test");
    let needs: Vec<&str> = t
        .needs
        .as_ref()
        .map(|n| n.iter().map(|n| n.job.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(needs, ["lint"]);
    assert_eq!(t.dependencies, ["lint"]);
}

#[test]
fn needs_on_a_later_stage_is_an_error() {
    // The loader rejects this at lint time; planning checks it again for
    // models built in other ways.
    let yaml = r#"
stages: [build, test]
early:
  stage: build
  script: make
late:
  stage: test
  script: test
"#;
    let mut config = load_yaml(yaml);
    let need = Need {
        job: "late".into(),
        artifacts: true,
        optional: false,
        matrix: None,
        pipeline: None,
        project: None,
        git_ref: None,
        span: None,
    };
    if let Some(early) = config.jobs.get_mut("early") {
        early.needs = Some(vec![need]);
    }
    let errors = match gantry_config::plan::plan(&config, &push("main")) {
        Ok(p) => panic!("expected an error, got {:?}", created(&p)),
        Err(d) => d,
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].message,
        "'early' job needs 'late' job, but 'late' is not in any previous stage"
    );
    // Without a span on the need, the error points at the job.
    assert_eq!(errors[0].span.map(|s| s.line), Some(3));
}

#[test]
fn needs_cycles_within_a_stage_are_reported() {
    let yaml = r#"
a:
  script: a
b:
  script: b
"#;
    let mut config = load_yaml(yaml);
    let need = |job: &str| Need {
        job: job.into(),
        artifacts: true,
        optional: false,
        matrix: None,
        pipeline: None,
        project: None,
        git_ref: None,
        span: None,
    };
    if let Some(a) = config.jobs.get_mut("a") {
        a.needs = Some(vec![need("b")]);
    }
    if let Some(b) = config.jobs.get_mut("b") {
        b.needs = Some(vec![need("a")]);
    }
    let errors = gantry_config::plan::plan(&config, &push("main")).expect_err("cycle");
    assert_eq!(
        errors[0].message,
        "circular dependency detected in `needs` between jobs: a, b"
    );
}

#[test]
fn same_stage_needs_and_empty_needs() {
    let yaml = r#"
stages: [build, test]
a:
  stage: build
  script: a
  artifacts:
    paths: [a.txt]
b:
  stage: build
  script: b
  needs: [a]
c:
  stage: test
  script: c
  needs: []
d:
  stage: test
  script: d
  dependencies: []
e:
  stage: test
  script: e
  dependencies: [b]
"#;
    let p = plan_ok(yaml, &push("main"));
    assert_eq!(job(&p, "b").needs.as_ref().map(|n| n.len()), Some(1));
    assert_eq!(job(&p, "c").needs.as_ref().map(|n| n.len()), Some(0));
    assert!(job(&p, "c").dependencies.is_empty());
    assert!(job(&p, "d").needs.is_none());
    assert!(job(&p, "d").dependencies.is_empty());
    // Explicit dependencies are kept even without declared artifacts.
    assert_eq!(job(&p, "e").dependencies, ["b"]);
    let json = plan_json(&p);
    assert_eq!(json["jobs"][2]["needs"], serde_json::json!([]));
    assert_eq!(json["jobs"][3]["needs"], serde_json::Value::Null);
    insta::assert_snapshot!("needs_dependencies_human", plan_human(&p));
}

#[test]
fn stages_without_jobs_are_left_out() {
    let yaml = r#"
stages: [build, test, deploy]
pre:
  stage: .pre
  script: x
build:
  stage: build
  script: x
deploy:
  stage: deploy
  script: x
"#;
    let p = plan_ok(yaml, &push("main"));
    assert_eq!(p.stages, [".pre", "build", "deploy"]);
}

#[test]
fn parallel_dependencies_expand_to_every_instance() {
    let yaml = r#"
stages: [build, test]
build:
  stage: build
  script: make
  parallel: 2
other:
  stage: build
  script: make
  artifacts:
    paths: [x]
test:
  stage: test
  script: test
  dependencies: [build]
"#;
    let p = plan_ok(yaml, &push("main"));
    assert_eq!(job(&p, "test").dependencies, ["build 1/2", "build 2/2"]);
}
