//! Environments stop as GitLab's do: `environment:on_stop` is played by the
//! stop API and by the sweeper once `environment:auto_stop_in` has passed;
//! the environment is `stopping` until its stop job succeeds, then `stopped`.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;

fn pipeline(auto_stop_in: &str) -> String {
    format!(
        r#"
deploy_review:
  script: echo deploying
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    on_stop: stop_review
    auto_stop_in: {auto_stop_in}
stop_review:
  script: echo stopping $CI_ENVIRONMENT_NAME
  when: manual
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    action: stop
"#
    )
}

/// Runs the pipeline on branch `Feature/X-1`; answers the project and the
/// environment `review/feature-x-1` as the API lists it.
async fn deployed(api: &Client, repo_dir: &std::path::Path, auto_stop_in: &str) -> (i64, Value) {
    repo(repo_dir, &[(".gitlab-ci.yml", &pipeline(auto_stop_in))]);
    git(repo_dir, &["checkout", "-q", "-b", "Feature/X-1"]);
    let project = api.project("shop", repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "Feature/X-1"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap_or_else(|| panic!("{p}"));
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, id).await;
    let deploy = jobs.iter().find(|j| j["name"] == "deploy_review").unwrap();
    assert_eq!(deploy["status"], "success", "{done}\n{jobs:#?}");
    let (status, envs) = api
        .get(&format!("/api/v4/projects/{project}/environments"))
        .await;
    assert_eq!(status, 200, "{envs}");
    let envs = envs.as_array().unwrap().clone();
    assert_eq!(envs.len(), 1, "{envs:#?}");
    assert_eq!(envs[0]["name"], "review/feature-x-1");
    assert_eq!(envs[0]["state"], "available");
    assert!(envs[0]["auto_stop_at"].is_string(), "{envs:#?}");
    (project, envs[0].clone())
}

/// Polls the environment until its state is `want`; panics with it otherwise.
async fn wait_state(api: &Client, project: i64, env: i64, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, e) = api
            .get(&format!("/api/v4/projects/{project}/environments/{env}"))
            .await;
        if e["state"] == want {
            return e;
        }
        assert!(Instant::now() < deadline, "environment never {want}: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stop job ran, once, and succeeded.
async fn stop_job_succeeded(api: &Client, project: i64) {
    let (_, jobs) = api.get(&format!("/api/v4/projects/{project}/jobs")).await;
    let stops: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"] == "stop_review")
        .collect();
    assert_eq!(stops.len(), 1, "{jobs:#}");
    assert_eq!(stops[0]["status"], "success", "{jobs:#}");
}

async fn stop_through_the_api(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let running = gantry_server::start(config(&dir.path().join("data"), database))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let (project, env) = deployed(&api, &dir.path().join("repo"), "1 day").await;
    let eid = env["id"].as_i64().unwrap();

    // A viewer may not stop it.
    let (_, viewer) = api
        .post(
            "/api/v4/users",
            json!({"username": "vic", "role": "viewer"}),
        )
        .await;
    let viewer = Client::new(&running.url, viewer["token"].as_str());
    let (status, _) = viewer
        .post(
            &format!("/api/v4/projects/{project}/environments/{eid}/stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);

    let (status, answer) = api
        .post(
            &format!("/api/v4/projects/{project}/environments/{eid}/stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        matches!(answer["state"].as_str(), Some("stopping" | "stopped")),
        "{answer}"
    );
    let stopped = wait_state(&api, project, eid, "stopped").await;
    assert!(stopped["auto_stop_at"].is_null(), "{stopped}");
    stop_job_succeeded(&api, project).await;

    // Stopping a stopped environment is refused.
    let (status, _) = api
        .post(
            &format!("/api/v4/projects/{project}/environments/{eid}/stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, 400);
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stop_api_plays_on_stop_of_a_review_environment_on_sqlite() {
    stop_through_the_api(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stop_api_plays_on_stop_of_a_review_environment_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    stop_through_the_api(Some(pg.database("envstop"))).await;
}

/// `auto_stop_in: 2 seconds` with the server's own sweeper running often.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_stops_an_environment_after_auto_stop_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.sweep_interval = Duration::from_millis(200);
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let (project, env) = deployed(&api, &dir.path().join("repo"), "2 seconds").await;
    wait_state(&api, project, env["id"].as_i64().unwrap(), "stopped").await;
    stop_job_succeeded(&api, project).await;
    running.server.abort();
}

/// The Environments page's Stop button: CSRF-checked, then the same stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_stop_button_plays_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let (project, env) = deployed(&api, &dir.path().join("repo"), "1 day").await;
    let eid = env["id"].as_i64().unwrap();
    let stop = format!("/dash/environments/{eid}/stop");

    let mut web = Web::new(&running.url);
    assert_eq!(web.login("root", ADMIN_TOKEN).await, 303);
    let (status, page, _) = web.get("/dash/environments").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("action=\"{stop}\"")), "{page}");
    assert!(page.contains("stops at "), "the auto-stop time is shown");

    let (status, _, _) = web.post(&stop, &[("csrf", "wrong")]).await;
    assert_eq!(status, 403, "no stop without the CSRF token");
    let (_, e) = api
        .get(&format!("/api/v4/projects/{project}/environments/{eid}"))
        .await;
    assert_eq!(e["state"], "available", "{e}");

    let csrf = web.csrf().await;
    let (status, body, _) = web.post(&stop, &[("csrf", &csrf)]).await;
    assert_eq!(status, 303, "{body}");
    wait_state(&api, project, eid, "stopped").await;
    stop_job_succeeded(&api, project).await;
    let (_, page, _) = web.get("/dash/environments").await;
    assert!(
        !page.contains(&format!("action=\"{stop}\"")),
        "no Stop once stopped"
    );
    running.server.abort();
}
