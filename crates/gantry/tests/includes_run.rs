//! Templates and components (with inputs and `spec:component`) end to end:
//! `gantry run` on the shell executor reads them from a stand-in GitLab
//! instance ([`FakeGitlab`], found through `GANTRY_GITLAB_URL`) and runs
//! the jobs they define, also as child pipelines (`trigger:include`).

mod common;

use common::{Cmd, git_repo};
use gantry_source::fake_gitlab::FakeGitlab;
use std::collections::HashMap;

const SHA: &str = "1111111111222222222233333333334444444444";

fn instance() -> FakeGitlab {
    let mut r = HashMap::new();
    r.insert(
        "/gitlab-org/gitlab/-/raw/master/lib/gitlab/ci/templates/Jobs/Hello.gitlab-ci.yml".into(),
        "hello-template:\n  stage: test\n  script:\n    - echo \"from the template\"\n".into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/releases?per_page=100".into(),
        r#"[{"tag_name":"1.2.0"},{"tag_name":"0.9.0"}]"#.into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/files/templates%2Fgreet.yml/raw?ref=1.2.0"
            .into(),
        "spec:\n  component: [name, version, sha]\n  inputs:\n    who:\n    stage:\n      default: test\n---\ngreet-$[[ inputs.who ]]:\n  stage: $[[ inputs.stage ]]\n  script:\n    - echo \"hi $[[ inputs.who ]] from $[[ component.name ]] $[[ component.version ]] at $[[ component.sha | truncate(0,7) ]]\"\n".into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/commits/1.2.0".into(),
        format!(r#"{{"id":"{SHA}"}}"#),
    );
    r.insert(
        "/gitlab-org/gitlab/-/raw/master/lib/gitlab/ci/templates/Jobs/Child.gitlab-ci.yml".into(),
        "child-from-template:\n  script:\n    - echo \"child template source=$CI_PIPELINE_SOURCE\"\n".into(),
    );
    FakeGitlab::start(r).expect("fake GitLab starts")
}

#[test]
fn templates_and_components_with_inputs_run_on_the_shell_executor() {
    let gitlab = instance();
    let ci = format!(
        "include:\n  - template: Jobs/Hello.gitlab-ci.yml\n  - component: {}/my-org/components/greet@~latest\n    inputs:\n      who: team\nown:\n  stage: test\n  script: echo own job\n",
        gitlab.host()
    );
    let repo = git_repo(&[(".gitlab-ci.yml", &ci)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().to_string_lossy().into_owned();
    Cmd::new()
        .dir(repo.path())
        .env("GANTRY_GITLAB_URL", &gitlab.url)
        .env("GANTRY_CACHE_DIR", &cache_dir)
        .args(&["run", "--executor", "shell"])
        .run()
        .status(0)
        .stdout_has("from the template")
        .stdout_has("hi team from greet 1.2.0 at 1111111")
        .stdout_has("own job");
}

#[test]
fn child_pipelines_from_a_template_and_a_component_run_on_the_shell_executor() {
    let gitlab = instance();
    let ci = format!(
        "stages: [test, deploy]\nfrom-template:\n  stage: test\n  trigger:\n    include:\n      - template: Jobs/Child.gitlab-ci.yml\n    strategy: depend\nfrom-component:\n  stage: test\n  trigger:\n    include:\n      - component: {}/my-org/components/greet@~latest\n        inputs:\n          who: child\n    strategy: depend\nafter:\n  stage: deploy\n  script: echo after children\n",
        gitlab.host()
    );
    let repo = git_repo(&[(".gitlab-ci.yml", &ci)]);
    let cache = tempfile::tempdir().expect("tempdir");
    Cmd::new()
        .dir(repo.path())
        .env("GANTRY_GITLAB_URL", &gitlab.url)
        .env("GANTRY_CACHE_DIR", &cache.path().to_string_lossy())
        .args(&["run", "--executor", "shell"])
        .run()
        .status(0)
        .stdout_has("child template source=parent_pipeline")
        .stdout_has("hi child from greet 1.2.0 at 1111111")
        .stdout_has("after children");
}
