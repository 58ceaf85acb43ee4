//! `include:template` and `include:component` against a local HTTP server
//! standing in for a GitLab instance ([`FakeGitlab`]): the paths and
//! API calls GitLab serves, the token header, versions, inputs, the disk
//! cache when the server is gone, and the error when nothing is cached.

use gantry_config::context::Context;
use gantry_config::load::{LoadOptions, load};
use gantry_source::fake_gitlab::FakeGitlab;
use gantry_source::{GitlabInstance, WorkingTree, working_tree_facts};
use std::collections::HashMap;

const LINT_TEMPLATE: &str =
    "include:\n  - template: Jobs/Base.gitlab-ci.yml\nlint:\n  extends: .base\n  script: lint\n";
const BASE_TEMPLATE: &str = ".base:\n  stage: test\n  tags: [linter]\n";
const BUILD_COMPONENT: &str = "spec:\n  inputs:\n    stage:\n      default: build\n    job-name:\n---\n\"$[[ inputs.job-name ]]\":\n  stage: $[[ inputs.stage ]]\n  script: make\n";
const DEPLOY_COMPONENT: &str = "deploy-v1:\n  stage: deploy\n  script: ./deploy\n";

fn routes() -> HashMap<String, String> {
    let mut r = HashMap::new();
    r.insert(
        "/gitlab-org/gitlab/-/raw/master/lib/gitlab/ci/templates/Jobs/Lint.gitlab-ci.yml".into(),
        LINT_TEMPLATE.into(),
    );
    r.insert(
        "/gitlab-org/gitlab/-/raw/master/lib/gitlab/ci/templates/Jobs/Base.gitlab-ci.yml".into(),
        BASE_TEMPLATE.into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/releases?per_page=100".into(),
        r#"[{"tag_name":"1.2.3"},{"tag_name":"1.10.0"},{"tag_name":"2.0.0"}]"#.into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/files/templates%2Fbuild.yml/raw?ref=2.0.0"
            .into(),
        BUILD_COMPONENT.into(),
    );
    // `deploy` is a directory component, and version `1` is 1.10.0.
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/files/templates%2Fdeploy%2Ftemplate.yml/raw?ref=1.10.0"
            .into(),
        DEPLOY_COMPONENT.into(),
    );
    r
}

fn project(ci: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), ci).unwrap();
    dir
}

fn ci(host: &str) -> String {
    format!(
        "include:\n  - template: Jobs/Lint.gitlab-ci.yml\n  - component: {host}/my-org/components/build@~latest\n    inputs:\n      job-name: compile\n      stage: test\n  - component: {host}/my-org/components/deploy@1\n"
    )
}

fn load_jobs(dir: &std::path::Path, gitlab: GitlabInstance) -> Result<Vec<String>, String> {
    let files = WorkingTree::new(dir.to_path_buf()).with_gitlab(gitlab);
    let facts = working_tree_facts(dir, None);
    let ctx = Context::new(&facts, "push", &[]);
    let opts = LoadOptions {
        variables: ctx.variables.clone(),
        ..LoadOptions::new(".gitlab-ci.yml")
    };
    let loaded = load(&files, &opts).map_err(|e| e.to_string())?;
    let pipeline = gantry_config::plan::plan(&loaded.config, &ctx).map_err(|d| format!("{d:?}"))?;
    Ok(pipeline
        .jobs
        .iter()
        .map(|j| format!("{}@{}", j.name, j.stage))
        .collect())
}

#[test]
fn templates_and_components_come_from_the_instance_with_versions_inputs_and_token() {
    let server = FakeGitlab::start(routes()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = project(&ci(&server.host()));
    let gitlab = GitlabInstance::new(&server.url, cache.path().to_path_buf())
        .with_private_token("s3cret-token");
    let jobs = load_jobs(dir.path(), gitlab).unwrap();
    assert_eq!(jobs, ["lint@test", "compile@test", "deploy-v1@deploy"]);
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|(_, h)| h.iter().any(|h| h == "PRIVATE-TOKEN: s3cret-token")),
        "every request carries the token: {requests:?}"
    );
    // A job token is sent under its own header.
    let cache2 = tempfile::tempdir().unwrap();
    let gitlab =
        GitlabInstance::new(&server.url, cache2.path().to_path_buf()).with_job_token("job-token-1");
    load_jobs(dir.path(), gitlab).unwrap();
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|(_, h)| h.iter().any(|h| h == "JOB-TOKEN: job-token-1"))
    );
}

#[test]
fn offline_uses_the_cache_or_says_what_is_missing() {
    let cache = tempfile::tempdir().unwrap();
    let server = FakeGitlab::start(routes()).unwrap();
    let (url, host) = (server.url.clone(), server.host());
    let dir = project(&ci(&host));
    load_jobs(
        dir.path(),
        GitlabInstance::new(&url, cache.path().to_path_buf()).with_private_token("tok-1"),
    )
    .unwrap();
    drop(server);
    // The server is gone: the cached copies serve.
    let jobs = load_jobs(
        dir.path(),
        GitlabInstance::new(&url, cache.path().to_path_buf()),
    )
    .unwrap();
    assert_eq!(jobs.len(), 3);
    // Nothing cached: a clear error naming the component and the instance,
    // and never the token.
    let empty = tempfile::tempdir().unwrap();
    let err = load_jobs(
        dir.path(),
        GitlabInstance::new(&url, empty.path().to_path_buf()).with_private_token("tok-2"),
    )
    .unwrap_err();
    assert!(
        err.contains(&format!("{host}/my-org/components/build@~latest")),
        "{err}"
    );
    assert!(err.contains(&url) && err.contains("cached"), "{err}");
    assert!(!err.contains("tok-2"), "{err}");
}

#[test]
fn spec_component_version_and_sha_come_from_the_instance() {
    let sha = "fedcba9876543210fedcba9876543210fedcba98";
    let mut r = routes();
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/files/templates%2Fimage.yml/raw?ref=1.10.0"
            .into(),
        "spec:\n  component: [name, version, sha, reference]\n---\nuse-$[[ component.name ]]:\n  stage: build\n  image: registry.example.com/tool:$[[ component.version ]]\n  script: echo $[[ component.sha ]] $[[ component.reference ]]\n".into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/commits/1.10.0".into(),
        format!(r#"{{"id":"{sha}","short_id":"fedcba98"}}"#),
    );
    let server = FakeGitlab::start(r).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = project(&format!(
        "include:\n  - component: {}/my-org/components/image@1\n",
        server.host()
    ));
    let files = WorkingTree::new(dir.path().to_path_buf())
        .with_gitlab(GitlabInstance::new(&server.url, cache.path().to_path_buf()));
    let loaded =
        load(&files, &LoadOptions::new(".gitlab-ci.yml")).unwrap_or_else(|e| panic!("{e}"));
    let job = &loaded.config.jobs["use-image"];
    assert_eq!(
        job.image.as_ref().map(|i| i.name.as_str()),
        Some("registry.example.com/tool:1.10.0")
    );
    assert_eq!(job.script, [format!("echo {sha} 1")]);
}
