//! Child pipelines of trigger jobs: the child's context (source, forwarded
//! variables), static children planned from their includes, dynamic ones
//! from YAML text, and what is not a child pipeline.

mod plan_support;

use gantry_config::child::{ChildSource, child_context, plan_child, plan_child_yaml, static_child};
use gantry_config::load::{LoadOptions, MemorySource, load};
use gantry_config::model::Pipeline;
use plan_support::*;

const PARENT: &str = "
variables:
  GLOBAL: g
build:
  stage: build
  script: make
child:
  stage: test
  variables:
    FOR_CHILD: yes-please
  trigger:
    include:
      - local: ci/child.yml
        inputs:
          flavour: fast
    strategy: depend
quiet-child:
  stage: test
  trigger:
    include: ci/child.yml
    forward:
      yaml_variables: false
      pipeline_variables: true
dynamic:
  stage: deploy
  trigger:
    include:
      - artifact: generated.yml
        job: build
downstream:
  stage: deploy
  trigger: other/project
";

const CHILD: &str = "
spec:
  inputs:
    flavour:
      default: slow
---
child-job:
  script: echo $[[ inputs.flavour ]]
  rules:
    - if: $CI_PIPELINE_SOURCE == \"parent_pipeline\"
";

fn parent() -> (MemorySource, Pipeline, gantry_config::context::Context) {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", PARENT)
        .with_file("ci/child.yml", CHILD);
    let ctx = with_vars("main", "push", &[("FROM_CLI", "v")]);
    let loaded = load(
        &src,
        &LoadOptions {
            variables: ctx.variables.clone(),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = gantry_config::plan::plan(&loaded.config, &ctx).expect("plan");
    (src, p, ctx)
}

#[test]
fn what_a_trigger_job_includes() {
    let (_, p, _) = parent();
    assert!(matches!(
        static_child(job(&p, "child")),
        ChildSource::Static(_)
    ));
    assert_eq!(
        static_child(job(&p, "dynamic")),
        ChildSource::Artifact {
            job: "build".into(),
            artifact: "generated.yml".into()
        }
    );
    assert_eq!(static_child(job(&p, "downstream")), ChildSource::None);
    assert_eq!(static_child(job(&p, "build")), ChildSource::None);
}

#[test]
fn the_child_context_forwards_as_gitlab_does() {
    let (_, p, ctx) = parent();
    let c = child_context(&ctx, job(&p, "child"));
    assert_eq!(c.source, "parent_pipeline");
    assert_eq!(c.variables["CI_PIPELINE_SOURCE"], "parent_pipeline");
    // yaml_variables (the trigger job's, globals included) pass by default,
    // the parent's pipeline variables do not.
    assert_eq!(c.overrides["FOR_CHILD"], "yes-please");
    assert_eq!(c.overrides["GLOBAL"], "g");
    assert!(!c.variables.contains_key("FROM_CLI"));
    let q = child_context(&ctx, job(&p, "quiet-child"));
    assert!(!q.variables.contains_key("FOR_CHILD"));
    assert_eq!(q.variables["FROM_CLI"], "v");
}

#[test]
fn a_static_child_is_planned_from_its_includes_with_inputs() {
    let (src, p, ctx) = parent();
    let child = plan_child(&src, &ctx, job(&p, "child"))
        .expect("valid")
        .expect("static");
    let j = job(&child.pipeline, "child-job");
    assert_eq!(j.script, ["echo fast"]);
    // Forwarded variables are pipeline variables of the child.
    assert_eq!(child.context.overrides["FOR_CHILD"], "yes-please");
    assert!(
        plan_child(&src, &ctx, job(&p, "dynamic"))
            .unwrap()
            .is_none()
    );
    assert!(
        plan_child(&src, &ctx, job(&p, "downstream"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_dynamic_child_is_planned_from_yaml_text_and_its_errors_point_into_it() {
    let (src, p, ctx) = parent();
    let trigger = job(&p, "dynamic");
    let generated = "include: ci/child.yml\nextra:\n  script: echo generated\n";
    let child = plan_child_yaml(&src, &ctx, trigger, generated, "generated.yml").expect("valid");
    let names: Vec<&str> = child
        .pipeline
        .jobs
        .iter()
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(names, ["child-job", "extra"]);
    let err = plan_child_yaml(&src, &ctx, trigger, "bad:\n  scirpt: x\n", "generated.yml")
        .expect_err("invalid");
    let shown = err.to_string();
    assert!(shown.contains("generated.yml:2:3"), "{shown}");
}
