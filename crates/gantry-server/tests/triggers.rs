//! Triggers beyond webhooks, end to end through a real server: polling a
//! git repository the test commits to (registered by a `file://` URL), and
//! `trigger:include` child pipelines run by the built-in runner and read
//! back through the API.

mod support;

use gantry_server::poller::poll_project;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const POLLED: &str = r#"
build:
  interruptible: true
  script:
    - echo "source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME tag=${CI_COMMIT_TAG:-none} before=$CI_COMMIT_BEFORE_SHA"
    - if [ -f slow ]; then sleep 60; fi
docs:
  rules:
    - changes: [docs/**]
  script: echo docs changed
"#;

async fn pipelines(api: &Client, project: i64) -> Vec<Value> {
    let (_, list) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines?per_page=100"
        ))
        .await;
    list.as_array().cloned().unwrap_or_default()
}

async fn trace(api: &Client, project: i64, job: &Value) -> String {
    api.text(&format!(
        "/api/v4/projects/{project}/jobs/{}/trace",
        job["id"]
    ))
    .await
    .1
}

fn job<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs:#?}"))
}

async fn wait_job_status(api: &Client, project: i64, pipeline: i64, name: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = api.jobs(project, pipeline).await;
        if jobs
            .iter()
            .any(|j| j["name"] == name && j["status"] == status)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {name} of pipeline {pipeline} never {status}: {jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_creates_push_pipelines_for_moved_branches_and_tags_on_sqlite() {
    polling(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_creates_push_pipelines_for_moved_branches_and_tags_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    polling(Some(pg.database("poll"))).await;
}

async fn polling(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let first = repo(&repo_dir, &[(".gitlab-ci.yml", POLLED)]);
    git(&repo_dir, &["branch", "old-feature"]);
    let running = gantry_server::start(config(&dir.path().join("data"), database))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let url = format!("file://{}", repo_dir.display());
    let (status, body) = api
        .post(
            "/api/v4/projects",
            json!({"name": "polled", "import_url": url}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let project_id = body["id"].as_i64().unwrap();
    let project = running
        .app
        .store
        .project(project_id)
        .await
        .unwrap()
        .unwrap();

    // The first poll: existing branches get no pipeline.
    let polled = poll_project(&running.app, &project).await.unwrap();
    assert!(polled.created.is_empty(), "{polled:?}");
    assert!(pipelines(&api, project_id).await.is_empty());

    // A push to main touching docs, a new branch, an annotated tag; a
    // commit made between registration and the first poll would count too.
    let second = commit(&repo_dir, &[("docs/guide.md", "hi\n")], "docs");
    git(&repo_dir, &["checkout", "-q", "-b", "feature"]);
    let feature = commit(&repo_dir, &[("src.txt", "x\n")], "feature");
    git(&repo_dir, &["checkout", "-q", "main"]);
    git(&repo_dir, &["tag", "-a", "v1.0", "-m", "release", &second]);
    let polled = poll_project(&running.app, &project).await.unwrap();
    let mut refs: Vec<&str> = polled.created.iter().map(|(r, _)| r.as_str()).collect();
    refs.sort();
    assert_eq!(refs, ["feature", "main", "v1.0"], "{polled:?}");
    let id_of = |name: &str| {
        polled
            .created
            .iter()
            .find(|(r, _)| r == name)
            .map(|(_, id)| *id)
            .unwrap()
    };

    let main = api
        .wait_pipeline(project_id, id_of("main"), Duration::from_secs(60))
        .await;
    assert_eq!(main["status"], "success");
    assert_eq!(main["source"], "push");
    assert_eq!(main["sha"], second.as_str());
    assert_eq!(main["before_sha"], first.as_str());
    let jobs = api.jobs(project_id, id_of("main")).await;
    assert!(
        trace(&api, project_id, job(&jobs, "build"))
            .await
            .contains(&format!("source=push ref=main tag=none before={first}"))
    );
    // rules:changes against the previous head: docs/ changed.
    assert_eq!(job(&jobs, "docs")["status"], "success");

    let tag = api
        .wait_pipeline(project_id, id_of("v1.0"), Duration::from_secs(60))
        .await;
    assert_eq!(tag["tag"], true);
    assert_eq!(
        tag["sha"],
        second.as_str(),
        "the tag's commit, not the tag object"
    );
    let jobs = api.jobs(project_id, id_of("v1.0")).await;
    assert!(
        trace(&api, project_id, job(&jobs, "build"))
            .await
            .contains("source=push ref=v1.0 tag=v1.0")
    );
    let feature_pipeline = api
        .wait_pipeline(project_id, id_of("feature"), Duration::from_secs(60))
        .await;
    assert_eq!(feature_pipeline["sha"], feature.as_str());

    // Nothing moved, a branch deleted: no pipeline.
    git(&repo_dir, &["branch", "-q", "-D", "old-feature"]);
    let polled = poll_project(&running.app, &project).await.unwrap();
    assert!(polled.created.is_empty(), "{polled:?}");
    assert_eq!(pipelines(&api, project_id).await.len(), 3);

    // Two polls at once (two servers on one database) create one pipeline.
    let once = commit(&repo_dir, &[("c.txt", "c\n")], "polled twice");
    let (a, b) = tokio::join!(
        poll_project(&running.app, &project),
        poll_project(&running.app, &project)
    );
    let both: Vec<_> = a
        .unwrap()
        .created
        .into_iter()
        .chain(b.unwrap().created)
        .collect();
    assert_eq!(both.len(), 1, "{both:?}");
    let once_pipeline = api
        .wait_pipeline(project_id, both[0].1, Duration::from_secs(60))
        .await;
    assert_eq!(once_pipeline["sha"], once.as_str());
    let second = once;

    // A commit a webhook already ran is not run again by the poll.
    let hooked = commit(&repo_dir, &[("b.txt", "b\n")], "hooked");
    let secret = api.webhook_secret(project_id).await;
    let (status, body) = send_gitlab_hook(
        &running.url,
        project_id,
        &secret,
        &gitlab_push("main", &second, &hooked),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let polled = poll_project(&running.app, &project).await.unwrap();
    assert!(polled.created.is_empty(), "{polled:?}");
    api.wait_pipeline(
        project_id,
        body["pipeline_id"].as_i64().unwrap(),
        Duration::from_secs(60),
    )
    .await;

    // A newer push found by polling cancels the older pipeline's
    // interruptible jobs, as a webhook's push does.
    commit(&repo_dir, &[("slow", "1\n")], "slow");
    let polled = poll_project(&running.app, &project).await.unwrap();
    let slow = polled.created[0].1;
    wait_job_status(&api, project_id, slow, "build", "running").await;
    git(&repo_dir, &["rm", "-q", "slow"]);
    git(&repo_dir, &["commit", "-q", "-m", "not slow"]);
    let newest = git(&repo_dir, &["rev-parse", "HEAD"]);
    let polled = poll_project(&running.app, &project).await.unwrap();
    assert_eq!(polled.created.len(), 1, "{polled:?}");
    let canceled = api
        .wait_pipeline(project_id, slow, Duration::from_secs(30))
        .await;
    assert_eq!(canceled["status"], "canceled");
    let latest = api
        .wait_pipeline(project_id, polled.created[0].1, Duration::from_secs(60))
        .await;
    assert_eq!(latest["status"], "success");
    assert_eq!(latest["sha"], newest.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_poll_interval_runs_pushes_without_a_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", POLLED)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.poll_interval = Some(Duration::from_millis(200));
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("polled", &repo_dir).await;
    // Give the poller a round to take the heads as they were registered.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(pipelines(&api, project).await.is_empty());
    let sha = commit(&repo_dir, &[("a.txt", "a\n")], "pushed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let list = pipelines(&api, project).await;
        if let Some(p) = list.first() {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "no pipeline from polling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found["sha"], sha.as_str());
    assert_eq!(found["source"], "push");
    let done = api
        .wait_pipeline(
            project,
            found["id"].as_i64().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(done["status"], "success");
    assert_eq!(pipelines(&api, project).await.len(), 1);
}

const PARENT: &str = r#"
stages: [build, children, after]
variables:
  GLOBAL_VAR: from-the-parent-yaml
generate:
  stage: build
  script:
    - mkdir -p gen
    - |
      cat > gen/child.yml <<'YAML'
      dynamic:
        script: echo "dynamic child of $CI_PIPELINE_SOURCE with $GEN_VAR"
      YAML
  artifacts:
    paths: [gen/]
local-child:
  stage: children
  variables:
    PASSED_DOWN: from-the-trigger-job
  trigger:
    include: ci/child.yml
    strategy: depend
no-wait-child:
  stage: children
  trigger:
    include:
      - local: ci/failing.yml
dynamic-child:
  stage: children
  variables:
    GEN_VAR: generated
  trigger:
    include:
      - artifact: gen/child.yml
        job: generate
    strategy: depend
after:
  stage: after
  script: echo after the children
"#;

const CHILD: &str = r#"
child-job:
  script:
    - echo "child source=$CI_PIPELINE_SOURCE passed=$PASSED_DOWN api=$API_VAR"
"#;

const FAILING: &str = r#"
fails:
  script: exit 3
"#;

fn child_repo(dir: &Path) -> String {
    repo(
        dir,
        &[
            (".gitlab-ci.yml", PARENT),
            ("ci/child.yml", CHILD),
            ("ci/failing.yml", FAILING),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_include_runs_child_pipelines_on_sqlite() {
    child_pipelines(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_include_runs_child_pipelines_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    child_pipelines(Some(pg.database("children"))).await;
}

async fn child_pipelines(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    child_repo(&repo_dir);
    let running = gantry_server::start(config(&dir.path().join("data"), database))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("parent", &repo_dir).await;
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main", "variables": [{"key": "API_VAR", "value": "from-the-api"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let parent_id = body["id"].as_i64().unwrap();
    let parent = api
        .wait_pipeline(project, parent_id, Duration::from_secs(90))
        .await;
    let jobs = api.jobs(project, parent_id).await;
    // `no-wait-child`'s child fails, but without `strategy: depend` the
    // trigger job succeeded once the child existed.
    assert_eq!(parent["status"], "success", "{jobs:#?}");
    for name in ["local-child", "no-wait-child", "dynamic-child", "after"] {
        assert_eq!(job(&jobs, name)["status"], "success", "{name}: {jobs:#?}");
    }

    // The downstream pipelines, as GitLab's bridges endpoint lists them.
    let (status, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    assert_eq!(status, 200, "{bridges}");
    let bridges = bridges.as_array().unwrap().clone();
    assert_eq!(bridges.len(), 3, "{bridges:#?}");
    let downstream = |name: &str| -> Value {
        bridges
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no bridge {name}: {bridges:#?}"))["downstream_pipeline"]
            .clone()
    };

    let local = downstream("local-child");
    assert_eq!(local["source"], "parent_pipeline");
    let local_id = local["id"].as_i64().unwrap();
    let local_jobs = api.jobs(project, local_id).await;
    let log = trace(&api, project, job(&local_jobs, "child-job")).await;
    // Trigger job variables pass down; pipeline variables only with
    // `forward:pipeline_variables: true`.
    assert!(
        log.contains("child source=parent_pipeline passed=from-the-trigger-job api="),
        "{log}"
    );
    assert!(!log.contains("from-the-api"), "{log}");

    let dynamic_id = downstream("dynamic-child")["id"].as_i64().unwrap();
    let dynamic = api
        .wait_pipeline(project, dynamic_id, Duration::from_secs(30))
        .await;
    assert_eq!(dynamic["status"], "success");
    let dynamic_jobs = api.jobs(project, dynamic_id).await;
    assert!(
        trace(&api, project, job(&dynamic_jobs, "dynamic"))
            .await
            .contains("dynamic child of parent_pipeline with generated")
    );

    python_gitlab_sees_the_bridges(&running.url, project, parent_id, local_id).await;

    let failing_id = downstream("no-wait-child")["id"].as_i64().unwrap();
    let failing = api
        .wait_pipeline(project, failing_id, Duration::from_secs(30))
        .await;
    assert_eq!(failing["status"], "failed");
}

const DEPENDS_ON_FAILURE: &str = r#"
child:
  variables:
    PASSED_DOWN: x
  trigger:
    include: ci/failing.yml
    strategy: depend
    forward:
      pipeline_variables: true
after:
  needs: [child]
  script: echo never
broken:
  stage: test
  trigger:
    include: ci/missing.yml
  allow_failure: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategy_depend_fails_the_trigger_job_with_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[
            (".gitlab-ci.yml", DEPENDS_ON_FAILURE),
            ("ci/failing.yml", FAILING),
        ],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("depend", &repo_dir).await;
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let parent_id = body["id"].as_i64().unwrap();
    let parent = api
        .wait_pipeline(project, parent_id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, parent_id).await;
    assert_eq!(parent["status"], "failed", "{jobs:#?}");
    assert_eq!(job(&jobs, "child")["status"], "failed");
    assert_eq!(job(&jobs, "after")["status"], "skipped");
    // A child whose configuration is missing fails its trigger job, with
    // the reason in the job's log.
    let broken = job(&jobs, "broken");
    assert_eq!(broken["status"], "failed");
    let log = trace(&api, project, broken).await;
    assert!(log.contains("ci/missing.yml"), "{log}");
    let child_log = trace(&api, project, job(&jobs, "child")).await;
    assert!(
        child_log.contains("Created child pipeline #"),
        "{child_log}"
    );
    assert!(child_log.contains("failed"), "{child_log}");

    // Retrying the trigger job creates a new child (no runner claims it).
    let old = job(&jobs, "child");
    let (status, retried) = api
        .post(
            &format!("/api/v4/projects/{project}/jobs/{}/retry", old["id"]),
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{retried}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let retried = loop {
        let (_, j) = api
            .get(&format!(
                "/api/v4/projects/{project}/jobs/{}",
                retried["id"]
            ))
            .await;
        if j["status"] == "failed" {
            break j;
        }
        assert!(Instant::now() < deadline, "retried trigger job: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(retried["runner"].is_null(), "{retried:#}");
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    let downstream: Vec<i64> = bridges
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "child")
        .filter_map(|b| b["downstream_pipeline"]["id"].as_i64())
        .collect();
    assert_eq!(downstream.len(), 1, "the retry's child only: {bridges:#}");
    assert!(
        trace(&api, project, &retried)
            .await
            .contains(&format!("Created child pipeline #{}", downstream[0]))
    );
}

const MANUAL_TRIGGER: &str = r#"
deploy-child:
  when: manual
  trigger:
    include: ci/child.yml
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manual_trigger_job_played_creates_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(".gitlab-ci.yml", MANUAL_TRIGGER), ("ci/child.yml", CHILD)],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("manual", &repo_dir).await;
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let parent_id = body["id"].as_i64().unwrap();
    wait_job_status(&api, project, parent_id, "deploy-child", "manual").await;
    let jobs = api.jobs(project, parent_id).await;
    let (status, played) = api
        .post(
            &format!(
                "/api/v4/projects/{project}/jobs/{}/play",
                job(&jobs, "deploy-child")["id"]
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{played}");
    wait_job_status(&api, project, parent_id, "deploy-child", "success").await;
    assert!(played["runner"].is_null(), "{played:#}");
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    let child_id = bridges[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let child = api
        .wait_pipeline(project, child_id, Duration::from_secs(30))
        .await;
    assert_eq!(child["status"], "success");
}

const SLOW_CHILD: &str = r#"
slow-child:
  trigger:
    include: ci/slow.yml
    strategy: depend
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canceling_a_parent_cancels_its_child_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[
            (".gitlab-ci.yml", SLOW_CHILD),
            ("ci/slow.yml", "sleeper:\n  script: sleep 60\n"),
        ],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("cancel", &repo_dir).await;
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let parent_id = body["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let child_id = loop {
        let (_, bridges) = api
            .get(&format!(
                "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
            ))
            .await;
        if let Some(id) = bridges[0]["downstream_pipeline"]["id"].as_i64() {
            break id;
        }
        assert!(Instant::now() < deadline, "no child: {bridges:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_job_status(&api, project, child_id, "sleeper", "running").await;
    let (status, _) = api
        .post(
            &format!("/api/v4/projects/{project}/pipelines/{parent_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 201);
    let child = api
        .wait_pipeline(project, child_id, Duration::from_secs(30))
        .await;
    assert_eq!(child["status"], "canceled");
    let parent = api
        .wait_pipeline(project, parent_id, Duration::from_secs(30))
        .await;
    assert_eq!(parent["status"], "canceled");
}

/// A server that stopped between marking a trigger job running and
/// creating its child: the next start resumes it. The stop is driven
/// through a seam (the job's row is moved to running directly, as the
/// queue does, without creating the child), then `resume` runs as at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_job_left_running_by_a_stopped_server_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(".gitlab-ci.yml", MANUAL_TRIGGER), ("ci/child.yml", CHILD)],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("resume", &repo_dir).await;
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let parent_id = body["id"].as_i64().unwrap();
    wait_job_status(&api, project, parent_id, "deploy-child", "manual").await;
    let job_id = job(&api.jobs(project, parent_id).await, "deploy-child")["id"]
        .as_i64()
        .unwrap();
    assert!(
        running
            .app
            .store
            .transition(
                job_id,
                "manual",
                "running",
                Some("seam: the server stops here")
            )
            .await
            .unwrap()
    );
    gantry_server::children::resume(&running.app).await.unwrap();
    wait_job_status(&api, project, parent_id, "deploy-child", "success").await;
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    let child_id = bridges[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let child = api
        .wait_pipeline(project, child_id, Duration::from_secs(30))
        .await;
    assert_eq!(child["status"], "success");
}

/// A stand-in GitLab with a template and a component (the routes of the
/// CLI's includes_run test).
fn stand_in_gitlab() -> gantry_source::fake_gitlab::FakeGitlab {
    let mut r = std::collections::HashMap::new();
    r.insert(
        "/gitlab-org/gitlab/-/raw/master/lib/gitlab/ci/templates/Jobs/Child.gitlab-ci.yml".into(),
        "child-from-template:\n  script:\n    - echo \"child template source=$CI_PIPELINE_SOURCE\"\n"
            .into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/releases?per_page=100".into(),
        r#"[{"tag_name":"1.2.0"}]"#.into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/files/templates%2Fgreet.yml/raw?ref=1.2.0"
            .into(),
        "spec:\n  inputs:\n    who:\n---\ngreet-$[[ inputs.who ]]:\n  script:\n    - echo \"hi $[[ inputs.who ]] from the component\"\n".into(),
    );
    r.insert(
        "/api/v4/projects/my-org%2Fcomponents/repository/commits/1.2.0".into(),
        r#"{"id":"1111111111222222222233333333334444444444"}"#.into(),
    );
    gantry_source::fake_gitlab::FakeGitlab::start(r).expect("the stand-in GitLab starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_pipeline_from_another_projects_file() {
    let dir = tempfile::tempdir().unwrap();
    let shared_dir = dir.path().join("shared");
    repo(
        &shared_dir,
        &[(
            "templates/child.yml",
            "shared-job:\n  script: echo \"from the shared project on $CI_PIPELINE_SOURCE\"\n",
        )],
    );
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "child:\n  trigger:\n    include:\n      - project: root/shared-ci\n        file: templates/child.yml\n    strategy: depend\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    api.project("shared-ci", &shared_dir).await;
    let project = api.project("uses-shared", &repo_dir).await;
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let parent_id = body["id"].as_i64().unwrap();
    let parent = api
        .wait_pipeline(project, parent_id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, parent_id).await;
    let child_log = trace(&api, project, job(&jobs, "child")).await;
    assert_eq!(parent["status"], "success", "{child_log}");
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    let child = bridges[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let child_jobs = api.jobs(project, child).await;
    assert!(
        trace(&api, project, job(&child_jobs, "shared-job"))
            .await
            .contains("from the shared project on parent_pipeline")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_pipelines_from_a_template_and_a_component() {
    let gitlab = stand_in_gitlab();
    let ci = format!(
        "from-template:\n  trigger:\n    include:\n      - template: Jobs/Child.gitlab-ci.yml\n    strategy: depend\nfrom-component:\n  trigger:\n    include:\n      - component: {}/my-org/components/greet@~latest\n        inputs:\n          who: child\n    strategy: depend\n",
        gitlab.host()
    );
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", &ci)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.gitlab_url = Some(gitlab.url.clone());
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("remote-includes", &repo_dir).await;
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let parent_id = body["id"].as_i64().unwrap();
    let parent = api
        .wait_pipeline(project, parent_id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, parent_id).await;
    assert_eq!(parent["status"], "success", "{jobs:#?}");
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    let mut logs = String::new();
    for bridge in bridges.as_array().unwrap() {
        let child = bridge["downstream_pipeline"]["id"].as_i64().unwrap();
        for j in api.jobs(project, child).await {
            logs.push_str(&trace(&api, project, &j).await);
        }
    }
    assert!(
        logs.contains("child template source=parent_pipeline"),
        "{logs}"
    );
    assert!(logs.contains("hi child from the component"), "{logs}");
}

/// python-gitlab's `pipeline.bridges.list()` reads the downstream pipelines.
async fn python_gitlab_sees_the_bridges(url: &str, project: i64, parent: i64, child: i64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("GANTRY_PYCLIENTS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-pyclients"));
    let python = venv.join("bin/python");
    if !python.exists() {
        skip_or_fail(
            "GANTRY_REQUIRE_PYCLIENTS",
            "python-gitlab is not installed (run scripts/setup-pyclients.sh)",
        );
        return;
    }
    let script = format!(
        "import gitlab\n\
         gl = gitlab.Gitlab('{url}', private_token='{ADMIN_TOKEN}')\n\
         p = gl.projects.get({project}).pipelines.get({parent})\n\
         for b in p.bridges.list(get_all=True):\n\
         \x20   print(b.name, (b.downstream_pipeline or {{}}).get('id'))\n"
    );
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("local-child {child}")), "{stdout}");
}
