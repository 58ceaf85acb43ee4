//! One test (or more) per validation and composition rule.

use super::*;
use crate::model::{AllowFailure, CacheKey, CachePolicy, Parallel, When};
use crate::source::FileId;
use crate::yaml::{Limits, parse};

fn doc(src: &str) -> Node {
    parse(src, FileId(0), &Limits::default()).unwrap_or_else(|d| panic!("bad test YAML: {d:?}"))
}

fn ok(src: &str) -> Config {
    compose(&doc(src)).unwrap_or_else(|d| {
        panic!(
            "unexpected errors:\n{}",
            d.iter()
                .map(|d| d.message.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn errors(src: &str) -> Vec<Diagnostic> {
    match compose(&doc(src)) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}

/// Asserts some error contains `needle` and returns it.
#[track_caller]
fn err(src: &str, needle: &str) -> Diagnostic {
    let all = errors(src);
    all.iter()
        .find(|d| d.message.contains(needle))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no error containing {needle:?}; got:\n{}",
                all.iter()
                    .map(|d| d.message.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

#[track_caller]
fn line_col(d: &Diagnostic) -> (u32, u32) {
    let s = d.span.expect("error has a span");
    (s.line, s.col)
}

// ---- keys and types ----

#[test]
fn unknown_job_key_suggests_the_closest_and_lists_valid_ones() {
    let d = err(
        "build:\n  scirpt: make\n",
        "unknown key `scirpt` in job `build`",
    );
    assert!(
        d.message.contains("did you mean `script`?"),
        "{}",
        d.message
    );
    assert_eq!(line_col(&d), (2, 3));
    let expected = d.expected.unwrap_or_default();
    assert!(expected.starts_with("one of: script, stage,"), "{expected}");
}

#[test]
fn wrong_types_name_the_keyword_the_job_and_what_was_expected() {
    let d = err(
        "x:\n  script: a\n  timeout: 3600\n",
        "`timeout` in job `x` must be a non-empty string",
    );
    assert_eq!(line_col(&d), (3, 12));
    assert!(d.message.contains("not the integer 3600"));
    let d = err(
        "x:\n  script: a\n  timeout: 2 fortnights\n",
        "`timeout` in job `x` must be a duration",
    );
    assert!(d.expected.unwrap_or_default().contains("1h 30m"));
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let all =
        errors("a:\n  script: x\n  when: sometimes\nb:\n  script: y\n  retry: 5\n  tags: nope\n");
    assert_eq!(all.len(), 3, "{all:?}");
}

#[test]
fn non_hash_job_and_non_hash_root_are_errors() {
    err(
        "script: echo hi\n",
        "job `script` must be a hash of keywords",
    );
    let all = errors("- a\n- b\n");
    assert!(all[0].message.contains("configuration must be a hash"));
}

#[test]
fn legacy_types_and_type_stand_for_stages_and_stage() {
    let c = ok("types: [one, two]\nx:\n  type: two\n  script: a\n");
    assert_eq!(c.stages, [".pre", "one", "two", ".post"]);
    assert_eq!(c.jobs["x"].stage, "two");
    let c = ok("stages: [a, b]\ntypes: [c]\nx:\n  stage: b\n  type: a\n  script: a\n");
    assert_eq!((c.stages.len(), c.jobs["x"].stage.as_str()), (4, "b"));
    err(
        "types: [a]\nx:\n  type: b\n  script: a\n",
        "chosen stage `b` does not exist",
    );
}

#[test]
fn job_names_are_limited_to_255_characters() {
    let name = "j".repeat(256);
    err(&format!("{name}:\n  script: a\n"), "is too long");
}

// ---- script ----

#[test]
fn scripts_flatten_nested_arrays() {
    let c = ok(
        "x:\n  before_script: [[a, b], c]\n  script:\n    - [d, e]\n    - f\n  after_script: ''\n",
    );
    let x = &c.jobs["x"];
    assert_eq!(x.before_script, ["a", "b", "c"]);
    assert_eq!(x.script, ["d", "e", "f"]);
    assert!(x.after_script.is_empty());
}

#[test]
fn script_must_not_be_empty_and_must_hold_strings() {
    err(
        "x:\n  script: []\n",
        "`script` in job `x` must be a non-empty",
    );
    err(
        "x:\n  script: ''\n",
        "`script` in job `x` must be a non-empty",
    );
    // `!reference` can nest script arrays; GitLab flattens up to 10 levels.
    assert_eq!(
        ok("x:\n  script: [[[a], b], c]\n").jobs["x"].script,
        ["a", "b", "c"]
    );
    err(
        "x:\n  script: [[[[[[[[[[[a]]]]]]]]]]]\n",
        "at most 10 levels deep",
    );
    err(
        "x:\n  script: [1]\n",
        "must be a string or an array of strings",
    );
}

#[test]
fn script_and_run_exclude_each_other() {
    err(
        "x:\n  script: a\n  run:\n    - name: s\n      script: b\n",
        "job `x` cannot use both `script` and `run`",
    );
}

#[test]
fn publish_only_in_pages_jobs() {
    ok("pages:\n  script: a\n  publish: public\n");
    ok("docs:\n  script: a\n  pages: true\n  publish: public\n");
    err(
        "docs:\n  script: a\n  publish: public\n",
        "can only be used within a `pages` job",
    );
    err(
        "pages:\n  script: a\n  pages: false\n  publish: public\n",
        "can only be used within a `pages` job",
    );
}

#[test]
fn a_job_needs_script_run_or_trigger() {
    err(
        "x:\n  stage: test\n",
        "should implement the script:, run:, or trigger: keyword",
    );
    ok("x:\n  run:\n    - name: hello\n      script: echo hi\n");
}

// ---- when / start_in / rules ----

#[test]
fn job_when_values_and_never_only_in_rules() {
    for w in ["on_success", "on_failure", "always", "manual"] {
        let c = ok(&format!("x:\n  script: a\n  when: {w}\n"));
        assert_eq!(c.jobs["x"].when, When::parse(w));
    }
    err(
        "x:\n  script: a\n  when: never\n",
        "`when` in job `x` must be one of",
    );
    let c = ok("x:\n  script: a\n  rules:\n    - when: never\n");
    assert_eq!(
        c.jobs["x"].rules.as_ref().unwrap()[0].when,
        Some(When::Never)
    );
}

#[test]
fn delayed_needs_start_in_of_at_most_a_week() {
    let c = ok("x:\n  script: a\n  when: delayed\n  start_in: 30 minutes\n");
    let start_in = c.jobs["x"].start_in.as_ref().expect("start_in");
    assert_eq!(
        (start_in.text.as_str(), start_in.seconds),
        ("30 minutes", 1800)
    );
    err(
        "x:\n  script: a\n  when: delayed\n",
        "uses `when: delayed` without `start_in`",
    );
    err(
        "x:\n  script: a\n  start_in: 1 day\n",
        "is only allowed with `when: delayed`",
    );
    err(
        "x:\n  script: a\n  when: delayed\n  start_in: 8 days\n",
        "at most one week",
    );
    err(
        "x:\n  script: a\n  rules:\n    - when: delayed\n",
        "uses `when: delayed` without `start_in`",
    );
    ok("x:\n  script: a\n  rules:\n    - when: delayed\n      start_in: 1 hour\n");
}

#[test]
fn rules_cannot_be_mixed_with_only_except_or_start_in() {
    err(
        "x:\n  script: a\n  rules: [{when: always}]\n  only: [main]\n",
        "`only` in job `x` may not be used with `rules`",
    );
    err(
        "x:\n  script: a\n  rules: [{when: always}]\n  except: [main]\n",
        "`except` in job `x` may not be used",
    );
    // `only:` left empty (e.g. to drop an inherited one) is fine.
    ok("x:\n  script: a\n  rules: [{when: always}]\n  only:\n");
}

#[test]
fn rules_are_parsed_with_every_attribute() {
    let c = ok(r#"
x:
  script: a
  rules:
    - if: '$CI_COMMIT_BRANCH == "main"'
      changes: {paths: [src/**/*], compare_to: main}
      exists: [Dockerfile]
      when: manual
      allow_failure: true
      variables: {A: 1, B: "two", C: true}
      needs: [y, {job: z, artifacts: false, optional: true}]
      interruptible: true
    - [{when: on_success}]
y:
  script: b
"#);
    let rules = c.jobs["x"].rules.as_ref().unwrap();
    assert_eq!(rules.len(), 2, "nested rule arrays are flattened");
    let r = &rules[0];
    assert_eq!(r.if_expr.as_deref(), Some("$CI_COMMIT_BRANCH == \"main\""));
    let ch = r.changes.as_ref().unwrap();
    assert_eq!(
        (ch.paths.as_slice(), ch.compare_to.as_deref()),
        (&["src/**/*".to_string()][..], Some("main"))
    );
    assert_eq!(r.exists.as_ref().unwrap().paths, ["Dockerfile"]);
    assert_eq!(r.when, Some(When::Manual));
    assert_eq!(r.allow_failure, Some(AllowFailure::Bool(true)));
    let vars: Vec<(&str, &str)> = r
        .variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(vars, [("A", "1"), ("B", "two"), ("C", "true")]);
    let needs = r.needs.as_ref().unwrap();
    assert_eq!(
        (needs[1].job.as_str(), needs[1].artifacts, needs[1].optional),
        ("z", false, true)
    );
    assert_eq!(r.interruptible, Some(true));
}

#[test]
fn rule_keys_and_values_are_checked() {
    err(
        "x:\n  script: a\n  rules:\n    - if: 1\n",
        "`rules:if` in job `x` must be a string",
    );
    err(
        "x:\n  script: a\n  rules:\n    - iff: $X\n",
        "did you mean `if`?",
    );
    err(
        "x:\n  script: a\n  rules:\n    - variables: {A: {value: b}}\n",
        "must be a string, a number or a boolean",
    );
    err(
        "x:\n  script: a\n  rules:\n    - changes: {compare_to: main}\n",
        "needs `paths` or `regexp`",
    );
    err(
        "x:\n  script: a\n  rules:\n    - exists: {paths: [a], ref: main}\n",
        "`rules:exists:ref` in job `x` needs `project`",
    );
    err(
        "x:\n  script: a\n  rules: main\n",
        "must be an array of rules",
    );
    err(
        "x:\n  script: a\n  rules:\n    - allow_failure: {exit_codes: 1}\n",
        "must be a boolean",
    );
}

#[test]
fn only_and_except_in_both_forms() {
    let c = ok(r#"
x:
  script: a
  only: [main, /^release/]
  except:
    refs: [tags]
    variables: [$SKIP]
    changes: [docs/*]
    kubernetes: active
"#);
    let x = &c.jobs["x"];
    assert_eq!(x.only.as_ref().unwrap().refs, ["main", "/^release/"]);
    let ex = x.except.as_ref().unwrap();
    assert_eq!(ex.refs, ["tags"]);
    assert_eq!(ex.variables, ["$SKIP"]);
    assert_eq!(ex.changes.as_ref().unwrap().paths, ["docs/*"]);
    assert_eq!(ex.kubernetes.as_deref(), Some("active"));
    err(
        "x:\n  script: a\n  only: main\n",
        "`only` in job `x` must be an array of refs",
    );
    err(
        "x:\n  script: a\n  only: {kubernetes: passive}\n",
        "must be one of: active",
    );
}

// ---- variables ----

#[test]
fn variables_become_strings_as_written_and_job_ones_win() {
    let c = ok(r#"
variables:
  NUM: 1.10
  INT: 0x1F
  FLAG: yes
  FULL:
    value: staging
    description: where
    options: [staging, production]
    expand: false
  ONLY_DESC:
    description: nothing else
x:
  script: a
  variables:
    FLAG: "no"
    OWN: {value: $X, expand: false}
"#);
    let vars: Vec<(&str, &str, bool)> = c.jobs["x"]
        .variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str(), v.expand))
        .collect();
    assert_eq!(
        vars,
        [
            ("NUM", "1.1", true),
            ("INT", "31", true),
            ("FLAG", "no", true),
            ("FULL", "staging", false),
            ("ONLY_DESC", "", true),
            ("OWN", "$X", false),
        ]
    );
    let full = &c.variables[3];
    assert_eq!(full.options, ["staging", "production"]);
    assert_eq!(full.description.as_deref(), Some("where"));
}

#[test]
fn variable_hash_forms_are_checked_per_scope() {
    err(
        "variables:\n  A: {value: x, options: [y, z]}\nj:\n  script: a\n",
        "must be one of its `options`",
    );
    err(
        "variables:\n  A: {value: x, desc: y}\nj:\n  script: a\n",
        "unknown key `desc` in `variables:A`",
    );
    err(
        "j:\n  script: a\n  variables:\n    A: {value: x, description: y}\n",
        "unknown key `description`",
    );
    err(
        "variables:\n  A: [1]\nj:\n  script: a\n",
        "`variables:A` must be a string, a number",
    );
    err(
        "variables:\n  A: {value: 1}\nj:\n  script: a\n",
        "`variables:A:value` must be a string",
    );
    // A null variable is the empty string (issue 7).
    assert_eq!(
        ok("variables:\n  A:\nj:\n  script: a\n").variables[0].value,
        ""
    );
}

#[test]
fn inherit_variables_filters_global_variables() {
    let src = |inherit: &str| {
        format!(
            "variables:\n  A: a\n  B: b\nx:\n  script: s\n  inherit:\n    variables: {inherit}\n"
        )
    };
    let names = |c: &Config| {
        c.jobs["x"]
            .variables
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ok(&src("true"))), ["A", "B"]);
    assert!(names(&ok(&src("false"))).is_empty());
    assert_eq!(names(&ok(&src("[B]"))), ["B"]);
    err(
        &src("maybe"),
        "`inherit:variables` in job `x` must be a boolean or an array",
    );
}

// ---- default: and legacy globals ----

#[test]
fn default_values_fill_unset_job_keys_whole() {
    let c = ok(r#"
default:
  image: ruby:3
  before_script: [setup]
  retry: 2
  tags: [docker]
  timeout: 1h
  interruptible: true
  hooks: {pre_get_sources_script: [echo hi]}
  artifacts: {paths: [out/]}
a:
  script: x
b:
  script: y
  image: {name: alpine, entrypoint: [""]}
  tags: []
  before_script: []
"#);
    let a = &c.jobs["a"];
    assert_eq!(a.image.as_ref().unwrap().name, "ruby:3");
    assert_eq!(a.before_script, ["setup"]);
    assert_eq!(a.retry.as_ref().unwrap().max, 2);
    assert_eq!(a.tags, ["docker"]);
    assert_eq!(a.timeout, Some(3600));
    assert_eq!(a.interruptible, Some(true));
    assert!(a.extra.contains_key("hooks"));
    assert_eq!(a.artifacts.as_ref().unwrap().paths, ["out/"]);
    let b = &c.jobs["b"];
    assert_eq!(b.image.as_ref().unwrap().name, "alpine");
    assert!(
        b.tags.is_empty() && b.before_script.is_empty(),
        "a job's own value wins, even empty"
    );
}

#[test]
fn inherit_default_false_or_a_list() {
    let src = |inherit: &str| {
        format!(
            "default:\n  image: ruby\n  tags: [t]\nx:\n  script: s\n  inherit:\n    default: {inherit}\n"
        )
    };
    let c = ok(&src("false"));
    assert!(c.jobs["x"].image.is_none() && c.jobs["x"].tags.is_empty());
    let c = ok(&src("[tags]"));
    assert!(c.jobs["x"].image.is_none());
    assert_eq!(c.jobs["x"].tags, ["t"]);
    err(
        &src("[variables]"),
        "`inherit:default` in job `x` must be one of: after_script",
    );
}

#[test]
fn legacy_global_keywords_act_as_defaults_but_not_together_with_default() {
    let c = ok(
        "image: node\nservices: [postgres]\nbefore_script: [b]\nafter_script: [a]\ncache: {paths: [c]}\nx:\n  script: s\n",
    );
    let x = &c.jobs["x"];
    assert_eq!(x.image.as_ref().unwrap().name, "node");
    assert_eq!(x.services[0].name, "postgres");
    assert_eq!(
        (x.before_script.as_slice(), x.after_script.as_slice()),
        (&["b".to_string()][..], &["a".to_string()][..])
    );
    assert_eq!(x.cache[0].paths, ["c"]);
    let d = err(
        "image: node\ndefault:\n  image: ruby\nx:\n  script: s\n",
        "`image` is defined both at the top level",
    );
    assert_eq!(line_col(&d), (1, 1));
}

#[test]
fn default_keys_are_checked() {
    err(
        "default:\n  script: [x]\nx:\n  script: s\n",
        "unknown key `script` in `default`",
    );
    err(
        "default:\n  before_script: 0.1\nx:\n  script: s\n",
        "`default:before_script` must be",
    );
}

// ---- stages ----

#[test]
fn stages_get_pre_and_post_and_default_to_build_test_deploy() {
    assert_eq!(
        ok("x:\n  script: s\n").stages,
        [".pre", "build", "test", "deploy", ".post"]
    );
    let c = ok("stages: [a, [b, c], .post, .pre]\nx:\n  stage: c\n  script: s\n");
    assert_eq!(c.stages, [".pre", "a", "b", "c", ".post"]);
    assert_eq!(c.jobs["x"].stage, "c");
    assert_eq!(ok("x:\n  script: s\n").jobs["x"].stage, "test");
}

#[test]
fn stages_must_be_unique_names_and_jobs_must_use_one() {
    err(
        "stages: []\nx:\n  script: s\n",
        "`stages` must be a non-empty array",
    );
    err(
        "stages: [a, a]\nx:\n  stage: a\n  script: s\n",
        "lists the stage `a` twice",
    );
    err(
        "stages: [1]\nx:\n  script: s\n",
        "`stages` must be a string",
    );
    let d = err(
        "stages: [build]\nx:\n  stage: deploy\n  script: s\n",
        "chosen stage `deploy` does not exist",
    );
    assert_eq!(line_col(&d), (3, 10));
    assert!(
        d.expected
            .unwrap_or_default()
            .contains(".pre, build, .post")
    );
    ok("x:\n  stage: .pre\n  script: s\n");
}

// ---- jobs: hidden, none visible ----

#[test]
fn hidden_jobs_are_dropped_and_not_validated() {
    let c = ok(".tmpl:\n  scirpt: whatever\n.anchor: &a [1, 2]\nx:\n  script: s\n");
    assert_eq!(c.jobs.keys().collect::<Vec<_>>(), ["x"]);
}

#[test]
fn a_pipeline_needs_a_visible_job() {
    let d = err(
        ".hidden:\n  script: s\nstages: [a]\n",
        "jobs config should contain at least one visible job",
    );
    assert!(d.span.is_some());
    // validate() (fragments) does not ask for jobs.
    assert!(validate(&doc("stages: [a]\n")).is_empty());
}

// ---- needs / dependencies ----

#[test]
fn needs_are_parsed_in_every_form() {
    let c = ok(r#"
a:
  stage: build
  script: s
  parallel:
    matrix:
      - P: [x, y]
b:
  script: s
  needs:
    - a
    - job: a
      artifacts: false
      parallel:
        matrix:
          - P: x
    - pipeline: $UPSTREAM
      job: build
    - project: group/other
      job: build
      ref: main
      artifacts: true
    - job: ghost
      optional: true
"#);
    let needs = c.jobs["b"].needs.as_ref().unwrap();
    assert_eq!(needs.len(), 5);
    assert!(!needs[1].artifacts);
    assert_eq!(needs[1].matrix.as_ref().unwrap()[0]["P"], ["x"]);
    assert_eq!(needs[2].pipeline.as_deref(), Some("$UPSTREAM"));
    assert_eq!(
        (needs[3].project.as_deref(), needs[3].git_ref.as_deref()),
        (Some("group/other"), Some("main"))
    );
    assert!(needs[4].optional);
}

#[test]
fn needs_name_existing_jobs_in_current_or_earlier_stages() {
    let d = err(
        "a:\n  script: s\nb:\n  script: s\n  needs: [c]\n",
        "job `b` needs `c`, which is not a job",
    );
    assert_eq!(line_col(&d), (5, 11));
    let d = err(
        "build:\n  script: s\nb:\n  script: s\n  needs: [biuld]\n",
        "did you mean `build`?",
    );
    assert!(d.expected.is_some());
    err(
        "a:\n  stage: deploy\n  script: s\nb:\n  stage: build\n  script: s\n  needs: [a]\n",
        "job `b` needs `a`, which is not in the current or an earlier stage",
    );
    ok("a:\n  script: s\nb:\n  script: s\n  needs: [a]\n");
    err(
        "a:\n  script: s\n  rules:\n    - needs: [zzz]\n",
        "job `a` needs `zzz`",
    );
}

#[test]
fn needs_limits_and_shapes() {
    let many: Vec<String> = (0..51).map(|i| format!("j{i}")).collect();
    let mut src = String::new();
    for j in &many {
        src.push_str(&format!("{j}:\n  script: s\n"));
    }
    src.push_str(&format!(
        "x:\n  script: s\n  needs: [{}]\n",
        many.join(", ")
    ));
    err(&src, "a job can need at most 50 jobs");
    err(
        "x:\n  script: s\n  needs:\n    - project: a/b\n      job: c\n",
        "is missing the required key `ref`",
    );
    err(
        "x:\n  script: s\n  needs:\n    - job: c\n      parallel: 3\n",
        "`needs:parallel` in job `x` must be a hash",
    );
    err(
        "x:\n  script: s\n  needs: x\n",
        "`needs` in job `x` must be an array",
    );
}

#[test]
fn cycles_in_needs_are_reported_with_their_path() {
    let d = err(
        "a:\n  script: s\n  needs: [c]\nb:\n  script: s\n  needs: [a]\nc:\n  script: s\n  needs: [b]\n",
        "circular dependency in `needs`",
    );
    assert!(d.message.contains("a → c → b → a"), "{}", d.message);
    let all = errors("a:\n  script: s\n  needs: [a]\n");
    assert_eq!(
        all.iter()
            .filter(|d| d.message.contains("circular"))
            .count(),
        1
    );
}

#[test]
fn dependencies_must_exist_come_earlier_and_be_in_needs() {
    ok("a:\n  stage: build\n  script: s\nb:\n  script: s\n  dependencies: [a]\n");
    err(
        "a:\n  script: s\n  dependencies: [zz]\n",
        "has the dependency `zz`, which is not a job",
    );
    err(
        "a:\n  stage: deploy\n  script: s\nb:\n  stage: build\n  script: s\n  dependencies: [a]\n",
        "the dependency `a` is not defined in current or prior stages",
    );
    err(
        "a:\n  stage: build\n  script: s\nc:\n  stage: build\n  script: s\nb:\n  script: s\n  needs: [c]\n  dependencies: [a]\n",
        "the dependency `a` should be part of `needs`",
    );
    ok("a:\n  script: s\nb:\n  script: s\n  needs: [a]\n  dependencies: [a]\n");
}

// ---- environment ----

#[test]
fn environment_forms_and_on_stop_checks() {
    let good = r#"
deploy:
  script: s
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://example.com
    on_stop: stop
    auto_stop_in: 1 day
    deployment_tier: staging
stop:
  script: s
  when: manual
  environment: {name: review/$CI_COMMIT_REF_SLUG, action: stop}
"#;
    let c = ok(good);
    let env = c.jobs["deploy"].environment.as_ref().unwrap();
    assert_eq!(
        (env.on_stop.as_deref(), env.deployment_tier.as_deref()),
        (Some("stop"), Some("staging"))
    );
    err(
        &good.replace("on_stop: stop", "on_stop: nope"),
        "on_stop job `nope` is not defined",
    );
    err(
        &good.replace("action: stop", "action: start"),
        "needs to have `action: stop`",
    );
    err(
        &good.replace(
            "name: review/$CI_COMMIT_REF_SLUG, action",
            "name: other, action",
        ),
        "has the environment `other`",
    );
    err(
        &good.replace(
            "environment: {name: review/$CI_COMMIT_REF_SLUG, action: stop}",
            "tags: []",
        ),
        "does not have an environment",
    );
    err(
        &good.replace("staging", "prod"),
        "`environment:deployment_tier` in job `deploy` must be one of",
    );
    err(
        &good.replace("https://example.com", "example.com"),
        "`environment:url` in job `deploy` must be",
    );
    err(
        "x:\n  script: s\n  environment: {url: https://a.b}\n",
        "is missing the required key `name`",
    );
}

// ---- retry / parallel / allow_failure / timeout ----

#[test]
fn retry_forms() {
    let c =
        ok("x:\n  script: s\n  retry: {max: 1, when: [script_failure], exit_codes: [137, 1]}\n");
    let r = c.jobs["x"].retry.as_ref().unwrap();
    assert_eq!(
        (r.max, r.when.as_slice(), r.exit_codes.as_slice()),
        (1, &["script_failure".to_string()][..], &[137, 1][..])
    );
    err(
        "x:\n  script: s\n  retry: 3\n",
        "must be an integer from 0 to 2",
    );
    err(
        "x:\n  script: s\n  retry: {when: flaky}\n",
        "`retry:when` in job `x` must be one of",
    );
    err(
        "x:\n  script: s\n  retry: {exit_codes: [1, 1]}\n",
        "has the duplicate item `1`",
    );
}

#[test]
fn parallel_count_and_matrix_limits() {
    assert_eq!(
        ok("x:\n  script: s\n  parallel: 5\n").jobs["x"].parallel,
        Some(Parallel::Count(5))
    );
    err("x:\n  script: s\n  parallel: 0\n", "from 1 to 200");
    err("x:\n  script: s\n  parallel: 201\n", "from 1 to 200");
    let c = ok("x:\n  script: s\n  parallel:\n    matrix:\n      - A: [1, 2]\n        B: c\n");
    let Some(Parallel::Matrix(m)) = &c.jobs["x"].parallel else {
        panic!("matrix")
    };
    assert_eq!(
        (m[0]["A"].as_slice(), m[0]["B"].as_slice()),
        (
            &["1".to_string(), "2".to_string()][..],
            &["c".to_string()][..]
        )
    );
    let values: Vec<String> = (0..15).map(|i| i.to_string()).collect();
    let big = format!(
        "x:\n  script: s\n  parallel:\n    matrix:\n      - A: [{0}]\n        B: [{0}]\n",
        values.join(", ")
    );
    err(&big, "generates 225 jobs; the maximum is 200");
}

#[test]
fn allow_failure_forms() {
    let c = ok("x:\n  script: s\n  allow_failure: {exit_codes: 3}\n");
    assert_eq!(
        c.jobs["x"].allow_failure,
        Some(AllowFailure::ExitCodes {
            exit_codes: vec![3]
        })
    );
    err(
        "x:\n  script: s\n  allow_failure: yes please\n",
        "must be a boolean or a hash with `exit_codes`",
    );
    err(
        "x:\n  script: s\n  allow_failure: {codes: 1}\n",
        "unknown key `codes`",
    );
}

#[test]
fn timeout_is_parsed_into_seconds_up_to_a_month() {
    assert_eq!(
        ok("x:\n  script: s\n  timeout: 1h 30m\n").jobs["x"].timeout,
        Some(5400)
    );
    err(
        "x:\n  script: s\n  timeout: 2 months\n",
        "at most one month",
    );
}

// ---- cache / artifacts / image / services ----

#[test]
fn cache_forms_and_limits() {
    let c = ok(
        "x:\n  script: s\n  cache:\n    - key: {files: [Gemfile.lock], prefix: gems}\n      paths: [vendor]\n      policy: pull\n    - key: $CI_COMMIT_REF_SLUG\n      policy: $POLICY\n      when: always\n",
    );
    let cache = &c.jobs["x"].cache;
    assert_eq!(
        cache[0].key,
        CacheKey::Files {
            files: vec!["Gemfile.lock".into()],
            prefix: Some("gems".into())
        }
    );
    assert_eq!(cache[0].policy, CachePolicy::Pull);
    assert_eq!(
        cache[1].key,
        CacheKey::Literal("$CI_COMMIT_REF_SLUG".into())
    );
    err(
        "x:\n  script: s\n  cache: [{}, {}, {}, {}, {}]\n",
        "no more than 4 caches",
    );
    err(
        "x:\n  script: s\n  cache: {key: a/b}\n",
        "must be a key without `/`",
    );
    err(
        "x:\n  script: s\n  cache: {key: {prefix: p}}\n",
        "is missing the required key `files`",
    );
    err(
        "x:\n  script: s\n  cache: {pathz: [a]}\n",
        "did you mean `paths`?",
    );
    err(
        "x:\n  script: s\n  cache: {fallback_keys: [a, b, c, d, e, f]}\n",
        "at most 5 keys",
    );
}

#[test]
fn artifacts_forms() {
    let c = ok(
        "x:\n  script: s\n  artifacts:\n    paths: [out]\n    expire_in: 1 week\n    when: always\n    reports:\n      junit: report.xml\n      dotenv: [build.env]\n      coverage_report: {coverage_format: cobertura, path: cov.xml}\n",
    );
    let a = c.jobs["x"].artifacts.as_ref().unwrap();
    assert_eq!(a.reports["junit"], ["report.xml"]);
    assert_eq!(a.reports["dotenv"], ["build.env"]);
    assert_eq!(a.reports["coverage_report"], ["cov.xml"]);
    err(
        "x:\n  script: s\n  artifacts: {access: all, public: true}\n",
        "cannot use both `access` and `public`",
    );
    err(
        "x:\n  script: s\n  artifacts: {reports: {performance: p.json}}\n",
        "unknown key `performance`",
    );
    err(
        "x:\n  script: s\n  artifacts: {expire_in: soon}\n",
        "must be a duration",
    );
    ok("x:\n  script: s\n  artifacts:\n");
}

#[test]
fn image_and_services() {
    let c = ok(
        "x:\n  script: s\n  image: {name: alpine, pull_policy: [always, if-not-present], docker: {platform: arm64}}\n  services:\n    - mysql\n    - name: postgres:15\n      alias: db\n      command: [postgres, -c, fsync=off]\n      variables: {POSTGRES_PASSWORD: x}\n",
    );
    let x = &c.jobs["x"];
    assert_eq!(
        x.image.as_ref().unwrap().pull_policy,
        ["always", "if-not-present"]
    );
    assert_eq!(x.services[1].alias.as_deref(), Some("db"));
    assert_eq!(x.services[1].command.as_ref().unwrap().len(), 3);
    assert_eq!(x.services[1].variables[0].name, "POSTGRES_PASSWORD");
    // An empty `image:` is "not set" (GitLab's `Unspecified` entry).
    assert!(ok("x:\n  script: s\n  image:\n").jobs["x"].image.is_none());
    err(
        "x:\n  script: s\n  image: []\n",
        "`image` in job `x` must be an image name",
    );
    err(
        "x:\n  script: s\n  image: {name: a, pull_policy: sometimes}\n",
        "must be one of: always, never, if-not-present",
    );
    err(
        "x:\n  script: s\n  services: [{alias: db}]\n",
        "is missing the required key `name`",
    );
}

// ---- trigger jobs ----

#[test]
fn trigger_jobs_allow_only_bridge_keywords() {
    let c = ok(
        "t:\n  stage: deploy\n  trigger: {project: group/app, strategy: depend}\n  when: manual\n",
    );
    assert!(c.jobs["t"].trigger.is_some() && c.jobs["t"].script.is_empty());
    let d = err(
        "t:\n  script: s\n  trigger: group/app\n",
        "trigger job `t` cannot use `script`",
    );
    assert_eq!(line_col(&d), (2, 3));
    err(
        "t:\n  trigger: group/app\n  when: delayed\n  start_in: 1h\n",
        "cannot use `when: delayed`",
    );
    err(
        "t:\n  trigger: group/app\n  allow_failure: {exit_codes: 1}\n",
        "must be a boolean",
    );
    err("t:\n  trigger: slug\n", "must be a project path");
    err(
        "t:\n  trigger: {include: [a.yml, b.yml, c.yml, d.yml]}\n",
        "at most 3 files",
    );
    // A fragment keeps GitLab's schema view: script + trigger is fine there.
    assert!(validate(&doc("t:\n  script: s\n  trigger: group/app\n")).is_empty());
}

// ---- other keywords carried in extra ----

#[test]
fn extra_keywords_are_validated_and_carried() {
    let c = ok(r#"
x:
  script: s
  secrets:
    DB: {vault: db/password@ops, file: false}
  id_tokens:
    TOKEN: {aud: https://example.com}
  release: {tag_name: v1, description: first}
  pages: {path_prefix: docs}
  coverage: '/Total: (\d+)%/'
  manual_confirmation: sure?
  dast_configuration: {site_profile: a}
  identity: google_cloud
"#);
    let x = &c.jobs["x"];
    for key in [
        "secrets",
        "id_tokens",
        "release",
        "pages",
        "manual_confirmation",
        "dast_configuration",
        "identity",
    ] {
        assert!(x.extra.contains_key(key), "{key}");
    }
    assert_eq!(x.coverage.as_deref(), Some("/Total: (\\d+)%/"));
    err(
        "x:\n  script: s\n  coverage: Total\n",
        "must be a regular expression between slashes",
    );
    err(
        "x:\n  script: s\n  release: {tag_name: v1}\n",
        "is missing the required key `description`",
    );
    err(
        "x:\n  script: s\n  release: {tag_name: v1, description: d, released_at: now}\n",
        "ISO 8601",
    );
    err(
        "x:\n  script: s\n  secrets: {DB: {token: t}}\n",
        "names no secret provider",
    );
}

// ---- workflow / include / spec ----

#[test]
fn workflow_is_parsed_and_checked() {
    let c = ok(
        "workflow:\n  name: Pipeline $X\n  auto_cancel: {on_new_commit: interruptible}\n  rules:\n    - if: $X\n      when: always\n      variables: {A: b}\n    - when: never\nx:\n  script: s\n",
    );
    assert_eq!(c.workflow.name.as_deref(), Some("Pipeline $X"));
    assert_eq!(c.workflow.rules.as_ref().unwrap().len(), 2);
    assert!(c.workflow.auto_cancel.is_some());
    err(
        "workflow:\n  rules:\n    - when: manual\nx:\n  script: s\n",
        "`workflow:rules:when` must be one of: always, never",
    );
    err(
        "workflow:\n  rulez: []\nx:\n  script: s\n",
        "did you mean `rules`?",
    );
    err(
        &format!("workflow:\n  name: {}\nx:\n  script: s\n", "n".repeat(256)),
        "is 256 characters long",
    );
}

#[test]
fn include_items_are_checked() {
    assert!(validate(&doc("include:\n  - local: a.yml\n  - remote: https://x.y/c.yml\n  - project: g/p\n    file: [a.yml]\n  - template: T.gitlab-ci.yml\n  - component: gitlab.com/a/b@1\n  - ci/x.yml\n")).is_empty());
    let all = validate(&doc(
        "include:\n  - local: a.txt\n  - {local: a.yml, remote: https://x.y/c.yml}\n  - {local: a.yml, cache: true}\n  - ftp://x/y.yml\n",
    ));
    assert_eq!(all.len(), 4, "{all:?}");
}

#[test]
fn header_documents_hold_only_a_valid_spec() {
    let header = |src: &str| validate_header(&doc(src));
    assert!(
        header("spec:\n  inputs:\n    env: {default: staging, options: [staging, prod]}\n")
            .is_empty()
    );
    let all = header("spec:\n  inputs:\n    n: {type: number, default: x}\nstages: [a]\n");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter()
            .any(|d| d.message.contains("unknown key `stages` in `header`"))
    );
}

// ---- !reference ----

#[test]
fn references_are_accepted_in_fragments_but_not_after_resolution() {
    let src =
        "x:\n  script: !reference [.setup, script]\n  variables: !reference [.vars, variables]\n";
    assert!(validate(&doc(src)).is_empty());
    err(src, "is a `!reference` tag that was not resolved");
}

// ---- durations ----

#[test]
fn durations_accept_chronic_duration_forms() {
    assert_eq!(parse_duration("1 day"), Some(86_400));
    assert_eq!(parse_duration("3600"), Some(3600));
    assert_eq!(parse_duration("nonsense"), None);
}
