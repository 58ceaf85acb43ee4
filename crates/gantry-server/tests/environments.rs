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

/// A push webhook's pipeline has no user; once `auto_stop_in` passes the
/// sweeper plays its stop job as the system bot (GitLab's internal bot),
/// a user who cannot log in and is shown as such in the API and the UI.
async fn webhook_deploy_stopped_by_the_bot(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let mut cfg = config(&dir.path().join("data"), database);
    cfg.sweep_interval = Duration::from_millis(200);
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let sha = repo(&repo_dir, &[(".gitlab-ci.yml", &pipeline("2 seconds"))]);
    git(&repo_dir, &["checkout", "-q", "-b", "Feature/X-1"]);
    let project = api.project("shop", &repo_dir).await;
    let secret = api.webhook_secret(project).await;
    let (status, body) = send_gitlab_hook(
        &running.url,
        project,
        &secret,
        &gitlab_push(
            "Feature/X-1",
            "0000000000000000000000000000000000000000",
            &sha,
        ),
    )
    .await;
    assert_eq!(status, 201, "webhook: {body}");
    let pid = body["pipeline_id"].as_i64().unwrap();
    let p = api
        .wait_pipeline(project, pid, Duration::from_secs(60))
        .await;
    assert!(p["user"].is_null(), "a push pipeline has no user: {p}");
    let (_, envs) = api
        .get(&format!("/api/v4/projects/{project}/environments"))
        .await;
    assert_eq!(envs[0]["name"], "review/feature-x-1", "{envs}");
    let eid = envs[0]["id"].as_i64().unwrap();

    wait_state(&api, project, eid, "stopped").await;
    stop_job_succeeded(&api, project).await;
    let (_, jobs) = api.get(&format!("/api/v4/projects/{project}/jobs")).await;
    let stop = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "stop_review")
        .unwrap();
    let bot_id = stop["user"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the stop job has the bot as its user: {stop}"));
    let (status, bot) = api.get(&format!("/api/v4/users/{bot_id}")).await;
    assert_eq!(status, 200, "{bot}");
    assert_eq!(bot["username"], "gantry-bot", "{bot}");
    assert_eq!(bot["bot"], true, "{bot}");
    let (_, root) = api.get("/api/v4/user").await;
    assert_eq!(root["bot"], false, "{root}");

    // It cannot log in (no password, no token), whatever is tried.
    let mut web = Web::new(&running.url);
    assert_eq!(web.login("gantry-bot", "").await, 401);
    assert_eq!(web.login("gantry-bot", ADMIN_TOKEN).await, 401);
    // The UI says what it is: on the users page and the stop job's page.
    assert_eq!(web.login("root", ADMIN_TOKEN).await, 303);
    let (_, page, _) = web.get("/dash/users").await;
    assert!(page.contains("data-testid=\"bot-user\""), "{page}");
    let (_, page, _) = web.get(&format!("/dash/jobs/{}", stop["id"])).await;
    assert!(
        page.contains("gantry-bot (system bot, cannot log in)"),
        "{page}"
    );
    assert!(page.contains("played by gantry-bot"), "{page}");
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_stops_a_webhook_deployed_environment_as_the_system_bot() {
    webhook_deploy_stopped_by_the_bot(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_stops_a_webhook_deployed_environment_as_the_system_bot_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    webhook_deploy_stopped_by_the_bot(Some(pg.database("envbot"))).await;
}

const STALE_PIPELINE: &str = r#"
deploy_a:
  script: echo a
  environment: {name: review/a, on_stop: stop_a}
stop_a:
  script: echo stopping a
  when: manual
  environment: {name: review/a, action: stop}
deploy_b:
  script: echo b
  environment: {name: review/b, on_stop: stop_b}
stop_b:
  script: echo stopping b
  when: manual
  environment: {name: review/b, action: stop}
deploy_c:
  script: echo c
  environment: {name: qa}
deploy_d:
  script: echo d
  environment: {name: review/d}
"#;

/// GitLab's `force` (stop without running `on_stop`) and
/// `POST /projects/:id/environments/stop_stale`, driven by python-gitlab
/// (tests/pyclients/environments_stop.py). `stop_stale` only takes dates
/// at least a week old, so the test ages two environments' rows in the
/// database (a seam: nothing else can make a week pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_gitlab_force_stops_and_stops_stale_environments() {
    let Some(python) = pyclients_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", STALE_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("shop", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let pid = p["id"].as_i64().unwrap();
    api.wait_pipeline(project, pid, Duration::from_secs(60))
        .await;
    // qa is protected: stop_stale leaves it alone.
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{project}/protected_environments"),
            json!({"name": "qa", "deploy_access_levels": [{"access_level": 40}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let thirty_days_ago = gantry_server::now_ms() - 30 * 24 * 3600 * 1000;
    for name in ["review/b", "qa"] {
        sqlx::query("UPDATE environments SET created_at = $1 WHERE project_id = $2 AND name = $3")
            .bind(thirty_days_ago)
            .bind(project)
            .bind(name)
            .execute(&running.app.store.db.pool)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE deployments SET created_at = $1, finished_at = $1 WHERE environment_id = \
             (SELECT id FROM environments WHERE project_id = $2 AND name = $3)",
        )
        .bind(thirty_days_ago)
        .bind(project)
        .bind(name)
        .execute(&running.app.store.db.pool)
        .await
        .unwrap();
    }

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pyclients/environments_stop.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("GANTRY_URL", &running.url)
        .env("GANTRY_TOKEN", ADMIN_TOKEN)
        .env("GANTRY_PROJECT", project.to_string())
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

    // Forced: stop_a never ran. Stale: stop_b ran and succeeded.
    let jobs = api.jobs(project, pid).await;
    let stop_a: Vec<&Value> = jobs.iter().filter(|j| j["name"] == "stop_a").collect();
    assert_eq!(stop_a.len(), 1, "{jobs:#?}");
    assert_eq!(stop_a[0]["status"], "manual", "{jobs:#?}");
    let (_, all) = api.get(&format!("/api/v4/projects/{project}/jobs")).await;
    let stop_b: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"] == "stop_b")
        .collect();
    assert_eq!(stop_b.len(), 1, "{all:#}");
    assert_eq!(stop_b[0]["status"], "success", "{all:#}");
    running.server.abort();
}

/// The dashboard's Force stop: offered while an environment is stopping
/// (its stop job has not succeeded), it stops it without the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_force_stops_a_stopping_environment() {
    let dir = tempfile::tempdir().unwrap();
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let failing = pipeline("1 day").replace("echo stopping $CI_ENVIRONMENT_NAME", "exit 3");
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", &failing)]);
    git(&repo_dir, &["checkout", "-q", "-b", "Feature/X-1"]);
    let project = api.project("shop", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "Feature/X-1"}),
        )
        .await;
    api.wait_pipeline(project, p["id"].as_i64().unwrap(), Duration::from_secs(60))
        .await;
    let (_, envs) = api
        .get(&format!("/api/v4/projects/{project}/environments"))
        .await;
    let eid = envs[0]["id"].as_i64().unwrap();
    let (status, e) = api
        .post(
            &format!("/api/v4/projects/{project}/environments/{eid}/stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{e}");
    // The stop job fails: the environment stays stopping.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, jobs) = api.get(&format!("/api/v4/projects/{project}/jobs")).await;
        if jobs
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "stop_review" && j["status"] == "failed")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stop job never failed: {jobs:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_state(&api, project, eid, "stopping").await;

    let mut web = Web::new(&running.url);
    assert_eq!(web.login("root", ADMIN_TOKEN).await, 303);
    let (_, page, _) = web.get("/dash/environments").await;
    assert!(page.contains("data-testid=\"force-stop\""), "{page}");
    let csrf = web.csrf().await;
    let (status, body, _) = web
        .post(
            &format!("/dash/environments/{eid}/stop"),
            &[("csrf", &csrf), ("force", "true")],
        )
        .await;
    assert_eq!(status, 303, "{body}");
    let (_, e) = api
        .get(&format!("/api/v4/projects/{project}/environments/{eid}"))
        .await;
    assert_eq!(e["state"], "stopped", "at once: {e}");
    running.server.abort();
}
