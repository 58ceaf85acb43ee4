//! `include:` through `load::merge`: order and overrides, globs, rules,
//! nesting, limits, cycles, remote and project files, inputs, and errors
//! that point into the right file.

use gantry_config::Sources;
use gantry_config::load::{LoadOptions, MemorySource, merge};
use serde_json::{Value, json};

fn run_with(src: &MemorySource, vars: &[(&str, &str)]) -> (Result<Value, Vec<String>>, Sources) {
    let mut opts = LoadOptions::new(".gitlab-ci.yml");
    for (k, v) in vars {
        opts.variables.insert(k.to_string(), v.to_string());
    }
    let mut sources = Sources::new();
    let result = merge(src, &opts, &mut sources)
        .map(|n| n.to_json())
        .map_err(|errors| errors.iter().map(|d| d.short(&sources)).collect());
    (result, sources)
}

fn ok(src: &MemorySource) -> Value {
    match run_with(src, &[]).0 {
        Ok(v) => v,
        Err(e) => panic!("unexpected errors: {e:#?}"),
    }
}

fn errors(src: &MemorySource) -> Vec<String> {
    match run_with(src, &[]).0 {
        Ok(v) => panic!("expected errors, got {v:#}"),
        Err(e) => e,
    }
}

#[test]
fn included_files_merge_in_order_and_the_including_file_wins() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: a.yml\n  - b.yml\nvariables:\n  OWN: own\n  SHARED: own\nbuild:\n  script: make\n",
        )
        .with_file("a.yml", "variables:\n  A: a\n  SHARED: a\njob_a:\n  script: [a1, a2]\n  variables: {X: '1', Y: '1'}\n")
        .with_file("b.yml", "variables:\n  SHARED: b\njob_a:\n  script: [b]\n  variables: {Y: '2'}\n");
    let v = ok(&src);
    assert_eq!(
        v["variables"],
        json!({"A": "a", "SHARED": "own", "OWN": "own"})
    );
    // Arrays are replaced, hashes merged key by key.
    assert_eq!(
        v["job_a"],
        json!({"script": ["b"], "variables": {"X": "1", "Y": "2"}})
    );
    assert!(v.get("include").is_none());
    // Included keys come first, the including file's new keys after.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["variables", "job_a", "build"]);
}

#[test]
fn include_as_a_hash_and_leading_slash() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  local: /ci/a.yml\nbuild:\n  script: make\n",
        )
        .with_file("ci/a.yml", "test:\n  script: test\n");
    assert_eq!(ok(&src)["test"]["script"], "test");
}

#[test]
fn local_globs_follow_gitlab_wildcards() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: 'configs/*.yml'\nbuild:\n  script: make\n",
        )
        .with_file("configs/a.yml", "a:\n  script: a\n")
        .with_file("configs/b.yml", "b:\n  script: b\n")
        .with_file("configs/sub/c.yml", "c:\n  script: c\n")
        .with_file("configs/readme.md", "not yaml");
    let v = ok(&src);
    assert!(v.get("a").is_some() && v.get("b").is_some());
    assert!(v.get("c").is_none(), "`*` does not cross directories");

    let deep = src.clone().with_file(
        ".gitlab-ci.yml",
        "include: 'configs/**.yml'\nbuild:\n  script: make\n",
    );
    let v = ok(&deep);
    assert!(
        v.get("a").is_some() && v.get("c").is_some(),
        "`**` crosses directories: {v:#}"
    );

    let none = src.with_file(
        ".gitlab-ci.yml",
        "include: 'nothing/*.yml'\nbuild:\n  script: make\n",
    );
    assert_eq!(ok(&none), json!({"build": {"script": "make"}}));
}

#[test]
fn include_rules_with_if_and_exists() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            r#"
include:
  - local: prod.yml
    rules:
      - if: '$CI_COMMIT_BRANCH == "main"'
  - local: never.yml
    rules:
      - if: '$CI_COMMIT_BRANCH == "main"'
        when: never
      - when: always
  - local: docker.yml
    rules:
      - exists: [Dockerfile]
  - local: py.yml
    rules:
      - exists:
          - '**/*.py'
build:
  script: make
"#,
        )
        .with_file("prod.yml", "prod:\n  script: deploy\n")
        .with_file("never.yml", "never:\n  script: x\n")
        .with_file("docker.yml", "docker:\n  script: x\n")
        .with_file("py.yml", "py:\n  script: x\n")
        .with_file("Dockerfile", "FROM scratch\n");
    let (main, _) = run_with(&src, &[("CI_COMMIT_BRANCH", "main")]);
    let main = main.expect("valid");
    assert!(main.get("prod").is_some());
    assert!(main.get("never").is_none());
    assert!(main.get("docker").is_some());
    assert!(main.get("py").is_none(), "no python file in the project");

    let (feature, _) = run_with(&src, &[("CI_COMMIT_BRANCH", "feature")]);
    let feature = feature.expect("valid");
    assert!(feature.get("prod").is_none());
    assert!(feature.get("never").is_some());
}

#[test]
fn include_rules_errors_are_reported() {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include:\n  - local: a.yml\n    rules:\n      - when: manual\nbuild:\n  script: make\n")
        .with_file("a.yml", "a:\n  script: a\n");
    let e = errors(&src);
    assert!(e[0].starts_with(".gitlab-ci.yml:4:"), "{e:?}");
}

#[test]
fn bare_strings_expand_variables_then_pick_remote_or_local() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - $BASE/remote.yml\n  - ci/$NAME.yml\nbuild:\n  script: make\n",
        )
        .with_remote(
            "https://ci.example.com/remote.yml",
            "remote_job:\n  script: r\n",
        )
        .with_file("ci/local.yml", "local_job:\n  script: l\n");
    let (v, _) = run_with(
        &src,
        &[("BASE", "https://ci.example.com"), ("NAME", "local")],
    );
    let v = v.expect("valid");
    assert!(v.get("remote_job").is_some() && v.get("local_job").is_some());
}

#[test]
fn nested_includes_resolve_and_count() {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include: a.yml\nbuild:\n  script: make\n")
        .with_file(
            "a.yml",
            "include: b.yml\na:\n  script: a\n  variables: {FROM: a}\n",
        )
        .with_file(
            "b.yml",
            "a:\n  variables: {FROM: b, B: b}\nb:\n  script: b\n",
        );
    let v = ok(&src);
    assert_eq!(v["a"]["variables"], json!({"FROM": "a", "B": "b"}));
    assert!(v.get("b").is_some());
}

#[test]
fn the_same_file_may_be_included_twice() {
    // GitLab's expandset is a list: duplicates are allowed and counted.
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include: [a.yml, b.yml]\nbuild:\n  script: make\n",
        )
        .with_file("a.yml", "include: common.yml\na:\n  script: a\n")
        .with_file("b.yml", "include: common.yml\nb:\n  script: b\n")
        .with_file("common.yml", "common:\n  script: c\n");
    assert!(ok(&src).get("common").is_some());
}

fn chain(n: usize) -> MemorySource {
    let mut src = MemorySource::new().with_file(
        ".gitlab-ci.yml",
        "include: f1.yml\nbuild:\n  script: make\n",
    );
    for i in 1..=n {
        let text = if i < n {
            format!("include: f{}.yml\nj{i}:\n  script: x\n", i + 1)
        } else {
            format!("j{i}:\n  script: x\n")
        };
        src.add_file(format!("f{i}.yml"), text);
    }
    src
}

#[test]
fn at_most_150_includes() {
    let v = ok(&chain(150));
    assert!(v.get("j150").is_some());
    let e = errors(&chain(151));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("Maximum of 150 nested includes are allowed!"),
        "{e:?}"
    );
    assert!(
        e[0].starts_with("f150.yml:1:"),
        "points at the include that went over: {e:?}"
    );

    // Flat lists count too.
    let mut flat = MemorySource::new();
    let mut list = String::from("include:\n");
    for i in 0..151 {
        list.push_str(&format!("  - f{i}.yml\n"));
        flat.add_file(format!("f{i}.yml"), format!("j{i}:\n  script: x\n"));
    }
    list.push_str("build:\n  script: make\n");
    flat.add_file(".gitlab-ci.yml", list);
    let e = errors(&flat);
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn include_cycles_are_reported() {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include: a.yml\nbuild:\n  script: make\n")
        .with_file("a.yml", "include: b.yml\na:\n  script: a\n")
        .with_file("b.yml", "include: a.yml\nb:\n  script: b\n");
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("b.yml:1:"), "{e:?}");
    assert!(
        e[0].contains("include cycle: `a.yml` → `b.yml` → `a.yml`"),
        "{e:?}"
    );

    let own = MemorySource::new().with_file(
        ".gitlab-ci.yml",
        "include: .gitlab-ci.yml\nbuild:\n  script: make\n",
    );
    assert!(errors(&own)[0].contains("include cycle"));
}

#[test]
fn remote_and_project_includes() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            r#"
include:
  - remote: https://example.com/ci/remote.yml
  - project: Group/Templates
    ref: v1
    file: [/a.yml, b.yml]
build:
  script: make
"#,
        )
        .with_remote(
            "https://example.com/ci/remote.yml",
            "remote_job:\n  script: r\n",
        )
        .with_project(
            "group/templates",
            Some("v1"),
            "a.yml",
            "include: {local: nested.yml}\nproj_a:\n  script: a\n",
        )
        .with_project(
            "group/templates",
            Some("v1"),
            "b.yml",
            "proj_b:\n  script: b\n",
        )
        .with_project(
            "group/templates",
            Some("v1"),
            "nested.yml",
            "proj_nested:\n  script: n\n",
        )
        .with_file(
            "nested.yml",
            "wrong:\n  script: this is the main project's file\n",
        );
    let v = ok(&src);
    for job in ["remote_job", "proj_a", "proj_b", "proj_nested"] {
        assert!(v.get(job).is_some(), "{job} missing: {v:#}");
    }
    assert!(
        v.get("wrong").is_none(),
        "a local include in a project file reads that project"
    );
}

#[test]
fn local_include_inside_a_remote_file_has_no_project() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include: https://example.com/r.yml\nbuild:\n  script: make\n",
        )
        .with_remote(
            "https://example.com/r.yml",
            "include: {local: x.yml}\nr:\n  script: r\n",
        )
        .with_file("x.yml", "x:\n  script: x\n");
    let e = errors(&src);
    assert!(e[0].starts_with("https://example.com/r.yml:1:"), "{e:?}");
    assert!(
        e[0].contains("Local file `x.yml` does not have project!"),
        "{e:?}"
    );
}

#[test]
fn remote_fetch_failure_is_an_error_at_the_include() {
    let src = MemorySource::new().with_file(
        ".gitlab-ci.yml",
        "build:\n  script: make\ninclude:\n  - remote: https://example.com/missing.yml\n",
    );
    let e = errors(&src);
    assert!(e[0].starts_with(".gitlab-ci.yml:4:13:"), "{e:?}");
    assert!(e[0].contains("could not be fetched"), "{e:?}");
}

#[test]
fn missing_template_and_component_and_a_top_level_artifact_are_errors() {
    let src = MemorySource::new().with_file(
        ".gitlab-ci.yml",
        r#"include:
  - template: Auto-DevOps.gitlab-ci.yml
  - component: gitlab.com/org/comp/build@1.0
  - artifact: generated.yml
    job: gen
build:
  script: make
"#,
    );
    let e = errors(&src);
    assert_eq!(e.len(), 3, "all errors of the stage are reported: {e:?}");
    assert!(
        e[0].starts_with(".gitlab-ci.yml:2:15:")
            && e[0].contains("`Auto-DevOps.gitlab-ci.yml` (include:template) could not be read"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(".gitlab-ci.yml:3:16:")
            && e[1].contains("Component `gitlab.com/org/comp/build@1.0` could not be read"),
        "{e:?}"
    );
    assert!(
        e[2].contains("only allowed when triggering child pipelines"),
        "{e:?}"
    );
}

#[test]
fn each_include_uses_exactly_one_kind() {
    let src = MemorySource::new().with_file(
        ".gitlab-ci.yml",
        "include:\n  - local: a.yml\n    remote: https://example.com/a.yml\n  - ref: main\n  - local: a.txt\n  - bogus: 1\n  - 42\nbuild:\n  script: make\n",
    );
    let e = errors(&src);
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e[0].contains("Each include must use only one of: `local`, `project`, `remote`, `template`, `component`, `artifact`"));
    assert!(e[1].contains("does not have a valid subkey for include"));
    assert!(e[2].contains("does not have YAML extension!"));
    assert!(e[3].contains("include config contains unknown keys: bogus"));
    assert!(e[4].contains("include config should be a hash or a string"));
}

#[test]
fn missing_local_file_points_at_the_include() {
    let src = MemorySource::new().with_file(
        ".gitlab-ci.yml",
        "include:\n  - local: nope.yml\nbuild:\n  script: make\n",
    );
    let e = errors(&src);
    assert_eq!(
        e,
        vec![".gitlab-ci.yml:2:12: Local file `nope.yml` does not exist!".to_string()]
    );
}

#[test]
fn yaml_errors_inside_an_included_file_point_into_it() {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include: a.yml\nbuild:\n  script: make\n")
        .with_file("a.yml", "job:\n  script: [a\n");
    let (result, sources) = run_with(&src, &[]);
    let e = result.expect_err("unclosed bracket");
    assert!(e[0].starts_with("a.yml:"), "{e:?}");
    // Every file read is in the sources, for rendering.
    assert_eq!(sources.name(gantry_config::FileId(1)), "a.yml");
}

#[test]
fn anchors_do_not_cross_files() {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include: a.yml\nbuild:\n  <<: *tmpl\n")
        .with_file("a.yml", ".tmpl: &tmpl\n  script: a\n");
    let e = errors(&src);
    assert!(e[0].starts_with(".gitlab-ci.yml:3:"), "{e:?}");
}

#[test]
fn spec_inputs_defaults_and_given_values() {
    let template = r#"spec:
  inputs:
    stage:
      default: test
    image:
    parallel:
      type: number
      default: 1
    flags:
      type: array
      default: []
    env:
      options: [dev, prod]
      default: dev
---
"$[[ inputs.stage ]]-job":
  stage: $[[ inputs.stage ]]
  image: $[[ inputs.image ]]
  parallel: $[[ inputs.parallel ]]
  script:
    - echo "deploy to $[[ inputs.env ]] with $[[ inputs.image | truncate(0,6) ]]"
  variables:
    FLAGS: $[[ inputs.flags ]]
  matrix_like: $[[ matrix.X ]]
"#;
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: t.yml\n    inputs:\n      image: alpine:3\n      parallel: 3\n      env: prod\nbuild:\n  script: make\n",
        )
        .with_file("t.yml", template);
    let v = ok(&src);
    let job = &v["test-job"];
    assert_eq!(job["stage"], "test");
    assert_eq!(job["image"], "alpine:3");
    assert_eq!(
        job["parallel"], 3,
        "a whole-string block keeps the input's type"
    );
    assert_eq!(job["script"][0], "echo \"deploy to prod with alpine\"");
    assert_eq!(job["variables"]["FLAGS"], json!([]));
    assert_eq!(job["matrix_like"], "$[[ matrix.X ]]");
}

#[test]
fn spec_inputs_errors() {
    let template = "spec:\n  inputs:\n    name:\n    count:\n      type: number\n      default: 1\n---\njob:\n  script: echo $[[ inputs.name ]] $[[ inputs.nope ]]\n";
    let missing = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: t.yml\nbuild:\n  script: make\n",
        )
        .with_file("t.yml", template);
    let e = errors(&missing);
    assert!(
        e[0].contains("`name` input: required value has not been provided"),
        "{e:?}"
    );

    let wrong_type = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include:\n  - local: t.yml\n    inputs: {name: x, count: many, extra: 1}\nbuild:\n  script: make\n")
        .with_file("t.yml", template);
    let e = errors(&wrong_type);
    assert!(
        e.iter()
            .any(|m| m.contains("unknown input arguments: extra")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("`count` input: provided value is not a number")),
        "{e:?}"
    );

    let unknown_key = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: t.yml\n    inputs: {name: x}\nbuild:\n  script: make\n",
        )
        .with_file("t.yml", template);
    let e = errors(&unknown_key);
    assert!(
        e[0].starts_with("t.yml:9:") && e[0].contains("unknown interpolation key: `nope`"),
        "{e:?}"
    );

    let no_spec = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: t.yml\n    inputs: {name: x}\nbuild:\n  script: make\n",
        )
        .with_file("t.yml", "job:\n  script: x\n");
    let e = errors(&no_spec);
    assert!(
        e[0].contains("Given inputs not defined in the `spec` section"),
        "{e:?}"
    );
}

#[test]
fn entry_file_errors() {
    let empty = MemorySource::new().with_file(".gitlab-ci.yml", "# nothing\n");
    assert!(errors(&empty)[0].contains("Please provide content of .gitlab-ci.yml"));
    let list = MemorySource::new().with_file(".gitlab-ci.yml", "- a\n- b\n");
    assert!(errors(&list)[0].contains("Invalid configuration format"));
    let absent = MemorySource::new();
    assert!(errors(&absent)[0].contains("cannot read `.gitlab-ci.yml`"));
}

/// Pipeline inputs (GitLab 17.x): the entry file's own `spec:inputs`,
/// given to `load_with_inputs`, checked like an include's inputs.
#[test]
fn pipeline_inputs_are_checked_and_interpolated_into_the_entry_file() {
    use gantry_config::include::{InputType, entry_inputs};
    use gantry_config::load::load_with_inputs;
    let main = "spec:\n  inputs:\n    env:\n      options: [staging, production]\n      default: staging\n      description: Where\n    count:\n      type: number\n---\njob:\n  script: echo $[[ inputs.env ]] $[[ inputs.count ]]\n";
    let src = MemorySource::new().with_file(".gitlab-ci.yml", main);
    let opts = LoadOptions::new(".gitlab-ci.yml");
    let specs = entry_inputs(&src, &opts, &mut Sources::new()).unwrap();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].name, "env");
    assert_eq!(specs[0].options, [json!("staging"), json!("production")]);
    assert_eq!(specs[0].description.as_deref(), Some("Where"));
    assert_eq!(specs[1].kind, Some(InputType::Number));
    assert_eq!(specs[1].default, None, "count is required");

    let given = |v: Value| v.as_object().unwrap().clone();
    let loaded = load_with_inputs(&src, &opts, &given(json!({"count": 3}))).unwrap();
    assert_eq!(
        loaded.merged.to_json()["job"]["script"],
        json!("echo staging 3")
    );
    let messages = |v: Value| -> Vec<String> {
        let e = load_with_inputs(&src, &opts, &given(v)).unwrap_err();
        e.diagnostics.iter().map(|d| d.short(&e.sources)).collect()
    };
    let wrong = messages(json!({"count": "three"}));
    assert!(
        wrong[0].contains("`count` input: provided value is not a number")
            && wrong[0].starts_with("pipeline inputs:"),
        "{wrong:?}"
    );
    let missing = messages(json!({}));
    assert!(
        missing[0].contains("`count` input: required value has not been provided"),
        "{missing:?}"
    );
    let unknown = messages(json!({"count": 1, "nope": true}));
    assert!(
        unknown[0].contains("unknown input arguments: nope"),
        "{unknown:?}"
    );
    let plain = MemorySource::new().with_file(".gitlab-ci.yml", "job:\n  script: x\n");
    let e = load_with_inputs(&plain, &opts, &given(json!({"a": 1}))).unwrap_err();
    assert!(
        e.diagnostics[0]
            .message
            .contains("Given inputs not defined in the `spec` section"),
        "{:?}",
        e.diagnostics
    );
}
