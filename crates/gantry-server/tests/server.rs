//! The server end to end, in-process, on SQLite and on PostgreSQL: a push
//! webhook creates a pipeline that the built-in runner runs through the
//! engine; statuses, traces, artifacts, variables and deployments are read
//! back over the API.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const PIPELINE: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script:
    - echo "building $CI_COMMIT_SHORT_SHA on $CI_COMMIT_REF_NAME from $CI_PIPELINE_SOURCE"
    - mkdir -p out && echo hello > out/result.txt
    - echo "the secret is $MY_SECRET"
    - echo "protected is [$PROD_ONLY]"
  artifacts:
    paths: [out/]
test:
  stage: test
  script:
    - cat out/result.txt
    - test "$(cat out/result.txt)" = hello
deploy:
  stage: deploy
  script: echo deploying to $CI_ENVIRONMENT_NAME
  environment:
    name: production
    url: https://example.com
"#;

async fn end_to_end(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let sha = repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), database))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("app", &repo_dir).await;

    // A masked variable, and a protected one on a branch that is not protected.
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "MY_SECRET", "value": "hunter2-very-secret", "masked": true}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "PROD_ONLY", "value": "prod-credential", "protected": true}),
        )
        .await;
    assert_eq!(s, 201);
    support::git(&repo_dir, &["checkout", "-q", "-b", "feature"]);
    let feature_sha = commit(&repo_dir, &[("README", "feature\n")], "feature work");

    let secret = api.webhook_secret(project).await;
    let (status, body) = send_gitlab_hook(
        &running.url,
        project,
        &secret,
        &gitlab_push("feature", &sha, &feature_sha),
    )
    .await;
    assert_eq!(status, 201, "webhook: {body}");
    let pipeline_id = body["pipeline_id"].as_i64().unwrap();
    let pipeline = api
        .wait_pipeline(project, pipeline_id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, pipeline_id).await;
    assert_eq!(pipeline["status"], "success", "jobs: {jobs:#?}");
    assert_eq!(pipeline["source"], "push");
    assert_eq!(pipeline["sha"], feature_sha.as_str());
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["status"] == "success"), "{jobs:#?}");

    let build = jobs.iter().find(|j| j["name"] == "build").unwrap();
    let build_id = build["id"].as_i64().unwrap();
    let (s, trace) = api
        .text(&format!("/api/v4/projects/{project}/jobs/{build_id}/trace"))
        .await;
    assert_eq!(s, 200);
    assert!(trace.contains("building"), "{trace}");
    assert!(trace.contains("on feature from push"), "{trace}");
    assert!(
        !trace.contains("hunter2-very-secret"),
        "masked value in the log: {trace}"
    );
    assert!(trace.contains("[MASKED]"), "{trace}");
    assert!(
        !trace.contains("prod-credential"),
        "protected variable on an unprotected ref: {trace}"
    );
    assert!(trace.contains("protected is []"), "{trace}");

    let test = jobs.iter().find(|j| j["name"] == "test").unwrap();
    let (_, test_trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            test["id"]
        ))
        .await;
    assert!(
        test_trace.contains("hello"),
        "artifacts reached the next stage: {test_trace}"
    );

    let r = reqwest::Client::new()
        .get(format!(
            "{}/api/v4/projects/{project}/jobs/{build_id}/artifacts",
            running.url
        ))
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let zip_bytes = r.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.to_vec())).unwrap();
    assert!(zip.by_name("out/result.txt").is_ok());

    let (_, deployments) = api
        .get(&format!("/api/v4/projects/{project}/deployments"))
        .await;
    assert_eq!(
        deployments[0]["environment"]["name"], "production",
        "{deployments}"
    );
    assert_eq!(deployments[0]["sha"], feature_sha.as_str());

    // Every transition is stored, and the secret is stored only encrypted.
    let transitions = running.app.store.job_transitions(build_id).await.unwrap();
    let states: Vec<&str> = transitions.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(states, ["pending", "running", "success"]);
    let raw: Vec<(String,)> = sqlx::query_as("SELECT value_enc FROM variables")
        .fetch_all(&running.app.store.db.pool)
        .await
        .unwrap();
    assert!(raw.iter().all(|(v,)| !v.contains("hunter2")));
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_webhook_runs_the_pipeline_on_sqlite() {
    end_to_end(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_webhook_runs_the_pipeline_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    end_to_end(Some(pg.database("e2e"))).await;
}

const PY_PIPELINE: &str = r#"
stages: [build, deploy]
build:
  stage: build
  script:
    - echo "$GREETING"
    - echo "token $DEPLOY_TOKEN"
    - mkdir -p dist && echo artifact > dist/a.txt
  artifacts:
    paths: [dist/]
flaky:
  stage: build
  script: exit 1
  allow_failure: true
slow:
  stage: build
  script:
    - if [ -n "$SLOW" ]; then sleep 60; fi
deploy:
  stage: deploy
  script: echo deployed
  when: manual
"#;

/// python-gitlab and its `gitlab` command against the server
/// (tests/pyclients/python_gitlab.py; the venv comes from
/// scripts/setup-pyclients.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_gitlab_drives_the_api() {
    let Some(python) = pyclients_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PY_PIPELINE)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_concurrency = 4;
    let running = gantry_server::start(cfg).await.unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyclients/python_gitlab.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("GANTRY_URL", &running.url)
        .env("GANTRY_TOKEN", ADMIN_TOKEN)
        .env("GANTRY_REPO", &repo_dir)
        .env("GANTRY_GITLAB_CLI", python.with_file_name("gitlab"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python-gitlab script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    running.server.abort();
}

const EXPIRING: &str = r#"
short:
  script: mkdir -p out && echo short > out/a.txt
  artifacts:
    paths: [out/]
    expire_in: 1 second
kept:
  script: mkdir -p out && echo kept > out/b.txt
  artifacts:
    paths: [out/]
    expire_in: never
"#;

/// `artifacts:expire_in`: the sweeper deletes the archive from the object
/// store and the row forgets it; `never` keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_artifacts_are_swept_and_never_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", EXPIRING)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.sweep_interval = Duration::from_millis(200);
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("expire", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "success");
    let jobs = api.jobs(project, id).await;
    let id_of = |name: &str| {
        jobs.iter()
            .find(|j| j["name"] == name)
            .and_then(|j| j["id"].as_i64())
            .unwrap()
    };
    let (short, kept) = (id_of("short"), id_of("kept"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = api
            .text(&format!(
                "/api/v4/projects/{project}/jobs/{short}/artifacts"
            ))
            .await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the expired artifacts are still served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let objects = running.app.objects.list("artifacts/").await.unwrap();
    assert!(
        !objects
            .iter()
            .any(|(k, _)| k.contains(&format!("{short}.zip"))),
        "the archive is deleted from the object store: {objects:?}"
    );
    assert!(
        objects
            .iter()
            .any(|(k, _)| k.contains(&format!("{kept}.zip")))
    );
    let short_row = running.app.store.job(short).await.unwrap().unwrap();
    assert_eq!(short_row.artifact_size, None);
    let (status, _) = api
        .text(&format!("/api/v4/projects/{project}/jobs/{kept}/artifacts"))
        .await;
    assert_eq!(status, 200, "expire_in: never keeps the archive");
    running.server.abort();
}
