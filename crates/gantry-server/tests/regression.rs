//! One test per bug fixed in the server, named after the behaviour.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

/// A pipeline whose jobs were canceled was reported "failed": the state
/// machine restored from rows has no cancel flag, so the server must map
/// canceled jobs (and no failed one) to GitLab's "canceled".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canceled_pipeline_is_canceled_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "stages: [a, b]\nslow:\n  stage: a\n  script: sleep 30\nnext:\n  stage: b\n  script: 'true'\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("cancel", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    for _ in 0..100 {
        if api.jobs(project, id).await[0]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/pipelines/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201);
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "canceled");
    let jobs = api.jobs(project, id).await;
    assert!(jobs.iter().all(|j| j["status"] == "canceled"), "{jobs:#?}");
    running.server.abort();
}

/// The API's `play` ignored approvals: a developer could deploy to
/// production through python-gitlab while the dashboard refused. Playing a
/// manual job of a protected environment needs a maintainer on both doors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn playing_a_production_deploy_through_the_api_needs_a_maintainer() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "deploy:\n  script: 'true'\n  when: manual\n  environment:\n    name: production\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let url = running.url.clone();
    let api = Client::new(&url, Some(ADMIN_TOKEN));
    let project = api.project("approve", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let mut job = None;
    for _ in 0..100 {
        let jobs = api.jobs(project, id).await;
        if jobs.first().is_some_and(|j| j["status"] == "manual") {
            job = jobs[0]["id"].as_i64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job.expect("the deploy job waits as manual");
    let play = format!("/api/v4/projects/{project}/jobs/{job}/play");
    let (_, dev) = api
        .post(
            "/api/v4/users",
            json!({"username": "dev", "role": "developer"}),
        )
        .await;
    let dev = Client::new(&url, dev["token"].as_str());
    assert_eq!(dev.post(&play, json!({})).await.0, 403);
    let (_, maint) = api
        .post(
            "/api/v4/users",
            json!({"username": "mia", "role": "maintainer"}),
        )
        .await;
    let maint = Client::new(&url, maint["token"].as_str());
    let (s, body) = maint.post(&play, json!({})).await;
    assert!(s == 200 || s == 201, "{s} {body}");
    running.server.abort();
}
