//! Regressions of gantry-config, each named after the behaviour it keeps.
//! Most come from issue 7: configurations GitLab's backend accepts (real
//! projects' files) that gantry used to reject, and the few it rejects
//! that gantry used to accept.

mod plan_support;

use gantry_config::load::{LoadOptions, Loaded, MemorySource, load};
use plan_support::*;

fn loaded(yaml: &str) -> Loaded {
    load(
        &MemorySource::single(".gitlab-ci.yml", yaml),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("rejected:\n{e}"))
}

/// The error messages of a configuration that must not load.
fn rejected(src: &MemorySource) -> Vec<String> {
    match load(src, &LoadOptions::default()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.diagnostics.iter().map(|d| d.message.clone()).collect(),
    }
}

fn rejected_yaml(yaml: &str) -> Vec<String> {
    rejected(&MemorySource::single(".gitlab-ci.yml", yaml))
}

#[test]
fn empty_values_mean_not_set_and_a_null_variable_is_empty() {
    let yaml = "
variables:
default:
  image: alpine
  before_script: [setup]
  tags: [docker]
build:
  image:
  before_script:
  tags:
  needs:
  dependencies:
  cache:
    key: k
    paths:
  artifacts:
    paths:
    reports:
      junit:
  variables:
    EMPTY:
  script: make
";
    let p = plan_ok(yaml, &push("main"));
    let build = job(&p, "build");
    // Unset keys take the default, as GitLab's `Unspecified` entries do.
    assert_eq!(
        build.image.as_ref().map(|i| i.name.as_str()),
        Some("alpine")
    );
    assert_eq!(build.before_script, ["setup"]);
    assert_eq!(build.tags, ["docker"]);
    assert!(build.needs.is_none());
    assert!(build.cache[0].paths.is_empty());
    assert_eq!(var(build, "EMPTY"), Some(""));
}

#[test]
fn duplicate_keys_keep_the_last_value_and_warn_naming_both_positions() {
    let l = loaded("build:\n  script: one\n  script: two\n");
    assert_eq!(l.config.jobs["build"].script, ["two"]);
    assert_eq!(l.warnings.len(), 1);
    let w = &l.warnings[0];
    assert!(w.is_warning());
    assert!(
        w.message.contains("line 3, column 3") && w.message.contains("line 2, column 3"),
        "{}",
        w.message
    );
    assert!(
        w.render(&l.sources)
            .starts_with("warning: duplicate key `script`")
    );
}

#[test]
fn dependencies_may_name_a_job_of_the_same_stage() {
    let p = plan_ok(
        "a:\n  stage: test\n  script: s\n  artifacts: {paths: [x]}\nb:\n  stage: test\n  script: s\n  dependencies: [a]\n",
        &push("main"),
    );
    // Same-stage jobs run side by side: GitLab downloads artifacts of prior
    // stages only (`Ci::BuildDependencies`), so there is nothing to fetch.
    assert_eq!(job(&p, "b").dependencies, Vec::<String>::new());
    // A later stage is still refused, in GitLab's words.
    let e = rejected_yaml(
        "a:\n  stage: deploy\n  script: s\nb:\n  stage: test\n  script: s\n  dependencies: [a]\n",
    );
    assert!(
        e[0].contains("is not defined in current or prior stages"),
        "{e:?}"
    );
}

#[test]
fn needs_may_name_one_parallel_matrix_instance() {
    let p = plan_ok(
        "build:\n  stage: build\n  script: s\n  parallel:\n    matrix:\n      - ARCH: [arm, x86]\ntest:\n  script: s\n  needs: [\"build: [arm]\"]\n",
        &push("main"),
    );
    let needs: Vec<&str> = job(&p, "test")
        .needs
        .iter()
        .flatten()
        .map(|n| n.job.as_str())
        .collect();
    assert_eq!(needs, ["build: [arm]"]);
}

#[test]
fn nested_lists_are_flattened_and_null_items_dropped() {
    let yaml = "
.a-needs: &a-needs
  - a
.none: &none
  -
.caches: &caches
  - key: one
    paths: [x]
  - key: two
    paths: [y]
.svc: &svc
  - postgres
a:
  stage: build
  script: s
b:
  stage: test
  needs: [*a-needs, *none]
  cache: [*caches]
  services: [*svc, redis]
  script:
    - one
    -
    - [two, null]
";
    let p = plan_ok(yaml, &push("main"));
    let b = job(&p, "b");
    let needs: Vec<&str> = b.needs.iter().flatten().map(|n| n.job.as_str()).collect();
    assert_eq!(needs, ["a"]);
    assert_eq!(b.cache.len(), 2);
    let services: Vec<&str> = b.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(services, ["postgres", "redis"]);
    assert_eq!(b.script, ["one", "two"]);
}

#[test]
fn report_types_accept_a_string_or_a_list() {
    let l = loaded(
        "t:\n  script: s\n  artifacts:\n    reports:\n      annotations: [a.json, b.json]\n      accessibility: a11y.json\n      browser_performance: [perf.json]\n      junit: report.xml\n",
    );
    let reports = &l.config.jobs["t"].artifacts.as_ref().unwrap().reports;
    assert_eq!(reports["annotations"], ["a.json", "b.json"]);
    assert_eq!(reports["accessibility"], ["a11y.json"]);
    assert_eq!(reports["junit"], ["report.xml"]);
}

#[test]
fn an_empty_junit_report_list_is_accepted() {
    let l = loaded("t:\n  script: s\n  artifacts:\n    reports:\n      junit: []\n");
    assert!(l.config.jobs.contains_key("t"));
}

#[test]
fn empty_artifacts_paths_are_accepted() {
    let l = loaded("t:\n  script: s\n  artifacts:\n    paths: []\n    reports: {junit: r.xml}\n");
    assert!(
        l.config.jobs["t"]
            .artifacts
            .as_ref()
            .unwrap()
            .paths
            .is_empty()
    );
}

#[test]
fn a_missing_extends_target_is_named_with_a_suggestion() {
    let e = rejected_yaml(".build-base:\n  script: s\nb:\n  extends: .bulid-base\n");
    assert_eq!(
        e,
        ["b: `extends` target `.bulid-base` is not defined; did you mean `.build-base`?"]
    );
}

#[test]
fn empty_rules_are_an_error() {
    let e = rejected_yaml("b:\n  script: s\n  rules: []\n");
    assert!(e.iter().any(|m| m.contains("can't be blank")), "{e:?}");
}

#[test]
fn empty_needs_with_dependencies_is_accepted_and_downloads_nothing() {
    let p = plan_ok(
        "a:\n  stage: build\n  script: s\n  artifacts: {paths: [x]}\nb:\n  script: s\n  needs: []\n  dependencies: [a]\n",
        &push("main"),
    );
    let b = job(&p, "b");
    assert_eq!(b.needs.as_deref().map(<[_]>::len), Some(0));
    assert!(b.dependencies.is_empty());
}

#[test]
fn matrix_expressions_in_needs_pick_the_instance_with_the_same_values() {
    let yaml = "
build:
  stage: build
  script: s
  parallel:
    matrix:
      - PROVIDER: [aws, gcp]
deploy:
  stage: deploy
  script: s
  parallel:
    matrix:
      - PROVIDER: [aws, gcp]
  needs:
    - job: build
      parallel:
        matrix:
          - PROVIDER: ['$[[ matrix.PROVIDER ]]']
";
    let p = plan_ok(yaml, &push("main"));
    for provider in ["aws", "gcp"] {
        let d = job(&p, &format!("deploy: [{provider}]"));
        let needs: Vec<&str> = d.needs.iter().flatten().map(|n| n.job.as_str()).collect();
        assert_eq!(needs, [format!("build: [{provider}]")]);
    }
    // Lint rejects what planning would: a name the job's matrix lacks.
    let e = rejected_yaml(&yaml.replace("matrix.PROVIDER ]]", "matrix.REGION ]]"));
    assert!(e[0].contains("matrix.REGION"), "{e:?}");
    // And an instance the needed job does not have.
    let e = rejected_yaml(&yaml.replace(
        "PROVIDER: [aws, gcp]\n  needs",
        "PROVIDER: [aws, azure]\n  needs",
    ));
    assert!(e[0].contains("`build: [azure]`"), "{e:?}");
}

#[test]
fn cache_key_files_takes_at_most_two_files() {
    loaded("t:\n  script: s\n  cache:\n    key: {files: [a, b]}\n    paths: [x]\n");
    let e =
        rejected_yaml("t:\n  script: s\n  cache:\n    key: {files: [a, b, c]}\n    paths: [x]\n");
    assert!(e[0].contains("1 to 2 strings"), "{e:?}");
}

#[test]
fn include_local_with_a_dot_slash_prefix_does_not_exist_as_in_gitlab() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: ./ci/a.yml\nb:\n  script: s\n",
        )
        .with_file("ci/a.yml", "a:\n  script: s\n");
    let e = rejected(&src);
    assert_eq!(e, ["Local file `./ci/a.yml` does not exist!"]);
}

#[test]
fn workflow_rules_variables_replace_global_values_but_never_a_jobs_own() {
    let yaml = "
variables:
  A: global
  B: global
workflow:
  rules:
    - variables: {A: workflow, NEW: workflow}
own-same-value:
  script: s
  variables:
    A: global
plain:
  script: s
no-inherit:
  script: s
  inherit:
    variables: false
some:
  script: s
  inherit:
    variables: [B]
";
    let p = plan_ok(yaml, &push("main"));
    // The job wrote `A` itself, even with the global's value: it stays.
    assert_eq!(var(job(&p, "own-same-value"), "A"), Some("global"));
    assert_eq!(var(job(&p, "plain"), "A"), Some("workflow"));
    assert_eq!(var(job(&p, "plain"), "NEW"), Some("workflow"));
    assert_eq!(var(job(&p, "no-inherit"), "A"), None);
    assert_eq!(var(job(&p, "no-inherit"), "NEW"), None);
    assert_eq!(var(job(&p, "some"), "A"), None);
    assert_eq!(var(job(&p, "some"), "B"), Some("global"));
}

#[test]
fn a_component_of_this_project_at_this_commit_resolves_from_the_repository() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/hello@$CI_COMMIT_SHA\n    inputs:\n      who: world\n  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/dir-form@$CI_COMMIT_SHA\n",
        )
        .with_file(
            "templates/hello.yml",
            "spec:\n  inputs:\n    who:\n---\nhello-$[[ inputs.who ]]:\n  script: echo hi\n",
        )
        .with_file("templates/dir-form/template.yml", "dir-job:\n  script: s\n");
    let mut opts = LoadOptions::default();
    for (k, v) in [
        ("CI_SERVER_FQDN", "gitlab.example.com"),
        ("CI_SERVER_HOST", "gitlab.example.com"),
        ("CI_PROJECT_PATH", "group/project"),
        ("CI_COMMIT_SHA", sha),
        ("CI_COMMIT_REF_NAME", "main"),
    ] {
        opts.variables.insert(k.into(), v.into());
    }
    // MemorySource has no components: only the repository can serve them.
    let l = load(&src, &opts).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = l.config.jobs.keys().map(String::as_str).collect();
    assert_eq!(names, ["hello-world", "dir-job"]);
}

#[test]
fn spec_include_reads_input_specifications_from_files_and_inline_ones_win() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - local: job.yml\n    inputs:\n      name: built\n",
        )
        .with_file(
            "job.yml",
            "spec:\n  include:\n    - local: ci/inputs.yml\n  inputs:\n    stage:\n      default: test\n---\n$[[ inputs.name ]]:\n  stage: $[[ inputs.stage ]]\n  script: echo $[[ inputs.flavour ]]\n",
        )
        .with_file(
            "ci/inputs.yml",
            "inputs:\n  name:\n  stage:\n    default: build\n  flavour:\n    default: vanilla\n",
        );
    let l = load(&src, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let job = &l.config.jobs["built"];
    assert_eq!(job.stage, "test", "the file's own spec wins");
    assert_eq!(job.script, ["echo vanilla"]);
}

#[test]
fn spec_component_exposes_the_components_name_version_sha_and_reference() {
    use gantry_config::load::ComponentFacts;
    let address = "gitlab.example.com/org/comps/build@1";
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            format!("include:\n  - component: {address}\n  - local: plain.yml\n"),
        )
        .with_component(
            address,
            "spec:\n  component: [name, version, sha, reference]\n  inputs:\n    stage:\n      default: build\n---\nbuild-$[[ component.name ]]:\n  stage: $[[ inputs.stage ]]\n  image: registry.example.com/builder:$[[ component.version ]]\n  script: echo $[[ component.sha | truncate(0,8) ]] $[[ component.reference ]]\n",
        )
        .with_component_facts(
            address,
            ComponentFacts {
                version: Some("1.2.0".into()),
                sha: Some(sha.into()),
            },
        )
        .with_file("plain.yml", "plain:\n  script: s\n");
    let l = load(&src, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let job = &l.config.jobs["build-build"];
    assert_eq!(
        job.image.as_ref().map(|i| i.name.as_str()),
        Some("registry.example.com/builder:1.2.0")
    );
    assert_eq!(job.script, ["echo 89abcdef 1"]);

    // A field the header does not declare, an unknown field, and a
    // component field in a file that is no component are GitLab's errors.
    let undeclared = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            format!("include:\n  - component: {address}\n"),
        )
        .with_component(
            address,
            "spec:\n  component: [name]\n---\nj:\n  script: echo $[[ component.sha ]]\n",
        );
    let errors = rejected(&undeclared).join("\n");
    assert!(
        errors.contains("unknown interpolation provided: `sha` in `component.sha`"),
        "{errors}"
    );
    let unknown = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            format!("include:\n  - component: {address}\n"),
        )
        .with_component(
            address,
            "spec:\n  component: [name, commit]\n---\nj:\n  script: s\n",
        );
    let errors = rejected(&unknown).join("\n");
    assert!(
        errors.contains("header:spec:component config contains unknown values: commit"),
        "{errors}"
    );
    let not_a_component = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include:\n  - local: t.yml\n")
        .with_file(
            "t.yml",
            "spec:\n  component: [name]\n---\nj:\n  script: echo $[[ component.name ]]\n",
        );
    let errors = rejected(&not_a_component).join("\n");
    assert!(
        errors.contains("unknown interpolation provided: `name` in `component.name`"),
        "{errors}"
    );
}

#[test]
fn spec_component_of_this_project_at_this_commit_has_the_commit_and_no_version() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include:\n  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/hello@$CI_COMMIT_SHA\n",
        )
        .with_file(
            "templates/hello.yml",
            "spec:\n  component: [name, sha, version]\n---\nhello:\n  script: echo [$[[ component.name ]]] [$[[ component.sha ]]] [$[[ component.version ]]]\n",
        );
    let mut opts = LoadOptions::default();
    for (k, v) in [
        ("CI_SERVER_FQDN", "gitlab.example.com"),
        ("CI_PROJECT_PATH", "group/project"),
        ("CI_COMMIT_SHA", sha),
    ] {
        opts.variables.insert(k.into(), v.into());
    }
    let l = load(&src, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.config.jobs["hello"].script,
        [format!("echo [hello] [{sha}] []")]
    );
}

/// A project whose `ci/secret.yml` exists but cannot be read.
struct UnreadableInclude;

impl gantry_config::load::FileSource for UnreadableInclude {
    fn read_local(&self, path: &str) -> Result<String, gantry_config::load::ReadError> {
        match path {
            ".gitlab-ci.yml" => Ok("include: ci/secret.yml\njob:\n  script: [true]\n".into()),
            "ci/secret.yml" => Err(gantry_config::load::ReadError::Failed(
                "ci/secret.yml: Permission denied (os error 13)".into(),
            )),
            _ => Err(gantry_config::load::ReadError::NotFound(path.into())),
        }
    }
    fn local_files(&self) -> Vec<String> {
        vec![".gitlab-ci.yml".into(), "ci/secret.yml".into()]
    }
    fn read_project(
        &self,
        _: &str,
        _: Option<&str>,
        path: &str,
    ) -> Result<String, gantry_config::load::ReadError> {
        Err(gantry_config::load::ReadError::NotFound(path.into()))
    }
    fn read_remote(&self, url: &str) -> Result<String, gantry_config::load::ReadError> {
        Err(gantry_config::load::ReadError::NotFound(url.into()))
    }
}

#[test]
fn a_local_include_that_exists_but_cannot_be_read_says_why_not_that_it_does_not_exist() {
    let messages = match load(&UnreadableInclude, &LoadOptions::default()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>(),
    };
    let joined = messages.join("\n");
    assert!(
        joined.contains("Local file `ci/secret.yml` could not be read")
            && joined.contains("Permission denied"),
        "{joined}"
    );
    assert!(!joined.contains("does not exist"), "{joined}");
    // An absent file keeps GitLab's wording.
    let absent = rejected(&MemorySource::single(
        ".gitlab-ci.yml",
        "include: ci/none.yml\njob:\n  script: [true]\n",
    ));
    assert!(
        absent
            .iter()
            .any(|m| m == "Local file `ci/none.yml` does not exist!"),
        "{absent:?}"
    );
}
