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

/// A pipeline's jobs and its trigger jobs (GitLab lists those apart, as
/// bridges).
async fn jobs_and_bridges(api: &Client, project: i64, pipeline: i64) -> Vec<Value> {
    let mut all = api.jobs(project, pipeline).await;
    all.extend(bridges(api, project, pipeline).await);
    all
}

/// `GET …/pipelines/:id/bridges`.
async fn bridges(api: &Client, project: i64, pipeline: i64) -> Vec<Value> {
    let (status, list) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{pipeline}/bridges"
        ))
        .await;
    assert_eq!(status, 200, "{list}");
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
        let jobs = jobs_and_bridges(api, project, pipeline).await;
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
    let jobs = jobs_and_bridges(&api, project, parent_id).await;
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

    if let Some(seen) = python_gitlab_bridges(&running.url, project, parent_id).await {
        assert!(
            seen.contains(&format!("local-child {local_id} {project}")),
            "{seen}"
        );
    }

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
    let jobs = jobs_and_bridges(&api, project, parent_id).await;
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
    let jobs = jobs_and_bridges(&api, project, parent_id).await;
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
    let job_id = job(
        &jobs_and_bridges(&api, project, parent_id).await,
        "deploy-child",
    )["id"]
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
    let jobs = jobs_and_bridges(&api, project, parent_id).await;
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
    let jobs = jobs_and_bridges(&api, project, parent_id).await;
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

/// python-gitlab's `pipeline.bridges.list()`: one line per bridge, `name
/// downstream-id downstream-project-id`; `None` when python-gitlab is
/// missing (and not required).
async fn python_gitlab_bridges(url: &str, project: i64, parent: i64) -> Option<String> {
    let python = pyclients_python()?;
    let script = format!(
        "import gitlab\n\
         gl = gitlab.Gitlab('{url}', private_token='{ADMIN_TOKEN}')\n\
         p = gl.projects.get({project}).pipelines.get({parent})\n\
         for b in p.bridges.list(get_all=True):\n\
         \x20   d = b.downstream_pipeline or {{}}\n\
         \x20   print(b.name, d.get('id'), d.get('project_id'))\n"
    );
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

// ---- multi-project pipelines (`trigger: project`) ----

const DOWNSTREAM: &str = r#"
downstream-job:
  script:
    - echo "downstream source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME project=$CI_PROJECT_PATH up=${UPSTREAM_REF:-unset} api=${API_VAR:-unset} leak=${LEAK:-unset}"
"#;

const DOWNSTREAM_BROKEN: &str = r#"
downstream-job:
  script:
    - echo "broken branch leak=${LEAK:-unset}"
    - exit 4
"#;

const UPSTREAM: &str = r#"
to-main:
  variables:
    UPSTREAM_REF: up-$CI_COMMIT_REF_NAME
    MASKED_COPY: copy-of-$UP_MASKED
    PROTECTED_COPY: $UP_PROTECTED
  trigger:
    project: root/downstream
    strategy: depend
    forward:
      pipeline_variables: true
to-broken:
  variables:
    LEAK: $UP_PROTECTED
  trigger:
    project: root/downstream
    branch: broken
    strategy: depend
  allow_failure: true
to-nowhere:
  trigger: root/no-such-project
  allow_failure: true
to-no-branch:
  trigger:
    project: root/downstream
    branch: no-such-branch
  allow_failure: true
after:
  needs: [to-main]
  script: echo after the downstream pipeline
"#;

/// A downstream project with `main` and a failing `broken` branch.
fn downstream_repo(dir: &Path) {
    repo(dir, &[(".gitlab-ci.yml", DOWNSTREAM)]);
    git(dir, &["checkout", "-q", "-b", "broken"]);
    commit(dir, &[(".gitlab-ci.yml", DOWNSTREAM_BROKEN)], "broken");
    git(dir, &["checkout", "-q", "main"]);
}

async fn wait_bridge(api: &Client, project: i64, pipeline: i64, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = bridges(api, project, pipeline).await;
        if let Some(b) = list
            .iter()
            .find(|b| b["name"] == name && !b["downstream_pipeline"].is_null())
        {
            return b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "bridge {name} has no downstream pipeline: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_project_runs_the_downstream_projects_pipeline_on_sqlite() {
    multi_project(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_project_runs_the_downstream_projects_pipeline_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    multi_project(Some(pg.database("multi"))).await;
}

async fn multi_project(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let down_dir = dir.path().join("downstream");
    downstream_repo(&down_dir);
    let up_dir = dir.path().join("upstream");
    repo(&up_dir, &[(".gitlab-ci.yml", UPSTREAM)]);
    let running = gantry_server::start(config(&dir.path().join("data"), database))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let downstream = api.project("downstream", &down_dir).await;
    let upstream = api.project("upstream", &up_dir).await;
    // Protected: seen on the upstream's `main`, but never given to another
    // project's pipeline (GitLab's rule), be its ref protected or not.
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{upstream}/variables"),
            json!({"key": "UP_PROTECTED", "value": "protected-value", "protected": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Masked: never copied into downstream pipeline variables (stored and
    // shown unmasked there).
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{upstream}/variables"),
            json!({"key": "UP_MASKED", "value": "masked-secret-value", "masked": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{upstream}/pipeline"),
            json!({"ref": "main", "variables": [{"key": "API_VAR", "value": "from-the-api"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let up_id = body["id"].as_i64().unwrap();
    let up = api
        .wait_pipeline(upstream, up_id, Duration::from_secs(90))
        .await;
    let list = bridges(&api, upstream, up_id).await;
    assert_eq!(up["status"], "success", "{list:#?}");
    // GitLab lists trigger jobs only as bridges, not among the jobs.
    let jobs = api.jobs(upstream, up_id).await;
    assert_eq!(
        jobs.iter().map(|j| j["name"].clone()).collect::<Vec<_>>(),
        vec![json!("after")],
        "{jobs:#?}"
    );
    let (_, project_jobs) = api
        .get(&format!("/api/v4/projects/{upstream}/jobs?per_page=100"))
        .await;
    assert!(
        project_jobs
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["name"] == "after"),
        "{project_jobs:#}"
    );
    assert_eq!(list.len(), 4, "{list:#?}");

    // `strategy: depend` on a downstream pipeline that succeeds.
    let to_main = job(&list, "to-main");
    assert_eq!(to_main["status"], "success", "{to_main:#}");
    let main_pipeline = &to_main["downstream_pipeline"];
    assert_eq!(main_pipeline["project_id"], downstream, "{main_pipeline:#}");
    assert_eq!(main_pipeline["ref"], "main");
    assert_eq!(main_pipeline["source"], "pipeline");
    let main_id = main_pipeline["id"].as_i64().unwrap();
    let main_jobs = api.jobs(downstream, main_id).await;
    let log = trace(&api, downstream, job(&main_jobs, "downstream-job")).await;
    assert!(
        log.contains(
            "downstream source=pipeline ref=main project=root/downstream up=up-main \
             api=from-the-api leak=unset"
        ),
        "{log}"
    );
    let (_, main_vars) = api
        .get(&format!(
            "/api/v4/projects/{downstream}/pipelines/{main_id}/variables"
        ))
        .await;
    let names: Vec<&str> = main_vars
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["key"].as_str())
        .collect();
    assert_eq!(names, ["UPSTREAM_REF", "API_VAR"], "{main_vars:#}");
    assert!(!main_vars.to_string().contains("masked-secret-value"));
    let main_bridge_log = trace(&api, upstream, to_main).await;
    assert!(
        main_bridge_log.contains("MASKED_COPY is not passed downstream")
            && main_bridge_log.contains("PROTECTED_COPY is not passed downstream")
            && !main_bridge_log.contains("masked-secret-value"),
        "{main_bridge_log}"
    );
    // The downstream pipeline belongs to the downstream project.
    let (status, _) = api
        .get(&format!("/api/v4/projects/{upstream}/pipelines/{main_id}"))
        .await;
    assert_eq!(status, 404);

    // A failing downstream pipeline fails its `strategy: depend` trigger job;
    // the protected variable did not travel to the unprotected branch, and
    // pipeline variables did not travel without `forward:pipeline_variables`.
    let to_broken = job(&list, "to-broken");
    assert_eq!(to_broken["status"], "failed", "{to_broken:#}");
    assert_eq!(to_broken["downstream_pipeline"]["status"], "failed");
    assert_eq!(to_broken["downstream_pipeline"]["ref"], "broken");
    let broken_id = to_broken["downstream_pipeline"]["id"].as_i64().unwrap();
    let broken_jobs = api.jobs(downstream, broken_id).await;
    let broken_log = trace(&api, downstream, job(&broken_jobs, "downstream-job")).await;
    assert!(
        broken_log.contains("broken branch leak=unset"),
        "{broken_log}"
    );
    let bridge_log = trace(&api, upstream, to_broken).await;
    assert!(
        bridge_log.contains("LEAK is not passed downstream")
            && !bridge_log.contains("protected-value"),
        "{bridge_log}"
    );
    let (_, broken_vars) = api
        .get(&format!(
            "/api/v4/projects/{downstream}/pipelines/{broken_id}/variables"
        ))
        .await;
    assert_eq!(broken_vars, json!([]), "{broken_vars:#}");

    // An unknown project fails the trigger job with GitLab's reason.
    let nowhere = job(&list, "to-nowhere");
    assert_eq!(nowhere["status"], "failed");
    assert_eq!(
        nowhere["failure_reason"], "downstream_bridge_project_not_found",
        "{nowhere:#}"
    );
    assert!(nowhere["downstream_pipeline"].is_null());
    let nowhere_log = trace(&api, upstream, nowhere).await;
    assert!(
        nowhere_log.contains("root/no-such-project"),
        "{nowhere_log}"
    );

    // A branch the downstream project lacks: GitLab's creation failure.
    let no_branch = job(&list, "to-no-branch");
    assert_eq!(
        no_branch["failure_reason"], "downstream_pipeline_creation_failed",
        "{no_branch:#}"
    );
    let no_branch_log = trace(&api, upstream, no_branch).await;
    assert!(no_branch_log.contains("no-such-branch"), "{no_branch_log}");

    if let Some(seen) = python_gitlab_bridges(&running.url, upstream, up_id).await {
        assert!(
            seen.contains(&format!("to-main {main_id} {downstream}")),
            "{seen}"
        );
        assert!(seen.contains("to-nowhere None None"), "{seen}");
    }
}

const SLOW_DOWNSTREAM: &str = "sleeper:\n  script: sleep 60\n";

/// Canceling the upstream pipeline cancels its multi-project downstream
/// pipeline, as for a child.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canceling_upstream_cancels_the_downstream_projects_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let down_dir = dir.path().join("downstream");
    repo(&down_dir, &[(".gitlab-ci.yml", SLOW_DOWNSTREAM)]);
    let up_dir = dir.path().join("upstream");
    repo(
        &up_dir,
        &[(
            ".gitlab-ci.yml",
            "wait-for-it:\n  trigger:\n    project: root/slow\n    strategy: depend\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let downstream = api.project("slow", &down_dir).await;
    let upstream = api.project("waits", &up_dir).await;
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{upstream}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let up_id = body["id"].as_i64().unwrap();
    let bridge = wait_bridge(&api, upstream, up_id, "wait-for-it").await;
    let down_id = bridge["downstream_pipeline"]["id"].as_i64().unwrap();
    wait_job_status(&api, downstream, down_id, "sleeper", "running").await;
    let (status, _) = api
        .post(
            &format!("/api/v4/projects/{upstream}/pipelines/{up_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 201);
    let down = api
        .wait_pipeline(downstream, down_id, Duration::from_secs(30))
        .await;
    assert_eq!(down["status"], "canceled");
    let up = api
        .wait_pipeline(upstream, up_id, Duration::from_secs(30))
        .await;
    assert_eq!(up["status"], "canceled");
}

/// The user who started the upstream pipeline needs developer access to
/// the downstream project. Roles are server-wide here and a viewer cannot
/// start a pipeline through the API, so the viewer's upstream pipeline is
/// created through the server's library (the seam); the trigger job then
/// runs as in any pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewers_upstream_pipeline_gets_insufficient_bridge_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let down_dir = dir.path().join("downstream");
    repo(&down_dir, &[(".gitlab-ci.yml", DOWNSTREAM)]);
    let up_dir = dir.path().join("upstream");
    repo(
        &up_dir,
        &[(
            ".gitlab-ci.yml",
            "to-downstream:\n  trigger:\n    project: root/downstream\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let downstream = api.project("downstream", &down_dir).await;
    let upstream = api.project("upstream", &up_dir).await;
    let (status, viewer) = api
        .post(
            "/api/v4/users",
            json!({"username": "vera", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{viewer}");
    let project = running.app.store.project(upstream).await.unwrap().unwrap();
    let req = gantry_server::pipelines::Request {
        git_ref: "main".into(),
        source: "api".into(),
        user_id: viewer["id"].as_i64(),
        ..Default::default()
    };
    let up = gantry_server::pipelines::create(&running.app, &project, req)
        .await
        .unwrap();
    let up = api
        .wait_pipeline(upstream, up.id, Duration::from_secs(60))
        .await;
    let list = bridges(&api, upstream, up["id"].as_i64().unwrap()).await;
    let bridge = job(&list, "to-downstream");
    assert_eq!(up["status"], "failed", "{list:#?}");
    assert_eq!(
        bridge["failure_reason"], "insufficient_bridge_permissions",
        "{bridge:#}"
    );
    assert!(bridge["downstream_pipeline"].is_null());
    let log = trace(&api, upstream, bridge).await;
    assert!(log.contains("vera (viewer)"), "{log}");
    assert!(pipelines(&api, downstream).await.is_empty());
}

/// Two projects triggering each other stop with GitLab's loop check (one
/// project, ref and source at most twice up the chain), and a project
/// cannot name itself in `trigger:project`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projects_triggering_each_other_stop_with_pipeline_loop_detected() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    repo(
        &a_dir,
        &[(
            ".gitlab-ci.yml",
            "to-b:\n  trigger: root/loop-b\nto-self:\n  trigger: root/loop-a\n  allow_failure: true\n",
        )],
    );
    let b_dir = dir.path().join("b");
    repo(
        &b_dir,
        &[(".gitlab-ci.yml", "to-a:\n  trigger: root/loop-a\n")],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let a = api.project("loop-a", &a_dir).await;
    let b = api.project("loop-b", &b_dir).await;
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{a}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let first = body["id"].as_i64().unwrap();
    let to_self = wait_bridge_status(&api, a, first, "to-self", "failed").await;
    assert_eq!(
        to_self["failure_reason"], "invalid_bridge_trigger",
        "{to_self:#}"
    );
    // A1 → B1 → A2 → B2 → A3 → B3, whose trigger job stops the loop.
    let deadline = Instant::now() + Duration::from_secs(60);
    let looped = loop {
        let mut found = None;
        for p in pipelines(&api, b).await {
            let id = p["id"].as_i64().unwrap();
            if let Some(bridge) = bridges(&api, b, id)
                .await
                .into_iter()
                .find(|j| j["failure_reason"] == "pipeline_loop_detected")
            {
                found = Some(bridge);
            }
        }
        if let Some(bridge) = found {
            break bridge;
        }
        assert!(Instant::now() < deadline, "no loop detected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(looped["downstream_pipeline"].is_null());
    assert_eq!(pipelines(&api, a).await.len(), 3);
    assert_eq!(pipelines(&api, b).await.len(), 3);
    // GitLab's `retryable?`: a retry would loop again.
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{b}/jobs/{}/retry", looped["id"]),
            json!({}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

async fn wait_bridge_status(
    api: &Client,
    project: i64,
    pipeline: i64,
    name: &str,
    status: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = bridges(api, project, pipeline).await;
        if let Some(b) = list
            .iter()
            .find(|b| b["name"] == name && b["status"] == status)
        {
            return b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "bridge {name} never {status}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A push webhook's pipeline has no user: its trigger job acts as the
/// upstream project's creator (who registered the webhook's project).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_pipeline_triggers_downstream_as_the_projects_creator() {
    let dir = tempfile::tempdir().unwrap();
    let down_dir = dir.path().join("downstream");
    repo(&down_dir, &[(".gitlab-ci.yml", DOWNSTREAM)]);
    let up_dir = dir.path().join("upstream");
    let first = repo(
        &up_dir,
        &[(
            ".gitlab-ci.yml",
            "to-downstream:\n  trigger:\n    project: root/downstream\n    strategy: depend\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let downstream = api.project("downstream", &down_dir).await;
    let upstream = api.project("upstream", &up_dir).await;
    let (_, me) = api.get("/api/v4/user").await;
    let pushed = commit(&up_dir, &[("a.txt", "a\n")], "pushed");
    let secret = api.webhook_secret(upstream).await;
    let (status, body) = send_gitlab_hook(
        &running.url,
        upstream,
        &secret,
        &gitlab_push("main", &first, &pushed),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let up_id = body["pipeline_id"].as_i64().unwrap();
    let up = api
        .wait_pipeline(upstream, up_id, Duration::from_secs(60))
        .await;
    let list = bridges(&api, upstream, up_id).await;
    assert_eq!(up["status"], "success", "{list:#?}");
    assert!(up["user"].is_null(), "{up:#}");
    let down_id = list[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let (_, down) = api
        .get(&format!(
            "/api/v4/projects/{downstream}/pipelines/{down_id}"
        ))
        .await;
    assert_eq!(down["user"]["id"], me["id"], "{down:#}");
    assert_eq!(down["status"], "success");
}

const UPSTREAM_WITH_DOTENV: &str = r#"
build:
  script:
    - echo "VERSION=1.2.3" > build.env
  artifacts:
    reports:
      dotenv: build.env
deploy-prod:
  needs: [build]
  variables:
    UP_VERSION: v$VERSION
  trigger:
    project: root/deployer
    strategy: depend
    inputs:
      target: prod
"#;

/// `trigger:inputs` fill the downstream configuration's `spec:inputs`, and
/// a value an upstream job left in its dotenv report travels through the
/// trigger job's variables (GitLab's documented way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_inputs_and_upstream_dotenv_reach_the_downstream_project() {
    let dir = tempfile::tempdir().unwrap();
    let down_dir = dir.path().join("deployer");
    repo(
        &down_dir,
        &[(
            ".gitlab-ci.yml",
            "spec:\n  inputs:\n    target:\n      default: dev\n---\ndeploy:\n  script: echo \"deploying $UP_VERSION to $[[ inputs.target ]]\"\n",
        )],
    );
    let up_dir = dir.path().join("app");
    repo(&up_dir, &[(".gitlab-ci.yml", UPSTREAM_WITH_DOTENV)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let downstream = api.project("deployer", &down_dir).await;
    let upstream = api.project("app", &up_dir).await;
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{upstream}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let up_id = body["id"].as_i64().unwrap();
    let up = api
        .wait_pipeline(upstream, up_id, Duration::from_secs(60))
        .await;
    let list = bridges(&api, upstream, up_id).await;
    assert_eq!(up["status"], "success", "{list:#?}");
    let down_id = list[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let jobs = api.jobs(downstream, down_id).await;
    let log = trace(&api, downstream, job(&jobs, "deploy")).await;
    assert!(log.contains("deploying v1.2.3 to prod"), "{log}");
}
